/* model/eval/eval.c — `kiln eval`: runs a real model in f32 and under a recipe and prints one
 * table: perplexity (decoder, sliding window) or mean cosine similarity of sentence
 * embeddings vs f32 (encoder), weight bytes, speed, KV cache bytes and the kernels used;
 * --per-layer adds each linear layer's SQNR vs f32 on the same input. Methodology:
 * docs/models.md. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "api/plan.h"
#include "frontend/recipe.h"
#include "model/eval/eval_out.h"
#include "model/eval/metrics.h"
#include "model/eval/perplexity.h"
#include "model/model.h"
#include "model/nets/net.h"
#include "model/tokenizers/tokenizer.h"
#include "runtime/progress.h"
#include "runtime/report.h"
#include "runtime/runtime.h"

/* Texts (King James Bible: Debian package bible-kjv, whose `bible` program reads bible-kjv-text): calibration and evaluation
 * come from different books so static scales never see the evaluation text. */
#define CALIB_RANGE "Gen1:1-3:24"
#define EVAL_RANGE "John1:1-21:25"
#define METHOD_TOKENS KILN_METHOD_TOKENS
#define METHOD_SENTENCES KILN_METHOD_SENTENCES
#define TEXT_LIMIT (64u << 20) /* bytes of --text (docs/hardening.md) */

int kiln_model_path(const char *which, char *buf, size_t n, KilnDiag *d)
{
    const char *env = getenv("KILN_MODELS_DIR"), *home = getenv("HOME");
    char dir[2048];
    if (env && *env)
        snprintf(dir, sizeof dir, "%s", env);
    else
        snprintf(dir, sizeof dir, "%s/.cache/kiln/models", home ? home : ".");
    if (!strcmp(which, "minilm"))
        snprintf(buf, n, "%s/minilm", dir);
    else if (!strcmp(which, "smollm2"))
        snprintf(buf, n, "%s/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", dir);
    else
        snprintf(buf, n, "%s", which);
    struct stat st;
    if (stat(buf, &st))
        return kiln_diag_set(d, KILN_EINPUT,
                             "model '%s' not found at %s: run scripts/fetch-models.sh (or pass "
                             "--model PATH)",
                             which, buf);
    return 0;
}

/* ------------------------------------------------------------------ texts */

typedef struct Lines {
    char **v;
    int n;
} Lines;

static void lines_free(Lines *l)
{
    for (int i = 0; i < l->n; i++)
        free(l->v[i]);
    free(l->v);
    l->v = NULL, l->n = 0;
}

static int lines_add(Lines *l, const char *s, size_t len)
{
    while (len && (s[len - 1] == '\n' || s[len - 1] == '\r' || s[len - 1] == ' '))
        len--;
    if (!len)
        return 0;
    char **nv = realloc(l->v, sizeof *nv * (size_t)(l->n + 1));
    if (!nv)
        return -1;
    l->v = nv;
    if (!(l->v[l->n] = strndup(s, len)))
        return -1;
    l->n++;
    return 0;
}

/* One verse per line from the `bible` program, the "Book1:1 " reference dropped. */
static int bible_lines(const char *range, Lines *out, KilnDiag *d)
{
    char cmd[256];
    snprintf(cmd, sizeof cmd, "bible -f %s 2>/dev/null", range);
    FILE *p = popen(cmd, "r");
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    while (p && (len = getline(&line, &cap, p)) > 0) {
        const char *sp = strchr(line, ' ');
        if (sp && lines_add(out, sp + 1, (size_t)(len - (sp + 1 - line)))) {
            free(line);
            pclose(p);
            return kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
        }
    }
    free(line);
    if (p)
        pclose(p);
    if (out->n < 10) {
        lines_free(out);
        return kiln_diag_set(d, KILN_EINPUT,
                             "no evaluation text: install the Debian package bible-kjv (the `bible` program) or pass --text FILE");
    }
    return 0;
}

static int file_lines(const char *path, Lines *out, KilnDiag *d)
{
    FILE *f = kiln_rt_fopen_regular(path, "--text", TEXT_LIMIT, d); /* no FIFO, no device */
    if (!f)
        return KILN_EINPUT;
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    int rc = 0;
    while (!rc && (len = getline(&line, &cap, f)) > 0)
        if (lines_add(out, line, (size_t)len))
            rc = kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
    free(line);
    fclose(f);
    if (!rc && out->n < 2)
        rc = kiln_diag_set(d, KILN_EINPUT, "--text %s: needs at least 2 non-empty lines", path);
    return rc;
}

/* Calibration and evaluation lines. --text FILE: calibration is the Bible's Genesis when
 * the package is there, else the first tenth of FILE (then evaluated on the rest). */
static int load_texts(const KilnEvalOpts *o, Lines *cal, Lines *ev, char *desc, size_t n,
                      KilnDiag *d)
{
    KilnDiag ignore = {0};
    if (!o->text) {
        int rc = bible_lines(EVAL_RANGE, ev, d);
        if (!rc)
            rc = bible_lines(CALIB_RANGE, cal, d);
        snprintf(desc, n, "eval: KJV Bible %s; calibration: %s (bible-kjv)", EVAL_RANGE,
                 CALIB_RANGE);
        return rc;
    }
    int rc = file_lines(o->text, ev, d);
    if (rc)
        return rc;
    if (!bible_lines(CALIB_RANGE, cal, &ignore)) {
        snprintf(desc, n, "eval: %s; calibration: KJV %s", o->text, CALIB_RANGE);
        return 0;
    }
    int nc = ev->n / 10 > 0 ? ev->n / 10 : 1;
    for (int i = 0; i < nc; i++)
        if (lines_add(cal, ev->v[i], strlen(ev->v[i])))
            return kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
    for (int i = 0; i < nc; i++)
        free(ev->v[i]);
    memmove(ev->v, ev->v + nc, sizeof *ev->v * (size_t)(ev->n - nc));
    ev->n -= nc;
    snprintf(desc, n, "eval: %s after its first %d lines; calibration: those lines", o->text, nc);
    return 0;
}

static char *join(const Lines *l, int from, int to)
{
    size_t n = 1;
    for (int i = from; i < to; i++)
        n += strlen(l->v[i]) + 1;
    char *s = malloc(n), *p = s;
    if (!s)
        return NULL;
    for (int i = from; i < to; i++)
        p += sprintf(p, "%s%s", l->v[i], i + 1 < to ? "\n" : "");
    *p = 0;
    return s;
}

/* ------------------------------------------------------------------ rows */

typedef KilnEvalRow Row; /* model/eval/eval_out.h */

static void summarise_kernels(const KilnLinear *ls, int n, char *out, size_t cap)
{
    const char *names[32];
    int counts[32], nn = 0;
    for (int i = 0; i < n; i++) {
        int j = 0;
        while (j < nn && strcmp(names[j], ls[i].kernel))
            j++;
        if (j == nn && nn < 32)
            names[nn] = ls[i].kernel, counts[nn++] = 0;
        if (j < nn)
            counts[j]++;
    }
    size_t p = 0;
    out[0] = 0;
    for (int j = 0; j < nn && p < cap; j++)
        p += (size_t)snprintf(out + p, cap - p, "%s%s x%d", j ? ", " : "", names[j], counts[j]);
}

void kiln_kernels_summary(const KilnLinear *ls, int n, char *out, size_t cap)
{
    summarise_kernels(ls, n, out, cap);
}

static double weight_bytes(const KilnLinear *ls, int n)
{
    double b = 0;
    for (int i = 0; i < n; i++)
        b += (double)ls[i].wbytes;
    return b;
}

/* ------------------------------------------------------------------ decoder */

typedef KilnPplCfg DecCfg; /* model/eval/perplexity.h */

/* ------------------------------------------------------------------ encoder */

#define ENC_BATCH 16

static int encoder_embed(KilnBert *m, KilnPool *pool, const Lines *s, float *emb, double *ms,
                         KilnProgress *prog, const char *what, KilnDiag *d)
{
    int D = kiln_bert_dim(m);
    char stage[160];
    snprintf(stage, sizeof stage, "embed %s", what);
    kiln_progress_stage(prog, stage, s->n, "sentences");
    double t0 = kiln_now_ms();
    for (int i = 0; i < s->n; i += ENC_BATCH) {
        int nb = s->n - i < ENC_BATCH ? s->n - i : ENC_BATCH;
        int rc = kiln_bert_embed(m, pool, (const char *const *)s->v + i, nb,
                                 emb + (size_t)i * D, NULL, d);
        if (rc)
            return rc;
        kiln_progress_step(prog, i + nb, NULL);
    }
    *ms = kiln_now_ms() - t0;
    kiln_progress_end(prog);
    return 0;
}

/* ------------------------------------------------------------------ output */

static int cmp_sqnr(const void *a, const void *b)
{
    const KilnLinear *x = *(const KilnLinear *const *)a, *y = *(const KilnLinear *const *)b;
    double sx = x->noise > 0 ? x->sig / x->noise : INFINITY;
    double sy = y->noise > 0 ? y->sig / y->noise : INFINITY;
    return sx < sy ? -1 : sx > sy;
}

static int print_json(const char *model, const char *recipe, const char *texts, bool dec,
                      const KilnEvalOpts *o, const DecCfg *dc, int nsent, const Row *rows,
                      int nrows, KilnLinear **order, int nl, KilnDiag *d)
{
    KilnJsonWriter w;
    kiln_jw_init(&w, stdout);
    kiln_jw_begin_object(&w);
    kiln_jw_key(&w, "model"), kiln_jw_string(&w, model);
    kiln_jw_key(&w, "recipe"), kiln_jw_string(&w, recipe);
    kiln_jw_key(&w, "texts"), kiln_jw_string(&w, texts);
    kiln_jw_key(&w, "metric"), kiln_jw_string(&w, dec ? "perplexity" : "cosine_vs_f32");
    if (dec) {
        kiln_jw_key(&w, "tokens"), kiln_jw_int(&w, dc->ntok);
        kiln_jw_key(&w, "window"), kiln_jw_int(&w, dc->window);
        kiln_jw_key(&w, "stride"), kiln_jw_int(&w, dc->stride);
    } else {
        kiln_jw_key(&w, "sentences"), kiln_jw_int(&w, nsent);
    }
    kiln_jw_key(&w, "rows");
    kiln_jw_begin_array(&w);
    for (int i = 0; i < nrows; i++) {
        const Row *r = &rows[i];
        kiln_jw_begin_object(&w);
        kiln_jw_key(&w, "name"), kiln_jw_string(&w, r->name);
        if (dec) {
            kiln_jw_key(&w, "ppl"), kiln_jw_double(&w, r->metric);
            kiln_jw_key(&w, "ppl_rel_increase"), kiln_jw_double(&w, r->metric / rows[0].metric - 1);
            kiln_jw_key(&w, "kv_cache"), kiln_jw_string(&w, r->kv);
            kiln_jw_key(&w, "kv_bytes_per_token"), kiln_jw_double(&w, r->kv_bytes);
            kiln_jw_key(&w, "ms_per_token"), kiln_jw_double(&w, r->ms_per_unit);
            kiln_jw_key(&w, "tokens_per_s"), kiln_jw_double(&w, r->units_per_s);
        } else {
            kiln_jw_key(&w, "cos_mean"), kiln_jw_double(&w, r->metric);
            kiln_jw_key(&w, "cos_min"), kiln_jw_double(&w, r->metric_min);
            kiln_jw_key(&w, "ms_per_sentence"), kiln_jw_double(&w, r->ms_per_unit);
            kiln_jw_key(&w, "sentences_per_s"), kiln_jw_double(&w, r->units_per_s);
        }
        kiln_jw_key(&w, "weight_bytes"), kiln_jw_double(&w, r->wbytes);
        kiln_jw_key(&w, "kernels"), kiln_jw_string(&w, r->kernels);
        kiln_jw_end_object(&w);
    }
    kiln_jw_end_array(&w);
    if (order) {
        kiln_jw_key(&w, "per_layer");
        kiln_jw_begin_array(&w);
        for (int i = 0; i < nl; i++) {
            kiln_jw_begin_object(&w);
            kiln_jw_key(&w, "layer"), kiln_jw_string(&w, order[i]->name);
            kiln_jw_key(&w, "source"), kiln_jw_string(&w, order[i]->src);
            double s = kiln_eval_sqnr_db(order[i]);
            kiln_jw_key(&w, "sqnr_db");
            isfinite(s) ? kiln_jw_double(&w, s) : kiln_jw_string(&w, s > 0 ? "inf" : "-inf");
            kiln_jw_key(&w, "kernel"), kiln_jw_string(&w, order[i]->kernel);
            kiln_jw_key(&w, "weight_bytes"), kiln_jw_int(&w, (int64_t)order[i]->wbytes);
            kiln_jw_end_object(&w);
        }
        kiln_jw_end_array(&w);
    }
    (void)o;
    kiln_jw_end_object(&w);
    fputc('\n', stdout);
    return kiln_jw_finish(&w, d); /* a value JSON cannot hold: an error, not a cut document */
}

/* ------------------------------------------------------------------ driver */

static void track(KilnLinear *ls, int n, bool on)
{
    for (int i = 0; i < n; i++)
        ls[i].track = on, ls[i].sig = ls[i].noise = 0;
}

/* The f32 baseline every row is compared with: kiln's own f32 kernel for every layer
 * (what recipes/f32.lua says), built in, so a recipe anywhere gets the same baseline
 * (not the model's slower reference GEMM when no f32.lua sits beside it). */
static const char f32_recipe[] = "return recipe \"f32\" {\n"
                                 "  ignore = { \"*\" },\n"
                                 "  rule \"*\" { weights = int8 { per = \"channel\" } },\n"
                                 "}\n";

void kiln_runctx_open_f32(const KilnRunCtx *base, KilnRunCtx *f32)
{
    /* per call: no layer keeps an f32 kernel (and its prepacked f32 copy) between runs */
    *f32 = (KilnRunCtx){.ctx = base->ctx, .pool = base->pool, .progress = base->progress,
                        .per_call = true};
    KilnDiag d = {0};
    if (kiln_recipe_load_string(f32_recipe, sizeof f32_recipe - 1, "f32 (built in)", &f32->fr, &d))
        return;
    if (!(f32->recipe = kiln_recipe_borrow(f32->fr))) { /* parsed once, shared with the API */
        kiln_recipe_free(f32->fr);
        f32->fr = NULL;
    }
}

void kiln_runctx_close_f32(KilnRunCtx *f32)
{
    kiln_recipe_close(f32->recipe);
    kiln_recipe_free(f32->fr);
    *f32 = (KilnRunCtx){0};
}

static void recipe_label(const KilnRecipe *fr, const char *suffix, char *out, size_t n)
{
    snprintf(out, n, "%s%s", kiln_recipe_name(fr), suffix);
}

int kiln_runctx_open(KilnRunCtx *rc, const char *recipe, const char *target, int threads,
                     bool verbose, KilnDiag *d)
{
    kiln_options kopt = {.target = target, .verbose = verbose, .num_threads = threads};
    int r = kiln_recipe_load(recipe, &rc->fr, d);
    if (!r && kiln_ctx_create(&kopt, &rc->ctx))
        r = kiln_diag_set(d, KILN_EINPUT, "%s", kiln_error(NULL));
    if (!r && !(rc->recipe = kiln_recipe_borrow(rc->fr))) /* parsed once, shared with the API */
        r = kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
    if (!r && !(rc->pool = kiln_ctx_pool(rc->ctx)))
        r = kiln_pool_new(threads, &rc->own_pool, d), rc->pool = rc->own_pool;
    return r;
}

void kiln_runctx_close(KilnRunCtx *rc, KilnDiag *d)
{
    kiln_pool_free(rc->own_pool); /* the context's pool is the context's to free */
    kiln_recipe_close(rc->recipe);
    if (d && d->code && d->file) { /* d->file may point into the recipe freed next */
        char msg[1400];
        kiln_diag_format(d, msg, sizeof msg);
        KilnDiag nd = {0};
        kiln_diag_set(&nd, d->code, "%s", msg);
        *d = nd;
    }
    kiln_recipe_free(rc->fr);
    kiln_ctx_destroy(rc->ctx);
    *rc = (KilnRunCtx){0};
}

int kiln_calib_tokens(const KilnTokenizer *tk, const char *text, int32_t *ids, int max, KilnDiag *d)
{
    Lines cal = {0}, ev = {0};
    char desc[512];
    KilnEvalOpts o = {.text = text};
    int rc = load_texts(&o, &cal, &ev, desc, sizeof desc, d);
    char *txt = rc ? NULL : join(&cal, 0, cal.n);
    int n = rc ? -1 : !txt ? (kiln_diag_set(d, KILN_EINTERNAL, "out of memory"), -1)
                           : kiln_tok_encode(tk, txt, 0, ids, max, NULL, d);
    free(txt);
    lines_free(&cal);
    lines_free(&ev);
    return n;
}

int kiln_calib_text(const char *text, char ***lines, int *n, KilnDiag *d)
{
    Lines cal = {0}, ev = {0};
    char desc[512];
    KilnEvalOpts o = {.text = text};
    int rc = load_texts(&o, &cal, &ev, desc, sizeof desc, d);
    lines_free(&ev);
    if (rc) {
        lines_free(&cal);
        return rc;
    }
    *lines = cal.v;
    *n = cal.n;
    return 0;
}

/* One kiln eval run: its inputs, the model's layers and the rows it reports. */
typedef struct EvalRun {
    const KilnEvalOpts *o;
    char path[4096], texts[512], title[9000];
    bool isdir;
    Lines cal, ev;
    KilnRunCtx rc, f32;
    KilnKVSpec kvs, kv32;
    KilnLinear *ls;
    int nl, nrows, nsent;
    Row rows[3];
    DecCfg dc;
    float *e32, *eq;
} EvalRun;

/* --report: the Markdown report written to o->report. */
static int finish_report(const KilnEvalOpts *o, const KilnEvalOut *out, KilnDiag *d)
{
    FILE *f = fopen(o->report, "w");
    if (!f)
        return kiln_diag_set(d, KILN_EINPUT, "--report %s: cannot write: %s", o->report,
                             strerror(errno));
    kiln_eval_report(out, o->cmdline, o->report, f);
    int bad = ferror(f);
    if (fclose(f) || bad)
        return kiln_diag_set(d, KILN_EINPUT, "--report %s: cannot write: %s", o->report,
                             strerror(errno));
    fprintf(stderr, "kiln eval: report written to %s\n", o->report);
    return 0;
}

/* --per-layer: the layers by SQNR, worst first. */
static int rank_layers(KilnLinear *ls, int nl, KilnLinear ***out, KilnDiag *d)
{
    KilnLinear **order = malloc(sizeof *order * (size_t)(nl > 0 ? nl : 1));
    if (!order)
        return kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
    for (int i = 0; i < nl; i++)
        order[i] = &ls[i];
    qsort(order, (size_t)nl, sizeof *order, cmp_sqnr);
    *out = order;
    return 0;
}

/* One decoder row's perplexity, checked: finite and at least 1, or an error naming the
 * layer where a NaN or an infinity began. */
static int ppl_row(EvalRun *e, KilnLlama *llama, const KilnKVSpec *kvs, const KilnKVCache *calib,
                   Row *row, KilnDiag *d)
{
    kiln_eval_watch_reset(e->ls, e->nl);
    int rc = kiln_decoder_ppl(llama, e->rc.pool, kvs, calib, &e->dc, row, d);
    return rc ? rc : kiln_eval_check(row->name, "perplexity", "a perplexity is finite and at "
                                     "least 1", row->metric, 1, INFINITY, e->ls, e->nl, d);
}

/* The decoder's rows: perplexity in f32, then (after the methods and the static
 * calibration run) under the recipe, with f32 KV and with the recipe's KV format. */
static int eval_decoder(EvalRun *e, KilnLlama *llama, KilnDiag *d)
{
    const KilnEvalOpts *o = e->o;
    int rc = 0;
    snprintf(e->title, sizeof e->title,
             "kiln eval: %s = %s (Llama, %d linear layers; \"full precision\" = %s), recipe "
             "%s, target %s",
             e->path, e->isdir ? "a Hugging Face directory" : "SmolLM2-135M-Instruct", e->nl,
             e->isdir ? "its weights dequantized to f32" : "its Q4_1 GGUF dequantized to f32",
             o->recipe, kiln_ctx_target(e->rc.ctx));
    char *txt = join(&e->ev, 0, e->ev.n), *ctxt = join(&e->cal, 0, e->cal.n);
    int want = o->tokens > 0 ? o->tokens : 1024;
    e->dc.window = o->window > 0 ? o->window : 512;
    e->dc.stride = o->stride > 0 ? o->stride : e->dc.window / 2;
    if (e->dc.stride > e->dc.window)
        e->dc.stride = e->dc.window;
    e->dc.ids = malloc(sizeof(int32_t) * (size_t)(want + 1));
    int32_t *cids = malloc(sizeof(int32_t) * KILN_STATIC_TOKENS);
    /* methods (gptq, awq, smoothquant) calibrate on more of the text */
    int32_t *mids = malloc(sizeof(int32_t) * METHOD_TOKENS);
    int nm = 0;
    const KilnTokenizer *tk = kiln_llama_tokenizer(llama, d);
    int nc = 0;
    if (!txt || !ctxt || !e->dc.ids || !cids)
        rc = kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
    else if (!tk)
        rc = KILN_EINPUT;
    if (!rc && (e->dc.ntok = kiln_tok_encode(tk, txt, 0, e->dc.ids, want, NULL, d)) < 0)
        rc = KILN_EINPUT;
    if (!rc && (nc = kiln_tok_encode(tk, ctxt, 0, cids, KILN_STATIC_TOKENS, NULL, d)) < 0)
        rc = KILN_EINPUT;
    if (!rc && !mids)
        rc = kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
    if (!rc && (nm = kiln_tok_encode(tk, ctxt, 0, mids, METHOD_TOKENS, NULL, d)) < 0)
        rc = KILN_EINPUT;
    if (!rc && e->dc.ntok < 2)
        rc = kiln_diag_set(d, KILN_EINPUT, "evaluation text has fewer than 2 tokens");
    if (!rc && e->dc.window > e->dc.ntok)
        e->dc.window = e->dc.ntok;
    if (!rc && e->dc.stride > e->dc.window)
        e->dc.stride = e->dc.window;
    e->dc.head_rows = kiln_ppl_head_rows(&e->rc, &e->ls[e->nl - 1], e->dc.window);
    free(txt), free(ctxt);
    /* f32 row; after it the methods, then the static calibration run */
    if (!rc) {
        snprintf(e->rows[0].name, sizeof e->rows[0].name, "f32");
        rc = kiln_linears_bind(e->ls, e->nl, e->f32.recipe ? &e->f32 : NULL, d);
    }
    if (!rc)
        rc = ppl_row(e, llama, &e->kv32, NULL, &e->rows[0], d);
    KilnKVCache ckv = {0};
    if (!rc) {
        e->rows[0].wbytes = weight_bytes(e->ls, e->nl);
        summarise_kernels(e->ls, e->nl, e->rows[0].kernels, sizeof e->rows[0].kernels);
        double t0 = kiln_now_ms();
        rc = kiln_llama_quant_prepare(llama, &e->rc, mids, nm, o->verbose, d);
        if (!rc && o->verbose && kiln_quant_needed(e->ls, e->nl, e->rc.fr))
            fprintf(stderr, "kiln eval: methods applied on %d calibration tokens in %.1f s\n", nm,
                    (kiln_now_ms() - t0) / 1e3);
    }
    free(mids);
    if (!rc)
        rc = kiln_llama_kv_init(llama, &ckv, &e->kvs, nc > 0 ? nc : 1, d);
    if (!rc) /* rows only for the layers that calibrate from them */
        kiln_linears_capture_select(e->ls, e->nl, e->rc.fr);
    bool kv_static = e->kvs.fmt >= KILN_KV_FP8_E4M3 && !e->kvs.dynamic;
    /* static activation scales and KV ranges (kiln quantize: the same) */
    if (!rc && (kv_static || kiln_linears_capturing(e->ls, e->nl)))
        rc = kiln_llama_capture_static(llama, e->rc.pool, &ckv, cids, nc,
                                       &(KilnCaptureSink){kiln_linears_bind_sink, &e->rc}, d);
    if (!rc && o->verbose)
        fprintf(stderr, "kiln eval: binding %d layers to %s\n", e->nl, o->recipe);
    if (!rc)
        rc = kiln_linears_bind_consuming(e->ls, e->nl, &e->rc, d);
    kiln_linears_capture_end(e->ls, e->nl);
    free(cids);
    if (!rc && (o->per_layer || o->report))
        track(e->ls, e->nl, true);
    /* recipe row with f32 KV, then with the recipe's KV (static scales from ckv) */
    if (!rc) {
        recipe_label(e->rc.fr, e->kvs.fmt == KILN_KV_F32 ? "" : " (f32 KV)", e->rows[1].name,
                     sizeof e->rows[1].name);
        rc = ppl_row(e, llama, &e->kv32, NULL, &e->rows[1], d);
        e->rows[1].wbytes = weight_bytes(e->ls, e->nl);
        summarise_kernels(e->ls, e->nl, e->rows[1].kernels, sizeof e->rows[1].kernels);
        e->nrows = 2;
    }
    if (!rc && e->kvs.fmt != KILN_KV_F32) {
        for (int i = 0; i < e->nl; i++)
            e->ls[i].track = false; /* keep the f32-KV run's SQNR */
        char kvn[48];
        snprintf(e->rows[2].name, sizeof e->rows[2].name, "%s + KV %s", kiln_recipe_name(e->rc.fr),
                 kiln_kv_spec_name(&e->kvs, kvn, sizeof kvn));
        rc = ppl_row(e, llama, &e->kvs, &ckv, &e->rows[2], d);
        e->rows[2].wbytes = e->rows[1].wbytes;
        memcpy(e->rows[2].kernels, e->rows[1].kernels, sizeof e->rows[2].kernels);
        e->nrows = 3;
    }
    kiln_kv_free(&ckv);
    return rc;
}

/* The encoder's rows: sentence embeddings in f32, then under the recipe (after the
 * methods and the static calibration run), and their cosines. */
static int eval_encoder(EvalRun *e, KilnBert *bert, KilnDiag *d)
{
    const KilnEvalOpts *o = e->o;
    int rc = 0;
    int D = kiln_bert_dim(bert);
    int want = o->sentences > 0 ? o->sentences : 128;
    Lines evs = {e->ev.v, e->ev.n < want ? e->ev.n : want};
    e->nsent = evs.n;
    snprintf(e->title, sizeof e->title,
             "kiln eval: %s = all-MiniLM-L6-v2 (BERT encoder, %d linear layers, f32 "
             "safetensors), recipe %s, target %s, %d sentences",
             e->path, e->nl, o->recipe, kiln_ctx_target(e->rc.ctx), evs.n);
    e->e32 = malloc(sizeof(float) * (size_t)evs.n * D);
    e->eq = malloc(sizeof(float) * (size_t)evs.n * D);
    if (!e->e32 || !e->eq)
        rc = kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
    double ms = 0;
    if (!rc)
        rc = kiln_linears_bind(e->ls, e->nl, e->f32.recipe ? &e->f32 : NULL, d);
    snprintf(e->rows[0].name, sizeof e->rows[0].name, "f32");
    kiln_eval_watch_reset(e->ls, e->nl);
    if (!rc)
        rc = encoder_embed(bert, e->rc.pool, &evs, e->e32, &ms, o->progress, "f32", d);
    if (!rc) /* computed, not assumed: the reference's own cosines (1 unless it went wrong) */
        rc = kiln_eval_cosines("f32", e->e32, e->e32, evs.n, D, e->ls, e->nl,
                               &e->rows[0].metric, &e->rows[0].metric_min, d);
    if (!rc) {
        e->rows[0].ms_per_unit = ms / evs.n, e->rows[0].units_per_s = 1e3 * evs.n / ms;
        e->rows[0].wbytes = weight_bytes(e->ls, e->nl);
        summarise_kernels(e->ls, e->nl, e->rows[0].kernels, sizeof e->rows[0].kernels);
        Lines cm = {e->cal.v, e->cal.n < METHOD_SENTENCES ? e->cal.n : METHOD_SENTENCES};
        rc = kiln_bert_quant_prepare(bert, &e->rc, (const char *const *)cm.v, cm.n, o->verbose, d);
    }
    if (!rc) /* rows only for the layers that calibrate from them */
        kiln_linears_capture_select(e->ls, e->nl, e->rc.fr);
    if (!rc && kiln_linears_capturing(e->ls, e->nl)) /* static activation scales */
        rc = kiln_bert_capture_static(bert, e->rc.pool, (const char *const *)e->cal.v, e->cal.n,
                                      &(KilnCaptureSink){kiln_linears_bind_sink, &e->rc}, d);
    if (!rc)
        rc = kiln_linears_bind_consuming(e->ls, e->nl, &e->rc, d);
    kiln_linears_capture_end(e->ls, e->nl);
    if (!rc && (o->per_layer || o->report))
        track(e->ls, e->nl, true);
    Row *r = &e->rows[1];
    recipe_label(e->rc.fr, "", r->name, sizeof r->name);
    kiln_eval_watch_reset(e->ls, e->nl);
    if (!rc)
        rc = encoder_embed(bert, e->rc.pool, &evs, e->eq, &ms, o->progress,
                           kiln_recipe_name(e->rc.fr), d);
    if (!rc)
        rc = kiln_eval_cosines(r->name, e->e32, e->eq, evs.n, D, e->ls, e->nl, &r->metric,
                               &r->metric_min, d);
    if (!rc) {
        r->ms_per_unit = ms / evs.n, r->units_per_s = 1e3 * evs.n / ms;
        r->wbytes = weight_bytes(e->ls, e->nl);
        summarise_kernels(e->ls, e->nl, r->kernels, sizeof r->kernels);
        e->nrows = 2;
    }
    return rc;
}

int kiln_eval(const KilnEvalOpts *o, KilnDiag *d)
{
    EvalRun *e = calloc(1, sizeof *e);
    if (!e)
        return kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
    e->o = o;
    e->kv32 = (KilnKVSpec){KILN_KV_F32, false, true, 0};
    int rc = kiln_model_path(o->model ? o->model : "smollm2", e->path, sizeof e->path, d);
    if (!rc) {
        struct stat st;
        e->isdir = stat(e->path, &st) == 0 && S_ISDIR(st.st_mode);
        rc = load_texts(o, &e->cal, &e->ev, e->texts, sizeof e->texts, d);
    }
    bool report = false, report_new = false; /* asked before the long run: it fails first */
    int rerr = !rc && o->report ? kiln_report_probe(o->report, &report_new) : 0;
    if (rerr)
        rc = kiln_diag_set(d, KILN_EINPUT, "--report %s: cannot write: %s", o->report,
                           strerror(rerr));
    report = !rc && o->report;
    const KilnNetOps *net = rc ? NULL : kiln_net_for(e->path); /* the one BERT-or-Llama choice */
    void *model = NULL;
    if (!rc)
        rc = kiln_runctx_open(&e->rc, o->recipe, o->target, 0, o->verbose, d);
    e->rc.progress = e->dc.prog = o->progress;
    if (!rc)
        rc = kiln_kv_spec_from_recipe(e->rc.fr, &e->kvs, d);
    if (!rc)
        kiln_runctx_open_f32(&e->rc, &e->f32);
    if (!rc && o->verbose)
        fprintf(stderr, "kiln eval: loading %s\n", e->path);
    kiln_progress_stage(o->progress, "load model", 1, "");
    if (!rc)
        rc = net->load(e->path, &model, d);
    if (!rc)
        kiln_progress_end(o->progress);
    if (!rc)
        e->ls = net->linears(model, &e->nl);
    if (!rc)
        rc = net->decoder ? eval_decoder(e, model, d) : eval_encoder(e, model, d);
    KilnLinear **order = NULL;
    bool per_layer = o->per_layer || o->report;
    if (!rc && per_layer)
        rc = kiln_eval_check_sqnr(e->rows[1].name, e->ls, e->nl, d);
    if (!rc && per_layer)
        rc = rank_layers(e->ls, e->nl, &order, d);
    KilnEvalOut out = {e->title, e->texts, rc ? NULL : kiln_ctx_target(e->rc.ctx), e->path,
                       net && net->decoder, e->rows, e->nrows, e->ls, e->nl, order};
    if (!rc && o->json)
        rc = print_json(e->path, o->recipe, e->texts, net->decoder, o, &e->dc, e->nsent,
                        e->rows, e->nrows, o->per_layer ? order : NULL, e->nl, d);
    else if (!rc)
        kiln_eval_print_text(&(KilnEvalOut){out.title, out.texts, out.target, out.model, out.dec,
                                            out.rows, out.nrows, out.ls, out.nl,
                                            o->per_layer ? order : NULL},
                             stdout);
    if (!rc && report)
        rc = finish_report(o, &out, d);
    if (report && rc && report_new) /* no empty report left by a failed run */
        remove(o->report);
    free(order), free(e->dc.ids), free(e->e32), free(e->eq);
    if (net && model)
        net->free(model);
    kiln_runctx_close_f32(&e->f32);
    kiln_runctx_close(&e->rc, rc ? d : NULL);
    lines_free(&e->ev);
    lines_free(&e->cal);
    free(e);
    return rc;
}
