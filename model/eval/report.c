/* model/eval/report.c — kiln eval's results as people see them: the table on stdout
 * (columns sized to content, so a long recipe name or kernel keeps them straight) and
 * the Markdown report of --report with its per-layer SQNR plot (gnuplot). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/eval/eval_out.h"
#include "runtime/report.h"

double kiln_eval_sqnr_db(const KilnLinear *l)
{
    return l->noise > 0 ? 10 * log10(l->sig / l->noise) : INFINITY;
}

static void results_table(const KilnEvalOut *o, KilnTable *t)
{
    const char *head[] = {"row", o->dec ? "ppl" : "cos_mean", o->dec ? "dppl%" : "cos_min",
                          "weight_MB", o->dec ? "ms/tok" : "ms/sent", o->dec ? "tok/s" : "sent/s",
                          o->dec ? "kv (B/token)" : "kernels", "kernels"};
    kiln_table_init(t, o->dec ? "lrrrrrll" : "lrrrrrl", head);
    for (int i = 0; i < o->nrows; i++) {
        const KilnEvalRow *r = &o->rows[i];
        kiln_table_cell(t, "%s", r->name);
        if (o->dec) {
            kiln_table_cell(t, "%.4f", r->metric);
            kiln_table_cell(t, "%+.3f", 100 * (r->metric / o->rows[0].metric - 1));
        } else {
            kiln_table_cell(t, "%.5f", r->metric);
            kiln_table_cell(t, "%.5f", r->metric_min);
        }
        kiln_table_cell(t, "%.2f", r->wbytes / 1e6);
        kiln_table_cell(t, "%.3f", r->ms_per_unit);
        kiln_table_cell(t, "%.1f", r->units_per_s);
        if (o->dec)
            kiln_table_cell(t, "%s (%.0f)", r->kv, r->kv_bytes);
        kiln_table_cell(t, "%s", r->kernels);
    }
}

/* Per-layer rows: layers[i] for i < n; with index, a depth column first. */
static void layer_table(KilnLinear *const *layers, const KilnLinear *flat, int n, bool index,
                        KilnTable *t)
{
    const char *head[] = {"#", "layer", "SQNR_dB", "kernel", "weight_bytes"};
    kiln_table_init(t, index ? "rlrlr" : "lrlr", index ? head : head + 1);
    for (int i = 0; i < n; i++) {
        const KilnLinear *l = layers ? layers[i] : &flat[i];
        if (index)
            kiln_table_cell(t, "%d", i);
        kiln_table_cell(t, "%s", l->name);
        kiln_table_cell(t, "%.2f", kiln_eval_sqnr_db(l));
        kiln_table_cell(t, "%s", l->kernel);
        kiln_table_cell(t, "%zu", l->wbytes);
    }
}

void kiln_eval_print_text(const KilnEvalOut *o, FILE *f)
{
    KilnTable t;
    fprintf(f, "%s\n%s\n\n", o->title, o->texts);
    results_table(o, &t);
    kiln_table_print(&t, f, 0);
    kiln_table_free(&t);
    if (o->order) {
        fprintf(f, "\nper-layer SQNR of the recipe's output vs f32 on the same input (worst "
                   "first)\n");
        layer_table(o->order, NULL, o->nl, false, &t);
        kiln_table_print(&t, f, 0);
        kiln_table_free(&t);
    }
}

/* gnuplot's double-quoted title: no quote, backslash or control character. */
static void plot_text(char *dst, size_t n, const char *s)
{
    size_t j = 0;
    for (; *s && j + 1 < n; s++)
        dst[j++] = *s == '"' || *s == '\\' || (unsigned char)*s < 0x20 ? '_' : *s;
    dst[j] = 0;
}

/* A layer's kind: its name after the block number ("model.layers.3.mlp.up_proj" ->
 * "mlp.up_proj"), or the whole name outside the blocks (lm_head). */
static const char *layer_kind(const char *name)
{
    for (const char *p = name; *p; p++)
        if (p[0] == '.' && p[1] >= '0' && p[1] <= '9') {
            const char *q = p + 1 + strspn(p + 1, "0123456789");
            if (*q == '.')
                return q + 1;
        }
    return name;
}

#define PLOT_MAX_KINDS 8

/* Plotted: quantized layers. One the recipe left in f32 (ignored) measures only the
 * rounding of two f32 kernels (~120 dB) and would flatten the rest; the table has it. */
static bool plotted(const KilnLinear *l)
{
    return isfinite(kiln_eval_sqnr_db(l)) && strcmp(l->kernel, "f32") &&
           !strstr(l->kernel, ": w f32,");
}

/* The plot's data: one series per layer kind (a person sees at once which projection
 * suffers), or one series when there are more kinds than a key holds. Layers that ran
 * in f32 (infinite SQNR) are left out. Returns the points written. */
static int plot_series(const KilnEvalOut *o, char *script, size_t cap, size_t p)
{
    const char *kinds[PLOT_MAX_KINDS];
    int nk = 0, np = 0;
    bool one = false;
    for (int i = 0; i < o->nl && !one; i++) {
        const char *k = layer_kind(o->ls[i].name);
        int j = 0;
        while (j < nk && strcmp(kinds[j], k))
            j++;
        if (j == nk && plotted(&o->ls[i]))
            nk < PLOT_MAX_KINDS ? (void)(kinds[nk++] = k) : (void)(one = true);
    }
    if (one || nk == 0)
        nk = 1;
    char t[64];
    p += (size_t)snprintf(script + p, cap - p, "%s\nplot ", one || nk == 1 ? "set key off"
                                                                         : "set key outside");
    for (int j = 0; j < nk && p < cap; j++) {
        plot_text(t, sizeof t, one ? "" : kinds[j]);
        p += (size_t)snprintf(script + p, cap - p,
                              "%s'-' using 1:2 title \"%s\" with linespoints pt 7 ps 0.6",
                              j ? ", " : "", t);
    }
    p += (size_t)snprintf(script + p, p < cap ? cap - p : 0, "\n");
    for (int j = 0; j < nk && p < cap; j++) {
        for (int i = 0; i < o->nl && p < cap; i++) {
            if (plotted(&o->ls[i]) &&
                (one || nk == 1 || !strcmp(layer_kind(o->ls[i].name), kinds[j])))
                p += (size_t)snprintf(script + p, cap - p, "%d %.4f\n", i,
                                      kiln_eval_sqnr_db(&o->ls[i])),
                    np++;
        }
        p += (size_t)snprintf(script + p, p < cap ? cap - p : 0, "e\n");
    }
    return p < cap ? np : 0;
}

/* The SQNR-against-depth plot beside path; writes its link or why there is none. */
static void sqnr_plot(const KilnEvalOut *o, const char *path, FILE *f)
{
    char png[4200], base[1100], why[300], title[300];
    size_t cap = 2048 + (size_t)o->nl * 40;
    char *script = malloc(cap);
    if (kiln_report_beside(path, "-sqnr.png", png, sizeof png, base, sizeof base) || !script) {
        fprintf(f, "No plot: its file name would be too long.\n\n");
        free(script);
        return;
    }
    plot_text(title, sizeof title, o->rows[o->nrows > 1].name);
    size_t p = (size_t)snprintf(script, cap,
                                "set title \"per-layer SQNR vs f32: %s\"\n"
                                "set xlabel \"layer index (depth, model order)\"\n"
                                "set ylabel \"SQNR (dB)\"\nset grid\nset xrange [-1:%d]\n",
                                title, o->nl);
    int np = plot_series(o, script, cap, p);
    if (!np)
        snprintf(why, sizeof why, "every layer ran in f32 (nothing quantized to plot)");
    if (np && !kiln_report_plot(png, script, why, sizeof why))
        fprintf(f, "![per-layer SQNR against depth](%s)\n\n", base);
    else
        fprintf(f, "No plot: %s. The table below has the same numbers.\n\n", why);
    free(script);
}

void kiln_eval_report(const KilnEvalOut *o, const char *cmdline, const char *path, FILE *f)
{
    char title[400];
    const char *model = strrchr(o->model, '/') && strrchr(o->model, '/')[1]
                            ? strrchr(o->model, '/') + 1 : o->model;
    snprintf(title, sizeof title, "kiln eval: %s on %s", o->nrows > 1 ? o->rows[1].name : "?",
             model);
    kiln_report_header(f, title, cmdline, o->target);
    fprintf(f, "%s\n\n%s\n\n## Results\n\n", o->title, o->texts);
    KilnTable t;
    results_table(o, &t);
    kiln_table_markdown(&t, f);
    kiln_table_free(&t);
    fprintf(f, "\n%s\n\n",
            o->dec ? "ppl: perplexity of the evaluation text; dppl%: its increase over f32."
                   : "cos_mean / cos_min: cosine similarity of each sentence's embedding to "
                     "f32's.");
    fprintf(f, "The recipe's ms and rates include, per layer, the f32 GEMM the SQNR below is "
               "measured against (as with `--per-layer`); time a run without `--report` for "
               "speed.\n\n## Per-layer errors\n\n");
    fprintf(f, "SQNR (dB) of each linear layer's output under the recipe against f32's on the "
               "same input, 10·log10(Σ y² / Σ (y − y_f32)²); higher is better, inf: the layer "
               "ran in f32. The plot leaves out layers the recipe kept in f32.\n\n");
    if (o->order && o->nl > 0)
        fprintf(f, "Worst layer: `%s` at %.2f dB.\n\n", o->order[0]->name,
                kiln_eval_sqnr_db(o->order[0]));
    sqnr_plot(o, path, f);
    layer_table(NULL, o->ls, o->nl, true, &t);
    kiln_table_markdown(&t, f);
    kiln_table_free(&t);
}
