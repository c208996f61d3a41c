#!/usr/bin/env bash
# scripts/valgrind.sh — run the kiln command and the core unit tests under valgrind;
# any leak or memory error fails.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
vg=(valgrind -q --leak-check=full --show-leak-kinds=definite,indirect --errors-for-leak-kinds=definite,indirect --error-exitcode=99)
for t in test_numerics test_interp test_irtext test_frontend test_passes test_modelfile test_tokenizer; do
  [ -x "$build/$t" ] || continue
  echo "valgrind: $t"
  KILN_TEST_NO_TIMING=1 "${vg[@]}" "$build/$t" >/dev/null
done
echo "valgrind: kiln ir / kiln run"
"${vg[@]}" "$build/kiln" ir recipes/mixed.lua --shape 4,64,256 --print-after-all >/dev/null
"${vg[@]}" "$build/kiln" run recipes/w4a8.lua --shape 3,40,256 --target interp --check >/dev/null
cache=$(mktemp -d)
echo "valgrind: kiln run --target avx2 (LLVM JIT, cold cache)"
KILN_CACHE_DIR=$cache "${vg[@]}" "$build/kiln" run recipes/w4a8.lua --shape 3,40,256 --target avx2 --check >/dev/null
rm -rf "$cache"
echo "valgrind: clean"
