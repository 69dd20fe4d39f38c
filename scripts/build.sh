#!/usr/bin/env bash
# Configures and builds Cortex into ./build (Release with debug info, warnings as errors).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR="${CORTEX_BUILD_DIR:-build}"
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE="${CORTEX_BUILD_TYPE:-RelWithDebInfo}" \
  -DCORTEX_WERROR=ON "$@" >/dev/null
cmake --build "$BUILD_DIR" -j "$(nproc)"
