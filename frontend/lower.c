/* frontend/lower.c — lower one linear layer under its recipe rule to graph IR:
 * weight [-> quantize -> dequantize], activation cast or quantize/dequantize,
 * matmul, then bias, activation function and output cast (the brief's form). */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "frontend/internal.h"
#include "ir/gran_cost.h"
#include "ir/numerics.h"
#include "ir/target.h"

/* activations = stored: the scheme the model file declares for the layer, as the
 * format a rule would give, with the checks kiln__resolve_acts (dslformat.c) makes of a rule's.
 * sa NULL or fmt NONE: the file quantizes the layer weight-only, so f16. */
static int file_acts(const char *layer, const KilnQuantSpec *sa, KFormat *out, KilnDiag *d)
{
    *out = (KFormat){.is_float = true, .fdt = KILN_F16, .per = PER_NONE};
    if (!sa || sa->fmt == KILN_QF_NONE)
        return 0;
    char spec[160];
    kiln_spec_print(sa, spec, sizeof spec);
    const char *why = NULL;
    if (sa->fmt == KILN_QF_INT4)
        why = "int4 activations are not supported";
    else if (sa->gran != KILN_GRAN_TOKEN && sa->gran != KILN_GRAN_TENSOR)
        why = "activation scales are per token or per tensor";
    else if (!sa->symmetric && (sa->dynamic || kiln_qformat_is_fp8(sa->fmt)))
        why = "dynamic activations and fp8 are symmetric";
    else if (!sa->dynamic && sa->gran == KILN_GRAN_TOKEN)
        why = "static activation scales are per tensor";
    if (why)
        return kiln_diag_set(d, KILN_EINPUT,
                             "layer '%s': the model file's activation scheme (%s) is not one kiln "
                             "runs: %s", layer, spec, why);
    KilnQuantSpec q = {.fmt = sa->fmt, .symmetric = sa->symmetric, .gran = sa->gran,
                       .dynamic = sa->dynamic};
    if (!sa->dynamic) { /* exactly the file's scale: nothing is calibrated */
        if (!(sa->scale > 0) || !isfinite(sa->scale))
            return kiln_diag_set(d, KILN_EINPUT,
                                 "layer '%s': the model file declares static activations (%s) "
                                 "but no positive finite activation scale for the layer "
                                 "(compressed-tensors: input_scale)", layer, spec);
        if (sa->zero < 0 || sa->zero > (sa->symmetric ? 0 : 255))
            return kiln_diag_set(d, KILN_EINPUT,
                                 "layer '%s': the model file's activation zero point %d is out "
                                 "of range for %s", layer, (int)sa->zero, spec);
        q.scale = sa->scale, q.zero = sa->zero;
    }
    *out = (KFormat){.q = q, .per = (int)q.gran};
    return 0;
}

static int lower_acts(KilnFunc *f, const KFormat *a, int x, int64_t M, int64_t K)
{
    if (a->is_float) {
        if (a->fdt == KILN_F32)
            return x;
        int xa = kiln_emit(f, KILN_OP_CAST, &x, 1, kiln_type2(a->fdt, M, K), "xa");
        return kiln_emit(f, KILN_OP_CAST, &xa, 1, kiln_type2(KILN_F32, M, K), "xd");
    }
    KilnType qt = kiln_type2(kiln_qformat_storage(a->q.fmt, a->q.symmetric), M, K);
    qt.q = a->q;
    int xq = kiln_emit(f, a->q.dynamic ? KILN_OP_DYNQUANT : KILN_OP_QUANTIZE, &x, 1, qt, "xq");
    return kiln_emit(f, KILN_OP_DEQUANTIZE, &xq, 1, kiln_type2(KILN_F32, M, K), "xd");
}

static int weight(KilnFunc *f, const char *layer, const char *suffix, KilnType t, const char *vname)
{
    char name[1100];
    snprintf(name, sizeof name, "%s.%s", layer, suffix);
    int v = kiln_emit(f, KILN_OP_WEIGHT, NULL, 0, t, vname);
    kiln_set_str(f, kiln_last(f), "name", name);
    return v;
}

static void set_kv(KilnFunc *f, const KilnRecipe *r)
{
    if (!r->has_kv)
        return;
    if (r->kv.is_float)
        kiln_fset_ident(f, "kv_cache", kiln_dtype_name(r->kv.fdt));
    else
        kiln_fset_spec(f, "kv_cache", &r->kv.q);
}

/* Outlier columns handed to lowering: only for a rule that asks for them, ascending
 * and inside [0, K). */
static int check_outlier_cols(const KilnRecipe *r, const KRule *k, const char *layer, int64_t K,
                              const int64_t *idx, int64_t n, KilnDiag *d)
{
    if (n < 0 || (n > 0 && !idx))
        return kiln_diag_set(d, KILN_EINPUT, "layer '%s': bad outlier column list (n = %lld)", layer,
                             (long long)n);
    if (n > 0 && (!k || !k->outliers))
        return kiln_diag_set(d, KILN_EINPUT,
                             "layer '%s': outlier columns given, but %s has no outliers = {...}",
                             layer, k ? "its rule" : "no rule takes the layer (ignored or unmatched), so it");
    for (int64_t i = 0; i < n; i++)
        if (idx[i] < 0 || idx[i] >= K || (i > 0 && idx[i] <= idx[i - 1]))
            return kiln_diag_set_at(d, KILN_EINPUT, r->file, k->line,
                                    "layer '%s': outlier column %lld is out of range 0..%lld or not "
                                    "ascending", layer, (long long)idx[i], (long long)K - 1);
    return 0;
}

/* %v = gather_cols|zero_cols %src {idx = [...]} */
static int cols_op(KilnFunc *f, KilnOp op, int src, const int64_t *idx, int64_t n, KilnType t,
                   const char *name)
{
    int v = kiln_emit(f, op, &src, 1, t, name);
    kiln_set_ints(f, kiln_last(f), "idx", idx, n);
    return v;
}

/* The LLM.int8() split's f32 half: y + gather_cols(x)·gather_cols(w)ᵀ, before the epilogue. */
static int outlier_side(KilnFunc *f, int x, int w, int y, const int64_t *idx, int64_t n, int64_t M,
                        int64_t N)
{
    int xo = cols_op(f, KILN_OP_GATHER_COLS, x, idx, n, kiln_type2(KILN_F32, M, n), "xo");
    int wo = cols_op(f, KILN_OP_GATHER_COLS, w, idx, n, kiln_type2(KILN_F32, N, n), "wo");
    int mo[2] = {xo, wo};
    int yo = kiln_emit(f, KILN_OP_MATMUL, mo, 2, kiln_type2(KILN_F32, M, N), "yo");
    int so[2] = {y, yo};
    return kiln_emit(f, KILN_OP_ADD, so, 2, kiln_type2(KILN_F32, M, N), "ys");
}

/* A group need not divide K: the last group of each row is then ragged (K mod group
 * elements with their own scale, docs/numerics.md), and the interpreter and the CUDA
 * kernels (which pad K) run any of them. The CPU kernels pack int4 8 k to a 32-bit word,
 * so blocks of 8 must tile the groups and the tail: gcd(group, K) a multiple of 8 (K for
 * per channel or tensor). Checked here for a CPU target, so that the error names the
 * rule's file and line (the layout pass would only name the layer). */
static int check_int4_words(const KilnRecipe *r, const KRule *k, const char *layer, int64_t K,
                            const char *tgt, KilnDiag *d)
{
    const KilnQuantSpec *q = &k->w.q;
    if (k->stored || q->fmt != KILN_QF_INT4 || q->gran == KILN_GRAN_AUTO)
        return 0;
    bool group = q->gran == KILN_GRAN_GROUP && q->group > 0;
    int64_t a = group ? q->group : K, b = K;
    while (b) {
        int64_t t = a % b;
        a = b;
        b = t;
    }
    KilnTarget t;
    KilnDiag td = {0};
    if (a % 8 == 0 || kiln_target_lookup(tgt, &t, &td) || t.kind != KILN_TGT_CPU)
        return 0;
    if (!group)
        return kiln_diag_set_at(d, KILN_EINPUT, r->file, k->line,
                                "layer '%s': rule \"%s\": the %s kernels pack int4 weights 8 k to a "
                                "32-bit word, so K must be a multiple of 8 (K = %lld)",
                                layer, k->pattern, t.name, (long long)K);
    char rag[64] = "";
    if (K % q->group)
        snprintf(rag, sizeof rag, ", ragged last group of %lld", (long long)(K % q->group));
    return kiln_diag_set_at(d, KILN_EINPUT, r->file, k->line,
                            "layer '%s': rule \"%s\": the %s kernels pack int4 weights 8 k to a "
                            "32-bit word, so K and the group must be multiples of 8 (K = %lld, "
                            "group = %lld%s)",
                            layer, k->pattern, t.name, (long long)K, (long long)q->group, rag);
}

bool kiln_recipe_outliers(const KilnRecipe *r, const char *layer, float *threshold,
                          float *max_fraction)
{
    int ri = r && layer && !kiln_recipe_ignored(r, layer) ? kiln_recipe_match(r, layer) : -1;
    if (ri < 0 || !r->rules[ri].outliers)
        return false;
    if (threshold)
        *threshold = r->rules[ri].outlier_threshold;
    if (max_fraction)
        *max_fraction = r->rules[ri].outlier_max_fraction;
    return true;
}

int kiln_lower_layer(const KilnRecipe *r, const char *layer, int64_t M, int64_t N, int64_t K,
                     const char *target, KilnModule *m, KilnFunc **out, KilnDiag *d)
{
    return kiln_lower_layer_ex(r, layer, M, N, K, target, NULL, m, out, d);
}

int kiln_lower_layer_ex(const KilnRecipe *r, const char *layer, int64_t M, int64_t N, int64_t K,
                        const char *target, const KilnLowerOpts *opts, KilnModule *m, KilnFunc **out,
                        KilnDiag *d)
{
    if (out)
        *out = NULL;
    if (!r || !m)
        return kiln_diag_set(d, KILN_EINTERNAL, "kiln_lower_layer: no recipe or module");
    kiln__nlowerings++;
    if (!layer || !*layer)
        return kiln_diag_set(d, KILN_EINPUT, "lowering needs a layer name");
    if (strlen(layer) > 1000)
        return kiln_diag_set(d, KILN_EINPUT, "layer name longer than 1000 characters");
    const int64_t big = (int64_t)1 << 40;
    if (M <= 0 || N <= 0 || K <= 0 || M > big || N > big || K > big || (double)N * (double)K > 1e15 ||
        (double)M * (double)K > 1e15)
        return kiln_diag_set(d, KILN_EINPUT,
                             "layer '%s': bad shape M=%lld N=%lld K=%lld (each must be in 1..2^40)", layer,
                             (long long)M, (long long)N, (long long)K);
    const char *tgt = target ? target : r->target ? r->target : "cpu";
    if (!kiln_recipe_target_valid(tgt))
        return kiln_diag_set(d, KILN_EINPUT, "unknown target '%s' (valid: %s)", tgt, kiln_recipe_targets());

    bool ignored = kiln_recipe_ignored(r, layer);
    int ri = ignored ? -1 : kiln_recipe_match(r, layer);
    const KRule *k = ri >= 0 ? &r->rules[ri] : NULL;
    int grc = k ? check_int4_words(r, k, layer, K, tgt, d) : 0;
    if (grc)
        return grc;
    KilnQuantSpec wspec = k ? k->w.q : (KilnQuantSpec){0};
    KFormat acts = k ? k->a : (KFormat){0};
    if (k && k->stored_acts) {
        int arc = file_acts(layer, opts ? opts->stored_act : NULL, &acts, d);
        if (arc)
            return arc;
    }
    if (k && k->stored) {
        const KilnQuantSpec *st = opts ? opts->stored : NULL;
        if (!st)
            return kiln_diag_set_at(d, KILN_EINPUT, r->file, k->line,
                                    "layer '%s': rule \"%s\" says weights = stored, but the model has no "
                                    "quantized weights for this layer",
                                    layer, k->pattern);
        bool ok = st->fmt != KILN_QF_NONE && !st->dynamic &&
                  (st->gran == KILN_GRAN_TENSOR || st->gran == KILN_GRAN_CHANNEL ||
                   (st->gran == KILN_GRAN_GROUP && st->group > 0));
        if (!ok)
            return kiln_diag_set(d, KILN_EINPUT, "layer '%s': the stored weight format is not one kiln runs",
                                 layer);
        if (!acts.is_float && kiln_qformat_is_fp8(st->fmt) != kiln_qformat_is_fp8(acts.q.fmt)) {
            if (k->stored_acts)
                return kiln_diag_set(d, KILN_EINPUT,
                                     "layer '%s': the model file declares %s activations for %s "
                                     "weights (int8 activations need int weights, fp8 activations "
                                     "fp8 weights)", layer, kiln_qformat_name(acts.q.fmt),
                                     kiln_qformat_name(st->fmt));
            return kiln_diag_set_at(d, KILN_EINPUT, r->file, k->line,
                                    "layer '%s': rule \"%s\" has %s activations but the stored weights are "
                                    "%s (int8 activations need int weights, fp8 activations fp8 weights)",
                                    layer, k->pattern, kiln_qformat_name(acts.q.fmt),
                                    kiln_qformat_name(st->fmt));
        }
        wspec = *st;
    }

    const int64_t *oidx = opts ? opts->outlier_idx : NULL;
    int64_t nout = opts ? opts->noutliers : 0;
    int orc = check_outlier_cols(r, k, layer, K, oidx, nout, d);
    if (orc)
        return orc;

    KilnFunc *f = kiln_func_new(m, layer);
    kiln_fset_str(f, "recipe", r->name);
    kiln_fset_str(f, "rule", k ? k->pattern : ignored ? "(ignored)" : "(none)");
    kiln_fset_ident(f, "target", tgt);
    if (k) {
        char mn[64]; /* an identifier in the IR: "smoothquant_gptq" */
        kiln_method_name(&k->method, mn, sizeof mn);
        for (char *p = mn; *p; p++)
            *p = *p == '+' ? '_' : *p;
        kiln_fset_ident(f, "method", k->stored ? "stored" : mn);
    }
    set_kv(f, r);
    if (r->amx_min_m)
        kiln_fset_int(f, "amx_min_m", r->amx_min_m);
    int x = kiln_func_param(f, "x", kiln_type2(KILN_F32, M, K));
    int w = weight(f, layer, "weight", kiln_type2(KILN_F32, N, K), "w");
    if (!k) { /* ignored or unmatched: plain f32 */
        int ops[2] = {x, w};
        int y = kiln_emit(f, KILN_OP_MATMUL, ops, 2, kiln_type2(KILN_F32, M, N), "y");
        kiln_emit(f, KILN_OP_RETURN, &y, 1, kiln_type2(KILN_F32, M, N), NULL);
        if (out)
            *out = f;
        return 0;
    }
    KilnType wt = kiln_type2(kiln_qformat_storage(wspec.fmt, wspec.symmetric), N, K);
    wt.q = wspec;
    int wq = kiln_emit(f, KILN_OP_QUANTIZE, &w, 1, wt, "wq");
    int wd = kiln_emit(f, KILN_OP_DEQUANTIZE, &wq, 1, kiln_type2(KILN_F32, N, K), "wd");
    KilnType xt = kiln_type2(KILN_F32, M, K);
    int xi = nout ? cols_op(f, KILN_OP_ZERO_COLS, x, oidx, nout, xt, "xi") : x;
    int xd = lower_acts(f, &acts, xi, M, K);
    int ops[2] = {xd, wd};
    KilnType yt = kiln_type2(KILN_F32, M, N);
    int y = kiln_emit(f, KILN_OP_MATMUL, ops, 2, yt, "y");
    if (nout)
        y = outlier_side(f, x, w, y, oidx, nout, M, N);
    if (k->bias) {
        int b = weight(f, layer, "bias", kiln_type1(KILN_F32, N), "b");
        int bo[2] = {y, b};
        y = kiln_emit(f, KILN_OP_BIAS_ADD, bo, 2, yt, "yb");
    }
    if (k->act != ACT_NONE)
        y = kiln_emit(f, k->act == ACT_SILU ? KILN_OP_SILU : KILN_OP_GELU, &y, 1, yt, "ya");
    if (k->out != KILN_F32)
        y = kiln_emit(f, KILN_OP_CAST, &y, 1, kiln_type2(k->out, M, N), "out");
    kiln_emit(f, KILN_OP_RETURN, &y, 1, f->values[y].type, NULL);
    if (out)
        *out = f;
    return 0;
}

const KilnMethod *kiln_recipe_rule_method(const KilnRecipe *r, int i)
{
    return r && i >= 0 && i < r->nrules ? &r->rules[i].method : NULL;
}

bool kiln_recipe_rule_stored(const KilnRecipe *r, int i)
{
    return r && i >= 0 && i < r->nrules && r->rules[i].stored;
}

bool kiln_recipe_rule_stored_acts(const KilnRecipe *r, int i)
{
    return r && i >= 0 && i < r->nrules && r->rules[i].stored_acts;
}

const char *kiln_method_name(const KilnMethod *m, char *buf, size_t n)
{
    const char *mig = m->awq ? "awq" : m->smoothquant ? "smoothquant" : NULL;
    const char *rnd = m->gptq ? "gptq" : "rtn";
    if (mig && m->gptq)
        snprintf(buf, n, "%s+%s", mig, rnd);
    else
        snprintf(buf, n, "%s", mig ? mig : rnd);
    return buf;
}

bool kiln_recipe_rule_acts(const KilnRecipe *r, int i, KilnQuantSpec *out)
{
    if (!r || i < 0 || i >= r->nrules || r->rules[i].a.is_float || r->rules[i].stored_acts)
        return false;
    *out = r->rules[i].a.q;
    kiln_gran_resolve_act(NULL, out, NULL, 0); /* auto: the same on every target */
    return true;
}

bool kiln_recipe_layer_weights(const KilnRecipe *r, const char *layer, int64_t K,
                               const KilnTarget *t, KilnQuantSpec *out)
{
    if (!r || kiln_recipe_ignored(r, layer))
        return false;
    int ri = kiln_recipe_match(r, layer);
    if (ri < 0 || r->rules[ri].stored)
        return false;
    KilnQuantSpec q = r->rules[ri].w.q;
    KilnTarget host;
    KilnDiag d = {0};
    if (!t && kiln_target_lookup("cpu", &host, &d)) /* no usable host CPU: the interpreter's */
        host = (KilnTarget){.name = "interp", .kind = KILN_TGT_INTERP};
    if (!t)
        t = &host;
    const KFormat *a = &r->rules[ri].a; /* what the layer's qgemm will see, as fuse_qgemm makes it */
    if (kiln_gran_resolve_weight(t, a->is_float ? KILN_QF_NONE : a->q.fmt,
                                 a->is_float ? a->fdt : KILN_F32, &q, K, NULL, 0))
        return false;
    *out = q;
    return true;
}

bool kiln_recipe_kv_cache(const KilnRecipe *r, bool *is_float, KilnDType *dt, KilnQuantSpec *q)
{
    if (!r || !r->has_kv)
        return false;
    *is_float = r->kv.is_float;
    *dt = r->kv.fdt;
    *q = r->kv.q;
    return true;
}
