/* codegen/cpu/qgemm_blocked.c — the qgemm kernel's blocked prefill path (f32-fma
 * with quantized weights, M >= blocked_min_m): per panel, decode a chunk of blocks
 * once into an L1 buffer, then MRB x NR FMA tiles over all rows, then the epilogue
 * row by row. The weight unpacking is qgemm_gen.c's; docs/jit-aot.md has the pictures. */
#include <math.h>

#include "codegen/cpu/gen.h"

static LLVMValueRef row_scratch(KilnGen *g, LLVMValueRef m)
{
    return kg_gep(g, g->scratch, LLVMBuildMul(g->b, m, kg_i64(g, (int64_t)g->l->scratch_per_row), ""));
}

static LLVMValueRef act_row(KilnGen *g, LLVMValueRef m)
{
    const KilnLayout *l = g->l;
    if (l->act_row_bytes)
        return row_scratch(g, m);
    return kg_gep(g, g->x, LLVMBuildMul(g->b, m, kg_i64(g, l->K * 4), ""));
}

/* Decode blocks [c0, c1) of panel t->p into wbuf as f32 (q - z) * s or fp8 * s.
 * int4 (KR 1, read from its bits) values come out as u * 2^(bit - 149) against
 * activations prescaled by 2^(69 - bit), so the zero point is scaled alike and
 * the scale carries 2^80: ((u - z) * 2^(bit - 149)) * (s * 2^80), the difference
 * exact, one rounding in the product, like the reference's deqW (times a power
 * of two). */
static void emit_decode_chunk(KilnGen *g, KilnTile *t, LLVMValueRef c0, LLVMValueRef c1, LLVMValueRef wbuf)
{
    const KilnLayout *l = g->l;
    LLVMBuilderRef b = g->b;
    unsigned VL = (unsigned)l->VL;
    /* a chunk holds whole scale groups (CB is a multiple of the blocks per group,
     * layout.c); each group's blocks with its own scales and zeros */
    int64_t bpg = l->group_mode ? l->group / l->KB : l->K / l->KB + 1;
    KilnLoop lg;
    LLVMValueRef g0 = LLVMBuildSDiv(b, c0, kg_i64(g, bpg), "");
    LLVMValueRef g1 = LLVMBuildSDiv(b, LLVMBuildAdd(b, c1, kg_i64(g, bpg - 1), ""), kg_i64(g, bpg), "");
    LLVMValueRef gi = kg_loop_begin(g, &lg, g0, g1, 1);
    LLVMValueRef gb0 = LLVMBuildMul(b, gi, kg_i64(g, bpg), ""), gb1 = LLVMBuildAdd(b, gb0, kg_i64(g, bpg), "");
    gb0 = LLVMBuildSelect(b, LLVMBuildICmp(b, LLVMIntSGT, c0, gb0, ""), c0, gb0, "");
    gb1 = LLVMBuildSelect(b, LLVMBuildICmp(b, LLVMIntSLT, c1, gb1, ""), c1, gb1, "");
    LLVMValueRef sv[KG_MAXNV], zf[KG_MAXNV];
    for (int v = 0; v < t->NV; v++) {
        sv[v] = kg_load(g, g->vf, kg_vec_sect(g, t, l->scales_off, gi, v));
        if (kiln_layout_unscale_exp(l)) /* e.g. (u - z) * 2^(bit - 149) * s * 2^80 against a * 2^(69 - bit) */
            sv[v] = LLVMBuildFMul(b, sv[v], kg_unscale(g), "");
        zf[v] = NULL;
        if (l->zeros_off) {
            LLVMValueRef zi = kg_load(g, g->vi, kg_vec_sect(g, t, l->zeros_off, gi, v));
            if (kiln_layout_word_codes(l))
                zi = LLVMBuildAdd(b, zi, kg_vsplat_i(g, g->i32, kiln_layout_code_offset(l), VL), "");
            zf[v] = LLVMBuildSIToFP(b, zi, g->vf, "");
        } else if (kiln_layout_word_codes(l)) {
            zf[v] = kg_splat(g, kg_f32(g, kiln_layout_code_offset(l)), VL);
        }
    }
    KilnLoop lk;
    LLVMValueRef kb = kg_loop_begin(g, &lk, gb0, gb1, 1);
    if (kg_packed_words(l))
        kg_load_packed(g, t, kb);
    LLVMValueRef rowb = LLVMBuildMul(b, LLVMBuildSub(b, kb, c0, ""), kg_i64(g, (int64_t)l->KB * l->NR * 4), "");
    for (int j = 0; j < l->KB; j++)
        for (int v = 0; v < t->NV; v++) {
            LLVMValueRef w = kg_weight_operand(g, t, kb, j, v, NULL);
            if (zf[v]) {
                LLVMValueRef z = zf[v];
                if (kiln_layout_word_codes(l)) /* z read like the code: z * 2^weight_exp(j), exact */
                    z = LLVMBuildFMul(b, z, kg_splat(g, kg_f32(g, ldexp(1.0, kiln_layout_weight_exp(l, j))), VL), "");
                w = LLVMBuildFSub(b, w, z, "");
            }
            w = LLVMBuildFMul(b, w, sv[v], "");
            LLVMValueRef off = LLVMBuildAdd(b, rowb, kg_i64(g, ((int64_t)j * l->NR + (int64_t)v * l->VL) * 4), "");
            kg_store(g, w, kg_gep(g, wbuf, off));
        }
    kg_loop_end(g, &lk);
    kg_loop_end(g, &lg);
}

/* R rows from m0 over the decoded chunk: sums from/to each row's cbuf. */
static void emit_blocked_tile(KilnGen *g, KilnTile *t, int R, LLVMValueRef m0, LLVMValueRef c0,
                              LLVMValueRef c1, LLVMValueRef wbuf)
{
    const KilnLayout *l = g->l;
    LLVMBuilderRef b = g->b;
    LLVMValueRef ap[KG_MAXR], cp[KG_MAXR], acc[KG_MAXR][KG_MAXNV];
    for (int r = 0; r < R; r++) {
        LLVMValueRef m = LLVMBuildAdd(b, m0, kg_i64(g, r), "");
        ap[r] = act_row(g, m);
        cp[r] = kg_gep(g, row_scratch(g, m), kg_i64(g, (int64_t)l->cbuf_off));
        for (int v = 0; v < t->NV; v++) {
            acc[r][v] = kg_alloca(g, g->vf, "bacc");
            kg_st(g, kg_load(g, g->vf, kg_gep(g, cp[r], kg_i64(g, (int64_t)v * l->VL * 4))), acc[r][v]);
        }
    }
    KilnLoop lk;
    LLVMValueRef kb = kg_loop_begin(g, &lk, c0, c1, 1);
    LLVMValueRef rowb = LLVMBuildMul(b, LLVMBuildSub(b, kb, c0, ""), kg_i64(g, (int64_t)l->KB * l->NR * 4), "");
    for (int j = 0; j < l->KB; j++) {
        LLVMValueRef w[KG_MAXNV];
        for (int v = 0; v < t->NV; v++)
            w[v] = kg_load(g, g->vf, kg_gep(g, wbuf, LLVMBuildAdd(b, rowb,
                kg_i64(g, ((int64_t)j * l->NR + (int64_t)v * l->VL) * 4), "")));
        LLVMValueRef k = LLVMBuildAdd(b, LLVMBuildMul(b, kb, kg_i64(g, l->KB), ""), kg_i64(g, j), "");
        LLVMValueRef ko = LLVMBuildMul(b, k, kg_i64(g, 4), "");
        for (int r = 0; r < R; r++) {
            LLVMValueRef a = kg_splat(g, kg_load(g, g->f32, kg_gep(g, ap[r], ko)), (unsigned)l->VL);
            for (int v = 0; v < t->NV; v++) {
                LLVMValueRef args[3] = {a, w[v], kg_ld(g, g->vf, acc[r][v])};
                LLVMTypeRef vt = g->vf;
                kg_st(g, kg_call_intr(g, "llvm.fma", &vt, 1, args, 3), acc[r][v]);
            }
        }
    }
    kg_loop_end(g, &lk);
    for (int r = 0; r < R; r++)
        for (int v = 0; v < t->NV; v++)
            kg_store(g, kg_ld(g, g->vf, acc[r][v]), kg_gep(g, cp[r], kg_i64(g, (int64_t)v * l->VL * 4)));
}

/* One panel for all M rows: zero the row sums, then per chunk decode once and
 * run every row block over it; then the epilogue row by row. */
void kg_emit_blocked_panel(KilnGen *g, KilnTile *t)
{
    const KilnLayout *l = g->l;
    LLVMBuilderRef b = g->b;
    LLVMValueRef wbuf = kg_gep(g, g->scratch, LLVMBuildMul(b, g->M, kg_i64(g, (int64_t)l->scratch_per_row), ""));
    KilnLoop lz;
    LLVMValueRef m = kg_loop_begin(g, &lz, kg_i64(g, 0), g->M, 1);
    LLVMValueRef cp = kg_gep(g, row_scratch(g, m), kg_i64(g, (int64_t)l->cbuf_off));
    for (int v = 0; v < t->NV; v++)
        kg_store(g, LLVMConstNull(g->vf), kg_gep(g, cp, kg_i64(g, (int64_t)v * l->VL * 4)));
    kg_loop_end(g, &lz);

    int64_t nblk = l->K / l->KB;
    KilnLoop lc;
    LLVMValueRef c0 = kg_loop_begin(g, &lc, kg_i64(g, 0), kg_i64(g, nblk), l->CB);
    LLVMValueRef ce = LLVMBuildAdd(b, c0, kg_i64(g, l->CB), "");
    LLVMValueRef c1 = LLVMBuildSelect(b, LLVMBuildICmp(b, LLVMIntSLT, ce, kg_i64(g, nblk), ""), ce,
                                      kg_i64(g, nblk), "");
    LLVMValueRef cw = wbuf;
    emit_decode_chunk(g, t, c0, c1, wbuf);
    /* MRB-row tiles, then 4-row tiles, then single rows: a row's sums are the same
     * in any of them (one FMA chain per output, k in order) */
    LLVMValueRef mfull = LLVMBuildMul(b, LLVMBuildSDiv(b, g->M, kg_i64(g, l->MRB), ""), kg_i64(g, l->MRB), "");
    KilnLoop lm;
    LLVMValueRef m0 = kg_loop_begin(g, &lm, kg_i64(g, 0), mfull, l->MRB);
    emit_blocked_tile(g, t, l->MRB, m0, c0, c1, cw);
    kg_loop_end(g, &lm);
    LLVMValueRef m4 = LLVMBuildAdd(b, mfull, LLVMBuildMul(b, LLVMBuildSDiv(b, LLVMBuildSub(b, g->M, mfull, ""),
                                                                         kg_i64(g, 4), ""), kg_i64(g, 4), ""), "");
    KilnLoop l4;
    m0 = kg_loop_begin(g, &l4, mfull, m4, 4);
    emit_blocked_tile(g, t, 4, m0, c0, c1, cw);
    kg_loop_end(g, &l4);
    KilnLoop lr;
    m0 = kg_loop_begin(g, &lr, m4, g->M, 1);
    emit_blocked_tile(g, t, 1, m0, c0, c1, cw);
    kg_loop_end(g, &lr);
    kg_loop_end(g, &lc);

    LLVMValueRef tmp = kg_alloca(g, LLVMArrayType(g->f32, (unsigned)(KG_MAXR * l->NR)), "btile");
    KilnLoop le;
    t->R = 1;
    t->m0 = kg_loop_begin(g, &le, kg_i64(g, 0), g->M, 1);
    LLVMValueRef rs = row_scratch(g, t->m0);
    cp = kg_gep(g, rs, kg_i64(g, (int64_t)l->cbuf_off));
    for (int v = 0; v < t->NV; v++) {
        LLVMValueRef f = kg_load(g, g->vf, kg_gep(g, cp, kg_i64(g, (int64_t)v * l->VL * 4)));
        if (!l->weight_only) /* fp8 x fp8: the activation scale last, as the direct path */
            f = LLVMBuildFMul(b, f, kg_splat(g, kg_load(g, g->f32, kg_gep(g, rs, kg_i64(g, (int64_t)l->meta_off))),
                                             (unsigned)l->VL), "");
        kg_store(g, f, kg_gep(g, tmp, kg_i64(g, (int64_t)v * l->VL * 4)));
    }
    kg_emit_epilogue_store(g, t, tmp);
    kg_loop_end(g, &le);
}
