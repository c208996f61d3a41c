/* codegen/cpu/qgemm_planes.c — the decode rows (M < blocked_min_m) of f32-fma's
 * word-code layouts on VNNI levels (l->act_planes, ir/layout.h): the prologue
 * writes a row's rounded activations as four byte planes of balanced base-256
 * digits of block-scaled integers, and a one-row kernel runs vpdpbusd with the
 * stored unsigned codes as the u8 operand and four digits of a plane broadcast as
 * the s8 one. No code is converted to f32: one vpdpbusd per 16 weights and plane,
 * where the f32 path spends a mask or shift, a vcvtdq2ps and an FMA. */
#include <math.h>

#include "codegen/cpu/gen.h"

enum { PLANES = 4, META_BYTES = 16 }; /* per block: f32 2^-sh1, 2^-sh2, i32 D01, D23 */

/* f32 2^e for e in [-126, 127], from its bits. */
static LLVMValueRef pow2f(KilnGen *g, LLVMValueRef e)
{
    LLVMValueRef bits = LLVMBuildShl(g->b, LLVMBuildAdd(g->b, e, kg_i32(g, 127), ""), kg_i32(g, 23), "");
    return LLVMBuildBitCast(g->b, bits, g->f32, "");
}

static LLVMValueRef vsext8(KilnGen *g, LLVMValueRef v)
{
    LLVMValueRef sh = kg_vsplat_i(g, g->i32, 24, (unsigned)g->l->VL);
    return LLVMBuildAShr(g->b, LLVMBuildShl(g->b, v, sh, ""), sh, "");
}

/* One plane's VL digits as bytes, in the plane's order (layout.h): k for int8
 * words; for int4 words, per 8 k, k = 0 2 4 6 then 1 3 5 7. */
static void store_digits(KilnGen *g, LLVMValueRef d, LLVMValueRef p)
{
    unsigned VL = (unsigned)g->l->VL;
    if (!g->l->int8_words) {
        LLVMValueRef mask[16];
        for (unsigned i = 0; i < VL; i++)
            mask[i] = kg_i32(g, (int)((i & ~7u) + (i & 4 ? 2 * (i & 3) + 1 : 2 * (i & 3))));
        d = LLVMBuildShuffleVector(g->b, d, LLVMGetUndef(g->vi), LLVMConstVector(mask, VL), "");
    }
    kg_store(g, LLVMBuildTrunc(g->b, d, kg_vec(g->i8, VL), ""), p);
}

static LLVMValueRef reduce(KilnGen *g, const char *name, LLVMValueRef v)
{
    LLVMTypeRef t = LLVMTypeOf(v);
    return kg_call_intr(g, name, &t, 1, &v, 1);
}

/* Row m's planes and block meta at rowp (layout.h, act_planes), VL k at a time (ablk
 * is a multiple of 16). A block whose largest |a| is inf or NaN gets a NaN factor, so
 * its rows come out NaN. */
static void emit_planes_row(KilnGen *g, LLVMValueRef m, LLVMValueRef rowp)
{
    const KilnLayout *l = g->l;
    LLVMBuilderRef b = g->b;
    unsigned VL = (unsigned)l->VL;
    LLVMTypeRef vf = g->vf;
    LLVMValueRef xrow = kg_gep(g, g->x, LLVMBuildMul(b, m, kg_i64(g, l->K * 4), ""));
    LLVMValueRef meta = kg_gep(g, rowp, kg_i64(g, (int64_t)l->meta_off));
    LLVMValueRef vmax = kg_alloca(g, g->vi, "vmax");
    LLVMValueRef d01 = kg_alloca(g, g->vi, "d01"), d23 = kg_alloca(g, g->vi, "d23");
    KilnLoop lb;
    LLVMValueRef bi = kg_loop_begin(g, &lb, kg_i64(g, 0), kg_i64(g, l->nablk), 1);
    LLVMValueRef k0 = LLVMBuildMul(b, bi, kg_i64(g, l->ablk), "");
    LLVMValueRef k1 = LLVMBuildAdd(b, k0, kg_i64(g, l->ablk), "");
    kg_st(g, LLVMConstNull(g->vi), vmax);
    KilnLoop lk;
    LLVMValueRef k = kg_loop_begin(g, &lk, k0, k1, VL);
    LLVMValueRef v = kg_round_act(g, l->act_dtype, kg_load(g, vf, kg_gep(g, xrow, LLVMBuildMul(b, k, kg_i64(g, 4), ""))));
    /* |v| as bits: ordered like the values, NaN above inf */
    LLVMValueRef mm[2] = {kg_ld(g, g->vi, vmax),
                          LLVMBuildAnd(b, LLVMBuildBitCast(b, v, g->vi, ""), kg_vsplat_i(g, g->i32, 0x7FFFFFFF, VL), "")};
    LLVMTypeRef vit = g->vi;
    kg_st(g, kg_call_intr(g, "llvm.umax", &vit, 1, mm, 2), vmax);
    kg_loop_end(g, &lk);
    /* sh = 29 - floor(log2 amax): |A| < 2^30. A zero or subnormal maximum counts as
     * 2^-126; 2^sh and 2^-sh go as two normal factors each (sh is -98..155). */
    LLVMValueRef amax = reduce(g, "llvm.vector.reduce.umax", kg_ld(g, g->vi, vmax));
    LLVMValueRef ebits = LLVMBuildLShr(b, amax, kg_i32(g, 23), "");
    LLVMValueRef bad = LLVMBuildICmp(b, LLVMIntEQ, ebits, kg_i32(g, 0xFF), "");
    ebits = LLVMBuildSelect(b, LLVMBuildICmp(b, LLVMIntEQ, ebits, kg_i32(g, 0), ""), kg_i32(g, 1), ebits, "");
    ebits = LLVMBuildSelect(b, bad, kg_i32(g, 127), ebits, "");
    LLVMValueRef sh = LLVMBuildSub(b, kg_i32(g, 29 + 127), ebits, "");
    LLVMValueRef sh1 = LLVMBuildAShr(b, sh, kg_i32(g, 1), "");
    LLVMValueRef sh2 = LLVMBuildSub(b, sh, sh1, "");
    LLVMValueRef mo = kg_gep(g, meta, LLVMBuildMul(b, bi, kg_i64(g, META_BYTES), ""));
    kg_store(g, LLVMBuildSelect(b, bad, kg_f32(g, NAN), pow2f(g, LLVMBuildNeg(b, sh1, "")), ""), mo);
    kg_store(g, pow2f(g, LLVMBuildNeg(b, sh2, "")), kg_gep(g, mo, kg_i64(g, 4)));
    LLVMValueRef s1 = kg_splat(g, pow2f(g, sh1), VL), s2 = kg_splat(g, pow2f(g, sh2), VL);
    kg_st(g, LLVMConstNull(g->vi), d01);
    kg_st(g, LLVMConstNull(g->vi), d23);
    k = kg_loop_begin(g, &lk, k0, k1, VL);
    v = kg_round_act(g, l->act_dtype, kg_load(g, vf, kg_gep(g, xrow, LLVMBuildMul(b, k, kg_i64(g, 4), ""))));
    LLVMValueRef av = LLVMBuildFMul(b, LLVMBuildFMul(b, v, s1, ""), s2, ""); /* exact */
    av = kg_call_intr(g, "llvm.roundeven", &vf, 1, &av, 1);
    LLVMValueRef lo[2] = {av, kg_splat(g, kg_f32(g, -0x1p30), VL)}; /* NaN -> a number */
    av = kg_call_intr(g, "llvm.maxnum", &vf, 1, lo, 2);
    LLVMValueRef hi[2] = {av, kg_splat(g, kg_f32(g, 0x1p30), VL)};
    av = kg_call_intr(g, "llvm.minnum", &vf, 1, hi, 2);
    LLVMValueRef r = LLVMBuildFPToSI(b, av, g->vi, ""), d[PLANES];
    LLVMValueRef eight = kg_vsplat_i(g, g->i32, 8, VL);
    for (int p = 0; p < PLANES; p++) { /* balanced digits: d = sext(low byte), r = (r - d) >> 8 */
        d[p] = p < PLANES - 1 ? vsext8(g, r) : r;
        r = LLVMBuildAShr(b, LLVMBuildSub(b, r, d[p], ""), eight, "");
        store_digits(g, d[p], kg_gep(g, rowp, LLVMBuildAdd(b, k, kg_i64(g, (int64_t)p * l->K), "")));
    }
    kg_st(g, LLVMBuildAdd(b, kg_ld(g, g->vi, d01), LLVMBuildAdd(b, d[0], LLVMBuildShl(b, d[1], eight, ""), ""), ""), d01);
    kg_st(g, LLVMBuildAdd(b, kg_ld(g, g->vi, d23), LLVMBuildAdd(b, d[2], LLVMBuildShl(b, d[3], eight, ""), ""), ""), d23);
    kg_loop_end(g, &lk);
    kg_store(g, reduce(g, "llvm.vector.reduce.add", kg_ld(g, g->vi, d01)), kg_gep(g, mo, kg_i64(g, 8)));
    kg_store(g, reduce(g, "llvm.vector.reduce.add", kg_ld(g, g->vi, d23)), kg_gep(g, mo, kg_i64(g, 12)));
    kg_loop_end(g, &lb);
}

void kg_emit_planes_prep(KilnGen *g)
{
    const KilnLayout *l = g->l;
    KilnLoop lm;
    LLVMValueRef m = kg_loop_begin(g, &lm, kg_i64(g, 0), g->M, 1);
    emit_planes_row(g, m, kg_gep(g, g->scratch, LLVMBuildMul(g->b, m, kg_i64(g, (int64_t)l->scratch_per_row), "")));
    kg_loop_end(g, &lm);
}

static LLVMValueRef dpbusd(KilnGen *g, LLVMValueRef acc, LLVMValueRef u8, LLVMValueRef s8)
{
    LLVMValueRef args[3] = {acc, u8, s8};
    return kg_call_intr(g, "llvm.x86.avx512.vpdpbusd.512", NULL, 0, args, 3);
}

/* The sums of word block kb into chains s[ph]: int8 words one block per chain
 * (the caller alternates), int4 words the low nibbles into s[0], the high into s[1]. */
static void emit_block(KilnGen *g, KilnTile *t, LLVMValueRef kb, int ph,
                       LLVMValueRef s[2][PLANES][KG_MAXNV])
{
    const KilnLayout *l = g->l;
    LLVMBuilderRef b = g->b;
    kg_prefetch_ahead(g, t, kb);
    kg_load_packed(g, t, kb);
    LLVMValueRef kpos = LLVMBuildMul(b, kb, kg_i64(g, l->KB), "");
    int halves = l->int8_words ? 1 : 2;
    for (int h = 0; h < halves; h++) {
        LLVMValueRef dg[PLANES];
        for (int p = 0; p < PLANES; p++) {
            LLVMValueRef off = LLVMBuildAdd(b, kpos, kg_i64(g, (int64_t)p * l->K + 4 * h), "");
            dg[p] = kg_splat(g, kg_load(g, g->i32, kg_gep(g, t->rowp[0], off)), (unsigned)l->VL);
        }
        for (int v = 0; v < t->NV; v++) {
            LLVMValueRef w = t->packed[v];
            if (!l->int8_words) /* the high nibbles stay in place: 16 u (the block end divides) */
                w = LLVMBuildAnd(b, w, kg_vsplat_i(g, g->i32, h ? (int32_t)0xF0F0F0F0u : 0x0F0F0F0F,
                                                   (unsigned)l->VL), "");
            int c = l->int8_words ? ph : h;
            for (int p = 0; p < PLANES; p++)
                kg_st(g, dpbusd(g, kg_ld(g, g->vi, s[c][p][v]), w, dg[p]), s[c][p][v]);
        }
    }
}

/* Block bi's sums into facc: T01 = S0 + 2^8 S1 - Z*D01, T23 likewise, then
 * (T01 + 2^16 T23) * 2^-sh times the weight scale. int4 words keep 16 S_p (the low
 * nibbles' chain shifted up by 4 plus the high nibbles', read in place as 16 u) and
 * 16 Z: |16 T| <= 16 * 128 * 15 * 32896 < 2^31; 2^-sh takes the 1/16. */
static void emit_block_end(KilnGen *g, KilnTile *t, LLVMValueRef bi, LLVMValueRef s[2][PLANES][KG_MAXNV])
{
    const KilnLayout *l = g->l;
    LLVMBuilderRef b = g->b;
    unsigned VL = (unsigned)l->VL;
    LLVMTypeRef vf = g->vf;
    LLVMValueRef mo = kg_gep(g, t->meta[0], LLVMBuildMul(b, bi, kg_i64(g, META_BYTES), ""));
    LLVMValueRef e1 = kg_splat(g, kg_load(g, g->f32, mo), VL);
    int unit = l->int8_words ? 1 : 16;
    LLVMValueRef e2 = kg_load(g, g->f32, kg_gep(g, mo, kg_i64(g, 4)));
    e2 = kg_splat(g, unit > 1 ? LLVMBuildFMul(b, e2, kg_f32(g, 1.0 / unit), "") : e2, VL);
    LLVMValueRef dd[2] = {kg_load(g, g->i32, kg_gep(g, mo, kg_i64(g, 8))),
                          kg_load(g, g->i32, kg_gep(g, mo, kg_i64(g, 12)))};
    LLVMValueRef wg = LLVMBuildSDiv(b, LLVMBuildMul(b, bi, kg_i64(g, l->ablk), ""), kg_i64(g, l->group), "");
    int z0 = kiln_layout_code_offset(l); /* Z of symmetric codes; asymmetric: zero + z0 */
    for (int v = 0; v < t->NV; v++) {
        LLVMValueRef sv = kg_load(g, vf, kg_vec_sect(g, t, l->scales_off, wg, v));
        LLVMValueRef zv = NULL; /* unit * Z per column */
        if (l->zeros_off)
            zv = LLVMBuildMul(b, LLVMBuildAdd(b, kg_load(g, g->vi, kg_vec_sect(g, t, l->zeros_off, wg, v)),
                                              kg_vsplat_i(g, g->i32, z0, VL), ""),
                              kg_vsplat_i(g, g->i32, unit, VL), "");
        LLVMValueRef tt[2];
        for (int h = 0; h < 2; h++) {
            LLVMValueRef sp[2];
            for (int q = 0; q < 2; q++) {
                LLVMValueRef s0 = kg_ld(g, g->vi, s[0][2 * h + q][v]);
                if (unit > 1)
                    s0 = LLVMBuildShl(b, s0, kg_vsplat_i(g, g->i32, 4, VL), "");
                sp[q] = LLVMBuildAdd(b, s0, kg_ld(g, g->vi, s[1][2 * h + q][v]), "");
            }
            LLVMValueRef x = LLVMBuildAdd(b, sp[0], LLVMBuildShl(b, sp[1], kg_vsplat_i(g, g->i32, 8, VL), ""), "");
            LLVMValueRef zd = zv ? LLVMBuildMul(b, zv, kg_splat(g, dd[h], VL), "")
                                 : kg_splat(g, LLVMBuildMul(b, dd[h], kg_i32(g, z0 * unit), ""), VL);
            tt[h] = LLVMBuildSIToFP(b, LLVMBuildSub(b, x, zd, ""), vf, "");
        }
        LLVMValueRef fa[3] = {tt[1], kg_splat(g, kg_f32(g, 65536.0), VL), tt[0]};
        LLVMValueRef f = kg_call_intr(g, "llvm.fma", &vf, 1, fa, 3);
        f = LLVMBuildFMul(b, LLVMBuildFMul(b, f, e1, ""), e2, "");
        LLVMValueRef acc[3] = {f, sv, kg_ld(g, vf, t->facc[0][v])};
        kg_st(g, kg_call_intr(g, "llvm.fma", &vf, 1, acc, 3), t->facc[0][v]);
    }
}

void kg_emit_planes_tile(KilnGen *g, KilnTile *t)
{
    const KilnLayout *l = g->l;
    LLVMBuilderRef b = g->b;
    t->rowp[0] = kg_gep(g, g->scratch, LLVMBuildMul(b, t->m0, kg_i64(g, (int64_t)l->scratch_per_row), ""));
    t->meta[0] = kg_gep(g, t->rowp[0], kg_i64(g, (int64_t)l->meta_off));
    LLVMValueRef s[2][PLANES][KG_MAXNV];
    for (int v = 0; v < t->NV; v++) {
        t->facc[0][v] = kg_alloca(g, g->vf, "facc");
        kg_st(g, LLVMConstNull(g->vf), t->facc[0][v]);
        for (int c = 0; c < 2; c++)
            for (int p = 0; p < PLANES; p++)
                s[c][p][v] = kg_alloca(g, g->vi, "psum");
    }
    int64_t bpb = l->ablk / l->KB; /* word blocks per activation block (even for int8) */
    KilnLoop lb;
    LLVMValueRef bi = kg_loop_begin(g, &lb, kg_i64(g, 0), kg_i64(g, l->nablk), 1);
    for (int v = 0; v < t->NV; v++)
        for (int c = 0; c < 2; c++)
            for (int p = 0; p < PLANES; p++)
                kg_st(g, LLVMConstNull(g->vi), s[c][p][v]);
    LLVMValueRef kb0 = LLVMBuildMul(b, bi, kg_i64(g, bpb), "");
    KilnLoop lk;
    int step = l->int8_words ? 2 : 1;
    LLVMValueRef kb = kg_loop_begin(g, &lk, kb0, LLVMBuildAdd(b, kb0, kg_i64(g, bpb), ""), step);
    for (int u = 0; u < step; u++)
        emit_block(g, t, LLVMBuildAdd(b, kb, kg_i64(g, u), ""), u, s);
    kg_loop_end(g, &lk);
    emit_block_end(g, t, bi, s);
    kg_loop_end(g, &lb);
    kg_emit_tile_store(g, t);
}
