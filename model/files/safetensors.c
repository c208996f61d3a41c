/* model/files/safetensors.c — the safetensors format: strict validation of the JSON header
 * of a mapped file, and an atomic writer. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "model/files/modelfile_internal.h"
#include "runtime/runtime.h"

typedef struct {
    const char *name;
    KilnModelType type;
    size_t size; /* bytes per element */
} StDtype;

/* Every dtype the safetensors library defines; those kiln has no KilnModelType for are
 * listed as OTHER (loadable by nobody, but the file is still valid). */
static const StDtype st_dtypes[] = {
    {"F64", KILN_MT_F64, 8},   {"F32", KILN_MT_F32, 4},    {"F16", KILN_MT_F16, 2},
    {"BF16", KILN_MT_BF16, 2}, {"I64", KILN_MT_I64, 8},    {"I32", KILN_MT_I32, 4},
    {"I16", KILN_MT_I16, 2},   {"I8", KILN_MT_I8, 1},      {"U8", KILN_MT_U8, 1},
    {"BOOL", KILN_MT_BOOL, 1}, {"U16", KILN_MT_OTHER, 2},  {"U32", KILN_MT_OTHER, 4},
    {"U64", KILN_MT_OTHER, 8}, {"F8_E4M3", KILN_MT_F8_E4M3, 1}, {"F8_E5M2", KILN_MT_F8_E5M2, 1},
    {"F8_E8M0", KILN_MT_OTHER, 1},
};

static const StDtype *st_dtype(const char *s)
{
    for (size_t i = 0; i < sizeof st_dtypes / sizeof st_dtypes[0]; i++)
        if (strcmp(st_dtypes[i].name, s) == 0)
            return &st_dtypes[i];
    return NULL;
}

#define ERR(...) kiln_diag_set(d, KILN_EINPUT, __VA_ARGS__)

/* Reads one tensor entry `name: {"dtype", "shape", "data_offsets"}` into *t. */
static int st_tensor(KilnModelFile *mf, const char *name, const KilnJson *v, size_t data_size,
                     const uint8_t *data, KilnModelTensor *t, const char **type_name,
                     KilnDiag *d)
{
    const char *p = mf->path;
    if (v->kind != KILN_JSON_OBJECT)
        return ERR("%s: tensor '%s': entry is a JSON %s, not an object", p, name,
                   kiln_json_kind_name(v->kind));
    for (size_t i = 0; i < v->len; i++) {
        const char *key = kiln_json_key(v, i);
        if (strcmp(key, "dtype") && strcmp(key, "shape") && strcmp(key, "data_offsets"))
            return ERR("%s: tensor '%s': unknown field \"%.100s\"", p, name, key);
    }
    const KilnJson *jd = kiln_json_get(v, "dtype"), *js = kiln_json_get(v, "shape"),
                   *jo = kiln_json_get(v, "data_offsets");
    if (!jd || !js || !jo)
        return ERR("%s: tensor '%s': missing \"%s\"", p, name,
                   !jd ? "dtype" : !js ? "shape" : "data_offsets");
    if (jd->kind != KILN_JSON_STRING)
        return ERR("%s: tensor '%s': dtype is not a string", p, name);
    const StDtype *dt = st_dtype(jd->str);
    if (!dt)
        return ERR("%s: tensor '%s': unknown dtype \"%.40s\"", p, name, jd->str);
    if (js->kind != KILN_JSON_ARRAY)
        return ERR("%s: tensor '%s': shape is not an array", p, name);
    if (js->len > 4)
        return ERR("%s: tensor '%s': rank %zu is more than kiln's limit of 4", p, name,
                   (size_t)js->len);
    int64_t numel = 1;
    for (size_t i = 0; i < js->len; i++) {
        const KilnJson *e = &js->items[i];
        if (e->kind != KILN_JSON_NUMBER || !e->is_int || e->i < 0)
            return ERR("%s: tensor '%s': shape[%zu] is not a non-negative integer", p, name, i);
        t->dim[i] = e->i;
        if (e->i != 0 && numel > INT64_MAX / e->i)
            return ERR("%s: tensor '%s': shape overflows 64 bits", p, name);
        numel *= e->i;
    }
    t->rank = (int)js->len;
    if (jo->kind != KILN_JSON_ARRAY || jo->len != 2)
        return ERR("%s: tensor '%s': data_offsets is not an array of 2 integers", p, name);
    for (int i = 0; i < 2; i++)
        if (jo->items[i].kind != KILN_JSON_NUMBER || !jo->items[i].is_int || jo->items[i].i < 0)
            return ERR("%s: tensor '%s': data_offsets[%d] is not a non-negative integer", p,
                       name, i);
    int64_t b = jo->items[0].i, e = jo->items[1].i;
    if (e < b)
        return ERR("%s: tensor '%s': data_offsets [%lld, %lld) end before begin", p, name,
                   (long long)b, (long long)e);
    if ((uint64_t)e > data_size)
        return ERR("%s: tensor '%s': data_offsets [%lld, %lld) past the end of the %zu-byte "
                   "data section", p, name, (long long)b, (long long)e, data_size);
    if (numel > INT64_MAX / (int64_t)dt->size || numel * (int64_t)dt->size != e - b)
        return ERR("%s: tensor '%s': shape holds %lld elements of %s (%zu bytes each) but "
                   "data_offsets [%lld, %lld) span %lld bytes", p, name, (long long)numel,
                   dt->name, dt->size, (long long)b, (long long)e, (long long)(e - b));
    t->name = kiln_mf_strdup(mf, name, strlen(name));
    if (!t->name)
        return kiln_diag_set(d, KILN_EINTERNAL, "%s: out of memory", p);
    t->type = dt->type;
    t->numel = numel;
    t->data = data + b;
    t->nbytes = (size_t)(e - b);
    *type_name = dt->name;
    return 0;
}

static int st_metadata(KilnModelFile *mf, const KilnJson *v, KilnDiag *d)
{
    if (v->kind != KILN_JSON_OBJECT)
        return ERR("%s: __metadata__ is not an object", mf->path);
    mf->meta = kiln_mf_alloc(mf, sizeof(KilnMeta) * (v->len + 1));
    if (!mf->meta)
        return kiln_diag_set(d, KILN_EINTERNAL, "%s: out of memory", mf->path);
    for (size_t i = 0; i < v->len; i++) {
        const char *key = kiln_json_key(v, i);
        if (v->items[i].kind != KILN_JSON_STRING)
            return ERR("%s: __metadata__ \"%.100s\" is a JSON %s; only strings are allowed",
                       mf->path, key, kiln_json_kind_name(v->items[i].kind));
        KilnMeta *m = &mf->meta[mf->nmeta++];
        m->key = kiln_mf_strdup(mf, key, strlen(key));
        m->s = kiln_mf_strdup(mf, v->items[i].str, v->items[i].len);
        if (!m->key || !m->s)
            return kiln_diag_set(d, KILN_EINTERNAL, "%s: out of memory", mf->path);
        m->kind = KILN_MV_STR;
    }
    return 0;
}

int kiln_safetensors_parse(KilnModelFile *mf, KilnDiag *d)
{
    const uint8_t *b = mf->map;
    if (mf->size < 8)
        return ERR("%s: truncated safetensors file (%zu bytes; the header length alone is 8)",
                   mf->path, mf->size);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--)
        n = n << 8 | b[i];
    if (n < 2)
        return ERR("%s: safetensors header length %llu is too small", mf->path,
                   (unsigned long long)n);
    if (n > KILN_ST_MAX_HEADER || n > KILN_JSON_MAX_BYTES)
        return ERR("%s: safetensors header length %llu is larger than the limit", mf->path,
                   (unsigned long long)n);
    if (n > mf->size - 8)
        return ERR("%s: safetensors header length %llu runs past the end of the %zu-byte file",
                   mf->path, (unsigned long long)n, mf->size);
    if (b[8] != '{')
        return ERR("%s: safetensors header does not start with '{'", mf->path);
    char where[600];
    snprintf(where, sizeof where, "%s (safetensors header)", mf->path);
    KilnJson *j = NULL;
    int rc = kiln_json_parse((const char *)b + 8, (size_t)n, where, &j, d);
    if (rc)
        return rc;
    if (j->kind != KILN_JSON_OBJECT) {
        kiln_json_free(j);
        return ERR("%s: safetensors header is not a JSON object", mf->path);
    }
    const uint8_t *data = b + 8 + n;
    size_t data_size = mf->size - 8 - (size_t)n;
    mf->tensors = kiln_mf_alloc(mf, sizeof(KilnModelTensor) * (j->len + 1));
    mf->type_names = kiln_mf_alloc(mf, sizeof(char *) * (j->len + 1));
    if (!mf->tensors || !mf->type_names)
        rc = kiln_diag_set(d, KILN_EINTERNAL, "%s: out of memory", mf->path);
    for (size_t i = 0; i < j->len && rc == 0; i++) {
        const char *name = kiln_json_key(j, i);
        if (strcmp(name, "__metadata__") == 0) {
            rc = st_metadata(mf, &j->items[i], d);
            continue;
        }
        if (name[0] == 0) {
            rc = ERR("%s: a tensor has an empty name", mf->path);
            break;
        }
        if (strlen(name) > KILN_MF_MAX_NAME) {
            rc = ERR("%s: tensor name of %zu bytes is longer than %d", mf->path, strlen(name),
                     KILN_MF_MAX_NAME);
            break;
        }
        rc = st_tensor(mf, name, &j->items[i], data_size, data,
                       &mf->tensors[mf->ntensors], &mf->type_names[mf->ntensors], d);
        if (rc == 0)
            mf->ntensors++;
    }
    kiln_json_free(j);
    if (rc == 0)
        rc = kiln_mf_check_overlap(mf, data, true, data_size, d);
    return rc;
}

/* ------------------------------------------------------------------ writer */

static void put_json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\')
            fprintf(f, "\\%c", *p);
        else if (*p < 0x20)
            fprintf(f, "\\u%04x", *p);
        else
            fputc(*p, f);
    }
    fputc('"', f);
}

static const char *st_write_name(KilnModelType t)
{
    for (size_t i = 0; i < sizeof st_dtypes / sizeof st_dtypes[0]; i++)
        if (st_dtypes[i].type == t && t != KILN_MT_OTHER)
            return st_dtypes[i].name;
    return NULL;
}

static int check_write(const KilnModelTensor *ts, int n, bool filled, KilnDiag *d)
{
    for (int i = 0; i < n; i++) {
        const KilnModelTensor *t = &ts[i];
        if (!t->name || !t->name[0])
            return ERR("safetensors write: tensor %d has no name", i);
        if (strcmp(t->name, "__metadata__") == 0)
            return ERR("safetensors write: '__metadata__' is not a tensor name");
        if (!st_write_name(t->type))
            return ERR("safetensors write: tensor '%s': type %s cannot be written", t->name,
                       kiln_mt_name(t->type));
        if (t->rank < 0 || t->rank > 4)
            return ERR("safetensors write: tensor '%s': rank %d", t->name, t->rank);
        int64_t numel = 1;
        for (int k = 0; k < t->rank; k++) {
            if (t->dim[k] < 0 || (t->dim[k] && numel > INT64_MAX / t->dim[k]))
                return ERR("safetensors write: tensor '%s': bad dim %lld", t->name,
                           (long long)t->dim[k]);
            numel *= t->dim[k];
        }
        if ((uint64_t)numel * kiln_mt_elem_size(t->type) != t->nbytes)
            return ERR("safetensors write: tensor '%s': nbytes %zu does not match its shape "
                       "(%lld elements of %s)", t->name, t->nbytes, (long long)numel,
                       kiln_mt_name(t->type));
        if (t->nbytes && !t->data && !filled)
            return ERR("safetensors write: tensor '%s' has no data", t->name);
        for (int k = 0; k < i; k++)
            if (strcmp(ts[k].name, t->name) == 0)
                return ERR("safetensors write: duplicate tensor name '%s'", t->name);
    }
    return 0;
}

int kiln_safetensors_write(const char *path, const KilnModelTensor *tensors, int n,
                           const char *const *meta_kv, int n_meta, KilnDiag *d)
{
    return kiln_safetensors_write_fill(path, tensors, n, meta_kv, n_meta, NULL, NULL, d);
}

int kiln_safetensors_write_fill(const char *path, const KilnModelTensor *tensors, int n,
                                const char *const *meta_kv, int n_meta, KilnStFill fill,
                                void *fill_ctx, KilnDiag *d)
{
    int rc = check_write(tensors, n, fill != NULL, d);
    if (rc)
        return rc;
    char *hdr = NULL;
    size_t hlen = 0;
    FILE *h = open_memstream(&hdr, &hlen);
    if (!h)
        return kiln_diag_set(d, KILN_EINTERNAL, "safetensors write: out of memory");
    fputc('{', h);
    if (n_meta > 0) {
        fputs("\"__metadata__\":{", h);
        for (int i = 0; i < n_meta; i++) {
            fputs(i ? "," : "", h);
            put_json_str(h, meta_kv[2 * i] ? meta_kv[2 * i] : "");
            fputc(':', h);
            put_json_str(h, meta_kv[2 * i + 1] ? meta_kv[2 * i + 1] : "");
        }
        fputc('}', h);
    }
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        const KilnModelTensor *t = &tensors[i];
        fputs(i || n_meta > 0 ? "," : "", h);
        put_json_str(h, t->name);
        fprintf(h, ":{\"dtype\":\"%s\",\"shape\":[", st_write_name(t->type));
        for (int k = 0; k < t->rank; k++)
            fprintf(h, "%s%lld", k ? "," : "", (long long)t->dim[k]);
        fprintf(h, "],\"data_offsets\":[%zu,%zu]}", off, off + t->nbytes);
        off += t->nbytes;
    }
    fputc('}', h);
    while ((ftell(h) & 7) != 0) /* pad with spaces so the data section is 8-aligned */
        fputc(' ', h);
    fclose(h);

    size_t plen = strlen(path);
    char *tmp = malloc(plen + 16);
    if (!tmp) {
        free(hdr);
        return kiln_diag_set(d, KILN_EINTERNAL, "safetensors write: out of memory");
    }
    snprintf(tmp, plen + 16, "%s.tmp.XXXXXX", path);
    int fd = mkstemp(tmp);
    if (fd >= 0) /* mkstemp makes 0600; a model file is for others (servers) to read too */
        (void)fchmod(fd, 0644);
    FILE *f = fd >= 0 ? fdopen(fd, "wb") : NULL;
    if (!f) {
        rc = ERR("%s: cannot create: %s", tmp, strerror(errno));
        if (fd >= 0) {
            close(fd);
            unlink(tmp);
        }
        free(hdr);
        free(tmp);
        return rc;
    }
    uint8_t len8[8];
    for (int i = 0; i < 8; i++)
        len8[i] = (uint8_t)((uint64_t)hlen >> (8 * i));
    bool ok = fwrite(len8, 1, 8, f) == 8 && fwrite(hdr, 1, hlen, f) == hlen;
    for (int i = 0; i < n && ok && !rc; i++) {
        const KilnModelTensor *t = &tensors[i];
        if (t->data || !t->nbytes || !fill) {
            ok = t->nbytes == 0 || fwrite(t->data, 1, t->nbytes, f) == t->nbytes;
            continue;
        }
        for (size_t at = 0; ok && at < t->nbytes;) {
            const void *data = NULL;
            size_t len = 0;
            if ((rc = fill(fill_ctx, i, at, &data, &len, d)))
                break; /* the producer's own message */
            if (!data || !len || len > t->nbytes - at) {
                rc = ERR("safetensors write: tensor '%s': %zu bytes made at %zu of its %zu",
                         t->name, len, at, t->nbytes);
                break;
            }
            ok = fwrite(data, 1, len, f) == len;
            at += len;
        }
    }
    ok = fflush(f) == 0 && ok;
    ok = fsync(fileno(f)) == 0 && ok;
    ok = fclose(f) == 0 && ok;
    free(hdr);
    if (rc) {
        unlink(tmp);
    } else if (!ok || rename(tmp, path) != 0) {
        rc = ERR("%s: cannot write: %s", path, strerror(errno));
        unlink(tmp);
    }
    free(tmp);
    return rc;
}
