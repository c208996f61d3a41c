/* tools/bench_model.c — `kiln bench RECIPE --model smollm2|minilm|PATH`: a whole model's
 * prompt-processing and text-generation speed (model/eval/bench_model.c), printed as the
 * Markdown table llama-bench prints, or (--json) as llama-bench's `-o json`: an array of
 * one object per test with its field names (docs/bench.md, "Whole-model speed"). */
#include <libgen.h>
#include <stdio.h>
#include <string.h>

#include "ir/target.h"
#include "model/eval/bench_model.h"
#include "runtime/progress.h"
#include "runtime/runtime.h"
#include "tools/tool.h"

#define NCOL 7

/* The model column: the file's (or directory's) name. */
static void model_name(const KilnBenchModelOut *r, char *buf, size_t n)
{
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s", r->path);
    snprintf(buf, n, "%s (%s)", basename(tmp), r->net);
}

static void backend(const KilnBenchModelOut *r, char *buf, size_t n)
{
    snprintf(buf, n, "kiln %s %s", r->target, r->recipe_name);
}

/* llama-bench's table: columns padded to their widest cell, numbers right-aligned. */
static void print_table(const KilnBenchModelOut *r)
{
    static const char *const head[NCOL] = {"model", "size", "params", "backend",
                                           "threads", "test", "t/s"};
    static const char right[NCOL] = {0, 1, 1, 0, 1, 1, 1};
    char cell[2][NCOL][320];
    int w[NCOL];
    for (int c = 0; c < NCOL; c++)
        w[c] = (int)strlen(head[c]) > 3 ? (int)strlen(head[c]) : 3;
    for (int i = 0; i < r->ntests; i++) {
        const KilnBenchTest *t = &r->test[i];
        char (*row)[320] = cell[i];
        model_name(r, row[0], sizeof row[0]);
        snprintf(row[1], sizeof row[1], "%.2f MiB", (double)r->size_bytes / (1024.0 * 1024.0));
        snprintf(row[2], sizeof row[2], "%.2f M", (double)r->n_params / 1e6);
        backend(r, row[3], sizeof row[3]);
        snprintf(row[4], sizeof row[4], "%d", r->threads);
        snprintf(row[5], sizeof row[5], "%s", t->name);
        snprintf(row[6], sizeof row[6], "%.2f ± %.2f", t->avg_ts, t->stddev_ts);
        for (int c = 0; c < NCOL; c++) { /* "±" is two bytes and one column */
            int len = (int)strlen(row[c]) - (c == 6);
            w[c] = len > w[c] ? len : w[c];
        }
    }
    for (int c = 0; c < NCOL; c++)
        printf("| %-*s ", w[c], head[c]);
    printf("|\n");
    for (int c = 0; c < NCOL; c++) {
        printf("| ");
        for (int k = 0; k < w[c] - (int)right[c]; k++)
            putchar('-');
        printf("%s ", right[c] ? ":" : "");
    }
    printf("|\n");
    for (int i = 0; i < r->ntests; i++) {
        for (int c = 0; c < NCOL; c++)
            printf(right[c] ? "| %*s " : "| %-*s ", w[c] + (c == 6), cell[i][c]);
        printf("|\n");
    }
    if (r->note[0])
        printf("\n%s\n", r->note);
}

static void json_test(KilnJsonWriter *w, const KilnBenchModelOut *r, const KilnBenchTest *t)
{
    char buf[256];
    kiln_jw_begin_object(w);
    kiln_jw_kv_str(w, "model_filename", r->path);
    kiln_jw_kv_str(w, "model_type", r->net);
    kiln_jw_kv_int(w, "model_size", r->size_bytes);
    kiln_jw_kv_int(w, "model_n_params", r->n_params);
    kiln_jw_kv_str(w, "cpu_info", kiln_host_cpu()->model);
    backend(r, buf, sizeof buf);
    kiln_jw_kv_str(w, "backend", buf);
    kiln_jw_kv_str(w, "recipe", r->recipe_name);
    kiln_jw_kv_str(w, "target", r->target);
    kiln_jw_kv_int(w, "n_threads", r->threads);
    kiln_jw_kv_str(w, "test", t->name);
    kiln_jw_kv_int(w, "n_prompt", t->n_prompt);
    kiln_jw_kv_int(w, "n_gen", t->n_gen);
    kiln_jw_kv_int(w, "avg_ns", (int64_t)t->avg_ns);
    kiln_jw_kv_int(w, "stddev_ns", (int64_t)t->stddev_ns);
    kiln_jw_key(w, "avg_ts");
    kiln_jw_double(w, t->avg_ts);
    kiln_jw_key(w, "stddev_ts");
    kiln_jw_double(w, t->stddev_ts);
    kiln_jw_key(w, "samples_ns");
    kiln_jw_begin_array(w);
    for (int i = 0; i < t->n; i++)
        kiln_jw_int(w, (int64_t)t->samples_ns[i]);
    kiln_jw_end_array(w);
    kiln_jw_key(w, "samples_ts");
    kiln_jw_begin_array(w);
    for (int i = 0; i < t->n; i++)
        kiln_jw_double(w, t->samples_ts[i]);
    kiln_jw_end_array(w);
    kiln_jw_end_object(w);
}

static int print_json(const KilnBenchModelOut *r)
{
    KilnJsonWriter w;
    kiln_jw_init(&w, stdout);
    kiln_jw_begin_array(&w);
    for (int i = 0; i < r->ntests; i++)
        json_test(&w, r, &r->test[i]);
    kiln_jw_end_array(&w);
    KilnDiag d = {0};
    if (kiln_jw_finish(&w, &d)) {
        tool_error(&d);
        return EXIT_INTERNAL;
    }
    return EXIT_OK;
}

/* Options of the single-layer benchmark that mean nothing for a whole model. */
static int check_options(const ToolArgs *a)
{
    const char *bad = a->have_shape ? "--shape" : a->layer ? "--layer" : a->cold ? "--cold"
                    : a->report ? "--report" : a->have_warmup ? "--warmup"
                    : a->probe_ms ? "--probe-ms" : a->shapes_file ? "--shapes" : NULL;
    if (bad) {
        fprintf(stderr, "kiln bench: %s is an option of one layer's benchmark, not of --model "
                        "(a model's tests run one warm-up, then --repeat timed runs)\n", bad);
        return EXIT_INPUT;
    }
    if (a->have_bench_prompt && a->have_bench_gen && !a->bench_prompt && !a->bench_gen) {
        fprintf(stderr, "kiln bench: -p 0 and -n 0 leave no test to run\n");
        return EXIT_INPUT;
    }
    return EXIT_OK;
}

int cmd_bench_model(const ToolArgs *a)
{
    int e = check_options(a);
    if (e)
        return e;
    KilnBenchModelOpts o = {
        .recipe = a->recipe, .model = a->model, .target = a->target,
        .n_prompt = a->have_bench_prompt ? (int)a->bench_prompt : 512,
        .n_gen = a->have_bench_gen ? (int)a->bench_gen : 128,
        .threads = (int)a->threads, .repeat = a->repeat ? (int)a->repeat : 5,
        .verbose = a->verbose, .progress = tool_progress(a)};
    KilnBenchModelOut r;
    KilnDiag d = {0};
    int rc = kiln_bench_model(&o, &r, &d);
    kiln_progress_free(o.progress);
    if (rc) {
        tool_error(&d);
        kiln_bench_model_free(&r);
        return tool_exit_code(rc);
    }
    if (a->json)
        e = print_json(&r);
    else
        print_table(&r);
    kiln_bench_model_free(&r);
    return e;
}
