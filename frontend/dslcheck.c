/* frontend/dslcheck.c — shared by the recipe language's builders: errors that
 * carry the recipe line, the caller's line, key lines, and checking a settings
 * table's keys against the valid names (with a "did you mean" for near misses). */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "frontend/internal.h"

KLoadCtx *kiln__ctx(lua_State *L) { return *(KLoadCtx **)lua_getextraspace(L); }

/* Control characters (ESC, \r, \n, ...) in s as \xNN, in place, cut to fit n bytes:
 * recipe text reaches terminals, where an escape sequence or a \r could repaint what
 * kiln printed ("all checks PASSED"). */
void kiln__escape_controls(char *s, size_t n)
{
    size_t len = strlen(s), k = 0;
    for (size_t i = 0; i < len; i++)
        k += (unsigned char)s[i] < 0x20 || s[i] == 0x7f;
    char *t = k ? malloc(len + 1) : NULL;
    if (!t) {
        for (size_t i = 0; i < len; i++) /* nothing to escape, or no memory: '?' */
            s[i] = (unsigned char)s[i] < 0x20 || s[i] == 0x7f ? '?' : s[i];
        return;
    }
    memcpy(t, s, len + 1);
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)t[i];
        bool ctl = c < 0x20 || c == 0x7f;
        if (o + (ctl ? 4 : 1) >= n)
            break;
        if (ctl)
            o += (size_t)snprintf(s + o, n - o, "\\x%02x", c);
        else
            s[o++] = (char)c;
    }
    s[o] = 0;
    free(t);
}

/* Record the first error with its line and unwind the recipe. */
int kiln__dsl_error(lua_State *L, int line, const char *fmt, ...)
{
    KLoadCtx *c = kiln__ctx(L);
    if (!c->err_set) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(c->err, sizeof c->err, fmt, ap);
        va_end(ap);
        kiln__escape_controls(c->err, sizeof c->err);
        c->err_line = line > 0 ? line : c->last_line;
        c->err_set = true;
    }
    lua_pushstring(L, c->err);
    return lua_error(L);
}

/* The line of the Lua code that called the running C function. */
int kiln__caller_line(lua_State *L)
{
    lua_Debug ar;
    if (lua_getstack(L, 1, &ar) && lua_getinfo(L, "l", &ar) && ar.currentline > 0)
        return ar.currentline;
    return kiln__ctx(L)->last_line;
}

static int key_index_gc(lua_State *L)
{
    KKeyIndex **box = lua_touserdata(L, 1);
    kiln__key_index_free(*box);
    *box = NULL;
    return 0;
}

/* c->src's keys, lexed once per source (a recipe with thousands of rules asks about
 * their keys thousands of times) and freed with the state. */
static KKeyIndex *key_index(lua_State *L, KLoadCtx *c)
{
    if (c->keys)
        return c->keys;
    KKeyIndex **box = lua_newuserdatauv(L, sizeof *box, 0);
    *box = NULL;
    if (luaL_newmetatable(L, "kiln.key_index")) {
        lua_pushcfunction(L, key_index_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_setmetatable(L, -2);
    luaL_ref(L, LUA_REGISTRYINDEX);
    return c->keys = *box = kiln__key_index(c->src, c->len);
}

/* The line of `key =` at or after line `from`: errors about a key point at it. */
int kiln__key_line_at(lua_State *L, int from, const char *key)
{
    KLoadCtx *c = kiln__ctx(L);
    if (!c->src || c->err_set) /* after the first error, lines no longer matter */
        return from;
    KKeyIndex *ix = key_index(L, c);
    return ix ? kiln__key_index_line(ix, from, key) : kiln__key_line(c->src, c->len, from, key);
}

/* A short name for what a value is, for "expected X, got Y". */
const char *kiln__what(lua_State *L, int idx)
{
    if (luaL_testudata(L, idx, MT_FORMAT))
        return "a format";
    if (luaL_testudata(L, idx, MT_RULE) || luaL_testudata(L, idx, MT_RULEB))
        return "a rule";
    if (luaL_testudata(L, idx, MT_RECIPE) || luaL_testudata(L, idx, MT_RECIPEB))
        return "a recipe";
    return luaL_typename(L, idx);
}

int kiln__choice(const char *s, const char *const *names, int n)
{
    for (int i = 0; i < n; i++)
        if (strcmp(s, names[i]) == 0)
            return i;
    return -1;
}

/* Edit distance, capped: only small distances matter for suggestions. */
static int edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la > 40 || lb > 40)
        return 99;
    int row[41];
    for (size_t j = 0; j <= lb; j++)
        row[j] = (int)j;
    for (size_t i = 1; i <= la; i++) {
        int diag = row[0];
        row[0] = (int)i;
        for (size_t j = 1; j <= lb; j++) {
            int up = row[j];
            int best = diag + (a[i - 1] != b[j - 1]);
            if (up + 1 < best)
                best = up + 1;
            if (row[j - 1] + 1 < best)
                best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[lb];
}

/* "; did you mean 'x'?" for a near miss, else "". */
const char *kiln__suggest(char *buf, size_t n, const char *s, const char *const *names, int count)
{
    int best = 3, bi = -1;
    for (int i = 0; i < count; i++) {
        int dist = edit_distance(s, names[i]);
        if (dist < best) {
            best = dist;
            bi = i;
        }
    }
    if (bi < 0 || (int)strlen(s) <= best)
        return "";
    snprintf(buf, n, "; did you mean '%s'?", names[bi]);
    return buf;
}

void kiln__join(char *buf, size_t n, const char *const *names, int count)
{
    buf[0] = 0;
    for (int i = 0; i < count; i++) {
        strncat(buf, i ? ", " : "", n - strlen(buf) - 1);
        strncat(buf, names[i], n - strlen(buf) - 1);
    }
}

/* Reject keys of the table at idx that are not in names[]; the smallest bad key
 * is reported so the message does not depend on hash order. */
void kiln__check_keys(lua_State *L, int idx, const char *const *names, int n, int line,
                       const char *where, const char *noun, bool allow_list)
{
    idx = lua_absindex(L, idx);
    char bad[128] = "";
    bool have_bad = false;
    lua_Integer len = (lua_Integer)lua_rawlen(L, idx);
    lua_pushnil(L);
    while (lua_next(L, idx)) { /* key at -2, value at -1 */
        if (lua_type(L, -2) == LUA_TSTRING) {
            const char *k = lua_tostring(L, -2);
            if (kiln__choice(k, names, n) < 0 && (!have_bad || strcmp(k, bad) < 0)) {
                snprintf(bad, sizeof bad, "%s", k);
                have_bad = true;
            }
        } else if (allow_list && lua_isinteger(L, -2) && lua_tointeger(L, -2) >= 1 &&
                   lua_tointeger(L, -2) <= len) {
            /* a list item: checked by the caller */
        } else if (allow_list) {
            kiln__dsl_error(L, line, "%s: unexpected %s key; rules go in a plain list", where,
                      luaL_typename(L, -2));
        } else {
            kiln__dsl_error(L, line, "%s: expected name = value, got a positional value (%s)", where,
                      kiln__what(L, -1));
        }
        lua_pop(L, 1);
    }
    if (have_bad) {
        char valid[256];
        kiln__join(valid, sizeof valid, names, n);
        char hint[80];
        kiln__dsl_error(L, kiln__key_line_at(L, line, bad), "unknown %s '%s' in %s (valid: %s%s)%s", noun, bad, where,
                  valid, allow_list ? ", and the rules" : "", kiln__suggest(hint, sizeof hint, bad, names, n));
    }
}