/* tests/ckpt_synth.h — the synthetic mixed checkpoint that test_checkpoint.c checks
 * and tests/interop/write_ckpt.c hands to compressed-tensors: one quantized layer per
 * layout the writer has (static inline: every test is its own program). */
#ifndef KILN_TESTS_CKPT_SYNTH_H
#define KILN_TESTS_CKPT_SYNTH_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ir/numerics.h"
#include "model/checkpoints/checkpoint.h"

static uint64_t synth_rng = 0x9E3779B97F4A7C15ull;
static inline uint32_t rnd(void)
{
    synth_rng ^= synth_rng << 13, synth_rng ^= synth_rng >> 7, synth_rng ^= synth_rng << 17;
    return (uint32_t)(synth_rng >> 11);
}
static inline float rndf(void) { return (float)(rnd() % 20001) / 10000.0f - 1.0f; }

/* A layer with random codes in its format's range and positive scales. */
static inline void make_layer(KilnQLinear *q, const char *name, int64_t N, int64_t K,
                              KilnQFormat f, bool sym, KilnGran g, int group)
{
    memset(q, 0, sizeof *q);
    snprintf(q->name, sizeof q->name, "%s", name);
    q->N = N, q->K = K;
    q->spec.fmt = f, q->spec.symmetric = sym, q->spec.gran = g, q->spec.group = group;
    q->ngroups = g == KILN_GRAN_GROUP ? (K + group - 1) / group : 1;
    q->nscale = g == KILN_GRAN_TENSOR ? 1 : N * q->ngroups;
    q->codes = malloc(sizeof(int16_t) * (size_t)(N * K));
    q->scale = malloc(sizeof(float) * (size_t)q->nscale);
    int bits = f == KILN_QF_INT4 ? 4 : 8;
    for (int64_t i = 0; i < N * K; i++) {
        if (f == KILN_QF_FP8_E4M3)
            q->codes[i] = (int16_t)kiln_fp8_e4m3_encode(rndf() * 400.0f);
        else if (sym)
            q->codes[i] = (int16_t)((int)(rnd() % (1u << bits)) - (1 << (bits - 1)));
        else
            q->codes[i] = (int16_t)(rnd() % (1u << bits));
    }
    for (int64_t i = 0; i < q->nscale; i++)
        q->scale[i] = 0.001f + (float)(rnd() % 1000) * 1e-4f;
    if (!sym) {
        q->zero = malloc(sizeof(int32_t) * (size_t)q->nscale);
        for (int64_t i = 0; i < q->nscale; i++)
            q->zero[i] = (int32_t)(rnd() % (1u << bits));
    }
}

/* The synthetic mixed checkpoint: one layer per layout the writer has. */
enum { L_G32, L_RAGGED, L_I8CH, L_FP8, L_GIDX, L_TRIVIAL, L_I8T, NL };

static inline int make_ckpt(KilnCheckpoint *c, bool with_gidx)
{
    memset(c, 0, sizeof *c);
    c->lin = calloc(NL, sizeof *c->lin);
    c->nlin = NL;
    KilnQLinear *l = c->lin;
    /* int4 symmetric g32, weight-only: pack-quantized */
    make_layer(&l[L_G32], "model.layers.0.mlp.up_proj", 16, 64, KILN_QF_INT4, true,
               KILN_GRAN_GROUP, 32);
    /* the first 8 codes of row 0 spell a known word: stored 0..7 -> 0x76543210 */
    for (int k = 0; k < 8; k++)
        l[L_G32].codes[k] = (int16_t)(k - 8);
    l[L_G32].bias = malloc(sizeof(float) * 16);
    for (int i = 0; i < 16; i++)
        l[L_G32].bias[i] = rndf();
    /* int4 asymmetric g128 on K = 192 (a ragged group of 64), 12 rows: zero points
     * packed into 2 words per group */
    make_layer(&l[L_RAGGED], "model.layers.0.mlp.down_proj", 12, 192, KILN_QF_INT4, false,
               KILN_GRAN_GROUP, 128);
    /* int8 symmetric per channel with dynamic int8 per-token activations: int-quantized */
    make_layer(&l[L_I8CH], "model.layers.0.self_attn.q_proj", 8, 40, KILN_QF_INT8, true,
               KILN_GRAN_CHANNEL, 0);
    l[L_I8CH].act = (KilnQuantSpec){.fmt = KILN_QF_INT8, .symmetric = true,
                                    .gran = KILN_GRAN_TOKEN, .dynamic = true};
    /* fp8 e4m3 per channel with static fp8 activations: float-quantized + input_scale */
    make_layer(&l[L_FP8], "model.layers.0.self_attn.k_proj", 8, 24, KILN_QF_FP8_E4M3, true,
               KILN_GRAN_CHANNEL, 0);
    l[L_FP8].act = (KilnQuantSpec){.fmt = KILN_QF_FP8_E4M3, .symmetric = true,
                                   .gran = KILN_GRAN_TENSOR};
    l[L_FP8].act_scale = 0.0375f;
    /* int4 symmetric g16 with act-order groups (with_gidx): weight_g_idx */
    make_layer(&l[L_GIDX], "model.layers.0.self_attn.v_proj", 8, 48, KILN_QF_INT4, true,
               KILN_GRAN_GROUP, 16);
    if (with_gidx) { /* compressed-tensors 0.20 reads no g_idx: the interop check leaves it out */
        l[L_GIDX].g_idx = malloc(sizeof(int32_t) * 48);
        for (int k = 0; k < 48; k++)
            l[L_GIDX].g_idx[k] = (k * 7) % 3; /* a permutation's groups, not k / 16 */
    }
    /* a g_idx that says k / group is dropped: same scheme as L_G32 */
    make_layer(&l[L_TRIVIAL], "model.layers.1.mlp.up_proj", 16, 64, KILN_QF_INT4, true,
               KILN_GRAN_GROUP, 32);
    l[L_TRIVIAL].g_idx = malloc(sizeof(int32_t) * 64);
    for (int k = 0; k < 64; k++)
        l[L_TRIVIAL].g_idx[k] = k / 32;
    /* int8 asymmetric per tensor, weight-only: pack-quantized with 4 codes a word */
    make_layer(&l[L_I8T], "model.layers.0.self_attn.o_proj", 4, 20, KILN_QF_INT8, false,
               KILN_GRAN_TENSOR, 0);
    KilnDiag d = {0};
    float norm[6] = {1, 2, 3, 4, 5, 6};
    const char *cfg = "{\"model_type\": \"llama\", \"hidden_size\": 6, "
                      "\"quantization_config\": {\"old\": 1}}";
    const char *tok = "{\"version\": \"1.0\"}\n";
    c->kv = (KilnQuantSpec){.fmt = KILN_QF_FP8_E4M3, .symmetric = true, .gran = KILN_GRAN_TENSOR};
    c->config_json = strdup(cfg);
    if (!c->config_json ||
        kiln_checkpoint_add_tensor(c, "model.norm.weight", 1, (int64_t[]){6}, norm, &d) ||
        kiln_checkpoint_add_ignore(c, "lm_head", &d) ||
        kiln_checkpoint_add_file(c, "sub/tokenizer.json", tok, strlen(tok), &d))
        return -1;
    return 0;
}

#endif
