/* frontend/dslformat.c — the recipe language's formats: int8 {...} and the other
 * constructors with their options (method = ... among them), and the checks a
 * format gets where a rule or recipe uses it (weights, activations, kv_cache). */
#include <math.h>
#include <stdio.h>

#include <lauxlib.h>

#include "frontend/internal.h"

static const char *const opt_names[] = {"symmetric", "per",   "group",      "dynamic", "scale",
                                        "zero",      "calib", "percentile", "method"};
enum { NOPTS = sizeof opt_names / sizeof opt_names[0] };
static const char *const per_names[] = {"tensor", "channel", "group", "token", "auto", "head"};
static const char *const method_names[] = {"rtn", "gptq", "awq", "smoothquant"};

static const char *first_opt(unsigned set)
{
    for (int i = 0; i < NOPTS; i++)
        if (set & (1u << i))
            return opt_names[i];
    return "?";
}

const char *kiln__fmt_name(const KFormat *f)
{
    if (f->stored)
        return "stored";
    return f->is_float ? kiln_dtype_name(f->fdt) : kiln_qformat_name(f->q.fmt);
}

KFormat *kiln__push_format(lua_State *L, const KFormat *f)
{
    KFormat *u = lua_newuserdatauv(L, sizeof *u, 0);
    *u = *f;
    luaL_setmetatable(L, MT_FORMAT);
    return u;
}

static bool opt_bool(lua_State *L, int t, const char *key, const char *ctor, int line)
{
    if (lua_getfield(L, t, key) != LUA_TBOOLEAN)
        kiln__dsl_error(L, line, "%s {...}: %s must be true or false, got %s", ctor, key, kiln__what(L, -1));
    bool v = lua_toboolean(L, -1);
    lua_pop(L, 1);
    return v;
}

static lua_Number opt_num(lua_State *L, int t, const char *key, const char *ctor, int line)
{
    if (lua_getfield(L, t, key) != LUA_TNUMBER)
        kiln__dsl_error(L, line, "%s {...}: %s must be a number, got %s", ctor, key, kiln__what(L, -1));
    lua_Number v = lua_tonumber(L, -1);
    lua_pop(L, 1);
    return v;
}

static int opt_choice(lua_State *L, int t, const char *key, const char *const *names, int n,
                      const char *ctor, int line)
{
    char valid[256];
    kiln__join(valid, sizeof valid, names, n);
    if (lua_getfield(L, t, key) != LUA_TSTRING)
        kiln__dsl_error(L, line, "%s {...}: %s must be a string (valid: %s), got %s", ctor, key, valid,
                  kiln__what(L, -1));
    const char *s = lua_tostring(L, -1);
    int i = kiln__choice(s, names, n);
    char hint[80];
    if (i < 0)
        kiln__dsl_error(L, line, "%s {...}: bad %s = '%s' (valid: %s)%s", ctor, key, s, valid,
                  kiln__suggest(hint, sizeof hint, s, names, n));
    lua_pop(L, 1);
    return i;
}

/* Adds method name s to m, checking the combination: at most one scale migration
 * (awq, smoothquant) and at most one rounding (rtn, gptq). */
static void add_method(lua_State *L, KilnMethod *m, const char *s, bool *rounding, int line,
                       const char *where)
{
    char hint[96];
    int i = kiln__choice(s, method_names, 4);
    if (i < 0)
        kiln__dsl_error(L, line, "%s: unknown method '%s' (valid: rtn, gptq, awq, smoothquant)%s", where, s,
                  kiln__suggest(hint, sizeof hint, s, method_names, 4));
    if ((i == 2 || i == 3) && (m->awq || m->smoothquant))
        kiln__dsl_error(L, line, "%s: method combines awq and smoothquant; both move a per-channel scale from "
                  "activations to weights: pick one", where);
    if ((i == 0 || i == 1) && *rounding)
        kiln__dsl_error(L, line, "%s: method names two roundings (rtn, gptq): pick one", where);
    if (i <= 1)
        *rounding = true;
    m->gptq |= i == 1;
    m->awq |= i == 2;
    m->smoothquant |= i == 3;
}

KilnMethod kiln__method_defaults(void)
{
    return (KilnMethod){.alpha = 0.5f, .damp = 0.01f, .block = 128, .grid = 20, .clip = true};
}

/* Numeric method option key of the table at t: dflt when absent, else a number in
 * [lo, hi] ((lo, hi] with open_lo; whole: a whole number). */
static lua_Number method_num(lua_State *L, int t, const char *key, lua_Number lo, bool open_lo,
                             lua_Number hi, bool whole, lua_Number dflt, int line, const char *where)
{
    if (lua_getfield(L, t, key) == LUA_TNIL) {
        lua_pop(L, 1);
        return dflt;
    }
    lua_Number v = lua_tonumber(L, -1);
    bool ok = lua_isnumber(L, -1) && (open_lo ? v > lo : v >= lo) && v <= hi && (!whole || v == floor(v));
    if (!ok) {
        if (whole)
            kiln__dsl_error(L, line, "%s: %s must be a whole number in %g..%g, got %s", where, key, (double)lo,
                      (double)hi, kiln__what(L, -1));
        kiln__dsl_error(L, line, "%s: %s must be a number in %s%g, %g], got %s", where, key, open_lo ? "(" : "[",
                  (double)lo, (double)hi, kiln__what(L, -1));
    }
    lua_pop(L, 1);
    return v;
}

/* method = "gptq" | { "smoothquant", "gptq", alpha = 0.5, damp = 0.01, ... } at
 * stack index t (a format's option or a rule's key). */
KilnMethod kiln__parse_method_value(lua_State *L, int t, int line, const char *where)
{
    KilnMethod m = kiln__method_defaults();
    m.line = line;
    bool rounding = false;
    if (lua_type(L, t) == LUA_TSTRING) {
        add_method(L, &m, lua_tostring(L, t), &rounding, line, where);
        return m;
    }
    if (!lua_istable(L, t))
        kiln__dsl_error(L, line, "%s: method must be a name (\"gptq\") or a table { \"gptq\", damp = 0.01 }, "
                  "got %s", where, kiln__what(L, t));
    static const char *const keys[] = {"alpha", "damp", "block", "act_order", "grid", "clip", "prescale"};
    kiln__check_keys(L, t, keys, 7, line, where, "method option", true);
    lua_Integer n = (lua_Integer)lua_rawlen(L, t);
    if (n == 0)
        kiln__dsl_error(L, line, "%s: method table names no method: { \"gptq\", ... }", where);
    for (lua_Integer i = 1; i <= n; i++) {
        if (lua_rawgeti(L, t, i) != LUA_TSTRING)
            kiln__dsl_error(L, line, "%s: method item %lld must be a method name, got %s", where, (long long)i,
                      kiln__what(L, -1));
        add_method(L, &m, lua_tostring(L, -1), &rounding, line, where);
        lua_pop(L, 1);
    }
    struct { const char *key; bool ok; const char *needs; } own[] = {
        {"alpha", m.smoothquant, "smoothquant"}, {"damp", m.gptq, "gptq"}, {"block", m.gptq, "gptq"},
        {"act_order", m.gptq, "gptq"}, {"grid", m.awq, "awq"}, {"clip", m.awq, "awq"},
        {"prescale", m.awq || m.smoothquant, "awq or smoothquant"}};
    for (size_t k = 0; k < sizeof own / sizeof own[0]; k++) {
        int ty = lua_getfield(L, t, own[k].key);
        lua_pop(L, 1);
        if (ty != LUA_TNIL && !own[k].ok)
            kiln__dsl_error(L, line, "%s: method option %s is for %s, which this method does not use", where,
                      own[k].key, own[k].needs);
    }
    if (m.smoothquant)
        m.alpha = (float)method_num(L, t, "alpha", 0, false, 1, false, m.alpha, line, where);
    if (m.gptq) {
        m.damp = (float)method_num(L, t, "damp", 0, true, 1, false, m.damp, line, where);
        m.block = (int)method_num(L, t, "block", 1, false, 4096, true, m.block, line, where);
    }
    if (m.gptq && lua_getfield(L, t, "act_order") != LUA_TNIL) {
        static const char *const orders[] = {"static", "group"};
        if (lua_type(L, -1) == LUA_TBOOLEAN)
            m.act_order = lua_toboolean(L, -1) ? 1 : 0;
        else if (lua_type(L, -1) == LUA_TSTRING && kiln__choice(lua_tostring(L, -1), orders, 2) >= 0)
            m.act_order = 1 + kiln__choice(lua_tostring(L, -1), orders, 2);
        else
            kiln__dsl_error(L, line, "%s: act_order must be true, false, \"static\" or \"group\", got %s", where,
                      kiln__what(L, -1));
    }
    lua_settop(L, t);
    if (m.awq)
        m.grid = (int)method_num(L, t, "grid", 1, false, 1000, true, m.grid, line, where);
    static const char *const bools[] = {"clip", "prescale"};
    for (int k = 0; k < 2; k++) {
        if (lua_getfield(L, t, bools[k]) != LUA_TNIL) {
            if (lua_type(L, -1) != LUA_TBOOLEAN)
                kiln__dsl_error(L, line, "%s: %s must be true or false, got %s", where, bools[k], kiln__what(L, -1));
            if (k == 0)
                m.clip = lua_toboolean(L, -1);
            else
                m.prescale = lua_toboolean(L, -1);
        }
        lua_settop(L, t);
    }
    return m;
}

/* method = ... inside a format's options: names only (options go in the rule's method). */
static KilnMethod parse_method(lua_State *L, int t, const char *ctor, int line)
{
    char where[64];
    snprintf(where, sizeof where, "%s {...}", ctor);
    if (lua_getfield(L, t, "method") != LUA_TSTRING)
        kiln__dsl_error(L, line, "%s: method must be a string (valid: rtn, gptq, awq, smoothquant; put method "
                  "options in the rule: method = { \"gptq\", damp = 0.01 }), got %s", where, kiln__what(L, -1));
    KilnMethod m = kiln__parse_method_value(L, lua_gettop(L), line, where);
    lua_pop(L, 1);
    return m;
}

/* int8 {...} etc.: a new format from a bare constructor and an options table. */
int kiln__fmt_call(lua_State *L)
{
    KFormat *base = luaL_checkudata(L, 1, MT_FORMAT);
    int line = kiln__caller_line(L);
    const char *ctor = kiln__fmt_name(base);
    if (base->stored)
        kiln__dsl_error(L, line, "stored takes no options: the model file says how its layers were "
                  "quantized; write weights = stored (and activations = stored)");
    if (base->is_float)
        kiln__dsl_error(L, line, "%s takes no options: write activations = %s", ctor, ctor);
    if (base->line)
        kiln__dsl_error(L, line, "%s {...} already has its options; write one table", ctor);
    KFormat f = *base;
    f.line = line;
    if (lua_isnoneornil(L, 2)) {
        kiln__push_format(L, &f);
        return 1;
    }
    if (!lua_istable(L, 2))
        kiln__dsl_error(L, line, "%s expects an options table, e.g. %s { per = \"channel\" }; got %s", ctor,
                  ctor, kiln__what(L, 2));
    bool int4 = f.q.fmt == KILN_QF_INT4;
    /* int4 has no activation options: int4 activations are not supported. */
    static const char *const int4_opts[] = {"symmetric", "per", "group", "calib", "percentile", "method"};
    char where[64];
    snprintf(where, sizeof where, "%s {...}", ctor);
    if (int4)
        kiln__check_keys(L, 2, int4_opts, 6, line, where, "option", false);
    else
        kiln__check_keys(L, 2, opt_names, NOPTS, line, where, "option", false);
    for (int i = 0; i < NOPTS; i++) {
        int ty = lua_getfield(L, 2, opt_names[i]);
        lua_pop(L, 1);
        if (ty != LUA_TNIL)
            f.set |= 1u << i;
    }
    if (f.set & OPT_SYMMETRIC) {
        f.q.symmetric = opt_bool(L, 2, "symmetric", ctor, line);
        if (!f.q.symmetric && kiln_qformat_is_fp8(f.q.fmt))
            kiln__dsl_error(L, line, "%s is always symmetric: symmetric = false is not supported", ctor);
    }
    if (f.set & OPT_PER)
        f.per = opt_choice(L, 2, "per", per_names, 6, ctor, line);
    if (f.set & OPT_GROUP) {
        lua_Number g = opt_num(L, 2, "group", ctor, line);
        if (!(g >= 1 && g <= (1 << 24)) || g != floor(g))
            kiln__dsl_error(L, line, "%s {...}: group must be a positive whole number (at most 16777216), got %g",
                      ctor, (double)g);
        if (f.per != PER_NONE && f.per != KILN_GRAN_GROUP)
            kiln__dsl_error(L, line, "%s {...}: group = %d needs per = \"group\" (got per = \"%s\")", ctor,
                      (int)g, per_names[f.per]);
        f.per = KILN_GRAN_GROUP;
        f.q.group = (int32_t)g;
    }
    if (f.set & OPT_DYNAMIC)
        f.q.dynamic = opt_bool(L, 2, "dynamic", ctor, line);
    if (f.set & OPT_SCALE) {
        lua_Number s = opt_num(L, 2, "scale", ctor, line);
        if (!(s > 0) || !isfinite(s) || (float)s == 0 || !isfinite((float)s))
            kiln__dsl_error(L, line, "%s {...}: scale must be a positive finite number, got %g", ctor, (double)s);
        f.q.scale = (float)s;
    }
    if (f.set & OPT_ZERO) {
        lua_Number z = opt_num(L, 2, "zero", ctor, line);
        if (f.q.symmetric)
            kiln__dsl_error(L, line, "%s {...}: zero is for asymmetric formats; add symmetric = false", ctor);
        if (z != floor(z) || z < 0 || z > 255)
            kiln__dsl_error(L, line, "%s {...}: zero must be a whole number in 0..255, got %g", ctor, (double)z);
        f.q.zero = (int32_t)z;
    }
    if (f.set & OPT_CALIB) {
        static const char *const calibs[] = {"minmax", "percentile", "mse"}; /* KilnCalib order */
        f.q.calib = (KilnCalib)opt_choice(L, 2, "calib", calibs, 3, ctor, line);
    }
    if (f.set & OPT_PERCENTILE) {
        lua_Number p = opt_num(L, 2, "percentile", ctor, line);
        if (!(p > 0 && p <= 100))
            kiln__dsl_error(L, line, "%s {...}: percentile must be in (0, 100], got %g", ctor, (double)p);
        if ((f.set & OPT_CALIB) && f.q.calib != KILN_CAL_PERCENTILE)
            kiln__dsl_error(L, line, "%s {...}: percentile = %g needs calib = \"percentile\" (got \"%s\")",
                      ctor, (double)p, f.q.calib == KILN_CAL_MSE ? "mse" : "minmax");
        f.q.calib = KILN_CAL_PERCENTILE;
        f.q.pct = (float)p;
    }
    if (f.q.calib == KILN_CAL_PERCENTILE && !(f.set & OPT_PERCENTILE))
        f.q.pct = 99.9f;
    if (f.set & OPT_METHOD)
        f.method = parse_method(L, 2, ctor, line);
    kiln__push_format(L, &f);
    return 1;
}

int kiln__fmt_tostring(lua_State *L)
{
    KFormat *f = luaL_checkudata(L, 1, MT_FORMAT);
    lua_pushstring(L, kiln__fmt_name(f));
    return 1;
}

/* ------------------------------------------------------------------ resolving in context */

/* Where to report a problem with format f: its constructor call, or for a bare
 * format (int8 without options) the line of its key in the rule or recipe. */
static int fline(lua_State *L, const KFormat *f, int rline, const char *key)
{
    return f->line ? f->line : kiln__key_line_at(L, rline, key);
}

void kiln__resolve_weights(lua_State *L, KFormat *f, int rline, const char *pat)
{
    if (f->is_float)
        kiln__dsl_error(L, fline(L, f, rline, "weights"),
                  "rule \"%s\": weights = %s is not a quantized format (valid: int4, int8, fp8_e4m3, "
                  "fp8_e5m2; list the layer in ignore = {...} to keep it in f32)",
                  pat, kiln__fmt_name(f));
    unsigned act_only = f->set & (OPT_DYNAMIC | OPT_SCALE | OPT_ZERO);
    if (act_only)
        kiln__dsl_error(L, fline(L, f, rline, "weights"), "rule \"%s\": option '%s' is for activations, not weights", pat,
                  first_opt(act_only));
    if (f->per == KILN_GRAN_TOKEN || f->per == PER_HEAD)
        kiln__dsl_error(L, fline(L, f, rline, "weights"), "rule \"%s\": weights cannot be per = \"%s\" (valid: tensor, channel, group, auto)",
                  pat, per_names[f->per]);
    if (f->per == PER_NONE)
        f->per = f->q.fmt == KILN_QF_INT4 ? KILN_GRAN_GROUP : KILN_GRAN_CHANNEL;
    if (f->per == KILN_GRAN_GROUP && f->q.group == 0)
        f->q.group = 128;
    f->q.gran = (KilnGran)f->per;
    f->q.dynamic = false;
}

void kiln__resolve_acts(lua_State *L, KFormat *a, const KFormat *w, int rline, const char *pat)
{
    if (a->stored && !w->stored)
        kiln__dsl_error(L, fline(L, a, rline, "activations"),
                  "rule \"%s\": activations = stored needs weights = stored (a layer's activation "
                  "scheme comes from the model file with its quantized weights)", pat);
    if (a->stored || a->is_float) /* stored: the file's scheme, checked when a layer is lowered */
        return;
    if (a->q.fmt == KILN_QF_INT4)
        kiln__dsl_error(L, fline(L, a, rline, "activations"),
                  "rule \"%s\": int4 activations are not supported (valid: int8, fp8_e4m3, fp8_e5m2, "
                  "f16, bf16, f32)",
                  pat);
    unsigned wonly = a->set & (OPT_GROUP | OPT_METHOD);
    if (wonly)
        kiln__dsl_error(L, fline(L, a, rline, "activations"), "rule \"%s\": option '%s' is for weights, not activations", pat,
                  first_opt(wonly));
    if (a->per != PER_NONE && a->per != KILN_GRAN_TOKEN && a->per != KILN_GRAN_TENSOR &&
        a->per != KILN_GRAN_AUTO) /* auto: the layout pass picks (ir/gran_cost.h) */
        kiln__dsl_error(L, fline(L, a, rline, "activations"), "rule \"%s\": activations cannot be per = \"%s\" (valid: token, tensor, auto)", pat,
                  per_names[a->per]);
    unsigned stat = a->set & (OPT_SCALE | OPT_ZERO | OPT_CALIB | OPT_PERCENTILE);
    if (!(a->set & OPT_DYNAMIC))
        a->q.dynamic = !stat;
    if (a->q.dynamic && stat)
        kiln__dsl_error(L, fline(L, a, rline, "activations"), "rule \"%s\": option '%s' sets a static scale; it needs dynamic = false", pat,
                  first_opt(stat));
    if (a->q.dynamic && !a->q.symmetric)
        kiln__dsl_error(L, fline(L, a, rline, "activations"),
                  "rule \"%s\": dynamic activations are symmetric (drop symmetric = false, or use a "
                  "static scale with dynamic = false)",
                  pat);
    if (a->per == PER_NONE)
        a->per = a->q.dynamic ? KILN_GRAN_TOKEN : KILN_GRAN_TENSOR;
    if (!a->q.dynamic && a->per == KILN_GRAN_TOKEN)
        kiln__dsl_error(L, fline(L, a, rline, "activations"),
                  "rule \"%s\": static activation scales are per = \"tensor\" (per-token scales are "
                  "dynamic)",
                  pat);
    a->q.gran = (KilnGran)a->per;
    if (!w->stored && kiln_qformat_is_fp8(a->q.fmt) != kiln_qformat_is_fp8(w->q.fmt)) /* stored: checked at load */
        kiln__dsl_error(L, fline(L, a, rline, "activations"),
                  "rule \"%s\": %s activations with %s weights are not supported (int8 activations "
                  "need int4/int8 weights, fp8 activations need fp8 weights)",
                  pat, kiln__fmt_name(a), kiln__fmt_name(w));
}

void kiln__resolve_kv(lua_State *L, KFormat *k, int rline)
{
    if (k->stored)
        kiln__dsl_error(L, fline(L, k, rline, "kv_cache"), "kv_cache = stored is not supported (stored is for "
                  "weights and activations)");
    if (k->is_float)
        return;
    if (k->q.fmt == KILN_QF_INT4)
        kiln__dsl_error(L, fline(L, k, rline, "kv_cache"), "kv_cache = int4 is not supported (valid: int8, fp8_e4m3, fp8_e5m2, f16, bf16, f32)");
    unsigned bad = k->set & (OPT_GROUP | OPT_METHOD);
    if (bad)
        kiln__dsl_error(L, fline(L, k, rline, "kv_cache"), "option '%s' does not apply to kv_cache", first_opt(bad));
    if (k->per != PER_NONE && k->per != KILN_GRAN_TENSOR && k->per != PER_HEAD)
        kiln__dsl_error(L, fline(L, k, rline, "kv_cache"), "kv_cache cannot be per = \"%s\" (valid: tensor, head)", per_names[k->per]);
    if (k->q.dynamic && (k->set & (OPT_SCALE | OPT_ZERO)))
        kiln__dsl_error(L, fline(L, k, rline, "kv_cache"), "kv_cache: option '%s' sets a static scale; it needs dynamic = false",
                  first_opt(k->set & (OPT_SCALE | OPT_ZERO)));
    /* One scale per KV head is recorded as per-channel of the KV projection. */
    k->q.gran = k->per == PER_HEAD ? KILN_GRAN_CHANNEL : KILN_GRAN_TENSOR;
}
