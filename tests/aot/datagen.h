/* tests/aot/datagen.h — the deterministic test data that tests/aot/consumer.c feeds an
 * AOT kernel and that tests/test_aot.c feeds the reference interpreter: uniform values
 * of standard deviation sigma from a stream named by a string. Header-only so the
 * consumer (which links only libkiln_kernels.so and libkiln_rt.so) and the test share
 * one formula. */
#ifndef KILN_TESTS_AOT_DATAGEN_H
#define KILN_TESTS_AOT_DATAGEN_H

#include <stdint.h>

static inline uint64_t aot_gen_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ULL); /* splitmix64 */
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

/* x[i] uniform in [-sqrt(3) sigma, sqrt(3) sigma), seeded by FNV-1a of name. */
static inline void aot_gen_fill(float *x, int64_t n, const char *name, float sigma)
{
    uint64_t s = 1469598103934665603ULL;
    for (const char *c = name; *c; c++)
        s = (s ^ (unsigned char)*c) * 1099511628211ULL;
    for (int64_t i = 0; i < n; i++) {
        double u = (double)(aot_gen_next(&s) >> 11) * 0x1.0p-53; /* [0, 1) */
        x[i] = (float)((2.0 * u - 1.0) * 1.7320508075688772 * sigma);
    }
}

/* 1/sqrt(K) without libm, so outputs stay O(1): Newton on the reciprocal square root. */
static inline float aot_gen_weight_sigma(int64_t K)
{
    double r = 1.0;
    while (r * r * (double)K > 2.0)
        r *= 0.5;
    for (int i = 0; i < 60; i++)
        r = r * (1.5 - 0.5 * (double)K * r * r);
    return (float)r;
}

#endif
