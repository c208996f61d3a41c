/* tests/test_bench_model.c — `kiln bench RECIPE --model M` end to end on the real models:
 * SmolLM2 prints llama-bench's table with a pp and a tg row of positive tokens/s; --json is
 * an array of one object per test with llama-bench's field names (the parameter count
 * checked against the GGUF's own tensors); MiniLM, an encoder, gives pp only and says why;
 * bad options exit 2 with a message. Tiny runs (-p 32 -n 8), no timing thresholds.
 * Needs the models: run scripts/fetch-models.sh first. */
#include "cli/cli_util.h"

#include <math.h>

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "model/files/modelfile.h"
#include "model/model.h"
#include "runtime/runtime.h"

#define RECIPE KILN_SOURCE_DIR "/recipes/w4a8-head.lua"

static void model_path(const char *which, char *buf, size_t n)
{
    KilnDiag d = {0};
    if (kiln_model_path(which, buf, n, &d))
        fail_msg("%s (the test needs the real models: run scripts/fetch-models.sh)",
                 d.msg);
}

static void run_ok(const char *const *argv, CliResult *r)
{
    assert_int_equal(cli_run_env(argv, NULL, r), 0);
    if (r->code != 0)
        cli_dump("kiln bench --model", r);
    assert_int_equal(r->code, 0);
}

/* The cells of a Markdown table row, trimmed: "| a | b |" -> {"a", "b"}. */
static int cells(const char *line, char out[][128], int max)
{
    int n = 0;
    const char *p = strchr(line, '|');
    while (p && n < max) {
        const char *q = strchr(p + 1, '|');
        const char *nl = strchr(p + 1, '\n');
        if (!q || (nl && nl < q))
            break;
        const char *a = p + 1, *b = q;
        while (a < b && *a == ' ')
            a++;
        while (b > a && b[-1] == ' ')
            b--;
        snprintf(out[n++], 128, "%.*s", (int)(b - a), a);
        p = q;
    }
    return n;
}

/* The rows of the table in out: their test names and the mean tokens/s. */
static int table_rows(const char *out, char tests[][128], double *ts, int max)
{
    char c[8][128];
    const char *line = strstr(out, "| model");
    assert_non_null(line);
    assert_int_equal(cells(line, c, 8), 7);
    const char *head[] = {"model", "size", "params", "backend", "threads", "test", "t/s"};
    for (int i = 0; i < 7; i++)
        assert_string_equal(c[i], head[i]);
    line = strchr(line, '\n') + 1; /* the alignment row */
    assert_int_equal(cells(line, c, 8), 7);
    assert_true(strstr(c[1], "---:") != NULL); /* numbers right-aligned, as llama-bench */
    int n = 0;
    for (line = strchr(line, '\n'); line && line[1] == '|' && n < max; line = strchr(line + 1, '\n')) {
        assert_int_equal(cells(line + 1, c, 8), 7);
        assert_true(strstr(c[1], " MiB") != NULL && strstr(c[2], " M") != NULL);
        assert_true(strncmp(c[3], "kiln ", 5) == 0);
        snprintf(tests[n], 128, "%s", c[5]);
        char *end;
        ts[n] = strtod(c[6], &end);
        assert_true(strstr(end, "±") != NULL);
        n++;
    }
    return n;
}

static void test_smollm2_table(void **state)
{
    (void)state;
    char path[4096];
    model_path("smollm2", path, sizeof path);
    const char *argv[] = {KILN_BIN, "bench", RECIPE, "--model", "smollm2", "-p", "32", "-n", "8",
                          "--repeat", "1", "--threads", "2", "--quiet", NULL};
    CliResult r;
    run_ok(argv, &r);
    char tests[4][128];
    double ts[4];
    assert_int_equal(table_rows(r.out, tests, ts, 4), 2);
    assert_string_equal(tests[0], "pp32");
    assert_string_equal(tests[1], "tg8");
    assert_true(ts[0] > 0 && isfinite(ts[0]));
    assert_true(ts[1] > 0 && isfinite(ts[1]));
    assert_non_null(strstr(r.out, "w4a8-head"));
    cli_result_free(&r);
}

static const KilnJson *field(const KilnJson *o, const char *key, KilnJsonKind kind)
{
    const KilnJson *v = kiln_json_get(o, key);
    if (!v || v->kind != kind)
        fail_msg("JSON field '%s' missing or of the wrong kind", key);
    return v;
}

/* Every tensor of the GGUF, counted here from the file (as llama-bench counts them). */
static int64_t gguf_params(const char *path)
{
    KilnModelFile *mf = NULL;
    KilnDiag d = {0};
    assert_int_equal(kiln_mf_open(path, &mf, &d), 0);
    int64_t n = 0;
    for (int i = 0; i < kiln_mf_ntensors(mf); i++)
        n += kiln_mf_tensor(mf, i)->numel;
    kiln_mf_close(mf);
    return n;
}

static void check_test(const KilnJson *t, int threads, int repeat)
{
    const char *names[] = {"model_filename", "cpu_info", "recipe", "backend", "test"};
    for (int i = 0; i < 5; i++)
        assert_true(strlen(field(t, names[i], KILN_JSON_STRING)->str) > 0);
    assert_int_equal(field(t, "n_threads", KILN_JSON_NUMBER)->i, threads);
    assert_true(field(t, "model_size", KILN_JSON_NUMBER)->i > 0);
    double avg = kiln_json_num(field(t, "avg_ts", KILN_JSON_NUMBER));
    double sd = kiln_json_num(field(t, "stddev_ts", KILN_JSON_NUMBER));
    assert_true(avg > 0 && isfinite(avg) && sd >= 0 && isfinite(sd));
    const KilnJson *s = field(t, "samples_ts", KILN_JSON_ARRAY);
    assert_int_equal((int)s->len, repeat);
    double sum = 0;
    for (size_t i = 0; i < s->len; i++)
        sum += kiln_json_num(&s->items[i]);
    assert_true(fabs(sum / repeat - avg) <= 1e-6 * avg); /* the mean of its samples */
    assert_int_equal((int)field(t, "samples_ns", KILN_JSON_ARRAY)->len, repeat);
}

static void test_smollm2_json(void **state)
{
    (void)state;
    char path[4096];
    model_path("smollm2", path, sizeof path);
    const char *argv[] = {KILN_BIN, "bench", RECIPE, "--model", path, "-p", "32", "-n", "8",
                          "--repeat", "2", "--threads", "1", "--json", NULL};
    CliResult r;
    run_ok(argv, &r);
    KilnJson *j = NULL;
    KilnDiag d = {0};
    assert_int_equal(kiln_json_parse(r.out, r.out_len, "stdout", &j, &d), 0);
    assert_int_equal(j->kind, KILN_JSON_ARRAY);
    assert_int_equal((int)j->len, 2);
    int64_t params = gguf_params(path);
    for (int i = 0; i < 2; i++) {
        const KilnJson *t = &j->items[i];
        check_test(t, 1, 2);
        assert_string_equal(field(t, "test", KILN_JSON_STRING)->str, i ? "tg8" : "pp32");
        assert_int_equal(field(t, "n_prompt", KILN_JSON_NUMBER)->i, i ? 0 : 32);
        assert_int_equal(field(t, "n_gen", KILN_JSON_NUMBER)->i, i ? 8 : 0);
        assert_string_equal(field(t, "recipe", KILN_JSON_STRING)->str, "w4a8-head");
        assert_string_equal(field(t, "model_filename", KILN_JSON_STRING)->str, path);
        assert_int_equal(field(t, "model_n_params", KILN_JSON_NUMBER)->i, params);
        /* int4 / int8 linear layers: far under the f32 model's bytes */
        assert_true(field(t, "model_size", KILN_JSON_NUMBER)->i < 4 * params / 2);
    }
    kiln_json_free(j);
    cli_result_free(&r);
}

static void test_minilm_pp_only(void **state)
{
    (void)state;
    char path[4096];
    model_path("minilm", path, sizeof path);
    const char *argv[] = {KILN_BIN, "bench", KILN_SOURCE_DIR "/recipes/w8a8-int8-dynamic.lua",
                          "--model", "minilm", "-p", "32", "--repeat", "1", "--quiet", NULL};
    CliResult r;
    run_ok(argv, &r);
    char tests[4][128];
    double ts[4];
    assert_int_equal(table_rows(r.out, tests, ts, 4), 1);
    assert_string_equal(tests[0], "pp32");
    assert_true(ts[0] > 0 && isfinite(ts[0]));
    assert_non_null(strstr(r.out, "tg omitted"));
    cli_result_free(&r);
    const char *argj[] = {KILN_BIN, "bench", KILN_SOURCE_DIR "/recipes/w8a8-int8-dynamic.lua",
                          "--model", "minilm", "-p", "32", "--repeat", "1", "--json", NULL};
    run_ok(argj, &r);
    KilnJson *j = NULL;
    KilnDiag d = {0};
    assert_int_equal(kiln_json_parse(r.out, r.out_len, "stdout", &j, &d), 0);
    assert_int_equal((int)j->len, 1);
    check_test(&j->items[0], (int)field(&j->items[0], "n_threads", KILN_JSON_NUMBER)->i, 1);
    assert_int_equal(field(&j->items[0], "n_gen", KILN_JSON_NUMBER)->i, 0);
    /* whole sentences: at least the tokens asked for */
    assert_true(field(&j->items[0], "n_prompt", KILN_JSON_NUMBER)->i >= 32);
    kiln_json_free(j);
    cli_result_free(&r);
}

/* Exit 2 with a message that contains `says`. */
static void refused(const char *const *argv, const char *says)
{
    CliResult r;
    assert_int_equal(cli_run_env(argv, NULL, &r), 0);
    if (r.code != 2 || !strstr(r.err, says))
        cli_dump("refused", &r);
    assert_int_equal(r.code, 2);
    assert_non_null(strstr(r.err, says));
    assert_false(cli_crashed(&r));
    cli_result_free(&r);
}

static void test_bad_options(void **state)
{
    (void)state;
#define BENCH KILN_BIN, "bench", RECIPE
    refused((const char *[]){BENCH, "--model", "smollm2", "-p", "0", "-n", "0", NULL},
            "no test to run");
    refused((const char *[]){BENCH, "--model", "smollm2", "-p", "-1", NULL}, "bad -p");
    refused((const char *[]){BENCH, "--model", "smollm2", "-n", "16385", NULL},
            "expected an integer from 0 to 16384");
    refused((const char *[]){BENCH, "--model", "smollm2", "-n", "12x", NULL}, "bad -n");
    refused((const char *[]){BENCH, "--model", "smollm2", "--shape", "1,2,3", NULL},
            "--shape is an option of one layer's benchmark");
    refused((const char *[]){BENCH, "--model", "smollm2", "--repeat", "0", NULL}, "bad --repeat");
    refused((const char *[]){BENCH, "--shape", "1,64,64", "-p", "32", NULL},
            "-p and -n are the token counts of a model's benchmark");
    refused((const char *[]){BENCH, "--model", "/nonexistent/model.gguf", NULL}, "not found");
    /* beyond the model's context: the numbers named */
    refused((const char *[]){BENCH, "--model", "smollm2", "-n", "9000", "--quiet", NULL},
            "9000 tokens do not fit the model's context of 8192");
#undef BENCH
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_smollm2_table),
        cmocka_unit_test(test_smollm2_json),
        cmocka_unit_test(test_minilm_pp_only),
        cmocka_unit_test(test_bad_options),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
