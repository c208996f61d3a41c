/* model/eval/perplexity.h — kiln eval's perplexity of a decoder over a sliding window
 * (model/eval/perplexity.c; methodology: docs/models.md). */
#ifndef KILN_MODEL_EVAL_PERPLEXITY_H
#define KILN_MODEL_EVAL_PERPLEXITY_H

#include "model/eval/eval_out.h"
#include "model/model.h"

struct KilnProgress;

typedef struct KilnPplCfg {
    int32_t *ids;
    int ntok, window, stride;
    int head_rows; /* rows of logits at a time (PPL_HEAD_ROWS, or the window: head_rows()) */
    struct KilnProgress *prog;
} KilnPplCfg;

/* Perplexity of c->ids under the model's current layers into row (metric, speed, KV). */
int kiln_decoder_ppl(KilnLlama *m, struct KilnPool *pool, const KilnKVSpec *kvs,
                     const KilnKVCache *calib, const KilnPplCfg *c, KilnEvalRow *row,
                     KilnDiag *d);
/* Rows of logits made at a time for the recipe's head (KilnPplCfg.head_rows). */
int kiln_ppl_head_rows(const KilnRunCtx *rc, const KilnLinear *head, int window);

#endif
