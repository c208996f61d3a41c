/* kiln.h — kiln's public C API, the only header an inference engine includes: load a
 * recipe, compile (or fetch from the on-disk cache) the kernel for a linear layer,
 * quantize and prepack its weights, and run it on activations.
 * docs/api.md has a complete example program. */
#ifndef KILN_H
#define KILN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum kiln_status {
    KILN_STATUS_OK = 0,
    KILN_STATUS_INPUT = 2,    /* bad recipe, shape, option or argument */
    KILN_STATUS_NODEV = 3,    /* the target's device or toolkit is not present */
    KILN_STATUS_INTERNAL = 4, /* a bug or an out-of-memory: please report */
} kiln_status;

typedef enum kiln_dtype { KILN_DTYPE_F32, KILN_DTYPE_F16, KILN_DTYPE_BF16 } kiln_dtype;

typedef struct kiln_ctx kiln_ctx;       /* target and its backend: the CPU JIT (kernel cache,
                                         * thread pool) or a CUDA device */
typedef struct kiln_recipe kiln_recipe; /* a loaded recipe */
typedef struct kiln_layer kiln_layer;   /* a compiled kernel with its prepacked weights */

typedef struct kiln_options {
    const char *target;    /* "cpu" (NULL: the host), "avx2", "avx512", "zen3", "zen4";
                            * "sm_80", "sm_89", "sm_90", "cuda" (the device's arch) run on
                            * a CUDA GPU through its driver */
    const char *cache_dir; /* NULL: $KILN_CACHE_DIR, else ~/.cache/kiln */
    int num_threads;       /* 0: $KILN_NUM_THREADS, else the number of cores */
    int verbose;           /* 1: report cache hits/misses and compile times on stderr */
    const char *aot_dir;   /* a `kiln aot` library (CPU): kernels come from it, nothing is
                            * compiled; the target is the library's (a different `target`
                            * is an error) */
} kiln_options;

/* opts may be NULL (all defaults). On failure *out is NULL; the message is printed
 * by kiln_error(NULL). */
kiln_status kiln_ctx_create(const kiln_options *opts, kiln_ctx **out);
/* Layers made from ctx stay usable after it: what they need (compiled code, device
 * memory) goes when the context and its last layer are destroyed. */
void kiln_ctx_destroy(kiln_ctx *ctx);
/* The message of the last failure on ctx (or of the last kiln_ctx_create when ctx
 * is NULL); "" when none. "FILE:LINE: message" for recipe errors. */
const char *kiln_error(const kiln_ctx *ctx);
/* The resolved target name ("avx2", "avx512", "sm_90", ...). */
const char *kiln_ctx_target(const kiln_ctx *ctx);

kiln_status kiln_recipe_open(kiln_ctx *ctx, const char *path, kiln_recipe **out);
void kiln_recipe_close(kiln_recipe *r);

typedef struct kiln_layer_desc {
    const char *name;     /* the layer's name, matched against the recipe's rules */
    int64_t N, K;         /* outputs and inputs: weight is [N, K] */
    const float *weight;  /* [N, K] row-major f32 (PyTorch Linear layout) */
    const float *bias;    /* [N] or NULL; used when the recipe's epilogue asks for bias */
    const float *calib_x; /* [calib_rows, K] activations for static scales and a rule's
                           * outlier columns (recipe option outliers), or NULL */
    int64_t calib_rows;
    /* Optional: the weight's quantization grid, chosen by the caller (GPTQ, AWQ, a
     * checkpoint) instead of round-to-nearest over each slice's range. Scales (and,
     * for asymmetric int formats, zero points) one per slice in the format that
     * kiln_layer_weight_format() reports for this layer: [N * ceil(K / group)] for
     * groups, [N] per channel, [1] per tensor. weight is quantized with exactly
     * these, so weight = scale·(code − zero) reproduces the caller's codes. */
    const float *weight_scale;
    const int32_t *weight_zero;
    /* The weight format when the layer's rule says weights = stored, as spec text:
     * "int4 asym group=128", "int8 sym channel", "fp8_e4m3 sym tensor". */
    const char *weight_format;
    /* The activation scheme when the layer's rule says activations = stored (the
     * checkpoint's own), as spec text: "int8 sym token dynamic", "fp8_e4m3 sym tensor
     * dynamic", or static with its scale (and zero point, asymmetric), used exactly:
     * "int8 sym tensor scale=0.0123", "int8 asym tensor scale=0.05 zero=131" (any text
     * that strtof reads back as the float, e.g. "%.9g"). NULL: the checkpoint quantizes
     * the layer weight-only; it runs f16 activations. Ignored for other rules. */
    const char *act_format;
} kiln_layer_desc;

/* Compile (or fetch) the layer's kernel and quantize + prepack its weights; the
 * caller's weight/bias buffers are not kept. */
kiln_status kiln_layer_create(kiln_ctx *ctx, const kiln_recipe *r, const kiln_layer_desc *desc,
                              kiln_layer **out);
/* The weight format kiln_layer_create would give this layer, as
 * kiln_layer_weight_format() reports it, without compiling or loading anything
 * (for a caller that chooses the quantization grid itself). */
kiln_status kiln_layer_plan_format(kiln_ctx *ctx, const kiln_recipe *r, const char *name,
                                   int64_t N, int64_t K, char *buf, size_t n);
/* y[M, N] = epilogue(x[M, K] · Wᵀ + b), y of kiln_layer_out_dtype. Any M >= 1. */
kiln_status kiln_layer_run(kiln_layer *l, const float *x, int64_t M, void *y);
kiln_dtype kiln_layer_out_dtype(const kiln_layer *l);
/* The kernel chosen for the layer, e.g. "avx2-i16-madd"; "f32" for an ignored layer. */
const char *kiln_layer_kernel(const kiln_layer *l);
/* What the layer computes, for people, e.g. "avx2-i16-madd: w int4 sym group=32,
 * a int8 sym token dynamic" or "avx2-f32-fma: w f32, a f32, silu, out f16". */
const char *kiln_layer_describe(const kiln_layer *l);
/* The layer's weight format as spec text ("int4 sym group=32", "int8 sym channel"),
 * "f32" for a layer kept in f32. */
const char *kiln_layer_weight_format(const kiln_layer *l);
/* Bytes of the prepacked weights (codes, scales, zero points). */
size_t kiln_layer_weight_bytes(const kiln_layer *l);
/* The kernel IR (text) the layer was compiled from. */
const char *kiln_layer_ir(const kiln_layer *l);
/* The activation the kernel applies after the GEMM (and bias): "none", "silu" or
 * "gelu" (erf). A caller running a model skips its own activation when it is fused. */
const char *kiln_layer_epilogue(const kiln_layer *l);
/* 1 when the kernel adds the layer's bias (the recipe's epilogue has bias = true;
 * a missing desc bias is then zeros), 0 when the caller adds its own bias, if any. */
int kiln_layer_has_bias(const kiln_layer *l);
void kiln_layer_destroy(kiln_layer *l);

#ifdef __cplusplus
}
#endif
#endif
