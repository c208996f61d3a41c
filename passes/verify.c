/* passes/verify.c — the verify pass: the IR verifier (ir/verify.c) run between
 * passes, so a pass that breaks the IR is caught where it happened. */
#include "passes/passes.h"

int kiln_pass_verify(KilnModule *m, const KilnTarget *t, KilnDiag *d)
{
    (void)t;
    return kiln_verify_module(m, d);
}
