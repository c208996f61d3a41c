/* model/nets/vexpf.c — expf over arrays, 8 lanes at a time with AVX-512, giving the bits
 * glibc's expf gives on the same machine: for SiLU (kiln_silu_mul) and softmax, which
 * call expf tens of thousands of times per decoded token.
 *
 * It is glibc's own algorithm (sysdeps/ieee754/flt-32/e_expf.c, from Arm's
 * optimized-routines, MIT): exp(x) = 2^(k/32) * 2^(r/32) with k = round(x * 32/ln2), a
 * 32-entry table of 2^(i/32) and a cubic in r, all in double, with the fused
 * multiply-adds of glibc's x86-64 "fma" variant (__expf_fma, what glibc runs on every
 * CPU with FMA and AVX2, so on every AVX-512 one), operation for operation; the same
 * table and constants. tests/test_vexpf.c compares it with libm's expf on millions of
 * inputs (and once on every float below 88 in magnitude). Lanes at or above 88 in
 * magnitude, infinities and NaNs go to libm's expf itself. Without AVX-512, libm. */
#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "model/model.h"

static const uint64_t TAB[32] = {
    0x3ff0000000000000, 0x3fefd9b0d3158574, 0x3fefb5586cf9890f, 0x3fef9301d0125b51,
    0x3fef72b83c7d517b, 0x3fef54873168b9aa, 0x3fef387a6e756238, 0x3fef1e9df51fdee1,
    0x3fef06fe0a31b715, 0x3feef1a7373aa9cb, 0x3feedea64c123422, 0x3feece086061892d,
    0x3feebfdad5362a27, 0x3feeb42b569d4f82, 0x3feeab07dd485429, 0x3feea47eb03a5585,
    0x3feea09e667f3bcd, 0x3fee9f75e8ec5f74, 0x3feea11473eb0187, 0x3feea589994cce13,
    0x3feeace5422aa0db, 0x3feeb737b0cdc5e5, 0x3feec49182a3f090, 0x3feed503b23e255d,
    0x3feee89f995ad3ad, 0x3feeff76f2fb5e47, 0x3fef199bdd85529c, 0x3fef3720dcef9069,
    0x3fef5818dcfba487, 0x3fef7c97337b9b5f, 0x3fefa4afa2a490da, 0x3fefd0765b6e4540,
};
#define INVLN2N 0x40471547652b82feull /* 32 / ln 2 */
#define C0 0x3ebc6af84b912394ull
#define C1 0x3f2ebfce50fac4f3ull
#define C2 0x3f962e42ff0c52d6ull
#define SHIFT 0x4338000000000000ull /* 0x1.8p52 */

#define AVX512 __attribute__((target("avx512f,avx512dq")))

AVX512 static inline __m512d cd(uint64_t bits) { return _mm512_castsi512_pd(_mm512_set1_epi64((long long)bits)); }

/* Eight floats, none special (|x| < 88, finite). */
AVX512 static __m256 exp8(__m256 x)
{
    __m512d xd = _mm512_cvtps_pd(x);
    __m512d kd = _mm512_fmadd_pd(cd(INVLN2N), xd, cd(SHIFT));
    __m512i ki = _mm512_castpd_si512(kd);
    kd = _mm512_sub_pd(kd, cd(SHIFT));
    __m512d r = _mm512_fmsub_pd(cd(INVLN2N), xd, kd);
    __m512i t = _mm512_i64gather_epi64(_mm512_and_si512(ki, _mm512_set1_epi64(31)), TAB, 8);
    t = _mm512_add_epi64(t, _mm512_slli_epi64(ki, 47));
    __m512d z = _mm512_fmadd_pd(cd(C0), r, cd(C1));
    __m512d r2 = _mm512_mul_pd(r, r);
    __m512d y = _mm512_fmadd_pd(r, cd(C2), _mm512_set1_pd(1.0));
    y = _mm512_fmadd_pd(z, r2, y);
    y = _mm512_mul_pd(y, _mm512_castsi512_pd(t));
    return _mm512_cvtpd_ps(y);
}

/* Lanes whose top 12 bits (sign off) reach 88's, as glibc's special-case test. */
AVX512 static inline int special8(__m256 x)
{
    __m256i top = _mm256_and_si256(_mm256_srli_epi32(_mm256_castps_si256(x), 20),
                                   _mm256_set1_epi32(0x7ff));
    return _mm256_movemask_ps(_mm256_castsi256_ps(
        _mm256_cmpgt_epi32(top, _mm256_set1_epi32(0x42a))));
}

AVX512 static __m256 expf8(__m256 x)
{
    if (!special8(x))
        return exp8(x);
    float v[8];
    _mm256_storeu_ps(v, x);
    for (int i = 0; i < 8; i++)
        v[i] = expf(v[i]);
    return _mm256_loadu_ps(v);
}

static int have_avx512(void)
{
    static int have = -1;
    if (have < 0) {
        __builtin_cpu_init();
        have = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq");
    }
    return have;
}

AVX512 static void exp_avx512(float *x, int64_t n)
{
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(x + i, expf8(_mm256_loadu_ps(x + i)));
    for (; i < n; i++)
        x[i] = expf(x[i]);
}

void kiln_expf_n(float *x, int64_t n)
{
    if (have_avx512()) {
        exp_avx512(x, n);
        return;
    }
    for (int64_t i = 0; i < n; i++)
        x[i] = expf(x[i]);
}

/* g[i] = silu(g[i]) * u[i], silu(v) = v / (1 + expf(-v)): kiln_silu1's float operations. */
AVX512 static void silu_mul_avx512(float *g, const float *u, int64_t n)
{
    int64_t i = 0;
    const __m256 one = _mm256_set1_ps(1.0f), sign = _mm256_set1_ps(-0.0f);
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_loadu_ps(g + i);
        __m256 e = expf8(_mm256_xor_ps(v, sign));
        __m256 s = _mm256_div_ps(v, _mm256_add_ps(one, e));
        _mm256_storeu_ps(g + i, _mm256_mul_ps(s, _mm256_loadu_ps(u + i)));
    }
    for (; i < n; i++)
        g[i] = kiln_silu1(g[i]) * u[i];
}

void kiln_silu_mul(float *g, const float *u, int64_t n)
{
    if (have_avx512()) {
        silu_mul_avx512(g, u, n);
        return;
    }
    for (int64_t i = 0; i < n; i++)
        g[i] = kiln_silu1(g[i]) * u[i];
}
