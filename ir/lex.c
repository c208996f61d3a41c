/* ir/lex.c — the lexer of the IR text format (see ir/lex.h): identifiers, %values,
 * strings with escapes checked, numbers, punctuation and ; comments. Input is
 * untrusted: any byte sequence yields tokens or one located error. */
#include <stdio.h>
#include <string.h>

#include "lex.h"

int kiln_lex_vfail_at(Lexer *lx, int line, const char *fmt, va_list ap)
{
    if (!lx->failed) {
        char msg[sizeof lx->d->msg];
        vsnprintf(msg, sizeof msg, fmt, ap);
        kiln_diag_set_at(lx->d, KILN_EINPUT, lx->file, line, "%s", msg);
        lx->failed = true;
    }
    return KILN_EINPUT;
}

static int fail_at(Lexer *p, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int fail_at(Lexer *p, int line, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = kiln_lex_vfail_at(p, line, fmt, ap);
    va_end(ap);
    return rc;
}

static bool is_name_start(int c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
static bool is_digit(int c) { return c >= '0' && c <= '9'; }
static bool is_name_char(int c) { return is_name_start(c) || is_digit(c) || c == '.'; }
static bool is_hex(int c) { return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }

static bool word_at(const char *s, const char *end, const char *w)
{
    size_t n = strlen(w);
    return (size_t)(end - s) >= n && memcmp(s, w, n) == 0 &&
           (s + n == end || !is_name_char((unsigned char)s[n]));
}

/* Length of a number starting at s (after an optional '-'), or 0. */
static size_t number_len(const char *s, const char *end, bool *is_float)
{
    const char *q = s;
    *is_float = false;
    if (word_at(q, end, "inf") || word_at(q, end, "nan")) {
        *is_float = true;
        return 3;
    }
    while (q < end && is_digit((unsigned char)*q))
        q++;
    if (q == s)
        return 0;
    if (q < end && *q == '.') {
        *is_float = true;
        q++;
        while (q < end && is_digit((unsigned char)*q))
            q++;
    }
    if (q < end && (*q == 'e' || *q == 'E')) {
        const char *e = q + 1;
        if (e < end && (*e == '+' || *e == '-'))
            e++;
        if (e < end && is_digit((unsigned char)*e)) {
            while (e < end && is_digit((unsigned char)*e))
                e++;
            q = e;
            *is_float = true;
        }
    }
    return (size_t)(q - s);
}

static void lex_fail(Lexer *p, const char *msg)
{
    fail_at(p, p->line, "%s", msg);
    p->t.kind = T_ERR;
}

void kiln_lex_next(Lexer *p)
{
    Tok *t = &p->t;
    for (;;) {
        while (p->cur < p->end && (*p->cur == ' ' || *p->cur == '\t' || *p->cur == '\r' ||
                                   *p->cur == '\n')) {
            if (*p->cur == '\n')
                p->line++;
            p->cur++;
        }
        if (p->cur < p->end && *p->cur == ';') {
            while (p->cur < p->end && *p->cur != '\n')
                p->cur++;
            continue;
        }
        break;
    }
    t->line = p->line;
    t->s = p->cur;
    t->n = 0;
    if (p->cur >= p->end) {
        t->kind = T_EOF;
        return;
    }
    const char *s = p->cur;
    int c = (unsigned char)*s;
    bool fl;
    if (is_name_start(c)) {
        const char *q = s;
        while (q < p->end && is_name_char((unsigned char)*q))
            q++;
        t->kind = T_IDENT;
        t->n = (size_t)(q - s);
    } else if (c == '%') {
        const char *q = s + 1;
        while (q < p->end && is_name_char((unsigned char)*q))
            q++;
        if (q == s + 1) {
            lex_fail(p, "expected a value name after '%'");
            return;
        }
        t->kind = T_VALUE;
        t->s = s + 1;
        t->n = (size_t)(q - s - 1);
        p->cur = q;
        return;
    } else if (c == '"') {
        const char *q = s + 1;
        for (;;) {
            if (q >= p->end || *q == '\n') {
                lex_fail(p, "unterminated string");
                return;
            }
            if (*q == '"')
                break;
            if (*q == 0) {
                lex_fail(p, "NUL byte in string");
                return;
            }
            if (*q == '\\') {
                if (q + 1 >= p->end) {
                    lex_fail(p, "unterminated string");
                    return;
                }
                char e = q[1];
                if (e == 'x') {
                    if (q + 3 >= p->end || !is_hex((unsigned char)q[2]) ||
                        !is_hex((unsigned char)q[3]) || (q[2] == '0' && q[3] == '0')) {
                        lex_fail(p, "bad \\x escape in string (want \\x01..\\xff)");
                        return;
                    }
                    q += 4;
                    continue;
                }
                if (e != '"' && e != '\\' && e != 'n' && e != 't' && e != 'r') {
                    lex_fail(p, "unknown escape in string (valid: \\\" \\\\ \\n \\t \\r \\xHH)");
                    return;
                }
                q += 2;
                continue;
            }
            q++;
        }
        t->kind = T_STR;
        t->s = s + 1;
        t->n = (size_t)(q - s - 1);
        p->cur = q + 1;
        return;
    } else if (c == '-' && s + 1 < p->end && s[1] == '>') {
        t->kind = T_ARROW;
        t->n = 2;
    } else if ((c == '-' && (t->n = number_len(s + 1, p->end, &fl)) > 0) ||
               (is_digit(c) && (t->n = number_len(s, p->end, &fl)) > 0)) {
        if (c == '-')
            t->n++;
        t->kind = fl ? T_FLOAT : T_INT;
    } else if (c != 0 && strchr("()[]{},:=@", c)) {
        t->kind = T_PUNCT;
        t->n = 1;
    } else {
        if (c >= 0x21 && c < 0x7f)
            fail_at(p, p->line, "unexpected character '%c'", c);
        else
            fail_at(p, p->line, "unexpected byte 0x%02x", (unsigned)c);
        t->kind = T_ERR;
        return;
    }
    p->cur += t->n;
}

Tok kiln_lex_peek(Lexer *p)
{
    Lexer save = *p;
    kiln_lex_next(p);
    Tok t = p->t;
    *p = save; /* also forgets a failure the lookahead may have recorded */
    if (t.kind == T_ERR && !save.failed)
        p->d->code = 0;
    return t;
}

void kiln_tok_describe(const Tok *t, char *buf, size_t n)
{
    char span[48];
    size_t k = 0;
    for (size_t i = 0; i < t->n && k + 4 < sizeof span; i++) {
        unsigned char c = (unsigned char)t->s[i];
        span[k++] = c >= 0x20 && c < 0x7f ? (char)c : '?';
    }
    if (k < t->n) {
        span[k++] = '.';
        span[k++] = '.';
        span[k++] = '.';
    }
    span[k] = 0;
    switch (t->kind) {
    case T_EOF: snprintf(buf, n, "end of input"); break;
    case T_VALUE: snprintf(buf, n, "'%%%s'", span); break;
    case T_STR: snprintf(buf, n, "string \"%s\"", span); break;
    default: snprintf(buf, n, "'%s'", span); break;
    }
}
