/* tests/test_rss.h — a command run as a child with its peak resident set, for the memory
 * tests (test_model_memory, test_cmd_memory, test_calib_memory: docs/hardening.md,
 * "Memory"). static inline because every test is its own program. */
#ifndef KILN_TESTS_TEST_RSS_H
#define KILN_TESTS_TEST_RSS_H

#include <fcntl.h>
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

#endif
