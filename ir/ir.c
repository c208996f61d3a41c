/* ir/ir.c — the IR builder: arena, modules, functions, instructions, attributes. */
#include <stdlib.h>
#include <string.h>

#include "ir.h"

/* ---------------------------------------------------------------- arena */

typedef struct Chunk {
    struct Chunk *next;
    size_t used, cap;
    _Alignas(16) unsigned char mem[];
} Chunk;

struct KilnArena {
    Chunk *head;
};

static void *xcalloc(size_t n, size_t sz)
{
    void *p = calloc(n ? n : 1, sz ? sz : 1);
    if (!p) {
        fputs("kiln: out of memory\n", stderr);
        exit(4);
    }
    return p;
}

static void *xrealloc(void *p, size_t n)
{
    p = realloc(p, n ? n : 1);
    if (!p) {
        fputs("kiln: out of memory\n", stderr);
        exit(4);
    }
    return p;
}

void *kiln_arena_alloc(KilnArena *a, size_t n)
{
    n = (n + 15) & ~(size_t)15;
    Chunk *c = a->head;
    if (!c || c->cap - c->used < n) {
        size_t cap = n > 64 * 1024 ? n : 64 * 1024;
        c = xcalloc(1, sizeof(Chunk) + cap);
        c->cap = cap;
        c->next = a->head;
        a->head = c;
    }
    void *p = c->mem + c->used;
    c->used += n;
    return p;
}

const char *kiln_arena_strndup(KilnArena *a, const char *s, size_t n)
{
    char *p = kiln_arena_alloc(a, n + 1);
    memcpy(p, s, n);
    p[n] = 0;
    return p;
}

const char *kiln_arena_strdup(KilnArena *a, const char *s)
{
    return s ? kiln_arena_strndup(a, s, strlen(s)) : NULL;
}

/* ---------------------------------------------------------------- module */

KilnModule *kiln_module_new(void)
{
    KilnModule *m = xcalloc(1, sizeof *m);
    m->arena = xcalloc(1, sizeof *m->arena);
    return m;
}

void kiln_module_free(KilnModule *m)
{
    if (!m)
        return;
    for (int i = 0; i < m->nfuncs; i++) {
        KilnFunc *f = m->funcs[i];
        free(f->params);
        free(f->values);
        free(f->insts);
        free(f);
    }
    free(m->funcs);
    for (Chunk *c = m->arena->head, *n; c; c = n) {
        n = c->next;
        free(c);
    }
    free(m->arena);
    free(m);
}

KilnFunc *kiln_func_new(KilnModule *m, const char *name)
{
    KilnFunc *f = xcalloc(1, sizeof *f);
    f->mod = m;
    f->name = kiln_arena_strdup(m->arena, name ? name : "main");
    if (m->nfuncs == m->capfuncs) {
        m->capfuncs = m->capfuncs ? 2 * m->capfuncs : 4;
        m->funcs = xrealloc(m->funcs, (size_t)m->capfuncs * sizeof *m->funcs);
    }
    m->funcs[m->nfuncs++] = f;
    return f;
}

static int new_value(KilnFunc *f, const char *name, KilnType t, int def)
{
    if (f->nvalues == f->capvalues) {
        f->capvalues = f->capvalues ? 2 * f->capvalues : 16;
        f->values = xrealloc(f->values, (size_t)f->capvalues * sizeof *f->values);
    }
    char auto_name[32];
    if (!name) {
        snprintf(auto_name, sizeof auto_name, "%d", f->next_id++);
        name = auto_name;
    }
    KilnValue *v = &f->values[f->nvalues];
    v->name = kiln_arena_strdup(f->mod->arena, name);
    v->type = t;
    v->def = def;
    return f->nvalues++;
}

int kiln_func_param(KilnFunc *f, const char *name, KilnType t)
{
    int id = new_value(f, name, t, -1);
    f->params = xrealloc(f->params, (size_t)(f->nparams + 1) * sizeof *f->params);
    f->params[f->nparams++] = id;
    return id;
}

int kiln_insert(KilnFunc *f, int pos, KilnOp op, const int *operands, int nops, KilnType result,
                const char *name)
{
    if (f->ninsts == f->capinsts) {
        f->capinsts = f->capinsts ? 2 * f->capinsts : 16;
        f->insts = xrealloc(f->insts, (size_t)f->capinsts * sizeof *f->insts);
    }
    if (pos < 0 || pos > f->ninsts)
        pos = f->ninsts;
    memmove(&f->insts[pos + 1], &f->insts[pos], (size_t)(f->ninsts - pos) * sizeof *f->insts);
    f->ninsts++;
    /* instructions after pos moved: fix the def links of their results */
    for (int i = pos + 1; i < f->ninsts; i++)
        if (f->insts[i].result >= 0)
            f->values[f->insts[i].result].def = i;
    KilnInst *in = &f->insts[pos];
    memset(in, 0, sizeof *in);
    in->op = op;
    in->nops = nops > KILN_MAX_OPERANDS ? KILN_MAX_OPERANDS : nops;
    for (int i = 0; i < in->nops; i++)
        in->ops[i] = operands[i];
    in->result = op == KILN_OP_RETURN ? -1 : new_value(f, name, result, pos);
    return in->result;
}

int kiln_emit(KilnFunc *f, KilnOp op, const int *operands, int nops, KilnType result,
              const char *name)
{
    return kiln_insert(f, f->ninsts, op, operands, nops, result, name);
}

KilnInst *kiln_def(KilnFunc *f, int value)
{
    if (value < 0 || value >= f->nvalues || f->values[value].def < 0)
        return NULL;
    return &f->insts[f->values[value].def];
}

KilnInst *kiln_last(KilnFunc *f) { return f->ninsts ? &f->insts[f->ninsts - 1] : NULL; }

void kiln_replace_uses(KilnFunc *f, int from, int to)
{
    for (int i = 0; i < f->ninsts; i++) {
        KilnInst *in = &f->insts[i];
        if (in->dead)
            continue;
        for (int j = 0; j < in->nops; j++)
            if (in->ops[j] == from)
                in->ops[j] = to;
    }
}

int kiln_count_uses(const KilnFunc *f, int value)
{
    int n = 0;
    for (int i = 0; i < f->ninsts; i++) {
        const KilnInst *in = &f->insts[i];
        if (in->dead)
            continue;
        for (int j = 0; j < in->nops; j++)
            n += in->ops[j] == value;
    }
    return n;
}

void kiln_func_compact(KilnFunc *f)
{
    int w = 0;
    for (int i = 0; i < f->ninsts; i++) {
        if (f->insts[i].dead)
            continue;
        f->insts[w] = f->insts[i];
        if (f->insts[w].result >= 0)
            f->values[f->insts[w].result].def = w;
        w++;
    }
    f->ninsts = w;
}

/* ---------------------------------------------------------------- attributes */

static KilnAttr *attr_slot(KilnArena *a, KilnAttr *attrs, int *n, const char *key)
{
    for (int i = 0; i < *n; i++)
        if (strcmp(attrs[i].key, key) == 0) {
            KilnAttr *at = &attrs[i];
            const char *k = at->key;
            memset(at, 0, sizeof *at);
            at->key = k;
            return at;
        }
    if (*n >= KILN_MAX_ATTRS) {
        fprintf(stderr, "kiln: internal error: more than %d attributes on one instruction\n",
                KILN_MAX_ATTRS);
        exit(4);
    }
    KilnAttr *at = &attrs[(*n)++];
    memset(at, 0, sizeof *at);
    at->key = kiln_arena_strdup(a, key);
    return at;
}

void kiln_set_int(KilnFunc *f, KilnInst *in, const char *key, int64_t v)
{
    KilnAttr *a = attr_slot(f->mod->arena, in->attrs, &in->nattrs, key);
    a->kind = KILN_ATTR_INT;
    a->i = v;
}

void kiln_set_float(KilnFunc *f, KilnInst *in, const char *key, double v)
{
    KilnAttr *a = attr_slot(f->mod->arena, in->attrs, &in->nattrs, key);
    a->kind = KILN_ATTR_FLOAT;
    a->f = v;
}

void kiln_set_str(KilnFunc *f, KilnInst *in, const char *key, const char *v)
{
    KilnAttr *a = attr_slot(f->mod->arena, in->attrs, &in->nattrs, key);
    a->kind = KILN_ATTR_STR;
    a->s = kiln_arena_strdup(f->mod->arena, v);
}

void kiln_set_ident(KilnFunc *f, KilnInst *in, const char *key, const char *v)
{
    KilnAttr *a = attr_slot(f->mod->arena, in->attrs, &in->nattrs, key);
    a->kind = KILN_ATTR_IDENT;
    a->s = kiln_arena_strdup(f->mod->arena, v);
}

void kiln_set_spec(KilnFunc *f, KilnInst *in, const char *key, const KilnQuantSpec *q)
{
    KilnAttr *a = attr_slot(f->mod->arena, in->attrs, &in->nattrs, key);
    a->kind = KILN_ATTR_SPEC;
    a->q = *q;
}

static const KilnAttr *attr_find(const KilnAttr *attrs, int n, const char *key);

void kiln_set_ints(KilnFunc *f, KilnInst *in, const char *key, const int64_t *v, int64_t n)
{
    /* copy first: v may point into the arena slot being overwritten */
    int64_t *copy = kiln_arena_alloc(f->mod->arena, sizeof(int64_t) * (size_t)(n > 0 ? n : 1));
    if (n > 0)
        memcpy(copy, v, sizeof(int64_t) * (size_t)n);
    KilnAttr *a = attr_slot(f->mod->arena, in->attrs, &in->nattrs, key);
    a->kind = KILN_ATTR_INTS;
    a->ints = copy;
    a->nints = n;
}

int kiln_qgemm_outlier_w(const KilnInst *g)
{
    if (!g || g->op != KILN_OP_QGEMM || g->nops < 3 || !attr_find(g->attrs, g->nattrs, "outliers"))
        return -1;
    return g->ops[g->nops - 1];
}

int kiln_qgemm_bias(const KilnInst *g)
{
    if (!g || g->op != KILN_OP_QGEMM)
        return -1;
    int n = g->nops - (kiln_qgemm_outlier_w(g) >= 0 ? 1 : 0);
    return n == 3 ? g->ops[2] : -1;
}

static const KilnAttr *attr_find(const KilnAttr *attrs, int n, const char *key)
{
    for (int i = 0; i < n; i++)
        if (strcmp(attrs[i].key, key) == 0)
            return &attrs[i];
    return NULL;
}

const KilnAttr *kiln_get(const KilnInst *in, const char *key)
{
    return attr_find(in->attrs, in->nattrs, key);
}

void kiln_fset_str(KilnFunc *f, const char *key, const char *v)
{
    KilnAttr *a = attr_slot(f->mod->arena, f->attrs, &f->nattrs, key);
    a->kind = KILN_ATTR_STR;
    a->s = kiln_arena_strdup(f->mod->arena, v);
}

void kiln_fset_ident(KilnFunc *f, const char *key, const char *v)
{
    KilnAttr *a = attr_slot(f->mod->arena, f->attrs, &f->nattrs, key);
    a->kind = KILN_ATTR_IDENT;
    a->s = kiln_arena_strdup(f->mod->arena, v);
}

void kiln_fset_spec(KilnFunc *f, const char *key, const KilnQuantSpec *q)
{
    KilnAttr *a = attr_slot(f->mod->arena, f->attrs, &f->nattrs, key);
    a->kind = KILN_ATTR_SPEC;
    a->q = *q;
}

void kiln_fset_int(KilnFunc *f, const char *key, int64_t v)
{
    KilnAttr *a = attr_slot(f->mod->arena, f->attrs, &f->nattrs, key);
    a->kind = KILN_ATTR_INT;
    a->i = v;
}

const KilnAttr *kiln_fget(const KilnFunc *f, const char *key)
{
    return attr_find(f->attrs, f->nattrs, key);
}
