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
#include "ir/amx_model.h"

typedef struct Tiles {
    KilnGen *g;
    bool model;
    LLVMTypeRef vt;  /* <256 x i32>: a tile between uses (clang's _tile1024i) */
    LLVMTypeRef amx; /* x86_amx */
    LLVMTypeRef i16;
} Tiles;

static LLVMValueRef c16(Tiles *T, int v) { return LLVMConstInt(T->i16, (unsigned long long)v, 0); }

/* A call to the model function `name` (void result). */
static void model_call(Tiles *T, const char *name, LLVMTypeRef *pt, LLVMValueRef *args, unsigned n)
{
    KilnGen *g = T->g;
    LLVMTypeRef ft = LLVMFunctionType(LLVMVoidTypeInContext(g->c), pt, n, 0);
    LLVMValueRef fn = LLVMGetNamedFunction(g->m, name);
    if (!fn)
        fn = LLVMAddFunction(g->m, name, ft);
    LLVMBuildCall2(g->b, ft, fn, args, n, "");
}

/* A tile's storage: the model's KilnAmxTile, or a <256 x i32> the optimizer keeps
 * in tile registers (loop-carried C tiles become phis). */
static LLVMValueRef tile_slot(Tiles *T, const char *name)
{
    KilnGen *g = T->g;
    return kg_alloca(g, T->model ? LLVMArrayType(g->i8, (unsigned)sizeof(KilnAmxTile)) : T->vt, name);
}

static LLVMValueRef to_tile(Tiles *T, LLVMValueRef slot)
{
    LLVMValueRef v = kg_ld(T->g, T->vt, slot);
    return kg_call_intr(T->g, "llvm.x86.cast.vector.to.tile", &T->vt, 1, &v, 1);
}

static void from_tile(Tiles *T, LLVMValueRef tile, LLVMValueRef slot)
{
    kg_st(T->g, kg_call_intr(T->g, "llvm.x86.cast.tile.to.vector", &T->vt, 1, &tile, 1), slot);
}

static void t_zero(Tiles *T, LLVMValueRef slot, int rows, int colsb)
{
    KilnGen *g = T->g;
    if (T->model) {
        LLVMTypeRef pt[3] = {g->ptr, g->i32, g->i32};
        LLVMValueRef a[3] = {slot, kg_i32(g, rows), kg_i32(g, colsb)};
        model_call(T, "kiln_amx_tilezero", pt, a, 3);
        return;
    }
    LLVMValueRef a[2] = {c16(T, rows), c16(T, colsb)};
    from_tile(T, kg_call_intr(g, "llvm.x86.tilezero.internal", NULL, 0, a, 2), slot);
}

static void t_load(Tiles *T, LLVMValueRef slot, int rows, int colsb, LLVMValueRef base,
                   LLVMValueRef stride)
{
    KilnGen *g = T->g;
    if (T->model) {
        LLVMTypeRef pt[5] = {g->ptr, g->i32, g->i32, g->ptr, g->i64};
        LLVMValueRef a[5] = {slot, kg_i32(g, rows), kg_i32(g, colsb), base, stride};
        model_call(T, "kiln_amx_tileloadd", pt, a, 5);
        return;
    }
    LLVMValueRef a[4] = {c16(T, rows), c16(T, colsb), base, stride};
    from_tile(T, kg_call_intr(g, "llvm.x86.tileloadd64.internal", NULL, 0, a, 4), slot);
}

static void t_store(Tiles *T, LLVMValueRef slot, int rows, int colsb, LLVMValueRef base,
                    LLVMValueRef stride)
{
    KilnGen *g = T->g;
    if (T->model) {
        LLVMTypeRef pt[5] = {g->i32, g->i32, g->ptr, g->i64, g->ptr};
        LLVMValueRef a[5] = {kg_i32(g, rows), kg_i32(g, colsb), base, stride, slot};
        model_call(T, "kiln_amx_tilestored", pt, a, 5);
        return;
    }
    LLVMValueRef a[5] = {c16(T, rows), c16(T, colsb), base, stride, to_tile(T, slot)};
    kg_call_intr(g, "llvm.x86.tilestored64.internal", NULL, 0, a, 5);
}

/* c += a . b: tdpbusd, u8 rows of a by s8 columns of b (m rows, n and k bytes). */
static void t_dpbusd(Tiles *T, LLVMValueRef c, LLVMValueRef a, LLVMValueRef b, int m, int n, int k)
{
    KilnGen *g = T->g;
    if (T->model) {
        LLVMTypeRef pt[6] = {g->ptr, g->i32, g->i32, g->i32, g->ptr, g->ptr};
        LLVMValueRef v[6] = {c, kg_i32(g, m), kg_i32(g, n), kg_i32(g, k), a, b};
        model_call(T, "kiln_amx_tdpbusd", pt, v, 6);
        return;
    }
    LLVMValueRef v[6] = {c16(T, m), c16(T, n), c16(T, k), to_tile(T, c), to_tile(T, a), to_tile(T, b)};
    from_tile(T, kg_call_intr(g, "llvm.x86.tdpbusd.internal", NULL, 0, v, 6), c);
}

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
static void group_tiles(Tiles *T, KilnTile *t, LLVMValueRef m0, LLVMValueRef gi, LLVMValueRef cbuf)
{
    KilnGen *g = T->g;
    const KilnLayout *l = g->l;
    LLVMBuilderRef b = g->b;
    int TM = l->TM, KT = l->KT;
    LLVMValueRef a = tile_slot(T, "tile_a"), bt[2] = {tile_slot(T, "tile_b0"), tile_slot(T, "tile_b1")};
    LLVMValueRef c[2] = {tile_slot(T, "tile_c0"), tile_slot(T, "tile_c1")};
    for (int h = 0; h < 2; h++)
        t_zero(T, c[h], TM, 64);
    LLVMValueRef k0 = LLVMBuildMul(b, gi, kg_i64(g, l->group), "");
    LLVMValueRef k1 = LLVMBuildAdd(b, k0, kg_i64(g, l->group), "");
    if (l->K % l->group) /* ragged last group: it ends at K */
        k1 = LLVMBuildSelect(b, LLVMBuildICmp(b, LLVMIntSLT, k1, kg_i64(g, l->K), ""), k1,
                             kg_i64(g, l->K), "");
    LLVMValueRef arow = kg_i64(g, (int64_t)l->scratch_per_row), brow = kg_i64(g, (int64_t)l->NR * 4);
    LLVMValueRef abase = kg_gep(g, g->scratch, LLVMBuildMul(b, m0, arow, ""));
    KilnLoop lk;
    LLVMValueRef k = kg_loop_begin(g, &lk, k0, k1, KT);
    t_load(T, a, TM, KT, kg_gep(g, abase, k), arow);
    LLVMValueRef wk;
    if (kiln_dtype_bits(l->wdt) == 4) {
        wk = kg_alloca(g, LLVMArrayType(g->i8, (unsigned)(KT / 4 * l->NR * 4)), "bbuf");
        unpack_int4(g, t, k, wk);
    } else {
        wk = kg_gep(g, t->wpanel, LLVMBuildMul(b, k, kg_i64(g, l->NR), ""));
    }
    for (int h = 0; h < 2; h++) {
        t_load(T, bt[h], KT / 4, 64, kg_gep(g, wk, kg_i64(g, 64 * h)), brow);
        t_dpbusd(T, c[h], a, bt[h], TM, 64, KT);
    }
    kg_loop_end(g, &lk);
    for (int h = 0; h < 2; h++)
        t_store(T, c[h], TM, 64, kg_gep(g, cbuf, kg_i64(g, 64 * h)), brow);
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
    Tiles T = {.g = g, .model = l->tiles_model, .vt = kg_vec(g->i32, 256),
               .amx = LLVMX86AMXTypeInContext(g->c), .i16 = g->i16};
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
