/* api/backend_cpu.c — the CPU JIT backend (api/backend.h): kernels compiled by LLVM
 * through the kernel cache (api/compile.c) and loaded into an ORC JIT; weights quantized
 * and prepacked on the pool, in huge pages; runs split over the pool (rows for prefill,
 * panels for decode), with the outlier columns' f32 part after the int8 kernel. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/backend.h"
#include "api/compile.h"
#include "api/outliers.h"
#include "api/plan.h"
#include "ir/numerics.h"

typedef struct CpuBackend {
    KilnBackend base;
    KilnCompiler *compiler; /* NULL for an AOT library's backend */
    KilnPool *pool;
    KilnAot *aot;           /* the library the kernels come from, or NULL */
} CpuBackend;

typedef struct CpuWeights {
    void *wpack;           /* the prepacked blob (kiln_rt_alloc_weights) */
    float *bias;           /* the kernel's bias (zeros when the layer has none given) */
    KilnOutlierPart *side; /* outliers = {...}: f32 columns and epilogue after the kernel */
    const KilnLayout *L;   /* the kernel's */
} CpuWeights;

/* Loading weights is the bulk of kiln_layer_create, so it runs on the context's pool.
 * Each task takes a block of NR-wide panels: it quantizes those rows into its thread's
 * buffer (kiln_quantize_matrix works row by row, so a block gets the codes and scales
 * the whole matrix would; a per-tensor scale is chosen first, over all of it, as
 * kiln_quantize_matrix does, and handed to the blocks as a fixed scale) and packs them
 * into the shared blob while they are in cache (kiln_prepack_panels: blocks write
 * disjoint bytes). */
typedef struct LoadScratch { /* one per pool thread, made by its first task */
    uint8_t *codes;
    float *scales;
    int32_t *zeros;
    bool made, failed;
} LoadScratch;

typedef struct LoadJob {
    const KilnLayout *L;
    const float *w;      /* rows row0.. of the matrix (all of it, or one chunk's) */
    int64_t row0, t0;    /* the chunk's first row and first task */
    const float *gscale; /* the caller's grid (desc->weight_scale/zero), or NULL */
    const int32_t *gzero;
    KilnType wt;
    KilnQuantSpec spec; /* per-tensor: fixed to the whole matrix's params */
    bool quant, tensor, zeros;
    size_t rb;          /* bytes of one row of codes (f32: floats) */
    int64_t per_row;    /* scales per row (1 for tensor and channel) */
    int64_t ppt;        /* panels per task */
    uint8_t *blob;
    LoadScratch *scr;
    int *rc;
    KilnDiag *d;
    double *quant_ms, *pack_ms; /* per task, for verbose */
} LoadJob;

static void load_task(void *ctx, int t, int thread)
{
    LoadJob *j = ctx;
    const KilnLayout *L = j->L;
    t += (int)j->t0;
    int64_t p0 = t * j->ppt, p1 = p0 + j->ppt < L->npanels ? p0 + j->ppt : L->npanels;
    int64_t n0 = p0 * L->NR, n1 = p1 * L->NR < L->N ? p1 * L->NR : L->N, K = L->K;
    LoadScratch *s = &j->scr[thread];
    int64_t rows = j->ppt * L->NR;
    if (!s->made && j->quant) {
        s->codes = malloc((size_t)rows * j->rb);
        s->scales = malloc(sizeof(float) * (size_t)(rows * j->per_row));
        s->zeros = j->zeros ? malloc(sizeof(int32_t) * (size_t)(rows * j->per_row)) : NULL;
        s->failed = !s->codes || !s->scales || (j->zeros && !s->zeros);
    }
    s->made = true;
    if (s->failed) {
        j->rc[t] = kiln_diag_set(&j->d[t], KILN_EINTERNAL, "out of memory loading weights");
        return;
    }
    double t0 = kiln_now_ms();
    KilnTensor st = {.type = j->wt, .nbytes = (size_t)(n1 - n0) * j->rb};
    st.type.dim[0] = n1 - n0;
    if (j->quant) {
        st.data = s->codes;
        st.scales = s->scales;
        st.zeros = s->zeros;
        st.nscales = j->tensor ? 1 : (n1 - n0) * j->per_row;
        if (j->gscale) { /* the caller's grid: copy it, quantize onto it */
            int64_t ns = j->tensor ? 1 : (n1 - n0) * j->per_row, s0 = j->tensor ? 0 : n0 * j->per_row;
            memcpy(st.scales, j->gscale + s0, sizeof(float) * (size_t)ns);
            if (st.zeros)
                memcpy(st.zeros, j->gzero + s0, sizeof(int32_t) * (size_t)ns);
            j->rc[t] = kiln_quantize_matrix_with(&j->spec, j->w + (n0 - j->row0) * K, n1 - n0,
                                                 K, st.scales, st.zeros, st.data, &j->d[t]);
        } else {
            j->rc[t] = kiln_quantize_matrix(&j->spec, j->w + (n0 - j->row0) * K, n1 - n0, K,
                                            st.data, st.scales, st.zeros, &j->d[t]);
        }
        if (j->rc[t])
            return;
    } else {
        st.data = (void *)(j->w + (n0 - j->row0) * K);
    }
    double t1 = kiln_now_ms();
    j->rc[t] = kiln_prepack_panels(L, &st, p0, p1, j->blob, &j->d[t]);
    j->quant_ms[t] = t1 - t0;
    j->pack_ms[t] = kiln_now_ms() - t1;
}

/* The per-tensor scale's range over all of the matrix: desc->weight, or the min / max of
 * every chunk of rows (exactly the range of the whole: kiln_slice_range's min / max start
 * at 0 and skip non-finite values, so chunks combine by min and max). */
static int tensor_range(const KilnQuantSpec *q, const kiln_layer_desc *desc,
                        const KilnWeightRows *rows, float *buf, int64_t cap, float *lo, float *hi,
                        KilnDiag *d)
{
    if (!rows) {
        kiln_calib_range(q, desc->weight, desc->N * desc->K, 1, lo, hi);
        return 0;
    }
    *lo = *hi = 0.0f;
    int64_t step = cap < rows->chunk_rows ? cap : rows->chunk_rows; /* buf holds cap rows */
    for (int64_t n0 = 0; n0 < desc->N; n0 += step) {
        int64_t n = desc->N - n0 < step ? desc->N - n0 : step;
        int rc = rows->read(rows->arg, n0, n, buf, d);
        if (rc)
            return rc;
        float l, h;
        kiln_calib_range(q, buf, n * desc->K, 1, &l, &h);
        *lo = l < *lo ? l : *lo;
        *hi = h > *hi ? h : *hi;
    }
    return 0;
}

/* Runs the load tasks: over desc->weight at once, or chunk by chunk of rows read into buf
 * (cpp panels a chunk, a whole number of tasks: every task's rows lie in one chunk). */
static int run_load(CpuBackend *be, LoadJob *j, int64_t ntasks, const kiln_layer_desc *desc,
                    const KilnWeightRows *rows, float *buf, int64_t cpp)
{
    const KilnLayout *L = j->L;
    int64_t tpc = rows ? cpp / j->ppt : ntasks; /* tasks per chunk */
    for (int64_t t0 = 0; t0 < ntasks; t0 += tpc) {
        int64_t nt = ntasks - t0 < tpc ? ntasks - t0 : tpc;
        j->t0 = t0;
        if (rows) {
            int64_t n0 = t0 * j->ppt * L->NR, n1 = (t0 + nt) * j->ppt * L->NR;
            n1 = n1 < L->N ? n1 : L->N;
            int rc = 0;
            for (int64_t r = n0; !rc && r < n1; r += rows->chunk_rows)
                rc = rows->read(rows->arg, r, n1 - r < rows->chunk_rows ? n1 - r : rows->chunk_rows,
                                buf + (r - n0) * L->K, j->d);
            if (rc)
                return rc;
            j->w = buf, j->row0 = n0;
        } else {
            j->w = desc->weight, j->row0 = 0;
        }
        kiln_pool_run(be->pool, (int)nt, load_task, j);
        for (int64_t t = t0; t < t0 + nt; t++)
            if (j->rc[t]) {
                if (t != 0)
                    j->d[0] = j->d[t];
                return j->rc[t];
            }
    }
    return 0;
}

static int prepack_weights(CpuBackend *be, const KilnLayout *L, CpuWeights *cw, const KilnFunc *f,
                           const kiln_layer_desc *desc, const KilnWeightRows *rows, KilnDiag *d)
{
    const KilnType *wt = &f->values[kiln_find_qgemm(f)->ops[1]].type;
    double t0 = kiln_now_ms();
    cw->wpack = kiln_rt_alloc_weights(L->pack_bytes);
    if (!cw->wpack)
        return kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
    bool quant = wt->q.fmt != KILN_QF_NONE;
    int nt = kiln_pool_size(be->pool);
    /* blocks of about 256 KiB of packed weight, at least 4 per thread to even out a
     * shared machine; a small weight stays on one block */
    int64_t ntasks = (int64_t)(L->pack_bytes >> 18);
    ntasks = ntasks < 4 * (int64_t)nt ? 4 * (int64_t)nt : ntasks;
    ntasks = L->N * L->K < (1 << 16) ? 1 : ntasks > L->npanels ? L->npanels : ntasks;
    LoadJob j = {.L = L, .wt = *wt, .spec = wt->q, .quant = quant,
                 .tensor = quant && wt->q.gran == KILN_GRAN_TENSOR,
                 .zeros = quant && !wt->q.symmetric &&
                          (wt->q.fmt == KILN_QF_INT8 || wt->q.fmt == KILN_QF_INT4),
                 .rb = quant ? kiln_row_bytes(wt->dt, L->K) : sizeof(float) * (size_t)L->K,
                 .ppt = (L->npanels + ntasks - 1) / ntasks, .blob = cw->wpack};
    ntasks = (L->npanels + j.ppt - 1) / j.ppt;
    j.per_row = quant && wt->q.gran == KILN_GRAN_GROUP ? (L->K + wt->q.group - 1) / wt->q.group : 1; /* ragged last group */
    /* a chunk of rows: about rows->chunk_rows, a whole number of tasks' panels */
    int64_t cpp = rows ? rows->chunk_rows / L->NR / j.ppt * j.ppt : 0;
    cpp = rows && cpp < j.ppt ? j.ppt : cpp;
    float *buf = rows ? malloc(sizeof(float) * (size_t)(cpp * L->NR * L->K)) : NULL;
    if (rows && !buf)
        return kiln_diag_set(d, KILN_EINTERNAL, "out of memory loading weights");
    int rc = 0;
    if (quant && desc->weight_scale) {
        if (j.zeros && !desc->weight_zero) {
            char fmt[96];
            KilnQuantSpec q = {.fmt = wt->q.fmt, .symmetric = wt->q.symmetric,
                               .gran = wt->q.gran, .group = wt->q.group};
            kiln_spec_print(&q, fmt, sizeof fmt);
            free(buf);
            return kiln_diag_set(d, KILN_EINPUT, "layer '%s': weight_scale given without "
                                 "weight_zero for an asymmetric format (%s)", desc->name, fmt);
        }
        j.gscale = desc->weight_scale;
        j.gzero = desc->weight_zero;
        if (j.tensor) {
            j.spec.dynamic = false;
            j.spec.scale = desc->weight_scale[0];
            j.spec.zero = j.zeros ? desc->weight_zero[0] : 0;
        }
    } else if (j.tensor) { /* the one scale, from all of the matrix */
        bool sym = wt->q.symmetric || wt->q.fmt == KILN_QF_FP8_E4M3 ||
                   wt->q.fmt == KILN_QF_FP8_E5M2;
        KilnQParams p = {wt->q.scale, sym ? 0 : wt->q.zero};
        if (wt->q.dynamic || !(wt->q.scale > 0.0f)) {
            float lo = 0, hi = 0;
            rc = tensor_range(&wt->q, desc, rows, buf, cpp * L->NR, &lo, &hi, d);
            p = kiln_qparams_from_range(wt->q.fmt, sym, lo, hi);
        }
        j.spec.dynamic = false;
        j.spec.scale = p.scale;
        j.spec.zero = p.zero;
    }
    j.scr = calloc((size_t)nt, sizeof *j.scr);
    j.rc = calloc((size_t)ntasks, sizeof *j.rc);
    j.d = calloc((size_t)ntasks, sizeof *j.d);
    j.quant_ms = calloc((size_t)ntasks * 2, sizeof(double));
    j.pack_ms = j.quant_ms ? j.quant_ms + ntasks : NULL;
    if (!rc && j.scr && j.rc && j.d && j.quant_ms) {
        rc = run_load(be, &j, ntasks, desc, rows, buf, cpp);
        if (rc)
            *d = j.d[0];
    } else if (!rc) {
        rc = kiln_diag_set(d, KILN_EINTERNAL, "out of memory loading weights");
    }
    if (!rc && be->base.verbose) {
        double qms = 0, pms = 0, ms = kiln_now_ms() - t0;
        for (int64_t t = 0; t < ntasks; t++) {
            qms += j.quant_ms[t];
            pms += j.pack_ms[t];
        }
        fprintf(stderr, "kiln: %s: weights [%lld,%lld] loaded in %.1f ms, %.2f GB/s of f32 in "
                "(%lld blocks on %d threads%s; quantize %.1f ms, prepack %.1f ms summed over "
                "blocks)\n", desc->name, (long long)L->N, (long long)L->K, ms,
                4e-6 * (double)(L->N * L->K) / (ms > 1e-6 ? ms : 1e-6), (long long)ntasks, nt,
                rows ? ", read in chunks of rows" : "", qms, pms);
    }
    for (int i = 0; j.scr && i < nt; i++) {
        free(j.scr[i].codes);
        free(j.scr[i].scales);
        free(j.scr[i].zeros);
    }
    free(j.scr);
    free(j.rc);
    free(j.d);
    free(j.quant_ms);
    free(buf);
    return rc;
}


/* The kernel from the AOT library: filed under the symbol the one kernel key gives the
 * planned kernel, so a library built for this recipe, shape and target has it. */
static int aot_kernel(CpuBackend *be, const KilnFunc *planned, KilnCompiled *c, KilnDiag *d)
{
    KilnModule *km = kiln_module_new();
    KilnFunc *canon;
    size_t klen;
    char *key = NULL;
    int rc = km ? kiln_kernel_canon(planned, km, &canon, d)
                : kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
    if (!rc && !(key = kiln_kernel_key(km, kiln_cpu_key_gen(), &klen, c->symbol)))
        rc = kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
    if (!rc)
        rc = kiln_layout_for(kiln_find_qgemm(canon), canon, &c->layout, d);
    void *fn = NULL;
    if (!rc && kiln_aot_lookup(be->aot, c->symbol, &fn, d))
        rc = kiln_diag_set(d, KILN_EINPUT,
                           "layer '%s': the AOT library has no kernel %s (%s) for it: build the "
                           "library with `kiln aot` for this recipe, shape and target",
                           planned->name, c->symbol, c->layout.name);
    c->fn = (KilnQGemmFn)fn;
    c->cache_hit = true;
    free(key);
    kiln_module_free(km);
    return rc;
}

static int cpu_kernel(KilnBackend *b, const KilnFunc *planned, void **k, KilnDiag *d)
{
    CpuBackend *be = (CpuBackend *)b;
    KilnCompiled *c = calloc(1, sizeof *c);
    if (!c)
        return kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
    int rc = be->aot ? aot_kernel(be, planned, c, d) : kiln_compile_qgemm(be->compiler, planned, c, d);
    if (rc) {
        free(c);
        return rc;
    }
    if (b->verbose)
        fprintf(stderr, "kiln: %s: kernel %s (%s): cache %s, %.1f ms\n", planned->name, c->symbol,
                c->layout.name, c->cache_hit ? "hit" : "miss", c->compile_ms);
    *k = c;
    return 0;
}

static void cpu_kernel_free(KilnBackend *b, void *k)
{
    (void)b;
    free(k);
}

static const char *cpu_kernel_layout(const void *k) { return ((const KilnCompiled *)k)->layout.name; }

static void cpu_weights_free(KilnBackend *b, void *w)
{
    (void)b;
    CpuWeights *cw = w;
    if (!cw)
        return;
    kiln_rt_free(cw->wpack);
    free(cw->bias);
    kiln_api_outlier_free(cw->side);
    free(cw);
}

static int cpu_weights_from(KilnBackend *b, void *k, const KilnFunc *planned,
                            const kiln_layer_desc *desc, const KilnWeightRows *rows, void **w,
                            KilnDiag *d)
{
    CpuBackend *be = (CpuBackend *)b;
    const KilnCompiled *c = k;
    CpuWeights *cw = calloc(1, sizeof *cw);
    if (!cw)
        return kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
    cw->L = &c->layout;
    int rc = kiln_api_outlier_part(planned, desc, &cw->side, d);
    if (!rc)
        rc = prepack_weights(be, cw->L, cw, planned, desc, rows, d);
    if (!rc && cw->L->has_bias) {
        cw->bias = calloc((size_t)desc->N, sizeof(float));
        if (!cw->bias)
            rc = kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
        else if (desc->bias)
            memcpy(cw->bias, desc->bias, sizeof(float) * (size_t)desc->N);
    }
    if (rc) {
        cpu_weights_free(b, cw);
        return rc;
    }
    *w = cw;
    return 0;
}

static int cpu_weights(KilnBackend *b, void *k, const KilnFunc *planned, const kiln_layer_desc *desc,
                       void **w, KilnDiag *d)
{
    return cpu_weights_from(b, k, planned, desc, NULL, w, d);
}

/* Chunks of rows where they give the bytes the whole matrix would: not for outlier columns
 * (their f32 part gathers columns of every row) nor a per-tensor scale taken from the
 * weights by anything but min / max; those read the rows whole first. */
static int cpu_weights_rows(KilnBackend *b, void *k, const KilnFunc *planned,
                            const kiln_layer_desc *desc, const KilnWeightRows *rows, void **w,
                            KilnDiag *d)
{
    const KilnInst *g = kiln_find_qgemm(planned);
    const KilnQuantSpec *q = &planned->values[g->ops[1]].type.q;
    bool range = q->fmt != KILN_QF_NONE && q->gran == KILN_GRAN_TENSOR && !desc->weight_scale &&
                 (q->dynamic || !(q->scale > 0.0f));
    bool whole = kiln_get(g, "outliers") != NULL || (range && q->calib != KILN_CAL_MINMAX) ||
                 rows->chunk_rows < 1;
    if (!whole)
        return cpu_weights_from(b, k, planned, desc, rows, w, d);
    float *all = kiln_weight_rows_whole(rows, desc, d);
    if (!all)
        return d->code ? d->code : KILN_EINTERNAL;
    int rc = 0;
    kiln_layer_desc one = *desc;
    one.weight = all;
    if (!rc)
        rc = cpu_weights_from(b, k, planned, &one, NULL, w, d);
    free(all);
    return rc;
}

static size_t cpu_weight_bytes(const void *w) { return ((const CpuWeights *)w)->L->pack_bytes; }

static int cpu_run(KilnBackend *b, void *k, void *w, const float *x, int64_t M, void *y, KilnDiag *d)
{
    CpuBackend *be = (CpuBackend *)b;
    const KilnCompiled *c = k;
    CpuWeights *cw = w;
    if (cw->side)
        return kiln_api_outlier_run(be->pool, cw->side, c->fn, &c->layout, cw->wpack, x, M, y, d);
    return kiln_rt_qgemm_layout(be->pool, &c->layout, c->fn, M, x, cw->wpack, cw->bias, y, d);
}

static void cpu_close(KilnBackend *b)
{
    CpuBackend *be = (CpuBackend *)b;
    if (!be)
        return;
    kiln_compiler_free(be->compiler);
    kiln_pool_free(be->pool);
    kiln_aot_close(be->aot);
    free(be);
}

#define CPU_OPS(label)                                                                     \
    {                                                                                      \
        .name = label, .kernel = cpu_kernel, .kernel_free = cpu_kernel_free,               \
        .kernel_layout = cpu_kernel_layout, .weights = cpu_weights,                        \
        .weights_rows = cpu_weights_rows,                                                   \
        .weights_free = cpu_weights_free, .weight_bytes = cpu_weight_bytes, .run = cpu_run, \
        .close = cpu_close,                                                                \
    }
static const KilnBackendOps cpu_ops = CPU_OPS("cpu-jit");
static const KilnBackendOps aot_ops = CPU_OPS("cpu-aot");

KilnPool *kiln_backend_cpu_pool(KilnBackend *b)
{
    return b && (b->ops == &cpu_ops || b->ops == &aot_ops) ? ((CpuBackend *)b)->pool : NULL;
}

/* Hands out the backend once its kernels' source is set up (rc 0) and its pool started,
 * or closes it. */
static int cpu_finish(CpuBackend *be, int rc, int threads, KilnBackend **out, KilnDiag *d)
{
    if (!rc)
        rc = kiln_pool_new(threads, &be->pool, d);
    if (rc) {
        cpu_close(&be->base);
        return rc;
    }
    *out = &be->base;
    return 0;
}

int kiln_backend_cpu_open(const KilnTarget *t, const char *cache_dir, int threads, bool verbose,
                          KilnBackend **out, KilnDiag *d)
{
    *out = NULL;
    if (!kiln_target_host_runs(t))
        return kiln_diag_set(d, KILN_ENODEV, "this CPU cannot run target '%s': %s", t->name,
                             kiln_target_cannot_run(t));
    /* the amx level's kernels may use tiles: the OS grants tile state once, up front */
    if ((t->isa & KILN_ISA_AMX) && kiln_host_amx_enable(d))
        return d->code;
    CpuBackend *be = calloc(1, sizeof *be);
    if (!be)
        return kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
    be->base = (KilnBackend){.ops = &cpu_ops, .target = *t, .verbose = verbose};
    return cpu_finish(be, kiln_compiler_new(cache_dir, &be->compiler, d), threads, out, d);
}

/* The KILN_TUNE_* traits the library was planned with (its kernels' "tune"; one set
 * per library, as `kiln aot` writes them). */
static int library_tune(const KilnAot *a, const char *dir, unsigned *tune, KilnDiag *d)
{
    const KilnJson *ks = kiln_json_get(kiln_aot_manifest(a), "kernels");
    *tune = 0;
    for (int i = 0; ks && i < kiln_aot_nkernels(a); i++) {
        const KilnJson *tu = kiln_json_get(&ks->items[i], "tune");
        unsigned t = 0;
        if (tu && (tu->kind != KILN_JSON_STRING || kiln_tune_parse(tu->str, &t)))
            return kiln_diag_set(d, KILN_EINPUT, "AOT library in %s: kernel %d names a trait "
                                 "kiln does not know", dir, i);
        if (i > 0 && t != *tune)
            return kiln_diag_set(d, KILN_EINPUT, "AOT library in %s: its kernels were planned "
                                 "with different traits", dir);
        *tune = t;
    }
    return 0;
}

int kiln_backend_aot_open(const char *dir, int threads, bool verbose, KilnBackend **out,
                          KilnDiag *d)
{
    *out = NULL;
    CpuBackend *be = calloc(1, sizeof *be);
    if (!be)
        return kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
    be->base = (KilnBackend){.ops = &aot_ops, .verbose = verbose};
    int rc = kiln_aot_open(dir, &be->aot, d); /* refuses a target this CPU cannot run */
    const char *tname = rc ? NULL : kiln_aot_target(be->aot);
    if (!rc && (!tname || !*tname))
        rc = kiln_diag_set(d, KILN_EINPUT, "AOT library in %s names no target", dir);
    if (!rc)
        rc = kiln_target_lookup(tname, &be->base.target, d);
    if (!rc && be->base.target.kind != KILN_TGT_CPU)
        rc = kiln_diag_set(d, KILN_EINPUT, "AOT library in %s is for %s: the API loads CPU "
                           "libraries (a GPU library's cubins are loaded with runtime/cuda.h)",
                           dir, tname);
    if (!rc) /* plan with the traits the library's kernels were compiled for */
        rc = library_tune(be->aot, dir, &be->base.target.tune, d);
    return cpu_finish(be, rc, threads, out, d);
}
