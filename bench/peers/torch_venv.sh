#!/usr/bin/env bash
# bench/peers/torch_venv.sh — the Python environment of the end-to-end PyTorch peers
# (bench/peers/torch_e2e.py): the project's torch + transformers virtualenv (the one
# tests/interop/check_compressed_tensors.sh makes, reused as it is) with torchao added
# beside it. torchao goes into a small virtualenv of its own whose site-packages chains
# to the interop one through a .pth file, so the interop venv stays exactly what its
# stamp says. Prints the python to run. Exit 77 "SKIP: reason" when the venv cannot be
# made (no PyPI); a torchao that does not install is not fatal: the peer then reports
# its rows as n/a with the reason (the stamp file says which).
#
# usage: bench/peers/torch_venv.sh
# env:   KILN_INTEROP_VENV (default ~/.cache/kiln/interop-venv), KILN_E2E_VENV (default
#        ~/.cache/kiln/e2e-venv), KILN_TORCHAO_VERSION (default below),
#        KILN_INTEROP_WRITE (kiln_interop_write, needed only to make the interop venv)
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
base=${KILN_INTEROP_VENV:-$HOME/.cache/kiln/interop-venv}
venv=${KILN_E2E_VENV:-$HOME/.cache/kiln/e2e-venv}
# torchao 0.18.0: the newest release on PyPI (December 2026). Its wheel's C++ ops are
# built for an older torch than 2.15 and are skipped at import; the configs this peer
# uses run on ops torch itself has (int4 CPU packing, _int_mm, int8 weight-only).
ao=${KILN_TORCHAO_VERSION:-0.18.0}
log() { echo "torch_venv: $*" >&2; }
skip() { echo "SKIP: $*"; exit 77; }

if [ ! -f "$base/.kiln-interop" ]; then
  # The interop check makes the venv (lean torch, pinned versions) on first use; the
  # quick run without SmolLM2 is enough for that.
  log "no $base yet: making it with tests/interop/check_compressed_tensors.sh"
  KILN_INTEROP_NO_MODEL=1 bash "$here/../../tests/interop/check_compressed_tensors.sh" >&2
  rc=$?
  [ "$rc" = 77 ] && skip "the interop venv could not be made (no PyPI?)"
  [ -f "$base/.kiln-interop" ] || skip "the interop venv could not be made (exit $rc)"
fi
stamp="base=$(cat "$base/.kiln-interop") torchao=$ao"
if [ "$(head -1 "$venv/.kiln-e2e" 2>/dev/null)" = "$stamp" ]; then
  echo "$venv/bin/python"
  exit 0
fi
out=$venv.install.log
rm -rf "$venv"
python3 -m venv --without-pip "$venv" >"$out" 2>&1 || skip "python3 -m venv failed (see $out)"
pyver=$("$base/bin/python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
ownver=$("$venv/bin/python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
[ "$pyver" = "$ownver" ] || skip "python $ownver here, $pyver in $base"
site=$venv/lib/python$pyver/site-packages
echo "$base/lib/python$pyver/site-packages" >"$site/kiln_interop_base.pth"
log "installing torchao $ao into $venv (over $base)"
ao_status="torchao $ao"
if ! "$base/bin/pip" install --disable-pip-version-check --no-input --no-deps \
     --target "$site" "torchao==$ao" >>"$out" 2>&1; then
  ao_status="torchao: pip install torchao==$ao failed (see $out)"
elif ! "$venv/bin/python" -c "import torchao" >>"$out" 2>&1; then
  ao_status="torchao: $ao does not import with this torch (see $out)"
fi
"$venv/bin/python" -c "import torch, transformers" >>"$out" 2>&1 ||
  skip "torch/transformers do not import through $venv (see $out)"
log "$ao_status"
printf '%s\n%s\n' "$stamp" "$ao_status" >"$venv/.kiln-e2e"
echo "$venv/bin/python"
