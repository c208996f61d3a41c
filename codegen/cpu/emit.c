/* codegen/cpu/emit.c — kernel IR -> LLVM module -> optimized -> ELF object or
 * assembly for the function's target (avx2 = x86-64-v3, avx512vnni = x86-64-v4 + VNNI,
 * avx512 = x86-64-v4 + VNNI + BF16, amx = avx512 + AMX-TILE/INT8/BF16, cpu = the host),
 * position-independent so the same bytes serve the JIT, the cache and AOT shared
 * libraries. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <llvm-c/Analysis.h>
#include <llvm-c/Target.h>
#include <llvm-c/TargetMachine.h>
#include <llvm-c/Transforms/PassBuilder.h>

#include "codegen/cpu/gen.h"

static pthread_once_t init_once = PTHREAD_ONCE_INIT;
static void init_llvm(void)
{
    LLVMInitializeX86TargetInfo();
    LLVMInitializeX86Target();
    LLVMInitializeX86TargetMC();
    LLVMInitializeX86AsmPrinter();
    LLVMInitializeX86AsmParser();
}
void kiln_cpu_init_llvm(void) { pthread_once(&init_once, init_llvm); }

const char *kiln_cpu_llvm_version(void)
{
    static char buf[32];
    unsigned a, b, c;
    LLVMGetVersion(&a, &b, &c);
    snprintf(buf, sizeof buf, "%u.%u.%u", a, b, c);
    return buf;
}

typedef struct Machine {
    LLVMTargetMachineRef tm;
    char *cpu, *features; /* malloc'd */
} Machine;

static int make_machine(const char *isa_attr, const char *isa, Machine *mc, KilnDiag *d)
{
    kiln_cpu_init_llvm();
    const char *triple = "x86_64-unknown-linux-gnu";
    if (strcmp(isa_attr, "cpu") == 0) {
        mc->cpu = LLVMGetHostCPUName();
        mc->features = LLVMGetHostCPUFeatures();
    } else if (strcmp(isa, "amx") == 0) {
        mc->cpu = strdup("x86-64-v4");
        mc->features = strdup("+avx512vnni,+avx512bf16,+amx-tile,+amx-int8,+amx-bf16");
    } else if (strcmp(isa, "avx512") == 0) {
        mc->cpu = strdup("x86-64-v4");
        mc->features = strdup("+avx512vnni,+avx512bf16");
    } else if (strcmp(isa, "avx512vnni") == 0) {
        mc->cpu = strdup("x86-64-v4");
        mc->features = strdup("+avx512vnni");
    } else {
        mc->cpu = strdup("x86-64-v3");
        mc->features = strdup("+avx2,+fma,+f16c");
    }
    LLVMTargetRef target;
    char *err = NULL;
    if (LLVMGetTargetFromTriple(triple, &target, &err)) {
        kiln_diag_set(d, KILN_EINTERNAL, "LLVM: no x86-64 target: %s", err ? err : "?");
        LLVMDisposeMessage(err);
        return KILN_EINTERNAL;
    }
    mc->tm = LLVMCreateTargetMachine(target, triple, mc->cpu, mc->features,
                                     LLVMCodeGenLevelAggressive, LLVMRelocPIC, LLVMCodeModelDefault);
    if (!mc->tm)
        return kiln_diag_set(d, KILN_EINTERNAL, "LLVM: cannot create a target machine for %s", mc->cpu);
    return 0;
}

static void free_machine(Machine *mc)
{
    if (mc->tm)
        LLVMDisposeTargetMachine(mc->tm);
    LLVMDisposeMessage(mc->cpu);
    LLVMDisposeMessage(mc->features);
}

typedef struct Built {
    LLVMContextRef c;
    LLVMModuleRef m;
    Machine mc;
} Built;

static void free_built(Built *bt)
{
    if (bt->m)
        LLVMDisposeModule(bt->m);
    if (bt->c)
        LLVMContextDispose(bt->c);
    free_machine(&bt->mc);
}

/* Build and optimize the module for one kernel. */
static int build(const KilnFunc *f, const char *symbol, Built *bt, KilnDiag *d)
{
    memset(bt, 0, sizeof *bt);
    if (!f)
        return kiln_diag_set(d, KILN_EINPUT, "CPU codegen: no kernel function");
    if (!symbol || !*symbol)
        return kiln_diag_set(d, KILN_EINPUT, "CPU codegen: empty symbol name");
    KilnLayout l;
    int rc = kiln_layout_for(kiln_find_qgemm(f), f, &l, d);
    if (rc)
        return rc;
    const KilnAttr *ta = kiln_fget(f, "target");
    /* the scalar tile model needs no AMX: its kernels run wherever the vector rows
     * beside the tiles do (vdpbf16ps rows for bf16 tiles, vpdpbusd rows for int8) */
    const char *model_isa = kiln_layout_bf16_tiles(&l) ? "avx512" : "avx512vnni";
    rc = make_machine(ta->s, l.tiles_model ? model_isa : l.isa, &bt->mc, d);
    if (rc) {
        free_machine(&bt->mc);
        return rc;
    }
    KilnGen g = {0};
    g.l = &l;
    g.cpu = bt->mc.cpu;
    g.features = bt->mc.features;
    g.c = bt->c = LLVMContextCreate();
    g.m = bt->m = LLVMModuleCreateWithNameInContext(symbol, g.c);
    LLVMTargetDataRef td = LLVMCreateTargetDataLayout(bt->mc.tm);
    char *dl = LLVMCopyStringRepOfTargetData(td);
    LLVMSetDataLayout(g.m, dl);
    LLVMDisposeMessage(dl);
    LLVMDisposeTargetData(td);
    LLVMSetTarget(g.m, "x86_64-unknown-linux-gnu");
    g.b = LLVMCreateBuilderInContext(g.c);
    g.ab = LLVMCreateBuilderInContext(g.c);
    g.i1 = LLVMInt1TypeInContext(g.c);
    g.i8 = LLVMInt8TypeInContext(g.c);
    g.i16 = LLVMInt16TypeInContext(g.c);
    g.i32 = LLVMInt32TypeInContext(g.c);
    g.i64 = LLVMInt64TypeInContext(g.c);
    g.f32 = LLVMFloatTypeInContext(g.c);
    g.f16 = LLVMHalfTypeInContext(g.c);
    g.bf16 = LLVMBFloatTypeInContext(g.c);
    g.ptr = LLVMPointerTypeInContext(g.c, 0);
    g.vf = LLVMVectorType(g.f32, (unsigned)l.VL);
    g.vi = LLVMVectorType(g.i32, (unsigned)l.VL);
    rc = kg_emit_qgemm(&g, symbol, d);
    LLVMDisposeBuilder(g.b);
    LLVMDisposeBuilder(g.ab);
    if (rc)
        return rc;
    char *msg = NULL;
    if (LLVMVerifyModule(g.m, LLVMReturnStatusAction, &msg)) {
        kiln_diag_set(d, KILN_EINTERNAL, "CPU codegen produced invalid LLVM IR: %.900s", msg);
        LLVMDisposeMessage(msg);
        return KILN_EINTERNAL;
    }
    LLVMDisposeMessage(msg);
    if (getenv("KILN_CPU_DUMP_IR")) /* debugging aid: the IR before optimization */
        LLVMDumpModule(g.m);
    LLVMPassBuilderOptionsRef po = LLVMCreatePassBuilderOptions();
    /* the micro-kernels are unrolled by construction (KB steps x rows x vectors);
     * LLVM's unroller only grew them further and cost ~30% of the compile time */
    LLVMPassBuilderOptionsSetLoopUnrolling(po, 0);
    LLVMErrorRef e = LLVMRunPasses(g.m, "default<O2>", bt->mc.tm, po);
    LLVMDisposePassBuilderOptions(po);
    if (e) {
        char *em = LLVMGetErrorMessage(e);
        kiln_diag_set(d, KILN_EINTERNAL, "LLVM optimization failed: %s", em);
        LLVMDisposeErrorMessage(em);
        return KILN_EINTERNAL;
    }
    return 0;
}

static int emit(const KilnFunc *f, const char *symbol, LLVMCodeGenFileType ft, void **out,
                size_t *len, KilnDiag *d)
{
    Built bt;
    int rc = build(f, symbol, &bt, d);
    if (rc) {
        free_built(&bt);
        return rc;
    }
    char *err = NULL;
    LLVMMemoryBufferRef mb = NULL;
    if (LLVMTargetMachineEmitToMemoryBuffer(bt.mc.tm, bt.m, ft, &err, &mb)) {
        kiln_diag_set(d, KILN_EINTERNAL, "LLVM code emission failed: %s", err ? err : "?");
        LLVMDisposeMessage(err);
        free_built(&bt);
        return KILN_EINTERNAL;
    }
    size_t n = LLVMGetBufferSize(mb);
    char *buf = malloc(n + 1);
    if (buf) {
        memcpy(buf, LLVMGetBufferStart(mb), n);
        buf[n] = 0;
    }
    LLVMDisposeMemoryBuffer(mb);
    free_built(&bt);
    if (!buf)
        return kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
    *out = buf;
    if (len)
        *len = n;
    return 0;
}

int kiln_cpu_emit_object(const KilnFunc *f, const char *symbol, void **obj, size_t *len, KilnDiag *d)
{
    return emit(f, symbol, LLVMObjectFile, obj, len, d);
}

int kiln_cpu_emit_asm(const KilnFunc *f, const char *symbol, char **asm_text, KilnDiag *d)
{
    void *p = NULL;
    int rc = emit(f, symbol, LLVMAssemblyFile, &p, NULL, d);
    *asm_text = p;
    return rc;
}

int kiln_cpu_emit_llvm_ir(const KilnFunc *f, const char *symbol, char **ir_text, KilnDiag *d)
{
    Built bt;
    int rc = build(f, symbol, &bt, d);
    if (!rc) {
        char *s = LLVMPrintModuleToString(bt.m);
        *ir_text = strdup(s);
        LLVMDisposeMessage(s);
    }
    free_built(&bt);
    return rc;
}
