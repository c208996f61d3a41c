#!/usr/bin/env bash
# tests/interop/check_compressed_tensors.sh — checks kiln's compressed-tensors
# checkpoints with the real libraries (docs/checkpoints.md, "Interop check"):
# compressed-tensors' own decompressor must give exactly kiln's dequantized weights,
# and Hugging Face transformers' from_pretrained must load kiln's SmolLM2 exports
# (symmetric; asymmetric with dequantize=True) with kiln's tokens and logits, and
# generate kiln's greedy tokens.
#
#   check_compressed_tensors.sh                      kiln_interop_write's checkpoints
#   check_compressed_tensors.sh DIR [DEQUANT]        a `kiln quantize --dequant -o DIR`
#                                                    output; DEQUANT defaults to
#                                                    DIR.kiln_dequant.safetensors
#
# The Python side lives in a virtualenv at ${KILN_INTEROP_VENV:-~/.cache/kiln/interop-venv},
# made on first use from PyPI (a few minutes) and reused after. Exit 0 pass, 1 mismatch,
# 2 usage, 77 "SKIP: reason" when PyPI cannot be reached or the install fails.
# Environment: KILN_INTEROP_WRITE (the kiln_interop_write binary), KILN_CT_VERSION,
# KILN_TORCH_VERSION, KILN_TRANSFORMERS_VERSION, KILN_INTEROP_NO_MODEL=1 (skip SmolLM2).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
venv=${KILN_INTEROP_VENV:-$HOME/.cache/kiln/interop-venv}
ct=${KILN_CT_VERSION:-0.20.0}
ct_legacy=0.18.0 # the last compressed-tensors that reads act-order weight_g_idx
torch_v=${KILN_TORCH_VERSION:-2.15.0}
tf_v=${KILN_TRANSFORMERS_VERSION:-5.23.0}
py=$venv/bin/python
stamp="ct=$ct torch=$torch_v transformers=$tf_v legacy=$ct_legacy"

skip() { echo "SKIP: $*"; exit 77; }
log() { echo "interop: $*"; }

if [ $# -gt 2 ] || [ "${1:-}" = "-h" ] || [ "${1:-}" = "--help" ]; then
  sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
fi

# pip_q LOG ARGS...: pip install, output to LOG (shown when it fails)
pip_q() {
  local out=$1
  shift
  "$venv/bin/pip" install --disable-pip-version-check --no-input "$@" >>"$out" 2>&1
}

install_venv() {
  local out=$venv.install.log t0=$SECONDS
  rm -rf "$venv"
  mkdir -p "$(dirname "$venv")"
  python3 -m venv "$venv" >"$out" 2>&1 || skip "python3 -m venv failed (see $out)"
  # Is PyPI there at all? A quick, small download answers it.
  local probe
  probe=$(mktemp -d)
  if ! timeout 120 "$venv/bin/pip" download --disable-pip-version-check --no-deps -q \
      -d "$probe" "compressed-tensors==$ct" >>"$out" 2>&1; then
    rm -rf "$probe" "$venv"
    skip "PyPI is not reachable (pip could not download compressed-tensors==$ct)"
  fi
  rm -rf "$probe"
  log "installing torch $torch_v, compressed-tensors $ct, transformers $tf_v into $venv"
  # Lean first: PyPI's torch wheel wants ~4 GB of nvidia-* wheels for CUDA. Take torch
  # without them plus its pure-Python deps and only the CUDA libraries the machine's
  # own toolkit lacks (kiln's machines ship CUDA 13: they lack cuFile, cuSPARSELt,
  # NVSHMEM and torch's newer NCCL); torch then imports and runs on the CPU.
  pip_q "$out" --no-deps "torch==$torch_v" "compressed-tensors==$ct" &&
    pip_q "$out" filelock typing-extensions sympy networkx jinja2 fsspec setuptools numpy \
      pydantic loguru psutil "transformers==$tf_v" || skip "pip install failed (see $out)"
  local extra
  extra=$("$py" - <<'EOF'
import importlib.metadata as md, re
want = ("nvidia-cusparselt", "nvidia-nccl", "nvidia-nvshmem")
out = []
for r in md.requires("torch") or []:
    spec = r.split(";")[0].strip()
    name = re.split(r"[\[=<>!~ ]", spec)[0]
    if name.startswith(want):
        out.append(spec)
    elif name == "cuda-toolkit":  # only its cuFile part
        out.append(re.sub(r"\[[^\]]*\]", "[cufile]", spec))
print(" ".join(out))
EOF
  )
  local lean=yes
  # shellcheck disable=SC2086 # one word per requirement
  if [ -z "$extra" ] || ! pip_q "$out" $extra || ! "$py" -c "import torch; torch.ones(2) @ torch.ones(2)" >>"$out" 2>&1; then
    lean=no
    log "the lean torch does not import here; installing torch with all its CUDA wheels"
    pip_q "$out" "torch==$torch_v" || skip "pip install torch==$torch_v failed (see $out)"
  fi
  "$py" -c "import torch, compressed_tensors, transformers, safetensors" >>"$out" 2>&1 ||
    skip "the installed packages do not import (see $out)"
  # compressed-tensors $ct_legacy beside it, for the legacy act-order layout
  "$venv/bin/pip" install -q --disable-pip-version-check --no-deps \
    --target "$venv/ct-$ct_legacy" "compressed-tensors==$ct_legacy" >>"$out" 2>&1 ||
    skip "pip install compressed-tensors==$ct_legacy failed (see $out)"
  echo "$stamp" >"$venv/.kiln-interop"
  log "venv ready in $((SECONDS - t0)) s (lean torch: $lean), $(du -sh "$venv" | cut -f1)"
}

if [ "$(cat "$venv/.kiln-interop" 2>/dev/null)" != "$stamp" ]; then
  install_venv
else
  log "reusing $venv ($stamp)"
fi

check() { "$py" "$here/check_compressed_tensors.py" "$@"; }

if [ $# -ge 1 ]; then
  [ -f "$1/config.json" ] || { echo "interop: $1 has no config.json" >&2; exit 2; }
  d=${1%/}
  dq=${2:-$d.kiln_dequant.safetensors}
  [ -f "$dq" ] || dq=$d/kiln_dequant.safetensors
  [ -f "$dq" ] || { echo "interop: no $d.kiln_dequant.safetensors (kiln quantize --dequant writes it)" >&2; exit 2; }
  check "$d:$dq"
  exit $?
fi

writer=${KILN_INTEROP_WRITE:-}
if [ -z "$writer" ]; then
  for w in "$here"/../../build/kiln_interop_write "$here"/../../build-*/kiln_interop_write; do
    [ -x "$w" ] && { writer=$w; break; }
  done
fi
[ -x "$writer" ] || { echo "interop: build kiln_interop_write or set KILN_INTEROP_WRITE" >&2; exit 2; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
model=--smollm2
[ "${KILN_INTEROP_NO_MODEL:-}" = 1 ] && model=
# shellcheck disable=SC2086 # $model is one flag or nothing
"$writer" "$tmp" $model || exit 1
dirs=("$tmp/mixed")
[ -d "$tmp/smollm2" ] && dirs+=("$tmp/smollm2" "$tmp/smollm2_asym")
check "${dirs[@]}"
rc=$?
PYTHONPATH="$venv/ct-$ct_legacy" check "$tmp/mixed_gidx"
rc2=$?
for r in $rc $rc2; do
  [ "$r" = 77 ] && exit 77
done
[ "$rc" = 0 ] && [ "$rc2" = 0 ] && exit 0
exit 1
