#!/bin/bash
# bench/memory.sh — peak resident set (GNU time's %M, the kernel's ru_maxrss: shared
# libraries and mapped model pages included) of every kiln command that names a model,
# for every recipe of recipes/ (without a method unless asked) on SmolLM2 and MiniLM, against the
# model's size (docs/hardening.md, "Memory": the bigger of the model file and the
# weights as the recipe runs them, the weight_bytes of kiln eval's recipe row).
# Prints a Markdown table; a row over 2x is marked **bold**.
# usage: bench/memory.sh [path/to/kiln] [recipe-name-filter]
# Environment: KILN_MEMORY_EVAL_ARGS (extra kiln eval options, e.g. "--tokens 513": one
# window of the default 512 in half the time), KILN_MEMORY_SKIP (words among "eval
# quantize stored generate bench": commands not run), KILN_MEMORY_MODELS ("smollm2 minilm"),
# KILN_MEMORY_METHODS=1 (the recipes with methods too, e.g. with the filter "gptq").
set -u
KILN=${1:-build/kiln}
FILTER=${2:-}
EVAL_ARGS=${KILN_MEMORY_EVAL_ARGS:-}
SKIP=" ${KILN_MEMORY_SKIP:-} "
skip() { [[ $SKIP == *" $1 "* ]]; }
MODELS=${KILN_MODELS_DIR:-$HOME/.cache/kiln/models}
TMP=$(mktemp -d /tmp/kiln-memory-XXXXXX)
trap 'rm -rf "$TMP"' EXIT
PROMPT="Write one sentence about the sea."

# peak MB and exit status of one command: run_peak NAME CMD...
run_peak() {
    local name=$1; shift
    /usr/bin/time -f %M -o "$TMP/$name.kb" "$@" >"$TMP/$name.out" 2>"$TMP/$name.err"
    local rc=$?
    echo "$(tail -1 "$TMP/$name.kb" | awk '{printf "%.1f", $1 * 1024 / 1e6}') $rc"
}

# the recipe row's weight_bytes in MB from kiln eval --json
json_wb() {
    python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); print("%.1f" % (j["rows"][1]["weight_bytes"] / 1e6))' "$1" 2>/dev/null || echo 0
}

size_mb() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", (a > b ? a : b) }'; }
file_mb() { stat -c %s "$1" | awk '{printf "%.1f", $1 / 1e6}'; }

row() { # command recipe model peak rc size
    local ratio mark=""
    ratio=$(awk -v p="$4" -v s="$6" 'BEGIN { printf "%.2f", p / s }')
    awk -v r="$ratio" 'BEGIN { exit !(r > 2.0) }' && mark="**"
    [ "$5" != 0 ] && mark="" && ratio="exit $5"
    echo "| $1 | $2 | $3 | $4 | $6 | $mark$ratio$mark |"
}

echo "| command | recipe | model | peak MB | size MB | peak / size |"
echo "|---|---|---|---|---|---|"
for model in ${KILN_MEMORY_MODELS:-smollm2 minilm}; do
    if [ $model = smollm2 ]; then mfile=$MODELS/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
    else mfile=$MODELS/minilm/model.safetensors; fi
    fmb=$(file_mb "$mfile")
    for rp in recipes/*.lua; do
        r=$(basename "$rp" .lua)
        # recipes with methods (GPTQ, AWQ, SmoothQuant: a calibration of about 100 s of CPU
        # each on SmolLM2, the warm-up run too) only with KILN_MEMORY_METHODS=1
        grep -Eq 'method *= *\{? *"(gptq|awq|smoothquant)' "$rp" && [ -z "${KILN_MEMORY_METHODS:-}" ] && continue
        [ -n "$FILTER" ] && [[ $r != *$FILTER* ]] && continue
        "$KILN" eval "$rp" --model $model --quiet --tokens 8 --sentences 4 >/dev/null 2>&1 # kernels cached
        if skip eval; then # the size only
            "$KILN" eval "$rp" --model $model --json --quiet --tokens 8 --sentences 4 >"$TMP/e-$r-$model.out" 2>/dev/null
        else
            # shellcheck disable=SC2086 # EVAL_ARGS: words
            read -r peak rc < <(run_peak "e-$r-$model" "$KILN" eval "$rp" --model $model --json --quiet $EVAL_ARGS)
        fi
        size=$(size_mb "$fmb" "$(json_wb "$TMP/e-$r-$model.out")")
        skip eval || row "kiln eval ${EVAL_ARGS:-(defaults)}" "$r" $model "$peak" "$rc" "$size"
        rc=1
        if ! skip quantize; then
            read -r peak rc < <(run_peak "q-$r-$model" "$KILN" quantize "$rp" --model $model -o "$TMP/q-$r-$model")
            row "kiln quantize" "$r" $model "$peak" "$rc" "$size"
        fi
        if [ "$rc" = 0 ] && ! skip stored; then
            q=$TMP/q-$r-$model
            "$KILN" eval recipes/checkpoint/stored.lua --model "$q" --quiet --tokens 8 --sentences 4 >/dev/null 2>&1
            read -r peak rc < <(run_peak "s-$r-$model" "$KILN" eval recipes/checkpoint/stored.lua --model "$q" --json --quiet --tokens 256)
            qsize=$(size_mb "$(file_mb "$q/model.safetensors")" "$(json_wb "$TMP/s-$r-$model.out")")
            row "kiln eval checkpoint/stored.lua --model OUT --tokens 256" "$r" $model "$peak" "$rc" "$qsize"
            rm -rf "$q"
        fi
        if [ $model = smollm2 ] && ! skip generate; then
            read -r peak rc < <(run_peak "g-$r" "$KILN" generate "$rp" --model $model --prompt "$PROMPT" -n 16 --quiet)
            row "kiln generate -n 16" "$r" $model "$peak" "$rc" "$size"
        fi
        if ! skip bench; then
            read -r peak rc < <(run_peak "b-$r-$model" "$KILN" bench "$rp" --model $model -p 512 -n 16 --repeat 1)
            row "kiln bench --model -p 512 -n 16 --repeat 1" "$r" $model "$peak" "$rc" "$size"
        fi
    done
done
