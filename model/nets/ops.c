/* model/nets/ops.c — what both models share: the f32 operations (GEMM, norms, softmax,
 * GELU, SiLU, RoPE), size-checked tensor loading, and KilnLinear: a linear layer bound
 * to a recipe through kiln's public API, with calibration capture and --per-layer SQNR
 * tracking. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api/plan.h"
#include "ir/numerics.h"
#include "ir/target.h"
#include "frontend/recipe.h"
#include "model/checkpoints/checkpoint.h"
#include "model/model.h"
#include "quant/quant.h"
#include "model/files/modelfile.h"
#include "runtime/runtime.h"

int kiln_load_f32_checked(const KilnModelFile *mf, const char *what, const char *name,
                          int64_t numel, float **out, KilnDiag *d)
{
    const KilnModelTensor *t = kiln_mf_find(mf, name);
    if (!t)
        return kiln_diag_set(d, KILN_EINPUT, "%s: no tensor '%s'", what, name);
    if (t->numel != numel)
        return kiln_diag_set(d, KILN_EINPUT, "%s: '%s' has %lld elements, expected %lld", what,
                             name, (long long)t->numel, (long long)numel);
    return kiln_mf_load_f32(mf, name, out, d);
}

/* ------------------------------------------------------------------ GEMM */

typedef float v8 __attribute__((vector_size(32)));

/* By pointer: a 32-byte vector passed by value changes the ABI with and without AVX
 * (-Wpsabi), and this file is built without -mavx. */
static inline float hsum8(const v8 *v)
{
    const v8 a = *v;
    return ((a[0] + a[4]) + (a[1] + a[5])) + ((a[2] + a[6]) + (a[3] + a[7]));
}

/* 4x4 tiles of dot products along K (both operands are K-contiguous), 8 lanes. */
#define TILE_BODY                                                                   \
    for (int64_t m0 = 0; m0 < M; m0 += 4) {                                         \
        int mr = M - m0 < 4 ? (int)(M - m0) : 4;                                    \
        for (int64_t n = n0; n < n1; n += 4) {                                      \
            int nr = n1 - n < 4 ? (int)(n1 - n) : 4;                                \
            v8 acc[4][4] = {{{0}}};                                                 \
            const float *xr[4], *wr[4];                                             \
            for (int i = 0; i < 4; i++) {                                           \
                xr[i] = x + (m0 + (i < mr ? i : 0)) * K;                            \
                wr[i] = w + (n + (i < nr ? i : 0)) * K;                             \
            }                                                                       \
            int64_t k = 0;                                                          \
            for (; k + 8 <= K; k += 8) {                                            \
                v8 xa[4], wb[4];                                                    \
                for (int i = 0; i < 4; i++) {                                       \
                    memcpy(&xa[i], xr[i] + k, 32);                                  \
                    memcpy(&wb[i], wr[i] + k, 32);                                  \
                }                                                                   \
                for (int i = 0; i < 4; i++)                                         \
                    for (int j = 0; j < 4; j++)                                     \
                        acc[i][j] += xa[i] * wb[j];                                 \
            }                                                                       \
            for (int i = 0; i < mr; i++)                                            \
                for (int j = 0; j < nr; j++) {                                      \
                    float s = hsum8(&acc[i][j]);                                     \
                    for (int64_t kk = k; kk < K; kk++)                              \
                        s += xr[i][kk] * wr[j][kk];                                 \
                    y[(m0 + i) * N + n + j] = s + (b ? b[n + j] : 0.0f);            \
                }                                                                   \
        }                                                                           \
    }

__attribute__((target("avx2,fma"))) static void gemm_avx2(const float *x, int64_t M,
                                                           const float *w, const float *b,
                                                           int64_t N, int64_t K, float *y,
                                                           int64_t n0, int64_t n1)
{
    TILE_BODY
}

static void gemm_generic(const float *x, int64_t M, const float *w, const float *b, int64_t N,
                         int64_t K, float *y, int64_t n0, int64_t n1)
{
    TILE_BODY
}

typedef struct GemmTask {
    const float *x, *w, *b;
    float *y;
    int64_t M, N, K, nchunk;
    bool avx2;
} GemmTask;

static void gemm_task(void *ctx, int task, int thread)
{
    (void)thread;
    const GemmTask *g = ctx;
    int64_t n0 = task * g->nchunk, n1 = n0 + g->nchunk < g->N ? n0 + g->nchunk : g->N;
    /* rows in blocks of 64 so a block of x stays in L2 while the W panel is swept */
    for (int64_t m0 = 0; m0 < g->M; m0 += 64) {
        int64_t mb = g->M - m0 < 64 ? g->M - m0 : 64;
        const float *x = g->x + m0 * g->K;
        float *y = g->y + m0 * g->N;
        if (g->avx2)
            gemm_avx2(x, mb, g->w, g->b, g->N, g->K, y, n0, n1);
        else
            gemm_generic(x, mb, g->w, g->b, g->N, g->K, y, n0, n1);
    }
}

void kiln_gemm_f32(KilnPool *pool, const float *x, int64_t M, const float *w, const float *b,
                   int64_t N, int64_t K, float *y)
{
    static int have = -1;
    if (have < 0) {
        __builtin_cpu_init();
        have = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    }
    int nt = pool ? kiln_pool_size(pool) : 1;
    int64_t chunk = 64;
    while (chunk > 4 && (N + chunk - 1) / chunk < 4 * nt)
        chunk /= 2;
    GemmTask g = {x, w, b, y, M, N, K, chunk, have == 1};
    kiln_pool_run(pool, (int)((N + chunk - 1) / chunk), gemm_task, &g);
}

/* ------------------------------------------------------------------ elementwise */

void kiln_layernorm(float *x, int64_t M, int64_t D, const float *g, const float *b, float eps)
{
    for (int64_t m = 0; m < M; m++) {
        float *r = x + m * D;
        double mean = 0, var = 0;
        for (int64_t i = 0; i < D; i++)
            mean += r[i];
        mean /= (double)D;
        for (int64_t i = 0; i < D; i++)
            var += (r[i] - mean) * (r[i] - mean);
        var /= (double)D;
        float inv = (float)(1.0 / sqrt(var + eps));
        for (int64_t i = 0; i < D; i++)
            r[i] = (float)(r[i] - mean) * inv * g[i] + b[i];
    }
}

void kiln_rmsnorm(float *x, int64_t M, int64_t D, const float *g, float eps)
{
    for (int64_t m = 0; m < M; m++) {
        float *r = x + m * D;
        double ss = 0;
        for (int64_t i = 0; i < D; i++)
            ss += (double)r[i] * r[i];
        float inv = (float)(1.0 / sqrt(ss / (double)D + eps));
        for (int64_t i = 0; i < D; i++)
            r[i] = r[i] * inv * g[i];
    }
}

void kiln_softmax(float *x, int64_t n)
{
    float mx = -INFINITY;
    for (int64_t i = 0; i < n; i++)
        mx = x[i] > mx ? x[i] : mx;
    for (int64_t i = 0; i < n; i++)
        x[i] -= mx;
    kiln_expf_n(x, n);
    double s = 0; /* in order, in double, as before */
    for (int64_t i = 0; i < n; i++)
        s += x[i];
    float inv = (float)(1.0 / s);
    for (int64_t i = 0; i < n; i++)
        x[i] *= inv;
}

void kiln_gelu_erf(float *x, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        x[i] = 0.5f * x[i] * (1.0f + erff(x[i] * 0.70710678118654752f));
}

float kiln_silu1(float x) { return x / (1.0f + expf(-x)); }

void kiln_rope_norm(float *x, int hd, int pos, float theta)
{
    for (int i = 0; i < hd / 2; i++) {
        double f = pos * pow(theta, -2.0 * i / hd);
        float c = (float)cos(f), s = (float)sin(f);
        float a = x[2 * i], b = x[2 * i + 1];
        x[2 * i] = a * c - b * s;
        x[2 * i + 1] = a * s + b * c;
    }
}

/* ------------------------------------------------------------------ KilnLinear */

static int ensure_tmp(KilnLinear *l, int64_t n, KilnDiag *d)
{
    if (l->tmp_n >= n)
        return 0;
    free(l->tmp);
    l->tmp = malloc(sizeof(float) * (size_t)n);
    l->tmp_n = l->tmp ? n : 0;
    return l->tmp ? 0 : kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
}

static void apply_act(const char *act, float *y, int64_t n)
{
    if (!strcmp(act, "gelu"))
        kiln_gelu_erf(y, n);
    else
        for (int64_t i = 0; i < n; i++)
            y[i] = kiln_silu1(y[i]);
}

/* --per-layer: the f32 reference on the same input (kiln_linear_ref: a big layer's weights
 * read in chunks of rows), made for this call and freed after (every layer's M x N kept
 * would be SmolLM2's 80 MB at 128 rows), and the energies of it and of y - it, summed in
 * the same order as ever. */
static int track_ref(KilnLinear *l, KilnPool *pool, const float *x, int64_t M, const float *y,
                     KilnDiag *d)
{
    int64_t n = M * l->N;
    float *ref = malloc(sizeof(float) * (size_t)n);
    if (!ref)
        return kiln_diag_set(d, KILN_EINTERNAL, "layer %s: out of memory", l->name);
    int r = kiln_linear_ref(l, pool, x, M, ref, d);
    if (!r && l->act_fused) /* compare like with like: the kernel's output is activated */
        apply_act(l->own_act, ref, n);
    for (int64_t i = 0; !r && i < n; i++) {
        double e = (double)y[i] - ref[i];
        l->sig += (double)ref[i] * ref[i];
        l->noise += e * e;
    }
    free(ref);
    return r;
}

/* Branch-free over blocks of 64 (the exponent bits all ones: an infinity or a NaN), so
 * the compiler vectorizes it: it runs on every layer's output, 49152 logits a token. */
bool kiln_all_finite(const float *v, int64_t n)
{
    int64_t i = 0;
    for (; i + 64 <= n; i += 64) {
        uint32_t bad = 0;
        for (int j = 0; j < 64; j++) {
            uint32_t b;
            memcpy(&b, &v[i + j], 4);
            bad |= (b & 0x7f800000u) == 0x7f800000u;
        }
        if (bad)
            return false;
    }
    for (; i < n; i++)
        if (!isfinite(v[i]))
            return false;
    return true;
}

/* A layer the API refused: the API's message names the layer already when the lowering
 * refused it ("file:line: layer 'NAME': ..."), so only the shape is added then. */
static int layer_error(KilnDiag *d, const KilnLinear *l, const char *err)
{
    size_t n = strlen(l->name);
    bool named = false;
    for (const char *p = strstr(err, "layer '"); p && !named; p = strstr(p + 1, "layer '"))
        named = !strncmp(p + 7, l->name, n) && p[7 + n] == '\'';
    if (named)
        return kiln_diag_set(d, KILN_EINPUT, "%s (%lldx%lld)", err, (long long)l->N,
                             (long long)l->K);
    return kiln_diag_set(d, KILN_EINPUT, "layer %s (%lldx%lld): %s", l->name, (long long)l->N,
                         (long long)l->K, err);
}

/* The first output with a NaN or an infinity marks the layer (KilnLinear.nonfinite_*). */
static void watch_finite(KilnLinear *l, const float *x, int64_t M, const float *y)
{
    if (!l->nonfinite_out && !kiln_all_finite(y, M * l->N)) {
        l->nonfinite_out = true;
        l->nonfinite_in = !kiln_all_finite(x, M * l->K);
    }
}

int kiln_linear_run(KilnLinear *l, KilnPool *pool, const float *x, int64_t M, float *y,
                    KilnDiag *d)
{
    if (l->percall) /* kiln eval's f32 row: the layer exists for this call only */
        return kiln_linear_run_percall(l, pool, x, M, y, d);
    if (l->stats && l->stats_add) /* calibration for a method: the model's own input */
        kiln_actstats_add(l->stats, x, M);
    if (l->in_div || l->in_perm) { /* what the (scaled / permuted) weights expect */
        if (M * l->K > l->xin_n) {
            float *t = realloc(l->xin, sizeof(float) * (size_t)(M * l->K));
            if (!t)
                return kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
            l->xin = t, l->xin_n = M * l->K;
        }
        for (int64_t m = 0; m < M; m++) {
            const float *xr = x + m * l->K;
            float *o = l->xin + m * l->K;
            for (int64_t k = 0; k < l->K; k++)
                o[k] = xr[l->in_perm ? l->in_perm[k] : k];
            if (l->in_div)
                for (int64_t k = 0; k < l->K; k++)
                    o[k] /= l->in_div[k];
        }
        x = l->xin;
    }
    if (l->cap && l->cap_rows < l->cap_max) {
        int64_t r = M < l->cap_max - l->cap_rows ? M : l->cap_max - l->cap_rows;
        memcpy(l->cap + l->cap_rows * l->K, x, sizeof(float) * (size_t)(r * l->K));
        l->cap_rows += r;
    }
    if (!l->kl) {
        if (kiln_linear_ref(l, pool, x, M, y, d)) /* w read again when needed, not kept */
            return d->code;
        watch_finite(l, x, M, y);
        return 0;
    }
    kiln_dtype odt = kiln_layer_out_dtype(l->kl);
    int64_t n = M * l->N;
    if (odt != KILN_DTYPE_F32) {
        if (ensure_tmp(l, n, d))
            return -1;
        uint16_t *h = (uint16_t *)l->tmp; /* 16-bit outputs fit in the scratch */
        if (kiln_layer_run(l->kl, x, M, h))
            return kiln_diag_set(d, KILN_EINTERNAL, "layer %s: %s", l->name,
                                 kiln_error(NULL));
        for (int64_t i = n - 1; i >= 0; i--)
            y[i] = odt == KILN_DTYPE_F16 ? kiln_f16_to_f32(h[i]) : kiln_bf16_to_f32(h[i]);
    } else if (M == 1 && l->blocks) {
        kiln_blockgemv(pool, l->blocks, x, l->N, l->K, y);
    } else if (kiln_layer_run(l->kl, x, M, y)) {
        return kiln_diag_set(d, KILN_EINTERNAL, "layer %s: kernel failed", l->name);
    }
    if (l->b && !l->bias_in_kernel)
        for (int64_t m = 0; m < M; m++)
            for (int64_t j = 0; j < l->N; j++)
                y[m * l->N + j] += l->b[j];
    watch_finite(l, x, M, y);
    return l->track ? track_ref(l, pool, x, M, y, d) : 0;
}

static int bind_one(KilnLinear *l, const KilnRunCtx *rc, KilnDiag *d);

/* Whether kl is a plain f32 kernel (f32 weights and activations, no epilogue, no bias,
 * f32 out) of a CPU target with AVX-512 (the context's own pool runs it) over weights
 * that are the file's GGUF blocks dequantized, unchanged: then a one-row run may read
 * the blocks instead (kiln_blockgemv, the same weights). */
static bool blocks_exact(const KilnLinear *l, kiln_layer *kl, const KilnRunCtx *rc)
{
    static const char plain[] = ": w f32, a f32"; /* and nothing after (api/kiln.c, describe) */
    const char *desc = strstr(kiln_layer_describe(kl), plain);
    const KilnTarget *tg = kiln_ctx_target_full(rc->ctx);
    return tg && (tg->isa & KILN_ISA_AVX512) && kiln_ctx_pool(rc->ctx) && l->wmf && l->wt && !l->w_dirty && l->nwops == 0 && !l->stored && !l->q_w &&
           !l->in_div && !l->in_perm && !strcmp(kiln_layer_weight_format(kl), "f32") && desc &&
           desc[sizeof plain - 1] == '\0' &&
           !strcmp(kiln_layer_epilogue(kl), "none") && !kiln_layer_has_bias(kl) &&
           kiln_layer_out_dtype(kl) == KILN_DTYPE_F32 &&
           kiln_blockgemv_supported(l->wt, l->N, l->K);
}

int kiln_linears_first(const KilnLinear *ls, int n)
{
    int first = -1;
    int64_t all = 0;
    for (int i = 0; i < n; i++) {
        all += ls[i].N * ls[i].K;
        if (first < 0 || ls[i].N * ls[i].K > ls[first].N * ls[first].K)
            first = i;
    }
    return first >= 0 && ls[first].N * ls[first].K * 8 > all ? first : -1;
}

int kiln_linears_bind(KilnLinear *ls, int n, const KilnRunCtx *rc, KilnDiag *d)
{
    /* A layer holding over 1/8 of the weights (SmolLM2's lm_head: 113 MB of f32) first,
     * while no other layer holds prepacked weights: its f32 weights, read for the
     * binding, and its packed copy are then the peak (docs/hardening.md, "Memory"). */
    int first = kiln_linears_first(ls, n);
    if (first >= 0 && bind_one(&ls[first], rc, d))
        return d->code ? d->code : KILN_EINTERNAL;
    for (int i = 0; i < n; i++)
        if (i != first && bind_one(&ls[i], rc, d))
            return d->code ? d->code : KILN_EINTERNAL;
    return 0;
}

static int bind_one(KilnLinear *l, const KilnRunCtx *rc, KilnDiag *d)
{
    {
        kiln_layer_destroy(l->kl); /* rebinding: the previous recipe's layer */
        l->kl = NULL;
        l->blocks = NULL;
        l->percall = NULL;
        l->kernel = "f32";
        l->wbytes = sizeof(float) * (size_t)(l->N * l->K);
        l->bias_in_kernel = false;
        l->act_fused = false;
        if (!rc || !rc->recipe)
            return 0;
        char afmt[160]; /* activations = stored: the file's scheme, its scale exactly */
        const char *act_format = NULL;
        if (l->stored && rc->fr) { /* the rule decides: as stored, or re-quantized from w */
            int ri = kiln_recipe_match(rc->fr, l->name);
            if (ri >= 0 && kiln_recipe_rule_stored(rc->fr, ri) && kiln_quant_from_stored(l, d))
                return d->code;
            const KilnQLinear *q = l->stored;
            if (ri >= 0 && kiln_recipe_rule_stored_acts(rc->fr, ri) && q->act.fmt != KILN_QF_NONE) {
                KilnQuantSpec a = {.fmt = q->act.fmt, .symmetric = q->act.symmetric,
                                   .gran = q->act.gran, .group = q->act.group,
                                   .dynamic = q->act.dynamic};
                if (!a.dynamic)
                    a.scale = q->act_scale, a.zero = q->act_zero;
                kiln_spec_print(&a, afmt, sizeof afmt);
                act_format = afmt;
            }
        }
        if (kiln_quant_wget(l, d)) /* GPTQ's weights kept as codes: made for the kernel */
            return d->code;
        int sliced = kiln_linear_bind_sliced(l, rc, d); /* the f32 row's big layers */
        if (sliced != 1)
            return sliced;
        if (!l->q_w && !kiln_linear_chunked(l) && kiln_linear_wget(l, d))
            return d->code; /* a big layer is read in chunks of rows instead */
        kiln_layer_desc desc = {.name = l->name, .N = l->N, .K = l->K, .weight = l->w,
                                .bias = l->b, .calib_x = l->cap, .calib_rows = l->cap_rows,
                                .act_format = act_format};
        if (l->q_w) { /* a method's or a checkpoint's grid */
            desc.weight = l->q_w;
            desc.weight_scale = l->q_scale;
            desc.weight_zero = l->q_zero;
        }
        if (l->q_format[0])
            desc.weight_format = l->q_format;
        kiln_layer *kl = NULL;
        if (kiln_linear_layer_create(l, rc, &desc, &kl))
            return layer_error(d, l, kiln_error(rc->ctx));
        kiln_linear_wput(l); /* the kernel holds its own copy; read again when needed */
        kiln_quant_wput(l);
        kiln_quant_stored_wput(l); /* weights = stored: made again if bound again */
        if (!rc->per_call)
            kiln_quant_bound(l); /* the kernel holds GPTQ's result: its codes are done */
        l->kl = kl;
        l->blocks = blocks_exact(l, kl, rc) ? l->wt : NULL;
        l->kernel = kiln_layer_describe(kl);
        l->wbytes = kiln_layer_weight_bytes(kl);
        l->bias_in_kernel = kiln_layer_has_bias(kl) != 0;
        /* A fused activation is fine exactly where the model applies that same one
         * to this layer's output (the model then skips its own); anywhere else it
         * would change the model. */
        const char *epi = kiln_layer_epilogue(kl);
        if (strcmp(epi, "none")) {
            if (!l->own_act || strcmp(epi, l->own_act))
                return kiln_diag_set(d, KILN_EINPUT,
                                     "layer %s: the recipe fuses an activation into this layer's "
                                     "epilogue, which would change the model: use act only on "
                                     "layers followed by that activation",
                                     l->name);
            /* the activation must follow the bias: the bias cannot be added after */
            if (l->b && !l->bias_in_kernel)
                return kiln_diag_set(d, KILN_EINPUT,
                                     "layer %s: the recipe fuses %s but not the layer's bias, "
                                     "which must come before it: add bias = true to that "
                                     "epilogue",
                                     l->name, epi);
            l->act_fused = true;
        }
        if (rc->per_call) { /* created again at every run (KilnLinear.percall) */
            snprintf(l->kdesc, sizeof l->kdesc, "%s", l->kernel);
            l->kernel = l->kdesc;
            l->percall = rc;
            l->kl = NULL;
            l->blocks = NULL;
            kiln_layer_destroy(kl);
        }
    }
    return 0;
}

void kiln_linears_unbind(KilnLinear *ls, int n)
{
    for (int i = 0; i < n; i++) {
        kiln_layer_destroy(ls[i].kl);
        ls[i].kl = NULL;
        ls[i].blocks = NULL;
        ls[i].act_fused = false;
        ls[i].percall = NULL;
        ls[i].bound_early = false;
        ls[i].kernel = "f32";
        ls[i].wbytes = sizeof(float) * (size_t)(ls[i].N * ls[i].K);
    }
}

int kiln_linears_capture(KilnLinear *ls, int n, KilnDiag *d)
{
    for (int i = 0; i < n; i++) {
        KilnLinear *l = &ls[i];
        if (l->cap_skip)
            continue;
        if (!l->cap && !(l->cap = malloc(sizeof(float) * (size_t)(KILN_STATIC_ROWS * l->K)))) {
            kiln_linears_capture_end(ls, n);
            return kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
        }
        l->cap_max = KILN_STATIC_ROWS;
        l->cap_rows = 0;
        l->cap_have = false;
    }
    return 0;
}

void kiln_linears_capture_end(KilnLinear *ls, int n)
{
    for (int i = 0; i < n; i++) {
        free(ls[i].cap);
        ls[i].cap = NULL;
        ls[i].cap_max = ls[i].cap_rows = 0;
    }
}

void kiln_linears_free(KilnLinear *ls, int n)
{
    if (!ls)
        return;
    kiln_linears_unbind(ls, n);
    kiln_quant_release(ls, n);
    for (int i = 0; i < n; i++) {
        free(ls[i].w);
        kiln_linear_wops_free(&ls[i]);
        free(ls[i].b);
        free(ls[i].cap);
        free(ls[i].tmp);
        free(ls[i].xin);
    }
    free(ls);
}
