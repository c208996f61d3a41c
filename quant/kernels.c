/* quant/kernels.c — the loops that take the time in quant/: GPTQ's dot products and row
 * update, ||X Eᵀ||² and the quadratic forms of AWQ's searches, the XᵀX panels of the
 * activation statistics. Each has a scalar reference and an AVX2 path doing the same
 * multiplies and adds in the same order (never fused), so the two agree bit for bit;
 * tests/test_quant.c checks that. */
#include <string.h>

#include "internal.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define KQ_AVX2 1
#define KQ_TARGET __attribute__((target("avx2")))
#endif

bool kq_have_avx2(void)
{
#ifdef KQ_AVX2
    return __builtin_cpu_supports("avx2");
#else
    return false;
#endif
}

/* ------------------------------------------------------------------ dot product */

enum { F64_LANES = 16 };

double kq_dot_f64_ref(const double *a, const double *b, int64_t n)
{
    double acc[F64_LANES] = {0};
    for (int64_t i = 0; i < n; i++)
        acc[i % F64_LANES] += a[i] * b[i];
    double s = 0;
    for (int k = 0; k < F64_LANES; k++)
        s += acc[k];
    return s;
}

#ifdef KQ_AVX2
KQ_TARGET static double dot_f64_avx2(const double *a, const double *b, int64_t n)
{
    __m256d v0 = _mm256_setzero_pd(), v1 = v0, v2 = v0, v3 = v0;
    int64_t i = 0;
    for (; i + F64_LANES <= n; i += F64_LANES) {
        v0 = _mm256_add_pd(v0, _mm256_mul_pd(_mm256_loadu_pd(a + i), _mm256_loadu_pd(b + i)));
        v1 = _mm256_add_pd(v1, _mm256_mul_pd(_mm256_loadu_pd(a + i + 4), _mm256_loadu_pd(b + i + 4)));
        v2 = _mm256_add_pd(v2, _mm256_mul_pd(_mm256_loadu_pd(a + i + 8), _mm256_loadu_pd(b + i + 8)));
        v3 = _mm256_add_pd(v3, _mm256_mul_pd(_mm256_loadu_pd(a + i + 12), _mm256_loadu_pd(b + i + 12)));
    }
    double acc[F64_LANES];
    _mm256_storeu_pd(acc, v0);
    _mm256_storeu_pd(acc + 4, v1);
    _mm256_storeu_pd(acc + 8, v2);
    _mm256_storeu_pd(acc + 12, v3);
    for (; i < n; i++)
        acc[i % F64_LANES] += a[i] * b[i];
    double s = 0;
    for (int k = 0; k < F64_LANES; k++)
        s += acc[k];
    return s;
}
#endif

double kq_dot_f64(const double *a, const double *b, int64_t n)
{
#ifdef KQ_AVX2
    if (kq_have_avx2())
        return dot_f64_avx2(a, b, n);
#endif
    return kq_dot_f64_ref(a, b, n);
}

/* ------------------------------------------------------------------ GPTQ row update */

void kq_sub_rows_ref(float *w, const float *e, const float *U, int64_t ldu, int64_t nb,
                     int64_t len)
{
    for (int64_t j = 0; j < len; j++) {
        float a = w[j];
        for (int64_t b = 0; b < nb; b++)
            a -= e[b] * U[b * ldu + j];
        w[j] = a;
    }
}

#ifdef KQ_AVX2
/* 16 columns stay in registers while the nb rows of U stream past. */
KQ_TARGET static void sub_rows_avx2(float *w, const float *e, const float *U, int64_t ldu,
                                    int64_t nb, int64_t len)
{
    int64_t j = 0;
    for (; j + 16 <= len; j += 16) {
        __m256 a0 = _mm256_loadu_ps(w + j), a1 = _mm256_loadu_ps(w + j + 8);
        const float *u = U + j;
        for (int64_t b = 0; b < nb; b++, u += ldu) {
            __m256 eb = _mm256_set1_ps(e[b]);
            a0 = _mm256_sub_ps(a0, _mm256_mul_ps(eb, _mm256_loadu_ps(u)));
            a1 = _mm256_sub_ps(a1, _mm256_mul_ps(eb, _mm256_loadu_ps(u + 8)));
        }
        _mm256_storeu_ps(w + j, a0);
        _mm256_storeu_ps(w + j + 8, a1);
    }
    kq_sub_rows_ref(w + j, e, U + j, ldu, nb, len - j);
}
#endif

void kq_sub_rows(float *w, const float *e, const float *U, int64_t ldu, int64_t nb, int64_t len)
{
#ifdef KQ_AVX2
    if (kq_have_avx2()) {
        sub_rows_avx2(w, e, U, ldu, nb, len);
        return;
    }
#endif
    kq_sub_rows_ref(w, e, U, ldu, nb, len);
}

/* ------------------------------------------------------------------ ||X Eᵀ||² */

/* One dot in the kernel's order: 8 lanes (i % 8), then lanes 0..7. */
static float dot8_ref(const float *a, const float *b, int64_t n)
{
    float acc[8] = {0};
    for (int64_t i = 0; i < n; i++)
        acc[i & 7] += a[i] * b[i];
    float s = 0;
    for (int k = 0; k < 8; k++)
        s += acc[k];
    return s;
}

double kq_sq_norm_xet_ref(const float *X, int64_t R, int64_t ldx, const float *E, int64_t N,
                          int64_t lde, int64_t K)
{
    double total = 0;
    for (int64_t r = 0; r < R; r++) {
        double row = 0;
        for (int64_t n = 0; n < N; n++) {
            double v = dot8_ref(X + r * ldx, E + n * lde, K);
            row += v * v;
        }
        total += row;
    }
    return total;
}

#ifdef KQ_AVX2
/* The lanes of acc plus the scalar tail from k0, reduced as dot8_ref does. */
KQ_TARGET static float finish8(__m256 acc, const float *a, const float *b, int64_t k0, int64_t n)
{
    float l[8];
    _mm256_storeu_ps(l, acc);
    for (int64_t i = k0; i < n; i++)
        l[i & 7] += a[i] * b[i];
    float s = 0;
    for (int k = 0; k < 8; k++)
        s += l[k];
    return s;
}

/* The 4 x 2 tile kernel shared by ||X Eᵀ||² and the quadratic forms: a[i][j] = the
 * 8-lane partial dots of rows x[i] and e[j] over the first K8 columns. */
typedef struct Tile42 {
    __m256 a[4][2];
} Tile42;

KQ_TARGET static inline __attribute__((always_inline)) Tile42 tile42(const float *x0p, const float *x1p, const float *x2p,
                               const float *x3p, const float *e0, const float *e1, int64_t K8)
{
    /* named accumulators: GCC keeps an array of vectors in memory */
    __m256 a00 = _mm256_setzero_ps(), a01 = a00, a10 = a00, a11 = a00;
    __m256 a20 = a00, a21 = a00, a30 = a00, a31 = a00;
    for (int64_t k = 0; k < K8; k += 8) {
        __m256 v0 = _mm256_loadu_ps(e0 + k), v1 = _mm256_loadu_ps(e1 + k);
        __m256 x0 = _mm256_loadu_ps(x0p + k), x1 = _mm256_loadu_ps(x1p + k);
        __m256 x2 = _mm256_loadu_ps(x2p + k), x3 = _mm256_loadu_ps(x3p + k);
        a00 = _mm256_add_ps(a00, _mm256_mul_ps(x0, v0));
        a01 = _mm256_add_ps(a01, _mm256_mul_ps(x0, v1));
        a10 = _mm256_add_ps(a10, _mm256_mul_ps(x1, v0));
        a11 = _mm256_add_ps(a11, _mm256_mul_ps(x1, v1));
        a20 = _mm256_add_ps(a20, _mm256_mul_ps(x2, v0));
        a21 = _mm256_add_ps(a21, _mm256_mul_ps(x2, v1));
        a30 = _mm256_add_ps(a30, _mm256_mul_ps(x3, v0));
        a31 = _mm256_add_ps(a31, _mm256_mul_ps(x3, v1));
    }
    return (Tile42){{{a00, a01}, {a10, a11}, {a20, a21}, {a30, a31}}};
}

/* Rows r0..r1 of X against all of E, E in blocks of NB rows that stay in L2 while the
 * rows of X pass 4 at a time; row[r - r0] += (X_r · E_n)² in n order. */
enum { XET_RB = 64, XET_NB = 32 };

KQ_TARGET static void sq_norm_rows_avx2(const float *X, int64_t r0, int64_t r1, int64_t ldx,
                                        const float *E, int64_t N, int64_t lde, int64_t K,
                                        double *row)
{
    int64_t K8 = K & ~(int64_t)7;
    for (int64_t n0 = 0; n0 < N; n0 += XET_NB) {
        int64_t n1 = N - n0 < XET_NB ? N : n0 + XET_NB;
        for (int64_t r = r0; r < r1; r += 4) {
            int rn = r1 - r < 4 ? (int)(r1 - r) : 4;
            const float *x[4]; /* a short tile repeats row r, unused */
            for (int i = 0; i < 4; i++)
                x[i] = X + (r + (i < rn ? i : 0)) * ldx;
            for (int64_t n = n0; n < n1; n += 2) {
                int nn = n1 - n < 2 ? 1 : 2;
                const float *e0 = E + n * lde, *e1 = E + (n + nn - 1) * lde;
                Tile42 t = tile42(x[0], x[1], x[2], x[3], e0, e1, K8);
                for (int i = 0; i < rn; i++)
                    for (int j = 0; j < nn; j++) {
                        double v = finish8(t.a[i][j], x[i], j ? e1 : e0, K8, K);
                        row[r - r0 + i] += v * v;
                    }
            }
        }
    }
}

KQ_TARGET static double sq_norm_xet_avx2(const float *X, int64_t R, int64_t ldx, const float *E,
                                         int64_t N, int64_t lde, int64_t K)
{
    double total = 0, row[XET_RB];
    for (int64_t r0 = 0; r0 < R; r0 += XET_RB) {
        int64_t r1 = R - r0 < XET_RB ? R : r0 + XET_RB;
        memset(row, 0, sizeof row);
        sq_norm_rows_avx2(X, r0, r1, ldx, E, N, lde, K, row);
        for (int64_t r = r0; r < r1; r++)
            total += row[r - r0];
    }
    return total;
}

/* out[m] = sum over a of E_m[a] · (G_a · E_m), G_a row a of the symmetric G[len*len]:
 * 4 rows of E against 2 rows of G per tile, G staying in L2. */
KQ_TARGET static void quad_forms_avx2(const float *E, int64_t M, int64_t lde, const float *G,
                                      int64_t len, double *out)
{
    int64_t K8 = len & ~(int64_t)7;
    for (int64_t m = 0; m < M; m += 4) {
        int mn = M - m < 4 ? (int)(M - m) : 4;
        const float *e[4];
        for (int i = 0; i < 4; i++)
            e[i] = E + (m + (i < mn ? i : 0)) * lde;
        double acc[4] = {0, 0, 0, 0};
        for (int64_t a = 0; a < len; a += 2) {
            int na = len - a < 2 ? 1 : 2;
            const float *g0 = G + a * len, *g1 = G + (a + na - 1) * len;
            Tile42 t = tile42(e[0], e[1], e[2], e[3], g0, g1, K8);
            for (int i = 0; i < mn; i++)
                for (int j = 0; j < na; j++)
                    acc[i] += (double)e[i][a + j] * finish8(t.a[i][j], e[i], j ? g1 : g0, K8, len);
        }
        for (int i = 0; i < mn; i++)
            out[m + i] = acc[i];
    }
}
#endif

double kq_sq_norm_xet(const float *X, int64_t R, int64_t ldx, const float *E, int64_t N,
                      int64_t lde, int64_t K)
{
#ifdef KQ_AVX2
    if (kq_have_avx2())
        return sq_norm_xet_avx2(X, R, ldx, E, N, lde, K);
#endif
    return kq_sq_norm_xet_ref(X, R, ldx, E, N, lde, K);
}

void kq_quad_forms_ref(const float *E, int64_t M, int64_t lde, const float *G, int64_t len,
                       double *out)
{
    for (int64_t m = 0; m < M; m++) {
        double acc = 0;
        for (int64_t a = 0; a < len; a++)
            acc += (double)E[m * lde + a] * dot8_ref(E + m * lde, G + a * len, len);
        out[m] = acc;
    }
}

void kq_quad_forms(const float *E, int64_t M, int64_t lde, const float *G, int64_t len, double *out)
{
#ifdef KQ_AVX2
    if (kq_have_avx2()) {
        quad_forms_avx2(E, M, lde, G, len, out);
        return;
    }
#endif
    kq_quad_forms_ref(E, M, lde, G, len, out);
}

/* ------------------------------------------------------------------ XᵀX panels */

void kq_syrk_panels_ref(double *C, const double *P, int64_t R, int64_t kp)
{
    int64_t np = kp / 8;
    for (int64_t ib = 0; ib < np; ib++)
        for (int64_t jb = ib; jb < np; jb++) {
            const double *pi = P + ib * R * 8, *pj = P + jb * R * 8;
            for (int i = 0; i < 8; i++)
                for (int j = 0; j < 8; j++) {
                    double a = 0;
                    for (int64_t r = 0; r < R; r++)
                        a += pi[r * 8 + i] * pj[r * 8 + j];
                    C[(ib * 8 + i) * kp + jb * 8 + j] += a;
                }
        }
}

#ifdef KQ_AVX2
/* A 4 x 8 tile (rows i0..i0+3 of panel pi, all 8 columns of panel pj): 8 accumulators,
 * 4 broadcasts and 2 loads per row r. */
KQ_TARGET static void syrk_tile_avx2(double *C, int64_t kp, const double *pi, int i0,
                                     const double *pj, int64_t R)
{
    /* named accumulators: GCC keeps an array of vectors in memory */
    __m256d c00 = _mm256_setzero_pd(), c01 = c00, c10 = c00, c11 = c00;
    __m256d c20 = c00, c21 = c00, c30 = c00, c31 = c00;
    const double *xi = pi + i0;
    for (int64_t r = 0; r < R; r++, xi += 8, pj += 8) {
        __m256d b0 = _mm256_loadu_pd(pj), b1 = _mm256_loadu_pd(pj + 4);
        __m256d x0 = _mm256_broadcast_sd(xi), x1 = _mm256_broadcast_sd(xi + 1);
        __m256d x2 = _mm256_broadcast_sd(xi + 2), x3 = _mm256_broadcast_sd(xi + 3);
        c00 = _mm256_add_pd(c00, _mm256_mul_pd(x0, b0));
        c01 = _mm256_add_pd(c01, _mm256_mul_pd(x0, b1));
        c10 = _mm256_add_pd(c10, _mm256_mul_pd(x1, b0));
        c11 = _mm256_add_pd(c11, _mm256_mul_pd(x1, b1));
        c20 = _mm256_add_pd(c20, _mm256_mul_pd(x2, b0));
        c21 = _mm256_add_pd(c21, _mm256_mul_pd(x2, b1));
        c30 = _mm256_add_pd(c30, _mm256_mul_pd(x3, b0));
        c31 = _mm256_add_pd(c31, _mm256_mul_pd(x3, b1));
    }
    const __m256d acc[8] = {c00, c01, c10, c11, c20, c21, c30, c31};
    for (int i = 0; i < 4; i++) {
        double *c = C + (int64_t)(i0 + i) * kp;
        _mm256_storeu_pd(c, _mm256_add_pd(_mm256_loadu_pd(c), acc[2 * i]));
        _mm256_storeu_pd(c + 4, _mm256_add_pd(_mm256_loadu_pd(c + 4), acc[2 * i + 1]));
    }
}
#endif

void kq_syrk_panels(double *C, const double *P, int64_t R, int64_t kp)
{
#ifdef KQ_AVX2
    if (kq_have_avx2()) {
        int64_t np = kp / 8;
        for (int64_t ib = 0; ib < np; ib++)
            for (int64_t jb = ib; jb < np; jb++)
                for (int i0 = 0; i0 < 8; i0 += 4)
                    syrk_tile_avx2(C + ib * 8 * kp + jb * 8, kp, P + ib * R * 8, i0,
                                   P + jb * R * 8, R);
        return;
    }
#endif
    kq_syrk_panels_ref(C, P, R, kp);
}
