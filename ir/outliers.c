/* ir/outliers.c — choosing outlier columns from calibration rows and the f32 side path
 * plus epilogue that backends run around the int8 kernel of a qgemm with `outliers`. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ir/numerics.h"
#include "ir/outliers.h"

/* Separately rounded f32 multiply and add, as the interpreter defines its sums. */
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#endif

typedef struct {
    float mx;
    int64_t col;
} ColMax;

static int by_max_desc(const void *a, const void *b)
{
    const ColMax *x = a, *y = b;
    if (x->mx != y->mx)
        return x->mx > y->mx ? -1 : 1;
    return x->col < y->col ? -1 : x->col > y->col;
}

static int by_index(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

int64_t kiln_outlier_pick_absmax(const float *absmax, int64_t K, float threshold,
                                 float max_fraction, int64_t *idx)
{
    int64_t cap = (int64_t)floor((double)max_fraction * (double)K);
    if (cap <= 0 || K <= 0)
        return 0;
    ColMax *c = malloc(sizeof *c * (size_t)K);
    if (!c)
        return -1;
    int64_t n = 0;
    for (int64_t j = 0; j < K; j++)
        if (absmax[j] > threshold) /* NaN compares false: never an outlier */
            c[n++] = (ColMax){absmax[j], j};
    if (n > cap) {
        qsort(c, (size_t)n, sizeof *c, by_max_desc);
        n = cap;
    }
    for (int64_t i = 0; i < n; i++)
        idx[i] = c[i].col;
    free(c);
    qsort(idx, (size_t)n, sizeof *idx, by_index);
    return n;
}

int64_t kiln_outlier_pick(const float *x, int64_t rows, int64_t K, float threshold,
                          float max_fraction, int64_t *idx)
{
    if (rows <= 0 || K <= 0)
        return 0;
    float *mx = calloc((size_t)K, sizeof *mx);
    if (!mx)
        return -1;
    for (int64_t r = 0; r < rows; r++)
        for (int64_t j = 0; j < K; j++) {
            float a = fabsf(x[r * K + j]);
            if (a > mx[j]) /* NaN compares false: ignored */
                mx[j] = a;
        }
    int64_t n = kiln_outlier_pick_absmax(mx, K, threshold, max_fraction, idx);
    free(mx);
    return n;
}

void kiln_outlier_zero_cols(const float *x, int64_t K, const int64_t *idx, int64_t n, int64_t m0,
                            int64_t m1, float *xz)
{
    for (int64_t m = m0; m < m1; m++) {
        memcpy(xz + m * K, x + m * K, sizeof(float) * (size_t)K);
        for (int64_t j = 0; j < n; j++)
            xz[m * K + idx[j]] = 0.0f;
    }
}

void kiln_outlier_gather_wt(const float *w, int64_t N, int64_t K, const int64_t *idx, int64_t n,
                            float *woT)
{
    for (int64_t j = 0; j < n; j++)
        for (int64_t o = 0; o < N; o++)
            woT[j * N + o] = w[o * K + idx[j]];
}

/* a[o] += xv·b[o] (axpy) and a[o] += b[o] (add): eight at a time with separate pointers,
 * the form GCC's -O2 vectorizes; each element keeps its own separately rounded
 * multiply and add, so the results equal the scalar loop's. */
static void axpy(float *restrict a, const float *restrict b, float xv, int64_t n)
{
    int64_t o = 0;
    for (; o + 8 <= n; o += 8) {
        a[o] += xv * b[o], a[o + 1] += xv * b[o + 1], a[o + 2] += xv * b[o + 2];
        a[o + 3] += xv * b[o + 3], a[o + 4] += xv * b[o + 4], a[o + 5] += xv * b[o + 5];
        a[o + 6] += xv * b[o + 6], a[o + 7] += xv * b[o + 7];
    }
    for (; o < n; o++)
        a[o] += xv * b[o];
}

static void add(float *restrict a, const float *restrict b, int64_t n)
{
    int64_t o = 0;
    for (; o + 8 <= n; o += 8) {
        a[o] += b[o], a[o + 1] += b[o + 1], a[o + 2] += b[o + 2], a[o + 3] += b[o + 3];
        a[o + 4] += b[o + 4], a[o + 5] += b[o + 5], a[o + 6] += b[o + 6], a[o + 7] += b[o + 7];
    }
    for (; o < n; o++)
        a[o] += b[o];
}

void kiln_outlier_finish(const KilnOutlierEpi *e, const float *x, const float *acc, void *y,
                         int64_t m0, int64_t m1, float *side)
{
    int64_t N = e->N, K = e->K, n = e->n;
    for (int64_t m = m0; m < m1; m++) {
        /* j outer, o inner: each side[o] still sums its j in ascending order, and the
         * inner loop runs along contiguous woT rows */
        memset(side, 0, sizeof(float) * (size_t)N);
        for (int64_t j = 0; j < n; j++)
            axpy(side, e->woT + j * N, x[m * K + e->idx[j]], N);
        add(side, acc + m * N, N); /* acc + side: the same sum either way round */
        if (e->bias)
            add(side, e->bias, N);
        for (int64_t o = 0; o < N; o++) {
            float v = side[o];
            /* the interpreter's silu and gelu */
            if (e->act == KILN_EPI_SILU)
                v = v / (1.0f + expf(-v));
            else if (e->act == KILN_EPI_GELU)
                v = 0.5f * v * (1.0f + erff(v * 0.70710678118654752f));
            if (e->out_dt == KILN_F16)
                ((uint16_t *)y)[m * N + o] = kiln_f32_to_f16(v);
            else if (e->out_dt == KILN_BF16)
                ((uint16_t *)y)[m * N + o] = kiln_f32_to_bf16(v);
            else
                ((float *)y)[m * N + o] = v;
        }
    }
}
