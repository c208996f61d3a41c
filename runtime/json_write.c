/* runtime/json_write.c — a streaming JSON writer (used by `kiln aot` to write
 * manifest.json); misuse is recorded and reported once by kiln_jw_finish. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/runtime.h"

static void misuse(KilnJsonWriter *w, const char *what)
{
    if (!w->err[0])
        snprintf(w->err, sizeof w->err, "%s", what);
}

static void indent(KilnJsonWriter *w)
{
    fputc('\n', w->out);
    for (int i = 0; i < w->depth; i++)
        fputs("  ", w->out);
}

/* Separator and indentation before a value (or, in an object, before a key). */
static bool before_value(KilnJsonWriter *w)
{
    if (w->err[0])
        return false;
    if (w->depth == 0) {
        if (w->done) {
            misuse(w, "a second top-level value");
            return false;
        }
        return true;
    }
    if (w->open[w->depth] == '{') {
        if (!w->want_value) {
            misuse(w, "a value in an object where a key is due");
            return false;
        }
        w->want_value = false;
        return true;
    }
    if (!w->first[w->depth])
        fputc(',', w->out);
    w->first[w->depth] = false;
    indent(w);
    return true;
}

static void after_value(KilnJsonWriter *w)
{
    if (w->depth == 0)
        w->done = true;
}

void kiln_jw_init(KilnJsonWriter *w, FILE *out)
{
    memset(w, 0, sizeof *w);
    w->out = out;
}

static void begin(KilnJsonWriter *w, char c)
{
    if (!before_value(w))
        return;
    if (w->depth >= KILN_JSON_MAX_DEPTH) {
        misuse(w, "nesting deeper than the JSON depth limit");
        return;
    }
    fputc(c, w->out);
    w->depth++;
    w->open[w->depth] = c;
    w->first[w->depth] = true;
}

static void end(KilnJsonWriter *w, char open, char close)
{
    if (w->err[0])
        return;
    if (w->depth == 0 || w->open[w->depth] != open) {
        misuse(w, open == '{' ? "end_object without a matching begin_object"
                              : "end_array without a matching begin_array");
        return;
    }
    if (w->want_value) {
        misuse(w, "a key without a value");
        return;
    }
    bool empty = w->first[w->depth];
    w->depth--;
    if (!empty)
        indent(w);
    fputc(close, w->out);
    after_value(w);
}

void kiln_jw_begin_object(KilnJsonWriter *w) { begin(w, '{'); }
void kiln_jw_end_object(KilnJsonWriter *w) { end(w, '{', '}'); }
void kiln_jw_begin_array(KilnJsonWriter *w) { begin(w, '['); }
void kiln_jw_end_array(KilnJsonWriter *w) { end(w, '[', ']'); }

static void put_string(FILE *out, const char *s)
{
    fputc('"', out);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        switch (*p) {
        case '"': fputs("\\\"", out); break;
        case '\\': fputs("\\\\", out); break;
        case '\n': fputs("\\n", out); break;
        case '\r': fputs("\\r", out); break;
        case '\t': fputs("\\t", out); break;
        case '\b': fputs("\\b", out); break;
        case '\f': fputs("\\f", out); break;
        default:
            if (*p < 0x20)
                fprintf(out, "\\u%04x", *p);
            else
                fputc(*p, out);
        }
    }
    fputc('"', out);
}

void kiln_jw_key(KilnJsonWriter *w, const char *key)
{
    if (w->err[0])
        return;
    if (w->depth == 0 || w->open[w->depth] != '{' || w->want_value) {
        misuse(w, "a key outside an object or where a value is due");
        return;
    }
    if (!w->first[w->depth])
        fputc(',', w->out);
    w->first[w->depth] = false;
    indent(w);
    put_string(w->out, key ? key : "");
    fputs(": ", w->out);
    w->want_value = true;
}

void kiln_jw_string(KilnJsonWriter *w, const char *s)
{
    if (!before_value(w))
        return;
    if (s)
        put_string(w->out, s);
    else
        fputs("null", w->out);
    after_value(w);
}

void kiln_jw_int(KilnJsonWriter *w, int64_t v)
{
    if (!before_value(w))
        return;
    fprintf(w->out, "%lld", (long long)v);
    after_value(w);
}

void kiln_jw_double(KilnJsonWriter *w, double v)
{
    if (!isfinite(v)) {
        misuse(w, "a NaN or infinite number (JSON cannot hold it)");
        return;
    }
    if (!before_value(w))
        return;
    /* The shortest %g that reads back as the same double; keep a '.' or 'e' so it
     * still reads as a float. */
    char buf[40];
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, v);
        if (strtod(buf, NULL) == v)
            break;
    }
    fputs(buf, w->out);
    if (!strpbrk(buf, ".eE"))
        fputs(".0", w->out);
    after_value(w);
}

void kiln_jw_bool(KilnJsonWriter *w, bool v)
{
    if (!before_value(w))
        return;
    fputs(v ? "true" : "false", w->out);
    after_value(w);
}

void kiln_jw_null(KilnJsonWriter *w)
{
    if (!before_value(w))
        return;
    fputs("null", w->out);
    after_value(w);
}

void kiln_jw_kv_str(KilnJsonWriter *w, const char *key, const char *v)
{
    kiln_jw_key(w, key);
    kiln_jw_string(w, v);
}

void kiln_jw_kv_int(KilnJsonWriter *w, const char *key, int64_t v)
{
    kiln_jw_key(w, key);
    kiln_jw_int(w, v);
}

void kiln_jw_kv_bool(KilnJsonWriter *w, const char *key, bool v)
{
    kiln_jw_key(w, key);
    kiln_jw_bool(w, v);
}

int kiln_jw_finish(KilnJsonWriter *w, KilnDiag *d)
{
    if (!w->err[0] && (w->depth != 0 || !w->done))
        misuse(w, "an unfinished document (unclosed object/array or no value)");
    if (w->err[0])
        return kiln_diag_set(d, KILN_EINTERNAL, "JSON writer: %s", w->err);
    fputc('\n', w->out);
    if (fflush(w->out) != 0 || ferror(w->out))
        return kiln_diag_set(d, KILN_EINPUT, "JSON writer: I/O error");
    return 0;
}

void kiln_jw_value(KilnJsonWriter *w, const KilnJson *v)
{
    switch (v->kind) {
    case KILN_JSON_NULL: kiln_jw_null(w); break;
    case KILN_JSON_BOOL: kiln_jw_bool(w, v->b); break;
    case KILN_JSON_NUMBER:
        if (v->is_int)
            kiln_jw_int(w, v->i);
        else
            kiln_jw_double(w, v->real);
        break;
    case KILN_JSON_STRING: kiln_jw_string(w, v->str); break;
    case KILN_JSON_ARRAY:
        kiln_jw_begin_array(w);
        for (size_t i = 0; i < v->len; i++)
            kiln_jw_value(w, &v->items[i]);
        kiln_jw_end_array(w);
        break;
    case KILN_JSON_OBJECT:
        kiln_jw_begin_object(w);
        for (size_t i = 0; i < v->len; i++) {
            kiln_jw_key(w, kiln_json_key(v, i));
            kiln_jw_value(w, &v->items[i]);
        }
        kiln_jw_end_object(w);
        break;
    }
}
