/* tests/test_model_consistency.c — model files whose parts disagree (issue 17, class 4): tiny
 * Llama GGUFs and BERT directories written here, each consistent but for one part — token
 * ids beyond the embedding rows (a tokenizer larger than the embedding, ids given to the
 * forward pass), a BERT token-type table smaller than the model needs, a layer count the
 * tensors do not back, a tensor of the right element count in the wrong shape, float
 * hyperparameters out of range, a checkpoint declaring 16-bit activations. Each must be
 * KILN_EINPUT naming the file and the numbers (and exit 2 from `kiln eval`); the consistent
 * models load and run. Runs under ASan in CI, which would catch the old out-of-bounds reads. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>

#include "model/checkpoints/checkpoint.h"
#include "model/files/modelfile.h"
#include "model/model.h"
#include "model/nets/shapes.h"
#include "tests/ckpt_synth.h"
#include "tests/test_util.h"
#include "tests/models/testlib.h"

/* ------------------------------------------------------------------ tiny Llama GGUF */

enum { TD = 8, TH = 2, TKV = 1, THD = TD / TH, TF = 16 };

typedef struct Tiny {
    uint64_t block_count; /* what the metadata says */
    int blocks;           /* blocks with tensors */
    int rows, ntok;       /* token_embd rows; tokenizer tokens */
    bool no_eps, no_theta;
    float eps, theta;
    const char *eps_str;  /* the epsilon key as a string instead */
    const char *transpose; /* this tensor written [K, N] */
    uint32_t rope_dims;   /* llama.rope.dimension_count when > 0 */
} Tiny;

static Tiny tiny(void)
{
    return (Tiny){.block_count = 2, .blocks = 2, .rows = 40, .ntok = 40, .eps = 1e-5f,
                  .theta = 10000.0f};
}

static float val(uint64_t *s)
{
    *s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
    return (float)((double)(*s >> 11) * 0x1.0p-53 - 0.5) * 0.5f;
}

/* One f32 tensor [n, k] (k 0: [n]): its info into gi, its data into gd. */
static void tensor(GB *gi, GB *gd, const Tiny *t, const char *name, uint64_t n, uint64_t k,
                   bool ones, uint64_t *seed)
{
    gb_align(gd, 32);
    bool tr = t->transpose && !strcmp(t->transpose, name);
    uint64_t ne[2] = {tr ? n : k, tr ? k : n};
    if (k)
        gb_tensor(gi, name, 2, ne, 0, gd->n);
    else
        gb_tensor(gi, name, 1, &n, 0, gd->n);
    for (uint64_t i = 0; i < n * (k ? k : 1); i++)
        gb_f32(gd, ones ? 1.0f : val(seed));
}

static void tiny_gguf(const Tiny *t, const char *path)
{
    GB kv = {0}, gi = {0}, gd = {0}, g = {0};
    int nkv = 0, nt = 0;
    uint64_t seed = 42;
    gb_kv_str(&kv, "general.architecture", "llama"), nkv++;
    gb_key(&kv, "llama.block_count", GB_U64), gb_u64(&kv, t->block_count), nkv++;
    gb_kv_u32(&kv, "llama.embedding_length", TD), nkv++;
    gb_kv_u32(&kv, "llama.feed_forward_length", TF), nkv++;
    gb_kv_u32(&kv, "llama.attention.head_count", TH), nkv++;
    gb_kv_u32(&kv, "llama.attention.head_count_kv", TKV), nkv++;
    gb_kv_u32(&kv, "llama.context_length", 64), nkv++;
    if (t->eps_str)
        gb_kv_str(&kv, "llama.attention.layer_norm_rms_epsilon", t->eps_str), nkv++;
    else if (!t->no_eps)
        gb_key(&kv, "llama.attention.layer_norm_rms_epsilon", GB_F32), gb_f32(&kv, t->eps), nkv++;
    if (!t->no_theta)
        gb_key(&kv, "llama.rope.freq_base", GB_F32), gb_f32(&kv, t->theta), nkv++;
    if (t->rope_dims)
        gb_kv_u32(&kv, "llama.rope.dimension_count", t->rope_dims), nkv++;
    gb_kv_str(&kv, "tokenizer.ggml.model", "gpt2"), nkv++;
    const char **toks = calloc((size_t)t->ntok, sizeof *toks);
    char(*tt)[16] = calloc((size_t)t->ntok, 16);
    for (int i = 0; i < t->ntok; i++)
        snprintf(tt[i], 16, "%c%d", 'a' + i % 26, i / 26), toks[i] = tt[i];
    gb_kv_arr_str(&kv, "tokenizer.ggml.tokens", toks, (uint64_t)t->ntok), nkv++;
    gb_kv_arr_str(&kv, "tokenizer.ggml.merges", NULL, 0), nkv++;
    free(toks), free(tt);
    tensor(&gi, &gd, t, "token_embd.weight", (uint64_t)t->rows, TD, false, &seed), nt++;
    tensor(&gi, &gd, t, "output_norm.weight", TD, 0, true, &seed), nt++;
    static const char *const lin[7] = {"attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate",
                                       "ffn_up", "ffn_down"};
    const uint64_t N[7] = {TD, TKV * THD, TKV * THD, TD, TF, TF, TD};
    const uint64_t K[7] = {TD, TD, TD, TD, TD, TD, TF};
    char name[64];
    for (int b = 0; b < t->blocks; b++) {
        snprintf(name, sizeof name, "blk.%d.attn_norm.weight", b);
        tensor(&gi, &gd, t, name, TD, 0, true, &seed), nt++;
        snprintf(name, sizeof name, "blk.%d.ffn_norm.weight", b);
        tensor(&gi, &gd, t, name, TD, 0, true, &seed), nt++;
        for (int j = 0; j < 7; j++) {
            snprintf(name, sizeof name, "blk.%d.%s.weight", b, lin[j]);
            tensor(&gi, &gd, t, name, N[j], K[j], false, &seed), nt++;
        }
    }
    gb_header(&g, 3, (uint64_t)nt, (uint64_t)nkv);
    gb_bytes(&g, kv.b, kv.n);
    gb_bytes(&g, gi.b, gi.n);
    gb_align(&g, 32);
    gb_bytes(&g, gd.b, gd.n);
    assert_int_equal(gb_write(&g, path), 0);
    free(kv.b), free(gi.b), free(gd.b), free(g.b);
}

static char gguf_path[300];

/* A loader's result: (want NULL) success, or KILN_EINPUT with no model and a message holding
 * each of want (NULL-ended). */
static void expect_load(const char *what, int rc, const KilnDiag *d, bool got,
                        const char *const *want)
{
    char msg[1400];
    kiln_diag_format(d, msg, sizeof msg);
    if (!want) {
        if (rc || !got)
            fail_msg("%s did not load: %s", what, msg);
        return;
    }
    if (rc != KILN_EINPUT || got)
        fail_msg("%s: expected KILN_EINPUT, got %d: %s", what, rc, msg);
    for (int i = 0; want[i]; i++)
        if (!strstr(msg, want[i]))
            fail_msg("message \"%s\" lacks \"%s\"", msg, want[i]);
}

/* Writes t as a GGUF and loads it: expect_load's checks; the model (want NULL). */
static KilnLlama *llama_expect(const Tiny *t, const char *const *want)
{
    snprintf(gguf_path, sizeof gguf_path, "%s/tiny.gguf", tmpdir);
    tiny_gguf(t, gguf_path);
    KilnLlama *m = NULL;
    KilnDiag d = {0};
    int rc = kiln_llama_load(gguf_path, &m, &d);
    expect_load("tiny GGUF", rc, &d, m != NULL, want);
    return m;
}

#define EXPECT(t, ...) llama_expect(&(t), (const char *const[]){__VA_ARGS__, NULL})

static void test_llama_consistent_runs(void **st)
{
    (void)st;
    Tiny t = tiny();
    KilnLlama *m = llama_expect(&t, NULL);
    assert_int_equal(kiln_llama_vocab(m), 40);
    KilnKVCache kv;
    KilnKVSpec f32 = {KILN_KV_F32, false, true, 0};
    KilnDiag d = {0};
    assert_int_equal(kiln_llama_kv_init(m, &kv, &f32, 8, &d), 0);
    float lg[3 * 40];
    const int32_t ok[3] = {1, 39, 7};
    assert_int_equal(kiln_llama_forward(m, NULL, &kv, ok, 3, 0, 3, lg, &d), 0);
    for (int i = 0; i < 3 * 40; i++)
        assert_true(isfinite(lg[i]));
    /* ids outside the rows: refused, never clamped to row 0 */
    const int32_t bad[2][3] = {{1, 40, 7}, {-1, 2, 3}};
    for (int k = 0; k < 2; k++) {
        d = (KilnDiag){0};
        assert_int_equal(kiln_llama_forward(m, NULL, &kv, bad[k], 3, 0, 3, lg, &d), KILN_EINPUT);
        assert_non_null(strstr(d.msg, "outside the 40 rows"));
    }
    kiln_kv_free(&kv);
    kiln_llama_free(m);
}

static void test_llama_vocab_vs_rows(void **st)
{
    (void)st;
    Tiny t = tiny();
    t.ntok = 50; /* 50 tokens, 40 rows: ids 40..49 would read past the embedding */
    EXPECT(t, "tiny.gguf", "50 tokens", "40 rows");
    t.ntok = 30; /* fewer tokens than rows (padded embeddings) is fine */
    kiln_llama_free(llama_expect(&t, NULL));
}

static void test_llama_block_count(void **st)
{
    (void)st;
    Tiny t = tiny();
    const uint64_t counts[] = {3, 1000000, 1u << 24};
    for (size_t i = 0; i < 3; i++) {
        t.block_count = counts[i];
        struct timespec a, b;
        clock_gettime(CLOCK_MONOTONIC, &a);
        EXPECT(t, "llama.block_count", "blk.2.attn_norm.weight", "holds 2 blocks");
        clock_gettime(CLOCK_MONOTONIC, &b);
        /* refused by the tensors present before the per-block tables are allocated */
        assert_true(b.tv_sec - a.tv_sec < 2);
    }
    t.block_count = (1u << 24) + 1;
    EXPECT(t, "llama.block_count", "2^24");
}

static void test_llama_shapes(void **st)
{
    (void)st;
    Tiny t = tiny();
    t.transpose = "blk.1.ffn_up.weight"; /* [8, 16]: 128 elements like [16, 8] */
    EXPECT(t, "blk.1.ffn_up.weight", "[8, 16]", "[16, 8]");
    t.transpose = "blk.0.attn_k.weight";
    EXPECT(t, "blk.0.attn_k.weight", "[8, 4]", "[4, 8]");
    t.transpose = "token_embd.weight"; /* the rows it states (8) then give a width of 40 */
    EXPECT(t, "token_embd.weight", "[8, 40]", "[8, 8]");
}

static void test_llama_floats(void **st)
{
    (void)st;
    const float bad_eps[] = {-1e-5f, 0.0f, NAN, INFINITY, 2.0f, 1e-45f};
    for (size_t i = 0; i < sizeof bad_eps / sizeof *bad_eps; i++) {
        Tiny t = tiny();
        t.eps = bad_eps[i];
        EXPECT(t, "tiny.gguf", "llama.attention.layer_norm_rms_epsilon", "outside (0, 1]");
    }
    const float bad_theta[] = {0.5f, 1.0f, -10000.0f, NAN, -INFINITY, 1e13f};
    for (size_t i = 0; i < sizeof bad_theta / sizeof *bad_theta; i++) {
        Tiny t = tiny();
        t.theta = bad_theta[i];
        EXPECT(t, "llama.rope.freq_base", "outside (1, 1e+12]");
    }
    Tiny t = tiny();
    t.eps_str = "1e-5";
    EXPECT(t, "layer_norm_rms_epsilon' is not a number");
    t = tiny();
    t.rope_dims = 2; /* partial rotary: kiln rotates the whole head */
    EXPECT(t, "llama.rope.dimension_count", "head size 4");
    t.rope_dims = THD;
    t.no_eps = t.no_theta = true; /* absent: the defaults */
    kiln_llama_free(llama_expect(&t, NULL));
}

/* ------------------------------------------------------------------ tiny BERT directory */

enum { BD = 8, BF = 16, BPOS = 16 };

typedef struct TinyBert {
    int vocab_cfg, vocab_rows, vocab_lines, layers_cfg, type_rows, type_cols;
    const char *eps;        /* layer_norm_eps as JSON text, NULL: absent */
    const char *type_vocab; /* type_vocab_size as JSON text, NULL: absent */
    const char *transpose;  /* this linear layer written [K, N] */
} TinyBert;

static TinyBert tiny_bert(void)
{
    return (TinyBert){.vocab_cfg = 30, .vocab_rows = 30, .vocab_lines = 30, .layers_cfg = 1,
                      .type_rows = 2, .type_cols = BD, .eps = "1e-12", .type_vocab = "2"};
}

static char bert_dir[300];

/* f32 tensors for kiln_safetensors_write: [r, c] (c 0: [r]), written [c, r] when named by
 * transpose; random values, or ones. */
typedef struct StList {
    KilnModelTensor t[40];
    float *buf[40];
    char name[40][128];
    int n;
    const char *transpose;
    uint64_t seed;
} StList;

static void st_add(StList *l, const char *name, int64_t r, int64_t c, bool ones)
{
    int i = l->n++;
    assert_true(i < 40);
    snprintf(l->name[i], sizeof l->name[i], "%s", name);
    bool tr = l->transpose && !strcmp(l->transpose, name);
    int64_t n = r * (c ? c : 1);
    l->buf[i] = malloc(sizeof(float) * (size_t)n);
    for (int64_t k = 0; k < n; k++)
        l->buf[i][k] = ones ? 1.0f : val(&l->seed);
    l->t[i] = (KilnModelTensor){l->name[i], KILN_MT_F32, c ? 2 : 1, {tr ? c : r, tr ? r : c}, n,
                                l->buf[i], sizeof(float) * (size_t)n};
}

/* Writes DIR/model.safetensors and frees the list. */
static void st_write(StList *l, const char *dir)
{
    char path[400];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    KilnDiag d = {0};
    assert_int_equal(kiln_safetensors_write(path, l->t, l->n, NULL, 0, &d), 0);
    for (int i = 0; i < l->n; i++)
        free(l->buf[i]);
}

static void fresh_dir(const char *dir)
{
    char cmd[1000];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s'", dir, dir);
    assert_int_equal(system(cmd), 0);
}

static void tiny_bert_write(const TinyBert *b)
{
    snprintf(bert_dir, sizeof bert_dir, "%s/bert", tmpdir);
    fresh_dir(bert_dir);
    char path[400];
    StList *l = calloc(1, sizeof *l);
    l->transpose = b->transpose, l->seed = 3;
    st_add(l, "embeddings.word_embeddings.weight", b->vocab_rows, BD, false);
    st_add(l, "embeddings.position_embeddings.weight", BPOS, BD, false);
    st_add(l, "embeddings.token_type_embeddings.weight", b->type_rows, b->type_cols, false);
    st_add(l, "embeddings.LayerNorm.weight", BD, 0, true);
    st_add(l, "embeddings.LayerNorm.bias", BD, 0, false);
    static const char *const lin[6] = {"attention.self.query", "attention.self.key",
                                       "attention.self.value", "attention.output.dense",
                                       "intermediate.dense", "output.dense"};
    char nm[128];
    for (int j = 0; j < 6; j++) {
        snprintf(nm, sizeof nm, "encoder.layer.0.%s.weight", lin[j]);
        st_add(l, nm, j == 4 ? BF : BD, j == 5 ? BF : BD, false);
        snprintf(nm, sizeof nm, "encoder.layer.0.%s.bias", lin[j]);
        st_add(l, nm, j == 4 ? BF : BD, 0, false);
    }
    static const char *const ln[2] = {"attention.output.LayerNorm", "output.LayerNorm"};
    for (int j = 0; j < 4; j++) {
        snprintf(nm, sizeof nm, "encoder.layer.0.%s.%s", ln[j / 2], j % 2 ? "bias" : "weight");
        st_add(l, nm, BD, 0, j % 2 == 0);
    }
    st_write(l, bert_dir);
    free(l);
    snprintf(path, sizeof path, "%s/config.json", bert_dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fprintf(f, "{\"architectures\": [\"BertModel\"], \"num_hidden_layers\": %d, \"hidden_size\": "
            "%d, \"num_attention_heads\": 2, \"intermediate_size\": %d, "
            "\"max_position_embeddings\": %d, \"vocab_size\": %d, \"hidden_act\": \"gelu\"",
            b->layers_cfg, BD, BF, BPOS, b->vocab_cfg);
    if (b->eps)
        fprintf(f, ", \"layer_norm_eps\": %s", b->eps);
    if (b->type_vocab)
        fprintf(f, ", \"type_vocab_size\": %s", b->type_vocab);
    fprintf(f, "}\n");
    fclose(f);
    snprintf(path, sizeof path, "%s/vocab.txt", bert_dir);
    f = fopen(path, "w");
    assert_non_null(f);
    static const char *const sp[5] = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"};
    for (int i = 0; i < b->vocab_lines; i++)
        i < 5 ? fprintf(f, "%s\n", sp[i]) : fprintf(f, "w%d\n", i);
    fclose(f);
}

static KilnBert *bert_expect(const TinyBert *b, const char *const *want)
{
    tiny_bert_write(b);
    KilnBert *m = NULL;
    KilnDiag d = {0};
    int rc = kiln_bert_load(bert_dir, &m, &d);
    expect_load("tiny BERT", rc, &d, m != NULL, want);
    return m;
}

#define EXPECT_BERT(b, ...) bert_expect(&(b), (const char *const[]){__VA_ARGS__, NULL})

static void test_bert_consistent_runs(void **st)
{
    (void)st;
    TinyBert b = tiny_bert();
    KilnBert *m = bert_expect(&b, NULL);
    const char *texts[2] = {"w7 w9 w29", "anything unknown"};
    float e[2][BD];
    KilnDiag d = {0};
    assert_int_equal(kiln_bert_embed(m, NULL, texts, 2, &e[0][0], NULL, &d), 0);
    for (int i = 0; i < 2 * BD; i++)
        assert_true(isfinite(e[i / BD][i % BD]));
    kiln_bert_free(m);
}

static void test_bert_disagreements(void **st)
{
    (void)st;
    TinyBert b = tiny_bert();
    b.type_rows = 1, b.type_cols = 4; /* fewer elements than one row of the model's width */
    EXPECT_BERT(b, "token_type_embeddings.weight", "[1, 4]", "[2, 8]");
    b.type_cols = BD; /* one row, where type_vocab_size says 2 */
    EXPECT_BERT(b, "token_type_embeddings.weight", "[1, 8]", "[2, 8]");
    b.type_vocab = NULL; /* absent: Hugging Face's default 2 */
    EXPECT_BERT(b, "token_type_embeddings.weight", "[2, 8]");
    b = tiny_bert();
    b.vocab_lines = 45; /* vocab.txt larger than the embedding */
    EXPECT_BERT(b, "vocab.txt", "45 tokens", "30 rows");
    b = tiny_bert();
    b.vocab_cfg = 45; /* config larger than the tensor */
    EXPECT_BERT(b, "word_embeddings.weight", "[30, 8]", "[45, 8]");
    b = tiny_bert();
    b.layers_cfg = 1000000;
    EXPECT_BERT(b, "num_hidden_layers is 1000000", "holds 1 layers");
    b = tiny_bert();
    b.transpose = "encoder.layer.0.intermediate.dense.weight";
    EXPECT_BERT(b, "intermediate.dense.weight", "[8, 16]", "[16, 8]");
    static const char *const bad_eps[] = {"-1e-12", "0", "1e400", "2", "\"small\""};
    for (size_t i = 0; i < sizeof bad_eps / sizeof *bad_eps; i++) {
        b = tiny_bert();
        b.eps = bad_eps[i];
        if (i == 2) { /* 1e400: the JSON reader's own error, or out of range */
            tiny_bert_write(&b);
            KilnBert *m = NULL;
            KilnDiag d = {0};
            assert_int_equal(kiln_bert_load(bert_dir, &m, &d), KILN_EINPUT);
            continue;
        }
        EXPECT_BERT(b, "config.json", "layer_norm_eps");
    }
}

/* ------------------------------------------------------------------ tiny Llama directory */

/* A Hugging Face Llama directory of the tiny GGUF's sizes (no tokenizer.json: the model
 * runs on ids): config.json with `layers` blocks and extra members (JSON text), one block
 * of tensors, transpose as in StList; then expect_load. */
static void hf_llama_expect(int layers, const char *extra, const char *transpose,
                            const char *const *want)
{
    char dir[400], path[500], nm[128];
    snprintf(dir, sizeof dir, "%s/hfllama", tmpdir);
    fresh_dir(dir);
    StList *l = calloc(1, sizeof *l);
    l->transpose = transpose, l->seed = 5;
    st_add(l, "model.embed_tokens.weight", 40, TD, false);
    st_add(l, "model.norm.weight", TD, 0, true);
    st_add(l, "model.layers.0.input_layernorm.weight", TD, 0, true);
    st_add(l, "model.layers.0.post_attention_layernorm.weight", TD, 0, true);
    static const char *const lin[7] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                       "self_attn.o_proj", "mlp.gate_proj",    "mlp.up_proj",
                                       "mlp.down_proj"};
    const int64_t N[7] = {TD, TKV * THD, TKV * THD, TD, TF, TF, TD};
    for (int j = 0; j < 7; j++) {
        snprintf(nm, sizeof nm, "model.layers.0.%s.weight", lin[j]);
        st_add(l, nm, N[j], j == 6 ? TF : TD, false);
    }
    st_write(l, dir);
    free(l);
    snprintf(path, sizeof path, "%s/config.json", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fprintf(f, "{\"architectures\": [\"LlamaForCausalLM\"], \"num_hidden_layers\": %d, "
            "\"hidden_size\": %d, \"intermediate_size\": %d, \"num_attention_heads\": %d, "
            "\"num_key_value_heads\": %d, \"vocab_size\": 40, \"tie_word_embeddings\": true%s}\n",
            layers, TD, TF, TH, TKV, extra);
    fclose(f);
    KilnLlama *m = NULL;
    KilnDiag d = {0};
    int rc = kiln_llama_load(dir, &m, &d);
    expect_load("tiny HF Llama", rc, &d, m != NULL, want);
    kiln_llama_free(m);
}

#define EXPECT_HF(layers, extra, tr, ...)                                                        \
    hf_llama_expect(layers, extra, tr, (const char *const[]){__VA_ARGS__, NULL})

static void test_hf_llama_disagreements(void **st)
{
    (void)st;
    hf_llama_expect(1, "", NULL, NULL); /* consistent: loads */
    EXPECT_HF(1, "", "model.layers.0.mlp.up_proj.weight", "up_proj.weight", "[8, 16]", "[16, 8]");
    EXPECT_HF(1000000, "", NULL, "num_hidden_layers is 1000000", "holds 1 blocks");
    EXPECT_HF(1, ", \"rope_theta\": -1", NULL, "config.json", "rope_theta", "outside (1, 1e+12]");
    EXPECT_HF(1, ", \"rms_norm_eps\": 0", NULL, "rms_norm_eps", "outside (0, 1]");
    EXPECT_HF(1, ", \"rms_norm_eps\": \"1e-6\"", NULL, "'rms_norm_eps' is not a number");
    EXPECT_HF(1, "", "model.embed_tokens.weight", "embed_tokens.weight", "[8, 40]", "[40, 8]");
}

/* ------------------------------------------------------------------ checkpoints */

/* A compressed-tensors checkpoint whose activations are declared 16-bit: refused, not run as
 * int8 (and the KV cache likewise). */
static void test_ckpt_16bit_activations(void **st)
{
    (void)st;
    KilnCheckpoint c;
    make_ckpt(&c, true);
    char dir[400], path[500];
    snprintf(dir, sizeof dir, "%s/ckpt-a16", tmpdir);
    KilnDiag d = {0};
    assert_int_equal(kiln_checkpoint_write(dir, &c, &d), 0);
    kiln_checkpoint_free(&c);
    snprintf(path, sizeof path, "%s/config.json", dir);
    size_t len = 0;
    char *cfg = NULL;
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    cfg = malloc(1 << 20);
    len = fread(cfg, 1, (1 << 20) - 1, f);
    fclose(f);
    cfg[len] = 0;
    char *ia = strstr(cfg, "\"input_activations\": {");
    assert_non_null(ia);
    char *nb = strstr(ia, "\"num_bits\": 8");
    assert_non_null(nb);
    memmove(nb + 14, nb + 13, strlen(nb + 13) + 1); /* 8 -> 16 */
    memcpy(nb + 12, "16", 2);
    f = fopen(path, "wb");
    fputs(cfg, f);
    fclose(f);
    free(cfg);
    KilnCheckpoint r;
    d = (KilnDiag){0};
    assert_int_equal(kiln_checkpoint_read(dir, &r, &d), KILN_EINPUT);
    if (!strstr(d.msg, "input_activations") || !strstr(d.msg, "num_bits 16"))
        fail_msg("message: %s", d.msg);
    print_message("%s\n", d.msg);
}

/* ------------------------------------------------------------------ fuzz seeds */

/* The tiny models tests/fuzz/make_seeds.py writes for fuzz_gguf and fuzz_safetensors load with
 * the real loaders, so the fuzzers' mutations start from files that pass every check. */
static void test_fuzz_seeds_load(void **st)
{
    (void)st;
    char cmd[1200], path[600];
    snprintf(cmd, sizeof cmd, "python3 '%s/tests/fuzz/make_seeds.py' '%s/seeds' && mkdir -p "
             "'%s/seeds/bert' && cp '%s/seeds/safetensors/tiny_bert.safetensors' "
             "'%s/seeds/bert/model.safetensors'", KILN_SOURCE_DIR, tmpdir, tmpdir, tmpdir, tmpdir);
    assert_int_equal(system(cmd), 0);
    snprintf(path, sizeof path, "%s/seeds/gguf/tiny_llama.gguf", tmpdir);
    KilnLlama *m = NULL;
    KilnDiag d = {0};
    if (kiln_llama_load(path, &m, &d))
        fail_msg("%s: %s", path, d.msg);
    kiln_llama_free(m);
    /* config.json: the file's "config" metadata; vocab.txt: 10 tokens */
    snprintf(path, sizeof path, "%s/seeds/bert/model.safetensors", tmpdir);
    KilnModelFile *mf = NULL;
    assert_int_equal(kiln_mf_open(path, &mf, &d), 0);
    snprintf(path, sizeof path, "%s/seeds/bert/config.json", tmpdir);
    FILE *f = fopen(path, "w");
    fputs(kiln_mf_meta_str(mf, "config"), f);
    fclose(f);
    kiln_mf_close(mf);
    snprintf(path, sizeof path, "%s/seeds/bert/vocab.txt", tmpdir);
    f = fopen(path, "w");
    fputs("[PAD]\n[UNK]\n[CLS]\n[SEP]\na\nb\nc\nd\ne\nf\n", f);
    fclose(f);
    snprintf(path, sizeof path, "%s/seeds/bert", tmpdir);
    KilnBert *b = NULL;
    if (kiln_bert_load(path, &b, &d))
        fail_msg("%s: %s", path, d.msg);
    kiln_bert_free(b);
}

/* ------------------------------------------------------------------ the command */

static void test_cli_exit_2(void **st)
{
    (void)st;
    Tiny t = tiny();
    t.ntok = 50;
    snprintf(gguf_path, sizeof gguf_path, "%s/cli.gguf", tmpdir);
    tiny_gguf(&t, gguf_path);
    char text[400], cmd[2000], out[400];
    snprintf(text, sizeof text, "%s/text.txt", tmpdir);
    snprintf(out, sizeof out, "%s/cli.err", tmpdir);
    FILE *f = fopen(text, "w");
    fputs("In the beginning was the Word.\nAnd the Word was with God.\nAnd more.\n", f);
    fclose(f);
    snprintf(cmd, sizeof cmd, "'%s' eval '%s/recipes/w8a8-int8-dynamic.lua' --model '%s' --text "
             "'%s' >/dev/null 2>'%s'", KILN_BIN, KILN_SOURCE_DIR, gguf_path, text, out);
    int rc = system(cmd);
    assert_true(WIFEXITED(rc));
    char *err = tu_read_file(out, NULL);
    assert_non_null(err);
    if (WEXITSTATUS(rc) != 2 || !strstr(err, "50 tokens") || !strstr(err, "40 rows"))
        fail_msg("kiln eval exited %d: %s", WEXITSTATUS(rc), err);
    free(err);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_llama_consistent_runs),
        cmocka_unit_test(test_llama_vocab_vs_rows),
        cmocka_unit_test(test_llama_block_count),
        cmocka_unit_test(test_llama_shapes),
        cmocka_unit_test(test_llama_floats),
        cmocka_unit_test(test_bert_consistent_runs),
        cmocka_unit_test(test_bert_disagreements),
        cmocka_unit_test(test_hf_llama_disagreements),
        cmocka_unit_test(test_ckpt_16bit_activations),
        cmocka_unit_test(test_fuzz_seeds_load),
        cmocka_unit_test(test_cli_exit_2),
    };
    return cmocka_run_group_tests(tests, tmpdir_setup, tmpdir_teardown);
}
