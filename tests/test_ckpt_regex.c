/* tests/test_ckpt_regex.c — compressed-tensors' "re:" targets (model/checkpoints/ckpt_regex.c,
 * issue 17 class 3): Python re.match semantics (a table, checked against python3's re when
 * there is one), every limit an error naming config.json, the pattern and the limit (fast
 * and small: the catastrophic pattern that drove kiln to 24 GB, through `kiln eval` too),
 * the config group each module gets, and 20,000 config groups read fast. Regression
 * configs: tests/ckpt_regex/. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ckpt_synth.h"
#include "model/checkpoints/checkpoint.h"
#include "model/checkpoints/ckpt_regex.h"
#include "runtime/runtime.h"
#include "tests/models/testlib.h"

#if defined(__SANITIZE_ADDRESS__)
#define ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define ASAN 1
#endif
#endif
#ifndef ASAN
#define ASAN 0
#endif

static double now_s(clockid_t clk)
{
    struct timespec ts;
    clock_gettime(clk, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int run(const char *cmd)
{
    int rc = system(cmd);
    return rc == -1 ? -1 : WEXITSTATUS(rc);
}

/* ------------------------------------------------------------------ syntax */

/* Expected values are Python 3's re.match(pattern, name) is not None (checked again
 * against python3 below when it is installed). */
static const struct { const char *pat, *name; int want; } py_cases[] = {
    {".*\\.q_proj$", "model.layers.0.self_attn.q_proj", 1},
    {".*\\.q_proj$", "model.layers.0.self_attn.q_proj_x", 0},
    {"model\\.layers\\.\\d+\\.mlp\\.(?:up|gate)_proj$", "model.layers.12.mlp.up_proj", 1},
    {"model\\.layers\\.\\d+\\.mlp\\.(?:up|gate)_proj$", "model.layers.x.mlp.up_proj", 0},
    /* re.match: anchored at the start (not a search), not at the end (not a fullmatch) */
    {"layers", "model.layers.0.mlp.up_proj", 0},
    {"model", "model.layers.0.mlp.up_proj", 1},
    {"model\\.layers\\.0$", "model.layers.0.mlp.up_proj", 0},
    /* lookarounds as compressed-tensors' configs write them */
    {".*(?=\\.q_proj$)", "model.layers.0.self_attn.q_proj", 1},
    {"(?!.*lm_head).*proj", "lm_head.proj", 0},
    {"(?!.*lm_head).*proj", "model.up_proj", 1},
    {".*(?<!k)_proj$", "model.k_proj", 0},
    {".*(?<!k)_proj$", "model.q_proj", 1},
    /* str patterns are Unicode in Python */
    {"\\d+$", "\xd9\xa3\xd9\xa4", 1},
    {"\\w+$", "h\xc3\xa9llo", 1},
    {"\\u00e9", "\xc3\xa9", 1},
    {"(?i)MODEL\\.", "model.x", 1},
    /* Python's spellings PCRE2 reads otherwise */
    {"a\\Z", "a\n", 0},
    {"a$", "a\n", 1},
    {"a{,2}b", "aab", 1},
    {"a{,2}b", "aaab", 0},
    {"a{,}b", "aaaab", 1},
    {"x{,2", "x{,2", 1},
    {"[]a]+x", "]a]x", 1},
    {"[^]a]x", "bx", 1},
    {"(?P<n>a)(?P=n)", "aa", 1},
    {"(?x) m o d e l # comment", "model", 1},
    {"", "lm_head", 1},
    {".", "\n", 0},
    {"(?s).", "\n", 1},
    {"a|b", "b", 1},
    {"(?:a|aa)*c", "aaaac", 1},
};
#define NPY (sizeof py_cases / sizeof py_cases[0])

static KilnCkRegexes *rx_new(void)
{
    KilnCkRegexes *rx = NULL;
    KilnDiag d = {0};
    assert_int_equal(kiln_ck_rx_new(&rx, &d), 0);
    return rx;
}

static int rx_try(KilnCkRegexes *rx, const char *pat, const char *name, KilnDiag *d)
{
    int id = -1;
    bool hit = false;
    int rc = kiln_ck_rx_add(rx, "ck/config.json:7: config_groups[\"g\"].targets[0]", pat, &id, d);
    if (!rc)
        rc = kiln_ck_rx_match(rx, id, name, &hit, d);
    return rc ? -rc : hit;
}

/* The table as JSON, read by python3's re; its answers must be the table's. */
static void check_with_python(void)
{
    char path[300], cmd[1200];
    snprintf(path, sizeof path, "%s/py_cases.json", tmpdir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    KilnJsonWriter w;
    kiln_jw_init(&w, f);
    kiln_jw_begin_array(&w);
    for (size_t i = 0; i < NPY; i++) {
        kiln_jw_begin_array(&w);
        kiln_jw_string(&w, py_cases[i].pat);
        kiln_jw_string(&w, py_cases[i].name);
        kiln_jw_end_array(&w);
    }
    kiln_jw_end_array(&w);
    fclose(f);
    snprintf(cmd, sizeof cmd,
             "command -v python3 >/dev/null || exit 77; python3 -c 'import json, re, sys\n"
             "print(\"\".join(\"1\" if re.match(p, n) else \"0\"\n"
             "              for p, n in json.load(open(sys.argv[1]))))'"
             " '%s' > '%s.out'", path, path);
    int rc = run(cmd);
    if (rc == 77) {
        print_message("no python3: the table's expectations stand unchecked\n");
        return;
    }
    assert_int_equal(rc, 0);
    char out[NPY + 8] = {0};
    snprintf(path + strlen(path), sizeof path - strlen(path), ".out");
    f = fopen(path, "r");
    assert_non_null(f);
    assert_non_null(fgets(out, sizeof out, f));
    fclose(f);
    for (size_t i = 0; i < NPY; i++)
        if (out[i] - '0' != py_cases[i].want)
            fail_msg("python3: re.match(%s, %s) is %c, the table says %d", py_cases[i].pat,
                     py_cases[i].name, out[i], py_cases[i].want);
}

static void test_python_semantics(void **state)
{
    (void)state;
    KilnCkRegexes *rx = rx_new();
    for (size_t i = 0; i < NPY; i++) {
        KilnDiag d = {0};
        int got = rx_try(rx, py_cases[i].pat, py_cases[i].name, &d);
        if (got != py_cases[i].want)
            fail_msg("re.match(%s, %s): kiln %d (%s), Python %d", py_cases[i].pat,
                     py_cases[i].name, got, d.msg, py_cases[i].want);
    }
    kiln_ck_rx_free(rx);
    check_with_python();
}

/* ------------------------------------------------------------------ limits */

static void expect_refused(KilnCkRegexes *rx, const char *pat, const char *name,
                           const char *want)
{
    KilnDiag d = {0};
    double t0 = now_s(CLOCK_MONOTONIC);
    int got = rx_try(rx, pat, name, &d);
    double dt = now_s(CLOCK_MONOTONIC) - t0;
    if (got != -KILN_EINPUT || !strstr(d.msg, want) || !strstr(d.msg, "ck/config.json:7: "))
        fail_msg("\"%.60s\": %d \"%s\" (expected an error naming config.json and \"%s\")", pat,
                 got, d.msg, want);
    if (dt > 1.0)
        fail_msg("\"%.60s\": %.2f s to refuse", pat, dt);
}

static void test_refused_patterns(void **state)
{
    (void)state;
    KilnCkRegexes *rx = rx_new();
    const char *m = "model.layers.0.mlp.up_proj";
    /* issue 17: 24 GB in glibc regcomp */
    expect_refused(rx, "((((.{0,255}){0,255}){0,255}){0,255})x", m, "too large");
    expect_refused(rx, "(*LIMIT_MATCH=1)a", m, "not Python's");
    expect_refused(rx, "a(*SKIP)(*FAIL)|b", m, "not Python's");
    expect_refused(rx, "a\\Cb", m, "\\C is disabled");
    expect_refused(rx, "(", m, "missing closing parenthesis");
    expect_refused(rx, "\\u12", m, "\\u takes 4 hex digits");
    expect_refused(rx, "[\\Z]", m, "at byte");
    expect_refused(rx, "a{0,70000}", m, "number too big");
    expect_refused(rx, "\xff", m, "UTF-8");
    char big[KILN_CK_RX_MAX_PATTERN + 2];
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = 0;
    expect_refused(rx, big, m, "4096-byte limit");
    char nest[200] = {0};
    for (int i = 0; i < KILN_CK_RX_MAX_NEST + 1; i++)
        nest[i] = '(', nest[KILN_CK_RX_MAX_NEST + 1 + i] = ')';
    expect_refused(rx, nest, m, "64 nested parentheses");
    /* a control character in a pattern reaches the message escaped */
    KilnDiag d = {0};
    assert_int_equal(rx_try(rx, "\x1b[2J(", m, &d), -KILN_EINPUT);
    assert_non_null(strstr(d.msg, "\\x1b[2J("));
    kiln_ck_rx_free(rx);
}

static void test_match_limits(void **state)
{
    (void)state;
    KilnCkRegexes *rx = rx_new();
    /* exponential backtracking (Python takes minutes here) */
    expect_refused(rx, "(?:.|..)*_proj\\.", "model.layers.0.self_attn.q_proj_x",
                   "match limit (100000");
    char name[4100];
    memset(name, 'a', 4000);
    snprintf(name + 4000, 100, "bc");
    expect_refused(rx, "((a))*b", name, "depth limit (10000");
    expect_refused(rx, "((((((((((((((((((((a))))))))))))))))))))*b", name,
                   "heap limit (4096 KiB)");
    expect_refused(rx, "a", "a\xc3", "UTF-8");
    /* what reached a limit leaves the set usable */
    KilnDiag d = {0};
    assert_int_equal(rx_try(rx, "a+b", name + 3900, &d), 1);
    kiln_ck_rx_free(rx);
}

/* Patterns that stay under the match limit but cost about a millisecond a name: the time
 * budget over all patterns stops them. */
static void test_time_budget(void **state)
{
    (void)state;
    KilnCkRegexes *rx = rx_new();
    KilnDiag d = {0};
    int id = -1;
    assert_int_equal(kiln_ck_rx_add(rx, "ck/config.json:9: config_groups[\"slow\"].targets[0]",
                                     "(?:a|aa)*c", &id, &d), 0);
    double t0 = now_s(CLOCK_MONOTONIC);
    int rc = 0;
    long n = 0;
    while (!rc && n < 1000000) {
        bool hit = true;
        rc = kiln_ck_rx_match(rx, id, "aaaaaaaaaaaaaaaaaaaabc", &hit, &d);
        assert_false(hit);
        n++;
    }
    double dt = now_s(CLOCK_MONOTONIC) - t0;
    print_message("time budget: %ld matches, %.2f s: %s\n", n, dt, d.msg);
    assert_int_equal(rc, KILN_EINPUT);
    assert_non_null(strstr(d.msg, "config_groups[\"slow\"]"));
    assert_non_null(strstr(d.msg, "took more than 2000 ms (the limit"));
    assert_true(dt < KILN_CK_RX_TIME_MS / 1e3 + 1.0);
    /* and nothing more is compiled either */
    assert_int_equal(kiln_ck_rx_add(rx, "x", "a", &id, &d), KILN_EINPUT);
    kiln_ck_rx_free(rx);
}

/* Patterns of ~60 KiB compiled each: the 32 MiB over all patterns stops them. */
static void test_compiled_memory(void **state)
{
    (void)state;
    KilnCkRegexes *rx = rx_new();
    KilnDiag d = {0};
    int rc = 0, n = 0, id;
    while (!rc && n < 10000) {
        rc = kiln_ck_rx_add(rx, "ck/config.json:3: config_groups[\"big\"].targets[0]",
                            "(?:abcdefghijklmnopqrstuvwxy|z){0,900}", &id, &d);
        n += !rc;
    }
    print_message("compiled patterns: %d before \"%s\"\n", n, d.msg);
    assert_int_equal(rc, KILN_EINPUT);
    assert_non_null(strstr(d.msg, "more than 32 MiB"));
    assert_true(n > 100 && n < 2000);
    kiln_ck_rx_free(rx);
}

/* ------------------------------------------------------------------ checkpoints */

static char ckdir[400];

/* A pack-quantized checkpoint of `layers` layers (q_proj, k_proj, down_proj: int4 g32,
 * 4 x 32), its config.json to be replaced. */
static void write_ckpt(const char *dir, int layers)
{
    KilnCheckpoint c = {0};
    c.nlin = 3 * layers;
    c.lin = calloc((size_t)c.nlin, sizeof *c.lin);
    assert_non_null(c.lin);
    static const char *const mod[] = {"self_attn.q_proj", "self_attn.k_proj", "mlp.down_proj"};
    for (int i = 0; i < c.nlin; i++) {
        char name[160];
        snprintf(name, sizeof name, "model.layers.%d.%s", i / 3, mod[i % 3]);
        make_layer(&c.lin[i], name, 4, 32, KILN_QF_INT4, true, KILN_GRAN_GROUP, 32);
    }
    char cmd[1000];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s'", dir, dir);
    assert_int_equal(run(cmd), 0);
    KilnDiag d = {0};
    if (kiln_checkpoint_write(dir, &c, &d))
        fail_msg("%s", d.msg);
    kiln_checkpoint_free(&c);
}

static const char *const W4 = "\"weights\": {\"num_bits\": 4, \"type\": \"int\", \"symmetric\": "
                              "true, \"strategy\": \"group\", \"group_size\": 32}";
static const char *const A8 = "\"input_activations\": {\"num_bits\": 8, \"type\": \"int\", "
                              "\"symmetric\": true, \"strategy\": \"token\", \"dynamic\": true}";

/* config.json with these config_groups (JSON members, without braces) */
static void write_config(const char *dir, const char *groups)
{
    char path[600];
    snprintf(path, sizeof path, "%s/config.json", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fprintf(f, "{\"model_type\": \"llama\",\n \"quantization_config\": {\"quant_method\": "
               "\"compressed-tensors\", \"format\": \"pack-quantized\",\n \"config_groups\": "
               "{%s}}}\n", groups);
    fclose(f);
}

/* Which group each module got, told by the activations each group gives. */
static void test_groups_in_checkpoint(void **state)
{
    (void)state;
    snprintf(ckdir, sizeof ckdir, "%s/groups", tmpdir);
    write_ckpt(ckdir, 2);
    char g[2000];
    /* a: a regex (anchored at the start only), with int8 activations; b: the class;
     * c: one exact name, weight-only, though a regex of a names it too */
    snprintf(g, sizeof g,
             "\"b\": {\"targets\": [\"Linear\"], %s},\n"
             "\"a\": {\"targets\": "
             "[\"re:model\\\\.layers\\\\.\\\\d+\\\\.(?:self_attn)\\\\.(?!k)\"], %s, %s},\n"
             "\"c\": {\"targets\": [\"model.layers.1.self_attn.q_proj\"], %s},\n"
             "\"none\": {\"targets\": [\"re:(\"]}",
             W4, W4, A8, W4);
    write_config(ckdir, g);
    KilnCheckpoint c;
    KilnDiag d = {0};
    /* a group without weights is not read for modules, but its patterns must compile */
    assert_int_equal(kiln_checkpoint_read(ckdir, &c, &d), KILN_EINPUT);
    assert_non_null(strstr(d.msg, "config_groups[\"none\"].targets[0] \"re:(\""));
    assert_non_null(strstr(d.msg, "groups/config.json:6:"));
    snprintf(g + strlen(g) - strlen("\"re:(\"]}"), 20, "\"re:x\"]}");
    write_config(ckdir, g);
    if (kiln_checkpoint_read(ckdir, &c, &d))
        fail_msg("%s", d.msg);
    static const struct { const char *m; bool act; } want[] = {
        {"model.layers.0.self_attn.q_proj", true},   {"model.layers.0.self_attn.k_proj", false},
        {"model.layers.0.mlp.down_proj", false},     {"model.layers.1.self_attn.q_proj", false},
        {"model.layers.1.self_attn.k_proj", false},  {"model.layers.1.mlp.down_proj", false},
    };
    assert_int_equal(c.nlin, 6);
    for (size_t i = 0; i < 6; i++) {
        const KilnQLinear *q = kiln_checkpoint_find(&c, want[i].m);
        assert_non_null(q);
        if ((q->act.fmt == KILN_QF_INT8) != want[i].act)
            fail_msg("%s: activations %d, expected %s", want[i].m, q->act.fmt,
                     want[i].act ? "int8 (group a)" : "none");
    }
    kiln_checkpoint_free(&c);
}

/* Each config of tests/ckpt_regex/ as config.json: each an error naming config.json, its pattern
 * and the limit, in well under a second. */
static void test_regressions(void **state)
{
    (void)state;
    static const struct { const char *file, *want; } cases[] = {
        {"catastrophic.json", "\"re:((((.{0,255}){0,255}){0,255}){0,255})x\": not a regular "
                              "expression kiln reads (at byte 38: regular expression is too large"},
        {"match-limit.json", "config_groups[\"g\"].targets[1] \"re:(?:.|..)*_proj\\.\": matching "
                             "module 'model.layers.0.mlp.down_proj' exceeds the match limit"},
        {"verb.json", "(* is PCRE2's syntax"},
        {"too-long.json", "4097 bytes, longer than the 4096-byte limit"},
    };
    snprintf(ckdir, sizeof ckdir, "%s/reg", tmpdir);
    write_ckpt(ckdir, 1);
    char cmd[3000];
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        snprintf(cmd, sizeof cmd, "cp '%s/tests/ckpt_regex/%s' '%s/config.json'", KILN_SOURCE_DIR,
                 cases[i].file, ckdir);
        assert_int_equal(run(cmd), 0);
        KilnCheckpoint c;
        KilnDiag d = {0};
        double t0 = now_s(CLOCK_MONOTONIC);
        int rc = kiln_checkpoint_read(ckdir, &c, &d);
        double dt = now_s(CLOCK_MONOTONIC) - t0;
        if (rc != KILN_EINPUT || !strstr(d.msg, cases[i].want) ||
            !strstr(d.msg, "reg/config.json:"))
            fail_msg("%s: rc %d \"%s\" (expected \"%s\")", cases[i].file, rc, d.msg, cases[i].want);
        print_message("%-18s %.3f s: %s\n", cases[i].file, dt, d.msg);
        assert_true(dt < 1.0);
    }
    /* the catastrophic pattern through the command (glibc regcomp took 24 GB): exit 2,
     * the message, quickly and small; in 1 GiB of address space where that works (ASan
     * reserves terabytes of shadow) */
    snprintf(cmd, sizeof cmd, "cp '%s/tests/ckpt_regex/catastrophic.json' '%s/config.json' && "
             "(%s exec '%s' eval '%s/recipes/f32.lua' --model '%s' --tokens 8) > '%s/eval.out' "
             "2>&1", KILN_SOURCE_DIR, ckdir, ASAN ? "" : "ulimit -v 1048576;", KILN_BIN,
             KILN_SOURCE_DIR, ckdir, tmpdir);
    double t0 = now_s(CLOCK_MONOTONIC);
    int rc = run(cmd);
    double dt = now_s(CLOCK_MONOTONIC) - t0;
    struct rusage ru;
    getrusage(RUSAGE_CHILDREN, &ru); /* the largest child so far: this one */
    snprintf(cmd, sizeof cmd, "grep -qF 'reg/config.json:12: config_groups[\"g\"].targets[0] "
             "\"re:((((.{0,255}){0,255}){0,255}){0,255})x\": not a regular expression' "
             "'%s/eval.out'", tmpdir);
    if (rc != 2 || run(cmd) != 0) {
        snprintf(cmd, sizeof cmd, "cat '%s/eval.out' >&2", tmpdir);
        run(cmd);
        fail_msg("kiln eval with the catastrophic pattern: exit %d", rc);
    }
    print_message("kiln eval, catastrophic pattern: exit 2 in %.2f s, %ld MB at most\n", dt,
                  ru.ru_maxrss / 1024);
    assert_true(dt < 10.0);
    assert_true(ru.ru_maxrss < 512 * 1024);
}

/* 20,000 config groups, one regex each, over 30 modules: each pattern compiled once
 * (compiled per module x group x target, reading 14 modules took 6.2 s). The 600,000 matches
 * take about 0.3 s of the 2 s budget. */
static void test_many_groups(void **state)
{
    (void)state;
    enum { NG = 20000, LAYERS = 10 };
    snprintf(ckdir, sizeof ckdir, "%s/many", tmpdir);
    write_ckpt(ckdir, LAYERS);
    size_t cap = (size_t)NG * 400;
    char *g = malloc(cap);
    assert_non_null(g);
    size_t k = (size_t)snprintf(g, cap, "\"lin\": {\"targets\": [\"Linear\"], %s}", W4);
    for (int i = 1; i < NG; i++)
        k += (size_t)snprintf(g + k, cap - k, ",\n\"g%d\": {\"targets\": [\"re:model\\\\.layers"
                              "\\\\.%d\\\\.(?:mlp|self_attn)\\\\.\\\\w+_proj$\"], %s, %s}", i,
                              i + 100, W4, A8);
    write_config(ckdir, g);
    free(g);
    KilnCheckpoint c;
    KilnDiag d = {0};
    double t0 = now_s(CLOCK_MONOTONIC);
    if (kiln_checkpoint_read(ckdir, &c, &d))
        fail_msg("%s", d.msg);
    double dt = now_s(CLOCK_MONOTONIC) - t0;
    print_message("%d config groups, %d modules: read in %.2f s\n", NG, c.nlin, dt);
    assert_int_equal(c.nlin, 3 * LAYERS);
    for (int i = 0; i < c.nlin; i++) /* no regex names them: the class group, weight-only */
        assert_int_equal(c.lin[i].act.fmt, KILN_QF_NONE);
    kiln_checkpoint_free(&c);
    assert_true(dt < 8.0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_python_semantics), cmocka_unit_test(test_refused_patterns),
        cmocka_unit_test(test_match_limits),     cmocka_unit_test(test_time_budget),
        cmocka_unit_test(test_compiled_memory),  cmocka_unit_test(test_groups_in_checkpoint),
        cmocka_unit_test(test_regressions),      cmocka_unit_test(test_many_groups),
    };
    return cmocka_run_group_tests(tests, tmpdir_setup, tmpdir_teardown);
}
