/* bench/peers/peer_common.h — what every C peer harness of bench/run_suite.sh shares:
 * arguments (M N K threads repeat warmup cold), timing, the cache eviction of
 * `kiln bench --cold` (same size, same loop), the JSON line each result is printed as.
 * Header-only so each peer is one `cc` line. */
#ifndef KILN_PEER_COMMON_H
#define KILN_PEER_COMMON_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct PeerArgs {
    long M, N, K;
    int threads, repeat, warmup, cold;
} PeerArgs;

static inline int peer_args(int argc, char **argv, PeerArgs *a)
{
    if (argc != 8) {
        fprintf(stderr, "usage: %s M N K THREADS REPEAT WARMUP COLD(0|1)\n", argv[0]);
        return -1;
    }
    a->M = atol(argv[1]), a->N = atol(argv[2]), a->K = atol(argv[3]);
    a->threads = atoi(argv[4]), a->repeat = atoi(argv[5]), a->warmup = atoi(argv[6]);
    a->cold = atoi(argv[7]);
    return a->M > 0 && a->N > 0 && a->K > 0 && a->threads > 0 && a->repeat > 0 ? 0 : -1;
}

static inline double peer_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
}

/* The eviction size: bench/run_suite.sh passes kiln's (KILN_BENCH_EVICT_BYTES, the
 * rule in docs/bench.md); a peer run alone falls back to 256 MiB. */
static inline size_t peer_evict_bytes(void)
{
    const char *s = getenv("KILN_BENCH_EVICT_BYTES");
    unsigned long long v = s ? strtoull(s, NULL, 10) : 0;
    return v >= (1u << 20) ? (size_t)v : (size_t)256 << 20;
}

/* Same eviction as `kiln bench --cold` (tools/bench_probes.c): read every cache line
 * of a buffer written once, leaving clean lines behind. */
static volatile unsigned peer_sink;
static unsigned char *peer_flush_buf;
static inline int peer_flush(void)
{
    size_t n = peer_evict_bytes();
    if (!peer_flush_buf) {
        if (!(peer_flush_buf = malloc(n)))
            return -1;
        memset(peer_flush_buf, 1, n); /* real pages, not the shared zero page */
    }
    unsigned s = 0;
    for (size_t i = 0; i < n; i += 64)
        s += peer_flush_buf[i];
    peer_sink += s;
    return 0;
}

static inline int peer_cmp(const void *x, const void *y)
{
    double a = *(const double *)x, b = *(const double *)y;
    return a < b ? -1 : a > b;
}

/* Times run(ctx) warmup + repeat times (evicting first when cold) and prints
 * {"peer": name, "dtype": dt, "median_ms", "min_ms", "max_ms", "evict_bytes"} on one
 * line (evict_bytes 0 when warm), then `extra` (more "key": value pairs, or NULL). */
static inline void peer_time_ex(const PeerArgs *a, const char *name, const char *dt,
                                const char *extra, int (*run)(void *), void *ctx)
{
    double *ms = calloc((size_t)a->repeat, sizeof *ms);
    for (int i = 0; ms && i < a->warmup + a->repeat; i++) {
        if (a->cold && peer_flush()) {
            printf("{\"peer\": \"%s\", \"dtype\": \"%s\", \"error\": \"no memory for the "
                   "eviction buffer\"}\n", name, dt);
            free(ms);
            return;
        }
        double t0 = peer_now_ms();
        if (run(ctx)) {
            printf("{\"peer\": \"%s\", \"dtype\": \"%s\", \"error\": \"run failed\"}\n", name, dt);
            free(ms);
            return;
        }
        if (i >= a->warmup)
            ms[i - a->warmup] = peer_now_ms() - t0;
    }
    if (!ms)
        return;
    qsort(ms, (size_t)a->repeat, sizeof *ms, peer_cmp);
    int r = a->repeat;
    double med = r % 2 ? ms[r / 2] : 0.5 * (ms[r / 2 - 1] + ms[r / 2]);
    printf("{\"peer\": \"%s\", \"dtype\": \"%s\", \"median_ms\": %.6f, \"min_ms\": %.6f, "
           "\"max_ms\": %.6f, \"evict_bytes\": %zu%s%s}\n",
           name, dt, med, ms[0], ms[r - 1], a->cold ? peer_evict_bytes() : 0,
           extra ? ", " : "", extra ? extra : "");
    fflush(stdout);
    free(ms);
}

static inline void peer_time(const PeerArgs *a, const char *name, const char *dt,
                             int (*run)(void *), void *ctx)
{
    peer_time_ex(a, name, dt, NULL, run, ctx);
}

static inline void peer_fill(float *x, size_t n, uint32_t seed, float scale)
{
    uint32_t s = seed * 2654435761u + 1;
    for (size_t i = 0; i < n; i++) {
        s = s * 1664525u + 1013904223u;
        x[i] = scale * ((float)(s >> 8) * 0x1p-24f - 0.5f);
    }
}

#endif
