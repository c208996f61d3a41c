/* model/checkpoints/ckpt_write.c — writing a KilnCheckpoint as a compressed-tensors model
 * directory (model.safetensors + config.json with quantization_config + the extra
 * files) that vLLM, Hugging Face and compressed-tensors load; and kiln's own
 * dequantized weights as plain f32 safetensors for the interop check.
 * docs/checkpoints.md describes every tensor written. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "model/checkpoints/checkpoint.h"
#include "model/checkpoints/ckpt_write.h"
#include "model/files/modelfile.h"
#include "runtime/runtime.h"

/* ------------------------------------------------------------------ schemes */


static int64_t gcd64(int64_t a, int64_t b)
{
    while (b) {
        int64_t t = a % b;
        a = b, b = t;
    }
    return a;
}

/* compressed-tensors (0.20) divides K into whole groups only; kiln's last group may be
 * ragged (K mod g columns). gcd(g, K) divides both, so every stored group lies inside
 * one kiln group and repeating each kiln scale g/gcd times stores the same weight. */
static int32_t stored_group(const KilnQLinear *q)
{
    if (q->spec.gran != KILN_GRAN_GROUP || q->K % q->spec.group == 0)
        return q->spec.group;
    return (int32_t)gcd64(q->spec.group, q->K);
}

/* A g_idx that says what plain groups say anyway is dropped. */
static bool gidx_needed(const KilnQLinear *q)
{
    if (!q->g_idx || q->spec.gran != KILN_GRAN_GROUP)
        return false;
    for (int64_t k = 0; k < q->K; k++)
        if (q->g_idx[k] != k / q->spec.group)
            return true;
    return false;
}


/* The format compressed-tensors' own infer_module_format gives the scheme (its
 * model-free dequantizer ignores the format written and uses this one). */
static const char *scheme_format(const KilnQuantSpec *w, const KilnQuantSpec *a)
{
    bool acts = a->fmt != KILN_QF_NONE;
    if (kiln_qformat_is_fp8(w->fmt))
        return acts ? "float-quantized" : "naive-quantized";
    return acts ? "int-quantized" : "pack-quantized";
}

static int check_act(const char *name, const KilnQuantSpec *a, const char *what, KilnDiag *d)
{
    if (a->fmt == KILN_QF_NONE)
        return 0;
    if (a->fmt == KILN_QF_FP8_E5M2)
        return kiln_diag_set(d, KILN_EINPUT, "%s: %s fp8_e5m2 has no compressed-tensors form "
                             "(its float 8-bit type is e4m3)", name, what);
    if (kiln_qformat_is_fp8(a->fmt) && !a->symmetric)
        return kiln_diag_set(d, KILN_EINPUT, "%s: %s fp8 must be symmetric", name, what);
    if (a->gran != KILN_GRAN_TENSOR && a->gran != KILN_GRAN_TOKEN &&
        !(a->gran == KILN_GRAN_CHANNEL && strcmp(what, "KV cache") == 0))
        return kiln_diag_set(d, KILN_EINPUT, "%s: %s granularity '%s' has no compressed-tensors "
                             "form (tensor or token)", name, what, kiln_gran_name(a->gran));
    if (a->gran == KILN_GRAN_TOKEN && !a->dynamic)
        return kiln_diag_set(d, KILN_EINPUT, "%s: static per-token %s scales do not exist in "
                             "compressed-tensors (use dynamic, or per tensor)", name, what);
    return 0;
}

/* Checks a layer against the header's rules and works out its scheme. */
static int layer_scheme(const KilnCheckpoint *c, const KilnQLinear *q, Scheme *s, KilnDiag *d)
{
    const char *m = q->name;
    memset(s, 0, sizeof *s);
    s->w = q->spec;
    s->a = q->act.fmt != KILN_QF_NONE ? q->act : c->act;
    if (!m[0])
        return kiln_diag_set(d, KILN_EINPUT, "checkpoint: a quantized layer has no name");
    if (q->N <= 0 || q->K <= 0 || ((!q->codes || !q->scale) && !q->fill))
        return kiln_diag_set(d, KILN_EINPUT, "%s: no shape, codes or scales", m);
    KilnQFormat f = q->spec.fmt;
    if (f == KILN_QF_FP8_E5M2)
        return kiln_diag_set(d, KILN_EINPUT, "%s: fp8_e5m2 weights have no compressed-tensors "
                             "form (its float 8-bit type is e4m3)", m);
    if (f != KILN_QF_INT4 && f != KILN_QF_INT8 && f != KILN_QF_FP8_E4M3)
        return kiln_diag_set(d, KILN_EINPUT, "%s: weight format '%s' cannot be written", m,
                             kiln_qformat_name(f));
    if (kiln_qformat_is_fp8(f) && !q->spec.symmetric)
        return kiln_diag_set(d, KILN_EINPUT, "%s: fp8 weights must be symmetric", m);
    KilnGran g = q->spec.gran;
    int64_t ng = g == KILN_GRAN_GROUP ? (q->spec.group > 0 ? (q->K + q->spec.group - 1) /
                                                                 q->spec.group
                                                           : 0)
                                      : 1;
    if (g != KILN_GRAN_TENSOR && g != KILN_GRAN_CHANNEL && g != KILN_GRAN_GROUP)
        return kiln_diag_set(d, KILN_EINPUT, "%s: weight granularity '%s' cannot be written", m,
                             kiln_gran_name(g));
    if (g == KILN_GRAN_GROUP && q->spec.group <= 0)
        return kiln_diag_set(d, KILN_EINPUT, "%s: group size %d", m, q->spec.group);
    int64_t want = g == KILN_GRAN_TENSOR ? 1 : q->N * ng;
    if (q->nscale != want || (g != KILN_GRAN_TENSOR && q->ngroups != ng))
        return kiln_diag_set(d, KILN_EINPUT, "%s: %lld scales in %lld groups, but [%lld, %lld] "
                             "%s needs %lld", m, (long long)q->nscale, (long long)q->ngroups,
                             (long long)q->N, (long long)q->K, kiln_gran_name(g),
                             (long long)want);
    if (!q->spec.symmetric && !q->zero && !q->fill)
        return kiln_diag_set(d, KILN_EINPUT, "%s: asymmetric without zero points", m);
    int rc = check_act(m, &s->a, "activation", d);
    if (rc)
        return rc;
    s->group = stored_group(q);
    s->gidx = gidx_needed(q);
    if (s->gidx)
        for (int64_t k = 0; k < q->K; k++)
            if (q->g_idx[k] < 0 || q->g_idx[k] >= q->ngroups)
                return kiln_diag_set(d, KILN_EINPUT, "%s: g_idx[%lld] = %d is not a group "
                                     "(0..%lld)", m, (long long)k, q->g_idx[k],
                                     (long long)q->ngroups - 1);
    s->format = scheme_format(&s->w, &s->a);
    return 0;
}

static bool same_spec(const KilnQuantSpec *x, const KilnQuantSpec *y, bool weight)
{
    if (x->fmt != y->fmt)
        return false;
    if (x->fmt == KILN_QF_NONE)
        return true;
    return x->symmetric == y->symmetric && x->gran == y->gran && x->dynamic == y->dynamic &&
           (!weight || x->gran != KILN_GRAN_GROUP || x->group == y->group);
}

static bool same_scheme(const Scheme *x, const Scheme *y)
{
    return same_spec(&x->w, &y->w, true) && x->group == y->group && x->gidx == y->gidx &&
           same_spec(&x->a, &y->a, false);
}

static int oom(KilnDiag *d) { return kiln_diag_set(d, KILN_EINTERNAL, "out of memory"); }

/* Every layer's scheme (ls[nlin]) and config group (grp), the groups' schemes in sch.
 * Layers that differ only in their stored group size (a ragged K stored at gcd(g, K))
 * are stored at the gcd of their group sizes, so one recipe rule gives one config
 * group: transformers' dequantize=True takes the first group's scheme for every layer
 * (docs/checkpoints.md). */
static int plan_groups(const KilnCheckpoint *c, Scheme *ls, Scheme *sch, int *grp, int *ngrp,
                       KilnDiag *d)
{
    for (int i = 0; i < c->nlin; i++) {
        int rc = layer_scheme(c, &c->lin[i], &ls[i], d);
        if (rc)
            return rc;
    }
    for (int i = 0; i < c->nlin; i++) {
        Scheme x = ls[i];
        for (int j = 0; j < c->nlin; j++) {
            x.group = ls[j].group;
            if (same_scheme(&x, &ls[j]))
                ls[i].group = (int32_t)gcd64(ls[i].group, ls[j].group);
        }
    }
    *ngrp = 0;
    for (int i = 0; i < c->nlin; i++) {
        int g = 0;
        while (g < *ngrp && !same_scheme(&sch[g], &ls[i]))
            g++;
        if (g == *ngrp)
            sch[(*ngrp)++] = ls[i];
        grp[i] = g;
    }
    return 0;
}

int kiln_checkpoint_compat(const KilnCheckpoint *c, KilnCkptCompat *out, KilnDiag *d)
{
    memset(out, 0, sizeof *out);
    Scheme *ls = calloc((size_t)c->nlin + 1, sizeof *ls);
    Scheme *sch = calloc((size_t)c->nlin + 1, sizeof *sch);
    int *grp = calloc((size_t)c->nlin + 1, sizeof *grp);
    int rc = ls && sch && grp ? plan_groups(c, ls, sch, grp, &out->ngroups, d) : oom(d);
    for (int i = 0; !rc && i < c->nlin; i++) {
        const Scheme *s = &ls[i];
        if (s->gidx && !out->ngidx++)
            snprintf(out->gidx_layer, sizeof out->gidx_layer, "%s", c->lin[i].name);
        if (!s->w.symmetric && s->w.gran != KILN_GRAN_TENSOR &&
            strcmp(s->format, "pack-quantized") == 0 && !out->nasym_packed++)
            snprintf(out->asym_layer, sizeof out->asym_layer, "%s", c->lin[i].name);
    }
    free(ls);
    free(sch);
    free(grp);
    return rc;
}

/* ------------------------------------------------------------------ tensors */

/* Tensors for model.safetensors; buffers owned here until written. A dry Out lists the
 * tensors (names, types, shapes) without making their bytes: the header written first. */
typedef struct Out {
    KilnModelTensor *t;
    int n, cap;
    void **own;
    int nown, capown;
    bool dry;
} Out;

/* NULL in a dry Out (out_add then records the tensor without data) */
static void *out_alloc(Out *o, size_t bytes)
{
    if (o->dry)
        return NULL;
    if (o->nown == o->capown) {
        int cap = o->capown ? 2 * o->capown : 64;
        void **v = realloc(o->own, sizeof *v * (size_t)cap);
        if (!v)
            return NULL;
        o->own = v, o->capown = cap;
    }
    void *p = calloc(1, bytes ? bytes : 1);
    if (p)
        o->own[o->nown++] = p;
    return p;
}

static void out_free(Out *o)
{
    for (int i = 0; i < o->nown; i++)
        free(o->own[i]);
    free(o->own);
    for (int i = 0; i < o->n; i++)
        free((char *)o->t[i].name);
    free(o->t);
    *o = (Out){.dry = o->dry};
}

/* Bytes per element of the types written here. */
static size_t type_size(KilnModelType t)
{
    return t == KILN_MT_I64 ? 8 : t == KILN_MT_F32 || t == KILN_MT_I32 ? 4 : 1;
}

/* Adds "module.suffix" (or module alone when suffix is NULL) with data already in place. */
static int out_add(Out *o, const char *module, const char *suffix, KilnModelType ty, int rank,
                   const int64_t *dim, const void *data, KilnDiag *d)
{
    if (o->n == o->cap) {
        int cap = o->cap ? 2 * o->cap : 64;
        KilnModelTensor *t = realloc(o->t, sizeof *t * (size_t)cap);
        if (!t)
            return kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
        o->t = t, o->cap = cap;
    }
    size_t len = strlen(module) + (suffix ? strlen(suffix) + 2 : 1);
    char *name = malloc(len);
    if (!name)
        return kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
    snprintf(name, len, suffix ? "%s.%s" : "%s", module, suffix);
    KilnModelTensor *t = &o->t[o->n++];
    memset(t, 0, sizeof *t);
    t->name = name;
    t->type = ty;
    t->rank = rank;
    t->numel = 1;
    for (int i = 0; i < rank; i++)
        t->dim[i] = dim[i], t->numel *= dim[i];
    t->nbytes = (size_t)t->numel * type_size(ty);
    t->data = data;
    return 0;
}


/* Integer codes as compressed-tensors holds them: signed, q - 2^(bits-1) for kiln's
 * unsigned (asymmetric) codes. Checks the range of every code. */
static int signed_code(const KilnQLinear *q, int32_t code, const char *what, int32_t *out,
                       KilnDiag *d)
{
    int bits = q->spec.fmt == KILN_QF_INT4 ? 4 : 8;
    int32_t off = 1 << (bits - 1);
    int32_t lo = q->spec.symmetric ? -off : 0, hi = q->spec.symmetric ? off - 1 : 2 * off - 1;
    if (code < lo || code > hi)
        return kiln_diag_set(d, KILN_EINPUT, "%s: %s %d outside the %s %s range [%d, %d]",
                             q->name, what, code, q->spec.symmetric ? "symmetric" : "asymmetric",
                             kiln_qformat_name(q->spec.fmt), lo, hi);
    *out = q->spec.symmetric ? code : code - off;
    return 0;
}

/* Scale (or zero) of row n, stored group j: kiln's group j·group_stored / group. */
static int64_t src_index(const KilnQLinear *q, const Scheme *s, int64_t n, int64_t j)
{
    if (q->spec.gran == KILN_GRAN_TENSOR)
        return 0;
    if (q->spec.gran == KILN_GRAN_CHANNEL)
        return n;
    return n * q->ngroups + j * s->group / q->spec.group;
}

static int64_t stored_ngroups(const KilnQLinear *q, const Scheme *s)
{
    return q->spec.gran == KILN_GRAN_GROUP ? q->K / s->group + (q->K % s->group != 0) : 1;
}

/* weight_scale, weight_zero_point (asymmetric; packed along N for pack-quantized
 * channel/group, as compressed-tensors' pack_to_int32(zp, packed_dim=0) does). */
static int add_scales(Out *o, const KilnQLinear *q, const Scheme *s, bool pack, KilnDiag *d)
{
    int64_t G = stored_ngroups(q, s), N = q->N;
    bool tensor = q->spec.gran == KILN_GRAN_TENSOR;
    int64_t sdim[2] = {tensor ? 1 : N, G};
    int64_t ns = tensor ? 1 : N * G;
    float *sc = out_alloc(o, sizeof(float) * (size_t)ns);
    if (!sc && !o->dry)
        return oom(d);
    for (int64_t n = 0; sc && n < (tensor ? 1 : N); n++)
        for (int64_t j = 0; j < (tensor ? 1 : G); j++)
            sc[n * G + j] = q->scale[src_index(q, s, n, j)];
    int rc = out_add(o, q->name, "weight_scale", KILN_MT_F32, tensor ? 1 : 2, sdim, sc, d);
    if (rc || q->spec.symmetric)
        return rc;
    int bits = q->spec.fmt == KILN_QF_INT4 ? 4 : 8;
    if (pack && !tensor) {
        /* zero of row n, group j: bits·(n mod per) of word [n / per, j] */
        int per = 32 / bits;
        int64_t zdim[2] = {(N + per - 1) / per, G};
        uint32_t *zw = out_alloc(o, sizeof(uint32_t) * (size_t)(zdim[0] * G));
        if (!zw && !o->dry)
            return oom(d);
        for (int64_t n = 0; zw && n < N; n++)
            for (int64_t j = 0; j < G; j++) {
                int32_t z;
                if ((rc = signed_code(q, q->zero[src_index(q, s, n, j)], "zero point", &z, d)))
                    return rc;
                uint32_t u = (uint32_t)(z + (1 << (bits - 1)));
                zw[(n / per) * G + j] |= u << (bits * (n % per));
            }
        return out_add(o, q->name, "weight_zero_point", KILN_MT_I32, 2, zdim, zw, d);
    }
    int8_t *z8 = out_alloc(o, (size_t)ns);
    if (!z8 && !o->dry)
        return oom(d);
    for (int64_t n = 0; z8 && n < (tensor ? 1 : N); n++)
        for (int64_t j = 0; j < (tensor ? 1 : G); j++) {
            int32_t z;
            if ((rc = signed_code(q, q->zero[src_index(q, s, n, j)], "zero point", &z, d)))
                return rc;
            z8[n * G + j] = (int8_t)z;
        }
    return out_add(o, q->name, "weight_zero_point", KILN_MT_I8, tensor ? 1 : 2, sdim, z8, d);
}

/* weight_packed [N, ceil(K·bits/32)] int32: element k of a row at bits
 * bits·(k mod (32/bits)) of word k / (32/bits), stored as q + 2^(bits-1) — the layout
 * of compressed-tensors' pack_to_int32 for 4 and 8 bits. */
static int add_packed(Out *o, const KilnQLinear *q, KilnDiag *d)
{
    int bits = q->spec.fmt == KILN_QF_INT4 ? 4 : 8, per = 32 / bits;
    int64_t W = (q->K * bits + 31) / 32, N = q->N, K = q->K;
    uint32_t *w = out_alloc(o, sizeof(uint32_t) * (size_t)(N * W));
    int64_t *shape = out_alloc(o, 2 * sizeof(int64_t));
    if ((!w || !shape) && !o->dry)
        return oom(d);
    for (int64_t n = 0; w && n < N; n++)
        for (int64_t k = 0; k < K; k++) {
            int32_t v = 0;
            int rc = signed_code(q, q->codes[n * K + k], "code", &v, d);
            if (rc)
                return rc;
            w[n * W + k / per] |= (uint32_t)(v + (1 << (bits - 1))) << (bits * (k % per));
        }
    int64_t dim[2] = {N, W}, sdim[1] = {2};
    if (shape)
        shape[0] = N, shape[1] = K;
    int rc = out_add(o, q->name, "weight_packed", KILN_MT_I32, 2, dim, w, d);
    return rc ? rc : out_add(o, q->name, "weight_shape", KILN_MT_I64, 1, sdim, shape, d);
}

/* weight [N, K]: int8 holding the signed codes (int-quantized), or the fp8 bytes. */
static int add_plain(Out *o, const KilnQLinear *q, KilnDiag *d)
{
    int64_t NK = q->N * q->K, dim[2] = {q->N, q->K};
    uint8_t *w = out_alloc(o, (size_t)NK);
    if (!w && !o->dry)
        return oom(d);
    bool fp8 = q->spec.fmt == KILN_QF_FP8_E4M3;
    for (int64_t i = 0; w && i < NK; i++) {
        int32_t v = q->codes[i];
        if (fp8 && (v < 0 || v > 255))
            return kiln_diag_set(d, KILN_EINPUT, "%s: fp8 code %d is not a byte", q->name, v);
        int rc = fp8 ? 0 : signed_code(q, v, "code", &v, d);
        if (rc)
            return rc;
        w[i] = (uint8_t)v;
    }
    return out_add(o, q->name, "weight", fp8 ? KILN_MT_F8_E4M3 : KILN_MT_I8, 2, dim, w, d);
}

/* input_scale (+ input_zero_point) of a static activation scheme. */
static int add_act(Out *o, const KilnQLinear *q, const Scheme *s, KilnDiag *d)
{
    if (s->a.fmt == KILN_QF_NONE || s->a.dynamic)
        return 0;
    float sc = q->act_scale > 0 ? q->act_scale : s->a.scale;
    int32_t z = q->act_scale > 0 ? q->act_zero : s->a.zero;
    if (!(sc > 0))
        return kiln_diag_set(d, KILN_EINPUT, "%s: static activation quantization without a "
                             "scale (set act_scale, or make the activations dynamic)", q->name);
    float *ps = out_alloc(o, sizeof(float));
    if (!ps && !o->dry)
        return oom(d);
    if (ps)
        *ps = sc;
    int64_t one[1] = {1};
    int rc = out_add(o, q->name, "input_scale", KILN_MT_F32, 1, one, ps, d);
    if (rc || s->a.symmetric)
        return rc;
    int bits = s->a.fmt == KILN_QF_INT4 ? 4 : 8;
    int8_t *pz = out_alloc(o, 1);
    if (!pz && !o->dry)
        return oom(d);
    if (z < 0 || z >= (1 << bits))
        return kiln_diag_set(d, KILN_EINPUT, "%s: activation zero point %d", q->name, z);
    if (pz)
        *pz = (int8_t)(z - (1 << (bits - 1)));
    return out_add(o, q->name, "input_zero_point", KILN_MT_I8, 1, one, pz, d);
}

static int add_layer(Out *o, const KilnQLinear *q, const Scheme *s, KilnDiag *d)
{
    bool pack = strcmp(s->format, "pack-quantized") == 0;
    int rc = pack ? add_packed(o, q, d) : add_plain(o, q, d);
    if (!rc)
        rc = add_scales(o, q, s, pack, d);
    if (!rc && s->gidx) {
        /* in stored groups: kiln group j starts at stored group j·group / group_stored */
        int32_t *gi = out_alloc(o, sizeof(int32_t) * (size_t)q->K);
        if (!gi && !o->dry)
            return oom(d);
        for (int64_t k = 0; gi && k < q->K; k++)
            gi[k] = (int32_t)((int64_t)q->g_idx[k] * q->spec.group / s->group);
        int64_t dim[1] = {q->K};
        rc = out_add(o, q->name, "weight_g_idx", KILN_MT_I32, 1, dim, gi, d);
    }
    if (!rc)
        rc = add_act(o, q, s, d);
    if (!rc && q->bias) {
        int64_t dim[1] = {q->N};
        rc = out_add(o, q->name, "bias", KILN_MT_F32, 1, dim, q->bias, d);
    }
    return rc;
}

/* mkdir -p of dir, and of the directory part of dir/rel when rel has one. */
static int make_dirs(const char *dir, const char *rel, KilnDiag *d)
{
    char buf[4096];
    if ((size_t)snprintf(buf, sizeof buf, "%s/%s", dir, rel) >= sizeof buf)
        return kiln_diag_set(d, KILN_EINPUT, "%s: path too long", dir);
    *strrchr(buf, '/') = 0;
    return kiln_rt_mkdir_p(buf, "directory", d);
}

/* ------------------------------------------------------------------ streaming */

/* model.safetensors written layer by layer (docs/hardening.md, "Memory"): the header from
 * a dry plan of every tensor, then each layer's tensors made (its codes too, for a layer
 * made on demand) when the file reaches them and freed when it moves on, so the whole
 * checkpoint is never in memory in its written form. */
typedef struct Stream {
    KilnCheckpoint *c;
    const Scheme *ls;
    bool dequant; /* kiln's dequantized weights: one f32 "weight" a layer */
    Out plan;     /* dry: every tensor of the file, in order */
    int *first;   /* [nlin + 1]: each layer's first tensor in plan (then c->t's) */
    int cur;      /* the layer whose tensors live holds, -1 none */
    Out live;
    float *rows;  /* a slice of a tensor made on demand (KilnCkptTensor.fill) */
    size_t nrows_bytes;
} Stream;

/* Bytes of f32 rows made at a time for a plain tensor made on demand. */
#define ROWS_BYTES (16u << 20)

/* kiln's own dequantization of a layer as f32 [N, K]. */
static int add_dequant(Out *o, const KilnQLinear *q, KilnDiag *d)
{
    float *w = out_alloc(o, sizeof(float) * (size_t)(q->N * q->K));
    if (!w && !o->dry)
        return oom(d);
    if (w)
        kiln_qlinear_dequant(q, w);
    int64_t dim[2] = {q->N, q->K};
    return out_add(o, q->name, "weight", KILN_MT_F32, 2, dim, w, d);
}

static int stream_add(Stream *s, Out *o, int i, KilnDiag *d)
{
    return s->dequant ? add_dequant(o, &s->c->lin[i], d) : add_layer(o, &s->c->lin[i], &s->ls[i], d);
}

static void stream_drop(Stream *s)
{
    if (s->cur >= 0)
        kiln_qlinear_unload(&s->c->lin[s->cur]);
    out_free(&s->live);
    s->cur = -1;
}

/* Layer L's tensors into live, checked against the header's. */
static int stream_layer(Stream *s, int L, KilnDiag *d)
{
    stream_drop(s);
    s->cur = L;
    int rc = kiln_qlinear_load(&s->c->lin[L], d);
    if (!rc)
        rc = stream_add(s, &s->live, L, d);
    int n = s->first[L + 1] - s->first[L];
    for (int j = 0; !rc && j < n; j++) {
        const KilnModelTensor *a = &s->live.t[j], *b = &s->plan.t[s->first[L] + j];
        if (j >= s->live.n || strcmp(a->name, b->name) || a->type != b->type ||
            a->nbytes != b->nbytes || memcmp(a->dim, b->dim, sizeof a->dim))
            rc = kiln_diag_set(d, KILN_EINTERNAL, "%s: its tensors differ from the header's",
                               s->c->lin[L].name);
    }
    if (!rc && s->live.n != n)
        rc = kiln_diag_set(d, KILN_EINTERNAL, "%s: %d tensors made, the header has %d",
                           s->c->lin[L].name, s->live.n, n);
    return rc;
}

/* Bytes from off of c->t[k], made on demand: whole rows, about ROWS_BYTES of them. */
static int stream_rows(Stream *s, int k, size_t off, const void **data, size_t *len,
                       KilnDiag *d)
{
    const KilnCkptTensor *t = &s->c->t[k];
    size_t row = sizeof(float);
    for (int j = 1; j < t->rank; j++)
        row *= (size_t)t->dim[j];
    if (!t->fill || row == 0 || off % row)
        return kiln_diag_set(d, KILN_EINTERNAL, "checkpoint: tensor '%s' has no bytes", t->name);
    int64_t r0 = (int64_t)(off / row), per = ROWS_BYTES / row > 0 ? ROWS_BYTES / row : 1;
    int64_t nr = t->dim[0] - r0 < per ? t->dim[0] - r0 : per;
    if (!s->rows) {
        s->nrows_bytes = (size_t)per * row;
        if (!(s->rows = malloc(s->nrows_bytes)))
            return oom(d);
    }
    if ((size_t)nr * row > s->nrows_bytes)
        return kiln_diag_set(d, KILN_EINTERNAL, "checkpoint: tensor '%s': rows", t->name);
    int rc = t->fill(t->fill_ctx, t->fill_arg, r0, nr, s->rows, d);
    *data = s->rows, *len = (size_t)nr * row;
    return rc;
}

/* KilnStFill: tensor i's bytes from off (a layer's: the file reaches them in order). */
static int stream_fill(void *ctx, int i, size_t off, const void **data, size_t *len,
                       KilnDiag *d)
{
    Stream *s = ctx;
    if (i >= s->first[s->c->nlin])
        return stream_rows(s, i - s->first[s->c->nlin], off, data, len, d);
    int L = s->cur >= 0 && i >= s->first[s->cur] ? s->cur : 0;
    while (L < s->c->nlin && i >= s->first[L + 1])
        L++;
    if (L >= s->c->nlin)
        return kiln_diag_set(d, KILN_EINTERNAL, "checkpoint: tensor %d has no bytes", i);
    int rc = L == s->cur ? 0 : stream_layer(s, L, d);
    const KilnModelTensor *t = rc ? NULL : &s->live.t[i - s->first[L]];
    if (t)
        *data = (const char *)t->data + off, *len = t->nbytes - off;
    return rc;
}

/* Writes path from the checkpoint's layers (and, unless dequant, its plain tensors). */
static int write_stream(const char *path, const KilnCheckpoint *cc, const Scheme *ls, bool dequant,
                        KilnDiag *d)
{
    /* codes made on demand are a cache: the checkpoint's content does not change */
    KilnCheckpoint *c = (KilnCheckpoint *)cc;
    Stream s = {.c = c, .ls = ls, .dequant = dequant, .plan.dry = true, .cur = -1};
    s.first = malloc(sizeof(int) * ((size_t)c->nlin + 1));
    int rc = s.first ? 0 : oom(d);
    for (int i = 0; !rc && i < c->nlin; i++) {
        s.first[i] = s.plan.n;
        rc = stream_add(&s, &s.plan, i, d);
    }
    if (!rc)
        s.first[c->nlin] = s.plan.n;
    for (int i = 0; !rc && !dequant && i < c->nt; i++) {
        const KilnCkptTensor *t = &c->t[i];
        rc = out_add(&s.plan, t->name, NULL, KILN_MT_F32, t->rank, t->dim, t->data, d);
    }
    /* Hugging Face refuses safetensors whose metadata lacks format "pt" */
    const char *meta[2] = {"format", "pt"};
    if (!rc)
        rc = kiln_safetensors_write_fill(path, s.plan.t, s.plan.n, meta, 1, stream_fill, &s, d);
    stream_drop(&s);
    out_free(&s.plan);
    free(s.first), free(s.rows);
    return rc;
}

/* ------------------------------------------------------------------ entry points */

int kiln_checkpoint_write(const char *dir, const KilnCheckpoint *c, KilnDiag *d)
{
    if (c->kv.fmt != KILN_QF_NONE) {
        int rc = check_act("kv_cache_scheme", &c->kv, "KV cache", d);
        if (rc)
            return rc;
        if (c->kv.fmt != KILN_QF_INT8 && c->kv.fmt != KILN_QF_FP8_E4M3)
            return kiln_diag_set(d, KILN_EINPUT, "kv_cache_scheme: %s has no compressed-tensors "
                                 "form (int8 or fp8_e4m3)", kiln_qformat_name(c->kv.fmt));
    }
    Scheme *ls = calloc((size_t)c->nlin + 1, sizeof *ls);
    Scheme *sch = calloc((size_t)c->nlin + 1, sizeof *sch);
    int *grp = calloc((size_t)c->nlin + 1, sizeof *grp);
    int ngrp = 0, rc = ls && sch && grp ? plan_groups(c, ls, sch, grp, &ngrp, d) : oom(d);
    if (!rc)
        rc = make_dirs(dir, "model.safetensors", d);
    char path[4200];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    if (!rc)
        rc = write_stream(path, c, ls, false, d);
    if (!rc)
        rc = kiln_ckpt_write_config(dir, c, sch, grp, ngrp, d);
    for (int i = 0; !rc && i < c->nfiles; i++) {
        const KilnCkptFile *f = &c->files[i];
        if (strcmp(f->name, "config.json") == 0 || strcmp(f->name, "model.safetensors") == 0)
            rc = kiln_diag_set(d, KILN_EINPUT, "checkpoint: extra file '%s' would replace the "
                               "writer's own", f->name);
        else if (!(rc = make_dirs(dir, f->name, d))) {
            snprintf(path, sizeof path, "%s/%s", dir, f->name);
            rc = kiln_rt_write_file(path, f->data, f->len, d);
        }
    }
    free(ls);
    free(sch);
    free(grp);
    return rc;
}

int kiln_checkpoint_write_dequant(const char *path, const KilnCheckpoint *c, KilnDiag *d)
{
    Scheme *ls = calloc((size_t)c->nlin + 1, sizeof *ls);
    int rc = ls ? 0 : oom(d);
    for (int i = 0; !rc && i < c->nlin; i++)
        rc = layer_scheme(c, &c->lin[i], &ls[i], d);
    if (!rc)
        rc = write_stream(path, c, ls, true, d);
    free(ls);
    return rc;
}
