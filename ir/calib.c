/* ir/calib.c — the error a format makes on data (kiln_fake_quantize), how far one output
 * is from another (kiln_error_stats), and choosing a static range from data by rule
 * (kiln_calib_range), including the MSE-optimal clip. docs/numerics.md and docs/quant.md
 * describe them. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "numerics.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define KILN_HAVE_AVX2_PATH 1
#endif

enum {
    MSE_GRID = 100,          /* clip ratios k/100, k = 100 .. 1 */
    MSE_MAX_VALUES = 1 << 16 /* values that enter the error sum */
};

static bool fmt_is_fp8(KilnQFormat f) { return f == KILN_QF_FP8_E4M3 || f == KILN_QF_FP8_E5M2; }
static bool fmt_is_int(KilnQFormat f) { return f == KILN_QF_INT8 || f == KILN_QF_INT4; }

/* ------------------------------------------------------------------ fake quantization */

static float pow2f(int k) /* 2^k for k in [-126, 127] */
{
    uint32_t u = (uint32_t)(k + 127) << 23;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* decode(encode(v)) of a minifloat without the byte: RNE at the value's own ulp
 * (2^(max(E, emin) - mbits), a power of two, so the scaling is exact) and saturation
 * to the largest finite value, the same cases fp8_encode in numerics.c makes. */
static float fp8_round_trip(float v, int mbits, int bias, float maxval)
{
    if (isnan(v))
        return NAN;
    float a = fabsf(v);
    if (a > maxval)
        return copysignf(maxval, v);
    uint32_t u;
    memcpy(&u, &a, sizeof u);
    int e = (int)(u >> 23) - 127; /* -127 for 0 and f32 subnormals: below emin */
    int emin = 1 - bias;
    int qexp = (e < emin ? emin : e) - mbits;
    float r = kiln_round_even(a * pow2f(-qexp)) * pow2f(qexp);
    return copysignf(r, v);
}

#ifdef KILN_HAVE_AVX2_PATH
/* fp8_round_trip(x/scale)*scale eight lanes at a time, the same operations: the
 * exponent from the bits, powers of two built from bits, explicit RNE. */
__attribute__((target("avx2"))) static int64_t fake_fp8_avx2(const float *x, int64_t n, float scale,
                                                              int mbits, int bias, float maxval,
                                                              float *out)
{
    const __m256 vs = _mm256_set1_ps(scale), vmax = _mm256_set1_ps(maxval);
    const __m256 absm = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    const __m256i emin = _mm256_set1_epi32(1 - bias + 127), vm = _mm256_set1_epi32(mbits);
    const __m256i b254 = _mm256_set1_epi32(254);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_div_ps(_mm256_loadu_ps(x + i), vs);
        __m256 a = _mm256_and_ps(v, absm);
        __m256i be = _mm256_srli_epi32(_mm256_castps_si256(a), 23); /* biased exponent */
        __m256i q = _mm256_sub_epi32(_mm256_max_epi32(be, emin), vm); /* biased qexp */
        __m256 up = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_sub_epi32(b254, q), 23));
        __m256 down = _mm256_castsi256_ps(_mm256_slli_epi32(q, 23));
        __m256 r = _mm256_mul_ps(
            _mm256_round_ps(_mm256_mul_ps(a, up), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC),
            down);
        r = _mm256_blendv_ps(r, vmax, _mm256_cmp_ps(a, vmax, _CMP_GT_OQ));
        r = _mm256_or_ps(r, _mm256_andnot_ps(absm, v)); /* the sign of v */
        r = _mm256_blendv_ps(r, v, _mm256_cmp_ps(v, v, _CMP_UNORD_Q)); /* NaN stays NaN */
        _mm256_storeu_ps(out + i, _mm256_mul_ps(r, vs));
    }
    return i;
}
#endif

#ifdef KILN_HAVE_AVX2_PATH
/* Integer formats, eight lanes: clamp(rne(x/s), qmin - z, qmax - z) is the code minus
 * the zero point (clamping before or after rounding is the same for integer bounds);
 * through int32 so that 0 comes back as +0 like (code - zero) * scale; NaN -> 0. */
__attribute__((target("avx2"))) static int64_t fake_int_avx2(const float *x, int64_t n, float scale,
                                                              float lo, float hi, float *out)
{
    const __m256 vs = _mm256_set1_ps(scale), vlo = _mm256_set1_ps(lo), vhi = _mm256_set1_ps(hi);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 r = _mm256_round_ps(_mm256_div_ps(_mm256_loadu_ps(x + i), vs),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        r = _mm256_andnot_ps(_mm256_cmp_ps(r, r, _CMP_UNORD_Q), r);
        r = _mm256_min_ps(_mm256_max_ps(r, vlo), vhi);
        r = _mm256_cvtepi32_ps(_mm256_cvtps_epi32(r));
        _mm256_storeu_ps(out + i, _mm256_mul_ps(r, vs));
    }
    return i;
}
#endif

void kiln_fake_quantize(KilnQFormat f, bool symmetric, KilnQParams p, const float *x, int64_t n,
                        float *out)
{
    int64_t i = 0;
    if (fmt_is_fp8(f)) {
        bool e4m3 = f == KILN_QF_FP8_E4M3;
        int mbits = e4m3 ? 3 : 2, bias = e4m3 ? 7 : 15;
        float maxval = e4m3 ? KILN_E4M3_MAX : KILN_E5M2_MAX;
#ifdef KILN_HAVE_AVX2_PATH
        if (__builtin_cpu_supports("avx2"))
            i = fake_fp8_avx2(x, n, p.scale, mbits, bias, maxval, out);
#endif
        for (; i < n; i++)
            out[i] = fp8_round_trip(x[i] / p.scale, mbits, bias, maxval) * p.scale;
        return;
    }
#ifdef KILN_HAVE_AVX2_PATH
    if (fmt_is_int(f) && __builtin_cpu_supports("avx2")) {
        int32_t z = symmetric ? 0 : p.zero;
        float lo = (float)(kiln_qformat_qmin(f, symmetric) - z);
        float hi = (float)((int32_t)kiln_qformat_qmax(f, symmetric) - z);
        i = fake_int_avx2(x, n, p.scale, lo, hi, out);
    }
#endif
    for (; i < n; i++)
        out[i] = kiln_dequantize_value(f, symmetric, p, kiln_quantize_value(f, symmetric, p, x[i]));
}

/* ------------------------------------------------------------------ MSE clip */

/* Sum of squared errors in a fixed order (eight partial sums, lane i % 8, then summed
 * 0..7), so the chosen clip does not depend on how the sum ran. */
#ifdef KILN_HAVE_AVX2_PATH
__attribute__((target("avx2"))) static int64_t sq_error_avx2(const float *x, const float *y,
                                                              int64_t n, double acc[8])
{
    __m256d lo = _mm256_setzero_pd(), hi = lo;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 a = _mm256_loadu_ps(x + i), b = _mm256_loadu_ps(y + i);
        __m256d el = _mm256_sub_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(a)),
                                   _mm256_cvtps_pd(_mm256_castps256_ps128(b)));
        __m256d eh = _mm256_sub_pd(_mm256_cvtps_pd(_mm256_extractf128_ps(a, 1)),
                                   _mm256_cvtps_pd(_mm256_extractf128_ps(b, 1)));
        lo = _mm256_add_pd(lo, _mm256_mul_pd(el, el));
        hi = _mm256_add_pd(hi, _mm256_mul_pd(eh, eh));
    }
    _mm256_storeu_pd(acc, lo);
    _mm256_storeu_pd(acc + 4, hi);
    return i;
}
#endif

static double sq_error(const float *x, const float *y, int64_t n)
{
    double acc[8] = {0};
    int64_t i = 0;
#ifdef KILN_HAVE_AVX2_PATH
    if (__builtin_cpu_supports("avx2"))
        i = sq_error_avx2(x, y, n, acc);
#endif
    for (; i < n; i++) {
        double e = (double)x[i] - (double)y[i];
        acc[i & 7] += e * e;
    }
    double s = 0;
    for (int k = 0; k < 8; k++)
        s += acc[k];
    return s;
}

/* The values the error is measured on. Up to MSE_MAX_VALUES: all of them. Beyond, a
 * stratified sample: the tail (every |x| > tau, tau the lowest of 256 histogram edges
 * with at most MSE_TAIL values above it) exactly, because the few largest values decide
 * the clipping error, and every step-th value of the body, each standing for step. */
typedef struct MseSample {
    float *v;            /* tail values [0, ntail), then body values [ntail, m) */
    int64_t ntail, m;
    double body_weight;
} MseSample;

enum { MSE_TAIL = 4096, MSE_BINS = 256 };

static float tail_threshold(const float *x, int64_t n, int64_t stride, float amax)
{
    int64_t hist[MSE_BINS] = {0};
    for (int64_t i = 0; i < n; i++) {
        float a = fabsf(x[i * stride]);
        if (a < INFINITY) {
            int b = (int)((double)a / amax * MSE_BINS);
            hist[b < MSE_BINS ? b : MSE_BINS - 1]++;
        }
    }
    int64_t above = 0;
    int b = MSE_BINS;
    while (b > 0 && above + hist[b - 1] <= MSE_TAIL)
        above += hist[--b];
    return b == MSE_BINS ? amax : (float)((double)amax * b / MSE_BINS);
}

static int gather_sample(const float *x, int64_t n, int64_t stride, float amax, MseSample *s)
{
    bool all = n <= MSE_MAX_VALUES;
    int64_t step = all ? 1 : (n + MSE_MAX_VALUES - MSE_TAIL - 1) / (MSE_MAX_VALUES - MSE_TAIL);
    float tau = all ? INFINITY : tail_threshold(x, n, stride, amax);
    int64_t ntail = 0;
    for (int64_t i = 0; !all && i < n; i++) {
        float a = fabsf(x[i * stride]);
        ntail += a > tau && a < INFINITY;
    }
    int64_t cap = ntail + (n + step - 1) / step;
    s->v = malloc((size_t)cap * sizeof *s->v);
    s->ntail = s->m = 0;
    s->body_weight = (double)step;
    if (!s->v)
        return -1;
    for (int64_t i = 0; i < n && s->ntail < ntail; i++) {
        float t = x[i * stride];
        if (fabsf(t) > tau && fabsf(t) < INFINITY)
            s->v[s->ntail++] = t;
    }
    s->m = s->ntail;
    for (int64_t i = 0; i < n; i += step) {
        float t = x[i * stride];
        if (fabsf(t) <= tau && fabsf(t) < INFINITY)
            s->v[s->m++] = t;
    }
    return 0;
}

/* The ratio r of [r*mn, r*mx] with the least squared error of the sample under q; ties
 * keep the larger r, so data that clipping cannot help stays at minmax. */
static float mse_ratio(const KilnQuantSpec *q, bool sym, const MseSample *s, float mn, float mx,
                       float *work)
{
    float best_r = 1.0f;
    double best = INFINITY;
    for (int k = MSE_GRID; k >= 1; k--) {
        float r = (float)k / MSE_GRID;
        KilnQParams p = kiln_qparams_from_range(q->fmt, sym, r * mn, r * mx);
        kiln_fake_quantize(q->fmt, sym, p, s->v, s->m, work);
        double e = sq_error(s->v, work, s->ntail) +
                   s->body_weight * sq_error(s->v + s->ntail, work + s->ntail, s->m - s->ntail);
        if (e < best) {
            best = e;
            best_r = r;
        }
    }
    return best_r;
}

void kiln_calib_range(const KilnQuantSpec *q, const float *x, int64_t n, int64_t stride,
                      float *lo, float *hi)
{
    if (q->calib != KILN_CAL_MSE) {
        kiln_slice_range(x, n, stride, q->calib, q->pct, lo, hi);
        return;
    }
    float mn, mx;
    kiln_slice_range(x, n, stride, KILN_CAL_MINMAX, 0.0f, &mn, &mx);
    *lo = mn;
    *hi = mx;
    if ((mn == 0.0f && mx == 0.0f) || !(fmt_is_int(q->fmt) || fmt_is_fp8(q->fmt)))
        return;
    MseSample smp;
    float *work = NULL;
    if (!gather_sample(x, n, stride, fmaxf(-mn, mx), &smp))
        work = malloc((size_t)(smp.m ? smp.m : 1) * sizeof *work);
    if (work) { /* out of memory: minmax is the safe answer */
        bool sym = q->symmetric || fmt_is_fp8(q->fmt);
        float r = mse_ratio(q, sym, &smp, mn, mx, work);
        *lo = r * mn;
        *hi = r * mx;
    }
    free(work);
    free(smp.v);
}

KilnQParams kiln_calib_static(const KilnQuantSpec *q, const float *x, int64_t n)
{
    float lo, hi;
    kiln_calib_range(q, x, n, 1, &lo, &hi);
    return kiln_qparams_from_range(q->fmt, q->symmetric, lo, hi);
}

/* ------------------------------------------------------------------ error stats */

KilnErrStats kiln_error_stats(const float *ref, const float *y, int64_t n)
{
    KilnErrStats s = {0, 0, INFINITY};
    double maxref = 0, sig = 0, noise = 0;
    for (int64_t i = 0; i < n; i++) {
        double r = ref[i], e = fabs((double)ref[i] - (double)y[i]);
        if (isnan(e)) /* a NaN where the reference has none (or vice versa) is total error */
            e = (isnan(r) && isnan(y[i])) ? 0 : INFINITY;
        s.max_abs = e > s.max_abs ? e : s.max_abs;
        maxref = fabs(r) > maxref ? fabs(r) : maxref;
        sig += isfinite(r) ? r * r : 0;
        noise += e * e;
    }
    s.rel = maxref > 0 ? s.max_abs / maxref : (s.max_abs > 0 ? INFINITY : 0);
    if (noise > 0)
        s.sqnr_db = 10.0 * log10(sig / noise);
    return s;
}
