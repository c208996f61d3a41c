/* codegen/ptx/run.c — `kiln run --target sm_XX|cuda`: driver first, then the module from
 * the kernel cache or NVRTC, then the launch through runtime/cuda.c. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ir/layout.h"
#include "ir/outliers.h"
#include "ptx.h"
#include "runtime/cuda.h"
#include "runtime/runtime.h"

int kiln_gpu_device_arch(char arch[16], KilnDiag *d)
{
    KilnCuda *c;
    int rc = kiln_cuda_open(&c, d);
    if (rc)
        return rc;
    snprintf(arch, 16, "%s", kiln_cuda_arch(c));
    kiln_cuda_close(c);
    return 0;
}

static int sm_of(const char *arch) { return (int)strtol(arch + 3, NULL, 10); }

/* The module image for f: from the cache, else NVRTC (then stored). The key is the
 * generated CUDA source itself (every shape, format, scale and the template are in it;
 * the layer's name is not) plus the kiln and NVRTC versions and which image it is. */
static int module_image(const KilnFunc *f, const char *arch, bool want_cubin, void **img, size_t *len,
                        bool *hit, KilnDiag *d)
{
    char *src = NULL;
    int rc = kiln_ptx_source(f, arch, KILN_CUDA_SYMBOL, &src, d);
    if (rc)
        return rc;
    const char *nv = kiln_nvrtc_version(d);
    if (!nv) {
        free(src);
        return KILN_ENODEV;
    }
    size_t klen = strlen(src) + 256;
    char *key = malloc(klen);
    if (!key) {
        free(src);
        return kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
    }
    klen = (size_t)snprintf(key, klen, "kiln %s\nnvrtc %s\nabi gpu-qgemm-1\narch %s\nimage %s\n", KILN_VERSION, nv,
                            arch, want_cubin ? "cubin" : "ptx");
    memcpy(key + klen, src, strlen(src));
    klen += strlen(src);
    KilnCache *cache = NULL;
    KilnDiag cd = {0};
    if (kiln_cache_open(NULL, &cache, &cd))
        cache = NULL; /* no cache: compile every time */
    *hit = cache && kiln_cache_get(cache, key, klen, img, len, &cd) == 0;
    if (!*hit) {
        char *ptx = NULL;
        void *cubin = NULL;
        size_t clen = 0;
        rc = kiln_nvrtc_compile(src, arch, &ptx, want_cubin ? &cubin : NULL, &clen, NULL, d);
        if (!rc) {
            if (want_cubin) {
                *img = cubin;
                *len = clen;
                free(ptx);
            } else {
                *img = ptx;
                *len = strlen(ptx) + 1;
            }
            if (cache && kiln_cache_put(cache, key, klen, *img, *len, &cd))
                fprintf(stderr, "kiln: warning: could not store the GPU kernel in the cache: %s\n", cd.msg);
        }
    }
    if (cache)
        kiln_cache_close(cache);
    free(key);
    free(src);
    return rc;
}

/* A qgemm with outliers: the device kernel is the int8 part alone (f32 out) on x with
 * the columns zeroed; the f32 columns, bias, activation and rounding run here after it. */
static int run_outliers(KilnCuda *c, const KilnFunc *f, const KilnInst *g, const void *img, size_t len,
                        const float *x, int64_t M, const KilnTensor *wq, const float *w, const float *bias,
                        void *y, KilnDiag *d)
{
    const KilnAttr *o = kiln_get(g, "outliers");
    int64_t N = wq->type.dim[0], K = wq->type.dim[1], n = o->nints;
    if (!w)
        return kiln_diag_set(d, KILN_EINPUT, "layer '%s': outlier columns need the f32 weight", f->name);
    const KilnAttr *ea = kiln_get(g, "epilogue");
    KilnOutlierEpi e = {.N = N, .K = K, .n = n, .idx = o->ints, .bias = kiln_qgemm_bias(g) >= 0 ? bias : NULL,
                        .act = ea && ea->s && !strcmp(ea->s, "silu")   ? KILN_EPI_SILU
                               : ea && ea->s && !strcmp(ea->s, "gelu") ? KILN_EPI_GELU
                                                                       : KILN_EPI_NONE,
                        .out_dt = f->values[g->result].type.dt};
    float *woT = malloc(sizeof(float) * (size_t)(n * N)), *xz = malloc(sizeof(float) * (size_t)(M * K));
    float *acc = malloc(sizeof(float) * (size_t)(M * N)), *scratch = malloc(sizeof(float) * (size_t)N);
    int rc = woT && xz && acc && scratch ? 0 : kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
    if (!rc) {
        kiln_outlier_gather_wt(w, N, K, o->ints, n, woT);
        e.woT = woT;
        kiln_outlier_zero_cols(x, K, o->ints, n, 0, M, xz);
        rc = kiln_cuda_qgemm_run(c, f, img, len, xz, M, wq, NULL, acc, d);
    }
    if (!rc)
        kiln_outlier_finish(&e, x, acc, y, 0, M, scratch);
    free(woT);
    free(xz);
    free(acc);
    free(scratch);
    return rc;
}

int kiln_gpu_run_layer(const KilnFunc *f, const float *x, int64_t M, const KilnTensor *wq, const float *w,
                       const float *bias, void *y, bool verbose, KilnDiag *d)
{
    double t0 = kiln_now_ms();
    KilnCuda *c = NULL;
    int rc = kiln_cuda_open(&c, d);
    if (rc)
        return rc;
    const KilnAttr *ta = kiln_fget(f, "target");
    const char *arch = ta && ta->s ? ta->s : "";
    if (strcmp(arch, "sm_80") && strcmp(arch, "sm_89") && strcmp(arch, "sm_90")) {
        kiln_cuda_close(c);
        return kiln_diag_set(d, KILN_EINPUT, "layer '%s' was planned for target '%s', not sm_80, sm_89 or sm_90",
                             f->name, arch);
    }
    const char *dev = kiln_cuda_arch(c);
    if (sm_of(dev) < sm_of(arch)) {
        rc = kiln_diag_set(d, KILN_ENODEV, "layer '%s' was planned for %s but the GPU (%s) is %s", f->name, arch,
                           kiln_cuda_device_name(c), dev);
        kiln_cuda_close(c);
        return rc;
    }
    /* the cubin runs only on its own arch; a newer GPU JIT-compiles the PTX */
    bool want_cubin = !strcmp(dev, arch);
    void *img = NULL;
    size_t len = 0;
    bool hit = false;
    double t1 = kiln_now_ms();
    rc = module_image(f, arch, want_cubin, &img, &len, &hit, d);
    double t2 = kiln_now_ms();
    const KilnInst *g = kiln_find_qgemm(f);
    if (!rc && g && kiln_qgemm_outlier_w(g) >= 0)
        rc = run_outliers(c, f, g, img, len, x, M, wq, w, bias, y, d);
    else if (!rc)
        rc = kiln_cuda_qgemm_run(c, f, img, len, x, M, wq, bias, y, d);
    double t3 = kiln_now_ms();
    if (!rc && verbose) {
        const KilnAttr *la = kiln_get(kiln_find_qgemm(f), "layout");
        fprintf(stderr,
                "kiln: gpu %s (%s): layout %s, %s for %s, cache %s: open %.1f ms, compile %.1f ms, "
                "prepack+upload+run+download %.1f ms\n",
                kiln_cuda_device_name(c), dev, la && la->s ? la->s : "?", want_cubin ? "cubin" : "PTX", arch,
                hit ? "hit" : "miss", t1 - t0, t2 - t1, t3 - t2);
    }
    free(img);
    kiln_cuda_close(c);
    return rc;
}
