/* model/eval/layer_method.h — a rule's calibrated method (GPTQ, AWQ, SmoothQuant) on one
 * layer alone, from a batch of its input rows: what `kiln run` does with its synthetic
 * layer, so the kernel it runs and checks has the method's weights (docs/quant.md). */
#ifndef KILN_MODEL_EVAL_LAYER_METHOD_H
#define KILN_MODEL_EVAL_LAYER_METHOD_H

#include "frontend/recipe.h"

/* Largest K a method runs on for one layer here: GPTQ keeps K·K doubles and takes
 * O(K³), the statistics O(rows·K²) with rows = 2K. */
#define KILN_LAYER_METHOD_MAX_K 2048

typedef struct KilnLayerMethod {
    char ran[160];     /* what ran ("gptq act_order=static int4 asym group=128"); "" none */
    char skipped[256]; /* the rule's method that did not run, and why; "" otherwise */
    int64_t N, K;
    /* The layer after the method: it computes x' · wtᵀ = x · Wᵀ with x' = x[:, perm] / s
     * (kiln_layer_method_input), wt = (W · diag(s))[:, perm] in f32 (AWQ clipped). */
    float *wt;        /* [N*K]; NULL when nothing ran */
    float *in_div;    /* [K] s in x' order, or NULL */
    int32_t *in_perm; /* [K] (GPTQ act_order = "group"), or NULL */
    /* GPTQ: the weights the kernel takes, on their own grid (scale·(code − zero)),
     * with the grid (kiln_layer_desc.weight_scale / weight_zero); NULL: the kernel
     * rounds wt to nearest. */
    float *qw, *scale;
    int32_t *zero;
    int64_t nscales;
    /* The output error of the weights alone against f32 on the first rows of the batch
     * (at most 256): the method's weights, and W rounded to nearest, in dB of SQNR. */
    double sqnr_db, rtn_sqnr_db;
    int64_t rows, sqnr_rows; /* rows the method saw; rows the SQNR is over */
} KilnLayerMethod;

/* Runs rule-of-`layer`'s method of recipe r on W[N,K] with the input rows X[rows,K].
 * No method (or RTN, or an ignored / stored layer): returns 0 with nothing in out. A
 * method it cannot run here (K over KILN_LAYER_METHOD_MAX_K) is said in out->skipped.
 * The method rounds to the format the layer gets on target t (per = "auto" resolved
 * there; NULL: the host). Errors (GPTQ's H not positive definite, out of memory) go to d. */
int kiln_layer_method_run(const KilnRecipe *r, const char *layer, const struct KilnTarget *t,
                          const float *W, int64_t N,
                          int64_t K, const float *X, int64_t rows, KilnLayerMethod *out,
                          KilnDiag *d);
/* x[rows,K] → x[:, perm] / s in place, the input the layer takes after the method. */
int kiln_layer_method_input(const KilnLayerMethod *m, float *x, int64_t rows);
void kiln_layer_method_free(KilnLayerMethod *m);

#endif
