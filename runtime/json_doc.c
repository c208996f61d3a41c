/* runtime/json_doc.c — reading a parsed JSON document: members by key, numbers, where a
 * value is in its text (through the newline index), its memory; and reading a file. */
#include <stdlib.h>
#include <string.h>

#include "runtime/json_doc.h"

size_t kiln_json_newline_bytes(size_t len)
{
    return (len + 63) / 64 * sizeof(uint64_t) + (len / KILN_JSON_NL_BLOCK + 1) * sizeof(uint32_t);
}

void kiln_json_index_newlines(KilnJsonDoc *doc, const char *text)
{
    size_t len = doc->text_len, words = (len + 63) / 64;
    memset(doc->nl, 0, words * sizeof *doc->nl);
    for (const char *q = text; (q = memchr(q, '\n', (size_t)(text + len - q))); q++) {
        size_t o = (size_t)(q - text);
        doc->nl[o / 64] |= 1ull << (o % 64);
    }
    uint32_t n = 0;
    for (size_t w = 0; w < words; w++) {
        if (w % (KILN_JSON_NL_BLOCK / 64) == 0)
            doc->nl_before[w / (KILN_JSON_NL_BLOCK / 64)] = n;
        n += (uint32_t)__builtin_popcountll(doc->nl[w]);
    }
}

int kiln_json_parse_file(const char *path, KilnJson **out, KilnDiag *d)
{
    *out = NULL;
    char *text;
    size_t n;
    KilnDiag rd = {0}; /* FIFOs, devices and files over the limit are refused */
    int rc = kiln_rt_read_file(path, "JSON file", KILN_JSON_MAX_BYTES, &text, &n, &rd);
    static const char open_failed[] = "cannot open JSON file: ";
    if (rc && strncmp(rd.msg, open_failed, sizeof open_failed - 1) == 0)
        return kiln_diag_set(d, rc, "cannot open %s: %s", path, rd.msg + sizeof open_failed - 1);
    if (rc)
        return kiln_diag_set(d, rc, "%s: %s", path, rd.msg);
    rc = kiln_json_parse(text, n, path, out, d);
    free(text);
    return rc;
}

void kiln_json_free(KilnJson *root)
{
    free(root); /* the KilnJsonDoc it begins */
}

size_t kiln_json_bytes(const KilnJson *root)
{
    return root ? ((const KilnJsonDoc *)root)->bytes : 0;
}

void kiln_json_where(const KilnJson *root, const KilnJson *v, int *line, int *col)
{
    const KilnJsonDoc *doc = (const KilnJsonDoc *)root;
    size_t o = v->at, w = o / 64;
    if (!doc->nl || o >= doc->text_len) {
        *line = 1;
        *col = (int)o + 1;
        return;
    }
    uint64_t before = doc->nl[w] & ((1ull << (o % 64)) - 1);
    size_t n = doc->nl_before[o / KILN_JSON_NL_BLOCK] + (size_t)__builtin_popcountll(before);
    for (size_t i = o / KILN_JSON_NL_BLOCK * (KILN_JSON_NL_BLOCK / 64); i < w; i++)
        n += (size_t)__builtin_popcountll(doc->nl[i]);
    size_t start = 0; /* of o's line: after the newline before it */
    for (size_t i = w + 1; i-- > 0; before = i ? doc->nl[i - 1] : 0)
        if (before) {
            start = i * 64 + (size_t)(63 - __builtin_clzll(before)) + 1;
            break;
        }
    *line = (int)n + 1;
    *col = (int)(o - start) + 1;
}

const KilnJson *kiln_json_get(const KilnJson *obj, const char *key)
{
    if (!obj || obj->kind != KILN_JSON_OBJECT)
        return NULL;
    for (size_t i = 0; i < obj->len; i++)
        if (strcmp(kiln_json_key(obj, i), key) == 0)
            return &obj->items[i];
    return NULL;
}

const char *kiln_json_key(const KilnJson *obj, size_t i)
{
    if (obj->kind != KILN_JSON_OBJECT || i >= obj->len)
        return NULL; /* only an object has keys, after its members */
    return ((const char *const *)(obj->items + obj->len))[i];
}

double kiln_json_num(const KilnJson *v)
{
    if (!v || v->kind != KILN_JSON_NUMBER)
        return 0;
    return v->is_int ? (double)v->i : v->real;
}

const char *kiln_json_kind_name(KilnJsonKind k)
{
    static const char *names[] = {"null", "boolean", "number", "string", "array", "object"};
    return (unsigned)k < sizeof names / sizeof *names ? names[k] : "?";
}
