/* model/eval/calib_stored.c — weights = stored: a layer's checkpoint grid (its codes,
 * scales and zero points, and an act-order g_idx as an input column order) bound instead
 * of kiln's round-to-nearest (docs/checkpoints.md). Its f32 form (q_w) is made from the
 * stored layer for binding and dropped once bound, so no f32 copy of a stored model stays
 * for the run (docs/hardening.md, "Memory"). */
#include <stdlib.h>
#include <string.h>

#include "model/checkpoints/checkpoint.h"
#include "model/model.h"
#include "quant/quant.h"


/* g_idx that is not k / group: columns sorted by group (stable), the layer then gathers
 * its input in that order; each group must then be one run of `group` columns, as
 * act-order GPTQ writes them. l->in_perm set (NULL when g_idx is plain). */
static int stored_perm(KilnLinear *l, const KilnQLinear *q, KilnDiag *d)
{
    int64_t K = q->K, G = q->spec.gran == KILN_GRAN_GROUP ? q->spec.group : K;
    bool plain = true;
    for (int64_t k = 0; q->g_idx && k < K; k++)
        plain &= q->g_idx[k] == k / G;
    if (plain)
        return 0;
    int rc = 0;
    l->in_perm = malloc(sizeof(int32_t) * (size_t)K);
    int64_t *count = calloc((size_t)q->ngroups + 1, sizeof(int64_t));
    if (!l->in_perm || !count)
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
    free(count);
    return rc;
}

/* The f32 path sees the gathered input too: w (when held) gathered now, and the order
 * recorded for every later read of w (kiln_linear_wget replays it). */
static int gather_w(KilnLinear *l, KilnDiag *d)
{
    if (l->w) {
        float *row = malloc(sizeof(float) * (size_t)l->K);
        if (!row)
            return kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
        kiln_gather_cols(l->w, l->N, l->K, l->in_perm, row);
        free(row);
    }
    return kiln_linear_wop(l, KILN_WOP_GATHER, NULL, l->in_perm, 0, d);
}

static bool from_stored(const KilnLinear *l)
{
    return l->stored && l->qres && l->q_format[0];
}

/* q_w: the stored weights dequantized, in the layer's column order. */
static int stored_wget(KilnLinear *l, KilnDiag *d)
{
    const KilnQLinear *q = l->stored;
    if (l->q_w)
        return 0;
    float *w = malloc(sizeof(float) * (size_t)(q->N * q->K));
    float *row = l->in_perm ? malloc(sizeof(float) * (size_t)q->K) : NULL;
    int rc = w && (!l->in_perm || row) ? kiln_qlinear_rows(q, 0, q->N, w, d)
                                       : kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
    if (!rc && l->in_perm)
        kiln_gather_cols(w, q->N, q->K, l->in_perm, row);
    free(row);
    if (rc) {
        free(w);
        return rc;
    }
    l->qres->w = l->q_w = w;
    return 0;
}

void kiln_quant_stored_wput(KilnLinear *l)
{
    if (!from_stored(l) || !l->q_w)
        return;
    free(l->q_w);
    l->qres->w = l->q_w = NULL;
}

int kiln_quant_from_stored(KilnLinear *l, KilnDiag *d)
{
    const KilnQLinear *q = l->stored;
    if (from_stored(l)) /* bound before: the grid is set, q_w made again */
        return stored_wget(l, d);
    if (l->qres)
        return kiln_diag_set(d, KILN_EINTERNAL, "layer %s: a grid already", l->name);
    KilnQResult *res = calloc(1, sizeof *res);
    int64_t N = q->N, K = q->K, ns = q->spec.gran == KILN_GRAN_TENSOR ? 1 : q->nscale;
    if (!res)
        return kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
    res->N = N, res->K = K, res->ngroups = q->ngroups;
    res->scale = malloc(sizeof(float) * (size_t)ns);
    res->zero = q->zero ? malloc(sizeof(int32_t) * (size_t)ns) : NULL;
    int rc = res->scale && (!q->zero || res->zero)
                 ? 0
                 : kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
    if (!rc) {
        memcpy(res->scale, q->scale, sizeof(float) * (size_t)ns);
        if (q->zero)
            memcpy(res->zero, q->zero, sizeof(int32_t) * (size_t)ns);
        rc = stored_perm(l, q, d);
    }
    if (!rc && l->in_perm)
        rc = gather_w(l, d);
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
    l->q_scale = res->scale, l->q_zero = res->zero;
    return stored_wget(l, d);
}
