/* codegen/cpu/qgemm_amx.c — the tile path of the amx-u8s8-tile layout (ir/layout.h):
 * one panel, all M rows, in tiles of TM = 16 rows. Per group two 16x16 int32 C tiles
 * (the panel's two 16-column halves) accumulate tdpbusd of a 16 x KT u8 activation
 * tile by the panel's KT/4 x 64-byte s8 B tiles, are stored to the stack, and go
 * through the u8s8-vnni group epilogue row by row (kg_group_end: wsum and zero-point
 * corrections in int32, the scales in f32, in the interpreter's order), then the
 * output epilogue. Tiles are LLVM's AMX intrinsics (llvm.x86.*.internal: the shape
 * travels with every use and LLVM inserts the ldtilecfg), or, for `tiles = "model"`,
 * calls into the scalar model (ir/amx_model.h) with the same shapes and operands, so
 * that the tiling, packing and epilogue run on any host. int4 weights (W4A8) are
 * unpacked to int8 B-tile rows on the stack at every tile step. */
#include "codegen/cpu/gen.h"

/* int4 weights: the KT/8 word blocks of the tile step at k unpacked into signed
 * bytes in B-tile order (ir/layout.h) in bbuf, KT/4 rows of NR*4 bytes; the bytes
 * the vnni kernel's vpdpbusd reads (kg_weight_operand), so the sums agree. */
static void unpack_int4(KilnGen *g, KilnTile *t, LLVMValueRef k, LLVMValueRef bbuf)
{
    const KilnLayout *l = g->l;
    LLVMBuilderRef b = g->b;
    LLVMValueRef kb0 = LLVMBuildSDiv(b, k, kg_i64(g, 8), "");
    for (int blk = 0; blk < l->KT / 8; blk++) {
        LLVMValueRef kb = LLVMBuildAdd(b, kb0, kg_i64(g, blk), "");
        kg_load_packed(g, t, kb);
        for (int j = 0; j < 2; j++) /* low nibbles: k = 8kb + 0..3, high: 8kb + 4..7 */
            for (int v = 0; v < t->NV; v++)
                kg_store(g, kg_weight_operand(g, t, kb, j, v, NULL),
                         kg_gep(g, bbuf, kg_i64(g, (int64_t)(2 * blk + j) * l->NR * 4 + (int64_t)v * l->VL * 4)));
    }
}

/* Group gi of the 16-row tile at m0: C = sum over its k of A . B, into cbuf
 * ([TM][NR] int32). */
static void group_tiles(KilnTiles *T, KilnTile *t, LLVMValueRef m0, LLVMValueRef gi, LLVMValueRef cbuf)
{
    KilnGen *g = T->g;
    const KilnLayout *l = g->l;
    LLVMBuilderRef b = g->b;
    int TM = l->TM, KT = l->KT;
    LLVMValueRef a = kt_slot(T, "tile_a"), bt[2] = {kt_slot(T, "tile_b0"), kt_slot(T, "tile_b1")};
    LLVMValueRef c[2] = {kt_slot(T, "tile_c0"), kt_slot(T, "tile_c1")};
    for (int h = 0; h < 2; h++)
        kt_zero(T, c[h], TM, 64);
    LLVMValueRef k0 = LLVMBuildMul(b, gi, kg_i64(g, l->group), "");
    LLVMValueRef k1 = LLVMBuildAdd(b, k0, kg_i64(g, l->group), "");
    if (l->K % l->group) /* ragged last group: it ends at K */
        k1 = LLVMBuildSelect(b, LLVMBuildICmp(b, LLVMIntSLT, k1, kg_i64(g, l->K), ""), k1,
                             kg_i64(g, l->K), "");
    LLVMValueRef arow = kg_i64(g, (int64_t)l->scratch_per_row), brow = kg_i64(g, (int64_t)l->NR * 4);
    LLVMValueRef abase = kg_gep(g, g->scratch, LLVMBuildMul(b, m0, arow, ""));
    KilnLoop lk;
    LLVMValueRef k = kg_loop_begin(g, &lk, k0, k1, KT);
    kt_load(T, a, TM, KT, kg_gep(g, abase, k), arow);
    LLVMValueRef wk;
    if (kiln_dtype_bits(l->wdt) == 4) {
        wk = kg_alloca(g, LLVMArrayType(g->i8, (unsigned)(KT / 4 * l->NR * 4)), "bbuf");
        unpack_int4(g, t, k, wk);
    } else {
        wk = kg_gep(g, t->wpanel, LLVMBuildMul(b, k, kg_i64(g, l->NR), ""));
    }
    for (int h = 0; h < 2; h++) {
        kt_load(T, bt[h], KT / 4, 64, kg_gep(g, wk, kg_i64(g, 64 * h)), brow);
        kt_dpbusd(T, c[h], a, bt[h], TM, 64, KT);
    }
    kg_loop_end(g, &lk);
    for (int h = 0; h < 2; h++)
        kt_store(T, c[h], TM, 64, kg_gep(g, cbuf, kg_i64(g, 64 * h)), brow);
}

/* Row m0 + r of the tile as a one-row KilnTile whose group sums are row r of cbuf
 * and whose f32 sums are row r of fbuf. */
static KilnTile row_of(KilnGen *g, const KilnTile *t, LLVMValueRef m0, LLVMValueRef r,
                       LLVMValueRef cbuf, LLVMValueRef fbuf)
{
    const KilnLayout *l = g->l;
    LLVMBuilderRef b = g->b;
    KilnTile t1 = *t;
    t1.R = 1;
    t1.P = 1;
    t1.m0 = LLVMBuildAdd(b, m0, r, "");
    t1.rowp[0] = kg_gep(g, g->scratch, LLVMBuildMul(b, t1.m0, kg_i64(g, (int64_t)l->scratch_per_row), ""));
    t1.meta[0] = kg_gep(g, t1.rowp[0], kg_i64(g, (int64_t)l->meta_off));
    LLVMValueRef row = LLVMBuildMul(b, r, kg_i64(g, (int64_t)l->NR * 4), "");
    for (int v = 0; v < t1.NV; v++) {
        LLVMValueRef off = LLVMBuildAdd(b, row, kg_i64(g, (int64_t)v * l->VL * 4), "");
        t1.gacc[0][v][0] = kg_gep(g, cbuf, off);
        t1.facc[0][v] = kg_gep(g, fbuf, off);
    }
    return t1;
}

void kg_emit_amx_panel(KilnGen *g, KilnTile *t)
{
    const KilnLayout *l = g->l;
    LLVMBuilderRef b = g->b;
    KilnTiles T = kt_init(g, l->tiles_model);
    int TM = l->TM;
    LLVMValueRef cbuf = kg_alloca(g, LLVMArrayType(g->i32, (unsigned)(TM * l->NR)), "cbuf");
    LLVMValueRef fbuf = kg_alloca(g, LLVMArrayType(g->f32, (unsigned)(TM * l->NR)), "fbuf");
    KilnLoop lm, lg, lr, ls;
    LLVMValueRef m0 = kg_loop_begin(g, &lm, kg_i64(g, 0), g->M, TM);
    LLVMValueRef left = LLVMBuildSub(b, g->M, m0, "");
    LLVMValueRef live = LLVMBuildSelect(b, LLVMBuildICmp(b, LLVMIntSLT, left, kg_i64(g, TM), ""), left,
                                        kg_i64(g, TM), "");
    for (int i = 0; i < TM * l->NR; i += l->VL)
        kg_st(g, LLVMConstNull(g->vf), kg_gep(g, fbuf, kg_i64(g, (int64_t)i * 4)));
    LLVMValueRef gi = kg_loop_begin(g, &lg, kg_i64(g, 0), kg_i64(g, l->ngroups), 1);
    group_tiles(&T, t, m0, gi, cbuf);
    LLVMValueRef r = kg_loop_begin(g, &lr, kg_i64(g, 0), live, 1);
    KilnTile t1 = row_of(g, t, m0, r, cbuf, fbuf);
    kg_group_end(g, &t1, gi);
    kg_loop_end(g, &lr);
    kg_loop_end(g, &lg);
    LLVMValueRef rs = kg_loop_begin(g, &ls, kg_i64(g, 0), live, 1);
    KilnTile t2 = row_of(g, t, m0, rs, cbuf, fbuf);
    kg_emit_tile_store(g, &t2);
    kg_loop_end(g, &ls);
    kg_loop_end(g, &lm);
}
