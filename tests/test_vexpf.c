/* tests/test_vexpf.c — kiln_expf_n and kiln_silu_mul (model/nets/vexpf.c) give the bits
 * libm's expf and kiln_silu1 give: every 61st float bit pattern (70 million inputs: both
 * signs, every exponent, subnormals, the special cases above 88, infinities, NaNs), and
 * with KILN_VEXPF_ALL=1 every one of the 2^32 (about a minute). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/model.h"

enum { CHUNK = 1 << 16 };

static float from_bits(uint32_t b)
{
    float f;
    memcpy(&f, &b, 4);
    return f;
}

static bool same(float a, float b) { return !memcmp(&a, &b, 4) || (isnan(a) && isnan(b)); }

static void test_expf_bits(void **state)
{
    (void)state;
    const char *all = getenv("KILN_VEXPF_ALL");
    uint64_t step = all && *all && strcmp(all, "0") ? 1 : 61, checked = 0;
    float *x = malloc(sizeof(float) * CHUNK), *in = malloc(sizeof(float) * CHUNK);
    assert_non_null(x), assert_non_null(in);
    for (uint64_t b0 = 0; b0 < (1ull << 32);) {
        int n = 0;
        for (; n < CHUNK && b0 < (1ull << 32); n++, b0 += step)
            in[n] = x[n] = from_bits((uint32_t)b0);
        kiln_expf_n(x, n - 3); /* a tail that is not a whole vector */
        kiln_expf_n(x + n - 3, 3);
        for (int i = 0; i < n; i++)
            if (!same(x[i], expf(in[i])))
                fail_msg("expf(%a): kiln %a, libm %a", (double)in[i], (double)x[i],
                         (double)expf(in[i]));
        checked += (uint64_t)n;
    }
    printf("kiln_expf_n = expf on %llu inputs\n", (unsigned long long)checked);
    free(x), free(in);
}

static void test_silu_mul_bits(void **state)
{
    (void)state;
    uint64_t s = 0x9E3779B97F4A7C15u;
    float *g = malloc(sizeof(float) * CHUNK), *g0 = malloc(sizeof(float) * CHUNK);
    float *u = malloc(sizeof(float) * CHUNK);
    assert_non_null(g), assert_non_null(g0), assert_non_null(u);
    for (int round = 0; round < 64; round++) {
        for (int i = 0; i < CHUNK; i++) {
            s ^= s << 13, s ^= s >> 7, s ^= s << 17;
            /* activations of every size a model gives, and a few extremes */
            float v = (float)((int64_t)(s % 2000001) - 1000000) / (float)(1 << (s >> 60));
            g[i] = g0[i] = i % 1000 == 7 ? from_bits((uint32_t)(s >> 32)) : v;
            u[i] = (float)((int64_t)((s >> 20) % 2001) - 1000) / 300.0f;
        }
        int n = CHUNK - round; /* tails of every length */
        kiln_silu_mul(g, u, n);
        for (int i = 0; i < n; i++) {
            float want = kiln_silu1(g0[i]) * u[i];
            if (!same(g[i], want))
                fail_msg("silu(%a) * %a: kiln %a, scalar %a", (double)g0[i], (double)u[i],
                         (double)g[i], (double)want);
        }
    }
    free(g), free(g0), free(u);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_expf_bits),
        cmocka_unit_test(test_silu_mul_bits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
