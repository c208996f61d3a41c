/* model/nets/hfdir.h — a Hugging Face model directory's tensors for the model loaders
 * (bert.c, hf_llama.c): config.json, and every tensor through kiln_checkpoint_open (the
 * files mapped, each tensor read when a loader takes it), so that a plain and a quantized
 * directory load the same way: a quantized linear layer comes back as its stored form,
 * dequantized when needed. Not a public header. */
#ifndef KILN_HFDIR_H
#define KILN_HFDIR_H

#include "model/checkpoints/checkpoint.h"
#include "model/files/modelfile.h"
#include "model/model.h"
#include "runtime/runtime.h"

typedef struct KilnHfDir {
    const char *dir;
    KilnJson *config;   /* config.json */
    KilnCheckpoint *ck; /* owned until kiln_hf_take_checkpoint */
    /* ck's tensors and quantized layers by name (indices, sorted): a lookup is a binary
     * search, not a walk over every tensor (a directory of 100k tensors loads in a blink) */
    int *t_by_name, *lin_by_name;
    bool *taken; /* ck's plain tensors the loaders took (read from the mapped file then) */
} KilnHfDir;

int kiln_hf_open(const char *dir, KilnHfDir *h, KilnDiag *d);
void kiln_hf_close(KilnHfDir *h);
/* config.json's integer `key` in [1, 2^24] into *out; dflt (>= 0) when absent. */
int kiln_hf_cfg_int(const KilnHfDir *h, const char *key, int dflt, int *out, KilnDiag *d);
/* A plain tensor as f32, checked to hold numel elements; the caller owns *out (each
 * tensor can be taken once). */
int kiln_hf_take(KilnHfDir *h, const char *name, int64_t numel, float **out, KilnDiag *d);
bool kiln_hf_has(const KilnHfDir *h, const char *name);
/* The dims of tensor `name` as the loaders will read it (model/nets/shapes.h): a plain
 * tensor's, or for MODULE.weight / MODULE.bias of a quantized layer [N, K] / [N]; its
 * rank, -1 when absent. ctx: the KilnHfDir. */
int kiln_hf_dims(void *ctx, const char *name, int64_t dim[4]);
/* Elements of plain tensor `name`, -1 when there is none. */
int64_t kiln_hf_numel(const KilnHfDir *h, const char *name);
/* Plain tensor `name` [rows, cols] read by rows from its own mapping of the file that
 * holds it (*mf the caller's, *t in it), instead of taken whole: the embeddings, looked up
 * a row at a time (docs/hardening.md, "Memory"). 0: so (then taken), 1: not such a tensor
 * or not of a type read by rows (take it instead). */
int kiln_hf_rows(KilnHfDir *h, const char *name, int64_t rows, int64_t cols,
                 KilnModelFile **mf, const KilnModelTensor **t, KilnDiag *d);
/* Linear layer l (N, K set) from `module`: l->w is module.weight, or for a quantized
 * layer NULL with l->stored pointing into the checkpoint (kiln_linear_wget dequantizes it
 * when needed); l->b module.bias when there is one (bias: it must be). */
int kiln_hf_linear(KilnHfDir *h, const char *module, KilnLinear *l, bool bias, KilnDiag *d);
/* True when some linear layer came back quantized. */
bool kiln_hf_quantized(const KilnHfDir *h);
/* The checkpoint, now the caller's (the model keeps it while layers point into it);
 * the plain tensors it held are already taken or dropped. */
KilnCheckpoint *kiln_hf_take_checkpoint(KilnHfDir *h);

#endif
