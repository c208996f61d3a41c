/* tests/test_recipe_scale.c — big legal recipes stay near-linear (issue 17, class 2):
 * 300,000 ignore entries, 2,000 rules with method or outliers in a 1 MiB file, 45,000
 * rules with their example layers, each well inside a generous time bound; the
 * indexed first-match agrees with a plain walk on random globs; and recipe text
 * (class 8): NUL and control characters, escaped messages, budgets inside lua: pattern
 * checks, long globs' examples, int4 groups the CPU kernels cannot pack refused at the
 * rule's line.
 * Large inputs are generated here; small ones live in tests/recipes_scale/. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "frontend/recipe.h"
#include "test_util.h"

#define SRC KILN_SOURCE_DIR
#define BOUND_S 10.0 /* generous: each case takes well under a second on an idle core */

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static int load_n(const char *src, size_t len, KilnRecipe **r, KilnDiag *d)
{
    memset(d, 0, sizeof *d);
    *r = NULL;
    return kiln_recipe_load_string(src, len, "scale.lua", r, d);
}

static KilnRecipe *load_ok(const char *src)
{
    KilnRecipe *r;
    KilnDiag d;
    int rc = load_n(src, strlen(src), &r, &d);
    if (rc)
        fprintf(stderr, "unexpected error: %d: %s\n", d.line, d.msg);
    assert_int_equal(rc, 0);
    return r;
}

static void expect_error(const char *src, size_t len, int line, const char *sub)
{
    KilnRecipe *r;
    KilnDiag d;
    int rc = load_n(src, len, &r, &d);
    if (rc != KILN_EINPUT || d.line != line || !strstr(d.msg, sub))
        fprintf(stderr, "want line %d '%s', got rc %d line %d: %s\n", line, sub, rc, d.line, d.msg);
    assert_int_equal(rc, KILN_EINPUT);
    assert_null(r);
    assert_int_equal(d.line, line);
    assert_non_null(strstr(d.msg, sub));
}

/* A growing text buffer for generated recipes. */
typedef struct Text {
    char *s;
    size_t n, cap;
} Text;

static void add(Text *t, const char *fmt, ...)
{
    va_list ap;
    for (;;) {
        va_start(ap, fmt);
        int k = vsnprintf(t->s ? t->s + t->n : NULL, t->s ? t->cap - t->n : 0, fmt, ap);
        va_end(ap);
        if (t->s && t->n + (size_t)k < t->cap) {
            t->n += (size_t)k;
            return;
        }
        t->cap = (t->cap + (size_t)k + 1) * 2;
        t->s = realloc(t->s, t->cap);
        assert_non_null(t->s);
    }
}

/* ------------------------------------------------------------------ class 2 */

static void test_big_ignore_list(void **state)
{
    (void)state;
    const char *src = "local t = {}\n"
                      "for i = 1, 300000 do t[i] = 'model.layers.' .. i .. '.mlp' end\n"
                      "t[#t + 1] = 'lua:^lm_head$'\n"
                      "return recipe 'big-ignore' { ignore = t, rule '*' { weights = int8 } }\n";
    double t0 = now_s();
    KilnRecipe *r = load_ok(src);
    assert_true(kiln_recipe_ignored(r, "model.layers.1.mlp"));
    assert_true(kiln_recipe_ignored(r, "model.layers.300000.mlp"));
    assert_true(kiln_recipe_ignored(r, "lm_head"));
    assert_false(kiln_recipe_ignored(r, "model.layers.300001.mlp"));
    assert_int_equal(kiln_recipe_match(r, "model.layers.300001.mlp"), 0);
    assert_int_equal(kiln_recipe_match(r, "model.layers.17.mlp"), -1);
    kiln_recipe_free(r);
    double dt = now_s() - t0;
    fprintf(stderr, "300,000 ignore entries: %.2f s\n", dt);
    assert_true(dt < BOUND_S);

    /* the duplicate check still finds a repeat at the very end (a Lua pattern repeats a glob) */
    const char *dup = "local t = {}\n"
                      "for i = 1, 300000 do t[i] = 'l' .. i end\n"
                      "t[#t + 1] = 'lua:l299999'\n"
                      "return recipe 'dup' {\n"
                      "  ignore = t,\n"
                      "  rule '*' { weights = int8 } }\n";
    t0 = now_s();
    expect_error(dup, strlen(dup), 5, "duplicate ignore pattern 'lua:l299999'");
    assert_true(now_s() - t0 < BOUND_S);
}

/* 2,000 rules with method or outliers in a 1 MiB file: each asks for its keys' lines.
 * A bad method on the last rule is still reported on its own line. */
static void test_method_rules_in_big_file(void **state)
{
    (void)state;
    for (int bad = 0; bad < 2; bad++) {
        Text t = {0};
        add(&t, "local pad = {\n");
        while (t.n < 1024 * 1024 - 240 * 1000)
            add(&t, "  { a = 1, b = 2, c = 3, d = 4, e = 5, f = 6, g = 7, h = 8 },\n");
        add(&t, "}\nreturn recipe 'methods' {\n");
        int line = 0;
        for (int i = 0; i < 2000; i++) {
            if (i % 2)
                add(&t, "  rule 'm%d.*' { weights = int8 { per = 'channel' }, activations = int8 "
                        "{ dynamic = true },\n    outliers = 6.0 },\n", i);
            else
                add(&t, "  rule 'm%d.*' { weights = int8 { per = 'channel' },\n    method = '%s' },\n", i,
                    bad && i == 1998 ? "bogus" : "gptq");
        }
        add(&t, "}\n");
        for (size_t i = 0; i < t.n; i++)
            line += t.s[i] == '\n';
        assert_true(t.n > 1000 * 1000 && t.n <= 1024 * 1024);
        double t0 = now_s();
        if (!bad) {
            KilnRecipe *r = load_ok(t.s);
            assert_int_equal(kiln_recipe_nrules(r), 2000);
            assert_true(kiln_recipe_rule_method(r, 1998)->gptq);
            kiln_recipe_free(r);
        } else {
            /* rule 1998's method line: above rule 1999's two lines and the closing brace */
            expect_error(t.s, t.n, line - 3, "unknown method 'bogus'");
        }
        double dt = now_s() - t0;
        fprintf(stderr, "2,000 method/outliers rules in %zu bytes: %.2f s\n", t.n, dt);
        assert_true(dt < BOUND_S);
        free(t.s);
    }
}

/* Key lines come from the file that is running: an included file's lines inside it,
 * the root's after it (an index of one file must not answer for another). */
static void test_key_lines_across_includes(void **state)
{
    (void)state;
    char dir[] = "/tmp/kiln-scale-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char p[300];
    const char *part_bad = "return rule 'p' {\n  weights = int8,\n\n  method = 'bogus' }\n";
    const char *part_ok = "return rule 'p' { weights = int8,\n\n\n\n  method = 'gptq' }\n";
    const char *root_a = "return recipe 'a' {\n  rule 'x' { weights = int8,\n   method = 'gptq' },\n"
                         "  include 'part_bad.lua',\n}\n";
    const char *root_b = "local p = include 'part_ok.lua'\nreturn recipe 'b' {\n  p,\n"
                         "  rule 'y' { weights = int8,\n\n  method = 'bogus' },\n}\n";
    const char *files[][2] = {{"part_bad.lua", part_bad}, {"part_ok.lua", part_ok},
                              {"a.lua", root_a}, {"b.lua", root_b}};
    for (int i = 0; i < 4; i++) {
        snprintf(p, sizeof p, "%s/%s", dir, files[i][0]);
        FILE *f = fopen(p, "w");
        assert_non_null(f);
        fputs(files[i][1], f);
        fclose(f);
    }
    KilnRecipe *r = NULL;
    KilnDiag d = {0};
    snprintf(p, sizeof p, "%s/a.lua", dir);
    assert_int_equal(kiln_recipe_load(p, &r, &d), KILN_EINPUT);
    assert_int_equal(d.line, 4);
    assert_non_null(strstr(d.msg, "part_bad.lua:4:"));
    memset(&d, 0, sizeof d);
    snprintf(p, sizeof p, "%s/b.lua", dir);
    assert_int_equal(kiln_recipe_load(p, &r, &d), KILN_EINPUT);
    assert_int_equal(d.line, 6);
    assert_non_null(strstr(d.msg, "bogus"));
    for (int i = 0; i < 4; i++) {
        snprintf(p, sizeof p, "%s/%s", dir, files[i][0]);
        unlink(p);
    }
    rmdir(dir);
}

/* 45,000 rules: loading, the example layer of every rule (one that this rule and no
 * earlier one takes) and matching all of them. */
static void test_many_rules_examples(void **state)
{
    (void)state;
    const char *src = "local t = { ignore = { 'lm_head', '*.gate' } }\n"
                      "for i = 1, 45000 do t[#t + 1] = rule ('model.layers.' .. i .. '.*') "
                      "{ weights = int8 } end\n"
                      "t[#t + 1] = rule '*.mlp.*' { weights = int4 }\n"
                      "t[#t + 1] = rule 'lua:%.attn%.q_proj$' { weights = int8 }\n"
                      "return recipe 'many' (t)\n";
    double t0 = now_s();
    KilnRecipe *r = load_ok(src);
    int n = kiln_recipe_nrules(r);
    assert_int_equal(n, 45002);
    for (int i = 0; i < n; i++) {
        const char *ex = kiln_recipe_rule_example(r, i);
        assert_non_null(ex);
        if (kiln_recipe_match(r, ex) != i)
            fprintf(stderr, "rule %d (%s): example %s matches rule %d\n", i,
                    kiln_recipe_rule_pattern(r, i), ex, kiln_recipe_match(r, ex));
        assert_int_equal(kiln_recipe_match(r, ex), i);
    }
    assert_int_equal(kiln_recipe_match(r, "model.layers.7.mlp.up_proj"), 6);
    assert_int_equal(kiln_recipe_match(r, "x.mlp.gate"), -1);
    kiln_recipe_free(r);
    double dt = now_s() - t0;
    fprintf(stderr, "45,000 rules with examples: %.2f s\n", dt);
    assert_true(dt < BOUND_S);
}

/* The index answers exactly what a walk over the lists in order answers: random globs
 * (literal starts, ends, both or neither) against random names. */
static uint64_t rnd(uint64_t *s)
{
    *s += 0x9e3779b97f4a7c15ull;
    uint64_t z = *s;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static void random_word(uint64_t *s, char *out, int max, bool wild)
{
    static const char alpha[] = "ab.";
    int n = (int)(rnd(s) % (uint64_t)max);
    for (int i = 0; i < n; i++) {
        uint64_t c = rnd(s) % 8;
        out[i] = wild && c == 6 ? '*' : wild && c == 7 ? '?' : alpha[c % 3];
    }
    out[n] = 0;
}

static bool seen(char (*list)[12], int n, const char *w)
{
    for (int i = 0; i < n; i++)
        if (strcmp(list[i], w) == 0)
            return true;
    return false;
}

static void test_index_agrees_with_walk(void **state)
{
    (void)state;
    uint64_t seed = 17;
    for (int round = 0; round < 40; round++) {
        enum { NR = 60, NI = 6 };
        char rules[NR][12], ign[NI][12];
        Text t = {0};
        add(&t, "return recipe 'rand' {\n  ignore = {");
        for (int i = 0; i < NI; i++) {
            do
                random_word(&seed, ign[i], 7, true);
            while (!ign[i][0] || seen(ign, i, ign[i]));
            add(&t, "'%s', ", ign[i]);
        }
        add(&t, "},\n");
        for (int i = 0; i < NR; i++) {
            do
                random_word(&seed, rules[i], 9, true);
            while (!rules[i][0] || seen(rules, i, rules[i]));
            add(&t, "  rule '%s' { weights = int8 },\n", rules[i]);
        }
        add(&t, "}\n");
        KilnRecipe *r = load_ok(t.s);
        for (int k = 0; k < 400; k++) {
            char name[12];
            random_word(&seed, name, 10, false);
            int want = -1;
            bool ignored = false;
            for (int i = 0; i < NI && !ignored; i++)
                ignored = kiln_glob_match(ign[i], name);
            for (int i = 0; i < NR && !ignored && want < 0; i++)
                if (kiln_glob_match(rules[i], name))
                    want = i;
            assert_int_equal(kiln_recipe_ignored(r, name), ignored);
            if (kiln_recipe_match(r, name) != want)
                fprintf(stderr, "round %d name '%s': want rule %d, got %d\n", round, name, want,
                        kiln_recipe_match(r, name));
            assert_int_equal(kiln_recipe_match(r, name), want);
        }
        kiln_recipe_free(r);
        free(t.s);
    }
}

/* ------------------------------------------------------------------ class 8 */

/* NUL bytes would cut patterns and names short unseen; control characters would reach
 * terminals: both refused at the line, the message itself escaped. */
static void test_nul_and_control_characters(void **state)
{
    (void)state;
    static const char nul_rule[] = "return recipe 'r' {\n  rule 'model.\0evil' { weights = int8 } }\n";
    expect_error(nul_rule, sizeof nul_rule - 1, 2, "rule pattern \"model.\" has a NUL byte at byte 6 of 11");
    static const char nul_name[] = "return recipe 'a\0b' {\n  rule '*' { weights = int8 } }\n";
    expect_error(nul_name, sizeof nul_name - 1, 1, "recipe name \"a\" has a NUL byte at byte 1 of 3");
    static const char nul_ign[] = "return recipe 'a' {\n  ignore = { 'lm_head', 'x\0y' },\n"
                                  "  rule '*' { weights = int8 } }\n";
    expect_error(nul_ign, sizeof nul_ign - 1, 2, "ignore pattern \"x\" has a NUL byte");
    static const char nul_lua[] = "return recipe 'a' {\n  rule 'lua:^x\0' { weights = int8 } }\n";
    expect_error(nul_lua, sizeof nul_lua - 1, 2, "has a NUL byte");
    const char *esc = "return recipe 'a' {\n  rule 'x\x1b[31m' { weights = int8 } }\n";
    expect_error(esc, strlen(esc), 2, "rule pattern \"x\\x1b[31m\" has a control character (byte 1, 0x1b)");
    const char *cr = "return recipe 'a\\r' { rule '*' { weights = int8 } }\n";
    expect_error(cr, strlen(cr), 1, "recipe name \"a\\x0d\" has a control character");

    /* the recipe's own error text, a Lua runtime error's and a DSL error's: escaped */
    const char *raised[] = {
        "error('boom\\27[2J\\r  all checks PASSED\\n')\n",
        "local ok = true\nassert(not ok, 'x\\27[1A')\n",
        "return recipe 'a' { rule '*' { weights = int8 { per = '\\27[2Jchannel' } } }\n",
        "local t = {}\nt[1] = 'lm_head'\nt[2] = 'lm_head'\n"
        "return recipe 'a' { ignore = t, rule '*' { weights = int8 } }\n",
    };
    for (size_t i = 0; i < sizeof raised / sizeof raised[0]; i++) {
        KilnRecipe *r;
        KilnDiag d;
        assert_int_equal(load_n(raised[i], strlen(raised[i]), &r, &d), KILN_EINPUT);
        for (const char *p = d.msg; *p; p++)
            if ((unsigned char)*p < 0x20 || *p == 0x7f) {
                fprintf(stderr, "raw control character in: %s\n", d.msg);
                fail();
            }
        if (i < 3)
            assert_non_null(strstr(d.msg, "\\x1b["));
    }
    KilnRecipe *r;
    KilnDiag d;
    assert_int_equal(load_n(raised[0], strlen(raised[0]), &r, &d), KILN_EINPUT);
    assert_string_equal(d.msg, "boom\\x1b[2J\\x0d  all checks PASSED\\x0a");
}

/* The instruction budget running out while a lua: pattern is checked is the budget's
 * error, not a bad pattern; whichever call the budget ends in. */
static void test_budget_inside_lua_pattern(void **state)
{
    (void)state;
    /* calls count 100 instructions and the hook 1000 at a time: shift the loop's calls by
     * one call at a time so that the budget ends in each of them in turn */
    for (int pad = 0; pad < 12; pad++) {
        char src[400];
        snprintf(src, sizeof src,
                 "for i = 1, %d do local _ = type(i) end\n"
                 "local i = 0\n"
                 "while true do\n"
                 "  i = i + 1\n"
                 "  pcall(function() return rule ('lua:^x' .. i) { weights = int8 } end)\n"
                 "end\n", pad);
        KilnRecipe *r;
        KilnDiag d;
        assert_int_equal(load_n(src, strlen(src), &r, &d), KILN_EINPUT);
        if (!strstr(d.msg, "Lua instructions") || strstr(d.msg, "pattern"))
            fprintf(stderr, "pad %d: %s\n", pad, d.msg);
        assert_non_null(strstr(d.msg, "Lua instructions"));
        assert_null(strstr(d.msg, "bad Lua pattern"));
    }
}

/* A glob longer than 511 bytes gets an example it matches (a fixed buffer once cut it);
 * patterns longer than the 1000-byte layer name limit are refused with the limit. */
static void test_long_globs(void **state)
{
    (void)state;
    Text t = {0};
    add(&t, "return recipe 'long' {\n  rule '");
    for (int i = 0; i < 90; i++)
        add(&t, "block%d.", i);
    add(&t, "*' { weights = int8 },\n  rule '*.");
    for (int i = 0; i < 90; i++)
        add(&t, "block%d.", i);
    add(&t, "end?' { weights = int4 },\n}\n");
    KilnRecipe *r = load_ok(t.s);
    for (int i = 0; i < 2; i++) {
        const char *ex = kiln_recipe_rule_example(r, i);
        assert_true(strlen(ex) > 600);
        assert_int_equal(kiln_recipe_match(r, ex), i);
    }
    kiln_recipe_free(r);
    free(t.s);

    char big[1200];
    snprintf(big, sizeof big, "return recipe 'x' {\n  rule '%01001d' { weights = int8 } }\n", 0);
    expect_error(big, strlen(big), 2, "is 1001 bytes; the limit is 1000");
    snprintf(big, sizeof big, "return recipe 'x' {\n  ignore = { 'a',\n 'lua:%01001d' },\n"
             "  rule '*' { weights = int8 } }\n", 0);
    expect_error(big, strlen(big), 2, "is 1005 bytes; the limit is 1000");
}

/* The CPU kernels pack int4 8 k to a word: lowering for a CPU target refuses K and
 * groups that are not whole words, naming the rule's file and line (the layout pass
 * named only the layer). The interpreter and the CUDA kernels (which pad K) lower them;
 * a ragged last group of whole words lowers everywhere (K = 576 at group 128: SmolLM2). */
static void test_int4_group_located(void **state)
{
    (void)state;
    const char *src = "return recipe 'g' {\n"
                      "  rule 'ch' { weights = int4 { per = 'channel' } },\n"
                      "  rule '*' { weights = int4 { group = 128 } },\n"
                      "}\n";
    KilnRecipe *r = load_ok(src);
    const char *targets[] = {"cpu", "avx2", "avx512", NULL, "interp", "sm_80", "sm_90"};
    for (int i = 0; i < 7; i++) {
        bool cpu = i < 4;
        KilnModule *m = kiln_module_new();
        KilnFunc *f = NULL;
        KilnDiag d = {0};
        int rc = kiln_lower_layer(r, "model.layers.0.mlp", 1, 64, 100, targets[i], m, &f, &d);
        assert_int_equal(rc, cpu ? KILN_EINPUT : 0);
        if (cpu) {
            assert_null(f);
            assert_int_equal(m->nfuncs, 0);
            assert_string_equal(d.file, "scale.lua");
            assert_int_equal(d.line, 3);
            assert_non_null(strstr(d.msg, "multiples of 8 (K = 100, group = 128, ragged last group of 100)"));
            memset(&d, 0, sizeof d);
            assert_int_equal(kiln_lower_layer(r, "ch", 1, 64, 100, targets[i], m, &f, &d), KILN_EINPUT);
            assert_int_equal(d.line, 2);
            assert_non_null(strstr(d.msg, "K must be a multiple of 8 (K = 100)"));
        }
        /* whole words: K = 576 at group 128 (a ragged 64), K = 104 at group 128 */
        assert_int_equal(kiln_lower_layer(r, "a", 1, 64, 576, targets[i], m, &f, &d), 0);
        assert_int_equal(kiln_lower_layer(r, "b", 1, 64, 104, targets[i], m, &f, &d), 0);
        assert_int_equal(kiln_lower_layer(r, "ch", 1, 64, 104, targets[i], m, &f, &d), 0);
        kiln_module_free(m);
    }
    kiln_recipe_free(r);
}

/* Each tests/recipes_scale/X.lua fails at the line and with the text X.expected says
 * ("LINE: substring"), within the time bound, with no raw control character. */
static void test_regression_inputs(void **state)
{
    (void)state;
    const char *dir = SRC "/tests/recipes_scale";
    char **names;
    int n = tu_list_dir(dir, ".lua", &names), failures = 0;
    assert_true(n >= 6);
    for (int i = 0; i < n; i++) {
        char path[1024], epath[1024];
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        snprintf(epath, sizeof epath, "%.*s.expected", (int)(strlen(path) - 4), path);
        char *exp = tu_read_file(epath, NULL);
        assert_non_null(exp);
        exp[strcspn(exp, "\n")] = 0;
        const char *sub = strchr(exp, ':');
        assert_non_null(sub);
        KilnRecipe *r = NULL;
        KilnDiag d = {0};
        double t0 = now_s();
        int rc = kiln_recipe_load(path, &r, &d);
        double dt = now_s() - t0;
        bool raw = false;
        for (const char *p = d.msg; *p; p++)
            raw |= (unsigned char)*p < 0x20 || *p == 0x7f;
        if (rc != KILN_EINPUT || r || d.line != atoi(exp) || !strstr(d.msg, sub + 2) || raw || dt > BOUND_S) {
            fprintf(stderr, "%s: expected %s\n    got rc %d line %d: %s (%.2f s)\n", names[i], exp, rc,
                    d.line, d.msg, dt);
            failures++;
        }
        kiln_recipe_free(r);
        free(exp);
    }
    tu_free_list(names, n);
    assert_int_equal(failures, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_big_ignore_list),
        cmocka_unit_test(test_method_rules_in_big_file),
        cmocka_unit_test(test_key_lines_across_includes),
        cmocka_unit_test(test_many_rules_examples),
        cmocka_unit_test(test_index_agrees_with_walk),
        cmocka_unit_test(test_nul_and_control_characters),
        cmocka_unit_test(test_budget_inside_lua_pattern),
        cmocka_unit_test(test_long_globs),
        cmocka_unit_test(test_int4_group_located),
        cmocka_unit_test(test_regression_inputs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
