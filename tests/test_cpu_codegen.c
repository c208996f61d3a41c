/* tests/test_cpu_codegen.c — the LLVM CPU qgemm kernels against the reference
 * interpreter: every recipe family (W8A8 int8 dynamic/static sym/asym, W8A16,
 * W4A16 groups, W4A8, FP8 W8A8 and weight-only, f32 weights of unquantized
 * layers), epilogues and output dtypes,
 * odd shapes, split [n0,n1) calls; avx512 kernels checked as assembly (run only
 * on a host with VNNI+BF16); object -> fresh JIT; bad kernel IR errors.
 *
 * Tolerances (docs/jit-aot.md "Code generation"):
 *  - int8-activation paths: the integer sums are exact and the kernel combines
 *    scales in the interpreter's order, so y matches bit for bit; we allow
 *    4 ulp of |ref| for the float epilogue (same libm calls, but the compiler may
 *    keep an intermediate in a different precision).
 *  - float paths (weight-only, fp8): both sides sum K products in f32 in a
 *    different order (the kernel per group with the scale applied per group,
 *    fma), so |y - ref| <= 2·K·2^-23·Σ_k|a_k||w_k| (the classic recursive-sum
 *    bound γ_K ≈ K·u per side, u = 2^-24, times two sides, times 2 for the
 *    activations being bounded by |x| instead of their rounded/fp8 values), times
 *    1.2 for the epilogue's slope (|silu'|, |gelu'| <= 1.13), plus one ulp of the
 *    output format when it is f16 (2^-10·|ref| + 2^-24) or bf16 (2^-7·|ref|). */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>
#include <xmmintrin.h>

#include "codegen/cpu/cpu.h"
#include "ir/layout.h"
#include "ir/target.h"
#include "ir/numerics.h"

typedef struct Case {
    const char *name;
    KilnQuantSpec w;
    bool quant_act;
    KilnQuantSpec act;
    KilnDType act_dtype;
    bool bias;
    const char *epi;
    KilnDType out;
} Case;

#define WS(f, s, g, grp) {.fmt = KILN_QF_##f, .symmetric = s, .gran = KILN_GRAN_##g, .group = grp}
#define AD(f, s, g) {.fmt = KILN_QF_##f, .symmetric = s, .gran = KILN_GRAN_##g, .dynamic = true}
#define AS(f, s, sc, z) {.fmt = KILN_QF_##f, .symmetric = s, .gran = KILN_GRAN_TENSOR, .scale = sc, .zero = z}

static const Case cases[] = {
    {"w8a8 dyn-token sym / w channel", WS(INT8, true, CHANNEL, 0), true, AD(INT8, true, TOKEN), KILN_F32, false, "none", KILN_F32},
    {"w8a8 dyn-token asym / w asym channel", WS(INT8, false, CHANNEL, 0), true, AD(INT8, false, TOKEN), KILN_F32, true, "silu", KILN_F32},
    {"w8a8 static sym / w tensor", WS(INT8, true, TENSOR, 0), true, AS(INT8, true, 0.011f, 0), KILN_F32, true, "none", KILN_BF16},
    {"w8a8 static asym / w channel", WS(INT8, true, CHANNEL, 0), true, AS(INT8, false, 0.009f, 120), KILN_F32, false, "gelu", KILN_F16},
    {"w8a8 dyn-tensor sym / w asym tensor", WS(INT8, false, TENSOR, 0), true, AD(INT8, true, TENSOR), KILN_F32, false, "none", KILN_F32},
    {"w8a16 f16 / w channel", WS(INT8, true, CHANNEL, 0), false, {0}, KILN_F16, false, "none", KILN_F16},
    {"w8a16 bf16 / w asym channel", WS(INT8, false, CHANNEL, 0), false, {0}, KILN_BF16, true, "silu", KILN_BF16},
    {"w8a16 f32 / w tensor", WS(INT8, true, TENSOR, 0), false, {0}, KILN_F32, false, "none", KILN_F32},
    {"w4a16 f16 / g32 sym", WS(INT4, true, GROUP, 32), false, {0}, KILN_F16, true, "none", KILN_F32},
    {"w4a16 bf16 / g64 asym", WS(INT4, false, GROUP, 64), false, {0}, KILN_BF16, false, "gelu", KILN_F32},
    {"w4a16 f32 / g128 asym", WS(INT4, false, GROUP, 128), false, {0}, KILN_F32, false, "none", KILN_F16},
    {"w4a8 g32 sym / dyn-token", WS(INT4, true, GROUP, 32), true, AD(INT8, true, TOKEN), KILN_F32, true, "none", KILN_F32},
    {"w4a8 g128 asym / dyn-token", WS(INT4, false, GROUP, 128), true, AD(INT8, true, TOKEN), KILN_F32, false, "silu", KILN_F16},
    {"w4a8 g64 asym / dyn-token asym", WS(INT4, false, GROUP, 64), true, AD(INT8, false, TOKEN), KILN_F32, false, "none", KILN_F32},
    {"fp8 e4m3 w8a8 token / w channel", WS(FP8_E4M3, true, CHANNEL, 0), true, AD(FP8_E4M3, true, TOKEN), KILN_F32, true, "none", KILN_F32},
    {"fp8 e5m2 w8a8 token / w tensor", WS(FP8_E5M2, true, TENSOR, 0), true, AD(FP8_E5M2, true, TOKEN), KILN_F32, false, "gelu", KILN_BF16},
    {"fp8 e4m3 weight-only f16 / channel", WS(FP8_E4M3, true, CHANNEL, 0), false, {0}, KILN_F16, false, "none", KILN_F32},
    {"fp8 e5m2 weight-only bf16 / tensor", WS(FP8_E5M2, true, TENSOR, 0), false, {0}, KILN_BF16, true, "silu", KILN_F32},
    /* unquantized layers: plain f32 weights (w.fmt NONE), deqW = w */
    {"f32 weights f32 acts / bias gelu", {0}, false, {0}, KILN_F32, true, "gelu", KILN_F32},
    {"f32 weights f16 acts / silu bf16 out", {0}, false, {0}, KILN_F16, false, "silu", KILN_BF16},
    {"f32 weights bf16 acts / bias f16 out", {0}, false, {0}, KILN_BF16, true, "none", KILN_F16},
};
#define NCASES (sizeof cases / sizeof cases[0])
#define F32_CASE 18 /* "f32 weights f32 acts / bias gelu" */

static bool is_int_path(const Case *c) { return c->quant_act && c->act.fmt == KILN_QF_INT8; }
static bool is_f32_weight(const Case *c) { return c->w.fmt == KILN_QF_NONE; }

/* ------------------------------------------------------------------ data */

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static float frand(void)
{
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((rng >> 40) / (double)(1u << 24)) * 2.0f - 1.0f;
}

typedef struct Weights {
    int64_t N, K;
    float *w, *bias;
} Weights;

static int weight_fn(void *ctx, const char *name, KilnTensor *out, KilnDiag *d)
{
    Weights *W = ctx;
    size_t n = strstr(name, "bias") ? (size_t)W->N : (size_t)(W->N * W->K);
    memcpy(out->data, strstr(name, "bias") ? W->bias : W->w, n * sizeof(float));
    return 0;
}

/* The kernel IR the passes produce: weight -> quantize -> prepack -> qgemm (an f32
 * weight goes to prepack directly). */
static KilnFunc *build_kernel(KilnModule *mod, const Case *c, int64_t M, int64_t N, int64_t K,
                              const char *target)
{
    KilnFunc *f = kiln_func_new(mod, "layer.proj");
    kiln_fset_ident(f, "target", target);
    int x = kiln_func_param(f, "x", kiln_type2(KILN_F32, M, K));
    int w = kiln_emit(f, KILN_OP_WEIGHT, NULL, 0, kiln_type2(KILN_F32, N, K), "w");
    kiln_set_str(f, kiln_last(f), "name", "layer.proj.weight");
    KilnType qt = kiln_type2(kiln_qformat_storage(c->w.fmt, c->w.symmetric), N, K);
    qt.q = c->w;
    int wq = is_f32_weight(c) ? w : kiln_emit(f, KILN_OP_QUANTIZE, &w, 1, qt, "wq");
    int p = kiln_emit(f, KILN_OP_PREPACK, &wq, 1, qt, "p");
    int ops[3] = {x, p, -1}, nops = 2;
    if (c->bias) {
        ops[2] = kiln_emit(f, KILN_OP_WEIGHT, NULL, 0, kiln_type1(KILN_F32, N), "b");
        kiln_set_str(f, kiln_last(f), "name", "layer.proj.bias");
        nops = 3;
    }
    int y = kiln_emit(f, KILN_OP_QGEMM, ops, nops, kiln_type2(c->out, M, N), "y");
    KilnInst *q = kiln_last(f);
    if (c->quant_act)
        kiln_set_spec(f, q, "act", &c->act);
    else
        kiln_set_ident(f, q, "act_dtype", kiln_dtype_name(c->act_dtype));
    kiln_set_ident(f, q, "epilogue", c->epi);
    kiln_emit(f, KILN_OP_RETURN, &y, 1, kiln_type2(c->out, M, N), NULL);
    return f;
}

static float out_at(KilnDType dt, const void *y, int64_t i)
{
    if (dt == KILN_F16)
        return kiln_f16_to_f32(((const uint16_t *)y)[i]);
    if (dt == KILN_BF16)
        return kiln_bf16_to_f32(((const uint16_t *)y)[i]);
    return ((const float *)y)[i];
}

static double host_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* Whether this CPU runs the kernels of target `name` (ir/target.h's table decides). */
static bool host_runs(const char *name)
{
    KilnTarget t;
    KilnDiag d = {0};
    return kiln_target_lookup(name, &t, &d) == 0 && kiln_target_host_runs(&t);
}

/* Compile one case for (N,K,target), run for each M, compare; returns failures. */
/* Every weight at the top code and every activation at the bottom one (asymmetric
 * u8 code 0, symmetric -127) instead of random data: the largest products the
 * integer kernels sum, e.g. u4s8-maddubs's 8 i16 pair sums of -3840 each. */
static bool extremes;
/* Weights over 2^0 .. 2^-23 (fp8: many codes subnormal), and every run repeated
 * with the caller's MXCSR in denormals-are-zero + flush-to-zero mode: y must not
 * change by a bit and the caller's MXCSR must be back afterwards. */
static bool wide_range;
static int64_t subnormal_codes;
/* Activation rows other than random (test_act_planes): 1 spans 2^0 .. 2^-47 inside
 * every block of k (the planes round what lies 2^29 below a block's largest); 2 puts
 * 1.0 at each 128-k block's start and 32639 * 2^-29 (digits d0 = d1 = 127) after it,
 * negated on odd rows: with `extremes` weights (|u - Z| = 255) the largest int32 T01
 * the planes kernel forms. */
static int act_pattern;

static float act_value(int64_t m, int64_t k)
{
    if (act_pattern == 1)
        return ldexpf(frand() < 0 ? -1.0f - 0.5f * frand() : 1.0f, -(int)(k % 48));
    float v = k % 128 == 0 ? 1.0f : ldexpf(32639.0f, -29);
    return m % 2 ? -v : v;
}

static int run_case(const Case *c, int64_t N, int64_t K, const char *target, const int64_t *Ms,
                    int nM, bool run, double *compile_ms)
{
    KilnModule *mod = kiln_module_new();
    KilnFunc *f = build_kernel(mod, c, 4, N, K, target);
    KilnDiag d = {0};
    KilnLayout l;
    assert_int_equal(kiln_layout_for(kiln_find_qgemm(f), f, &l, &d), 0);
    double t0 = host_ms();
    void *obj = NULL;
    size_t len = 0;
    int rc = kiln_cpu_emit_object(f, "qgemm_kernel", &obj, &len, &d);
    if (rc)
        fail_msg("%s: %s", c->name, d.msg);
    if (compile_ms)
        *compile_ms = host_ms() - t0;
    if (!run) {
        free(obj);
        kiln_module_free(mod);
        return 0;
    }
    KilnCpuJit *j;
    assert_int_equal(kiln_cpu_jit_new(&j, &d), 0);
    if (kiln_cpu_jit_add_object(j, obj, len, &d))
        fail_msg("%s", d.msg);
    void *fnp;
    if (kiln_cpu_jit_lookup(j, "qgemm_kernel", &fnp, &d))
        fail_msg("%s", d.msg);
    KilnQGemmFn fn = (KilnQGemmFn)fnp;

    Weights W = {N, K, malloc(sizeof(float) * (size_t)(N * K)), malloc(sizeof(float) * (size_t)N)};
    for (int64_t i = 0; i < N * K; i++)
        W.w[i] = extremes     ? 0.5f
               : wide_range ? ldexpf(frand() < 0 ? -1.0f - frand() * frand() : 1.0f, -(int)(i % 24))
                            : 0.5f * frand();
    for (int64_t i = 0; i < N; i++)
        W.bias[i] = frand();
    KilnType qt = kiln_type2(l.wdt, N, K);
    qt.q = c->w;
    KilnTensor wq;
    assert_int_equal(kiln_tensor_alloc(&wq, &qt), 0);
    float *deq = malloc(sizeof(float) * (size_t)(N * K));
    if (is_f32_weight(c)) {
        memcpy(wq.data, W.w, sizeof(float) * (size_t)(N * K));
        memcpy(deq, W.w, sizeof(float) * (size_t)(N * K));
    } else {
        assert_int_equal(kiln_quantize_matrix(&c->w, W.w, N, K, wq.data, wq.scales, wq.zeros, &d), 0);
        assert_int_equal(kiln_dequantize_matrix(&c->w, wq.data, wq.scales, wq.zeros, N, K, deq, &d), 0);
    }
    /* zero-by-sum layouts (docs/numerics.md) sum a*u and Z*a with u = q - z + Z:
     * their bound grows by Z*s per element, |dequantize(the lowest code)| */
    float *zs = NULL;
    if (l.zero_by_sum) {
        zs = malloc(sizeof(float) * (size_t)(N * K));
        assert_int_equal(kiln_layout_offset_magnitudes(&l, &wq, zs, &d), 0);
    }
    if (wide_range && (c->w.fmt == KILN_QF_FP8_E4M3 || c->w.fmt == KILN_QF_FP8_E5M2)) {
        bool e4 = c->w.fmt == KILN_QF_FP8_E4M3;
        for (int64_t i = 0; i < N * K; i++) {
            uint8_t code = ((const uint8_t *)wq.data)[i];
            subnormal_codes += e4 ? ((code >> 3 & 0xF) == 0 && (code & 7)) : ((code >> 2 & 0x1F) == 0 && (code & 3));
        }
    }
    void *blob = aligned_alloc(64, (l.pack_bytes + 63) & ~(size_t)63);
    assert_int_equal(kiln_prepack(&l, &wq, blob, &d), 0);

    int failures = 0;
    for (int mi = 0; mi < nM; mi++) {
        int64_t M = Ms[mi];
        KilnModule *mm = kiln_module_new();
        KilnFunc *fm = build_kernel(mm, c, M, N, K, target);
        KilnTensor xt;
        KilnType xty = kiln_type2(KILN_F32, M, K);
        kiln_tensor_alloc(&xt, &xty);
        float *x = xt.data;
        for (int64_t i = 0; i < M * K; i++)
            x[i] = act_pattern ? act_value(i / K, i % K)
                 : extremes ? -1.0f : frand() * (i % 37 == 0 ? 8.0f : 1.0f);
        if (M >= 3)
            memset(x + K, 0, sizeof(float) * (size_t)K); /* an all-zero row: scale 1 */
        KilnTensor ref;
        rc = kiln_interp_run(fm, &xt, 1, weight_fn, &W, &ref, &d);
        if (rc)
            fail_msg("interp %s: %s", c->name, d.msg);
        size_t osz = c->out == KILN_F32 ? 4 : 2;
        void *y = malloc(osz * (size_t)(M * N)), *y2 = malloc(osz * (size_t)(M * N));
        size_t sb = kiln_layout_scratch_bytes(&l, M);
        void *scratch = sb ? malloc(sb) : NULL;
        memset(y, 0xAB, osz * (size_t)(M * N));
        fn(x, M, blob, W.bias, y, 0, N, scratch);
        /* two calls split at a panel boundary */
        int64_t split = N > l.NR ? l.NR * ((N / l.NR + 1) / 2) : 0;
        memset(y2, 0xAB, osz * (size_t)(M * N));
        fn(x, M, blob, W.bias, y2, 0, split, scratch);
        fn(x, M, blob, W.bias, y2, split, N, scratch);
        if (wide_range) {
            unsigned caller = _mm_getcsr(), daz_ftz = caller | 0x8040;
            memset(y2, 0xAB, osz * (size_t)(M * N));
            _mm_setcsr(daz_ftz);
            fn(x, M, blob, W.bias, y2, 0, N, scratch);
            unsigned after = _mm_getcsr();
            _mm_setcsr(caller);
            if (after != daz_ftz || memcmp(y, y2, osz * (size_t)(M * N))) {
                failures++;
                print_error("%s M=%lld: under DAZ+FTZ y %s, MXCSR %#x after (set %#x)\n", c->name,
                            (long long)M, memcmp(y, y2, osz * (size_t)(M * N)) ? "differs" : "same",
                            after, daz_ftz);
            }
            memcpy(y2, y, osz * (size_t)(M * N));
        }
        for (int64_t i = 0; i < M * N; i++) {
            float r = out_at(c->out, ref.data, i), v = out_at(c->out, y, i), v2 = out_at(c->out, y2, i);
            double tol;
            if (is_int_path(c)) {
                tol = 4.0 * ldexp(fabs(r), -23) + 1e-30;
            } else {
                int64_t m = i / N, n = i % N;
                double s = 0;
                for (int64_t k = 0; k < K; k++)
                    s += fabs(x[m * K + k]) * (fabs(deq[n * K + k]) + (zs ? 2 * zs[n * K + k] : 0));
                tol = 1.2 * 2.0 * (double)K * ldexp(s, -23) + 1e-30;
                if (l.act_planes && M < l.planes_below_m) { /* A's rounding, ir/layout.h */
                    double s2 = 0, bmax = 0;
                    for (int64_t k = 0; k < K; k++) {
                        if (k % l.ablk == 0) /* the block's largest |x| */
                            for (int64_t kk = k, e = 0; kk < k + l.ablk; kk++, e = 1)
                                bmax = e ? fmax(bmax, fabs(x[m * K + kk])) : fabs(x[m * K + kk]);
                        s2 += bmax * fabs(deq[n * K + k]);
                    }
                    tol += ldexp(s2, -29);
                }
            }
            if (c->out == KILN_F16)
                tol += ldexp(fabs(r), -10) + ldexp(1, -24);
            else if (c->out == KILN_BF16)
                tol += ldexp(fabs(r), -7);
            if (!(fabs(v - r) <= tol) || !(fabs(v2 - r) <= tol)) {
                if (failures++ < 5)
                    print_error("%s [%s] M=%lld N=%lld K=%lld at (%lld,%lld): kernel %.9g split %.9g ref %.9g tol %.3g\n",
                                c->name, target, (long long)M, (long long)N, (long long)K,
                                (long long)(i / N), (long long)(i % N), v, v2, r, tol);
            }
        }
        free(y);
        free(y2);
        free(scratch);
        kiln_tensor_free(&ref);
        kiln_tensor_free(&xt);
        kiln_module_free(mm);
    }
    free(deq);
    free(zs);
    free(blob);
    kiln_tensor_free(&wq);
    free(W.w);
    free(W.bias);
    kiln_cpu_jit_free(j);
    free(obj);
    kiln_module_free(mod);
    return failures;
}

static const int64_t Ms[] = {1, 3, 16, 67};
static const int64_t Ns[] = {1, 7, 16, 33, 100};
static const int64_t Ks[] = {128, 256, 384};

static void test_avx2_all_recipes(void **state)
{
    int failures = 0;
    for (size_t ci = 0; ci < NCASES; ci++)
        for (int ni = 0; ni < 5; ni++) {
            int64_t K = Ks[(ni + ci) % 3];
            failures += run_case(&cases[ci], Ns[ni], K, "avx2", Ms, 4, true, NULL);
        }
    assert_int_equal(failures, 0);
}

static void test_avx2_all_k(void **state)
{
    /* every K for a representative of each family */
    static const size_t pick[] = {0, 6, 9, 12, 14};
    int failures = 0;
    for (size_t i = 0; i < sizeof pick / sizeof pick[0]; i++)
        for (int ki = 0; ki < 3; ki++)
            failures += run_case(&cases[pick[i]], 33, Ks[ki], "avx2", Ms, 4, true, NULL);
    assert_int_equal(failures, 0);
}

/* Ragged last group (docs/numerics.md): K = 576 = 4·128 + 64 (SmolLM2's hidden size)
 * at group 128, K = 200 = 3·64 + 8 at group 64, K = 80 = 2·32 + 16 at group 32:
 * ngroups = ceil(K/g), the tail has its own scale/zero. M = 67 takes the blocked
 * prefill path of the f32-fma family, M = 1, 3 the direct one. */
static const Case ragged[] = {
    {"w4a16 f32 / g128 asym", WS(INT4, false, GROUP, 128), false, {0}, KILN_F32, false, "none", KILN_F32},
    {"w4a16 f16 / g128 sym", WS(INT4, true, GROUP, 128), false, {0}, KILN_F16, true, "silu", KILN_F32},
    {"w4a8 g128 sym / dyn-token", WS(INT4, true, GROUP, 128), true, AD(INT8, true, TOKEN), KILN_F32, true, "none", KILN_F32},
    {"w4a8 g128 asym / dyn-token asym", WS(INT4, false, GROUP, 128), true, AD(INT8, false, TOKEN), KILN_F32, false, "gelu", KILN_F16},
    {"w4a16 bf16 / g64 asym", WS(INT4, false, GROUP, 64), false, {0}, KILN_BF16, false, "none", KILN_F32},
    {"w4a8 g64 asym / static asym", WS(INT4, false, GROUP, 64), true, AS(INT8, false, 0.009f, 120), KILN_F32, false, "none", KILN_F32},
    {"w8a8 g64 asym / dyn-token", WS(INT8, false, GROUP, 64), true, AD(INT8, true, TOKEN), KILN_F32, false, "none", KILN_F32},
    {"fp8 e4m3 g32 w8a8 token", WS(FP8_E4M3, true, GROUP, 32), true, AD(FP8_E4M3, true, TOKEN), KILN_F32, false, "none", KILN_F32},
    {"w8a16 f32 / g32 asym", WS(INT8, false, GROUP, 32), false, {0}, KILN_F32, true, "none", KILN_BF16},
};

static void test_avx2_ragged(void **state)
{
    static const int64_t rN[] = {7, 33};
    int failures = 0;
    for (size_t ci = 0; ci < sizeof ragged / sizeof ragged[0]; ci++) {
        int64_t g = ragged[ci].w.group, K = g == 128 ? 576 : g == 64 ? 200 : 80;
        for (int ni = 0; ni < 2; ni++)
            failures += run_case(&ragged[ci], rN[ni], K, "avx2", Ms, 4, true, NULL);
    }
    assert_int_equal(failures, 0);
    /* the ragged layout: 5 groups of which the last covers 64 k */
    KilnModule *mod = kiln_module_new();
    KilnFunc *f = build_kernel(mod, &ragged[0], 4, 16, 576, "avx2");
    KilnLayout l;
    KilnDiag d = {0};
    assert_int_equal(kiln_layout_for(kiln_find_qgemm(f), f, &l, &d), 0);
    assert_int_equal(l.ngroups, 5);
    assert_int_equal(l.group, 128);
    kiln_module_free(mod);
    /* the tail must be a multiple of the int4 block unit (8): K = 100 at group 128 is
     * one ragged group of 100; K = 132 at group 64 leaves a tail of 4 */
    static const int64_t badK[][2] = {{100, 128}, {132, 64}};
    for (int i = 0; i < 2; i++) {
        Case c = ragged[2];
        c.w.group = (int32_t)badK[i][1];
        mod = kiln_module_new();
        f = build_kernel(mod, &c, 2, 16, badK[i][0], "avx2");
        memset(&d, 0, sizeof d);
        assert_int_equal(kiln_layout_for(kiln_find_qgemm(f), f, &l, &d), KILN_EINPUT);
        char want[96];
        snprintf(want, sizeof want, "multiples of 8 (K = %lld, group = %lld, ragged last group of %lld)",
                 (long long)badK[i][0], (long long)badK[i][1], (long long)(badK[i][0] % badK[i][1]));
        if (!strstr(d.msg, want))
            fail_msg("got '%s', want '%s'", d.msg, want);
        kiln_module_free(mod);
    }
    /* VNNI (avx512, k-interleave 4): int8 weights at group 64 with K = 198 (tail 6) */
    Case c = ragged[6];
    mod = kiln_module_new();
    f = build_kernel(mod, &c, 2, 16, 198, "avx512");
    memset(&d, 0, sizeof d);
    assert_int_equal(kiln_layout_for(kiln_find_qgemm(f), f, &l, &d), KILN_EINPUT);
    assert_non_null(strstr(d.msg, "multiples of 4 (K = 198, group = 64, ragged last group of 6)"));
    kiln_module_free(mod);
    /* ...and K = 200 compiles for avx512 (assembly only: the host may lack it) */
    for (size_t ci = 0; ci < sizeof ragged / sizeof ragged[0]; ci++) {
        int64_t g = ragged[ci].w.group, K = g == 128 ? 576 : g == 64 ? 200 : 80;
        mod = kiln_module_new();
        f = build_kernel(mod, &ragged[ci], 4, 33, K, "avx512");
        char *as = NULL;
        if (kiln_cpu_emit_asm(f, "k512", &as, &d))
            fail_msg("%s avx512: %s", ragged[ci].name, d.msg);
        free(as);
        kiln_module_free(mod);
        const char *v4 = host_runs("avx512") ? "avx512" : host_runs("avx512vnni") ? "avx512vnni" : NULL;
        if (v4)
            failures += run_case(&ragged[ci], 33, K, v4, Ms, 4, true, NULL);
    }
    assert_int_equal(failures, 0);
}

/* int4 x int8 at the extremes of both codes: the i16 partial sums of
 * avx2-u4s8-maddubs come within 2047 of overflowing and must stay exact. */
static void test_int4_int8_extremes(void **state)
{
    (void)state;
    const int64_t Mx[] = {1, 5};
    int failures = 0;
    extremes = true;
    for (size_t ci = 0; ci < NCASES; ci++)
        if (is_int_path(&cases[ci]) && cases[ci].w.fmt == KILN_QF_INT4) {
            Case c = cases[ci]; /* the sums themselves in y: no epilogue to flatten them */
            c.bias = false, c.epi = "none", c.out = KILN_F32;
            failures += run_case(&c, 40, 1024, "avx2", Mx, 2, true, NULL);
        }
    extremes = false;
    assert_int_equal(failures, 0);
}

/* The CPU targets of ir/target.h's table: the ISA levels and the
 * microarchitectures (whose traits change some layouts). */
static int cpu_targets(KilnTarget *out, int max)
{
    int n, k = 0;
    const KilnTarget *t = kiln_targets(&n);
    for (int i = 0; i < n && k < max; i++)
        if (t[i].kind == KILN_TGT_CPU && t[i].level)
            out[k++] = t[i];
    return k;
}

static void layout_name(const Case *c, const char *target, char *name, size_t n)
{
    KilnModule *mod = kiln_module_new();
    KilnFunc *f = build_kernel(mod, c, 2, 16, 256, target);
    KilnLayout l;
    KilnDiag d = {0};
    if (kiln_layout_for(kiln_find_qgemm(f), f, &l, &d))
        fail_msg("%s on %s: %s", c->name, target, d.msg);
    snprintf(name, n, "%s", l.name);
    kiln_module_free(mod);
}

/* int4/fp8 weights read as f32 subnormals (the "-subnormal" layouts of targets
 * with the subnormal-free trait) and the portable decode (vcvtdq2ps / vcvtph2ps)
 * of the ISA levels, ir/layout.h: the values must count, on the direct (M < 8) and
 * the blocked (M >= 8) path, whatever the caller's MXCSR says. Every target the
 * host can execute runs; the others are compiled and their assembly checked. */
static void test_subnormal_weights(void **state)
{
    (void)state;
    const int64_t Mx[] = {1, 9};
    KilnTarget ts[8];
    int nt = cpu_targets(ts, 8), failures = 0, nfp8 = 0, nint4 = 0, nrun = 0;
    wide_range = true;
    subnormal_codes = 0;
    for (int ti = 0; ti < nt; ti++) {
        bool run = kiln_target_host_runs(&ts[ti]);
        if (!run)
            printf("[ SKIP ] running %s kernels: this CPU lacks its ISA level %s (assembly "
                   "checked only)\n", ts[ti].name, ts[ti].level);
        for (size_t ci = 0; ci < NCASES; ci++) {
            const Case *c = &cases[ci];
            bool fp8 = c->w.fmt == KILN_QF_FP8_E4M3 || c->w.fmt == KILN_QF_FP8_E5M2;
            bool int4 = c->w.fmt == KILN_QF_INT4 && !c->quant_act;
            bool int8 = c->w.fmt == KILN_QF_INT8 && !c->quant_act;
            if (!fp8 && !int4 && !int8)
                continue;
            /* the assembly shows which decode the layout promised */
            KilnModule *mod = kiln_module_new();
            KilnFunc *f = build_kernel(mod, c, 4, 33, 384, ts[ti].name);
            KilnLayout l;
            KilnDiag d = {0};
            char *as = NULL;
            if (kiln_layout_for(kiln_find_qgemm(f), f, &l, &d) ||
                kiln_cpu_emit_asm(f, "k", &as, &d))
                fail_msg("%s on %s: %s", c->name, ts[ti].name, d.msg);
            bool sub = (ts[ti].tune & KILN_TUNE_SUBNORMAL_FREE) && l.family != KILN_KF_BF16_DOT
                       ? true : l.subnormal_decode;
            assert_int_equal(l.subnormal_decode, sub);
            assert_int_equal(strstr(l.name, "-subnormal") != NULL, sub);
            /* the MXCSR guard exactly where subnormal weights are made */
            assert_int_equal(strstr(as, "ldmxcsr") != NULL, sub);
            if (!sub && fp8)
                assert_non_null(strstr(as, "vcvtph2ps"));
            if (!sub && (int4 || int8))
                assert_non_null(strstr(as, "vcvtdq2ps"));
            free(as);
            kiln_module_free(mod);
            if (run) {
                failures += run_case(c, 33, 384, ts[ti].name, Mx, 2, true, NULL);
                nfp8 += fp8;
                nint4 += int4;
                nrun++;
            }
        }
    }
    wide_range = false;
    printf("[ INFO ] %d (target, case) pairs run with subnormal-range weights\n", nrun);
    assert_true(nfp8 >= 8 && nint4 >= 4); /* both decodes of the host's level at least */
    assert_true(subnormal_codes > 1000); /* the case the test is about did occur */
    assert_int_equal(failures, 0);
}

/* int8 weight-only codes are read as column words of 4 k only when K and the group
 * are multiples of 4 (ir/layout.h int8_words); otherwise one byte per k,
 * sign-extended and converted, whatever the target's traits. */
static void test_int8_words(void **state)
{
    (void)state;
    static const int64_t Mx[] = {1, 5, 13};
    KilnTarget ts[8];
    int nt = cpu_targets(ts, 8), failures = 0;
    for (int ti = 0; ti < nt; ti++)
        for (int odd = 0; odd < 2; odd++) {
            Case c = cases[5]; /* w8a16 f16 / w channel */
            int64_t K = odd ? 198 : 200;
            KilnModule *mod = kiln_module_new();
            KilnFunc *f = build_kernel(mod, &c, 2, 24, K, ts[ti].name);
            KilnLayout l;
            KilnDiag d = {0};
            assert_int_equal(kiln_layout_for(kiln_find_qgemm(f), f, &l, &d), 0);
            assert_int_equal(l.int8_words, !odd);
            assert_int_equal(l.subnormal_decode, !odd && (ts[ti].tune & KILN_TUNE_SUBNORMAL_FREE));
            assert_int_equal(l.zero_by_sum, !odd);
            kiln_module_free(mod);
            if (kiln_target_host_runs(&ts[ti]))
                failures += run_case(&c, 24, K, ts[ti].name, Mx, 3, true, NULL);
        }
    assert_int_equal(failures, 0);
}

/* Decode rows on VNNI (act_planes, ir/layout.h): which layouts take them and their
 * block of k; the v4 kernels carry vpdpbusd for weight-only codes (assembly); and where
 * the host runs a v4 level, rows 1, 2 (planes: M < planes_below_m), 3, 7 (the MR-row
 * f32 tile) and 8 (the blocked f32 path) against
 * the interpreter on random rows, rows spanning 2^0 .. 2^-47 per block, and the
 * int32-headroom rows with every weight at |u - Z| = 255. */
static void test_act_planes(void **state)
{
    (void)state;
    static const int64_t Mp[] = {1, 2, 3, 7, 8};
    static const Case asym8 = {"w8a16 f32 / w asym channel", WS(INT8, false, CHANNEL, 0), false, {0}, KILN_F32, false, "none", KILN_F32};
    /* case, K, whether the v4 layout takes planes, its block */
    static const struct { int ci; int64_t K; bool planes; int64_t ablk; } lay[] = {
        {5, 256, true, 128}, {5, 200, false, 0}, {7, 576, true, 64}, {8, 256, true, 32},
        {9, 200, false, 0}, {9, 256, true, 64}, {10, 576, true, 64}, {0, 256, false, 0}, {16, 256, false, 0},
        {18, 256, false, 0}, {11, 256, false, 0},
    };
    KilnTarget ts[8];
    int nt = cpu_targets(ts, 8), failures = 0;
    for (int ti = 0; ti < nt; ti++)
        for (size_t i = 0; i < sizeof lay / sizeof lay[0]; i++) {
            KilnModule *mod = kiln_module_new();
            KilnFunc *f = build_kernel(mod, &cases[lay[i].ci], 1, 40, lay[i].K, ts[ti].name);
            KilnLayout l;
            KilnDiag d = {0};
            assert_int_equal(kiln_layout_for(kiln_find_qgemm(f), f, &l, &d), 0);
            /* bf16 activations go to vdpbf16ps where the level has it */
            bool v4 = kiln_level_is_v4(ts[ti].level) &&
                      !(cases[lay[i].ci].act_dtype == KILN_BF16 && kiln_level_has_bf16(ts[ti].level));
            if (l.act_planes != (v4 && lay[i].planes))
                fail_msg("%s K=%lld on %s: act_planes %d", cases[lay[i].ci].name, (long long)lay[i].K,
                         ts[ti].name, l.act_planes);
            if (l.act_planes) {
                assert_int_equal(l.ablk, lay[i].ablk);
                assert_true(l.planes_below_m >= 2 && l.planes_below_m <= l.blocked_min_m);
                assert_int_equal(l.nablk * l.ablk, l.K);
                assert_true(l.scratch_per_row >= l.meta_off + 16 * (size_t)l.nablk);
                char *as = NULL;
                assert_int_equal(kiln_cpu_emit_asm(f, "k", &as, &d), 0);
                assert_non_null(strstr(as, "vpdpbusd"));
                free(as);
            }
            kiln_module_free(mod);
        }
    const char *v4 = host_runs("avx512") ? "avx512" : host_runs("avx512vnni") ? "avx512vnni" : NULL;
    if (!v4) {
        KilnTarget vt;
        KilnDiag d = {0};
        assert_int_equal(kiln_target_lookup("avx512vnni", &vt, &d), 0);
        printf("[ SKIP ] running the planes rows (assembly checked only): avx512vnni: %s\n",
               kiln_target_cannot_run(&vt));
        return;
    }
    for (act_pattern = 0; act_pattern < 3; act_pattern++) {
        extremes = act_pattern == 2;
        for (size_t i = 0; i < sizeof lay / sizeof lay[0]; i++)
            if (lay[i].planes && act_pattern < 2)
                failures += run_case(&cases[lay[i].ci], 33, lay[i].K, v4, Mp, 5, true, NULL);
        if (act_pattern == 2)
            failures += run_case(&asym8, 40, 256, v4, Mp, 5, true, NULL);
    }
    act_pattern = 0;
    extremes = false;
    assert_int_equal(failures, 0);
}

/* Decode batches (M = 2..7): blocked f32-fma layouts run them on the MR-row
 * tile, the 2 or 3 rows left over on that tile with its missing rows repeating
 * the last row (docs/jit-aot.md); act_planes layouts below planes_below_m rows
 * row by row on byte planes, from there on the MR tile too. Every case on
 * every CPU target the host runs, against the interpreter; the others are
 * compiled and asm-checked by test_avx512 / test_tuned_targets. */
static void test_decode_batches(void **state)
{
    (void)state;
    static const int64_t Mb[] = {2, 4, 5, 6, 7};
    KilnTarget ts[8];
    int nt = cpu_targets(ts, 8), failures = 0;
    for (int ti = 0; ti < nt; ti++) {
        if (!kiln_target_host_runs(&ts[ti])) {
            printf("[ SKIP ] decode batches on %s (compiled elsewhere): %s\n", ts[ti].name,
                   kiln_target_cannot_run(&ts[ti]));
            continue;
        }
        for (size_t ci = 0; ci < NCASES; ci++)
            failures += run_case(&cases[ci], ci % 2 ? 40 : 33, ci % 3 ? 128 : 200, ts[ti].name, Mb, 5, true, NULL);
    }
    assert_int_equal(failures, 0);
}

/* The decode loops prefetch the weight stream in software unless the target's
 * weights sit in huge pages (KILN_TUNE_HUGEPAGE_WEIGHTS, the host's trait where THP
 * is on AMD), 4 KiB ahead instead of 1 KiB with KILN_TUNE_FAR_PREFETCH (Intel hosts):
 * the kernel IR's tune attr decides, and the layout name does not change. */
static void test_prefetch_trait(void **state)
{
    (void)state;
    static const size_t pick[] = {0, 5, 8, 11, 14}; /* vnni/madd, int8 words, int4, w4a8, fp8 */
    static const char *const tunes[] = {NULL, "hugepage-weights", "far-prefetch"};
    for (size_t i = 0; i < sizeof pick / sizeof pick[0]; i++) {
        char *plain = NULL;
        for (int v = 0; v < 3; v++) {
            KilnModule *mod = kiln_module_new();
            KilnFunc *f = build_kernel(mod, &cases[pick[i]], 1, 64, 256, "avx512");
            if (tunes[v])
                kiln_fset_str(f, "tune", tunes[v]);
            KilnLayout l;
            KilnDiag d = {0};
            char *as = NULL;
            bool huge = v == 1;
            assert_int_equal(kiln_layout_for(kiln_find_qgemm(f), f, &l, &d), 0);
            assert_int_equal(l.sw_prefetch, !huge);
            assert_int_equal(l.pf_ahead, v == 2 ? KILN_PF_AHEAD_FAR : KILN_PF_AHEAD);
            assert_int_equal(l.pf_l2, v == 2);
            assert_int_equal(kiln_cpu_emit_asm(f, "k", &as, &d), 0);
            /* far-prefetch prefetches into L2 (prefetcht1), the rest into L1 */
            const char *insn = v == 2 ? "prefetcht1" : "prefetcht0";
            if ((strstr(as, insn) != NULL) != !huge)
                fail_msg("%s, tune %s: %s %s", cases[pick[i]].name,
                         tunes[v] ? tunes[v] : "(none)", insn, huge ? "present" : "missing");
            if (v == 0)
                plain = as;
            else if (v == 2 && !strcmp(as, plain)) /* the distance reached the code */
                fail_msg("%s: far-prefetch compiled to the same code as 1 KiB", cases[pick[i]].name);
            if (v)
                free(as);
            kiln_module_free(mod);
        }
        free(plain);
    }
}

/* Every case on the microarchitecture targets whose layout differs from their ISA
 * level's (the rest compile to the same kernel, run by the level's tests), on the
 * test shapes: run where the host can, else the assembly is compiled. */
static void test_tuned_targets(void **state)
{
    (void)state;
    KilnTarget ts[8];
    int nt = cpu_targets(ts, 8), failures = 0, ndiff = 0;
    for (int ti = 0; ti < nt; ti++) {
        if (!ts[ti].tune)
            continue;
        bool run = kiln_target_host_runs(&ts[ti]);
        if (!run)
            printf("[ SKIP ] running %s kernels: this CPU lacks its ISA level %s (assembly "
                   "checked in test_subnormal_weights)\n", ts[ti].name, ts[ti].level);
        for (size_t ci = 0; ci < NCASES; ci++) {
            char a[64], b[64];
            layout_name(&cases[ci], ts[ti].name, a, sizeof a);
            layout_name(&cases[ci], ts[ti].level, b, sizeof b);
            if (!strcmp(a, b))
                continue;
            ndiff++;
            for (int ni = 0; run && ni < 5; ni++)
                failures += run_case(&cases[ci], Ns[ni], Ks[(ni + ci) % 3], ts[ti].name, Ms, 4,
                                     true, NULL);
        }
    }
    /* zen3: 3 int4 weight-only + 3 int8 weight-only + 4 fp8 cases; zen4 the same but
     * w4a16 and w8a16 with bf16 activations (bf16-dot reads integers either way) */
    printf("[ INFO ] %d (microarchitecture, case) pairs differ from their ISA level's\n", ndiff);
    assert_int_equal(ndiff, 18);
    assert_int_equal(failures, 0);
}

/* One x86-64-v4 level: every case's assembly (zmm, vpdpbusd for int8 activations,
 * vdpbf16ps for bf16 activations only where the level has AVX512-BF16, and then never
 * for f32 weights), and the kernels run where the host can. */
static int v4_level(const char *level)
{
    bool run = host_runs(level), bf16 = kiln_level_has_bf16(level);
    if (!run)
        printf("[ SKIP ] running %s kernels: this CPU lacks its ISA (assembly checked only)\n",
               level);
    int failures = 0;
    for (size_t ci = 0; ci < NCASES; ci++) {
        const Case *c = &cases[ci];
        KilnModule *mod = kiln_module_new();
        KilnFunc *f = build_kernel(mod, c, 4, 100, 256, level);
        KilnDiag d = {0};
        char *as = NULL;
        if (kiln_cpu_emit_asm(f, "k512", &as, &d))
            fail_msg("%s on %s: %s", c->name, level, d.msg);
        assert_non_null(strstr(as, "zmm"));
        if (is_int_path(c))
            assert_non_null(strstr(as, "vpdpbusd"));
        bool dot = bf16 && !c->quant_act && c->act_dtype == KILN_BF16 && !is_f32_weight(c);
        if (dot)
            assert_non_null(strstr(as, "vdpbf16ps"));
        else if (!bf16 || is_f32_weight(c)) /* no BF16 in the ISA; f32 weights not exact in bf16 */
            assert_null(strstr(as, "bf16"));
        free(as);
        kiln_module_free(mod);
        if (run)
            for (int ni = 0; ni < 5; ni++)
                failures += run_case(c, Ns[ni], Ks[(ni + ci) % 3], level, Ms, 4, true, NULL);
    }
    return failures;
}

/* avx512vnni (Cascade/Ice Lake: no BF16) and avx512 (VNNI + BF16). */
static void test_avx512(void **state)
{
    (void)state;
    int failures = v4_level("avx512vnni");
    failures += v4_level("avx512");
    assert_int_equal(failures, 0);
}

static void test_avx2_asm(void **state)
{
    KilnModule *mod = kiln_module_new();
    KilnFunc *f = build_kernel(mod, &cases[0], 4, 64, 256, "avx2");
    KilnDiag d = {0};
    char *as = NULL;
    assert_int_equal(kiln_cpu_emit_asm(f, "k", &as, &d), 0);
    assert_non_null(strstr(as, "vpmaddwd"));
    assert_non_null(strstr(as, "ymm"));
    assert_null(strstr(as, "zmm"));
    free(as);
    kiln_module_free(mod);
    mod = kiln_module_new();
    f = build_kernel(mod, &cases[8], 4, 64, 256, "avx2");
    assert_int_equal(kiln_cpu_emit_asm(f, "k", &as, &d), 0);
    assert_non_null(strstr(as, "vfmadd"));
    assert_non_null(strstr(as, "vcvtps2ph")); /* f16 activation rounding through F16C */
    free(as);
    kiln_module_free(mod);
}

/* Cold compile (IR build + O2 + object) and JIT load times, object sizes. */
static void test_compile_time(void **state)
{
    static const size_t pick[] = {0, 9, 12, 14, F32_CASE};
    for (size_t i = 0; i < sizeof pick / sizeof pick[0]; i++) {
        const Case *c = &cases[pick[i]];
        KilnModule *mod = kiln_module_new();
        KilnFunc *f = build_kernel(mod, c, 16, 4096, 4096, "avx2");
        KilnDiag d = {0};
        double t0 = host_ms();
        void *obj;
        size_t len;
        assert_int_equal(kiln_cpu_emit_object(f, "qgemm_kernel", &obj, &len, &d), 0);
        double t1 = host_ms();
        KilnCpuJit *j;
        void *fn;
        assert_int_equal(kiln_cpu_jit_new(&j, &d), 0);
        assert_int_equal(kiln_cpu_jit_add_object(j, obj, len, &d), 0);
        assert_int_equal(kiln_cpu_jit_lookup(j, "qgemm_kernel", &fn, &d), 0);
        double t2 = host_ms();
        assert_non_null(fn);
        /* one warm single-thread run of M=16 for a throughput figure */
        KilnLayout l;
        assert_int_equal(kiln_layout_for(kiln_find_qgemm(f), f, &l, &d), 0);
        KilnType qt = kiln_type2(l.wdt, 4096, 4096);
        qt.q = c->w;
        KilnTensor wq;
        assert_int_equal(kiln_tensor_alloc(&wq, &qt), 0);
        void *blob = malloc(l.pack_bytes);
        assert_int_equal(kiln_prepack(&l, &wq, blob, &d), 0);
        float *x = calloc(16 * 4096, sizeof(float)), *y = calloc(16 * 4096, sizeof(float));
        void *scratch = malloc(kiln_layout_scratch_bytes(&l, 16) + 1);
        ((KilnQGemmFn)fn)(x, 16, blob, x, y, 0, 4096, scratch); /* x doubles as a zero bias */
        double t3 = host_ms();
        ((KilnQGemmFn)fn)(x, 16, blob, x, y, 0, 4096, scratch); /* x doubles as a zero bias */
        double run_ms = host_ms() - t3;
        printf("[ TIME ] %-36s N=K=4096 avx2: compile %.1f ms, JIT load %.2f ms, object %zu B, "
               "M=16 run %.2f ms (%.1f GOP/s, 1 thread)\n", c->name, t1 - t0, t2 - t1, len, run_ms,
               2.0 * 16 * 4096 * 4096 / (run_ms * 1e6));
        free(x);
        free(y);
        free(scratch);
        free(blob);
        kiln_tensor_free(&wq);
        kiln_cpu_jit_free(j);
        free(obj);
        kiln_module_free(mod);
    }
}

/* The object bytes alone are enough: a fresh JIT in a fresh state runs them. */
static void test_object_roundtrip(void **state)
{
    KilnModule *mod = kiln_module_new();
    KilnFunc *f = build_kernel(mod, &cases[7], 2, 16, 128, "avx2");
    KilnDiag d = {0};
    void *obj;
    size_t len;
    assert_int_equal(kiln_cpu_emit_object(f, "roundtrip", &obj, &len, &d), 0);
    assert_true(len > 4 && memcmp(obj, "\x7f" "ELF", 4) == 0);
    KilnCpuJit *j;
    assert_int_equal(kiln_cpu_jit_new(&j, &d), 0);
    assert_int_equal(kiln_cpu_jit_add_object(j, obj, len, &d), 0);
    void *fn;
    assert_int_equal(kiln_cpu_jit_lookup(j, "roundtrip", &fn, &d), 0);
    void *nofn;
    assert_int_not_equal(kiln_cpu_jit_lookup(j, "missing_symbol", &nofn, &d), 0);
    assert_non_null(strstr(d.msg, "missing_symbol"));
    /* a hand-made weight: all codes 1, scale 0.5 -> y = 0.5 * sum(x) */
    KilnLayout l;
    assert_int_equal(kiln_layout_for(kiln_find_qgemm(f), f, &l, &d), 0);
    KilnType qt = kiln_type2(KILN_I8, 16, 128);
    qt.q = cases[7].w;
    KilnTensor wq;
    kiln_tensor_alloc(&wq, &qt);
    memset(wq.data, 1, 16 * 128);
    wq.scales[0] = 0.5f;
    void *blob = malloc(l.pack_bytes);
    assert_int_equal(kiln_prepack(&l, &wq, blob, &d), 0);
    float x[2 * 128], y[2 * 16];
    for (int i = 0; i < 256; i++)
        x[i] = i < 128 ? 1.0f : -0.25f;
    void *scratch = malloc(kiln_layout_scratch_bytes(&l, 2) + 1);
    ((KilnQGemmFn)fn)(x, 2, blob, NULL, y, 0, 16, scratch);
    for (int n = 0; n < 16; n++) {
        assert_float_equal(y[n], 64.0f, 0);
        assert_float_equal(y[16 + n], -16.0f, 0);
    }
    free(scratch);
    free(blob);
    kiln_tensor_free(&wq);
    kiln_cpu_jit_free(j);
    free(obj);
    kiln_module_free(mod);
    assert_non_null(kiln_cpu_llvm_version());
    assert_int_equal(strncmp(kiln_cpu_llvm_version(), "16.", 3), 0);
}

static void test_bad_kernel_ir(void **state)
{
    KilnDiag d = {0};
    void *obj = NULL;
    size_t len;
    /* no qgemm */
    KilnModule *mod = kiln_module_new();
    KilnFunc *f = kiln_func_new(mod, "empty");
    kiln_fset_ident(f, "target", "avx2");
    int x = kiln_func_param(f, "x", kiln_type2(KILN_F32, 2, 8));
    kiln_emit(f, KILN_OP_RETURN, &x, 1, kiln_type2(KILN_F32, 2, 8), NULL);
    assert_int_equal(kiln_cpu_emit_object(f, "k", &obj, &len, &d), KILN_EINPUT);
    assert_non_null(strstr(d.msg, "no qgemm"));
    kiln_module_free(mod);
    /* unknown target */
    mod = kiln_module_new();
    f = build_kernel(mod, &cases[0], 2, 16, 128, "avx9000");
    memset(&d, 0, sizeof d);
    assert_int_equal(kiln_cpu_emit_object(f, "k", &obj, &len, &d), KILN_EINPUT);
    assert_non_null(strstr(d.msg, "avx9000"));
    kiln_module_free(mod);
    /* int8 activations with an fp8 weight */
    Case bad = cases[0];
    bad.w = (KilnQuantSpec)WS(FP8_E4M3, true, CHANNEL, 0);
    mod = kiln_module_new();
    f = build_kernel(mod, &bad, 2, 16, 128, "avx2");
    memset(&d, 0, sizeof d);
    assert_int_equal(kiln_cpu_emit_object(f, "k", &obj, &len, &d), KILN_EINPUT);
    assert_non_null(strstr(d.msg, "fp8"));
    kiln_module_free(mod);
    /* K not a multiple of the k-interleave (vnni needs 4) */
    bad = cases[0];
    mod = kiln_module_new();
    f = build_kernel(mod, &bad, 2, 16, 130, "avx512");
    memset(&d, 0, sizeof d);
    assert_int_equal(kiln_cpu_emit_object(f, "k", &obj, &len, &d), KILN_EINPUT);
    assert_non_null(strstr(d.msg, "multiples of 4"));
    kiln_module_free(mod);
    /* prepack of a mismatched tensor */
    mod = kiln_module_new();
    f = build_kernel(mod, &cases[0], 2, 16, 128, "avx2");
    KilnLayout l;
    assert_int_equal(kiln_layout_for(kiln_find_qgemm(f), f, &l, &d), 0);
    KilnType qt = kiln_type2(KILN_I8, 8, 128);
    qt.q = cases[0].w;
    KilnTensor wq;
    kiln_tensor_alloc(&wq, &qt);
    char blob[64];
    assert_int_equal(kiln_prepack(&l, &wq, blob, &d), KILN_EINPUT);
    kiln_tensor_free(&wq);
    kiln_module_free(mod);
}

/* Unquantized layers: f32 weights through the f32-fma kernel, odd K (KR = 1), odd N,
 * M with a remainder under the 4-row block; the `layout` attr must be the kernel's. */
static void test_f32_weights(void **state)
{
    assert_string_equal(cases[F32_CASE].name, "f32 weights f32 acts / bias gelu");
    static const int64_t Ms13[] = {1, 3, 23, 67};
    static const int64_t Nodd[] = {1, 17, 45};
    int failures = 0;
    for (size_t ci = F32_CASE; ci < NCASES; ci++)
        for (int ni = 0; ni < 3; ni++)
            failures += run_case(&cases[ci], Nodd[ni], ni == 1 ? 63 : 200, "avx2", Ms13, 4, true, NULL);
    assert_int_equal(failures, 0);

    KilnModule *mod = kiln_module_new();
    KilnFunc *f = build_kernel(mod, &cases[F32_CASE], 4, 40, 64, "avx2");
    KilnInst *q = (KilnInst *)kiln_find_qgemm(f);
    KilnDiag d = {0};
    KilnLayout l;
    assert_int_equal(kiln_layout_for(q, f, &l, &d), 0);
    assert_string_equal(l.name, "avx2-f32-fma");
    assert_int_equal(l.wdt, KILN_F32);
    assert_int_equal(l.scales_off, 0);
    assert_int_equal(l.zeros_off, 0);
    assert_int_equal(l.scratch_per_row, 0); /* f32 acts: the kernel reads x */
    assert_false(l.blocked);
    /* 40 columns -> 3 panels of 16, 64 f32 each column: 3 * 16 * 64 * 4 bytes + header */
    assert_int_equal(l.pack_bytes, 64 + 3 * 16 * 64 * 4);
    char *as = NULL;
    assert_int_equal(kiln_cpu_emit_asm(f, "k", &as, &d), 0);
    assert_non_null(strstr(as, "vfmadd"));
    free(as);
    /* a hand-made check of the packing: w[n][k] = n + k/1000, x = e_k -> y = w[:,k] */
    KilnType wt = kiln_type2(KILN_F32, 40, 64);
    KilnTensor w;
    assert_int_equal(kiln_tensor_alloc(&w, &wt), 0);
    for (int n = 0; n < 40; n++)
        for (int k = 0; k < 64; k++)
            ((float *)w.data)[n * 64 + k] = (float)n + (float)k / 1000.0f;
    void *blob = malloc(l.pack_bytes);
    assert_int_equal(kiln_prepack(&l, &w, blob, &d), 0);
    float pv;
    memcpy(&pv, (char *)blob + 64 + ((size_t)5 * 16 + 3) * 4, 4); /* panel 0, k 5, column 3 */
    assert_float_equal(pv, 3.005f, 0);
    memcpy(&pv, (char *)blob + 64 + (size_t)16 * 64 * 4 * 2 + ((size_t)7 * 16 + 9) * 4, 4);
    assert_float_equal(pv, 0.0f, 0); /* column 41 of panel 2 is padding */
    /* a quantized tensor does not fit an f32 layout */
    KilnType it = kiln_type2(KILN_I8, 40, 64);
    it.q = cases[0].w;
    KilnTensor wi;
    kiln_tensor_alloc(&wi, &it);
    assert_int_equal(kiln_prepack(&l, &wi, blob, &d), KILN_EINPUT);
    kiln_tensor_free(&wi);
    free(blob);
    kiln_tensor_free(&w);

    /* a layout attr that is not what the code generator makes is an error */
    kiln_set_str(f, q, "layout", "avx2-f32-fma-dequant");
    assert_int_equal(kiln_layout_for(q, f, &l, &d), KILN_EINPUT);
    assert_non_null(strstr(d.msg, "qgemm layout 'avx2-f32-fma-dequant' but the code generator "
                                  "makes 'avx2-f32-fma' for this target"));
    kiln_set_str(f, q, "layout", "avx2-f32-fma");
    assert_int_equal(kiln_layout_for(q, f, &l, &d), 0);
    /* f32 weights with quantized activations: no kernel */
    kiln_set_spec(f, q, "act", &cases[0].act);
    assert_int_equal(kiln_layout_for(q, f, &l, &d), KILN_EINPUT);
    assert_non_null(strstr(d.msg, "f32 (unquantized) weights"));
    kiln_module_free(mod);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bad_kernel_ir),
        cmocka_unit_test(test_object_roundtrip),
        cmocka_unit_test(test_avx2_asm),
        cmocka_unit_test(test_avx2_all_recipes),
        cmocka_unit_test(test_avx2_all_k),
        cmocka_unit_test(test_avx2_ragged),
        cmocka_unit_test(test_f32_weights),
        cmocka_unit_test(test_int4_int8_extremes),
        cmocka_unit_test(test_subnormal_weights),
        cmocka_unit_test(test_tuned_targets),
        cmocka_unit_test(test_int8_words),
        cmocka_unit_test(test_act_planes),
        cmocka_unit_test(test_decode_batches),
        cmocka_unit_test(test_prefetch_trait),
        cmocka_unit_test(test_avx512),
        cmocka_unit_test(test_compile_time),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
