/* runtime/aot_layout.c — rebuild an AOT kernel's KilnLayout from manifest.json (the
 * fields `kiln aot` writes, docs/jit-aot.md "Manifest"), libc + ir/layout.c only. */
#include <string.h>

#include "runtime/aot_layout.h"

typedef struct {
    int index;
    const char *kernel;
    KilnDiag *d;
} Where;

static int bad(const Where *w, const char *field, const char *what)
{
    return kiln_diag_set(w->d, KILN_EINPUT, "manifest.json: kernels[%d] ('%s'): \"%s\" %s",
                         w->index, w->kernel, field, what);
}

static const KilnJson *member(const KilnJson *o, const char *key, KilnJsonKind kind)
{
    const KilnJson *v = o ? kiln_json_get(o, key) : NULL;
    return v && v->kind == kind ? v : NULL;
}

static int get_name(const Where *w, const KilnJson *o, const char *obj, const char *key,
                    const char *(*name)(int), int n, int *out)
{
    const KilnJson *v = member(o, key, KILN_JSON_STRING);
    char field[64];
    snprintf(field, sizeof field, "%s%s%s", obj, *obj ? "." : "", key);
    if (!v)
        return bad(w, field, "is missing or not a string");
    for (int i = 0; i < n; i++)
        if (!strcmp(v->str, name(i))) {
            *out = i;
            return 0;
        }
    return kiln_diag_set(w->d, KILN_EINPUT,
                         "manifest.json: kernels[%d] ('%s'): \"%s\" has unknown value '%s'",
                         w->index, w->kernel, field, v->str);
}

static const char *fmt_name(int i) { return kiln_qformat_name((KilnQFormat)i); }
static const char *gran_name(int i) { return kiln_gran_name((KilnGran)i); }
static const char *dtype_name(int i) { return kiln_dtype_name((KilnDType)i); }
static const char *epi_name(int i) { return i == 1 ? "silu" : i == 2 ? "gelu" : "none"; }
static const char *calib_name(int i) { return i == KILN_CAL_MSE ? "mse" : i ? "percentile" : "minmax"; }

static int get_bool(const Where *w, const KilnJson *o, const char *obj, const char *key,
                    bool required, bool *out)
{
    const KilnJson *v = kiln_json_get(o, key);
    *out = false;
    if (!v && !required)
        return 0;
    if (!v || v->kind != KILN_JSON_BOOL) {
        char field[64];
        snprintf(field, sizeof field, "%s.%s", obj, key);
        return bad(w, field, "must be true or false");
    }
    *out = v->b;
    return 0;
}

/* A spec object: format, symmetric, granularity, group, calib, pct; for activations
 * also dynamic, scale and zero. */
static int read_spec(const Where *w, const KilnJson *o, const char *obj, bool act,
                     KilnQuantSpec *q)
{
    memset(q, 0, sizeof *q);
    int fmt = 0, gran = 0, calib = 0;
    if (get_name(w, o, obj, "format", fmt_name, KILN_NQFORMATS, &fmt))
        return KILN_EINPUT;
    if (fmt == KILN_QF_NONE && !act)
        return 0; /* plain f32 weights (a layer the recipe leaves unquantized) */
    if (get_name(w, o, obj, "granularity", gran_name, KILN_NGRANS, &gran) ||
        get_bool(w, o, obj, "symmetric", true, &q->symmetric))
        return KILN_EINPUT;
    q->fmt = (KilnQFormat)fmt;
    q->gran = (KilnGran)gran;
    if (kiln_json_get(o, "calib") && get_name(w, o, obj, "calib", calib_name, 3, &calib))
        return KILN_EINPUT;
    q->calib = (KilnCalib)calib;
    const KilnJson *v = member(o, "pct", KILN_JSON_NUMBER);
    q->pct = v ? (float)kiln_json_num(v) : 0;
    char field[64];
    if (q->gran == KILN_GRAN_GROUP) {
        v = member(o, "group", KILN_JSON_NUMBER);
        snprintf(field, sizeof field, "%s.group", obj);
        if (!v || !v->is_int || v->i <= 0 || v->i > INT32_MAX)
            return bad(w, field, "must be a positive integer for granularity group");
        q->group = (int32_t)v->i;
    }
    if (!act)
        return 0;
    if (get_bool(w, o, obj, "dynamic", true, &q->dynamic))
        return KILN_EINPUT;
    if (q->dynamic)
        return 0;
    v = member(o, "scale", KILN_JSON_NUMBER);
    snprintf(field, sizeof field, "%s.scale", obj);
    if (!v || !(kiln_json_num(v) > 0))
        return bad(w, field, "must be a number > 0 for static activations");
    q->scale = (float)kiln_json_num(v); /* written from a float, so this is that float again */
    v = member(o, "zero", KILN_JSON_NUMBER);
    q->zero = v && v->is_int ? (int32_t)v->i : 0;
    return 0;
}

static int check_int(const Where *w, const KilnJson *o, const char *key, int64_t have)
{
    const KilnJson *v = member(o, key, KILN_JSON_NUMBER);
    if (!v || (v->is_int && v->i == have))
        return 0;
    return kiln_diag_set(w->d, KILN_EINPUT,
                         "manifest.json: kernels[%d] ('%s'): \"%s\" is %g but this runtime's "
                         "layout gives %lld: the manifest was written by a kiln with other "
                         "layouts; rebuild it with `kiln aot`",
                         w->index, w->kernel, key, kiln_json_num(v), (long long)have);
}

int kiln_aot_layout(const KilnAot *a, int kernel_index, KilnLayout *out, KilnDiag *d)
{
    memset(out, 0, sizeof *out);
    const KilnAotKernel *k = a ? kiln_aot_kernel(a, kernel_index) : NULL;
    if (!k)
        return kiln_diag_set(d, KILN_EINPUT, "kiln_aot_layout: no kernel %d (the manifest has %d)",
                             kernel_index, a ? kiln_aot_nkernels(a) : 0);
    const KilnJson *ks = kiln_json_get(kiln_aot_manifest(a), "kernels");
    const KilnJson *o = &ks->items[kernel_index];
    Where w = {kernel_index, k->name, d};
    const KilnJson *isa = member(o, "isa", KILN_JSON_STRING);
    const char *isa_name = isa ? isa->str : kiln_aot_target(a);
    if (!isa_name || !*isa_name)
        return bad(&w, "isa", "is missing (and the manifest names no target)");
    KilnTarget t;
    KilnDiag td = {0};
    if (kiln_target_lookup(isa_name, &t, &td) || t.kind != KILN_TGT_CPU)
        return bad(&w, "isa", "is not a CPU target kiln knows (avx2, avx512vnni, avx512, amx, zen3, zen4)");
    const KilnJson *tu = member(o, "tune", KILN_JSON_STRING);
    if (tu && kiln_tune_parse(tu->str, &t.tune) != 0)
        return bad(&w, "tune", "names a trait kiln does not know (valid: subnormal-free, hugepage-weights)");
    if (!k->weight)
        return bad(&w, "weight", "is missing (the weight quantization spec)");

    KilnType wt = kiln_type2(KILN_F32, k->N, k->K);
    KilnQuantSpec aq;
    int odt = KILN_F32, adt = KILN_F32, epi = 0;
    int rc = read_spec(&w, k->weight, "weight", false, &wt.q);
    if (!rc && k->act)
        rc = read_spec(&w, k->act, "act", true, &aq);
    if (!rc && *k->act_dtype)
        rc = get_name(&w, o, "", "act_dtype", dtype_name, KILN_NDTYPES, &adt);
    if (!rc && *k->epilogue)
        rc = get_name(&w, o, "", "epilogue", epi_name, 3, &epi);
    if (!rc)
        rc = get_name(&w, o, "", "out_dtype", dtype_name, KILN_NDTYPES, &odt);
    if (rc)
        return rc;
    wt.dt = kiln_qformat_storage(wt.q.fmt, wt.q.symmetric);
    const KilnJson *dt = member(k->weight, "dtype", KILN_JSON_STRING);
    if (dt && strcmp(dt->str, kiln_dtype_name(wt.dt)))
        return kiln_diag_set(d, KILN_EINPUT,
                             "manifest.json: kernels[%d] ('%s'): \"weight.dtype\" is '%s' but "
                             "format %s %s is stored as %s",
                             kernel_index, k->name, dt->str, kiln_qformat_name(wt.q.fmt),
                             wt.q.symmetric ? "sym" : "asym", kiln_dtype_name(wt.dt));
    rc = kiln_layout_make(&t, &wt, k->act ? &aq : NULL, (KilnDType)adt, k->bias,
                          (KilnEpilogue)epi, (KilnDType)odt, out, d);
    const KilnJson *tm = member(o, "amx_min_m", KILN_JSON_NUMBER);
    if (!rc && tm && !tm->is_int)
        return bad(&w, "amx_min_m", "must be an integer");
    if (!rc && tm) /* the tile layout (pick_layout chose tiles from this M on) */
        rc = kiln_layout_use_tiles(out, tm->i, false, d);
    if (rc) {
        char msg[sizeof d->msg];
        snprintf(msg, sizeof msg, "%s", d->msg);
        return kiln_diag_set(d, rc, "manifest.json: kernels[%d] ('%s'): %s", kernel_index,
                             k->name, msg);
    }
    if (*k->layout && strcmp(k->layout, out->name))
        return kiln_diag_set(d, KILN_EINPUT,
                             "manifest.json: kernels[%d] ('%s'): layout '%s' but this runtime "
                             "builds '%s' for its fields; rebuild it with `kiln aot`",
                             kernel_index, k->name, k->layout, out->name);
    return check_int(&w, o, "nr", out->NR) || check_int(&w, o, "kr", out->KR) ||
                   check_int(&w, o, "pack_bytes", (int64_t)out->pack_bytes) ||
                   check_int(&w, o, "scratch_per_row", (int64_t)out->scratch_per_row) ||
                   check_int(&w, o, "scratch_fixed", (int64_t)out->scratch_fixed)
               ? KILN_EINPUT
               : 0;
}
