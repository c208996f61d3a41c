/* api/compile.c — kernel IR -> canonical kernel -> cache key -> (cached) object -> JIT. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "compile.h"
#include "ir/numerics.h"
#include "ir/outliers.h"

struct KilnCompiler {
    KilnCache *cache;
    KilnCpuJit *jit;
    int nloaded;
    char (*loaded)[64]; /* symbols already added to the JIT */
};

int kiln_kernel_canon(const KilnFunc *f, KilnModule *m, KilnFunc **out, KilnDiag *d)
{
    const KilnInst *g = kiln_find_qgemm(f);
    if (!g)
        return kiln_diag_set(d, KILN_EINPUT, "func @\"%s\": no qgemm to compile", f->name);
    const KilnType *wt = &f->values[g->ops[1]].type;
    const KilnType *yt = &f->values[g->result].type;
    int64_t N = wt->dim[0], K = wt->dim[1];
    KilnFunc *k = kiln_func_new(m, "kernel");
    for (int i = 0; i < f->nattrs; i++) /* the target and its traits pick the layout */
        if (!strcmp(f->attrs[i].key, "target") || !strcmp(f->attrs[i].key, "tune"))
            k->attrs[k->nattrs++] = f->attrs[i];
    int x = kiln_func_param(k, "x", kiln_type2(KILN_F32, 1, K));
    int w = kiln_emit(k, KILN_OP_WEIGHT, NULL, 0, kiln_type2(KILN_F32, N, K), "w");
    kiln_set_str(k, kiln_last(k), "name", "w");
    KilnType qt = *wt;
    /* an f32 weight (a layer the recipe leaves unquantized) is prepacked as it is */
    int q = qt.q.fmt == KILN_QF_NONE ? w : kiln_emit(k, KILN_OP_QUANTIZE, &w, 1, qt, "wq");
    const KilnAttr *lay = kiln_get(g, "layout");
    int p = kiln_emit(k, KILN_OP_PREPACK, &q, 1, qt, "wp");
    kiln_set_str(k, kiln_last(k), "layout", lay ? lay->s : "");
    /* with outliers the kernel is the int8 part alone: no bias, no activation, f32 out
     * (the f32 columns and the epilogue run after it, ir/outliers.h) */
    bool side = kiln_qgemm_outlier_w(g) >= 0;
    int ops[3] = {x, p, -1}, nops = 2;
    if (!side && kiln_qgemm_bias(g) >= 0) {
        ops[2] = kiln_emit(k, KILN_OP_WEIGHT, NULL, 0, kiln_type1(KILN_F32, N), "b");
        kiln_set_str(k, kiln_last(k), "name", "b");
        nops = 3;
    }
    KilnType ot = *yt;
    ot.dim[0] = 1;
    if (side)
        ot.dt = KILN_F32;
    int y = kiln_emit(k, KILN_OP_QGEMM, ops, nops, ot, "y");
    KilnInst *kg = kiln_last(k);
    for (int i = 0; i < g->nattrs; i++) {
        const char *key = g->attrs[i].key;
        if (!strcmp(key, "why")) /* the reason is for people, not the kernel */
            continue;
        if (side && (!strcmp(key, "outliers") || !strcmp(key, "epilogue")))
            continue;
        kg->attrs[kg->nattrs++] = g->attrs[i];
    }
    kiln_emit(k, KILN_OP_RETURN, &y, 1, (KilnType){0}, NULL);
    *out = k;
    return 0;
}

int kiln_compiler_new(const char *cache_dir, KilnCompiler **out, KilnDiag *d)
{
    KilnCompiler *c = calloc(1, sizeof *c);
    if (!c)
        return kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
    /* A cache that cannot be opened or written costs speed, not correctness: say so
     * (once a process, however many compilers it makes) and compile in memory. */
    static atomic_flag said = ATOMIC_FLAG_INIT;
    if (kiln_cache_open(cache_dir, &c->cache, d)) {
        char buf[1400];
        if (!atomic_flag_test_and_set(&said))
            fprintf(stderr, "kiln: warning: kernel cache disabled, compiling kernels in memory: %s\n",
                    kiln_diag_format(d, buf, sizeof buf));
        memset(d, 0, sizeof *d);
        c->cache = NULL;
    } else if (kiln_cache_readonly(c->cache) && !atomic_flag_test_and_set(&said)) {
        fprintf(stderr, "kiln: note: kernel cache %s is read-only: using its kernels, compiling "
                        "new ones in memory\n", kiln_cache_dir(c->cache));
    }
    int rc = kiln_cpu_jit_new(&c->jit, d);
    if (rc) {
        kiln_compiler_free(c);
        return rc;
    }
    *out = c;
    return 0;
}

void kiln_compiler_free(KilnCompiler *c)
{
    if (!c)
        return;
    if (c->jit)
        kiln_cpu_jit_free(c->jit);
    if (c->cache)
        kiln_cache_close(c->cache);
    free(c->loaded);
    free(c);
}

char *kiln_kernel_key(const KilnModule *canon, const char *gen, size_t *len, char symbol[64])
{
    char *text = kiln_print_module_str(canon);
    if (!text)
        return NULL;
    size_t n = strlen(text) + strlen(gen) + 64;
    char *key = malloc(n);
    if (key) {
        *len = (size_t)snprintf(key, n, "kiln %s\n%s\n%s", KILN_VERSION, gen, text);
        uint8_t h[32];
        char hex[65];
        kiln_sha256(key, *len, h);
        kiln_sha256_hex(h, hex);
        snprintf(symbol, 64, "kiln_qgemm_%.16s", hex);
    }
    free(text);
    return key;
}

static char cpu_gen[96];
static pthread_once_t cpu_gen_once = PTHREAD_ONCE_INIT;
static void make_cpu_gen(void)
{
    snprintf(cpu_gen, sizeof cpu_gen, "llvm %s\nabi qgemm-1\ncodegen %d", kiln_cpu_llvm_version(),
             KILN_CPU_CODEGEN_REV);
}

const char *kiln_cpu_key_gen(void)
{
    pthread_once(&cpu_gen_once, make_cpu_gen);
    return cpu_gen;
}

static int object_for(KilnCompiler *c, const KilnFunc *f, KilnFunc **canon, KilnModule *km,
                      void **obj, size_t *len, char symbol[64], bool *hit, KilnDiag *d)
{
    int rc = kiln_kernel_canon(f, km, canon, d);
    if (rc)
        return rc;
    size_t klen = 0;
    char *key = kiln_kernel_key(km, kiln_cpu_key_gen(), &klen, symbol);
    if (!key)
        return kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
    rc = c->cache ? kiln_cache_get(c->cache, key, klen, obj, len, d) : 1;
    if (rc == 0) {
        *hit = true;
    } else if (rc == 1) {
        *hit = false;
        rc = kiln_cpu_emit_object(*canon, symbol, obj, len, d);
        if (!rc && c->cache && kiln_cache_put(c->cache, key, klen, *obj, *len, d)) {
            char buf[1400];
            fprintf(stderr, "kiln: warning: could not store kernel in the cache%s: %s\n",
                    kiln_cache_readonly(c->cache) ? " (read-only from now on)" : "",
                    kiln_diag_format(d, buf, sizeof buf));
            memset(d, 0, sizeof *d);
        }
    }
    free(key);
    return rc;
}

int kiln_compile_object(KilnCompiler *c, const KilnFunc *f, void **obj, size_t *len,
                        char symbol[64], bool *hit, KilnDiag *d)
{
    KilnModule *km = kiln_module_new();
    KilnFunc *canon;
    int rc = object_for(c, f, &canon, km, obj, len, symbol, hit, d);
    kiln_module_free(km);
    return rc;
}

int kiln_compile_qgemm(KilnCompiler *c, const KilnFunc *f, KilnCompiled *out, KilnDiag *d)
{
    memset(out, 0, sizeof *out);
    double t0 = kiln_now_ms();
    KilnModule *km = kiln_module_new();
    KilnFunc *canon;
    void *obj = NULL;
    size_t len = 0;
    int rc = object_for(c, f, &canon, km, &obj, &len, out->symbol, &out->cache_hit, d);
    if (!rc)
        rc = kiln_layout_for(kiln_find_qgemm(canon), canon, &out->layout, d);
    bool loaded = false;
    for (int i = 0; !rc && i < c->nloaded; i++)
        loaded |= !strcmp(c->loaded[i], out->symbol);
    if (!rc && !loaded) {
        rc = kiln_cpu_jit_add_object(c->jit, obj, len, d);
        if (!rc) {
            char(*l)[64] = realloc(c->loaded, (size_t)(c->nloaded + 1) * sizeof *l);
            if (!l)
                rc = kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
            else {
                c->loaded = l;
                memcpy(c->loaded[c->nloaded++], out->symbol, 64);
            }
        }
    }
    void *fn = NULL;
    if (!rc)
        rc = kiln_cpu_jit_lookup(c->jit, out->symbol, &fn, d);
    out->fn = (KilnQGemmFn)fn;
    out->compile_ms = kiln_now_ms() - t0;
    free(obj);
    kiln_module_free(km);
    return rc;
}

int kiln_calibrate_static(KilnFunc *f, const float *x, int64_t n)
{
    KilnInst *g = (KilnInst *)kiln_find_qgemm(f);
    KilnAttr *act = g ? (KilnAttr *)kiln_get(g, "act") : NULL;
    if (!act || act->q.dynamic || act->q.scale != 0)
        return 0;
    /* outlier columns stay out of the int8 activations, so out of their scale too */
    const KilnAttr *o = kiln_get(g, "outliers");
    float *xz = NULL;
    if (o && o->kind == KILN_ATTR_INTS) {
        int64_t K = f->values[g->ops[0]].type.dim[1];
        if (!(xz = malloc(sizeof(float) * (size_t)(n > 0 ? n : 1))))
            return -1;
        kiln_outlier_zero_cols(x, K, o->ints, o->nints, 0, n / K, xz);
        x = xz;
    }
    KilnQParams p = kiln_calib_static(&act->q, x, n);
    free(xz);
    act->q.scale = p.scale;
    act->q.zero = p.zero;
    return 1;
}
