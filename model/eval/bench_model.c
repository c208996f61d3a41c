/* model/eval/bench_model.c — a whole model's speed under a recipe (`kiln bench --model`):
 * prompt processing and text generation timed as llama-bench times llama.cpp, after the
 * recipe is applied exactly as kiln eval applies it (model/eval/bench_model.h). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/plan.h"
#include "frontend/recipe.h"
#include "model/eval/bench_model.h"
#include "model/files/modelfile.h"
#include "model/model.h"
#include "model/nets/net.h"
#include "runtime/progress.h"
#include "runtime/runtime.h"

typedef struct Bench {
    const KilnBenchModelOpts *o;
    KilnBenchModelOut *out;
    KilnRunCtx rc;
    const KilnNetOps *net;
    void *model;
    KilnLinear *ls;
    int nl;
    KilnKVSpec kvs;
    KilnKVCache ckv; /* the calibration run's cache: static KV scales */
    char **cal;      /* calibration lines (an encoder's benchmark batch too) */
    int ncal;
} Bench;

/* Binds the layers one at a time, so the kernel compilation shows its progress, in
 * kiln_linears_bind_consuming's order and with its memory: each layer's calibration rows
 * freed as it binds, the one big layer first (last while layers hold rows). */
static int bind_layers(Bench *b, KilnDiag *d)
{
    int *order = kiln_linears_bind_order(b->ls, b->nl), rc = 0;
    if (!order)
        return kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
    kiln_progress_stage(b->o->progress, "compile kernels", b->nl, "layers");
    for (int j = 0; j < b->nl && !rc; j++) {
        rc = kiln_linear_bind_consuming(&b->ls[order[j]], &b->rc, d);
        if (!rc)
            kiln_progress_step(b->o->progress, j + 1, b->ls[order[j]].name);
    }
    free(order);
    if (!rc)
        kiln_progress_end(b->o->progress);
    return rc;
}

/* The recipe's methods and static scales, calibrated as kiln eval calibrates them. */
static int prepare_decoder(Bench *b, KilnDiag *d)
{
    KilnLlama *m = b->model;
    const struct KilnTokenizer *tk = kiln_llama_tokenizer(m, d);
    if (!tk)
        return KILN_EINPUT;
    bool kv_static = b->kvs.fmt >= KILN_KV_FP8_E4M3 && !b->kvs.dynamic;
    kiln_linears_capture_select(b->ls, b->nl, b->rc.fr); /* static scales, outlier columns */
    if (!kiln_quant_needed(b->ls, b->nl, b->rc.fr) && !kv_static &&
        !kiln_linears_capturing(b->ls, b->nl))
        return 0; /* nothing to calibrate: no calibration run (as kiln eval) */
    int32_t *ids = malloc(sizeof(int32_t) * KILN_METHOD_TOKENS);
    if (!ids)
        return kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
    kiln_progress_stage(b->o->progress, "calibrate", 1, "");
    int n = kiln_calib_tokens(tk, NULL, ids, KILN_METHOD_TOKENS, d);
    int rc = n < 0 ? KILN_EINPUT : kiln_llama_quant_prepare(m, &b->rc, ids, n, b->o->verbose, d);
    int nc = n < KILN_STATIC_TOKENS ? n : KILN_STATIC_TOKENS;
    if (!rc)
        rc = kiln_llama_kv_init(m, &b->ckv, &b->kvs, nc > 0 ? nc : 1, d);
    if (!rc) /* rows only for the layers that calibrate from them */
        kiln_linears_capture_select(b->ls, b->nl, b->rc.fr);
    if (!rc && (kv_static || kiln_linears_capturing(b->ls, b->nl)))
        rc = kiln_llama_capture_static(m, b->rc.pool, &b->ckv, ids, nc,
                                       &(KilnCaptureSink){kiln_linears_bind_sink, &b->rc}, d);
    free(ids);
    if (!rc)
        kiln_progress_end(b->o->progress);
    return rc;
}

static int prepare_encoder(Bench *b, KilnDiag *d)
{
    kiln_progress_stage(b->o->progress, "calibrate", 1, "");
    int rc = kiln_calib_text(NULL, &b->cal, &b->ncal, d);
    if (!rc && b->ncal < 1)
        rc = kiln_diag_set(d, KILN_EINPUT, "the calibration text has no lines");
    int nm = b->ncal < KILN_METHOD_SENTENCES ? b->ncal : KILN_METHOD_SENTENCES;
    if (!rc)
        rc = kiln_bert_quant_prepare(b->model, &b->rc, (const char *const *)b->cal, nm,
                                     b->o->verbose, d);
    if (!rc)
        rc = kiln_bert_capture_static(b->model, b->rc.pool, (const char *const *)b->cal,
                                      b->ncal,
                                      &(KilnCaptureSink){kiln_linears_bind_sink, &b->rc}, d);
    if (!rc)
        kiln_progress_end(b->o->progress);
    return rc;
}

/* ------------------------------------------------------------------ the tests */

static int test_alloc(KilnBenchTest *t, int n, KilnDiag *d)
{
    t->n = n;
    t->samples_ns = calloc((size_t)n, sizeof(double));
    t->samples_ts = calloc((size_t)n, sizeof(double));
    return t->samples_ns && t->samples_ts ? 0 : kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
}

/* Mean and sample standard deviation (n - 1, as llama-bench) of the runs. */
static void test_stats(KilnBenchTest *t)
{
    double s = 0, sn = 0, q = 0, qn = 0;
    for (int i = 0; i < t->n; i++)
        s += t->samples_ts[i], sn += t->samples_ns[i];
    t->avg_ts = s / t->n, t->avg_ns = sn / t->n;
    for (int i = 0; i < t->n; i++) {
        q += (t->samples_ts[i] - t->avg_ts) * (t->samples_ts[i] - t->avg_ts);
        qn += (t->samples_ns[i] - t->avg_ns) * (t->samples_ns[i] - t->avg_ns);
    }
    t->stddev_ts = t->n > 1 ? sqrt(q / (t->n - 1)) : 0;
    t->stddev_ns = t->n > 1 ? sqrt(qn / (t->n - 1)) : 0;
}

static int argmax(const float *v, int n)
{
    int best = 0;
    for (int i = 1; i < n; i++)
        best = v[i] > v[best] ? i : best;
    return best;
}

/* One run of a decoder test: the prompt as one forward from position 0 (logits of its last
 * token), or n_gen decode steps from position 0, each token the argmax of the one before. */
static int decoder_run(Bench *b, KilnKVCache *kv, const KilnBenchTest *t, const int32_t *ids,
                       float *logits, double *ns, KilnDiag *d)
{
    KilnLlama *m = b->model;
    double t0 = kiln_now_ms();
    int rc = 0;
    if (t->n_prompt > 0) {
        rc = kiln_llama_forward(m, b->rc.pool, kv, ids, t->n_prompt, 0, 1, logits, d);
    } else {
        int32_t tok = ids[0];
        for (int s = 0; !rc && s < t->n_gen; s++) {
            rc = kiln_llama_forward(m, b->rc.pool, kv, &tok, 1, s, 1, logits, d);
            tok = argmax(logits, kiln_llama_vocab(m));
        }
    }
    *ns = (kiln_now_ms() - t0) * 1e6;
    return rc;
}

/* The test's KV cache: the prompt's a cache of one pass (one forward from position 0,
 * never continued: kiln_kv_init_pass, one layer's K/V at a time), the decode's the whole
 * n_gen positions; static scales from the calibration run. */
static int test_kv(Bench *b, const KilnBenchTest *t, KilnKVCache *kv, KilnDiag *d)
{
    int rc = t->n_prompt > 0 ? kiln_llama_kv_init_pass(b->model, kv, &b->kvs, t->n_prompt, d)
                             : kiln_llama_kv_init(b->model, kv, &b->kvs, t->n_gen, d);
    if (!rc && b->kvs.fmt >= KILN_KV_FP8_E4M3 && !b->kvs.dynamic) { /* calibrated static scales */
        memcpy(kv->ks, b->ckv.ks, sizeof(float) * (size_t)kv->nlayers * kv->nscale);
        memcpy(kv->vs, b->ckv.vs, sizeof(float) * (size_t)kv->nlayers * kv->nscale);
    }
    return rc;
}

static int decoder_tests(Bench *b, KilnDiag *d)
{
    const KilnBenchModelOpts *o = b->o;
    KilnLlama *m = b->model;
    int V = kiln_llama_vocab(m), cap = o->n_prompt > o->n_gen ? o->n_prompt : o->n_gen, rc = 0;
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)cap);
    float *logits = malloc(sizeof(float) * (size_t)V);
    if (!ids || !logits)
        rc = kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
    uint64_t s = 0x9E3779B97F4A7C15u; /* random prompt tokens, as llama-bench's */
    for (int i = 0; !rc && i < cap; i++) {
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        ids[i] = (int32_t)(s % (uint64_t)V);
    }
    for (int k = 0; k < 2 && !rc; k++) {
        int n = k ? o->n_gen : o->n_prompt;
        if (n <= 0)
            continue;
        KilnBenchTest *t = &b->out->test[b->out->ntests++];
        snprintf(t->name, sizeof t->name, "%s%d", k ? "tg" : "pp", n);
        t->n_prompt = k ? 0 : n, t->n_gen = k ? n : 0;
        KilnKVCache kv = {0};
        rc = test_alloc(t, o->repeat, d);
        if (!rc && (rc = test_kv(b, t, &kv, d)))
            break;
        char stage[64];
        snprintf(stage, sizeof stage, "%s (warm-up + %d)", t->name, o->repeat);
        kiln_progress_stage(o->progress, stage, o->repeat + 1, "runs");
        for (int r = -1; !rc && r < o->repeat; r++) { /* r = -1: the warm-up */
            double ns;
            rc = decoder_run(b, &kv, t, ids, logits, &ns, d);
            if (!rc && r >= 0)
                t->samples_ns[r] = ns, t->samples_ts[r] = 1e9 * n / ns;
            kiln_progress_step(o->progress, r + 2, NULL);
        }
        kiln_kv_free(&kv);
        if (!rc) {
            kiln_progress_end(o->progress);
            test_stats(t);
        }
    }
    free(ids), free(logits);
    return rc;
}

/* An encoder's prompt-processing test: one batch of whole sentences (the calibration lines,
 * again from the first when they run out) of at least n_prompt tokens. */
static int encoder_tests(Bench *b, KilnDiag *d)
{
    const KilnBenchModelOpts *o = b->o;
    snprintf(b->out->note, sizeof b->out->note,
             "tg omitted: the model is an encoder (%s), which generates no tokens", b->out->net);
    if (o->n_prompt <= 0)
        return 0;
    int D = kiln_bert_dim(b->model), cap = 64, n = 0;
    int64_t ntok = 0;
    const char **batch = malloc(sizeof *batch * (size_t)cap);
    float *emb = NULL;
    int rc = batch ? 0 : kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
    while (!rc && ntok < o->n_prompt) { /* each sentence's tokens, untimed */
        int64_t nt = 0;
        float e1[4096];
        const char *line = b->cal[n % b->ncal];
        rc = D <= 4096 ? kiln_bert_embed(b->model, b->rc.pool, &line, 1, e1, &nt, d)
                       : kiln_diag_set(d, KILN_EINPUT, "model dimension %d > 4096", D);
        if (!rc && n == cap) {
            const char **nb = realloc(batch, sizeof *batch * (size_t)(cap *= 2));
            rc = nb ? 0 : kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
            batch = nb ? nb : batch;
        }
        if (!rc)
            batch[n++] = line, ntok += nt;
    }
    if (!rc && !(emb = malloc(sizeof(float) * (size_t)n * D)))
        rc = kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
    KilnBenchTest *t = &b->out->test[b->out->ntests++];
    snprintf(t->name, sizeof t->name, "pp%d", o->n_prompt);
    t->n_prompt = (int)ntok;
    if (!rc)
        rc = test_alloc(t, o->repeat, d);
    kiln_progress_stage(o->progress, t->name, o->repeat + 1, "runs");
    for (int r = -1; !rc && r < o->repeat; r++) {
        double t0 = kiln_now_ms();
        rc = kiln_bert_embed(b->model, b->rc.pool, batch, n, emb, NULL, d);
        double ns = (kiln_now_ms() - t0) * 1e6;
        if (!rc && r >= 0)
            t->samples_ns[r] = ns, t->samples_ts[r] = 1e9 * (double)ntok / ns;
        kiln_progress_step(o->progress, r + 2, NULL);
    }
    if (!rc) {
        kiln_progress_end(o->progress);
        test_stats(t);
    }
    free(batch), free(emb);
    return rc;
}

/* ------------------------------------------------------------------ sizes */

/* An encoder's weights from its safetensors file (every tensor, as llama-bench counts). */
static void encoder_weights(Bench *b, int64_t *params, int64_t *f32_bytes)
{
    char p[4200];
    snprintf(p, sizeof p, "%s/model.safetensors", b->out->path);
    KilnModelFile *mf = NULL;
    KilnDiag d = {0};
    int64_t all = 0, lin = 0;
    for (int i = 0; i < b->nl; i++)
        lin += b->ls[i].N * b->ls[i].K + (b->ls[i].b ? b->ls[i].N : 0);
    if (!kiln_mf_open(p, &mf, &d)) {
        for (int i = 0; i < kiln_mf_ntensors(mf); i++) {
            all += kiln_mf_tensor(mf, i)->numel;
        }
        kiln_mf_close(mf);
    }
    *params = all > lin ? all : lin;
    *f32_bytes = (int64_t)sizeof(float) * (*params - lin);
}

static void sizes(Bench *b)
{
    int64_t f32b = 0;
    if (b->net->decoder)
        kiln_llama_weights(b->model, &b->out->n_params, &f32b);
    else
        encoder_weights(b, &b->out->n_params, &f32b);
    b->out->size_bytes = f32b;
    for (int i = 0; i < b->nl; i++)
        b->out->size_bytes += (int64_t)b->ls[i].wbytes;
}

int kiln_bench_model(const KilnBenchModelOpts *o, KilnBenchModelOut *out, KilnDiag *d)
{
    Bench *b = calloc(1, sizeof *b);
    if (!b)
        return kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
    *out = (KilnBenchModelOut){0};
    b->o = o, b->out = out;
    int rc = kiln_model_path(o->model, out->path, sizeof out->path, d);
    if (!rc)
        rc = kiln_runctx_open(&b->rc, o->recipe, o->target, o->threads, o->verbose, d);
    b->rc.progress = o->progress;
    if (!rc) {
        b->net = kiln_net_for(out->path);
        out->net = b->net->name, out->decoder = b->net->decoder;
        out->threads = kiln_pool_size(b->rc.pool);
        snprintf(out->recipe_name, sizeof out->recipe_name, "%s", kiln_recipe_name(b->rc.fr));
        snprintf(out->target, sizeof out->target, "%s", kiln_ctx_target(b->rc.ctx));
        rc = kiln_kv_spec_from_recipe(b->rc.fr, &b->kvs, d);
    }
    kiln_progress_stage(o->progress, "load model", 1, "");
    if (!rc && !(rc = b->net->load(out->path, &b->model, d)))
        kiln_progress_end(o->progress);
    int cap = o->n_prompt > o->n_gen ? o->n_prompt : o->n_gen;
    if (!rc && b->net->decoder && cap > kiln_llama_ctx_max(b->model)) /* before the long part */
        rc = kiln_diag_set(d, KILN_EINPUT, "%s: %d tokens do not fit the model's context of %d",
                           out->path, cap, kiln_llama_ctx_max(b->model));
    if (!rc) {
        b->ls = b->net->linears(b->model, &b->nl);
        rc = b->net->decoder ? prepare_decoder(b, d) : prepare_encoder(b, d);
    }
    if (!rc)
        rc = bind_layers(b, d);
    kiln_linears_capture_end(b->ls, b->nl);
    if (!rc) {
        sizes(b);
        rc = b->net->decoder ? decoder_tests(b, d) : encoder_tests(b, d);
    }
    kiln_kv_free(&b->ckv);
    if (b->model)
        b->net->free(b->model);
    for (int i = 0; i < b->ncal; i++)
        free(b->cal[i]);
    free(b->cal);
    kiln_runctx_close(&b->rc, rc ? d : NULL);
    free(b);
    return rc;
}

void kiln_bench_model_free(KilnBenchModelOut *out)
{
    for (int i = 0; i < 2; i++)
        free(out->test[i].samples_ns), free(out->test[i].samples_ts);
    *out = (KilnBenchModelOut){0};
}
