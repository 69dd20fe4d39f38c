#!/bin/sh
# Writes what the binary generates about itself for installing: the shell completions and the
# gzipped man page. Called by the build (src/CMakeLists.txt): shell-files.sh CORTEX OUT_DIR
set -eu
cortex="$1"
out="$2"
mkdir -p "$out"
"$cortex" completion bash > "$out/cortex.bash"
"$cortex" completion zsh > "$out/_cortex"
"$cortex" completion fish > "$out/cortex.fish"
"$cortex" man | gzip -9n > "$out/cortex.1.gz"
