/* codegen/cpu/qgemm_planes.c — the decode rows (M < blocked_min_m) of f32-fma's
 * word-code layouts on VNNI levels (l->act_planes, ir/layout.h): the prologue
 * writes a row's rounded activations as four byte planes of balanced base-256
 * digits of block-scaled integers, and a one-row kernel runs vpdpbusd with the
 * stored unsigned codes as the u8 operand and four digits of a plane broadcast as
 * the s8 one. No code is converted to f32: one vpdpbusd per 16 weights and plane,
 * where the f32 path spends a mask or shift, a vcvtdq2ps and an FMA. */
#include "codegen/cpu/gen.h"

enum { PLANES = 4, META_BYTES = 16 }; /* per block: f32 2^-sh1, 2^-sh2, i32 D01, D23 */

/* Byte position of k in its plane: k for int8 words; for int4 words, per 8 k, the
 * low nibbles of the word's bytes (k = 0 2 4 6) and then the high ones (1 3 5 7). */
static LLVMValueRef plane_pos(KilnGen *g, LLVMValueRef k)
{
    if (g->l->int8_words)
        return k;
    LLVMBuilderRef b = g->b;
    LLVMValueRef j = LLVMBuildAnd(b, k, kg_i64(g, 7), "");
    LLVMValueRef odd = LLVMBuildShl(b, LLVMBuildAnd(b, j, kg_i64(g, 1), ""), kg_i64(g, 2), "");
    return LLVMBuildAdd(b, LLVMBuildAdd(b, LLVMBuildSub(b, k, j, ""), odd, ""),
                        LLVMBuildLShr(b, j, kg_i64(g, 1), ""), "");
}

static LLVMValueRef sext8(KilnGen *g, LLVMValueRef v)
{
    return LLVMBuildSExt(g->b, LLVMBuildTrunc(g->b, v, g->i8, ""), g->i32, "");
}

/* f32 2^e for e in [-126, 127], from its bits. */
static LLVMValueRef pow2f(KilnGen *g, LLVMValueRef e)
{
    LLVMValueRef bits = LLVMBuildShl(g->b, LLVMBuildAdd(g->b, e, kg_i32(g, 127), ""), kg_i32(g, 23), "");
    return LLVMBuildBitCast(g->b, bits, g->f32, "");
}

/* Row m's planes and block meta at rowp (layout.h, act_planes). */
static void emit_planes_row(KilnGen *g, LLVMValueRef m, LLVMValueRef rowp)
{
    const KilnLayout *l = g->l;
    LLVMBuilderRef b = g->b;
    LLVMTypeRef ft = g->f32, dt = LLVMDoubleTypeInContext(g->c);
    LLVMValueRef xrow = kg_gep(g, g->x, LLVMBuildMul(b, m, kg_i64(g, l->K * 4), ""));
    LLVMValueRef meta = kg_gep(g, rowp, kg_i64(g, (int64_t)l->meta_off));
    LLVMValueRef amax = kg_alloca(g, g->f32, "amax");
    LLVMValueRef d01 = kg_alloca(g, g->i32, "d01"), d23 = kg_alloca(g, g->i32, "d23");
    KilnLoop lb;
    LLVMValueRef bi = kg_loop_begin(g, &lb, kg_i64(g, 0), kg_i64(g, l->nablk), 1);
    LLVMValueRef k0 = LLVMBuildMul(b, bi, kg_i64(g, l->ablk), "");
    LLVMValueRef k1 = LLVMBuildAdd(b, k0, kg_i64(g, l->ablk), "");
    kg_st(g, kg_f32(g, 0), amax);
    KilnLoop lk;
    LLVMValueRef k = kg_loop_begin(g, &lk, k0, k1, 1);
    LLVMValueRef v = kg_round_act(g, l->act_dtype, kg_load(g, g->f32, kg_gep(g, xrow, LLVMBuildMul(b, k, kg_i64(g, 4), ""))));
    LLVMValueRef mm[2] = {kg_ld(g, g->f32, amax), kg_call_intr(g, "llvm.fabs", &ft, 1, &v, 1)};
    kg_st(g, kg_call_intr(g, "llvm.maxnum", &ft, 1, mm, 2), amax);
    kg_loop_end(g, &lk);
    /* sh = 29 - floor(log2 amax): |A| < 2^30. A zero or subnormal maximum counts as
     * 2^-126; the unscale 2^-sh goes as two normal factors (sh is -98..155). */
    LLVMValueRef ebits = LLVMBuildAnd(b, LLVMBuildLShr(b, LLVMBuildBitCast(b, kg_ld(g, g->f32, amax), g->i32, ""),
                                                       kg_i32(g, 23), ""), kg_i32(g, 0xFF), "");
    ebits = LLVMBuildSelect(b, LLVMBuildICmp(b, LLVMIntEQ, ebits, kg_i32(g, 0), ""), kg_i32(g, 1), ebits, "");
    LLVMValueRef sh = LLVMBuildSub(b, kg_i32(g, 29 + 127), ebits, "");
    LLVMValueRef sh1 = LLVMBuildAShr(b, sh, kg_i32(g, 1), "");
    LLVMValueRef sh2 = LLVMBuildSub(b, sh, sh1, "");
    LLVMValueRef scale = LLVMBuildBitCast(
        b, LLVMBuildShl(b, LLVMBuildZExt(b, LLVMBuildAdd(b, sh, kg_i32(g, 1023), ""), g->i64, ""), kg_i64(g, 52), ""),
        dt, "");
    LLVMValueRef mo = kg_gep(g, meta, LLVMBuildMul(b, bi, kg_i64(g, META_BYTES), ""));
    kg_store(g, pow2f(g, LLVMBuildNeg(b, sh1, "")), mo);
    kg_store(g, pow2f(g, LLVMBuildNeg(b, sh2, "")), kg_gep(g, mo, kg_i64(g, 4)));
    kg_st(g, kg_i32(g, 0), d01);
    kg_st(g, kg_i32(g, 0), d23);
    k = kg_loop_begin(g, &lk, k0, k1, 1);
    v = kg_round_act(g, l->act_dtype, kg_load(g, g->f32, kg_gep(g, xrow, LLVMBuildMul(b, k, kg_i64(g, 4), ""))));
    LLVMValueRef av = LLVMBuildFMul(b, LLVMBuildFPExt(b, v, dt, ""), scale, ""); /* exact */
    av = kg_call_intr(g, "llvm.roundeven", &dt, 1, &av, 1);
    LLVMValueRef r = LLVMBuildFPToSI(b, av, g->i32, "");
    LLVMValueRef d[PLANES], pos = plane_pos(g, k);
    for (int p = 0; p < PLANES; p++) { /* balanced digits: d = sext(low byte), r = (r - d) >> 8 */
        d[p] = p < PLANES - 1 ? sext8(g, r) : r;
        r = LLVMBuildAShr(b, LLVMBuildSub(b, r, d[p], ""), kg_i32(g, 8), "");
        kg_store(g, LLVMBuildTrunc(b, d[p], g->i8, ""),
                 kg_gep(g, rowp, LLVMBuildAdd(b, pos, kg_i64(g, (int64_t)p * l->K), "")));
    }
    LLVMValueRef e01 = LLVMBuildAdd(b, d[0], LLVMBuildShl(b, d[1], kg_i32(g, 8), ""), "");
    LLVMValueRef e23 = LLVMBuildAdd(b, d[2], LLVMBuildShl(b, d[3], kg_i32(g, 8), ""), "");
    kg_st(g, LLVMBuildAdd(b, kg_ld(g, g->i32, d01), e01, ""), d01);
    kg_st(g, LLVMBuildAdd(b, kg_ld(g, g->i32, d23), e23, ""), d23);
    kg_loop_end(g, &lk);
    kg_store(g, kg_ld(g, g->i32, d01), kg_gep(g, mo, kg_i64(g, 8)));
    kg_store(g, kg_ld(g, g->i32, d23), kg_gep(g, mo, kg_i64(g, 12)));
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
            if (!l->int8_words) {
                if (h)
                    w = LLVMBuildLShr(b, w, kg_vsplat_i(g, g->i32, 4, (unsigned)l->VL), "");
                w = LLVMBuildAnd(b, w, kg_vsplat_i(g, g->i32, 0x0F0F0F0F, (unsigned)l->VL), "");
            }
            int c = l->int8_words ? ph : h;
            for (int p = 0; p < PLANES; p++)
                kg_st(g, dpbusd(g, kg_ld(g, g->vi, s[c][p][v]), w, dg[p]), s[c][p][v]);
        }
    }
}

/* Block bi's sums into facc: T01 = S0 + 2^8 S1 - Z*D01, T23 likewise, then
 * (T01 + 2^16 T23) * 2^-sh times the weight scale. */
static void emit_block_end(KilnGen *g, KilnTile *t, LLVMValueRef bi, LLVMValueRef s[2][PLANES][KG_MAXNV])
{
    const KilnLayout *l = g->l;
    LLVMBuilderRef b = g->b;
    unsigned VL = (unsigned)l->VL;
    LLVMTypeRef vf = g->vf;
    LLVMValueRef mo = kg_gep(g, t->meta[0], LLVMBuildMul(b, bi, kg_i64(g, META_BYTES), ""));
    LLVMValueRef e1 = kg_splat(g, kg_load(g, g->f32, mo), VL);
    LLVMValueRef e2 = kg_splat(g, kg_load(g, g->f32, kg_gep(g, mo, kg_i64(g, 4))), VL);
    LLVMValueRef dd[2] = {kg_load(g, g->i32, kg_gep(g, mo, kg_i64(g, 8))),
                          kg_load(g, g->i32, kg_gep(g, mo, kg_i64(g, 12)))};
    LLVMValueRef wg = LLVMBuildSDiv(b, LLVMBuildMul(b, bi, kg_i64(g, l->ablk), ""), kg_i64(g, l->group), "");
    int off = kiln_layout_code_offset(l);
    for (int v = 0; v < t->NV; v++) {
        LLVMValueRef sv = kg_load(g, vf, kg_vec_sect(g, t, l->scales_off, wg, v));
        LLVMValueRef zv = NULL;
        if (l->zeros_off)
            zv = LLVMBuildAdd(b, kg_load(g, g->vi, kg_vec_sect(g, t, l->zeros_off, wg, v)),
                              kg_vsplat_i(g, g->i32, off, VL), "");
        LLVMValueRef tt[2];
        for (int h = 0; h < 2; h++) {
            LLVMValueRef sp[2];
            for (int q = 0; q < 2; q++)
                sp[q] = LLVMBuildAdd(b, kg_ld(g, g->vi, s[0][2 * h + q][v]), kg_ld(g, g->vi, s[1][2 * h + q][v]), "");
            LLVMValueRef x = LLVMBuildAdd(b, sp[0], LLVMBuildShl(b, sp[1], kg_vsplat_i(g, g->i32, 8, VL), ""), "");
            LLVMValueRef zd = zv ? LLVMBuildMul(b, zv, kg_splat(g, dd[h], VL), "")
                                 : kg_splat(g, LLVMBuildMul(b, dd[h], kg_i32(g, off), ""), VL);
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
