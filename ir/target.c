/* ir/target.c — the target table, alias resolution and the host CPU (cpuid and the
 * subnormal-operand probe), ir/target.h. */
#include "target.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#if defined(__x86_64__)
#include <cpuid.h>
#include <immintrin.h>
#endif
#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

static const KilnTarget targets[] = {
    {"interp", KILN_TGT_INTERP, 0, 0, NULL, 0,
     "reference interpreter: scalar C semantics of every op, the ground truth kernels are tested against"},
    {"cpu", KILN_TGT_CPU, 0, 0, NULL, 0,
     "alias: the host CPU, resolved to amx (AMX-TILE+INT8+BF16 on top of avx512), avx512 "
     "(AVX-512F+VNNI+BF16), avx512vnni (AVX-512F+VNNI, no BF16) or avx2 (AVX2+FMA), with the "
     "traits a start-up probe measures (subnormal operands free or not)"},
    {"avx2", KILN_TGT_CPU, KILN_ISA_V3, 0, "avx2", 0,
     "x86-64-v3: AVX2 vpmaddwd int16 pairs -> exact int32, FMA f32, F16C f16<->f32; no int8 dot, "
     "no FP8; kernels safe on every core of the level (no subnormal operands)"},
    {"avx512vnni", KILN_TGT_CPU, KILN_ISA_V4_VNNI, 0, "avx512vnni", 0,
     "x86-64-v4 + AVX512-VNNI without AVX512-BF16 (Cascade Lake, Ice Lake, and guests whose "
     "hypervisor hides BF16): the avx512 kernels, with bf16 activations on f32 FMA instead "
     "of vdpbf16ps; kernels safe on every core of the level (no subnormal operands)"},
    {"avx512", KILN_TGT_CPU, KILN_ISA_V4, 0, "avx512", 0,
     "x86-64-v4 + AVX512-VNNI (vpdpbusd u8 x s8 -> int32) + AVX512-BF16 (vdpbf16ps bf16 pairs -> "
     "f32); kernels safe on every core of the level (no subnormal operands)"},
    {"amx", KILN_TGT_CPU, KILN_ISA_V4 | KILN_ISA_AMX, 0, "amx", 0,
     "x86-64-v4 + VNNI + BF16 + AMX-TILE/INT8/BF16 (Sapphire Rapids and later): W8A8 prefill "
     "on tiles (tdpbusd u8 x s8 -> int32, 16x64 by 64x16 per instruction), bf16-activation "
     "weight-only and fp8 x fp8 prefill on tdpbf16ps tiles (bf16 pairs -> f32), decode and the "
     "rest on the avx512 vector kernels; the process asks the OS for tile state once"},
    {"zen3", KILN_TGT_CPU, KILN_ISA_V3, KILN_TUNE_SUBNORMAL_FREE, "avx2", 0,
     "AMD Zen 3: avx2 kernels, int4/fp8 weights read from their bits as f32 subnormals "
     "(subnormal operands cost nothing on Zen)"},
    {"zen4", KILN_TGT_CPU, KILN_ISA_V4, KILN_TUNE_SUBNORMAL_FREE, "avx512", 0,
     "AMD Zen 4: avx512 kernels, int4/fp8 weights read from their bits as f32 subnormals "
     "(subnormal operands cost nothing on Zen)"},
    {"sm_80", KILN_TGT_CUDA, 0, 0, NULL, 80,
     "NVIDIA Ampere: mma.sync s8 m16n8k32 -> s32, f16/bf16 m16n8k16 -> f32; no FP8 tensor cores"},
    {"sm_89", KILN_TGT_CUDA, 0, 0, NULL, 89,
     "NVIDIA Ada: sm_80's mma plus FP8 e4m3/e5m2 mma.sync m16n8k32 -> f32"},
    {"sm_90", KILN_TGT_CUDA, 0, 0, NULL, 90,
     "NVIDIA Hopper, portable PTX: mma.sync s8 and f16/bf16; FP8 mma.sync runs as an unpack to "
     "f16 plus f16 tensor cores (Hopper's FP8 units need wgmma: sm_90a)"},
    {"sm_90a", KILN_TGT_CUDA, KILN_ISA_CUDA_ARCH_SPECIFIC, 0, NULL, 90,
     "NVIDIA Hopper, arch-specific: warpgroup MMA (wgmma.mma_async) for FP8 e4m3/e5m2, s8 and "
     "8-bit-weight f16/bf16 GEMMs; runs on sm_90 devices only (not on later archs)"},
    {"sm_100", KILN_TGT_CUDA, 0, 0, NULL, 100,
     "NVIDIA Blackwell (datacenter), portable PTX: sm_80/89's mma.sync kernels; Blackwell's "
     "tcgen05 (UMMA) tensor cores are not used"},
    {"cuda", KILN_TGT_CUDA, 0, 0, NULL, 80,
     "alias: the CUDA device's arch; until the GPU backend queries the device it means sm_80"},
};

const KilnTarget *kiln_targets(int *n)
{
    *n = (int)(sizeof targets / sizeof targets[0]);
    return targets;
}

static const KilnTarget *find(const char *name)
{
    for (size_t i = 0; i < sizeof targets / sizeof targets[0]; i++)
        if (strcmp(targets[i].name, name) == 0)
            return &targets[i];
    return NULL;
}

/* ------------------------------------------------------------------ traits */

static const struct {
    unsigned bit;
    const char *name;
} tune_names[] = {{KILN_TUNE_SUBNORMAL_FREE, "subnormal-free"},
                  {KILN_TUNE_HUGEPAGE_WEIGHTS, "hugepage-weights"},
                  {KILN_TUNE_FAR_PREFETCH, "far-prefetch"}};
#define NTUNE (sizeof tune_names / sizeof tune_names[0])

const char *kiln_tune_str(unsigned tune, char *buf, size_t n)
{
    if (!n)
        return buf;
    buf[0] = 0;
    for (size_t i = 0; i < NTUNE; i++)
        if (tune & tune_names[i].bit) {
            size_t len = strlen(buf);
            snprintf(buf + len, n - len, "%s%s", len ? "," : "", tune_names[i].name);
        }
    return buf;
}

int kiln_tune_parse(const char *s, unsigned *out)
{
    *out = 0;
    while (s && *s) {
        const char *e = strchr(s, ',');
        size_t len = e ? (size_t)(e - s) : strlen(s);
        size_t i = 0;
        while (i < NTUNE && !(strlen(tune_names[i].name) == len && !strncmp(s, tune_names[i].name, len)))
            i++;
        if (i == NTUNE)
            return -1;
        *out |= tune_names[i].bit;
        s = e ? e + 1 : NULL;
    }
    return 0;
}

/* ------------------------------------------------------------------ the host */

unsigned kiln_host_isa(void)
{
    unsigned isa = 0;
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2"))
        isa |= KILN_ISA_AVX2;
    if (__builtin_cpu_supports("fma"))
        isa |= KILN_ISA_FMA;
#if defined(__x86_64__)
    unsigned a, b, c, d; /* F16C from cpuid: clang 14 (the fuzz build) has no "f16c" here */
    if (__get_cpuid(1, &a, &b, &c, &d) && (c >> 29) & 1)
        isa |= KILN_ISA_F16C;
#endif
    /* kiln's avx512 kernels are x86-64-v4 code: F, BW, VL and DQ together */
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
        isa |= KILN_ISA_AVX512;
    if (__builtin_cpu_supports("avx512vnni"))
        isa |= KILN_ISA_VNNI;
    if (__builtin_cpu_supports("avx512bf16"))
        isa |= KILN_ISA_BF16;
#endif
#if defined(__x86_64__)
    /* AMX only where the OS saves tile state: OSXSAVE, then XCR0 bits 17 and 18 */
    if (__get_cpuid(1, &a, &b, &c, &d) && (c >> 27) & 1) {
        unsigned xlo, xhi;
        __asm__ volatile("xgetbv" : "=a"(xlo), "=d"(xhi) : "c"(0));
        unsigned a7, b7, c7, d7;
        if ((xlo & (3u << 17)) == (3u << 17) && __get_cpuid_count(7, 0, &a7, &b7, &c7, &d7)) {
            if ((d7 >> 24) & 1)
                isa |= KILN_ISA_AMX_TILE;
            if ((d7 >> 25) & 1)
                isa |= KILN_ISA_AMX_INT8;
            if ((d7 >> 22) & 1)
                isa |= KILN_ISA_AMX_BF16;
        }
    }
#endif
    return isa;
}

bool kiln_level_is_v4(const char *level)
{
    return level && (strcmp(level, "avx512vnni") == 0 || kiln_level_has_bf16(level));
}

bool kiln_level_has_bf16(const char *level)
{
    return level && (strcmp(level, "avx512") == 0 || strcmp(level, "amx") == 0);
}

/* The tile data permission (ir/target.h). 0x1023 = ARCH_REQ_XCOMP_PERM, 18 =
 * XFEATURE_XTILEDATA (arch/x86/include/uapi/asm/prctl.h, Linux 5.16). */
static int amx_rc;
static char amx_msg[200];
static pthread_once_t amx_once = PTHREAD_ONCE_INIT;

static void amx_request(void)
{
    if ((kiln_host_isa() & KILN_ISA_AMX) != KILN_ISA_AMX) {
        amx_rc = KILN_ENODEV;
        snprintf(amx_msg, sizeof amx_msg, "this CPU has no AMX (cpuid AMX-TILE/INT8/BF16 with "
                 "tile state enabled in XCR0): AMX kernels cannot run here");
        return;
    }
#if defined(__linux__) && defined(SYS_arch_prctl)
    if (syscall(SYS_arch_prctl, 0x1023, 18) != 0) {
        amx_rc = KILN_ENODEV;
        snprintf(amx_msg, sizeof amx_msg, "the kernel refused AMX tile state "
                 "(arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) failed: Linux >= 5.16 "
                 "needed, or a seccomp policy forbids it): AMX kernels cannot run here");
    }
#else
    amx_rc = KILN_ENODEV;
    snprintf(amx_msg, sizeof amx_msg, "AMX tile state can be requested on Linux only");
#endif
}

int kiln_host_amx_enable(KilnDiag *d)
{
    pthread_once(&amx_once, amx_request);
    return amx_rc ? kiln_diag_set(d, amx_rc, "%s", amx_msg) : KILN_OK;
}

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e9 + ts.tv_nsec;
}

#if defined(__x86_64__)
/* ns per FMA over 8 independent chains of `iters` steps with weight operand w (the
 * asm barrier keeps w a run-time value the compiler cannot fold). */
__attribute__((target("avx2,fma"))) static double fma_chain_ns(float wv, int iters)
{
    __m256 w = _mm256_set1_ps(wv), a = _mm256_set1_ps(1.5f);
    __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0, s4 = s0, s5 = s0, s6 = s0, s7 = s0;
    double t0 = now_ns();
    for (int i = 0; i < iters; i++) {
        __asm__ volatile("" : "+x"(w));
        s0 = _mm256_fmadd_ps(w, a, s0);
        s1 = _mm256_fmadd_ps(w, a, s1);
        s2 = _mm256_fmadd_ps(w, a, s2);
        s3 = _mm256_fmadd_ps(w, a, s3);
        s4 = _mm256_fmadd_ps(w, a, s4);
        s5 = _mm256_fmadd_ps(w, a, s5);
        s6 = _mm256_fmadd_ps(w, a, s6);
        s7 = _mm256_fmadd_ps(w, a, s7);
    }
    __m256 s = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)),
                             _mm256_add_ps(_mm256_add_ps(s4, s5), _mm256_add_ps(s6, s7)));
    __asm__ volatile("" : : "x"(s));
    return (now_ns() - t0) / (8.0 * iters);
}

/* Best of 3 runs of 2048 FMAs each with a normal and with a subnormal operand: a
 * few microseconds where subnormals are free, ~0.2 ms where each FMA takes an
 * assist. The ratio decides; the threshold (4x) sits far from both (1x on Zen,
 * ~40x on Intel). */
static void probe_subnormal(KilnHostCpu *h)
{
    unsigned csr = _mm_getcsr();
    _mm_setcsr(csr & ~(0x40u | 0x8000u)); /* DAZ and FTZ off, as the kernels run */
    volatile float normal = 1.0f, subnormal = 1e-40f;
    double best_n = 1e30, best_s = 1e30;
    fma_chain_ns(normal, 64); /* settle the clock */
    for (int r = 0; r < 3; r++) {
        double n = fma_chain_ns(normal, 256), s = fma_chain_ns(subnormal, 256);
        best_n = n < best_n ? n : best_n;
        best_s = s < best_s ? s : best_s;
    }
    _mm_setcsr(csr);
    h->fma_ns = best_n;
    h->fma_subnormal_ns = best_s;
    if (best_s < 4 * best_n + 0.05)
        h->tune |= KILN_TUNE_SUBNORMAL_FREE;
}

static void read_cpuid(KilnHostCpu *h)
{
    unsigned a, b, c, d;
    if (__get_cpuid(0, &a, &b, &c, &d)) {
        memcpy(h->vendor, &b, 4);
        memcpy(h->vendor + 4, &d, 4);
        memcpy(h->vendor + 8, &c, 4);
        h->vendor[12] = 0;
    }
    if (__get_cpuid(1, &a, &b, &c, &d)) {
        int fam = (int)((a >> 8) & 0xF), mod = (int)((a >> 4) & 0xF);
        if (fam == 0xF)
            fam += (int)((a >> 20) & 0xFF);
        if (fam == 0x6 || fam >= 0xF)
            mod |= (int)((a >> 16) & 0xF) << 4;
        h->family = fam;
        h->model_id = mod;
    }
    unsigned brand[12];
    if (__get_cpuid(0x80000000, &a, &b, &c, &d) && a >= 0x80000004) {
        for (unsigned i = 0; i < 3; i++)
            __get_cpuid(0x80000002 + i, &brand[4 * i], &brand[4 * i + 1], &brand[4 * i + 2],
                        &brand[4 * i + 3]);
        char s[49];
        memcpy(s, brand, 48);
        s[48] = 0;
        const char *p = s;
        while (*p == ' ')
            p++;
        snprintf(h->model, sizeof h->model, "%s", p);
        for (size_t n = strlen(h->model); n && h->model[n - 1] == ' '; n--)
            h->model[n - 1] = 0;
    }
}
#endif

/* The THP mode, the bracketed word of /sys/kernel/mm/transparent_hugepage/enabled;
 * huge-page weights where it is always or madvise (runtime/pool.c advises them) and
 * KILN_NO_HUGEPAGES does not turn the advice off, on AMD cores: only there do the
 * hardware prefetchers stream a huge-page panel alone (Zen 4: W8A16 decode 23.7 ->
 * 28.2 GB/s without software prefetch); an Intel Sapphire Rapids core decodes
 * 1.5-2x faster with it, huge pages or not (docs/targets.md). */
static void read_thp(KilnHostCpu *h)
{
    char buf[128] = "";
    FILE *f = fopen("/sys/kernel/mm/transparent_hugepage/enabled", "r");
    if (f) {
        if (!fgets(buf, sizeof buf, f))
            buf[0] = 0;
        fclose(f);
    }
    const char *a = strchr(buf, '['), *b = a ? strchr(a, ']') : NULL;
    if (a && b && b - a - 1 < (long)sizeof h->thp)
        snprintf(h->thp, sizeof h->thp, "%.*s", (int)(b - a - 1), a + 1);
    const char *off = getenv("KILN_NO_HUGEPAGES");
    bool disabled = off && *off && strcmp(off, "0") != 0;
    if (!disabled && (!strcmp(h->thp, "always") || !strcmp(h->thp, "madvise")) &&
        !strcmp(h->vendor, "AuthenticAMD"))
        h->tune |= KILN_TUNE_HUGEPAGE_WEIGHTS;
}

static KilnHostCpu host;
static pthread_once_t host_once = PTHREAD_ONCE_INIT;

static void detect_host(void)
{
    double t0 = now_ns();
    host.isa = kiln_host_isa();
    snprintf(host.model, sizeof host.model, "unknown CPU");
#if defined(__x86_64__)
    read_cpuid(&host);
    if ((host.isa & (KILN_ISA_AVX2 | KILN_ISA_FMA)) == (KILN_ISA_AVX2 | KILN_ISA_FMA))
        probe_subnormal(&host);
#endif
    read_thp(&host);
    if (!strcmp(host.vendor, "GenuineIntel")) /* ir/target.h KILN_TUNE_FAR_PREFETCH */
        host.tune |= KILN_TUNE_FAR_PREFETCH;
    host.probe_ms = (now_ns() - t0) * 1e-6;
}

const KilnHostCpu *kiln_host_cpu(void)
{
    pthread_once(&host_once, detect_host);
    return &host;
}

/* ------------------------------------------------------------------ resolution */

int kiln_target_resolve_cpu(unsigned isa, unsigned tune, KilnTarget *out, KilnDiag *d)
{
    /* avx512 kernels use VNNI and BF16 unconditionally, avx512vnni VNNI only; a v4
     * CPU without VNNI (Skylake-X) runs the avx2 kernels, which are correct there.
     * amx is avx512 with all three AMX parts. */
    unsigned amx = KILN_ISA_V4 | KILN_ISA_AMX, v3 = KILN_ISA_AVX2 | KILN_ISA_FMA;
    const char *level = (isa & amx) == amx                                ? "amx"
                        : (isa & KILN_ISA_V4) == KILN_ISA_V4              ? "avx512"
                        : (isa & KILN_ISA_V4_VNNI) == KILN_ISA_V4_VNNI    ? "avx512vnni"
                        : (isa & v3) == v3                                ? "avx2"
                                                                          : NULL;
    if (!level)
        return kiln_diag_set(d, KILN_ENODEV,
                             "target cpu: this CPU lacks AVX2 (kiln's CPU kernels need at least "
                             "AVX2+FMA, x86-64-v3); use target interp");
    *out = *find(level);
    out->tune = tune;
    return KILN_OK;
}

int kiln_target_lookup(const char *name, KilnTarget *out, KilnDiag *d)
{
    if (!name)
        name = "";
    if (strcmp(name, "cpu") == 0) {
        const KilnHostCpu *h = kiln_host_cpu();
        unsigned isa = h->isa;
        KilnDiag ad = {0};
        /* an AMX CPU whose OS refuses tile state runs the avx512 kernels */
        if ((isa & KILN_ISA_AMX) == KILN_ISA_AMX && kiln_host_amx_enable(&ad))
            isa &= ~(unsigned)KILN_ISA_AMX;
        return kiln_target_resolve_cpu(isa, h->tune, out, d);
    }
    const KilnTarget *t = find(name);
    if (t && strcmp(name, "cuda") == 0) {
        /* Layouts are decided per arch; without a device to ask, plan for the
         * oldest arch we support so the choice runs everywhere. */
        *out = *find("sm_80");
        out->summary = "cuda (alias; device not queried yet, planned as sm_80): "
                       "mma.sync s8 m16n8k32, f16/bf16 m16n8k16; no FP8 tensor cores";
        return KILN_OK;
    }
    if (t) {
        *out = *t;
        return KILN_OK;
    }
    char list[256] = "";
    for (size_t i = 0; i < sizeof targets / sizeof targets[0]; i++) {
        strncat(list, i ? ", " : "", sizeof list - strlen(list) - 1);
        strncat(list, targets[i].name, sizeof list - strlen(list) - 1);
    }
    return kiln_diag_set(d, KILN_EINPUT, "unknown target \"%s\"; valid targets: %s", name, list);
}

bool kiln_target_host_runs(const KilnTarget *t)
{
    if (t->kind == KILN_TGT_INTERP)
        return true;
    if (t->kind != KILN_TGT_CPU)
        return false;
    if (!t->level) /* the cpu alias */
        return (kiln_host_isa() & (KILN_ISA_AVX2 | KILN_ISA_FMA)) == (KILN_ISA_AVX2 | KILN_ISA_FMA);
    return (kiln_host_isa() & t->isa) == t->isa;
}

const char *kiln_target_cannot_run(const KilnTarget *t)
{
    if (kiln_target_host_runs(t))
        return NULL;
    if (t->kind == KILN_TGT_CUDA)
        return "needs a CUDA device";
    /* every missing part, so a test or user sees "no AMX" on any host without AMX */
    static _Thread_local char why[200];
    unsigned have = kiln_host_isa(), miss = t->level ? t->isa & ~have : KILN_ISA_AVX2;
    const char *parts[4];
    int n = 0;
    if (miss & KILN_ISA_V3)
        parts[n++] = "no AVX2+FMA (x86-64-v3)";
    if (miss & KILN_ISA_AVX512)
        parts[n++] = "no AVX-512 (x86-64-v4)";
    else if (miss & (KILN_ISA_VNNI | KILN_ISA_BF16))
        parts[n++] = (miss & KILN_ISA_VNNI) && (miss & KILN_ISA_BF16) ? "no AVX512-VNNI/BF16"
                     : miss & KILN_ISA_VNNI                           ? "no AVX512-VNNI"
                                                                      : "no AVX512-BF16";
    if (miss & KILN_ISA_AMX)
        parts[n++] = "no AMX (cpuid AMX-TILE/INT8/BF16 with tile state enabled in XCR0)";
    if (!n)
        return "this CPU lacks its ISA level";
    why[0] = 0;
    for (int i = 0; i < n; i++)
        snprintf(why + strlen(why), sizeof why - strlen(why), "%s%s", i ? "; " : "", parts[i]);
    return why;
}
