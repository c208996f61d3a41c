/* tests/models/testlib.h — what test_modelfile.c and test_tokenizer.c share (header-only,
 * static; include after cmocka.h): a scratch directory, the path of a real model file, and
 * a tiny GGUF writer (header, metadata key/values, tensor infos, aligned data). */
#ifndef KILN_TEST_MODELS_TESTLIB_H
#define KILN_TEST_MODELS_TESTLIB_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char tmpdir[256];

static inline int tmpdir_setup(void **state)
{
    (void)state;
    /* tmpfs when there is one: rewriting a file 5000 times on ext4 syncs each time */
    snprintf(tmpdir, sizeof tmpdir, "/dev/shm/kiln-test-XXXXXX");
    if (mkdtemp(tmpdir))
        return 0;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/kiln-test-XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static inline int tmpdir_teardown(void **state)
{
    (void)state;
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

/* Path of a real model file under $KILN_MODELS_DIR or ~/.cache/kiln/models; fails the
 * test when the models were not fetched. */
static inline void model_path(const char *rel, char *buf, size_t n)
{
    const char *e = getenv("KILN_MODELS_DIR");
    char dir[512];
    if (e && *e)
        snprintf(dir, sizeof dir, "%s", e);
    else
        snprintf(dir, sizeof dir, "%s/.cache/kiln/models", getenv("HOME") ? getenv("HOME") : ".");
    snprintf(buf, n, "%s/%s", dir, rel);
    if (access(buf, R_OK) != 0)
        fail_msg("%s is missing: run scripts/fetch-models.sh (or set KILN_MODELS_DIR)", buf);
}

typedef struct {
    uint8_t *b;
    size_t n, cap;
} GB;

enum { GB_U8, GB_I8, GB_U16, GB_I16, GB_U32, GB_I32, GB_F32, GB_BOOL, GB_STR, GB_ARR, GB_U64,
       GB_I64, GB_F64 };

static inline void gb_bytes(GB *g, const void *p, size_t n)
{
    if (g->n + n > g->cap) {
        g->cap = (g->n + n) * 2 + 64;
        g->b = realloc(g->b, g->cap);
        if (!g->b)
            abort(); /* test helper: out of memory is not a test result */
    }
    if (n)
        memcpy(g->b + g->n, p, n);
    g->n += n;
}
static inline void gb_u8(GB *g, uint8_t v) { gb_bytes(g, &v, 1); }
static inline void gb_u16(GB *g, uint16_t v) { gb_bytes(g, &v, 2); }
static inline void gb_u32(GB *g, uint32_t v) { gb_bytes(g, &v, 4); }
static inline void gb_u64(GB *g, uint64_t v) { gb_bytes(g, &v, 8); }
static inline void gb_f32(GB *g, float v) { gb_bytes(g, &v, 4); }
static inline void gb_f64(GB *g, double v) { gb_bytes(g, &v, 8); }
static inline void gb_str(GB *g, const char *s)
{
    gb_u64(g, strlen(s));
    gb_bytes(g, s, strlen(s));
}
static inline void gb_header(GB *g, uint32_t version, uint64_t ntensors, uint64_t nkv)
{
    gb_bytes(g, "GGUF", 4);
    gb_u32(g, version);
    gb_u64(g, ntensors);
    gb_u64(g, nkv);
}
static inline void gb_key(GB *g, const char *key, uint32_t type)
{
    gb_str(g, key);
    gb_u32(g, type);
}
static inline void gb_kv_str(GB *g, const char *key, const char *v)
{
    gb_key(g, key, GB_STR);
    gb_str(g, v);
}
static inline void gb_kv_u32(GB *g, const char *key, uint32_t v)
{
    gb_key(g, key, GB_U32);
    gb_u32(g, v);
}
static inline void gb_kv_arr_str(GB *g, const char *key, const char *const *v, uint64_t n)
{
    gb_key(g, key, GB_ARR);
    gb_u32(g, GB_STR);
    gb_u64(g, n);
    for (uint64_t i = 0; i < n; i++)
        gb_str(g, v[i]);
}
static inline void gb_kv_arr_i32(GB *g, const char *key, const int32_t *v, uint64_t n)
{
    gb_key(g, key, GB_ARR);
    gb_u32(g, GB_I32);
    gb_u64(g, n);
    gb_bytes(g, v, 4 * n);
}
/* ne in GGUF order (innermost first). */
static inline void gb_tensor(GB *g, const char *name, uint32_t ndims, const uint64_t *ne,
                      uint32_t type, uint64_t offset)
{
    gb_str(g, name);
    gb_u32(g, ndims);
    for (uint32_t i = 0; i < ndims; i++)
        gb_u64(g, ne[i]);
    gb_u32(g, type);
    gb_u64(g, offset);
}
static inline void gb_align(GB *g, size_t a)
{
    while (g->n % a)
        gb_u8(g, 0);
}
static inline int gb_write(const GB *g, const char *path)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    size_t w = fwrite(g->b, 1, g->n, f);
    return fclose(f) == 0 && w == g->n ? 0 : -1;
}

#endif
