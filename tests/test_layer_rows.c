/* tests/test_layer_rows.c — a layer bound from chunks of its rows (kiln_layer_create_rows,
 * api/plan.h: how a big layer such as SmolLM2's quantized lm_head binds without its whole
 * f32 matrix, docs/hardening.md "Memory") computes exactly what kiln_layer_create on the
 * whole matrix computes, for every weight granularity (per channel, per group, a per-tensor
 * scale from the min / max of all chunks, f32) and where it must read the rows whole
 * (outlier columns, a per-tensor scale by MSE); a reader's error is the layer's error. And
 * a KV cache of one pass (kiln_kv_init_pass) reads back, within a layer's pass, what a
 * whole cache reads, static scales per layer. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/plan.h"
#include "frontend/recipe.h"
#include "model/model.h"

static void fill(float *v, int64_t n, uint64_t seed, float scale)
{
    uint64_t s = seed * 0x9E3779B97F4A7C15u + 1;
    for (int64_t i = 0; i < n; i++) {
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        v[i] = scale * ((float)(s >> 40) / (float)(1u << 24) - 0.5f);
    }
}

/* The reader: rows of w, counting calls and checking they come in order, each within
 * chunk_rows; fail_at > 0 makes that call fail. */
typedef struct Reader {
    const float *w;
    int64_t K, chunk, next, calls, fail_at, passes;
} Reader;

static int read_rows(void *arg, int64_t n0, int64_t n, float *out, KilnDiag *d)
{
    Reader *r = arg;
    r->calls++;
    if (r->fail_at && r->calls == r->fail_at)
        return kiln_diag_set(d, KILN_EINPUT, "test reader: rows %lld..%lld unreadable",
                             (long long)n0, (long long)(n0 + n));
    if (n0 == 0 && r->next != 0) /* a second pass (the per-tensor range, then the packing) */
        r->passes++, r->next = 0;
    assert_true(n >= 1 && n <= r->chunk);
    assert_int_equal(n0, r->next);
    r->next = n0 + n;
    memcpy(out, r->w + n0 * r->K, sizeof(float) * (size_t)(n * r->K));
    return 0;
}

typedef struct Case {
    const char *what, *rule; /* the rule's body for layer "l" */
    bool calib;              /* calibration rows (outlier columns) */
} Case;

static const Case cases[] = {
    {"int8 per channel, int8 per token", "weights = int8 { per = \"channel\" }, "
     "activations = int8 { per = \"token\", dynamic = true }", false},
    {"int4 group 32 asym, f16", "weights = int4 { group = 32, symmetric = false }, "
     "activations = f16", false},
    {"fp8 e4m3 per tensor (min / max over the chunks)", "weights = fp8_e4m3 { per = \"tensor\" }, "
     "activations = fp8_e4m3 { per = \"token\", dynamic = true }", false},
    {"int8 per tensor by MSE (read whole)", "weights = int8 { per = \"tensor\", calib = \"mse\" }, "
     "activations = int8 { per = \"token\", dynamic = true }", false},
    {"outlier columns (read whole)", "weights = int8 { per = \"channel\" }, "
     "activations = int8 { per = \"token\", dynamic = true }, outliers = 3.0", true},
};

static kiln_recipe *recipe_of(const char *rule, KilnRecipe **fr, bool ignored)
{
    char src[600];
    snprintf(src, sizeof src, "return recipe \"t\" {\n%s  rule \"*\" { %s },\n}\n",
             ignored ? "  ignore = { \"l\" },\n" : "", rule);
    KilnDiag d = {0};
    if (kiln_recipe_load_string(src, strlen(src), "t.lua", fr, &d))
        fail_msg("%s: %s", src, d.msg);
    kiln_recipe *r = kiln_recipe_borrow(*fr);
    assert_non_null(r);
    return r;
}

/* The layer from the whole matrix and from chunks of `chunk` rows: the same outputs, bit
 * for bit, and the same packed size. */
static void same_layer(kiln_ctx *ctx, const Case *c, bool ignored, int64_t chunk)
{
    const int64_t N = 1000, K = 96, M = 5, crow = 16; /* N: no multiple of a panel */
    float *w = malloc(sizeof(float) * (size_t)(N * K)), *x = malloc(sizeof(float) * M * K);
    float *xc = malloc(sizeof(float) * crow * K);
    fill(w, N * K, 1, 0.2f);
    fill(x, M * K, 2, 2.0f);
    fill(xc, crow * K, 3, 2.0f);
    for (int64_t k = 0; k < K; k += 17) /* outlier columns for the rule that picks them */
        for (int64_t r = 0; r < crow; r++)
            xc[r * K + k] *= 40.0f;
    KilnRecipe *fr = NULL;
    kiln_recipe *r = recipe_of(c->rule, &fr, ignored);
    kiln_layer_desc desc = {.name = "l", .N = N, .K = K, .weight = w,
                            .calib_x = c->calib ? xc : NULL, .calib_rows = c->calib ? crow : 0};
    kiln_layer *whole = NULL, *rows = NULL;
    if (kiln_layer_create(ctx, r, &desc, &whole))
        fail_msg("%s: %s", c->what, kiln_error(ctx));
    Reader rd = {.w = w, .K = K, .chunk = chunk};
    KilnWeightRows wr = {.read = read_rows, .arg = &rd, .chunk_rows = chunk};
    kiln_layer_desc nodata = desc;
    nodata.weight = NULL;
    if (kiln_layer_create_rows(ctx, r, &nodata, &wr, &rows))
        fail_msg("%s (chunks of %lld): %s", c->what, (long long)chunk, kiln_error(ctx));
    assert_int_equal(rd.next, N); /* every row read, in order */
    assert_true(rd.calls >= (N + chunk - 1) / chunk);
    assert_int_equal(kiln_layer_weight_bytes(whole), kiln_layer_weight_bytes(rows));
    assert_string_equal(kiln_layer_describe(whole), kiln_layer_describe(rows));
    size_t osz = kiln_layer_out_dtype(whole) == KILN_DTYPE_F32 ? 4 : 2;
    void *y0 = malloc(osz * (size_t)(M * N)), *y1 = malloc(osz * (size_t)(M * N));
    assert_int_equal(kiln_layer_run(whole, x, M, y0), KILN_STATUS_OK);
    assert_int_equal(kiln_layer_run(rows, x, M, y1), KILN_STATUS_OK);
    if (memcmp(y0, y1, osz * (size_t)(M * N)))
        fail_msg("%s%s (chunks of %lld): outputs differ from the whole matrix's", c->what,
                 ignored ? ", ignored (f32)" : "", (long long)chunk);
    printf("%-48s%s chunks of %4lld: %lld reads, identical\n", c->what,
           ignored ? " (f32)" : "", (long long)chunk, (long long)rd.calls);
    kiln_layer_destroy(whole);
    kiln_layer_destroy(rows);
    kiln_recipe_close(r);
    kiln_recipe_free(fr);
    free(w), free(x), free(xc), free(y0), free(y1);
}

static kiln_ctx *ctx_new(void)
{
    kiln_options o = {.num_threads = 2};
    kiln_ctx *ctx = NULL;
    if (kiln_ctx_create(&o, &ctx))
        fail_msg("%s", kiln_error(NULL));
    return ctx;
}

static void test_rows_same_bits(void **st)
{
    (void)st;
    kiln_ctx *ctx = ctx_new();
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        for (int64_t chunk = 37; chunk <= 1000; chunk = chunk == 37 ? 301 : 1001)
            same_layer(ctx, &cases[i], false, chunk);
    same_layer(ctx, &cases[0], true, 37); /* an ignored layer: the f32 kernel's pack */
    kiln_ctx_destroy(ctx);
}

/* The per-tensor min / max takes one pass over the chunks before the packing pass. */
static void test_rows_tensor_two_passes(void **st)
{
    (void)st;
    kiln_ctx *ctx = ctx_new();
    const int64_t N = 1000, K = 96;
    float *w = malloc(sizeof(float) * (size_t)(N * K));
    fill(w, N * K, 4, 0.2f);
    w[777 * K + 5] = 9.0f; /* the range's end in a late chunk */
    KilnRecipe *fr = NULL;
    kiln_recipe *r = recipe_of(cases[2].rule, &fr, false);
    Reader rd = {.w = w, .K = K, .chunk = 64};
    KilnWeightRows wr = {.read = read_rows, .arg = &rd, .chunk_rows = 64};
    kiln_layer_desc desc = {.name = "l", .N = N, .K = K};
    kiln_layer *l = NULL;
    assert_int_equal(kiln_layer_create_rows(ctx, r, &desc, &wr, &l), KILN_STATUS_OK);
    assert_int_equal(rd.passes, 1);
    kiln_layer_destroy(l);
    kiln_recipe_close(r);
    kiln_recipe_free(fr);
    free(w);
    kiln_ctx_destroy(ctx);
}

static void test_rows_reader_error(void **st)
{
    (void)st;
    kiln_ctx *ctx = ctx_new();
    const int64_t N = 1000, K = 96;
    float *w = malloc(sizeof(float) * (size_t)(N * K));
    fill(w, N * K, 5, 0.2f);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        KilnRecipe *fr = NULL;
        kiln_recipe *r = recipe_of(cases[i].rule, &fr, false);
        Reader rd = {.w = w, .K = K, .chunk = 100, .fail_at = 3};
        KilnWeightRows wr = {.read = read_rows, .arg = &rd, .chunk_rows = 100};
        float xc[16 * 96];
        fill(xc, 16 * 96, 6, 2.0f);
        kiln_layer_desc desc = {.name = "l", .N = N, .K = K, .calib_x = cases[i].calib ? xc : NULL,
                                .calib_rows = cases[i].calib ? 16 : 0};
        kiln_layer *l = NULL;
        assert_int_not_equal(kiln_layer_create_rows(ctx, r, &desc, &wr, &l), KILN_STATUS_OK);
        assert_null(l);
        if (!strstr(kiln_error(ctx), "test reader: rows ") || !strstr(kiln_error(ctx), "unreadable"))
            fail_msg("%s: %s", cases[i].what, kiln_error(ctx));
        kiln_recipe_close(r);
        kiln_recipe_free(fr);
    }
    free(w);
    kiln_ctx_destroy(ctx);
}

/* Within each layer's pass, a cache of one pass reads what the whole cache reads: every
 * format, dynamic scales per head, static scales that differ per layer. */
static void test_kv_pass(void **st)
{
    (void)st;
    const int L = 4, H = 2, HD = 8, P = 6;
    const KilnKVSpec specs[] = {
        {KILN_KV_F32, false, true, 0},
        {KILN_KV_F16, false, true, 0},
        {KILN_KV_INT8, true, true, 0},
        {KILN_KV_FP8_E4M3, false, false, 0},
    };
    for (size_t si = 0; si < sizeof specs / sizeof specs[0]; si++) {
        KilnKVCache all, one;
        KilnDiag d = {0};
        assert_int_equal(kiln_kv_init(&all, &specs[si], L, H, HD, P, &d), 0);
        assert_int_equal(kiln_kv_init_pass(&one, &specs[si], L, H, HD, P, &d), 0);
        assert_int_equal(kiln_kv_bytes_per_token(&all), kiln_kv_bytes_per_token(&one));
        if (!specs[si].dynamic && specs[si].fmt >= KILN_KV_FP8_E4M3)
            for (int i = 0; i < L * all.nscale; i++) /* static: a scale of each layer's own */
                all.ks[i] = one.ks[i] = all.vs[i] = one.vs[i] = 0.01f * (float)(i + 1);
        for (int l = 0; l < L; l++) {
            float k[H * HD], v[H * HD], a[HD], b[HD];
            for (int p = 0; p < P; p++) {
                fill(k, H * HD, (uint64_t)(100 * l + p), 3.0f);
                fill(v, H * HD, (uint64_t)(100 * l + p + 50), 3.0f);
                kiln_kv_write(&all, l, p, k, v);
                kiln_kv_write(&one, l, p, k, v);
            }
            for (int p = 0; p < P; p++)
                for (int which = 0; which < 2; which++)
                    for (int h = 0; h < H; h++) {
                        kiln_kv_read(&all, which, l, p, h, a);
                        kiln_kv_read(&one, which, l, p, h, b);
                        assert_memory_equal(a, b, sizeof a);
                    }
            const float *fa = kiln_kv_f32(&all, 0, l, 1), *fb = kiln_kv_f32(&one, 0, l, 1);
            assert_true((fa == NULL) == (fb == NULL));
            for (int p = 0; fa && p < P; p++)
                assert_memory_equal(fa + p * H * HD, fb + p * H * HD, sizeof(float) * HD);
        }
        kiln_kv_free(&all);
        kiln_kv_free(&one);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rows_same_bits),
        cmocka_unit_test(test_rows_tensor_two_passes),
        cmocka_unit_test(test_rows_reader_error),
        cmocka_unit_test(test_kv_pass),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
