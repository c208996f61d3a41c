/* tests/test_qresult_pack.c — GPTQ's result kept packed (quant/rtn.c kiln_qresult_pack,
 * kiln_qresult_codes; docs/hardening.md "Memory"): every code of every format comes back
 * the same from its 4- or 8-bit field, at any offset and length (odd ones across a byte
 * of two int4 codes), a range wider than a byte stays int16, and a real result of every
 * weight format (round to nearest, GPTQ) dequantizes to the same bits packed or not. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "quant/quant.h"

static uint64_t rng = 12345;
static uint32_t rnd(void)
{
    rng = rng * 6364136223846793005ULL + 1442695040888963407ULL;
    return (uint32_t)(rng >> 33);
}

/* A result of N x K codes drawn from [lo, hi] (both ends present). */
static void make(KilnQResult *r, int64_t N, int64_t K, int lo, int hi)
{
    memset(r, 0, sizeof *r);
    r->N = N, r->K = K, r->ngroups = 1;
    r->codes = malloc(sizeof(int16_t) * (size_t)(N * K));
    assert_non_null(r->codes);
    for (int64_t i = 0; i < N * K; i++)
        r->codes[i] = (int16_t)(lo + (int)(rnd() % (uint32_t)(hi - lo + 1)));
    r->codes[0] = (int16_t)lo;
    r->codes[N * K - 1] = (int16_t)hi;
}

/* Packs a copy of r's codes and reads every run [i0, i0 + n) back. */
static void round_trip(int64_t N, int64_t K, int lo, int hi, int want_bits)
{
    KilnQResult r;
    make(&r, N, K, lo, hi);
    int64_t nk = N * K;
    int16_t *orig = malloc(sizeof(int16_t) * (size_t)nk);
    int16_t *got = malloc(sizeof(int16_t) * (size_t)(nk + 1)); /* one past: the guard */
    assert_true(orig && got);
    memcpy(orig, r.codes, sizeof(int16_t) * (size_t)nk);
    KilnDiag d = {0};
    assert_int_equal(kiln_qresult_pack(&r, &d), 0);
    if (want_bits == 16) { /* too wide for a byte: left as it was */
        assert_non_null(r.codes);
        assert_null(r.packed);
    } else {
        assert_null(r.codes);
        assert_non_null(r.packed);
        assert_int_equal(r.packed_bits, want_bits);
        assert_int_equal(r.packed_lo, lo);
    }
    kiln_qresult_codes(&r, 0, nk, got);
    assert_memory_equal(orig, got, sizeof(int16_t) * (size_t)nk);
    for (int t = 0; t < 200; t++) { /* odd starts and lengths: half bytes at both ends */
        int64_t i0 = rnd() % (uint32_t)nk, n = 1 + rnd() % (uint32_t)(nk - i0);
        memset(got, 0x55, sizeof(int16_t) * (size_t)(nk + 1));
        kiln_qresult_codes(&r, i0, n, got);
        assert_memory_equal(orig + i0, got, sizeof(int16_t) * (size_t)n);
        assert_int_equal(got[n], 0x5555); /* nothing written past the run */
    }
    kiln_qresult_free(&r);
    assert_null(r.packed);
    free(orig), free(got);
}

static void test_ranges(void **st)
{
    (void)st;
    round_trip(7, 33, -7, 7, 4);      /* int4 symmetric, an odd count of codes */
    round_trip(16, 64, 0, 15, 4);     /* int4 asymmetric */
    round_trip(5, 17, -8, 7, 4);      /* sixteen values: still a nibble */
    round_trip(9, 31, -127, 127, 8);  /* int8 symmetric */
    round_trip(4, 100, 0, 255, 8);    /* int8 asymmetric, fp8 bytes */
    round_trip(3, 11, -8, 8, 8);      /* seventeen values: a byte */
    round_trip(6, 13, -300, 300, 16); /* not a weight format's: kept int16 */
    round_trip(1, 1, 3, 3, 4);        /* one code */
}

/* Every weight format through round to nearest and GPTQ: the packed codes dequantize to
 * exactly the result's weights, as model/eval/calib.c checks before dropping them. */
static void check_result(const KilnQResult *r, const KilnQuantSpec *q)
{
    int64_t K = r->K, len = q->gran == KILN_GRAN_GROUP ? q->group : K;
    int16_t *c = malloc(sizeof(int16_t) * (size_t)K);
    for (int64_t n = 0; n < r->N; n++) {
        kiln_qresult_codes(r, n * K, K, c);
        for (int64_t j = 0; j < K; j++) {
            int64_t si = n * r->ngroups + (r->ngroups > 1 ? j / len : 0);
            KilnQParams p = {r->scale[si], r->zero ? r->zero[si] : 0};
            float w = kiln_dequantize_value(q->fmt, q->symmetric, p, c[j]);
            assert_memory_equal(&w, &r->w[n * K + j], sizeof w);
        }
    }
    free(c);
}

static void test_formats(void **st)
{
    (void)st;
    enum { N = 24, K = 96 };
    static const KilnQuantSpec specs[] = {
        {.fmt = KILN_QF_INT4, .symmetric = true, .gran = KILN_GRAN_GROUP, .group = 32},
        {.fmt = KILN_QF_INT4, .symmetric = false, .gran = KILN_GRAN_GROUP, .group = 32},
        {.fmt = KILN_QF_INT8, .symmetric = true, .gran = KILN_GRAN_CHANNEL},
        {.fmt = KILN_QF_INT8, .symmetric = false, .gran = KILN_GRAN_CHANNEL},
        {.fmt = KILN_QF_FP8_E4M3, .symmetric = true, .gran = KILN_GRAN_CHANNEL},
        {.fmt = KILN_QF_FP8_E5M2, .symmetric = true, .gran = KILN_GRAN_TENSOR},
    };
    float *w = malloc(sizeof(float) * N * K);
    double *H = calloc((size_t)K * K, sizeof(double));
    for (int i = 0; i < N * K; i++)
        w[i] = ((float)(rnd() % 2001) - 1000.0f) / 700.0f;
    for (int i = 0; i < K; i++) /* a diagonal-heavy, positive definite H */
        for (int j = 0; j < K; j++)
            H[i * K + j] = i == j ? 2.0 + (i % 5) : 0.1 / (1 + abs(i - j));
    KilnDiag d = {0};
    for (size_t s = 0; s < sizeof specs / sizeof *specs; s++) {
        KilnQResult rtn, gq;
        assert_int_equal(kiln_quant_rtn(w, N, K, &specs[s], &rtn, &d), 0);
        KilnGptqOpts go = {.damp = 0.01f, .block = 32, .act_order = true, .static_groups = true};
        assert_int_equal(kiln_quant_gptq(w, N, K, H, &specs[s], &go, &gq, &d), 0);
        KilnQResult *both[2] = {&rtn, &gq};
        for (int b = 0; b < 2; b++) {
            assert_int_equal(kiln_qresult_pack(both[b], &d), 0);
            assert_non_null(both[b]->packed); /* every weight format fits a byte */
            assert_int_equal(both[b]->packed_bits, specs[s].fmt == KILN_QF_INT4 ? 4 : 8);
            check_result(both[b], &specs[s]);
            kiln_qresult_free(both[b]);
        }
    }
    free(w), free(H);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ranges),
        cmocka_unit_test(test_formats),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
