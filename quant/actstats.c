/* quant/actstats.c — streaming statistics of a layer's input: XᵀX for GPTQ's Hessian,
 * per-column max |x| (SmoothQuant, outliers) and mean |x| (AWQ), a reservoir of rows. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* Rows converted to f64 panels at a time: two panels of CHUNK x 8 doubles (16 KiB)
 * stay in L1 while a tile of XᵀX accumulates. */
enum { CHUNK = 128 };

int kiln_actstats_init(KilnActStats *s, int64_t K, bool want_hessian, int64_t max_rows,
                       KilnDiag *d)
{
    memset(s, 0, sizeof *s);
    if (K <= 0 || max_rows < 0)
        return kiln_diag_set(d, KILN_EINPUT, "activation statistics: K = %lld, max_rows = %lld",
                             (long long)K, (long long)max_rows);
    s->K = K;
    s->max_rows = max_rows;
    s->kp = (K + 7) & ~(int64_t)7;
    s->rng = 0x9E3779B97F4A7C15ull;
    s->absmax = calloc((size_t)K, sizeof *s->absmax);
    s->abssum = calloc((size_t)K, sizeof *s->abssum);
    s->sample = max_rows ? malloc((size_t)max_rows * (size_t)K * sizeof *s->sample) : NULL;
    if (want_hessian) {
        s->xtx = calloc((size_t)s->kp * (size_t)s->kp, sizeof *s->xtx);
        s->panel = calloc((size_t)CHUNK * (size_t)s->kp, sizeof *s->panel);
    }
    if (!s->absmax || !s->abssum || (max_rows && !s->sample) ||
        (want_hessian && (!s->xtx || !s->panel))) {
        kiln_actstats_free(s);
        return kiln_diag_set(d, KILN_EINTERNAL,
                             "out of memory for the activation statistics of K = %lld",
                             (long long)K);
    }
    return 0;
}

void kiln_actstats_free(KilnActStats *s)
{
    free(s->absmax);
    free(s->abssum);
    free(s->sample);
    free(s->xtx);
    free(s->panel);
    memset(s, 0, sizeof *s);
}

static uint64_t next_rand(uint64_t *state) /* splitmix64 */
{
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Algorithm R: row number t (0-based) replaces a random slot with probability max/(t+1). */
static void reservoir_add(KilnActStats *s, const float *row)
{
    int64_t t = s->rows, slot = -1;
    if (t < s->max_rows)
        slot = t;
    else {
        int64_t j = (int64_t)(next_rand(&s->rng) % (uint64_t)(t + 1));
        if (j < s->max_rows)
            slot = j;
    }
    if (slot >= 0)
        memcpy(s->sample + slot * s->K, row, (size_t)s->K * sizeof *row);
    if (s->nsample < s->max_rows)
        s->nsample++;
}

/* Rows x[0,R) into kp/8 panels of [R][8] doubles (columns past K are 0). */
static void to_panels(double *P, const float *x, int64_t R, int64_t K, int64_t kp)
{
    for (int64_t pb = 0; pb < kp / 8; pb++) {
        double *p = P + pb * R * 8;
        for (int64_t r = 0; r < R; r++)
            for (int j = 0; j < 8; j++) {
                int64_t c = pb * 8 + j;
                p[r * 8 + j] = c < K ? (double)x[r * K + c] : 0.0;
            }
    }
}

void kiln_actstats_add(KilnActStats *s, const float *x, int64_t rows)
{
    int64_t K = s->K;
    for (int64_t r = 0; r < rows; r++) {
        const float *row = x + r * K;
        for (int64_t k = 0; k < K; k++) {
            float a = fabsf(row[k]);
            if (!(a < INFINITY)) /* NaN and Inf carry no usable magnitude */
                continue;
            s->absmax[k] = a > s->absmax[k] ? a : s->absmax[k];
            s->abssum[k] += a;
        }
        if (s->max_rows)
            reservoir_add(s, row);
        s->rows++;
    }
    if (!s->xtx)
        return;
    for (int64_t r0 = 0; r0 < rows; r0 += CHUNK) {
        int64_t R = rows - r0 < CHUNK ? rows - r0 : CHUNK;
        to_panels(s->panel, x + r0 * K, R, K, s->kp);
        kq_syrk_panels(s->xtx, s->panel, R, s->kp);
    }
}

int kiln_actstats_hessian(const KilnActStats *s, double *H, KilnDiag *d)
{
    if (!s->xtx)
        return kiln_diag_set(d, KILN_EINPUT,
                             "activation statistics were collected without the Hessian");
    if (s->rows == 0)
        return kiln_diag_set(d, KILN_EINPUT, "no calibration rows reached this layer");
    int64_t K = s->K, kp = s->kp;
    double f = 2.0 / (double)s->rows;
    /* kq_syrk_panels filled the panels on and above the diagonal panel; mirror the rest */
    for (int64_t i = 0; i < K; i++)
        for (int64_t j = 0; j < K; j++) {
            bool upper = j / 8 >= i / 8;
            H[i * K + j] = f * (upper ? s->xtx[i * kp + j] : s->xtx[j * kp + i]);
        }
    return 0;
}

void kiln_actstats_mean_abs(const KilnActStats *s, float *xmean)
{
    for (int64_t k = 0; k < s->K; k++)
        xmean[k] = s->rows ? (float)(s->abssum[k] / (double)s->rows) : 0.0f;
}
