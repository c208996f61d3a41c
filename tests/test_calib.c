/* tests/test_calib.c — model/calib.c: the recipe's methods on a small synthetic
 * "model" (a norm feeding two layers, the second feeding a third), run through
 * kiln's real CPU kernels. Scale migration must leave the f32 function unchanged
 * (folded into the norm / previous layer, or a pre-scale), and each method must
 * beat round-to-nearest where its paper says it does. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "frontend/recipe.h"
#include "model/model.h"
#include "runtime/runtime.h"

enum { K = 128, N1 = 128, N3 = 96, ROWS = 512 };

typedef struct Toy {
    KilnLinear l[3]; /* A, B read norm(x); C reads B's output */
    float g[K];      /* the norm's weight */
    float *x;        /* [ROWS, K] inputs (calibration and evaluation alike) */
    KilnPool *pool;
} Toy;

static uint64_t rng = 12345;
static float unif(void)
{
    rng = rng * 6364136223846793005ULL + 1442695040888963407ULL;
    return (float)((rng >> 40) * (1.0 / 16777216.0));
}
static float gauss(void)
{
    float u = unif() + 1e-7f, v = unif();
    return sqrtf(-2.0f * logf(u)) * cosf(6.2831853f * v);
}

static void toy_init(Toy *t)
{
    memset(t, 0, sizeof *t);
    rng = 12345;
    const char *names[3] = {"blk.q_proj", "blk.k_proj", "blk.o_proj"};
    int64_t ns[3] = {N1, N1, N3}, ks[3] = {K, K, N1};
    for (int i = 0; i < 3; i++) {
        KilnLinear *l = &t->l[i];
        snprintf(l->name, sizeof l->name, "%s", names[i]);
        l->N = ns[i], l->K = ks[i], l->kernel = "f32";
        l->w = malloc(sizeof(float) * (size_t)(l->N * l->K));
        for (int64_t j = 0; j < l->N * l->K; j++)
            l->w[j] = gauss() / sqrtf((float)l->K);
    }
    for (int k = 0; k < K; k++)
        t->g[k] = 0.5f + unif();
    /* correlated inputs (a low-rank mix plus noise) with a few outlier channels, as
     * LLM activations have */
    t->x = malloc(sizeof(float) * ROWS * K);
    float mix[8][K];
    for (int r = 0; r < 8; r++)
        for (int k = 0; k < K; k++)
            mix[r][k] = gauss();
    for (int m = 0; m < ROWS; m++) {
        float z[8];
        for (int r = 0; r < 8; r++)
            z[r] = gauss();
        for (int k = 0; k < K; k++) {
            float v = 0.3f * gauss();
            for (int r = 0; r < 8; r++)
                v += z[r] * mix[r][k] * 0.4f;
            t->x[m * K + k] = (k % 37 == 5) ? 30.0f * v : v;
        }
    }
    KilnDiag d = {0};
    assert_int_equal(kiln_pool_new(2, &t->pool, &d), 0);
}

static void toy_free(Toy *t)
{
    for (int i = 0; i < 3; i++) {
        kiln_linears_unbind(&t->l[i], 1);
        kiln_quant_release(&t->l[i], 1);
        free(t->l[i].w), free(t->l[i].cap), free(t->l[i].tmp), free(t->l[i].xin);
    }
    free(t->x);
    kiln_pool_free(t->pool);
}

/* out = [A(norm x) | C(B(norm x))] for all rows: [ROWS, N1 + N3] */
static int toy_forward(Toy *t, float *out, KilnDiag *d)
{
    float *h = malloc(sizeof(float) * ROWS * K), *a = malloc(sizeof(float) * ROWS * N1);
    float *b = malloc(sizeof(float) * ROWS * N1), *c = malloc(sizeof(float) * ROWS * N3);
    for (int m = 0; m < ROWS; m++)
        for (int k = 0; k < K; k++)
            h[m * K + k] = t->x[m * K + k] * t->g[k];
    int rc = kiln_linear_run(&t->l[0], t->pool, h, ROWS, a, d) ||
             kiln_linear_run(&t->l[1], t->pool, h, ROWS, b, d) ||
             kiln_linear_run(&t->l[2], t->pool, b, ROWS, c, d);
    for (int m = 0; out && !rc && m < ROWS; m++) {
        memcpy(out + m * (N1 + N3), a + m * N1, sizeof(float) * N1);
        memcpy(out + m * (N1 + N3) + N1, c + m * N3, sizeof(float) * N3);
    }
    free(h), free(a), free(b), free(c);
    return rc;
}

static int toy_run(void *arg, KilnDiag *d) { return toy_forward(arg, NULL, d); }

static double rel_err(const float *ref, const float *y, int64_t n)
{
    double e = 0, s = 0;
    for (int64_t i = 0; i < n; i++) {
        e += ((double)ref[i] - y[i]) * ((double)ref[i] - y[i]);
        s += (double)ref[i] * ref[i];
    }
    return sqrt(e / s);
}

/* The toy, and a context with the recipe text src (written to a temporary file). */
typedef struct ToyRun {
    Toy t;
    KilnRunCtx rc;
    char path[64];
} ToyRun;

static void toy_open(ToyRun *x, const char *src)
{
    snprintf(x->path, sizeof x->path, "/tmp/kiln-test-calib-XXXXXX.lua");
    int fd = mkstemps(x->path, 4);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, src, strlen(src)), (ssize_t)strlen(src));
    close(fd);
    toy_init(&x->t);
    KilnDiag d = {0};
    x->rc = (KilnRunCtx){.pool = x->t.pool};
    kiln_options ko = {.target = "avx2"};
    assert_int_equal(kiln_ctx_create(&ko, &x->rc.ctx), KILN_STATUS_OK);
    assert_int_equal(kiln_recipe_open(x->rc.ctx, x->path, &x->rc.recipe), KILN_STATUS_OK);
    assert_int_equal(kiln_recipe_load(x->path, &x->rc.fr, &d), 0);
}

static void toy_close(ToyRun *x)
{
    toy_free(&x->t);
    kiln_recipe_free(x->rc.fr);
    kiln_recipe_close(x->rc.recipe);
    kiln_ctx_destroy(x->rc.ctx);
    unlink(x->path);
}

/* Quantized output error of the toy under the recipe text, and (via f32_err) how far
 * the methods moved the f32 function. */
static double toy_error(const char *recipe_src, double *f32_err, bool *any_prescale)
{
    ToyRun x;
    toy_open(&x, recipe_src);
    Toy *t = &x.t;
    KilnDiag d = {0};
    int64_t n = (int64_t)ROWS * (N1 + N3);
    float *ref = malloc(sizeof(float) * (size_t)n), *y = malloc(sizeof(float) * (size_t)n);
    assert_int_equal(toy_forward(t, ref, &d), 0);
    KilnScaleSite sites[2] = {{{0, 1}, 2, t->g, NULL, -1}, {{2}, 1, NULL, NULL, 1}};
    int r = kiln_quant_prepare(t->l, 3, sites, 2, &x.rc, toy_run, t, false, &d);
    if (r)
        fprintf(stderr, "prepare: %s\n", d.msg);
    assert_int_equal(r, 0);
    assert_int_equal(toy_forward(t, y, &d), 0); /* f32, methods applied */
    *f32_err = rel_err(ref, y, n);
    *any_prescale = t->l[0].in_div || t->l[2].in_div;
    r = kiln_linears_bind(t->l, 3, &x.rc, &d);
    if (r)
        fprintf(stderr, "bind: %s\n", d.msg);
    assert_int_equal(r, 0);
    assert_int_equal(toy_forward(t, y, &d), 0);
    double e = rel_err(ref, y, n);
    free(ref), free(y);
    toy_close(&x);
    return e;
}

#define W4(method)                                                                               \
    "return recipe 't' { rule '*' { weights = int4 { group = 32, symmetric = false }, method = " \
    method " } }"
#define W8A8(method)                                                                      \
    "return recipe 't' { rule '*' { weights = int8, activations = int8 { per = 'token' }, " \
    "method = " method " } }"

static void test_gptq_beats_rtn(void **state)
{
    (void)state;
    double f, rtn, gptq, gs, gg;
    bool pre;
    rtn = toy_error(W4("'rtn'"), &f, &pre);
    assert_true(f == 0.0);
    gptq = toy_error(W4("'gptq'"), &f, &pre);
    assert_true(f < 1e-6); /* gptq leaves the f32 model alone */
    gs = toy_error(W4("{ 'gptq', act_order = 'static' }"), &f, &pre);
    gg = toy_error(W4("{ 'gptq', act_order = 'group' }"), &f, &pre);
    assert_true(f < 1e-5); /* a permutation is exact in f32 */
    printf("int4 g32 asym output error: rtn %.4f gptq %.4f static %.4f group %.4f\n", rtn, gptq,
           gs, gg);
    assert_true(gptq < 0.85 * rtn);
    assert_true(gs < 0.85 * rtn);
    assert_true(gg < 0.85 * rtn);
}

static void test_smoothquant_w8a8(void **state)
{
    (void)state;
    double f, rtn, sq;
    bool pre;
    rtn = toy_error(W8A8("'rtn'"), &f, &pre);
    sq = toy_error(W8A8("{ 'smoothquant', alpha = 0.5 }"), &f, &pre);
    printf("w8a8 output error: rtn %.4f smoothquant %.4f (f32 moved %.2e)\n", rtn, sq, f);
    assert_true(f < 1e-5); /* folded into the norm and into B's rows: same f32 function */
    assert_false(pre);
    assert_true(sq < 0.6 * rtn);
    double sg = toy_error(W8A8("{ 'smoothquant', 'gptq' }"), &f, &pre);
    printf("w8a8 smoothquant+gptq %.4f\n", sg);
    assert_true(sg < sq * 1.05);
}

static void test_awq(void **state)
{
    (void)state;
    double f, rtn, awq, awq_nc;
    bool pre;
    rtn = toy_error(W4("'rtn'"), &f, &pre);
    awq_nc = toy_error(W4("{ 'awq', clip = false }"), &f, &pre);
    assert_true(f < 1e-5);
    awq = toy_error(W4("'awq'"), &f, &pre);
    printf("int4 g32 output error: rtn %.4f awq (no clip) %.4f awq %.4f\n", rtn, awq_nc, awq);
    assert_true(awq_nc < rtn);
    assert_true(awq <= awq_nc * 1.02);
}

/* A layer with nothing to fold into: skipped by default, a pre-scale with prescale. */
static void test_prescale(void **state)
{
    (void)state;
    ToyRun x;
    toy_open(&x, "return recipe 't' { rule '*' { weights = int8, activations = int8, "
                 "method = { 'smoothquant', prescale = true } } }");
    Toy *t = &x.t;
    KilnDiag d = {0};
    int64_t n = (int64_t)ROWS * (N1 + N3);
    float *ref = malloc(sizeof(float) * (size_t)n), *y = malloc(sizeof(float) * (size_t)n);
    assert_int_equal(toy_forward(t, ref, &d), 0);
    KilnScaleSite sites[2] = {{{0, 1}, 2, NULL, NULL, -1}, {{2}, 1, NULL, NULL, -1}};
    assert_int_equal(kiln_quant_prepare(t->l, 3, sites, 2, &x.rc, toy_run, t, false, &d), 0);
    assert_non_null(t->l[0].in_div);
    assert_true(t->l[0].in_div == t->l[0].in_div && t->l[2].in_div);
    assert_int_equal(toy_forward(t, y, &d), 0);
    assert_true(rel_err(ref, y, n) < 1e-5);
    free(ref), free(y);
    toy_close(&x);
}

/* Layers that share an input must agree on the scale migration. */
static void test_site_disagreement(void **state)
{
    (void)state;
    ToyRun x;
    toy_open(&x, "return recipe 't' { rule '*.q_proj' { weights = int8, method = 'awq' },\n"
                 " rule '*' { weights = int8 } }");
    KilnDiag d = {0};
    KilnScaleSite sites[2] = {{{0, 1}, 2, x.t.g, NULL, -1}, {{2}, 1, NULL, NULL, 1}};
    assert_int_equal(kiln_quant_prepare(x.t.l, 3, sites, 2, &x.rc, toy_run, &x.t, false, &d),
                     KILN_EINPUT);
    assert_non_null(strstr(d.msg, "read the same input"));
    toy_close(&x);
}

int main(void)
{
    setenv("KILN_NUM_THREADS", "2", 0);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gptq_beats_rtn),
        cmocka_unit_test(test_smoothquant_w8a8),
        cmocka_unit_test(test_awq),
        cmocka_unit_test(test_prescale),
        cmocka_unit_test(test_site_disagreement),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
