// codegen/ptx/gemv_int4.cu — the GEMV kernel of the Marlin-style int4 weight-only layout
// (W4M: int4 codes, f16/bf16 activations), which gen.c pastes after qgemm_template.cu
// (whose helpers it uses) in place of the template's row-major GEMV. The codes' places
// are ir/layout_gpu_int4.h's; docs/gpu.md "Kernel families" describes the kernel.
// (Embedded like the template; test_ptx checks the string equals this file.)

// grid (NP/32, ceil(M/4)), 256 threads: block x computes n block x (32 columns) for the 4
// rows 4*blockIdx.y..; its 8 warps take contiguous runs of k slices, a lane one 128-bit
// load per slice (GV_UNROLL in flight), the codes dequantized in registers. Lanes 4g..4g+3
// hold columns 8nt + g (shuffles add them up); a warp folds a group's partial at the
// group's end or its run's end (a group split between two warps is folded in two parts),
// and the block adds its 8 warps in order.
#define GV_WARPS 8
#define GV_UNROLL 4
extern "C" __global__ void __launch_bounds__(256) KNAME(gemv)(const float *x, i64 M, const u8 *wpack,
    const float *bias, void *y, u8 *scratch)
{
    __shared__ float red[GV_WARPS][MV][KILN_I4_NB];
    Scratch s = scratch_of(scratch, M);
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    i64 nb = blockIdx.x, m0 = (i64)blockIdx.y * MV;
    const int KT = KP / BK;
    int kt0 = KT * warp / GV_WARPS, kt1 = KT * (warp + 1) / GV_WARPS;
    const u8 *codes = wpack + CODES_OFF;
    const u16 *arow = (const u16 *)s.a + m0 * KP; // rows up to m0 + 3 < MP exist (zeros)
    float part[MV][4], outer[MV][4];
    #pragma unroll
    for (int r = 0; r < MV; r++)
        #pragma unroll
        for (int nt = 0; nt < 4; nt++) { part[r][nt] = 0.0f; outer[r][nt] = 0.0f; }
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
                    z = wzeros(wpack)[(nb * KILN_I4_NB + kiln_i4_word_n(nt, lane)) * NG + j];
#endif
                    sb[nt] = i4_sub(z);
                }
            }
            u32 wv[4][4];
            #pragma unroll
            for (int nt = 0; nt < 4; nt++) i4_dequant(q[u][nt], sb[nt], wv[nt]);
            #pragma unroll
            for (int r = 0; r < MV; r++) {
                if (m0 + r >= M) break; // the same for the whole block: decode is often M = 1
                #pragma unroll
                for (int p = 0; p < 4; p++) {
                    u32 a2 = *(const u32 *)(arow + r * KP + kt * BK + kiln_i4_pair_k(p, lane, 0));
                    float a0 = pair_lo(a2), a1 = pair_hi(a2);
                    #pragma unroll
                    for (int nt = 0; nt < 4; nt++) { // two FFMA, not FMUL + FFMA + FADD
                        part[r][nt] += a0 * pair_lo(wv[nt][p]);
                        part[r][nt] += a1 * pair_hi(wv[nt][p]);
                    }
                }
            }
            if ((kt + 1) % TPG == 0 || kt + 1 == kt1) { // a group (or this warp's run) ends
                #pragma unroll
                for (int r = 0; r < MV; r++)
                    #pragma unroll
                    for (int nt = 0; nt < 4; nt++) {
                        float v = part[r][nt];
                        v += __shfl_xor_sync(0xffffffffu, v, 1);
                        v += __shfl_xor_sync(0xffffffffu, v, 2);
                        i64 n = nb * KILN_I4_NB + kiln_i4_word_n(nt, lane);
                        outer[r][nt] = fold_float(v, outer[r][nt], m0 + r, n, j, wpack, s);
                        part[r][nt] = 0.0f;
                    }
            }
        }
    }
    if ((lane & 3) == 0)
        #pragma unroll
        for (int r = 0; r < MV; r++)
            #pragma unroll
            for (int nt = 0; nt < 4; nt++) red[warp][r][kiln_i4_word_n(nt, lane)] = outer[r][nt];
    __syncthreads();
    if (threadIdx.x < MV * KILN_I4_NB) {
        int r = threadIdx.x / KILN_I4_NB, c = threadIdx.x % KILN_I4_NB;
        i64 m = m0 + r, n = nb * KILN_I4_NB + c;
        float v = red[0][r][c];
        for (int w = 1; w < GV_WARPS; w++) v = fadd_rn(v, red[w][r][c]);
        if (m < M && n < N_) store_y(y, m * N_ + n, epilogue(finish(v, m, s), n, bias));
    }
}
