/* model/checkpoints/ckpt_write.h — what the checkpoint writer's files share
 * (ckpt_write.c: tensors, streamed; ckpt_config.c: config.json's quantization_config). */
#ifndef KILN_CKPT_WRITE_H
#define KILN_CKPT_WRITE_H

#include "model/checkpoints/checkpoint.h"

/* What compressed-tensors calls a layer's scheme, plus how its tensors are stored. */
typedef struct Scheme {
    KilnQuantSpec w, a; /* a.fmt NONE: weight-only */
    int32_t group;      /* group size as stored (see stored_group) */
    bool gidx;          /* act-order groups kept as weight_g_idx (legacy "actorder": "group") */
    const char *format; /* pack-quantized, int-quantized, float-quantized, naive-quantized */
} Scheme;

/* dir/config.json: the model's config with the quantization_config of the layers'
 * schemes (sch[ngrp], layer i in group grp[i]). */
int kiln_ckpt_write_config(const char *dir, const KilnCheckpoint *c, const Scheme *sch,
                           const int *grp, int ngrp, KilnDiag *d);

#endif
