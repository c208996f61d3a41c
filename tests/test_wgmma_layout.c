/* tests/test_wgmma_layout.c — the sm_90a wgmma kernel's index maths (codegen/ptx/
 * wgmma_layout.h, the same text the CUDA kernel is built from) against an independent
 * C statement of the PTX ISA's rules, for every element: the shared-memory address an
 * m64nNk* wgmma reads for operand element (row, k) through a matrix descriptor (no
 * swizzle, K-major), and the (row, col) of accumulator register i of thread t. Then a
 * whole 64x64 tile product, computed the way the hardware is specified to read the
 * bytes the kernel's copies wrote, lands in the right output elements. A layout
 * mistake fails here, without a GPU. Also the arch table (sm_90a, sm_100). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "codegen/ptx/wgmma_layout.h"
#include "ir/layout_gpu.h"

/* ---------------------------------------------------------------- the PTX ISA, restated
 * "Matrix Descriptor": a 64-bit value; bits 13-0 hold (start address & 0x3FFFF) >> 4,
 * bits 29-16 the leading dimension byte offset >> 4, bits 45-32 the stride dimension
 * byte offset >> 4, bits 51-49 the base offset, bits 63-62 the swizzle mode (0: none). */
typedef struct Desc {
    unsigned start, lbo, sbo, base_offset, swizzle;
} Desc;

static Desc decode(uint64_t v)
{
    Desc d = {(unsigned)(v & 0x3FFF) << 4, (unsigned)((v >> 16) & 0x3FFF) << 4, (unsigned)((v >> 32) & 0x3FFF) << 4,
              (unsigned)((v >> 49) & 7), (unsigned)(v >> 62)};
    return d;
}

/* "Shared Memory Matrix Layout", no swizzle, K-major: the operand is made of core
 * matrices of 8 rows x 16 bytes, each 128 contiguous bytes (row r at 16·r); the core
 * matrix holding rows 8i.. and bytes 16j.. of each row starts at start + i·SBO + j·LBO
 * (LBO: between core matrices adjacent in K; SBO: adjacent in M or N). Returns the
 * address of byte b (0..31: one k32 of 8-bit or k16 of 16-bit) of operand row r. */
static unsigned isa_operand_addr(Desc d, unsigned r, unsigned b)
{
    return d.start + (r / 8) * d.sbo + (b / 16) * d.lbo + (r % 8) * 16 + b % 16;
}

/* "Register fragment" of D for m64nN, f32/s32: the warpgroup's warp w owns rows
 * 16w..16w+15; within it the fragment is N/8 side-by-side m16n8 blocks of the mma.sync
 * C layout (thread lane: group g = lane/4, tg = lane%4; block j holds d[4j..4j+3]:
 * (g, 8j+2tg), (g, 8j+2tg+1), (g+8, 8j+2tg), (g+8, 8j+2tg+1)). */
static void isa_acc_rc(unsigned t, unsigned i, unsigned *row, unsigned *col)
{
    unsigned w = t / 32, lane = t % 32, g = lane / 4, tg = lane % 4, j = i / 4, c = i % 4;
    static const unsigned dr[4] = {0, 0, 8, 8}, dc[4] = {0, 1, 0, 1};
    *row = 16 * w + g + dr[c];
    *col = 8 * j + 2 * tg + dc[c];
}

/* ---------------------------------------------------------------- the checks */
static const unsigned rowbytes_used[] = {32, 64}; /* 8-bit and 16-bit operands per k slice */

/* Every wgmma step's descriptor makes the hardware read exactly the byte the kernel's
 * copy put there, and the descriptor fields are what the no-swizzle mode wants. */
static void test_descriptor_reads_the_tile(void **state)
{
    (void)state;
    for (size_t u = 0; u < 2; u++) {
        unsigned rb = rowbytes_used[u];
        for (unsigned tile = 0; tile < 4 * 8192; tile += 1024 + 128) { /* 128-aligned tile bases */
            for (unsigned step = 0; step < rb / WG_STEP_BYTES; step++) {
                Desc d = decode(wg_step_desc(tile, step, rb));
                assert_int_equal(d.swizzle, 0);
                assert_int_equal(d.base_offset, 0);
                assert_int_equal(d.lbo, 128);
                assert_int_equal(d.sbo, 8 * rb);
                for (unsigned r = 0; r < 64; r++)
                    for (unsigned b = 0; b < WG_STEP_BYTES; b++) {
                        unsigned want = tile + wg_tile_off(r, step * WG_STEP_BYTES + b, rb);
                        if (isa_operand_addr(d, r, b) != want)
                            fail_msg("rowbytes %u tile %u step %u: element (%u, byte %u) read at %u, "
                                     "written at %u", rb, tile, step, r, b, isa_operand_addr(d, r, b), want);
                    }
            }
        }
    }
}

/* The tile layout is a bijection of the 64 x rowbytes tile onto [0, 64·rowbytes), and
 * every 16-byte run of a row (one cp.async, one st.shared.v4) is contiguous and aligned. */
static void test_tile_layout_is_a_bijection(void **state)
{
    (void)state;
    for (size_t u = 0; u < 2; u++) {
        unsigned rb = rowbytes_used[u];
        unsigned char seen[64 * 64];
        memset(seen, 0, sizeof seen);
        for (unsigned r = 0; r < 64; r++)
            for (unsigned b = 0; b < rb; b++) {
                unsigned o = wg_tile_off(r, b, rb);
                assert_true(o < 64 * rb);
                assert_int_equal(seen[o], 0);
                seen[o] = 1;
                if (b % 16 == 0) {
                    assert_int_equal(o % 16, 0);
                    for (unsigned e = 1; e < 16; e++)
                        assert_int_equal(wg_tile_off(r, b + e, rb), o + e);
                }
            }
    }
}

/* Descriptor fields keep the address bits the hardware uses (shared addresses below
 * 256 KiB, 16-aligned). */
static void test_descriptor_encoding(void **state)
{
    (void)state;
    uint64_t v = wg_desc(0x3FFF0, 0x20, 0x400);
    assert_int_equal(v & 0x3FFF, 0x3FFF);
    assert_int_equal((v >> 16) & 0x3FFF, 2);
    assert_int_equal((v >> 32) & 0x3FFF, 0x40);
    assert_int_equal(v >> 46, 0);
    assert_int_equal(v & 0xC000C000ull, 0);
}

/* Thread t's register i is output (row, col) as the ISA's fragment figure says, and the
 * 128 threads x 32 registers cover the 64x64 tile once. */
static void test_accumulator_fragment(void **state)
{
    (void)state;
    unsigned char seen[64][64];
    memset(seen, 0, sizeof seen);
    for (unsigned t = 0; t < 128; t++)
        for (unsigned i = 0; i < 32; i++) {
            unsigned r, c;
            isa_acc_rc(t, i, &r, &c);
            assert_int_equal(wg_acc_row(t, i), r);
            assert_int_equal(wg_acc_col(t, i), c);
            assert_int_equal(seen[r][c], 0);
            seen[r][c] = 1;
        }
    for (unsigned r = 0; r < 64; r++)
        for (unsigned c = 0; c < 64; c++)
            assert_int_equal(seen[r][c], 1);
}

/* A 64x64 tile product of 8-bit operands over k = 64 (two slices of 32): A and B rows
 * copied into shared memory in the kernel's layout, read back through the step
 * descriptors as the ISA specifies, accumulated into the registers of the fragment
 * figure, and stored where the kernel's epilogue stores register i: y = A·B^T exactly. */
static void test_tile_product(void **state)
{
    (void)state;
    enum { KS = 2, RB = 32 };
    signed char A[64][KS * RB], B[64][KS * RB];
    uint32_t s = 12345;
    for (int r = 0; r < 64; r++)
        for (int k = 0; k < KS * RB; k++) {
            s = s * 1664525u + 1013904223u;
            A[r][k] = (signed char)(s >> 24);
            s = s * 1664525u + 1013904223u;
            B[r][k] = (signed char)(s >> 24);
        }
    unsigned char smem[2 * 64 * RB];
    const unsigned ta = 0, tb = 64 * RB;
    int acc[128][32];
    memset(acc, 0, sizeof acc);
    for (int slice = 0; slice < KS; slice++) {
        for (unsigned r = 0; r < 64; r++)
            for (unsigned b = 0; b < RB; b++) {
                smem[ta + wg_tile_off(r, b, RB)] = (unsigned char)A[r][slice * RB + b];
                smem[tb + wg_tile_off(r, b, RB)] = (unsigned char)B[r][slice * RB + b];
            }
        Desc da = decode(wg_step_desc(ta, 0, RB)), db = decode(wg_step_desc(tb, 0, RB));
        for (unsigned t = 0; t < 128; t++)
            for (unsigned i = 0; i < 32; i++) {
                unsigned r, c;
                isa_acc_rc(t, i, &r, &c);
                for (unsigned k = 0; k < RB; k++)
                    acc[t][i] += (signed char)smem[isa_operand_addr(da, r, k)] *
                                 (signed char)smem[isa_operand_addr(db, c, k)];
            }
    }
    int y[64][64];
    for (unsigned t = 0; t < 128; t++)
        for (unsigned i = 0; i < 32; i++)
            y[wg_acc_row(t, i)][wg_acc_col(t, i)] = acc[t][i];
    for (int r = 0; r < 64; r++)
        for (int c = 0; c < 64; c++) {
            int ref = 0;
            for (int k = 0; k < KS * RB; k++)
                ref += A[r][k] * B[c][k];
            if (y[r][c] != ref)
                fail_msg("y[%d][%d] = %d, want %d", r, c, y[r][c], ref);
        }
}

/* The arch table: sm_90a is sm 90 and arch-specific; its kernels run on an sm_90 device
 * only, portable ones on their arch and later (KILN_GPU_ARCH in the device tools). */
static void test_arch_table(void **state)
{
    (void)state;
    int sm = 0;
    bool specific = true;
    KilnDiag d = {0};
    assert_int_equal(kiln_gpu_arch("sm_90a", &sm, &specific, &d), 0);
    assert_true(sm == 90 && specific);
    assert_int_equal(kiln_gpu_arch("sm_100", &sm, &specific, &d), 0);
    assert_true(sm == 100 && !specific);
    assert_int_equal(kiln_gpu_arch("sm_90b", &sm, &specific, &d), KILN_EINPUT);
    assert_non_null(strstr(d.msg, "valid: sm_80, sm_89, sm_90, sm_90a, sm_100"));
    assert_int_equal(kiln_gpu_arch_runs_on("sm_90a", "sm_90", &d), 0);
    assert_int_equal(kiln_gpu_arch_runs_on("sm_80", "sm_90", &d), 0);
    assert_int_equal(kiln_gpu_arch_runs_on("sm_90a", "sm_100", &d), KILN_EINPUT);
    assert_non_null(strstr(d.msg, "runs on its own arch only"));
    assert_int_equal(kiln_gpu_arch_runs_on("sm_100", "sm_90", &d), KILN_EINPUT);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_descriptor_reads_the_tile), cmocka_unit_test(test_tile_layout_is_a_bijection),
        cmocka_unit_test(test_descriptor_encoding), cmocka_unit_test(test_accumulator_fragment),
        cmocka_unit_test(test_tile_product),              cmocka_unit_test(test_arch_table),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
