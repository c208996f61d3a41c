/* tests/test_quant.c — quant/: RTN against kiln_quantize_matrix, the kernels against their
 * scalar references, the activation statistics against naive loops, GPTQ against RTN and
 * against a plain implementation, AWQ's search and clipping, SmoothQuant on planted
 * outliers, outlier columns, and MSE range calibration (ir/calib.c) on heavy tails. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "quant/internal.h"
#include "ir/outliers.h"
#include "quant/quant.h"

/* ------------------------------------------------------------------ data */

typedef struct {
    uint64_t s;
} Rng;

static uint64_t rnext(Rng *r)
{
    uint64_t z = (r->s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static double runif(Rng *r) { return ((double)(rnext(r) >> 11) + 0.5) * 0x1p-53; }

static double rgauss(Rng *r) { return sqrt(-2 * log(runif(r))) * cos(6.283185307179586 * runif(r)); }

static double rlaplace(Rng *r)
{
    double u = runif(r) - 0.5;
    return (u < 0 ? 1 : -1) * log(1 - 2 * fabs(u));
}

static double rstudent3(Rng *r) /* Student t, 3 degrees of freedom */
{
    double c = 0;
    for (int i = 0; i < 3; i++) {
        double g = rgauss(r);
        c += g * g;
    }
    return rgauss(r) / sqrt(c / 3);
}

static float *gauss_matrix(Rng *r, int64_t rows, int64_t cols, double sd)
{
    float *m = malloc((size_t)(rows * cols) * sizeof *m);
    for (int64_t i = 0; i < rows * cols; i++)
        m[i] = (float)(sd * rgauss(r));
    return m;
}

/* X = Z·A with Z[rows,r] and A[r,K]: K columns driven by r < K factors, strongly
 * correlated (plus a little noise so H is full rank), columns of varied scale. */
static float *correlated_x(Rng *rng, int64_t rows, int64_t K, int64_t r)
{
    float *Z = gauss_matrix(rng, rows, r, 1.0), *A = gauss_matrix(rng, r, K, 1.0);
    float *X = malloc((size_t)(rows * K) * sizeof *X);
    for (int64_t i = 0; i < rows; i++)
        for (int64_t k = 0; k < K; k++) {
            double acc = 0;
            for (int64_t j = 0; j < r; j++)
                acc += (double)Z[i * r + j] * A[j * K + k];
            X[i * K + k] = (float)((acc + 0.1 * rgauss(rng)) * (0.5 + (double)(k % 7) / 4));
        }
    free(Z);
    free(A);
    return X;
}

/* ||X Wᵀ - Xq Wqᵀ||² in double; perm (may be NULL) reorders the columns of Xq as
 * x[:, perm] for a result in act-order column order. */
static double pair_err(const float *X, const float *Xq, const int32_t *perm, int64_t R, int64_t K,
                       const float *W, const float *Wq, int64_t N)
{
    double tot = 0;
    for (int64_t r = 0; r < R; r++)
        for (int64_t n = 0; n < N; n++) {
            double a = 0, b = 0;
            for (int64_t k = 0; k < K; k++) {
                a += (double)X[r * K + k] * W[n * K + k];
                b += (double)Xq[r * K + (perm ? perm[k] : k)] * Wq[n * K + k];
            }
            tot += (a - b) * (a - b);
        }
    return tot;
}

static double out_err(const float *X, int64_t R, int64_t K, const float *W, const float *What,
                      const int32_t *perm, int64_t N)
{
    return pair_err(X, X, perm, R, K, W, What, N);
}

/* X/s and W·diag(s) in new arrays */
static void scaled_copies(const float *X, int64_t R, int64_t K, const float *W, int64_t N,
                          const float *s, float **xs, float **ws)
{
    *xs = calloc((size_t)(R * K), sizeof **xs);
    *ws = calloc((size_t)(N * K), sizeof **ws);
    for (int64_t r = 0; r < R; r++)
        for (int64_t k = 0; k < K; k++)
            (*xs)[r * K + k] = X[r * K + k] / s[k];
    for (int64_t n = 0; n < N; n++)
        for (int64_t k = 0; k < K; k++)
            (*ws)[n * K + k] = W[n * K + k] * s[k];
}

static double *hessian_of(const float *X, int64_t R, int64_t K)
{
    KilnActStats st;
    KilnDiag d = {0};
    assert_int_equal(kiln_actstats_init(&st, K, true, 0, &d), 0);
    kiln_actstats_add(&st, X, R);
    double *H = malloc((size_t)(K * K) * sizeof *H);
    assert_int_equal(kiln_actstats_hessian(&st, H, &d), 0);
    kiln_actstats_free(&st);
    return H;
}

static KilnQuantSpec spec(KilnQFormat f, bool sym, KilnGran g, int group)
{
    return (KilnQuantSpec){.fmt = f, .symmetric = sym, .gran = g, .group = group};
}

/* codes in the format's range and w = dequant(codes) bit for bit, per the result's layout */
static void check_result(const KilnQResult *r, const KilnQuantSpec *s)
{
    bool sym = kq_sym(s);
    int64_t len = kq_slice_len(s, r->K);
    int32_t qmin = kiln_qformat_qmin(s->fmt, sym), qmax = (int32_t)kiln_qformat_qmax(s->fmt, sym);
    bool fp8 = s->fmt == KILN_QF_FP8_E4M3 || s->fmt == KILN_QF_FP8_E5M2;
    for (int64_t n = 0; n < r->N; n++)
        for (int64_t k = 0; k < r->K; k++) {
            int32_t c = r->codes[n * r->K + k];
            if (fp8)
                assert_true(c >= 0 && c <= 255);
            else
                assert_true(c >= qmin && c <= qmax);
            int64_t si = n * r->ngroups + (s->gran == KILN_GRAN_GROUP ? k / len : 0);
            KilnQParams p = {r->scale[si], r->zero ? r->zero[si] : 0};
            float v = kiln_dequantize_value(s->fmt, sym, p, c);
            assert_memory_equal(&v, &r->w[n * r->K + k], sizeof v);
        }
}

/* ------------------------------------------------------------------ RTN and fake quantization */

static const KilnQuantSpec rtn_specs[] = {
    {.fmt = KILN_QF_INT8, .symmetric = true, .gran = KILN_GRAN_CHANNEL},
    {.fmt = KILN_QF_INT8, .symmetric = false, .gran = KILN_GRAN_GROUP, .group = 32},
    {.fmt = KILN_QF_INT8, .symmetric = true, .gran = KILN_GRAN_TENSOR},
    {.fmt = KILN_QF_INT4, .symmetric = true, .gran = KILN_GRAN_GROUP, .group = 32},
    {.fmt = KILN_QF_INT4, .symmetric = false, .gran = KILN_GRAN_GROUP, .group = 64},
    {.fmt = KILN_QF_INT4, .symmetric = false, .gran = KILN_GRAN_GROUP, .group = 500},
    {.fmt = KILN_QF_INT4, .symmetric = true, .gran = KILN_GRAN_GROUP, .group = 32,
     .calib = KILN_CAL_MSE},
    {.fmt = KILN_QF_INT8, .symmetric = true, .gran = KILN_GRAN_CHANNEL, .calib = KILN_CAL_PERCENTILE,
     .pct = 99.0f},
    {.fmt = KILN_QF_FP8_E4M3, .symmetric = true, .gran = KILN_GRAN_CHANNEL},
    {.fmt = KILN_QF_FP8_E5M2, .symmetric = true, .gran = KILN_GRAN_GROUP, .group = 32,
     .calib = KILN_CAL_MSE},
    {.fmt = KILN_QF_INT8, .symmetric = false, .gran = KILN_GRAN_TENSOR, .scale = 0.01f, .zero = 120},
};

static void test_rtn_matches_quantize_matrix(void **state)
{
    (void)state;
    Rng rng = {1};
    const int64_t N = 24, K = 200; /* 200: ragged last group at 32 and 64 */
    float *W = gauss_matrix(&rng, N, K, 0.05);
    W[5] = 0.9f; /* an outlier for percentile and mse to clip */
    for (size_t t = 0; t < sizeof rtn_specs / sizeof rtn_specs[0]; t++) {
        const KilnQuantSpec *s = &rtn_specs[t];
        KilnQResult r;
        KilnDiag d = {0};
        assert_int_equal(kiln_quant_rtn(W, N, K, s, &r, &d), 0);
        bool sym = kq_sym(s);
        KilnDType dt = kiln_qformat_storage(s->fmt, sym);
        KilnType ty = kiln_type2(dt, N, K);
        ty.q = *s;
        int64_t ns = kiln_type_nscales(&ty);
        size_t rb = kiln_row_bytes(dt, K);
        uint8_t *codes = calloc(rb * N, 1);
        float *sc = malloc((size_t)ns * sizeof *sc), *deq = malloc((size_t)(N * K) * sizeof *deq);
        int32_t *zp = sym ? NULL : malloc((size_t)ns * sizeof *zp);
        assert_int_equal(kiln_quantize_matrix(s, W, N, K, codes, sc, zp, &d), 0);
        assert_int_equal(kiln_dequantize_matrix(s, codes, sc, zp, N, K, deq, &d), 0);
        assert_memory_equal(r.w, deq, (size_t)(N * K) * sizeof *deq);
        for (int64_t n = 0; n < N; n++)
            for (int64_t k = 0; k < K; k++)
                assert_int_equal(r.codes[n * K + k], kiln_code_get(dt, codes + n * rb, k));
        for (int64_t i = 0; i < N * r.ngroups; i++) {
            int64_t si = s->gran == KILN_GRAN_TENSOR ? 0 : i;
            assert_memory_equal(&r.scale[i], &sc[si], sizeof(float));
            if (zp)
                assert_int_equal(r.zero[i], zp[si]);
        }
        check_result(&r, s);
        /* the helper GPTQ and AWQ use is the same RTN */
        kq_fake_quant_matrix(s, W, N, K, deq);
        assert_memory_equal(r.w, deq, (size_t)(N * K) * sizeof *deq);
        kiln_qresult_free(&r);
        free(codes);
        free(sc);
        free(zp);
        free(deq);
    }
    KilnQResult r;
    KilnDiag d = {0};
    KilnQuantSpec tok = spec(KILN_QF_INT8, true, KILN_GRAN_TOKEN, 0);
    assert_int_equal(kiln_quant_rtn(W, N, K, &tok, &r, &d), KILN_EINPUT);
    assert_non_null(strstr(d.msg, "tensor, channel or group"));
    free(W);
}

/* kiln_fake_quantize is the definition (quantize then dequantize) bit for bit. */
static void test_fake_quantize_exact(void **state)
{
    (void)state;
    Rng rng = {2};
    enum { n = 1003 }; /* the vector loops and a scalar tail */
    float x[n], y[n];
    for (int i = 0; i < n; i++)
        x[i] = (float)(rgauss(&rng) * pow(10, (int)(rnext(&rng) % 9) - 4));
    x[3] = NAN;
    x[4] = INFINITY;
    x[5] = -INFINITY;
    x[6] = -0.0f;
    x[7] = 1e-30f;
    const KilnQFormat fmts[] = {KILN_QF_INT8, KILN_QF_INT4, KILN_QF_FP8_E4M3, KILN_QF_FP8_E5M2};
    for (int f = 0; f < 4; f++)
        for (int sym = 0; sym < 2; sym++)
            for (int t = 0; t < 3; t++) {
                KilnQParams p = {t == 0 ? 0.01f : t == 1 ? 3.7e-4f : 17.0f, sym ? 0 : 7 + t};
                kiln_fake_quantize(fmts[f], sym, p, x, n, y);
                for (int i = 0; i < n; i++) {
                    float v = kiln_dequantize_value(fmts[f], sym, p,
                                                    kiln_quantize_value(fmts[f], sym, p, x[i]));
                    if (isnan(v))
                        assert_true(isnan(y[i]));
                    else
                        assert_memory_equal(&v, &y[i], sizeof v);
                }
            }
}

/* ------------------------------------------------------------------ kernels */

static void test_kernels_match_reference(void **state)
{
    (void)state;
    Rng rng = {3};
    const int64_t sizes[] = {0, 1, 7, 16, 33, 100, 257};
    for (int t = 0; t < 7; t++) {
        int64_t n = sizes[t];
        double *a = malloc((size_t)(n + 1) * sizeof *a), *b = malloc((size_t)(n + 1) * sizeof *b);
        for (int64_t i = 0; i < n; i++) {
            a[i] = rgauss(&rng);
            b[i] = rgauss(&rng);
        }
        double x = kq_dot_f64(a, b, n), y = kq_dot_f64_ref(a, b, n);
        assert_memory_equal(&x, &y, sizeof x);
        double naive = 0;
        for (int64_t i = 0; i < n; i++)
            naive += a[i] * b[i];
        assert_true(fabs(x - naive) <= 1e-12 * (1 + fabs(naive)));
        free(a);
        free(b);
    }
    /* GPTQ's row update */
    const int64_t len = 45, nb = 5, ldu = 50;
    float *U = gauss_matrix(&rng, nb, ldu, 1), *e = gauss_matrix(&rng, 1, nb, 1);
    float *w1 = gauss_matrix(&rng, 1, len, 1), *w2 = malloc(len * sizeof *w2);
    memcpy(w2, w1, len * sizeof *w2);
    kq_sub_rows(w1, e, U, ldu, nb, len);
    kq_sub_rows_ref(w2, e, U, ldu, nb, len);
    assert_memory_equal(w1, w2, len * sizeof *w2);
    /* ||X Eᵀ||² with ragged tiles and K not a multiple of 8 */
    const int64_t R = 70, N = 37, K = 29; /* past one 64-row block and one 32-row E block */
    float *X = gauss_matrix(&rng, R, K + 3, 1), *E = gauss_matrix(&rng, N, K + 1, 1);
    double s1 = kq_sq_norm_xet(X, R, K + 3, E, N, K + 1, K);
    double s2 = kq_sq_norm_xet_ref(X, R, K + 3, E, N, K + 1, K);
    assert_memory_equal(&s1, &s2, sizeof s1);
    double naive = 0;
    for (int64_t r = 0; r < R; r++)
        for (int64_t n = 0; n < N; n++) {
            double v = 0;
            for (int64_t k = 0; k < K; k++)
                v += (double)X[r * (K + 3) + k] * E[n * (K + 1) + k];
            naive += v * v;
        }
    assert_true(fabs(s1 - naive) <= 1e-5 * naive);
    /* quadratic forms against a Gram matrix, M and qlen ragged */
    const int64_t M = 7, qlen = 21;
    float *Eq = gauss_matrix(&rng, M, qlen, 1), *G = malloc((size_t)(qlen * qlen) * sizeof *G);
    for (int64_t a = 0; a < qlen; a++)
        for (int64_t b = 0; b <= a; b++)
            G[a * qlen + b] = G[b * qlen + a] = (float)rgauss(&rng);
    double q1[7], q2[7];
    kq_quad_forms(Eq, M, qlen, G, qlen, q1);
    kq_quad_forms_ref(Eq, M, qlen, G, qlen, q2);
    assert_memory_equal(q1, q2, sizeof q1);
    for (int64_t m = 0; m < M; m++) {
        double v = 0;
        for (int64_t a = 0; a < qlen; a++)
            for (int64_t b = 0; b < qlen; b++)
                v += (double)Eq[m * qlen + a] * G[a * qlen + b] * Eq[m * qlen + b];
        assert_true(fabs(q1[m] - v) <= 1e-4 * (1 + fabs(v)));
    }
    free(Eq);
    free(G);
    /* XᵀX panels */
    const int64_t kp = 24, PR = 11;
    double *P = malloc((size_t)(kp * PR) * sizeof *P);
    double *C1 = calloc((size_t)(kp * kp), sizeof *C1), *C2 = calloc((size_t)(kp * kp), sizeof *C2);
    for (int64_t i = 0; i < kp * PR; i++)
        P[i] = rgauss(&rng);
    kq_syrk_panels(C1, P, PR, kp);
    kq_syrk_panels_ref(C2, P, PR, kp);
    assert_memory_equal(C1, C2, (size_t)(kp * kp) * sizeof *C1);
    free(P);
    free(C1);
    free(C2);
    free(U);
    free(e);
    free(w1);
    free(w2);
    free(X);
    free(E);
}

/* ------------------------------------------------------------------ activation statistics */

static void test_actstats(void **state)
{
    (void)state;
    Rng rng = {4};
    const int64_t K = 37, R = 251;
    float *X = gauss_matrix(&rng, R, K, 1.0), *X2 = malloc((size_t)(R * K) * sizeof *X2);
    memcpy(X2, X, (size_t)(R * K) * sizeof *X2);
    X[3 * K + 5] = NAN; /* absmax and mean skip it: the same as a 0 there (X2) */
    X2[3 * K + 5] = 0;
    KilnActStats st, sh;
    KilnDiag d = {0};
    assert_int_equal(kiln_actstats_init(&st, K, false, 16, &d), 0);
    assert_int_equal(kiln_actstats_init(&sh, K, true, 0, &d), 0);
    const int64_t cuts[] = {0, 100, 101, R}; /* three batches, one of a single row */
    for (int b = 0; b < 3; b++) {
        kiln_actstats_add(&st, X + cuts[b] * K, cuts[b + 1] - cuts[b]);
        kiln_actstats_add(&sh, X2 + cuts[b] * K, cuts[b + 1] - cuts[b]);
    }
    assert_int_equal(st.rows, R);
    assert_int_equal(st.nsample, 16);
    double *H = malloc((size_t)(K * K) * sizeof *H);
    assert_int_equal(kiln_actstats_hessian(&sh, H, &d), 0);
    for (int64_t i = 0; i < K; i++)
        for (int64_t j = 0; j < K; j++) {
            double a = 0;
            for (int64_t r = 0; r < R; r++)
                a += (double)X2[r * K + i] * X2[r * K + j];
            a *= 2.0 / R;
            assert_true(fabs(H[i * K + j] - a) <= 1e-12 * (1 + fabs(a)));
            assert_true(H[i * K + j] == H[j * K + i]);
        }
    float xmean[37];
    kiln_actstats_mean_abs(&st, xmean);
    for (int64_t k = 0; k < K; k++) {
        double m = 0;
        float mx = 0;
        for (int64_t r = 0; r < R; r++) {
            m += fabs(X2[r * K + k]);
            mx = fabsf(X2[r * K + k]) > mx ? fabsf(X2[r * K + k]) : mx;
        }
        assert_true(fabs(xmean[k] - m / R) <= 1e-6 * m / R);
        assert_true(st.absmax[k] == mx);
    }
    /* every reservoir row is one of the input rows, no row twice */
    for (int64_t i = 0; i < st.nsample; i++) {
        int64_t found = -1;
        for (int64_t r = 0; r < R && found < 0; r++)
            if (!memcmp(st.sample + i * K, X + r * K, (size_t)K * sizeof(float)))
                found = r;
        assert_true(found >= 0);
        for (int64_t j = 0; j < i; j++)
            assert_true(memcmp(st.sample + i * K, st.sample + j * K, (size_t)K * sizeof(float)));
    }
    assert_int_equal(kiln_actstats_hessian(&st, H, &d), KILN_EINPUT);
    kiln_actstats_free(&st);
    kiln_actstats_free(&sh);
    assert_int_equal(kiln_actstats_init(&st, 0, false, 0, &d), KILN_EINPUT);
    free(H);
    free(X);
    free(X2);
}

/* ------------------------------------------------------------------ GPTQ */

/* The algorithm as the paper writes it, in double, with no lazy batches: an explicit
 * inverse of the damped H, its upper Cholesky factor, one column at a time. */
static void plain_gptq(const float *W, int64_t N, int64_t K, const double *H0, const KilnQuantSpec *s,
                       float damp, float *out)
{
    double *H = malloc((size_t)(K * K) * sizeof *H), *I = calloc((size_t)(K * K), sizeof *I);
    double *U = calloc((size_t)(K * K), sizeof *U), *w = malloc((size_t)(N * K) * sizeof *w);
    memcpy(H, H0, (size_t)(K * K) * sizeof *H);
    double mean = 0;
    for (int64_t i = 0; i < K; i++)
        mean += H[i * K + i] / K;
    for (int64_t i = 0; i < K; i++) {
        H[i * K + i] += damp * mean;
        I[i * K + i] = 1;
    }
    for (int64_t c = 0; c < K; c++) { /* Gauss-Jordan (H is positive definite: no pivoting) */
        double p = H[c * K + c];
        for (int64_t j = 0; j < K; j++) {
            H[c * K + j] /= p;
            I[c * K + j] /= p;
        }
        for (int64_t r = 0; r < K; r++)
            if (r != c) {
                double f = H[r * K + c];
                for (int64_t j = 0; j < K; j++) {
                    H[r * K + j] -= f * H[c * K + j];
                    I[r * K + j] -= f * I[c * K + j];
                }
            }
    }
    for (int64_t i = 0; i < K; i++) /* upper Cholesky: I = UᵀU */
        for (int64_t j = i; j < K; j++) {
            double a = I[i * K + j];
            for (int64_t p = 0; p < i; p++)
                a -= U[p * K + i] * U[p * K + j];
            U[i * K + j] = i == j ? sqrt(a) : a / U[i * K + i];
        }
    for (int64_t i = 0; i < N * K; i++)
        w[i] = W[i];
    bool sym = kq_sym(s);
    int64_t len = kq_slice_len(s, K);
    float row[4096];
    for (int64_t n = 0; n < N; n++) {
        KilnQParams p = {1, 0};
        for (int64_t k = 0; k < K; k++) {
            if (k % len == 0) {
                int64_t m = K - k < len ? K - k : len;
                for (int64_t j = 0; j < m; j++)
                    row[j] = (float)w[n * K + k + j];
                p = kq_slice_params(s, row, m);
            }
            float q = kiln_dequantize_value(s->fmt, sym, p,
                                            kiln_quantize_value(s->fmt, sym, p, (float)w[n * K + k]));
            out[n * K + k] = q;
            double err = (w[n * K + k] - q) / U[k * K + k];
            for (int64_t j = k + 1; j < K; j++)
                w[n * K + j] -= err * U[k * K + j];
        }
    }
    free(H);
    free(I);
    free(U);
    free(w);
}

static void test_gptq_matches_plain(void **state)
{
    (void)state;
    Rng rng = {5};
    const int64_t R = 256, K = 48, N = 16;
    float *X = correlated_x(&rng, R, K, 12), *W = gauss_matrix(&rng, N, K, 0.05);
    double *H = hessian_of(X, R, K);
    KilnQuantSpec s = spec(KILN_QF_INT4, false, KILN_GRAN_GROUP, 16);
    float *ref = malloc((size_t)(N * K) * sizeof *ref);
    plain_gptq(W, N, K, H, &s, 0.01f, ref);
    KilnGptqOpts o = KILN_GPTQ_DEFAULTS;
    o.block = 32; /* two blocks, the second ragged: the lazy updates matter */
    KilnQResult r;
    KilnDiag d = {0};
    assert_int_equal(kiln_quant_gptq(W, N, K, H, &s, &o, &r, &d), 0);
    int same = 0; /* the same code; a scale may differ in its last bits (f32 vs f64 updates) */
    for (int64_t i = 0; i < N * K; i++)
        same += fabsf(r.w[i] - ref[i]) <= 1e-5f * (fabsf(r.w[i]) + fabsf(ref[i])) + 1e-12f;
    /* f32 updates against f64: a rare code may flip on a rounding tie */
    assert_true(same >= N * K * 99 / 100);
    double e1 = out_err(X, R, K, W, r.w, NULL, N), e2 = out_err(X, R, K, W, ref, NULL, N);
    assert_true(fabs(e1 - e2) <= 0.01 * e2);
    kiln_qresult_free(&r);
    free(X);
    free(W);
    free(H);
    free(ref);
}

static void test_gptq_beats_rtn(void **state)
{
    (void)state;
    Rng rng = {6};
    const int64_t R = 512, K = 256, N = 48;
    float *X = correlated_x(&rng, R, K, 32), *W = gauss_matrix(&rng, N, K, 0.05);
    double *H = hessian_of(X, R, K);
    const KilnQuantSpec specs[] = {
        spec(KILN_QF_INT4, true, KILN_GRAN_GROUP, 32),   spec(KILN_QF_INT4, false, KILN_GRAN_GROUP, 32),
        spec(KILN_QF_INT4, true, KILN_GRAN_GROUP, 128),  spec(KILN_QF_INT4, false, KILN_GRAN_GROUP, 128),
        spec(KILN_QF_INT8, true, KILN_GRAN_CHANNEL, 0),  spec(KILN_QF_INT4, true, KILN_GRAN_GROUP, 100),
        spec(KILN_QF_INT8, false, KILN_GRAN_TENSOR, 0),  spec(KILN_QF_FP8_E4M3, true, KILN_GRAN_CHANNEL, 0),
    };
    for (size_t t = 0; t < sizeof specs / sizeof specs[0]; t++) {
        KilnQResult g, r;
        KilnDiag d = {0};
        KilnGptqOpts o = KILN_GPTQ_DEFAULTS;
        assert_int_equal(kiln_quant_gptq(W, N, K, H, &specs[t], &o, &g, &d), 0);
        assert_int_equal(kiln_quant_rtn(W, N, K, &specs[t], &r, &d), 0);
        assert_null(g.perm);
        check_result(&g, &specs[t]);
        double eg = out_err(X, R, K, W, g.w, NULL, N), er = out_err(X, R, K, W, r.w, NULL, N);
        print_message("gptq spec %zu: error ratio gptq/rtn %.3f\n", t, eg / er);
        assert_true(eg < 0.8 * er);
        kiln_qresult_free(&g);
        kiln_qresult_free(&r);
    }
    free(X);
    free(W);
    free(H);
}

static void test_gptq_act_order(void **state)
{
    (void)state;
    Rng rng = {7};
    const int64_t R = 512, K = 128, N = 32;
    float *X = correlated_x(&rng, R, K, 24), *W = gauss_matrix(&rng, N, K, 0.05);
    for (int64_t r = 0; r < R; r++) /* a few loud columns: act-order moves them first */
        for (int64_t k = 0; k < K; k += 19)
            X[r * K + k] *= 8;
    double *H = hessian_of(X, R, K);
    KilnQuantSpec s = spec(KILN_QF_INT4, true, KILN_GRAN_GROUP, 32);
    KilnQResult rt, st, pm;
    KilnDiag d = {0};
    assert_int_equal(kiln_quant_rtn(W, N, K, &s, &rt, &d), 0);
    KilnGptqOpts o = KILN_GPTQ_DEFAULTS;
    o.act_order = true;
    o.static_groups = true;
    assert_int_equal(kiln_quant_gptq(W, N, K, H, &s, &o, &st, &d), 0);
    assert_null(st.perm);
    check_result(&st, &s); /* groups are k/32 of the original order */
    o.static_groups = false;
    assert_int_equal(kiln_quant_gptq(W, N, K, H, &s, &o, &pm, &d), 0);
    assert_non_null(pm.perm);
    check_result(&pm, &s); /* groups are j/32 of the permuted order */
    int seen[128] = {0};
    for (int64_t j = 0; j < K; j++) {
        assert_true(pm.perm[j] >= 0 && pm.perm[j] < K);
        seen[pm.perm[j]]++;
        if (j > 0) /* descending diag(H) */
            assert_true(H[pm.perm[j] * K + pm.perm[j]] <= H[pm.perm[j - 1] * K + pm.perm[j - 1]]);
    }
    for (int64_t k = 0; k < K; k++)
        assert_int_equal(seen[k], 1);
    double er = out_err(X, R, K, W, rt.w, NULL, N);
    double es = out_err(X, R, K, W, st.w, NULL, N);
    double ep = out_err(X, R, K, W, pm.w, pm.perm, N);
    print_message("act-order error / rtn: static %.3f, permuted %.3f\n", es / er, ep / er);
    assert_true(es < 0.8 * er);
    assert_true(ep < 0.8 * er);
    /* channel scales do not depend on the order: the result comes back unpermuted */
    KilnQuantSpec ch = spec(KILN_QF_INT8, false, KILN_GRAN_CHANNEL, 0);
    KilnQResult ca, cr;
    assert_int_equal(kiln_quant_gptq(W, N, K, H, &ch, &o, &ca, &d), 0);
    assert_int_equal(kiln_quant_rtn(W, N, K, &ch, &cr, &d), 0);
    assert_null(ca.perm);
    check_result(&ca, &ch);
    assert_true(out_err(X, R, K, W, ca.w, NULL, N) < 0.8 * out_err(X, R, K, W, cr.w, NULL, N));
    kiln_qresult_free(&ca);
    kiln_qresult_free(&cr);
    kiln_qresult_free(&rt);
    kiln_qresult_free(&st);
    kiln_qresult_free(&pm);
    free(X);
    free(W);
    free(H);
}

/* H = I: no column informs another, so GPTQ is round to nearest, code for code. */
/* kiln_quant_gptq_consume factors in H's own storage (reordered in place, no second
 * K x K copy): the same codes, scales, zeros, weights and permutation as kiln_quant_gptq
 * on a copy of H, for identity and act-order sweep orders (whose permutation has cycles
 * of many lengths) and a K that is not a power of two. */
static void test_gptq_consume_same_bits(void **state)
{
    (void)state;
    Rng rng = {11};
    const int64_t R = 300, K = 97, N = 13;
    float *X = correlated_x(&rng, R, K, 16), *W = gauss_matrix(&rng, N, K, 0.05);
    for (int64_t r = 0; r < R; r++)
        for (int64_t k = 0; k < K; k += 7)
            X[r * K + k] *= 1 + k % 5;
    double *H = hessian_of(X, R, K), *H2 = malloc(sizeof(double) * (size_t)(K * K));
    assert_non_null(H2);
    const KilnQuantSpec specs[] = {spec(KILN_QF_INT4, true, KILN_GRAN_GROUP, 32),
                                   spec(KILN_QF_INT8, false, KILN_GRAN_CHANNEL, 0)};
    for (int t = 0; t < 2; t++)
        for (int mode = 0; mode < 3; mode++) {
            KilnGptqOpts o = KILN_GPTQ_DEFAULTS;
            o.act_order = mode > 0;
            o.static_groups = mode == 1;
            KilnQResult a, b;
            KilnDiag d = {0};
            memcpy(H2, H, sizeof(double) * (size_t)(K * K));
            assert_int_equal(kiln_quant_gptq(W, N, K, H, &specs[t], &o, &a, &d), 0);
            assert_int_equal(kiln_quant_gptq_consume(W, N, K, H2, &specs[t], &o, &b, &d), 0);
            assert_memory_equal(a.w, b.w, sizeof(float) * (size_t)(N * K));
            assert_memory_equal(a.codes, b.codes, sizeof(int16_t) * (size_t)(N * K));
            assert_memory_equal(a.scale, b.scale, sizeof(float) * (size_t)(N * a.ngroups));
            assert_true((a.zero == NULL) == (b.zero == NULL));
            if (a.zero)
                assert_memory_equal(a.zero, b.zero, sizeof(int32_t) * (size_t)(N * a.ngroups));
            assert_true((a.perm == NULL) == (b.perm == NULL));
            if (a.perm)
                assert_memory_equal(a.perm, b.perm, sizeof(int32_t) * (size_t)K);
            kiln_qresult_free(&a);
            kiln_qresult_free(&b);
        }
    free(X), free(W), free(H), free(H2);
}

static void test_gptq_identity_is_rtn(void **state)
{
    (void)state;
    Rng rng = {8};
    const int64_t K = 96, N = 12;
    float *W = gauss_matrix(&rng, N, K, 0.05);
    double *H = calloc((size_t)(K * K), sizeof *H);
    for (int64_t i = 0; i < K; i++)
        H[i * K + i] = 1;
    for (size_t t = 0; t < sizeof rtn_specs / sizeof rtn_specs[0]; t++) {
        KilnQResult g, r;
        KilnDiag d = {0};
        KilnGptqOpts o = KILN_GPTQ_DEFAULTS;
        assert_int_equal(kiln_quant_gptq(W, N, K, H, &rtn_specs[t], &o, &g, &d), 0);
        assert_int_equal(kiln_quant_rtn(W, N, K, &rtn_specs[t], &r, &d), 0);
        assert_memory_equal(g.codes, r.codes, (size_t)(N * K) * sizeof *g.codes);
        assert_memory_equal(g.w, r.w, (size_t)(N * K) * sizeof *g.w);
        assert_memory_equal(g.scale, r.scale, (size_t)(N * g.ngroups) * sizeof *g.scale);
        kiln_qresult_free(&g);
        kiln_qresult_free(&r);
    }
    free(W);
    free(H);
}

static void test_gptq_dead_columns_and_errors(void **state)
{
    (void)state;
    Rng rng = {9};
    const int64_t R = 128, K = 32, N = 8;
    float *X = gauss_matrix(&rng, R, K, 1), *W = gauss_matrix(&rng, N, K, 0.05);
    for (int64_t r = 0; r < R; r++)
        X[r * K + 3] = X[r * K + 20] = 0; /* two inputs that never fire */
    double *H = hessian_of(X, R, K);
    KilnQuantSpec s = spec(KILN_QF_INT4, false, KILN_GRAN_GROUP, 16);
    KilnGptqOpts o = KILN_GPTQ_DEFAULTS;
    o.act_order = true;
    KilnQResult g;
    KilnDiag d = {0};
    assert_int_equal(kiln_quant_gptq(W, N, K, H, &s, &o, &g, &d), 0);
    for (int64_t j = 0; j < K; j++)
        if (g.perm[j] == 3 || g.perm[j] == 20)
            for (int64_t n = 0; n < N; n++)
                assert_true(g.w[n * K + j] == 0.0f);
    kiln_qresult_free(&g);
    /* not positive definite (a negative eigenvalue, no damping) */
    for (int64_t i = 0; i < K; i++)
        H[i * K + i] = i == 5 ? -1.0 : H[i * K + i];
    o.damp = 0;
    assert_int_equal(kiln_quant_gptq(W, N, K, H, &s, &o, &g, &d), KILN_EINPUT);
    assert_non_null(strstr(d.msg, "not positive definite"));
    assert_null(g.w);
    o = KILN_GPTQ_DEFAULTS;
    o.block = 0;
    assert_int_equal(kiln_quant_gptq(W, N, K, H, &s, &o, &g, &d), KILN_EINPUT);
    assert_non_null(strstr(d.msg, "block"));
    o = KILN_GPTQ_DEFAULTS;
    KilnQuantSpec none = spec(KILN_QF_NONE, true, KILN_GRAN_CHANNEL, 0);
    assert_int_equal(kiln_quant_gptq(W, N, K, H, &none, &o, &g, &d), KILN_EINPUT);
    assert_int_equal(kiln_quant_gptq(W, N, K, NULL, &s, &o, &g, &d), KILN_EINPUT);
    W[7] = NAN;
    assert_int_equal(kiln_quant_gptq(W, N, K, H, &s, &o, &g, &d), KILN_EINPUT);
    assert_non_null(strstr(d.msg, "weight element [0,7] is nan"));
    free(X);
    free(W);
    free(H);
}

/* ------------------------------------------------------------------ AWQ */

/* ||X Wᵀ - (X/s) Q(W·diag(s))ᵀ||² over all rows, computed from scratch. */
static double awq_out_err(const float *X, int64_t R, int64_t K, const float *W, int64_t N,
                          const float *s, const KilnQuantSpec *sp)
{
    float *xs, *ws;
    scaled_copies(X, R, K, W, N, s, &xs, &ws);
    KilnQResult q;
    KilnDiag d = {0};
    assert_int_equal(kiln_quant_rtn(ws, N, K, sp, &q, &d), 0);
    double tot = pair_err(X, xs, NULL, R, K, W, q.w, N);
    kiln_qresult_free(&q);
    free(ws);
    free(xs);
    return tot;
}

static void test_awq_search(void **state)
{
    (void)state;
    Rng rng = {10};
    const int64_t R = 384, K = 128, N0 = 32, N1 = 16;
    float *X = gauss_matrix(&rng, R, K, 1.0);
    for (int64_t r = 0; r < R; r++) /* salient channels: a few inputs 20x louder */
        for (int64_t k = 5; k < K; k += 37)
            X[r * K + k] *= 20;
    float *W0 = gauss_matrix(&rng, N0, K, 0.05), *W1 = gauss_matrix(&rng, N1, K, 0.05);
    KilnActStats st;
    KilnDiag d = {0};
    assert_int_equal(kiln_actstats_init(&st, K, false, 0, &d), 0);
    kiln_actstats_add(&st, X, R);
    float xmean[128], s[128], alpha;
    kiln_actstats_mean_abs(&st, xmean);
    kiln_actstats_free(&st);
    const float *Ws[] = {W0, W1};
    const int64_t Ns[] = {N0, N1};
    const KilnQuantSpec specs[] = {spec(KILN_QF_INT4, true, KILN_GRAN_GROUP, 32),
                                   spec(KILN_QF_INT4, false, KILN_GRAN_CHANNEL, 0)};
    for (int t = 0; t < 2; t++) {
        KilnAwqOpts o = KILN_AWQ_DEFAULTS;
        double ratio;
        assert_int_equal(kiln_awq_search(Ws, Ns, 2, K, X, R, xmean, &specs[t], &o, s, &alpha, &ratio, &d), 0);
        float ones[128];
        for (int k = 0; k < K; k++)
            ones[k] = 1;
        double e_rtn = awq_out_err(X, R, K, W0, N0, ones, &specs[t]) + awq_out_err(X, R, K, W1, N1, ones, &specs[t]);
        double e_awq = awq_out_err(X, R, K, W0, N0, s, &specs[t]) + awq_out_err(X, R, K, W1, N1, s, &specs[t]);
        print_message("awq spec %d: alpha %.2f, loss ratio %.3f, full error ratio %.3f\n", t,
                      (double)alpha, ratio, e_awq / e_rtn);
        assert_true(alpha > 0);
        assert_true(ratio < 0.8);
        assert_true(e_awq < 0.8 * e_rtn);
        float mx = 0, mn = INFINITY; /* normalised: max·min = 1 */
        for (int k = 0; k < K; k++) {
            mx = s[k] > mx ? s[k] : mx;
            mn = s[k] < mn ? s[k] : mn;
        }
        assert_true(fabs(mx * mn - 1) < 1e-3);
    }
    KilnAwqOpts o = KILN_AWQ_DEFAULTS;
    o.grid = 0;
    double ratio;
    assert_int_equal(kiln_awq_search(Ws, Ns, 2, K, X, R, xmean, &specs[0], &o, s, &alpha, &ratio, &d),
                     KILN_EINPUT);
    free(X);
    free(W0);
    free(W1);
}

/* sum over rows and slices of ||X_g (w_g - Q(v_g))||²: the quantity clipping minimises */
static double slice_errors(const float *X, int64_t R, int64_t K, const float *W, const float *V,
                           int64_t N, const KilnQuantSpec *s)
{
    KilnQResult q;
    KilnDiag d = {0};
    assert_int_equal(kiln_quant_rtn(V, N, K, s, &q, &d), 0);
    int64_t len = kq_slice_len(s, K);
    double tot = 0;
    for (int64_t c0 = 0; c0 < K; c0 += len)
        for (int64_t n = 0; n < N; n++)
            for (int64_t r = 0; r < R; r++) {
                double v = 0;
                for (int64_t k = c0; k < K && k < c0 + len; k++)
                    v += (double)X[r * K + k] * (W[n * K + k] - q.w[n * K + k]);
                tot += v * v;
            }
    kiln_qresult_free(&q);
    return tot;
}

static void test_awq_clip(void **state)
{
    (void)state;
    Rng rng = {11};
    const int64_t R = 200, K = 96, N = 16;
    float *X = gauss_matrix(&rng, R, K, 1.0);
    float *W = malloc((size_t)(N * K) * sizeof *W), *V = malloc((size_t)(N * K) * sizeof *V);
    for (int64_t i = 0; i < N * K; i++) /* heavy tails: one big weight stretches a group */
        W[i] = (float)(0.02 * rstudent3(&rng));
    const KilnQuantSpec specs[] = {spec(KILN_QF_INT4, true, KILN_GRAN_GROUP, 32),
                                   spec(KILN_QF_INT4, false, KILN_GRAN_GROUP, 32),
                                   spec(KILN_QF_INT4, true, KILN_GRAN_GROUP, 40),
                                   spec(KILN_QF_INT4, true, KILN_GRAN_CHANNEL, 0),
                                   spec(KILN_QF_INT8, true, KILN_GRAN_TENSOR, 0)};
    for (int t = 0; t < 5; t++) {
        memcpy(V, W, (size_t)(N * K) * sizeof *V);
        KilnAwqOpts o = KILN_AWQ_DEFAULTS;
        o.max_rows = t == 3 ? 64 : R; /* channel: fewer rows than K takes the row path */
        KilnDiag d = {0};
        assert_int_equal(kiln_awq_clip(V, N, K, X, R, &specs[t], &o, &d), 0);
        int64_t rows = o.max_rows < R ? o.max_rows : R;
        float *Xs = malloc((size_t)(rows * K) * sizeof *Xs);
        for (int64_t i = 0; i < rows; i++)
            memcpy(Xs + i * K, X + (i * R / rows) * K, (size_t)K * sizeof *Xs);
        double before = slice_errors(Xs, rows, K, W, W, N, &specs[t]);
        double after = slice_errors(Xs, rows, K, W, V, N, &specs[t]);
        int changed = 0;
        for (int64_t i = 0; i < N * K; i++) {
            changed += V[i] != W[i];
            assert_true(fabsf(V[i]) <= fabsf(W[i])); /* clamping only shrinks */
        }
        print_message("awq clip spec %d: error after/before %.3f, %d weights clamped\n", t,
                      after / before, changed);
        assert_true(after <= before * (1 + 1e-6));
        if (t < 3)
            assert_true(changed > 0 && after < before);
        free(Xs);
    }
    free(X);
    free(W);
    free(V);
}

/* ------------------------------------------------------------------ SmoothQuant, outliers */

/* Output error of W8A8: X per token int8 sym (dynamic), W per channel int8 sym. */
static double w8a8_err(const float *X, int64_t R, int64_t K, const float *W, int64_t N,
                       const float *s)
{
    float *xs, *ws;
    scaled_copies(X, R, K, W, N, s, &xs, &ws);
    for (int64_t r = 0; r < R; r++) {
        float *row = xs + r * K, lo, hi;
        kiln_slice_range(row, K, 1, KILN_CAL_MINMAX, 0, &lo, &hi);
        KilnQParams p = kiln_qparams_from_range(KILN_QF_INT8, true, lo, hi);
        kiln_fake_quantize(KILN_QF_INT8, true, p, row, K, row);
    }
    KilnQResult q;
    KilnDiag d = {0};
    KilnQuantSpec sp = spec(KILN_QF_INT8, true, KILN_GRAN_CHANNEL, 0);
    assert_int_equal(kiln_quant_rtn(ws, N, K, &sp, &q, &d), 0);
    double tot = pair_err(X, xs, NULL, R, K, W, q.w, N);
    kiln_qresult_free(&q);
    free(xs);
    free(ws);
    return tot;
}

static void test_smoothquant(void **state)
{
    (void)state;
    Rng rng = {12};
    const int64_t R = 256, K = 64, N = 48;
    float *X = gauss_matrix(&rng, R, K, 1.0), *W = gauss_matrix(&rng, N, K, 0.05);
    for (int64_t r = 0; r < R; r++) /* planted activation outliers: three channels x50 */
        X[r * K + 3] *= 50, X[r * K + 17] *= 50, X[r * K + 40] *= 50;
    for (int64_t r = 0; r < R; r++)
        X[r * K + 9] = 0; /* a channel that never fires */
    KilnActStats st;
    KilnDiag d = {0};
    assert_int_equal(kiln_actstats_init(&st, K, false, 0, &d), 0);
    kiln_actstats_add(&st, X, R);
    float s[64], ones[64];
    const float *Ws[] = {W};
    const int64_t Ns[] = {N};
    kiln_smooth_factors(st.absmax, Ws, Ns, 1, K, 0.5f, s);
    for (int k = 0; k < K; k++)
        ones[k] = 1;
    assert_true(s[9] == 1.0f);
    float wmax = 0;
    for (int64_t n = 0; n < N; n++)
        wmax = fabsf(W[n * K + 3]) > wmax ? fabsf(W[n * K + 3]) : wmax;
    assert_true(fabs(s[3] - sqrt(st.absmax[3] / wmax)) < 1e-5 * s[3]);
    double e0 = w8a8_err(X, R, K, W, N, ones), e1 = w8a8_err(X, R, K, W, N, s);
    print_message("smoothquant W8A8 error: %.3g -> %.3g (%.1fx)\n", e0, e1, e0 / e1);
    assert_true(e1 * 5 < e0);
    /* outlier columns from the same statistics (the picker calibration uses) */
    int64_t idx[64];
    assert_int_equal(kiln_outlier_pick_absmax(st.absmax, K, 20.0f, 1.0f, idx), 3);
    assert_int_equal(idx[0], 3);
    assert_int_equal(idx[1], 17);
    assert_int_equal(idx[2], 40);
    assert_int_equal(kiln_outlier_pick_absmax(st.absmax, K, 1e9f, 1.0f, idx), 0);
    kiln_actstats_free(&st);
    free(X);
    free(W);
}

/* ------------------------------------------------------------------ MSE calibration */

static double range_err(const KilnQuantSpec *q, const float *x, int64_t n, float lo, float hi)
{
    bool sym = kq_sym(q);
    KilnQParams p = kiln_qparams_from_range(q->fmt, sym, lo, hi);
    double e = 0;
    for (int64_t i = 0; i < n; i++) {
        double v = x[i] - kiln_dequantize_value(q->fmt, sym, p, kiln_quantize_value(q->fmt, sym, p, x[i]));
        e += v * v;
    }
    return e;
}

static void test_mse_calibration(void **state)
{
    (void)state;
    Rng rng = {13};
    enum { n = 100000 };
    float *lap = malloc(n * sizeof *lap), *stu = malloc(n * sizeof *stu), *uni = malloc(n * sizeof *uni);
    for (int i = 0; i < n; i++) {
        lap[i] = (float)rlaplace(&rng);
        stu[i] = (float)rstudent3(&rng);
        uni[i] = (float)(2 * runif(&rng) - 1);
    }
    const float *data[] = {lap, stu};
    struct {
        KilnQFormat f;
        bool sym;
        double gain; /* mse error at most this fraction of minmax's */
    } cases[] = {{KILN_QF_INT8, true, 0.95}, {KILN_QF_INT4, true, 0.5}, {KILN_QF_INT8, false, 0.95},
                 {KILN_QF_FP8_E4M3, true, 1.0}};
    for (int c = 0; c < 4; c++)
        for (int t = 0; t < 2; t++) {
            KilnQuantSpec mse = spec(cases[c].f, cases[c].sym, KILN_GRAN_TENSOR, 0);
            KilnQuantSpec mm = mse;
            mse.calib = KILN_CAL_MSE;
            float lo, hi, lo0, hi0;
            kiln_calib_range(&mse, data[t], n, 1, &lo, &hi);
            kiln_calib_range(&mm, data[t], n, 1, &lo0, &hi0);
            double e = range_err(&mse, data[t], n, lo, hi), e0 = range_err(&mse, data[t], n, lo0, hi0);
            print_message("mse calib %s %s on %s: clip %.3f, error ratio %.3f\n",
                          kiln_qformat_name(cases[c].f), cases[c].sym ? "sym" : "asym",
                          t ? "student-t" : "laplace", (double)(hi / hi0), e / e0);
            assert_true(e <= cases[c].gain * e0);
            assert_true(lo <= 0 && hi >= 0 && hi <= hi0 && lo >= lo0);
        }
    /* uniform data: nothing to clip, the range stays (nearly) min/max */
    KilnQuantSpec q = spec(KILN_QF_INT8, true, KILN_GRAN_TENSOR, 0);
    q.calib = KILN_CAL_MSE;
    float lo, hi, lo0, hi0;
    kiln_calib_range(&q, uni, n, 1, &lo, &hi);
    kiln_slice_range(uni, n, 1, KILN_CAL_MINMAX, 0, &lo0, &hi0);
    assert_true(hi >= 0.97f * hi0 && lo <= 0.97f * lo0);
    /* strided, shifted (asymmetric) data and a slice of zeros */
    q = spec(KILN_QF_INT8, false, KILN_GRAN_TENSOR, 0);
    q.calib = KILN_CAL_MSE;
    for (int i = 0; i < n; i++)
        lap[i] += 20.0f; /* all positive: lo stays 0 */
    kiln_calib_range(&q, lap, n / 2, 2, &lo, &hi);
    assert_true(lo == 0.0f && hi > 0.0f);
    float zeros[5] = {0};
    kiln_calib_range(&q, zeros, 5, 1, &lo, &hi);
    assert_true(lo == 0 && hi == 0);
    /* minmax and percentile specs are kiln_slice_range */
    q.calib = KILN_CAL_PERCENTILE;
    q.pct = 99.0f;
    kiln_calib_range(&q, stu, n, 1, &lo, &hi);
    kiln_slice_range(stu, n, 1, KILN_CAL_PERCENTILE, 99.0f, &lo0, &hi0);
    assert_true(lo == lo0 && hi == hi0);
    free(lap);
    free(stu);
    free(uni);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rtn_matches_quantize_matrix),
        cmocka_unit_test(test_fake_quantize_exact),
        cmocka_unit_test(test_kernels_match_reference),
        cmocka_unit_test(test_actstats),
        cmocka_unit_test(test_gptq_matches_plain),
        cmocka_unit_test(test_gptq_beats_rtn),
        cmocka_unit_test(test_gptq_act_order),
        cmocka_unit_test(test_gptq_consume_same_bits),
        cmocka_unit_test(test_gptq_identity_is_rtn),
        cmocka_unit_test(test_gptq_dead_columns_and_errors),
        cmocka_unit_test(test_awq_search),
        cmocka_unit_test(test_awq_clip),
        cmocka_unit_test(test_smoothquant),
        cmocka_unit_test(test_mse_calibration),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
