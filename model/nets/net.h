/* model/nets/net.h — the networks kiln runs whole, one operations table each, and the
 * one place that decides which network a model path holds. A third network is one
 * more table (and its file in model/nets/). */
#ifndef KILN_MODEL_NET_H
#define KILN_MODEL_NET_H

#include <stdbool.h>

#include "model/checkpoints/checkpoint.h"
#include "model/model.h"

typedef struct KilnNetOps {
    const char *name; /* "llama", "bert" */
    bool decoder;     /* a decoder is judged by perplexity on tokens, an encoder by the
                       * cosine of sentence embeddings against f32 */
    int (*load)(const char *path, void **net, KilnDiag *d);
    void (*free)(void *net);
    KilnLinear *(*linears)(void *net, int *n);
    /* the quantized model as a checkpoint (kiln quantize); path: the model's source */
    int (*export)(const void *net, const char *path, KilnCheckpoint *ck, KilnDiag *d);
} KilnNetOps;

/* The network of a model path: a .gguf file, or a Hugging Face directory whose
 * config.json names a Llama, is the Llama decoder; any other directory is BERT. */
const KilnNetOps *kiln_net_for(const char *path);

#endif
