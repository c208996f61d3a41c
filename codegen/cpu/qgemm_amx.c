/* codegen/cpu/qgemm_amx.c — the tile path of the amx-u8s8-tile layout (ir/layout.h),
 * for calls with M >= tiles_min_m. Loop nest: blocks of MB rows (their u8 activation
 * rows, MB x K bytes, stay in L2 across the panels), then the panels, then 32-row
 * pairs of 16-row tiles. Per pair and scale group four 16x16 int32 C tiles (2 row
 * tiles x the panel's two 16-column halves) accumulate tdpbusd of two 16 x KT u8
 * activation tiles by two KT/4 x 64-byte s8 B tiles (2 x 2 blocking: four tile loads
 * for four tile multiplies), are stored to the stack, and go through the u8s8-vnni
 * group epilogue row by row (kg_group_end: wsum and zero-point corrections in int32,
 * the scales in f32, in the interpreter's order), then the output epilogue. A last
 * pair of at most 16 live rows runs one row tile. The tile operations are
 * codegen/cpu/tiles.c (real AMX, or the scalar model for `tiles = "model"`). int4
 * weights (W4A8) are unpacked once per panel and row block into signed bytes in
 * B-tile order in scratch (K x NR bytes), so the pairs read them as they read int8
 * panels. */
#include "codegen/cpu/gen.h"

/* int4 weights: the panel's K/8 word blocks unpacked into signed bytes in B-tile
 * order at buf (K/4 rows of NR*4 bytes: k's row is k/4, as in an int8 panel); the
 * bytes the vnni kernel's vpdpbusd reads (kg_weight_operand), so the sums agree. */
static void unpack_int4_panel(KilnGen *g, KilnTile *t, LLVMValueRef buf)
{
    const KilnLayout *l = g->l;
    LLVMBuilderRef b = g->b;
    KilnLoop lk;
    LLVMValueRef kb = kg_loop_begin(g, &lk, kg_i64(g, 0), kg_i64(g, l->K / 8), 1);
    kg_load_packed(g, t, kb);
    LLVMValueRef base = kg_gep(g, buf, LLVMBuildMul(b, kb, kg_i64(g, 8 * (int64_t)l->NR), ""));
    for (int j = 0; j < 2; j++) /* low nibbles: k = 8kb + 0..3, high: 8kb + 4..7 */
        for (int v = 0; v < t->NV; v++)
            kg_store(g, kg_weight_operand(g, t, kb, j, v, NULL),
                     kg_gep(g, base, kg_i64(g, (int64_t)j * l->NR * 4 + (int64_t)v * l->VL * 4)));
    kg_loop_end(g, &lk);
}

void kg_amx_group_tiles(KilnTiles *T, LLVMValueRef m0, LLVMValueRef gi, LLVMValueRef wk,
                        LLVMValueRef cbuf, int nt)
{
    KilnGen *g = T->g;
    const KilnLayout *l = g->l;
    LLVMBuilderRef b = g->b;
    bool bf16 = l->family == KILN_KF_BF16_DOT;
    int TM = l->TM, es = bf16 ? 2 : 1, kb = l->KT * es; /* element bytes; bytes of k a step */
    KilnTileSet ts = kt_tile_set(T);
    kt_zero_c(T, &ts, nt);
    LLVMValueRef k0 = LLVMBuildMul(b, gi, kg_i64(g, l->group), "");
    int64_t spr = (int64_t)l->scratch_per_row;
    LLVMValueRef arow = kg_i64(g, spr), brow = kg_i64(g, (int64_t)l->NR * 4);
    LLVMValueRef abase = kg_gep(g, g->scratch, LLVMBuildMul(b, m0, arow, ""));
    KilnLoop lk;
    LLVMValueRef k = kg_loop_begin(g, &lk, k0, kg_group_end_k(g, k0), l->KT);
    LLVMValueRef kbytes = LLVMBuildMul(b, k, kg_i64(g, es), "");
    for (int i = 0; i < nt; i++)
        kt_load(T, ts.a[i], TM, kb, kg_gep(g, abase, LLVMBuildAdd(b, kbytes, kg_i64(g, i * TM * spr), "")),
                arow);
    LLVMValueRef wkk = kg_gep(g, wk, LLVMBuildMul(b, kbytes, kg_i64(g, l->NR), ""));
    for (int h = 0; h < 2; h++) /* B rows hold 4 bytes of k per column */
        kt_load(T, ts.b[h], kb / 4, 64, kg_gep(g, wkk, kg_i64(g, 64 * h)), brow);
    for (int i = 0; i < nt; i++)
        for (int h = 0; h < 2; h++) {
            if (bf16)
                kt_dpbf16ps(T, ts.c[i][h], ts.a[i], ts.b[h], TM, 64, kb);
            else
                kt_dpbusd(T, ts.c[i][h], ts.a[i], ts.b[h], TM, 64, kb);
        }
    kg_loop_end(g, &lk);
    for (int i = 0; i < nt; i++)
        for (int h = 0; h < 2; h++)
            kt_store(T, ts.c[i][h], TM, 64, kg_gep(g, cbuf, kg_i64(g, ((int64_t)i * TM * l->NR + 16 * h) * 4)),
                     brow);
}

KilnTile kg_tile_row(KilnGen *g, const KilnTile *t, LLVMValueRef m0, LLVMValueRef r,
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

/* Row t1 (one row of a full panel, f32 out, no activation) straight from its f32
 * sums into y with vector stores: what kg_emit_tile_store computes, in the same
 * order (activation scale, then bias), without its scalar store loop. */
static void store_row_vec(KilnGen *g, KilnTile *t1)
{
    const KilnLayout *l = g->l;
    LLVMBuilderRef b = g->b;
    bool scale_after = l->group_mode; /* kg_emit_tile_store's rule for int8 activations */
    LLVMValueRef n0 = LLVMBuildMul(b, t1->p, kg_i64(g, l->NR), "");
    LLVMValueRef yrow = kg_gep(g, g->y, LLVMBuildMul(b, LLVMBuildAdd(b, LLVMBuildMul(b, t1->m0, kg_i64(g, l->N), ""),
                                                                     n0, ""), kg_i64(g, 4), ""));
    for (int v = 0; v < t1->NV; v++) {
        LLVMValueRef f = kg_ld(g, g->vf, t1->facc[0][v]);
        if (scale_after)
            f = LLVMBuildFMul(b, f, kg_splat(g, kg_load(g, g->f32, t1->meta[0]), (unsigned)l->VL), "");
        if (l->has_bias) {
            LLVMValueRef bn = LLVMBuildAdd(b, n0, kg_i64(g, (int64_t)v * l->VL), "");
            f = LLVMBuildFAdd(b, f, kg_load(g, g->vf, kg_gep(g, g->bias, LLVMBuildMul(b, bn, kg_i64(g, 4), ""))), "");
        }
        kg_store(g, f, kg_gep(g, yrow, kg_i64(g, (int64_t)v * l->VL * 4)));
    }
}

/* Row t1 through the output epilogue: vector stores for a full panel where the
 * epilogue is plain f32, else kg_emit_tile_store. */
static void store_row(KilnGen *g, KilnTile *t1)
{
    const KilnLayout *l = g->l;
    LLVMBuilderRef b = g->b;
    if (l->epilogue != KILN_EPI_NONE || l->out_dt != KILN_F32) {
        kg_emit_tile_store(g, t1);
        return;
    }
    LLVMBasicBlockRef vec = LLVMAppendBasicBlockInContext(g->c, g->fn, "row_vec");
    LLVMBasicBlockRef part = LLVMAppendBasicBlockInContext(g->c, g->fn, "row_part");
    LLVMBasicBlockRef done = LLVMAppendBasicBlockInContext(g->c, g->fn, "row_stored");
    LLVMBuildCondBr(b, LLVMBuildICmp(b, LLVMIntEQ, t1->ncols, kg_i64(g, l->NR), ""), vec, part);
    LLVMPositionBuilderAtEnd(b, vec);
    store_row_vec(g, t1);
    LLVMBuildBr(b, done);
    LLVMPositionBuilderAtEnd(b, part);
    kg_emit_tile_store(g, t1);
    LLVMBuildBr(b, done);
    LLVMPositionBuilderAtEnd(b, done);
}

/* The live rows from m0 (at most nt*TM) of t's panel: per group the tiles, then
 * row by row the group epilogue (the first group starts the row's f32 sums), and
 * after the last group the output epilogue. */
static void row_tiles(KilnTiles *T, KilnTile *t, LLVMValueRef m0, LLVMValueRef live, LLVMValueRef wk,
                      LLVMValueRef cbuf, LLVMValueRef fbuf, int nt)
{
    KilnGen *g = T->g;
    const KilnLayout *l = g->l;
    LLVMBuilderRef b = g->b;
    KilnLoop lg, lr;
    LLVMValueRef gi = kg_loop_begin(g, &lg, kg_i64(g, 0), kg_i64(g, l->ngroups), 1);
    kg_amx_group_tiles(T, m0, gi, wk, cbuf, nt);
    LLVMValueRef first = LLVMBuildICmp(b, LLVMIntEQ, gi, kg_i64(g, 0), "");
    LLVMValueRef r = kg_loop_begin(g, &lr, kg_i64(g, 0), live, 1);
    KilnTile t1 = kg_tile_row(g, t, m0, r, cbuf, fbuf);
    for (int v = 0; v < t1.NV; v++)
        kg_st(g, LLVMBuildSelect(b, first, LLVMConstNull(g->vf), kg_ld(g, g->vf, t1.facc[0][v]), ""),
              t1.facc[0][v]);
    kg_group_end(g, &t1, gi);
    if (l->ngroups > 1) {
        LLVMBasicBlockRef st = LLVMAppendBasicBlockInContext(g->c, g->fn, "last_group");
        LLVMBasicBlockRef nx = LLVMAppendBasicBlockInContext(g->c, g->fn, "row_done");
        LLVMBuildCondBr(b, LLVMBuildICmp(b, LLVMIntEQ, gi, kg_i64(g, l->ngroups - 1), ""), st, nx);
        LLVMPositionBuilderAtEnd(b, st);
        store_row(g, &t1);
        LLVMBuildBr(b, nx);
        LLVMPositionBuilderAtEnd(b, nx);
    } else {
        store_row(g, &t1);
    }
    kg_loop_end(g, &lr);
    kg_loop_end(g, &lg);
}

static LLVMValueRef min_i64(KilnGen *g, LLVMValueRef a, LLVMValueRef b)
{
    return LLVMBuildSelect(g->b, LLVMBuildICmp(g->b, LLVMIntSLT, a, b, ""), a, b, "");
}

void kg_emit_amx(KilnGen *g, LLVMValueRef p0, LLVMValueRef p1)
{
    const KilnLayout *l = g->l;
    LLVMBuilderRef b = g->b;
    KilnTiles T = kt_init(g, l->tiles_model);
    int TM = l->TM;
    bool int4 = kiln_dtype_bits(l->wdt) == 4;
    LLVMValueRef cbuf = kg_alloca(g, LLVMArrayType(g->i32, (unsigned)(2 * TM * l->NR)), "cbuf");
    LLVMValueRef fbuf = kg_alloca(g, LLVMArrayType(g->f32, (unsigned)(2 * TM * l->NR)), "fbuf");
    /* int4: the unpacked panel after the M rows and the TM - 1 pad rows (ir/layout.c) */
    LLVMValueRef ubuf = kg_gep(g, g->scratch, LLVMBuildMul(b, LLVMBuildAdd(b, g->M, kg_i64(g, TM - 1), ""),
                                                           kg_i64(g, (int64_t)l->scratch_per_row), ""));
    int64_t MB = kiln_layout_amx_m_block(l);
    KilnLoop lb, lp, lm;
    LLVMValueRef mb0 = kg_loop_begin(g, &lb, kg_i64(g, 0), g->M, MB);
    LLVMValueRef mb1 = min_i64(g, LLVMBuildAdd(b, mb0, kg_i64(g, MB), ""), g->M);
    KilnTile t = {.NV = l->NR / l->VL};
    kg_panel_begin(g, &t, kg_loop_begin(g, &lp, p0, p1, 1));
    LLVMValueRef wk = t.wpanel;
    if (int4) {
        unpack_int4_panel(g, &t, ubuf);
        wk = ubuf;
    }
    LLVMValueRef m0 = kg_loop_begin(g, &lm, mb0, mb1, 2 * TM);
    LLVMValueRef left = LLVMBuildSub(b, mb1, m0, "");
    LLVMBasicBlockRef two = LLVMAppendBasicBlockInContext(g->c, g->fn, "two_tiles");
    LLVMBasicBlockRef one = LLVMAppendBasicBlockInContext(g->c, g->fn, "one_tile");
    LLVMBasicBlockRef next = LLVMAppendBasicBlockInContext(g->c, g->fn, "pair_done");
    LLVMBuildCondBr(b, LLVMBuildICmp(b, LLVMIntSGT, left, kg_i64(g, TM), ""), two, one);
    LLVMPositionBuilderAtEnd(b, two);
    row_tiles(&T, &t, m0, min_i64(g, left, kg_i64(g, 2 * TM)), wk, cbuf, fbuf, 2);
    LLVMBuildBr(b, next);
    LLVMPositionBuilderAtEnd(b, one);
    row_tiles(&T, &t, m0, left, wk, cbuf, fbuf, 1);
    LLVMBuildBr(b, next);
    LLVMPositionBuilderAtEnd(b, next);
    kg_loop_end(g, &lm);
    kg_loop_end(g, &lp);
    kg_loop_end(g, &lb);
}
