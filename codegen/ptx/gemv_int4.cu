// codegen/ptx/gemv_int4.cu — the GEMV kernel of the Marlin-style int4 weight-only layout
// (W4M: int4 codes, f16/bf16 activations), which gen.c pastes after qgemm_template.cu
// (whose helpers it uses) in place of the template's row-major GEMV. The codes' places
// are ir/layout_gpu_int4.h's; docs/gpu.md "Kernel families" describes the kernel.
// (Embedded like the template; test_ptx checks the string equals this file.)

// grid (NP/32, ceil(M/16)), 256 threads: block x computes n block x (32 columns = 4 n
// tiles) for the 16 rows 16*blockIdx.y.. on tensor cores, as the GEMM does, but with no
// shared-memory staging: its 8 warps take contiguous runs of k slices; per slice a lane
// makes one 128-bit load of codes (GV_UNROLL slices in flight), dequantizes them in
// registers into its B fragments, loads its A fragments (rows >= M are the prep's zero
// padding; rows 8..15 are skipped when M - m0 <= 8) and runs 4 n tiles x 2 k16 steps of
// mma.m16n8k16. A warp folds a group's accumulators at the group's end or its run's end
// (a group split between two warps is folded in two parts); the block adds its 8 warps'
// results in order. Decode (M <= 16) reads each code once, and the instruction count
// per 16 bytes of codes stays small enough for the loads to set the pace.
#define GV_WARPS 8
#define GV_UNROLL 4
#define GV_ROWS 16
extern "C" __global__ void __launch_bounds__(256) KNAME(gemv)(const float *x, i64 M, const u8 *wpack,
    const float *bias, void *y, u8 *scratch)
{
    __shared__ float red[GV_WARPS][GV_ROWS][KILN_I4_NB];
    Scratch s = scratch_of(scratch, M);
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, tg = lane & 3;
    i64 nb = blockIdx.x, m0 = (i64)blockIdx.y * GV_ROWS;
    const int KT = KP / BK;
    int kt0 = KT * warp / GV_WARPS, kt1 = KT * (warp + 1) / GV_WARPS;
    bool hi_rows = M - m0 > 8; // the same for the whole block
    const u8 *codes = wpack + CODES_OFF;
    const u16 *a_lo = (const u16 *)s.a + (m0 + g) * KP, *a_hi = a_lo + 8 * KP; // rows < MP exist
    float acc[4][4], outer[4][4];
    #pragma unroll
    for (int nt = 0; nt < 4; nt++)
        #pragma unroll
        for (int c = 0; c < 4; c++) { acc[nt][c] = 0.0f; outer[nt][c] = 0.0f; }
    I4Sub sb[4];
    int jsub = -1;
    for (int kb = kt0; kb < kt1; kb += GV_UNROLL) {
        u32 q[GV_UNROLL][4];
        #pragma unroll
        for (int u = 0; u < GV_UNROLL; u++)
            if (kb + u < kt1) ldg128(q[u], codes + kiln_i4_lane_off(nb, kb + u, KT, lane));
        #pragma unroll
        for (int u = 0; u < GV_UNROLL; u++) {
            int kt = kb + u;
            if (kt >= kt1) break;
            int j = kt / TPG;
            if (j != jsub) {
                jsub = j;
                #pragma unroll
                for (int nt = 0; nt < 4; nt++) {
                    int z = 0;
#if WZERO
                    z = wzeros(wpack)[WIDX(nb * KILN_I4_NB + kiln_i4_word_n(nt, lane), j)];
#endif
                    sb[nt] = i4_sub(z);
                }
            }
            u32 wv[4][4];
            #pragma unroll
            for (int nt = 0; nt < 4; nt++) i4_dequant(q[u][nt], sb[nt], wv[nt]);
            #pragma unroll
            for (int ks = 0; ks < 2; ks++) {
                // A registers: rows g / g + 8 at the k of B register 0 / 1 (pair_k of half 0)
                int k0 = kt * BK + kiln_i4_pair_k(kiln_i4_pair_of(ks, 0), lane, 0);
                int k1 = kt * BK + kiln_i4_pair_k(kiln_i4_pair_of(ks, 1), lane, 0);
                u32 af[4];
                af[0] = *(const u32 *)(a_lo + k0);
                af[2] = *(const u32 *)(a_lo + k1);
                af[1] = hi_rows ? *(const u32 *)(a_hi + k0) : 0u;
                af[3] = hi_rows ? *(const u32 *)(a_hi + k1) : 0u;
                #pragma unroll
                for (int nt = 0; nt < 4; nt++) {
                    u32 bf[2] = {wv[nt][kiln_i4_pair_of(ks, 0)], wv[nt][kiln_i4_pair_of(ks, 1)]};
                    mma(acc[nt], af, bf);
                }
            }
            if ((kt + 1) % TPG == 0 || kt + 1 == kt1) { // a group (or this warp's run) ends
                #pragma unroll
                for (int nt = 0; nt < 4; nt++)
                    #pragma unroll
                    for (int c = 0; c < 4; c++) {
                        i64 m = acc_row(m0, 0, g, c), n = acc_col(nb * KILN_I4_NB, nt, tg, c);
                        outer[nt][c] = fold_float(acc[nt][c], outer[nt][c], m, n, j, wpack, s);
                        acc[nt][c] = 0.0f;
                    }
            }
        }
    }
    #pragma unroll
    for (int nt = 0; nt < 4; nt++)
        #pragma unroll
        for (int c = 0; c < 4; c++)
            red[warp][acc_row(0, 0, g, c)][acc_col(0, nt, tg, c)] = outer[nt][c];
    __syncthreads();
    for (int i = threadIdx.x; i < GV_ROWS * KILN_I4_NB; i += 256) {
        int r = i / KILN_I4_NB, c = i % KILN_I4_NB;
        i64 m = m0 + r, n = nb * KILN_I4_NB + c;
        float v = red[0][r][c];
        for (int w = 1; w < GV_WARPS; w++) v = fadd_rn(v, red[w][r][c]);
        if (m < M && n < N_) store_y(y, m * N_ + n, epilogue(finish(v, m, s), n, bias));
    }
}
