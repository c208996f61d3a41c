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
            return passes[i].fn(m, t, d);
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
