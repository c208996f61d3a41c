/* passes/dce.c — dead code elimination: drops instructions whose results nobody
 * uses (returns stay), to a fixed point, then compacts each function. */
#include <stdlib.h>

#include "passes/passes.h"

static int dce_func(KilnFunc *f, KilnDiag *d)
{
    int *uses = calloc((size_t)(f->nvalues ? f->nvalues : 1), sizeof *uses);
    if (!uses)
        return kiln_diag_set(d, KILN_EINTERNAL, "dce: out of memory");
    for (int i = 0; i < f->ninsts; i++) {
        const KilnInst *in = &f->insts[i];
        if (in->dead)
            continue;
        for (int j = 0; j < in->nops; j++)
            if (in->ops[j] >= 0 && in->ops[j] < f->nvalues)
                uses[in->ops[j]]++;
    }
    /* Uses come after defs, so one backward sweep frees whole chains; the loop is
     * for IR that is out of order (hand-written text), where a sweep can miss one. */
    for (bool changed = true; changed;) {
        changed = false;
        for (int i = f->ninsts - 1; i >= 0; i--) {
            KilnInst *in = &f->insts[i];
            if (in->dead || in->op == KILN_OP_RETURN || in->result < 0 || uses[in->result] > 0)
                continue;
            in->dead = true;
            changed = true;
            for (int j = 0; j < in->nops; j++)
                if (in->ops[j] >= 0 && in->ops[j] < f->nvalues)
                    uses[in->ops[j]]--;
        }
    }
    free(uses);
    kiln_func_compact(f);
    return KILN_OK;
}

int kiln_pass_dce(KilnModule *m, const KilnTarget *t, KilnDiag *d)
{
    (void)t;
    for (int i = 0; i < m->nfuncs; i++) {
        int rc = dce_func(m->funcs[i], d);
        if (rc)
            return rc;
    }
    return KILN_OK;
}
