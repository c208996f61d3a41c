/* tests/test_report.c — what a person sees and keeps: the progress display
 * (runtime/progress.c: a bar with "\r", stage, i/n and ETA; JSON lines with done/total;
 * nothing when quiet), its use by `kiln quantize`, the tables sized to their content
 * (runtime/report.c; `kiln eval` with a recipe name far over 36 characters) and
 * `kiln eval --report FILE.md` with its gnuplot plot (or the line saying why none). */
#include "cli/cli_util.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "runtime/progress.h"
#include "runtime/report.h"
#include "runtime/runtime.h"

#define KILN KILN_BIN
#define RECIPE KILN_SOURCE_DIR "/recipes/w8a8-int8-dynamic.lua"

static char *read_back(FILE *f)
{
    fflush(f);
    long n = ftell(f);
    char *s = malloc((size_t)n + 1);
    rewind(f);
    assert_int_equal(fread(s, 1, (size_t)n, f), (size_t)n);
    s[n] = 0;
    return s;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void test_progress_bar(void **state)
{
    (void)state;
    FILE *f = tmpfile();
    KilnProgress *p = kiln_progress_new(KILN_PROGRESS_BAR, f);
    assert_non_null(p);
    kiln_progress_stage(p, "gptq", 3, "layers");
    kiln_progress_step(p, 1, "model.layers.0.q_proj");
    sleep_ms(150); /* past the redraw interval, so this step is drawn with its ETA */
    kiln_progress_step(p, 2, "model.layers.0.k_proj");
    kiln_progress_end(p);
    kiln_progress_free(p);
    char *s = read_back(f);
    assert_non_null(strchr(s, '\r'));
    assert_non_null(strstr(s, "gptq ["));
    assert_non_null(strstr(s, "2/3 layers"));
    assert_non_null(strstr(s, "ETA"));
    assert_non_null(strstr(s, "model.layers.0.k_proj"));
    assert_non_null(strstr(s, "3/3 layers")); /* the stage's final line */
    assert_int_equal(s[strlen(s) - 1], '\n');
    free(s);
    fclose(f);
}

static void test_progress_json(void **state)
{
    (void)state;
    FILE *f = tmpfile();
    KilnProgress *p = kiln_progress_new(KILN_PROGRESS_JSON, f);
    assert_non_null(p);
    kiln_progress_stage(p, "perplexity \"windows\"", 4, "windows");
    for (int i = 1; i <= 4; i++) {
        sleep_ms(110);
        kiln_progress_step(p, i, "window\n2"); /* control characters never reach the output */
    }
    kiln_progress_end(p);
    kiln_progress_free(p);
    char *s = read_back(f);
    int lines = 0, last_done = -1;
    for (char *line = s, *nl; *line; line = nl + 1) {
        nl = strchr(line, '\n');
        assert_non_null(nl); /* every object ends its line */
        KilnJson *j = NULL;
        KilnDiag d = {0};
        assert_int_equal(kiln_json_parse(line, (size_t)(nl - line), "progress", &j, &d), 0);
        assert_int_equal(j->kind, KILN_JSON_OBJECT);
        assert_string_equal(kiln_json_get(j, "progress")->str, "perplexity \"windows\"");
        const KilnJson *done = kiln_json_get(j, "done"), *total = kiln_json_get(j, "total");
        assert_non_null(done);
        assert_int_equal(total->i, 4);
        assert_true(done->i >= last_done && done->i <= 4);
        last_done = (int)done->i;
        assert_non_null(kiln_json_get(j, "eta_s"));
        kiln_json_free(j);
        lines++;
    }
    assert_true(lines >= 3); /* first, some steps, final */
    assert_int_equal(last_done, 4);
    free(s);
    fclose(f);
}

static void test_progress_quiet(void **state)
{
    (void)state;
    FILE *f = tmpfile();
    assert_null(kiln_progress_new(KILN_PROGRESS_QUIET, f));
    assert_null(kiln_progress_new(KILN_PROGRESS_AUTO, f)); /* a file is not a terminal */
    kiln_progress_stage(NULL, "x", 1, "");                  /* NULL: every call a no-op */
    kiln_progress_step(NULL, 1, "x");
    kiln_progress_end(NULL);
    assert_int_equal(ftell(f), 0);
    fclose(f);
}

static void test_quantize_progress_cli(void **state)
{
    (void)state;
    char *dir = cli_mkdtemp("report-q");
    char out[1100];
    snprintf(out, sizeof out, "%s/ckpt", dir);
    CliResult r;
    const char *json[] = {KILN, "quantize", RECIPE, "--model", "minilm", "-o", out, "--json", NULL};
    assert_int_equal(cli_run_env(json, NULL, &r), 0);
    if (r.code)
        cli_dump("quantize --json", &r);
    assert_int_equal(r.code, 0);
    int objects = 0;
    for (char *line = r.err, *nl; line && *line; line = nl + 1) {
        nl = strchr(line, '\n');
        if (!nl)
            break;
        if (*line != '{')
            continue; /* the closing summary line */
        KilnJson *j = NULL;
        KilnDiag d = {0};
        assert_int_equal(kiln_json_parse(line, (size_t)(nl - line), "stderr", &j, &d), 0);
        assert_non_null(kiln_json_get(j, "progress"));
        assert_non_null(kiln_json_get(j, "done"));
        assert_non_null(kiln_json_get(j, "total"));
        kiln_json_free(j);
        objects++;
    }
    assert_true(objects >= 2);
    assert_null(strstr(r.out, "\"progress\"")); /* progress never mixes into stdout */
    cli_result_free(&r);
    /* the same run with stderr a pipe, not a terminal: no progress at all */
    cli_rm_rf(out);
    const char *plain[] = {KILN, "quantize", RECIPE, "--model", "minilm", "-o", out, NULL};
    assert_int_equal(cli_run_env(plain, NULL, &r), 0);
    assert_int_equal(r.code, 0);
    assert_null(strstr(r.err, "\"progress\""));
    assert_null(strchr(r.err, '\r'));
    assert_null(strstr(r.err, "ETA"));
    cli_result_free(&r);
    cli_rm_rf(dir);
    free(dir);
}

static void test_table_sized_to_content(void **state)
{
    (void)state;
    KilnTable t;
    kiln_table_init(&t, "lrl", (const char *const[]){"name", "value", "note"});
    kiln_table_cell(&t, "a-recipe-name-much-longer-than-thirty-six-characters-here");
    kiln_table_cell(&t, "%.2f", 1.5);
    kiln_table_cell(&t, "x");
    kiln_table_cell(&t, "b");
    kiln_table_cell(&t, "%.2f", 12345.25);
    kiln_table_cell(&t, "a|b");
    FILE *f = tmpfile();
    kiln_table_print(&t, f, 2);
    char *s = read_back(f);
    /* every "value" cell ends where the header does; every note starts together */
    const char *l0 = s, *l1 = strchr(l0, '\n') + 1, *l2 = strchr(l1, '\n') + 1;
    size_t end = (size_t)(strstr(l0, "value") - l0) + 5;
    assert_memory_equal(l1 + end - 4, "1.50", 4);
    assert_memory_equal(l2 + end - 8, "12345.25", 8);
    assert_memory_equal(l0 + end + 2, "note", 4);
    assert_memory_equal(l1 + end + 2, "x\n", 2);
    assert_memory_equal(l2 + end + 2, "a|b\n", 4);
    free(s);
    fclose(f);
    f = tmpfile();
    kiln_table_markdown(&t, f);
    s = read_back(f);
    assert_non_null(strstr(s, "| name | value | note |\n|---|---:|---|\n"));
    assert_non_null(strstr(s, "| a\\|b |")); /* a pipe in a cell does not split it */
    free(s);
    fclose(f);
    kiln_table_free(&t);
}

/* The column of each table line under header word `col` ends at the same offset. */
static void assert_column_aligned(const char *out, const char *first_col, const char *col,
                                  int want_rows)
{
    char head[64];
    snprintf(head, sizeof head, "\n%s ", first_col); /* the header line starts with it */
    const char *h = strstr(out, head);
    assert_non_null(h);
    h++;
    const char *c = strstr(h, col);
    assert_non_null(c);
    size_t end = (size_t)(c - h) + strlen(col);
    int rows = 0;
    for (const char *l = strchr(h, '\n') + 1; *l && *l != '\n'; l = strchr(l, '\n') + 1) {
        const char *nl = strchr(l, '\n');
        assert_true((size_t)(nl - l) >= end);
        assert_true((l[end - 1] >= '0' && l[end - 1] <= '9') || /* a number ends here */
                    !strncmp(l + end - 3, "n/a", 3));
        assert_true(l[end] == ' ' || l[end] == '\n');
        rows++;
    }
    if (want_rows)
        assert_int_equal(rows, want_rows);
    else
        assert_true(rows >= 3);
}

static bool have_gnuplot(void)
{
    const char *path = getenv("PATH");
    char p[4096];
    for (const char *s = path ? path : "/usr/bin:/bin"; *s;) {
        size_t l = strcspn(s, ":");
        snprintf(p, sizeof p, "%.*s/gnuplot", (int)l, s);
        if (!access(p, X_OK))
            return true;
        s += l + (s[l] == ':');
    }
    return false;
}

static void test_eval_long_name_and_report(void **state)
{
    (void)state;
    char *dir = cli_mkdtemp("report-e");
    const char *longname = "w8a8-int8-dynamic-with-a-recipe-name-of-sixty-four-characters-xx";
    char recipe[1200], report[1200], png[1200];
    snprintf(recipe, sizeof recipe, "%s/%s.lua", dir, longname);
    snprintf(report, sizeof report, "%s/run.md", dir);
    snprintf(png, sizeof png, "%s/run-sqnr.png", dir);
    char *src = cli_slurp(RECIPE, NULL);
    assert_non_null(src);
    char *q = strstr(src, "recipe \"w8a8-int8-dynamic\"");
    assert_non_null(q);
    FILE *f = fopen(recipe, "w");
    fprintf(f, "%.*srecipe \"%s\"%s", (int)(q - src), src, longname,
            q + strlen("recipe \"w8a8-int8-dynamic\""));
    fclose(f);
    free(src);
    const char *argv[] = {KILN, "eval", recipe, "--model", "minilm", "--sentences", "8",
                          "--per-layer", "--report", report, NULL};
    CliResult r;
    assert_int_equal(cli_run_env(argv, NULL, &r), 0);
    if (r.code)
        cli_dump("eval --report", &r);
    assert_int_equal(r.code, 0);
    /* the table: numbers under their headers, whatever the recipe name's length */
    assert_non_null(strstr(r.out, longname));
    assert_column_aligned(r.out, "row", "weight_MB", 2);
    assert_column_aligned(r.out, "row", "cos_min", 2);
    assert_column_aligned(r.out, "layer", "SQNR_dB", 36);
    assert_column_aligned(r.out, "layer", "weight_bytes", 36);
    cli_result_free(&r);
    char *md = cli_slurp(report, NULL);
    assert_non_null(md);
    assert_non_null(strstr(md, "| command | `kiln eval "));
    assert_non_null(strstr(md, "--report"));
    assert_non_null(strstr(md, "| host | "));
    assert_non_null(strstr(md, "| kiln | " KILN_VERSION));
    assert_non_null(strstr(md, "| target | "));
    assert_non_null(strstr(md, "| row | cos_mean | cos_min |"));
    assert_non_null(strstr(md, longname));
    assert_non_null(strstr(md, "## Per-layer errors"));
    assert_non_null(strstr(md, "| 35 | encoder.layer.5.output.dense |"));
    if (have_gnuplot()) {
        assert_non_null(strstr(md, "](run-sqnr.png)"));
        size_t n = 0;
        char *img = cli_slurp(png, &n);
        assert_non_null(img);
        assert_true(n > 1000);
        assert_memory_equal(img, "\x89PNG\r\n\x1a\n", 8);
        free(img);
    } else {
        printf("skipped the plot's PNG check: no gnuplot on PATH (Debian gnuplot-nox)\n");
    }
    free(md);
    /* without gnuplot: the command still succeeds, and the report says why it has no plot */
    unlink(png);
    const char *env[] = {"KILN_GNUPLOT=/nonexistent/gnuplot", NULL};
    const char *argv2[] = {KILN, "eval", RECIPE, "--model", "minilm", "--sentences", "4",
                           "--report", report, NULL};
    assert_int_equal(cli_run_env(argv2, env, &r), 0);
    assert_int_equal(r.code, 0);
    assert_null(strstr(r.out, "SQNR_dB")); /* --report alone: per-layer numbers in the file */
    cli_result_free(&r);
    md = cli_slurp(report, NULL);
    assert_non_null(md);
    assert_non_null(strstr(md, "No plot: gnuplot was not found"));
    assert_non_null(strstr(md, "| 0 | encoder.layer.0.attention.self.query |"));
    assert_int_equal(access(png, F_OK), -1);
    free(md);
    /* a report that cannot be written fails first, with exit 2 */
    const char *argv3[] = {KILN, "eval", RECIPE, "--model", "minilm", "--report",
                           "/nonexistent-dir/r.md", NULL};
    assert_int_equal(cli_run_env(argv3, NULL, &r), 0);
    assert_int_equal(r.code, 2);
    assert_non_null(strstr(r.err, "--report /nonexistent-dir/r.md: cannot write"));
    cli_result_free(&r);
    cli_rm_rf(dir);
    free(dir);
}

static void test_bench_report(void **state)
{
    (void)state;
    char *dir = cli_mkdtemp("report-b");
    char report[1100];
    snprintf(report, sizeof report, "%s/bench.md", dir);
    const char *argv[] = {KILN, "bench", RECIPE, "--shape", "1,64,256", "--repeat", "2",
                          "--warmup", "1", "--threads", "1", "--probe-ms", "20", "--report",
                          report, NULL};
    CliResult r;
    assert_int_equal(cli_run_env(argv, NULL, &r), 0);
    if (r.code)
        cli_dump("bench --report", &r);
    assert_int_equal(r.code, 0);
    /* the limits on stdout: every value ends in one column (the table ends where the
     * AMX note or the kernel's lines begin) */
    char *cut = strstr(r.out, "\n  AMX: not probed");
    if (!cut)
        cut = strstr(r.out, "\nkernel: ");
    assert_non_null(cut);
    cut[1] = 0;
    assert_column_aligned(r.out, "  limit", "value", 0);
    cli_result_free(&r);
    char *md = cli_slurp(report, NULL);
    assert_non_null(md);
    assert_non_null(strstr(md, "| command | `kiln bench "));
    assert_non_null(strstr(md, "| host | "));
    assert_non_null(strstr(md, "## Kernel"));
    assert_non_null(strstr(md, "| shape M,N,K | 1,64,256 |"));
    assert_non_null(strstr(md, "| median | "));
    assert_non_null(strstr(md, "## Machine limits"));
    assert_non_null(strstr(md, "| streaming read, 1 thread | "));
    free(md);
    /* a report that cannot be written fails before the run, with exit 2 */
    const char *bad[] = {KILN, "bench", RECIPE, "--shape", "1,64,256", "--report",
                         "/nonexistent-dir/b.md", NULL};
    assert_int_equal(cli_run_env(bad, NULL, &r), 0);
    assert_int_equal(r.code, 2);
    assert_non_null(strstr(r.err, "--report /nonexistent-dir/b.md: cannot write"));
    assert_null(strstr(r.out, "machine limits")); /* nothing was run */
    cli_result_free(&r);
    cli_rm_rf(dir);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_progress_bar),
        cmocka_unit_test(test_progress_json),
        cmocka_unit_test(test_progress_quiet),
        cmocka_unit_test(test_table_sized_to_content),
        cmocka_unit_test(test_quantize_progress_cli),
        cmocka_unit_test(test_eval_long_name_and_report),
        cmocka_unit_test(test_bench_report),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
