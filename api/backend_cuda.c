/* api/backend_cuda.c — the CUDA backend (api/backend.h): the driver opened once per
 * context (runtime/cuda.c, dlopen), a kernel's module compiled by NVRTC (codegen/ptx)
 * and kept in the kernel cache under the one kernel key, the layer's weights quantized,
 * prepacked and uploaded once (kiln_cuda_layer_new), runs that upload x and download y.
 * A qgemm with outlier columns runs its int8 part on the device and the f32 columns,
 * bias, activation and rounding on the host after it (ir/outliers.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/backend.h"
#include "api/compile.h"
#include "api/outliers.h"
#include "codegen/ptx/ptx.h"
#include "ir/layout_gpu.h"
#include "ir/numerics.h"
#include "runtime/cuda.h"
#include "runtime/runtime.h"

typedef struct CudaBackend {
    KilnBackend base;
    KilnCuda *cuda;
    KilnCache *cache; /* NULL: compile every time */
    char dev[16];     /* the device's arch */
} CudaBackend;

typedef struct CudaKernel {
    KilnModule *km;  /* the canonical kernel IR the module was compiled from */
    KilnFunc *canon;
    void *image;     /* cubin on the device's own arch, else PTX (the driver JITs it) */
    size_t len;
    char layout[48];
} CudaKernel;

typedef struct CudaWeights {
    KilnCudaLayer *layer;  /* the module with the weights on the device */
    KilnOutlierPart *side; /* outliers = {...}: the host's part after the kernel */
    size_t pack_bytes;
} CudaWeights;

static int sm_of(const char *arch) { return (int)strtol(arch + 3, NULL, 10); }

/* The module image of the canonical kernel for arch: from the cache, else NVRTC (then
 * stored), filed under the one kernel key with NVRTC, the ABI, the arch and the image
 * kind as its generator. */
static int module_image(CudaBackend *be, CudaKernel *k, const char *arch, bool cubin, bool *hit,
                        KilnDiag *d)
{
    const char *nv = kiln_nvrtc_version(d);
    if (!nv)
        return d->code ? d->code : KILN_ENODEV;
    char gen[128], sym[64];
    snprintf(gen, sizeof gen, "nvrtc %s\nabi gpu-qgemm-1\narch %s\nimage %s", nv, arch,
             cubin ? "cubin" : "ptx");
    size_t klen = 0;
    char *key = kiln_kernel_key(k->km, gen, &klen, sym);
    if (!key)
        return kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
    KilnDiag cd = {0};
    *hit = be->cache && kiln_cache_get(be->cache, key, klen, &k->image, &k->len, &cd) == 0;
    int rc = 0;
    if (!*hit) {
        char *ptx = NULL;
        void *bin = NULL;
        size_t blen = 0;
        rc = kiln_ptx_emit(k->canon, arch, KILN_CUDA_SYMBOL, &ptx, cubin ? &bin : NULL, &blen,
                           NULL, d);
        if (!rc && cubin) {
            k->image = bin, k->len = blen;
            free(ptx);
        } else if (!rc) {
            k->image = ptx, k->len = strlen(ptx) + 1;
        }
        if (!rc && be->cache && kiln_cache_put(be->cache, key, klen, k->image, k->len, &cd))
            fprintf(stderr, "kiln: warning: could not store the GPU kernel in the cache: %s\n",
                    cd.msg);
    }
    free(key);
    return rc;
}

static void cuda_kernel_free(KilnBackend *b, void *kv)
{
    (void)b;
    CudaKernel *k = kv;
    if (!k)
        return;
    free(k->image);
    kiln_module_free(k->km);
    free(k);
}

static int cuda_kernel(KilnBackend *b, const KilnFunc *planned, void **out, KilnDiag *d)
{
    CudaBackend *be = (CudaBackend *)b;
    const char *arch = b->target.name;
    CudaKernel *k = calloc(1, sizeof *k);
    if (!k || !(k->km = kiln_module_new())) {
        free(k);
        return kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
    }
    KilnGpuLayout l;
    int rc = kiln_kernel_canon(planned, k->km, &k->canon, d);
    if (!rc)
        rc = kiln_gpu_layout_for(kiln_find_qgemm(k->canon), k->canon, &l, d);
    if (!rc)
        snprintf(k->layout, sizeof k->layout, "%s", l.name);
    /* the cubin runs only on its own arch (sm_90a's on an sm_90 device); a newer GPU
     * JIT-compiles the PTX */
    bool cubin = sm_of(be->dev) == sm_of(arch), hit = false;
    double t0 = kiln_now_ms();
    if (!rc)
        rc = module_image(be, k, arch, cubin, &hit, d);
    if (!rc && b->verbose)
        fprintf(stderr, "kiln: %s: gpu %s (%s): layout %s, %s for %s, cache %s, %.1f ms\n",
                planned->name, kiln_cuda_device_name(be->cuda), be->dev, k->layout,
                cubin ? "cubin" : "PTX", arch, hit ? "hit" : "miss", kiln_now_ms() - t0);
    if (rc) {
        cuda_kernel_free(b, k);
        return rc;
    }
    *out = k;
    return 0;
}

static const char *cuda_kernel_layout(const void *k) { return ((const CudaKernel *)k)->layout; }

static void cuda_weights_free(KilnBackend *b, void *wv)
{
    CudaBackend *be = (CudaBackend *)b;
    CudaWeights *w = wv;
    if (!w)
        return;
    kiln_cuda_layer_free(be->cuda, w->layer);
    kiln_api_outlier_free(w->side);
    free(w);
}

/* desc's weight quantized as the plan's weight type says (onto the caller's grid when
 * it gives one), or copied when the recipe leaves the layer in f32. */
static int quantize(const KilnFunc *f, const kiln_layer_desc *desc, KilnTensor *wq, KilnDiag *d)
{
    const KilnType *wt = &f->values[kiln_find_qgemm(f)->ops[1]].type;
    int rc = kiln_tensor_alloc(wq, wt) ? kiln_diag_set(d, KILN_EINTERNAL, "out of memory") : 0;
    if (!rc && wt->q.fmt == KILN_QF_NONE) { /* a layer the recipe leaves in f32 */
        memcpy(wq->data, desc->weight, sizeof(float) * (size_t)(desc->N * desc->K));
    } else if (!rc && desc->weight_scale) {
        memcpy(wq->scales, desc->weight_scale, sizeof(float) * (size_t)wq->nscales);
        if (wq->zeros && desc->weight_zero)
            memcpy(wq->zeros, desc->weight_zero, sizeof(int32_t) * (size_t)wq->nscales);
        rc = kiln_quantize_matrix_with(&wt->q, desc->weight, desc->N, desc->K, wq->scales,
                                       wq->zeros, wq->data, d);
    } else if (!rc) {
        rc = kiln_quantize_matrix(&wt->q, desc->weight, desc->N, desc->K, wq->data, wq->scales,
                                  wq->zeros, d);
    }
    return rc;
}

static int cuda_weights(KilnBackend *b, void *kv, const KilnFunc *planned,
                        const kiln_layer_desc *desc, void **out, KilnDiag *d)
{
    CudaBackend *be = (CudaBackend *)b;
    CudaKernel *k = kv;
    CudaWeights *w = calloc(1, sizeof *w);
    if (!w)
        return kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
    KilnTensor wq = {0};
    KilnGpuLayout l;
    int rc = kiln_api_outlier_part(planned, desc, &w->side, d);
    if (!rc)
        rc = quantize(planned, desc, &wq, d);
    if (!rc)
        rc = kiln_gpu_layout_for(kiln_find_qgemm(k->canon), k->canon, &l, d);
    float *zeros = NULL; /* a bias the caller did not give is zero */
    const float *bias = desc->bias;
    if (!rc && l.has_bias && !bias && !(bias = zeros = calloc((size_t)desc->N, sizeof(float))))
        rc = kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
    if (!rc)
        rc = kiln_cuda_layer_new(be->cuda, k->canon, KILN_CUDA_SYMBOL, k->image, k->len, &wq,
                                 l.has_bias ? bias : NULL, &w->layer, d);
    w->pack_bytes = rc ? 0 : l.pack_bytes;
    free(zeros);
    kiln_tensor_free(&wq);
    if (rc) {
        cuda_weights_free(b, w);
        return rc;
    }
    *out = w;
    return 0;
}

static size_t cuda_weight_bytes(const void *w) { return ((const CudaWeights *)w)->pack_bytes; }

static int cuda_run(KilnBackend *b, void *kv, void *wv, const float *x, int64_t M, void *y,
                    KilnDiag *d)
{
    CudaBackend *be = (CudaBackend *)b;
    CudaWeights *w = wv;
    (void)kv;
    if (!w->side)
        return kiln_cuda_layer_run(be->cuda, w->layer, x, M, y, d);
    const KilnOutlierEpi *e = &w->side->epi;
    float *xz = malloc(sizeof(float) * (size_t)(M * e->K));
    float *acc = malloc(sizeof(float) * (size_t)(M * e->N));
    float *scratch = malloc(sizeof(float) * (size_t)e->N);
    int rc = xz && acc && scratch ? 0 : kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
    if (!rc) {
        kiln_outlier_zero_cols(x, e->K, e->idx, e->n, 0, M, xz);
        rc = kiln_cuda_layer_run(be->cuda, w->layer, xz, M, acc, d);
    }
    if (!rc)
        kiln_outlier_finish(e, x, acc, y, 0, M, scratch);
    free(xz);
    free(acc);
    free(scratch);
    return rc;
}

static void cuda_close(KilnBackend *b)
{
    CudaBackend *be = (CudaBackend *)b;
    if (!be)
        return;
    if (be->cache)
        kiln_cache_close(be->cache);
    kiln_cuda_close(be->cuda);
    free(be);
}

static const KilnBackendOps cuda_ops = {
    .name = "cuda",
    .kernel = cuda_kernel,
    .kernel_free = cuda_kernel_free,
    .kernel_layout = cuda_kernel_layout,
    .weights = cuda_weights,
    .weights_free = cuda_weights_free,
    .weight_bytes = cuda_weight_bytes,
    .run = cuda_run,
    .close = cuda_close,
};

int kiln_backend_cuda_open(const KilnTarget *t, bool device_arch, const char *cache_dir,
                           bool verbose, KilnBackend **out,
                           KilnDiag *d)
{
    *out = NULL;
    CudaBackend *be = calloc(1, sizeof *be);
    if (!be)
        return kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
    be->base = (KilnBackend){.ops = &cuda_ops, .target = *t, .verbose = verbose};
    int rc = kiln_cuda_open(&be->cuda, d); /* nothing runs without the driver: first */
    if (!rc) {
        snprintf(be->dev, sizeof be->dev, "%s", kiln_cuda_arch(be->cuda));
        if (device_arch) /* the alias `cuda`: the device's own arch */
            rc = kiln_target_lookup(be->dev, &be->base.target, d);
    }
    /* a portable arch runs on itself and later ones (PTX JIT); sm_90a on sm_90 only */
    bool specific = be->base.target.isa & KILN_ISA_CUDA_ARCH_SPECIFIC;
    int tsm = sm_of(be->base.target.name), dsm = rc ? 0 : sm_of(be->dev);
    if (!rc && (specific ? tsm != dsm : tsm > dsm))
        rc = kiln_diag_set(d, KILN_ENODEV, "target %s %s: %s is %s", be->base.target.name,
                           specific ? "runs on its own arch only" : "needs a newer GPU",
                           kiln_cuda_device_name(be->cuda), be->dev);
    KilnDiag cd = {0};
    if (!rc && kiln_cache_open(cache_dir, &be->cache, &cd))
        be->cache = NULL; /* no cache: compile every time */
    if (rc) {
        cuda_close(&be->base);
        return rc;
    }
    *out = &be->base;
    return 0;
}

int kiln_backend_open(const char *name, const char *cache_dir, int threads, bool verbose,
                      KilnBackend **out, KilnDiag *d)
{
    KilnTarget t;
    int rc = kiln_target_lookup(name, &t, d);
    if (rc)
        return rc;
    if (t.kind == KILN_TGT_CPU)
        return kiln_backend_cpu_open(&t, cache_dir, threads, verbose, out, d);
    if (t.kind == KILN_TGT_CUDA)
        return kiln_backend_cuda_open(&t, !strcmp(name, "cuda"), cache_dir, verbose, out, d);
    return kiln_diag_set(d, KILN_EINPUT,
                         "target '%s' runs no kernels (the API runs CPU targets and CUDA)", t.name);
}
