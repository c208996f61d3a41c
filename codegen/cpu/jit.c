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
#include "ir/amx_model.h"

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

/* The scalar tile model (ir/amx_model.h) that `tiles = "model"` kernels call, by
 * address: the process search finds only exported symbols, and kiln's libraries are
 * linked statically into its programs. */
static LLVMErrorRef define_amx_model(KilnCpuJit *j)
{
    static const struct {
        const char *name;
        void *fn;
    } syms[] = {{"kiln_amx_tilezero", (void *)kiln_amx_tilezero},
                {"kiln_amx_tileloadd", (void *)kiln_amx_tileloadd},
                {"kiln_amx_tilestored", (void *)kiln_amx_tilestored},
                {"kiln_amx_tdpbusd", (void *)kiln_amx_tdpbusd},
                {"kiln_amx_tdpbssd", (void *)kiln_amx_tdpbssd},
                {"kiln_amx_tdpbsud", (void *)kiln_amx_tdpbsud},
                {"kiln_amx_tdpbuud", (void *)kiln_amx_tdpbuud},
                {"kiln_amx_tdpbf16ps", (void *)kiln_amx_tdpbf16ps}};
    enum { N = sizeof syms / sizeof syms[0] };
    LLVMOrcCSymbolMapPair pairs[N];
    for (int i = 0; i < N; i++) {
        pairs[i].Name = LLVMOrcLLJITMangleAndIntern(j->jit, syms[i].name);
        pairs[i].Sym.Address = (LLVMOrcExecutorAddress)(uintptr_t)syms[i].fn;
        pairs[i].Sym.Flags.GenericFlags = LLVMJITSymbolGenericFlagsExported | LLVMJITSymbolGenericFlagsCallable;
        pairs[i].Sym.Flags.TargetFlags = 0;
    }
    LLVMOrcMaterializationUnitRef mu = LLVMOrcAbsoluteSymbols(pairs, N);
    return LLVMOrcJITDylibDefine(LLVMOrcLLJITGetMainJITDylib(j->jit), mu);
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
    e = define_amx_model(j);
    if (e) {
        kiln_cpu_jit_free(j);
        return take_error(e, "tile model symbols", d);
    }
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
