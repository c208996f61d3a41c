#!/usr/bin/env bash
# scripts/valgrind.sh — run the kiln command and the core unit tests under valgrind;
# any leak or memory error fails. Valgrind runs a program on one core, so the longest
# one (test_numerics: its bit sweeps, ~100 s) runs beside all the others when the host
# has two cores or more (docs/testing.md, "Suite time"); its output follows theirs.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
vg=(valgrind -q --leak-check=full --show-leak-kinds=definite,indirect --errors-for-leak-kinds=definite,indirect --error-exitcode=99)

unit() { # test_NAME: under valgrind, its stdout dropped
  [ -x "$build/$1" ] || return 0
  echo "valgrind: $1"
  KILN_TEST_NO_TIMING=1 "${vg[@]}" "$build/$1" >/dev/null
}

lane_log=$(mktemp)
lane_pid=
# a failure below still waits for the lane: no valgrind is left running
trap '[ -z "$lane_pid" ] || wait "$lane_pid" 2>/dev/null; rm -f "$lane_log"' EXIT
if (($(nproc) >= 2)); then
  unit test_numerics >"$lane_log" 2>&1 &
  lane_pid=$!
else
  unit test_numerics
fi
for t in test_interp test_irtext test_frontend test_passes test_modelfile test_tokenizer; do
  unit "$t"
done
echo "valgrind: kiln ir / kiln run"
"${vg[@]}" "$build/kiln" ir recipes/mixed.lua --shape 4,64,256 --print-after-all >/dev/null
"${vg[@]}" "$build/kiln" run recipes/w4a8.lua --shape 3,40,256 --target interp --check >/dev/null
cache=$(mktemp -d)
echo "valgrind: kiln run --target avx2 (LLVM JIT, cold cache)"
KILN_CACHE_DIR=$cache "${vg[@]}" "$build/kiln" run recipes/w4a8.lua --shape 3,40,256 --target avx2 --check >/dev/null
rm -rf "$cache"
if [ -n "$lane_pid" ]; then
  rc=0
  wait "$lane_pid" || rc=$?
  lane_pid=
  cat "$lane_log"
  if ((rc)); then
    echo "valgrind: test_numerics failed (exit $rc)" >&2
    exit "$rc"
  fi
fi
echo "valgrind: clean"
