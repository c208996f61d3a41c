/* model/nets/linear_w.c — a linear layer's f32 weights held only while needed
 * (docs/hardening.md, "Memory"): read again from the model's mapped file when dropped,
 * and the per-call binding of kiln eval's f32 row, which creates each layer's f32 kernel
 * for one run and destroys it after, so the baseline keeps no f32 copy of the model. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/plan.h"
#include "model/checkpoints/checkpoint.h"
#include "model/files/modelfile.h"
#include "model/model.h"

static int replay(const KilnLinear *l, float *w, int64_t r0, int64_t nr);

/* Where w is read again: the model's file (wmf, wt), or a mapped checkpoint's quantized
 * layer dequantized (stored, a Hugging Face directory's: decoded from the file). A layer
 * given w with a stored form in memory keeps its w. */
static bool wsource(const KilnLinear *l)
{
    return (l->wmf && l->wt) || (l->stored && l->stored->src);
}

static int wrows(const KilnLinear *l, int64_t n0, int64_t nr, float *w, KilnDiag *d)
{
    if (l->wmf && l->wt)
        return kiln_mf_rows_f32(l->wmf, l->wt, n0, nr, w, d);
    return kiln_qlinear_rows(l->stored, n0, nr, w, d); /* its pages handed back after */
}

static void wdrop(const KilnLinear *l)
{
    if (l->wmf && l->wt)
        kiln_mf_drop_pages(l->wmf, l->wt);
}

int kiln_linear_wget(KilnLinear *l, KilnDiag *d)
{
    if (l->w)
        return 0;
    if (!wsource(l))
        return kiln_diag_set(d, KILN_EINTERNAL, "layer %s: its weights were dropped and cannot "
                             "be read again", l->name);
    float *w = malloc(sizeof(float) * (size_t)(l->N * l->K));
    if (!w)
        return kiln_diag_set(d, KILN_EINTERNAL, "layer %s: out of memory", l->name);
    int rc = wrows(l, 0, l->N, w, d);
    wdrop(l); /* read once more: the file's pages need not stay */
    if (!rc && replay(l, w, 0, l->N)) /* what the methods did to it */
        rc = kiln_diag_set(d, KILN_EINTERNAL, "layer %s: out of memory", l->name);
    if (rc) {
        free(w);
        return rc;
    }
    l->w = w;
    return 0;
}

void kiln_linear_wput(KilnLinear *l)
{
    if (wsource(l) && !l->w_dirty && !l->w_held) {
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

/* ys [M, nr], the outputs of rows n0..n0+nr of a layer, into columns n0.. of y [M, N]. */
static void put_cols(float *y, int64_t M, int64_t N, int64_t n0, const float *ys, int64_t nr)
{
    for (int64_t m = 0; m < M; m++)
        memcpy(y + m * N + n0, ys + m * nr, sizeof(float) * (size_t)nr);
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
        if (!l->w && (r = wrows(l, n0, nr, w, d)))
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
        if (!r)
            put_cols(y, M, l->N, n0, ys, nr);
    }
    wdrop(l);
    free(w), free(ys);
    if (r)
        return r;
    if (l->b) /* after the kernel, as kiln_linear_run adds it (an f32 layer has no epilogue) */
        for (int64_t m = 0; m < M; m++)
            for (int64_t j = 0; j < l->N; j++)
                y[m * l->N + j] += l->b[j];
    if (!l->nonfinite_out && !kiln_all_finite(y, M * l->N)) { /* as kiln_linear_run marks it */
        l->nonfinite_out = true;
        l->nonfinite_in = !kiln_all_finite(x, M * l->K);
    }
    return 0;
}

int kiln_linear_bind_sliced(KilnLinear *l, const KilnRunCtx *rc, KilnDiag *d)
{
    int64_t rows = slice_rows(l);
    if (!rc->per_call || !rows || l->q_w || l->in_div || l->in_perm || l->nwops ||
        (!l->w && !wsource(l)))
        return 1;
    float *w = l->w ? NULL : malloc(sizeof(float) * (size_t)(rows * l->K));
    if (!l->w && !w)
        return kiln_diag_set(d, KILN_EINTERNAL, "layer %s: out of memory", l->name);
    int r = l->w ? 0 : wrows(l, 0, rows, w, d);
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
        /* what the whole layer would hold: an f32 pack is a 64-byte header and the rows'
         * panels (ir/layout.c, set_sections), so N / rows slices' panels and one header */
        size_t sb = kiln_layer_weight_bytes(kl);
        l->wbytes = l->N % rows == 0 && sb > 64
                        ? 64 + (sb - 64) * (size_t)(l->N / rows)
                        : (size_t)((double)sb * (double)l->N / (double)rows);
        l->percall = rc;
    }
    kiln_layer_destroy(kl);
    return plain ? 0 : 1;
}

int kiln_linear_run_percall(KilnLinear *l, struct KilnPool *pool, const float *x, int64_t M,
                            float *y, KilnDiag *d)
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

/* ------------------------------------------------------------------ binding in chunks */

/* Rows n0..n0+n of the layer's weights as kiln_linear_wget would give them: the file's
 * (or a mapped checkpoint's, decoded), with the methods' recorded changes replayed (each
 * works on a row alone). */
static int read_rows(void *arg, int64_t n0, int64_t n, float *out, KilnDiag *d)
{
    KilnLinear *l = arg;
    int rc = wrows(l, n0, n, out, d);
    if (!rc && replay(l, out, n0, n))
        rc = kiln_diag_set(d, KILN_EINTERNAL, "layer %s: out of memory", l->name);
    return rc;
}

bool kiln_linear_chunked(const KilnLinear *l)
{
    return !l->w && !l->q_w && wsource(l) && (size_t)(l->N * l->K) * sizeof(float) > CHUNK_BYTES;
}

/* A layer over CHUNK_BYTES of f32 whose weights are not held (SmolLM2's lm_head, 113 MB)
 * is quantized and prepacked from chunks of CHUNK_BYTES of rows read from the file
 * (kiln_layer_create_rows: the same packed bytes), so the f32 matrix and its packed copy
 * are never held together; any other layer is created from desc->weight as given. */
int kiln_linear_layer_create(KilnLinear *l, const KilnRunCtx *rc, const kiln_layer_desc *desc,
                             kiln_layer **kl)
{
    if (!kiln_linear_chunked(l))
        return kiln_layer_create(rc->ctx, rc->recipe, desc, kl);
    KilnWeightRows rows = {.read = read_rows, .arg = l,
                           .chunk_rows = (int64_t)(CHUNK_BYTES / sizeof(float)) / l->K};
    kiln_layer_desc one = *desc;
    one.weight = NULL;
    int r = kiln_layer_create_rows(rc->ctx, rc->recipe, &one, &rows, kl);
    wdrop(l); /* read once: the file's pages need not stay */
    return r;
}

/* y [M, N] = x wT + b, the f32 reference GEMM (kiln_gemm_f32) on the weights kiln_linear_wget
 * gives. A layer over CHUNK_BYTES of f32 whose weights are not held (SmolLM2's tied
 * lm_head: 113 MB) is read CHUNK_BYTES of rows at a time, methods' changes replayed, each
 * chunk's file pages dropped as it is read: kiln_gemm_f32 computes each output from its weight row and x
 * alone (its tiles and threads split N), so the chunks give the same bits as the whole. */
int kiln_linear_ref(KilnLinear *l, struct KilnPool *pool, const float *x, int64_t M, float *y,
                    KilnDiag *d)
{
    int64_t rows = (int64_t)(CHUNK_BYTES / sizeof(float)) / l->K;
    if (l->w || !wsource(l) || l->N <= rows || rows < 1) {
        int r = kiln_linear_wget(l, d);
        if (r)
            return r;
        kiln_gemm_f32(pool, x, M, l->w, l->b, l->N, l->K, y);
        kiln_linear_wput(l); /* read again for the next call rather than kept */
        return 0;
    }
    float *w = malloc(sizeof(float) * (size_t)(rows * l->K));
    float *ys = malloc(sizeof(float) * (size_t)(M * rows));
    int r = !w || !ys ? kiln_diag_set(d, KILN_EINTERNAL, "layer %s: out of memory", l->name) : 0;
    for (int64_t n0 = 0; !r && n0 < l->N; n0 += rows) {
        int64_t nr = l->N - n0 < rows ? l->N - n0 : rows;
        if ((r = read_rows(l, n0, nr, w, d)))
            break;
        wdrop(l); /* each chunk's pages (an f32 file: 16 MiB) handed back as it is read */
        kiln_gemm_f32(pool, x, M, w, l->b ? l->b + n0 : NULL, nr, l->K, ys);
        put_cols(y, M, l->N, n0, ys, nr);
    }
    free(w), free(ys);
    return r;
}

/* ------------------------------------------------------------------ binding with rows */

/* Binds the layers to rc as kiln_linears_bind does, each layer's calibration rows freed
 * as soon as its kernel has calibrated from them (SmolLM2: 153 MB of rows would otherwise
 * sit beside the growing prepacked weights; docs/hardening.md, "Memory"). The one big
 * layer (kiln_linears_first: its f32 weights and their packed copy are the peak) is bound
 * first, before the others hold prepacked weights, as kiln_linears_bind does, unless
 * layers hold calibration rows: then last, once they are gone. */
int *kiln_linears_bind_order(const KilnLinear *ls, int n)
{
    int *order = malloc(sizeof(int) * (size_t)(n > 0 ? n : 1));
    if (!order)
        return NULL;
    int big = kiln_linears_first(ls, n), k = 0;
    bool rows = false;
    for (int i = 0; i < n && !rows; i++)
        rows = ls[i].cap_rows > 0;
    if (big >= 0 && !rows)
        order[k++] = big;
    for (int i = 0; i < n; i++)
        if (i != big)
            order[k++] = i;
    if (big >= 0 && rows)
        order[k++] = big;
    return order;
}

int kiln_linears_bind_consuming(KilnLinear *ls, int n, const KilnRunCtx *rc, KilnDiag *d)
{
    int *order = kiln_linears_bind_order(ls, n), r = 0;
    if (!order)
        return kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
    for (int j = 0; j < n && !r; j++)
        r = kiln_linear_bind_consuming(&ls[order[j]], rc, d);
    free(order);
    return r;
}

int kiln_linear_bind_consuming(KilnLinear *l, const KilnRunCtx *rc, KilnDiag *d)
{
    if (l->bound_early) { /* by a capture's sink */
        l->bound_early = false;
        return 0;
    }
    int r = kiln_linears_bind(l, 1, rc, d);
    kiln_linears_capture_end(l, 1);
    return r;
}

int kiln_linears_bind_sink(void *rc, KilnLinear *ls, int n, KilnDiag *d)
{
    for (int i = 0; i < n; i++) {
        int r = kiln_linear_bind_consuming(&ls[i], rc, d);
        if (r)
            return r;
        ls[i].bound_early = true;
    }
    return 0;
}

/* Whether a layer calibrates from captured rows (kiln_linears_capture_select): without
 * one (and without a static KV cache) the calibration run would compute nothing used. */
bool kiln_linears_capturing(const KilnLinear *ls, int n)
{
    for (int i = 0; i < n; i++)
        if (!ls[i].cap_skip)
            return true;
    return false;
}

/* ------------------------------------------------------------------ methods' changes */

struct KilnWOp {
    int kind;
    int64_t group; /* CLAMP */
    float *v;      /* COLMUL [K], ROWDIV [N], CLAMP lo/hi [2 * N * segments] */
    int32_t *perm; /* GATHER [K] */
};

static int64_t segs(const KilnLinear *l, int64_t g) { return (l->K + g - 1) / g; }

int kiln_linear_wop(KilnLinear *l, int kind, const float *v, const int32_t *perm, int64_t group,
                    KilnDiag *d)
{
    if (!wsource(l)) /* kept anyway: nothing to replay from */
        return 0;
    struct KilnWOp *ops = realloc(l->wops, sizeof *ops * (size_t)(l->nwops + 1));
    if (!ops)
        return kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
    l->wops = ops;
    struct KilnWOp *o = &ops[l->nwops];
    *o = (struct KilnWOp){.kind = kind, .group = group > 0 ? group : l->K};
    int64_t n = kind == KILN_WOP_COLMUL ? l->K : kind == KILN_WOP_ROWDIV ? l->N
              : kind == KILN_WOP_CLAMP ? 2 * l->N * segs(l, o->group) : 0;
    if (n && !(o->v = malloc(sizeof(float) * (size_t)n)))
        return kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
    if (kind == KILN_WOP_GATHER && !(o->perm = malloc(sizeof(int32_t) * (size_t)l->K)))
        return kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
    if (kind == KILN_WOP_GATHER)
        memcpy(o->perm, perm, sizeof(int32_t) * (size_t)l->K);
    else if (kind != KILN_WOP_CLAMP)
        memcpy(o->v, v, sizeof(float) * (size_t)n);
    else /* the range each segment has after the clip: clamping the unclipped w to it is the clip */
        for (int64_t r = 0; r < l->N; r++)
            for (int64_t s = 0; s < segs(l, o->group); s++) {
                const float *p = l->w + r * l->K + s * o->group;
                int64_t m = l->K - s * o->group < o->group ? l->K - s * o->group : o->group;
                float lo = p[0], hi = p[0];
                for (int64_t k = 1; k < m; k++)
                    lo = p[k] < lo ? p[k] : lo, hi = p[k] > hi ? p[k] : hi;
                o->v[2 * (r * segs(l, o->group) + s)] = lo;
                o->v[2 * (r * segs(l, o->group) + s) + 1] = hi;
            }
    l->nwops++;
    return 0;
}

/* The same arithmetic, in the same order, as the method that did it (model/eval/calib.c),
 * on rows r0..r0+nr of the layer held in w. */
static int replay(const KilnLinear *l, float *w, int64_t r0, int64_t nr)
{
    float *tmp = NULL;
    for (int i = 0; i < l->nwops; i++) {
        const struct KilnWOp *o = &l->wops[i];
        for (int64_t r = r0; r < r0 + nr; r++) {
            float *row = w + (r - r0) * l->K;
            if (o->kind == KILN_WOP_COLMUL)
                for (int64_t k = 0; k < l->K; k++)
                    row[k] *= o->v[k];
            else if (o->kind == KILN_WOP_ROWDIV)
                for (int64_t k = 0; k < l->K; k++)
                    row[k] /= o->v[r];
            else if (o->kind == KILN_WOP_CLAMP)
                for (int64_t k = 0; k < l->K; k++) {
                    const float *b = &o->v[2 * (r * segs(l, o->group) + k / o->group)];
                    row[k] = row[k] < b[0] ? b[0] : row[k] > b[1] ? b[1] : row[k];
                }
            else {
                if (!tmp && !(tmp = malloc(sizeof(float) * (size_t)l->K)))
                    return -1;
                for (int64_t k = 0; k < l->K; k++)
                    tmp[k] = row[o->perm[k]];
                memcpy(row, tmp, sizeof(float) * (size_t)l->K);
            }
        }
    }
    free(tmp);
    return 0;
}

int kiln_linear_wsettle(KilnLinear *l, KilnDiag *d)
{
    if (!l->w_dirty || !l->w || !wsource(l))
        return 0;
    float *w = malloc(sizeof(float) * (size_t)(l->N * l->K));
    if (!w)
        return kiln_diag_set(d, KILN_EINTERNAL, "layer %s: out of memory", l->name);
    int rc = wrows(l, 0, l->N, w, d);
    wdrop(l);
    if (!rc && replay(l, w, 0, l->N))
        rc = kiln_diag_set(d, KILN_EINTERNAL, "layer %s: out of memory", l->name);
    if (!rc && !memcmp(w, l->w, sizeof(float) * (size_t)(l->N * l->K))) {
        free(l->w); /* the file and the recorded changes give it again */
        l->w = NULL;
        l->w_dirty = false;
    }
    free(w);
    return rc;
}

void kiln_linear_wops_free(KilnLinear *l)
{
    for (int i = 0; i < l->nwops; i++)
        free(l->wops[i].v), free(l->wops[i].perm);
    free(l->wops);
    l->wops = NULL;
    l->nwops = 0;
}
