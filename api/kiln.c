/* api/kiln.c — the public API of include/kiln.h: a recipe's layer planned (api/plan.c),
 * then its kernel, weights and runs on the context's backend (api/backend.h: the CPU
 * JIT or CUDA). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kiln.h"

#include "api/backend.h"
#include "compile.h"
#include "frontend/recipe.h"
#include "ir/numerics.h"
#include "api/plan.h"
#include "passes/passes.h"

struct kiln_ctx {
    KilnBackend *be;
    int verbose;
    /* a layer may outlive kiln_ctx_destroy (its code and device memory are the
     * backend's): the context goes when it is destroyed and its last layer is */
    _Atomic int refs; /* 1 for the caller's handle, 1 per live layer */
    char err[1400];
};

struct kiln_recipe {
    KilnRecipe *r;
    bool borrowed; /* kiln_recipe_borrow: the caller frees r */
};

struct kiln_layer {
    kiln_ctx *ctx;
    void *kernel, *weights; /* the backend's */
    char *ir;
    char desc[256];
    char wfmt[64]; /* kiln_layer_weight_format */
    kiln_dtype out;
    bool has_bias;
    KilnEpilogue epi;
};

static char create_err[1400];

static kiln_status fail(kiln_ctx *ctx, const KilnDiag *d)
{
    char *buf = ctx ? ctx->err : create_err;
    kiln_diag_format(d, buf, sizeof create_err);
    return d->code == KILN_EINPUT   ? KILN_STATUS_INPUT
           : d->code == KILN_ENODEV ? KILN_STATUS_NODEV
                                    : KILN_STATUS_INTERNAL;
}

const char *kiln_error(const kiln_ctx *ctx) { return ctx ? ctx->err : create_err; }
const char *kiln_ctx_target(const kiln_ctx *ctx) { return ctx->be->target.name; }

kiln_status kiln_ctx_create(const kiln_options *opts, kiln_ctx **out)
{
    kiln_options o = opts ? *opts : (kiln_options){0};
    KilnDiag d = {0};
    *out = NULL;
    create_err[0] = 0;
    kiln_ctx *c = calloc(1, sizeof *c);
    if (!c) {
        kiln_diag_set(&d, KILN_EINTERNAL, "out of memory");
        return fail(NULL, &d);
    }
    c->verbose = o.verbose;
    c->refs = 1;
    int rc = o.aot_dir ? kiln_backend_aot_open(o.aot_dir, o.num_threads, o.verbose != 0, &c->be, &d)
                       : kiln_backend_open(o.target ? o.target : "cpu", o.cache_dir,
                                           o.num_threads, o.verbose != 0, &c->be, &d);
    if (!rc && o.aot_dir && o.target) {
        KilnTarget want;
        rc = kiln_target_lookup(o.target, &want, &d);
        if (!rc && strcmp(want.name, c->be->target.name))
            rc = kiln_diag_set(&d, KILN_EINPUT, "target '%s' asked, but the AOT library in %s "
                               "was built for '%s'", o.target, o.aot_dir, c->be->target.name);
    }
    if (rc) {
        kiln_ctx_destroy(c);
        return fail(NULL, &d);
    }
    *out = c;
    return KILN_STATUS_OK;
}

static void ctx_release(kiln_ctx *ctx)
{
    if (--ctx->refs > 0)
        return;
    if (ctx->be)
        ctx->be->ops->close(ctx->be);
    free(ctx);
}

void kiln_ctx_destroy(kiln_ctx *ctx)
{
    if (ctx)
        ctx_release(ctx);
}

kiln_status kiln_recipe_open(kiln_ctx *ctx, const char *path, kiln_recipe **out)
{
    KilnDiag d = {0};
    *out = NULL;
    kiln_recipe *r = calloc(1, sizeof *r);
    if (!r) {
        kiln_diag_set(&d, KILN_EINTERNAL, "out of memory");
        return fail(ctx, &d);
    }
    if (kiln_recipe_load(path, &r->r, &d)) {
        free(r);
        return fail(ctx, &d);
    }
    *out = r;
    return KILN_STATUS_OK;
}

void kiln_recipe_close(kiln_recipe *r)
{
    if (!r)
        return;
    if (!r->borrowed)
        kiln_recipe_free(r->r);
    free(r);
}

/* A static activation scale the recipe left open is taken from calibration rows (the
 * planner does it); without them the layer cannot run. */
static int check_calibrated(const KilnFunc *f, const kiln_layer_desc *desc, KilnDiag *d)
{
    const KilnInst *g = kiln_find_qgemm(f);
    const KilnAttr *act = g ? kiln_get(g, "act") : NULL;
    if (!act || act->q.dynamic || act->q.scale != 0)
        return 0;
    return kiln_diag_set(d, KILN_EINPUT,
                         "layer '%s': static activation scale needs calibration rows "
                         "(calib_x) or a scale in the recipe",
                         desc->name);
}

/* "<layout>: w <weight spec|f32>, a <act spec|dtype>[, epilogue][, out dtype]" */
static void describe(kiln_layer *l, const KilnFunc *f)
{
    const KilnInst *g = kiln_find_qgemm(f);
    const KilnType *wt = &f->values[g->ops[1]].type;
    const KilnAttr *act = kiln_get(g, "act"), *adt = kiln_get(g, "act_dtype");
    const KilnAttr *epi = kiln_get(g, "epilogue");
    char w[96] = "f32", a[96];
    if (wt->q.fmt != KILN_QF_NONE)
        kiln_spec_print(&wt->q, w, sizeof w);
    if (act) { /* the format, not this layer's calibrated scale */
        KilnQuantSpec q = act->q;
        q.scale = 0;
        q.zero = 0;
        kiln_spec_print(&q, a, sizeof a);
    }
    else
        snprintf(a, sizeof a, "%s", adt ? adt->s : "f32");
    int n = snprintf(l->desc, sizeof l->desc, "%s: w %s, a %s",
                     l->ctx->be->ops->kernel_layout(l->kernel), w, a);
    if (epi && strcmp(epi->s, "none") && n < (int)sizeof l->desc)
        n += snprintf(l->desc + n, sizeof l->desc - (size_t)n, ", %s", epi->s);
    KilnDType odt = f->values[g->result].type.dt;
    if (odt != KILN_F32 && n < (int)sizeof l->desc)
        n += snprintf(l->desc + n, sizeof l->desc - (size_t)n, ", out %s", kiln_dtype_name(odt));
    const KilnAttr *ol = kiln_get(g, "outliers");
    if (ol && n < (int)sizeof l->desc)
        snprintf(l->desc + n, sizeof l->desc - (size_t)n, ", %lld outlier column%s in f32",
                 (long long)ol->nints, ol->nints == 1 ? "" : "s");
}

static void weight_format(const KilnFunc *f, char *buf, size_t n)
{
    const KilnType *wt = &f->values[kiln_find_qgemm(f)->ops[1]].type;
    if (wt->q.fmt == KILN_QF_NONE) {
        snprintf(buf, n, "f32");
        return;
    }
    KilnQuantSpec q = {.fmt = wt->q.fmt, .symmetric = wt->q.symmetric, .gran = wt->q.gran,
                       .group = wt->q.group};
    kiln_spec_print(&q, buf, n);
}

kiln_status kiln_layer_plan_format(kiln_ctx *ctx, const kiln_recipe *r, const char *name,
                                   int64_t N, int64_t K, char *buf, size_t n)
{
    KilnDiag d = {0};
    if (!r || !name || !buf || n == 0 || N <= 0 || K <= 0) {
        kiln_diag_set(&d, KILN_EINPUT, "kiln_layer_plan_format: need a recipe, a name, a "
                      "buffer, N > 0 and K > 0");
        return fail(ctx, &d);
    }
    KilnQuantSpec q;
    if (!kiln_recipe_layer_weights(r->r, name, K, &ctx->be->target, &q)) {
        snprintf(buf, n, "f32");
        return KILN_STATUS_OK;
    }
    KilnQuantSpec w = {.fmt = q.fmt, .symmetric = q.symmetric, .gran = q.gran, .group = q.group};
    kiln_spec_print(&w, buf, n);
    return KILN_STATUS_OK;
}

/* The rest of kiln_layer_create once the layer is planned: its kernel, the outlier
 * side part, the weights, the bias, the description. */
float *kiln_weight_rows_whole(const KilnWeightRows *rows, const kiln_layer_desc *desc,
                              KilnDiag *d)
{
    float *all = malloc(sizeof(float) * (size_t)(desc->N * desc->K));
    if (!all) {
        kiln_diag_set(d, KILN_EINTERNAL, "layer '%s': out of memory", desc->name);
        return NULL;
    }
    int64_t step = rows->chunk_rows > 0 ? rows->chunk_rows : desc->N;
    for (int64_t n0 = 0; n0 < desc->N; n0 += step)
        if (rows->read(rows->arg, n0, desc->N - n0 < step ? desc->N - n0 : step,
                       all + n0 * desc->K, d)) {
            free(all);
            return NULL;
        }
    return all;
}

/* rows read whole, for a backend that takes the matrix whole */
static int weights_whole(kiln_ctx *ctx, void *k, const KilnFunc *f, const kiln_layer_desc *desc,
                         const KilnWeightRows *rows, void **w, KilnDiag *d)
{
    float *all = kiln_weight_rows_whole(rows, desc, d);
    if (!all)
        return d->code ? d->code : KILN_EINTERNAL;
    kiln_layer_desc whole = *desc;
    whole.weight = all;
    int rc = ctx->be->ops->weights(ctx->be, k, f, &whole, w, d);
    free(all);
    return rc;
}

static int finish_layer(kiln_ctx *ctx, const KilnPlanLayer *p, const kiln_layer_desc *desc,
                        const KilnWeightRows *rows, kiln_layer *l, KilnDiag *d)
{
    const KilnFunc *f = p->f;
    const KilnBackendOps *ops = ctx->be->ops;
    if (!p->qgemm) /* every layer fuses, ignored ones on f32 weights */
        return kiln_diag_set(d, KILN_EINTERNAL, "layer '%s': the passes left no qgemm",
                             desc->name);
    l->ctx = ctx;
    ctx->refs++;
    int rc = check_calibrated(f, desc, d);
    if (!rc)
        rc = ops->kernel(ctx->be, f, &l->kernel, d);
    if (!rc && rows && ops->weights_rows)
        rc = ops->weights_rows(ctx->be, l->kernel, f, desc, rows, &l->weights, d);
    else if (!rc && rows)
        rc = weights_whole(ctx, l->kernel, f, desc, rows, &l->weights, d);
    else if (!rc)
        rc = ops->weights(ctx->be, l->kernel, f, desc, &l->weights, d);
    if (rc)
        return rc;
    weight_format(f, l->wfmt, sizeof l->wfmt);
    describe(l, f);
    l->ir = kiln_print_func_str(f);
    const KilnInst *g = p->qgemm;
    const KilnAttr *ea = kiln_get(g, "epilogue");
    l->has_bias = kiln_qgemm_bias(g) >= 0;
    l->epi = ea && ea->s && !strcmp(ea->s, "silu")   ? KILN_EPI_SILU
             : ea && ea->s && !strcmp(ea->s, "gelu") ? KILN_EPI_GELU
                                                     : KILN_EPI_NONE;
    KilnDType odt = f->values[g->result].type.dt;
    l->out = odt == KILN_F16    ? KILN_DTYPE_F16
             : odt == KILN_BF16 ? KILN_DTYPE_BF16
                                : KILN_DTYPE_F32;
    return 0;
}

static kiln_status create_from(kiln_ctx *ctx, const KilnPlanLayer *p, const kiln_layer_desc *desc,
                               const KilnWeightRows *rows, kiln_layer **out)
{
    KilnDiag d = {0};
    kiln_layer *l = calloc(1, sizeof *l);
    int rc = l ? finish_layer(ctx, p, desc, rows, l, &d)
               : kiln_diag_set(&d, KILN_EINTERNAL, "out of memory");
    if (rc) {
        kiln_layer_destroy(l);
        return fail(ctx, &d);
    }
    *out = l;
    return KILN_STATUS_OK;
}

static int parse_formats(const kiln_layer_desc *desc, KilnQuantSpec *stored,
                         KilnQuantSpec *stored_act, KilnPlanLayer *p, KilnDiag *d)
{
    if (desc->weight_format) {
        if (kiln_spec_parse(desc->weight_format, stored))
            return kiln_diag_set(d, KILN_EINPUT, "layer '%s': weight_format \"%s\" is not a "
                                 "weight format (e.g. \"int4 asym group=128\", \"int8 sym "
                                 "channel\")", desc->name, desc->weight_format);
        p->stored = stored;
    }
    if (desc->act_format) {
        if (kiln_spec_parse_full(desc->act_format, stored_act))
            return kiln_diag_set(d, KILN_EINPUT, "layer '%s': act_format \"%s\" is not an "
                                 "activation format (e.g. \"int8 sym token dynamic\", \"int8 sym "
                                 "tensor scale=0.0123\")", desc->name, desc->act_format);
        p->stored_act = stored_act;
    }
    return 0;
}

static kiln_status create(kiln_ctx *ctx, const kiln_recipe *r, const kiln_layer_desc *desc,
                          const KilnWeightRows *rows, kiln_layer **out)
{
    KilnDiag d = {0};
    *out = NULL;
    if (!desc || !desc->name || !(rows ? rows->read != NULL : desc->weight != NULL) ||
        desc->N <= 0 || desc->K <= 0) {
        kiln_diag_set(&d, KILN_EINPUT, "kiln_layer_create: need a name, N > 0, K > 0 and weights");
        return fail(ctx, &d);
    }
    KilnModule *m = kiln_module_new();
    KilnQuantSpec stored, stored_act;
    KilnPlanLayer p = {.name = desc->name, .M = 1, .any_m = true, .N = desc->N, .K = desc->K,
                       .calib_x = desc->calib_x, .calib_rows = desc->calib_rows};
    int rc = m ? parse_formats(desc, &stored, &stored_act, &p, &d)
               : kiln_diag_set(&d, KILN_EINTERNAL, "out of memory");
    if (!rc)
        rc = kiln_plan_layers(r->r, &ctx->be->target, &p, 1, m, NULL, &d);
    kiln_status st = rc ? fail(ctx, &d) : create_from(ctx, &p, desc, rows, out);
    kiln_module_free(m);
    return st;
}

kiln_status kiln_layer_create(kiln_ctx *ctx, const kiln_recipe *r, const kiln_layer_desc *desc,
                              kiln_layer **out)
{
    return create(ctx, r, desc, NULL, out);
}

kiln_status kiln_layer_create_rows(kiln_ctx *ctx, const kiln_recipe *r,
                                   const kiln_layer_desc *desc, const KilnWeightRows *rows,
                                   kiln_layer **out)
{
    return create(ctx, r, desc, rows, out);
}

kiln_status kiln_layer_create_planned(kiln_ctx *ctx, const KilnPlanLayer *p,
                                      const kiln_layer_desc *desc, kiln_layer **out)
{
    *out = NULL;
    return create_from(ctx, p, desc, NULL, out);
}

kiln_recipe *kiln_recipe_borrow(const KilnRecipe *fr)
{
    kiln_recipe *r = calloc(1, sizeof *r);
    if (r) {
        r->r = (KilnRecipe *)fr;
        r->borrowed = true;
    }
    return r;
}

const KilnRecipe *kiln_recipe_frontend(const kiln_recipe *r) { return r ? r->r : NULL; }
const KilnTarget *kiln_ctx_target_full(const kiln_ctx *ctx) { return &ctx->be->target; }
struct KilnPool *kiln_ctx_pool(kiln_ctx *ctx) { return kiln_backend_cpu_pool(ctx->be); }

kiln_status kiln_layer_run(kiln_layer *l, const float *x, int64_t M, void *y)
{
    KilnDiag d = {0};
    if (!x || !y || M <= 0) {
        kiln_diag_set(&d, KILN_EINPUT, "kiln_layer_run: need x, y and M >= 1 (got M=%lld)",
                      (long long)M);
        return fail(l->ctx, &d);
    }
    KilnBackend *be = l->ctx->be;
    if (be->ops->run(be, l->kernel, l->weights, x, M, y, &d))
        return fail(l->ctx, &d);
    return KILN_STATUS_OK;
}

kiln_dtype kiln_layer_out_dtype(const kiln_layer *l) { return l->out; }
const char *kiln_layer_kernel(const kiln_layer *l)
{
    return l->ctx->be->ops->kernel_layout(l->kernel);
}
const char *kiln_layer_describe(const kiln_layer *l) { return l->desc; }
size_t kiln_layer_weight_bytes(const kiln_layer *l)
{
    return l->ctx->be->ops->weight_bytes(l->weights);
}
const char *kiln_layer_ir(const kiln_layer *l) { return l->ir; }
const char *kiln_layer_weight_format(const kiln_layer *l) { return l->wfmt; }
int kiln_layer_has_bias(const kiln_layer *l) { return l->has_bias ? 1 : 0; }
const char *kiln_layer_epilogue(const kiln_layer *l)
{
    return l->epi == KILN_EPI_SILU ? "silu" : l->epi == KILN_EPI_GELU ? "gelu" : "none";
}

void kiln_layer_destroy(kiln_layer *l)
{
    if (!l)
        return;
    if (l->ctx) {
        KilnBackend *be = l->ctx->be;
        if (l->weights)
            be->ops->weights_free(be, l->weights);
        if (l->kernel)
            be->ops->kernel_free(be, l->kernel);
        ctx_release(l->ctx);
    }
    free(l->ir);
    free(l);
}
