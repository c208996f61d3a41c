/* ir/numerics.c — kiln's scalar numerics, defined once: rounding, f16/bf16, FP8, integer
 * quantization, INT4 packing and scale/zero choice. docs/numerics.md is the user's view. */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "numerics.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define KILN_HAVE_AVX2_PATH 1
#endif

static uint32_t f32_bits(float x)
{
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return u;
}

static float bits_f32(uint32_t u)
{
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}

/* ------------------------------------------------------------------ rounding */

/* Explicit so that a caller who changed fesetround() still gets the same codes. */
float kiln_round_even(float x)
{
    if (!(fabsf(x) < 8388608.0f)) /* NaN, Inf and |x| >= 2^23 are already integers */
        return x;
    float t = (float)(int32_t)x; /* truncation toward zero, exact for |x| < 2^23 */
    float frac = x - t;          /* exact: both share the exponent range */
    float step = x < 0 ? -1.0f : 1.0f;
    float afrac = fabsf(frac);
    if (afrac > 0.5f || (afrac == 0.5f && ((int32_t)t & 1)))
        t += step;
    return copysignf(t, x); /* keeps -0 for -0.0 and for -0.4 */
}

/* ------------------------------------------------------------------ f16 / bf16 */

uint16_t kiln_f32_to_f16(float x)
{
    uint32_t u = f32_bits(x);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000);
    u &= 0x7fffffff;
    if (u > 0x7f800000) /* NaN: keep the top payload bits, force quiet */
        return (uint16_t)(sign | 0x7e00 | ((u >> 13) & 0x3ff));
    if (u >= 0x477ff000) /* >= 65520 rounds past 65504: Inf */
        return (uint16_t)(sign | 0x7c00);
    if (u < 0x38800000) { /* below 2^-14: f16 subnormal, code m means m * 2^-24 */
        int e = (int)(u >> 23);
        int shift = 126 - e;
        if (shift > 24)
            return sign;
        uint32_t mant = (u & 0x7fffff) | 0x800000;
        uint32_t q = mant >> shift;
        uint32_t rem = mant & ((1u << shift) - 1);
        uint32_t half = 1u << (shift - 1);
        if (rem > half || (rem == half && (q & 1)))
            q++;
        return (uint16_t)(sign | q); /* q == 0x400 is the smallest normal: right encoding */
    }
    uint32_t h = (u >> 13) - (112u << 10); /* rebias 127 -> 15 */
    uint32_t rem = u & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (h & 1)))
        h++; /* a carry into the exponent is the correct rounding */
    return (uint16_t)(sign | h);
}

float kiln_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t e = (h >> 10) & 0x1f, m = h & 0x3ff;
    if (e == 0x1f)
        return bits_f32(sign | 0x7f800000 | (m ? 0x400000 | (m << 13) : 0));
    if (e == 0) {
        float v = (float)m * 0x1p-24f;
        return sign ? -v : v;
    }
    return bits_f32(sign | ((e + 112) << 23) | (m << 13));
}

uint16_t kiln_f32_to_bf16(float x)
{
    uint32_t u = f32_bits(x);
    if ((u & 0x7fffffff) > 0x7f800000)
        return (uint16_t)((u >> 16) | 0x40);
    u += 0x7fff + ((u >> 16) & 1); /* RNE; overflow carries into Inf */
    return (uint16_t)(u >> 16);
}

float kiln_bf16_to_f32(uint16_t b) { return bits_f32((uint32_t)b << 16); }

float kiln_round_to(KilnDType dt, float x)
{
    switch (dt) {
    case KILN_F16: return kiln_f16_to_f32(kiln_f32_to_f16(x));
    case KILN_BF16: return kiln_bf16_to_f32(kiln_f32_to_bf16(x));
    default: return x;
    }
}

/* ------------------------------------------------------------------ FP8 */

/* Saturating RNE encode of a minifloat with `mbits` mantissa bits and bias `bias`;
 * `maxcode` is the largest finite magnitude code. The caller handles NaN. */
static uint8_t fp8_encode(float x, int mbits, int bias, float maxval, uint8_t maxcode)
{
    uint8_t sign = (f32_bits(x) >> 24) & 0x80;
    float a = fabsf(x);
    if (a > maxval) /* Inf too: SATFINITE */
        return sign | maxcode;
    int e; /* a = f * 2^e, f in [0.5, 1) */
    frexpf(a, &e);
    int E = e - 1; /* a in [2^E, 2^(E+1)) */
    int emin = 1 - bias;
    int qexp = (a == 0.0f || E < emin) ? emin - mbits : E - mbits; /* exponent of one ulp */
    float r = kiln_round_even(ldexpf(a, -qexp)); /* exact scaling, then integer rounding */
    uint32_t q = (uint32_t)r;
    uint32_t code;
    if (qexp == emin - mbits)
        code = q; /* subnormal; q == 2^mbits lands on the smallest normal's encoding */
    else
        code = ((uint32_t)(E + bias - 1) << mbits) + q; /* q includes the implicit bit */
    if (code > maxcode) /* cannot happen for a <= maxval; kept as a guard */
        code = maxcode;
    return (uint8_t)(sign | code);
}

uint8_t kiln_fp8_e4m3_encode(float x)
{
    if (isnan(x))
        return 0x7f;
    return fp8_encode(x, 3, 7, KILN_E4M3_MAX, 0x7e);
}

uint8_t kiln_fp8_e5m2_encode(float x)
{
    if (isnan(x))
        return 0x7f;
    return fp8_encode(x, 2, 15, KILN_E5M2_MAX, 0x7b);
}

float kiln_fp8_e4m3_decode(uint8_t b)
{
    int e = (b >> 3) & 0xf, m = b & 7;
    if ((b & 0x7f) == 0x7f)
        return NAN;
    float v = e ? ldexpf((float)(8 + m), e - 10) : ldexpf((float)m, -9);
    return (b & 0x80) ? -v : v;
}

float kiln_fp8_e5m2_decode(uint8_t b)
{
    int e = (b >> 2) & 0x1f, m = b & 3;
    float v;
    if (e == 31)
        v = m ? NAN : INFINITY;
    else
        v = e ? ldexpf((float)(4 + m), e - 17) : ldexpf((float)m, -16);
    return (b & 0x80) ? -v : v;
}

/* ------------------------------------------------------------------ formats */

int kiln_qformat_bits(KilnQFormat f)
{
    switch (f) {
    case KILN_QF_INT4: return 4;
    case KILN_QF_INT8:
    case KILN_QF_FP8_E4M3:
    case KILN_QF_FP8_E5M2: return 8;
    default: return 0;
    }
}


float kiln_qformat_qmax(KilnQFormat f, bool symmetric)
{
    switch (f) {
    case KILN_QF_INT8: return symmetric ? 127.0f : 255.0f;
    case KILN_QF_INT4: return symmetric ? 7.0f : 15.0f;
    case KILN_QF_FP8_E4M3: return KILN_E4M3_MAX;
    case KILN_QF_FP8_E5M2: return KILN_E5M2_MAX;
    default: return 0.0f;
    }
}

int32_t kiln_qformat_qmin(KilnQFormat f, bool symmetric)
{
    if (kiln_qformat_is_int(f))
        return symmetric ? -(int32_t)kiln_qformat_qmax(f, true) : 0;
    if (kiln_qformat_is_fp8(f))
        return -(int32_t)kiln_qformat_qmax(f, true);
    return 0;
}

/* ------------------------------------------------------------------ fast paths */

/* Loading a model quantizes every weight: these loops do the same arithmetic as
 * kiln_quantize_value per element (x / scale in the caller's rounding mode, then
 * mode-independent round-half-even, clamp, FP8 RNE by integer bit arithmetic) eight
 * lanes at a time; tests/test_numerics.c checks them bit for bit against it. */

#ifdef KILN_HAVE_AVX2_PATH
static bool cpu_has_avx2(void) { return __builtin_cpu_supports("avx2"); }
#else
static bool cpu_has_avx2(void) { return false; }
#endif

/* Finite min/max folded into *mn, *mx (which start at 0, so replacing a non-finite
 * value by +0 cannot change either: 0 < mn and 0 > mx are both false). */
static void minmax_scalar(const float *x, int64_t n, float *mn, float *mx)
{
    float lo = *mn, hi = *mx;
    for (int64_t i = 0; i < n; i++) {
        float v = fabsf(x[i]) < INFINITY ? x[i] : 0.0f;
        lo = v < lo ? v : lo;
        hi = v > hi ? v : hi;
    }
    *mn = lo;
    *mx = hi;
}

#ifdef KILN_HAVE_AVX2_PATH
/* minps(a, b) is exactly `a < b ? a : b` (maxps likewise), the scalar rule; lanes hold
 * +0 or a value of the matrix, so the order of the final reduction does not matter. */
__attribute__((target("avx2"))) static void minmax_avx2(const float *x, int64_t n, float *mn,
                                                         float *mx)
{
    const __m256 absm = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    const __m256 inf = _mm256_set1_ps(INFINITY);
    __m256 lo0 = _mm256_setzero_ps(), hi0 = lo0, lo1 = lo0, hi1 = lo0;
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256 a = _mm256_loadu_ps(x + i), b = _mm256_loadu_ps(x + i + 8);
        a = _mm256_and_ps(a, _mm256_cmp_ps(_mm256_and_ps(a, absm), inf, _CMP_LT_OQ));
        b = _mm256_and_ps(b, _mm256_cmp_ps(_mm256_and_ps(b, absm), inf, _CMP_LT_OQ));
        lo0 = _mm256_min_ps(a, lo0);
        hi0 = _mm256_max_ps(a, hi0);
        lo1 = _mm256_min_ps(b, lo1);
        hi1 = _mm256_max_ps(b, hi1);
    }
    float l[8], h[8];
    _mm256_storeu_ps(l, _mm256_min_ps(lo0, lo1));
    _mm256_storeu_ps(h, _mm256_max_ps(hi0, hi1));
    float lo = *mn, hi = *mx;
    for (int k = 0; k < 8; k++) {
        lo = l[k] < lo ? l[k] : lo;
        hi = h[k] > hi ? h[k] : hi;
    }
    *mn = lo;
    *mx = hi;
    minmax_scalar(x + i, n - i, mn, mx);
}
#endif

static void fast_minmax(const float *x, int64_t n, float *mn, float *mx)
{
    *mn = *mx = 0.0f;
#ifdef KILN_HAVE_AVX2_PATH
    if (cpu_has_avx2()) {
        minmax_avx2(x, n, mn, mx);
        return;
    }
#endif
    minmax_scalar(x, n, mn, mx);
}

#ifdef KILN_HAVE_AVX2_PATH
/* 4 x 8 int32 codes in 0..255 (unsig) or -128..127 -> 32 bytes in order. */
__attribute__((target("avx2"))) static void store_codes32(const __m256i c[4], bool unsig,
                                                           uint8_t *out)
{
    __m256i w01 = _mm256_packs_epi32(c[0], c[1]), w23 = _mm256_packs_epi32(c[2], c[3]);
    __m256i b = unsig ? _mm256_packus_epi16(w01, w23) : _mm256_packs_epi16(w01, w23);
    /* the packs work per 128-bit lane: dwords come out as c0lo c1lo c2lo c3lo c0hi ... */
    b = _mm256_permutevar8x32_epi32(b, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    _mm256_storeu_si256((__m256i *)out, b);
}

/* Integer codes of x[0, n) rounded down to a multiple of 32; returns how many.
 * r = rne(x/s) clamped to [qmin - z, qmax - z] then + z equals the definition's clamp
 * of r + z (r is integral or infinite); NaN takes the code of 0. */
__attribute__((target("avx2"))) static int64_t int_codes_avx2(const float *x, int64_t n,
                                                               float scale, int32_t qmin,
                                                               int32_t qmax, int32_t zero,
                                                               uint8_t *out)
{
    const __m256 vs = _mm256_set1_ps(scale);
    const __m256 vlo = _mm256_set1_ps((float)(qmin - zero));
    const __m256 vhi = _mm256_set1_ps((float)(qmax - zero));
    const __m256i vz = _mm256_set1_epi32(zero);
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        __m256i c[4];
        for (int k = 0; k < 4; k++) {
            __m256 q = _mm256_div_ps(_mm256_loadu_ps(x + i + 8 * k), vs);
            __m256 r = _mm256_round_ps(q, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
            r = _mm256_andnot_ps(_mm256_cmp_ps(r, r, _CMP_UNORD_Q), r);
            r = _mm256_min_ps(_mm256_max_ps(r, vlo), vhi);
            c[k] = _mm256_add_epi32(_mm256_cvtps_epi32(r), vz);
        }
        store_codes32(c, qmin >= 0, out + i);
    }
    return i;
}

/* FP8 bytes of x[0, n)/scale, multiple of 32 as above. Normal range: RNE of the f32
 * bits at the format's last mantissa bit (a carry into the exponent is the right
 * rounding) and rebias; subnormal range: rne(a / ulp), exact power-of-two scaling.
 * Then saturation, sign, NaN -> 0x7F as in fp8_encode. */
__attribute__((target("avx2"))) static int64_t fp8_codes_avx2(const float *x, int64_t n,
                                                               float scale, bool e4m3,
                                                               uint8_t *out)
{
    const int mbits = e4m3 ? 3 : 2, bias = e4m3 ? 7 : 15, shift = 23 - mbits;
    const __m256 vs = _mm256_set1_ps(scale);
    const __m256 absm = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    const __m256 vmax = _mm256_set1_ps(e4m3 ? KILN_E4M3_MAX : KILN_E5M2_MAX);
    const __m256 vnorm = _mm256_set1_ps(ldexpf(1.0f, 1 - bias));         /* 2^emin */
    const __m256 vinvulp = _mm256_set1_ps(ldexpf(1.0f, bias - 1 + mbits)); /* 2^-(emin-m) */
    const __m256i rnd = _mm256_set1_epi32((1 << (shift - 1)) - 1), one = _mm256_set1_epi32(1);
    const __m256i rebias = _mm256_set1_epi32((127 - bias) << mbits);
    const __m256i maxc = _mm256_set1_epi32(e4m3 ? 0x7e : 0x7b), nanc = _mm256_set1_epi32(0x7f);
    const __m256i signm = _mm256_set1_epi32(0x80);
    const __m128i sh = _mm_cvtsi32_si128(shift);
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        __m256i c[4];
        for (int k = 0; k < 4; k++) {
            __m256 v = _mm256_div_ps(_mm256_loadu_ps(x + i + 8 * k), vs);
            __m256 a = _mm256_and_ps(v, absm);
            __m256i ua = _mm256_castps_si256(a);
            __m256i sgn = _mm256_and_si256(_mm256_srli_epi32(_mm256_castps_si256(v), 24), signm);
            __m256i lsb = _mm256_and_si256(_mm256_srl_epi32(ua, sh), one);
            __m256i nrm = _mm256_sub_epi32(
                _mm256_srl_epi32(_mm256_add_epi32(_mm256_add_epi32(ua, rnd), lsb), sh), rebias);
            __m256i sub = _mm256_cvtps_epi32(_mm256_round_ps(
                _mm256_mul_ps(a, vinvulp), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
            __m256i code = _mm256_blendv_epi8(
                nrm, sub, _mm256_castps_si256(_mm256_cmp_ps(a, vnorm, _CMP_LT_OQ)));
            code = _mm256_blendv_epi8(code, maxc,
                                      _mm256_castps_si256(_mm256_cmp_ps(a, vmax, _CMP_GT_OQ)));
            code = _mm256_or_si256(code, sgn);
            c[k] = _mm256_blendv_epi8(code, nanc,
                                      _mm256_castps_si256(_mm256_cmp_ps(v, v, _CMP_UNORD_Q)));
        }
        store_codes32(c, true, out + i);
    }
    return i;
}
#endif

#ifdef KILN_HAVE_AVX2_PATH
/* kiln_int4_pack of v[0, n) rounded down to a multiple of 64; returns how many. Each
 * i16 lane holds a pair: (lo & 0xF) | ((hi & 0xF) << 4) is (w & 0xF) | ((w >> 4) & 0xF0). */
__attribute__((target("avx2"))) static int64_t nibbles_avx2(const uint8_t *v, int64_t n,
                                                             uint8_t *out)
{
    const __m256i lo = _mm256_set1_epi16(0x000f), hi = _mm256_set1_epi16(0x00f0);
    int64_t i = 0;
    for (; i + 64 <= n; i += 64) {
        __m256i a = _mm256_loadu_si256((const __m256i *)(v + i));
        __m256i b = _mm256_loadu_si256((const __m256i *)(v + i + 32));
        a = _mm256_or_si256(_mm256_and_si256(a, lo), _mm256_and_si256(_mm256_srli_epi16(a, 4), hi));
        b = _mm256_or_si256(_mm256_and_si256(b, lo), _mm256_and_si256(_mm256_srli_epi16(b, 4), hi));
        __m256i p = _mm256_permute4x64_epi64(_mm256_packus_epi16(a, b), _MM_SHUFFLE(3, 1, 2, 0));
        _mm256_storeu_si256((__m256i *)(out + i / 2), p);
    }
    return i;
}
#endif

static void pack_nibbles(const uint8_t *v, int64_t n, bool avx2, uint8_t *out)
{
    int64_t i = 0;
#ifdef KILN_HAVE_AVX2_PATH
    if (avx2)
        i = nibbles_avx2(v, n, out);
#endif
    kiln_int4_pack((const int8_t *)v + i, n - i, out + i / 2);
}

/* One byte per value: the byte kiln_code_set stores for 8-bit dtypes, the code
 * (-7..7 / 0..15) before nibble packing for int4. */
static void slice_codes(KilnQFormat f, bool sym, KilnQParams p, const float *x, int64_t n,
                        bool avx2, uint8_t *out)
{
    int64_t i = 0;
#ifdef KILN_HAVE_AVX2_PATH
    if (avx2) {
        if (kiln_qformat_is_fp8(f))
            i = fp8_codes_avx2(x, n, p.scale, f == KILN_QF_FP8_E4M3, out);
        else
            i = int_codes_avx2(x, n, p.scale, kiln_qformat_qmin(f, sym),
                               (int32_t)kiln_qformat_qmax(f, sym), sym ? 0 : p.zero, out);
    }
#else
    (void)avx2;
#endif
    for (; i < n; i++)
        out[i] = (uint8_t)kiln_quantize_value(f, sym, p, x[i]);
}

/* ------------------------------------------------------------------ ranges and params */

static int cmp_float(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* Non-finite values are ignored when choosing a range: one Inf must not make every
 * other code of the slice zero. */
void kiln_slice_range(const float *x, int64_t n, int64_t stride, KilnCalib calib, float pct,
                      float *lo, float *hi)
{
    float mn = 0.0f, mx = 0.0f;
    int64_t nfin = 0;
    bool want_pct = calib == KILN_CAL_PERCENTILE && pct > 0.0f && pct < 100.0f;
    if (stride == 1 && !want_pct) {
        fast_minmax(x, n, &mn, &mx);
    } else {
        for (int64_t i = 0; i < n; i++) {
            float v = x[i * stride];
            if (!isfinite(v))
                continue;
            nfin++;
            mn = v < mn ? v : mn;
            mx = v > mx ? v : mx;
        }
    }
    *lo = mn;
    *hi = mx;
    if (!want_pct || nfin == 0)
        return;
    float *mag = malloc((size_t)nfin * sizeof *mag);
    if (!mag) /* out of memory: minmax is a safe superset */
        return;
    int64_t k = 0;
    for (int64_t i = 0; i < n; i++) {
        float v = x[i * stride];
        if (isfinite(v))
            mag[k++] = fabsf(v);
    }
    qsort(mag, (size_t)nfin, sizeof *mag, cmp_float);
    /* Nearest rank: the smallest c with at least pct% of |x| <= c. The slack absorbs
     * pct's float representation (99.9f is 99.9000015, which must still give 999 of 1000). */
    double want = (double)pct / 100.0 * (double)nfin - 1e-7 * (double)nfin;
    int64_t rank = (int64_t)ceil(want);
    rank = rank < 1 ? 1 : rank > nfin ? nfin : rank;
    float c = mag[rank - 1];
    free(mag);
    *lo = mn < -c ? -c : mn;
    *hi = mx > c ? c : mx;
}

KilnQParams kiln_qparams_from_range(KilnQFormat f, bool symmetric, float lo, float hi)
{
    KilnQParams p = {1.0f, 0};
    lo = lo < 0.0f ? lo : 0.0f;
    hi = hi > 0.0f ? hi : 0.0f;
    if (kiln_qformat_is_fp8(f) || symmetric) {
        float amax = fmaxf(-lo, hi);
        float qmax = kiln_qformat_qmax(f, true);
        if (amax > 0.0f && qmax > 0.0f)
            p.scale = amax / qmax;
    } else {
        float levels = kiln_qformat_qmax(f, false);
        if (hi - lo > 0.0f && levels > 0.0f) {
            p.scale = (hi - lo) / levels;
            float z = kiln_round_even(-lo / p.scale);
            p.zero = z < 0.0f ? 0 : z > levels ? (int32_t)levels : (int32_t)z;
        }
    }
    if (!(p.scale > 0.0f)) /* underflow of a tiny range: codes become 0 */
        p.scale = 1.0f;
    if (isinf(p.scale)) /* range wider than FLT_MAX */
        p.scale = FLT_MAX;
    return p;
}

int32_t kiln_quantize_value(KilnQFormat f, bool symmetric, KilnQParams p, float x)
{
    if (f == KILN_QF_FP8_E4M3)
        return kiln_fp8_e4m3_encode(x / p.scale);
    if (f == KILN_QF_FP8_E5M2)
        return kiln_fp8_e5m2_encode(x / p.scale);
    if (!kiln_qformat_is_int(f))
        return 0;
    int32_t zero = symmetric ? 0 : p.zero;
    float r = kiln_round_even(x / p.scale);
    if (isnan(r)) /* NaN carries no magnitude: the code of 0.0 */
        return zero;
    double q = (double)r + zero; /* double: no int overflow for huge r */
    double qmin = kiln_qformat_qmin(f, symmetric), qmax = kiln_qformat_qmax(f, symmetric);
    q = q < qmin ? qmin : q > qmax ? qmax : q;
    return (int32_t)q;
}

float kiln_dequantize_value(KilnQFormat f, bool symmetric, KilnQParams p, int32_t code)
{
    if (f == KILN_QF_FP8_E4M3)
        return kiln_fp8_e4m3_decode((uint8_t)code) * p.scale;
    if (f == KILN_QF_FP8_E5M2)
        return kiln_fp8_e5m2_decode((uint8_t)code) * p.scale;
    return (float)(code - (symmetric ? 0 : p.zero)) * p.scale;
}

/* ------------------------------------------------------------------ code storage */

int32_t kiln_code_get(KilnDType dt, const void *row, int64_t i)
{
    const uint8_t *b = row;
    switch (dt) {
    case KILN_I8: return ((const int8_t *)row)[i];
    case KILN_U8:
    case KILN_E4M3:
    case KILN_E5M2: return b[i];
    case KILN_I4: {
        int32_t v = (b[i >> 1] >> ((i & 1) * 4)) & 0xf;
        return v >= 8 ? v - 16 : v;
    }
    case KILN_U4: return (b[i >> 1] >> ((i & 1) * 4)) & 0xf;
    default: return 0;
    }
}

void kiln_code_set(KilnDType dt, void *row, int64_t i, int32_t code)
{
    uint8_t *b = row;
    switch (dt) {
    case KILN_I8: ((int8_t *)row)[i] = (int8_t)code; break;
    case KILN_U8:
    case KILN_E4M3:
    case KILN_E5M2: b[i] = (uint8_t)code; break;
    case KILN_I4:
    case KILN_U4: {
        int sh = (int)(i & 1) * 4;
        b[i >> 1] = (uint8_t)((b[i >> 1] & ~(0xf << sh)) | ((code & 0xf) << sh));
        break;
    }
    default: break;
    }
}

size_t kiln_row_bytes(KilnDType dt, int64_t cols)
{
    if (cols <= 0)
        return 0;
    if (dt == KILN_I4 || dt == KILN_U4)
        return (size_t)(cols + 1) / 2;
    return (size_t)cols * (size_t)(kiln_dtype_bits(dt) / 8);
}

void kiln_int4_pack(const int8_t *v, int64_t n, uint8_t *out)
{
    for (int64_t j = 0; 2 * j < n; j++) {
        uint8_t hi = 2 * j + 1 < n ? (uint8_t)(v[2 * j + 1] & 0xf) : 0;
        out[j] = (uint8_t)((v[2 * j] & 0xf) | (hi << 4));
    }
}

void kiln_int4_unpack(const uint8_t *in, int64_t n, bool is_signed, int8_t *v)
{
    for (int64_t i = 0; i < n; i++)
        v[i] = (int8_t)kiln_code_get(is_signed ? KILN_I4 : KILN_U4, in, i);
}

/* ------------------------------------------------------------------ matrices */

/* Slices per row and the length of one slice for a spec on [rows, cols]. */
static int check_spec(const KilnQuantSpec *s, int64_t rows, int64_t cols, bool need_zeros,
                      const void *zeros, KilnDiag *d)
{
    if (!kiln_qformat_is_int(s->fmt) && !kiln_qformat_is_fp8(s->fmt))
        return kiln_diag_set(d, KILN_EINPUT, "cannot quantize with format %s",
                             kiln_qformat_name(s->fmt));
    if (rows < 0 || cols < 0)
        return kiln_diag_set(d, KILN_EINPUT, "bad matrix shape [%lld,%lld]", (long long)rows,
                             (long long)cols);
    if (s->gran == KILN_GRAN_AUTO)
        return kiln_diag_set(d, KILN_EINPUT,
                             "granularity auto must be resolved by the layout pass before "
                             "quantizing a [%lld,%lld] matrix",
                             (long long)rows, (long long)cols);
    if ((unsigned)s->gran >= KILN_NGRANS)
        return kiln_diag_set(d, KILN_EINPUT, "bad granularity %d", (int)s->gran);
    if (s->gran == KILN_GRAN_GROUP && s->group <= 0)
        return kiln_diag_set(d, KILN_EINPUT, "group size %d of a [%lld,%lld] matrix, expected > 0",
                             (int)s->group, (long long)rows, (long long)cols);
    if (need_zeros && kiln_qformat_is_int(s->fmt) && !s->symmetric && !zeros)
        return kiln_diag_set(d, KILN_EINPUT, "asymmetric %s needs zero points",
                             kiln_qformat_name(s->fmt));
    return 0;
}

/* Length of one scale slice along a row (tensor: the whole matrix, handled by caller).
 * A group that does not divide cols leaves a ragged last slice of cols % group. */
static int64_t slice_len(const KilnQuantSpec *s, int64_t cols)
{
    return s->gran == KILN_GRAN_GROUP ? s->group : cols;
}

/* Slices per row: ceil(cols / len), the last one possibly shorter. */
static int64_t slices_per_row(int64_t len, int64_t cols)
{
    return len > 0 ? (cols + len - 1) / len : 0;
}

/* Per row: first every slice's params (into scales/zeros), then the codes, straight
 * into the row for 8-bit storage, or in chunks through a stack buffer and nibble
 * packing (kiln_int4_pack's layout, which is kiln_code_set's) for int4. */
static void quantize_matrix_fast(const KilnQuantSpec *spec, const float *x, int64_t rows,
                                 int64_t cols, void *out, float *scales, int32_t *zeros)
{
    enum { CHUNK = 512 }; /* even, so every chunk starts on a whole byte */
    uint8_t buf[CHUNK];
    bool sym = spec->symmetric || kiln_qformat_is_fp8(spec->fmt);
    KilnDType dt = kiln_qformat_storage(spec->fmt, sym);
    bool fixed = !spec->dynamic && spec->scale > 0.0f;
    KilnQParams tp = {spec->scale, sym ? 0 : spec->zero};
    size_t rb = kiln_row_bytes(dt, cols);
    bool int4 = dt == KILN_I4 || dt == KILN_U4, avx2 = cpu_has_avx2();
    bool tensor = spec->gran == KILN_GRAN_TENSOR;
    int64_t len = tensor ? cols : slice_len(spec, cols), per_row = slices_per_row(len, cols);
    if (tensor) {
        if (!fixed) {
            float lo, hi;
            kiln_calib_range(spec, x, rows * cols, 1, &lo, &hi);
            tp = kiln_qparams_from_range(spec->fmt, sym, lo, hi);
        }
        scales[0] = tp.scale;
        if (zeros)
            zeros[0] = tp.zero;
    }
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * cols;
        uint8_t *row = (uint8_t *)out + (size_t)r * rb;
        float *rs = tensor ? scales : scales + r * per_row;
        int32_t *rz = !zeros ? NULL : tensor ? zeros : zeros + r * per_row;
        for (int64_t j = 0; !tensor && j < per_row; j++) {
            KilnQParams p = tp;
            if (!fixed) {
                float lo, hi;
                int64_t sl = cols - j * len < len ? cols - j * len : len; /* ragged last */
                kiln_calib_range(spec, xr + j * len, sl, 1, &lo, &hi);
                p = kiln_qparams_from_range(spec->fmt, sym, lo, hi);
            }
            rs[j] = p.scale;
            if (rz)
                rz[j] = p.zero;
        }
        for (int64_t c0 = 0; c0 < cols; c0 += int4 ? CHUNK : cols) {
            int64_t c1 = int4 && cols - c0 > CHUNK ? c0 + CHUNK : cols;
            for (int64_t c = c0; c < c1;) {
                int64_t j = tensor ? 0 : c / len, e = tensor ? c1 : (j + 1) * len;
                e = e < c1 ? e : c1;
                KilnQParams p = tensor ? tp : (KilnQParams){rs[j], rz ? rz[j] : 0};
                uint8_t *dst = int4 ? buf + (c - c0) : row + c;
                slice_codes(spec->fmt, sym, p, xr + c, e - c, avx2, dst);
                c = e;
            }
            if (int4)
                pack_nibbles(buf, c1 - c0, avx2, row + c0 / 2);
        }
    }
}

int kiln_quantize_matrix(const KilnQuantSpec *spec, const float *x, int64_t rows, int64_t cols,
                         void *out, float *scales, int32_t *zeros, KilnDiag *d)
{
    int rc = check_spec(spec, rows, cols, true, zeros, d);
    if (rc)
        return rc;
    if (rows == 0 || cols == 0) {
        bool sym = spec->symmetric || kiln_qformat_is_fp8(spec->fmt);
        bool fixed = !spec->dynamic && spec->scale > 0.0f;
        if (spec->gran == KILN_GRAN_TENSOR) {
            scales[0] = fixed ? spec->scale : 1.0f;
            if (zeros)
                zeros[0] = fixed && !sym ? spec->zero : 0;
        }
        return 0;
    }
    quantize_matrix_fast(spec, x, rows, cols, out, scales, zeros);
    return 0;
}

/* How a matrix of codes is walked with its grid: storage, row bytes, slices. */
typedef struct GridWalk {
    bool sym;
    KilnDType dt;
    size_t rb;
    int64_t len, per_row;
} GridWalk;

static GridWalk grid_walk(const KilnQuantSpec *spec, int64_t cols)
{
    GridWalk g = {.sym = spec->symmetric || kiln_qformat_is_fp8(spec->fmt)};
    g.dt = kiln_qformat_storage(spec->fmt, g.sym);
    g.rb = kiln_row_bytes(g.dt, cols);
    g.len = slice_len(spec, cols);
    g.per_row = slices_per_row(g.len, cols);
    return g;
}

/* The grid point of element (r, c). */
static KilnQParams grid_at(const KilnQuantSpec *spec, const GridWalk *g, const float *scales,
                           const int32_t *zeros, int64_t r, int64_t c)
{
    int64_t si = spec->gran == KILN_GRAN_TENSOR ? 0 : r * g->per_row + c / g->len;
    return (KilnQParams){scales[si], (zeros && !g->sym) ? zeros[si] : 0};
}

int kiln_dequantize_matrix(const KilnQuantSpec *spec, const void *codes, const float *scales,
                           const int32_t *zeros, int64_t rows, int64_t cols, float *out,
                           KilnDiag *d)
{
    int rc = check_spec(spec, rows, cols, true, zeros, d);
    if (rc)
        return rc;
    GridWalk g = grid_walk(spec, cols);
    for (int64_t r = 0; r < rows; r++) {
        const uint8_t *row = (const uint8_t *)codes + (size_t)r * g.rb;
        for (int64_t c = 0; c < cols; c++)
            out[r * cols + c] = kiln_dequantize_value(spec->fmt, g.sym,
                                                      grid_at(spec, &g, scales, zeros, r, c),
                                                      kiln_code_get(g.dt, row, c));
    }
    return 0;
}

int kiln_quantize_matrix_with(const KilnQuantSpec *spec, const float *x, int64_t rows,
                              int64_t cols, const float *scales, const int32_t *zeros, void *out,
                              KilnDiag *d)
{
    int rc = check_spec(spec, rows, cols, true, zeros, d);
    if (rc)
        return rc;
    GridWalk g = grid_walk(spec, cols);
    bool sym = g.sym;
    KilnDType dt = g.dt;
    int64_t ns = spec->gran == KILN_GRAN_TENSOR ? 1 : rows * g.per_row;
    for (int64_t i = 0; i < ns; i++)
        if (!(scales[i] > 0.0f) || !isfinite(scales[i]))
            return kiln_diag_set(d, KILN_EINPUT, "scale %lld is %g: scales must be positive and finite",
                                 (long long)i, (double)scales[i]);
    for (int64_t r = 0; r < rows; r++) {
        uint8_t *row = (uint8_t *)out + (size_t)r * g.rb;
        for (int64_t c = 0; c < cols; c++) {
            KilnQParams p = grid_at(spec, &g, scales, zeros, r, c);
            int32_t code;
            if (kiln_qformat_is_int(spec->fmt)) { /* the storage's whole range: a grid chosen elsewhere
                                      * may use -8 / -128, which kiln's own rounding never does */
                int32_t lo = sym ? -(1 << (kiln_qformat_bits(spec->fmt) - 1)) : 0;
                int32_t hi = sym ? (1 << (kiln_qformat_bits(spec->fmt) - 1)) - 1
                                 : (1 << kiln_qformat_bits(spec->fmt)) - 1;
                float v = kiln_round_even(x[r * cols + c] / p.scale) + (float)p.zero;
                code = !(v >= (float)lo) ? lo : v > (float)hi ? hi : (int32_t)v;
                if (isnan(v))
                    code = p.zero;
            } else {
                code = kiln_quantize_value(spec->fmt, sym, p, x[r * cols + c]);
            }
            kiln_code_set(dt, row, c, code);
        }
    }
    return 0;
}
