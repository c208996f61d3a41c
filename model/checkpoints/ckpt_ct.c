/* model/checkpoints/ckpt_ct.c — compressed-tensors' quantization_config: QuantizationArgs,
 * config_groups (preset names too), which group's targets a module matches (exact name,
 * "re:" regex, class), and each layer's static activation scale. Sources followed:
 * docs/checkpoints.md, "Reading checkpoints". */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "model/checkpoints/ckpt_internal.h"
#include "model/checkpoints/ckpt_regex.h"

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
    int *rx;                 /* per target: its compiled "re:" pattern (ckpt_regex.c) or -1 */
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

/* compressed-tensors' match_name (utils/match.py): "re:" + a Python regex tried with
 * re.match (anchored at the start of the name, not at its end), anything else the exact
 * name; every pattern is compiled once, here (ckpt_regex.c). */
static int ct_compile_targets(const char *dir, const KilnJson *config, const char *key, CtGroup *g,
                              KilnCkRegexes *rx, KilnDiag *d)
{
    size_t n = g->targets ? g->targets->len : 0;
    if (!(g->rx = malloc(sizeof *g->rx * (n + 1))))
        return OOM();
    char where[600];
    for (size_t i = 0; i < n; i++) {
        const KilnJson *t = &g->targets->items[i];
        g->rx[i] = -1;
        if (t->kind != KILN_JSON_STRING || strncmp(t->str, "re:", 3))
            continue;
        int line, col;
        kiln_json_where(config, t, &line, &col);
        snprintf(where, sizeof where, "%s/config.json:%d: config_groups[\"%.100s\"].targets[%zu]",
                 dir, line, key, i);
        int rc = kiln_ck_rx_add(rx, where, t->str + 3, &g->rx[i], d);
        if (rc)
            return rc;
    }
    return 0;
}

/* cfg->groups from config_groups, each group's "re:" targets compiled; what is built so
 * far stays in cfg on error (kiln_ck_ct_free). */
static int ct_groups(const char *dir, const KilnJson *config, const KilnJson *cg, KilnCtCfg *cfg,
                     KilnDiag *d)
{
    if (!cg || cg->kind != KILN_JSON_OBJECT)
        return ERR("%s/config.json: quantization_config has no config_groups object", dir);
    CtGroup *g = cfg->groups = calloc(cg->len + 1, sizeof *g);
    if (!g)
        return OOM();
    cfg->ngroups = (int)cg->len;
    int rc = kiln_ck_rx_new(&cfg->rx, d);
    char where[512];
    for (size_t i = 0; i < cg->len && !rc; i++) {
        const KilnJson *v = &cg->items[i];
        const char *name = kiln_json_key(cg, i);
        snprintf(where, sizeof where, "%s/config.json: config_groups[\"%.100s\"]", dir, name);
        if (v->kind == KILN_JSON_ARRAY) {
            size_t p = 0, np = sizeof presets / sizeof presets[0];
            while (p < np && strcasecmp(presets[p].name, name))
                p++;
            if (p == np)
                return ERR("%s: not a preset scheme kiln knows", where);
            g[i] = (CtGroup){v, NULL, presets[p].w, presets[p].a, true};
            rc = ct_compile_targets(dir, config, name, &g[i], cfg->rx, d);
            continue;
        }
        if (v->kind != KILN_JSON_OBJECT)
            return ERR("%s is not an object", where);
        g[i].targets = kiln_ck_jget(v, "targets", KILN_JSON_ARRAY);
        char w2[600];
        snprintf(w2, sizeof w2, "%s.weights", where);
        rc = ct_args(w2, kiln_json_get(v, "weights"), &g[i].w, d);
        snprintf(w2, sizeof w2, "%s.input_activations", where);
        if (!rc)
            rc = ct_args(w2, kiln_json_get(v, "input_activations"), &g[i].a, d);
        if (!rc)
            rc = act_bits(w2, &g[i].a, d);
        if (!rc)
            rc = ct_compile_targets(dir, config, name, &g[i], cfg->rx, d);
    }
    return rc;
}

/* 3: exact name, 2: regex, 1: class "Linear" (every module read here is a linear), 0. The
 * regexes run only while one could still raise `floor`, the best rank an earlier group
 * already has (ties go to the earlier group). */
static int target_rank(KilnCkRegexes *rx, const CtGroup *g, const char *name, int floor,
                       int *rank, KilnDiag *d)
{
    const KilnJson *targets = g->targets;
    size_t n = targets ? targets->len : 0;
    *rank = 0;
    for (size_t i = 0; i < n; i++) {
        const KilnJson *t = &targets->items[i];
        if (t->kind != KILN_JSON_STRING || g->rx[i] >= 0)
            continue;
        if (!strcmp(t->str, name))
            *rank = 3;
        else if (!strcmp(t->str, "Linear") && *rank < 1)
            *rank = 1;
    }
    for (size_t i = 0; i < n && *rank < 2 && floor < 2; i++) {
        bool hit = false;
        int rc = g->rx[i] < 0 ? 0 : kiln_ck_rx_match(rx, g->rx[i], name, &hit, d);
        if (rc)
            return rc;
        if (hit)
            *rank = 2;
    }
    return 0;
}

/* The group whose targets match module m most specifically (exact, then regex, then
 * class), earliest on ties; the only group with weights when none matches. */
static int ct_scheme_of(const char *dir, const KilnCtCfg *cfg, const char *m,
                        const CtGroup **out, KilnDiag *d)
{
    const CtGroup *g = cfg->groups;
    int best = -1, brank = 0, withw = 0, lastw = -1;
    for (int i = 0; i < cfg->ngroups; i++) {
        if (!g[i].w.present)
            continue;
        withw++, lastw = i;
        int r = 0;
        int rc = brank == 3 ? 0 : target_rank(cfg->rx, &g[i], m, brank, &r, d);
        if (rc)
            return rc;
        if (r > brank)
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

int kiln_ck_ct_config(const char *dir, const KilnJson *config, const KilnJson *qc,
                      KilnCheckpoint *c, KilnCtCfg *cfg, KilnDiag *d)
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
    int rc = ct_groups(dir, config, kiln_json_get(qc, "config_groups"), cfg, d);
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
    int rc = ct_scheme_of(s->dir, cfg, m, &g, d);
    if (!rc)
        rc = kiln_ck_ct_module(s, m, &g->w, q, d);
    return rc ? rc : ct_act(s, m, g, q, d);
}

void kiln_ck_ct_free(KilnCtCfg *cfg)
{
    for (int i = 0; cfg->groups && i < cfg->ngroups; i++)
        free(cfg->groups[i].rx);
    free(cfg->groups);
    kiln_ck_rx_free(cfg->rx);
    memset(cfg, 0, sizeof *cfg);
}
