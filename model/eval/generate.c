/* model/eval/generate.c — `kiln generate`: a Llama decoder under a recipe (bound and
 * calibrated as kiln eval binds it) continues a prompt in the model's chat template,
 * prefilling the prompt into the recipe's KV cache and decoding one token a step, greedy
 * or sampled; the text streams to stdout, the speeds go to stderr. docs/generate.md. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "frontend/recipe.h"
#include "model/eval/generate.h"
#include "model/model.h"
#include "model/nets/net.h"
#include "model/tokenizers/tokenizer.h"
#include "runtime/progress.h"
#include "runtime/runtime.h"

size_t kiln_utf8_hold(KilnUtf8Hold *h, const char *s, size_t n, char *out)
{
    size_t len = (size_t)h->n;
    memcpy(out, h->buf, len);
    memcpy(out + len, s, n);
    len += n;
    size_t cut = len;
    for (size_t back = 1; back <= 4 && back <= len; back++) {
        unsigned char c = (unsigned char)out[len - back];
        if ((c & 0xC0) == 0x80)
            continue; /* a continuation byte: its lead is further back */
        size_t need = c >= 0xF0 && c <= 0xF7 ? 4 : c >= 0xE0 && c < 0xF0 ? 3
                      : c >= 0xC0 && c < 0xE0 ? 2 : 1;
        if (need > back)
            cut = len - back;
        break;
    }
    h->n = (int)(len - cut);
    memcpy(h->buf, out + cut, (size_t)h->n);
    return cut;
}

/* One kiln generate run. */
typedef struct Gen {
    const KilnGenerateOpts *o;
    char path[4096];
    KilnRunCtx rc;
    KilnKVSpec kvs;
    KilnLlama *m;
    const KilnTokenizer *tk;
    KilnLinear *ls;
    int nl, V;
    KilnKVCache ckv; /* the calibration run's cache: static KV scales */
    KilnChatKind chat;
    bool with_system;
    int32_t *ids; /* the prompt, then what was generated */
    int np, ngen;
    int32_t stop[2];
    int nstop;
    const char *why; /* "eos", "end of turn", "length" */
    double prefill_ms, decode_ms;
    int steps; /* decode forwards */
    char kernels[600];
} Gen;

/* The methods (gptq, awq, smoothquant) and the static activation and KV scales, on kiln
 * eval's calibration tokens and in kiln eval's order, then the layers bound to the
 * recipe: a recipe generates with the very layers kiln eval measures. */
static int calibrate_and_bind(Gen *g, KilnDiag *d)
{
    bool methods = kiln_quant_needed(g->ls, g->nl, g->rc.fr);
    bool kv_static = g->kvs.fmt >= KILN_KV_FP8_E4M3 && !g->kvs.dynamic;
    kiln_linears_capture_select(g->ls, g->nl, g->rc.fr); /* static scales, outlier columns */
    if (!methods && !kv_static && !kiln_linears_capturing(g->ls, g->nl))
        return kiln_linears_bind_consuming(g->ls, g->nl, &g->rc, d); /* the big layer first */
    int32_t *ids = malloc(sizeof(int32_t) * KILN_METHOD_TOKENS);
    if (!ids)
        return kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
    KilnRunCtx f32;
    kiln_runctx_open_f32(&g->rc, &f32);
    kiln_progress_stage(g->o->progress, "calibration (methods, static scales)", 1, "");
    double t0 = kiln_now_ms();
    int n = kiln_calib_tokens(g->tk, NULL, ids, KILN_METHOD_TOKENS, d);
    int rc = n < 0 ? KILN_EINPUT : kiln_linears_bind(g->ls, g->nl, f32.recipe ? &f32 : NULL, d);
    if (!rc)
        rc = kiln_llama_quant_prepare(g->m, &g->rc, ids, n, g->o->verbose, d);
    int nc = n < KILN_STATIC_TOKENS ? n : KILN_STATIC_TOKENS;
    if (!rc)
        rc = kiln_llama_kv_init(g->m, &g->ckv, &g->kvs, nc > 0 ? nc : 1, d);
    if (!rc) /* rows only for the layers that calibrate from them, freed as each binds */
        kiln_linears_capture_select(g->ls, g->nl, g->rc.fr);
    if (!rc && (kv_static || kiln_linears_capturing(g->ls, g->nl)))
        rc = kiln_llama_capture_static(g->m, g->rc.pool, &g->ckv, ids, nc,
                                       &(KilnCaptureSink){kiln_linears_bind_sink, &g->rc}, d);
    if (!rc)
        rc = kiln_linears_bind_consuming(g->ls, g->nl, &g->rc, d);
    kiln_linears_capture_end(g->ls, g->nl);
    kiln_runctx_close_f32(&f32);
    free(ids);
    if (!rc)
        kiln_progress_end(g->o->progress);
    if (!rc && g->o->verbose)
        fprintf(stderr, "kiln generate: calibrated on %d tokens in %.1f s\n", n,
                (kiln_now_ms() - t0) / 1e3);
    return rc;
}

/* The id of a special token's text, or -1 (the text is not one token of the vocabulary). */
static int32_t token_id(const KilnTokenizer *tk, const char *text)
{
    int32_t id[2];
    KilnDiag ignore = {0};
    int n = text ? kiln_tok_encode(tk, text, 0, id, 2, NULL, &ignore) : 0;
    const char *s = n == 1 ? kiln_tok_token(tk, id[0]) : NULL;
    return s && !strcmp(s, text) ? id[0] : -1;
}

/* The prompt as the model sees it: the chat template's user turn and generation prompt
 * (or the raw text with no_chat), tokenized and checked against the context. */
static int build_prompt(Gen *g, KilnDiag *d)
{
    const KilnGenerateOpts *o = g->o;
    const char *tmpl = kiln_llama_chat_template(g->m);
    g->chat = kiln_chat_detect(tmpl);
    int32_t eos = kiln_tok_special(g->tk, "eos"), bos = kiln_tok_special(g->tk, "bos");
    if (eos >= 0)
        g->stop[g->nstop++] = eos;
    int32_t eot = token_id(g->tk, kiln_chat_end_of_turn(g->chat, tmpl));
    if (eot >= 0 && eot != eos)
        g->stop[g->nstop++] = eot;
    char *text = NULL;
    if (o->no_chat) {
        text = strdup(o->prompt);
    } else if (!tmpl) {
        return kiln_diag_set(d, KILN_EINPUT, "%s has no chat template (GGUF "
                             "tokenizer.chat_template, chat_template.jinja or tokenizer_config.json "
                             "chat_template): pass --no-chat to send the prompt as it is", g->path);
    } else if (g->chat == KILN_CHAT_UNKNOWN) {
        return kiln_diag_set(d, KILN_EINPUT, "%s: chat template not recognised (\"%.80s%s\"): "
                             "kiln knows chatml, llama3, llama2/mistral [INST], zephyr, gemma and "
                             "phi3 templates; pass --no-chat to send the prompt as it is", g->path,
                             tmpl, strlen(tmpl) > 80 ? "..." : "");
    } else {
        text = kiln_chat_format(g->chat, tmpl, o->prompt, kiln_tok_token(g->tk, bos),
                                kiln_tok_token(g->tk, eos), &g->with_system);
    }
    int ctx = kiln_llama_ctx_max(g->m), need = 0;
    g->ids = text ? malloc(sizeof(int32_t) * (size_t)ctx) : NULL;
    int rc = g->ids ? 0 : kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
    if (!rc && (g->np = kiln_tok_encode(g->tk, text, 0, g->ids, ctx, &need, d)) < 0)
        rc = KILN_EINPUT;
    free(text);
    if (!rc && need > ctx - 1)
        rc = kiln_diag_set(d, KILN_EINPUT, "the prompt is %d tokens%s; the model's context is %d "
                           "tokens, which leaves no room to generate", need,
                           o->no_chat ? "" : " in its chat template", ctx);
    else if (!rc && g->np == 0)
        rc = kiln_diag_set(d, KILN_EINPUT, "the prompt gives no tokens");
    else if (!rc && o->n > ctx - g->np)
        rc = kiln_diag_set(d, KILN_EINPUT, "-n %d: the prompt's %d tokens leave %d of the model's "
                           "%d-token context; -n must be from 1 to %d", o->n, g->np,
                           ctx - g->np, ctx, ctx - g->np);
    return rc;
}

static bool is_stop(const Gen *g, int32_t id)
{
    for (int i = 0; i < g->nstop; i++)
        if (g->stop[i] == id)
            return true;
    return false;
}

/* One generated token on stdout, cut between whole characters. */
static void stream(const Gen *g, KilnUtf8Hold *h, int32_t id)
{
    char *s = kiln_tok_decode(g->tk, &id, 1);
    size_t n = s ? strlen(s) : 0;
    char *out = malloc(n + 8);
    if (out) {
        fwrite(out, 1, kiln_utf8_hold(h, s ? s : "", n, out), stdout);
        fflush(stdout);
    }
    free(out), free(s);
}

/* Prefill the prompt, then decode a token a step until a stop token or o->n tokens. */
static int run(Gen *g, KilnDiag *d)
{
    const KilnGenerateOpts *o = g->o;
    KilnKVCache kv;
    int rc = kiln_llama_kv_init(g->m, &kv, &g->kvs, g->np + o->n, d);
    if (rc)
        return rc;
    if (g->ckv.ks && g->kvs.fmt >= KILN_KV_FP8_E4M3 && !g->kvs.dynamic) { /* calibrated scales */
        memcpy(kv.ks, g->ckv.ks, sizeof(float) * (size_t)kv.nlayers * kv.nscale);
        memcpy(kv.vs, g->ckv.vs, sizeof(float) * (size_t)kv.nlayers * kv.nscale);
    }
    KilnSampler s;
    float *logits = malloc(sizeof(float) * (size_t)g->V);
    if (!logits || kiln_sampler_init(&s, g->V, o->temp, o->top_p, o->seed)) {
        free(logits);
        kiln_kv_free(&kv);
        return kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
    }
    KilnUtf8Hold hold = {0};
    double t0 = kiln_now_ms();
    rc = kiln_llama_forward(g->m, g->rc.pool, &kv, g->ids, g->np, 0, 1, logits, d);
    g->prefill_ms = kiln_now_ms() - t0;
    g->why = "length";
    while (!rc && g->ngen < o->n) {
        int32_t id = kiln_sample(&s, logits);
        if (id < 0) {
            rc = kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
            break;
        }
        if (is_stop(g, id)) {
            g->why = id == kiln_tok_special(g->tk, "eos") ? "eos" : "end of turn";
            break;
        }
        g->ids[g->np + g->ngen++] = id;
        if (!o->json)
            stream(g, &hold, id);
        if (g->ngen == o->n)
            break;
        t0 = kiln_now_ms();
        rc = kiln_llama_forward(g->m, g->rc.pool, &kv, &id, 1, g->np + g->ngen - 1, 1, logits, d);
        g->decode_ms += kiln_now_ms() - t0;
        g->steps++;
    }
    if (!o->json) {
        fwrite(hold.buf, 1, (size_t)hold.n, stdout); /* an unfinished character, as it is */
        fputc('\n', stdout);
        fflush(stdout);
    }
    kiln_sampler_free(&s);
    free(logits);
    kiln_kv_free(&kv);
    return rc;
}

static double per_s(int n, double ms) { return ms > 0 ? 1e3 * n / ms : 0; }

static void print_stats(const Gen *g)
{
    const KilnGenerateOpts *o = g->o;
    char kvn[48];
    fprintf(stderr, "kiln generate: prompt %d tokens, prefill %.3f s (%.1f tokens/s); generated %d "
            "tokens, decode %.3f s (%.1f tokens/s over %d steps); stopped at %s\n", g->np,
            g->prefill_ms / 1e3, per_s(g->np, g->prefill_ms), g->ngen, g->decode_ms / 1e3,
            per_s(g->steps, g->decode_ms), g->steps, g->why);
    int nt = kiln_pool_size(g->rc.pool);
    fprintf(stderr, "kiln generate: recipe %s (KV %s), target %s, %d thread%s, %s; kernels: %s\n",
            kiln_recipe_name(g->rc.fr), kiln_kv_spec_name(&g->kvs, kvn, sizeof kvn),
            kiln_ctx_target(g->rc.ctx), nt, nt == 1 ? "" : "s",
            o->temp > 0 && o->top_p > 0 ? "sampled" : "greedy", g->kernels);
}

static int print_json(const Gen *g, KilnDiag *d)
{
    const KilnGenerateOpts *o = g->o;
    char kvn[48];
    char *text = kiln_tok_decode(g->tk, g->ids + g->np, g->ngen);
    KilnJsonWriter w;
    kiln_jw_init(&w, stdout);
    kiln_jw_begin_object(&w);
    kiln_jw_kv_str(&w, "model", g->path);
    kiln_jw_kv_str(&w, "recipe", o->recipe);
    kiln_jw_kv_str(&w, "target", kiln_ctx_target(g->rc.ctx));
    kiln_jw_kv_str(&w, "kv_cache", kiln_kv_spec_name(&g->kvs, kvn, sizeof kvn));
    kiln_jw_kv_str(&w, "kernels", g->kernels);
    kiln_jw_kv_int(&w, "threads", kiln_pool_size(g->rc.pool));
    kiln_jw_kv_str(&w, "chat_template", o->no_chat ? "none (--no-chat)" : kiln_chat_name(g->chat));
    kiln_jw_kv_bool(&w, "default_system_turn", g->with_system);
    kiln_jw_key(&w, "temp"), kiln_jw_double(&w, round(o->temp * 1e6) / 1e6);
    /* 0.95, not the float's 0.949999988 */
    kiln_jw_key(&w, "top_p"), kiln_jw_double(&w, round(o->top_p * 1e6) / 1e6);
    kiln_jw_key(&w, "seed"), kiln_jw_int(&w, (int64_t)o->seed);
    kiln_jw_kv_int(&w, "prompt_tokens", g->np);
    kiln_jw_key(&w, "prefill_s"), kiln_jw_double(&w, g->prefill_ms / 1e3);
    kiln_jw_key(&w, "prefill_tokens_per_s"), kiln_jw_double(&w, per_s(g->np, g->prefill_ms));
    kiln_jw_kv_int(&w, "generated_tokens", g->ngen);
    kiln_jw_kv_int(&w, "decode_steps", g->steps);
    kiln_jw_key(&w, "decode_s"), kiln_jw_double(&w, g->decode_ms / 1e3);
    kiln_jw_key(&w, "decode_tokens_per_s"), kiln_jw_double(&w, per_s(g->steps, g->decode_ms));
    kiln_jw_kv_str(&w, "stop", g->why);
    kiln_jw_key(&w, "prompt_ids");
    kiln_jw_begin_array(&w);
    for (int i = 0; i < g->np; i++)
        kiln_jw_int(&w, g->ids[i]);
    kiln_jw_end_array(&w);
    kiln_jw_key(&w, "ids");
    kiln_jw_begin_array(&w);
    for (int i = 0; i < g->ngen; i++)
        kiln_jw_int(&w, g->ids[g->np + i]);
    kiln_jw_end_array(&w);
    kiln_jw_kv_str(&w, "text", text ? text : "");
    kiln_jw_end_object(&w);
    fputc('\n', stdout);
    free(text);
    return kiln_jw_finish(&w, d);
}

/* The model, checked to be a decoder before it loads, and the recipe bound to it. */
static int open_model(Gen *g, KilnDiag *d)
{
    const KilnGenerateOpts *o = g->o;
    int rc = kiln_model_path(o->model ? o->model : "smollm2", g->path, sizeof g->path, d);
    const KilnNetOps *net = rc ? NULL : kiln_net_for(g->path);
    if (net && !net->decoder)
        return kiln_diag_set(d, KILN_EINPUT, "%s is a %s encoder: it has no next-token head, so "
                             "it cannot generate text; pass a decoder (--model smollm2, a .gguf "
                             "file or a Llama Hugging Face directory)", g->path, net->name);
    if (!rc)
        rc = kiln_runctx_open(&g->rc, o->recipe, o->target, o->threads, o->verbose, d);
    g->rc.progress = o->progress;
    if (!rc)
        rc = kiln_kv_spec_from_recipe(g->rc.fr, &g->kvs, d);
    kiln_progress_stage(o->progress, "load model", 1, "");
    if (!rc)
        rc = kiln_llama_load(g->path, &g->m, d);
    if (!rc)
        kiln_progress_end(o->progress);
    if (!rc && !(g->tk = kiln_llama_tokenizer(g->m, d)))
        rc = KILN_EINPUT;
    if (!rc) {
        g->ls = kiln_llama_linears(g->m, &g->nl);
        g->V = kiln_llama_vocab(g->m);
    }
    return rc;
}

int kiln_generate(const KilnGenerateOpts *o, KilnDiag *d)
{
    if (!o->prompt || !*o->prompt)
        return kiln_diag_set(d, KILN_EINPUT, "kiln generate: --prompt is %s: give the text to "
                             "continue", o->prompt ? "empty" : "missing");
    if (o->n < 1)
        return kiln_diag_set(d, KILN_EINPUT, "kiln generate: -n %d: must be at least 1", o->n);
    Gen *g = calloc(1, sizeof *g);
    if (!g)
        return kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
    g->o = o;
    int rc = open_model(g, d);
    if (!rc)
        rc = build_prompt(g, d);
    if (!rc)
        rc = calibrate_and_bind(g, d);
    if (!rc) {
        kiln_kernels_summary(g->ls, g->nl, g->kernels, sizeof g->kernels);
        kiln_progress_clear(o->progress);
    }
    if (!rc && !o->json)
        fprintf(stderr, "kiln generate: %s, chat template %s%s\n", g->path,
                o->no_chat ? "none (--no-chat: the prompt as it is)" : kiln_chat_name(g->chat),
                g->with_system ? " (the model's own, with its default system turn)"
                : o->no_chat   ? ""
                               : " (the model's own)");
    if (!rc)
        rc = run(g, d);
    if (!rc && o->json)
        rc = print_json(g, d);
    else if (!rc)
        print_stats(g);
    kiln_kv_free(&g->ckv);
    free(g->ids);
    kiln_llama_free(g->m);
    kiln_runctx_close(&g->rc, rc ? d : NULL);
    free(g);
    return rc;
}
