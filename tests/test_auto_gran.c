/* tests/test_auto_gran.c — per = "auto" end to end through the `kiln` command: the
 * choice differs by target and is said in `why` (`kiln ir`), and a recipe with auto
 * weights and activations runs on the host's kernels and matches the interpreter
 * (`kiln run --check`), with GPTQ rounding to the granularity the pass chose. */
#include "cli/cli_util.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#define MAXARGS 16

static const char RECIPE[] =
    "return recipe \"auto\" {\n"
    "  rule \"*.mlp.*\" { weights = int4 { per = \"auto\" },\n"
    "                   activations = int8 { per = \"auto\", dynamic = true } },\n"
    "  rule \"*.self_attn.*\" { weights = int4 { per = \"auto\" }, activations = f16 },\n"
    "  rule \"*\" { weights = int4 { per = \"auto\" }, method = \"gptq\" },\n"
    "}\n";

/* `kiln ARGS...` (NULL-terminated) with its own cache directory */
static void kiln(CliResult *r, const char *cache, ...)
{
    const char *argv[MAXARGS] = {KILN_BIN};
    int n = 1;
    va_list ap;
    va_start(ap, cache);
    for (const char *s; n < MAXARGS - 1 && (s = va_arg(ap, const char *));)
        argv[n++] = s;
    va_end(ap);
    argv[n] = NULL;
    char env0[1200];
    snprintf(env0, sizeof env0, "KILN_CACHE_DIR=%s", cache);
    const char *env[] = {env0, NULL};
    assert_int_equal(cli_run_env(argv, env, r), 0);
}

static char *write_recipe(char *dir, char *path, size_t n)
{
    snprintf(path, n, "%s/auto.lua", dir);
    assert_int_equal(cli_write_file(path, RECIPE, sizeof RECIPE - 1), 0);
    return path;
}

/* int4 auto with int8 activations at K = 4096: groups of 32 on avx2 (its measured rescale
 * costs about the scale bytes), 128 on avx512 (VNNI also stores a weight sum per group
 * and rescales twice the k), amx and sm_90 (tiles / mma fragments rescaled per group) */
static void test_ir_per_target(void **state)
{
    (void)state;
    char *dir = cli_mkdtemp("auto");
    char path[1024];
    write_recipe(dir, path, sizeof path);
    static const struct {
        const char *target, *want;
    } cases[] = {
        {"avx2", "weight scales auto -> group=32 on avx2"},
        {"avx512", "weight scales auto -> group=128 on avx512"},
        {"amx", "weight scales auto -> group=128 on amx"},
        {"sm_90", "weight scales auto -> group=128 on sm_90"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        CliResult r;
        kiln(&r, dir, "ir", path, "--layer", "model.layers.0.mlp.up_proj", "--shape",
             "64,64,4096", "--target", cases[i].target, NULL);
        if (r.code != 0 || !strstr(r.out, cases[i].want) ||
            !strstr(r.out, "act scales auto -> token on"))
            cli_dump(cases[i].want, &r);
        assert_int_equal(r.code, 0);
        assert_non_null(strstr(r.out, cases[i].want));
        assert_non_null(strstr(r.out, "act scales auto -> token on"));
        cli_result_free(&r);
    }
    cli_rm_rf(dir);
    free(dir);
}

/* every rule of the recipe on the host's kernels, checked against the interpreter on
 * the same resolved IR; the GPTQ rule (K = 1024, under the method's limit) rounds on
 * the grid of the group the pass chose, or the check would fail */
static void test_run_check_host(void **state)
{
    (void)state;
    if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma"))
        skip();
    char *dir = cli_mkdtemp("auto");
    char path[1024];
    write_recipe(dir, path, sizeof path);
    CliResult r;
    kiln(&r, dir, "run", path, "--shape", "8,64,1024", "--target", "cpu", "--check", NULL);
    bool ok = r.code == 0 && !strstr(r.out, "FAIL") &&
              cli_count(r.out, "kernel vs reference interpreter: PASS") == 3 &&
              strstr(r.out, "method gptq") && !strstr(r.out, "NOT applied");
    if (!ok)
        cli_dump("kiln run auto.lua --shape 8,64,1024 --target cpu --check", &r);
    assert_true(ok);
    cli_result_free(&r);
    cli_rm_rf(dir);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ir_per_target),
        cmocka_unit_test(test_run_check_host),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
