/* tools/bench_probes.c — machine-limit probes for `kiln bench`: streaming read bandwidth
 * and FMA / vpmaddwd / (when present) VNNI and BF16 peaks, each on 1..T threads,
 * written with intrinsics in functions compiled for their own ISA so the tool itself
 * still runs on any x86-64. */
#include "bench_probes.h"

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

double bench_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
}

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
    size_t n;         /* read: floats in the slice */
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
    double t0 = bench_now_ms();
    for (int i = 1; i < T; i++) {
        if (pthread_create(&th[i], NULL, job_main, &jobs[i]))
            break;
        started++;
    }
    jobs[0].fn(&jobs[0]);
    for (int i = 1; i <= started; i++)
        pthread_join(th[i], NULL);
    double dt = bench_now_ms() - t0;
    for (int i = 0; i < T; i++)
        probe_sink += jobs[i].result;
    return started == T - 1 ? dt : -1;
}

/* ------------------------------------------------------------------ kernels */

__attribute__((target("avx2,fma"))) static void read_kernel(ProbeJob *j)
{
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    const float *p = j->buf;
    size_t n = j->n & ~(size_t)31;
    for (size_t i = 0; i < n; i += 32) {
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

/* The two AVX2 peaks are written in asm: with intrinsics GCC spills some of the
 * accumulators to the stack at -O2, and the probe then measures store forwarding.
 * Only the instruction under test is in the loop body, besides the loop counter. */
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

/* 12 independent vfmadd231ps chains (latency 4-5 x 2 pipes needs >= 10). */
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

/* 12 independent chains for the AVX-512 probes (32 zmm registers: no spills). */
#define CHAINS(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11)

__attribute__((target("avx512f,avx512vnni"))) static void vnni_kernel(ProbeJob *j)
{
    __m512i a = _mm512_set1_epi8(3), b = _mm512_set1_epi8(-2);
#define DECL(i) __m512i v##i = _mm512_set1_epi32(i);
#define STEP(i) v##i = _mm512_dpbusd_epi32(v##i, a, b);
#define SUM(i) s = _mm512_add_epi32(s, v##i);
    CHAINS(DECL)
    for (long it = 0; it < j->iters; it++) {
        CHAINS(STEP)
    }
    __m512i s = _mm512_setzero_si512();
    CHAINS(SUM)
    j->result = (double)_mm512_reduce_add_epi32(s);
#undef DECL
#undef STEP
#undef SUM
}

__attribute__((target("avx512f,avx512bf16"))) static void bf16_kernel(ProbeJob *j)
{
    __m512bh a = _mm512_cvtne2ps_pbh(_mm512_set1_ps(0.5f), _mm512_set1_ps(0.25f));
    __m512bh b = _mm512_cvtne2ps_pbh(_mm512_set1_ps(1e-3f), _mm512_set1_ps(1e-3f));
#define DECL(i) __m512 g##i = _mm512_set1_ps((float)(i));
#define STEP(i) g##i = _mm512_dpbf16_ps(g##i, a, b);
#define SUM(i) s = _mm512_add_ps(s, g##i);
    CHAINS(DECL)
    for (long it = 0; it < j->iters; it++) {
        CHAINS(STEP)
    }
    __m512 s = _mm512_setzero_ps();
    CHAINS(SUM)
    j->result = (double)_mm512_reduce_add_ps(s);
#undef DECL
#undef STEP
#undef SUM
}

/* ------------------------------------------------------------------ probes */

/* Median GB/s of reading buf[0, n) split over T threads, 5 repeats. */
static double probe_read(const float *buf, size_t n, int T)
{
    ProbeJob jobs[64];
    double gbs[5];
    size_t per = (n / (size_t)T) & ~(size_t)31;
    for (int i = 0; i < T; i++)
        jobs[i] = (ProbeJob){.fn = read_kernel, .buf = buf + per * (size_t)i, .n = per};
    read_kernel(&jobs[0]); /* fault in TLBs and settle the clock */
    for (int r = 0; r < 5; r++) {
        double ms = run_jobs(jobs, T);
        if (ms <= 0)
            return 0;
        gbs[r] = (double)(per * (size_t)T * sizeof(float)) / (ms * 1e6);
    }
    return bench_median(gbs, 5);
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

int bench_probe_limits(int threads, double probe_ms, BenchLimits *out)
{
    memset(out, 0, sizeof *out);
    __builtin_cpu_init();
    out->has_avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    out->has_avx512f = __builtin_cpu_supports("avx512f");
    out->has_vnni = out->has_avx512f && __builtin_cpu_supports("avx512vnni");
    out->has_bf16 = out->has_avx512f && __builtin_cpu_supports("avx512bf16");
    out->ncpu = ncpu_allowed();
    out->threads = threads < 1 ? 1 : threads > 64 ? 64 : threads;
    out->probe_ms = probe_ms;
    if (!out->has_avx2) {
        fprintf(stderr, "kiln bench: this CPU has no AVX2+FMA; the probes need them\n");
        return -1;
    }
    /* One pass must outlast timer noise and the LLC must not hold a real share. */
    size_t bytes = probe_ms >= 400 ? (size_t)1 << 30 : (size_t)128 << 20;
    float *buf = aligned_alloc(64, bytes);
    if (!buf) {
        fprintf(stderr, "kiln bench: cannot allocate %zu MiB for the bandwidth probe\n",
                bytes >> 20);
        return -1;
    }
    size_t n = bytes / sizeof(float);
    for (size_t i = 0; i < n; i++) /* real pages, not the shared zero page */
        buf[i] = (float)(i & 1023);
    out->read_bytes = bytes;
    out->read_gbs_1t = probe_read(buf, n, 1);
    out->read_gbs_nt = out->threads == 1 ? out->read_gbs_1t : probe_read(buf, n, out->threads);
    out->read_gbs_all = out->ncpu == 1             ? out->read_gbs_1t
                        : out->ncpu == out->threads ? out->read_gbs_nt
                                                    : probe_read(buf, n, out->ncpu);
    free(buf);
    out->fma_gflops = probe_compute(fma_kernel, FMA_ITER_OPS, out->threads, probe_ms);
    out->madd_gops = probe_compute(madd_kernel, MADD_ITER_OPS, out->threads, probe_ms);
    out->maddubs_gops = probe_compute(maddubs_kernel, MADDUBS_ITER_OPS, out->threads, probe_ms);
    if (out->has_vnni)
        out->vnni_gops = probe_compute(vnni_kernel, 12 * 128, out->threads, probe_ms);
    if (out->has_bf16)
        out->bf16_gflops = probe_compute(bf16_kernel, 12 * 64, out->threads, probe_ms);
    return out->read_gbs_1t > 0 && out->fma_gflops > 0 && out->madd_gops > 0 ? 0 : -1;
}

/* ------------------------------------------------------------------ cache flush */

#define FLUSH_BYTES ((size_t)256 << 20)
static float *flush_buf;

int bench_flush_caches(void)
{
    if (!flush_buf) {
        flush_buf = aligned_alloc(64, FLUSH_BYTES);
        if (!flush_buf)
            return -1;
        memset(flush_buf, 1, FLUSH_BYTES);
    }
    /* Reading every line of a buffer 8x the last-level cache pushes everything
     * else out of every level and leaves the caches full of clean lines, as a
     * decode step finds them after the other layers' (read-only) weights: the
     * timed run pays for its reads only. (A flush by writes would leave dirty
     * lines whose write-back the timed run would pay for as well, ~2x the bytes.) */
    size_t n = FLUSH_BYTES / sizeof(float);
    float s = 0;
    for (size_t i = 0; i < n; i += 16)
        s += flush_buf[i];
    probe_sink += s;
    return 0;
}

void bench_flush_free(void)
{
    free(flush_buf);
    flush_buf = NULL;
}
