/* model/checkpoints/ckpt_regex.c — compressed-tensors' "re:" targets with PCRE2: Python
 * `re` syntax (the few spellings PCRE2 lacks rewritten), re.match's anchoring, every
 * pattern compiled once, memory bounded by a counting allocator and work by PCRE2's match,
 * depth and heap limits plus a time budget over all patterns. */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/checkpoints/ckpt_regex.h"

#define ERR(...) kiln_diag_set(d, KILN_EINPUT, __VA_ARGS__)
#define OOM() kiln_diag_set(d, KILN_EINTERNAL, "checkpoint: out of memory")

typedef struct RxPattern {
    pcre2_code *code;
    char *where;   /* "DIR/config.json:LINE: config_groups[..].targets[I]" */
    char *pattern; /* as written, for messages */
} RxPattern;

struct KilnCkRegexes {
    pcre2_general_context *gen; /* rx_alloc / rx_free: every byte PCRE2 holds is counted */
    pcre2_compile_context *cc;
    pcre2_match_context *mc;
    pcre2_match_data *md;
    RxPattern *v;
    int n, cap;
    size_t used;    /* bytes PCRE2 holds now */
    size_t ceiling; /* what rx_alloc may reach during the current call */
    double spent_ms; /* inside PCRE2, compiling and matching (a thread's CPU clock costs a
                      * system call a match: half the time of a cheap one) */
    long matches;
};

/* ------------------------------------------------------------------ memory */

typedef union { size_t n; max_align_t align; } RxHeader;

static void *rx_alloc(PCRE2_SIZE n, void *data)
{
    KilnCkRegexes *rx = data;
    if (n > rx->ceiling || rx->used > rx->ceiling - n)
        return NULL;
    RxHeader *h = malloc(sizeof *h + n);
    if (!h)
        return NULL;
    h->n = n;
    rx->used += n;
    return h + 1;
}

static void rx_free(void *p, void *data)
{
    if (!p)
        return;
    RxHeader *h = (RxHeader *)p - 1;
    ((KilnCkRegexes *)data)->used -= h->n;
    free(h);
}


int kiln_ck_rx_new(KilnCkRegexes **out, KilnDiag *d)
{
    KilnCkRegexes *rx = calloc(1, sizeof *rx);
    if (!rx)
        return OOM();
    rx->ceiling = 1u << 20; /* the contexts and the match data: a few hundred bytes */
    rx->gen = pcre2_general_context_create(rx_alloc, rx_free, rx);
    rx->cc = rx->gen ? pcre2_compile_context_create(rx->gen) : NULL;
    rx->mc = rx->gen ? pcre2_match_context_create(rx->gen) : NULL;
    rx->md = rx->gen ? pcre2_match_data_create(1, rx->gen) : NULL;
    if (!rx->cc || !rx->mc || !rx->md) {
        kiln_ck_rx_free(rx);
        return OOM();
    }
    pcre2_set_max_pattern_length(rx->cc, 2 * KILN_CK_RX_MAX_PATTERN + 1);
    pcre2_set_parens_nest_limit(rx->cc, KILN_CK_RX_MAX_NEST);
    pcre2_set_newline(rx->cc, PCRE2_NEWLINE_LF); /* Python's: only \n ends a line */
    pcre2_set_match_limit(rx->mc, KILN_CK_RX_MATCH_LIMIT);
    pcre2_set_depth_limit(rx->mc, KILN_CK_RX_DEPTH_LIMIT);
    pcre2_set_heap_limit(rx->mc, KILN_CK_RX_HEAP_KIB);
    *out = rx;
    return 0;
}

void kiln_ck_rx_free(KilnCkRegexes *rx)
{
    if (!rx)
        return;
    for (int i = 0; i < rx->n; i++) {
        pcre2_code_free(rx->v[i].code);
        free(rx->v[i].where);
        free(rx->v[i].pattern);
    }
    free(rx->v);
    pcre2_match_data_free(rx->md);
    pcre2_match_context_free(rx->mc);
    pcre2_compile_context_free(rx->cc);
    pcre2_general_context_free(rx->gen);
    free(rx);
}

/* ------------------------------------------------------------------ syntax */

/* s for a message: at most 120 bytes, control bytes as \xNN (a config is not to write on
 * the terminal). */
static const char *shown(const char *s, char *buf, size_t cap)
{
    size_t k = 0, i = 0;
    for (; s[i] && k + 8 < cap && i < 120; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7f)
            k += (size_t)snprintf(buf + k, cap - k, "\\x%02x", c);
        else
            buf[k++] = (char)c;
    }
    snprintf(buf + k, cap - k, "%s", s[i] ? "..." : "");
    return buf;
}

static bool hex_digits(const char *s, int n)
{
    for (int i = 0; i < n; i++)
        if (!s[i] || !strchr("0123456789abcdefABCDEF", s[i]))
            return false;
    return true;
}

/* Python `re` spellings PCRE2 reads otherwise, rewritten into o (2·len + 1 bytes): \Z (end
 * of string only: PCRE2's \z), \uXXXX and \UXXXXXXXX (\x{...}), {,n} and {,} (PCRE2 10.42
 * reads a literal). PCRE2's (*...) settings and verbs are not Python and are refused. */
static const char *py_to_pcre2(const char *p, char *o)
{
    size_t k = 0, first = 0;
    bool cls = false;
    for (size_t i = 0; p[i]; i++) {
        char c = p[i];
        if (c == '\\' && p[i + 1]) {
            char e = p[i + 1];
            int nd = e == 'u' ? 4 : e == 'U' ? 8 : 0;
            if (nd && !hex_digits(p + i + 2, nd))
                return e == 'u' ? "\\u takes 4 hex digits" : "\\U takes 8 hex digits";
            if (nd) {
                k += (size_t)sprintf(o + k, "\\x{%.*s}", nd, p + i + 2);
                i += 1 + (size_t)nd;
                continue;
            }
            o[k++] = c, o[k++] = e == 'Z' && !cls ? 'z' : e;
            i++;
            continue;
        }
        if (cls) { /* a ']' right after '[' or '[^' is a member */
            cls = !(c == ']' && i > first);
        } else if (c == '[') {
            cls = true;
            first = i + 1 + (p[i + 1] == '^');
        } else if (c == '(' && p[i + 1] == '*') {
            return "(* is PCRE2's syntax for settings and verbs, not Python's";
        } else if (c == '{' && p[i + 1] == ',') {
            size_t j = i + 2;
            while (p[j] >= '0' && p[j] <= '9')
                j++;
            if (p[j] == '}') { /* Python's {,n}: 0 to n */
                o[k++] = '{', o[k++] = '0';
                continue;
            }
        }
        o[k++] = c;
    }
    o[k] = 0;
    return NULL;
}

/* ------------------------------------------------------------------ compile */

static int over_budget(KilnCkRegexes *rx, const char *where, KilnDiag *d)
{
    return ERR("%s: compiling and matching the checkpoint's \"re:\" targets took more than "
               "%d ms (the limit; %d patterns, %ld matches)", where,
               KILN_CK_RX_TIME_MS, rx->n, rx->matches);
}

/* `at` counts bytes of the pattern PCRE2 read: the rewritten one when it differs */
static int compile_error(const char *where, const char *pat, bool rewritten, int err, size_t at,
                         size_t before, KilnDiag *d)
{
    char sp[200];
    shown(pat, sp, sizeof sp);
    bool total = before + KILN_CK_RX_COMPILE_BYTES > KILN_CK_RX_TOTAL_BYTES;
    if (err == PCRE2_ERROR_HEAP_FAILED && total)
        return ERR("%s \"re:%s\": the checkpoint's compiled patterns would take more than %u "
                   "MiB (the limit)", where, sp, KILN_CK_RX_TOTAL_BYTES >> 20);
    if (err == PCRE2_ERROR_HEAP_FAILED)
        return ERR("%s \"re:%s\": compiling it needs more than %u KiB (the limit)", where, sp,
                   KILN_CK_RX_COMPILE_BYTES >> 10);
    PCRE2_UCHAR msg[256];
    pcre2_get_error_message(err, msg, sizeof msg);
    return ERR("%s \"re:%s\": not a regular expression kiln reads (%s byte %zu: %s; limits: "
               "%d nested parentheses, PCRE2's compiled size)", where, sp,
               rewritten ? "near" : "at", at, (char *)msg, KILN_CK_RX_MAX_NEST);
}

static int compile_one(KilnCkRegexes *rx, const char *where, const char *pat,
                       pcre2_code **code, KilnDiag *d)
{
    char sp[200];
    size_t n = strlen(pat);
    if (n > KILN_CK_RX_MAX_PATTERN)
        return ERR("%s \"re:%s\": %zu bytes, longer than the %d-byte limit", where,
                   shown(pat, sp, sizeof sp), n, KILN_CK_RX_MAX_PATTERN);
    char *e = malloc(2 * n + 1);
    if (!e)
        return OOM();
    const char *why = py_to_pcre2(pat, e);
    if (why) {
        free(e);
        return ERR("%s \"re:%s\": %s", where, shown(pat, sp, sizeof sp), why);
    }
    size_t before = rx->used;
    rx->ceiling = before + KILN_CK_RX_COMPILE_BYTES;
    if (rx->ceiling > KILN_CK_RX_TOTAL_BYTES)
        rx->ceiling = KILN_CK_RX_TOTAL_BYTES > before ? KILN_CK_RX_TOTAL_BYTES : before;
    int err = 0;
    PCRE2_SIZE at = 0;
    /* re.match: anchored at the start, not the end; str patterns are Unicode in Python */
    *code = pcre2_compile((PCRE2_SPTR)e, PCRE2_ZERO_TERMINATED,
                          PCRE2_ANCHORED | PCRE2_UTF | PCRE2_UCP | PCRE2_NEVER_BACKSLASH_C,
                          &err, &at, rx->cc);
    bool rewritten = strcmp(e, pat) != 0;
    free(e);
    if (!*code)
        return compile_error(where, pat, rewritten, err, at, before, d);
    return 0;
}

int kiln_ck_rx_add(KilnCkRegexes *rx, const char *where, const char *pattern, int *id,
                   KilnDiag *d)
{
    if (rx->spent_ms > KILN_CK_RX_TIME_MS)
        return over_budget(rx, where, d);
    if (rx->n == rx->cap) {
        int nc = rx->cap ? rx->cap * 2 : 16;
        RxPattern *v = realloc(rx->v, sizeof *v * (size_t)nc);
        if (!v)
            return OOM();
        rx->v = v, rx->cap = nc;
    }
    double t0 = kiln_now_ms();
    pcre2_code *code = NULL;
    int rc = compile_one(rx, where, pattern, &code, d);
    rx->spent_ms += kiln_now_ms() - t0;
    if (rc)
        return rc;
    RxPattern *p = &rx->v[rx->n];
    p->code = code, p->where = strdup(where), p->pattern = strdup(pattern);
    if (!p->where || !p->pattern) {
        pcre2_code_free(code);
        free(p->where);
        free(p->pattern);
        return OOM();
    }
    *id = rx->n++;
    return 0;
}

/* ------------------------------------------------------------------ match */

int kiln_ck_rx_match(KilnCkRegexes *rx, int id, const char *name, bool *hit, KilnDiag *d)
{
    const RxPattern *p = &rx->v[id];
    *hit = false;
    if (rx->spent_ms > KILN_CK_RX_TIME_MS)
        return over_budget(rx, p->where, d);
    /* the heap limit bounds a match's frames; this is the allocator's second fence */
    rx->ceiling = rx->used + ((size_t)KILN_CK_RX_HEAP_KIB << 10) + (64u << 10);
    double t0 = kiln_now_ms();
    int r = pcre2_match(p->code, (PCRE2_SPTR)name, strlen(name), 0, 0, rx->md, rx->mc);
    rx->spent_ms += kiln_now_ms() - t0;
    rx->matches++;
    if (r >= 0 || r == PCRE2_ERROR_NOMATCH) {
        *hit = r >= 0;
        return 0;
    }
    char sp[200], sn[200], what[256];
    if (r == PCRE2_ERROR_MATCHLIMIT)
        snprintf(what, sizeof what, "exceeds the match limit (%d backtracking steps)",
                 KILN_CK_RX_MATCH_LIMIT);
    else if (r == PCRE2_ERROR_DEPTHLIMIT)
        snprintf(what, sizeof what, "exceeds the depth limit (%d nested backtracking points)",
                 KILN_CK_RX_DEPTH_LIMIT);
    else if (r == PCRE2_ERROR_HEAPLIMIT || r == PCRE2_ERROR_NOMEMORY)
        snprintf(what, sizeof what, "exceeds the heap limit (%d KiB)", KILN_CK_RX_HEAP_KIB);
    else {
        PCRE2_UCHAR msg[200];
        pcre2_get_error_message(r, msg, sizeof msg);
        snprintf(what, sizeof what, "fails: %s", (char *)msg);
    }
    return ERR("%s \"re:%s\": matching module '%s' %s", p->where, shown(p->pattern, sp, sizeof sp),
               shown(name, sn, sizeof sn), what);
}
