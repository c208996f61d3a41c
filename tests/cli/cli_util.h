/* tests/cli/cli_util.h — helpers for the end-to-end tests of the `kiln` command:
 * run it as a child process with its own environment and capture stdout, stderr and
 * the exit status separately; temp dirs, small string helpers. File reading and
 * directory listing come from tests/test_util.h (cli_slurp/cli_list_dir wrap them). */
#ifndef KILN_TESTS_CLI_UTIL_H
#define KILN_TESTS_CLI_UTIL_H

/* Include this first: it asks for the POSIX/GNU declarations (mkdtemp, nftw). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../test_util.h"

typedef struct CliResult {
    char *out; /* stdout, NUL-terminated, malloc'd */
    char *err; /* stderr */
    size_t out_len, err_len;
    int code; /* exit status; 128 + signal when killed by one; -1 when it could not start */
    double secs;
} CliResult;

static inline double cli_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static inline void cli_result_free(CliResult *r)
{
    free(r->out);
    free(r->err);
    memset(r, 0, sizeof *r);
}

/* env: "NAME=value" sets, "NAME" alone unsets; NULL-terminated, may be NULL. Called
 * in the child only, so the test process's own environment never changes. */
static inline void cli_apply_env(const char *const *env)
{
    for (int i = 0; env && env[i]; i++) {
        const char *eq = strchr(env[i], '=');
        if (!eq) {
            unsetenv(env[i]);
            continue;
        }
        char name[256];
        size_t n =
            (size_t)(eq - env[i]) < sizeof name - 1 ? (size_t)(eq - env[i]) : sizeof name - 1;
        memcpy(name, env[i], n);
        name[n] = 0;
        setenv(name, eq + 1, 1);
    }
}

static inline int cli_status_code(int status)
{
    if (WIFEXITED(status))
        return WEXITSTATUS(status);
    if (WIFSIGNALED(status))
        return 128 + WTERMSIG(status);
    return -1;
}

static inline int cli_append(char **buf, size_t *len, size_t *cap, const char *p, size_t n)
{
    if (*len + n + 1 > *cap) {
        size_t c = *cap ? *cap : 4096;
        while (*len + n + 1 > c)
            c *= 2;
        char *b = realloc(*buf, c);
        if (!b)
            return -1;
        *buf = b;
        *cap = c;
    }
    memcpy(*buf + *len, p, n);
    *len += n;
    (*buf)[*len] = 0;
    return 0;
}

/* Run argv[0] (a path) with argv; stdin is /dev/null. Reads both pipes with poll so a
 * child that fills one pipe cannot deadlock against us. */
static inline int cli_run_env(const char *const *argv, const char *const *env, CliResult *r)
{
    memset(r, 0, sizeof *r);
    r->code = -1;
    int po[2], pe[2];
    if (pipe(po) != 0)
        return -1;
    if (pipe(pe) != 0) {
        close(po[0]);
        close(po[1]);
        return -1;
    }
    double t0 = cli_now();
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        int dn = open("/dev/null", O_RDONLY);
        if (dn >= 0)
            dup2(dn, 0);
        dup2(po[1], 1);
        dup2(pe[1], 2);
        close(po[0]);
        close(po[1]);
        close(pe[0]);
        close(pe[1]);
        cli_apply_env(env);
        execv(argv[0], (char *const *)argv);
        fprintf(stderr, "cli_run: cannot exec %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    close(po[1]);
    close(pe[1]);
    size_t cap_o = 0, cap_e = 0;
    cli_append(&r->out, &r->out_len, &cap_o, "", 0);
    cli_append(&r->err, &r->err_len, &cap_e, "", 0);
    struct pollfd fds[2] = {{.fd = po[0], .events = POLLIN}, {.fd = pe[0], .events = POLLIN}};
    int open_fds = 2;
    char buf[65536];
    while (open_fds > 0) {
        if (poll(fds, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        for (int i = 0; i < 2; i++) {
            if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR)))
                continue;
            ssize_t n = read(fds[i].fd, buf, sizeof buf);
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0) {
                close(fds[i].fd);
                fds[i].fd = -1;
                open_fds--;
            } else if (i == 0) {
                cli_append(&r->out, &r->out_len, &cap_o, buf, (size_t)n);
            } else {
                cli_append(&r->err, &r->err_len, &cap_e, buf, (size_t)n);
            }
        }
    }
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    r->code = cli_status_code(status);
    r->secs = cli_now() - t0;
    return 0;
}

/* Start a child with stdout/stderr sent to files; wait for it with cli_wait. For
 * running several at once. */
static inline pid_t cli_start(const char *const *argv, const char *const *env, const char *out_path,
                              const char *err_path)
{
    fflush(NULL);
    pid_t pid = fork();
    if (pid != 0)
        return pid;
    int dn = open("/dev/null", O_RDONLY);
    int fo = open(out_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    int fe = open(err_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (dn < 0 || fo < 0 || fe < 0)
        _exit(126);
    dup2(dn, 0);
    dup2(fo, 1);
    dup2(fe, 2);
    cli_apply_env(env);
    execv(argv[0], (char *const *)argv);
    _exit(127);
}

static inline int cli_wait(pid_t pid)
{
    int status = 0;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR)
            return -1;
    return cli_status_code(status);
}

/* Whole file, NUL-terminated; *len gets its size when non-NULL. NULL if unreadable. */
static inline char *cli_slurp(const char *path, size_t *len)
{
    return tu_read_file(path, len);
}

static inline int cli_write_file(const char *path, const void *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    size_t w = fwrite(data, 1, n, f);
    return fclose(f) == 0 && w == n ? 0 : -1;
}

/* A fresh directory under $TMPDIR (or /tmp); the caller frees the string. Without one
 * no test can run, so failing to make it ends the program. */
static inline char *cli_mkdtemp(const char *tag)
{
    const char *base = getenv("TMPDIR");
    char path[1024];
    snprintf(path, sizeof path, "%s/kiln-%s-XXXXXX", base && *base ? base : "/tmp", tag);
    char *s = mkdtemp(path) ? strdup(path) : NULL;
    if (!s) {
        fprintf(stderr, "cli_mkdtemp: cannot create %s: %s\n", path, strerror(errno));
        exit(1);
    }
    return s;
}

static inline int cli_rm_one(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    remove(p);
    return 0;
}

static inline void cli_rm_rf(const char *path)
{
    if (path)
        nftw(path, cli_rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* Sorted names in dir ending in suffix (and not starting with '.': editor and lock
 * files); returns the count, -1 if dir cannot be read. Free with cli_free_list. */
static inline int cli_list_dir(const char *dir, const char *suffix, char ***names)
{
    int n = tu_list_dir(dir, suffix, names);
    int k = 0;
    for (int i = 0; i < n; i++) {
        if ((*names)[i][0] == '.')
            free((*names)[i]);
        else
            (*names)[k++] = (*names)[i];
    }
    if (n > 0 && k == 0) { /* as before: no names, no array to free */
        free(*names);
        *names = NULL;
    }
    return n < 0 ? n : k;
}

static inline void cli_free_list(char **v, int n)
{
    tu_free_list(v, n);
}

static inline int cli_count(const char *s, const char *sub)
{
    int n = 0;
    size_t l = strlen(sub);
    for (const char *p = s; (p = strstr(p, sub)); p += l)
        n++;
    return n;
}

/* A child that died of a signal or a sanitizer report is a crash, whatever it says. */
static inline bool cli_crashed(const CliResult *r)
{
    return r->code < 0 || r->code >= 128 || strstr(r->err, "Sanitizer") ||
           strstr(r->err, "runtime error:");
}

/* Print a result for a failing assertion's context. */
static inline void cli_dump(const char *what, const CliResult *r)
{
    fprintf(stderr, "--- %s: exit %d (%.2fs)\n--- stdout:\n%s--- stderr:\n%s---\n", what, r->code,
            r->secs, r->out, r->err);
}

#endif
