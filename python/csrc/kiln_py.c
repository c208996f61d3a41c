/* kiln_py.c — the C side of the Python package (python/kiln_py.h): checkpoint layers and
 * calibrated methods bound through the same code as `kiln eval` (model/nets/ops.c,
 * model/eval/layer_method.c), so a PyTorch model gets the kernels kiln's own models get. */
#include "python/csrc/kiln_py.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api/plan.h"
#include "model/checkpoints/checkpoint.h"
#include "model/eval/layer_method.h"
#include "model/model.h"

static _Thread_local char py_err[1024];

const char *kiln_py_error(void) { return py_err; }

/* Keeps d's message ("FILE:LINE: msg" when located) for kiln_py_error; returns the status. */
static kiln_status fail(const KilnDiag *d)
{
    kiln_diag_format(d, py_err, sizeof py_err);
    return d->code == KILN_EINTERNAL ? KILN_STATUS_INTERNAL : KILN_STATUS_INPUT;
}

static kiln_status fail_msg(kiln_status st, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(py_err, sizeof py_err, fmt, ap);
    va_end(ap);
    return st;
}

/* One layer bound as kiln_linears_bind binds a model's: l is filled by the caller
 * (name, shape, weights, stored layer, method grid), the bound kernel is taken out. */
static kiln_status bind_one(kiln_ctx *ctx, const kiln_recipe *r, KilnLinear *l, kiln_layer **out)
{
    KilnRunCtx rc = {.ctx = ctx, .recipe = (kiln_recipe *)r,
                     .fr = (struct KilnRecipe *)kiln_recipe_frontend(r)};
    KilnDiag d = {0};
    *out = NULL;
    if (kiln_linears_bind(l, 1, &rc, &d)) {
        kiln_layer_destroy(l->kl);
        l->kl = NULL;
        return fail(&d);
    }
    *out = l->kl;
    l->kl = NULL;
    py_err[0] = 0;
    return KILN_STATUS_OK;
}

/* ---------------------------------------------------------------- checkpoints */

struct kiln_py_ckpt {
    KilnCheckpoint c;
};

kiln_status kiln_py_ckpt_open(const char *dir, kiln_py_ckpt **out)
{
    KilnDiag d = {0};
    *out = calloc(1, sizeof **out);
    if (!*out)
        return fail_msg(KILN_STATUS_INTERNAL, "out of memory");
    if (kiln_checkpoint_read(dir, &(*out)->c, &d)) {
        free(*out);
        *out = NULL;
        return fail(&d);
    }
    return KILN_STATUS_OK;
}

void kiln_py_ckpt_close(kiln_py_ckpt *c)
{
    if (!c)
        return;
    kiln_checkpoint_free(&c->c);
    free(c);
}

int kiln_py_ckpt_nlayers(const kiln_py_ckpt *c) { return c->c.nlin; }

const char *kiln_py_ckpt_layer(const kiln_py_ckpt *c, int i, int64_t *N, int64_t *K)
{
    if (i < 0 || i >= c->c.nlin)
        return NULL;
    const KilnQLinear *q = &c->c.lin[i];
    *N = q->N, *K = q->K;
    return q->name;
}

kiln_status kiln_py_ckpt_bind(kiln_ctx *ctx, const kiln_recipe *r, const kiln_py_ckpt *c, int i,
                              kiln_layer **out, int32_t *perm, int *has_perm)
{
    *out = NULL, *has_perm = 0;
    if (i < 0 || i >= c->c.nlin)
        return fail_msg(KILN_STATUS_INPUT, "checkpoint layer %d: there are %d", i, c->c.nlin);
    const KilnQLinear *q = &c->c.lin[i];
    KilnLinear l = {.N = q->N, .K = q->K, .stored = q, .b = q->bias};
    snprintf(l.name, sizeof l.name, "%s", q->name);
    if (!(l.w = malloc(sizeof(float) * (size_t)(q->N * q->K))))
        return fail_msg(KILN_STATUS_INTERNAL, "out of memory");
    kiln_qlinear_dequant(q, l.w);
    kiln_status st = bind_one(ctx, r, &l, out);
    if (!st && l.in_perm) {
        memcpy(perm, l.in_perm, sizeof(int32_t) * (size_t)q->K);
        *has_perm = 1;
    }
    kiln_quant_release(&l, 1);
    free(l.w);
    return st;
}

/* ---------------------------------------------------------------- methods */

struct kiln_py_method {
    KilnLayerMethod m;
};

kiln_status kiln_py_method_run(const kiln_recipe *r, const char *name, const float *W, int64_t N,
                               int64_t K, const float *X, int64_t rows, kiln_py_method **out)
{
    KilnDiag d = {0};
    *out = NULL;
    py_err[0] = 0;
    kiln_py_method *m = calloc(1, sizeof *m);
    if (!m)
        return fail_msg(KILN_STATUS_INTERNAL, "out of memory");
    if (kiln_layer_method_run(kiln_recipe_frontend(r), name, NULL, W, N, K, X, rows, &m->m, &d)) {
        kiln_layer_method_free(&m->m);
        free(m);
        return fail(&d);
    }
    if (!m->m.wt) { /* no method, or one it could not run here (said in skipped) */
        snprintf(py_err, sizeof py_err, "%s", m->m.skipped);
        kiln_layer_method_free(&m->m);
        free(m);
        return KILN_STATUS_OK;
    }
    *out = m;
    return KILN_STATUS_OK;
}

const char *kiln_py_method_ran(const kiln_py_method *m) { return m->m.ran; }
const int32_t *kiln_py_method_in_perm(const kiln_py_method *m) { return m->m.in_perm; }
const float *kiln_py_method_in_div(const kiln_py_method *m) { return m->m.in_div; }

kiln_status kiln_py_method_input(const kiln_py_method *m, float *x, int64_t rows)
{
    return kiln_layer_method_input(&m->m, x, rows) ? fail_msg(KILN_STATUS_INTERNAL, "out of memory")
                                                    : KILN_STATUS_OK;
}

void kiln_py_method_free(kiln_py_method *m)
{
    if (!m)
        return;
    kiln_layer_method_free(&m->m);
    free(m);
}

kiln_status kiln_py_layer_create(kiln_ctx *ctx, const kiln_recipe *r, const char *name, int64_t N,
                                 int64_t K, const float *weight, const float *bias,
                                 const float *calib_x, int64_t calib_rows,
                                 const kiln_py_method *m, kiln_layer **out)
{
    *out = NULL;
    if (!name || N <= 0 || K <= 0 || !weight)
        return fail_msg(KILN_STATUS_INPUT, "layer %s: needs a name, N, K >= 1 and a weight",
                        name ? name : "(null)");
    if (m && (m->m.N != N || m->m.K != K))
        return fail_msg(KILN_STATUS_INPUT, "layer %s (%lldx%lld): the method ran on %lldx%lld", name,
                        (long long)N, (long long)K, (long long)m->m.N, (long long)m->m.K);
    if (strlen(name) >= sizeof((KilnLinear){0}.name))
        return fail_msg(KILN_STATUS_INPUT, "layer name of %zu bytes: at most %zu", strlen(name),
                        sizeof((KilnLinear){0}.name) - 1);
    KilnLinear l = {.N = N, .K = K, .w = (float *)weight, .b = (float *)bias,
                    .cap = (float *)calib_x, .cap_rows = calib_x ? calib_rows : 0};
    snprintf(l.name, sizeof l.name, "%s", name);
    if (m) {
        l.w = m->m.wt;
        l.q_w = m->m.qw, l.q_scale = m->m.scale, l.q_zero = m->m.zero;
    }
    return bind_one(ctx, r, &l, out);
}

/* ---------------------------------------------------------------- overhead */

static double ns_between(const struct timespec *a, const struct timespec *b)
{
    return (double)(b->tv_sec - a->tv_sec) * 1e9 + (double)(b->tv_nsec - a->tv_nsec);
}

double kiln_py_time_run(kiln_layer *l, const float *x, int64_t M, void *y, int reps,
                        double *cpu_ns)
{
    struct timespec t0, t1, c0, c1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &c0);
    for (int i = 0; i < reps; i++) {
        kiln_status st = kiln_layer_run(l, x, M, y);
        if (st)
            return -(double)st;
    }
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &c1);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    if (cpu_ns)
        *cpu_ns = reps > 0 ? ns_between(&c0, &c1) / reps : 0;
    return reps > 0 ? ns_between(&t0, &t1) / reps : 0;
}

/* ---------------------------------------------------------------- kiln's numerics */

void kiln_py_rmsnorm(float *x, int64_t M, int64_t D, const float *g, float eps)
{
    kiln_rmsnorm(x, M, D, g, eps);
}

void kiln_py_silu_mul(float *g, const float *u, int64_t n) { kiln_silu_mul(g, u, n); }

void kiln_py_rope_table(int T, int pos0, int hd, float theta, float *cs, float *sn)
{
    kiln_rope_table(T, pos0, hd, theta, cs, sn);
}

kiln_status kiln_py_attention(const float *q, const float *k, const float *v, int T, int n,
                              int nh, int nkv, int hd, float *out)
{
    if (T < 1 || n < T || nh < 1 || nkv < 1 || nh % nkv || hd < 1)
        return fail_msg(KILN_STATUS_INPUT,
                        "kiln_py_attention: bad shape: %d queries over %d keys, %d heads over "
                        "%d KV heads of %d",
                        T, n, nh, nkv, hd);
    float *p = malloc(sizeof(float) * (size_t)n);
    if (!p)
        return fail_msg(KILN_STATUS_INTERNAL, "kiln_py_attention: out of memory for %d scores", n);
    kiln_llama_attention(q, k, v, T, n, nh, nkv, hd, p, out);
    free(p);
    py_err[0] = 0;
    return KILN_STATUS_OK;
}

void kiln_py_layernorm(float *x, int64_t M, int64_t D, const float *g, const float *b, float eps)
{
    kiln_layernorm(x, M, D, g, b, eps);
}

void kiln_py_gelu(float *x, int64_t n) { kiln_gelu_erf(x, n); }

kiln_status kiln_py_bert_attention(const float *q, const float *k, const float *v, int T, int nh,
                                   int hd, float *out)
{
    if (T < 1 || nh < 1 || hd < 1)
        return fail_msg(KILN_STATUS_INPUT,
                        "kiln_py_bert_attention: bad shape: %d tokens, %d heads of %d", T, nh, hd);
    float *p = malloc(sizeof(float) * (size_t)T);
    if (!p)
        return fail_msg(KILN_STATUS_INTERNAL, "kiln_py_bert_attention: out of memory for %d scores",
                        T);
    for (int h = 0; h < nh; h++)
        kiln_bert_attend(q, k, v, T, nh * hd, hd, h, p, out);
    free(p);
    py_err[0] = 0;
    return KILN_STATUS_OK;
}
