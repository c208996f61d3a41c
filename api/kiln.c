/* api/kiln.c — the public API of include/kiln.h: recipe -> lowered layer -> passes ->
 * cached kernel -> quantized, prepacked weights -> runs on the thread pool. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kiln.h"

#include "compile.h"
#include "outliers.h"
#include "frontend/recipe.h"
#include "ir/numerics.h"
#include "api/plan.h"
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
    bool borrowed; /* kiln_recipe_borrow: the caller frees r */
};

struct kiln_layer {
    kiln_ctx *ctx;
    KilnCompiled k;
    void *wpack;
    float *bias;
    char *ir;
    char desc[256];
    char wfmt[64]; /* kiln_layer_weight_format */
    kiln_dtype out;
    KilnOutlierPart *side; /* outliers = {...}: f32 columns and epilogue after the kernel */
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

/* Loading weights is the bulk of kiln_layer_create, so it runs on the context's pool.
 * Each task takes a block of NR-wide panels: it quantizes those rows into its thread's
 * buffer (kiln_quantize_matrix works row by row, so a block gets the codes and scales
 * the whole matrix would; a per-tensor scale is chosen first, over all of it, as
 * kiln_quantize_matrix does, and handed to the blocks as a fixed scale) and packs them
 * into the shared blob while they are in cache (kiln_prepack_panels: blocks write
 * disjoint bytes). */
typedef struct LoadScratch { /* one per pool thread, made by its first task */
    uint8_t *codes;
    float *scales;
    int32_t *zeros;
    bool made, failed;
} LoadScratch;

typedef struct LoadJob {
    const KilnLayout *L;
    const float *w;
    const float *gscale; /* the caller's grid (desc->weight_scale/zero), or NULL */
    const int32_t *gzero;
    KilnType wt;
    KilnQuantSpec spec; /* per-tensor: fixed to the whole matrix's params */
    bool quant, tensor, zeros;
    size_t rb;          /* bytes of one row of codes (f32: floats) */
    int64_t per_row;    /* scales per row (1 for tensor and channel) */
    int64_t ppt;        /* panels per task */
    uint8_t *blob;
    LoadScratch *scr;
    int *rc;
    KilnDiag *d;
    double *quant_ms, *pack_ms; /* per task, for verbose */
} LoadJob;

static void load_task(void *ctx, int t, int thread)
{
    LoadJob *j = ctx;
    const KilnLayout *L = j->L;
    int64_t p0 = t * j->ppt, p1 = p0 + j->ppt < L->npanels ? p0 + j->ppt : L->npanels;
    int64_t n0 = p0 * L->NR, n1 = p1 * L->NR < L->N ? p1 * L->NR : L->N, K = L->K;
    LoadScratch *s = &j->scr[thread];
    int64_t rows = j->ppt * L->NR;
    if (!s->made && j->quant) {
        s->codes = malloc((size_t)rows * j->rb);
        s->scales = malloc(sizeof(float) * (size_t)(rows * j->per_row));
        s->zeros = j->zeros ? malloc(sizeof(int32_t) * (size_t)(rows * j->per_row)) : NULL;
        s->failed = !s->codes || !s->scales || (j->zeros && !s->zeros);
    }
    s->made = true;
    if (s->failed) {
        j->rc[t] = kiln_diag_set(&j->d[t], KILN_EINTERNAL, "out of memory loading weights");
        return;
    }
    double t0 = kiln_now_ms();
    KilnTensor st = {.type = j->wt, .nbytes = (size_t)(n1 - n0) * j->rb};
    st.type.dim[0] = n1 - n0;
    if (j->quant) {
        st.data = s->codes;
        st.scales = s->scales;
        st.zeros = s->zeros;
        st.nscales = j->tensor ? 1 : (n1 - n0) * j->per_row;
        if (j->gscale) { /* the caller's grid: copy it, quantize onto it */
            int64_t ns = j->tensor ? 1 : (n1 - n0) * j->per_row, s0 = j->tensor ? 0 : n0 * j->per_row;
            memcpy(st.scales, j->gscale + s0, sizeof(float) * (size_t)ns);
            if (st.zeros)
                memcpy(st.zeros, j->gzero + s0, sizeof(int32_t) * (size_t)ns);
            j->rc[t] = kiln_quantize_matrix_with(&j->spec, j->w + n0 * K, n1 - n0, K, st.scales,
                                                 st.zeros, st.data, &j->d[t]);
        } else {
            j->rc[t] = kiln_quantize_matrix(&j->spec, j->w + n0 * K, n1 - n0, K, st.data,
                                            st.scales, st.zeros, &j->d[t]);
        }
        if (j->rc[t])
            return;
    } else {
        st.data = (void *)(j->w + n0 * K);
    }
    double t1 = kiln_now_ms();
    j->rc[t] = kiln_prepack_panels(L, &st, p0, p1, j->blob, &j->d[t]);
    j->quant_ms[t] = t1 - t0;
    j->pack_ms[t] = kiln_now_ms() - t1;
}

static int prepack_weights(kiln_ctx *ctx, kiln_layer *l, const KilnFunc *f,
                           const kiln_layer_desc *desc, KilnDiag *d)
{
    const KilnLayout *L = &l->k.layout;
    const KilnType *wt = &f->values[kiln_find_qgemm(f)->ops[1]].type;
    double t0 = kiln_now_ms();
    l->wpack = kiln_rt_alloc_weights(L->pack_bytes);
    if (!l->wpack)
        return kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
    bool quant = wt->q.fmt != KILN_QF_NONE;
    int nt = kiln_pool_size(ctx->pool);
    /* blocks of about 256 KiB of packed weight, at least 4 per thread to even out a
     * shared machine; a small weight stays on one block */
    int64_t ntasks = (int64_t)(L->pack_bytes >> 18);
    ntasks = ntasks < 4 * (int64_t)nt ? 4 * (int64_t)nt : ntasks;
    ntasks = L->N * L->K < (1 << 16) ? 1 : ntasks > L->npanels ? L->npanels : ntasks;
    LoadJob j = {.L = L, .w = desc->weight, .wt = *wt, .spec = wt->q, .quant = quant,
                 .tensor = quant && wt->q.gran == KILN_GRAN_TENSOR,
                 .zeros = quant && !wt->q.symmetric &&
                          (wt->q.fmt == KILN_QF_INT8 || wt->q.fmt == KILN_QF_INT4),
                 .rb = quant ? kiln_row_bytes(wt->dt, L->K) : sizeof(float) * (size_t)L->K,
                 .ppt = (L->npanels + ntasks - 1) / ntasks, .blob = l->wpack};
    ntasks = (L->npanels + j.ppt - 1) / j.ppt;
    j.per_row = quant && wt->q.gran == KILN_GRAN_GROUP ? (L->K + wt->q.group - 1) / wt->q.group : 1; /* ragged last group */
    if (quant && desc->weight_scale) {
        if (j.zeros && !desc->weight_zero)
            return kiln_diag_set(d, KILN_EINPUT, "layer '%s': weight_scale given without "
                                 "weight_zero for an asymmetric format (%s)", desc->name, l->wfmt);
        j.gscale = desc->weight_scale;
        j.gzero = desc->weight_zero;
        if (j.tensor) {
            j.spec.dynamic = false;
            j.spec.scale = desc->weight_scale[0];
            j.spec.zero = j.zeros ? desc->weight_zero[0] : 0;
        }
    } else if (j.tensor) { /* the one scale, from all of the matrix */
        bool sym = wt->q.symmetric || wt->q.fmt == KILN_QF_FP8_E4M3 ||
                   wt->q.fmt == KILN_QF_FP8_E5M2;
        KilnQParams p = {wt->q.scale, sym ? 0 : wt->q.zero};
        if (wt->q.dynamic || !(wt->q.scale > 0.0f)) {
            float lo, hi;
            kiln_calib_range(&wt->q, desc->weight, L->N * L->K, 1, &lo, &hi);
            p = kiln_qparams_from_range(wt->q.fmt, sym, lo, hi);
        }
        j.spec.dynamic = false;
        j.spec.scale = p.scale;
        j.spec.zero = p.zero;
    }
    j.scr = calloc((size_t)nt, sizeof *j.scr);
    j.rc = calloc((size_t)ntasks, sizeof *j.rc);
    j.d = calloc((size_t)ntasks, sizeof *j.d);
    j.quant_ms = calloc((size_t)ntasks * 2, sizeof(double));
    j.pack_ms = j.quant_ms ? j.quant_ms + ntasks : NULL;
    int rc = 0;
    if (j.scr && j.rc && j.d && j.quant_ms) {
        kiln_pool_run(ctx->pool, (int)ntasks, load_task, &j);
        for (int64_t t = 0; t < ntasks && !rc; t++)
            if (j.rc[t]) {
                *d = j.d[t];
                rc = j.rc[t];
            }
    } else {
        rc = kiln_diag_set(d, KILN_EINTERNAL, "out of memory loading weights");
    }
    if (!rc && ctx->verbose) {
        double qms = 0, pms = 0, ms = kiln_now_ms() - t0;
        for (int64_t t = 0; t < ntasks; t++) {
            qms += j.quant_ms[t];
            pms += j.pack_ms[t];
        }
        fprintf(stderr, "kiln: %s: weights [%lld,%lld] loaded in %.1f ms, %.2f GB/s of f32 in "
                "(%lld blocks on %d threads; quantize %.1f ms, prepack %.1f ms summed over "
                "blocks)\n", desc->name, (long long)L->N, (long long)L->K, ms,
                4e-6 * (double)(L->N * L->K) / (ms > 1e-6 ? ms : 1e-6), (long long)ntasks, nt,
                qms, pms);
    }
    for (int i = 0; j.scr && i < nt; i++) {
        free(j.scr[i].codes);
        free(j.scr[i].scales);
        free(j.scr[i].zeros);
    }
    free(j.scr);
    free(j.rc);
    free(j.d);
    free(j.quant_ms);
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
    if (!kiln_recipe_layer_weights(r->r, name, K, &q)) {
        snprintf(buf, n, "f32");
        return KILN_STATUS_OK;
    }
    KilnQuantSpec w = {.fmt = q.fmt, .symmetric = q.symmetric, .gran = q.gran, .group = q.group};
    kiln_spec_print(&w, buf, n);
    return KILN_STATUS_OK;
}

/* The rest of kiln_layer_create once the layer is planned: its kernel, the outlier
 * side part, the weights, the bias, the description. */
static int finish_layer(kiln_ctx *ctx, const KilnPlanLayer *p, const kiln_layer_desc *desc,
                        kiln_layer *l, KilnDiag *d)
{
    const KilnFunc *f = p->f;
    if (!p->qgemm) /* every layer fuses, ignored ones on f32 weights */
        return kiln_diag_set(d, KILN_EINTERNAL, "layer '%s': the passes left no qgemm",
                             desc->name);
    int rc = check_calibrated(f, desc, d);
    if (!rc)
        rc = kiln_compile_qgemm(ctx->compiler, f, &l->k, d);
    if (!rc)
        rc = kiln_api_outlier_part(f, desc, &l->side, d);
    if (!rc && ctx->verbose)
        fprintf(stderr, "kiln: %s: kernel %s (%s): cache %s, %.1f ms\n", desc->name,
                l->k.symbol, l->k.layout.name, l->k.cache_hit ? "hit" : "miss", l->k.compile_ms);
    if (!rc)
        weight_format(f, l->wfmt, sizeof l->wfmt);
    if (!rc)
        rc = prepack_weights(ctx, l, f, desc, d);
    if (!rc && l->k.layout.has_bias) {
        l->bias = calloc((size_t)desc->N, sizeof(float));
        if (!l->bias)
            rc = kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
        else if (desc->bias)
            memcpy(l->bias, desc->bias, sizeof(float) * (size_t)desc->N);
    }
    if (rc)
        return rc;
    l->ctx = ctx;
    describe(l, f);
    l->ir = kiln_print_func_str(f);
    KilnDType odt = l->side ? l->side->epi.out_dt : l->k.layout.out_dt;
    l->out = odt == KILN_F16    ? KILN_DTYPE_F16
             : odt == KILN_BF16 ? KILN_DTYPE_BF16
                                : KILN_DTYPE_F32;
    return 0;
}

static kiln_status create_from(kiln_ctx *ctx, const KilnPlanLayer *p, const kiln_layer_desc *desc,
                               kiln_layer **out)
{
    KilnDiag d = {0};
    kiln_layer *l = calloc(1, sizeof *l);
    int rc = l ? finish_layer(ctx, p, desc, l, &d)
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

kiln_status kiln_layer_create(kiln_ctx *ctx, const kiln_recipe *r, const kiln_layer_desc *desc,
                              kiln_layer **out)
{
    KilnDiag d = {0};
    *out = NULL;
    if (!desc || !desc->name || !desc->weight || desc->N <= 0 || desc->K <= 0) {
        kiln_diag_set(&d, KILN_EINPUT, "kiln_layer_create: need a name, N > 0, K > 0 and weights");
        return fail(ctx, &d);
    }
    KilnModule *m = kiln_module_new();
    KilnQuantSpec stored, stored_act;
    KilnPlanLayer p = {.name = desc->name, .M = 1, .N = desc->N, .K = desc->K,
                       .calib_x = desc->calib_x, .calib_rows = desc->calib_rows};
    int rc = m ? parse_formats(desc, &stored, &stored_act, &p, &d)
               : kiln_diag_set(&d, KILN_EINTERNAL, "out of memory");
    if (!rc)
        rc = kiln_plan_layers(r->r, &ctx->target, &p, 1, m, NULL, &d);
    kiln_status st = rc ? fail(ctx, &d) : create_from(ctx, &p, desc, out);
    kiln_module_free(m);
    return st;
}

kiln_status kiln_layer_create_planned(kiln_ctx *ctx, const KilnPlanLayer *p,
                                      const kiln_layer_desc *desc, kiln_layer **out)
{
    *out = NULL;
    return create_from(ctx, p, desc, out);
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
const KilnTarget *kiln_ctx_target_full(const kiln_ctx *ctx) { return &ctx->target; }

kiln_status kiln_layer_run(kiln_layer *l, const float *x, int64_t M, void *y)
{
    KilnDiag d = {0};
    if (!x || !y || M <= 0) {
        kiln_diag_set(&d, KILN_EINPUT, "kiln_layer_run: need x, y and M >= 1 (got M=%lld)",
                      (long long)M);
        return fail(l->ctx, &d);
    }
    if (l->side) {
        if (kiln_api_outlier_run(l->ctx->pool, l->side, l->k.fn, &l->k.layout, l->wpack, x, M,
                                 y, &d))
            return fail(l->ctx, &d);
        return KILN_STATUS_OK;
    }
    if (kiln_rt_qgemm_layout(l->ctx->pool, &l->k.layout, l->k.fn, M, x, l->wpack, l->bias, y, &d))
        return fail(l->ctx, &d);
    return KILN_STATUS_OK;
}

kiln_dtype kiln_layer_out_dtype(const kiln_layer *l) { return l->out; }
const char *kiln_layer_kernel(const kiln_layer *l) { return l->k.layout.name; }
const char *kiln_layer_describe(const kiln_layer *l) { return l->desc; }
size_t kiln_layer_weight_bytes(const kiln_layer *l) { return l->k.layout.pack_bytes; }
const char *kiln_layer_ir(const kiln_layer *l) { return l->ir; }
const char *kiln_layer_weight_format(const kiln_layer *l) { return l->wfmt; }
int kiln_layer_has_bias(const kiln_layer *l)
{
    return (l->side ? l->side->bias != NULL : l->k.layout.has_bias) ? 1 : 0;
}
const char *kiln_layer_epilogue(const kiln_layer *l)
{
    KilnEpilogue e = l->side ? l->side->epi.act : l->k.layout.epilogue;
    return e == KILN_EPI_SILU ? "silu" : e == KILN_EPI_GELU ? "gelu" : "none";
}

void kiln_layer_destroy(kiln_layer *l)
{
    if (!l)
        return;
    kiln_rt_free(l->wpack);
    free(l->bias);
    free(l->ir);
    kiln_api_outlier_free(l->side);
    free(l);
}
