/* model/nets/llama_forward.c — the Llama decoder's forward pass (model/nets/llama.c loads it):
 * RMSNorm, RoPE ("norm" adjacent-pair layout, as llama.cpp's converter permutes Q/K rows
 * for), grouped-query attention over the KV cache, SiLU-gated FFN, the output head. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model/nets/llama_internal.h"
#include "model/model.h"
#include "runtime/runtime.h"

__attribute__((target("avx2,fma"))) static float dot_avx2(const float *a, const float *b, int n)
{
    typedef float v8 __attribute__((vector_size(32)));
    v8 acc = {0};
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        v8 x, y;
        memcpy(&x, a + i, 32);
        memcpy(&y, b + i, 32);
        acc += x * y;
    }
    float s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (; i < n; i++)
        s += a[i] * b[i];
    return s;
}

static float dot_generic(const float *a, const float *b, int n)
{
    float s = 0;
    for (int i = 0; i < n; i++)
        s += a[i] * b[i];
    return s;
}

static float (*pick_dot(void))(const float *, const float *, int)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") ? dot_avx2
                                                                           : dot_generic;
}

typedef struct AttnTask {
    const KilnLlama *m;
    const KilnKVCache *kv;
    int layer, T, pos0;
    const float *q; /* [T, nh*hd], roped */
    float *ctx;     /* [T, nh*hd] */
    float *scratch; /* per thread: 2*(pos0+T)*hd + (pos0+T) */
    float (*dot)(const float *, const float *, int);
} AttnTask;

/* One task = one query head: dequantize its KV head's cache once, then causal
 * attention for the T new tokens. */
static void attn_task(void *ctx, int h, int thread)
{
    const AttnTask *a = ctx;
    const KilnLlama *m = a->m;
    int hd = m->hd, n = a->pos0 + a->T, kvh = h / (m->nh / m->nkv);
    float *K = a->scratch + (size_t)thread * ((size_t)2 * n * hd + n);
    float *V = K + (size_t)n * hd, *p = V + (size_t)n * hd;
    for (int j = 0; j < n; j++) {
        kiln_kv_read(a->kv, 0, a->layer, j, kvh, K + (size_t)j * hd);
        kiln_kv_read(a->kv, 1, a->layer, j, kvh, V + (size_t)j * hd);
    }
    float sc = 1.0f / sqrtf((float)hd);
    int D = m->nh * hd;
    float (*dot)(const float *, const float *, int) = a->dot;
    for (int t = 0; t < a->T; t++) {
        const float *q = a->q + (size_t)t * D + h * hd;
        int upto = a->pos0 + t + 1;
        for (int j = 0; j < upto; j++)
            p[j] = dot(q, K + (size_t)j * hd, hd) * sc;
        kiln_softmax(p, upto);
        float *o = a->ctx + (size_t)t * D + h * hd;
        memset(o, 0, sizeof(float) * (size_t)hd);
        for (int j = 0; j < upto; j++)
            for (int e = 0; e < hd; e++)
                o[e] += p[j] * V[(size_t)j * hd + e];
    }
}

int kiln_llama_forward(KilnLlama *m, KilnPool *pool, KilnKVCache *kv, const int32_t *ids, int T,
                       int pos0, int nlast, float *logits, KilnDiag *d)
{
    if (T <= 0 || pos0 < 0 || pos0 + T > kv->cap || nlast > T)
        return kiln_diag_set(d, KILN_EINPUT, "llama: %d tokens at %d do not fit a cache of %d", T,
                             pos0, kv->cap);
    int D = m->d, KD = m->nkv * m->hd, F = m->ffn;
    size_t nt = (size_t)(pool ? kiln_pool_size(pool) : 1);
    size_t n = (size_t)(pos0 + T);
    float *x = malloc(sizeof(float) * (size_t)T * D), *h = malloc(sizeof(float) * (size_t)T * D);
    float *q = malloc(sizeof(float) * (size_t)T * D), *c = malloc(sizeof(float) * (size_t)T * D);
    float *k = malloc(sizeof(float) * (size_t)T * KD), *v = malloc(sizeof(float) * (size_t)T * KD);
    float *g = malloc(sizeof(float) * (size_t)T * F), *u = malloc(sizeof(float) * (size_t)T * F);
    float *scr = malloc(sizeof(float) * nt * (2 * n * m->hd + n));
    int rc = x && h && q && c && k && v && g && u && scr
                 ? 0
                 : kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
    for (int t = 0; !rc && t < T; t++) {
        if (ids[t] < 0 || ids[t] >= m->vocab) /* never clamped: a wrong id is a wrong result */
            rc = kiln_diag_set(d, KILN_EINPUT, "llama: token id %d at position %d is outside the "
                               "%d rows of the embedding", ids[t], pos0 + t, m->vocab);
        else
            memcpy(x + (size_t)t * D, m->emb + (size_t)ids[t] * D, sizeof(float) * D);
    }
    for (int i = 0; !rc && i < m->nlayers; i++) {
        KilnLinear *L = &m->lin[i * L_PER];
        memcpy(h, x, sizeof(float) * (size_t)T * D);
        kiln_rmsnorm(h, T, D, m->attn_norm[i], m->eps);
        rc = kiln_linear_run(&L[L_Q], pool, h, T, q, d) ||
             kiln_linear_run(&L[L_K], pool, h, T, k, d) ||
             kiln_linear_run(&L[L_V], pool, h, T, v, d);
        if (rc)
            break;
        for (int t = 0; t < T; t++) {
            for (int hh = 0; hh < m->nh; hh++)
                kiln_rope_norm(q + (size_t)t * D + hh * m->hd, m->hd, pos0 + t, m->theta);
            for (int hh = 0; hh < m->nkv; hh++)
                kiln_rope_norm(k + (size_t)t * KD + hh * m->hd, m->hd, pos0 + t, m->theta);
            kiln_kv_write(kv, i, pos0 + t, k + (size_t)t * KD, v + (size_t)t * KD);
        }
        AttnTask at = {m, kv, i, T, pos0, q, c, scr, pick_dot()};
        kiln_pool_run(pool, m->nh, attn_task, &at);
        if ((rc = kiln_linear_run(&L[L_O], pool, c, T, h, d)))
            break;
        for (size_t j = 0; j < (size_t)T * D; j++)
            x[j] += h[j];
        memcpy(h, x, sizeof(float) * (size_t)T * D);
        kiln_rmsnorm(h, T, D, m->ffn_norm[i], m->eps);
        rc = kiln_linear_run(&L[L_GATE], pool, h, T, g, d) ||
             kiln_linear_run(&L[L_UP], pool, h, T, u, d);
        if (rc)
            break;
        if (L[L_GATE].act_fused) /* the gate_proj kernel already applied silu */
            for (size_t j = 0; j < (size_t)T * F; j++)
                g[j] *= u[j];
        else
            for (size_t j = 0; j < (size_t)T * F; j++)
                g[j] = kiln_silu1(g[j]) * u[j];
        if ((rc = kiln_linear_run(&L[L_DOWN], pool, g, T, h, d)))
            break;
        for (size_t j = 0; j < (size_t)T * D; j++)
            x[j] += h[j];
    }
    if (!rc && nlast > 0) {
        float *xl = x + (size_t)(T - nlast) * D;
        kiln_rmsnorm(xl, nlast, D, m->out_norm, m->eps);
        rc = kiln_linear_run(&m->lin[m->nlayers * L_PER], pool, xl, nlast, logits, d);
    }
    free(x), free(h), free(q), free(c), free(k), free(v), free(g), free(u), free(scr);
    return rc ? (d->code ? d->code : KILN_EINTERNAL) : 0;
}


void kiln_llama_weights(const KilnLlama *m, int64_t *params, int64_t *f32_bytes)
{
    int64_t D = m->d, p = (int64_t)m->vocab * D + (2 * (int64_t)m->nlayers + 1) * D;
    *f32_bytes = (int64_t)sizeof(float) * p; /* embeddings and norms stay f32 */
    for (int i = 0; i < m->nlayers * L_PER; i++)
        p += m->lin[i].N * m->lin[i].K + (m->lin[i].b ? m->lin[i].N : 0);
    const KilnLinear *head = &m->lin[m->nlayers * L_PER];
    bool tied = head->N == m->vocab && head->K == D &&
                !memcmp(head->w, m->emb, sizeof(float) * (size_t)(head->N * D));
    *params = p + (tied ? 0 : head->N * head->K);
}
