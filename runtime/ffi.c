/* runtime/ffi.c — calling a kernel whose signature is only known from a manifest's
 * "args" list, through libffi. */
#include <ffi.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/runtime.h"

struct KilnFfiSig {
    ffi_cif cif;
    int nargs;
    ffi_type **types;
};

/* Maps a C type text to its libffi type; NULL when not supported. */
static ffi_type *type_of(const char *t)
{
    size_t n = strlen(t);
    while (n && (t[n - 1] == ' ' || t[n - 1] == '\t'))
        n--;
    while (n && (*t == ' ' || *t == '\t'))
        t++, n--;
    if (n && t[n - 1] == '*')
        return &ffi_type_pointer;
    static const struct {
        const char *name;
        ffi_type *type;
    } known[] = {
        {"int64_t", &ffi_type_sint64},
        {"int32_t", &ffi_type_sint32},
        {"float", &ffi_type_float},
        {"double", &ffi_type_double},
    };
    for (size_t i = 0; i < sizeof known / sizeof *known; i++)
        if (strlen(known[i].name) == n && memcmp(known[i].name, t, n) == 0)
            return known[i].type;
    return NULL;
}

int kiln_ffi_sig_new(const KilnJson *args, KilnFfiSig **out, KilnDiag *d)
{
    *out = NULL;
    if (!args || args->kind != KILN_JSON_ARRAY)
        return kiln_diag_set(d, KILN_EINPUT, "kernel \"args\" must be an array, got %s",
                             args ? kiln_json_kind_name(args->kind) : "nothing");
    if (args->len > 64)
        return kiln_diag_set(d, KILN_EINPUT, "kernel has %zu args; at most 64 supported",
                             (size_t)args->len);
    KilnFfiSig *s = calloc(1, sizeof *s);
    if (!s || !(s->types = calloc(args->len + 1, sizeof *s->types))) {
        free(s);
        return kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
    }
    s->nargs = (int)args->len;
    for (size_t i = 0; i < args->len; i++) {
        const KilnJson *a = &args->items[i];
        const KilnJson *name = kiln_json_get(a, "name");
        const KilnJson *type = kiln_json_get(a, "type");
        const char *nm = name && name->kind == KILN_JSON_STRING ? name->str : "?";
        int rc = 0;
        if (a->kind != KILN_JSON_OBJECT || !type || type->kind != KILN_JSON_STRING)
            rc = kiln_diag_set(d, KILN_EINPUT,
                               "kernel arg %zu must be an object {\"name\": ..., \"type\": "
                               "\"<C type>\"}",
                               i);
        else if (!(s->types[i] = type_of(type->str)))
            rc = kiln_diag_set(d, KILN_EINPUT,
                               "kernel arg %zu ('%s') has unsupported type '%s' (supported: "
                               "int64_t, int32_t, float, double, and pointers ending in '*')",
                               i, nm, type->str);
        if (rc) {
            kiln_ffi_sig_free(s);
            return rc;
        }
    }
    if (ffi_prep_cif(&s->cif, FFI_DEFAULT_ABI, (unsigned)s->nargs, &ffi_type_void, s->types) !=
        FFI_OK) {
        kiln_ffi_sig_free(s);
        return kiln_diag_set(d, KILN_EINTERNAL, "libffi could not prepare the call signature");
    }
    *out = s;
    return 0;
}

int kiln_ffi_sig_nargs(const KilnFfiSig *s) { return s->nargs; }

void kiln_ffi_sig_call(const KilnFfiSig *s, void *fn, void **arg_values)
{
    /* ffi_call's cif is not modified by the call, but its prototype is non-const. */
    ffi_call((ffi_cif *)&s->cif, FFI_FN(fn), NULL, arg_values);
}

void kiln_ffi_sig_free(KilnFfiSig *s)
{
    if (!s)
        return;
    free(s->types);
    free(s);
}

int kiln_ffi_call(void *fn, const KilnJson *args, void **arg_values, KilnDiag *d)
{
    if (!fn)
        return kiln_diag_set(d, KILN_EINPUT, "kiln_ffi_call: no function");
    KilnFfiSig *s;
    int rc = kiln_ffi_sig_new(args, &s, d);
    if (rc)
        return rc;
    kiln_ffi_sig_call(s, fn, arg_values);
    kiln_ffi_sig_free(s);
    return 0;
}
