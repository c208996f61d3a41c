#!/bin/sh
# bench/model_speed.sh — kiln bench --model against llama.cpp's llama-bench on the same GGUF,
# same threads, interleaved (kiln, llama-bench, kiln, ...), so both see the same machine.
# Usage: bench/model_speed.sh [THREADS] [REPEAT]   (docs/bench.md, "Whole-model speed")
# RECIPES="w4a8-head ..." picks the recipes (default: both benchmark recipes and the two
# they come from); llama-bench runs after each.
# Needs build/kiln, the models (scripts/fetch-models.sh) and llama-bench, built from the
# llama-cpp-python sdist by bench/peers/build_llama.sh (or LLAMA_BENCH=path).
set -eu
T=${1:-2}
R=${2:-5}
here=$(cd "$(dirname "$0")/.." && pwd)
kiln=${KILN:-$here/build/kiln}
gguf=${KILN_MODELS_DIR:-$HOME/.cache/kiln/models}/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
lb=${LLAMA_BENCH:-$HOME/.cache/kiln/peers/llama-0.3.36/bin/llama-bench}
[ -x "$lb" ] || { echo "model_speed.sh: no llama-bench at $lb (bench/peers/build_llama.sh)" >&2; exit 2; }
echo "host: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(nproc) cores;" \
     "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
for r in ${RECIPES:-w8a8-int8-dynamic-head w4a8-head w8a8-int8-dynamic w4a8}; do
  echo "\$ kiln bench recipes/$r.lua --model smollm2 --threads $T --repeat $R"
  "$kiln" bench "$here/recipes/$r.lua" --model smollm2 --threads "$T" --repeat "$R" --quiet
  echo "\$ llama-bench -m SmolLM2-135M-Instruct.Q4_1.gguf -t $T -p 512 -n 128 -r $R"
  "$lb" -m "$gguf" -t "$T" -p 512 -n 128 -r "$R" 2>/dev/null | grep '^|'
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
