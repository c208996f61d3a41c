/* tests/test_aot.c — `kiln aot` end to end: build kernel libraries for several recipes,
 * build the standalone consumer in tests/aot against them and libkiln_rt.so (CMake),
 * run it and compare its outputs with the reference interpreter on the same layers,
 * weights and activations; plus the error paths (missing symbol, bad target, a group
 * that does not divide K, bad shapes file, unwritable output, no C compiler),
 * kiln_aot_layout's manifest checks, the public API over a library (kiln_options.aot_dir)
 * and the PTX/cubin output of sm_XX targets. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "aot/datagen.h"
#include "kiln.h"
#include "frontend/recipe.h"
#include "ir/numerics.h"
#include "passes/passes.h"
#include "runtime/aot_layout.h"

static char base[256];      /* private temp dir: AOT outputs, consumer builds, cache */
static char w4a8_dir[512];  /* kept for the missing-symbol and manifest tests */
static char consumer_w4a8[700];

enum { CONSUMER_M = 5 };

static const char SHAPES[] =
    "# a small block: LAYER_NAME M,N,K\n"
    "model.layers.0.mlp.up_proj 3,40,256\n"
    "model.layers.0.mlp.down_proj 3,24,384   # N not a multiple of the panel width\n"
    "\n"
    "model.layers.1.mlp.up_proj 3,40,256     # same kernel as layer 0: deduplicated\n"
    "model.layers.0.attn.q_proj 3,32,256\n"
    "lm_head 3,64,256                        # ignored by the recipes: an f32 kernel\n";

#define assert_contains(hay, needle)                                                     \
    do {                                                                                 \
        if (!strstr((hay), (needle)))                                                    \
            fail_msg("expected \"%s\" in:\n%s", (needle), (hay));                        \
    } while (0)

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
}

/* Runs a shell command (stderr joined to stdout); returns its exit status. */
static int run(char *out, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int run(char *out, size_t n, const char *fmt, ...)
{
    char cmd[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd - 8, fmt, ap);
    va_end(ap);
    strcat(cmd, " 2>&1");
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t len = 0, r;
    char sink[4096];
    while ((r = fread(len + 1 < n ? out + len : sink, 1,
                      len + 1 < n ? n - 1 - len : sizeof sink, p)) > 0)
        if (len + 1 < n)
            len += r;
    out[len] = 0;
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static char *read_text(const char *path)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = malloc((size_t)n + 1);
    assert_int_equal(fread(s, 1, (size_t)n, f), (size_t)n);
    s[n] = 0;
    fclose(f);
    return s;
}

static int setup(void **state)
{
    snprintf(base, sizeof base, "/tmp/kiln-aot-XXXXXX");
    if (!mkdtemp(base))
        return -1;
    char cache[300], shapes[300];
    snprintf(cache, sizeof cache, "%s/cache", base);
    setenv("KILN_CACHE_DIR", cache, 1); /* the kiln command inherits it */
    snprintf(shapes, sizeof shapes, "%s/shapes.txt", base);
    write_text(shapes, SHAPES);
    return 0;
}

static int teardown(void **state)
{
    char out[256];
    if (!getenv("KILN_TEST_KEEP"))
        run(out, sizeof out, "rm -rf '%s'", base);
    return 0;
}

/* ------------------------------------------------------------------ reference */

static int weight_fn(void *ctx, const char *name, KilnTensor *out, KilnDiag *d)
{
    int64_t n = kiln_type_numel(&out->type), k = out->type.dim[out->type.rank - 1];
    aot_gen_fill(out->data, n, name, out->type.rank == 1 ? 0.1f : aot_gen_weight_sigma(k));
    return 0;
}

static float value_at(KilnDType dt, const void *data, int64_t i)
{
    if (dt == KILN_F32)
        return ((const float *)data)[i];
    uint16_t h = ((const uint16_t *)data)[i];
    return dt == KILN_F16 ? kiln_f16_to_f32(h) : kiln_bf16_to_f32(h);
}

/* The layer as the interpreter runs it: lowered for M = CONSUMER_M, passes, and the
 * static activation scale that kiln aot calibrated (read from the manifest). */
static KilnFunc *reference_layer(KilnModule *m, const char *recipe, const char *target,
                                 const KilnJson *kernel)
{
    KilnDiag d = {0};
    KilnRecipe *r;
    KilnTarget t;
    KilnFunc *f;
    const char *layer = kiln_json_get(kernel, "layer")->str;
    int64_t N = kiln_json_get(kernel, "N")->i, K = kiln_json_get(kernel, "K")->i;
    if (kiln_recipe_load(recipe, &r, &d) || kiln_target_lookup(target, &t, &d) ||
        kiln_lower_layer(r, layer, CONSUMER_M, N, K, t.name, m, &f, &d) ||
        kiln_run_pipeline(m, &t, NULL, &d))
        fail_msg("%s", d.msg);
    kiln_recipe_free(r);
    KilnInst *g = (KilnInst *)kiln_find_qgemm(f);
    assert_non_null(g);
    const KilnJson *act = kiln_json_get(kernel, "act");
    for (int i = 0; i < g->nattrs; i++)
        if (!strcmp(g->attrs[i].key, "act") && !g->attrs[i].q.dynamic) {
            g->attrs[i].q.scale = (float)kiln_json_num(kiln_json_get(act, "scale"));
            g->attrs[i].q.zero = (int32_t)kiln_json_get(act, "zero")->i;
        }
    return f;
}

/* The tolerance of tools/cmd_run.c's check_kernel: float paths may sum in another
 * order (2·K·u·Σ|x||w| + 8u|y|, one 16-bit ulp, ×1.25 for silu/gelu); integer
 * activation paths with f32 out and no epilogue must match bit for bit, since their
 * accumulators are exact and the scales are applied in the interpreter's order. */
static void compare(const KilnFunc *f, const float *x, const void *y, const KilnTensor *ref,
                    const char *what)
{
    const KilnInst *g = kiln_find_qgemm(f);
    const KilnType *wt = &f->values[g->ops[1]].type;
    int64_t N = wt->dim[0], K = wt->dim[1], M = CONSUMER_M;
    KilnDType odt = f->values[g->result].type.dt;
    KilnDiag d = {0};
    KilnTensor wq = {0};
    float *w = malloc(sizeof(float) * (size_t)(N * K)), *deq = malloc(sizeof(float) * (size_t)(N * K));
    char name[600];
    snprintf(name, sizeof name, "%s.weight", f->name);
    aot_gen_fill(w, N * K, name, aot_gen_weight_sigma(K));
    if (wt->q.fmt == KILN_QF_NONE)
        memcpy(deq, w, sizeof(float) * (size_t)(N * K));
    else if (kiln_tensor_alloc(&wq, wt) ||
             kiln_quantize_matrix(&wt->q, w, N, K, wq.data, wq.scales, wq.zeros, &d) ||
             kiln_dequantize_matrix(&wt->q, wq.data, wq.scales, wq.zeros, N, K, deq, &d))
        fail_msg("%s", d.msg);
    const KilnAttr *act = kiln_get(g, "act"), *epi = kiln_get(g, "epilogue");
    bool has_epi = (epi && strcmp(epi->s, "none")) || g->nops == 3;
    bool exact = act && (act->q.fmt == KILN_QF_INT8) && odt == KILN_F32 && !has_epi;
    double ulp16 = odt == KILN_F16 ? 0x1p-10 : odt == KILN_BF16 ? 0x1p-7 : 0, u = 0x1p-24;
    double fudge = has_epi ? 1.25 : 1.0, worst = 0, maxerr = 0;
    int bad = 0;
    for (int64_t m = 0; m < M; m++)
        for (int64_t n = 0; n < N; n++) {
            double B = 0;
            for (int64_t k = 0; k < K; k++)
                B += fabs(x[m * K + k]) * fabs(deq[n * K + k]);
            double r = value_at(odt, ref->data, m * N + n), got = value_at(odt, y, m * N + n);
            double tol = exact ? 0
                               : fudge * (2.0 * (double)K * u * B * 1.02 + 8 * u * fabs(r)) +
                                     ulp16 * fabs(r) + 1e-30;
            double err = fabs(got - r);
            if (!(err <= tol) && bad++ < 5)
                print_message("  %s: y[%lld,%lld] AOT %.9g interpreter %.9g |diff| %.3g > %.3g\n",
                              what, (long long)m, (long long)n, got, r, err, tol);
            if (tol > 0 && err / tol > worst)
                worst = err / tol;
            maxerr = err > maxerr ? err : maxerr;
        }
    if (exact)
        print_message("  %s (bit-exact required): %s, max |diff| %.3g\n", what,
                      bad ? "FAIL" : "ok", maxerr);
    else
        print_message("  %s (float tolerance): %s, worst |diff|/tolerance %.3g\n", what,
                      bad ? "FAIL" : "ok", worst);
    assert_int_equal(bad, 0);
    kiln_tensor_free(&wq);
    free(w);
    free(deq);
}

/* Read the consumer's output file and check every kernel against the interpreter. */
static void check_outputs(const char *recipe, const KilnJson *manifest, const char *bin)
{
    FILE *fb = fopen(bin, "rb");
    assert_non_null(fb);
    const KilnJson *ks = kiln_json_get(manifest, "kernels");
    for (size_t i = 0; i < ks->len; i++) {
        char sym[64];
        int64_t hdr[3];
        assert_int_equal(fread(sym, 1, 64, fb), 64);
        assert_int_equal(fread(hdr, sizeof hdr, 1, fb), 1);
        const KilnJson *k = &ks->items[i];
        assert_string_equal(sym, kiln_json_get(k, "symbol")->str);
        assert_int_equal(hdr[0], CONSUMER_M);
        assert_int_equal(hdr[1], kiln_json_get(k, "N")->i);
        size_t bytes = (size_t)(hdr[0] * hdr[1] * hdr[2]);
        void *y = malloc(bytes);
        assert_int_equal(fread(y, 1, bytes, fb), bytes);

        KilnModule *m = kiln_module_new();
        KilnFunc *f = reference_layer(m, recipe, kiln_json_get(manifest, "target")->str, k);
        const KilnType *xt = &f->values[f->params[0]].type;
        KilnTensor x = {0}, yi = {0};
        KilnDiag d = {0};
        assert_int_equal(kiln_tensor_alloc(&x, xt), 0);
        aot_gen_fill(x.data, kiln_type_numel(xt), "x", 1.0f);
        if (kiln_interp_run(f, &x, 1, weight_fn, NULL, &yi, &d))
            fail_msg("interp: %s", d.msg);
        assert_int_equal(kiln_dtype_bits(yi.type.dt) / 8, hdr[2]);
        char what[200];
        snprintf(what, sizeof what, "%s %s", kiln_json_get(k, "layout")->str, f->name);
        compare(f, x.data, y, &yi, what);
        kiln_tensor_free(&x);
        kiln_tensor_free(&yi);
        kiln_module_free(m);
        free(y);
    }
    char extra;
    assert_int_equal(fread(&extra, 1, 1, fb), 0); /* nothing more */
    fclose(fb);
}

/* ------------------------------------------------------------------ the round trip */

static void check_manifest(const KilnJson *man, int want_kernels)
{
    const KilnJson *ks = kiln_json_get(man, "kernels"), *ls = kiln_json_get(man, "layers");
    assert_non_null(ks);
    assert_int_equal(ks->len, want_kernels);
    assert_int_equal(ls->len, 5);
    /* layers 0 and 2 (both up_proj 40x256) share a kernel; lm_head, which the recipes
     * leave unquantized, gets an f32 kernel */
    assert_string_equal(kiln_json_get(&ls->items[0], "kernel")->str,
                        kiln_json_get(&ls->items[2], "kernel")->str);
    const KilnJson *last = &ks->items[ks->len - 1];
    assert_string_equal(kiln_json_get(&ls->items[4], "kernel")->str,
                        kiln_json_get(last, "symbol")->str);
    assert_string_equal(kiln_json_get(kiln_json_get(last, "weight"), "format")->str, "none");
    assert_int_equal(kiln_json_get(last, "act")->kind, KILN_JSON_NULL);
    const KilnJson *layers0 = kiln_json_get(&ks->items[0], "layers");
    assert_int_equal(layers0->len, 2);
    assert_string_equal(kiln_json_get(man, "library")->str, "libkiln_kernels.so");
}

static void round_trip(const char *recipe_name, int want_kernels)
{
    char out[16384], dir[512], recipe[512], build[600], consumer[700], bin[600];
    snprintf(dir, sizeof dir, "%s/%s", base, recipe_name);
    snprintf(recipe, sizeof recipe, "%s/recipes/%s.lua", KILN_SOURCE_DIR, recipe_name);
    char cache[600];
    snprintf(cache, sizeof cache, "%s/cache-%s", base, recipe_name);
    setenv("KILN_CACHE_DIR", cache, 1); /* a cold cache of its own */
    double t0 = now_ms();
    int rc = run(out, sizeof out, "'%s' aot '%s' --shapes '%s/shapes.txt' -o '%s'", KILN_BIN,
                 recipe, base, dir);
    double cold = now_ms() - t0;
    if (rc)
        fail_msg("kiln aot %s: exit %d:\n%s", recipe_name, rc, out);
    char want[64];
    snprintf(want, sizeof want, "5 layers -> %d kernels (0 from the cache)", want_kernels);
    assert_contains(out, want);
    t0 = now_ms();
    assert_int_equal(run(out, sizeof out, "'%s' aot '%s' --shapes '%s/shapes.txt' -o '%s'",
                         KILN_BIN, recipe, base, dir), 0);
    snprintf(want, sizeof want, "(%d from the cache)", want_kernels);
    assert_contains(out, want);
    print_message("  kiln aot %s: %.0f ms cold, %.0f ms warm (cache)\n", recipe_name, cold,
                  now_ms() - t0);

    char mpath[600];
    snprintf(mpath, sizeof mpath, "%s/manifest.json", dir);
    KilnJson *man;
    KilnDiag d = {0};
    if (kiln_json_parse_file(mpath, &man, &d))
        fail_msg("%s", d.msg);
    check_manifest(man, want_kernels);

    snprintf(build, sizeof build, "%s/build-%s", base, recipe_name);
    rc = run(out, sizeof out,
             "'%s' -G '%s' -S '%s/tests/aot' -B '%s' -DKILN_SOURCE_DIR='%s' -DKILN_AOT_DIR='%s' "
             "-DKILN_RT_LIB='%s' -DKILN_CONSUMER_FLAGS='%s' && '%s' --build '%s'",
             KILN_CMAKE, KILN_CMAKE_GENERATOR, KILN_SOURCE_DIR, build, KILN_SOURCE_DIR, dir, KILN_RT_LIB,
             KILN_CONSUMER_FLAGS, KILN_CMAKE, build);
    if (rc)
        fail_msg("building tests/aot failed (exit %d):\n%s", rc, out);
    snprintf(consumer, sizeof consumer, "%s/consumer", build);
    assert_int_equal(run(out, sizeof out, "ldd '%s'", consumer), 0);
    for (char *p = out; *p; p++)
        *p = (char)(*p >= 'A' && *p <= 'Z' ? *p + 32 : *p);
    if (strstr(out, "llvm") || strstr(out, "lua"))
        fail_msg("the consumer depends on LLVM or Lua:\n%s", out);
    assert_contains(out, "libkiln_rt.so");
    assert_contains(out, "libkiln_kernels.so");

    snprintf(bin, sizeof bin, "%s/out.bin", dir);
    rc = run(out, sizeof out, "'%s' '%s' '%s' %d", consumer, dir, bin, CONSUMER_M);
    if (rc)
        fail_msg("consumer exit %d:\n%s", rc, out);
    check_outputs(recipe, man, bin);
    kiln_json_free(man);
    if (!strcmp(recipe_name, "w4a8")) {
        snprintf(w4a8_dir, sizeof w4a8_dir, "%s", dir);
        snprintf(consumer_w4a8, sizeof consumer_w4a8, "%s", consumer);
    }
}

static void test_w4a8(void **state) { round_trip("w4a8", 4); }
static void test_w8a8_dynamic(void **state) { round_trip("w8a8-int8-dynamic", 4); }
static void test_w8a8_static(void **state) { round_trip("w8a8-int8-static", 4); }
static void test_w4a16_g128_asym(void **state) { round_trip("w4a16-g128-asym", 4); }
static void test_fp8_e4m3_dynamic(void **state) { round_trip("fp8-e4m3-dynamic", 4); }
/* mixed: bias + silu + f16 out (up_proj), int4 asym f16 acts, fp8 (q_proj) */
static void test_mixed(void **state) { round_trip("mixed", 4); }

/* ------------------------------------------------------- the API over a library */

/* One layer of the w4a8 library through the public API (kiln_options.aot_dir: kernels
 * looked up, nothing compiled) against the same layer JIT-compiled: same kernel, same
 * bytes out. A shape the library lacks and a different target are clear errors. */
static void test_api_aot_dir(void **state)
{
    if (!*w4a8_dir)
        fail_msg("needs the w4a8 round trip to have passed");
    KilnAot *a;
    KilnDiag d = {0};
    if (kiln_aot_open(w4a8_dir, &a, &d))
        fail_msg("%s", d.msg);
    char tname[32];
    snprintf(tname, sizeof tname, "%s", kiln_aot_target(a));
    kiln_aot_close(a);

    char recipe[512], cache[600];
    snprintf(recipe, sizeof recipe, "%s/recipes/w4a8.lua", KILN_SOURCE_DIR);
    snprintf(cache, sizeof cache, "%s/cache-api-aot", base);
    enum { N = 24, K = 384, M = 5 };
    float *w = malloc(sizeof(float) * N * K), *x = malloc(sizeof(float) * M * K);
    float y[2][M * N];
    for (int i = 0; i < N * K; i++)
        w[i] = (float)((i * 7919 % 263) - 131) / 97.0f;
    for (int i = 0; i < M * K; i++)
        x[i] = (float)((i * 104729 % 199) - 99) / 53.0f;
    const kiln_layer_desc desc = {.name = "model.layers.0.mlp.down_proj", .N = N, .K = K, .weight = w};
    char kernel[2][64];
    for (int v = 0; v < 2; v++) { /* 0: the library, 1: the JIT */
        kiln_options o = {.target = tname, .cache_dir = cache, .num_threads = 2};
        if (v == 0)
            o.aot_dir = w4a8_dir;
        kiln_ctx *ctx;
        kiln_recipe *r;
        kiln_layer *l;
        if (kiln_ctx_create(&o, &ctx))
            fail_msg("ctx (%s): %s", v ? "jit" : "aot", kiln_error(NULL));
        if (kiln_recipe_open(ctx, recipe, &r) || kiln_layer_create(ctx, r, &desc, &l))
            fail_msg("layer (%s): %s", v ? "jit" : "aot", kiln_error(ctx));
        assert_int_equal(kiln_layer_run(l, x, M, y[v]), KILN_STATUS_OK);
        snprintf(kernel[v], sizeof kernel[v], "%s", kiln_layer_kernel(l));
        kiln_layer_destroy(l);
        if (v == 0) { /* K = 512: no such kernel in the library */
            kiln_layer_desc other = desc;
            other.K = 128;
            assert_int_not_equal(kiln_layer_create(ctx, r, &other, &l), KILN_STATUS_OK);
            assert_contains(kiln_error(ctx), "the AOT library has no kernel");
            assert_contains(kiln_error(ctx), "model.layers.0.mlp.down_proj");
        }
        kiln_recipe_close(r);
        kiln_ctx_destroy(ctx);
    }
    assert_string_equal(kernel[0], kernel[1]);
    assert_memory_equal(y[0], y[1], sizeof y[0]);
    print_message("  API over the %s library: %s, outputs identical to the JIT\n", tname,
                  kernel[0]);

    const char *other = strcmp(tname, "avx2") ? "avx2" : "interp";
    kiln_options o = {.target = other, .aot_dir = w4a8_dir};
    kiln_ctx *ctx;
    assert_int_not_equal(kiln_ctx_create(&o, &ctx), KILN_STATUS_OK);
    assert_null(ctx);
    assert_contains(kiln_error(NULL), "was built for");
    o = (kiln_options){.aot_dir = base}; /* no manifest there */
    assert_int_not_equal(kiln_ctx_create(&o, &ctx), KILN_STATUS_OK);
    assert_null(ctx);
    free(w);
    free(x);
}

/* ------------------------------------------------------------------ errors */

/* A copy of the w4a8 AOT dir whose manifest has `from` replaced by `to`. */
static void edited_dir(const char *name, const char *from, const char *to, char *dir, size_t n)
{
    if (!*w4a8_dir)
        fail_msg("needs the w4a8 round trip to have passed");
    char out[4096], path[700];
    snprintf(dir, n, "%s/%s", base, name);
    assert_int_equal(run(out, sizeof out, "mkdir -p '%s' && ln -sf '%s/libkiln_kernels.so' '%s/'",
                         dir, w4a8_dir, dir), 0);
    snprintf(path, sizeof path, "%s/manifest.json", w4a8_dir);
    char *text = read_text(path);
    char *at = strstr(text, from);
    assert_non_null(at);
    size_t len = strlen(text) + strlen(to) + 1;
    char *edited = malloc(len);
    snprintf(edited, len, "%.*s%s%s", (int)(at - text), text, to, at + strlen(from));
    snprintf(path, sizeof path, "%s/manifest.json", dir);
    write_text(path, edited);
    free(edited);
    free(text);
}

static void test_missing_symbol(void **state)
{
    char dir[600], out[8192], from[80];
    KilnDiag d = {0};
    KilnAot *a;
    snprintf(dir, sizeof dir, "%s", w4a8_dir);
    if (!*dir || kiln_aot_open(dir, &a, &d))
        fail_msg("needs the w4a8 AOT dir: %s", d.msg);
    snprintf(from, sizeof from, "\"symbol\": \"%s\"", kiln_aot_kernel(a, 0)->symbol);
    kiln_aot_close(a);
    edited_dir("nosym", from, "\"symbol\": \"kiln_qgemm_0000000000000000\"", dir, sizeof dir);
    int rc = run(out, sizeof out, "'%s' '%s' '%s/nosym.bin'", consumer_w4a8, dir, base);
    assert_int_equal(rc, 2);
    assert_contains(out, "has no symbol 'kiln_qgemm_0000000000000000' named in manifest.json");
}

static void test_aot_layout_checks(void **state)
{
    KilnAot *a;
    KilnDiag d = {0};
    KilnLayout l;
    char lay_from[96], lay_to[96], kr_from[32], kr_to[32], kr_err[96];
    if (!*w4a8_dir || kiln_aot_open(w4a8_dir, &a, &d))
        fail_msg("needs the w4a8 AOT dir: %s", d.msg);
    const KilnAotKernel *k0 = kiln_aot_kernel(a, 0);
    int64_t kr = kiln_json_get(&kiln_json_get(kiln_aot_manifest(a), "kernels")->items[0], "kr")->i;
    snprintf(lay_from, sizeof lay_from, "\"layout\": \"%s\"", k0->layout);
    snprintf(lay_to, sizeof lay_to, "\"layout\": \"%s-x\"", k0->layout);
    snprintf(kr_from, sizeof kr_from, "\"kr\": %lld", (long long)kr);
    snprintf(kr_to, sizeof kr_to, "\"kr\": %lld", (long long)kr + 1);
    snprintf(kr_err, sizeof kr_err, "\"kr\" is %lld but this runtime's layout gives %lld",
             (long long)kr + 1, (long long)kr);
    /* the untouched manifest rebuilds the layout kiln aot used */
    assert_int_equal(kiln_aot_layout(a, 0, &l, &d), 0);
    assert_string_equal(l.name, k0->layout);
    assert_int_equal(l.N, 40);
    assert_int_equal(l.K, 256);
    assert_int_equal(l.wdt, KILN_I4);
    assert_int_equal(l.wspec.group, 128);
    assert_int_equal((int64_t)l.pack_bytes, k0->pack_bytes);
    assert_false(l.weight_only);
    assert_true(l.aspec.dynamic);
    kiln_aot_close(a);

    const struct {
        const char *from, *to, *err;
    } cases[] = {
        {"\"format\": \"int4\"", "\"format\": \"int3\"", "\"weight.format\" has unknown value 'int3'"},
        {"\"granularity\": \"group\"", "\"granularity\": \"blocky\"", "unknown value 'blocky'"},
        {"\"group\": 128", "\"group\": 0", "\"weight.group\" must be a positive integer"},
        {kr_from, kr_to, kr_err},
        {lay_from, lay_to, "but this runtime builds"},
        {"\"out_dtype\": \"f32\"", "\"out_dtype\": \"f64\"", "\"out_dtype\" has unknown value"},
        {"\"dynamic\": true", "\"dynamic\": 1", "\"act.dynamic\" must be true or false"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char dir[600], name[32];
        snprintf(name, sizeof name, "layout%zu", i);
        edited_dir(name, cases[i].from, cases[i].to, dir, sizeof dir);
        if (kiln_aot_open(dir, &a, &d))
            fail_msg("%s", d.msg);
        assert_int_equal(kiln_aot_layout(a, 0, &l, &d), KILN_EINPUT);
        assert_contains(d.msg, cases[i].err);
        assert_contains(d.msg, "kernels[0]");
        assert_int_equal(kiln_aot_layout(a, 99, &l, &d), KILN_EINPUT);
        assert_contains(d.msg, "no kernel 99");
        kiln_aot_close(a);
    }
}

/* kiln aot with extra arguments; expects exit code `want` and `msg` in its output. */
static void aot_fails(const char *env, const char *args, int want, const char *msg)
{
    char out[8192];
    int rc = run(out, sizeof out, "%s '%s' aot '%s/recipes/w4a8.lua' %s", env, KILN_BIN,
                 KILN_SOURCE_DIR, args);
    if (rc != want)
        fail_msg("kiln aot %s: exit %d, expected %d:\n%s", args, rc, want, out);
    assert_contains(out, msg);
}

static void test_errors(void **state)
{
    char args[1200], shapes[600], file[600];
    snprintf(args, sizeof args, "--shape 1,32,256 --target avx9000 -o '%s/e1'", base);
    aot_fails("", args, 2, "unknown target \"avx9000\"");
    snprintf(args, sizeof args, "--shape 1,32,256 --target sm_90 -o '%s/e2'", base);
    aot_fails("KILN_NVRTC=/nonexistent/libnvrtc.so", args, 3, "NVRTC not found");
    snprintf(args, sizeof args, "--shape 1,32,256 --target interp -o '%s/e3'", base);
    aot_fails("", args, 2, "builds no kernels");

    snprintf(shapes, sizeof shapes, "%s/bad_group.txt", base);
    write_text(shapes, "model.layers.0.mlp.up_proj 2,32,256\n"
                       "model.layers.7.mlp.up_proj 2,32,100\n");
    snprintf(args, sizeof args, "--shapes '%s' -o '%s/e4'", shapes, base);
    aot_fails("", args, 2, "bad_group.txt:2: layer 'model.layers.7.mlp.up_proj' (M=2 N=32 K=100)");
    aot_fails("", args, 2, "100");

    snprintf(shapes, sizeof shapes, "%s/bad_line.txt", base);
    write_text(shapes, "# ok\nmodel.x 1,2\n");
    snprintf(args, sizeof args, "--shapes '%s' -o '%s/e5'", shapes, base);
    aot_fails("", args, 2, "bad_line.txt:2: expected 'LAYER_NAME M,N,K' or 'M,N,K'");
    write_text(shapes, "# only comments\n\n");
    aot_fails("", args, 2, "no layers");
    snprintf(args, sizeof args, "--shapes '%s/none.txt' -o '%s/e5'", base, base);
    aot_fails("", args, 2, "cannot open shapes file");

    snprintf(file, sizeof file, "%s/a_file", base);
    write_text(file, "x");
    snprintf(args, sizeof args, "--shape 1,32,256 -o '%s/sub'", file);
    aot_fails("", args, 2, "cannot create output directory");

    snprintf(args, sizeof args, "--shape 1,32,256 -o '%s/e7'", base);
    aot_fails("CC=/nonexistent/kiln-no-cc", args, 2, "cannot run the C compiler");
    aot_fails("", "--shape 1,32,256", 2, "usage: kiln aot");
    snprintf(args, sizeof args, "--shape 1,32,256 --shapes x -o '%s/e8'", base);
    aot_fails("", args, 2, "not both");
    snprintf(args, sizeof args, "--shapes x --layer a -o '%s/e8'", base);
    aot_fails("", args, 2, "--layer goes with --shape");
}

/* sm_XX targets: per kernel the canonical kernel IR, NVRTC's PTX and the cubin. Needs
 * the CUDA toolkit's NVRTC (not a GPU); without it kiln aot exits 3 and this skips. */
static void gpu_round_trip(const char *recipe_name, const char *arch, int want_kernels)
{
    char out[16384], dir[512], path[1200], want[128];
    snprintf(dir, sizeof dir, "%s/gpu-%s-%s", base, recipe_name, arch);
    double t0 = now_ms();
    int rc = run(out, sizeof out, "'%s' aot '%s/recipes/%s.lua' --shapes '%s/shapes.txt' "
                 "--target %s -o '%s'", KILN_BIN, KILN_SOURCE_DIR, recipe_name, base, arch, dir);
    if (rc == 3 && strstr(out, "NVRTC")) {
        print_message("  skipped: %s", out);
        return;
    }
    if (rc)
        fail_msg("kiln aot --target %s: exit %d:\n%s", arch, rc, out);
    print_message("  kiln aot %s --target %s: %.0f ms\n", recipe_name, arch, now_ms() - t0);
    snprintf(want, sizeof want, "5 layers -> %d kernels for %s", want_kernels, arch);
    assert_contains(out, want);
    snprintf(path, sizeof path, "%s/manifest.json", dir);
    KilnJson *man;
    KilnDiag d = {0};
    if (kiln_json_parse_file(path, &man, &d))
        fail_msg("%s", d.msg);
    assert_string_equal(kiln_json_get(man, "kind")->str, "cuda");
    assert_string_equal(kiln_json_get(man, "target")->str, arch);
    assert_null(kiln_json_get(man, "library"));
    const KilnJson *ks = kiln_json_get(man, "kernels"), *ls = kiln_json_get(man, "layers");
    assert_int_equal(ks->len, want_kernels);
    /* lm_head, left in f32 by the recipe, gets the f32-fma kernel (f32 weights, FFMA) */
    const KilnJson *lm = kiln_json_get(&ls->items[4], "kernel");
    assert_int_equal(lm->kind, KILN_JSON_STRING);
    int found = 0;
    for (size_t i = 0; i < ks->len; i++)
        if (!strcmp(kiln_json_get(&ks->items[i], "symbol")->str, lm->str) && ++found) {
            char lay[32];
            snprintf(lay, sizeof lay, "sm%s-f32-fma", arch + 3);
            assert_string_equal(kiln_json_get(&ks->items[i], "layout")->str, lay);
            assert_string_equal(kiln_json_get(kiln_json_get(&ks->items[i], "weight"), "format")->str, "none");
        }
    assert_int_equal(found, 1);
    assert_string_equal(kiln_json_get(&ls->items[0], "kernel")->str,
                        kiln_json_get(&ls->items[2], "kernel")->str);
    for (size_t i = 0; i < ks->len; i++) {
        const KilnJson *k = &ks->items[i];
        snprintf(path, sizeof path, "%s/%s", dir, kiln_json_get(k, "ptx")->str);
        char *ptx = read_text(path);
        snprintf(want, sizeof want, ".target %s", arch);
        assert_contains(ptx, want);
        const KilnJson *launch = kiln_json_get(k, "launch");
        assert_true(launch->len >= 2);
        for (size_t j = 0; j < launch->len; j++) {
            snprintf(want, sizeof want, ".entry %s(", launch->items[j].str);
            assert_contains(ptx, want);
        }
        free(ptx);
        snprintf(path, sizeof path, "%s/%s", dir, kiln_json_get(k, "cubin")->str);
        char *cubin = read_text(path);
        assert_memory_equal(cubin, "\x7f" "ELF", 4);
        free(cubin);
        snprintf(path, sizeof path, "%s/%s", dir, kiln_json_get(k, "kir")->str);
        char *kir = read_text(path);
        KilnModule *m = kiln_module_new();
        if (kiln_parse_module(kir, strlen(kir), path, m, &d) || kiln_verify_module(m, &d))
            fail_msg("%s: %s", path, d.msg);
        assert_non_null(kiln_find_qgemm(m->funcs[0]));
        kiln_module_free(m);
        free(kir);
    }
    kiln_json_free(man);
}

static void test_gpu_w4a8_sm90(void **state) { gpu_round_trip("w4a8", "sm_90", 4); }
static void test_gpu_fp8_sm89(void **state) { gpu_round_trip("fp8-e4m3-dynamic", "sm_89", 4); }

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_w4a8),
        cmocka_unit_test(test_w8a8_dynamic),
        cmocka_unit_test(test_w8a8_static),
        cmocka_unit_test(test_w4a16_g128_asym),
        cmocka_unit_test(test_fp8_e4m3_dynamic),
        cmocka_unit_test(test_mixed),
        cmocka_unit_test(test_api_aot_dir),
        cmocka_unit_test(test_missing_symbol),
        cmocka_unit_test(test_aot_layout_checks),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_gpu_w4a8_sm90),
        cmocka_unit_test(test_gpu_fp8_sm89),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
