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
#include "frontend/sandbox.h"
#include "runtime/runtime.h"

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
    KSandbox *sb;
    bool err_wrapped;                   /* ctx->err already names its included file */
    char msg[900];                      /* last Lua error an include re-raised ... */
    int msg_line;                       /* ... and the root recipe's line of that include */
    char limit_where[1400];             /* " in included file F:L" of a budget hit */
    int limit_line;                     /* root recipe's line of that include */
} KInclude;

static int include_fn(lua_State *L);

static int open_sandbox(lua_State *L)
{
    KInclude *inc = lua_touserdata(L, 1);
    kiln__sandbox_open(L);
    kiln__dsl_open(L);
    kiln__sandbox_guard_dsl(L);
    lua_pushlightuserdata(L, inc);
    lua_pushcclosure(L, include_fn, 1);
    lua_setglobal(L, "include");
    kiln__sandbox_explain_globals(L);
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
    if (inc->sb->hit || st == LUA_ERRMEM) {
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
    } else if (inc->sb->hit || status == LUA_ERRMEM) {
        char msg[400];
        if (!inc->sb->hit)
            inc->sb->hit = KSB_MEMORY; /* the system's allocator failed: memory all the same */
        kiln__sandbox_message(inc->sb, msg, sizeof msg);
        kiln_diag_set_at(d, KILN_EINPUT, file, inc->limit_where[0] ? inc->limit_line : line, "%s%s", msg,
                         inc->limit_where);
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
    *(lua_CFunction *)lua_touserdata(L, 1) = kiln__guard_string_lib(L);
    return 0;
}

/* A state with the string library only, its heap capped like the recipe's (*lim). */
static lua_State *matcher_state(KLimit **lim, lua_CFunction *find)
{
    if (!(*lim = calloc(1, sizeof **lim)))
        return NULL;
    (*lim)->max = KILN_RECIPE_MEM_LIMIT;
    lua_State *L = lua_newstate(kiln__limited_alloc, *lim);
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

/* Runs the recipe in a fresh sandboxed state under inc->sb's budgets. */
static int run_recipe(const char *src, size_t len, const char *file, KInclude *inc, KilnRecipe **out,
                      KilnDiag *d)
{
    lua_State *L = kiln__sandbox_state(inc->sb);
    if (!L)
        return kiln_diag_set(d, KILN_EINTERNAL, "cannot create a Lua state");
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

    kiln__sandbox_arm(L);
    st = lua_pcall(L, 0, 1, 0);
    kiln__sandbox_disarm(L);
    /* a budget can run out in the allocator, and the recipe catch its error and return
     * before the hook next looks: that is a failed load all the same */
    if (st != LUA_OK || ctx.err_set || inc->sb->hit)
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
     * load (it can leave no finalizer to run at close: sandbox_lib.c): Lua patterns
     * get a fresh state holding only the string library. */
    lua_close(L);
    if (uses_lua_patterns(r) && !(r->L = matcher_state(&r->limit, &r->find))) {
        kiln_recipe_free(r);
        return kiln_diag_set(d, KILN_EINTERNAL, "cannot create a Lua state");
    }
    r->file = strdup(file);
    kiln__make_examples(r);
    *out = r;
    return 0;
}

/* The include state for a recipe named `file`: its directory and its own name. */
static void include_init(KInclude *inc, const char *file, KSandbox *sb)
{
    memset(inc, 0, sizeof *inc);
    inc->sb = sb;
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
    KSandbox *sb = calloc(1, sizeof *sb);
    KInclude *inc = malloc(sizeof *inc);
    if (!sb || !inc) {
        free(sb);
        free(inc);
        return kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
    }
    sb->mem.max = KILN_RECIPE_MEM_LIMIT;
    include_init(inc, file, sb);
    int rc = run_recipe(src, len, file, inc, out, d);
    free(inc);
    free(sb);
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

int kiln_recipe_rule_line(const KilnRecipe *r, int i)
{
    return i >= 0 && i < r->nrules ? r->rules[i].line : 0;
}

const char *kiln_recipe_rule_example(const KilnRecipe *r, int i)
{
    return i >= 0 && i < r->nrules ? r->rules[i].example : NULL;
}
