/* ir/print.c — the IR printer: modules and functions to the text form that
 * ir/parse.c reads back (docs/ir.md). Output is deterministic. */
#include <stdlib.h>
#include <string.h>

#include "ir.h"

/* ---------------------------------------------------------------- names */

/* Value names must read back as unique %[A-Za-z0-9_.]+ tokens. Builder users may
 * hand us anything (or the same name twice), so the printer cleans names and
 * makes them unique; a parsed module already satisfies both, so this never
 * changes text that came through the parser. */
typedef struct {
    char **slot; /* open-addressing set of printed names */
    size_t cap, n;
} NameSet;

static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static bool set_has(const NameSet *ns, const char *s)
{
    for (size_t i = hash_str(s) & (ns->cap - 1);; i = (i + 1) & (ns->cap - 1)) {
        if (!ns->slot[i])
            return false;
        if (strcmp(ns->slot[i], s) == 0)
            return true;
    }
}

/* Takes ownership of s. Capacity is fixed up front (2 * values), so no growth. */
static void set_add(NameSet *ns, char *s)
{
    size_t i = hash_str(s) & (ns->cap - 1);
    while (ns->slot[i])
        i = (i + 1) & (ns->cap - 1);
    ns->slot[i] = s;
    ns->n++;
}

static bool name_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '_' || c == '.';
}

/* Printed name of every value of f, malloc'd; free with free_names. */
static char **value_names(const KilnFunc *f)
{
    int nv = f->nvalues;
    char **names = calloc((size_t)(nv ? nv : 1), sizeof *names);
    NameSet ns = {0};
    ns.cap = 16;
    while (ns.cap < 2 * (size_t)nv + 2)
        ns.cap *= 2;
    ns.slot = calloc(ns.cap, sizeof *ns.slot);
    if (!names || !ns.slot) {
        fputs("kiln: out of memory\n", stderr);
        exit(4);
    }
    for (int v = 0; v < nv; v++) {
        const char *raw = f->values[v].name;
        size_t len = raw ? strlen(raw) : 0;
        char *s = malloc(len + 24);
        if (!s) {
            fputs("kiln: out of memory\n", stderr);
            exit(4);
        }
        if (len == 0) {
            snprintf(s, len + 24, "v%d", v);
        } else {
            for (size_t i = 0; i < len; i++)
                s[i] = name_char(raw[i]) ? raw[i] : '_';
            s[len] = 0;
        }
        if (set_has(&ns, s)) {
            size_t base = strlen(s);
            for (int k = 1;; k++) {
                snprintf(s + base, 24, ".%d", k);
                if (!set_has(&ns, s))
                    break;
            }
        }
        names[v] = s;
        set_add(&ns, s);
    }
    free(ns.slot); /* the strings are owned by names[] */
    return names;
}

static void free_names(char **names, int n)
{
    for (int i = 0; i < n; i++)
        free(names[i]);
    free(names);
}

/* ---------------------------------------------------------------- pieces */

static void print_quoted(FILE *out, const char *s)
{
    fputc('"', out);
    for (const unsigned char *p = (const unsigned char *)(s ? s : ""); *p; p++) {
        switch (*p) {
        case '"': fputs("\\\"", out); break;
        case '\\': fputs("\\\\", out); break;
        case '\n': fputs("\\n", out); break;
        case '\t': fputs("\\t", out); break;
        case '\r': fputs("\\r", out); break;
        default:
            if (*p < 0x20 || *p == 0x7f)
                fprintf(out, "\\x%02x", *p);
            else
                fputc(*p, out);
        }
    }
    fputc('"', out);
}

static void print_type(FILE *out, const KilnType *t)
{
    char buf[256];
    kiln_type_print(t, buf, sizeof buf);
    fputs(buf, out);
}

static void print_attr_value(FILE *out, const KilnAttr *a)
{
    char buf[128];
    switch (a->kind) {
    case KILN_ATTR_INT: fprintf(out, "%lld", (long long)a->i); break;
    case KILN_ATTR_FLOAT:
        kiln_format_float(buf, sizeof buf, a->f);
        fputs(buf, out);
        break;
    case KILN_ATTR_STR: print_quoted(out, a->s); break;
    case KILN_ATTR_IDENT: fputs(a->s ? a->s : "", out); break;
    case KILN_ATTR_SPEC:
        kiln_spec_print(&a->q, buf, sizeof buf);
        fprintf(out, "{%s}", buf);
        break;
    case KILN_ATTR_INTS:
        fputc('[', out);
        for (int64_t i = 0; i < a->nints; i++)
            fprintf(out, "%s%lld", i ? ", " : "", (long long)a->ints[i]);
        fputc(']', out);
        break;
    }
}

static void print_attrs(FILE *out, const KilnAttr *attrs, int n)
{
    fputc('{', out);
    for (int i = 0; i < n; i++) {
        fprintf(out, "%s%s = ", i ? ", " : "", attrs[i].key);
        print_attr_value(out, &attrs[i]);
    }
    fputc('}', out);
}

static const char *vname(char **names, const KilnFunc *f, int v)
{
    return v >= 0 && v < f->nvalues ? names[v] : "?";
}

/* The function's result type is the type of the value its (last live) return
 * returns; NULL when there is none yet. */
static const KilnType *result_type(const KilnFunc *f)
{
    for (int i = f->ninsts - 1; i >= 0; i--) {
        const KilnInst *in = &f->insts[i];
        if (in->dead || in->op != KILN_OP_RETURN)
            continue;
        if (in->nops == 1 && in->ops[0] >= 0 && in->ops[0] < f->nvalues)
            return &f->values[in->ops[0]].type;
        return NULL;
    }
    return NULL;
}

static void print_inst(FILE *out, const KilnFunc *f, const KilnInst *in, char **names)
{
    fputs("  ", out);
    if (in->op == KILN_OP_RETURN || in->result < 0 || in->result >= f->nvalues) {
        fputs(kiln_op_name(in->op), out);
    } else {
        fprintf(out, "%%%s = %s", names[in->result], kiln_op_name(in->op));
    }
    for (int j = 0; j < in->nops; j++)
        fprintf(out, "%s%%%s", j ? ", " : " ", vname(names, f, in->ops[j]));
    if (in->nattrs > 0) {
        fputc(' ', out);
        print_attrs(out, in->attrs, in->nattrs);
    }
    if (in->op != KILN_OP_RETURN && in->result >= 0 && in->result < f->nvalues) {
        fputs(" : ", out);
        print_type(out, &f->values[in->result].type);
    }
    fputc('\n', out);
}

/* ---------------------------------------------------------------- API */

int kiln_print_func(FILE *out, const KilnFunc *f)
{
    char **names = value_names(f);
    fputs("func @", out);
    print_quoted(out, f->name);
    fputc('(', out);
    for (int i = 0; i < f->nparams; i++) {
        int v = f->params[i];
        fprintf(out, "%s%%%s: ", i ? ", " : "", vname(names, f, v));
        if (v >= 0 && v < f->nvalues)
            print_type(out, &f->values[v].type);
    }
    fputc(')', out);
    const KilnType *rt = result_type(f);
    if (rt) {
        fputs(" -> ", out);
        print_type(out, rt);
    }
    if (f->nattrs > 0) {
        fputs(" attributes ", out);
        print_attrs(out, f->attrs, f->nattrs);
    }
    fputs(" {\n", out);
    for (int i = 0; i < f->ninsts; i++)
        if (!f->insts[i].dead)
            print_inst(out, f, &f->insts[i], names);
    fputs("}\n", out);
    free_names(names, f->nvalues);
    return ferror(out) ? KILN_EINTERNAL : KILN_OK;
}

int kiln_print_module(FILE *out, const KilnModule *m)
{
    for (int i = 0; i < m->nfuncs; i++) {
        if (i)
            fputc('\n', out);
        int rc = kiln_print_func(out, m->funcs[i]);
        if (rc)
            return rc;
    }
    return ferror(out) ? KILN_EINTERNAL : KILN_OK;
}

/* What print(out, x) writes, as a malloc'd string. */
static char *to_str(const void *x, int (*print)(FILE *, const void *))
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f)
        return NULL;
    print(f, x);
    fclose(f);
    return buf;
}

static int print_module_v(FILE *out, const void *m) { return kiln_print_module(out, m); }
static int print_func_v(FILE *out, const void *f) { return kiln_print_func(out, f); }

char *kiln_print_module_str(const KilnModule *m) { return to_str(m, print_module_v); }
char *kiln_print_func_str(const KilnFunc *f) { return to_str(f, print_func_v); }
