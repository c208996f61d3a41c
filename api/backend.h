/* api/backend.h — the backend interface, in the spirit of ggml's backend struct: what the
 * API asks of a place that runs kernels. A layer there is a kernel (compiled from the
 * planned kernel IR through the kernel cache under the one kernel key, then loaded),
 * weights (quantized and prepacked for that kernel, and uploaded where it runs: once per
 * layer, not per call), and runs of x[M,K] -> y[M,N]. Implementations: the CPU JIT and
 * the CPU AOT library (backend_cpu.c: the same weights and runs, kernels compiled by
 * LLVM or looked up in a `kiln aot` library) and CUDA through the driver API
 * (backend_cuda.c). A program that links no LLVM uses the runtime's kiln_aot_* with the
 * same prepack (ir/layout.h) and run (kiln_rt_qgemm_layout) directly. */
#ifndef KILN_API_BACKEND_H
#define KILN_API_BACKEND_H

#include <stdbool.h>

#include "ir/target.h"
#include "kiln.h"

typedef struct KilnBackend KilnBackend;
struct KilnWeightRows; /* api/plan.h */

typedef struct KilnBackendOps {
    const char *name; /* "cpu-jit", "cuda" */
    /* The planned layer's kernel (its qgemm after the passes and calibration), compiled
     * or fetched from the cache, and loaded. */
    int (*kernel)(KilnBackend *b, const KilnFunc *planned, void **k, KilnDiag *d);
    void (*kernel_free)(KilnBackend *b, void *k);
    const char *(*kernel_layout)(const void *k); /* the layout name */
    /* The layer's weights (desc->weight, bias, stored grid) quantized as the plan says,
     * prepacked for k and placed where k runs. */
    int (*weights)(KilnBackend *b, void *k, const KilnFunc *planned, const kiln_layer_desc *desc,
                   void **w, KilnDiag *d);
    /* The same from weights read a chunk of rows at a time (api/plan.h, KilnWeightRows;
     * desc->weight NULL), or NULL: the API reads them whole and calls weights. */
    int (*weights_rows)(KilnBackend *b, void *k, const KilnFunc *planned,
                        const kiln_layer_desc *desc, const struct KilnWeightRows *rows, void **w,
                        KilnDiag *d);
    void (*weights_free)(KilnBackend *b, void *w);
    size_t (*weight_bytes)(const void *w); /* the prepacked blob */
    int (*run)(KilnBackend *b, void *k, void *w, const float *x, int64_t M, void *y, KilnDiag *d);
    void (*close)(KilnBackend *b);
} KilnBackendOps;

struct KilnBackend {
    const KilnBackendOps *ops;
    KilnTarget target; /* what it plans for: a CPU level with its traits, or the device's arch */
    bool verbose;
};

/* The backend for the target named `name` (aliases included): the CPU JIT for CPU
 * targets (a kernel cache in cache_dir, NULL: $KILN_CACHE_DIR or ~/.cache/kiln; a pool
 * of `threads` threads, 0: the default; KILN_ENODEV when this CPU cannot run the level),
 * CUDA for sm_XX and cuda (module images cached in the same cache_dir; the driver
 * opened now: KILN_ENODEV "no CUDA driver found" without one; `cuda` becomes the
 * device's arch; an sm_XX newer than the device is refused). The resolved target is
 * b->target. */
int kiln_backend_open(const char *name, const char *cache_dir, int threads, bool verbose,
                      KilnBackend **out, KilnDiag *d);

int kiln_backend_cpu_open(const KilnTarget *t, const char *cache_dir, int threads, bool verbose,
                          KilnBackend **out, KilnDiag *d);
/* The CPU backend's thread pool (NULL for another backend), so that a model's own ops
 * (attention, norms) run on the threads its kernels run on instead of a second pool. */
struct KilnPool *kiln_backend_cpu_pool(KilnBackend *b);

/* All of a layer's rows read through rows (api/plan.h) into one malloc'd [N, K] matrix,
 * for a backend or a layer that takes the weights whole; NULL with d set on failure. */
float *kiln_weight_rows_whole(const struct KilnWeightRows *rows, const kiln_layer_desc *desc,
                              KilnDiag *d);
int kiln_backend_cuda_open(const KilnTarget *t, bool device_arch, const char *cache_dir,
                           bool verbose, KilnBackend **out,
                           KilnDiag *d);
/* The CPU backend over an AOT library (`kiln aot` output in dir): its kernels are looked
 * up by the symbol of the planned kernel's key, nothing is compiled; the target is the
 * library's. */
int kiln_backend_aot_open(const char *dir, int threads, bool verbose, KilnBackend **out,
                          KilnDiag *d);

#endif
