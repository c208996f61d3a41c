/* ir/types.c — dtype, format, granularity and op tables; types and spec text. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ir.h"

static const struct {
    const char *name;
    int bits;
} dtypes[] = {
#define X(e, s, b) {s, b},
    KILN_DTYPES(X)
#undef X
};

static const char *qformats[] = {
#define X(e, s) s,
    KILN_QFORMATS(X)
#undef X
};

static const char *grans[] = {
#define X(e, s) s,
    KILN_GRANS(X)
#undef X
};

static const struct {
    const char *name;
    int lo, hi;
} ops[] = {
#define X(e, s, lo, hi) {s, lo, hi},
    KILN_OPS(X)
#undef X
};

const char *kiln_dtype_name(KilnDType t) { return (unsigned)t < KILN_NDTYPES ? dtypes[t].name : "?"; }
int kiln_dtype_bits(KilnDType t) { return (unsigned)t < KILN_NDTYPES ? dtypes[t].bits : 0; }
const char *kiln_qformat_name(KilnQFormat f) { return (unsigned)f < KILN_NQFORMATS ? qformats[f] : "?"; }
const char *kiln_gran_name(KilnGran g) { return (unsigned)g < KILN_NGRANS ? grans[g] : "?"; }
const char *kiln_op_name(KilnOp op) { return (unsigned)op < KILN_NOPS ? ops[op].name : "?"; }
int kiln_op_min_operands(KilnOp op) { return ops[op].lo; }
int kiln_op_max_operands(KilnOp op) { return ops[op].hi; }

static int lookup(const char *const *names, int n, size_t stride, const char *s, size_t len)
{
    for (int i = 0; i < n; i++) {
        const char *name = *(const char *const *)((const char *)names + (size_t)i * stride);
        if (strlen(name) == len && memcmp(name, s, len) == 0)
            return i;
    }
    return -1;
}

int kiln_dtype_parse(const char *s, size_t n, KilnDType *out)
{
    int i = lookup(&dtypes[0].name, KILN_NDTYPES, sizeof dtypes[0], s, n);
    if (i < 0)
        return -1;
    *out = (KilnDType)i;
    return 0;
}

int kiln_op_parse(const char *s, size_t n, KilnOp *out)
{
    int i = lookup(&ops[0].name, KILN_NOPS, sizeof ops[0], s, n);
    if (i < 0)
        return -1;
    *out = (KilnOp)i;
    return 0;
}

KilnDType kiln_qformat_storage(KilnQFormat f, bool symmetric)
{
    switch (f) {
    case KILN_QF_INT8: return symmetric ? KILN_I8 : KILN_U8;
    case KILN_QF_INT4: return symmetric ? KILN_I4 : KILN_U4;
    case KILN_QF_FP8_E4M3: return KILN_E4M3;
    case KILN_QF_FP8_E5M2: return KILN_E5M2;
    default: return KILN_F32;
    }
}

KilnType kiln_type2(KilnDType dt, int64_t d0, int64_t d1)
{
    KilnType t = {.dt = dt, .rank = 2, .dim = {d0, d1}};
    return t;
}

KilnType kiln_type1(KilnDType dt, int64_t d0)
{
    KilnType t = {.dt = dt, .rank = 1, .dim = {d0}};
    return t;
}

int64_t kiln_type_numel(const KilnType *t)
{
    int64_t n = 1;
    for (int i = 0; i < t->rank; i++)
        n *= t->dim[i];
    return n;
}

static bool spec_eq(const KilnQuantSpec *a, const KilnQuantSpec *b)
{
    if (a->fmt != b->fmt)
        return false;
    if (a->fmt == KILN_QF_NONE)
        return true;
    return a->symmetric == b->symmetric && a->gran == b->gran &&
           (a->gran != KILN_GRAN_GROUP || a->group == b->group) && a->dynamic == b->dynamic &&
           a->calib == b->calib && (a->calib != KILN_CAL_PERCENTILE || a->pct == b->pct) &&
           a->scale == b->scale && a->zero == b->zero;
}

bool kiln_type_same_shape(const KilnType *a, const KilnType *b)
{
    if (a->rank != b->rank)
        return false;
    for (int i = 0; i < a->rank; i++)
        if (a->dim[i] != b->dim[i])
            return false;
    return true;
}

bool kiln_type_eq(const KilnType *a, const KilnType *b)
{
    return a->dt == b->dt && kiln_type_same_shape(a, b) && spec_eq(&a->q, &b->q);
}

/* Shortest text that reads back as the same float32. */
static void fmt_float(char *buf, size_t n, double v)
{
    /* Shortest of the float32 value itself, not of v: the text must depend on the
     * float32 alone, or a double that rounds to the same float32 but reads back
     * differently prints differently the second time (the fuzzer found
     * 720368547.5807 -> 7.2036855e+08 -> 7.203686e+08). */
    double f = (double)(float)v;
    for (int prec = 6; prec <= 9; prec++) {
        snprintf(buf, n, "%.*g", prec, f);
        float back;
        if (sscanf(buf, "%f", &back) == 1 && back == (float)f)
            break;
    }
    if (!strpbrk(buf, ".eEni"))
        strncat(buf, ".0", n - strlen(buf) - 1);
}

int kiln_spec_print(const KilnQuantSpec *q, char *buf, size_t n)
{
    char tmp[64];
    int w = snprintf(buf, n, "%s %s ", kiln_qformat_name(q->fmt), q->symmetric ? "sym" : "asym");
    if (q->gran == KILN_GRAN_GROUP)
        w += snprintf(buf + w, n > (size_t)w ? n - w : 0, "group=%d", (int)q->group);
    else
        w += snprintf(buf + w, n > (size_t)w ? n - w : 0, "%s", kiln_gran_name(q->gran));
    if (q->dynamic)
        w += snprintf(buf + w, n > (size_t)w ? n - w : 0, " dynamic");
    if (q->calib == KILN_CAL_PERCENTILE) {
        fmt_float(tmp, sizeof tmp, q->pct);
        w += snprintf(buf + w, n > (size_t)w ? n - w : 0, " pct=%s", tmp);
    }
    if (q->calib == KILN_CAL_MSE)
        w += snprintf(buf + w, n > (size_t)w ? n - w : 0, " calib=mse");
    if (q->scale != 0) {
        fmt_float(tmp, sizeof tmp, q->scale);
        w += snprintf(buf + w, n > (size_t)w ? n - w : 0, " scale=%s", tmp);
    }
    if (q->zero != 0)
        w += snprintf(buf + w, n > (size_t)w ? n - w : 0, " zero=%d", (int)q->zero);
    return w;
}

int kiln_type_print(const KilnType *t, char *buf, size_t n)
{
    int w = snprintf(buf, n, "%s[", kiln_dtype_name(t->dt));
    for (int i = 0; i < t->rank; i++)
        w += snprintf(buf + w, n > (size_t)w ? n - w : 0, "%s%lld", i ? "," : "",
                      (long long)t->dim[i]);
    w += snprintf(buf + w, n > (size_t)w ? n - w : 0, "]");
    if (t->q.fmt != KILN_QF_NONE) {
        w += snprintf(buf + w, n > (size_t)w ? n - w : 0, "{");
        w += kiln_spec_print(&t->q, buf + w, n > (size_t)w ? n - w : 0);
        w += snprintf(buf + w, n > (size_t)w ? n - w : 0, "}");
    }
    return w;
}

KilnTypeStr kiln_type_str(const KilnType *t)
{
    KilnTypeStr r;
    kiln_type_print(t, r.s, sizeof r.s);
    return r;
}

/* Exposed for the printer so floats print one way everywhere. */
void kiln_format_float(char *buf, size_t n, double v) { fmt_float(buf, n, v); }

/* "<fmt> <sym|asym> <tensor|channel|token|group=G>" at the start of s; *rest: what
 * follows it. */
static int spec_head(const char *s, KilnQuantSpec *out, const char **rest)
{
    char fmt[16], sym[8], gran[32];
    int used = 0;
    if (!s || sscanf(s, "%15s %7s %31s%n", fmt, sym, gran, &used) != 3)
        return -1;
    KilnQuantSpec q = {0};
    int i;
    for (i = 1; i < KILN_NQFORMATS; i++)
        if (!strcmp(fmt, kiln_qformat_name((KilnQFormat)i)))
            break;
    if (i == KILN_NQFORMATS)
        return -1;
    q.fmt = (KilnQFormat)i;
    if (strcmp(sym, "sym") && strcmp(sym, "asym"))
        return -1;
    q.symmetric = !strcmp(sym, "sym");
    if ((q.fmt == KILN_QF_FP8_E4M3 || q.fmt == KILN_QF_FP8_E5M2) && !q.symmetric)
        return -1;
    long g = 0;
    char tail = 0;
    if (!strcmp(gran, "tensor"))
        q.gran = KILN_GRAN_TENSOR;
    else if (!strcmp(gran, "channel"))
        q.gran = KILN_GRAN_CHANNEL;
    else if (!strcmp(gran, "token"))
        q.gran = KILN_GRAN_TOKEN;
    else if (sscanf(gran, "group=%ld%c", &g, &tail) == 1 && g > 0 && g <= (1 << 24))
        q.gran = KILN_GRAN_GROUP, q.group = (int32_t)g;
    else
        return -1;
    *out = q;
    *rest = s + used;
    return 0;
}

/* The weight part of kiln_spec_print's text: "<fmt> <sym|asym> <tensor|channel|group=G>". */
int kiln_spec_parse(const char *s, KilnQuantSpec *out)
{
    KilnQuantSpec q;
    const char *rest;
    if (spec_head(s, &q, &rest) || q.gran == KILN_GRAN_TOKEN)
        return -1;
    *out = q;
    return 0;
}

int kiln_spec_parse_full(const char *s, KilnQuantSpec *out)
{
    KilnQuantSpec q;
    const char *p;
    if (spec_head(s, &q, &p))
        return -1;
    unsigned seen = 0;
    for (;;) {
        p += strspn(p, " ");
        if (!*p)
            break;
        size_t n = strcspn(p, " ");
        char *end = NULL;
        unsigned bit;
        if (n == 7 && !strncmp(p, "dynamic", 7)) {
            bit = 1, q.dynamic = true, end = (char *)p + n;
        } else if (!strncmp(p, "calib=mse", 9) && n == 9) {
            bit = 2, q.calib = KILN_CAL_MSE, end = (char *)p + n;
        } else if (!strncmp(p, "pct=", 4)) {
            bit = 2, q.calib = KILN_CAL_PERCENTILE, q.pct = strtof(p + 4, &end);
            if (end == p + 4 || !(q.pct > 0 && q.pct <= 100))
                return -1;
        } else if (!strncmp(p, "scale=", 6)) {
            bit = 4, q.scale = strtof(p + 6, &end); /* strtof: the float32 printed, exactly */
            if (end == p + 6)
                return -1;
        } else if (!strncmp(p, "zero=", 5)) {
            long z = strtol(p + 5, &end, 10);
            if (end == p + 5 || z < INT32_MIN || z > INT32_MAX)
                return -1;
            bit = 8, q.zero = (int32_t)z;
        } else {
            return -1;
        }
        if (end != p + n || (seen & bit))
            return -1;
        seen |= bit;
        p += n;
    }
    *out = q;
    return 0;
}
