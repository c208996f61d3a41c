/* model/checkpoints/checkpoint.h — quantized checkpoints as other tools store them: the
 * compressed-tensors layouts (pack-quantized, int-quantized, float-quantized) that
 * vLLM and Hugging Face load, and the AutoGPTQ / AutoAWQ safetensors layouts.
 * `kiln quantize` writes the first; `kiln eval` with a recipe whose rules say
 * `weights = stored` reads all of them (docs/checkpoints.md). */
#ifndef KILN_CHECKPOINT_H
#define KILN_CHECKPOINT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ir/ir.h"

/* One quantized linear layer y = x·Wᵀ (+ b), W[N, K], as codes plus scales. */
typedef struct KilnQLinear {
    char name[160];     /* module name, Hugging Face style: "model.layers.0.self_attn.q_proj" */
    int64_t N, K;
    /* The weight format: fmt (INT4, INT8, FP8_E4M3, FP8_E5M2), symmetric,
     * gran (TENSOR, CHANNEL or GROUP) and group. */
    KilnQuantSpec spec;
    /* [N*K] row-major codes: int4 -8..7 (symmetric) or 0..15 (asymmetric), int8
     * -128..127 or 0..255, fp8 the raw byte (0..255). Value = scale·(code - zero),
     * fp8: scale·decode(code). */
    int16_t *codes;
    /* Scales per row and group: [N*ngroups] row-major (ngroups = 1 for CHANNEL,
     * ceil(K/group) for GROUP, the last group ragged); TENSOR: nscale = 1. */
    float *scale;
    int64_t ngroups, nscale;
    int32_t *zero;  /* NULL when symmetric; else like scale, in code units */
    /* NULL, or [K]: the group of input column k (act-order checkpoints, where
     * groups are not runs of `group` consecutive columns). */
    int32_t *g_idx;
    float *bias;    /* NULL or [N] */
    /* The activation scheme this layer runs with (fmt NONE: weight-only); the
     * writer groups layers by (weights, activations) into config_groups. */
    KilnQuantSpec act;
    /* Static activation scale (and zero point, asymmetric) calibrated for this layer,
     * written as `input_scale` / `input_zero_point`; 0 when dynamic or weight-only.
     * (Added by h3 for the writer.) */
    float act_scale;
    int32_t act_zero;
    /* Codes, scales and zero points made on demand (kiln quantize makes one layer's at a
     * time while the file is written instead of every layer's before: docs/hardening.md,
     * "Memory"): while codes is NULL, kiln_qlinear_load calls fill(fill_ctx, q, d) for
     * them and turns their rows to the HF layout for qk_heads > 0 (the Q/K rows the
     * export would have turned); kiln_qlinear_unload frees them again. N, K, spec,
     * ngroups, nscale, g_idx, bias and the activation scheme are set from the start. */
    int (*fill)(void *fill_ctx, struct KilnQLinear *q, KilnDiag *d);
    void *fill_ctx;
    int qk_heads;
    /* A layer of a mapped checkpoint (kiln_checkpoint_open): codes stay NULL and rows are
     * decoded from the file when needed (kiln_qlinear_rows); owned. NULL otherwise. */
    struct KilnCkCodes *src;
} KilnQLinear;

/* A file written beside the weights as it is (tokenizer.json, vocab.txt,
 * 1_Pooling/config.json...): name relative to the directory, bytes owned. (h3) */
typedef struct KilnCkptFile {
    char name[128];
    char *data;
    size_t len;
} KilnCkptFile;

/* A non-quantized tensor carried through a checkpoint (embeddings, norms, biases of
 * ignored layers...), f32 in memory. */
typedef struct KilnCkptTensor {
    char name[160];
    int rank;
    int64_t dim[4];
    float *data;
    /* Made on demand instead (data NULL): rows [row0, row0 + nrows) of dim[0] into out,
     * when the writer reaches them, a slice at a time (kiln_llama_export's embeddings:
     * docs/hardening.md, "Memory"); fill_ctx must outlive the writes. */
    int (*fill)(const void *fill_ctx, const void *fill_arg, int64_t row0, int64_t nrows,
                float *out, KilnDiag *d);
    const void *fill_ctx, *fill_arg;
} KilnCkptTensor;

typedef struct KilnCheckpoint {
    KilnQLinear *lin;
    int nlin;
    KilnCkptTensor *t;
    int nt;
    char **ignore; /* module names kept unquantized (compressed-tensors "ignore") */
    int nignore;
    /* activation scheme to record in config_groups (NULL fmt NONE: weight-only) */
    KilnQuantSpec act;
    /* KV cache scheme (fmt NONE: none), and the model's config.json text (owned, may be NULL) */
    KilnQuantSpec kv;
    char *config_json;
    /* which layout the reader found: "pack-quantized", "int-quantized",
     * "float-quantized", "gptq", "awq" */
    char format[32];
    /* Other files of the model directory (the writer writes them; h3). */
    KilnCkptFile *files;
    int nfiles;
    /* kiln_checkpoint_open: the directory's files, mapped until kiln_checkpoint_free */
    struct KilnCkSrc *src;
} KilnCheckpoint;

/* A layer made on demand (fill set): its codes, scales and zeros made, or freed again;
 * nothing for a layer that holds them. */
int kiln_qlinear_load(KilnQLinear *q, KilnDiag *d);
void kiln_qlinear_unload(KilnQLinear *q);
/* Dequantized weight [N*K] into out (the caller's buffer); q holds its codes. */
void kiln_qlinear_dequant(const KilnQLinear *q, float *out);
/* Rows [n0, n0 + nr) of the dequantized weight into out[nr * K], the same values as
 * kiln_qlinear_dequant: from q's codes, or decoded from a mapped checkpoint's file
 * (q->src), whose pages are handed back after. Fails only out of memory. */
int kiln_qlinear_rows(const KilnQLinear *q, int64_t n0, int64_t nr, float *out, KilnDiag *d);
void kiln_qlinear_free(KilnQLinear *q);
void kiln_checkpoint_free(KilnCheckpoint *c);
const KilnQLinear *kiln_checkpoint_find(const KilnCheckpoint *c, const char *name);

/* Writes dir/model.safetensors and dir/config.json (with quantization_config) in the
 * compressed-tensors layout each layer's format calls for. */
int kiln_checkpoint_write(const char *dir, const KilnCheckpoint *c, KilnDiag *d);

/* What kiln_checkpoint_write would write that today's releases (compressed-tensors
 * 0.20, transformers 5.x) do not load as written (docs/checkpoints.md, "Known upstream
 * limits"); each name is the first such layer, "" when none. */
typedef struct KilnCkptCompat {
    int ngroups;           /* config groups: > 1 breaks CompressedTensorsConfig(dequantize=True) */
    int ngidx;             /* layers with a real act-order g_idx: legacy "actorder": "group" */
    char gidx_layer[256];
    int nasym_packed;      /* asymmetric pack-quantized layers: packed zero points */
    char asym_layer[256];
} KilnCkptCompat;
int kiln_checkpoint_compat(const KilnCheckpoint *c, KilnCkptCompat *out, KilnDiag *d);
/* One line per limit that applies ("" when none): what fails where, and what to do
 * instead. Returns the number of lines. */
int kiln_checkpoint_compat_text(const KilnCkptCompat *k, char *buf, size_t n);
/* Reads a directory holding *.safetensors (+ config.json) in any of the layouts above. */
int kiln_checkpoint_read(const char *dir, KilnCheckpoint *out, KilnDiag *d);
/* The same checked the same way, for a model loader, within twice the model's memory
 * (docs/hardening.md, "Memory"): the files stay mapped until kiln_checkpoint_free; each
 * quantized layer keeps its scales, zero points, g_idx and bias, not its codes (q->src:
 * kiln_qlinear_rows decodes rows when needed); a plain tensor's data stays NULL until
 * kiln_checkpoint_tensor_f32 reads it. */
int kiln_checkpoint_open(const char *dir, KilnCheckpoint *out, KilnDiag *d);
/* A mapped checkpoint's plain tensor `name` as f32 (*out malloc'd, the caller's), the file's
 * pages handed back after; *out NULL when there is no such tensor in its files. */
int kiln_checkpoint_tensor_f32(const KilnCheckpoint *c, const char *name, float **out,
                               KilnDiag *d);
/* The path of the file of a mapped checkpoint that holds tensor `name` (NULL: none). */
const char *kiln_checkpoint_tensor_file(const KilnCheckpoint *c, const char *name);

/* ------------------------------------------------------------------ checkpoint.c (h3) */

/* Building a checkpoint: copies of name and data (dim[rank], f32), a module name for
 * "ignore" (no duplicates), a file's bytes. */
int kiln_checkpoint_add_tensor(KilnCheckpoint *c, const char *name, int rank,
                               const int64_t *dim, const float *data, KilnDiag *d);
int kiln_checkpoint_add_ignore(KilnCheckpoint *c, const char *module, KilnDiag *d);
int kiln_checkpoint_add_file(KilnCheckpoint *c, const char *name, const void *data, size_t len,
                             KilnDiag *d);
const KilnCkptTensor *kiln_checkpoint_find_tensor(const KilnCheckpoint *c, const char *name);
/* The same, taking data (malloc'd, freed with the checkpoint; freed on an error too)
 * instead of a copy. */
int kiln_checkpoint_add_tensor_own(KilnCheckpoint *c, const char *name, int rank,
                                   const int64_t *dim, float *data, KilnDiag *d);
/* A tensor whose rows fill makes when the checkpoint is written (KilnCkptTensor.fill). */
int kiln_checkpoint_add_rows(KilnCheckpoint *c, const char *name, int rank, const int64_t *dim,
                             int (*fill)(const void *, const void *, int64_t, int64_t, float *,
                                         KilnDiag *),
                             const void *fill_ctx, const void *fill_arg, KilnDiag *d);

/* ------------------------------------------------------------------ ckpt_write.c (h3) */

/* kiln's own dequantization of every quantized layer, as plain f32 safetensors
 * ("<module>.weight" [N, K]): the reference tests/interop compares the
 * compressed-tensors decompressor against (docs/checkpoints.md). */
int kiln_checkpoint_write_dequant(const char *path, const KilnCheckpoint *c, KilnDiag *d);

/* ------------------------------------------------------------------ export.c (h3) */

struct KilnLlama;
struct KilnBert;

/* llama.cpp's converter permutes the rows of q_proj (n_head = attention heads) and
 * k_proj (n_head = KV heads) from Hugging Face's rotate-half RoPE layout to GGUF's
 * adjacent pairs: GGUF row h·hd + 2i + s = HF row h·hd + s·hd/2 + i (s = 0, 1; i <
 * hd/2). kiln's Llama runs in the GGUF layout. to_hf: GGUF -> HF (the export), else
 * HF -> GGUF (loading an HF checkpoint). rows: N rows of row_bytes each; N must be
 * n_head * an even head size. */
int kiln_llama_permute_qk_rows(void *rows, int64_t N, size_t row_bytes, int n_head, bool to_hf,
                               KilnDiag *d);
/* The row of the other layout that kiln_llama_permute_qk_rows moves into row `row` (N rows,
 * n_head heads of an even size). */
int64_t kiln_llama_qk_row(int64_t row, int64_t N, int n_head, bool to_hf);
/* The same on every row-wise part of a quantized layer: codes, scales, zeros, bias
 * (a TENSOR-granularity scale is left as it is; g_idx is per column). A layer of a mapped
 * checkpoint has its codes' rows turned as they are decoded (HF -> GGUF only). */
int kiln_llama_unpermute_qk(KilnQLinear *q, int n_head, KilnDiag *d); /* GGUF -> HF */
int kiln_llama_permute_qk(KilnQLinear *q, int n_head, KilnDiag *d);   /* HF -> GGUF */
/* GGUF -> HF of the codes, scales and zeros only (a layer made on demand: its bias was
 * turned when the export saw it). */
int kiln_llama_unpermute_qk_codes(KilnQLinear *q, int n_head, KilnDiag *d);

/* Fill the rest of a checkpoint from a loaded model so the directory is a complete
 * Hugging Face model: call after c->lin holds the quantized layers. Llama: HF tensor
 * names, q_proj/k_proj rows of c->lin turned to the HF layout (call once), every
 * linear layer not in c->lin stored in f32 and listed in c->ignore, config.json
 * (LlamaForCausalLM), tokenizer.json + tokenizer_config.json from the model's BPE
 * tokenizer (with the model's chat template). BERT: the tensors of src_dir/model.safetensors that are not quantized
 * layers, its config.json, and its tokenizer / sentence-transformers files. */
int kiln_llama_export(const struct KilnLlama *m, KilnCheckpoint *c, KilnDiag *d);
int kiln_bert_export(const struct KilnBert *m, const char *src_dir, KilnCheckpoint *c,
                     KilnDiag *d);

#endif
