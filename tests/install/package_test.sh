#!/usr/bin/env bash
# The .deb as a user gets it: `cpack -G DEB` on the build, then the package checked by dpkg
# (its metadata, its files, that this Debian could install it), unpacked into an empty folder,
# and the unpacked binary run: `cortex version`, and `cortex validate` on the packaged examples.
# Usage: package_test.sh BUILD_DIR
set -euo pipefail
build="$1"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

cpack -G DEB -B "$work/out" --config "$build/CPackConfig.cmake" >"$work/cpack.log" 2>&1 ||
  { cat "$work/cpack.log" >&2; fail "cpack failed"; }
deb="$(ls "$work"/out/cortex_*_*.deb)"
ddeb="$(ls "$work"/out/cortex-dbgsym_*.ddeb)"
version="$("$build/cortex" version)"
version="${version#cortex }"
[[ "$(basename "$deb")" == "cortex_${version}_$(dpkg --print-architecture).deb" ]] ||
  fail "unexpected package name $(basename "$deb")"

# Metadata: the libraries dpkg-shlibdeps found in the binary, and the sandbox recommended.
info="$(dpkg-deb -f "$deb")"
for want in "Package: cortex" "Version: $version" "libc6" "libsqlite3-0" "libssl3" \
  "Recommends: bubblewrap, passt"; do
  grep -qF "$want" <<<"$info" || fail "control lacks '$want':"$'\n'"$info"
done
# The files, where Debian's tools look for them.
contents="$(dpkg-deb -c "$deb")"
for want in ./usr/bin/cortex ./usr/share/bash-completion/completions/cortex \
  ./usr/share/zsh/vendor-completions/_cortex ./usr/share/fish/vendor_completions.d/cortex.fish \
  ./usr/share/man/man1/cortex.1.gz ./usr/share/doc/cortex/README.md \
  ./usr/share/doc/cortex/examples/manifests/tools/calculator/tool.yml; do
  grep -qF " $want" <<<"$contents" || fail "the package lacks $want"
done
# This machine could install it: every dependency is satisfiable (nothing is changed).
if [[ $(id -u) -eq 0 ]]; then
  dpkg --dry-run -i "$deb" >"$work/dpkg.log" 2>&1 || { cat "$work/dpkg.log" >&2; fail "dpkg -i would fail"; }
fi

# Unpacked into an empty folder, it runs from there.
root="$work/root"
dpkg-deb -x "$deb" "$root"
bin="$root/usr/bin/cortex"
[[ "$("$bin" version)" == "cortex $version" ]] || fail "cortex version: $("$bin" version)"
"$bin" validate -q "$root/usr/share/doc/cortex/examples/manifests" >"$work/validate.log" 2>&1 ||
  { cat "$work/validate.log" >&2; fail "cortex validate on the packaged examples failed"; }
zcat "$root/usr/share/man/man1/cortex.1.gz" | grep -q '^\.TH CORTEX 1' || fail "bad man page"
# Stripped, small, and its debug info in the dbgsym package under its build id.
readelf -S "$bin" | grep -q '\.debug_info' && fail "the packaged binary is not stripped"
size=$(stat -c %s "$bin")
((size <= 20 * 1024 * 1024)) || fail "the packaged binary is $size bytes, over 20 MiB"
build_id="$(readelf -n "$bin" | sed -n 's/.*Build ID: //p')"
[[ -n "$build_id" ]] || fail "the binary has no build id"
dpkg-deb -c "$ddeb" | grep -qF "./usr/lib/debug/.build-id/${build_id:0:2}/${build_id:2}.debug" ||
  fail "the dbgsym package lacks the debug file of build id $build_id"
echo "package ok: $(basename "$deb") ($(stat -c %s "$deb") bytes), cortex $size bytes stripped"
