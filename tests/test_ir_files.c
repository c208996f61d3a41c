/* tests/test_ir_files.c — IR text files as the commands' input (docs/ir.md, "IR files as
 * input"): what `kiln ir` prints reads back through `kiln ir`, `run --check`, `bench` and
 * `aot` with the same kernels; hand-written (lowered-only) IR gets its layouts and runs;
 * IR planned for another target, bad text and files that are not regular are refused. */
#include "cli/cli_util.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#define SRC KILN_SOURCE_DIR
#define MAXARGS 24

static char *tmp; /* this test's directory */

/* `kiln ARGS...` (NULL-terminated) with the kernel cache in tmp. */
static void kiln(CliResult *r, ...)
{
    const char *argv[MAXARGS] = {KILN_BIN};
    int n = 1;
    va_list ap;
    va_start(ap, r);
    for (const char *s; n < MAXARGS - 1 && (s = va_arg(ap, const char *));)
        argv[n++] = s;
    va_end(ap);
    argv[n] = NULL;
    char env0[1200];
    snprintf(env0, sizeof env0, "KILN_CACHE_DIR=%s/cache", tmp);
    const char *env[] = {env0, NULL};
    assert_int_equal(cli_run_env(argv, env, r), 0);
    assert_false(cli_crashed(r));
}

/* The IR text without its `;` comment lines (the header names the input). */
static char *strip_comments(const char *s)
{
    char *out = malloc(strlen(s) + 1), *o = out;
    assert_non_null(out);
    while (*s) {
        const char *e = strchr(s, '\n');
        size_t n = e ? (size_t)(e - s + 1) : strlen(s);
        if (*s != ';') {
            memcpy(o, s, n);
            o += n;
        }
        s += n;
    }
    *o = 0;
    return out;
}

static void write_text(const char *path, const char *text)
{
    assert_int_equal(cli_write_file(path, text, strlen(text)), 0);
}

/* The `kernel X` word of `kiln run`'s layer line. */
static void kernel_of(const char *out, char *buf, size_t n)
{
    const char *k = strstr(out, " kernel ");
    assert_non_null(k);
    k += 8;
    size_t len = strcspn(k, " \n");
    snprintf(buf, n, "%.*s", (int)len, k);
}

/* Every shipped recipe on the host target: `kiln ir` of its IR prints the same IR, and
 * `kiln run FILE.kir --check` runs the same kernel as the recipe and passes. */
static void test_round_trip_recipes(void **state)
{
    (void)state;
    char **names;
    int n = cli_list_dir(SRC "/recipes", ".lua", &names);
    assert_true(n >= 10);
    for (int i = 0; i < n; i++) {
        char recipe[1200], kir[1200];
        snprintf(recipe, sizeof recipe, "%s/recipes/%s", SRC, names[i]);
        snprintf(kir, sizeof kir, "%s/%s.kir", tmp, names[i]);
        CliResult a, b, ra, rb;
        kiln(&a, "ir", recipe, "--shape", "7,64,256", NULL);
        if (a.code != 0) { /* a recipe this shape does not suit is not this test's business */
            print_message("  %s: kiln ir exit %d, skipped\n", names[i], a.code);
            cli_result_free(&a);
            continue;
        }
        write_text(kir, a.out);
        kiln(&b, "ir", kir, NULL);
        if (b.code)
            cli_dump(kir, &b);
        assert_int_equal(b.code, 0);
        char *x = strip_comments(a.out), *y = strip_comments(b.out);
        assert_string_equal(x, y);
        free(x);
        free(y);
        kiln(&ra, "run", recipe, "--shape", "7,64,256", "--check", NULL);
        kiln(&rb, "run", kir, "--check", NULL);
        if (rb.code != ra.code)
            cli_dump(kir, &rb);
        assert_int_equal(rb.code, ra.code);
        if (ra.code == 0) {
            char ka[128], kb[128];
            kernel_of(ra.out, ka, sizeof ka);
            kernel_of(rb.out, kb, sizeof kb);
            assert_string_equal(ka, kb);
            assert_int_equal(cli_count(rb.out, "kernel vs reference interpreter: PASS"),
                             cli_count(ra.out, "kernel vs reference interpreter: PASS"));
        }
        print_message("  %s: IR reads back; run --check exit %d\n", names[i], rb.code);
        cli_result_free(&a);
        cli_result_free(&b);
        cli_result_free(&ra);
        cli_result_free(&rb);
    }
    cli_free_list(names, n);
}

/* IR as a user writes it: lowered only (no layout, no prepack, no target), int4 weights
 * in groups of 64 and a static int8 activation scale to calibrate. The planner gives it
 * the host's layouts and a scale; the kernel matches the interpreter. */
static const char *hand_ir =
    "; a user's edit: int4 groups of 64, K not a multiple of 64\n"
    "func @\"my.layer\"(%x: f32[5,200]) -> f32[5,48] {\n"
    "  %w = weight {name = \"my.layer.weight\"} : f32[48,200]\n"
    "  %wq = quantize %w : i4[48,200]{int4 sym group=64}\n"
    "  %y = qgemm %x, %wq {act_dtype = f32} : f32[5,48]\n"
    "  return %y\n"
    "}\n"
    "func @\"my.other\"(%x: f32[3,64]) -> f32[3,40] {\n"
    "  %w = weight {name = \"my.other.weight\"} : f32[40,64]\n"
    "  %wq = quantize %w : i8[40,64]{int8 sym channel}\n"
    "  %wd = dequantize %wq : f32[40,64]\n"
    "  %xq = quantize %x : i8[3,64]{int8 sym tensor}\n"
    "  %xd = dequantize %xq : f32[3,64]\n"
    "  %y = matmul %xd, %wd : f32[3,40]\n"
    "  return %y\n"
    "}\n";

static void test_hand_written(void **state)
{
    (void)state;
    char kir[1200];
    snprintf(kir, sizeof kir, "%s/hand.kir", tmp);
    write_text(kir, hand_ir);
    CliResult r;
    kiln(&r, "ir", kir, NULL);
    if (r.code)
        cli_dump("ir hand.kir", &r);
    assert_int_equal(r.code, 0);
    assert_int_equal(cli_count(r.out, " = prepack %"), 2);
    assert_int_equal(cli_count(r.out, "layout = "), 4);
    assert_non_null(strstr(r.out, "scale="));
    cli_result_free(&r);
    kiln(&r, "run", kir, "--check", NULL);
    if (r.code)
        cli_dump("run hand.kir --check", &r);
    assert_int_equal(r.code, 0);
    assert_int_equal(cli_count(r.out, "kernel vs reference interpreter: PASS"), 2);
    assert_non_null(strstr(r.out, "layer my.layer  M=5 N=48 K=200"));
    cli_result_free(&r);
}

/* bench and aot take the IR file too; aot builds the same kernel as from the recipe.
 * M = 16, at or above every AMX break-even: `kiln aot RECIPE` plans its layers for
 * every M (on an amx host the tile layout), `kiln ir --shape` for the M it is given. */
static void test_bench_aot(void **state)
{
    (void)state;
    char recipe[1200], kir[1200], d1[1200], d2[1200];
    snprintf(recipe, sizeof recipe, "%s/recipes/w8a8-int8-dynamic.lua", SRC);
    snprintf(kir, sizeof kir, "%s/bench.kir", tmp);
    snprintf(d1, sizeof d1, "%s/aot-ir", tmp);
    snprintf(d2, sizeof d2, "%s/aot-recipe", tmp);
    CliResult r;
    kiln(&r, "ir", recipe, "--shape", "16,96,320", NULL);
    assert_int_equal(r.code, 0);
    write_text(kir, r.out);
    cli_result_free(&r);
    kiln(&r, "bench", kir, "--repeat", "2", "--warmup", "1", "--probe-ms", "20", NULL);
    if (r.code)
        cli_dump("bench bench.kir", &r);
    assert_int_equal(r.code, 0);
    assert_non_null(strstr(r.out, "M=16 N=96 K=320"));
    cli_result_free(&r);
    kiln(&r, "aot", kir, "-o", d1, NULL);
    assert_int_equal(r.code, 0);
    cli_result_free(&r);
    kiln(&r, "aot", recipe, "--shape", "16,96,320", "-o", d2, NULL);
    assert_int_equal(r.code, 0);
    cli_result_free(&r);
    char **a, **b;
    char o1[1300], o2[1300];
    snprintf(o1, sizeof o1, "%s/obj", d1);
    snprintf(o2, sizeof o2, "%s/obj", d2);
    int na = cli_list_dir(o1, ".o", &a), nb = cli_list_dir(o2, ".o", &b);
    assert_int_equal(na, 1);
    assert_int_equal(nb, 1);
    assert_string_equal(a[0], b[0]); /* the kernel's symbol is its key */
    cli_free_list(a, na);
    cli_free_list(b, nb);
}

/* Refusals: planned for another target, --shape with IR, bad text (file:line), a FIFO. */
static void test_errors(void **state)
{
    (void)state;
    char recipe[1200], kir[1200], bad[1200], fifo[1200];
    snprintf(recipe, sizeof recipe, "%s/recipes/w4a8.lua", SRC);
    snprintf(kir, sizeof kir, "%s/avx2.kir", tmp);
    snprintf(bad, sizeof bad, "%s/bad.kir", tmp);
    snprintf(fifo, sizeof fifo, "%s/fifo.kir", tmp);
    CliResult r;
    kiln(&r, "ir", recipe, "--shape", "1,64,256", "--target", "avx2", NULL);
    assert_int_equal(r.code, 0);
    write_text(kir, r.out);
    cli_result_free(&r);
    kiln(&r, "run", kir, "--target", "sm_90", NULL);
    assert_int_equal(r.code, 2);
    assert_non_null(strstr(r.err, "was planned for target avx2"));
    cli_result_free(&r);
    kiln(&r, "run", kir, "--shape", "1,64,256", NULL);
    assert_int_equal(r.code, 2);
    assert_non_null(strstr(r.err, "an IR file's layers and shapes are its functions'"));
    cli_result_free(&r);
    write_text(bad, "func @\"l\"(%x: f32[1,8]) -> f32[1,4] {\n  %y = qgemm %x, %nope : f32[1,4]\n}\n");
    kiln(&r, "ir", bad, NULL);
    assert_int_equal(r.code, 2);
    assert_non_null(strstr(r.err, "bad.kir:2"));
    assert_string_equal(r.out, "");
    cli_result_free(&r);
    assert_int_equal(mkfifo(fifo, 0600), 0);
    kiln(&r, "run", fifo, NULL);
    assert_int_equal(r.code, 2);
    assert_non_null(strstr(r.err, "not a regular file"));
    assert_true(r.secs < 10);
    cli_result_free(&r);
}

static int setup(void **state)
{
    (void)state;
    tmp = cli_mkdtemp("irfiles");
    return tmp ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    cli_rm_rf(tmp);
    free(tmp);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip_recipes),
        cmocka_unit_test(test_hand_written),
        cmocka_unit_test(test_bench_aot),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
