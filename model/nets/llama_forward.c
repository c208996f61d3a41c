/* model/nets/llama_forward.c — the Llama decoder's forward pass (model/nets/llama.c loads it):
 * RMSNorm, RoPE ("norm" adjacent-pair layout, as llama.cpp's converter permutes Q/K rows
 * for), grouped-query attention over the KV cache, SiLU-gated FFN, the output head. */
#include <immintrin.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model/files/modelfile.h"
#include "model/nets/llama_internal.h"
#include "model/model.h"
#include "runtime/runtime.h"

/* ------------------------------------------------------------------ attention */

/* What one query row needs: scores p[j] = q·K_j·sc for j < n, then o = Σ softmax(p)_j V_j.
 * K_j and V_j are ks floats apart (the cache's own rows in place, or a dequantized copy). */
typedef struct AttnRow {
    void (*scores)(const float *q, const float *K, size_t ks, int n, int hd, float sc, float *p);
    void (*mix)(const float *p, const float *V, size_t ks, int n, int hd, float *o);
} AttnRow;

typedef float v8 __attribute__((vector_size(32)));

/* Eight keys' dot products with q at once: each key's eight lanes accumulate along hd as
 * scores_avx2's one key does (a multiply, then an add: -std=c17 fuses neither), then the eight are reduced together with the same adds in
 * the same order, ((a0 + a4) + (a1 + a5)) + ((a2 + a6) + (a3 + a7)), so the scores are the
 * same bits; only the horizontal sums are shared. */
__attribute__((target("avx2"))) static void scores8_avx2(const float *q, const float *K,
                                                             size_t ks, int nv, float sc,
                                                             float *p)
{
    __m256 a[8];
    for (int i = 0; i < 8; i++)
        a[i] = _mm256_setzero_ps();
    for (int e = 0; e < nv; e++) {
        __m256 qe = _mm256_loadu_ps(q + 8 * e);
        for (int i = 0; i < 8; i++)
            a[i] = _mm256_add_ps(a[i], _mm256_mul_ps(qe, _mm256_loadu_ps(K + (size_t)i * ks + 8 * e)));
    }
    __m256 s[4]; /* s[i] = [a(2i) lo + hi | a(2i+1) lo + hi]: lanes a0+a4, a1+a5, a2+a6, a3+a7 */
    for (int i = 0; i < 4; i++)
        s[i] = _mm256_add_ps(_mm256_permute2f128_ps(a[2 * i], a[2 * i + 1], 0x20),
                             _mm256_permute2f128_ps(a[2 * i], a[2 * i + 1], 0x31));
    __m256 h0 = _mm256_hadd_ps(s[0], s[1]), h1 = _mm256_hadd_ps(s[2], s[3]);
    __m256 r = _mm256_hadd_ps(h0, h1); /* keys 0 2 4 6 1 3 5 7 (hadd works per 128 lanes) */
    r = _mm256_permutevar8x32_ps(r, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    _mm256_storeu_ps(p, _mm256_mul_ps(r, _mm256_set1_ps(sc)));
}

/* hd a multiple of 8 and at most 64: q and o live in registers across the keys. */
__attribute__((target("avx2,fma"))) static void scores_avx2(const float *q, const float *K,
                                                            size_t ks, int n, int hd, float sc,
                                                            float *p)
{
    v8 qv[8];
    int nv = hd / 8, j = 0;
    for (int e = 0; e < nv; e++)
        memcpy(&qv[e], q + 8 * e, 32);
    for (; j + 8 <= n; j += 8) /* eight keys, summed in the same order as one key below */
        scores8_avx2(q, K + (size_t)j * ks, ks, nv, sc, p + j);
    for (; j < n; j++) {
        const float *k = K + (size_t)j * ks;
        v8 acc = {0}, kv;
        for (int e = 0; e < nv; e++) {
            memcpy(&kv, k + 8 * e, 32);
            acc += qv[e] * kv;
        }
        p[j] = (((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]))) *
               sc;
    }
}

/* avx2 without fma: each o[e] += p·v rounds twice, as the scalar loop does, so the
 * output is the same bit for bit */
__attribute__((target("avx2"))) static void mix_avx2(const float *p, const float *V,
                                                         size_t ks, int n, int hd, float *o)
{
    v8 ov[8] = {{0}}, vv;
    int nv = hd / 8;
    for (int j = 0; j < n; j++) {
        const float *v = V + (size_t)j * ks;
        v8 pj = {p[j], p[j], p[j], p[j], p[j], p[j], p[j], p[j]};
        for (int e = 0; e < nv; e++) {
            memcpy(&vv, v + 8 * e, 32);
            ov[e] += pj * vv;
        }
    }
    for (int e = 0; e < nv; e++)
        memcpy(o + 8 * e, &ov[e], 32);
}

static void scores_generic(const float *q, const float *K, size_t ks, int n, int hd, float sc,
                           float *p)
{
    for (int j = 0; j < n; j++) {
        float s = 0;
        for (int e = 0; e < hd; e++)
            s += q[e] * K[(size_t)j * ks + e];
        p[j] = s * sc;
    }
}

static void mix_generic(const float *p, const float *V, size_t ks, int n, int hd, float *o)
{
    memset(o, 0, sizeof(float) * (size_t)hd);
    for (int j = 0; j < n; j++)
        for (int e = 0; e < hd; e++)
            o[e] += p[j] * V[(size_t)j * ks + e];
}

static AttnRow pick_attn(int hd)
{
    __builtin_cpu_init();
    if (hd % 8 == 0 && hd <= 64 && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        return (AttnRow){scores_avx2, mix_avx2};
    return (AttnRow){scores_generic, mix_generic};
}

enum { ATTN_QBLOCK = 32 }; /* query rows per task in a prefill */

/* One query row q[hd] over n keys K_j / values V_j (ks floats apart): o = Σ softmax(q·K_j
 * / √hd)_j V_j; p[n] scratch. */
static void attend(const AttnRow *f, const float *q, const float *K, const float *V, size_t ks,
                   int n, int hd, float *p, float *o)
{
    f->scores(q, K, ks, n, hd, 1.0f / sqrtf((float)hd), p);
    kiln_softmax(p, n);
    f->mix(p, V, ks, n, hd, o);
}

void kiln_llama_attention(const float *q, const float *k, const float *v, int T, int n, int nh,
                          int nkv, int hd, float *p, float *out)
{
    AttnRow f = pick_attn(hd);
    size_t ks = (size_t)nkv * hd;
    int group = nh / nkv, pos0 = n - T;
    for (int t = 0; t < T; t++)
        for (int h = 0; h < nh; h++) {
            size_t row = ((size_t)t * nh + h) * hd;
            size_t kv = (size_t)(h / group) * hd;
            attend(&f, q + row, k + kv, v + kv, ks, pos0 + t + 1, hd, p, out + row);
        }
}

typedef struct AttnTask {
    const KilnLlama *m;
    const KilnKVCache *kv;
    int layer, T, pos0, nqb; /* nqb: blocks of query rows per KV head */
    int hsplit;              /* tasks per block that split the group's query heads */
    const float *q;          /* [T, nh*hd], roped */
    float *ctx;              /* [T, nh*hd] */
    float *scratch;          /* per thread: (quantized caches) 2*(pos0+T)*hd, then pos0+T */
    size_t per_thread;
    AttnRow f;
} AttnTask;

/* One task = one KV head, a block of query rows and a share of the group's query heads
 * (all of them in a prefill; one each in a decode step, whose 3 KV heads alone would not
 * balance over the threads): the KV head's cache read once (in place when it is f32, else
 * dequantized), then causal attention for those heads on those rows. */
static void attn_task(void *ctx, int task, int thread)
{
    const AttnTask *a = ctx;
    const KilnLlama *m = a->m;
    int hd = m->hd, group = m->nh / m->nkv, per = group / a->hsplit;
    int hs = task % a->hsplit, kvh = task / a->hsplit / a->nqb, qb = task / a->hsplit % a->nqb;
    int h0 = kvh * group + hs * per;
    int t0 = qb * ATTN_QBLOCK, t1 = t0 + ATTN_QBLOCK < a->T ? t0 + ATTN_QBLOCK : a->T;
    int n = a->pos0 + t1;
    float *scr = a->scratch + (size_t)thread * a->per_thread;
    const float *K = kiln_kv_f32(a->kv, 0, a->layer, kvh), *V = kiln_kv_f32(a->kv, 1, a->layer, kvh);
    size_t ks = (size_t)m->nkv * hd;
    float *p = scr;
    if (!K) {
        float *Kd = scr, *Vd = scr + (size_t)n * hd;
        for (int j = 0; j < n; j++) {
            kiln_kv_read(a->kv, 0, a->layer, j, kvh, Kd + (size_t)j * hd);
            kiln_kv_read(a->kv, 1, a->layer, j, kvh, Vd + (size_t)j * hd);
        }
        K = Kd, V = Vd, ks = (size_t)hd;
        p = Vd + (size_t)n * hd;
    }
    int D = m->nh * hd;
    for (int t = t0; t < t1; t++)
        for (int h = h0; h < h0 + per; h++)
            attend(&a->f, a->q + (size_t)t * D + h * hd, K, V, ks, a->pos0 + t + 1, hd, p,
                   a->ctx + (size_t)t * D + h * hd);
}

/* Causal grouped-query attention of T new tokens over the layer's cache. Small ones
 * (a decode step over a short cache) run on the calling thread: a pool dispatch would
 * cost more than the work. */
static void attention(AttnTask *a, KilnPool *pool)
{
    a->nqb = (a->T + ATTN_QBLOCK - 1) / ATTN_QBLOCK;
    a->hsplit = a->T == 1 ? a->m->nh / a->m->nkv : 1;
    int ntasks = a->m->nkv * a->nqb * a->hsplit;
    if (!pool || (int64_t)a->T * (a->pos0 + a->T) < 64) {
        for (int i = 0; i < ntasks; i++)
            attn_task(a, i, 0);
        return;
    }
    kiln_pool_run(pool, ntasks, attn_task, a);
}

/* RoPE's cos and sin of every position of the forward and pair i, [T][hd/2] each, computed
 * as kiln_rope_norm computes them, once for every layer and head. */
void kiln_rope_table(int T, int pos0, int hd, float theta, float *cs, float *sn)
{
    for (int t = 0; t < T; t++)
        for (int i = 0; i < hd / 2; i++) {
            double f = (pos0 + t) * pow(theta, -2.0 * i / hd);
            cs[t * (hd / 2) + i] = (float)cos(f), sn[t * (hd / 2) + i] = (float)sin(f);
        }
}

static void rope_apply(float *x, int hd, const float *cs, const float *sn)
{
    for (int i = 0; i < hd / 2; i++) {
        float a = x[2 * i], b = x[2 * i + 1];
        x[2 * i] = a * cs[i] - b * sn[i];
        x[2 * i + 1] = a * sn[i] + b * cs[i];
    }
}


/* The forward pass's buffers for T tokens at positions pos0.. (x: the hidden states [T, D]). */
typedef struct Fwd {
    float *x, *h, *q, *c, *k, *v, *g, *u, *scr, *rcs, *rsn;
    size_t per_thread;
    AttnRow f;
} Fwd;

static void fwd_free(Fwd *b, bool own_x)
{
    if (own_x)
        free(b->x);
    free(b->h), free(b->q), free(b->c), free(b->k), free(b->v), free(b->g), free(b->u);
    free(b->scr), free(b->rcs);
}

/* x: the caller's [T, D] (NULL: allocated here). */
static int fwd_alloc(const KilnLlama *m, KilnPool *pool, int T, int pos0, float *x, Fwd *b,
                     KilnDiag *d)
{
    int D = m->d, KD = m->nkv * m->hd, F = m->ffn;
    size_t nt = (size_t)(pool ? kiln_pool_size(pool) : 1);
    size_t n = (size_t)(pos0 + T);
    *b = (Fwd){.x = x ? x : malloc(sizeof(float) * (size_t)T * D)};
    b->h = malloc(sizeof(float) * (size_t)T * D);
    b->q = malloc(sizeof(float) * (size_t)T * D), b->c = malloc(sizeof(float) * (size_t)T * D);
    b->k = malloc(sizeof(float) * (size_t)T * KD), b->v = malloc(sizeof(float) * (size_t)T * KD);
    b->g = malloc(sizeof(float) * (size_t)T * F), b->u = malloc(sizeof(float) * (size_t)T * F);
    b->per_thread = 2 * n * m->hd + n;
    b->scr = malloc(sizeof(float) * nt * b->per_thread);
    b->rcs = malloc(sizeof(float) * (size_t)T * m->hd);
    if (!b->x || !b->h || !b->q || !b->c || !b->k || !b->v || !b->g || !b->u || !b->scr ||
        !b->rcs) {
        fwd_free(b, !x);
        return kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
    }
    b->rsn = b->rcs + (size_t)T * (m->hd / 2);
    b->f = pick_attn(m->hd);
    kiln_rope_table(T, pos0, m->hd, m->theta, b->rcs, b->rsn);
    return 0;
}

/* Block i on b->x [T, D] in place; its K/V go to layer kvl of kv. */
static int block_run(KilnLlama *m, KilnPool *pool, KilnKVCache *kv, int i, int kvl, Fwd *b,
                     int T, int pos0, KilnDiag *d)
{
    int D = m->d, KD = m->nkv * m->hd, F = m->ffn;
    float *x = b->x, *h = b->h, *q = b->q, *c = b->c, *k = b->k, *v = b->v, *g = b->g, *u = b->u;
    KilnLinear *L = &m->lin[i * L_PER];
    memcpy(h, x, sizeof(float) * (size_t)T * D);
    kiln_rmsnorm(h, T, D, m->attn_norm[i], m->eps);
    int rc = kiln_linear_run(&L[L_Q], pool, h, T, q, d) ||
             kiln_linear_run(&L[L_K], pool, h, T, k, d) ||
             kiln_linear_run(&L[L_V], pool, h, T, v, d);
    if (rc)
        return rc;
    for (int t = 0; t < T; t++) {
        const float *cs = b->rcs + (size_t)t * (m->hd / 2), *sn = b->rsn + (size_t)t * (m->hd / 2);
        for (int hh = 0; hh < m->nh; hh++)
            rope_apply(q + (size_t)t * D + hh * m->hd, m->hd, cs, sn);
        for (int hh = 0; hh < m->nkv; hh++)
            rope_apply(k + (size_t)t * KD + hh * m->hd, m->hd, cs, sn);
        kiln_kv_write(kv, kvl, pos0 + t, k + (size_t)t * KD, v + (size_t)t * KD);
    }
    AttnTask at = {.m = m, .kv = kv, .layer = kvl, .T = T, .pos0 = pos0, .q = q, .ctx = c,
                   .scratch = b->scr, .per_thread = b->per_thread, .f = b->f};
    attention(&at, pool);
    if ((rc = kiln_linear_run(&L[L_O], pool, c, T, h, d)))
        return rc;
    for (size_t j = 0; j < (size_t)T * D; j++)
        x[j] += h[j];
    memcpy(h, x, sizeof(float) * (size_t)T * D);
    kiln_rmsnorm(h, T, D, m->ffn_norm[i], m->eps);
    rc = kiln_linear_run(&L[L_GATE], pool, h, T, g, d) ||
         kiln_linear_run(&L[L_UP], pool, h, T, u, d);
    if (rc)
        return rc;
    if (L[L_GATE].act_fused) /* the gate_proj kernel already applied silu */
        for (size_t j = 0; j < (size_t)T * F; j++)
            g[j] *= u[j];
    else
        kiln_silu_mul(g, u, (int64_t)T * F);
    if ((rc = kiln_linear_run(&L[L_DOWN], pool, g, T, h, d)))
        return rc;
    for (size_t j = 0; j < (size_t)T * D; j++)
        x[j] += h[j];
    return 0;
}

int kiln_llama_embed(const KilnLlama *m, const int32_t *ids, int T, int pos0, float *x,
                     KilnDiag *d)
{
    for (int t = 0; t < T; t++) {
        if (ids[t] < 0 || ids[t] >= m->vocab) /* never clamped: a wrong id is a wrong result */
            return kiln_diag_set(d, KILN_EINPUT, "llama: token id %d at position %d is outside "
                                 "the %d rows of the embedding", ids[t], pos0 + t, m->vocab);
        kiln_llama_embed_row(m, ids[t], x + (size_t)t * m->d);
    }
    /* Rows read from the file: a prompt's tokens fault pages all over the table (bench's
     * random prompt of 512: 20 of SmolLM2's 30 MB with the kernel's fault-around), so they
     * are handed back, unless the head's one-row product reads that tensor every step. */
    const KilnLinear *head = &m->lin[m->nlayers * L_PER];
    if (!m->emb && T > 1 && head->blocks != m->emb_t)
        kiln_mf_drop_pages(m->mf, m->emb_t);
    return 0;
}

int kiln_llama_block(KilnLlama *m, KilnPool *pool, KilnKVCache *kv, int kvl, int layer, float *x,
                     int T, int pos0, KilnDiag *d)
{
    if (T <= 0 || pos0 < 0 || pos0 + T > kv->cap || layer < 0 || layer >= m->nlayers || kvl < 0 ||
        kvl >= kv->nlayers)
        return kiln_diag_set(d, KILN_EINPUT, "llama: block %d of %d (cache layer %d of %d): %d "
                             "tokens at %d do not fit a cache of %d", layer, m->nlayers, kvl,
                             kv->nlayers, T, pos0, kv->cap);
    Fwd b;
    int rc = fwd_alloc(m, pool, T, pos0, x, &b, d);
    if (!rc)
        rc = block_run(m, pool, kv, layer, kvl, &b, T, pos0, d);
    fwd_free(&b, false);
    return rc ? (d->code ? d->code : KILN_EINTERNAL) : 0;
}

/* The layers of kiln_llama_forward; the last nlast rows go through the head into logits,
 * or (hidden non-NULL) are copied out as they leave the last block. */
static int forward(KilnLlama *m, KilnPool *pool, KilnKVCache *kv, const int32_t *ids, int T,
                   int pos0, int nlast, float *logits, float *hidden, KilnDiag *d)
{
    if (T <= 0 || pos0 < 0 || pos0 + T > kv->cap || nlast > T)
        return kiln_diag_set(d, KILN_EINPUT, "llama: %d tokens at %d do not fit a cache of %d", T,
                             pos0, kv->cap);
    int D = m->d;
    Fwd b;
    int rc = fwd_alloc(m, pool, T, pos0, NULL, &b, d);
    if (rc)
        return rc;
    float *x = b.x;
    rc = kiln_llama_embed(m, ids, T, pos0, x, d);
    for (int i = 0; !rc && i < m->nlayers; i++)
        rc = block_run(m, pool, kv, i, i, &b, T, pos0, d);
    if (!rc && nlast > 0) {
        float *xl = x + (size_t)(T - nlast) * D;
        if (hidden)
            memcpy(hidden, xl, sizeof(float) * (size_t)nlast * D);
        else
            rc = kiln_llama_head(m, pool, xl, nlast, logits, d);
    }
    fwd_free(&b, true);
    return rc ? (d->code ? d->code : KILN_EINTERNAL) : 0;
}

int kiln_llama_forward(KilnLlama *m, KilnPool *pool, KilnKVCache *kv, const int32_t *ids, int T,
                       int pos0, int nlast, float *logits, KilnDiag *d)
{
    return forward(m, pool, kv, ids, T, pos0, nlast, logits, NULL, d);
}

int kiln_llama_forward_hidden(KilnLlama *m, KilnPool *pool, KilnKVCache *kv, const int32_t *ids,
                              int T, int pos0, int nlast, float *hidden, KilnDiag *d)
{
    return forward(m, pool, kv, ids, T, pos0, nlast, NULL, hidden, d);
}

/* Each row is normed on its own and the head's kernels compute each output row from its
 * input row alone (per-token activation scales), so rows run in chunks give the same bits
 * as all at once (kiln eval's perplexity: docs/hardening.md, "Memory"). */
int kiln_llama_head(KilnLlama *m, KilnPool *pool, float *x, int n, float *logits, KilnDiag *d)
{
    kiln_rmsnorm(x, n, m->d, m->out_norm, m->eps);
    return kiln_linear_run(&m->lin[m->nlayers * L_PER], pool, x, n, logits, d);
}

int kiln_llama_dim(const KilnLlama *m) { return m->d; }

void kiln_llama_weights(const KilnLlama *m, int64_t *params, int64_t *f32_bytes)
{
    int64_t D = m->d, p = (int64_t)m->vocab * D + (2 * (int64_t)m->nlayers + 1) * D;
    *f32_bytes = (int64_t)sizeof(float) * p; /* embeddings and norms stay f32 */
    for (int i = 0; i < m->nlayers * L_PER; i++)
        p += m->lin[i].N * m->lin[i].K + (m->lin[i].b ? m->lin[i].N : 0);
    const KilnLinear *head = &m->lin[m->nlayers * L_PER];
    /* tied: the head's rows are the embeddings' (the same tensor read again from a GGUF,
     * or the same values when both are kept) */
    bool tied = head->N == m->vocab && head->K == D &&
                (m->emb ? head->w && !memcmp(head->w, m->emb, sizeof(float) * (size_t)(head->N * D))
                        : head->wt == m->emb_t);
    *params = p + (tied ? 0 : head->N * head->K);
}
