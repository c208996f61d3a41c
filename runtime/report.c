/* runtime/report.c — tables sized to their content (text and Markdown), the header of a
 * kept report, and plots by gnuplot (runtime/report.h). */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "runtime/report.h"

void kiln_table_init(KilnTable *t, const char *align, const char *const *head)
{
    *t = (KilnTable){0};
    size_t n = strlen(align);
    t->ncol = n < KILN_TABLE_MAX_COLS ? (int)n : KILN_TABLE_MAX_COLS;
    for (int c = 0; c < t->ncol; c++)
        t->head[c] = head[c], t->align[c] = align[c];
}

void kiln_table_cell(KilnTable *t, const char *fmt, ...)
{
    if (t->oom)
        return;
    if (t->ncell == t->cap) {
        int cap = t->cap ? 2 * t->cap : 64;
        char **c = realloc(t->cells, sizeof *c * (size_t)cap);
        if (!c) {
            t->oom = true;
            return;
        }
        t->cells = c, t->cap = cap;
    }
    va_list ap;
    va_start(ap, fmt);
    char *s = NULL;
    if (vasprintf(&s, fmt, ap) < 0)
        s = NULL;
    va_end(ap);
    if (!s) {
        t->oom = true;
        return;
    }
    t->cells[t->ncell++] = s;
}

static const char *cell(const KilnTable *t, int row, int col)
{
    int i = row * t->ncol + col;
    return row < 0 ? t->head[col] : i < t->ncell ? t->cells[i] : "";
}

void kiln_table_print(const KilnTable *t, FILE *f, int indent)
{
    if (t->oom) {
        fprintf(f, "%*s(table omitted: out of memory)\n", indent, "");
        return;
    }
    int nrow = t->ncol ? (t->ncell + t->ncol - 1) / t->ncol : 0;
    size_t w[KILN_TABLE_MAX_COLS] = {0};
    for (int r = -1; r < nrow; r++)
        for (int c = 0; c < t->ncol; c++) {
            size_t l = strlen(cell(t, r, c));
            w[c] = l > w[c] ? l : w[c];
        }
    for (int r = -1; r < nrow; r++) {
        fprintf(f, "%*s", indent, "");
        for (int c = 0; c < t->ncol; c++) {
            const char *s = cell(t, r, c);
            bool last = c + 1 == t->ncol;
            if (t->align[c] == 'r')
                fprintf(f, "%*s", (int)w[c], s);
            else
                fprintf(f, "%-*s", last ? 0 : (int)w[c], s);
            fputs(last ? "\n" : "  ", f);
        }
    }
}

static void md_cell(FILE *f, const char *s)
{
    fputc(' ', f);
    for (; *s; s++) {
        if (*s == '|')
            fputc('\\', f);
        fputc(*s == '\n' ? ' ' : *s, f);
    }
    fputs(" |", f);
}

void kiln_table_markdown(const KilnTable *t, FILE *f)
{
    if (t->oom) {
        fputs("(table omitted: out of memory)\n", f);
        return;
    }
    int nrow = t->ncol ? (t->ncell + t->ncol - 1) / t->ncol : 0;
    for (int r = -1; r < nrow; r++) {
        fputc('|', f);
        for (int c = 0; c < t->ncol; c++)
            md_cell(f, cell(t, r, c));
        fputc('\n', f);
        if (r == -1) {
            fputc('|', f);
            for (int c = 0; c < t->ncol; c++)
                fputs(t->align[c] == 'r' ? "---:|" : "---|", f);
            fputc('\n', f);
        }
    }
}

void kiln_table_free(KilnTable *t)
{
    for (int i = 0; i < t->ncell; i++)
        free(t->cells[i]);
    free(t->cells);
    *t = (KilnTable){0};
}

void kiln_report_cpu_model(char *out, size_t n)
{
    snprintf(out, n, "unknown");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f)
        return;
    char line[512];
    while (fgets(line, sizeof line, f)) {
        char *colon = strchr(line, ':');
        if (strncmp(line, "model name", 10) || !colon)
            continue;
        char *v = colon + 1;
        v += strspn(v, " \t");
        v[strcspn(v, "\n")] = 0;
        snprintf(out, n, "%s", v);
        break;
    }
    fclose(f);
}

void kiln_report_header(FILE *f, const char *title, const char *cmdline, const char *target)
{
    char cpu[256], date[64] = "?";
    kiln_report_cpu_model(cpu, sizeof cpu);
    time_t now = time(NULL);
    struct tm tm;
    if (gmtime_r(&now, &tm))
        strftime(date, sizeof date, "%Y-%m-%d %H:%M:%S UTC", &tm);
    fprintf(f, "# %s\n\n", title);
    fprintf(f, "| | |\n|---|---|\n");
    fputs("| command | `", f);
    for (const char *c = cmdline ? cmdline : "?"; *c; c++) /* one code span, one cell */
        *c == '`' ? fputc('\'', f) : *c == '|' ? fputs("\\|", f) : fputc(*c, f);
    fputs("` |\n", f);
    fprintf(f, "| date | %s |\n", date);
    fprintf(f, "| host | %s, %ld cores online |\n", cpu, sysconf(_SC_NPROCESSORS_ONLN));
    fprintf(f, "| kiln | %s |\n", KILN_VERSION);
    fprintf(f, "| target | %s |\n\n", target ? target : "?");
}

/* The program named by KILN_GNUPLOT or "gnuplot", found on PATH (or as given when it
 * holds a '/'); 0 with its path in out, else -1. */
static int find_gnuplot(char *out, size_t n)
{
    const char *prog = getenv("KILN_GNUPLOT");
    prog = prog && *prog ? prog : "gnuplot";
    if (strchr(prog, '/')) {
        snprintf(out, n, "%s", prog);
        return access(out, X_OK) ? -1 : 0;
    }
    const char *path = getenv("PATH");
    for (const char *p = path ? path : "/usr/bin:/bin"; *p;) {
        size_t l = strcspn(p, ":");
        if ((size_t)snprintf(out, n, "%.*s/%s", (int)l, p, prog) < n && !access(out, X_OK))
            return 0;
        p += l + (p[l] == ':');
    }
    return -1;
}

/* gnuplot's single-quoted strings: a path with a quote or a line break is refused. */
static bool plain_path(const char *s)
{
    return !strpbrk(s, "'\n\r");
}

int kiln_report_plot(const char *png_path, const char *script, char *why, size_t n)
{
    char prog[4096];
    if (find_gnuplot(prog, sizeof prog)) {
        snprintf(why, n, "gnuplot was not found (install Debian's gnuplot-nox, or set "
                         "KILN_GNUPLOT)");
        return -1;
    }
    if (!plain_path(png_path)) {
        snprintf(why, n, "the plot's path holds a quote or a line break");
        return -1;
    }
    int fd[2];
    if (pipe(fd)) {
        snprintf(why, n, "cannot start gnuplot: %s", strerror(errno));
        return -1;
    }
    unlink(png_path); /* a stale plot must not pass for this run's */
    pid_t pid = fork();
    if (pid == 0) {
        int dn = open("/dev/null", O_WRONLY);
        dup2(fd[0], 0);
        if (dn >= 0)
            dup2(dn, 1), dup2(dn, 2);
        close(fd[0]), close(fd[1]);
        execl(prog, prog, (char *)NULL);
        _exit(127);
    }
    close(fd[0]);
    if (pid < 0) {
        close(fd[1]);
        snprintf(why, n, "cannot start gnuplot: %s", strerror(errno));
        return -1;
    }
    struct sigaction ign = {.sa_handler = SIG_IGN}, old;
    sigaction(SIGPIPE, &ign, &old); /* gnuplot may exit before reading all of it */
    FILE *w = fdopen(fd[1], "w");
    if (w) {
        size_t l = strlen(png_path);
        bool svg = l > 4 && !strcmp(png_path + l - 4, ".svg");
        fprintf(w, "set terminal %s\nset output '%s'\n%s\n",
                svg ? "svg noenhanced size 900,500 dynamic" : "pngcairo noenhanced size 900,500", png_path, script);
        fclose(w);
    } else {
        close(fd[1]);
    }
    int st = 0;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    sigaction(SIGPIPE, &old, NULL);
    struct stat sb;
    if (!WIFEXITED(st) || WEXITSTATUS(st)) {
        snprintf(why, n, "gnuplot (%s) failed with status %d", prog,
                 WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
        return -1;
    }
    if (stat(png_path, &sb) || sb.st_size == 0) {
        snprintf(why, n, "gnuplot (%s) wrote no plot", prog);
        return -1;
    }
    return 0;
}

int kiln_report_probe(const char *path, bool *created)
{
    struct stat st;
    *created = stat(path, &st) != 0;
    FILE *f = fopen(path, "a");
    if (!f)
        return errno ? errno : EIO;
    fclose(f);
    return 0;
}

int kiln_report_beside(const char *report_path, const char *suffix, char *path, size_t n,
                       char *base, size_t nb)
{
    const char *slash = strrchr(report_path, '/');
    const char *name = slash ? slash + 1 : report_path;
    const char *dot = strrchr(name, '.');
    size_t stem = dot && dot != name ? (size_t)(dot - report_path) : strlen(report_path);
    size_t bstem = stem - (size_t)(name - report_path);
    if ((size_t)snprintf(path, n, "%.*s%s", (int)stem, report_path, suffix) >= n)
        return -1;
    if ((size_t)snprintf(base, nb, "%.*s%s", (int)bstem, name, suffix) >= nb)
        return -1;
    return 0;
}
