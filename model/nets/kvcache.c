/* model/nets/kvcache.c — the decoder's KV cache in the recipe's kv_cache format: f32, f16,
 * bf16, fp8 e4m3/e5m2 or int8 (symmetric), quantized on write and dequantized on read
 * inside attention. Scales: dynamic (default) = one per written token and per KV head
 * (per = "head") or per token (per = "tensor"); static (dynamic = false) = one per
 * layer and KV head / per layer, from the recipe's scale or calibrated as absmax on
 * the calibration text. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "frontend/recipe.h"
#include "ir/numerics.h"
#include "model/model.h"

int kiln_kv_spec_from_recipe(const KilnRecipe *r, KilnKVSpec *out, KilnDiag *d)
{
    *out = (KilnKVSpec){KILN_KV_F32, false, true, 0};
    if (!r)
        return 0;
    bool is_float;
    KilnDType dt;
    KilnQuantSpec q;
    if (!kiln_recipe_kv_cache(r, &is_float, &dt, &q))
        return 0;
    if (is_float) {
        out->fmt = dt == KILN_F16 ? KILN_KV_F16 : dt == KILN_BF16 ? KILN_KV_BF16 : KILN_KV_F32;
        return 0;
    }
    if (q.fmt != KILN_QF_INT8 && q.fmt != KILN_QF_FP8_E4M3 && q.fmt != KILN_QF_FP8_E5M2)
        return kiln_diag_set(d, KILN_EINPUT, "kv_cache format %s is not supported",
                             kiln_qformat_name(q.fmt));
    out->fmt = q.fmt == KILN_QF_INT8       ? KILN_KV_INT8
               : q.fmt == KILN_QF_FP8_E5M2 ? KILN_KV_FP8_E5M2
                                           : KILN_KV_FP8_E4M3;
    out->per_head = q.gran == KILN_GRAN_CHANNEL;
    out->dynamic = q.dynamic;
    out->scale = q.scale;
    return 0;
}

const char *kiln_kv_spec_name(const KilnKVSpec *s, char *buf, size_t n)
{
    static const char *const names[] = {"f32", "f16", "bf16", "fp8_e4m3", "fp8_e5m2", "int8"};
    if (s->fmt <= KILN_KV_BF16)
        snprintf(buf, n, "%s", names[s->fmt]);
    else
        snprintf(buf, n, "%s per-%s %s", names[s->fmt], s->per_head ? "head" : "tensor",
                 s->dynamic ? "dynamic" : "static");
    return buf;
}

static bool quantized(const KilnKVSpec *s) { return s->fmt >= KILN_KV_FP8_E4M3; }

static float fmt_max(KilnKVFormat f)
{
    return f == KILN_KV_INT8 ? 127.0f : f == KILN_KV_FP8_E4M3 ? KILN_E4M3_MAX : KILN_E5M2_MAX;
}

/* dlayers: the layers the K/V data (and per-token scales) hold, nlayers or 1 */
static int kv_init(KilnKVCache *c, const KilnKVSpec *s, int nlayers, int dlayers, int nkv, int hd,
                   int cap, KilnDiag *d)
{
    memset(c, 0, sizeof *c);
    c->spec = *s;
    c->nlayers = nlayers, c->dlayers = dlayers, c->nkv = nkv, c->hd = hd, c->cap = cap;
    c->esz = s->fmt == KILN_KV_F32 ? 4 : s->fmt <= KILN_KV_BF16 ? 2 : 1;
    c->nscale = s->per_head ? nkv : 1;
    size_t n = (size_t)dlayers * cap * nkv * hd;
    c->k = malloc(n * c->esz);
    c->v = malloc(n * c->esz);
    size_t ns = !quantized(s) ? 1
                : s->dynamic  ? (size_t)dlayers * c->nscale * (size_t)cap
                              : (size_t)nlayers * c->nscale;
    c->ks = calloc(ns, sizeof(float));
    c->vs = calloc(ns, sizeof(float));
    c->kmax = calloc((size_t)nlayers * c->nscale, sizeof(float));
    c->vmax = calloc((size_t)nlayers * c->nscale, sizeof(float));
    if (!c->k || !c->v || !c->ks || !c->vs || !c->kmax || !c->vmax) {
        kiln_kv_free(c);
        return kiln_diag_set(d, KILN_EINTERNAL, "out of memory for the KV cache");
    }
    if (quantized(s) && !s->dynamic)
        for (size_t i = 0; i < ns; i++)
            c->ks[i] = c->vs[i] = s->scale > 0 ? s->scale : 1.0f;
    return 0;
}

int kiln_kv_init(KilnKVCache *c, const KilnKVSpec *s, int nlayers, int nkv, int hd, int cap,
                 KilnDiag *d)
{
    return kv_init(c, s, nlayers, nlayers, nkv, hd, cap, d);
}

int kiln_kv_init_pass(KilnKVCache *c, const KilnKVSpec *s, int nlayers, int nkv, int hd, int cap,
                      KilnDiag *d)
{
    return kv_init(c, s, nlayers, 1, nkv, hd, cap, d);
}

/* Where layer's K/V data and per-token scales start, in rows of cap positions: every
 * layer shares slot 0 in a cache of one pass. */
static size_t slot(const KilnKVCache *c, int layer)
{
    return c->dlayers < c->nlayers ? 0 : (size_t)layer;
}

void kiln_kv_free(KilnKVCache *c)
{
    free(c->k);
    free(c->v);
    free(c->ks);
    free(c->vs);
    free(c->kmax);
    free(c->vmax);
    memset(c, 0, sizeof *c);
}

static void encode(const KilnKVCache *c, const float *x, int n, float scale, uint8_t *out)
{
    switch (c->spec.fmt) {
    case KILN_KV_F32:
        memcpy(out, x, sizeof(float) * (size_t)n);
        break;
    case KILN_KV_F16:
    case KILN_KV_BF16:
        for (int i = 0; i < n; i++) {
            uint16_t h = c->spec.fmt == KILN_KV_F16 ? kiln_f32_to_f16(x[i]) : kiln_f32_to_bf16(x[i]);
            memcpy(out + 2 * i, &h, 2);
        }
        break;
    case KILN_KV_FP8_E4M3:
        for (int i = 0; i < n; i++)
            out[i] = kiln_fp8_e4m3_encode(x[i] / scale);
        break;
    case KILN_KV_FP8_E5M2:
        for (int i = 0; i < n; i++)
            out[i] = kiln_fp8_e5m2_encode(x[i] / scale);
        break;
    case KILN_KV_INT8:
        for (int i = 0; i < n; i++) {
            float q = kiln_round_even(x[i] / scale);
            q = q > 127 ? 127 : q < -127 ? -127 : q;
            out[i] = (uint8_t)(int8_t)q;
        }
        break;
    }
}

static void decode(const KilnKVCache *c, const uint8_t *in, int n, float scale, float *out)
{
    switch (c->spec.fmt) {
    case KILN_KV_F32:
        memcpy(out, in, sizeof(float) * (size_t)n);
        break;
    case KILN_KV_F16:
    case KILN_KV_BF16:
        for (int i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, in + 2 * i, 2);
            out[i] = c->spec.fmt == KILN_KV_F16 ? kiln_f16_to_f32(h) : kiln_bf16_to_f32(h);
        }
        break;
    case KILN_KV_FP8_E4M3:
        for (int i = 0; i < n; i++)
            out[i] = kiln_fp8_e4m3_decode(in[i]) * scale;
        break;
    case KILN_KV_FP8_E5M2:
        for (int i = 0; i < n; i++)
            out[i] = kiln_fp8_e5m2_decode(in[i]) * scale;
        break;
    case KILN_KV_INT8:
        for (int i = 0; i < n; i++)
            out[i] = (float)(int8_t)in[i] * scale;
        break;
    }
}

static float absmax(const float *x, int n)
{
    float m = 0;
    for (int i = 0; i < n; i++)
        m = fabsf(x[i]) > m ? fabsf(x[i]) : m;
    return m;
}

static void write_one(KilnKVCache *c, int which, int layer, int pos, const float *x)
{
    int row = c->nkv * c->hd, span = row / c->nscale;
    uint8_t *dst = (which ? c->v : c->k) + (slot(c, layer) * c->cap + pos) * row * c->esz;
    float *sc = which ? c->vs : c->ks;
    float *mx = which ? c->vmax : c->kmax;
    for (int s = 0; s < c->nscale; s++) {
        const float *xs = x + s * span;
        float scale = 1;
        if (quantized(&c->spec)) {
            if (c->calibrating) {
                float a = absmax(xs, span);
                float *m = &mx[layer * c->nscale + s];
                *m = a > *m ? a : *m;
            }
            if (c->spec.dynamic) {
                float a = absmax(xs, span);
                scale = a > 0 ? a / fmt_max(c->spec.fmt) : 1.0f;
                sc[(slot(c, layer) * c->cap + pos) * c->nscale + s] = scale;
            } else {
                scale = sc[layer * c->nscale + s];
            }
        }
        encode(c, xs, span, scale, dst + (size_t)s * span * c->esz);
    }
}

void kiln_kv_write(KilnKVCache *c, int layer, int pos, const float *k, const float *v)
{
    write_one(c, 0, layer, pos, k);
    write_one(c, 1, layer, pos, v);
}

void kiln_kv_read(const KilnKVCache *c, int which, int layer, int pos, int h, float *out)
{
    int row = c->nkv * c->hd;
    const uint8_t *src =
        (which ? c->v : c->k) + ((slot(c, layer) * c->cap + pos) * row + (size_t)h * c->hd) * c->esz;
    float scale = 1;
    if (quantized(&c->spec)) {
        int s = c->spec.per_head ? h : 0;
        const float *sc = which ? c->vs : c->ks;
        scale = c->spec.dynamic ? sc[(slot(c, layer) * c->cap + pos) * c->nscale + s]
                                : sc[layer * c->nscale + s];
    }
    decode(c, src, c->hd, scale, out);
}

const float *kiln_kv_f32(const KilnKVCache *c, int which, int layer, int h)
{
    if (c->spec.fmt != KILN_KV_F32)
        return NULL;
    const uint8_t *base = which ? c->v : c->k;
    return (const float *)base + slot(c, layer) * c->cap * c->nkv * c->hd + (size_t)h * c->hd;
}

size_t kiln_kv_bytes_per_token(const KilnKVCache *c)
{
    size_t b = 2 * (size_t)c->nlayers * c->nkv * c->hd * c->esz;
    if (quantized(&c->spec) && c->spec.dynamic)
        b += 2 * (size_t)c->nlayers * c->nscale * sizeof(float);
    return b;
}

void kiln_kv_calib_begin(KilnKVCache *c)
{
    c->calibrating = true;
    memset(c->kmax, 0, sizeof(float) * (size_t)c->nlayers * c->nscale);
    memset(c->vmax, 0, sizeof(float) * (size_t)c->nlayers * c->nscale);
}

void kiln_kv_calib_end(KilnKVCache *c)
{
    c->calibrating = false;
    if (!quantized(&c->spec) || c->spec.dynamic || c->spec.scale > 0)
        return;
    for (int i = 0; i < c->nlayers * c->nscale; i++) {
        float q = fmt_max(c->spec.fmt);
        c->ks[i] = c->kmax[i] > 0 ? c->kmax[i] / q : 1.0f;
        c->vs[i] = c->vmax[i] > 0 ? c->vmax[i] / q : 1.0f;
    }
}
