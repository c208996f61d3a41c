#!/usr/bin/env bash
# scripts/main.sh — the main job: set up, build, and compile + run the default recipe
# (W4A8: int4 g128 weights, int8 dynamic per-token activations), checked against f32.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh build
recipe=${KILN_RECIPE:-recipes/w4a8.lua}
shape=${KILN_SHAPE:-16,512,1024}
echo "== kiln ir $recipe --shape $shape"
build/kiln ir "$recipe" --shape "$shape"
echo "== kiln run $recipe --shape $shape --target interp --check"
build/kiln run "$recipe" --shape "$shape" --target interp --check
