/* quant/awq.c — AWQ (Lin et al. 2023, arXiv 2306.00978): the per-input-channel scale
 * search s = mean|x|^alpha that protects the weights of salient channels, and the
 * weight clipping search, both measured by the layer's output error on sample rows. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static int check_awq(const char *who, const KilnAwqOpts *o, int64_t K, int64_t rows, KilnDiag *d)
{
    if (o->grid <= 0 || o->clip_grid <= 0)
        return kiln_diag_set(d, KILN_EINPUT, "%s: grid = %d, clip_grid = %d, expected > 0", who,
                             o->grid, o->clip_grid);
    if (!(o->clip_min >= 0.0f && o->clip_min < 1.0f))
        return kiln_diag_set(d, KILN_EINPUT, "%s: clip_min = %g, expected in [0, 1)", who,
                             (double)o->clip_min);
    if (o->max_rows <= 0)
        return kiln_diag_set(d, KILN_EINPUT, "%s: max_rows = %lld, expected > 0", who,
                             (long long)o->max_rows);
    if (rows <= 0 || K <= 0)
        return kiln_diag_set(d, KILN_EINPUT, "%s: %lld sample rows of %lld columns, expected some",
                             who, (long long)rows, (long long)K);
    return 0;
}

/* ------------------------------------------------------------------ scale search */

/* s = max(xmean^alpha, 1e-4), then s / sqrt(max(s)·min(s)) so the scales straddle 1. */
static void awq_scales(const float *xmean, int64_t K, double alpha, float *s)
{
    double mx = 0, mn = INFINITY;
    for (int64_t k = 0; k < K; k++) {
        double v = pow((double)xmean[k], alpha);
        v = v > 1e-4 ? v : 1e-4;
        s[k] = (float)v;
        mx = s[k] > mx ? s[k] : mx;
        mn = s[k] < mn ? s[k] : mn;
    }
    float norm = (float)sqrt(mx * mn);
    for (int64_t k = 0; k < K; k++)
        s[k] /= norm;
}

/* sum over layers of ||X (W - Q(W·diag(s))·diag(1/s))ᵀ||² on the rows Xs[R,K];
 * q and e are scratch of the largest N*K. */
static double awq_loss(const float *const *W, const int64_t *N, int nl, int64_t K,
                       const float *Xs, int64_t R, const float *s, const KilnQuantSpec *spec,
                       float *q, float *e)
{
    double loss = 0;
    for (int l = 0; l < nl; l++) {
        const float *w = W[l];
        for (int64_t n = 0; n < N[l]; n++)
            for (int64_t k = 0; k < K; k++)
                e[n * K + k] = w[n * K + k] * s[k];
        kq_fake_quant_matrix(spec, e, N[l], K, q);
        for (int64_t n = 0; n < N[l]; n++)
            for (int64_t k = 0; k < K; k++)
                e[n * K + k] = w[n * K + k] - q[n * K + k] / s[k];
        loss += kq_sq_norm_xet(Xs, R, K, e, N[l], K, K);
    }
    return loss;
}

int kiln_awq_search(const float *const *W, const int64_t *N, int nl, int64_t K, const float *X,
                    int64_t rows, const float *xmean, const KilnQuantSpec *spec,
                    const KilnAwqOpts *o, float *s, float *alpha, double *loss_ratio,
                    KilnDiag *d)
{
    int rc = check_awq("awq", o, K, rows, d);
    if (!rc && nl <= 0)
        rc = kiln_diag_set(d, KILN_EINPUT, "awq: %d layers, expected at least one", nl);
    int64_t maxn = 0;
    for (int l = 0; !rc && l < nl; l++) {
        rc = kq_check("awq", spec, N[l], K, d);
        maxn = N[l] > maxn ? N[l] : maxn;
    }
    for (int64_t k = 0; !rc && k < K; k++)
        if (!(xmean[k] >= 0.0f) || isinf(xmean[k]))
            rc = kiln_diag_set(d, KILN_EINPUT, "awq: mean |x| of input column %lld is %g",
                               (long long)k, (double)xmean[k]);
    if (rc)
        return rc;
    int64_t R;
    float *Xs = kq_sample_rows(X, rows, K, o->max_rows, &R);
    float *q = malloc((size_t)maxn * (size_t)K * sizeof *q);
    float *e = malloc((size_t)maxn * (size_t)K * sizeof *e);
    float *cur = malloc((size_t)K * sizeof *cur);
    if (!Xs || !q || !e || !cur)
        rc = kiln_diag_set(d, KILN_EINTERNAL, "awq: out of memory");
    double best = INFINITY, loss0 = 0;
    int best_a = 0;
    for (int a = 0; !rc && a <= o->grid; a++) {
        awq_scales(xmean, K, (double)a / o->grid, cur);
        double loss = awq_loss(W, N, nl, K, Xs, R, cur, spec, q, e);
        if (a == 0)
            loss0 = loss;
        if (loss < best) { /* ties keep the smaller alpha */
            best = loss;
            best_a = a;
            memcpy(s, cur, (size_t)K * sizeof *s);
        }
    }
    if (!rc && !isfinite(best))
        rc = kiln_diag_set(d, KILN_EINPUT, "awq: the output error is not finite (non-finite "
                                           "weights or sample rows?)");
    if (!rc) {
        *alpha = (float)best_a / (float)o->grid;
        *loss_ratio = loss0 > 0 ? best / loss0 : 1.0;
    }
    free(Xs);
    free(q);
    free(e);
    free(cur);
    return rc;
}

/* ------------------------------------------------------------------ clipping search */

/* Output error of a slice's weight errors: eᵀ G e with G = X_gᵀ X_g over the sample
 * rows when the slice is no longer than the rows (g² instead of R·g per error), else the
 * sum over rows of (X_g,r · e)². */
typedef struct Slice {
    const float *Xs;
    int64_t R, K, c0, len;
    float *G; /* [len*len], or NULL for the row form */
} Slice;

static void slice_gram(Slice *sl, float *G)
{
    sl->G = sl->len <= sl->R ? G : NULL;
    for (int64_t a = 0; sl->G && a < sl->len; a++)
        for (int64_t b = a; b < sl->len; b++) {
            double acc = 0;
            for (int64_t r = 0; r < sl->R; r++) {
                const float *x = sl->Xs + r * sl->K + sl->c0;
                acc += (double)x[a] * (double)x[b];
            }
            G[a * sl->len + b] = G[b * sl->len + a] = (float)acc;
        }
}

static void slice_errors(const Slice *sl, const float *E, int64_t M, double *err)
{
    if (sl->G) {
        kq_quad_forms(E, M, sl->len, sl->G, sl->len, err);
        return;
    }
    for (int64_t m = 0; m < M; m++)
        err[m] = kq_sq_norm_xet(sl->Xs + sl->c0, sl->R, sl->K, E + m * sl->len, 1, sl->len, sl->len);
}

/* Candidates 1 - i/grid while above clip_min; i = 0 (no clip) always. */
static int clip_candidates(const KilnAwqOpts *o, float *r, int cap)
{
    int nc = 0;
    for (int i = 0; i < o->clip_grid && nc < cap; i++) {
        float v = 1.0f - (float)i / (float)o->clip_grid;
        if (i > 0 && !(v > o->clip_min + 1e-6f))
            break;
        r[nc++] = v;
    }
    return nc;
}

static float abs_max(const float *w, int64_t n)
{
    float m = 0;
    for (int64_t k = 0; k < n; k++)
        m = fabsf(w[k]) > m ? fabsf(w[k]) : m;
    return m;
}

/* e = w - Q(clamp(w, ±c)) for one slice of len; t scratch of len. */
static void clipped_error(const KilnQuantSpec *spec, const float *w, int64_t len, float c,
                          float *t, float *e)
{
    for (int64_t k = 0; k < len; k++)
        t[k] = w[k] > c ? c : w[k] < -c ? -c : w[k];
    kiln_fake_quantize(spec->fmt, kq_sym(spec), kq_slice_params(spec, t, len), t, len, e);
    for (int64_t k = 0; k < len; k++)
        e[k] = w[k] - e[k];
}

static void clamp_slice(float *w, int64_t len, float c)
{
    for (int64_t k = 0; k < len; k++)
        w[k] = w[k] > c ? c : w[k] < -c ? -c : w[k];
}

enum { CLIP_ROWS = 32 }; /* rows whose candidate errors are evaluated in one batch */

/* Per row and slice: the candidate with the least error of that slice's output. E holds
 * CLIP_ROWS*nc error vectors of the slice, err their errors. */
static void clip_slices(float *W, int64_t N, int64_t K, const KilnQuantSpec *spec, Slice *sl,
                        const float *r, int nc, float *G, float *t, float *E, double *err)
{
    int64_t len = kq_slice_len(spec, K);
    for (sl->c0 = 0; sl->c0 < K; sl->c0 += len) {
        sl->len = K - sl->c0 < len ? K - sl->c0 : len;
        slice_gram(sl, G);
        for (int64_t n0 = 0; n0 < N; n0 += CLIP_ROWS) {
            int64_t rows = N - n0 < CLIP_ROWS ? N - n0 : CLIP_ROWS;
            float amax[CLIP_ROWS];
            for (int64_t i = 0; i < rows; i++) {
                const float *w = W + (n0 + i) * K + sl->c0;
                amax[i] = abs_max(w, sl->len);
                for (int c = 0; c < nc; c++)
                    clipped_error(spec, w, sl->len, r[c] * amax[i], t, E + (i * nc + c) * sl->len);
            }
            slice_errors(sl, E, rows * nc, err);
            for (int64_t i = 0; i < rows; i++) {
                if (!(amax[i] > 0) || !isfinite(amax[i]))
                    continue;
                int bi = 0;
                for (int c = 1; c < nc; c++) /* strictly better: ties keep r = 1 */
                    bi = err[i * nc + c] < err[i * nc + bi] ? c : bi;
                if (bi > 0)
                    clamp_slice(W + (n0 + i) * K + sl->c0, sl->len, r[bi] * amax[i]);
            }
        }
    }
}

/* Tensor granularity: one clip for the whole matrix, judged by the whole output error. */
static void clip_tensor(float *W, int64_t N, int64_t K, const KilnQuantSpec *spec, const float *Xs,
                        int64_t R, const float *r, int nc, float *t, float *e)
{
    float amax = abs_max(W, N * K);
    if (!(amax > 0) || !isfinite(amax))
        return;
    double best = INFINITY;
    int bi = 0;
    for (int i = 0; i < nc; i++) {
        clipped_error(spec, W, N * K, r[i] * amax, t, e);
        double err = kq_sq_norm_xet(Xs, R, K, e, N, K, K);
        if (err < best) {
            best = err;
            bi = i;
        }
    }
    if (bi > 0)
        clamp_slice(W, N * K, r[bi] * amax);
}

int kiln_awq_clip(float *W, int64_t N, int64_t K, const float *X, int64_t rows,
                  const KilnQuantSpec *spec, const KilnAwqOpts *o, KilnDiag *d)
{
    int rc = kq_check("awq clip", spec, N, K, d);
    if (!rc)
        rc = check_awq("awq clip", o, K, rows, d);
    if (rc)
        return rc;
    enum { MAX_CAND = 1024 };
    float r[MAX_CAND];
    int nc = clip_candidates(o, r, MAX_CAND);
    bool tensor = spec->gran == KILN_GRAN_TENSOR;
    int64_t len = kq_slice_len(spec, K), R;
    float *Xs = kq_sample_rows(X, rows, K, o->max_rows, &R);
    size_t nt = tensor ? (size_t)N * (size_t)K : (size_t)len;
    size_t ne = tensor ? (size_t)N * (size_t)K : (size_t)CLIP_ROWS * (size_t)nc * (size_t)len;
    bool gram = !tensor && len <= R;
    float *t = malloc(nt * sizeof *t), *E = malloc(ne * sizeof *E);
    float *G = gram ? malloc((size_t)len * (size_t)len * sizeof *G) : NULL;
    double *err = malloc((size_t)CLIP_ROWS * (size_t)nc * sizeof *err);
    if (!Xs || !t || !E || !err || (gram && !G))
        rc = kiln_diag_set(d, KILN_EINTERNAL, "awq clip: out of memory");
    else if (tensor)
        clip_tensor(W, N, K, spec, Xs, R, r, nc, t, E);
    else {
        Slice sl = {.Xs = Xs, .R = R, .K = K};
        clip_slices(W, N, K, spec, &sl, r, nc, G, t, E, err);
    }
    free(Xs);
    free(t);
    free(E);
    free(G);
    free(err);
    return rc;
}
