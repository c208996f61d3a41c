/* tests/test_interp.c — the reference interpreter on small builder-made functions:
 * hand-computed results, qgemm against an independent double-precision computation,
 * and the errors a bad function or bad inputs must give. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ir/numerics.h"

/* ------------------------------------------------------------------ helpers */

typedef struct {
    const char *name;
    const float *v;
    int64_t n;
} NamedWeight;

typedef struct {
    NamedWeight w[4];
    int n;
} Weights;

static int provide(void *ctx, const char *name, KilnTensor *out, KilnDiag *d)
{
    Weights *ws = ctx;
    for (int i = 0; i < ws->n; i++) {
        if (strcmp(ws->w[i].name, name))
            continue;
        int64_t want = kiln_type_numel(&out->type);
        if (want != ws->w[i].n)
            return kiln_diag_set(d, KILN_EINPUT, "weight %s has %lld values, want %lld", name,
                                 (long long)ws->w[i].n, (long long)want);
        memcpy(out->data, ws->w[i].v, (size_t)want * sizeof(float));
        return 0;
    }
    return kiln_diag_set(d, KILN_EINPUT, "no weight named %s", name);
}

static KilnTensor f32_tensor(int64_t r, int64_t c, const float *v)
{
    KilnTensor t;
    KilnType ty = kiln_type2(KILN_F32, r, c);
    assert_int_equal(kiln_tensor_alloc(&t, &ty), 0);
    memcpy(t.data, v, (size_t)(r * c) * sizeof(float));
    return t;
}

static KilnQuantSpec spec(KilnQFormat f, bool sym, KilnGran g, int group)
{
    KilnQuantSpec s = {.fmt = f, .symmetric = sym, .gran = g, .group = group};
    return s;
}

static KilnType qtype(KilnQuantSpec s, int64_t r, int64_t c)
{
    KilnType t = kiln_type2(kiln_qformat_storage(s.fmt, s.symmetric), r, c);
    t.q = s;
    return t;
}

static int emit_weight(KilnFunc *f, const char *name, KilnType t)
{
    int id = kiln_emit(f, KILN_OP_WEIGHT, NULL, 0, t, NULL);
    kiln_set_str(f, kiln_last(f), "name", name);
    return id;
}

static void emit_return(KilnFunc *f, int v) { kiln_emit(f, KILN_OP_RETURN, &v, 1, kiln_type1(KILN_F32, 0), NULL); }

/* Deterministic pseudo-random values in [-1, 1). */
static void fill(float *x, int64_t n, uint32_t seed)
{
    for (int64_t i = 0; i < n; i++) {
        seed = seed * 1664525u + 1013904223u;
        x[i] = (float)((seed >> 8) & 0xffff) / 32768.0f - 1.0f;
    }
}

/* ------------------------------------------------------------------ plain ops */

static void test_matmul_hand(void **state)
{
    (void)state;
    /* a = [[1,2,3],[4,5,6]], b = [[1,0,-1],[2,1,0.5]]; y = a·bᵀ:
     * y00 = 1-3 = -2, y01 = 2+2+1.5 = 5.5, y10 = 4-6 = -2, y11 = 8+5+3 = 16 */
    float a[6] = {1, 2, 3, 4, 5, 6}, b[6] = {1, 0, -1, 2, 1, 0.5f};
    KilnModule *m = kiln_module_new();
    KilnFunc *f = kiln_func_new(m, "mm");
    int x = kiln_func_param(f, "x", kiln_type2(KILN_F32, 2, 3));
    int w = emit_weight(f, "b", kiln_type2(KILN_F32, 2, 3));
    int ops[2] = {x, w};
    int y = kiln_emit(f, KILN_OP_MATMUL, ops, 2, kiln_type2(KILN_F32, 2, 2), NULL);
    emit_return(f, y);
    Weights ws = {{{"b", b, 6}}, 1};
    KilnTensor in = f32_tensor(2, 3, a), out;
    KilnDiag d = {0};
    assert_int_equal(kiln_interp_run(f, &in, 1, provide, &ws, &out, &d), 0);
    const float *o = out.data;
    assert_true(o[0] == -2.0f && o[1] == 5.5f && o[2] == -2.0f && o[3] == 16.0f);
    assert_int_equal(out.type.dim[0], 2);
    kiln_tensor_free(&out);
    kiln_tensor_free(&in);
    kiln_module_free(m);
}

static void test_elementwise(void **state)
{
    (void)state;
    /* y = gelu(silu(cast_f32(cast_f16(x)) + bias)) checked against libm in double */
    float xv[4] = {1.0001f, -2.0f, 0.5f, 3.0f}, bv[2] = {0.25f, -1.0f};
    KilnModule *m = kiln_module_new();
    KilnFunc *f = kiln_func_new(m, "ew");
    int x = kiln_func_param(f, "x", kiln_type2(KILN_F32, 2, 2));
    int h = kiln_emit(f, KILN_OP_CAST, &x, 1, kiln_type2(KILN_F16, 2, 2), NULL);
    int xf = kiln_emit(f, KILN_OP_CAST, &h, 1, kiln_type2(KILN_F32, 2, 2), NULL);
    int b = emit_weight(f, "bias", kiln_type1(KILN_F32, 2));
    int ops[2] = {xf, b};
    int s = kiln_emit(f, KILN_OP_BIAS_ADD, ops, 2, kiln_type2(KILN_F32, 2, 2), NULL);
    int s1 = kiln_emit(f, KILN_OP_SILU, &s, 1, kiln_type2(KILN_F32, 2, 2), NULL);
    int g = kiln_emit(f, KILN_OP_GELU, &s1, 1, kiln_type2(KILN_F32, 2, 2), NULL);
    int p = kiln_emit(f, KILN_OP_PREPACK, &g, 1, kiln_type2(KILN_F32, 2, 2), NULL);
    emit_return(f, p);
    Weights ws = {{{"bias", bv, 2}}, 1};
    KilnTensor in = f32_tensor(2, 2, xv), out;
    KilnDiag d = {0};
    assert_int_equal(kiln_interp_run(f, &in, 1, provide, &ws, &out, &d), 0);
    for (int i = 0; i < 4; i++) {
        double v = (i == 0 ? 1.0 : xv[i]) + bv[i % 2]; /* 1.0001 is 1.0 in f16 */
        v = v / (1 + exp(-v));
        v = 0.5 * v * (1 + erf(v / sqrt(2.0)));
        assert_float_equal(((float *)out.data)[i], v, 1e-6);
    }
    kiln_tensor_free(&out);
    kiln_tensor_free(&in);
    kiln_module_free(m);
}

static void test_const_pack_unpack(void **state)
{
    (void)state;
    /* const 1.5 splat [1,3] -> quantize int4 sym tensor with a weight-like const source:
     * amax 1.5 -> s = 1.5/7; codes all 7. Through unpack (i4 -> i8) and pack back. */
    KilnModule *m = kiln_module_new();
    KilnFunc *f = kiln_func_new(m, "cp");
    int c = kiln_emit(f, KILN_OP_CONST, NULL, 0, kiln_type2(KILN_F32, 1, 3), NULL);
    kiln_set_float(f, kiln_last(f), "value", 1.5);
    KilnQuantSpec s4 = spec(KILN_QF_INT4, true, KILN_GRAN_TENSOR, 0);
    int q = kiln_emit(f, KILN_OP_QUANTIZE, &c, 1, qtype(s4, 1, 3), NULL);
    KilnType t8 = kiln_type2(KILN_I8, 1, 3);
    t8.q = s4;
    int u = kiln_emit(f, KILN_OP_UNPACK, &q, 1, t8, NULL);
    int p = kiln_emit(f, KILN_OP_PACK, &u, 1, qtype(s4, 1, 3), NULL);
    emit_return(f, p);
    KilnTensor out;
    KilnDiag d = {0};
    assert_int_equal(kiln_interp_run(f, NULL, 0, NULL, NULL, &out, &d), 0);
    const uint8_t *o = out.data;
    assert_int_equal(out.nbytes, 2);
    assert_int_equal(o[0], 0x77);
    assert_int_equal(o[1], 0x07);
    assert_true(out.scales[0] == 1.5f / 7.0f);
    kiln_tensor_free(&out);
    kiln_module_free(m);

    /* pack of an out-of-range code: an i8 input holding 9 */
    m = kiln_module_new();
    f = kiln_func_new(m, "badpack");
    int x = kiln_func_param(f, "c", kiln_type2(KILN_I8, 1, 2));
    p = kiln_emit(f, KILN_OP_PACK, &x, 1, kiln_type2(KILN_I4, 1, 2), NULL);
    emit_return(f, p);
    KilnTensor in;
    KilnType ti = kiln_type2(KILN_I8, 1, 2);
    assert_int_equal(kiln_tensor_alloc(&in, &ti), 0);
    ((int8_t *)in.data)[1] = 9;
    assert_int_equal(kiln_interp_run(f, &in, 1, NULL, NULL, &out, &d), KILN_EINPUT);
    assert_non_null(strstr(d.msg, "code 9 at [0,1]"));
    assert_null(out.data);
    kiln_tensor_free(&in);
    kiln_module_free(m);
}

/* ------------------------------------------------------------------ quantize / dynquant */

static void test_quant_roundtrip(void **state)
{
    (void)state;
    enum { N = 4, K = 64 };
    float w[N * K];
    fill(w, N * K, 7);
    struct {
        KilnQuantSpec s;
        double ulps; /* error bound in units of the slice scale (int) */
    } cases[] = {
        {spec(KILN_QF_INT4, true, KILN_GRAN_GROUP, 16), 0.5},
        {spec(KILN_QF_INT4, false, KILN_GRAN_GROUP, 32), 0.5},
        {spec(KILN_QF_INT8, false, KILN_GRAN_CHANNEL, 0), 0.5},
        {spec(KILN_QF_INT8, true, KILN_GRAN_TENSOR, 0), 0.5},
        {spec(KILN_QF_FP8_E4M3, true, KILN_GRAN_CHANNEL, 0), 0},
    };
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        KilnQuantSpec s = cases[ci].s;
        KilnModule *m = kiln_module_new();
        KilnFunc *f = kiln_func_new(m, "rt");
        int wv = emit_weight(f, "w", kiln_type2(KILN_F32, N, K));
        int q = kiln_emit(f, KILN_OP_QUANTIZE, &wv, 1, qtype(s, N, K), NULL);
        int dq = kiln_emit(f, KILN_OP_DEQUANTIZE, &q, 1, kiln_type2(KILN_F32, N, K), NULL);
        emit_return(f, dq);
        Weights ws = {{{"w", w, N * K}}, 1};
        KilnTensor out;
        KilnDiag d = {0};
        assert_int_equal(kiln_interp_run(f, NULL, 0, provide, &ws, &out, &d), 0);
        const float *y = out.data;
        int64_t gs = s.gran == KILN_GRAN_GROUP ? s.group : s.gran == KILN_GRAN_TENSOR ? N * K : K;
        for (int64_t i = 0; i < N * K; i++) {
            /* the slice's scale recomputed here: minmax range with 0 included */
            int64_t start = i / gs * gs;
            float lo = 0, hi = 0;
            for (int64_t j = start; j < start + gs; j++) {
                lo = fminf(lo, w[j]);
                hi = fmaxf(hi, w[j]);
            }
            double err = fabs((double)w[i] - y[i]);
            if (s.fmt == KILN_QF_FP8_E4M3) /* 3 mantissa bits: half an ulp is 2^-4 relative */
                assert_true(err <= fabs(w[i]) * 0.0625 + fmax(-lo, hi) / 448.0 * 0x1p-10);
            else {
                double scale = s.symmetric ? fmax(-lo, hi) / kiln_qformat_qmax(s.fmt, true)
                                           : (hi - lo) / kiln_qformat_qmax(s.fmt, false);
                if (err > scale * cases[ci].ulps * (1 + 1e-5) + 1e-7)
                    fail_msg("case %zu element %lld: |%g - %g| > %g", ci, (long long)i, w[i], y[i],
                             scale * cases[ci].ulps);
            }
        }
        kiln_tensor_free(&out);
        kiln_module_free(m);
    }
}

static void test_dynquant_token(void **state)
{
    (void)state;
    /* row 0 amax 1.27 -> s = 0.01: 0.5 -> 50, -1.27 -> -127, 0 -> 0, 1 -> 100;
     * row 1 all zero -> s = 1, codes 0 */
    float xv[8] = {0.5f, -1.27f, 0, 1, 0, 0, 0, 0};
    KilnModule *m = kiln_module_new();
    KilnFunc *f = kiln_func_new(m, "dq");
    int x = kiln_func_param(f, "x", kiln_type2(KILN_F32, 2, 4));
    KilnQuantSpec s = spec(KILN_QF_INT8, true, KILN_GRAN_TOKEN, 0);
    s.dynamic = true;
    int q = kiln_emit(f, KILN_OP_DYNQUANT, &x, 1, qtype(s, 2, 4), NULL);
    emit_return(f, q);
    KilnTensor in = f32_tensor(2, 4, xv), out;
    KilnDiag d = {0};
    assert_int_equal(kiln_interp_run(f, &in, 1, NULL, NULL, &out, &d), 0);
    int8_t want[8] = {50, -127, 0, 100, 0, 0, 0, 0};
    assert_memory_equal(out.data, want, 8);
    assert_int_equal(out.nscales, 2);
    assert_true(out.scales[0] == 1.27f / 127.0f && out.scales[1] == 1.0f);
    kiln_tensor_free(&out);
    kiln_tensor_free(&in);
    kiln_module_free(m);
}

static void test_static_act_uncalibrated(void **state)
{
    (void)state;
    KilnModule *m = kiln_module_new();
    KilnFunc *f = kiln_func_new(m, "st");
    int x = kiln_func_param(f, "x", kiln_type2(KILN_F32, 1, 4));
    KilnQuantSpec s = spec(KILN_QF_INT8, true, KILN_GRAN_TENSOR, 0);
    int q = kiln_emit(f, KILN_OP_QUANTIZE, &x, 1, qtype(s, 1, 4), "xq");
    emit_return(f, q);
    float xv[4] = {1, 2, 3, 4};
    KilnTensor in = f32_tensor(1, 4, xv), out;
    KilnDiag d = {0};
    assert_int_equal(kiln_interp_run(f, &in, 1, NULL, NULL, &out, &d), KILN_EINPUT);
    assert_non_null(strstr(d.msg, "static activation scale not calibrated"));
    assert_non_null(strstr(d.msg, "%xq = quantize"));
    /* with a scale it runs: 0.5 -> codes 2, 4, 6, 8 */
    f->values[q].type.q.scale = 0.5f;
    assert_int_equal(kiln_interp_run(f, &in, 1, NULL, NULL, &out, &d), 0);
    int8_t want[4] = {2, 4, 6, 8};
    assert_memory_equal(out.data, want, 4);
    kiln_tensor_free(&out);
    kiln_tensor_free(&in);
    kiln_module_free(m);
}

/* ------------------------------------------------------------------ qgemm */

typedef struct {
    const char *what;
    KilnQuantSpec w;   /* weight spec */
    bool has_act;
    KilnQuantSpec act; /* activation spec when has_act */
    KilnDType act_dtype;
} QCase;

/* Runs %y = qgemm %x, quantize(weight) {attrs}; returns y (caller frees). */
static KilnTensor run_qgemm(const QCase *qc, const float *x, int64_t M, const float *w, int64_t N,
                            int64_t K, const float *bias, const char *epi, KilnDType out_dt)
{
    KilnModule *m = kiln_module_new();
    KilnFunc *f = kiln_func_new(m, "qg");
    int xv = kiln_func_param(f, "x", kiln_type2(KILN_F32, M, K));
    int wv = emit_weight(f, "w", kiln_type2(KILN_F32, N, K));
    int q = kiln_emit(f, KILN_OP_QUANTIZE, &wv, 1, qtype(qc->w, N, K), NULL);
    int pp = kiln_emit(f, KILN_OP_PREPACK, &q, 1, qtype(qc->w, N, K), NULL);
    kiln_set_str(f, kiln_last(f), "layout", "test");
    int ops[3] = {xv, pp, -1};
    if (bias)
        ops[2] = emit_weight(f, "bias", kiln_type1(KILN_F32, N));
    int y = kiln_emit(f, KILN_OP_QGEMM, ops, bias ? 3 : 2, kiln_type2(out_dt, M, N), NULL);
    KilnInst *in = kiln_last(f);
    if (qc->has_act)
        kiln_set_spec(f, in, "act", &qc->act);
    else
        kiln_set_ident(f, in, "act_dtype", kiln_dtype_name(qc->act_dtype));
    if (epi)
        kiln_set_ident(f, in, "epilogue", epi);
    emit_return(f, y);
    Weights ws = {{{"w", w, N * K}, {"bias", bias, N}}, bias ? 2 : 1};
    KilnTensor xin = f32_tensor(M, K, x), out;
    KilnDiag d = {0};
    int rc = kiln_interp_run(f, &xin, 1, provide, &ws, &out, &d);
    if (rc)
        fail_msg("%s: %s", qc->what, d.msg);
    kiln_tensor_free(&xin);
    kiln_module_free(m);
    return out;
}

/* Independent reference: quantize both sides the plain way, dequantize, matmul in double.
 * Returns also Σ|terms| per output for the tolerance. */
static void reference(const QCase *qc, const float *x, int64_t M, const float *w, int64_t N,
                      int64_t K, double *y, double *mag)
{
    double *dw = malloc((size_t)(N * K) * sizeof *dw), *da = malloc((size_t)(M * K) * sizeof *da);
    /* weight: codes and scales per slice by minmax, exactly as docs/numerics.md says */
    const KilnQuantSpec *s = &qc->w;
    int64_t gs = s->gran == KILN_GRAN_GROUP ? s->group : s->gran == KILN_GRAN_TENSOR ? N * K : K;
    bool fp8 = s->fmt == KILN_QF_FP8_E4M3 || s->fmt == KILN_QF_FP8_E5M2;
    for (int64_t start = 0, end; start < N * K; start = end) {
        float lo = 0, hi = 0;
        end = start + gs;
        if (s->gran == KILN_GRAN_GROUP && end > (start / K + 1) * K) /* ragged last group */
            end = (start / K + 1) * K;
        for (int64_t j = start; j < end; j++) {
            lo = fminf(lo, w[j]);
            hi = fmaxf(hi, w[j]);
        }
        KilnQParams p = kiln_qparams_from_range(s->fmt, s->symmetric, lo, hi);
        for (int64_t j = start; j < end; j++) {
            if (fp8) {
                uint8_t b = kiln_fp8_e4m3_encode(w[j] / p.scale);
                dw[j] = (double)kiln_fp8_e4m3_decode(b) * p.scale;
            } else {
                double c = rint(w[j] / p.scale) + p.zero;
                double qmin = kiln_qformat_qmin(s->fmt, s->symmetric);
                double qmax = kiln_qformat_qmax(s->fmt, s->symmetric);
                c = c < qmin ? qmin : c > qmax ? qmax : c;
                dw[j] = (c - p.zero) * p.scale;
            }
        }
    }
    for (int64_t mi = 0; mi < M; mi++) {
        const float *row = x + mi * K;
        if (!qc->has_act) {
            for (int64_t k = 0; k < K; k++)
                da[mi * K + k] = kiln_round_to(qc->act_dtype, row[k]);
            continue;
        }
        const KilnQuantSpec *a = &qc->act;
        float amax = 0;
        for (int64_t k = 0; k < K; k++)
            amax = fmaxf(amax, fabsf(row[k]));
        float sa = a->dynamic ? (amax > 0 ? amax / kiln_qformat_qmax(a->fmt, true) : 1.0f)
                              : a->scale;
        int za = a->dynamic ? 0 : a->zero;
        for (int64_t k = 0; k < K; k++) {
            if (a->fmt == KILN_QF_FP8_E4M3) {
                da[mi * K + k] = (double)kiln_fp8_e4m3_decode(kiln_fp8_e4m3_encode(row[k] / sa)) * sa;
            } else {
                double c = rint(row[k] / sa) + za;
                double qmin = kiln_qformat_qmin(a->fmt, a->symmetric);
                double qmax = kiln_qformat_qmax(a->fmt, a->symmetric);
                c = c < qmin ? qmin : c > qmax ? qmax : c;
                da[mi * K + k] = (c - za) * sa;
            }
        }
    }
    for (int64_t mi = 0; mi < M; mi++)
        for (int64_t n = 0; n < N; n++) {
            double acc = 0, ab = 0;
            for (int64_t k = 0; k < K; k++) {
                acc += da[mi * K + k] * dw[n * K + k];
                ab += fabs(da[mi * K + k] * dw[n * K + k]);
            }
            y[mi * N + n] = acc;
            mag[mi * N + n] = ab;
        }
    free(dw);
    free(da);
}

static void test_qgemm_cases(void **state)
{
    (void)state;
    enum { M = 3, N = 5, K = 64 };
    float x[M * K], w[N * K];
    fill(x, M * K, 1);
    fill(w, N * K, 2);
    memset(x + K, 0, K * sizeof(float)); /* an all-zero row: dynamic scale 1 */
    KilnQuantSpec dyn_tok = spec(KILN_QF_INT8, true, KILN_GRAN_TOKEN, 0);
    dyn_tok.dynamic = true;
    KilnQuantSpec st_asym = spec(KILN_QF_INT8, false, KILN_GRAN_TENSOR, 0);
    st_asym.scale = 0.0078125f;
    st_asym.zero = 128;
    KilnQuantSpec fp8_tok = spec(KILN_QF_FP8_E4M3, true, KILN_GRAN_TOKEN, 0);
    fp8_tok.dynamic = true;
    QCase cases[] = {
        {"W8A8 dynamic token", spec(KILN_QF_INT8, true, KILN_GRAN_CHANNEL, 0), true, dyn_tok, 0},
        {"W8A8 static tensor asym", spec(KILN_QF_INT8, true, KILN_GRAN_TENSOR, 0), true, st_asym, 0},
        {"W4A8 group", spec(KILN_QF_INT4, true, KILN_GRAN_GROUP, 16), true, dyn_tok, 0},
        {"W4A8 asym group", spec(KILN_QF_INT4, false, KILN_GRAN_GROUP, 32), true, dyn_tok, 0},
        {"W4A16 f16 asym group", spec(KILN_QF_INT4, false, KILN_GRAN_GROUP, 16), false, {0}, KILN_F16},
        {"W8A16 bf16", spec(KILN_QF_INT8, true, KILN_GRAN_CHANNEL, 0), false, {0}, KILN_BF16},
        {"fp8 e4m3 W8A8", spec(KILN_QF_FP8_E4M3, true, KILN_GRAN_CHANNEL, 0), true, fp8_tok, 0},
        {"fp8 e4m3 group W8A8", spec(KILN_QF_FP8_E4M3, true, KILN_GRAN_GROUP, 32), true, fp8_tok, 0},
        {"fp8 weight-only f16", spec(KILN_QF_FP8_E4M3, true, KILN_GRAN_CHANNEL, 0), false, {0}, KILN_F16},
    };
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        KilnTensor out = run_qgemm(&cases[ci], x, M, w, N, K, NULL, NULL, KILN_F32);
        double ref[M * N], mag[M * N];
        reference(&cases[ci], x, M, w, N, K, ref, mag);
        const float *y = out.data;
        for (int i = 0; i < M * N; i++) {
            /* f32 accumulation of K terms plus the scale products: well inside
             * 4·K·2^-24·Σ|terms| (the interpreter's error against exact arithmetic) */
            double tol = 4.0 * K * 0x1p-24 * mag[i] + 1e-30;
            if (fabs(y[i] - ref[i]) > tol)
                fail_msg("%s: y[%d] = %.9g, reference %.9g (tol %g)", cases[ci].what, i, y[i],
                         ref[i], tol);
        }
        for (int n = 0; n < N; n++) /* the zero row stays exactly zero */
            assert_true(y[N + n] == 0.0f);
        kiln_tensor_free(&out);
    }
}

/* K = 40 with groups of 16 and 32: a ragged last group of 8 k with its own scale. */
static void test_qgemm_ragged(void **state)
{
    (void)state;
    enum { M = 3, N = 5, K = 40 };
    float x[M * K], w[N * K];
    fill(x, M * K, 3);
    fill(w, N * K, 4);
    for (int n = 0; n < N; n++) /* a tail much smaller than the rest: its own scale matters */
        for (int k = 32; k < K; k++)
            w[n * K + k] *= 0.01f;
    KilnQuantSpec dyn_tok = spec(KILN_QF_INT8, true, KILN_GRAN_TOKEN, 0);
    dyn_tok.dynamic = true;
    KilnQuantSpec fp8_tok = spec(KILN_QF_FP8_E4M3, true, KILN_GRAN_TOKEN, 0);
    fp8_tok.dynamic = true;
    QCase cases[] = {
        {"W4A8 group 16 ragged", spec(KILN_QF_INT4, true, KILN_GRAN_GROUP, 16), true, dyn_tok, 0},
        {"W4A8 asym group 32 ragged", spec(KILN_QF_INT4, false, KILN_GRAN_GROUP, 32), true, dyn_tok, 0},
        {"W4A16 f16 asym group 16 ragged", spec(KILN_QF_INT4, false, KILN_GRAN_GROUP, 16), false, {0}, KILN_F16},
        {"W8A16 group 32 ragged", spec(KILN_QF_INT8, true, KILN_GRAN_GROUP, 32), false, {0}, KILN_F32},
        {"fp8 e4m3 group 32 ragged", spec(KILN_QF_FP8_E4M3, true, KILN_GRAN_GROUP, 32), true, fp8_tok, 0},
    };
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        KilnTensor out = run_qgemm(&cases[ci], x, M, w, N, K, NULL, NULL, KILN_F32);
        double ref[M * N], mag[M * N];
        reference(&cases[ci], x, M, w, N, K, ref, mag);
        const float *y = out.data;
        for (int i = 0; i < M * N; i++) {
            double tol = 4.0 * K * 0x1p-24 * mag[i] + 1e-30;
            if (fabs(y[i] - ref[i]) > tol)
                fail_msg("%s: y[%d] = %.9g, reference %.9g (tol %g)", cases[ci].what, i, y[i],
                         ref[i], tol);
        }
        kiln_tensor_free(&out);
    }
    /* Hand-computed, K = 5 = 2·2 + 1, group 2, W4A8, one output.
     * x = [0.5, -1, 0.25, 1.984375, 1]: s_a = 1/64, q_a = [32, -64, 16, 127, 64]
     * w = [0.875, -0.3125, 1.75, 0.25, -0.875]: groups [0.875, -0.3125] s 0.125 codes 7, -2;
     * [1.75, 0.25] s 0.25 codes 7, 1; ragged [-0.875] s 0.125 code -7.
     * sums 352, 239, 64·(-7) = -448; y = (0.125·352 + 0.25·239 + 0.125·(-448)) / 64
     * = (44 + 59.75 - 56) / 64 = 0.74609375. Weight-only f32: deqW = [0.875, -0.25, 1.75,
     * 0.25, -0.875], y = 0.4375 + 0.25 + 0.4375 + 0.49609375 - 0.875 = 0.74609375. */
    float xh[5] = {0.5f, -1, 0.25f, 1.984375f, 1}, wh[5] = {0.875f, -0.3125f, 1.75f, 0.25f, -0.875f};
    QCase h = {"hand ragged w4a8", spec(KILN_QF_INT4, true, KILN_GRAN_GROUP, 2), true, dyn_tok, 0};
    KilnTensor out = run_qgemm(&h, xh, 1, wh, 1, 5, NULL, NULL, KILN_F32);
    assert_true(((float *)out.data)[0] == 0.74609375f);
    kiln_tensor_free(&out);
    QCase hw = {"hand ragged weight-only", spec(KILN_QF_INT4, true, KILN_GRAN_GROUP, 2), false, {0},
                KILN_F32};
    out = run_qgemm(&hw, xh, 1, wh, 1, 5, NULL, NULL, KILN_F32);
    assert_true(((float *)out.data)[0] == 0.74609375f);
    kiln_tensor_free(&out);
}

static void test_qgemm_hand(void **state)
{
    (void)state;
    /* M=1, N=2, K=4, W8A8 dynamic token, weight int8 sym channel.
     * x = [0.5, -1, 0.25, 1.984375]: amax 127/64 -> s_a = 1/64, q_a = [32, -64, 16, 127]
     * w0 = [1.984375, 0.5, -1, 0]: s_w0 = 1/64, q = [127, 32, -64, 0]
     * w1 = [0.9921875, -0.25, 0.125, 0.5]: s_w1 = 1/128, q = [127, -32, 16, 64]
     * acc0 = 32·127 - 64·32 + 16·(-64) + 0 = 4064 - 2048 - 1024 = 992 -> y0 = 992/64/64 = 0.2421875
     * acc1 = 4064 + 2048 + 256 + 8128 = 14496 -> y1 = 14496/64/128 = 1.76953125
     * + bias [0.25, -1] -> [0.4921875, 0.76953125] (= 63/128, 197/256: exact in f16) */
    float x[4] = {0.5f, -1, 0.25f, 1.984375f};
    float w[8] = {1.984375f, 0.5f, -1, 0, 0.9921875f, -0.25f, 0.125f, 0.5f};
    float bias[2] = {0.25f, -1};
    KilnQuantSpec act = spec(KILN_QF_INT8, true, KILN_GRAN_TOKEN, 0);
    act.dynamic = true;
    QCase qc = {"hand", spec(KILN_QF_INT8, true, KILN_GRAN_CHANNEL, 0), true, act, 0};
    KilnTensor out = run_qgemm(&qc, x, 1, w, 2, 4, NULL, NULL, KILN_F32);
    assert_true(((float *)out.data)[0] == 0.2421875f);
    assert_true(((float *)out.data)[1] == 1.76953125f);
    kiln_tensor_free(&out);
    out = run_qgemm(&qc, x, 1, w, 2, 4, bias, NULL, KILN_F16);
    assert_int_equal(((uint16_t *)out.data)[0], kiln_f32_to_f16(0.4921875f));
    assert_int_equal(((uint16_t *)out.data)[1], kiln_f32_to_f16(0.76953125f));
    assert_true(kiln_f16_to_f32(((uint16_t *)out.data)[1]) == 0.76953125f);
    kiln_tensor_free(&out);
    out = run_qgemm(&qc, x, 1, w, 2, 4, bias, "silu", KILN_F32);
    for (int n = 0; n < 2; n++) {
        double v = n ? 0.76953125 : 0.4921875;
        assert_float_equal(((float *)out.data)[n], v / (1 + exp(-v)), 1e-6);
    }
    kiln_tensor_free(&out);
    out = run_qgemm(&qc, x, 1, w, 2, 4, bias, "gelu", KILN_BF16);
    for (int n = 0; n < 2; n++) {
        double v = n ? 0.76953125 : 0.4921875;
        float want = (float)(0.5 * v * (1 + erf(v / sqrt(2.0))));
        assert_int_equal(((uint16_t *)out.data)[n], kiln_f32_to_bf16(want));
    }
    kiln_tensor_free(&out);

    /* W4A8 group 2, one output: w = [0.875, -0.3125, 1.75, 0.25] -> int4 sym group 2:
     * scales [0.125, 0.25], codes [7, -2, 7, 1] (-2.5 ties to -2).
     * group 0: 32·7 + (-64)(-2) = 352; group 1: 16·7 + 127·1 = 239
     * y = s_a · (0.125·352 + 0.25·239) = (44 + 59.75)/64 = 1.62109375 */
    float w4[4] = {0.875f, -0.3125f, 1.75f, 0.25f};
    QCase q4 = {"hand w4", spec(KILN_QF_INT4, true, KILN_GRAN_GROUP, 2), true, act, 0};
    out = run_qgemm(&q4, x, 1, w4, 1, 4, NULL, NULL, KILN_F32);
    assert_true(((float *)out.data)[0] == 1.62109375f);
    kiln_tensor_free(&out);

    /* weight-only f32 with the same int4 weight: deqW = [0.875, -0.25, 1.75, 0.25];
     * y = 0.4375 + 0.25 + 0.4375 + 0.49609375 = 1.62109375 (same by construction) */
    QCase qw = {"hand w4 weight-only", spec(KILN_QF_INT4, true, KILN_GRAN_GROUP, 2), false, {0},
                KILN_F32};
    out = run_qgemm(&qw, x, 1, w4, 1, 4, NULL, NULL, KILN_F32);
    assert_true(((float *)out.data)[0] == 1.62109375f);
    kiln_tensor_free(&out);
}

/* An unquantized layer: qgemm on a plain f32 weight (deqW = w). */
static KilnTensor run_f32w(const float *x, const float *w, const float *bias, const char *adt,
                           const char *epi, KilnDType out, const char *act_spec, int *rc,
                           KilnDiag *d)
{
    KilnModule *m = kiln_module_new();
    KilnFunc *f = kiln_func_new(m, "lm_head");
    int xv = kiln_func_param(f, "x", kiln_type2(KILN_F32, 2, 3));
    int ops[3] = {xv, emit_weight(f, "w", kiln_type2(KILN_F32, 2, 3)), -1};
    if (bias)
        ops[2] = emit_weight(f, "b", kiln_type1(KILN_F32, 2));
    int y = kiln_emit(f, KILN_OP_QGEMM, ops, bias ? 3 : 2, kiln_type2(out, 2, 2), "y");
    KilnInst *q = kiln_last(f);
    if (adt)
        kiln_set_ident(f, q, "act_dtype", adt);
    if (act_spec) {
        KilnQuantSpec a = spec(KILN_QF_INT8, true, KILN_GRAN_TOKEN, 0);
        a.dynamic = true;
        kiln_set_spec(f, q, "act", &a);
    }
    if (epi)
        kiln_set_ident(f, q, "epilogue", epi);
    emit_return(f, y);
    Weights ws = {{{"w", w, 6}, {"b", bias, 2}}, bias ? 2 : 1};
    KilnTensor in = f32_tensor(2, 3, x), o = {0};
    *rc = kiln_interp_run(f, &in, 1, provide, &ws, &o, d);
    kiln_tensor_free(&in);
    kiln_module_free(m);
    return o;
}

static void test_qgemm_f32_weights(void **state)
{
    (void)state;
    /* the matmul_hand numbers: y = [[-2, 5.5], [-2, 16]]; bias [0.5, -1] ->
     * [[-1.5, 4.5], [-1.5, 15]] */
    float a[6] = {1, 2, 3, 4, 5, 6}, b[6] = {1, 0, -1, 2, 1, 0.5f}, bias[2] = {0.5f, -1};
    KilnDiag d = {0};
    int rc;
    KilnTensor o = run_f32w(a, b, NULL, "f32", NULL, KILN_F32, NULL, &rc, &d);
    assert_int_equal(rc, 0);
    const float *y = o.data;
    assert_true(y[0] == -2.0f && y[1] == 5.5f && y[2] == -2.0f && y[3] == 16.0f);
    kiln_tensor_free(&o);
    o = run_f32w(a, b, bias, "f32", "gelu", KILN_F32, NULL, &rc, &d);
    assert_int_equal(rc, 0);
    const double want[4] = {-1.5, 4.5, -1.5, 15};
    for (int i = 0; i < 4; i++)
        assert_float_equal(((float *)o.data)[i], 0.5 * want[i] * (1 + erf(want[i] / sqrt(2.0))),
                           1e-6);
    kiln_tensor_free(&o);
    /* bf16 activations: x = 1.00390625 rounds to 1 in bf16 (8 bits), so y = w·1 */
    float xb[6] = {1.00390625f, 0, 0, 0, 0, 1.00390625f};
    o = run_f32w(xb, b, NULL, "bf16", NULL, KILN_F16, NULL, &rc, &d);
    assert_int_equal(rc, 0);
    const uint16_t *h = o.data;
    assert_int_equal(h[0], kiln_f32_to_f16(1.0f));
    assert_int_equal(h[1], kiln_f32_to_f16(2.0f));
    assert_int_equal(h[2], kiln_f32_to_f16(-1.0f));
    assert_int_equal(h[3], kiln_f32_to_f16(0.5f));
    kiln_tensor_free(&o);
    /* f32 activations keep the 1/256 */
    o = run_f32w(xb, b, NULL, "f32", NULL, KILN_F32, NULL, &rc, &d);
    assert_true(((float *)o.data)[1] == 2.0078125f);
    kiln_tensor_free(&o);
    /* errors: quantized activations, no act_dtype */
    o = run_f32w(a, b, NULL, NULL, NULL, KILN_F32, "int8", &rc, &d);
    assert_int_equal(rc, KILN_EINPUT);
    assert_non_null(strstr(d.msg, "act int8 with f32 weight"));
    kiln_tensor_free(&o);
    memset(&d, 0, sizeof d);
    o = run_f32w(a, b, NULL, NULL, NULL, KILN_F32, NULL, &rc, &d);
    assert_int_equal(rc, KILN_EINPUT);
    assert_non_null(strstr(d.msg, "act_dtype"));
    kiln_tensor_free(&o);
}

/* ------------------------------------------------------------------ errors */

static void test_errors(void **state)
{
    (void)state;
    KilnModule *m = kiln_module_new();
    KilnFunc *f = kiln_func_new(m, "err");
    int x = kiln_func_param(f, "x", kiln_type2(KILN_F32, 1, 4));
    int w = emit_weight(f, "missing.weight", kiln_type2(KILN_F32, 2, 4));
    int ops[2] = {x, w};
    int y = kiln_emit(f, KILN_OP_MATMUL, ops, 2, kiln_type2(KILN_F32, 1, 2), NULL);
    emit_return(f, y);
    float xv[4] = {1, 2, 3, 4};
    KilnTensor in = f32_tensor(1, 4, xv), out;
    KilnDiag d = {0};
    /* wrong input count */
    assert_int_equal(kiln_interp_run(f, NULL, 0, provide, NULL, &out, &d), KILN_EINPUT);
    assert_non_null(strstr(d.msg, "takes 1 inputs, got 0"));
    /* wrong input type */
    KilnTensor bad = f32_tensor(1, 2, xv);
    assert_int_equal(kiln_interp_run(f, &bad, 1, provide, NULL, &out, &d), KILN_EINPUT);
    assert_non_null(strstr(d.msg, "f32[1,4]"));
    assert_non_null(strstr(d.msg, "f32[1,2]"));
    kiln_tensor_free(&bad);
    /* missing weight: the provider's message comes through, with the weight's name */
    Weights ws = {{{"other", xv, 4}}, 1};
    assert_int_equal(kiln_interp_run(f, &in, 1, provide, &ws, &out, &d), KILN_EINPUT);
    assert_non_null(strstr(d.msg, "no weight named missing.weight"));
    assert_non_null(strstr(d.msg, "@err"));
    /* no provider at all */
    assert_int_equal(kiln_interp_run(f, &in, 1, NULL, NULL, &out, &d), KILN_EINPUT);
    assert_non_null(strstr(d.msg, "missing.weight"));
    assert_null(out.data);
    kiln_module_free(m);

    /* matmul with K mismatch, and a qgemm with K mismatch, and a wrong operand count */
    m = kiln_module_new();
    f = kiln_func_new(m, "shape");
    x = kiln_func_param(f, "x", kiln_type2(KILN_F32, 1, 4));
    w = emit_weight(f, "w", kiln_type2(KILN_F32, 2, 8));
    int o2[2] = {x, w};
    y = kiln_emit(f, KILN_OP_MATMUL, o2, 2, kiln_type2(KILN_F32, 1, 2), "y");
    emit_return(f, y);
    float wv[16] = {0};
    Weights w2 = {{{"w", wv, 16}}, 1};
    assert_int_equal(kiln_interp_run(f, &in, 1, provide, &w2, &out, &d), KILN_EINPUT);
    assert_non_null(strstr(d.msg, "%y = matmul"));
    assert_non_null(strstr(d.msg, "f32[2,8]"));
    kiln_module_free(m);

    m = kiln_module_new();
    f = kiln_func_new(m, "qshape");
    x = kiln_func_param(f, "x", kiln_type2(KILN_F32, 1, 4));
    w = emit_weight(f, "w", kiln_type2(KILN_F32, 2, 8));
    KilnQuantSpec s = spec(KILN_QF_INT8, true, KILN_GRAN_CHANNEL, 0);
    int q = kiln_emit(f, KILN_OP_QUANTIZE, &w, 1, qtype(s, 2, 8), NULL);
    int o3[2] = {x, q};
    y = kiln_emit(f, KILN_OP_QGEMM, o3, 2, kiln_type2(KILN_F32, 1, 2), "y");
    kiln_set_ident(f, kiln_last(f), "act_dtype", "f16");
    emit_return(f, y);
    assert_int_equal(kiln_interp_run(f, &in, 1, provide, &w2, &out, &d), KILN_EINPUT);
    assert_non_null(strstr(d.msg, "%y = qgemm"));
    assert_non_null(strstr(d.msg, "K differs (4 vs 8)"));
    /* one operand only */
    kiln_def(f, y)->nops = 1;
    assert_int_equal(kiln_interp_run(f, &in, 1, provide, &w2, &out, &d), KILN_EINPUT);
    assert_non_null(strstr(d.msg, "takes 2..4 operands, got 1"));
    kiln_module_free(m);

    /* int act with an fp8 weight; weight-only without act_dtype */
    m = kiln_module_new();
    f = kiln_func_new(m, "mix");
    x = kiln_func_param(f, "x", kiln_type2(KILN_F32, 1, 4));
    w = emit_weight(f, "w", kiln_type2(KILN_F32, 2, 4));
    q = kiln_emit(f, KILN_OP_QUANTIZE, &w, 1, qtype(spec(KILN_QF_FP8_E4M3, true, KILN_GRAN_CHANNEL, 0), 2, 4), NULL);
    int o4[2] = {x, q};
    y = kiln_emit(f, KILN_OP_QGEMM, o4, 2, kiln_type2(KILN_F32, 1, 2), "y");
    emit_return(f, y);
    float w8[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    Weights w3 = {{{"w", w8, 8}}, 1};
    assert_int_equal(kiln_interp_run(f, &in, 1, provide, &w3, &out, &d), KILN_EINPUT);
    assert_non_null(strstr(d.msg, "act_dtype"));
    KilnQuantSpec a8 = spec(KILN_QF_INT8, true, KILN_GRAN_TOKEN, 0);
    a8.dynamic = true;
    kiln_set_spec(f, kiln_def(f, y), "act", &a8);
    assert_int_equal(kiln_interp_run(f, &in, 1, provide, &w3, &out, &d), KILN_EINPUT);
    assert_non_null(strstr(d.msg, "do not mix"));
    kiln_module_free(m);

    /* no return; use before definition */
    m = kiln_module_new();
    f = kiln_func_new(m, "noret");
    x = kiln_func_param(f, "x", kiln_type2(KILN_F32, 1, 4));
    kiln_emit(f, KILN_OP_SILU, &x, 1, kiln_type2(KILN_F32, 1, 4), NULL);
    assert_int_equal(kiln_interp_run(f, &in, 1, NULL, NULL, &out, &d), KILN_EINPUT);
    assert_non_null(strstr(d.msg, "no return"));
    int later = f->nvalues; /* id of the next value, used before it exists */
    kiln_emit(f, KILN_OP_RETURN, &later, 1, kiln_type1(KILN_F32, 0), NULL);
    kiln_emit(f, KILN_OP_SILU, &x, 1, kiln_type2(KILN_F32, 1, 4), "late");
    assert_int_equal(kiln_interp_run(f, &in, 1, NULL, NULL, &out, &d), KILN_EINPUT);
    assert_non_null(strstr(d.msg, "%late is used before it is defined"));
    kiln_module_free(m);
    kiln_tensor_free(&in);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_matmul_hand),
        cmocka_unit_test(test_elementwise),
        cmocka_unit_test(test_const_pack_unpack),
        cmocka_unit_test(test_quant_roundtrip),
        cmocka_unit_test(test_dynquant_token),
        cmocka_unit_test(test_static_act_uncalibrated),
        cmocka_unit_test(test_qgemm_cases),
        cmocka_unit_test(test_qgemm_hand),
        cmocka_unit_test(test_qgemm_ragged),
        cmocka_unit_test(test_qgemm_f32_weights),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
