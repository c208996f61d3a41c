/* tools/bench_probes.h — this machine's limits, measured by `kiln bench` in the same run
 * as the kernels it rates: streaming-read bandwidth and the arithmetic peaks of the
 * instructions kiln's CPU kernels are built on (docs/bench.md explains each probe). */
#ifndef KILN_BENCH_PROBES_H
#define KILN_BENCH_PROBES_H

#include <stdbool.h>
#include <stddef.h>

/* Ops are counted as 1 multiply-add = 2 ops, for floats and integers alike:
 * vfmadd231ps ymm = 8 MACs = 16 flops; vpmaddwd ymm = 16 i16 MACs = 32 ops;
 * vpmaddubsw ymm = 32 u8xs8 MACs = 64 ops;
 * vpdpbusd zmm = 64 u8xs8 MACs = 128 ops; vdpbf16ps zmm = 32 bf16 MACs = 64 ops.
 * Every figure is the median of 5 timed repeats; 0 means "not measured / n/a". */
typedef struct BenchLimits {
    int threads;           /* the thread count the *_nt figures are for */
    int ncpu;              /* cores this process may run on */
    size_t read_bytes;     /* size of the streamed buffer */
    double read_gbs_1t;    /* streaming read, one thread, GB/s (1e9 bytes) */
    double read_gbs_nt;    /* streaming read, `threads` threads */
    double read_gbs_all;   /* streaming read, ncpu threads */
    double fma_gflops;     /* vfmadd231ps ymm peak on `threads` threads, GFLOP/s */
    double madd_gops;      /* vpmaddwd + vpaddd ymm peak on `threads` threads, GOP/s */
    double maddubs_gops;   /* vpmaddubsw + vpaddw ymm peak on `threads` threads, GOP/s */
    double vnni_gops;      /* vpdpbusd zmm; 0 when the CPU has no AVX512-VNNI */
    double bf16_gflops;    /* vdpbf16ps zmm; 0 when the CPU has no AVX512-BF16 */
    bool has_avx2, has_avx512f, has_vnni, has_bf16;
    double probe_ms;       /* time budget of one probe */
} BenchLimits;

/* Runs every probe. probe_ms bounds each probe (5 repeats inside it); it also sizes
 * the streamed buffer (1 GiB from 400 ms up, never below 128 MiB = 4x a 32 MiB LLC).
 * Returns 0, or -1 when memory or threads could not be had (message on stderr). */
int bench_probe_limits(int threads, double probe_ms, BenchLimits *out);

/* Evicts the caches: reads a buffer of 256 MiB (written once when allocated on the
 * first call, freed by bench_flush_free), leaving clean lines behind. */
int bench_flush_caches(void);
void bench_flush_free(void);

double bench_now_ms(void);
double bench_median(double *v, int n); /* sorts v */

#endif
