/* frontend/load.c — run a recipe in a sandboxed Lua 5.4 state (base, string, table,
 * math only; instruction and memory limits; `include` of recipes beside it) and turn
 * every failure into a KILN_EINPUT diagnostic with file and line; the recipe accessors. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lualib.h>

#include "frontend/internal.h"
#include "runtime/runtime.h"

/* The fuzzer builds with smaller budgets, so that a runaway input costs milliseconds. */
#ifndef KILN_RECIPE_INSTR_LIMIT
#define KILN_RECIPE_INSTR_LIMIT 10000000L
#endif
#ifndef KILN_RECIPE_MEM_LIMIT
#define KILN_RECIPE_MEM_LIMIT (64u << 20)
#endif
#define INSTR_LIMIT KILN_RECIPE_INSTR_LIMIT /* Lua VM instructions a recipe may run */
#define HOOK_STEP 1000                      /* instructions between count-hook calls */
/* What a function call costs, in instructions: a call can cost far more than one
 * instruction in C (a pcall, or a stack overflow's error), and recursion that keeps
 * overflowing the stack under pcall would otherwise run for seconds within budget. */
#define CALL_COST 100
#define MEM_LIMIT KILN_RECIPE_MEM_LIMIT     /* bytes the Lua state may hold */
#define SRC_LIMIT (1u << 20)                /* bytes of recipe source, per file */
#define INCLUDE_DEPTH 8                     /* include chains: root -> 8 files at most */
#define INCLUDE_NAME 255                    /* bytes of an included file's name */
/* Included sources of one load together: C reads and compiles them outside the
 * instruction budget, so a loop of includes must still run out of something. */
#define INCLUDE_BYTES (4u << 20)

/* What `include` needs while a recipe loads; its error fields carry an error raised
 * inside an included file out to the root recipe with that file's name and line. */
typedef struct KInclude {
    char dir[1024];                     /* the root recipe's directory */
    int depth;                          /* 0 while the root recipe runs */
    char chain[INCLUDE_DEPTH + 1][INCLUDE_NAME + 1]; /* file names root..current */
    size_t bytes;                       /* included source read so far */
    KLimit *lim;
    bool err_wrapped;                   /* ctx->err already names its included file */
    char msg[900];                      /* last Lua error an include re-raised ... */
    int msg_line;                       /* ... and the root recipe's line of that include */
    char limit_where[1400];             /* " in included file F:L" of a budget hit */
    int limit_line;                     /* root recipe's line of that include */
} KInclude;

static void *limited_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    KLimit *lim = ud;
    size_t old = ptr ? osize : 0;
    if (nsize == 0) {
        free(ptr);
        lim->used -= old;
        return NULL;
    }
    if (nsize > old && (nsize - old > lim->max || lim->used + (nsize - old) > lim->max)) {
        lim->hit = true;
        return NULL;
    }
    void *p = realloc(ptr, nsize);
    if (!p)
        return NULL;
    lim->used = lim->used - old + nsize;
    return p;
}

static void limit_hook(lua_State *L, lua_Debug *ar)
{
    KLoadCtx *c = kiln__ctx(L);
    if (!c)
        return;
    if (ar->event == LUA_HOOKLINE) {
        c->last_line = ar->currentline;
        return;
    }
    c->instr += ar->event == LUA_HOOKCOUNT ? HOOK_STEP : CALL_COST;
    if (c->instr > INSTR_LIMIT || c->instr_hit) {
        /* From now on fail at every instruction, so a pcall in the recipe
         * cannot swallow the limit and carry on. */
        if (!c->instr_hit)
            lua_sethook(L, limit_hook, LUA_MASKCOUNT | LUA_MASKLINE, 1);
        c->instr_hit = true;
        luaL_error(L, "instruction limit");
    }
}

/* ------------------------------------------------------------------ C loops
 * The instruction hook counts Lua instructions only. A few library functions loop in
 * C for as long as their arguments say, allocating nothing the memory cap would stop:
 * Lua's pattern matcher backtracks (string.find(("a"):rep(30), ("a*"):rep(12) .. "b")
 * would run for hours), string.rep of an empty string repeats an empty copy, and
 * table.move moves as many nils as asked. The sandbox's versions refuse what would
 * take more than about a second before calling Lua's own. */

#define MATCH_BUDGET 1e8  /* backtracking steps a pattern match may take, worst case */
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
 * subjects count as at least `min_subject` bytes. */
static void check_pattern(lua_State *L, const char *fname, size_t min_subject)
{
    size_t n = 0, plen = 0;
    luaL_checklstring(L, 1, &n);
    const char *p = luaL_checklstring(L, 2, &plen);
    if (lua_toboolean(L, 4) && !strcmp(fname, "find"))
        return; /* plain find: no pattern */
    if (n < min_subject)
        n = min_subject;
    if (pattern_cost(p, plen, n) > MATCH_BUDGET) {
        char msg[300]; /* lua_pushfstring knows no %zu or precision */
        snprintf(msg, sizeof msg,
                 "string.%s: pattern '%.60s' has too many repeated items (*, +, -, ?) to match a "
                 "%zu-byte string in reasonable time; anchor it (^, $) or use fewer wildcards",
                 fname, p, n);
        luaL_error(L, "%s", msg);
    }
}

/* string.find/match/gmatch/gsub: upvalue 1 is Lua's own, upvalue 2 its name. */
static int guarded_match(lua_State *L)
{
    check_pattern(L, lua_tostring(L, lua_upvalueindex(2)), 0);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, lua_gettop(L) - 1, LUA_MULTRET);
    return lua_gettop(L);
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
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, lua_gettop(L) - 1, 1);
    return 1;
}

static int guarded_move(lua_State *L)
{
    lua_Integer f = luaL_checkinteger(L, 2), e = luaL_checkinteger(L, 3);
    if (e >= f && (f < 0 ? e > MOVE_LIMIT + f : e - f >= MOVE_LIMIT))
        return luaL_error(L, "table.move: more than %d elements", (int)MOVE_LIMIT);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, lua_gettop(L) - 1, 1);
    return 1;
}

/* Replaces lib.name (lib table at the top of the stack) by fn with the original as
 * upvalue 1 and the name as upvalue 2. */
static void guard(lua_State *L, const char *name, lua_CFunction fn)
{
    lua_getfield(L, -1, name);
    lua_pushstring(L, name);
    lua_pushcclosure(L, fn, 2);
    lua_setfield(L, -2, name);
}

/* Opens the string library's guards in L (string table at the top of the stack) and
 * returns the find the DSL and the matcher call. */
static lua_CFunction guard_string_lib(lua_State *L)
{
    lua_getfield(L, -1, "find");
    lua_setfield(L, LUA_REGISTRYINDEX, "kiln.find");
    static const char *const pat[] = {"find", "match", "gmatch", "gsub"};
    for (size_t i = 0; i < sizeof pat / sizeof pat[0]; i++)
        guard(L, pat[i], guarded_match);
    guard(L, "rep", guarded_rep);
    return guarded_find;
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

static int refuse_dump(lua_State *L)
{
    return kiln__dsl_error(L, kiln__caller_line(L),
                           "string.dump is not available in a recipe: recipes run in a sandbox "
                           "that loads no binary chunks (docs/recipes.md, \"Sandbox\")");
}

static int include_fn(lua_State *L);

static int open_sandbox(lua_State *L)
{
    KInclude *inc = lua_touserdata(L, 1);
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
    lua_getglobal(L, LUA_STRLIBNAME);
    lua_pushcfunction(L, refuse_dump);
    lua_setfield(L, -2, "dump");
    kiln__ctx(L)->find = guard_string_lib(L);
    lua_pop(L, 1);
    lua_getglobal(L, LUA_TABLIBNAME);
    guard(L, "move", guarded_move);
    lua_pop(L, 1);
    /* The string metatable is shared by every string: getmetatable("") gets a token
     * instead, so a recipe cannot redefine string methods under the DSL's feet. */
    lua_pushliteral(L, "");
    lua_getmetatable(L, -1);
    lua_pushliteral(L, "locked");
    lua_setfield(L, -2, "__metatable");
    lua_pop(L, 2);
    kiln__dsl_open(L);
    lua_pushlightuserdata(L, inc);
    lua_pushcclosure(L, include_fn, 1);
    lua_setglobal(L, "include");
    lua_pushglobaltable(L);
    if (lua_getmetatable(L, -1)) {
        lua_getfield(L, -1, "__index");
        lua_pushcclosure(L, sandbox_index, 1);
        lua_setfield(L, -2, "__index");
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    return 0;
}

/* "where:LINE: message" (Lua's own errors) -> line and message; *where_len (may be
 * NULL) gets the length of "where", 0 when the message carries no position. */
static void split_lua_message(const char *msg, int *line, const char **text, size_t *where_len)
{
    if (where_len)
        *where_len = 0;
    for (const char *p = strchr(msg, ':'); p; p = strchr(p + 1, ':')) {
        const char *q = p + 1;
        int n = 0;
        while (*q >= '0' && *q <= '9' && n < 100000000)
            n = n * 10 + (*q++ - '0');
        if (q > p + 1 && *q == ':') {
            *line = n;
            if (where_len)
                *where_len = (size_t)(p - msg);
            q++;
            while (*q == ' ')
                q++;
            *text = q;
            return;
        }
    }
    *text = msg;
}

/* ------------------------------------------------------------------ include */

/* Why `name` cannot be included, or NULL. */
static const char *include_name_error(const char *name, size_t n)
{
    if (n == 0 || n > INCLUDE_NAME)
        return "the file name must be 1 to 255 bytes";
    if (strlen(name) != n)
        return "the file name contains a NUL byte";
    if (strchr(name, '/'))
        return "only a file in the same directory as the recipe can be included (no '/')";
    if (strstr(name, ".."))
        return "the file name must not contain '..'";
    if (n <= 4 || strcmp(name + n - 4, ".lua") != 0)
        return "the file name must end in .lua";
    return NULL;
}

/* Reads a plain file (no symbolic link, FIFO or device: nothing that could leak
 * another file's contents into an error message or block) of at most `max` bytes
 * into *out (malloc'd). Returns NULL or why not. */
static const char *read_include(const char *path, size_t max, char **out, size_t *len)
{
    *out = NULL;
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        return errno == ELOOP ? "it is a symbolic link (only plain files next to the recipe can be included)"
             : errno == ENOENT ? "no such file next to the recipe"
                               : strerror(errno);
    struct stat st;
    const char *why = NULL;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode))
        why = "not a regular file";
    else if ((uint64_t)st.st_size > max)
        why = "too large (recipes are at most 1 MiB each, and the files one recipe includes 4 MiB together)";
    char *buf = why ? NULL : malloc((size_t)st.st_size + 1);
    size_t n = 0;
    if (!why && !buf)
        why = "out of memory";
    while (!why && n < (size_t)st.st_size) {
        ssize_t r = read(fd, buf + n, (size_t)st.st_size - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            why = "read error";
        else
            n += (size_t)r;
    }
    close(fd);
    if (why) {
        free(buf);
        return why;
    }
    *out = buf;
    *len = n;
    return NULL;
}

static int push_source(lua_State *L)
{
    lua_pushlstring(L, lua_touserdata(L, 1), (size_t)lua_tointeger(L, 2));
    return 1;
}

/* An error left the included file `path`: give it that file's position once (the
 * innermost include does), and the including file's line `at` at every level, so the
 * root recipe reports "ROOT:LINE: in included file PATH:LINE: message". */
static int include_failed(lua_State *L, KInclude *inc, KLoadCtx *c, bool had_err, int st,
                          const char *path, int at)
{
    if (c->err_set) {
        if (!had_err) {
            if (!inc->err_wrapped) {
                char m[sizeof c->err + 1400];
                snprintf(m, sizeof m, "in included file %s:%d: %s", path, c->err_line, c->err);
                size_t k = strlen(m) < sizeof c->err ? strlen(m) : sizeof c->err - 1;
                memcpy(c->err, m, k);
                c->err[k] = 0;
                inc->err_wrapped = true;
            }
            c->err_line = at;
        }
        lua_pushstring(L, c->err);
        return lua_error(L);
    }
    if (c->instr_hit || st == LUA_ERRMEM || inc->lim->hit) {
        if (!inc->limit_where[0])
            snprintf(inc->limit_where, sizeof inc->limit_where, " in included file %s:%d", path,
                     c->last_line);
        inc->limit_line = at;
        return lua_error(L);
    }
    const char *msg = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
    if (!msg || strcmp(msg, inc->msg) != 0) {
        int line = c->last_line;
        const char *text = "recipe raised an error that is not a string";
        size_t wl = 0;
        if (msg)
            split_lua_message(msg, &line, &text, &wl);
        if (wl)
            snprintf(inc->msg, sizeof inc->msg, "in included file %.*s:%d: %s", (int)wl, msg, line, text);
        else
            snprintf(inc->msg, sizeof inc->msg, "in included file %s:%d: %s", path, line, text);
    }
    inc->msg_line = at;
    lua_pushstring(L, inc->msg);
    return lua_error(L);
}

/* include "name.lua": runs a recipe file from the root recipe's directory in this
 * state, under the same budgets, and returns what it returns. */
static int include_fn(lua_State *L)
{
    KInclude *inc = lua_touserdata(L, lua_upvalueindex(1));
    KLoadCtx *c = kiln__ctx(L);
    int at = kiln__caller_line(L);
    size_t n = 0;
    const char *name = lua_type(L, 1) == LUA_TSTRING ? lua_tolstring(L, 1, &n) : NULL;
    if (!name)
        return kiln__dsl_error(L, at, "include needs a file name, e.g. include \"rules.lua\" (got %s)",
                               luaL_typename(L, 1));
    const char *bad = include_name_error(name, n);
    if (bad)
        return kiln__dsl_error(L, at, "include \"%.255s\": %s", name, bad);
    for (int i = 0; i <= inc->depth; i++)
        if (strcmp(inc->chain[i], name) == 0) {
            char cyc[INCLUDE_DEPTH * (INCLUDE_NAME + 4) + 300] = "";
            for (int k = i; k <= inc->depth; k++)
                snprintf(cyc + strlen(cyc), sizeof cyc - strlen(cyc), "%s -> ", inc->chain[k]);
            return kiln__dsl_error(L, at, "include cycle: %s%s", cyc, name);
        }
    if (inc->depth >= INCLUDE_DEPTH)
        return kiln__dsl_error(L, at, "include \"%s\": includes nested more than %d deep", name,
                               INCLUDE_DEPTH);
    char path[sizeof inc->dir + INCLUDE_NAME + 2];
    snprintf(path, sizeof path, "%s/%s", inc->dir, name);
    char *buf;
    size_t len = 0;
    bad = read_include(path, SRC_LIMIT < INCLUDE_BYTES - inc->bytes ? SRC_LIMIT : INCLUDE_BYTES - inc->bytes,
                       &buf, &len);
    if (bad)
        return kiln__dsl_error(L, at, "include \"%s\" (%s): %s", name, path, bad);
    inc->bytes += len;
    /* the copy into a Lua string may fail on the memory budget: not with buf in hand */
    lua_settop(L, 0);
    lua_pushcfunction(L, push_source);
    lua_pushlightuserdata(L, buf);
    lua_pushinteger(L, (lua_Integer)len);
    int st = lua_pcall(L, 2, 1, 0);
    free(buf);
    if (st != LUA_OK)
        return lua_error(L);
    const char *src = lua_tostring(L, 1); /* stays on the stack while it runs */
    if (len >= 4 && memcmp(src, LUA_SIGNATURE, 4) == 0)
        return kiln__dsl_error(L, at, "include \"%s\": a precompiled Lua chunk; recipes must be source text",
                               name);
    const char *saved_src = c->src;
    size_t saved_len = c->len;
    KKeyIndex *saved_keys = c->keys;
    bool had_err = c->err_set;
    char key[64];
    int first = 0, dup = kiln__dup_keys(src, len, key, sizeof key, &first);
    if (dup && !c->err_set) {
        c->err_set = true;
        c->err_line = dup;
        snprintf(c->err, sizeof c->err, "duplicate key '%s' in one table (first at line %d)", key, first);
        return include_failed(L, inc, c, had_err, LUA_ERRRUN, path, at);
    }
    char chunk[sizeof path + 1];
    snprintf(chunk, sizeof chunk, "@%s", path);
    st = luaL_loadbufferx(L, src, len, chunk, "t");
    if (st != LUA_OK)
        return include_failed(L, inc, c, had_err, st, path, at);
    memcpy(inc->chain[++inc->depth], name, n + 1);
    c->src = src;
    c->len = len;
    c->keys = NULL;
    st = lua_pcall(L, 0, LUA_MULTRET, 0);
    c->src = saved_src;
    c->len = saved_len;
    c->keys = saved_keys;
    inc->depth--;
    if (st != LUA_OK || (c->err_set && !had_err))
        return include_failed(L, inc, c, had_err, st, path, at);
    return lua_gettop(L) - 1;
}

static int count_lines(const char *src, size_t len)
{
    int n = 1;
    for (size_t i = 0; i < len; i++)
        n += src[i] == '\n';
    if (len && src[len - 1] == '\n')
        n--;
    return n;
}

static int fail(lua_State *L, KLoadCtx *c, KInclude *inc, int status, const char *file, KilnDiag *d)
{
    int line = c->last_line;
    if (c->err_set) {
        kiln_diag_set_at(d, KILN_EINPUT, file, c->err_line, "%s", c->err);
    } else if (c->instr_hit) {
        kiln_diag_set_at(d, KILN_EINPUT, file, inc->limit_where[0] ? inc->limit_line : line,
                         "recipe ran more than %ld Lua instructions (an endless loop?)%s", INSTR_LIMIT,
                         inc->limit_where);
    } else if (status == LUA_ERRMEM || inc->lim->hit) {
        kiln_diag_set_at(d, KILN_EINPUT, file, inc->limit_where[0] ? inc->limit_line : line,
                         "recipe used more than %u MiB of memory%s", MEM_LIMIT >> 20, inc->limit_where);
    } else {
        const char *msg = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
        const char *text = "recipe raised an error that is not a string";
        if (msg && inc->msg[0] && strcmp(msg, inc->msg) == 0) {
            line = inc->msg_line;
            text = msg;
        } else if (msg) {
            split_lua_message(msg, &line, &text, NULL);
        }
        kiln_diag_set_at(d, KILN_EINPUT, file, line, "%s", text);
    }
    if (d && d->line <= 0)
        d->line = 1;
    if (d)
        kiln__escape_controls(d->msg, sizeof d->msg);
    lua_close(L);
    free(inc->lim);
    return KILN_EINPUT;
}

static bool uses_lua_patterns(const KilnRecipe *r)
{
    for (int i = 0; i < r->nrules; i++)
        if (r->rules[i].lua)
            return true;
    for (int i = 0; i < r->nignore; i++)
        if (r->ignore[i].lua)
            return true;
    return false;
}

static int open_string(lua_State *L)
{
    luaL_requiref(L, LUA_STRLIBNAME, luaopen_string, 0);
    *(lua_CFunction *)lua_touserdata(L, 1) = guard_string_lib(L);
    return 0;
}

static lua_State *matcher_state(KLimit *lim, lua_CFunction *find)
{
    lua_State *L = lua_newstate(limited_alloc, lim);
    if (!L)
        return NULL;
    *(KLoadCtx **)lua_getextraspace(L) = NULL;
    lua_pushcfunction(L, open_string);
    lua_pushlightuserdata(L, find);
    if (lua_pcall(L, 1, 0, 0) != LUA_OK || !*find) {
        lua_close(L);
        return NULL;
    }
    return L;
}

/* Runs the recipe in a fresh sandboxed state; frees inc->lim unless the recipe keeps it. */
static int run_recipe(const char *src, size_t len, const char *file, KInclude *inc, KilnRecipe **out,
                      KilnDiag *d)
{
    KLimit *lim = inc->lim;
    lua_State *L = lua_newstate(limited_alloc, lim);
    if (!L) {
        free(lim);
        return kiln_diag_set(d, KILN_EINTERNAL, "cannot create a Lua state");
    }
    KLoadCtx ctx = {.src = src, .len = len};
    *(KLoadCtx **)lua_getextraspace(L) = &ctx;

    lua_pushcfunction(L, open_sandbox);
    lua_pushlightuserdata(L, inc);
    int st = lua_pcall(L, 1, 0, 0);
    if (st != LUA_OK)
        return fail(L, &ctx, inc, st, file, d);

    char chunk[1100];
    snprintf(chunk, sizeof chunk, "@%s", file);
    st = luaL_loadbufferx(L, src, len, chunk, "t"); /* text only: no precompiled chunks */
    if (st != LUA_OK)
        return fail(L, &ctx, inc, st, file, d);
    char key[64];
    int first = 0, dup = kiln__dup_keys(src, len, key, sizeof key, &first);
    if (dup) {
        ctx.err_set = true;
        ctx.err_line = dup;
        snprintf(ctx.err, sizeof ctx.err, "duplicate key '%s' in one table (first at line %d)", key, first);
        return fail(L, &ctx, inc, LUA_ERRRUN, file, d);
    }

    lua_sethook(L, limit_hook, LUA_MASKCOUNT | LUA_MASKLINE | LUA_MASKCALL, HOOK_STEP);
    st = lua_pcall(L, 0, 1, 0);
    lua_sethook(L, NULL, 0, 0);
    if (st != LUA_OK || ctx.err_set)
        return fail(L, &ctx, inc, st, file, d);
    KilnRecipe *r = kiln__dsl_take(L, -1);
    if (!r) {
        ctx.err_set = true;
        ctx.err_line = count_lines(src, len);
        snprintf(ctx.err, sizeof ctx.err,
                 "the recipe file must return a recipe: return recipe \"name\" { rule \"*\" { ... } } "
                 "(it returned %s)",
                 luaL_typename(L, -1));
        return fail(L, &ctx, inc, LUA_ERRRUN, file, d);
    }
    /* Nothing the recipe left behind (globals, metatables, memory) outlives the
     * load: Lua patterns get a fresh state holding only the string library. */
    lua_close(L);
    r->limit = lim;
    if (uses_lua_patterns(r) && !(r->L = matcher_state(lim, &r->find))) {
        kiln_recipe_free(r);
        return kiln_diag_set(d, KILN_EINTERNAL, "cannot create a Lua state");
    }
    r->file = strdup(file);
    kiln__make_examples(r);
    *out = r;
    return 0;
}

/* The include state for a recipe named `file`: its directory and its own name. */
static void include_init(KInclude *inc, const char *file, KLimit *lim)
{
    memset(inc, 0, sizeof *inc);
    inc->lim = lim;
    const char *slash = strrchr(file, '/');
    const char *base = slash ? slash + 1 : file;
    if (!slash)
        snprintf(inc->dir, sizeof inc->dir, ".");
    else if (slash == file)
        snprintf(inc->dir, sizeof inc->dir, "/");
    else if ((size_t)(slash - file) < sizeof inc->dir)
        snprintf(inc->dir, sizeof inc->dir, "%.*s", (int)(slash - file), file);
    else
        snprintf(inc->dir, sizeof inc->dir, "/nonexistent"); /* too long a path: nothing to include */
    if (strlen(base) <= INCLUDE_NAME)
        memcpy(inc->chain[0], base, strlen(base) + 1);
}

static int load_impl(const char *src, size_t len, const char *file, KilnRecipe **out, KilnDiag *d)
{
    *out = NULL;
    if (len > SRC_LIMIT)
        return kiln_diag_set_at(d, KILN_EINPUT, file, 1, "recipe is larger than %u KiB", SRC_LIMIT >> 10);
    if (len >= 4 && memcmp(src, LUA_SIGNATURE, 4) == 0)
        return kiln_diag_set_at(d, KILN_EINPUT, file, 1,
                                "recipe is a precompiled Lua chunk; recipes must be source text");
    KLimit *lim = calloc(1, sizeof *lim);
    KInclude *inc = malloc(sizeof *inc);
    if (!lim || !inc) {
        free(lim);
        free(inc);
        return kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
    }
    lim->max = MEM_LIMIT;
    include_init(inc, file, lim);
    int rc = run_recipe(src, len, file, inc, out, d);
    free(inc);
    return rc;
}

/* Recipes parsed and layers lowered by this process (kiln_frontend_counts). */
static _Atomic int64_t nparses;
_Atomic int64_t kiln__nlowerings;

void kiln_frontend_counts(int64_t *parses, int64_t *lowerings)
{
    *parses = nparses;
    *lowerings = kiln__nlowerings;
}

int kiln_recipe_load_string(const char *src, size_t len, const char *chunkname, KilnRecipe **out,
                            KilnDiag *d)
{
    nparses++;
    return load_impl(src, len, chunkname ? chunkname : "<string>", out, d);
}

int kiln_recipe_load(const char *path, KilnRecipe **out, KilnDiag *d)
{
    *out = NULL;
    FILE *f = kiln_rt_fopen_regular(path, "recipe", 0, d); /* a FIFO or device: refused */
    if (!f)
        return KILN_EINPUT;
    char *buf = malloc(SRC_LIMIT + 1);
    size_t n = buf ? fread(buf, 1, SRC_LIMIT + 1, f) : 0;
    bool err = ferror(f);
    fclose(f);
    if (!buf)
        return kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
    if (err) {
        free(buf);
        return kiln_diag_set_at(d, KILN_EINPUT, path, 0, "cannot read recipe");
    }
    nparses++;
    int rc = load_impl(buf, n, path, out, d);
    free(buf);
    return rc;
}

void kiln__recipe_free_data(KilnRecipe *r)
{
    kiln__index_free(r->rule_ix), kiln__index_free(r->ignore_ix);
    for (int i = 0; i < r->nrules; i++) {
        free(r->rules[i].pattern);
        free(r->rules[i].example);
    }
    free(r->rules);
    for (int i = 0; i < r->nignore; i++)
        free(r->ignore[i].pattern);
    free(r->ignore);
    free(r->name);
    free(r->file);
    free(r->target);
}

void kiln_recipe_free(KilnRecipe *r)
{
    if (!r)
        return;
    kiln__recipe_free_data(r);
    if (r->L)
        lua_close(r->L);
    free(r->limit);
    free(r);
}

const char *kiln_recipe_name(const KilnRecipe *r) { return r->name; }
const char *kiln_recipe_file(const KilnRecipe *r) { return r->file; }
const char *kiln_recipe_target(const KilnRecipe *r) { return r->target; }
int kiln_recipe_nrules(const KilnRecipe *r) { return r->nrules; }

const char *kiln_recipe_rule_pattern(const KilnRecipe *r, int i)
{
    return i >= 0 && i < r->nrules ? r->rules[i].pattern : NULL;
}

const char *kiln_recipe_rule_example(const KilnRecipe *r, int i)
{
    return i >= 0 && i < r->nrules ? r->rules[i].example : NULL;
}
