/* model/nets/shapes.h — what a network's configuration says its tensors are, checked against
 * the tensors a file holds before the loader allocates anything: every dimension of every
 * tensor (so the layer count is backed by tensors present), float hyperparameters by range,
 * the tokenizer's ids against the embedding rows (docs/hardening.md, "Model files whose
 * parts disagree"). The loaders and the model-file fuzzers run the same checks; only
 * model/files and the tokenizers are needed. Not a public header. */
#ifndef KILN_MODEL_SHAPES_H
#define KILN_MODEL_SHAPES_H

#include "model/files/modelfile.h"
#include "runtime/runtime.h"

struct KilnLlama;       /* model/nets/llama_internal.h */
struct KilnLlamaSource;

/* Limits of the float hyperparameters: a norm epsilon in (0, 1], a RoPE base in (1, 1e12]. */
#define KILN_EPS_MAX 1.0
#define KILN_ROPE_BASE_MAX 1e12

/* The dims of tensor `name` (outermost first) into dim: its rank, or -1 when absent. */
typedef int (*KilnDimsFn)(void *ctx, const char *name, int64_t dim[4]);

/* Tensor `name` must be [d0] (d1 < 0) or [d0, d1]; errors name where, the tensor, both
 * shapes. */
int kiln_shape_want(const char *where, KilnDimsFn dims, void *ctx, const char *name, int64_t d0,
                    int64_t d1, KilnDiag *d);
/* Float hyperparameter `key` of where: finite and in (lo, hi]. */
int kiln_shape_float(const char *where, const char *key, double v, double lo, double hi,
                     KilnDiag *d);
/* Every id the tokenizer can produce indexes the embedding: its vocabulary <= rows. */
int kiln_shape_vocab(const char *where, int tok_n, int64_t rows, KilnDiag *d);

/* ------------------------------------------------------------------ Llama */

/* Every tensor s names, with the dims m's sizes give it (s->dims), before any is read:
 * the blocks m->nlayers says, each block's norms and linear layers, embeddings and head. */
int kiln_llama_check_shapes(const struct KilnLlama *m, const struct KilnLlamaSource *s,
                            KilnDiag *d);
/* A GGUF's hyperparameters into m (sizes, eps, theta; vocab from token_embd's rows),
 * checked against each other; features kiln does not implement (RoPE scaling, partial
 * rotary, experts) refused. */
int kiln_llama_gguf_config(const KilnModelFile *mf, const char *path, struct KilnLlama *m,
                           KilnDiag *d);
/* A GGUF's tensor names and kiln_mf_dims (the reading callbacks are llama.c's). */
void kiln_llama_gguf_names(const KilnModelFile *mf, const char *path, struct KilnLlamaSource *s);
int kiln_mf_dims(void *mf, const char *name, int64_t dim[4]);
/* The GGUF names of a block's linear layers, in L_* order ("attn_q"...). */
extern const char *const kiln_llama_gguf_lin_names[];

/* ------------------------------------------------------------------ BERT */

typedef struct KilnBertConfig {
    int nlayers, d, nheads, ffn, maxpos, vocab, ntype;
    float eps;
} KilnBertConfig;

/* config.json of a BERT (where: its path, for errors). */
int kiln_bert_config(const KilnJson *cfg, const char *where, KilnBertConfig *c, KilnDiag *d);
/* Every tensor a BERT of config c reads, with its dims, before any is read. */
int kiln_bert_check_shapes(const KilnBertConfig *c, const char *where, KilnDimsFn dims, void *ctx,
                           KilnDiag *d);

#endif
