/* tests/fuzz/fuzz_ir_parse.c — libFuzzer entry point for the IR text parser:
 * any input must parse or fail with a located KILN_EINPUT; what parses must
 * verify without crashing and print -> parse -> print identically.
 * Not built by CMake. Build and run (seed corpus: the text tests):
 *   clang-14 -std=c17 -D_GNU_SOURCE -g -O1 -fsanitize=fuzzer,address,undefined -I. \
 *     tests/fuzz/fuzz_ir_parse.c ir/print.c ir/parse.c ir/lex.c ir/verify.c ir/ir.c ir/types.c \
 *     ir/diag.c -lm -o /tmp/fuzz_ir_parse
 *   mkdir -p /tmp/kir-corpus && cp tests/ir/?*.kir /tmp/kir-corpus/
 *   /tmp/fuzz_ir_parse -max_total_time=60 -max_len=8192 /tmp/kir-corpus */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ir/ir.h"

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
        free(p1);
        free(p2);
        kiln_module_free(m2);
    }
    kiln_module_free(m);
    return 0;
}
