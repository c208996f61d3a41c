/* codegen/cpu/gen.h — internals shared by the CPU code generator's files: the
 * generator state, the small LLVM-builder helpers and the qgemm kernel's tile and
 * helpers shared by its direct and blocked paths (not part of the public API). */
#ifndef KILN_CODEGEN_CPU_GEN_H
#define KILN_CODEGEN_CPU_GEN_H

#include <llvm-c/Core.h>

#include "codegen/cpu/cpu.h"

typedef struct KilnGen {
    LLVMContextRef c;
    LLVMModuleRef m;
    LLVMBuilderRef b;      /* the body */
    LLVMBuilderRef ab;     /* allocas, at the end of the entry block */
    LLVMValueRef fn;
    const KilnLayout *l;
    LLVMTypeRef i1, i8, i16, i32, i64, f32, f16, bf16, ptr, vf, vi; /* vf/vi: VL lanes */
    LLVMValueRef x, M, wp, bias, y, n0, n1, scratch; /* the kernel's arguments */
    const char *cpu, *features; /* also written as function attributes */
} KilnGen;

/* A counted loop over an i64 induction variable kept in an alloca (SROA turns it
 * into a phi); the body is emitted between loop_begin and loop_end. */
typedef struct KilnLoop {
    LLVMValueRef var;
    LLVMBasicBlockRef head, exit;
    LLVMValueRef step;
} KilnLoop;

LLVMValueRef kg_i32(KilnGen *g, int64_t v);
LLVMValueRef kg_i64(KilnGen *g, int64_t v);
LLVMValueRef kg_f32(KilnGen *g, double v);
LLVMValueRef kg_alloca(KilnGen *g, LLVMTypeRef t, const char *name);
LLVMValueRef kg_gep(KilnGen *g, LLVMValueRef base, LLVMValueRef byte_off);
LLVMValueRef kg_load(KilnGen *g, LLVMTypeRef t, LLVMValueRef p);
void kg_store(KilnGen *g, LLVMValueRef v, LLVMValueRef p);
LLVMValueRef kg_splat(KilnGen *g, LLVMValueRef scalar, unsigned n);
LLVMValueRef kg_call_intr(KilnGen *g, const char *name, LLVMTypeRef *over, unsigned nover,
                          LLVMValueRef *args, unsigned nargs);
LLVMValueRef kg_call_libm(KilnGen *g, const char *name, LLVMValueRef x);
LLVMValueRef kg_loop_begin(KilnGen *g, KilnLoop *lp, LLVMValueRef start, LLVMValueRef end,
                           int64_t step);
void kg_loop_end(KilnGen *g, KilnLoop *lp);
LLVMTypeRef kg_vec(LLVMTypeRef el, unsigned n);

/* Rounding helpers shared by activation prep and the output store. */
LLVMValueRef kg_f32_to_bf16_bits(KilnGen *g, LLVMValueRef x);  /* i16 (lanes), RNE, NaN kept */
LLVMValueRef kg_round_act(KilnGen *g, KilnDType dt, LLVMValueRef x); /* kiln_round_to, f32 or lanes */
LLVMValueRef kg_fp8_round(KilnGen *g, KilnQFormat f, LLVMValueRef v); /* dec(enc(v)) */

/* emit.c: LLVM's x86 target, initialized once per process. */
void kiln_cpu_init_llvm(void);

/* qgemm_act.c: quantize/convert all M activation rows into scratch. */
void kg_emit_act_prep(KilnGen *g);
/* qgemm_act.c: the end of the group starting at k0: k0 + group, or K for a ragged last
 * group. */
LLVMValueRef kg_group_end_k(KilnGen *g, LLVMValueRef k0);
/* qgemm_gen.c: the whole kernel function `symbol` into g->m. */
int kg_emit_qgemm(KilnGen *g, const char *symbol, KilnDiag *d);

/* The qgemm kernel's tile: R rows x NV vectors of one panel p, with the allocas
 * of its sums. Shared by the direct path (qgemm_gen.c) and the blocked one. */
#define KG_MAXR 12
#define KG_MAXNV 4
#define KG_MAXP 4

typedef struct KilnTile {
    int R, NV;
    int P; /* independent accumulator chains per (row, vector), summed per group */
    LLVMValueRef m0, p, ncols, wpanel;
    LLVMValueRef mlast; /* set: rows past it repeat it (kg_tile_m) */
    LLVMValueRef rowp[KG_MAXR], meta[KG_MAXR];
    LLVMValueRef packed[KG_MAXNV]; /* int4: the block's column words, loaded once per block */
    LLVMValueRef facc[KG_MAXR][KG_MAXNV], gacc[KG_MAXR][KG_MAXNV][KG_MAXP]; /* allocas */
} KilnTile;

/* The tile's own allocas are naturally aligned: plain loads and stores, where
 * kg_load/kg_store assume nothing of packed data. */
static inline LLVMValueRef kg_ld(KilnGen *g, LLVMTypeRef t, LLVMValueRef p) { return LLVMBuildLoad2(g->b, t, p, ""); }
static inline void kg_st(KilnGen *g, LLVMValueRef v, LLVMValueRef p) { LLVMBuildStore(g->b, v, p); }

/* qgemm_gen.c: what the blocked path takes from the direct one. */
bool kg_packed_words(const KilnLayout *l);
void kg_load_packed(KilnGen *g, KilnTile *t, LLVMValueRef kb);
LLVMValueRef kg_vsplat_i(KilnGen *g, LLVMTypeRef el, int64_t v, unsigned n);
LLVMValueRef kg_unscale(KilnGen *g);
LLVMValueRef kg_vec_sect(KilnGen *g, KilnTile *t, size_t sect, LLVMValueRef gi, int v);
LLVMValueRef kg_weight_operand(KilnGen *g, KilnTile *t, LLVMValueRef kb, int j, int v,
                               LLVMValueRef zv);
/* Float families' zero points of group gi for vector v, in the weight operand's lanes
 * (NULL where the codes need none subtracted). */
LLVMValueRef kg_group_zeros(KilnGen *g, KilnTile *t, LLVMValueRef gi, int v);
/* The tile's f32 sums in tmp (NR a row) through bias and activation into y. */
void kg_emit_epilogue_store(KilnGen *g, KilnTile *t, LLVMValueRef tmp);
/* The end of group gi: the group's sums (gacc) corrected and scaled into facc. */
void kg_group_end(KilnGen *g, KilnTile *t, LLVMValueRef gi);
/* facc (activation scale last where the interpreter applies it last) through the
 * epilogue into y. */
void kg_emit_tile_store(KilnGen *g, KilnTile *t);

/* tiles.c: AMX tile operations, real (LLVM's AMX intrinsics) or on the scalar model
 * (ir/amx_model.h) for `tiles = "model"`; a tile is a slot from kt_slot. Shapes: m
 * rows, n and k (colsb) bytes. */
typedef struct KilnTiles {
    KilnGen *g;
    bool model;
    LLVMTypeRef vt;  /* <256 x i32>: a tile between uses (clang's _tile1024i) */
} KilnTiles;
KilnTiles kt_init(KilnGen *g, bool model);
LLVMValueRef kt_slot(KilnTiles *T, const char *name);
/* The 2x2-blocked tile kernels' eight tiles: two A (row tiles), two B (the panel's
 * 16-column halves), four C (a row tile by a half). */
typedef struct KilnTileSet {
    LLVMValueRef a[2], b[2], c[2][2];
} KilnTileSet;
KilnTileSet kt_tile_set(KilnTiles *T);
/* C tiles c[i][h], i < nt, zeroed (16 rows of 64 bytes). */
void kt_zero_c(KilnTiles *T, const KilnTileSet *s, int nt);
void kt_zero(KilnTiles *T, LLVMValueRef slot, int rows, int colsb);
void kt_load(KilnTiles *T, LLVMValueRef slot, int rows, int colsb, LLVMValueRef base,
             LLVMValueRef stride);
void kt_store(KilnTiles *T, LLVMValueRef slot, int rows, int colsb, LLVMValueRef base,
              LLVMValueRef stride);
void kt_dpbusd(KilnTiles *T, LLVMValueRef c, LLVMValueRef a, LLVMValueRef b, int m, int n, int k);
void kt_dpbf16ps(KilnTiles *T, LLVMValueRef c, LLVMValueRef a, LLVMValueRef b, int m, int n, int k);

/* qgemm_gen.c: t's panel p (columns, codes). */
void kg_panel_begin(KilnGen *g, KilnTile *t, LLVMValueRef p);
/* qgemm_amx.c: panels [p0, p1) on AMX tiles (or the scalar tile model), all M rows. */
void kg_emit_amx(KilnGen *g, LLVMValueRef p0, LLVMValueRef p1);
/* qgemm_amx.c: group gi of nt (1 or 2) 16-row tiles from m0 on the tile layout (u8s8 or
 * bf16): C = sum over the group's k of A . B, 2x2 blocked (two A tiles from the prepared
 * rows, the panel's two 16-column B tiles at wk, k at wk + k*NR*element bytes), stored
 * to cbuf ([nt*TM][NR] int32 or f32). */
void kg_amx_group_tiles(KilnTiles *T, LLVMValueRef m0, LLVMValueRef gi, LLVMValueRef wk,
                        LLVMValueRef cbuf, int nt);
/* qgemm_amx.c: row m0 + r of a tile path's rows as a one-row KilnTile whose group sums
 * are row r of cbuf and whose f32 sums are row r of fbuf (NR a row each), with its
 * prepared row and meta in scratch; shared by both tile kernels. */
KilnTile kg_tile_row(KilnGen *g, const KilnTile *t, LLVMValueRef m0, LLVMValueRef r,
                     LLVMValueRef cbuf, LLVMValueRef fbuf);
/* qgemm_amx_bf16.c: panels [p0, p1) of amx-bf16-tile, all M rows, on tdpbf16ps tiles
 * (or the model). */
void kg_emit_amx_bf16_panels(KilnGen *g, LLVMValueRef p0, LLVMValueRef p1);

/* qgemm_gen.c: the decode rows' software prefetch for word block kb. */
void kg_prefetch_ahead(KilnGen *g, KilnTile *t, LLVMValueRef kb);
/* qgemm_planes.c (act_planes layouts, ir/layout.h): all M rows' byte planes and block
 * meta into scratch; one row (t->m0) of one panel on vpdpbusd over them. */
void kg_emit_planes_prep(KilnGen *g);
void kg_emit_planes_tile(KilnGen *g, KilnTile *t);

/* qgemm_blocked.c: one panel of the blocked prefill path, all M rows. */
void kg_emit_blocked_panel(KilnGen *g, KilnTile *t);

#endif
