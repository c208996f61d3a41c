/* ir/interp_qgemm.c — the reference interpreter's qgemm: the definition every
 * generated kernel is tested against (docs/ir.md, docs/numerics.md): weight-only
 * f32 sums, int x int exact integer sums, fp8 x fp8 f32 sums, the outlier side
 * path, then bias, activation and one rounding to the output dtype. */
#include <stdlib.h>
#include <string.h>

#include "interp.h"

/* Scale index of weight element (n, k) for the weight's granularity. */
static int64_t w_sidx(const KilnQuantSpec *ws, int64_t n, int64_t k, int64_t K)
{
    if (ws->gran == KILN_GRAN_TENSOR)
        return 0;
    if (ws->gran == KILN_GRAN_GROUP)
        return n * ((K + ws->group - 1) / ws->group) + k / ws->group; /* ragged last group */
    return n; /* channel (token on a weight means the same: per row) */
}

static float fp8_dec(KilnQFormat f, int32_t code)
{
    return f == KILN_QF_FP8_E4M3 ? kiln_fp8_e4m3_decode((uint8_t)code)
                                 : kiln_fp8_e5m2_decode((uint8_t)code);
}

/* Row n of the weight as integers q - z (int formats) or unscaled fp8 values. */
static void w_row(const KilnTensor *w, int64_t n, int64_t K, int32_t *qi, float *qf)
{
    const KilnQuantSpec *ws = &w->type.q;
    const uint8_t *row = (const uint8_t *)w->data + (size_t)n * kiln_row_bytes(w->type.dt, K);
    for (int64_t k = 0; k < K; k++) {
        int32_t code = kiln_code_get(w->type.dt, row, k);
        if (qi)
            qi[k] = code - (!ws->symmetric && w->zeros ? w->zeros[w_sidx(ws, n, k, K)] : 0);
        if (qf)
            qf[k] = fp8_dec(ws->fmt, code);
    }
}

/* Quantize activations x[M,K] per the act spec: codes[M*K] and per-row s_a, z_a. */
static int quant_act(Interp *c, const KilnQuantSpec *act, const float *x, int64_t M, int64_t K,
                     int32_t *codes, float *sa, int32_t *za)
{
    KilnQuantSpec q = *act;
    if (q.gran != KILN_GRAN_TOKEN && q.gran != KILN_GRAN_TENSOR)
        return interp_fail(c, KILN_EINPUT, "act granularity must be token or tensor, got %s",
                           kiln_gran_name(q.gran));
    if (q.dynamic)
        q.scale = 0;
    else if (!(q.scale > 0.0f))
        return interp_fail(c, KILN_EINPUT, "static activation scale not calibrated (act spec has scale "
                                           "0 and is not dynamic)");
    bool sym = q.symmetric || kiln_qformat_is_fp8(q.fmt);
    KilnType t = kiln_type2(kiln_qformat_storage(q.fmt, sym), M, K);
    t.q = q;
    KilnTensor qa;
    if (kiln_tensor_alloc(&qa, &t))
        return oom(c);
    KilnDiag sub = {0};
    int rc = kiln_quantize_matrix(&q, x, M, K, qa.data, qa.scales, qa.zeros, &sub);
    if (rc) {
        kiln_tensor_free(&qa);
        return interp_fail(c, rc, "activations: %s", sub.msg);
    }
    size_t rb = kiln_row_bytes(t.dt, K);
    for (int64_t m = 0; m < M; m++) {
        int64_t si = q.gran == KILN_GRAN_TOKEN ? m : 0;
        sa[m] = qa.scales[si];
        za[m] = qa.zeros ? qa.zeros[si] : 0;
        for (int64_t k = 0; k < K; k++)
            codes[m * K + k] = kiln_code_get(t.dt, (const uint8_t *)qa.data + (size_t)m * rb, k);
    }
    kiln_tensor_free(&qa);
    return 0;
}

/* Case 1: a = round_to(act_dtype, x); y = Σ_k a·deqW, f32 in ascending k
 * (deqW = w for a plain f32 weight). */
static int qgemm_weight_only(Interp *c, const KilnTensor *xt, const KilnTensor *w, KilnDType adt,
                             int64_t M, int64_t N, int64_t K, float *y)
{
    const KilnQuantSpec *ws = &w->type.q;
    bool sym = ws->symmetric || kiln_qformat_is_fp8(ws->fmt);
    float *a = malloc((size_t)(M * K + 1) * sizeof *a), *dw = malloc((size_t)(K + 1) * sizeof *dw);
    if (!a || !dw) {
        free(a);
        free(dw);
        return oom(c);
    }
    const float *x = xt->data;
    for (int64_t i = 0; i < M * K; i++)
        a[i] = kiln_round_to(adt, x[i]);
    bool f32w = ws->fmt == KILN_QF_NONE; /* an unquantized layer: deqW = w */
    size_t rb = f32w ? (size_t)K * sizeof(float) : kiln_row_bytes(w->type.dt, K);
    for (int64_t n = 0; n < N; n++) {
        const uint8_t *row = (const uint8_t *)w->data + (size_t)n * rb;
        for (int64_t k = 0; k < K && f32w; k++)
            dw[k] = ((const float *)w->data)[n * K + k];
        for (int64_t k = 0; k < K && !f32w; k++) {
            int64_t si = w_sidx(ws, n, k, K);
            KilnQParams p = {w->scales[si], (!sym && w->zeros) ? w->zeros[si] : 0};
            dw[k] = kiln_dequantize_value(ws->fmt, sym, p, kiln_code_get(w->type.dt, row, k));
        }
        for (int64_t m = 0; m < M; m++) {
            float acc = 0.0f;
            for (int64_t k = 0; k < K; k++)
                acc += a[m * K + k] * dw[k];
            y[m * N + n] = acc;
        }
    }
    free(a);
    free(dw);
    return 0;
}

/* Cases 2 (int x int, exact integer inner sums) and 3 (fp8 x fp8, f32 sums). */
static int qgemm_quantized(Interp *c, const KilnQuantSpec *act, const KilnTensor *xt,
                           const KilnTensor *w, int64_t M, int64_t N, int64_t K, float *y)
{
    const KilnQuantSpec *ws = &w->type.q;
    bool fp8 = kiln_qformat_is_fp8(act->fmt);
    int32_t *qa = malloc((size_t)(M * K + 1) * sizeof *qa);
    int32_t *qw = malloc((size_t)(K + 1) * sizeof *qw);
    float *da = malloc((size_t)(M * K + 1) * sizeof *da), *dw = malloc((size_t)(K + 1) * sizeof *dw);
    float *sa = malloc((size_t)(M + 1) * sizeof *sa);
    int32_t *za = malloc((size_t)(M + 1) * sizeof *za);
    int rc = (qa && qw && da && dw && sa && za) ? 0 : oom(c);
    if (!rc)
        rc = quant_act(c, act, xt->data, M, K, qa, sa, za);
    for (int64_t i = 0; !rc && i < M * K; i++) {
        if (fp8)
            da[i] = fp8_dec(act->fmt, qa[i]);
        else
            qa[i] -= za[i / (K ? K : 1)];
    }
    /* G = ceil(K/g): when g does not divide K the last group covers only K mod g k */
    int64_t g = ws->gran == KILN_GRAN_GROUP ? ws->group : K, G = g ? (K + g - 1) / g : 0;
    for (int64_t n = 0; !rc && n < N; n++) {
        w_row(w, n, K, fp8 ? NULL : qw, fp8 ? dw : NULL);
        for (int64_t m = 0; m < M; m++) {
            float out;
            if (ws->gran == KILN_GRAN_GROUP) {
                /* y = s_a · Σ_j s_w[n,j] · (group sum), outer sum f32 ascending j */
                float accf = 0.0f;
                for (int64_t j = 0; j < G; j++) {
                    float part;
                    int64_t kend = (j + 1) * g < K ? (j + 1) * g : K;
                    if (fp8) {
                        float s = 0.0f;
                        for (int64_t k = j * g; k < kend; k++)
                            s += da[m * K + k] * dw[k];
                        part = s;
                    } else {
                        int64_t s = 0;
                        for (int64_t k = j * g; k < kend; k++)
                            s += (int64_t)qa[m * K + k] * qw[k];
                        part = (float)s;
                    }
                    accf += w->scales[n * G + j] * part;
                }
                out = sa[m] * accf;
            } else if (fp8) {
                float acc = 0.0f;
                for (int64_t k = 0; k < K; k++)
                    acc += da[m * K + k] * dw[k];
                out = (sa[m] * w->scales[w_sidx(ws, n, 0, K)]) * acc;
            } else {
                int64_t acc = 0;
                for (int64_t k = 0; k < K; k++)
                    acc += (int64_t)qa[m * K + k] * qw[k];
                out = ((float)acc * sa[m]) * w->scales[w_sidx(ws, n, 0, K)];
            }
            y[m * N + n] = out;
        }
    }
    free(qa);
    free(qw);
    free(da);
    free(dw);
    free(sa);
    free(za);
    return rc;
}

static int attr_word(Interp *c, const char *key, const char **out)
{
    const KilnAttr *a = kiln_get(c->in, key);
    *out = NULL;
    if (!a)
        return 0;
    if (a->kind != KILN_ATTR_IDENT && a->kind != KILN_ATTR_STR)
        return interp_fail(c, KILN_EINPUT, "attribute %s must be a name", key);
    *out = a->s;
    return 0;
}

/* The outlier side path of a qgemm (docs/ir.md): the columns in `outliers` are zeroed
 * in *xi (a copy of x that the int8 path then quantizes), and side[m,n] =
 * Σ_j x[m,idx_j]·wo[n,j] in f32, ascending j. *xi and *side are malloc'd. */
static int qgemm_outliers(Interp *c, const KilnTensor *x, const KilnTensor *wo, int woid,
                          int64_t N, float **xi, float **side)
{
    int64_t M = x->type.dim[0], K = x->type.dim[1], n;
    const int64_t *idx;
    *xi = *side = NULL;
    int rc = interp_cols_attr(c, "outliers", K, &idx, &n);
    if (rc)
        return rc;
    KilnType want = kiln_type2(KILN_F32, N, n);
    if (!kiln_type_eq(&wo->type, &want))
        return interp_fail(c, KILN_EINPUT, "outlier weight %%%s must be %s, got %s", vname(c, woid),
                           kiln_type_str(&want).s, kiln_type_str(&wo->type).s);
    const float *xs = x->data, *w = wo->data;
    *xi = malloc(sizeof(float) * (size_t)(M * K + 1));
    *side = malloc(sizeof(float) * (size_t)(M * N + 1));
    if (!*xi || !*side) {
        free(*xi);
        free(*side);
        *xi = *side = NULL;
        return oom(c);
    }
    memcpy(*xi, xs, sizeof(float) * (size_t)(M * K));
    for (int64_t m = 0; m < M; m++) {
        for (int64_t j = 0; j < n; j++)
            (*xi)[m * K + idx[j]] = 0.0f;
        for (int64_t o = 0; o < N; o++) {
            float acc = 0.0f;
            for (int64_t j = 0; j < n; j++)
                acc += xs[m * K + idx[j]] * w[o * n + j];
            (*side)[m * N + o] = acc;
        }
    }
    return 0;
}

int interp_op_qgemm(Interp *c, const int *ids, int nops, const KilnTensor *const *a,
                    KilnTensor *r)
{
    int wo_at = kiln_qgemm_outlier_w(c->in) >= 0 ? nops - 1 : -1;
    int bias_at = (nops - (wo_at >= 0 ? 1 : 0)) == 3 ? 2 : -1;
    if (kiln_get(c->in, "outliers") && wo_at < 0)
        return interp_fail(c, KILN_EINPUT, "outliers need the outlier weight as the last operand");
    const KilnTensor *x = a[0], *w = a[1], *bias = bias_at >= 0 ? a[bias_at] : NULL;
    const KilnType *xt = &x->type, *wt = &w->type, *rt = &r->type;
    if (xt->dt != KILN_F32 || xt->q.fmt != KILN_QF_NONE || xt->rank != 2)
        return interp_fail(c, KILN_EINPUT, "activations %%%s must be f32[M,K], got %s", vname(c, ids[0]),
                           kiln_type_str(xt).s);
    const KilnQuantSpec *ws = &wt->q;
    bool f32w = ws->fmt == KILN_QF_NONE && wt->dt == KILN_F32; /* unquantized layer */
    if ((ws->fmt == KILN_QF_NONE && !f32w) || wt->rank != 2 ||
        (!f32w && wt->dt != kiln_qformat_storage(ws->fmt, ws->symmetric || kiln_qformat_is_fp8(ws->fmt))))
        return interp_fail(c, KILN_EINPUT, "weight %%%s must be a quantized or f32 [N,K] value, got %s",
                           vname(c, ids[1]), kiln_type_str(wt).s);
    int64_t M = xt->dim[0], K = xt->dim[1], N = wt->dim[0];
    if (wt->dim[1] != K)
        return interp_fail(c, KILN_EINPUT, "activations %%%s are %s but weight %%%s is %s: K differs (%lld vs %lld)",
                           vname(c, ids[0]), kiln_type_str(xt).s, vname(c, ids[1]), kiln_type_str(wt).s,
                           (long long)K, (long long)wt->dim[1]);
    if (!is_float_dt(rt->dt) || rt->q.fmt != KILN_QF_NONE || rt->rank != 2 || rt->dim[0] != M ||
        rt->dim[1] != N)
        return interp_fail(c, KILN_EINPUT, "result must be f32, f16 or bf16 [%lld,%lld], got %s",
                           (long long)M, (long long)N, kiln_type_str(rt).s);
    if (bias && (bias->type.dt != KILN_F32 || bias->type.q.fmt != KILN_QF_NONE ||
                 bias->type.rank != 1 || bias->type.dim[0] != N))
        return interp_fail(c, KILN_EINPUT, "bias %%%s must be f32[%lld], got %s", vname(c, ids[bias_at]),
                           (long long)N, kiln_type_str(&bias->type).s);
    if (!f32w && (ws->gran == KILN_GRAN_AUTO ||
                  (ws->gran == KILN_GRAN_GROUP && ws->group <= 0)))
        return interp_fail(c, KILN_EINPUT, "weight %s: granularity must be tensor, channel or a group "
                                           "> 0 (K=%lld)", kiln_type_str(wt).s, (long long)K);
    if (!f32w && (!w->scales || w->nscales != kiln_type_nscales(wt) ||
                  (kiln_qformat_is_int(ws->fmt) && !ws->symmetric && !w->zeros)))
        return interp_fail(c, KILN_EINPUT, "weight %%%s lacks its %lld scales/zero points",
                           vname(c, ids[1]), (long long)kiln_type_nscales(wt));
    const char *epi, *adt_name;
    int rc = attr_word(c, "epilogue", &epi);
    if (!rc)
        rc = attr_word(c, "act_dtype", &adt_name);
    if (rc)
        return rc;
    if (epi && strcmp(epi, "none") && strcmp(epi, "silu") && strcmp(epi, "gelu"))
        return interp_fail(c, KILN_EINPUT, "unknown epilogue %s (none, silu or gelu)", epi);
    const KilnAttr *act = kiln_get(c->in, "act");
    if (act && act->kind != KILN_ATTR_SPEC)
        return interp_fail(c, KILN_EINPUT, "attribute act must be a spec");
    float *xi = NULL, *side = NULL; /* the outlier split, when the qgemm has one */
    if (wo_at >= 0) {
        if (!act || act->q.fmt != KILN_QF_INT8)
            return interp_fail(c, KILN_EINPUT, "outliers need int8 activations");
        if ((rc = qgemm_outliers(c, x, a[wo_at], ids[wo_at], N, &xi, &side)))
            return rc;
    }
    KilnTensor xin = *x;
    if (xi)
        xin.data = xi;
    x = &xin;
    float *y = malloc((size_t)(M * N + 1) * sizeof *y);
    if (!y) {
        free(xi);
        free(side);
        return oom(c);
    }
    if (!act || act->q.fmt == KILN_QF_NONE) {
        KilnDType adt;
        if (!adt_name || kiln_dtype_parse(adt_name, strlen(adt_name), &adt) || !is_float_dt(adt))
            rc = interp_fail(c, KILN_EINPUT, "weight-only qgemm needs act_dtype = f32, f16 or bf16%s%s",
                             adt_name ? ", got " : "", adt_name ? adt_name : "");
        else
            rc = qgemm_weight_only(c, x, w, adt, M, N, K, y);
    } else if (f32w) {
        rc = interp_fail(c, KILN_EINPUT, "act %s with f32 weight %%%s: an unquantized weight takes "
                                         "act_dtype, not quantized activations",
                         kiln_qformat_name(act->q.fmt), vname(c, ids[1]));
    } else if ((kiln_qformat_is_int(act->q.fmt) && kiln_qformat_is_int(ws->fmt)) ||
               (kiln_qformat_is_fp8(act->q.fmt) && kiln_qformat_is_fp8(ws->fmt))) {
        rc = qgemm_quantized(c, &act->q, x, w, M, N, K, y);
    } else {
        rc = interp_fail(c, KILN_EINPUT, "act %s with a %s weight: integer and fp8 do not mix",
                         kiln_qformat_name(act->q.fmt), kiln_qformat_name(ws->fmt));
    }
    /* the outlier columns' f32 part, then the epilogue: bias, activation, then one
     * rounding to the output dtype */
    for (int64_t i = 0; !rc && i < M * N; i++) {
        float v = y[i];
        if (side)
            v += side[i];
        if (bias)
            v += ((const float *)bias->data)[i % N];
        if (epi && !strcmp(epi, "silu"))
            v = silu_f(v);
        else if (epi && !strcmp(epi, "gelu"))
            v = gelu_f(v);
        store_f(r, i, v);
    }
    free(y);
    free(xi);
    free(side);
    return rc;
}
