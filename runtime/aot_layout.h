/* runtime/aot_layout.h — the prepack layout of an AOT kernel, rebuilt from its manifest
 * entry without LLVM, so a program can quantize (kiln_quantize_matrix) and prepack
 * (kiln_prepack) weights for libkiln_kernels.so with libkiln_rt alone. */
#ifndef KILN_RUNTIME_AOT_LAYOUT_H
#define KILN_RUNTIME_AOT_LAYOUT_H

#include "ir/layout.h"
#include "runtime/runtime.h"

/* Fills *out for kernel kernel_index of a (kiln_layout_make on the manifest's isa,
 * weight spec, act spec or act_dtype, bias, epilogue and out_dtype) and checks that
 * the result agrees with what the manifest states (layout name, nr, kr, pack_bytes,
 * scratch_per_row, scratch_fixed): a disagreement means the manifest was written by
 * a kiln whose layouts differ from this runtime's, which would pack wrong weights.
 * The weight tensor to pass to kiln_prepack has type
 * kiln_type2(out->wdt, N, K) with .q = out->wspec. KILN_EINPUT with a message naming
 * the kernel and field on any missing or bad field. */
int kiln_aot_layout(const KilnAot *a, int kernel_index, KilnLayout *out, KilnDiag *d);

#endif
