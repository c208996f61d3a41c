/* api/compile.h — from kernel IR to a callable CPU kernel through the on-disk cache:
 * the one path that the public API, `kiln run` and `kiln aot` share. */
#ifndef KILN_API_COMPILE_H
#define KILN_API_COMPILE_H

#include <stdbool.h>

#include "codegen/cpu/cpu.h"
#include "ir/ir.h"
#include "ir/layout.h"
#include "runtime/runtime.h"

/* The kernel of one qgemm, independent of the layer it came from: parameter x with
 * M = 1 (M is a run-time argument), the weight named "w", its quantize + prepack, the
 * optional bias "b", the qgemm with all its attributes, return. Its printed text is
 * the cache key's core and what the code generator compiles. A qgemm with `outliers`
 * gives its int8 part alone (no bias, epilogue or outliers; f32 out): the caller zeroes
 * the outlier columns of x and runs the rest (ir/outliers.h). */
int kiln_kernel_canon(const KilnFunc *f, KilnModule *m, KilnFunc **out, KilnDiag *d);

/* The one kernel key: the material caches and AOT libraries file a kernel under
 * ("kiln <version>\n<gen>\n" + the canonical module's text; gen names the code
 * generator and ABI, e.g. "llvm 16.0.6\nabi qgemm-1\ncodegen 7" or "nvrtc 13.0\nabi
 * ptx-1"), malloc'd with its length, and the symbol derived from it (kiln_qgemm_ + 16
 * hex digits of its SHA-256). NULL when out of memory. */
char *kiln_kernel_key(const KilnModule *canon, const char *gen, size_t *len, char symbol[64]);
/* gen for the CPU code generator (LLVM's version, the ABI, KILN_CPU_CODEGEN_REV). */
const char *kiln_cpu_key_gen(void);

typedef struct KilnCompiler KilnCompiler;

typedef struct KilnCompiled {
    KilnQGemmFn fn;
    KilnLayout layout;
    char symbol[64];   /* kiln_qgemm_<16 hex digits of the key's SHA-256> */
    bool cache_hit;
    double compile_ms; /* miss: IR -> object -> JIT; hit: cache read -> JIT */
} KilnCompiled;

/* cache_dir NULL: $KILN_CACHE_DIR or ~/.cache/kiln. */
int kiln_compiler_new(const char *cache_dir, KilnCompiler **out, KilnDiag *d);
void kiln_compiler_free(KilnCompiler *c);
/* Compile (or fetch) the kernel for the qgemm of f (after the pass pipeline). */
int kiln_compile_qgemm(KilnCompiler *c, const KilnFunc *f, KilnCompiled *out, KilnDiag *d);
/* The object file for f's kernel (for AOT) and its symbol, through the same cache. */
int kiln_compile_object(KilnCompiler *c, const KilnFunc *f, void **obj, size_t *len,
                        char symbol[64], bool *hit, KilnDiag *d);

/* Give a qgemm's static activation spec that has no scale yet (scale 0) the scale and
 * zero point of n calibration values (the spec's calibration rule; rows of K values,
 * a qgemm's `outliers` columns left out). Returns 1 when it set one, 0 when nothing
 * needed it, -1 when out of memory. */
int kiln_calibrate_static(KilnFunc *f, const float *x, int64_t n);

#endif
