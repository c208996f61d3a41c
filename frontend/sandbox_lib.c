/* frontend/sandbox_lib.c — the Lua libraries a recipe gets (base, string, table, math),
 * with what would escape the sandbox left out and every function whose work grows with
 * its arguments charged by that size before it runs (frontend/sandbox.c keeps count). */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include <lauxlib.h>
#include <lualib.h>

#include "frontend/sandbox.h"

/* Calls upvalue 1 (Lua's own function) with the arguments given; returns its results. */
static int call_original(lua_State *L)
{
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, lua_gettop(L) - 1, LUA_MULTRET);
    return lua_gettop(L);
}

/* ------------------------------------------------------------------ patterns
 * Lua's pattern matcher backtracks: string.find(("a"):rep(30), ("a*"):rep(12) .. "b")
 * would run for hours in one call. Each call is refused when its worst case exceeds
 * MATCH_BUDGET steps (about a second), and charged its worst case otherwise. */

#define MATCH_BUDGET 1e8    /* backtracking steps a pattern match may take, worst case */
#define LAYER_NAME_MAX 1000 /* kiln_lower_layer's limit: rule patterns must be fast on it */
#define MOVE_LIMIT ((lua_Integer)1 << 24) /* elements one table.move may move */

/* Worst-case steps of matching pattern p against an n-byte subject: every split of
 * the subject among the k repeated items (*, +, -), each optional item (?) twice,
 * from every start position unless anchored, times the pattern's length. */
static double pattern_cost(const char *p, size_t plen, size_t n)
{
    bool anchored = plen && p[0] == '^';
    int k = 0, q = 0;
    for (size_t i = anchored; i < plen;) {
        char c = p[i];
        if (c == '(' || c == ')' || (c == '$' && i + 1 == plen)) {
            i++;
            continue;
        }
        if (c == '%' && i + 1 < plen && p[i + 1] == 'b') {
            i += 4; /* %bxy: a linear scan per try, like one repeated item */
            k++;
            continue;
        }
        if (c == '%' && i + 1 < plen && p[i + 1] == 'f') {
            i += 2; /* %f[set]: a zero-width test; the set follows */
            c = i < plen ? p[i] : 0;
        }
        if (c == '[') {
            i++;
            if (i < plen && p[i] == '^')
                i++;
            do { /* the first ']' of a set is a member */
                if (i < plen && p[i] == '%')
                    i++;
                i++;
            } while (i < plen && p[i] != ']');
            i++;
        } else {
            i += c == '%' ? 2 : 1;
        }
        if (i < plen && (p[i] == '*' || p[i] == '+' || p[i] == '-')) {
            k++;
            i++;
        } else if (i < plen && p[i] == '?') {
            q++;
            i++;
        }
    }
    double cost = (anchored ? 1.0 : (double)n + 1) * ((double)plen + 1);
    for (int j = 1; j <= k && cost <= MATCH_BUDGET; j++)
        cost *= ((double)n + j) / j; /* C(n + k, k) */
    for (int j = 0; j < q && cost <= MATCH_BUDGET; j++)
        cost *= 2;
    return cost;
}

/* Raises an error when matching arg 2 (the pattern) against arg 1 could take too long;
 * subjects count as at least `min_subject` bytes. Returns the worst case in steps. */
static double check_pattern(lua_State *L, const char *fname, size_t min_subject)
{
    size_t n = 0, plen = 0;
    luaL_checklstring(L, 1, &n);
    const char *p = luaL_checklstring(L, 2, &plen);
    if (lua_toboolean(L, 4) && !strcmp(fname, "find")) /* plain: memchr, then memcmp */
        return plen && plen <= n ? ((double)(n - plen) + 1) * (double)plen / BYTES_PER_INSTR
                                 : (double)n / BYTES_PER_INSTR;
    if (n < min_subject)
        n = min_subject;
    double cost = pattern_cost(p, plen, n);
    if (cost > MATCH_BUDGET) {
        char msg[300]; /* lua_pushfstring knows no %zu or precision */
        snprintf(msg, sizeof msg,
                 "string.%s: pattern '%.60s' has too many repeated items (*, +, -, ?) to match a "
                 "%zu-byte string in reasonable time; anchor it (^, $) or use fewer wildcards",
                 fname, p, n);
        luaL_error(L, "%s", msg);
    }
    return cost;
}

/* string.find/match/gmatch/gsub as the recipe calls them: upvalue 1 is Lua's own,
 * upvalue 2 its name. */
static int guarded_match(lua_State *L)
{
    const char *name = lua_tostring(L, lua_upvalueindex(2));
    double steps = check_pattern(L, name, 0);
    char fn[32];
    snprintf(fn, sizeof fn, "string.%s", name);
    kiln__sandbox_charge(L, steps / STEPS_PER_INSTR, fn);
    return call_original(L);
}

/* string.find as the DSL calls it to check rule patterns, and as kiln_recipe_match
 * calls it on layer names: as fast as the guard needs on any name the lowering accepts. */
static int guarded_find(lua_State *L)
{
    check_pattern(L, "find", LAYER_NAME_MAX);
    lua_getfield(L, LUA_REGISTRYINDEX, "kiln.find");
    lua_insert(L, 1);
    lua_call(L, lua_gettop(L) - 1, LUA_MULTRET);
    return lua_gettop(L);
}

/* ------------------------------------------------------------------ sized work
 * Each guard computes the size of the work its arguments ask for, the way Lua's own
 * function will read them, charges it and calls the original (upvalue 1). */

static double str_len_arg(lua_State *L, int i)
{
    return lua_type(L, i) == LUA_TSTRING ? (double)lua_rawlen(L, i) : 0;
}

/* string.upper, lower, reverse, format; tonumber; the string arithmetic metamethods:
 * bytes of every string argument. */
static int guarded_bytes(lua_State *L)
{
    double bytes = 0;
    for (int i = 1; i <= lua_gettop(L); i++)
        bytes += str_len_arg(L, i);
    kiln__sandbox_charge(L, bytes / BYTES_PER_INSTR, lua_tostring(L, lua_upvalueindex(2)));
    return call_original(L);
}

static int guarded_rep(lua_State *L)
{
    size_t l = 0, lsep = 0;
    luaL_checklstring(L, 1, &l);
    lua_Integer n = luaL_checkinteger(L, 2);
    luaL_optlstring(L, 3, "", &lsep);
    if (l + lsep == 0 && n > 0) {
        lua_pushliteral(L, ""); /* n empty copies, without looping n times */
        return 1;
    }
    double bytes = n > 0 ? (double)n * (double)(l + lsep) : 0;
    kiln__sandbox_charge(L, bytes / BYTES_PER_INSTR, "string.rep");
    return call_original(L);
}

/* string.byte(s, i, j): one value pushed per byte of s[i..j]. */
static int guarded_byte(lua_State *L)
{
    size_t l = 0;
    luaL_checklstring(L, 1, &l);
    lua_Integer len = (lua_Integer)l, i = luaL_optinteger(L, 2, 1);
    i = i > 0 ? i : i == 0 ? 1 : i < -len ? 1 : len + i + 1; /* as lstrlib.c reads them */
    lua_Integer j = luaL_optinteger(L, 3, i);
    j = j > len ? len : j >= 0 ? j : j < -len ? 0 : len + j + 1;
    kiln__sandbox_charge(L, j >= i ? ((double)j - (double)i + 1) / VALUES_PER_INSTR : 0,
                         "string.byte");
    return call_original(L);
}

/* string.pack, unpack, packsize: an item per format byte, the subject's bytes. */
static int guarded_pack(lua_State *L)
{
    double fmt = str_len_arg(L, 1), bytes = 0;
    for (int i = 2; i <= lua_gettop(L); i++)
        bytes += str_len_arg(L, i);
    kiln__sandbox_charge(L, fmt + bytes / BYTES_PER_INSTR, lua_tostring(L, lua_upvalueindex(2)));
    return call_original(L);
}

/* #t as table functions read it (honours __len, which runs as recipe code). */
static double table_len(lua_State *L, int i)
{
    return lua_type(L, i) == LUA_TTABLE ? (double)luaL_len(L, i) : 0;
}

/* table.unpack(t, i, j) and table.concat(t, sep, i, j): an element each of t[i..j]. */
static int guarded_range(lua_State *L)
{
    const char *name = lua_tostring(L, lua_upvalueindex(2));
    bool concat = !strcmp(name, "table.concat");
    int first = concat ? 3 : 2;
    lua_Integer i = luaL_optinteger(L, first, 1);
    double j = lua_isnoneornil(L, first + 1) ? table_len(L, 1) : (double)luaL_checkinteger(L, first + 1);
    double n = j >= (double)i ? j - (double)i + 1 : 0;
    kiln__sandbox_charge(L, concat ? n * ITEM_COST : n, name); /* unpack: a lua_geti each */
    return call_original(L);
}

/* table.insert(t, pos, v) and table.remove(t, pos): the elements after pos move. */
static int guarded_shift(lua_State *L)
{
    const char *name = lua_tostring(L, lua_upvalueindex(2));
    double n = table_len(L, 1), moved = 0;
    if (!strcmp(name, "table.insert") && lua_gettop(L) == 3 && lua_isinteger(L, 2))
        moved = n + 1 - (double)lua_tointeger(L, 2);
    else if (!strcmp(name, "table.remove") && lua_gettop(L) >= 2 && lua_isinteger(L, 2))
        moved = n - (double)lua_tointeger(L, 2);
    kiln__sandbox_charge(L, moved > 0 ? moved * ITEM_COST : 0, name);
    return call_original(L);
}

static int guarded_move(lua_State *L)
{
    lua_Integer f = luaL_checkinteger(L, 2), e = luaL_checkinteger(L, 3);
    if (e >= f && (f < 0 ? e > MOVE_LIMIT + f : e - f >= MOVE_LIMIT))
        return luaL_error(L, "table.move: more than %d elements", (int)MOVE_LIMIT);
    kiln__sandbox_charge(L, e >= f ? ((double)e - (double)f + 1) * ITEM_COST : 0, "table.move");
    return call_original(L);
}

/* table.sort(t): n log n comparisons, each as long as the longest string compared
 * (strings compare byte by byte; a Lua comparator's calls count as calls besides). */
static int guarded_sort(lua_State *L)
{
    double n = table_len(L, 1), longest = 0;
    double compares = n > 1 ? n * log2(n) : 0;
    kiln__sandbox_charge(L, n / VALUES_PER_INSTR + compares * ITEM_COST, "table.sort");
    for (lua_Integer i = 1; i <= (lua_Integer)n; i++) {
        if (lua_rawgeti(L, 1, i) == LUA_TSTRING && (double)lua_rawlen(L, -1) > longest)
            longest = (double)lua_rawlen(L, -1);
        lua_pop(L, 1);
    }
    kiln__sandbox_charge(L, compares * longest / BYTES_PER_INSTR, "table.sort");
    return call_original(L);
}

/* ------------------------------------------------------------------ the recipe language
 * Its constructors (int8 {...}, rule "x" {...}, recipe "x" {...}) check and copy what
 * their table holds, one level down (a recipe's rules and ignore list), in C and into
 * C memory the heap cap does not see: charged per entry and byte before they run, and
 * the collector told about the copies, so that those a loop drops are freed at the pace
 * they are made. */

#define DSL_ITEM_COST 10   /* instructions per entry a constructor checks and copies */
#define DSL_ITEM_BYTES 256 /* C bytes per entry it may copy, besides strings */

static void count_entries(lua_State *L, int idx, int depth, double *entries, double *bytes)
{
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        *entries += 1;
        if (lua_type(L, -1) == LUA_TSTRING)
            *bytes += (double)lua_rawlen(L, -1);
        else if (lua_type(L, -1) == LUA_TTABLE && depth > 0)
            count_entries(L, lua_gettop(L), depth - 1, entries, bytes);
        lua_pop(L, 1);
        if (*entries * DSL_ITEM_COST > (double)KILN_RECIPE_INSTR_LIMIT) {
            lua_pop(L, 1); /* the key: more than the budget pays for, whatever follows */
            return;
        }
    }
}

static int guarded_dsl_call(lua_State *L)
{
    double entries = 0, bytes = 0;
    if (lua_type(L, 2) == LUA_TTABLE)
        count_entries(L, 2, 1, &entries, &bytes);
    kiln__sandbox_charge(L, entries * DSL_ITEM_COST + bytes / BYTES_PER_INSTR,
                         lua_tostring(L, lua_upvalueindex(2)));
    int n = call_original(L);
    /* a step only for whole KiB: a step of 0 is a full basic step, which on every small
     * constructor call (rule "x" {...} in a loop of 45,000) costs 10x the calls */
    int kib = (int)((entries * DSL_ITEM_BYTES + bytes) / 1024);
    if (kib > 0)
        lua_gc(L, LUA_GCSTEP, kib);
    return n;
}

void kiln__sandbox_guard_dsl(lua_State *L)
{
    static const struct {
        const char *mt, *name;
    } ctors[] = {{MT_FORMAT, "a format's {...}"}, {MT_RULEB, "rule {...}"}, {MT_RECIPEB, "recipe {...}"}};
    for (size_t i = 0; i < sizeof ctors / sizeof ctors[0]; i++) {
        luaL_getmetatable(L, ctors[i].mt);
        lua_getfield(L, -1, "__call");
        lua_pushstring(L, ctors[i].name);
        lua_pushcclosure(L, guarded_dsl_call, 2);
        lua_setfield(L, -2, "__call");
        lua_pop(L, 1);
    }
}

/* ------------------------------------------------------------------ code outside the hook
 * Lua runs two kinds of recipe code with its hooks off, where no budget could stop it:
 * a message handler called for an error raised in a hook (the budget's own error), and
 * __gc finalizers (during every collection, and at lua_close after the recipe is done). */

/* xpcall's message handler, upvalue 1 the recipe's: not called once a budget is out. */
static int budget_aware_handler(lua_State *L)
{
    if (kiln__sandbox_spent(L))
        return 1; /* the message as it is */
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, lua_gettop(L) - 1, 1);
    return 1;
}

static int guarded_xpcall(lua_State *L)
{
    luaL_checktype(L, 2, LUA_TFUNCTION);
    lua_pushvalue(L, 2);
    lua_pushcclosure(L, budget_aware_handler, 1);
    lua_replace(L, 2);
    return call_original(L);
}

static int guarded_setmetatable(lua_State *L)
{
    if (lua_type(L, 2) == LUA_TTABLE) {
        lua_pushliteral(L, "__gc");
        bool gc = lua_rawget(L, 2) != LUA_TNIL;
        lua_pop(L, 1);
        if (gc)
            return kiln__dsl_error(L, kiln__caller_line(L),
                                   "__gc finalizers are not available in a recipe: Lua runs them "
                                   "outside the recipe's budgets (docs/recipes.md, \"Sandbox\")");
    }
    return call_original(L);
}

/* ------------------------------------------------------------------ opening */

/* Replaces lib.name (lib table at the top of the stack) by fn with the original as
 * upvalue 1 and "prefix name" as upvalue 2. */
static void guard(lua_State *L, const char *prefix, const char *name, lua_CFunction fn)
{
    lua_getfield(L, -1, name);
    lua_pushfstring(L, "%s%s", prefix, name);
    lua_pushcclosure(L, fn, 2);
    lua_setfield(L, -2, name);
}

lua_CFunction kiln__guard_string_lib(lua_State *L)
{
    lua_getfield(L, -1, "find");
    lua_setfield(L, LUA_REGISTRYINDEX, "kiln.find");
    static const char *const pat[] = {"find", "match", "gmatch", "gsub"};
    for (size_t i = 0; i < sizeof pat / sizeof pat[0]; i++)
        guard(L, "", pat[i], guarded_match); /* guarded_match adds "string." */
    guard(L, "string.", "rep", guarded_rep);
    return guarded_find;
}

static int refuse_dump(lua_State *L)
{
    return kiln__dsl_error(L, kiln__caller_line(L),
                           "string.dump is not available in a recipe: recipes run in a sandbox "
                           "that loads no binary chunks (docs/recipes.md, \"Sandbox\")");
}

/* The string library's other sized functions, and the string metatable: arithmetic on
 * strings converts them (a scan of the whole string), and the metatable is locked
 * (getmetatable("") gets a token) so that string methods cannot be redefined. */
static void guard_strings(lua_State *L)
{
    lua_getglobal(L, LUA_STRLIBNAME);
    lua_CFunction find = kiln__guard_string_lib(L);
    if (kiln__ctx(L))
        kiln__ctx(L)->find = find;
    static const char *const bytes[] = {"upper", "lower", "reverse", "format"};
    for (size_t i = 0; i < sizeof bytes / sizeof bytes[0]; i++)
        guard(L, "string.", bytes[i], guarded_bytes);
    static const char *const pack[] = {"pack", "unpack", "packsize"};
    for (size_t i = 0; i < sizeof pack / sizeof pack[0]; i++)
        guard(L, "string.", pack[i], guarded_pack);
    guard(L, "string.", "byte", guarded_byte);
    lua_pushcfunction(L, refuse_dump);
    lua_setfield(L, -2, "dump");
    lua_pop(L, 1);
    lua_pushliteral(L, "");
    lua_getmetatable(L, -1);
    static const char *const arith[] = {"__add", "__sub", "__mul", "__mod", "__pow", "__div", "__idiv", "__unm"};
    for (size_t i = 0; i < sizeof arith / sizeof arith[0]; i++)
        if (lua_getfield(L, -1, arith[i]) == LUA_TFUNCTION) {
            lua_pop(L, 1);
            guard(L, "string arithmetic ", arith[i], guarded_bytes);
        } else {
            lua_pop(L, 1);
        }
    lua_pushliteral(L, "locked");
    lua_setfield(L, -2, "__metatable");
    lua_pop(L, 2);
}

static void guard_tables(lua_State *L)
{
    lua_getglobal(L, LUA_TABLIBNAME);
    guard(L, "table.", "move", guarded_move);
    guard(L, "table.", "sort", guarded_sort);
    guard(L, "table.", "unpack", guarded_range);
    guard(L, "table.", "concat", guarded_range);
    guard(L, "table.", "insert", guarded_shift);
    guard(L, "table.", "remove", guarded_shift);
    lua_pop(L, 1);
}

int kiln__sandbox_open(lua_State *L)
{
    static const struct {
        const char *name;
        lua_CFunction open;
    } libs[] = {{LUA_GNAME, luaopen_base},
                {LUA_STRLIBNAME, luaopen_string},
                {LUA_TABLIBNAME, luaopen_table},
                {LUA_MATHLIBNAME, luaopen_math}};
    for (size_t i = 0; i < sizeof libs / sizeof libs[0]; i++) {
        luaL_requiref(L, libs[i].name, libs[i].open, 1);
        lua_pop(L, 1);
    }
    /* No files, no code loading, no output, no GC control. */
    static const char *const drop[] = {"dofile", "loadfile", "load", "require", "collectgarbage", "print"};
    for (size_t i = 0; i < sizeof drop / sizeof drop[0]; i++) {
        lua_pushnil(L);
        lua_setglobal(L, drop[i]);
    }
    lua_pushglobaltable(L);
    guard(L, "", "xpcall", guarded_xpcall);
    guard(L, "", "setmetatable", guarded_setmetatable);
    guard(L, "", "tonumber", guarded_bytes);
    lua_pop(L, 1);
    guard_strings(L);
    guard_tables(L);
    return 0;
}

/* Globals a recipe might reach for that the sandbox leaves out: reading one says why
 * instead of the DSL's generic "unknown name". */
static const char *const forbidden[] = {"os", "io", "package", "debug", "require", "dofile",
                                        "loadfile", "load", "loadstring", "collectgarbage",
                                        "print"};

static int sandbox_index(lua_State *L)
{
    const char *k = lua_type(L, 2) == LUA_TSTRING ? lua_tostring(L, 2) : NULL;
    for (size_t i = 0; k && i < sizeof forbidden / sizeof forbidden[0]; i++)
        if (strcmp(k, forbidden[i]) == 0)
            return kiln__dsl_error(L, kiln__caller_line(L),
                                   "'%s' is not available in a recipe: recipes run in a sandbox "
                                   "without files, processes, module or code loading, output or "
                                   "garbage-collector control (docs/recipes.md, \"Sandbox\")",
                                   k);
    lua_pushvalue(L, lua_upvalueindex(1)); /* the DSL's strict __index */
    lua_insert(L, 1);
    lua_call(L, lua_gettop(L) - 1, 1);
    return 1;
}

void kiln__sandbox_explain_globals(lua_State *L)
{
    lua_pushglobaltable(L);
    if (lua_getmetatable(L, -1)) {
        lua_getfield(L, -1, "__index");
        lua_pushcclosure(L, sandbox_index, 1);
        lua_setfield(L, -2, "__index");
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
}
