/* quant/gptq.c — GPTQ (Frantar et al. 2022, arXiv 2210.17323): quantize W column by
 * column in the order of the Hessian, compensating each column's rounding error on the
 * columns still to come; lazy batch updates in blocks; optional act-order. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* ------------------------------------------------------------------ the factor of H⁻¹ */

/* Lower Cholesky factor in place (row-major, reads the lower triangle; the strict upper
 * triangle is left alone). Returns 0, or 1 + the column whose pivot is not positive. */
static int64_t cholesky_lower(double *A, int64_t n)
{
    for (int64_t j = 0; j < n; j++) {
        const double *aj = A + j * n;
        double piv = aj[j] - kq_dot_f64(aj, aj, j);
        if (!(piv > 0.0) || !isfinite(piv))
            return j + 1;
        double ljj = sqrt(piv);
        A[j * n + j] = ljj;
        for (int64_t i = j + 1; i < n; i++) {
            double *ai = A + i * n;
            ai[j] = (ai[j] - kq_dot_f64(ai, aj, j)) / ljj;
        }
    }
    return 0;
}

/* U, the upper Cholesky factor of H⁻¹ (H⁻¹ = UᵀU), is what GPTQ's updates use. With J
 * the reversal of the K indices, J H J = L Lᵀ gives H⁻¹ = (J L⁻¹ J)ᵀ (J L⁻¹ J), and
 * J L⁻¹ J is upper triangular with a positive diagonal, so it is U: one Cholesky and
 * one triangular inverse instead of an inverse and a second factorization. A holds
 * J H J and is overwritten; U[K*K] (f32, upper, strict lower left 0) receives the factor. */
static int64_t upper_factor_of_inverse(double *A, int64_t K, float *U, double *x)
{
    int64_t bad = cholesky_lower(A, K);
    if (bad)
        return bad;
    memset(U, 0, (size_t)K * (size_t)K * sizeof *U);
    /* column j of L⁻¹ by forward substitution: x[i] for i >= j, stored from x[0] */
    for (int64_t j = 0; j < K; j++) {
        x[0] = 1.0 / A[j * K + j];
        for (int64_t i = j + 1; i < K; i++) {
            const double *li = A + i * K + j;
            x[i - j] = -kq_dot_f64(li, x, i - j) / li[i - j];
        }
        for (int64_t i = j; i < K; i++) /* (L⁻¹)[i][j] = U[K-1-i][K-1-j] */
            U[(K - 1 - i) * K + (K - 1 - j)] = (float)x[i - j];
    }
    return 0;
}

/* ------------------------------------------------------------------ state */

typedef struct Gptq {
    const KilnQuantSpec *spec;
    bool sym, group, fixed_groups; /* fixed_groups: grid known before the sweep */
    int64_t N, K, len, ng;         /* len: columns per scale slice; ng: slices per row */
    float *w;                      /* [N*K] working weights, in sweep (permuted) order */
    float *U;                      /* [K*K] upper factor of H⁻¹, sweep order */
    int32_t *perm;                 /* [K] sweep column j is original column perm[j] */
    KilnQResult *out;              /* codes and w in sweep order until the end */
} Gptq;

/* The slice (scale/zero index) of sweep column j in row n. */
static int64_t slice_of(const Gptq *g, int64_t n, int64_t j)
{
    if (!g->group) /* tensor (N equal entries) and channel: one per row */
        return n;
    int64_t col = g->fixed_groups ? g->perm[j] : j;
    return n * g->ng + col / g->len;
}

static void store_params(Gptq *g, int64_t si, KilnQParams p)
{
    g->out->scale[si] = p.scale;
    if (g->out->zero)
        g->out->zero[si] = p.zero;
}

/* Scales that do not depend on the sweep: the tensor's, each row's, or (static groups)
 * every group's from the original contiguous columns. w is still in original order. */
static void fixed_params(Gptq *g)
{
    const KilnQuantSpec *s = g->spec;
    if (s->gran == KILN_GRAN_TENSOR) {
        KilnQParams p = kq_slice_params(s, g->w, g->N * g->K);
        for (int64_t n = 0; n < g->N; n++)
            store_params(g, n, p);
        return;
    }
    for (int64_t n = 0; n < g->N; n++)
        for (int64_t c = 0; c < g->K; c += g->len) {
            int64_t m = g->K - c < g->len ? g->K - c : g->len;
            store_params(g, n * g->ng + c / g->len, kq_slice_params(s, g->w + n * g->K + c, m));
        }
}

/* One block [j1, j2) of one row: quantize column by column, spread each error over the
 * rest of the block at once and over the columns after it lazily (e[] keeps the scaled
 * errors for that). */
static void sweep_row_block(Gptq *g, int64_t n, int64_t j1, int64_t j2, float *e)
{
    const KilnQuantSpec *s = g->spec;
    int64_t K = g->K;
    float *wr = g->w + n * K;
    for (int64_t j = j1; j < j2; j++) {
        if (g->group && !g->fixed_groups && j % g->len == 0) {
            int64_t m = K - j < g->len ? K - j : g->len; /* inside the block: see block_size */
            store_params(g, n * g->ng + j / g->len, kq_slice_params(s, wr + j, m));
        }
        int64_t si = slice_of(g, n, j);
        KilnQParams p = {g->out->scale[si], g->out->zero ? g->out->zero[si] : 0};
        int32_t code = kiln_quantize_value(s->fmt, g->sym, p, wr[j]);
        float q = kiln_dequantize_value(s->fmt, g->sym, p, code);
        g->out->codes[n * K + j] = (int16_t)code;
        g->out->w[n * K + j] = q;
        const float *uj = g->U + j * K;
        float err = (wr[j] - q) / uj[j];
        e[j - j1] = err;
        kq_sub_rows(wr + j + 1, &err, uj + j + 1, K, 1, j2 - j - 1);
    }
    kq_sub_rows(wr + j2, e, g->U + j1 * K + j2, K, j2 - j1, K - j2);
}

/* A group chosen during the sweep must see every update from the columns before it, so
 * no group may straddle a block: blocks are a multiple of the group (or one group). */
static int64_t block_size(const Gptq *g, int block)
{
    int64_t b = block;
    if (g->group && !g->fixed_groups)
        b = g->len >= b ? g->len : b / g->len * g->len;
    return b;
}

/* ------------------------------------------------------------------ entry */

static int check_opts(const KilnGptqOpts *o, const double *H, KilnDiag *d)
{
    if (!H)
        return kiln_diag_set(d, KILN_EINPUT, "gptq: no Hessian (collect activation statistics "
                                             "with want_hessian)");
    if (!(o->damp >= 0.0f) || !isfinite(o->damp))
        return kiln_diag_set(d, KILN_EINPUT, "gptq: damp = %g, expected a finite value >= 0",
                             (double)o->damp);
    if (o->block <= 0)
        return kiln_diag_set(d, KILN_EINPUT, "gptq: block = %d, expected > 0", o->block);
    return 0;
}

typedef struct {
    double d;
    int32_t i;
} DiagIdx;

/* Descending diag(H), ties by column: a stable order for act-order. */
static int cmp_desc(const void *a, const void *b)
{
    const DiagIdx *x = a, *y = b;
    return x->d > y->d ? -1 : x->d < y->d ? 1 : (x->i > y->i) - (x->i < y->i);
}

/* The sweep order: 0..K-1, or columns by descending diag (dead ones already at 1). */
static int sweep_order(int32_t *perm, const double *diag, int64_t K, bool act_order)
{
    for (int64_t j = 0; j < K; j++)
        perm[j] = (int32_t)j;
    if (!act_order)
        return 0;
    DiagIdx *v = malloc((size_t)K * sizeof *v);
    if (!v)
        return -1;
    for (int64_t j = 0; j < K; j++)
        v[j] = (DiagIdx){diag[j], (int32_t)j};
    qsort(v, (size_t)K, sizeof *v, cmp_desc);
    for (int64_t j = 0; j < K; j++)
        perm[j] = v[j].i;
    free(v);
    return 0;
}

/* Columns of every row of m[N*K] (floats or int16 by size) from sweep order back to the
 * original order: orig[perm[j]] = sweep[j]. */
static void unpermute(void *m, size_t esz, int64_t N, int64_t K, const int32_t *perm, void *tmp)
{
    for (int64_t n = 0; n < N; n++) {
        char *row = (char *)m + (size_t)(n * K) * esz;
        for (int64_t j = 0; j < K; j++)
            memcpy((char *)tmp + (size_t)perm[j] * esz, row + (size_t)j * esz, esz);
        memcpy(row, tmp, (size_t)K * esz);
    }
}

/* H's rows and columns reordered in place: row and column a become the old ones q(a) =
 * perm[K-1-a]. Rows by following the permutation's cycles (one row of x kept aside),
 * then each row's columns through x. Returns -1 out of memory. */
static int reorder_in_place(double *H, int64_t K, const int32_t *perm, double *x)
{
    unsigned char *seen = K > 0 ? calloc((size_t)K, 1) : NULL;
    if (!seen)
        return -1;
    size_t row = (size_t)K * sizeof *H;
    for (int64_t c = 0; c < K; c++) {
        if (seen[c])
            continue;
        memcpy(x, H + c * K, row);
        int64_t a = c;
        for (int64_t q = perm[K - 1 - a]; q != c; a = q, q = perm[K - 1 - a]) {
            memcpy(H + a * K, H + q * K, row);
            seen[a] = 1;
        }
        memcpy(H + a * K, x, row);
        seen[a] = 1;
    }
    free(seen);
    for (int64_t a = 0; a < K; a++) {
        double *r = H + a * K;
        for (int64_t b = 0; b < K; b++)
            x[b] = r[perm[K - 1 - b]];
        memcpy(r, x, row);
    }
    return 0;
}

/* A = J P H Pᵀ J (P: the sweep order, J: reversal) with dead columns' diagonal 1 and
 * λ added to the diagonal; the error names a sweep column the factorisation failed at.
 * A == H: reordered in place (kiln_quant_gptq_consume). */
static int factor_hessian(Gptq *g, const double *H, const double *diag, float damp, double *A,
                          double *x, KilnDiag *d)
{
    int64_t K = g->K;
    double mean = 0;
    for (int64_t j = 0; j < K; j++)
        mean += diag[j];
    mean /= (double)K;
    double lambda = (double)damp * mean;
    if (A == H) {
        if (reorder_in_place(A, K, g->perm, x))
            return kiln_diag_set(d, KILN_EINTERNAL, "gptq: out of memory");
    } else {
        for (int64_t a = 0; a < K; a++)
            for (int64_t b = 0; b < K; b++)
                A[a * K + b] = H[g->perm[K - 1 - a] * K + g->perm[K - 1 - b]];
    }
    for (int64_t a = 0; a < K; a++)
        A[a * K + a] = diag[g->perm[K - 1 - a]] + lambda;
    int64_t bad = upper_factor_of_inverse(A, K, g->U, x);
    if (bad)
        return kiln_diag_set(d, KILN_EINPUT,
                             "gptq: the Hessian of a [%lld,%lld] weight is not positive definite "
                             "after damping (lambda = %g, failed at input column %d): use more "
                             "calibration rows or a larger damp",
                             (long long)g->N, (long long)K, lambda, (int)g->perm[K - bad]);
    return 0;
}

/* The working copy: W with dead columns zeroed (their diag set to 1), the fixed scales,
 * the sweep order, and the copy permuted into that order. */
static int gptq_prepare(Gptq *g, const float *W, const double *H, bool act_order, double *diag,
                        float *tmp, KilnDiag *d)
{
    int64_t N = g->N, K = g->K;
    for (int64_t i = 0; i < N * K; i++)
        if (!isfinite(W[i]))
            return kiln_diag_set(d, KILN_EINPUT, "gptq: weight element [%lld,%lld] is %g",
                                 (long long)(i / K), (long long)(i % K), (double)W[i]);
    memcpy(g->w, W, (size_t)(N * K) * sizeof *g->w);
    for (int64_t j = 0; j < K; j++) { /* a column no input reaches: weight 0, H_jj 1 */
        diag[j] = H[j * K + j];
        if (diag[j] == 0.0) {
            diag[j] = 1.0;
            for (int64_t n = 0; n < N; n++)
                g->w[n * K + j] = 0.0f;
        }
    }
    if (g->fixed_groups)
        fixed_params(g);
    if (sweep_order(g->perm, diag, K, act_order))
        return kiln_diag_set(d, KILN_EINTERNAL, "gptq: out of memory");
    for (int64_t n = 0; act_order && n < N; n++) {
        float *row = g->w + n * K;
        for (int64_t j = 0; j < K; j++)
            tmp[j] = row[g->perm[j]];
        memcpy(row, tmp, (size_t)K * sizeof *row);
    }
    return 0;
}

static int gptq(const float *W, int64_t N, int64_t K, const double *H, double *scratch,
                const KilnQuantSpec *spec, const KilnGptqOpts *o, KilnQResult *out, KilnDiag *d)
{
    memset(out, 0, sizeof *out);
    int rc = kq_check("gptq", spec, N, K, d);
    if (!rc)
        rc = check_opts(o, H, d);
    if (rc)
        return rc;
    Gptq g = {.spec = spec, .sym = kq_sym(spec), .group = spec->gran == KILN_GRAN_GROUP,
              .N = N, .K = K, .len = kq_slice_len(spec, K), .out = out};
    g.ng = g.group ? kq_nslices(spec, K) : 1;
    g.fixed_groups = !g.group || o->static_groups;
    bool keep_perm = g.group && o->act_order && !o->static_groups;
    if ((rc = kq_result_alloc(out, N, K, g.ng, !g.sym, keep_perm, d)))
        return rc;
    int64_t B = block_size(&g, o->block);
    B = B < K ? B : K;
    size_t kk = (size_t)K * (size_t)K;
    g.w = malloc((size_t)N * (size_t)K * sizeof *g.w);
    g.U = malloc(kk * sizeof *g.U);
    g.perm = keep_perm ? out->perm : malloc((size_t)K * sizeof *g.perm);
    double *A = scratch ? scratch : malloc(kk * sizeof *A);
    double *diag = malloc((size_t)K * sizeof *diag);
    double *x = malloc((size_t)K * sizeof *x);
    float *e = malloc((size_t)B * sizeof *e), *tmp = malloc((size_t)K * sizeof *tmp);
    if (!g.w || !g.U || !g.perm || !A || !diag || !x || !e || !tmp)
        rc = kiln_diag_set(d, KILN_EINTERNAL, "gptq: out of memory for a [%lld,%lld] weight",
                           (long long)N, (long long)K);
    if (!rc)
        rc = gptq_prepare(&g, W, H, o->act_order, diag, tmp, d);
    if (!rc)
        rc = factor_hessian(&g, H, diag, o->damp, A, x, d);
    for (int64_t j1 = 0; !rc && j1 < K; j1 += B) {
        int64_t j2 = K - j1 < B ? K : j1 + B;
        for (int64_t n = 0; n < N; n++)
            sweep_row_block(&g, n, j1, j2, e);
    }
    if (!rc && o->act_order && !keep_perm) { /* results back to the original column order */
        unpermute(out->codes, sizeof *out->codes, N, K, g.perm, tmp);
        unpermute(out->w, sizeof *out->w, N, K, g.perm, tmp);
    }
    free(g.w);
    free(g.U);
    if (!keep_perm)
        free(g.perm);
    if (A != scratch)
        free(A);
    free(diag);
    free(x);
    free(e);
    free(tmp);
    if (rc)
        kiln_qresult_free(out);
    return rc;
}

int kiln_quant_gptq(const float *W, int64_t N, int64_t K, const double *H,
                    const KilnQuantSpec *spec, const KilnGptqOpts *o, KilnQResult *out,
                    KilnDiag *d)
{
    return gptq(W, N, K, H, NULL, spec, o, out, d);
}

int kiln_quant_gptq_consume(const float *W, int64_t N, int64_t K, double *H,
                            const KilnQuantSpec *spec, const KilnGptqOpts *o, KilnQResult *out,
                            KilnDiag *d)
{
    return gptq(W, N, K, H, H, spec, o, out, d);
}
