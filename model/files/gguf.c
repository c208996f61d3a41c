/* model/files/gguf.c — the GGUF (v2/v3, little-endian) reader: header, metadata key/values
 * of every type, tensor infos and the aligned data section, all bounds-checked. */
#include <stdlib.h>
#include <string.h>

#include "model/files/modelfile_internal.h"

/* ggml's type table (ggml.h): name, elements per block, bytes per block. Ids missing
 * here (removed types, or newer than this table) make the file unreadable because the
 * size of their tensors is unknown. */
typedef struct {
    const char *name;
    int block, bytes;
    KilnModelType mt;
} GgmlType;

static const GgmlType ggml_types[] = {
    [0] = {"F32", 1, 4, KILN_MT_F32},        [1] = {"F16", 1, 2, KILN_MT_F16},
    [2] = {"Q4_0", 32, 18, KILN_MT_Q4_0},    [3] = {"Q4_1", 32, 20, KILN_MT_Q4_1},
    [6] = {"Q5_0", 32, 22, KILN_MT_OTHER},   [7] = {"Q5_1", 32, 24, KILN_MT_OTHER},
    [8] = {"Q8_0", 32, 34, KILN_MT_Q8_0},    [9] = {"Q8_1", 32, 36, KILN_MT_OTHER},
    [10] = {"Q2_K", 256, 84, KILN_MT_OTHER}, [11] = {"Q3_K", 256, 110, KILN_MT_OTHER},
    [12] = {"Q4_K", 256, 144, KILN_MT_OTHER}, [13] = {"Q5_K", 256, 176, KILN_MT_OTHER},
    [14] = {"Q6_K", 256, 210, KILN_MT_OTHER}, [15] = {"Q8_K", 256, 292, KILN_MT_OTHER},
    [16] = {"IQ2_XXS", 256, 66, KILN_MT_OTHER}, [17] = {"IQ2_XS", 256, 74, KILN_MT_OTHER},
    [18] = {"IQ3_XXS", 256, 98, KILN_MT_OTHER}, [19] = {"IQ1_S", 256, 50, KILN_MT_OTHER},
    [20] = {"IQ4_NL", 32, 18, KILN_MT_OTHER}, [21] = {"IQ3_S", 256, 110, KILN_MT_OTHER},
    [22] = {"IQ2_S", 256, 82, KILN_MT_OTHER}, [23] = {"IQ4_XS", 256, 136, KILN_MT_OTHER},
    [24] = {"I8", 1, 1, KILN_MT_I8},         [25] = {"I16", 1, 2, KILN_MT_I16},
    [26] = {"I32", 1, 4, KILN_MT_I32},       [27] = {"I64", 1, 8, KILN_MT_I64},
    [28] = {"F64", 1, 8, KILN_MT_F64},       [29] = {"IQ1_M", 256, 56, KILN_MT_OTHER},
    [30] = {"BF16", 1, 2, KILN_MT_BF16},     [34] = {"TQ1_0", 256, 54, KILN_MT_OTHER},
    [35] = {"TQ2_0", 256, 66, KILN_MT_OTHER}, [39] = {"MXFP4", 32, 17, KILN_MT_OTHER},
};
#define N_GGML_TYPES (sizeof ggml_types / sizeof ggml_types[0])

enum { GV_U8, GV_I8, GV_U16, GV_I16, GV_U32, GV_I32, GV_F32, GV_BOOL, GV_STR, GV_ARR, GV_U64,
       GV_I64, GV_F64, GV_COUNT };
static const char *const gv_names[GV_COUNT] = {"u8", "i8", "u16", "i16", "u32", "i32", "f32",
                                               "bool", "string", "array", "u64", "i64", "f64"};
static const int gv_size[GV_COUNT] = {1, 1, 2, 2, 4, 4, 4, 1, 8, 12, 8, 8, 8}; /* minimum */

typedef struct {
    KilnModelFile *mf;
    const uint8_t *b;
    size_t pos, size;
    KilnDiag *d;
} Rd;

#define ERR(...) kiln_diag_set(r->d, KILN_EINPUT, __VA_ARGS__)
#define OOM() kiln_diag_set(r->d, KILN_EINTERNAL, "%s: out of memory", r->mf->path)

static int need(Rd *r, uint64_t n, const char *what)
{
    if (n > r->size - r->pos)
        return ERR("%s: truncated GGUF file: %s at byte %zu needs %llu bytes, %zu left",
                   r->mf->path, what, r->pos, (unsigned long long)n, r->size - r->pos);
    return 0;
}

static int rd_u32(Rd *r, uint32_t *v, const char *what)
{
    if (need(r, 4, what))
        return KILN_EINPUT;
    memcpy(v, r->b + r->pos, 4);
    r->pos += 4;
    return 0;
}

static int rd_u64(Rd *r, uint64_t *v, const char *what)
{
    if (need(r, 8, what))
        return KILN_EINPUT;
    memcpy(v, r->b + r->pos, 8);
    r->pos += 8;
    return 0;
}

/* A GGUF string: u64 length + bytes. *out is a NUL-terminated copy (NULL if skip).
 * Names (max == KILN_MF_MAX_NAME) must be non-empty and free of NUL bytes. */
static int rd_str(Rd *r, const char **out, uint64_t max, const char *what)
{
    uint64_t n;
    if (rd_u64(r, &n, what))
        return KILN_EINPUT;
    if (n > max)
        return ERR("%s: %s at byte %zu has length %llu (limit %llu)", r->mf->path, what,
                   r->pos - 8, (unsigned long long)n, (unsigned long long)max);
    if (need(r, n, what))
        return KILN_EINPUT;
    if (max == KILN_MF_MAX_NAME && (n == 0 || memchr(r->b + r->pos, 0, (size_t)n)))
        return ERR("%s: %s at byte %zu is empty or contains a NUL byte", r->mf->path, what,
                   r->pos - 8);
    if (out) {
        char *s = kiln_mf_strdup(r->mf, (const char *)r->b + r->pos, (size_t)n);
        if (!s)
            return OOM();
        *out = s;
    }
    r->pos += (size_t)n;
    return 0;
}

/* A scalar of type t: integers into *i (ok=false for a u64 above INT64_MAX), floats *f. */
static int rd_scalar(Rd *r, uint32_t t, int64_t *i, double *f, bool *ok, const char *key)
{
    if (need(r, (uint64_t)gv_size[t], key))
        return KILN_EINPUT;
    const uint8_t *p = r->b + r->pos;
    *ok = true;
    *i = 0;
    *f = 0;
    switch (t) {
    case GV_U8: *i = p[0]; break;
    case GV_I8: *i = (int8_t)p[0]; break;
    case GV_BOOL:
        if (p[0] > 1)
            return ERR("%s: metadata '%s': bool byte is %u, not 0 or 1", r->mf->path, key, p[0]);
        *i = p[0];
        break;
    case GV_U16: { uint16_t v; memcpy(&v, p, 2); *i = v; break; }
    case GV_I16: { int16_t v; memcpy(&v, p, 2); *i = v; break; }
    case GV_U32: { uint32_t v; memcpy(&v, p, 4); *i = v; break; }
    case GV_I32: { int32_t v; memcpy(&v, p, 4); *i = v; break; }
    case GV_I64: { int64_t v; memcpy(&v, p, 8); *i = v; break; }
    case GV_U64: {
        uint64_t v;
        memcpy(&v, p, 8);
        *ok = v <= INT64_MAX;
        *i = (int64_t)(v & INT64_MAX);
        break;
    }
    case GV_F32: { float v; memcpy(&v, p, 4); *f = v; break; }
    case GV_F64: { double v; memcpy(&v, p, 8); *f = v; break; }
    default: break;
    }
    r->pos += (size_t)gv_size[t];
    return 0;
}

static KilnMetaKind kind_of(uint32_t t)
{
    switch (t) {
    case GV_F32: case GV_F64: return KILN_MV_FLOAT;
    case GV_BOOL: return KILN_MV_BOOL;
    case GV_STR: return KILN_MV_STR;
    case GV_ARR: return KILN_MV_ARRAY;
    default: return KILN_MV_INT;
    }
}

static int rd_value(Rd *r, uint32_t t, KilnMeta *m, int depth, const char *key);

/* An array: u32 element type, u64 count, elements. Nested arrays are checked and
 * skipped (m == NULL below the top level): the API exposes only their length. */
static int rd_array(Rd *r, KilnMeta *m, int depth, const char *key)
{
    uint32_t et;
    uint64_t n;
    if (rd_u32(r, &et, key) || rd_u64(r, &n, key))
        return KILN_EINPUT;
    if (et >= GV_COUNT)
        return ERR("%s: metadata '%s': unknown array element type %u", r->mf->path, key, et);
    if (depth >= KILN_MF_MAX_ARRAY_DEPTH)
        return ERR("%s: metadata '%s': arrays nested deeper than %d", r->mf->path, key,
                   KILN_MF_MAX_ARRAY_DEPTH);
    if (n > (r->size - r->pos) / (uint64_t)gv_size[et])
        return ERR("%s: metadata '%s': array of %llu %s elements cannot fit in the %zu bytes "
                   "left", r->mf->path, key, (unsigned long long)n, gv_names[et],
                   r->size - r->pos);
    KilnMetaKind ek = kind_of(et);
    if (m) {
        m->kind = KILN_MV_ARRAY;
        m->elem = ek;
        m->n = (int64_t)n;
        size_t cnt = (size_t)n + 1;
        if (ek == KILN_MV_STR)
            m->as = kiln_mf_alloc(r->mf, sizeof(char *) * cnt);
        else if (ek == KILN_MV_FLOAT)
            m->af = kiln_mf_alloc(r->mf, sizeof(double) * cnt);
        else if (ek != KILN_MV_ARRAY)
            m->ai = kiln_mf_alloc(r->mf, sizeof(int64_t) * cnt);
        if (!m->as && !m->af && !m->ai && ek != KILN_MV_ARRAY)
            return OOM();
    }
    for (uint64_t k = 0; k < n; k++) {
        if (et == GV_STR) {
            if (rd_str(r, m ? &m->as[k] : NULL, r->size, key))
                return KILN_EINPUT;
        } else if (et == GV_ARR) {
            if (rd_array(r, NULL, depth + 1, key))
                return KILN_EINPUT;
        } else {
            int64_t i;
            double f;
            bool ok;
            if (rd_scalar(r, et, &i, &f, &ok, key))
                return KILN_EINPUT;
            if (m && m->af)
                m->af[k] = f;
            else if (m)
                m->ai[k] = i;
        }
    }
    return 0;
}

static int rd_value(Rd *r, uint32_t t, KilnMeta *m, int depth, const char *key)
{
    if (t >= GV_COUNT)
        return ERR("%s: metadata '%s': unknown value type %u", r->mf->path, key, t);
    if (t == GV_ARR)
        return rd_array(r, m, depth, key);
    m->kind = kind_of(t);
    if (t == GV_STR)
        return rd_str(r, &m->s, r->size, key);
    return rd_scalar(r, t, &m->i, &m->f, &m->int_ok, key);
}

static int rd_tensor_info(Rd *r, int idx)
{
    KilnModelFile *mf = r->mf;
    KilnModelTensor *t = &mf->tensors[idx];
    if (rd_str(r, &t->name, KILN_MF_MAX_NAME, "tensor name"))
        return KILN_EINPUT;
    uint32_t nd, type;
    if (rd_u32(r, &nd, t->name))
        return KILN_EINPUT;
    if (nd > 4)
        return ERR("%s: tensor '%s': n_dims %u is more than 4", mf->path, t->name, nd);
    uint64_t ne[4] = {1, 1, 1, 1};
    int64_t numel = 1;
    for (uint32_t k = 0; k < nd; k++) {
        if (rd_u64(r, &ne[k], t->name))
            return KILN_EINPUT;
        if (ne[k] > INT64_MAX || (ne[k] && (uint64_t)numel > (uint64_t)INT64_MAX / ne[k]))
            return ERR("%s: tensor '%s': dimension ne[%u] = %llu overflows", mf->path, t->name,
                       k, (unsigned long long)ne[k]);
        numel *= (int64_t)ne[k];
        t->dim[nd - 1 - k] = (int64_t)ne[k]; /* outermost first, like PyTorch */
    }
    t->rank = (int)nd;
    t->numel = numel;
    uint64_t off;
    if (rd_u32(r, &type, t->name) || rd_u64(r, &off, t->name))
        return KILN_EINPUT;
    if (type >= N_GGML_TYPES || !ggml_types[type].name)
        return ERR("%s: tensor '%s': unknown ggml type %u", mf->path, t->name, type);
    const GgmlType *gt = &ggml_types[type];
    if (nd > 0 && ne[0] % (uint64_t)gt->block != 0)
        return ERR("%s: tensor '%s': innermost dimension %llu is not a multiple of the %s "
                   "block size %d", mf->path, t->name, (unsigned long long)ne[0], gt->name,
                   gt->block);
    if (nd == 0 && gt->block != 1)
        return ERR("%s: tensor '%s': a 0-dimensional tensor of block type %s", mf->path,
                   t->name, gt->name);
    uint64_t nblocks = (uint64_t)numel / (uint64_t)gt->block;
    if (nblocks > (uint64_t)INT64_MAX / (uint64_t)gt->bytes)
        return ERR("%s: tensor '%s': size overflows", mf->path, t->name);
    t->type = gt->mt;
    t->nbytes = (size_t)(nblocks * (uint64_t)gt->bytes);
    t->data = (const void *)(uintptr_t)off; /* relative until the data section is known */
    mf->type_names[idx] = gt->name;
    return 0;
}

int kiln_gguf_parse(KilnModelFile *mf, KilnDiag *d)
{
    Rd rr = {mf, mf->map, 0, mf->size, d}, *r = &rr;
    if (mf->size < 4 || memcmp(r->b, "GGUF", 4) != 0)
        return ERR("%s: not a GGUF file: bad magic", mf->path);
    r->pos = 4;
    uint32_t version;
    uint64_t nt, nkv;
    if (rd_u32(r, &version, "version"))
        return KILN_EINPUT;
    if (version != 2 && version != 3)
        return ERR("%s: GGUF version %u is not supported (kiln reads versions 2 and 3)",
                   mf->path, version);
    if (rd_u64(r, &nt, "tensor count") || rd_u64(r, &nkv, "metadata count"))
        return KILN_EINPUT;
    if (nt > KILN_MF_MAX_TENSORS || nt > (mf->size - r->pos) / 24)
        return ERR("%s: tensor count %llu is absurd for a %zu-byte file", mf->path,
                   (unsigned long long)nt, mf->size);
    if (nkv > KILN_MF_MAX_KV || nkv > (mf->size - r->pos) / 13)
        return ERR("%s: metadata count %llu is absurd for a %zu-byte file", mf->path,
                   (unsigned long long)nkv, mf->size);
    mf->meta = kiln_mf_alloc(mf, sizeof(KilnMeta) * ((size_t)nkv + 1));
    mf->tensors = kiln_mf_alloc(mf, sizeof(KilnModelTensor) * ((size_t)nt + 1));
    mf->type_names = kiln_mf_alloc(mf, sizeof(char *) * ((size_t)nt + 1));
    if (!mf->meta || !mf->tensors || !mf->type_names)
        return OOM();
    for (uint64_t k = 0; k < nkv; k++) {
        KilnMeta *m = &mf->meta[mf->nmeta];
        uint32_t t;
        if (rd_str(r, &m->key, KILN_MF_MAX_NAME, "metadata key") || rd_u32(r, &t, m->key) ||
            rd_value(r, t, m, 0, m->key))
            return KILN_EINPUT;
        mf->nmeta++;
    }
    for (uint64_t k = 0; k < nt; k++) {
        if (rd_tensor_info(r, (int)k))
            return KILN_EINPUT;
        mf->ntensors++;
    }
    uint64_t align = 32;
    for (int k = 0; k < mf->nmeta; k++) {
        KilnMeta *m = &mf->meta[k];
        if (strcmp(m->key, "general.alignment") != 0)
            continue;
        if (m->kind != KILN_MV_INT || !m->int_ok || m->i <= 0 || m->i > (1 << 20) ||
            (m->i & (m->i - 1)) != 0)
            return ERR("%s: general.alignment is not a power of two up to 1 MiB", mf->path);
        align = (uint64_t)m->i;
    }
    /* a file without tensor data may end before the padding of the data section */
    uint64_t start = (r->pos + align - 1) / align * align;
    if (start > mf->size)
        start = mf->size;
    const uint8_t *data = r->b + start;
    size_t dsize = mf->size - (size_t)start;
    for (int k = 0; k < mf->ntensors; k++) {
        KilnModelTensor *t = &mf->tensors[k];
        uint64_t off = (uint64_t)(uintptr_t)t->data;
        if (off % align != 0)
            return ERR("%s: tensor '%s': offset %llu is not a multiple of the alignment %llu",
                       mf->path, t->name, (unsigned long long)off, (unsigned long long)align);
        if (off > dsize || t->nbytes > dsize - off)
            return ERR("%s: tensor '%s': data [%llu, %llu) runs past the end of the %zu-byte "
                       "data section", mf->path, t->name, (unsigned long long)off,
                       (unsigned long long)(off + t->nbytes), dsize);
        t->data = data + off;
    }
    return kiln_mf_check_overlap(mf, data, false, dsize, d);
}
