/* tests/test_bench_cli.c — `kiln bench` end to end: the JSON it prints has every field
 * with values that make sense for the run (times, rates, the roofline fraction against
 * the peak of the kernel's instruction and width, the probes this host can run, the
 * CPU, the eviction size, cold vs warm compile) and bad input is refused with exit 2.
 * Expectations come from what the host can do, never constants. Probes are cut to
 * 50 ms so the whole test stays well under 20 s. */
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
    return kiln_json_num(v);
}

static const KilnJson *field(const KilnJson *o, const char *key, KilnJsonKind kind)
{
    const KilnJson *v = kiln_json_get(o, key);
    if (!v || v->kind != kind) {
        fprintf(stderr, "JSON field '%s' missing or of the wrong kind\n", key);
        fail();
    }
    return v;
}

/* What one run should report, from the recipe and the ISA level of the target. */
typedef struct Expect {
    const char *recipe;
    char kernel[48];       /* the layout, or its prefix when `prefix` */
    bool prefix;
    const char *peak;      /* the probe family the kernel is rated against */
    const char *peak_insn; /* and its instruction at the kernel's width */
    const char *evict_env; /* KILN_BENCH_EVICT_BYTES for the run, or NULL */
    bool cold;
} Expect;

/* W8A8 dynamic: avx2 has no int8 dot product (vpmaddwd on int16), avx512 has VNNI
 * (vpdpbusd), and amx plans the tile layout for every M (kiln_layer_create), which at
 * M = 4 (the int8 break-even, KILN_AMX_MIN_M_INT8) runs on tiles. */
static Expect expect_w8a8(const char *level)
{
    bool v4 = kiln_level_is_v4(level), amx = strcmp(level, "amx") == 0;
    Expect e = {.recipe = KILN_SOURCE_DIR "/recipes/w8a8-int8-dynamic.lua",
                .peak = amx ? "tdpbusd" : v4 ? "vpdpbusd" : "vpmaddwd",
                .peak_insn = amx ? "tdpbusd tiles (AMX)" : v4 ? "vpdpbusd zmm" : "vpmaddwd+vpaddd ymm"};
    snprintf(e.kernel, sizeof e.kernel, "%s-%s", level,
             amx ? "u8s8-tile" : v4 ? "u8s8-vnni" : "i16-madd");
    return e;
}

/* W4A16 decodes the weights to f32 and runs FMA at the level's width; run cold with
 * the eviction size given through the environment, as bench/run_suite.sh does. */
static Expect expect_w4a16(const char *level)
{
    bool v4 = kiln_level_is_v4(level);
    Expect e = {.recipe = KILN_SOURCE_DIR "/recipes/w4a16-g128-asym.lua", .prefix = true,
                .peak = "fma", .peak_insn = v4 ? "vfmadd231ps zmm" : "vfmadd231ps ymm",
                .evict_env = "KILN_BENCH_EVICT_BYTES=67108864", .cold = true};
    snprintf(e.kernel, sizeof e.kernel, "%s-f32-fma", level);
    return e;
}

/* The host's model and the subnormal trait, as ir/target.h sees them. */
static void check_cpu(const KilnJson *j)
{
    const KilnJson *c = field(j, "cpu", KILN_JSON_OBJECT);
    const char *model = field(c, "model", KILN_JSON_STRING)->str;
    assert_true(strlen(model) > 0);
    assert_string_equal(model, kiln_host_cpu()->model);
    bool free_ = (kiln_host_cpu()->tune & KILN_TUNE_SUBNORMAL_FREE) != 0;
    assert_int_equal(field(c, "subnormal_fma_free", KILN_JSON_BOOL)->b, free_);
    assert_true(num(c, "fma_ns") > 0);
    assert_true(num(c, "fma_subnormal_ns") > 0);
}

/* The eviction: the environment's size when given, else the rule (docs/bench.md):
 * at least 256 MiB and 4x the last-level cache unless MemAvailable/4 capped it. */
static void check_eviction(const KilnJson *j, const Expect *e)
{
    const KilnJson *ev = field(j, "eviction", KILN_JSON_OBJECT);
    double bytes = num(ev, "bytes");
    const char *source = field(ev, "source", KILN_JSON_STRING)->str;
    assert_true(bytes > 0);
    if (e->evict_env) {
        assert_true(bytes == 67108864.0);
        assert_string_equal(source, "KILN_BENCH_EVICT_BYTES");
        return;
    }
    double llc = kiln_json_num(field(ev, "llc_bytes", KILN_JSON_NUMBER));
    if (!strstr(source, "capped"))
        assert_true(bytes >= 256.0 * 1048576 && bytes >= 4 * llc - 4096);
}

/* Every probe the host can run is measured, the others are null; AMX is reported
 * (null on a CPU without AMX-TILE) but not probed yet. */
static void check_limits(const KilnJson *j)
{
    const KilnJson *lim = field(j, "limits", KILN_JSON_OBJECT);
    unsigned isa = kiln_host_isa();
    assert_true(num(lim, "read_gbs_1t") > 0.1);
    assert_true(strlen(field(lim, "read_loop", KILN_JSON_STRING)->str) > 0);
    assert_true(num(lim, "fma_gflops") > 1);
    assert_true(num(lim, "madd_gops") > 1);
    assert_true(num(lim, "maddubs_gops") > 1);
    struct { const char *key; bool present; } opt[] = {
        {"fma_zmm_gflops", isa & KILN_ISA_AVX512},
        {"vnni_gops", (isa & KILN_ISA_VNNI) && (isa & KILN_ISA_AVX512)},
        {"bf16_gflops", (isa & KILN_ISA_BF16) && (isa & KILN_ISA_AVX512)},
    };
    for (size_t i = 0; i < sizeof opt / sizeof opt[0]; i++) {
        if (opt[i].present)
            assert_true(num(lim, opt[i].key) > 1);
        else
            field(lim, opt[i].key, KILN_JSON_NULL);
    }
    __builtin_cpu_init();
    if (__builtin_cpu_supports("amx-tile"))
        assert_true(field(field(lim, "amx", KILN_JSON_OBJECT), "tile", KILN_JSON_BOOL)->b);
    else
        field(lim, "amx", KILN_JSON_NULL);
}

/* The kernel, its sizes and rates, the roofline and the peak it is rated against. */
static void check_run(const KilnJson *j, const Expect *e)
{
    const char *kernel = field(j, "kernel", KILN_JSON_STRING)->str;
    if (e->prefix)
        assert_true(strncmp(kernel, e->kernel, strlen(e->kernel)) == 0);
    else
        assert_string_equal(kernel, e->kernel);
    assert_int_equal(kiln_json_get(j, "M")->i, 4);
    assert_int_equal(kiln_json_get(j, "N")->i, 64);
    assert_int_equal(kiln_json_get(j, "K")->i, 256);
    assert_int_equal(kiln_json_get(j, "repeat")->i, 3);
    assert_int_equal(kiln_json_get(j, "threads")->i, 1);
    assert_int_equal(field(j, "cold", KILN_JSON_BOOL)->b, e->cold);
    double med = num(j, "median_ms"), mn = num(j, "min_ms"), mx = num(j, "max_ms");
    assert_true(med > 0 && mn <= med && med <= mx);
    /* Op count: 2*M*N*K = 131072; bytes: packed weights + f32 x (4*4*256) + y. */
    assert_true(num(j, "ops") == 131072.0);
    double wb = num(j, "weight_bytes");
    assert_true(wb >= 64 * 256 / 2); /* int4 codes at least */
    double y = num(j, "bytes") - wb - 4 * 4 * 256;
    assert_true(y == 4 * 4 * 64 || y == 2 * 4 * 64); /* f32 or 16-bit output */
    double gf = num(j, "gflops");
    assert_true(gf > 0);
    assert_true(fabs(gf - 131072.0 / (med * 1e6)) <= 1e-6 * gf);
    assert_true(num(j, "gbs") > 0);
    double frac = num(j, "limit_fraction");
    assert_true(frac > 0 && frac < 10);
    assert_string_equal(field(j, "peak", KILN_JSON_STRING)->str, e->peak);
    assert_string_equal(field(j, "peak_insn", KILN_JSON_STRING)->str, e->peak_insn);
    /* the peak used is the one the limits report for that instruction */
    const KilnJson *lim = field(j, "limits", KILN_JSON_OBJECT);
    const char *key = strstr(e->peak_insn, "vfmadd231ps zmm") ? "fma_zmm_gflops"
                      : strstr(e->peak_insn, "vfmadd231ps")   ? "fma_gflops"
                      : strstr(e->peak_insn, "vpdpbusd")      ? "vnni_gops"
                      : strstr(e->peak_insn, "tdpbusd")       ? "int8_gops" /* in limits.amx */
                                                              : "madd_gops";
    if (strstr(e->peak_insn, "tdpbusd"))
        lim = field(lim, "amx", KILN_JSON_OBJECT);
    assert_true(num(j, "peak_gops") == num(lim, key));
    const char *bound = field(j, "bound", KILN_JSON_STRING)->str;
    assert_true(!strcmp(bound, "memory") || !strcmp(bound, "compute"));
}

static void check_compile(const KilnJson *j)
{
    const KilnJson *c = field(j, "compile", KILN_JSON_OBJECT);
    assert_false(kiln_json_get(c, "cold_cache_hit")->b); /* a fresh temp cache dir */
    assert_true(kiln_json_get(c, "warm_cache_hit")->b);
    assert_true(num(c, "cold_ms") > num(c, "warm_ms"));
    const KilnJson *p = field(j, "prepack", KILN_JSON_OBJECT);
    assert_true(num(p, "f32_in_gbs") > 0);
}

/* One run of kiln bench on target tname; the fields are checked against what the
 * host's (or the named) ISA level gets. */
static void bench_json(const char *tname, Expect (*expect)(const char *level))
{
    KilnTarget t;
    KilnDiag td = {0};
    assert_int_equal(kiln_target_lookup(tname, &t, &td), 0);
    if (!kiln_target_host_runs(&t)) {
        print_message("target %s: not run, this CPU lacks its ISA (%s)\n", tname, t.level);
        return;
    }
    Expect e = expect(t.level);
    print_message("target %s (%s): expecting kernel %s%s rated against %s\n", tname, t.name,
                  e.kernel, e.prefix ? "*" : "", e.peak_insn);
    const char *argv[] = {KILN_BIN, "bench", e.recipe, "--shape", "4,64,256", "--repeat", "3",
                          "--warmup", "1", "--threads", "1", "--probe-ms", "50", "--json",
                          "--target", tname, e.cold ? "--cold" : NULL, NULL};
    const char *env[] = {e.evict_env, NULL};
    CliResult r;
    assert_int_equal(cli_run_env(argv, env, &r), 0);
    if (r.code != 0)
        cli_dump("kiln bench --json", &r);
    assert_int_equal(r.code, 0);
    KilnJson *j = NULL;
    KilnDiag d = {0};
    assert_int_equal(kiln_json_parse(r.out, r.out_len, "stdout", &j, &d), 0);
    assert_int_equal(j->kind, KILN_JSON_OBJECT);
    check_run(j, &e);
    check_cpu(j);
    check_eviction(j, &e);
    check_limits(j);
    check_compile(j);
    kiln_json_free(j);
    cli_result_free(&r);
}

/* The host's own target, and every CPU level the host can execute: W8A8 (the integer
 * dot products) warm, W4A16 (FMA at the level's width) cold. */
static void test_json_fields(void **state)
{
    (void)state;
    const char *targets[] = {"cpu", "avx2", "avx512vnni", "avx512", "amx"};
    for (int i = 0; i < 5; i++) {
        bench_json(targets[i], expect_w8a8);
        bench_json(targets[i], expect_w4a16);
    }
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
