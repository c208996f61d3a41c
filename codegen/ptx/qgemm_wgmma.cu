// codegen/ptx/qgemm_wgmma.cu — the sm_90a GEMM kernel on warpgroup MMA (wgmma.mma_async),
// for FP8 x FP8, int8 x int8/int4 and f16/bf16 weight-only with 8-bit weights. gen.c
// appends it (after qgemm_template.cu and wgmma_layout.h) when the module is for sm_90a
// and the family has a wgmma path (WGMMA 1); qgemm_template.cu then leaves out its
// mma.sync gemm, and this file defines `gemm` with the same ABI, grid and numerics.
// docs/gpu.md "The sm_90a wgmma kernel" describes it.

#if WGMMA
// A k slice of BK = 32 elements: every operand row of it is WG_RB bytes in shared memory
// (8-bit: one m64n64k32 wgmma; 16-bit: two m64n64k16).
#define WG_RB (BK * AESZ)
#define WG_STEPS (WG_RB / WG_STEP_BYTES)
#define WG_TILE (64 * WG_RB)
#define WG_STAGES 4
#define WG_ROWB_W (BK * WBITS / 8) // weight bytes of a row per slice as stored
// Weights that are not the wgmma operand as stored (int4 -> s8/u8; 8-bit codes -> f16/
// bf16) land raw in a staging tile and are converted into the operand tile.
#define WG_CONVERT (WBITS == 4 || FAM == FAM_F16 || FAM == FAM_BF16)
// FP8 wgmma keeps fewer accumulator bits than f32 (about 14, DeepSeek-V3 report 3.3.2):
// every WG_PROMOTE slices (128 k) the partial is added into f32 registers on CUDA cores.
#define WG_PROMOTE (FAM == FAM_FP8 ? 4 : 0)

#if FAM == FAM_S8
#define WG_ACC_T int
#define WG_C "+r"
#define WG_TAIL ""
#if AZERO_FMT && (WFMT == W_U8 || WFMT == W_U4)
#define WG_OP "wgmma.mma_async.sync.aligned.m64n64k32.s32.u8.u8"
#elif AZERO_FMT
#define WG_OP "wgmma.mma_async.sync.aligned.m64n64k32.s32.u8.s8"
#elif WFMT == W_U8 || WFMT == W_U4
#define WG_OP "wgmma.mma_async.sync.aligned.m64n64k32.s32.s8.u8"
#else
#define WG_OP "wgmma.mma_async.sync.aligned.m64n64k32.s32.s8.s8"
#endif
#else
#define WG_ACC_T float
#define WG_C "+f"
#if FAM == FAM_FP8
#define WG_TAIL ", 1, 1" // scale-a, scale-b
#if AFMT == W_E4M3 && WFMT == W_E4M3
#define WG_OP "wgmma.mma_async.sync.aligned.m64n64k32.f32.e4m3.e4m3"
#elif AFMT == W_E4M3
#define WG_OP "wgmma.mma_async.sync.aligned.m64n64k32.f32.e4m3.e5m2"
#elif WFMT == W_E4M3
#define WG_OP "wgmma.mma_async.sync.aligned.m64n64k32.f32.e5m2.e4m3"
#else
#define WG_OP "wgmma.mma_async.sync.aligned.m64n64k32.f32.e5m2.e5m2"
#endif
#else
#define WG_TAIL ", 1, 1, 0, 0" // scale-a, scale-b, both K-major (no transpose)
#if FAM == FAM_BF16
#define WG_OP "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16"
#else
#define WG_OP "wgmma.mma_async.sync.aligned.m64n64k16.f32.f16.f16"
#endif
#endif
#endif

static __device__ __forceinline__ unsigned wg_smem(const void *p)
{
    unsigned a;
    asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(a) : "l"(p));
    return a;
}
static __device__ __forceinline__ void wg_cp16(void *dst, const void *src)
{
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" :: "r"(wg_smem(dst)), "l"(src) : "memory");
}

// D (+)= A·B^T of the 64x64 tile: acc 0 overwrites D (a group's first step), 1 adds.
static __device__ __forceinline__ void wg_mma(WG_ACC_T *d, wg_u64 da, wg_u64 db, int acc)
{
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n" WG_OP " "
        "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
        "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, "
        "%32, %33, p" WG_TAIL ";\n}\n"
        : WG_C(d[0]), WG_C(d[1]), WG_C(d[2]), WG_C(d[3]), WG_C(d[4]), WG_C(d[5]), WG_C(d[6]), WG_C(d[7]),
          WG_C(d[8]), WG_C(d[9]), WG_C(d[10]), WG_C(d[11]), WG_C(d[12]), WG_C(d[13]), WG_C(d[14]), WG_C(d[15]),
          WG_C(d[16]), WG_C(d[17]), WG_C(d[18]), WG_C(d[19]), WG_C(d[20]), WG_C(d[21]), WG_C(d[22]), WG_C(d[23]),
          WG_C(d[24]), WG_C(d[25]), WG_C(d[26]), WG_C(d[27]), WG_C(d[28]), WG_C(d[29]), WG_C(d[30]), WG_C(d[31])
        : "l"(da), "l"(db), "r"(acc));
}
// Keeps the compiler from moving accumulator reads or writes across the asynchronous MMA.
static __device__ __forceinline__ void wg_fence_acc(WG_ACC_T *d)
{
    #pragma unroll
    for (int i = 0; i < 32; i++) asm volatile("" : WG_C(d[i]) :: "memory");
}

#if WG_CONVERT
#if FAM == FAM_S8
// 8 int4 codes (4 bytes, low nibble first) -> 8 bytes: s8 (i4, sign-extended) or u8 (u4).
static __device__ __forceinline__ u32 wg_spread4(u32 v)
{
    u32 x = (v & 0xFu) | ((v & 0xF0u) << 4) | ((v & 0xF00u) << 8) | ((v & 0xF000u) << 12);
#if WFMT == W_I4
    x |= (x & 0x08080808u) * 0x1Eu; // bit 3 copied into bits 4..7 of each byte
#endif
    return x;
}
#else
// Two 8-bit weight codes (low 16 bits, k first) -> f16x2 / bf16x2 of (q - z), exact.
static __device__ __forceinline__ u32 wg_pair(u32 b2, int z)
{
#if WFMT == W_E4M3 || WFMT == W_E5M2
    u32 h = fp8x2_to_f16x2(b2, WFMT == W_E4M3);
#if FAM == FAM_BF16
    return f16x2_to_bf16x2(h);
#else
    return h;
#endif
#else
#if WFMT == W_I8
    float a = (float)((int)(signed char)(b2 & 0xFF) - z), b = (float)((int)(signed char)(b2 >> 8) - z);
#else
    float a = (float)((int)(b2 & 0xFF) - z), b = (float)((int)((b2 >> 8) & 0xFF) - z);
#endif
    u32 r;
#if FAM == FAM_BF16
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(b), "f"(a));
#else
    asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(b), "f"(a));
#endif
    return r;
#endif
}
#endif

// The raw weight slice (64 rows x WG_ROWB_W bytes, row-major) -> the B operand tile:
// every thread writes 16-byte runs of the operand rows (int4: 16 s8/u8 from 8 bytes;
// 8-bit codes: 8 f16/bf16 from 8 bytes), group j's zero point subtracted for f16/bf16.
static __device__ __forceinline__ void wg_convert(u8 *tile, const u8 *raw, i64 n0, int j, const u8 *wpack)
{
    for (int c = threadIdx.x; c < 64 * (WG_RB / 16); c += 128) {
        int row = c / (WG_RB / 16), q = c % (WG_RB / 16);
        const u32 *src = (const u32 *)(raw + row * WG_ROWB_W + q * 8);
        u32 v0 = src[0], v1 = src[1], o[4];
#if FAM == FAM_S8
        o[0] = wg_spread4(v0 & 0xFFFF); o[1] = wg_spread4(v0 >> 16);
        o[2] = wg_spread4(v1 & 0xFFFF); o[3] = wg_spread4(v1 >> 16);
#else
        int z = 0;
#if WZERO
        z = wzeros(wpack)[(n0 + row) * NG + j];
#endif
        o[0] = wg_pair(v0 & 0xFFFF, z); o[1] = wg_pair(v0 >> 16, z);
        o[2] = wg_pair(v1 & 0xFFFF, z); o[3] = wg_pair(v1 >> 16, z);
#endif
        asm volatile("st.shared.v4.b32 [%0], {%1, %2, %3, %4};" :: "r"(wg_smem(tile + wg_tile_off(row, q * 16, WG_RB))),
                     "r"(o[0]), "r"(o[1]), "r"(o[2]), "r"(o[3]) : "memory");
    }
}
#endif

// grid (NP/64, MP/64), 128 threads = one warpgroup owning a 64x64 output tile. Per k
// slice of 32: A (and 8-bit fp8/s8 weights) go global -> shared with cp.async straight
// into the core-matrix layout, WG_STAGES slices in flight; converted weights go through
// a staging tile. Then fence.proxy.async (the generic-proxy writes become visible to
// wgmma), wgmma.fence, the slice's wgmma, commit_group, wait_group 0; a group's end
// folds the accumulators exactly as the mma.sync kernel does.
extern "C" __global__ void __launch_bounds__(128, 1) KNAME(gemm)(const float *x, i64 M, const u8 *wpack,
    const float *bias, void *y, u8 *scratch)
{
    __shared__ __align__(128) u8 sA[WG_STAGES][WG_TILE];
#if WG_CONVERT
    __shared__ __align__(128) u8 sRaw[WG_STAGES][64 * WG_ROWB_W];
    __shared__ __align__(128) u8 sB[1][WG_TILE];
#define WG_BTILE(st) sB[0]
#else
    __shared__ __align__(128) u8 sB[WG_STAGES][WG_TILE];
#define WG_BTILE(st) sB[st]
#endif
    Scratch s = scratch_of(scratch, M);
    int tid = threadIdx.x;
    i64 m0 = (i64)blockIdx.y * BM, n0 = (i64)blockIdx.x * BN;
    const u8 *codes = wpack + CODES_OFF;
    WG_ACC_T acc[32];
    float outer[32];
#if WG_PROMOTE
    float part[32]; // the group's partial, promoted out of acc
#define WG_PART(i) part[i]
#else
#define WG_PART(i) acc[i]
#endif
    #pragma unroll
    for (int i = 0; i < 32; i++) {
        acc[i] = 0; outer[i] = 0.0f;
#if WG_PROMOTE
        part[i] = 0.0f;
#endif
    }

    const int KT = KP / BK;
    // slice kt into stage st: one commit group per slice (empty past the end)
#define WG_LOAD(kt, st) do { \
        if ((kt) < KT) { \
            for (int c = tid; c < 64 * (WG_RB / 16); c += 128) { \
                int r = c / (WG_RB / 16), q = c % (WG_RB / 16); \
                wg_cp16(&sA[st][wg_tile_off(r, q * 16, WG_RB)], \
                        s.a + (m0 + r) * (i64)(KP * AESZ) + (i64)(kt) * WG_RB + q * 16); \
            } \
            for (int c = tid; c < 64 * (WG_ROWB_W / 16); c += 128) { \
                int r = c / (WG_ROWB_W / 16), q = c % (WG_ROWB_W / 16); \
                const u8 *src = codes + (n0 + r) * (i64)WROWB + (i64)(kt) * WG_ROWB_W + q * 16; \
                if (WG_CONVERT) wg_cp16(&sRawOrB(st)[r * WG_ROWB_W + q * 16], src); \
                else wg_cp16(&sRawOrB(st)[wg_tile_off(r, q * 16, WG_RB)], src); \
            } \
        } \
        asm volatile("cp.async.commit_group;" ::: "memory"); \
    } while (0)
#if WG_CONVERT
#define sRawOrB(st) sRaw[st]
#else
#define sRawOrB(st) sB[st]
#endif

    #pragma unroll
    for (int p = 0; p < WG_STAGES - 1; p++) WG_LOAD(p, p);
    for (int kt = 0; kt < KT; kt++) {
        int st = kt % WG_STAGES, j = kt / TPG;
        WG_LOAD(kt + WG_STAGES - 1, (kt + WG_STAGES - 1) % WG_STAGES);
        asm volatile("cp.async.wait_group %0;" :: "n"(WG_STAGES - 1) : "memory"); // slice kt is here
#if WG_CONVERT
        __syncthreads(); // every thread's raw bytes of slice kt
        wg_convert(sB[0], sRaw[st], n0, j, wpack);
#endif
        asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
        __syncthreads();
        // a group (or a promotion interval) starts: D = A·B, no accumulate
#if WG_PROMOTE
        bool first = kt % TPG == 0 || kt % WG_PROMOTE == 0;
#else
        bool first = kt % TPG == 0;
#endif
        bool group_end = (kt + 1) % TPG == 0 || kt + 1 == KT; // the last group may be ragged
        unsigned a0 = wg_smem(sA[st]), b0 = wg_smem(WG_BTILE(st));
        wg_fence_acc(acc);
        asm volatile("wgmma.fence.sync.aligned;" ::: "memory");
        #pragma unroll
        for (int k = 0; k < WG_STEPS; k++)
            wg_mma(acc, wg_step_desc(a0, k, WG_RB), wg_step_desc(b0, k, WG_RB), first && k == 0 ? 0 : 1);
        asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory");
        asm volatile("wgmma.wait_group.sync.aligned 0;" ::: "memory");
        wg_fence_acc(acc);
#if WG_PROMOTE
        if (group_end || (kt + 1) % WG_PROMOTE == 0)
            #pragma unroll
            for (int i = 0; i < 32; i++) part[i] = fadd_rn(part[i], acc[i]);
#endif
        if (group_end) {
            #pragma unroll
            for (int i = 0; i < 32; i++) {
                i64 m = m0 + wg_acc_row(tid, i), n = n0 + wg_acc_col(tid, i);
                if (m < M && n < N_) {
#if FAM == FAM_S8
                    u32 I = (u32)acc[i];
#if WZERO || AZERO_FMT
                    // Σ(qa-za)(qw-zw) = Σqa·qw - zw·Σqa - za·Σqw + len·za·zw, mod 2^32 exact
                    u32 zw = 0, za = (u32)s.za[m];
#if WZERO
                    zw = (u32)wzeros(wpack)[n * NG + j];
#endif
                    I = I - zw * (u32)s.asum[m * NG + j] - za * (u32)wsums(wpack)[n * NG + j] +
                        (u32)(GEND(j) - j * GLEN) * za * zw;
#endif
                    outer[i] = fold_int((int)I, outer[i], m, n, j, wpack, s);
#else
                    outer[i] = fold_float(WG_PART(i), outer[i], m, n, j, wpack, s);
#endif
                }
#if WG_PROMOTE
                part[i] = 0.0f;
#endif
            }
        }
        __syncthreads(); // stage st (and the converted tile) are free for the next loads
    }
    asm volatile("cp.async.wait_group 0;" ::: "memory");
    #pragma unroll
    for (int i = 0; i < 32; i++) {
        i64 m = m0 + wg_acc_row(tid, i), n = n0 + wg_acc_col(tid, i);
        if (m < M && n < N_)
            store_y(y, m * N_ + n, epilogue(finish(outer[i], m, s), n, bias));
    }
}
#endif
