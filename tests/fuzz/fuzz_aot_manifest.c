/* tests/fuzz/fuzz_aot_manifest.c — libFuzzer harness for the AOT manifest reader: the
 * input is a manifest.json, read exactly as kiln_aot_open reads it (runtime/aot.c's
 * read_manifest, included here so the harness needs no library to dlopen), then every
 * kernel's layout is rebuilt from its entry (kiln_aot_layout) as a program packing
 * weights for it would; and every parsed value's position (kiln_json_where) against the
 * text. Built and run by scripts/fuzz.sh (README.md). */
#include "runtime/aot.c"

#include "runtime/aot_layout.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Every value of a parsed document: its offset is where its text starts and
 * kiln_json_where counts its line and column as the text does (inputs up to 64 KiB). */
static void check_json_value(const KilnJson *root, const KilnJson *v, const char *text,
                             size_t size)
{
    static const char first[] = "nt0\"[{";
    char c = v->at < size ? text[v->at] : 0;
    bool ok = v->kind == KILN_JSON_NUMBER ? (c == '-' || (c >= '0' && c <= '9'))
              : v->kind == KILN_JSON_BOOL ? c == (v->b ? 't' : 'f')
                                          : c == first[v->kind];
    int line = 1, col = 1, wl, wc;
    for (size_t i = 0; ok && i < v->at; i++, col++)
        if (text[i] == '\n')
            line++, col = 0;
    kiln_json_where(root, v, &wl, &wc);
    if (!ok || wl != line || wc != col)
        abort();
    if (v->kind == KILN_JSON_ARRAY || v->kind == KILN_JSON_OBJECT)
        for (size_t i = 0; i < v->len; i++)
            check_json_value(root, &v->items[i], text, size);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    KilnAot *a = calloc(1, sizeof *a);
    if (!a)
        return 0;
    a->dir = strdup("fuzz");
    a->manifest_path = strdup("fuzz/manifest.json");
    KilnDiag d = {0};
    int rc = kiln_json_parse((const char *)data, size, a->manifest_path, &a->manifest, &d);
    if (rc == 0 && kiln_json_bytes(a->manifest) >
                       KILN_JSON_BUDGET_BASE + KILN_JSON_BUDGET_PER_BYTE * size)
        abort(); /* a document within its budget */
    if (rc == 0 && size <= 65536)
        check_json_value(a->manifest, a->manifest, (const char *)data, size);
    if (rc == 0)
        rc = read_manifest(a, &d);
    if (rc != 0) {
        if (rc != KILN_EINPUT || d.code != KILN_EINPUT || !d.msg[0])
            abort(); /* a bad manifest must be an input error with a message */
    } else {
        for (int i = 0; i < kiln_aot_nkernels(a); i++) {
            const KilnAotKernel *k = kiln_aot_kernel(a, i);
            if (kiln_aot_find(a, k->name) != i)
                abort(); /* names are unique, so the lookup finds this one */
            KilnLayout l;
            KilnDiag ld = {0};
            if (kiln_aot_layout(a, i, &l, &ld) != 0 && (ld.code != KILN_EINPUT || !ld.msg[0]))
                abort();
        }
    }
    kiln_aot_close(a);
    return 0;
}
