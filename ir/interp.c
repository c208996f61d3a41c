/* ir/interp.c — the reference interpreter: plain scalar C meaning of every op, the
 * ground truth every generated kernel is tested against (docs/numerics.md). Here
 * the driver and the simple ops; qgemm is interp_qgemm.c. */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "interp.h"

int interp_fail(Interp *c, int code, const char *fmt, ...)
{
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    const KilnInst *in = c->in;
    if (!in)
        return kiln_diag_set(c->d, code, "@%s: %s", c->f->name, msg);
    if (in->result < 0)
        return kiln_diag_set_at(c->d, code, NULL, in->line, "@%s: %s: %s", c->f->name,
                                kiln_op_name(in->op), msg);
    return kiln_diag_set_at(c->d, code, NULL, in->line, "@%s: %%%s = %s: %s", c->f->name,
                            c->f->values[in->result].name, kiln_op_name(in->op), msg);
}

static int64_t last_dim(const KilnType *t) { return t->rank ? t->dim[t->rank - 1] : 1; }
static int64_t rows_of(const KilnType *t)
{
    int64_t n = last_dim(t);
    return n ? kiln_type_numel(t) / n : 0;
}

static int need_float(Interp *c, const char *what, int id, const KilnType *t)
{
    if (is_float_dt(t->dt) && t->q.fmt == KILN_QF_NONE)
        return 0;
    return interp_fail(c, KILN_EINPUT, "%s %%%s must be f32, f16 or bf16, got %s", what, vname(c, id),
                       kiln_type_str(t).s);
}

static int need_same_shape(Interp *c, int id, const KilnType *src, const KilnType *res)
{
    if (kiln_type_same_shape(src, res))
        return 0;
    return interp_fail(c, KILN_EINPUT, "operand %%%s is %s but the result is %s (shapes differ)",
                       vname(c, id), kiln_type_str(src).s, kiln_type_str(res).s);
}

/* A malloc'd f32 copy of a float tensor. */
static float *to_f32(const KilnTensor *t)
{
    int64_t n = kiln_type_numel(&t->type);
    float *x = malloc((size_t)(n ? n : 1) * sizeof *x);
    if (x)
        for (int64_t i = 0; i < n; i++)
            x[i] = load_f(t, i);
    return x;
}

static int copy_tensor(KilnTensor *dst, const KilnTensor *src)
{
    int rc = kiln_tensor_alloc(dst, &src->type);
    if (rc)
        return rc;
    memcpy(dst->data, src->data, dst->nbytes < src->nbytes ? dst->nbytes : src->nbytes);
    if (dst->scales && src->scales)
        memcpy(dst->scales, src->scales, (size_t)dst->nscales * sizeof *dst->scales);
    if (dst->zeros && src->zeros)
        memcpy(dst->zeros, src->zeros, (size_t)dst->nscales * sizeof *dst->zeros);
    return 0;
}

/* ------------------------------------------------------------------ simple ops */

static int op_weight(Interp *c, KilnTensor *r)
{
    const KilnAttr *a = kiln_get(c->in, "name");
    if (!a || (a->kind != KILN_ATTR_STR && a->kind != KILN_ATTR_IDENT))
        return interp_fail(c, KILN_EINPUT, "missing string attribute name");
    if (r->type.dt != KILN_F32 || r->type.q.fmt != KILN_QF_NONE)
        return interp_fail(c, KILN_EINPUT, "weight \"%s\" must be declared f32, got %s", a->s,
                           kiln_type_str(&r->type).s);
    if (!c->wfn)
        return interp_fail(c, KILN_EINPUT, "weight \"%s\" is needed but no weights were given", a->s);
    KilnDiag sub = {0};
    KilnType want = r->type;
    int rc = c->wfn(c->wctx, a->s, r, &sub);
    if (rc)
        return interp_fail(c, rc == KILN_EINTERNAL ? rc : KILN_EINPUT, "weight \"%s\": %s", a->s,
                           sub.msg[0] ? sub.msg : "the weight provider failed");
    if (!r->data || !kiln_type_eq(&r->type, &want) || r->nbytes < kiln_tensor_bytes(&want))
        return interp_fail(c, KILN_EINPUT, "weight \"%s\": the provider changed the tensor (want %s)",
                           a->s, kiln_type_str(&want).s);
    return 0;
}

static int op_const(Interp *c, KilnTensor *r)
{
    const KilnAttr *a = kiln_get(c->in, "value");
    if (!a || (a->kind != KILN_ATTR_FLOAT && a->kind != KILN_ATTR_INT))
        return interp_fail(c, KILN_EINPUT, "missing number attribute value");
    if (!is_float_dt(r->type.dt) || r->type.q.fmt != KILN_QF_NONE)
        return interp_fail(c, KILN_EINPUT, "const must be f32, f16 or bf16, got %s",
                           kiln_type_str(&r->type).s);
    float v = a->kind == KILN_ATTR_FLOAT ? (float)a->f : (float)a->i;
    for (int64_t i = 0, n = kiln_type_numel(&r->type); i < n; i++)
        store_f(r, i, v);
    return 0;
}

static int need_quant_result(Interp *c, const KilnType *t)
{
    if (t->q.fmt == KILN_QF_NONE)
        return interp_fail(c, KILN_EINPUT, "result %s has no quantization spec", kiln_type_str(t).s);
    KilnDType want = kiln_qformat_storage(t->q.fmt, t->q.symmetric || kiln_qformat_is_fp8(t->q.fmt));
    if (t->dt != want)
        return interp_fail(c, KILN_EINPUT, "result %s: %s %s is stored as %s", kiln_type_str(t).s,
                           kiln_qformat_name(t->q.fmt), t->q.symmetric ? "sym" : "asym",
                           kiln_dtype_name(want));
    return 0;
}

/* float operand %sid -> quantized r (same shape) with `spec` (r's, possibly adjusted). */
static int quantize_into(Interp *c, int sid, const KilnQuantSpec *spec, const KilnTensor *src,
                         KilnTensor *r)
{
    int rc = need_float(c, "operand", sid, &src->type);
    if (!rc)
        rc = need_quant_result(c, &r->type);
    if (!rc)
        rc = need_same_shape(c, sid, &src->type, &r->type);
    if (rc)
        return rc;
    float *x = to_f32(src);
    if (!x)
        return oom(c);
    KilnDiag sub = {0};
    rc = kiln_quantize_matrix(spec, x, rows_of(&r->type), last_dim(&r->type), r->data,
                                  r->scales, r->zeros, &sub);
    free(x);
    return rc ? interp_fail(c, rc, "%s", sub.msg) : 0;
}

/* The caller's grid for a weight (kiln_interp_run_grid): 1 used, 0 none, else an error. */
static int quantize_on_grid(Interp *c, int sid, const KilnTensor *src, KilnTensor *r)
{
    const KilnInst *def = &c->f->insts[c->f->values[sid].def];
    const KilnAttr *name = def->op == KILN_OP_WEIGHT ? kiln_get(def, "name") : NULL;
    if (!c->gfn || !name || need_quant_result(c, &r->type) ||
        need_same_shape(c, sid, &src->type, &r->type) || src->type.dt != KILN_F32)
        return 0;
    if (!c->gfn(c->gctx, name->s, &r->type, r->scales, r->zeros))
        return 0;
    KilnDiag sub = {0};
    int rc = kiln_quantize_matrix_with(&r->type.q, src->data, rows_of(&r->type),
                                       last_dim(&r->type), r->scales, r->zeros, r->data, &sub);
    return rc ? -interp_fail(c, rc, "%s", sub.msg) : 1;
}

static int op_quantize(Interp *c, int sid, const KilnTensor *src, KilnTensor *r)
{
    const KilnQuantSpec *q = &r->type.q;
    if (kiln_value_is_weight(c->f, sid)) {
        int g = quantize_on_grid(c, sid, src, r);
        if (g)
            return g < 0 ? -g : 0;
    }
    if (!kiln_value_is_weight(c->f, sid) && !q->dynamic && !(q->scale > 0.0f))
        return interp_fail(c, KILN_EINPUT,
                           "static activation scale not calibrated: %%%s is not a weight and the spec "
                           "has scale 0 (run calibration or give a scale)",
                           vname(c, sid));
    return quantize_into(c, sid, q, src, r);
}

static int op_dynquant(Interp *c, int sid, const KilnTensor *src, KilnTensor *r)
{
    KilnQuantSpec q = r->type.q;
    if (q.gran != KILN_GRAN_TOKEN && q.gran != KILN_GRAN_TENSOR)
        return interp_fail(c, KILN_EINPUT, "dynamic quantization is per token or per tensor, got %s",
                           kiln_type_str(&r->type).s);
    q.dynamic = true; /* scales always come from the data */
    q.scale = 0;
    return quantize_into(c, sid, &q, src, r);
}

static int op_dequantize(Interp *c, int sid, const KilnTensor *src, KilnTensor *r)
{
    if (src->type.q.fmt == KILN_QF_NONE)
        return interp_fail(c, KILN_EINPUT, "operand %%%s is %s, not a quantized value", vname(c, sid),
                           kiln_type_str(&src->type).s);
    int rc = need_float(c, "result", c->in->result, &r->type);
    if (!rc)
        rc = need_same_shape(c, sid, &src->type, &r->type);
    if (rc)
        return rc;
    int64_t n = kiln_type_numel(&r->type);
    float *y = malloc((size_t)(n ? n : 1) * sizeof *y);
    if (!y)
        return oom(c);
    KilnDiag sub = {0};
    rc = kiln_dequantize_matrix(&src->type.q, src->data, src->scales, src->zeros,
                                rows_of(&src->type), last_dim(&src->type), y, &sub);
    for (int64_t i = 0; !rc && i < n; i++)
        store_f(r, i, y[i]);
    free(y);
    return rc ? interp_fail(c, rc, "%s", sub.msg) : 0;
}

/* pack: i8/u8 codes in int4 range -> i4/u4; unpack: the reverse. Scales ride along. */
static int op_repack(Interp *c, int sid, const KilnTensor *src, KilnTensor *r, bool pack)
{
    KilnDType from = src->type.dt, to = r->type.dt;
    bool ok = pack ? ((from == KILN_I8 && to == KILN_I4) || (from == KILN_U8 && to == KILN_U4))
                   : ((from == KILN_I4 && to == KILN_I8) || (from == KILN_U4 && to == KILN_U8));
    if (!ok)
        return interp_fail(c, KILN_EINPUT, "cannot %s %s into %s (i8<->i4 and u8<->u4 only)",
                           pack ? "pack" : "unpack", kiln_type_str(&src->type).s,
                           kiln_type_str(&r->type).s);
    int rc = need_same_shape(c, sid, &src->type, &r->type);
    if (rc)
        return rc;
    if (r->type.q.fmt != KILN_QF_NONE) {
        if (src->nscales != r->nscales || !src->scales || (r->zeros && !src->zeros))
            return interp_fail(c, KILN_EINPUT,
                               "%s carries %lld scales%s but %s needs %lld%s", kiln_type_str(&src->type).s,
                               (long long)src->nscales, src->zeros ? " and zero points" : "",
                               kiln_type_str(&r->type).s, (long long)r->nscales,
                               r->zeros ? " and zero points" : "");
        memcpy(r->scales, src->scales, (size_t)r->nscales * sizeof *r->scales);
        if (r->zeros)
            memcpy(r->zeros, src->zeros, (size_t)r->nscales * sizeof *r->zeros);
    }
    int64_t rows = rows_of(&r->type), cols = last_dim(&r->type);
    size_t sb = kiln_row_bytes(from, cols), rb = kiln_row_bytes(to, cols);
    int32_t lo = from == KILN_I8 ? -8 : 0, hi = from == KILN_I8 ? 7 : 15;
    for (int64_t i = 0; i < rows; i++) {
        const uint8_t *srow = (const uint8_t *)src->data + (size_t)i * sb;
        uint8_t *row = (uint8_t *)r->data + (size_t)i * rb;
        for (int64_t j = 0; j < cols; j++) {
            int32_t v = kiln_code_get(from, srow, j);
            if (pack && (v < lo || v > hi))
                return interp_fail(c, KILN_EINPUT, "code %d at [%lld,%lld] of %%%s is outside %s's %d..%d",
                                   (int)v, (long long)i, (long long)j, vname(c, sid),
                                   kiln_dtype_name(to), (int)lo, (int)hi);
            kiln_code_set(to, row, j, v);
        }
    }
    return 0;
}

/* The common check of float -> float elementwise ops. */
static int need_float_map(Interp *c, int sid, const KilnTensor *src, const KilnTensor *r)
{
    int rc = need_float(c, "operand", sid, &src->type);
    if (!rc)
        rc = need_float(c, "result", c->in->result, &r->type);
    if (!rc)
        rc = need_same_shape(c, sid, &src->type, &r->type);
    return rc;
}

static int op_cast(Interp *c, int sid, const KilnTensor *src, KilnTensor *r)
{
    int rc = need_float_map(c, sid, src, r);
    if (rc)
        return rc;
    for (int64_t i = 0, n = kiln_type_numel(&r->type); i < n; i++)
        store_f(r, i, load_f(src, i));
    return 0;
}

/* y = a·bᵀ, f32 accumulation in ascending k (docs/numerics.md). */
static int op_matmul(Interp *c, const int *ids, const KilnTensor *a, const KilnTensor *b,
                     KilnTensor *r)
{
    int rc = need_float(c, "operand", ids[0], &a->type);
    if (!rc)
        rc = need_float(c, "operand", ids[1], &b->type);
    if (!rc)
        rc = need_float(c, "result", c->in->result, &r->type);
    if (rc)
        return rc;
    if (a->type.rank != 2 || b->type.rank != 2 || r->type.rank != 2 ||
        a->type.dim[1] != b->type.dim[1] || r->type.dim[0] != a->type.dim[0] ||
        r->type.dim[1] != b->type.dim[0])
        return interp_fail(c, KILN_EINPUT,
                           "%%%s is %s and %%%s is %s: want a[M,K], b[N,K] and result [M,N], got %s",
                           vname(c, ids[0]), kiln_type_str(&a->type).s, vname(c, ids[1]),
                           kiln_type_str(&b->type).s, kiln_type_str(&r->type).s);
    int64_t M = a->type.dim[0], N = b->type.dim[0], K = a->type.dim[1];
    float *x = to_f32(a), *w = to_f32(b);
    if (!x || !w) {
        free(x);
        free(w);
        return oom(c);
    }
    for (int64_t m = 0; m < M; m++)
        for (int64_t n = 0; n < N; n++) {
            float acc = 0.0f;
            for (int64_t k = 0; k < K; k++)
                acc += x[m * K + k] * w[n * K + k];
            store_f(r, m * N + n, acc);
        }
    free(x);
    free(w);
    return 0;
}

static int op_bias_add(Interp *c, const int *ids, const KilnTensor *y, const KilnTensor *b,
                       KilnTensor *r)
{
    int rc = need_float_map(c, ids[0], y, r);
    if (!rc)
        rc = need_float(c, "bias", ids[1], &b->type);
    if (rc)
        return rc;
    int64_t N = last_dim(&y->type);
    if (b->type.rank != 1 || b->type.dim[0] != N)
        return interp_fail(c, KILN_EINPUT, "bias %%%s is %s but %%%s has %lld columns", vname(c, ids[1]),
                           kiln_type_str(&b->type).s, vname(c, ids[0]), (long long)N);
    for (int64_t i = 0, n = kiln_type_numel(&y->type); i < n; i++)
        store_f(r, i, load_f(y, i) + load_f(b, i % N));
    return 0;
}

static int op_activation(Interp *c, int sid, const KilnTensor *src, KilnTensor *r, bool gelu)
{
    int rc = need_float_map(c, sid, src, r);
    if (rc)
        return rc;
    for (int64_t i = 0, n = kiln_type_numel(&r->type); i < n; i++) {
        float v = load_f(src, i);
        store_f(r, i, gelu ? gelu_f(v) : silu_f(v));
    }
    return 0;
}

static int op_add(Interp *c, const int *ids, const KilnTensor *a, const KilnTensor *b,
                  KilnTensor *r)
{
    int rc = need_float_map(c, ids[0], a, r);
    if (!rc)
        rc = need_float_map(c, ids[1], b, r);
    if (rc)
        return rc;
    for (int64_t i = 0, n = kiln_type_numel(&r->type); i < n; i++)
        store_f(r, i, load_f(a, i) + load_f(b, i));
    return 0;
}

int interp_cols_attr(Interp *c, const char *key, int64_t cols, const int64_t **idx, int64_t *n)
{
    const KilnAttr *a = kiln_get(c->in, key);
    if (!a || a->kind != KILN_ATTR_INTS || a->nints <= 0)
        return interp_fail(c, KILN_EINPUT, "attribute %s must be a non-empty list of columns", key);
    for (int64_t i = 0; i < a->nints; i++)
        if (a->ints[i] < 0 || a->ints[i] >= cols || (i > 0 && a->ints[i] <= a->ints[i - 1]))
            return interp_fail(c, KILN_EINPUT, "attribute %s: column %lld is out of range 0..%lld or "
                               "not ascending", key, (long long)a->ints[i], (long long)cols - 1);
    *idx = a->ints;
    *n = a->nints;
    return 0;
}

/* gather_cols: r[:, j] = x[:, idx[j]]; zero_cols: x with the idx columns set to 0. */
static int op_cols(Interp *c, int sid, const KilnTensor *x, KilnTensor *r, bool gather)
{
    const KilnType *xt = &x->type;
    if (xt->dt != KILN_F32 || xt->q.fmt != KILN_QF_NONE || xt->rank != 2)
        return interp_fail(c, KILN_EINPUT, "operand %%%s must be f32[R,C], got %s", vname(c, sid),
                           kiln_type_str(xt).s);
    const int64_t *idx;
    int64_t n, R = xt->dim[0], C = xt->dim[1];
    int rc = interp_cols_attr(c, "idx", C, &idx, &n);
    if (rc)
        return rc;
    KilnType want = kiln_type2(KILN_F32, R, gather ? n : C);
    if (!kiln_type_eq(&r->type, &want))
        return interp_fail(c, KILN_EINPUT, "result must be %s, got %s", kiln_type_str(&want).s,
                           kiln_type_str(&r->type).s);
    const float *xs = x->data;
    float *y = r->data;
    for (int64_t i = 0; i < R; i++) {
        if (gather) {
            for (int64_t j = 0; j < n; j++)
                y[i * n + j] = xs[i * C + idx[j]];
        } else {
            memcpy(y + i * C, xs + i * C, sizeof(float) * (size_t)C);
            for (int64_t j = 0; j < n; j++)
                y[i * C + idx[j]] = 0.0f;
        }
    }
    return 0;
}

static int op_prepack(Interp *c, int sid, const KilnTensor *src, KilnTensor *r)
{
    if (!kiln_type_eq(&src->type, &r->type))
        return interp_fail(c, KILN_EINPUT, "prepack keeps the type: operand %%%s is %s, result %s",
                           vname(c, sid), kiln_type_str(&src->type).s, kiln_type_str(&r->type).s);
    KilnTensor tmp;
    if (copy_tensor(&tmp, src))
        return oom(c);
    kiln_tensor_free(r);
    *r = tmp;
    return 0;
}

/* ------------------------------------------------------------------ driver */

static int check_inputs(Interp *c, const KilnTensor *inputs, int ninputs)
{
    if (ninputs != c->f->nparams)
        return interp_fail(c, KILN_EINPUT, "takes %d inputs, got %d", c->f->nparams, ninputs);
    for (int i = 0; i < ninputs; i++) {
        int id = c->f->params[i];
        const KilnType *want = &c->f->values[id].type;
        const KilnTensor *t = &inputs[i];
        if (!kiln_type_eq(&t->type, want))
            return interp_fail(c, KILN_EINPUT, "input %d (%%%s) must be %s, got %s", i, vname(c, id),
                               kiln_type_str(want).s, kiln_type_str(&t->type).s);
        if (!t->data || t->nbytes < kiln_tensor_bytes(want))
            return interp_fail(c, KILN_EINPUT, "input %d (%%%s) holds %zu bytes, %s needs %zu", i,
                               vname(c, id), t->data ? t->nbytes : 0, kiln_type_str(want).s,
                               kiln_tensor_bytes(want));
        if (want->q.fmt != KILN_QF_NONE &&
            (!t->scales || t->nscales != kiln_type_nscales(want) ||
             (kiln_qformat_is_int(want->q.fmt) && !want->q.symmetric && !t->zeros)))
            return interp_fail(c, KILN_EINPUT, "input %d (%%%s) of type %s lacks its %lld scales/zeros",
                               i, vname(c, id), kiln_type_str(want).s, (long long)kiln_type_nscales(want));
        c->vals[id] = *t; /* borrowed: never freed here */
        c->ready[id] = true;
    }
    return 0;
}

static int run_inst(Interp *c, const KilnInst *in, KilnTensor *out, bool *returned)
{
    if ((unsigned)in->op >= KILN_NOPS)
        return interp_fail(c, KILN_EINPUT, "unknown op %d", (int)in->op);
    int lo = kiln_op_min_operands(in->op), hi = kiln_op_max_operands(in->op);
    if (in->nops < lo || in->nops > hi)
        return interp_fail(c, KILN_EINPUT, "takes %d..%d operands, got %d", lo, hi, in->nops);
    const KilnTensor *a[KILN_MAX_OPERANDS] = {0};
    for (int i = 0; i < in->nops; i++) {
        int id = in->ops[i];
        if (id < 0 || id >= c->f->nvalues)
            return interp_fail(c, KILN_EINPUT, "operand %d is not a value (id %d)", i, id);
        if (!c->ready[id])
            return interp_fail(c, KILN_EINPUT, "operand %%%s is used before it is defined", vname(c, id));
        a[i] = &c->vals[id];
    }
    if (in->op == KILN_OP_RETURN) {
        if (copy_tensor(out, a[0]))
            return oom(c);
        *returned = true;
        return 0;
    }
    if (in->result < 0 || in->result >= c->f->nvalues)
        return interp_fail(c, KILN_EINTERNAL, "bad result id %d", in->result);
    KilnTensor *r = &c->vals[in->result];
    const KilnType *rt = &c->f->values[in->result].type;
    int rc = kiln_tensor_alloc(r, rt);
    if (rc)
        return interp_fail(c, rc, rc == KILN_EINPUT
                                      ? "cannot hold a value of type %s (bad shape, granularity auto "
                                        "or a group size <= 0)"
                                      : "out of memory for a value of type %s",
                           kiln_type_str(rt).s);
    c->owned[in->result] = true;
    const int *ids = in->ops;
    switch (in->op) {
    case KILN_OP_WEIGHT: rc = op_weight(c, r); break;
    case KILN_OP_CONST: rc = op_const(c, r); break;
    case KILN_OP_QUANTIZE: rc = op_quantize(c, ids[0], a[0], r); break;
    case KILN_OP_DEQUANTIZE: rc = op_dequantize(c, ids[0], a[0], r); break;
    case KILN_OP_DYNQUANT: rc = op_dynquant(c, ids[0], a[0], r); break;
    case KILN_OP_PACK: rc = op_repack(c, ids[0], a[0], r, true); break;
    case KILN_OP_UNPACK: rc = op_repack(c, ids[0], a[0], r, false); break;
    case KILN_OP_CAST: rc = op_cast(c, ids[0], a[0], r); break;
    case KILN_OP_MATMUL: rc = op_matmul(c, ids, a[0], a[1], r); break;
    case KILN_OP_BIAS_ADD: rc = op_bias_add(c, ids, a[0], a[1], r); break;
    case KILN_OP_SILU: rc = op_activation(c, ids[0], a[0], r, false); break;
    case KILN_OP_GELU: rc = op_activation(c, ids[0], a[0], r, true); break;
    case KILN_OP_ADD: rc = op_add(c, ids, a[0], a[1], r); break;
    case KILN_OP_GATHER_COLS: rc = op_cols(c, ids[0], a[0], r, true); break;
    case KILN_OP_ZERO_COLS: rc = op_cols(c, ids[0], a[0], r, false); break;
    case KILN_OP_PREPACK: rc = op_prepack(c, ids[0], a[0], r); break;
    case KILN_OP_QGEMM: rc = interp_op_qgemm(c, ids, in->nops, a, r); break;
    default: rc = interp_fail(c, KILN_EINTERNAL, "op not handled by the interpreter"); break;
    }
    if (!rc)
        c->ready[in->result] = true;
    return rc;
}

int kiln_interp_run(const KilnFunc *f, const KilnTensor *inputs, int ninputs,
                    KilnWeightFn weights, void *wctx, KilnTensor *out, KilnDiag *d)
{
    return kiln_interp_run_grid(f, inputs, ninputs, weights, wctx, NULL, NULL, out, d);
}

int kiln_interp_run_grid(const KilnFunc *f, const KilnTensor *inputs, int ninputs,
                         KilnWeightFn weights, void *wctx, KilnGridFn grid, void *gctx,
                         KilnTensor *out, KilnDiag *d)
{
    if (out)
        memset(out, 0, sizeof *out);
    if (!f || !out)
        return kiln_diag_set(d, KILN_EINPUT, "interp: no function or no output tensor");
    if (ninputs > 0 && !inputs)
        return kiln_diag_set(d, KILN_EINPUT, "@%s: %d inputs announced but none given", f->name,
                             ninputs);
    size_t nv = (size_t)(f->nvalues > 0 ? f->nvalues : 1);
    Interp c = {.f = f, .d = d, .wfn = weights, .wctx = wctx, .gfn = grid, .gctx = gctx};
    c.vals = calloc(nv, sizeof *c.vals);
    c.ready = calloc(nv, sizeof *c.ready);
    c.owned = calloc(nv, sizeof *c.owned);
    int rc = 0;
    bool returned = false;
    if (!c.vals || !c.ready || !c.owned)
        rc = kiln_diag_set(d, KILN_EINTERNAL, "@%s: out of memory", f->name);
    if (!rc)
        rc = check_inputs(&c, inputs, ninputs);
    for (int i = 0; !rc && !returned && i < f->ninsts; i++) {
        if (f->insts[i].dead)
            continue;
        c.in = &f->insts[i];
        rc = run_inst(&c, c.in, out, &returned);
    }
    c.in = NULL;
    if (!rc && !returned)
        rc = interp_fail(&c, KILN_EINPUT, "function has no return");
    for (size_t i = 0; c.owned && i < nv; i++)
        if (c.owned[i])
            kiln_tensor_free(&c.vals[i]);
    free(c.vals);
    free(c.ready);
    free(c.owned);
    if (rc)
        kiln_tensor_free(out);
    return rc;
}
