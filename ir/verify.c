/* ir/verify.c — the IR verifier: operand counts, operand and result types and
 * shapes, required attributes and quant-spec sanity for every op (docs/ir.md).
 * Every message names the function, the instruction, the operand, expected vs got. */
#include <math.h>
#include <stdarg.h>
#include <string.h>

#include "ir.h"

typedef struct {
    const KilnFunc *f;
    const KilnInst *in; /* NULL while checking the signature */
    KilnDiag *d;
} V;

static int bad(V *v, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* verify: func @"name": %3 = qgemm: <msg> */
static int bad(V *v, const char *fmt, ...)
{
    char msg[768], head[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    const KilnInst *in = v->in;
    if (!in)
        snprintf(head, sizeof head, "verify: func @\"%.120s\"", v->f->name);
    else if (in->result >= 0 && in->result < v->f->nvalues)
        snprintf(head, sizeof head, "verify: func @\"%.120s\": %%%.60s = %s", v->f->name,
                 v->f->values[in->result].name, kiln_op_name(in->op));
    else
        snprintf(head, sizeof head, "verify: func @\"%.120s\": %s", v->f->name,
                 kiln_op_name(in->op));
    return kiln_diag_set_at(v->d, KILN_EINPUT, NULL, in ? in->line : 0, "%s: %s", head, msg);
}

/* ---------------------------------------------------------------- helpers */

static const KilnType *ty(const V *v, int val) { return &v->f->values[val].type; }
static const char *nm(const V *v, int val) { return v->f->values[val].name; }

static bool is_float_dt(KilnDType dt) { return dt == KILN_F32 || dt == KILN_F16 || dt == KILN_BF16; }
static bool quantized(const KilnType *t) { return t->q.fmt != KILN_QF_NONE; }
static bool plain(const KilnType *t, KilnDType dt) { return t->dt == dt && !quantized(t); }

/* A quantized type's dtype: its format's storage, or for int4 also the
 * unpacked one-code-per-byte form (i8/u8) that pack/unpack convert. */
static bool storage_ok(const KilnType *t)
{
    if (t->dt == kiln_qformat_storage(t->q.fmt, t->q.symmetric))
        return true;
    return t->q.fmt == KILN_QF_INT4 && t->dt == (t->q.symmetric ? KILN_I8 : KILN_U8);
}

static int check_type(V *v, const char *what, const KilnType *t)
{
    if ((unsigned)t->dt >= KILN_NDTYPES || t->rank < 0 || t->rank > KILN_MAX_RANK ||
        (unsigned)t->q.fmt >= KILN_NQFORMATS || (unsigned)t->q.gran >= KILN_NGRANS)
        return bad(v, "%s has a malformed type", what);
    for (int i = 0; i < t->rank; i++)
        if (t->dim[i] <= 0)
            return bad(v, "%s has dimension %d = %lld, expected > 0", what, i,
                       (long long)t->dim[i]);
    if (quantized(t) && !storage_ok(t))
        return bad(v, "%s: type %s stores %s codes, expected dtype %s", what, kiln_type_str(t).s,
                   kiln_qformat_name(t->q.fmt),
                   kiln_dtype_name(kiln_qformat_storage(t->q.fmt, t->q.symmetric)));
    return 0;
}

typedef enum { ROLE_WEIGHT, ROLE_ACT, ROLE_ANY } Role;

/* Spec sanity independent of the op; `last` is the size of the dimension a
 * group runs along (K), 0 when unknown. A group need not divide it: the last group of
 * a row is then ragged (K mod group elements, its own scale; docs/numerics.md). */
static int check_spec(V *v, const char *what, const KilnQuantSpec *q, Role role, int rank,
                      int64_t last)
{
    (void)last;
    if (q->fmt == KILN_QF_NONE)
        return bad(v, "%s: spec has format none", what);
    if (kiln_qformat_is_fp8(q->fmt) && !q->symmetric)
        return bad(v, "%s: %s must be symmetric", what, kiln_qformat_name(q->fmt));
    if (q->gran == KILN_GRAN_GROUP) {
        if (q->group <= 0)
            return bad(v, "%s: group size %d, expected > 0", what, (int)q->group);
    }
    if ((q->gran == KILN_GRAN_GROUP || q->gran == KILN_GRAN_CHANNEL) && role == ROLE_ACT)
        return bad(v, "%s: granularity %s is for weights, not activations", what,
                   q->gran == KILN_GRAN_GROUP ? "group" : "channel");
    if (q->gran == KILN_GRAN_TOKEN && (role == ROLE_WEIGHT || rank != 2))
        return bad(v, "%s: granularity token is for rank-2 activations", what);
    if (q->calib == KILN_CAL_PERCENTILE && !(q->pct > 0 && q->pct <= 100))
        return bad(v, "%s: pct=%g, expected in (0,100]", what, (double)q->pct);
    if (q->calib == KILN_CAL_MSE && q->dynamic) /* kernels take dynamic scales by min/max */
        return bad(v, "%s: calib=mse chooses a static scale, but the spec is dynamic", what);
    if (!(q->scale >= 0) || isinf(q->scale))
        return bad(v, "%s: scale=%g, expected finite and >= 0", what, (double)q->scale);
    if (q->symmetric && q->zero != 0)
        return bad(v, "%s: symmetric spec with zero=%d", what, (int)q->zero);
    int zmax = q->fmt == KILN_QF_INT4 ? 15 : 255;
    if (!q->symmetric && kiln_qformat_is_int(q->fmt) && (q->zero < 0 || q->zero > zmax))
        return bad(v, "%s: zero=%d out of range 0..%d", what, (int)q->zero, zmax);
    return 0;
}

static const KilnAttr *need_attr(V *v, const char *key, KilnAttrKind kind, const char *kname,
                                 int *rc)
{
    const KilnAttr *a = kiln_get(v->in, key);
    if (!a)
        *rc = bad(v, "missing required attribute '%s' (%s)", key, kname);
    else if (a->kind != kind)
        *rc = bad(v, "attribute '%s' must be %s", key, kname), a = NULL;
    return a;
}

/* ---------------------------------------------------------------- ops */

bool kiln_value_is_weight(const KilnFunc *f, int v)
{
    int def = f->values[v].def;
    if (def < 0)
        return false;
    KilnOp op = f->insts[def].op;
    return op == KILN_OP_WEIGHT || op == KILN_OP_CONST;
}

static int check_unary_quant(V *v, const KilnType *x, const KilnType *r, int a)
{
    char what[176];
    if (!plain(x, KILN_F32))
        return bad(v, "operand 1 (%%%s): expected f32, got %s", nm(v, a), kiln_type_str(x).s);
    if (!quantized(r))
        return bad(v, "result: expected a quantized type, got %s", kiln_type_str(r).s);
    if (!kiln_type_same_shape(x, r))
        return bad(v, "result %s: shape differs from operand 1 (%%%s) %s", kiln_type_str(r).s,
                   nm(v, a), kiln_type_str(x).s);
    snprintf(what, sizeof what, "result %s", kiln_type_str(r).s);
    Role role = kiln_value_is_weight(v->f, a) ? ROLE_WEIGHT : ROLE_ACT;
    return check_spec(v, what, &r->q, role, r->rank, r->rank ? r->dim[r->rank - 1] : 0);
}

/* A column list attribute: [i0, i1, ...], strictly ascending, each in [0, cols). */
static const KilnAttr *check_cols(V *v, const char *key, int64_t cols, int *rc)
{
    const KilnAttr *a = need_attr(v, key, KILN_ATTR_INTS, "a list of column indices [i, ...]", rc);
    if (!a)
        return NULL;
    if (a->nints == 0) {
        *rc = bad(v, "attribute '%s' is an empty list; list at least one column", key);
        return NULL;
    }
    for (int64_t i = 0; i < a->nints; i++) {
        if (a->ints[i] < 0 || a->ints[i] >= cols) {
            *rc = bad(v, "attribute '%s': column %lld out of range 0..%lld", key,
                      (long long)a->ints[i], (long long)cols - 1);
            return NULL;
        }
        if (i > 0 && a->ints[i] <= a->ints[i - 1]) {
            *rc = bad(v, "attribute '%s': columns must be strictly ascending (%lld after %lld)", key,
                      (long long)a->ints[i], (long long)a->ints[i - 1]);
            return NULL;
        }
    }
    return a;
}

/* gather_cols / zero_cols: x f32[R,C] and the idx list. */
static int check_cols_op(V *v, const KilnType *x, const KilnType *r, int a)
{
    int rc = 0;
    if (!plain(x, KILN_F32) || x->rank != 2)
        return bad(v, "operand 1 (%%%s): expected f32[R,C], got %s", nm(v, a), kiln_type_str(x).s);
    const KilnAttr *idx = check_cols(v, "idx", x->dim[1], &rc);
    if (!idx)
        return rc;
    bool gather = v->in->op == KILN_OP_GATHER_COLS;
    KilnType want = kiln_type2(KILN_F32, x->dim[0], gather ? idx->nints : x->dim[1]);
    if (!kiln_type_eq(r, &want))
        return bad(v, "result: expected %s, got %s", kiln_type_str(&want).s, kiln_type_str(r).s);
    return 0;
}

/* The qgemm's outlier side path: `outliers` = the columns, and then a last operand
 * wo f32[N, #columns]; only with int8 activations (docs/ir.md). */
static int check_outliers(V *v, int64_t N, int64_t K, const KilnAttr *act)
{
    const KilnInst *in = v->in;
    int rc = 0;
    if (!kiln_get(in, "outliers")) {
        if (in->nops > 3)
            return bad(v, "4 operands, but no 'outliers' attribute says what operand 4 is");
        return 0;
    }
    const KilnAttr *cols = check_cols(v, "outliers", K, &rc);
    if (!cols)
        return rc;
    if (in->nops < 3)
        return bad(v, "attribute 'outliers' needs the outlier weight f32[%lld,%lld] as the last "
                      "operand", (long long)N, (long long)cols->nints);
    int wo = in->ops[in->nops - 1];
    const KilnType *t = ty(v, wo);
    if (!plain(t, KILN_F32) || t->rank != 2 || t->dim[0] != N || t->dim[1] != cols->nints)
        return bad(v, "operand %d (%%%s): expected the outlier weight f32[%lld,%lld], got %s",
                   in->nops, nm(v, wo), (long long)N, (long long)cols->nints, kiln_type_str(t).s);
    if (!act || act->kind != KILN_ATTR_SPEC || act->q.fmt != KILN_QF_INT8)
        return bad(v, "attribute 'outliers' needs int8 activations (act = {int8 ...})");
    return 0;
}

static int check_qgemm(V *v, const KilnType *r)
{
    const KilnInst *in = v->in;
    int x = in->ops[0], w = in->ops[1];
    const KilnType *tx = ty(v, x), *tw = ty(v, w);
    if (!plain(tx, KILN_F32) || tx->rank != 2)
        return bad(v, "operand 1 (%%%s): expected f32[M,K] activations, got %s", nm(v, x),
                   kiln_type_str(tx).s);
    if (r->rank != 2 || quantized(r) || !is_float_dt(r->dt))
        return bad(v, "result: expected f32, f16 or bf16 [M,N], got %s", kiln_type_str(r).s);
    int64_t M = tx->dim[0], K = tx->dim[1], N = r->dim[1];
    if (r->dim[0] != M)
        return bad(v, "result %s has M=%lld, expected M=%lld from operand 1 (%%%s)",
                   kiln_type_str(r).s, (long long)r->dim[0], (long long)M, nm(v, x));
    /* the weight is quantized, or plain f32 for a layer the recipe leaves unquantized
     * (deqW = w) */
    bool f32w = plain(tw, KILN_F32);
    if ((!quantized(tw) && !f32w) || tw->rank != 2 || tw->dim[0] != N || tw->dim[1] != K)
        return bad(v, "operand 2 (%%%s): expected a quantized or f32 [%lld,%lld] weight, got %s",
                   nm(v, w), (long long)N, (long long)K, kiln_type_str(tw).s);
    char what[96];
    snprintf(what, sizeof what, "operand 2 (%%%.60s)", nm(v, w));
    int rc = f32w ? 0 : check_spec(v, what, &tw->q, ROLE_WEIGHT, 2, K);
    if (rc)
        return rc;
    int bias = kiln_qgemm_bias(in);
    if (bias >= 0) {
        const KilnType *tb = ty(v, bias);
        if (!plain(tb, KILN_F32) || tb->rank != 1 || tb->dim[0] != N)
            return bad(v, "operand 3 (%%%s): expected bias f32[%lld], got %s", nm(v, bias),
                       (long long)N, kiln_type_str(tb).s);
    }
    const KilnAttr *act = kiln_get(in, "act");
    if ((rc = check_outliers(v, N, K, act)))
        return rc;
    if (act) {
        if (act->kind != KILN_ATTR_SPEC)
            return bad(v, "attribute 'act' must be a spec");
        if (f32w)
            return bad(v, "act %s with f32 weight %%%s: an unquantized weight takes "
                          "act_dtype = f32|f16|bf16, not quantized activations",
                       kiln_qformat_name(act->q.fmt), nm(v, w));
        if ((rc = check_spec(v, "act", &act->q, ROLE_ACT, 2, K)))
            return rc;
        if (act->q.fmt == KILN_QF_INT4)
            return bad(v, "act: int4 activations are not supported (int8 or fp8)");
        if (act->q.gran != KILN_GRAN_TOKEN && act->q.gran != KILN_GRAN_TENSOR &&
            act->q.gran != KILN_GRAN_AUTO)
            return bad(v, "act: granularity %s, expected token or tensor",
                       kiln_gran_name(act->q.gran));
        if (kiln_qformat_is_int(act->q.fmt) && kiln_qformat_is_fp8(tw->q.fmt))
            return bad(v, "act %s with %s weight %%%s: int activations need an int weight",
                       kiln_qformat_name(act->q.fmt), kiln_qformat_name(tw->q.fmt), nm(v, w));
        if (kiln_qformat_is_fp8(act->q.fmt) && kiln_qformat_is_int(tw->q.fmt))
            return bad(v, "act %s with %s weight %%%s: fp8 activations need an fp8 weight",
                       kiln_qformat_name(act->q.fmt), kiln_qformat_name(tw->q.fmt), nm(v, w));
    } else {
        const KilnAttr *ad = need_attr(v, "act_dtype", KILN_ATTR_IDENT, "ident f32|f16|bf16", &rc);
        if (!ad)
            return rc;
        if (strcmp(ad->s, "f32") && strcmp(ad->s, "f16") && strcmp(ad->s, "bf16"))
            return bad(v, "act_dtype = %s, expected f32, f16 or bf16", ad->s);
    }
    const KilnAttr *ep = kiln_get(in, "epilogue");
    if (ep && (ep->kind != KILN_ATTR_IDENT ||
               (strcmp(ep->s, "none") && strcmp(ep->s, "silu") && strcmp(ep->s, "gelu"))))
        return bad(v, "attribute 'epilogue' must be none, silu or gelu");
    static const char *const strs[] = {"layout", "why"};
    for (int i = 0; i < 2; i++) {
        const KilnAttr *a = kiln_get(in, strs[i]);
        if (a && a->kind != KILN_ATTR_STR)
            return bad(v, "attribute '%s' must be a string", strs[i]);
    }
    return 0;
}

/* quantize, dynquant, dequantize, pack, unpack: between float tensors and codes. */
static int check_quant_op(V *v, const KilnType *ta, const KilnType *r, int a)
{
    const KilnInst *in = v->in;
    int rc = 0;
    switch (in->op) {
    case KILN_OP_QUANTIZE:
        if ((rc = check_unary_quant(v, ta, r, a)))
            return rc;
        if (r->q.dynamic)
            return bad(v, "result %s: dynamic specs belong to dynquant", kiln_type_str(r).s);
        return 0;
    case KILN_OP_DYNQUANT:
        if ((rc = check_unary_quant(v, ta, r, a)))
            return rc;
        if (!r->q.dynamic)
            return bad(v, "result %s: expected a dynamic spec", kiln_type_str(r).s);
        if (r->q.gran != KILN_GRAN_TOKEN && r->q.gran != KILN_GRAN_TENSOR &&
            r->q.gran != KILN_GRAN_AUTO) /* until pick_layout resolves the qgemm's act */
            return bad(v, "result %s: granularity %s, expected token, tensor or auto", kiln_type_str(r).s,
                       kiln_gran_name(r->q.gran));
        if (r->q.fmt == KILN_QF_INT4)
            return bad(v, "result %s: dynquant supports int8 and fp8", kiln_type_str(r).s);
        return 0;
    case KILN_OP_DEQUANTIZE:
        if (!quantized(ta))
            return bad(v, "operand 1 (%%%s): expected a quantized tensor, got %s", nm(v, a),
                       kiln_type_str(ta).s);
        if (!plain(r, KILN_F32) || !kiln_type_same_shape(ta, r))
            return bad(v, "result: expected f32 of operand 1's shape, got %s", kiln_type_str(r).s);
        return 0;
    case KILN_OP_PACK:
    case KILN_OP_UNPACK: {
        bool pack = in->op == KILN_OP_PACK;
        KilnDType wide = ta->q.symmetric ? KILN_I8 : KILN_U8;
        KilnDType narrow = ta->q.symmetric ? KILN_I4 : KILN_U4;
        if (ta->q.fmt != KILN_QF_INT4 || ta->dt != (pack ? wide : narrow))
            return bad(v, "operand 1 (%%%s): expected %s codes with an int4 spec, got %s",
                       nm(v, a), pack ? "unpacked i8/u8" : "packed i4/u4", kiln_type_str(ta).s);
        KilnType want = *ta;
        want.dt = pack ? narrow : wide;
        if (!kiln_type_eq(r, &want))
            return bad(v, "result: expected %s, got %s", kiln_type_str(&want).s,
                       kiln_type_str(r).s);
        return 0;
    }
    default: return 0;
    }
}

/* cast, matmul, bias_add, silu, gelu, add: plain float tensors in and out. */
static int check_float_op(V *v, const KilnType *ta, const KilnType *tb, const KilnType *r, int a,
                          int b)
{
    switch (v->in->op) {
    case KILN_OP_CAST:
        if (quantized(ta) || !is_float_dt(ta->dt))
            return bad(v, "operand 1 (%%%s): expected f32, f16 or bf16, got %s", nm(v, a),
                       kiln_type_str(ta).s);
        if (quantized(r) || !is_float_dt(r->dt) || !kiln_type_same_shape(ta, r))
            return bad(v, "result: expected f32, f16 or bf16 of operand 1's shape, got %s",
                       kiln_type_str(r).s);
        return 0;
    case KILN_OP_MATMUL:
        if (!plain(ta, KILN_F32) || ta->rank != 2)
            return bad(v, "operand 1 (%%%s): expected f32[M,K], got %s", nm(v, a),
                       kiln_type_str(ta).s);
        if (!plain(tb, KILN_F32) || tb->rank != 2)
            return bad(v, "operand 2 (%%%s): expected f32[N,K], got %s", nm(v, b),
                       kiln_type_str(tb).s);
        if (tb->dim[1] != ta->dim[1])
            return bad(v, "operand 2 (%%%s) has K=%lld, expected K=%lld to match operand 1 (%%%s)",
                       nm(v, b), (long long)tb->dim[1], (long long)ta->dim[1], nm(v, a));
        if (!plain(r, KILN_F32) || r->rank != 2 || r->dim[0] != ta->dim[0] ||
            r->dim[1] != tb->dim[0])
            return bad(v, "result: expected f32[%lld,%lld], got %s", (long long)ta->dim[0],
                       (long long)tb->dim[0], kiln_type_str(r).s);
        return 0;
    case KILN_OP_BIAS_ADD:
        if (!plain(ta, KILN_F32) || ta->rank != 2)
            return bad(v, "operand 1 (%%%s): expected f32[M,N], got %s", nm(v, a),
                       kiln_type_str(ta).s);
        if (!plain(tb, KILN_F32) || tb->rank != 1 || tb->dim[0] != ta->dim[1])
            return bad(v, "operand 2 (%%%s): expected bias f32[%lld], got %s", nm(v, b),
                       (long long)ta->dim[1], kiln_type_str(tb).s);
        if (!kiln_type_eq(r, ta))
            return bad(v, "result: expected %s, got %s", kiln_type_str(ta).s, kiln_type_str(r).s);
        return 0;
    case KILN_OP_SILU:
    case KILN_OP_GELU:
        if (quantized(ta) || !is_float_dt(ta->dt))
            return bad(v, "operand 1 (%%%s): expected f32, f16 or bf16, got %s", nm(v, a),
                       kiln_type_str(ta).s);
        if (!kiln_type_eq(r, ta))
            return bad(v, "result: expected %s, got %s", kiln_type_str(ta).s, kiln_type_str(r).s);
        return 0;
    case KILN_OP_ADD:
        if (!plain(ta, KILN_F32))
            return bad(v, "operand 1 (%%%s): expected f32, got %s", nm(v, a), kiln_type_str(ta).s);
        if (!kiln_type_eq(tb, ta))
            return bad(v, "operand 2 (%%%s): expected %s (operand 1's type), got %s", nm(v, b),
                       kiln_type_str(ta).s, kiln_type_str(tb).s);
        if (!kiln_type_eq(r, ta))
            return bad(v, "result: expected %s, got %s", kiln_type_str(ta).s, kiln_type_str(r).s);
        return 0;
    default: return 0;
    }
}

static int check_op(V *v)
{
    const KilnInst *in = v->in;
    const KilnType *r = in->result >= 0 ? ty(v, in->result) : NULL;
    int a = in->nops > 0 ? in->ops[0] : -1, b = in->nops > 1 ? in->ops[1] : -1;
    const KilnType *ta = a >= 0 ? ty(v, a) : NULL, *tb = b >= 0 ? ty(v, b) : NULL;
    int rc = 0;
    switch (in->op) {
    case KILN_OP_WEIGHT:
        if (!need_attr(v, "name", KILN_ATTR_STR, "string", &rc))
            return rc;
        if (!plain(r, KILN_F32))
            return bad(v, "result: expected f32, got %s", kiln_type_str(r).s);
        return 0;
    case KILN_OP_CONST: {
        const KilnAttr *c = kiln_get(in, "value");
        if (!c)
            return bad(v, "missing required attribute 'value' (int or float)");
        if (c->kind != KILN_ATTR_INT && c->kind != KILN_ATTR_FLOAT)
            return bad(v, "attribute 'value' must be an int or a float");
        if (quantized(r))
            return bad(v, "result: expected a plain tensor, got %s", kiln_type_str(r).s);
        return 0;
    }
    case KILN_OP_QUANTIZE:
    case KILN_OP_DYNQUANT:
    case KILN_OP_DEQUANTIZE:
    case KILN_OP_PACK:
    case KILN_OP_UNPACK: return check_quant_op(v, ta, r, a);
    case KILN_OP_CAST:
    case KILN_OP_MATMUL:
    case KILN_OP_BIAS_ADD:
    case KILN_OP_SILU:
    case KILN_OP_GELU:
    case KILN_OP_ADD: return check_float_op(v, ta, tb, r, a, b);
    case KILN_OP_GATHER_COLS:
    case KILN_OP_ZERO_COLS: return check_cols_op(v, ta, r, a);
    case KILN_OP_PREPACK:
        if (!quantized(ta) && !plain(ta, KILN_F32))
            return bad(v, "operand 1 (%%%s): expected a quantized or f32 weight, got %s",
                       nm(v, a), kiln_type_str(ta).s);
        if (!kiln_type_eq(r, ta))
            return bad(v, "result: expected %s (the operand's type), got %s", kiln_type_str(ta).s,
                       kiln_type_str(r).s);
        if (!need_attr(v, "layout", KILN_ATTR_STR, "string", &rc))
            return rc;
        return 0;
    case KILN_OP_QGEMM: return check_qgemm(v, r);
    case KILN_OP_RETURN: return 0;
    default: return bad(v, "unknown op %d", (int)in->op);
    }
}

/* ---------------------------------------------------------------- functions */

int kiln_verify_func(const KilnFunc *f, KilnDiag *d)
{
    V v = {f, NULL, d};
    int rc;
    for (int i = 0; i < f->nparams; i++) {
        char what[96];
        int p = f->params[i];
        if (p < 0 || p >= f->nvalues)
            return bad(&v, "parameter %d has a bad value id", i + 1);
        snprintf(what, sizeof what, "parameter %%%.60s", nm(&v, p));
        if ((rc = check_type(&v, what, ty(&v, p))))
            return rc;
    }
    int last = -1, nret = 0;
    for (int i = 0; i < f->ninsts; i++)
        if (!f->insts[i].dead)
            last = i;
    for (int i = 0; i < f->ninsts; i++) {
        const KilnInst *in = &f->insts[i];
        if (in->dead)
            continue;
        v.in = in;
        if ((unsigned)in->op >= KILN_NOPS)
            return bad(&v, "unknown op %d", (int)in->op);
        int lo = kiln_op_min_operands(in->op), hi = kiln_op_max_operands(in->op);
        if (in->nops < lo || in->nops > hi) {
            if (lo == hi)
                return bad(&v, "expected %d operand%s, got %d", lo, lo == 1 ? "" : "s", in->nops);
            return bad(&v, "expected %d to %d operands, got %d", lo, hi, in->nops);
        }
        for (int j = 0; j < in->nops; j++) {
            int o = in->ops[j];
            if (o < 0 || o >= f->nvalues)
                return bad(&v, "operand %d is not a value (id %d)", j + 1, o);
            int def = f->values[o].def;
            if (def >= i || (def >= 0 && f->insts[def].dead))
                return bad(&v, "operand %d (%%%s) is used before it is defined", j + 1, nm(&v, o));
        }
        if (in->op == KILN_OP_RETURN) {
            nret++;
            if (i != last)
                return bad(&v, "return must be the last instruction");
        } else {
            if (in->result < 0 || in->result >= f->nvalues || f->values[in->result].def != i)
                return bad(&v, "instruction has no result value");
            if ((rc = check_type(&v, "result", ty(&v, in->result))))
                return rc;
        }
        for (int j = 0; j < in->nops; j++) {
            char what[96];
            snprintf(what, sizeof what, "operand %d (%%%.60s)", j + 1, nm(&v, in->ops[j]));
            if ((rc = check_type(&v, what, ty(&v, in->ops[j]))))
                return rc;
        }
        if ((rc = check_op(&v)))
            return rc;
    }
    v.in = NULL;
    if (nret == 0)
        return bad(&v, "function has no return");
    return 0;
}

int kiln_verify_module(const KilnModule *m, KilnDiag *d)
{
    for (int i = 0; i < m->nfuncs; i++) {
        int rc = kiln_verify_func(m->funcs[i], d);
        if (rc)
            return rc;
    }
    return 0;
}
