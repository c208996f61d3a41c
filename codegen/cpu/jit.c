/* codegen/cpu/jit.c — an ORC LLJIT that loads the kernel objects emit.c makes
 * (the same bytes the cache and AOT libraries hold) and resolves libm and other
 * process symbols for epilogues. */
#include <stdlib.h>
#include <string.h>

#include <llvm-c/Core.h>
#include <llvm-c/LLJIT.h>
#include <llvm-c/Orc.h>
#include <llvm-c/Target.h>

#include "codegen/cpu/gen.h"

struct KilnCpuJit {
    LLVMOrcLLJITRef jit;
};

static int take_error(LLVMErrorRef e, const char *what, KilnDiag *d)
{
    char *m = LLVMGetErrorMessage(e);
    kiln_diag_set(d, KILN_EINTERNAL, "JIT %s: %s", what, m);
    LLVMDisposeErrorMessage(m);
    return KILN_EINTERNAL;
}

int kiln_cpu_jit_new(KilnCpuJit **out, KilnDiag *d)
{
    *out = NULL;
    kiln_cpu_init_llvm();
    KilnCpuJit *j = calloc(1, sizeof *j);
    if (!j)
        return kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
    LLVMErrorRef e = LLVMOrcCreateLLJIT(&j->jit, NULL);
    if (e) {
        free(j);
        return take_error(e, "create", d);
    }
    LLVMOrcDefinitionGeneratorRef gen;
    e = LLVMOrcCreateDynamicLibrarySearchGeneratorForProcess(&gen, LLVMOrcLLJITGetGlobalPrefix(j->jit),
                                                             NULL, NULL);
    if (e) {
        kiln_cpu_jit_free(j);
        return take_error(e, "process symbols", d);
    }
    LLVMOrcJITDylibAddGenerator(LLVMOrcLLJITGetMainJITDylib(j->jit), gen);
    *out = j;
    return 0;
}

int kiln_cpu_jit_add_object(KilnCpuJit *j, const void *obj, size_t len, KilnDiag *d)
{
    if (!j || !obj || len == 0)
        return kiln_diag_set(d, KILN_EINPUT, "JIT: empty object");
    LLVMMemoryBufferRef mb = LLVMCreateMemoryBufferWithMemoryRangeCopy(obj, len, "kiln-kernel");
    LLVMErrorRef e = LLVMOrcLLJITAddObjectFile(j->jit, LLVMOrcLLJITGetMainJITDylib(j->jit), mb);
    return e ? take_error(e, "add object", d) : 0;
}

int kiln_cpu_jit_lookup(KilnCpuJit *j, const char *symbol, void **fn, KilnDiag *d)
{
    *fn = NULL;
    LLVMOrcExecutorAddress addr = 0;
    LLVMErrorRef e = LLVMOrcLLJITLookup(j->jit, &addr, symbol);
    if (e)
        return take_error(e, "lookup", d);
    *fn = (void *)(uintptr_t)addr;
    return 0;
}

void kiln_cpu_jit_free(KilnCpuJit *j)
{
    if (!j)
        return;
    if (j->jit) {
        LLVMErrorRef e = LLVMOrcDisposeLLJIT(j->jit);
        if (e)
            LLVMConsumeError(e);
    }
    free(j);
}
