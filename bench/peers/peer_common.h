/* bench/peers/peer_common.h — what every C peer harness of bench/run_suite.sh shares:
 * arguments (M N K threads repeat warmup cold), timing, cache flushing, the JSON line
 * each result is printed as. Header-only so each peer is one `cc` line. */
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

/* Same eviction as `kiln bench --cold`: write and read every line of 256 MiB. */
static volatile float peer_sink;
static inline void peer_flush(void)
{
    static float *buf;
    const size_t n = ((size_t)256 << 20) / sizeof(float);
    if (!buf && !(buf = calloc(n, sizeof(float))))
        return;
    float s = 0;
    for (size_t i = 0; i < n; i += 16) {
        buf[i] += 1.0f;
        s += buf[i];
    }
    peer_sink += s;
}

static inline int peer_cmp(const void *x, const void *y)
{
    double a = *(const double *)x, b = *(const double *)y;
    return a < b ? -1 : a > b;
}

/* Times run(ctx) warmup + repeat times (flushing first when cold) and prints
 * {"peer": name, "dtype": dt, "median_ms", "min_ms", "max_ms"} on one line. */
static inline void peer_time(const PeerArgs *a, const char *name, const char *dt,
                      int (*run)(void *), void *ctx)
{
    double *ms = calloc((size_t)a->repeat, sizeof *ms);
    for (int i = 0; ms && i < a->warmup + a->repeat; i++) {
        if (a->cold)
            peer_flush();
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
           "\"max_ms\": %.6f}\n",
           name, dt, med, ms[0], ms[r - 1]);
    fflush(stdout);
    free(ms);
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
