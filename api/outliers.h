/* api/outliers.h — a CPU layer whose rule has outliers = {...} (LLM.int8()-style): the
 * columns picked from the caller's calibration rows, and the run around the int8
 * kernel (the kernel sees x with those columns zeroed; their f32 part, the bias, the
 * activation and the output rounding follow in C, ir/outliers.h). */
#ifndef KILN_API_OUTLIERS_H
#define KILN_API_OUTLIERS_H

#include "frontend/recipe.h"
#include "ir/outliers.h"
#include "kiln.h"
#include "runtime/runtime.h"

typedef struct KilnOutlierPart {
    KilnOutlierEpi epi; /* points into the arrays below */
    int64_t *idx;
    float *woT, *bias;
} KilnOutlierPart;

/* The side part for f's qgemm after the passes; *out NULL when it has no outliers. */
int kiln_api_outlier_part(const KilnFunc *f, const kiln_layer_desc *desc, KilnOutlierPart **out,
                          KilnDiag *d);
/* y[M, N] (the part's out dtype) for x[M, K]: fn (the int8 kernel, f32 out, layout L)
 * on x with the columns zeroed, then kiln_outlier_finish, both on the pool. */
int kiln_api_outlier_run(KilnPool *pool, const KilnOutlierPart *p, KilnQGemmFn fn,
                         const KilnLayout *L, const void *wpack, const float *x, int64_t M,
                         void *y, KilnDiag *d);
void kiln_api_outlier_free(KilnOutlierPart *p);

#endif
