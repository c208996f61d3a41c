/* frontend/match.c — which rule a layer name falls under: glob and Lua-pattern
 * matching, the ignore list, first-match-wins, and example names per rule. */
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "frontend/internal.h"

bool kiln_glob_match(const char *p, const char *s)
{
    /* Iterative with one backtrack point: linear-ish, no recursion on '*'. */
    const char *star = NULL, *mark = NULL;
    while (*s) {
        if (*p == '*') {
            star = p++;
            mark = s;
        } else if (*p == '?' || *p == *s) {
            p++;
            s++;
        } else if (star) {
            p = star + 1;
            s = ++mark;
        } else {
            return false;
        }
    }
    while (*p == '*')
        p++;
    return *p == 0;
}

/* Lua patterns go through Lua's own matcher (string.find as opened at load,
 * which the recipe could not replace); unanchored unless the pattern says ^/$. */
static bool lua_match(const KilnRecipe *r, const char *pattern, const char *name)
{
    lua_State *L = r->L;
    if (!L || !r->find)
        return false;
    int top = lua_gettop(L);
    lua_pushcfunction(L, r->find);
    lua_pushstring(L, name);
    lua_pushstring(L, pattern);
    bool hit = lua_pcall(L, 2, 1, 0) == LUA_OK && !lua_isnil(L, -1);
    lua_settop(L, top);
    return hit;
}

bool kiln__pattern_match(const KilnRecipe *r, const char *pattern, bool lua, const char *name)
{
    return lua ? lua_match(r, pattern, name) : kiln_glob_match(pattern, name);
}

bool kiln_recipe_ignored(const KilnRecipe *r, const char *layer)
{
    if (r->ignore_ix)
        return kiln__index_first(r, r->ignore_ix, layer) >= 0;
    for (int i = 0; i < r->nignore; i++)
        if (kiln__pattern_match(r, r->ignore[i].pattern, r->ignore[i].lua, layer))
            return true;
    return false;
}

int kiln_recipe_match(const KilnRecipe *r, const char *layer)
{
    if (!layer || kiln_recipe_ignored(r, layer))
        return -1;
    if (r->rule_ix)
        return kiln__index_first(r, r->rule_ix, layer);
    for (int i = 0; i < r->nrules; i++)
        if (kiln__pattern_match(r, r->rules[i].pattern, r->rules[i].lua, layer))
            return i;
    return -1;
}

/* ------------------------------------------------------------------ examples */

/* A growing string: examples are as long as their patterns make them (a fixed buffer
 * once cut long globs short, and the cut name matched another rule or none). */
typedef struct Buf {
    char *s;
    size_t n, cap;
    bool oom;
} Buf;

static void put(Buf *b, const char *s)
{
    size_t k = strlen(s);
    if (b->oom)
        return;
    if (b->n + k + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->n + k + 1)
            cap *= 2;
        char *ns = realloc(b->s, cap);
        if (!ns) {
            b->oom = true;
            return;
        }
        b->s = ns, b->cap = cap;
    }
    memcpy(b->s + b->n, s, k + 1);
    b->n += k;
}

static const char *str(const Buf *b) { return b->s ? b->s : ""; }

static void putc_(Buf *b, char c)
{
    char t[2] = {c, 0};
    put(b, t);
}

/* Where a name starts when its pattern leaves the start open: the first block, then
 * others, so that `ignore = { "lua:^model%.layers%.0%." }` (the first block kept in
 * f32) still leaves each rule an example it governs. */
static const char *const prefixes[] = {"model.layers.0", "model.layers.1", "model.layers.2",
                                       "model.layers.7", "model.layers.31", "layers.1",
                                       "model.decoder.layers.1", "encoder.layer.1", "h.1"};
enum { NPREFIXES = sizeof prefixes / sizeof prefixes[0] };

/* Glob: a leading '*' stands for the model prefix, other '*' for `fill`. */
static void glob_example(const char *p, const char *prefix, const char *fill, Buf *b)
{
    for (const char *q = p; *q; q++) {
        if (*q == '*')
            put(b, q == p ? prefix : fill);
        else if (*q == '?')
            putc_(b, 'x');
        else
            putc_(b, *q);
    }
}

/* Lua pattern: keep literal characters, one instance of each class or set,
 * drop optional items and anchors. */
static void lua_example(const char *p, const char *prefix, Buf *b)
{
    bool anchored = *p == '^';
    if (anchored)
        p++;
    Buf t = {0};
    while (*p) {
        char item[2] = {0, 0};
        const char *next = p + 1;
        if (*p == '%' && p[1]) {
            char c = p[1];
            item[0] = c == 'd' ? '0' : (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ? 'x' : c;
            next = p + 2;
            if (c == 'b' || c == 'f') { /* %bxy, %f[set]: give up on these parts */
                item[0] = 0;
                next = p + 2 + (c == 'b' ? (p[2] && p[3] ? 2 : 0) : 0);
                if (c == 'f' && *next == '[')
                    while (*next && *next != ']')
                        next++;
                if (c == 'f' && *next)
                    next++;
            }
        } else if (*p == '[') {
            const char *q = p + 1;
            if (*q == '^') { /* a negated set: pick a character it does not name */
                item[0] = strchr(q, 'x') && strchr(q, 'x') < strchr(q, ']') ? 'y' : 'x';
                q++;
            } else {
                item[0] = *q == '%' && q[1] ? (q[1] == 'd' ? '0' : q[1] >= 'a' && q[1] <= 'z' ? 'x' : q[1])
                                            : *q;
            }
            do {
                if (!*q)
                    break;
                if (*q == '%' && q[1])
                    q++;
                q++;
            } while (*q && *q != ']');
            next = *q ? q + 1 : q;
        } else if (*p == '.') {
            item[0] = 'x';
        } else if (*p == '$' && !p[1]) {
            break;
        } else {
            item[0] = *p;
        }
        if (*next == '*' || *next == '-' || *next == '?') {
            next++; /* optional: leave it out */
        } else {
            if (*next == '+')
                next++;
            if (item[0])
                put(&t, item);
        }
        p = next;
    }
    if (!anchored && (t.n == 0 || t.s[0] == '.'))
        put(b, prefix);
    put(b, str(&t));
    b->oom |= t.oom;
    free(t.s);
}

static bool example_ok(const KilnRecipe *r, int i, const Buf *b)
{
    return !b->oom && kiln_recipe_match(r, str(b)) == i;
}

static void index_patterns(KilnRecipe *r)
{
    int n = r->nrules > r->nignore ? r->nrules : r->nignore;
    const char **pat = malloc((size_t)(n > 0 ? n : 1) * sizeof *pat);
    bool *lua = malloc((size_t)(n > 0 ? n : 1) * sizeof *lua);
    if (pat && lua) {
        for (int i = 0; i < r->nignore; i++)
            pat[i] = r->ignore[i].pattern, lua[i] = r->ignore[i].lua;
        r->ignore_ix = kiln__index_build(r->nignore, pat, lua);
        for (int i = 0; i < r->nrules; i++)
            pat[i] = r->rules[i].pattern, lua[i] = r->rules[i].lua;
        r->rule_ix = kiln__index_build(r->nrules, pat, lua);
    }
    free(pat);
    free(lua);
}

/* Rule i's example: each prefix with each fill until one lands on rule i; else the
 * first guess, marked as not landing (kiln_recipe_rule_example_lands). */
static void make_example(KilnRecipe *r, int i)
{
    static const char *const fills[] = {"x", "proj", "layers.0", "up_proj", "0", "a.b"};
    KRule *k = &r->rules[i];
    Buf b = {0};
    bool ok = false;
    for (int pi = 0; pi < NPREFIXES && !ok && !b.oom; pi++) {
        int nf = k->lua ? 1 : (int)(sizeof fills / sizeof fills[0]);
        for (int f = 0; f < nf && !ok; f++) {
            Buf c = {0};
            if (k->lua)
                lua_example(k->pattern, prefixes[pi], &c);
            else
                glob_example(k->pattern, prefixes[pi], fills[f], &c);
            ok = example_ok(r, i, &c);
            if (ok || (!b.s && !b.oom)) { /* the one that lands, or the first guess */
                free(b.s);
                b = c;
            } else {
                free(c.s);
            }
        }
    }
    k->example = b.oom ? NULL : b.s ? b.s : strdup("");
    k->example_lands = ok;
    if (b.oom)
        free(b.s);
}

void kiln__make_examples(KilnRecipe *r)
{
    index_patterns(r);
    for (int i = 0; i < r->nrules; i++)
        make_example(r, i);
}

bool kiln_recipe_rule_example_lands(const KilnRecipe *r, int i)
{
    return i >= 0 && i < r->nrules && r->rules[i].example_lands;
}
