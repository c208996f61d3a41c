/* tests/test_ckpt_read.c — reading other tools' quantized checkpoints and Hugging Face
 * model directories: tests/ckpt/make_fixtures.py writes tiny checkpoints of every layout
 * with numpy references (dequantized independently from the codes before packing), and
 * every layer must read back to exactly that; malformed ones must fail naming the
 * tensor; a tiny HF Llama (plain and int4) must give the numpy reference's logits; a
 * quantized BERT directory must load with its stored layers; tokenizer.json builds the
 * same byte-level BPE as the GGUF metadata. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "model/checkpoints/checkpoint.h"
#include "model/model.h"
#include "model/files/modelfile.h"
#include "model/tokenizers/tokenizer.h"
#include "runtime/runtime.h"
#include "tests/models/testlib.h"

static char fx[300]; /* the fixtures: tmpdir/fx */

static int run(const char *cmd)
{
    int rc = system(cmd);
    return rc == -1 ? -1 : WEXITSTATUS(rc);
}

static int setup(void **state)
{
    if (tmpdir_setup(state))
        return -1;
    snprintf(fx, sizeof fx, "%s/fx", tmpdir);
    char cmd[1024];
    /* the first python3 with numpy (a pyenv shim may lack the distribution's numpy) */
    snprintf(cmd, sizeof cmd,
             "for py in python3 /usr/bin/python3; do if $py -c 'import numpy' 2>/dev/null; then "
             "exec $py '%s/tests/ckpt/make_fixtures.py' '%s'; fi; done; "
             "echo 'test_ckpt_read: no python3 with numpy (apt-get install python3-numpy)' >&2; "
             "exit 1",
             KILN_SOURCE_DIR, fx);
    if (run(cmd) != 0) {
        fprintf(stderr, "test_ckpt_read: tests/ckpt/make_fixtures.py failed\n");
        return -1;
    }
    return 0;
}

static void fail_diag(const KilnDiag *d)
{
    char msg[1400];
    fail_msg("%s", kiln_diag_format(d, msg, sizeof msg));
}

static KilnModelFile *open_ref(const char *name)
{
    char path[600];
    snprintf(path, sizeof path, "%s/%s.ref.safetensors", fx, name);
    KilnModelFile *mf = NULL;
    KilnDiag d = {0};
    if (kiln_mf_open(path, &mf, &d))
        fail_diag(&d);
    return mf;
}

static const float *ref_f32(const KilnModelTensor *t)
{
    assert_int_equal(t->type, KILN_MT_F32);
    return t->data;
}

static void spec_is(const KilnQuantSpec *s, const char *want, const char *what)
{
    char buf[128];
    kiln_spec_print(s, buf, sizeof buf);
    if (strcmp(buf, want))
        fail_msg("%s: spec \"%s\", expected \"%s\"", what, buf, want);
}

/* Every module and plain tensor of fixture `name` against its reference: exactly. */
static void check_fixture(const char *name)
{
    char dir[600], key[300];
    snprintf(dir, sizeof dir, "%s/%s", fx, name);
    KilnCheckpoint c;
    KilnDiag d = {0};
    if (kiln_checkpoint_read(dir, &c, &d))
        fail_diag(&d);
    KilnModelFile *ref = open_ref(name);
    assert_string_equal(c.format, kiln_mf_meta_str(ref, "format"));
    int nmod = 0, nplain = 0;
    for (int i = 0; i < kiln_mf_ntensors(ref); i++) {
        const KilnModelTensor *t = kiln_mf_tensor(ref, i);
        if (!strncmp(t->name, "plain:", 6)) {
            const KilnCkptTensor *p = kiln_checkpoint_find_tensor(&c, t->name + 6);
            if (!p)
                fail_msg("%s: no plain tensor %s", name, t->name + 6);
            assert_memory_equal(p->data, ref_f32(t), sizeof(float) * (size_t)t->numel);
            nplain++;
            continue;
        }
        size_t l = strlen(t->name);
        if (l > 5 && !strcmp(t->name + l - 5, ".bias")) {
            char m[300];
            snprintf(m, sizeof m, "%.*s", (int)(l - 5), t->name);
            const KilnQLinear *q = kiln_checkpoint_find(&c, m);
            assert_non_null(q);
            assert_non_null(q->bias);
            assert_memory_equal(q->bias, ref_f32(t), sizeof(float) * (size_t)q->N);
            continue;
        }
        const KilnQLinear *q = kiln_checkpoint_find(&c, t->name);
        if (!q)
            fail_msg("%s: no quantized layer %s", name, t->name);
        assert_int_equal(q->N, t->dim[0]);
        assert_int_equal(q->K, t->dim[1]);
        float *w = malloc(sizeof(float) * (size_t)(q->N * q->K));
        assert_non_null(w);
        kiln_qlinear_dequant(q, w);
        const float *r = ref_f32(t);
        int64_t bad = 0;
        for (int64_t k = 0; k < q->N * q->K; k++)
            bad += w[k] != r[k];
        if (bad)
            fail_msg("%s: %s: %lld of %lld weights differ from the reference", name, t->name,
                     (long long)bad, (long long)(q->N * q->K));
        free(w);
        snprintf(key, sizeof key, "spec.%s", t->name);
        spec_is(&q->spec, kiln_mf_meta_str(ref, key), t->name);
        snprintf(key, sizeof key, "gidx.%s", t->name);
        assert_int_equal(q->g_idx != NULL, kiln_mf_meta_str(ref, key) != NULL);
        snprintf(key, sizeof key, "act.%s", t->name);
        if (kiln_mf_meta_str(ref, key)) {
            spec_is(&q->act, kiln_mf_meta_str(ref, key), key);
            snprintf(key, sizeof key, "act_scale.%s", t->name);
            assert_true(q->act_scale == (float)atof(kiln_mf_meta_str(ref, key)));
        }
        nmod++;
    }
    assert_int_equal(c.nlin, nmod);
    assert_int_equal(c.nt, nplain);
    const char *ig = kiln_mf_meta_str(ref, "ignore"), *act = kiln_mf_meta_str(ref, "act"),
               *kv = kiln_mf_meta_str(ref, "kv");
    if (ig) {
        assert_int_equal(c.nignore, 1);
        assert_string_equal(c.ignore[0], ig);
    }
    if (act)
        spec_is(&c.act, act, "act");
    if (kv)
        spec_is(&c.kv, kv, "kv_cache_scheme");
    assert_non_null(c.config_json);
    print_message("%-18s %-16s %2d layers, %d plain tensors: exact\n", name, c.format, c.nlin,
                  c.nt);
    kiln_mf_close(ref);
    kiln_checkpoint_free(&c);
}

static void test_layouts(void **state)
{
    (void)state;
    static const char *const names[] = {"ct-pack-int4", "ct-pack-asym", "ct-int8", "ct-naive",
                                        "ct-fp8", "ct-sharded", "gptq-v1-sym",
                                        "gptq-v1-asym-act", "gptq-v2-asym", "gptq-8bit-channel",
                                        "awq-gemm", "llama-int4", "bert-int4"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++)
        check_fixture(names[i]);
}

/* reads dir and expects an error whose message holds `want` */
static void expect_error(const char *dir, const char *want)
{
    KilnCheckpoint c;
    KilnDiag d = {0};
    int rc = kiln_checkpoint_read(dir, &c, &d);
    char msg[1400];
    kiln_diag_format(&d, msg, sizeof msg);
    if (rc != KILN_EINPUT || !strstr(msg, want))
        fail_msg("%s: rc %d, message \"%s\" (expected one naming \"%s\")", dir, rc, msg, want);
    assert_null(c.lin);
    assert_null(c.t);
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void test_malformed(void **state)
{
    (void)state;
    static const struct { const char *fixture, *want; } cases[] = {
        {"bad-scale-shape", "q_proj.weight_scale'"},
        {"bad-packed-cols", "q_proj.weight_packed'"},
        {"bad-huge-shape", "q_proj.weight_shape'"},
        {"bad-no-zero", "q_proj.weight_zero_point"},
        {"bad-gptq-qzeros", "q_proj.qzeros'"},
        {"bad-gidx-range", "q_proj.g_idx'"},
    };
    char dir[600], cmd[4000];
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        snprintf(dir, sizeof dir, "%s/%s", fx, cases[i].fixture);
        expect_error(dir, cases[i].want);
    }
    /* a truncated file: the message names it */
    snprintf(dir, sizeof dir, "%s/trunc", tmpdir);
    snprintf(cmd, sizeof cmd, "mkdir -p '%s' && cp '%s/ct-pack-int4/'* '%s/' && truncate -s 1000 "
             "'%s/model.safetensors'", dir, fx, dir, dir);
    assert_int_equal(run(cmd), 0);
    expect_error(dir, "model.safetensors");
    /* an index naming a file outside the directory, and one naming a missing tensor */
    snprintf(dir, sizeof dir, "%s/badindex", tmpdir);
    snprintf(cmd, sizeof cmd, "mkdir -p '%s' && cp '%s/ct-sharded/'* '%s/'", dir, fx, dir);
    assert_int_equal(run(cmd), 0);
    char path[700];
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    write_file(path, "{\"weight_map\": {\"x\": \"../model-00001-of-00002.safetensors\"}}");
    expect_error(dir, "weight_map[\"x\"]");
    write_file(path, "{\"weight_map\": {\"nope\": \"model-00002-of-00002.safetensors\"}}");
    expect_error(dir, "'nope'");
    /* a scheme kiln does not read, and a quantization method it does not know */
    snprintf(dir, sizeof dir, "%s/badcfg", tmpdir);
    snprintf(cmd, sizeof cmd, "mkdir -p '%s' && cp '%s/ct-pack-int4/model.safetensors' '%s/'", dir,
             fx, dir);
    assert_int_equal(run(cmd), 0);
    snprintf(path, sizeof path, "%s/config.json", dir);
    write_file(path, "{\"quantization_config\": {\"quant_method\": \"compressed-tensors\", "
                     "\"format\": \"marlin-24\", \"config_groups\": {}}}");
    expect_error(dir, "marlin-24");
    write_file(path, "{\"quantization_config\": {\"quant_method\": \"bitsandbytes\"}}");
    expect_error(dir, "bitsandbytes");
    write_file(path, "{\"quantization_config\": {\"quant_method\": \"compressed-tensors\", "
                     "\"format\": \"pack-quantized\", \"config_groups\": {\"a\": {\"targets\": "
                     "[\"re:.*q_proj\"], \"weights\": {\"num_bits\": 4}}, \"b\": {\"targets\": "
                     "[\"re:.*k_proj\"], \"weights\": {\"num_bits\": 4}}}}}");
    expect_error(dir, "no config_groups entry");
    snprintf(dir, sizeof dir, "%s/empty", tmpdir);
    snprintf(cmd, sizeof cmd, "mkdir -p '%s'", dir);
    assert_int_equal(run(cmd), 0);
    expect_error(dir, "no .safetensors file");
}

/* Random edits of the safetensors headers (shapes, dtypes) of each layout: the reader
 * must refuse or read them, never touch memory it should not (this runs under ASan and
 * valgrind in CI); what it reads must dequantize. */
static void test_mutated_headers(void **state)
{
    (void)state;
    static const char *const names[] = {"ct-pack-asym", "ct-fp8", "gptq-v1-asym-act",
                                        "awq-gemm", "ct-int8"};
    static const char *const dtypes[] = {"\"I32\"", "\"I8\"", "\"F16\"", "\"U8\"", "\"F8_E4M3\""};
    uint64_t seed = 0x9E3779B97F4A7C15ull;
    char src[400], dir[400], cmd[2000];
    int ok = 0, refused = 0;
    for (size_t f = 0; f < sizeof names / sizeof *names; f++) {
        snprintf(src, sizeof src, "%s/%s", fx, names[f]);
        snprintf(dir, sizeof dir, "%s/mut", tmpdir);
        snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s' && cp '%s/'* '%s/'", dir, dir, src,
                 dir);
        assert_int_equal(run(cmd), 0);
        char path[800];
        snprintf(path, sizeof path, "%s/model.safetensors", dir);
        FILE *fp = fopen(path, "rb");
        assert_non_null(fp);
        fseek(fp, 0, SEEK_END);
        long n = ftell(fp);
        rewind(fp);
        uint8_t *orig = malloc((size_t)n), *buf = malloc((size_t)n);
        assert_non_null(orig);
        assert_non_null(buf);
        assert_int_equal(fread(orig, 1, (size_t)n, fp), (size_t)n);
        fclose(fp);
        uint64_t hlen;
        memcpy(&hlen, orig, 8);
        for (int it = 0; it < 60; it++) {
            memcpy(buf, orig, (size_t)n);
            char *h = (char *)buf + 8;
            for (int e = 0; e < 1 + it % 3; e++) {
                seed = seed * 6364136223846793005ull + 1442695040888963407ull;
                size_t at = (size_t)(seed >> 33) % hlen;
                /* the next "shape" digit or dtype after a random point */
                char *p = strstr(h + at, (seed >> 20) & 1 ? "\"shape\":[" : "\"dtype\":");
                if (!p || p - h >= (long)hlen - 16)
                    continue;
                if (p[1] == 's') {
                    char *dg = p + 9;
                    *dg = (char)('0' + (seed >> 40) % 10);
                } else {
                    const char *nd = dtypes[(seed >> 40) % 5];
                    char *q = strchr(p + 9, '"');
                    size_t old = (size_t)(q - (p + 8)) + 1, nl = strlen(nd);
                    if (nl <= old) { /* pad with spaces: the header keeps its length */
                        memcpy(p + 8, nd, nl);
                        memset(p + 8 + nl, ' ', old - nl);
                    }
                }
            }
            fp = fopen(path, "wb");
            assert_non_null(fp);
            fwrite(buf, 1, (size_t)n, fp);
            fclose(fp);
            KilnCheckpoint c;
            KilnDiag d = {0};
            if (kiln_checkpoint_read(dir, &c, &d)) {
                assert_int_equal(d.code, KILN_EINPUT);
                refused++;
                continue;
            }
            for (int i = 0; i < c.nlin; i++) {
                float *w = malloc(sizeof(float) * (size_t)(c.lin[i].N * c.lin[i].K));
                assert_non_null(w);
                kiln_qlinear_dequant(&c.lin[i], w);
                free(w);
            }
            ok++;
            kiln_checkpoint_free(&c);
        }
        free(orig);
        free(buf);
    }
    print_message("mutated headers: %d read, %d refused\n", ok, refused);
    assert_true(refused > 0);
}

/* ------------------------------------------------------------------ tokenizers */

static void test_tokenizer_json(void **state)
{
    (void)state;
    char path[700];
    snprintf(path, sizeof path, "%s/tok-expected.json", fx);
    KilnJson *exp = NULL;
    KilnDiag d = {0};
    if (kiln_json_parse_file(path, &exp, &d))
        fail_diag(&d);
    const char *text = kiln_json_get(exp, "text")->str;
    static const char *const names[] = {"tok-bytelevel", "tok-digits"};
    for (int i = 0; i < 2; i++) {
        snprintf(path, sizeof path, "%s/%s/tokenizer.json", fx, names[i]);
        KilnTokenizer *t = NULL;
        if (kiln_tok_bpe_from_hf_json(path, -1, -1, &t, &d))
            fail_diag(&d);
        int32_t ids[128];
        int n = kiln_tok_encode(t, text, 0, ids, 128, NULL, &d);
        const KilnJson *want = kiln_json_get(exp, names[i]);
        assert_int_equal(n, (int)want->len);
        for (int k = 0; k < n; k++)
            assert_int_equal(ids[k], want->items[k].i);
        char *back = kiln_tok_decode(t, ids, n);
        assert_string_equal(back, text);
        free(back);
        kiln_tok_free(t);
    }
    kiln_json_free(exp);
    /* what kiln cannot tokenize is an error, not a wrong tokenizer */
    snprintf(path, sizeof path, "%s/tok-bad.json", tmpdir);
    write_file(path, "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}, "
                     "\"pre_tokenizer\": {\"type\": \"Metaspace\"}}");
    KilnTokenizer *t = NULL;
    assert_int_equal(kiln_tok_bpe_from_hf_json(path, -1, -1, &t, &d), KILN_EINPUT);
    assert_non_null(strstr(d.msg, "Metaspace"));
    write_file(path, "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": "
                     "[\"a b\"]}, \"pre_tokenizer\": {\"type\": \"ByteLevel\"}}");
    assert_int_equal(kiln_tok_bpe_from_hf_json(path, -1, -1, &t, &d), KILN_EINPUT);
    assert_non_null(strstr(d.msg, "merges[0]"));
}

/* SmolLM2's vocabulary written as a tokenizer.json (as its HF repository has it: merges
 * as "a b", control tokens in added_tokens, Digits + ByteLevel) must encode like the
 * GGUF-built tokenizer. */
static void test_tokenizer_json_smollm2(void **state)
{
    (void)state;
    char path[1024];
    model_path("smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", path, sizeof path);
    KilnModelFile *mf = NULL;
    KilnDiag d = {0};
    if (kiln_mf_open(path, &mf, &d))
        fail_diag(&d);
    KilnTokenizer *g = NULL, *j = NULL;
    if (kiln_tok_bpe_from_gguf(mf, &g, &d))
        fail_diag(&d);
    snprintf(path, sizeof path, "%s/smollm2-tokenizer.json", tmpdir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    KilnJsonWriter w;
    kiln_jw_init(&w, f);
    kiln_jw_begin_object(&w);
    kiln_jw_key(&w, "added_tokens");
    kiln_jw_begin_array(&w);
    int64_t n = kiln_mf_meta_array_len(mf, "tokenizer.ggml.tokens");
    for (int64_t i = 0; i < n; i++) {
        int64_t ty = 0;
        kiln_mf_meta_array_int(mf, "tokenizer.ggml.token_type", i, &ty);
        if (ty != 3)
            continue;
        kiln_jw_begin_object(&w);
        kiln_jw_key(&w, "id");
        kiln_jw_int(&w, i);
        kiln_jw_key(&w, "content");
        kiln_jw_string(&w, kiln_mf_meta_array_str(mf, "tokenizer.ggml.tokens", i));
        kiln_jw_key(&w, "special");
        kiln_jw_bool(&w, true);
        kiln_jw_end_object(&w);
    }
    kiln_jw_end_array(&w);
    kiln_jw_key(&w, "normalizer");
    kiln_jw_null(&w);
    kiln_jw_key(&w, "pre_tokenizer");
    kiln_jw_begin_object(&w);
    kiln_jw_key(&w, "type");
    kiln_jw_string(&w, "Sequence");
    kiln_jw_key(&w, "pretokenizers");
    kiln_jw_begin_array(&w);
    kiln_jw_begin_object(&w);
    kiln_jw_key(&w, "type");
    kiln_jw_string(&w, "Digits");
    kiln_jw_key(&w, "individual_digits");
    kiln_jw_bool(&w, true);
    kiln_jw_end_object(&w);
    kiln_jw_begin_object(&w);
    kiln_jw_key(&w, "type");
    kiln_jw_string(&w, "ByteLevel");
    kiln_jw_key(&w, "add_prefix_space");
    kiln_jw_bool(&w, false);
    kiln_jw_end_object(&w);
    kiln_jw_end_array(&w);
    kiln_jw_end_object(&w);
    kiln_jw_key(&w, "model");
    kiln_jw_begin_object(&w);
    kiln_jw_key(&w, "type");
    kiln_jw_string(&w, "BPE");
    kiln_jw_key(&w, "vocab");
    kiln_jw_begin_object(&w);
    for (int64_t i = 0; i < n; i++) {
        kiln_jw_key(&w, kiln_mf_meta_array_str(mf, "tokenizer.ggml.tokens", i));
        kiln_jw_int(&w, i);
    }
    kiln_jw_end_object(&w);
    kiln_jw_key(&w, "merges");
    kiln_jw_begin_array(&w);
    for (int64_t i = 0; i < kiln_mf_meta_array_len(mf, "tokenizer.ggml.merges"); i++)
        kiln_jw_string(&w, kiln_mf_meta_array_str(mf, "tokenizer.ggml.merges", i));
    kiln_jw_end_array(&w);
    kiln_jw_end_object(&w);
    kiln_jw_end_object(&w);
    if (kiln_jw_finish(&w, &d))
        fail_diag(&d);
    fclose(f);
    if (kiln_tok_bpe_from_hf_json(path, 1, 2, &j, &d))
        fail_diag(&d);
    snprintf(path, sizeof path, "%s/tests/models/tokenizer_smollm2.tsv", KILN_SOURCE_DIR);
    f = fopen(path, "r");
    assert_non_null(f);
    char *line = NULL;
    size_t cap = 0;
    int lines = 0;
    while (getline(&line, &cap, f) > 0) {
        if (line[0] == '#')
            continue;
        line[strcspn(line, "\t")] = 0; /* the sentence (escapes and all: the same input) */
        int32_t a[1024], b[1024];
        int na = kiln_tok_encode(g, line, 0, a, 1024, NULL, &d);
        int nb = kiln_tok_encode(j, line, 0, b, 1024, NULL, &d);
        assert_int_equal(na, nb);
        assert_memory_equal(a, b, sizeof(int32_t) * (size_t)na);
        lines++;
    }
    free(line);
    fclose(f);
    assert_true(lines >= 12);
    assert_int_equal(kiln_tok_special(j, "eos"), 2);
    kiln_tok_free(g);
    kiln_tok_free(j);
    kiln_mf_close(mf);
}

/* ------------------------------------------------------------------ models */

#define LOGIT_TOL 1e-4

static void check_llama(const char *name, bool quantized)
{
    char dir[600];
    snprintf(dir, sizeof dir, "%s/%s", fx, name);
    assert_string_equal(kiln_hf_arch(dir), "llama");
    KilnLlama *m = NULL;
    KilnDiag d = {0};
    if (kiln_llama_load(dir, &m, &d))
        fail_diag(&d);
    KilnModelFile *ref = open_ref("llama");
    const KilnModelTensor *ids = kiln_mf_find(ref, "ids"), *want = kiln_mf_find(ref, name);
    assert_non_null(ids);
    assert_non_null(want);
    int T = (int)ids->numel, V = kiln_llama_vocab(m);
    assert_int_equal(want->dim[1], V);
    int nl;
    KilnLinear *ls = kiln_llama_linears(m, &nl);
    /* the loader maps the checkpoint: a quantized layer holds neither codes nor f32
     * weights, and its weights read when needed (q_proj / k_proj rows turned to kiln's
     * RoPE layout as decoded) are the whole-file reader's, turned the same way */
    KilnCheckpoint eager = {0};
    KilnJson *cfg = NULL;
    char path[700];
    snprintf(path, sizeof path, "%s/config.json", dir);
    if (quantized && (kiln_checkpoint_read(dir, &eager, &d) || kiln_json_parse_file(path, &cfg, &d)))
        fail_diag(&d);
    for (int i = 0; i < nl; i++) {
        bool head = i == nl - 1;
        assert_int_equal(ls[i].stored != NULL, quantized && !head);
        if (!ls[i].stored)
            continue;
        assert_null(ls[i].w);
        assert_null(ls[i].stored->codes);
        KilnQLinear *q = (KilnQLinear *)kiln_checkpoint_find(&eager, ls[i].name);
        assert_non_null(q);
        size_t n = strlen(q->name);
        bool qp = n > 6 && !strcmp(q->name + n - 6, "q_proj"), kp = n > 6 && !strcmp(q->name + n - 6, "k_proj");
        if (qp || kp) {
            const KilnJson *h = kiln_json_get(cfg, qp ? "num_attention_heads" : "num_key_value_heads");
            if (!h)
                h = kiln_json_get(cfg, "num_attention_heads");
            assert_non_null(h);
            assert_int_equal(kiln_llama_permute_qk(q, (int)h->i, &d), 0);
        }
        float *w = malloc(sizeof(float) * (size_t)(ls[i].N * ls[i].K));
        assert_non_null(w);
        kiln_qlinear_dequant(q, w);
        assert_int_equal(kiln_linear_wget(&ls[i], &d), 0);
        assert_memory_equal(w, ls[i].w, sizeof(float) * (size_t)(ls[i].N * ls[i].K));
        kiln_linear_wput(&ls[i]);
        assert_null(ls[i].w); /* dropped again: read from the file when needed */
        free(w);
    }
    kiln_checkpoint_free(&eager);
    kiln_json_free(cfg);
    float *lg = malloc(sizeof(float) * (size_t)T * V);
    assert_non_null(lg);
    KilnKVCache kv;
    KilnKVSpec s = {KILN_KV_F32, false, true, 0};
    assert_int_equal(kiln_llama_kv_init(m, &kv, &s, 32, &d), 0);
    /* prefill, then one decode step: the cache path too */
    int32_t id32[64];
    memcpy(id32, ids->data, sizeof(int32_t) * (size_t)T);
    if (kiln_llama_forward(m, NULL, &kv, id32, T - 1, 0, T - 1, lg, &d) ||
        kiln_llama_forward(m, NULL, &kv, id32 + T - 1, 1, T - 1, 1, lg + (size_t)(T - 1) * V, &d))
        fail_diag(&d);
    double worst = 0;
    const float *r = ref_f32(want);
    for (int64_t i = 0; i < (int64_t)T * V; i++)
        worst = fmax(worst, fabs((double)lg[i] - r[i]));
    print_message("%s: HF directory vs numpy (rotate-half RoPE): max |logit diff| %.3g\n", name,
                  worst);
    assert_true(worst <= LOGIT_TOL);
    const KilnTokenizer *tk = kiln_llama_tokenizer(m, &d);
    if (!tk)
        fail_diag(&d);
    assert_int_equal(kiln_tok_special(tk, "bos"), 256);
    kiln_kv_free(&kv);
    free(lg);
    kiln_mf_close(ref);
    kiln_llama_free(m);
}

static void test_llama_hf(void **state)
{
    (void)state;
    check_llama("llama-f32", false);
    check_llama("llama-int4", true);
}

static void test_bert_hf_quantized(void **state)
{
    (void)state;
    char dir[600];
    snprintf(dir, sizeof dir, "%s/bert-int4", fx);
    assert_string_equal(kiln_hf_arch(dir), "bert");
    KilnBert *m = NULL;
    KilnDiag d = {0};
    if (kiln_bert_load(dir, &m, &d))
        fail_diag(&d);
    KilnModelFile *ref = open_ref("bert-int4");
    int nl;
    KilnLinear *ls = kiln_bert_linears(m, &nl);
    assert_int_equal(nl, 6);
    char key[300];
    for (int i = 0; i < nl; i++) {
        assert_non_null(ls[i].stored);
        const KilnModelTensor *w = kiln_mf_find(ref, ls[i].name);
        snprintf(key, sizeof key, "%s.bias", ls[i].name);
        const KilnModelTensor *b = kiln_mf_find(ref, key);
        assert_non_null(w);
        assert_non_null(b);
        assert_null(ls[i].w); /* dequantized from the mapped file when needed */
        assert_int_equal(kiln_linear_wget(&ls[i], &d), 0);
        assert_memory_equal(ls[i].w, ref_f32(w), sizeof(float) * (size_t)w->numel);
        kiln_linear_wput(&ls[i]);
        assert_memory_equal(ls[i].b, ref_f32(b), sizeof(float) * (size_t)b->numel);
    }
    const char *texts[2] = {"w1 w2 w3", "w4"};
    float e[2 * 32];
    if (kiln_bert_embed(m, NULL, texts, 2, e, NULL, &d))
        fail_diag(&d);
    for (int s = 0; s < 2; s++) {
        double n2 = 0;
        for (int k = 0; k < 32; k++)
            n2 += (double)e[s * 32 + k] * e[s * 32 + k];
        assert_true(fabs(n2 - 1) < 1e-5);
    }
    kiln_mf_close(ref);
    kiln_bert_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_layouts),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_mutated_headers),
        cmocka_unit_test(test_tokenizer_json),
        cmocka_unit_test(test_tokenizer_json_smollm2),
        cmocka_unit_test(test_llama_hf),
        cmocka_unit_test(test_bert_hf_quantized),
    };
    return cmocka_run_group_tests(tests, setup, tmpdir_teardown);
}
