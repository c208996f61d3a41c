/* tools/cmd_bench.c — `kiln bench`: time one layer's CPU kernel through the public API
 * (warm-up, repeats, median) and rate it against this machine's limits measured by the
 * probes in the same run (roofline: streaming-read bandwidth vs the peak of the
 * kernel's own instruction at its vector width); also JIT compile time cold/warm,
 * weight prepack throughput, the host CPU and the --cold eviction size.
 * docs/bench.md defines every number printed here. */
#include <errno.h>
#include <ftw.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "api/compile.h"
#include "bench_probes.h"
#include "frontend/recipe.h"
#include "ir/target.h"
#include "kiln.h"
#include "passes/passes.h"
#include "runtime/report.h"
#include "runtime/runtime.h"
#include "tool.h"

typedef struct BenchResult {
    const char *layer, *kernel, *target;
    const char *target_asked; /* as given ("cpu" resolves to the host's level and traits) */
    int64_t M, N, K;
    int threads, repeat, warmup;
    bool cold;
    double median_ms, min_ms, max_ms;
    double ops, bytes;
    size_t weight_bytes;
    double gflops, gbs;
    const char *peak_name; /* the probe the kernel family is rated against */
    const char *peak_insn; /* its instruction and width, "vfmadd231ps zmm" */
    double peak, bw;       /* that probe's G(op)/s and the streaming GB/s at `threads` */
    int64_t tiles_min_m;   /* an AMX tile layout's break-even (its amx_min_m), else 0 */
    bool compute_bound;
    double limit_ms, limit_fraction, frac_bw, frac_peak;
    double compile_cold_ms, compile_warm_ms;
    bool cold_hit, warm_hit;
    double prepack_gbs, layer_create_ms;
    BenchLimits lim;
} BenchResult;

static int rm_entry(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(p);
}

static void rm_rf(const char *dir)
{
    if (dir && dir[0])
        nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* Kernel compile cold (empty cache dir) and warm (same dir, new compiler). The weight
 * quantize + prepack is timed inside kiln_layer_create (the caller's), not here, so the
 * large shapes do not pay it twice. */
static int time_compile(const ToolArgs *a, const char *layer, const char *cache_dir,
                        const float *xcal, int64_t calib_rows, const KilnPlanLayer *planned,
                        BenchResult *b)
{
    KilnDiag d = {0};
    KilnRecipe *r = NULL;
    KilnModule *m = kiln_module_new();
    KilnTarget t;
    KilnFunc *f = NULL;
    KilnCompiler *c = NULL;
    KilnCompiled k = {0};
    int rc = m ? 0 : kiln_diag_set(&d, KILN_EINTERNAL, "out of memory");
    if (!rc && !planned)
        rc = kiln_recipe_load(a->recipe, &r, &d);
    if (!rc && !planned)
        rc = kiln_target_lookup(b->target_asked, &t, &d);
    /* planned as kiln_layer_create plans it, so the cache key matches its kernel */
    KilnPlanLayer p = {.name = layer, .M = 1, .any_m = true, .N = b->N, .K = b->K, .calib_x = xcal,
                       .calib_rows = calib_rows};
    if (planned) /* an IR file's layer, planned once by the caller */
        p = *planned;
    else if (!rc)
        rc = kiln_plan_layers(r, &t, &p, 1, m, NULL, &d);
    f = p.f;
    if (!rc && !p.qgemm)
        rc = kiln_diag_set(&d, KILN_EINTERNAL, "layer '%s': the passes left no qgemm", layer);
    for (int pass = 0; pass < 2 && !rc; pass++) {
        if (!(rc = kiln_compiler_new(cache_dir, &c, &d)))
            rc = kiln_compile_qgemm(c, f, &k, &d);
        kiln_compiler_free(c);
        c = NULL;
        if (!rc && pass == 0)
            b->compile_cold_ms = k.compile_ms, b->cold_hit = k.cache_hit;
        else if (!rc)
            b->compile_warm_ms = k.compile_ms, b->warm_hit = k.cache_hit;
    }
    const KilnAttr *mm = !rc ? kiln_get(p.qgemm, "amx_min_m") : NULL;
    b->tiles_min_m = mm && mm->kind == KILN_ATTR_INT ? mm->i : 0;
    if (rc)
        tool_error(&d);
    kiln_module_free(m);
    kiln_recipe_free(r);
    return rc ? tool_exit_code(rc) : EXIT_OK;
}

/* Warm-up, then the timed repeats through kiln_layer_run; --cold evicts the caches
 * before every run (outside the timed region). The eviction takes long enough for
 * the pool's workers to go to sleep; in a model the layers run back to back and
 * find them spinning, so with more than one thread a tiny layer (wake, 64 rows of
 * the same weight) runs between the eviction and the timed run: cold caches, warm
 * threads, as a decode step meets them. */
static int time_runs(const ToolArgs *a, kiln_ctx *ctx, kiln_layer *l, kiln_layer *wake,
                     const float *x, void *y, void *ywake, BenchResult *b)
{
    double *ms = calloc((size_t)b->repeat, sizeof *ms);
    if (!ms)
        return EXIT_INTERNAL;
    for (int i = 0; i < b->warmup + b->repeat; i++) {
        if (a->cold && bench_flush_caches()) {
            fprintf(stderr, "kiln bench: cannot allocate the %zu MiB cache-eviction buffer\n",
                    bench_eviction()->bytes >> 20);
            free(ms);
            return EXIT_INTERNAL;
        }
        if (a->cold && wake && kiln_layer_run(wake, x, 1, ywake)) {
            fprintf(stderr, "kiln bench: %s\n", kiln_error(ctx));
            free(ms);
            return EXIT_INTERNAL;
        }
        double t0 = kiln_now_ms();
        if (kiln_layer_run(l, x, b->M, y)) {
            fprintf(stderr, "kiln bench: %s\n", kiln_error(ctx));
            free(ms);
            return EXIT_INTERNAL;
        }
        double dt = kiln_now_ms() - t0;
        if (i >= b->warmup)
            ms[i - b->warmup] = dt;
    }
    b->min_ms = b->max_ms = ms[0];
    for (int i = 0; i < b->repeat; i++) {
        b->min_ms = ms[i] < b->min_ms ? ms[i] : b->min_ms;
        b->max_ms = ms[i] > b->max_ms ? ms[i] : b->max_ms;
    }
    b->median_ms = bench_median(ms, b->repeat);
    free(ms);
    bench_flush_free();
    return EXIT_OK;
}

/* Roofline: the time a kernel at this machine's limits would need for the same bytes
 * and ops; the larger of the two decides the bound, and limit_fraction = that / time. */
static void rate(BenchResult *b)
{
    b->gflops = b->ops / (b->median_ms * 1e6);
    b->gbs = b->bytes / (b->median_ms * 1e6);
    /* The kernel's own peak: what a perfect kernel of its family and width could
     * reach here. */
    /* a tile layout runs the vector rows of the same kernel below its break-even: VNNI
     * for u8s8 tiles, vdpbf16ps for bf16 tiles */
    const char *runs = b->kernel;
    if (b->tiles_min_m && b->M < b->tiles_min_m)
        runs = strstr(b->kernel, "bf16") ? "amx-bf16-dot" : "amx-u8s8-vnni";
    b->peak = bench_kernel_peak(&b->lim, runs, &b->peak_name, &b->peak_insn);
    b->bw = b->lim.read_gbs_nt;
    double t_mem = b->bytes / (b->bw * 1e6), t_cmp = b->ops / (b->peak * 1e6);
    b->compute_bound = t_cmp > t_mem;
    b->limit_ms = b->compute_bound ? t_cmp : t_mem;
    b->limit_fraction = b->limit_ms / b->median_ms;
    b->frac_bw = b->gbs / b->bw;
    b->frac_peak = b->gflops / b->peak;
}

static void jw_num_or_null(KilnJsonWriter *w, const char *key, double v)
{
    kiln_jw_key(w, key);
    if (v > 0 && isfinite(v))
        kiln_jw_double(w, v);
    else
        kiln_jw_null(w);
}

#define S(k, v) (kiln_jw_key(w, k), kiln_jw_string(w, v))
#define I(k, v) (kiln_jw_key(w, k), kiln_jw_int(w, v))
#define D(k, v) jw_num_or_null(w, k, v)
#define B(k, v) (kiln_jw_key(w, k), kiln_jw_bool(w, v))

/* "cpu": the host's model and whether FMA on subnormal operands is free (the trait
 * that picks the -subnormal layouts), with the two timings that decided it. */
static void json_cpu(KilnJsonWriter *w)
{
    const KilnHostCpu *h = kiln_host_cpu();
    kiln_jw_key(w, "cpu");
    kiln_jw_begin_object(w);
    S("model", h->model), S("vendor", h->vendor);
    I("family", h->family), I("model_id", h->model_id);
    B("subnormal_fma_free", (h->tune & KILN_TUNE_SUBNORMAL_FREE) != 0);
    D("fma_ns", h->fma_ns), D("fma_subnormal_ns", h->fma_subnormal_ns);
    kiln_jw_end_object(w);
}

/* "eviction": what --cold reads (the same rule whether or not this run was cold). */
static void json_eviction(KilnJsonWriter *w)
{
    const BenchEviction *e = bench_eviction();
    kiln_jw_key(w, "eviction");
    kiln_jw_begin_object(w);
    I("bytes", (int64_t)e->bytes), S("source", e->source);
    I("llc_bytes", (int64_t)e->llc_bytes), I("llc_level", e->llc_level);
    I("mem_available_bytes", (int64_t)e->mem_available);
    kiln_jw_end_object(w);
}

/* "amx": null when the CPU has none, else which parts and their peaks (null where
 * not probed: the OS refused tile state). */
static void json_amx(KilnJsonWriter *w, const BenchLimits *l)
{
    kiln_jw_key(w, "amx");
    if (!l->has_amx_tile) {
        kiln_jw_null(w);
        return;
    }
    kiln_jw_begin_object(w);
    B("tile", l->has_amx_tile), B("int8", l->has_amx_int8), B("bf16", l->has_amx_bf16);
    D("int8_gops", l->amx_int8_gops), D("bf16_gflops", l->amx_bf16_gflops);
    kiln_jw_end_object(w);
}

static void json_limits(KilnJsonWriter *w, const BenchLimits *l)
{
    kiln_jw_key(w, "limits");
    kiln_jw_begin_object(w);
    I("threads", l->threads), I("ncpu", l->ncpu), I("read_bytes", (int64_t)l->read_bytes);
    D("probe_ms", l->probe_ms);
    S("read_loop", l->read_loop ? l->read_loop : "");
    D("read_gbs_1t", l->read_gbs_1t), D("read_gbs_nt", l->read_gbs_nt);
    D("read_gbs_all", l->read_gbs_all);
    D("fma_gflops", l->fma_gflops), D("fma_zmm_gflops", l->fma_zmm_gflops);
    D("madd_gops", l->madd_gops), D("maddubs_gops", l->maddubs_gops);
    D("vnni_gops", l->vnni_gops), D("bf16_gflops", l->bf16_gflops);
    json_amx(w, l);
    kiln_jw_end_object(w);
}

static void json_run(KilnJsonWriter *w, const BenchResult *b)
{
    S("layer", b->layer);
    S("kernel", b->kernel);
    S("target", b->target);
    I("M", b->M), I("N", b->N), I("K", b->K);
    I("threads", b->threads), I("repeat", b->repeat), I("warmup", b->warmup);
    B("cold", b->cold);
    D("median_ms", b->median_ms), D("min_ms", b->min_ms), D("max_ms", b->max_ms);
    D("ops", b->ops), D("bytes", b->bytes), I("weight_bytes", (int64_t)b->weight_bytes);
    D("gflops", b->gflops), D("gbs", b->gbs);
    S("bound", b->compute_bound ? "compute" : "memory");
    S("peak", b->peak_name), S("peak_insn", b->peak_insn), D("peak_gops", b->peak);
    D("bandwidth_gbs", b->bw);
    D("limit_ms", b->limit_ms), D("limit_fraction", b->limit_fraction);
    D("frac_of_bandwidth", b->frac_bw), D("frac_of_peak", b->frac_peak);
    kiln_jw_key(w, "compile");
    kiln_jw_begin_object(w);
    D("cold_ms", b->compile_cold_ms), B("cold_cache_hit", b->cold_hit);
    D("warm_ms", b->compile_warm_ms), B("warm_cache_hit", b->warm_hit);
    kiln_jw_end_object(w);
    kiln_jw_key(w, "prepack");
    kiln_jw_begin_object(w);
    D("layer_create_ms", b->layer_create_ms), D("f32_in_gbs", b->prepack_gbs);
    kiln_jw_end_object(w);
}
#undef S
#undef I
#undef D
#undef B

static int print_json(const BenchResult *b)
{
    KilnJsonWriter w;
    KilnDiag d = {0};
    kiln_jw_init(&w, stdout);
    kiln_jw_begin_object(&w);
    json_run(&w, b);
    json_cpu(&w);
    json_eviction(&w);
    json_limits(&w, &b->lim);
    kiln_jw_end_object(&w);
    fputc('\n', stdout);
    if (kiln_jw_finish(&w, &d)) {
        tool_error(&d);
        return EXIT_INTERNAL;
    }
    return EXIT_OK;
}

static void limit_row(KilnTable *t, const char *label, double v, const char *unit)
{
    kiln_table_cell(t, "%s", label);
    if (v > 0)
        kiln_table_cell(t, "%.1f", v), kiln_table_cell(t, "%s", unit);
    else
        kiln_table_cell(t, "n/a"), kiln_table_cell(t, "(not on this CPU)");
}

/* The machine limits as (limit, value, unit) rows; the text and --report share them. */
static void limits_table(const BenchLimits *l, KilnTable *t)
{
    char lab[64];
    kiln_table_init(t, "lrl", (const char *const[]){"limit", "value", "unit"});
    limit_row(t, "streaming read, 1 thread", l->read_gbs_1t, "GB/s");
    snprintf(lab, sizeof lab, "streaming read, %d threads", l->threads);
    if (l->threads > 1)
        limit_row(t, lab, l->read_gbs_nt, "GB/s");
    snprintf(lab, sizeof lab, "streaming read, %d threads", l->ncpu);
    if (l->ncpu != l->threads && l->ncpu > 1)
        limit_row(t, lab, l->read_gbs_all, "GB/s (all cores)");
    snprintf(lab, sizeof lab, "GFLOP/s (%d thread%s)", l->threads, l->threads > 1 ? "s" : "");
    limit_row(t, "vfmadd231ps ymm peak", l->fma_gflops, lab);
    limit_row(t, "vfmadd231ps zmm peak", l->fma_zmm_gflops, "GFLOP/s");
    limit_row(t, "vpmaddwd+vpaddd ymm peak", l->madd_gops, "GOP/s");
    limit_row(t, "vpmaddubsw+vpaddw ymm peak", l->maddubs_gops, "GOP/s");
    limit_row(t, "vpdpbusd zmm (VNNI) peak", l->vnni_gops, "GOP/s");
    limit_row(t, "vdpbf16ps zmm (BF16) peak", l->bf16_gflops, "GFLOP/s");
    if (!l->amx_note) { /* else a line after the table says why not */
        limit_row(t, "tdpbusd tiles (AMX) peak", l->amx_int8_gops, "GOP/s");
        limit_row(t, "tdpbf16ps tiles (AMX) peak", l->amx_bf16_gflops, "GFLOP/s");
    }
}

static void print_machine(const BenchResult *b)
{
    const KilnHostCpu *h = kiln_host_cpu();
    const BenchEviction *e = bench_eviction();
    printf("cpu: %s (%s family %d model %d); FMA on subnormal operands %s (%.2f ns vs %.2f "
           "ns normal)\n",
           h->model, h->vendor, h->family, h->model_id,
           h->tune & KILN_TUNE_SUBNORMAL_FREE ? "free" : "slow", h->fma_subnormal_ns, h->fma_ns);
    printf("eviction (--cold%s): reads %zu MiB (%s; L%d %zu MiB, MemAvailable %zu MiB)\n",
           b->cold ? ", used" : ", not used", e->bytes >> 20, e->source, e->llc_level,
           e->llc_bytes >> 20, e->mem_available >> 20);
}

static void print_limits(const BenchLimits *l)
{
    printf("machine limits (median of 5, %.0f ms per probe, %zu MiB streamed, best loop %s):\n",
           l->probe_ms, l->read_bytes >> 20, l->read_loop ? l->read_loop : "?");
    KilnTable t;
    limits_table(l, &t);
    kiln_table_print(&t, stdout, 2);
    kiln_table_free(&t);
    if (l->amx_note)
        printf("  AMX: not probed: %s\n", l->amx_note);
}

/* The kernel's numbers as (measure, value) rows, for --report. */
static void kernel_table(const BenchResult *b, KilnTable *t)
{
    kiln_table_init(t, "ll", (const char *const[]){"measure", "value"});
#define ROW(k, ...) (kiln_table_cell(t, "%s", k), kiln_table_cell(t, __VA_ARGS__))
    ROW("layer", "%s", b->layer);
    ROW("shape M,N,K", "%lld,%lld,%lld", (long long)b->M, (long long)b->N, (long long)b->K);
    ROW("kernel", "%s", b->kernel);
    ROW("threads", "%d%s", b->threads, b->cold ? " (cold caches)" : "");
    ROW("median", "%.4f ms (min %.4f, max %.4f; %d runs after %d warm-up)", b->median_ms,
        b->min_ms, b->max_ms, b->repeat, b->warmup);
    ROW("throughput", "%.2f GOP/s, %.2f GB/s", b->gflops, b->gbs);
    ROW("bytes", "%.0f (weights %zu + x + y)", b->bytes, b->weight_bytes);
    ROW("bound", "%s: %.1f%% of the limit (%.4f ms)", b->compute_bound ? "compute" : "memory",
        100 * b->limit_fraction, b->limit_ms);
    ROW("share of read bandwidth", "%.1f%%", 100 * b->frac_bw);
    ROW("share of the peak", "%.1f%% of %s", 100 * b->frac_peak, b->peak_insn);
    ROW("compile", "cold %.1f ms (cache %s), warm %.1f ms (cache %s)", b->compile_cold_ms,
        b->cold_hit ? "hit" : "miss", b->compile_warm_ms, b->warm_hit ? "hit" : "miss");
    ROW("weights (quantize + prepack)", "%.1f ms, %.3f GB/s of f32 in", b->layer_create_ms,
        b->prepack_gbs);
#undef ROW
}

/* --report FILE.md: the command, host, the kernel's numbers and the machine limits. */
static int write_report(const ToolArgs *a, const BenchResult *b)
{
    FILE *f = fopen(a->report, "w");
    if (!f) {
        fprintf(stderr, "kiln: --report %s: cannot write: %s\n", a->report, strerror(errno));
        return EXIT_INPUT;
    }
    char title[1200];
    snprintf(title, sizeof title, "kiln bench: %s, %s", a->recipe, b->layer);
    kiln_report_header(f, title, a->cmdline, b->target);
    KilnTable t;
    fprintf(f, "## Kernel\n\n");
    kernel_table(b, &t);
    kiln_table_markdown(&t, f);
    kiln_table_free(&t);
    fprintf(f, "\n## Machine limits\n\nmedian of 5, %.0f ms per probe, %zu MiB streamed "
               "(docs/bench.md defines each number)\n\n",
            b->lim.probe_ms, b->lim.read_bytes >> 20);
    limits_table(&b->lim, &t);
    kiln_table_markdown(&t, f);
    kiln_table_free(&t);
    if (b->lim.amx_note)
        fprintf(f, "\nAMX: not probed: %s\n", b->lim.amx_note);
    int bad = ferror(f);
    if (fclose(f) || bad) {
        fprintf(stderr, "kiln: --report %s: cannot write: %s\n", a->report, strerror(errno));
        return EXIT_INPUT;
    }
    fprintf(stderr, "kiln bench: report written to %s\n", a->report);
    return EXIT_OK;
}

static void print_text(const BenchResult *b)
{
    printf("layer %s  M=%lld N=%lld K=%lld  target %s  kernel %s  threads %d%s\n", b->layer,
           (long long)b->M, (long long)b->N, (long long)b->K, b->target, b->kernel, b->threads,
           b->cold ? "  (cold caches)" : "");
    print_machine(b);
    print_limits(&b->lim);
    printf("kernel: median %.4f ms (min %.4f, max %.4f) over %d runs after %d warm-up\n",
           b->median_ms, b->min_ms, b->max_ms, b->repeat, b->warmup);
    printf("  %.2f GOP/s (1 MAC = 2 ops), %.2f GB/s (%.0f bytes: weights %zu + x + y)\n",
           b->gflops, b->gbs, b->bytes, b->weight_bytes);
    printf("  %s-bound: %.1f%% of the limit (%.4f ms at %s); %.1f%% of read bandwidth, "
           "%.1f%% of the %s peak\n",
           b->compute_bound ? "compute" : "memory", 100 * b->limit_fraction, b->limit_ms,
           b->compute_bound ? b->peak_insn : "streaming read", 100 * b->frac_bw,
           100 * b->frac_peak, b->peak_insn);
    printf("compile: cold %.1f ms (cache %s), warm %.1f ms (cache %s)\n", b->compile_cold_ms,
           b->cold_hit ? "hit" : "miss", b->compile_warm_ms, b->warm_hit ? "hit" : "miss");
    printf("weights: kiln_layer_create (warm kernel cache) %.1f ms: quantize + prepack at "
           "%.3f GB/s of f32 in\n",
           b->layer_create_ms, b->prepack_gbs);
}

static int usage(void)
{
    fprintf(stderr, "kiln bench: usage: kiln bench RECIPE --shape M,N,K [--layer NAME] "
                    "[--target T] [--threads N] [--repeat R] [--warmup W] [--cold] "
                    "[--probe-ms MS] [--json] [--report FILE.md]\n"
                    "       kiln bench RECIPE --model smollm2|minilm|PATH [-p 512] [-n 128] "
                    "[--threads N] [--repeat R] [--json]\n"
                    "       kiln bench FILE.kir [--target T] [...]   (times the IR file's "
                    "first function, at the shape its IR gives)\n");
    return EXIT_INPUT;
}

/* `kiln bench FILE.kir`: the file planned for the target (its own by default); the first
 * function is the layer timed, its shape the IR's. */
static int plan_ir_file(const ToolArgs *a, KilnModule *m, ToolPlan *plan, BenchResult *b)
{
    KilnDiag d = {0};
    KilnTarget t;
    int rc = tool_ir_load(a->recipe, m, &d);
    if (!rc && !a->target && tool_ir_target(m))
        b->target = tool_ir_target(m);
    if (!rc)
        rc = kiln_target_lookup(b->target, &t, &d);
    if (!rc) {
        tool_ir_apply_tune(m, &t);
        rc = tool_plan_ir(a, &t, m, NULL, plan, &d);
    }
    if (!rc && !plan->layers[0].qgemm)
        rc = kiln_diag_set(&d, KILN_EINPUT, "%s: func @\"%s\" has no qgemm to time", a->recipe,
                           plan->layers[0].name);
    if (rc) {
        tool_error(&d);
        return tool_exit_code(rc);
    }
    if (plan->n > 1)
        printf("kiln bench: %s has %d functions; timing the first, @\"%s\"\n", a->recipe,
               plan->n, plan->layers[0].name);
    b->M = plan->layers[0].M, b->N = plan->layers[0].N, b->K = plan->layers[0].K;
    return EXIT_OK;
}

static int bench(const ToolArgs *a, const KilnPlanLayer *planned, BenchResult *bp);

int cmd_bench(const ToolArgs *a)
{
    if (a->model)
        return cmd_bench_model(a);
    if (a->have_bench_prompt || a->have_bench_gen) {
        fprintf(stderr, "kiln bench: -p and -n are the token counts of a model's benchmark "
                        "(--model)\n");
        return EXIT_INPUT;
    }
    bool ir = a->recipe && tool_is_ir_file(a->recipe);
    if (!a->recipe || (!ir && !a->have_shape) || (ir && (a->have_shape || a->layer)))
        return usage();
    BenchResult b = {.M = a->M, .N = a->N, .K = a->K, .cold = a->cold,
                     .target = a->target ? a->target : "cpu"};
    KilnModule *irm = ir ? kiln_module_new() : NULL;
    ToolPlan irplan = {0};
    if (ir) {
        int pe = irm ? plan_ir_file(a, irm, &irplan, &b) : EXIT_INTERNAL;
        if (pe) {
            tool_plan_free(&irplan);
            kiln_module_free(irm);
            return pe;
        }
    }
    bool report_new = false;
    int rerr = a->report ? kiln_report_probe(a->report, &report_new) : 0;
    if (rerr) { /* before the run, so a bad --report fails first */
        fprintf(stderr, "kiln: --report %s: cannot write: %s\n", a->report, strerror(rerr));
        tool_plan_free(&irplan);
        kiln_module_free(irm);
        return EXIT_INPUT;
    }
    int e = bench(a, ir ? &irplan.layers[0] : NULL, &b);
    if (e && report_new) /* no empty report left by a failed run */
        remove(a->report);
    tool_plan_free(&irplan);
    kiln_module_free(irm);
    return e;
}

/* The layer timed (from the recipe, or an IR file's planned layer) and, for --cold with
 * threads, a small wake layer of the same recipe (an IR file's layer has the one shape:
 * none). b->layer_create_ms times the first create. */
static int create_layers(const ToolArgs *a, kiln_ctx *ctx, const KilnPlanLayer *planned,
                         const kiln_layer_desc *desc, kiln_recipe **rec, kiln_layer **l,
                         kiln_layer **wake, BenchResult *b)
{
    double t0 = kiln_now_ms();
    if (planned) {
        if (kiln_layer_create_planned(ctx, planned, desc, l)) {
            fprintf(stderr, "kiln bench: %s\n", kiln_error(ctx));
            return EXIT_INPUT;
        }
        b->layer_create_ms = kiln_now_ms() - t0;
        return EXIT_OK;
    }
    if (kiln_recipe_open(ctx, a->recipe, rec) || kiln_layer_create(ctx, *rec, desc, l)) {
        fprintf(stderr, "kiln bench: %s\n", kiln_error(ctx));
        return EXIT_INPUT;
    }
    b->layer_create_ms = kiln_now_ms() - t0;
    kiln_layer_desc wdesc = *desc;
    wdesc.N = b->N < 64 ? b->N : 64; /* its first rows: the same recipe, the same kernel family */
    if (a->cold && b->threads > 1 && kiln_layer_create(ctx, *rec, &wdesc, wake)) {
        fprintf(stderr, "kiln bench: %s\n", kiln_error(ctx));
        return EXIT_INPUT;
    }
    return EXIT_OK;
}

static int bench(const ToolArgs *a, const KilnPlanLayer *planned, BenchResult *bp)
{
    BenchResult b = *bp;
    b.threads = a->threads ? (int)a->threads : kiln_pool_default_threads();
    b.repeat = a->repeat ? (int)a->repeat : 10;
    b.warmup = a->have_warmup ? (int)a->warmup : 3;
    /* --threads, --repeat, --warmup, --probe-ms and the shape's matrix sizes are
     * within their limits already (tool_parse_args); the default too (the probes run
     * at most 64 threads) */
    b.threads = b.threads > TOOL_MAX_THREADS ? TOOL_MAX_THREADS : b.threads;
    KilnDiag d = {0};
    KilnRecipe *r = NULL;
    if (!planned && kiln_recipe_load(a->recipe, &r, &d)) {
        tool_error(&d);
        return tool_exit_code(d.code);
    }
    char layer[TOOL_NAME_BYTES];
    snprintf(layer, sizeof layer, "%s",
             planned ? planned->name : a->layer ? a->layer : kiln_recipe_rule_example(r, 0));
    kiln_recipe_free(r);
    b.layer = layer;

    char tmp[] = "/tmp/kiln-bench-XXXXXX";
    int64_t calib_rows = TOOL_CALIB_ROWS;
    /* The same data as `kiln run`: W ~ N(0, 1/sqrt(K)), bias N(0, 0.1), x N(0, 1). */
    float *w = NULL, *bias = NULL;
    tool_layer_data(a->seed, layer, b.N, b.K, &w, &bias);
    float *x = malloc(sizeof(float) * (size_t)(b.M * b.K));
    float *xcal = tool_calib_batch(a->seed, calib_rows, b.K);
    void *y = malloc(sizeof(float) * (size_t)(b.M * b.N));
    kiln_ctx *ctx = NULL;
    kiln_recipe *rec = NULL;
    kiln_layer *l = NULL, *wake = NULL;
    int e = EXIT_OK;
    if (!w || !bias || !x || !xcal || !y || !mkdtemp(tmp)) {
        fprintf(stderr, "kiln bench: out of memory (or no temp dir for the cold cache)\n");
        e = EXIT_INTERNAL;
        tmp[0] = 0;
        goto out;
    }
    tool_fill_normal(x, b.M * b.K, a->seed, "x", 1.0f);

    kiln_options o = {.target = b.target, .cache_dir = tmp, .num_threads = b.threads};
    if (kiln_ctx_create(&o, &ctx)) {
        fprintf(stderr, "kiln bench: %s\n", kiln_error(NULL));
        e = strstr(kiln_error(NULL), "cannot run") ? EXIT_NODEV : EXIT_INPUT;
        goto out;
    }
    b.target_asked = b.target;
    b.target = kiln_ctx_target(ctx);
    if ((e = time_compile(a, layer, tmp, xcal, calib_rows, planned, &b)))
        goto out;
    kiln_layer_desc desc = {.name = layer, .N = b.N, .K = b.K, .weight = w, .bias = bias,
                            .calib_x = xcal, .calib_rows = calib_rows};
    if ((e = create_layers(a, ctx, planned, &desc, &rec, &l, &wake, &b)))
        goto out;
    /* The kernel is a cache hit by now, so the rest of the create is the weights:
     * quantize + prepack (and lowering, which is microseconds). */
    double wms = b.layer_create_ms - b.compile_warm_ms;
    b.prepack_gbs = 4.0 * (double)(b.N * b.K) / ((wms > 1e-3 ? wms : 1e-3) * 1e6);
    b.kernel = kiln_layer_kernel(l);
    b.weight_bytes = kiln_layer_weight_bytes(l);
    size_t osz = kiln_layer_out_dtype(l) == KILN_DTYPE_F32 ? 4 : 2;
    b.ops = 2.0 * (double)b.M * (double)b.N * (double)b.K;
    b.bytes = (double)b.weight_bytes + 4.0 * (double)(b.M * b.K) + (double)osz * (double)(b.M * b.N);
    free(w); /* the layer keeps its own packed copy; give the probes the memory */
    w = NULL;

    /* Limits first, so the kernel runs right after on a machine in the same state. */
    double probe_ms = a->probe_ms ? (double)a->probe_ms : 1000;
    if (bench_probe_limits(b.threads, probe_ms, &b.lim)) {
        e = EXIT_INTERNAL;
        goto out;
    }
    float ywake[64 * 4];
    if ((e = time_runs(a, ctx, l, wake, x, y, ywake, &b)))
        goto out;
    rate(&b);
    if (a->json)
        e = print_json(&b);
    else
        print_text(&b);
    if (!e && a->report)
        e = write_report(a, &b);
out:
    kiln_layer_destroy(wake);
    kiln_layer_destroy(l);
    kiln_recipe_close(rec);
    kiln_ctx_destroy(ctx);
    rm_rf(tmp);
    free(w);
    free(bias);
    free(x);
    free(xcal);
    free(y);
    return e;
}
