/* model/eval/calib_stored.c — weights = stored: a layer's checkpoint grid (its codes,
 * scales and zero points, and an act-order g_idx as an input column order) bound instead
 * of kiln's round-to-nearest (docs/checkpoints.md). */
#include <stdlib.h>
#include <string.h>

#include "model/checkpoints/checkpoint.h"
#include "model/model.h"
#include "quant/quant.h"

/* w[rows, K] → w[:, perm] in place (tmp: K floats). */
static void gather_cols(float *w, int64_t rows, int64_t K, const int32_t *perm, float *tmp)
{
    for (int64_t n = 0; n < rows; n++) {
        float *r = w + n * K;
        for (int64_t k = 0; k < K; k++)
            tmp[k] = r[perm[k]];
        memcpy(r, tmp, sizeof(float) * (size_t)K);
    }
}

int kiln_quant_from_stored(KilnLinear *l, KilnDiag *d)
{
    const KilnQLinear *q = l->stored;
    if (l->qres)
        return 0;
    KilnQResult *res = calloc(1, sizeof *res);
    int64_t N = q->N, K = q->K, ns = q->spec.gran == KILN_GRAN_TENSOR ? 1 : q->nscale;
    if (!res)
        return kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
    res->N = N, res->K = K, res->ngroups = q->ngroups;
    res->w = malloc(sizeof(float) * (size_t)(N * K));
    res->scale = malloc(sizeof(float) * (size_t)ns);
    res->zero = q->zero ? malloc(sizeof(int32_t) * (size_t)ns) : NULL;
    int rc = res->w && res->scale && (!q->zero || res->zero)
                 ? 0
                 : kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
    if (!rc) {
        kiln_qlinear_dequant(q, res->w);
        memcpy(res->scale, q->scale, sizeof(float) * (size_t)ns);
        if (q->zero)
            memcpy(res->zero, q->zero, sizeof(int32_t) * (size_t)ns);
    }
    /* g_idx that is not k / group: columns sorted by group (stable), the layer then
     * gathers its input in that order; each group must then be one run of `group`
     * columns, as act-order GPTQ writes them */
    bool plain = true;
    int64_t G = q->spec.gran == KILN_GRAN_GROUP ? q->spec.group : K;
    for (int64_t k = 0; !rc && q->g_idx && k < K; k++)
        plain &= q->g_idx[k] == k / G;
    if (!rc && !plain) {
        l->in_perm = malloc(sizeof(int32_t) * (size_t)K);
        float *row = malloc(sizeof(float) * (size_t)K);
        int64_t *count = calloc((size_t)q->ngroups + 1, sizeof(int64_t));
        if (!l->in_perm || !row || !count)
            rc = kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
        for (int64_t k = 0; !rc && k < K; k++) {
            if (q->g_idx[k] < 0 || q->g_idx[k] >= q->ngroups)
                rc = kiln_diag_set(d, KILN_EINPUT, "layer %s: g_idx[%lld] = %d is not a group (0..%lld)",
                                   l->name, (long long)k, q->g_idx[k], (long long)q->ngroups - 1);
            else
                count[q->g_idx[k] + 1]++;
        }
        for (int64_t g = 0; !rc && g < q->ngroups; g++) {
            if (count[g + 1] != (g + 1 < q->ngroups ? G : K - G * (q->ngroups - 1)))
                rc = kiln_diag_set(d, KILN_EINPUT,
                                   "layer %s: g_idx gives group %lld %lld columns; kiln runs groups "
                                   "of %lld consecutive columns once sorted",
                                   l->name, (long long)g, (long long)count[g + 1], (long long)G);
            count[g + 1] += count[g];
        }
        for (int64_t k = 0; !rc && k < K; k++) /* stable counting sort by group */
            l->in_perm[count[q->g_idx[k]]++] = (int32_t)k;
        if (!rc) { /* the f32 path sees the gathered input too */
            gather_cols(res->w, N, K, l->in_perm, row);
            gather_cols(l->w, N, K, l->in_perm, row);
        }
        free(row);
        free(count);
    }
    if (rc) {
        kiln_qresult_free(res);
        free(res);
        free(l->in_perm);
        l->in_perm = NULL;
        return rc;
    }
    KilnQuantSpec s = {.fmt = q->spec.fmt, .symmetric = q->spec.symmetric, .gran = q->spec.gran,
                       .group = q->spec.group};
    kiln_spec_print(&s, l->q_format, sizeof l->q_format);
    l->qres = res;
    l->q_w = res->w, l->q_scale = res->scale, l->q_zero = res->zero;
    return 0;
}
