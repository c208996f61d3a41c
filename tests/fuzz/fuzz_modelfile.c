/* tests/fuzz/fuzz_modelfile.c — libFuzzer harness for one model file reader, chosen at
 * build time: -DKILN_FUZZ_GGUF (the GGUF reader, then the BPE tokenizer built from a
 * GGUF that opens) or -DKILN_FUZZ_SAFETENSORS. The input is the file. A file that opens
 * has its tensors converted to f32, then is cross-checked as the network loaders will use
 * it (model/nets/shapes.h): a GGUF as a Llama, a safetensors file as a BERT whose
 * config.json is the file's "config" metadata string (else a built-in tiny one). What the
 * checks pass must hold what the loader reads — every tensor with the configuration's
 * element count, a layer count backed by tensors, hyperparameters in range, every token id
 * the tokenizer produces inside the embedding. Built by scripts/fuzz.sh as fuzz_gguf and
 * fuzz_safetensors (README.md). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <math.h>

#include "model/files/modelfile.h"
#include "model/nets/llama_internal.h"
#include "model/nets/shapes.h"
#include "model/tokenizers/tokenizer.h"

#if defined(KILN_FUZZ_GGUF)
#define EXT "gguf"
#elif defined(KILN_FUZZ_SAFETENSORS)
#define EXT "safetensors"
#else
#error "build with -DKILN_FUZZ_GGUF or -DKILN_FUZZ_SAFETENSORS"
#endif

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char path[256];

static void remove_file(void) { unlink(path); }

/* A refusal is KILN_EINPUT with a message, never anything else. */
static void refused(const KilnDiag *d)
{
    if (d->code != KILN_EINPUT || !d->msg[0])
        abort();
}

/* Tensor name exists with exactly numel elements (what the loader's reads then check). */
static void must_hold(const KilnModelFile *mf, const char *name, int64_t numel)
{
    const KilnModelTensor *t = kiln_mf_find(mf, name);
    if (!t || t->numel != numel)
        abort();
}

static void in_range(double v, double lo, double hi)
{
    if (!isfinite(v) || !(v > lo) || v > hi)
        abort();
}

#ifdef KILN_FUZZ_GGUF
/* Encodes a few texts; with rows >= 0 every id must index the embedding. */
static void exercise_tokenizer(const KilnModelFile *mf, int64_t rows)
{
    KilnTokenizer *t = NULL;
    KilnDiag d = {0};
    if (kiln_tok_bpe_from_gguf(mf, &t, &d) != 0)
        return;
    if (rows >= 0 && kiln_shape_vocab(path, kiln_tok_vocab_size(t), rows, &d))
        rows = -1; /* the loader refuses this model: the tokenizer alone still must not crash */
    static const char *const texts[] = {"Hello, world! 3.14 it's  \n\n x",
                                        "<|im_start|>user\nHi<|im_end|>",
                                        "caf\xc3\xa9 \xe4\xb8\xad\xf0\x9f\x98\x80 \xff\xfe"};
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        int32_t ids[256];
        int needed = 0;
        int n = kiln_tok_encode(t, texts[i], 0, ids, 256, &needed, &d);
        for (int k = 0; k < n && rows >= 0; k++)
            if (ids[k] < 0 || ids[k] >= rows)
                abort(); /* an id the forward pass would have to refuse */
        if (n > 0)
            free(kiln_tok_decode(t, ids, n));
    }
    for (int32_t id = 0; id < kiln_tok_vocab_size(t) && id < 64; id++)
        (void)kiln_tok_token(t, id);
    kiln_tok_free(t);
}

/* The GGUF as kiln_llama_load sees it, up to where it would allocate. Returns the
 * embedding rows when the model passes, else -1. */
static int64_t cross_check_llama(const KilnModelFile *mf)
{
    KilnLlama m = {0};
    KilnDiag d = {0};
    if (kiln_llama_gguf_config(mf, path, &m, &d)) {
        refused(&d);
        return -1;
    }
    in_range(m.eps, 0, KILN_EPS_MAX);
    in_range(m.theta, 1, KILN_ROPE_BASE_MAX);
    if (m.d % m.nh || m.nh % m.nkv || m.hd * m.nh != m.d || m.hd % 2)
        abort();
    KilnLlamaSource s;
    kiln_llama_gguf_names(mf, path, &s);
    if (kiln_llama_check_shapes(&m, &s, &d)) {
        refused(&d);
        return -1;
    }
    /* the per-block tables (~3.7 KiB a block) are backed by 9 tensors a block */
    if ((int64_t)m.nlayers * 9 + 2 > kiln_mf_ntensors(mf))
        abort();
    int64_t D = m.d, KV = (int64_t)m.nkv * m.hd, F = m.ffn;
    must_hold(mf, "token_embd.weight", m.vocab * D);
    must_hold(mf, "output_norm.weight", D);
    const int64_t nk[7] = {D * D, KV * D, KV * D, D * D, F * D, F * D, D * F};
    char name[200];
    for (int i = 0; i < m.nlayers; i++) {
        snprintf(name, sizeof name, "blk.%d.attn_norm.weight", i);
        must_hold(mf, name, D);
        snprintf(name, sizeof name, "blk.%d.ffn_norm.weight", i);
        must_hold(mf, name, D);
        for (int j = 0; j < 7; j++) {
            snprintf(name, sizeof name, "blk.%d.%s.weight", i, kiln_llama_gguf_lin_names[j]);
            must_hold(mf, name, nk[j]);
        }
    }
    if (kiln_mf_find(mf, "output.weight"))
        must_hold(mf, "output.weight", m.vocab * D);
    return m.vocab;
}
#endif

#ifdef KILN_FUZZ_SAFETENSORS
/* all-MiniLM-L6-v2's layout at a tiny size (make_seeds.py writes a file that fits it). */
static const char tiny_bert[] =
    "{\"num_hidden_layers\": 1, \"hidden_size\": 4, \"num_attention_heads\": 2, "
    "\"intermediate_size\": 8, \"max_position_embeddings\": 8, \"vocab_size\": 10, "
    "\"type_vocab_size\": 2, \"layer_norm_eps\": 1e-12, \"hidden_act\": \"gelu\"}";

/* The safetensors file as kiln_bert_load sees it, up to where it would allocate. */
static void cross_check_bert(const KilnModelFile *mf)
{
    const char *text = kiln_mf_meta_str(mf, "config");
    if (!text)
        text = tiny_bert;
    KilnJson *cfg = NULL;
    KilnDiag d = {0};
    if (kiln_json_parse(text, strlen(text), "config", &cfg, &d)) {
        refused(&d);
        return;
    }
    KilnBertConfig c;
    int rc = cfg->kind == KILN_JSON_OBJECT ? kiln_bert_config(cfg, path, &c, &d) : -1;
    kiln_json_free(cfg);
    if (rc > 0)
        refused(&d);
    if (rc)
        return;
    in_range(c.eps, 0, KILN_EPS_MAX);
    if (c.d % c.nheads || c.ntype < 1)
        abort();
    if (kiln_bert_check_shapes(&c, path, kiln_mf_dims, (void *)mf, &d)) {
        refused(&d);
        return;
    }
    if ((int64_t)c.nlayers * 16 + 5 > kiln_mf_ntensors(mf))
        abort();
    int64_t D = c.d, F = c.ffn;
    must_hold(mf, "embeddings.word_embeddings.weight", c.vocab * D);
    must_hold(mf, "embeddings.position_embeddings.weight", c.maxpos * D);
    /* the row every sentence reads (type 0), and the rest the config says */
    must_hold(mf, "embeddings.token_type_embeddings.weight", c.ntype * D);
    static const char *const lin[6] = {"attention.self.query", "attention.self.key",
                                       "attention.self.value", "attention.output.dense",
                                       "intermediate.dense", "output.dense"};
    char name[200];
    for (int i = 0; i < c.nlayers; i++)
        for (int j = 0; j < 6; j++) {
            snprintf(name, sizeof name, "encoder.layer.%d.%s.weight", i, lin[j]);
            must_hold(mf, name, (j == 4 ? F : D) * (j == 5 ? F : D));
            snprintf(name, sizeof name, "encoder.layer.%d.%s.bias", i, lin[j]);
            must_hold(mf, name, j == 4 ? F : D);
        }
}
#endif

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
#ifdef KILN_FUZZ_SAFETENSORS
    /* the GGUF magic wins over the extension: that input belongs to the other target */
    if (size >= 4 && memcmp(data, "GGUF", 4) == 0)
        return 0;
#endif
    if (!path[0]) {
        const char *dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
        snprintf(path, sizeof path, "%s/kiln_fuzz.%d." EXT, dir, (int)getpid());
        atexit(remove_file);
    }
    FILE *f = fopen(path, "wb");
    if (!f)
        return 0;
    fwrite(data, 1, size, f);
    fclose(f);
    KilnModelFile *mf = NULL;
    KilnDiag d = {0};
    if (kiln_mf_open(path, &mf, &d) != 0) {
        if (d.code != KILN_EINPUT || !d.msg[0] || mf)
            abort(); /* a malformed file must be KILN_EINPUT with a message */
        return 0;
    }
    for (int i = 0; i < kiln_mf_ntensors(mf); i++) {
        const KilnModelTensor *t = kiln_mf_tensor(mf, i);
        float *y = NULL;
        if (t->numel <= (1 << 22) && kiln_mf_load_f32(mf, t->name, &y, &d) == 0)
            free(y);
        if (kiln_mf_find(mf, t->name) != t)
            abort(); /* the name index lost a tensor */
    }
#ifdef KILN_FUZZ_GGUF
    exercise_tokenizer(mf, cross_check_llama(mf));
#else
    cross_check_bert(mf);
#endif
    kiln_mf_close(mf);
    return 0;
}
