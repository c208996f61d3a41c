/* codegen/ptx/ptx.h — kiln's NVIDIA GPU backend: kernel IR (a qgemm) -> CUDA C source
 * -> NVRTC (loaded with dlopen at run time, no CUDA headers at build time) -> PTX and
 * cubin (api/backend_cuda.c loads and runs them through the driver). docs/gpu.md describes the kernel
 * families, the instructions per arch, the layouts and the kernel ABI. */
#ifndef KILN_PTX_H
#define KILN_PTX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ir/ir.h"

/* Kernels of one module, all with the ABI
 *   extern "C" __global__ void SYMBOL_<kind>(const float *x, long long M, const uint8_t *wpack,
 *                                            const float *bias, void *y, uint8_t *scratch);
 * kinds: "range" (dynamic activations only), "prep", "gemv", "gemm" (not for f32-fma). */
#define KILN_PTX_MAX_KERNELS 4

/* CUDA C source of the module for kernel_ir's (first) qgemm. arch: sm_80|sm_89|sm_90|sm_90a|sm_100
 * (NULL: the function's `target`). symbol: the kernels' name prefix ([A-Za-z_][A-Za-z0-9_]*).
 * *cuda_src is malloc'd. */
int kiln_ptx_source(const KilnFunc *kernel_ir, const char *arch, const char *symbol,
                    char **cuda_src, KilnDiag *d);

/* Compile with NVRTC for arch: PTX text (NUL-terminated), the cubin and ptxas's -v log
 * (registers, spills; may be empty). Any output pointer may be NULL when not wanted;
 * what is returned is malloc'd. No NVRTC: KILN_ENODEV "NVRTC not found (install the
 * CUDA toolkit or set KILN_NVRTC)". A compile error: KILN_EINTERNAL with NVRTC's log. */
int kiln_ptx_emit(const KilnFunc *kernel_ir, const char *arch, const char *symbol, char **ptx,
                  void **cubin, size_t *cubin_len, char **ptxas_log, KilnDiag *d);

/* Compile CUDA C source (used by kiln_ptx_emit; exposed for tests). */
int kiln_nvrtc_compile(const char *cuda_src, const char *arch, char **ptx, void **cubin,
                       size_t *cubin_len, char **log, KilnDiag *d);

/* "13.0", or NULL (and d filled) when NVRTC cannot be loaded. Where it is searched:
 * $KILN_NVRTC when set (only there), else /usr/local/cuda/lib64, else the loader path. */
const char *kiln_nvrtc_version(KilnDiag *d);

/* Names of the kernels of the module for kernel_ir ("<symbol>_prep", ...), in launch
 * order; returns how many (0 and d filled on error). */
int kiln_ptx_kernel_names(const KilnFunc *kernel_ir, const char *symbol,
                          char names[KILN_PTX_MAX_KERNELS][96], KilnDiag *d);

#endif
