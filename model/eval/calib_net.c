/* model/eval/calib_net.c — the two models' calibration runs for the recipe's methods
 * (model/eval/calib.c), one block at a time: the calibration text's hidden states
 * after the embeddings are kept (tokens x d_model f32), and each block runs over all
 * of them in turn, exactly as a whole forward pass runs it (a Llama: windows of 512
 * tokens as one sequence, the block's own KV cache of one layer; BERT: batches of 16
 * sentences). Also the calibration pass for static activation scales that kiln eval
 * and kiln quantize share. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "frontend/recipe.h"
#include "model/model.h"
#include "model/nets/llama_internal.h"

enum { DEC_WINDOW = 512, ENC_BATCH = 16 };

typedef struct DecCal {
    KilnLlama *m;
    struct KilnPool *pool;
    const int32_t *ids;
    int n;
    float *x;       /* [n, d]: the hidden states before the next block */
    KilnKVCache kv; /* one layer: the block that runs */
} DecCal;

static int dec_begin(void *arg, KilnDiag *d)
{
    DecCal *c = arg;
    KilnKVSpec s = {KILN_KV_F32, false, true, 0};
    c->x = malloc(sizeof(float) * (size_t)c->n * (size_t)c->m->d);
    if (!c->x)
        return kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
    int rc = kiln_kv_init(&c->kv, &s, 1, c->m->nkv, c->m->hd, c->n, d);
    return rc ? rc : kiln_llama_embed(c->m, c->ids, c->n, 0, c->x, d);
}

/* The calibration tokens as one sequence, in windows of 512 (each attends to all
 * before it, as in generation). */
static int dec_block(void *arg, int b, KilnDiag *d)
{
    DecCal *c = arg;
    int rc = 0;
    for (int p = 0; !rc && p < c->n; p += DEC_WINDOW) {
        int T = c->n - p < DEC_WINDOW ? c->n - p : DEC_WINDOW;
        rc = kiln_llama_block(c->m, c->pool, &c->kv, 0, b, c->x + (size_t)p * c->m->d, T, p, d);
    }
    return rc;
}

static void dec_end(void *arg)
{
    DecCal *c = arg;
    free(c->x);
    c->x = NULL;
    kiln_kv_free(&c->kv);
}

int kiln_llama_quant_prepare(KilnLlama *m, const KilnRunCtx *rc, const int32_t *ids, int n,
                             bool verbose, KilnDiag *d)
{
    int nl, ns = 0;
    KilnLinear *ls = kiln_llama_linears(m, &nl);
    if (!kiln_quant_needed(ls, nl, rc->fr))
        return 0;
    if (n < 1)
        return kiln_diag_set(d, KILN_EINPUT, "the recipe's methods need calibration text");
    KilnScaleSite *sites = NULL;
    int r = kiln_llama_scale_sites(m, &sites, &ns, d);
    DecCal c = {.m = m, .pool = rc->pool, .ids = ids, .n = n};
    KilnCalibNet net = {m->nlayers, L_PER, &c, dec_begin, dec_block, dec_end};
    if (!r)
        r = kiln_quant_prepare(ls, nl, sites, ns, rc, &net, verbose, d);
    free(sites);
    return r;
}

typedef struct EncCal {
    KilnBert *m;
    struct KilnPool *pool;
    const char *const *texts;
    int n, nb;
    KilnBertBatch *b; /* [nb] batches of 16 sentences, their hidden states */
} EncCal;

static int enc_begin(void *arg, KilnDiag *d)
{
    EncCal *c = arg;
    int nb = (c->n + ENC_BATCH - 1) / ENC_BATCH;
    c->b = calloc((size_t)nb, sizeof *c->b);
    if (!c->b)
        return kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
    int rc = 0;
    for (; !rc && c->nb < nb; c->nb++) {
        int i = c->nb * ENC_BATCH;
        rc = kiln_bert_batch_begin(c->m, c->texts + i, c->n - i < ENC_BATCH ? c->n - i : ENC_BATCH,
                                   &c->b[c->nb], d);
    }
    return rc;
}

static int enc_block(void *arg, int b, KilnDiag *d)
{
    EncCal *c = arg;
    int rc = 0;
    for (int k = 0; !rc && k < c->nb; k++)
        rc = kiln_bert_block(c->m, c->pool, b, &c->b[k], d);
    return rc;
}

static void enc_end(void *arg)
{
    EncCal *c = arg;
    for (int k = 0; c->b && k < c->nb; k++)
        kiln_bert_batch_free(&c->b[k]);
    free(c->b);
    c->b = NULL, c->nb = 0;
}

int kiln_bert_quant_prepare(KilnBert *m, const KilnRunCtx *rc, const char *const *texts, int n,
                            bool verbose, KilnDiag *d)
{
    int nl, ns = 0;
    KilnLinear *ls = kiln_bert_linears(m, &nl);
    if (!kiln_quant_needed(ls, nl, rc->fr))
        return 0;
    if (n < 1)
        return kiln_diag_set(d, KILN_EINPUT, "the recipe's methods need calibration text");
    KilnScaleSite *sites = NULL;
    int r = kiln_bert_scale_sites(m, &sites, &ns, d);
    int nblocks = kiln_bert_nlayers(m);
    EncCal c = {m, rc->pool, texts, n, 0, NULL};
    KilnCalibNet net = {nblocks, nblocks ? nl / nblocks : 1, &c, enc_begin, enc_block, enc_end};
    if (!r)
        r = kiln_quant_prepare(ls, nl, sites, ns, rc, &net, verbose, d);
    free(sites);
    return r;
}

/* ------------------------------------------------------------------ static activation scales */

void kiln_linears_capture_select(KilnLinear *ls, int n, const KilnRecipe *fr)
{
    for (int i = 0; i < n; i++) {
        KilnLinear *l = &ls[i];
        int ri = fr ? kiln_recipe_match(fr, l->name) : -1;
        KilnQuantSpec a;
        float th, mf;
        bool stat = ri >= 0 && kiln_recipe_rule_acts(fr, ri, &a) && !a.dynamic && !(a.scale > 0);
        l->cap_skip = fr && !stat && !kiln_recipe_outliers(fr, l->name, &th, &mf);
    }
}

/* Hands block b's layers to the sink once the block has run: they have seen every row
 * they will see in this pass. */
static int sink_block(const KilnCaptureSink *sink, KilnLinear *ls, int b, int per_block,
                      KilnDiag *d)
{
    return sink ? sink->done(sink->arg, ls + (size_t)b * per_block, per_block, d) : 0;
}

int kiln_llama_capture_static(KilnLlama *m, struct KilnPool *pool, KilnKVCache *kv,
                              const int32_t *ids, int n, const KilnCaptureSink *sink,
                              KilnDiag *d)
{
    int nl;
    KilnLinear *ls = kiln_llama_linears(m, &nl);
    int rc = kiln_linears_capture(ls, nl, d);
    n = n < KILN_STATIC_TOKENS ? n : KILN_STATIC_TOKENS;
    if (rc || n < 1)
        return rc;
    /* kiln_llama_forward's blocks one call at a time: its embedding, each block on the
     * whole sequence at positions 0.., its K/V in layer b of kv (static ranges taken) */
    float *x = malloc(sizeof(float) * (size_t)n * (size_t)m->d);
    if (!x)
        return kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
    kiln_kv_calib_begin(kv);
    rc = kiln_llama_embed(m, ids, n, 0, x, d);
    for (int b = 0; !rc && b < m->nlayers; b++) {
        rc = kiln_llama_block(m, pool, kv, b, b, x, n, 0, d);
        if (!rc)
            rc = sink_block(sink, ls, b, L_PER, d);
    }
    kiln_kv_calib_end(kv);
    free(x);
    return rc;
}

int kiln_bert_capture_static(KilnBert *m, struct KilnPool *pool, const char *const *texts, int n,
                             const KilnCaptureSink *sink, KilnDiag *d)
{
    int nl;
    KilnLinear *ls = kiln_bert_linears(m, &nl);
    int rc = kiln_linears_capture(ls, nl, d);
    n = n < KILN_STATIC_SENTENCES ? n : KILN_STATIC_SENTENCES;
    if (rc || n < 1)
        return rc;
    /* kiln_bert_embed's batch, its blocks one call at a time (the pooled output unused) */
    KilnBertBatch bt;
    rc = kiln_bert_batch_begin(m, texts, n, &bt, d);
    if (rc)
        return rc;
    int nb = kiln_bert_nlayers(m), per = nb ? nl / nb : 1;
    for (int b = 0; !rc && b < nb; b++) {
        rc = kiln_bert_block(m, pool, b, &bt, d);
        if (!rc)
            rc = sink_block(sink, ls, b, per, d);
    }
    kiln_bert_batch_free(&bt);
    return rc;
}
