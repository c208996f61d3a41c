/* codegen/cpu/qgemm_act.c — the kernel prologue: quantize (int8, fp8) or round
 * (f16/bf16) all M activation rows into scratch in the layout the inner loop
 * reads (ir/layout.h), with the numerics of ir/numerics.h: minmax range with 0
 * included, scale = absmax/qmax (sym) or (hi-lo)/255 (asym), zero range -> scale 1,
 * q = clamp(roundeven(x/s) + z, qmin, qmax). */
#include <math.h>

#include "codegen/cpu/gen.h"
#include "ir/numerics.h"

typedef struct RowParams {
    LLVMValueRef s, z; /* f32 scale, f32 zero point */
} RowParams;

/* minnum/maxnum of a and b (vectors or scalars): NaN operands are ignored. */
static LLVMValueRef fminmax(KilnGen *g, bool max, LLVMValueRef a, LLVMValueRef b)
{
    LLVMTypeRef t = LLVMTypeOf(a);
    LLVMValueRef v[2] = {a, b};
    return kg_call_intr(g, max ? "llvm.maxnum" : "llvm.minnum", &t, 1, v, 2);
}

/* min/max over x[begin .. end), with 0 included: U vectors of VL lanes per step
 * (independent chains, so the loop runs at load speed), then the lanes, then the
 * last elements one by one. min and max are exact and ignore NaN in any order, so
 * the result is the interpreter's. */
static void emit_range(KilnGen *g, LLVMValueRef begin, LLVMValueRef end, LLVMValueRef *lo,
                       LLVMValueRef *hi)
{
    enum { U = 4 };
    LLVMBuilderRef b = g->b;
    int64_t step = (int64_t)U * g->l->VL;
    LLVMValueRef vlo[U], vhi[U];
    for (int u = 0; u < U; u++) {
        vlo[u] = kg_alloca(g, g->vf, "vlo");
        vhi[u] = kg_alloca(g, g->vf, "vhi");
        kg_st(g, LLVMConstNull(g->vf), vlo[u]);
        kg_st(g, LLVMConstNull(g->vf), vhi[u]);
    }
    LLVMValueRef n = LLVMBuildSub(b, end, begin, "");
    LLVMValueRef vend = LLVMBuildAdd(b, begin, LLVMBuildMul(b, LLVMBuildSDiv(b, n, kg_i64(g, step), ""),
                                                            kg_i64(g, step), ""), "");
    KilnLoop lv;
    LLVMValueRef i = kg_loop_begin(g, &lv, begin, vend, step);
    for (int u = 0; u < U; u++) {
        LLVMValueRef el = LLVMBuildAdd(b, i, kg_i64(g, (int64_t)u * g->l->VL), "");
        LLVMValueRef xv = kg_load(g, g->vf, kg_gep(g, g->x, LLVMBuildMul(b, el, kg_i64(g, 4), "")));
        kg_st(g, fminmax(g, false, kg_ld(g, g->vf, vlo[u]), xv), vlo[u]);
        kg_st(g, fminmax(g, true, kg_ld(g, g->vf, vhi[u]), xv), vhi[u]);
    }
    kg_loop_end(g, &lv);
    LLVMValueRef slo = kg_alloca(g, g->f32, "lo"), shi = kg_alloca(g, g->f32, "hi");
    LLVMValueRef l = kg_ld(g, g->vf, vlo[0]), h = kg_ld(g, g->vf, vhi[0]);
    for (int u = 1; u < U; u++) {
        l = fminmax(g, false, l, kg_ld(g, g->vf, vlo[u]));
        h = fminmax(g, true, h, kg_ld(g, g->vf, vhi[u]));
    }
    LLVMValueRef lo1 = LLVMBuildExtractElement(b, l, kg_i32(g, 0), "");
    LLVMValueRef hi1 = LLVMBuildExtractElement(b, h, kg_i32(g, 0), "");
    for (int j = 1; j < g->l->VL; j++) {
        lo1 = fminmax(g, false, lo1, LLVMBuildExtractElement(b, l, kg_i32(g, j), ""));
        hi1 = fminmax(g, true, hi1, LLVMBuildExtractElement(b, h, kg_i32(g, j), ""));
    }
    kg_st(g, lo1, slo);
    kg_st(g, hi1, shi);
    KilnLoop lp;
    i = kg_loop_begin(g, &lp, vend, end, 1);
    LLVMValueRef xv = kg_load(g, g->f32, kg_gep(g, g->x, LLVMBuildMul(b, i, kg_i64(g, 4), "")));
    kg_st(g, fminmax(g, false, kg_ld(g, g->f32, slo), xv), slo);
    kg_st(g, fminmax(g, true, kg_ld(g, g->f32, shi), xv), shi);
    kg_loop_end(g, &lp);
    *lo = kg_ld(g, g->f32, slo);
    *hi = kg_ld(g, g->f32, shi);
}

static LLVMValueRef fselect_zero_to_one(KilnGen *g, LLVMValueRef s)
{
    LLVMValueRef z = LLVMBuildFCmp(g->b, LLVMRealOEQ, s, kg_f32(g, 0), "");
    return LLVMBuildSelect(g->b, z, kg_f32(g, 1), s, "");
}

static LLVMValueRef fclamp(KilnGen *g, LLVMValueRef v, double lo, double hi)
{
    LLVMTypeRef ft = g->f32;
    LLVMValueRef a[2] = {v, kg_f32(g, lo)};
    v = kg_call_intr(g, "llvm.maxnum", &ft, 1, a, 2);
    LLVMValueRef b[2] = {v, kg_f32(g, hi)};
    return kg_call_intr(g, "llvm.minnum", &ft, 1, b, 2);
}

static RowParams params_from_range(KilnGen *g, LLVMValueRef lo, LLVMValueRef hi)
{
    const KilnQuantSpec *q = &g->l->aspec;
    LLVMBuilderRef b = g->b;
    RowParams p;
    LLVMTypeRef ft = g->f32;
    if (q->symmetric || q->fmt != KILN_QF_INT8) {
        LLVMValueRef al = kg_call_intr(g, "llvm.fabs", &ft, 1, &lo, 1);
        LLVMValueRef m[2] = {al, hi};
        LLVMValueRef amax = kg_call_intr(g, "llvm.maxnum", &ft, 1, m, 2);
        p.s = fselect_zero_to_one(
            g, LLVMBuildFDiv(b, amax, kg_f32(g, kiln_qformat_qmax(q->fmt, true)), ""));
        p.z = kg_f32(g, 0);
    } else {
        LLVMValueRef s = LLVMBuildFDiv(b, LLVMBuildFSub(b, hi, lo, ""), kg_f32(g, 255), "");
        p.s = fselect_zero_to_one(g, s);
        LLVMValueRef nl = LLVMBuildFNeg(b, lo, "");
        LLVMValueRef r = LLVMBuildFDiv(b, nl, p.s, "");
        p.z = fclamp(g, kg_call_intr(g, "llvm.roundeven", &ft, 1, &r, 1), 0, 255);
    }
    return p;
}

static void store_i32(KilnGen *g, LLVMValueRef v, LLVMValueRef base, int64_t off)
{
    kg_store(g, v, kg_gep(g, base, kg_i64(g, off)));
}

LLVMValueRef kg_group_end_k(KilnGen *g, LLVMValueRef k0)
{
    const KilnLayout *l = g->l;
    LLVMValueRef e = LLVMBuildAdd(g->b, k0, kg_i64(g, l->group), "");
    if (l->K % l->group == 0)
        return e;
    return LLVMBuildSelect(g->b, LLVMBuildICmp(g->b, LLVMIntSLT, e, kg_i64(g, l->K), ""), e,
                           kg_i64(g, l->K), "");
}

/* One row of int8 activations: codes (i16 q-z, or a byte q+off), s, ca, asum[g]. */
static void emit_int8_row(KilnGen *g, LLVMValueRef m, LLVMValueRef rowp, RowParams p)
{
    const KilnLayout *l = g->l;
    LLVMBuilderRef b = g->b;
    bool sym = l->aspec.symmetric;
    double qmin = sym ? -127 : 0, qmax = sym ? 127 : 255;
    /* stored byte q + off: u8 for vnni (128 moves a symmetric code into u8), s8
     * for maddubs (-128 moves an asymmetric u8 code into s8); ca = z + off */
    int off = l->family == KILN_KF_U8S8_VNNI ? (sym ? 128 : 0)
            : l->family == KILN_KF_U4S8_MADDUBS ? (sym ? 0 : -128) : 0;
    LLVMValueRef zi = LLVMBuildFPToSI(b, p.z, g->i32, "");
    LLVMValueRef acc = kg_alloca(g, g->i32, "asum");
    LLVMValueRef xrow = kg_gep(g, g->x, LLVMBuildMul(b, m, kg_i64(g, l->K * 4), ""));
    LLVMValueRef meta = kg_gep(g, rowp, kg_i64(g, (int64_t)l->meta_off));
    KilnLoop lg;
    LLVMValueRef gi = kg_loop_begin(g, &lg, kg_i64(g, 0), kg_i64(g, l->ngroups), 1);
    LLVMBuildStore(b, kg_i32(g, 0), acc);
    LLVMValueRef k0 = LLVMBuildMul(b, gi, kg_i64(g, l->group), "");
    KilnLoop lk;
    LLVMValueRef k = kg_loop_begin(g, &lk, k0, kg_group_end_k(g, k0), 1);
    LLVMValueRef xv = kg_load(g, g->f32, kg_gep(g, xrow, LLVMBuildMul(b, k, kg_i64(g, 4), "")));
    LLVMTypeRef ft = g->f32;
    LLVMValueRef r = LLVMBuildFDiv(b, xv, p.s, "");
    r = kg_call_intr(g, "llvm.roundeven", &ft, 1, &r, 1);
    LLVMValueRef qf = fclamp(g, LLVMBuildFAdd(b, r, p.z, ""), qmin, qmax);
    LLVMValueRef qi = LLVMBuildFPToSI(b, qf, g->i32, "");
    LLVMValueRef dq = LLVMBuildSub(b, qi, zi, "");
    if (l->family == KILN_KF_I16_MADD)
        kg_store(g, LLVMBuildTrunc(b, dq, g->i16, ""),
                 kg_gep(g, rowp, LLVMBuildMul(b, k, kg_i64(g, 2), "")));
    else
        kg_store(g, LLVMBuildTrunc(b, LLVMBuildAdd(b, qi, kg_i32(g, off), ""), g->i8, ""),
                 kg_gep(g, rowp, k));
    LLVMBuildStore(b, LLVMBuildAdd(b, LLVMBuildLoad2(b, g->i32, acc, ""), dq, ""), acc);
    kg_loop_end(g, &lk);
    kg_store(g, LLVMBuildLoad2(b, g->i32, acc, ""),
             kg_gep(g, meta, LLVMBuildAdd(b, kg_i64(g, 8), LLVMBuildMul(b, gi, kg_i64(g, 4), ""), "")));
    kg_loop_end(g, &lg);
    kg_store(g, p.s, meta);
    store_i32(g, LLVMBuildAdd(b, zi, kg_i32(g, off), ""), meta, 4);
}

/* One row of f32 values for the f32-fma / bf16-dot inner loops; with zero_by_sum
 * also the per-group sums of those values. */
static void emit_float_row(KilnGen *g, LLVMValueRef m, LLVMValueRef rowp, RowParams p)
{
    const KilnLayout *l = g->l;
    LLVMBuilderRef b = g->b;
    LLVMValueRef xrow = kg_gep(g, g->x, LLVMBuildMul(b, m, kg_i64(g, l->K * 4), ""));
    LLVMValueRef meta = kg_gep(g, rowp, kg_i64(g, (int64_t)l->meta_off));
    LLVMValueRef acc = kg_alloca(g, g->f32, "xsum");
    KilnLoop lg;
    LLVMValueRef gi = kg_loop_begin(g, &lg, kg_i64(g, 0), kg_i64(g, l->ngroups), 1);
    LLVMBuildStore(b, kg_f32(g, 0), acc);
    LLVMValueRef k0 = LLVMBuildMul(b, gi, kg_i64(g, l->group), "");
    KilnLoop lk;
    LLVMValueRef k = kg_loop_begin(g, &lk, k0, kg_group_end_k(g, k0), 1);
    LLVMValueRef xv = kg_load(g, g->f32, kg_gep(g, xrow, LLVMBuildMul(b, k, kg_i64(g, 4), "")));
    LLVMValueRef v;
    if (l->weight_only)
        v = l->family == KILN_KF_BF16_DOT ? xv : kg_round_act(g, l->act_dtype, xv);
    else
        v = kg_fp8_round(g, l->aspec.fmt, LLVMBuildFDiv(b, xv, p.s, ""));
    if (l->family == KILN_KF_BF16_DOT) { /* bf16 pairs; an fp8 value is exact in bf16 */
        kg_store(g, kg_f32_to_bf16_bits(g, v), kg_gep(g, rowp, LLVMBuildMul(b, k, kg_i64(g, 2), "")));
        v = NULL;
    }
    if (v) {
        LLVMValueRef sv = v;
        if (kiln_layout_word_codes(l)) {
            /* code k%KB of a word is read as u * 2^weight_exp(k%KB): prescale by
             * 2^act_exp(k%KB) = 2^(A - bit), bit = bits*(k%KB) up to the layout's
             * last in-place code, else 0 (ir/layout.h); exact, a power of two */
            int last = kiln_layout_code_last(l), A = kiln_layout_act_exp(l, 0);
            LLVMValueRef kk = LLVMBuildTrunc(b, LLVMBuildAnd(b, k, kg_i64(g, l->KB - 1), ""), g->i32, "");
            LLVMValueRef bit = LLVMBuildSelect(b, LLVMBuildICmp(b, LLVMIntUGT, kk, kg_i32(g, last), ""),
                                               kg_i32(g, 0),
                                               LLVMBuildMul(b, kk, kg_i32(g, kiln_layout_code_bits(l)), ""), "");
            LLVMValueRef e = LLVMBuildSub(b, kg_i32(g, 127 + A), bit, "");
            LLVMValueRef sc = LLVMBuildBitCast(b, LLVMBuildShl(b, e, kg_i32(g, 23), ""), g->f32, "");
            sv = LLVMBuildFMul(b, v, sc, "");
        } else if (kiln_layout_act_exp(l, 0)) /* fp8, exact within layout.h's bounds */
            sv = LLVMBuildFMul(b, v, kg_f32(g, ldexp(1.0, kiln_layout_act_exp(l, 0))), "");
        kg_store(g, sv, kg_gep(g, rowp, LLVMBuildMul(b, k, kg_i64(g, 4), "")));
        if (l->zero_by_sum)
            LLVMBuildStore(b, LLVMBuildFAdd(b, LLVMBuildLoad2(b, g->f32, acc, ""), v, ""), acc);
    }
    kg_loop_end(g, &lk);
    if (l->zero_by_sum)
        kg_store(g, LLVMBuildLoad2(b, g->f32, acc, ""),
                 kg_gep(g, meta, LLVMBuildAdd(b, kg_i64(g, 8), LLVMBuildMul(b, gi, kg_i64(g, 4), ""), "")));
    kg_loop_end(g, &lg);
    if (!l->weight_only)
        kg_store(g, p.s, meta);
}

void kg_emit_act_prep(KilnGen *g)
{
    const KilnLayout *l = g->l;
    LLVMBuilderRef b = g->b;
    if (l->act_row_bytes == 0)
        return; /* f32 weight-only: the inner loop reads x */
    RowParams p = {kg_f32(g, 1), kg_f32(g, 0)};
    bool quant = !l->weight_only;
    if (quant && !l->aspec.dynamic) {
        p.s = kg_f32(g, l->aspec.scale);
        p.z = kg_f32(g, l->aspec.symmetric ? 0 : l->aspec.zero);
    } else if (quant && l->aspec.gran == KILN_GRAN_TENSOR) {
        LLVMValueRef lo, hi;
        emit_range(g, kg_i64(g, 0), LLVMBuildMul(b, g->M, kg_i64(g, l->K), ""), &lo, &hi);
        p = params_from_range(g, lo, hi);
    }
    LLVMBasicBlockRef rows_done = NULL;
    if (l->act_planes) { /* decode calls: byte planes for vpdpbusd (qgemm_planes.c) */
        LLVMBasicBlockRef pl = LLVMAppendBasicBlockInContext(g->c, g->fn, "planes_prep");
        LLVMBasicBlockRef fl = LLVMAppendBasicBlockInContext(g->c, g->fn, "float_prep");
        rows_done = LLVMAppendBasicBlockInContext(g->c, g->fn, "rows_done");
        LLVMBuildCondBr(b, LLVMBuildICmp(b, LLVMIntSLT, g->M, kg_i64(g, l->planes_below_m), ""), pl, fl);
        LLVMPositionBuilderAtEnd(b, pl);
        kg_emit_planes_prep(g);
        LLVMBuildBr(b, rows_done);
        LLVMPositionBuilderAtEnd(b, fl);
    }
    KilnLoop lm;
    LLVMValueRef m = kg_loop_begin(g, &lm, kg_i64(g, 0), g->M, 1);
    LLVMValueRef rowp =
        kg_gep(g, g->scratch, LLVMBuildMul(b, m, kg_i64(g, (int64_t)l->scratch_per_row), ""));
    RowParams rp = p;
    if (quant && l->aspec.dynamic && l->aspec.gran == KILN_GRAN_TOKEN) {
        LLVMValueRef lo, hi, start = LLVMBuildMul(b, m, kg_i64(g, l->K), "");
        emit_range(g, start, LLVMBuildAdd(b, start, kg_i64(g, l->K), ""), &lo, &hi);
        rp = params_from_range(g, lo, hi);
    }
    if (kiln_layout_integer(l))
        emit_int8_row(g, m, rowp, rp);
    else
        emit_float_row(g, m, rowp, rp);
    kg_loop_end(g, &lm);
    if (rows_done) {
        LLVMBuildBr(b, rows_done);
        LLVMPositionBuilderAtEnd(b, rows_done);
    }
    if (l->tiles) { /* the pad rows the last 16-row A tile reads (ir/layout.h): zero, when
                     * the tiles run (not the int4 panel buffer after them, which the tile
                     * path writes whole; decode calls skip it all) */
        LLVMBasicBlockRef z = LLVMAppendBasicBlockInContext(g->c, g->fn, "pad_rows");
        LLVMBasicBlockRef done = LLVMAppendBasicBlockInContext(g->c, g->fn, "prep_done");
        LLVMBuildCondBr(b, LLVMBuildICmp(b, LLVMIntSGE, g->M, kg_i64(g, l->tiles_min_m), ""), z, done);
        LLVMPositionBuilderAtEnd(b, z);
        LLVMValueRef pad = kg_gep(g, g->scratch, LLVMBuildMul(b, g->M, kg_i64(g, (int64_t)l->scratch_per_row), ""));
        LLVMBuildMemSet(b, pad, LLVMConstInt(g->i8, 0, 0),
                        kg_i64(g, (int64_t)(l->TM - 1) * (int64_t)l->scratch_per_row), 1);
        LLVMBuildBr(b, done);
        LLVMPositionBuilderAtEnd(b, done);
    }
}
