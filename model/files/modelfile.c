/* model/files/modelfile.c — opening a model file (mmap + format detection), the tensor and
 * metadata lookups shared by the safetensors and GGUF readers, and conversion of
 * tensors (plain and Q8_0/Q4_0/Q4_1 blocks) to f32. */
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ir/numerics.h"
#include "model/files/modelfile_internal.h"

/* kiln_mf_rows_f32 reads up to this many bytes with pread instead of the mapping, on the
 * file descriptor kiln_mf_open keeps: at most KEPT_FDS of them in the process (a
 * directory may have 4096 shards, and the soft limit on open files is often 1024); a
 * file opened beyond that is read through its mapping only. */
#define PREAD_MAX ((size_t)64 << 10)
#define KEPT_FDS 256
static atomic_int kept_fds;

static const char *const mt_names[] = {
    [KILN_MT_F32] = "F32",   [KILN_MT_F16] = "F16",   [KILN_MT_BF16] = "BF16",
    [KILN_MT_F64] = "F64",   [KILN_MT_I8] = "I8",     [KILN_MT_I16] = "I16",
    [KILN_MT_I32] = "I32",   [KILN_MT_I64] = "I64",   [KILN_MT_U8] = "U8",
    [KILN_MT_BOOL] = "BOOL", [KILN_MT_Q8_0] = "Q8_0", [KILN_MT_Q4_0] = "Q4_0",
    [KILN_MT_Q4_1] = "Q4_1", [KILN_MT_F8_E4M3] = "F8_E4M3", [KILN_MT_F8_E5M2] = "F8_E5M2",
    [KILN_MT_OTHER] = "OTHER",
};

const char *kiln_mt_name(KilnModelType t)
{
    if ((unsigned)t > KILN_MT_OTHER)
        return "?";
    return mt_names[t];
}

size_t kiln_mt_elem_size(KilnModelType t)
{
    switch (t) {
    case KILN_MT_F64: case KILN_MT_I64: return 8;
    case KILN_MT_F32: case KILN_MT_I32: return 4;
    case KILN_MT_F16: case KILN_MT_BF16: case KILN_MT_I16: return 2;
    case KILN_MT_I8: case KILN_MT_U8: case KILN_MT_BOOL: return 1;
    case KILN_MT_F8_E4M3: case KILN_MT_F8_E5M2: return 1;
    default: return 0;
    }
}

/* ------------------------------------------------------------------ arena */

void *kiln_mf_alloc(KilnModelFile *mf, size_t n)
{
    n = (n + 7) & ~(size_t)7;
    KilnArenaChunk *c = mf->arena;
    if (!c || c->cap - c->used < n) {
        size_t cap = n > ((size_t)1 << 20) ? n : ((size_t)1 << 20);
        c = calloc(1, sizeof *c + cap);
        if (!c)
            return NULL;
        c->cap = cap;
        c->next = mf->arena;
        mf->arena = c;
    }
    void *p = c->data + c->used;
    c->used += n;
    return p;
}

char *kiln_mf_strdup(KilnModelFile *mf, const char *s, size_t n)
{
    char *p = kiln_mf_alloc(mf, n + 1);
    if (p) {
        memcpy(p, s, n);
        p[n] = 0;
    }
    return p;
}

/* ------------------------------------------------------------------ open/close */

static bool ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

int kiln_mf_open(const char *path, KilnModelFile **out, KilnDiag *d)
{
    *out = NULL;
    KilnModelFile *mf = calloc(1, sizeof *mf);
    if (!mf)
        return kiln_diag_set(d, KILN_EINTERNAL, "%s: out of memory", path);
    mf->fd = -1;
    mf->path = kiln_mf_strdup(mf, path, strlen(path));
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC); /* a FIFO must not block */
    if (fd < 0) {
        kiln_diag_set(d, KILN_EINPUT, "%s: cannot open: %s", path, strerror(errno));
        kiln_mf_close(mf);
        return KILN_EINPUT;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        kiln_diag_set(d, KILN_EINPUT, "%s: not a regular file", path);
        close(fd);
        kiln_mf_close(mf);
        return KILN_EINPUT;
    }
    mf->size = (size_t)st.st_size;
    if (mf->size == 0) {
        close(fd);
        kiln_mf_close(mf);
        return kiln_diag_set(d, KILN_EINPUT, "%s: empty file", path);
    }
    mf->map = mmap(NULL, mf->size, PROT_READ, MAP_PRIVATE, fd, 0);
    int merr = errno;
    if (atomic_fetch_add(&kept_fds, 1) < KEPT_FDS) {
        mf->fd = fd;
    } else {
        atomic_fetch_sub(&kept_fds, 1);
        close(fd);
    }
    if (mf->map == MAP_FAILED) {
        mf->map = NULL;
        kiln_diag_set(d, KILN_EINPUT, "%s: cannot map: %s", path, strerror(merr));
        kiln_mf_close(mf);
        return KILN_EINPUT;
    }
    const unsigned char *b = mf->map;
    int rc;
    if ((mf->size >= 4 && memcmp(b, "GGUF", 4) == 0) || ends_with(path, ".gguf")) {
        mf->format = "gguf";
        rc = kiln_gguf_parse(mf, d);
    } else if ((mf->size > 8 && b[8] == '{') || ends_with(path, ".safetensors")) {
        mf->format = "safetensors";
        rc = kiln_safetensors_parse(mf, d);
    } else {
        rc = kiln_diag_set(d, KILN_EINPUT,
                           "%s: unknown model file format (neither GGUF magic nor a "
                           "safetensors header; name it .gguf or .safetensors)", path);
    }
    if (rc == 0)
        rc = kiln_mf_index(mf, d);
    if (rc != 0) {
        kiln_mf_close(mf);
        return rc;
    }
    *out = mf;
    return 0;
}

void kiln_mf_close(KilnModelFile *mf)
{
    if (!mf)
        return;
    if (mf->map)
        munmap(mf->map, mf->size);
    if (mf->fd >= 0) {
        close(mf->fd);
        atomic_fetch_sub(&kept_fds, 1);
    }
    free(mf->by_name);
    free(mf->meta_by_key);
    KilnArenaChunk *c = mf->arena;
    while (c) {
        KilnArenaChunk *n = c->next;
        free(c);
        c = n;
    }
    free(mf);
}

const char *kiln_mf_format(const KilnModelFile *mf) { return mf->format; }
int kiln_mf_ntensors(const KilnModelFile *mf) { return mf->ntensors; }

const KilnModelTensor *kiln_mf_tensor(const KilnModelFile *mf, int i)
{
    return i >= 0 && i < mf->ntensors ? &mf->tensors[i] : NULL;
}

/* ------------------------------------------------------------------ indices */

static int cmp_tensor_idx(const void *a, const void *b, void *ctx)
{
    const KilnModelFile *mf = ctx;
    return strcmp(mf->tensors[*(const int *)a].name, mf->tensors[*(const int *)b].name);
}

static int cmp_meta_idx(const void *a, const void *b, void *ctx)
{
    const KilnModelFile *mf = ctx;
    return strcmp(mf->meta[*(const int *)a].key, mf->meta[*(const int *)b].key);
}

int kiln_mf_index(KilnModelFile *mf, KilnDiag *d)
{
    mf->by_name = malloc(sizeof(int) * (size_t)(mf->ntensors + 1));
    mf->meta_by_key = malloc(sizeof(int) * (size_t)(mf->nmeta + 1));
    if (!mf->by_name || !mf->meta_by_key)
        return kiln_diag_set(d, KILN_EINTERNAL, "%s: out of memory", mf->path);
    for (int i = 0; i < mf->ntensors; i++)
        mf->by_name[i] = i;
    for (int i = 0; i < mf->nmeta; i++)
        mf->meta_by_key[i] = i;
    qsort_r(mf->by_name, (size_t)mf->ntensors, sizeof(int), cmp_tensor_idx, mf);
    qsort_r(mf->meta_by_key, (size_t)mf->nmeta, sizeof(int), cmp_meta_idx, mf);
    for (int i = 1; i < mf->ntensors; i++) {
        const char *a = mf->tensors[mf->by_name[i - 1]].name;
        if (strcmp(a, mf->tensors[mf->by_name[i]].name) == 0)
            return kiln_diag_set(d, KILN_EINPUT, "%s: duplicate tensor name '%s'", mf->path, a);
    }
    for (int i = 1; i < mf->nmeta; i++) {
        const char *a = mf->meta[mf->meta_by_key[i - 1]].key;
        if (strcmp(a, mf->meta[mf->meta_by_key[i]].key) == 0)
            return kiln_diag_set(d, KILN_EINPUT, "%s: duplicate metadata key '%s'", mf->path, a);
    }
    return 0;
}

typedef struct {
    size_t begin, end;
    int idx;
} Span;

static int cmp_span(const void *a, const void *b)
{
    const Span *x = a, *y = b;
    if (x->begin != y->begin)
        return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end)
        return x->end < y->end ? -1 : 1;
    return x->idx - y->idx;
}

int kiln_mf_check_overlap(KilnModelFile *mf, const uint8_t *data_base, bool contiguous,
                          size_t data_size, KilnDiag *d)
{
    Span *sp = malloc(sizeof(Span) * (size_t)(mf->ntensors + 1));
    if (!sp)
        return kiln_diag_set(d, KILN_EINTERNAL, "%s: out of memory", mf->path);
    for (int i = 0; i < mf->ntensors; i++) {
        size_t b = (size_t)((const uint8_t *)mf->tensors[i].data - data_base);
        sp[i] = (Span){b, b + mf->tensors[i].nbytes, i};
    }
    qsort(sp, (size_t)mf->ntensors, sizeof(Span), cmp_span);
    int rc = 0;
    size_t prev_end = 0;
    int prev = -1;
    for (int i = 0; i < mf->ntensors && rc == 0; i++) {
        const char *name = mf->tensors[sp[i].idx].name;
        if (sp[i].begin < prev_end && sp[i].end > sp[i].begin)
            rc = kiln_diag_set(d, KILN_EINPUT,
                               "%s: tensor '%s': bytes [%zu, %zu) overlap tensor '%s' "
                               "[%zu, %zu)", mf->path, name, sp[i].begin, sp[i].end,
                               mf->tensors[sp[prev].idx].name, sp[prev].begin, prev_end);
        else if (contiguous && sp[i].begin != prev_end)
            rc = kiln_diag_set(d, KILN_EINPUT,
                               "%s: tensor '%s': data starts at byte %zu but the previous "
                               "tensor ends at %zu (a hole in the data section)",
                               mf->path, name, sp[i].begin, prev_end);
        if (sp[i].end > prev_end || prev < 0) {
            prev_end = sp[i].end > prev_end ? sp[i].end : prev_end;
            prev = i;
        }
    }
    if (rc == 0 && contiguous && prev_end != data_size)
        rc = kiln_diag_set(d, KILN_EINPUT,
                           "%s: data section has %zu bytes but the tensors cover %zu",
                           mf->path, data_size, prev_end);
    free(sp);
    return rc;
}

const KilnModelTensor *kiln_mf_find(const KilnModelFile *mf, const char *name)
{
    int lo = 0, hi = mf->ntensors;
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        int c = strcmp(name, mf->tensors[mf->by_name[mid]].name);
        if (c == 0)
            return &mf->tensors[mf->by_name[mid]];
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

static const KilnMeta *find_meta(const KilnModelFile *mf, const char *key)
{
    int lo = 0, hi = mf->nmeta;
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        int c = strcmp(key, mf->meta[mf->meta_by_key[mid]].key);
        if (c == 0)
            return &mf->meta[mf->meta_by_key[mid]];
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

/* ------------------------------------------------------------------ metadata */

KilnMetaKind kiln_mf_meta_kind(const KilnModelFile *mf, const char *key)
{
    const KilnMeta *m = find_meta(mf, key);
    return m ? m->kind : KILN_MV_NONE;
}

KilnMetaKind kiln_mf_meta_array_kind(const KilnModelFile *mf, const char *key)
{
    const KilnMeta *m = find_meta(mf, key);
    return m && m->kind == KILN_MV_ARRAY ? m->elem : KILN_MV_NONE;
}

bool kiln_mf_meta_int(const KilnModelFile *mf, const char *key, int64_t *out)
{
    const KilnMeta *m = find_meta(mf, key);
    if (!m || !((m->kind == KILN_MV_INT && m->int_ok) || m->kind == KILN_MV_BOOL))
        return false;
    *out = m->i;
    return true;
}

bool kiln_mf_meta_float(const KilnModelFile *mf, const char *key, double *out)
{
    const KilnMeta *m = find_meta(mf, key);
    if (m && m->kind == KILN_MV_FLOAT)
        *out = m->f;
    else if (m && m->kind == KILN_MV_INT && m->int_ok)
        *out = (double)m->i;
    else
        return false;
    return true;
}

const char *kiln_mf_meta_str(const KilnModelFile *mf, const char *key)
{
    const KilnMeta *m = find_meta(mf, key);
    return m && m->kind == KILN_MV_STR ? m->s : NULL;
}

int64_t kiln_mf_meta_array_len(const KilnModelFile *mf, const char *key)
{
    const KilnMeta *m = find_meta(mf, key);
    return m && m->kind == KILN_MV_ARRAY ? m->n : -1;
}

const char *kiln_mf_meta_array_str(const KilnModelFile *mf, const char *key, int64_t i)
{
    const KilnMeta *m = find_meta(mf, key);
    if (!m || m->kind != KILN_MV_ARRAY || !m->as || i < 0 || i >= m->n)
        return NULL;
    return m->as[i];
}

bool kiln_mf_meta_array_int(const KilnModelFile *mf, const char *key, int64_t i, int64_t *out)
{
    const KilnMeta *m = find_meta(mf, key);
    if (!m || m->kind != KILN_MV_ARRAY || !m->ai || i < 0 || i >= m->n)
        return false;
    *out = m->ai[i];
    return true;
}

bool kiln_mf_meta_array_float(const KilnModelFile *mf, const char *key, int64_t i, double *out)
{
    const KilnMeta *m = find_meta(mf, key);
    if (!m || m->kind != KILN_MV_ARRAY || i < 0 || i >= m->n)
        return false;
    if (m->af)
        *out = m->af[i];
    else if (m->ai)
        *out = (double)m->ai[i];
    else
        return false;
    return true;
}

/* ------------------------------------------------------------------ to f32 */

static uint16_t rd16(const uint8_t *p)
{
    uint16_t v;
    memcpy(&v, p, 2);
    return v;
}

/* ggml block formats (little-endian), 32 elements a block; the nibble order is: element
 * j < 16 in the low nibble of qs[j], element j >= 16 in the high nibble of qs[j - 16]. */
static void deq_blocks(KilnModelType t, const uint8_t *p, int64_t nblocks, float *y)
{
    for (int64_t b = 0; b < nblocks; b++, y += 32) {
        float dsc = kiln_f16_to_f32(rd16(p));
        if (t == KILN_MT_Q8_0) {
            for (int j = 0; j < 32; j++)
                y[j] = (float)(int8_t)p[2 + j] * dsc;
            p += 34;
        } else if (t == KILN_MT_Q4_0) {
            for (int j = 0; j < 16; j++) {
                y[j] = (float)((p[2 + j] & 0xF) - 8) * dsc;
                y[j + 16] = (float)((p[2 + j] >> 4) - 8) * dsc;
            }
            p += 18;
        } else {
            float mn = kiln_f16_to_f32(rd16(p + 2));
            for (int j = 0; j < 16; j++) {
                y[j] = (float)(p[4 + j] & 0xF) * dsc + mn;
                y[j + 16] = (float)(p[4 + j] >> 4) * dsc + mn;
            }
            p += 20;
        }
    }
}

static void convert_plain(KilnModelType t, const uint8_t *p, int64_t n, float *y)
{
    for (int64_t i = 0; i < n; i++) {
        switch (t) {
        case KILN_MT_F32: memcpy(&y[i], p + 4 * i, 4); break;
        case KILN_MT_F16: y[i] = kiln_f16_to_f32(rd16(p + 2 * i)); break;
        case KILN_MT_BF16: y[i] = kiln_bf16_to_f32(rd16(p + 2 * i)); break;
        case KILN_MT_F64: { double v; memcpy(&v, p + 8 * i, 8); y[i] = (float)v; break; }
        case KILN_MT_I8: y[i] = (float)(int8_t)p[i]; break;
        case KILN_MT_U8: y[i] = (float)p[i]; break;
        case KILN_MT_F8_E4M3: y[i] = kiln_fp8_e4m3_decode(p[i]); break;
        case KILN_MT_F8_E5M2: y[i] = kiln_fp8_e5m2_decode(p[i]); break;
        case KILN_MT_BOOL: y[i] = p[i] ? 1.0f : 0.0f; break;
        case KILN_MT_I16: y[i] = (float)(int16_t)rd16(p + 2 * i); break;
        case KILN_MT_I32: { int32_t v; memcpy(&v, p + 4 * i, 4); y[i] = (float)v; break; }
        case KILN_MT_I64: { int64_t v; memcpy(&v, p + 8 * i, 8); y[i] = (float)v; break; }
        default: y[i] = 0; break;
        }
    }
}

/* Whether t can be read as f32 at all (its type), and how big it is. */
static int check_loadable(const KilnModelFile *mf, const KilnModelTensor *t, KilnDiag *d)
{
    int idx = (int)(t - mf->tensors);
    bool block = t->type == KILN_MT_Q8_0 || t->type == KILN_MT_Q4_0 || t->type == KILN_MT_Q4_1;
    if (!block && kiln_mt_elem_size(t->type) == 0)
        return kiln_diag_set(d, KILN_EINPUT,
                             "%s: tensor '%s' has type %s, which kiln cannot load (supported: "
                             "F32, F16, BF16, F64, I8, I16, I32, I64, U8, BOOL, F8_E4M3, "
                             "F8_E5M2, Q8_0, Q4_0, Q4_1)", mf->path, t->name, mf->type_names[idx]);
    if ((uint64_t)t->numel > SIZE_MAX / sizeof(float) / 2)
        return kiln_diag_set(d, KILN_EINPUT, "%s: tensor '%s' is too large to load", mf->path,
                             t->name);
    return 0;
}

static bool is_block(KilnModelType t)
{
    return t == KILN_MT_Q8_0 || t == KILN_MT_Q4_0 || t == KILN_MT_Q4_1;
}

static size_t block_bytes(KilnModelType t)
{
    return t == KILN_MT_Q8_0 ? 34 : t == KILN_MT_Q4_0 ? 18 : 20;
}

int kiln_mf_rows_f32(const KilnModelFile *mf, const KilnModelTensor *t, int64_t row0,
                     int64_t nrows, float *out, KilnDiag *d)
{
    int rc = check_loadable(mf, t, d);
    if (rc)
        return rc;
    int64_t rowlen = t->rank >= 1 ? t->dim[t->rank - 1] : 1, rows = rowlen ? t->numel / rowlen : 0;
    if (row0 < 0 || nrows < 0 || row0 > rows || nrows > rows - row0 ||
        (is_block(t->type) && rowlen % 32))
        return kiln_diag_set(d, KILN_EINPUT, "%s: tensor '%s': rows %lld..%lld of %lld (of %lld "
                             "elements) cannot be read", mf->path, t->name, (long long)row0,
                             (long long)(row0 + nrows), (long long)rows, (long long)rowlen);
    size_t off = is_block(t->type) ? (size_t)(row0 * rowlen / 32) * block_bytes(t->type)
                                   : (size_t)(row0 * rowlen) * kiln_mt_elem_size(t->type);
    size_t len = is_block(t->type) ? (size_t)(nrows * rowlen / 32) * block_bytes(t->type)
                                   : (size_t)(nrows * rowlen) * kiln_mt_elem_size(t->type);
    const uint8_t *src = (const uint8_t *)t->data + off;
    uint8_t *buf = NULL;
    if (len > 0 && len <= PREAD_MAX && mf->fd >= 0) {
        /* A few rows (an embedding lookup): read, not faulted in. A fault maps the
         * kernel's whole fault-around window (16 pages) of the table, so 640 scattered
         * token rows made ~10 MB of MiniLM's table resident for a batch. A short read
         * (the file changed) falls back to the mapping. */
        off_t at = (off_t)(src - (const uint8_t *)mf->map);
        if (t->type == KILN_MT_F32 && pread(mf->fd, out, len, at) == (ssize_t)len)
            return 0;
        if (t->type != KILN_MT_F32 && (buf = malloc(len)) &&
            pread(mf->fd, buf, len, at) == (ssize_t)len)
            src = buf;
    }
    if (is_block(t->type))
        deq_blocks(t->type, src, nrows * rowlen / 32, out);
    else
        convert_plain(t->type, src, nrows * rowlen, out);
    free(buf);
    return 0;
}

void kiln_mf_drop_pages(const KilnModelFile *mf, const KilnModelTensor *t)
{
    long pg = sysconf(_SC_PAGESIZE);
    uintptr_t a = (uintptr_t)t->data, e = a + t->nbytes, base = (uintptr_t)mf->map;
    a = (a + (uintptr_t)pg - 1) & ~((uintptr_t)pg - 1); /* whole pages inside t only */
    e &= ~((uintptr_t)pg - 1);
    if (pg > 0 && a >= base && e > a && e <= base + mf->size)
        madvise((void *)a, e - a, MADV_DONTNEED); /* read-only private map: refaults from the file */
}

int kiln_mf_load_f32(const KilnModelFile *mf, const char *name, float **out, KilnDiag *d)
{
    *out = NULL;
    const KilnModelTensor *t = kiln_mf_find(mf, name);
    if (!t)
        return kiln_diag_set(d, KILN_EINPUT, "%s: no tensor named '%s'", mf->path, name);
    int rc = check_loadable(mf, t, d);
    if (rc)
        return rc;
    float *y = malloc(t->numel > 0 ? (size_t)t->numel * sizeof(float) : 1);
    if (!y)
        return kiln_diag_set(d, KILN_EINTERNAL, "%s: tensor '%s': out of memory", mf->path,
                             name);
    if (is_block(t->type))
        deq_blocks(t->type, t->data, t->numel / 32, y);
    else
        convert_plain(t->type, t->data, t->numel, y);
    *out = y;
    return 0;
}
