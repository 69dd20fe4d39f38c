#!/usr/bin/env bash
# Installs everything Cortex needs to build, test and benchmark, from Debian packages only.
# Idempotent: when every package is already installed it does nothing (no apt-get update).
set -euo pipefail

PACKAGES=(
  build-essential cmake ninja-build pkg-config git curl ca-certificates
  libyaml-dev nlohmann-json3-dev libcpp-httplib-dev libcli11-dev libsqlite3-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  clang clang-format libclang-rt-14-dev
  python3 bubblewrap passt iproute2
  libcurl4-openssl-dev docker.io docker-compose busybox-static redis-server
)
# Only for the benchmarks (bench/*.sh): nginx as the static-file baseline, wrk as the load generator.
if [[ "${CORTEX_WITH_BENCH:-0}" == 1 ]]; then
  PACKAGES+=(nginx-light wrk libyaml-cpp-dev)
fi

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if ((${#missing[@]} == 0)); then
  exit 0
fi

SUDO=""
if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
echo "install-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
