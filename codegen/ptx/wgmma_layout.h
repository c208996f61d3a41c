/* codegen/ptx/wgmma_layout.h — the index maths of the sm_90a wgmma GEMM kernel, stated
 * once: where an operand byte lies in shared memory, the matrix descriptor that tells
 * wgmma where, and which output element an accumulator register holds. gen.c pastes it
 * in front of qgemm_wgmma.cu (as CUDA); tests/test_wgmma_layout.c compiles it as C and
 * checks it against the PTX ISA's rules, element by element. No includes: NVRTC has none.
 *
 * Operand tiles are K-major (a row of A is an activation row, a row of B a weight row
 * n, both with k contiguous) in the no-swizzle ("interleave") layout: 8 rows x 16 bytes
 * make a 128-byte core matrix, row r of it at byte 16·r; core matrices next to each
 * other along K are WG_LBO bytes apart (the descriptor's leading dimension byte offset),
 * groups of 8 rows wg_sbo() apart (its stride dimension byte offset). A tile row holds
 * `rowbytes` bytes of one k slice (32 for 8-bit operands, 64 for 16-bit), so the core
 * matrices of a row group are contiguous and one wgmma (k32 of 8-bit, k16 of 16-bit:
 * always 32 bytes of each row) reads two of them. */
#ifndef KILN_WGMMA_LAYOUT_H
#define KILN_WGMMA_LAYOUT_H

#ifdef __CUDACC__
#define WG_FN static __device__ __forceinline__
#else
#define WG_FN static inline
#endif

typedef unsigned long long wg_u64;

#define WG_LBO 128u      /* bytes from one core matrix to the next along K */
#define WG_STEP_BYTES 32u /* bytes of each row one wgmma reads (two core matrices) */

/* Bytes from one 8-row group of core matrices to the next. */
WG_FN unsigned wg_sbo(unsigned rowbytes) { return rowbytes * 8u; }

/* Byte offset in a tile of element byte `kbyte` (0 .. rowbytes-1) of row `row`. A
 * 16-byte aligned run of a row (kbyte % 16 == 0) is 16 contiguous, 16-aligned bytes:
 * one cp.async. */
WG_FN unsigned wg_tile_off(unsigned row, unsigned kbyte, unsigned rowbytes)
{
    return (row >> 3) * wg_sbo(rowbytes) + (kbyte >> 4) * WG_LBO + (row & 7u) * 16u + (kbyte & 15u);
}

/* The 64-bit matrix descriptor: bits 0-13 start address >> 4, 16-29 leading dimension
 * byte offset >> 4, 32-45 stride dimension byte offset >> 4, 49-51 base offset (0: no
 * swizzle needs none), 62-63 swizzle mode (0: none). */
WG_FN wg_u64 wg_desc(unsigned smem_addr, unsigned lbo, unsigned sbo)
{
    return (wg_u64)((smem_addr & 0x3FFFFu) >> 4) | ((wg_u64)((lbo >> 4) & 0x3FFFu) << 16) |
           ((wg_u64)((sbo >> 4) & 0x3FFFu) << 32);
}

/* The descriptor of wgmma step `step` (bytes 32·step .. 32·step+31 of every row) of a
 * tile starting at shared address `tile`. */
WG_FN wg_u64 wg_step_desc(unsigned tile, unsigned step, unsigned rowbytes)
{
    return wg_desc(tile + wg_tile_off(0, step * WG_STEP_BYTES, rowbytes), WG_LBO, wg_sbo(rowbytes));
}

/* Accumulator register i (0 .. N/2-1 of an m64nN f32/s32 wgmma) of warpgroup thread t
 * (0..127): its row (0..63) and column (0..N-1) in the 64 x N output. */
WG_FN unsigned wg_acc_row(unsigned t, unsigned i) { return (t >> 5) * 16u + ((t & 31u) >> 2) + ((i >> 1) & 1u) * 8u; }
WG_FN unsigned wg_acc_col(unsigned t, unsigned i) { return (i >> 2) * 8u + (t & 3u) * 2u + (i & 1u); }

#endif
