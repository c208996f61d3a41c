/* tests/test_rss.h — a command run as a child with its peak resident set, and the scratch
 * directory kiln runs in, for the memory tests (test_*_memory: docs/hardening.md,
 * "Memory"). static inline because every test is its own program; the scratch part
 * needs <cmocka.h> (fail_msg) and runtime/runtime.h (kiln_rt_read_file) included first. */
#ifndef KILN_TESTS_TEST_RSS_H
#define KILN_TESTS_TEST_RSS_H

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <signal.h>
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
#endif

#endif
