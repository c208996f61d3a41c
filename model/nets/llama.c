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
    free(m->chat_template);
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
    const char *tmpl = rc ? NULL : kiln_mf_meta_str(mf, "tokenizer.chat_template");
    if (tmpl && !(m->chat_template = strdup(tmpl)))
        rc = kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
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
const char *kiln_llama_chat_template(const KilnLlama *m) { return m->chat_template; }
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

int kiln_llama_kv_init_pass(const KilnLlama *m, KilnKVCache *c, const KilnKVSpec *s, int cap,
                            KilnDiag *d)
{
    return kiln_kv_init_pass(c, s, m->nlayers, m->nkv, m->hd, cap, d);
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
