/* ir/amx_model.h — a scalar model of the AMX tile instructions (palette 1), in
 * plain C: the tile config ldtilecfg reads, tileloadd/tilestored with rows, bytes
 * per row and stride, tilezero, the int8 dot products tdpbusd/tdpbssd/tdpbsud/
 * tdpbuud into int32 and tdpbf16ps (bf16 pairs into f32). The code generator emits
 * calls to these instead of LLVM's AMX intrinsics when a kernel is built for the
 * model (`tiles = "model"`, docs/jit-aot.md), so the tile kernels' tiling, packing
 * and epilogues run, and are tested, on any host. libc only. Semantics and their
 * sources are in amx_model.c. */
#ifndef KILN_AMX_MODEL_H
#define KILN_AMX_MODEL_H

#include <stdint.h>

/* Palette 1: 8 tiles of at most 16 rows x 64 bytes (1 KiB each). */
#define KILN_AMX_TILES 8
#define KILN_AMX_MAX_ROWS 16
#define KILN_AMX_MAX_COLSB 64

/* The 64-byte memory operand of ldtilecfg (Intel SDM vol. 2, LDTILECFG). */
typedef struct KilnAmxCfg {
    uint8_t palette;     /* 0: tiles off (init state), 1: the only palette defined */
    uint8_t start_row;   /* restart row of an interrupted tileloadd/tilestored */
    uint8_t reserved[14];
    uint16_t colsb[16];  /* bytes per row of tile i (only 0..7 in palette 1) */
    uint8_t rows[16];    /* rows of tile i */
} KilnAmxCfg;

/* One tile register: its configured shape and its 16 x 64 bytes (bytes beyond the
 * shape are zero, as the instructions leave them). */
typedef struct KilnAmxTile {
    int32_t rows, colsb;
    uint8_t data[KILN_AMX_MAX_ROWS][KILN_AMX_MAX_COLSB];
} KilnAmxTile;

/* ldtilecfg's checks: 0 when valid, else -1 (the instruction raises #GP): palette
 * 0 or 1; palette 1: reserved bytes zero, rows <= 16 and colsb <= 64 for tiles 0..7,
 * each tile either unconfigured (rows = colsb = 0) or both nonzero, and tiles 8..15
 * unconfigured. */
int kiln_amx_cfg_check(const KilnAmxCfg *c);
/* The tiles of a valid config, as ldtilecfg leaves them: shapes set, data zero. */
int kiln_amx_ldtilecfg(const KilnAmxCfg *c, KilnAmxTile t[KILN_AMX_TILES]);

/* The operations, in the argument order of LLVM's shape-carrying intrinsics
 * (llvm.x86.*.internal: the shape is given with every use, the register allocator
 * and the ldtilecfg LLVM inserts make the tile agree with it). A shape outside
 * palette 1, or operands whose shapes do not fit together (the cases where the
 * instruction raises #UD), leave the destination unchanged and count a fault. */
void kiln_amx_tilezero(KilnAmxTile *t, int32_t rows, int32_t colsb);
void kiln_amx_tileloadd(KilnAmxTile *t, int32_t rows, int32_t colsb, const void *base,
                        int64_t stride);
void kiln_amx_tilestored(int32_t rows, int32_t colsb, void *base, int64_t stride,
                         const KilnAmxTile *t);
/* c[m][n] += sum over k of a.row[m].dword[k] . b.row[k].dword[n], four byte products
 * each: tdpbusd (a unsigned, b signed), tdpbssd, tdpbsud, tdpbuud. m = rows of c and
 * a, n = bytes per row of c and b, k = bytes per row of a (= 4 x rows of b). */
void kiln_amx_tdpbusd(KilnAmxTile *c, int32_t m, int32_t n, int32_t k, const KilnAmxTile *a,
                      const KilnAmxTile *b);
void kiln_amx_tdpbssd(KilnAmxTile *c, int32_t m, int32_t n, int32_t k, const KilnAmxTile *a,
                      const KilnAmxTile *b);
void kiln_amx_tdpbsud(KilnAmxTile *c, int32_t m, int32_t n, int32_t k, const KilnAmxTile *a,
                      const KilnAmxTile *b);
void kiln_amx_tdpbuud(KilnAmxTile *c, int32_t m, int32_t n, int32_t k, const KilnAmxTile *a,
                      const KilnAmxTile *b);
/* c.fp32[m][n] += a.bf16[m][2k] * b.bf16[k][2n], then += a.bf16[m][2k+1] *
 * b.bf16[k][2n+1], for k in order; denormal inputs read as zero, denormal results
 * flushed to zero, round to nearest even, MXCSR ignored (amx_model.c). */
void kiln_amx_tdpbf16ps(KilnAmxTile *c, int32_t m, int32_t n, int32_t k, const KilnAmxTile *a,
                        const KilnAmxTile *b);

/* Shape faults counted by this thread since it started (a correct kernel makes
 * none; the tests check). */
int64_t kiln_amx_model_faults(void);

#endif
