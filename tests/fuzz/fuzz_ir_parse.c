/* tests/fuzz/fuzz_ir_parse.c — libFuzzer entry point for the IR text parser:
 * any input must parse or fail with a located KILN_EINPUT; what parses must
 * verify without crashing and print -> parse -> print identically, and then goes
 * through the pass pipeline (errors, never a crash or an exit). Built and run by
 * scripts/fuzz.sh (README.md); seed corpus: the IR and pass text tests. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ir/ir.h"
#include "passes/passes.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    KilnModule *m = kiln_module_new();
    KilnDiag d = {0};
    int rc = kiln_parse_module((const char *)data, size, "fuzz.kir", m, &d);
    if (rc != 0) {
        if (rc != KILN_EINPUT || d.code != KILN_EINPUT || d.line < 1 || !d.msg[0])
            abort(); /* an error must be a located input error */
    } else {
        kiln_verify_module(m, &d);
        char *p1 = kiln_print_module_str(m);
        KilnModule *m2 = kiln_module_new();
        if (kiln_parse_module(p1, strlen(p1), "printed.kir", m2, &d) != 0)
            abort(); /* the printer wrote something the parser rejects */
        char *p2 = kiln_print_module_str(m2);
        if (strcmp(p1, p2) != 0)
            abort(); /* print -> parse -> print is not the identity */
        KilnTarget t;
        static const char *const targets[] = {"avx2", "sm_80"};
        if (kiln_target_lookup(targets[size & 1], &t, &d) != 0)
            abort();
        if (kiln_run_pipeline(m2, &t, NULL, &d) != 0 && (d.code == 0 || !d.msg[0]))
            abort(); /* a pass failed without saying why */
        free(p1);
        free(p2);
        kiln_module_free(m2);
    }
    kiln_module_free(m);
    return 0;
}
