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
    float *emb;                /* [vocab, d] */
    float **attn_norm, **ffn_norm, *out_norm;
    KilnLinear *lin;           /* nlayers * L_PER, then lm_head */
    KilnTokenizer *tok;
    char tok_err[512]; /* why tok is NULL: the model still runs on token ids */
    /* An HF directory with a quantized checkpoint: owns the KilnQLinear that each
     * linear's `stored` points to (NULL otherwise). */
    KilnCheckpoint *ck;
};

/* The module names of a block's linear layers, in L_* order ("self_attn.q_proj"...). */
extern const char *const kiln_llama_hf_names[L_PER];
/* Linear j (L_*) of block `layer`: its HF name, N, K and the model's own activation. */
void kiln_llama_linear_init(const KilnLlama *m, int layer, int j, KilnLinear *l);

/* hf_llama.c: loads a Llama from a Hugging Face directory (config.json, *.safetensors,
 * tokenizer.json), plain or quantized (model/checkpoints/checkpoint.h). */
int kiln_llama_load_hf(const char *dir, KilnLlama **out, KilnDiag *d);

#endif
