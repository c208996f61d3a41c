/* runtime/cuda.h — the CUDA driver API through dlopen("libcuda.so.1"): device, context,
 * modules (PTX or cubin), launches, buffers, streams, and running a compiled kiln qgemm
 * module on host data. No CUDA header, no NVRTC, no LLVM, no Lua: an AOT user can link
 * it alone. docs/gpu.md ("Running on a GPU") describes the kernel ABI it launches. */
#ifndef KILN_CUDA_H
#define KILN_CUDA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ir/ir.h"

typedef struct KilnCuda KilnCuda;
typedef struct KilnCudaModule KilnCudaModule;
typedef uint64_t KilnDevPtr; /* CUdeviceptr */

/* Loads libcuda.so.1, cuInit, device 0, its primary context. No driver:
 * KILN_ENODEV "no CUDA driver found"; no device: KILN_ENODEV "no CUDA device". */
int kiln_cuda_open(KilnCuda **out, KilnDiag *d);
void kiln_cuda_close(KilnCuda *c);
/* "sm_90" etc. (the device's compute capability). */
const char *kiln_cuda_arch(const KilnCuda *c);
/* The device name ("NVIDIA H100 ..."). */
const char *kiln_cuda_device_name(const KilnCuda *c);

/* image: PTX text (NUL-terminated; len may count the NUL or not) or a cubin. */
int kiln_cuda_module_load(KilnCuda *c, const void *image, size_t len, KilnCudaModule **out,
                          KilnDiag *d);
void kiln_cuda_module_unload(KilnCudaModule *m);
/* The function handle (CUfunction) of a kernel of the module. */
int kiln_cuda_function(KilnCudaModule *m, const char *name, void **fn, KilnDiag *d);
/* cuLaunchKernel on the context's stream (NULL: the default stream). */
int kiln_cuda_launch(KilnCuda *c, void *fn, unsigned gx, unsigned gy, unsigned gz, unsigned bx,
                     unsigned by, unsigned bz, unsigned smem, void **args, KilnDiag *d);

int kiln_cuda_alloc(KilnCuda *c, size_t bytes, KilnDevPtr *out, KilnDiag *d);
void kiln_cuda_free(KilnCuda *c, KilnDevPtr p);
int kiln_cuda_upload(KilnCuda *c, KilnDevPtr dst, const void *src, size_t bytes, KilnDiag *d);
int kiln_cuda_download(KilnCuda *c, void *dst, KilnDevPtr src, size_t bytes, KilnDiag *d);
int kiln_cuda_memset0(KilnCuda *c, KilnDevPtr dst, size_t bytes, KilnDiag *d);
/* A stream owned by c used for every launch and copy from now on. */
int kiln_cuda_stream_new(KilnCuda *c, KilnDiag *d);
int kiln_cuda_sync(KilnCuda *c, KilnDiag *d);

/* A qgemm module compiled from kernel_ir (kiln_ptx_emit with symbol `sym`; image: PTX
 * or cubin) loaded with its weights on the device: wq prepacked (kiln_gpu_prepack) and
 * uploaded with the bias once. kiln_cuda_layer_run uploads x[M,K], launches the kernels
 * (range, prep, then gemv when kiln_gpu_use_gemv, else gemm) and
 * downloads y[M,N] (the qgemm's output dtype); its device buffers for x, y and scratch
 * grow to the largest M it has seen. */
typedef struct KilnCudaLayer KilnCudaLayer;
int kiln_cuda_layer_new(KilnCuda *c, const KilnFunc *kernel_ir, const char *sym, const void *image,
                        size_t len, const KilnTensor *wq, const float *bias, KilnCudaLayer **out,
                        KilnDiag *d);
int kiln_cuda_layer_run(KilnCuda *c, KilnCudaLayer *L, const float *x, int64_t M, void *y_host,
                        KilnDiag *d);
void kiln_cuda_layer_free(KilnCuda *c, KilnCudaLayer *L);
/* Kernel time of one call: x uploaded once, 3 warm-up calls, then `iters` back-to-back
 * launches of the layer's kernels (range, prep, gemv|gemm) on the stream, one sync,
 * wall-clock / iters (bench/gpu: no host copies in it). */
int kiln_cuda_layer_time(KilnCuda *c, KilnCudaLayer *L, const float *x, int64_t M, int iters,
                         double *ms_per_call, KilnDiag *d);
const char *kiln_cuda_layer_layout(const KilnCudaLayer *L);
size_t kiln_cuda_layer_weight_bytes(const KilnCudaLayer *L);

/* One call of a layer (kiln_cuda_layer_new, _run, _free) for the qgemm module compiled
 * from kernel_ir (kiln_ptx_emit with symbol `symbol`): prepacks wq (kiln_gpu_prepack),
 * uploads x[M,K], weights and bias, launches the kernels
 * (range, prep, then gemv when kiln_gpu_use_gemv, else gemm), downloads
 * y[M,N] (the qgemm's output dtype) into y_host. image: PTX or cubin. */
int kiln_cuda_qgemm_run_sym(KilnCuda *c, const KilnFunc *kernel_ir, const char *symbol,
                            const void *image, size_t len, const float *x, int64_t M,
                            const KilnTensor *wq, const float *bias, void *y_host, KilnDiag *d);
/* Same with the default symbol KILN_CUDA_SYMBOL. */
#define KILN_CUDA_SYMBOL "kiln_qgemm"
int kiln_cuda_qgemm_run(KilnCuda *c, const KilnFunc *kernel_ir, const char *ptx_or_cubin,
                        size_t len, const float *x, int64_t M, const KilnTensor *wq,
                        const float *bias, void *y_host, KilnDiag *d);

#endif
