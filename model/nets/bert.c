/* model/nets/bert.c — a BERT sentence encoder (all-MiniLM-L6-v2: post-LayerNorm BERT,
 * GELU(erf), absolute positions, token type 0) with mean pooling and L2
 * normalisation as sentence-transformers does; every linear layer is a KilnLinear. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/nets/hfdir.h"
#include "model/nets/shapes.h"
#include "model/model.h"
#include "model/files/modelfile.h"
#include "model/tokenizers/tokenizer.h"
#include "runtime/runtime.h"

enum { L_Q, L_K, L_V, L_O, L_UP, L_DOWN, L_PER };

typedef struct BertLayer {
    float *ln1_g, *ln1_b, *ln2_g, *ln2_b;
} BertLayer;

struct KilnBert {
    int nlayers, d, nheads, ffn, maxpos, vocab, ntype;
    float eps;
    float *wemb, *pemb, *temb, *eln_g, *eln_b;
    BertLayer *layers;
    KilnLinear *lin; /* nlayers * L_PER */
    KilnTokenizer *tok;
    KilnCheckpoint *ck; /* a quantized directory: what the layers' `stored` point into */
    KilnModelFile *mf;  /* model.safetensors, mapped: the linear layers' f32 weights again */
    const KilnModelTensor *wemb_t; /* wemb NULL: the word embeddings' rows read from mf */
};

static int load(KilnHfDir *h, const char *name, int64_t numel, float **out, KilnDiag *d)
{
    return kiln_hf_take(h, name, numel, out, d);
}

void kiln_bert_free(KilnBert *m)
{
    if (!m)
        return;
    free(m->wemb), free(m->pemb), free(m->temb), free(m->eln_g), free(m->eln_b);
    for (int i = 0; m->layers && i < m->nlayers; i++) {
        BertLayer *l = &m->layers[i];
        free(l->ln1_g), free(l->ln1_b), free(l->ln2_g), free(l->ln2_b);
    }
    free(m->layers);
    kiln_linears_free(m->lin, m->nlayers * L_PER);
    kiln_mf_close(m->mf); /* after the layers: they read their weights from it */
    kiln_tok_free(m->tok);
    kiln_checkpoint_free(m->ck);
    free(m->ck);
    free(m);
}

static int load_all(KilnBert *m, KilnHfDir *h, KilnDiag *d)
{
    int64_t D = m->d;
    int rc = m->wemb_t ? 0 /* read by row from the file (reloadable) */
                       : load(h, "embeddings.word_embeddings.weight", (int64_t)m->vocab * D,
                              &m->wemb, d);
    if (!rc)
        rc = load(h, "embeddings.position_embeddings.weight", (int64_t)m->maxpos * D, &m->pemb, d);
    if (!rc) /* [type_vocab_size, D]: kiln_bert_check_shapes saw it; sentences are type 0 */
        rc = load(h, "embeddings.token_type_embeddings.weight", (int64_t)m->ntype * D, &m->temb,
                  d);
    if (!rc)
        rc = load(h, "embeddings.LayerNorm.weight", D, &m->eln_g, d);
    if (!rc)
        rc = load(h, "embeddings.LayerNorm.bias", D, &m->eln_b, d);
    static const char *const lnames[L_PER] = {"attention.self.query", "attention.self.key",
                                              "attention.self.value", "attention.output.dense",
                                              "intermediate.dense", "output.dense"};
    char name[200];
    for (int i = 0; !rc && i < m->nlayers; i++) {
        BertLayer *bl = &m->layers[i];
        for (int j = 0; !rc && j < L_PER; j++) {
            KilnLinear *l = &m->lin[i * L_PER + j];
            snprintf(l->name, sizeof l->name, "encoder.layer.%d.%s", i, lnames[j]);
            snprintf(l->src, sizeof l->src, "%s", l->name);
            l->own_act = j == L_UP ? "gelu" : NULL; /* gelu(intermediate.dense(x)) */
            l->N = j == L_UP ? m->ffn : D;
            l->K = j == L_DOWN ? m->ffn : D;
            rc = kiln_hf_linear(h, l->name, l, true, d); /* stored when quantized */
        }
        const char *sub[2] = {"attention.output.LayerNorm", "output.LayerNorm"};
        float **dst[4] = {&bl->ln1_g, &bl->ln1_b, &bl->ln2_g, &bl->ln2_b};
        for (int j = 0; !rc && j < 4; j++) {
            snprintf(name, sizeof name, "encoder.layer.%d.%s.%s", i, sub[j / 2],
                     j % 2 ? "bias" : "weight");
            rc = load(h, name, D, dst[j], d);
        }
    }
    return rc;
}

static void reloadable_emb(KilnBert *m, const char *dir);
static void reloadable(KilnBert *m);

int kiln_bert_load(const char *dir, KilnBert **out, KilnDiag *d)
{
    *out = NULL;
    char path[4096];
    KilnJson *cfg = NULL;
    snprintf(path, sizeof path, "%s/config.json", dir);
    int rc = kiln_json_parse_file(path, &cfg, d);
    if (rc)
        return rc;
    KilnBert *m = calloc(1, sizeof *m);
    if (!m) {
        kiln_json_free(cfg);
        return kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
    }
    KilnBertConfig c;
    rc = kiln_bert_config(cfg, path, &c, d);
    kiln_json_free(cfg);
    *m = (KilnBert){.nlayers = c.nlayers, .d = c.d, .nheads = c.nheads, .ffn = c.ffn,
                    .maxpos = c.maxpos, .vocab = c.vocab, .ntype = c.ntype, .eps = c.eps};
    KilnHfDir h = {0};
    if (!rc)
        rc = kiln_hf_open(dir, &h, d);
    if (!rc) /* every tensor's dims before the tables num_hidden_layers sizes */
        rc = kiln_bert_check_shapes(&c, dir, kiln_hf_dims, &h, d);
    if (!rc) {
        m->layers = calloc((size_t)m->nlayers, sizeof *m->layers);
        m->lin = calloc((size_t)m->nlayers * L_PER, sizeof *m->lin);
        if (!m->layers || !m->lin)
            rc = kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
    }
    if (!rc) /* the word embeddings read by row, never whole (kiln_hf_dims checked them) */
        reloadable_emb(m, dir);
    if (!rc)
        rc = load_all(m, &h, d);
    if (!rc && kiln_hf_quantized(&h))
        m->ck = kiln_hf_take_checkpoint(&h);
    if (rc && m->lin) /* layers may point into the checkpoint kiln_hf_close frees */
        for (int i = 0; i < m->nlayers * L_PER; i++)
            m->lin[i].stored = NULL;
    kiln_hf_close(&h);
    snprintf(path, sizeof path, "%s/vocab.txt", dir);
    if (!rc)
        rc = kiln_tok_wordpiece_load_max(path, m->vocab, &m->tok, d);
    if (!rc)
        rc = kiln_shape_vocab(path, kiln_tok_vocab_size(m->tok), m->vocab, d);
    if (!rc)
        reloadable(m);
    if (rc) {
        kiln_bert_free(m);
        return rc;
    }
    *out = m;
    return 0;
}

/* A single model.safetensors stays mapped (docs/hardening.md, "Memory"): the word
 * embeddings' rows are read from it when looked up, never taken whole (before the other
 * tensors are read), and the plain linear layers' weights read again from it, so their
 * f32 copy is dropped once bound (reloadable). Where there is no such file (shards) the
 * embeddings are taken and the layers keep w; a quantized layer reads its own. */
static void reloadable_emb(KilnBert *m, const char *dir)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    KilnDiag ignore = {0};
    if (kiln_mf_open(path, &m->mf, &ignore))
        return;
    const KilnModelTensor *t = kiln_mf_find(m->mf, "embeddings.word_embeddings.weight");
    if (t && t->rank == 2 && t->dim[0] == m->vocab && t->dim[1] == m->d &&
        !kiln_mf_rows_f32(m->mf, t, 0, 0, NULL, &ignore)) /* read by row when looked up */
        m->wemb_t = t;
}

static void reloadable(KilnBert *m)
{
    KilnDiag ignore = {0};
    if (!m->mf)
        return;
    for (int i = 0; i < m->nlayers * L_PER; i++) {
        KilnLinear *l = &m->lin[i];
        char name[200];
        snprintf(name, sizeof name, "%s.weight", l->name);
        const KilnModelTensor *t = kiln_mf_find(m->mf, name);
        if (l->stored || !t || t->rank != 2 || t->dim[0] != l->N || t->dim[1] != l->K ||
            kiln_mf_rows_f32(m->mf, t, 0, 0, NULL, &ignore))
            continue;
        l->wmf = m->mf, l->wt = t;
    }
}

/* Row id of the word embeddings: kept, or read from the file into row. */
static const float *wemb_row(const KilnBert *m, int32_t id, float *row)
{
    if (m->wemb)
        return m->wemb + (int64_t)id * m->d;
    KilnDiag ignore = {0}; /* reloadable() checked the tensor: a row in range always reads */
    kiln_mf_rows_f32(m->mf, m->wemb_t, id, 1, row, &ignore);
    return row;
}

KilnLinear *kiln_bert_linears(KilnBert *m, int *n)
{
    *n = m->nlayers * L_PER;
    return m->lin;
}

int kiln_bert_dim(const KilnBert *m) { return m->d; }

typedef struct AttnTask {
    const KilnBert *m;
    const float *q, *k, *v; /* [T, D] */
    float *ctx;             /* [T, D] */
    const int64_t *seg;     /* sentence start rows, nseg+1 entries */
    int nseg;
    float *scratch; /* per thread: maxlen floats */
    int64_t maxlen;
} AttnTask;

void kiln_bert_attend(const float *q, const float *k, const float *v, int64_t T, int D, int hd,
                      int h, float *p, float *ctx)
{
    float sc = 1.0f / sqrtf((float)hd);
    for (int64_t i = 0; i < T; i++) {
        const float *qi = q + i * D + h * hd;
        for (int64_t j = 0; j < T; j++) {
            const float *kj = k + j * D + h * hd;
            float dot = 0;
            for (int e = 0; e < hd; e++)
                dot += qi[e] * kj[e];
            p[j] = dot * sc;
        }
        kiln_softmax(p, T);
        float *o = ctx + i * D + h * hd;
        memset(o, 0, sizeof(float) * (size_t)hd);
        for (int64_t j = 0; j < T; j++) {
            const float *vj = v + j * D + h * hd;
            for (int e = 0; e < hd; e++)
                o[e] += p[j] * vj[e];
        }
    }
}

/* One task = one (sentence, head): full bidirectional attention inside the sentence. */
static void attn_task(void *ctx, int task, int thread)
{
    const AttnTask *a = ctx;
    const KilnBert *m = a->m;
    int D = m->d, hd = D / m->nheads;
    int s = task / m->nheads, h = task % m->nheads;
    int64_t t0 = a->seg[s], T = a->seg[s + 1] - t0;
    kiln_bert_attend(a->q + t0 * D, a->k + t0 * D, a->v + t0 * D, T, D, hd, h,
                     a->scratch + (size_t)thread * a->maxlen, a->ctx + t0 * D);
}

void kiln_bert_batch_free(KilnBertBatch *b)
{
    free(b->seg), free(b->x);
    memset(b, 0, sizeof *b);
}

/* The sentences' token ids, one after another: seg[s] the first row of sentence s. */
static int tokenize(KilnBert *m, const char *const *texts, int n, KilnBertBatch *b,
                    int32_t **idsp, KilnDiag *d)
{
    int32_t *ids = NULL;
    int64_t T = 0, cap = 0, maxlen = 0;
    b->seg = calloc((size_t)n + 1, sizeof *b->seg);
    int rc = b->seg ? 0 : kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
    for (int s = 0; !rc && s < n; s++) {
        int need = 0;
        int32_t probe[1];
        if (kiln_tok_encode(m->tok, texts[s], 1, probe, 0, &need, d) < 0) {
            rc = -1;
            break;
        }
        if (need > m->maxpos)
            need = m->maxpos; /* longer inputs are cut at the position table (no [SEP]) */
        if (T + need > cap) {
            cap = (T + need) * 2;
            int32_t *nids = realloc(ids, sizeof *ids * (size_t)cap);
            if (!nids) {
                rc = kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
                break;
            }
            ids = nids;
        }
        int got = kiln_tok_encode(m->tok, texts[s], 1, ids + T, need, NULL, d);
        if (got < 0) {
            rc = -1;
            break;
        }
        b->seg[s] = T;
        T += got;
        maxlen = got > maxlen ? got : maxlen;
    }
    if (rc) {
        free(ids);
        return rc;
    }
    b->seg[n] = T;
    b->n = n, b->T = T, b->maxlen = maxlen;
    *idsp = ids;
    return 0;
}

int kiln_bert_batch_begin(KilnBert *m, const char *const *texts, int n, KilnBertBatch *b,
                          KilnDiag *d)
{
    memset(b, 0, sizeof *b);
    int D = m->d;
    int32_t *ids = NULL;
    int rc = tokenize(m, texts, n, b, &ids, d);
    if (rc) {
        kiln_bert_batch_free(b);
        return rc ? rc : KILN_EINPUT;
    }
    int64_t T = b->T;
    const int64_t *seg = b->seg;
    float *x = b->x = malloc(sizeof(float) * (size_t)(T * D));
    float *erow = malloc(sizeof(float) * (size_t)D);
    if (!x || !erow)
        rc = kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
    for (int s = 0; !rc && s < n; s++)
        for (int64_t t = seg[s]; !rc && t < seg[s + 1]; t++) {
            int32_t id = ids[t];
            if (id < 0 || id >= m->vocab) { /* never clamped: a wrong id is a wrong result */
                rc = kiln_diag_set(d, KILN_EINPUT, "bert: token id %d of sentence %d is outside "
                                   "the %d rows of the embedding", id, s, m->vocab);
                break;
            }
            const float *we = wemb_row(m, id, erow);
            for (int e = 0; e < D; e++)
                x[t * D + e] = we[e] + m->pemb[(t - seg[s]) * D + e] + m->temb[e];
        }
    if (m->wemb_t) /* the rows read, and the kernel's read-around of each: not kept */
        kiln_mf_drop_pages(m->mf, m->wemb_t);
    if (!rc)
        kiln_layernorm(x, T, D, m->eln_g, m->eln_b, m->eps);
    free(ids), free(erow);
    if (rc)
        kiln_bert_batch_free(b);
    return rc;
}

/* A block's working buffers for a batch of T rows. */
typedef struct BlockBufs {
    float *q, *k, *v, *c, *h, *scr;
} BlockBufs;

static void bufs_free(BlockBufs *u)
{
    free(u->q), free(u->k), free(u->v), free(u->c), free(u->h), free(u->scr);
}

static int bufs_alloc(const KilnBert *m, KilnPool *pool, const KilnBertBatch *b, BlockBufs *u,
                      KilnDiag *d)
{
    int64_t T = b->T, D = m->d;
    int nt = pool ? kiln_pool_size(pool) : 1;
    u->q = malloc(sizeof(float) * (size_t)(T * D)), u->k = malloc(sizeof(float) * (size_t)(T * D));
    u->v = malloc(sizeof(float) * (size_t)(T * D)), u->c = malloc(sizeof(float) * (size_t)(T * D));
    u->h = malloc(sizeof(float) * (size_t)(T * m->ffn));
    u->scr = malloc(sizeof(float) * (size_t)(b->maxlen * nt + 1));
    if (u->q && u->k && u->v && u->c && u->h && u->scr)
        return 0;
    bufs_free(u);
    return kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
}

static int block_run(KilnBert *m, KilnPool *pool, int i, KilnBertBatch *b, BlockBufs *u,
                     KilnDiag *d)
{
    int64_t T = b->T, D = m->d;
    float *x = b->x, *q = u->q, *h = u->h;
    KilnLinear *L = &m->lin[i * L_PER];
    int rc = kiln_linear_run(&L[L_Q], pool, x, T, q, d) ||
             kiln_linear_run(&L[L_K], pool, x, T, u->k, d) ||
             kiln_linear_run(&L[L_V], pool, x, T, u->v, d);
    if (rc)
        return rc;
    AttnTask at = {m, q, u->k, u->v, u->c, b->seg, b->n, u->scr, b->maxlen};
    kiln_pool_run(pool, b->n * m->nheads, attn_task, &at);
    if ((rc = kiln_linear_run(&L[L_O], pool, u->c, T, q, d)))
        return rc;
    for (int64_t j = 0; j < T * D; j++)
        x[j] += q[j];
    kiln_layernorm(x, T, D, m->layers[i].ln1_g, m->layers[i].ln1_b, m->eps);
    if ((rc = kiln_linear_run(&L[L_UP], pool, x, T, h, d)))
        return rc;
    if (!L[L_UP].act_fused) /* else the intermediate.dense kernel applied it */
        kiln_gelu_erf(h, T * m->ffn);
    if ((rc = kiln_linear_run(&L[L_DOWN], pool, h, T, q, d)))
        return rc;
    for (int64_t j = 0; j < T * D; j++)
        x[j] += q[j];
    kiln_layernorm(x, T, D, m->layers[i].ln2_g, m->layers[i].ln2_b, m->eps);
    return 0;
}

int kiln_bert_block(KilnBert *m, KilnPool *pool, int layer, KilnBertBatch *b, KilnDiag *d)
{
    if (layer < 0 || layer >= m->nlayers)
        return kiln_diag_set(d, KILN_EINPUT, "bert: block %d of %d", layer, m->nlayers);
    BlockBufs u = {0};
    int rc = bufs_alloc(m, pool, b, &u, d);
    if (!rc)
        rc = block_run(m, pool, layer, b, &u, d);
    bufs_free(&u);
    return rc ? (d->code ? d->code : KILN_EINTERNAL) : 0;
}

int kiln_bert_nlayers(const KilnBert *m) { return m->nlayers; }

int kiln_bert_embed(KilnBert *m, KilnPool *pool, const char *const *texts, int n, float *out,
                    int64_t *ntok, KilnDiag *d)
{
    int D = m->d;
    KilnBertBatch b;
    int rc = kiln_bert_batch_begin(m, texts, n, &b, d);
    if (rc)
        return rc;
    if (ntok)
        *ntok = b.T;
    BlockBufs u = {0};
    rc = bufs_alloc(m, pool, &b, &u, d);
    for (int i = 0; !rc && i < m->nlayers; i++)
        rc = block_run(m, pool, i, &b, &u, d);
    const float *x = b.x;
    const int64_t *seg = b.seg;
    for (int s = 0; !rc && s < n; s++) {
        float *o = out + (size_t)s * D;
        int64_t len = seg[s + 1] - seg[s];
        for (int e = 0; e < D; e++) {
            double acc = 0;
            for (int64_t t = seg[s]; t < seg[s + 1]; t++)
                acc += x[t * D + e];
            o[e] = len ? (float)(acc / (double)len) : 0.0f;
        }
        double nn = 0;
        for (int e = 0; e < D; e++)
            nn += (double)o[e] * o[e];
        float inv = (float)(1.0 / fmax(sqrt(nn), 1e-12));
        for (int e = 0; e < D; e++)
            o[e] *= inv;
    }
    bufs_free(&u);
    kiln_bert_batch_free(&b);
    return rc ? (d->code ? d->code : KILN_EINTERNAL) : 0;
}

int kiln_bert_scale_sites(KilnBert *m, KilnScaleSite **out, int *n, KilnDiag *d)
{
    KilnScaleSite *s = calloc((size_t)m->nlayers * 4, sizeof *s);
    if (!s)
        return kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
    for (int i = 0; i < m->nlayers; i++) {
        int b = i * L_PER;
        /* post-norm blocks: a LayerNorm's output is also the residual stream, so no
         * norm can take a scale; q,k,v, intermediate (after LN) and output (after
         * GELU) need a pre-scale. The attention output's channels are value's. */
        s[i * 4 + 0] = (KilnScaleSite){{b + L_Q, b + L_K, b + L_V}, 3, NULL, NULL, -1};
        s[i * 4 + 1] = (KilnScaleSite){{b + L_O}, 1, NULL, NULL, b + L_V};
        s[i * 4 + 2] = (KilnScaleSite){{b + L_UP}, 1, NULL, NULL, -1};
        s[i * 4 + 3] = (KilnScaleSite){{b + L_DOWN}, 1, NULL, NULL, -1};
    }
    *out = s;
    *n = m->nlayers * 4;
    return 0;
}
