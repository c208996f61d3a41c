/* api/plan.c — the one way from a recipe's layer to a kernel (api/plan.h): outlier
 * columns, lowering, the passes and static calibration; and the kernel key. */
#include <stdlib.h>
#include <string.h>

#include "api/compile.h"
#include "api/plan.h"
#include "ir/outliers.h"
#include "runtime/runtime.h"

/* The outlier columns of a layer whose rule asks for them, from its calibration rows
 * (*idx malloc'd, *n of them, possibly 0); nothing for other layers. */
static int outlier_cols(const KilnRecipe *r, const KilnPlanLayer *p, int64_t **idx, int64_t *n,
                        KilnDiag *d)
{
    float th, frac;
    *idx = NULL;
    *n = 0;
    if (!kiln_recipe_outliers(r, p->name, &th, &frac))
        return 0;
    if (!p->calib_x || p->calib_rows <= 0)
        return kiln_diag_set(d, KILN_EINPUT,
                             "layer '%s': the recipe's outliers = {...} picks the outlier columns "
                             "from calibration activations: give calib_x and calib_rows",
                             p->name);
    *idx = malloc(sizeof(int64_t) * (size_t)p->K);
    *n = *idx ? kiln_outlier_pick(p->calib_x, p->calib_rows, p->K, th, frac, *idx) : -1;
    if (*n < 0) {
        free(*idx);
        *idx = NULL;
        *n = 0;
        return kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
    }
    return 0;
}

static int lower(const KilnRecipe *r, const KilnTarget *t, KilnPlanLayer *p, KilnModule *m,
                 KilnDiag *d)
{
    KilnLowerOpts lo = {.stored = p->stored, .stored_act = p->stored_act};
    int64_t *idx = NULL;
    int rc = outlier_cols(r, p, &idx, &lo.noutliers, d);
    lo.outlier_idx = idx;
    if (!rc)
        rc = kiln_lower_layer_ex(r, p->name, p->M, p->N, p->K, t->name, &lo, m, &p->f, d);
    if (!rc && p->any_m)
        kiln_fset_int(p->f, "any_m", 1);
    free(idx);
    return rc;
}

static int finish(KilnModule *m, const KilnTarget *t, KilnPlanLayer *layers, int n,
                  FILE *print_after_all, KilnDiag *d);

int kiln_plan_layers(const KilnRecipe *r, const KilnTarget *t, KilnPlanLayer *layers, int n,
                     KilnModule *m, FILE *print_after_all, KilnDiag *d)
{
    if (!r || !t || !m || (n > 0 && !layers))
        return kiln_diag_set(d, KILN_EINTERNAL, "kiln_plan_layers: no recipe, target or module");
    for (int i = 0; i < n; i++) {
        layers[i].f = NULL;
        layers[i].qgemm = NULL;
        layers[i].calibrated = false;
        int rc = lower(r, t, &layers[i], m, d);
        if (rc)
            return rc;
    }
    if (print_after_all) {
        fprintf(print_after_all, "; *** IR after lower ***\n");
        kiln_print_module(print_after_all, m);
    }
    return finish(m, t, layers, n, print_after_all, d);
}

/* The pass pipeline once over the module, then each layer's qgemm and static
 * calibration: what a recipe's layers and an IR file's functions share. */
static int finish(KilnModule *m, const KilnTarget *t, KilnPlanLayer *layers, int n,
                  FILE *print_after_all, KilnDiag *d)
{
    int rc = kiln_run_pipeline(m, t, print_after_all, d);
    if (rc)
        return rc;
    for (int i = 0; i < n; i++) {
        KilnPlanLayer *p = &layers[i];
        p->qgemm = kiln_find_qgemm(p->f);
        if (p->qgemm && p->calib_x && p->calib_rows > 0) {
            int c = kiln_calibrate_static(p->f, p->calib_x, p->calib_rows * p->K);
            if (c < 0)
                return kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
            p->calibrated = c > 0;
        }
    }
    return 0;
}

/* A function of IR text as a layer: x[M,K] its first parameter, y[M,N] its result. */
static int ir_layer(KilnFunc *f, const KilnTarget *t, KilnPlanLayer *p, KilnDiag *d)
{
    const KilnType *yt = NULL;
    for (int i = 0; i < f->ninsts; i++)
        if (f->insts[i].op == KILN_OP_RETURN && f->insts[i].nops == 1)
            yt = &f->values[f->insts[i].ops[0]].type;
    if (f->nparams < 1 || f->values[f->params[0]].type.rank != 2 || !yt || yt->rank != 2 ||
        yt->dim[0] != f->values[f->params[0]].type.dim[0])
        return kiln_diag_set(d, KILN_EINPUT,
                             "func @\"%s\": a layer takes x[M,K] as its first parameter and "
                             "returns y[M,N]", f->name);
    const KilnAttr *ta = kiln_fget(f, "target");
    const char *ft = ta && (ta->kind == KILN_ATTR_STR || ta->kind == KILN_ATTR_IDENT) ? ta->s : NULL;
    if (ft && strcmp(ft, t->name) != 0) {
        bool planned = false;
        for (int i = 0; i < f->ninsts; i++)
            planned |= f->insts[i].op == KILN_OP_PREPACK || kiln_get(&f->insts[i], "layout");
        if (planned)
            return kiln_diag_set(d, KILN_EINPUT,
                                 "func @\"%s\" was planned for target %s (its layouts and "
                                 "prepacks are %s's); it cannot run on %s: give --target %s, or "
                                 "remove the layout attributes and prepacks to plan it again",
                                 f->name, ft, ft, t->name, ft);
    }
    if (!ft || strcmp(ft, t->name) != 0)
        kiln_fset_ident(f, "target", t->name);
    p->name = f->name;
    p->M = yt->dim[0];
    p->N = yt->dim[1];
    p->K = f->values[f->params[0]].type.dim[1];
    p->f = f;
    return 0;
}

int kiln_plan_ir(KilnModule *m, const KilnTarget *t, KilnPlanLayer *layers, int n,
                 FILE *print_after_all, KilnDiag *d)
{
    if (!m || !t || n != m->nfuncs || (n > 0 && !layers))
        return kiln_diag_set(d, KILN_EINTERNAL, "kiln_plan_ir: one layer per function");
    for (int i = 0; i < n; i++) {
        int rc = ir_layer(m->funcs[i], t, &layers[i], d);
        if (rc)
            return rc;
    }
    return finish(m, t, layers, n, print_after_all, d);
}
