/* tests/interop/write_ckpt.c — kiln_interop_write OUTDIR [--smollm2]: the checkpoints
 * check_compressed_tensors.py hands to compressed-tensors and Hugging Face, each with
 * kiln's own dequantized weights beside it (NAME.kiln_dequant.safetensors, outside the
 * directory as `kiln quantize --dequant` puts it, so kiln's reader sees no extra shard):
 *   OUTDIR/mixed       the synthetic layers of tests/ckpt_synth.h, one per layout
 *   OUTDIR/mixed_gidx  the same with an act-order layer (weight_g_idx, legacy)
 *   OUTDIR/smollm2     (--smollm2) the real SmolLM2 exported as a Hugging Face model:
 *                      attention int8 per channel, MLP int4 g128 (ragged on K = 576),
 *                      and smollm2.kiln_ref.safetensors: token ids of a text and
 *                      kiln's logits for them with the dequantized weights, a prompt's
 *                      ids and kiln's greedy continuation of it
 *   OUTDIR/smollm2_asym (--smollm2) the same, int4 g128 asymmetric everywhere */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../ckpt_synth.h"
#include "model/model.h"
#include "model/files/modelfile.h"
#include "model/tokenizers/tokenizer.h"

static const char ref_text[] =
    "In the beginning God created the heaven and the earth. 1234 apples, "
    "<|im_start|>user\nWhat is 2+2?<|im_end|>";
static const char gen_prompt[] = "The capital of France is";

static int fail(const KilnDiag *d)
{
    char m[1400];
    fprintf(stderr, "kiln_interop_write: %s\n", kiln_diag_format(d, m, sizeof m));
    return 1;
}

static int write_dir(const char *out, const char *name, const KilnCheckpoint *c, KilnDiag *d)
{
    char dir[4200], path[4300];
    snprintf(dir, sizeof dir, "%s/%s", out, name);
    int rc = kiln_checkpoint_write(dir, c, d);
    snprintf(path, sizeof path, "%s.kiln_dequant.safetensors", dir);
    if (!rc)
        rc = kiln_checkpoint_write_dequant(path, c, d);
    if (!rc)
        printf("wrote %s (%d quantized layers)\n", dir, c->nlin);
    return rc;
}

/* The layer quantized by kiln's round-to-nearest in spec, as a KilnQLinear; l->w is
 * replaced by its dequantized weight so the model runs what the checkpoint holds. */
static int quantize_layer(KilnLinear *l, const KilnQuantSpec *spec, KilnQLinear *q, KilnDiag *d)
{
    memset(q, 0, sizeof *q);
    int rc = kiln_linear_wget(l, d); /* a GGUF's f32 weights are read when needed */
    if (rc)
        return rc;
    snprintf(q->name, sizeof q->name, "%s", l->name);
    q->N = l->N, q->K = l->K, q->spec = *spec;
    q->ngroups = spec->gran == KILN_GRAN_GROUP ? (l->K + spec->group - 1) / spec->group : 1;
    q->nscale = spec->gran == KILN_GRAN_TENSOR ? 1 : l->N * q->ngroups;
    KilnDType dt = kiln_qformat_storage(spec->fmt, spec->symmetric);
    size_t rb = kiln_row_bytes(dt, l->K);
    uint8_t *raw = malloc(rb * (size_t)l->N);
    q->codes = malloc(sizeof(int16_t) * (size_t)(l->N * l->K));
    q->scale = malloc(sizeof(float) * (size_t)q->nscale);
    q->zero = spec->symmetric ? NULL : malloc(sizeof(int32_t) * (size_t)q->nscale);
    rc = raw && q->codes && q->scale && (spec->symmetric || q->zero)
                 ? kiln_quantize_matrix(spec, l->w, l->N, l->K, raw, q->scale, q->zero, d)
                 : kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
    for (int64_t n = 0; !rc && n < l->N; n++)
        for (int64_t k = 0; k < l->K; k++)
            q->codes[n * l->K + k] = (int16_t)kiln_code_get(dt, raw + (size_t)n * rb, k);
    free(raw);
    if (!rc) {
        kiln_qlinear_dequant(q, l->w);
        l->w_dirty = true; /* no longer the file's weights: kept */
    }
    return rc;
}

/* kiln's greedy continuation of prompt: GEN_TOKENS ids into gen (the f32 KV cache). */
enum { GEN_TOKENS = 8 };
static int greedy(KilnLlama *m, const KilnTokenizer *tok, const char *prompt, int32_t *pids,
                  int *np, int32_t *gen, KilnDiag *d)
{
    int T = kiln_tok_encode(tok, prompt, 0, pids, 64, NULL, d);
    if (T <= 0)
        return d->code ? d->code : KILN_EINTERNAL;
    *np = T;
    KilnKVCache kv = {0};
    KilnKVSpec f32 = {.fmt = KILN_KV_F32};
    int rc = kiln_llama_kv_init(m, &kv, &f32, T + GEN_TOKENS, d);
    int V = kiln_llama_vocab(m);
    float *lg = rc ? NULL : malloc(sizeof(float) * (size_t)V);
    if (!rc && !lg)
        rc = kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
    for (int i = 0, pos = 0; !rc && i < GEN_TOKENS; i++) {
        const int32_t *in = i ? &gen[i - 1] : pids;
        int n = i ? 1 : T;
        if ((rc = kiln_llama_forward(m, NULL, &kv, in, n, pos, 1, lg, d)))
            break;
        pos += n;
        int best = 0;
        for (int v = 1; v < V; v++)
            if (lg[v] > lg[best])
                best = v;
        gen[i] = best;
    }
    free(lg);
    kiln_kv_free(&kv);
    return rc;
}

/* The reference beside DIR: the text's ids and kiln's logits for them, the prompt's ids
 * and kiln's greedy tokens; metadata: the texts, and how transformers must load DIR. */
static int write_ref(const char *dir, KilnLlama *m, const KilnTokenizer *tok, const char *load,
                     KilnDiag *d)
{
    int32_t ids[256], pids[64], gen[GEN_TOKENS];
    int T = kiln_tok_encode(tok, ref_text, 0, ids, 256, NULL, d), np = 0;
    if (T <= 0)
        return d->code ? d->code : KILN_EINTERNAL;
    int V = kiln_llama_vocab(m);
    float *logits = malloc(sizeof(float) * (size_t)T * (size_t)V);
    KilnKVCache kv = {0};
    KilnKVSpec f32 = {.fmt = KILN_KV_F32};
    int rc = logits ? kiln_llama_kv_init(m, &kv, &f32, T, d)
                    : kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
    if (!rc) {
        rc = kiln_llama_forward(m, NULL, &kv, ids, T, 0, T, logits, d);
        kiln_kv_free(&kv);
    }
    if (!rc)
        rc = greedy(m, tok, gen_prompt, pids, &np, gen, d);
    KilnModelTensor ref[4] = {
        {.name = "ids", .type = KILN_MT_I32, .rank = 1, .dim = {T}, .numel = T, .data = ids,
         .nbytes = sizeof(int32_t) * (size_t)T},
        {.name = "logits", .type = KILN_MT_F32, .rank = 2, .dim = {T, V},
         .numel = (int64_t)T * V, .data = logits,
         .nbytes = sizeof(float) * (size_t)T * (size_t)V},
        {.name = "prompt_ids", .type = KILN_MT_I32, .rank = 1, .dim = {np}, .numel = np,
         .data = pids, .nbytes = sizeof(int32_t) * (size_t)np},
        {.name = "greedy", .type = KILN_MT_I32, .rank = 1, .dim = {GEN_TOKENS},
         .numel = GEN_TOKENS, .data = gen, .nbytes = sizeof gen},
    };
    const char *meta[6] = {"text", ref_text, "prompt", gen_prompt, "load", load};
    char refp[4300];
    snprintf(refp, sizeof refp, "%s.kiln_ref.safetensors", dir);
    if (!rc)
        rc = kiln_safetensors_write(refp, ref, 4, meta, 3, d);
    free(logits);
    return rc;
}

/* The real SmolLM2 exported as OUTDIR/NAME: attention quantized as attn, the MLP as mlp
 * (lm_head stays tied to the embeddings), with its reference (write_ref) beside it. */
static int smollm2(const char *out, const char *name, const KilnQuantSpec *attn,
                   const KilnQuantSpec *mlp, const char *load, KilnDiag *d)
{
    char path[4096];
    int rc = kiln_model_path("smollm2", path, sizeof path, d);
    if (rc)
        return rc;
    KilnLlama *m = NULL;
    if ((rc = kiln_llama_load(path, &m, d)))
        return rc;
    int nl = 0;
    KilnLinear *ls = kiln_llama_linears(m, &nl);
    KilnCheckpoint c = {0};
    c.lin = calloc((size_t)nl, sizeof *c.lin);
    if (!c.lin)
        rc = kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
    for (int i = 0; !rc && i < nl - 1; i++) /* lm_head (tied) stays as the embeddings */
        if (!(rc = quantize_layer(&ls[i], strstr(ls[i].name, ".mlp.") ? mlp : attn,
                                  &c.lin[c.nlin], d)))
            c.nlin++;
    /* kiln's logits and tokens with the weights the checkpoint holds */
    const KilnTokenizer *tok = rc ? NULL : kiln_llama_tokenizer(m, d);
    if (!rc && !tok)
        rc = d->code ? d->code : KILN_EINTERNAL;
    char dir[4200];
    snprintf(dir, sizeof dir, "%s/%s", out, name);
    if (!rc)
        rc = write_ref(dir, m, tok, load, d);
    if (!rc)
        rc = kiln_llama_export(m, &c, d);
    if (!rc)
        rc = write_dir(out, name, &c, d);
    kiln_checkpoint_free(&c);
    kiln_llama_free(m);
    return rc;
}

/* smollm2: attention int8 per channel, MLP int4 g128 symmetric, two config groups,
 * loaded the default way. smollm2_asym: int4 g128 asymmetric everywhere (recipes/
 * w4a16-g128-asym.lua; one config group, K = 576 and 1536 both stored at g64):
 * transformers 5.x's default load refuses asymmetric pack-quantized layers, so it is
 * loaded with CompressedTensorsConfig(dequantize=True). */
static int smollm2_all(const char *out, KilnDiag *d)
{
    const KilnQuantSpec i8 = {.fmt = KILN_QF_INT8, .symmetric = true, .gran = KILN_GRAN_CHANNEL};
    const KilnQuantSpec i4 = {.fmt = KILN_QF_INT4, .symmetric = true, .gran = KILN_GRAN_GROUP,
                              .group = 128};
    const KilnQuantSpec i4a = {.fmt = KILN_QF_INT4, .symmetric = false, .gran = KILN_GRAN_GROUP,
                               .group = 128};
    int rc = smollm2(out, "smollm2", &i8, &i4, "default", d);
    return rc ? rc : smollm2(out, "smollm2_asym", &i4a, &i4a, "dequantize", d);
}

int main(int argc, char **argv)
{
    if (argc < 2 || argc > 3 || (argc == 3 && strcmp(argv[2], "--smollm2"))) {
        fprintf(stderr, "usage: kiln_interop_write OUTDIR [--smollm2]\n");
        return 2;
    }
    KilnDiag d = {0};
    for (int g = 0; g < 2; g++) {
        KilnCheckpoint c;
        int rc = make_ckpt(&c, g == 1);
        if (rc)
            kiln_diag_set(&d, KILN_EINTERNAL, "out of memory");
        else
            rc = write_dir(argv[1], g ? "mixed_gidx" : "mixed", &c, &d);
        kiln_checkpoint_free(&c);
        if (rc)
            return fail(&d);
    }
    if (argc == 3 && smollm2_all(argv[1], &d))
        return fail(&d);
    return 0;
}
