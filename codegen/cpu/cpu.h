/* codegen/cpu/cpu.h — the x86-64 code generator: kernel IR (one qgemm) -> LLVM IR
 * through the LLVM C API -> ELF object / assembly, and an ORC LLJIT that loads
 * those objects. The same object bytes go to the JIT, the on-disk cache and AOT
 * libraries. docs/jit-aot.md ("Code generation") describes the kernels. */
#ifndef KILN_CODEGEN_CPU_H
#define KILN_CODEGEN_CPU_H

#include <stddef.h>
#include <stdint.h>

#include "ir/ir.h"
#include "ir/layout.h"

/* Revision of the generated code and the blob layout it reads (ir/layout.h). Part
 * of the kernel cache key (api/compile.c): bump it whenever kernels or kiln_prepack
 * change, so a cache filled by an older kiln is never served to a newer one. */
#define KILN_CPU_CODEGEN_REV 30

/* Targets (function attr `target`): "avx2" (x86-64-v3: +avx2,+fma,+f16c),
 * "avx512vnni" (x86-64-v4 +avx512vnni), "avx512" (x86-64-v4 +avx512vnni +avx512bf16),
 * "amx", "cpu" (the host). */

/* ELF object (malloc'd, *len bytes) with one exported function `symbol` of the
 * KilnQGemmFn ABI for the single qgemm of kernel_ir. The object may reference
 * libm (expf, erff) for silu/gelu epilogues. */
int kiln_cpu_emit_object(const KilnFunc *kernel_ir, const char *symbol, void **obj, size_t *len,
                         KilnDiag *d);
/* The same kernel as assembly text (malloc'd), for tests checking instructions. */
int kiln_cpu_emit_asm(const KilnFunc *kernel_ir, const char *symbol, char **asm_text,
                      KilnDiag *d);
/* The optimized LLVM IR text (malloc'd), for debugging (`kiln ir --llvm`). */
int kiln_cpu_emit_llvm_ir(const KilnFunc *kernel_ir, const char *symbol, char **ir_text,
                          KilnDiag *d);

typedef struct KilnCpuJit KilnCpuJit;
/* An LLJIT that also resolves symbols of the current process (libm for epilogues). */
int kiln_cpu_jit_new(KilnCpuJit **j, KilnDiag *d);
int kiln_cpu_jit_add_object(KilnCpuJit *j, const void *obj, size_t len, KilnDiag *d);
int kiln_cpu_jit_lookup(KilnCpuJit *j, const char *symbol, void **fn, KilnDiag *d);
void kiln_cpu_jit_free(KilnCpuJit *j);

const char *kiln_cpu_llvm_version(void); /* "16.0.6" */

#endif
