/* tests/test_numerics.c — kiln's scalar numerics against NVIDIA's FP8 tables and
 * hand-computed rounding, f16/bf16, int8/int4 quantization and packing examples. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <fenv.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ir/numerics.h"

static float bits_f32(uint32_t u)
{
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}

static uint32_t f32_bits(float x)
{
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return u;
}

static FILE *open_shared(const char *rel)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", KILN_SHARED_DIR, rel);
    FILE *f = fopen(path, "r");
    if (!f)
        fail_msg("the shared testdata is missing: cannot open %s (KILN_SHARED_DIR=%s)", path,
                 KILN_SHARED_DIR);
    return f;
}

/* ------------------------------------------------------------------ FP8 oracle */

static void test_fp8_encode_table(void **state)
{
    (void)state;
    FILE *f = open_shared("testdata/fp8/fp8_encode.tsv");
    char line[256];
    assert_non_null(fgets(line, sizeof line, f)); /* header */
    int rows = 0, bad = 0;
    while (fgets(line, sizeof line, f)) {
        unsigned bits, e4, e5;
        char val[64];
        if (sscanf(line, "%x %63s %u %u", &bits, val, &e4, &e5) != 4)
            fail_msg("fp8_encode.tsv: cannot read line %d: %s", rows + 2, line);
        float x = bits_f32(bits);
        unsigned g4 = kiln_fp8_e4m3_encode(x), g5 = kiln_fp8_e5m2_encode(x);
        if (g4 != e4 || g5 != e5) {
            if (bad < 10)
                print_error("f32 0x%08x (%s): e4m3 got %u want %u, e5m2 got %u want %u\n", bits,
                            val, g4, e4, g5, e5);
            bad++;
        }
        rows++;
    }
    fclose(f);
    assert_true(rows > 5000);
    assert_int_equal(bad, 0);
}

static bool same_value(float got, float want)
{
    if (isnan(want))
        return isnan(got); /* NaN-ness, not payload */
    return got == want && signbit(got) == signbit(want);
}

static void test_fp8_decode_table(void **state)
{
    (void)state;
    FILE *f = open_shared("testdata/fp8/fp8_decode.tsv");
    char line[256];
    assert_non_null(fgets(line, sizeof line, f));
    int rows = 0;
    while (fgets(line, sizeof line, f)) {
        unsigned byte;
        char s4[64], s5[64];
        if (sscanf(line, "%u %63s %63s", &byte, s4, s5) != 3)
            fail_msg("fp8_decode.tsv: cannot read: %s", line);
        float w4 = strtof(s4, NULL), w5 = strtof(s5, NULL);
        float g4 = kiln_fp8_e4m3_decode((uint8_t)byte), g5 = kiln_fp8_e5m2_decode((uint8_t)byte);
        if (!same_value(g4, w4) || !same_value(g5, w5))
            fail_msg("byte %u: e4m3 %g want %s, e5m2 %g want %s", byte, g4, s4, g5, s5);
        rows++;
    }
    fclose(f);
    assert_int_equal(rows, 256);
}

static void test_fp8_specials(void **state)
{
    (void)state;
    assert_int_equal(kiln_fp8_e4m3_encode(NAN), 0x7f);
    assert_int_equal(kiln_fp8_e5m2_encode(NAN), 0x7f);
    assert_int_equal(kiln_fp8_e4m3_encode(INFINITY), 0x7e);  /* saturate to 448 */
    assert_int_equal(kiln_fp8_e4m3_encode(-1e9f), 0xfe);
    assert_int_equal(kiln_fp8_e5m2_encode(INFINITY), 0x7b); /* 57344 */
    assert_int_equal(kiln_fp8_e4m3_encode(-0.0f), 0x80);
    assert_int_equal(kiln_fp8_e4m3_encode(-0.5f), 0xb0); /* 2^-1: exponent field 6 */
    assert_true(kiln_fp8_e4m3_decode(0x7e) == KILN_E4M3_MAX);
    assert_true(kiln_fp8_e5m2_decode(0x7b) == KILN_E5M2_MAX);
    assert_true(isinf(kiln_fp8_e5m2_decode(0xfc)) && kiln_fp8_e5m2_decode(0xfc) < 0);
    assert_true(isnan(kiln_fp8_e4m3_decode(0xff)));
    /* e4m3 smallest subnormal 2^-9; half of it ties to 0, 1.5x ties up to 2^-8 */
    assert_int_equal(kiln_fp8_e4m3_encode(0x1p-9f), 1);
    assert_int_equal(kiln_fp8_e4m3_encode(0x1p-10f), 0);
    assert_int_equal(kiln_fp8_e4m3_encode(0x3p-10f), 2);
}

/* ------------------------------------------------------------------ rounding */

static void test_round_even(void **state)
{
    (void)state;
    assert_true(kiln_round_even(0.5f) == 0.0f);
    assert_true(kiln_round_even(1.5f) == 2.0f);
    assert_true(kiln_round_even(2.5f) == 2.0f);
    assert_true(kiln_round_even(3.5f) == 4.0f);
    assert_true(kiln_round_even(-0.5f) == 0.0f && signbit(kiln_round_even(-0.5f)));
    assert_true(kiln_round_even(-2.5f) == -2.0f);
    assert_true(kiln_round_even(-3.5f) == -4.0f);
    assert_true(kiln_round_even(2.5000002f) == 3.0f);
    assert_true(kiln_round_even(0.49999997f) == 0.0f);
    assert_true(kiln_round_even(8388607.5f) == 8388608.0f); /* 2^23 - 0.5: odd floor */
    assert_true(kiln_round_even(8388609.0f) == 8388609.0f); /* >= 2^23: unchanged */
    assert_true(kiln_round_even(-1e30f) == -1e30f);
    assert_true(signbit(kiln_round_even(-0.0f)));
    assert_true(isnan(kiln_round_even(NAN)));
    assert_true(isinf(kiln_round_even(-INFINITY)));
    /* must not follow the FP environment */
    int old = fegetround();
    fesetround(FE_UPWARD);
    float a = kiln_round_even(2.5f), b = kiln_round_even(-1.25f), c = kiln_round_even(0.75f);
    fesetround(FE_DOWNWARD);
    float e = kiln_round_even(1.5f);
    fesetround(old);
    assert_true(a == 2.0f && b == -1.0f && c == 1.0f && e == 2.0f);
}

static void test_f16(void **state)
{
    (void)state;
    assert_int_equal(kiln_f32_to_f16(1.0f), 0x3c00);
    assert_int_equal(kiln_f32_to_f16(-2.0f), 0xc000);
    assert_int_equal(kiln_f32_to_f16(65504.0f), 0x7bff);
    assert_int_equal(kiln_f32_to_f16(65519.996f), 0x7bff); /* below the midpoint */
    assert_int_equal(kiln_f32_to_f16(65520.0f), 0x7c00);   /* midpoint ties up to Inf */
    assert_int_equal(kiln_f32_to_f16(-INFINITY), 0xfc00);
    assert_int_equal(kiln_f32_to_f16(1.0f + 0x1p-11f), 0x3c00);     /* tie -> even */
    assert_int_equal(kiln_f32_to_f16(1.0f + 0x3p-11f), 0x3c02);     /* tie -> even (up) */
    assert_int_equal(kiln_f32_to_f16(0x1p-24f), 0x0001);            /* smallest subnormal */
    assert_int_equal(kiln_f32_to_f16(0x1p-25f), 0x0000);            /* tie -> 0 */
    assert_int_equal(kiln_f32_to_f16(0x1.8p-25f), 0x0001);          /* above the tie */
    assert_int_equal(kiln_f32_to_f16(0x3p-25f), 0x0002);            /* 1.5 ulp tie -> 2 */
    assert_int_equal(kiln_f32_to_f16(0x3ffp-24f), 0x03ff);          /* largest subnormal */
    assert_int_equal(kiln_f32_to_f16(0x1p-14f), 0x0400);            /* smallest normal */
    assert_int_equal(kiln_f32_to_f16(0x1.ffcp-15f), 0x0400);        /* rounds up to normal */
    assert_int_equal(kiln_f32_to_f16(-0.0f), 0x8000);
    assert_int_equal(kiln_f32_to_f16(1e-30f), 0x0000);
    uint16_t h = kiln_f32_to_f16(NAN);
    assert_true((h & 0x7c00) == 0x7c00 && (h & 0x3ff) != 0 && (h & 0x200));
    h = kiln_f32_to_f16(bits_f32(0x7f800001)); /* signalling NaN with a low payload */
    assert_true((h & 0x7c00) == 0x7c00 && (h & 0x200));
    assert_true(kiln_f16_to_f32(0x0001) == 0x1p-24f);
    assert_true(kiln_f16_to_f32(0x03ff) == 0x3ffp-24f);
    assert_true(kiln_f16_to_f32(0x7bff) == 65504.0f);
    assert_true(isinf(kiln_f16_to_f32(0x7c00)));
    assert_true(isnan(kiln_f16_to_f32(0x7e00)));
    assert_true(signbit(kiln_f16_to_f32(0x8000)));
    /* every finite f16 survives the round trip */
    for (uint32_t b = 0; b < 0x10000; b++) {
        if ((b & 0x7c00) == 0x7c00)
            continue;
        assert_int_equal(kiln_f32_to_f16(kiln_f16_to_f32((uint16_t)b)), b);
    }
}

static void test_bf16(void **state)
{
    (void)state;
    assert_int_equal(kiln_f32_to_bf16(1.0f), 0x3f80);
    assert_int_equal(kiln_f32_to_bf16(1.0f + 0x1p-8f), 0x3f80); /* tie -> even */
    assert_int_equal(kiln_f32_to_bf16(1.0f + 0x3p-8f), 0x3f82); /* tie -> even (up) */
    assert_int_equal(kiln_f32_to_bf16(1.0f + 0x1.2p-8f), 0x3f81);
    assert_int_equal(kiln_f32_to_bf16(bits_f32(0x7f7fffff)), 0x7f80); /* FLT_MAX -> Inf */
    assert_int_equal(kiln_f32_to_bf16(-INFINITY), 0xff80);
    assert_int_equal(kiln_f32_to_bf16(bits_f32(0x7f800001)), 0x7fc0); /* quiet NaN */
    assert_int_equal(kiln_f32_to_bf16(bits_f32(0x00010000)), 0x0001); /* subnormal */
    assert_true(kiln_bf16_to_f32(0x3f82) == 1.015625f);
    assert_true(kiln_round_to(KILN_BF16, 1.01f) == 1.0078125f);
    assert_true(kiln_round_to(KILN_F16, 1.0001f) == 1.0f);
    assert_true(kiln_round_to(KILN_F32, 1.0001f) == 1.0001f);
}

/* ------------------------------------------------------------------ int quantization */

static KilnQuantSpec spec(KilnQFormat f, bool sym, KilnGran g, int group)
{
    KilnQuantSpec s = {.fmt = f, .symmetric = sym, .gran = g, .group = group};
    return s;
}

static void test_formats(void **state)
{
    (void)state;
    assert_int_equal(kiln_qformat_qmin(KILN_QF_INT8, true), -127);
    assert_true(kiln_qformat_qmax(KILN_QF_INT8, true) == 127.0f);
    assert_int_equal(kiln_qformat_qmin(KILN_QF_INT8, false), 0);
    assert_true(kiln_qformat_qmax(KILN_QF_INT8, false) == 255.0f);
    assert_int_equal(kiln_qformat_qmin(KILN_QF_INT4, true), -7);
    assert_true(kiln_qformat_qmax(KILN_QF_INT4, false) == 15.0f);
    assert_true(kiln_qformat_qmax(KILN_QF_FP8_E4M3, true) == 448.0f);
    assert_int_equal(kiln_qformat_bits(KILN_QF_INT4), 4);
    assert_int_equal(kiln_qformat_bits(KILN_QF_FP8_E5M2), 8);
    KilnQParams p = kiln_qparams_from_range(KILN_QF_INT8, true, 0, 0);
    assert_true(p.scale == 1.0f && p.zero == 0); /* zero range: scale 1 */
    p = kiln_qparams_from_range(KILN_QF_FP8_E4M3, true, -896, 10);
    assert_true(p.scale == 2.0f);
    /* asym int4 on [0.5, 2]: the range is widened to include 0 -> [0, 2], scale 2/15 */
    p = kiln_qparams_from_range(KILN_QF_INT4, false, 0.5f, 2.0f);
    assert_true(p.scale == 2.0f / 15.0f && p.zero == 0);
    KilnQParams q = {0.5f, 0};
    assert_int_equal(kiln_quantize_value(KILN_QF_INT8, true, q, 1000.0f), 127);
    assert_int_equal(kiln_quantize_value(KILN_QF_INT8, true, q, -1000.0f), -127);
    assert_int_equal(kiln_quantize_value(KILN_QF_INT8, true, q, NAN), 0);
    assert_int_equal(kiln_quantize_value(KILN_QF_INT8, true, q, 0.75f), 2); /* 1.5 -> 2 */
    assert_int_equal(kiln_quantize_value(KILN_QF_INT8, true, q, 1.25f), 2); /* 2.5 -> 2 */
    KilnQParams qa = {0.5f, 3};
    assert_int_equal(kiln_quantize_value(KILN_QF_INT4, false, qa, -2.0f), 0); /* -4+3 -> 0 */
    assert_int_equal(kiln_quantize_value(KILN_QF_INT4, false, qa, 1.0f), 5);
    assert_true(kiln_dequantize_value(KILN_QF_INT4, false, qa, 5) == 1.0f);
}

static void test_int8_sym_tensor(void **state)
{
    (void)state;
    /* amax 3.96875 = 127 * 0.03125, so scale = 0.03125 exactly.
     * 1 / 0.03125 = 32; -2 -> -64; 0.5 -> 16; 3.96875 -> 127;
     * 0.046875 = 1.5 * s -> 2 (tie to even); 0.078125 = 2.5 * s -> 2 (tie to even);
     * -0.078125 -> -2. */
    float x[8] = {1, -2, 0.5f, 3.96875f, 0.046875f, 0.078125f, -0.078125f, 0};
    KilnQuantSpec s = spec(KILN_QF_INT8, true, KILN_GRAN_TENSOR, 0);
    int8_t q[8];
    float sc[1];
    KilnDiag d = {0};
    assert_int_equal(kiln_quantize_matrix(&s, x, 2, 4, q, sc, NULL, &d), 0);
    assert_true(sc[0] == 0.03125f);
    int8_t want[8] = {32, -64, 16, 127, 2, 2, -2, 0};
    assert_memory_equal(q, want, 8);
    float y[8];
    assert_int_equal(kiln_dequantize_matrix(&s, q, sc, NULL, 2, 4, y, &d), 0);
    assert_true(y[0] == 1.0f && y[1] == -2.0f && y[4] == 0.0625f && y[6] == -0.0625f);
}

static void test_int8_asym_tensor(void **state)
{
    (void)state;
    /* lo -1, hi 2.984375: hi - lo = 3.984375 = 255 * 2^-6, so scale = 0.015625;
     * zero = round(1 / 0.015625) = 64. codes: -1 -> -64+64 = 0; 0 -> 64;
     * 2.984375 -> 191+64 = 255; 1 -> 128; 0.5 -> 96. */
    float x[5] = {-1, 0, 2.984375f, 1, 0.5f};
    KilnQuantSpec s = spec(KILN_QF_INT8, false, KILN_GRAN_TENSOR, 0);
    uint8_t q[5];
    float sc;
    int32_t z;
    KilnDiag d = {0};
    assert_int_equal(kiln_quantize_matrix(&s, x, 1, 5, q, &sc, &z, &d), 0);
    assert_true(sc == 0.015625f);
    assert_int_equal(z, 64);
    uint8_t want[5] = {0, 64, 255, 128, 96};
    assert_memory_equal(q, want, 5);
    float y[5];
    assert_int_equal(kiln_dequantize_matrix(&s, q, &sc, &z, 1, 5, y, &d), 0);
    for (int i = 0; i < 5; i++)
        assert_true(y[i] == x[i]); /* every value sits on the grid */
    /* asymmetric without zero points is an error, not a crash */
    assert_int_equal(kiln_quantize_matrix(&s, x, 1, 5, q, &sc, NULL, &d), KILN_EINPUT);
    assert_non_null(strstr(d.msg, "zero points"));
}

static void test_int4_sym_group(void **state)
{
    (void)state;
    /* [2,4], group 2 -> 4 scales, row-major [N][K/g].
     * row 0 group 0 [0.875, -0.3125]: s = 0.875/7 = 0.125; codes 7, -2.5 -> -2 (even)
     * row 0 group 1 [1.75, 0.25]:     s = 0.25;  codes 7, 1
     * row 1 group 0 [0, 0]:           s = 1 (zero range); codes 0, 0
     * row 1 group 1 [-3.5, 1.25]:     s = 0.5;   codes -7, 2.5 -> 2
     * packed: row 0 (7, -2) -> 0x07 | 0xE0 = 0xE7, (7, 1) -> 0x17; row 1 0x00, (-7=0x9, 2) -> 0x29 */
    float x[8] = {0.875f, -0.3125f, 1.75f, 0.25f, 0, 0, -3.5f, 1.25f};
    KilnQuantSpec s = spec(KILN_QF_INT4, true, KILN_GRAN_GROUP, 2);
    KilnType t = kiln_type2(KILN_I4, 2, 4);
    t.q = s;
    assert_int_equal(kiln_type_nscales(&t), 4);
    assert_int_equal(kiln_tensor_bytes(&t), 4);
    uint8_t q[4];
    float sc[4];
    KilnDiag d = {0};
    assert_int_equal(kiln_quantize_matrix(&s, x, 2, 4, q, sc, NULL, &d), 0);
    uint8_t want[4] = {0xe7, 0x17, 0x00, 0x29};
    assert_memory_equal(q, want, 4);
    assert_true(sc[0] == 0.125f && sc[1] == 0.25f && sc[2] == 1.0f && sc[3] == 0.5f);
    assert_int_equal(kiln_code_get(KILN_I4, q, 1), -2);
    assert_int_equal(kiln_code_get(KILN_I4, q + 2, 2), -7);
    float y[8];
    assert_int_equal(kiln_dequantize_matrix(&s, q, sc, NULL, 2, 4, y, &d), 0);
    float ywant[8] = {0.875f, -0.25f, 1.75f, 0.25f, 0, 0, -3.5f, 1.0f};
    for (int i = 0; i < 8; i++)
        assert_true(y[i] == ywant[i]);
}

static void test_int4_asym_group_ragged(void **state)
{
    (void)state;
    /* [2,5], group 2: K = 2·2 + 1, so 3 groups per row, the last covering k = 4 alone;
     * scales/zeros row-major [N][ceil(K/g)] = [2][3].
     * row 0 g0 [-0.5, 1]:   range 1.5 = 15·0.1, s = 0.1, z = round(5) = 5; codes 0, 15
     *       g1 [0, 3]:      lo 0, s = 0.2, z 0; codes 0, 15
     *       g2 [-1.5]:      hi widened to 0, s = 0.1, z = 15; code 0
     * row 1 g0 [2, 2]:      lo 0, s = 2/15, z 0; codes 15, 15
     *       g1 [0, 0]:      zero range, s = 1, z 0; codes 0, 0
     *       g2 [0.75]:      lo 0, s = 0.05, z 0; code 15 (a group of 1 still uses 16 levels) */
    float x[10] = {-0.5f, 1, 0, 3, -1.5f, 2, 2, 0, 0, 0.75f};
    KilnQuantSpec s = spec(KILN_QF_INT4, false, KILN_GRAN_GROUP, 2);
    KilnType t = kiln_type2(KILN_U4, 2, 5);
    t.q = s;
    assert_int_equal(kiln_type_nscales(&t), 6);
    assert_int_equal(kiln_tensor_bytes(&t), 6);
    uint8_t q[6];
    float sc[6];
    int32_t z[6];
    KilnDiag d = {0};
    assert_int_equal(kiln_quantize_matrix(&s, x, 2, 5, q, sc, z, &d), 0);
    /* row 0 codes 0,15,0,15,0 -> 0xF0 0xF0 0x00; row 1 15,15,0,0,15 -> 0xFF 0x00 0x0F */
    uint8_t want[6] = {0xf0, 0xf0, 0x00, 0xff, 0x00, 0x0f};
    assert_memory_equal(q, want, 6);
    float swant[6] = {1.5f / 15, 3.0f / 15, 1.5f / 15, 2.0f / 15, 1.0f, 0.75f / 15};
    int32_t zwant[6] = {5, 0, 15, 0, 0, 0};
    for (int i = 0; i < 6; i++) {
        assert_true(sc[i] == swant[i]);
        assert_int_equal(z[i], zwant[i]);
    }
    float y[10];
    assert_int_equal(kiln_dequantize_matrix(&s, q, sc, z, 2, 5, y, &d), 0);
    for (int i = 0; i < 10; i++) /* every value is the group's min or max: exact up to rounding */
        assert_float_equal(y[i], x[i], 1e-6);
    /* the ragged group's own scale: dequantizing with row 0's tail as (0 - 15)·0.1 */
    assert_true(y[4] == (float)(0 - 15) * sc[2]);
}

static void test_int4_asym_channel_odd(void **state)
{
    (void)state;
    /* [2,5] per channel, 5 columns: rows are 3 bytes each, the last high nibble unused.
     * row 0 [-0.5, 0, 1.375, 0.25, 1]: range 1.875 = 15 * 0.125, s = 0.125,
     *   zero = round(0.5/0.125) = 4; codes 0, 4, 15, 6, 12.
     * row 1 [1, 2, 3, 3.75, 0]: lo widened to 0, s = 3.75/15 = 0.25, zero 0; codes 4, 8, 12, 15, 0. */
    float x[10] = {-0.5f, 0, 1.375f, 0.25f, 1, 1, 2, 3, 3.75f, 0};
    KilnQuantSpec s = spec(KILN_QF_INT4, false, KILN_GRAN_CHANNEL, 0);
    KilnType t = kiln_type2(KILN_U4, 2, 5);
    t.q = s;
    assert_int_equal(kiln_tensor_bytes(&t), 6);
    assert_int_equal(kiln_type_nscales(&t), 2);
    uint8_t q[6];
    float sc[2];
    int32_t z[2];
    KilnDiag d = {0};
    assert_int_equal(kiln_quantize_matrix(&s, x, 2, 5, q, sc, z, &d), 0);
    uint8_t want[6] = {0x40, 0x6f, 0x0c, 0x84, 0xfc, 0x00};
    assert_memory_equal(q, want, 6);
    assert_true(sc[0] == 0.125f && sc[1] == 0.25f);
    assert_int_equal(z[0], 4);
    assert_int_equal(z[1], 0);
    float y[10];
    assert_int_equal(kiln_dequantize_matrix(&s, q, sc, z, 2, 5, y, &d), 0);
    for (int i = 0; i < 10; i++)
        assert_true(y[i] == x[i]);
}

static void test_token_and_static(void **state)
{
    (void)state;
    /* per token on [3,2]: row amax 1.27 -> s 0.01; row of zeros -> s 1; row amax 254 -> s 2 */
    float x[6] = {1.27f, -0.5f, 0, 0, 254, -3};
    KilnQuantSpec s = spec(KILN_QF_INT8, true, KILN_GRAN_TOKEN, 0);
    s.dynamic = true;
    int8_t q[6];
    float sc[3];
    KilnDiag d = {0};
    assert_int_equal(kiln_quantize_matrix(&s, x, 3, 2, q, sc, NULL, &d), 0);
    assert_true(sc[0] == 1.27f / 127.0f && sc[1] == 1.0f && sc[2] == 2.0f);
    assert_int_equal(q[0], 127);
    assert_int_equal(q[1], -50);
    assert_int_equal(q[4], 127);
    assert_int_equal(q[5], -2); /* -1.5 -> -2 */
    /* static asym: scale 0.5 zero 3 for every slice; -3/0.5 + 3 = -3 -> clamp 0 */
    KilnQuantSpec st = spec(KILN_QF_INT8, false, KILN_GRAN_TOKEN, 0);
    st.scale = 0.5f;
    st.zero = 3;
    uint8_t u[6];
    int32_t z[3];
    assert_int_equal(kiln_quantize_matrix(&st, x, 3, 2, u, sc, z, &d), 0);
    assert_true(sc[0] == 0.5f && sc[2] == 0.5f && z[1] == 3);
    uint8_t uwant[6] = {6, 2, 3, 3, 255, 0}; /* 2.54 -> 3 +3; -1 +3; ...; 508 -> 255 */
    assert_memory_equal(u, uwant, 6);
    /* fp8 e4m3 per tensor: amax 896 -> s = 2; 896/2 = 448 -> 0x7e; -1/2 -> 0xb0 */
    KilnQuantSpec f8 = spec(KILN_QF_FP8_E4M3, true, KILN_GRAN_TENSOR, 0);
    float xf[2] = {896, -1};
    uint8_t c8[2];
    assert_int_equal(kiln_quantize_matrix(&f8, xf, 1, 2, c8, sc, NULL, &d), 0);
    assert_true(sc[0] == 2.0f);
    assert_int_equal(c8[0], 0x7e);
    assert_int_equal(c8[1], 0xb0);
}

static void test_nscales(void **state)
{
    (void)state;
    KilnType t = kiln_type2(KILN_I8, 3, 8);
    assert_int_equal(kiln_type_nscales(&t), 0); /* not quantized */
    t.q = spec(KILN_QF_INT8, true, KILN_GRAN_TENSOR, 0);
    assert_int_equal(kiln_type_nscales(&t), 1);
    t.q.gran = KILN_GRAN_TOKEN;
    assert_int_equal(kiln_type_nscales(&t), 3);
    t.q.gran = KILN_GRAN_CHANNEL;
    assert_int_equal(kiln_type_nscales(&t), 3);
    t.q = spec(KILN_QF_INT8, true, KILN_GRAN_GROUP, 4);
    assert_int_equal(kiln_type_nscales(&t), 6);
    t.q.group = 3; /* 8 = 3 + 3 + 2: a ragged last group per row */
    assert_int_equal(kiln_type_nscales(&t), 9);
    t.q.group = 0;
    assert_int_equal(kiln_type_nscales(&t), 0);
    KilnTensor tt;
    assert_int_equal(kiln_tensor_alloc(&tt, &t), KILN_EINPUT);
    t.q = spec(KILN_QF_INT4, false, KILN_GRAN_GROUP, 4);
    t.dt = KILN_U4;
    assert_int_equal(kiln_tensor_alloc(&tt, &t), 0);
    assert_int_equal(tt.nbytes, 12);
    assert_int_equal(tt.nscales, 6);
    assert_non_null(tt.zeros);
    kiln_tensor_free(&tt);
    t.q.symmetric = true;
    t.dt = KILN_I4;
    assert_int_equal(kiln_tensor_alloc(&tt, &t), 0);
    assert_null(tt.zeros);
    kiln_tensor_free(&tt);
    KilnType f = kiln_type1(KILN_BF16, 7);
    assert_int_equal(kiln_tensor_bytes(&f), 14);
    assert_int_equal(kiln_row_bytes(KILN_U4, 7), 4);
    assert_int_equal(kiln_row_bytes(KILN_F32, 7), 28);
}

static void test_int4_pack(void **state)
{
    (void)state;
    /* element 2j in the low nibble: (1, -1) -> 0xF1, (7, -8) -> 0x87, (3) -> 0x03 */
    int8_t v[5] = {1, -1, 7, -8, 3};
    uint8_t p[3];
    kiln_int4_pack(v, 5, p);
    uint8_t want[3] = {0xf1, 0x87, 0x03};
    assert_memory_equal(p, want, 3);
    int8_t back[5];
    kiln_int4_unpack(p, 5, true, back);
    assert_memory_equal(back, v, 5);
    kiln_int4_unpack(p, 5, false, back);
    int8_t uwant[5] = {1, 15, 7, 8, 3};
    assert_memory_equal(back, uwant, 5);
    uint8_t row[2] = {0xff, 0xff};
    kiln_code_set(KILN_U4, row, 2, 0x5);
    assert_int_equal(row[1], 0xf5);
    kiln_code_set(KILN_I4, row, 3, -2);
    assert_int_equal(row[1], 0xe5);
}

static void test_percentile(void **state)
{
    (void)state;
    /* |x| = 1..99 and one outlier -1000; p = 99 -> rank ceil(0.99*100) = 99 -> c = 99 */
    float x[100];
    for (int i = 0; i < 99; i++)
        x[i] = (float)(i + 1);
    x[99] = -1000;
    float lo, hi;
    kiln_slice_range(x, 100, 1, KILN_CAL_PERCENTILE, 99.0f, &lo, &hi);
    assert_true(lo == -99.0f && hi == 99.0f);
    kiln_slice_range(x, 100, 1, KILN_CAL_MINMAX, 0, &lo, &hi);
    assert_true(lo == -1000.0f && hi == 99.0f);
    kiln_slice_range(x, 100, 1, KILN_CAL_PERCENTILE, 100.0f, &lo, &hi);
    assert_true(lo == -1000.0f && hi == 99.0f);
    /* stride: every second element of [5, -7, 1, 100] -> {5, 1}: minmax lo widened to 0 */
    float xs[4] = {5, -7, 1, 100};
    kiln_slice_range(xs, 2, 2, KILN_CAL_MINMAX, 0, &lo, &hi);
    assert_true(lo == 0.0f && hi == 5.0f);
    /* 99.9 of 1000 values 1..1000 must give rank 999 although 99.9f > 99.9 */
    float *big = malloc(1000 * sizeof *big);
    for (int i = 0; i < 1000; i++)
        big[i] = (float)(1000 - i);
    kiln_slice_range(big, 1000, 1, KILN_CAL_PERCENTILE, 99.9f, &lo, &hi);
    assert_true(hi == 999.0f && lo == 0.0f);
    free(big);
    /* non-finite values are ignored */
    float nf[3] = {INFINITY, 2, NAN};
    kiln_slice_range(nf, 3, 1, KILN_CAL_MINMAX, 0, &lo, &hi);
    assert_true(lo == 0.0f && hi == 2.0f);
    /* percentile through quantize_matrix: int8 sym tensor pct=99 clips the outlier */
    KilnQuantSpec s = spec(KILN_QF_INT8, true, KILN_GRAN_TENSOR, 0);
    s.calib = KILN_CAL_PERCENTILE;
    s.pct = 99.0f;
    int8_t q[100];
    float sc;
    KilnDiag d = {0};
    assert_int_equal(kiln_quantize_matrix(&s, x, 1, 100, q, &sc, NULL, &d), 0);
    assert_true(sc == 99.0f / 127.0f);
    assert_int_equal(q[98], 127);
    assert_int_equal(q[99], -127);
}

static void test_errors(void **state)
{
    (void)state;
    float x[12] = {0};
    int8_t q[12];
    float sc[12];
    KilnDiag d = {0};
    KilnQuantSpec s = spec(KILN_QF_INT8, true, KILN_GRAN_GROUP, -2);
    assert_int_equal(kiln_quantize_matrix(&s, x, 3, 4, q, sc, NULL, &d), KILN_EINPUT);
    assert_non_null(strstr(d.msg, "group size -2"));
    assert_non_null(strstr(d.msg, "[3,4]"));
    /* a group wider than the row is one (ragged) group per row */
    s = spec(KILN_QF_INT8, true, KILN_GRAN_GROUP, 5);
    assert_int_equal(kiln_quantize_matrix(&s, x, 3, 4, q, sc, NULL, &d), 0);
    s = spec(KILN_QF_INT8, true, KILN_GRAN_AUTO, 0);
    assert_int_equal(kiln_quantize_matrix(&s, x, 3, 4, q, sc, NULL, &d), KILN_EINPUT);
    assert_non_null(strstr(d.msg, "auto"));
    s = spec(KILN_QF_NONE, true, KILN_GRAN_TENSOR, 0);
    assert_int_equal(kiln_quantize_matrix(&s, x, 3, 4, q, sc, NULL, &d), KILN_EINPUT);
    assert_non_null(strstr(d.msg, "none"));
    s = spec(KILN_QF_INT4, true, KILN_GRAN_GROUP, 0);
    assert_int_equal(kiln_dequantize_matrix(&s, q, sc, NULL, 3, 4, x, &d), KILN_EINPUT);
    assert_non_null(strstr(d.msg, "group size 0"));
}

static void test_error_stats(void **state)
{
    (void)state;
    /* err = [0,0,0,1]: max_abs 1, rel 1/4, SQNR = 10 log10(30/1) */
    float r[4] = {1, 2, 3, 4}, y[4] = {1, 2, 3, 5};
    KilnErrStats e = kiln_error_stats(r, y, 4);
    assert_true(e.max_abs == 1.0 && e.rel == 0.25);
    assert_float_equal(e.sqnr_db, 10.0 * log10(30.0), 1e-9);
    e = kiln_error_stats(r, r, 4);
    assert_true(e.max_abs == 0 && isinf(e.sqnr_db));
    (void)f32_bits;
}

/* ------------------------------------------------------------------ fast path vs definition */

/* kiln_quantize_matrix runs vectorized loops; the definition is per element:
 * finite min/max (0 included) -> kiln_qparams_from_range -> kiln_quantize_value ->
 * kiln_code_set. Percentile ranges come from kiln_slice_range with a stride of 1 in a
 * copy (the strided path is the definition's loop). */
static void ref_range(const float *x, int64_t n, const KilnQuantSpec *q, float *lo, float *hi)
{
    if (q->calib == KILN_CAL_PERCENTILE) {
        kiln_slice_range(x, n, 1, q->calib, q->pct, lo, hi);
        return;
    }
    if (q->calib == KILN_CAL_MSE) {
        kiln_calib_range(q, x, n, 1, lo, hi);
        return;
    }
    float mn = 0, mx = 0;
    for (int64_t i = 0; i < n; i++)
        if (isfinite(x[i])) {
            mn = x[i] < mn ? x[i] : mn;
            mx = x[i] > mx ? x[i] : mx;
        }
    *lo = mn;
    *hi = mx;
}

static void ref_quantize(const KilnQuantSpec *q, const float *x, int64_t rows, int64_t cols,
                         uint8_t *out, float *scales, int32_t *zeros)
{
    bool sym = q->symmetric || q->fmt == KILN_QF_FP8_E4M3 || q->fmt == KILN_QF_FP8_E5M2;
    KilnDType dt = kiln_qformat_storage(q->fmt, sym);
    size_t rb = kiln_row_bytes(dt, cols);
    bool fixed = !q->dynamic && q->scale > 0;
    bool tensor = q->gran == KILN_GRAN_TENSOR;
    int64_t len = tensor ? rows * cols : q->gran == KILN_GRAN_GROUP ? q->group : cols;
    int64_t per_row = tensor ? 0 : (cols + len - 1) / len; /* ragged last group */
    memset(out, 0, rb * (size_t)rows);
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < cols; c++) {
            int64_t si = tensor ? 0 : r * per_row + c / len;
            const float *s = tensor ? x : x + r * cols + (c / len) * len;
            int64_t sl = tensor ? len : cols - (c / len) * len < len ? cols - (c / len) * len : len;
            KilnQParams p = {q->scale, sym ? 0 : q->zero};
            if (!fixed) {
                float lo, hi;
                ref_range(s, sl, q, &lo, &hi);
                p = kiln_qparams_from_range(q->fmt, sym, lo, hi);
            }
            scales[si] = p.scale;
            if (zeros)
                zeros[si] = p.zero;
            kiln_code_set(dt, out + (size_t)r * rb, c,
                          kiln_quantize_value(q->fmt, sym, p, x[r * cols + c]));
        }
}

static uint32_t xorshift(uint32_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 17;
    *s ^= *s << 5;
    return *s;
}

/* Returns false (and says where) when the fast path differs from ref_quantize. */
static bool same_as_definition(const KilnQuantSpec *q, const float *x, int64_t rows, int64_t cols)
{
    bool sym = q->symmetric || q->fmt == KILN_QF_FP8_E4M3 || q->fmt == KILN_QF_FP8_E5M2;
    size_t nb = kiln_row_bytes(kiln_qformat_storage(q->fmt, sym), cols) * (size_t)rows;
    int64_t ns = q->gran == KILN_GRAN_TENSOR ? 1
                 : q->gran == KILN_GRAN_GROUP ? rows * ((cols + q->group - 1) / q->group)
                                              : rows;
    uint8_t *a = malloc(nb + 1), *b = malloc(nb + 1);
    float *sa = calloc((size_t)ns, sizeof *sa), *sb = calloc((size_t)ns, sizeof *sb);
    int32_t *za = calloc((size_t)ns, sizeof *za), *zb = calloc((size_t)ns, sizeof *zb);
    assert_true(a && b && sa && sb && za && zb);
    memset(b, 0xA5, nb); /* every byte must be written */
    KilnDiag d = {0};
    ref_quantize(q, x, rows, cols, a, sa, za);
    assert_int_equal(kiln_quantize_matrix(q, x, rows, cols, b, sb, zb, &d), 0);
    bool ok = memcmp(a, b, nb) == 0 && memcmp(sa, sb, sizeof *sa * (size_t)ns) == 0 &&
              memcmp(za, zb, sizeof *za * (size_t)ns) == 0;
    if (!ok) {
        size_t i = 0;
        while (i < nb && a[i] == b[i])
            i++;
        print_error("fast path differs: %s %ssym gran %s group %d [%lld,%lld]: first code byte "
                    "%zu: %02x, definition %02x\n",
                    kiln_qformat_name(q->fmt), q->symmetric ? "" : "a", kiln_gran_name(q->gran),
                    (int)q->group, (long long)rows, (long long)cols, i, i < nb ? b[i] : 0,
                    i < nb ? a[i] : 0);
    }
    free(a);
    free(b);
    free(sa);
    free(sb);
    free(za);
    free(zb);
    return ok;
}

static void random_matrices(int rounding)
{
    static const KilnQFormat fmts[] = {KILN_QF_INT8, KILN_QF_INT4, KILN_QF_FP8_E4M3,
                                       KILN_QF_FP8_E5M2};
    static const KilnGran grans[] = {KILN_GRAN_TENSOR, KILN_GRAN_CHANNEL, KILN_GRAN_TOKEN,
                                     KILN_GRAN_GROUP};
    static const int groups[] = {1, 3, 8, 32, 33, 64, 128};
    uint32_t seed = 0x9e3779b9u;
    assert_int_equal(fesetround(rounding), 0);
    int cases = 0;
    for (int f = 0; f < 4; f++)
        for (int sym = 0; sym < 2; sym++)
            for (int g = 0; g < 4; g++)
                for (int it = 0; it < 12; it++) {
                    KilnQuantSpec q = spec(fmts[f], sym, grans[g], 0);
                    int64_t rows = 1 + xorshift(&seed) % 6, cols = 1 + xorshift(&seed) % 300;
                    if (grans[g] == KILN_GRAN_GROUP) {
                        q.group = groups[xorshift(&seed) % 7];
                        cols = q.group * (1 + xorshift(&seed) % (it & 1 ? 3 : 9));
                        if (it % 4 == 1 && q.group > 1) /* a ragged last group */
                            cols += 1 + xorshift(&seed) % (uint32_t)(q.group - 1);
                    }
                    if (it == 5) { /* static scale (and zero point) */
                        q.scale = 0.0123f;
                        q.zero = sym ? 0 : fmts[f] == KILN_QF_INT4 ? 9 : 140;
                    }
                    if (it == 7) {
                        q.calib = KILN_CAL_PERCENTILE;
                        q.pct = 99.0f;
                    }
                    if (it == 9 && rounding == FE_TONEAREST) /* MSE clip per slice: the */
                        q.calib = KILN_CAL_MSE; /* definition is kiln_calib_range, test_quant.c */
                    float *x = malloc(sizeof *x * (size_t)(rows * cols));
                    assert_non_null(x);
                    /* magnitudes from tiny to huge; specials; exact .5 ties of the scale */
                    float mag = ldexpf(1.0f, (int)(xorshift(&seed) % 80) - 40);
                    for (int64_t i = 0; i < rows * cols; i++) {
                        uint32_t k = xorshift(&seed) % 64;
                        float v = (float)(int32_t)xorshift(&seed) * 0x1p-31f * mag;
                        v = k == 0   ? NAN
                            : k == 1 ? INFINITY
                            : k == 2 ? -INFINITY
                            : k == 3 ? 3e38f
                            : k == 4 ? -0.0f
                            : k == 5 ? 1e-42f
                            : k < 12 ? roundf(v * 8 / mag) * mag / 16
                                     : v;
                        x[i] = v;
                    }
                    if (it % 3 == 0) /* an all-zero row */
                        memset(x + (rows - 1) * cols, 0, sizeof *x * (size_t)cols);
                    if (it == 11) /* all of the slice non-finite */
                        for (int64_t c = 0; c < cols; c++)
                            x[c] = c & 1 ? NAN : -INFINITY;
                    bool ok = same_as_definition(&q, x, rows, cols);
                    free(x);
                    if (!ok) {
                        fesetround(FE_TONEAREST);
                        fail_msg("rounding mode %d, case %d", rounding, cases);
                    }
                    cases++;
                }
    assert_int_equal(fesetround(FE_TONEAREST), 0);
}

static void test_fast_random(void **state)
{
    (void)state;
    random_matrices(FE_TONEAREST);
}

/* The definition divides in the caller's rounding mode and rounds half to even
 * regardless of it; the fast path must do the same under every mode. */
static void test_fast_rounding_modes(void **state)
{
    (void)state;
    random_matrices(FE_UPWARD);
    random_matrices(FE_DOWNWARD);
    random_matrices(FE_TOWARDZERO);
}

static void sweep_check(const float *x, int n, uint64_t where)
{
    static const KilnQFormat fmts[] = {KILN_QF_FP8_E4M3, KILN_QF_FP8_E5M2, KILN_QF_INT8,
                                       KILN_QF_INT4};
    for (int f = 0; f < 4; f++)
        for (int sym = 0; sym < 2; sym++) {
            KilnQuantSpec q = spec(fmts[f], sym, KILN_GRAN_TENSOR, 0);
            q.scale = (where >> 21) & 1 ? 0.37f : 1.0f;
            q.zero = sym ? 0 : fmts[f] == KILN_QF_INT4 ? 3 : 100;
            if (!same_as_definition(&q, x, 1, n))
                fail_msg("bit sweep at 0x%08llx", (unsigned long long)where);
        }
}

/* Static scales of 1 (x/1 is x) and of 0.37 on f32 bit patterns: every 251st one
 * (NaNs, infinities, subnormals, every exponent), then every sign, exponent and top
 * five mantissa bits with the low 18 bits from a set holding the exact ties of every
 * format (FP8 normals at mantissa bit 19/20, subnormals and integers: few bits set). */
static void test_fast_bit_sweep(void **state)
{
    (void)state;
    enum { COLS = 1 << 15 };
    float *x = malloc(sizeof *x * COLS);
    assert_non_null(x);
    uint64_t n = 0;
    for (uint64_t base = 0; base < (1ull << 32); base += 251ull * COLS) {
        for (int i = 0; i < COLS; i++)
            x[i] = bits_f32((uint32_t)(base + 251ull * (uint64_t)i));
        sweep_check(x, COLS, base);
        n += COLS;
    }
    assert_true(n >= (1ull << 32) / 251); /* the loop covered the range */
    static const uint32_t low[8] = {0, 1, 0x1ffff, 0x20000, 0x20001, 0x3ffff, 0x10000, 0x30000};
    for (uint32_t part = 0; part < 4; part++) { /* 2^14 high parts x 8 low ones = 4 COLS */
        for (int i = 0; i < COLS; i++)
            x[i] = bits_f32(((part << 12 | (uint32_t)i >> 3) << 18) | low[i & 7]);
        sweep_check(x, COLS, 0);
        sweep_check(x, COLS, 1u << 21);
    }
    free(x);
}

/* kiln_slice_range's vector min/max against the definition's loop (stride 2 of a
 * copy with gaps runs the scalar loop over the same values). */
static void test_fast_slice_range(void **state)
{
    (void)state;
    uint32_t seed = 7;
    for (int it = 0; it < 200; it++) {
        int64_t n = 1 + xorshift(&seed) % 200;
        float *x = malloc(sizeof *x * (size_t)n), *y = calloc((size_t)(2 * n), sizeof *y);
        assert_true(x && y);
        for (int64_t i = 0; i < n; i++) {
            uint32_t k = xorshift(&seed) % 16;
            x[i] = k == 0 ? NAN : k == 1 ? -INFINITY : k == 2 ? -0.0f
                 : (float)(int32_t)xorshift(&seed) * (it & 1 ? 1e-3f : 1.0f);
            if (it % 4 == 0)
                x[i] = fabsf(x[i]); /* no negatives: lo must stay +0 */
            y[2 * i] = x[i];
        }
        float lo1, hi1, lo2, hi2;
        kiln_slice_range(x, n, 1, KILN_CAL_MINMAX, 0, &lo1, &hi1);
        kiln_slice_range(y, n, 2, KILN_CAL_MINMAX, 0, &lo2, &hi2);
        assert_true(f32_bits(lo1) == f32_bits(lo2) && f32_bits(hi1) == f32_bits(hi2));
        free(x);
        free(y);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fp8_encode_table),
        cmocka_unit_test(test_fp8_decode_table),
        cmocka_unit_test(test_fp8_specials),
        cmocka_unit_test(test_round_even),
        cmocka_unit_test(test_f16),
        cmocka_unit_test(test_bf16),
        cmocka_unit_test(test_formats),
        cmocka_unit_test(test_int8_sym_tensor),
        cmocka_unit_test(test_int8_asym_tensor),
        cmocka_unit_test(test_int4_sym_group),
        cmocka_unit_test(test_int4_asym_group_ragged),
        cmocka_unit_test(test_int4_asym_channel_odd),
        cmocka_unit_test(test_token_and_static),
        cmocka_unit_test(test_nscales),
        cmocka_unit_test(test_int4_pack),
        cmocka_unit_test(test_percentile),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_error_stats),
        cmocka_unit_test(test_fast_random),
        cmocka_unit_test(test_fast_rounding_modes),
        cmocka_unit_test(test_fast_bit_sweep),
        cmocka_unit_test(test_fast_slice_range),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
