/* frontend/dupkeys.c — find `name = value` keys written twice in one Lua table
 * constructor. Lua keeps the last silently; in a recipe
 * (int4 { group = 128, group = 64 }) that is always a mistake. A small lexer
 * over source that Lua has already parsed successfully. */
#include <stdlib.h>
#include <string.h>

#include "frontend/internal.h"

typedef enum { T_NAME, T_STR, T_NUM, T_LBRACE, T_RBRACE, T_OPEN, T_CLOSE, T_SEP, T_EQ, T_OTHER } Tok;

typedef struct {
    Tok t;
    int line;
    const char *s;
    size_t n;
} Token;

typedef struct {
    int frame;
    int line;
    const char *s;
    size_t n;
} Key;

static bool name_start(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
static bool name_char(char c) { return name_start(c) || (c >= '0' && c <= '9'); }

/* Level of a long bracket starting at p ("[==[" -> 2), or -1. */
static int long_open(const char *p, const char *end)
{
    if (p >= end || *p != '[')
        return -1;
    int lvl = 0;
    p++;
    while (p < end && *p == '=')
        lvl++, p++;
    return p < end && *p == '[' ? lvl : -1;
}

/* Skip a long bracket body; returns the position after the closing bracket. */
static const char *long_skip(const char *p, const char *end, int lvl, int *line)
{
    p += lvl + 2;
    for (; p < end; p++) {
        if (*p == '\n')
            (*line)++;
        if (*p == ']') {
            const char *q = p + 1;
            int n = 0;
            while (q < end && *q == '=')
                n++, q++;
            if (n == lvl && q < end && *q == ']')
                return q + 1;
        }
    }
    return end;
}

static int lex(const char *src, size_t len, Token **out)
{
    const char *p = src, *end = src + len;
    int line = 1, n = 0, cap = 256;
    Token *v = malloc((size_t)cap * sizeof *v);
    if (!v)
        return -1;
    if (len > 1 && src[0] == '#') /* a "#!" first line, which Lua skips */
        while (p < end && *p != '\n')
            p++;
    while (p < end) {
        char c = *p;
        if (c == '\n') {
            line++;
            p++;
            continue;
        }
        if (c == ' ' || c == '\t' || c == '\r' || c == '\f' || c == '\v') {
            p++;
            continue;
        }
        if (c == '-' && p + 1 < end && p[1] == '-') {
            int lvl = long_open(p + 2, end);
            if (lvl >= 0)
                p = long_skip(p + 2, end, lvl, &line);
            else
                while (p < end && *p != '\n')
                    p++;
            continue;
        }
        if (n == cap) {
            cap *= 2;
            Token *nv = realloc(v, (size_t)cap * sizeof *v);
            if (!nv) {
                free(v);
                return -1;
            }
            v = nv;
        }
        Token *t = &v[n++];
        t->line = line;
        t->s = p;
        int lvl = long_open(p, end);
        if (lvl >= 0) {
            t->t = T_STR;
            p = long_skip(p, end, lvl, &line);
        } else if (c == '"' || c == '\'') {
            t->t = T_STR;
            for (p++; p < end && *p != c; p++) {
                if (*p == '\\' && p + 1 < end) {
                    p++;
                    if (*p == '\n')
                        line++;
                    else if (*p == 'z') /* \z skips following whitespace, newlines included */
                        while (p + 1 < end && (p[1] == ' ' || p[1] == '\n' || p[1] == '\t' || p[1] == '\r'))
                            line += *++p == '\n';
                } else if (*p == '\n') {
                    line++;
                }
            }
            p++;
        } else if (name_start(c)) {
            t->t = T_NAME;
            while (p < end && name_char(*p))
                p++;
        } else if ((c >= '0' && c <= '9') || (c == '.' && p + 1 < end && p[1] >= '0' && p[1] <= '9')) {
            t->t = T_NUM;
            while (p < end && (name_char(*p) || *p == '.' ||
                               ((*p == '+' || *p == '-') && strchr("eEpP", p[-1]))))
                p++;
        } else {
            t->t = c == '{' ? T_LBRACE : c == '}' ? T_RBRACE : c == '(' || c == '[' ? T_OPEN
                 : c == ')' || c == ']'       ? T_CLOSE
                 : c == ',' || c == ';'       ? T_SEP
                 : c == '='                   ? T_EQ
                                              : T_OTHER;
            if (c == '=' && p + 1 < end && p[1] == '=')
                t->t = T_OTHER, p++;
            else if ((c == '<' || c == '>' || c == '~') && p + 1 < end && p[1] == '=')
                p++; /* <=, >=, ~= are not a key's '=' */
            p++;
        }
        t->n = (size_t)(p - t->s);
    }
    *out = v;
    return n;
}

static bool word(const Token *t, const char *w)
{
    return t->n == strlen(w) && memcmp(t->s, w, t->n) == 0;
}

static int key_cmp(const void *a, const void *b)
{
    const Key *x = a, *y = b;
    if (x->frame != y->frame)
        return x->frame < y->frame ? -1 : 1;
    size_t n = x->n < y->n ? x->n : y->n;
    int c = memcmp(x->s, y->s, n);
    if (c)
        return c;
    if (x->n != y->n)
        return x->n < y->n ? -1 : 1;
    return x->line - y->line ? (x->line < y->line ? -1 : 1) : (x->s < y->s ? -1 : x->s > y->s);
}

/* Every `name =` field key of every table constructor, in source order. */
static int collect_keys(const char *src, size_t len, Key **out)
{
    Token *tok = NULL;
    int nt = lex(src, len, &tok);
    *out = NULL;
    if (nt < 0)
        return 0;
    /* Frames: -1 for ( [ and blocks, else the id of a { table constructor. */
    enum { MAXDEPTH = 512 };
    int stack[MAXDEPTH], depth = 0, next_frame = 0, nk = 0;
    Key *keys = malloc(((size_t)nt + 1) * sizeof *keys);
    bool field_start = false;
    for (int i = 0; keys && i < nt; i++) {
        Token *t = &tok[i];
        bool in_table = depth > 0 && stack[depth - 1] >= 0;
        if (field_start && in_table && t->t == T_NAME && i + 1 < nt && tok[i + 1].t == T_EQ)
            keys[nk++] = (Key){stack[depth - 1], t->line, t->s, t->n};
        field_start = false;
        if (t->t == T_LBRACE || t->t == T_OPEN) {
            if (depth < MAXDEPTH)
                stack[depth] = t->t == T_LBRACE ? next_frame++ : -1;
            depth++;
            field_start = t->t == T_LBRACE;
        } else if (t->t == T_RBRACE || t->t == T_CLOSE) {
            if (depth > 0)
                depth--;
        } else if (t->t == T_SEP) {
            field_start = true;
        } else if (t->t == T_NAME && (word(t, "function") || word(t, "if") || word(t, "do") ||
                                      word(t, "repeat"))) {
            /* a block inside a table: its `a, b = ...` are not fields */
            if (depth < MAXDEPTH)
                stack[depth] = -1;
            depth++;
        } else if (t->t == T_NAME && (word(t, "end") || word(t, "until"))) {
            if (depth > 0)
                depth--;
        }
        if (depth > MAXDEPTH) /* absurd nesting: stop checking rather than guess */
            break;
    }
    free(tok);
    *out = keys;
    return nk;
}

/* Keys by name, then line: the first `key =` at or after a line is a binary search. */
static int name_line_cmp(const void *a, const void *b)
{
    const Key *x = a, *y = b;
    size_t n = x->n < y->n ? x->n : y->n;
    int c = memcmp(x->s, y->s, n);
    if (c || x->n != y->n)
        return c ? c : x->n < y->n ? -1 : 1;
    return x->line != y->line ? (x->line < y->line ? -1 : 1) : (x->s < y->s ? -1 : x->s > y->s);
}

struct KKeyIndex {
    int n;
    Key *keys; /* sorted by name_line_cmp; point into the source */
};

KKeyIndex *kiln__key_index(const char *src, size_t len)
{
    KKeyIndex *ix = malloc(sizeof *ix);
    if (!ix)
        return NULL;
    ix->n = collect_keys(src, len, &ix->keys);
    if (!ix->keys) {
        free(ix);
        return NULL;
    }
    qsort(ix->keys, (size_t)ix->n, sizeof *ix->keys, name_line_cmp);
    return ix;
}

void kiln__key_index_free(KKeyIndex *ix)
{
    if (ix)
        free(ix->keys);
    free(ix);
}

int kiln__key_index_line(const KKeyIndex *ix, int from_line, const char *key)
{
    size_t n = strlen(key);
    int lo = 0, hi = ix->n; /* the first key not before (key, from_line) */
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        const Key *k = &ix->keys[mid];
        int c = memcmp(k->s, key, k->n < n ? k->n : n);
        if (!c)
            c = k->n != n ? (k->n < n ? -1 : 1) : k->line < from_line ? -1 : 0;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo < ix->n && ix->keys[lo].n == n && memcmp(ix->keys[lo].s, key, n) == 0)
        return ix->keys[lo].line;
    return from_line;
}

int kiln__key_line(const char *src, size_t len, int from_line, const char *key)
{
    KKeyIndex *ix = kiln__key_index(src, len);
    int line = ix ? kiln__key_index_line(ix, from_line, key) : from_line;
    kiln__key_index_free(ix);
    return line;
}

int kiln__dup_keys(const char *src, size_t len, char *key, size_t keyn, int *first)
{
    Key *keys;
    int nk = collect_keys(src, len, &keys);
    int found = 0;
    if (keys && nk > 1) {
        qsort(keys, (size_t)nk, sizeof *keys, key_cmp);
        for (int i = 1; i < nk; i++) {
            Key *a = &keys[i - 1], *b = &keys[i];
            if (a->frame == b->frame && a->n == b->n && memcmp(a->s, b->s, a->n) == 0 &&
                (!found || b->line < found)) {
                /* a is the first occurrence of a run of equal keys only when the
                 * previous one differs; any earlier equal key is fine as "first". */
                int j = i - 1;
                while (j > 0 && keys[j - 1].frame == b->frame && keys[j - 1].n == b->n &&
                       memcmp(keys[j - 1].s, b->s, b->n) == 0)
                    j--;
                found = b->line;
                *first = keys[j].line;
                snprintf(key, keyn, "%.*s", (int)(b->n < 60 ? b->n : 60), b->s);
            }
        }
    }
    free(keys);
    return found;
}
