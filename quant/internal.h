/* quant/internal.h — what the quant/ files share and quant.h does not export: spec
 * checks, per-slice scale choice, result allocation, and the arithmetic kernels. */
#ifndef KILN_QUANT_INTERNAL_H
#define KILN_QUANT_INTERNAL_H

#include "quant.h"

/* ------------------------------------------------------------------ rtn.c */

/* fp8 is always symmetric; integer formats as the spec says. */
bool kq_sym(const KilnQuantSpec *s);
/* 0, or a KilnDiag naming `who`: the format must be int8/int4/fp8, the granularity
 * tensor, channel or group (group > 0), N and K positive. */
int kq_check(const char *who, const KilnQuantSpec *s, int64_t N, int64_t K, KilnDiag *d);
/* Columns of one scale slice along a row (group: the group, else K) and slices per row
 * (the last one ragged when the group does not divide K). */
int64_t kq_slice_len(const KilnQuantSpec *s, int64_t K);
int64_t kq_nslices(const KilnQuantSpec *s, int64_t K);
/* Scale and zero point of the slice x[0,n) exactly as kiln_quantize_matrix chooses them:
 * a static spec scale as given, else kiln_calib_range + kiln_qparams_from_range. */
KilnQParams kq_slice_params(const KilnQuantSpec *s, const float *x, int64_t n);
/* out[N,K] = the round-to-nearest dequantized weight (kiln_quant_rtn's w) without codes. */
void kq_fake_quant_matrix(const KilnQuantSpec *s, const float *W, int64_t N, int64_t K,
                          float *out);
/* Arrays of a result for N x K with ngroups scales per row; zero points unless symmetric,
 * perm when asked. Error (out of memory) leaves *r zeroed. */
int kq_result_alloc(KilnQResult *r, int64_t N, int64_t K, int64_t ngroups, bool zeros, bool perm,
                    KilnDiag *d);
/* At most max rows of X[rows,K], evenly spaced (row i*rows/m), copied into a new array
 * (*m rows); NULL when out of memory. */
float *kq_sample_rows(const float *X, int64_t rows, int64_t K, int64_t max, int64_t *m);

/* ------------------------------------------------------------------ kernels.c */

/* Each kernel has a scalar reference (_ref) and an AVX2 path taken when the CPU has
 * AVX2; both do the same operations in the same order (multiplies and adds, never fused),
 * so they agree bit for bit and a result does not depend on the machine. */
bool kq_have_avx2(void);

/* sum a[i]*b[i]: 16 partial sums (lane i % 16), then lanes 0..15 in order. */
double kq_dot_f64(const double *a, const double *b, int64_t n);
double kq_dot_f64_ref(const double *a, const double *b, int64_t n);

/* w[j] -= e[0]*U[j] ... e[nb-1]*U[(nb-1)*ldu + j] for j < len, in b order per element:
 * GPTQ's lazy batch update of one row. */
void kq_sub_rows(float *w, const float *e, const float *U, int64_t ldu, int64_t nb, int64_t len);
void kq_sub_rows_ref(float *w, const float *e, const float *U, int64_t ldu, int64_t nb,
                     int64_t len);

/* sum over r < R, n < N of (X_r · E_n)^2, X_r = X + r*ldx, E_n = E + n*lde, K long: the
 * squared Frobenius norm of X Eᵀ. Dots in f32 (8 lanes), squares and sums in f64: per r
 * over n in order, then over r in order. */
double kq_sq_norm_xet(const float *X, int64_t R, int64_t ldx, const float *E, int64_t N,
                      int64_t lde, int64_t K);
double kq_sq_norm_xet_ref(const float *X, int64_t R, int64_t ldx, const float *E, int64_t N,
                          int64_t lde, int64_t K);

/* out[m] = E_mᵀ G E_m for M rows E_m = E + m*lde of len, G[len*len] symmetric: the
 * output error of weight errors E_m on inputs with Gram matrix G. Per m: the sum over a
 * in order (f64) of E_m[a] times the f32 dot of E_m and row a of G (8 lanes). */
void kq_quad_forms(const float *E, int64_t M, int64_t lde, const float *G, int64_t len, double *out);
void kq_quad_forms_ref(const float *E, int64_t M, int64_t lde, const float *G, int64_t len,
                       double *out);

/* C[i][j] += sum_r P[r][i] * P[r][j] for the upper panels of a symmetric C[kp*kp]
 * (kp = a multiple of 8): P is R rows of kp doubles stored as kp/8 panels of [R][8];
 * for every column panel jb, rows i of panels ib <= jb. Per element: a sum over r in
 * order from 0, then added to C. */
void kq_syrk_panels(double *C, const double *P, int64_t R, int64_t kp);
void kq_syrk_panels_ref(double *C, const double *P, int64_t R, int64_t kp);

#endif
