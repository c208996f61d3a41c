/* model/eval/metrics.c — `kiln eval`'s metrics checked before they are printed, and the
 * layer where a NaN or an infinity began (model/eval/metrics.h). */
#include <math.h>
#include <stdio.h>

#include "model/eval/metrics.h"

void kiln_eval_watch_reset(KilnLinear *ls, int n)
{
    for (int i = 0; i < n; i++)
        ls[i].nonfinite_out = ls[i].nonfinite_in = false;
}

/* Where the first NaN or infinity appeared, as the end of a sentence. */
static void origin(const KilnLinear *ls, int n, char *buf, size_t cap)
{
    for (int i = 0; i < n; i++) {
        const KilnLinear *l = &ls[i];
        if (!l->nonfinite_out)
            continue;
        if (l->nonfinite_in)
            snprintf(buf, cap,
                     "NaN or infinite values reached the input of layer %s (the first linear "
                     "layer to see them: they began before it, in the embeddings, a norm or "
                     "attention)", l->name);
        else
            snprintf(buf, cap, "NaN or infinite values began in the output of layer %s (%s, "
                     "kernel %s)", l->name, l->src[0] ? l->src : "-", l->kernel ? l->kernel : "f32");
        return;
    }
    snprintf(buf, cap, "no linear layer's output held a NaN or an infinity: the values went "
                       "wrong after the last one (final norm, pooling, logits or the metric)");
}

int kiln_eval_check(const char *row, const char *what, const char *why, double v, double lo,
                    double hi, const KilnLinear *ls, int n, KilnDiag *d)
{
    if (isfinite(v) && v >= lo && v <= hi)
        return 0;
    char where[600];
    origin(ls, n, where, sizeof where);
    return kiln_diag_set(d, KILN_EINPUT, "row '%s': %s = %g is impossible (%s): %s", row, what, v,
                         why, where);
}

int kiln_eval_cosines(const char *row, const float *a, const float *b, int rows, int D,
                      const KilnLinear *ls, int n, double *mean, double *min, KilnDiag *d)
{
    double sum = 0, mn = INFINITY;
    for (int i = 0; i < rows; i++) {
        const float *x = a + (size_t)i * D, *y = b + (size_t)i * D;
        double xy = 0, xx = 0, yy = 0;
        for (int j = 0; j < D; j++)
            xy += (double)x[j] * y[j], xx += (double)x[j] * x[j], yy += (double)y[j] * y[j];
        /* NaN for a zero or non-finite embedding; rounding may pass 1 by a few ulps */
        double c = xx > 0 && yy > 0 ? xy / sqrt(xx * yy) : NAN;
        char what[64];
        snprintf(what, sizeof what, "cosine of sentence %d", i + 1);
        int rc = kiln_eval_check(row, what, "a cosine of two non-zero vectors lies in [-1, 1]",
                                 c, -1 - 1e-6, 1 + 1e-6, ls, n, d);
        if (rc)
            return rc;
        c = c > 1 ? 1 : c < -1 ? -1 : c;
        sum += c;
        mn = c < mn ? c : mn;
    }
    *mean = rows ? sum / rows : NAN;
    *min = mn;
    return kiln_eval_check(row, "mean cosine", "no sentences", *mean, -1, 1, ls, n, d);
}

int kiln_eval_check_sqnr(const char *row, const KilnLinear *ls, int n, KilnDiag *d)
{
    for (int i = 0; i < n; i++) {
        if (!ls[i].track || (isfinite(ls[i].sig) && isfinite(ls[i].noise)))
            continue;
        char what[220];
        snprintf(what, sizeof what, "SQNR energy of layer %s", ls[i].name);
        return kiln_eval_check(row, what, "energies of finite outputs are finite",
                               isfinite(ls[i].sig) ? ls[i].noise : ls[i].sig, 0, INFINITY, ls,
                               n, d);
    }
    return 0;
}
