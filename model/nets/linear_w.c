/* model/nets/linear_w.c — a linear layer's f32 weights held only while needed
 * (docs/hardening.md, "Memory"): read again from the model's mapped file when dropped,
 * and the per-call binding of kiln eval's f32 row, which creates each layer's f32 kernel
 * for one run and destroys it after, so the baseline keeps no f32 copy of the model. */
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

int kiln_linear_run_percall(KilnLinear *l, struct KilnPool *pool, const float *x, int64_t M, float *y,
                            KilnDiag *d)
{
    const KilnRunCtx *rc = l->percall;
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
