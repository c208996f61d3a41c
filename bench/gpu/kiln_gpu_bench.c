/* bench/gpu/kiln_gpu_bench.c — kernel time of one recipe layer on the GPU (used by
 * bench/gpu/run_device.sh): the recipe's first rule lowered at M,N,K for the device's
 * arch (or $KILN_GPU_ARCH, another arch the device runs: sm_90a's wgmma on sm_90), random weights quantized as the plan says, the module compiled through NVRTC
 * to a cubin, prepacked and uploaded, then kiln_cuda_layer_time (x resident on the
 * device, kernels only). Prints one JSON line.
 *   usage: kiln_gpu_bench RECIPE M N K [ITERS]
 * Exit 0; 2 usage or a plan error; 3 no GPU ("no CUDA driver found" / "no CUDA device"). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/compile.h"
#include "codegen/ptx/ptx.h"
#include "frontend/recipe.h"
#include "ir/layout.h"
#include "ir/layout_gpu.h"
#include "passes/passes.h"
#include "quant/quant.h"
#include "runtime/cuda.h"

static float rnd(uint64_t *s)
{
    *s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
    return (float)((*s >> 40) & 0xFFFFFF) / (float)0x1000000 * 2.0f - 1.0f;
}

static int fail(int code, const char *what, const KilnDiag *d)
{
    fprintf(stderr, "kiln_gpu_bench: %s: %s\n", what, d->msg);
    return code;
}

/* The plan's weight, quantized (or copied: an f32 layer) from random values. */
static int make_weight(const KilnFunc *f, const KilnInst *g, int64_t N, int64_t K, KilnTensor *wq, KilnDiag *d)
{
    const KilnType *wt = &f->values[g->ops[1]].type;
    float *w = malloc(sizeof(float) * (size_t)(N * K));
    if (!w || kiln_tensor_alloc(wq, wt)) {
        free(w);
        return kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
    }
    uint64_t s = 12345;
    for (int64_t i = 0; i < N * K; i++)
        w[i] = rnd(&s) * 0.08f;
    int rc = 0;
    if (wt->q.fmt == KILN_QF_NONE)
        memcpy(wq->data, w, sizeof(float) * (size_t)(N * K));
    else
        rc = kiln_quantize_matrix(&wt->q, w, N, K, wq->data, wq->scales, wq->zeros, d);
    free(w);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc < 5 || argc > 6) {
        fprintf(stderr, "usage: kiln_gpu_bench RECIPE M N K [ITERS]\n");
        return 2;
    }
    int64_t M = atoll(argv[2]), N = atoll(argv[3]), K = atoll(argv[4]);
    int iters = argc > 5 ? atoi(argv[5]) : 50;
    if (M <= 0 || N <= 0 || K <= 0 || iters <= 0) {
        fprintf(stderr, "kiln_gpu_bench: M, N, K and ITERS must be positive\n");
        return 2;
    }
    KilnDiag d = {0};
    KilnCuda *cu = NULL;
    if (kiln_cuda_open(&cu, &d))
        return fail(3, "no GPU", &d);
    const char *arch = kiln_cuda_arch(cu), *want = getenv("KILN_GPU_ARCH");
    if (want && *want) { /* another arch the device runs: sm_90a (wgmma) on sm_90 */
        if (kiln_gpu_arch_runs_on(want, arch, &d))
            return fail(2, "KILN_GPU_ARCH", &d);
        arch = want;
    }
    KilnRecipe *r = NULL;
    KilnTarget t;
    KilnModule *m = kiln_module_new();
    KilnFunc *f = NULL;
    if (kiln_recipe_load(argv[1], &r, &d) || kiln_target_lookup(arch, &t, &d) ||
        kiln_lower_layer(r, kiln_recipe_rule_example(r, 0), M, N, K, t.name, m, &f, &d) ||
        kiln_run_pipeline(m, &t, NULL, &d))
        return fail(2, argv[1], &d);
    f = m->funcs[0];
    float *x = malloc(sizeof(float) * (size_t)(M * K)), *bias = NULL;
    uint64_t s = 777;
    for (int64_t i = 0; x && i < M * K; i++)
        x[i] = rnd(&s);
    kiln_calibrate_static(f, x, M * K);
    const KilnInst *g = kiln_find_qgemm(f);
    KilnTensor wq = {0};
    KilnGpuLayout l;
    void *cubin = NULL;
    size_t clen = 0;
    KilnCudaLayer *L = NULL;
    double ms = 0;
    int rc = g ? make_weight(f, g, N, K, &wq, &d) : kiln_diag_set(&d, KILN_EINPUT, "no qgemm");
    if (!rc)
        rc = kiln_gpu_layout_for(g, f, &l, &d);
    if (!rc && l.has_bias && (bias = calloc((size_t)N, sizeof *bias)) == NULL)
        rc = kiln_diag_set(&d, KILN_EINTERNAL, "out of memory");
    if (!rc)
        rc = kiln_ptx_emit(f, arch, KILN_CUDA_SYMBOL, NULL, &cubin, &clen, NULL, &d);
    if (!rc)
        rc = kiln_cuda_layer_new(cu, f, KILN_CUDA_SYMBOL, cubin, clen, &wq, bias, &L, &d);
    if (!rc)
        rc = kiln_cuda_layer_time(cu, L, x, M, iters, &ms, &d);
    if (!rc) {
        double flops = 2.0 * (double)M * (double)N * (double)K;
        printf("{\"recipe\": \"%s\", \"layout\": \"%s\", \"device\": \"%s\", \"arch\": \"%s\", \"M\": %lld, "
               "\"N\": %lld, \"K\": %lld, \"iters\": %d, \"ms\": %.6f, \"weight_bytes\": %zu, \"gbs\": %.1f, "
               "\"tflops\": %.2f, \"kernel\": \"%s\"}\n",
               argv[1], l.name, kiln_cuda_device_name(cu), arch, (long long)M, (long long)N, (long long)K, iters,
               ms, l.pack_bytes, (double)l.pack_bytes / (ms * 1e6), flops / (ms * 1e9),
               kiln_gpu_use_gemv(&l, M) ? "gemv" : "gemm");
    }
    kiln_cuda_layer_free(cu, L);
    free(cubin);
    free(bias);
    free(x);
    kiln_tensor_free(&wq);
    kiln_module_free(m);
    kiln_recipe_free(r);
    kiln_cuda_close(cu);
    return rc ? fail(2, argv[1], &d) : 0;
}
