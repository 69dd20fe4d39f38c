#!/usr/bin/env bash
# First run: installs dependencies, builds, and starts `cortex serve` on the embedded defaults
# with the shipped example manifests. Stop it with Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
bash scripts/build.sh
echo "quickstart: the binary is ./build/cortex; to put cortex on the PATH (with its completions" \
  "and man page): cmake --install build --strip   (into /usr/local)" >&2
exec ./build/cortex serve --manifests examples/manifests --data-dir .cortex \
  --config examples/cortex.yml "$@"
