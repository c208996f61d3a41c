/* tools/cmd_aot.c — `kiln aot`: compile a recipe's kernels for given layer shapes ahead of
 * time into DIR/libkiln_kernels.so, DIR/kiln_kernels.h and DIR/manifest.json, which a
 * program uses with the runtime alone (no LLVM, no Lua); for sm_XX targets PTX + cubin
 * per kernel (tools/aot_gpu.c). docs/jit-aot.md ("AOT"). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "aot.h"
#include "api/compile.h"
#include "frontend/recipe.h"
#include "passes/passes.h"
#include "tool.h"

#define MAX_LAYERS 100000

/* One layer to build: from the shapes file (or --shape). */
typedef struct AotLayer {
    char *name;
    int64_t M, N, K;
    int line;   /* shapes file line, 0 for --shape */
    int kernel; /* index into kernels, -1 when the recipe leaves the layer in f32 */
} AotLayer;

/* One distinct kernel (layers whose canonical kernel IR is the same share it). */
typedef struct AotKernel {
    char symbol[64];
    KilnLayout lay;
    char pass_layout[64]; /* the qgemm's `layout` attr from pick_layout */
    char *why;
    int first_layer, nlayers;
    bool calibrated, cache_hit;
    size_t obj_bytes;
    AotGpuKernel gpu; /* sm_XX targets: instead of lay */
} AotKernel;

typedef struct Aot {
    const ToolArgs *a;
    const char *dir;
    KilnRecipe *r;     /* the recipe, or NULL for an IR file: */
    KilnModule *irm;   /* its functions, planned once into irplan */
    ToolPlan irplan;
    KilnTarget t;
    AotLayer *layers;
    int nlayers, caplayers;
    AotKernel *kernels;
    int nkernels, capkernels;
    int hits;
} Aot;

/* What the kernels were built from, for the header and the manifest: the recipe's
 * name, or for an IR file its functions' `recipe` attribute, else the file's path. */
static const char *source_name(const Aot *s)
{
    if (s->r)
        return kiln_recipe_name(s->r);
    const KilnAttr *ra = s->irm && s->irm->nfuncs ? kiln_fget(s->irm->funcs[0], "recipe") : NULL;
    return ra && ra->kind == KILN_ATTR_STR && ra->s ? ra->s : s->a->recipe;
}

static int add_layer(Aot *s, const char *name, int64_t M, int64_t N, int64_t K, int line)
{
    if (s->nlayers >= MAX_LAYERS) {
        fprintf(stderr, "kiln aot: more than %d layers\n", MAX_LAYERS);
        return EXIT_INPUT;
    }
    if (s->nlayers == s->caplayers) {
        int cap = s->caplayers ? 2 * s->caplayers : 16;
        AotLayer *l = realloc(s->layers, (size_t)cap * sizeof *l);
        if (!l)
            return EXIT_INTERNAL;
        s->layers = l;
        s->caplayers = cap;
    }
    char *dup = strdup(name);
    if (!dup)
        return EXIT_INTERNAL;
    s->layers[s->nlayers++] = (AotLayer){dup, M, N, K, line, -1};
    return EXIT_OK;
}

/* A bare M,N,K stands for one example layer per rule (as `kiln ir` without --layer). */
static int add_shape(Aot *s, const char *layer, int64_t M, int64_t N, int64_t K, int line)
{
    if (layer)
        return add_layer(s, layer, M, N, K, line);
    for (int i = 0; i < kiln_recipe_nrules(s->r); i++) {
        int e = add_layer(s, kiln_recipe_rule_example(s->r, i), M, N, K, line);
        if (e)
            return e;
    }
    return EXIT_OK;
}

/* Shapes file: one layer a line, `LAYER_NAME M,N,K` or `M,N,K`; '#' starts a comment.
 * A regular file of at most SHAPES_LIMIT bytes (no FIFO, no /dev/zero), read whole. */
#define SHAPES_LIMIT (1u << 20)
#define SHAPES_LINE 4096
static int read_shapes(Aot *s, const char *path)
{
    char *text;
    size_t size;
    KilnDiag d = {0};
    if (kiln_rt_read_file(path, "shapes file", SHAPES_LIMIT, &text, &size, &d)) {
        tool_error(&d);
        return tool_exit_code(d.code);
    }
    int lineno = 0, e = EXIT_OK, before = s->nlayers;
    for (char *p = text, *nl; !e && p < text + size; p = nl + 1) {
        lineno++;
        nl = memchr(p, '\n', (size_t)(text + size - p));
        nl = nl ? nl : text + size;
        char line[SHAPES_LINE];
        if (nl - p > SHAPES_LINE - 2 || memchr(p, '\0', (size_t)(nl - p))) {
            fprintf(stderr, "kiln aot: %s:%d: %s\n", path, lineno,
                    nl - p > SHAPES_LINE - 2 ? "line longer than 4094 characters"
                                             : "NUL byte in the line");
            e = EXIT_INPUT;
            break;
        }
        memcpy(line, p, (size_t)(nl - p));
        line[nl - p] = 0;
        char *hash = strchr(line, '#');
        if (hash)
            *hash = 0;
        char *tok[3];
        int n = 0;
        for (char *t = strtok(line, " \t\r\n"); t; t = strtok(NULL, " \t\r\n"))
            tok[n < 3 ? n : 2] = t, n++;
        if (n == 0)
            continue;
        int64_t M, N, K;
        if (n > 2 || tool_parse_shape(tok[n - 1], &M, &N, &K)) {
            fprintf(stderr, "kiln aot: %s:%d: expected 'LAYER_NAME M,N,K' or 'M,N,K' (integers "
                            "from 1 to 2^31), got '%s%s%s'\n",
                    path, lineno, tok[0], n > 1 ? " " : "", n > 1 ? tok[1] : "");
            e = EXIT_INPUT;
            break;
        }
        char where[4200];
        snprintf(where, sizeof where, "kiln aot: %s:%d: shape", path, lineno);
        e = tool_check_shape(where, M, N, K, true);
        if (!e)
            e = add_shape(s, n == 2 ? tok[0] : NULL, M, N, K, lineno);
    }
    free(text);
    if (!e && s->nlayers == before) {
        fprintf(stderr, "kiln aot: %s: no layers (expected lines 'LAYER_NAME M,N,K' or 'M,N,K')\n",
                path);
        e = EXIT_INPUT;
    }
    return e;
}

static void layer_error(const Aot *s, const AotLayer *l, const KilnDiag *d)
{
    char buf[1400];
    kiln_diag_format(d, buf, sizeof buf);
    if (l->line)
        fprintf(stderr, "kiln aot: %s:%d: layer '%s' (M=%lld N=%lld K=%lld): %s\n",
                s->a->shapes_file, l->line, l->name, (long long)l->M, (long long)l->N,
                (long long)l->K, buf);
    else
        fprintf(stderr, "kiln aot: layer '%s' (M=%lld N=%lld K=%lld): %s\n", l->name,
                (long long)l->M, (long long)l->N, (long long)l->K, buf);
}

/* Plan (static scales calibrated on the batch `kiln run` uses for the same shape and
 * seed, so both agree), compile (through the cache) and keep the object. */
static int build_layer(Aot *s, KilnCompiler *c, int li)
{
    AotLayer *l = &s->layers[li];
    KilnDiag d = {0};
    KilnModule *m = kiln_module_new();
    KilnFunc *f = NULL;
    float *xcal = tool_calib_batch(s->a->seed, TOOL_CALIB_ROWS, l->K);
    KilnPlanLayer plan = {.name = l->name, .M = l->M, .any_m = true, .N = l->N, .K = l->K, .calib_x = xcal,
                          .calib_rows = xcal ? TOOL_CALIB_ROWS : 0};
    void *obj = NULL;
    size_t len = 0;
    int e = EXIT_OK;
    bool hit = false, cal = false;
    char symbol[64];
    /* The outlier split needs an f32 side path and the epilogue after the kernel, which
     * the AOT manifest and runtime do not carry */
    if (s->irm) { /* an IR file's function, planned with the others */
        free(xcal);
        xcal = NULL;
        plan = s->irplan.layers[li];
    }
    bool outliers = s->irm ? plan.qgemm && kiln_qgemm_outlier_w(plan.qgemm) >= 0
                           : kiln_recipe_outliers(s->r, l->name, NULL, NULL);
    int rc = outliers
                 ? kiln_diag_set(&d, KILN_EINPUT,
                                 "layer '%s': its rule has outliers = {...}, which kiln aot does "
                                 "not support yet (the f32 outlier columns and the epilogue run "
                                 "after the int8 kernel, outside the AOT kernel ABI); build the "
                                 "layer with the JIT API (kiln_layer_create) or drop outliers "
                                 "from the rule", l->name)
                 : s->irm ? 0 : kiln_plan_layers(s->r, &s->t, &plan, 1, m, NULL, &d);
    f = plan.f;
    const KilnInst *g = rc ? NULL : plan.qgemm;
    if (!rc && !g) { /* passes that leave a plain matmul: nothing kiln can build */
        if (s->a->verbose)
            printf("  %s: no qgemm after the passes: no kernel\n", l->name);
        goto out;
    }
    cal = plan.calibrated;
    KilnLayout lay = {0};
    AotGpuKernel gk = {0};
    bool gpu = s->t.kind == KILN_TGT_CUDA, is_new = true;
    const char **known = gpu ? calloc((size_t)s->nkernels + 1, sizeof *known) : NULL;
    for (int k = 0; known && k < s->nkernels; k++)
        known[k] = s->kernels[k].symbol;
    if (!rc && gpu)
        rc = known ? tool_aot_gpu_kernel(f, s->t.name, s->dir, known, s->nkernels, symbol,
                                         &is_new, &gk, &d)
                   : kiln_diag_set(&d, KILN_EINTERNAL, "out of memory");
    free(known);
    if (!rc && !gpu)
        rc = kiln_layout_for(g, f, &lay, &d);
    if (!rc && !gpu)
        rc = kiln_compile_object(c, f, &obj, &len, symbol, &hit, &d);
    if (rc) {
        layer_error(s, l, &d);
        e = tool_exit_code(rc);
        goto out;
    }
    for (int k = 0; k < s->nkernels; k++)
        if (!strcmp(s->kernels[k].symbol, symbol)) {
            l->kernel = k;
            s->kernels[k].nlayers++;
            goto out;
        }
    if (s->nkernels == s->capkernels) {
        int cap = s->capkernels ? 2 * s->capkernels : 8;
        AotKernel *ks = realloc(s->kernels, (size_t)cap * sizeof *ks);
        if (!ks) {
            e = EXIT_INTERNAL;
            goto out;
        }
        s->kernels = ks;
        s->capkernels = cap;
    }
    AotKernel *k = &s->kernels[s->nkernels];
    memset(k, 0, sizeof *k);
    memcpy(k->symbol, symbol, sizeof symbol);
    k->lay = lay;
    k->gpu = gk;
    const KilnAttr *pl = kiln_get(g, "layout"), *why = kiln_get(g, "why");
    snprintf(k->pass_layout, sizeof k->pass_layout, "%s", pl ? pl->s : "");
    k->why = strdup(why ? why->s : "");
    k->first_layer = li;
    k->nlayers = 1;
    k->calibrated = cal;
    k->cache_hit = hit;
    k->obj_bytes = len;
    s->hits += hit;
    char path[4400];
    snprintf(path, sizeof path, "%s/obj/%s.o", s->dir, symbol);
    KilnDiag wd = {0};
    if (!gpu && kiln_rt_write_file(path, obj, len, &wd)) {
        fprintf(stderr, "kiln aot: %s\n", wd.msg);
        free(k->why);
        e = EXIT_INPUT;
        goto out;
    }
    l->kernel = s->nkernels++;
    if (s->a->verbose)
        printf("  %s: kernel %s (%s)%s\n", l->name, symbol, gpu ? gk.lay.name : lay.name,
               gpu ? "" : hit ? ", cache hit" : ", cache miss");
out:
    free(obj);
    free(xcal);
    kiln_module_free(m);
    return e;
}

/* Link the objects with the system C compiler ($CC, else cc): there is no linker in
 * the LLVM C API, and the objects only need libm. */
static int link_library(const Aot *s)
{
    const char *cc = getenv("CC");
    if (!cc || !*cc)
        cc = "cc";
    char out[4400], tmp[4400];
    snprintf(out, sizeof out, "%s/libkiln_kernels.so", s->dir);
    snprintf(tmp, sizeof tmp, "%s/.libkiln_kernels.so.%ld.tmp", s->dir, (long)getpid());
    int n = s->nkernels;
    char **argv = calloc((size_t)n + 10, sizeof *argv);
    char **objs = calloc((size_t)n + 1, sizeof *objs);
    if (!argv || !objs) {
        free(argv);
        free(objs);
        return EXIT_INTERNAL;
    }
    int ac = 0;
    argv[ac++] = (char *)cc;
    argv[ac++] = "-shared";
    argv[ac++] = "-Wl,-z,noexecstack"; /* LLVM objects carry no .note.GNU-stack */
    argv[ac++] = "-Wl,-soname,libkiln_kernels.so";
    argv[ac++] = "-o";
    argv[ac++] = tmp;
    for (int i = 0; i < n; i++) {
        size_t len = strlen(s->dir) + 80;
        objs[i] = malloc(len);
        if (objs[i])
            snprintf(objs[i], len, "%s/obj/%s.o", s->dir, s->kernels[i].symbol);
        argv[ac++] = objs[i] ? objs[i] : "";
    }
    argv[ac++] = "-lm";
    argv[ac] = NULL;
    int e = EXIT_OK;
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        execvp(cc, argv);
        fprintf(stderr, "kiln aot: cannot run the C compiler '%s' to link %s: %s (install a C "
                        "compiler or set CC)\n",
                cc, out, strerror(errno));
        _exit(127);
    }
    int st = 0;
    if (pid < 0 || waitpid(pid, &st, 0) < 0) {
        fprintf(stderr, "kiln aot: cannot start the C compiler '%s': %s\n", cc, strerror(errno));
        e = EXIT_INTERNAL;
    } else if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 127)
            fprintf(stderr, "kiln aot: linking %s with '%s' failed (exit status %d)\n", out, cc,
                    WIFEXITED(st) ? WEXITSTATUS(st) : -1);
        e = EXIT_INPUT;
    } else if (rename(tmp, out)) {
        fprintf(stderr, "kiln aot: cannot rename %s to %s: %s\n", tmp, out, strerror(errno));
        e = EXIT_INPUT;
    }
    if (e)
        unlink(tmp);
    for (int i = 0; i < n; i++)
        free(objs[i]);
    free(objs);
    free(argv);
    return e;
}

/* ------------------------------------------------------------------ header + manifest */

static const char *epi_name(KilnEpilogue e)
{
    return e == KILN_EPI_SILU ? "silu" : e == KILN_EPI_GELU ? "gelu" : "none";
}

static void spec_text(const KilnQuantSpec *q, char *buf, size_t n) { kiln_spec_print(q, buf, n); }

static void kernel_comment(FILE *f, const Aot *s, const AotKernel *k)
{
    const KilnLayout *l = &k->lay;
    char ws[128], as[128];
    spec_text(&l->wspec, ws, sizeof ws);
    fprintf(f, "/* layer%s:", k->nlayers > 1 ? "s" : "");
    for (int i = 0; i < s->nlayers; i++)
        if (s->layers[i].kernel == k - s->kernels)
            fprintf(f, " %s", s->layers[i].name);
    fprintf(f, "\n * N = %lld, K = %lld, layout %s (NR %d, KR %d)\n", (long long)l->N,
            (long long)l->K, l->name, l->NR, l->KR);
    if (l->wspec.fmt == KILN_QF_NONE)
        fprintf(f, " * weights f32 (not quantized by the recipe), activations %s\n",
                kiln_dtype_name(l->act_dtype));
    else if (l->weight_only)
        fprintf(f, " * weights %s {%s}, activations %s (weight-only)\n",
                kiln_dtype_name(l->wdt), ws, kiln_dtype_name(l->act_dtype));
    else {
        spec_text(&l->aspec, as, sizeof as);
        fprintf(f, " * weights %s {%s}, activations %s {%s}%s\n", kiln_dtype_name(l->wdt), ws,
                kiln_dtype_name(l->adt), as, k->calibrated ? " (scale calibrated by kiln aot)" : "");
    }
    fprintf(f, " * epilogue %s%s, out %s; pack_bytes %zu; scratch %zu bytes per row + %zu */\n",
            l->has_bias ? "bias + " : "", epi_name(l->epilogue), kiln_dtype_name(l->out_dt),
            l->pack_bytes, l->scratch_per_row, l->scratch_fixed);
}

static int write_header(const Aot *s, const char *path)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return -1;
    fprintf(f, "/* kiln_kernels.h — written by `kiln aot` (kiln %s) for recipe '%s', target %s.\n"
               " * Kernels of libkiln_kernels.so; manifest.json describes how to prepack their\n"
               " * weights (runtime/aot_layout.h: kiln_aot_layout + kiln_prepack). Each computes\n"
               " * columns [n0, n1) of y[M,N] = epilogue(x[M,K] . W^T + bias) (docs/jit-aot.md). */\n"
               "#ifndef KILN_KERNELS_H\n#define KILN_KERNELS_H\n\n#include <stdint.h>\n\n"
               "#ifdef __cplusplus\nextern \"C\" {\n#endif\n\n",
            KILN_VERSION, source_name(s), s->t.name);
    for (int i = 0; i < s->nkernels; i++) {
        kernel_comment(f, s, &s->kernels[i]);
        fprintf(f, "void %s(const float *x, int64_t M, const void *wpack, const float *bias, "
                   "void *y,\n    int64_t n0, int64_t n1, void *scratch);\n\n",
                s->kernels[i].symbol);
    }
    fprintf(f, "/* X(symbol, N, K, NR, pack_bytes) for every kernel, to build tables. */\n"
               "#define KILN_KERNELS(X) \\\n");
    for (int i = 0; i < s->nkernels; i++) {
        const KilnLayout *l = &s->kernels[i].lay;
        fprintf(f, "    X(%s, %lld, %lld, %d, %zu) \\\n", s->kernels[i].symbol, (long long)l->N,
                (long long)l->K, l->NR, l->pack_bytes);
    }
    fprintf(f, "    /* end */\n#define KILN_KERNELS_COUNT %d\n\n"
               "#ifdef __cplusplus\n}\n#endif\n#endif\n",
            s->nkernels);
    return fclose(f);
}

void tool_aot_jw_spec(KilnJsonWriter *w, const KilnQuantSpec *q, KilnDType storage, bool act,
                    bool calibrated)
{
    char text[128];
    spec_text(q, text, sizeof text);
    kiln_jw_begin_object(w);
    if (q->fmt == KILN_QF_NONE) { /* a layer the recipe leaves in f32: plain f32 weights */
        kiln_jw_kv_str(w, "format", "none");
        kiln_jw_kv_str(w, "dtype", kiln_dtype_name(storage));
        kiln_jw_end_object(w);
        return;
    }
    kiln_jw_kv_str(w, "spec", text);
    kiln_jw_kv_str(w, "format", kiln_qformat_name(q->fmt));
    kiln_jw_kv_str(w, "dtype", kiln_dtype_name(storage));
    kiln_jw_kv_bool(w, "symmetric", q->symmetric);
    kiln_jw_kv_str(w, "granularity", kiln_gran_name(q->gran));
    if (q->gran == KILN_GRAN_GROUP)
        kiln_jw_kv_int(w, "group", q->group);
    kiln_jw_kv_str(w, "calib", q->calib == KILN_CAL_PERCENTILE ? "percentile" : q->calib == KILN_CAL_MSE ? "mse" : "minmax");
    if (q->calib == KILN_CAL_PERCENTILE) {
        kiln_jw_key(w, "pct");
        kiln_jw_double(w, q->pct);
    }
    if (act) {
        kiln_jw_kv_bool(w, "dynamic", q->dynamic);
        if (!q->dynamic) {
            kiln_jw_key(w, "scale");
            kiln_jw_double(w, q->scale);
            kiln_jw_kv_int(w, "zero", q->zero);
            kiln_jw_kv_str(w, "scale_source",
                      calibrated ? "calibrated by kiln aot on a deterministic N(0,1) batch of "
                                   "M x K values (the batch `kiln run --seed S` uses, seed S+1000)"
                                 : "given by the recipe");
        }
    }
    kiln_jw_end_object(w);
}

void tool_aot_jw_operands(KilnJsonWriter *w, const AotOperands *o)
{
    kiln_jw_key(w, "weight");
    tool_aot_jw_spec(w, &o->wspec, o->wdt, false, false);
    kiln_jw_key(w, "act");
    if (o->weight_only)
        kiln_jw_null(w);
    else
        tool_aot_jw_spec(w, &o->aspec, o->adt, true, o->calibrated);
    kiln_jw_kv_str(w, "act_dtype", kiln_dtype_name(o->weight_only ? o->act_dtype : KILN_F32));
    kiln_jw_kv_str(w, "epilogue", epi_name((KilnEpilogue)o->epilogue));
    kiln_jw_kv_bool(w, "bias", o->has_bias);
    kiln_jw_kv_str(w, "out_dtype", kiln_dtype_name(o->out_dt));
}

static void jw_args(KilnJsonWriter *w)
{
    static const char *const args[8][2] = {
        {"x", "const float*"}, {"M", "int64_t"},   {"wpack", "const void*"},
        {"bias", "const float*"}, {"y", "void*"},  {"n0", "int64_t"},
        {"n1", "int64_t"},     {"scratch", "void*"}};
    kiln_jw_key(w, "args");
    kiln_jw_begin_array(w);
    for (int i = 0; i < 8; i++) {
        kiln_jw_begin_object(w);
        kiln_jw_kv_str(w, "name", args[i][0]);
        kiln_jw_kv_str(w, "type", args[i][1]);
        kiln_jw_end_object(w);
    }
    kiln_jw_end_array(w);
}

static void jw_kernel(KilnJsonWriter *w, const Aot *s, const AotKernel *k)
{
    const KilnLayout *l = &k->lay;
    const AotLayer *first = &s->layers[k->first_layer];
    char obj[96];
    snprintf(obj, sizeof obj, "obj/%s.o", k->symbol);
    kiln_jw_begin_object(w);
    kiln_jw_kv_str(w, "name", k->symbol);
    kiln_jw_kv_str(w, "symbol", k->symbol);
    kiln_jw_kv_str(w, "layer", first->name);
    kiln_jw_key(w, "layers");
    kiln_jw_begin_array(w);
    for (int i = 0; i < s->nlayers; i++)
        if (s->layers[i].kernel == k - s->kernels)
            kiln_jw_string(w, s->layers[i].name);
    kiln_jw_end_array(w);
    kiln_jw_kv_str(w, "recipe", source_name(s));
    kiln_jw_kv_int(w, "M", 0); /* any M at run time */
    kiln_jw_kv_int(w, "N", first->N);
    kiln_jw_kv_int(w, "K", first->K);
    if (s->t.kind == KILN_TGT_CUDA) {
        kiln_jw_kv_str(w, "why", k->why);
        tool_aot_gpu_json(w, &k->gpu, k->symbol, k->calibrated);
        kiln_jw_end_object(w);
        return;
    }
    kiln_jw_kv_str(w, "layout", l->name);
    kiln_jw_kv_str(w, "pass_layout", k->pass_layout);
    kiln_jw_kv_str(w, "why", k->why);
    kiln_jw_kv_str(w, "isa", l->isa);
    if (s->t.tune) { /* the traits the layout was chosen for (ir/target.h) */
        char tune[64];
        kiln_jw_kv_str(w, "tune", kiln_tune_str(s->t.tune, tune, sizeof tune));
    }
    if (l->tiles) /* AMX tiles from this M on (ir/layout.h; kiln_aot_layout reads it) */
        kiln_jw_kv_int(w, "amx_min_m", l->tiles_min_m);
    kiln_jw_kv_int(w, "nr", l->NR);
    kiln_jw_kv_int(w, "kr", l->KR);
    kiln_jw_kv_int(w, "pack_bytes", (int64_t)l->pack_bytes);
    kiln_jw_kv_int(w, "scratch_per_row", (int64_t)l->scratch_per_row);
    kiln_jw_kv_int(w, "scratch_fixed", (int64_t)l->scratch_fixed);
    AotOperands ops = {l->wspec, l->wdt, l->weight_only, l->aspec, l->adt, l->act_dtype,
                       (int)l->epilogue, l->has_bias, l->out_dt, k->calibrated};
    tool_aot_jw_operands(w, &ops);
    kiln_jw_kv_str(w, "object", obj);
    kiln_jw_kv_int(w, "object_bytes", (int64_t)k->obj_bytes);
    jw_args(w);
    kiln_jw_end_object(w);
}

static int write_manifest(const Aot *s, const char *path, KilnDiag *d)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return kiln_diag_set(d, KILN_EINPUT, "cannot write %s: %s", path, strerror(errno));
    KilnJsonWriter w;
    kiln_jw_init(&w, f);
    kiln_jw_begin_object(&w);
    kiln_jw_kv_str(&w, "kiln_version", KILN_VERSION);
    bool gpu = s->t.kind == KILN_TGT_CUDA;
    if (!gpu)
        kiln_jw_kv_str(&w, "llvm_version", kiln_cpu_llvm_version());
    kiln_jw_kv_str(&w, "abi", gpu ? "ptx-1" : "qgemm-1");
    kiln_jw_kv_str(&w, "target", s->t.name);
    kiln_jw_kv_str(&w, "recipe", source_name(s));
    kiln_jw_kv_str(&w, "recipe_file", s->a->recipe);
    if (s->t.kind == KILN_TGT_CUDA) {
        KilnDiag nd = {0};
        const char *v = kiln_nvrtc_version(&nd);
        kiln_jw_kv_str(&w, "kind", "cuda"); /* no "library": runtime/cuda.h loads the cubins */
        kiln_jw_kv_str(&w, "nvrtc_version", v ? v : "");
    } else {
        kiln_jw_kv_str(&w, "library", "libkiln_kernels.so");
        kiln_jw_kv_str(&w, "header", "kiln_kernels.h");
    }
    kiln_jw_key(&w, "kernels");
    kiln_jw_begin_array(&w);
    for (int i = 0; i < s->nkernels; i++)
        jw_kernel(&w, s, &s->kernels[i]);
    kiln_jw_end_array(&w);
    kiln_jw_key(&w, "layers");
    kiln_jw_begin_array(&w);
    for (int i = 0; i < s->nlayers; i++) {
        const AotLayer *l = &s->layers[i];
        kiln_jw_begin_object(&w);
        kiln_jw_kv_str(&w, "name", l->name);
        kiln_jw_kv_int(&w, "M", l->M);
        kiln_jw_kv_int(&w, "N", l->N);
        kiln_jw_kv_int(&w, "K", l->K);
        kiln_jw_key(&w, "kernel");
        if (l->kernel >= 0)
            kiln_jw_string(&w, s->kernels[l->kernel].symbol);
        else
            kiln_jw_null(&w); /* not quantized by the recipe: run it in f32 */
        kiln_jw_end_object(&w);
    }
    kiln_jw_end_array(&w);
    kiln_jw_end_object(&w);
    int rc = kiln_jw_finish(&w, d);
    if (fclose(f) && !rc)
        rc = kiln_diag_set(d, KILN_EINPUT, "cannot write %s: %s", path, strerror(errno));
    return rc;
}

/* The outputs, each written beside its final name and renamed into place. */
static int write_outputs(Aot *s)
{
    char path[4400], tmp[4500];
    snprintf(path, sizeof path, "%s/kiln_kernels.h", s->dir);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    if (s->t.kind == KILN_TGT_CPU && (write_header(s, tmp) || rename(tmp, path))) {
        fprintf(stderr, "kiln aot: cannot write %s: %s\n", path, strerror(errno));
        return EXIT_INPUT;
    }
    KilnDiag d = {0};
    snprintf(path, sizeof path, "%s/manifest.json", s->dir);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    if (write_manifest(s, tmp, &d)) {
        tool_error(&d);
        return tool_exit_code(d.code);
    }
    if (rename(tmp, path)) {
        fprintf(stderr, "kiln aot: cannot write %s: %s\n", path, strerror(errno));
        return EXIT_INPUT;
    }
    return EXIT_OK;
}

static int check_args(const ToolArgs *a)
{
    if (a->recipe && tool_is_ir_file(a->recipe)) {
        if (a->out_dir && !a->shapes_file && !a->have_shape && !a->layer)
            return EXIT_OK;
        fputs("kiln aot: usage: kiln aot FILE.kir [--target T] -o DIR   (an IR file's layers "
              "and shapes are its functions': no --shape, --shapes or --layer)\n", stderr);
        return EXIT_INPUT;
    }
    const char *usage = "kiln aot: usage: kiln aot RECIPE (--shapes FILE | --shape M,N,K "
                        "[--layer NAME]) [--target T] -o DIR\n";
    if (!a->recipe || !a->out_dir || (!a->shapes_file == !a->have_shape)) {
        fputs(usage, stderr);
        if (a->recipe && a->shapes_file && a->have_shape)
            fputs("kiln aot: give either --shapes or --shape, not both\n", stderr);
        return EXIT_INPUT;
    }
    if (a->layer && a->shapes_file) {
        fputs("kiln aot: --layer goes with --shape; a shapes file names its layers "
              "('LAYER_NAME M,N,K' lines)\n", stderr);
        return EXIT_INPUT;
    }
    return EXIT_OK;
}

static int check_target(Aot *s)
{
    KilnDiag d = {0};
    const char *name = s->r ? tool_target_name(s->a, s->r, "cpu")
                       : s->a->target ? s->a->target
                       : tool_ir_target(s->irm) ? tool_ir_target(s->irm) : "cpu";
    int rc = kiln_target_lookup(name, &s->t, &d);
    if (rc) {
        tool_error(&d);
        return tool_exit_code(rc);
    }
    if (s->t.kind == KILN_TGT_INTERP) {
        fprintf(stderr, "kiln aot: target '%s' builds no kernels (it is the reference "
                        "interpreter); use cpu, avx2, avx512vnni, avx512, amx, sm_80, sm_89, sm_90, sm_90a or sm_100\n",
                s->t.name);
        return EXIT_INPUT;
    }
    tool_ir_apply_tune(s->irm, &s->t);
    return EXIT_OK;
}

/* An IR file: every function planned once (tool_plan_ir), each a layer to build. */
static int plan_ir_file(Aot *s)
{
    KilnDiag d = {0};
    int rc = tool_plan_ir(s->a, &s->t, s->irm, NULL, &s->irplan, &d);
    if (rc) {
        tool_error(&d);
        return tool_exit_code(rc);
    }
    for (int i = 0; i < s->irplan.n; i++) {
        const KilnPlanLayer *p = &s->irplan.layers[i];
        int e = add_layer(s, p->name, p->M, p->N, p->K, 0);
        if (e)
            return e;
    }
    return EXIT_OK;
}

int cmd_aot(const ToolArgs *a)
{
    int e = check_args(a);
    if (e)
        return e;
    double t0 = kiln_now_ms();
    Aot s = {.a = a, .dir = a->out_dir};
    KilnDiag d = {0};
    KilnCompiler *c = NULL;
    bool ir = tool_is_ir_file(a->recipe);
    int rc = !ir ? kiln_recipe_load(a->recipe, &s.r, &d)
             : (s.irm = kiln_module_new()) ? tool_ir_load(a->recipe, s.irm, &d)
                                           : kiln_diag_set(&d, KILN_EINTERNAL, "out of memory");
    if (rc) {
        tool_error(&d);
        kiln_module_free(s.irm);
        return tool_exit_code(rc);
    }
    if ((e = check_target(&s)))
        goto done;
    e = ir               ? plan_ir_file(&s)
        : a->shapes_file ? read_shapes(&s, a->shapes_file)
                         : add_shape(&s, a->layer, a->M, a->N, a->K, 0);
    if (e)
        goto done;
    char obj_dir[4200];
    snprintf(obj_dir, sizeof obj_dir, "%s/obj", s.dir);
    if (strlen(s.dir) > 4000 || kiln_rt_mkdir_p(s.dir, "output directory", &d) ||
        (s.t.kind == KILN_TGT_CPU && kiln_rt_mkdir_p(obj_dir, "output directory", &d))) {
        if (d.msg[0])
            fprintf(stderr, "kiln aot: %s\n", d.msg);
        else
            fprintf(stderr, "kiln aot: cannot create output directory %s: path too long\n", s.dir);
        e = EXIT_INPUT;
        goto done;
    }
    if ((rc = kiln_compiler_new(NULL, &c, &d))) {
        tool_error(&d);
        e = tool_exit_code(rc);
        goto done;
    }
    for (int i = 0; i < s.nlayers && !e; i++)
        e = build_layer(&s, c, i);
    if (!e && s.nkernels == 0) {
        fprintf(stderr, "kiln aot: recipe '%s' gives no kernel for any of the %d layer%s "
                        "given: nothing to build\n",
                source_name(&s), s.nlayers, s.nlayers == 1 ? "" : "s");
        e = EXIT_INPUT;
    }
    bool gpu = s.t.kind == KILN_TGT_CUDA;
    if (!e && !gpu)
        e = link_library(&s);
    if (!e)
        e = write_outputs(&s);
    if (!e && gpu)
        printf("kiln aot: %d layer%s -> %d kernel%s for %s in %s (<symbol>.kir/.ptx/.cubin, "
               "manifest.json), %.0f ms\n",
               s.nlayers, s.nlayers == 1 ? "" : "s", s.nkernels, s.nkernels == 1 ? "" : "s",
               s.t.name, s.dir, kiln_now_ms() - t0);
    else if (!e)
        printf("kiln aot: %d layer%s -> %d kernel%s (%d from the cache) for %s in %s "
               "(libkiln_kernels.so, kiln_kernels.h, manifest.json), %.0f ms\n",
               s.nlayers, s.nlayers == 1 ? "" : "s", s.nkernels, s.nkernels == 1 ? "" : "s",
               s.hits, s.t.name, s.dir, kiln_now_ms() - t0);
done:
    kiln_compiler_free(c);
    for (int i = 0; i < s.nlayers; i++)
        free(s.layers[i].name);
    for (int i = 0; i < s.nkernels; i++)
        free(s.kernels[i].why);
    free(s.layers);
    free(s.kernels);
    kiln_recipe_free(s.r);
    tool_plan_free(&s.irplan);
    kiln_module_free(s.irm);
    return e;
}
