/* frontend/recipe.h — load a Lua recipe (docs/recipes.md), match layer names to its
 * rules and lower one linear layer to graph IR. The only header tools/ need. */
#ifndef KILN_RECIPE_H
#define KILN_RECIPE_H

#include "ir/ir.h"

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
/* A layer name that rule i matches and that no ignore entry or earlier rule
 * takes, when the simple generator finds one (e.g. "*.mlp.*" ->
 * "model.layers.0.mlp.x"; "%.attn%.q_proj$" -> "model.layers.0.attn.q_proj");
 * otherwise its best guess. For `kiln ir` without --layer. */
const char *kiln_recipe_rule_example(const KilnRecipe *r, int i);
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

/* Glob used by rules and ignore entries: '*' any run of characters (dots
 * included), '?' exactly one; the whole name must match. */
bool kiln_glob_match(const char *pattern, const char *name);

/* Comma-separated valid target names, for messages. */
extern const char kiln_recipe_targets[];
bool kiln_recipe_target_valid(const char *name);

#endif
