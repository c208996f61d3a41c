/* tools/cmd_ir.c — `kiln ir` and `kiln targets`: show what the compiler does with a recipe. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "frontend/recipe.h"
#include "ir/layout.h"
#include "ir/outliers.h"
#include "model/eval/layer_method.h"
#include "passes/passes.h"
#include "tool.h"

/* What the host runs: the CPU, what "cpu" resolves to, and per CPU target whether
 * its kernels run here or would only be compiled (and why). */
static void print_host(void)
{
    const KilnHostCpu *h = kiln_host_cpu();
    KilnTarget host;
    KilnDiag d = {0};
    printf("\nthis machine: %s (%s, family %d model %d)\n", h->model, h->vendor[0] ? h->vendor : "?",
           h->family, h->model_id);
    if (kiln_target_lookup("cpu", &host, &d) == 0) {
        char tune[64];
        kiln_tune_str(host.tune, tune, sizeof tune);
        printf("  cpu = %s%s%s%s\n", host.name, tune[0] ? " with tune " : "", tune,
               tune[0] ? "" : " (portable kernels)");
    } else {
        printf("  cpu: %s\n", d.msg);
    }
    bool thp_on = !strcmp(h->thp, "always") || !strcmp(h->thp, "madvise");
    printf("  transparent huge pages: %s%s\n", h->thp[0] ? h->thp : "unknown",
           h->tune & KILN_TUNE_HUGEPAGE_WEIGHTS ? " (weights advised into huge pages; decode "
                                                  "loops without software prefetch)"
           : thp_on && strcmp(h->vendor, "AuthenticAMD") ? " (weights advised into huge pages; "
             "decode loops keep their software prefetch: not an AMD core)" : "");
    bool far = h->tune & KILN_TUNE_FAR_PREFETCH;
    if (!(h->tune & KILN_TUNE_HUGEPAGE_WEIGHTS))
        printf("  decode prefetch: %d bytes ahead of the weight stream%s\n",
               far ? KILN_PF_AHEAD_FAR : KILN_PF_AHEAD,
               far ? " into L2 (far-prefetch: an Intel core, where 1024 into L1 measured 12-17 % "
                     "slower and 4096 into L1 2-5 %)" : "");
    if (h->fma_ns > 0)
        printf("  subnormal operands: %s (probe: FMA %.3f ns, with a subnormal operand %.3f ns; "
               "%.2f ms)\n", h->tune & KILN_TUNE_SUBNORMAL_FREE ? "free" : "slow (microcode assist)",
               h->fma_ns, h->fma_subnormal_ns, h->probe_ms);
    int n;
    const KilnTarget *t = kiln_targets(&n);
    for (int i = 0; i < n; i++) {
        if (t[i].kind != KILN_TGT_CPU || !t[i].level)
            continue;
        const char *why = kiln_target_cannot_run(&t[i]);
        printf("  %-10s %s%s\n", t[i].name, why ? "compiled only here, cannot run here: " : "runs here",
               why ? why : "");
    }
    printf("  sm_XX      compiled only here: no CUDA device is queried by `kiln targets` "
           "(`kiln run --target cuda` runs on one)\n");
}

int cmd_targets(const ToolArgs *a)
{
    (void)a;
    int n;
    const KilnTarget *t = kiln_targets(&n);
    printf("%-10s %-6s %s\n", "target", "kind", "runs natively");
    for (int i = 0; i < n; i++) {
        const char *kind = t[i].kind == KILN_TGT_INTERP ? "interp"
                           : t[i].kind == KILN_TGT_CPU  ? "cpu"
                                                        : "cuda";
        printf("%-10s %-6s %s\n", t[i].name, kind, t[i].summary);
    }
    print_host();
    return EXIT_OK;
}

/* Rule i has no example layer of its own: say so, and what its example falls under
 * instead, since the example's kernel (f32, or another rule's) is not this rule's. */
static void note_unexercised(const KilnRecipe *r, int i, const char *name, int *count)
{
    static const char *const probes[] = {"lm_head", "x", "model.layers.1.mlp.up_proj",
                                         "encoder.layer.3.attention.self.query"};
    bool all = true; /* an f32 recipe (recipes/f32.lua: ignore = { "*" }): f32 is its point */
    for (size_t k = 0; k < sizeof probes / sizeof probes[0]; k++)
        all = all && kiln_recipe_ignored(r, probes[k]);
    if (all)
        return;
    if (++*count > 5)
        return; /* a recipe of thousands of shadowed rules: the first few, then a count */
    int other = kiln_recipe_match(r, name);
    char what[160];
    if (kiln_recipe_ignored(r, name) || other < 0)
        snprintf(what, sizeof what, "%s", kiln_recipe_ignored(r, name) ? "the ignore list (f32)"
                                                                      : "no rule (f32)");
    else
        snprintf(what, sizeof what, "rule \"%.100s\" (line %d)",
                 kiln_recipe_rule_pattern(r, other), kiln_recipe_rule_line(r, other));
    fprintf(stderr, "kiln: note: %s:%d: rule \"%s\": no example layer name was found that this "
            "rule governs; its example '%s' falls under %s, so this rule's kernel is not "
            "built here (--layer NAME picks a layer of it)\n", kiln_recipe_file(r),
            kiln_recipe_rule_line(r, i), kiln_recipe_rule_pattern(r, i), name, what);
}

/* Layer i's method on its synthetic weights, from a batch of 8K rows (at most 8192, at
 * least 64) whose first 64 are its calibration batch; a layer whose method ran gets its
 * own calibration batch, transformed as its input is (x[:, perm] / s), so static scales
 * see what the kernel will. Many rows per column, because the synthetic inputs are
 * independent N(0, 1): GPTQ fitted to 2K rows gained 1.2 dB on them and lost 1.6 dB on
 * the run's input against round to nearest (K = 512); with 8K it is within 0.3 dB of
 * round to nearest on both, the most a method can do without correlated inputs. */
static int plan_method(const ToolArgs *a, const KilnRecipe *r, const KilnTarget *t, ToolPlan *p,
                       int i, KilnDiag *d)
{
    const KilnPlanLayer *l = &p->layers[i];
    int64_t K = l->K, rows = 8 * K < 8192 ? 8 * K : 8192;
    if (rows < TOOL_CALIB_ROWS || K > KILN_LAYER_METHOD_MAX_K) /* over: run says it skipped */
        rows = TOOL_CALIB_ROWS;
    float *w = NULL, *b = NULL, *x = NULL;
    int rc = tool_layer_data(a->seed, l->name, l->N, K, &w, &b) ||
                     !(x = tool_layer_calib(a->seed, r, l->name, rows, K))
                 ? kiln_diag_set(d, KILN_EINTERNAL, "out of memory")
                 : kiln_layer_method_run(r, l->name, t, w, l->N, K, x, rows, &p->method[i], d);
    if (!rc && p->method[i].wt) {
        if (p->calib[i] != p->shared)
            free(p->calib[i]);
        p->calib[i] = x; /* its first rows, as the layer takes them */
        x = NULL;
        rc = kiln_layer_method_input(&p->method[i], p->calib[i], TOOL_CALIB_ROWS)
                 ? kiln_diag_set(d, KILN_EINTERNAL, "out of memory")
                 : 0;
        p->layers[i].calib_x = p->calib[i];
    }
    free(w);
    free(b);
    free(x);
    return rc;
}

/* The layers a command works on (the named one, or one example per rule), each with the
 * synthetic calibration batch of its name (tool_layer_calib: static scales and outlier
 * columns, as `kiln run` calibrates), planned together by the one planner. */
int tool_plan(const ToolArgs *a, const KilnRecipe *r, const KilnTarget *t, KilnModule *m,
              FILE *print_after_all, ToolPlan *p, KilnDiag *d)
{
    bool methods = p->methods;
    memset(p, 0, sizeof *p);
    int n = a->layer ? 1 : kiln_recipe_nrules(r);
    p->layers = calloc((size_t)(n > 0 ? n : 1), sizeof *p->layers);
    p->calib = calloc((size_t)(n > 0 ? n : 1), sizeof *p->calib);
    p->methods = methods;
    if (methods)
        p->method = calloc((size_t)(n > 0 ? n : 1), sizeof *p->method);
    if (!p->layers || !p->calib || (methods && !p->method))
        return kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
    p->n = n;
    /* Layers without outlier columns share one batch (the same seed makes the same
     * rows): 45,000 example layers once took a batch each, 740 MB at K = 64. */
    for (int i = 0; i < n; i++) {
        const char *name = a->layer ? a->layer : kiln_recipe_rule_example(r, i);
        if (!name)
            return kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
        if (!a->layer && !kiln_recipe_rule_example_lands(r, i))
            note_unexercised(r, i, name, &p->unexercised);
        if (kiln_recipe_outliers(r, name, NULL, NULL))
            p->calib[i] = tool_layer_calib(a->seed, r, name, TOOL_CALIB_ROWS, a->K);
        else
            p->calib[i] = p->shared ? p->shared
                                    : (p->shared = tool_calib_batch(a->seed, TOOL_CALIB_ROWS, a->K));
        if (!p->calib[i])
            return kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
        p->layers[i] = (KilnPlanLayer){.name = name, .M = a->M, .N = a->N, .K = a->K,
                                       .calib_x = p->calib[i], .calib_rows = TOOL_CALIB_ROWS};
        int rc = methods ? plan_method(a, r, t, p, i, d) : 0;
        if (rc)
            return rc;
    }
    if (p->unexercised > 5)
        fprintf(stderr, "kiln: note: %d more rules without an example layer of their own\n",
                p->unexercised - 5);
    return kiln_plan_layers(r, t, p->layers, n, m, print_after_all, d);
}

void tool_plan_free(ToolPlan *p)
{
    for (int i = 0; p->method && i < p->n; i++)
        kiln_layer_method_free(&p->method[i]);
    free(p->method);
    for (int i = 0; p->calib && i < p->n; i++)
        if (p->calib[i] != p->shared)
            free(p->calib[i]);
    free(p->shared);
    free(p->calib);
    free(p->layers);
    memset(p, 0, sizeof *p);
}

const char *tool_target_name(const ToolArgs *a, const KilnRecipe *r, const char *dflt)
{
    if (a->target)
        return a->target;
    if (kiln_recipe_target(r))
        return kiln_recipe_target(r);
    return dflt;
}

/* `kiln ir FILE.kir`: the file's functions planned for the target (its own by default);
 * final IR prints back unchanged, lowered IR gets its layouts. */
static int ir_file(const ToolArgs *a)
{
    KilnDiag d = {0};
    KilnModule *m = kiln_module_new();
    ToolPlan plan = {0};
    KilnTarget t;
    int rc = m ? tool_ir_load(a->recipe, m, &d) : kiln_diag_set(&d, KILN_EINTERNAL, "out of memory");
    if (!rc && (a->have_shape || a->layer))
        rc = kiln_diag_set(&d, KILN_EINPUT, "%s: an IR file's layers and shapes are its functions'; "
                           "drop --shape and --layer", a->recipe);
    if (!rc) {
        const char *tname = a->target ? a->target : tool_ir_target(m) ? tool_ir_target(m) : "cpu";
        rc = kiln_target_lookup(tname, &t, &d);
    }
    if (!rc) {
        tool_ir_apply_tune(m, &t);
        if (a->print_after_all)
            printf("; kiln ir: IR file %s, target %s\n", a->recipe, t.name);
        rc = tool_plan_ir(a, &t, m, a->print_after_all ? stdout : NULL, &plan, &d);
    }
    if (!rc && !a->print_after_all) {
        printf("; kiln ir: IR file %s, target %s\n", a->recipe, t.name);
        kiln_print_module(stdout, m);
    }
    fflush(stdout); /* what was printed comes before an error, not after it */
    if (rc)
        tool_error(&d);
    tool_plan_free(&plan);
    kiln_module_free(m);
    return rc ? tool_exit_code(rc) : EXIT_OK;
}

int cmd_ir(const ToolArgs *a)
{
    if (a->recipe && tool_is_ir_file(a->recipe))
        return ir_file(a);
    if (!a->recipe || !a->have_shape) {
        fprintf(stderr, "kiln ir: usage: kiln ir RECIPE --shape M,N,K [--layer NAME] [--target T] "
                        "[--print-after-all]\n       kiln ir FILE.kir [--target T] "
                        "[--print-after-all]\n");
        return EXIT_INPUT;
    }
    KilnDiag d = {0};
    KilnRecipe *r = NULL;
    KilnModule *m = NULL;
    ToolPlan plan = {0};
    int rc = kiln_recipe_load(a->recipe, &r, &d);
    if (rc)
        goto fail;
    const char *tname = tool_target_name(a, r, "cpu");
    KilnTarget t;
    if ((rc = kiln_target_lookup(tname, &t, &d)))
        goto fail;
    m = kiln_module_new();
    if (a->print_after_all)
        printf("; kiln ir: recipe %s (%s), target %s, shape M=%lld N=%lld K=%lld\n", a->recipe,
               kiln_recipe_name(r), t.name, (long long)a->M, (long long)a->N, (long long)a->K);
    if ((rc = tool_plan(a, r, &t, m, a->print_after_all ? stdout : NULL, &plan, &d)))
        goto fail;
    if (!a->print_after_all) {
        printf("; kiln ir: recipe %s (%s), target %s, shape M=%lld N=%lld K=%lld\n", a->recipe,
               kiln_recipe_name(r), t.name, (long long)a->M, (long long)a->N, (long long)a->K);
        kiln_print_module(stdout, m);
    }
    tool_plan_free(&plan);
    kiln_module_free(m);
    kiln_recipe_free(r);
    return EXIT_OK;
fail:
    fflush(stdout); /* the header and any IR printed come before the error, not after it */
    tool_error(&d);
    tool_plan_free(&plan);
    kiln_module_free(m);
    kiln_recipe_free(r);
    return tool_exit_code(rc);
}
