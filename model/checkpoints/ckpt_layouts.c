/* model/checkpoints/ckpt_layouts.c — decoding one quantized linear layer of another tool's
 * checkpoint into a KilnQLinear: compressed-tensors (pack-quantized, int/naive-quantized,
 * float-quantized), AutoGPTQ (v1 and v2 zero points) and AutoAWQ GEMM. Every size comes
 * from a tensor's real shape and is checked before anything is read. The conventions
 * and where they come from: docs/checkpoints.md, "Reading checkpoints". */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/checkpoints/ckpt_internal.h"

#define ERR(...) kiln_diag_set(d, KILN_EINPUT, __VA_ARGS__)
/* "DIR/FILE: tensor 'NAME'" opens every message about a tensor */
#define AT "%s/%s: tensor '%s': "
#define LOC(e) s->dir, (e)->file, (e)->name

static bool is_int(const KilnCkTensor *e)
{
    KilnModelType t = e->t->type;
    return t == KILN_MT_I8 || t == KILN_MT_U8 || t == KILN_MT_I16 || t == KILN_MT_I32 ||
           t == KILN_MT_I64;
}

static bool is_float(const KilnCkTensor *e)
{
    KilnModelType t = e->t->type;
    return t == KILN_MT_F32 || t == KILN_MT_F16 || t == KILN_MT_BF16 || t == KILN_MT_F64;
}

/* Element i of an integer tensor (safetensors data is little-endian, as the host;
 * memcpy because a third-party file need not align its tensors). */
static int64_t int_at(const KilnCkTensor *e, int64_t i)
{
    const uint8_t *p = e->t->data;
    switch (e->t->type) {
    case KILN_MT_I8:
        return (int8_t)p[i];
    case KILN_MT_U8:
        return p[i];
    case KILN_MT_I16: {
        int16_t v;
        memcpy(&v, p + 2 * i, 2);
        return v;
    }
    case KILN_MT_I32: {
        int32_t v;
        memcpy(&v, p + 4 * i, 4);
        return v;
    }
    case KILN_MT_I64: {
        int64_t v;
        memcpy(&v, p + 8 * i, 8);
        return v;
    }
    default:
        return 0;
    }
}

static uint32_t word32(const uint8_t *p, int64_t i)
{
    uint32_t v;
    memcpy(&v, p + 4 * i, 4);
    return v;
}

static uint32_t word_at(const KilnCkTensor *e, int64_t i)
{
    return word32(e->t->data, i);
}

static void shape_str(int rank, const int64_t *dim, char *buf, size_t n)
{
    int w = snprintf(buf, n, "[");
    for (int i = 0; i < rank && w > 0 && (size_t)w < n; i++)
        w += snprintf(buf + w, n - (size_t)w, "%s%lld", i ? ", " : "", (long long)dim[i]);
    if (w > 0 && (size_t)w < n)
        snprintf(buf + w, n - (size_t)w, "]");
}

static int want_shape(const KilnCkSrc *s, const KilnCkTensor *e, int rank, const int64_t *dim,
                      const char *why, KilnDiag *d)
{
    bool ok = e->t->rank == rank;
    for (int i = 0; ok && i < rank; i++)
        ok = e->t->dim[i] == dim[i];
    if (ok)
        return 0;
    char got[128], want[128];
    shape_str(e->t->rank, e->t->dim, got, sizeof got);
    shape_str(rank, dim, want, sizeof want);
    return ERR(AT "shape %s, expected %s (%s)", LOC(e), got, want, why);
}

static int want_type(const KilnCkSrc *s, const KilnCkTensor *e, bool ok, const char *what,
                     KilnDiag *d)
{
    return ok ? 0 : ERR(AT "dtype %s, expected %s", LOC(e), e->dtype, what);
}

static KilnCkTensor *need(KilnCkSrc *s, const char *m, const char *suffix, KilnDiag *d)
{
    KilnCkTensor *e = kiln_ck_find(s, m, suffix);
    if (!e)
        ERR("%s: module '%s' has no tensor '%s.%s'", s->dir, m, m, suffix);
    else
        e->used = true;
    return e;
}

static KilnCkTensor *maybe(KilnCkSrc *s, const char *m, const char *suffix)
{
    KilnCkTensor *e = kiln_ck_find(s, m, suffix);
    if (e)
        e->used = true;
    return e;
}

static void *alloc_n(int64_t n, size_t size, KilnDiag *d)
{
    void *p = n > 0 && (uint64_t)n <= SIZE_MAX / size ? malloc((size_t)n * size) : NULL;
    if (!p)
        kiln_diag_set(d, KILN_EINTERNAL, "checkpoint: out of memory (%lld elements)",
                      (long long)n);
    return p;
}

/* A float tensor of numel values as f32; scales must be finite and not negative. */
static int load_f32(const KilnCkSrc *s, const KilnCkTensor *e, bool is_scale, float **out,
                    KilnDiag *d)
{
    int rc = want_type(s, e, is_float(e), "F32, F16, BF16 or F64", d);
    if (!rc)
        rc = kiln_mf_load_f32(e->mf, e->name, out, d);
    for (int64_t i = 0; !rc && is_scale && i < e->t->numel; i++)
        if (!isfinite((*out)[i]) || (*out)[i] < 0)
            rc = ERR(AT "scale [%lld] is %g; scales must be finite and not negative", LOC(e),
                     (long long)i, (double)(*out)[i]);
    return rc;
}

static int load_bias(KilnCkSrc *s, const char *m, KilnQLinear *q, KilnDiag *d)
{
    KilnCkTensor *b = maybe(s, m, "bias");
    if (!b)
        return 0;
    int64_t dim[1] = {q->N};
    int rc = want_shape(s, b, 1, dim, "the layer's output features", d);
    return rc ? rc : load_f32(s, b, false, &q->bias, d);
}

/* g_idx[k] = the group of input column k. Kept only when it is not the plain
 * k / group; negative entries (compressed-tensors' "not initialised") mean none. */
static int load_gidx(const KilnCkSrc *s, const KilnCkTensor *e, KilnQLinear *q, KilnDiag *d)
{
    int64_t dim[1] = {q->K};
    int rc = want_type(s, e, is_int(e), "an integer type", d);
    if (!rc)
        rc = want_shape(s, e, 1, dim, "one group index per input column", d);
    if (rc)
        return rc;
    bool plain = true;
    for (int64_t k = 0; k < q->K; k++) {
        int64_t g = int_at(e, k);
        if (g < 0)
            return 0;
        if (g >= q->ngroups)
            return ERR(AT "g_idx[%lld] = %lld, but the layer has %lld groups", LOC(e),
                       (long long)k, (long long)g, (long long)q->ngroups);
        /* one group (channel, tensor): g is 0, the range check says so */
        plain = plain && (q->spec.gran != KILN_GRAN_GROUP || g == k / q->spec.group);
    }
    if (plain)
        return 0;
    if (!(q->g_idx = alloc_n(q->K, sizeof(int32_t), d)))
        return KILN_EINTERNAL;
    for (int64_t k = 0; k < q->K; k++)
        q->g_idx[k] = (int32_t)int_at(e, k);
    return 0;
}

/* ------------------------------------------------------------------ codes, a row at a time */

/* AWQ's interleave: slot i of a word holds column 8c + awq_order[i]. */
static const int awq_order[8] = {0, 2, 4, 6, 1, 3, 5, 7};

void kiln_ck_codes_row(const struct KilnCkCodes *c, const KilnQLinear *q, int64_t r, int16_t *out)
{
    const uint8_t *p = c->t->data;
    int64_t K = q->K, N = q->N, pf = 32 / c->bits, off = (int64_t)1 << (c->bits - 1);
    uint32_t mask = (1u << c->bits) - 1;
    bool sym = q->spec.symmetric;
    switch (c->kind) {
    case KILN_CK_PACKED: /* 32/bits codes per int32 along K, stored with +2^(bits-1) */
        for (int64_t k = 0; k < K; k++) {
            int64_t v = (word32(p, r * c->cols + k / pf) >> ((k % pf) * c->bits)) & mask;
            out[k] = (int16_t)(sym ? v - off : v);
        }
        break;
    case KILN_CK_NAIVE: /* a byte a code: fp8 as it is, int8 / int4 signed */
        for (int64_t k = 0; k < K; k++) {
            if (q->spec.fmt == KILN_QF_FP8_E4M3 || q->spec.fmt == KILN_QF_FP8_E5M2) {
                out[k] = p[r * K + k];
                continue;
            }
            int64_t v = (int8_t)p[r * K + k];
            out[k] = (int16_t)(sym ? v : v + off);
        }
        break;
    case KILN_CK_GPTQ: /* qweight [K / pf, N]: column r, 32/bits input rows a word */
        for (int64_t k = 0; k < K; k++) {
            int16_t v = (int16_t)((word32(p, (k / pf) * N + r) >> ((k % pf) * c->bits)) & mask);
            out[k] = (int16_t)(v - c->shift);
        }
        break;
    case KILN_CK_AWQ: { /* qweight [K, N / 8]: row r is slot i of word column r / 8 */
        int i = 0;
        while (awq_order[i] != r % 8)
            i++;
        for (int64_t k = 0; k < K; k++)
            out[k] = (int16_t)((word32(p, k * c->cols + r / 8) >> (4 * i)) & 15);
        break;
    }
    }
}

/* The layer's codes from tensor e as c describes them: every row decoded now, or, in a
 * mapped checkpoint, where they are (q->src) to be decoded when needed. */
static int take_codes(const KilnCkSrc *s, const KilnCkTensor *e, KilnQLinear *q,
                      struct KilnCkCodes c, KilnDiag *d)
{
    c.mf = e->mf, c.t = e->t;
    if (s->mapped) {
        if (!(q->src = alloc_n(1, sizeof *q->src, d)))
            return KILN_EINTERNAL;
        *q->src = c;
        kiln_mf_drop_pages(e->mf, e->t); /* checked (int8 codes): read again when needed */
        return 0;
    }
    if (!(q->codes = alloc_n(q->N * q->K, sizeof(int16_t), d)))
        return KILN_EINTERNAL;
    for (int64_t r = 0; r < q->N; r++)
        kiln_ck_codes_row(&c, q, r, q->codes + r * q->K);
    return 0;
}

/* ------------------------------------------------------------------ compressed-tensors */

/* How a [N, K] weight's scales are stored (srows x scols) and what kiln keeps. */
typedef struct Grid {
    int64_t srows, scols;
    int bh, bw; /* rows / columns one stored scale covers */
} Grid;

static int ct_grid(const KilnCkArgs *w, KilnQLinear *q, Grid *gr, const char *m,
                   KilnCkSrc *s, KilnDiag *d)
{
    int64_t N = q->N, K = q->K;
    q->spec.gran = w->gran;
    q->spec.group = 0;
    switch (w->gran) {
    case KILN_GRAN_TENSOR:
        *gr = (Grid){1, 1, 1, 0};
        q->ngroups = 1, q->nscale = 1;
        return 0;
    case KILN_GRAN_CHANNEL:
        *gr = (Grid){N, 1, 1, 0};
        q->ngroups = 1, q->nscale = N;
        return 0;
    case KILN_GRAN_GROUP:
        break;
    default:
        return ERR("%s: module '%s': weight strategy %s is not one kiln reads", s->dir, m,
                   kiln_gran_name(w->gran));
    }
    int bh = w->bh > 0 ? w->bh : 1, bw = w->bh > 0 ? w->bw : w->group;
    if (bw <= 0)
        return ERR("%s: module '%s': group size %d", s->dir, m, bw);
    *gr = (Grid){(N + bh - 1) / bh, (K + bw - 1) / bw, bh, bw};
    q->spec.group = bw;
    q->ngroups = gr->scols, q->nscale = N * gr->scols;
    return 0;
}

/* Expands a stored [srows, scols] grid (f32 values, or integers when f is NULL) into
 * kiln's [N * ngroups]. */
static void grid_expand(const KilnQLinear *q, const Grid *gr, const float *f,
                        const KilnCkTensor *e, int64_t add, float *fout, int32_t *iout)
{
    if (q->nscale == 1) {
        if (fout)
            fout[0] = f[0];
        else
            iout[0] = (int32_t)(int_at(e, 0) + add);
        return;
    }
    for (int64_t n = 0; n < q->N; n++)
        for (int64_t g = 0; g < q->ngroups; g++) {
            int64_t src = (n / gr->bh) * gr->scols + g;
            if (fout)
                fout[n * q->ngroups + g] = f[src];
            else
                iout[n * q->ngroups + g] = (int32_t)(int_at(e, src) + add);
        }
}

static int ct_scales(KilnCkSrc *s, const char *m, KilnQLinear *q, const Grid *gr, KilnDiag *d)
{
    KilnCkTensor *e = need(s, m, "weight_scale", d);
    if (!e)
        return d->code;
    bool ok = e->t->numel == gr->srows * gr->scols &&
              (e->t->rank == 2 ? e->t->dim[0] == gr->srows : e->t->rank <= 1 && gr->scols == 1);
    if (!ok) {
        int64_t dim[2] = {gr->srows, gr->scols};
        return want_shape(s, e, 2, dim, "the scheme's scales", d);
    }
    float *f = NULL;
    int rc = load_f32(s, e, true, &f, d);
    if (!rc && !(q->scale = alloc_n(q->nscale, sizeof(float), d)))
        rc = KILN_EINTERNAL;
    if (!rc)
        grid_expand(q, gr, f, NULL, 0, q->scale, NULL);
    free(f);
    return rc;
}

/* Zero points: packed like the weight along dim 0 ([ceil(N/pf), ngroups] int32) for a
 * pack-quantized group/channel scheme, else integers shaped like the scales. Stored
 * signed; kiln's asymmetric codes are unsigned, so both move up by 2^(bits-1). Some
 * writers keep all-zero points on symmetric schemes: accepted, and dropped. */
static int ct_zeros(KilnCkSrc *s, const char *m, KilnQLinear *q, const Grid *gr, int bits,
                    bool packed, KilnDiag *d)
{
    bool sym = q->spec.symmetric;
    KilnCkTensor *e = sym ? maybe(s, m, "weight_zero_point") : need(s, m, "weight_zero_point", d);
    if (!e)
        return sym ? 0 : d->code;
    int rc = want_type(s, e, is_int(e), "an integer type", d);
    if (rc)
        return rc;
    int64_t off = (int64_t)1 << (bits - 1), pf = 32 / bits;
    uint32_t mask = (1u << bits) - 1;
    bool perrow = gr->srows == q->N && q->nscale > 1;
    bool ispk = packed && perrow && e->t->type == KILN_MT_I32 && e->t->rank == 2 &&
                e->t->dim[0] == (q->N + pf - 1) / pf && e->t->dim[1] == gr->scols;
    if (!ispk && !(e->t->numel == gr->srows * gr->scols &&
                   (e->t->rank == 2 ? e->t->dim[0] == gr->srows : gr->scols == 1))) {
        int64_t dim[2] = {packed && perrow ? (q->N + pf - 1) / pf : gr->srows, gr->scols};
        return want_shape(s, e, 2, dim,
                          packed && perrow ? "zero points packed along dim 0" : "like the scales",
                          d);
    }
    if (!(q->zero = alloc_n(q->nscale, sizeof(int32_t), d)))
        return KILN_EINTERNAL;
    if (ispk) {
        for (int64_t n = 0; n < q->N; n++)
            for (int64_t g = 0; g < q->ngroups; g++) {
                uint32_t w = word_at(e, (n / pf) * gr->scols + g);
                q->zero[n * q->ngroups + g] = (int32_t)((w >> ((n % pf) * bits)) & mask);
            }
    } else {
        for (int64_t i = 0; i < e->t->numel; i++)
            if (int_at(e, i) < -off || int_at(e, i) >= off)
                return ERR(AT "zero point %lld is outside int%d", LOC(e),
                           (long long)int_at(e, i), bits);
        grid_expand(q, gr, NULL, e, off, NULL, q->zero);
    }
    if (!sym)
        return 0;
    for (int64_t i = 0; i < q->nscale; i++)
        if (q->zero[i] != off)
            return ERR(AT "the scheme is symmetric but zero point [%lld] is not 0", LOC(e),
                       (long long)i);
    free(q->zero);
    q->zero = NULL;
    return 0;
}

/* Every int code of a one-byte-a-code weight within int<bits> (fp8: any byte). */
static int ct_naive_check(KilnCkSrc *s, const KilnCkTensor *e, KilnQLinear *q, int bits,
                          KilnDiag *d)
{
    int64_t off = (int64_t)1 << (bits - 1);
    const uint8_t *p = e->t->data;
    if (q->spec.fmt == KILN_QF_FP8_E4M3 || q->spec.fmt == KILN_QF_FP8_E5M2)
        return 0;
    for (int64_t i = 0; i < q->N * q->K; i++) {
        int64_t v = (int8_t)p[i];
        if (v < -off || v >= off)
            return ERR(AT "code %lld at [%lld, %lld] is outside int%d", LOC(e), (long long)v,
                       (long long)(i / q->K), (long long)(i % q->K), bits);
    }
    return 0;
}

int kiln_ck_ct_module(KilnCkSrc *s, const char *m, const KilnCkArgs *w, KilnQLinear *q,
                      KilnDiag *d)
{
    KilnCkTensor *pk = maybe(s, m, "weight_packed"), *wt = pk ? NULL : need(s, m, "weight", d);
    if (!pk && !wt)
        return d->code;
    int bits = w->bits;
    if (w->is_float ? bits != 8 : bits != 4 && bits != 8)
        return ERR("%s: module '%s': %s weights of %d bits; kiln reads int4, int8 and fp8",
                   s->dir, m, w->is_float ? "float" : "int", bits);
    int rc = 0;
    if (pk) {
        KilnCkTensor *sh = need(s, m, "weight_shape", d);
        if (!sh)
            return d->code;
        if (w->is_float)
            return ERR(AT "pack-quantized weights are integers, but the scheme says float",
                       LOC(pk));
        if (!is_int(sh) || sh->t->numel != 2)
            return ERR(AT "expected 2 integers [N, K]", LOC(sh));
        int64_t N = int_at(sh, 0), K = int_at(sh, 1), pf = 32 / bits;
        if (N <= 0 || K <= 0 || N > INT32_MAX || K > INT32_MAX)
            return ERR(AT "[%lld, %lld] is not a weight shape", LOC(sh), (long long)N,
                       (long long)K);
        int64_t dim[2] = {N, (K + pf - 1) / pf};
        if ((rc = want_type(s, pk, pk->t->type == KILN_MT_I32, "I32", d)) ||
            (rc = want_shape(s, pk, 2, dim, "weight_shape packed 32/bits codes per int32", d)))
            return rc;
        q->N = N, q->K = K;
        q->spec.fmt = bits == 4 ? KILN_QF_INT4 : KILN_QF_INT8;
    } else {
        bool f8 = !strcmp(wt->dtype, "F8_E4M3") || !strcmp(wt->dtype, "F8_E5M2");
        if ((rc = want_type(s, wt, w->is_float ? f8 : wt->t->type == KILN_MT_I8,
                            w->is_float ? "F8_E4M3 or F8_E5M2 (the scheme says float)"
                                        : "I8 (the scheme says int)", d)))
            return rc;
        if (wt->t->rank != 2 || wt->t->dim[0] <= 0 || wt->t->dim[1] <= 0)
            return ERR(AT "a quantized weight must be 2-D", LOC(wt));
        q->N = wt->t->dim[0], q->K = wt->t->dim[1];
        q->spec.fmt = !w->is_float                    ? (bits == 4 ? KILN_QF_INT4 : KILN_QF_INT8)
                      : !strcmp(wt->dtype, "F8_E4M3") ? KILN_QF_FP8_E4M3
                                                      : KILN_QF_FP8_E5M2;
    }
    if (w->is_float && !w->sym)
        return ERR("%s: module '%s': asymmetric fp8 is not a format", s->dir, m);
    q->spec.symmetric = w->sym;
    Grid gr = {0};
    if ((rc = ct_grid(w, q, &gr, m, s, d)) || (rc = ct_scales(s, m, q, &gr, d)) ||
        (rc = ct_zeros(s, m, q, &gr, bits, pk != NULL, d)))
        return rc;
    if (!pk && (rc = ct_naive_check(s, wt, q, bits, d)))
        return rc;
    struct KilnCkCodes c = {.kind = pk ? KILN_CK_PACKED : KILN_CK_NAIVE, .bits = bits,
                            .cols = pk ? pk->t->dim[1] : 0};
    if ((rc = take_codes(s, pk ? pk : wt, q, c, d)))
        return rc;
    KilnCkTensor *gi = maybe(s, m, "weight_g_idx");
    if (gi && (rc = load_gidx(s, gi, q, d)))
        return rc;
    return load_bias(s, m, q, d);
}

/* ------------------------------------------------------------------ AutoGPTQ / AutoAWQ */

/* Scales [G, N] (GPTQ's and AWQ's orientation) into kiln's [N, G]. */
static int gq_scales(KilnCkSrc *s, const char *m, const char *suffix, KilnQLinear *q,
                     KilnDiag *d)
{
    KilnCkTensor *e = need(s, m, suffix, d);
    if (!e)
        return d->code;
    int64_t dim[2] = {q->ngroups, q->N};
    float *f = NULL;
    int rc = want_shape(s, e, 2, dim, "[groups, output features]", d);
    if (!rc)
        rc = load_f32(s, e, true, &f, d);
    if (!rc && !(q->scale = alloc_n(q->nscale, sizeof(float), d)))
        rc = KILN_EINTERNAL;
    for (int64_t g = 0; !rc && g < q->ngroups; g++)
        for (int64_t n = 0; n < q->N; n++)
            q->scale[n * q->ngroups + g] = f[g * q->N + n];
    free(f);
    return rc;
}

/* qzeros int32 [G, N/pf], slot i of word c = output column c*pf + order[i]; add is
 * GPTQ v1's +1. */
static int gq_zeros(KilnCkSrc *s, const char *m, KilnQLinear *q, int bits, const int *order,
                    int add, KilnDiag *d)
{
    KilnCkTensor *e = need(s, m, "qzeros", d);
    if (!e)
        return d->code;
    int64_t pf = 32 / bits, dim[2] = {q->ngroups, q->N / pf};
    int rc = want_type(s, e, e->t->type == KILN_MT_I32, "I32", d);
    if (!rc)
        rc = want_shape(s, e, 2, dim, "[groups, output features / (32/bits)]", d);
    if (!rc && !(q->zero = alloc_n(q->nscale, sizeof(int32_t), d)))
        rc = KILN_EINTERNAL;
    uint32_t mask = (1u << bits) - 1;
    for (int64_t g = 0; !rc && g < q->ngroups; g++)
        for (int64_t c = 0; c < dim[1]; c++) {
            uint32_t w = word_at(e, g * dim[1] + c);
            for (int64_t i = 0; i < pf; i++)
                q->zero[(c * pf + order[i]) * q->ngroups + g] =
                    (int32_t)((w >> (i * bits)) & mask) + add;
        }
    return rc;
}

/* Zero points all 2^(bits-1) (GPTQ's sym = True) read as kiln's symmetric codes: the
 * codes' shift (0 when not). */
static int gq_maybe_symmetric(KilnQLinear *q, int bits)
{
    int32_t off = 1 << (bits - 1);
    for (int64_t i = 0; i < q->nscale; i++)
        if (q->zero[i] != off)
            return 0;
    free(q->zero);
    q->zero = NULL;
    q->spec.symmetric = true;
    return off;
}

static void gq_spec(KilnQLinear *q, int bits, int group)
{
    q->spec.fmt = bits == 4 ? KILN_QF_INT4 : KILN_QF_INT8;
    q->spec.symmetric = false;
    q->spec.gran = group < 0 ? KILN_GRAN_CHANNEL : KILN_GRAN_GROUP;
    q->spec.group = group < 0 ? 0 : group;
    q->ngroups = group < 0 ? 1 : (q->K + group - 1) / group;
    q->nscale = q->N * q->ngroups;
}

static const int plain_order[8] = {0, 1, 2, 3, 4, 5, 6, 7};

int kiln_ck_gptq_module(KilnCkSrc *s, const char *m, const KilnGptqCfg *g, KilnQLinear *q,
                        KilnDiag *d)
{
    KilnCkTensor *qw = need(s, m, "qweight", d);
    if (!qw)
        return d->code;
    int bits = g->bits, rc;
    int64_t pf = 32 / bits;
    if ((rc = want_type(s, qw, qw->t->type == KILN_MT_I32, "I32", d)))
        return rc;
    if (qw->t->rank != 2 || qw->t->dim[0] <= 0 || qw->t->dim[1] <= 0 ||
        qw->t->dim[0] > INT32_MAX / pf || qw->t->dim[1] % pf)
        return ERR(AT "expected [input features / %lld, output features (a multiple of %lld)]",
                   LOC(qw), (long long)pf, (long long)pf);
    q->K = qw->t->dim[0] * pf, q->N = qw->t->dim[1];
    gq_spec(q, bits, g->group);
    if ((rc = gq_scales(s, m, "scales", q, d)) ||
        (rc = gq_zeros(s, m, q, bits, plain_order, g->v2 ? 0 : 1, d)))
        return rc;
    struct KilnCkCodes c = {.kind = KILN_CK_GPTQ, .bits = bits, .shift = gq_maybe_symmetric(q, bits)};
    if ((rc = take_codes(s, qw, q, c, d)))
        return rc;
    KilnCkTensor *gi = maybe(s, m, "g_idx");
    if (gi && (rc = load_gidx(s, gi, q, d)))
        return rc;
    return load_bias(s, m, q, d);
}

int kiln_ck_awq_module(KilnCkSrc *s, const char *m, int bits, int group, KilnQLinear *q,
                       KilnDiag *d)
{
    KilnCkTensor *qw = need(s, m, "qweight", d);
    if (!qw)
        return d->code;
    int rc;
    if (bits != 4)
        return ERR("%s: module '%s': AWQ with %d bits; kiln reads AutoAWQ's 4-bit GEMM layout",
                   s->dir, m, bits);
    if ((rc = want_type(s, qw, qw->t->type == KILN_MT_I32, "I32", d)))
        return rc;
    if (qw->t->rank != 2 || qw->t->dim[0] <= 0 || qw->t->dim[1] <= 0 ||
        qw->t->dim[1] > INT32_MAX / 8)
        return ERR(AT "expected [input features, output features / 8]", LOC(qw));
    q->K = qw->t->dim[0], q->N = qw->t->dim[1] * 8;
    gq_spec(q, bits, group);
    if ((rc = gq_scales(s, m, "scales", q, d)) || (rc = gq_zeros(s, m, q, bits, awq_order, 0, d)))
        return rc;
    struct KilnCkCodes c = {.kind = KILN_CK_AWQ, .bits = 4, .cols = qw->t->dim[1]};
    if ((rc = take_codes(s, qw, q, c, d)))
        return rc;
    return load_bias(s, m, q, d);
}
