/* model/eval/calib.c — the recipe's methods on a real model (docs/quant.md), block by
 * block: the calibration text's hidden states go through the f32 model one block at a
 * time (model/eval/calib_net.c), gathering only that block's input statistics
 * (streaming, bounded per input: XᵀX for GPTQ, per-channel max and mean |x|, a bounded
 * sample of rows); then per scale site of the block AWQ or SmoothQuant moves a
 * per-channel scale from the input into the weights (folded into the norm or previous
 * layer that makes the input, so the f32 model computes the same function), GPTQ rounds
 * each of the block's layers with error compensation on the transformed statistics, and
 * the block's statistics are freed. The block's output (the next block's input) was
 * computed before its weights changed, so every block sees the inputs one whole f32
 * calibration pass would give it. The results ride on KilnLinear (qres, in_div,
 * in_perm) and kiln_linears_bind hands them to kiln. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/plan.h"
#include "frontend/recipe.h"
#include "ir/numerics.h"
#include "model/checkpoints/checkpoint.h"
#include "model/model.h"
#include "quant/quant.h"
#include "runtime/progress.h"

enum { SAMPLE_ROWS = 512 }; /* rows kept for AWQ's search (a reservoir) */

static const KilnMethod *method_of(const KilnRecipe *fr, const KilnLinear *l)
{
    int ri = fr ? kiln_recipe_match(fr, l->name) : -1;
    return ri < 0 || kiln_recipe_rule_stored(fr, ri) ? NULL : kiln_recipe_rule_method(fr, ri);
}

static bool any_method(const KilnMethod *m) { return m && (m->gptq || m->awq || m->smoothquant); }

bool kiln_quant_needed(const KilnLinear *ls, int n, const KilnRecipe *fr)
{
    for (int i = 0; i < n; i++)
        if (any_method(method_of(fr, &ls[i])))
            return true;
    return false;
}

/* The layer's weight format from the recipe, as the passes will resolve it: read, not
 * planned (the layer is lowered once, when kiln_linears_bind creates it). */
int kiln_quant_format(const KilnRunCtx *rc, const KilnLinear *l, char *buf, size_t n,
                      KilnDiag *d)
{
    KilnQuantSpec q;
    buf[0] = 0;
    if (!kiln_recipe_layer_weights(rc->fr, l->name, l->K,
                                   rc->ctx ? kiln_ctx_target_full(rc->ctx) : NULL, &q))
        return 0;
    KilnQuantSpec w = {.fmt = q.fmt, .symmetric = q.symmetric, .gran = q.gran, .group = q.group};
    kiln_spec_print(&w, buf, n);
    (void)d;
    return 0;
}

/* What GPTQ wrote into r->w, made from r's codes (packed or not) on its grid:
 * kiln_dequantize_value of each code with its slice's scale and zero (slices of q->group
 * columns in the result's column order, one per row for channel and tensor). */
static int dequant_codes(const KilnQResult *r, const KilnQuantSpec *q, float *w, KilnDiag *d)
{
    int64_t N = r->N, K = r->K, len = q->gran == KILN_GRAN_GROUP ? q->group : K;
    int16_t *c = malloc(sizeof(int16_t) * (size_t)K);
    if (!c)
        return kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
    for (int64_t n = 0; n < N; n++) {
        kiln_qresult_codes(r, n * K, K, c);
        for (int64_t j = 0; j < K; j++) {
            int64_t si = n * r->ngroups + (r->ngroups > 1 ? j / len : 0);
            KilnQParams p = {r->scale[si], r->zero ? r->zero[si] : 0};
            w[n * K + j] = kiln_dequantize_value(q->fmt, q->symmetric, p, c[j]);
        }
    }
    free(c);
    return 0;
}

/* GPTQ's result kept as its codes alone (KilnLinear.q_spec), still there to be read. */
static bool codes_only(const KilnLinear *l)
{
    return l->q_spec.fmt != KILN_QF_NONE && l->qres && (l->qres->codes || l->qres->packed);
}

int kiln_quant_wget(KilnLinear *l, KilnDiag *d)
{
    if (l->q_w || l->q_spec.fmt == KILN_QF_NONE || !l->qres)
        return 0;
    if (!codes_only(l)) /* kiln_quant_bound dropped it: only the methods could make it again */
        return kiln_diag_set(d, KILN_EINTERNAL,
                             "layer %s: its GPTQ result was released once the layer was bound; "
                             "binding it again needs the recipe's methods run again",
                             l->name);
    float *w = malloc(sizeof(float) * (size_t)(l->qres->N * l->qres->K));
    if (!w)
        return kiln_diag_set(d, KILN_EINTERNAL, "layer %s: out of memory", l->name);
    if (dequant_codes(l->qres, &l->q_spec, w, d)) {
        free(w);
        return d->code;
    }
    l->qres->w = l->q_w = w;
    return 0;
}

void kiln_quant_wput(KilnLinear *l)
{
    if (!l->q_w || !codes_only(l))
        return;
    free(l->q_w);
    l->qres->w = l->q_w = NULL;
}

void kiln_quant_bound(KilnLinear *l)
{
    if (!codes_only(l) || l->q_w)
        return;
    KilnQResult *r = l->qres;
    free(r->codes), free(r->packed), free(r->scale), free(r->zero), free(r->perm);
    r->codes = NULL, r->packed = NULL, r->scale = NULL, r->zero = NULL, r->perm = NULL;
    l->q_scale = NULL, l->q_zero = NULL;
}

/* GPTQ's codes packed (int4: half a byte each) and its f32 weights dropped when the
 * packed codes give them again bit for bit (checked). */
static int keep_codes_only(KilnLinear *l, KilnQResult *res, const KilnQuantSpec *q, KilnDiag *d)
{
    float *w = malloc(sizeof(float) * (size_t)(res->N * res->K));
    if (!w)
        return kiln_diag_set(d, KILN_EINTERNAL, "layer %s: out of memory", l->name);
    int r = kiln_qresult_pack(res, d);
    if (!r)
        r = dequant_codes(res, q, w, d);
    if (!r && !memcmp(w, res->w, sizeof(float) * (size_t)(res->N * res->K))) {
        free(res->w);
        res->w = NULL;
        l->q_spec = *q;
    }
    free(w);
    return r;
}

void kiln_quant_release(KilnLinear *ls, int n)
{
    for (int i = 0; i < n; i++) {
        if (ls[i].qres) {
            kiln_qresult_free(ls[i].qres);
            free(ls[i].qres);
        }
        free(ls[i].in_div);
        free(ls[i].in_perm);
        ls[i].qres = NULL, ls[i].in_div = NULL, ls[i].in_perm = NULL;
        ls[i].q_w = ls[i].q_scale = NULL, ls[i].q_zero = NULL;
        ls[i].q_format[0] = 0;
        ls[i].q_spec = (KilnQuantSpec){0};
    }
}

/* One input's statistics and, once calibration is over, what methods read from
 * them in the model's current (scaled) coordinates: H (GPTQ) and mean |x|. */
typedef struct Input {
    KilnActStats s; /* first: KilnLinear.stats points here */
    double *H;
    float *xmean;
} Input;

/* Every layer's statistics, each object shared by the layers of one input. */
typedef struct Stats {
    Input **own; /* distinct objects, to free */
    int nown;
} Stats;

static int stats_attach(KilnLinear *ls, const int *idx, int ni, bool hess, Stats *st, KilnDiag *d)
{
    Input *in = calloc(1, sizeof *in);
    if (!in)
        return kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
    int rc = kiln_actstats_init(&in->s, ls[idx[0]].K, hess, SAMPLE_ROWS, d);
    if (rc) {
        free(in);
        return rc;
    }
    st->own[st->nown++] = in;
    for (int j = 0; j < ni; j++) {
        ls[idx[j]].stats = &in->s;
        ls[idx[j]].stats_add = j == 0; /* they all see the same x: count it once */
    }
    return 0;
}

/* XᵀX (upper panels, kp x kp) → H = 2/rows · XᵀX (K x K, full) in the same buffer, as
 * kiln_actstats_hessian computes it (the same products), without a second K·K copy:
 * the lower panels mirrored first, then rows compacted to stride K (each write lands at
 * or before what it reads, and after everything read before it). */
static int hessian_in_place(KilnActStats *s, double **H, KilnDiag *d)
{
    if (s->rows == 0)
        return kiln_diag_set(d, KILN_EINPUT, "no calibration rows reached this layer");
    int64_t K = s->K, kp = s->kp;
    double *x = s->xtx, f = 2.0 / (double)s->rows;
    for (int64_t i = 0; i < K; i++)
        for (int64_t j = 0; j < K && j / 8 < i / 8; j++)
            x[i * kp + j] = x[j * kp + i];
    for (int64_t i = 0; i < K; i++)
        for (int64_t j = 0; j < K; j++)
            x[i * K + j] = f * x[i * kp + j];
    *H = x;
    s->xtx = NULL;
    free(s->panel);
    s->panel = NULL;
    return 0;
}

/* After the block's run: H (when gathered) and mean |x| as plain arrays. */
static int input_finish(Input *in, KilnDiag *d)
{
    int64_t K = in->s.K;
    in->xmean = malloc(sizeof(float) * (size_t)K);
    if (!in->xmean)
        return kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
    kiln_actstats_mean_abs(&in->s, in->xmean);
    return in->s.xtx ? hessian_in_place(&in->s, &in->H, d) : 0;
}

static void input_free(Input *in)
{
    kiln_actstats_free(&in->s);
    free(in->H);
    free(in->xmean);
    free(in);
}

/* x → x/s on everything gathered about the input: max, mean, samples, H. */
static void stats_scale(KilnActStats *st, const float *sc)
{
    Input *in = (Input *)st;
    int64_t K = st->K;
    for (int64_t j = 0; j < K; j++) {
        st->absmax[j] /= sc[j];
        in->xmean[j] /= sc[j];
    }
    for (int64_t r = 0; r < st->nsample; r++)
        for (int64_t j = 0; j < K; j++)
            st->sample[r * K + j] /= sc[j];
    if (in->H)
        for (int64_t i = 0; i < K; i++)
            for (int64_t j = 0; j < K; j++)
                in->H[i * K + j] /= (double)sc[i] * (double)sc[j];
}

/* What prepare knows of each layer: its rule's method (matched once) and, once
 * asked, the weight format the target gives it (resolved once). */
typedef struct Plan {
    const KilnMethod *m;
    KilnQuantSpec q;
    bool have_q;
} Plan;

static int plan_spec(Plan *p, const KilnRunCtx *rc, const KilnLinear *l, KilnQuantSpec *q,
                     KilnDiag *d)
{
    if (!p->have_q) {
        char f[64];
        int r = kiln_quant_format(rc, l, f, sizeof f, d);
        if (r)
            return r;
        if (!f[0] || kiln_spec_parse(f, &p->q))
            return kiln_diag_set(d, KILN_EINTERNAL, "layer %s: no weight format to quantize to ('%s')",
                                 l->name, f);
        p->have_q = true;
    }
    *q = p->q;
    return 0;
}

void kiln_gather_cols(float *w, int64_t rows, int64_t K, const int32_t *perm, float *tmp)
{
    for (int64_t n = 0; n < rows; n++) {
        float *r = w + n * K;
        for (int64_t k = 0; k < K; k++)
            tmp[k] = r[perm[k]];
        memcpy(r, tmp, sizeof(float) * (size_t)K);
    }
}

/* AWQ / SmoothQuant on one site: find s, move it into the weights and into what
 * makes the input (or a pre-scale), clip. */
static int migrate(KilnLinear *ls, Plan *plan, const KilnScaleSite *site, const KilnRunCtx *rc,
                   bool verbose, KilnDiag *d)
{
    const KilnMethod *m = plan[site->lin[0]].m;
    KilnLinear *l0 = &ls[site->lin[0]];
    KilnActStats *st = l0->stats;
    int64_t K = l0->K;
    bool prev_ok = site->prev >= 0 && ls[site->prev].N == K;
    if (!site->norm_w && !prev_ok && !m->prescale) {
        if (verbose)
            fprintf(stderr, "kiln: %s: %s skipped: no norm or previous layer can take the scale "
                    "(prescale = true runs it as an input pre-scale)\n", l0->name,
                    m->awq ? "awq" : "smoothquant");
        return 0;
    }
    const float *W[3];
    int64_t N[3];
    for (int j = 0; j < site->nlin; j++) { /* read again from the file if dropped */
        if (kiln_linear_wget(&ls[site->lin[j]], d))
            return d->code;
        W[j] = ls[site->lin[j]].w, N[j] = ls[site->lin[j]].N;
    }
    if (prev_ok && kiln_linear_wget(&ls[site->prev], d))
        return d->code;
    float *s = malloc(sizeof(float) * (size_t)K);
    if (!s)
        return kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
    int r = 0;
    float alpha = m->alpha;
    double ratio = 1.0;
    KilnQuantSpec q = {0};
    if (m->awq) {
        KilnAwqOpts ao = KILN_AWQ_DEFAULTS;
        ao.grid = m->grid, ao.clip = m->clip;
        r = plan_spec(&plan[site->lin[0]], rc, l0, &q, d);
        if (!r)
            r = kiln_awq_search(W, N, site->nlin, K, st->sample, st->nsample, ((Input *)st)->xmean,
                                &q, &ao, s, &alpha, &ratio, d);
    } else {
        kiln_smooth_factors(st->absmax, W, N, site->nlin, K, m->alpha, s);
    }
    if (r) {
        free(s);
        return r;
    }
    for (int j = 0; j < site->nlin; j++) { /* W → W·diag(s) */
        KilnLinear *l = &ls[site->lin[j]];
        l->w_dirty = true; /* no longer the file's: recorded to be replayed */
        for (int64_t row = 0; row < l->N; row++)
            for (int64_t k = 0; k < K; k++)
                l->w[row * K + k] *= s[k];
        if (!r)
            r = kiln_linear_wop(l, KILN_WOP_COLMUL, s, NULL, 0, d);
    }
    const char *where;
    if (site->norm_w) { /* norm output → /s */
        for (int64_t k = 0; k < K; k++) {
            site->norm_w[k] /= s[k];
            if (site->norm_b)
                site->norm_b[k] /= s[k];
        }
        where = "norm";
    } else if (prev_ok) { /* the previous layer's output channels → /s */
        KilnLinear *p = &ls[site->prev];
        p->w_dirty = true;
        for (int64_t row = 0; row < p->N; row++) {
            for (int64_t k = 0; k < p->K; k++)
                p->w[row * p->K + k] /= s[row];
            if (p->b)
                p->b[row] /= s[row];
        }
        if (!r)
            r = kiln_linear_wop(p, KILN_WOP_ROWDIV, s, NULL, 0, d);
        where = p->name;
    } else {
        for (int j = 0; j < site->nlin; j++) {
            KilnLinear *l = &ls[site->lin[j]];
            l->in_div = malloc(sizeof(float) * (size_t)K);
            if (!l->in_div) {
                free(s);
                return kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
            }
            memcpy(l->in_div, s, sizeof(float) * (size_t)K);
        }
        where = "input pre-scale";
    }
    stats_scale(st, s);
    free(s);
    if (m->awq && m->clip) {
        KilnAwqOpts ao = KILN_AWQ_DEFAULTS;
        ao.grid = m->grid;
        for (int j = 0; j < site->nlin && !r; j++) {
            KilnLinear *l = &ls[site->lin[j]];
            KilnQuantSpec qj;
            r = plan_spec(&plan[site->lin[j]], rc, l, &qj, d);
            if (!r)
                r = kiln_awq_clip(l->w, l->N, K, st->sample, st->nsample, &qj, &ao, d);
            if (!r) /* as a clamp of each group to its clipped range */
                r = kiln_linear_wop(l, KILN_WOP_CLAMP, NULL, NULL,
                                    qj.gran == KILN_GRAN_GROUP ? qj.group : K, d);
        }
    }
    /* the site's weights are now the file's and the recorded changes: read again later */
    for (int j = 0; j < site->nlin && !r; j++)
        r = kiln_linear_wsettle(&ls[site->lin[j]], d);
    if (!r && prev_ok)
        r = kiln_linear_wsettle(&ls[site->prev], d);
    if (verbose && !r)
        fprintf(stderr, "kiln: %s%s: %s scale into %s (alpha %.2f)", l0->name,
                site->nlin > 1 ? " (+ siblings)" : "", m->awq ? "awq" : "smoothquant", where,
                (double)alpha);
    if (verbose && !r)
        fprintf(stderr, m->awq ? ", searched: output error x%.3f of alpha 0\n" : "\n", ratio);
    return r;
}

/* last: no other layer's GPTQ reads this layer's H, so it is the working matrix
 * (kiln_quant_gptq_consume: no second K×K copy) */
static int gptq_layer(KilnLinear *l, Plan *p, const KilnRunCtx *rc, bool last, bool verbose,
                      KilnDiag *d)
{
    const KilnMethod *m = p->m;
    KilnQuantSpec q;
    int r = plan_spec(p, rc, l, &q, d);
    if (r)
        return r;
    KilnGptqOpts go = {.damp = m->damp, .block = m->block, .act_order = m->act_order != 0,
                       .static_groups = m->act_order != 2};
    if (kiln_linear_wget(l, d))
        return d->code;
    KilnQResult *res = calloc(1, sizeof *res);
    if (!res)
        return kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
    double *H = ((Input *)l->stats)->H;
    r = last ? kiln_quant_gptq_consume(l->w, l->N, l->K, H, &q, &go, res, d)
             : kiln_quant_gptq(l->w, l->N, l->K, H, &q, &go, res, d);
    if (r) {
        free(res);
        char why[sizeof d->msg];
        snprintf(why, sizeof why, "%s", d->msg);
        return kiln_diag_set(d, d->code ? d->code : KILN_EINTERNAL, "layer %s: gptq: %s", l->name,
                             why);
    }
    if (res->perm) { /* the layer now sees x[:, perm]: keep w (and a pre-scale) in that order */
        l->in_perm = malloc(sizeof(int32_t) * (size_t)l->K);
        float *tmp = malloc(sizeof(float) * (size_t)l->K);
        if (!l->in_perm || !tmp) {
            free(tmp);
            kiln_qresult_free(res);
            free(res);
            return kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
        }
        memcpy(l->in_perm, res->perm, sizeof(int32_t) * (size_t)l->K);
        l->w_dirty = true; /* columns in the permuted order: recorded */
        kiln_gather_cols(l->w, l->N, l->K, l->in_perm, tmp);
        r = kiln_linear_wop(l, KILN_WOP_GATHER, NULL, l->in_perm, 0, d);
        if (l->in_div)
            kiln_gather_cols(l->in_div, 1, l->K, l->in_perm, tmp);
        free(tmp);
    }
    l->qres = res;
    if (!r)
        r = keep_codes_only(l, res, &q, d);
    l->q_w = res->w, l->q_scale = res->scale, l->q_zero = res->zero;
    if (r || (r = kiln_linear_wsettle(l, d)))
        return r;
    kiln_linear_wput(l); /* binding takes q_w; --per-layer reads w again */
    if (verbose) {
        char qs[64];
        kiln_spec_print(&q, qs, sizeof qs);
        fprintf(stderr, "kiln: %s: gptq %s%s\n", l->name,
                m->act_order == 2 ? "act_order=group " : m->act_order ? "act_order=static " : "", qs);
    }
    return 0;
}

static bool migrates(const KilnMethod *m) { return m && (m->awq || m->smoothquant); }

/* What prepare works through: every layer's plan, the scale sites (the model's, then one
 * of its own for every other layer with a method) and the block each belongs to. */
typedef struct Prep {
    KilnLinear *ls;
    int n, na; /* layers, sites */
    Plan *plan;
    KilnScaleSite *all;
    int *sblock;  /* [na] */
    bool *hess;   /* [na] the site's input needs XᵀX; need: a method reads its stats */
    bool *need;
    int *left;    /* [n] per layer: GPTQ layers of its input not yet rounded */
    Stats st;     /* the current block's inputs */
    const KilnCalibNet *net;
    const KilnRunCtx *rc;
    bool verbose;
    int64_t step; /* progress: blocks run, sites migrated, layers rounded */
} Prep;

/* One step of the stage begun (what: a layer, or "block i"), the bar cleared before a
 * verbose line. */
static void prep_step(Prep *p, bool done, const char *what)
{
    KilnProgress *pg = p->rc->progress;
    kiln_progress_step(pg, done ? ++p->step : p->step, what);
    if (!done && p->verbose)
        kiln_progress_clear(pg);
}

/* The site (index into p->all) whose input layer i reads and whose statistics a method
 * needs, or -1. */
static int site_of(const Prep *p, int i)
{
    for (int s = 0; s < p->na; s++)
        for (int j = 0; p->need[s] && j < p->all[s].nlin; j++)
            if (p->all[s].lin[j] == i)
                return s;
    return -1;
}

static int block_of(const Prep *p, int layer)
{
    int b = layer / p->net->per_block;
    return b < p->net->nblocks ? b : p->net->nblocks;
}

/* The plan of every layer and site; the same checks as before any statistics. */
static int prep_plan(Prep *p, const KilnScaleSite *sites, int nsites, KilnDiag *d)
{
    KilnLinear *ls = p->ls;
    int n = p->n;
    bool *in_site = calloc((size_t)n, sizeof *in_site);
    if (!in_site)
        return kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
    for (int i = 0; i < n; i++)
        p->plan[i].m = method_of(p->rc->fr, &ls[i]);
    for (int s = 0; s < nsites; s++) {
        p->all[p->na++] = sites[s];
        for (int j = 0; j < sites[s].nlin; j++)
            in_site[sites[s].lin[j]] = true;
    }
    for (int i = 0; i < n; i++)
        if (!in_site[i] && any_method(p->plan[i].m))
            p->all[p->na++] = (KilnScaleSite){{i}, 1, NULL, NULL, -1};
    free(in_site);
    int r = 0;
    for (int s = 0; s < p->na && !r; s++) {
        const KilnScaleSite *si = &p->all[s];
        const KilnMethod *m0 = p->plan[si->lin[0]].m;
        p->sblock[s] = block_of(p, si->lin[0]);
        for (int j = 0; j < si->nlin && !r; j++) {
            const KilnMethod *m = p->plan[si->lin[j]].m;
            p->need[s] |= any_method(m);
            p->hess[s] |= m && m->gptq;
            if (migrates(m0) != migrates(m) || (migrates(m) && m0->awq != m->awq))
                r = kiln_diag_set(d, KILN_EINPUT,
                                  "layers %s and %s read the same input, so awq / smoothquant must "
                                  "be given to both or neither (one scale serves that input)",
                                  ls[si->lin[0]].name, ls[si->lin[j]].name);
            if (block_of(p, si->lin[j]) != p->sblock[s] ||
                (si->prev >= 0 && block_of(p, si->prev) != p->sblock[s]))
                r = kiln_diag_set(d, KILN_EINTERNAL, "scale site of %s: its layers are not all "
                                  "in one block", ls[si->lin[0]].name);
        }
        for (int j = 0; j < si->nlin && p->need[s]; j++)
            p->left[si->lin[0]] += p->plan[si->lin[j]].m && p->plan[si->lin[j]].m->gptq;
    }
    return r;
}

/* Block b's statistics, gathered from its run (the layers after the blocks: nothing
 * runs them in calibration, as the whole forward pass never ran the head), finished. */
static int block_stats(Prep *p, int b, KilnDiag *d)
{
    int r = 0;
    for (int s = 0; s < p->na && !r; s++)
        if (p->sblock[s] == b && p->need[s])
            r = stats_attach(p->ls, p->all[s].lin, p->all[s].nlin, p->hess[s], &p->st, d);
    if (!r && b < p->net->nblocks) {
        char what[48];
        snprintf(what, sizeof what, "block %d (f32)", b);
        prep_step(p, false, what);
        r = p->net->block(p->net->arg, b, d);
        prep_step(p, true, what);
    }
    for (int i = 0; i < p->n; i++)
        p->ls[i].stats_add = false;
    for (int k = 0; k < p->st.nown && !r; k++)
        r = input_finish(p->st.own[k], d);
    return r;
}

static void block_release(Prep *p)
{
    for (int i = 0; i < p->n; i++)
        p->ls[i].stats = NULL;
    for (int k = 0; k < p->st.nown; k++)
        if (p->st.own[k])
            input_free(p->st.own[k]);
    p->st.nown = 0;
}

/* Block b: statistics, scale migration (it changes the weights GPTQ then rounds), GPTQ;
 * each input's arrays freed as soon as its methods are done with them. */
static int block_methods(Prep *p, int b, KilnDiag *d)
{
    KilnLinear *ls = p->ls;
    int r = block_stats(p, b, d);
    for (int s = 0; s < p->na && !r; s++)
        if (p->sblock[s] == b && migrates(p->plan[p->all[s].lin[0]].m) &&
            ls[p->all[s].lin[0]].stats) {
            prep_step(p, false, ls[p->all[s].lin[0]].name);
            r = migrate(ls, p->plan, &p->all[s], p->rc, p->verbose, d);
            prep_step(p, true, ls[p->all[s].lin[0]].name);
        }
    for (int k = 0; k < p->st.nown && !r; k++) { /* GPTQ reads only H from here on */
        KilnActStats *s = &p->st.own[k]->s;
        free(s->sample), free(s->absmax), free(s->abssum);
        s->sample = NULL, s->absmax = NULL, s->abssum = NULL, s->nsample = 0;
    }
    for (int i = 0; i < p->n && !r; i++)
        if (block_of(p, i) == b && p->plan[i].m && p->plan[i].m->gptq) {
            int s = site_of(p, i); /* its input's H: done once its layers are */
            Input *in = s >= 0 ? (Input *)ls[p->all[s].lin[0]].stats : NULL;
            int *left = s >= 0 ? &p->left[p->all[s].lin[0]] : NULL;
            prep_step(p, false, ls[i].name);
            r = gptq_layer(&ls[i], &p->plan[i], p->rc, in && *left == 1, p->verbose, d);
            prep_step(p, true, ls[i].name);
            if (!r && in && --*left == 0) {
                free(in->H);
                in->H = NULL;
            }
        }
    block_release(p);
    return r;
}

int kiln_quant_prepare(KilnLinear *ls, int n, const KilnScaleSite *sites, int nsites,
                       const KilnRunCtx *rc, const KilnCalibNet *net, bool verbose, KilnDiag *d)
{
    if (!kiln_quant_needed(ls, n, rc->fr))
        return 0;
    Prep p = {.ls = ls, .n = n, .net = net, .rc = rc, .verbose = verbose};
    p.plan = calloc((size_t)n, sizeof *p.plan);
    p.all = malloc(sizeof *p.all * (size_t)(nsites + n));
    p.sblock = calloc((size_t)(nsites + n), sizeof *p.sblock);
    p.hess = calloc((size_t)(nsites + n), sizeof *p.hess);
    p.need = calloc((size_t)(nsites + n), sizeof *p.need);
    p.left = calloc((size_t)n, sizeof *p.left);
    p.st = (Stats){calloc((size_t)n, sizeof(Input *)), 0};
    int r = p.plan && p.all && p.sblock && p.hess && p.need && p.left && p.st.own
                ? 0
                : kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
    if (!r && net->per_block < 1)
        r = kiln_diag_set(d, KILN_EINTERNAL, "calibration: %d layers per block", net->per_block);
    if (!r)
        r = prep_plan(&p, sites, nsites, d);
    int64_t total = net->nblocks; /* progress: blocks, sites migrated, layers rounded */
    bool tail = false;            /* layers after the blocks with a method */
    for (int s = 0; !r && s < p.na; s++) {
        tail |= p.sblock[s] == net->nblocks && p.need[s];
        total += p.need[s] && migrates(p.plan[p.all[s].lin[0]].m);
    }
    for (int i = 0; !r && i < n; i++)
        total += p.plan[i].m && p.plan[i].m->gptq;
    kiln_linears_unbind(ls, n); /* calibrate on the f32 model */
    /* steps: each block's f32 run, then its awq / smoothquant sites and gptq layers */
    kiln_progress_stage(rc->progress, "calibration, block by block", total, "steps");
    bool begun = false;
    if (!r)
        r = net->begin(net->arg, d), begun = true;
    for (int b = 0; b < net->nblocks + tail && !r; b++)
        r = block_methods(&p, b, d);
    if (!r)
        kiln_progress_end(rc->progress);
    if (begun && net->end)
        net->end(net->arg);
    block_release(&p);
    for (int i = 0; i < n; i++)
        ls[i].stats = NULL, ls[i].stats_add = false;
    free(p.st.own), free(p.plan), free(p.all), free(p.sblock), free(p.hess), free(p.need);
    free(p.left);
    return r;
}

int kiln_static_act_params(const KilnLinear *l, const KilnQuantSpec *a, float *scale,
                           int32_t *zero, KilnDiag *d)
{
    if (a->scale > 0) { /* the recipe's own: kiln_layer_create calibrates nothing */
        *scale = a->scale, *zero = a->zero;
        return 0;
    }
    if (l->cap_have) { /* computed by kiln quantize's capture sink, rows since freed */
        *scale = l->cap_scale, *zero = l->cap_zero;
        return 0;
    }
    if (!l->cap || l->cap_rows <= 0)
        return kiln_diag_set(d, KILN_EINPUT,
                             "layer %s: its static activation scale is calibrated, but the layer "
                             "saw no calibration rows (give scale = ... in the recipe, or "
                             "calibration text)",
                             l->name);
    KilnQParams p = kiln_calib_static(a, l->cap, l->cap_rows * l->K);
    *scale = p.scale, *zero = p.zero;
    return 0;
}
