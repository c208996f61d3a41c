// codegen/ptx/qgemm_template.cu — the one CUDA C body of every kiln GPU qgemm module.
// codegen/ptx/gen.c puts a block of #defines (family, shapes, formats, scales, arch) in
// front of it; an arch- or format-specific path is an #if here (sm_90a's wgmma gemm
// alone is its own file, qgemm_wgmma.cu, appended after this one).
// No CUDA header is needed: half/bf16/fp8 conversions and mma are inline PTX.
// docs/gpu.md describes the families, the blob and scratch layouts and the ABI.
// (The build embeds it as a C string via embed.cmake; test_ptx checks that string equals this file.)

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef long long i64;

#define FAM_S8 0
#define FAM_FP8 1
#define FAM_F16 2
#define FAM_BF16 3
#define FAM_F32 4
#define W_I8 1
#define W_U8 2
#define W_I4 3
#define W_U4 4
#define W_E4M3 5
#define W_E5M2 6
#define W_F32 7 // an unquantized layer: f32 weights (FAM_F32 only), scale 1
#define WBITS ((WFMT == W_I4 || WFMT == W_U4) ? 4 : WFMT == W_F32 ? 32 : 8)
#define WROWB (KP * WBITS / 8)
#define BM 64
#define BN 64
#define BK 32
#define TPG (GLEN / BK)
// End of group j in the padded K: the last group is ragged when GLEN does not divide KP
#define GEND(j) ((j) + 1 < NG ? ((j) + 1) * GLEN : KP)
#define RND256(v) ((((v) + 255) / 256) * 256)

// ---------------------------------------------------------------- scalar helpers
// Explicit .rn mul/add are never contracted into FMA, so the scale combination is
// bit-for-bit the interpreter's order.
static __device__ __forceinline__ float fmul_rn(float a, float b)
{ float d; asm("mul.rn.f32 %0, %1, %2;" : "=f"(d) : "f"(a), "f"(b)); return d; }
static __device__ __forceinline__ float fadd_rn(float a, float b)
{ float d; asm("add.rn.f32 %0, %1, %2;" : "=f"(d) : "f"(a), "f"(b)); return d; }
static __device__ __forceinline__ float fdiv_rn(float a, float b)
{ float d; asm("div.rn.f32 %0, %1, %2;" : "=f"(d) : "f"(a), "f"(b)); return d; }
static __device__ __forceinline__ float rint_even(float a)
{ float d; asm("cvt.rni.f32.f32 %0, %1;" : "=f"(d) : "f"(a)); return d; }
static __device__ __forceinline__ u16 f32_to_f16(float a)
{ u16 h; asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(a)); return h; }
static __device__ __forceinline__ float f16_to_f32(u16 h)
{ float a; asm("cvt.f32.f16 %0, %1;" : "=f"(a) : "h"(h)); return a; }
static __device__ __forceinline__ u16 f32_to_bf16(float a)
{ u16 h; asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(h) : "f"(a)); return h; }
static __device__ __forceinline__ float bf16_to_f32(u16 h) { return __int_as_float((u32)h << 16); }
static __device__ __forceinline__ bool finite_f(float v) { return fabsf(v) <= 3.402823466e38f; }

// fp8 -> f16 bits, exact. sm_89+ has the conversion; sm_80 moves the bits into place.
static __device__ __forceinline__ u32 fp8x2_to_f16x2(u32 b2, int e4m3)
{
#if KILN_SM >= 89
    u32 r;
    u16 lo = (u16)(b2 & 0xFFFF);
    if (e4m3)
        asm("cvt.rn.f16x2.e4m3x2 %0, %1;" : "=r"(r) : "h"(lo));
    else
        asm("cvt.rn.f16x2.e5m2x2 %0, %1;" : "=r"(r) : "h"(lo));
    return r;
#else
    u32 b0 = b2 & 0xFF, b1 = (b2 >> 8) & 0xFF;
    if (!e4m3)
        return (b0 << 8) | (b1 << 24); // e5m2 is the top byte of an f16
    // e4m3 s.eeee.mmm -> f16 s.0eeee.mmm0000000 is value/256 (normals and subnormals alike)
    u32 h = ((b0 & 0x80) << 8) | ((b0 & 0x7F) << 7) | ((b1 & 0x80) << 24) | ((b1 & 0x7F) << 23);
    u32 r;
    asm("mul.rn.f16x2 %0, %1, %2;" : "=r"(r) : "r"(h), "r"(0x5C005C00u)); // x 256, exact
    return r;
#endif
}
static __device__ __forceinline__ float fp8_to_f32(u32 b, int e4m3)
{ return f16_to_f32((u16)(fp8x2_to_f16x2(b, e4m3) & 0xFFFF)); }

static __device__ __forceinline__ u32 f16x2_to_bf16x2(u32 h)
{
    u32 r;
    float a = f16_to_f32((u16)(h & 0xFFFF)), b = f16_to_f32((u16)(h >> 16));
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(b), "f"(a));
    return r;
}

// Weight code k of a row (integer formats: the stored code; fp8: the byte).
static __device__ __forceinline__ int wcode(const u8 *row, int k)
{
#if WBITS == 4
    int v = (row[k >> 1] >> ((k & 1) * 4)) & 0xF;
#if WFMT == W_I4
    v = (v ^ 8) - 8;
#endif
    return v;
#elif WFMT == W_I8
    return (int)(signed char)row[k];
#else
    return row[k];
#endif
}

// ---------------------------------------------------------------- scratch layout (ABI)
struct Scratch {
    u8 *a;     // [MP][KP] prepared activations (AESZ bytes each)
    float *sa; // [MP] activation scale
    int *za;   // [MP] activation zero point
    int *asum; // [MP][NG] sum of activation codes per group (padded)
    float *range; // [MP][2] finite min/max of each row (with 0)
};
static __device__ __forceinline__ Scratch scratch_of(u8 *s, i64 M)
{
    i64 mp = ((M + BM - 1) / BM) * BM;
    Scratch r;
    i64 o = 0;
    r.a = s; o += RND256(mp * KP * AESZ);
    r.sa = (float *)(s + o); o += RND256(mp * 4);
    r.za = (int *)(s + o); o += RND256(mp * 4);
    r.asum = (int *)(s + o); o += RND256(mp * NG * 4);
    r.range = (float *)(s + o);
    return r;
}

static __device__ __forceinline__ float epilogue(float v, i64 n, const float *bias)
{
#if HAS_BIAS
    v = fadd_rn(v, bias[n]);
#endif
#if EPI == 1
    v = v / (1.0f + expf(-v));
#elif EPI == 2
    v = 0.5f * v * (1.0f + erff(v * 0.70710678118654752f));
#endif
    return v;
}
static __device__ __forceinline__ void store_y(void *y, i64 i, float v)
{
#if OUT == 0
    ((float *)y)[i] = v;
#elif OUT == 1
    ((u16 *)y)[i] = f32_to_f16(v);
#else
    ((u16 *)y)[i] = f32_to_bf16(v);
#endif
}

static __device__ __forceinline__ const float *wscales(const u8 *w) { return (const float *)(w + SCALES_OFF); }
static __device__ __forceinline__ const int *wzeros(const u8 *w) { return (const int *)(w + ZEROS_OFF); }
static __device__ __forceinline__ const int *wsums(const u8 *w) { return (const int *)(w + WSUM_OFF); }
// Index of (column n, group j) in those sections: [NP][NG], or group-major for W4M
#if W4M
#define WIDX(n, j) kiln_i4_group_index((n), (j), NP_)
#else
#define WIDX(n, j) ((n) * NG + (j))
#endif

// Block-wide min/max (blockDim.x == 256).
static __device__ void block_minmax(float &lo, float &hi)
{
    __shared__ float slo[8], shi[8];
    for (int o = 16; o > 0; o >>= 1) {
        lo = fminf(lo, __shfl_xor_sync(0xffffffffu, lo, o));
        hi = fmaxf(hi, __shfl_xor_sync(0xffffffffu, hi, o));
    }
    int w = threadIdx.x >> 5;
    if ((threadIdx.x & 31) == 0) { slo[w] = lo; shi[w] = hi; }
    __syncthreads();
    lo = slo[0]; hi = shi[0];
    for (int i = 1; i < 8; i++) { lo = fminf(lo, slo[i]); hi = fmaxf(hi, shi[i]); }
    __syncthreads();
}

#if ACT != 0 && ADYN
// ---------------------------------------------------------------- activation range (dynamic)
// grid M, 256 threads: finite min/max of row m, 0 included (kiln_slice_range, minmax).
extern "C" __global__ void __launch_bounds__(256) KNAME(range)(const float *x, i64 M, const u8 *wpack,
    const float *bias, void *y, u8 *scratch)
{
    Scratch s = scratch_of(scratch, M);
    i64 m = blockIdx.x;
    float lo = 0.0f, hi = 0.0f;
    for (int k = threadIdx.x; k < K_; k += 256) {
        float v = x[m * K_ + k];
        if (finite_f(v)) { lo = fminf(lo, v); hi = fmaxf(hi, v); }
    }
    block_minmax(lo, hi);
    if (threadIdx.x == 0) { s.range[2 * m] = lo; s.range[2 * m + 1] = hi; }
}
#endif

// ---------------------------------------------------------------- activation prologue
// grid MP, 256 threads: row m of x -> row m of the A buffer in the mma operand type
// (and its scale, zero point and per-group code sums for integer activations).
extern "C" __global__ void __launch_bounds__(256) KNAME(prep)(const float *x, i64 M, const u8 *wpack,
    const float *bias, void *y, u8 *scratch)
{
    Scratch s = scratch_of(scratch, M);
    i64 m = blockIdx.x;
    bool live = m < M;
#if ACT == 0
    for (int k = threadIdx.x; k < KP; k += 256) {
        float v = (live && k < K_) ? x[m * K_ + k] : 0.0f;
#if AESZ == 4 && AROUND == 1
        ((float *)s.a)[m * KP + k] = f16_to_f32(f32_to_f16(v)); // round_to(f16), kept in f32
#elif AESZ == 4 && AROUND == 2
        ((float *)s.a)[m * KP + k] = bf16_to_f32(f32_to_bf16(v));
#elif AESZ == 4
        ((float *)s.a)[m * KP + k] = v;
#elif FAM == FAM_BF16
        ((u16 *)s.a)[m * KP + k] = f32_to_bf16(v);
#else
        ((u16 *)s.a)[m * KP + k] = f32_to_f16(v);
#endif
    }
#else
    float sc = ASCALE;
    int zp = AZP;
#if ADYN
    float lo = 0.0f, hi = 0.0f;
#if ATOKEN
    if (live) { lo = s.range[2 * m]; hi = s.range[2 * m + 1]; }
#else
    for (i64 r = threadIdx.x; r < M; r += 256) { lo = fminf(lo, s.range[2 * r]); hi = fmaxf(hi, s.range[2 * r + 1]); }
    block_minmax(lo, hi);
#endif
    // kiln_qparams_from_range
    sc = 1.0f; zp = 0;
#if !AZERO_FMT
    { float amax = fmaxf(-lo, hi); if (amax > 0.0f) sc = fdiv_rn(amax, AQMAX); }
#else
    if (fadd_rn(hi, -lo) > 0.0f) {
        sc = fdiv_rn(fadd_rn(hi, -lo), AQMAX);
        float z = rint_even(fdiv_rn(-lo, sc));
        zp = z < 0.0f ? 0 : z > AQMAX ? (int)AQMAX : (int)z;
    }
#endif
    if (!(sc > 0.0f)) sc = 1.0f;
    if (!finite_f(sc)) sc = 3.402823466e38f;
#endif
    u8 *row = s.a + m * KP;
    for (int k = threadIdx.x; k < KP; k += 256) {
        float v = (live && k < K_) ? x[m * K_ + k] : 0.0f;
        u32 code;
#if ACT == 1
        if (k >= K_ || !live) {
            code = (u32)zp;
        } else {
            float r = rint_even(fdiv_rn(v, sc));
            float q = (r != r) ? (float)zp : fminf(fmaxf(r + (float)zp, AQMIN), AQMAX);
            code = (u32)(int)q;
        }
#else
        u16 b2;
        float qv = fdiv_rn(v, sc);
#if AFMT == W_E4M3
        asm("cvt.rn.satfinite.e4m3x2.f32 %0, %1, %2;" : "=h"(b2) : "f"(0.0f), "f"(qv));
#else
        asm("cvt.rn.satfinite.e5m2x2.f32 %0, %1, %2;" : "=h"(b2) : "f"(0.0f), "f"(qv));
#endif
        code = b2 & 0xFF;
#endif
        row[k] = (u8)code;
    }
    if (threadIdx.x == 0) { s.sa[m] = sc; s.za[m] = zp; }
#if ACT == 1
    __syncthreads(); // the row's codes are visible to the whole block now
    for (int j = threadIdx.x; j < NG; j += 256) {
        int sum = 0;
        for (int k = j * GLEN; k < GEND(j); k++)
            sum += AZERO_FMT ? (int)row[k] : (int)(signed char)row[k];
        s.asum[m * NG + j] = sum;
    }
#endif
#endif
}

// ---------------------------------------------------------------- the group fold
// acc: the group's sum (int for FAM_S8, f32 otherwise); outer: f32 across groups.
// Returns the final value when the whole K was one group (non-group mode).
static __device__ __forceinline__ float fold_int(int I, float outer, i64 m, i64 n, int j,
                                                 const u8 *w, const Scratch &s)
{
#if GROUP_MODE
    return fadd_rn(outer, fmul_rn(wscales(w)[n * NG + j], (float)I));
#else
    return fmul_rn(fmul_rn((float)I, s.sa[m]), wscales(w)[n]);
#endif
}
static __device__ __forceinline__ float fold_float(float part, float outer, i64 m, i64 n, int j,
                                                   const u8 *w, const Scratch &s)
{
#if GROUP_MODE
    return fadd_rn(outer, fmul_rn(wscales(w)[WIDX(n, j)], part));
#elif FAM == FAM_FP8
    return fmul_rn(fmul_rn(s.sa[m], wscales(w)[n]), part);
#else
    return fmul_rn(wscales(w)[n], part);
#endif
}
static __device__ __forceinline__ float finish(float outer, i64 m, const Scratch &s)
{
#if GROUP_MODE && (FAM == FAM_S8 || FAM == FAM_FP8)
    return fmul_rn(s.sa[m], outer);
#else
    return outer;
#endif
}

#if W4M
// ---------------------------------------------------------------- Marlin-style int4 (KILNGP2)
// ir/layout_gpu_int4.h (gen.c pastes it in front) places the codes: a lane's 16 bytes of
// a chunk are its B fragments of 4 n tiles x 2 k16 steps of one k slice.
// (volatile: issued where written, ahead of the mma it prefetches for)
static __device__ __forceinline__ void ldg128(u32 q[4], const u8 *p)
{
    asm volatile("ld.global.nc.v4.u32 {%0,%1,%2,%3}, [%4];" : "=r"(q[0]), "=r"(q[1]), "=r"(q[2]), "=r"(q[3]) : "l"(p));
}
// The subtrahends of zero point z (i4: 8, see i4_dequant), as 16-bit pairs: s0 for the
// pairs whose codes sit in the low nibble, s1 for f16 pairs 1 and 3 (taken in place).
struct I4Sub { u32 s0, s1; };
static __device__ __forceinline__ I4Sub i4_sub(int z)
{
#if WFMT == W_I4
    z = 8; // (c + 8) - 8
#endif
    I4Sub r;
#if FAM == FAM_BF16
    u32 h = (u32)f32_to_bf16(-(128.0f + (float)z));
    r.s0 = r.s1 = h | (h << 16);
#else
    u32 h = (u32)f32_to_f16(1024.0f + (float)z), h1 = (u32)f32_to_f16(-(64.0f + (float)z));
    r.s0 = h | (h << 16);
    r.s1 = h1 | (h1 << 16);
#endif
    return r;
}
// A word of 8 codes -> its 4 pairs (pair p: nibbles p and p + 4) as f16x2 / bf16x2 of
// code - z, exact. lop3 ORs a nibble into the mantissa of the magic number 1024 (f16
// 0x6400) or 128 (bf16 0x4300); f16 takes pairs 1 and 3 where they lie (1024 + 16·code,
// then fma by 1/16 minus 64 + z), so a word needs one shift, not three; bf16 has too few
// mantissa bits for that and shifts each pair down.
static __device__ __forceinline__ void i4_dequant(u32 q, I4Sub sb, u32 out[4])
{
#if WFMT == W_I4
    q ^= 0x88888888u; // two's complement code c -> c + 8 in every nibble
#endif
#if FAM == FAM_BF16
    #pragma unroll
    for (int p = 0; p < 4; p++) {
        u32 v;
        asm("lop3.b32 %0, %1, %2, %3, 0xEA;" : "=r"(v) : "r"(q >> (4 * p)), "r"(0x000F000Fu), "r"(0x43004300u));
        asm("fma.rn.bf16x2 %0, %1, %2, %3;" : "=r"(out[p]) : "r"(v), "r"(0x3F803F80u), "r"(sb.s0));
    }
#else
    #pragma unroll
    for (int half = 0; half < 2; half++) {
        u32 w = q >> (8 * half), lo, hi;
        asm("lop3.b32 %0, %1, %2, %3, 0xEA;" : "=r"(lo) : "r"(w), "r"(0x000F000Fu), "r"(0x64006400u));
        asm("lop3.b32 %0, %1, %2, %3, 0xEA;" : "=r"(hi) : "r"(w), "r"(0x00F000F0u), "r"(0x64006400u));
        asm("sub.f16x2 %0, %1, %2;" : "=r"(out[2 * half]) : "r"(lo), "r"(sb.s0));
        asm("fma.rn.f16x2 %0, %1, %2, %3;" : "=r"(out[2 * half + 1]) : "r"(hi), "r"(0x2C002C00u), "r"(sb.s1));
    }
#endif
}
// The two halves of a 16-bit pair (f16 or bf16, as FAM) in f32.
static __device__ __forceinline__ float pair_lo(u32 v)
{ return FAM == FAM_BF16 ? __int_as_float(v << 16) : f16_to_f32((u16)(v & 0xFFFF)); }
static __device__ __forceinline__ float pair_hi(u32 v)
{ return FAM == FAM_BF16 ? __int_as_float(v & 0xFFFF0000u) : f16_to_f32((u16)(v >> 16)); }
#endif

// ---------------------------------------------------------------- GEMV (small M, CUDA cores)
#define MV 4
#if !W4M // W4M: codegen/ptx/gemv_int4.cu, pasted after this file
// grid (NP/4, ceil(M/4)), 128 threads: warp w computes column n = 4*blockIdx.x + w for the
// 4 rows 4*blockIdx.y..; lanes split each group's k in runs of 4, reduced by shuffles.
extern "C" __global__ void __launch_bounds__(128) KNAME(gemv)(const float *x, i64 M, const u8 *wpack,
    const float *bias, void *y, u8 *scratch)
{
    Scratch s = scratch_of(scratch, M);
    int lane = threadIdx.x & 31;
    i64 n = (i64)blockIdx.x * 4 + (threadIdx.x >> 5);
    i64 m0 = (i64)blockIdx.y * MV;
    if (n >= N_) return;
    const u8 *wrow = wpack + CODES_OFF + n * WROWB;
    float outer[MV];
    for (int r = 0; r < MV; r++) outer[r] = 0.0f;
    for (int j = 0; j < NG; j++) {
        int zw = 0;
#if WZERO
        zw = wzeros(wpack)[n * NG + j];
#endif
#if FAM == FAM_S8
        int part[MV];
#else
        float part[MV];
#endif
        for (int r = 0; r < MV; r++) part[r] = 0;
        for (int k = j * GLEN + lane * 4; k < GEND(j); k += 128) {
#if FAM == FAM_S8
            int wv[4];
            for (int t = 0; t < 4; t++) wv[t] = wcode(wrow, k + t) - zw;
#else
            float wv[4];
#if WFMT == W_F32
            for (int t = 0; t < 4; t++) wv[t] = ((const float *)wrow)[k + t];
#elif WFMT == W_E4M3 || WFMT == W_E5M2
            for (int t = 0; t < 4; t++) wv[t] = fp8_to_f32(wrow[k + t], WFMT == W_E4M3);
#else
            for (int t = 0; t < 4; t++) wv[t] = (float)(wcode(wrow, k + t) - zw);
#endif
#endif
            for (int r = 0; r < MV; r++) {
                i64 m = m0 + r;
                if (m >= M) break;
#if FAM == FAM_S8
                u32 a4 = *(const u32 *)(s.a + m * KP + k);
                int za = s.za[m];
                for (int t = 0; t < 4; t++) {
                    int av = AZERO_FMT ? (int)((a4 >> (8 * t)) & 0xFF) : (int)(signed char)(a4 >> (8 * t));
                    part[r] += (av - za) * wv[t];
                }
#elif FAM == FAM_FP8
                u32 a4 = *(const u32 *)(s.a + m * KP + k);
                for (int t = 0; t < 4; t++) part[r] += fp8_to_f32((a4 >> (8 * t)) & 0xFF, AFMT == W_E4M3) * wv[t];
#elif FAM == FAM_F32
                const float *ap = (const float *)s.a + m * KP + k;
                for (int t = 0; t < 4; t++) part[r] += ap[t] * wv[t];
#else
                const u16 *ap = (const u16 *)s.a + m * KP + k;
                for (int t = 0; t < 4; t++)
                    part[r] += (FAM == FAM_BF16 ? bf16_to_f32(ap[t]) : f16_to_f32(ap[t])) * wv[t];
#endif
            }
        }
        for (int r = 0; r < MV; r++) {
            for (int o = 16; o > 0; o >>= 1) part[r] += __shfl_xor_sync(0xffffffffu, part[r], o);
            i64 m = m0 + r;
            if (m < M) {
#if FAM == FAM_S8
                outer[r] = fold_int(part[r], outer[r], m, n, j, wpack, s);
#else
                outer[r] = fold_float(part[r], outer[r], m, n, j, wpack, s);
#endif
            }
        }
    }
    if (lane == 0)
        for (int r = 0; r < MV; r++) {
            i64 m = m0 + r;
            if (m < M) store_y(y, m * N_ + n, epilogue(finish(outer[r], m, s), n, bias));
        }
}
#endif

#if FAM != FAM_F32 && !WGMMA // sm_90a's wgmma gemm is qgemm_wgmma.cu
// ---------------------------------------------------------------- GEMM (tensor cores)
// grid (NP/BN, MP/BM), 128 threads = 2x2 warps of 32x32; per BK=32 slice of k, tiles of A
// and of the weight codes go global -> shared with cp.async (double buffered), then
// registers, where weights are unpacked/converted to the mma operand type.
#define ROWB_A (BK * AESZ)
#define SA_STRIDE (ROWB_A + 16)
#define ROWB_W (BK * WBITS / 8)
#define SW_STRIDE (ROWB_W + 16)

// The output row and column of accumulator element c of the warp's m tile mt / n tile
// nt (the mma C fragment: rows g and g + 8, columns 2·tg and 2·tg + 1), from the warp's
// first row / column.
static __device__ __forceinline__ i64 acc_row(i64 m_warp, int mt, int g, int c)
{
    return m_warp + mt * 16 + g + (c >= 2 ? 8 : 0);
}
static __device__ __forceinline__ i64 acc_col(i64 n_warp, int nt, int tg, int c)
{
    return n_warp + nt * 8 + tg * 2 + (c & 1);
}

static __device__ __forceinline__ u32 smem_addr(const void *p)
{
    u32 a;
    asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(a) : "l"(p));
    return a;
}
static __device__ __forceinline__ void cp_async16(void *dst, const void *src)
{
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" :: "r"(smem_addr(dst)), "l"(src));
}
// ldmatrix: four 8x8 b16 matrices from shared memory, lanes 8q..8q+7 giving the 16-byte
// rows of matrix q; each lane gets, of matrix q, register q = 4 bytes of row lane/4 at
// byte 4·(lane%4): exactly an mma fragment register (rows g, bytes 4·tg) for 8-bit
// m16n8k32 and 16-bit m16n8k16 alike. (Rows are 16-byte aligned: strides 48 and 80
// bytes, also free of bank conflicts for 8 rows.)
static __device__ __forceinline__ void ldsm_x4(u32 r[4], const u8 *row_addr)
{
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(smem_addr(row_addr)) : "memory");
}

// The A fragments of the warp's two 16-row m tiles of smem tile tA: row0 is the warp's
// first row, koff the byte offset of the k slice, as mma.m16n8k32 (bytes) / m16n8k16
// (16-bit pairs) reads them: a0 rows 0-7 bytes 0-15, a1 rows 8-15, a2 rows 0-7 bytes
// 16-31, a3 rows 8-15 bytes 16-31 — one ldmatrix.x4 per m tile.
static __device__ __forceinline__ void afrags(u32 af[2][4], const u8 *tA, int row0, int koff, int lane)
{
    int r = (lane & 7) + ((lane >> 3) & 1) * 8, c = koff + (lane >> 4) * 16;
    #pragma unroll
    for (int mt = 0; mt < 2; mt++) ldsm_x4(af[mt], tA + (row0 + mt * 16 + r) * SA_STRIDE + c);
}

#if FAM == FAM_S8
#define ACC_T int
// 4 int4 codes (16 bits, low nibble first) -> 4 bytes: s8 (i4, sign-extended) or u8 (u4).
static __device__ __forceinline__ u32 spread4(u32 v)
{
    u32 x = (v & 0xFu) | ((v & 0xF0u) << 4) | ((v & 0xF00u) << 8) | ((v & 0xF000u) << 12);
#if WFMT == W_I4
    x |= (x & 0x08080808u) * 0x1Eu; // copy bit 3 into bits 4..7 of each byte
#endif
    return x;
}
static __device__ __forceinline__ void mma(int *c, const u32 *a, const u32 *b)
{
#if AZERO_FMT && (WFMT == W_U8 || WFMT == W_U4)
    asm volatile("mma.sync.aligned.m16n8k32.row.col.s32.u8.u8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
        : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3]) : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#elif AZERO_FMT
    asm volatile("mma.sync.aligned.m16n8k32.row.col.s32.u8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
        : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3]) : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#elif (WFMT == W_U8 || WFMT == W_U4)
    asm volatile("mma.sync.aligned.m16n8k32.row.col.s32.s8.u8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
        : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3]) : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#else
    asm volatile("mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
        : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3]) : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#endif
}
#elif FAM == FAM_FP8
#define ACC_T float
#if AFMT == W_E4M3 && WFMT == W_E4M3
#define MMA_FP8 "mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e4m3.f32"
#elif AFMT == W_E4M3
#define MMA_FP8 "mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e5m2.f32"
#elif WFMT == W_E4M3
#define MMA_FP8 "mma.sync.aligned.m16n8k32.row.col.f32.e5m2.e4m3.f32"
#else
#define MMA_FP8 "mma.sync.aligned.m16n8k32.row.col.f32.e5m2.e5m2.f32"
#endif
static __device__ __forceinline__ void mma(float *c, const u32 *a, const u32 *b)
{
    asm volatile(MMA_FP8 " {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3]) : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
#else
#define ACC_T float
static __device__ __forceinline__ void mma(float *c, const u32 *a, const u32 *b)
{
#if FAM == FAM_BF16
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3]) : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#else
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3]) : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#endif
}
#if !W4M
// Two 8-bit weight codes (k, k+1) of smem row p -> f16x2 / bf16x2 of (q - z), exact.
// sub: the per-(n, group) subtrahend (int: z; fp8: unused). int4 is W4M: i4_dequant.
static __device__ __forceinline__ u32 wpair(const u8 *p, int k, u32 sub)
{
#if WFMT == W_E4M3 || WFMT == W_E5M2
    u32 h = fp8x2_to_f16x2((u32)p[k] | ((u32)p[k + 1] << 8), WFMT == W_E4M3);
#if FAM == FAM_BF16
    return f16x2_to_bf16x2(h);
#else
    return h;
#endif
#else
    int z = (int)sub;
    float a = (float)(wcode(p, k) - z), b = (float)(wcode(p, k + 1) - z);
    u32 r;
#if FAM == FAM_BF16
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(b), "f"(a));
#else
    asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(b), "f"(a));
#endif
    return r;
#endif
}
// The subtrahend wpair wants for zero point z.
static __device__ __forceinline__ u32 wsub(int z)
{
#if WFMT == W_E4M3 || WFMT == W_E5M2
    return 0;
#else
    return (u32)z;
#endif
}
#define WSUB_T u32
#define WSUB(z) wsub(z)
#else
#define WSUB_T I4Sub
#define WSUB(z) i4_sub(z)
#endif
#endif

// The GEMM's staging of one BK slice into smem stage st (macros over its locals tid, s,
// m0, n0, codes, sA, sW): A rows m0.., weight rows n0.. (W4M: the B fragments come
// straight from global memory into registers instead, in the kernel)
#if W4M
#define LOAD_W(kt, st) do { } while (0)
#else
#define LOAD_W(kt, st) do { \
        for (int c = tid; c < BN * ROWB_W / 16; c += 128) { \
            int r = c / (ROWB_W / 16), q = c % (ROWB_W / 16); \
            cp_async16(&sW[st][r * SW_STRIDE + q * 16], codes + (n0 + r) * (i64)WROWB + (kt) * ROWB_W + q * 16); \
        } \
    } while (0)
#endif
#define LOAD_TILE(kt, st) do { \
        for (int c = tid; c < BM * ROWB_A / 16; c += 128) { \
            int r = c / (ROWB_A / 16), q = c % (ROWB_A / 16); \
            cp_async16(&sA[st][r * SA_STRIDE + q * 16], s.a + (m0 + r) * (i64)(KP * AESZ) + (kt) * ROWB_A + q * 16); \
        } \
        LOAD_W(kt, st); \
        asm volatile("cp.async.commit_group;"); \
    } while (0)

extern "C" __global__ void __launch_bounds__(128, 1) KNAME(gemm)(const float *x, i64 M, const u8 *wpack,
    const float *bias, void *y, u8 *scratch)
{
    __shared__ __align__(16) u8 sA[2][BM * SA_STRIDE];
#if !W4M
    __shared__ __align__(16) u8 sW[2][BN * SW_STRIDE];
#endif
    Scratch s = scratch_of(scratch, M);
    int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    int g = lane >> 2, tg = lane & 3;
    int wm = warp >> 1, wn = warp & 1;
    i64 m0 = (i64)blockIdx.y * BM, n0 = (i64)blockIdx.x * BN;
    const u8 *codes = wpack + CODES_OFF;
    ACC_T acc[2][4][4];
    float outer[2][4][4];
    #pragma unroll
    for (int a = 0; a < 2; a++)
        #pragma unroll
        for (int b = 0; b < 4; b++)
            #pragma unroll
            for (int c = 0; c < 4; c++) { acc[a][b][c] = 0; outer[a][b][c] = 0.0f; }

    const int KT = KP / BK;

    LOAD_TILE(0, 0);
#if W4M
    // the warp's 32 columns are n block 2·blockIdx.x + wn: one 128-bit load per lane per
    // k slice holds all its B fragments (ir/layout_gpu_int4.h); the next slice's load is
    // in flight while this one's mma run
    const i64 nbw = (i64)blockIdx.x * (BN / KILN_I4_NB) + wn;
    u32 bq[4], bqn[4] = {0, 0, 0, 0};
    ldg128(bq, codes + kiln_i4_lane_off(nbw, 0, KT, lane));
#endif
#if FAM == FAM_F16 || FAM == FAM_BF16
    WSUB_T sub[4];
    #pragma unroll
    for (int nt = 0; nt < 4; nt++) {
        int z = 0;
#if WZERO
        z = wzeros(wpack)[WIDX(n0 + wn * 32 + nt * 8 + g, 0)];
#endif
        sub[nt] = WSUB(z);
    }
#endif
    for (int kt = 0; kt < KT; kt++) {
        if (kt + 1 < KT) LOAD_TILE(kt + 1, (kt + 1) & 1);
        else asm volatile("cp.async.commit_group;");
#if W4M
        if (kt + 1 < KT) ldg128(bqn, codes + kiln_i4_lane_off(nbw, kt + 1, KT, lane));
#endif
        asm volatile("cp.async.wait_group 1;");
        __syncthreads();
        const u8 *tA = sA[kt & 1];
#if !W4M
        const u8 *tW = sW[kt & 1];
#endif
#if FAM == FAM_S8 || FAM == FAM_FP8
        u32 af[2][4], bf[4][2];
        afrags(af, tA, wm * 32, 0, lane);
#if WBITS == 4
        #pragma unroll
        for (int nt = 0; nt < 4; nt++) {
            const u8 *wr = tW + (wn * 32 + nt * 8 + g) * SW_STRIDE;
            bf[nt][0] = spread4(*(const u16 *)(wr + tg * 2));
            bf[nt][1] = spread4(*(const u16 *)(wr + 8 + tg * 2));
        }
#else
        // 8-bit codes are the B fragments as stored: one ldmatrix.x4 per two n tiles,
        // matrix q = (n tile 2p + q/2, bytes 16·(q%2)..) -> bf[2p + q/2][q%2]
        #pragma unroll
        for (int p = 0; p < 2; p++) {
            int q = lane >> 3;
            ldsm_x4(&bf[2 * p][0], tW + (wn * 32 + (2 * p + (q >> 1)) * 8 + (lane & 7)) * SW_STRIDE + (q & 1) * 16);
        }
#endif
        #pragma unroll
        for (int mt = 0; mt < 2; mt++)
            #pragma unroll
            for (int nt = 0; nt < 4; nt++) mma(acc[mt][nt], af[mt], bf[nt]);
#else
#if W4M
        u32 wv[4][4]; // [n tile][pair]: pair kiln_i4_pair_of(ks, b) is register b of k16 step ks
        #pragma unroll
        for (int nt = 0; nt < 4; nt++) i4_dequant(bq[nt], sub[nt], wv[nt]);
#endif
        #pragma unroll
        for (int ks = 0; ks < 2; ks++) {
            u32 af[2][4], bf[4][2];
            afrags(af, tA, wm * 32, ks * 32, lane);
            #pragma unroll
            for (int nt = 0; nt < 4; nt++) {
#if W4M
                bf[nt][0] = wv[nt][kiln_i4_pair_of(ks, 0)];
                bf[nt][1] = wv[nt][kiln_i4_pair_of(ks, 1)];
#else
                const u8 *wr = tW + (wn * 32 + nt * 8 + g) * SW_STRIDE;
                bf[nt][0] = wpair(wr, ks * 16 + tg * 2, sub[nt]);
                bf[nt][1] = wpair(wr, ks * 16 + 8 + tg * 2, sub[nt]);
#endif
            }
            #pragma unroll
            for (int mt = 0; mt < 2; mt++)
                #pragma unroll
                for (int nt = 0; nt < 4; nt++) mma(acc[mt][nt], af[mt], bf[nt]);
        }
#endif
        if ((kt + 1) % TPG == 0 || kt + 1 == KT) { // a group ends (the last may be ragged)
            int j = kt / TPG;
            #pragma unroll
            for (int mt = 0; mt < 2; mt++)
                #pragma unroll
                for (int nt = 0; nt < 4; nt++)
                    #pragma unroll
                    for (int c = 0; c < 4; c++) {
                        i64 m = acc_row(m0 + wm * 32, mt, g, c), n = acc_col(n0 + wn * 32, nt, tg, c);
                        if (m < M && n < N_) {
#if FAM == FAM_S8
                            u32 I = (u32)acc[mt][nt][c];
#if WZERO || AZERO_FMT
                            // Σ(qa-za)(qw-zw) = Σqa·qw - zw·Σqa - za·Σqw + len·za·zw, mod 2^32 exact
                            u32 zw = 0, za = (u32)s.za[m];
#if WZERO
                            zw = (u32)wzeros(wpack)[n * NG + j];
#endif
                            I = I - zw * (u32)s.asum[m * NG + j] - za * (u32)wsums(wpack)[n * NG + j] + (u32)(GEND(j) - j * GLEN) * za * zw;
#endif
                            outer[mt][nt][c] = fold_int((int)I, outer[mt][nt][c], m, n, j, wpack, s);
#else
                            outer[mt][nt][c] = fold_float(acc[mt][nt][c], outer[mt][nt][c], m, n, j, wpack, s);
#endif
                        }
                        acc[mt][nt][c] = 0;
                    }
#if (FAM == FAM_F16 || FAM == FAM_BF16) && WZERO && GROUP_MODE
            if (j + 1 < NG)
                #pragma unroll
                for (int nt = 0; nt < 4; nt++)
                    sub[nt] = WSUB(wzeros(wpack)[WIDX(n0 + wn * 32 + nt * 8 + g, j + 1)]);
#endif
        }
        __syncthreads();
#if W4M
        #pragma unroll
        for (int i = 0; i < 4; i++) bq[i] = bqn[i];
#endif
    }
    #pragma unroll
    for (int mt = 0; mt < 2; mt++)
        #pragma unroll
        for (int nt = 0; nt < 4; nt++)
            #pragma unroll
            for (int c = 0; c < 4; c++) {
                i64 m = acc_row(m0 + wm * 32, mt, g, c), n = acc_col(n0 + wn * 32, nt, tg, c);
                if (m < M && n < N_)
                    store_y(y, m * N_ + n, epilogue(finish(outer[mt][nt][c], m, s), n, bias));
            }
}
#endif
