/* runtime/json.c — a small strict JSON (RFC 8259) parser for manifests, model files'
 * headers, configs and tokenizers: bounded depth, size and memory, UTF-8 checked, every
 * error with FILE:LINE:COL. */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/json_doc.h"
#include "runtime/runtime.h"

/* A document is read twice. The first pass checks the text and counts what its values
 * will need (every array's and object's members, the keys, the strings' bytes), and
 * stops where that passes the budget; the second writes the values into one allocation
 * of exactly that size: 16 bytes a value, 8 a key, the strings' bytes with a NUL each,
 * and an eighth of the text for the newlines kiln_json_where counts. */

/* Members of one object (tokenizer.json vocabularies hold ~10^5; duplicate keys are
 * found through a hash of the keys, so the bound only limits memory). */
#define KILN_JSON_MAX_MEMBERS (1 << 22)
#define KEYSET_MIN 16  /* objects with more members find duplicate keys through a hash */

_Static_assert(sizeof(KilnJson) == 16, "a JSON value is 16 bytes");
_Static_assert(KILN_JSON_MAX_BYTES < (1u << 27), "a text offset fits KilnJson.at");

typedef struct {
    const char *s, *end, *p;
    const char *file;
    int line;
    const char *line_start;
    KilnDiag *d;
    int err;
    bool fill; /* the second pass */
    size_t budget;
    /* The first pass: each array's and object's members in the order they open; all
     * members, object members, string bytes with their NULs, the longest number's copy
     * (over 127 bytes); the bytes of the key sets open at once in the second pass (the
     * largest below each depth). */
    uint32_t *counts;
    size_t ncounts, counts_cap, nitems, nkeys, strbytes, numbuf;
    size_t keysets[KILN_JSON_MAX_DEPTH + 2];
    /* The second pass: the next count; the next free bytes of the document's members and
     * strings, and of the key sets (a stack). */
    size_t next;
    char *vals, *strs;
    uint32_t *ks;
    size_t ks_top;
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

/* The document's allocation for what the first pass has counted so far. */
static size_t doc_bytes(const Parser *ps)
{
    size_t len = (size_t)(ps->end - ps->s);
    return sizeof(KilnJsonDoc) + ps->nitems * sizeof(KilnJson) + ps->nkeys * sizeof(char *) +
           (ps->line > 1 ? kiln_json_newline_bytes(len) : 0) + ps->strbytes;
}

/* The first pass's check that the document fits its budget: everything the second
 * pass holds at once (the document, the counts, the key sets, a number's copy). */
static int charge(Parser *ps)
{
    size_t need = doc_bytes(ps) + ps->counts_cap * sizeof(uint32_t) + ps->keysets[0] + ps->numbuf;
    if (need <= ps->budget)
        return 0;
    return fail(ps, "JSON document needs more than %.1f MiB for its values (limit for its %zu "
                "bytes of text: %zu MiB + %d bytes per byte of text)",
                (double)ps->budget / (1 << 20), (size_t)(ps->end - ps->s),
                KILN_JSON_BUDGET_BASE >> 20, KILN_JSON_BUDGET_PER_BYTE);
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

/* The second pass's value of the number text [start, start + n): int64 when it is
 * integral and fits, else a double. */
static int convert_number(Parser *ps, KilnJson *v, const char *start, size_t n, bool integral)
{
    char buf[128];
    char *tmp = n < sizeof buf ? buf : malloc(n + 1); /* charged: numbuf */
    if (!tmp)
        return fail(ps, "out of memory");
    memcpy(tmp, start, n);
    tmp[n] = '\0';
    double x = strtod(tmp, NULL);
    long long i = 0;
    errno = 0;
    if (integral)
        i = strtoll(tmp, NULL, 10);
    if (tmp != buf)
        free(tmp);
    if (isinf(x))
        return fail(ps, "number out of range");
    if (integral && errno == 0) {
        v->is_int = true;
        v->i = i;
    } else {
        v->real = x;
    }
    return 0;
}

static bool is_digit(char c) { return c >= '0' && c <= '9'; }

/* Checks the number at ps->p; the second pass also converts it. */
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
    v->kind = KILN_JSON_NUMBER;
    size_t n = (size_t)(q - start);
    if (!ps->fill && n >= 128 && n + 1 > ps->numbuf)
        ps->numbuf = n + 1;
    if (ps->fill && convert_number(ps, v, start, n, integral))
        return ps->err;
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

/* The escape at ps->p (after its backslash) as UTF-8 into o (4 bytes); *k its length. */
static int escape(Parser *ps, char *o, size_t *k)
{
    static const char names[] = "\"\\/bfnrt", chars[] = "\"\\/\b\f\n\r\t";
    char e = ps->p < ps->end ? *ps->p : '\0';
    const char *simple = e ? strchr(names, e) : NULL;
    if (simple) {
        o[0] = chars[simple - names];
        *k = 1;
        ps->p++;
        return 0;
    }
    if (e != 'u')
        return fail(ps, "invalid escape in string");
    ps->p++;
    unsigned cp = 0, lo = 0;
    if (hex4(ps, &cp))
        return ps->err;
    if (cp >= 0xdc00 && cp <= 0xdfff)
        return fail(ps, "invalid \\u escape: lone low surrogate");
    if (cp >= 0xd800 && cp <= 0xdbff) {
        if (ps->end - ps->p < 2 || ps->p[0] != '\\' || ps->p[1] != 'u')
            return fail(ps, "invalid \\u escape: high surrogate without a low one");
        ps->p += 2;
        if (hex4(ps, &lo))
            return ps->err;
        if (lo < 0xdc00 || lo > 0xdfff)
            return fail(ps, "invalid \\u escape: high surrogate without a low one");
        cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
    }
    if (cp == 0)
        return fail(ps, "\\u0000 is not allowed in strings");
    *k = put_utf8(o, cp);
    return 0;
}

static bool plain_ascii(char c) { return c >= 0x20 && c < 0x7f && c != '"' && c != '\\'; }

/* The string at ps->p (its opening quote) decoded into out with a NUL after it (out NULL:
 * only checked and measured); *n its length, never more than its text's. */
static int parse_string(Parser *ps, char *out, size_t *n)
{
    size_t k = 0, m = 0;
    char esc[4];
    ps->p++;
    for (;;) {
        if (ps->p >= ps->end)
            return fail(ps, "unterminated string");
        unsigned char c = (unsigned char)*ps->p;
        const char *from = ps->p;
        if (c == '"')
            break;
        if (c < 0x20)
            return fail(ps, "control character 0x%02x in string (escape it)", c);
        if (plain_ascii((char)c)) {
            while (ps->p < ps->end && plain_ascii(*ps->p))
                ps->p++;
            m = (size_t)(ps->p - from);
        } else if (c == '\\') {
            ps->p++;
            if (escape(ps, esc, &m))
                return ps->err;
            from = esc;
        } else if ((m = utf8_len((const unsigned char *)ps->p, (const unsigned char *)ps->end))) {
            ps->p += m;
        } else {
            return fail(ps, "invalid UTF-8 in string");
        }
        if (out)
            memcpy(out + k, from, m);
        k += m;
    }
    ps->p++;
    if (out)
        out[k] = '\0';
    *n = k;
    return 0;
}

/* A string value: measured in the first pass, placed among the document's strings in
 * the second. */
static int string_value(Parser *ps, KilnJson *v)
{
    size_t n;
    v->kind = KILN_JSON_STRING;
    if (parse_string(ps, ps->fill ? ps->strs : NULL, &n))
        return ps->err;
    if (!ps->fill) {
        ps->strbytes += n + 1;
        return 0;
    }
    v->str = ps->strs;
    v->len = (uint32_t)n;
    ps->strs += n + 1;
    return 0;
}

/* ------------------------------------------------------------ arrays and objects */

/* Opens the array or object at ps->p: the first pass gives it a count (*idx), the
 * second its members' (and keys') place in the document (*items). */
static int open_container(Parser *ps, KilnJson *v, KilnJsonKind kind, size_t *idx,
                          KilnJson **items)
{
    v->kind = kind;
    ps->p++;
    if (ps->fill) {
        if (ps->next >= ps->ncounts)
            return fail(ps, "internal error: more arrays and objects than counted");
        uint32_t n = ps->counts[ps->next++];
        *items = (KilnJson *)ps->vals;
        v->items = *items;
        v->len = n;
        ps->vals += n * sizeof(KilnJson) + (kind == KILN_JSON_OBJECT ? n * sizeof(char *) : 0);
        return 0;
    }
    if (ps->ncounts == ps->counts_cap) {
        ps->counts_cap = ps->counts_cap ? ps->counts_cap * 2 : 256;
        if (charge(ps))
            return ps->err;
        uint32_t *c = realloc(ps->counts, ps->counts_cap * sizeof *c);
        if (!c)
            return fail(ps, "out of memory");
        ps->counts = c;
    }
    *idx = ps->ncounts++;
    return 0;
}

static size_t keyset_slots(size_t n)
{
    size_t s = 64;
    while (s < 2 * n)
        s *= 2;
    return s;
}

static size_t keyset_bytes(const KilnJson *v, size_t n)
{
    return v->kind == KILN_JSON_OBJECT && n > KEYSET_MIN ? keyset_slots(n) * sizeof(uint32_t) : 0;
}

/* Closes the array or object v of n members at depth: the first pass records n and the
 * largest stack of key sets open below v's parent. */
static int close_container(Parser *ps, const KilnJson *v, size_t idx, uint32_t n, int depth)
{
    ps->p++;
    if (ps->fill)
        return 0;
    ps->counts[idx] = n;
    size_t peak = keyset_bytes(v, n) + ps->keysets[depth + 1];
    ps->keysets[depth + 1] = 0;
    if (peak > ps->keysets[depth])
        ps->keysets[depth] = peak;
    return depth == 0 ? charge(ps) : 0;
}

/* Member n of the array or object v: parsed into its place (the second pass) or counted
 * and charged (the first). */
static int member(Parser *ps, const KilnJson *v, KilnJson *items, uint32_t n, int depth)
{
    KilnJson scratch;
    if (parse_value(ps, ps->fill ? &items[n] : &scratch, depth + 1))
        return ps->err;
    if (ps->fill)
        return 0;
    ps->nitems++;
    return charge(ps);
}

/* In the second pass, whether member n fits what the first pass counted. */
static int room(Parser *ps, const KilnJson *v, uint32_t n)
{
    if (ps->fill && n >= v->len)
        return fail(ps, "internal error: more members than counted");
    return 0;
}

static int parse_array(Parser *ps, KilnJson *v, int depth)
{
    size_t idx = 0;
    KilnJson *items = NULL;
    if (open_container(ps, v, KILN_JSON_ARRAY, &idx, &items))
        return ps->err;
    skip_ws(ps);
    if (ps->p < ps->end && *ps->p == ']')
        return close_container(ps, v, idx, 0, depth);
    for (uint32_t n = 0;;) {
        char b[32];
        skip_ws(ps);
        if (room(ps, v, n) || member(ps, v, items, n++, depth))
            return ps->err;
        skip_ws(ps);
        if (ps->p < ps->end && *ps->p == ',') {
            ps->p++;
            skip_ws(ps);
            if (ps->p < ps->end && *ps->p == ']')
                return fail(ps, "trailing comma in array");
            continue;
        }
        if (ps->p < ps->end && *ps->p == ']')
            return close_container(ps, v, idx, n, depth);
        return fail(ps, "expected ',' or ']' in array, got %s", describe(ps, b, sizeof b));
    }
}

/* The second pass's view of an object being read. */
typedef struct {
    KilnJson *items;
    const char **keys; /* after the members */
    uint32_t *set;     /* over KEYSET_MIN members: mask + 1 slots of key index + 1, 0 empty */
    size_t mask;
} Members;

static uint64_t key_hash(const char *k)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (; *k; k++)
        h = (h ^ (unsigned char)*k) * 1099511628211ull;
    return h;
}

/* Whether key n repeats one of keys 0..n-1 (adding it to the set when there is one). */
static bool duplicate_key(Members *m, uint32_t n)
{
    if (!m->set) {
        for (uint32_t i = 0; i < n; i++)
            if (strcmp(m->keys[i], m->keys[n]) == 0)
                return true;
        return false;
    }
    size_t h = key_hash(m->keys[n]) & m->mask;
    for (; m->set[h]; h = (h + 1) & m->mask)
        if (strcmp(m->keys[m->set[h] - 1], m->keys[n]) == 0)
            return true;
    m->set[h] = n + 1;
    return false;
}

static int parse_key(Parser *ps, Members *m, uint32_t n)
{
    const char *at = ps->p;
    char *k = ps->fill ? ps->strs : NULL;
    size_t len;
    if (parse_string(ps, k, &len))
        return ps->err;
    if (!ps->fill) {
        ps->strbytes += len + 1;
        ps->nkeys++;
        return 0;
    }
    ps->strs += len + 1;
    m->keys[n] = k;
    if (!duplicate_key(m, n))
        return 0;
    ps->p = at; /* a key holds no newline: the line is still this one */
    return fail(ps, "duplicate key \"%.200s\" in object", k);
}

static int parse_members(Parser *ps, KilnJson *v, Members *m, size_t idx, int depth)
{
    skip_ws(ps);
    if (ps->p < ps->end && *ps->p == '}')
        return close_container(ps, v, idx, 0, depth);
    for (uint32_t n = 0;;) {
        char b[32];
        skip_ws(ps);
        if (ps->p >= ps->end || *ps->p != '"')
            return fail(ps, "expected a string key in object, got %s", describe(ps, b, sizeof b));
        if (n >= KILN_JSON_MAX_MEMBERS)
            return fail(ps, "object has more than %d members", KILN_JSON_MAX_MEMBERS);
        if (room(ps, v, n) || parse_key(ps, m, n))
            return ps->err;
        skip_ws(ps);
        if (ps->p >= ps->end || *ps->p != ':')
            return fail(ps, "expected ':' after object key, got %s", describe(ps, b, sizeof b));
        ps->p++;
        skip_ws(ps);
        if (member(ps, v, m->items, n++, depth))
            return ps->err;
        skip_ws(ps);
        if (ps->p < ps->end && *ps->p == ',') {
            ps->p++;
            skip_ws(ps);
            if (ps->p < ps->end && *ps->p == '}')
                return fail(ps, "trailing comma in object");
            continue;
        }
        if (ps->p < ps->end && *ps->p == '}')
            return close_container(ps, v, idx, n, depth);
        return fail(ps, "expected ',' or '}' in object, got %s", describe(ps, b, sizeof b));
    }
}

static int parse_object(Parser *ps, KilnJson *v, int depth)
{
    size_t idx = 0, slots = 0;
    Members m = {0};
    if (open_container(ps, v, KILN_JSON_OBJECT, &idx, &m.items))
        return ps->err;
    if (ps->fill) {
        m.keys = (const char **)(m.items + v->len);
        if (v->len > KEYSET_MIN) { /* on the stack of key sets the first pass sized */
            slots = keyset_slots(v->len);
            m.set = ps->ks + ps->ks_top;
            m.mask = slots - 1;
            memset(m.set, 0, slots * sizeof *m.set);
            ps->ks_top += slots;
        }
    }
    int rc = parse_members(ps, v, &m, idx, depth);
    ps->ks_top -= slots;
    return rc;
}

static int parse_value(Parser *ps, KilnJson *v, int depth)
{
    char b[32];
    *v = (KilnJson){.at = (uint32_t)(ps->p - ps->s)};
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
        return string_value(ps, v);
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

/* ------------------------------------------------------------------ documents */

/* One pass over the whole text into root. */
static int run_pass(Parser *ps, KilnJson *root)
{
    ps->p = ps->line_start = ps->s;
    ps->line = 1;
    if (ps->end - ps->s >= 3 && memcmp(ps->s, "\xef\xbb\xbf", 3) == 0)
        ps->p += 3; /* tolerate a UTF-8 byte order mark written by some editors */
    skip_ws(ps);
    if (parse_value(ps, root, 0) == 0) {
        skip_ws(ps);
        char b[32];
        if (ps->p < ps->end)
            return fail(ps, "unexpected %s after the JSON value", describe(ps, b, sizeof b));
    }
    return ps->err ? ps->err : ps->fill ? 0 : charge(ps);
}

/* The document's allocation as the first pass counted it, its regions handed to the
 * second (members and keys, then the newline index, then the strings). */
static KilnJsonDoc *doc_new(Parser *ps)
{
    size_t bytes = doc_bytes(ps), len = (size_t)(ps->end - ps->s);
    KilnJsonDoc *doc = malloc(bytes);
    if (!doc)
        return NULL;
    *doc = (KilnJsonDoc){.bytes = bytes, .text_len = len};
    char *p = (char *)(doc + 1);
    ps->vals = p;
    p += ps->nitems * sizeof(KilnJson) + ps->nkeys * sizeof(char *);
    if (ps->line > 1) {
        doc->nl = (uint64_t *)p;
        doc->nl_before = (uint32_t *)(p + (len + 63) / 64 * sizeof(uint64_t));
        p += kiln_json_newline_bytes(len);
    }
    ps->strs = p;
    return doc;
}

int kiln_json_parse(const char *text, size_t len, const char *file, KilnJson **out,
                    KilnDiag *d)
{
    *out = NULL;
    Parser ps = {.s = text, .end = text + len, .p = text, .file = file, .line = 1,
                 .line_start = text, .d = d};
    if (len > KILN_JSON_MAX_BYTES)
        return fail(&ps, "document of %zu bytes is larger than the %zu byte limit", len,
                    KILN_JSON_MAX_BYTES);
    if (!text)
        return fail(&ps, "no text");
    ps.budget = KILN_JSON_BUDGET_BASE + KILN_JSON_BUDGET_PER_BYTE * len;
    KilnJson scratch;
    KilnJsonDoc *doc = NULL;
    if (run_pass(&ps, &scratch) == 0) {
        if (!(doc = doc_new(&ps)) ||
            (ps.keysets[0] && !(ps.ks = malloc(ps.keysets[0]))))
            fail(&ps, "out of memory for the document's %zu bytes", doc_bytes(&ps));
        ps.fill = true;
        if (!ps.err)
            run_pass(&ps, &doc->root);
    }
    free(ps.counts);
    free(ps.ks);
    if (ps.err) {
        free(doc);
        return ps.err;
    }
    if (doc->nl)
        kiln_json_index_newlines(doc, text);
    *out = &doc->root;
    return 0;
}
