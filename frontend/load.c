/* frontend/load.c — run a recipe in a sandboxed Lua 5.4 state (base, string, table,
 * math only; instruction and memory limits) and turn every failure into a
 * KILN_EINPUT diagnostic with file and line; the recipe accessors. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lualib.h>

#include "frontend/internal.h"

#define INSTR_LIMIT 10000000L  /* Lua VM instructions a recipe may run */
#define HOOK_STEP 1000         /* instructions between count-hook calls */
#define MEM_LIMIT (64u << 20)  /* bytes the Lua state may hold */
#define SRC_LIMIT (1u << 20)   /* bytes of recipe source */

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
    c->instr += HOOK_STEP;
    if (c->instr > INSTR_LIMIT || c->instr_hit) {
        /* From now on fail at every instruction, so a pcall in the recipe
         * cannot swallow the limit and carry on. */
        if (!c->instr_hit)
            lua_sethook(L, limit_hook, LUA_MASKCOUNT | LUA_MASKLINE, 1);
        c->instr_hit = true;
        luaL_error(L, "instruction limit");
    }
}

static int open_sandbox(lua_State *L)
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
    lua_getglobal(L, LUA_STRLIBNAME);
    lua_pushnil(L);
    lua_setfield(L, -2, "dump");
    lua_getfield(L, -1, "find");
    kiln__ctx(L)->find = lua_tocfunction(L, -1);
    lua_pop(L, 2);
    kiln__dsl_open(L);
    return 0;
}

/* "where:LINE: message" (Lua's own errors) -> line and message. */
static void split_lua_message(const char *msg, int *line, const char **text)
{
    for (const char *p = strchr(msg, ':'); p; p = strchr(p + 1, ':')) {
        const char *q = p + 1;
        int n = 0;
        while (*q >= '0' && *q <= '9' && n < 100000000)
            n = n * 10 + (*q++ - '0');
        if (q > p + 1 && *q == ':') {
            *line = n;
            q++;
            while (*q == ' ')
                q++;
            *text = q;
            return;
        }
    }
    *text = msg;
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

static int fail(lua_State *L, KLoadCtx *c, KLimit *lim, int status, const char *file, KilnDiag *d)
{
    int line = c->last_line;
    if (c->err_set) {
        kiln_diag_set_at(d, KILN_EINPUT, file, c->err_line, "%s", c->err);
    } else if (c->instr_hit) {
        kiln_diag_set_at(d, KILN_EINPUT, file, line,
                         "recipe ran more than %ld Lua instructions (an endless loop?)", INSTR_LIMIT);
    } else if (status == LUA_ERRMEM || lim->hit) {
        kiln_diag_set_at(d, KILN_EINPUT, file, line, "recipe used more than %u MiB of memory",
                         MEM_LIMIT >> 20);
    } else {
        const char *msg = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
        const char *text = "recipe raised an error that is not a string";
        if (msg)
            split_lua_message(msg, &line, &text);
        kiln_diag_set_at(d, KILN_EINPUT, file, line, "%s", text);
    }
    if (d && d->line <= 0)
        d->line = 1;
    lua_close(L);
    free(lim);
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
    lua_getfield(L, -1, "find");
    *(lua_CFunction *)lua_touserdata(L, 1) = lua_tocfunction(L, -1);
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

static int load_impl(const char *src, size_t len, const char *file, KilnRecipe **out, KilnDiag *d)
{
    *out = NULL;
    if (len > SRC_LIMIT)
        return kiln_diag_set_at(d, KILN_EINPUT, file, 1, "recipe is larger than %u KiB", SRC_LIMIT >> 10);
    KLimit *lim = calloc(1, sizeof *lim);
    if (!lim)
        return kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
    lim->max = MEM_LIMIT;
    lua_State *L = lua_newstate(limited_alloc, lim);
    if (!L) {
        free(lim);
        return kiln_diag_set(d, KILN_EINTERNAL, "cannot create a Lua state");
    }
    KLoadCtx ctx = {.src = src, .len = len};
    *(KLoadCtx **)lua_getextraspace(L) = &ctx;

    lua_pushcfunction(L, open_sandbox);
    int st = lua_pcall(L, 0, 0, 0);
    if (st != LUA_OK)
        return fail(L, &ctx, lim, st, file, d);

    char chunk[1100];
    snprintf(chunk, sizeof chunk, "@%s", file);
    st = luaL_loadbufferx(L, src, len, chunk, "t"); /* text only: no precompiled chunks */
    if (st != LUA_OK)
        return fail(L, &ctx, lim, st, file, d);
    char key[64];
    int first = 0, dup = kiln__dup_keys(src, len, key, sizeof key, &first);
    if (dup) {
        ctx.err_set = true;
        ctx.err_line = dup;
        snprintf(ctx.err, sizeof ctx.err, "duplicate key '%s' in one table (first at line %d)", key, first);
        return fail(L, &ctx, lim, LUA_ERRRUN, file, d);
    }

    lua_sethook(L, limit_hook, LUA_MASKCOUNT | LUA_MASKLINE, HOOK_STEP);
    st = lua_pcall(L, 0, 1, 0);
    lua_sethook(L, NULL, 0, 0);
    if (st != LUA_OK || ctx.err_set)
        return fail(L, &ctx, lim, st, file, d);
    KilnRecipe *r = kiln__dsl_take(L, -1);
    if (!r) {
        ctx.err_set = true;
        ctx.err_line = count_lines(src, len);
        snprintf(ctx.err, sizeof ctx.err,
                 "the recipe file must return a recipe: return recipe \"name\" { rule \"*\" { ... } } "
                 "(it returned %s)",
                 luaL_typename(L, -1));
        return fail(L, &ctx, lim, LUA_ERRRUN, file, d);
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

int kiln_recipe_load_string(const char *src, size_t len, const char *chunkname, KilnRecipe **out,
                            KilnDiag *d)
{
    return load_impl(src, len, chunkname ? chunkname : "<string>", out, d);
}

int kiln_recipe_load(const char *path, KilnRecipe **out, KilnDiag *d)
{
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f)
        return kiln_diag_set_at(d, KILN_EINPUT, path, 0, "cannot open recipe: %s", strerror(errno));
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
    int rc = load_impl(buf, n, path, out, d);
    free(buf);
    return rc;
}

void kiln__recipe_free_data(KilnRecipe *r)
{
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
