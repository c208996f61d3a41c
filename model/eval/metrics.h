/* model/eval/metrics.h — what `kiln eval` reports, checked before it is printed: a metric
 * that cannot be (a NaN, a perplexity under 1, a cosine outside [-1, 1]) is an error
 * naming the layer where the NaN or infinity began, never a plausible number. */
#ifndef KILN_EVAL_METRICS_H
#define KILN_EVAL_METRICS_H

#include "model/model.h"

/* Clears the layers' nonfinite_* marks before a row runs. */
void kiln_eval_watch_reset(KilnLinear *ls, int n);
/* KILN_EINPUT unless lo <= v <= hi (v finite): "row ROW: WHAT V is impossible (WHY): "
 * and where the first NaN or infinity appeared among the layers ls[0..n) (in the
 * order the model runs them). */
int kiln_eval_check(const char *row, const char *what, const char *why, double v, double lo,
                    double hi, const KilnLinear *ls, int n, KilnDiag *d);
/* Cosine similarity of each pair of rows a[i], b[i] (D floats each): their mean and
 * minimum, checked (a zero or non-finite embedding is an error). */
int kiln_eval_cosines(const char *row, const float *a, const float *b, int rows, int D,
                      const KilnLinear *ls, int n, double *mean, double *min, KilnDiag *d);
/* --per-layer: every tracked layer's energies finite (an SQNR of NaN is impossible). */
int kiln_eval_check_sqnr(const char *row, const KilnLinear *ls, int n, KilnDiag *d);

#endif
