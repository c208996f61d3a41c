/* frontend/dsl.c — the recipe language's globals (recipe, rule, int4, int8, fp8_e4m3,
 * fp8_e5m2, f32, f16, bf16): each checks what it is given where it is called, so
 * an error carries the line of the offending rule or option, and builds C data.
 * Here the rule and recipe builders and the registration; formats are dslformat.c. */
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "frontend/internal.h"
#include "frontend/sandbox.h"
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
    int st = lua_pcall(L, 2, 0, 0);
    /* a budget that runs out here is the budget's error, not the pattern's */
    if (st != LUA_OK && (st != LUA_ERRRUN || kiln__sandbox_spent(L)))
        lua_error(L);
    if (st != LUA_OK)
        kiln__dsl_error(L, line, "bad Lua pattern '%s': %s", pat, lua_tostring(L, -1));
}

/* Patterns and names become C strings: a NUL inside would cut them short unseen. They
 * are printed: no control characters (an ESC sequence, a \r). And a pattern longer than
 * any layer name kiln lowers matches nothing useful, at a cost on every layer. */
static void check_pattern_text(lua_State *L, const char *s, size_t len, int line, const char *what)
{
    const char *nul = memchr(s, 0, len);
    if (nul)
        kiln__dsl_error(L, line, "%s \"%s\" has a NUL byte at byte %zu of %zu; names and "
                        "patterns cannot hold one",
                        what, s, (size_t)(nul - s), len);
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
            kiln__dsl_error(L, line, "%s \"%s\" has a control character (byte %zu, 0x%02x); "
                            "names and patterns cannot hold one", what, s, i, (unsigned char)s[i]);
    if (len > KILN_PATTERN_MAX)
        kiln__dsl_error(L, line, "%s \"%.60s...\" is %zu bytes; the limit is %d (layer names are at "
                        "most %d bytes)", what, s, len, KILN_PATTERN_MAX, KILN_PATTERN_MAX);
}

/* rule "pattern" and recipe "name": remember the string and the caller's line
 * in a builder whose __call takes the settings table. */
static int push_builder(lua_State *L, const char *mt, const char *usage)
{
    int line = kiln__caller_line(L);
    if (lua_type(L, 1) != LUA_TSTRING || lua_rawlen(L, 1) == 0)
        kiln__dsl_error(L, line, "%s; got %s", usage, kiln__what(L, 1));
    check_pattern_text(L, lua_tostring(L, 1), lua_rawlen(L, 1), line,
                       strcmp(mt, MT_RULEB) == 0 ? "rule pattern" : "recipe name");
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
                      : f                            ? kiln__fmt_name(f)
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
                        where, kiln__fmt_name(&r->a));
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
        kiln__resolve_weights(L, &r->w, line, pat);
    r->method = w->method;
    if (!(w->set & OPT_METHOD))
        r->method = kiln__method_defaults();
    if (lua_getfield(L, 2, "method") != LUA_TNIL) {
        int mline = kiln__key_line_at(L, line, "method");
        if (w->set & OPT_METHOD)
            kiln__dsl_error(L, mline, "%s: method is given twice (in the rule and in its weights' options): "
                      "keep the rule's", where);
        r->method = kiln__parse_method_value(L, lua_gettop(L), mline, where);
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
    kiln__resolve_acts(L, &r->a, &r->w, line, pat);
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
    lua_createtable(L, 0, n < (1 << 24) ? (int)n : 0); /* the patterns seen: a hash set */
    int seen = lua_gettop(L);
    for (lua_Integer i = 1; i <= n; i++) {
        if (lua_rawgeti(L, t, i) != LUA_TSTRING || lua_rawlen(L, -1) == 0)
            kiln__dsl_error(L, line, "ignore item %lld must be a non-empty pattern string, got %s", (long long)i,
                      kiln__what(L, -1));
        size_t len;
        const char *s = lua_tolstring(L, -1, &len);
        check_pattern_text(L, s, len, line, "ignore pattern");
        bool lua = strncmp(s, "lua:", 4) == 0;
        lua_pushstring(L, lua ? s + 4 : s);
        if (lua_rawget(L, seen) != LUA_TNIL)
            kiln__dsl_error(L, line, "duplicate ignore pattern '%s'", s);
        lua_pop(L, 1);
        lua_pushstring(L, lua ? s + 4 : s);
        lua_pushboolean(L, 1);
        lua_rawset(L, seen);
        parse_pattern(s, &r->ignore[r->nignore]);
        r->nignore++;
        if (r->ignore[r->nignore - 1].lua)
            check_lua_pattern(L, r->ignore[r->nignore - 1].pattern, line);
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
}

static void parse_rules(lua_State *L, KilnRecipe *r, int t, const char *name, int line)
{
    lua_Integer n = (lua_Integer)lua_rawlen(L, t);
    if (n == 0)
        kiln__dsl_error(L, line, "recipe \"%s\" has no rules (add e.g. rule \"*\" { weights = int8 })", name);
    r->rules = calloc((size_t)n, sizeof *r->rules);
    lua_newtable(L); /* the patterns seen: "g" or "l" (glob or Lua) and the pattern -> line */
    int seen = lua_gettop(L);
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
        lua_pushfstring(L, "%s%s", k->lua ? "l" : "g", k->pattern);
        lua_pushvalue(L, -1);
        if (lua_rawget(L, seen) == LUA_TNUMBER)
            kiln__dsl_error(L, k->line, "duplicate rule pattern '%s' (first at line %d): this rule can never match",
                      pat, (int)lua_tointeger(L, -1));
        lua_pop(L, 1);
        lua_pushinteger(L, k->line);
        lua_rawset(L, seen);
        lua_pop(L, 2);
    }
    lua_pop(L, 1);
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
    static const char *const keys[] = {"target", "ignore", "kv_cache", "amx_min_m"};
    kiln__check_keys(L, 2, keys, 4, line, where, "key", true);

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
    if (lua_getfield(L, 2, "amx_min_m") != LUA_TNIL) { /* docs/recipes.md, docs/targets.md */
        if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) < 1 || lua_tointeger(L, -1) > 1000000)
            kiln__dsl_error(L, kiln__key_line_at(L, line, "amx_min_m"),
                      "%s: amx_min_m must be an integer from 1 to 1000000 (the fewest rows run on AMX "
                      "tiles), got %s", where, kiln__what(L, -1));
        r->amx_min_m = (int64_t)lua_tointeger(L, -1);
    }
    lua_pop(L, 1);
    KFormat *kv = get_format(L, 2, "kv_cache", where, line);
    if (kv) {
        r->kv = *kv;
        kiln__resolve_kv(L, &r->kv, line);
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
    new_mt(L, MT_FORMAT, kiln__fmt_call, NULL);
    luaL_getmetatable(L, MT_FORMAT);
    lua_pushcfunction(L, kiln__fmt_tostring);
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
        kiln__push_format(L, &f);
        lua_setglobal(L, qf[i].name);
    }
    static const KilnDType fl[] = {KILN_F32, KILN_F16, KILN_BF16};
    for (size_t i = 0; i < 3; i++) {
        KFormat f = {.is_float = true, .fdt = fl[i], .per = PER_NONE};
        kiln__push_format(L, &f);
        lua_setglobal(L, kiln_dtype_name(fl[i]));
    }
    KFormat st = {.stored = true, .per = PER_NONE};
    kiln__push_format(L, &st);
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
