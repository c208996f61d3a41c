/* tests/test_calib.c — model/eval/calib.c: the recipe's methods on a small synthetic
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
#include <ftw.h>
#include <sys/stat.h>

#include "frontend/recipe.h"
#include "model/checkpoints/checkpoint.h"
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

/* The toy as one block for kiln_quant_prepare: nothing before it, its forward the block. */
static int toy_begin(void *arg, KilnDiag *d)
{
    (void)arg, (void)d;
    return 0;
}
static int toy_block(void *arg, int b, KilnDiag *d)
{
    (void)b;
    return toy_forward(arg, NULL, d);
}
#define TOY_NET(t) (&(KilnCalibNet){1, 3, (t), toy_begin, toy_block, NULL})

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

/* A context on pool with the recipe text src, written to path[64]. */
static void run_open(KilnRunCtx *rc, char *path, const char *src, KilnPool *pool)
{
    snprintf(path, 64, "/tmp/kiln-test-calib-XXXXXX.lua");
    int fd = mkstemps(path, 4);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, src, strlen(src)), (ssize_t)strlen(src));
    close(fd);
    KilnDiag d = {0};
    *rc = (KilnRunCtx){.pool = pool};
    kiln_options ko = {.target = "avx2"};
    assert_int_equal(kiln_ctx_create(&ko, &rc->ctx), KILN_STATUS_OK);
    assert_int_equal(kiln_recipe_open(rc->ctx, path, &rc->recipe), KILN_STATUS_OK);
    assert_int_equal(kiln_recipe_load(path, &rc->fr, &d), 0);
}

static void run_close(KilnRunCtx *rc, const char *path)
{
    kiln_recipe_free(rc->fr);
    kiln_recipe_close(rc->recipe);
    kiln_ctx_destroy(rc->ctx);
    unlink(path);
}

static void toy_open(ToyRun *x, const char *src)
{
    toy_init(&x->t);
    run_open(&x->rc, x->path, src, x->t.pool);
}

static void toy_close(ToyRun *x)
{
    toy_free(&x->t);
    run_close(&x->rc, x->path);
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
    int r = kiln_quant_prepare(t->l, 3, sites, 2, &x.rc, TOY_NET(t), false, &d);
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
    assert_int_equal(kiln_quant_prepare(t->l, 3, sites, 2, &x.rc, TOY_NET(t), false, &d), 0);
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
    assert_int_equal(kiln_quant_prepare(x.t.l, 3, sites, 2, &x.rc, TOY_NET(&x.t), false, &d),
                     KILN_EINPUT);
    assert_non_null(strstr(d.msg, "read the same input"));
    toy_close(&x);
}

/* ------------------------------------------------------------------ static activation scales */

static int rm_one(const char *p, const struct stat *s, int flag, struct FTW *f)
{
    (void)s, (void)flag, (void)f;
    return remove(p);
}

/* The static activation scale (and zero point) in a bound layer's kernel IR: what
 * kiln_layer_create calibrated and the kernel runs with. */
static void ir_act_scale(const KilnLinear *l, float *scale, int32_t *zero)
{
    const char *ir = kiln_layer_ir(l->kl), *a = ir ? strstr(ir, "act = {") : NULL;
    const char *end = a ? strchr(a, '}') : NULL, *sc = a ? strstr(a, " scale=") : NULL;
    const char *z = a ? strstr(a, " zero=") : NULL;
    if (!sc || sc > end)
        fail_msg("layer %s: no calibrated act scale in its IR:\n%s", l->name, ir ? ir : "");
    *scale = strtof(sc + 7, NULL);
    *zero = z && z < end ? (int32_t)strtol(z + 6, NULL, 10) : 0;
}

#define STORED_ACTS "return recipe 's' { rule '*' { weights = stored, activations = stored } }"

/* kiln eval of a written checkpoint with its own activation scheme: the toy's layers
 * (bound to the recipe the checkpoint came from) take the read-back layers as their
 * stored form and are bound again under STORED_ACTS. A static layer must run with
 * exactly the file's input_scale (and zero point), and with same_out every layer must
 * compute what it computed under the recipe, bit for bit (the same codes, scales and
 * kernels). Returns the bind's status (d says why); the toy is left unbound. */
static int bind_stored_acts(Toy *t, KilnCheckpoint *back, bool same_out, KilnDiag *d)
{
    int64_t n = (int64_t)ROWS * (N1 + N3);
    float *want = malloc(sizeof(float) * (size_t)n), *got = malloc(sizeof(float) * (size_t)n);
    assert_int_equal(toy_forward(t, want, d), 0);
    KilnRunCtx rc;
    char path[64];
    run_open(&rc, path, STORED_ACTS, t->pool);
    kiln_linears_unbind(t->l, 3);
    kiln_quant_release(t->l, 3); /* the method's grid gives way to the file's */
    for (int i = 0; i < 3; i++) {
        t->l[i].stored = kiln_checkpoint_find(back, t->l[i].name);
        assert_non_null(t->l[i].stored);
    }
    int r = kiln_linears_bind(t->l, 3, &rc, d);
    for (int i = 0; !r && i < 3; i++) {
        const KilnQLinear *q = t->l[i].stored;
        const char *desc = kiln_layer_describe(t->l[i].kl);
        printf("%s as stored: %s\n", q->name, desc);
        if (q->act.fmt == KILN_QF_NONE) {
            assert_non_null(strstr(desc, ", a f16"));
        } else if (q->act.dynamic) {
            char a[96];
            kiln_spec_print(&q->act, a, sizeof a);
            assert_non_null(strstr(desc, a));
            assert_non_null(strstr(kiln_layer_ir(t->l[i].kl), " dynamic"));
        } else {
            float s;
            int32_t z;
            ir_act_scale(&t->l[i], &s, &z);
            assert_true(q->act_scale > 0);
            assert_memory_equal(&s, &q->act_scale, sizeof s);
            assert_int_equal(z, q->act_zero);
        }
    }
    if (!r && same_out) {
        assert_int_equal(toy_forward(t, got, d), 0);
        assert_memory_equal(got, want, sizeof(float) * (size_t)n);
    }
    kiln_linears_unbind(t->l, 3);
    kiln_quant_release(t->l, 3);
    for (int i = 0; i < 3; i++)
        t->l[i].stored = NULL;
    run_close(&rc, path);
    free(want), free(got);
    return r;
}

/* kiln quantize's path on the toy: methods, the calibration capture, the checkpoint's
 * layers. Each static scale must be bit for bit the one kiln binds the layer with,
 * and read back from the written checkpoint unchanged (zero points too, stored
 * signed). Returns layer A's scale; *amax_in: max |A's input| after the methods. */
static float static_roundtrip(const char *src, bool sym, float *amax_in)
{
    ToyRun x;
    toy_open(&x, src);
    Toy *t = &x.t;
    KilnDiag d = {0};
    KilnScaleSite sites[2] = {{{0, 1}, 2, t->g, NULL, -1}, {{2}, 1, NULL, NULL, 1}};
    assert_int_equal(kiln_quant_prepare(t->l, 3, sites, 2, &x.rc, TOY_NET(t), false, &d), 0);
    *amax_in = 0;
    for (int i = 0; i < ROWS * K; i++) /* as toy_forward makes the input */
        *amax_in = fmaxf(*amax_in, fabsf(t->x[i] * t->g[i % K]));
    assert_int_equal(kiln_linears_capture(t->l, 3, &d), 0);
    assert_int_equal(toy_forward(t, NULL, &d), 0);
    KilnCheckpoint c = {0};
    int r = kiln_quantize_linears(&x.rc, t->l, 3, &c, &d);
    if (r)
        fail_msg("quantize: %s", d.msg);
    assert_int_equal(c.nlin, 3);
    r = kiln_linears_bind(t->l, 3, &x.rc, &d);
    if (r)
        fail_msg("bind: %s", d.msg);
    char dir[64];
    snprintf(dir, sizeof dir, "/tmp/kiln-test-static-XXXXXX");
    assert_non_null(mkdtemp(dir));
    if (kiln_checkpoint_write(dir, &c, &d))
        fail_msg("write: %s", d.msg);
    KilnCheckpoint back = {0};
    if (kiln_checkpoint_read(dir, &back, &d))
        fail_msg("read: %s", d.msg);
    for (int i = 0; i < 3; i++) {
        float s;
        int32_t z;
        ir_act_scale(&t->l[i], &s, &z);
        const KilnQLinear *q = kiln_checkpoint_find(&back, t->l[i].name);
        assert_non_null(q);
        printf("%s: act scale %.9g zero %d (kernel %.9g zero %d)\n", q->name,
               (double)q->act_scale, q->act_zero, (double)s, z);
        assert_true(c.lin[i].act_scale == s && c.lin[i].act_zero == z);
        assert_true(q->act_scale == s && q->act_zero == z);
        assert_false(q->act.dynamic);
        assert_int_equal(q->act.fmt, c.lin[i].act.fmt);
        assert_true(q->act.symmetric == sym);
        assert_true(sym ? z == 0 : z > 0 && z < 255);
    }
    float a = c.lin[0].act_scale;
    if (bind_stored_acts(t, &back, true, &d))
        fail_msg("bind as stored: %s", d.msg);
    kiln_checkpoint_free(&back);
    kiln_checkpoint_free(&c);
    nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    kiln_linears_capture_end(t->l, 3);
    toy_close(&x);
    return a;
}

#define STATIC_RULE(w, a, extra) \
    "return recipe 't' { rule '*' { weights = " w ", activations = " a extra " } }"

static void test_static_act_checkpoint(void **state)
{
    (void)state;
    float amax;
    /* minmax: A's scale is max |input| / 127 */
    float s = static_roundtrip(STATIC_RULE("int8", "int8 { per = 'tensor', dynamic = false }", ""),
                               true, &amax);
    assert_true(s == amax / 127.0f);
    /* the MSE clip chooses a smaller range on these heavy-tailed inputs */
    float mse = static_roundtrip(STATIC_RULE("int8", "int8 { per = 'tensor', calib = 'mse' }", ""),
                                 true, &amax);
    assert_true(mse < s);
    static_roundtrip(STATIC_RULE("int8", "int8 { symmetric = false, dynamic = false }", ""), false,
                     &amax);
    s = static_roundtrip(STATIC_RULE("fp8_e4m3 { per = 'tensor' }",
                                     "fp8_e4m3 { per = 'tensor', dynamic = false }", ""),
                         true, &amax);
    assert_true(s == amax / 448.0f);
    /* a recipe's own scale is what is stored */
    s = static_roundtrip(STATIC_RULE("int8", "int8 { scale = 0.0213 }", ""), true, &amax);
    assert_true(s == 0.0213f);
}

/* SmoothQuant divides the inputs by s (folded into the norm and into B's rows): the
 * static scale is of the input the layer sees after folding, not before. */
static void test_static_act_smoothquant(void **state)
{
    (void)state;
    float before, after;
    float plain = static_roundtrip(STATIC_RULE("int8", "int8 { dynamic = false }", ""), true,
                                   &before);
    float sq = static_roundtrip(STATIC_RULE("int8", "int8 { dynamic = false }",
                                            ", method = { 'smoothquant', alpha = 0.5 }"),
                                true, &after);
    assert_true(plain == before / 127.0f);
    assert_true(sq == after / 127.0f);
    assert_true(after < 0.5f * before); /* the outlier channels were smoothed */
}

/* Without calibration rows (and no scale in the recipe) there is no scale to store:
 * the error names the layer. */
static void test_static_act_no_rows(void **state)
{
    (void)state;
    ToyRun x;
    toy_open(&x, STATIC_RULE("int8", "int8 { dynamic = false }", ""));
    KilnDiag d = {0};
    KilnCheckpoint c = {0};
    assert_int_equal(kiln_quantize_linears(&x.rc, x.t.l, 3, &c, &d), KILN_EINPUT);
    if (!strstr(d.msg, "layer blk.q_proj") || !strstr(d.msg, "calibration rows"))
        fail_msg("error \"%s\" names no layer", d.msg);
    kiln_checkpoint_free(&c);
    toy_close(&x);
}

/* A W8A8 dynamic checkpoint with a weight-only layer, run with its own activation
 * scheme: per-token dynamic int8 where the file says so, f16 where it quantizes the
 * weights only. A static scheme with no scale in the file is an error naming the layer. */
static void test_stored_acts_dynamic(void **state)
{
    (void)state;
    ToyRun x;
    toy_open(&x, "return recipe 't' { rule '*.o_proj' { weights = int4 { group = 32 } },\n"
                 " rule '*' { weights = int8, activations = int8 } }");
    KilnDiag d = {0};
    KilnCheckpoint c = {0}, back = {0};
    if (kiln_quantize_linears(&x.rc, x.t.l, 3, &c, &d) || kiln_linears_bind(x.t.l, 3, &x.rc, &d))
        fail_msg("%s", d.msg);
    char dir[64];
    snprintf(dir, sizeof dir, "/tmp/kiln-test-static-XXXXXX");
    assert_non_null(mkdtemp(dir));
    if (kiln_checkpoint_write(dir, &c, &d) || kiln_checkpoint_read(dir, &back, &d))
        fail_msg("%s", d.msg);
    KilnQLinear *q = (KilnQLinear *)kiln_checkpoint_find(&back, "blk.q_proj");
    assert_true(q->act.fmt == KILN_QF_INT8 && q->act.dynamic && q->act.gran == KILN_GRAN_TOKEN);
    assert_int_equal(kiln_checkpoint_find(&back, "blk.o_proj")->act.fmt, KILN_QF_NONE);
    if (bind_stored_acts(&x.t, &back, true, &d))
        fail_msg("bind as stored: %s", d.msg);
    /* static: the file's scale and zero point, not one calibrated on the rows the
     * layers captured */
    assert_int_equal(kiln_linears_capture(x.t.l, 3, &d), 0);
    assert_int_equal(toy_forward(&x.t, NULL, &d), 0);
    q->act = (KilnQuantSpec){.fmt = KILN_QF_INT8, .gran = KILN_GRAN_TENSOR};
    q->act_scale = 0.7654321f, q->act_zero = 117;
    assert_int_equal(kiln_linears_bind(x.t.l, 3, &x.rc, &d), 0);
    if (bind_stored_acts(&x.t, &back, false, &d))
        fail_msg("bind as stored: %s", d.msg);
    kiln_linears_capture_end(x.t.l, 3);
    q->act_scale = 0; /* static, but no input_scale */
    assert_int_equal(kiln_linears_bind(x.t.l, 3, &x.rc, &d), 0);
    assert_int_equal(bind_stored_acts(&x.t, &back, true, &d), KILN_EINPUT);
    if (!strstr(d.msg, "layer 'blk.q_proj'") || !strstr(d.msg, "no positive finite activation scale"))
        fail_msg("error \"%s\" does not name the layer and the missing scale", d.msg);
    /* the API: act_format is spec text, read exactly or refused naming the layer */
    KilnRunCtx rc;
    char path[64];
    run_open(&rc, path, STORED_ACTS, x.t.pool);
    kiln_layer_desc desc = {.name = "blk.q_proj", .N = N1, .K = K, .weight = x.t.l[0].w,
                            .weight_format = "int8 sym channel",
                            .act_format = "int8 sym tensor scale=0.5x"};
    kiln_layer *kl = NULL;
    assert_int_equal(kiln_layer_create(rc.ctx, rc.recipe, &desc, &kl), KILN_STATUS_INPUT);
    assert_non_null(strstr(kiln_error(rc.ctx), "layer 'blk.q_proj': act_format"));
    desc.act_format = "int8 sym tensor scale=0.333333343";
    assert_int_equal(kiln_layer_create(rc.ctx, rc.recipe, &desc, &kl), KILN_STATUS_OK);
    assert_non_null(strstr(kiln_layer_ir(kl), "scale=0.33333334}"));
    kiln_layer_destroy(kl);
    run_close(&rc, path);
    kiln_checkpoint_free(&back);
    kiln_checkpoint_free(&c);
    nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
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
        cmocka_unit_test(test_static_act_checkpoint),
        cmocka_unit_test(test_static_act_smoothquant),
        cmocka_unit_test(test_static_act_no_rows),
        cmocka_unit_test(test_stored_acts_dynamic),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
