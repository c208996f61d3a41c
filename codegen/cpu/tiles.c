/* codegen/cpu/tiles.c — AMX tile operations for the tile kernels (qgemm_amx.c):
 * LLVM's AMX intrinsics (llvm.x86.*.internal: the shape travels with every use and
 * LLVM inserts the ldtilecfg), or, for `tiles = "model"`, calls into the scalar
 * model (ir/amx_model.h) with the same shapes and operands, so that a tile kernel
 * runs on any host. A tile lives in a slot (kt_slot) between uses: a <256 x i32>
 * the optimizer keeps in a tile register (loop-carried C tiles become phis), or the
 * model's KilnAmxTile. */
#include <stdio.h>

#include "codegen/cpu/gen.h"
#include "ir/amx_model.h"

static LLVMValueRef c16(KilnTiles *T, int v) { return LLVMConstInt(T->g->i16, (unsigned long long)v, 0); }

/* A call to the model function `name` (void result). */
static void model_call(KilnTiles *T, const char *name, LLVMTypeRef *pt, LLVMValueRef *args, unsigned n)
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
LLVMValueRef kt_slot(KilnTiles *T, const char *name)
{
    KilnGen *g = T->g;
    return kg_alloca(g, T->model ? LLVMArrayType(g->i8, (unsigned)sizeof(KilnAmxTile)) : T->vt, name);
}

static LLVMValueRef to_tile(KilnTiles *T, LLVMValueRef slot)
{
    LLVMValueRef v = kg_ld(T->g, T->vt, slot);
    return kg_call_intr(T->g, "llvm.x86.cast.vector.to.tile", &T->vt, 1, &v, 1);
}

static void from_tile(KilnTiles *T, LLVMValueRef tile, LLVMValueRef slot)
{
    kg_st(T->g, kg_call_intr(T->g, "llvm.x86.cast.tile.to.vector", &T->vt, 1, &tile, 1), slot);
}

void kt_zero(KilnTiles *T, LLVMValueRef slot, int rows, int colsb)
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

void kt_load(KilnTiles *T, LLVMValueRef slot, int rows, int colsb, LLVMValueRef base,
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

void kt_store(KilnTiles *T, LLVMValueRef slot, int rows, int colsb, LLVMValueRef base,
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

/* c += a . b through the tile instruction `op` ("tdpbusd": u8 rows of a by s8 columns
 * of b into int32; "tdpbf16ps": bf16 pairs into f32), m rows, n and k bytes. */
static void tile_dp(KilnTiles *T, const char *op, LLVMValueRef c, LLVMValueRef a, LLVMValueRef b,
                    int m, int n, int k)
{
    KilnGen *g = T->g;
    char name[64];
    if (T->model) {
        LLVMTypeRef pt[6] = {g->ptr, g->i32, g->i32, g->i32, g->ptr, g->ptr};
        LLVMValueRef v[6] = {c, kg_i32(g, m), kg_i32(g, n), kg_i32(g, k), a, b};
        snprintf(name, sizeof name, "kiln_amx_%s", op);
        model_call(T, name, pt, v, 6);
        return;
    }
    LLVMValueRef v[6] = {c16(T, m), c16(T, n), c16(T, k), to_tile(T, c), to_tile(T, a), to_tile(T, b)};
    snprintf(name, sizeof name, "llvm.x86.%s.internal", op);
    from_tile(T, kg_call_intr(g, name, NULL, 0, v, 6), c);
}

void kt_dpbusd(KilnTiles *T, LLVMValueRef c, LLVMValueRef a, LLVMValueRef b, int m, int n, int k)
{
    tile_dp(T, "tdpbusd", c, a, b, m, n, k);
}

void kt_dpbf16ps(KilnTiles *T, LLVMValueRef c, LLVMValueRef a, LLVMValueRef b, int m, int n, int k)
{
    tile_dp(T, "tdpbf16ps", c, a, b, m, n, k);
}

KilnTileSet kt_tile_set(KilnTiles *T)
{
    static const char *const an[2] = {"tile_a0", "tile_a1"}, *const bn[2] = {"tile_b0", "tile_b1"};
    static const char *const cn[2][2] = {{"tile_c00", "tile_c01"}, {"tile_c10", "tile_c11"}};
    KilnTileSet s;
    for (int i = 0; i < 2; i++) {
        s.a[i] = kt_slot(T, an[i]);
        s.b[i] = kt_slot(T, bn[i]);
        for (int h = 0; h < 2; h++)
            s.c[i][h] = kt_slot(T, cn[i][h]);
    }
    return s;
}

void kt_zero_c(KilnTiles *T, const KilnTileSet *s, int nt)
{
    for (int i = 0; i < nt; i++)
        for (int h = 0; h < 2; h++)
            kt_zero(T, s->c[i][h], 16, 64);
}

KilnTiles kt_init(KilnGen *g, bool model)
{
    return (KilnTiles){.g = g, .model = model, .vt = kg_vec(g->i32, 256)};
}
