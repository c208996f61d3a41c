/* frontend/dsl.c — the recipe language's globals (recipe, rule, int4, int8, fp8_e4m3,
 * fp8_e5m2, f32, f16, bf16): each checks what it is given where it is called, so
 * an error carries the line of the offending rule or option, and builds C data. */
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "frontend/internal.h"
#include "ir/target.h"

typedef struct RuleUD {
    KRule r; /* pattern lives in the userdata's user value until the recipe copies it */
} RuleUD;

typedef struct BuilderUD {
    int line;
} BuilderUD;

typedef struct RecipeUD {
    KilnRecipe *r; /* NULL once taken */
} RecipeUD;

/* ------------------------------------------------------------------ formats */

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

static const char *fmt_name(const KFormat *f)
{
    if (f->stored)
        return "stored";
    return f->is_float ? kiln_dtype_name(f->fdt) : kiln_qformat_name(f->q.fmt);
}

static KFormat *push_format(lua_State *L, const KFormat *f)
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

static KilnMethod method_defaults(void)
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
static KilnMethod parse_method_value(lua_State *L, int t, int line, const char *where)
{
    KilnMethod m = method_defaults();
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
    KilnMethod m = parse_method_value(L, lua_gettop(L), line, where);
    lua_pop(L, 1);
    return m;
}

/* int8 {...} etc.: a new format from a bare constructor and an options table. */
static int fmt_call(lua_State *L)
{
    KFormat *base = luaL_checkudata(L, 1, MT_FORMAT);
    int line = kiln__caller_line(L);
    const char *ctor = fmt_name(base);
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
        push_format(L, &f);
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
    push_format(L, &f);
    return 1;
}

static int fmt_tostring(lua_State *L)
{
    KFormat *f = luaL_checkudata(L, 1, MT_FORMAT);
    lua_pushstring(L, fmt_name(f));
    return 1;
}

/* ------------------------------------------------------------------ resolving in context */

/* Where to report a problem with format f: its constructor call, or for a bare
 * format (int8 without options) the line of its key in the rule or recipe. */
static int fline(lua_State *L, const KFormat *f, int rline, const char *key)
{
    return f->line ? f->line : kiln__key_line_at(L, rline, key);
}

static void resolve_weights(lua_State *L, KFormat *f, int rline, const char *pat)
{
    if (f->is_float)
        kiln__dsl_error(L, fline(L, f, rline, "weights"),
                  "rule \"%s\": weights = %s is not a quantized format (valid: int4, int8, fp8_e4m3, "
                  "fp8_e5m2; list the layer in ignore = {...} to keep it in f32)",
                  pat, fmt_name(f));
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

static void resolve_acts(lua_State *L, KFormat *a, const KFormat *w, int rline, const char *pat)
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
    if (a->per != PER_NONE && a->per != KILN_GRAN_TOKEN && a->per != KILN_GRAN_TENSOR)
        kiln__dsl_error(L, fline(L, a, rline, "activations"), "rule \"%s\": activations cannot be per = \"%s\" (valid: token, tensor)", pat,
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
                  pat, fmt_name(a), fmt_name(w));
}

static void resolve_kv(lua_State *L, KFormat *k, int rline)
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

/* ------------------------------------------------------------------ rules */

/* Lua's matcher reports some malformed patterns only when it reaches them. */
static const char *lua_pattern_problem(const char *p)
{
    for (; *p; p++) {
        if (*p == '%') {
            if (!p[1])
                return "ends with '%'";
            if (p[1] == 'b' && (!p[2] || !p[3]))
                return "missing arguments to '%b'";
            if (p[1] == 'f' && p[2] != '[')
                return "missing '[' after '%f' in pattern";
            p++;
        } else if (*p == '[') {
            const char *q = p + 1;
            if (*q == '^')
                q++;
            do {
                if (!*q)
                    return "missing ']'";
                if (*q == '%' && q[1])
                    q++;
                q++;
            } while (*q != ']');
            p = q;
        }
    }
    return NULL;
}

static void check_lua_pattern(lua_State *L, const char *pat, int line)
{
    const char *why = lua_pattern_problem(pat);
    if (why)
        kiln__dsl_error(L, line, "bad Lua pattern '%s': %s", pat, why);
    lua_pushcfunction(L, kiln__ctx(L)->find);
    lua_pushstring(L, pat);
    lua_pushstring(L, pat);
    if (lua_pcall(L, 2, 0, 0) != LUA_OK)
        kiln__dsl_error(L, line, "bad Lua pattern '%s': %s", pat, lua_tostring(L, -1));
}

/* rule "pattern" and recipe "name": remember the string and the caller's line
 * in a builder whose __call takes the settings table. */
static int push_builder(lua_State *L, const char *mt, const char *usage)
{
    int line = kiln__caller_line(L);
    if (lua_type(L, 1) != LUA_TSTRING || lua_rawlen(L, 1) == 0)
        kiln__dsl_error(L, line, "%s; got %s", usage, kiln__what(L, 1));
    BuilderUD *b = lua_newuserdatauv(L, sizeof *b, 1);
    b->line = line;
    lua_pushvalue(L, 1);
    lua_setiuservalue(L, -2, 1);
    luaL_setmetatable(L, mt);
    return 1;
}

static int rule_fn(lua_State *L)
{
    return push_builder(L, MT_RULEB,
                        "rule expects a non-empty pattern string: rule \"*.mlp.*\" { ... }");
}

static KFormat *get_format(lua_State *L, int t, const char *key, const char *where, int line)
{
    if (lua_getfield(L, t, key) == LUA_TNIL) {
        lua_pop(L, 1);
        return NULL;
    }
    KFormat *f = luaL_testudata(L, -1, MT_FORMAT);
    if (!f) {
        if (lua_type(L, -1) == LUA_TSTRING)
            kiln__dsl_error(L, kiln__key_line_at(L, line, key), "%s: %s = \"%s\" is a string; write the format without quotes (e.g. %s = int8)",
                      where, key, lua_tostring(L, -1), key);
        kiln__dsl_error(L, kiln__key_line_at(L, line, key), "%s: %s must be a format (int4, int8, fp8_e4m3, fp8_e5m2, f16, bf16, f32), got %s",
                  where, key, kiln__what(L, -1));
    }
    lua_pop(L, 1); /* the userdata stays reachable from the table */
    return f;
}

static void parse_epilogue(lua_State *L, int t, KRule *r, const char *where, int line)
{
    static const char *const keys[] = {"bias", "act", "out"};
    static const char *const acts[] = {"none", "silu", "gelu"};
    static const char *const outs[] = {"f32", "f16", "bf16"};
    char ew[240];
    snprintf(ew, sizeof ew, "%s epilogue", where);
    if (!lua_istable(L, t))
        kiln__dsl_error(L, kiln__key_line_at(L, line, "epilogue"), "%s must be a table { bias = true, act = \"silu\", out = \"f16\" }, got %s", ew,
                  kiln__what(L, t));
    kiln__check_keys(L, t, keys, 3, line, ew, "key", false);
    if (lua_getfield(L, t, "bias") != LUA_TNIL && !lua_isboolean(L, -1))
        kiln__dsl_error(L, kiln__key_line_at(L, line, "bias"), "%s: bias must be true or false, got %s", ew, kiln__what(L, -1));
    r->bias = lua_toboolean(L, -1);
    lua_pop(L, 1);
    if (lua_getfield(L, t, "act") != LUA_TNIL) {
        int i = lua_type(L, -1) == LUA_TSTRING ? kiln__choice(lua_tostring(L, -1), acts, 3) : -1;
        if (i < 0)
            kiln__dsl_error(L, kiln__key_line_at(L, line, "act"), "%s: bad act = %s%s%s (valid: none, silu, gelu)", ew,
                      lua_type(L, -1) == LUA_TSTRING ? "'" : "",
                      lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : kiln__what(L, -1),
                      lua_type(L, -1) == LUA_TSTRING ? "'" : "");
        r->act = (KAct)i;
    }
    lua_pop(L, 1);
    r->out = KILN_F32;
    if (lua_getfield(L, t, "out") != LUA_TNIL) {
        KFormat *f = luaL_testudata(L, -1, MT_FORMAT);
        int i = lua_type(L, -1) == LUA_TSTRING ? kiln__choice(lua_tostring(L, -1), outs, 3) : -1;
        if (f && f->is_float)
            r->out = f->fdt;
        else if (i >= 0)
            r->out = i == 0 ? KILN_F32 : i == 1 ? KILN_F16 : KILN_BF16;
        else
            kiln__dsl_error(L, kiln__key_line_at(L, line, "out"), "%s: bad out = %s%s%s (valid: f32, f16, bf16)", ew,
                      lua_type(L, -1) == LUA_TSTRING ? "'" : "",
                      lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1)
                      : f                            ? fmt_name(f)
                                                     : kiln__what(L, -1),
                      lua_type(L, -1) == LUA_TSTRING ? "'" : "");
    }
    lua_pop(L, 1);
}

/* outliers = 6.0 or outliers = { threshold = 6.0, max_fraction = 0.02 }: LLM.int8()-style
 * columns kept in f32 beside the int8 GEMM, so the rule needs int8 activations. */
static void parse_outliers(lua_State *L, int t, KRule *r, const char *where, int line)
{
    int oline = kiln__key_line_at(L, line, "outliers");
    lua_Number th = 6.0, frac = 0.02;
    if (lua_type(L, t) == LUA_TNUMBER) {
        th = lua_tonumber(L, t);
    } else if (lua_istable(L, t)) {
        static const char *const keys[] = {"threshold", "max_fraction"};
        char ow[240];
        snprintf(ow, sizeof ow, "%s outliers", where);
        kiln__check_keys(L, t, keys, 2, oline, ow, "key", false);
        if (lua_getfield(L, t, "threshold") != LUA_TNIL) {
            if (lua_type(L, -1) != LUA_TNUMBER)
                kiln__dsl_error(L, kiln__key_line_at(L, oline, "threshold"),
                                "%s: threshold must be a number, got %s", ow, kiln__what(L, -1));
            th = lua_tonumber(L, -1);
        }
        lua_pop(L, 1);
        if (lua_getfield(L, t, "max_fraction") != LUA_TNIL) {
            int fl = kiln__key_line_at(L, oline, "max_fraction");
            frac = lua_tonumber(L, -1);
            if (lua_type(L, -1) != LUA_TNUMBER || !(frac > 0 && frac <= 1))
                kiln__dsl_error(L, fl, "%s: max_fraction must be a number in (0, 1], got %s", ow,
                                lua_type(L, -1) == LUA_TNUMBER ? lua_tostring(L, -1) : kiln__what(L, -1));
        }
        lua_pop(L, 1);
    } else {
        kiln__dsl_error(L, oline, "%s: outliers must be a threshold (outliers = 6.0) or a table "
                        "{ threshold = 6.0, max_fraction = 0.02 }, got %s", where, kiln__what(L, t));
    }
    if (!(th > 0) || !isfinite(th) || !isfinite((float)th))
        kiln__dsl_error(L, oline, "%s: the outlier threshold must be a positive finite number, got %g",
                        where, (double)th);
    if (r->a.is_float || r->a.q.fmt != KILN_QF_INT8)
        kiln__dsl_error(L, oline, "%s: outliers needs int8 activations (the outlier columns run in f32 "
                        "beside an int8 GEMM), but activations are %s",
                        where, fmt_name(&r->a));
    r->outliers = true;
    r->outlier_threshold = (float)th;
    r->outlier_max_fraction = (float)frac;
}

/* rule "pattern" { weights = ..., activations = ..., epilogue = {...}, match = "lua" } */
static int ruleb_call(lua_State *L)
{
    BuilderUD *b = luaL_checkudata(L, 1, MT_RULEB);
    int line = b->line;
    lua_getiuservalue(L, 1, 1);
    const char *pat = lua_tostring(L, -1);
    int pidx = lua_gettop(L);
    char where[200];
    snprintf(where, sizeof where, "rule \"%.160s\" {...}", pat);
    if (!lua_istable(L, 2))
        kiln__dsl_error(L, line, "rule \"%s\" expects a table: rule \"%s\" { weights = int8 }; got %s", pat, pat,
                  kiln__what(L, 2));
    static const char *const keys[] = {"weights", "activations", "epilogue", "match", "method",
                                       "outliers"};
    kiln__check_keys(L, 2, keys, 6, line, where, "key", false);

    RuleUD *u = lua_newuserdatauv(L, sizeof *u, 1);
    memset(u, 0, sizeof *u);
    lua_pushvalue(L, pidx);
    lua_setiuservalue(L, -2, 1);
    luaL_setmetatable(L, MT_RULE);
    KRule *r = &u->r;
    r->line = line;
    r->out = KILN_F32;

    if (lua_getfield(L, 2, "match") != LUA_TNIL) {
        const char *m = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
        if (!m || (strcmp(m, "lua") && strcmp(m, "glob")))
            kiln__dsl_error(L, kiln__key_line_at(L, line, "match"), "%s: bad match = %s (valid: glob, lua)", where,
                      m ? m : kiln__what(L, -1));
        r->lua = strcmp(m, "lua") == 0;
    }
    lua_pop(L, 1);
    if (strncmp(pat, "lua:", 4) == 0) {
        r->lua = true;
        pat += 4;
    }
    if (r->lua)
        check_lua_pattern(L, pat, line);

    KFormat *w = get_format(L, 2, "weights", where, line);
    if (!w)
        kiln__dsl_error(L, line, "%s has no weights = ... (e.g. weights = int4 { group = 128 })", where);
    r->w = *w;
    r->stored = w->stored;
    if (!r->stored)
        resolve_weights(L, &r->w, line, pat);
    r->method = w->method;
    if (!(w->set & OPT_METHOD))
        r->method = method_defaults();
    if (lua_getfield(L, 2, "method") != LUA_TNIL) {
        int mline = kiln__key_line_at(L, line, "method");
        if (w->set & OPT_METHOD)
            kiln__dsl_error(L, mline, "%s: method is given twice (in the rule and in its weights' options): "
                      "keep the rule's", where);
        r->method = parse_method_value(L, lua_gettop(L), mline, where);
    }
    lua_pop(L, 1);
    if (r->stored && (r->method.gptq || r->method.awq || r->method.smoothquant))
        kiln__dsl_error(L, r->method.line ? r->method.line : line,
                  "%s: weights = stored keeps the model file's quantized weights; a method cannot apply", where);
    KFormat *a = get_format(L, 2, "activations", where, line);
    if (a)
        r->a = *a;
    else
        r->a = (KFormat){.is_float = true, .fdt = KILN_F16, .per = PER_NONE};
    resolve_acts(L, &r->a, &r->w, line, pat);
    r->stored_acts = r->a.stored;
    if (lua_getfield(L, 2, "epilogue") != LUA_TNIL)
        parse_epilogue(L, lua_gettop(L), r, where, line);
    lua_pop(L, 1);
    if (lua_getfield(L, 2, "outliers") != LUA_TNIL)
        parse_outliers(L, lua_gettop(L), r, where, line);
    lua_pop(L, 1);
    return 1;
}

/* ------------------------------------------------------------------ recipes */

static int recipe_fn(lua_State *L)
{
    return push_builder(L, MT_RECIPEB, "recipe expects a non-empty name: return recipe \"w4a16\" { ... }");
}

static void parse_pattern(const char *s, KPattern *p)
{
    p->lua = strncmp(s, "lua:", 4) == 0;
    p->pattern = strdup(p->lua ? s + 4 : s);
}

static void parse_ignore(lua_State *L, KilnRecipe *r, int rline)
{
    int line = kiln__key_line_at(L, rline, "ignore");
    int t = lua_gettop(L);
    if (lua_type(L, t) == LUA_TSTRING) { /* ignore = "lm_head": a list of one */
        lua_createtable(L, 1, 0);
        lua_pushvalue(L, t);
        lua_rawseti(L, -2, 1);
        lua_replace(L, t);
    }
    if (!lua_istable(L, t))
        kiln__dsl_error(L, line, "ignore must be a list of layer patterns { \"lm_head\", ... }, got %s", kiln__what(L, t));
    lua_Integer n = (lua_Integer)lua_rawlen(L, t);
    lua_pushnil(L);
    while (lua_next(L, t)) {
        lua_pop(L, 1);
        if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) < 1 || lua_tointeger(L, -1) > n)
            kiln__dsl_error(L, line, "ignore must be a plain list of patterns { \"lm_head\", \"*.gate\" }");
    }
    r->ignore = calloc((size_t)n + 1, sizeof *r->ignore);
    for (lua_Integer i = 1; i <= n; i++) {
        if (lua_rawgeti(L, t, i) != LUA_TSTRING || lua_rawlen(L, -1) == 0)
            kiln__dsl_error(L, line, "ignore item %lld must be a non-empty pattern string, got %s", (long long)i,
                      kiln__what(L, -1));
        const char *s = lua_tostring(L, -1);
        for (int j = 0; j < r->nignore; j++)
            if (strcmp(r->ignore[j].pattern, strncmp(s, "lua:", 4) ? s : s + 4) == 0)
                kiln__dsl_error(L, line, "duplicate ignore pattern '%s'", s);
        parse_pattern(s, &r->ignore[r->nignore]);
        r->nignore++;
        if (r->ignore[r->nignore - 1].lua)
            check_lua_pattern(L, r->ignore[r->nignore - 1].pattern, line);
        lua_pop(L, 1);
    }
}

static void parse_rules(lua_State *L, KilnRecipe *r, int t, const char *name, int line)
{
    lua_Integer n = (lua_Integer)lua_rawlen(L, t);
    if (n == 0)
        kiln__dsl_error(L, line, "recipe \"%s\" has no rules (add e.g. rule \"*\" { weights = int8 })", name);
    r->rules = calloc((size_t)n, sizeof *r->rules);
    for (lua_Integer i = 1; i <= n; i++) {
        lua_rawgeti(L, t, i);
        RuleUD *u = luaL_testudata(L, -1, MT_RULE);
        if (!u) {
            BuilderUD *b = luaL_testudata(L, -1, MT_RULEB);
            if (b) {
                lua_getiuservalue(L, -1, 1);
                kiln__dsl_error(L, b->line, "rule \"%s\" needs its settings: rule \"%s\" { weights = ... }",
                          lua_tostring(L, -1), lua_tostring(L, -1));
            }
            kiln__dsl_error(L, line, "recipe \"%s\": item %lld is %s, expected rule \"pattern\" { ... }", name,
                      (long long)i, kiln__what(L, -1));
        }
        lua_getiuservalue(L, -1, 1);
        const char *pat = lua_tostring(L, -1);
        KRule *k = &r->rules[r->nrules];
        *k = u->r;
        k->pattern = strdup(strncmp(pat, "lua:", 4) ? pat : pat + 4);
        k->example = NULL;
        r->nrules++;
        for (int j = 0; j < r->nrules - 1; j++)
            if (strcmp(r->rules[j].pattern, k->pattern) == 0 && r->rules[j].lua == k->lua)
                kiln__dsl_error(L, k->line, "duplicate rule pattern '%s' (first at line %d): this rule can never match",
                          pat, r->rules[j].line);
        lua_pop(L, 2);
    }
}

/* The names of ir/target.h's table; "cpu" and "cuda" are resolved there to this
 * machine's ISA / the device's arch. */
static char target_list[256];
static pthread_once_t target_list_once = PTHREAD_ONCE_INIT;
static void make_target_list(void)
{
    int n;
    const KilnTarget *t = kiln_targets(&n);
    for (int i = 0; i < n; i++) {
        strncat(target_list, i ? ", " : "", sizeof target_list - strlen(target_list) - 1);
        strncat(target_list, t[i].name, sizeof target_list - strlen(target_list) - 1);
    }
}

const char *kiln_recipe_targets(void)
{
    pthread_once(&target_list_once, make_target_list);
    return target_list;
}

bool kiln_recipe_target_valid(const char *name)
{
    int n;
    const KilnTarget *t = kiln_targets(&n);
    for (int i = 0; name && i < n; i++)
        if (strcmp(t[i].name, name) == 0)
            return true;
    return false;
}

/* recipe "name" { rules..., target = ..., ignore = {...}, kv_cache = ... } */
static int recipeb_call(lua_State *L)
{
    BuilderUD *b = luaL_checkudata(L, 1, MT_RECIPEB);
    int line = b->line;
    lua_getiuservalue(L, 1, 1);
    const char *name = lua_tostring(L, -1);
    char where[200];
    snprintf(where, sizeof where, "recipe \"%.160s\" {...}", name);
    if (!lua_istable(L, 2))
        kiln__dsl_error(L, line, "recipe \"%s\" expects a table: recipe \"%s\" { rule \"*\" { ... } }; got %s", name,
                  name, kiln__what(L, 2));
    static const char *const keys[] = {"target", "ignore", "kv_cache"};
    kiln__check_keys(L, 2, keys, 3, line, where, "key", true);

    RecipeUD *u = lua_newuserdatauv(L, sizeof *u, 0);
    u->r = NULL;
    luaL_setmetatable(L, MT_RECIPE); /* its __gc frees a half-built recipe on error */
    KilnRecipe *r = u->r = calloc(1, sizeof *r);
    r->name = strdup(name);
    r->line = line;
    if (lua_getfield(L, 2, "target") != LUA_TNIL) {
        if (lua_type(L, -1) != LUA_TSTRING || !kiln_recipe_target_valid(lua_tostring(L, -1)))
            kiln__dsl_error(L, kiln__key_line_at(L, line, "target"), "unknown target '%s' (valid: %s)",
                      lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : kiln__what(L, -1), kiln_recipe_targets());
        r->target = strdup(lua_tostring(L, -1));
    }
    lua_pop(L, 1);
    if (lua_getfield(L, 2, "ignore") != LUA_TNIL)
        parse_ignore(L, r, line);
    lua_pop(L, 1);
    KFormat *kv = get_format(L, 2, "kv_cache", where, line);
    if (kv) {
        r->kv = *kv;
        resolve_kv(L, &r->kv, line);
        r->has_kv = true;
    }
    parse_rules(L, r, 2, name, line);
    return 1;
}

static int recipe_gc(lua_State *L)
{
    RecipeUD *u = luaL_checkudata(L, 1, MT_RECIPE);
    if (u->r) {
        kiln__recipe_free_data(u->r);
        free(u->r);
        u->r = NULL;
    }
    return 0;
}

KilnRecipe *kiln__dsl_take(lua_State *L, int idx)
{
    RecipeUD *u = luaL_testudata(L, idx, MT_RECIPE);
    if (!u)
        return NULL;
    KilnRecipe *r = u->r;
    u->r = NULL;
    return r;
}

/* ------------------------------------------------------------------ registration */

static void new_mt(lua_State *L, const char *name, lua_CFunction call, lua_CFunction gc)
{
    luaL_newmetatable(L, name);
    if (call) {
        lua_pushcfunction(L, call);
        lua_setfield(L, -2, "__call");
    }
    if (gc) {
        lua_pushcfunction(L, gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_pushstring(L, "locked");
    lua_setfield(L, -2, "__metatable");
    lua_pop(L, 1);
}

/* Reading an undefined global is an error: it is almost always a misspelt
 * format (int3) or a library the sandbox leaves out (io, os). */
static int strict_index(lua_State *L)
{
    static const char *const dsl[] = {"recipe", "rule", "int4", "int8", "fp8_e4m3",
                                       "fp8_e5m2", "f32", "f16", "bf16"};
    const char *k = lua_tostring(L, 2);
    char hint[80] = "";
    return kiln__dsl_error(L, kiln__caller_line(L),
                     "unknown name '%s' (the recipe language has: recipe, rule, int4, int8, fp8_e4m3, "
                     "fp8_e5m2, f32, f16, bf16, and Lua's base, string, table and math libraries)%s",
                     k ? k : "?", k ? kiln__suggest(hint, sizeof hint, k, dsl, 9) : "");
}

void kiln__dsl_open(lua_State *L)
{
    new_mt(L, MT_FORMAT, fmt_call, NULL);
    luaL_getmetatable(L, MT_FORMAT);
    lua_pushcfunction(L, fmt_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pop(L, 1);
    new_mt(L, MT_RULEB, ruleb_call, NULL);
    new_mt(L, MT_RULE, NULL, NULL);
    new_mt(L, MT_RECIPEB, recipeb_call, NULL);
    new_mt(L, MT_RECIPE, NULL, recipe_gc);

    static const struct {
        const char *name;
        KilnQFormat fmt;
    } qf[] = {{"int4", KILN_QF_INT4}, {"int8", KILN_QF_INT8}, {"fp8_e4m3", KILN_QF_FP8_E4M3},
              {"fp8_e5m2", KILN_QF_FP8_E5M2}};
    for (size_t i = 0; i < sizeof qf / sizeof qf[0]; i++) {
        KFormat f = {.q = {.fmt = qf[i].fmt, .symmetric = true}, .per = PER_NONE};
        push_format(L, &f);
        lua_setglobal(L, qf[i].name);
    }
    static const KilnDType fl[] = {KILN_F32, KILN_F16, KILN_BF16};
    for (size_t i = 0; i < 3; i++) {
        KFormat f = {.is_float = true, .fdt = fl[i], .per = PER_NONE};
        push_format(L, &f);
        lua_setglobal(L, kiln_dtype_name(fl[i]));
    }
    KFormat st = {.stored = true, .per = PER_NONE};
    push_format(L, &st);
    lua_setglobal(L, "stored");
    lua_pushcfunction(L, rule_fn);
    lua_setglobal(L, "rule");
    lua_pushcfunction(L, recipe_fn);
    lua_setglobal(L, "recipe");
    lua_pushglobaltable(L);
    lua_newtable(L);
    lua_pushcfunction(L, strict_index);
    lua_setfield(L, -2, "__index");
    lua_setmetatable(L, -2);
    lua_pop(L, 1);
}
