/* api/kiln.c — the public API of include/kiln.h: recipe -> lowered layer -> passes ->
 * cached kernel -> quantized, prepacked weights -> runs on the thread pool. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kiln.h"

#include "compile.h"
#include "frontend/recipe.h"
#include "ir/numerics.h"
#include "passes/passes.h"

struct kiln_ctx {
    KilnTarget target;
    KilnCompiler *compiler;
    KilnPool *pool;
    int verbose;
    char err[1400];
};

struct kiln_recipe {
    KilnRecipe *r;
};

struct kiln_layer {
    kiln_ctx *ctx;
    KilnCompiled k;
    void *wpack;
    float *bias;
    char *ir;
    char desc[256];
    kiln_dtype out;
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
const char *kiln_ctx_target(const kiln_ctx *ctx) { return ctx->target.name; }

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
    int rc = kiln_target_lookup(o.target ? o.target : "cpu", &c->target, &d);
    if (!rc && c->target.kind != KILN_TGT_CPU)
        rc = kiln_diag_set(&d, KILN_EINPUT,
                           "target '%s' is not a CPU target (the API runs cpu, avx2, avx512)",
                           c->target.name);
    if (!rc && !kiln_rt_cpu_supports(c->target.name))
        rc = kiln_diag_set(&d, KILN_ENODEV, "this CPU cannot run target '%s'", c->target.name);
    if (!rc)
        rc = kiln_compiler_new(o.cache_dir, &c->compiler, &d);
    if (!rc)
        rc = kiln_pool_new(o.num_threads, &c->pool, &d);
    if (rc) {
        kiln_ctx_destroy(c);
        return fail(NULL, &d);
    }
    *out = c;
    return KILN_STATUS_OK;
}

void kiln_ctx_destroy(kiln_ctx *ctx)
{
    if (!ctx)
        return;
    kiln_compiler_free(ctx->compiler);
    kiln_pool_free(ctx->pool);
    free(ctx);
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
    kiln_recipe_free(r->r);
    free(r);
}

/* A static activation scale the recipe left open is taken from calibration rows. */
static int calibrate(KilnFunc *f, const kiln_layer_desc *desc, KilnDiag *d)
{
    const KilnInst *g = kiln_find_qgemm(f);
    const KilnAttr *act = g ? kiln_get(g, "act") : NULL;
    if (!act || act->q.dynamic || act->q.scale != 0)
        return 0;
    if (!desc->calib_x || desc->calib_rows <= 0)
        return kiln_diag_set(d, KILN_EINPUT,
                             "layer '%s': static activation scale needs calibration rows "
                             "(calib_x) or a scale in the recipe",
                             desc->name);
    kiln_calibrate_static(f, desc->calib_x, desc->calib_rows * desc->K);
    return 0;
}

static int prepack_weights(kiln_layer *l, const KilnFunc *f, const kiln_layer_desc *desc,
                           KilnDiag *d)
{
    const KilnInst *g = kiln_find_qgemm(f);
    KilnTensor wq = {0};
    int rc = kiln_tensor_alloc(&wq, &f->values[g->ops[1]].type);
    if (!rc && wq.type.q.fmt == KILN_QF_NONE) /* a layer the recipe leaves in f32 */
        memcpy(wq.data, desc->weight, sizeof(float) * (size_t)(desc->N * desc->K));
    else if (!rc)
        rc = kiln_quantize_matrix(&wq.type.q, desc->weight, desc->N, desc->K, wq.data, wq.scales,
                                  wq.zeros, d);
    if (!rc) {
        l->wpack = kiln_rt_alloc(l->k.layout.pack_bytes);
        rc = l->wpack ? kiln_prepack(&l->k.layout, &wq, l->wpack, d)
                      : kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
    }
    kiln_tensor_free(&wq);
    return rc;
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
    int n = snprintf(l->desc, sizeof l->desc, "%s: w %s, a %s", l->k.layout.name, w, a);
    if (epi && strcmp(epi->s, "none") && n < (int)sizeof l->desc)
        n += snprintf(l->desc + n, sizeof l->desc - (size_t)n, ", %s", epi->s);
    KilnDType odt = f->values[g->result].type.dt;
    if (odt != KILN_F32 && n < (int)sizeof l->desc)
        snprintf(l->desc + n, sizeof l->desc - (size_t)n, ", out %s", kiln_dtype_name(odt));
}

kiln_status kiln_layer_create(kiln_ctx *ctx, const kiln_recipe *r, const kiln_layer_desc *desc,
                              kiln_layer **out)
{
    KilnDiag d = {0};
    *out = NULL;
    if (!desc || !desc->name || !desc->weight || desc->N <= 0 || desc->K <= 0) {
        kiln_diag_set(&d, KILN_EINPUT, "kiln_layer_create: need a name, N > 0, K > 0 and weights");
        return fail(ctx, &d);
    }
    kiln_layer *l = calloc(1, sizeof *l);
    KilnModule *m = kiln_module_new();
    KilnFunc *f = NULL;
    int rc = l ? 0 : kiln_diag_set(&d, KILN_EINTERNAL, "out of memory");
    if (!rc)
        rc = kiln_lower_layer(r->r, desc->name, 1, desc->N, desc->K, ctx->target.name, m, &f, &d);
    if (!rc)
        rc = kiln_run_pipeline(m, &ctx->target, NULL, &d);
    if (!rc && !kiln_find_qgemm(f)) /* every layer fuses, ignored ones on f32 weights */
        rc = kiln_diag_set(&d, KILN_EINTERNAL, "layer '%s': the passes left no qgemm",
                           desc->name);
    if (!rc)
        rc = calibrate(f, desc, &d);
    if (!rc)
        rc = kiln_compile_qgemm(ctx->compiler, f, &l->k, &d);
    if (!rc && ctx->verbose)
        fprintf(stderr, "kiln: %s: kernel %s (%s): cache %s, %.1f ms\n", desc->name,
                l->k.symbol, l->k.layout.name, l->k.cache_hit ? "hit" : "miss", l->k.compile_ms);
    if (!rc)
        rc = prepack_weights(l, f, desc, &d);
    if (!rc && l->k.layout.has_bias) {
        l->bias = calloc((size_t)desc->N, sizeof(float));
        if (!l->bias)
            rc = kiln_diag_set(&d, KILN_EINTERNAL, "out of memory");
        else if (desc->bias)
            memcpy(l->bias, desc->bias, sizeof(float) * (size_t)desc->N);
    }
    if (!rc) {
        l->ctx = ctx;
        describe(l, f);
        l->ir = kiln_print_module_str(m);
        l->out = l->k.layout.out_dt == KILN_F16    ? KILN_DTYPE_F16
                 : l->k.layout.out_dt == KILN_BF16 ? KILN_DTYPE_BF16
                                                   : KILN_DTYPE_F32;
    }
    kiln_module_free(m);
    if (rc) {
        kiln_layer_destroy(l);
        return fail(ctx, &d);
    }
    *out = l;
    return KILN_STATUS_OK;
}

kiln_status kiln_layer_run(kiln_layer *l, const float *x, int64_t M, void *y)
{
    KilnDiag d = {0};
    if (!x || !y || M <= 0) {
        kiln_diag_set(&d, KILN_EINPUT, "kiln_layer_run: need x, y and M >= 1 (got M=%lld)",
                      (long long)M);
        return fail(l->ctx, &d);
    }
    size_t scratch = kiln_layout_scratch_bytes(&l->k.layout, M);
    if (kiln_rt_qgemm(l->ctx->pool, l->k.fn, M, l->k.layout.N, l->k.layout.NR, x, l->wpack,
                      l->bias, y, scratch, &d))
        return fail(l->ctx, &d);
    return KILN_STATUS_OK;
}

kiln_dtype kiln_layer_out_dtype(const kiln_layer *l) { return l->out; }
const char *kiln_layer_kernel(const kiln_layer *l) { return l->k.layout.name; }
const char *kiln_layer_describe(const kiln_layer *l) { return l->desc; }
size_t kiln_layer_weight_bytes(const kiln_layer *l) { return l->k.layout.pack_bytes; }
const char *kiln_layer_ir(const kiln_layer *l) { return l->ir; }

void kiln_layer_destroy(kiln_layer *l)
{
    if (!l)
        return;
    kiln_rt_free(l->wpack);
    free(l->bias);
    free(l->ir);
    free(l);
}
