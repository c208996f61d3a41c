/* ir/target.h — the one table of targets kiln compiles for (the interpreter, CPU ISA
 * levels and CPU microarchitectures, CUDA archs), the resolution of the aliases "cpu"
 * and "cuda", and what the host CPU is: its ISA, its model name and the traits a
 * start-up probe measured. Every place that resolves a target name or asks what the
 * host can run uses this file. libc only. docs/targets.md explains each entry. */
#ifndef KILN_TARGET_H
#define KILN_TARGET_H

#include <stdbool.h>
#include <stddef.h>

#include "ir.h"

typedef enum { KILN_TGT_INTERP, KILN_TGT_CPU, KILN_TGT_CUDA } KilnTargetKind;

enum {
    KILN_ISA_AVX2 = 1,
    KILN_ISA_FMA = 2,
    KILN_ISA_F16C = 4,
    KILN_ISA_AVX512 = 8, /* AVX-512F (+BW/VL/DQ, x86-64-v4) */
    KILN_ISA_VNNI = 16,  /* AVX512-VNNI: vpdpbusd */
    KILN_ISA_BF16 = 32,  /* AVX512-BF16: vdpbf16ps */
    /* AMX (Sapphire Rapids and later): cpuid leaf 7 EDX bits 24 (AMX-TILE: the 8
     * tile registers, ldtilecfg, tileloadd/tilestored/tilezero), 25 (AMX-INT8:
     * tdpbusd/tdpbssd/tdpbsud/tdpbuud) and 22 (AMX-BF16: tdpbf16ps), counted only
     * where the OS enables tile state in XCR0 (bits 17 XTILECFG, 18 XTILEDATA).
     * Linux also wants a per-process request before the first tile instruction
     * (kiln_host_amx_enable). */
    KILN_ISA_AMX_TILE = 64,
    KILN_ISA_AMX_INT8 = 128,
    KILN_ISA_AMX_BF16 = 256,
    /* CUDA targets: the arch-specific features of an "a" arch (sm_90a: wgmma); its
     * cubin and PTX run on devices of exactly that arch, never a later one. */
    KILN_ISA_CUDA_ARCH_SPECIFIC = 1 << 16,
};
#define KILN_ISA_V3 (KILN_ISA_AVX2 | KILN_ISA_FMA | KILN_ISA_F16C)
/* avx512vnni: x86-64-v4 with VNNI but no BF16 (Cascade Lake, Ice Lake, and guests whose
 * hypervisor hides BF16); avx512: both dot products */
#define KILN_ISA_V4_VNNI (KILN_ISA_V3 | KILN_ISA_AVX512 | KILN_ISA_VNNI)
#define KILN_ISA_V4 (KILN_ISA_V4_VNNI | KILN_ISA_BF16)
#define KILN_ISA_AMX (KILN_ISA_AMX_TILE | KILN_ISA_AMX_INT8 | KILN_ISA_AMX_BF16)

/* Microarchitecture traits: facts about a core that change which kernel is fastest
 * on it although every kernel is correct on every core of the ISA level. A target
 * without a trait gets the kernels that are safe where the trait is absent. */
enum {
    /* FMA and multiply with a subnormal operand run at full speed (AMD Zen 3 and
     * Zen 4, measured). Intel cores take a microcode assist per such instruction
     * (~150 cycles, ~30 ns measured on a Xeon: 40x a normal FMA), so kernels that
     * read int4/fp8 weights from their bits as f32 subnormals are chosen only
     * where this trait holds. */
    KILN_TUNE_SUBNORMAL_FREE = 1,
    /* The runtime keeps this target's prepacked weights in transparent huge pages
     * (runtime kiln_rt_alloc_weights; the host has THP on, "always" or "madvise",
     * and KILN_NO_HUGEPAGES is not set): the hardware prefetchers then stream a
     * panel with no help, and the decode loops' software prefetch only costs
     * (Zen 4: W8A16 decode, 1 thread, 23.7 -> 28.2 GB/s without it). Set for AMD
     * hosts only: on Intel Sapphire Rapids the software prefetch makes cold decode
     * 1.5-2x faster even in huge pages. Only the host ("cpu") has it: an AOT
     * library cannot know how its caller allocates. */
    KILN_TUNE_HUGEPAGE_WEIGHTS = 2,
    /* The decode loops' software prefetch runs 4 KiB ahead of the weight stream
     * instead of 1 KiB (KILN_PF_AHEAD_FAR): on an Intel Xeon (family 6 model 207,
     * KVM, 1 x 14336 x 4096 cold, 1 thread, two interleaved rounds) W8A16 decode
     * went 5.43-5.50 -> 4.75-4.86 ms, W4A16 3.20-3.24 -> 2.71-2.76, FP8 5.88-5.90 ->
     * 4.93-5.07, W4A8 2.84-2.92 -> 2.60-2.61 (2 KiB in between, 8 KiB no better); on
     * Zen 3, where 1 KiB was tuned, 2 KiB measured the same and 4 KiB worse. With it
     * the prefetch is prefetcht1 (into L2) instead of prefetcht0: on the same host,
     * two or three interleaved rounds, W8A16 (vpdpbusd decode rows) 4.55-4.65 -> 4.30-4.36
     * ms, W4A16 2.63-2.65 -> 2.52-2.55, W4A8 2.54-2.55 -> 2.42-2.44, FP8 4.96-4.99 ->
     * 4.93-4.95, W8A8 the same. Set by the host probe on Intel cores; only the host
     * ("cpu") has it. */
    KILN_TUNE_FAR_PREFETCH = 4,
};

typedef struct KilnTarget {
    const char *name;  /* interp, avx2, avx512, zen3, zen4, sm_80, ... (aliases resolve to these) */
    KilnTargetKind kind;
    unsigned isa;      /* KILN_ISA_* bits the kernels need (CPU targets; CUDA: arch-specific) */
    unsigned tune;     /* KILN_TUNE_* traits the kernels may rely on, CPU targets */
    const char *level; /* CPU targets: the ISA level the kernels are built for, "avx2",
                        * "avx512vnni", "avx512" or "amx" (the prefix of every layout
                        * name); else NULL */
    int sm;            /* 80, 89, 90, 100 for CUDA targets, else 0 */
    const char *summary; /* one line: what it runs natively */
} KilnTarget;

/* The table, for `kiln targets` (includes the aliases cpu and cuda). */
const KilnTarget *kiln_targets(int *n);
/* Resolve a name (aliases included) to a concrete target. Unknown names give
 * KILN_EINPUT with the list of valid names; "cpu" on a host without AVX2+FMA gives
 * KILN_ENODEV. "cpu" is the host's ISA level with the host's measured traits. */
int kiln_target_lookup(const char *name, KilnTarget *out, KilnDiag *d);
/* What "cpu" resolves to for a host with these KILN_ISA_* bits and KILN_TUNE_*
 * traits (exposed for tests). */
int kiln_target_resolve_cpu(unsigned isa, unsigned tune, KilnTarget *out, KilnDiag *d);
/* True when the host can execute t's kernels (CPU targets: every ISA bit present;
 * the interpreter always; CUDA targets never: they need a device). */
bool kiln_target_host_runs(const KilnTarget *t);
/* Why the host cannot run t's kernels, every missing part, e.g. "no AVX512-BF16; no
 * AMX (cpuid AMX-TILE/INT8/BF16 ...)"; NULL when it can (kiln_target_host_runs). The
 * text lives until the calling thread's next call. */
const char *kiln_target_cannot_run(const KilnTarget *t);
/* CPU levels whose vector kernels are the x86-64-v4 ones (avx512vnni, avx512, amx):
 * 16 f32 lanes and the VNNI int8 dot product. */
bool kiln_level_is_v4(const char *level);
/* v4 levels that also have AVX512-BF16 (vdpbf16ps): avx512 and amx. */
bool kiln_level_has_bf16(const char *level);

/* Traits as text: "subnormal-free" ("" for none); parse accepts a comma-separated
 * list of those names or "" (0 = ok, -1 = unknown name). */
const char *kiln_tune_str(unsigned tune, char *buf, size_t n);
int kiln_tune_parse(const char *s, unsigned *out);

/* ------------------------------------------------------------------ the host */

typedef struct KilnHostCpu {
    unsigned isa;        /* KILN_ISA_* bits */
    unsigned tune;       /* KILN_TUNE_* traits, measured */
    char vendor[16];     /* "GenuineIntel", "AuthenticAMD" (cpuid) */
    char model[64];      /* the brand string, e.g. "AMD EPYC 9R14 96-Core Processor" */
    char thp[16];        /* transparent huge pages: "always", "madvise", "never" or "" */
    int family, model_id; /* cpuid display family / model */
    /* The subnormal probe: ns per FMA with normal operands and with a subnormal
     * operand (8 independent chains, the caller's MXCSR DAZ/FTZ cleared for it), and
     * how long the probe took in all. */
    double fma_ns, fma_subnormal_ns, probe_ms;
} KilnHostCpu;

/* Detected and probed once per process (< 1 ms; later calls return the cached
 * result). Never NULL. */
const KilnHostCpu *kiln_host_cpu(void);
/* KILN_ISA_* bits of the machine we run on (cpuid only, no probe). */
unsigned kiln_host_isa(void);
/* Ask the kernel once per process for the AMX tile data state (Linux
 * arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA = 18)), which a process needs
 * before its first tile instruction. KILN_ENODEV, saying why, when the CPU has no
 * AMX or the kernel refuses (e.g. a kernel older than 5.16, or a seccomp policy);
 * later calls return the first answer. Every runner of an AMX kernel calls it. */
int kiln_host_amx_enable(KilnDiag *d);

#endif
