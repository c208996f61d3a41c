/* tests/test_api_example.c — docs/examples/api_example.c (built as written, by the
 * api_example CMake target) runs, prints what docs/api.md says it prints, and its
 * quantized two-layer result stays close to plain f32 arithmetic; docs/api.md quotes it
 * verbatim. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

static char base[64];

#define assert_contains(hay, needle)                                                     \
    do {                                                                                 \
        if (!strstr((hay), (needle)))                                                    \
            fail_msg("expected \"%s\" in:\n%s", (needle), (hay));                        \
    } while (0)

/* Runs the example with a recipe; returns its exit status, output (stdout + stderr) in out. */
static int run_example(const char *recipe, char *out, size_t n)
{
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "cd '%s' && '%s' '%s' 2>&1", base, KILN_API_EXAMPLE, recipe);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t len = fread(out, 1, n - 1, p);
    out[len] = 0;
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static int setup(void **state)
{
    snprintf(base, sizeof base, "/tmp/kiln-api-XXXXXX");
    if (!mkdtemp(base))
        return -1;
    char cache[128];
    snprintf(cache, sizeof cache, "%s/cache", base);
    setenv("KILN_CACHE_DIR", cache, 1);
    return 0;
}

static int teardown(void **state)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", base);
    return system(cmd) == 0 ? 0 : -1;
}

static double rel_error(const char *out)
{
    const char *at = strstr(out, "relative error vs f32: ");
    if (!at)
        fail_msg("no error line in:\n%s", out);
    return atof(at + strlen("relative error vs f32: "));
}

/* Two recipes: an integer W4A8 kernel and W8A8; the error bounds are loose (int4
 * weights on random data lose ~10%, int8 ~1%) but catch a wrong kernel or layout. */
static void test_example_runs(void **state)
{
    static const struct {
        const char *recipe;
        double max_err;
    } cases[] = {{"w4a8", 0.2}, {"w8a8-int8-dynamic", 0.03}, {"w4a16-g128-asym", 0.2}};
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char recipe[1024], out[8192];
        snprintf(recipe, sizeof recipe, "%s/recipes/%s.lua", KILN_SOURCE_DIR, cases[i].recipe);
        int rc = run_example(recipe, out, sizeof out);
        if (rc)
            fail_msg("api_example %s: exit %d:\n%s", cases[i].recipe, rc, out);
        assert_contains(out, "target: ");
        assert_contains(out, "layer model.layers.0.mlp.up_proj: kernel ");
        assert_contains(out, "layer model.layers.0.mlp.down_proj: kernel ");
        assert_contains(out, "y[0, 0..3] = ");
        assert_contains(out, "\ndone\n");
        double e = rel_error(out);
        print_message("  %s: relative error vs f32 %.4f (bound %.2f)\n", cases[i].recipe, e,
                      cases[i].max_err);
        assert_true(e > 0 && e < cases[i].max_err);
    }
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    char *s = calloc(1, 1 << 20);
    size_t n = fread(s, 1, (1 << 20) - 1, f);
    fclose(f);
    s[n] = 0;
    return s;
}

/* docs/api.md shows the example in full: it must be the file, byte for byte. */
static void test_doc_shows_the_example(void **state)
{
    char *md = slurp(KILN_SOURCE_DIR "/docs/api.md");
    char *c = slurp(KILN_SOURCE_DIR "/docs/examples/api_example.c");
    if (!strstr(md, c))
        fail_msg("docs/api.md does not contain docs/examples/api_example.c verbatim; copy it");
    free(md);
    free(c);
}

static void test_example_reports_errors(void **state)
{
    char out[8192];
    assert_int_equal(run_example("/nonexistent/recipe.lua", out, sizeof out), 1);
    assert_contains(out, "kiln_recipe_open: ");
    assert_contains(out, "/nonexistent/recipe.lua");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_example_runs),
        cmocka_unit_test(test_example_reports_errors),
        cmocka_unit_test(test_doc_shows_the_example),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
