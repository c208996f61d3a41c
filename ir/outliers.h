/* ir/outliers.h — LLM.int8()-style outlier columns (docs/ir.md, qgemm `outliers`):
 * choosing them from calibration rows, and the pieces a backend runs around its int8
 * kernel (the kernel computes only the int8 part on x with those columns zeroed; the
 * f32 side path, bias, activation and output rounding follow here). libc only. */
#ifndef KILN_OUTLIERS_H
#define KILN_OUTLIERS_H

#include "ir/layout.h"

/* The columns j whose absmax[j] (max |x_j| over calibration rows) exceeds threshold, at
 * most floor(max_fraction · K) of them (the largest maxima win; a tie goes to the lower
 * column), ascending, into idx (room for K). NaN never exceeds; Inf does. Returns how
 * many, or -1 when out of memory. */
int64_t kiln_outlier_pick_absmax(const float *absmax, int64_t K, float threshold,
                                 float max_fraction, int64_t *idx);
/* The same from the rows x[rows, K] themselves (NaN values are ignored). */
int64_t kiln_outlier_pick(const float *x, int64_t rows, int64_t K, float threshold,
                          float max_fraction, int64_t *idx);

/* Rows [m0, m1) of x[., K] into xz (same indexing) with the n columns idx zeroed. */
void kiln_outlier_zero_cols(const float *x, int64_t K, const int64_t *idx, int64_t n, int64_t m0,
                            int64_t m1, float *xz);

/* woT[j][n] = w[n][idx[j]]: the outlier columns of W[N, K], transposed so that the side
 * path runs along n. */
void kiln_outlier_gather_wt(const float *w, int64_t N, int64_t K, const int64_t *idx, int64_t n,
                            float *woT);

/* Everything of a qgemm with outliers that comes after its int8 part. */
typedef struct KilnOutlierEpi {
    int64_t N, K, n;
    const int64_t *idx; /* the n outlier columns, ascending */
    const float *woT;   /* [n][N] (kiln_outlier_gather_wt) */
    const float *bias;  /* [N] or NULL */
    KilnEpilogue act;
    KilnDType out_dt;   /* f32, f16 or bf16 */
} KilnOutlierEpi;

/* Rows [m0, m1): y[m, o] = round_to(out_dt, act(acc[m, o] + side[m, o] + bias[o])) with
 * side[m, o] = Σ_j x[m, idx_j]·wo[o, j] summed in f32 in ascending j: the qgemm's
 * semantics, in the interpreter's order of operations. x is the original [M, K] (outlier
 * columns intact), acc the int8 part [M, N] in f32, y [M, N] of out_dt. scratch holds N
 * floats. */
void kiln_outlier_finish(const KilnOutlierEpi *e, const float *x, const float *acc, void *y,
                         int64_t m0, int64_t m1, float *scratch);

#endif
