/* codegen/cpu/qgemm_amx_bf16.c — the tile path of the amx-bf16-tile layout (ir/layout.h):
 * the call's panels in passes of TP, all M rows. A pass dequantizes its panels' codes
 * once into bf16 B tiles in scratch (bf16-dot's own weight operands: q - z or the fp8
 * value, exact in bf16), then the rows run in 32-row blocks, each over the pass's
 * panels, on 2x2 tdpbf16ps tiles (two 16-row bf16 activation tiles by a panel's two
 * 16-column B tiles into four 16x16 f32 C tiles; a last block of <= 16 rows 1x2). Per
 * scale group the C tiles start at zero, are stored to the stack and go through
 * bf16-dot's group epilogue row by row (kg_group_end: the group's scale into the f32
 * row sums), then the output epilogue. Tiles through codegen/cpu/tiles.c: real AMX,
 * or the scalar model for `tiles = "model"`. */
#include "codegen/cpu/gen.h"

/* The panel's B tiles (layout.h): for every packed block and dot step, bf16-dot's
 * weight operand (VL columns x a bf16 pair of k, zero point subtracted) stored at
 * row kk = k/2 of the dequantized panel, NR*4 bytes a row. */
static void dequant_panel(KilnGen *g, KilnTile *t, LLVMValueRef tpanel)
{
    const KilnLayout *l = g->l;
    LLVMBuilderRef b = g->b;
    int steps = l->KB / l->KR;
    KilnLoop lg, lk;
    LLVMValueRef gi = kg_loop_begin(g, &lg, kg_i64(g, 0), kg_i64(g, l->ngroups), 1);
    LLVMValueRef zv[KG_MAXNV];
    for (int v = 0; v < t->NV; v++)
        zv[v] = kg_group_zeros(g, t, gi, v);
    LLVMValueRef kb0 = LLVMBuildMul(b, gi, kg_i64(g, l->group / l->KB), "");
    LLVMValueRef kb1 = LLVMBuildAdd(b, kb0, kg_i64(g, l->group / l->KB), "");
    if (l->K % l->group) /* ragged last group: it ends at K */
        kb1 = LLVMBuildSelect(b, LLVMBuildICmp(b, LLVMIntSLT, kb1, kg_i64(g, l->K / l->KB), ""), kb1,
                              kg_i64(g, l->K / l->KB), "");
    LLVMValueRef kb = kg_loop_begin(g, &lk, kb0, kb1, 1);
    if (kg_packed_words(l))
        kg_load_packed(g, t, kb);
    for (int j = 0; j < steps; j++) {
        LLVMValueRef kk = LLVMBuildAdd(b, LLVMBuildMul(b, kb, kg_i64(g, steps), ""), kg_i64(g, j), "");
        LLVMValueRef row = kg_gep(g, tpanel, LLVMBuildMul(b, kk, kg_i64(g, (int64_t)l->NR * 4), ""));
        for (int v = 0; v < t->NV; v++)
            kg_store(g, kg_weight_operand(g, t, kb, j, v, zv[v]),
                     kg_gep(g, row, kg_i64(g, (int64_t)v * l->VL * 4)));
    }
    kg_loop_end(g, &lk);
    kg_loop_end(g, &lg);
}

/* Panel p as the direct path's tile sees it (its columns, codes, scales). */
static KilnTile panel_tile(KilnGen *g, LLVMValueRef p)
{
    const KilnLayout *l = g->l;
    LLVMBuilderRef b = g->b;
    KilnTile t = {.NV = l->NR / l->VL, .p = p};
    LLVMValueRef NR = kg_i64(g, l->NR), rem = LLVMBuildSub(b, g->n1, LLVMBuildMul(b, p, NR, ""), "");
    t.ncols = LLVMBuildSelect(b, LLVMBuildICmp(b, LLVMIntSLT, rem, NR, ""), rem, NR, "");
    t.wpanel = kg_gep(g, g->wp, LLVMBuildAdd(b, kg_i64(g, (int64_t)l->codes_off),
                                              LLVMBuildMul(b, p, kg_i64(g, (int64_t)l->panel_code_bytes), ""), ""));
    return t;
}

/* Panel j of the pass at pc: its tile, its dequantized B tiles and its rows' f32 sums
 * (fbuf j of the pass). */
static KilnTile pass_panel(KilnGen *g, LLVMValueRef pc, LLVMValueRef j, LLVMValueRef tpanels,
                           LLVMValueRef fbufs, LLVMValueRef *tpanel, LLVMValueRef *fbuf)
{
    const KilnLayout *l = g->l;
    LLVMBuilderRef b = g->b;
    *tpanel = kg_gep(g, tpanels, LLVMBuildMul(b, j, kg_i64(g, l->K * l->NR * 2), ""));
    *fbuf = kg_gep(g, fbufs, LLVMBuildMul(b, j, kg_i64(g, (int64_t)2 * l->TM * l->NR * 4), ""));
    return panel_tile(g, LLVMBuildAdd(b, pc, j, ""));
}

/* The rows [m0, m0 + live) (live <= 16 na) over the np panels of the pass at pc on na x
 * 2 tiles: group by group, each panel's tiles and epilogue (the group's activations,
 * 16 na rows x group k, stay in L1 for the pass's panels), then every panel's output. */
static void pass_block(KilnTiles *T, int na, LLVMValueRef m0, LLVMValueRef pc, LLVMValueRef np,
                       LLVMValueRef tpanels, LLVMValueRef cbuf, LLVMValueRef fbufs)
{
    KilnGen *g = T->g;
    const KilnLayout *l = g->l;
    LLVMBuilderRef b = g->b;
    int rows = na * l->TM;
    LLVMValueRef left = LLVMBuildSub(b, g->M, m0, "");
    LLVMValueRef live = LLVMBuildSelect(b, LLVMBuildICmp(b, LLVMIntSLT, left, kg_i64(g, rows), ""), left,
                                        kg_i64(g, rows), "");
    for (int i = 0; i < l->TP * 2 * l->TM * l->NR; i += l->VL)
        kg_st(g, LLVMConstNull(g->vf), kg_gep(g, fbufs, kg_i64(g, (int64_t)i * 4)));
    KilnLoop lg, lj, lr, lo, ls;
    LLVMValueRef tpanel, fbuf;
    LLVMValueRef gi = kg_loop_begin(g, &lg, kg_i64(g, 0), kg_i64(g, l->ngroups), 1);
    LLVMValueRef j = kg_loop_begin(g, &lj, kg_i64(g, 0), np, 1);
    KilnTile t = pass_panel(g, pc, j, tpanels, fbufs, &tpanel, &fbuf);
    kg_amx_group_tiles(T, m0, gi, tpanel, cbuf, na);
    LLVMValueRef r = kg_loop_begin(g, &lr, kg_i64(g, 0), live, 1);
    KilnTile one = kg_tile_row(g, &t, m0, r, cbuf, fbuf);
    kg_group_end(g, &one, gi);
    kg_loop_end(g, &lr);
    kg_loop_end(g, &lj);
    kg_loop_end(g, &lg);
    LLVMValueRef jo = kg_loop_begin(g, &lo, kg_i64(g, 0), np, 1);
    KilnTile to = pass_panel(g, pc, jo, tpanels, fbufs, &tpanel, &fbuf);
    LLVMValueRef rs = kg_loop_begin(g, &ls, kg_i64(g, 0), live, 1);
    KilnTile out = kg_tile_row(g, &to, m0, rs, cbuf, fbuf);
    kg_emit_tile_store(g, &out);
    kg_loop_end(g, &ls);
    kg_loop_end(g, &lo);
}

void kg_emit_amx_bf16_panels(KilnGen *g, LLVMValueRef p0, LLVMValueRef p1)
{
    const KilnLayout *l = g->l;
    LLVMBuilderRef b = g->b;
    KilnTiles T = kt_init(g, l->tiles_model);
    int TM = l->TM;
    LLVMValueRef fixed = kg_gep(g, g->scratch, LLVMBuildMul(b, g->M, kg_i64(g, (int64_t)l->scratch_per_row), ""));
    LLVMValueRef tpanels = kg_gep(g, fixed, kg_i64(g, (int64_t)l->tpanel_off));
    LLVMValueRef cbuf = kg_alloca(g, LLVMArrayType(g->f32, (unsigned)(2 * TM * l->NR)), "cbuf");
    LLVMValueRef fbufs = kg_alloca(g, LLVMArrayType(g->f32, (unsigned)(l->TP * 2 * TM * l->NR)), "fbufs");
    KilnLoop lc, ld, lm;
    LLVMValueRef pc = kg_loop_begin(g, &lc, p0, p1, l->TP);
    LLVMValueRef left = LLVMBuildSub(b, p1, pc, "");
    LLVMValueRef np = LLVMBuildSelect(b, LLVMBuildICmp(b, LLVMIntSLT, left, kg_i64(g, l->TP), ""), left,
                                      kg_i64(g, l->TP), "");
    LLVMValueRef j = kg_loop_begin(g, &ld, kg_i64(g, 0), np, 1);
    KilnTile t = panel_tile(g, LLVMBuildAdd(b, pc, j, ""));
    dequant_panel(g, &t, kg_gep(g, tpanels, LLVMBuildMul(b, j, kg_i64(g, l->K * l->NR * 2), "")));
    kg_loop_end(g, &ld);
    LLVMValueRef m0 = kg_loop_begin(g, &lm, kg_i64(g, 0), g->M, 2 * TM);
    LLVMBasicBlockRef two = LLVMAppendBasicBlockInContext(g->c, g->fn, "tiles_2x2");
    LLVMBasicBlockRef one = LLVMAppendBasicBlockInContext(g->c, g->fn, "tiles_1x2");
    LLVMBasicBlockRef done = LLVMAppendBasicBlockInContext(g->c, g->fn, "tiles_block_done");
    LLVMValueRef more = LLVMBuildICmp(b, LLVMIntSGT, LLVMBuildSub(b, g->M, m0, ""), kg_i64(g, TM), "");
    LLVMBuildCondBr(b, more, two, one);
    LLVMPositionBuilderAtEnd(b, two);
    pass_block(&T, 2, m0, pc, np, tpanels, cbuf, fbufs);
    LLVMBuildBr(b, done);
    LLVMPositionBuilderAtEnd(b, one);
    pass_block(&T, 1, m0, pc, np, tpanels, cbuf, fbufs);
    LLVMBuildBr(b, done);
    LLVMPositionBuilderAtEnd(b, done);
    kg_loop_end(g, &lm);
    kg_loop_end(g, &lc);
}
