/* model/nets/llama.c — a Llama decoder from a GGUF file (SmolLM2-135M-Instruct): RMSNorm,
 * RoPE ("norm" adjacent-pair layout, as llama.cpp's converter permutes Q/K rows for),
 * grouped-query attention over the KV cache, SiLU-gated FFN, tied output head. Weights
 * are dequantized to f32 on load; every linear layer is a KilnLinear named with the
 * Hugging Face names (docs/models.md, "Layer names"). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "model/nets/llama_internal.h"
#include "model/nets/shapes.h"
#include "model/model.h"
#include "model/files/modelfile.h"
#include "model/tokenizers/tokenizer.h"
#include "runtime/runtime.h"

static int load(const KilnModelFile *mf, const char *name, int64_t numel, float **out,
                KilnDiag *d)
{
    return kiln_load_f32_checked(mf, "GGUF", name, numel, out, d);
}

void kiln_llama_free(KilnLlama *m)
{
    if (!m)
        return;
    free(m->emb);
    for (int i = 0; i < m->nlayers; i++) {
        if (m->attn_norm)
            free(m->attn_norm[i]);
        if (m->ffn_norm)
            free(m->ffn_norm[i]);
    }
    free(m->attn_norm), free(m->ffn_norm), free(m->out_norm);
    kiln_linears_free(m->lin, m->nlayers * L_PER + 1);
    kiln_mf_close(m->mf); /* after the layers: they read their weights from it */
    kiln_tok_free(m->tok);
    kiln_checkpoint_free(m->ck);
    free(m->ck);
    free(m);
}

int kiln_llama_load_tensors(KilnLlama *m, const KilnLlamaSource *s, KilnDiag *d)
{
    int rc = kiln_llama_check_shapes(m, s, d); /* before the tables the block count sizes */
    if (rc)
        return rc;
    m->attn_norm = calloc((size_t)m->nlayers, sizeof(float *));
    m->ffn_norm = calloc((size_t)m->nlayers, sizeof(float *));
    m->lin = calloc((size_t)m->nlayers * L_PER + 1, sizeof *m->lin);
    if (!m->attn_norm || !m->ffn_norm || !m->lin)
        return kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
    int64_t D = m->d;
    char name[200];
    rc = s->emb_src ? s->emb_src(s->ctx, m, d) : s->vec(s->ctx, s->emb, (int64_t)m->vocab * D,
                                                        &m->emb, d);
    if (!rc)
        rc = s->vec(s->ctx, s->out_norm, D, &m->out_norm, d);
    for (int i = 0; !rc && i < m->nlayers; i++) {
        snprintf(name, sizeof name, s->attn_norm, i);
        rc = s->vec(s->ctx, name, D, &m->attn_norm[i], d);
        snprintf(name, sizeof name, s->ffn_norm, i);
        if (!rc)
            rc = s->vec(s->ctx, name, D, &m->ffn_norm[i], d);
        for (int j = 0; !rc && j < L_PER; j++) {
            KilnLinear *l = &m->lin[i * L_PER + j];
            kiln_llama_linear_init(m, i, j, l);
            rc = s->linear(s->ctx, m, i, j, l, d);
        }
    }
    if (rc)
        return rc;
    KilnLinear *head = &m->lin[m->nlayers * L_PER];
    snprintf(head->name, sizeof head->name, "lm_head");
    head->N = m->vocab, head->K = D;
    if (s->has_head(s->ctx))
        return s->linear(s->ctx, m, m->nlayers, L_PER, head, d);
    if (!s->tied)
        return kiln_diag_set(d, KILN_EINPUT, "%s: no %s and tie_word_embeddings is false",
                             s->where, s->head);
    snprintf(head->src, sizeof head->src, "%s", s->tied_src); /* the head is the embeddings */
    if (!m->emb) { /* read from the file's embeddings when needed, as every layer */
        head->wmf = m->mf, head->wt = m->emb_t;
        return 0;
    }
    size_t n = sizeof(float) * (size_t)(head->N * D);
    if (!(head->w = malloc(n)))
        return kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
    memcpy(head->w, m->emb, n);
    return 0;
}

static int gguf_vec(void *mf, const char *name, int64_t numel, float **out, KilnDiag *d)
{
    return load(mf, name, numel, out, d);
}

/* Tensor name of mf as a lazily read [rows, cols] matrix: present, of that size, of a type
 * kiln reads by rows (checked now, so reading it later cannot fail). */
static int gguf_lazy(const KilnModelFile *mf, const char *name, int64_t rows, int64_t cols,
                     const KilnModelTensor **out, KilnDiag *d)
{
    const KilnModelTensor *t = kiln_mf_find(mf, name);
    if (!t)
        return kiln_diag_set(d, KILN_EINPUT, "GGUF: no tensor '%s'", name);
    if (t->numel != rows * cols || t->rank < 1 || t->dim[t->rank - 1] != cols)
        return kiln_diag_set(d, KILN_EINPUT, "GGUF: '%s' has %lld elements in rows of %lld, "
                             "expected %lld x %lld", name, (long long)t->numel,
                             (long long)(t->rank < 1 ? 0 : t->dim[t->rank - 1]), (long long)rows,
                             (long long)cols);
    int rc = kiln_mf_rows_f32(mf, t, 0, 0, NULL, d);
    if (!rc)
        *out = t;
    return rc;
}

static int gguf_emb(void *mf, KilnLlama *m, KilnDiag *d)
{
    m->mf = mf;
    return gguf_lazy(mf, "token_embd.weight", m->vocab, m->d, &m->emb_t, d);
}

void kiln_llama_embed_row(const KilnLlama *m, int32_t id, float *x)
{
    if (m->emb) {
        memcpy(x, m->emb + (size_t)id * m->d, sizeof(float) * (size_t)m->d);
        return;
    }
    KilnDiag ignore = {0}; /* gguf_lazy checked the tensor: a row in range always reads */
    kiln_mf_rows_f32(m->mf, m->emb_t, id, 1, x, &ignore);
}

static bool gguf_has_head(void *mf) { return kiln_mf_find(mf, "output.weight") != NULL; }

static int gguf_linear(void *mf, KilnLlama *m, int layer, int j, KilnLinear *l, KilnDiag *d)
{
    (void)m;
    char name[200];
    if (j == L_PER)
        snprintf(l->src, sizeof l->src, "output");
    else
        snprintf(l->src, sizeof l->src, "blk.%d.%s", layer, kiln_llama_gguf_lin_names[j]);
    snprintf(name, sizeof name, "%s.weight", l->src);
    l->wmf = mf; /* read when needed (kiln_linear_wget) */
    return gguf_lazy(mf, name, l->N, l->K, &l->wt, d);
}

int kiln_llama_load(const char *path, KilnLlama **out, KilnDiag *d)
{
    *out = NULL;
    struct stat st;
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) /* a Hugging Face directory */
        return kiln_llama_load_hf(path, out, d);
    KilnModelFile *mf = NULL;
    int rc = kiln_mf_open(path, &mf, d);
    if (rc)
        return rc;
    KilnLlama *m = calloc(1, sizeof *m);
    if (!m) {
        kiln_mf_close(mf);
        return kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
    }
    rc = kiln_llama_gguf_config(mf, path, m, d);
    KilnLlamaSource src;
    kiln_llama_gguf_names(mf, path, &src);
    src.vec = gguf_vec, src.has_head = gguf_has_head, src.linear = gguf_linear;
    src.emb_src = gguf_emb;
    if (!rc)
        rc = kiln_llama_load_tensors(m, &src, d);
    KilnDiag td = {0};
    if (!rc && kiln_tok_bpe_from_gguf(mf, &m->tok, &td))
        kiln_diag_format(&td, m->tok_err, sizeof m->tok_err);
    if (!rc && m->tok)
        rc = kiln_shape_vocab(path, kiln_tok_vocab_size(m->tok), m->vocab, d);
    m->mf = mf; /* kept mapped: the weights are read from it (kiln_llama_free closes it) */
    if (rc) {
        kiln_llama_free(m);
        return rc;
    }
    *out = m;
    return 0;
}

KilnLinear *kiln_llama_linears(KilnLlama *m, int *n)
{
    *n = m->nlayers * L_PER + 1;
    return m->lin;
}
int kiln_llama_vocab(const KilnLlama *m) { return m->vocab; }
int kiln_llama_ctx_max(const KilnLlama *m) { return m->ctx_max; }
const KilnTokenizer *kiln_llama_tokenizer(const KilnLlama *m, KilnDiag *d)
{
    if (!m->tok)
        kiln_diag_set(d, KILN_EINPUT, "SmolLM2 tokenizer: %s", m->tok_err);
    return m->tok;
}

int kiln_llama_kv_init(const KilnLlama *m, KilnKVCache *c, const KilnKVSpec *s, int cap,
                       KilnDiag *d)
{
    return kiln_kv_init(c, s, m->nlayers, m->nkv, m->hd, cap, d);
}

__attribute__((target("avx2,fma"))) static float dot_avx2(const float *a, const float *b, int n)
{
    typedef float v8 __attribute__((vector_size(32)));
    v8 acc = {0};
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        v8 x, y;
        memcpy(&x, a + i, 32);
        memcpy(&y, b + i, 32);
        acc += x * y;
    }
    float s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (; i < n; i++)
        s += a[i] * b[i];
    return s;
}

static float dot_generic(const float *a, const float *b, int n)
{
    float s = 0;
    for (int i = 0; i < n; i++)
        s += a[i] * b[i];
    return s;
}

static float (*pick_dot(void))(const float *, const float *, int)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") ? dot_avx2
                                                                           : dot_generic;
}

typedef struct AttnTask {
    const KilnLlama *m;
    const KilnKVCache *kv;
    int layer, T, pos0;
    const float *q; /* [T, nh*hd], roped */
    float *ctx;     /* [T, nh*hd] */
    float *scratch; /* per thread: 2*(pos0+T)*hd + (pos0+T) */
    float (*dot)(const float *, const float *, int);
} AttnTask;

/* One task = one query head: dequantize its KV head's cache once, then causal
 * attention for the T new tokens. */
static void attn_task(void *ctx, int h, int thread)
{
    const AttnTask *a = ctx;
    const KilnLlama *m = a->m;
    int hd = m->hd, n = a->pos0 + a->T, kvh = h / (m->nh / m->nkv);
    float *K = a->scratch + (size_t)thread * ((size_t)2 * n * hd + n);
    float *V = K + (size_t)n * hd, *p = V + (size_t)n * hd;
    for (int j = 0; j < n; j++) {
        kiln_kv_read(a->kv, 0, a->layer, j, kvh, K + (size_t)j * hd);
        kiln_kv_read(a->kv, 1, a->layer, j, kvh, V + (size_t)j * hd);
    }
    float sc = 1.0f / sqrtf((float)hd);
    int D = m->nh * hd;
    float (*dot)(const float *, const float *, int) = a->dot;
    for (int t = 0; t < a->T; t++) {
        const float *q = a->q + (size_t)t * D + h * hd;
        int upto = a->pos0 + t + 1;
        for (int j = 0; j < upto; j++)
            p[j] = dot(q, K + (size_t)j * hd, hd) * sc;
        kiln_softmax(p, upto);
        float *o = a->ctx + (size_t)t * D + h * hd;
        memset(o, 0, sizeof(float) * (size_t)hd);
        for (int j = 0; j < upto; j++)
            for (int e = 0; e < hd; e++)
                o[e] += p[j] * V[(size_t)j * hd + e];
    }
}

int kiln_llama_forward(KilnLlama *m, KilnPool *pool, KilnKVCache *kv, const int32_t *ids, int T,
                       int pos0, int nlast, float *logits, KilnDiag *d)
{
    if (T <= 0 || pos0 < 0 || pos0 + T > kv->cap || nlast > T)
        return kiln_diag_set(d, KILN_EINPUT, "llama: %d tokens at %d do not fit a cache of %d", T,
                             pos0, kv->cap);
    int D = m->d, KD = m->nkv * m->hd, F = m->ffn;
    size_t nt = (size_t)(pool ? kiln_pool_size(pool) : 1);
    size_t n = (size_t)(pos0 + T);
    float *x = malloc(sizeof(float) * (size_t)T * D), *h = malloc(sizeof(float) * (size_t)T * D);
    float *q = malloc(sizeof(float) * (size_t)T * D), *c = malloc(sizeof(float) * (size_t)T * D);
    float *k = malloc(sizeof(float) * (size_t)T * KD), *v = malloc(sizeof(float) * (size_t)T * KD);
    float *g = malloc(sizeof(float) * (size_t)T * F), *u = malloc(sizeof(float) * (size_t)T * F);
    float *scr = malloc(sizeof(float) * nt * (2 * n * m->hd + n));
    int rc = x && h && q && c && k && v && g && u && scr
                 ? 0
                 : kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
    for (int t = 0; !rc && t < T; t++) {
        if (ids[t] < 0 || ids[t] >= m->vocab) /* never clamped: a wrong id is a wrong result */
            rc = kiln_diag_set(d, KILN_EINPUT, "llama: token id %d at position %d is outside the "
                               "%d rows of the embedding", ids[t], pos0 + t, m->vocab);
        else
            kiln_llama_embed_row(m, ids[t], x + (size_t)t * D);
    }
    for (int i = 0; !rc && i < m->nlayers; i++) {
        KilnLinear *L = &m->lin[i * L_PER];
        memcpy(h, x, sizeof(float) * (size_t)T * D);
        kiln_rmsnorm(h, T, D, m->attn_norm[i], m->eps);
        rc = kiln_linear_run(&L[L_Q], pool, h, T, q, d) ||
             kiln_linear_run(&L[L_K], pool, h, T, k, d) ||
             kiln_linear_run(&L[L_V], pool, h, T, v, d);
        if (rc)
            break;
        for (int t = 0; t < T; t++) {
            for (int hh = 0; hh < m->nh; hh++)
                kiln_rope_norm(q + (size_t)t * D + hh * m->hd, m->hd, pos0 + t, m->theta);
            for (int hh = 0; hh < m->nkv; hh++)
                kiln_rope_norm(k + (size_t)t * KD + hh * m->hd, m->hd, pos0 + t, m->theta);
            kiln_kv_write(kv, i, pos0 + t, k + (size_t)t * KD, v + (size_t)t * KD);
        }
        AttnTask at = {m, kv, i, T, pos0, q, c, scr, pick_dot()};
        kiln_pool_run(pool, m->nh, attn_task, &at);
        if ((rc = kiln_linear_run(&L[L_O], pool, c, T, h, d)))
            break;
        for (size_t j = 0; j < (size_t)T * D; j++)
            x[j] += h[j];
        memcpy(h, x, sizeof(float) * (size_t)T * D);
        kiln_rmsnorm(h, T, D, m->ffn_norm[i], m->eps);
        rc = kiln_linear_run(&L[L_GATE], pool, h, T, g, d) ||
             kiln_linear_run(&L[L_UP], pool, h, T, u, d);
        if (rc)
            break;
        if (L[L_GATE].act_fused) /* the gate_proj kernel already applied silu */
            for (size_t j = 0; j < (size_t)T * F; j++)
                g[j] *= u[j];
        else
            for (size_t j = 0; j < (size_t)T * F; j++)
                g[j] = kiln_silu1(g[j]) * u[j];
        if ((rc = kiln_linear_run(&L[L_DOWN], pool, g, T, h, d)))
            break;
        for (size_t j = 0; j < (size_t)T * D; j++)
            x[j] += h[j];
    }
    if (!rc && nlast > 0) {
        float *xl = x + (size_t)(T - nlast) * D;
        kiln_rmsnorm(xl, nlast, D, m->out_norm, m->eps);
        rc = kiln_linear_run(&m->lin[m->nlayers * L_PER], pool, xl, nlast, logits, d);
    }
    free(x), free(h), free(q), free(c), free(k), free(v), free(g), free(u), free(scr);
    return rc ? (d->code ? d->code : KILN_EINTERNAL) : 0;
}

int kiln_llama_scale_sites(KilnLlama *m, KilnScaleSite **out, int *n, KilnDiag *d)
{
    KilnScaleSite *s = calloc((size_t)m->nlayers * 4, sizeof *s);
    if (!s)
        return kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
    for (int i = 0; i < m->nlayers; i++) {
        int b = i * L_PER;
        /* pre-norm blocks: the norms' outputs feed only these layers, so they can take s */
        s[i * 4 + 0] = (KilnScaleSite){{b + L_Q, b + L_K, b + L_V}, 3, m->attn_norm[i], NULL, -1};
        /* attention output channels are v's channels when every head has its own v
         * (no grouped-query sharing): then v's rows can take s */
        s[i * 4 + 1] = (KilnScaleSite){{b + L_O}, 1, NULL, NULL, m->nkv == m->nh ? b + L_V : -1};
        s[i * 4 + 2] = (KilnScaleSite){{b + L_GATE, b + L_UP}, 2, m->ffn_norm[i], NULL, -1};
        /* silu(gate)·up is linear in up's rows */
        s[i * 4 + 3] = (KilnScaleSite){{b + L_DOWN}, 1, NULL, NULL, b + L_UP};
    }
    *out = s;
    *n = m->nlayers * 4;
    return 0;
}
