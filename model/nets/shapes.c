/* model/nets/shapes.c — a network's configuration against the tensors its file holds, checked
 * before the loader allocates (model/nets/shapes.h). */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "model/files/modelfile.h"
#include "model/nets/llama_internal.h"
#include "model/nets/shapes.h"

#define ERR(...) kiln_diag_set(d, KILN_EINPUT, __VA_ARGS__)

static void shape_text(int rank, const int64_t *dim, char *buf, size_t n)
{
    size_t p = (size_t)snprintf(buf, n, "[");
    for (int i = 0; i < rank && p < n; i++)
        p += (size_t)snprintf(buf + p, n - p, "%s%lld", i ? ", " : "", (long long)dim[i]);
    if (p < n)
        snprintf(buf + p, n - p, "]");
}

int kiln_shape_want(const char *where, KilnDimsFn dims, void *ctx, const char *name, int64_t d0,
                    int64_t d1, KilnDiag *d)
{
    int64_t got[4] = {0}, want[2] = {d0, d1};
    int rank = dims(ctx, name, got), wrank = d1 < 0 ? 1 : 2;
    if (rank < 0)
        return ERR("%s: no tensor '%s'", where, name);
    if (rank == wrank && got[0] == d0 && (wrank == 1 || got[1] == d1))
        return 0;
    char g[120], w[120];
    shape_text(rank > 4 ? 4 : rank, got, g, sizeof g);
    shape_text(wrank, want, w, sizeof w);
    return ERR("%s: tensor '%s' has shape %s, the configuration needs %s", where, name, g, w);
}

int kiln_shape_float(const char *where, const char *key, double v, double lo, double hi,
                     KilnDiag *d)
{
    /* the value is used as a float: below FLT_MIN it is 0 or denormal there */
    if (!isfinite(v) || !(v > lo) || v > hi || v < FLT_MIN)
        return ERR("%s: '%s' is %g, outside (%g, %g]", where, key, v, lo, hi);
    return 0;
}

int kiln_shape_vocab(const char *where, int tok_n, int64_t rows, KilnDiag *d)
{
    if (tok_n > rows)
        return ERR("%s: the tokenizer has %d tokens but the embedding only %lld rows (ids %lld.. "
                   "would index past it)", where, tok_n, (long long)rows, (long long)rows);
    return 0;
}

/* ------------------------------------------------------------------ Llama */

const char *const kiln_llama_hf_names[L_PER] = {"self_attn.q_proj", "self_attn.k_proj",
                                            "self_attn.v_proj", "self_attn.o_proj",
                                            "mlp.gate_proj",    "mlp.up_proj",
                                            "mlp.down_proj"};

void kiln_llama_linear_init(const KilnLlama *m, int layer, int j, KilnLinear *l)
{
    int64_t D = m->d;
    snprintf(l->name, sizeof l->name, "model.layers.%d.%s", layer, kiln_llama_hf_names[j]);
    l->own_act = j == L_GATE ? "silu" : NULL; /* silu(gate_proj(x)) * up_proj(x) */
    l->N = j == L_Q || j == L_O ? D
           : j == L_K || j == L_V ? (int64_t)m->nkv * m->hd
           : j == L_DOWN          ? D
                                  : m->ffn;
    l->K = j == L_DOWN ? m->ffn : D;
}

static int llama_block(const KilnLlama *m, const KilnLlamaSource *s, int i, KilnDiag *d)
{
    char name[256];
    int64_t dim[4];
    snprintf(name, sizeof name, s->attn_norm, i);
    if (s->dims(s->ctx, name, dim) < 0) /* the layer count is backed by tensors, or refused */
        return ERR("%s: %s is %d but there is no tensor '%s' (the file holds %d blocks)",
                   s->where, s->count_key, m->nlayers, name, i);
    int rc = kiln_shape_want(s->where, s->dims, s->ctx, name, m->d, -1, d);
    snprintf(name, sizeof name, s->ffn_norm, i);
    if (!rc)
        rc = kiln_shape_want(s->where, s->dims, s->ctx, name, m->d, -1, d);
    for (int j = 0; !rc && j < L_PER; j++) {
        KilnLinear l = {0};
        kiln_llama_linear_init(m, i, j, &l);
        snprintf(name, sizeof name, s->lin_fmt, i, s->lin_names[j]);
        rc = kiln_shape_want(s->where, s->dims, s->ctx, name, l.N, l.K, d);
    }
    return rc;
}

int kiln_llama_check_shapes(const KilnLlama *m, const KilnLlamaSource *s, KilnDiag *d)
{
    int rc = kiln_shape_want(s->where, s->dims, s->ctx, s->emb, m->vocab, m->d, d);
    if (!rc)
        rc = kiln_shape_want(s->where, s->dims, s->ctx, s->out_norm, m->d, -1, d);
    for (int i = 0; !rc && i < m->nlayers; i++)
        rc = llama_block(m, s, i, d);
    int64_t dim[4];
    if (!rc && s->dims(s->ctx, s->head, dim) >= 0)
        rc = kiln_shape_want(s->where, s->dims, s->ctx, s->head, m->vocab, m->d, d);
    else if (!rc && !s->tied)
        rc = ERR("%s: no %s and tie_word_embeddings is false", s->where, s->head);
    return rc;
}

int kiln_mf_dims(void *mf, const char *name, int64_t dim[4])
{
    const KilnModelTensor *t = kiln_mf_find(mf, name);
    if (!t)
        return -1;
    memcpy(dim, t->dim, sizeof t->dim);
    return t->rank;
}

const char *const kiln_llama_gguf_lin_names[L_PER] = {"attn_q",   "attn_k", "attn_v",  "attn_output",
                                                  "ffn_gate", "ffn_up", "ffn_down"};

void kiln_llama_gguf_names(const KilnModelFile *mf, const char *path, KilnLlamaSource *s)
{
    *s = (KilnLlamaSource){
        .where = path, .count_key = "llama.block_count", .emb = "token_embd.weight",
        .out_norm = "output_norm.weight", .attn_norm = "blk.%d.attn_norm.weight",
        .ffn_norm = "blk.%d.ffn_norm.weight", .lin_fmt = "blk.%d.%s.weight",
        .lin_names = kiln_llama_gguf_lin_names, .head = "output.weight", .tied_src = "token_embd",
        .tied = true, .ctx = (void *)mf, .dims = kiln_mf_dims};
}

static int gguf_int(const KilnModelFile *mf, const char *path, const char *key, int *out,
                    KilnDiag *d)
{
    int64_t v;
    if (!kiln_mf_meta_int(mf, key, &v) || v <= 0 || v > (1 << 24))
        return ERR("%s: GGUF metadata '%s' missing or not an integer in [1, 2^24]", path, key);
    *out = (int)v;
    return 0;
}

/* A float key: dflt when absent, else a number in (lo, hi]. */
static int gguf_float(const KilnModelFile *mf, const char *path, const char *key, float dflt,
                      double lo, double hi, float *out, KilnDiag *d)
{
    double v = dflt;
    if (kiln_mf_meta_kind(mf, key) != KILN_MV_NONE && !kiln_mf_meta_float(mf, key, &v))
        return ERR("%s: GGUF metadata '%s' is not a number", path, key);
    *out = (float)v;
    return kiln_shape_float(path, key, v, lo, hi, d);
}

/* Keys whose other values kiln's Llama would silently ignore. */
static int gguf_unsupported(const KilnModelFile *mf, const char *path, const KilnLlama *m,
                            KilnDiag *d)
{
    static const char *const same_hd[] = {"llama.rope.dimension_count",
                                          "llama.attention.key_length",
                                          "llama.attention.value_length"};
    int64_t v;
    for (int i = 0; i < 3; i++)
        if (kiln_mf_meta_kind(mf, same_hd[i]) != KILN_MV_NONE &&
            (!kiln_mf_meta_int(mf, same_hd[i], &v) || v != m->hd))
            return ERR("%s: GGUF metadata '%s' other than the head size %d is not implemented",
                       path, same_hd[i], m->hd);
    const char *sc = kiln_mf_meta_str(mf, "llama.rope.scaling.type");
    if (kiln_mf_meta_kind(mf, "llama.rope.scaling.type") != KILN_MV_NONE &&
        (!sc || strcmp(sc, "none")))
        return ERR("%s: GGUF metadata 'llama.rope.scaling.type' is not \"none\": RoPE scaling "
                   "is not implemented", path);
    if (kiln_mf_meta_int(mf, "llama.expert_count", &v) && v > 0)
        return ERR("%s: GGUF metadata 'llama.expert_count' is %lld: mixtures of experts are not "
                   "implemented", path, (long long)v);
    return 0;
}

int kiln_llama_gguf_config(const KilnModelFile *mf, const char *path, KilnLlama *m, KilnDiag *d)
{
    const char *arch = kiln_mf_meta_str(mf, "general.architecture");
    if (!arch || strcmp(arch, "llama"))
        return ERR("%s: general.architecture is '%s', expected 'llama'", path,
                   arch ? arch : "(none)");
    int rc = gguf_int(mf, path, "llama.block_count", &m->nlayers, d);
    if (!rc)
        rc = gguf_int(mf, path, "llama.embedding_length", &m->d, d);
    if (!rc)
        rc = gguf_int(mf, path, "llama.feed_forward_length", &m->ffn, d);
    if (!rc)
        rc = gguf_int(mf, path, "llama.attention.head_count", &m->nh, d);
    if (!rc)
        rc = gguf_int(mf, path, "llama.attention.head_count_kv", &m->nkv, d);
    if (!rc)
        rc = gguf_int(mf, path, "llama.context_length", &m->ctx_max, d);
    if (!rc)
        rc = gguf_float(mf, path, "llama.attention.layer_norm_rms_epsilon", 1e-5f, 0,
                        KILN_EPS_MAX, &m->eps, d);
    if (!rc)
        rc = gguf_float(mf, path, "llama.rope.freq_base", 10000.0f, 1, KILN_ROPE_BASE_MAX,
                        &m->theta, d);
    if (!rc && (m->d % m->nh || m->nh % m->nkv || (m->d / m->nh) % 2))
        rc = ERR("%s: %d heads / %d KV heads do not divide width %d in even heads", path, m->nh,
                 m->nkv, m->d);
    if (rc)
        return rc;
    m->hd = m->d / m->nh;
    const KilnModelTensor *e = kiln_mf_find(mf, "token_embd.weight");
    if (!e || e->rank != 2 || e->dim[0] < 1 || e->dim[0] > (1 << 24))
        return ERR("%s: no token_embd.weight of 2 dimensions and 1 to 2^24 rows", path);
    m->vocab = (int)e->dim[0];
    return gguf_unsupported(mf, path, m, d);
}

/* ------------------------------------------------------------------ BERT */

static int cfg_int(const KilnJson *cfg, const char *where, const char *key, int dflt, int *out,
                   KilnDiag *d)
{
    const KilnJson *v = kiln_json_get(cfg, key);
    if (!v && dflt > 0) {
        *out = dflt;
        return 0;
    }
    if (!v || v->kind != KILN_JSON_NUMBER || !v->is_int || v->i <= 0 || v->i > (1 << 20))
        return ERR("%s: '%s' missing or not an integer in [1, 2^20]", where, key);
    *out = (int)v->i;
    return 0;
}

int kiln_bert_config(const KilnJson *cfg, const char *where, KilnBertConfig *c, KilnDiag *d)
{
    memset(c, 0, sizeof *c);
    int rc = cfg_int(cfg, where, "num_hidden_layers", 0, &c->nlayers, d);
    if (!rc)
        rc = cfg_int(cfg, where, "hidden_size", 0, &c->d, d);
    if (!rc)
        rc = cfg_int(cfg, where, "num_attention_heads", 0, &c->nheads, d);
    if (!rc)
        rc = cfg_int(cfg, where, "intermediate_size", 0, &c->ffn, d);
    if (!rc)
        rc = cfg_int(cfg, where, "max_position_embeddings", 0, &c->maxpos, d);
    if (!rc)
        rc = cfg_int(cfg, where, "vocab_size", 0, &c->vocab, d);
    if (!rc) /* Hugging Face's BertConfig default */
        rc = cfg_int(cfg, where, "type_vocab_size", 2, &c->ntype, d);
    if (rc)
        return rc;
    const KilnJson *v = kiln_json_get(cfg, "layer_norm_eps");
    if (v && v->kind != KILN_JSON_NUMBER)
        return ERR("%s: 'layer_norm_eps' is not a number", where);
    double eps = v ? kiln_json_num(v) : 1e-12;
    if ((rc = kiln_shape_float(where, "layer_norm_eps", eps, 0, KILN_EPS_MAX, d)))
        return rc;
    c->eps = (float)eps;
    const KilnJson *act = kiln_json_get(cfg, "hidden_act");
    if (act && (act->kind != KILN_JSON_STRING || strcmp(act->str, "gelu")))
        return ERR("%s: hidden_act must be \"gelu\"", where);
    if (c->d % c->nheads)
        return ERR("%s: hidden_size %d is not a multiple of %d heads", where, c->d, c->nheads);
    return 0;
}

int kiln_bert_check_shapes(const KilnBertConfig *c, const char *where, KilnDimsFn dims, void *ctx,
                           KilnDiag *d)
{
    static const char *const emb[] = {"word_embeddings", "position_embeddings",
                                      "token_type_embeddings"};
    const int64_t rows[] = {c->vocab, c->maxpos, c->ntype}, D = c->d;
    char name[256];
    int rc = 0;
    for (int i = 0; !rc && i < 3; i++) {
        snprintf(name, sizeof name, "embeddings.%s.weight", emb[i]);
        rc = kiln_shape_want(where, dims, ctx, name, rows[i], D, d);
    }
    if (!rc)
        rc = kiln_shape_want(where, dims, ctx, "embeddings.LayerNorm.weight", D, -1, d);
    if (!rc)
        rc = kiln_shape_want(where, dims, ctx, "embeddings.LayerNorm.bias", D, -1, d);
    static const char *const lin[] = {"attention.self.query", "attention.self.key",
                                      "attention.self.value", "attention.output.dense",
                                      "intermediate.dense",   "output.dense",
                                      "attention.output.LayerNorm", "output.LayerNorm"};
    int64_t dim[4];
    for (int i = 0; !rc && i < c->nlayers; i++) {
        snprintf(name, sizeof name, "encoder.layer.%d.%s.weight", i, lin[0]);
        if (dims(ctx, name, dim) < 0)
            return ERR("%s: num_hidden_layers is %d but there is no tensor '%s' (the file holds "
                       "%d layers)", where, c->nlayers, name, i);
        for (int j = 0; !rc && j < 8; j++) {
            int64_t N = j == 4 ? c->ffn : D, K = j == 5 ? c->ffn : D;
            snprintf(name, sizeof name, "encoder.layer.%d.%s.weight", i, lin[j]);
            rc = kiln_shape_want(where, dims, ctx, name, N, j < 6 ? K : -1, d);
            snprintf(name, sizeof name, "encoder.layer.%d.%s.bias", i, lin[j]);
            if (!rc)
                rc = kiln_shape_want(where, dims, ctx, name, N, -1, d);
        }
    }
    return rc;
}
