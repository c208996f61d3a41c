/* ir/layout.h — the prepacked CPU weight layout: what a qgemm kernel and the
 * prepacker agree on (panel width, k-interleave, where codes/scales/zeros/sums
 * live in the blob, how much scratch a call needs). libc only, so the runtime
 * prepacks at load time without LLVM. docs/jit-aot.md has the pictures. */
#ifndef KILN_LAYOUT_H
#define KILN_LAYOUT_H

#include "ir.h"
#include "target.h"

/* Kernel families. The layout name is "<isa>-<family>", e.g. "avx2-i16-madd":
 *   i16-madd  avx2: int8 weights x int8 activations; codes sign-extended to
 *             i16, vpmaddwd (exact int32), KR = 2.
 *   u4s8-maddubs avx2: int4 weights x int8 activations with vpmaddubsw: the
 *             unsigned nibble u = c + 8 (0..15) times the s8 activation (q, or
 *             q - 128 for an asymmetric u8 code), pairs summed into i16; |pair| <=
 *             2*15*128 = 3840, so 8 products add up exactly in i16 (<= 30720)
 *             before one vpmaddwd by 1 widens them to i32. Twice the multiplies
 *             per instruction of i16-madd. KR = 4; the +8 (and any weight zero
 *             point) comes off per group as Z * sum(q - z_a), the activation
 *             offset as wsum * ca (asymmetric activations only).
 *   u8s8-vnni avx512: same math with vpdpbusd: activations stored u8 = q+128 (or
 *             the u8 code of an asymmetric activation), weights s8, KR = 4; the
 *             blob carries wsum = sum of the stored weight codes per (n, group)
 *             to remove the activation offset exactly.
 *   f32-fma   weight-only (int8/int4/fp8 weights, f32/f16/bf16 activations),
 *             fp8 x fp8, and plain f32 weights (a layer the recipe does not
 *             quantize): weights decoded to (or loaded as) f32, FMA, KR = 1.
 *   bf16-dot  avx512, bf16 activations, weight-only: (q - z) or fp8 values are
 *             exact in bf16, vdpbf16ps, KR = 2.
 *   u8s8-tile amx: u8s8-vnni's blob and activations, and for M >= tiles_min_m AMX
 *             tiles (kiln_layout_use_tiles below); named "amx-u8s8-tile".
 *   bf16-tile amx: bf16-dot's blob and bf16 activation rows (weight-only with bf16
 *             activations, and fp8 x fp8, whose fp8 activations are written as bf16
 *             pairs too), and for M >= tiles_min_m tdpbf16ps tiles; named
 *             "amx-bf16-tile" (family stays KILN_KF_BF16_DOT: the vector rows are
 *             bf16-dot's). */
typedef enum {
    KILN_KF_I16_MADD,
    KILN_KF_U4S8_MADDUBS,
    KILN_KF_U8S8_VNNI,
    KILN_KF_F32_FMA,
    KILN_KF_BF16_DOT,
} KilnKernelFamily;

typedef enum { KILN_EPI_NONE, KILN_EPI_SILU, KILN_EPI_GELU } KilnEpilogue;

/* The kernel ABI, defined here with the blob it reads (wpack, layout below) and
 * the scratch it needs (kiln_layout_scratch_bytes): computes columns [n0, n1) of
 * y[M,N] (n0 on a panel boundary). The code generator emits it, the runtime calls
 * it; docs/jit-aot.md. */
typedef void (*KilnQGemmFn)(const float *x, int64_t M, const void *wpack, const float *bias,
                            void *y, int64_t n0, int64_t n1, void *scratch);

/* Blob byte layout (all offsets from the blob start, every section 64-aligned):
 *   [0, 64)        header: "KILNPK2\0", then int64 N, K, NR, KR (informative)
 *   codes_off      P = ceil(N/NR) panels of panel_code_bytes each, panel after
 *                  panel (one sequential stream per thread).
 *                  8-bit codes: a panel holds K/KR blocks; a block is NR*KR bytes
 *                  in order [n][kr] (column n's KR consecutive k values together),
 *                  so one VL-column vector is VL*KR contiguous bytes (vpmovsxbd /
 *                  vpmovsxbw straight from memory).
 *                  int4 codes (KB = 8): a panel holds K/8 blocks; a block is NR
 *                  little-endian 32-bit words, one per column, each holding that
 *                  column's 8 k values as nibbles, so one VL-column vector is one
 *                  aligned-size load and every k (pair, quad) comes out with
 *                  shifts/masks in registers. Nibble position of k%8:
 *                    KR = 1 (f32-fma):   k, stored UNSIGNED u = c + 8: k < 7 is
 *                        taken as w & (0xF << 4k) = u * 16^k, converted to f32
 *                        exactly, against an activation prescaled by 16^-k (exact,
 *                        a power of two); k = 7 as w >> 28 = u. One op per k.
 *                        The +8 (and the zero point) go through zero_by_sum.
 *                    KR = 2 (i16-madd, bf16-dot): 4*(k&1) + k/2: the low i16 holds
 *                        the even k, the high i16 the odd k of the pair (shl 12-4j,
 *                        sar 12 on i16 lanes gives pair j as the madd operand)
 *                    KR = 4 (u8s8-vnni, u4s8-maddubs): 2*(k&3) + k/4: byte b
 *                        holds k=b (low nibble) and k=b+4 (high nibble): and/shift
 *                        (+ sign-fix for vnni; u4s8-maddubs stores the nibbles
 *                        UNSIGNED, u = c + 8, and uses them as they are).
 *                  Integer
 *                  codes are stored as c = q - wbias (wbias 128 for u8, 8 for u4,
 *                  else 0) so every stored code is signed (s8 / s4). fp8 codes are
 *                  stored as is. f32 weights (wdt F32, no quant spec) are stored
 *                  as f32 values, 4 bytes each, in the same order (KR = 1).
 *                  Columns past N are padded with code 0.
 *   scales_off     f32 [P][ngroups][NR]: weight scale of (n, group); per-tensor
 *                  and per-channel scales are replicated (ngroups = 1). Pad 0.
 *                  0 = absent (f32 weights).
 *   zeros_off      i32 [P][ngroups][NR]: z - wbias (asymmetric weights only; 0 =
 *                  absent).
 *   wsum_off       i32 [P][ngroups][NR]: sum over the group's k of c (u8s8-vnni),
 *                  of u = c + 8 (u4s8-maddubs with asymmetric activations); 0 =
 *                  absent.
 * Scratch (per call, per thread): scratch_per_row bytes for each of the M rows,
 * plus scratch_fixed bytes. Row r at r * scratch_per_row holds
 *   [0, act_row_bytes)  the prepared activations: i16 q-z (i16-madd), u8 q+off
 *                       (vnni), s8 q - off (maddubs: off 0, or 128 for u8 codes), f32 rounded/fp8-decoded values (f32-fma), bf16
 *                       pairs (bf16-dot); zero-padded to the 64-byte boundary
 *   meta_off            f32 s_a, i32 ca (activation offset removed with wsum),
 *                       then i32 asum[ngroups] = sum of (q - z) per group;
 *                       f32-fma with zero_by_sum: f32 at 0 unused, then f32
 *                       asum[ngroups] = sum of the prepared activations per group. */
/* How far ahead of the weight stream the decode loops prefetch (layout pf_ahead;
 * codegen/cpu/qgemm_gen.c prefetch_ahead has the measurements). */
#define KILN_PF_AHEAD 1024
#define KILN_PF_AHEAD_FAR 4096
/* act_planes layouts run calls with fewer rows than this on vpdpbusd byte planes,
 * row by row; from it the MR-row f32 tile, which decodes a panel once per 4 rows
 * (Intel, 4096 x 4096 cold, 1 thread: at M = 2 planes W4A16 1.00 ms against the
 * tile's 1.31, W8A16 level; at M = 3 / 4 the tile W8A16 1.59 / 1.59 against 1.79 /
 * 2.05, W4A16 level / 1.30 against 1.60; bench/results/decode-batches-2026-12-08.md). */
#define KILN_PLANES_BELOW_M 3

typedef struct KilnLayout {
    char name[48];     /* "avx2-i16-madd", ... (the qgemm `layout` attr) */
    char isa[16];      /* "avx2", "avx512vnni", "avx512" or "amx": the target's ISA level */
    KilnKernelFamily family;
    /* int4/int8/fp8 weights read as f32 subnormals (the "-subnormal" layouts; see
     * below), chosen where the target has KILN_TUNE_SUBNORMAL_FREE */
    bool subnormal_decode;
    /* f32-fma with int8 codes and K, group multiples of 4: the codes are stored as
     * 32-bit words, one per column per block of KB = 4 k (VNNI's KR = 4 byte order),
     * unsigned (u = c + 128), and read in place: one mask or shift per k, no
     * sign-extension; the +128 (and any zero point) comes off per group through
     * zero_by_sum. Otherwise one byte per k, sign-extended and converted. */
    bool int8_words;
    /* decode loops prefetch the weight stream in software (one prefetcht0 per cache
     * line, PF_AHEAD bytes ahead); not on targets whose weights sit in huge pages
     * (KILN_TUNE_HUGEPAGE_WEIGHTS), where the hardware prefetchers do it alone;
     * pf_ahead bytes ahead: KILN_PF_AHEAD, or KILN_PF_AHEAD_FAR with
     * KILN_TUNE_FAR_PREFETCH (Intel hosts), and there as prefetcht1 (into L2,
     * pf_l2) rather than prefetcht0 */
    bool sw_prefetch, pf_l2;
    int pf_ahead;
    int64_t N, K;
    int NR, KR;        /* panel width (output columns) and k-interleave */
    int KB;            /* k per packed block = per unrolled micro-kernel step (8 for int4) */
    int MR;            /* rows of the register block */
    int VL;            /* f32/i32 lanes of one vector register */
    KilnQuantSpec wspec;
    KilnDType wdt;     /* storage dtype of the weight codes */
    int wbias;         /* subtracted from integer codes when packing */
    int64_t group;     /* k per scale group (K when not grouped) */
    int64_t ngroups;   /* ceil(K / group): the last group is ragged (K mod group k)
                        * when group does not divide K; KB divides both */
    bool group_mode;   /* weight gran == group: per-group float combination */
    int64_t npanels;
    size_t panel_code_bytes, codes_off, scales_off, zeros_off, wsum_off, pack_bytes;
    /* activations */
    bool weight_only;
    /* f32-fma, asymmetric int weights and all int4: the zero point is not
     * subtracted per element but per group, as s_w * (sum_k a*c - z' * sum_k a)
     * (z' = z - wbias for int8 codes c = q - wbias, z' = z (8 when symmetric) for
     * the unsigned int4 nibbles), with the row's per-group activation sums in
     * scratch (meta asum as f32) */
    bool zero_by_sum;
    KilnDType act_dtype;  /* weight-only: f32/f16/bf16 */
    KilnQuantSpec aspec;  /* quantized activations */
    KilnDType adt;        /* their storage dtype */
    size_t act_row_bytes, meta_off, scratch_per_row, scratch_fixed;
    /* Blocked prefill (f32-fma with quantized weights, M >= blocked_min_m): per
     * panel, chunks of CB packed blocks are decoded once into an f32 buffer
     * [CB*KB][NR] at scratch + M * scratch_per_row (scale folded in: (q-z)*s, fp8*s)
     * and every row streams it through an MRB x NR FMA register tile (then 4-row
     * tiles, then single rows for the rest), keeping its running sums in its own
     * row's f32 [NR] at cbuf_off between chunks. (f32 weights stay on the direct
     * MR x NR path: on Zen 4 this path measured 15-40 % slower for them.) */
    bool blocked;
    /* Decode rows on VNNI (act_planes; v4 levels, weight-only int4 and int8-word
     * codes): calls with M < planes_below_m do not decode the codes to f32 (from
     * planes_below_m rows to blocked_min_m the direct path's MR-row f32 tile, which
     * decodes a panel once per 4 rows, is faster). Per
     * block of ablk k (128, or the largest of 64..16 dividing K and the group, a
     * multiple of KB) the prologue writes each row's rounded activations a as the
     * integers A = roundeven(a * 2^sh), sh = 29 - floor(log2(max |a| of the block)),
     * |A| < 2^30, split into four balanced base-256 digits d0..d3 (A = d0 + 2^8 d1 +
     * 2^16 d2 + 2^24 d3, each in [-128, 127]), one byte plane of K each at p * K in
     * the row, in the order the codes come out of a word (int8 words: k; int4: per 8
     * k, k = 0 2 4 6 1 3 5 7, the low nibbles then the high ones of a word's bytes).
     * The unsigned stored codes u are vpdpbusd's u8 operand and a plane's four digits
     * its broadcast s8 one: four int32 sums per block, S_p = sum u * d_p, exact;
     * sum (u - Z) * A = T01 + 2^16 T23 with T01 = S0 + 2^8 S1 - Z * D01 and T23 =
     * S2 + 2^8 S3 - Z * D23, D01 = sum d0 + 2^8 d1 and D23 likewise (|T| < 2^31 for
     * ablk <= 128 and |u - Z| <= 255), times 2^-sh and the weight scale in f32. Row
     * meta (at meta_off) per block: 2^-sh as two f32 factors (sh is -98..155), i32 D01,
     * i32 D23. Exact up to A's
     * rounding: an activation more than 2^29 below its block's largest loses bits
     * (none for f16 within 2^19, bf16 within 2^22). One vpdpbusd per 16 weights and
     * plane, against a convert and an FMA per 16 weights on f32. */
    bool act_planes;
    int64_t ablk, nablk, planes_below_m;
    int MRB;
    int64_t CB, blocked_min_m;
    size_t cbuf_off;
    /* AMX tiles (u8s8-vnni family on the amx level; kiln_layout_use_tiles): calls
     * with M >= tiles_min_m run every row on tiles, smaller ones the VNNI rows of
     * the direct path, on the same blob. The B tiles ARE the u8s8-vnni panel: block
     * kk of a panel is NR columns x 4 bytes (k = 4kk..4kk+3 of column n at byte
     * (kk*NR + n)*4 + k%4), which is exactly a tdpbusd B-tile row (K in groups of 4
     * bytes per column) for 16 columns at a time: the B tile of columns 16h..16h+15
     * and k0..k0+KT-1 is KT/4 rows of 64 bytes at panel + k0*NR + 64h with stride
     * NR*4 = 128 bytes (NR = 32: two B tiles per panel). The A tile is 16 rows of
     * KT u8 activations at stride scratch_per_row in scratch (the prepared rows,
     * q + 128, as vnni), so the rows of the last, partial 16-row tile come from
     * TM - 1 zeroed pad rows after the M rows (scratch_fixed). KT, the k of one tile
     * step, is the largest of 64, 32, 16, 8, 4 dividing K and the group (so every
     * tile of a kernel has one shape and one ldtilecfg serves all); per group the
     * two 16x16 int32 C tiles are stored to the stack and go through the vnni
     * group epilogue (wsum/zero-point corrections, scales) row by row. int4
     * weights (W4A8) keep u8s8-vnni's nibble words (KB = 8, so KT >= 8); each tile
     * step unpacks its KT/8 word blocks into signed bytes in that same B-tile order
     * (KT/4 rows x 128 bytes on the stack: bytes b of the low nibbles are k = 8kb + b,
     * of the high ones k = 8kb + 4 + b) and loads the B tiles from there.
     * tiles_model: the tile operations are calls into ir/amx_model.h (the scalar
     * model), so the same kernel runs on any host (tests). */
    bool tiles, tiles_model;
    int64_t tiles_min_m;
    int TM, KT;
    /* amx-bf16-tile (family bf16-dot with tiles): the B tiles are not the blob. The
     * tile path takes the call's panels in passes of TP: per pass it dequantizes each
     * panel's codes once (q - z, or the fp8 value: exact in bf16) into bf16 B tiles in
     * the fixed scratch, panel j of the pass at scratch + M * scratch_per_row +
     * tpanel_off + j * K*NR*2 (after the TM - 1 pad rows), then runs every 32-row block
     * group by group over the TP panels, so that a block's activation rows come from
     * memory once per pass and a group's of them from L1 for the other panels. A panel is K/2 rows of NR*2 bf16
     * (128 bytes for NR = 32), row kk holding k = 2kk, 2kk+1 of column n as the bf16
     * pair at byte 4n (the order bf16-dot's vectors already have), so the B tile of columns 16h..16h+15 and k0..k0+KT-1 is
     * KT/2 rows of 64 bytes at the panel + k0*NR*2 + 64h, stride NR*4. The A tile is
     * 16 rows of KT bf16 at stride scratch_per_row (the prepared rows). KT, the k of
     * one tile step, is the largest of 32, 16, 8, 4, 2 dividing K and the group. All
     * rows run in 32-row blocks of 2x2 tiles (two A tiles, the panel's two B tiles,
     * four 16x16 f32 C tiles; a last block of <= 16 rows 1x2); per scale group and
     * panel the C tiles start at zero and go through bf16-dot's group epilogue row by
     * row into the panel's f32 row sums (on the stack). */
    size_t tpanel_off;
    int TP;
    /* epilogue */
    bool has_bias;
    KilnEpilogue epilogue;
    KilnDType out_dt;
} KilnLayout;

/* How int4, int8-word and fp8 weights become f32 in f32-fma (and fp8 in bf16-dot),
 * chosen by the target's traits (ir/target.h) and written into the layout name:
 *  - "...-subnormal" (l->subnormal_decode; targets with KILN_TUNE_SUBNORMAL_FREE):
 *    read from their bits. An fp8 code shifted into place is w * 2^-120 (E4M3) or
 *    w * 2^-112 (E5M2); an int4 nibble masked in place (bits 4j..4j+3, j <= 5; j =
 *    6, 7 shifted down to bits 0..3) is u * 2^(bit - 149), an int8 word byte j
 *    (j <= 2 masked in place, j = 3 shifted down) likewise: f32 subnormals (or the
 *    first binade), exact, with no convert or multiply per weight. The kernel clears
 *    the caller's MXCSR DAZ/FTZ for its run. Free on AMD Zen; on Intel every FMA
 *    with a subnormal operand takes a ~150-cycle microcode assist.
 *  - portable (every other target): an int4 nibble masked in place (j <= 6; j = 7
 *    shifted down) is the integer u * 2^(4j), an int8 word byte j (j <= 2; j = 3
 *    shifted down) u * 2^(8j), converted exactly (vcvtdq2ps); an fp8
 *    code is moved into an f16 (E5M2 is f16's top byte: w; E4M3's exponent and
 *    mantissa under f16's sign bit: w * 2^-8) and widened by vcvtph2ps, which reads
 *    f16 subnormals exactly, with no assist, and ignores DAZ. No f32 subnormal ever
 *    reaches an FMA.
 * In f32-fma the weight read for k is v * 2^weight_exp(k % 8) for the exact value v
 * (u or w); the prologue stores the activation times 2^act_exp(k % 8), the two
 * summing to a constant, so products need no per-weight scaling, and every group sum
 * (and the blocked path's decoded scale) is multiplied by 2^kiln_layout_unscale_exp.
 * All powers of two: y has the bits of decode-then-multiply. Bounds (an activation
 * beyond them loses exactness): subnormal fp8 |a| < 2^64 and products normal down to
 * |a*w| = 2^-70; subnormal int4/int8 |a| < 2^59, down to |a*u| = 2^-46; portable
 * int4/int8 |a| < 2^104; portable fp8 |a| < 2^120. */
static inline bool kiln_layout_fp8_weights(const KilnLayout *l)
{
    return l->wspec.fmt == KILN_QF_FP8_E4M3 || l->wspec.fmt == KILN_QF_FP8_E5M2;
}

/* f32-fma reading integer codes from 32-bit column words in place: int4 (8
 * nibbles a word) and int8 words (4 bytes a word). */
static inline bool kiln_layout_word_codes(const KilnLayout *l)
{
    return l->family == KILN_KF_F32_FMA && (l->wspec.fmt == KILN_QF_INT4 || l->int8_words);
}

/* f32-fma with word codes or fp8 weights: activations prescaled per k (act_exp). */
static inline bool kiln_layout_prescaled(const KilnLayout *l)
{
    return kiln_layout_word_codes(l) || (l->family == KILN_KF_F32_FMA && kiln_layout_fp8_weights(l));
}

/* Word codes: bits per code (4 or 8), and the last code j (= k % KB) read in place;
 * the codes after it are shifted down to bit 0 first (their bits would reach the
 * f32 exponent, or the sign of an int32). */
static inline int kiln_layout_code_bits(const KilnLayout *l) { return l->int8_words ? 8 : 4; }
static inline int kiln_layout_code_last(const KilnLayout *l)
{
    return l->int8_words ? 2 : l->subnormal_decode ? 5 : 6;
}

/* Word codes: the bit position code j of a column word is read at. */
static inline int kiln_layout_code_bit(const KilnLayout *l, int j)
{
    return j <= kiln_layout_code_last(l) ? kiln_layout_code_bits(l) * j : 0;
}

/* Exponent of the weight value read for k % KB = j (see above). */
static inline int kiln_layout_weight_exp(const KilnLayout *l, int j)
{
    if (kiln_layout_word_codes(l))
        return kiln_layout_code_bit(l, j) - (l->subnormal_decode ? 149 : 0);
    if (l->wspec.fmt == KILN_QF_FP8_E4M3)
        return l->subnormal_decode ? -120 : -8;
    if (l->wspec.fmt == KILN_QF_FP8_E5M2)
        return l->subnormal_decode ? -112 : 0;
    return 0;
}

/* Exponent the prologue scales the activation for k % KB = j by (0: none). */
static inline int kiln_layout_act_exp(const KilnLayout *l, int j)
{
    if (!kiln_layout_prescaled(l))
        return 0;
    if (kiln_layout_word_codes(l))
        return (l->subnormal_decode ? 69 : 24) - kiln_layout_code_bit(l, j);
    return l->subnormal_decode ? 64 : -kiln_layout_weight_exp(l, 0);
}

/* The power of two the sums of prescaled activations times weights read this way
 * are multiplied by to be the plain sums (0: no such scaling). */
static inline int kiln_layout_unscale_exp(const KilnLayout *l)
{
    if (!kiln_layout_prescaled(l))
        return 0;
    return -(kiln_layout_weight_exp(l, 0) + kiln_layout_act_exp(l, 0));
}

/* What word codes store above the signed code c (u = c + offset): 8 for int4, 128
 * for int8. */
static inline int kiln_layout_code_offset(const KilnLayout *l) { return l->int8_words ? 128 : 8; }

/* int4 nibbles stored unsigned (u = c + 8) rather than as signed s4. */
static inline bool kiln_layout_u4_unsigned(const KilnLayout *l)
{
    return l->KR == 1 || l->family == KILN_KF_U4S8_MADDUBS;
}
/* Integer families: exact int32 sums, scales combined per group or at the end. */
static inline bool kiln_layout_integer(const KilnLayout *l)
{
    return l->family == KILN_KF_I16_MADD || l->family == KILN_KF_U4S8_MADDUBS ||
           l->family == KILN_KF_U8S8_VNNI;
}

/* The first live qgemm of f (NULL if none). */
const KilnInst *kiln_find_qgemm(const KilnFunc *f);
/* Layout for a qgemm in f, for the target named by f's `target` attr (aliases such
 * as cpu and zen4 resolved by ir/target.h) with the traits of its `tune` attr when
 * present (pick_layout writes the traits it planned with); a qgemm attr
 * `amx_min_m = N` (pick_layout's choice of tiles) makes it the tile layout, and a
 * function attr `tiles = "model"` runs its tiles on the scalar model. Errors (KILN_EINPUT):
 * unknown or non-CPU target, unsupported operand combination, K or the group not a
 * multiple of KR (8 for int4; the ragged last group, K mod group, needs the same
 * unit, which is why K is checked), a `layout` attr on the qgemm that is not the
 * name computed here (pick_layout writes exactly that name).
 * A qgemm with `outliers` gets the layout of its int8 part alone: no bias, no
 * activation, f32 out (the rest runs after the kernel, ir/outliers.h). */
int kiln_layout_for(const KilnInst *qgemm, const KilnFunc *f, KilnLayout *out, KilnDiag *d);
/* Same, from explicit parts (used by kiln_layout_for, pick_layout and the AOT
 * runtime, so the `layout` attr and the kernel cannot disagree). t is a resolved
 * CPU target (its level and traits decide). wtype is a quantized [N,K] type or
 * plain f32[N,K] (then act must be NULL). */
int kiln_layout_make(const KilnTarget *t, const KilnType *wtype, const KilnQuantSpec *act,
                     KilnDType act_dtype, bool has_bias, KilnEpilogue epi, KilnDType out_dt,
                     KilnLayout *out, KilnDiag *d);
/* The default break-even M of the tile path (docs/targets.md, measured on a Sapphire
 * Rapids host, 4096 x 4096): int4 weights (unpacked to bytes per panel first) 16,
 * int8 weights 4. */
#define KILN_AMX_MIN_M 16
#define KILN_AMX_MIN_M_INT8 4
/* Make l (a u8s8-vnni layout for an amx target) the tile layout "amx-u8s8-tile":
 * tiles for calls with M >= min_m (>= 1), vnni rows below; model: the tile
 * operations go through the scalar model (ir/amx_model.h) instead of AMX
 * instructions. A layout for which kiln_layout_bf16_tiles says yes becomes
 * "amx-bf16-tile" (an fp8 x fp8 one moves from f32-fma to bf16-dot's blob and
 * rows first; K and the group must be even). KILN_EINPUT for any other layout. */
int kiln_layout_use_tiles(KilnLayout *l, int64_t min_m, bool model, KilnDiag *d);
/* The tile path's row block: its u8 activation rows (scratch_per_row each) stay in L2
 * while every panel of the call runs over them. 1 MiB: half of Sapphire Rapids' 2 MiB
 * L2 per core, the rest for the panel being read. */
#define KILN_AMX_A_BLOCK_BYTES (1u << 20)
/* Rows per block: the most whole 32-row pairs within KILN_AMX_A_BLOCK_BYTES, at least one. */
int64_t kiln_layout_amx_m_block(const KilnLayout *l);
/* Whether l may run on tdpbf16ps tiles: the amx level, and bf16-dot (weight-only,
 * bf16 activations) or fp8 activations x fp8 weights. */
bool kiln_layout_bf16_tiles(const KilnLayout *l);

/* Pack a quantized weight (codes + scales + zeros per ir.h), or for an f32
 * layout a plain f32 [N,K] tensor, into blob (l->pack_bytes bytes, any
 * alignment; 64 recommended). */
int kiln_prepack(const KilnLayout *l, const KilnTensor *wq, void *blob, KilnDiag *d);
/* Pack panels [p0, p1) of the weight straight into the whole blob (l->pack_bytes):
 * their codes, scales, zero points and wsums, the header when p0 == 0 and the
 * sections' padding when p1 == npanels, touching no other panel's bytes, so
 * disjoint ranges may be packed concurrently. wq_rows holds just those panels'
 * rows, p0*NR .. min(p1*NR, N), quantized as the whole matrix would be (a
 * per-tensor scale chosen over all of it); its scales are indexed from its own
 * first row. Packing every range of a partition of [0, npanels) gives exactly
 * kiln_prepack's blob. */
int kiln_prepack_panels(const KilnLayout *l, const KilnTensor *wq_rows, int64_t p0, int64_t p1,
                        void *blob, KilnDiag *d);
size_t kiln_layout_scratch_bytes(const KilnLayout *l, int64_t M);
/* For the error bound of a float kernel (docs/numerics.md): out[n*K + k] = Z*s of the
 * weight element, the offset a zero-by-sum layout sums along (|the dequantized lowest
 * code|: Z = z, or 8 / 128 for symmetric int4 / int8), or 0 for every other layout. */
int kiln_layout_offset_magnitudes(const KilnLayout *l, const KilnTensor *wq, float *out,
                                  KilnDiag *d);
/* Rows of a call are independent unless a dynamic per-tensor activation scale
 * spans all of them (0 then). Otherwise the row count that every row tile of
 * the kernel divides (MR, MRB): calls on row ranges starting at its multiples
 * compute each row exactly as one call on all rows does. */
int kiln_layout_row_unit(const KilnLayout *l);

#endif
