/* model/eval/perplexity.c — kiln eval's perplexity of a decoder: a sliding window over the
 * evaluation tokens, each window's final hidden states through the output head a few rows
 * at a time, so the logits held stay small whatever the window (docs/hardening.md,
 * "Memory"; methodology: docs/models.md). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "frontend/recipe.h"
#include "model/eval/perplexity.h"
#include "runtime/progress.h"
#include "runtime/runtime.h"

typedef KilnEvalRow Row;

/* Logits are made this many rows at a time from the window's final hidden states (6 MB
 * for SmolLM2's 49,152-token vocabulary, where a window of 512 rows held 100 MB:
 * docs/hardening.md, "Memory"). */
enum { PPL_HEAD_ROWS = 32 };

/* Adds to *nll the negative log-likelihood of each row's next token, row by row (the sum's
 * order is the tokens' whatever the chunks): rows [n][V] of logits, the tokens next[n]. */
static void rows_nll(const float *logits, int n, int V, const int32_t *next, double *nll)
{
    for (int r = 0; r < n; r++) {
        const float *lg = logits + (size_t)r * V;
        float mx = -INFINITY;
        for (int j = 0; j < V; j++)
            mx = lg[j] > mx ? lg[j] : mx;
        double s = 0;
        for (int j = 0; j < V; j++)
            s += exp((double)lg[j] - mx);
        *nll += log(s) + mx - lg[next[r]];
    }
}

/* One window's nll: its tokens through the blocks, then the head on head_rows of the
 * nlast final hidden states at a time (the last row is run too, as one forward over
 * all of them ran it, so a layer's --per-layer statistics see the same rows). */
static int window_nll(KilnLlama *m, KilnPool *pool, KilnKVCache *kv, const KilnPplCfg *c, int b,
                      int e, int nlast, float *hid, float *logits, double *nll, double *ms,
                      KilnDiag *d)
{
    int D = kiln_llama_dim(m), V = kiln_llama_vocab(m), nl = 0;
    KilnLinear *head = &kiln_llama_linears(m, &nl)[nl - 1];
    double t0 = kiln_now_ms(); /* the model's time: the forward and the head, not the nll */
    int rc = kiln_llama_forward_hidden(m, pool, kv, c->ids + b, e - b, 0, nlast, hid, d);
    /* a head the recipe ignores runs the reference GEMM, which reads its f32 weights from
     * the file for each call: read once for the window's chunks, as for one call before
     * (w_held: kiln_linear_wput keeps them until the window is done) */
    bool hold = !rc && !head->kl && !head->percall && !head->w && nlast > c->head_rows;
    if (hold && !(rc = kiln_linear_wget(head, d)))
        head->w_held = true;
    *ms += kiln_now_ms() - t0;
    for (int r0 = 0; !rc && r0 < nlast; r0 += c->head_rows) {
        int n = nlast - r0 < c->head_rows ? nlast - r0 : c->head_rows;
        t0 = kiln_now_ms();
        rc = kiln_llama_head(m, pool, hid + (size_t)r0 * D, n, logits, d);
        *ms += kiln_now_ms() - t0;
        /* row r predicts token e - nlast + 1 + r; the window's last row predicts none */
        if (!rc)
            rows_nll(logits, r0 + n < nlast ? n : n - 1, V, c->ids + e - nlast + 1 + r0, nll);
    }
    if (hold && head->w_held) {
        head->w_held = false;
        kiln_linear_wput(head);
    }
    return rc;
}

/* Perplexity over ids with a sliding window (HF-style: each window re-reads up to
 * window-stride tokens of context and scores only tokens not scored before). */
int kiln_decoder_ppl(KilnLlama *m, KilnPool *pool, const KilnKVSpec *kvs,
                       const KilnKVCache *calib, const KilnPplCfg *c, Row *row, KilnDiag *d)
{
    int V = kiln_llama_vocab(m);
    KilnKVCache kv;
    /* each window a forward from position 0, never continued: one layer's K/V at a time */
    int rc = kiln_llama_kv_init_pass(m, &kv, kvs, c->window, d);
    if (rc)
        return rc;
    if (calib && kvs->fmt >= KILN_KV_FP8_E4M3 && !kvs->dynamic) { /* calibrated static scales */
        memcpy(kv.ks, calib->ks, sizeof(float) * (size_t)kv.nlayers * kv.nscale);
        memcpy(kv.vs, calib->vs, sizeof(float) * (size_t)kv.nlayers * kv.nscale);
    }
    float *logits = malloc(sizeof(float) * (size_t)c->head_rows * V);
    float *hid = malloc(sizeof(float) * (size_t)c->window * kiln_llama_dim(m));
    if (!logits || !hid) {
        free(logits), free(hid);
        kiln_kv_free(&kv);
        return kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
    }
    double nll = 0, ms = 0;
    int64_t scored = 0, forwarded = 0;
    int prev_end = 0;
    char stage[160];
    snprintf(stage, sizeof stage, "perplexity %s", row->name);
    kiln_progress_stage(c->prog, stage, c->ntok - 1, "tokens");
    for (int b = 0; !rc && prev_end < c->ntok; b += c->stride) {
        int e = b + c->window < c->ntok ? b + c->window : c->ntok;
        int first = prev_end > b + 1 ? prev_end : b + 1;
        if (first >= e)
            break;
        int nlast = e - first + 1;
        rc = window_nll(m, pool, &kv, c, b, e, nlast, hid, logits, &nll, &ms, d);
        forwarded += e - b;
        scored += rc ? 0 : e - first;
        prev_end = e;
        kiln_progress_step(c->prog, scored, NULL);
    }
    if (!rc)
        kiln_progress_end(c->prog);
    if (!rc) {
        row->metric = scored ? exp(nll / (double)scored) : NAN; /* none scored: no metric */
        row->ms_per_unit = ms / (double)forwarded;
        row->units_per_s = 1e3 * (double)forwarded / ms;
        row->kv_bytes = (double)kiln_kv_bytes_per_token(&kv);
        kiln_kv_spec_name(kvs, row->kv, sizeof row->kv);
    }
    free(logits), free(hid);
    kiln_kv_free(&kv);
    return rc;
}


/* Rows of logits at a time: PPL_HEAD_ROWS, unless the head's rule scales its activations
 * per tensor at run time (then a row's logits depend on the rows run with it, so the
 * window's rows run together, as they always did). */
int kiln_ppl_head_rows(const KilnRunCtx *rc, const KilnLinear *head, int window)
{
    int rule = kiln_recipe_match(rc->fr, head->name);
    KilnQuantSpec a;
    if (rule >= 0 && kiln_recipe_rule_acts(rc->fr, rule, &a) && a.dynamic &&
        a.gran == KILN_GRAN_TENSOR)
        return window > PPL_HEAD_ROWS ? window : PPL_HEAD_ROWS;
    return PPL_HEAD_ROWS;
}
