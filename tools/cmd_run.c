/* tools/cmd_run.c — `kiln run`: build a layer on deterministic random data and run it on
 * a target. --check compares: interp against the unquantized f32 result (SQNR floor);
 * a CPU kernel against the reference interpreter on the same kernel IR (tolerance
 * derived from K and the formats, docs/numerics.md). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api/compile.h"
#include "codegen/ptx/ptx.h"
#include "frontend/recipe.h"
#include "ir/numerics.h"
#include "kiln.h"
#include "model/eval/layer_method.h"
#include "passes/passes.h"
#include "tool.h"

int tool_exit_code(int rc)
{
    return rc == KILN_EINPUT ? EXIT_INPUT : rc == KILN_ENODEV ? EXIT_NODEV : EXIT_INTERNAL;
}

/* One layer's data, generated once (tool_layer_data) and shared by the interpreter, the
 * kernel runs and the check; the quantized and dequantized weights are built on first use. */
typedef struct LayerData {
    uint64_t seed;
    int64_t N, K;
    char wname[TOOL_NAME_BYTES], bname[TOOL_NAME_BYTES];
    float *w, *b;   /* f32 W[N,K], bias[N] */
    KilnTensor wq;  /* quantized W, valid when have_wq */
    bool have_wq;
    float *deq;     /* dequantize(wq) */
    /* The rule's method on this layer (tool_plan): w is then its f32 weight after the
     * method (wt), the quantized layer takes lm->qw on lm's grid when GPTQ gave one;
     * f32_ref: the reference function is being run (it takes w). */
    const KilnLayerMethod *lm;
    bool f32_ref;
} LayerData;

/* The weight the quantized layer takes: GPTQ's grid values, else w. */
static const float *kernel_weight(const LayerData *ld)
{
    return ld->lm && ld->lm->qw ? ld->lm->qw : ld->w;
}

static int layer_data_init(LayerData *ld, uint64_t seed, const char *layer, int64_t N, int64_t K,
                           const KilnLayerMethod *lm)
{
    *ld = (LayerData){.seed = seed, .N = N, .K = K};
    snprintf(ld->wname, sizeof ld->wname, "%s.weight", layer);
    snprintf(ld->bname, sizeof ld->bname, "%s.bias", layer);
    int rc = tool_layer_data(seed, layer, N, K, &ld->w, &ld->b);
    if (!rc && lm && lm->wt && lm->N == N && lm->K == K) {
        ld->lm = lm;
        memcpy(ld->w, lm->wt, sizeof(float) * (size_t)(N * K));
    }
    return rc;
}

/* kiln_interp_run_grid's question: the method's grid for the layer's weight. */
static int method_grid(void *ctx, const char *name, const KilnType *t, float *scales,
                       int32_t *zeros)
{
    const LayerData *ld = ctx;
    const KilnLayerMethod *lm = ld->lm;
    int64_t ns = kiln_type_nscales(t);
    if (!lm || !lm->scale || strcmp(name, ld->wname) || ns > lm->nscales || (zeros && !lm->zero))
        return 0;
    memcpy(scales, lm->scale, sizeof(float) * (size_t)ns);
    if (zeros)
        memcpy(zeros, lm->zero, sizeof(int32_t) * (size_t)ns);
    return 1;
}

static void layer_data_free(LayerData *ld)
{
    free(ld->w);
    free(ld->b);
    free(ld->deq);
    kiln_tensor_free(&ld->wq);
}

/* W quantized to wqt (the kernel's weight operand); NULL (d filled) on failure. */
static const KilnTensor *layer_quantized(LayerData *ld, const KilnType *wqt, KilnDiag *d)
{
    if (ld->have_wq)
        return &ld->wq;
    if (kiln_tensor_alloc(&ld->wq, wqt)) {
        kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
        return NULL;
    }
    if (method_grid(ld, ld->wname, wqt, ld->wq.scales, ld->wq.zeros)) {
        if (kiln_quantize_matrix_with(&wqt->q, kernel_weight(ld), ld->N, ld->K, ld->wq.scales,
                                      ld->wq.zeros, ld->wq.data, d))
            return NULL;
    } else if (kiln_quantize_matrix(&wqt->q, ld->w, ld->N, ld->K, ld->wq.data, ld->wq.scales,
                                    ld->wq.zeros, d)) {
        return NULL;
    }
    ld->have_wq = true;
    return &ld->wq;
}

/* The interpreter's weights: the layer's own from LayerData, anything else generated the
 * same way (N(0, 1/sqrt(K)), rank-1 N(0, 0.1)). */
static int make_weight(void *ctx, const char *name, KilnTensor *out, KilnDiag *d)
{
    const LayerData *ld = ctx;
    if (out->type.dt != KILN_F32)
        return kiln_diag_set(d, KILN_EINTERNAL, "weight '%s' is not f32", name);
    int64_t n = kiln_type_numel(&out->type);
    if (!strcmp(name, ld->wname) && n == ld->N * ld->K)
        memcpy(out->data, ld->f32_ref ? ld->w : kernel_weight(ld), sizeof(float) * (size_t)n);
    else if (!strcmp(name, ld->bname) && n == ld->N)
        memcpy(out->data, ld->b, sizeof(float) * (size_t)n);
    else
        tool_fill_normal(out->data, n, ld->seed, name,
                         out->type.rank == 1 ? TOOL_BIAS_SIGMA
                                             : tool_weight_sigma(out->type.dim[out->type.rank - 1]));
    return 0;
}

/* The f32 reference of a lowered layer: same weight, bias and activation, no quantization. */
static KilnFunc *reference_func(KilnModule *m, const KilnFunc *q, const KilnInst *g)
{
    const KilnType *xt = &q->values[q->params[0]].type;
    int64_t M = xt->dim[0], K = xt->dim[1], N = q->values[g->result].type.dim[1];
    char name[TOOL_NAME_BYTES];
    snprintf(name, sizeof name, "%s.f32", q->name);
    KilnFunc *f = kiln_func_new(m, name);
    int x = kiln_func_param(f, "x", kiln_type2(KILN_F32, M, K));
    snprintf(name, sizeof name, "%s.weight", q->name);
    int w = kiln_emit(f, KILN_OP_WEIGHT, NULL, 0, kiln_type2(KILN_F32, N, K), "w");
    kiln_set_str(f, kiln_last(f), "name", name);
    int ops[2] = {x, w};
    int y = kiln_emit(f, KILN_OP_MATMUL, ops, 2, kiln_type2(KILN_F32, M, N), NULL);
    if (kiln_qgemm_bias(g) >= 0) {
        snprintf(name, sizeof name, "%s.bias", q->name);
        int b = kiln_emit(f, KILN_OP_WEIGHT, NULL, 0, kiln_type1(KILN_F32, N), "b");
        kiln_set_str(f, kiln_last(f), "name", name);
        int ob[2] = {y, b};
        y = kiln_emit(f, KILN_OP_BIAS_ADD, ob, 2, kiln_type2(KILN_F32, M, N), NULL);
    }
    const KilnAttr *epi = g->op == KILN_OP_QGEMM ? kiln_get(g, "epilogue") : NULL;
    if (epi && !strcmp(epi->s, "silu"))
        y = kiln_emit(f, KILN_OP_SILU, &y, 1, kiln_type2(KILN_F32, M, N), NULL);
    else if (epi && !strcmp(epi->s, "gelu"))
        y = kiln_emit(f, KILN_OP_GELU, &y, 1, kiln_type2(KILN_F32, M, N), NULL);
    kiln_emit(f, KILN_OP_RETURN, &y, 1, (KilnType){0}, NULL);
    return f;
}

static float value_at(KilnDType dt, const void *data, int64_t i)
{
    if (dt == KILN_F32)
        return ((const float *)data)[i];
    uint16_t h = ((const uint16_t *)data)[i];
    return dt == KILN_F16 ? kiln_f16_to_f32(h) : kiln_bf16_to_f32(h);
}

/* SQNR floor against f32 on Gaussian data: the weakest format of weights and
 * activations sets it (docs/numerics.md explains the numbers). */
static double sqnr_floor(const KilnFunc *f, const KilnInst *g)
{
    static const double fl[KILN_NQFORMATS] = {[KILN_QF_NONE] = 40, [KILN_QF_INT8] = 30,
                                              [KILN_QF_INT4] = 14, [KILN_QF_FP8_E4M3] = 25,
                                              [KILN_QF_FP8_E5M2] = 18};
    if (g->op != KILN_OP_QGEMM)
        return 60;
    const KilnAttr *act = kiln_get(g, "act");
    double fw = fl[f->values[g->ops[1]].type.q.fmt];
    double fa = act ? fl[act->q.fmt] : 40;
    double floor_db = fw < fa ? fw : fa;
    if (f->values[g->result].type.dt != KILN_F32 && floor_db > 30)
        floor_db = 30; /* 16-bit output rounding */
    return floor_db;
}

/* Σ_k max|x| of k's block · |deqW[n,k]|: what rounding row m's activations to the
 * byte planes of an act_planes layout (ir/layout.h) may cost, times 2^-30 per block
 * maximum (the check allows twice that). */
static double planes_bound(const float *x, const float *deq, int64_t m, int64_t n, int64_t K,
                           int64_t ablk)
{
    double s = 0, bmax = 0;
    for (int64_t k = 0; k < K; k++) {
        if (k % ablk == 0) {
            bmax = 0;
            for (int64_t kk = k; kk < k + ablk && kk < K; kk++)
                bmax = fmax(bmax, fabs(x[m * K + kk]));
        }
        s += bmax * fabs(deq[n * K + k]);
    }
    return s;
}

/* Kernel vs interpreter. Both compute the same quantized math; they may differ only
 * in the order of float operations (and, for act_planes decode rows, in activations
 * more than 2^29 below their block's largest, planes_bound). With u = 2^-24 and B = Σ_k |a_k|·|w_k| (from the
 * dequantized operands), f32 summation in any order is within K·u·B (Higham); we allow
 * 2·K·u·B + 8u·|y| for the scale products, plus one unit in the last place of a 16-bit
 * output, times 1.25 for silu/gelu (|derivative| <= 1.13). Integer paths are exact in
 * their accumulators, so they pass far inside this bound. */
static int check_kernel(const KilnFunc *f, const KilnInst *g, const float *x, const void *y,
                        const KilnTensor *yi, LayerData *ld, int64_t M, int64_t N, int64_t K,
                        double *worst)
{
    KilnDiag d = {0};
    const KilnType *wt = &f->values[g->ops[1]].type;
    const float *deq = ld->w; /* an unquantized layer: deqW = w */
    int rc = 0;
    if (wt->q.fmt != KILN_QF_NONE) {
        const KilnTensor *wq = NULL;
        if (!ld->deq && !(ld->deq = malloc(sizeof(float) * (size_t)(N * K))))
            rc = -1;
        else if (!(wq = layer_quantized(ld, wt, &d)))
            rc = -1;
        else
            rc = kiln_dequantize_matrix(&wt->q, wq->data, wq->scales, wq->zeros, N, K, ld->deq,
                                        &d);
        deq = ld->deq;
    }
    /* zero-by-sum layouts also sum the offset Z*s along (docs/numerics.md) */
    float *zs = NULL;
    KilnLayout lay = {0};
    if (!rc && wt->q.fmt != KILN_QF_NONE && kiln_layout_for(g, f, &lay, &d) == 0 && lay.zero_by_sum) {
        const KilnTensor *wq = layer_quantized(ld, wt, &d);
        zs = malloc(sizeof(float) * (size_t)(N * K));
        rc = !wq || !zs || kiln_layout_offset_magnitudes(&lay, wq, zs, &d) ? -1 : 0;
    }
    int bad = 0;
    *worst = 0;
    const double u = 0x1p-24;
    KilnDType odt = f->values[g->result].type.dt;
    double ulp16 = odt == KILN_F16 ? 0x1p-10 : odt == KILN_BF16 ? 0x1p-7 : 0;
    const KilnAttr *epi = kiln_get(g, "epilogue");
    double fudge = epi && strcmp(epi->s, "none") ? 1.25 : 1.0;
    for (int64_t m = 0; !rc && m < M; m++)
        for (int64_t n = 0; n < N; n++) {
            double B = 0;
            for (int64_t k = 0; k < K; k++)
                B += fabs(x[m * K + k]) * (fabs(deq[n * K + k]) + (zs ? 2.0 * zs[n * K + k] : 0));
            double ref = value_at(odt, yi->data, m * N + n);
            double got = value_at(odt, y, m * N + n);
            double tol = fudge * (2.0 * (double)K * u * B * 1.02 + 8 * u * fabs(ref)) +
                         ulp16 * fabs(ref) + 1e-30;
            if (lay.act_planes && M < lay.planes_below_m)
                tol += fudge * ldexp(planes_bound(x, deq, m, n, K, lay.ablk), -29);
            double err = fabs(got - ref);
            if (!(err <= tol)) {
                if (bad++ < 5)
                    printf("  MISMATCH y[%lld,%lld]: kernel %.9g, interpreter %.9g, |diff| %.3g "
                           "> tolerance %.3g\n",
                           (long long)m, (long long)n, got, ref, err, tol);
            }
            if (err / tol > *worst)
                *worst = err / tol;
        }
    free(zs);
    if (rc && d.code)
        tool_error(&d);
    return rc ? -1 : bad;
}

typedef struct RunCtx {
    const ToolArgs *a;
    const KilnTarget *t;
    kiln_ctx *api;
    const KilnRecipe *r;
    bool ok;
} RunCtx;

/* Run the planned layer's kernel through the API (the path an engine takes) on the
 * context's backend (the CPU JIT or CUDA), from the plan itself: the layer is not
 * lowered a second time, and its weights are prepacked (and uploaded) once. */
static int run_api(RunCtx *rc, const KilnPlanLayer *p, const float *x, const LayerData *ld,
                   void **yout)
{
    int64_t M = p->M, N = p->N, K = p->K;
    kiln_layer_desc desc = {.name = p->name, .N = N, .K = K, .weight = kernel_weight(ld),
                            .bias = ld->b};
    if (ld->lm && ld->lm->scale) /* the method's grid, as kiln eval hands it over */
        desc.weight_scale = ld->lm->scale, desc.weight_zero = ld->lm->zero;
    kiln_layer *l = NULL;
    int e = EXIT_OK;
    if (kiln_layer_create_planned(rc->api, p, &desc, &l)) {
        fprintf(stderr, "kiln: %s\n", kiln_error(rc->api));
        e = EXIT_INPUT;
    } else {
        size_t osz = kiln_layer_out_dtype(l) == KILN_DTYPE_F32 ? 4 : 2;
        *yout = malloc(osz * (size_t)(M * N));
        double best = 1e30;
        for (int rep = 0; rep < 3 && *yout; rep++) {
            double t0 = kiln_now_ms();
            if (kiln_layer_run(l, x, M, *yout)) {
                fprintf(stderr, "kiln: %s\n", kiln_error(rc->api));
                e = EXIT_INTERNAL;
                break;
            }
            double dt = kiln_now_ms() - t0;
            best = dt < best ? dt : best;
        }
        if (!e)
            printf("  kernel ran in %.3f ms (best of 3), prepacked weights %zu bytes\n", best,
                   kiln_layer_weight_bytes(l));
    }
    kiln_layer_destroy(l);
    return e;
}

/* What static calibration chose: the recipe's method and the scale (and zero point) it
 * wrote into the qgemm's `act` spec. */
static void print_calibration(const KilnInst *g)
{
    const KilnAttr *aa = kiln_get(g, "act");
    if (!aa || aa->kind != KILN_ATTR_SPEC)
        return;
    const KilnQuantSpec *q = &aa->q;
    char how[64];
    if (q->calib == KILN_CAL_PERCENTILE)
        snprintf(how, sizeof how, "percentile %g of |x|", (double)q->pct);
    else
        snprintf(how, sizeof how, "%s", q->calib == KILN_CAL_MSE ? "mse" : "minmax");
    printf("  calibrated the static activation scale on a separate batch (%s): scale %.6g", how,
           (double)q->scale);
    if (!q->symmetric)
        printf(", zero point %d", (int)q->zero);
    printf("\n");
}

/* What the rule's method did on the synthetic layer, or that it did not run. */
static void print_method(const KilnLayerMethod *lm)
{
    if (lm && lm->skipped[0])
        printf("  method NOT applied, the kernel rounds to nearest: %s\n", lm->skipped);
    if (!lm || !lm->wt)
        return;
    printf("  method %s ran on a synthetic calibration batch of %lld rows; the kernel takes its "
           "weights%s\n", lm->ran, (long long)lm->rows,
           lm->in_div || lm->in_perm ? " and the input as the method transforms it" : "");
    printf("  weight error vs f32 on %lld of those rows: SQNR %.2f dB (round to nearest: %.2f "
           "dB)\n", (long long)lm->sqnr_rows, lm->sqnr_db, lm->rtn_sqnr_db);
}

static int run_one(RunCtx *rc, const KilnPlanLayer *p, const KilnLayerMethod *lm, KilnModule *m)
{
    const ToolArgs *a = rc->a;
    KilnFunc *f = p->f;
    KilnDiag d = {0};
    const KilnType *xt = &f->values[f->params[0]].type;
    int64_t M = xt->dim[0], K = xt->dim[1];
    const KilnInst *g = NULL;
    for (int i = 0; i < f->ninsts; i++)
        if (f->insts[i].op == KILN_OP_QGEMM || f->insts[i].op == KILN_OP_MATMUL)
            g = &f->insts[i];
    if (!g) {
        fprintf(stderr, "kiln: func @\"%s\" has no matmul or qgemm\n", f->name);
        return EXIT_INTERNAL;
    }
    int64_t N = f->values[g->result].type.dim[1];
    KilnTensor x = {0}, yi = {0}, yref = {0};
    LayerData ld;
    void *ycpu = NULL;
    int e = EXIT_OK;
    if (layer_data_init(&ld, a->seed, f->name, N, K, lm) || kiln_tensor_alloc(&x, xt)) {
        fprintf(stderr, "kiln: out of memory for the data of layer %s (M=%lld N=%lld K=%lld)\n",
                f->name, (long long)M, (long long)N, (long long)K);
        layer_data_free(&ld);
        return EXIT_INTERNAL;
    }
    tool_fill_normal(x.data, M * K, a->seed, "x", 1.0f);
    /* the planted channels of the plan's calibration batch (tool_plan) */
    tool_layer_outliers(a->seed, rc->r, f->name, x.data, M, K);
    if (ld.lm && kiln_layer_method_input(ld.lm, x.data, M)) { /* x[:, perm] / s */
        fprintf(stderr, "kiln: out of memory for the input of layer %s\n", f->name);
        e = EXIT_INTERNAL;
        goto out;
    }
    if (p->calibrated && a->verbose)
        print_calibration(g);

    const KilnAttr *lay = kiln_get(g, "layout");
    bool cpu = rc->t->kind == KILN_TGT_CPU, gpu = rc->t->kind == KILN_TGT_CUDA;
    bool dev = cpu || gpu; /* a generated kernel, checked against the interpreter */
    printf("layer %s  M=%lld N=%lld K=%lld  target %s  kernel %s\n", f->name, (long long)M,
           (long long)N, (long long)K, rc->t->name,
           lay ? lay->s : (g->op == KILN_OP_MATMUL ? "f32 matmul (not quantized)" : "-"));
    print_method(lm);
    if (cpu && g->op != KILN_OP_QGEMM) {
        fprintf(stderr, "kiln: func @\"%s\": the passes left a matmul, no kernel to run\n",
                f->name);
        e = EXIT_INTERNAL;
        goto out;
    }
    bool need_interp = !dev || a->check;
    double t0 = kiln_now_ms();
    if (need_interp && kiln_interp_run_grid(f, &x, 1, make_weight, &ld, method_grid, &ld, &yi, &d)) {
        tool_error(&d);
        e = tool_exit_code(d.code);
        goto out;
    }
    if (!dev)
        printf("  interpreter ran in %.3f ms\n", kiln_now_ms() - t0);
    if (dev && (e = run_api(rc, p, x.data, &ld, &ycpu)))
        goto out;
    KilnDType odt = f->values[g->result].type.dt;
    const void *y = dev ? ycpu : yi.data;
    printf("  y[0..%d] =", M * N < 4 ? (int)(M * N) - 1 : 3);
    for (int64_t i = 0; i < M * N && i < 4; i++)
        printf(" %.6g", value_at(odt, y, i));
    printf("\n");
    if (!a->check)
        goto out;

    KilnFunc *rf = reference_func(m, f, g);
    ld.f32_ref = true; /* x' · wtᵀ = x · Wᵀ: the method's f32 weight, not its grid */
    int rrc = kiln_interp_run(rf, &x, 1, make_weight, &ld, &yref, &d);
    ld.f32_ref = false;
    if (rrc) {
        tool_error(&d);
        e = tool_exit_code(d.code);
        goto out;
    }
    float *yf = malloc(sizeof(float) * (size_t)(M * N));
    for (int64_t i = 0; yf && i < M * N; i++)
        yf[i] = value_at(odt, y, i);
    KilnErrStats st = kiln_error_stats(yref.data, yf, M * N);
    free(yf);
    /* The floor is a statistical statement about Gaussian data: with too few outputs a
     * single unlucky draw says nothing about the quantizer, so it is not judged. */
    double floor_db = sqnr_floor(f, g);
    bool judged = M * N >= 32, pass_q = !judged || st.sqnr_db >= floor_db;
    if (judged)
        printf("  quantization error vs f32: max abs %.4g, rel %.4g, SQNR %.2f dB (floor %.0f "
               "dB): %s\n",
               st.max_abs, st.rel, st.sqnr_db, floor_db, pass_q ? "PASS" : "FAIL");
    else
        printf("  quantization error vs f32: max abs %.4g, rel %.4g, SQNR %.2f dB (floor not "
               "judged: %lld outputs < 32)\n",
               st.max_abs, st.rel, st.sqnr_db, (long long)(M * N));
    rc->ok = rc->ok && pass_q;
    if (dev) {
        double worst;
        int bad = check_kernel(f, g, x.data, ycpu, &yi, &ld, M, N, K, &worst);
        printf("  kernel vs reference interpreter: %s (%d of %lld outside tolerance; worst "
               "|diff|/tolerance %.3g)\n",
               bad == 0 ? "PASS" : "FAIL", bad < 0 ? 0 : bad, (long long)(M * N), worst);
        rc->ok = rc->ok && bad == 0;
    }
out:
    layer_data_free(&ld);
    free(ycpu);
    kiln_tensor_free(&x);
    kiln_tensor_free(&yi);
    kiln_tensor_free(&yref);
    return e;
}

/* The layers to run: the recipe's (tool_plan) or, for an IR file, its functions with
 * the traits the IR was planned with (tool_plan_ir). */
static int plan_input(const ToolArgs *a, const KilnRecipe *r, KilnTarget *t, KilnModule *m,
                      ToolPlan *plan, KilnDiag *d)
{
    if (r)
        return tool_plan(a, r, t, m, NULL, plan, d);
    tool_ir_apply_tune(m, t);
    return tool_plan_ir(a, t, m, NULL, plan, d);
}

int cmd_run(const ToolArgs *a)
{
    bool ir = a->recipe && tool_is_ir_file(a->recipe);
    if (!a->recipe || (!ir && !a->have_shape) || (ir && (a->have_shape || a->layer))) {
        fprintf(stderr, "kiln run: usage: kiln run RECIPE --shape M,N,K [--layer NAME] "
                        "[--target T] [--seed S] [--check] [--verbose]\n"
                        "       kiln run FILE.kir [--target T] [--seed S] [--check] [--verbose]"
                        "   (an IR file's layers and shapes are its functions')\n");
        return EXIT_INPUT;
    }
    KilnDiag d = {0};
    KilnRecipe *r = NULL;
    KilnModule *m = kiln_module_new();
    RunCtx rc = {.a = a, .ok = true};
    ToolPlan plan = {.methods = !ir}; /* the recipe's methods on the synthetic layers */
    int e = EXIT_OK;
    int krc = !m ? kiln_diag_set(&d, KILN_EINTERNAL, "out of memory")
              : ir ? tool_ir_load(a->recipe, m, &d)
                   : kiln_recipe_load(a->recipe, &r, &d);
    const char *tname = krc ? NULL
                        : ir ? (a->target ? a->target : tool_ir_target(m) ? tool_ir_target(m) : "cpu")
                             : tool_target_name(a, r, "cpu");
    KilnTarget t;
    if (!krc)
        krc = kiln_target_lookup(tname, &t, &d);
    if (krc)
        goto fail;
    rc.t = &t;
    rc.r = r;
    /* A named arch (sm_80, ...) is planned before the driver is opened, so a layer that
     * has no kernel there is reported as such (exit 2) on any machine, not as a missing
     * driver. "cuda" learns its arch from the device and "cpu" its traits from the
     * host's backend, so those are planned after the context is made. */
    bool named_arch = t.kind == KILN_TGT_CUDA && strcmp(tname, "cuda") != 0;
    if (named_arch && (krc = plan_input(a, r, &t, m, &plan, &d)))
        goto fail;
    if (t.kind == KILN_TGT_CPU || t.kind == KILN_TGT_CUDA) {
        /* The backend before running anything; the name as asked, since "cpu" (the
         * host's level with its traits) and "cuda" (the device's arch) resolve there */
        kiln_options o = {.target = tname, .verbose = a->verbose};
        kiln_status st = kiln_ctx_create(&o, &rc.api);
        if (st) { /* kiln_status values are the command's exit codes */
            fprintf(stderr, "kiln: %s\n", kiln_error(rc.api));
            e = (int)st;
            goto done;
        }
        t = *kiln_ctx_target_full(rc.api);
    }
    if (!named_arch && (krc = plan_input(a, r, &t, m, &plan, &d)))
        goto fail;
    for (int i = 0; i < plan.n && !e; i++)
        e = run_one(&rc, &plan.layers[i], plan.method ? &plan.method[i] : NULL, m);
    if (a->verbose && !ir)
        tool_print_counts();
    if (!e && a->check && plan.unexercised) {
        printf("check: FAIL: %d rule%s not checked: no example layer falls under %s (notes on "
               "stderr); run --check --layer NAME with a layer of %s\n", plan.unexercised,
               plan.unexercised > 1 ? "s" : "", plan.unexercised > 1 ? "them" : "it",
               plan.unexercised > 1 ? "each" : "it");
        rc.ok = false;
    }
    if (!e && !rc.ok)
        e = EXIT_MISMATCH;
    goto done;
fail:
    tool_error(&d);
    e = tool_exit_code(d.code);
done:
    tool_plan_free(&plan);
    kiln_ctx_destroy(rc.api);
    kiln_module_free(m);
    kiln_recipe_free(r);
    return e;
}
