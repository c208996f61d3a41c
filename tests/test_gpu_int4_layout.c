/* tests/test_gpu_int4_layout.c — the Marlin-style int4 GPU blob ("KILNGP2"), no GPU
 * needed: walking the blob as the kernels do (thread, 128-bit load, register, nibble)
 * through ir/layout_gpu_int4.h and an independent statement of the mma.m16n8k16 B
 * fragment from the PTX ISA finds exactly W[n, k] for every (n, k), once; the GEMV's A
 * registers pair each code with its activation's k; and the kernels' lop3 magic-number
 * dequantization, emulated bit for bit, gives code - z. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ir/layout.h"
#include "ir/layout_gpu.h"
#include "ir/layout_gpu_int4.h"
#include "ir/numerics.h"

/* PTX ISA, "Matrix Fragments for mma.m16n8k16" with .f16/.bf16: each thread holds B
 * elements b0..b3 in two .f16x2 registers (b0, b1 in the first, low half first);
 * groupID = laneid >> 2, threadID_in_group = laneid % 4; row (k) = tig·2 + (i & 1) for
 * b0, b1 and tig·2 + 8 + (i & 1) for b2, b3; col (n) = groupID. */
static void ptx_b_frag(int lane, int i, int *k, int *n)
{
    int gid = lane >> 2, tig = lane % 4;
    *k = i < 2 ? tig * 2 + (i & 1) : tig * 2 + 8 + (i & 1);
    *n = gid;
}

/* PTX ISA, the A fragment of mma.m16n8k16 .f16/.bf16: a0..a7 in four .f16x2 registers
 * (register r: a_2r, a_2r+1); row = groupID for a0, a1, a4, a5 and groupID + 8 for a2,
 * a3, a6, a7; col (k) = tig·2 + (i & 1) for i < 4, tig·2 + 8 + (i & 1) for i >= 4. */
static void ptx_a_frag(int lane, int i, int *row, int *k)
{
    int gid = lane >> 2, tig = lane % 4;
    *row = (i < 2 || (i >= 4 && i < 6)) ? gid : gid + 8;
    *k = i < 4 ? tig * 2 + (i & 1) : tig * 2 + 8 + (i & 1);
}

static uint64_t g_rng = 0x9E3779B97F4A7C15ull;
static uint32_t rnd(void)
{
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (uint32_t)(g_rng >> 16);
}

static KilnFunc *int4_layer(KilnModule *m, const char *target, KilnType wt, const char *act_dtype)
{
    KilnFunc *f = kiln_func_new(m, "w4");
    kiln_fset_ident(f, "target", target);
    int x = kiln_func_param(f, "x", kiln_type2(KILN_F32, 1, wt.dim[1]));
    int w = kiln_emit(f, KILN_OP_WEIGHT, NULL, 0, kiln_type2(KILN_F32, wt.dim[0], wt.dim[1]), "w");
    kiln_set_str(f, kiln_last(f), "name", "w");
    int q = kiln_emit(f, KILN_OP_QUANTIZE, &w, 1, wt, "wq");
    int ops[2] = {x, q};
    int y = kiln_emit(f, KILN_OP_QGEMM, ops, 2, kiln_type2(KILN_F32, 1, wt.dim[0]), "y");
    kiln_set_ident(f, kiln_last(f), "act_dtype", act_dtype);
    kiln_emit(f, KILN_OP_RETURN, &y, 1, (KilnType){0}, NULL);
    return f;
}

/* What the blob must hold at (n, k) of the padded weight: W, the zero point past K (the
 * interpreter's code of 0), 0 past N. */
static int want_code(const KilnGpuLayout *l, const KilnTensor *t, int64_t n, int64_t k)
{
    if (n >= l->N)
        return 0;
    size_t rb = kiln_row_bytes(l->wdt, l->K);
    if (k < l->K)
        return kiln_code_get(l->wdt, (const uint8_t *)t->data + (size_t)n * rb, k);
    int64_t j = l->group_mode ? k / l->glen : 0;
    return l->wzero ? t->zeros[l->group_mode ? n * l->ngroups + j : n] : 0;
}

/* One shape: prepack random codes, then visit the blob as the GEMM and GEMV do. */
static void check_shape(int64_t N, int64_t K, int group, bool asym, const char *act, const char *arch)
{
    KilnModule *m = kiln_module_new();
    KilnType wt = kiln_type2(asym ? KILN_U4 : KILN_I4, N, K);
    wt.q = (KilnQuantSpec){.fmt = KILN_QF_INT4, .symmetric = !asym,
                           .gran = group ? KILN_GRAN_GROUP : KILN_GRAN_CHANNEL, .group = group};
    KilnFunc *f = int4_layer(m, arch, wt, act);
    KilnGpuLayout l;
    KilnDiag d = {0};
    assert_int_equal(kiln_gpu_layout_for(kiln_find_qgemm(f), f, &l, &d), 0);
    assert_true(l.int4_marlin);
    assert_int_equal(l.row_bytes * (size_t)l.NP, (size_t)(l.NP * l.KP / 2)); /* same size as row-major */
    KilnTensor t;
    assert_int_equal(kiln_tensor_alloc(&t, &wt), 0);
    size_t rb = kiln_row_bytes(l.wdt, K);
    for (int64_t n = 0; n < N; n++)
        for (int64_t k = 0; k < K; k++)
            kiln_code_set(l.wdt, (uint8_t *)t.data + (size_t)n * rb, k, (int)(rnd() % 16) - (asym ? 0 : 8));
    for (int64_t i = 0; i < t.nscales; i++) {
        t.scales[i] = 0.5f + (float)(rnd() % 64);
        if (asym)
            t.zeros[i] = (int32_t)(rnd() % 16);
    }
    uint8_t *blob = malloc(l.pack_bytes);
    assert_non_null(blob);
    assert_int_equal(kiln_gpu_prepack(&l, &t, blob, &d), 0);
    assert_memory_equal(blob, "KILNGP2", 8);
    const uint8_t *codes = blob + l.codes_off;
    int64_t KT = l.KP / KILN_GPU_BK;
    uint8_t *seen = calloc((size_t)(l.NP * l.KP), 1);
    assert_non_null(seen);
    int bad = 0;
    /* thread (block column nb, warp's lane), load (k slice kt), register (word nt),
     * nibble (k16 step, B register, half) */
    for (int64_t nb = 0; nb < l.NP / KILN_I4_NB; nb++)
        for (int64_t kt = 0; kt < KT; kt++)
            for (int lane = 0; lane < 32; lane++) {
                const uint8_t *ld = codes + kiln_i4_lane_off(nb, kt, KT, lane); /* one 16-byte load */
                assert_int_equal((ld - codes) % 16, 0);
                for (int nt = 0; nt < 4; nt++) {
                    uint32_t word;
                    memcpy(&word, ld + 4 * nt, 4);
                    for (int ks = 0; ks < 2; ks++)
                        for (int breg = 0; breg < 2; breg++)
                            for (int h = 0; h < 2; h++) {
                                int p = kiln_i4_pair_of(ks, breg);
                                assert_int_equal(kiln_i4_pair_kstep(p), ks);
                                assert_int_equal(kiln_i4_pair_breg(p), breg);
                                int code = (int)(word >> (4 * kiln_i4_nibble(p, h))) & 0xF;
                                int fk, fn; /* the mma's view of element b[2·breg + h] */
                                ptx_b_frag(lane, 2 * breg + h, &fk, &fn);
                                int64_t k = kt * 32 + ks * 16 + fk, n = nb * 32 + nt * 8 + fn;
                                /* the GEMV reads activation k and column n here */
                                assert_int_equal(kiln_i4_pair_k(p, lane, h), ks * 16 + fk);
                                assert_int_equal(kiln_i4_word_n(nt, lane), nt * 8 + fn);
                                int want = want_code(&l, &t, n, k) & 0xF; /* i4: two's complement */
                                if (code != want && bad++ < 5)
                                    printf("FAIL %lldx%lld g%d: (n %lld, k %lld) lane %d load %lld reg %d: %d, "
                                           "want %d\n", (long long)N, (long long)K, group, (long long)n, (long long)k,
                                           lane, (long long)kt, nt, code, want);
                                seen[n * l.KP + k]++;
                            }
                }
            }
    for (int64_t i = 0; i < l.NP * l.KP; i++)
        if (seen[i] != 1 && bad++ < 5)
            printf("FAIL (n %lld, k %lld) visited %d times\n", (long long)(i / l.KP), (long long)(i % l.KP), seen[i]);
    /* scales and zeros are group-major [NG][NP], read at each group's end */
    for (int64_t n = 0; n < N; n++)
        for (int64_t j = 0; j < l.ngroups; j++) {
            int64_t si = group ? n * l.ngroups + j : n;
            float s;
            int32_t z;
            assert_int_equal(kiln_i4_group_index(n, j, l.NP), j * l.NP + n);
            memcpy(&s, blob + l.scales_off + (size_t)(j * l.NP + n) * 4, 4);
            memcpy(&z, blob + l.zeros_off + (size_t)(j * l.NP + n) * 4, 4);
            if ((s != t.scales[si] || z != (asym ? t.zeros[si] : 0)) && bad++ < 5)
                printf("FAIL scale/zero (n %lld, j %lld)\n", (long long)n, (long long)j);
        }
    assert_int_equal(bad, 0);
    free(seen);
    free(blob);
    kiln_tensor_free(&t);
    kiln_module_free(m);
}

static void test_kernel_view_finds_w(void **state)
{
    (void)state;
    /* on and off the 64 / 32 tiles; groups that divide K, ragged ones, per channel */
    check_shape(64, 32, 32, false, "f16", "sm_80");
    check_shape(33, 96, 32, false, "f16", "sm_90");
    check_shape(130, 576, 128, true, "f16", "sm_80");
    check_shape(72, 200, 64, true, "bf16", "sm_89");
    check_shape(100, 100, 32, false, "bf16", "sm_90");
    check_shape(7, 80, 0, true, "f16", "sm_80");
    for (int i = 0; i < 6; i++) {
        int64_t N = 1 + rnd() % 200, K = 1 + rnd() % 400;
        int group = (int)(32 * (rnd() % 5)); /* 0: per channel */
        check_shape(N, K, group, rnd() % 2, rnd() % 2 ? "f16" : "bf16", "sm_80");
    }
}

/* The GEMV's A registers (codegen/ptx/gemv_int4.cu): register r of k16 step ks reads
 * row g + 8·(r % 2) at the k of the B register r / 2 (kiln_i4_pair_k of half h): the
 * same k the mma pairs with that B register, by the PTX ISA's A layout. */
static void test_gemv_a_fragment(void **state)
{
    (void)state;
    for (int lane = 0; lane < 32; lane++)
        for (int ks = 0; ks < 2; ks++)
            for (int r = 0; r < 4; r++)
                for (int h = 0; h < 2; h++) {
                    int row, k;
                    ptx_a_frag(lane, 2 * r + h, &row, &k);
                    assert_int_equal(row, (lane >> 2) + 8 * (r % 2));
                    assert_int_equal(kiln_i4_pair_k(kiln_i4_pair_of(ks, r / 2), lane, h), 16 * ks + k);
                }
}

/* ---------------------------------------------------------------- the dequant, emulated */
static uint32_t lop3_ea(uint32_t a, uint32_t b, uint32_t c) { return (a & b) | c; } /* 0xEA */
static float half_of(uint32_t v, int hi, bool bf) { uint16_t h = (uint16_t)(hi ? v >> 16 : v);
    return bf ? kiln_bf16_to_f32(h) : kiln_f16_to_f32(h); }
static uint32_t pair_of(double lo, double hi, bool bf) /* round each half once, as .rn */
{
    uint16_t a = bf ? kiln_f32_to_bf16((float)lo) : kiln_f32_to_f16((float)lo);
    uint16_t b = bf ? kiln_f32_to_bf16((float)hi) : kiln_f32_to_f16((float)hi);
    return a | (uint32_t)b << 16;
}
static uint32_t pair_const(float v, bool bf)
{
    uint16_t h = bf ? kiln_f32_to_bf16(v) : kiln_f32_to_f16(v);
    return h | (uint32_t)h << 16;
}

/* qgemm_template.cu's i4_sub + i4_dequant, operation by operation (sub.f16x2,
 * fma.rn.f16x2 / bf16x2 computed exactly in double, then rounded once). */
static void dequant(uint32_t q, int z, bool i4, bool bf, uint32_t out[4])
{
    if (i4) {
        q ^= 0x88888888u;
        z = 8;
    }
    if (bf) {
        uint32_t s0 = pair_const(-(128.0f + (float)z), true);
        for (int p = 0; p < 4; p++) {
            uint32_t v = lop3_ea(q >> (4 * p), 0x000F000Fu, 0x43004300u);
            out[p] = pair_of((double)half_of(v, 0, true) * half_of(0x3F803F80u, 0, true) + half_of(s0, 0, true),
                             (double)half_of(v, 1, true) * half_of(0x3F803F80u, 1, true) + half_of(s0, 1, true), true);
        }
        return;
    }
    uint32_t s0 = pair_const(1024.0f + (float)z, false), s1 = pair_const(-(64.0f + (float)z), false);
    for (int half = 0; half < 2; half++) {
        uint32_t w = q >> (8 * half);
        uint32_t lo = lop3_ea(w, 0x000F000Fu, 0x64006400u), hi = lop3_ea(w, 0x00F000F0u, 0x64006400u);
        out[2 * half] = pair_of((double)half_of(lo, 0, false) - half_of(s0, 0, false),
                                (double)half_of(lo, 1, false) - half_of(s0, 1, false), false);
        out[2 * half + 1] =
            pair_of((double)half_of(hi, 0, false) * half_of(0x2C002C00u, 0, false) + half_of(s1, 0, false),
                    (double)half_of(hi, 1, false) * half_of(0x2C002C00u, 1, false) + half_of(s1, 1, false), false);
    }
}

static void test_dequant_exact(void **state)
{
    (void)state;
    int bad = 0;
    for (int bf = 0; bf < 2; bf++)
        for (int i4 = 0; i4 < 2; i4++)
            for (int z = 0; z < (i4 ? 1 : 16); z++)
                for (int trial = 0; trial < 2000; trial++) {
                    uint32_t q = trial < 16 ? 0x11111111u * (uint32_t)trial : rnd() ^ (rnd() << 16);
                    uint32_t out[4];
                    dequant(q, z, i4, bf, out);
                    for (int p = 0; p < 4; p++)
                        for (int h = 0; h < 2; h++) {
                            int c = (int)(q >> (4 * kiln_i4_nibble(p, h))) & 0xF;
                            if (i4)
                                c = (c ^ 8) - 8;
                            float got = half_of(out[p], h, bf), want = (float)(c - (i4 ? 0 : z));
                            if (got != want && bad++ < 5)
                                printf("FAIL %s %s z %d word %08x pair %d half %d: %g, want %g\n", bf ? "bf16" : "f16",
                                       i4 ? "i4" : "u4", z, q, p, h, got, want);
                        }
                }
    assert_int_equal(bad, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kernel_view_finds_w),
        cmocka_unit_test(test_gemv_a_fragment),
        cmocka_unit_test(test_dequant_exact),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
