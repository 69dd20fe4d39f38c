#!/bin/sh
# include_scope_test.sh CXX SRC_DIR VISIBLE HIDDEN -I<dir>...: with a module target's include
# path (the -I flags), the headers of the VISIBLE modules (comma-separated) are found and those
# of the HIDDEN ones are not. Each module's include scope (src/CMakeLists.txt) is what makes an
# upward include, registry including "api/...", fail to compile; this shows it does.
set -u
cxx=$1 src=$2 visible=$3 hidden=$4
shift 4
fail=0
# probe MODULE FLAGS...: preprocesses an include of one of the module's headers with the target's path.
probe() {
  mod=$1
  shift
  header=$(cd "$src/$mod" && ls ./*.h | head -n 1)
  header=${header#./}
  printf '#include "%s/%s"\n' "$mod" "$header" |
    "$cxx" -std=c++20 -E -x c++ - "$@" -o /dev/null 2>"${TMPDIR:-/tmp}/include_scope.$$"
}
for m in $(echo "$visible" | tr ',' ' '); do
  if ! probe "$m" "$@"; then
    echo "FAIL: $m's headers should be visible here, but:"; cat "${TMPDIR:-/tmp}/include_scope.$$"
    fail=1
  fi
done
for m in $(echo "$hidden" | tr ',' ' '); do
  if probe "$m" "$@"; then
    echo "FAIL: $m's headers are visible to a module that does not link it"
    fail=1
  elif ! grep -q "No such file" "${TMPDIR:-/tmp}/include_scope.$$"; then
    echo "FAIL: probing $m failed for another reason:"; cat "${TMPDIR:-/tmp}/include_scope.$$"
    fail=1
  fi
done
rm -f "${TMPDIR:-/tmp}/include_scope.$$"
[ $fail = 0 ] && echo "ok: visible {$visible}, hidden {$hidden}"
exit $fail
