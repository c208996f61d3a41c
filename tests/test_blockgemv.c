/* tests/test_blockgemv.c — the one-row f32 product read from GGUF blocks
 * (model/nets/blockgemv.c): the weights it multiplies are exactly kiln_mf_rows_f32's
 * (a one-hot x returns them exactly), its sums are within f32 rounding of a double
 * reference, the pool's split does not change a bit, and what it refuses. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/files/modelfile.h"
#include "model/model.h"
#include "runtime/runtime.h"
#include "tests/models/testlib.h"

static uint64_t rng = 0x243F6A8885A308D3u;
static uint32_t next(void)
{
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (uint32_t)(rng >> 11);
}

/* A normal f16 of magnitude about 2^-12 .. 2^-3, either sign (block scales and minima). */
static uint16_t rand_f16(void)
{
    uint16_t e = (uint16_t)(3 + next() % 10), man = (uint16_t)(next() & 0x3FF);
    return (uint16_t)((next() & 1) << 15 | e << 10 | man);
}

static size_t block_bytes(uint32_t gtype) { return gtype == 8 ? 34 : gtype == 2 ? 18 : 20; }

/* A GGUF file holding one [N, K] tensor "t" of GGUF type gtype (2 Q4_0, 3 Q4_1, 8 Q8_0)
 * with random blocks. */
static const char *write_blocks(uint32_t gtype, int64_t N, int64_t K)
{
    static char path[512];
    snprintf(path, sizeof path, "%s/t%u.gguf", tmpdir, gtype);
    GB g = {0};
    gb_header(&g, 3, 1, 0);
    uint64_t ne[2] = {(uint64_t)K, (uint64_t)N};
    gb_tensor(&g, "t", 2, ne, gtype, 0);
    gb_align(&g, 32);
    for (int64_t b = 0; b < N * K / 32; b++) {
        gb_u16(&g, rand_f16());
        if (gtype == 3)
            gb_u16(&g, rand_f16());
        for (size_t i = gtype == 3 ? 4 : 2; i < block_bytes(gtype); i++)
            gb_u8(&g, (uint8_t)next());
    }
    assert_int_equal(gb_write(&g, path), 0);
    free(g.b);
    return path;
}

/* y = W x through the blocks against the dequantized W: one-hot x gives W's column k
 * exactly; a random x is within f32 rounding of the double sum; pool or not, the same
 * bits. Rows [r0, r0 + nr) of W are checked. */
static void check_tensor(const KilnModelFile *mf, const KilnModelTensor *t, int64_t r0,
                         int64_t nr, KilnPool *pool)
{
    int64_t N = t->dim[0], K = t->dim[1];
    KilnDiag d = {0};
    float *w = malloc(sizeof(float) * (size_t)(nr * K)), *x = calloc((size_t)K, sizeof(float));
    float *y = malloc(sizeof(float) * (size_t)N), *y1 = malloc(sizeof(float) * (size_t)N);
    assert_non_null(w), assert_non_null(x), assert_non_null(y), assert_non_null(y1);
    if (kiln_mf_rows_f32(mf, t, r0, nr, w, &d))
        fail_msg("%s", d.msg);
    assert_true(kiln_blockgemv_supported(t, N, K));
    for (int64_t k = 0; k < K; k += K / 7 + 1) { /* the weights themselves */
        memset(x, 0, sizeof(float) * (size_t)K);
        x[k] = 1.0f;
        kiln_blockgemv(pool, t, x, N, K, y);
        for (int64_t r = 0; r < nr; r++)
            if (y[r0 + r] != w[r * K + k]) /* equal values (a -0 weight sums to +0) */
                fail_msg("%s row %lld col %lld: %.9g, the dequantized weight is %.9g", t->name,
                         (long long)(r0 + r), (long long)k, y[r0 + r], w[r * K + k]);
    }
    for (int64_t k = 0; k < K; k++)
        x[k] = (float)((int32_t)(next() % 2001) - 1000) / 997.0f;
    kiln_blockgemv(pool, t, x, N, K, y);
    kiln_blockgemv(NULL, t, x, N, K, y1);
    assert_memory_equal(y, y1, sizeof(float) * (size_t)N);
    for (int64_t r = 0; r < nr; r++) {
        double s = 0, a = 0;
        for (int64_t k = 0; k < K; k++)
            s += (double)w[r * K + k] * x[k], a += fabs((double)w[r * K + k] * x[k]);
        if (fabs(y[r0 + r] - s) > 1e-6 * a + 1e-30)
            fail_msg("%s row %lld: %.9g, the double sum is %.9g (sum of |terms| %.6g)", t->name,
                     (long long)(r0 + r), y[r0 + r], s, a);
    }
    free(w), free(x), free(y), free(y1);
}

static void test_synthetic(void **state)
{
    (void)state;
    KilnPool *pool = NULL;
    KilnDiag d = {0};
    assert_int_equal(kiln_pool_new(2, &pool, &d), 0);
    static const uint32_t types[] = {2, 3, 8};
    for (size_t i = 0; i < 3; i++) {
        int64_t N = 301, K = 96; /* 3 tasks of rows, the last one short */
        const char *p = write_blocks(types[i], N, K);
        KilnModelFile *mf = NULL;
        if (kiln_mf_open(p, &mf, &d))
            fail_msg("%s", d.msg);
        const KilnModelTensor *t = kiln_mf_find(mf, "t");
        assert_non_null(t);
        if (!kiln_blockgemv_supported(t, N, K)) {
            kiln_mf_close(mf);
            kiln_pool_free(pool);
            skip(); /* no AVX-512 here: layers keep their f32 kernel */
        }
        check_tensor(mf, t, 0, N, pool);
        /* what it refuses: a shape that is not the tensor's */
        assert_false(kiln_blockgemv_supported(t, N + 1, K));
        assert_false(kiln_blockgemv_supported(t, N, K - 32));
        assert_false(kiln_blockgemv_supported(NULL, N, K));
        kiln_mf_close(mf);
    }
    kiln_pool_free(pool);
}

/* SmolLM2's tied head (token_embd, Q8_0) and a Q4_1 projection, on their real blocks. */
static void test_smollm2(void **state)
{
    (void)state;
    char p[1024];
    model_path("smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", p, sizeof p);
    KilnModelFile *mf = NULL;
    KilnDiag d = {0};
    if (kiln_mf_open(p, &mf, &d))
        fail_msg("%s", d.msg);
    KilnPool *pool = NULL;
    assert_int_equal(kiln_pool_new(2, &pool, &d), 0);
    const KilnModelTensor *e = kiln_mf_find(mf, "token_embd.weight");
    const KilnModelTensor *q = kiln_mf_find(mf, "blk.0.attn_q.weight");
    assert_non_null(e), assert_non_null(q);
    assert_int_equal(e->type, KILN_MT_Q8_0);
    assert_int_equal(q->type, KILN_MT_Q4_1);
    if (!kiln_blockgemv_supported(e, 49152, 576)) {
        kiln_pool_free(pool);
        kiln_mf_close(mf);
        skip();
    }
    check_tensor(mf, e, 0, 64, pool);
    check_tensor(mf, e, 49152 - 200, 200, pool);
    check_tensor(mf, q, 0, 576, pool);
    kiln_pool_free(pool);
    kiln_mf_close(mf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_synthetic),
        cmocka_unit_test(test_smollm2),
    };
    return cmocka_run_group_tests(tests, tmpdir_setup, tmpdir_teardown);
}
