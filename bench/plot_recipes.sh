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
# one line per point: name, weight MB, metric; f32 once (every run has the same f32 row)
metric=$(python3 - "$json" "$out/recipes.dat" "$out/recipes.md" "$model" "$cmdline" <<'PY'
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
with open(dat, "w") as f:
    for n, mb, m in rows:
        f.write('"%s" %.4f %.6f\n' % (n.replace('"', "'"), mb, m))
with open(md, "w") as f:
    f.write("# Quality against weight bytes across recipes (%s)\n\n" % model)
    f.write("command: `%s`\n\n" % cmd.strip())
    f.write("| recipe | weight_MB | %s |\n|---|---:|---:|\n" % metric)
    for n, mb, m in sorted(rows, key=lambda x: x[1]):
        f.write("| %s | %.2f | %.5f |\n" % (n.replace("|", "\\|"), mb, m))
print(metric)
PY
)
ylabel=$([[ $metric == ppl ]] && echo "perplexity (lower is better)" || echo "mean cosine vs f32 (higher is better)")
gp=${KILN_GNUPLOT:-gnuplot}
if command -v "$gp" >/dev/null; then
  "$gp" <<GP
set terminal pngcairo noenhanced size 900,550
set output '$out/recipes.png'
set title "$metric against weight bytes, $(basename "$model")"
set xlabel "weights (MB)"
set ylabel "$ylabel"
set grid
set key off
set offsets graph 0.05, graph 0.25, graph 0.08, graph 0.08
plot '$out/recipes.dat' using 2:3 with points pt 7 ps 1.2, \
     '' using 2:3:1 with labels offset 1,0.6 left font ",8" rotate by 20
GP
  printf '\n![%s against weight bytes](recipes.png)\n' "$metric" >> "$out/recipes.md"
else
  printf '\nNo plot: gnuplot was not found (install Debian gnuplot-nox, or set KILN_GNUPLOT).\n' >> "$out/recipes.md"
fi
rm -f "$json"
echo "plot_recipes.sh: wrote $out/recipes.md" >&2
