/* tools/bench_probes.h — this machine's limits, measured by `kiln bench` in the same run
 * as the kernels it rates: streaming-read bandwidth and the arithmetic peaks of the
 * instructions kiln's CPU kernels are built on, and the cache eviction of --cold
 * (docs/bench.md explains each probe and the eviction rule). */
#ifndef KILN_BENCH_PROBES_H
#define KILN_BENCH_PROBES_H

#include <stdbool.h>
#include <stddef.h>

/* Ops are counted as 1 multiply-add = 2 ops, for floats and integers alike:
 * vfmadd231ps ymm = 8 MACs = 16 flops, zmm = 32 flops; vpmaddwd ymm = 16 i16 MACs =
 * 32 ops; vpmaddubsw ymm = 32 u8xs8 MACs = 64 ops; vpdpbusd zmm = 64 u8xs8 MACs =
 * 128 ops; vdpbf16ps zmm = 32 bf16 MACs = 64 ops.
 * Every figure is the median of 5 timed repeats; 0 means "not measured / n/a". */
typedef struct BenchLimits {
    int threads;           /* the thread count the *_nt figures are for */
    int ncpu;              /* cores this process may run on */
    size_t read_bytes;     /* size of the streamed buffer */
    const char *read_loop; /* the read loop that was fastest at `threads` ("ymm x4", ...) */
    double read_gbs_1t;    /* streaming read, one thread, GB/s (1e9 bytes) */
    double read_gbs_nt;    /* streaming read, `threads` threads */
    double read_gbs_all;   /* streaming read, ncpu threads */
    double fma_gflops;     /* vfmadd231ps ymm peak on `threads` threads, GFLOP/s */
    double fma_zmm_gflops; /* vfmadd231ps zmm; 0 when the CPU has no AVX-512F */
    double madd_gops;      /* vpmaddwd + vpaddd ymm peak on `threads` threads, GOP/s */
    double maddubs_gops;   /* vpmaddubsw + vpaddw ymm peak on `threads` threads, GOP/s */
    double vnni_gops;      /* vpdpbusd zmm; 0 when the CPU has no AVX512-VNNI */
    double bf16_gflops;    /* vdpbf16ps zmm; 0 when the CPU has no AVX512-BF16 */
    /* AMX (cpuid leaf 7 EDX bits 24 tile, 25 int8, 22 bf16). No kernel uses it yet,
     * so there is no probe: the peaks stay 0 ("present, not probed"). */
    bool has_amx_tile, has_amx_int8, has_amx_bf16;
    double amx_int8_gops, amx_bf16_gflops;
    const char *amx_note; /* why the AMX peaks were not probed (NULL: probed) */
    bool has_avx2, has_avx512f, has_vnni, has_bf16;
    double probe_ms;       /* time budget of one probe */
} BenchLimits;

/* Runs every probe. probe_ms bounds each compute probe (5 repeats inside it); it also
 * sizes the streamed buffer (1 GiB from 400 ms up, else 128 MiB; both many times a
 * last-level cache). Returns 0, or -1 when memory or threads could not be had
 * (message on stderr). */
int bench_probe_limits(int threads, double probe_ms, BenchLimits *out);

/* The peak a kernel of this layout is rated against: the family in the layout name
 * picks the instruction, the ISA prefix its width (avx512-* -> zmm, avx2-* -> ymm).
 * *insn names it ("vfmadd231ps zmm"), *family is the short name ("fma", "vpdpbusd"). */
double bench_kernel_peak(const BenchLimits *l, const char *layout, const char **family,
                         const char **insn);

/* How much --cold reads to evict the caches, and why (docs/bench.md, "cold runs"):
 * max(256 MiB, 4 x the last-level cache the process's CPUs share, summed over the
 * distinct instances sysfs reports), at most a quarter of MemAvailable; the
 * environment variable KILN_BENCH_EVICT_BYTES (bytes) overrides the rule, so that
 * bench/run_suite.sh hands kiln and every peer the same size. */
typedef struct BenchEviction {
    size_t bytes;         /* what bench_flush_caches reads */
    size_t llc_bytes;     /* the last-level cache found (0 = sysfs had none) */
    int llc_level;        /* its level (3 on most x86), 0 when none */
    size_t mem_available; /* MemAvailable when decided (0 = unknown) */
    const char *source;   /* "rule", "rule, capped by MemAvailable/4" or "KILN_BENCH_EVICT_BYTES" */
} BenchEviction;

/* Decided once per process (later calls return the same). Never NULL. */
const BenchEviction *bench_eviction(void);

/* Evicts the caches: reads every cache line of a bench_eviction()->bytes buffer
 * (written once when allocated on the first call, freed by bench_flush_free),
 * leaving clean lines behind. Returns -1 when the buffer cannot be allocated. */
int bench_flush_caches(void);
void bench_flush_free(void);

double bench_median(double *v, int n); /* sorts v */

#endif
