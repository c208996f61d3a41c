/* quant/rtn.c — round to nearest through kiln_quantize_matrix, the result arrays, and
 * the per-slice helpers GPTQ and AWQ share (so every method picks scales the same way). */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

bool kq_sym(const KilnQuantSpec *s)
{
    return s->symmetric || s->fmt == KILN_QF_FP8_E4M3 || s->fmt == KILN_QF_FP8_E5M2;
}

int kq_check(const char *who, const KilnQuantSpec *s, int64_t N, int64_t K, KilnDiag *d)
{
    if (s->fmt != KILN_QF_INT8 && s->fmt != KILN_QF_INT4 && s->fmt != KILN_QF_FP8_E4M3 &&
        s->fmt != KILN_QF_FP8_E5M2)
        return kiln_diag_set(d, KILN_EINPUT, "%s: cannot quantize a weight to format %s", who,
                             kiln_qformat_name(s->fmt));
    if (s->gran != KILN_GRAN_TENSOR && s->gran != KILN_GRAN_CHANNEL && s->gran != KILN_GRAN_GROUP)
        return kiln_diag_set(d, KILN_EINPUT,
                             "%s: weight granularity must be tensor, channel or group, got %s",
                             who, (unsigned)s->gran < KILN_NGRANS ? kiln_gran_name(s->gran) : "?");
    if (s->gran == KILN_GRAN_GROUP && s->group <= 0)
        return kiln_diag_set(d, KILN_EINPUT, "%s: group size %d, expected > 0", who, (int)s->group);
    if (N <= 0 || K <= 0)
        return kiln_diag_set(d, KILN_EINPUT, "%s: weight shape [%lld,%lld], expected positive", who,
                             (long long)N, (long long)K);
    return 0;
}

int64_t kq_slice_len(const KilnQuantSpec *s, int64_t K)
{
    return s->gran == KILN_GRAN_GROUP && s->group < K ? s->group : K;
}

int64_t kq_nslices(const KilnQuantSpec *s, int64_t K)
{
    int64_t len = kq_slice_len(s, K);
    return (K + len - 1) / len;
}

KilnQParams kq_slice_params(const KilnQuantSpec *s, const float *x, int64_t n)
{
    bool sym = kq_sym(s);
    if (!s->dynamic && s->scale > 0.0f)
        return (KilnQParams){s->scale, sym ? 0 : s->zero};
    float lo, hi;
    kiln_calib_range(s, x, n, 1, &lo, &hi);
    return kiln_qparams_from_range(s->fmt, sym, lo, hi);
}

void kq_fake_quant_matrix(const KilnQuantSpec *s, const float *W, int64_t N, int64_t K, float *out)
{
    bool sym = kq_sym(s);
    if (s->gran == KILN_GRAN_TENSOR) {
        KilnQParams p = kq_slice_params(s, W, N * K);
        kiln_fake_quantize(s->fmt, sym, p, W, N * K, out);
        return;
    }
    int64_t len = kq_slice_len(s, K);
    for (int64_t n = 0; n < N; n++)
        for (int64_t c = 0; c < K; c += len) {
            int64_t m = K - c < len ? K - c : len;
            KilnQParams p = kq_slice_params(s, W + n * K + c, m);
            kiln_fake_quantize(s->fmt, sym, p, W + n * K + c, m, out + n * K + c);
        }
}

void kiln_qresult_free(KilnQResult *r)
{
    if (!r)
        return;
    free(r->w);
    free(r->codes);
    free(r->scale);
    free(r->zero);
    free(r->perm);
    free(r->packed);
    memset(r, 0, sizeof *r);
}

int kiln_qresult_pack(KilnQResult *r, KilnDiag *d)
{
    size_t nk = (size_t)r->N * (size_t)r->K;
    if (!r->codes || nk == 0)
        return 0;
    int32_t lo = r->codes[0], hi = r->codes[0];
    for (size_t i = 1; i < nk; i++) {
        lo = r->codes[i] < lo ? r->codes[i] : lo;
        hi = r->codes[i] > hi ? r->codes[i] : hi;
    }
    int bits = hi - lo < 16 ? 4 : hi - lo < 256 ? 8 : 16;
    if (bits == 16)
        return 0;
    uint8_t *p = calloc(bits == 4 ? (nk + 1) / 2 : nk, 1);
    if (!p)
        return kiln_diag_set(d, KILN_EINTERNAL, "out of memory packing a [%lld,%lld] weight's codes",
                             (long long)r->N, (long long)r->K);
    for (size_t i = 0; i < nk; i++) {
        unsigned v = (unsigned)(r->codes[i] - lo);
        if (bits == 8)
            p[i] = (uint8_t)v;
        else
            p[i / 2] |= (uint8_t)(v << (i % 2 * 4));
    }
    free(r->codes);
    r->codes = NULL;
    r->packed = p, r->packed_bits = bits, r->packed_lo = lo;
    return 0;
}

void kiln_qresult_codes(const KilnQResult *r, int64_t i0, int64_t n, int16_t *out)
{
    if (r->codes) {
        memcpy(out, r->codes + i0, sizeof(int16_t) * (size_t)n);
        return;
    }
    const uint8_t *p = r->packed;
    int32_t lo = r->packed_lo;
    if (r->packed_bits == 8) {
        for (int64_t i = 0; i < n; i++)
            out[i] = (int16_t)(p[i0 + i] + lo);
        return;
    }
    for (int64_t i = 0; i < n; i++) {
        int64_t j = i0 + i;
        out[i] = (int16_t)(((p[j / 2] >> (j % 2 * 4)) & 15) + lo);
    }
}

int kq_result_alloc(KilnQResult *r, int64_t N, int64_t K, int64_t ngroups, bool zeros, bool perm,
                    KilnDiag *d)
{
    memset(r, 0, sizeof *r);
    r->N = N;
    r->K = K;
    r->ngroups = ngroups;
    size_t nk = (size_t)N * (size_t)K, ns = (size_t)N * (size_t)ngroups;
    r->w = malloc(nk * sizeof *r->w);
    r->codes = malloc(nk * sizeof *r->codes);
    r->scale = malloc(ns * sizeof *r->scale);
    r->zero = zeros ? calloc(ns, sizeof *r->zero) : NULL;
    r->perm = perm ? malloc((size_t)K * sizeof *r->perm) : NULL;
    if (!r->w || !r->codes || !r->scale || (zeros && !r->zero) || (perm && !r->perm)) {
        kiln_qresult_free(r);
        return kiln_diag_set(d, KILN_EINTERNAL, "out of memory for a quantized [%lld,%lld] weight",
                             (long long)N, (long long)K);
    }
    return 0;
}

float *kq_sample_rows(const float *X, int64_t rows, int64_t K, int64_t max, int64_t *m)
{
    *m = rows < max ? rows : max;
    float *out = malloc((size_t)(*m > 0 ? *m : 1) * (size_t)K * sizeof *out);
    if (!out)
        return NULL;
    for (int64_t i = 0; i < *m; i++) {
        int64_t r = (int64_t)((double)i * (double)rows / (double)*m);
        memcpy(out + i * K, X + r * K, (size_t)K * sizeof *out);
    }
    return out;
}

int kiln_quant_rtn(const float *W, int64_t N, int64_t K, const KilnQuantSpec *spec,
                   KilnQResult *out, KilnDiag *d)
{
    memset(out, 0, sizeof *out);
    int rc = kq_check("rtn", spec, N, K, d);
    if (rc)
        return rc;
    bool sym = kq_sym(spec);
    KilnDType dt = kiln_qformat_storage(spec->fmt, sym);
    int64_t ng = spec->gran == KILN_GRAN_GROUP ? kq_nslices(spec, K) : 1;
    if ((rc = kq_result_alloc(out, N, K, ng, !sym, false, d)))
        return rc;
    size_t rb = kiln_row_bytes(dt, K);
    int64_t nsc = spec->gran == KILN_GRAN_TENSOR ? 1 : N * ng; /* kiln_quantize_matrix's count */
    uint8_t *buf = malloc(rb * (size_t)N);
    float *sc = malloc((size_t)nsc * sizeof *sc);
    int32_t *zp = sym ? NULL : malloc((size_t)nsc * sizeof *zp);
    if (!buf || !sc || (!sym && !zp))
        rc = kiln_diag_set(d, KILN_EINTERNAL, "out of memory quantizing a [%lld,%lld] weight",
                           (long long)N, (long long)K);
    if (!rc)
        rc = kiln_quantize_matrix(spec, W, N, K, buf, sc, zp, d);
    for (int64_t n = 0; !rc && n < N; n++) {
        const uint8_t *row = buf + (size_t)n * rb;
        for (int64_t g = 0; g < ng; g++) {
            int64_t si = spec->gran == KILN_GRAN_TENSOR ? 0 : n * ng + g;
            out->scale[n * ng + g] = sc[si];
            if (zp)
                out->zero[n * ng + g] = zp[si];
        }
        int64_t len = kq_slice_len(spec, K);
        for (int64_t k = 0; k < K; k++) {
            int64_t si = n * ng + k / len;
            KilnQParams p = {out->scale[si], zp ? out->zero[si] : 0};
            int32_t c = kiln_code_get(dt, row, k);
            out->codes[n * K + k] = (int16_t)c;
            out->w[n * K + k] = kiln_dequantize_value(spec->fmt, sym, p, c);
        }
    }
    free(buf);
    free(sc);
    free(zp);
    if (rc)
        kiln_qresult_free(out);
    return rc;
}
