/* ir/parse.c — the IR text parser: recursive descent over the form ir/print.c
 * writes (grammar in docs/ir.md), on the tokens of ir/lex.c. Input is untrusted:
 * every byte sequence yields KILN_OK or KILN_EINPUT with file and line. */
#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "ir.h"
#include "lex.h"

#define MAX_DIM ((int64_t)1 << 40)
#define MAX_NUMEL ((int64_t)1 << 48) /* keeps every size computation far from overflow */

/* ---------------------------------------------------------------- tokens */

typedef struct {
    Lexer lx; /* the input, the current token p->lx.t and the diag */
    KilnModule *m;
} P;

static int fail_at(P *p, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int fail_at(P *p, int line, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = kiln_lex_vfail_at(&p->lx, line, fmt, ap);
    va_end(ap);
    return rc;
}

static void lex(P *p) { kiln_lex_next(&p->lx); }

/* "expected <what> <where>, found <tok>" */
static int expected(P *p, const char *what, const char *where)
{
    if (p->lx.t.kind == T_ERR)
        return KILN_EINPUT;
    char found[80];
    kiln_tok_describe(&p->lx.t, found, sizeof found);
    return fail_at(p, p->lx.t.line, "expected %s%s%s, found %s", what, where[0] ? " " : "", where,
                   found);
}

static bool is_punct(const P *p, char c) { return p->lx.t.kind == T_PUNCT && p->lx.t.s[0] == c; }
static bool is_word(const P *p, const char *w)
{
    const Tok *t = &p->lx.t;
    return t->kind == T_IDENT && t->n == strlen(w) && memcmp(t->s, w, t->n) == 0;
}

static int expect_punct(P *p, char c, const char *where)
{
    if (!is_punct(p, c)) {
        char what[8];
        snprintf(what, sizeof what, "'%c'", c);
        return expected(p, what, where);
    }
    lex(p);
    return 0;
}

/* ---------------------------------------------------------------- numbers */

static int tok_int(P *p, int64_t lo, int64_t hi, const char *what, int64_t *out)
{
    if (p->lx.t.kind != T_INT)
        return expected(p, what, "");
    char buf[32];
    if (p->lx.t.n >= sizeof buf)
        return fail_at(p, p->lx.t.line, "%s %.20s... out of range (%lld..%lld)", what, p->lx.t.s,
                       (long long)lo, (long long)hi);
    memcpy(buf, p->lx.t.s, p->lx.t.n);
    buf[p->lx.t.n] = 0;
    errno = 0;
    long long v = strtoll(buf, NULL, 10);
    if (errno == ERANGE || v < lo || v > hi)
        return fail_at(p, p->lx.t.line, "%s %s out of range (%lld..%lld)", what, buf, (long long)lo,
                       (long long)hi);
    *out = v;
    lex(p);
    return 0;
}

/* Any number (or inf/nan); must be finite-or-inf within f32 range. */
static int tok_float(P *p, const char *what, double *out)
{
    if (p->lx.t.kind != T_INT && p->lx.t.kind != T_FLOAT && !is_word(p, "inf") &&
        !is_word(p, "nan"))
        return expected(p, what, "");
    char buf[64];
    if (p->lx.t.n >= sizeof buf)
        return fail_at(p, p->lx.t.line, "number too long for %s", what);
    memcpy(buf, p->lx.t.s, p->lx.t.n);
    buf[p->lx.t.n] = 0;
    double v = strtod(buf, NULL);
    if (isfinite(v) && fabs(v) > FLT_MAX)
        return fail_at(p, p->lx.t.line, "%s %s out of f32 range", what, buf);
    *out = v;
    lex(p);
    return 0;
}

/* ---------------------------------------------------------------- specs and types */

static const char *valid_list(int n, const char *(*name)(int), char *buf, size_t cap)
{
    size_t w = 0;
    buf[0] = 0;
    for (int i = 0; i < n && w < cap; i++)
        w += (size_t)snprintf(buf + w, cap - w, "%s%s", i ? ", " : "", name(i));
    return buf;
}
static const char *qf_name(int i) { return kiln_qformat_name((KilnQFormat)i); }
static const char *dt_name(int i) { return kiln_dtype_name((KilnDType)i); }
static const char *op_name(int i) { return kiln_op_name((KilnOp)i); }

/* After '{': <fmt> <sym|asym> <gran>[ options] '}' */
static int parse_spec(P *p, KilnQuantSpec *q)
{
    char list[256];
    memset(q, 0, sizeof *q);
    if (p->lx.t.kind != T_IDENT)
        return expected(p, "a quantization format", "in spec");
    int fmt = -1;
    for (int i = 0; i < KILN_NQFORMATS; i++)
        if (is_word(p, kiln_qformat_name((KilnQFormat)i)))
            fmt = i;
    if (fmt < 0)
        return fail_at(p, p->lx.t.line, "unknown quantization format '%.*s' (valid: %s)",
                       (int)(p->lx.t.n > 40 ? 40 : p->lx.t.n), p->lx.t.s,
                       valid_list(KILN_NQFORMATS, qf_name, list, sizeof list));
    q->fmt = (KilnQFormat)fmt;
    lex(p);
    if (is_word(p, "sym"))
        q->symmetric = true;
    else if (!is_word(p, "asym"))
        return expected(p, "'sym' or 'asym'", "in spec");
    lex(p);
    int g = -1;
    for (int i = 0; i < KILN_NGRANS; i++)
        if (i != KILN_GRAN_GROUP && is_word(p, kiln_gran_name((KilnGran)i)))
            g = i;
    if (g >= 0) {
        q->gran = (KilnGran)g;
        lex(p);
    } else if (is_word(p, "group")) {
        q->gran = KILN_GRAN_GROUP;
        lex(p);
        int64_t v;
        if (expect_punct(p, '=', "after 'group' in spec") ||
            tok_int(p, 1, INT32_MAX, "group size", &v))
            return KILN_EINPUT;
        q->group = (int32_t)v;
    } else if (p->lx.t.kind == T_IDENT) {
        return fail_at(p, p->lx.t.line,
                       "unknown granularity '%.*s' (valid: tensor, channel, token, auto, group=G)",
                       (int)(p->lx.t.n > 40 ? 40 : p->lx.t.n), p->lx.t.s);
    } else {
        return expected(p, "a granularity (tensor, channel, token, auto, group=G)", "in spec");
    }
    unsigned seen = 0;
    while (!is_punct(p, '}')) {
        static const char *const opts[] = {"dynamic", "pct", "scale", "zero", "calib"};
        int o = -1;
        for (int i = 0; i < 5; i++)
            if (is_word(p, opts[i]))
                o = i;
        if (o < 0) {
            if (p->lx.t.kind == T_IDENT)
                return fail_at(p, p->lx.t.line,
                               "unknown spec option '%.*s' (valid: dynamic, pct=P, calib=mse, scale=S, zero=Z)",
                               (int)(p->lx.t.n > 40 ? 40 : p->lx.t.n), p->lx.t.s);
            return expected(p, "a spec option or '}'", "");
        }
        if (seen & (1u << o))
            return fail_at(p, p->lx.t.line, "duplicate '%s' in spec", opts[o]);
        seen |= 1u << o;
        lex(p);
        if (o == 0) {
            q->dynamic = true;
            continue;
        }
        char where[32];
        snprintf(where, sizeof where, "after '%s' in spec", opts[o]);
        if (expect_punct(p, '=', where))
            return KILN_EINPUT;
        if (o == 4) { /* percentile is spelled pct=P, so calib= names only mse */
            if (!is_word(p, "mse"))
                return expected(p, "'mse'", "after 'calib=' in spec (a percentile is written pct=P)");
            lex(p);
            q->calib = KILN_CAL_MSE;
        }
        if ((seen & (1u << 1)) && (seen & (1u << 4)))
            return fail_at(p, p->lx.t.line, "spec has both pct= and calib=mse: choose one");
        if (o == 4)
            continue;
        double v;
        int64_t z;
        if (o == 1) {
            if (tok_float(p, "percentile", &v))
                return KILN_EINPUT;
            q->calib = KILN_CAL_PERCENTILE;
            q->pct = (float)v;
        } else if (o == 2) {
            if (tok_float(p, "scale", &v))
                return KILN_EINPUT;
            q->scale = (float)v;
        } else {
            if (tok_int(p, INT32_MIN, INT32_MAX, "zero point", &z))
                return KILN_EINPUT;
            q->zero = (int32_t)z;
        }
    }
    lex(p);
    return 0;
}

/* body_may_follow: in a function header a '{' after the type may open the body. */
static int parse_type(P *p, KilnType *t, bool body_may_follow)
{
    char list[256];
    memset(t, 0, sizeof *t);
    if (p->lx.t.kind != T_IDENT)
        return expected(p, "a type", "");
    KilnDType dt;
    if (kiln_dtype_parse(p->lx.t.s, p->lx.t.n, &dt))
        return fail_at(p, p->lx.t.line, "unknown dtype '%.*s' (valid: %s)",
                       (int)(p->lx.t.n > 40 ? 40 : p->lx.t.n), p->lx.t.s,
                       valid_list(KILN_NDTYPES, dt_name, list, sizeof list));
    t->dt = dt;
    lex(p);
    if (expect_punct(p, '[', "after dtype"))
        return KILN_EINPUT;
    int64_t numel = 1;
    while (!is_punct(p, ']')) {
        if (t->rank > 0 && expect_punct(p, ',', "between dimensions"))
            return KILN_EINPUT;
        if (t->rank == KILN_MAX_RANK)
            return fail_at(p, p->lx.t.line, "rank > %d", KILN_MAX_RANK);
        if (p->lx.t.kind != T_INT)
            return expected(p, "a dimension", "");
        int64_t v;
        if (tok_int(p, 1, MAX_DIM, "dimension", &v))
            return KILN_EINPUT;
        if (numel > MAX_NUMEL / v)
            return fail_at(p, p->lx.t.line, "tensor has more than 2^48 elements");
        numel *= v;
        t->dim[t->rank++] = v;
    }
    lex(p);
    if (is_punct(p, '{')) {
        if (body_may_follow) {
            Tok n = kiln_lex_peek(&p->lx);
            if (n.kind != T_IDENT || (n.n == 6 && memcmp(n.s, "return", 6) == 0))
                return 0;
        }
        int line = p->lx.t.line;
        lex(p);
        if (parse_spec(p, &t->q))
            return KILN_EINPUT;
        if (t->q.fmt == KILN_QF_NONE)
            return fail_at(p, line, "a type's spec cannot have format 'none'");
    }
    return 0;
}

/* ---------------------------------------------------------------- names */

/* name -> (value id, line) for one function; also function names per module. */
typedef struct {
    struct Ent {
        const char *name;
        int id, line;
    } *e;
    size_t cap, n;
} Map;

static uint64_t hash_n(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
    return h;
}

static struct Ent *map_find(const Map *m, const char *s, size_t n)
{
    if (!m->cap)
        return NULL;
    for (size_t i = hash_n(s, n) & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
        struct Ent *e = &m->e[i];
        if (!e->name)
            return NULL;
        if (strlen(e->name) == n && memcmp(e->name, s, n) == 0)
            return e;
    }
}

/* name must be NUL-terminated and outlive the map (arena strings). */
static void map_put(Map *m, const char *name, int id, int line)
{
    if (2 * (m->n + 1) > m->cap) {
        Map g = {calloc(m->cap ? 2 * m->cap : 64, sizeof *g.e), m->cap ? 2 * m->cap : 64, 0};
        if (!g.e) {
            fputs("kiln: out of memory\n", stderr);
            exit(4);
        }
        for (size_t i = 0; i < m->cap; i++)
            if (m->e[i].name)
                map_put(&g, m->e[i].name, m->e[i].id, m->e[i].line);
        free(m->e);
        *m = g;
    }
    size_t i = hash_n(name, strlen(name)) & (m->cap - 1);
    while (m->e[i].name)
        i = (i + 1) & (m->cap - 1);
    m->e[i] = (struct Ent){name, id, line};
    m->n++;
}

/* ---------------------------------------------------------------- attributes */

/* Decode a lexed string body (escapes already validated) into the arena. */
static const char *decode_str(P *p, const Tok *t)
{
    char *out = kiln_arena_alloc(p->m->arena, t->n + 1);
    size_t w = 0;
    for (size_t i = 0; i < t->n; i++) {
        char c = t->s[i];
        if (c == '\\') {
            char e = t->s[++i];
            if (e == 'x') {
                char hex[3] = {t->s[i + 1], t->s[i + 2], 0};
                c = (char)strtol(hex, NULL, 16);
                i += 2;
            } else {
                c = e == 'n' ? '\n' : e == 't' ? '\t' : e == 'r' ? '\r' : e;
            }
        }
        out[w++] = c;
    }
    out[w] = 0;
    return out;
}

#define MAX_INTS ((int64_t)1 << 24)

/* '[' [INT (',' INT)*] ']' into a->ints (arena); the current token is '['. */
static int parse_ints(P *p, KilnAttr *a)
{
    int64_t n = 0, cap = 0, *v = NULL;
    int rc = 0;
    lex(p); /* '[' */
    while (!rc && !is_punct(p, ']')) {
        if (n > 0 && (rc = expect_punct(p, ',', "between list items")))
            break;
        if (n == MAX_INTS) {
            rc = fail_at(p, p->lx.t.line, "list attribute '%s' has more than %lld items", a->key,
                         (long long)MAX_INTS);
            break;
        }
        if (n == cap) {
            cap = cap ? 2 * cap : 16;
            int64_t *nv = realloc(v, sizeof *v * (size_t)cap);
            if (!nv) {
                rc = fail_at(p, p->lx.t.line, "out of memory");
                break;
            }
            v = nv;
        }
        rc = tok_int(p, INT64_MIN, INT64_MAX, "integer list item", &v[n]);
        n += rc == 0;
    }
    if (!rc) {
        int64_t *copy = kiln_arena_alloc(p->m->arena, sizeof(int64_t) * (size_t)(n ? n : 1));
        if (n)
            memcpy(copy, v, sizeof(int64_t) * (size_t)n);
        a->ints = copy;
        a->nints = n;
        lex(p); /* ']' */
    }
    free(v);
    return rc;
}

/* '{' key = value, ... '}' into attrs[*n]. */
static int parse_attrs(P *p, KilnAttr *attrs, int *n, const char *owner)
{
    char where[96];
    lex(p); /* '{' */
    while (!is_punct(p, '}')) {
        if (*n > 0 && expect_punct(p, ',', "between attributes"))
            return KILN_EINPUT;
        if (p->lx.t.kind != T_IDENT) {
            snprintf(where, sizeof where, "in attributes of %s", owner);
            return expected(p, "an attribute name", where);
        }
        for (int i = 0; i < *n; i++)
            if (strlen(attrs[i].key) == p->lx.t.n &&
                memcmp(attrs[i].key, p->lx.t.s, p->lx.t.n) == 0)
                return fail_at(p, p->lx.t.line, "duplicate attribute '%s' on %s", attrs[i].key,
                               owner);
        if (*n == KILN_MAX_ATTRS)
            return fail_at(p, p->lx.t.line, "too many attributes on %s (max %d)", owner,
                           KILN_MAX_ATTRS);
        KilnAttr a = {.key = kiln_arena_strndup(p->m->arena, p->lx.t.s, p->lx.t.n)};
        lex(p);
        snprintf(where, sizeof where, "after attribute name '%.40s'", a.key);
        if (expect_punct(p, '=', where))
            return KILN_EINPUT;
        if (p->lx.t.kind == T_INT) {
            a.kind = KILN_ATTR_INT;
            if (tok_int(p, INT64_MIN, INT64_MAX, "integer", &a.i))
                return KILN_EINPUT;
        } else if (p->lx.t.kind == T_FLOAT || is_word(p, "inf") || is_word(p, "nan")) {
            a.kind = KILN_ATTR_FLOAT;
            if (tok_float(p, "float", &a.f))
                return KILN_EINPUT;
        } else if (p->lx.t.kind == T_STR) {
            a.kind = KILN_ATTR_STR;
            a.s = decode_str(p, &p->lx.t);
            lex(p);
        } else if (p->lx.t.kind == T_IDENT) {
            a.kind = KILN_ATTR_IDENT;
            a.s = kiln_arena_strndup(p->m->arena, p->lx.t.s, p->lx.t.n);
            lex(p);
        } else if (is_punct(p, '{')) {
            a.kind = KILN_ATTR_SPEC;
            lex(p);
            if (parse_spec(p, &a.q))
                return KILN_EINPUT;
        } else if (is_punct(p, '[')) {
            a.kind = KILN_ATTR_INTS;
            if (parse_ints(p, &a))
                return KILN_EINPUT;
        } else {
            snprintf(where, sizeof where, "for attribute '%.40s'", a.key);
            return expected(p, "a value (int, float, \"string\", ident, {spec} or [ints])", where);
        }
        attrs[(*n)++] = a;
    }
    lex(p);
    return 0;
}

/* ---------------------------------------------------------------- functions */

typedef struct {
    KilnFunc *f;
    Map vals;
} Fn;

static int define(P *p, Fn *fn, const Tok *name, int line)
{
    struct Ent *e = map_find(&fn->vals, name->s, name->n);
    if (e)
        return fail_at(p, line, "redefinition of value %%%s (first defined on line %d)", e->name,
                       e->line);
    return 0;
}

static int parse_inst(P *p, Fn *fn)
{
    char list[256], where[64];
    KilnFunc *f = fn->f;
    int line = p->lx.t.line;
    Tok name = {0};
    bool is_ret = is_word(p, "return");
    KilnOp op = KILN_OP_RETURN;
    if (!is_ret) {
        name = p->lx.t;
        if (define(p, fn, &name, line))
            return KILN_EINPUT;
        lex(p);
        if (expect_punct(p, '=', "after result name"))
            return KILN_EINPUT;
        if (p->lx.t.kind != T_IDENT)
            return expected(p, "an op name", "after '='");
        if (kiln_op_parse(p->lx.t.s, p->lx.t.n, &op))
            return fail_at(p, p->lx.t.line, "unknown op '%.*s' (valid: %s)",
                           (int)(p->lx.t.n > 40 ? 40 : p->lx.t.n), p->lx.t.s,
                           valid_list(KILN_NOPS, op_name, list, sizeof list));
        if (op == KILN_OP_RETURN)
            return fail_at(p, p->lx.t.line, "'return' produces no value: write 'return %%v'");
    }
    const char *opn = kiln_op_name(op);
    lex(p);
    int ops[KILN_MAX_OPERANDS], nops = 0;
    while (p->lx.t.kind == T_VALUE) {
        struct Ent *e = map_find(&fn->vals, p->lx.t.s, p->lx.t.n);
        if (!e)
            return fail_at(p, p->lx.t.line, "use of undefined value %%%.*s in '%s'",
                           (int)(p->lx.t.n > 60 ? 60 : p->lx.t.n), p->lx.t.s, opn);
        if (nops == kiln_op_max_operands(op))
            return fail_at(p, p->lx.t.line, "too many operands for '%s' (takes at most %d)", opn,
                           kiln_op_max_operands(op));
        ops[nops++] = e->id;
        lex(p);
        if (!is_punct(p, ','))
            break;
        lex(p);
        if (p->lx.t.kind != T_VALUE) {
            snprintf(where, sizeof where, "after ',' in operands of '%s'", opn);
            return expected(p, "an operand", where);
        }
    }
    if (nops < kiln_op_min_operands(op))
        return fail_at(p, line, "'%s' takes %d operand%s, found %d", opn,
                       kiln_op_min_operands(op), kiln_op_min_operands(op) == 1 ? "" : "s", nops);
    KilnAttr attrs[KILN_MAX_ATTRS];
    int nattrs = 0;
    if (is_punct(p, '{')) {
        snprintf(where, sizeof where, "'%s'", opn);
        if (parse_attrs(p, attrs, &nattrs, where))
            return KILN_EINPUT;
    }
    KilnType ty = {0};
    if (!is_ret) {
        snprintf(where, sizeof where, "after %s'%s'",
                 nattrs ? "attributes of " : nops ? "operands of " : "", opn);
        if (expect_punct(p, ':', where) || parse_type(p, &ty, false))
            return KILN_EINPUT;
    }
    const char *nm = is_ret ? NULL : kiln_arena_strndup(p->m->arena, name.s, name.n);
    int id = kiln_emit(f, op, ops, nops, ty, nm);
    KilnInst *in = kiln_last(f);
    in->line = line;
    in->nattrs = nattrs;
    memcpy(in->attrs, attrs, (size_t)nattrs * sizeof *attrs);
    if (id >= 0)
        map_put(&fn->vals, f->values[id].name, id, line);
    return 0;
}

/* The next auto name the builder hands out must not collide with a parsed one. */
static void fix_next_id(KilnFunc *f)
{
    for (int v = 0; v < f->nvalues; v++) {
        const char *s = f->values[v].name;
        size_t n = strlen(s);
        if (n == 0 || n > 9 || strspn(s, "0123456789") != n)
            continue;
        int k = atoi(s);
        if (k >= f->next_id)
            f->next_id = k + 1;
    }
}

static int parse_func(P *p, Map *funcs)
{
    int line = p->lx.t.line;
    if (!is_word(p, "func"))
        return expected(p, "'func'", "");
    lex(p);
    if (expect_punct(p, '@', "after 'func'"))
        return KILN_EINPUT;
    const char *fname;
    if (p->lx.t.kind == T_STR)
        fname = decode_str(p, &p->lx.t);
    else if (p->lx.t.kind == T_IDENT)
        fname = kiln_arena_strndup(p->m->arena, p->lx.t.s, p->lx.t.n);
    else
        return expected(p, "a function name", "after '@'");
    struct Ent *prev = map_find(funcs, fname, strlen(fname));
    if (prev)
        return fail_at(p, p->lx.t.line,
                       "redefinition of function @\"%.200s\" (first defined on line %d)", fname,
                       prev->line);
    lex(p);
    Fn fn = {kiln_func_new(p->m, fname), {0}};
    map_put(funcs, fn.f->name, 0, line);
    int rc = KILN_EINPUT;
    if (expect_punct(p, '(', "after function name"))
        goto out;
    while (!is_punct(p, ')')) {
        if (fn.f->nparams > 0 && expect_punct(p, ',', "between parameters"))
            goto out;
        if (p->lx.t.kind != T_VALUE) {
            expected(p, "a parameter name", "");
            goto out;
        }
        Tok name = p->lx.t;
        KilnType ty;
        if (define(p, &fn, &name, name.line))
            goto out;
        lex(p);
        if (expect_punct(p, ':', "after parameter name") || parse_type(p, &ty, false))
            goto out;
        int id = kiln_func_param(fn.f, kiln_arena_strndup(p->m->arena, name.s, name.n), ty);
        map_put(&fn.vals, fn.f->values[id].name, id, name.line);
    }
    lex(p);
    KilnType declared;
    bool has_decl = false;
    int decl_line = 0;
    if (p->lx.t.kind == T_ARROW) {
        lex(p);
        decl_line = p->lx.t.line;
        if (parse_type(p, &declared, true))
            goto out;
        has_decl = true;
    }
    if (is_word(p, "attributes")) {
        lex(p);
        if (!is_punct(p, '{')) {
            expected(p, "'{'", "after 'attributes'");
            goto out;
        }
        if (parse_attrs(p, fn.f->attrs, &fn.f->nattrs, "the function"))
            goto out;
    }
    if (expect_punct(p, '{', "to open the function body"))
        goto out;
    while (!is_punct(p, '}')) {
        if (p->lx.t.kind != T_VALUE && !is_word(p, "return")) {
            expected(p, "an instruction ('%name = op ...' or 'return %v') or '}'", "");
            goto out;
        }
        if (parse_inst(p, &fn))
            goto out;
    }
    lex(p);
    fix_next_id(fn.f);
    if (has_decl) {
        const KilnInst *ret = NULL;
        for (int i = fn.f->ninsts - 1; i >= 0 && !ret; i--)
            if (fn.f->insts[i].op == KILN_OP_RETURN)
                ret = &fn.f->insts[i];
        if (!ret) {
            fail_at(p, decl_line, "function @\"%.200s\" declares a result type but has no return",
                    fname);
            goto out;
        }
        char a[256], b[256];
        kiln_type_print(&declared, a, sizeof a);
        kiln_type_print(&fn.f->values[ret->ops[0]].type, b, sizeof b);
        if (strcmp(a, b) != 0) {
            fail_at(p, ret->line, "function @\"%.200s\" declares result %s but returns %%%s of type %s",
                    fname, a, fn.f->values[ret->ops[0]].name, b);
            goto out;
        }
    }
    rc = 0;
out:
    free(fn.vals.e);
    return rc;
}

int kiln_parse_module(const char *text, size_t len, const char *file, KilnModule *m, KilnDiag *d)
{
    KilnDiag local;
    P p = {.lx = {.cur = text ? text : "", .line = 1, .file = file, .d = d ? d : &local}, .m = m};
    p.lx.end = p.lx.cur + (text ? len : 0);
    Map funcs = {0};
    int rc = 0;
    lex(&p);
    while (!rc && p.lx.t.kind != T_EOF) {
        if (p.lx.t.kind == T_ERR)
            rc = KILN_EINPUT;
        else
            rc = parse_func(&p, &funcs);
    }
    free(funcs.e);
    return rc;
}
