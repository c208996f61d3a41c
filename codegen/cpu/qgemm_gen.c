/* codegen/cpu/qgemm_gen.c — the qgemm kernel as LLVM IR: prologue (activation
 * prep), loops over panels [n0,n1), then either the direct path (rows in blocks
 * of MR and singly; a register-blocked micro-kernel of R rows x NR columns that
 * unpacks each packed block of KB k in registers, per-group integer/float partial
 * sums combined with the weight scales in the accumulator) or, for f32-fma with
 * quantized weights and M >= 8, the blocked path (qgemm_blocked.c); then a
 * per-element epilogue (bias, silu/gelu, output rounding). Also the weight
 * unpacking both paths share. docs/jit-aot.md has the pictures. */
#include <math.h>
#include <string.h>

#include "codegen/cpu/gen.h"

static bool fp8_weights(const KilnLayout *l) { return kiln_layout_fp8_weights(l); }

static bool int4_weights(const KilnLayout *l) { return kiln_dtype_bits(l->wdt) == 4; }

/* Codes packed as one 32-bit word per column per block (layout.h): every int4
 * layout, and f32-fma's int8 words. */
bool kg_packed_words(const KilnLayout *l) { return int4_weights(l) || l->int8_words; }

/* int4: the NR column words of block kb (layout.h), one <VL x i32> per vector. */
void kg_load_packed(KilnGen *g, KilnTile *t, LLVMValueRef kb)
{
    const KilnLayout *l = g->l;
    LLVMBuilderRef b = g->b;
    for (int v = 0; v < t->NV; v++) {
        LLVMValueRef el = LLVMBuildAdd(b, LLVMBuildMul(b, kb, kg_i64(g, l->NR), ""),
                                       kg_i64(g, (int64_t)v * l->VL), "");
        t->packed[v] = kg_load(g, g->vi, kg_gep(g, t->wpanel, LLVMBuildMul(b, el, kg_i64(g, 4), "")));
    }
}

/* Decode (one-row tiles) streams each panel once from DRAM: a software
 * prefetch l->pf_ahead bytes ahead of block kb (1 KiB; 4 KiB on Intel hosts,
 * KILN_TUNE_FAR_PREFETCH, ir/target.h, and there into L2 only), one per cache
 * line of the block,
 * keeps more lines in flight than the hardware prefetcher alone on 4 KiB pages.
 * Where the runtime keeps the weights in huge pages (KILN_TUNE_HUGEPAGE_WEIGHTS,
 * l->sw_prefetch false) the hardware prefetchers stream alone and the software
 * prefetch only costs (Zen 4, 1 x 4096 x 14336 cold, 1 thread, 7 interleaved
 * rounds: W8A16 23.7 -> 28.2 GB/s without it; the other recipes within noise). Measured
 * (bench/results/cpu-2026-11-23-prefetch.md, 1 x 4096 x 14336, cold): 1 thread
 * W8A8 0.84 -> 0.92, W4A8 0.80 -> 0.96, W8A16 0.68 -> 0.80, FP8 0.55 -> 0.67 of
 * the streaming-read limit (int4 on f32-fma gained nothing while it needed a
 * convert per weight; read from its bits it measured 3.1-3.2 -> 2.8-2.9 ms on
 * one thread, within this VM's noise). */

void kg_prefetch_ahead(KilnGen *g, KilnTile *t, LLVMValueRef kb)
{
    const KilnLayout *l = g->l;
    LLVMBuilderRef b = g->b;
    int64_t bytes = (int64_t)l->NR * l->KB * kiln_dtype_bits(l->wdt) / 8;
    if (!l->sw_prefetch)
        return;
    LLVMValueRef base = LLVMBuildAdd(b, LLVMBuildMul(b, kb, kg_i64(g, bytes), ""), kg_i64(g, l->pf_ahead), "");
    int loc = l->pf_l2 ? 2 : 3; /* prefetcht1 (into L2) or prefetcht0 */
    for (int64_t off = 0; off < bytes; off += 64) {
        LLVMValueRef args[4] = {kg_gep(g, t->wpanel, LLVMBuildAdd(b, base, kg_i64(g, off), "")),
                                kg_i32(g, 0), kg_i32(g, loc), kg_i32(g, 1)}; /* read, locality, data */
        kg_call_intr(g, "llvm.prefetch", &g->ptr, 1, args, 4);
    }
}

LLVMValueRef kg_vsplat_i(KilnGen *g, LLVMTypeRef el, int64_t v, unsigned n)
{
    return kg_splat(g, LLVMConstInt(el, (unsigned long long)v, 1), n);
}

/* Signed codes of vector v for step j of block kb (k = kb*KB + j*KR ...): VL*KR
 * lanes in [n][kr] order; i8 lanes for 8-bit codes, for int4 the lanes the
 * family's unpack leaves them in: i32 (KR 1), i16 (KR 2), i8 (KR 4). int4 never
 * goes through memory: shifts and masks on the block's words. */
static LLVMValueRef load_codes(KilnGen *g, KilnTile *t, LLVMValueRef kb, int j, int v, unsigned nv)
{
    const KilnLayout *l = g->l;
    LLVMBuilderRef b = g->b;
    unsigned VL = (unsigned)l->VL;
    if (kiln_layout_word_codes(l)) { /* unsigned u << kiln_layout_code_bit(j) (layout.h) */
        LLVMValueRef w = t->packed[v];
        int cb = kiln_layout_code_bits(l), bit = kiln_layout_code_bit(l, j);
        if (j == l->KB - 1) /* the word's top code: one shift leaves u */
            return LLVMBuildLShr(b, w, kg_vsplat_i(g, g->i32, 32 - cb, VL), "");
        if (bit != cb * j)
            w = LLVMBuildLShr(b, w, kg_vsplat_i(g, g->i32, cb * j - bit, VL), "");
        return LLVMBuildAnd(b, w, kg_vsplat_i(g, g->i32, (((int64_t)1 << cb) - 1) << bit, VL), "");
    }
    if (int4_weights(l)) {
        LLVMValueRef w = t->packed[v];
        if (l->KR == 2) {
            LLVMValueRef h = LLVMBuildBitCast(b, w, kg_vec(g->i16, 2 * VL), "");
            if (j != 3)
                h = LLVMBuildShl(b, h, kg_vsplat_i(g, g->i16, 12 - 4 * j, 2 * VL), "");
            return LLVMBuildAShr(b, h, kg_vsplat_i(g, g->i16, 12, 2 * VL), "");
        }
        /* KR 4: byte b holds k=b low, k=b+4 high; maddubs takes the unsigned
         * nibble as is, vnni sign-extends it: (u ^ 8) - 8 */
        if (j)
            w = LLVMBuildLShr(b, w, kg_vsplat_i(g, g->i32, 4, VL), "");
        w = LLVMBuildAnd(b, w, kg_vsplat_i(g, g->i32, 0x0F0F0F0F, VL), "");
        LLVMValueRef by = LLVMBuildBitCast(b, w, kg_vec(g->i8, 4 * VL), "");
        if (kiln_layout_u4_unsigned(l))
            return by;
        LLVMValueRef eight = kg_vsplat_i(g, g->i8, 8, 4 * VL);
        return LLVMBuildSub(b, LLVMBuildXor(b, by, eight, ""), eight, "");
    }
    unsigned n = VL * (unsigned)l->KR;
    LLVMValueRef kk = LLVMBuildAdd(b, LLVMBuildMul(b, kb, kg_i64(g, l->KB / l->KR), ""), kg_i64(g, j), "");
    LLVMValueRef el = LLVMBuildAdd(b, LLVMBuildMul(b, kk, kg_i64(g, l->NR * l->KR), ""),
                                   kg_i64(g, (int64_t)v * n), "");
    return kg_load(g, kg_vec(g->i8, n * nv), kg_gep(g, t->wpanel, el));
}

/* fp8 bytes -> f16 bits of w * 2^-8 (E4M3) or w (E5M2), fp8_decode's portable decode. */
static LLVMValueRef fp8_decode_f16(KilnGen *g, LLVMValueRef codes, unsigned n)
{
    LLVMBuilderRef b = g->b;
    LLVMTypeRef vh = kg_vec(g->i16, n);
    LLVMValueRef h;
    if (g->l->wspec.fmt == KILN_QF_FP8_E4M3) {
        h = LLVMBuildShl(b, LLVMBuildSExt(b, codes, vh, ""), kg_vsplat_i(g, g->i16, 7, n), "");
        h = LLVMBuildAnd(b, h, kg_vsplat_i(g, g->i16, (int16_t)0xBF80, n), "");
    } else {
        h = LLVMBuildShl(b, LLVMBuildZExt(b, codes, vh, ""), kg_vsplat_i(g, g->i16, 8, n), "");
    }
    return LLVMBuildBitCast(b, h, kg_vec(g->f16, n), "");
}

/* fp8 bytes -> f32, as w * 2^kiln_layout_weight_exp (layout.h).
 * From the bits (subnormal_decode), three ops after the widening load: sign-extend
 * the byte, shift exponent+mantissa into f32 position (the sign bit lands on bit
 * 31, its copies are masked off): w * 2^-bias (bias 120 E4M3, 112 E5M2; exact,
 * subnormal codes become f32 subnormals).
 * Portable: into an f16 and widened by vcvtph2ps (exact for f16 subnormals, no
 * assist, DAZ ignored): E5M2 is an f16's top byte (w); E4M3 sign-extended to i16
 * and shifted left 7 puts exponent and mantissa in f16's places and the sign on
 * bit 15, its copy on bit 14 masked off (w * 2^-8).
 * f32-fma leaves w scaled (the prescaled activations and the per-group unscale
 * take the power of two); bf16-dot multiplies it back to w here (the bf16 dot
 * products read subnormals as zero). */
static LLVMValueRef fp8_decode(KilnGen *g, LLVMValueRef codes, unsigned n)
{
    LLVMBuilderRef b = g->b;
    bool e4 = g->l->wspec.fmt == KILN_QF_FP8_E4M3;
    LLVMTypeRef vf = kg_vec(g->f32, n);
    LLVMValueRef v;
    if (g->l->subnormal_decode) {
        int sh = e4 ? 20 : 21;
        LLVMTypeRef vi = kg_vec(g->i32, n);
        v = LLVMBuildSExt(b, codes, vi, "");
        v = LLVMBuildShl(b, v, kg_splat(g, kg_i32(g, sh), n), "");
        v = LLVMBuildAnd(b, v, kg_splat(g, kg_i32(g, (int32_t)(0x80000000u | (0x7Fu << sh))), n), "");
        v = LLVMBuildBitCast(b, v, vf, "");
    } else {
        v = LLVMBuildFPExt(b, fp8_decode_f16(g, codes, n), vf, "");
    }
    int e = kiln_layout_weight_exp(g->l, 0);
    if (g->l->family == KILN_KF_F32_FMA || e == 0)
        return v;
    return LLVMBuildFMul(b, v, kg_splat(g, kg_f32(g, ldexp(1.0, -e)), n), "");
}

/* 2^kiln_layout_unscale_exp splatted: turns sums of weights read from their bits
 * times prescaled activations into the plain sums (ir/layout.h). */
LLVMValueRef kg_unscale(KilnGen *g)
{
    return kg_splat(g, kg_f32(g, ldexp(1.0, kiln_layout_unscale_exp(g->l))), (unsigned)g->l->VL);
}

/* Byte offset of (panel, group, vector v) in a [P][ngroups][NR] x 4-byte section. */
LLVMValueRef kg_vec_sect(KilnGen *g, KilnTile *t, size_t sect, LLVMValueRef gi, int v)
{
    const KilnLayout *l = g->l;
    LLVMBuilderRef b = g->b;
    LLVMValueRef pg = LLVMBuildAdd(b, LLVMBuildMul(b, t->p, kg_i64(g, l->ngroups), ""), gi, "");
    LLVMValueRef e = LLVMBuildAdd(b, LLVMBuildMul(b, pg, kg_i64(g, l->NR), ""),
                                  kg_i64(g, (int64_t)v * l->VL), "");
    return kg_gep(g, g->wp, LLVMBuildAdd(b, kg_i64(g, (int64_t)sect),
                                         LLVMBuildMul(b, e, kg_i64(g, 4), ""), ""));
}

/* Weight vector(s) for step j of block kb in the form the family's dot takes. */
LLVMValueRef kg_weight_operand(KilnGen *g, KilnTile *t, LLVMValueRef kb, int j, int v, LLVMValueRef zv)
{
    const KilnLayout *l = g->l;
    LLVMBuilderRef b = g->b;
    unsigned n = (unsigned)(l->VL * l->KR);
    if (l->wdt == KILN_F32) { /* unquantized layer: the panel holds the f32 weights (KR = 1) */
        LLVMValueRef k = LLVMBuildAdd(b, LLVMBuildMul(b, kb, kg_i64(g, l->KB), ""), kg_i64(g, j), "");
        LLVMValueRef el = LLVMBuildAdd(b, LLVMBuildMul(b, k, kg_i64(g, l->NR), ""),
                                       kg_i64(g, (int64_t)v * l->VL), "");
        return kg_load(g, g->vf, kg_gep(g, t->wpanel, LLVMBuildMul(b, el, kg_i64(g, 4), "")));
    }
    LLVMValueRef c = load_codes(g, t, kb, j, v, 1);
    switch (l->family) {
    case KILN_KF_I16_MADD:
        return int4_weights(l) ? c : LLVMBuildSExt(b, c, kg_vec(g->i16, n), "");
    case KILN_KF_U4S8_MADDUBS: return c; /* <32 x i8> unsigned nibbles */
    case KILN_KF_U8S8_VNNI: return LLVMBuildBitCast(b, c, g->vi, "");
    case KILN_KF_F32_FMA:
    case KILN_KF_BF16_DOT: {
        LLVMValueRef f;
        if (fp8_weights(l)) {
            f = fp8_decode(g, c, n);
        } else if (l->subnormal_decode) { /* word codes: u * 2^(bit - 149) */
            f = LLVMBuildBitCast(b, c, kg_vec(g->f32, n), "");
        } else {
            LLVMValueRef ci = LLVMGetElementType(LLVMTypeOf(c)) == g->i32
                                  ? c : LLVMBuildSExt(b, c, kg_vec(g->i32, n), "");
            if (zv)
                ci = LLVMBuildSub(b, ci, zv, "");
            f = LLVMBuildSIToFP(b, ci, kg_vec(g->f32, n), "");
        }
        if (l->family == KILN_KF_F32_FMA)
            return f;
        /* (q - z) and fp8 values are exact in bf16: truncation is exact. */
        LLVMValueRef bits = LLVMBuildLShr(b, LLVMBuildBitCast(b, f, kg_vec(g->i32, n), ""),
                                          kg_splat(g, kg_i32(g, 16), n), "");
        return LLVMBuildBitCast(b, LLVMBuildTrunc(b, bits, kg_vec(g->i16, n), ""), g->vi, "");
    }
    }
    return NULL;
}

/* f32-fma reads fp8 codes through f16 (without subnormal_decode) two vectors at
 * a time: one widening load, shift and mask for 2·VL codes, then a vcvtph2ps per
 * half. Per 32 codes (avx512) 9 vector µops instead of 12; the same products. */
static bool fp8_pairs(const KilnLayout *l, int nv)
{
    return fp8_weights(l) && l->family == KILN_KF_F32_FMA && !l->subnormal_decode && l->KR == 1 && nv % 2 == 0;
}

static void fp8_pair_operands(KilnGen *g, KilnTile *t, LLVMValueRef kb, int j, int v, LLVMValueRef w[2])
{
    unsigned VL = (unsigned)g->l->VL;
    LLVMValueRef h = fp8_decode_f16(g, load_codes(g, t, kb, j, v, 2), 2 * VL);
    for (unsigned q = 0; q < 2; q++) {
        LLVMValueRef mask[16];
        for (unsigned i = 0; i < VL; i++)
            mask[i] = kg_i32(g, (int)(q * VL + i));
        LLVMValueRef half = LLVMBuildShuffleVector(g->b, h, LLVMGetUndef(LLVMTypeOf(h)),
                                                   LLVMConstVector(mask, VL), "");
        w[q] = LLVMBuildFPExt(g->b, half, g->vf, "");
    }
}

static LLVMValueRef act_operand(KilnGen *g, KilnTile *t, int r, LLVMValueRef k)
{
    const KilnLayout *l = g->l;
    LLVMBuilderRef b = g->b;
    switch (l->family) {
    case KILN_KF_I16_MADD: {
        LLVMValueRef a = kg_load(g, g->i32, kg_gep(g, t->rowp[r], LLVMBuildMul(b, k, kg_i64(g, 2), "")));
        return LLVMBuildBitCast(b, kg_splat(g, a, (unsigned)l->VL), kg_vec(g->i16, (unsigned)l->VL * 2), "");
    }
    case KILN_KF_U8S8_VNNI:
        return kg_splat(g, kg_load(g, g->i32, kg_gep(g, t->rowp[r], k)), (unsigned)l->VL);
    case KILN_KF_U4S8_MADDUBS: /* 4 s8 activations, repeated per column */
        return LLVMBuildBitCast(b, kg_splat(g, kg_load(g, g->i32, kg_gep(g, t->rowp[r], k)), (unsigned)l->VL),
                                kg_vec(g->i8, 4 * (unsigned)l->VL), "");
    case KILN_KF_BF16_DOT: /* a pair of bf16 */
        return kg_splat(g, kg_load(g, g->i32, kg_gep(g, t->rowp[r], LLVMBuildMul(b, k, kg_i64(g, 2), ""))),
                        (unsigned)l->VL);
    case KILN_KF_F32_FMA:
        return kg_splat(g, kg_load(g, g->f32, kg_gep(g, t->rowp[r], LLVMBuildMul(b, k, kg_i64(g, 4), ""))),
                        (unsigned)l->VL);
    }
    return NULL;
}

static LLVMValueRef dot(KilnGen *g, LLVMValueRef acc, LLVMValueRef a, LLVMValueRef w)
{
    switch (g->l->family) {
    case KILN_KF_I16_MADD: {
        LLVMValueRef args[2] = {a, w};
        return LLVMBuildAdd(g->b, acc, kg_call_intr(g, "llvm.x86.avx2.pmadd.wd", NULL, 0, args, 2), "");
    }
    case KILN_KF_U8S8_VNNI: {
        LLVMValueRef args[3] = {acc, a, w};
        return kg_call_intr(g, "llvm.x86.avx512.vpdpbusd.512", NULL, 0, args, 3);
    }
    case KILN_KF_U4S8_MADDUBS: /* i16 partial sums (emit_maddubs_blocks widens them) */
        break;
    case KILN_KF_BF16_DOT: {
        /* LLVM 16's optimizer crashes on <32 x bfloat> values (the intrinsic's
         * operand type), so the instruction goes in as inline asm on i32 lanes. */
        LLVMValueRef args[3] = {acc, a, w};
        LLVMTypeRef pt[3] = {g->vf, g->vi, g->vi};
        LLVMTypeRef ft = LLVMFunctionType(g->vf, pt, 3, 0);
        static const char text[] = "vdpbf16ps $3, $2, $0", cons[] = "=v,0,v,v";
        LLVMValueRef ia = LLVMGetInlineAsm(ft, (char *)text, sizeof text - 1, (char *)cons,
                                           sizeof cons - 1, 0, 0, LLVMInlineAsmDialectATT, 0);
        return LLVMBuildCall2(g->b, ft, ia, args, 3, "");
    }
    case KILN_KF_F32_FMA: {
        LLVMValueRef args[3] = {a, w, acc};
        LLVMTypeRef vt = g->vf;
        return kg_call_intr(g, "llvm.fma", &vt, 1, args, 3);
    }
    }
    return NULL;
}

/* Zero points of the group, widened to the code vector's lanes (KR per column). */
LLVMValueRef kg_group_zeros(KilnGen *g, KilnTile *t, LLVMValueRef gi, int v)
{
    const KilnLayout *l = g->l;
    if (!l->zeros_off || kiln_layout_integer(l) || l->zero_by_sum)
        return NULL;
    LLVMValueRef z = kg_load(g, g->vi, kg_vec_sect(g, t, l->zeros_off, gi, v));
    if (l->KR == 1)
        return z;
    unsigned n = (unsigned)(l->VL * l->KR);
    LLVMValueRef mask[64];
    for (unsigned i = 0; i < n; i++)
        mask[i] = kg_i32(g, (int)(i / (unsigned)l->KR));
    return LLVMBuildShuffleVector(g->b, z, LLVMGetUndef(g->vi), LLVMConstVector(mask, n), "");
}

void kg_group_end(KilnGen *g, KilnTile *t, LLVMValueRef gi)
{
    const KilnLayout *l = g->l;
    LLVMBuilderRef b = g->b;
    unsigned VL = (unsigned)l->VL;
    for (int v = 0; v < t->NV; v++) {
        if (!l->scales_off) { /* f32 weights: no scales, the sum is the result */
            for (int r = 0; r < t->R; r++)
                kg_st(g, LLVMBuildFAdd(b, kg_ld(g, g->vf, t->facc[r][v]), kg_ld(g, g->vf, t->gacc[r][v][0]), ""),
                   t->facc[r][v]);
            continue;
        }
        LLVMValueRef sv = kg_load(g, g->vf, kg_vec_sect(g, t, l->scales_off, gi, v));
        LLVMValueRef wsum = l->wsum_off ? kg_load(g, g->vi, kg_vec_sect(g, t, l->wsum_off, gi, v)) : NULL;
        LLVMValueRef zv = (l->zeros_off && kiln_layout_integer(l))
                              ? kg_load(g, g->vi, kg_vec_sect(g, t, l->zeros_off, gi, v)) : NULL;
        if (l->family == KILN_KF_U4S8_MADDUBS) /* unsigned nibbles: Z = (z - wbias) + 8 */
            zv = zv ? LLVMBuildAdd(b, zv, kg_vsplat_i(g, g->i32, 8, VL), "") : kg_vsplat_i(g, g->i32, 8, VL);
        LLVMValueRef zf = NULL;
        if (l->zero_by_sum && l->zeros_off) {
            LLVMValueRef zi = kg_load(g, g->vi, kg_vec_sect(g, t, l->zeros_off, gi, v));
            if (kiln_layout_word_codes(l)) /* unsigned codes: z' = (z - wbias) + offset */
                zi = LLVMBuildAdd(b, zi, kg_vsplat_i(g, g->i32, kiln_layout_code_offset(l), VL), "");
            zf = LLVMBuildSIToFP(b, zi, g->vf, "");
        } else if (l->zero_by_sum) {
            zf = kg_splat(g, kg_f32(g, kiln_layout_code_offset(l)), VL);
        }
        for (int r = 0; r < t->R; r++) {
            LLVMValueRef ga = kg_ld(g, kiln_layout_integer(l) ? g->vi : g->vf, t->gacc[r][v][0]);
            LLVMValueRef fa = kg_ld(g, g->vf, t->facc[r][v]);
            if (!kiln_layout_integer(l)) {
                if (kiln_layout_unscale_exp(l))
                    ga = LLVMBuildFMul(b, ga, kg_unscale(g), "");
                if (zf) { /* sum a*(c - z') = sum a*c - z' * sum a */
                    LLVMValueRef off = LLVMBuildAdd(b, kg_i64(g, 8), LLVMBuildMul(b, gi, kg_i64(g, 4), ""), "");
                    LLVMValueRef xs = kg_splat(g, kg_load(g, g->f32, kg_gep(g, t->meta[r], off)), VL);
                    ga = LLVMBuildFSub(b, ga, LLVMBuildFMul(b, zf, xs, ""), "");
                }
                kg_st(g, LLVMBuildFAdd(b, fa, LLVMBuildFMul(b, sv, ga, ""), ""), t->facc[r][v]);
                continue;
            }
            if (wsum) { /* symmetric activations on vnni: ca is always the u8 offset 128 */
                LLVMValueRef ca = l->family == KILN_KF_U8S8_VNNI && l->aspec.symmetric
                    ? kg_i32(g, 128) : kg_load(g, g->i32, kg_gep(g, t->meta[r], kg_i64(g, 4)));
                ga = LLVMBuildSub(b, ga, LLVMBuildMul(b, wsum, kg_splat(g, ca, VL), ""), "");
            }
            if (zv) {
                LLVMValueRef off = LLVMBuildAdd(b, kg_i64(g, 8), LLVMBuildMul(b, gi, kg_i64(g, 4), ""), "");
                LLVMValueRef as = kg_load(g, g->i32, kg_gep(g, t->meta[r], off));
                ga = LLVMBuildSub(b, ga, LLVMBuildMul(b, zv, kg_splat(g, as, VL), ""), "");
            }
            LLVMValueRef f = LLVMBuildSIToFP(b, ga, g->vf, "");
            if (l->group_mode) {
                kg_st(g, LLVMBuildFAdd(b, fa, LLVMBuildFMul(b, sv, f, ""), ""), t->facc[r][v]);
            } else { /* the interpreter's order: ((float)acc * s_a) * s_w */
                LLVMValueRef sa = kg_splat(g, kg_load(g, g->f32, t->meta[r]), VL);
                kg_st(g, LLVMBuildFMul(b, LLVMBuildFMul(b, f, sa, ""), sv, ""), t->facc[r][v]);
            }
        }
    }
}


/* Packed blocks per maddubs loop iteration: up to 4 blocks = 8 vpmaddubsw
 * products summed in i16 (<= 8 * 3840 = 30720, exact) before one widening
 * vpmaddwd; it must divide the blocks of a group and of the ragged last one. */
static int maddubs_unroll(const KilnLayout *l)
{
    int64_t bpg = l->group / l->KB, tail = (l->K % l->group) / l->KB;
    for (int u = 4; u > 1; u /= 2)
        if (bpg % u == 0 && tail % u == 0)
            return u;
    return 1;
}

/* Blocks [kb0, kb1) of one group for u4s8-maddubs: per (row, vector) the U
 * blocks' vpmaddubsw products (unsigned nibbles x s8 activations) are added in
 * i16, then widened by vpmaddwd with 1s into the group's i32 sum. */
static void emit_maddubs_blocks(KilnGen *g, KilnTile *t, LLVMValueRef kb0, LLVMValueRef kb1)
{
    const KilnLayout *l = g->l;
    LLVMBuilderRef b = g->b;
    int U = maddubs_unroll(l);
    LLVMValueRef ones = kg_vsplat_i(g, g->i16, 1, 2 * (unsigned)l->VL);
    KilnLoop lk;
    LLVMValueRef kb = kg_loop_begin(g, &lk, kb0, kb1, U);
    LLVMValueRef h[KG_MAXR][KG_MAXNV] = {{0}};
    for (int u = 0; u < U; u++) {
        LLVMValueRef kbu = LLVMBuildAdd(b, kb, kg_i64(g, u), "");
        if (t->R == 1)
            kg_prefetch_ahead(g, t, kbu);
        kg_load_packed(g, t, kbu);
        for (int j = 0; j < l->KB / l->KR; j++) {
            LLVMValueRef k = LLVMBuildAdd(b, LLVMBuildMul(b, kbu, kg_i64(g, l->KB), ""),
                                          kg_i64(g, (int64_t)j * l->KR), "");
            LLVMValueRef w[KG_MAXNV];
            for (int v = 0; v < t->NV; v++)
                w[v] = kg_weight_operand(g, t, kbu, j, v, NULL);
            for (int r = 0; r < t->R; r++) {
                LLVMValueRef a = act_operand(g, t, r, k);
                for (int v = 0; v < t->NV; v++) {
                    LLVMValueRef args[2] = {w[v], a};
                    LLVMValueRef p = kg_call_intr(g, "llvm.x86.avx2.pmadd.ub.sw", NULL, 0, args, 2);
                    h[r][v] = h[r][v] ? LLVMBuildAdd(b, h[r][v], p, "") : p;
                }
            }
        }
    }
    for (int r = 0; r < t->R; r++)
        for (int v = 0; v < t->NV; v++) {
            LLVMValueRef args[2] = {h[r][v], ones};
            LLVMValueRef wide = kg_call_intr(g, "llvm.x86.avx2.pmadd.wd", NULL, 0, args, 2);
            kg_st(g, LLVMBuildAdd(b, kg_ld(g, g->vi, t->gacc[r][v][0]), wide, ""), t->gacc[r][v][0]);
        }
    kg_loop_end(g, &lk);
}

/* Row r of tile t: m0 + r, or with mlast set no further than mlast. */
static LLVMValueRef kg_tile_m(KilnGen *g, const KilnTile *t, int r)
{
    LLVMValueRef m = LLVMBuildAdd(g->b, t->m0, kg_i64(g, r), "");
    if (!t->mlast || r == 0)
        return m;
    return LLVMBuildSelect(g->b, LLVMBuildICmp(g->b, LLVMIntSLT, m, t->mlast, ""), m, t->mlast, "");
}

static void emit_tile(KilnGen *g, KilnTile *t)
{
    const KilnLayout *l = g->l;
    LLVMBuilderRef b = g->b;
    LLVMTypeRef gt = kiln_layout_integer(l) ? g->vi : g->vf;
    for (int r = 0; r < t->R; r++) {
        LLVMValueRef m = kg_tile_m(g, t, r);
        if (l->act_row_bytes) {
            t->rowp[r] = kg_gep(g, g->scratch, LLVMBuildMul(b, m, kg_i64(g, (int64_t)l->scratch_per_row), ""));
            t->meta[r] = kg_gep(g, t->rowp[r], kg_i64(g, (int64_t)l->meta_off));
        } else {
            t->rowp[r] = kg_gep(g, g->x, LLVMBuildMul(b, m, kg_i64(g, l->K * 4), ""));
            t->meta[r] = NULL;
        }
        for (int v = 0; v < t->NV; v++) {
            t->facc[r][v] = kg_alloca(g, g->vf, "facc");
            for (int ph = 0; ph < t->P; ph++)
                t->gacc[r][v][ph] = kg_alloca(g, gt, "gacc");
            kg_st(g, LLVMConstNull(g->vf), t->facc[r][v]);
        }
    }
    int64_t bpg = l->group / l->KB; /* packed blocks per group */
    int steps = l->KB / l->KR;      /* dot steps per block, unrolled */
    KilnLoop lg;
    LLVMValueRef gi = kg_loop_begin(g, &lg, kg_i64(g, 0), kg_i64(g, l->ngroups), 1);
    LLVMValueRef zv[KG_MAXNV];
    for (int v = 0; v < t->NV; v++) {
        zv[v] = kg_group_zeros(g, t, gi, v);
        for (int r = 0; r < t->R; r++)
            for (int ph = 0; ph < t->P; ph++)
                kg_st(g, LLVMConstNull(gt), t->gacc[r][v][ph]);
    }
    LLVMValueRef kb0 = LLVMBuildMul(b, gi, kg_i64(g, bpg), "");
    KilnLoop lk;
    LLVMValueRef kb1 = LLVMBuildAdd(b, kb0, kg_i64(g, bpg), "");
    if (l->K % l->group) /* ragged last group: it ends at K (K/KB blocks) */
        kb1 = LLVMBuildSelect(b, LLVMBuildICmp(b, LLVMIntSLT, kb1, kg_i64(g, l->K / l->KB), ""), kb1,
                              kg_i64(g, l->K / l->KB), "");
    if (l->family == KILN_KF_U4S8_MADDUBS) {
        emit_maddubs_blocks(g, t, kb0, kb1);
        kg_group_end(g, t, gi);
        kg_loop_end(g, &lg);
        kg_emit_tile_store(g, t);
        return;
    }
    bool pairs = fp8_pairs(l, t->NV);
    LLVMValueRef kb = kg_loop_begin(g, &lk, kb0, kb1, 1);
    if ((t->R == 1 || l->blocked) && l->wdt != KILN_F32) /* tiles that stream the panel from DRAM */
        kg_prefetch_ahead(g, t, kb);
    if (kg_packed_words(l))
        kg_load_packed(g, t, kb);
    for (int j = 0; j < steps; j++) {
        LLVMValueRef k = LLVMBuildAdd(b, LLVMBuildMul(b, kb, kg_i64(g, l->KB), ""),
                                      kg_i64(g, (int64_t)j * l->KR), "");
        LLVMValueRef w[KG_MAXNV];
        for (int v = 0; v < t->NV; v += pairs ? 2 : 1) {
            if (pairs)
                fp8_pair_operands(g, t, kb, j, v, &w[v]);
            else
                w[v] = kg_weight_operand(g, t, kb, j, v, zv[v]);
        }
        int ph = j % t->P;
        for (int r = 0; r < t->R; r++) {
            LLVMValueRef a = act_operand(g, t, r, k);
            for (int v = 0; v < t->NV; v++)
                kg_st(g, dot(g, kg_ld(g, gt, t->gacc[r][v][ph]), a, w[v]), t->gacc[r][v][ph]);
        }
    }
    kg_loop_end(g, &lk);
    for (int r = 0; r < t->R; r++) /* fold the chains (integer sums stay exact) */
        for (int v = 0; v < t->NV; v++)
            for (int ph = 1; ph < t->P; ph++) {
                LLVMValueRef s0 = kg_ld(g, gt, t->gacc[r][v][0]), s1 = kg_ld(g, gt, t->gacc[r][v][ph]);
                kg_st(g, kiln_layout_integer(l) ? LLVMBuildAdd(b, s0, s1, "") : LLVMBuildFAdd(b, s0, s1, ""),
                   t->gacc[r][v][0]);
            }
    kg_group_end(g, t, gi);
    kg_loop_end(g, &lg);
    kg_emit_tile_store(g, t);
}

/* The tile's f32 sums (activation scale last where the interpreter applies it
 * last) through the epilogue into y. */
void kg_emit_tile_store(KilnGen *g, KilnTile *t)
{
    const KilnLayout *l = g->l;
    LLVMBuilderRef b = g->b;
    bool scale_after = !l->weight_only && (l->group_mode || !kiln_layout_integer(l));
    LLVMValueRef tmp = kg_alloca(g, LLVMArrayType(g->f32, (unsigned)(KG_MAXR * l->NR)), "tile");
    for (int r = 0; r < t->R; r++)
        for (int v = 0; v < t->NV; v++) {
            LLVMValueRef f = kg_ld(g, g->vf, t->facc[r][v]);
            if (scale_after)
                f = LLVMBuildFMul(b, f, kg_splat(g, kg_load(g, g->f32, t->meta[r]), (unsigned)l->VL), "");
            kg_store(g, f, kg_gep(g, tmp, kg_i64(g, ((int64_t)r * l->NR + (int64_t)v * l->VL) * 4)));
        }
    kg_emit_epilogue_store(g, t, tmp);
}

void kg_emit_epilogue_store(KilnGen *g, KilnTile *t, LLVMValueRef tmp)
{
    const KilnLayout *l = g->l;
    LLVMBuilderRef b = g->b;
    KilnLoop lj;
    LLVMValueRef j = kg_loop_begin(g, &lj, kg_i64(g, 0), t->ncols, 1);
    LLVMValueRef n = LLVMBuildAdd(b, LLVMBuildMul(b, t->p, kg_i64(g, l->NR), ""), j, "");
    LLVMValueRef bias = l->has_bias
        ? kg_load(g, g->f32, kg_gep(g, g->bias, LLVMBuildMul(b, n, kg_i64(g, 4), ""))) : NULL;
    int osz = l->out_dt == KILN_F32 ? 4 : 2;
    for (int r = 0; r < t->R; r++) {
        LLVMValueRef off = LLVMBuildMul(b, LLVMBuildAdd(b, j, kg_i64(g, (int64_t)r * l->NR), ""), kg_i64(g, 4), "");
        LLVMValueRef v = kg_load(g, g->f32, kg_gep(g, tmp, off));
        if (bias)
            v = LLVMBuildFAdd(b, v, bias, "");
        if (l->epilogue == KILN_EPI_SILU) {
            LLVMValueRef e = kg_call_libm(g, "expf", LLVMBuildFNeg(b, v, ""));
            v = LLVMBuildFDiv(b, v, LLVMBuildFAdd(b, kg_f32(g, 1), e, ""), "");
        } else if (l->epilogue == KILN_EPI_GELU) {
            LLVMValueRef e = kg_call_libm(g, "erff", LLVMBuildFMul(b, v, kg_f32(g, M_SQRT1_2), ""));
            v = LLVMBuildFMul(b, LLVMBuildFMul(b, kg_f32(g, 0.5), v, ""),
                              LLVMBuildFAdd(b, kg_f32(g, 1), e, ""), "");
        }
        LLVMValueRef row = kg_tile_m(g, t, r);
        LLVMValueRef idx = LLVMBuildAdd(b, LLVMBuildMul(b, row, kg_i64(g, l->N), ""), n, "");
        LLVMValueRef p = kg_gep(g, g->y, LLVMBuildMul(b, idx, kg_i64(g, osz), ""));
        if (l->out_dt == KILN_F16)
            v = LLVMBuildBitCast(b, LLVMBuildFPTrunc(b, v, g->f16, ""), g->i16, "");
        else if (l->out_dt == KILN_BF16)
            v = kg_f32_to_bf16_bits(g, v);
        kg_store(g, v, p);
    }
    kg_loop_end(g, &lj);
}

static void add_fn_attr(KilnGen *g, const char *k, const char *v)
{
    LLVMAttributeRef a = LLVMCreateStringAttribute(g->c, k, (unsigned)strlen(k), v, (unsigned)strlen(v));
    LLVMAddAttributeAtIndex(g->fn, LLVMAttributeFunctionIndex, a);
}

static void add_enum_attr(KilnGen *g, unsigned idx, const char *k)
{
    unsigned kind = LLVMGetEnumAttributeKindForName(k, strlen(k));
    LLVMAddAttributeAtIndex(g->fn, idx, LLVMCreateEnumAttribute(g->c, kind, 0));
}

/* t's panel p: its columns (ncols, the last panel may be partial) and codes. */
void kg_panel_begin(KilnGen *g, KilnTile *t, LLVMValueRef p)
{
    const KilnLayout *l = g->l;
    LLVMBuilderRef b = g->b;
    LLVMValueRef NR = kg_i64(g, l->NR);
    t->p = p;
    LLVMValueRef rem = LLVMBuildSub(b, g->n1, LLVMBuildMul(b, p, NR, ""), "");
    t->ncols = LLVMBuildSelect(b, LLVMBuildICmp(b, LLVMIntSLT, rem, NR, ""), rem, NR, "");
    t->wpanel = kg_gep(g, g->wp, LLVMBuildAdd(b, kg_i64(g, (int64_t)l->codes_off),
                                               LLVMBuildMul(b, p, kg_i64(g, (int64_t)l->panel_code_bytes), ""), ""));
}

/* The direct path's rows of panel t (every M for unblocked layouts, M < blocked_min_m
 * for blocked ones). */
static void emit_direct_rows(KilnGen *g, KilnTile *t)
{
    const KilnLayout *l = g->l;
    LLVMBuilderRef b = g->b;
    /* MR-row tiles, then single rows. Blocked layouts see only M < blocked_min_m
     * here (decode batches): on 512-bit levels 5..7 rows take one 2·MR-row tile,
     * otherwise the MR-row tile also takes 2 or 3 rows left over; missing rows of a
     * tile repeat the last one (same sums, stored to the same y), so a panel is
     * decoded once or twice, not once per row. act_planes layouts run calls with
     * M < planes_below_m row by row on vpdpbusd instead, and only those. */
    LLVMValueRef m8 = kg_i64(g, 0);
    if (l->blocked)
        t->mlast = LLVMBuildSub(b, g->M, kg_i64(g, 1), "");
    if (l->blocked && l->VL == 16) { /* 5..7 rows on one 8-row tile (32 zmm: 16 accumulators) */
        m8 = LLVMBuildSelect(b, LLVMBuildICmp(b, LLVMIntSGT, g->M, kg_i64(g, l->MR), ""), g->M, m8, "");
        KilnLoop l8;
        t->R = 2 * l->MR;
        t->P = 1;
        t->m0 = kg_loop_begin(g, &l8, kg_i64(g, 0), m8, 2 * l->MR);
        emit_tile(g, t);
        kg_loop_end(g, &l8);
    }
    LLVMValueRef mfull = LLVMBuildAdd(b, m8, LLVMBuildMul(b, LLVMBuildSDiv(b, LLVMBuildSub(b, g->M, m8, ""),
                                                                           kg_i64(g, l->MR), ""),
                                                          kg_i64(g, l->MR), ""), "");
    if (l->blocked) {
        LLVMValueRef rest = LLVMBuildICmp(b, LLVMIntSGE, LLVMBuildSub(b, g->M, mfull, ""), kg_i64(g, 2), "");
        mfull = LLVMBuildSelect(b, rest, g->M, mfull, "");
        if (l->act_planes)
            mfull = LLVMBuildSelect(b, LLVMBuildICmp(b, LLVMIntSLT, g->M, kg_i64(g, l->planes_below_m), ""),
                                    kg_i64(g, 0), mfull, "");
    }
    KilnLoop lm;
    t->R = l->MR;
    t->P = 1;
    t->m0 = kg_loop_begin(g, &lm, m8, mfull, l->MR);
    emit_tile(g, t);
    kg_loop_end(g, &lm);
    t->mlast = NULL;
    KilnLoop lr;
    t->R = 1;
    /* one row: a single chain per vector would wait on the FMA (vpdpbusd) latency;
     * up to 4 chains per vector (docs/jit-aot.md). */
    t->P = l->family == KILN_KF_I16_MADD || l->family == KILN_KF_U4S8_MADDUBS ? 1
        : l->KB / l->KR < KG_MAXP ? l->KB / l->KR : KG_MAXP;
    t->m0 = kg_loop_begin(g, &lr, mfull, g->M, 1);
    if (l->act_planes) /* decode rows on vpdpbusd (M < planes_below_m: the MR tiles took the others) */
        kg_emit_planes_tile(g, t);
    else
        emit_tile(g, t);
    kg_loop_end(g, &lr);
}

int kg_emit_qgemm(KilnGen *g, const char *symbol, KilnDiag *d)
{
    const KilnLayout *l = g->l;
    if (l->NR > KG_MAXNV * l->VL || l->MR > KG_MAXR)
        return kiln_diag_set(d, KILN_EINTERNAL, "qgemm codegen: tile %dx%d too large", l->MR, l->NR);
    LLVMTypeRef params[8] = {g->ptr, g->i64, g->ptr, g->ptr, g->ptr, g->i64, g->i64, g->ptr};
    g->fn = LLVMAddFunction(g->m, symbol, LLVMFunctionType(LLVMVoidTypeInContext(g->c), params, 8, 0));
    add_fn_attr(g, "target-cpu", g->cpu);
    add_fn_attr(g, "target-features", g->features);
    if (l->VL == 16) {
        add_fn_attr(g, "min-legal-vector-width", "512");
        add_fn_attr(g, "prefer-vector-width", "512");
    }
    add_enum_attr(g, LLVMAttributeFunctionIndex, "nounwind");
    add_enum_attr(g, 5, "noalias"); /* y */
    add_enum_attr(g, 8, "noalias"); /* scratch */
    LLVMValueRef *args[8] = {&g->x, &g->M, &g->wp, &g->bias, &g->y, &g->n0, &g->n1, &g->scratch};
    for (unsigned i = 0; i < 8; i++)
        *args[i] = LLVMGetParam(g->fn, i);
    LLVMBasicBlockRef entry = LLVMAppendBasicBlockInContext(g->c, g->fn, "entry");
    LLVMBasicBlockRef start = LLVMAppendBasicBlockInContext(g->c, g->fn, "start");
    LLVMPositionBuilderAtEnd(g->ab, entry);
    LLVMPositionBuilderAtEnd(g->b, start);
    LLVMBuilderRef b = g->b;

    /* The "-subnormal" layouts compute with subnormal weights (int4/fp8 read from
     * their bits, ir/layout.h): a caller's denormals-are-zero / flush-to-zero mode
     * (-ffast-math startup code, torch's set_flush_denormal) would drop them, so the
     * kernel clears both MXCSR bits for its run and restores the caller's register
     * on return. The portable layouts never make an f32 subnormal weight. */
    LLVMValueRef mxcsr = NULL;
    if (l->subnormal_decode) {
        mxcsr = kg_alloca(g, g->i32, "mxcsr");
        LLVMValueRef mine = kg_alloca(g, g->i32, "mxcsr_kiln");
        kg_call_intr(g, "llvm.x86.sse.stmxcsr", NULL, 0, &mxcsr, 1);
        LLVMValueRef v = LLVMBuildAnd(b, LLVMBuildLoad2(b, g->i32, mxcsr, ""), kg_i32(g, ~(0x40 | 0x8000)), "");
        LLVMBuildStore(b, v, mine);
        kg_call_intr(g, "llvm.x86.sse.ldmxcsr", NULL, 0, &mine, 1);
    }
    kg_emit_act_prep(g);
    LLVMValueRef NR = kg_i64(g, l->NR);
    LLVMValueRef p0 = LLVMBuildSDiv(b, g->n0, NR, "");
    LLVMValueRef p1 = LLVMBuildSDiv(b, LLVMBuildAdd(b, g->n1, kg_i64(g, l->NR - 1), ""), NR, "");
    LLVMBasicBlockRef done = NULL;
    if (l->tiles) { /* from tiles_min_m rows the tile path, which walks the panels itself */
        LLVMBasicBlockRef tiles = LLVMAppendBasicBlockInContext(g->c, g->fn, "tiles");
        LLVMBasicBlockRef vec = LLVMAppendBasicBlockInContext(g->c, g->fn, "vectors");
        done = LLVMAppendBasicBlockInContext(g->c, g->fn, "done");
        LLVMBuildCondBr(b, LLVMBuildICmp(b, LLVMIntSGE, g->M, kg_i64(g, l->tiles_min_m), ""), tiles, vec);
        LLVMPositionBuilderAtEnd(b, tiles);
        if (l->family == KILN_KF_BF16_DOT)
            kg_emit_amx_bf16_panels(g, p0, p1);
        else
            kg_emit_amx(g, p0, p1);
        LLVMBuildBr(b, done);
        LLVMPositionBuilderAtEnd(b, vec);
    }
    KilnLoop lp;
    KilnTile t = {.NV = l->NR / l->VL};
    kg_panel_begin(g, &t, kg_loop_begin(g, &lp, p0, p1, 1));
    LLVMBasicBlockRef direct = NULL, next = NULL;
    if (l->blocked) { /* the prefill path from blocked_min_m rows */
        LLVMBasicBlockRef blk = LLVMAppendBasicBlockInContext(g->c, g->fn, "blocked");
        direct = LLVMAppendBasicBlockInContext(g->c, g->fn, "direct");
        next = LLVMAppendBasicBlockInContext(g->c, g->fn, "panel_done");
        LLVMBuildCondBr(b, LLVMBuildICmp(b, LLVMIntSGE, g->M, kg_i64(g, l->blocked_min_m), ""), blk, direct);
        LLVMPositionBuilderAtEnd(b, blk);
        KilnTile tb = t;
        kg_emit_blocked_panel(g, &tb);
        LLVMBuildBr(b, next);
        LLVMPositionBuilderAtEnd(b, direct);
    }
    emit_direct_rows(g, &t);
    if (next) {
        LLVMBuildBr(b, next);
        LLVMPositionBuilderAtEnd(b, next);
    }
    kg_loop_end(g, &lp);
    if (done) {
        LLVMBuildBr(b, done);
        LLVMPositionBuilderAtEnd(b, done);
    }
    if (mxcsr)
        kg_call_intr(g, "llvm.x86.sse.ldmxcsr", NULL, 0, &mxcsr, 1);
    LLVMBuildRetVoid(b);
    LLVMBuildBr(g->ab, start);
    return 0;
}
