/* passes/pipeline.c — the pass pipeline (verify, fuse_qgemm, pick_layout, prepack,
 * dce, verify) and running single passes by name, as the text tests and
 * `kiln ir --pass` do. */
#include <string.h>

#include "passes/passes.h"

typedef int (*PassFn)(KilnModule *, const KilnTarget *, KilnDiag *);

static const struct {
    const char *name;
    PassFn fn;
} passes[] = {
    {"verify", kiln_pass_verify},         {"fuse_qgemm", kiln_pass_fuse_qgemm},
    {"pick_layout", kiln_pass_pick_layout}, {"prepack", kiln_pass_prepack},
    {"dce", kiln_pass_dce},
};
#define NPASSES ((int)(sizeof passes / sizeof passes[0]))

/* verify again at the end: a pass that broke the IR is caught before codegen */
static const int pipeline[] = {0, 1, 2, 3, 4, 0};

/* Instruction attributes the passes set. An instruction's attribute array has a fixed
 * size (KILN_MAX_ATTRS) and setting one more aborts in ir/ir.c, so IR text whose other
 * attributes leave no room for these is refused before any pass runs. */
static const char *const pass_keys[] = {"act", "act_dtype", "epilogue", "outliers", "layout", "why"};
#define NPASS_KEYS ((int)(sizeof pass_keys / sizeof pass_keys[0]))

static int check_attr_room(const KilnModule *m, KilnDiag *d)
{
    for (int fi = 0; fi < m->nfuncs; fi++) {
        const KilnFunc *f = m->funcs[fi];
        for (int i = 0; i < f->ninsts; i++) {
            const KilnInst *in = &f->insts[i];
            int other = 0;
            for (int a = 0; a < in->nattrs; a++) {
                int k = 0;
                while (k < NPASS_KEYS && strcmp(in->attrs[a].key, pass_keys[k]) != 0)
                    k++;
                other += k == NPASS_KEYS;
            }
            if (other + NPASS_KEYS > KILN_MAX_ATTRS)
                return kiln_diag_set(d, KILN_EINPUT,
                                     "func @\"%s\": instruction %d has %d attributes besides the %d the "
                                     "passes set; at most %d are allowed",
                                     f->name, i + 1, other, NPASS_KEYS, KILN_MAX_ATTRS - NPASS_KEYS);
        }
    }
    return 0;
}

const char *const *kiln_pass_names(int *n)
{
    static const char *const names[] = {"verify", "fuse_qgemm", "pick_layout", "prepack", "dce"};
    _Static_assert(sizeof names / sizeof names[0] == sizeof passes / sizeof passes[0],
                   "pass name table out of step");
    *n = NPASSES;
    return names;
}

int kiln_run_pass(const char *name, KilnModule *m, const KilnTarget *t, KilnDiag *d)
{
    for (int i = 0; i < NPASSES; i++)
        if (name && strcmp(passes[i].name, name) == 0)
            return check_attr_room(m, d) ? KILN_EINPUT : passes[i].fn(m, t, d);
    char list[256] = "";
    for (int i = 0; i < NPASSES; i++) {
        strncat(list, i ? ", " : "", sizeof list - strlen(list) - 1);
        strncat(list, passes[i].name, sizeof list - strlen(list) - 1);
    }
    return kiln_diag_set(d, KILN_EINPUT, "unknown pass \"%s\"; passes: %s", name ? name : "",
                         list);
}

int kiln_run_pipeline(KilnModule *m, const KilnTarget *t, FILE *print_after_all, KilnDiag *d)
{
    if (check_attr_room(m, d))
        return KILN_EINPUT;
    for (size_t i = 0; i < sizeof pipeline / sizeof pipeline[0]; i++) {
        int p = pipeline[i];
        int rc = passes[p].fn(m, t, d);
        if (rc) {
            /* say which pass stopped, keeping the pass's own message */
            size_t len = strnlen(d->msg, sizeof d->msg - 1);
            snprintf(d->msg + len, sizeof d->msg - len, " (in pass %s, target %s)",
                     passes[p].name, t->name);
            return rc;
        }
        if (print_after_all) {
            fprintf(print_after_all, "; *** IR after %s ***\n", passes[p].name);
            kiln_print_module(print_after_all, m);
        }
    }
    return KILN_OK;
}
