/* model/checkpoints/ckpt_ct.c — compressed-tensors' quantization_config: QuantizationArgs,
 * config_groups (preset names too), which group's targets a module matches (exact name,
 * "re:" regex, class), and each layer's static activation scale. Sources followed:
 * docs/checkpoints.md, "Reading checkpoints". */
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "model/checkpoints/ckpt_internal.h"

#define ERR(...) kiln_diag_set(d, KILN_EINPUT, __VA_ARGS__)
#define OOM() kiln_diag_set(d, KILN_EINTERNAL, "checkpoint: out of memory")

/* compressed-tensors QuantizationArgs (quant_args.py): strategy defaults from group_size
 * (null → tensor, > 0 → group, -1 → channel); block_structure [rows, cols] or "RxC". */
static int ct_args(const char *where, const KilnJson *j, KilnCkArgs *a, KilnDiag *d)
{
    memset(a, 0, sizeof *a);
    if (!j || j->kind == KILN_JSON_NULL)
        return 0;
    if (j->kind != KILN_JSON_OBJECT)
        return ERR("%s is not an object", where);
    a->present = true;
    int64_t v = 8;
    kiln_ck_jint(j, "num_bits", &v);
    a->bits = (int)(v > 0 && v <= 64 ? v : 0);
    const char *type = kiln_ck_jstr(j, "type");
    a->is_float = type && !strcmp(type, "float");
    if (type && !a->is_float && strcmp(type, "int"))
        return ERR("%s: type \"%.40s\" (kiln reads int and float)", where, type);
    a->sym = kiln_ck_jbool(j, "symmetric", true);
    const KilnJson *dy = kiln_json_get(j, "dynamic");
    a->dynamic = dy && ((dy->kind == KILN_JSON_BOOL && dy->b) || dy->kind == KILN_JSON_STRING);
    int64_t g = 0;
    bool hasg = kiln_ck_jint(j, "group_size", &g);
    const char *st = kiln_ck_jstr(j, "strategy");
    if (!st)
        st = !hasg ? "tensor" : g > 0 ? "group" : "channel";
    static const struct { const char *name; KilnGran g; } strats[] = {
        {"tensor", KILN_GRAN_TENSOR}, {"channel", KILN_GRAN_CHANNEL},
        {"group", KILN_GRAN_GROUP},   {"token", KILN_GRAN_TOKEN},
        {"block", KILN_GRAN_GROUP},
    };
    size_t i = 0;
    while (i < 5 && strcmp(st, strats[i].name))
        i++;
    if (i == 5)
        return ERR("%s: strategy \"%.40s\" is not one kiln reads (tensor, channel, group, block, "
                   "token)", where, st);
    a->gran = strats[i].g;
    if (a->gran == KILN_GRAN_GROUP && i != 4) {
        if (!hasg || g <= 0 || g > INT32_MAX)
            return ERR("%s: strategy group needs a positive group_size", where);
        a->group = (int)g;
    }
    if (i == 4) { /* block */
        const KilnJson *bs = kiln_json_get(j, "block_structure");
        long long r = 0, c = 0;
        if (bs && bs->kind == KILN_JSON_ARRAY && bs->len == 2 && bs->items[0].is_int &&
            bs->items[1].is_int)
            r = bs->items[0].i, c = bs->items[1].i;
        else if (bs && bs->kind == KILN_JSON_STRING && sscanf(bs->str, "%lldx%lld", &r, &c) != 2)
            r = 0;
        if (r <= 0 || c <= 0 || r > INT32_MAX || c > INT32_MAX)
            return ERR("%s: strategy block needs block_structure [rows, cols]", where);
        a->bh = (int)r, a->bw = (int)c, a->group = (int)c;
    }
    return 0;
}

/* Activations and the KV cache: args_spec makes anything but 4 bits int8, so a 16-bit
 * ("A16") scheme would run silently as int8. 8 bits (int or float) or int4 (refused with
 * the layer named when bound); else KILN_EINPUT naming where. */
static int act_bits(const char *where, const KilnCkArgs *a, KilnDiag *d)
{
    if (!a->present || a->bits == 8 || (a->bits == 4 && !a->is_float))
        return 0;
    return ERR("%s: num_bits %d (%s): kiln reads 8-bit int or float activations and KV caches; "
               "16-bit activations are input_activations null (weight-only)", where, a->bits,
               a->is_float ? "float" : "int");
}

static KilnQuantSpec args_spec(const KilnCkArgs *a)
{
    KilnQuantSpec q = {0};
    if (!a->present)
        return q;
    q.fmt = a->is_float ? KILN_QF_FP8_E4M3 : a->bits == 4 ? KILN_QF_INT4 : KILN_QF_INT8;
    q.symmetric = a->sym || a->is_float;
    q.gran = a->gran;
    q.group = a->gran == KILN_GRAN_GROUP ? a->group : 0;
    q.dynamic = a->dynamic;
    return q;
}

/* One config group: its targets and what it does to weights and inputs. */
struct KilnCtGroup {
    const KilnJson *targets; /* array of strings */
    KilnCkArgs w, a;
    bool preset;             /* a preset's targets are the group's value */
};
typedef struct KilnCtGroup CtGroup;

/* compressed-tensors' PRESET_SCHEMES (quant_scheme.py) that kiln can read. */
static const struct {
    const char *name;
    KilnCkArgs w, a;
} presets[] = {
    {"W8A16", {true, 8, false, true, KILN_GRAN_GROUP, 128, 0, 0, false}, {0}},
    {"W4A16", {true, 4, false, true, KILN_GRAN_GROUP, 128, 0, 0, false}, {0}},
    {"W4A16_ASYM", {true, 4, false, false, KILN_GRAN_GROUP, 128, 0, 0, false}, {0}},
    {"W8A8", {true, 8, false, true, KILN_GRAN_CHANNEL, 0, 0, 0, false},
     {true, 8, false, true, KILN_GRAN_TOKEN, 0, 0, 0, true}},
    {"INT8", {true, 8, false, true, KILN_GRAN_CHANNEL, 0, 0, 0, false},
     {true, 8, false, true, KILN_GRAN_TOKEN, 0, 0, 0, true}},
    {"W4A8", {true, 4, false, true, KILN_GRAN_GROUP, 128, 0, 0, false},
     {true, 8, false, true, KILN_GRAN_TOKEN, 0, 0, 0, true}},
    {"W4AFP8", {true, 4, false, true, KILN_GRAN_GROUP, 128, 0, 0, false},
     {true, 8, true, true, KILN_GRAN_TOKEN, 0, 0, 0, true}},
    {"FP8", {true, 8, true, true, KILN_GRAN_TENSOR, 0, 0, 0, false},
     {true, 8, true, true, KILN_GRAN_TENSOR, 0, 0, 0, false}},
    {"FP8_DYNAMIC", {true, 8, true, true, KILN_GRAN_CHANNEL, 0, 0, 0, false},
     {true, 8, true, true, KILN_GRAN_TOKEN, 0, 0, 0, true}},
    {"FP8_BLOCK", {true, 8, true, true, KILN_GRAN_GROUP, 128, 128, 128, false},
     {true, 8, true, true, KILN_GRAN_GROUP, 128, 0, 0, true}},
};

static int ct_groups(const char *dir, const KilnJson *cg, CtGroup **out, int *n, KilnDiag *d)
{
    *out = NULL, *n = 0;
    if (!cg || cg->kind != KILN_JSON_OBJECT)
        return ERR("%s/config.json: quantization_config has no config_groups object", dir);
    CtGroup *g = calloc(cg->len + 1, sizeof *g);
    if (!g)
        return OOM();
    int rc = 0;
    char where[512];
    for (size_t i = 0; i < cg->len && !rc; i++) {
        const KilnJson *v = &cg->items[i];
        snprintf(where, sizeof where, "%s/config.json: config_groups[\"%.100s\"]", dir,
                 cg->keys[i]);
        if (v->kind == KILN_JSON_ARRAY) {
            size_t p = 0, np = sizeof presets / sizeof presets[0];
            while (p < np && strcasecmp(presets[p].name, cg->keys[i]))
                p++;
            if (p == np) {
                rc = ERR("%s: not a preset scheme kiln knows", where);
                break;
            }
            g[i] = (CtGroup){v, presets[p].w, presets[p].a, true};
            continue;
        }
        if (v->kind != KILN_JSON_OBJECT) {
            rc = ERR("%s is not an object", where);
            break;
        }
        g[i].targets = kiln_ck_jget(v, "targets", KILN_JSON_ARRAY);
        char w2[600];
        snprintf(w2, sizeof w2, "%s.weights", where);
        rc = ct_args(w2, kiln_json_get(v, "weights"), &g[i].w, d);
        snprintf(w2, sizeof w2, "%s.input_activations", where);
        if (!rc)
            rc = ct_args(w2, kiln_json_get(v, "input_activations"), &g[i].a, d);
        if (!rc)
            rc = act_bits(w2, &g[i].a, d);
    }
    if (rc) {
        free(g);
        return rc;
    }
    *out = g, *n = (int)cg->len;
    return 0;
}

/* compressed-tensors' match_name: "re:" + a Python regex matched at the start of the
 * name (re.match), anything else the exact name. The Python shorthands these configs
 * use (\d \w \s, (?:) become POSIX extended syntax; other (?...) constructs are refused. */
static int target_regex(const char *pat, const char *name, bool *hit, KilnDiag *d)
{
    size_t n = strlen(pat);
    char *e = malloc(n * 12 + 8);
    if (!e)
        return OOM();
    size_t o = 0;
    e[o++] = '^', e[o++] = '(';
    for (size_t i = 0; i < n; i++) {
        const char *rep = NULL;
        if (pat[i] == '\\' && i + 1 < n)
            rep = pat[i + 1] == 'd'   ? "[0-9]"
                  : pat[i + 1] == 'w' ? "[A-Za-z0-9_]"
                  : pat[i + 1] == 's' ? "[[:space:]]"
                                      : NULL;
        if (rep) {
            memcpy(e + o, rep, strlen(rep));
            o += strlen(rep), i++;
        } else if (pat[i] == '(' && i + 1 < n && pat[i + 1] == '?') {
            if (i + 2 >= n || pat[i + 2] != ':') {
                free(e);
                return ERR("regex \"%.100s\": (?...) other than (?:...) is not supported", pat);
            }
            e[o++] = '(', i += 2;
        } else {
            if (pat[i] == '\\' && i + 1 < n)
                e[o++] = pat[i++];
            e[o++] = pat[i];
        }
    }
    e[o++] = ')', e[o] = 0;
    regex_t re;
    int r = regcomp(&re, e, REG_EXTENDED | REG_NOSUB);
    free(e);
    if (r)
        return ERR("regex \"%.100s\" does not compile as POSIX extended", pat);
    *hit = regexec(&re, name, 0, NULL, 0) == 0;
    regfree(&re);
    return 0;
}

/* 3: exact name, 2: regex, 1: class "Linear" (every module read here is a linear), 0. */
static int target_rank(const KilnJson *targets, const char *name, int *rank, KilnDiag *d)
{
    *rank = 0;
    for (size_t i = 0; targets && i < targets->len; i++) {
        const KilnJson *t = &targets->items[i];
        if (t->kind != KILN_JSON_STRING)
            continue;
        int r = 0;
        if (!strncmp(t->str, "re:", 3)) {
            bool hit = false;
            int rc = target_regex(t->str + 3, name, &hit, d);
            if (rc)
                return rc;
            r = hit ? 2 : 0;
        } else if (!strcmp(t->str, name)) {
            r = 3;
        } else if (!strcmp(t->str, "Linear")) {
            r = 1;
        }
        if (r > *rank)
            *rank = r;
    }
    return 0;
}

/* The group whose targets match module m most specifically (exact, then regex, then
 * class), earliest on ties; the only group with weights when none matches. */
static int ct_scheme_of(const char *dir, const CtGroup *g, int ng, const char *m,
                        const CtGroup **out, KilnDiag *d)
{
    int best = -1, brank = 0, withw = 0, lastw = -1;
    for (int i = 0; i < ng; i++) {
        int r;
        int rc = target_rank(g[i].targets, m, &r, d);
        if (rc)
            return rc;
        if (g[i].w.present)
            withw++, lastw = i;
        if (r > brank && g[i].w.present)
            best = i, brank = r;
    }
    if (best < 0 && withw == 1)
        best = lastw;
    if (best < 0)
        return ERR("%s: module '%s' holds quantized weights but no config_groups entry with "
                   "weights targets it", dir, m);
    *out = &g[best];
    return 0;
}

/* A static activation scale (and zero point) stored per layer: input_scale /
 * input_zero_point with one element (per tensor); others stay plain tensors. */
static int ct_act(KilnCkSrc *s, const char *m, const CtGroup *g, KilnQLinear *q, KilnDiag *d)
{
    q->act = args_spec(&g->a);
    KilnCkTensor *sc = kiln_ck_find(s, m, "input_scale");
    if (!g->a.present || g->a.dynamic || !sc || sc->t->numel != 1)
        return 0;
    float *f = NULL;
    int rc = kiln_mf_load_f32(sc->mf, sc->name, &f, d);
    if (rc)
        return rc;
    q->act_scale = f[0];
    free(f);
    sc->used = true;
    KilnCkTensor *z = kiln_ck_find(s, m, "input_zero_point");
    if (z && z->t->numel == 1 && !g->a.sym && !g->a.is_float) {
        float *zf = NULL;
        if ((rc = kiln_mf_load_f32(z->mf, z->name, &zf, d)))
            return rc;
        /* stored signed, like the weights' zero points; kiln's are unsigned codes */
        q->act_zero = (int32_t)zf[0] + (1 << (g->a.bits - 1));
        free(zf);
        z->used = true;
    }
    if (!(q->act_scale > 0) || q->act_scale > 3e38f)
        return ERR("%s/%s: tensor '%s': activation scale %g", s->dir, sc->file, sc->name,
                   (double)q->act_scale);
    return 0;
}

int kiln_ck_ct_config(const char *dir, const KilnJson *qc, KilnCheckpoint *c, KilnCtCfg *cfg,
                      KilnDiag *d)
{
    const char *fmt = kiln_ck_jstr(qc, "format");
    static const char *const ok[] = {"pack-quantized", "int-quantized", "naive-quantized",
                                     "float-quantized", "mixed-precision", "dense"};
    size_t i = 0;
    while (fmt && i < 6 && strcmp(fmt, ok[i]))
        i++;
    if (fmt && i == 6)
        return ERR("%s/config.json: compressed-tensors format \"%.60s\" is not one kiln reads "
                   "(pack-quantized, int-quantized, naive-quantized, float-quantized, "
                   "mixed-precision)", dir, fmt);
    snprintf(c->format, sizeof c->format, "%s", fmt ? fmt : "pack-quantized");
    int rc = ct_groups(dir, kiln_json_get(qc, "config_groups"), &cfg->groups, &cfg->ngroups, d);
    for (int g = 0; !rc && g < cfg->ngroups; g++)
        if (cfg->groups[g].a.present && c->act.fmt == KILN_QF_NONE)
            c->act = args_spec(&cfg->groups[g].a);
    KilnCkArgs kv;
    char where[600];
    snprintf(where, sizeof where, "%s/config.json: kv_cache_scheme", dir);
    if (!rc && !(rc = ct_args(where, kiln_json_get(qc, "kv_cache_scheme"), &kv, d)) &&
        !(rc = act_bits(where, &kv, d)))
        c->kv = args_spec(&kv);
    return rc ? rc : kiln_ck_ignore_list(c, kiln_json_get(qc, "ignore"), d);
}

int kiln_ck_ct_layer(KilnCkSrc *s, const KilnCtCfg *cfg, const char *m, KilnQLinear *q,
                     KilnDiag *d)
{
    const CtGroup *g = NULL;
    int rc = ct_scheme_of(s->dir, cfg->groups, cfg->ngroups, m, &g, d);
    if (!rc)
        rc = kiln_ck_ct_module(s, m, &g->w, q, d);
    return rc ? rc : ct_act(s, m, g, q, d);
}

void kiln_ck_ct_free(KilnCtCfg *cfg)
{
    free(cfg->groups);
    cfg->groups = NULL, cfg->ngroups = 0;
}
