/* model/model.h — the two real models (a BERT sentence encoder and a Llama decoder)
 * run in f32 with every linear layer executed by a kiln kernel chosen by a recipe,
 * their KV cache formats, the shared f32 ops, and `kiln eval` (docs/models.md). */
#ifndef KILN_MODEL_H
#define KILN_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ir/ir.h"
#include "kiln.h"

struct KilnPool;
struct KilnRecipe;
struct KilnModelFile;
struct KilnModelTensor;
struct KilnWOp;

/* ------------------------------------------------------------------ ops.c */

/* y[M,N] = x[M,K]·W[N,K]ᵀ (+ b[N] when b). Cache-blocked, AVX2+FMA when the CPU has
 * it, split over pool's threads (pool NULL: serial). */
void kiln_gemm_f32(struct KilnPool *pool, const float *x, int64_t M, const float *w,
                   const float *b, int64_t N, int64_t K, float *y);
void kiln_layernorm(float *x, int64_t M, int64_t D, const float *g, const float *b, float eps);
/* Normalises x (in place) with weight g: x·g/rms(x). */
void kiln_rmsnorm(float *x, int64_t M, int64_t D, const float *g, float eps);
void kiln_softmax(float *x, int64_t n);
/* Whether every v[i] is finite (no infinity, no NaN). */
bool kiln_all_finite(const float *v, int64_t n);
void kiln_gelu_erf(float *x, int64_t n);
float kiln_silu1(float x);
/* x[i] = expf(x[i]), and g[i] = kiln_silu1(g[i]) * u[i]: the same bits as libm's expf
 * (glibc's algorithm, 8 lanes with AVX-512; model/nets/vexpf.c). */
void kiln_expf_n(float *x, int64_t n);
void kiln_silu_mul(float *g, const float *u, int64_t n);
/* Rotary embedding on one head vector of size hd at position pos, GGUF "norm"
 * layout: adjacent pairs (x[2i], x[2i+1]) rotate by pos·theta^(-2i/hd). */
void kiln_rope_norm(float *x, int hd, int pos, float theta);
/* Its cos and sin for positions pos0..pos0+T-1 and pairs i < hd/2: cs, sn [T][hd/2]. */
void kiln_rope_table(int T, int pos0, int hd, float theta, float *cs, float *sn);
/* The Llama forward's causal grouped-query attention (the code kiln_llama_forward runs,
 * model/nets/llama_forward.c, for the Python package): T query rows at positions n-T..n-1,
 * q and out [T][nh][hd], over n keys and values k, v [n][nkv][hd]; query head h reads KV
 * head h / (nh / nkv); p[n] scratch. */
void kiln_llama_attention(const float *q, const float *k, const float *v, int T, int n, int nh,
                          int nkv, int hd, float *p, float *out);
/* BERT's attention of head h within one sentence of T rows: q, k, v, ctx [T][D] (head h
 * at columns h*hd..), every row over every row; p[T] scratch. The code kiln_bert_embed
 * runs (model/nets/bert.c). */
void kiln_bert_attend(const float *q, const float *k, const float *v, int64_t T, int D, int hd,
                      int h, float *p, float *ctx);
/* Loads tensor name as f32 after checking it exists with numel elements; errors
 * name the file as what (e.g. "GGUF"). */
int kiln_load_f32_checked(const struct KilnModelFile *mf, const char *what, const char *name,
                          int64_t numel, float **out, KilnDiag *d);

/* A linear layer: its f32 weights and the kiln layer that runs it under a recipe.
 * The f32 weights are not always kept (docs/hardening.md, "Memory"): a layer whose
 * weights can be read again from the model's mapped file (wmf, wt: a GGUF, or a BERT's
 * single model.safetensors) holds w only
 * while something needs it — binding, the methods, --per-layer's reference — and
 * kiln_linear_wget reads it back (dequantized from the file) when it is NULL;
 * kiln_linear_wput drops it again unless a method changed it (w_dirty). */
typedef struct KilnLinear {
    char name[160];     /* the name recipes match (docs/models.md, "Layer names") */
    char src[160];      /* the checkpoint's tensor name, minus ".weight" */
    int64_t N, K;
    float *w, *b;       /* owned; b may be NULL; w NULL while dropped (wt set) */
    const struct KilnModelFile *wmf;    /* where w is read again; NULL: w is kept */
    const struct KilnModelTensor *wt;   /* [N, K] in wmf */
    bool w_dirty;       /* w differs from the file and from wops replayed on it: kept */
    bool w_held;        /* a caller keeps w read for several runs: kiln_linear_wput keeps it */
    /* What the methods did to w since it was read (scales, clipping, a column order), in
     * order: kiln_linear_wget replays them on the file's weights, so a method's layer is
     * read again as well (kiln_linear_wsettle). */
    struct KilnWOp *wops;
    int nwops;
    /* Bound per call (kiln eval's f32 row, kiln_runctx_open_f32): every run creates the
     * layer of this context's recipe (its f32 weights read and prepacked for that call)
     * and destroys it after, so the f32 baseline keeps no f32 copy of the model. kernel
     * then points at kdesc, what kiln_layer_describe said when it was bound. */
    const struct KilnRunCtx *percall;
    char kdesc[128];
    /* The layer as a quantized checkpoint stores it (model/checkpoints/checkpoint.h), for rules
     * that say weights = stored; w is then its dequantized weight, made when needed
     * (kiln_linear_wget: kiln_qlinear_rows, from the mapped checkpoint) and dropped after, as
     * a file's. NULL normally. Not owned: the model keeps the checkpoint it points into. */
    const struct KilnQLinear *stored;
    kiln_layer *kl;     /* NULL: runs in f32 here (f32 baseline, or ignored) */
    bool bias_in_kernel;
    /* The activation the model itself applies to this layer's output ("silu" on
     * Llama's gate_proj, "gelu" on BERT's intermediate.dense; NULL elsewhere): the
     * only one a recipe may fuse into the layer's epilogue. act_fused: the bound
     * kernel applies it, so the model must not apply it again. */
    const char *own_act;
    bool act_fused;
    const char *kernel; /* "f32" or kiln_layer_describe() */
    size_t wbytes;
    /* --per-layer: energies of the f32 output and of (kernel - f32) on the same input */
    bool track;
    double sig, noise;
    /* set by the first run whose output held a NaN or an infinity (nonfinite_in: its
     * input already did), so kiln eval can name the layer where they began */
    bool nonfinite_out, nonfinite_in;
    /* calibration capture: the layer's input rows (first cap_max rows); cap_skip: none
     * (kiln_linears_capture_select: the recipe calibrates nothing from them) */
    bool cap_skip;
    float *cap;
    int64_t cap_rows, cap_max;
    /* bound to the recipe by a capture's sink, its rows already consumed:
     * kiln_linears_bind_consuming leaves it as it is (and clears this) */
    bool bound_early;
    /* kiln quantize's sink: the static activation scale computed from the rows before
     * they were freed (kiln_static_act_params returns it) */
    bool cap_have;
    float cap_scale;
    int32_t cap_zero;
    float *tmp; /* scratch for tracking / f16 outputs */
    int64_t tmp_n;
    /* Calibrated quantization (model/eval/calib.c, docs/quant.md). stats: the input
     * statistics being gathered (shared by the layers that read one input; only the
     * one with stats_add feeds it). in_div [K]: x is divided by it before the layer
     * (an AWQ/SmoothQuant scale no op could take); in_perm [K]: x[:, in_perm] is
     * what the layer sees (GPTQ act_order "group", checkpoints with g_idx) — w is
     * then stored in that column order too. qres: the weight grid chosen by a method
     * or read from a checkpoint (weights, codes, scales, zeros), bound instead of
     * kiln's round-to-nearest; q_format its spec text for weights = stored. */
    struct KilnActStats *stats;
    bool stats_add;
    float *in_div;
    int32_t *in_perm;
    struct KilnQResult *qres; /* owns q_w, q_scale, q_zero */
    float *q_w, *q_scale;
    int32_t *q_zero;
    char q_format[64];
    /* GPTQ's weights kept as its codes alone, packed (qres->w dropped: int4 half a byte a
     * weight, int8 a byte): q_w is made again from qres's codes, scales and zeros in this
     * format when binding needs it (kiln_quant_wget), the same bits, and dropped after
     * (kiln_quant_wput); the codes once the layer is bound (kiln_quant_bound). fmt
     * KILN_QF_NONE: q_w is kept. */
    KilnQuantSpec q_spec;
    float *xin; /* scratch for in_div / in_perm */
    int64_t xin_n;
    /* An f32 kernel whose weights are exactly wt's GGUF blocks dequantized: a one-row
     * run reads the blocks (kiln_blockgemv) rather than the prepacked f32. NULL: none. */
    const struct KilnModelTensor *blocks;
} KilnLinear;

/* Everything a model runs with: the kiln context, the recipe (NULL = f32), the
 * recipe as the frontend sees it (for kv_cache and its name) and a pool. */
typedef struct KilnRunCtx {
    kiln_ctx *ctx;
    kiln_recipe *recipe;
    struct KilnRecipe *fr;
    struct KilnPool *pool;     /* the context's kernel pool, or own_pool */
    struct KilnPool *own_pool; /* made by kiln_runctx_open when the context has none (a GPU
                                * target); freed by kiln_runctx_close */
    struct KilnProgress *progress; /* runtime/progress.h; NULL: none shown */
    bool per_call; /* layers bound per call (KilnLinear.percall): kiln eval's f32 row */
} KilnRunCtx;

int kiln_linear_run(KilnLinear *l, struct KilnPool *pool, const float *x, int64_t M, float *y,
                    KilnDiag *d);
/* The layer's f32 weights in l->w, read again from the file when dropped (model/nets/
 * linear_w.c); _wput drops them when they can be read again and no method changed them. */
int kiln_linear_wget(KilnLinear *l, KilnDiag *d);
void kiln_linear_wput(KilnLinear *l);
/* A method changed w (w_dirty set by the caller) by one of these, recorded so that
 * kiln_linear_wget can replay it: w[:, k] *= v[k] (COLMUL), w[n, :] /= v[n] (ROWDIV),
 * each segment of `group` columns of a row clamped to the range it now has (CLAMP: what
 * a clip did), columns gathered by perm (GATHER). No-ops for a layer without a file. */
enum { KILN_WOP_COLMUL, KILN_WOP_ROWDIV, KILN_WOP_CLAMP, KILN_WOP_GATHER };
int kiln_linear_wop(KilnLinear *l, int kind, const float *v, const int32_t *perm, int64_t group,
                    KilnDiag *d);
/* Drops a dirty w when replaying its wops on the file gives it bit for bit (else it
 * stays); 0 or an error. */
int kiln_linear_wsettle(KilnLinear *l, KilnDiag *d);
void kiln_linear_wops_free(KilnLinear *l);
/* Binds a layer over 16 MiB of f32 weights per call in slices of its rows (rc->per_call:
 * kiln eval's f32 row), checking the recipe on one slice: 0, or 1 when it does not apply
 * (not per call, small, or not a plain f32 kernel: bind it whole), or an error. */
int kiln_linear_bind_sliced(KilnLinear *l, const KilnRunCtx *rc, KilnDiag *d);
/* Whether binding reads the layer's weights in chunks of rows rather than whole: over
 * 16 MiB of f32, not held (w NULL), read again from the file (SmolLM2's lm_head). */
bool kiln_linear_chunked(const KilnLinear *l);
/* kiln_layer_create for l under rc: desc->weight as given, or for a chunked layer the
 * file's rows 16 MiB at a time with the methods' changes replayed (kiln_layer_create_rows,
 * api/plan.h: the same packed bytes), its pages dropped after. */
int kiln_linear_layer_create(KilnLinear *l, const KilnRunCtx *rc, const kiln_layer_desc *desc,
                             kiln_layer **kl);
/* y [M, N] = x wT + b through kiln_gemm_f32 on the weights kiln_linear_wget gives (the f32
 * reference: --per-layer's, an f32 layer without a kernel), a big layer's (over 16 MiB of
 * f32, not held) read 16 MiB of rows at a time, the same bits; l->w left as it was. */
int kiln_linear_ref(KilnLinear *l, struct KilnPool *pool, const float *x, int64_t M, float *y,
                    KilnDiag *d);
/* The f32 one-row product y = W x of a GGUF Q8_0 / Q4_0 / Q4_1 tensor [N, K] from its
 * blocks, over the pool (model/nets/blockgemv.c); _supported: this host and tensor can. */
bool kiln_blockgemv_supported(const struct KilnModelTensor *t, int64_t N, int64_t K);
void kiln_blockgemv(struct KilnPool *pool, const struct KilnModelTensor *t, const float *x,
                    int64_t N, int64_t K, float *y);
/* A per-call layer's run (KilnLinear.percall): kiln_linear_run calls it. */
int kiln_linear_run_percall(KilnLinear *l, struct KilnPool *pool, const float *x, int64_t M,
                            float *y, KilnDiag *d);
/* Binds every layer to the recipe (rc->recipe NULL: f32 for all, through
 * kiln_gemm_f32). Layers the recipe ignores run on kiln's own f32 kernel, which
 * kiln_layer_create gives them. Static activation scales calibrate from cap. */
int kiln_linears_bind(KilnLinear *ls, int n, const KilnRunCtx *rc, KilnDiag *d);
void kiln_linears_unbind(KilnLinear *ls, int n);
/* The layer kiln_linears_bind binds first: one holding over 1/8 of all the weights (bound
 * while no other layer holds prepacked weights), else -1. */
int kiln_linears_first(const KilnLinear *ls, int n);
/* Calibration capture for static activation scales: every layer keeps its first
 * KILN_STATIC_ROWS input rows in cap (as the kernel sees them: after in_div /
 * in_perm) from now on; _end frees them. */
int kiln_linears_capture(KilnLinear *ls, int n, KilnDiag *d);
void kiln_linears_capture_end(KilnLinear *ls, int n);
/* Marks the layers whose rule under fr calibrates nothing from captured rows (no static
 * activation scale to compute, no outlier columns to pick) so that kiln_linears_capture
 * leaves them without rows: 512 rows of every layer's input are 307 MB on SmolLM2. */
void kiln_linears_capture_select(KilnLinear *ls, int n, const struct KilnRecipe *fr);
/* Whether some layer will capture rows (not cap_skip). */
bool kiln_linears_capturing(const KilnLinear *ls, int n);
/* kiln_linears_bind, each layer's captured rows freed as soon as its kernel calibrated
 * from them; the one big layer (kiln_linears_first) first, or last when rows are held. */
int kiln_linears_bind_consuming(KilnLinear *ls, int n, const KilnRunCtx *rc, KilnDiag *d);
/* The order it binds in (malloc'd, n indices; NULL out of memory). */
int *kiln_linears_bind_order(const KilnLinear *ls, int n);
/* One layer of it: bound and its rows freed, or left as a capture's sink bound it
 * (bound_early, cleared). */
int kiln_linear_bind_consuming(KilnLinear *l, const KilnRunCtx *rc, KilnDiag *d);
void kiln_linears_free(KilnLinear *ls, int n);

/* ------------------------------------------------------------------ calib.c */

/* Layers that read one input, and what can absorb a per-input-channel scale s
 * (x → x/s, W → W·diag(s)): a norm's weight (and bias) [K] that produces the input,
 * or a linear layer `prev` whose output rows are the input's channels. */
typedef struct KilnScaleSite {
    int lin[3], nlin; /* indices into the model's linear layers */
    float *norm_w, *norm_b;
    int prev;         /* -1 when none */
} KilnScaleSite;

/* The calibration text run through the model one block at a time (linear layers in
 * f32): begin computes the hidden states of all of it after the embeddings, block(b)
 * runs block b over all of it in place (its own KV cache, the same windows / batches as
 * a whole forward pass). Layers [b * per_block, (b+1) * per_block) belong to block b;
 * layers after nblocks * per_block (a Llama's lm_head) to no block. */
typedef struct KilnCalibNet {
    int nblocks, per_block;
    void *arg;
    int (*begin)(void *arg, KilnDiag *d);
    int (*block)(void *arg, int b, KilnDiag *d);
    void (*end)(void *arg); /* frees what begin made */
} KilnCalibNet;

/* Applies the recipe's methods (rc->fr: smoothquant, awq, gptq) to the model's
 * linear layers, block by block: gathers one block's input statistics from the
 * calibration text (its input: the f32 model's output of the block before, computed
 * before that block's weights changed), migrates scales into norms / previous layers
 * (or in_div with prescale = true), computes GPTQ grids into qres, frees the block's
 * statistics, and goes on; so the statistics held are one block's, and the results
 * are those of one whole calibration pass. Layers whose rule is round-to-nearest are
 * left to kiln. verbose: one line per layer on stderr. Returns 0 when the recipe names
 * no method too (nothing done). */
int kiln_quant_prepare(KilnLinear *ls, int n, const KilnScaleSite *sites, int nsites,
                       const KilnRunCtx *rc, const KilnCalibNet *net, bool verbose, KilnDiag *d);
/* True when some layer's rule names a method other than round-to-nearest. */
bool kiln_quant_needed(const KilnLinear *ls, int n, const struct KilnRecipe *fr);
/* The weight format the recipe gives layer l on rc's target ("int4 sym group=32"),
 * resolved by the layout pass; "" for an f32 layer. */
int kiln_quant_format(const KilnRunCtx *rc, const KilnLinear *l, char *buf, size_t n,
                      KilnDiag *d);
struct KilnLlama;
struct KilnBert;
/* kiln_quant_prepare for the two models: calibration tokens (a Llama) or sentences
 * (BERT) run through the f32 model. */
int kiln_llama_quant_prepare(struct KilnLlama *m, const KilnRunCtx *rc, const int32_t *ids, int n,
                             bool verbose, KilnDiag *d);
int kiln_bert_quant_prepare(struct KilnBert *m, const KilnRunCtx *rc, const char *const *texts,
                            int n, bool verbose, KilnDiag *d);

/* Static activation scales. kiln eval and kiln quantize calibrate them alike (so a
 * checkpoint stores the scales kiln eval runs with): after the methods, the model in
 * f32 runs the first KILN_STATIC_TOKENS tokens of the calibration text as one
 * sequence (a Llama; kv, the recipe's KV cache with room for them, gets its static
 * ranges on the way) or its first KILN_STATIC_SENTENCES lines as one batch (BERT),
 * while every linear layer captures its first KILN_STATIC_ROWS input rows
 * (kiln_linears_capture). The layers run as the caller left them bound: kiln eval's
 * f32 row (kiln_runctx_open_f32) unless a method ran, which leaves them unbound
 * (kiln_gemm_f32). Both f32, but not bit for bit alike, and static-scale perplexity
 * follows the last bit of a scale, so kiln quantize binds them as kiln eval does.
 * Binding the layers to the recipe then calibrates each static scale on those rows
 * (kiln_layer_create); kiln_static_act_params computes the same scale for a
 * checkpoint. */
#define KILN_STATIC_TOKENS 256
#define KILN_STATIC_SENTENCES 32
#define KILN_STATIC_ROWS 512
/* The calibration run goes block by block (kiln_llama_block / kiln_bert_block, the
 * operations of a whole forward pass in the same order), and once a block has run its
 * layers have seen every row they will see: sink (non-NULL) is then handed them, so
 * their rows can be consumed and freed before the next block captures. Rows held are
 * then one block's, not every layer's (MiniLM: 7 MB, not 42.5 MB). kiln eval,
 * generate and bench bind the block's layers (kiln_linears_bind_sink); kiln quantize
 * keeps their scales (cap_have). A NULL sink keeps every layer's rows. */
typedef struct KilnCaptureSink {
    int (*done)(void *arg, KilnLinear *ls, int n, KilnDiag *d); /* one block's layers */
    void *arg;
} KilnCaptureSink;
struct KilnKVCache;
int kiln_llama_capture_static(struct KilnLlama *m, struct KilnPool *pool, struct KilnKVCache *kv,
                              const int32_t *ids, int n, const KilnCaptureSink *sink,
                              KilnDiag *d);
int kiln_bert_capture_static(struct KilnBert *m, struct KilnPool *pool, const char *const *texts,
                             int n, const KilnCaptureSink *sink, KilnDiag *d);
/* A capture's sink for kiln eval, generate and bench (arg: the KilnRunCtx): binds the
 * block's layers to the recipe as kiln_linears_bind_consuming would, each layer's rows
 * freed once its kernel calibrated from them, and marks them bound_early. */
int kiln_linears_bind_sink(void *rc, KilnLinear *ls, int n, KilnDiag *d);
/* The static activation scale (and zero point) layer l runs with under activation
 * spec a (static): a's own scale when the recipe gives one, else kiln_calib_static on
 * the rows l captured, exactly as kiln_layer_create calibrates it. KILN_EINPUT naming
 * the layer when it captured none. */
int kiln_static_act_params(const KilnLinear *l, const KilnQuantSpec *a, float *scale,
                           int32_t *zero, KilnDiag *d);
/* Binds a layer's checkpoint weights (l->stored) as its grid: qres, q_format and,
 * for act-order g_idx, in_perm (w gathered the same way, and recorded so for every read
 * of w); q_w made from the stored layer for the binding (model/eval/calib_stored.c), and
 * made again when bound again. kiln_quant_stored_wput drops q_w once the kernel holds it. */
int kiln_quant_from_stored(KilnLinear *l, KilnDiag *d);
/* w[rows, K] → w[:, perm] in place (tmp: K floats): an act-order column gather. */
void kiln_gather_cols(float *w, int64_t rows, int64_t K, const int32_t *perm, float *tmp);
void kiln_quant_stored_wput(KilnLinear *l);
/* q_w of a layer whose GPTQ weights are kept as codes (KilnLinear.q_spec), made for
 * binding; _wput drops it again. No-ops for any other layer. _wget of a layer whose
 * result kiln_quant_bound released is an error (KILN_EINTERNAL naming the layer). */
int kiln_quant_wget(KilnLinear *l, KilnDiag *d);
void kiln_quant_wput(KilnLinear *l);
/* The layer's kernel now holds its GPTQ result (a lasting binding, not per call): the
 * codes, scales and zeros kept for it are freed (nothing reads them again: kiln eval,
 * generate and bench bind a method's layers once; kiln quantize never binds them). */
void kiln_quant_bound(KilnLinear *l);
/* Frees what kiln_quant_prepare (or a checkpoint load) attached to the layers. */
void kiln_quant_release(KilnLinear *ls, int n);

/* ------------------------------------------------------------------ kvcache.c */

typedef enum { KILN_KV_F32, KILN_KV_F16, KILN_KV_BF16, KILN_KV_FP8_E4M3, KILN_KV_FP8_E5M2,
               KILN_KV_INT8 } KilnKVFormat;

typedef struct KilnKVSpec {
    KilnKVFormat fmt;
    bool per_head; /* scales per KV head (else one per tensor / per token) */
    bool dynamic;  /* scales computed on every write (per token and head/tensor) */
    float scale;   /* static scale given by the recipe (0: calibrate) */
} KilnKVSpec;

typedef struct KilnKVCache {
    KilnKVSpec spec;
    int nlayers, nkv, hd, cap;
    int dlayers;        /* layers k, v (and dynamic ks, vs) hold: nlayers, or 1 for a cache of
                         * one pass (kiln_kv_init_pass), where every layer uses the one slot */
    size_t esz;         /* bytes per element */
    uint8_t *k, *v;     /* [dlayers][pos][nkv*hd] */
    float *ks, *vs;     /* dynamic: [dlayers][pos][nscale]; static: [layer][nscale] */
    int nscale;         /* per_head ? nkv : 1 */
    /* static calibration: running absmax [layer][nscale] while calibrating */
    bool calibrating;
    float *kmax, *vmax;
} KilnKVCache;

/* The recipe's kv_cache (f32 when it has none). Reads the function attribute
 * kv_cache of a dummy lowered layer. */
int kiln_kv_spec_from_recipe(const struct KilnRecipe *r, KilnKVSpec *out, KilnDiag *d);
const char *kiln_kv_spec_name(const KilnKVSpec *s, char *buf, size_t n);
int kiln_kv_init(KilnKVCache *c, const KilnKVSpec *s, int nlayers, int nkv, int hd, int cap,
                 KilnDiag *d);
/* A cache for forwards that each start at position 0 and are never continued (kiln eval's
 * perplexity windows, a calibration pass): a block's K/V are read only by its own
 * attention, so every layer writes the one slot the next layer overwrites — 1/nlayers of
 * the memory (SmolLM2's window of 512 in f32: 0.8 MB, not 23.6 MB), the same results.
 * Static scales stay per layer. */
int kiln_kv_init_pass(KilnKVCache *c, const KilnKVSpec *s, int nlayers, int nkv, int hd, int cap,
                      KilnDiag *d);
void kiln_kv_free(KilnKVCache *c);
/* k, v: [nkv*hd] of one token. */
void kiln_kv_write(KilnKVCache *c, int layer, int pos, const float *k, const float *v);
/* Dequantized K (which 0) or V (1) of head h at pos into out[hd]. */
void kiln_kv_read(const KilnKVCache *c, int which, int layer, int pos, int h, float *out);
/* An f32 cache read in place: K (which 0) or V (1) of head h at position 0 of the layer,
 * later positions every nkv*hd floats; NULL for any other format. */
const float *kiln_kv_f32(const KilnKVCache *c, int which, int layer, int h);
/* Bytes per token (all layers), scales included. */
size_t kiln_kv_bytes_per_token(const KilnKVCache *c);
/* Static scales: start/finish a calibration pass (absmax of the written values). */
void kiln_kv_calib_begin(KilnKVCache *c);
void kiln_kv_calib_end(KilnKVCache *c);

/* ------------------------------------------------------------------ bert.c */

typedef struct KilnBert KilnBert;
struct KilnTokenizer;
/* dir holds model.safetensors, config.json, vocab.txt. */
int kiln_bert_load(const char *dir, KilnBert **out, KilnDiag *d);
void kiln_bert_free(KilnBert *m);
KilnLinear *kiln_bert_linears(KilnBert *m, int *n);
int kiln_bert_scale_sites(KilnBert *m, KilnScaleSite **out, int *n, KilnDiag *d);
int kiln_bert_dim(const KilnBert *m);
/* Sentence embeddings (mean pooled over the tokens, L2 normalised), out[n][dim].
 * All sentences' tokens go through the linear layers as one batch; attention stays
 * within each sentence, so no padding is needed. ntok (optional) gets the tokens. */
int kiln_bert_embed(KilnBert *m, struct KilnPool *pool, const char *const *texts, int n,
                    float *out, int64_t *ntok, KilnDiag *d);
/* kiln_bert_embed in steps, for block-by-block calibration (model/eval/calib_net.c): a
 * batch's hidden states after the embeddings (begin), then block `layer` on them in place
 * -- the same operations in the same order as kiln_bert_embed runs them. */
typedef struct KilnBertBatch {
    int n;               /* sentences */
    int64_t T, maxlen;   /* token rows in all; the longest sentence */
    int64_t *seg;        /* [n+1] first row of each sentence */
    float *x;            /* [T, dim] hidden states */
} KilnBertBatch;
int kiln_bert_batch_begin(KilnBert *m, const char *const *texts, int n, KilnBertBatch *b,
                          KilnDiag *d);
int kiln_bert_block(KilnBert *m, struct KilnPool *pool, int layer, KilnBertBatch *b, KilnDiag *d);
void kiln_bert_batch_free(KilnBertBatch *b);
int kiln_bert_nlayers(const KilnBert *m);

/* ------------------------------------------------------------------ llama.c */

typedef struct KilnLlama KilnLlama;
int kiln_llama_load(const char *gguf_path, KilnLlama **out, KilnDiag *d);
void kiln_llama_free(KilnLlama *m);
KilnLinear *kiln_llama_linears(KilnLlama *m, int *n);
/* The model's scale sites (q,k,v after the attention norm; o after v when the
 * shapes allow; gate,up after the FFN norm; down after up). *out is malloc'd. */
int kiln_llama_scale_sites(KilnLlama *m, KilnScaleSite **out, int *n, KilnDiag *d);
int kiln_llama_vocab(const KilnLlama *m);
int kiln_llama_ctx_max(const KilnLlama *m);
/* NULL (d set) when the GGUF's tokenizer could not be built. */
const struct KilnTokenizer *kiln_llama_tokenizer(const KilnLlama *m, KilnDiag *d);
int kiln_llama_kv_init(const KilnLlama *m, KilnKVCache *c, const KilnKVSpec *s, int cap,
                       KilnDiag *d);
/* The same as a cache of one pass (kiln_kv_init_pass). */
int kiln_llama_kv_init_pass(const KilnLlama *m, KilnKVCache *c, const KilnKVSpec *s, int cap,
                            KilnDiag *d);
/* Runs T tokens at positions pos0.. (the cache holds 0..pos0-1), writes their K/V
 * to the cache, and the logits of the last nlast tokens to logits[nlast][vocab]
 * (nlast 0: only the cache; the output head runs on those rows only). */
int kiln_llama_forward(KilnLlama *m, struct KilnPool *pool, KilnKVCache *kv, const int32_t *ids,
                       int T, int pos0, int nlast, float *logits, KilnDiag *d);
/* The same, but the last nlast rows of hidden states as they leave the last block
 * (before the final norm) go to hidden[nlast][dim]; kiln_llama_head then makes logits of
 * any run of them (normed in place), so a caller holds logits of a few rows at a time. */
int kiln_llama_forward_hidden(KilnLlama *m, struct KilnPool *pool, KilnKVCache *kv,
                              const int32_t *ids, int T, int pos0, int nlast, float *hidden,
                              KilnDiag *d);
int kiln_llama_head(KilnLlama *m, struct KilnPool *pool, float *x, int n, float *logits,
                    KilnDiag *d);
int kiln_llama_dim(const KilnLlama *m);
/* llama_forward.c: the model's weights counted once (a head tied to the embeddings is not
 * counted again), and the bytes of those it keeps in f32 outside the linear layers
 * (embeddings, norms). */
void kiln_llama_weights(const KilnLlama *m, int64_t *params, int64_t *f32_bytes);

/* ------------------------------------------------------------------ eval.c */

typedef struct KilnEvalOpts {
    const char *recipe; /* path */
    const char *model;  /* "minilm", "smollm2", a .gguf path or a Hugging Face directory */
    const char *text;   /* NULL: the Bible text (bible-kjv-text) */
    int tokens;         /* decoder: tokens to score (0: default) */
    int sentences;      /* encoder: sentences (0: default) */
    int window, stride; /* decoder perplexity (0: defaults) */
    const char *target;
    bool per_layer, json, verbose;
    /* --report FILE.md: a Markdown report (and its plot beside it) of the run, which
     * then also measures per-layer SQNR; cmdline is the command it quotes */
    const char *report, *cmdline;
    struct KilnProgress *progress; /* stages, layers, windows as they go; NULL: none */
} KilnEvalOpts;

/* Calibration for methods (gptq, awq, smoothquant): decoder tokens / encoder
 * sentences of the calibration text. */
#define KILN_METHOD_TOKENS 2048
#define KILN_METHOD_SENTENCES 128

/* Opens everything a model run under a recipe needs (the recipe as the frontend
 * and as the API see it, a context on target with threads kernel threads (0: the
 * machine's), and the pool the model's own ops share with the kernels: the context's, so
 * that no second pool's spinning workers take cores from the first between layers);
 * close with kiln_runctx_close,
 * which first makes a d that names the recipe file self-contained (pass NULL when no
 * error is pending). Open failures leave rc for close to free. */
int kiln_runctx_open(KilnRunCtx *rc, const char *recipe, const char *target, int threads,
                     bool verbose, KilnDiag *d);
void kiln_runctx_close(KilnRunCtx *rc, KilnDiag *d);
/* kiln eval's f32 baseline on base's context and pool: a built-in recipe that ignores
 * every layer (recipes/f32.lua), so every linear runs on kiln's f32 kernel wherever the
 * recipe being evaluated lives. */
void kiln_runctx_open_f32(const KilnRunCtx *base, KilnRunCtx *f32);
void kiln_runctx_close_f32(KilnRunCtx *f32);

/* The calibration text (as kiln_calib_text) tokenized as one sequence, at most max
 * ids; the count, or -1 with d set. */
struct KilnTokenizer;
int kiln_calib_tokens(const struct KilnTokenizer *tk, const char *text, int32_t *ids, int max,
                      KilnDiag *d);

/* The calibration text's lines (text NULL: the Bible's calibration range; else the
 * first tenth of that file, as kiln eval splits it). *lines malloc'd, each line too. */
int kiln_calib_text(const char *text, char ***lines, int *n, KilnDiag *d);

/* ------------------------------------------------------------------ quantize.c */

typedef struct KilnQuantizeOpts {
    const char *recipe, *model, *out, *target, *text;
    bool verbose;
    bool dequant; /* also write OUT.kiln_dequant.safetensors: kiln's dequantized weights */
    struct KilnProgress *progress; /* the methods' stages and layers; NULL: none */
} KilnQuantizeOpts;

/* kiln quantize: the recipe's methods on the model, written as a compressed-tensors
 * checkpoint into o->out (docs/checkpoints.md). */
int kiln_quantize(const KilnQuantizeOpts *o, KilnDiag *d);
/* The layers the recipe quantizes, as c->lin (ignored ones left to kiln_*_export):
 * weights as kiln binds them (a method's grid, or round to nearest), activation
 * schemes, and static activation scales as kiln_static_act_params gives them (so the
 * layers must have captured their calibration rows, kiln_*_capture_static). Each layer's
 * codes are made from its KilnLinear when the checkpoint is written (KilnQLinear.fill,
 * one layer at a time), so the layers must outlive the writes and keep their weights. */
struct KilnCheckpoint;
int kiln_quantize_linears(const KilnRunCtx *rc, KilnLinear *ls, int nl,
                          struct KilnCheckpoint *c, KilnDiag *d);

/* Default model locations ($KILN_MODELS_DIR, else ~/.cache/kiln/models). */
int kiln_model_path(const char *which, char *buf, size_t n, KilnDiag *d);
/* What a Hugging Face directory's config.json "architectures" names: "llama"
 * (LlamaForCausalLM), "bert" (Bert*), or NULL (no config.json, or another model).
 * (model/nets/hfdir.c) */
const char *kiln_hf_arch(const char *dir);
int kiln_eval(const KilnEvalOpts *o, KilnDiag *d);
/* The kernels of the layers in short ("qgemm_w8a8... x210, f32 x1"), as kiln eval's
 * table shows them. */
void kiln_kernels_summary(const KilnLinear *ls, int n, char *out, size_t cap);

/* ------------------------------------------------------------------ generate.c, chat.c */

/* kiln generate (docs/generate.md): a decoder under a recipe continues a prompt (in the
 * model's chat template unless no_chat), streaming the text to stdout. */
typedef struct KilnGenerateOpts {
    const char *recipe, *model, *target;
    const char *prompt;
    int n;             /* tokens to generate at most (>= 1) */
    float temp, top_p; /* temp 0: greedy */
    uint64_t seed;
    int threads;       /* 0: kiln's default (KILN_NUM_THREADS, else every core) */
    bool no_chat, json, verbose;
    struct KilnProgress *progress; /* loading and calibration stages; NULL: none */
} KilnGenerateOpts;
int kiln_generate(const KilnGenerateOpts *o, KilnDiag *d);
/* Whether some layer's rule has static activations with no scale of its own, which
 * calibrate on text (model/eval/quantize.c). */
bool kiln_needs_static_calib(const KilnRunCtx *rc, const KilnLinear *ls, int nl);
/* The model's chat template text (NULL: it ships none): GGUF tokenizer.chat_template; in a
 * Hugging Face directory chat_template.jinja, else tokenizer_config.json's chat_template
 * (a string, or the "default" of a named list). kiln quantize writes it into
 * tokenizer_config.json. */
const char *kiln_llama_chat_template(const KilnLlama *m);

#endif
