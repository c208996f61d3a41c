#!/usr/bin/env bash
# python/tests/run_pytest.sh — the Python package's suite (docs/python.md), the ctest
# python_package: installs python/ with pip into the interop virtualenv
# (${KILN_INTEROP_VENV:-~/.cache/kiln/interop-venv}: torch, transformers, safetensors,
# made from PyPI by tests/interop/check_compressed_tensors.sh when missing), adds its
# own dependencies (cffi, pytest, wheel) from PyPI, and runs pytest on python/tests.
# Exit 0 pass, 1 failure, 77 "SKIP: reason" when PyPI cannot be reached.
# Environment: KILN_LIB (libkiln.so; default build/libkiln.so), KILN_BIN (the kiln
# command, for kiln eval / kiln quantize), PYTEST_ARGS (extra pytest arguments).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
venv=${KILN_INTEROP_VENV:-$HOME/.cache/kiln/interop-venv}
py=$venv/bin/python

skip() { echo "SKIP: $*"; exit 77; }
pip_q() { "$venv/bin/pip" install -q --disable-pip-version-check --no-input "$@"; }

if ! "$py" -c "import torch, transformers, safetensors" 2>/dev/null; then
  echo "python: making the interop virtualenv (torch, transformers) first"
  KILN_INTEROP_NO_MODEL=1 bash "$repo/tests/interop/check_compressed_tensors.sh" >/dev/null
  [ $? = 77 ] && skip "the interop virtualenv could not be made (PyPI not reachable?)"
  "$py" -c "import torch, transformers, safetensors" 2>/dev/null || { echo "python: no torch in $venv" >&2; exit 1; }
fi
if ! "$py" -c "import cffi, pytest, wheel" 2>/dev/null; then
  timeout 300 "$venv/bin/pip" install -q --disable-pip-version-check --no-input "cffi>=1.15" pytest wheel ||
    skip "pip could not install cffi, pytest, wheel (PyPI not reachable?)"
fi
export KILN_LIB=${KILN_LIB:-$repo/build/libkiln.so}
[ -f "$KILN_LIB" ] || { echo "python: no $KILN_LIB (cmake --build build)" >&2; exit 1; }
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# the package as a user installs it: pip install --no-build-isolation ./python (the
# library copied in, kiln._fast compiled against the virtualenv's torch)
if ! pip_q --no-build-isolation --force-reinstall --no-deps "$repo/python" >"$log" 2>&1; then
  cat "$log" >&2
  echo "python: pip install ./python failed" >&2
  exit 1
fi
cd "$here" || exit 1
# shellcheck disable=SC2086 # PYTEST_ARGS: words
# the installed package with the library it carries (KILN_LIB only chose what to copy)
exec env -u KILN_LIB "$py" -m pytest -q -p no:cacheprovider ${PYTEST_ARGS:-} "$here"
