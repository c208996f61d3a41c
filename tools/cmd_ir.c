/* tools/cmd_ir.c — `kiln ir` and `kiln targets`: show what the compiler does with a recipe. */
#include <stdio.h>
#include <stdlib.h>

#include "frontend/recipe.h"
#include "ir/outliers.h"
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
    printf("  transparent huge pages: %s%s\n", h->thp[0] ? h->thp : "unknown",
           h->tune & KILN_TUNE_HUGEPAGE_WEIGHTS ? " (weights advised into huge pages; decode "
                                                  "loops without software prefetch)" : "");
    if (h->fma_ns > 0)
        printf("  subnormal operands: %s (probe: FMA %.3f ns, with a subnormal operand %.3f ns; "
               "%.2f ms)\n", h->tune & KILN_TUNE_SUBNORMAL_FREE ? "free" : "slow (microcode assist)",
               h->fma_ns, h->fma_subnormal_ns, h->probe_ms);
    int n;
    const KilnTarget *t = kiln_targets(&n);
    for (int i = 0; i < n; i++) {
        if (t[i].kind != KILN_TGT_CPU || !t[i].level)
            continue;
        printf("  %-8s %s\n", t[i].name,
               kiln_target_host_runs(&t[i]) ? "runs here"
                                            : "compiled only here: this CPU lacks its ISA level");
    }
    printf("  sm_XX    compiled only here: no CUDA device is queried by `kiln targets` "
           "(`kiln run --target cuda` runs on one)\n");
}

int cmd_targets(const ToolArgs *a)
{
    (void)a;
    int n;
    const KilnTarget *t = kiln_targets(&n);
    printf("%-8s %-6s %s\n", "target", "kind", "runs natively");
    for (int i = 0; i < n; i++) {
        const char *kind = t[i].kind == KILN_TGT_INTERP ? "interp"
                           : t[i].kind == KILN_TGT_CPU  ? "cpu"
                                                        : "cuda";
        printf("%-8s %-6s %s\n", t[i].name, kind, t[i].summary);
    }
    print_host();
    return EXIT_OK;
}

/* One layer; a rule with outliers = {...} takes its columns from the layer's synthetic
 * calibration batch (tool_layer_calib), as `kiln run` calibrates. */
static int lower_one(const ToolArgs *a, const KilnRecipe *r, const char *layer,
                     const char *target, KilnModule *m, KilnDiag *d)
{
    KilnFunc *f;
    KilnLowerOpts lo = {0};
    float th, frac;
    int64_t *idx = NULL;
    if (kiln_recipe_outliers(r, layer, &th, &frac)) {
        float *xc = tool_layer_calib(a->seed, r, layer, TOOL_CALIB_ROWS, a->K);
        idx = malloc(sizeof(int64_t) * (size_t)a->K);
        lo.noutliers = xc && idx ? kiln_outlier_pick(xc, TOOL_CALIB_ROWS, a->K, th, frac, idx) : -1;
        lo.outlier_idx = idx;
        free(xc);
        if (lo.noutliers < 0) {
            free(idx);
            return kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
        }
    }
    int rc = kiln_lower_layer_ex(r, layer, a->M, a->N, a->K, target, &lo, m, &f, d);
    free(idx);
    return rc;
}

/* Lower the layers a command works on into m: the named one, or one example per rule. */
int tool_lower(const ToolArgs *a, const KilnRecipe *r, const char *target, KilnModule *m,
               KilnDiag *d)
{
    if (a->layer)
        return lower_one(a, r, a->layer, target, m, d);
    for (int i = 0; i < kiln_recipe_nrules(r); i++) {
        int rc = lower_one(a, r, kiln_recipe_rule_example(r, i), target, m, d);
        if (rc)
            return rc;
    }
    return 0;
}

const char *tool_target_name(const ToolArgs *a, const KilnRecipe *r, const char *dflt)
{
    if (a->target)
        return a->target;
    if (kiln_recipe_target(r))
        return kiln_recipe_target(r);
    return dflt;
}

int cmd_ir(const ToolArgs *a)
{
    if (!a->recipe || !a->have_shape) {
        fprintf(stderr, "kiln ir: usage: kiln ir RECIPE --shape M,N,K [--layer NAME] [--target T] "
                        "[--print-after-all]\n");
        return EXIT_INPUT;
    }
    KilnDiag d = {0};
    KilnRecipe *r = NULL;
    KilnModule *m = NULL;
    int rc = kiln_recipe_load(a->recipe, &r, &d);
    if (rc)
        goto fail;
    const char *tname = tool_target_name(a, r, "cpu");
    KilnTarget t;
    if ((rc = kiln_target_lookup(tname, &t, &d)))
        goto fail;
    m = kiln_module_new();
    if ((rc = tool_lower(a, r, t.name, m, &d)))
        goto fail;
    printf("; kiln ir: recipe %s (%s), target %s, shape M=%lld N=%lld K=%lld\n", a->recipe,
           kiln_recipe_name(r), t.name, (long long)a->M, (long long)a->N, (long long)a->K);
    if (a->print_after_all) {
        printf("; *** IR after lower ***\n");
        kiln_print_module(stdout, m);
    }
    if ((rc = kiln_run_pipeline(m, &t, a->print_after_all ? stdout : NULL, &d)))
        goto fail;
    if (!a->print_after_all)
        kiln_print_module(stdout, m);
    kiln_module_free(m);
    kiln_recipe_free(r);
    return EXIT_OK;
fail:
    tool_error(&d);
    kiln_module_free(m);
    kiln_recipe_free(r);
    return tool_exit_code(rc);
}
