/* model/nets/linear_w.c — a linear layer's f32 weights held only while needed
 * (docs/hardening.md, "Memory"): read again from the model's mapped file when dropped,
 * and the per-call binding of kiln eval's f32 row, which creates each layer's f32 kernel
 * for one run and destroys it after, so the baseline keeps no f32 copy of the model. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/files/modelfile.h"
#include "model/model.h"

int kiln_linear_wget(KilnLinear *l, KilnDiag *d)
{
    if (l->w)
        return 0;
    if (!l->wmf || !l->wt)
        return kiln_diag_set(d, KILN_EINTERNAL, "layer %s: its weights were dropped and cannot "
                             "be read again", l->name);
    float *w = malloc(sizeof(float) * (size_t)(l->N * l->K));
    if (!w)
        return kiln_diag_set(d, KILN_EINTERNAL, "layer %s: out of memory", l->name);
    int rc = kiln_mf_rows_f32(l->wmf, l->wt, 0, l->N, w, d);
    kiln_mf_drop_pages(l->wmf, l->wt); /* read once more: the file's pages need not stay */
    if (rc) {
        free(w);
        return rc;
    }
    l->w = w;
    return 0;
}

void kiln_linear_wput(KilnLinear *l)
{
    if (l->wmf && l->wt && !l->w_dirty) {
        free(l->w);
        l->w = NULL;
    }
}

/* A per-call layer over CHUNK_BYTES of f32 weights runs in slices of its output rows, each
 * its own f32 kernel on those rows: the f32 weights read and prepacked at a time stay a
 * slice (SmolLM2's lm_head: 113 MB of f32, twice, would be the peak of the whole run). The
 * f32 kernel computes every output from its row and x alone, so the slices give the
 * same bits as the whole layer. */
#define CHUNK_BYTES (16u << 20)

static bool finite_all(const float *v, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(v[i]))
            return false;
    return true;
}

/* Rows per slice: the largest divisor of N within CHUNK_BYTES (one kernel shape for
 * every slice), else as many as fit. 0: the layer is small enough to run whole. */
static int64_t slice_rows(const KilnLinear *l)
{
    int64_t fit = (int64_t)(CHUNK_BYTES / sizeof(float)) / l->K;
    if (l->N <= fit || fit < 1)
        return 0;
    for (int64_t r = fit; r >= fit / 2 && r > 0; r--)
        if (l->N % r == 0)
            return r;
    return fit;
}

static int run_sliced(KilnLinear *l, int64_t rows, const float *x, int64_t M, float *y,
                      KilnDiag *d)
{
    const KilnRunCtx *rc = l->percall;
    float *w = l->w ? NULL : malloc(sizeof(float) * (size_t)(rows * l->K));
    float *ys = malloc(sizeof(float) * (size_t)(M * rows));
    int r = (!l->w && !w) || !ys ? kiln_diag_set(d, KILN_EINTERNAL, "layer %s: out of memory",
                                                 l->name) : 0;
    for (int64_t n0 = 0; !r && n0 < l->N; n0 += rows) {
        int64_t nr = l->N - n0 < rows ? l->N - n0 : rows;
        const float *ws = l->w ? l->w + n0 * l->K : w;
        if (!l->w && (r = kiln_mf_rows_f32(l->wmf, l->wt, n0, nr, w, d)))
            break;
        kiln_layer_desc desc = {.name = l->name, .N = nr, .K = l->K, .weight = ws};
        kiln_layer *kl = NULL;
        if (kiln_layer_create(rc->ctx, rc->recipe, &desc, &kl)) {
            r = kiln_diag_set(d, KILN_EINPUT, "layer %s (rows %lld..%lld of %lldx%lld): %s",
                              l->name, (long long)n0, (long long)(n0 + nr), (long long)l->N,
                              (long long)l->K, kiln_error(rc->ctx));
            break;
        }
        if (kiln_layer_run(kl, x, M, ys))
            r = kiln_diag_set(d, KILN_EINTERNAL, "layer %s: kernel failed", l->name);
        kiln_layer_destroy(kl);
        for (int64_t m = 0; !r && m < M; m++)
            memcpy(y + m * l->N + n0, ys + m * nr, sizeof(float) * (size_t)nr);
    }
    if (l->wmf && l->wt)
        kiln_mf_drop_pages(l->wmf, l->wt);
    free(w), free(ys);
    if (r)
        return r;
    if (l->b) /* after the kernel, as kiln_linear_run adds it (an f32 layer has no epilogue) */
        for (int64_t m = 0; m < M; m++)
            for (int64_t j = 0; j < l->N; j++)
                y[m * l->N + j] += l->b[j];
    if (!l->nonfinite_out && !finite_all(y, M * l->N)) { /* as kiln_linear_run marks it */
        l->nonfinite_out = true;
        l->nonfinite_in = !finite_all(x, M * l->K);
    }
    return 0;
}

int kiln_linear_bind_sliced(KilnLinear *l, const KilnRunCtx *rc, KilnDiag *d)
{
    int64_t rows = slice_rows(l);
    if (!rc->per_call || !rows || l->stored || l->q_w || l->in_div || l->in_perm)
        return 1;
    float *w = l->w ? NULL : malloc(sizeof(float) * (size_t)(rows * l->K));
    if (!l->w && !w)
        return kiln_diag_set(d, KILN_EINTERNAL, "layer %s: out of memory", l->name);
    int r = l->w ? 0 : kiln_mf_rows_f32(l->wmf, l->wt, 0, rows, w, d);
    kiln_layer_desc desc = {.name = l->name, .N = rows, .K = l->K, .weight = l->w ? l->w : w};
    kiln_layer *kl = NULL;
    if (!r && kiln_layer_create(rc->ctx, rc->recipe, &desc, &kl))
        r = kiln_diag_set(d, KILN_EINPUT, "layer %s (%lldx%lld): %s", l->name, (long long)l->N,
                          (long long)l->K, kiln_error(rc->ctx));
    free(w);
    if (r)
        return r;
    /* an epilogue or a bias in the kernel: not what run_sliced does; bind it whole */
    bool plain = !strcmp(kiln_layer_epilogue(kl), "none") && !kiln_layer_has_bias(kl) &&
                 kiln_layer_out_dtype(kl) == KILN_DTYPE_F32;
    if (plain) {
        snprintf(l->kdesc, sizeof l->kdesc, "%s", kiln_layer_describe(kl));
        l->kernel = l->kdesc;
        /* the slices' bytes, as many as the layer has rows */
        l->wbytes = (size_t)((double)kiln_layer_weight_bytes(kl) * (double)l->N / (double)rows);
        l->percall = rc;
    }
    kiln_layer_destroy(kl);
    return plain ? 0 : 1;
}

int kiln_linear_run_percall(KilnLinear *l, struct KilnPool *pool, const float *x, int64_t M, float *y,
                            KilnDiag *d)
{
    const KilnRunCtx *rc = l->percall;
    int64_t rows = slice_rows(l);
    /* sliced only where kiln_linear_run would do nothing but the kernel and the bias */
    if (rows && !l->stats && !l->in_div && !l->in_perm && !l->cap && !l->track &&
        !l->bias_in_kernel && !l->act_fused)
        return run_sliced(l, rows, x, M, y, d);
    int r = kiln_linear_wget(l, d);
    if (r)
        return r;
    kiln_layer_desc desc = {.name = l->name, .N = l->N, .K = l->K, .weight = l->w, .bias = l->b,
                            .calib_x = l->cap, .calib_rows = l->cap_rows};
    kiln_layer *kl = NULL;
    if (kiln_layer_create(rc->ctx, rc->recipe, &desc, &kl)) {
        r = kiln_diag_set(d, KILN_EINPUT, "layer %s (%lldx%lld): %s", l->name, (long long)l->N,
                          (long long)l->K, kiln_error(rc->ctx));
        kiln_linear_wput(l);
        return r;
    }
    kiln_linear_wput(l); /* the kernel prepacked its own copy */
    l->kl = kl, l->percall = NULL;
    r = kiln_linear_run(l, pool, x, M, y, d);
    l->kl = NULL, l->percall = rc;
    kiln_layer_destroy(kl);
    return r;
}
