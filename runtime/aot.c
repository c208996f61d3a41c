/* runtime/aot.c — loading an AOT kernel library: read DIR/manifest.json, check it,
 * dlopen the library it names and look kernels up by name. */
#include <dlfcn.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "runtime/runtime.h"

struct KilnAot {
    char *dir, *manifest_path, *lib_path;
    KilnJson *manifest;
    const char *target, *version;
    void *lib;
    int nkernels;
    KilnAotKernel *kernels;
    void **fns; /* dlsym results, filled on first lookup */
};

/* Field readers: each records a clear "FILE: kernels[i]: field ..." error. */
typedef struct {
    const char *path;
    const KilnJson *root; /* the manifest, for line and column */
    int index;            /* -1 at top level */
    KilnDiag *d;
} Ctx;

static int field_err(const Ctx *c, const char *key, const char *what, const KilnJson *v)
{
    char where[64] = "";
    if (c->index >= 0)
        snprintf(where, sizeof where, "kernels[%d]: ", c->index);
    if (v) {
        int line, col;
        kiln_json_where(c->root, v, &line, &col);
        return kiln_diag_set(c->d, KILN_EINPUT, "%s:%d:%d: %s\"%s\" %s, got %s", c->path, line,
                             col, where, key, what, kiln_json_kind_name(v->kind));
    }
    return kiln_diag_set(c->d, KILN_EINPUT, "%s: %smissing \"%s\" (%s)", c->path, where, key,
                         what);
}

static int get_str(const Ctx *c, const KilnJson *o, const char *key, bool required,
                   const char **out)
{
    const KilnJson *v = kiln_json_get(o, key);
    *out = "";
    if (!v && !required)
        return 0;
    if (!v || v->kind != KILN_JSON_STRING)
        return field_err(c, key, "must be a string", v);
    *out = v->str;
    return 0;
}

static int get_int(const Ctx *c, const KilnJson *o, const char *key, bool required,
                   int64_t lo, int64_t *out)
{
    const KilnJson *v = kiln_json_get(o, key);
    *out = 0;
    if (!v && !required)
        return 0;
    if (!v || v->kind != KILN_JSON_NUMBER || !v->is_int || v->i < lo)
        return field_err(c, key, lo > 0 ? "must be a positive integer"
                                        : "must be a non-negative integer", v);
    *out = v->i;
    return 0;
}

static bool is_c_ident(const char *s)
{
    if (!*s || (*s >= '0' && *s <= '9'))
        return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
              (*s >= '0' && *s <= '9') || *s == '_'))
            return false;
    return true;
}

static int read_kernel(const Ctx *c, const KilnJson *o, KilnAotKernel *k)
{
    if (o->kind != KILN_JSON_OBJECT)
        return field_err(c, "kernel", "must be an object", o);
    int64_t nr = 0;
    int rc = get_str(c, o, "name", true, &k->name) || get_str(c, o, "symbol", true, &k->symbol) ||
             get_str(c, o, "layer", false, &k->layer) ||
             get_str(c, o, "recipe", false, &k->recipe) ||
             get_str(c, o, "layout", false, &k->layout) ||
             get_str(c, o, "out_dtype", false, &k->out_dtype) ||
             get_str(c, o, "act_dtype", false, &k->act_dtype) ||
             get_str(c, o, "epilogue", false, &k->epilogue) ||
             get_int(c, o, "M", false, 0, &k->M) || get_int(c, o, "N", true, 1, &k->N) ||
             get_int(c, o, "K", true, 1, &k->K) || get_int(c, o, "nr", true, 1, &nr) ||
             get_int(c, o, "pack_bytes", false, 0, &k->pack_bytes) ||
             get_int(c, o, "scratch_per_row", false, 0, &k->scratch_per_row);
    if (rc)
        return KILN_EINPUT;
    if (nr > 4096)
        return field_err(c, "nr", "must be at most 4096", kiln_json_get(o, "nr"));
    /* kiln_lower_layer's shape limits: the layout's byte counts (N x K codes, scales per
     * group) then stay far inside 64 bits for whatever reads this manifest */
    int64_t nk;
    if (k->M > ((int64_t)1 << 40) || k->N > ((int64_t)1 << 40) || k->K > ((int64_t)1 << 40) ||
        __builtin_mul_overflow(k->N, k->K, &nk) || nk > ((int64_t)1 << 50))
        return kiln_diag_set(c->d, KILN_EINPUT,
                             "%s: kernels[%d]: shape M=%lld N=%lld K=%lld is beyond kiln's limits "
                             "(each at most 2^40, N x K at most 2^50)",
                             c->path, c->index, (long long)k->M, (long long)k->N, (long long)k->K);
    k->nr = (int)nr;
    if (!is_c_ident(k->symbol))
        return kiln_diag_set(c->d, KILN_EINPUT,
                             "%s: kernels[%d]: symbol '%s' is not a C identifier", c->path,
                             c->index, k->symbol);
    const KilnJson *v = kiln_json_get(o, "bias");
    if (v && v->kind != KILN_JSON_BOOL)
        return field_err(c, "bias", "must be true or false", v);
    k->bias = v && v->b;
    v = kiln_json_get(o, "weight");
    if (v && v->kind != KILN_JSON_OBJECT)
        return field_err(c, "weight", "must be an object", v);
    k->weight = v;
    v = kiln_json_get(o, "act");
    if (v && v->kind != KILN_JSON_OBJECT && v->kind != KILN_JSON_NULL)
        return field_err(c, "act", "must be an object or null", v);
    k->act = v && v->kind == KILN_JSON_OBJECT ? v : NULL;
    k->args = kiln_json_get(o, "args");
    if (!k->args)
        return field_err(c, "args", "the kernel's C arguments", NULL);
    rc = kiln_ffi_sig_new(k->args, &k->sig, c->d);
    if (rc) {
        char msg[sizeof c->d->msg];
        snprintf(msg, sizeof msg, "%s", c->d->msg);
        return kiln_diag_set(c->d, rc, "%s: kernel '%s': %s", c->path, k->name, msg);
    }
    return 0;
}

static int read_manifest(KilnAot *a, KilnDiag *d)
{
    Ctx c = {a->manifest_path, a->manifest, -1, d};
    const KilnJson *m = a->manifest;
    if (m->kind != KILN_JSON_OBJECT)
        return field_err(&c, "manifest", "must be an object", m);
    const char *lib;
    if (get_str(&c, m, "library", true, &lib) || get_str(&c, m, "target", false, &a->target) ||
        get_str(&c, m, "kiln_version", false, &a->version))
        return KILN_EINPUT;
    if (!*lib || lib[0] == '/' || strstr(lib, ".."))
        return kiln_diag_set(d, KILN_EINPUT,
                             "%s: \"library\" must be a file name relative to %s, got '%s'",
                             a->manifest_path, a->dir, lib);
    size_t n = strlen(a->dir) + strlen(lib) + 2;
    if (!(a->lib_path = malloc(n)))
        return kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
    snprintf(a->lib_path, n, "%s/%s", a->dir, lib);

    const KilnJson *ks = kiln_json_get(m, "kernels");
    if (!ks || ks->kind != KILN_JSON_ARRAY)
        return field_err(&c, "kernels", "must be an array", ks);
    if (ks->len > 1000000)
        return kiln_diag_set(d, KILN_EINPUT, "%s: too many kernels", a->manifest_path);
    a->kernels = calloc(ks->len ? ks->len : 1, sizeof *a->kernels);
    a->fns = calloc(ks->len ? ks->len : 1, sizeof *a->fns);
    if (!a->kernels || !a->fns)
        return kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
    for (size_t i = 0; i < ks->len; i++) {
        c.index = (int)i;
        a->nkernels = (int)i + 1; /* so close() frees the signatures built so far */
        int rc = read_kernel(&c, &ks->items[i], &a->kernels[i]);
        if (rc)
            return rc;
        for (size_t j = 0; j < i; j++)
            if (strcmp(a->kernels[j].name, a->kernels[i].name) == 0)
                return kiln_diag_set(d, KILN_EINPUT, "%s: kernels[%zu] and kernels[%zu] are both "
                                     "named '%s'", a->manifest_path, j, i, a->kernels[i].name);
    }
    return 0;
}

/* A library for a target whose kernels may use tiles (the amx level). */
static bool aot_needs_amx(const char *target)
{
    KilnTarget t;
    KilnDiag d = {0};
    return kiln_target_lookup(target, &t, &d) == 0 && t.kind == KILN_TGT_CPU &&
           (t.isa & KILN_ISA_AMX) != 0;
}

int kiln_aot_open(const char *dir, KilnAot **out, KilnDiag *d)
{
    *out = NULL;
    if (!dir || !*dir)
        return kiln_diag_set(d, KILN_EINPUT, "kiln_aot_open: no directory");
    KilnAot *a = calloc(1, sizeof *a);
    if (!a)
        return kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
    size_t n = strlen(dir) + sizeof "/manifest.json";
    a->dir = strdup(dir);
    a->manifest_path = malloc(n);
    if (!a->dir || !a->manifest_path) {
        kiln_aot_close(a);
        return kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
    }
    snprintf(a->manifest_path, n, "%s/manifest.json", dir);
    int rc = kiln_json_parse_file(a->manifest_path, &a->manifest, d);
    if (!rc)
        rc = read_manifest(a, d);
    if (!rc && *a->target && kiln_rt_cpu_supports(a->target) == 0) {
        KilnTarget t;
        KilnDiag td = {0};
        const char *why = kiln_target_lookup(a->target, &t, &td) ? NULL : kiln_target_cannot_run(&t);
        rc = kiln_diag_set(d, KILN_EINPUT,
                           "AOT library in %s was built for target '%s', which this CPU does "
                           "not support (%s); rebuild it with `kiln aot` for this machine",
                           dir, a->target, why ? why : "unknown target");
    }
    if (!rc && *a->target && aot_needs_amx(a->target)) /* tile state before any kernel runs */
        rc = kiln_host_amx_enable(d);
    int fd = rc ? -1 : kiln_rt_open_regular(a->lib_path, "AOT library", 0, NULL, NULL);
    if (!rc && fd < 0) /* dlopen would block on a FIFO */
        rc = kiln_diag_set(d, KILN_EINPUT, "cannot load AOT library %s named in %s: %s",
                           a->lib_path, a->manifest_path,
                           errno == EINVAL ? "not a regular file" : strerror(errno));
    if (fd >= 0)
        close(fd);
    if (!rc) {
        dlerror();
        a->lib = dlopen(a->lib_path, RTLD_NOW | RTLD_LOCAL);
        if (!a->lib) {
            const char *e = dlerror();
            rc = kiln_diag_set(d, KILN_EINPUT, "cannot load AOT library %s named in %s: %s",
                               a->lib_path, a->manifest_path, e ? e : "unknown error");
        }
    }
    if (rc) {
        kiln_aot_close(a);
        return rc;
    }
    *out = a;
    return 0;
}

int kiln_aot_nkernels(const KilnAot *a) { return a->nkernels; }

const KilnAotKernel *kiln_aot_kernel(const KilnAot *a, int i)
{
    return i >= 0 && i < a->nkernels ? &a->kernels[i] : NULL;
}

int kiln_aot_find(const KilnAot *a, const char *kernel_name)
{
    for (int i = 0; i < a->nkernels; i++)
        if (strcmp(a->kernels[i].name, kernel_name) == 0)
            return i;
    return -1;
}

const char *kiln_aot_target(const KilnAot *a) { return a->target; }
const char *kiln_aot_kiln_version(const KilnAot *a) { return a->version; }
const char *kiln_aot_library_path(const KilnAot *a) { return a->lib_path; }
const KilnJson *kiln_aot_manifest(const KilnAot *a) { return a->manifest; }

int kiln_aot_lookup(KilnAot *a, const char *kernel_name, void **fn, KilnDiag *d)
{
    *fn = NULL;
    int i = kiln_aot_find(a, kernel_name);
    if (i < 0)
        return kiln_diag_set(d, KILN_EINPUT, "%s has no kernel named '%s' (it lists %d kernel%s)",
                             a->manifest_path, kernel_name, a->nkernels,
                             a->nkernels == 1 ? "" : "s");
    if (a->fns[i]) {
        *fn = a->fns[i];
        return 0;
    }
    dlerror();
    void *f = dlsym(a->lib, a->kernels[i].symbol);
    if (!f)
        return kiln_diag_set(d, KILN_EINPUT,
                             "AOT library %s has no symbol '%s' named in manifest.json (kernel "
                             "'%s'); the library and manifest do not match, rebuild with "
                             "`kiln aot`",
                             a->lib_path, a->kernels[i].symbol, kernel_name);
    a->fns[i] = f;
    *fn = f;
    return 0;
}

int kiln_aot_call(KilnAot *a, const char *kernel_name, void **arg_values, KilnDiag *d)
{
    void *fn;
    int rc = kiln_aot_lookup(a, kernel_name, &fn, d);
    if (rc)
        return rc;
    kiln_ffi_sig_call(a->kernels[kiln_aot_find(a, kernel_name)].sig, fn, arg_values);
    return 0;
}

void kiln_aot_close(KilnAot *a)
{
    if (!a)
        return;
    if (a->lib)
        dlclose(a->lib);
    for (int i = 0; i < a->nkernels; i++)
        kiln_ffi_sig_free(a->kernels[i].sig);
    free(a->kernels);
    free(a->fns);
    kiln_json_free(a->manifest);
    free(a->lib_path);
    free(a->manifest_path);
    free(a->dir);
    free(a);
}

int kiln_rt_cpu_supports(const char *target)
{
    if (!target)
        return -1;
    if (strcmp(target, "x86-64") == 0 || strcmp(target, "generic") == 0 ||
        strcmp(target, "scalar") == 0)
        return 1;
    /* the one target table (ir/target.h): avx512 is x86-64-v4 plus VNNI and BF16,
     * whose kernels use vpdpbusd and vdpbf16ps, so all of them are required;
     * avx512vnni needs VNNI only */
    KilnTarget t;
    KilnDiag d = {0};
    if (kiln_target_lookup(target, &t, &d) != 0 || t.kind != KILN_TGT_CPU)
        return -1;
    return kiln_target_host_runs(&t) ? 1 : 0;
}
