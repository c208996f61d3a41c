/* tests/test_modelfile.c — the safetensors and GGUF readers and the safetensors writer:
 * round trips of every dtype, hand-built GGUF files with hand-computed dequantized
 * values, malformed files (each a KILN_EINPUT naming the problem), a seeded mutation
 * fuzz loop, and known facts of the two real model files. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "model/files/modelfile.h"
#include "tests/models/testlib.h"

static const char *tmp_path(const char *name)
{
    static char buf[4][512];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", tmpdir, name);
    return buf[k];
}

static void write_bytes(const char *path, const void *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(p, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
}

/* A safetensors file from a header text and data bytes. */
static const char *st_raw(const char *name, const char *hdr, const void *data, size_t n)
{
    GB g = {0};
    gb_u64(&g, strlen(hdr));
    gb_bytes(&g, hdr, strlen(hdr));
    gb_bytes(&g, data, n);
    const char *p = tmp_path(name);
    assert_int_equal(gb_write(&g, p), 0);
    free(g.b);
    return p;
}

static void expect_open_error(const char *path, const char *substr)
{
    KilnModelFile *mf = NULL;
    KilnDiag d = {0};
    int rc = kiln_mf_open(path, &mf, &d);
    if (rc != KILN_EINPUT || !strstr(d.msg, substr))
        fail_msg("%s: expected KILN_EINPUT with \"%s\", got rc %d: %s", path, substr, rc, d.msg);
    assert_null(mf);
}

/* ------------------------------------------------------------------ safetensors */

static const KilnModelTensor *must_find(const KilnModelFile *mf, const char *name)
{
    const KilnModelTensor *t = kiln_mf_find(mf, name);
    if (!t)
        fail_msg("tensor '%s' not found", name);
    return t;
}

static float *must_load(const KilnModelFile *mf, const char *name)
{
    float *y = NULL;
    KilnDiag d = {0};
    if (kiln_mf_load_f32(mf, name, &y, &d))
        fail_msg("load '%s': %s", name, d.msg);
    return y;
}

static void test_st_roundtrip(void **state)
{
    (void)state;
    float f32[6] = {1, -2, 3.5f, 0, -0.25f, 1e6f};
    uint16_t f16[4] = {0x3C00, 0xC000, 0x3800, 0x7BFF}; /* 1, -2, 0.5, 65504 */
    uint16_t bf16[4] = {0x3F80, 0x4040, 0xBF00, 0}; /* 1, 3, -0.5, 0 */
    double f64[1] = {-7.5};
    int8_t i8[3] = {-128, 0, 127};
    int16_t i16[2] = {-300, 300};
    int32_t i32[2] = {-70000, 70000};
    int64_t i64[2] = {-5, 1ll << 40};
    uint8_t u8[5] = {0, 1, 2, 254, 255};
    uint8_t bl[3] = {1, 0, 1};
    float scalar = 42.0f;
    KilnModelTensor ts[] = {
        {"a.f32", KILN_MT_F32, 2, {2, 3}, 6, f32, sizeof f32},
        {"b.f16", KILN_MT_F16, 1, {4}, 4, f16, sizeof f16},
        {"c.bf16", KILN_MT_BF16, 4, {1, 2, 1, 2}, 4, bf16, sizeof bf16},
        {"d.f64", KILN_MT_F64, 1, {1}, 1, f64, sizeof f64},
        {"e.i8", KILN_MT_I8, 1, {3}, 3, i8, sizeof i8},
        {"f.i16", KILN_MT_I16, 2, {2, 1}, 2, i16, sizeof i16},
        {"g.i32", KILN_MT_I32, 1, {2}, 2, i32, sizeof i32},
        {"h.i64", KILN_MT_I64, 1, {2}, 2, i64, sizeof i64},
        {"i.u8", KILN_MT_U8, 1, {5}, 5, u8, sizeof u8},
        {"j.bool", KILN_MT_BOOL, 1, {3}, 3, bl, sizeof bl},
        {"k.scalar", KILN_MT_F32, 0, {0}, 1, &scalar, 4},
        {"l.empty", KILN_MT_F32, 2, {0, 4}, 0, NULL, 0},
        {"m \"quoted\"\\name", KILN_MT_U8, 1, {1}, 1, u8, 1},
    };
    int n = (int)(sizeof ts / sizeof ts[0]);
    const char *meta[] = {"format", "pt", "note", "line\nbreak \"q\""};
    const char *path = tmp_path("rt.safetensors");
    KilnDiag d = {0};
    assert_int_equal(kiln_safetensors_write(path, ts, n, meta, 2, &d), 0);
    /* atomic: nothing but the file itself is left behind */
    DIR *dir = opendir(tmpdir);
    struct dirent *e;
    while ((e = readdir(dir)))
        assert_null(strstr(e->d_name, ".tmp."));
    closedir(dir);

    KilnModelFile *mf = NULL;
    assert_int_equal(kiln_mf_open(path, &mf, &d), 0);
    assert_string_equal(kiln_mf_format(mf), "safetensors");
    assert_int_equal(kiln_mf_ntensors(mf), n);
    for (int i = 0; i < n; i++) {
        const KilnModelTensor *t = must_find(mf, ts[i].name);
        assert_int_equal(t->type, ts[i].type);
        assert_int_equal(t->rank, ts[i].rank);
        assert_int_equal(t->numel, ts[i].numel);
        assert_int_equal(t->nbytes, ts[i].nbytes);
        for (int k = 0; k < t->rank; k++)
            assert_int_equal(t->dim[k], ts[i].dim[k]);
        if (t->nbytes)
            assert_memory_equal(t->data, ts[i].data, t->nbytes);
        assert_ptr_equal(kiln_mf_tensor(mf, i), kiln_mf_find(mf, ts[i].name)); /* file order */
    }
    assert_null(kiln_mf_find(mf, "nope"));
    assert_null(kiln_mf_tensor(mf, n));
    assert_string_equal(kiln_mf_meta_str(mf, "format"), "pt");
    assert_string_equal(kiln_mf_meta_str(mf, "note"), "line\nbreak \"q\"");
    assert_int_equal(kiln_mf_meta_kind(mf, "note"), KILN_MV_STR);
    assert_int_equal(kiln_mf_meta_kind(mf, "absent"), KILN_MV_NONE);

    static const struct { const char *name; float v[6]; int n; } want[] = {
        {"a.f32", {1, -2, 3.5f, 0, -0.25f, 1e6f}, 6}, {"b.f16", {1, -2, 0.5f, 65504}, 4},
        {"c.bf16", {1, 3, -0.5f, 0}, 4},             {"d.f64", {-7.5f}, 1},
        {"e.i8", {-128, 0, 127}, 3},                 {"f.i16", {-300, 300}, 2},
        {"g.i32", {-70000, 70000}, 2},               {"h.i64", {-5, 1099511627776.0f}, 2},
        {"i.u8", {0, 1, 2, 254, 255}, 5},            {"j.bool", {1, 0, 1}, 3},
        {"k.scalar", {42}, 1},                       {"l.empty", {0}, 0},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        float *y = must_load(mf, want[i].name);
        for (int k = 0; k < want[i].n; k++)
            if (y[k] != want[i].v[k])
                fail_msg("%s[%d] = %g, want %g", want[i].name, k, y[k], want[i].v[k]);
        free(y);
    }
    float *y = NULL;
    assert_int_equal(kiln_mf_load_f32(mf, "zz", &y, &d), KILN_EINPUT);
    assert_non_null(strstr(d.msg, "no tensor named 'zz'"));
    kiln_mf_close(mf);

    /* writer refusals */
    KilnModelTensor bad = {"x", KILN_MT_Q4_0, 1, {32}, 32, f32, 18};
    assert_int_equal(kiln_safetensors_write(tmp_path("w.safetensors"), &bad, 1, NULL, 0, &d),
                     KILN_EINPUT);
    assert_non_null(strstr(d.msg, "cannot be written"));
    KilnModelTensor two[2] = {ts[0], ts[0]};
    assert_int_equal(kiln_safetensors_write(tmp_path("w.safetensors"), two, 2, NULL, 0, &d),
                     KILN_EINPUT);
    assert_non_null(strstr(d.msg, "duplicate tensor name"));
    KilnModelTensor sz = ts[0];
    sz.nbytes = 20;
    assert_int_equal(kiln_safetensors_write(tmp_path("w.safetensors"), &sz, 1, NULL, 0, &d),
                     KILN_EINPUT);
    assert_non_null(strstr(d.msg, "does not match its shape"));
    assert_int_equal(access(tmp_path("w.safetensors"), F_OK), -1);
}

/* Hand-written headers: every kind of malformed safetensors file. */
/* kiln_mf_rows_f32 reads a few rows with pread on the descriptor kiln_mf_open keeps, and
 * through the mapping past the first 256 files open at once (or for a big read): both
 * give the same values, in every format and for row ranges at the tensor's ends. */
static void test_rows_pread_and_mapped(void **state)
{
    (void)state;
    enum { R = 70, C = 5, OPEN = 300 };
    static float f32[R * C];
    static uint16_t f16[R * C], bf16[R * C];
    for (int i = 0; i < R * C; i++) {
        f32[i] = (float)(i * 37 % 101) - 50.25f;
        f16[i] = (uint16_t)(0x3C00 + i % 1024);
        bf16[i] = (uint16_t)(0x3F80 + i % 128);
    }
    KilnModelTensor ts[] = {
        {"f32", KILN_MT_F32, 2, {R, C}, R * C, f32, sizeof f32},
        {"f16", KILN_MT_F16, 2, {R, C}, R * C, f16, sizeof f16},
        {"bf16", KILN_MT_BF16, 2, {R, C}, R * C, bf16, sizeof bf16},
    };
    const char *path = tmp_path("rows.safetensors");
    KilnDiag d = {0};
    assert_int_equal(kiln_safetensors_write(path, ts, 3, NULL, 0, &d), 0);
    KilnModelFile **mf = calloc(OPEN, sizeof *mf);
    assert_non_null(mf);
    for (int k = 0; k < OPEN; k++)
        assert_int_equal(kiln_mf_open(path, &mf[k], &d), 0);
    static float all[R * C], a[R * C], b[R * C];
    for (int t = 0; t < 3; t++) {
        const KilnModelTensor *ta = kiln_mf_find(mf[0], ts[t].name);
        const KilnModelTensor *tb = kiln_mf_find(mf[OPEN - 1], ts[t].name);
        assert_non_null(ta);
        assert_non_null(tb);
        assert_int_equal(kiln_mf_rows_f32(mf[0], ta, 0, R, all, &d), 0);
        if (t == 0)
            assert_memory_equal(all, f32, sizeof f32);
        const int64_t ranges[][2] = {{0, 1}, {R - 1, 1}, {3, 17}, {0, R}, {R, 0}};
        for (size_t r = 0; r < sizeof ranges / sizeof ranges[0]; r++) {
            int64_t r0 = ranges[r][0], nr = ranges[r][1];
            assert_int_equal(kiln_mf_rows_f32(mf[0], ta, r0, nr, a, &d), 0);
            assert_int_equal(kiln_mf_rows_f32(mf[OPEN - 1], tb, r0, nr, b, &d), 0);
            if (nr > 0) {
                assert_memory_equal(a, all + r0 * C, sizeof(float) * (size_t)(nr * C));
                assert_memory_equal(b, all + r0 * C, sizeof(float) * (size_t)(nr * C));
            }
        }
    }
    for (int k = 0; k < OPEN; k++)
        kiln_mf_close(mf[k]);
    free(mf);
}

static void test_st_malformed(void **state)
{
    (void)state;
    uint8_t data[64] = {0};
    static const struct { const char *hdr; size_t ndata; const char *err; } cases[] = {
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]", 8, "safetensors header"},
        {"{\"a\":{\"dtype\":\"F33\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "unknown dtype \"F33\""},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8, "span 8 bytes"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,16]}}", 8, "past the end"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,0]}}", 8, "end before begin"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
         "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12, "overlap"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
         "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8, "duplicate key"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
         "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}", 12, "hole"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4, "non-negative"},
        {"{\"__metadata__\":{\"k\":1},\"a\":{\"dtype\":\"U8\",\"shape\":[1],"
         "\"data_offsets\":[0,1]}}", 1, "only strings"},
        {"{\"a\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1],\"data_offsets\":[0,1]}}", 1, "rank 5"},
        {"{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", 4, "cover 1"},
        {"{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1],\"x\":0}}", 1,
         "unknown field"},
        {"{\"a\":{\"dtype\":\"U8\",\"shape\":[1]}}", 1, "missing \"data_offsets\""},
        {"{\"a\":[1]}", 0, "not an object"},
        {"{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1.5]}}", 1,
         "data_offsets[1]"},
        {"{\"a\":{\"dtype\":\"U8\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,1]}}",
         1, "overflows"},
        {"{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}} x", 1, "after the JSON"},
        {"[1,2]", 0, "does not start with '{'"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char name[64];
        snprintf(name, sizeof name, "bad%zu.safetensors", i);
        expect_open_error(st_raw(name, cases[i].hdr, data, cases[i].ndata), cases[i].err);
    }
    /* header length problems */
    const char *p = tmp_path("short.safetensors");
    write_bytes(p, "\x05\0\0\0", 4);
    expect_open_error(p, "truncated");
    uint8_t big[16] = {0xFF, 0, 0, 0, 0, 0, 0, 0, '{', '}'};
    write_bytes(p, big, 10);
    expect_open_error(p, "runs past the end");
    uint8_t huge[16] = {0, 0, 0, 0, 0, 0, 0, 0x80, '{', '}'};
    write_bytes(p, huge, 10);
    expect_open_error(p, "larger than the limit");
    uint8_t tiny[16] = {1, 0, 0, 0, 0, 0, 0, 0, '{', '}'};
    write_bytes(p, tiny, 10);
    expect_open_error(p, "too small");
    write_bytes(tmp_path("empty.bin"), "", 0);
    expect_open_error(tmp_path("empty.bin"), "empty file");
    write_bytes(tmp_path("junk.bin"), "0123456789abcdef", 16);
    expect_open_error(tmp_path("junk.bin"), "unknown model file format");
    expect_open_error(tmp_path("does-not-exist.gguf"), "cannot open");
}

/* ------------------------------------------------------------------ GGUF */

/* A valid GGUF v3 with metadata of every type and one tensor of each supported type
 * (plus a Q6_K tensor that is listed but cannot be loaded). */
static GB valid_gguf(uint32_t align)
{
    GB g = {0};
    gb_header(&g, 3, 8, 19);
    gb_key(&g, "u8", GB_U8), gb_u8(&g, 200);
    gb_key(&g, "i8", GB_I8), gb_u8(&g, 0x80);
    gb_key(&g, "u16", GB_U16), gb_u16(&g, 65535);
    gb_key(&g, "i16", GB_I16), gb_u16(&g, 0x8000);
    gb_kv_u32(&g, "u32", 4000000000u);
    gb_key(&g, "i32", GB_I32), gb_u32(&g, (uint32_t)-5);
    gb_key(&g, "f32", GB_F32), gb_f32(&g, 0.5f);
    gb_key(&g, "bool", GB_BOOL), gb_u8(&g, 1);
    gb_kv_str(&g, "str", "hello");
    gb_key(&g, "u64", GB_U64), gb_u64(&g, 1ull << 40);
    gb_key(&g, "u64big", GB_U64), gb_u64(&g, ~0ull);
    gb_key(&g, "i64", GB_I64), gb_u64(&g, (uint64_t)-9);
    gb_key(&g, "f64", GB_F64), gb_f64(&g, -2.25);
    const char *strs[] = {"x", "", "yz"};
    gb_kv_arr_str(&g, "arr.str", strs, 3);
    gb_kv_arr_i32(&g, "arr.i32", (int32_t[]){-1, 2, 3}, 3);
    gb_key(&g, "arr.f32", GB_ARR), gb_u32(&g, GB_F32), gb_u64(&g, 2), gb_f32(&g, 1.5f),
        gb_f32(&g, -3);
    /* array of 2 arrays of strings */
    gb_key(&g, "arr.nested", GB_ARR), gb_u32(&g, GB_ARR), gb_u64(&g, 2);
    gb_u32(&g, GB_STR), gb_u64(&g, 1), gb_str(&g, "p");
    gb_u32(&g, GB_STR), gb_u64(&g, 2), gb_str(&g, "q"), gb_str(&g, "r");
    gb_key(&g, "arr.bool", GB_ARR), gb_u32(&g, GB_BOOL), gb_u64(&g, 2), gb_u8(&g, 0),
        gb_u8(&g, 1);
    gb_kv_u32(&g, "general.alignment", align);
    /* tensors: offsets are multiples of align, data laid out below */
    uint64_t off = 0;
#define NEXT(bytes) (off = (off + align - 1) / align * align, off += (bytes), off - (bytes))
    gb_tensor(&g, "f32", 2, (uint64_t[]){3, 2}, 0, NEXT(24));
    gb_tensor(&g, "f16", 1, (uint64_t[]){2}, 1, NEXT(4));
    gb_tensor(&g, "bf16", 1, (uint64_t[]){2}, 30, NEXT(4));
    gb_tensor(&g, "q8_0", 2, (uint64_t[]){32, 2}, 8, NEXT(68));
    gb_tensor(&g, "q4_0", 1, (uint64_t[]){32}, 2, NEXT(18));
    gb_tensor(&g, "q4_1", 3, (uint64_t[]){32, 1, 1}, 3, NEXT(20));
    gb_tensor(&g, "q6_k", 1, (uint64_t[]){256}, 14, NEXT(210));
    gb_tensor(&g, "empty", 2, (uint64_t[]){0, 3}, 0, 0); /* 0 bytes overlap nothing */
#undef NEXT
    gb_align(&g, align);
    size_t base = g.n;
#define AT() gb_align(&g, align)
    (void)base;
    AT();
    for (int i = 0; i < 6; i++)
        gb_f32(&g, (float)i - 2.5f);
    AT();
    gb_u16(&g, 0x3C00), gb_u16(&g, 0xB800); /* 1, -0.5 */
    AT();
    gb_u16(&g, 0x4040), gb_u16(&g, 0xC2F6); /* 3, -123 */
    AT();
    gb_u16(&g, 0x3800); /* d = 0.5, q = j - 16 */
    for (int j = 0; j < 32; j++)
        gb_u8(&g, (uint8_t)(int8_t)(j - 16));
    gb_u16(&g, 0x4000); /* d = 2, q = -j */
    for (int j = 0; j < 32; j++)
        gb_u8(&g, (uint8_t)(int8_t)-j);
    AT();
    gb_u16(&g, 0x3400); /* d = 0.25; low nibble j, high nibble 15 - j */
    for (int j = 0; j < 16; j++)
        gb_u8(&g, (uint8_t)(j | (15 - j) << 4));
    AT();
    gb_u16(&g, 0x3800), gb_u16(&g, 0xBC00); /* d = 0.5, m = -1 */
    for (int j = 0; j < 16; j++)
        gb_u8(&g, (uint8_t)(j | (15 - j) << 4));
    AT();
    for (int j = 0; j < 210; j++)
        gb_u8(&g, (uint8_t)j);
#undef AT
    return g;
}

static void test_gguf_read(void **state)
{
    (void)state;
    for (uint32_t align = 32; align <= 64; align *= 2) {
        GB g = valid_gguf(align);
        const char *p = tmp_path("ok.gguf");
        assert_int_equal(gb_write(&g, p), 0);
        free(g.b);
        KilnModelFile *mf = NULL;
        KilnDiag d = {0};
        if (kiln_mf_open(p, &mf, &d))
            fail_msg("%s", d.msg);
        assert_string_equal(kiln_mf_format(mf), "gguf");
        int64_t i;
        double f;
        assert_true(kiln_mf_meta_int(mf, "u8", &i) && i == 200);
        assert_true(kiln_mf_meta_int(mf, "i8", &i) && i == -128);
        assert_true(kiln_mf_meta_int(mf, "u16", &i) && i == 65535);
        assert_true(kiln_mf_meta_int(mf, "i16", &i) && i == -32768);
        assert_true(kiln_mf_meta_int(mf, "u32", &i) && i == 4000000000ll);
        assert_true(kiln_mf_meta_int(mf, "i32", &i) && i == -5);
        assert_true(kiln_mf_meta_int(mf, "u64", &i) && i == 1ll << 40);
        assert_true(kiln_mf_meta_int(mf, "i64", &i) && i == -9);
        assert_false(kiln_mf_meta_int(mf, "u64big", &i)); /* does not fit int64 */
        assert_int_equal(kiln_mf_meta_kind(mf, "u64big"), KILN_MV_INT);
        assert_true(kiln_mf_meta_float(mf, "f32", &f) && f == 0.5);
        assert_true(kiln_mf_meta_float(mf, "f64", &f) && f == -2.25);
        assert_true(kiln_mf_meta_float(mf, "u8", &f) && f == 200);
        assert_false(kiln_mf_meta_float(mf, "str", &f));
        assert_int_equal(kiln_mf_meta_kind(mf, "bool"), KILN_MV_BOOL);
        assert_true(kiln_mf_meta_int(mf, "bool", &i) && i == 1);
        assert_string_equal(kiln_mf_meta_str(mf, "str"), "hello");
        assert_null(kiln_mf_meta_str(mf, "u8"));
        assert_int_equal(kiln_mf_meta_array_len(mf, "arr.str"), 3);
        assert_int_equal(kiln_mf_meta_array_kind(mf, "arr.str"), KILN_MV_STR);
        assert_string_equal(kiln_mf_meta_array_str(mf, "arr.str", 1), "");
        assert_string_equal(kiln_mf_meta_array_str(mf, "arr.str", 2), "yz");
        assert_null(kiln_mf_meta_array_str(mf, "arr.str", 3));
        assert_true(kiln_mf_meta_array_int(mf, "arr.i32", 0, &i) && i == -1);
        assert_false(kiln_mf_meta_array_int(mf, "arr.i32", -1, &i));
        assert_true(kiln_mf_meta_array_float(mf, "arr.f32", 1, &f) && f == -3);
        assert_true(kiln_mf_meta_array_float(mf, "arr.i32", 2, &f) && f == 3);
        assert_int_equal(kiln_mf_meta_array_len(mf, "arr.nested"), 2);
        assert_int_equal(kiln_mf_meta_array_kind(mf, "arr.nested"), KILN_MV_ARRAY);
        assert_null(kiln_mf_meta_array_str(mf, "arr.nested", 0));
        assert_true(kiln_mf_meta_array_int(mf, "arr.bool", 1, &i) && i == 1);
        assert_int_equal(kiln_mf_meta_array_len(mf, "str"), -1);

        assert_int_equal(kiln_mf_ntensors(mf), 8);
        const KilnModelTensor *t = must_find(mf, "f32");
        assert_int_equal(t->rank, 2);
        assert_int_equal(t->dim[0], 2); /* ne {3, 2} reported outermost first */
        assert_int_equal(t->dim[1], 3);
        t = must_find(mf, "q4_1");
        assert_int_equal(t->type, KILN_MT_Q4_1);
        assert_int_equal(t->rank, 3);
        assert_int_equal(t->dim[2], 32);
        assert_int_equal(t->nbytes, 20);
        assert_int_equal(must_find(mf, "q6_k")->type, KILN_MT_OTHER);
        assert_int_equal(must_find(mf, "empty")->numel, 0);

        float *y = must_load(mf, "f32");
        assert_true(y[0] == -2.5f && y[5] == 2.5f);
        free(y);
        y = must_load(mf, "f16");
        assert_true(y[0] == 1.0f && y[1] == -0.5f);
        free(y);
        y = must_load(mf, "bf16");
        assert_true(y[0] == 3.0f && y[1] == -123.0f);
        free(y);
        y = must_load(mf, "q8_0");
        assert_true(y[0] == -8.0f && y[16] == 0.0f && y[31] == 7.5f);
        assert_true(y[32] == 0.0f && y[33] == -2.0f && y[63] == -62.0f);
        for (int j = 0; j < 32; j++)
            assert_true(y[j] == (float)(j - 16) * 0.5f && y[32 + j] == (float)-j * 2.0f);
        free(y);
        /* Q4_0: element j < 16 is the low nibble of byte j, element 16 + j its high one */
        y = must_load(mf, "q4_0");
        assert_true(y[0] == -2.0f && y[15] == 1.75f && y[16] == 1.75f && y[31] == -2.0f);
        for (int j = 0; j < 16; j++)
            assert_true(y[j] == (float)(j - 8) * 0.25f && y[16 + j] == (float)(7 - j) * 0.25f);
        free(y);
        y = must_load(mf, "q4_1");
        assert_true(y[0] == -1.0f && y[15] == 6.5f && y[16] == 6.5f && y[31] == -1.0f);
        for (int j = 0; j < 16; j++)
            assert_true(y[j] == (float)j * 0.5f - 1 && y[16 + j] == (float)(15 - j) * 0.5f - 1);
        free(y);
        y = NULL;
        assert_int_equal(kiln_mf_load_f32(mf, "q6_k", &y, &d), KILN_EINPUT);
        assert_non_null(strstr(d.msg, "type Q6_K"));
        assert_null(y);
        y = must_load(mf, "empty");
        free(y);
        kiln_mf_close(mf);
    }
    /* version 2 has the same layout for little-endian files */
    GB g = valid_gguf(32);
    g.b[4] = 2;
    assert_int_equal(gb_write(&g, tmp_path("v2.gguf")), 0);
    free(g.b);
    KilnModelFile *mf = NULL;
    KilnDiag d = {0};
    assert_int_equal(kiln_mf_open(tmp_path("v2.gguf"), &mf, &d), 0);
    kiln_mf_close(mf);
}

/* Builds a small GGUF with one tensor whose info fields are given. */
static const char *gguf_one(const char *name, uint32_t ndims, const uint64_t *ne, uint32_t type,
                            uint64_t off, size_t ndata)
{
    GB g = {0};
    gb_header(&g, 3, 1, 0);
    gb_tensor(&g, "t", ndims, ne, type, off);
    gb_align(&g, 32);
    for (size_t i = 0; i < ndata; i++)
        gb_u8(&g, 0);
    const char *p = tmp_path(name);
    assert_int_equal(gb_write(&g, p), 0);
    free(g.b);
    return p;
}

static void test_gguf_malformed(void **state)
{
    (void)state;
    const char *p = tmp_path("m.gguf");
    GB g = {0};
#define WRITE_EXPECT(err)                                                                      \
    do {                                                                                       \
        assert_int_equal(gb_write(&g, p), 0);                                                  \
        free(g.b);                                                                             \
        g = (GB){0};                                                                           \
        expect_open_error(p, err);                                                             \
    } while (0)
    gb_bytes(&g, "GGUX", 4), gb_u32(&g, 3), gb_u64(&g, 0), gb_u64(&g, 0);
    WRITE_EXPECT("bad magic");
    gb_header(&g, 4, 0, 0);
    WRITE_EXPECT("GGUF version 4 is not supported");
    gb_header(&g, 1, 0, 0);
    WRITE_EXPECT("GGUF version 1");
    gb_bytes(&g, "GGUF", 4), gb_u32(&g, 3), gb_u32(&g, 0);
    WRITE_EXPECT("truncated GGUF file: tensor count");
    gb_header(&g, 3, 1ull << 40, 0);
    WRITE_EXPECT("tensor count");
    gb_header(&g, 3, 0, 1ull << 62);
    WRITE_EXPECT("metadata count");
    gb_header(&g, 3, 0, 1), gb_u64(&g, 1ull << 40), gb_bytes(&g, "abcdefghijklmnop", 16);
    WRITE_EXPECT("has length 1099511627776");
    gb_header(&g, 3, 0, 1), gb_key(&g, "s", GB_STR), gb_u64(&g, 1000), gb_bytes(&g, "ab", 2);
    WRITE_EXPECT("s at byte 37 has length 1000");
    gb_header(&g, 3, 0, 1), gb_str(&g, "abcde");
    WRITE_EXPECT("truncated GGUF file: abcde");
    gb_header(&g, 3, 0, 1), gb_key(&g, "a", GB_ARR), gb_u32(&g, GB_U32), gb_u64(&g, 1ull << 60);
    WRITE_EXPECT("cannot fit");
    gb_header(&g, 3, 0, 1), gb_key(&g, "v", 13), gb_u32(&g, 0);
    WRITE_EXPECT("unknown value type 13");
    gb_header(&g, 3, 0, 1), gb_key(&g, "a", GB_ARR), gb_u32(&g, 77), gb_u64(&g, 0);
    WRITE_EXPECT("unknown array element type 77");
    gb_header(&g, 3, 0, 1), gb_key(&g, "b", GB_BOOL), gb_u8(&g, 2);
    WRITE_EXPECT("bool byte is 2");
    gb_header(&g, 3, 0, 1), gb_key(&g, "n", GB_ARR);
    for (int i = 0; i < 6; i++)
        gb_u32(&g, GB_ARR), gb_u64(&g, 1);
    gb_u32(&g, GB_U8), gb_u64(&g, 0);
    WRITE_EXPECT("nested deeper");
    gb_header(&g, 3, 0, 2), gb_kv_u32(&g, "k", 1), gb_kv_u32(&g, "k", 2);
    WRITE_EXPECT("duplicate metadata key 'k'");
    gb_header(&g, 3, 0, 1), gb_kv_u32(&g, "general.alignment", 3);
    WRITE_EXPECT("power of two");
    gb_header(&g, 3, 0, 1), gb_u64(&g, 2), gb_bytes(&g, "a\0", 2), gb_u32(&g, GB_U8),
        gb_u8(&g, 0);
    WRITE_EXPECT("NUL byte");
    gb_header(&g, 3, 2, 0);
    gb_tensor(&g, "t", 1, (uint64_t[]){4}, 0, 0);
    gb_tensor(&g, "t", 1, (uint64_t[]){4}, 0, 32);
    gb_align(&g, 32);
    gb_bytes(&g, (uint8_t[64]){0}, 64);
    WRITE_EXPECT("duplicate tensor name 't'");
    gb_header(&g, 3, 2, 0);
    gb_tensor(&g, "a", 1, (uint64_t[]){16}, 0, 0);
    gb_tensor(&g, "b", 1, (uint64_t[]){4}, 0, 32);
    gb_align(&g, 32);
    gb_bytes(&g, (uint8_t[64]){0}, 64);
    WRITE_EXPECT("overlap");
#undef WRITE_EXPECT
    uint64_t ne5[5] = {1, 1, 1, 1, 1}, ne1[1] = {4}, ne33[1] = {33}, ne32[1] = {32};
    expect_open_error(gguf_one("d5.gguf", 5, ne5, 0, 0, 32), "n_dims 5 is more than 4");
    expect_open_error(gguf_one("eof.gguf", 1, ne1, 0, 0, 8), "runs past the end");
    expect_open_error(gguf_one("eof2.gguf", 1, ne1, 0, 1ull << 62, 32), "runs past the end");
    expect_open_error(gguf_one("al.gguf", 1, ne1, 0, 8, 64), "not a multiple of the alignment");
    expect_open_error(gguf_one("ty.gguf", 1, ne1, 99, 0, 32), "unknown ggml type 99");
    expect_open_error(gguf_one("ty4.gguf", 1, ne1, 4, 0, 32), "unknown ggml type 4");
    expect_open_error(gguf_one("blk.gguf", 1, ne33, 2, 0, 64), "block size 32");
    uint64_t big[2] = {1ull << 62, 1ull << 62};
    expect_open_error(gguf_one("ovf.gguf", 2, big, 0, 0, 32), "overflows");
    /* Q4_1 with 32 elements needs 20 bytes; give it 16 */
    expect_open_error(gguf_one("q41.gguf", 1, ne32, 3, 0, 16), "runs past the end");
}

/* ------------------------------------------------------------------ fuzz */

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint64_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

/* Opens a (possibly broken) file and touches everything the API exposes. */
static void exercise(const char *path)
{
    KilnModelFile *mf = NULL;
    KilnDiag d = {0};
    int rc = kiln_mf_open(path, &mf, &d);
    if (rc) {
        assert_int_equal(rc, KILN_EINPUT);
        assert_true(d.msg[0] != 0);
        return;
    }
    for (int i = 0; i < kiln_mf_ntensors(mf); i++) {
        float *y = NULL;
        KilnDiag d2 = {0};
        if (kiln_mf_load_f32(mf, kiln_mf_tensor(mf, i)->name, &y, &d2) == 0)
            free(y);
    }
    const char *keys[] = {"arr.str", "arr.nested", "arr.f32", "str", "u64", "format"};
    for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++) {
        int64_t iv;
        double fv;
        (void)kiln_mf_meta_str(mf, keys[k]);
        (void)kiln_mf_meta_int(mf, keys[k], &iv);
        (void)kiln_mf_meta_float(mf, keys[k], &fv);
        for (int64_t j = 0; j < kiln_mf_meta_array_len(mf, keys[k]) && j < 8; j++) {
            (void)kiln_mf_meta_array_str(mf, keys[k], j);
            (void)kiln_mf_meta_array_int(mf, keys[k], j, &iv);
            (void)kiln_mf_meta_array_float(mf, keys[k], j, &fv);
        }
    }
    kiln_mf_close(mf);
}

static void mutate(uint8_t *b, size_t *n, size_t hdr_hint)
{
    static const uint8_t interesting[] = {0, 1, 0x7F, 0x80, 0xFF, '{', '}', '"', ',', '[', ']',
                                          '-', '9', '0', ':'};
    int ops = 1 + (int)(rnd() % 4);
    for (int o = 0; o < ops && *n > 0; o++) {
        /* mostly in the header, where the parsing is */
        size_t lim = rnd() % 4 ? (hdr_hint < *n ? hdr_hint : *n) : *n;
        size_t at = (size_t)(rnd() % lim);
        switch (rnd() % 6) {
        case 0: b[at] ^= (uint8_t)(1u << (rnd() % 8)); break;
        case 1: b[at] = interesting[rnd() % sizeof interesting]; break;
        case 2: *n = at; break; /* truncate */
        case 3: /* a large 64-bit value (lengths, counts, offsets) */
            if (at + 8 <= *n) {
                uint64_t v = rnd() % 2 ? ~0ull >> (rnd() % 64) : rnd() % 100000;
                memcpy(b + at, &v, 8);
            }
            break;
        case 4: b[at] = (uint8_t)rnd(); break;
        default: /* copy a chunk from elsewhere */
            if (*n > 16) {
                size_t from = (size_t)(rnd() % (*n - 8));
                memmove(b + at, b + from, at + 8 <= *n && from + 8 <= *n ? 8 : 0);
            }
            break;
        }
    }
}

static void test_fuzz_mutations(void **state)
{
    (void)state;
    GB gg = valid_gguf(32);
    float data[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    uint16_t h[4] = {0x3C00, 0, 0x4000, 0x8000};
    KilnModelTensor ts[] = {{"w", KILN_MT_F32, 2, {2, 2}, 4, data, 16},
                            {"b", KILN_MT_F16, 1, {4}, 4, h, 8},
                            {"s", KILN_MT_F32, 0, {0}, 1, data, 4}};
    const char *meta[] = {"format", "pt"};
    KilnDiag d = {0};
    const char *stp = tmp_path("base.safetensors");
    assert_int_equal(kiln_safetensors_write(stp, ts, 3, meta, 1, &d), 0);
    FILE *f = fopen(stp, "rb");
    uint8_t st[1024];
    size_t stn = fread(st, 1, sizeof st, f);
    fclose(f);
    uint8_t *buf = malloc(gg.n + sizeof st);
    const char *names[2] = {tmp_path("fz.gguf"), tmp_path("fz.safetensors")};
    for (int it = 0; it < 5000; it++) {
        int which = it % 2;
        size_t n = which ? stn : gg.n;
        memcpy(buf, which ? st : gg.b, n);
        mutate(buf, &n, which ? 200 : gg.n - 400);
        write_bytes(names[which], buf, n);
        exercise(names[which]);
    }
    free(buf);
    free(gg.b);
}

/* ------------------------------------------------------------------ real models */

static void expect_near(float got, float want, const char *what, int i)
{
    if (fabsf(got - want) > 1e-6f * fmaxf(1.0f, fabsf(want)))
        fail_msg("%s[%d] = %.9g, want %.9g", what, i, got, want);
}

static void test_real_minilm(void **state)
{
    (void)state;
    char p[1024];
    model_path("minilm/model.safetensors", p, sizeof p);
    KilnModelFile *mf = NULL;
    KilnDiag d = {0};
    if (kiln_mf_open(p, &mf, &d))
        fail_msg("%s", d.msg);
    assert_int_equal(kiln_mf_ntensors(mf), 104);
    assert_string_equal(kiln_mf_meta_str(mf, "format"), "pt");
    const KilnModelTensor *t = must_find(mf, "embeddings.word_embeddings.weight");
    assert_int_equal(t->type, KILN_MT_F32);
    assert_int_equal(t->rank, 2);
    assert_int_equal(t->dim[0], 30522);
    assert_int_equal(t->dim[1], 384);
    static const char *const parts[] = {
        "attention.self.query.weight", "attention.self.key.bias", "attention.self.value.weight",
        "attention.output.dense.weight", "attention.output.LayerNorm.weight",
        "intermediate.dense.weight", "output.dense.bias", "output.LayerNorm.bias"};
    for (int l = 0; l < 6; l++)
        for (size_t k = 0; k < sizeof parts / sizeof parts[0]; k++) {
            char name[128];
            snprintf(name, sizeof name, "encoder.layer.%d.%s", l, parts[k]);
            must_find(mf, name);
        }
    assert_null(kiln_mf_find(mf, "encoder.layer.6.output.dense.bias"));
    assert_int_equal(must_find(mf, "encoder.layer.0.intermediate.dense.weight")->dim[0], 1536);
    float *y = must_load(mf, "embeddings.word_embeddings.weight");
    expect_near(y[101 * 384 + 0], -0.0176193975f, "word_embeddings", 101 * 384);
    expect_near(y[101 * 384 + 383], -0.0616773665f, "word_embeddings", 101 * 384 + 383);
    expect_near(y[30521 * 384 + 383], 0.00457006367f, "word_embeddings", 30521 * 384 + 383);
    free(y);
    t = must_find(mf, "embeddings.position_ids");
    assert_int_equal(t->type, KILN_MT_I64);
    y = must_load(mf, "embeddings.position_ids");
    assert_true(y[0] == 0 && y[2] == 2 && y[511] == 511);
    free(y);
    kiln_mf_close(mf);
}

static void test_real_smollm2(void **state)
{
    (void)state;
    char p[1024];
    model_path("smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", p, sizeof p);
    KilnModelFile *mf = NULL;
    KilnDiag d = {0};
    if (kiln_mf_open(p, &mf, &d))
        fail_msg("%s", d.msg);
    assert_string_equal(kiln_mf_format(mf), "gguf");
    assert_int_equal(kiln_mf_ntensors(mf), 272);
    assert_int_equal(kiln_mf_meta_array_len(mf, "tokenizer.ggml.tokens"), 49152);
    assert_int_equal(kiln_mf_meta_array_len(mf, "tokenizer.ggml.merges"), 48900);
    assert_string_equal(kiln_mf_meta_str(mf, "general.architecture"), "llama");
    assert_string_equal(kiln_mf_meta_str(mf, "tokenizer.ggml.pre"), "smollm");
    int64_t v;
    assert_true(kiln_mf_meta_int(mf, "llama.embedding_length", &v) && v == 576);
    assert_true(kiln_mf_meta_int(mf, "llama.block_count", &v) && v == 30);
    assert_true(kiln_mf_meta_int(mf, "llama.attention.head_count_kv", &v) && v == 3);
    double f;
    assert_true(kiln_mf_meta_float(mf, "llama.rope.freq_base", &f) && f == 100000.0);
    const KilnModelTensor *t = must_find(mf, "blk.0.attn_q.weight");
    assert_int_equal(t->type, KILN_MT_Q4_1);
    assert_int_equal(t->rank, 2);
    assert_int_equal(t->dim[0], 576);
    assert_int_equal(t->dim[1], 576);
    t = must_find(mf, "blk.0.attn_k.weight");
    assert_int_equal(t->dim[0], 192); /* N = 3 kv heads x 64, K = 576 */
    assert_int_equal(t->dim[1], 576);
    t = must_find(mf, "token_embd.weight");
    assert_int_equal(t->type, KILN_MT_Q8_0);
    assert_int_equal(t->dim[0], 49152);
    assert_int_equal(t->dim[1], 576);
    /* reference values: gguf-py's gguf.quants.dequantize on the same file */
    static const struct { int i; float v; } q[] = {
        {0, -0.0963134766f}, {1, 0.157348633f}, {15, 0.537841797f}, {16, -0.223144531f},
        {17, 0.284179688f}, {31, -0.0963134766f}, {32, -0.346191406f}, {575, 0.123535156f},
        {576, -0.11730957f}, {331775, -0.255859375f}};
    float *y = must_load(mf, "blk.0.attn_q.weight");
    for (size_t k = 0; k < sizeof q / sizeof q[0]; k++)
        expect_near(y[q[k].i], q[k].v, "blk.0.attn_q.weight", q[k].i);
    free(y);
    static const struct { int i; float v; } e[] = {
        {0, -0.106544495f}, {1, 0.0329780579f}, {15, 0.0202941895f}, {16, -0.00761032104f},
        {31, -0.200405121f}, {576, -0.0238037109f}, {28311551, -0.0417022705f}};
    y = must_load(mf, "token_embd.weight");
    for (size_t k = 0; k < sizeof e / sizeof e[0]; k++)
        expect_near(y[e[k].i], e[k].v, "token_embd.weight", e[k].i);
    free(y);
    y = must_load(mf, "blk.0.attn_norm.weight");
    expect_near(y[17], 0.173828125f, "blk.0.attn_norm.weight", 17);
    free(y);
    kiln_mf_close(mf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_st_roundtrip),
        cmocka_unit_test(test_st_malformed),
        cmocka_unit_test(test_rows_pread_and_mapped),
        cmocka_unit_test(test_gguf_read),
        cmocka_unit_test(test_gguf_malformed),
        cmocka_unit_test(test_fuzz_mutations),
        cmocka_unit_test(test_real_minilm),
        cmocka_unit_test(test_real_smollm2),
    };
    return cmocka_run_group_tests(tests, tmpdir_setup, tmpdir_teardown);
}
