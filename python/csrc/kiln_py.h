/* kiln_py.h — the C side of the Python package (python/kiln, docs/python.md): what a
 * PyTorch model needs beyond include/kiln.h, built into libkiln.so with it. A layer of a
 * compressed-tensors checkpoint bound as `kiln eval` binds it (weights = stored), and a
 * recipe's calibrated method (GPTQ, AWQ, SmoothQuant) run on one layer from the input
 * rows the caller captured. Errors: status as in kiln.h, the message in kiln_py_error().
 * cffi reads its declarations from this header and include/kiln.h as the package
 * installed them (python/kiln/_lib.py), so there is no second copy to keep in step. */
#ifndef KILN_PY_H
#define KILN_PY_H

#include "kiln.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The message of this thread's last failed kiln_py_* call ("" when none). */
const char *kiln_py_error(void);

/* ---------------------------------------------------------------- checkpoints */

typedef struct kiln_py_ckpt kiln_py_ckpt;

/* Reads a quantized Hugging Face directory (compressed-tensors, AutoGPTQ, AutoAWQ;
 * docs/checkpoints.md): its quantized linear layers, in file order. */
kiln_status kiln_py_ckpt_open(const char *dir, kiln_py_ckpt **out);
void kiln_py_ckpt_close(kiln_py_ckpt *c);
int kiln_py_ckpt_nlayers(const kiln_py_ckpt *c);
/* Layer i's module name ("model.layers.0.self_attn.q_proj") and shape [N, K]. */
const char *kiln_py_ckpt_layer(const kiln_py_ckpt *c, int i, int64_t *N, int64_t *K);
/* Binds layer i under recipe r exactly as kiln eval does (model/nets/ops.c,
 * kiln_linears_bind): weights = stored rules take the stored codes and grid,
 * activations = stored the file's scheme; other rules re-quantize the dequantized
 * weight. perm [K]: when *has_perm comes back 1 the layer takes x[:, perm] (act-order
 * g_idx). */
kiln_status kiln_py_ckpt_bind(kiln_ctx *ctx, const kiln_recipe *r, const kiln_py_ckpt *c, int i,
                              kiln_layer **out, int32_t *perm, int *has_perm);

/* ---------------------------------------------------------------- methods */

typedef struct kiln_py_method kiln_py_method;

/* The rule of layer `name` in r: its method (GPTQ, AWQ, SmoothQuant) on W[N,K] from
 * the input rows X[rows,K] (model/eval/layer_method.h). *out is NULL when the layer's
 * rule has no method (or the layer is ignored); a method that cannot run here (K over
 * 2048) is also NULL, with the reason in kiln_py_error(). */
kiln_status kiln_py_method_run(const kiln_recipe *r, const char *name, const float *W, int64_t N,
                               int64_t K, const float *X, int64_t rows, kiln_py_method **out);
/* What ran, e.g. "gptq act_order=static int4 asym group=128". */
const char *kiln_py_method_ran(const kiln_py_method *m);
/* The input the layer takes after the method: x'[rows,K] = x[:, perm] / s in place
 * (perm and s: kiln_py_method_in_perm / _in_div, NULL when the method has none). */
kiln_status kiln_py_method_input(const kiln_py_method *m, float *x, int64_t rows);
const int32_t *kiln_py_method_in_perm(const kiln_py_method *m);
const float *kiln_py_method_in_div(const kiln_py_method *m);
void kiln_py_method_free(kiln_py_method *m);

/* kiln_layer_create as kiln eval binds a model's layer: with the method's weights and
 * grid when m is not NULL, static scales from calib_x (rows as the kernel takes them,
 * after kiln_py_method_input), and the model's rules on fused activations (a recipe
 * may not fuse one here: the PyTorch model applies its own). Errors name the layer
 * and its shape. */
kiln_status kiln_py_layer_create(kiln_ctx *ctx, const kiln_recipe *r, const char *name, int64_t N,
                                 int64_t K, const float *weight, const float *bias,
                                 const float *calib_x, int64_t calib_rows,
                                 const kiln_py_method *m, kiln_layer **out);

/* ---------------------------------------------------------------- kiln's numerics */

/* The parts of kiln's Llama forward between its linear layers (model/nets/llama_forward.c),
 * the same code, so that a PyTorch model running them (kiln.kiln_numerics_) computes
 * what `kiln eval` computes, bit for bit, given the same layers. All f32, in place where
 * x / g is both input and output. */
/* RMSNorm of M rows of D: x = x / sqrt(mean(x²) + eps) * g (the sum in double). */
void kiln_py_rmsnorm(float *x, int64_t M, int64_t D, const float *g, float eps);
/* g = silu(g) * u, n values. */
void kiln_py_silu_mul(float *g, const float *u, int64_t n);
/* RoPE's cos and sin, cs and sn [T][hd/2], of positions pos0.. and pairs i < hd/2. */
void kiln_py_rope_table(int T, int pos0, int hd, float theta, float *cs, float *sn);
/* Causal grouped-query attention of T query rows at positions n-T..n-1 over n keys:
 * q [T][nh][hd], k and v [n][nkv][hd] (a head's RoPE pairs adjacent, as kiln lays them
 * out), out [T][nh][hd]; query head h reads KV head h / (nh / nkv). */
kiln_status kiln_py_attention(const float *q, const float *k, const float *v, int T, int n,
                              int nh, int nkv, int hd, float *out);

/* BERT's (model/nets/bert.c): LayerNorm of M rows of D (mean and variance in double);
 * GELU (erf) of n values; attention of one sentence, every row over every row: q, k,
 * v, out [T][nh][hd]. */
void kiln_py_layernorm(float *x, int64_t M, int64_t D, const float *g, const float *b, float eps);
void kiln_py_gelu(float *x, int64_t n);
kiln_status kiln_py_bert_attention(const float *q, const float *k, const float *v, int T, int nh,
                                   int hd, float *out);

/* ---------------------------------------------------------------- overhead */

/* Runs kiln_layer_run(l, x, M, y) reps times from C and returns the mean wall time of
 * one call in nanoseconds (negative: the status of a failed run), and in *cpu_ns (when
 * not NULL) the calling thread's CPU time per call, which a busy machine's other
 * processes do not inflate (all of the work with a one-thread context): the kernel's
 * time without Python, against which docs/python.md measures the Python path. */
double kiln_py_time_run(kiln_layer *l, const float *x, int64_t M, void *y, int reps,
                        double *cpu_ns);

#ifdef __cplusplus
}
#endif
#endif
