/* tests/test_bench_cli.c — `kiln bench` end to end: the JSON it prints has every field
 * with values that make sense for the run (times, rates, the roofline fraction, the
 * probes, cold vs warm compile) and bad input is refused with exit 2. Probes are cut
 * to 50 ms so the whole test stays well under 20 s. */
#include "cli/cli_util.h"

#include <math.h>

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "ir/target.h"
#include "runtime/runtime.h"

#define RECIPE KILN_SOURCE_DIR "/recipes/w8a8-int8-dynamic.lua"

static double num(const KilnJson *o, const char *key)
{
    const KilnJson *v = kiln_json_get(o, key);
    if (!v || v->kind != KILN_JSON_NUMBER) {
        fprintf(stderr, "JSON field '%s' missing or not a number\n", key);
        fail();
    }
    return v->num;
}

/* W8A8 dynamic's kernel and the probe it is rated against, per ISA level: avx2 has
 * no int8 dot product (vpmaddwd on int16), avx512 has VNNI (vpdpbusd). */
static void expected_kernel(const char *level, const char **kernel, const char **peak)
{
    bool v4 = strcmp(level, "avx512") == 0;
    *kernel = v4 ? "avx512-u8s8-vnni" : "avx2-i16-madd";
    *peak = v4 ? "vpdpbusd" : "vpmaddwd";
}

/* One run of kiln bench on target tname; the fields are checked against the
 * kernel the host's (or the named) ISA level gets. */
static void bench_json(const char *tname)
{
    KilnTarget t;
    KilnDiag td = {0};
    assert_int_equal(kiln_target_lookup(tname, &t, &td), 0);
    if (!kiln_target_host_runs(&t)) {
        print_message("target %s: not run, this CPU lacks its ISA (%s)\n", tname, t.level);
        return;
    }
    const char *kernel, *peak;
    expected_kernel(t.level, &kernel, &peak);
    print_message("target %s (%s): expecting kernel %s rated against %s\n", tname, t.name,
                  kernel, peak);
    const char *argv[] = {KILN_BIN, "bench", RECIPE, "--shape", "4,64,256", "--repeat", "3",
                          "--warmup", "1", "--threads", "1", "--probe-ms", "50", "--json",
                          "--target", tname, NULL};
    CliResult r;
    assert_int_equal(cli_run_env(argv, NULL, &r), 0);
    if (r.code != 0)
        cli_dump("kiln bench --json", &r);
    assert_int_equal(r.code, 0);
    KilnJson *j = NULL;
    KilnDiag d = {0};
    assert_int_equal(kiln_json_parse(r.out, r.out_len, "stdout", &j, &d), 0);
    assert_int_equal(j->kind, KILN_JSON_OBJECT);
    assert_string_equal(kiln_json_get(j, "kernel")->str, kernel);
    assert_int_equal(kiln_json_get(j, "M")->i, 4);
    assert_int_equal(kiln_json_get(j, "N")->i, 64);
    assert_int_equal(kiln_json_get(j, "K")->i, 256);
    assert_int_equal(kiln_json_get(j, "repeat")->i, 3);
    assert_int_equal(kiln_json_get(j, "threads")->i, 1);

    double med = num(j, "median_ms"), mn = num(j, "min_ms"), mx = num(j, "max_ms");
    assert_true(med > 0 && mn <= med && med <= mx);
    /* Op count: 2*M*N*K = 131072; bytes: packed weights + f32 x (4*4*256) + f32 y. */
    assert_true(num(j, "ops") == 131072.0);
    double wb = num(j, "weight_bytes");
    assert_true(wb >= 64 * 256); /* int8 codes at least */
    assert_true(num(j, "bytes") == wb + 4 * 4 * 256 + 4 * 4 * 64);
    double gf = num(j, "gflops");
    assert_true(gf > 0);
    assert_true(fabs(gf - 131072.0 / (med * 1e6)) <= 1e-6 * gf);
    assert_true(num(j, "gbs") > 0);
    double frac = num(j, "limit_fraction");
    assert_true(frac > 0 && frac < 10);
    assert_string_equal(kiln_json_get(j, "peak")->str, peak);
    const char *bound = kiln_json_get(j, "bound")->str;
    assert_true(!strcmp(bound, "memory") || !strcmp(bound, "compute"));

    const KilnJson *lim = kiln_json_get(j, "limits");
    assert_non_null(lim);
    assert_true(num(lim, "read_gbs_1t") > 0.1);
    assert_true(num(lim, "fma_gflops") > 1);
    assert_true(num(lim, "madd_gops") > 1);
    /* The VNNI / BF16 peaks are either measured or null ("n/a on this CPU"). */
    const KilnJson *vn = kiln_json_get(lim, "vnni_gops");
    assert_non_null(vn);
    assert_true(vn->kind == KILN_JSON_NULL || vn->num > 0);

    const KilnJson *c = kiln_json_get(j, "compile");
    assert_non_null(c);
    assert_false(kiln_json_get(c, "cold_cache_hit")->b); /* a fresh temp cache dir */
    assert_true(kiln_json_get(c, "warm_cache_hit")->b);
    assert_true(num(c, "cold_ms") > num(c, "warm_ms"));
    const KilnJson *p = kiln_json_get(j, "prepack");
    assert_true(num(p, "f32_in_gbs") > 0);
    kiln_json_free(j);
    cli_result_free(&r);
}

/* The host's own target, and every CPU level the host can execute. */
static void test_json_fields(void **state)
{
    (void)state;
    bench_json("cpu");
    bench_json("avx2");
    bench_json("avx512");
}

static void expect_input_error(const char *const *argv, const char *msg)
{
    CliResult r;
    assert_int_equal(cli_run_env(argv, NULL, &r), 0);
    if (r.code != 2 || !strstr(r.err, msg))
        cli_dump("kiln bench (bad input)", &r);
    assert_int_equal(r.code, 2);
    assert_non_null(strstr(r.err, msg));
    assert_int_equal(r.out_len, 0);
    cli_result_free(&r);
}

static void test_bad_input(void **state)
{
    (void)state;
    const char *bad_shape[] = {KILN_BIN, "bench", RECIPE, "--shape", "4,0,256", NULL};
    expect_input_error(bad_shape, "bad --shape");
    const char *no_shape[] = {KILN_BIN, "bench", RECIPE, NULL};
    expect_input_error(no_shape, "usage: kiln bench");
    const char *bad_rep[] = {KILN_BIN, "bench", RECIPE, "--shape", "4,64,256", "--repeat", "x",
                             NULL};
    expect_input_error(bad_rep, "bad --repeat");
    const char *bad_recipe[] = {KILN_BIN, "bench", KILN_SOURCE_DIR "/recipes/none.lua",
                                "--shape", "4,64,256", NULL};
    expect_input_error(bad_recipe, "none.lua");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_json_fields),
        cmocka_unit_test(test_bad_input),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
