/* model/eval/layer_method.c — a rule's calibrated method on one layer alone, from a
 * batch of its input rows (kiln run's synthetic layer). The same steps as calib.c
 * takes on a model, without a norm or a previous layer to take a scale: AWQ or
 * SmoothQuant divide the input by s (x' = x / s) and multiply W's columns by s, AWQ
 * clips, then GPTQ rounds with error compensation on the statistics of x'. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/eval/layer_method.h"
#include "quant/quant.h"

void kiln_layer_method_free(KilnLayerMethod *m)
{
    if (!m)
        return;
    free(m->wt);
    free(m->in_div);
    free(m->in_perm);
    free(m->qw);
    free(m->scale);
    free(m->zero);
    memset(m, 0, sizeof *m);
}

static void cat(char *buf, size_t n, const char *s)
{
    size_t k = strlen(buf);
    snprintf(buf + k, n - k, "%s%s", k ? " + " : "", s);
}

/* AWQ's search or SmoothQuant's factors: wt → wt·diag(s), xs → xs / s; AWQ clips. */
static int migrate(const KilnMethod *m, const KilnQuantSpec *q, KilnLayerMethod *out,
                   float *xs, int64_t rows, KilnDiag *d)
{
    int64_t N = out->N, K = out->K;
    float *s = malloc(sizeof(float) * (size_t)K);
    float *xmean = calloc((size_t)K, sizeof(float)), *absmax = calloc((size_t)K, sizeof(float));
    int rc = s && xmean && absmax ? 0 : kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
    for (int64_t i = 0; !rc && i < rows; i++)
        for (int64_t k = 0; k < K; k++) {
            float a = fabsf(xs[i * K + k]);
            xmean[k] += a / (float)rows;
            absmax[k] = a > absmax[k] ? a : absmax[k];
        }
    const float *W[1] = {out->wt};
    int64_t Ns[1] = {N};
    float alpha = m->alpha;
    double ratio = 1.0;
    KilnAwqOpts ao = KILN_AWQ_DEFAULTS;
    ao.grid = m->grid, ao.clip = m->clip;
    if (!rc && m->awq)
        rc = kiln_awq_search(W, Ns, 1, K, xs, rows, xmean, q, &ao, s, &alpha, &ratio, d);
    else if (!rc)
        kiln_smooth_factors(absmax, W, Ns, 1, K, m->alpha, s);
    for (int64_t n = 0; !rc && n < N; n++)
        for (int64_t k = 0; k < K; k++)
            out->wt[n * K + k] *= s[k];
    for (int64_t i = 0; !rc && i < rows; i++)
        for (int64_t k = 0; k < K; k++)
            xs[i * K + k] /= s[k];
    if (!rc && m->awq && m->clip)
        rc = kiln_awq_clip(out->wt, N, K, xs, rows, q, &ao, d);
    char what[96];
    if (m->awq)
        snprintf(what, sizeof what, "awq (alpha %.2f, output error x%.3f of alpha 0%s)",
                 (double)alpha, ratio, m->clip ? ", clipped" : "");
    else
        snprintf(what, sizeof what, "smoothquant (alpha %.2f)", (double)alpha);
    if (!rc)
        cat(out->ran, sizeof out->ran, what);
    free(xmean);
    free(absmax);
    if (rc)
        free(s);
    else
        out->in_div = s;
    return rc;
}

/* w[rows, K] → w[:, perm] in place. */
static int gather_cols(float *w, int64_t rows, int64_t K, const int32_t *perm, KilnDiag *d)
{
    float *tmp = malloc(sizeof(float) * (size_t)K);
    if (!tmp)
        return kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
    for (int64_t n = 0; n < rows; n++) {
        float *r = w + n * K;
        for (int64_t k = 0; k < K; k++)
            tmp[k] = r[perm[k]];
        memcpy(r, tmp, sizeof(float) * (size_t)K);
    }
    free(tmp);
    return 0;
}

/* GPTQ on wt with H from xs; the result's grid goes to out (qw, scale, zero, perm). */
static int gptq(const KilnMethod *m, const KilnQuantSpec *q, KilnLayerMethod *out,
                const float *xs, int64_t rows, KilnDiag *d)
{
    int64_t N = out->N, K = out->K;
    KilnActStats st = {0};
    double *H = malloc(sizeof(double) * (size_t)(K * K));
    int rc = H ? kiln_actstats_init(&st, K, true, 0, d)
               : kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
    if (!rc) {
        kiln_actstats_add(&st, xs, rows);
        rc = kiln_actstats_hessian(&st, H, d);
    }
    kiln_actstats_free(&st);
    KilnGptqOpts go = {.damp = m->damp, .block = m->block, .act_order = m->act_order != 0,
                       .static_groups = m->act_order != 2};
    KilnQResult res = {0};
    if (!rc)
        rc = kiln_quant_gptq_consume(out->wt, N, K, H, q, &go, &res, d); /* H freed after */
    free(H);
    if (!rc && res.perm) { /* the layer now takes x[:, perm] */
        out->in_perm = res.perm, res.perm = NULL;
        rc = gather_cols(out->wt, N, K, out->in_perm, d);
        if (!rc && out->in_div)
            rc = gather_cols(out->in_div, 1, K, out->in_perm, d);
    }
    if (!rc) {
        out->qw = res.w, out->scale = res.scale, out->zero = res.zero;
        out->nscales = N * res.ngroups;
        res.w = NULL, res.scale = NULL, res.zero = NULL;
        char qs[64], what[128];
        kiln_spec_print(q, qs, sizeof qs);
        snprintf(what, sizeof what, "gptq %s%s", m->act_order == 2 ? "act_order=group "
                                                 : m->act_order ? "act_order=static " : "", qs);
        cat(out->ran, sizeof out->ran, what);
    }
    kiln_qresult_free(&res);
    return rc;
}

/* 10·log10(Σy² / Σ(y − yq)²) of y = X·Wᵀ against yq = Xq·Wqᵀ. */
static double out_sqnr(const float *X, const float *W, const float *Xq, const float *Wq,
                       int64_t rows, int64_t N, int64_t K)
{
    double sig = 0, err = 0;
    for (int64_t i = 0; i < rows; i++)
        for (int64_t n = 0; n < N; n++) {
            double y = 0, yq = 0;
            for (int64_t k = 0; k < K; k++) {
                y += (double)X[i * K + k] * W[n * K + k];
                yq += (double)Xq[i * K + k] * Wq[n * K + k];
            }
            sig += y * y;
            err += (y - yq) * (y - yq);
        }
    return err > 0 ? 10.0 * log10(sig / err) : INFINITY;
}

/* sqnr_db and rtn_sqnr_db on the first rows of X (xs: X after the method's input). */
static int measure(const KilnQuantSpec *q, const float *W, const float *X, const float *xs,
                   int64_t rows, KilnLayerMethod *out, KilnDiag *d)
{
    int64_t N = out->N, K = out->K, R = rows < 256 ? rows : 256;
    KilnQResult rtn = {0}, mrtn = {0};
    int rc = kiln_quant_rtn(W, N, K, q, &rtn, d);
    if (!rc && !out->qw)
        rc = kiln_quant_rtn(out->wt, N, K, q, &mrtn, d);
    if (!rc) {
        out->rtn_sqnr_db = out_sqnr(X, W, X, rtn.w, R, N, K);
        out->sqnr_db = out_sqnr(X, W, xs, out->qw ? out->qw : mrtn.w, R, N, K);
        out->sqnr_rows = R;
    }
    kiln_qresult_free(&rtn);
    kiln_qresult_free(&mrtn);
    return rc;
}

int kiln_layer_method_run(const KilnRecipe *r, const char *layer, const struct KilnTarget *t,
                          const float *W, int64_t N,
                          int64_t K, const float *X, int64_t rows, KilnLayerMethod *out,
                          KilnDiag *d)
{
    memset(out, 0, sizeof *out);
    out->N = N, out->K = K;
    int ri = kiln_recipe_match(r, layer);
    const KilnMethod *m = ri < 0 || kiln_recipe_rule_stored(r, ri) ? NULL
                                                                   : kiln_recipe_rule_method(r, ri);
    if (!m || !(m->gptq || m->awq || m->smoothquant))
        return 0;
    char mn[64];
    kiln_method_name(m, mn, sizeof mn);
    KilnQuantSpec f;
    if (!kiln_recipe_layer_weights(r, layer, K, t, &f)) {
        snprintf(out->skipped, sizeof out->skipped, "%s not run: the recipe gives the layer no "
                 "weight format to round to at K = %lld", mn, (long long)K);
        return 0;
    }
    if (K > KILN_LAYER_METHOD_MAX_K) {
        snprintf(out->skipped, sizeof out->skipped, "%s not run: K = %lld is over the %d input "
                 "columns it runs on for one synthetic layer (GPTQ keeps K·K doubles and takes "
                 "K³ steps); the kernel rounds to nearest", mn, (long long)K,
                 KILN_LAYER_METHOD_MAX_K);
        return 0;
    }
    KilnQuantSpec q = {.fmt = f.fmt, .symmetric = f.symmetric, .gran = f.gran, .group = f.group};
    out->wt = malloc(sizeof(float) * (size_t)(N * K));
    float *xs = malloc(sizeof(float) * (size_t)(rows * K));
    int rc = out->wt && xs ? 0 : kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
    if (!rc) {
        memcpy(out->wt, W, sizeof(float) * (size_t)(N * K));
        memcpy(xs, X, sizeof(float) * (size_t)(rows * K));
    }
    if (!rc && (m->awq || m->smoothquant))
        rc = migrate(m, &q, out, xs, rows, d);
    if (!rc && m->gptq)
        rc = gptq(m, &q, out, xs, rows, d);
    if (!rc && out->in_perm) /* the rows as the layer now takes them */
        rc = gather_cols(xs, rows, K, out->in_perm, d);
    if (!rc)
        rc = measure(&q, W, X, xs, rows, out, d);
    out->rows = rows;
    free(xs);
    if (rc) {
        char why[sizeof d->msg];
        snprintf(why, sizeof why, "%s", d->msg);
        kiln_layer_method_free(out);
        return kiln_diag_set(d, d->code ? d->code : KILN_EINTERNAL, "layer '%s': %s: %s", layer,
                             mn, why);
    }
    return 0;
}

int kiln_layer_method_input(const KilnLayerMethod *m, float *x, int64_t rows)
{
    int64_t K = m->K;
    if (m->in_perm) {
        KilnDiag d = {0};
        if (gather_cols(x, rows, K, m->in_perm, &d))
            return -1;
    }
    for (int64_t i = 0; m->in_div && i < rows; i++)
        for (int64_t k = 0; k < K; k++)
            x[i * K + k] /= m->in_div[k];
    return 0;
}
