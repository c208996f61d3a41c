/* tests/test_rss.h — a command run as a child with its peak resident set, and the scratch
 * directory kiln runs in, for the memory tests (test_*_memory: docs/hardening.md,
 * "Memory"). static inline because every test is its own program; the scratch part
 * needs <cmocka.h> (fail_msg) and runtime/runtime.h (kiln_rt_read_file) included first. */
#ifndef KILN_TESTS_TEST_RSS_H
#define KILN_TESTS_TEST_RSS_H

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

/* bin ARGS (NULL-terminated, at most 38) with stdout to out_path and stderr to err_path,
 * killed after alarm_s seconds (a hang is a failure, not a stuck suite): its exit status
 * (128 + signal when killed, -1 when it could not be run) and, in *maxrss, its peak
 * resident set in bytes (the child's own getrusage, through wait4). */
static inline int tr_run_peak(const char *bin, const char *const *args, const char *out_path,
                              const char *err_path, unsigned alarm_s, long long *maxrss)
{
    const char *argv[40] = {bin};
    int n = 1;
    for (int i = 0; args[i] && n < 39; i++)
        argv[n++] = args[i];
    argv[n] = NULL;
    pid_t pid = fork();
    if (pid == 0) {
        int o = open(out_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        int e = open(err_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (o < 0 || e < 0 || dup2(o, 1) < 0 || dup2(e, 2) < 0)
            _exit(127);
        alarm(alarm_s);
        execv(bin, (char *const *)argv);
        _exit(127);
    }
    int status = 0;
    struct rusage ru;
    if (pid < 0 || wait4(pid, &status, 0, &ru) != pid)
        return -1;
    *maxrss = (long long)ru.ru_maxrss * 1024; /* Linux: kilobytes */
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* The test's scratch directory: /tmp/kiln-test-TAG-XXXXXX made by tr_tmpdir_make (a
 * cmocka group setup), removed with all it holds by tr_tmpdir_remove (its teardown). */
static char tr_tmpdir[256];

static inline int tr_tmpdir_make(const char *tag)
{
    snprintf(tr_tmpdir, sizeof tr_tmpdir, "/tmp/kiln-test-%s-XXXXXX", tag);
    return mkdtemp(tr_tmpdir) ? 0 : -1;
}

static inline int tr_tmpdir_remove(void)
{
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tr_tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

/* ${KILN_MODELS_DIR:-$HOME/.cache/kiln/models}/rel into buf (scripts/fetch-models.sh). */
static inline const char *tr_model_path(const char *rel, char *buf, size_t n)
{
    const char *env = getenv("KILN_MODELS_DIR"), *home = getenv("HOME");
    if (env && *env)
        snprintf(buf, n, "%s/%s", env, rel);
    else
        snprintf(buf, n, "%s/.cache/kiln/models/%s", home ? home : ".", rel);
    return buf;
}

/* The weight_bytes of the recipe row (the second) of kiln eval --json's output at path. */
static inline double tr_weight_bytes(const char *json_path)
{
    KilnJson *j = NULL;
    KilnDiag d = {0};
    if (kiln_json_parse_file(json_path, &j, &d))
        fail_msg("%s: %s", json_path, d.msg);
    const KilnJson *rows = kiln_json_get(j, "rows");
    assert_non_null(rows);
    assert_true(rows->kind == KILN_JSON_ARRAY && rows->len >= 2);
    const KilnJson *wb = kiln_json_get(&rows->items[1], "weight_bytes");
    assert_non_null(wb);
    double v = kiln_json_num(wb);
    kiln_json_free(j);
    return v;
}

/* Under a sanitizer a peak resident set is mostly ASan's shadow memory and quarantine, not
 * kiln's: the limit is checked in the plain build only, and the sanitized build runs each
 * command for its errors on the smallest workload that drives the same code (one window of
 * 64 positions instead of 512, a 64-token prompt, no warm-up run whose only purpose is a
 * kernel cache that keeps LLVM's compile memory out of the measured peak). TR_SIZE(plain,
 * sanitized) picks the workload, TR_SAN_ARGS(...) ends an argument list in the plain build
 * and adds the arguments under a sanitizer (docs/testing.md, "Suite time"). */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define TR_SANITIZED 1
#else
#define TR_SANITIZED 0
#endif
#define TR_SIZE(plain, sanitized) (TR_SANITIZED ? (sanitized) : (plain))
#if TR_SANITIZED
#define TR_SAN_ARGS(...) __VA_ARGS__
#else
#define TR_SAN_ARGS(...) NULL
#endif

/* A command's peak within twice the model's size, printed either way; the limit is checked
 * in the plain build only (a sanitizer's shadow memory is not kiln's). */
static inline void tr_check_peak(const char *what, long long rss, double size)
{
    printf("%-66s peak RSS %7.1f MB; model size %6.1f MB: %.2fx\n", what, rss / 1e6,
           size / 1e6, rss / size);
    assert_true(rss > 0);
    if (!TR_SANITIZED && (double)rss > 2.0 * size)
        fail_msg("%s: peak RSS %.1f MB is over twice the model's %.1f MB", what, rss / 1e6,
                 size / 1e6);
}

#ifdef KILN_BIN
/* kiln ARGS as a child (stdout to tr_tmpdir/out, stderr to tr_tmpdir/err), killed after
 * alarm_s, which must exit 0 (else the test fails with kiln's stderr): its peak resident
 * set in bytes. */
static inline long long tr_kiln(const char *const *args, unsigned alarm_s)
{
    char out[400], err[400];
    snprintf(out, sizeof out, "%s/out", tr_tmpdir);
    snprintf(err, sizeof err, "%s/err", tr_tmpdir);
    long long rss = 0;
    int code = tr_run_peak(KILN_BIN, args, out, err, alarm_s, &rss);
    if (code != 0) {
        char *e = NULL;
        size_t len = 0;
        kiln_rt_read_file(err, "stderr", 1 << 20, &e, &len, NULL);
        fail_msg("kiln %s %s: exit %d: %s", args[0], args[1], code, e ? e : "");
    }
    return rss;
}

/* SmolLM2's size under the recipe at rp (a path): the bigger of its GGUF file and the
 * recipe's weights (kiln eval --json's recipe row), one kiln eval --tokens 8 a recipe and
 * test. That run also fills the kernel cache, so no run measured after it pays LLVM's
 * compile memory (docs/hardening.md). */
static inline double tr_smollm2_size(const char *rp)
{
    static struct { char rp[1200]; double size; } memo[8];
    static int nmemo;
    for (int i = 0; i < nmemo; i++)
        if (!strcmp(memo[i].rp, rp))
            return memo[i].size;
    char file[1200], out[400];
    tr_model_path("smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", file, sizeof file);
    struct stat s;
    if (stat(file, &s))
        fail_msg("%s missing: run scripts/fetch-models.sh", file);
    const char *args[] = {"eval", rp, "--model", "smollm2", "--tokens", "8", "--json", "--quiet",
                          NULL};
    tr_kiln(args, 600);
    snprintf(out, sizeof out, "%s/out", tr_tmpdir);
    double wb = tr_weight_bytes(out);
    double w = wb > (double)s.st_size ? wb : (double)s.st_size;
    if (nmemo < 8) {
        snprintf(memo[nmemo].rp, sizeof memo[nmemo].rp, "%s", rp);
        memo[nmemo++].size = w;
    }
    return w;
}
#endif

#endif
