/* tools/bench_probes.c — machine-limit probes for `kiln bench`: streaming read bandwidth
 * and the peaks of FMA (ymm and zmm), vpmaddwd, vpmaddubsw and (when present) VNNI and
 * BF16, on 1..T threads, in functions compiled for their own ISA so the tool itself
 * still runs on any x86-64; the AMX presence report; the cache eviction of --cold. */
#include "bench_probes.h"

#include "runtime/runtime.h"

#include <cpuid.h>
#include <immintrin.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Results land here so the compiler must compute them. */
static volatile double probe_sink;

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

double bench_median(double *v, int n)
{
    if (n <= 0)
        return 0;
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* ------------------------------------------------------------------ threads */

typedef struct ProbeJob {
    void (*fn)(struct ProbeJob *);
    const float *buf; /* read: this thread's slice */
    size_t n;         /* read: floats in the slice, a multiple of 64 */
    long iters;       /* compute: loop trips */
    double result;
} ProbeJob;

static void *job_main(void *p)
{
    ProbeJob *j = p;
    j->fn(j);
    return NULL;
}

/* Runs jobs[0..T) concurrently (job 0 on the caller) and returns the wall time in ms,
 * or -1 when a thread could not be started. */
static double run_jobs(ProbeJob *jobs, int T)
{
    pthread_t th[64];
    int started = 0;
    double t0 = kiln_now_ms();
    for (int i = 1; i < T; i++) {
        if (pthread_create(&th[i], NULL, job_main, &jobs[i]))
            break;
        started++;
    }
    jobs[0].fn(&jobs[0]);
    for (int i = 1; i <= started; i++)
        pthread_join(th[i], NULL);
    double dt = kiln_now_ms() - t0;
    for (int i = 0; i < T; i++)
        probe_sink += jobs[i].result;
    return started == T - 1 ? dt : -1;
}

/* ------------------------------------------------------------------ read loops */

/* Three simple loops over the slice; which one streams fastest depends on the core
 * (on Zen 4 under 4 KiB pages the ymm loop and the scalar one tie and zmm loads are
 * ~10% slower; docs/bench.md has the figures), so the probe times each and keeps the
 * best: the limit is what the best simple read loop reaches. */
__attribute__((target("avx2"))) static void read_ymm(ProbeJob *j)
{
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    const float *p = j->buf;
    for (size_t i = 0; i < j->n; i += 32) {
        a0 = _mm256_add_ps(a0, _mm256_load_ps(p + i));
        a1 = _mm256_add_ps(a1, _mm256_load_ps(p + i + 8));
        a2 = _mm256_add_ps(a2, _mm256_load_ps(p + i + 16));
        a3 = _mm256_add_ps(a3, _mm256_load_ps(p + i + 24));
    }
    __m256 s = _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3));
    float v[8];
    _mm256_storeu_ps(v, s);
    j->result = v[0] + v[1] + v[2] + v[3] + v[4] + v[5] + v[6] + v[7];
}

/* One load per cache line. */
__attribute__((target("avx512f"))) static void read_zmm(ProbeJob *j)
{
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    const float *p = j->buf;
    for (size_t i = 0; i < j->n; i += 64) {
        a0 = _mm512_add_ps(a0, _mm512_load_ps(p + i));
        a1 = _mm512_add_ps(a1, _mm512_load_ps(p + i + 16));
        a2 = _mm512_add_ps(a2, _mm512_load_ps(p + i + 32));
        a3 = _mm512_add_ps(a3, _mm512_load_ps(p + i + 48));
    }
    j->result = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
}

/* The plain sum a C compiler makes of `s += a[i]` over 64-bit integers at -O2. */
static void read_scalar(ProbeJob *j)
{
    const uint64_t *q = (const uint64_t *)(const void *)j->buf;
    uint64_t s = 0;
    for (size_t i = 0; i < j->n / 2; i++)
        s += q[i];
    j->result = (double)s;
}

typedef struct ReadLoop {
    const char *name;
    void (*fn)(ProbeJob *);
    bool needs_avx512;
} ReadLoop;

static const ReadLoop read_loops[] = {
    {"ymm x4", read_ymm, false},
    {"zmm x4", read_zmm, true},
    {"scalar u64", read_scalar, false},
};
#define N_READ_LOOPS (int)(sizeof read_loops / sizeof read_loops[0])

/* ------------------------------------------------------------------ compute kernels */

/* The peaks are written in asm: with intrinsics GCC spills some of 12 ymm accumulators
 * at -O2 (the probe then measured store forwarding), and for the zmm chains it copied
 * every accumulator through a second register each trip, two vmovdqa per vpdpbusd,
 * which compete for the same ports on Intel. Only the instruction under test is in
 * the loop body, besides the loop counter. */
#define ZERO16                                                                          \
    "vpxor %%ymm0,%%ymm0,%%ymm0\n\tvmovdqa %%ymm0,%%ymm1\n\tvmovdqa %%ymm0,%%ymm2\n\t" \
    "vmovdqa %%ymm0,%%ymm3\n\tvmovdqa %%ymm0,%%ymm4\n\tvmovdqa %%ymm0,%%ymm5\n\t"     \
    "vmovdqa %%ymm0,%%ymm6\n\tvmovdqa %%ymm0,%%ymm7\n\tvmovdqa %%ymm0,%%ymm8\n\t"     \
    "vmovdqa %%ymm0,%%ymm9\n\tvmovdqa %%ymm0,%%ymm10\n\tvmovdqa %%ymm0,%%ymm11\n\t"   \
    "vmovdqa %%ymm0,%%ymm12\n\tvmovdqa %%ymm0,%%ymm13\n\tvmovdqa %%ymm0,%%ymm14\n\t"  \
    "vmovdqa %%ymm0,%%ymm15\n\t"
#define YMM_CLOBBERS                                                                    \
    "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9",      \
        "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15"
/* Counts n down to 0 around the body that starts at label 1. */
#define ASM_LOOP_END(n) "dec %0\n\tjnz 1b\n\tvzeroupper" : "+r"(n) : : "cc", YMM_CLOBBERS

/* 12 independent vfmadd231ps ymm chains (latency 4-5 x 2 pipes needs >= 10). */
#define FMA_ITER_OPS (12 * 16)
__attribute__((target("avx2,fma"))) static void fma_kernel(ProbeJob *j)
{
    long n = j->iters;
    if (n <= 0)
        return;
    __asm__ volatile(ZERO16 "1:\n\t"
                     "vfmadd231ps %%ymm15,%%ymm14,%%ymm0\n\t"
                     "vfmadd231ps %%ymm15,%%ymm14,%%ymm1\n\t"
                     "vfmadd231ps %%ymm15,%%ymm14,%%ymm2\n\t"
                     "vfmadd231ps %%ymm15,%%ymm14,%%ymm3\n\t"
                     "vfmadd231ps %%ymm15,%%ymm14,%%ymm4\n\t"
                     "vfmadd231ps %%ymm15,%%ymm14,%%ymm5\n\t"
                     "vfmadd231ps %%ymm15,%%ymm14,%%ymm6\n\t"
                     "vfmadd231ps %%ymm15,%%ymm14,%%ymm7\n\t"
                     "vfmadd231ps %%ymm15,%%ymm14,%%ymm8\n\t"
                     "vfmadd231ps %%ymm15,%%ymm14,%%ymm9\n\t"
                     "vfmadd231ps %%ymm15,%%ymm14,%%ymm10\n\t"
                     "vfmadd231ps %%ymm15,%%ymm14,%%ymm11\n\t"
                     ASM_LOOP_END(n));
    j->result = 1;
}

/* A multiply into a temporary, an add of it into one of 10 accumulators, ten times a
 * loop: the pair kiln's avx2 integer kernels issue (vpmaddwd + vpaddd per 16 i16
 * MACs; vpmaddubsw + vpaddw per 32 u8xs8 MACs in the int4 x int8 kernels, whose one
 * widening vpmaddwd per 8 such pairs is left out: the peak is the pair's). */
#define PAIR_STEP(mul, add, acc, tmp)                                                   \
    mul " %%ymm15,%%ymm14,%%ymm" #tmp "\n\t" add " %%ymm" #tmp ",%%ymm" #acc ",%%ymm" #acc "\n\t"
#define PAIR_LOOP(mul, add)                                                             \
    PAIR_STEP(mul, add, 0, 10) PAIR_STEP(mul, add, 1, 11) PAIR_STEP(mul, add, 2, 12)     \
    PAIR_STEP(mul, add, 3, 13) PAIR_STEP(mul, add, 4, 10) PAIR_STEP(mul, add, 5, 11)     \
    PAIR_STEP(mul, add, 6, 12) PAIR_STEP(mul, add, 7, 13) PAIR_STEP(mul, add, 8, 10)     \
    PAIR_STEP(mul, add, 9, 11)
#define MADD_ITER_OPS (10 * 32)
#define MADDUBS_ITER_OPS (10 * 64)
__attribute__((target("avx2"))) static void madd_kernel(ProbeJob *j)
{
    long n = j->iters;
    if (n <= 0)
        return;
    __asm__ volatile(ZERO16 "1:\n\t" PAIR_LOOP("vpmaddwd", "vpaddd") ASM_LOOP_END(n));
    j->result = 1;
}

__attribute__((target("avx2"))) static void maddubs_kernel(ProbeJob *j)
{
    long n = j->iters;
    if (n <= 0)
        return;
    __asm__ volatile(ZERO16 "1:\n\t" PAIR_LOOP("vpmaddubsw", "vpaddw") ASM_LOOP_END(n));
    j->result = 1;
}

/* The AVX-512 peaks: 24 independent chains in zmm0..23 from the sources zmm30, zmm31
 * (all zero: no subnormal operands). 24 covers latency x pipes on every core we know
 * (FMA 4 x 2; vpdpbusd 5 x 2 and vdpbf16ps up to 6 x 2 on Intel and Zen 4) with room. */
#define CHAINS24(S)                                                                     \
    S(0) S(1) S(2) S(3) S(4) S(5) S(6) S(7) S(8) S(9) S(10) S(11) S(12) S(13) S(14)     \
    S(15) S(16) S(17) S(18) S(19) S(20) S(21) S(22) S(23)
#define ZMM_ZERO(i) "vpxord %%zmm" #i ",%%zmm" #i ",%%zmm" #i "\n\t"
#define ZMM_CLOBBERS                                                                    \
    "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9",      \
        "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15", "xmm16", "xmm17", "xmm18", \
        "xmm19", "xmm20", "xmm21", "xmm22", "xmm23", "xmm30", "xmm31"
#define ZMM_PEAK_LOOP(n, STEP)                                                          \
    __asm__ volatile(CHAINS24(ZMM_ZERO) ZMM_ZERO(30) ZMM_ZERO(31) "1:\n\t" CHAINS24(STEP) \
                     "dec %0\n\tjnz 1b\n\tvzeroupper"                                    \
                     : "+r"(n)                                                           \
                     :                                                                   \
                     : "cc", ZMM_CLOBBERS)
#define FMA_ZMM(i) "vfmadd231ps %%zmm31,%%zmm30,%%zmm" #i "\n\t"
#define VNNI_ZMM(i) "vpdpbusd %%zmm31,%%zmm30,%%zmm" #i "\n\t"
#define BF16_ZMM(i) "vdpbf16ps %%zmm31,%%zmm30,%%zmm" #i "\n\t"
#define FMA_ZMM_ITER_OPS (24 * 32)
#define VNNI_ITER_OPS (24 * 128)
#define BF16_ITER_OPS (24 * 64)

__attribute__((target("avx512f"))) static void fma_zmm_kernel(ProbeJob *j)
{
    long n = j->iters;
    if (n > 0)
        ZMM_PEAK_LOOP(n, FMA_ZMM);
    j->result = 1;
}

__attribute__((target("avx512f,avx512vnni"))) static void vnni_kernel(ProbeJob *j)
{
    long n = j->iters;
    if (n > 0)
        ZMM_PEAK_LOOP(n, VNNI_ZMM);
    j->result = 1;
}

__attribute__((target("avx512f,avx512bf16"))) static void bf16_kernel(ProbeJob *j)
{
    long n = j->iters;
    if (n > 0)
        ZMM_PEAK_LOOP(n, BF16_ZMM);
    j->result = 1;
}

/* The AMX peaks: per trip 4 tile dot products into the accumulators tmm0..3 from
 * the A tiles tmm4, tmm5 and the B tiles tmm6, tmm7 (every tile 16 rows x 64 bytes,
 * all zero: the tile units' speed does not depend on values), the 2 x 2 blocking a
 * kernel uses. tdpbusd: 16 x 16 outputs x 64 byte products = 16,384 multiply-adds
 * (32,768 ops); tdpbf16ps: 16 x 16 x 32 bf16 products (16,384 flops). The process
 * must have asked for tile state first (kiln_host_amx_enable). */
#define AMX_PEAK_LOOP(n, INSN)                                                          \
    do {                                                                                \
        unsigned char cfg[64] __attribute__((aligned(64))) = {1};                       \
        for (int t = 0; t < 8; t++)                                                     \
            cfg[16 + 2 * t] = 64, cfg[48 + t] = 16;                                     \
        __asm__ volatile("ldtilecfg %1\n\t"                                              \
                         "tilezero %%tmm0\n\ttilezero %%tmm1\n\ttilezero %%tmm2\n\t"       \
                         "tilezero %%tmm3\n\ttilezero %%tmm4\n\ttilezero %%tmm5\n\t"       \
                         "tilezero %%tmm6\n\ttilezero %%tmm7\n\t"                         \
                         "1:\n\t" INSN " %%tmm6, %%tmm4, %%tmm0\n\t"                   \
                         INSN " %%tmm7, %%tmm4, %%tmm1\n\t"                             \
                         INSN " %%tmm6, %%tmm5, %%tmm2\n\t"                             \
                         INSN " %%tmm7, %%tmm5, %%tmm3\n\t"                             \
                         "dec %0\n\tjnz 1b\n\ttilerelease"                                   \
                         : "+r"(n)                                                      \
                         : "m"(cfg)                                                     \
                         : "cc", "memory");                                             \
    } while (0)
#define AMX_INT8_ITER_OPS (4 * 16 * 16 * 64 * 2)
#define AMX_BF16_ITER_OPS (4 * 16 * 16 * 32 * 2)

static void amx_int8_kernel(ProbeJob *j)
{
    long n = j->iters;
    if (n > 0)
        AMX_PEAK_LOOP(n, "tdpbusd");
    j->result = 1;
}

static void amx_bf16_kernel(ProbeJob *j)
{
    long n = j->iters;
    if (n > 0)
        AMX_PEAK_LOOP(n, "tdpbf16ps");
    j->result = 1;
}

/* ------------------------------------------------------------------ probes */

static double read_once(const ReadLoop *rl, const float *buf, size_t per, int T)
{
    ProbeJob jobs[64];
    for (int i = 0; i < T; i++)
        jobs[i] = (ProbeJob){.fn = rl->fn, .buf = buf + per * (size_t)i, .n = per};
    double ms = run_jobs(jobs, T);
    return ms > 0 ? (double)(per * (size_t)T * sizeof(float)) / (ms * 1e6) : 0;
}

/* GB/s of reading buf[0, n) split over T threads: every loop the CPU has, 5 repeats
 * taken in turns (so drift hits them alike), the best loop's median. */
static double probe_read(const float *buf, size_t n, int T, bool avx512, const char **loop)
{
    double gbs[N_READ_LOOPS][5], best = 0;
    size_t per = (n / (size_t)T) & ~(size_t)63;
    for (int r = 0; r < 5; r++)
        for (int k = 0; k < N_READ_LOOPS; k++)
            gbs[k][r] = read_loops[k].needs_avx512 && !avx512
                            ? 0
                            : read_once(&read_loops[k], buf, per, T);
    for (int k = 0; k < N_READ_LOOPS; k++) {
        double m = bench_median(gbs[k], 5);
        if (m > best) {
            best = m;
            if (loop)
                *loop = read_loops[k].name;
        }
    }
    return best;
}

/* Median G(op)/s of a compute kernel on T threads; ops_per_iter per thread per trip.
 * The trip count is set from a short calibration run so 5 repeats fit in probe_ms. */
static double probe_compute(void (*fn)(ProbeJob *), double ops_per_iter, int T,
                            double probe_ms)
{
    ProbeJob jobs[64];
    long iters = 20000;
    for (;;) { /* grow until a run takes >= 2 ms so the timer is not the limit */
        for (int i = 0; i < T; i++)
            jobs[i] = (ProbeJob){.fn = fn, .iters = iters};
        double ms = run_jobs(jobs, T);
        if (ms < 0)
            return 0;
        if (ms >= 2 || iters > (1L << 40))
            break;
        iters *= 4;
    }
    {
        double ms = run_jobs(jobs, T);
        double want = probe_ms / 6;
        if (ms > 0 && want > ms)
            iters = (long)((double)iters * want / ms);
    }
    double g[5];
    for (int r = 0; r < 5; r++) {
        for (int i = 0; i < T; i++)
            jobs[i] = (ProbeJob){.fn = fn, .iters = iters};
        double ms = run_jobs(jobs, T);
        if (ms <= 0)
            return 0;
        g[r] = ops_per_iter * (double)iters * T / (ms * 1e6);
    }
    return bench_median(g, 5);
}

static int ncpu_allowed(void)
{
    cpu_set_t s;
    if (sched_getaffinity(0, sizeof s, &s))
        return 1;
    int n = CPU_COUNT(&s);
    return n < 1 ? 1 : n > 64 ? 64 : n;
}

/* AMX from cpuid leaf 7, sub-leaf 0, EDX: bit 22 AMX-BF16, 24 AMX-TILE, 25 AMX-INT8.
 * (Using the tiles also needs the kernel's permission, arch_prctl(ARCH_REQ_XCOMP_PERM).) */
static void detect_isa(BenchLimits *l)
{
    __builtin_cpu_init();
    l->has_avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    l->has_avx512f = __builtin_cpu_supports("avx512f");
    l->has_vnni = l->has_avx512f && __builtin_cpu_supports("avx512vnni");
    l->has_bf16 = l->has_avx512f && __builtin_cpu_supports("avx512bf16");
    unsigned a, b, c, d;
    if (__get_cpuid_count(7, 0, &a, &b, &c, &d)) {
        l->has_amx_bf16 = (d >> 22) & 1;
        l->has_amx_tile = (d >> 24) & 1;
        l->has_amx_int8 = (d >> 25) & 1;
    }
}

/* The streamed buffer is allocated as kiln allocates prepacked weights
 * (kiln_rt_alloc_weights: 2 MiB aligned, advised as transparent huge pages), so the
 * limit is what a kernel reading kiln's weights could reach: on this project's Zen 4
 * VM huge pages read ~40% faster than 4 KiB pages (the prefetchers stop at page
 * boundaries, and every page costs a nested page walk). */
static int probe_bandwidth(BenchLimits *out)
{
    size_t bytes = out->probe_ms >= 400 ? (size_t)1 << 30 : (size_t)128 << 20;
    float *buf = kiln_rt_alloc_weights(bytes);
    if (!buf) {
        fprintf(stderr, "kiln bench: cannot allocate %zu MiB for the bandwidth probe\n",
                bytes >> 20);
        return -1;
    }
    size_t n = bytes / sizeof(float);
    for (size_t i = 0; i < n; i++) /* real pages, not the shared zero page */
        buf[i] = (float)(i & 1023);
    ProbeJob warm = {.buf = buf, .n = n & ~(size_t)63};
    read_ymm(&warm); /* fault in TLBs and settle the clock */
    probe_sink += warm.result;
    bool z = out->has_avx512f;
    const char *loop1 = NULL;
    out->read_bytes = bytes;
    out->read_gbs_1t = probe_read(buf, n, 1, z, &loop1);
    out->read_loop = loop1;
    if (out->threads > 1)
        out->read_gbs_nt = probe_read(buf, n, out->threads, z, &out->read_loop);
    else
        out->read_gbs_nt = out->read_gbs_1t;
    out->read_gbs_all = out->ncpu == 1             ? out->read_gbs_1t
                        : out->ncpu == out->threads ? out->read_gbs_nt
                                                    : probe_read(buf, n, out->ncpu, z, NULL);
    kiln_rt_free(buf);
    return 0;
}

int bench_probe_limits(int threads, double probe_ms, BenchLimits *out)
{
    memset(out, 0, sizeof *out);
    detect_isa(out);
    out->ncpu = ncpu_allowed();
    out->threads = threads < 1 ? 1 : threads > 64 ? 64 : threads;
    out->probe_ms = probe_ms;
    if (!out->has_avx2) {
        fprintf(stderr, "kiln bench: this CPU has no AVX2+FMA; the probes need them\n");
        return -1;
    }
    if (probe_bandwidth(out))
        return -1;
    int T = out->threads;
    out->fma_gflops = probe_compute(fma_kernel, FMA_ITER_OPS, T, probe_ms);
    out->madd_gops = probe_compute(madd_kernel, MADD_ITER_OPS, T, probe_ms);
    out->maddubs_gops = probe_compute(maddubs_kernel, MADDUBS_ITER_OPS, T, probe_ms);
    if (out->has_avx512f)
        out->fma_zmm_gflops = probe_compute(fma_zmm_kernel, FMA_ZMM_ITER_OPS, T, probe_ms);
    if (out->has_vnni)
        out->vnni_gops = probe_compute(vnni_kernel, VNNI_ITER_OPS, T, probe_ms);
    if (out->has_bf16)
        out->bf16_gflops = probe_compute(bf16_kernel, BF16_ITER_OPS, T, probe_ms);
    /* AMX: only where the CPU has it and the OS grants tile state (else 0, and the
     * reports say why: amx_note) */
    KilnDiag ad = {0};
    if (!out->has_amx_tile)
        out->amx_note = "no AMX on this CPU";
    else if (kiln_host_amx_enable(&ad))
        out->amx_note = "the OS refused AMX tile state (arch_prctl ARCH_REQ_XCOMP_PERM)";
    if (out->has_amx_tile && !out->amx_note && out->has_amx_int8)
        out->amx_int8_gops = probe_compute(amx_int8_kernel, AMX_INT8_ITER_OPS, T, probe_ms);
    if (out->has_amx_tile && !out->amx_note && out->has_amx_bf16)
        out->amx_bf16_gflops = probe_compute(amx_bf16_kernel, AMX_BF16_ITER_OPS, T, probe_ms);
    return out->read_gbs_1t > 0 && out->fma_gflops > 0 && out->madd_gops > 0 ? 0 : -1;
}

double bench_kernel_peak(const BenchLimits *l, const char *layout, const char **family,
                         const char **insn)
{
    bool zmm = strncmp(layout, "avx512", 6) == 0 || strncmp(layout, "amx", 3) == 0;
    const char *f = "fma", *i = zmm ? "vfmadd231ps zmm" : "vfmadd231ps ymm";
    double p = zmm ? l->fma_zmm_gflops : l->fma_gflops;
    /* the family follows the level prefix ("avx512vnni-f32-fma" is FMA) */
    const char *dash = strchr(layout, '-'), *fam = dash ? dash + 1 : layout;
    if (strstr(fam, "i16-madd"))
        f = "vpmaddwd", i = "vpmaddwd+vpaddd ymm", p = l->madd_gops;
    else if (strstr(fam, "maddubs"))
        f = "vpmaddubsw", i = "vpmaddubsw+vpaddw ymm", p = l->maddubs_gops;
    else if (strstr(fam, "u8s8-tile"))
        f = "tdpbusd", i = "tdpbusd tiles (AMX)", p = l->amx_int8_gops;
    else if (strstr(fam, "bf16-tile"))
        f = "tdpbf16ps", i = "tdpbf16ps tiles (AMX)", p = l->amx_bf16_gflops;
    else if (strstr(fam, "vnni"))
        f = "vpdpbusd", i = "vpdpbusd zmm", p = l->vnni_gops;
    else if (strstr(fam, "bf16"))
        f = "vdpbf16ps", i = "vdpbf16ps zmm", p = l->bf16_gflops;
    *family = f;
    *insn = i;
    return p;
}

/* ------------------------------------------------------------------ cache eviction */

static int read_text(const char *path, char *buf, size_t n)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t got = fread(buf, 1, n - 1, f);
    fclose(f);
    buf[got] = 0;
    return got ? 0 : -1;
}

/* sysfs cache sizes read "32768K" (or "1M"). */
static size_t parse_cache_size(const char *s)
{
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    size_t unit = *end == 'K' ? 1024 : *end == 'M' ? 1024 * 1024 : *end == 'G' ? 1024u << 20 : 1;
    return (size_t)v * unit;
}

/* The highest cache level sysfs reports for one CPU: its level, size and the first
 * CPU of its shared_cpu_list (which names the instance). 0 when there is none. */
static int cpu_llc(int cpu, size_t *bytes, int *first_sharer)
{
    int best = 0;
    for (int idx = 0; idx < 16; idx++) {
        char path[128], text[256];
        snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu%d/cache/index%d/level", cpu, idx);
        if (read_text(path, text, sizeof text))
            break;
        int level = atoi(text);
        snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu%d/cache/index%d/size", cpu, idx);
        if (level <= best || read_text(path, text, sizeof text))
            continue;
        best = level;
        *bytes = parse_cache_size(text);
        snprintf(path, sizeof path,
                 "/sys/devices/system/cpu/cpu%d/cache/index%d/shared_cpu_list", cpu, idx);
        *first_sharer = read_text(path, text, sizeof text) ? cpu : atoi(text);
    }
    return best;
}

/* The last-level cache the CPUs this process may run on can fill: the sum over its
 * distinct instances (two sockets' L3s hold twice what one does). */
static size_t llc_of_allowed_cpus(int *level)
{
    cpu_set_t allowed, seen;
    CPU_ZERO(&seen);
    if (sched_getaffinity(0, sizeof allowed, &allowed))
        return 0;
    size_t total = 0;
    *level = 0;
    for (int cpu = 0; cpu < CPU_SETSIZE; cpu++) {
        size_t bytes = 0;
        int first = cpu, lv;
        if (!CPU_ISSET(cpu, &allowed) || !(lv = cpu_llc(cpu, &bytes, &first)))
            continue;
        if (lv > *level) { /* a deeper level than seen so far: count only that one */
            *level = lv, total = 0;
            CPU_ZERO(&seen);
        }
        if (lv == *level && first >= 0 && first < CPU_SETSIZE && !CPU_ISSET(first, &seen)) {
            CPU_SET(first, &seen);
            total += bytes;
        }
    }
    return total;
}

static size_t mem_available(void)
{
    FILE *f = fopen("/proc/meminfo", "r");
    char line[256];
    unsigned long long kb = 0;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "MemAvailable: %llu kB", &kb) == 1)
            break;
    if (f)
        fclose(f);
    return (size_t)kb * 1024;
}

#define EVICT_MIN ((size_t)256 << 20)
#define EVICT_LLC_MULTIPLE 4
static BenchEviction eviction;
static pthread_once_t eviction_once = PTHREAD_ONCE_INIT;

/* Reading 4x the cache leaves next to nothing of what was there even where the
 * replacement policy is not LRU (Intel's adaptive policies keep part of a working set
 * that a 2x sweep would evict under LRU); 256 MiB is the floor the suite used
 * before, and a quarter of MemAvailable the most a benchmark may take. */
static void decide_eviction(void)
{
    BenchEviction *e = &eviction;
    e->llc_bytes = llc_of_allowed_cpus(&e->llc_level);
    e->mem_available = mem_available();
    size_t want = EVICT_LLC_MULTIPLE * e->llc_bytes;
    e->bytes = want > EVICT_MIN ? want : EVICT_MIN;
    e->source = "rule";
    if (e->mem_available && e->bytes > e->mem_available / 4) {
        e->bytes = e->mem_available / 4;
        e->source = "rule, capped by MemAvailable/4";
    }
    const char *env = getenv("KILN_BENCH_EVICT_BYTES");
    if (env && *env) {
        char *end;
        unsigned long long v = strtoull(env, &end, 10);
        if (*end || env[0] < '0' || env[0] > '9' || v < ((size_t)1 << 20) ||
            v > ((size_t)1 << 36))
            fprintf(stderr, "kiln bench: KILN_BENCH_EVICT_BYTES=%s ignored (want bytes, from "
                            "1 MiB to 64 GiB)\n", env);
        else
            e->bytes = (size_t)v, e->source = "KILN_BENCH_EVICT_BYTES";
    }
    e->bytes &= ~(size_t)4095;
}

const BenchEviction *bench_eviction(void)
{
    pthread_once(&eviction_once, decide_eviction);
    return &eviction;
}

static unsigned char *flush_buf;
static size_t flush_bytes;

int bench_flush_caches(void)
{
    if (!flush_buf) {
        flush_bytes = bench_eviction()->bytes;
        flush_buf = aligned_alloc(4096, flush_bytes);
        if (!flush_buf)
            return -1;
        memset(flush_buf, 1, flush_bytes); /* real pages, not the shared zero page */
    }
    /* Reading every line of the buffer pushes everything else out of every level the
     * reading core fills and leaves the caches full of clean lines, as a decode step
     * finds them after the other layers' (read-only) weights: the timed run pays for
     * its reads only. (A flush by writes would leave dirty lines whose write-back the
     * timed run would pay for as well, ~2x the bytes.) */
    unsigned s = 0;
    for (size_t i = 0; i < flush_bytes; i += 64)
        s += flush_buf[i];
    probe_sink += s;
    return 0;
}

void bench_flush_free(void)
{
    free(flush_buf);
    flush_buf = NULL;
}
