/* ir/layout_gpu_int4.h — where each int4 weight-only code lives in the Marlin-style GPU
 * blob ("KILNGP2"): index maths compiled both as C (the prepacker, ir/layout_gpu.c, and
 * tests/test_gpu_int4_layout.c) and as CUDA (gen.c pastes this file in front of
 * codegen/ptx/qgemm_template.cu), so the packer and the kernels cannot disagree.
 *
 * The codes section is a sequence of 512-byte chunks, one per (n block nb of 32 columns,
 * k slice kt of 32), nb-major: chunk nb·KT + kt (KT = KP/32). In a chunk, lane L of a
 * warp owns bytes 16L..16L+15, one 128-bit load: four 32-bit words, word nt holding the
 * 8 codes of column n = 32·nb + 8·nt + L/4 that the mma.m16n8k16 B fragments of n tile
 * nt need for both k16 steps of the slice. In a word, nibble i (bits 4i..4i+3) is pair
 * p = i % 4, half h = i / 4: pair p is the f16x2/bf16x2 B register (p % 2) of k16 step
 * p / 2, low half (h = 0) k and high half k + 1, so `word >> 4p` masked with 0x000F000F
 * puts both codes of a register where the lop3 magic number wants them. Plain C, no
 * headers: the CUDA side has none. docs/gpu.md "The weight blob" has the picture. */
#ifndef KILN_LAYOUT_GPU_INT4_H
#define KILN_LAYOUT_GPU_INT4_H

#if defined(__CUDACC__) || defined(__CUDACC_RTC__)
#define KILN_I4_FN static __device__ __forceinline__
#else
#define KILN_I4_FN static inline
#endif

/* columns per chunk, k per chunk, bytes per lane, bytes per chunk */
#define KILN_I4_NB 32
#define KILN_I4_KS 32
#define KILN_I4_LANE_BYTES 16
#define KILN_I4_CHUNK_BYTES 512

/* Pair p of a word: B register (0: b0,b1; 1: b2,b3) and k16 step of the slice. */
KILN_I4_FN int kiln_i4_pair_breg(int p) { return p & 1; }
KILN_I4_FN int kiln_i4_pair_kstep(int p) { return p >> 1; }
/* The pair that holds B register breg of k16 step kstep. */
KILN_I4_FN int kiln_i4_pair_of(int kstep, int breg) { return 2 * kstep + breg; }
/* The nibble of a word holding half h of pair p. */
KILN_I4_FN int kiln_i4_nibble(int p, int h) { return p + 4 * h; }

/* k within the slice of pair p, half h, for lane (the mma threadID_in_group is lane%4):
 * the gemv reads its two activations k, k + 1 of pair p here. */
KILN_I4_FN int kiln_i4_pair_k(int p, int lane, int h)
{
    return 16 * kiln_i4_pair_kstep(p) + 8 * kiln_i4_pair_breg(p) + 2 * (lane & 3) + h;
}
/* Column within the n block of word nt for lane (the mma groupID is lane/4). */
KILN_I4_FN int kiln_i4_word_n(int nt, int lane) { return 8 * nt + (lane >> 2); }

/* Byte offset, from the codes section, of lane's 16 bytes of chunk (nb, kt); nslices is
 * KT, the k slices of a row. (Parameter names avoid the template's macros: KP, NG.) */
KILN_I4_FN long long kiln_i4_lane_off(long long nb, long long kt, long long nslices, int lane)
{
    return (nb * nslices + kt) * KILN_I4_CHUNK_BYTES + (long long)lane * KILN_I4_LANE_BYTES;
}

/* Index of (column n, group j) in the scales, zeros and wsum sections: group-major
 * ([NG][NP], np = NP), so a warp's 32 columns of a group are 128 contiguous bytes at
 * each group's end (row-major blobs keep [NP][NG]). */
KILN_I4_FN long long kiln_i4_group_index(long long n, long long j, long long np) { return j * np + n; }

/* The other way, for the prepacker: the nibble index (from the codes section; byte
 * index / 2, low nibble first) that holds W[n, k] (k < kp = KP, n < NP). */
KILN_I4_FN long long kiln_i4_code_nibble(long long n, long long k, long long kp)
{
    int nn = (int)(n % KILN_I4_NB), kk = (int)(k % KILN_I4_KS);
    int kstep = kk / 16, breg = (kk % 16) / 8, tg = (kk % 8) / 2, h = kk % 2;
    int lane = 4 * (nn % 8) + tg, nt = nn / 8;
    long long off = kiln_i4_lane_off(n / KILN_I4_NB, k / KILN_I4_KS, kp / KILN_I4_KS, lane);
    return 2 * (off + 4 * nt) + kiln_i4_nibble(kiln_i4_pair_of(kstep, breg), h);
}

#endif
