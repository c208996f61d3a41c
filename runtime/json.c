/* runtime/json.c — a small strict JSON (RFC 8259) parser for AOT manifests: bounded
 * depth and size, UTF-8 checked, every error with FILE:LINE:COL. */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/runtime.h"

/* Members of one object (tokenizer.json vocabularies hold ~10^5; duplicate keys are
 * found through a hash of the keys, so the bound only limits memory). */
#define KILN_JSON_MAX_MEMBERS (1 << 22)

typedef struct {
    const char *s, *end, *p;
    const char *file;
    int line;
    const char *line_start;
    KilnDiag *d;
    int err;
} Parser;

__attribute__((format(printf, 2, 3))) static int fail(Parser *ps, const char *fmt, ...)
{
    if (ps->err)
        return ps->err;
    char what[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    int col = (int)(ps->p - ps->line_start) + 1;
    if (ps->file)
        kiln_diag_set(ps->d, KILN_EINPUT, "%s:%d:%d: %s", ps->file, ps->line, col, what);
    else
        kiln_diag_set(ps->d, KILN_EINPUT, "%d:%d: %s", ps->line, col, what);
    if (ps->d)
        ps->d->line = ps->line;
    ps->err = KILN_EINPUT;
    return ps->err;
}

/* Printable description of the byte at p for error messages. */
static const char *describe(const Parser *ps, char *buf, size_t n)
{
    if (ps->p >= ps->end)
        return "end of input";
    unsigned char c = (unsigned char)*ps->p;
    if (c >= 0x20 && c < 0x7f)
        snprintf(buf, n, "'%c'", c);
    else
        snprintf(buf, n, "byte 0x%02x", c);
    return buf;
}

static void skip_ws(Parser *ps)
{
    while (ps->p < ps->end) {
        char c = *ps->p;
        if (c == '\n') {
            ps->line++;
            ps->line_start = ps->p + 1;
        } else if (c != ' ' && c != '\t' && c != '\r') {
            return;
        }
        ps->p++;
    }
}

static int parse_value(Parser *ps, KilnJson *v, int depth);

static int literal(Parser *ps, const char *word)
{
    size_t n = strlen(word);
    if ((size_t)(ps->end - ps->p) < n || memcmp(ps->p, word, n) != 0)
        return fail(ps, "invalid literal (expected '%s')", word);
    ps->p += n;
    return 0;
}

static bool is_digit(char c) { return c >= '0' && c <= '9'; }

static int parse_number(Parser *ps, KilnJson *v)
{
    const char *start = ps->p, *q = ps->p;
    bool integral = true;
    if (q < ps->end && *q == '-')
        q++;
    if (q >= ps->end || !is_digit(*q)) {
        ps->p = q;
        return fail(ps, "invalid number: expected a digit");
    }
    if (*q == '0') {
        q++;
        if (q < ps->end && is_digit(*q)) {
            ps->p = q;
            return fail(ps, "invalid number: leading zeros are not allowed");
        }
    } else {
        while (q < ps->end && is_digit(*q))
            q++;
    }
    if (q < ps->end && *q == '.') {
        integral = false;
        q++;
        if (q >= ps->end || !is_digit(*q)) {
            ps->p = q;
            return fail(ps, "invalid number: expected a digit after '.'");
        }
        while (q < ps->end && is_digit(*q))
            q++;
    }
    if (q < ps->end && (*q == 'e' || *q == 'E')) {
        integral = false;
        q++;
        if (q < ps->end && (*q == '+' || *q == '-'))
            q++;
        if (q >= ps->end || !is_digit(*q)) {
            ps->p = q;
            return fail(ps, "invalid number: expected a digit in the exponent");
        }
        while (q < ps->end && is_digit(*q))
            q++;
    }
    size_t n = (size_t)(q - start);
    char buf[128];
    char *tmp = n < sizeof buf ? buf : malloc(n + 1);
    if (!tmp)
        return fail(ps, "out of memory");
    memcpy(tmp, start, n);
    tmp[n] = '\0';
    v->kind = KILN_JSON_NUMBER;
    errno = 0;
    v->num = strtod(tmp, NULL);
    bool range = isinf(v->num);
    if (integral) {
        errno = 0;
        long long i = strtoll(tmp, NULL, 10);
        if (errno == 0) {
            v->is_int = true;
            v->i = i;
        }
    }
    if (tmp != buf)
        free(tmp);
    if (range)
        return fail(ps, "number out of range");
    ps->p = q;
    return 0;
}

static int hex4(Parser *ps, unsigned *out)
{
    if (ps->end - ps->p < 4)
        return fail(ps, "invalid \\u escape: expected 4 hex digits");
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        char c = ps->p[i];
        unsigned h;
        if (c >= '0' && c <= '9')
            h = (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f')
            h = (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            h = (unsigned)(c - 'A' + 10);
        else
            return fail(ps, "invalid \\u escape: expected 4 hex digits");
        v = v << 4 | h;
    }
    ps->p += 4;
    *out = v;
    return 0;
}

static size_t put_utf8(char *o, unsigned cp)
{
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (char)(0xc0 | cp >> 6);
        o[1] = (char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xe0 | cp >> 12);
        o[1] = (char)(0x80 | (cp >> 6 & 0x3f));
        o[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    o[0] = (char)(0xf0 | cp >> 18);
    o[1] = (char)(0x80 | (cp >> 12 & 0x3f));
    o[2] = (char)(0x80 | (cp >> 6 & 0x3f));
    o[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

/* Length of the valid UTF-8 sequence at p (no overlongs, surrogates or > U+10FFFF),
 * 0 if invalid. */
static size_t utf8_len(const unsigned char *p, const unsigned char *end)
{
    unsigned c = p[0];
    size_t n;
    unsigned cp, min;
    if (c < 0x80)
        return 1;
    if ((c & 0xe0) == 0xc0)
        n = 2, cp = c & 0x1f, min = 0x80;
    else if ((c & 0xf0) == 0xe0)
        n = 3, cp = c & 0x0f, min = 0x800;
    else if ((c & 0xf8) == 0xf0)
        n = 4, cp = c & 0x07, min = 0x10000;
    else
        return 0;
    if ((size_t)(end - p) < n)
        return 0;
    for (size_t i = 1; i < n; i++) {
        if ((p[i] & 0xc0) != 0x80)
            return 0;
        cp = cp << 6 | (p[i] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return n;
}

/* The decoded string is never longer than its source text, so one allocation of
 * the raw length suffices. */
static int parse_string(Parser *ps, char **out, size_t *outlen)
{
    ps->p++; /* opening quote */
    const char *q = ps->p;
    while (q < ps->end && *q != '"') {
        if (*q == '\\' && q + 1 < ps->end)
            q++;
        q++;
    }
    char *s = malloc((size_t)(q - ps->p) + 1);
    if (!s)
        return fail(ps, "out of memory");
    size_t n = 0;
    for (;;) {
        if (ps->p >= ps->end) {
            free(s);
            return fail(ps, "unterminated string");
        }
        unsigned char c = (unsigned char)*ps->p;
        if (c == '"') {
            ps->p++;
            break;
        }
        if (c < 0x20) {
            free(s);
            return fail(ps, "control character 0x%02x in string (escape it)", c);
        }
        if (c == '\\') {
            ps->p++;
            char e = ps->p < ps->end ? *ps->p : '\0';
            const char *simple = strchr("\"\\/bfnrt", e);
            if (e && simple) {
                static const char map[] = "\"\\/\b\f\n\r\t";
                s[n++] = map[simple - "\"\\/bfnrt"];
                ps->p++;
                continue;
            }
            if (e != 'u') {
                free(s);
                return fail(ps, "invalid escape in string");
            }
            ps->p++;
            unsigned cp = 0, lo = 0;
            if (hex4(ps, &cp)) {
                free(s);
                return ps->err;
            }
            if (cp >= 0xdc00 && cp <= 0xdfff) {
                free(s);
                return fail(ps, "invalid \\u escape: lone low surrogate");
            }
            if (cp >= 0xd800 && cp <= 0xdbff) {
                if (ps->end - ps->p < 2 || ps->p[0] != '\\' || ps->p[1] != 'u') {
                    free(s);
                    return fail(ps, "invalid \\u escape: high surrogate without a low one");
                }
                ps->p += 2;
                if (hex4(ps, &lo)) {
                    free(s);
                    return ps->err;
                }
                if (lo < 0xdc00 || lo > 0xdfff) {
                    free(s);
                    return fail(ps, "invalid \\u escape: high surrogate without a low one");
                }
                cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
            }
            if (cp == 0) {
                free(s);
                return fail(ps, "\\u0000 is not allowed in strings");
            }
            n += put_utf8(s + n, cp);
            continue;
        }
        size_t k = utf8_len((const unsigned char *)ps->p, (const unsigned char *)ps->end);
        if (k == 0) {
            free(s);
            return fail(ps, "invalid UTF-8 in string");
        }
        memcpy(s + n, ps->p, k);
        n += k;
        ps->p += k;
    }
    s[n] = '\0';
    *out = s;
    *outlen = n;
    return 0;
}

static int grow(Parser *ps, KilnJson *v, size_t *cap, bool keys)
{
    if (v->len < *cap)
        return 0;
    size_t nc = *cap ? *cap * 2 : 4;
    KilnJson *items = realloc(v->items, nc * sizeof *items);
    if (!items)
        return fail(ps, "out of memory");
    v->items = items;
    if (keys) {
        char **k = realloc(v->keys, nc * sizeof *k);
        if (!k)
            return fail(ps, "out of memory");
        v->keys = k;
    }
    *cap = nc;
    return 0;
}

static int parse_array(Parser *ps, KilnJson *v, int depth)
{
    v->kind = KILN_JSON_ARRAY;
    ps->p++;
    size_t cap = 0;
    skip_ws(ps);
    if (ps->p < ps->end && *ps->p == ']') {
        ps->p++;
        return 0;
    }
    for (;;) {
        if (grow(ps, v, &cap, false))
            return ps->err;
        KilnJson *it = &v->items[v->len];
        memset(it, 0, sizeof *it);
        v->len++;
        skip_ws(ps);
        if (parse_value(ps, it, depth + 1))
            return ps->err;
        skip_ws(ps);
        char b[32];
        if (ps->p < ps->end && *ps->p == ',') {
            ps->p++;
            skip_ws(ps);
            if (ps->p < ps->end && *ps->p == ']')
                return fail(ps, "trailing comma in array");
            continue;
        }
        if (ps->p < ps->end && *ps->p == ']') {
            ps->p++;
            return 0;
        }
        return fail(ps, "expected ',' or ']' in array, got %s", describe(ps, b, sizeof b));
    }
}

/* Open-addressing set of an object's key indices (+1; 0 empty), for duplicates. */
typedef struct {
    uint32_t *slot;
    size_t mask;
} KeySet;

static uint64_t key_hash(const char *k)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (; *k; k++)
        h = (h ^ (unsigned char)*k) * 1099511628211ull;
    return h;
}

/* Adds key n of v unless an equal key is there: returns 1 duplicate, -1 no memory. */
static int keyset_add(KeySet *ks, const KilnJson *v, size_t n)
{
    if ((n + 1) * 2 > ks->mask) { /* keep it at most half full */
        size_t cap = ks->mask ? (ks->mask + 1) * 4 : 16;
        uint32_t *slot = calloc(cap, sizeof *slot);
        if (!slot)
            return -1;
        free(ks->slot);
        ks->slot = slot, ks->mask = cap - 1;
        for (size_t i = 0; i < n; i++) {
            size_t h = key_hash(v->keys[i]) & ks->mask;
            while (ks->slot[h])
                h = (h + 1) & ks->mask;
            ks->slot[h] = (uint32_t)i + 1;
        }
    }
    size_t h = key_hash(v->keys[n]) & ks->mask;
    for (; ks->slot[h]; h = (h + 1) & ks->mask)
        if (strcmp(v->keys[ks->slot[h] - 1], v->keys[n]) == 0)
            return 1;
    ks->slot[h] = (uint32_t)n + 1;
    return 0;
}

static int parse_members(Parser *ps, KilnJson *v, int depth, KeySet *ks);

static int parse_object(Parser *ps, KilnJson *v, int depth)
{
    KeySet ks = {0};
    int rc = parse_members(ps, v, depth, &ks);
    free(ks.slot);
    return rc;
}

static int parse_members(Parser *ps, KilnJson *v, int depth, KeySet *ks)
{
    v->kind = KILN_JSON_OBJECT;
    ps->p++;
    size_t cap = 0;
    skip_ws(ps);
    if (ps->p < ps->end && *ps->p == '}') {
        ps->p++;
        return 0;
    }
    for (;;) {
        char b[32];
        skip_ws(ps);
        if (ps->p >= ps->end || *ps->p != '"')
            return fail(ps, "expected a string key in object, got %s", describe(ps, b, sizeof b));
        if (v->len >= KILN_JSON_MAX_MEMBERS)
            return fail(ps, "object has more than %d members", KILN_JSON_MAX_MEMBERS);
        if (grow(ps, v, &cap, true))
            return ps->err;
        const char *key_at = ps->p;
        int key_line = ps->line;
        const char *key_line_start = ps->line_start;
        char *key;
        size_t klen;
        if (parse_string(ps, &key, &klen))
            return ps->err;
        v->keys[v->len] = key;
        int dup = keyset_add(ks, v, v->len);
        if (dup) {
            if (dup < 0) {
                free(key);
                return fail(ps, "out of memory");
            }
            ps->p = key_at;
            ps->line = key_line;
            ps->line_start = key_line_start;
            fail(ps, "duplicate key \"%.200s\" in object", key);
            free(key);
            return ps->err;
        }
        KilnJson *it = &v->items[v->len];
        memset(it, 0, sizeof *it);
        v->len++;
        skip_ws(ps);
        if (ps->p >= ps->end || *ps->p != ':')
            return fail(ps, "expected ':' after object key, got %s", describe(ps, b, sizeof b));
        ps->p++;
        skip_ws(ps);
        if (parse_value(ps, it, depth + 1))
            return ps->err;
        skip_ws(ps);
        if (ps->p < ps->end && *ps->p == ',') {
            ps->p++;
            skip_ws(ps);
            if (ps->p < ps->end && *ps->p == '}')
                return fail(ps, "trailing comma in object");
            continue;
        }
        if (ps->p < ps->end && *ps->p == '}') {
            ps->p++;
            return 0;
        }
        return fail(ps, "expected ',' or '}' in object, got %s", describe(ps, b, sizeof b));
    }
}

static int parse_value(Parser *ps, KilnJson *v, int depth)
{
    char b[32];
    v->line = ps->line;
    v->col = (int)(ps->p - ps->line_start) + 1;
    if (ps->p >= ps->end)
        return fail(ps, "expected a value, got end of input");
    char c = *ps->p;
    if ((c == '[' || c == '{') && depth >= KILN_JSON_MAX_DEPTH)
        return fail(ps, "nesting deeper than %d levels", KILN_JSON_MAX_DEPTH);
    switch (c) {
    case '{':
        return parse_object(ps, v, depth);
    case '[':
        return parse_array(ps, v, depth);
    case '"':
        v->kind = KILN_JSON_STRING;
        return parse_string(ps, &v->str, &v->len);
    case 't':
        v->kind = KILN_JSON_BOOL;
        v->b = true;
        return literal(ps, "true");
    case 'f':
        v->kind = KILN_JSON_BOOL;
        return literal(ps, "false");
    case 'n':
        v->kind = KILN_JSON_NULL;
        return literal(ps, "null");
    default:
        if (c == '-' || is_digit(c))
            return parse_number(ps, v);
        return fail(ps, "expected a value, got %s", describe(ps, b, sizeof b));
    }
}

static void free_members(KilnJson *v)
{
    if (v->kind == KILN_JSON_STRING) {
        free(v->str);
    } else if (v->kind == KILN_JSON_ARRAY || v->kind == KILN_JSON_OBJECT) {
        for (size_t i = 0; i < v->len; i++) {
            free_members(&v->items[i]);
            if (v->keys)
                free(v->keys[i]);
        }
        free(v->items);
        free(v->keys);
    }
}

void kiln_json_free(KilnJson *v)
{
    if (!v)
        return;
    free_members(v);
    free(v);
}

int kiln_json_parse(const char *text, size_t len, const char *file, KilnJson **out,
                    KilnDiag *d)
{
    *out = NULL;
    Parser ps = {text, text + len, text, file, 1, text, d, 0};
    if (len > KILN_JSON_MAX_BYTES)
        return fail(&ps, "document of %zu bytes is larger than the %zu byte limit", len,
                    KILN_JSON_MAX_BYTES);
    if (!text)
        return fail(&ps, "no text");
    KilnJson *v = calloc(1, sizeof *v);
    if (!v)
        return fail(&ps, "out of memory");
    if (len >= 3 && memcmp(text, "\xef\xbb\xbf", 3) == 0)
        ps.p += 3; /* tolerate a UTF-8 byte order mark written by some editors */
    skip_ws(&ps);
    if (parse_value(&ps, v, 0) == 0) {
        skip_ws(&ps);
        char b[32];
        if (ps.p < ps.end)
            fail(&ps, "unexpected %s after the JSON value", describe(&ps, b, sizeof b));
    }
    if (ps.err) {
        kiln_json_free(v);
        return ps.err;
    }
    *out = v;
    return 0;
}

int kiln_json_parse_file(const char *path, KilnJson **out, KilnDiag *d)
{
    *out = NULL;
    FILE *f = kiln_rt_fopen_regular(path, "JSON file", 0, NULL); /* FIFOs, devices: refused */
    if (!f)
        return kiln_diag_set(d, KILN_EINPUT, "cannot open %s: %s", path,
                             errno == EINVAL ? "not a regular file" : strerror(errno));
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        size_t r = fread(buf + n, 1, cap - n, f);
        n += r;
        if (n < cap)
            break;
        if (cap > KILN_JSON_MAX_BYTES) {
            free(buf);
            fclose(f);
            return kiln_diag_set(d, KILN_EINPUT, "%s is larger than the %zu byte JSON limit",
                                 path, KILN_JSON_MAX_BYTES);
        }
        char *nb = realloc(buf, cap * 2);
        if (!nb)
            free(buf);
        buf = nb;
        cap *= 2;
    }
    bool ioerr = ferror(f);
    fclose(f);
    if (!buf)
        return kiln_diag_set(d, KILN_EINTERNAL, "out of memory reading %s", path);
    if (ioerr) {
        free(buf);
        return kiln_diag_set(d, KILN_EINPUT, "error reading %s", path);
    }
    int rc = kiln_json_parse(buf, n, path, out, d);
    free(buf);
    return rc;
}

const KilnJson *kiln_json_get(const KilnJson *obj, const char *key)
{
    if (!obj || obj->kind != KILN_JSON_OBJECT)
        return NULL;
    for (size_t i = 0; i < obj->len; i++)
        if (strcmp(obj->keys[i], key) == 0)
            return &obj->items[i];
    return NULL;
}

const char *kiln_json_kind_name(KilnJsonKind k)
{
    static const char *names[] = {"null", "boolean", "number", "string", "array", "object"};
    return (unsigned)k < sizeof names / sizeof *names ? names[k] : "?";
}
