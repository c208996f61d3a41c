/* ir/numerics.h — the one definition of kiln's scalar numerics: rounding, f16/bf16,
 * FP8 E4M3/E5M2, INT8/INT4 quantize/dequantize, INT4 packing, and scale/zero-point
 * choice per granularity. The interpreter, weight folding, prepacking and every
 * kernel generator's tests use these and nothing else. libc only. */
#ifndef KILN_NUMERICS_H
#define KILN_NUMERICS_H

#include "ir.h"

/* Round half to even, independent of the current FP rounding mode. */
float kiln_round_even(float x);

/* IEEE binary16 and bfloat16, round-to-nearest-even; NaN stays NaN, overflow to Inf. */
uint16_t kiln_f32_to_f16(float x);
float kiln_f16_to_f32(uint16_t h);
uint16_t kiln_f32_to_bf16(float x);
float kiln_bf16_to_f32(uint16_t b);
/* Round x to the precision of dt (f32: x; f16/bf16: through the 16-bit format). */
float kiln_round_to(KilnDType dt, float x);

/* FP8. E4M3 "fn": bias 7, no Inf, 0x7F/0xFF NaN, max 448. E5M2: bias 15, IEEE-like,
 * Inf 0x7C/0xFC, max 57344. Encoders round to nearest even and saturate: anything
 * past the max (Inf too) becomes the largest finite value of its sign; NaN -> 0x7F.
 * Bit-exact with NVIDIA's __nv_cvt_float_to_fp8(x, __NV_SATFINITE, ...). */
uint8_t kiln_fp8_e4m3_encode(float x);
float kiln_fp8_e4m3_decode(uint8_t b);
uint8_t kiln_fp8_e5m2_encode(float x);
float kiln_fp8_e5m2_decode(uint8_t b);
#define KILN_E4M3_MAX 448.0f
#define KILN_E5M2_MAX 57344.0f

/* Integer code range of a format. Symmetric formats use the restricted range
 * [-qmax, qmax] (int8: ±127, int4: ±7) so that -x quantizes to -q; asymmetric use
 * [0, 2^bits-1]. For fp8, qmax is the largest finite value (448 / 57344). */
int kiln_qformat_bits(KilnQFormat f);
float kiln_qformat_qmax(KilnQFormat f, bool symmetric);
int32_t kiln_qformat_qmin(KilnQFormat f, bool symmetric);

/* Scale and zero point of one slice. */
typedef struct KilnQParams {
    float scale;
    int32_t zero; /* 0 when symmetric */
} KilnQParams;

/* Range of a slice of n values starting at x with the given stride, by rule:
 * minmax: lo = min, hi = max; percentile(p): hi/lo = the p-th percentile of |x|
 * with sign (lo = -p-th of |x| on the negative side, hi on the positive side;
 * see numerics.c for the exact definition). lo <= 0 <= hi always (zero is included
 * so that 0.0 is exactly representable). */
void kiln_slice_range(const float *x, int64_t n, int64_t stride, KilnCalib calib, float pct,
                      float *lo, float *hi);

/* Range of a slice for spec q's calib rule (same contract as kiln_slice_range):
 * minmax and percentile as kiln_slice_range; mse: the clip of the minmax range
 * [r*min, r*max] (for symmetric formats that is r*absmax), r on a grid of 100 ratios in
 * (0,1], that minimises sum (x - dequant(quant(x)))^2 under q's format, symmetry and the
 * scale kiln_qparams_from_range gives; r = 1 (minmax) unless a smaller clip is strictly
 * better. At most 65536 values enter the error (every ceil(n/65536)-th, deterministic);
 * min and max come from all of them. Defined in calib.c. */
void kiln_calib_range(const KilnQuantSpec *q, const float *x, int64_t n, int64_t stride,
                      float *lo, float *hi);

/* out[i] = kiln_dequantize_value(f, sym, p, kiln_quantize_value(f, sym, p, x[i])), bit
 * for bit, vectorized (out may be x). The error a format makes on data: calibration
 * searches and the quant/ methods use it. Defined in calib.c. */
void kiln_fake_quantize(KilnQFormat f, bool symmetric, KilnQParams p, const float *x, int64_t n,
                        float *out);

/* Scale/zero from a range. symmetric: scale = max(|lo|,|hi|)/qmax, zero 0.
 * asymmetric: scale = (hi-lo)/(2^bits-1), zero = clamp(round_even(-lo/scale), 0, 2^bits-1).
 * A zero range gives scale 1 (all codes 0 / the zero point). */
KilnQParams kiln_qparams_from_range(KilnQFormat f, bool symmetric, float lo, float hi);

/* The static scale (and zero point) of spec q calibrated on n values: q's calib rule
 * for the range (kiln_calib_range), the format's scale for it (kiln_qparams_from_range).
 * kiln_layer_create and `kiln quantize` both take a layer's static activation scale
 * from here, so a checkpoint stores the scale kiln runs with. Defined in calib.c. */
KilnQParams kiln_calib_static(const KilnQuantSpec *q, const float *x, int64_t n);

/* One value. Integer formats: clamp(round_even(x/scale) + zero, qmin, qmax).
 * fp8: encode(x/scale) (zero ignored). Returns the code (fp8: the byte). */
int32_t kiln_quantize_value(KilnQFormat f, bool symmetric, KilnQParams p, float x);
/* Integer: (code - zero) * scale. fp8: decode(code) * scale. */
float kiln_dequantize_value(KilnQFormat f, bool symmetric, KilnQParams p, int32_t code);

/* Quantize a row-major float matrix x[rows, cols] per spec (spec->gran: tensor,
 * channel = per row, token = per row, group = per (row, cols/group)). For a static
 * spec with spec->scale > 0 that scale (and spec->zero) is used for every slice;
 * otherwise scales come from the data by spec->calib. Writes codes into out
 * (storage layout of kiln_qformat_storage; int4 packed per ir.h) and scales/zeros
 * (zeros may be NULL for symmetric) of kiln_type_nscales entries.
 * A group that does not divide cols leaves a ragged last group per row (cols mod
 * group elements, its own scale). Errors: group <= 0, gran auto, fmt none. */
int kiln_quantize_matrix(const KilnQuantSpec *spec, const float *x, int64_t rows, int64_t cols,
                         void *out, float *scales, int32_t *zeros, KilnDiag *d);
/* The inverse: codes + scales + zeros -> float matrix. */
int kiln_dequantize_matrix(const KilnQuantSpec *spec, const void *codes, const float *scales,
                           const int32_t *zeros, int64_t rows, int64_t cols, float *out,
                           KilnDiag *d);

/* kiln_quantize_matrix with the scales (and zeros, asymmetric int) given, one per
 * slice as kiln_quantize_matrix writes them: the codes of a grid chosen elsewhere
 * (GPTQ, a checkpoint). Quantizing scale·(code − zero) gives back the code. */
int kiln_quantize_matrix_with(const KilnQuantSpec *spec, const float *x, int64_t rows,
                              int64_t cols, const float *scales, const int32_t *zeros, void *out,
                              KilnDiag *d);

/* Read element i of a row of codes stored as dt (i8/u8/i4/u4/e4m3/e5m2) as an
 * int32 code; write likewise. Rows of i4/u4 are packed per ir.h. */
int32_t kiln_code_get(KilnDType dt, const void *row, int64_t i);
void kiln_code_set(KilnDType dt, void *row, int64_t i, int32_t code);
/* Bytes of one row of `cols` codes of dt (i4/u4: (cols+1)/2). */
size_t kiln_row_bytes(KilnDType dt, int64_t cols);

/* INT4 packing of a plain array: out[j] = (v[2j] & 0xF) | (v[2j+1] << 4); an odd
 * tail leaves the high nibble 0. Unpack sign-extends for i4, zero-extends for u4. */
void kiln_int4_pack(const int8_t *v, int64_t n, uint8_t *out);
void kiln_int4_unpack(const uint8_t *in, int64_t n, bool is_signed, int8_t *v);

/* Quality of an approximation y of reference x: max |x-y|, max |x-y| / max|x|,
 * and SQNR = 10 log10(sum x^2 / sum (x-y)^2) dB (Inf when equal). */
typedef struct KilnErrStats {
    double max_abs, rel, sqnr_db;
} KilnErrStats;
KilnErrStats kiln_error_stats(const float *ref, const float *y, int64_t n);

#endif
