/* codegen/cpu/builder.c — small helpers over the LLVM C builder (constants,
 * byte-addressed loads/stores, splats, intrinsics, counted loops) and the scalar
 * rounding sequences (bf16 RNE, f16 via fptrunc, fp8 round-trip) every kernel uses. */
#include <string.h>

#include "codegen/cpu/gen.h"
#include "ir/numerics.h"

LLVMValueRef kg_i32(KilnGen *g, int64_t v) { return LLVMConstInt(g->i32, (unsigned long long)v, 1); }
LLVMValueRef kg_i64(KilnGen *g, int64_t v) { return LLVMConstInt(g->i64, (unsigned long long)v, 1); }
LLVMValueRef kg_f32(KilnGen *g, double v) { return LLVMConstReal(g->f32, v); }
LLVMTypeRef kg_vec(LLVMTypeRef el, unsigned n) { return LLVMVectorType(el, n); }

LLVMValueRef kg_alloca(KilnGen *g, LLVMTypeRef t, const char *name)
{
    LLVMValueRef a = LLVMBuildAlloca(g->ab, t, name);
    LLVMSetAlignment(a, 64);
    return a;
}

LLVMValueRef kg_gep(KilnGen *g, LLVMValueRef base, LLVMValueRef byte_off)
{
    return LLVMBuildGEP2(g->b, g->i8, base, &byte_off, 1, "");
}

/* Blobs and user buffers promise no alignment beyond 4; unaligned vector loads
 * cost nothing extra on the targets we emit for. */
LLVMValueRef kg_load(KilnGen *g, LLVMTypeRef t, LLVMValueRef p)
{
    LLVMValueRef v = LLVMBuildLoad2(g->b, t, p, "");
    LLVMSetAlignment(v, 1);
    return v;
}

void kg_store(KilnGen *g, LLVMValueRef v, LLVMValueRef p)
{
    LLVMValueRef s = LLVMBuildStore(g->b, v, p);
    LLVMSetAlignment(s, 1);
}

LLVMValueRef kg_splat(KilnGen *g, LLVMValueRef scalar, unsigned n)
{
    LLVMTypeRef vt = kg_vec(LLVMTypeOf(scalar), n);
    LLVMValueRef v = LLVMBuildInsertElement(g->b, LLVMGetUndef(vt), scalar, kg_i32(g, 0), "");
    LLVMValueRef mask = LLVMConstNull(kg_vec(g->i32, n));
    return LLVMBuildShuffleVector(g->b, v, LLVMGetUndef(vt), mask, "");
}

LLVMValueRef kg_call_intr(KilnGen *g, const char *name, LLVMTypeRef *over, unsigned nover,
                          LLVMValueRef *args, unsigned nargs)
{
    unsigned id = LLVMLookupIntrinsicID(name, strlen(name));
    LLVMValueRef fn = LLVMGetIntrinsicDeclaration(g->m, id, over, nover);
    LLVMTypeRef ft = LLVMIntrinsicGetType(g->c, id, over, nover);
    return LLVMBuildCall2(g->b, ft, fn, args, nargs, "");
}

LLVMValueRef kg_call_libm(KilnGen *g, const char *name, LLVMValueRef x)
{
    LLVMTypeRef ft = LLVMFunctionType(g->f32, &g->f32, 1, 0);
    LLVMValueRef fn = LLVMGetNamedFunction(g->m, name);
    if (!fn)
        fn = LLVMAddFunction(g->m, name, ft);
    return LLVMBuildCall2(g->b, ft, fn, &x, 1, "");
}

LLVMValueRef kg_loop_begin(KilnGen *g, KilnLoop *lp, LLVMValueRef start, LLVMValueRef end,
                           int64_t step)
{
    lp->var = kg_alloca(g, g->i64, "iv");
    lp->step = kg_i64(g, step);
    LLVMBuildStore(g->b, start, lp->var);
    lp->head = LLVMAppendBasicBlockInContext(g->c, g->fn, "loop");
    LLVMBasicBlockRef body = LLVMAppendBasicBlockInContext(g->c, g->fn, "body");
    lp->exit = LLVMAppendBasicBlockInContext(g->c, g->fn, "exit");
    LLVMBuildBr(g->b, lp->head);
    LLVMPositionBuilderAtEnd(g->b, lp->head);
    LLVMValueRef iv = LLVMBuildLoad2(g->b, g->i64, lp->var, "");
    LLVMBuildCondBr(g->b, LLVMBuildICmp(g->b, LLVMIntSLT, iv, end, ""), body, lp->exit);
    LLVMPositionBuilderAtEnd(g->b, body);
    return iv;
}

void kg_loop_end(KilnGen *g, KilnLoop *lp)
{
    LLVMValueRef iv = LLVMBuildLoad2(g->b, g->i64, lp->var, "");
    LLVMBuildStore(g->b, LLVMBuildAdd(g->b, iv, lp->step, ""), lp->var);
    LLVMBuildBr(g->b, lp->head);
    LLVMPositionBuilderAtEnd(g->b, lp->exit);
}

/* x's lane count: 0 for a scalar, else the vector's. */
static unsigned lanes_of(LLVMValueRef x)
{
    LLVMTypeRef t = LLVMTypeOf(x);
    return LLVMGetTypeKind(t) == LLVMVectorTypeKind ? LLVMGetVectorSize(t) : 0;
}

/* el, or el with n lanes */
static LLVMTypeRef shaped(LLVMTypeRef el, unsigned n) { return n ? kg_vec(el, n) : el; }

/* i32 constant v, or it splatted to n lanes */
static LLVMValueRef i32_shaped(KilnGen *g, int64_t v, unsigned n)
{
    return n ? kg_vsplat_i(g, g->i32, v, n) : kg_i32(g, v);
}

/* Same as kiln_f32_to_bf16: add 0x7FFF + lsb and truncate; NaN is quieted
 * instead (the add could carry a NaN into Inf). Scalar or vector x. */
LLVMValueRef kg_f32_to_bf16_bits(KilnGen *g, LLVMValueRef x)
{
    LLVMBuilderRef b = g->b;
    unsigned n = lanes_of(x);
    LLVMValueRef u = LLVMBuildBitCast(b, x, shaped(g->i32, n), "");
    LLVMValueRef lsb = LLVMBuildAnd(b, LLVMBuildLShr(b, u, i32_shaped(g, 16, n), ""), i32_shaped(g, 1, n), "");
    LLVMValueRef r = LLVMBuildAdd(b, u, LLVMBuildAdd(b, lsb, i32_shaped(g, 0x7FFF, n), ""), "");
    LLVMValueRef nan = LLVMBuildOr(b, u, i32_shaped(g, 0x400000, n), "");
    LLVMValueRef isnan = LLVMBuildFCmp(b, LLVMRealUNO, x, x, "");
    r = LLVMBuildSelect(b, isnan, nan, r, "");
    return LLVMBuildTrunc(b, LLVMBuildLShr(b, r, i32_shaped(g, 16, n), ""), shaped(g->i16, n), "");
}

LLVMValueRef kg_round_act(KilnGen *g, KilnDType dt, LLVMValueRef x)
{
    unsigned n = lanes_of(x);
    if (dt == KILN_F16)
        return LLVMBuildFPExt(g->b, LLVMBuildFPTrunc(g->b, x, shaped(g->f16, n), ""), shaped(g->f32, n), "");
    if (dt == KILN_BF16) {
        LLVMValueRef h = LLVMBuildZExt(g->b, kg_f32_to_bf16_bits(g, x), shaped(g->i32, n), "");
        return LLVMBuildBitCast(g->b, LLVMBuildShl(g->b, h, i32_shaped(g, 16, n), ""), shaped(g->f32, n), "");
    }
    return x;
}

/* fp8 RNE with saturation, returned decoded: clamp |v| to the format max, take
 * the quantum 2^(max(e, emin) - mbits) of its binade and round |v|/quantum to
 * even. Powers of two make the scaling exact. NaN inputs are not expected
 * (activations are finite). */
LLVMValueRef kg_fp8_round(KilnGen *g, KilnQFormat f, LLVMValueRef v)
{
    LLVMBuilderRef b = g->b;
    bool e4 = f == KILN_QF_FP8_E4M3;
    int emin = e4 ? -6 : -14, mbits = e4 ? 3 : 2;
    double fmax = e4 ? KILN_E4M3_MAX : KILN_E5M2_MAX;
    LLVMTypeRef ft = g->f32;
    LLVMValueRef a = kg_call_intr(g, "llvm.fabs", &ft, 1, &v, 1);
    LLVMValueRef mm[2] = {a, kg_f32(g, fmax)};
    a = kg_call_intr(g, "llvm.minnum", &ft, 1, mm, 2);
    LLVMValueRef e = LLVMBuildSub(b, LLVMBuildLShr(b, LLVMBuildBitCast(b, a, g->i32, ""),
                                                    kg_i32(g, 23), ""), kg_i32(g, 127), "");
    LLVMValueRef lo = kg_i32(g, emin);
    e = LLVMBuildSelect(b, LLVMBuildICmp(b, LLVMIntSLT, e, lo, ""), lo, e, "");
    LLVMValueRef qe = LLVMBuildSub(b, e, kg_i32(g, mbits), "");
    LLVMValueRef quantum = LLVMBuildBitCast(
        b, LLVMBuildShl(b, LLVMBuildAdd(b, qe, kg_i32(g, 127), ""), kg_i32(g, 23), ""), ft, "");
    LLVMValueRef inv = LLVMBuildBitCast(
        b, LLVMBuildShl(b, LLVMBuildSub(b, kg_i32(g, 127), qe, ""), kg_i32(g, 23), ""), ft, "");
    LLVMValueRef s = LLVMBuildFMul(b, a, inv, "");
    LLVMValueRef r = LLVMBuildFMul(b, kg_call_intr(g, "llvm.roundeven", &ft, 1, &s, 1), quantum, "");
    LLVMValueRef cs[2] = {r, v};
    return kg_call_intr(g, "llvm.copysign", &ft, 1, cs, 2);
}
