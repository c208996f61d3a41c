/* model/checkpoints/ckpt_internal.h — what ckpt_read.c (the directory, its files, config.json and
 * which scheme each module has) and ckpt_layouts.c (decoding each layout's tensors into
 * a KilnQLinear) share. Not a public header. */
#ifndef KILN_CKPT_INTERNAL_H
#define KILN_CKPT_INTERNAL_H

#include "model/checkpoints/checkpoint.h"
#include "model/files/modelfile.h"
#include "runtime/runtime.h"

/* One tensor of the directory, whichever file holds it. */
typedef struct KilnCkTensor {
    const char *name;
    const KilnModelTensor *t;
    const KilnModelFile *mf;
    const char *file;  /* its file's name, for messages */
    const char *dtype; /* the file's own dtype name: "I32", "F8_E4M3", ... */
    bool used;         /* taken by a quantized module */
} KilnCkTensor;

/* All *.safetensors of a directory (one file, or the shards an index names). */
typedef struct KilnCkSrc {
    const char *dir;
    KilnModelFile **mf;
    int nmf;
    KilnCkTensor *e; /* sorted by name */
    int ne;
    /* kiln_checkpoint_open: the files stay mapped with the checkpoint; quantized layers'
     * codes and the plain tensors are read from them when needed, not at once */
    bool mapped;
} KilnCkSrc;

/* Where a quantized layer's codes sit in its file tensor, and how one row of them decodes
 * (kiln_ck_codes_row): each layout's own loop, shared by the reader that decodes every row
 * at once and by a mapped checkpoint, whose rows are decoded when needed
 * (kiln_qlinear_rows). */
typedef enum { KILN_CK_PACKED, KILN_CK_NAIVE, KILN_CK_GPTQ, KILN_CK_AWQ } KilnCkKind;
struct KilnCkCodes {
    const KilnModelFile *mf;
    const KilnModelTensor *t;
    KilnCkKind kind;
    int bits;
    int64_t cols;  /* PACKED: int32 words per row; AWQ: words per input column */
    int shift;     /* GPTQ / AWQ read as symmetric: subtracted from every code */
    int qk_heads;  /* > 0: kiln's row n is HF row kiln_llama_qk_row(n, N, qk_heads) */
};
/* Codes of stored row r (the file's own row order) into out[q->K]. */
void kiln_ck_codes_row(const struct KilnCkCodes *c, const KilnQLinear *q, int64_t r,
                       int16_t *out);
void kiln_ck_src_close(KilnCkSrc *s);

/* What a scheme says of a weight (or activation, or the KV cache). */
typedef struct KilnCkArgs {
    bool present;
    int bits;
    bool is_float;
    bool sym;
    KilnGran gran;  /* TENSOR, CHANNEL, GROUP, TOKEN; block → GROUP with bh, bw set */
    int group;
    int bh, bw;     /* compressed-tensors "block" strategy: [rows, cols] per scale */
    bool dynamic;
} KilnCkArgs;

/* AutoGPTQ quantize_config. */
typedef struct KilnGptqCfg {
    int bits, group; /* group -1: one group (per channel) */
    bool v2;         /* checkpoint_format gptq_v2: zeros stored as they are */
} KilnGptqCfg;

/* ckpt_read.c: the tensor `module.suffix`, or NULL; c->ignore from a JSON array of names. */
KilnCkTensor *kiln_ck_find(KilnCkSrc *s, const char *module, const char *suffix);
int kiln_ck_ignore_list(KilnCheckpoint *c, const KilnJson *names, KilnDiag *d);

/* JSON members of one kind (NULL / false / dflt when absent or of another kind). */
static inline const KilnJson *kiln_ck_jget(const KilnJson *o, const char *k, KilnJsonKind kind)
{
    const KilnJson *v = o ? kiln_json_get(o, k) : NULL;
    return v && v->kind == kind ? v : NULL;
}
static inline bool kiln_ck_jint(const KilnJson *o, const char *k, int64_t *out)
{
    const KilnJson *v = kiln_ck_jget(o, k, KILN_JSON_NUMBER);
    if (v && v->is_int)
        *out = v->i;
    return v && v->is_int;
}
static inline bool kiln_ck_jbool(const KilnJson *o, const char *k, bool dflt)
{
    const KilnJson *v = kiln_ck_jget(o, k, KILN_JSON_BOOL);
    return v ? v->b : dflt;
}
static inline const char *kiln_ck_jstr(const KilnJson *o, const char *k)
{
    const KilnJson *v = kiln_ck_jget(o, k, KILN_JSON_STRING);
    return v ? v->str : NULL;
}

/* ckpt_ct.c: compressed-tensors' quantization_config qc, inside the config.json document
 * `config` (format, config_groups, ignore, kv_cache_scheme; c->format, c->act, c->kv,
 * c->ignore set), then each layer by the group that targets it. */
typedef struct KilnCtCfg {
    struct KilnCtGroup *groups;
    int ngroups;
    struct KilnCkRegexes *rx; /* the groups' "re:" targets, compiled once (ckpt_regex.h) */
} KilnCtCfg;
int kiln_ck_ct_config(const char *dir, const KilnJson *config, const KilnJson *qc,
                      KilnCheckpoint *c, KilnCtCfg *cfg, KilnDiag *d);
int kiln_ck_ct_layer(KilnCkSrc *s, const KilnCtCfg *cfg, const char *m, KilnQLinear *q,
                     KilnDiag *d);
void kiln_ck_ct_free(KilnCtCfg *cfg);

/* ckpt_layouts.c: one module each; q->name is set by the caller. Errors name the file
 * and the tensor. Tensors they read are marked used. */
int kiln_ck_ct_module(KilnCkSrc *s, const char *m, const KilnCkArgs *w, KilnQLinear *q,
                      KilnDiag *d);
int kiln_ck_gptq_module(KilnCkSrc *s, const char *m, const KilnGptqCfg *g, KilnQLinear *q,
                        KilnDiag *d);
int kiln_ck_awq_module(KilnCkSrc *s, const char *m, int bits, int group, KilnQLinear *q,
                       KilnDiag *d);

#endif
