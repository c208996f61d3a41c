/* ir/layout_gpu.h — the prepacked GPU weight layout and the per-call scratch layout
 * that kiln's CUDA qgemm kernels (codegen/ptx) read: what the generator, the prepacker
 * and the CUDA runtime agree on. libc only, so runtime/cuda.c prepacks at load time
 * without NVRTC. docs/gpu.md has the byte-level description. */
#ifndef KILN_LAYOUT_GPU_H
#define KILN_LAYOUT_GPU_H

#include "ir.h"

/* Kernel families (one per operand combination; docs/gpu.md):
 *   MMA_S8    int8 act x int8/int4 weight: mma.sync m16n8k32 s8/u8 -> exact s32
 *   MMA_FP8   fp8 act x fp8 weight (sm_89+): mma.sync m16n8k32 e4m3/e5m2 -> f32
 *   MMA_F16   weight-only, f16 acts: codes -> f16 in registers, mma m16n8k16 f16 -> f32
 *   MMA_BF16  weight-only, bf16 acts: same with bf16
 *   F32_FMA   weight-only, f32 acts: CUDA-core FFMA (tensor cores would round x); also
 *             unquantized (f32) weights of layers a recipe ignores: codes are f32, scale 1 */
typedef enum {
    KILN_GK_MMA_S8,
    KILN_GK_MMA_FP8,
    KILN_GK_MMA_F16,
    KILN_GK_MMA_BF16,
    KILN_GK_F32_FMA,
} KilnGpuFamily;

/* Tiles of the GEMM kernel; K and group lengths are padded to KILN_GPU_BK. */
#define KILN_GPU_BM 64
#define KILN_GPU_BN 64
#define KILN_GPU_BK 32
/* Rows handled by the GEMV kernel per block; launches with M <= KILN_GPU_GEMV_MAX_M
 * (and every f32-fma launch) use the GEMV kernel, larger M the tensor-core GEMM. */
#define KILN_GPU_GEMV_ROWS 4
#define KILN_GPU_GEMV_MAX_M 8
#define KILN_GPU_GEMV_MAX_M_INT4 16

/* Blob (all offsets from the blob start, every section 256-aligned):
 *   [0, 256)     header: "KILNGP1\0" ("KILNGP2\0" for int4_marlin), int64 N, K, NP,
 *                KP, NG, GLEN (informative)
 *   codes_off    NP rows of row_bytes: row n holds the KP codes of W[n, :] in the
 *                interpreter's storage form (i8/u8/e4m3/e5m2 one byte each; i4/u4
 *                two per byte, element 2j in the low nibble; f32 weights 4 bytes). Columns K..KP-1 hold
 *                the code of 0 (the zero point, or 0); rows N..NP-1 are 0.
 *                int4_marlin: the same NP·KP/2 bytes with the codes permuted into
 *                512-byte chunks, one 128-bit load per lane (ir/layout_gpu_int4.h).
 *   scales_off   f32 [NP][NG]: s_w of (n, group); per-tensor/channel replicated (NG 1).
 *                int4_marlin: this and the next two are [NG][NP] (kiln_i4_group_index).
 *   zeros_off    i32 [NP][NG]: z_w (asymmetric integer weights; else all 0).
 *   wsum_off     i32 [NP][NG]: sum of the stored codes over the group's GLEN k
 *                (integer weights; the activation zero-point correction). When
 *                GLEN does not divide KP the last group is ragged: KP - (NG-1)·GLEN k.
 * Scratch (per call; kiln_gpu_scratch_bytes), MP = M rounded up to KILN_GPU_BM, each
 * section 256-aligned, in this order: A [MP][KP] prepared activations (act_esz bytes
 * each: s8/u8/fp8 codes, f16/bf16, or f32), f32 sa[MP], i32 za[MP], i32 asum[MP][NG],
 * f32 range[MP][2]. */
typedef struct KilnGpuLayout {
    char name[48];  /* the qgemm `layout` attr, e.g. "sm80-mma-s8" */
    int sm;         /* 80, 89, 90, 100 */
    KilnGpuFamily family;
    int64_t N, K, NP, KP; /* NP: N rounded up to BN; KP: K rounded up to BK */
    KilnQuantSpec wspec;
    KilnDType wdt;
    int wbits;
    bool group_mode;
    int64_t glen, ngroups; /* k per scale group (KP when not grouped) and their count,
                            * ceil(KP/glen): the last group may be shorter (ragged) */
    bool wzero;            /* asymmetric integer weights */
    bool int4_marlin;      /* int4 weight-only f16/bf16: the Marlin-style codes ("KILNGP2") */
    size_t row_bytes, codes_off, scales_off, zeros_off, wsum_off, pack_bytes;
    /* activations */
    bool weight_only;
    KilnDType act_dtype; /* weight-only: f16/bf16/f32 */
    KilnQuantSpec aspec; /* quantized activations */
    KilnDType adt;       /* their storage dtype */
    int act_esz;         /* bytes per prepared activation element */
    bool azero;          /* asymmetric (u8) activations */
    /* epilogue */
    bool has_bias;
    int epilogue; /* 0 none, 1 silu, 2 gelu */
    KilnDType out_dt;
    /* arch: sm_90a is sm 90 with its arch-specific features; there the gemm kernel of
     * the S8, FP8 and 8-bit-weight F16/BF16 families is the wgmma one (qgemm_wgmma.cu) */
    bool arch_specific, wgmma;
} KilnGpuLayout;

/* A CUDA arch name (sm_80, sm_89, sm_90, sm_90a, sm_100) -> its sm number and whether
 * it is arch-specific (sm_90a); KILN_EINPUT naming the valid ones otherwise. */
int kiln_gpu_arch(const char *name, int *sm, bool *arch_specific, KilnDiag *d);
/* 0 when kernels built for arch run on a device of device_arch (sm_90a on sm_90 only;
 * a portable arch on itself and later ones), else KILN_EINPUT saying why. */
int kiln_gpu_arch_runs_on(const char *arch, const char *device_arch, KilnDiag *d);
/* Set l's arch (after its family is known) and with it whether its gemm is wgmma. */
void kiln_gpu_layout_set_arch(KilnGpuLayout *l, int sm, bool arch_specific);

/* Layout for a qgemm of f (arch from f's `target` attr: sm_80, sm_89, sm_90, sm_90a, sm_100).
 * KILN_EINPUT for: a non-CUDA target, fp8 activations on sm_80, a group that is not
 * a multiple of KILN_GPU_BK (it need not divide K: ragged last group), dynamic percentile calibration, int4 activations.
 * A qgemm with `outliers` gets the layout of its int8 part alone: no bias, no activation,
 * f32 out (the host runs the rest, ir/outliers.h). */
int kiln_gpu_layout_for(const KilnInst *qgemm, const KilnFunc *f, KilnGpuLayout *out,
                        KilnDiag *d);
/* Pack a quantized weight (ir.h storage, scales, zeros) into blob (l->pack_bytes). */
int kiln_gpu_prepack(const KilnGpuLayout *l, const KilnTensor *wq, void *blob, KilnDiag *d);
/* Scratch bytes a launch with M rows needs (and the A buffer's offset is 0). */
size_t kiln_gpu_scratch_bytes(const KilnGpuLayout *l, int64_t M);
/* Whether a launch with M rows uses the GEMV kernel (else the GEMM kernel). */
bool kiln_gpu_use_gemv(const KilnGpuLayout *l, int64_t M);
/* The GEMV launch: threads per block, blocks along x (N) and rows per block (blocks
 * along y: ceil(M / rows)). Row-major codes: NP/4 blocks of 128 (a warp a column), 4
 * rows (KILN_GPU_GEMV_ROWS); int4_marlin: NP/32 blocks of 256 (a block a 32-column chunk
 * row, 8 warps split K, m16n8k16 mma), 16 rows, and it runs for M up to
 * KILN_GPU_GEMV_MAX_M_INT4 (the whole decode range of one mma m tile). */
int kiln_gpu_gemv_threads(const KilnGpuLayout *l);
int64_t kiln_gpu_gemv_blocks_x(const KilnGpuLayout *l);
int kiln_gpu_gemv_rows(const KilnGpuLayout *l);

/* What a layout promises in the machine code (SASS, as `cuobjdump -sass` prints it
 * for ptxas of CUDA 13): `need` lists opcode prefixes (space-separated, plain string
 * prefixes: "IMMA.16832" matches "IMMA.16832.S8.S8") that must all appear in the module's `kernel`; `never`
 * lists prefixes no kernel of the module may hold. One row per layout family and arch
 * range, the one description pick_layout quotes in `why` and tests/test_sass.c checks
 * against the disassembled cubins. */
typedef struct KilnGpuSass {
    const char *suffix; /* the layout name after "smXX-", e.g. "mma-s8" */
    int sm_lo, sm_hi;   /* archs the row is for */
    const char *kernel; /* "gemm" or "gemv" */
    const char *need, *never;
} KilnGpuSass;
/* The promise of a layout name ("sm90-mma-fp8") on sm (80, 89, 90); NULL if unknown. */
const KilnGpuSass *kiln_gpu_sass_promise(const char *layout, int sm);

#endif
