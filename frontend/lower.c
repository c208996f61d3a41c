/* frontend/lower.c — lower one linear layer under its recipe rule to graph IR:
 * weight [-> quantize -> dequantize], activation cast or quantize/dequantize,
 * matmul, then bias, activation function and output cast (the brief's form). */
#include <string.h>

#include "frontend/internal.h"

static int lower_acts(KilnFunc *f, const KRule *k, int x, int64_t M, int64_t K)
{
    const KFormat *a = &k->a;
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

int kiln_lower_layer(const KilnRecipe *r, const char *layer, int64_t M, int64_t N, int64_t K,
                     const char *target, KilnModule *m, KilnFunc **out, KilnDiag *d)
{
    if (out)
        *out = NULL;
    if (!r || !m)
        return kiln_diag_set(d, KILN_EINTERNAL, "kiln_lower_layer: no recipe or module");
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
        return kiln_diag_set(d, KILN_EINPUT, "unknown target '%s' (valid: %s)", tgt, kiln_recipe_targets);

    bool ignored = kiln_recipe_ignored(r, layer);
    int ri = ignored ? -1 : kiln_recipe_match(r, layer);
    const KRule *k = ri >= 0 ? &r->rules[ri] : NULL;
    /* a group need not divide K: the last group of each row is then ragged (K mod group
     * elements with their own scale, docs/numerics.md); kernels check their own units */

    KilnFunc *f = kiln_func_new(m, layer);
    kiln_fset_str(f, "recipe", r->name);
    kiln_fset_str(f, "rule", k ? k->pattern : ignored ? "(ignored)" : "(none)");
    kiln_fset_ident(f, "target", tgt);
    if (k)
        kiln_fset_ident(f, "method", "rtn");
    set_kv(f, r);
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
    KilnType wt = kiln_type2(kiln_qformat_storage(k->w.q.fmt, k->w.q.symmetric), N, K);
    wt.q = k->w.q;
    int wq = kiln_emit(f, KILN_OP_QUANTIZE, &w, 1, wt, "wq");
    int wd = kiln_emit(f, KILN_OP_DEQUANTIZE, &wq, 1, kiln_type2(KILN_F32, N, K), "wd");
    int xd = lower_acts(f, k, x, M, K);
    int ops[2] = {xd, wd};
    KilnType yt = kiln_type2(KILN_F32, M, N);
    int y = kiln_emit(f, KILN_OP_MATMUL, ops, 2, yt, "y");
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
