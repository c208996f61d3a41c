/* runtime/report.h — results a person reads or keeps: text tables whose columns are
 * sized to their content (kiln eval, kiln bench), the same tables as Markdown, the
 * header of a `--report FILE.md` (command, date, host, kiln version, target) and plots
 * drawn by gnuplot beside it. Plots are never worth failing a command for: without
 * gnuplot a report says so and keeps its tables. */
#ifndef KILN_REPORT_H
#define KILN_REPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#define KILN_TABLE_MAX_COLS 12

/* A table of text cells filled row by row; align is one letter a column: 'l' or 'r'. */
typedef struct KilnTable {
    int ncol, ncell, cap;
    const char *head[KILN_TABLE_MAX_COLS];
    char align[KILN_TABLE_MAX_COLS + 1];
    char **cells; /* ncell of them, row-major; malloc'd */
    bool oom;     /* a cell could not be stored: printing says so instead of misaligning */
} KilnTable;

void kiln_table_init(KilnTable *t, const char *align, const char *const *head);
/* The next cell (printf-style); the row ends after ncol cells. */
void kiln_table_cell(KilnTable *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Text: each column as wide as its widest cell, two spaces between columns, the last
 * column never padded. indent: spaces before each line. */
void kiln_table_print(const KilnTable *t, FILE *f, int indent);
/* Markdown (a pipe table; '|' in a cell escaped). */
void kiln_table_markdown(const KilnTable *t, FILE *f);
void kiln_table_free(KilnTable *t);

/* The report's opening: "# title", then the command line, the date (UTC), the host
 * (CPU model from /proc/cpuinfo, online cores), the kiln version and the target. */
void kiln_report_header(FILE *f, const char *title, const char *cmdline, const char *target);
/* The CPU model name /proc/cpuinfo gives ("unknown" without one). */
void kiln_report_cpu_model(char *out, size_t n);

/* Runs gnuplot (KILN_GNUPLOT, else "gnuplot" on PATH) on script with `set terminal
 * pngcairo` (svg when png_path ends in .svg) and `set output` already said, writing
 * png_path. 0 when the file was made; else -1 with why (for the report) in why. */
int kiln_report_plot(const char *png_path, const char *script, char *why, size_t n);

/* Whether path can be written, asked before a long run so a bad --report fails first:
 * opened to append (nothing truncated) and closed. 0, or an errno; *created: the file
 * did not exist before (so a failed run can remove it again). */
int kiln_report_probe(const char *path, bool *created);

/* The file beside report_path named <report stem><suffix> ("runs/a.md", "-sqnr.png"
 * -> "runs/a-sqnr.png"); base gets its name alone, for the link. -1 if too long. */
int kiln_report_beside(const char *report_path, const char *suffix, char *path, size_t n,
                       char *base, size_t nb);

#endif
