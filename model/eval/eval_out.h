/* model/eval/eval_out.h — what kiln eval shows and keeps (model/eval/report.c): its
 * rows, the text table on stdout and the Markdown report of --report with its plot. */
#ifndef KILN_MODEL_EVAL_OUT_H
#define KILN_MODEL_EVAL_OUT_H

#include <stdbool.h>
#include <stdio.h>

#include "model/model.h"

typedef struct KilnEvalRow {
    char name[128];
    char kv[48];
    double metric, metric_min; /* ppl, or mean / min cosine */
    double wbytes;
    double ms_per_unit, units_per_s; /* per token (decoder) or per sentence (encoder) */
    double kv_bytes;                 /* per token */
    char kernels[600];
} KilnEvalRow;

typedef struct KilnEvalOut {
    const char *title, *texts, *target, *model;
    bool dec;
    const KilnEvalRow *rows;
    int nrows;
    const KilnLinear *ls; /* the model's linear layers in model order (depth) */
    int nl;
    KilnLinear **order; /* the same, worst SQNR first; NULL without per-layer numbers */
} KilnEvalOut;

double kiln_eval_sqnr_db(const KilnLinear *l);
/* The table (and with order, the per-layer SQNR, worst first) on f. */
void kiln_eval_print_text(const KilnEvalOut *o, FILE *f);
/* The Markdown report of `kiln eval --report path` into f (opened on path): header, the
 * table, per-layer errors in depth order and the SQNR-against-depth plot, drawn by
 * gnuplot beside path and linked (or a line saying why there is none). */
void kiln_eval_report(const KilnEvalOut *o, const char *cmdline, const char *path, FILE *f);

#endif
