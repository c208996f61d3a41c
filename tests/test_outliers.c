/* tests/test_outliers.c — LLM.int8()-style outlier columns (recipe option `outliers`):
 * the recipe option and its errors, choosing columns from calibration rows, the IR ops
 * (zero_cols, gather_cols, add, qgemm's `outliers`) in the interpreter against
 * hand-computed numbers, lowering and fusion, the CPU kernel path of the C API against
 * the interpreter on many shapes, the accuracy gain on a layer with planted outlier
 * channels, and the `kiln` command (run --check, ir, aot's refusal). */
#include "cli/cli_util.h"

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "api/compile.h"
#include "codegen/ptx/ptx.h"
#include "frontend/recipe.h"
#include "ir/layout_gpu.h"
#include "ir/numerics.h"
#include "ir/outliers.h"
#include "kiln.h"
#include "passes/passes.h"

#ifndef KILN_SOURCE_DIR
#define KILN_SOURCE_DIR "."
#endif

/* ---------------------------------------------------------------- helpers */

static uint64_t rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static float gauss(uint64_t *s)
{
    double u1 = ((rng_next(s) >> 11) + 1) * 0x1.0p-53, u2 = (rng_next(s) >> 11) * 0x1.0p-53;
    return (float)(sqrt(-2 * log(u1)) * cos(2 * M_PI * u2));
}

static void fill_gauss(float *x, int64_t n, uint64_t seed, float sigma)
{
    for (int64_t i = 0; i < n; i++)
        x[i] = sigma * gauss(&seed);
}

static KilnRecipe *recipe(const char *src)
{
    KilnRecipe *r = NULL;
    KilnDiag d = {0};
    if (kiln_recipe_load_string(src, strlen(src), "t.lua", &r, &d))
        fail_msg("recipe does not load: %d: %s\n%s", d.line, d.msg, src);
    return r;
}

/* Weights by name for the interpreter: the test's W ("...weight") and bias ("...bias"). */
typedef struct {
    const float *w, *b;
    int64_t N, K;
} Weights;

static int weights_fn(void *ctx, const char *name, KilnTensor *out, KilnDiag *d)
{
    const Weights *w = ctx;
    size_t n = strlen(name);
    int64_t numel = kiln_type_numel(&out->type);
    if (n >= 4 && !strcmp(name + n - 4, "bias") && w->b && numel == w->N)
        memcpy(out->data, w->b, sizeof(float) * (size_t)numel);
    else if (numel == w->N * w->K)
        memcpy(out->data, w->w, sizeof(float) * (size_t)numel);
    else
        return kiln_diag_set(d, KILN_EINPUT, "test: no weight '%s'", name);
    return 0;
}

static float out_at(KilnDType dt, const void *y, int64_t i)
{
    if (dt == KILN_F16)
        return kiln_f16_to_f32(((const uint16_t *)y)[i]);
    if (dt == KILN_BF16)
        return kiln_bf16_to_f32(((const uint16_t *)y)[i]);
    return ((const float *)y)[i];
}

static KilnModule *parse_ir(const char *text)
{
    KilnModule *m = kiln_module_new();
    KilnDiag d = {0};
    if (kiln_parse_module(text, strlen(text), "t.kir", m, &d) || kiln_verify_module(m, &d))
        fail_msg("IR: %d: %s\n%s", d.line, d.msg, text);
    return m;
}

static KilnTensor run_interp(const KilnFunc *f, const float *x, int64_t M, int64_t K,
                             const Weights *w)
{
    KilnTensor in = {.type = kiln_type2(KILN_F32, M, K),
                     .data = (void *)x,
                     .nbytes = sizeof(float) * (size_t)(M * K)},
               out;
    KilnDiag d = {0};
    if (kiln_interp_run(f, &in, 1, weights_fn, (void *)w, &out, &d))
        fail_msg("interp @%s: %s", f->name, d.msg);
    return out;
}

/* A context for avx2 (the CPU floor kiln needs); the test skips on a machine without it. */
static kiln_ctx *avx2_ctx(int threads)
{
    kiln_options o = {.target = "avx2", .num_threads = threads};
    kiln_ctx *ctx = NULL;
    if (kiln_ctx_create(&o, &ctx)) {
        printf("SKIP: %s\n", kiln_error(NULL));
        skip();
    }
    return ctx;
}

/* The recipe text in a new temporary file (path: 64 bytes); the caller unlinks it. */
static void temp_recipe(const char *src, char *path)
{
    snprintf(path, 64, "/tmp/kiln-outliers-XXXXXX.lua");
    int fd = mkstemps(path, 4);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, src, strlen(src)), (ssize_t)strlen(src));
    close(fd);
}

/* ---------------------------------------------------------------- recipe option */

static void test_recipe_option(void **state)
{
    (void)state;
    KilnRecipe *r = recipe("return recipe \"o\" {\n"
                           "  rule \"*.a\" { weights = int8, activations = int8,\n"
                           "    outliers = { threshold = 4.5, max_fraction = 0.25 } },\n"
                           "  rule \"*.b\" { weights = int4 { group = 32 }, activations = int8 { "
                           "per = \"tensor\", dynamic = false },\n"
                           "    outliers = 7 },\n"
                           "  rule \"*\" { weights = int8, activations = int8 },\n"
                           "}\n");
    float th = 0, fr = 0;
    assert_true(kiln_recipe_outliers(r, "l.a", &th, &fr));
    assert_true(th == 4.5f && fr == 0.25f);
    assert_true(kiln_recipe_outliers(r, "l.b", &th, &fr));
    assert_true(th == 7.0f && fr == 0.02f);
    assert_false(kiln_recipe_outliers(r, "l.c", &th, &fr));
    kiln_recipe_free(r);

    static const struct {
        const char *src;
        int line;
        const char *want;
    } bad[] = {
        {"return recipe \"o\" {\n  rule \"*\" { weights = int8,\n    outliers = 6 },\n}\n", 3,
         "rule \"*\" {...}: outliers needs int8 activations (the outlier columns run in f32 beside "
         "an int8 GEMM), but activations are f16"},
        {"return recipe \"o\" {\n  rule \"*\" { weights = fp8_e4m3, activations = fp8_e4m3,\n"
         "    outliers = 6 },\n}\n",
         3, "outliers needs int8 activations"},
        {"return recipe \"o\" {\n  rule \"*\" { weights = int8, activations = int8,\n"
         "    outliers = \"yes\" },\n}\n",
         3,
         "outliers must be a threshold (outliers = 6.0) or a table { threshold = 6.0, "
         "max_fraction = 0.02 }, got string"},
        {"return recipe \"o\" {\n  rule \"*\" { weights = int8, activations = int8,\n"
         "    outliers = -1 },\n}\n",
         3, "the outlier threshold must be a positive finite number"},
        {"return recipe \"o\" {\n  rule \"*\" { weights = int8, activations = int8,\n"
         "    outliers = { threshold = 6,\n      max_fraction = 1.5 } },\n}\n",
         4, "max_fraction must be a number in (0, 1], got 1.5"},
        {"return recipe \"o\" {\n  rule \"*\" { weights = int8, activations = int8,\n"
         "    outliers = { thresold = 6 } },\n}\n",
         3, "did you mean 'threshold'?"},
        {"return recipe \"o\" {\n  rule \"*\" { weights = int8, activations = int8,\n"
         "    outliers = { threshold = \"6\" } },\n}\n",
         3, "threshold must be a number, got string"},
        {"return recipe \"o\" {\n  rule \"*\" { weights = int8, activations = int8,\n"
         "    outliers = 1/0 },\n}\n",
         3, "positive finite number, got inf"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        KilnDiag d = {0};
        int rc = kiln_recipe_load_string(bad[i].src, strlen(bad[i].src), "t.lua", &r, &d);
        if (rc != KILN_EINPUT || d.line != bad[i].line || !strstr(d.msg, bad[i].want))
            fail_msg("bad[%zu]: rc %d line %d (want %d): %s\n  want: %s", i, rc, d.line,
                     bad[i].line, d.msg, bad[i].want);
    }
}

/* ---------------------------------------------------------------- choosing columns */

static void test_pick(void **state)
{
    (void)state;
    /* 3 rows x 8 columns: maxima |.| per column 1, 9, 2, 7, 6.5, NaN, inf, 6 */
    const float x[] = {1,    -9, 2,  0,  6.5f, NAN, 1,        6,  //
                       -1,   3,  0,  7,  0,    1,   INFINITY, -6, //
                       0.5f, 0,  -2, -1, 0,    0,   0,        0};
    int64_t idx[8];
    int64_t n = kiln_outlier_pick(x, 3, 8, 6.0f, 1.0f, idx);
    assert_int_equal(n, 4); /* 9, 7, 6.5, inf; NaN never, 6 is not above 6 */
    const int64_t want[] = {1, 3, 4, 6};
    for (int i = 0; i < 4; i++)
        assert_int_equal(idx[i], want[i]);
    /* at most floor(0.25 * 8) = 2: the largest maxima (inf, 9), ascending */
    n = kiln_outlier_pick(x, 3, 8, 6.0f, 0.25f, idx);
    assert_int_equal(n, 2);
    assert_int_equal(idx[0], 1);
    assert_int_equal(idx[1], 6);
    assert_int_equal(kiln_outlier_pick(x, 3, 8, 6.0f, 0.1f, idx), 0);   /* floor(0.8) = 0 */
    assert_int_equal(kiln_outlier_pick(x, 3, 8, 100.0f, 1.0f, idx), 1); /* only inf */
    /* from per-column maxima (what activation statistics keep) */
    const float mx[] = {1, 9, 2, 7, 6.5f, NAN, INFINITY, 6};
    assert_int_equal(kiln_outlier_pick_absmax(mx, 8, 6.0f, 0.25f, idx), 2);
    assert_int_equal(idx[0], 1);
    assert_int_equal(idx[1], 6);
    /* ties go to the lower column */
    const float t[] = {8, 8, 8, 8};
    assert_int_equal(kiln_outlier_pick(t, 1, 4, 6.0f, 0.5f, idx), 2);
    assert_int_equal(idx[0], 0);
    assert_int_equal(idx[1], 1);
}

/* ---------------------------------------------------------------- interpreter, by hand */

/* W is chosen so that int8 per-channel quantization is exact (absmax 1.27: scale 0.01)
 * and x so that its int8 codes are exact once column 1 (100.0) is left out (absmax
 * 2.54: scale 0.02). Then y is exactly x·Wᵀ:
 *   row 0: 1.2·1.27 + 100·0.5 + (-0.6)(-1.27) + 2.54·0.64 = 53.9116
 *          = 0.02·0.01·(60·127 + (-30)(-127) + 127·64) + 100·0.5 = 3.9116 + 50
 *   row 1: 1.2·(-0.5) + 100·0.25 + 0 + 2.54·1.27 = 27.6258 = 0.0002·13129 + 25 */
static const float hand_w[] = {1.27f, 0.5f, -1.27f, 0.64f, -0.5f, 0.25f, 0.0f, 1.27f};
static const float hand_x[] = {1.2f, 100.0f, -0.6f, 2.54f};

static void test_interp_by_hand(void **state)
{
    (void)state;
    Weights w = {hand_w, NULL, 2, 4};
    KilnModule *m = parse_ir(
        "func @\"split\"(%x: f32[1,4]) -> f32[1,2] {\n"
        "  %w = weight {name = \"l.weight\"} : f32[2,4]\n"
        "  %wq = quantize %w : i8[2,4]{int8 sym channel}\n"
        "  %wo = gather_cols %w {idx = [1]} : f32[2,1]\n"
        "  %y = qgemm %x, %wq, %wo {act = {int8 sym token dynamic}, outliers = [1]} : f32[1,2]\n"
        "  return %y\n"
        "}\n"
        "func @\"plain\"(%x: f32[1,4]) -> f32[1,2] {\n"
        "  %w = weight {name = \"l.weight\"} : f32[2,4]\n"
        "  %wq = quantize %w : i8[2,4]{int8 sym channel}\n"
        "  %y = qgemm %x, %wq {act = {int8 sym token dynamic}} : f32[1,2]\n"
        "  return %y\n"
        "}\n"
        "func @\"graph\"(%x: f32[1,4]) -> f32[1,2] {\n"
        "  %w = weight {name = \"l.weight\"} : f32[2,4]\n"
        "  %wq = quantize %w : i8[2,4]{int8 sym channel}\n"
        "  %wd = dequantize %wq : f32[2,4]\n"
        "  %xi = zero_cols %x {idx = [1]} : f32[1,4]\n"
        "  %xq = dynquant %xi : i8[1,4]{int8 sym token dynamic}\n"
        "  %xd = dequantize %xq : f32[1,4]\n"
        "  %y = matmul %xd, %wd : f32[1,2]\n"
        "  %xo = gather_cols %x {idx = [1]} : f32[1,1]\n"
        "  %wo = gather_cols %w {idx = [1]} : f32[2,1]\n"
        "  %yo = matmul %xo, %wo : f32[1,2]\n"
        "  %ys = add %y, %yo : f32[1,2]\n"
        "  return %ys\n"
        "}\n");
    KilnTensor ys = run_interp(m->funcs[0], hand_x, 1, 4, &w);
    KilnTensor yp = run_interp(m->funcs[1], hand_x, 1, 4, &w);
    KilnTensor yg = run_interp(m->funcs[2], hand_x, 1, 4, &w);
    const float want[] = {53.9116f, 27.6258f};
    for (int i = 0; i < 2; i++) {
        float s = ((float *)ys.data)[i], p = ((float *)yp.data)[i], g = ((float *)yg.data)[i];
        assert_float_equal(s, want[i], 2e-4f * want[i]);
        assert_float_equal(g, want[i], 2e-4f * want[i]);
        /* without the split 100.0 sets the scale (100/127): 1.2 and -0.6 round to 2 and -1 */
        assert_true(fabsf(p - want[i]) > 0.3f);
    }
    kiln_tensor_free(&ys);
    kiln_tensor_free(&yp);
    kiln_tensor_free(&yg);
    kiln_module_free(m);
}

/* The column ops and add on their own. */
static void test_interp_column_ops(void **state)
{
    (void)state;
    KilnModule *m = parse_ir("func @\"c\"(%x: f32[2,3]) {\n"
                             "  %g = gather_cols %x {idx = [0, 2]} : f32[2,2]\n"
                             "  %z = zero_cols %x {idx = [0, 2]} : f32[2,3]\n"
                             "  %s = add %z, %x : f32[2,3]\n"
                             "  return %s\n"
                             "}\n"
                             "func @\"g\"(%x: f32[2,3]) {\n"
                             "  %g = gather_cols %x {idx = [0, 2]} : f32[2,2]\n"
                             "  return %g\n"
                             "}\n");
    const float x[] = {1, 2, 3, 4, 5, 6};
    Weights w = {0};
    KilnTensor s = run_interp(m->funcs[0], x, 2, 3, &w), g = run_interp(m->funcs[1], x, 2, 3, &w);
    const float ws[] = {1, 4, 3, 4, 10, 6}, wg[] = {1, 3, 4, 6};
    for (int i = 0; i < 6; i++)
        assert_true(((float *)s.data)[i] == ws[i]);
    for (int i = 0; i < 4; i++)
        assert_true(((float *)g.data)[i] == wg[i]);
    kiln_tensor_free(&s);
    kiln_tensor_free(&g);
    kiln_module_free(m);
}

/* The qgemm's order: int8 part + f32 columns, then bias, gelu, one rounding to f16, which
 * is what the pieces compute one after another. */
static void test_interp_epilogue_order(void **state)
{
    (void)state;
    const int64_t M = 3, N = 5, K = 16;
    float wv[5 * 16], xv[3 * 16], bv[5];
    fill_gauss(wv, N * K, 11, 0.25f);
    fill_gauss(xv, M * K, 12, 1.0f);
    fill_gauss(bv, N, 13, 0.1f);
    for (int64_t m = 0; m < M; m++)
        xv[m * K + 5] *= 30.0f;
    Weights w = {wv, bv, N, K};
    KilnModule *m =
        parse_ir("func @\"full\"(%x: f32[3,16]) -> f16[3,5] {\n"
                 "  %w = weight {name = \"l.weight\"} : f32[5,16]\n"
                 "  %b = weight {name = \"l.bias\"} : f32[5]\n"
                 "  %wq = quantize %w : u8[5,16]{int8 asym channel}\n"
                 "  %wo = gather_cols %w {idx = [5, 9]} : f32[5,2]\n"
                 "  %y = qgemm %x, %wq, %b, %wo {act = {int8 sym token dynamic}, epilogue = gelu, "
                 "outliers = [5, 9]} : f16[3,5]\n"
                 "  return %y\n"
                 "}\n"
                 "func @\"int8\"(%x: f32[3,16]) -> f32[3,5] {\n"
                 "  %w = weight {name = \"l.weight\"} : f32[5,16]\n"
                 "  %wq = quantize %w : u8[5,16]{int8 asym channel}\n"
                 "  %xi = zero_cols %x {idx = [5, 9]} : f32[3,16]\n"
                 "  %y = qgemm %xi, %wq {act = {int8 sym token dynamic}} : f32[3,5]\n"
                 "  return %y\n"
                 "}\n");
    KilnTensor full = run_interp(m->funcs[0], xv, M, K, &w),
               part = run_interp(m->funcs[1], xv, M, K, &w);
    for (int64_t i = 0; i < M; i++)
        for (int64_t o = 0; o < N; o++) {
            float side = 0.0f;
            side += xv[i * K + 5] * wv[o * K + 5];
            side += xv[i * K + 9] * wv[o * K + 9];
            float v = ((float *)part.data)[i * N + o] + side + bv[o];
            v = 0.5f * v * (1.0f + erff(v * 0.70710678118654752f));
            assert_true(((uint16_t *)full.data)[i * N + o] == kiln_f32_to_f16(v));
        }
    kiln_tensor_free(&full);
    kiln_tensor_free(&part);
    kiln_module_free(m);
}

/* ---------------------------------------------------------------- lowering and fusion */

static const char *const split_recipe =
    "return recipe \"s\" {\n"
    "  rule \"*.dyn\" { weights = int8, activations = int8 { per = \"token\" }, outliers = 6,\n"
    "    epilogue = { bias = true, act = \"silu\", out = \"f16\" } },\n"
    "  rule \"*.stat\" { weights = int4 { group = 32, symmetric = false },\n"
    "    activations = int8 { per = \"tensor\", dynamic = false, scale = 0.05 }, outliers = 6 },\n"
    "  rule \"*.plain\" { weights = int8, activations = int8 },\n"
    "}\n";

static void test_lower_and_fuse(void **state)
{
    (void)state;
    KilnRecipe *r = recipe(split_recipe);
    const int64_t M = 3, N = 16, K = 64, idx[] = {3, 17, 40};
    float wv[16 * 64], bv[16], xv[3 * 64];
    fill_gauss(wv, N * K, 21, 0.2f);
    fill_gauss(bv, N, 22, 0.1f);
    fill_gauss(xv, M * K, 23, 1.0f);
    for (int64_t m = 0; m < M; m++)
        for (int j = 0; j < 3; j++)
            xv[m * K + idx[j]] *= 25.0f;
    Weights w = {wv, bv, N, K};
    const char *layers[] = {"l.dyn", "l.stat"};
    for (int li = 0; li < 2; li++) {
        KilnModule *ref = kiln_module_new(), *fus = kiln_module_new();
        KilnLowerOpts lo = {.outlier_idx = idx, .noutliers = 3};
        KilnFunc *f;
        KilnDiag d = {0};
        assert_int_equal(kiln_lower_layer_ex(r, layers[li], M, N, K, "interp", &lo, ref, &f, &d),
                         0);
        assert_int_equal(kiln_lower_layer_ex(r, layers[li], M, N, K, "interp", &lo, fus, &f, &d),
                         0);
        char *text = kiln_print_module_str(ref);
        assert_non_null(strstr(text, "%xi = zero_cols %x {idx = [3, 17, 40]} : f32[3,64]"));
        assert_non_null(strstr(text, "%xo = gather_cols %x {idx = [3, 17, 40]} : f32[3,3]"));
        assert_non_null(strstr(text, "%wo = gather_cols %w {idx = [3, 17, 40]} : f32[16,3]"));
        assert_non_null(strstr(text, "%ys = add %y, %yo : f32[3,16]"));
        free(text);
        KilnTarget t;
        assert_int_equal(kiln_target_lookup("interp", &t, &d), 0);
        if (kiln_run_pipeline(fus, &t, NULL, &d))
            fail_msg("pipeline: %s", d.msg);
        text = kiln_print_module_str(fus);
        /* one qgemm reads x itself and the f32 columns of w; nothing else is left */
        if (!strstr(text, li == 0 ? "qgemm %x, %wq, %b, %wo {act = {int8 sym token dynamic}, "
                                    "epilogue = silu, outliers = [3, 17, 40]"
                                  : "qgemm %x, %wq, %wo {act = {int8 sym tensor scale=0.05}, "
                                    "outliers = [3, 17, 40]") ||
            strstr(text, "zero_cols") || strstr(text, "matmul") || strstr(text, " add "))
            fail_msg("fused:\n%s", text);
        free(text);
        KilnTensor y0 = run_interp(ref->funcs[0], xv, M, K, &w),
                   y1 = run_interp(fus->funcs[0], xv, M, K, &w);
        for (int64_t i = 0; i < M * N; i++) {
            float a = out_at(y0.type.dt, y0.data, i), b = out_at(y1.type.dt, y1.data, i);
            assert_float_equal(a, b, 2e-3f * (1.0f + fabsf(a)));
        }
        kiln_tensor_free(&y0);
        kiln_tensor_free(&y1);
        kiln_module_free(ref);
        kiln_module_free(fus);
    }
    /* errors: columns for a rule without outliers, out of range, not ascending */
    KilnModule *m = kiln_module_new();
    KilnFunc *f;
    KilnDiag d = {0};
    KilnLowerOpts lo = {.outlier_idx = idx, .noutliers = 3};
    assert_int_equal(kiln_lower_layer_ex(r, "l.plain", M, N, K, NULL, &lo, m, &f, &d), KILN_EINPUT);
    assert_non_null(strstr(d.msg, "outlier columns given, but its rule has no outliers"));
    const int64_t far[] = {3, 64}, down[] = {17, 3};
    lo.outlier_idx = far;
    lo.noutliers = 2;
    assert_int_equal(kiln_lower_layer_ex(r, "l.dyn", M, N, K, NULL, &lo, m, &f, &d), KILN_EINPUT);
    assert_non_null(strstr(d.msg, "outlier column 64 is out of range 0..63"));
    lo.outlier_idx = down;
    assert_int_equal(kiln_lower_layer_ex(r, "l.dyn", M, N, K, NULL, &lo, m, &f, &d), KILN_EINPUT);
    assert_int_equal(m->nfuncs, 0); /* nothing added on error */
    /* no columns: the plain rule */
    lo.noutliers = 0;
    assert_int_equal(kiln_lower_layer_ex(r, "l.dyn", M, N, K, NULL, &lo, m, &f, &d), 0);
    char *text = kiln_print_module_str(m);
    assert_null(strstr(text, "cols"));
    free(text);
    kiln_module_free(m);
    kiln_recipe_free(r);
}

/* ---------------------------------------------------------------- CPU kernels vs interpreter */

typedef struct {
    const char *what;
    const char *rule; /* the rule's body */
    int64_t M, N, K;
    int nplant; /* calibration columns scaled by 40 */
    float threshold, frac;
    bool all_but; /* every column but nplant is large */
} CpuCase;

static char *case_recipe(const CpuCase *c)
{
    char *s = malloc(1024);
    snprintf(s, 1024,
             "return recipe \"c\" { rule \"*\" { %s, outliers = { threshold = %g, "
             "max_fraction = %g } } }\n",
             c->rule, (double)c->threshold, (double)c->frac);
    return s;
}

/* x[rows, K] ~ N(0,1) with columns 7·j+3 (j < nplant) times 40, or with all_but, every
 * column but those times 40. */
static void case_acts(const CpuCase *c, float *x, int64_t rows, uint64_t seed)
{
    fill_gauss(x, rows * c->K, seed, 1.0f);
    for (int64_t k = 0; k < c->K; k++) {
        bool planted = false;
        for (int j = 0; j < c->nplant; j++)
            planted |= k == (7 * j + 3) % c->K;
        if (planted != c->all_but)
            for (int64_t m = 0; m < rows; m++)
                x[m * c->K + k] *= 40.0f;
    }
}

static int run_cpu_case(kiln_ctx *ctx, const CpuCase *c)
{
    int64_t M = c->M, N = c->N, K = c->K, crow = 8;
    float *w = malloc(sizeof(float) * (size_t)(N * K)), *b = malloc(sizeof(float) * (size_t)N);
    float *x = malloc(sizeof(float) * (size_t)(M * K)),
          *xc = malloc(sizeof(float) * (size_t)(crow * K));
    fill_gauss(w, N * K, 100 + (uint64_t)K, 1.0f / sqrtf((float)K));
    fill_gauss(b, N, 200 + (uint64_t)N, 0.1f);
    case_acts(c, x, M, 300 + (uint64_t)M);
    case_acts(c, xc, crow, 400);
    char *src = case_recipe(c);
    char path[64];
    temp_recipe(src, path);
    kiln_recipe *kr = NULL;
    if (kiln_recipe_open(ctx, path, &kr))
        fail_msg("%s: %s", c->what, kiln_error(ctx));
    kiln_layer_desc desc = {
        .name = "l", .N = N, .K = K, .weight = w, .bias = b, .calib_x = xc, .calib_rows = crow};
    kiln_layer *l = NULL;
    if (kiln_layer_create(ctx, kr, &desc, &l))
        fail_msg("%s: %s", c->what, kiln_error(ctx));
    size_t osz = kiln_layer_out_dtype(l) == KILN_DTYPE_F32 ? 4 : 2;
    void *y = malloc(osz * (size_t)(M * N));
    assert_int_equal(kiln_layer_run(l, x, M, y), KILN_STATUS_OK);

    /* the interpreter on the same split (the columns from the same calibration rows) */
    KilnRecipe *r = recipe(src);
    float th, frac;
    assert_true(kiln_recipe_outliers(r, "l", &th, &frac));
    int64_t *idx = malloc(sizeof(int64_t) * (size_t)K);
    int64_t n = kiln_outlier_pick(xc, crow, K, th, frac, idx);
    KilnLowerOpts lo = {.outlier_idx = idx, .noutliers = n};
    KilnModule *m = kiln_module_new();
    KilnFunc *f;
    KilnDiag d = {0};
    KilnTarget t;
    assert_int_equal(kiln_target_lookup("interp", &t, &d), 0);
    if (kiln_lower_layer_ex(r, "l", M, N, K, "interp", &lo, m, &f, &d) ||
        kiln_run_pipeline(m, &t, NULL, &d))
        fail_msg("%s: %s", c->what, d.msg);
    assert_true(kiln_calibrate_static(f, xc, crow * K) >= 0); /* a static scale, as the API */
    Weights wts = {w, b, N, K};
    KilnTensor ref = run_interp(f, x, M, K, &wts);
    const char *ir = kiln_layer_ir(l);
    bool has_split = strstr(ir, "outliers = [") != NULL;
    if (has_split != (n > 0))
        fail_msg("%s: %lld columns but the layer's IR says:\n%s", c->what, (long long)n, ir);
    KilnDType odt = ref.type.dt;
    double maxref = 0;
    for (int64_t i = 0; i < M * N; i++)
        maxref = fmax(maxref, fabs(out_at(odt, ref.data, i)));
    int bad = 0;
    for (int64_t i = 0; i < M * N; i++) {
        double a = out_at(odt, ref.data, i), got = out_at(odt, y, i);
        double tol = 1e-5 * maxref + (odt == KILN_F16 ? 0x1p-10 : 0) * fabs(a) + 1e-6;
        if (!(fabs(a - got) <= tol) && bad++ < 4)
            print_message("%s: y[%lld] kernel %.9g interpreter %.9g\n", c->what, (long long)i, got,
                          a);
    }
    printf("  %-34s M=%-3lld N=%-3lld K=%-3lld %3lld outlier columns: %s (%s)\n", c->what,
           (long long)M, (long long)N, (long long)K, (long long)n, bad ? "MISMATCH" : "ok",
           kiln_layer_describe(l));
    kiln_tensor_free(&ref);
    kiln_module_free(m);
    kiln_recipe_free(r);
    free(idx);
    free(y);
    kiln_layer_destroy(l);
    kiln_recipe_close(kr);
    unlink(path);
    free(src);
    free(w);
    free(b);
    free(x);
    free(xc);
    return bad;
}

static void test_cpu_vs_interp(void **state)
{
    (void)state;
    kiln_ctx *ctx = avx2_ctx(2);
    const char *dyn = "weights = int8, activations = int8 { per = \"token\" }";
    const char *epi = "weights = int8, activations = int8 { per = \"token\" }, "
                      "epilogue = { bias = true, act = \"gelu\", out = \"f16\" }";
    const char *stat =
        "weights = int8 { symmetric = false }, activations = int8 { per = \"tensor\", "
        "dynamic = false, symmetric = false }, epilogue = { bias = true, act = \"silu\" }";
    const char *w4 =
        "weights = int4 { group = 32 }, activations = int8, epilogue = { out = \"bf16\" }";
    const CpuCase cases[] = {
        {"dyn, GEMV", dyn, 1, 40, 98, 3, 6.0f, 0.05f, false},
        {"dyn, K off the tiles", dyn, 5, 72, 250, 4, 6.0f, 0.02f, false},
        {"dyn + bias + gelu + f16", epi, 17, 130, 256, 5, 6.0f, 0.05f, false},
        {"dyn, no column above threshold", epi, 3, 64, 128, 0, 6.0f, 0.05f, false},
        {"dyn, all but 3 columns", epi, 4, 33, 64, 3, 6.0f, 1.0f, true},
        {"static asym + bias + silu", stat, 9, 48, 200, 3, 6.0f, 0.05f, false},
        {"w4a8 g32 + bf16 out", w4, 2, 70, 256, 2, 6.0f, 0.02f, false},
        {"dyn, cap below candidates", dyn, 6, 24, 160, 8, 6.0f, 0.025f, false},
    };
    int bad = 0;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        bad += run_cpu_case(ctx, &cases[i]);
    kiln_ctx_destroy(ctx);
    assert_int_equal(bad, 0);
}

/* The API's errors: no calibration rows for a rule with outliers. */
static void test_api_needs_calibration(void **state)
{
    (void)state;
    kiln_ctx *ctx = avx2_ctx(1);
    kiln_recipe *kr = NULL;
    assert_int_equal(kiln_recipe_open(ctx, KILN_SOURCE_DIR "/recipes/w8a8-int8-outliers.lua", &kr),
                     0);
    float w[16 * 64] = {0};
    kiln_layer_desc desc = {.name = "model.layers.0.mlp.up_proj", .N = 16, .K = 64, .weight = w};
    kiln_layer *l = NULL;
    assert_int_equal(kiln_layer_create(ctx, kr, &desc, &l), KILN_STATUS_INPUT);
    assert_non_null(strstr(kiln_error(ctx),
                           "layer 'model.layers.0.mlp.up_proj': the recipe's "
                           "outliers = {...} picks the outlier columns from "
                           "calibration activations: give calib_x and calib_rows"));
    /* lm_head is ignored: no calibration needed */
    desc.name = "lm_head";
    assert_int_equal(kiln_layer_create(ctx, kr, &desc, &l), KILN_STATUS_OK);
    kiln_layer_destroy(l);
    kiln_recipe_close(kr);
    kiln_ctx_destroy(ctx);
}

/* ---------------------------------------------------------------- accuracy */

static double sqnr_db(const float *ref, const float *y, int64_t n)
{
    double s = 0, e = 0;
    for (int64_t i = 0; i < n; i++) {
        s += (double)ref[i] * ref[i];
        e += ((double)ref[i] - y[i]) * ((double)ref[i] - y[i]);
    }
    return 10 * log10(s / (e > 0 ? e : 1e-300));
}

/* A W8A8 layer whose activations have a few channels 40x the rest (LLM.int8()'s
 * emergent features): the split keeps them in f32 and the int8 scale small. */
static double layer_sqnr(kiln_ctx *ctx, const char *act, bool outliers, const float *w,
                         const float *x, const float *xc, const float *ref, int64_t M, int64_t N,
                         int64_t K, int64_t crow)
{
    char src[512], path[64];
    snprintf(src, sizeof src,
             "return recipe \"a\" { rule \"*\" { weights = int8, activations = %s%s } }\n", act,
             outliers ? ", outliers = 6.0" : "");
    temp_recipe(src, path);
    kiln_recipe *kr = NULL;
    kiln_layer *l = NULL;
    kiln_layer_desc desc = {
        .name = "l", .N = N, .K = K, .weight = w, .calib_x = xc, .calib_rows = crow};
    if (kiln_recipe_open(ctx, path, &kr) || kiln_layer_create(ctx, kr, &desc, &l))
        fail_msg("%s", kiln_error(ctx));
    float *y = malloc(sizeof(float) * (size_t)(M * N));
    assert_int_equal(kiln_layer_run(l, x, M, y), 0);
    double s = sqnr_db(ref, y, M * N);
    free(y);
    kiln_layer_destroy(l);
    kiln_recipe_close(kr);
    unlink(path);
    return s;
}

static void test_accuracy(void **state)
{
    (void)state;
    kiln_ctx *ctx = avx2_ctx(2);
    const int64_t M = 32, N = 256, K = 512, crow = 64;
    float *w = malloc(sizeof(float) * (size_t)(N * K)),
          *x = malloc(sizeof(float) * (size_t)(M * K));
    float *xc = malloc(sizeof(float) * (size_t)(crow * K)),
          *ref = malloc(sizeof(float) * (size_t)(M * N));
    fill_gauss(w, N * K, 7, 1.0f / sqrtf((float)K));
    fill_gauss(x, M * K, 8, 1.0f);
    fill_gauss(xc, crow * K, 9, 1.0f);
    static const int64_t planted[] = {13, 77, 200, 431}; /* 4 of 512 columns, x40 */
    for (int j = 0; j < 4; j++) {
        for (int64_t m = 0; m < M; m++)
            x[m * K + planted[j]] *= 40.0f;
        for (int64_t m = 0; m < crow; m++)
            xc[m * K + planted[j]] *= 40.0f;
    }
    for (int64_t m = 0; m < M; m++)
        for (int64_t n = 0; n < N; n++) {
            double acc = 0;
            for (int64_t k = 0; k < K; k++)
                acc += (double)x[m * K + k] * w[n * K + k];
            ref[m * N + n] = (float)acc;
        }
    const char *dyn = "int8 { per = \"token\" }";
    const char *stat = "int8 { per = \"tensor\", dynamic = false }";
    double d0 = layer_sqnr(ctx, dyn, false, w, x, xc, ref, M, N, K, crow);
    double d1 = layer_sqnr(ctx, dyn, true, w, x, xc, ref, M, N, K, crow);
    double s0 = layer_sqnr(ctx, stat, false, w, x, xc, ref, M, N, K, crow);
    double s1 = layer_sqnr(ctx, stat, true, w, x, xc, ref, M, N, K, crow);
    printf("  SQNR vs f32, W8A8 with 4 of 512 channels x40: per-token dynamic %.1f dB -> %.1f dB "
           "with outliers; static per-tensor %.1f dB -> %.1f dB\n",
           d0, d1, s0, s1);
    assert_true(d1 >= d0 + 10.0);
    assert_true(s1 >= s0 + 10.0);
    assert_true(d1 >= 35.0);
    free(w);
    free(x);
    free(xc);
    free(ref);
    kiln_ctx_destroy(ctx);
}

/* ---------------------------------------------------------------- GPU: compile only */

/* On sm_XX a qgemm with outliers compiles as its int8 part alone (no bias, activation or
 * 16-bit output in the kernel: the host runs those after the f32 columns). */
static void test_gpu_compile(void **state)
{
    (void)state;
    KilnRecipe *r = recipe(split_recipe);
    const int64_t idx[] = {3, 17, 40};
    static const char *const archs[] = {"sm_80", "sm_89", "sm_90"};
    KilnDiag d = {0};
    bool nvrtc = kiln_nvrtc_version(&d) != NULL;
    for (int a = 0; a < 3; a++) {
        KilnModule *m = kiln_module_new();
        KilnFunc *f;
        KilnTarget t;
        KilnLowerOpts lo = {.outlier_idx = idx, .noutliers = 3};
        assert_int_equal(kiln_target_lookup(archs[a], &t, &d), 0);
        if (kiln_lower_layer_ex(r, "l.dyn", 5, 72, 128, t.name, &lo, m, &f, &d) ||
            kiln_run_pipeline(m, &t, NULL, &d))
            fail_msg("%s: %s", archs[a], d.msg);
        const KilnInst *g = kiln_find_qgemm(f);
        assert_int_equal(kiln_qgemm_bias(g) >= 0, 1);
        assert_int_equal(kiln_qgemm_outlier_w(g) >= 0, 1);
        KilnGpuLayout l;
        assert_int_equal(kiln_gpu_layout_for(g, f, &l, &d), 0);
        assert_false(l.has_bias);
        assert_int_equal(l.epilogue, 0);
        assert_int_equal(l.out_dt, KILN_F32);
        assert_int_equal(l.family, KILN_GK_MMA_S8);
        char *src = NULL;
        assert_int_equal(kiln_ptx_source(f, NULL, "kq", &src, &d), 0);
        assert_non_null(strstr(src, "#define HAS_BIAS 0\n#define EPI 0\n#define OUT 0\n"));
        free(src);
        if (nvrtc && a != 1) { /* two archs are enough to see it compile (about 2 s each) */
            char *ptx = NULL;
            void *cubin = NULL;
            size_t clen = 0;
            if (kiln_ptx_emit(f, NULL, "kq", &ptx, &cubin, &clen, NULL, &d))
                fail_msg("%s: %s", archs[a], d.msg);
            assert_true(clen > 0 && strstr(ptx, ".entry kq_gemm"));
            free(ptx);
            free(cubin);
        }
        kiln_module_free(m);
    }
    if (!nvrtc)
        printf("  (NVRTC not found: GPU sources checked, not compiled)\n");
    kiln_recipe_free(r);
}

/* ---------------------------------------------------------------- the kiln command */

static void kiln_cmd(CliResult *r, const char *cache, const char *const *args)
{
    const char *argv[32] = {KILN_BIN};
    int n = 1;
    for (; args[n - 1]; n++)
        argv[n] = args[n - 1];
    argv[n] = NULL;
    char env0[1200];
    snprintf(env0, sizeof env0, "KILN_CACHE_DIR=%s", cache);
    const char *env[] = {env0, NULL};
    assert_int_equal(cli_run_env(argv, env, r), 0);
}

static void test_cli(void **state)
{
    (void)state;
    char *cache = cli_mkdtemp("outliers");
    const char *recipe_path = KILN_SOURCE_DIR "/recipes/w8a8-int8-outliers.lua";
    CliResult r;
    kiln_cmd(&r, cache,
             (const char *[]){"run", recipe_path, "--shape", "16,256,512", "--target", "cpu",
                              "--check", NULL});
    /* one example layer per rule: attention, MLP, and the catch-all (BERT names) */
    bool ok = r.code == 0 && cli_count(r.out, "kernel vs reference interpreter: PASS") == 3 &&
              cli_count(r.out, "SQNR") == 3 && !strstr(r.out, "FAIL");
    if (!ok)
        cli_dump("kiln run w8a8-int8-outliers --check", &r);
    assert_true(ok);
    cli_result_free(&r);

    /* kiln ir shows the split (4 planted columns of K = 512 and N(0,1) ones above the
     * recipe's 3.0, up to its 2% cap) and the kernel IR */
    kiln_cmd(&r, cache,
             (const char *[]){"ir", recipe_path, "--shape", "16,256,512", "--target", "avx2",
                              "--print-after-all", NULL});
    const char *after_lower = strstr(r.out, "; *** IR after lower ***"),
               *after_fuse = strstr(r.out, "; *** IR after fuse_qgemm ***");
    ok = r.code == 0 && after_lower && after_fuse &&
         strstr(after_lower, " = zero_cols %x {idx = [") < after_fuse &&
         !strstr(after_fuse, "zero_cols") && strstr(after_fuse, ", outliers = [") &&
         strstr(r.out, "outliers: 10 of 512 input columns");
    if (!ok)
        cli_dump("kiln ir w8a8-int8-outliers", &r);
    assert_true(ok);
    cli_result_free(&r);
    static const char *const gpu[] = {"sm_80", "sm_89", "sm_90", "interp"};
    for (int i = 0; i < 4; i++) {
        kiln_cmd(
            &r, cache,
            (const char *[]){"ir", recipe_path, "--shape", "4,64,256", "--target", gpu[i], NULL});
        ok = r.code == 0 && cli_count(r.out, ", outliers = [") == 3;
        if (!ok)
            cli_dump("kiln ir --target", &r);
        assert_true(ok);
        cli_result_free(&r);
    }

    /* kiln aot says it does not support the split */
    char out[1200];
    snprintf(out, sizeof out, "%s/aot", cache);
    kiln_cmd(&r, cache,
             (const char *[]){"aot", recipe_path, "--shape", "4,64,256", "-o", out, NULL});
    if (r.code != 2 || !strstr(r.err, "outliers = {...}, which kiln aot does not support yet"))
        cli_dump("kiln aot w8a8-int8-outliers", &r);
    assert_int_equal(r.code, 2);
    cli_result_free(&r);
    cli_rm_rf(cache);
    free(cache);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_recipe_option),
        cmocka_unit_test(test_pick),
        cmocka_unit_test(test_interp_by_hand),
        cmocka_unit_test(test_interp_column_ops),
        cmocka_unit_test(test_interp_epilogue_order),
        cmocka_unit_test(test_lower_and_fuse),
        cmocka_unit_test(test_cpu_vs_interp),
        cmocka_unit_test(test_api_needs_calibration),
        cmocka_unit_test(test_accuracy),
        cmocka_unit_test(test_gpu_compile),
        cmocka_unit_test(test_cli),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
