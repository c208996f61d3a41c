/* tests/test_amx_bf16.c — the amx-bf16-tile layout (issue 16): weight-only int4/int8/fp8
 * layers with bf16 activations and fp8 x fp8 layers on tdpbf16ps tiles. The tile kernels
 * run on the scalar tile model everywhere avx512 runs, against the reference
 * interpreter; where `kiln targets` says amx runs here the real AMX kernels run too
 * (tiles, and the decode rows of the same kernel below the break-even); elsewhere they
 * are compiled and their assembly checked, saying why.
 *
 * Tolerance: the float paths' bound of tests/test_cpu_codegen.c (docs/numerics.md):
 * |y - ref| <= 1.2 * 2 * K * 2^-23 * sum_k |x_k| |deqW_k|, plus one ulp of an f16/bf16
 * output. bf16 activations are rounded from x on both sides (the interpreter rounds
 * them too), fp8 activations are quantized on both sides; products are exact, only the
 * f32 sums differ in order. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include <cmocka.h>

#include "codegen/cpu/cpu.h"
#include "ir/amx_model.h"
#include "ir/interp.h"
#include "ir/layout.h"
#include "ir/numerics.h"
#include "ir/target.h"
#include "runtime/aot_layout.h"
#include "runtime/runtime.h"

typedef struct Case {
    const char *name;
    KilnQuantSpec w;
    bool quant_act; /* fp8 x fp8: act is the activation spec; else bf16 activations */
    KilnQuantSpec act;
    bool bias;
    const char *epi;
    KilnDType out;
} Case;

#define W(f, s, g, grp) {.fmt = KILN_QF_##f, .symmetric = s, .gran = KILN_GRAN_##g, .group = grp}
#define AD(f, g) {.fmt = KILN_QF_##f, .symmetric = true, .gran = KILN_GRAN_##g, .dynamic = true}
#define AS(f, sc) {.fmt = KILN_QF_##f, .symmetric = true, .gran = KILN_GRAN_TENSOR, .scale = sc}

static const Case cases[] = {
    {"w4a16 bf16 / int4 g128 asym", W(INT4, false, GROUP, 128), false, {0}, false, "none", KILN_F32},
    {"w4a16 bf16 / int4 g32 sym, bias, silu, bf16 out", W(INT4, true, GROUP, 32), false, {0}, true, "silu", KILN_BF16},
    {"w8a16 bf16 / int8 channel sym", W(INT8, true, CHANNEL, 0), false, {0}, false, "none", KILN_F32},
    {"w8a16 bf16 / int8 channel asym, gelu, f16 out", W(INT8, false, CHANNEL, 0), false, {0}, true, "gelu", KILN_F16},
    {"fp8 e4m3 weight-only bf16 / channel", W(FP8_E4M3, true, CHANNEL, 0), false, {0}, true, "none", KILN_F32},
    {"fp8 e5m2 weight-only bf16 / tensor", W(FP8_E5M2, true, TENSOR, 0), false, {0}, false, "silu", KILN_F32},
    {"fp8 e4m3 x e4m3 dyn-token / channel", W(FP8_E4M3, true, CHANNEL, 0), true, AD(FP8_E4M3, TOKEN), true, "none", KILN_F32},
    {"fp8 e5m2 x e5m2 dyn-tensor / group 64", W(FP8_E5M2, true, GROUP, 64), true, AD(FP8_E5M2, TENSOR), false, "none", KILN_F32},
    {"fp8 e4m3 x e4m3 static / channel, bf16 out", W(FP8_E4M3, true, CHANNEL, 0), true, AS(FP8_E4M3, 0.004f), false, "gelu", KILN_BF16},
};
#define NCASES (sizeof cases / sizeof cases[0])

static bool host_amx(void)
{
    KilnDiag d = {0};
    return (kiln_host_isa() & (KILN_ISA_V4 | KILN_ISA_AMX)) == (KILN_ISA_V4 | KILN_ISA_AMX) &&
           kiln_host_amx_enable(&d) == 0;
}

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static float frand(void)
{
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((rng >> 33) % 2000001) / 1000000.0f - 1.0f;
}

typedef struct Weights {
    int64_t N, K;
    float *w, *bias;
} Weights;

static int weight_fn(void *ctx, const char *name, KilnTensor *out, KilnDiag *d)
{
    (void)d;
    Weights *W = ctx;
    bool b = strstr(name, "bias") != NULL;
    memcpy(out->data, b ? W->bias : W->w, sizeof(float) * (size_t)(b ? W->N : W->N * W->K));
    return 0;
}

/* weight -> quantize -> prepack -> qgemm as the passes leave it; min_m < 0: no tiles. */
static KilnFunc *build_kernel(KilnModule *mod, const Case *c, int64_t M, int64_t N, int64_t K,
                              const char *target, int64_t min_m, const char *tiles)
{
    KilnFunc *f = kiln_func_new(mod, "layer.proj");
    kiln_fset_ident(f, "target", target);
    if (tiles)
        kiln_fset_str(f, "tiles", tiles);
    int x = kiln_func_param(f, "x", kiln_type2(KILN_F32, M, K));
    int w = kiln_emit(f, KILN_OP_WEIGHT, NULL, 0, kiln_type2(KILN_F32, N, K), "w");
    kiln_set_str(f, kiln_last(f), "name", "layer.proj.weight");
    KilnType qt = kiln_type2(kiln_qformat_storage(c->w.fmt, c->w.symmetric), N, K);
    qt.q = c->w;
    int wq = kiln_emit(f, KILN_OP_QUANTIZE, &w, 1, qt, "wq");
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
        kiln_set_ident(f, q, "act_dtype", "bf16");
    kiln_set_ident(f, q, "epilogue", c->epi);
    if (min_m >= 0)
        kiln_set_int(f, q, "amx_min_m", min_m);
    kiln_emit(f, KILN_OP_RETURN, &y, 1, kiln_type2(c->out, M, N), NULL);
    return f;
}

typedef struct Compiled {
    KilnLayout l;
    KilnCpuJit *j;
    KilnQGemmFn fn;
} Compiled;

static void compile(const Case *c, int64_t N, int64_t K, int64_t min_m, const char *tiles,
                    Compiled *out)
{
    KilnModule *mod = kiln_module_new();
    KilnFunc *f = build_kernel(mod, c, 1, N, K, "amx", min_m, tiles);
    KilnDiag d = {0};
    void *obj = NULL, *fnp = NULL;
    size_t len = 0;
    if (kiln_layout_for(kiln_find_qgemm(f), f, &out->l, &d) ||
        kiln_cpu_emit_object(f, "qgemm_kernel", &obj, &len, &d) || kiln_cpu_jit_new(&out->j, &d) ||
        kiln_cpu_jit_add_object(out->j, obj, len, &d) ||
        kiln_cpu_jit_lookup(out->j, "qgemm_kernel", &fnp, &d))
        fail_msg("%s (N=%lld K=%lld): %s", c->name, (long long)N, (long long)K, d.msg);
    out->fn = (KilnQGemmFn)fnp;
    free(obj);
    kiln_module_free(mod);
}

static size_t out_size(KilnDType dt) { return dt == KILN_F32 ? 4 : 2; }

static float out_at(KilnDType dt, const void *y, int64_t i)
{
    if (dt == KILN_F16)
        return kiln_f16_to_f32(((const uint16_t *)y)[i]);
    if (dt == KILN_BF16)
        return kiln_bf16_to_f32(((const uint16_t *)y)[i]);
    return ((const float *)y)[i];
}

/* y of one call split in two at a panel boundary (as threads split columns); the
 * scratch starts as garbage (the pad rows and the dequantized panel are the kernel's). */
static void *call(const Compiled *k, const float *x, int64_t M, const void *blob, const float *bias)
{
    const KilnLayout *l = &k->l;
    size_t osz = out_size(l->out_dt) * (size_t)(M * l->N), sb = kiln_layout_scratch_bytes(l, M);
    void *y = malloc(osz), *scratch = malloc(sb);
    memset(y, 0xAB, osz);
    memset(scratch, 0xCD, sb);
    int64_t split = l->N > l->NR ? l->NR * ((l->N / l->NR + 1) / 2) : l->N;
    k->fn(x, M, blob, bias, y, 0, split, scratch);
    if (split < l->N)
        k->fn(x, M, blob, bias, y, split, l->N, scratch);
    free(scratch);
    return y;
}

/* How many of y's elements are outside the float bound against the interpreter. */
static int check_ref(const Case *c, const char *what, const void *y, const KilnTensor *ref,
                     const float *x, const float *deq, int64_t M, int64_t N, int64_t K)
{
    int bad = 0;
    for (int64_t i = 0; i < M * N; i++) {
        int64_t m = i / N, n = i % N;
        double s = 0;
        for (int64_t k = 0; k < K; k++)
            s += fabs(x[m * K + k]) * fabs(deq[n * K + k]);
        float r = out_at(c->out, ref->data, i), v = out_at(c->out, y, i);
        double tol = 1.2 * 2.0 * (double)K * ldexp(s, -23) + 1e-30;
        tol += c->out == KILN_F16 ? ldexp(fabs(r), -10) + ldexp(1, -24)
             : c->out == KILN_BF16 ? ldexp(fabs(r), -7) : 0;
        if (!(fabs(v - r) <= tol) && bad++ < 3)
            print_error("%s %s M=%lld N=%lld K=%lld at (%lld,%lld): %.9g ref %.9g tol %.3g\n", c->name,
                        what, (long long)M, (long long)N, (long long)K, (long long)m,
                        (long long)n, v, r, tol);
    }
    return bad;
}

typedef struct Kernels {
    Compiled model, native, native16; /* tiles from M = 1 (model, AMX), AMX from M = 16 */
    bool have_native;
} Kernels;

/* One shape: the model kernel (every M on tiles) against the interpreter; on an AMX
 * host the AMX kernel (every M on tiles) and the kernel with the default break-even (M <
 * 16 on its vdpbf16ps rows) against the interpreter too. Not the AMX kernel against the
 * model bit for bit: a core sums the pairs of one tdpbf16ps in an order the model does
 * not reproduce (ir/amx_model.c). Returns failures. */
static int run_shape(const Case *c, int64_t N, int64_t K, const int64_t *Ms, int nM, bool native)
{
    Kernels ks = {.have_native = native};
    KilnDiag d = {0};
    compile(c, N, K, 1, "model", &ks.model);
    assert_string_equal(ks.model.l.name, "amx-bf16-tile");
    assert_true(ks.model.l.tiles && ks.model.l.tiles_model);
    if (native) {
        compile(c, N, K, 1, NULL, &ks.native);
        compile(c, N, K, KILN_AMX_MIN_M, NULL, &ks.native16);
    }
    Weights W = {N, K, malloc(sizeof(float) * (size_t)(N * K)), malloc(sizeof(float) * (size_t)N)};
    for (int64_t i = 0; i < N * K; i++)
        W.w[i] = 0.5f * frand();
    for (int64_t i = 0; i < N; i++)
        W.bias[i] = frand();
    KilnType qt = kiln_type2(ks.model.l.wdt, N, K);
    qt.q = c->w;
    KilnTensor wq;
    assert_int_equal(kiln_tensor_alloc(&wq, &qt), 0);
    assert_int_equal(kiln_quantize_matrix(&c->w, W.w, N, K, wq.data, wq.scales, wq.zeros, &d), 0);
    float *deq = malloc(sizeof(float) * (size_t)(N * K));
    assert_int_equal(kiln_dequantize_matrix(&c->w, wq.data, wq.scales, wq.zeros, N, K, deq, &d), 0);
    void *blob = aligned_alloc(64, (ks.model.l.pack_bytes + 63) & ~(size_t)63);
    assert_int_equal(kiln_prepack(&ks.model.l, &wq, blob, &d), 0);
    int failures = 0;
    int64_t f0 = kiln_amx_model_faults();
    for (int mi = 0; mi < nM; mi++) {
        int64_t M = Ms[mi];
        KilnModule *mm = kiln_module_new();
        KilnFunc *fm = build_kernel(mm, c, M, N, K, "interp", -1, NULL);
        KilnType xty = kiln_type2(KILN_F32, M, K);
        KilnTensor xt, ref;
        kiln_tensor_alloc(&xt, &xty);
        float *x = xt.data;
        for (int64_t i = 0; i < M * K; i++)
            x[i] = frand() * (i % 37 == 0 ? 8.0f : 1.0f);
        if (M >= 3)
            memset(x + K, 0, sizeof(float) * (size_t)K); /* an all-zero row */
        if (kiln_interp_run(fm, &xt, 1, weight_fn, &W, &ref, &d))
            fail_msg("interp %s: %s", c->name, d.msg);
        void *y = call(&ks.model, x, M, blob, W.bias);
        failures += check_ref(c, "tiles (model)", y, &ref, x, deq, M, N, K);
        if (native) {
            void *yn = call(&ks.native, x, M, blob, W.bias), *y16 = call(&ks.native16, x, M, blob, W.bias);
            failures += check_ref(c, "tiles (AMX)", yn, &ref, x, deq, M, N, K);
            failures += check_ref(c, M < KILN_AMX_MIN_M ? "vdpbf16ps rows (AMX kernel)" : "tiles (AMX, min 16)",
                                  y16, &ref, x, deq, M, N, K);
            free(yn);
            free(y16);
        }
        free(y);
        kiln_tensor_free(&ref);
        kiln_tensor_free(&xt);
        kiln_module_free(mm);
    }
    assert_int_equal(kiln_amx_model_faults(), f0);
    free(blob);
    free(deq);
    kiln_tensor_free(&wq);
    free(W.w);
    free(W.bias);
    kiln_cpu_jit_free(ks.model.j);
    if (native) {
        kiln_cpu_jit_free(ks.native.j);
        kiln_cpu_jit_free(ks.native16.j);
    }
    return failures;
}

/* Every case on M = 1, 15, 16, 17, 33, 100 (partial 16-row tiles, a 1x2 last block
 * after 2x2 ones) and N, K off multiples of 32 (tile steps KT of 2..32, ragged last
 * groups, a partial last panel; N = 300: calls of 5 panels, a pass of TP = 4 and one
 * of 1). */
static void test_bf16_tiles_vs_interp(void **state)
{
    (void)state;
    KilnTarget t512;
    KilnDiag d = {0};
    kiln_target_lookup("avx512", &t512, &d);
    if (!kiln_target_host_runs(&t512)) {
        printf("[ SKIP ] the bf16 tile model kernels: their epilogue is avx512 code and this "
               "CPU lacks avx512 (%s)\n", kiln_target_cannot_run(&t512));
        skip();
    }
    bool native = host_amx();
    KilnTarget ta;
    kiln_target_lookup("amx", &ta, &d);
    if (!native)
        printf("[ SKIP ] the real AMX bf16 tile kernels: %s (the scalar tile model runs them)\n",
               kiln_target_cannot_run(&ta) ? kiln_target_cannot_run(&ta) : "no AMX tile state");
    static const int64_t Ms[] = {1, 15, 16, 17, 33, 100};
    static const int64_t NK[][2] = {{33, 200}, {70, 384}, {7, 136}, {40, 130}, {300, 136}};
    int failures = 0;
    for (size_t ci = 0; ci < NCASES; ci++)
        for (size_t s = 0; s < sizeof NK / sizeof NK[0]; s++) {
            int64_t N = NK[s][0], K = NK[s][1], g = cases[ci].w.group;
            if ((g && g > K) || (cases[ci].w.fmt == KILN_QF_INT4 && K % 8))
                continue; /* int4 packs 8 k to a word */
            failures += run_shape(&cases[ci], N, K, Ms, 6, native);
        }
    if (native)
        print_message("AMX here: the tdpbf16ps kernels ran against the interpreter too\n");
    assert_int_equal(failures, 0);
}

/* The layout: fp8 x fp8 leaves f32-fma for bf16-dot's blob with tiles; the scratch
 * covers the pad rows and the dequantized panel; odd K stays off tiles with a reason;
 * non-amx targets and f16 activations get no bf16 tiles. */
static void test_bf16_tile_layout(void **state)
{
    (void)state;
    KilnTarget amx, a512;
    KilnDiag d = {0};
    assert_int_equal(kiln_target_lookup("amx", &amx, &d), 0);
    assert_int_equal(kiln_target_lookup("avx512", &a512, &d), 0);
    KilnType wt = kiln_type2(KILN_E4M3, 96, 200);
    wt.q = (KilnQuantSpec)W(FP8_E4M3, true, CHANNEL, 0);
    KilnQuantSpec act = AD(FP8_E4M3, TOKEN);
    KilnLayout l;
    assert_int_equal(kiln_layout_make(&amx, &wt, &act, KILN_F32, false, KILN_EPI_NONE, KILN_F32, &l, &d), 0);
    assert_string_equal(l.name, "amx-f32-fma");
    assert_true(kiln_layout_bf16_tiles(&l));
    assert_int_equal(kiln_layout_use_tiles(&l, 16, false, &d), 0);
    assert_string_equal(l.name, "amx-bf16-tile");
    assert_int_equal(l.family, KILN_KF_BF16_DOT);
    assert_int_equal(l.KR, 2);
    assert_false(l.blocked);
    assert_int_equal(l.KT, 8); /* gcd(200, 200) = 200: 8 divides it, 16 does not */
    assert_int_equal(l.act_row_bytes, 2 * 200);
    assert_true(l.scratch_fixed >= l.tpanel_off + (size_t)(200 * 32 * 2));
    assert_true(l.tpanel_off >= 15 * l.scratch_per_row);
    assert_int_equal(kiln_layout_row_unit(&l), 16);
    /* the same blob as bf16-dot's: what the vector rows read */
    KilnLayout dot;
    wt.q.fmt = KILN_QF_FP8_E4M3;
    assert_int_equal(kiln_layout_make(&amx, &wt, NULL, KILN_BF16, false, KILN_EPI_NONE, KILN_F32, &dot, &d), 0);
    assert_string_equal(dot.name, "amx-bf16-dot");
    assert_int_equal(dot.pack_bytes, l.pack_bytes);
    assert_int_equal(dot.KB, l.KB);
    /* odd K: no k pairs */
    KilnType odd = kiln_type2(KILN_E4M3, 96, 101);
    odd.q = wt.q;
    assert_int_equal(kiln_layout_make(&amx, &odd, &act, KILN_F32, false, KILN_EPI_NONE, KILN_F32, &l, &d), 0);
    assert_int_equal(kiln_layout_use_tiles(&l, 16, false, &d), KILN_EINPUT);
    assert_non_null(strstr(d.msg, "K and the group must be even (K = 101"));
    /* avx512 and f16 activations: no bf16 tiles */
    assert_int_equal(kiln_layout_make(&a512, &wt, NULL, KILN_BF16, false, KILN_EPI_NONE, KILN_F32, &l, &d), 0);
    assert_false(kiln_layout_bf16_tiles(&l));
    assert_int_equal(kiln_layout_make(&amx, &wt, NULL, KILN_F16, false, KILN_EPI_NONE, KILN_F32, &l, &d), 0);
    assert_false(kiln_layout_bf16_tiles(&l));
    assert_int_equal(kiln_layout_use_tiles(&l, 16, false, &d), KILN_EINPUT);
    assert_non_null(strstr(d.msg, "bf16 activations with quantized weights"));
}

/* The real AMX kernels compiled on every host and their assembly checked (tdpbf16ps
 * and the tile configuration and release around it, vdpbf16ps for the decode rows, no
 * calls into the model); they run in test_bf16_tiles_vs_interp where amx runs. */
static void test_bf16_tile_asm(void **state)
{
    (void)state;
    for (size_t ci = 0; ci < NCASES; ci++) {
        KilnModule *mod = kiln_module_new();
        KilnFunc *f = build_kernel(mod, &cases[ci], 1, 33, 256, "amx", KILN_AMX_MIN_M, NULL);
        KilnDiag d = {0};
        char *as = NULL;
        if (kiln_cpu_emit_asm(f, "k", &as, &d))
            fail_msg("%s: %s", cases[ci].name, d.msg);
        const char *want[] = {"tdpbf16ps", "ldtilecfg", "tilerelease", "tileloadd", "tilestored",
                              "tilezero", "vdpbf16ps"};
        for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
            if (!strstr(as, want[i]))
                fail_msg("%s: no %s in the assembly", cases[ci].name, want[i]);
        assert_null(strstr(as, "kiln_amx_"));
        assert_null(strstr(as, "tdpbusd"));
        free(as);
        kiln_module_free(mod);
    }
    KilnTarget t;
    KilnDiag d = {0};
    kiln_target_lookup("amx", &t, &d);
    const char *why = kiln_target_cannot_run(&t);
    if (why)
        printf("[ SKIP ] running the AMX bf16 tile kernels: %s (assembly checked only; the "
               "scalar tile model ran their tiling)\n", why);
}

/* Run a shell command, its stdout+stderr into out; the exit status. */
static int run(char *out, size_t n, const char *cmd)
{
    char full[4096];
    snprintf(full, sizeof full, "%s 2>&1", cmd);
    FILE *p = popen(full, "r");
    if (!p)
        return -1;
    size_t len = fread(out, 1, n - 1, p);
    out[len] = 0;
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* kiln aot --target amx at a prefill M: the manifest records the bf16 tile layout and
 * its amx_min_m, and the runtime rebuilds the same layout from it (where amx runs). */
static void test_bf16_tile_aot(void **state)
{
    (void)state;
    char dir[] = "/tmp/kiln-amx-bf16-aot-XXXXXX", cmd[2048], out[16384];
    assert_non_null(mkdtemp(dir));
    snprintf(cmd, sizeof cmd, "'%s' aot '%s/recipes/w4a16-g128-bf16.lua' --shape 512,64,256 "
             "--target amx -o '%s/lib'", KILN_BIN, KILN_SOURCE_DIR, dir);
    int rc = run(out, sizeof out, cmd);
    if (rc)
        fail_msg("kiln aot: exit %d:\n%s", rc, out);
    snprintf(cmd, sizeof cmd, "cat '%s/lib/manifest.json'", dir);
    assert_int_equal(run(out, sizeof out, cmd), 0);
    assert_non_null(strstr(out, "\"layout\": \"amx-bf16-tile\""));
    assert_non_null(strstr(out, "\"amx_min_m\": 16"));
    snprintf(cmd, sizeof cmd, "%s/lib", dir);
    KilnAot *a = NULL;
    KilnDiag d = {0};
    rc = kiln_aot_open(cmd, &a, &d);
    if (host_amx()) {
        assert_int_equal(rc, 0);
        KilnLayout l;
        assert_int_equal(kiln_aot_layout(a, 0, &l, &d), 0);
        assert_string_equal(l.name, "amx-bf16-tile");
        assert_int_equal(l.tiles_min_m, 16);
        kiln_aot_close(a);
    } else {
        assert_int_not_equal(rc, 0);
        printf("[ SKIP ] loading the amx library: %s\n", d.msg);
    }
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    run(out, sizeof out, cmd);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bf16_tile_layout),
        cmocka_unit_test(test_bf16_tile_asm),
        cmocka_unit_test(test_bf16_tile_aot),
        cmocka_unit_test(test_bf16_tiles_vs_interp),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
