/* test_kiln_py.c — the Python package's C side (python/csrc/kiln_py.c, in libkiln.so):
 * checkpoint layers bound as kiln eval binds them, against their dequantized weights;
 * a rule's method on one layer (GPTQ beats round-to-nearest on its own inputs); layers
 * made through kiln_py_layer_create equal kiln_layer_create's bit for bit; errors. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <ftw.h>
#include <unistd.h>

#include "ckpt_synth.h"
#include "python/csrc/kiln_py.h"

static int rm_one(const char *p, const struct stat *s, int flag, struct FTW *f)
{
    (void)s, (void)flag, (void)f;
    return remove(p);
}

static kiln_ctx *ctx_new(void)
{
    kiln_ctx *ctx = NULL;
    kiln_options o = {.num_threads = 2};
    assert_int_equal(kiln_ctx_create(&o, &ctx), 0);
    return ctx;
}

static kiln_recipe *recipe(kiln_ctx *ctx, const char *rel)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", KILN_SOURCE_DIR, rel);
    kiln_recipe *r = NULL;
    if (kiln_recipe_open(ctx, path, &r))
        fail_msg("%s", kiln_error(ctx));
    return r;
}

/* max |a - b| / max |b| */
static double rel_err(const float *a, const float *b, int64_t n)
{
    double e = 0, m = 0;
    for (int64_t i = 0; i < n; i++) {
        e = fmax(e, fabs((double)a[i] - b[i]));
        m = fmax(m, fabs((double)b[i]));
    }
    return e / m;
}

/* y[M,N] = x[M,K] · Wᵀ in double */
static void ref_gemm(const float *x, const float *w, int64_t M, int64_t N, int64_t K, float *y)
{
    for (int64_t m = 0; m < M; m++)
        for (int64_t n = 0; n < N; n++) {
            double s = 0;
            for (int64_t k = 0; k < K; k++)
                s += (double)x[m * K + k] * w[n * K + k];
            y[m * N + n] = (float)s;
        }
}

static void test_checkpoint_layers(void **state)
{
    (void)state;
    KilnCheckpoint c;
    assert_int_equal(make_ckpt(&c, true), 0);
    char dir[] = "/tmp/kiln-py-ckpt-XXXXXX";
    assert_non_null(mkdtemp(dir));
    KilnDiag d = {0};
    assert_int_equal(kiln_checkpoint_write(dir, &c, &d), 0);
    kiln_ctx *ctx = ctx_new();
    kiln_recipe *r = recipe(ctx, "python/tests/recipes/stored-f32acts.lua");
    kiln_py_ckpt *ck = NULL;
    assert_int_equal(kiln_py_ckpt_open(dir, &ck), KILN_STATUS_OK);
    assert_int_equal(kiln_py_ckpt_nlayers(ck), c.nlin);
    enum { M = 5 };
    int permuted = 0;
    for (int i = 0; i < c.nlin; i++) {
        int64_t N = 0, K = 0;
        const char *name = kiln_py_ckpt_layer(ck, i, &N, &K);
        const KilnQLinear *q = kiln_checkpoint_find(&c, name);
        assert_non_null(q);
        assert_true(N == q->N && K == q->K);
        float *w = malloc(sizeof(float) * (size_t)(N * K)), x[M * 192], xp[M * 192];
        float *y = malloc(sizeof(float) * M * (size_t)N), *ref = malloc(sizeof(float) * M * (size_t)N);
        int32_t perm[192];
        int has = 0;
        kiln_qlinear_dequant(q, w);
        for (int64_t j = 0; j < M * K; j++)
            x[j] = rndf();
        kiln_layer *l = NULL;
        if (kiln_py_ckpt_bind(ctx, r, ck, i, &l, perm, &has))
            fail_msg("%s: %s", name, kiln_py_error());
        for (int64_t m = 0; m < M; m++) /* the layer takes x[:, perm] when it gathers */
            for (int64_t k = 0; k < K; k++)
                xp[m * K + k] = x[m * K + (has ? perm[k] : k)];
        permuted += has;
        assert_non_null(strstr(kiln_layer_describe(l), ", a f32")); /* the recipe's activations */
        assert_int_equal(kiln_layer_has_bias(l), 0);
        assert_int_equal(kiln_layer_run(l, xp, M, y), 0);
        ref_gemm(x, w, M, N, K, ref);
        double e = rel_err(y, ref, M * N);
        if (e > 1e-5)
            fail_msg("%s: max rel error %g", name, e);
        kiln_layer_destroy(l);
        free(w), free(y), free(ref);
    }
    assert_int_equal(permuted, 1); /* the act-order layer */
    kiln_layer *l = NULL;
    int32_t perm[1];
    int has = 0;
    assert_int_equal(kiln_py_ckpt_bind(ctx, r, ck, c.nlin, &l, perm, &has), KILN_STATUS_INPUT);
    assert_non_null(strstr(kiln_py_error(), "there are 7"));
    kiln_py_ckpt_close(ck);
    assert_int_equal(kiln_py_ckpt_open("/nonexistent/kiln-dir", &ck), KILN_STATUS_INPUT);
    assert_null(ck);
    assert_non_null(strstr(kiln_py_error(), "/nonexistent/kiln-dir"));
    kiln_recipe_close(r);
    kiln_ctx_destroy(ctx);
    kiln_checkpoint_free(&c);
    nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

enum { N = 64, K = 256, ROWS = 512 };

/* correlated rows, as a model's inputs are: x = z · B with z [rows, 8] */
static void correlated(float *x, int64_t rows)
{
    static float B[8 * K];
    for (int i = 0; i < 8 * K; i++)
        B[i] = rndf();
    for (int64_t m = 0; m < rows; m++)
        for (int k = 0; k < K; k++) {
            double s = 0.05 * rndf();
            for (int j = 0; j < 8; j++)
                s += (double)((m * 31 + j * 7) % 13 - 6) * B[j * K + k] * 0.2;
            x[m * K + k] = (float)s;
        }
}

static double sqnr(const float *y, const float *ref, int64_t n)
{
    double s = 0, e = 0;
    for (int64_t i = 0; i < n; i++)
        s += (double)ref[i] * ref[i], e += ((double)y[i] - ref[i]) * ((double)y[i] - ref[i]);
    return 10 * log10(s / e);
}

static void test_method_and_layers(void **state)
{
    (void)state;
    kiln_ctx *ctx = ctx_new();
    kiln_recipe *gptq = recipe(ctx, "recipes/w4a16-g128-gptq.lua");
    kiln_recipe *rtn = recipe(ctx, "recipes/w4a16-g128-asym.lua");
    float *w = malloc(sizeof(float) * N * K), *x = malloc(sizeof(float) * ROWS * K);
    float *y = malloc(sizeof(float) * ROWS * N), *ref = malloc(sizeof(float) * ROWS * N);
    float *xm = malloc(sizeof(float) * ROWS * K);
    for (int i = 0; i < N * K; i++)
        w[i] = rndf();
    correlated(x, ROWS);
    ref_gemm(x, w, ROWS, N, K, ref);
    kiln_py_method *m = NULL;
    if (kiln_py_method_run(gptq, "layer", w, N, K, x, ROWS, &m))
        fail_msg("%s", kiln_py_error());
    assert_non_null(m);
    assert_non_null(strstr(kiln_py_method_ran(m), "gptq"));
    memcpy(xm, x, sizeof(float) * ROWS * K);
    assert_int_equal(kiln_py_method_input(m, xm, ROWS), 0);
    kiln_layer *lg = NULL, *lr = NULL;
    if (kiln_py_layer_create(ctx, gptq, "layer", N, K, w, NULL, NULL, 0, m, &lg))
        fail_msg("%s", kiln_py_error());
    assert_int_equal(kiln_layer_run(lg, xm, ROWS, y), 0);
    double s_gptq = sqnr(y, ref, ROWS * N);
    assert_int_equal(kiln_py_layer_create(ctx, rtn, "layer", N, K, w, NULL, NULL, 0, NULL, &lr), 0);
    assert_int_equal(kiln_layer_run(lr, x, ROWS, y), 0);
    double s_rtn = sqnr(y, ref, ROWS * N);
    if (!(s_gptq > s_rtn + 0.5))
        fail_msg("gptq %.2f dB, round to nearest %.2f dB", s_gptq, s_rtn);
    double cpu = -1;
    assert_true(kiln_py_time_run(lr, x, 1, y, 10, &cpu) > 0);
    assert_true(cpu > 0);
    kiln_layer_destroy(lg), kiln_layer_destroy(lr);
    kiln_py_method_free(m);
    /* no method in the rule: NULL, no error */
    m = (kiln_py_method *)1;
    assert_int_equal(kiln_py_method_run(rtn, "layer", w, N, K, x, ROWS, &m), 0);
    assert_null(m);

    /* kiln_py_layer_create is kiln_layer_create for a plain layer: same numbers */
    kiln_recipe *w8 = recipe(ctx, "recipes/w8a8-int8-dynamic.lua");
    kiln_layer_desc desc = {.name = "layer", .N = N, .K = K, .weight = w};
    kiln_layer *a = NULL, *b = NULL;
    assert_int_equal(kiln_layer_create(ctx, w8, &desc, &a), 0);
    assert_int_equal(kiln_py_layer_create(ctx, w8, "layer", N, K, w, NULL, NULL, 0, NULL, &b), 0);
    assert_int_equal(kiln_layer_run(a, x, ROWS, ref), 0);
    assert_int_equal(kiln_layer_run(b, x, ROWS, y), 0);
    assert_memory_equal(y, ref, sizeof(float) * ROWS * N);
    kiln_layer_destroy(a), kiln_layer_destroy(b);

    /* errors name the layer and the numbers */
    char longname[300];
    memset(longname, 'a', sizeof longname - 1);
    longname[sizeof longname - 1] = 0;
    assert_int_equal(kiln_py_layer_create(ctx, w8, longname, N, K, w, NULL, NULL, 0, NULL, &a),
                     KILN_STATUS_INPUT);
    assert_non_null(strstr(kiln_py_error(), "299 bytes"));
    assert_int_equal(kiln_py_layer_create(ctx, w8, "layer", 0, K, w, NULL, NULL, 0, NULL, &a),
                     KILN_STATUS_INPUT);
    assert_null(a);
    kiln_recipe *st = recipe(ctx, "recipes/w8a8-int8-static.lua");
    assert_int_equal(kiln_py_layer_create(ctx, st, "layer", N, K, w, NULL, NULL, 0, NULL, &a),
                     KILN_STATUS_INPUT);
    if (!strstr(kiln_py_error(), "layer 'layer': static activation scale needs calibration") ||
        !strstr(kiln_py_error(), "(64x256)"))
        fail_msg("%s", kiln_py_error());
    assert_int_equal(kiln_py_layer_create(ctx, st, "layer", N, K, w, NULL, x, ROWS, NULL, &a), 0);
    kiln_layer_destroy(a);
    kiln_recipe_close(st);
    kiln_recipe_close(w8), kiln_recipe_close(gptq), kiln_recipe_close(rtn);
    kiln_ctx_destroy(ctx);
    free(w), free(x), free(y), free(ref), free(xm);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_checkpoint_layers),
        cmocka_unit_test(test_method_and_layers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
