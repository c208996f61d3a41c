/* tests/fuzz/fuzz_recipe.c — libFuzzer harness for the recipe loader: the input is a
 * recipe's text, run in the sandbox; a recipe that loads has a few typical layer names
 * matched and lowered (graph IR that must verify). Errors must be located KILN_EINPUT,
 * their text without control characters; patterns at most KILN_PATTERN_MAX bytes.
 * Includes resolve in tests/recipes_sandbox/.
 * Built and run by scripts/fuzz.sh (README.md). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "frontend/recipe.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int has_control(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            return 1;
    return 0;
}

static void lower_some(const KilnRecipe *r)
{
    static const char *const layers[] = {
        "model.layers.0.self_attn.q_proj", "model.layers.3.mlp.down_proj", "lm_head",
        "encoder.layer.1.attention.output.dense", "x",
    };
    static const char *const targets[] = {NULL, "avx2", "sm_80"};
    for (int i = 0; i < kiln_recipe_nrules(r); i++) {
        (void)kiln_recipe_rule_example(r, i);
        const char *p = kiln_recipe_rule_pattern(r, i);
        if (strlen(p) > KILN_PATTERN_MAX || has_control(p))
            abort(); /* patterns are printed: short, without control characters */
    }
    for (size_t i = 0; i < sizeof layers / sizeof layers[0]; i++) {
        (void)kiln_recipe_match(r, layers[i]);
        KilnModule *m = kiln_module_new();
        KilnFunc *f = NULL;
        KilnDiag d = {0};
        /* K = 200 is no multiple of the usual groups: the ragged-group path too */
        int rc = kiln_lower_layer(r, layers[i], 1 + (int64_t)i, 16, i & 1 ? 200 : 256,
                                  targets[i % 3], m, &f, &d);
        if (rc == 0 && kiln_verify_module(m, &d) != 0)
            abort(); /* lowering produced IR the verifier rejects */
        if (rc != 0 && (d.code == 0 || !d.msg[0]))
            abort(); /* an error without a message */
        kiln_module_free(m);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    KilnRecipe *r = NULL;
    KilnDiag d = {0};
    /* named as if it sat beside the sandbox tests' recipes (scripts/fuzz.sh runs from the
     * repository root), so `include "shared-rules.lua"` and the broken, cyclic and
     * endless includes there are reachable */
    int rc = kiln_recipe_load_string((const char *)data, size, "tests/recipes_sandbox/fuzz.lua", &r,
                                     &d);
    if (rc != 0) {
        if (rc != KILN_EINPUT || d.code != KILN_EINPUT || d.line < 1 || !d.msg[0] || r)
            abort(); /* a bad recipe must be a located input error */
        if (has_control(d.msg))
            abort(); /* recipe text reaches terminals: control characters escaped */
        return 0;
    }
    lower_some(r);
    kiln_recipe_free(r);
    return 0;
}
