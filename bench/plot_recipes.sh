#!/usr/bin/env bash
# bench/plot_recipes.sh — quality against size across recipes: runs `kiln eval --json`
# for each recipe on one model and writes OUT/recipes.md (a table: recipe, weight MB,
# perplexity or mean cosine vs f32) and OUT/recipes.png, drawn by gnuplot: the metric
# against the bytes of the weights, one labelled point per recipe (f32 included).
# Without gnuplot the Markdown says so and keeps the table. docs/report.md.
#
# usage: bench/plot_recipes.sh [--model minilm|smollm2|PATH] [--out DIR]
#                              [RECIPE.lua ...] [-- extra kiln eval options]
#        (no recipes: every recipes/*.lua but f32.lua)
# env:   KILN_BIN (default build/kiln), KILN_GNUPLOT (default gnuplot on PATH)
set -euo pipefail
cd "$(dirname "$0")/.."
cmdline=$(printf '%q ' "$0" "$@"); cmdline=${cmdline% }
kiln=${KILN_BIN:-build/kiln}
model=minilm out=bench/results/recipes recipes=() extra=()
while (($#)); do
  case $1 in
    --model) model=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --) shift; extra=("$@"); break ;;
    -*) echo "plot_recipes.sh: unknown option $1" >&2; exit 2 ;;
    *) recipes+=("$1"); shift ;;
  esac
done
if ((${#recipes[@]} == 0)); then
  for r in recipes/*.lua; do [[ $r == recipes/f32.lua ]] || recipes+=("$r"); done
fi
[[ -x $kiln ]] || { echo "plot_recipes.sh: no $kiln (build first, or set KILN_BIN)" >&2; exit 2; }
mkdir -p "$out"
json=$out/recipes.jsonl
: > "$json"
for r in "${recipes[@]}"; do
  echo "plot_recipes.sh: kiln eval $r --model $model ${extra[*]}" >&2
  # stderr: errors, not the progress lines --json also prints there
  if ! "$kiln" eval "$r" --model "$model" --json "${extra[@]}" >> "$json" \
       2> >(grep -v '^{"progress"' >&2); then
    echo "plot_recipes.sh: $r failed (left out)" >&2
  fi
done
# the points: one gnuplot data block per recipe (its name the block's header, for the
# key), f32 once (every run has the same f32 row). Cosines are plotted as 1 - cos on a
# log scale, which separates recipes that all sit near 1; f32 (1 - cos = 0) is then
# named in the title instead.
read -r metric npts f32mb < <(python3 - "$json" "$out/recipes.dat" "$out/recipes.md" "$model" "$cmdline" <<'PY'
import json, sys
src, dat, md, model, cmd = sys.argv[1:]
rows, metric, text, pos = [], "cos_mean", open(src).read(), 0
dec = json.JSONDecoder()
while text[pos:].strip():  # one JSON document per run, each over several lines
    pos += len(text[pos:]) - len(text[pos:].lstrip())
    j, pos = dec.raw_decode(text, pos)
    metric = "ppl" if j["metric"] == "perplexity" else "cos_mean"
    for i, r in enumerate(j["rows"]):
        if i == 0 and any(x[0] == "f32" for x in rows):
            continue
        rows.append((r["name"], r["weight_bytes"] / 1e6, r[metric]))
f32mb, n = 0, 0
with open(dat, "w") as f:
    for name, mb, m in sorted(rows, key=lambda x: (x[1], x[0])):
        y = m if metric == "ppl" else 1 - m
        if name == "f32":
            f32mb = mb
        if metric != "ppl" and y <= 0:
            continue
        f.write('"%s" MB y\n%.4f %.8g\n\n\n' % (name.replace('"', "'"), mb, y))
        n += 1
with open(md, "w") as f:
    f.write("# Quality against weight bytes across recipes (%s)\n\n" % model)
    f.write("command: `%s`\n\n" % cmd.strip())
    f.write("| recipe | weight_MB | %s |\n|---|---:|---:|\n" % metric)
    for name, mb, m in sorted(rows, key=lambda x: (x[1], x[0])):
        f.write("| %s | %.2f | %.5f |\n" % (name.replace("|", "\\|"), mb, m))
print(metric, n, "%.2f" % f32mb)
PY
)
if [[ $metric == ppl ]]; then
  ylabel="perplexity (lower is better)" ylog="" title="perplexity against weight bytes, $(basename "$model")"
else
  ylabel="1 - mean cosine vs f32 (log; lower is better)" ylog="set logscale y"
  title="1 - cosine against weight bytes, $(basename "$model") (f32: $f32mb MB, 0)"
fi
gp=${KILN_GNUPLOT:-gnuplot}
if ((npts)) && command -v "$gp" >/dev/null; then
  "$gp" <<GP
set terminal pngcairo noenhanced size 1000,550
set output '$out/recipes.png'
set title "$title"
set xlabel "weights (MB, log)"
set ylabel "$ylabel"
set logscale x
set format y "%g"
$ylog
set grid
set key outside right
set offsets graph 0.05, graph 0.05, graph 0.05, graph 0.05
plot for [i=0:$((npts - 1))] '$out/recipes.dat' index i using 1:2 with points \
     pt (i%13)+1 ps 1.8 lw 2 title columnheader(1)
GP
  printf '\n![%s against weight bytes](recipes.png)\n' "$metric" >> "$out/recipes.md"
else
  printf '\nNo plot: gnuplot was not found (install Debian gnuplot-nox, or set KILN_GNUPLOT), or no point to plot.\n' >> "$out/recipes.md"
fi
rm -f "$json"
echo "plot_recipes.sh: wrote $out/recipes.md" >&2
