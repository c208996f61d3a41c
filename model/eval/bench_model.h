/* model/eval/bench_model.h — `kiln bench RECIPE --model M`: a whole model's speed under a
 * recipe, measured as llama-bench measures llama.cpp (prompt processing ppN: one forward of N
 * prompt tokens from an empty cache; text generation tgN: N single-token decode steps), each
 * repeated after a warm-up. The command (tools/bench_model.c) prints the results. */
#ifndef KILN_MODEL_BENCH_MODEL_H
#define KILN_MODEL_BENCH_MODEL_H

#include <stdbool.h>
#include <stdint.h>

#include "kiln.h"

struct KilnProgress;

typedef struct KilnBenchModelOpts {
    const char *recipe, *model, *target; /* model: "smollm2", "minilm" or a path */
    int n_prompt, n_gen;                 /* tokens of the pp and tg tests (0: skip the test) */
    int threads;                         /* the model's pool and the kernels' (0: all cores) */
    int repeat;                          /* timed runs per test, after one warm-up run */
    bool verbose;
    struct KilnProgress *progress;       /* loading, calibration, binding; NULL: none */
} KilnBenchModelOpts;

typedef struct KilnBenchTest {
    char name[24];      /* "pp512", "tg128" */
    int n_prompt, n_gen; /* tokens in one run (an encoder's batch: whole sentences, so
                          * n_prompt is the batch's real count, at least the one asked) */
    int n;              /* runs */
    double *samples_ns; /* [n]: each run's wall time */
    double *samples_ts; /* [n]: each run's tokens/s */
    double avg_ts, stddev_ts, avg_ns, stddev_ns;
} KilnBenchTest;

typedef struct KilnBenchModelOut {
    char path[4096];       /* the model file or directory */
    char recipe_name[128]; /* the recipe's own name */
    char target[64];       /* the target the kernels were compiled for */
    const char *net;       /* "llama", "bert" */
    bool decoder;
    int64_t n_params;      /* every weight of the model, once (a tied head counts once) */
    int64_t size_bytes;    /* the weights as kiln runs them: each linear layer's kernel
                            * weights (codes, scales, zeros), f32 embeddings and norms */
    int threads;
    KilnBenchTest test[2];
    int ntests;
    char note[200];        /* why a test is missing ("" when none is) */
} KilnBenchModelOut;

/* Loads the model, applies the recipe as kiln eval does (methods, static scales on the
 * calibration text, binding: none of it timed) and runs the tests. */
int kiln_bench_model(const KilnBenchModelOpts *o, KilnBenchModelOut *out, KilnDiag *d);
void kiln_bench_model_free(KilnBenchModelOut *out);

#endif
