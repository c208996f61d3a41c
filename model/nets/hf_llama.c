/* model/nets/hf_llama.c — a Llama from a Hugging Face directory (LlamaForCausalLM:
 * config.json, *.safetensors plain or quantized, tokenizer.json, the chat template) into
 * the same KilnLlama the GGUF loader makes: q_proj / k_proj rows turned from HF's
 * rotate-half order to the adjacent pairs kiln_rope_norm rotates, as llama.cpp's
 * converter does. docs/models.md. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "model/nets/hfdir.h"
#include "model/nets/llama_internal.h"
#include "model/nets/shapes.h"
#include "runtime/runtime.h"

#define ERR(...) kiln_diag_set(d, KILN_EINPUT, __VA_ARGS__)

/* HF's rotate-half rows -> kiln's adjacent pairs (model/checkpoints/export.c) in w, b and every
 * row-wise part of the stored layer, so that it still dequantizes to w. */
static int permute_linear(KilnLinear *l, KilnQLinear *q, int nhead, KilnDiag *d)
{
    int rc = l->w ? kiln_llama_permute_qk_rows(l->w, l->N, sizeof(float) * (size_t)l->K, nhead,
                                               false, d) : 0; /* else dequantized from q */
    if (!rc && l->b)
        rc = kiln_llama_permute_qk_rows(l->b, l->N, sizeof(float), nhead, false, d);
    return !rc && q ? kiln_llama_permute_qk(q, nhead, d) : rc;
}

static int read_config(KilnLlama *m, const KilnHfDir *h, bool *tied, KilnDiag *d)
{
    const KilnJson *c = h->config, *v;
    int rc = kiln_hf_cfg_int(h, "num_hidden_layers", -1, &m->nlayers, d);
    if (!rc)
        rc = kiln_hf_cfg_int(h, "hidden_size", -1, &m->d, d);
    if (!rc)
        rc = kiln_hf_cfg_int(h, "intermediate_size", -1, &m->ffn, d);
    if (!rc)
        rc = kiln_hf_cfg_int(h, "num_attention_heads", -1, &m->nh, d);
    if (!rc)
        rc = kiln_hf_cfg_int(h, "num_key_value_heads", m->nh, &m->nkv, d);
    if (!rc)
        rc = kiln_hf_cfg_int(h, "vocab_size", -1, &m->vocab, d);
    if (!rc)
        rc = kiln_hf_cfg_int(h, "max_position_embeddings", 2048, &m->ctx_max, d);
    if (rc)
        return rc;
    char where[4200];
    snprintf(where, sizeof where, "%s/config.json", h->dir);
    static const char *const fkeys[2] = {"rms_norm_eps", "rope_theta"};
    const double dflt[2] = {1e-6, 10000.0}, hi[2] = {KILN_EPS_MAX, KILN_ROPE_BASE_MAX};
    float *dst[2] = {&m->eps, &m->theta};
    for (int i = 0; i < 2; i++) {
        if ((v = kiln_json_get(c, fkeys[i])) && v->kind != KILN_JSON_NUMBER)
            return ERR("%s: '%s' is not a number", where, fkeys[i]);
        double x = v ? kiln_json_num(v) : dflt[i];
        if ((rc = kiln_shape_float(where, fkeys[i], x, i ? 1 : 0, hi[i], d)))
            return rc;
        *dst[i] = (float)x;
    }
    *tied = (v = kiln_json_get(c, "tie_word_embeddings")) && v->kind == KILN_JSON_BOOL ? v->b
                                                                                      : false;
    if ((v = kiln_json_get(c, "hidden_act")) &&
        (v->kind != KILN_JSON_STRING || strcmp(v->str, "silu")))
        return ERR("%s/config.json: hidden_act must be \"silu\"", h->dir);
    if ((v = kiln_json_get(c, "rope_scaling")) && v->kind != KILN_JSON_NULL)
        return ERR("%s/config.json: rope_scaling is not implemented (kiln's RoPE is the plain "
                   "one)", h->dir);
    if (m->d % m->nh || m->nh % m->nkv || (m->d / m->nh) % 2)
        return ERR("%s/config.json: %d heads / %d KV heads do not divide width %d", h->dir, m->nh,
                   m->nkv, m->d);
    m->hd = m->d / m->nh;
    int hd;
    if ((v = kiln_json_get(c, "head_dim")) && v->kind != KILN_JSON_NULL &&
        (kiln_hf_cfg_int(h, "head_dim", -1, &hd, d) || hd != m->hd))
        return ERR("%s/config.json: head_dim other than hidden_size / num_attention_heads (%d) "
                   "is not implemented", h->dir, m->hd);
    return 0;
}

static int hf_vec(void *h, const char *name, int64_t numel, float **out, KilnDiag *d)
{
    return kiln_hf_take(h, name, numel, out, d);
}

/* The embeddings read a row at a time from the mapped file (as the GGUF loader does),
 * else taken whole (a type not read by rows). */
static int hf_emb(void *ctx, KilnLlama *m, KilnDiag *d)
{
    KilnHfDir *h = ctx;
    const char *name = "model.embed_tokens.weight";
    if (!kiln_hf_rows(h, name, m->vocab, m->d, &m->mf, &m->emb_t, d))
        return 0;
    return kiln_hf_take(h, name, (int64_t)m->vocab * m->d, &m->emb, d);
}

static bool hf_has_head(void *ctx)
{
    KilnHfDir *h = ctx;
    return kiln_hf_has(h, "lm_head.weight") || kiln_checkpoint_find(h->ck, "lm_head");
}

static int hf_linear(void *h, KilnLlama *m, int layer, int j, KilnLinear *l, KilnDiag *d)
{
    (void)layer;
    snprintf(l->src, sizeof l->src, "%s", l->name);
    int rc = kiln_hf_linear(h, l->name, l, false, d);
    /* the checkpoint is this loader's until the model takes it: stored may change */
    if (!rc && (j == L_Q || j == L_K))
        rc = permute_linear(l, (KilnQLinear *)l->stored, j == L_Q ? m->nh : m->nkv, d);
    return rc;
}

/* tokenizer_config.json's chat_template: a string, or a list of {name, template} whose
 * "default" entry is the one (transformers' named templates). */
static int config_template(const char *path, char **out, KilnDiag *d)
{
    KilnJson *j = NULL;
    int rc = kiln_json_parse_file(path, &j, d);
    if (rc)
        return rc;
    const KilnJson *t = kiln_json_get(j, "chat_template");
    if (t && t->kind == KILN_JSON_ARRAY) {
        const KilnJson *pick = NULL;
        for (size_t i = 0; i < t->len && !pick; i++) {
            const KilnJson *nm = kiln_json_get(&t->items[i], "name");
            if (nm && nm->kind == KILN_JSON_STRING && !strcmp(nm->str, "default"))
                pick = kiln_json_get(&t->items[i], "template");
        }
        t = pick;
    }
    if (t && t->kind == KILN_JSON_STRING && !(*out = strdup(t->str)))
        rc = kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
    kiln_json_free(j);
    return rc;
}

/* The directory's chat template (kiln generate): chat_template.jinja (transformers >= 4.43
 * writes it there), else tokenizer_config.json's; *out NULL when it has none. The loader
 * takes a file it cannot read as none: the model runs without a template (kiln generate
 * then asks for --no-chat). */
static int read_chat_template(const char *dir, char **out, KilnDiag *d)
{
    *out = NULL;
    char path[4200];
    size_t len;
    struct stat st;
    int rc = 0;
    snprintf(path, sizeof path, "%s/chat_template.jinja", dir);
    if (!stat(path, &st)) {
        rc = kiln_rt_read_file(path, "chat template", 1u << 20, out, &len, d);
    } else {
        snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
        rc = stat(path, &st) ? 0 : config_template(path, out, d);
    }
    return rc;
}

int kiln_llama_load_hf(const char *dir, KilnLlama **out, KilnDiag *d)
{
    *out = NULL;
    KilnHfDir h;
    int rc = kiln_hf_open(dir, &h, d);
    if (rc)
        return rc;
    KilnLlama *m = calloc(1, sizeof *m);
    bool tied = false;
    rc = m ? read_config(m, &h, &tied, d) : kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
    const KilnLlamaSource src = {
        .where = dir, .count_key = "num_hidden_layers", .emb = "model.embed_tokens.weight",
        .out_norm = "model.norm.weight", .attn_norm = "model.layers.%d.input_layernorm.weight",
        .ffn_norm = "model.layers.%d.post_attention_layernorm.weight",
        .lin_fmt = "model.layers.%d.%s.weight", .lin_names = kiln_llama_hf_names,
        .head = "lm_head.weight", .tied_src = "model.embed_tokens", .tied = tied, .ctx = &h,
        .dims = kiln_hf_dims, .vec = hf_vec, .emb_src = hf_emb,
        .has_head = hf_has_head, .linear = hf_linear};
    if (!rc)
        rc = kiln_llama_load_tensors(m, &src, d);
    int bos = -1, eos = -1;
    const KilnJson *v;
    if (!rc && (v = kiln_json_get(h.config, "bos_token_id")) && v->is_int)
        bos = (int)(v->i >= 0 && v->i < m->vocab ? v->i : -1);
    if (!rc && (v = kiln_json_get(h.config, "eos_token_id")) && v->is_int)
        eos = (int)(v->i >= 0 && v->i < m->vocab ? v->i : -1);
    if (!rc && kiln_hf_quantized(&h))
        m->ck = kiln_hf_take_checkpoint(&h);
    kiln_hf_close(&h);
    char path[4096];
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    KilnDiag td = {0};
    if (!rc && kiln_tok_bpe_from_hf_json(path, bos, eos, &m->tok, &td))
        kiln_diag_format(&td, m->tok_err, sizeof m->tok_err);
    if (!rc && m->tok)
        rc = kiln_shape_vocab(path, kiln_tok_vocab_size(m->tok), m->vocab, d);
    KilnDiag cd = {0};
    if (!rc && read_chat_template(dir, &m->chat_template, &cd))
        m->chat_template = NULL;
    if (rc) {
        if (m && !m->ck) /* layers may point into the checkpoint, already freed */
            for (int i = 0; m->lin && i < m->nlayers * L_PER + 1; i++)
                m->lin[i].stored = NULL;
        kiln_llama_free(m);
        return rc;
    }
    *out = m;
    return 0;
}
