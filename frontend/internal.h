/* frontend/internal.h — the parsed recipe as plain C data, shared by the loader
 * (dsl.c, dslformat.c), the matcher (match.c) and lowering (lower.c). Not for other folders. */
#ifndef KILN_FRONTEND_INTERNAL_H
#define KILN_FRONTEND_INTERNAL_H

#include <lua.h>

#include "frontend/recipe.h"

/* Option bits: which options a format constructor was given. */
enum {
    OPT_SYMMETRIC = 1 << 0,
    OPT_PER = 1 << 1,
    OPT_GROUP = 1 << 2,
    OPT_DYNAMIC = 1 << 3,
    OPT_SCALE = 1 << 4,
    OPT_ZERO = 1 << 5,
    OPT_CALIB = 1 << 6,
    OPT_PERCENTILE = 1 << 7,
    OPT_METHOD = 1 << 8,
};

/* What a user wrote for per = "...": the KilnGran values plus kv_cache's head. */
enum { PER_NONE = -1, PER_HEAD = KILN_NGRANS };

/* A format value: a quantized format (int8 {...}) or a float pass-through (f16). */
typedef struct KFormat {
    bool is_float;
    KilnDType fdt; /* is_float: F32, F16 or BF16 */
    KilnQuantSpec q;
    int per;      /* PER_NONE, a KilnGran, or PER_HEAD, as written */
    unsigned set; /* OPT_* given by the user */
    int line;     /* where the constructor was called; 0 for a bare default */
    KilnMethod method; /* method = "..." among the options (weights only) */
    bool stored;  /* the `stored` value: as the model file says (weights, activations) */
} KFormat;

typedef enum { ACT_NONE, ACT_SILU, ACT_GELU } KAct;

typedef struct KRule {
    char *pattern;
    bool lua; /* Lua pattern instead of glob */
    int line;
    KFormat w;   /* resolved weight format (always quantized) */
    KFormat a;   /* resolved activation format (float for weight-only) */
    bool bias;
    KAct act;
    KilnDType out; /* F32, F16 or BF16 */
    /* outliers = {...}: LLM.int8()-style columns kept in f32 (int8 activations only) */
    bool outliers;
    float outlier_threshold, outlier_max_fraction;
    KilnMethod method;
    bool stored;   /* weights = stored: the model's own quantized weights */
    bool stored_acts; /* activations = stored: each layer's activation scheme from the model
                       * file (KilnLowerOpts.stored_act); a is then the bare `stored` value */
    char *example;
    bool example_lands; /* the example is governed by this rule (not ignored, no earlier rule) */
} KRule;

typedef struct KPattern {
    char *pattern;
    bool lua;
} KPattern;

/* matchindex.c: a pattern list indexed for first-match lookups. */
typedef struct KPatIndex KPatIndex;

typedef struct KLimit {
    size_t used, max;
    bool hit;
} KLimit;

struct KilnRecipe {
    char *name, *file, *target;
    int line;
    int nrules;
    KRule *rules;
    int nignore;
    KPattern *ignore;
    KPatIndex *rule_ix, *ignore_ix; /* NULL: walk the lists (out of memory when indexing) */
    bool has_kv;
    KFormat kv;
    int64_t amx_min_m; /* amx_min_m = N: the tile break-even M (0: the target's default) */
    /* A fresh state with only the string library, for matching Lua patterns with
     * Lua's own matcher; NULL when the recipe has none. */
    lua_State *L;
    lua_CFunction find;
    KLimit *limit; /* the state's allocator budget; outlives L */
};

typedef struct KKeyIndex KKeyIndex;

/* What the loader tracks while a recipe runs; reached from the state's extra space. */
typedef struct KLoadCtx {
    bool err_set; /* first DSL error wins, even if the recipe pcall'd it away */
    int err_line;
    char err[700];
    int last_line;  /* last line the line hook saw: position for errors Lua gives none */
    lua_CFunction find; /* string.find as opened, before the recipe could replace it */
    const char *src;    /* the recipe text, for kiln__key_line */
    size_t len;
    /* src's keys, lexed on the first question about them (kiln__key_line_at); owned by a
     * userdata in the state's registry. NULL whenever src changes (include). */
    KKeyIndex *keys;
} KLoadCtx;


/* Layers lowered by this process (load.c keeps it, lower.c counts). */
extern _Atomic int64_t kiln__nlowerings;

/* Metatable names of the recipe language's values. */
#define MT_FORMAT "kiln.format"
#define MT_RULEB "kiln.rule_builder"
#define MT_RULE "kiln.rule"
#define MT_RECIPEB "kiln.recipe_builder"
#define MT_RECIPE "kiln.recipe"

/* dslcheck.c */
KLoadCtx *kiln__ctx(lua_State *L);
/* Control characters in s as \xNN escapes, in place, cut to fit n bytes. */
void kiln__escape_controls(char *s, size_t n);
/* Record the first error (message, line; line 0: the last line run) and unwind. */
int kiln__dsl_error(lua_State *L, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
int kiln__caller_line(lua_State *L);             /* line of the Lua code calling this C function */
int kiln__key_line_at(lua_State *L, int from, const char *key); /* line of `key =` from `from` on */
const char *kiln__what(lua_State *L, int idx);   /* "a format", "a rule", "number", ... */
int kiln__choice(const char *s, const char *const *names, int n); /* index or -1 */
void kiln__join(char *buf, size_t n, const char *const *names, int count); /* "a, b, c" */
/* "; did you mean 'x'?" for a near miss among names, else "". */
const char *kiln__suggest(char *buf, size_t n, const char *s, const char *const *names, int count);
/* Reject keys of the table at idx not in names[] (noun: "option" or "key";
 * allow_list also accepts the list part 1..#t). */
void kiln__check_keys(lua_State *L, int idx, const char *const *names, int n, int line, const char *where,
                      const char *noun, bool allow_list);

/* dslformat.c: format values and the checks of a format where it is used (errors
 * unwind through kiln__dsl_error). */
const char *kiln__fmt_name(const KFormat *f); /* "int8", "f16", "stored", ... */
KFormat *kiln__push_format(lua_State *L, const KFormat *f);
int kiln__fmt_call(lua_State *L);     /* a format's __call: int8 { per = "channel" } */
int kiln__fmt_tostring(lua_State *L);
KilnMethod kiln__method_defaults(void);
/* method = "gptq" | { "smoothquant", "gptq", alpha = 0.5, ... } at stack index t. */
KilnMethod kiln__parse_method_value(lua_State *L, int t, int line, const char *where);
/* Complete and check a rule's weights / activations, a recipe's kv_cache (rline:
 * the rule's or recipe's line; pat: the rule's pattern). */
void kiln__resolve_weights(lua_State *L, KFormat *f, int rline, const char *pat);
void kiln__resolve_acts(lua_State *L, KFormat *a, const KFormat *w, int rline, const char *pat);
void kiln__resolve_kv(lua_State *L, KFormat *k, int rline);

/* dsl.c */
/* Register recipe, rule, int4, int8, fp8_e4m3, fp8_e5m2, f32, f16, bf16. */
void kiln__dsl_open(lua_State *L);
/* The KilnRecipe inside a returned recipe value (ownership moves to the caller),
 * or NULL when the value at idx is not one. */
KilnRecipe *kiln__dsl_take(lua_State *L, int idx);
void kiln__recipe_free_data(KilnRecipe *r);

/* match.c */
bool kiln__pattern_match(const KilnRecipe *r, const char *pattern, bool lua, const char *name);
/* Index the rules and ignore list for matching, then give each rule its example name. */
void kiln__make_examples(KilnRecipe *r);

/* matchindex.c: n patterns (not owned; they must outlive it); NULL when out of memory. */
KPatIndex *kiln__index_build(int n, const char *const *pat, const bool *lua);
/* The lowest-numbered pattern that matches name, or -1. */
int kiln__index_first(const KilnRecipe *r, const KPatIndex *ix, const char *name);
void kiln__index_free(KPatIndex *ix);

/* dupkeys.c: find `name = ` keys repeated in one table constructor. Returns the
 * line of the first repeat (0 if none), the key in key[], the first line in *first. */
int kiln__dup_keys(const char *src, size_t len, char *key, size_t keyn, int *first);
/* Line of the first `key =` field at or after from_line (from_line if none): puts
 * errors about a table's key on the key's own line. */
int kiln__key_line(const char *src, size_t len, int from_line, const char *key);
/* The source's keys lexed once, for many kiln__key_line questions (NULL: out of memory);
 * it points into src. */
KKeyIndex *kiln__key_index(const char *src, size_t len);
int kiln__key_index_line(const KKeyIndex *ix, int from_line, const char *key);
void kiln__key_index_free(KKeyIndex *ix);

#endif
