/* tests/test_model_memory.c — kiln's memory against the size of the model it runs (issue 17:
 * "no input drives kiln's memory above twice the size of the model it names";
 * docs/hardening.md, "Memory"). The size of a model under a recipe is the bigger of its file
 * and of its weights as the recipe runs them (the weight_bytes kiln eval reports for the
 * recipe's row). `kiln eval` runs as a child on both real models with a few recipes, and the
 * child's peak resident set (getrusage / wait4: ru_maxrss) must stay within twice that.
 * Also: vocab.txt is capped (its bytes, and its lines at the model's embedding rows, before
 * a table is sized by them), and a Hugging Face directory of many thousand tensors loads in
 * time linear in them (each lookup was a walk over every tensor). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "model/files/modelfile.h"
#include "model/model.h"
#include "model/tokenizers/tokenizer.h"
#include "runtime/runtime.h"
#include "tests/test_rss.h"

#define SRC KILN_SOURCE_DIR

static int setup(void **st)
{
    (void)st;
    return tr_tmpdir_make("model-memory");
}

static int teardown(void **st)
{
    (void)st;
    return tr_tmpdir_remove();
}

/* ------------------------------------------------------------------ kiln eval's peak RSS */

/* Runs kiln with args (stdout to out_path, stderr to err_path); its exit status and peak
 * resident set in bytes (the child's own getrusage, through wait4). */
static int run_kiln(const char *const *args, const char *out_path, const char *err_path,
                    long long *maxrss)
{
    return tr_run_peak(KILN_BIN, args, out_path, err_path, 600, maxrss);
}

static const char *models_dir(char *buf, size_t n)
{
    const char *env = getenv("KILN_MODELS_DIR"), *home = getenv("HOME");
    if (env && *env)
        snprintf(buf, n, "%s", env);
    else
        snprintf(buf, n, "%s/.cache/kiln/models", home ? home : ".");
    return buf;
}

static long long file_size(const char *path)
{
    struct stat s;
    return stat(path, &s) ? -1 : (long long)s.st_size;
}

/* kiln eval RECIPE --model MODEL (+ small counts) stays within 2 x the model's size. */
static void check_eval(const char *model, const char *recipe, const char *count_opt,
                       const char *count)
{
    char dir[1024], file[1200], rpath[1200], out[400], err[400];
    models_dir(dir, sizeof dir);
    bool llama = !strcmp(model, "smollm2");
    snprintf(file, sizeof file, "%s/%s", dir,
             llama ? "smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" : "minilm/model.safetensors");
    long long fsize = file_size(file);
    if (fsize < 0)
        fail_msg("%s missing: run scripts/fetch-models.sh", file);
    snprintf(rpath, sizeof rpath, "%s/recipes/%s", SRC, recipe);
    snprintf(out, sizeof out, "%s/eval.json", tr_tmpdir);
    snprintf(err, sizeof err, "%s/eval.err", tr_tmpdir);
    /* first with a tiny count, so the kernels are in the cache: a cold cache adds LLVM's
     * compile memory (about 100 MB more at most, docs/hardening.md), not the model's. Not
     * under a sanitizer, which checks no size (an AWQ calibration there: 35 s of CPU) */
    const char *warm[] = {"eval", rpath, "--model", model, count_opt, "2", "--quiet", NULL};
    long long rss = 0;
    int code = TR_SANITIZED ? 0 : run_kiln(warm, out, err, &rss);
    const char *args[] = {"eval", rpath, "--model", model, count_opt, count, "--json", "--quiet",
                          NULL};
    if (code == 0)
        code = run_kiln(args, out, err, &rss);
    if (code != 0) {
        char *e = NULL;
        size_t n = 0;
        kiln_rt_read_file(err, "stderr", 1 << 20, &e, &n, NULL);
        fail_msg("kiln eval %s --model %s: exit %d: %s", recipe, model, code, e ? e : "");
    }
    double wbytes = tr_weight_bytes(out);
    double size = wbytes > (double)fsize ? wbytes : (double)fsize;
    printf("kiln eval %-28s --model %-7s %s %-4s peak RSS %7.1f MB; model size %6.1f MB (file "
           "%.1f, recipe weights %.1f): %.2fx\n", recipe, model, count_opt, count, rss / 1e6,
           size / 1e6, fsize / 1e6, wbytes / 1e6, rss / size);
    assert_true(rss > 0);
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
    /* a sanitizer's shadow memory and quarantine are not kiln's: the run is checked for
     * errors there, its size here only in the plain build */
    (void)size;
#else
    assert_true((double)rss <= 2.0 * size);
#endif
}

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define SANITIZED 1 /* the paths once each (per-call f32 row, slices, replayed methods) */
#else
#define SANITIZED 0
#endif

static void test_minilm_eval_memory(void **st)
{
    (void)st;
    check_eval("minilm", "w4a16-g128-awq.lua", "--sentences", "8"); /* replayed AWQ changes */
    if (SANITIZED)
        return;
    check_eval("minilm", "w8a8-int8-dynamic.lua", "--sentences", "8");
    check_eval("minilm", "f32.lua", "--sentences", "8");
    check_eval("minilm", "w8a8-int8-static.lua", "--sentences", "8");
}

static void test_smollm2_eval_memory(void **st)
{
    (void)st;
    check_eval("smollm2", "w4a8.lua", "--tokens", "32");
    if (SANITIZED)
        return;
    /* the smallest recipe weights (fp8 everywhere, the head too): the f32 baseline's
     * 113 MB head must not be read or prepacked whole */
    check_eval("smollm2", "fp8-e5m2.lua", "--tokens", "32");
    /* static scales: 256 calibration rows of every layer's input, freed as each binds */
    check_eval("smollm2", "fp8-e4m3-static.lua", "--tokens", "32");
}

/* ------------------------------------------------------------------ vocab.txt */

static void write_text(const char *path, const char *fmt, ...)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(f, fmt, ap);
    va_end(ap);
    assert_int_equal(fclose(f), 0);
}

static void test_vocab_caps(void **st)
{
    (void)st;
    char path[400];
    snprintf(path, sizeof path, "%s/vocab.txt", tr_tmpdir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fprintf(f, "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n");
    for (int i = 5; i < 45; i++)
        fprintf(f, "w%d\n", i);
    fclose(f);
    KilnTokenizer *t = NULL;
    KilnDiag d = {0};
    /* more lines than the embedding's rows: refused before the table is allocated */
    assert_int_equal(kiln_tok_wordpiece_load_max(path, 30, &t, &d), KILN_EINPUT);
    assert_null(t);
    if (!strstr(d.msg, "45 tokens") || !strstr(d.msg, "30 rows") || !strstr(d.msg, "vocab.txt"))
        fail_msg("message: %s", d.msg);
    d = (KilnDiag){0};
    assert_int_equal(kiln_tok_wordpiece_load_max(path, 45, &t, &d), 0);
    assert_int_equal(kiln_tok_vocab_size(t), 45);
    kiln_tok_free(t);
    t = NULL;
    /* over the byte limit (a sparse file: nothing is written to disk) */
    int fd = open(path, O_WRONLY | O_TRUNC);
    assert_true(fd >= 0);
    assert_int_equal(ftruncate(fd, (off_t)KILN_VOCAB_BYTES + 1), 0);
    close(fd);
    d = (KilnDiag){0};
    assert_int_equal(kiln_tok_wordpiece_load(path, &t, &d), KILN_EINPUT);
    assert_null(t);
    char lim[32];
    snprintf(lim, sizeof lim, "%u bytes", (unsigned)KILN_VOCAB_BYTES);
    if (!strstr(d.msg, lim) || !strstr(d.msg, "vocab.txt"))
        fail_msg("message: %s", d.msg);
}

/* ------------------------------------------------------------------ many tensors */

enum { HD = 4, HLAYERS = 3000 };

/* A BERT directory of HLAYERS tiny layers: 16 tensors a layer, 48,005 in all. */
static void write_many_layer_bert(const char *dir)
{
    int nt = 5 + 16 * HLAYERS;
    KilnModelTensor *t = calloc((size_t)nt, sizeof *t);
    char(*names)[96] = calloc((size_t)nt, sizeof *names);
    static float data[8 * HD]; /* the biggest tensor: the word embeddings */
    for (int i = 0; i < 8 * HD; i++)
        data[i] = (float)(i % 7) * 0.01f;
    assert_true(t && names);
    int n = 0;
#define ADD(r, c, ...)                                                                          \
    do {                                                                                        \
        snprintf(names[n], sizeof names[n], __VA_ARGS__);                                       \
        t[n] = (KilnModelTensor){names[n], KILN_MT_F32, (c) ? 2 : 1, {(r), (c)},                \
                                 (int64_t)(r) * ((c) ? (c) : 1), data,                          \
                                 sizeof(float) * (size_t)((r) * ((c) ? (c) : 1))};             \
        n++;                                                                                    \
    } while (0)
    ADD(8, HD, "embeddings.word_embeddings.weight");
    ADD(HD, HD, "embeddings.position_embeddings.weight");
    ADD(1, HD, "embeddings.token_type_embeddings.weight");
    ADD(HD, 0, "embeddings.LayerNorm.weight");
    ADD(HD, 0, "embeddings.LayerNorm.bias");
    static const char *const lin[6] = {"attention.self.query", "attention.self.key",
                                       "attention.self.value", "attention.output.dense",
                                       "intermediate.dense", "output.dense"};
    static const char *const ln[4] = {"attention.output.LayerNorm.weight",
                                      "attention.output.LayerNorm.bias",
                                      "output.LayerNorm.weight", "output.LayerNorm.bias"};
    for (int l = 0; l < HLAYERS; l++) {
        for (int j = 0; j < 6; j++) {
            ADD(HD, HD, "encoder.layer.%d.%s.weight", l, lin[j]);
            ADD(HD, 0, "encoder.layer.%d.%s.bias", l, lin[j]);
        }
        for (int j = 0; j < 4; j++)
            ADD(HD, 0, "encoder.layer.%d.%s", l, ln[j]);
    }
#undef ADD
    assert_int_equal(n, nt);
    char path[600];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    KilnDiag d = {0};
    if (kiln_safetensors_write(path, t, n, NULL, 0, &d))
        fail_msg("write: %s", d.msg);
    free(t), free(names);
    snprintf(path, sizeof path, "%s/config.json", dir);
    write_text(path, "{\"architectures\": [\"BertModel\"], \"num_hidden_layers\": %d, "
               "\"hidden_size\": %d, \"num_attention_heads\": 1, \"intermediate_size\": %d, "
               "\"max_position_embeddings\": %d, \"vocab_size\": 8, \"type_vocab_size\": 1, "
               "\"hidden_act\": \"gelu\"}\n", HLAYERS, HD, HD, HD);
    snprintf(path, sizeof path, "%s/vocab.txt", dir);
    write_text(path, "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\na\nb\nc\n");
}

static double cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void test_hf_dir_many_tensors(void **st)
{
    (void)st;
    char dir[400];
    snprintf(dir, sizeof dir, "%s/many", tr_tmpdir);
    assert_int_equal(mkdir(dir, 0700), 0);
    write_many_layer_bert(dir);
    double t0 = cpu_s();
    KilnBert *m = NULL;
    KilnDiag d = {0};
    if (kiln_bert_load(dir, &m, &d))
        fail_msg("load: %s", d.msg);
    double s = cpu_s() - t0;
    int nl = 0;
    kiln_bert_linears(m, &nl);
    assert_int_equal(nl, 6 * HLAYERS);
    kiln_bert_free(m);
    /* 48,005 tensors: about 0.1 s when each lookup is a binary search; a walk over every
     * tensor per lookup (2.3e9 name comparisons) took 9 s here */
    printf("kiln_bert_load of %d tensors: %.2f s CPU\n", 5 + 16 * HLAYERS, s);
    if (s > 2.5)
        fail_msg("loading %d tensors took %.2f s of CPU (lookups are not logarithmic?)",
                 5 + 16 * HLAYERS, s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vocab_caps),
        cmocka_unit_test(test_hf_dir_many_tensors),
        cmocka_unit_test(test_minilm_eval_memory),
        cmocka_unit_test(test_smollm2_eval_memory),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
