/* runtime/cuda.c — the CUDA driver API loaded with dlopen (runtime/cuda.h): no CUDA
 * header or library at build time, so kiln builds and runs on machines without a GPU and
 * says "no CUDA driver found" when asked for one. */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cuda.h"
#include "ir/layout.h"
#include "ir/layout_gpu.h"

typedef int CUresult; /* CUDA_SUCCESS = 0 */
typedef void *CUcontext, *CUmodule, *CUfunction, *CUstream;
enum { ATTR_CC_MAJOR = 75, ATTR_CC_MINOR = 76 };

typedef struct Driver {
    CUresult (*Init)(unsigned);
    CUresult (*DeviceGetCount)(int *);
    CUresult (*DeviceGet)(int *, int);
    CUresult (*DeviceGetAttribute)(int *, int, int);
    CUresult (*DeviceGetName)(char *, int, int);
    CUresult (*PrimaryCtxRetain)(CUcontext *, int);
    CUresult (*PrimaryCtxRelease)(int);
    CUresult (*CtxSetCurrent)(CUcontext);
    CUresult (*ModuleLoadDataEx)(CUmodule *, const void *, unsigned, int *, void **);
    CUresult (*ModuleGetFunction)(CUfunction *, CUmodule, const char *);
    CUresult (*ModuleUnload)(CUmodule);
    CUresult (*LaunchKernel)(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned,
                             unsigned, CUstream, void **, void **);
    CUresult (*MemAlloc)(KilnDevPtr *, size_t);
    CUresult (*MemFree)(KilnDevPtr);
    CUresult (*MemcpyHtoD)(KilnDevPtr, const void *, size_t);
    CUresult (*MemcpyDtoH)(void *, KilnDevPtr, size_t);
    CUresult (*MemsetD8)(KilnDevPtr, unsigned char, size_t);
    CUresult (*StreamCreate)(CUstream *, unsigned);
    CUresult (*StreamSynchronize)(CUstream);
    CUresult (*StreamDestroy)(CUstream);
    CUresult (*CtxSynchronize)(void);
    CUresult (*GetErrorString)(CUresult, const char **);
} Driver;

struct KilnCuda {
    void *lib;
    Driver f;
    int dev;
    CUcontext ctx;
    CUstream stream;
    char arch[16];
    char name[256];
};

struct KilnCudaModule {
    KilnCuda *c;
    CUmodule mod;
};

static int cu_fail(KilnCuda *c, CUresult r, const char *what, KilnDiag *d)
{
    const char *s = NULL;
    if (c->f.GetErrorString)
        c->f.GetErrorString(r, &s);
    return kiln_diag_set(d, KILN_EINTERNAL, "CUDA %s failed: %s (%d)", what, s ? s : "unknown error", r);
}
#define CU(call, what)                                                                             \
    do {                                                                                           \
        CUresult r_ = (call);                                                                      \
        if (r_)                                                                                    \
            return cu_fail(c, r_, what, d);                                                        \
    } while (0)

static int load_driver(KilnCuda *c, KilnDiag *d)
{
    const char *env = getenv("KILN_CUDA_DRIVER"); /* tests point it elsewhere */
    c->lib = dlopen(env && *env ? env : "libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!c->lib)
        return kiln_diag_set(d, KILN_ENODEV, "no CUDA driver found (%s)", dlerror());
    static const struct {
        size_t off;
        const char *name;
    } syms[] = {
#define S(field, name) {offsetof(Driver, field), name}
        S(Init, "cuInit"), S(DeviceGetCount, "cuDeviceGetCount"), S(DeviceGet, "cuDeviceGet"),
        S(DeviceGetAttribute, "cuDeviceGetAttribute"), S(DeviceGetName, "cuDeviceGetName"),
        S(PrimaryCtxRetain, "cuDevicePrimaryCtxRetain"), S(PrimaryCtxRelease, "cuDevicePrimaryCtxRelease_v2"),
        S(CtxSetCurrent, "cuCtxSetCurrent"), S(ModuleLoadDataEx, "cuModuleLoadDataEx"),
        S(ModuleGetFunction, "cuModuleGetFunction"), S(ModuleUnload, "cuModuleUnload"),
        S(LaunchKernel, "cuLaunchKernel"), S(MemAlloc, "cuMemAlloc_v2"), S(MemFree, "cuMemFree_v2"),
        S(MemcpyHtoD, "cuMemcpyHtoD_v2"), S(MemcpyDtoH, "cuMemcpyDtoH_v2"), S(MemsetD8, "cuMemsetD8_v2"),
        S(StreamCreate, "cuStreamCreate"), S(StreamSynchronize, "cuStreamSynchronize"),
        S(StreamDestroy, "cuStreamDestroy_v2"), S(CtxSynchronize, "cuCtxSynchronize"),
        S(GetErrorString, "cuGetErrorString"),
#undef S
    };
    for (size_t i = 0; i < sizeof syms / sizeof *syms; i++) {
        void *p = dlsym(c->lib, syms[i].name);
        if (!p)
            return kiln_diag_set(d, KILN_ENODEV, "no CUDA driver found (libcuda.so.1 lacks %s)", syms[i].name);
        memcpy((char *)&c->f + syms[i].off, &p, sizeof p);
    }
    return 0;
}

int kiln_cuda_open(KilnCuda **out, KilnDiag *d)
{
    *out = NULL;
    KilnCuda *c = calloc(1, sizeof *c);
    if (!c)
        return kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
    int rc = load_driver(c, d), n = 0, major = 0, minor = 0;
    CUresult r = 0;
    if (!rc && (r = c->f.Init(0)))
        rc = kiln_diag_set(d, KILN_ENODEV, "no CUDA device (cuInit: error %d)", r);
    if (!rc && (c->f.DeviceGetCount(&n) || n == 0))
        rc = kiln_diag_set(d, KILN_ENODEV, "no CUDA device");
    if (!rc && (r = c->f.DeviceGet(&c->dev, 0)))
        rc = cu_fail(c, r, "cuDeviceGet", d);
    if (!rc && ((r = c->f.DeviceGetAttribute(&major, ATTR_CC_MAJOR, c->dev)) ||
                (r = c->f.DeviceGetAttribute(&minor, ATTR_CC_MINOR, c->dev))))
        rc = cu_fail(c, r, "cuDeviceGetAttribute", d);
    if (!rc && c->f.DeviceGetName(c->name, (int)sizeof c->name, c->dev))
        snprintf(c->name, sizeof c->name, "CUDA device %d", c->dev);
    if (!rc && (r = c->f.PrimaryCtxRetain(&c->ctx, c->dev)))
        rc = cu_fail(c, r, "cuDevicePrimaryCtxRetain", d);
    if (!rc && (r = c->f.CtxSetCurrent(c->ctx)))
        rc = cu_fail(c, r, "cuCtxSetCurrent", d);
    if (rc) {
        kiln_cuda_close(c);
        return rc;
    }
    snprintf(c->arch, sizeof c->arch, "sm_%d%d", major, minor);
    *out = c;
    return 0;
}

void kiln_cuda_close(KilnCuda *c)
{
    if (!c)
        return;
    if (c->stream)
        c->f.StreamDestroy(c->stream);
    if (c->ctx)
        c->f.PrimaryCtxRelease(c->dev);
    if (c->lib)
        dlclose(c->lib);
    free(c);
}

const char *kiln_cuda_arch(const KilnCuda *c) { return c->arch; }
const char *kiln_cuda_device_name(const KilnCuda *c) { return c->name; }

int kiln_cuda_module_load(KilnCuda *c, const void *image, size_t len, KilnCudaModule **out, KilnDiag *d)
{
    *out = NULL;
    /* PTX must be NUL-terminated for the driver; a cubin (ELF) is taken as is */
    char *copy = NULL;
    const void *img = image;
    if (len >= 4 && memcmp(image, "\x7f" "ELF", 4) != 0 && ((const char *)image)[len - 1] != 0) {
        if (!(copy = malloc(len + 1)))
            return kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
        memcpy(copy, image, len);
        copy[len] = 0;
        img = copy;
    }
    KilnCudaModule *m = calloc(1, sizeof *m);
    CUresult r = m ? c->f.ModuleLoadDataEx(&m->mod, img, 0, NULL, NULL) : 0;
    free(copy);
    if (!m)
        return kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
    if (r) {
        free(m);
        return cu_fail(c, r, "cuModuleLoadDataEx", d);
    }
    m->c = c;
    *out = m;
    return 0;
}

void kiln_cuda_module_unload(KilnCudaModule *m)
{
    if (!m)
        return;
    m->c->f.ModuleUnload(m->mod);
    free(m);
}

int kiln_cuda_function(KilnCudaModule *m, const char *name, void **fn, KilnDiag *d)
{
    KilnCuda *c = m->c;
    CU(c->f.ModuleGetFunction((CUfunction *)fn, m->mod, name), name);
    return 0;
}

int kiln_cuda_launch(KilnCuda *c, void *fn, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by,
                     unsigned bz, unsigned smem, void **args, KilnDiag *d)
{
    CU(c->f.LaunchKernel(fn, gx, gy, gz, bx, by, bz, smem, c->stream, args, NULL), "cuLaunchKernel");
    return 0;
}

int kiln_cuda_alloc(KilnCuda *c, size_t bytes, KilnDevPtr *out, KilnDiag *d)
{
    CU(c->f.MemAlloc(out, bytes ? bytes : 1), "cuMemAlloc");
    return 0;
}
void kiln_cuda_free(KilnCuda *c, KilnDevPtr p)
{
    if (p)
        c->f.MemFree(p);
}
int kiln_cuda_upload(KilnCuda *c, KilnDevPtr dst, const void *src, size_t bytes, KilnDiag *d)
{
    CU(c->f.MemcpyHtoD(dst, src, bytes), "cuMemcpyHtoD");
    return 0;
}
int kiln_cuda_download(KilnCuda *c, void *dst, KilnDevPtr src, size_t bytes, KilnDiag *d)
{
    if (c->stream)
        CU(c->f.StreamSynchronize(c->stream), "cuStreamSynchronize");
    CU(c->f.MemcpyDtoH(dst, src, bytes), "cuMemcpyDtoH");
    return 0;
}
int kiln_cuda_memset0(KilnCuda *c, KilnDevPtr dst, size_t bytes, KilnDiag *d)
{
    CU(c->f.MemsetD8(dst, 0, bytes), "cuMemsetD8");
    return 0;
}
int kiln_cuda_stream_new(KilnCuda *c, KilnDiag *d)
{
    if (!c->stream)
        CU(c->f.StreamCreate(&c->stream, 0), "cuStreamCreate");
    return 0;
}
int kiln_cuda_sync(KilnCuda *c, KilnDiag *d)
{
    if (c->stream)
        CU(c->f.StreamSynchronize(c->stream), "cuStreamSynchronize");
    CU(c->f.CtxSynchronize(), "cuCtxSynchronize");
    return 0;
}

/* ------------------------------------------------------------------ running a qgemm module */

typedef struct Run {
    KilnDevPtr x, w, bias, y, scratch;
} Run;

static int launch_all(KilnCuda *c, KilnCudaModule *mod, const KilnGpuLayout *l, const char *sym, Run *b,
                      int64_t M, KilnDiag *d)
{
    long long m = (long long)M;
    void *args[] = {&b->x, &m, &b->w, &b->bias, &b->y, &b->scratch};
    int64_t mp = (M + KILN_GPU_BM - 1) / KILN_GPU_BM * KILN_GPU_BM;
    int64_t gv = (M + kiln_gpu_gemv_rows(l) - 1) / kiln_gpu_gemv_rows(l);
    if (mp > 65535LL * KILN_GPU_BM || M > 0x7fffffff || gv > 65535)
        return kiln_diag_set(d, KILN_EINPUT, "GPU qgemm: M=%lld is more rows than one launch takes", m);
    char name[128];
    void *fn;
    int rc = 0;
    if (!l->weight_only && l->aspec.dynamic) {
        snprintf(name, sizeof name, "%s_range", sym);
        if ((rc = kiln_cuda_function(mod, name, &fn, d)) ||
            (rc = kiln_cuda_launch(c, fn, (unsigned)M, 1, 1, 256, 1, 1, 0, args, d)))
            return rc;
    }
    snprintf(name, sizeof name, "%s_prep", sym);
    if ((rc = kiln_cuda_function(mod, name, &fn, d)) ||
        (rc = kiln_cuda_launch(c, fn, (unsigned)mp, 1, 1, 256, 1, 1, 0, args, d)))
        return rc;
    if (kiln_gpu_use_gemv(l, M)) {
        snprintf(name, sizeof name, "%s_gemv", sym);
        if ((rc = kiln_cuda_function(mod, name, &fn, d)))
            return rc;
        return kiln_cuda_launch(c, fn, (unsigned)kiln_gpu_gemv_blocks_x(l), (unsigned)gv, 1,
                                (unsigned)kiln_gpu_gemv_threads(l), 1, 1, 0, args, d);
    }
    snprintf(name, sizeof name, "%s_gemm", sym);
    if ((rc = kiln_cuda_function(mod, name, &fn, d)))
        return rc;
    return kiln_cuda_launch(c, fn, (unsigned)(l->NP / KILN_GPU_BN), (unsigned)(mp / KILN_GPU_BM), 1, 128, 1, 1, 0,
                            args, d);
}

/* A qgemm module with its weights on the device: prepacked and uploaded once, then run
 * on any number of activations (x, y and scratch buffers grow to the largest M seen). */
struct KilnCudaLayer {
    KilnGpuLayout l;
    KilnCudaModule *mod;
    char sym[64];
    Run b;
    int64_t cap_m; /* rows the x, y and scratch buffers hold */
};

void kiln_cuda_layer_free(KilnCuda *c, KilnCudaLayer *L)
{
    if (!L)
        return;
    kiln_cuda_free(c, L->b.x);
    kiln_cuda_free(c, L->b.w);
    kiln_cuda_free(c, L->b.bias);
    kiln_cuda_free(c, L->b.y);
    kiln_cuda_free(c, L->b.scratch);
    kiln_cuda_module_unload(L->mod);
    free(L);
}

int kiln_cuda_layer_new(KilnCuda *c, const KilnFunc *f, const char *sym, const void *image,
                        size_t len, const KilnTensor *wq, const float *bias, KilnCudaLayer **out,
                        KilnDiag *d)
{
    *out = NULL;
    KilnCudaLayer *L = calloc(1, sizeof *L);
    if (!L)
        return kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
    snprintf(L->sym, sizeof L->sym, "%s", sym);
    int rc = kiln_gpu_layout_for(kiln_find_qgemm(f), f, &L->l, d);
    if (!rc && L->l.has_bias != (bias != NULL))
        rc = kiln_diag_set(d, KILN_EINPUT, "GPU qgemm '%s': bias %s", f->name,
                           L->l.has_bias ? "missing" : "given to a qgemm without one");
    void *blob = rc ? NULL : malloc(L->l.pack_bytes);
    if (!rc && !blob)
        rc = kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
    if (!rc)
        rc = kiln_gpu_prepack(&L->l, wq, blob, d);
    if (!rc)
        rc = kiln_cuda_module_load(c, image, len, &L->mod, d);
    if (!rc && !(rc = kiln_cuda_alloc(c, L->l.pack_bytes, &L->b.w, d)))
        rc = kiln_cuda_upload(c, L->b.w, blob, L->l.pack_bytes, d);
    if (!rc && bias && !(rc = kiln_cuda_alloc(c, (size_t)L->l.N * 4, &L->b.bias, d)))
        rc = kiln_cuda_upload(c, L->b.bias, bias, (size_t)L->l.N * 4, d);
    free(blob);
    if (rc) {
        kiln_cuda_layer_free(c, L);
        return rc;
    }
    *out = L;
    return 0;
}

/* x, y and scratch for M rows (grown, never shrunk). */
static int reserve_rows(KilnCuda *c, KilnCudaLayer *L, int64_t M, KilnDiag *d)
{
    if (M <= L->cap_m)
        return 0;
    kiln_cuda_free(c, L->b.x);
    kiln_cuda_free(c, L->b.y);
    kiln_cuda_free(c, L->b.scratch);
    L->b.x = L->b.y = L->b.scratch = 0;
    L->cap_m = 0;
    const KilnGpuLayout *l = &L->l;
    size_t ysz = (size_t)M * (size_t)l->N * (size_t)(l->out_dt == KILN_F32 ? 4 : 2);
    size_t xsz = (size_t)M * (size_t)l->K * 4;
    int rc = kiln_cuda_alloc(c, xsz, &L->b.x, d);
    if (!rc)
        rc = kiln_cuda_alloc(c, ysz, &L->b.y, d);
    if (!rc)
        rc = kiln_cuda_alloc(c, kiln_gpu_scratch_bytes(l, M), &L->b.scratch, d);
    if (!rc)
        L->cap_m = M;
    return rc;
}

int kiln_cuda_layer_run(KilnCuda *c, KilnCudaLayer *L, const float *x, int64_t M, void *y_host,
                        KilnDiag *d)
{
    if (M <= 0)
        return 0;
    const KilnGpuLayout *l = &L->l;
    size_t ysz = (size_t)M * (size_t)l->N * (size_t)(l->out_dt == KILN_F32 ? 4 : 2);
    size_t xsz = (size_t)M * (size_t)l->K * 4, ssz = kiln_gpu_scratch_bytes(l, M);
    int rc = reserve_rows(c, L, M, d);
    if (!rc)
        rc = kiln_cuda_upload(c, L->b.x, x, xsz, d);
    if (!rc)
        rc = kiln_cuda_memset0(c, L->b.scratch, ssz, d);
    if (!rc)
        rc = launch_all(c, L->mod, l, L->sym, &L->b, M, d);
    if (!rc)
        rc = kiln_cuda_sync(c, d);
    if (!rc)
        rc = kiln_cuda_download(c, y_host, L->b.y, ysz, d);
    return rc;
}

int kiln_cuda_layer_time(KilnCuda *c, KilnCudaLayer *L, const float *x, int64_t M, int iters,
                         double *ms_per_call, KilnDiag *d)
{
    *ms_per_call = 0;
    const KilnGpuLayout *l = &L->l;
    int rc = M > 0 && iters > 0 ? reserve_rows(c, L, M, d)
                                : kiln_diag_set(d, KILN_EINPUT, "layer timing needs M > 0 and iters > 0");
    if (!rc)
        rc = kiln_cuda_upload(c, L->b.x, x, (size_t)M * (size_t)l->K * 4, d);
    if (!rc)
        rc = kiln_cuda_memset0(c, L->b.scratch, kiln_gpu_scratch_bytes(l, M), d);
    for (int w = 0; !rc && w < 3; w++) /* warm-up: module load, clocks */
        rc = launch_all(c, L->mod, l, L->sym, &L->b, M, d);
    if (!rc)
        rc = kiln_cuda_sync(c, d);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int i = 0; !rc && i < iters; i++)
        rc = launch_all(c, L->mod, l, L->sym, &L->b, M, d);
    if (!rc)
        rc = kiln_cuda_sync(c, d);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    if (!rc)
        *ms_per_call = ((double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) * 1e-6) / iters;
    return rc;
}

const char *kiln_cuda_layer_layout(const KilnCudaLayer *L) { return L->l.name; }
size_t kiln_cuda_layer_weight_bytes(const KilnCudaLayer *L) { return L->l.pack_bytes; }

int kiln_cuda_qgemm_run_sym(KilnCuda *c, const KilnFunc *f, const char *sym, const void *image, size_t len,
                            const float *x, int64_t M, const KilnTensor *wq, const float *bias, void *y_host,
                            KilnDiag *d)
{
    KilnCudaLayer *L = NULL;
    int rc = kiln_cuda_layer_new(c, f, sym, image, len, wq, bias, &L, d);
    if (!rc)
        rc = kiln_cuda_layer_run(c, L, x, M, y_host, d);
    kiln_cuda_layer_free(c, L);
    return rc;
}

int kiln_cuda_qgemm_run(KilnCuda *c, const KilnFunc *f, const char *image, size_t len, const float *x, int64_t M,
                        const KilnTensor *wq, const float *bias, void *y_host, KilnDiag *d)
{
    return kiln_cuda_qgemm_run_sym(c, f, KILN_CUDA_SYMBOL, image, len, x, M, wq, bias, y_host, d);
}
