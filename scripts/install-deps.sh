#!/usr/bin/env bash
# Installs everything Cortex needs to build, test and benchmark, from Debian packages only.
# Idempotent: when every package is already installed it does nothing (no apt-get update).
set -euo pipefail

PACKAGES=(
  build-essential cmake ninja-build pkg-config git curl ca-certificates
  libyaml-dev nlohmann-json3-dev libcpp-httplib-dev libboost-dev libcli11-dev libsqlite3-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  clang clang-format libclang-rt-14-dev
  python3 openssl bubblewrap passt iproute2
  zsh fish groff-base file
  libcurl4-openssl-dev libssl-dev docker.io docker-compose busybox-static redis-server
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

# Node.js runs the real clients the tests drive Cortex with (the official `openai` package).
# A machine may have it from another Debian archive (with npm bundled): only add what is missing.
if ! command -v node >/dev/null; then missing+=(nodejs); fi
if ! command -v npm >/dev/null && ! dpkg-query -W -f='${Status}' nodejs 2>/dev/null | grep -q "install ok installed"; then
  missing+=(npm)
fi

SUDO=""
if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
if ((${#missing[@]} > 0)); then
  echo "install-deps: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if ! command -v npm >/dev/null; then
  $SUDO apt-get install -y -qq --no-install-recommends npm >/dev/null
fi

# promtool (Prometheus' checker of /metrics output) from Debian's prometheus package, unpacked
# into .deps/ rather than installed: installing the package would also start a Prometheus server.
cd "$(dirname "$0")/.."
if ! command -v promtool >/dev/null && [[ ! -x .deps/bin/promtool ]]; then
  tmp=$(mktemp -d)
  if ! (cd "$tmp" && apt-get download -qq prometheus 2>/dev/null); then
    $SUDO apt-get update -qq
    (cd "$tmp" && apt-get download -qq prometheus 2>/dev/null)
  fi
  dpkg-deb -x "$tmp"/prometheus_*.deb "$tmp/x"
  mkdir -p .deps/bin
  cp "$tmp/x/usr/bin/promtool" .deps/bin/promtool
  rm -rf "$tmp"
fi

# The test clients, from npm, as locked in tests/node/package-lock.json.
if [[ ! -d tests/node/node_modules/openai ]]; then
  npm ci --prefix tests/node --no-audit --no-fund --loglevel=error >/dev/null
fi
