/* tests/test_cli_inputs.c — what the `kiln` command does with inputs a clumsy user or an
 * attacker gives it (issue 17, classes 5-7): every numeric option of every command
 * parsed strictly within its stated limits (exit 2 naming the option and the range,
 * never exit 4 or a silent default); sizes over the memory limit refused with the limit
 * named; FIFOs, devices and directories wherever kiln reads a file a user named (recipe,
 * --shapes, --text, --model, a model directory's files, cache entries) refused without
 * hanging; the cache's stale-temporary sweep touching only kiln's own files; and
 * `kiln eval` refusing impossible metrics with the layer where NaN or infinity began. */
#include "cli/cli_util.h"

#include <math.h>
#include <sys/time.h>

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "model/eval/metrics.h"
#include "model/model.h"
#include "runtime/runtime.h"

#define SRC KILN_SOURCE_DIR
#define RECIPE SRC "/recipes/w8a8-int8-dynamic.lua"
#define LIMIT_S "60" /* a hang is a failure (exit 137), not a stuck suite */

/* kiln with argv (after "kiln"), under `timeout`, in environment env. */
static void kiln_env(const char *const *args, const char *const *env, CliResult *r)
{
    const char *argv[48] = {"/usr/bin/timeout", "-s", "KILL", LIMIT_S, KILN_BIN};
    int n = 5;
    for (int i = 0; args[i] && n < 47; i++)
        argv[n++] = args[i];
    argv[n] = NULL;
    assert_int_equal(cli_run_env(argv, env, r), 0);
}

/* Exit 2, nothing on stdout, every one of the NULL-terminated msgs on stderr. */
static void expect_input_error(const char *const *args, const char *const *env, ...)
{
    CliResult r;
    kiln_env(args, env, &r);
    va_list ap;
    va_start(ap, env);
    bool ok = r.code == 2 && r.out_len == 0 && !cli_crashed(&r);
    const char *missing = NULL;
    for (const char *m; (m = va_arg(ap, const char *));)
        if (!strstr(r.err, m))
            ok = false, missing = m;
    va_end(ap);
    if (!ok) {
        char what[512] = "kiln";
        for (int i = 0; args[i]; i++)
            snprintf(what + strlen(what), sizeof what - strlen(what), " %s", args[i]);
        cli_dump(what, &r);
        if (missing)
            fprintf(stderr, "expected on stderr: %s\n", missing);
    }
    assert_true(ok);
    cli_result_free(&r);
}

/* ------------------------------------------------------------------ class 7: options */

typedef struct NumOpt {
    const char *cmd, *opt;
    long long lo, hi;
} NumOpt;

/* tools/tool.h's limits, and the command each option belongs to. */
static const NumOpt num_opts[] = {
    {"eval", "--tokens", 1, 1 << 20},    {"eval", "--sentences", 1, 1 << 16},
    {"eval", "--window", 2, 4096},       {"eval", "--stride", 1, 4096},
    {"bench", "--threads", 1, 64},       {"bench", "--repeat", 1, 100000},
    {"bench", "--warmup", 0, 100000},    {"bench", "--probe-ms", 1, 10000},
};

/* Property: for every numeric option, every malformed or out-of-range value is exit 2
 * naming the option and its range, whatever the command would have done; the range's
 * ends themselves are accepted. */
static void test_numeric_options(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof num_opts / sizeof num_opts[0]; i++) {
        const NumOpt *o = &num_opts[i];
        char above[32], below[32], range[96];
        snprintf(above, sizeof above, "%lld", o->hi + 1);
        snprintf(below, sizeof below, "%lld", o->lo - 1);
        snprintf(range, sizeof range, "from %lld to %lld", o->lo, o->hi);
        const char *bad[] = {"-1",  "+1",          " 1",        "1 ",        "1x",
                             "",    "0x10",        "1e3",       "2147483647", "2147483648",
                             "4294967297", "99999999999999999999", "18446744073709551617",
                             above, o->lo > 0 ? below : "-0"};
        for (size_t j = 0; j < sizeof bad / sizeof bad[0]; j++) {
            char msg[64];
            snprintf(msg, sizeof msg, "bad %s", o->opt);
            const char *args[] = {o->cmd, RECIPE, "--shape", "4,64,256", o->opt, bad[j], NULL};
            expect_input_error(args, NULL, msg, range, NULL);
        }
        /* both ends parse (`targets` takes and ignores the options) */
        char lo[32], hi[32];
        snprintf(lo, sizeof lo, "%lld", o->lo);
        snprintf(hi, sizeof hi, "%lld", o->hi);
        for (int e = 0; e < 2; e++) {
            const char *args[] = {"targets", o->opt, e ? hi : lo, NULL};
            CliResult r;
            kiln_env(args, NULL, &r);
            if (r.code != 0)
                cli_dump(o->opt, &r);
            assert_int_equal(r.code, 0);
            cli_result_free(&r);
        }
    }
    const char *seeds[] = {"-1", "+1", "18446744073709551616", "1.5", "", NULL};
    for (int j = 0; seeds[j]; j++) {
        const char *args[] = {"run", RECIPE, "--shape", "4,64,256", "--seed", seeds[j], NULL};
        expect_input_error(args, NULL, "bad --seed", "from 0 to 18446744073709551615", NULL);
    }
    /* strings whose length kiln's buffers assume */
    char *long_name = malloc(5000);
    assert_non_null(long_name);
    memset(long_name, 'a', 4999);
    long_name[4999] = 0;
    long_name[1001] = 0;
    const char *layer[] = {"run", RECIPE, "--shape", "4,64,256", "--layer", long_name, NULL};
    expect_input_error(layer, NULL, "bad --layer: 1001 bytes; layer names are at most 1000",
                       NULL);
    long_name[1001] = 'a';
    long_name[4001] = 0;
    long_name[0] = '/';
    const char *outdir[] = {"aot", RECIPE, "--shape", "4,64,256", "-o", long_name, NULL};
    expect_input_error(outdir, NULL, "bad -o: 4001 bytes; at most 4000", NULL);
    free(long_name);
    const char *max_seed[] = {"targets", "--seed", "18446744073709551615", NULL};
    CliResult r;
    kiln_env(max_seed, NULL, &r);
    assert_int_equal(r.code, 0);
    cli_result_free(&r);
}

/* The issue's reproducers, by name. */
static void test_issue_reproducers(void **state)
{
    (void)state;
    const char *run_big[] = {"run", RECIPE, "--shape", "1,1000000,1000000", NULL};
    expect_input_error(run_big, NULL, "kiln run: --shape 1,1000000,1000000",
                       "N·K (the weights) has 1000000000000 elements", "2^28 = 268435456", NULL);
    const char *tok_big[] = {"eval", RECIPE, "--tokens", "2147483647", NULL};
    expect_input_error(tok_big, NULL, "bad --tokens '2147483647'", "from 1 to 1048576", NULL);
    const char *tok_wrap[] = {"eval", RECIPE, "--tokens", "2147483648", NULL};
    expect_input_error(tok_wrap, NULL, "bad --tokens '2147483648'", NULL);
    const char *rep_big[] = {"bench", RECIPE, "--shape", "4,64,256", "--repeat", "2147483647",
                             NULL};
    expect_input_error(rep_big, NULL, "bad --repeat '2147483647'", "from 1 to 100000", NULL);
}

/* A layer name at the 1000-byte limit: every name kiln derives from it ("<layer>.weight")
 * fits (they were cut at 599 bytes, so `run --check` compared the kernel with another
 * weight and failed every output). */
static void test_long_layer_name(void **state)
{
    (void)state;
    char layer[1001] = "model.layers.0.mlp.";
    size_t n = strlen(layer);
    memset(layer + n, 'a', 1000 - n);
    layer[1000] = 0;
    const char *args[] = {"run", RECIPE, "--shape", "4,64,256", "--layer", layer, "--check", NULL};
    CliResult r;
    kiln_env(args, NULL, &r);
    if (r.code != 0)
        cli_dump("kiln run --layer (1000 bytes) --check", &r);
    assert_int_equal(r.code, 0);
    assert_non_null(strstr(r.out, "kernel vs reference interpreter: PASS"));
    cli_result_free(&r);
}

/* Property: a malformed --shape, or one whose matrices exceed the limit, is exit 2 for
 * every command that takes one (`ir` makes only the 64·K calibration batch, so only K
 * is limited there). */
static void test_shapes(void **state)
{
    (void)state;
    const char *cmds[] = {"ir", "run", "bench", "aot"};
    const char *malformed[] = {"0,1,1", "1,1", "1,1,1,1", ",1,1,1", "1,,1,1", "-1,2,3",
                               "1,2,3,", "1,2,3x", "2147483649,1,1", "1, 2,3", "1,2,+3",
                               "99999999999999999999,1,1", "", "x", NULL};
    for (int c = 0; c < 4; c++)
        for (int i = 0; malformed[i]; i++) {
            const char *args[] = {cmds[c], RECIPE, "--shape", malformed[i], "-o", "/nonexistent",
                                  NULL};
            expect_input_error(args, NULL, "bad --shape", "integers from 1 to 2^31", NULL);
        }
    const char *too_big[] = {"1,65536,65536", "65536,1,65536", "65536,65536,1",
                             "1,1,4194305", NULL};
    for (int c = 1; c < 4; c++)
        for (int i = 0; too_big[i]; i++) {
            const char *args[] = {cmds[c], RECIPE, "--shape", too_big[i], "-o", "/nonexistent",
                                  NULL};
            expect_input_error(args, NULL, "--shape", "at most 2^28", NULL);
        }
    const char *ir_calib[] = {"ir", RECIPE, "--shape", "1,1,4194305", NULL};
    expect_input_error(ir_calib, NULL, "64·K (the calibration batch)", NULL);
    /* the same limit on each line of an aot shapes file, with its line */
    char *dir = cli_mkdtemp("shapes");
    char path[1100], out[1100];
    snprintf(path, sizeof path, "%s/shapes.txt", dir);
    snprintf(out, sizeof out, "%s/out", dir);
    const char *text = "# layers\nmodel.layers.0.mlp.down_proj 4,64,256\n1,100000,100000\n";
    assert_int_equal(cli_write_file(path, text, strlen(text)), 0);
    const char *aot[] = {"aot", RECIPE, "--shapes", path, "-o", out, NULL};
    expect_input_error(aot, NULL, "shapes.txt:3: shape 1,100000,100000", "at most 2^28", NULL);
    cli_rm_rf(dir);
    free(dir);
}

/* ------------------------------------------------------------------ class 6: files */

/* Property: wherever kiln reads a file a user named, a FIFO with no writer, a device
 * and a directory are refused (exit 2, "not a regular file") without blocking. */
static void test_not_regular_files(void **state)
{
    (void)state;
    char *dir = cli_mkdtemp("fifo");
    char fifo[1100], fifo_gguf[1100], big[1100], out[1100];
    snprintf(fifo, sizeof fifo, "%s/fifo.lua", dir);
    snprintf(fifo_gguf, sizeof fifo_gguf, "%s/model.gguf", dir);
    snprintf(big, sizeof big, "%s/big.txt", dir);
    snprintf(out, sizeof out, "%s/out", dir);
    assert_int_equal(mkfifo(fifo, 0644), 0);
    assert_int_equal(mkfifo(fifo_gguf, 0644), 0);
    const char *nonfiles[] = {fifo, "/dev/zero", dir, NULL};
    for (int i = 0; nonfiles[i]; i++) {
        const char *f = nonfiles[i];
        const char *ir[] = {"ir", f, "--shape", "4,64,256", NULL};
        expect_input_error(ir, NULL, "cannot open recipe", "not a regular file", NULL);
        const char *run[] = {"run", f, "--shape", "4,64,256", NULL};
        expect_input_error(run, NULL, "cannot open recipe", "not a regular file", NULL);
        const char *bench[] = {"bench", f, "--shape", "4,64,256", NULL};
        expect_input_error(bench, NULL, "not a regular file", NULL);
        const char *ev[] = {"eval", f, NULL};
        expect_input_error(ev, NULL, "not a regular file", NULL);
        const char *shapes[] = {"aot", RECIPE, "--shapes", f, "-o", out, NULL};
        expect_input_error(shapes, NULL, "cannot open shapes file", "not a regular file", NULL);
        const char *text[] = {"eval", RECIPE, "--text", f, NULL};
        expect_input_error(text, NULL, "cannot open --text", "not a regular file", NULL);
    }
    const char *model[] = {"eval", RECIPE, "--model", fifo_gguf, "--text", RECIPE, NULL};
    expect_input_error(model, NULL, "not a regular file", NULL);
    const char *quant[] = {"quantize", RECIPE, "--model", fifo_gguf, "-o", out, NULL};
    expect_input_error(quant, NULL, "not a regular file", NULL);
    /* a shapes file over its 1 MiB limit is refused before it is read */
    FILE *f = fopen(big, "wb");
    assert_non_null(f);
    for (int i = 0; i < (1 << 20) / 8 + 1; i++)
        fputs("4,64,256\n", f);
    fclose(f);
    const char *bigs[] = {"aot", RECIPE, "--shapes", big, "-o", out, NULL};
    expect_input_error(bigs, NULL, "larger than the limit of 1048576 bytes", NULL);
    cli_rm_rf(dir);
    free(dir);
}

/* A model directory (minilm's files, linked) whose `name` is a FIFO instead. */
static void test_model_dir_fifos(void **state)
{
    (void)state;
    char models[2048];
    KilnDiag d = {0};
    if (kiln_model_path("minilm", models, sizeof models, &d)) {
        fprintf(stderr, "skipped: %s\n", d.msg);
        skip();
    }
    const char *names[] = {"config.json", "vocab.txt", "model.safetensors",
                           NULL};
    for (int i = 0; names[i]; i++) {
        char *dir = cli_mkdtemp("modeldir");
        char **files;
        int n = cli_list_dir(models, "", &files);
        assert_true(n > 0);
        for (int j = 0; j < n; j++) {
            char from[4200], to[4200];
            snprintf(from, sizeof from, "%s/%s", models, files[j]);
            snprintf(to, sizeof to, "%s/%s", dir, files[j]);
            if (!strcmp(files[j], names[i]))
                assert_int_equal(mkfifo(to, 0644), 0);
            else
                assert_int_equal(symlink(from, to), 0);
        }
        cli_free_list(files, n);
        const char *ev[] = {"eval", RECIPE, "--model", dir, "--sentences", "2", NULL};
        expect_input_error(ev, NULL, names[i], NULL);
        cli_rm_rf(dir);
        free(dir);
    }
}

/* An AOT directory whose library or manifest is a FIFO: kiln_aot_open refuses it
 * (dlopen and the JSON reader would block on the open). */
static void test_aot_dir_fifos(void **state)
{
    (void)state;
    char *dir = cli_mkdtemp("aotfifo");
    char out[1100], p[1200];
    snprintf(out, sizeof out, "%s/out", dir);
    const char *args[] = {"aot", RECIPE, "--shape", "1,64,256", "-o", out, NULL};
    CliResult r;
    kiln_env(args, NULL, &r);
    if (r.code != 0)
        cli_dump("kiln aot", &r);
    assert_int_equal(r.code, 0);
    cli_result_free(&r);
    KilnAot *a = NULL;
    KilnDiag d = {0};
    assert_int_equal(kiln_aot_open(out, &a, &d), 0);
    kiln_aot_close(a);
    const char *names[] = {"libkiln_kernels.so", "manifest.json"};
    for (int i = 0; i < 2; i++) {
        char saved[1300];
        snprintf(p, sizeof p, "%s/%s", out, names[i]);
        snprintf(saved, sizeof saved, "%s.saved", p);
        assert_int_equal(rename(p, saved), 0);
        assert_int_equal(mkfifo(p, 0644), 0);
        d = (KilnDiag){0};
        assert_int_equal(kiln_aot_open(out, &a, &d), KILN_EINPUT);
        assert_non_null(strstr(d.msg, "not a regular file"));
        assert_non_null(strstr(d.msg, names[i]));
        assert_int_equal(unlink(p), 0);
        assert_int_equal(rename(saved, p), 0);
    }
    cli_rm_rf(dir);
    free(dir);
}

static const char *const *cache_env(char *buf, size_t n, const char *dir, const char **v)
{
    snprintf(buf, n, "KILN_CACHE_DIR=%s", dir);
    v[0] = buf;
    v[1] = NULL;
    return v;
}

static void run_ok(const char *const *env, const char *expect_err)
{
    const char *args[] = {"run", RECIPE, "--shape", "2,64,256", NULL};
    CliResult r;
    kiln_env(args, env, &r);
    if (r.code != 0 || (expect_err && !strstr(r.err, expect_err)))
        cli_dump("kiln run", &r);
    assert_int_equal(r.code, 0);
    if (expect_err)
        assert_non_null(strstr(r.err, expect_err));
    cli_result_free(&r);
}

/* A FIFO (or a directory) sitting at a cache entry's name is reported and replaced,
 * never opened for a blocking read. */
static void test_cache_entry_fifo(void **state)
{
    (void)state;
    char *dir = cli_mkdtemp("cachefifo");
    char envb[1200];
    const char *v[2];
    const char *const *env = cache_env(envb, sizeof envb, dir, v);
    run_ok(env, NULL);
    char **names;
    int n = cli_list_dir(dir, ".kc", &names);
    assert_true(n > 0);
    for (int i = 0; i < n; i++) {
        char p[2400];
        snprintf(p, sizeof p, "%s/%s", dir, names[i]);
        assert_int_equal(unlink(p), 0);
        assert_int_equal(mkfifo(p, 0644), 0);
    }
    run_ok(env, "not a regular file");
    for (int i = 0; i < n; i++) { /* rebuilt as regular entries */
        char p[2400];
        struct stat st;
        snprintf(p, sizeof p, "%s/%s", dir, names[i]);
        assert_int_equal(lstat(p, &st), 0);
        assert_true(S_ISREG(st.st_mode));
    }
    cli_free_list(names, n);
    cli_rm_rf(dir);
    free(dir);
}

static void plant(const char *dir, const char *name, const char *content, bool old)
{
    char p[2400];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    assert_int_equal(cli_write_file(p, content, strlen(content)), 0);
    if (old) {
        struct timeval tv[2] = {{.tv_sec = time(NULL) - 3 * 86400}, {.tv_sec = time(NULL) - 3 * 86400}};
        assert_int_equal(utimes(p, tv), 0);
    }
}

static bool exists(const char *dir, const char *name)
{
    char p[2400];
    struct stat st;
    snprintf(p, sizeof p, "%s/%s", dir, name);
    return lstat(p, &st) == 0;
}

/* With the cache in a directory other programs use (KILN_CACHE_DIR=/tmp), the sweep of
 * stale temporaries removes only kiln's own: ".tmp-kiln-" + 6 characters, this user's,
 * empty or starting with the entry magic, older than a day. */
static void test_cache_temp_sweep(void **state)
{
    (void)state;
    char *dir = cli_mkdtemp("cachetmp");
    plant(dir, ".tmp-editor1", "someone else's", true);
    plant(dir, ".tmp-abcdef", "", true);
    plant(dir, ".tmp-kiln-notmine", "", true);        /* not mkstemp's six characters */
    plant(dir, ".tmp-kiln-Ab12Cd", "a user's notes", true); /* kiln's name, not kiln's content */
    plant(dir, ".tmp-kiln-Zz0123", "KILNCACHE1 and a payload", true);
    plant(dir, ".tmp-kiln-Yy4567", "", true);
    plant(dir, ".tmp-kiln-Xx8901", "KILNCACHE1 being written", false); /* a live writer's */
    char envb[1200];
    const char *v[2];
    run_ok(cache_env(envb, sizeof envb, dir, v), NULL);
    assert_true(exists(dir, ".tmp-editor1"));
    assert_true(exists(dir, ".tmp-abcdef"));
    assert_true(exists(dir, ".tmp-kiln-notmine"));
    assert_true(exists(dir, ".tmp-kiln-Ab12Cd"));
    assert_false(exists(dir, ".tmp-kiln-Zz0123"));
    assert_false(exists(dir, ".tmp-kiln-Yy4567"));
    assert_true(exists(dir, ".tmp-kiln-Xx8901"));
    cli_rm_rf(dir);
    free(dir);
}

/* ------------------------------------------------------------------ class 5: metrics */

static KilnLinear *three_layers(void)
{
    KilnLinear *ls = calloc(3, sizeof *ls);
    assert_non_null(ls);
    for (int i = 0; i < 3; i++) {
        snprintf(ls[i].name, sizeof ls[i].name, "model.layers.%d.self_attn.q_proj", i);
        snprintf(ls[i].src, sizeof ls[i].src, "blk.%d.attn_q", i);
        ls[i].kernel = "f32";
    }
    return ls;
}

/* Property: a metric outside its possible range (NaN, ±inf, a perplexity under 1, a
 * cosine outside [-1, 1]) is KILN_EINPUT naming the row, the value and the first layer
 * marked non-finite; a possible one passes. */
static void test_metric_checks(void **state)
{
    (void)state;
    KilnLinear *ls = three_layers();
    KilnDiag d = {0};
    const double bad_ppl[] = {NAN, INFINITY, -INFINITY, 0, -1, 0.999, 1e-300};
    for (size_t i = 0; i < sizeof bad_ppl / sizeof bad_ppl[0]; i++) {
        d = (KilnDiag){0};
        assert_int_equal(kiln_eval_check("w4a16", "perplexity", "at least 1", bad_ppl[i], 1,
                                         INFINITY, ls, 3, &d), KILN_EINPUT);
        assert_non_null(strstr(d.msg, "row 'w4a16': perplexity"));
        assert_non_null(strstr(d.msg, "no linear layer's output"));
    }
    assert_int_equal(kiln_eval_check("f32", "perplexity", "", 1, 1, INFINITY, ls, 3, &d), 0);
    assert_int_equal(kiln_eval_check("f32", "perplexity", "", 12.5, 1, INFINITY, ls, 3, &d), 0);
    /* where it began: layer 1's own output, or (input already bad) before layer 1 */
    ls[1].nonfinite_out = ls[2].nonfinite_out = ls[2].nonfinite_in = true;
    assert_int_equal(kiln_eval_check("r", "perplexity", "", NAN, 1, INFINITY, ls, 3, &d),
                     KILN_EINPUT);
    assert_non_null(strstr(d.msg, "began in the output of layer model.layers.1.self_attn.q_proj"));
    assert_non_null(strstr(d.msg, "blk.1.attn_q"));
    ls[1].nonfinite_in = true;
    assert_int_equal(kiln_eval_check("r", "perplexity", "", NAN, 1, INFINITY, ls, 3, &d),
                     KILN_EINPUT);
    assert_non_null(strstr(d.msg, "reached the input of layer model.layers.1.self_attn.q_proj"));
    kiln_eval_watch_reset(ls, 3);
    assert_false(ls[1].nonfinite_out || ls[2].nonfinite_in);

    /* cosines: computed (not assumed 1), and checked */
    float a[8] = {1, 0, 0, 0, 3, 4, 0, 0}, b[8] = {2, 0, 0, 0, 4, -3, 0, 0};
    double mean, mn;
    assert_int_equal(kiln_eval_cosines("r", a, a, 2, 4, ls, 3, &mean, &mn, &d), 0);
    assert_true(fabs(mean - 1) < 1e-12 && fabs(mn - 1) < 1e-12);
    assert_int_equal(kiln_eval_cosines("r", a, b, 2, 4, ls, 3, &mean, &mn, &d), 0);
    assert_true(fabs(mean - 0.5) < 1e-12 && fabs(mn) < 1e-12);
    float z[8] = {0}, nan4[8] = {1, 0, 0, 0, NAN, 0, 0, 0}, inf4[8] = {INFINITY, 0, 0, 0, 1, 0, 0, 0};
    const float *bad[] = {z, nan4, inf4};
    for (int i = 0; i < 3; i++) {
        d = (KilnDiag){0};
        assert_int_equal(kiln_eval_cosines("w8a8", a, bad[i], 2, 4, ls, 3, &mean, &mn, &d),
                         KILN_EINPUT);
        assert_non_null(strstr(d.msg, "row 'w8a8': cosine of sentence"));
    }
    /* per-layer SQNR energies */
    ls[0].track = ls[1].track = ls[2].track = true;
    ls[0].sig = 4, ls[0].noise = 1, ls[1].sig = 1, ls[1].noise = 0, ls[2].sig = 2, ls[2].noise = 1;
    assert_int_equal(kiln_eval_check_sqnr("r", ls, 3, &d), 0);
    ls[2].noise = NAN;
    assert_int_equal(kiln_eval_check_sqnr("r", ls, 3, &d), KILN_EINPUT);
    assert_non_null(strstr(d.msg, "SQNR energy of layer model.layers.2.self_attn.q_proj"));
    free(ls);
}

/* Writes a copy of minilm's model.safetensors into dir with one output row of `tensor`
 * set to 3e38 (finite weights whose output overflows to infinity), the other files
 * linked. */
static void overflowing_minilm(const char *models, const char *dir, const char *tensor)
{
    char **files;
    int n = cli_list_dir(models, "", &files);
    assert_true(n > 0);
    for (int j = 0; j < n; j++) {
        char from[4200], to[4200];
        snprintf(from, sizeof from, "%s/%s", models, files[j]);
        snprintf(to, sizeof to, "%s/%s", dir, files[j]);
        if (strcmp(files[j], "model.safetensors")) {
            assert_int_equal(symlink(from, to), 0);
            continue;
        }
        size_t len;
        char *buf = cli_slurp(from, &len);
        assert_non_null(buf);
        uint64_t hlen = 0;
        for (int i = 0; i < 8; i++)
            hlen |= (uint64_t)(unsigned char)buf[i] << (8 * i);
        KilnJson *h = NULL;
        KilnDiag d = {0};
        assert_int_equal(kiln_json_parse(buf + 8, hlen, "header", &h, &d), 0);
        const KilnJson *t = kiln_json_get(h, tensor);
        assert_non_null(t);
        const KilnJson *off = kiln_json_get(t, "data_offsets"), *shape = kiln_json_get(t, "shape");
        assert_true(off && off->len == 2 && shape && shape->len == 2);
        float *w = (float *)(buf + 8 + hlen + off->items[0].i);
        for (int64_t k = 0; k < shape->items[1].i; k++)
            w[k] = 3e38f;
        assert_int_equal(cli_write_file(to, buf, len), 0);
        kiln_json_free(h);
        free(buf);
    }
    cli_free_list(files, n);
}

/* End to end: a model whose layer overflows gives exit 2 naming that layer in the f32
 * row (before: cos 1.00000 hard-coded for f32 and NaN cosines printed as cos_min
 * 1.00000, exit 0); the plain model still reports computed cosines. */
static void test_eval_nonfinite(void **state)
{
    (void)state;
    char models[2048];
    KilnDiag d = {0};
    if (kiln_model_path("minilm", models, sizeof models, &d)) {
        fprintf(stderr, "skipped: %s\n", d.msg);
        skip();
    }
    char *dir = cli_mkdtemp("nanmodel");
    overflowing_minilm(models, dir, "encoder.layer.2.attention.self.query.weight");
    const char *ev[] = {"eval", RECIPE, "--model", dir, "--sentences", "4", "--per-layer", NULL};
    expect_input_error(ev, NULL, "row 'f32'", "is impossible",
                       "began in the output of layer encoder.layer.2.attention.self.query", NULL);
    cli_rm_rf(dir);
    free(dir);
    const char *ok[] = {"eval", RECIPE, "--model", "minilm", "--sentences", "4", "--json", NULL};
    CliResult r;
    kiln_env(ok, NULL, &r);
    if (r.code != 0)
        cli_dump("kiln eval minilm", &r);
    assert_int_equal(r.code, 0);
    KilnJson *j = NULL;
    assert_int_equal(kiln_json_parse(r.out, r.out_len, "stdout", &j, &d), 0);
    const KilnJson *rows = kiln_json_get(j, "rows");
    assert_true(rows && rows->len == 2);
    for (int i = 0; i < 2; i++) {
        double mean = kiln_json_num(kiln_json_get(&rows->items[i], "cos_mean"));
        double mn = kiln_json_num(kiln_json_get(&rows->items[i], "cos_min"));
        assert_true(mn <= mean && mean <= 1 && mn > 0.9);
    }
    kiln_json_free(j);
    cli_result_free(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_numeric_options),
        cmocka_unit_test(test_issue_reproducers),
        cmocka_unit_test(test_long_layer_name),
        cmocka_unit_test(test_shapes),
        cmocka_unit_test(test_not_regular_files),
        cmocka_unit_test(test_model_dir_fifos),
        cmocka_unit_test(test_aot_dir_fifos),
        cmocka_unit_test(test_cache_entry_fifo),
        cmocka_unit_test(test_cache_temp_sweep),
        cmocka_unit_test(test_metric_checks),
        cmocka_unit_test(test_eval_nonfinite),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
