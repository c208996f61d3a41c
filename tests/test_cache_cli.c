/* tests/test_cache_cli.c — the kernel cache seen from the `kiln` command: miss then
 * hit with identical output; corrupted entries (flipped byte, truncation, garbage)
 * are reported, rebuilt and valid again; concurrent compiles of one kernel; what
 * the key covers (M is not in it, N is); an unusable cache dir; the $HOME default. */
#include "cli/cli_util.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#define SRC KILN_SOURCE_DIR
#define RECIPE SRC "/recipes/w8a8-int8-dynamic.lua"
#define SHAPE "2,64,256"
#define HDR_BYTES 88 /* runtime/cache.c's entry header: magic, length, two SHA-256 */

/* Environment for a child: KILN_CACHE_DIR=dir, or (dir NULL) no KILN_CACHE_DIR and
 * HOME=home. */
typedef struct Env {
    char a[4200], b[4200];
    const char *v[3];
} Env;

static const char *const *cache_env(Env *e, const char *dir, const char *home)
{
    if (dir) {
        snprintf(e->a, sizeof e->a, "KILN_CACHE_DIR=%s", dir);
        e->v[0] = e->a;
        e->v[1] = NULL;
    } else {
        snprintf(e->a, sizeof e->a, "KILN_CACHE_DIR");
        snprintf(e->b, sizeof e->b, "HOME=%s", home ? home : "");
        e->v[0] = e->a;
        e->v[1] = e->b;
        e->v[2] = NULL;
    }
    return e->v;
}

/* kiln run RECIPE --shape SHAPE --target avx2 --check --verbose */
static const char *const run_argv[] = {KILN_BIN,   "run",  RECIPE,    "--shape",   SHAPE,
                                       "--target", "avx2", "--check", "--verbose", NULL};

static void run_kiln(CliResult *r, const char *dir, const char *home, const char *const *argv)
{
    Env e;
    assert_int_equal(cli_run_env(argv ? argv : run_argv, cache_env(&e, dir, home), r), 0);
}

/* stdout without the timing lines, which differ from run to run. */
static char *stable_output(const char *out)
{
    size_t n = strlen(out);
    char *s = malloc(n + 1), *w = s;
    for (const char *p = out; *p;) {
        const char *nl = strchr(p, '\n');
        size_t len = nl ? (size_t)(nl - p + 1) : strlen(p);
        char line[2048];
        snprintf(line, sizeof line, "%.*s", (int)len, p);
        if (!strstr(line, " ran in ")) {
            memcpy(w, p, len);
            w += len;
        }
        p += len;
    }
    *w = 0;
    return s;
}

/* A run that worked: exit 0, the kernel check passed. */
static void assert_run_ok(const CliResult *r, const char *what)
{
    bool ok =
        r->code == 0 && !cli_crashed(r) && strstr(r->out, "kernel vs reference interpreter: PASS");
    if (!ok)
        cli_dump(what, r);
    assert_true(ok);
}

static void assert_said(const CliResult *r, const char *sub, const char *what)
{
    if (!strstr(r->err, sub)) {
        fprintf(stderr, "%s: expected '%s' on stderr\n", what, sub);
        cli_dump(what, r);
    }
    assert_non_null(strstr(r->err, sub));
}

/* The one entry file in dir (fails unless there is exactly one); no temp files left. */
static char *only_entry(const char *dir)
{
    char **names;
    int n = cli_list_dir(dir, ".kc", &names);
    if (n != 1)
        fprintf(stderr, "%s: %d entries, expected 1\n", dir, n);
    assert_int_equal(n, 1);
    char path[2048];
    snprintf(path, sizeof path, "%s/%s", dir, names[0]);
    cli_free_list(names, n);
    /* .tmp-* would be a writer's leftover */
    DIR *d = opendir(dir);
    assert_non_null(d);
    for (struct dirent *e; (e = readdir(d));)
        if (!strncmp(e->d_name, ".tmp-", 5))
            fail_msg("leftover temp file %s/%s", dir, e->d_name);
    closedir(d);
    return strdup(path);
}

static int count_entries(const char *dir)
{
    char **names;
    int n = cli_list_dir(dir, ".kc", &names);
    cli_free_list(names, n);
    return n;
}

/* First run misses and stores, second hits; same output. Returns the first stdout. */
static char *miss_then_hit(const char *dir, const char *home)
{
    CliResult r1, r2;
    run_kiln(&r1, dir, home, NULL);
    assert_run_ok(&r1, "first run");
    assert_said(&r1, "cache miss", "first run");
    assert_null(strstr(r1.err, "cache hit"));
    run_kiln(&r2, dir, home, NULL);
    assert_run_ok(&r2, "second run");
    assert_said(&r2, "cache hit", "second run");
    assert_null(strstr(r2.err, "cache miss"));
    char *o1 = stable_output(r1.out), *o2 = stable_output(r2.out);
    assert_string_equal(o1, o2);
    /* the kernel's symbol (content hash) is the same both times */
    const char *k1 = strstr(r1.err, "kernel kiln_qgemm_"),
               *k2 = strstr(r2.err, "kernel kiln_qgemm_");
    assert_non_null(k1);
    assert_non_null(k2);
    assert_memory_equal(k1, k2, strlen("kernel kiln_qgemm_") + 16);
    free(o2);
    cli_result_free(&r1);
    cli_result_free(&r2);
    return o1;
}

static void test_miss_then_hit(void **state)
{
    (void)state;
    char *dir = cli_mkdtemp("cache");
    char *out = miss_then_hit(dir, NULL);
    char *entry = only_entry(dir);
    size_t len;
    char *blob = cli_slurp(entry, &len);
    assert_true(len > HDR_BYTES);
    assert_memory_equal(blob, "KILNCACHE1", 10);
    free(blob);
    free(entry);
    free(out);
    cli_rm_rf(dir);
    free(dir);
}

/* Damage the entry, then: a warning naming it, a miss, the same output, and the
 * rebuilt entry hits on the next run. */
typedef enum {
    FLIP_PAYLOAD,
    FLIP_HEADER,
    TRUNCATE_PAYLOAD,
    TRUNCATE_HEADER,
    GARBAGE,
    EMPTY
} Damage;

static void damage_entry(const char *path, Damage how)
{
    size_t len;
    char *b = cli_slurp(path, &len);
    assert_non_null(b);
    assert_true(len > HDR_BYTES + 16);
    switch (how) {
    case FLIP_PAYLOAD:
        b[HDR_BYTES + (len - HDR_BYTES) / 2] ^= 0x5a;
        break;
    case FLIP_HEADER:
        b[24] ^= 0x01; /* the payload checksum */
        break;
    case TRUNCATE_PAYLOAD:
        len = HDR_BYTES + (len - HDR_BYTES) / 2;
        break;
    case TRUNCATE_HEADER:
        len = 40;
        break;
    case GARBAGE:
        for (size_t i = 0; i < len; i++)
            b[i] = (char)(i * 131 + 7);
        break;
    case EMPTY:
        len = 0;
        break;
    }
    assert_int_equal(cli_write_file(path, b, len), 0);
    free(b);
}

static void test_corrupted_entry(void **state)
{
    (void)state;
    static const Damage all[] = {FLIP_PAYLOAD,    FLIP_HEADER, TRUNCATE_PAYLOAD,
                                 TRUNCATE_HEADER, GARBAGE,     EMPTY};
    static const char *const names[] = {"flipped payload byte",
                                        "flipped checksum byte",
                                        "truncated payload",
                                        "truncated header",
                                        "garbage",
                                        "empty file"};
    char *dir = cli_mkdtemp("cache");
    char *want = miss_then_hit(dir, NULL);
    char *entry = only_entry(dir);
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
        damage_entry(entry, all[i]);
        CliResult r;
        run_kiln(&r, dir, NULL, NULL);
        assert_run_ok(&r, names[i]);
        assert_said(&r, "corrupted", names[i]);
        assert_said(&r, entry, names[i]); /* the warning names the file */
        assert_said(&r, "cache miss", names[i]);
        char *got = stable_output(r.out);
        assert_string_equal(got, want);
        free(got);
        cli_result_free(&r);
        free(only_entry(dir)); /* rebuilt under the same name */
        run_kiln(&r, dir, NULL, NULL);
        assert_run_ok(&r, names[i]);
        assert_said(&r, "cache hit", names[i]);
        assert_null(strstr(r.err, "corrupted"));
        cli_result_free(&r);
    }
    free(entry);
    free(want);
    cli_rm_rf(dir);
    free(dir);
}

/* Four processes compile the same kernel into an empty cache at once. */
static void test_concurrent_compiles(void **state)
{
    (void)state;
    enum { NPROC = 4 };
    for (int rep = 0; rep < 3; rep++) {
        char *dir = cli_mkdtemp("cache");
        char *logs = cli_mkdtemp("cachelogs");
        Env e;
        const char *const *env = cache_env(&e, dir, NULL);
        pid_t pid[NPROC];
        char out[NPROC][1200], err[NPROC][1200];
        for (int i = 0; i < NPROC; i++) {
            snprintf(out[i], sizeof out[i], "%s/out%d", logs, i);
            snprintf(err[i], sizeof err[i], "%s/err%d", logs, i);
            pid[i] = cli_start(run_argv, env, out[i], err[i]);
            assert_true(pid[i] > 0);
        }
        int codes[NPROC];
        for (int i = 0; i < NPROC; i++)
            codes[i] = cli_wait(pid[i]);
        char *first = NULL;
        int misses = 0;
        for (int i = 0; i < NPROC; i++) {
            CliResult r = {.code = codes[i]};
            r.out = cli_slurp(out[i], &r.out_len);
            r.err = cli_slurp(err[i], &r.err_len);
            assert_non_null(r.out);
            assert_non_null(r.err);
            assert_run_ok(&r, "concurrent run");
            misses += strstr(r.err, "cache miss") != NULL;
            char *s = stable_output(r.out);
            if (!first)
                first = s;
            else {
                assert_string_equal(s, first);
                free(s);
            }
            cli_result_free(&r);
        }
        printf("  round %d: %d of %d processes compiled (missed) at once\n", rep + 1, misses,
               NPROC);
        free(only_entry(dir)); /* one entry, no temp files */
        CliResult r;
        run_kiln(&r, dir, NULL, NULL);
        assert_run_ok(&r, "run after the concurrent ones");
        assert_said(&r, "cache hit", "run after the concurrent ones");
        char *s = stable_output(r.out);
        assert_string_equal(s, first);
        free(s);
        free(first);
        cli_result_free(&r);
        cli_rm_rf(logs);
        cli_rm_rf(dir);
        free(logs);
        free(dir);
    }
}

/* The key is the kernel: M is a run-time argument (same entry), N is not (new entry);
 * every distinct rule of a recipe gets its own entry. */
static void test_key_covers_kernel(void **state)
{
    (void)state;
    char *dir = cli_mkdtemp("cache");
    const char *m5[] = {KILN_BIN,   "run",  RECIPE,    "--shape",   "5,64,256",
                        "--target", "avx2", "--check", "--verbose", NULL};
    const char *n32[] = {KILN_BIN,   "run",  RECIPE,    "--shape",   "2,32,256",
                         "--target", "avx2", "--check", "--verbose", NULL};
    const char *mixed[] = {KILN_BIN,  "run",      SRC "/recipes/mixed.lua",
                           "--shape", "2,64,256", "--target",
                           "avx2",    "--check",  "--verbose",
                           NULL};
    CliResult r;
    run_kiln(&r, dir, NULL, NULL);
    assert_run_ok(&r, "M=2");
    assert_said(&r, "cache miss", "M=2");
    cli_result_free(&r);
    run_kiln(&r, dir, NULL, m5);
    assert_run_ok(&r, "M=5");
    assert_said(&r, "cache hit", "M=5 (M is not in the key)");
    cli_result_free(&r);
    assert_int_equal(count_entries(dir), 1);
    run_kiln(&r, dir, NULL, n32);
    assert_run_ok(&r, "N=32");
    assert_said(&r, "cache miss", "N=32 (N is in the key)");
    cli_result_free(&r);
    assert_int_equal(count_entries(dir), 2);
    run_kiln(&r, dir, NULL, mixed);
    assert_run_ok(&r, "mixed");
    assert_int_equal(cli_count(r.err, "cache miss"), 4); /* four rules, four kernels */
    cli_result_free(&r);
    assert_int_equal(count_entries(dir), 6);
    run_kiln(&r, dir, NULL, mixed);
    assert_run_ok(&r, "mixed again");
    assert_int_equal(cli_count(r.err, "cache hit"), 4);
    cli_result_free(&r);
    cli_rm_rf(dir);
    free(dir);
}

/* KILN_CACHE_DIR under a regular file can never be created (root included). Kiln
 * must either run without the cache and warn, or stop with a bad-input error (exit 2)
 * naming the directory — not claim a missing device (exit 3) or crash. */
static void test_unusable_cache_dir(void **state)
{
    (void)state;
    char *tmp = cli_mkdtemp("cache");
    char file[1200], dir[1300];
    snprintf(file, sizeof file, "%s/a-file", tmp);
    assert_int_equal(cli_write_file(file, "x", 1), 0);
    snprintf(dir, sizeof dir, "%s/sub", file);
    CliResult r, ri;
    run_kiln(&r, dir, NULL, NULL);
    /* kiln ir and the interpreter never touch the cache */
    const char *ir[] = {KILN_BIN, "ir", RECIPE, "--shape", SHAPE, "--target", "avx2", NULL};
    run_kiln(&ri, dir, NULL, ir);
    cli_rm_rf(tmp);
    free(tmp);
    bool ran_uncached = r.code == 0 && strstr(r.out, "kernel vs reference interpreter: PASS") &&
                        strstr(r.err, "warning") && strstr(r.err, "cache");
    bool failed_clearly = r.code == 2 && strstr(r.err, dir) && strstr(r.err, "cache");
    if (!(ran_uncached || failed_clearly) || cli_crashed(&r)) {
        fprintf(stderr,
                "KILN_CACHE_DIR=%s: expected a run without cache and a warning, or "
                "exit 2 naming the directory\n",
                dir);
        cli_dump("unusable cache dir", &r);
    }
    if (ri.code != 0)
        cli_dump("ir with an unusable cache dir", &ri);
    assert_int_equal(ri.code, 0);
    assert_false(cli_crashed(&r));
    assert_true(ran_uncached || failed_clearly);
    cli_result_free(&r);
    cli_result_free(&ri);
}

/* Without KILN_CACHE_DIR the cache lives in $HOME/.cache/kiln (created as needed). */
static void test_home_default(void **state)
{
    (void)state;
    char *home = cli_mkdtemp("home");
    free(miss_then_hit(NULL, home));
    char dir[1200];
    snprintf(dir, sizeof dir, "%s/.cache/kiln", home);
    free(only_entry(dir));
    cli_rm_rf(home);
    free(home);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_miss_then_hit),       cmocka_unit_test(test_corrupted_entry),
        cmocka_unit_test(test_concurrent_compiles), cmocka_unit_test(test_key_covers_kernel),
        cmocka_unit_test(test_unusable_cache_dir),  cmocka_unit_test(test_home_default),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
