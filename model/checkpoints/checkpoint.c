/* model/checkpoints/checkpoint.c — the small shared pieces of model/checkpoints/checkpoint.h: dequantizing a
 * KilnQLinear, building a checkpoint (tensors, ignore list, extra files), lookups and
 * freeing. The readers and the writer (ckpt_read.c, ckpt_write.c) build on these. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ir/numerics.h"
#include "model/checkpoints/ckpt_internal.h"

/* The group of input column k. */
static int64_t group_of(const KilnQLinear *q, int64_t k)
{
    if (q->spec.gran != KILN_GRAN_GROUP)
        return 0;
    if (q->g_idx)
        return q->g_idx[k];
    return k / q->spec.group;
}

/* Row n of the weight from its codes (codes[K]). */
static void dequant_row(const KilnQLinear *q, int64_t n, const int16_t *codes, float *out)
{
    bool fp8 = q->spec.fmt == KILN_QF_FP8_E4M3 || q->spec.fmt == KILN_QF_FP8_E5M2;
    for (int64_t k = 0; k < q->K; k++) {
        /* TENSOR: the one scale; else row n, group of k */
        int64_t s = q->spec.gran == KILN_GRAN_TENSOR ? 0 : n * q->ngroups + group_of(q, k);
        int32_t code = codes[k];
        float v;
        if (fp8)
            v = q->spec.fmt == KILN_QF_FP8_E4M3 ? kiln_fp8_e4m3_decode((uint8_t)code)
                                                : kiln_fp8_e5m2_decode((uint8_t)code);
        else
            v = (float)(code - (q->zero ? q->zero[s] : 0));
        out[k] = v * q->scale[s];
    }
}

void kiln_qlinear_dequant(const KilnQLinear *q, float *out)
{
    for (int64_t n = 0; n < q->N; n++)
        dequant_row(q, n, q->codes + n * q->K, out + n * q->K);
}

int kiln_qlinear_rows(const KilnQLinear *q, int64_t n0, int64_t nr, float *out, KilnDiag *d)
{
    if (q->codes) {
        for (int64_t n = n0; n < n0 + nr; n++)
            dequant_row(q, n, q->codes + n * q->K, out + (n - n0) * q->K);
        return 0;
    }
    const struct KilnCkCodes *c = q->src;
    int16_t *row = c ? malloc(sizeof(int16_t) * (size_t)q->K) : NULL;
    if (!row)
        return kiln_diag_set(d, KILN_EINTERNAL, c ? "%s: out of memory"
                                                  : "%s: the layer's codes are gone", q->name);
    for (int64_t n = n0; n < n0 + nr; n++) {
        int64_t r = c->qk_heads > 0 ? kiln_llama_qk_row(n, q->N, c->qk_heads, false) : n;
        kiln_ck_codes_row(c, q, r, row);
        dequant_row(q, n, row, out + (n - n0) * q->K);
    }
    free(row);
    kiln_mf_drop_pages(c->mf, c->t); /* decoded: the file's pages need not stay */
    return 0;
}

int kiln_qlinear_load(KilnQLinear *q, KilnDiag *d)
{
    if (q->codes || !q->fill)
        return 0;
    int rc = q->fill(q->fill_ctx, q, d);
    if (!rc && (!q->codes || !q->scale || (!q->spec.symmetric && !q->zero)))
        rc = kiln_diag_set(d, KILN_EINTERNAL, "%s: made no codes, scales or zero points",
                           q->name);
    if (!rc && q->qk_heads > 0)
        rc = kiln_llama_unpermute_qk_codes(q, q->qk_heads, d);
    if (rc)
        kiln_qlinear_unload(q);
    return rc;
}

void kiln_qlinear_unload(KilnQLinear *q)
{
    if (!q->fill)
        return;
    free(q->codes), free(q->scale), free(q->zero);
    q->codes = NULL, q->scale = NULL, q->zero = NULL;
}

void kiln_qlinear_free(KilnQLinear *q)
{
    if (!q)
        return;
    free(q->codes), free(q->scale), free(q->zero), free(q->g_idx), free(q->bias), free(q->src);
    q->codes = NULL, q->scale = NULL, q->zero = NULL, q->g_idx = NULL, q->bias = NULL;
    q->src = NULL;
}

void kiln_checkpoint_free(KilnCheckpoint *c)
{
    if (!c)
        return;
    for (int i = 0; i < c->nlin; i++)
        kiln_qlinear_free(&c->lin[i]);
    free(c->lin);
    for (int i = 0; i < c->nt; i++)
        free(c->t[i].data);
    free(c->t);
    for (int i = 0; i < c->nignore; i++)
        free(c->ignore[i]);
    free(c->ignore);
    for (int i = 0; i < c->nfiles; i++)
        free(c->files[i].data);
    free(c->files);
    free(c->config_json);
    if (c->src) /* after the layers: they were read from it */
        kiln_ck_src_close(c->src);
    free(c->src);
    memset(c, 0, sizeof *c);
}

const KilnQLinear *kiln_checkpoint_find(const KilnCheckpoint *c, const char *name)
{
    for (int i = 0; i < c->nlin; i++)
        if (strcmp(c->lin[i].name, name) == 0)
            return &c->lin[i];
    return NULL;
}

const KilnCkptTensor *kiln_checkpoint_find_tensor(const KilnCheckpoint *c, const char *name)
{
    for (int i = 0; i < c->nt; i++)
        if (strcmp(c->t[i].name, name) == 0)
            return &c->t[i];
    return NULL;
}

typedef int (*RowFill)(const void *, const void *, int64_t, int64_t, float *, KilnDiag *);

/* A copy of data, own itself (taken), or rows made by fill when written. */
static int add_tensor(KilnCheckpoint *c, const char *name, int rank, const int64_t *dim,
                      const float *data, float *own, RowFill fill, const void *fill_ctx,
                      const void *fill_arg, KilnDiag *d)
{
    if (strlen(name) >= sizeof c->t[0].name)
        return kiln_diag_set(d, KILN_EINPUT, "checkpoint: tensor name '%.80s...' is longer "
                             "than %zu bytes", name, sizeof c->t[0].name - 1);
    if (rank < 0 || rank > 4)
        return kiln_diag_set(d, KILN_EINPUT, "checkpoint: tensor '%s' has rank %d", name, rank);
    int64_t n = 1;
    for (int i = 0; i < rank; i++) {
        if (dim[i] < 0 || (dim[i] && n > INT64_MAX / 4 / dim[i]))
            return kiln_diag_set(d, KILN_EINPUT, "checkpoint: tensor '%s': bad shape", name);
        n *= dim[i];
    }
    KilnCkptTensor *t = realloc(c->t, sizeof *t * (size_t)(c->nt + 1));
    if (!t)
        return kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
    c->t = t;
    t = &c->t[c->nt];
    memset(t, 0, sizeof *t);
    t->data = fill || own ? own : malloc(sizeof(float) * (size_t)(n ? n : 1));
    if (!fill && !t->data)
        return kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
    snprintf(t->name, sizeof t->name, "%s", name);
    t->rank = rank;
    for (int i = 0; i < rank; i++)
        t->dim[i] = dim[i];
    if (data)
        memcpy(t->data, data, sizeof(float) * (size_t)n);
    t->fill = fill, t->fill_ctx = fill_ctx, t->fill_arg = fill_arg;
    c->nt++;
    return 0;
}

int kiln_checkpoint_add_tensor(KilnCheckpoint *c, const char *name, int rank,
                               const int64_t *dim, const float *data, KilnDiag *d)
{
    return add_tensor(c, name, rank, dim, data, NULL, NULL, NULL, NULL, d);
}

int kiln_checkpoint_add_tensor_own(KilnCheckpoint *c, const char *name, int rank,
                                   const int64_t *dim, float *data, KilnDiag *d)
{
    int rc = add_tensor(c, name, rank, dim, NULL, data, NULL, NULL, NULL, d);
    if (rc)
        free(data);
    return rc;
}

int kiln_checkpoint_add_rows(KilnCheckpoint *c, const char *name, int rank, const int64_t *dim,
                             RowFill fill, const void *fill_ctx, const void *fill_arg, KilnDiag *d)
{
    if (rank < 1 || !fill)
        return kiln_diag_set(d, KILN_EINTERNAL, "checkpoint: tensor '%s': rows without a "
                             "shape or a maker", name);
    return add_tensor(c, name, rank, dim, NULL, NULL, fill, fill_ctx, fill_arg, d);
}

int kiln_checkpoint_add_ignore(KilnCheckpoint *c, const char *module, KilnDiag *d)
{
    for (int i = 0; i < c->nignore; i++)
        if (strcmp(c->ignore[i], module) == 0)
            return 0;
    char **v = realloc(c->ignore, sizeof *v * (size_t)(c->nignore + 1));
    if (!v)
        return kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
    c->ignore = v;
    if (!(v[c->nignore] = strdup(module)))
        return kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
    c->nignore++;
    return 0;
}

int kiln_checkpoint_add_file(KilnCheckpoint *c, const char *name, const void *data, size_t len,
                             KilnDiag *d)
{
    /* a relative path inside the directory: no "..", no absolute path */
    if (!name[0] || name[0] == '/' || strstr(name, "..") ||
        strlen(name) >= sizeof c->files[0].name)
        return kiln_diag_set(d, KILN_EINPUT, "checkpoint: file name '%.100s' is not a short "
                             "relative path", name);
    for (int i = 0; i < c->nfiles; i++)
        if (strcmp(c->files[i].name, name) == 0)
            return kiln_diag_set(d, KILN_EINPUT, "checkpoint: file '%s' added twice", name);
    KilnCkptFile *f = realloc(c->files, sizeof *f * (size_t)(c->nfiles + 1));
    if (!f)
        return kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
    c->files = f;
    f = &c->files[c->nfiles];
    memset(f, 0, sizeof *f);
    f->data = malloc(len ? len : 1);
    if (!f->data)
        return kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
    memcpy(f->data, data, len);
    f->len = len;
    snprintf(f->name, sizeof f->name, "%s", name);
    c->nfiles++;
    return 0;
}
