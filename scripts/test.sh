#!/usr/bin/env bash
# The whole test suite: installs dependencies, builds, runs every unit and integration test, then
# each fuzzer for a short while (CORTEX_FUZZ_SECONDS each, default 20; 0 skips them).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
bash scripts/install-deps.sh
bash scripts/build.sh
BUILD_DIR="${CORTEX_BUILD_DIR:-build}"
(cd "$BUILD_DIR" && ctest --output-on-failure -j "$(nproc)" --timeout 300)
FUZZ_SECONDS="${CORTEX_FUZZ_SECONDS:-20}"
if [[ "$FUZZ_SECONDS" != 0 ]]; then
  bash "$REPO/fuzz/run.sh" "$FUZZ_SECONDS"
fi
