/* model/eval/quantize.c — `kiln quantize RECIPE --model M -o DIR`: run the recipe's
 * methods on the model (model/eval/calib.c) and write the result as a compressed-tensors
 * checkpoint (model/checkpoints/checkpoint.h) that vLLM and Hugging Face load, with kiln's own
 * dequantized weights beside it on request (the interop check compares them). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "frontend/recipe.h"
#include "model/checkpoints/checkpoint.h"
#include "model/files/modelfile.h"
#include "model/model.h"
#include "model/nets/net.h"
#include "model/tokenizers/tokenizer.h"
#include "quant/quant.h"
#include "runtime/progress.h"
#include "runtime/runtime.h"

/* A layer over RTN_SLICE_BYTES of f32 weights is rounded in slices of RTN_ROWS_BYTES of its
 * rows, read from the model's file a slice at a time, when nothing but the file says what
 * its weights are (SmolLM2's lm_head: 113 MB of f32, and 113 MB more of rounded copies, at
 * once). Round to nearest with a scale per row or group gives each row from that row alone. */
#define RTN_SLICE_BYTES (16u << 20)
#define RTN_ROWS_BYTES (4u << 20)

static bool rtn_sliced(const KilnLinear *l, const KilnQuantSpec *spec)
{
    return !l->qres && !l->w && l->wmf && l->wt && l->nwops == 0 &&
           spec->gran != KILN_GRAN_TENSOR &&
           (double)l->N * (double)l->K * sizeof(float) > RTN_SLICE_BYTES;
}

/* q's codes, scales and zeros (allocated by the caller) by round to nearest on slices of
 * the rows as the file holds them. */
static int rtn_rows(const KilnLinear *l, KilnQLinear *q, KilnDiag *d)
{
    int64_t rows = (int64_t)(RTN_ROWS_BYTES / sizeof(float)) / l->K;
    rows = rows > 0 ? rows : 1;
    float *w = malloc(sizeof(float) * (size_t)(rows * l->K));
    int r = w ? 0 : kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
    for (int64_t n0 = 0; !r && n0 < l->N; n0 += rows) {
        int64_t nr = l->N - n0 < rows ? l->N - n0 : rows, G = q->ngroups;
        KilnQResult part = {0};
        r = kiln_mf_rows_f32(l->wmf, l->wt, n0, nr, w, d);
        if (!r)
            r = kiln_quant_rtn(w, nr, l->K, &q->spec, &part, d);
        if (!r && (part.ngroups != G || !part.zero != !q->zero || part.perm))
            r = kiln_diag_set(d, KILN_EINTERNAL, "layer %s: rows %lld.. rounded into %lld "
                              "groups, planned %lld", l->name, (long long)n0,
                              (long long)part.ngroups, (long long)G);
        if (!r) {
            memcpy(q->codes + n0 * l->K, part.codes, sizeof(int16_t) * (size_t)(nr * l->K));
            memcpy(q->scale + n0 * G, part.scale, sizeof(float) * (size_t)(nr * G));
            if (q->zero)
                memcpy(q->zero + n0 * G, part.zero, sizeof(int32_t) * (size_t)(nr * G));
        }
        kiln_qresult_free(&part);
    }
    kiln_mf_drop_pages(l->wmf, l->wt);
    free(w);
    return r;
}

/* KilnQLinear.fill: a layer's codes, scales and zero points, made when the checkpoint's
 * writer reaches the layer (docs/hardening.md, "Memory"): the method's result, or round to
 * nearest on the weights read again from the model's file; original column order (a GPTQ
 * permutation is the layer's g_idx). */
static int fill_codes(void *ctx, KilnQLinear *q, KilnDiag *d)
{
    KilnLinear *l = ctx;
    KilnQResult own = {0};
    const KilnQResult *res = l->qres;
    int r = 0;
    if (rtn_sliced(l, &q->spec)) {
        int64_t NK = l->N * l->K;
        q->codes = malloc(sizeof(int16_t) * (size_t)NK);
        q->scale = malloc(sizeof(float) * (size_t)q->nscale);
        q->zero = q->spec.symmetric ? NULL : malloc(sizeof(int32_t) * (size_t)q->nscale);
        if (!q->codes || !q->scale || (!q->spec.symmetric && !q->zero))
            return kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
        return rtn_rows(l, q, d);
    }
    if (!res) {
        if ((r = kiln_linear_wget(l, d))) /* read again if dropped */
            return r;
        r = kiln_quant_rtn(l->w, l->N, l->K, &q->spec, &own, d);
        /* dropped after, also a copy held since the load (a plain directory's layers are
         * taken whole): nothing binds them here, and what is the file's is read again */
        kiln_linear_wput(l);
        if (r)
            return r;
        res = &own;
    }
    int64_t NK = l->N * l->K;
    if (res->ngroups != q->ngroups || !res->perm != !q->g_idx || !res->zero != q->spec.symmetric)
        r = kiln_diag_set(d, KILN_EINTERNAL, "layer %s: quantized into %lld groups, planned %lld",
                          l->name, (long long)res->ngroups, (long long)q->ngroups);
    q->codes = r ? NULL : malloc(sizeof(int16_t) * (size_t)NK);
    q->scale = r ? NULL : malloc(sizeof(float) * (size_t)q->nscale);
    q->zero = r || !res->zero ? NULL : malloc(sizeof(int32_t) * (size_t)q->nscale);
    if (!r && (!q->codes || !q->scale || (res->zero && !q->zero)))
        r = kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
    int16_t *row = !r && res->perm ? malloc(sizeof(int16_t) * (size_t)l->K) : NULL;
    if (!r && res->perm && !row)
        r = kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
    if (!r && res->perm) { /* column j of the result is original column perm[j] */
        for (int64_t n = 0; n < l->N; n++) {
            kiln_qresult_codes(res, n * l->K, l->K, row); /* GPTQ's are packed */
            for (int64_t j = 0; j < l->K; j++)
                q->codes[n * l->K + res->perm[j]] = row[j];
        }
    } else if (!r) {
        kiln_qresult_codes(res, 0, NK, q->codes);
    }
    free(row);
    if (!r)
        memcpy(q->scale, res->scale, sizeof(float) * (size_t)q->nscale);
    if (!r && q->zero)
        memcpy(q->zero, res->zero, sizeof(int32_t) * (size_t)q->nscale);
    kiln_qresult_free(&own);
    return r; /* on an error kiln_qlinear_load frees what was made */
}

/* The layer in the checkpoint's terms, its codes made later (fill_codes): shape, format,
 * groups, g_idx, bias, and a static activation scale as kiln runs the layer (the
 * recipe's, or calibrated on the rows it captured). */
static int to_qlinear(const KilnRunCtx *rc, KilnLinear *l, int rule, KilnQLinear *q,
                      KilnDiag *d)
{
    char fmt[64];
    int r = kiln_quant_format(rc, l, fmt, sizeof fmt, d);
    if (r)
        return r;
    KilnQuantSpec a = {0};
    float ascale = 0, th, mf;
    int32_t azero = 0;
    bool acts = kiln_recipe_rule_acts(rc->fr, rule, &a);
    if (acts && !a.dynamic && kiln_recipe_outliers(rc->fr, l->name, &th, &mf))
        return kiln_diag_set(d, KILN_EINPUT,
                             "layer %s: outliers = {...} keeps columns out of the static "
                             "activation scale, which a checkpoint cannot express; drop outliers "
                             "for kiln quantize",
                             l->name);
    if (acts && !a.dynamic && (r = kiln_static_act_params(l, &a, &ascale, &azero, d)))
        return r;
    KilnQuantSpec spec;
    if (!fmt[0] || kiln_spec_parse(fmt, &spec))
        return kiln_diag_set(d, KILN_EINTERNAL, "layer %s: weight format '%s'", l->name, fmt);
    const KilnQResult *res = l->qres;
    memset(q, 0, sizeof *q);
    snprintf(q->name, sizeof q->name, "%s", l->name);
    q->N = l->N, q->K = l->K, q->spec = spec;
    q->ngroups = res ? res->ngroups
                 : spec.gran == KILN_GRAN_GROUP ? (l->K + spec.group - 1) / spec.group : 1;
    q->nscale = spec.gran == KILN_GRAN_TENSOR ? 1 : l->N * q->ngroups;
    q->fill = fill_codes, q->fill_ctx = l;
    q->g_idx = res && res->perm ? malloc(sizeof(int32_t) * (size_t)l->K) : NULL;
    q->bias = l->b ? malloc(sizeof(float) * (size_t)l->N) : NULL;
    if ((res && res->perm && !q->g_idx) || (l->b && !q->bias)) {
        kiln_qlinear_free(q);
        return kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
    }
    for (int64_t j = 0; q->g_idx && j < l->K; j++)
        q->g_idx[res->perm[j]] = (int32_t)(spec.gran == KILN_GRAN_GROUP ? j / spec.group : 0);
    if (q->bias)
        memcpy(q->bias, l->b, sizeof(float) * (size_t)l->N);
    if (acts)
        q->act = a;
    q->act_scale = ascale, q->act_zero = azero;
    return 0;
}

/* Whether some layer's rule has static activations with no scale of its own. */
static bool needs_static_calib(const KilnRunCtx *rc, const KilnLinear *ls, int nl)
{
    for (int i = 0; i < nl; i++) {
        int rule = kiln_recipe_match(rc->fr, ls[i].name);
        KilnQuantSpec a;
        if (rule >= 0 && kiln_recipe_rule_acts(rc->fr, rule, &a) && !a.dynamic && !(a.scale > 0))
            return true;
    }
    return false;
}

bool kiln_needs_static_calib(const KilnRunCtx *rc, const KilnLinear *ls, int nl)
{
    return needs_static_calib(rc, ls, nl);
}

int kiln_quantize_linears(const KilnRunCtx *rc, KilnLinear *ls, int nl, KilnCheckpoint *c,
                          KilnDiag *d)
{
    c->lin = calloc((size_t)nl, sizeof *c->lin);
    if (!c->lin)
        return kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
    for (int i = 0; i < nl; i++) {
        KilnLinear *l = &ls[i];
        int rule = kiln_recipe_match(rc->fr, l->name);
        if (l->in_div)
            return kiln_diag_set(d, KILN_EINPUT,
                                 "layer %s: its method runs with an input pre-scale (prescale = "
                                 "true), which a checkpoint cannot express; drop prescale for "
                                 "kiln quantize",
                                 l->name);
        if (rule >= 0 && kiln_recipe_rule_stored(rc->fr, rule))
            return kiln_diag_set(d, KILN_EINPUT, "layer %s: weights = stored has nothing to "
                                 "quantize: kiln quantize needs a format", l->name);
        if (rule < 0) { /* kiln_*_export stores it in f32 and lists it in ignore */
            kiln_linear_wput(l); /* a copy taken at load: the export reads it by rows */
            continue;
        }
        int r = to_qlinear(rc, l, rule, &c->lin[c->nlin], d);
        if (r)
            return r;
        c->nlin++;
    }
    return 0;
}

/* The capture's sink (model.h): once a block has run, each of its layers' static
 * activation scale is computed from its rows as kiln_static_act_params does, kept
 * (cap_have) and the rows freed, so the rows held are one block's. */
static int keep_scales(void *arg, KilnLinear *ls, int n, KilnDiag *d)
{
    const KilnRunCtx *rc = arg;
    for (int i = 0; i < n; i++) {
        KilnLinear *l = &ls[i];
        int rule = kiln_recipe_match(rc->fr, l->name);
        KilnQuantSpec a = {0};
        int r = 0;
        if (l->cap_rows > 0 && rule >= 0 && kiln_recipe_rule_acts(rc->fr, rule, &a) &&
            !a.dynamic && !(a.scale > 0)) {
            r = kiln_static_act_params(l, &a, &l->cap_scale, &l->cap_zero, d);
            l->cap_have = !r;
        }
        kiln_linears_capture_end(l, 1);
        if (r)
            return r;
    }
    return 0;
}

/* kiln eval's calibration run for static activation scales (model.h), after the
 * methods, so each scale is of the input a layer sees once a method's scales are
 * folded in: the layers bound as kiln eval's f32 row leaves them unless a method ran
 * (bit for bit the same inputs), the recipe's KV cache, the first tokens of the ids
 * the methods saw (BERT: the first lines). Leaves the layers unbound with their static
 * scales computed (keep_scales). */
static int capture_static(const KilnQuantizeOpts *o, const KilnRunCtx *rc, KilnLlama *llama,
                          KilnBert *bert, KilnLinear *ls, int nl, const int32_t *ids, int n,
                          char **cal, int ncal, KilnDiag *d)
{
    KilnRunCtx f32 = {0};
    int r = 0;
    if (!kiln_quant_needed(ls, nl, rc->fr)) {
        kiln_runctx_open_f32(rc, &f32);
        if (f32.recipe)
            r = kiln_linears_bind(ls, nl, &f32, d);
    }
    kiln_linears_capture_select(ls, nl, rc->fr); /* rows only where a scale needs them */
    if (!r && llama) {
        KilnKVSpec kvs;
        KilnKVCache kv = {0};
        int nt = n < KILN_STATIC_TOKENS ? n : KILN_STATIC_TOKENS;
        r = kiln_kv_spec_from_recipe(rc->fr, &kvs, d);
        if (!r)
            r = kiln_llama_kv_init(llama, &kv, &kvs, nt > 0 ? nt : 1, d);
        if (!r)
            r = kiln_llama_capture_static(llama, rc->pool, &kv, ids, n,
                                          &(KilnCaptureSink){keep_scales, (void *)rc}, d);
        kiln_kv_free(&kv);
    } else if (!r) {
        r = kiln_bert_capture_static(bert, rc->pool, (const char *const *)cal, ncal,
                                     &(KilnCaptureSink){keep_scales, (void *)rc}, d);
    }
    kiln_linears_unbind(ls, nl);
    kiln_runctx_close_f32(&f32);
    return r;
}

/* The limits of today's releases the written checkpoint runs into, one stderr warning
 * each (docs/checkpoints.md, "Known upstream limits"). */
static int warn_compat(const KilnCheckpoint *ck, KilnDiag *d)
{
    KilnCkptCompat k;
    int rc = kiln_checkpoint_compat(ck, &k, d);
    char buf[2048];
    if (rc || !kiln_checkpoint_compat_text(&k, buf, sizeof buf))
        return rc;
    for (char *line = buf, *e; *line; line = e + 1) {
        if (!(e = strchr(line, '\n')))
            e = line + strlen(line) - 1;
        fprintf(stderr, "kiln quantize: warning: %.*s\n", (int)(e - line), line);
        if (!e[1])
            break;
    }
    return 0;
}

int kiln_quantize(const KilnQuantizeOpts *o, KilnDiag *d)
{
    char path[4096];
    const char *model = o->model ? o->model : "smollm2";
    int rc = kiln_model_path(model, path, sizeof path, d);
    if (rc)
        return rc;
    if (!o->out || !*o->out)
        return kiln_diag_set(d, KILN_EINPUT, "kiln quantize needs -o DIR");
    const KilnNetOps *net = kiln_net_for(path); /* the one BERT-or-Llama choice */
    bool dec = net->decoder;
    KilnRunCtx rc_ = {0};
    void *obj = NULL; /* the network, as the table's operations take it */
    KilnLlama *llama = NULL;
    KilnBert *bert = NULL;
    KilnCheckpoint ck = {0};
    char **cal = NULL;
    int ncal = 0, nl = 0;
    rc = kiln_runctx_open(&rc_, o->recipe, o->target, 0, o->verbose, d);
    rc_.progress = o->progress;
    if (!rc && !dec)
        rc = kiln_calib_text(o->text, &cal, &ncal, d);
    kiln_progress_stage(o->progress, "load model", 1, "");
    if (!rc)
        rc = net->load(path, &obj, d);
    if (!rc)
        kiln_progress_end(o->progress);
    llama = dec ? obj : NULL;
    bert = dec ? NULL : obj;
    KilnLinear *ls = NULL;
    if (!rc)
        ls = net->linears(obj, &nl);
    double t0 = kiln_now_ms();
    int32_t *ids = NULL;
    int n = -1;
    if (!rc && dec) {
        const KilnTokenizer *tk = kiln_llama_tokenizer(llama, d);
        if (!(ids = malloc(sizeof(int32_t) * KILN_METHOD_TOKENS)))
            rc = kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
        else if (!tk || (n = kiln_calib_tokens(tk, o->text, ids, KILN_METHOD_TOKENS, d)) < 0)
            rc = KILN_EINPUT;
        if (!rc)
            rc = kiln_llama_quant_prepare(llama, &rc_, ids, n, o->verbose, d);
    } else if (!rc) {
        int nm = ncal < KILN_METHOD_SENTENCES ? ncal : KILN_METHOD_SENTENCES;
        rc = kiln_bert_quant_prepare(bert, &rc_, (const char *const *)cal, nm, o->verbose, d);
    }
    double t1 = kiln_now_ms();
    if (!rc && needs_static_calib(&rc_, ls, nl)) {
        kiln_progress_stage(o->progress, "static scales (calibration pass)", 1, "");
        rc = capture_static(o, &rc_, llama, bert, ls, nl, ids, n, cal, ncal, d);
        if (!rc)
            kiln_progress_end(o->progress);
    }
    free(ids);
    if (!rc)
        rc = kiln_quantize_linears(&rc_, ls, nl, &ck, d);
    if (ls)
        kiln_linears_capture_end(ls, nl);
    kiln_progress_stage(o->progress, "write checkpoint", 1, "");
    if (!rc)
        rc = net->export(obj, path, &ck, d);
    if (!rc)
        rc = kiln_checkpoint_write(o->out, &ck, d);
    if (!rc && o->dequant) {
        /* beside the checkpoint, not in it: loaders read every *.safetensors there */
        char dp[4200];
        snprintf(dp, sizeof dp, "%s.kiln_dequant.safetensors", o->out);
        rc = kiln_checkpoint_write_dequant(dp, &ck, d);
    }
    if (!rc)
        kiln_progress_end(o->progress);
    kiln_progress_clear(o->progress);
    if (!rc)
        rc = warn_compat(&ck, d);
    if (!rc)
        printf("kiln quantize: %s with %s: %d layers quantized, %d kept in f32; methods %.1f s; "
               "wrote %s (%s)\n",
               path, o->recipe, ck.nlin, ck.nignore, (t1 - t0) / 1e3, o->out,
               ck.format[0] ? ck.format : "compressed-tensors");
    for (int i = 0; i < ncal; i++)
        free(cal[i]);
    free(cal);
    kiln_checkpoint_free(&ck);
    if (obj)
        net->free(obj);
    kiln_runctx_close(&rc_, rc ? d : NULL);
    return rc;
}
