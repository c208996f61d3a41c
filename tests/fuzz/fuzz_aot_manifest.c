/* tests/fuzz/fuzz_aot_manifest.c — libFuzzer harness for the AOT manifest reader: the
 * input is a manifest.json, read exactly as kiln_aot_open reads it (runtime/aot.c's
 * read_manifest, included here so the harness needs no library to dlopen), then every
 * kernel's layout is rebuilt from its entry (kiln_aot_layout) as a program packing
 * weights for it would. Built and run by scripts/fuzz.sh (README.md). */
#include "runtime/aot.c"

#include "runtime/aot_layout.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    KilnAot *a = calloc(1, sizeof *a);
    if (!a)
        return 0;
    a->dir = strdup("fuzz");
    a->manifest_path = strdup("fuzz/manifest.json");
    KilnDiag d = {0};
    int rc = kiln_json_parse((const char *)data, size, a->manifest_path, &a->manifest, &d);
    if (rc == 0)
        rc = read_manifest(a, &d);
    if (rc != 0) {
        if (rc != KILN_EINPUT || d.code != KILN_EINPUT || !d.msg[0])
            abort(); /* a bad manifest must be an input error with a message */
    } else {
        for (int i = 0; i < kiln_aot_nkernels(a); i++) {
            const KilnAotKernel *k = kiln_aot_kernel(a, i);
            if (kiln_aot_find(a, k->name) != i)
                abort(); /* names are unique, so the lookup finds this one */
            KilnLayout l;
            KilnDiag ld = {0};
            if (kiln_aot_layout(a, i, &l, &ld) != 0 && (ld.code != KILN_EINPUT || !ld.msg[0]))
                abort();
        }
    }
    kiln_aot_close(a);
    return 0;
}
