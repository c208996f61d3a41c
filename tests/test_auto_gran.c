/* tests/test_auto_gran.c — per = "auto": the granularity model's numbers (ir/gran_cost.c),
 * and end to end through the `kiln` command: the choice differs by target and is said
 * in `why` (`kiln ir`), and a recipe with auto weights and activations runs on the
 * host's kernels and matches the interpreter (`kiln run --check`), with GPTQ rounding
 * to the granularity the pass chose. */
#include "cli/cli_util.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "ir/gran_cost.h"
#include "ir/target.h"

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
 * costs about the scale bytes), 64 on avx512 (VNNI also stores a weight sum per group;
 * its measured rescale, 6 k a group, is below the bytes), 128 on amx and sm_90 (tiles /
 * mma fragments rescaled per group) */
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
        {"avx512", "weight scales auto -> group=64 on avx512"},
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

static KilnTarget target(const char *name)
{
    KilnTarget t;
    KilnDiag d = {0};
    assert_int_equal(kiln_target_lookup(name, &t, &d), 0);
    return t;
}

/* ir/gran_cost.c directly: the unit of a target without BF16, sm_80's fp8 rewrite, the
 * scale bytes of a candidate, the int4 error when no group divides K, activations */
static void test_model(void **state)
{
    (void)state;
    const KilnGran AU = KILN_GRAN_AUTO;
    /* an AVX-512 level with VNNI and without BF16 (avx512vnni) is modelled by its bits */
    KilnTarget vnni = target("avx512");
    vnni.isa &= ~(unsigned)KILN_ISA_BF16;
    assert_int_equal(kiln_gran_unit(&vnni, KILN_QF_INT8, KILN_F32), KILN_GU_VNNI);
    assert_int_equal(kiln_gran_unit(&vnni, KILN_QF_NONE, KILN_BF16), KILN_GU_FMA);
    KilnTarget sm80 = target("sm_80"); /* fp8 acts there run f16 weight-only */
    assert_int_equal(kiln_gran_unit(&sm80, KILN_QF_FP8_E4M3, KILN_F32), KILN_GU_GPU_DEQUANT);
    /* the numbers: symmetric int4 group=128 on f32 FMA, K=4096: 4 bytes of scale per 64
     * bytes of codes, less channel's 4 per 2048 */
    KilnQuantSpec w = {.fmt = KILN_QF_INT4, .symmetric = true, .gran = AU};
    KilnGranCand c[4];
    assert_int_equal(kiln_gran_candidates(KILN_GU_FMA, &w, KILN_QF_NONE, 4096, c), 4);
    assert_int_equal(c[1].group, 128);
    assert_float_equal(c[1].store, 100.0 * (4.0 / 64 - 4.0 / 2048), 1e-9);
    assert_float_equal(c[3].acc, 0.0, 1e-12); /* group=32: the most accurate measured */
    /* no group divides K = 100: int4 auto is an error, int8 auto is per channel */
    assert_int_equal(kiln_gran_candidates(KILN_GU_FMA, &w, KILN_QF_NONE, 100, c), 1);
    assert_int_equal(kiln_gran_resolve_weight(&vnni, KILN_QF_NONE, KILN_F16, &w, 100, NULL, 0), -1);
    w.fmt = KILN_QF_INT8;
    assert_int_equal(kiln_gran_resolve_weight(&vnni, KILN_QF_NONE, KILN_F16, &w, 100, NULL, 0), 0);
    assert_int_equal(w.gran, KILN_GRAN_CHANNEL);
    /* activations: dynamic -> token, static -> tensor */
    KilnQuantSpec a = {.fmt = KILN_QF_INT8, .symmetric = true, .gran = AU, .dynamic = true};
    char why[256];
    kiln_gran_resolve_act(&sm80, &a, why, sizeof why);
    assert_int_equal(a.gran, KILN_GRAN_TOKEN);
    assert_non_null(strstr(why, "act scales auto -> token on sm_80"));
    a.gran = AU;
    a.dynamic = false;
    kiln_gran_resolve_act(&sm80, &a, NULL, 0);
    assert_int_equal(a.gran, KILN_GRAN_TENSOR);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_model),
        cmocka_unit_test(test_ir_per_target),
        cmocka_unit_test(test_run_check_host),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
