/* tools/aot.h — what tools/cmd_aot.c (CPU libraries) and tools/aot_gpu.c (PTX/cubin for
 * sm_XX targets) share: the manifest's spec writer and the GPU kernel builder. */
#ifndef KILN_TOOLS_AOT_H
#define KILN_TOOLS_AOT_H

#include "codegen/ptx/ptx.h"
#include "ir/layout_gpu.h"
#include "runtime/runtime.h"

/* A quantization spec as the manifest fields runtime/aot_layout.c reads back. */
void tool_aot_jw_spec(KilnJsonWriter *w, const KilnQuantSpec *q, KilnDType storage, bool act,
                      bool calibrated);

/* What a kernel computes, CPU or GPU alike: the manifest's weight, act, act_dtype,
 * epilogue (0 none, 1 silu, 2 gelu), bias and out_dtype fields. */
typedef struct AotOperands {
    KilnQuantSpec wspec;
    KilnDType wdt;
    bool weight_only;
    KilnQuantSpec aspec;
    KilnDType adt, act_dtype;
    int epilogue;
    bool has_bias;
    KilnDType out_dt;
    bool calibrated; /* the static activation scale came from kiln aot's calibration */
} AotOperands;

void tool_aot_jw_operands(KilnJsonWriter *w, const AotOperands *o);

typedef struct AotGpuKernel {
    KilnGpuLayout lay;
    char launch[KILN_PTX_MAX_KERNELS][96]; /* kernel names in launch order */
    int nlaunch;
    size_t ptx_bytes, cubin_bytes;
} AotGpuKernel;

/* The kernel of f's qgemm (after the passes) for arch: its canonical kernel IR, symbol
 * kiln_qgemm_<16 hex of the key's SHA-256>, and NVRTC's PTX + cubin written to
 * DIR/<symbol>.{kir,ptx,cubin} — unless the symbol is one of known[0..nknown) (a kernel
 * already built: *is_new false, nothing compiled). */
int tool_aot_gpu_kernel(const KilnFunc *f, const char *arch, const char *dir,
                        const char *const *known, int nknown, char symbol[64], bool *is_new,
                        AotGpuKernel *k, KilnDiag *d);
/* The GPU-only fields of a kernels[] entry. */
void tool_aot_gpu_json(KilnJsonWriter *w, const AotGpuKernel *k, const char *symbol,
                       bool calibrated);

#endif
