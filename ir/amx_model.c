/* ir/amx_model.c — the scalar model of the AMX tile instructions (amx_model.h).
 *
 * Semantics, from the Operation sections of the Intel SDM (vol. 2: LDTILECFG,
 * TILELOADD, TILESTORED, TILEZERO, TDPBSSD/TDPBSUD/TDPBUSD/TDPBUUD, TDPBF16PS):
 *  - A tile is rows x colsb bytes. tileloadd reads row r from base + r*stride, colsb
 *    bytes; the rest of the row and the rows past `rows` become zero
 *    (write_row_and_zero, zero_upper_rows). tilestored writes rows x colsb bytes.
 *  - tdpbusd and its three siblings: for each row m of dst, each dword k of a's row
 *    (k < a.colsb/4) and each dword n of dst's row (n < dst.colsb/4):
 *        dst.dword[m][n] += x0*y0 + x1*y1 + x2*y2 + x3*y3
 *    with x = the four bytes of a.row[m].dword[k], y = those of b.row[k].dword[n],
 *    zero- or sign-extended to 32 bits per the instruction (us: a unsigned, b
 *    signed). The sum wraps modulo 2^32 (no saturation); every product fits 17 bits,
 *    so for kiln's sums (|sum| < 2^31) the result is the exact integer.
 *  - tdpbf16ps: each dword is a pair of bf16 (low half first). The SDM writes, for k
 *    in order, two accumulations per pair,
 *        dst.fp32[m][n] += make_fp32(a.bf16[m][2k+0]) * make_fp32(b.bf16[k][2n+0])
 *        dst.fp32[m][n] += make_fp32(a.bf16[m][2k+1]) * make_fp32(b.bf16[k][2n+1])
 *    with make_fp32 putting the bf16 in the upper half of an f32, "Round to nearest even
 *    ... when doing each accumulation of the FMA. Output denormals are always flushed
 *    to zero and input denormals are always treated as zero. MXCSR is not consulted
 *    nor updated." A Sapphire Rapids core (family 6 model 167 as KVM reports it, probed through
 *    _tile_dpbf16ps under KVM, 2026-12) rounds differently: the pair's two products
 *    (exact: at most 16 significant bits each) are summed and rounded to f32 (nearest
 *    even) first, then added to the accumulator with one more rounding:
 *        acc = RNE(acc + RNE(p0 + p1))
 *    (1 + (2^-24 + 2^-24) = 1 + 2^-23 where two accumulations give 1; 2^-24 + (1 +
 *    2^-25) = 1, so the pair is rounded before the add, not summed with acc exactly).
 *    The model computes that, pair after pair: bf16 inputs and the accumulator with a
 *    zero exponent read as signed zero, a denormal pair sum or result becomes a zero of
 *    its sign. For one pair per instruction (colsb 4) it matched the core on 20,000
 *    random operands; with more pairs per instruction the core sums them in an order
 *    or precision not found yet (2, 4, 16 pairs: 18 %, 40 %, 65 % of random results
 *    differ in the last bits, as they do for one exact rounding of the whole sum), so
 *    kiln's tests hold the AMX bf16 kernels to the float bound (docs/numerics.md),
 *    never to the model bit for bit.
 *  - Faults: the instructions raise #UD when the shapes do not fit (dst.rows !=
 *    a.rows, dst.colsb != b.colsb, a.colsb != 4*b.rows, beyond palette 1's 16 rows
 *    or 64 bytes); the model leaves dst unchanged and counts the fault instead.
 *  - start_row (restart after an interrupt) is not modelled: an uninterrupted
 *    instruction starts at row 0 and leaves start_row 0. */
#include "amx_model.h"

#include <math.h>
#include <stdbool.h>
#include <string.h>

static _Thread_local int64_t faults;

int64_t kiln_amx_model_faults(void) { return faults; }

static bool shape_ok(int32_t rows, int32_t colsb)
{
    return rows >= 1 && rows <= KILN_AMX_MAX_ROWS && colsb >= 1 && colsb <= KILN_AMX_MAX_COLSB;
}

int kiln_amx_cfg_check(const KilnAmxCfg *c)
{
    if (c->palette == 0)
        return 0;
    if (c->palette != 1)
        return -1;
    for (int i = 0; i < 14; i++)
        if (c->reserved[i])
            return -1;
    for (int i = 0; i < 16; i++) {
        bool used = c->rows[i] || c->colsb[i];
        if (!used)
            continue;
        if (i >= KILN_AMX_TILES || !shape_ok(c->rows[i], c->colsb[i]))
            return -1;
    }
    return 0;
}

int kiln_amx_ldtilecfg(const KilnAmxCfg *c, KilnAmxTile t[KILN_AMX_TILES])
{
    if (kiln_amx_cfg_check(c)) {
        faults++;
        return -1;
    }
    for (int i = 0; i < KILN_AMX_TILES; i++) {
        memset(&t[i], 0, sizeof t[i]);
        t[i].rows = c->palette ? c->rows[i] : 0;
        t[i].colsb = c->palette ? c->colsb[i] : 0;
    }
    return 0;
}

void kiln_amx_tilezero(KilnAmxTile *t, int32_t rows, int32_t colsb)
{
    if (!shape_ok(rows, colsb)) {
        faults++;
        return;
    }
    memset(t, 0, sizeof *t);
    t->rows = rows;
    t->colsb = colsb;
}

void kiln_amx_tileloadd(KilnAmxTile *t, int32_t rows, int32_t colsb, const void *base,
                        int64_t stride)
{
    if (!shape_ok(rows, colsb)) {
        faults++;
        return;
    }
    memset(t, 0, sizeof *t);
    t->rows = rows;
    t->colsb = colsb;
    for (int32_t r = 0; r < rows; r++)
        memcpy(t->data[r], (const uint8_t *)base + (int64_t)r * stride, (size_t)colsb);
}

void kiln_amx_tilestored(int32_t rows, int32_t colsb, void *base, int64_t stride,
                         const KilnAmxTile *t)
{
    if (!shape_ok(rows, colsb) || rows != t->rows || colsb != t->colsb) {
        faults++;
        return;
    }
    for (int32_t r = 0; r < rows; r++)
        memcpy((uint8_t *)base + (int64_t)r * stride, t->data[r], (size_t)colsb);
}

/* The #UD shape rules shared by every dot product; m, n, k as the intrinsics give
 * them must also be the tiles' own shapes. */
static bool dot_shapes_ok(const KilnAmxTile *c, int32_t m, int32_t n, int32_t k,
                          const KilnAmxTile *a, const KilnAmxTile *b)
{
    return shape_ok(m, n) && shape_ok(m, k) && c->rows == m && c->colsb == n && a->rows == m &&
           a->colsb == k && b->colsb == n && k % 4 == 0 && n % 4 == 0 && b->rows == k / 4;
}

static int32_t byte_val(uint8_t v, bool sgn) { return sgn ? (int32_t)(int8_t)v : (int32_t)v; }

static void dot_i8(KilnAmxTile *c, int32_t m, int32_t n, int32_t k, const KilnAmxTile *a,
                   const KilnAmxTile *b, bool sa, bool sb)
{
    if (!dot_shapes_ok(c, m, n, k, a, b)) {
        faults++;
        return;
    }
    for (int32_t r = 0; r < m; r++)
        for (int32_t kk = 0; kk < k / 4; kk++)
            for (int32_t nn = 0; nn < n / 4; nn++) {
                uint32_t acc;
                memcpy(&acc, &c->data[r][4 * nn], 4);
                for (int i = 0; i < 4; i++) /* modulo 2^32, as the hardware wraps */
                    acc += (uint32_t)(byte_val(a->data[r][4 * kk + i], sa) *
                                      byte_val(b->data[kk][4 * nn + i], sb));
                memcpy(&c->data[r][4 * nn], &acc, 4);
            }
}

void kiln_amx_tdpbusd(KilnAmxTile *c, int32_t m, int32_t n, int32_t k, const KilnAmxTile *a,
                      const KilnAmxTile *b)
{
    dot_i8(c, m, n, k, a, b, false, true);
}

void kiln_amx_tdpbssd(KilnAmxTile *c, int32_t m, int32_t n, int32_t k, const KilnAmxTile *a,
                      const KilnAmxTile *b)
{
    dot_i8(c, m, n, k, a, b, true, true);
}

void kiln_amx_tdpbsud(KilnAmxTile *c, int32_t m, int32_t n, int32_t k, const KilnAmxTile *a,
                      const KilnAmxTile *b)
{
    dot_i8(c, m, n, k, a, b, true, false);
}

void kiln_amx_tdpbuud(KilnAmxTile *c, int32_t m, int32_t n, int32_t k, const KilnAmxTile *a,
                      const KilnAmxTile *b)
{
    dot_i8(c, m, n, k, a, b, false, false);
}

/* An f32 with its denormals read (or written) as a zero of the same sign. */
static float flush(float x)
{
    return fpclassify(x) == FP_SUBNORMAL ? copysignf(0.0f, x) : x;
}

static float make_fp32(const uint8_t *p)
{
    uint16_t h;
    memcpy(&h, p, 2);
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return flush(f);
}

void kiln_amx_tdpbf16ps(KilnAmxTile *c, int32_t m, int32_t n, int32_t k, const KilnAmxTile *a,
                        const KilnAmxTile *b)
{
    if (!dot_shapes_ok(c, m, n, k, a, b)) {
        faults++;
        return;
    }
    for (int32_t r = 0; r < m; r++)
        for (int32_t kk = 0; kk < k / 4; kk++)
            for (int32_t nn = 0; nn < n / 4; nn++) {
                float acc;
                memcpy(&acc, &c->data[r][4 * nn], 4);
                acc = flush(acc);
                /* the products are exact in double, and so is their sum but where one
                 * is below 2^-37 of the other, which then cannot move the f32 rounding */
                double p0 = (double)make_fp32(&a->data[r][4 * kk]) * make_fp32(&b->data[kk][4 * nn]);
                double p1 = (double)make_fp32(&a->data[r][4 * kk + 2]) * make_fp32(&b->data[kk][4 * nn + 2]);
                acc = flush(acc + flush((float)(p0 + p1)));
                memcpy(&c->data[r][4 * nn], &acc, 4);
            }
}
