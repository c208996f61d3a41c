/* model/nets/llama_internal.h — what llama.c (GGUF loading, the forward pass) and hf_llama.c
 * (Hugging Face directories) share: the KilnLlama struct. Not a public header. */
#ifndef KILN_LLAMA_INTERNAL_H
#define KILN_LLAMA_INTERNAL_H

#include "model/checkpoints/checkpoint.h"
#include "model/model.h"
#include "model/tokenizers/tokenizer.h"

enum { L_Q, L_K, L_V, L_O, L_GATE, L_UP, L_DOWN, L_PER };

struct KilnLlama {
    int nlayers, d, nh, nkv, hd, ffn, vocab, ctx_max;
    float eps, theta;
    float *emb;                /* [vocab, d]; NULL: rows read from emb_t (a GGUF) */
    /* A GGUF stays mapped for the run: the embedding rows and the linear layers' f32
     * weights are read from it when needed, not kept in f32 (docs/hardening.md, "Memory"). */
    struct KilnModelFile *mf;
    const struct KilnModelTensor *emb_t;
    float **attn_norm, **ffn_norm, *out_norm;
    KilnLinear *lin;           /* nlayers * L_PER, then lm_head */
    KilnTokenizer *tok;
    char tok_err[512]; /* why tok is NULL: the model still runs on token ids */
    /* An HF directory with a quantized checkpoint: owns the KilnQLinear that each
     * linear's `stored` points to (NULL otherwise). */
    KilnCheckpoint *ck;
    /* the chat template the model ships (GGUF tokenizer.chat_template, an HF directory's
     * chat_template.jinja or tokenizer_config.json); NULL when none. Owned. */
    char *chat_template;
};

/* The module names of a block's linear layers, in L_* order ("self_attn.q_proj"...). */
extern const char *const kiln_llama_hf_names[L_PER];
/* Linear j (L_*) of block `layer`: its HF name, N, K and the model's own activation. */
void kiln_llama_linear_init(const KilnLlama *m, int layer, int j, KilnLinear *l);

/* Where a loader reads the network's tensors: their names in that file format and how to
 * read a vector and a linear layer. One walk over KilnLlama's tensors serves GGUF files
 * (llama.c) and Hugging Face directories (hf_llama.c). */
typedef struct KilnLlamaSource {
    const char *where;               /* the file or directory, for errors */
    const char *count_key;           /* the metadata key of the block count */
    const char *emb, *out_norm;      /* tensor names */
    const char *attn_norm, *ffn_norm; /* printf formats, %d: the block */
    const char *lin_fmt;             /* linear j's weight: %d the block, %s lin_names[j] */
    const char *const *lin_names;    /* [L_PER] */
    const char *head, *tied_src;     /* the output head's name; its source when tied */
    bool tied;                       /* the head may be the embeddings when absent */
    void *ctx;
    /* The dims of a tensor without reading it: its rank, -1 when absent
     * (model/nets/shapes.h checks them all before anything is allocated). */
    int (*dims)(void *ctx, const char *name, int64_t dim[4]);
    int (*vec)(void *ctx, const char *name, int64_t numel, float **out, KilnDiag *d);
    /* Optional: sets up the embeddings instead of vec (a GGUF: read by row from the file). */
    int (*emb_src)(void *ctx, KilnLlama *m, KilnDiag *d);
    bool (*has_head)(void *ctx);
    /* Linear j (L_*) of block `layer`, or the head (j = L_PER): l has its name, N and K. */
    int (*linear)(void *ctx, KilnLlama *m, int layer, int j, KilnLinear *l, KilnDiag *d);
} KilnLlamaSource;

/* Checks every tensor's dims against m's sizes (kiln_llama_check_shapes), then allocates the
 * per-block tables of m and reads every tensor from s. */
int kiln_llama_load_tensors(KilnLlama *m, const KilnLlamaSource *s, KilnDiag *d);

/* The embedding row of token id (0 <= id < vocab, checked by the caller) into x[d]. */
void kiln_llama_embed_row(const KilnLlama *m, int32_t id, float *x);

/* llama_forward.c, for block-by-block calibration (model/eval/calib_net.c): the embedding
 * rows of T token ids into x[T, d] (an id outside the embedding is an error), and block
 * `layer` of the decoder on x[T, d] in place at positions pos0.., its K/V written to layer
 * kvl of kv (a cache of one layer serves one block at a time) -- what kiln_llama_forward
 * does for each block, the same operations in the same order. */
int kiln_llama_embed(const KilnLlama *m, const int32_t *ids, int T, int pos0, float *x,
                     KilnDiag *d);
int kiln_llama_block(KilnLlama *m, struct KilnPool *pool, KilnKVCache *kv, int kvl, int layer,
                     float *x, int T, int pos0, KilnDiag *d);

/* hf_llama.c: loads a Llama from a Hugging Face directory (config.json, *.safetensors,
 * tokenizer.json), plain or quantized (model/checkpoints/checkpoint.h). */
int kiln_llama_load_hf(const char *dir, KilnLlama **out, KilnDiag *d);

#endif
