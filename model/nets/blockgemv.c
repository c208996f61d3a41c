/* model/nets/blockgemv.c — an f32 layer's one-row product (a decode step) read from the
 * model file's GGUF blocks (Q8_0, Q4_0, Q4_1) instead of its prepacked f32 copy.
 *
 * An f32 layer of a GGUF model (a recipe's ignored lm_head, every layer of f32.lua) has
 * as weights exactly the f32 values kiln_mf_rows_f32 dequantizes from the file's blocks.
 * Here each block is dequantized in registers with the same arithmetic, in the same
 * order (Q4_1: (float)q * d, rounded, then + m, rounded; no fused multiply-add), so the
 * weights multiplied are those f32 values bit for bit, and only the order of the f32
 * sums differs from the prepacked kernel's. What is read per token is the blocks:
 * SmolLM2's tied lm_head is 30 MB of Q8_0 rather than 113 MB of f32
 * (docs/bench.md, "Decode"). Rows are split over the pool in tasks of ROWS_PER_TASK. */
#include <immintrin.h>
#include <stdlib.h>
#include <string.h>

#include "model/files/modelfile.h"
#include "model/model.h"
#include "runtime/runtime.h"

enum { ROWS_PER_TASK = 128 };

static size_t block_bytes(KilnModelType t)
{
    return t == KILN_MT_Q8_0 ? 34 : t == KILN_MT_Q4_0 ? 18 : 20;
}

bool kiln_blockgemv_supported(const KilnModelTensor *t, int64_t N, int64_t K)
{
    static int have = -1;
    if (have < 0) {
        __builtin_cpu_init();
        have = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("f16c");
    }
    const char *off = getenv("KILN_NO_BLOCK_GEMV");
    if (have != 1 || (off && *off && strcmp(off, "0") != 0))
        return false;
    return t && t->data && t->rank == 2 && t->dim[0] == N && t->dim[1] == K && K % 32 == 0 &&
           (t->type == KILN_MT_Q8_0 || t->type == KILN_MT_Q4_0 || t->type == KILN_MT_Q4_1) &&
           t->nbytes >= (size_t)(N * (K / 32)) * block_bytes(t->type);
}

#define AVX512 __attribute__((target("avx512f,avx512bw,f16c")))

/* A block's f16 scale (and Q4_1's f16 minimum after it) as f32 (exact, as kiln_f16_to_f32),
 * broadcast. */
AVX512 static inline __m128 f16x2(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return _mm_cvtph_ps(_mm_cvtsi32_si128((int)v));
}

/* One row's dot product with x over nb blocks; two chains (the low and high 16 of each
 * block), added lane by lane and then reduced. The weight q * d + m is one fused
 * multiply-add: q * d (4 or 8 bits times an f16's 11) is exact in f32, so rounding only
 * the sum gives what kiln_mf_rows_f32's multiply, then add, gives. */
AVX512 static float row_q4_1(const uint8_t *p, int64_t nb, const float *x)
{
    __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
    const __m512i lo4 = _mm512_set1_epi32(0xF);
    for (int64_t b = 0; b < nb; b++, p += 20, x += 32) {
        __m128 dm = f16x2(p);
        __m512 d = _mm512_broadcastss_ps(dm), m = _mm512_broadcastss_ps(_mm_movehdup_ps(dm));
        __m512i q = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(p + 4)));
        __m512 wl = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_and_si512(q, lo4)), d, m);
        __m512 wh = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_srli_epi32(q, 4)), d, m);
        a0 = _mm512_fmadd_ps(wl, _mm512_loadu_ps(x), a0);
        a1 = _mm512_fmadd_ps(wh, _mm512_loadu_ps(x + 16), a1);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
}

AVX512 static float row_q4_0(const uint8_t *p, int64_t nb, const float *x)
{
    __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
    const __m512i lo4 = _mm512_set1_epi32(0xF), eight = _mm512_set1_epi32(8);
    for (int64_t b = 0; b < nb; b++, p += 18, x += 32) {
        __m512 d = _mm512_broadcastss_ps(f16x2(p));
        __m512i q = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(p + 2)));
        __m512 wl = _mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_and_si512(q, lo4), eight));
        __m512 wh = _mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_srli_epi32(q, 4), eight));
        a0 = _mm512_fmadd_ps(_mm512_mul_ps(wl, d), _mm512_loadu_ps(x), a0);
        a1 = _mm512_fmadd_ps(_mm512_mul_ps(wh, d), _mm512_loadu_ps(x + 16), a1);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
}

AVX512 static float row_q8_0(const uint8_t *p, int64_t nb, const float *x)
{
    __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; b++, p += 34, x += 32) {
        __m512 d = _mm512_broadcastss_ps(f16x2(p));
        __m512 wl = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(p + 2))));
        __m512 wh = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(p + 18))));
        a0 = _mm512_fmadd_ps(_mm512_mul_ps(wl, d), _mm512_loadu_ps(x), a0);
        a1 = _mm512_fmadd_ps(_mm512_mul_ps(wh, d), _mm512_loadu_ps(x + 16), a1);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
}

typedef struct BlockJob {
    const uint8_t *w;
    KilnModelType type;
    int64_t N, nb;
    size_t row_bytes;
    const float *x;
    float *y;
} BlockJob;

static void block_task(void *ctx, int task, int thread)
{
    (void)thread;
    const BlockJob *j = ctx;
    int64_t r0 = (int64_t)task * ROWS_PER_TASK;
    int64_t r1 = r0 + ROWS_PER_TASK < j->N ? r0 + ROWS_PER_TASK : j->N;
    const uint8_t *p = j->w + (size_t)r0 * j->row_bytes;
    for (int64_t r = r0; r < r1; r++, p += j->row_bytes)
        j->y[r] = j->type == KILN_MT_Q4_1   ? row_q4_1(p, j->nb, j->x)
                  : j->type == KILN_MT_Q4_0 ? row_q4_0(p, j->nb, j->x)
                                            : row_q8_0(p, j->nb, j->x);
}

void kiln_blockgemv(struct KilnPool *pool, const KilnModelTensor *t, const float *x, int64_t N,
                    int64_t K, float *y)
{
    BlockJob j = {.w = t->data, .type = t->type, .N = N, .nb = K / 32,
                  .row_bytes = (size_t)(K / 32) * block_bytes(t->type), .x = x, .y = y};
    kiln_pool_run(pool, (int)((N + ROWS_PER_TASK - 1) / ROWS_PER_TASK), block_task, &j);
}
