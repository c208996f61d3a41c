/* passes/passutil.c — small helpers the passes share: fresh value names and
 * attribute removal (the builder in ir/ir.c only adds and overwrites). */
#include <stdlib.h>
#include <string.h>

#include "passes/passes.h"

static bool name_taken(const KilnFunc *f, const char *s)
{
    for (int v = 0; v < f->nvalues; v++)
        if (f->values[v].name && strcmp(f->values[v].name, s) == 0)
            return true;
    return false;
}

/* The printer makes clashing names unique by appending .N in value order, which
 * would rename a new value rather than the dead one it replaces; choosing an
 * unused name here keeps printed IR stable and readable. */
const char *kiln_pass_fresh_name(KilnFunc *f, const char *base)
{
    if (!name_taken(f, base))
        return kiln_arena_strdup(f->mod->arena, base);
    size_t n = strlen(base) + 24;
    char *buf = kiln_arena_alloc(f->mod->arena, n);
    for (int k = 1;; k++) {
        snprintf(buf, n, "%s.%d", base, k);
        if (!name_taken(f, buf))
            return buf;
    }
}

void kiln_pass_unset(KilnInst *in, const char *key)
{
    for (int i = 0; i < in->nattrs; i++)
        if (strcmp(in->attrs[i].key, key) == 0) {
            memmove(&in->attrs[i], &in->attrs[i + 1],
                    (size_t)(in->nattrs - i - 1) * sizeof in->attrs[0]);
            in->nattrs--;
            return;
        }
}
