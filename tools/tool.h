/* tools/tool.h — shared pieces of the `kiln` command: argument parsing, deterministic
 * test data, and the per-subcommand entry points. */
#ifndef KILN_TOOL_H
#define KILN_TOOL_H

#include <stdbool.h>
#include <stdint.h>

#include "api/plan.h"
#include "ir/ir.h"

/* Exit codes of the command (also documented in README). */
enum { EXIT_OK = 0, EXIT_MISMATCH = 1, EXIT_INPUT = 2, EXIT_NODEV = 3, EXIT_INTERNAL = 4 };

typedef struct ToolArgs {
    const char *cmd;
    const char *recipe;
    const char *layer;   /* NULL: one layer per rule */
    const char *target;  /* NULL: recipe's, else "cpu" (run: "interp" until a backend exists) */
    const char *out_dir; /* aot -o */
    const char *shapes_file;
    int64_t M, N, K;
    bool have_shape;
    uint64_t seed;
    bool check, verbose, print_after_all, json, quiet;
    /* eval */
    const char *model, *text;
    int64_t tokens, sentences, window, stride;
    bool per_layer;
    bool dequant; /* quantize --dequant */
    /* bench */
    int64_t threads, repeat, warmup, probe_ms; /* 0: default (warmup: have_warmup) */
    bool have_warmup, cold;
    const char *report; /* eval, bench: --report FILE.md */
    /* generate (docs/generate.md): --prompt, -n, --temp, --top-p, --no-chat (defaults set
     * by tool_parse_args: n 64, temp 0 = greedy, top_p 0.95) */
    const char *prompt;
    int64_t gen_n;
    double temp, top_p;
    bool no_chat;
    /* bench --model (tools/bench_model.c): -p and -n tokens of the pp and tg tests */
    int64_t bench_prompt, bench_gen;
    bool have_bench_prompt, have_bench_gen;
    char cmdline[2048]; /* the command as typed, shell-quoted, for reports */
} ToolArgs;

/* util.c: the one parser of every command's options. Numbers are decimal digits only
 * (no sign, space, junk or overflow) within each option's limits below; anything else
 * is exit 2 naming the option and the range (docs/hardening.md, "Command-line options,
 * named files, results"). */
#define TOOL_MAX_DIM (INT64_C(1) << 31)      /* M, N, K of --shape and shapes files */
#define TOOL_MAX_ELEMS (INT64_C(1) << 28)    /* elements of each matrix made for a layer */
#define TOOL_MAX_TOKENS (INT64_C(1) << 20)   /* eval --tokens */
#define TOOL_MAX_SENTENCES (INT64_C(1) << 16) /* eval --sentences */
#define TOOL_MAX_WINDOW 4096                 /* eval --window, --stride */
#define TOOL_MAX_THREADS 64                  /* bench --threads */
#define TOOL_MAX_REPEAT 100000               /* bench --repeat */
#define TOOL_MAX_WARMUP 100000               /* bench --warmup */
#define TOOL_MAX_PROBE_MS 10000              /* bench --probe-ms */
#define TOOL_MAX_GEN_TOKENS (INT64_C(1) << 20) /* generate -n (and the model's context) */
#define TOOL_MAX_TEMP 100.0                  /* generate --temp */
#define TOOL_MAX_BENCH_TOKENS 16384          /* bench --model -p, -n */
#define TOOL_MAX_LAYER_NAME 1000             /* --layer bytes (frontend/lower.c's limit) */
#define TOOL_MAX_OUT_DIR 4000                /* -o DIR bytes */
/* a layer's name with a suffix (".weight") never truncated */
#define TOOL_NAME_BYTES (TOOL_MAX_LAYER_NAME + 32)
struct KilnProgress;
/* The progress display of long commands on stderr: --json lines, --quiet none, else a
 * bar when stderr is a terminal (runtime/progress.h). NULL when nothing is shown. */
struct KilnProgress *tool_progress(const ToolArgs *a);
int tool_parse_args(int argc, char **argv, int first, ToolArgs *a);
/* "M,N,K" (or MxNxK), each 1..TOOL_MAX_DIM; -1 otherwise. */
int tool_parse_shape(const char *s, int64_t *M, int64_t *N, int64_t *K);
/* Exit 2 with "WHERE: shape M,N,K: ..." when a matrix the commands make for the layer
 * (x M·K, W N·K, y M·N; data false: only the 64·K calibration batch) would exceed
 * TOOL_MAX_ELEMS elements. */
int tool_check_shape(const char *where, int64_t M, int64_t N, int64_t K, bool data);
/* One numeric option value: exit 2 with "kiln: bad OPT 'V': expected an integer from LO
 * to HI" unless v is decimal digits for a number in [lo, hi]. */
int tool_parse_int(const char *opt, const char *v, int64_t lo, int64_t hi, int64_t *out);
/* The same for a decimal number ("0.7", "1e-3"): finite, in [lo, hi], nothing after it. */
int tool_parse_double(const char *opt, const char *v, double lo, double hi, double *out);
void tool_error(const KilnDiag *d);
/* Deterministic data: a stream seeded by (seed, name) of N(0, sigma) floats. */
void tool_fill_normal(float *x, int64_t n, uint64_t seed, const char *name, float sigma);
uint64_t tool_hash(const char *s);
/* The deterministic layer data every command uses (tests/aot/datagen.h mirrors it):
 * W[N,K] ~ N(0, 1/sqrt(K)) named "<layer>.weight", so outputs stay O(1), and bias[N] ~
 * N(0, 0.1) named "<layer>.bias". Both malloc'd (caller frees); -1 when out of memory. */
#define TOOL_BIAS_SIGMA 0.1f
/* Rows of the separate synthetic calibration batch every command uses for a layer
 * (static activation scales, outlier columns), whatever M: one row at M = 1 picks
 * outlier columns by chance (an N(0,1) draw times the planted gain can fall under the
 * threshold) and a static scale from 1/64th of the statistics. */
#define TOOL_CALIB_ROWS 64
float tool_weight_sigma(int64_t K);
int tool_layer_data(uint64_t seed, const char *layer, int64_t N, int64_t K, float **w, float **b);
/* The calibration batch for static activation scales: rows x K of N(0,1), a stream
 * separate from the inputs (seed + 1000), so run, aot and bench calibrate alike. */
float *tool_calib_batch(uint64_t seed, int64_t rows, int64_t K);
/* Activation outlier channels as LLMs have them (LLM.int8(), Dettmers et al. 2022), for a
 * layer whose rule has outliers = {...}: K/128 columns (at least one, at most what the
 * rule's max_fraction allows; none when it allows none), evenly spaced from an offset the
 * seed picks, scaled by TOOL_OUTLIER_GAIN in every row of x[rows, K]. The commands plant
 * them in the inputs and the calibration batch alike, so that the split has columns to
 * take (N(0,1) data alone almost never exceeds a threshold of 6). */
#define TOOL_OUTLIER_GAIN 20.0f
struct KilnRecipe;
void tool_layer_outliers(uint64_t seed, const struct KilnRecipe *r, const char *layer, float *x,
                         int64_t rows, int64_t K);
/* tool_calib_batch with tool_layer_outliers. */
float *tool_layer_calib(uint64_t seed, const struct KilnRecipe *r, const char *layer,
                        int64_t rows, int64_t K);

/* cmd_ir.c: plan (api/plan.h) the named layer, or one example layer per rule, into m,
 * each with its synthetic calibration batch; tool_plan_free frees the batches. */
typedef struct ToolPlan {
    KilnPlanLayer *layers;
    float **calib;
    float *shared; /* the one batch of every layer without outlier columns */
    int n;
    int unexercised; /* rules whose example name another rule or the ignore list takes
                      * (each noted on stderr): running the examples does not test them */
    /* in: run each layer's calibrated method (GPTQ, AWQ, SmoothQuant) on its synthetic
     * weights (tool_layer_data) and a calibration batch of 8K rows (64..8192), and plan
     * the layer on its input after the method (kiln run); out: per layer, what ran */
    bool methods;
    struct KilnLayerMethod *method;
} ToolPlan;
int tool_plan(const ToolArgs *a, const struct KilnRecipe *r, const KilnTarget *t, KilnModule *m,
              FILE *print_after_all, ToolPlan *p, KilnDiag *d);
void tool_plan_free(ToolPlan *p);

/* ir_input.c: IR text files as input. tool_is_ir_file: the name ends in .kir, or (not
 * .lua) the text starts with `func @` after blank and `;` lines. tool_ir_load parses
 * (at most 64 MiB, regular files only) and verifies; tool_ir_target is the first
 * function's `target` attribute or NULL; tool_plan_ir plans every function as a layer
 * (kiln_plan_ir) with a synthetic calibration batch of its K, as tool_plan does. */
bool tool_is_ir_file(const char *path);
int tool_ir_load(const char *path, KilnModule *m, KilnDiag *d);
const char *tool_ir_target(const KilnModule *m);
int tool_plan_ir(const ToolArgs *a, const KilnTarget *t, KilnModule *m, FILE *print_after_all,
                 ToolPlan *p, KilnDiag *d);
/* A CPU target takes the traits (`tune`) the IR's first function was planned with. */
void tool_ir_apply_tune(const KilnModule *m, KilnTarget *t);
const char *tool_target_name(const ToolArgs *a, const struct KilnRecipe *r, const char *dflt);
int tool_exit_code(int kiln_rc);
/* util.c: "kiln: P recipe parses, L layer lowerings" on stderr (--verbose). */
void tool_print_counts(void);

/* cmd_*.c */
int cmd_targets(const ToolArgs *a);
int cmd_ir(const ToolArgs *a);
int cmd_run(const ToolArgs *a);
int cmd_eval(const ToolArgs *a);
int cmd_quantize(const ToolArgs *a);
int cmd_aot(const ToolArgs *a);
int cmd_bench(const ToolArgs *a);
int cmd_generate(const ToolArgs *a);
/* bench_model.c: kiln bench RECIPE --model M (cmd_bench dispatches to it) */
int cmd_bench_model(const ToolArgs *a);

#endif
