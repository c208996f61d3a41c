/* frontend/recipe.h — load a Lua recipe (docs/recipes.md), match layer names to its
 * rules and lower one linear layer to graph IR. The only header tools/ need. */
#ifndef KILN_RECIPE_H
#define KILN_RECIPE_H

#include "ir/ir.h"

struct KilnTarget;

typedef struct KilnRecipe KilnRecipe; /* opaque */

/* Run the recipe file in a sandboxed Lua 5.4 state (base, string, table, math
 * only; instruction and memory limits). Every error is KILN_EINPUT with d->file
 * (the path / chunkname, not owned: valid as long as the caller's string is) and
 * d->line set. */
int kiln_recipe_load(const char *path, KilnRecipe **out, KilnDiag *d);
/* chunkname names the source in errors (NULL: "<string>"). */
int kiln_recipe_load_string(const char *src, size_t len, const char *chunkname, KilnRecipe **out,
                            KilnDiag *d);
void kiln_recipe_free(KilnRecipe *r);

const char *kiln_recipe_name(const KilnRecipe *r);
const char *kiln_recipe_file(const KilnRecipe *r);
const char *kiln_recipe_target(const KilnRecipe *r); /* NULL when the recipe names none */
int kiln_recipe_nrules(const KilnRecipe *r);
const char *kiln_recipe_rule_pattern(const KilnRecipe *r, int i);
int kiln_recipe_rule_line(const KilnRecipe *r, int i); /* where rule i was written */
/* A layer name that rule i matches and that no ignore entry or earlier rule
 * takes, when the simple generator finds one (e.g. "*.mlp.*" ->
 * "model.layers.0.mlp.x"; "%.attn%.q_proj$" -> "model.layers.0.attn.q_proj");
 * otherwise its best guess. For `kiln ir` without --layer. */
const char *kiln_recipe_rule_example(const KilnRecipe *r, int i);
/* Whether rule i's example really falls under rule i (false: the ignore list or an
 * earlier rule takes every name the generator tried, so running the example would
 * not exercise the rule). */
bool kiln_recipe_rule_example_lands(const KilnRecipe *r, int i);
bool kiln_recipe_ignored(const KilnRecipe *r, const char *layer);
/* rule index, -1 none/ignored. A recipe with Lua patterns matches through its
 * own small Lua state: do not match against one recipe from two threads at once. */
int kiln_recipe_match(const KilnRecipe *r, const char *layer);

/* Lower one linear layer y[M,N] = x[M,K]·W[N,K]ᵀ to graph IR as a new function in
 * m named after the layer (form: docs/recipes.md, "What a rule lowers to").
 * target overrides the recipe's target when non-NULL ("cpu" when neither).
 * Errors (KILN_EINPUT): bad shape, unknown target. A group need not divide K (the
 * last group is ragged; the kernels check their own K/group units). Nothing is
 * added to m on error. */
int kiln_lower_layer(const KilnRecipe *r, const char *layer, int64_t M, int64_t N, int64_t K,
                     const char *target, KilnModule *m, KilnFunc **out, KilnDiag *d);

/* How a rule's weights are made from the f32 ones (docs/recipes.md, "Methods";
 * docs/quant.md). All false: round to nearest. awq and smoothquant migrate a
 * per-input-channel scale between activations and weights before rounding (at most
 * one of them); gptq rounds with error compensation (with either, or alone). */
typedef struct KilnMethod {
    bool gptq, awq, smoothquant;
    float alpha;    /* smoothquant: migration strength in [0, 1] (0.5) */
    float damp;     /* gptq: dampening, a fraction of mean diag(H) (0.01) */
    int block;      /* gptq: columns per lazy-update block (128) */
    int act_order;  /* gptq: 0 off, 1 "static" (groups stay contiguous), 2 "group" (permuted) */
    int grid;       /* awq: steps of the alpha search (20) */
    bool clip;      /* awq: weight clipping search (true) */
    bool prescale;  /* awq/smoothquant: an activation pre-scale where no op can take the
                     * scale (runs in kiln; not expressible in an exported checkpoint) */
    int line;       /* where the method was given; 0 when defaulted */
} KilnMethod;

/* Rule i's method (round to nearest when the rule names none). */
const KilnMethod *kiln_recipe_rule_method(const KilnRecipe *r, int i);
/* "rtn", "gptq", "smoothquant+gptq", ... into buf. */
const char *kiln_method_name(const KilnMethod *m, char *buf, size_t n);
/* Rule i's activation format: true and *out set when quantized, false for f16/bf16/f32
 * and for activations = stored (the model file says, layer by layer). */
bool kiln_recipe_rule_acts(const KilnRecipe *r, int i, KilnQuantSpec *out);
/* The weight format a layer of K columns gets on target t (per = "auto" resolved as
 * the passes resolve it there, ir/gran_cost.h; t NULL: the host, "cpu"), without
 * lowering: false when the recipe leaves the layer in f32 (ignored, unmatched), takes
 * its stored format, or asks for an auto int4 group no size divides. */
bool kiln_recipe_layer_weights(const KilnRecipe *r, const char *layer, int64_t K,
                               const struct KilnTarget *t, KilnQuantSpec *out);
/* The recipe's kv_cache: false without one; else either *is_float with *dt (f32, f16,
 * bf16) or the quantized spec in *q. */
bool kiln_recipe_kv_cache(const KilnRecipe *r, bool *is_float, KilnDType *dt, KilnQuantSpec *q);
/* How many recipes this process parsed and layers it lowered, for `--verbose` and the
 * tests that check each happens once per recipe and layer. */
void kiln_frontend_counts(int64_t *parses, int64_t *lowerings);
/* True when rule i says weights = stored: the model file's own quantized weights. */
bool kiln_recipe_rule_stored(const KilnRecipe *r, int i);
/* True when rule i says activations = stored: each layer's activation scheme as its
 * model file declares it (KilnLowerOpts.stored_act). */
bool kiln_recipe_rule_stored_acts(const KilnRecipe *r, int i);

/* What a caller knows about a layer that the recipe alone cannot say. */
typedef struct KilnLowerOpts {
    /* The weight format of a rule that says weights = stored (from the model file);
     * NULL otherwise. Must be a quantized weight format. */
    const KilnQuantSpec *stored;
    /* The activation scheme the model file declares for a layer whose rule says
     * activations = stored: dynamic (per token or tensor), or static with its scale
     * (and zero point, asymmetric) set; NULL, or fmt NONE, for a layer the file
     * quantizes weight-only: it then runs f16 activations. Ignored for other rules. */
    const KilnQuantSpec *stored_act;
    /* The outlier columns (ascending, in [0, K)) of a rule with outliers = {...},
     * chosen from calibration rows (kiln_outlier_pick, ir/outliers.h). With n > 0 the
     * layer is lowered with the split (docs/recipes.md, "outliers"); n = 0 lowers the
     * plain rule. Columns for a rule without outliers are an error. */
    const int64_t *outlier_idx;
    int64_t noutliers;
} KilnLowerOpts;

/* Whether the rule that takes `layer` asks for outlier columns, and its threshold and
 * max_fraction (false for an ignored or unmatched layer). */
bool kiln_recipe_outliers(const KilnRecipe *r, const char *layer, float *threshold,
                          float *max_fraction);

/* kiln_lower_layer with opts (may be NULL: then a stored rule is an error). */
int kiln_lower_layer_ex(const KilnRecipe *r, const char *layer, int64_t M, int64_t N, int64_t K,
                        const char *target, const KilnLowerOpts *opts, KilnModule *m, KilnFunc **out,
                        KilnDiag *d);

/* Longest rule pattern, ignore pattern or recipe name, in bytes: kiln_lower_layer's
 * limit on layer names. */
#define KILN_PATTERN_MAX 1000

/* Glob used by rules and ignore entries: '*' any run of characters (dots
 * included), '?' exactly one; the whole name must match. */
bool kiln_glob_match(const char *pattern, const char *name);

/* Comma-separated valid target names, for messages. */
const char *kiln_recipe_targets(void); /* "interp, cpu, avx2, ...": ir/target.h */
bool kiln_recipe_target_valid(const char *name);

#endif
