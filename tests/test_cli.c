/* tests/test_cli.c — end-to-end tests of the `kiln` command: targets; `kiln ir` for
 * every recipe x target (qgemm, layout/why, sm_80 FP8 fallback, --print-after-all,
 * output parses back and prints identically); `kiln run --check` on the interpreter
 * and on the avx2/avx512 JIT kernels over a grid of shapes; every broken recipe's
 * file:line message; the command's error paths and exit codes. */
#include "cli/cli_util.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "frontend/recipe.h"
#include "ir/ir.h"
#include "ir/target.h"
#include "passes/passes.h"

#define SRC KILN_SOURCE_DIR
#define MAXARGS 24

static const char *const all_targets[] = {"interp", "cpu",   "avx2",  "avx512vnni",
                                          "avx512", "sm_80", "sm_89", "sm_90"};
#define NTARGETS (int)(sizeof all_targets / sizeof all_targets[0])

/* Run `kiln ARGS...` (NULL-terminated) with KILN_CACHE_DIR=cache. */
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

/* Remove a test's cache dir and free its name and a list of file names. */
static void cleanup(char *cache, char **names, int n)
{
    cli_free_list(names, n);
    cli_rm_rf(cache);
    free(cache);
}

static int recipe_list(char ***names)
{
    int n = cli_list_dir(SRC "/recipes", ".lua", names);
    assert_true(n >= 10); /* the ten shipped recipes at least */
    return n;
}

static void recipe_path(char *buf, size_t n, const char *name)
{
    snprintf(buf, n, "%s/recipes/%s", SRC, name);
}

static int recipe_nrules(const char *path)
{
    KilnRecipe *r = NULL;
    KilnDiag d = {0};
    assert_int_equal(kiln_recipe_load(path, &r, &d), 0);
    int n = kiln_recipe_nrules(r);
    kiln_recipe_free(r);
    return n;
}

/* ------------------------------------------------------------------ kiln targets */

static void test_targets(void **state)
{
    (void)state;
    char *cache = cli_mkdtemp("cli");
    CliResult r;
    kiln(&r, cache, "targets", NULL);
    if (r.code != 0)
        cli_dump("kiln targets", &r);
    assert_int_equal(r.code, 0);
    for (int i = 0; i < NTARGETS; i++) {
        char line[64];
        snprintf(line, sizeof line, "\n%s ", all_targets[i]); /* a row starts with the name */
        if (!strstr(r.out, line))
            cli_dump("kiln targets", &r);
        assert_non_null(strstr(r.out, line));
    }
    assert_string_equal(r.err, "");
    cli_result_free(&r);
    cleanup(cache, NULL, 0);
}

/* ------------------------------------------------------------------ kiln ir */

/* The module text without the leading "; ..." lines the command adds. */
static const char *skip_header_comments(const char *s)
{
    while (*s == ';') {
        const char *nl = strchr(s, '\n');
        if (!nl)
            return s + strlen(s);
        s = nl + 1;
    }
    return s;
}

/* An ignored layer's function: f32 all the way, as a plain matmul or as a qgemm over
 * unquantized f32 weights (act_dtype = f32). */
static bool is_unquantized(const char *blk)
{
    return strstr(blk, "rule = \"(ignored)\"") && !strstr(blk, " = quantize ") &&
           !strstr(blk, " = dynquant ") && !strstr(blk, "act = {") &&
           (strstr(blk, " = matmul %x, %w : f32[") || strstr(blk, "act_dtype = f32"));
}

/* Each "func @" block of text holds a qgemm, or is an ignored layer kept in f32. */
static int check_funcs(const char *text, bool cpu_or_gpu, const char *what)
{
    int bad = 0;
    for (const char *p = strstr(text, "func @"); p;) {
        const char *next = strstr(p + 1, "func @");
        size_t len = next ? (size_t)(next - p) : strlen(p);
        char *blk = strndup(p, len);
        bool q = strstr(blk, " = qgemm ") != NULL;
        bool ignored = is_unquantized(blk);
        if (!q && !ignored) {
            fprintf(stderr, "%s: function without qgemm:\n%s\n", what, blk);
            bad++;
        }
        if (q && cpu_or_gpu &&
            (!strstr(blk, "layout = \"") || !strstr(blk, "why = \"") ||
             !strstr(blk, " = prepack "))) {
            fprintf(stderr, "%s: qgemm without layout/why/prepack:\n%s\n", what, blk);
            bad++;
        }
        free(blk);
        p = next;
    }
    return bad;
}

/* print(parse(text)) must give text back (minus the command's header comment). */
static int check_roundtrip(const char *out, const char *what)
{
    KilnModule *m = kiln_module_new();
    KilnDiag d = {0};
    int bad = 0;
    if (kiln_parse_module(out, strlen(out), "kiln-ir-output", m, &d)) {
        char buf[1400];
        fprintf(stderr, "%s: output does not parse: %s\n", what,
                kiln_diag_format(&d, buf, sizeof buf));
        bad = 1;
    } else {
        char *again = kiln_print_module_str(m);
        const char *body = skip_header_comments(out);
        if (!again || strcmp(again, body)) {
            fprintf(stderr, "%s: parse+print differs\n--- printed:\n%s\n--- reprinted:\n%s\n", what,
                    body, again ? again : "(null)");
            bad = 1;
        }
        free(again);
    }
    kiln_module_free(m);
    return bad;
}

/* The "; *** IR after <pass> ***" headers: lower, then the pipeline in order. */
static int check_print_after_all(const char *out, const char *what)
{
    int np;
    const char *const *names = kiln_pass_names(&np);
    const char *want[16];
    int nw = 0;
    want[nw++] = "lower";
    for (int i = 0; i < np; i++)
        want[nw++] = names[i];
    want[nw++] = "verify"; /* the pipeline verifies again at the end */
    int k = 0, bad = 0;
    for (const char *p = strstr(out, "; *** IR after "); p; p = strstr(p + 1, "; *** IR after ")) {
        char name[64] = "";
        sscanf(p, "; *** IR after %63s ***", name);
        if (k >= nw || strcmp(name, want[k])) {
            fprintf(stderr, "%s: header %d is '%s', expected '%s'\n", what, k, name,
                    k < nw ? want[k] : "(none)");
            bad++;
        }
        k++;
    }
    if (k != nw) {
        fprintf(stderr, "%s: %d pass headers, expected %d\n", what, k, nw);
        bad++;
    }
    return bad;
}

/* FP8 weights on sm_80 run weight-only with f16 activations, and `why` says so. */
static int check_sm80_fp8(const char *out, const char *recipe, const char *what)
{
    static const struct {
        const char *recipe;
        int n;
    } known[] = {{"fp8-e4m3-dynamic.lua", 1},
                 {"fp8-e4m3-static.lua", 1},
                 {"fp8-e5m2.lua", 1},
                 {"mixed.lua", 1}};
    int want = -1;
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
        if (!strcmp(known[i].recipe, recipe))
            want = known[i].n;
    /* prepacked FP8 weights: one per FP8 qgemm */
    int fp8 = 0;
    for (const char *p = strstr(out, " = prepack "); p; p = strstr(p + 1, " = prepack ")) {
        const char *eol = strchr(p, '\n');
        char *line = strndup(p, eol ? (size_t)(eol - p) : strlen(p));
        fp8 += strstr(line, " : e4m3[") || strstr(line, " : e5m2[");
        free(line);
    }
    if (want < 0)
        want = fp8; /* a recipe this test does not know: whatever FP8 it has */
    int said =
        cli_count(out, "sm_80 has no FP8 tensor cores: FP8 weights kept, activations run in f16");
    int bad = 0;
    if (fp8 != want || said != want ||
        cli_count(out, "layout = \"sm80-fp8-weightonly-f16\"") != 2 * want ||
        strstr(out, "act = {fp8_")) {
        fprintf(stderr,
                "%s: expected %d FP8 weight-only rewrites (fp8 weights %d, why says it %d):\n%s\n",
                what, want, fp8, said, out);
        bad = 1;
    }
    return bad;
}

static void test_ir_recipes_targets(void **state)
{
    (void)state;
    char *cache = cli_mkdtemp("cli");
    char **names;
    int n = recipe_list(&names), bad = 0;
    double t0 = cli_now();
    for (int i = 0; i < n; i++) {
        char path[1024];
        recipe_path(path, sizeof path, names[i]);
        int nrules = recipe_nrules(path);
        for (int j = 0; j < NTARGETS; j++) {
            const char *t = all_targets[j];
            char what[1200];
            snprintf(what, sizeof what, "kiln ir %s --target %s", names[i], t);
            CliResult r;
            kiln(&r, cache, "ir", path, "--shape", "4,64,256", "--target", t, NULL);
            int b = 0;
            if (r.code != 0 || cli_count(r.out, "func @") != nrules || strstr(r.err, "kiln:")) {
                fprintf(stderr, "%s: expected exit 0 and %d functions\n", what, nrules);
                b++;
            }
            b += check_funcs(r.out, strcmp(t, "interp") != 0, what);
            b += check_roundtrip(r.out, what);
            if (!strcmp(t, "sm_80"))
                b += check_sm80_fp8(r.out, names[i], what);
            if (b)
                cli_dump(what, &r);
            bad += b;
            cli_result_free(&r);

            kiln(&r, cache, "ir", path, "--shape", "4,64,256", "--target", t, "--print-after-all",
                 NULL);
            b = r.code != 0 || check_print_after_all(r.out, what);
            if (b)
                cli_dump(what, &r);
            bad += b;
            cli_result_free(&r);
        }
    }
    printf("  ir: %d recipes x %d targets in %.1fs\n", n, NTARGETS, cli_now() - t0);
    cleanup(cache, names, n);
    assert_int_equal(bad, 0);
}

/* mixed.lua ignores lm_head: ir keeps it in f32 on every target; run either says it
 * is not quantized or runs an f32 kernel that matches the interpreter; exit 0. */
static void test_ignored_layer(void **state)
{
    (void)state;
    char *cache = cli_mkdtemp("cli");
    const char *mixed = SRC "/recipes/mixed.lua";
    CliResult r;
    for (int j = 0; j < NTARGETS; j++) {
        kiln(&r, cache, "ir", mixed, "--shape", "2,64,256", "--layer", "lm_head", "--target",
             all_targets[j], NULL);
        bool ok = r.code == 0 && cli_count(r.out, "func @") == 1 &&
                  strstr(r.out, "func @\"lm_head\"(%x: f32[2,256]) -> f32[2,64]") &&
                  is_unquantized(r.out) && !check_roundtrip(r.out, "ir --layer lm_head");
        if (!ok)
            cli_dump("ir --layer lm_head", &r);
        assert_true(ok);
        cli_result_free(&r);
    }

    kiln(&r, cache, "run", mixed, "--shape", "2,64,256", "--layer", "lm_head", "--target", "avx2",
         "--check", NULL);
    bool ok =
        r.code == 0 && !strstr(r.out, "FAIL") && strstr(r.out, "layer lm_head") &&
        (strstr(r.out, "not quantized") || strstr(r.out, "kernel vs reference interpreter: PASS"));
    if (!ok)
        cli_dump("run --layer lm_head --target avx2 --check", &r);
    assert_true(ok);
    cli_result_free(&r);

    kiln(&r, cache, "run", mixed, "--shape", "2,64,256", "--layer", "lm_head", "--target", "interp",
         "--check", NULL);
    ok = r.code == 0 && strstr(r.out, "layer lm_head") && strstr(r.out, "dB): PASS") &&
         !strstr(r.out, "FAIL");
    if (!ok)
        cli_dump("run --layer lm_head --target interp --check", &r);
    assert_true(ok);
    cli_result_free(&r);
    cleanup(cache, NULL, 0);
}

/* ------------------------------------------------------------------ kiln run --check */

/* A --check run passed: exit 0, one "quantization error ... PASS" per layer (or "floor
 * not judged" when the layer has fewer than 32 outputs, too few for an SQNR), one
 * "kernel vs reference interpreter: PASS" per layer when a kernel ran, no FAIL. */
static int check_run_ok(const CliResult *r, int nlayers, bool kernel, const char *what)
{
    bool ok = r->code == 0 && !cli_crashed(r) && !strstr(r->out, "FAIL") &&
              cli_count(r->out, "\nlayer ") + (strncmp(r->out, "layer ", 6) == 0) == nlayers &&
              cli_count(r->out, "quantization error vs f32:") == nlayers &&
              cli_count(r->out, "dB): PASS") + cli_count(r->out, "(floor not judged") ==
                  nlayers &&
              (!kernel || cli_count(r->out, "kernel vs reference interpreter: PASS") == nlayers);
    if (!ok) {
        fprintf(stderr, "%s: expected %d passing layers%s\n", what, nlayers,
                kernel ? " with kernel checks" : "");
        cli_dump(what, r);
    }
    return !ok;
}

static void test_run_interp_check(void **state)
{
    (void)state;
    char *cache = cli_mkdtemp("cli");
    char **names;
    int n = recipe_list(&names), bad = 0;
    double t0 = cli_now();
    for (int i = 0; i < n; i++) {
        char path[1024], what[1200];
        recipe_path(path, sizeof path, names[i]);
        snprintf(what, sizeof what, "kiln run %s --shape 3,40,256 --target interp --check",
                 names[i]);
        CliResult r;
        kiln(&r, cache, "run", path, "--shape", "3,40,256", "--target", "interp", "--check", NULL);
        bad += check_run_ok(&r, recipe_nrules(path), false, what);
        cli_result_free(&r);
    }
    printf("  interp --check: %d recipes in %.1fs\n", n, cli_now() - t0);
    cleanup(cache, names, n);
    assert_int_equal(bad, 0);
}

/* Every recipe x M x (N,K) on a CPU target. One cache dir per recipe, so the kernel
 * of an (N,K) is compiled once and the other M hit it (M is a run-time argument). */
static int run_grid(const char *target, const int *Ms, int nM, const int (*NK)[2], int nNK)
{
    char **names;
    int n = recipe_list(&names), bad = 0, runs = 0;
    double t0 = cli_now();
    for (int i = 0; i < n; i++) {
        char path[1024];
        recipe_path(path, sizeof path, names[i]);
        int nrules = recipe_nrules(path);
        char *cache = cli_mkdtemp("cli");
        for (int j = 0; j < nNK; j++)
            for (int k = 0; k < nM; k++) {
                char shape[64], what[1200];
                snprintf(shape, sizeof shape, "%d,%d,%d", Ms[k], NK[j][0], NK[j][1]);
                snprintf(what, sizeof what, "kiln run %s --shape %s --target %s --check", names[i],
                         shape, target);
                CliResult r;
                kiln(&r, cache, "run", path, "--shape", shape, "--target", target, "--check", NULL);
                bad += check_run_ok(&r, nrules, true, what);
                runs++;
                cli_result_free(&r);
            }
        cleanup(cache, NULL, 0);
    }
    printf("  %s --check: %d runs (%d recipes) in %.1fs\n", target, runs, n, cli_now() - t0);
    cli_free_list(names, n);
    return bad;
}

static void test_run_avx2_grid(void **state)
{
    (void)state;
    static const int Ms[] = {1, 3, 16, 67};
    static const int NK[][2] = {{1, 128}, {7, 256}, {33, 384}, {100, 256}};
    if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma"))
        skip();
    assert_int_equal(run_grid("avx2", Ms, 4, NK, 4), 0);
}

/* Outlier columns at decode: they are picked from the 64-row synthetic calibration
 * batch whatever M (one row at M = 1 missed planted columns, and the layer fell
 * under its own SQNR floor at K = 4096: 29.46 < 30 dB). */
static void test_run_outliers_decode(void **state)
{
    (void)state;
    if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma"))
        skip();
    char *cache = cli_mkdtemp("cli");
    char path[1024];
    recipe_path(path, sizeof path, "w8a8-int8-outliers.lua");
    CliResult r;
    kiln(&r, cache, "run", path, "--shape", "1,1024,4096", "--target", "cpu", "--check", NULL);
    if (r.code != 0 || strstr(r.out, "FAIL"))
        cli_dump("run w8a8-int8-outliers --shape 1,1024,4096 --check", &r);
    assert_int_equal(r.code, 0);
    assert_null(strstr(r.out, "FAIL"));
    cli_result_free(&r);
    cleanup(cache, NULL, 0);
}

/* The kernel the API runs is the one the plan names: with the default target (the
 * host, with its traits) `kiln run --verbose` reports the same layout the layer line
 * shows (it once ran the level's portable kernel while naming the tuned one). */
static void test_run_same_kernel(void **state)
{
    (void)state;
    if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma"))
        skip();
    char *cache = cli_mkdtemp("cli");
    char path[1024];
    recipe_path(path, sizeof path, "w4a16-g128-asym.lua");
    CliResult r;
    kiln(&r, cache, "run", path, "--shape", "1,64,256", "--check", "--verbose", NULL);
    assert_int_equal(r.code, 0);
    const char *ran = strstr(r.err, "): cache "), *named = strstr(r.out, "  kernel ");
    assert_non_null(ran);
    assert_non_null(named);
    const char *open = ran;
    while (open > r.err && *open != '(')
        open--;
    size_t len = (size_t)(ran - open - 1);
    char planned[64] = "";
    sscanf(named + 9, "%63s", planned);
    if (strlen(planned) != len || strncmp(open + 1, planned, len))
        cli_dump("run --verbose: kernel run vs kernel planned", &r);
    assert_int_equal(strlen(planned), len);
    assert_memory_equal(open + 1, planned, len);
    cli_result_free(&r);
    cleanup(cache, NULL, 0);
}

/* One recipe parse and one lowering per layer (issue: the recipe used to be parsed by
 * the command and again by the API, every layer lowered by both): kiln run plans the
 * layers once and hands the plans to the API; kiln eval parses each recipe once and
 * lowers each layer once per row (f32 and the recipe). */
static void test_plan_once(void **state)
{
    (void)state;
    if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma"))
        skip();
    char *cache = cli_mkdtemp("cli");
    char path[1024];
    recipe_path(path, sizeof path, "mixed.lua");
    KilnRecipe *rec = NULL;
    KilnDiag d = {0};
    assert_int_equal(kiln_recipe_load(path, &rec, &d), 0);
    int nrules = kiln_recipe_nrules(rec);
    kiln_recipe_free(rec);
    CliResult r;
    kiln(&r, cache, "run", path, "--shape", "4,64,256", "--check", "--verbose", NULL);
    char want[96];
    snprintf(want, sizeof want, "kiln: 1 recipe parse, %d layer lowerings", nrules);
    if (r.code != 0 || !strstr(r.err, want))
        cli_dump(want, &r);
    assert_int_equal(r.code, 0);
    assert_non_null(strstr(r.err, want));
    cli_result_free(&r);

    const char *md = getenv("KILN_MODELS_DIR"), *home = getenv("HOME");
    char mpath[1024];
    snprintf(mpath, sizeof mpath, "%s/minilm/model.safetensors",
             md ? md : home ? home : ".");
    if (!md)
        snprintf(mpath, sizeof mpath, "%s/.cache/kiln/models/minilm/model.safetensors",
                 home ? home : ".");
    if (access(mpath, R_OK) != 0) {
        print_message("kiln eval part not run: no MiniLM at %s (scripts/fetch-models.sh)\n", mpath);
    } else {
        recipe_path(path, sizeof path, "w8a16.lua");
        kiln(&r, cache, "eval", path, "--model", "minilm", "--sentences", "8", "--verbose", NULL);
        /* MiniLM has 36 linear layers; rows f32 and w8a16, each recipe parsed once. The
         * f32 row is bound per call (docs/models.md): lowered when bound and again at its
         * one batch of 8 sentences; w8a16 calibrates nothing, so no calibration run */
        const char *w = "kiln: 2 recipe parses, 108 layer lowerings";
        if (r.code != 0 || !strstr(r.err, w))
            cli_dump(w, &r);
        assert_int_equal(r.code, 0);
        assert_non_null(strstr(r.err, w));
        cli_result_free(&r);
    }
    cleanup(cache, NULL, 0);
}

/* Whether this CPU runs target `name`'s kernels (ir/target.h's table decides). */
static bool host_runs(const char *name)
{
    KilnTarget t;
    KilnDiag d = {0};
    return kiln_target_lookup(name, &t, &d) == 0 && kiln_target_host_runs(&t);
}

/* A v4 level the host runs: a grid of shapes checked. One it cannot (avx512 needs
 * VNNI and BF16, avx512vnni VNNI): every recipe refused with exit 3 (no device),
 * naming what is missing, instead of running into an illegal instruction. */
static int run_v4_level(const char *level)
{
    if (host_runs(level)) {
        static const int Ms[] = {1, 67};
        static const int NK[][2] = {{7, 256}, {100, 256}};
        return run_grid(level, Ms, 2, NK, 2);
    }
    char *cache = cli_mkdtemp("cli");
    char **names, want[96];
    snprintf(want, sizeof want, "kiln: this CPU cannot run target '%s'", level);
    int n = recipe_list(&names), bad = 0;
    for (int i = 0; i < n; i++) {
        char path[1024];
        recipe_path(path, sizeof path, names[i]);
        CliResult r;
        kiln(&r, cache, "run", path, "--shape", "3,40,256", "--target", level, "--check", NULL);
        if (r.code != 3 || !strstr(r.err, want) || !strstr(r.err, ": no AVX") ||
            strstr(r.out, "PASS")) {
            cli_dump("run --target on a host that lacks the level", &r);
            bad++;
        }
        cli_result_free(&r);
    }
    cleanup(cache, names, n);
    return bad;
}

static void test_run_avx512(void **state)
{
    (void)state;
    int bad = run_v4_level("avx512vnni");
    bad += run_v4_level("avx512");
    assert_int_equal(bad, 0);
}

/* ------------------------------------------------------------------ broken recipes */

static void test_bad_recipes(void **state)
{
    (void)state;
    char *cache = cli_mkdtemp("cli");
    const char *dir = SRC "/tests/recipes_bad";
    char **names;
    int n = cli_list_dir(dir, ".lua", &names), bad = 0;
    assert_true(n >= 24);
    double t0 = cli_now();
    for (int i = 0; i < n; i++) {
        char path[1024], epath[1024];
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        snprintf(epath, sizeof epath, "%.*s.expected", (int)(strlen(path) - 4), path);
        char *exp = cli_slurp(epath, NULL);
        assert_non_null(exp); /* format: "LINE: message substring" on the first line */
        exp[strcspn(exp, "\n")] = 0;
        int line = atoi(exp);
        const char *sub = strchr(exp, ':');
        assert_non_null(sub);
        sub += 2;
        char want[1200];
        snprintf(want, sizeof want, "kiln: %s:%d: ", path, line);
        CliResult r;
        kiln(&r, cache, "ir", path, "--shape", "4,64,256", NULL);
        /* exactly one line on stderr: the error, at the recipe's file:line */
        bool ok = r.code == 2 && !cli_crashed(&r) && strncmp(r.err, want, strlen(want)) == 0 &&
                  strstr(r.err, sub) && cli_count(r.err, "\n") == 1 && r.out_len == 0;
        if (!ok) {
            fprintf(stderr, "%s: expected exit 2 and stderr '%s...%s'\n", names[i], want, sub);
            cli_dump(names[i], &r);
            bad++;
        }
        cli_result_free(&r);
        free(exp);
    }
    printf("  %d broken recipes in %.1fs\n", n, cli_now() - t0);
    cleanup(cache, names, n);
    assert_int_equal(bad, 0);
}

/* ------------------------------------------------------------------ errors */

/* Run and expect exit `code`, stdout empty, stderr holding every string of subs. */
static void expect_fail(const char *cache, int code, const char *const *subs,
                        const char *const *args)
{
    const char *argv[MAXARGS] = {KILN_BIN};
    int n = 1;
    for (int i = 0; args[i] && n < MAXARGS - 1; i++)
        argv[n++] = args[i];
    argv[n] = NULL;
    char env0[1200];
    snprintf(env0, sizeof env0, "KILN_CACHE_DIR=%s", cache);
    const char *env[] = {env0, NULL};
    CliResult r;
    assert_int_equal(cli_run_env(argv, env, &r), 0);
    bool ok = r.code == code && !cli_crashed(&r) && strncmp(r.err, "kiln", 4) == 0;
    for (int i = 0; subs[i]; i++)
        ok = ok && strstr(r.err, subs[i]);
    if (!ok) {
        char what[600] = "kiln";
        for (int i = 0; args[i]; i++)
            snprintf(what + strlen(what), sizeof what - strlen(what), " %s", args[i]);
        fprintf(stderr, "%s: expected exit %d with:", what, code);
        for (int i = 0; subs[i]; i++)
            fprintf(stderr, " '%s'", subs[i]);
        fprintf(stderr, "\n");
        cli_dump(what, &r);
    }
    cli_result_free(&r);
    assert_true(ok);
}

#define ARGS(...) ((const char *const[]){__VA_ARGS__, NULL})

static void test_errors(void **state)
{
    (void)state;
    char *cache = cli_mkdtemp("cli");
    const char *w4a8 = SRC "/recipes/w4a8.lua";
    /* unknown target: exit 2, lists the valid names (in ir and in run) */
    expect_fail(cache, 2,
                ARGS("avx9000", "interp", "avx2", "avx512vnni", "avx512", "sm_80", "sm_89", "sm_90"),
                ARGS("ir", w4a8, "--shape", "4,64,256", "--target", "avx9000"));
    expect_fail(cache, 2, ARGS("avx9000", "interp", "avx2", "sm_90"),
                ARGS("run", w4a8, "--shape", "4,64,256", "--target", "avx9000"));
    /* bad shapes */
    expect_fail(cache, 2, ARGS("--shape", "4,64"), ARGS("ir", w4a8, "--shape", "4,64"));
    expect_fail(cache, 2, ARGS("--shape", "0,64,256"), ARGS("ir", w4a8, "--shape", "0,64,256"));
    expect_fail(cache, 2, ARGS("--shape", "-1,64,256"), ARGS("run", w4a8, "--shape", "-1,64,256"));
    expect_fail(cache, 2, ARGS("--shape", "4,64,256,8"), ARGS("ir", w4a8, "--shape", "4,64,256,8"));
    expect_fail(cache, 2, ARGS("--shape", "a,b,c"), ARGS("ir", w4a8, "--shape", "a,b,c"));
    expect_fail(cache, 2, ARGS("--shape", "99999999999,1,128"),
                ARGS("ir", w4a8, "--shape", "99999999999,1,128"));
    expect_fail(cache, 2, ARGS("--shape"), ARGS("ir", w4a8, "--shape"));
    expect_fail(cache, 2, ARGS("usage"), ARGS("ir", w4a8));                  /* no shape at all */
    expect_fail(cache, 2, ARGS("usage"), ARGS("run", "--shape", "1,8,128")); /* no recipe */
    /* missing recipe file: names the path */
    expect_fail(cache, 2, ARGS(SRC "/recipes/no-such-recipe.lua"),
                ARGS("ir", SRC "/recipes/no-such-recipe.lua", "--shape", "4,64,256"));
    expect_fail(
        cache, 2, ARGS(SRC "/recipes/no-such-recipe.lua"),
        ARGS("run", SRC "/recipes/no-such-recipe.lua", "--shape", "4,64,256", "--target", "avx2"));
    /* unknown option, unknown command, stray argument */
    expect_fail(cache, 2, ARGS("unknown option '--frobnicate'"),
                ARGS("ir", w4a8, "--shape", "4,64,256", "--frobnicate"));
    expect_fail(cache, 2, ARGS("unknown command 'frob'", "targets", "ir", "run"), ARGS("frob"));
    expect_fail(cache, 2, ARGS("unexpected argument 'extra'"),
                ARGS("ir", w4a8, "extra", "--shape", "4,64,256"));
    /* a group that does not divide K is a ragged last group (docs/numerics.md), but the
     * tail must be a multiple of the kernel's unit: K = 100 at group 128 is one group of
     * 100, not a multiple of the int4 kernels' 8; names layer, K, group and the unit */
    expect_fail(
        cache, 2, ARGS("model.layers.0", "multiples of 8", "K = 100", "group = 128", "ragged last group of 100"),
        ARGS("run", SRC "/recipes/w4a16-g128-asym.lua", "--shape", "1,64,100", "--target", "avx2"));
    /* K = 48 at group 32 (a tail of 16) and K = 576 at group 128 (SmolLM2: 4·128 + 64) are fine */
    CliResult r;
    kiln(&r, cache, "ir", SRC "/recipes/w4a16-g32-sym.lua", "--shape", "1,64,48", NULL);
    if (r.code != 0 || !strstr(r.out, "[64,48]{int4 sym group=32}"))
        cli_dump("kiln ir w4a16-g32-sym K=48", &r);
    assert_int_equal(r.code, 0);
    assert_true(strstr(r.out, "[64,48]{int4 sym group=32}") != NULL);
    cli_result_free(&r);
    kiln(&r, cache, "run", SRC "/recipes/w4a16-g128-asym.lua", "--shape", "3,40,576", "--target", "avx2",
         "--check", NULL);
    if (r.code != 0 || !strstr(r.out, "kernel vs reference interpreter: PASS"))
        cli_dump("kiln run w4a16-g128-asym 3,40,576 --check", &r);
    assert_int_equal(r.code, 0);
    assert_non_null(strstr(r.out, "kernel vs reference interpreter: PASS"));
    cli_result_free(&r);
    cleanup(cache, NULL, 0);
}

/* A GPU target in `kiln run`: without a GPU backend in the build it says so (exit 2);
 * with one but no driver, exit 3 "no CUDA driver found"; with a GPU it may run. */
static void test_run_gpu_target(void **state)
{
    (void)state;
    char *cache = cli_mkdtemp("cli");
    CliResult r;
    kiln(&r, cache, "run", SRC "/recipes/w4a8.lua", "--shape", "1,64,256", "--target", "sm_90",
         "--check", NULL);
    bool no_backend = r.code == 2 && strstr(r.err, "kiln: target 'sm_90': the GPU backend is not "
                                                   "in this build yet");
    bool no_driver = r.code == 3 && strstr(r.err, "no CUDA driver found");
    bool ran = r.code == 0 && access("/dev/nvidiactl", F_OK) == 0 && strstr(r.out, "PASS");
    if (!(no_backend || no_driver || ran) || cli_crashed(&r))
        cli_dump("run --target sm_90", &r);
    assert_true(no_backend || no_driver || ran);
    assert_false(cli_crashed(&r));
    cli_result_free(&r);
    cleanup(cache, NULL, 0);
}

/* One validity check per target, at plan time: a layer sm_80 has no kernel for (int4
 * group 16; GPU groups are multiples of 32) is refused by `kiln ir`, `kiln run` and
 * `kiln aot` alike, exit 2 naming the layer, on any machine — `run` before it looks for a
 * CUDA driver. */
static void test_gpu_plan_time_check(void **state)
{
    (void)state;
    char *cache = cli_mkdtemp("cli");
    char recipe[1200], out[1200];
    snprintf(recipe, sizeof recipe, "%s/g16.lua", cache);
    snprintf(out, sizeof out, "%s/aot", cache);
    FILE *f = fopen(recipe, "w");
    assert_non_null(f);
    fputs("return recipe \"g16\" {\n  rule \"*\" {\n    weights = int4 { group = 16, symmetric = "
          "true },\n    activations = f16,\n  },\n}\n", f);
    fclose(f);
    static const char *const cmds[] = {"ir", "run", "aot"};
    for (int i = 0; i < 3; i++) {
        CliResult r;
        if (i == 2)
            kiln(&r, cache, cmds[i], recipe, "--shape", "1,64,256", "--target", "sm_80", "-o", out,
                 NULL);
        else
            kiln(&r, cache, cmds[i], recipe, "--shape", "1,64,256", "--target", "sm_80", NULL);
        if (r.code != 2 || !strstr(r.err, "'model.layers.0': group=16 must be a multiple of 32"))
            cli_dump(cmds[i], &r);
        assert_int_equal(r.code, 2);
        assert_non_null(strstr(r.err, "'model.layers.0': group=16 must be a multiple of 32 (K=256)"));
        assert_null(strstr(r.err, "'kernel'"));
        assert_null(strstr(r.out, "; kiln ir:"));
        cli_result_free(&r);
    }
    cleanup(cache, NULL, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_targets),        cmocka_unit_test(test_ir_recipes_targets),
        cmocka_unit_test(test_ignored_layer),  cmocka_unit_test(test_run_interp_check),
        cmocka_unit_test(test_run_avx2_grid),  cmocka_unit_test(test_run_avx512),
        cmocka_unit_test(test_run_outliers_decode),
        cmocka_unit_test(test_run_same_kernel),
        cmocka_unit_test(test_plan_once),
        cmocka_unit_test(test_bad_recipes),    cmocka_unit_test(test_errors),
        cmocka_unit_test(test_run_gpu_target), cmocka_unit_test(test_gpu_plan_time_check),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
