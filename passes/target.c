/* passes/target.c — the targets kiln compiles for, what each runs natively, and
 * resolution of the aliases "cpu" (the host's ISA) and "cuda" (the device's arch). */
#include <string.h>

#include "passes/passes.h"

#define ISA_V3 (KILN_ISA_AVX2 | KILN_ISA_FMA | KILN_ISA_F16C)
#define ISA_V4 (ISA_V3 | KILN_ISA_AVX512 | KILN_ISA_VNNI | KILN_ISA_BF16)

static const KilnTarget targets[] = {
    {"interp", KILN_TGT_INTERP, 0, 0,
     "reference interpreter: scalar C semantics of every op, the ground truth kernels are tested against"},
    {"cpu", KILN_TGT_CPU, 0, 0,
     "alias: the host CPU, resolved to avx512 (AVX-512F+VNNI+BF16) or avx2 (AVX2+FMA)"},
    {"avx2", KILN_TGT_CPU, ISA_V3, 0,
     "x86-64-v3: AVX2 vpmaddwd int16 pairs -> exact int32, FMA f32, F16C f16<->f32; no int8 dot, no FP8"},
    {"avx512", KILN_TGT_CPU, ISA_V4, 0,
     "x86-64-v4 + AVX512-VNNI (vpdpbusd u8 x s8 -> int32) + AVX512-BF16 (vdpbf16ps bf16 pairs -> f32)"},
    {"sm_80", KILN_TGT_CUDA, 0, 80,
     "NVIDIA Ampere: mma.sync s8 m16n8k32 -> s32, f16/bf16 m16n8k16 -> f32; no FP8 tensor cores"},
    {"sm_89", KILN_TGT_CUDA, 0, 89,
     "NVIDIA Ada: sm_80's mma plus FP8 e4m3/e5m2 mma.sync m16n8k32 -> f32"},
    {"sm_90", KILN_TGT_CUDA, 0, 90,
     "NVIDIA Hopper: FP8 e4m3/e5m2, s8 and f16 mma (mma.sync here; wgmma later)"},
    {"cuda", KILN_TGT_CUDA, 0, 80,
     "alias: the CUDA device's arch; until the GPU backend queries the device it means sm_80"},
};

const KilnTarget *kiln_targets(int *n)
{
    *n = (int)(sizeof targets / sizeof targets[0]);
    return targets;
}

unsigned kiln_host_isa(void)
{
    unsigned isa = 0;
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2"))
        isa |= KILN_ISA_AVX2;
    if (__builtin_cpu_supports("fma"))
        isa |= KILN_ISA_FMA;
    if (__builtin_cpu_supports("f16c"))
        isa |= KILN_ISA_F16C;
    if (__builtin_cpu_supports("avx512f"))
        isa |= KILN_ISA_AVX512;
    if (__builtin_cpu_supports("avx512vnni"))
        isa |= KILN_ISA_VNNI;
    if (__builtin_cpu_supports("avx512bf16"))
        isa |= KILN_ISA_BF16;
#endif
    return isa;
}

static const KilnTarget *find(const char *name)
{
    int n;
    const KilnTarget *t = kiln_targets(&n);
    for (int i = 0; i < n; i++)
        if (strcmp(t[i].name, name) == 0)
            return &t[i];
    return NULL;
}

int kiln_target_resolve_cpu(unsigned isa, KilnTarget *out, KilnDiag *d)
{
    /* avx512 kernels use VNNI and BF16 unconditionally; a v4 CPU without them
     * (Skylake-X) runs the avx2 kernels, which are correct there. */
    if ((isa & (KILN_ISA_AVX512 | KILN_ISA_VNNI | KILN_ISA_BF16)) ==
        (KILN_ISA_AVX512 | KILN_ISA_VNNI | KILN_ISA_BF16)) {
        *out = *find("avx512");
        return KILN_OK;
    }
    if ((isa & (KILN_ISA_AVX2 | KILN_ISA_FMA)) == (KILN_ISA_AVX2 | KILN_ISA_FMA)) {
        *out = *find("avx2");
        return KILN_OK;
    }
    return kiln_diag_set(d, KILN_ENODEV,
                         "target cpu: this CPU lacks AVX2 (kiln's CPU kernels need at least "
                         "AVX2+FMA, x86-64-v3); use target interp");
}

int kiln_target_lookup(const char *name, KilnTarget *out, KilnDiag *d)
{
    if (!name)
        name = "";
    if (strcmp(name, "cpu") == 0)
        return kiln_target_resolve_cpu(kiln_host_isa(), out, d);
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
    int n;
    const KilnTarget *all = kiln_targets(&n);
    for (int i = 0; i < n; i++) {
        strncat(list, i ? ", " : "", sizeof list - strlen(list) - 1);
        strncat(list, all[i].name, sizeof list - strlen(list) - 1);
    }
    return kiln_diag_set(d, KILN_EINPUT, "unknown target \"%s\"; valid targets: %s", name, list);
}
