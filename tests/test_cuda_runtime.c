/* tests/test_cuda_runtime.c — the CUDA driver runtime (runtime/cuda.c) and the API's CUDA
 * backend (api/backend_cuda.c). Without a driver: kiln_cuda_open and a context for an
 * sm_XX or cuda target say KILN_ENODEV "no CUDA driver
 * found", and the GPU run-time tests print "SKIP: no CUDA driver found" and pass. With a
 * GPU: every recipe on the device's arch, M in {1, 3, 16, 67, 128} (and one 4096), odd N/K,
 * against kiln_interp_run on the same kernel IR. Tolerance (docs/gpu.md): integer paths
 * |y - ref| <= 1e-5·max|ref| (only the scale multiplies and expf/erff differ) plus one
 * unit of the output format; float paths (fp8, weight-only) add K·2^-22·max|ref| for the
 * different f32 summation order. */
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

#include "api/compile.h"
#include "kiln.h"
#include "codegen/ptx/ptx.h"
#include "frontend/recipe.h"
#include "ir/layout.h"
#include "ir/layout_gpu.h"
#include "ir/numerics.h"
#include "passes/passes.h"
#include "runtime/cuda.h"

static KilnCuda *g_cuda;
static char g_arch[16];

static void set_env(const char *k, const char *v, char *saved, size_t n)
{
    const char *o = getenv(k);
    snprintf(saved, n, "%s", o ? o : "");
    if (v)
        setenv(k, v, 1);
    else
        unsetenv(k);
}

static void test_open_without_driver(void **state)
{
    (void)state;
    char saved[512];
    set_env("KILN_CUDA_DRIVER", "/nonexistent/libcuda.so.1", saved, sizeof saved);
    KilnCuda *c = (KilnCuda *)1;
    KilnDiag d = {0};
    assert_int_equal(kiln_cuda_open(&c, &d), KILN_ENODEV);
    assert_null(c);
    assert_non_null(strstr(d.msg, "no CUDA driver found"));
    /* the API (and `kiln run --target sm_XX|cuda` through it) opens the driver when the
     * context is made, before any work */
    static const char *const names[] = {"sm_80", "sm_90", "cuda"};
    for (int i = 0; i < 3; i++) {
        kiln_ctx *ctx = (kiln_ctx *)1;
        kiln_options o = {.target = names[i]};
        assert_int_equal(kiln_ctx_create(&o, &ctx), KILN_STATUS_NODEV);
        assert_null(ctx);
        assert_non_null(strstr(kiln_error(NULL), "no CUDA driver found"));
    }
    set_env("KILN_CUDA_DRIVER", saved[0] ? saved : NULL, saved, sizeof saved);
}

static void test_open_real(void **state)
{
    (void)state;
    KilnDiag d = {0};
    int rc = kiln_cuda_open(&g_cuda, &d);
    if (rc) {
        assert_int_equal(rc, KILN_ENODEV);
        assert_true(strstr(d.msg, "no CUDA driver found") || strstr(d.msg, "no CUDA device"));
        printf("SKIP: %s\n", d.msg);
        skip();
    }
    snprintf(g_arch, sizeof g_arch, "%s", kiln_cuda_arch(g_cuda));
    assert_true(!strncmp(g_arch, "sm_", 3));
    printf("GPU: %s (%s)\n", kiln_cuda_device_name(g_cuda), g_arch);
    /* KILN_GPU_ARCH plans for another arch the device runs: sm_90a (wgmma) on sm_90 */
    const char *want = getenv("KILN_GPU_ARCH");
    if (want && *want) {
        if (kiln_gpu_arch_runs_on(want, g_arch, &d))
            fail_msg("KILN_GPU_ARCH: %s", d.msg);
        snprintf(g_arch, sizeof g_arch, "%s", want);
        printf("kernels planned for %s (KILN_GPU_ARCH)\n", g_arch);
    }
}

/* ------------------------------------------------------------------ GPU vs interpreter */

typedef struct Data {
    uint64_t seed;
} Data;

static float rnd(uint64_t *s)
{
    *s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
    return (float)((*s >> 40) & 0xFFFFFF) / (float)0x1000000 * 2.0f - 1.0f;
}

static int weights(void *ctx, const char *name, KilnTensor *out, KilnDiag *d)
{
    (void)d;
    uint64_t s = ((Data *)ctx)->seed ^ (uint64_t)strlen(name) * 7919;
    int64_t n = kiln_type_numel(&out->type);
    for (int64_t i = 0; i < n; i++)
        ((float *)out->data)[i] = rnd(&s) * (out->type.rank == 1 ? 0.1f : 0.08f);
    return 0;
}

static float out_at(KilnDType dt, const void *p, int64_t i)
{
    return dt == KILN_F32 ? ((const float *)p)[i]
           : dt == KILN_F16 ? kiln_f16_to_f32(((const uint16_t *)p)[i])
                            : kiln_bf16_to_f32(((const uint16_t *)p)[i]);
}

/* The weight (and bias) the way the interpreter folds them. */
static int fetch(KilnFunc *f, const KilnInst *g, Data *dat, KilnTensor *wq, float **bias)
{
    KilnType wt = f->values[g->ops[1]].type;
    int64_t N = wt.dim[0], K = wt.dim[1];
    KilnTensor w;
    KilnType ft = kiln_type2(KILN_F32, N, K);
    KilnDiag d = {0};
    if (kiln_tensor_alloc(&w, &ft) || kiln_tensor_alloc(wq, &wt))
        return -1;
    /* the weight's name: follow quantize/prepack back to the weight op */
    int v = g->ops[1];
    while (f->values[v].def >= 0 && f->insts[f->values[v].def].op != KILN_OP_WEIGHT)
        v = f->insts[f->values[v].def].ops[0];
    weights(dat, kiln_get(&f->insts[f->values[v].def], "name")->s, &w, &d);
    int rc = 0;
    if (wt.q.fmt == KILN_QF_NONE) /* a layer the recipe leaves in f32 */
        memcpy(wq->data, w.data, sizeof(float) * (size_t)(N * K));
    else
        rc = kiln_quantize_matrix(&wt.q, w.data, N, K, wq->data, wq->scales, wq->zeros, &d);
    kiln_tensor_free(&w);
    *bias = NULL;
    if (!rc && g->nops > 2) {
        const KilnInst *bi = &f->insts[f->values[g->ops[2]].def];
        KilnTensor b;
        KilnType bt = kiln_type1(KILN_F32, N);
        kiln_tensor_alloc(&b, &bt);
        weights(dat, kiln_get(bi, "name")->s, &b, &d);
        *bias = b.data; /* freed with free() below */
    }
    return rc;
}

static void run_one(const char *recipe, int rule, int64_t M, int64_t N, int64_t K, int *checked)
{
    KilnDiag d = {0};
    KilnRecipe *r = NULL;
    assert_int_equal(kiln_recipe_load(recipe, &r, &d), 0);
    KilnTarget t;
    assert_int_equal(kiln_target_lookup(g_arch, &t, &d), 0);
    KilnModule *m = kiln_module_new();
    KilnFunc *f;
    if (kiln_lower_layer(r, kiln_recipe_rule_example(r, rule), M, N, K, t.name, m, &f, &d) ||
        kiln_run_pipeline(m, &t, NULL, &d))
        fail_msg("%s: %s", recipe, d.msg);
    f = m->funcs[0];
    const KilnInst *g = kiln_find_qgemm(f);
    if (!g) /* f32 layers (an ignore list) run too: the f32-fma kernel */
        goto done;
    Data dat = {(uint64_t)(M * 131 + N * 17 + K)};
    float *x = malloc((size_t)(M * K) * sizeof *x);
    uint64_t s = dat.seed;
    for (int64_t i = 0; i < M * K; i++)
        x[i] = rnd(&s) * (i % 97 == 0 ? 6.0f : 1.0f); /* a few outliers */
    kiln_calibrate_static(f, x, M * K);
    KilnTensor in = {.type = kiln_type2(KILN_F32, M, K), .data = x, .nbytes = (size_t)(M * K) * 4}, ref;
    if (kiln_interp_run(f, &in, 1, weights, &dat, &ref, &d))
        fail_msg("interp: %s", d.msg);
    KilnTensor wq;
    float *bias = NULL;
    assert_int_equal(fetch(f, g, &dat, &wq, &bias), 0);
    char *ptx = NULL;
    void *cubin = NULL;
    size_t clen = 0;
    if (kiln_ptx_emit(f, g_arch, KILN_CUDA_SYMBOL, &ptx, &cubin, &clen, NULL, &d))
        fail_msg("%s: %s", recipe, d.msg);
    KilnDType odt = f->values[g->result].type.dt;
    void *y = calloc((size_t)(M * N), 4);
    if (kiln_cuda_qgemm_run(g_cuda, f, cubin, clen, x, M, &wq, bias, y, &d))
        fail_msg("%s M=%lld: %s", recipe, (long long)M, d.msg);
    KilnGpuLayout l;
    kiln_gpu_layout_for(g, f, &l, &d);
    double maxref = 0, maxerr = 0;
    for (int64_t i = 0; i < M * N; i++) {
        double rv = out_at(odt, ref.data, i);
        maxref = fmax(maxref, fabs(rv));
        maxerr = fmax(maxerr, fabs(rv - out_at(odt, y, i)));
    }
    double ulp = odt == KILN_F32 ? 0x1p-23 : odt == KILN_F16 ? 0x1p-10 : 0x1p-7;
    bool exact_int = l.family == KILN_GK_MMA_S8;
    double tol = (1e-5 + ulp + (exact_int ? 0 : (double)K * 0x1p-22)) * maxref + 1e-6;
    if (!(maxerr <= tol))
        fail_msg("%s (%s) M=%lld N=%lld K=%lld: max error %g > %g (max |ref| %g)", recipe, l.name, (long long)M,
                 (long long)N, (long long)K, maxerr, tol, maxref);
    (*checked)++;
    free(y);
    free(ptx);
    free(cubin);
    free(bias);
    kiln_tensor_free(&wq);
    kiln_tensor_free(&ref);
    free(x);
done:
    kiln_module_free(m);
    kiln_recipe_free(r);
}

static void test_gpu_vs_interp(void **state)
{
    (void)state;
    if (!g_cuda) {
        printf("SKIP: no CUDA driver found\n");
        skip();
    }
    DIR *dir = opendir(KILN_SOURCE_DIR "/recipes");
    assert_non_null(dir);
    struct dirent *e;
    int checked = 0;
    static const int64_t Ms[] = {1, 3, 16, 67, 128};
    while ((e = readdir(dir))) {
        size_t n = strlen(e->d_name);
        if (n < 5 || strcmp(e->d_name + n - 4, ".lua"))
            continue;
        char path[512];
        snprintf(path, sizeof path, "%s/recipes/%s", KILN_SOURCE_DIR, e->d_name);
        KilnRecipe *r = NULL;
        KilnDiag d = {0};
        assert_int_equal(kiln_recipe_load(path, &r, &d), 0);
        int nrules = kiln_recipe_nrules(r);
        kiln_recipe_free(r);
        for (int rule = 0; rule < nrules; rule++)
            for (size_t i = 0; i < sizeof Ms / sizeof *Ms; i++) {
                run_one(path, rule, Ms[i], 256, 512, &checked);
                run_one(path, rule, Ms[i], 72, 384, &checked); /* N off the 64 tile */
            }
        /* awkward shapes (issue 20): M 1, 7 (GEMV) and 130 (GEMM, 3 m tiles with a
         * ragged one), N off the 64 tile, K = 200 off the 32 k-slice (and off every
         * group: a ragged last group) */
        static const int64_t awkward_M[] = {1, 7, 130};
        for (int rule = 0; rule < nrules; rule++)
            for (size_t i = 0; i < 3; i++)
                run_one(path, rule, awkward_M[i], 72, 200, &checked);
    }
    closedir(dir);
    run_one(KILN_SOURCE_DIR "/recipes/w8a8-int8-dynamic.lua", 0, 5, 40, 72, &checked); /* K off 32 */
    run_one(KILN_SOURCE_DIR "/recipes/w8a16.lua", 0, 17, 100, 200, &checked);
    run_one(KILN_SOURCE_DIR "/recipes/w4a16-g128-asym.lua", 0, 4096, 512, 1024, &checked);
    /* the int4 GEMV's 8 warps split K = 1184 (37 slices) mid-group; M 13 fills rows 8..15
     * of its m tile in part, M 16 wholly (the int4 GEMV runs up to M 16) */
    run_one(KILN_SOURCE_DIR "/recipes/w4a16-g128-asym.lua", 0, 3, 100, 1184, &checked);
    run_one(KILN_SOURCE_DIR "/recipes/w4a16-g128-bf16.lua", 0, 13, 200, 1184, &checked);
    run_one(KILN_SOURCE_DIR "/recipes/w4a16-g32-sym.lua", 0, 16, 72, 1184, &checked);
    printf("%d GPU runs matched the interpreter on %s\n", checked, g_arch);
    assert_true(checked > 0);
}

static int teardown(void **state)
{
    (void)state;
    kiln_cuda_close(g_cuda);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_open_without_driver),
        cmocka_unit_test(test_open_real),
        cmocka_unit_test(test_gpu_vs_interp),
    };
    return cmocka_run_group_tests(tests, NULL, teardown);
}
