/* quant/quant.h — calibrated quantization: round to nearest, GPTQ, AWQ, SmoothQuant
 * factors, LLM.int8() outlier columns, and the activation statistics they feed on.
 * Pure C on f32/f64 arrays; every scale, rounding and code comes from ir/numerics.h, so
 * what these return is exactly what kiln's kernels compute. docs/quant.md is the
 * user's view (the math, the options, the papers). Weights are W[N,K] row-major
 * (PyTorch Linear: N outputs, K inputs); activations X[rows,K]. Functions are
 * reentrant: callers may run layers on several threads. */
#ifndef KILN_QUANT_H
#define KILN_QUANT_H

#include "ir/numerics.h"

/* ------------------------------------------------------------------ results (rtn.c) */

/* One weight W[N,K] quantized under a KilnQuantSpec (int8, int4, fp8; tensor, channel
 * or group granularity; a group that does not divide K leaves a ragged last group). */
typedef struct KilnQResult {
    int64_t N, K;
    int64_t ngroups; /* scales per row: 1 for tensor and channel, ceil(K/group) for group */
    float *w;        /* [N*K] dequantized: kiln_dequantize_value(codes) bit for bit */
    int16_t *codes;  /* [N*K] integer codes (int8 sym -127..127, asym 0..255, int4 -7..7 /
                        0..15), fp8: the byte 0..255 */
    float *scale;    /* [N*ngroups] (tensor: N equal entries) */
    int32_t *zero;   /* [N*ngroups], NULL when symmetric (and for fp8) */
    int32_t *perm;   /* NULL, or [K] when GPTQ act-order permuted the groups: w, codes and
                        the groups are in permuted column order, column j of them is
                        original column perm[j]; y = x[:, perm] · wᵀ */
    /* The codes packed by kiln_qresult_pack (codes is then NULL): code i is packed_lo plus
     * the i-th field of packed_bits bits (4: two a byte, the even code in the low nibble;
     * 8: a byte). Read them with kiln_qresult_codes, packed or not. */
    uint8_t *packed;
    int packed_bits;
    int32_t packed_lo;
} KilnQResult;

/* Frees the arrays and zeroes *r (NULL and a zeroed result are fine). */
void kiln_qresult_free(KilnQResult *r);

/* r->codes packed into the fewest bits their range needs, 4 or 8 (int4: half a byte a
 * code, int8 and fp8: a byte; GPTQ's result kept for binding, docs/hardening.md "Memory"),
 * then freed; codes whose range needs more stay as they are. Lossless. */
int kiln_qresult_pack(KilnQResult *r, KilnDiag *d);
/* Codes [i0, i0 + n) of r, row-major over [N,K], as int16, whether packed or not. */
void kiln_qresult_codes(const KilnQResult *r, int64_t i0, int64_t n, int16_t *out);

/* Round to nearest: the codes, scales and zero points kiln_quantize_matrix computes
 * (spec->calib applies: minmax, percentile or mse; a static spec->scale is used as is). */
int kiln_quant_rtn(const float *W, int64_t N, int64_t K, const KilnQuantSpec *spec,
                   KilnQResult *out, KilnDiag *d);

/* ------------------------------------------------------------------ statistics (actstats.c) */

/* Streaming statistics of one layer input X[rows,K], fed batch by batch: the Gram
 * matrix XᵀX (double), per-column max |x| and sum |x|, and a reservoir of up to
 * max_rows sample rows (uniform over all rows seen; fixed seed, so deterministic).
 * Non-finite values are skipped in absmax/mean; they make the Gram matrix non-finite
 * (GPTQ then reports it). Memory: K*K doubles with the Hessian, max_rows*K floats. */
typedef struct KilnActStats {
    int64_t K;
    int64_t rows;       /* rows seen */
    float *absmax;      /* [K] max |x| per column */
    double *abssum;     /* [K] sum |x| per column */
    float *sample;      /* [max_rows*K] reservoir rows (the first nsample are valid) */
    int64_t nsample, max_rows;
    /* internal: upper panels of XᵀX (kp*kp, kp = K rounded up to 8), the f64 panel
     * buffer of one chunk of rows, and the reservoir's random state */
    double *xtx, *panel;
    int64_t kp;
    uint64_t rng;
} KilnActStats;

/* want_hessian false: no XᵀX (AWQ and SmoothQuant need only absmax/mean and samples).
 * max_rows 0: no reservoir. */
int kiln_actstats_init(KilnActStats *s, int64_t K, bool want_hessian, int64_t max_rows,
                       KilnDiag *d);
/* Adds rows x[rows,K]. O(rows*K*K/2) for the Hessian: 4096 rows at K = 1536 take
 * about half a second on one AVX2 core. */
void kiln_actstats_add(KilnActStats *s, const float *x, int64_t rows);
/* H[K*K] = 2/rows · XᵀX (GPTQ's Hessian of the layer's squared output error), full
 * symmetric. Error when the stats have no Hessian or no rows. */
int kiln_actstats_hessian(const KilnActStats *s, double *H, KilnDiag *d);
/* xmean[K] = mean |x| per column (0 before any row). */
void kiln_actstats_mean_abs(const KilnActStats *s, float *xmean);
void kiln_actstats_free(KilnActStats *s);

/* ------------------------------------------------------------------ GPTQ (gptq.c) */

typedef struct KilnGptqOpts {
    float damp;         /* λ = damp · mean(diag H) added to diag H; 0.01 */
    int block;          /* columns per lazy batch update; 128 */
    bool act_order;     /* columns in order of descending diag(H) */
    bool static_groups; /* with act_order and groups: the group grid comes from the original
                           W on the original contiguous groups (llm-compressor's "weight"
                           actorder, perm NULL); false: groups over the permuted order
                           (AutoGPTQ desc_act, the result carries perm) */
} KilnGptqOpts;
#define KILN_GPTQ_DEFAULTS ((KilnGptqOpts){.damp = 0.01f, .block = 128})

/* GPTQ (Frantar et al. 2022, arXiv 2210.17323): quantize W column by column, each
 * column's rounding error compensated on the columns not yet quantized through the
 * upper Cholesky factor of H⁻¹, minimising ||X Wᵀ − X Ŵᵀ||². H[K*K] is the layer's
 * Hessian (kiln_actstats_hessian; any positive scale of XᵀX gives the same result).
 * Columns with H_ii = 0 never see input: they are set to 0. Errors (bad spec or
 * options, H not positive definite after damping, out of memory) go to d. */
int kiln_quant_gptq(const float *W, int64_t N, int64_t K, const double *H,
                    const KilnQuantSpec *spec, const KilnGptqOpts *o, KilnQResult *out,
                    KilnDiag *d);
/* kiln_quant_gptq for a caller done with H: its K×K doubles become the working matrix
 * the factorisation runs in (H reordered in place), instead of a second K×K copy (the
 * same results, bit for bit); H holds no Hessian afterwards. For K = 1536 that copy is
 * 19 MB, for K = 14336 1.6 GB. */
int kiln_quant_gptq_consume(const float *W, int64_t N, int64_t K, double *H,
                            const KilnQuantSpec *spec, const KilnGptqOpts *o, KilnQResult *out,
                            KilnDiag *d);

/* ------------------------------------------------------------------ AWQ (awq.c) */

typedef struct KilnAwqOpts {
    int grid;         /* alpha on {0, 1/grid, ..., 1}; 20 */
    bool clip;        /* run kiln_awq_clip (the caller does, on the scaled weights) */
    int clip_grid;    /* clip ratios 1 - i/clip_grid; 20 */
    float clip_min;   /* smallest clip ratio tried (exclusive, as AutoAWQ's max_shrink); 0.5 */
    int64_t max_rows; /* rows of X used (evenly spaced, deterministic); 256 */
} KilnAwqOpts;
#define KILN_AWQ_DEFAULTS \
    ((KilnAwqOpts){.grid = 20, .clip = true, .clip_grid = 20, .clip_min = 0.5f, .max_rows = 256})

/* AWQ's scale search (Lin et al. 2023, arXiv 2306.00978) for nl layers that share one
 * input (e.g. q, k, v): W[l] is [N[l], K]; X[rows,K] sample rows of that input; xmean[K]
 * the mean |x| per column. For alpha on the grid, s = max(xmean^alpha, 1e-4) normalised
 * by sqrt(max(s)·min(s)); the loss is sum_l ||X W[l]ᵀ − (X/s) Q(W[l]·diag(s))ᵀ||² with Q
 * round to nearest under spec. Writes the best s[K] (alpha 0: all ones), its alpha and
 * loss / loss(alpha = 0) (1 when both are 0). The caller divides the input by s (folding
 * it into the previous op) and multiplies W's columns by s. */
int kiln_awq_search(const float *const *W, const int64_t *N, int nl, int64_t K, const float *X,
                    int64_t rows, const float *xmean, const KilnQuantSpec *spec,
                    const KilnAwqOpts *o, float *s, float *alpha, double *loss_ratio,
                    KilnDiag *d);

/* AWQ's clipping search for one weight W[N,K] that is already scaled (pass the input
 * the same way: X/s): per row and scale group, the weights are clamped to ±r·max|w| for
 * r = 1 - i/clip_grid > clip_min, the r with the least error of that group's output
 * contribution on X (||X_g (w_g − Q(clamp_r w_g))||²) wins; W is clamped in place, so
 * quantizing it afterwards (RTN, same spec) gives those codes. r = 1 is a candidate and
 * wins ties: no group's error grows. Tensor granularity clamps the whole matrix at one r. */
int kiln_awq_clip(float *W, int64_t N, int64_t K, const float *X, int64_t rows,
                  const KilnQuantSpec *spec, const KilnAwqOpts *o, KilnDiag *d);

/* ------------------------------------------------------------------ SmoothQuant, outliers (smooth.c) */

/* SmoothQuant (Xiao et al. 2022, arXiv 2211.10438) migration factors for nl layers that
 * share one input: s_j = max|X_j|^alpha / max(max_l max_n |W[l]_nj|, 1e-5)^(1-alpha),
 * at least 1e-5; columns never active (xabsmax_j = 0) get 1. Then X/s and W·diag(s). */
void kiln_smooth_factors(const float *xabsmax, const float *const *W, const int64_t *N, int nl,
                         int64_t K, float alpha, float *s);

/* LLM.int8() outlier columns from these statistics: kiln_outlier_pick_absmax
 * (ir/outliers.h) on KilnActStats.absmax, the one picker calibration uses. */

#endif
