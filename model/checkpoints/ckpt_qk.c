/* model/checkpoints/ckpt_qk.c — a Llama checkpoint's Q/K rows between GGUF's interleaved
 * RoPE layout and Hugging Face's rotate-half one: rows of any element (f32 weights, int16
 * codes, scales, zeros) and whole quantized layers. Apart from export.c so that the
 * checkpoint reader (and its fuzzer) needs nothing of the model directory writer.
 * docs/checkpoints.md. */
#include <stdlib.h>
#include <string.h>

#include "model/checkpoints/ckpt_internal.h"
#include "runtime/runtime.h"

/* Source row (within one head of hd rows) of destination row r. */
static int64_t qk_src(int64_t r, int64_t hd, bool to_hf)
{
    int64_t half = hd / 2;
    return to_hf ? 2 * (r % half) + r / half  /* HF row s·half + i <- GGUF row 2i + s */
                 : (r % 2) * half + r / 2;    /* GGUF row 2i + s <- HF row s·half + i */
}

int64_t kiln_llama_qk_row(int64_t row, int64_t N, int n_head, bool to_hf)
{
    int64_t hd = N / n_head;
    return row - row % hd + qk_src(row % hd, hd, to_hf);
}

int kiln_llama_permute_qk_rows(void *rows, int64_t N, size_t row_bytes, int n_head, bool to_hf,
                               KilnDiag *d)
{
    if (n_head <= 0 || N % n_head || (N / n_head) % 2)
        return kiln_diag_set(d, KILN_EINPUT, "Q/K permutation: %lld rows do not split into %d "
                             "heads of an even size", (long long)N, n_head);
    int64_t hd = N / n_head;
    if (row_bytes == 0 || N == 0)
        return 0;
    unsigned char *tmp = malloc(row_bytes * (size_t)hd), *base = rows;
    if (!tmp)
        return kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
    for (int h = 0; h < n_head; h++) {
        unsigned char *blk = base + (size_t)h * (size_t)hd * row_bytes;
        memcpy(tmp, blk, row_bytes * (size_t)hd);
        for (int64_t r = 0; r < hd; r++)
            memcpy(blk + (size_t)r * row_bytes, tmp + (size_t)qk_src(r, hd, to_hf) * row_bytes,
                   row_bytes);
    }
    free(tmp);
    return 0;
}

static int permute_qlinear(KilnQLinear *q, int n_head, bool to_hf, bool bias, KilnDiag *d)
{
    int rc = 0;
    if (!q->codes && q->src) { /* a mapped checkpoint's: its rows turned as they are decoded */
        if (to_hf || q->src->qk_heads)
            return kiln_diag_set(d, KILN_EINTERNAL, "%s: mapped codes turned twice", q->name);
        rc = kiln_llama_permute_qk_rows(NULL, q->N, 0, n_head, to_hf, d); /* the check */
        if (!rc)
            q->src->qk_heads = n_head;
    } else {
        rc = kiln_llama_permute_qk_rows(q->codes, q->N, sizeof(int16_t) * (size_t)q->K, n_head,
                                        to_hf, d);
    }
    if (!rc && q->spec.gran != KILN_GRAN_TENSOR) {
        size_t rb = (size_t)q->ngroups;
        rc = kiln_llama_permute_qk_rows(q->scale, q->N, sizeof(float) * rb, n_head, to_hf, d);
        if (!rc && q->zero)
            rc = kiln_llama_permute_qk_rows(q->zero, q->N, sizeof(int32_t) * rb, n_head, to_hf,
                                            d);
    }
    if (!rc && bias && q->bias)
        rc = kiln_llama_permute_qk_rows(q->bias, q->N, sizeof(float), n_head, to_hf, d);
    if (rc) {
        char msg[sizeof d->msg];
        memcpy(msg, d->msg, sizeof msg);
        return kiln_diag_set(d, rc, "%s: %s", q->name, msg);
    }
    return 0;
}

int kiln_llama_unpermute_qk(KilnQLinear *q, int n_head, KilnDiag *d)
{
    return permute_qlinear(q, n_head, true, true, d);
}

int kiln_llama_permute_qk(KilnQLinear *q, int n_head, KilnDiag *d)
{
    return permute_qlinear(q, n_head, false, true, d);
}

int kiln_llama_unpermute_qk_codes(KilnQLinear *q, int n_head, KilnDiag *d)
{
    return permute_qlinear(q, n_head, true, false, d);
}
