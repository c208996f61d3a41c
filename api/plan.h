/* api/plan.h — the one way from a recipe's layer to a kernel, for the public API and
 * every `kiln` command: outlier columns, lowering, the passes and static calibration,
 * in that order (kiln_plan_layers); and the in-tree
 * extensions of include/kiln.h that let a command hand the API a recipe it already
 * parsed and a layer it already planned, so each is done once. */
#ifndef KILN_API_PLAN_H
#define KILN_API_PLAN_H

#include <stdio.h>

#include "frontend/recipe.h"
#include "kiln.h"
#include "passes/passes.h"

/* One layer to plan. The caller fills the inputs; kiln_plan_layers the outputs. */
typedef struct KilnPlanLayer {
    const char *name;
    int64_t M, N, K;       /* M: the rows the IR shows (the kernels take any M) */
    bool any_m;            /* a layer for every M (the API's layers: decode and prefill):
                            * per-M choices (AMX tiles, pick_layout) take the kernel that
                            * serves both, not the one best for M alone */
    const float *calib_x;  /* [calib_rows, K]: static activation scales and outlier
                            * columns come from these rows; NULL: none (a static scale
                            * stays open, a rule with outliers is an error) */
    int64_t calib_rows;
    const KilnQuantSpec *stored, *stored_act; /* a checkpoint's formats (frontend/recipe.h) */
    /* outputs */
    KilnFunc *f;           /* the layer after the passes (and calibration) */
    const KilnInst *qgemm; /* its qgemm, NULL when the passes left none */
    bool calibrated;       /* a static activation scale was taken from calib_x */
} KilnPlanLayer;

/* Plans layers[0..n) of recipe r for target t into m: each layer's outlier columns
 * (from its calibration rows, when its rule has outliers) and lowering, then the pass
 * pipeline once over all of them, then each one's static calibration. With
 * print_after_all the module is printed after lowering ("; *** IR after lower ***")
 * and after every pass. Errors name the layer. */
int kiln_plan_layers(const KilnRecipe *r, const KilnTarget *t, KilnPlanLayer *layers, int n,
                     KilnModule *m, FILE *print_after_all, KilnDiag *d);

/* IR text as the planner's input (`kiln ir|run|bench|aot FILE.kir`): every function of
 * m (parsed and verified) is a layer, x[M,K] its first parameter and y[M,N] its result;
 * layers[i] (n == m->nfuncs) gets its name, shape and f, the caller's calib_x (K
 * columns, from the function's x) if any. The pipeline runs as for a recipe: IR that is
 * already final comes back unchanged, IR that was only lowered gets its layouts. A
 * function planned for another target (it has layouts or prepacks and a `target` other
 * than t) is refused, naming both; one without a `target` gets t's. */
int kiln_plan_ir(KilnModule *m, const KilnTarget *t, KilnPlanLayer *layers, int n,
                 FILE *print_after_all, KilnDiag *d);

/* ------------------------------------------------------------------ in-tree API */

/* A recipe the caller parsed (frontend/recipe.h) as a kiln_recipe, borrowed: closing
 * it leaves r alone. */
kiln_recipe *kiln_recipe_borrow(const KilnRecipe *r);
/* The parsed recipe inside a kiln_recipe. */
const KilnRecipe *kiln_recipe_frontend(const kiln_recipe *r);
/* The resolved target of a context (its level and traits). */
const KilnTarget *kiln_ctx_target_full(const kiln_ctx *ctx);
/* The thread pool the context's CPU kernels run on (NULL on a GPU), owned by the context:
 * a model that runs its other ops there keeps one set of threads busy, not two. */
struct KilnPool *kiln_ctx_pool(kiln_ctx *ctx);
/* kiln_layer_create for a layer already planned with kiln_plan_layers for this
 * context's target: no second lowering. desc gives the weights, bias and name. */
kiln_status kiln_layer_create_planned(kiln_ctx *ctx, const KilnPlanLayer *p,
                                      const kiln_layer_desc *desc, kiln_layer **out);

/* A layer's f32 weights handed over a slice of rows at a time instead of whole: rows
 * [n0, n0 + n) of the [N, K] matrix into out ([n, K], row-major); 0, or a status with d
 * set. kiln_layer_create_rows asks for at most chunk_rows rows a call, in order. */
typedef struct KilnWeightRows {
    int (*read)(void *arg, int64_t n0, int64_t n, float *out, KilnDiag *d);
    void *arg;
    int64_t chunk_rows;
} KilnWeightRows;

/* kiln_layer_create with desc->weight NULL and the weights read through rows: the CPU
 * quantizes and prepacks a chunk of rows at a time, so the whole f32 matrix is never
 * held (a big layer's f32 and its packed copy would be the peak: docs/hardening.md,
 * "Memory"). The same packed bytes as kiln_layer_create on the whole matrix: weights are
 * quantized row by row (per channel, per group), a per-tensor scale from the min/max of
 * all chunks (read once more to pack). Where that cannot hold (outlier columns, a
 * per-tensor scale by percentile or MSE, a backend without the chunked path) the rows are
 * read whole first, as kiln_layer_create would take them. */
kiln_status kiln_layer_create_rows(kiln_ctx *ctx, const kiln_recipe *r,
                                   const kiln_layer_desc *desc, const KilnWeightRows *rows,
                                   kiln_layer **out);

#endif
