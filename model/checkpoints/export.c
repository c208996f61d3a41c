/* model/checkpoints/export.c — the rest of a Hugging Face model directory around the quantized
 * layers of a checkpoint: Llama (from GGUF, so Q/K rows go back to the rotate-half
 * layout, config.json and a tokenizer.json built from the BPE tokenizer) and BERT
 * (its own files copied). docs/checkpoints.md. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/checkpoints/checkpoint.h"
#include "model/checkpoints/ckpt_internal.h" /* a stored layer's mapped file */
#include "model/nets/llama_internal.h"
#include "model/files/modelfile.h"
#include "model/tokenizers/tokenizer_internal.h" /* the vocabulary and merges, for tokenizer.json */
#include "runtime/runtime.h"

/* ------------------------------------------------------------------ JSON files */

/* A JSON document written into memory, then added to c->files. */
typedef struct Doc {
    char *buf;
    size_t len;
    FILE *f;
    KilnJsonWriter w;
} Doc;

static int doc_open(Doc *j, KilnDiag *d)
{
    memset(j, 0, sizeof *j);
    if (!(j->f = open_memstream(&j->buf, &j->len)))
        return kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
    kiln_jw_init(&j->w, j->f);
    kiln_jw_begin_object(&j->w); /* every document is one object */
    return 0;
}

/* Finishes the document; into c->files as name, or (name NULL) into *text (owned). */
static int doc_close(Doc *j, KilnCheckpoint *c, const char *name, char **text, KilnDiag *d)
{
    int rc = kiln_jw_finish(&j->w, d);
    fputc('\n', j->f);
    if (fclose(j->f) != 0 && !rc)
        rc = kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
    if (!rc && name)
        rc = kiln_checkpoint_add_file(c, name, j->buf, j->len, d);
    if (!rc && !name) {
        *text = j->buf;
        return 0;
    }
    free(j->buf);
    return rc;
}

/* A float32 as the shortest decimal that reads back as it (1e-05, not 9.99999974e-06). */
static void key_f32(KilnJsonWriter *w, const char *k, float v)
{
    char buf[48];
    kiln_format_float(buf, sizeof buf, v);
    kiln_jw_key(w, k);
    kiln_jw_double(w, strtod(buf, NULL));
}

static void key_id(KilnJsonWriter *w, const char *k, int32_t id)
{
    kiln_jw_key(w, k);
    if (id >= 0)
        kiln_jw_int(w, id);
    else
        kiln_jw_null(w);
}

/* ------------------------------------------------------------------ Llama: tokenizer */

typedef struct Merge {
    int32_t rank, a, b;
} Merge;

static int cmp_merge(const void *x, const void *y)
{
    const Merge *p = x, *q = y;
    return (p->rank > q->rank) - (p->rank < q->rank);
}

static const char *tok_text(const KilnTokenizer *t, int32_t id)
{
    return id >= 0 && id < t->n && t->tok[id] ? t->tok[id] : NULL;
}

static void byte_level(KilnJsonWriter *w, bool prefix_space, bool trim_offsets)
{
    kiln_jw_begin_object(w);
    kiln_jw_kv_str(w, "type", "ByteLevel");
    kiln_jw_kv_bool(w, "add_prefix_space", prefix_space);
    kiln_jw_kv_bool(w, "trim_offsets", trim_offsets);
    kiln_jw_kv_bool(w, "use_regex", true);
    kiln_jw_end_object(w);
}

/* tokenizer.json of the Hugging Face tokenizers library: byte-level BPE with the
 * GGUF's vocabulary and merges (by rank); control and user-defined tokens as added
 * tokens; the "smollm" family's digit split as a Digits pre-tokenizer. */
/* The tokenizer's merges by rank (*out malloc'd, *n of them); *spaced when a side
 * holds a space, which needs the [a, b] form in tokenizer.json. */
static int sorted_merges(const KilnTokenizer *t, Merge **out, size_t *n, bool *spaced,
                         KilnDiag *d)
{
    size_t cap = t->merge_key ? t->merge_mask + 1 : 0, nm = 0;
    Merge *mg = malloc(sizeof *mg * (cap ? cap : 1));
    if (!mg)
        return kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
    *spaced = false;
    for (size_t h = 0; h < cap; h++) {
        if (!t->merge_key[h])
            continue;
        uint64_t k = t->merge_key[h] - 1;
        mg[nm] = (Merge){t->merge_rank[h], (int32_t)(k >> 32), (int32_t)(uint32_t)k};
        const char *a = tok_text(t, mg[nm].a), *b = tok_text(t, mg[nm].b);
        if (!a || !b) /* the loader only keeps merges of real tokens */
            continue;
        *spaced = *spaced || strchr(a, ' ') || strchr(b, ' ');
        nm++;
    }
    qsort(mg, nm, sizeof *mg, cmp_merge);
    *out = mg;
    *n = nm;
    return 0;
}

static void added_tokens(KilnJsonWriter *w, const KilnTokenizer *t)
{
    kiln_jw_key(w, "added_tokens");
    kiln_jw_begin_array(w);
    for (int32_t id = 0; id < t->n; id++) {
        if (!t->is_special[id] || !tok_text(t, id))
            continue;
        kiln_jw_begin_object(w);
        kiln_jw_kv_int(w, "id", id);
        kiln_jw_kv_str(w, "content", t->tok[id]);
        kiln_jw_kv_bool(w, "single_word", false);
        kiln_jw_kv_bool(w, "lstrip", false);
        kiln_jw_kv_bool(w, "rstrip", false);
        kiln_jw_kv_bool(w, "normalized", false);
        kiln_jw_kv_bool(w, "special", true);
        kiln_jw_end_object(w);
    }
    kiln_jw_end_array(w);
}

static void pre_tokenizer(KilnJsonWriter *w, const KilnTokenizer *t)
{
    kiln_jw_key(w, "pre_tokenizer");
    if (!t->split_digits) {
        byte_level(w, false, true);
        return;
    }
    kiln_jw_begin_object(w);
    kiln_jw_kv_str(w, "type", "Sequence");
    kiln_jw_key(w, "pretokenizers");
    kiln_jw_begin_array(w);
    kiln_jw_begin_object(w);
    kiln_jw_kv_str(w, "type", "Digits");
    kiln_jw_kv_bool(w, "individual_digits", true);
    kiln_jw_end_object(w);
    byte_level(w, false, true);
    kiln_jw_end_array(w);
    kiln_jw_end_object(w);
}

/* "merges": [a b] strings, or [a, b] pairs when a side holds a space. */
static int merges(KilnJsonWriter *w, const KilnTokenizer *t, const Merge *mg, size_t nm,
                  bool spaced, KilnDiag *d)
{
    kiln_jw_key(w, "merges");
    kiln_jw_begin_array(w);
    for (size_t i = 0; i < nm; i++) {
        const char *a = tok_text(t, mg[i].a), *b = tok_text(t, mg[i].b);
        if (spaced) {
            kiln_jw_begin_array(w);
            kiln_jw_string(w, a);
            kiln_jw_string(w, b);
            kiln_jw_end_array(w);
            continue;
        }
        size_t la = strlen(a), lb = strlen(b);
        char stack[256], *s = la + lb + 2 <= sizeof stack ? stack : malloc(la + lb + 2);
        if (!s)
            return kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
        memcpy(s, a, la);
        s[la] = ' ';
        memcpy(s + la + 1, b, lb + 1);
        kiln_jw_string(w, s);
        if (s != stack)
            free(s);
    }
    kiln_jw_end_array(w);
    return 0;
}

/* "model": the byte-level BPE with its vocabulary and merges. */
static int bpe_model(KilnJsonWriter *w, const KilnTokenizer *t, const Merge *mg, size_t nm,
                     bool spaced, KilnDiag *d)
{
    kiln_jw_key(w, "model");
    kiln_jw_begin_object(w);
    kiln_jw_kv_str(w, "type", "BPE");
    kiln_jw_key(w, "dropout");
    kiln_jw_null(w);
    kiln_jw_key(w, "unk_token");
    kiln_jw_null(w);
    kiln_jw_key(w, "continuing_subword_prefix");
    kiln_jw_null(w);
    kiln_jw_key(w, "end_of_word_suffix");
    kiln_jw_null(w);
    kiln_jw_kv_bool(w, "fuse_unk", false);
    kiln_jw_kv_bool(w, "byte_fallback", false);
    kiln_jw_kv_bool(w, "ignore_merges", false);
    kiln_jw_key(w, "vocab");
    kiln_jw_begin_object(w);
    for (int32_t id = 0; id < t->n; id++) {
        const char *s = tok_text(t, id);
        /* a text that occurs twice maps to its last id, as kiln's lookup does; a JSON
         * object cannot hold the key twice */
        if (s && kiln_tok_lookup(t, s, t->tok_len[id]) == id) {
            kiln_jw_key(w, s);
            kiln_jw_int(w, id);
        }
    }
    kiln_jw_end_object(w);
    int rc = merges(w, t, mg, nm, spaced, d);
    kiln_jw_end_object(w);
    return rc;
}

static int write_tokenizer_json(const KilnTokenizer *t, KilnCheckpoint *c, KilnDiag *d)
{
    Merge *mg = NULL;
    size_t nm = 0;
    bool spaced;
    int rc = sorted_merges(t, &mg, &nm, &spaced, d);
    if (rc)
        return rc;
    Doc j;
    if ((rc = doc_open(&j, d))) {
        free(mg);
        return rc;
    }
    KilnJsonWriter *w = &j.w;
    kiln_jw_kv_str(w, "version", "1.0");
    kiln_jw_key(w, "truncation");
    kiln_jw_null(w);
    kiln_jw_key(w, "padding");
    kiln_jw_null(w);
    added_tokens(w, t);
    kiln_jw_key(w, "normalizer");
    kiln_jw_null(w);
    pre_tokenizer(w, t);
    kiln_jw_key(w, "post_processor");
    byte_level(w, true, false);
    kiln_jw_key(w, "decoder");
    byte_level(w, true, true);
    rc = bpe_model(w, t, mg, nm, spaced, d);
    kiln_jw_end_object(w);
    free(mg);
    if (rc) {
        fclose(j.f);
        free(j.buf);
        return rc;
    }
    return doc_close(&j, c, "tokenizer.json", NULL, d);
}

static int write_tokenizer_config(const KilnLlama *m, KilnCheckpoint *c, KilnDiag *d)
{
    const KilnTokenizer *t = m->tok;
    Doc j;
    int rc = doc_open(&j, d);
    if (rc)
        return rc;
    KilnJsonWriter *w = &j.w;
    /* kiln's BPE adds no BOS (docs/models.md); say so, so HF encodes the same ids */
    kiln_jw_kv_bool(w, "add_bos_token", false);
    kiln_jw_kv_bool(w, "add_eos_token", false);
    kiln_jw_kv_bool(w, "add_prefix_space", false);
    kiln_jw_kv_str(w, "bos_token", tok_text(t, t->bos));
    kiln_jw_kv_str(w, "eos_token", tok_text(t, t->eos));
    kiln_jw_kv_str(w, "unk_token", tok_text(t, t->unk));
    kiln_jw_kv_str(w, "pad_token", tok_text(t, t->pad));
    kiln_jw_kv_bool(w, "clean_up_tokenization_spaces", false);
    kiln_jw_kv_int(w, "model_max_length", m->ctx_max);
    kiln_jw_kv_str(w, "tokenizer_class", "GPT2Tokenizer");
    if (m->chat_template) /* the model's own, for kiln generate and transformers alike */
        kiln_jw_kv_str(w, "chat_template", m->chat_template);
    kiln_jw_end_object(w);
    rc = doc_close(&j, c, "tokenizer_config.json", NULL, d);
    if (rc)
        return rc;
    if ((rc = doc_open(&j, d)))
        return rc;
    key_id(w, "bos_token_id", t->bos);
    key_id(w, "eos_token_id", t->eos);
    if (t->pad >= 0)
        key_id(w, "pad_token_id", t->pad);
    kiln_jw_end_object(w);
    return doc_close(&j, c, "generation_config.json", NULL, d);
}

/* ------------------------------------------------------------------ Llama: config, tensors */

static int llama_config(const KilnLlama *m, bool tied, bool attn_bias, bool mlp_bias,
                        KilnCheckpoint *c, KilnDiag *d)
{
    Doc j;
    int rc = doc_open(&j, d);
    if (rc)
        return rc;
    KilnJsonWriter *w = &j.w;
    kiln_jw_key(w, "architectures");
    kiln_jw_begin_array(w);
    kiln_jw_string(w, "LlamaForCausalLM");
    kiln_jw_end_array(w);
    kiln_jw_kv_str(w, "model_type", "llama");
    kiln_jw_kv_int(w, "vocab_size", m->vocab);
    kiln_jw_kv_int(w, "hidden_size", m->d);
    kiln_jw_kv_int(w, "intermediate_size", m->ffn);
    kiln_jw_kv_int(w, "num_hidden_layers", m->nlayers);
    kiln_jw_kv_int(w, "num_attention_heads", m->nh);
    kiln_jw_kv_int(w, "num_key_value_heads", m->nkv);
    kiln_jw_kv_int(w, "head_dim", m->hd);
    kiln_jw_kv_str(w, "hidden_act", "silu");
    kiln_jw_kv_int(w, "max_position_embeddings", m->ctx_max);
    key_f32(w, "rms_norm_eps", m->eps);
    key_f32(w, "rope_theta", m->theta);
    kiln_jw_key(w, "rope_scaling");
    kiln_jw_null(w);
    kiln_jw_kv_bool(w, "attention_bias", attn_bias);
    kiln_jw_kv_bool(w, "mlp_bias", mlp_bias);
    key_f32(w, "attention_dropout", 0.0f);
    key_f32(w, "initializer_range", 0.02f);
    kiln_jw_kv_int(w, "pretraining_tp", 1);
    kiln_jw_kv_bool(w, "use_cache", true);
    kiln_jw_kv_bool(w, "tie_word_embeddings", tied);
    key_id(w, "bos_token_id", m->tok->bos);
    key_id(w, "eos_token_id", m->tok->eos);
    if (m->tok->pad >= 0)
        key_id(w, "pad_token_id", m->tok->pad);
    /* the writer stores plain tensors and scales in f32 */
    kiln_jw_kv_str(w, "torch_dtype", "float32");
    kiln_jw_end_object(w);
    char *text = NULL;
    if ((rc = doc_close(&j, c, NULL, &text, d)))
        return rc;
    free(c->config_json);
    c->config_json = text;
    return 0;
}

static KilnCkptTensor *find_tensor(KilnCheckpoint *c, const char *name)
{
    return (KilnCkptTensor *)kiln_checkpoint_find_tensor(c, name);
}

static void drop_tensor(KilnCheckpoint *c, KilnCkptTensor *t)
{
    free(t->data);
    int i = (int)(t - c->t);
    memmove(&c->t[i], &c->t[i + 1], sizeof *t * (size_t)(c->nt - i - 1));
    c->nt--;
}

/* Adds name (f32 [d0] or [d0, d1]) unless the checkpoint already has it. */
static int add_once(KilnCheckpoint *c, const char *name, const float *data, int rank, int64_t d0,
                    int64_t d1, KilnDiag *d)
{
    if (kiln_checkpoint_find_tensor(c, name))
        return 0;
    int64_t dim[2] = {d0, d1};
    return kiln_checkpoint_add_tensor(c, name, rank, dim, data, d);
}

/* KilnCkptTensor.fill of a layer kept in f32 whose weights are read again from where the
 * model keeps them (ctx: the KilnLinear; its file, or a mapped checkpoint's stored layer
 * decoded), rows as kiln_linear_wget gives them (the layer has no recorded change to
 * replay); arg: (intptr_t) heads whose rows to turn to the HF layout, 0: none. */
static int linear_rows(const void *ctx, const void *arg, int64_t row0, int64_t nrows,
                       float *out, KilnDiag *d)
{
    const KilnLinear *l = ctx;
    int n_head = (int)(intptr_t)arg, rc = 0;
    for (int64_t r = row0; !rc && r < row0 + nrows; r += n_head ? 1 : nrows) {
        int64_t src = n_head ? kiln_llama_qk_row(r, l->N, n_head, true) : r;
        int64_t nr = n_head ? 1 : nrows;
        float *o = out + (r - row0) * l->K;
        rc = l->wmf && l->wt ? kiln_mf_rows_f32(l->wmf, l->wt, src, nr, o, d)
                             : kiln_qlinear_rows(l->stored, src, nr, o, d);
    }
    if (l->wmf && l->wt)
        kiln_mf_drop_pages(l->wmf, l->wt); /* read once: the file's pages need not stay */
    return rc;
}

/* True when the layer's f32 weights can be written a slice of rows at a time from where
 * they are read again: nothing holds them (a caller's copy is written as it is) and no
 * method changed them. */
static bool rows_readable(const KilnLinear *l)
{
    return !l->w && !l->w_dirty && l->nwops == 0 &&
           ((l->wmf && l->wt) || (l->stored && l->stored->src));
}

/* One linear layer of the model: quantized (c->lin: only its q/k rows and a missing
 * bias), already stored in f32 by the caller, or stored here in f32 and ignored.
 * n_head: heads whose rows to turn to the HF layout (0: none). */
static int export_linear(const KilnLinear *l, int n_head, KilnCheckpoint *c, KilnDiag *d)
{
    char wn[200], bn[200];
    snprintf(wn, sizeof wn, "%s.weight", l->name);
    snprintf(bn, sizeof bn, "%s.bias", l->name);
    if (l->in_div)
        return kiln_diag_set(d, KILN_EINPUT, "%s: runs with an input pre-scale that a Hugging "
                             "Face checkpoint cannot hold", l->name);
    KilnQLinear *q = (KilnQLinear *)kiln_checkpoint_find(c, l->name);
    if (!q && l->in_perm) /* its f32 weight is in the permuted column order */
        return kiln_diag_set(d, KILN_EINPUT, "%s: kept in f32 but its columns are permuted "
                             "(act order); quantize it or drop the permutation", l->name);
    int rc = 0;
    if (q) {
        if (q->N != l->N || q->K != l->K)
            return kiln_diag_set(d, KILN_EINPUT, "%s: quantized as [%lld, %lld], the model has "
                                 "[%lld, %lld]", l->name, (long long)q->N, (long long)q->K,
                                 (long long)l->N, (long long)l->K);
        if (n_head && !q->codes && q->fill) { /* turned as they are made; the bias now */
            if (q->qk_heads)
                return kiln_diag_set(d, KILN_EINTERNAL, "%s: exported twice", l->name);
            q->qk_heads = n_head;
            if (q->bias && (rc = kiln_llama_permute_qk_rows(q->bias, q->N, sizeof(float),
                                                            n_head, true, d)))
                return rc;
        } else if (n_head && (rc = kiln_llama_unpermute_qk(q, n_head, d))) {
            return rc;
        }
    } else {
        KilnCkptTensor *t = find_tensor(c, wn);
        if (t) { /* the caller stored it in kiln's row order */
            if (n_head && (rc = kiln_llama_permute_qk_rows(t->data, l->N, sizeof(float) *
                                                           (size_t)l->K, n_head, true, d)))
                return rc;
        } else if (rows_readable(l)) { /* read by rows as the checkpoint is written */
            if (n_head && (rc = kiln_llama_permute_qk_rows(NULL, l->N, 0, n_head, true, d)))
                return rc; /* (the check alone: rows turned as they are read) */
            rc = kiln_checkpoint_add_rows(c, wn, 2, (int64_t[]){l->N, l->K}, linear_rows, l,
                                          (const void *)(intptr_t)n_head, d);
            if (rc)
                return rc;
        } else { /* w read again from the model's file when it was dropped */
            bool had = l->w != NULL;
            if ((rc = kiln_linear_wget((KilnLinear *)l, d)))
                return rc;
            rc = kiln_checkpoint_add_tensor(c, wn, 2, (int64_t[]){l->N, l->K}, l->w, d);
            if (!had)
                kiln_linear_wput((KilnLinear *)l);
            if (rc)
                return rc;
            t = &c->t[c->nt - 1];
            if (n_head && (rc = kiln_llama_permute_qk_rows(t->data, l->N, sizeof(float) *
                                                           (size_t)l->K, n_head, true, d)))
                return rc;
        }
        if ((rc = kiln_checkpoint_add_ignore(c, l->name, d)))
            return rc;
    }
    if (!l->b || (q && q->bias))
        return 0;
    KilnCkptTensor *b = find_tensor(c, bn);
    if (!b) {
        if ((rc = kiln_checkpoint_add_tensor(c, bn, 1, (int64_t[]){l->N}, l->b, d)))
            return rc;
        b = &c->t[c->nt - 1];
    }
    return n_head ? kiln_llama_permute_qk_rows(b->data, l->N, sizeof(float), n_head, true, d) : 0;
}

/* KilnCkptTensor.fill of a GGUF's embeddings: rows read from the file as the checkpoint is
 * written (113 MB of f32 for SmolLM2, never whole in memory). */
static int embed_rows(const void *ctx, const void *arg, int64_t row0, int64_t nrows, float *out,
                      KilnDiag *d)
{
    const KilnLlama *m = ctx;
    (void)arg, (void)d;
    for (int64_t v = 0; v < nrows; v++)
        kiln_llama_embed_row(m, (int32_t)(row0 + v), out + v * m->d);
    kiln_mf_drop_pages(m->mf, m->emb_t); /* read once more: the file's pages need not stay */
    return 0;
}

int kiln_llama_export(const KilnLlama *m, KilnCheckpoint *c, KilnDiag *d)
{
    if (!m->tok)
        return kiln_diag_set(d, KILN_EINPUT, "export: the model's tokenizer is unavailable "
                             "(%s), so the directory would have no tokenizer.json", m->tok_err);
    int64_t D = m->d;
    int rc = 0;
    bool attn_bias = false, mlp_bias = false;
    for (int i = 0; !rc && i < m->nlayers * L_PER; i++) {
        const KilnLinear *l = &m->lin[i];
        int j = i % L_PER;
        int n_head = j == L_Q ? m->nh : j == L_K ? m->nkv : 0;
        if (l->b)
            *(j <= L_O ? &attn_bias : &mlp_bias) = true;
        rc = export_linear(l, n_head, c, d);
    }
    if (rc)
        return rc;
    /* lm_head: tied to the embeddings when its weight is theirs (no output.weight in
     * the GGUF) and nothing quantized it */
    const KilnLinear *head = &m->lin[m->nlayers * L_PER];
    bool tied = !kiln_checkpoint_find(c, head->name) && !head->b &&
                (m->emb ? head->w && !memcmp(head->w, m->emb, sizeof(float) *
                                             (size_t)(m->vocab * D))
                        : head->wt == m->emb_t && !head->w_dirty); /* read from the same rows */
    if (tied) {
        KilnCkptTensor *t = find_tensor(c, "lm_head.weight");
        if (t)
            drop_tensor(c, t);
        rc = kiln_checkpoint_add_ignore(c, head->name, d);
    } else {
        rc = export_linear(head, 0, c, d);
    }
    char name[200];
    if (!rc && m->emb)
        rc = add_once(c, "model.embed_tokens.weight", m->emb, 2, m->vocab, D, d);
    else if (!rc && !kiln_checkpoint_find_tensor(c, "model.embed_tokens.weight"))
        rc = kiln_checkpoint_add_rows(c, "model.embed_tokens.weight", 2,
                                      (int64_t[]){m->vocab, D}, embed_rows, m, NULL, d);
    if (!rc)
        rc = add_once(c, "model.norm.weight", m->out_norm, 1, D, 0, d);
    for (int i = 0; !rc && i < m->nlayers; i++) {
        snprintf(name, sizeof name, "model.layers.%d.input_layernorm.weight", i);
        rc = add_once(c, name, m->attn_norm[i], 1, D, 0, d);
        snprintf(name, sizeof name, "model.layers.%d.post_attention_layernorm.weight", i);
        if (!rc)
            rc = add_once(c, name, m->ffn_norm[i], 1, D, 0, d);
    }
    if (!rc)
        rc = llama_config(m, tied, attn_bias, mlp_bias, c, d);
    if (!rc)
        rc = write_tokenizer_json(m->tok, c, d);
    if (!rc)
        rc = write_tokenizer_config(m, c, d);
    return rc;
}

/* ------------------------------------------------------------------ BERT */

/* The whole file at path into *out (NUL-terminated, owned); *absent when it does not
 * exist (then 0 and nothing read). */
static int read_whole(const char *path, char **out, size_t *len, bool *absent, KilnDiag *d)
{
    *out = NULL, *len = 0;
    FILE *f = kiln_rt_fopen_regular(path, "model file", 0, NULL); /* FIFOs, devices: refused */
    *absent = !f && errno == ENOENT;
    if (!f)
        return *absent ? 0 : kiln_diag_set(d, KILN_EINPUT, "%s: cannot open: %s", path, strerror(errno));
    char *buf = NULL;
    size_t n = 0, cap = 0;
    int rc = 0;
    for (;;) {
        if (n == cap) {
            cap = cap ? 2 * cap : 1 << 16;
            char *nb = realloc(buf, cap + 1);
            if (!nb) {
                rc = kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
                break;
            }
            buf = nb;
        }
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (got == 0) {
            if (ferror(f))
                rc = kiln_diag_set(d, KILN_EINPUT, "%s: read error", path);
            break;
        }
    }
    fclose(f);
    if (rc) {
        free(buf);
        return rc;
    }
    buf[n] = 0;
    *out = buf;
    *len = n;
    return 0;
}

/* The files of a sentence-transformers BERT directory besides weights and config. */
static const char *const bert_files[] = {
    "vocab.txt",        "tokenizer.json",         "tokenizer_config.json",
    "special_tokens_map.json", "modules.json",    "sentence_bert_config.json",
    "config_sentence_transformers.json", "1_Pooling/config.json",
};

/* KilnCkptTensor.fill of a BERT tensor [rows, n] of the model's own mapped file (ctx,
 * kept open by the loaded model; arg: the tensor): read as the checkpoint is written. */
static int file_rows(const void *ctx, const void *arg, int64_t row0, int64_t nrows, float *out,
                     KilnDiag *d)
{
    const KilnModelFile *mf = ctx;
    int rc = kiln_mf_rows_f32(mf, arg, row0, nrows, out, d);
    kiln_mf_drop_pages(mf, arg);
    return rc;
}

static bool is_float_type(KilnModelType t)
{
    return t == KILN_MT_F32 || t == KILN_MT_F16 || t == KILN_MT_BF16 || t == KILN_MT_F64;
}

/* Tensor `name` [rows, n] in a mapping the loaded model keeps open until it is freed
 * (after the checkpoint is written), so that it can be read by rows as it is written:
 * the file a plain layer reads its f32 weights from again (l->wmf), or, for a quantized
 * directory, the mapped file a stored layer decodes its codes from (l->stored->src).
 * NULL when no such mapping holds it readable by rows (then it is read whole). */
static const KilnModelTensor *kept_rows(const KilnLinear *ls, int nl, const char *name,
                                        const KilnModelFile **mf)
{
    KilnDiag ignore = {0};
    for (int k = 0; k < nl; k++) {
        const KilnModelFile *f = ls[k].wmf;
        if (!f && ls[k].stored && ls[k].stored->src)
            f = ls[k].stored->src->mf;
        if (!f || (k > 0 && f == *mf)) /* each mapping tried once in a row of layers */
            continue;
        *mf = f;
        const KilnModelTensor *t = kiln_mf_find(f, name);
        if (t && t->rank == 2 && !kiln_mf_rows_f32(f, t, 0, 0, NULL, &ignore))
            return t;
    }
    return NULL;
}

int kiln_bert_export(const KilnBert *m, const char *src_dir, KilnCheckpoint *c, KilnDiag *d)
{
    int nl = 0;
    /* kiln_bert_linears only hands out the array; nothing here writes to it */
    const KilnLinear *ls = kiln_bert_linears((KilnBert *)m, &nl);
    int rc = 0;
    for (int i = 0; !rc && i < nl; i++)
        rc = export_linear(&ls[i], 0, c, d); /* no Q/K permutation: BERT came as HF weights */
    if (rc)
        return rc;
    char path[4200];
    snprintf(path, sizeof path, "%s/model.safetensors", src_dir);
    KilnModelFile *mf = NULL;
    if ((rc = kiln_mf_open(path, &mf, d)))
        return rc;
    /* everything else of the source: embeddings, LayerNorms, the pooler... as f32
     * (integer buffers such as position_ids are rebuilt by the loaders) */
    for (int i = 0; !rc && i < kiln_mf_ntensors(mf); i++) {
        const KilnModelTensor *t = kiln_mf_tensor(mf, i);
        char mod[200];
        snprintf(mod, sizeof mod, "%s", t->name);
        char *dot = strrchr(mod, '.');
        if (dot)
            *dot = 0;
        bool linear = false;
        for (int k = 0; k < nl && !linear; k++)
            linear = strcmp(ls[k].name, mod) == 0;
        if (linear || !is_float_type(t->type) || kiln_checkpoint_find_tensor(c, t->name))
            continue;
        const KilnModelFile *kmf = NULL;
        const KilnModelTensor *own = t->rank == 2 ? kept_rows(ls, nl, t->name, &kmf) : NULL;
        if (own && own->dim[0] == t->dim[0] && own->dim[1] == t->dim[1]) {
            /* a file the model keeps open: read a slice of rows at a time when written */
            rc = kiln_checkpoint_add_rows(c, t->name, 2, t->dim, file_rows, kmf, own, d);
            continue;
        }
        float *v = NULL;
        if (!(rc = kiln_mf_load_f32(mf, t->name, &v, d)))
            rc = kiln_checkpoint_add_tensor_own(c, t->name, t->rank, t->dim, v, d);
        else
            free(v);
        kiln_mf_drop_pages(mf, t); /* read once: the file's pages need not stay */
    }
    kiln_mf_close(mf);
    char *text = NULL;
    size_t len = 0;
    bool absent = false;
    snprintf(path, sizeof path, "%s/config.json", src_dir);
    if (!rc && !(rc = read_whole(path, &text, &len, &absent, d)) && absent)
        rc = kiln_diag_set(d, KILN_EINPUT, "%s: cannot open", path);
    if (!rc) {
        free(c->config_json);
        c->config_json = text;
    }
    for (size_t i = 0; !rc && i < sizeof bert_files / sizeof bert_files[0]; i++) {
        snprintf(path, sizeof path, "%s/%s", src_dir, bert_files[i]);
        if (!(rc = read_whole(path, &text, &len, &absent, d)) && !absent)
            rc = kiln_checkpoint_add_file(c, bert_files[i], text, len, d);
        free(text);
    }
    return rc;
}
