/* tests/test_checkpoint.c — the compressed-tensors writer (model/checkpoints/ckpt_write.c): every
 * tensor of a synthetic mixed checkpoint checked byte by byte against the format's
 * definition (pack_to_int32's nibble order, the signed offset, zero points packed
 * along the output dimension, ragged groups stored at gcd), config.json's
 * quantization_config, the dequantized reference file, the round trip through
 * kiln_checkpoint_read, the Llama Q/K row permutation (with a RoPE test), and the
 * export of the two real models. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <ftw.h>
#include <unistd.h>

#include "ir/numerics.h"
#include "model/checkpoints/checkpoint.h"
#include "model/model.h"
#include "model/files/modelfile.h"
#include "runtime/runtime.h"
#include "ckpt_synth.h"
#include "test_util.h"

/* ------------------------------------------------------------------ helpers */

static int rm_one(const char *p, const struct stat *s, int flag, struct FTW *f)
{
    (void)s, (void)flag, (void)f;
    return remove(p);
}
static void rm_rf(const char *dir) { nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS); }

static void make_tmpdir(char *buf, size_t n)
{
    snprintf(buf, n, "/tmp/kiln-ckpt-XXXXXX");
    assert_non_null(mkdtemp(buf));
}

static const KilnModelTensor *must(const KilnModelFile *mf, const char *module,
                                   const char *suffix, KilnModelType ty, int rank, int64_t d0,
                                   int64_t d1)
{
    char name[256];
    snprintf(name, sizeof name, "%s.%s", module, suffix);
    const KilnModelTensor *t = kiln_mf_find(mf, name);
    if (!t)
        fail_msg("no tensor %s", name);
    if (t->type != ty || t->rank != rank || t->dim[0] != d0 || (rank > 1 && t->dim[1] != d1))
        fail_msg("%s: %s rank %d [%lld, %lld], expected %s rank %d [%lld, %lld]", name,
                 kiln_mt_name(t->type), t->rank, (long long)t->dim[0],
                 (long long)(t->rank > 1 ? t->dim[1] : 0), kiln_mt_name(ty), rank,
                 (long long)d0, (long long)d1);
    return t;
}

static int32_t rd_i32(const void *p, int64_t i)
{
    int32_t v;
    memcpy(&v, (const char *)p + 4 * i, 4);
    return v;
}

static float rd_f32(const void *p, int64_t i)
{
    float v;
    memcpy(&v, (const char *)p + 4 * i, 4);
    return v;
}

/* Element k of a packed row, read the way compressed-tensors' unpack does for 4 bits
 * (the int32 words viewed as little-endian bytes, low nibble first) and by bit
 * position in the row for 8 bits; minus the 2^(bits-1) offset. */
static int packed_at(const uint8_t *row, int bits, int64_t k)
{
    int v = bits == 4 ? (row[k / 2] >> (4 * (k % 2))) & 0xF : row[k];
    return v - (1 << (bits - 1));
}

/* kiln's code as compressed-tensors' signed integer. */
static int ct_code(const KilnQLinear *q, int code)
{
    int bits = q->spec.fmt == KILN_QF_INT4 ? 4 : 8;
    return q->spec.symmetric ? code : code - (1 << (bits - 1));
}

static const KilnJson *jget(const KilnJson *o, const char *k)
{
    const KilnJson *v = kiln_json_get(o, k);
    if (!v)
        fail_msg("config.json: no \"%s\"", k);
    return v;
}

static void expect_str(const KilnJson *o, const char *k, const char *want)
{
    const KilnJson *v = jget(o, k);
    assert_int_equal(v->kind, KILN_JSON_STRING);
    assert_string_equal(v->str, want);
}

static void expect_int(const KilnJson *o, const char *k, int64_t want)
{
    const KilnJson *v = jget(o, k);
    assert_int_equal(v->kind, KILN_JSON_NUMBER);
    assert_true(v->is_int);
    assert_int_equal(v->i, want);
}

static void expect_bool(const KilnJson *o, const char *k, bool want)
{
    const KilnJson *v = jget(o, k);
    assert_int_equal(v->kind, KILN_JSON_BOOL);
    assert_int_equal(v->b, want);
}

/* The config group whose targets name module m (by name or by a "re:.*\.SUFFIX$"). */
static const KilnJson *group_of(const KilnJson *groups, const char *m)
{
    const KilnJson *found = NULL;
    for (size_t g = 0; g < groups->len; g++) {
        const KilnJson *t = jget(&groups->items[g], "targets");
        for (size_t i = 0; i < t->len; i++) {
            const char *s = t->items[i].str;
            bool hit = strcmp(s, m) == 0;
            if (!strncmp(s, "re:.*\\.", 7)) {
                char suf[200];
                size_t n = 0;
                for (const char *p = s + 7; *p && *p != '$' && n + 1 < sizeof suf; p++)
                    if (*p != '\\')
                        suf[n++] = *p;
                suf[n] = 0;
                size_t lm = strlen(m);
                hit = lm > n && m[lm - n - 1] == '.' && strcmp(m + lm - n, suf) == 0;
            }
            if (hit) {
                if (found && found != &groups->items[g])
                    fail_msg("%s is targeted by two config groups", m);
                found = &groups->items[g];
            }
        }
    }
    if (!found)
        fail_msg("no config group targets %s", m);
    return found;
}

/* ------------------------------------------------------------------ the writer */

static void check_layout(const char *dir, const KilnCheckpoint *c)
{
    char path[512];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    KilnModelFile *mf = NULL;
    KilnDiag d = {0};
    assert_int_equal(kiln_mf_open(path, &mf, &d), 0);
    const KilnQLinear *l = c->lin;

    /* L_G32: weight_packed [16, 64/8], scales [16, 2], shape {16, 64}, bias */
    const KilnQLinear *q = &l[L_G32];
    const KilnModelTensor *t = must(mf, q->name, "weight_packed", KILN_MT_I32, 2, 16, 8);
    assert_int_equal(rd_i32(t->data, 0), 0x76543210);
    for (int64_t n = 0; n < q->N; n++)
        for (int64_t k = 0; k < q->K; k++)
            assert_int_equal(packed_at((const uint8_t *)t->data + n * 32, 4, k),
                             ct_code(q, q->codes[n * q->K + k]));
    t = must(mf, q->name, "weight_scale", KILN_MT_F32, 2, 16, 2);
    assert_memory_equal(t->data, q->scale, sizeof(float) * 32);
    t = must(mf, q->name, "weight_shape", KILN_MT_I64, 1, 2, 0);
    assert_memory_equal(t->data, ((int64_t[]){16, 64}), 16);
    must(mf, q->name, "bias", KILN_MT_F32, 1, 16, 0);
    assert_null(kiln_mf_find(mf, "model.layers.0.mlp.up_proj.weight_zero_point"));
    assert_null(kiln_mf_find(mf, "model.layers.0.mlp.up_proj.weight_g_idx"));

    /* L_RAGGED: group 128 on K = 192 stored as gcd = 64: 3 groups, the first two
     * repeat kiln's first scale; zero points packed along N: [ceil(12/8), 3] */
    q = &l[L_RAGGED];
    t = must(mf, q->name, "weight_packed", KILN_MT_I32, 2, 12, 24);
    for (int64_t n = 0; n < q->N; n++)
        for (int64_t k = 0; k < q->K; k++)
            assert_int_equal(packed_at((const uint8_t *)t->data + n * 96, 4, k),
                             ct_code(q, q->codes[n * q->K + k]));
    t = must(mf, q->name, "weight_scale", KILN_MT_F32, 2, 12, 3);
    const KilnModelTensor *z = must(mf, q->name, "weight_zero_point", KILN_MT_I32, 2, 2, 3);
    for (int64_t n = 0; n < 12; n++)
        for (int64_t j = 0; j < 3; j++) {
            int64_t src = n * 2 + (j < 2 ? 0 : 1);
            assert_true(rd_f32(t->data, n * 3 + j) == q->scale[src]);
            uint32_t w = (uint32_t)rd_i32(z->data, (n / 8) * 3 + j);
            int zp = (int)((w >> (4 * (n % 8))) & 0xF) - 8;
            assert_int_equal(zp, ct_code(q, q->zero[src]));
        }

    /* L_I8CH: int-quantized: weight int8 = the codes, scales [8, 1] */
    q = &l[L_I8CH];
    t = must(mf, q->name, "weight", KILN_MT_I8, 2, 8, 40);
    for (int64_t i = 0; i < 8 * 40; i++)
        assert_int_equal(((const int8_t *)t->data)[i], q->codes[i]);
    t = must(mf, q->name, "weight_scale", KILN_MT_F32, 2, 8, 1);
    assert_memory_equal(t->data, q->scale, sizeof(float) * 8);
    assert_null(kiln_mf_find(mf, "model.layers.0.self_attn.q_proj.input_scale"));

    /* L_FP8: float-quantized: the e4m3 bytes, scales [8, 1], input_scale [1] */
    q = &l[L_FP8];
    t = must(mf, q->name, "weight", KILN_MT_F8_E4M3, 2, 8, 24);
    for (int64_t i = 0; i < 8 * 24; i++)
        assert_int_equal(((const uint8_t *)t->data)[i], q->codes[i]);
    t = must(mf, q->name, "input_scale", KILN_MT_F32, 1, 1, 0);
    assert_true(rd_f32(t->data, 0) == 0.0375f);

    /* L_GIDX: g_idx kept, int32 [48] */
    q = &l[L_GIDX];
    t = must(mf, q->name, "weight_g_idx", KILN_MT_I32, 1, 48, 0);
    for (int k = 0; k < 48; k++)
        assert_int_equal(rd_i32(t->data, k), q->g_idx[k]);
    must(mf, q->name, "weight_packed", KILN_MT_I32, 2, 8, 6);
    must(mf, q->name, "weight_scale", KILN_MT_F32, 2, 8, 3);
    assert_null(kiln_mf_find(mf, "model.layers.1.mlp.up_proj.weight_g_idx"));

    /* L_I8T: 8 bits packed 4 a word ([4, 20/4]), offset 128; tensor scale [1]; an
     * unpacked int8 zero point [1] */
    q = &l[L_I8T];
    t = must(mf, q->name, "weight_packed", KILN_MT_I32, 2, 4, 5);
    for (int64_t n = 0; n < 4; n++)
        for (int64_t k = 0; k < 20; k++)
            assert_int_equal(packed_at((const uint8_t *)t->data + n * 20, 8, k),
                             ct_code(q, q->codes[n * 20 + k]));
    t = must(mf, q->name, "weight_scale", KILN_MT_F32, 1, 1, 0);
    assert_true(rd_f32(t->data, 0) == q->scale[0]);
    t = must(mf, q->name, "weight_zero_point", KILN_MT_I8, 1, 1, 0);
    assert_int_equal(((const int8_t *)t->data)[0], q->zero[0] - 128);

    must(mf, "model.norm", "weight", KILN_MT_F32, 1, 6, 0);
    assert_string_equal(kiln_mf_meta_str(mf, "format"), "pt");
    kiln_mf_close(mf);
}

static void check_config(const char *dir)
{
    char path[512];
    snprintf(path, sizeof path, "%s/config.json", dir);
    KilnJson *j = NULL;
    KilnDiag d = {0};
    assert_int_equal(kiln_json_parse_file(path, &j, &d), 0);
    expect_str(j, "model_type", "llama"); /* the model's own keys kept */
    expect_int(j, "hidden_size", 6);
    const KilnJson *qc = jget(j, "quantization_config");
    assert_null(kiln_json_get(qc, "old"));
    expect_str(qc, "quant_method", "compressed-tensors");
    expect_str(qc, "format", "mixed-precision");
    expect_str(qc, "quantization_status", "compressed");
    const KilnJson *ig = jget(qc, "ignore");
    assert_int_equal(ig->len, 1);
    assert_string_equal(ig->items[0].str, "lm_head");
    const KilnJson *kv = jget(qc, "kv_cache_scheme");
    expect_int(kv, "num_bits", 8);
    expect_str(kv, "type", "float");
    expect_str(kv, "strategy", "tensor");
    expect_bool(kv, "dynamic", false);
    const KilnJson *gs = jget(qc, "config_groups");
    /* g32 (+ the trivial g_idx layer), ragged, int8 channel, fp8, g_idx, int8 tensor */
    assert_int_equal(gs->len, 6);

    const KilnJson *g = group_of(gs, "model.layers.0.mlp.up_proj");
    assert_ptr_equal(g, group_of(gs, "model.layers.1.mlp.up_proj"));
    expect_str(g, "format", "pack-quantized");
    const KilnJson *w = jget(g, "weights");
    expect_int(w, "num_bits", 4);
    expect_str(w, "type", "int");
    expect_bool(w, "symmetric", true);
    expect_str(w, "strategy", "group");
    expect_int(w, "group_size", 32);
    expect_bool(w, "dynamic", false);
    assert_int_equal(jget(w, "actorder")->kind, KILN_JSON_NULL);
    assert_int_equal(jget(g, "input_activations")->kind, KILN_JSON_NULL);
    /* both up_proj layers are in this group, so one regex names them */
    const KilnJson *tg = jget(g, "targets");
    assert_int_equal(tg->len, 1);
    assert_string_equal(tg->items[0].str, "re:.*\\.mlp\\.up_proj$");

    g = group_of(gs, "model.layers.0.mlp.down_proj");
    w = jget(g, "weights");
    expect_bool(w, "symmetric", false);
    expect_int(w, "group_size", 64);

    g = group_of(gs, "model.layers.0.self_attn.q_proj");
    expect_str(g, "format", "int-quantized");
    w = jget(g, "weights");
    expect_int(w, "num_bits", 8);
    expect_str(w, "strategy", "channel");
    assert_int_equal(jget(w, "group_size")->kind, KILN_JSON_NULL);
    const KilnJson *a = jget(g, "input_activations");
    expect_int(a, "num_bits", 8);
    expect_str(a, "type", "int");
    expect_str(a, "strategy", "token");
    expect_bool(a, "dynamic", true);

    g = group_of(gs, "model.layers.0.self_attn.k_proj");
    expect_str(g, "format", "float-quantized");
    expect_str(jget(g, "weights"), "type", "float");
    a = jget(g, "input_activations");
    expect_str(a, "type", "float");
    expect_str(a, "strategy", "tensor");
    expect_bool(a, "dynamic", false);

    g = group_of(gs, "model.layers.0.self_attn.v_proj");
    expect_str(jget(g, "weights"), "actorder", "group");

    g = group_of(gs, "model.layers.0.self_attn.o_proj");
    expect_str(g, "format", "pack-quantized");
    w = jget(g, "weights");
    expect_int(w, "num_bits", 8);
    expect_str(w, "strategy", "tensor");
    expect_bool(w, "symmetric", false);
    kiln_json_free(j);

    snprintf(path, sizeof path, "%s/sub/tokenizer.json", dir);
    char *s = tu_read_file(path, NULL);
    assert_non_null(s);
    assert_string_equal(s, "{\"version\": \"1.0\"}\n");
    free(s);
}

static void test_write_layouts(void **state)
{
    (void)state;
    KilnCheckpoint c;
    assert_int_equal(make_ckpt(&c, true), 0);
    char dir[64];
    make_tmpdir(dir, sizeof dir);
    char out[128];
    snprintf(out, sizeof out, "%s/model", dir); /* created by the writer */
    KilnDiag d = {0};
    assert_int_equal(kiln_checkpoint_add_ignore(&c, "lm_head", &d), 0); /* no duplicate */
    assert_int_equal(c.nignore, 1);
    int rc = kiln_checkpoint_write(out, &c, &d);
    if (rc)
        fail_msg("%s", d.msg);
    check_layout(out, &c);
    check_config(out);
    kiln_checkpoint_free(&c);
    rm_rf(dir);
}

/* kiln's own dequantization against the formula, and the reference file. */
static void test_dequant_file(void **state)
{
    (void)state;
    KilnCheckpoint c;
    assert_int_equal(make_ckpt(&c, true), 0);
    char dir[64], path[128];
    make_tmpdir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/kiln_dequant.safetensors", dir);
    KilnDiag d = {0};
    assert_int_equal(kiln_checkpoint_write_dequant(path, &c, &d), 0);
    KilnModelFile *mf = NULL;
    assert_int_equal(kiln_mf_open(path, &mf, &d), 0);
    assert_int_equal(kiln_mf_ntensors(mf), NL);
    for (int i = 0; i < NL; i++) {
        const KilnQLinear *q = &c.lin[i];
        const KilnModelTensor *t = must(mf, q->name, "weight", KILN_MT_F32, 2, q->N, q->K);
        for (int64_t n = 0; n < q->N; n++)
            for (int64_t k = 0; k < q->K; k++) {
                int64_t g = q->spec.gran == KILN_GRAN_GROUP
                                ? (q->g_idx ? q->g_idx[k] : k / q->spec.group)
                                : 0;
                int64_t s = q->spec.gran == KILN_GRAN_TENSOR ? 0 : n * q->ngroups + g;
                int code = q->codes[n * q->K + k];
                float v = q->spec.fmt == KILN_QF_FP8_E4M3
                              ? kiln_fp8_e4m3_decode((uint8_t)code) * q->scale[s]
                              : (float)(code - (q->zero ? q->zero[s] : 0)) * q->scale[s];
                assert_true(rd_f32(t->data, n * q->K + k) == v);
            }
    }
    kiln_mf_close(mf);
    kiln_checkpoint_free(&c);
    rm_rf(dir);
}

/* Write, read back with kiln's reader: the same weights, codes and scales. */
static void test_round_trip(void **state)
{
    (void)state;
    KilnCheckpoint c, r;
    assert_int_equal(make_ckpt(&c, true), 0);
    char dir[64];
    make_tmpdir(dir, sizeof dir);
    KilnDiag d = {0};
    assert_int_equal(kiln_checkpoint_write(dir, &c, &d), 0);
    int rc = kiln_checkpoint_read(dir, &r, &d);
    if (rc)
        fail_msg("read back: %s", d.msg);
    assert_int_equal(r.nlin, NL);
    for (int i = 0; i < NL; i++) {
        const KilnQLinear *a = &c.lin[i], *b = kiln_checkpoint_find(&r, a->name);
        if (!b)
            fail_msg("%s not read back", a->name);
        assert_int_equal(b->N, a->N);
        assert_int_equal(b->K, a->K);
        assert_int_equal(b->spec.fmt, a->spec.fmt);
        assert_int_equal(b->spec.symmetric, a->spec.symmetric);
        assert_int_equal(b->spec.gran, a->spec.gran);
        assert_memory_equal(b->codes, a->codes, sizeof(int16_t) * (size_t)(a->N * a->K));
        if (i != L_RAGGED) { /* stored at the gcd group: more, repeated scales */
            assert_int_equal(b->nscale, a->nscale);
            assert_memory_equal(b->scale, a->scale, sizeof(float) * (size_t)a->nscale);
            if (a->zero)
                assert_memory_equal(b->zero, a->zero, sizeof(int32_t) * (size_t)a->nscale);
        }
        assert_int_equal(b->g_idx != NULL, i == L_GIDX);
        float *wa = malloc(sizeof(float) * (size_t)(a->N * a->K));
        float *wb = malloc(sizeof(float) * (size_t)(a->N * a->K));
        kiln_qlinear_dequant(a, wa);
        kiln_qlinear_dequant(b, wb);
        assert_memory_equal(wa, wb, sizeof(float) * (size_t)(a->N * a->K));
        free(wa), free(wb);
    }
    assert_non_null(kiln_checkpoint_find(&r, "model.layers.0.mlp.up_proj")->bias);
    assert_non_null(kiln_checkpoint_find_tensor(&r, "model.norm.weight"));
    kiln_checkpoint_free(&r);
    kiln_checkpoint_free(&c);
    rm_rf(dir);
}

static void expect_write_error(KilnCheckpoint *c, const char *needle)
{
    char dir[64];
    make_tmpdir(dir, sizeof dir);
    KilnDiag d = {0};
    assert_int_not_equal(kiln_checkpoint_write(dir, c, &d), 0);
    if (!strstr(d.msg, needle))
        fail_msg("error \"%s\" does not say \"%s\"", d.msg, needle);
    rm_rf(dir);
}

static void test_write_errors(void **state)
{
    (void)state;
    KilnCheckpoint c;
    assert_int_equal(make_ckpt(&c, true), 0);
    KilnQLinear *q = &c.lin[L_G32];
    q->codes[5] = 8; /* outside symmetric int4 */
    expect_write_error(&c, "code 8 outside");
    q->codes[5] = 0;
    c.lin[L_RAGGED].zero[3] = 16;
    expect_write_error(&c, "zero point 16 outside");
    c.lin[L_RAGGED].zero[3] = 0;
    c.lin[L_FP8].act_scale = 0;
    expect_write_error(&c, "model.layers.0.self_attn.k_proj: static activation quantization "
                           "without a scale");
    c.lin[L_FP8].act_scale = 1;
    q->nscale = 7;
    expect_write_error(&c, "scales");
    q->nscale = 32;
    q->spec.fmt = KILN_QF_FP8_E5M2;
    expect_write_error(&c, "e5m2");
    q->spec.fmt = KILN_QF_INT4;
    c.kv.fmt = KILN_QF_INT4;
    expect_write_error(&c, "kv_cache_scheme");
    c.kv.fmt = KILN_QF_NONE;
    c.lin[L_GIDX].g_idx[0] = 3;
    expect_write_error(&c, "g_idx[0] = 3");
    c.lin[L_GIDX].g_idx[0] = 0;
    KilnDiag d = {0};
    assert_int_not_equal(kiln_checkpoint_add_file(&c, "../x", "a", 1, &d), 0);
    assert_int_not_equal(kiln_checkpoint_add_file(&c, "sub/tokenizer.json", "a", 1, &d), 0);
    kiln_checkpoint_free(&c);
}

/* ------------------------------------------------------------------ Q/K rows */

static void test_qk_permutation(void **state)
{
    (void)state;
    KilnQLinear q, ref;
    make_layer(&q, "q", 24, 10, KILN_QF_INT4, false, KILN_GRAN_GROUP, 4);
    make_layer(&ref, "ref", 24, 10, KILN_QF_INT4, false, KILN_GRAN_GROUP, 4);
    memcpy(ref.codes, q.codes, sizeof(int16_t) * 240);
    memcpy(ref.scale, q.scale, sizeof(float) * (size_t)q.nscale);
    memcpy(ref.zero, q.zero, sizeof(int32_t) * (size_t)q.nscale);
    q.bias = malloc(sizeof(float) * 24);
    for (int i = 0; i < 24; i++)
        q.bias[i] = (float)i;
    KilnDiag d = {0};
    /* 3 heads of 8: GGUF row h·8 + 2i + s holds HF row h·8 + 4s + i */
    assert_int_equal(kiln_llama_unpermute_qk(&q, 3, &d), 0);
    for (int h = 0; h < 3; h++)
        for (int i = 0; i < 4; i++)
            for (int s = 0; s < 2; s++) {
                int g = h * 8 + 2 * i + s, f = h * 8 + 4 * s + i;
                assert_memory_equal(&q.codes[f * 10], &ref.codes[g * 10], 20);
                assert_true(q.scale[f * 3 + 2] == ref.scale[g * 3 + 2]);
                assert_int_equal(q.zero[f * 3], ref.zero[g * 3]);
                assert_true(q.bias[f] == (float)g);
            }
    assert_int_equal(kiln_llama_permute_qk(&q, 3, &d), 0);
    assert_memory_equal(q.codes, ref.codes, sizeof(int16_t) * 240);
    assert_memory_equal(q.scale, ref.scale, sizeof(float) * (size_t)q.nscale);
    assert_memory_equal(q.zero, ref.zero, sizeof(int32_t) * (size_t)q.nscale);
    for (int i = 0; i < 24; i++)
        assert_true(q.bias[i] == (float)i);
    assert_int_not_equal(kiln_llama_unpermute_qk(&q, 5, &d), 0); /* 24 rows, 5 heads */
    assert_int_not_equal(kiln_llama_permute_qk_rows(q.bias, 24, 4, 8, true, &d), 0); /* hd 3 */
    kiln_qlinear_free(&q);
    kiln_qlinear_free(&ref);
}

/* Hugging Face's rotate-half RoPE on one head: (x[i], x[i + hd/2]) rotate together. */
static void rope_half(float *x, int hd, int pos, float theta)
{
    for (int i = 0; i < hd / 2; i++) {
        double f = pos * pow(theta, -2.0 * i / hd);
        float c = (float)cos(f), s = (float)sin(f);
        float a = x[i], b = x[i + hd / 2];
        x[i] = a * c - b * s;
        x[i + hd / 2] = a * s + b * c;
    }
}

/* Attention scores are the same with kiln's weights and pair RoPE as with the
 * exported weights and rotate-half RoPE (grouped-query: 4 heads, 2 KV heads). */
static void test_qk_rope_scores(void **state)
{
    (void)state;
    enum { NH = 4, NKV = 2, HD = 16, K = 12 };
    float wq[NH * HD * K], wk[NKV * HD * K], x1[K], x2[K];
    for (int i = 0; i < NH * HD * K; i++)
        wq[i] = rndf();
    for (int i = 0; i < NKV * HD * K; i++)
        wk[i] = rndf();
    for (int i = 0; i < K; i++)
        x1[i] = rndf(), x2[i] = rndf();
    float hq[NH * HD * K], hk[NKV * HD * K];
    memcpy(hq, wq, sizeof hq);
    memcpy(hk, wk, sizeof hk);
    KilnDiag d = {0};
    assert_int_equal(kiln_llama_permute_qk_rows(hq, NH * HD, sizeof(float) * K, NH, true, &d), 0);
    assert_int_equal(kiln_llama_permute_qk_rows(hk, NKV * HD, sizeof(float) * K, NKV, true, &d),
                     0);
    int p1 = 5, p2 = 2;
    double worst = 0;
    for (int h = 0; h < NH; h++) {
        int kh = h / (NH / NKV);
        float q[2][HD] = {{0}}, k[2][HD] = {{0}};
        for (int r = 0; r < HD; r++)
            for (int j = 0; j < K; j++) {
                q[0][r] += wq[(h * HD + r) * K + j] * x1[j];
                q[1][r] += hq[(h * HD + r) * K + j] * x1[j];
                k[0][r] += wk[(kh * HD + r) * K + j] * x2[j];
                k[1][r] += hk[(kh * HD + r) * K + j] * x2[j];
            }
        kiln_rope_norm(q[0], HD, p1, 10000.0f);
        kiln_rope_norm(k[0], HD, p2, 10000.0f);
        rope_half(q[1], HD, p1, 10000.0f);
        rope_half(k[1], HD, p2, 10000.0f);
        double s0 = 0, s1 = 0, mag = 0;
        for (int r = 0; r < HD; r++)
            s0 += q[0][r] * k[0][r], s1 += q[1][r] * k[1][r], mag += fabs(q[0][r] * k[0][r]);
        worst = fmax(worst, fabs(s0 - s1) / mag);
        /* and the permutation is not the identity: the unrotated q differs */
        bool moved = false;
        for (int r = 0; r < HD * K && !moved; r++)
            moved = hq[h * HD * K + r] != wq[h * HD * K + r];
        assert_true(moved);
    }
    assert_true(worst < 1e-5);
}

/* ------------------------------------------------------------------ real models */

static void model_path(const char *which, char *buf, size_t n)
{
    KilnDiag d = {0};
    if (kiln_model_path(which, buf, n, &d)) {
        char m[1400];
        fail_msg("%s (the test needs the real models: run scripts/fetch-models.sh)",
                 kiln_diag_format(&d, m, sizeof m));
    }
}

/* Drops the large f32 tensors of an export before writing it: the unit test checks the
 * files around them (the interop check writes whole models). */
static void drop_large(KilnCheckpoint *c)
{
    int n = 0;
    for (int i = 0; i < c->nt; i++) {
        int64_t numel = 1;
        for (int k = 0; k < c->t[i].rank; k++)
            numel *= c->t[i].dim[k];
        if (numel > 4096)
            free(c->t[i].data);
        else
            c->t[n++] = c->t[i];
    }
    c->nt = n;
}

/* One layer quantized by kiln's round-to-nearest into c (int4 sym g64). */
static void quantize_into(KilnCheckpoint *c, const KilnLinear *l)
{
    KilnQLinear *q = &c->lin[c->nlin++];
    memset(q, 0, sizeof *q);
    snprintf(q->name, sizeof q->name, "%s", l->name);
    q->N = l->N, q->K = l->K;
    q->spec = (KilnQuantSpec){.fmt = KILN_QF_INT4, .symmetric = true, .gran = KILN_GRAN_GROUP,
                              .group = 64};
    q->ngroups = (l->K + 63) / 64, q->nscale = l->N * q->ngroups;
    q->codes = malloc(sizeof(int16_t) * (size_t)(l->N * l->K));
    q->scale = malloc(sizeof(float) * (size_t)q->nscale);
    uint8_t *packed = malloc((size_t)(l->N * ((l->K + 1) / 2)));
    KilnDiag d = {0};
    assert_int_equal(kiln_quantize_matrix(&q->spec, l->w, l->N, l->K, packed, q->scale, NULL, &d),
                     0);
    size_t rb = kiln_row_bytes(KILN_I4, l->K);
    for (int64_t n = 0; n < l->N; n++)
        for (int64_t k = 0; k < l->K; k++)
            q->codes[n * l->K + k] = (int16_t)kiln_code_get(KILN_I4, packed + n * rb, k);
    free(packed);
}

static void test_llama_export(void **state)
{
    (void)state;
    char path[1024];
    model_path("smollm2", path, sizeof path);
    KilnLlama *m = NULL;
    KilnDiag d = {0};
    assert_int_equal(kiln_llama_load(path, &m, &d), 0);
    int nl = 0;
    KilnLinear *ls = kiln_llama_linears(m, &nl);
    for (int i = 0; i < 16; i++) /* a GGUF's f32 weights are read when needed */
        assert_int_equal(kiln_linear_wget(&ls[i], &d), 0);
    KilnCheckpoint c = {0};
    c.lin = calloc(2, sizeof *c.lin);
    quantize_into(&c, &ls[0]); /* layer 0 q_proj */
    quantize_into(&c, &ls[1]); /* layer 0 k_proj */
    int16_t *q_gguf = malloc(sizeof(int16_t) * (size_t)(ls[0].N * ls[0].K));
    memcpy(q_gguf, c.lin[0].codes, sizeof(int16_t) * (size_t)(ls[0].N * ls[0].K));
    /* layer 2's k_proj kept in f32 by the caller (as kiln quantize does), in kiln's rows */
    const KilnLinear *k2 = &ls[2 * 7 + 1];
    assert_string_equal(k2->name, "model.layers.2.self_attn.k_proj");
    assert_int_equal(kiln_checkpoint_add_tensor(&c, "model.layers.2.self_attn.k_proj.weight", 2,
                                                (int64_t[]){k2->N, k2->K}, k2->w, &d), 0);
    int rc = kiln_llama_export(m, &c, &d);
    if (rc)
        fail_msg("%s", d.msg);
    /* q_proj's rows now in HF order: HF row 1 (head 0, s 0, i 1) was GGUF row 2 */
    assert_memory_equal(&c.lin[0].codes[1 * ls[0].K], &q_gguf[2 * ls[0].K],
                        sizeof(int16_t) * (size_t)ls[0].K);
    assert_memory_equal(&c.lin[0].codes[32 * ls[0].K], &q_gguf[1 * ls[0].K],
                        sizeof(int16_t) * (size_t)ls[0].K);
    free(q_gguf);
    /* an f32 q_proj of layer 1, unpermuted likewise; every other linear kept too */
    const KilnCkptTensor *t =
        kiln_checkpoint_find_tensor(&c, "model.layers.1.self_attn.q_proj.weight");
    assert_non_null(t);
    const KilnLinear *q1 = &ls[7];
    assert_string_equal(q1->name, "model.layers.1.self_attn.q_proj");
    assert_memory_equal(&t->data[33 * q1->K], &q1->w[3 * q1->K], sizeof(float) * (size_t)q1->K);
    t = kiln_checkpoint_find_tensor(&c, "model.layers.2.self_attn.k_proj.weight");
    assert_non_null(t); /* HF row 32 + 5 (s 1, i 5) of head 0 was kiln's row 11 */
    assert_memory_equal(&t->data[37 * k2->K], &k2->w[11 * k2->K], sizeof(float) * (size_t)k2->K);
    assert_non_null(kiln_checkpoint_find_tensor(&c, "model.layers.29.mlp.down_proj.weight"));
    assert_non_null(kiln_checkpoint_find_tensor(&c, "model.embed_tokens.weight"));
    assert_non_null(kiln_checkpoint_find_tensor(&c, "model.norm.weight"));
    assert_non_null(
        kiln_checkpoint_find_tensor(&c, "model.layers.7.post_attention_layernorm.weight"));
    assert_null(kiln_checkpoint_find_tensor(&c, "lm_head.weight")); /* tied */
    assert_int_equal(c.nt, 1 + 1 + 30 * 2 + 30 * 7 - 2);
    assert_int_equal(c.nignore, 30 * 7 - 2 + 1);

    drop_large(&c);
    char dir[64];
    make_tmpdir(dir, sizeof dir);
    rc = kiln_checkpoint_write(dir, &c, &d);
    if (rc)
        fail_msg("%s", d.msg);
    char p[256];
    snprintf(p, sizeof p, "%s/config.json", dir);
    KilnJson *j = NULL;
    assert_int_equal(kiln_json_parse_file(p, &j, &d), 0);
    expect_str(j, "model_type", "llama");
    expect_int(j, "hidden_size", 576);
    expect_int(j, "num_key_value_heads", 3);
    expect_int(j, "vocab_size", 49152);
    expect_bool(j, "tie_word_embeddings", true);
    const KilnJson *qc = jget(j, "quantization_config");
    expect_str(qc, "format", "pack-quantized");
    const KilnJson *tg = jget(&jget(qc, "config_groups")->items[0], "targets");
    /* the other q/k_proj are ignored, so a suffix regex still names only layer 0's */
    assert_int_equal(tg->len, 2);
    assert_string_equal(tg->items[0].str, "re:.*\\.self_attn\\.q_proj$");
    kiln_json_free(j);
    snprintf(p, sizeof p, "%s/tokenizer.json", dir);
    assert_int_equal(kiln_json_parse_file(p, &j, &d), 0);
    const KilnJson *model = jget(j, "model");
    expect_str(model, "type", "BPE");
    assert_int_equal(jget(model, "vocab")->len, 49152);
    assert_true(jget(model, "merges")->len > 40000);
    expect_int(jget(model, "vocab"), "<|im_start|>", 1);
    const KilnJson *pre = jget(j, "pre_tokenizer");
    expect_str(pre, "type", "Sequence");
    assert_true(jget(j, "added_tokens")->len >= 3);
    kiln_json_free(j);
    snprintf(p, sizeof p, "%s/tokenizer_config.json", dir);
    assert_int_equal(kiln_json_parse_file(p, &j, &d), 0);
    expect_str(j, "eos_token", "<|im_end|>");
    kiln_json_free(j);
    rm_rf(dir);
    kiln_checkpoint_free(&c);
    kiln_llama_free(m);
}

static void test_bert_export(void **state)
{
    (void)state;
    char path[1024];
    model_path("minilm", path, sizeof path);
    KilnBert *m = NULL;
    KilnDiag d = {0};
    assert_int_equal(kiln_bert_load(path, &m, &d), 0);
    int nl = 0;
    KilnLinear *ls = kiln_bert_linears(m, &nl);
    KilnCheckpoint c = {0};
    c.lin = calloc(1, sizeof *c.lin);
    quantize_into(&c, &ls[4]); /* layer 0 intermediate.dense: its bias goes to c->t */
    int rc = kiln_bert_export(m, path, &c, &d);
    if (rc)
        fail_msg("%s", d.msg);
    assert_non_null(kiln_checkpoint_find_tensor(&c, "encoder.layer.0.intermediate.dense.bias"));
    assert_null(kiln_checkpoint_find_tensor(&c, "encoder.layer.0.intermediate.dense.weight"));
    assert_non_null(kiln_checkpoint_find_tensor(&c, "encoder.layer.0.attention.self.query.weight"));
    assert_non_null(kiln_checkpoint_find_tensor(&c, "embeddings.word_embeddings.weight"));
    assert_non_null(kiln_checkpoint_find_tensor(&c, "encoder.layer.5.output.LayerNorm.bias"));
    assert_int_equal(c.nignore, nl - 1);
    drop_large(&c);
    char dir[64];
    make_tmpdir(dir, sizeof dir);
    assert_int_equal(kiln_checkpoint_write(dir, &c, &d), 0);
    char p[256];
    snprintf(p, sizeof p, "%s/1_Pooling/config.json", dir);
    char *s = tu_read_file(p, NULL);
    assert_non_null(s);
    free(s);
    snprintf(p, sizeof p, "%s/config.json", dir);
    KilnJson *j = NULL;
    assert_int_equal(kiln_json_parse_file(p, &j, &d), 0);
    expect_str(j, "model_type", "bert");
    expect_str(jget(j, "quantization_config"), "format", "pack-quantized");
    kiln_json_free(j);
    rm_rf(dir);
    kiln_checkpoint_free(&c);
    kiln_bert_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_write_layouts),  cmocka_unit_test(test_dequant_file),
        cmocka_unit_test(test_round_trip),     cmocka_unit_test(test_write_errors),
        cmocka_unit_test(test_qk_permutation), cmocka_unit_test(test_qk_rope_scores),
        cmocka_unit_test(test_llama_export),   cmocka_unit_test(test_bert_export),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
