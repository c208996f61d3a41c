/* model/checkpoints/ckpt_config.c — config.json of a compressed-tensors checkpoint: the
 * model's config with quantization_config (config groups, their targets, ignore, the KV
 * cache scheme) as compressed-tensors and vLLM read it. docs/checkpoints.md. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/checkpoints/ckpt_write.h"
#include "runtime/runtime.h"

/* ------------------------------------------------------------------ config.json */

static void jw_args(KilnJsonWriter *w, const KilnQuantSpec *a, int32_t group, bool gidx,
                    bool weight)
{
    kiln_jw_begin_object(w);
    kiln_jw_key(w, "num_bits");
    kiln_jw_int(w, a->fmt == KILN_QF_INT4 ? 4 : 8);
    kiln_jw_key(w, "type");
    kiln_jw_string(w, kiln_qformat_is_fp8(a->fmt) ? "float" : "int");
    kiln_jw_key(w, "symmetric");
    kiln_jw_bool(w, a->symmetric || kiln_qformat_is_fp8(a->fmt));
    kiln_jw_key(w, "strategy");
    kiln_jw_string(w, a->gran == KILN_GRAN_GROUP     ? "group"
                      : a->gran == KILN_GRAN_CHANNEL ? (weight ? "channel" : "attn_head")
                      : a->gran == KILN_GRAN_TOKEN   ? "token"
                                                     : "tensor");
    kiln_jw_key(w, "group_size");
    if (a->gran == KILN_GRAN_GROUP)
        kiln_jw_int(w, group);
    else
        kiln_jw_null(w);
    kiln_jw_key(w, "dynamic");
    kiln_jw_bool(w, a->dynamic);
    if (weight) {
        kiln_jw_key(w, "actorder");
        if (gidx)
            kiln_jw_string(w, "group");
        else
            kiln_jw_null(w);
    }
    kiln_jw_end_object(w);
}

/* The tail of a module name after its last ".<number>." ("self_attn.q_proj"), or NULL. */
static const char *name_suffix(const char *m)
{
    const char *best = NULL;
    for (const char *p = m; *p; p++)
        if (*p == '.' && p[1] >= '0' && p[1] <= '9') {
            const char *e = p + 1;
            while (*e >= '0' && *e <= '9')
                e++;
            if (*e == '.' && e[1])
                best = e + 1;
        }
    if (!best)
        return NULL;
    for (const char *p = best; *p; p++)
        if (!(*p == '.' || *p == '_' || (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
              (*p >= '0' && *p <= '9')))
            return NULL;
    return best;
}

static bool ends_with_dot(const char *m, const char *suf)
{
    size_t a = strlen(m), b = strlen(suf);
    return a > b && m[a - b - 1] == '.' && strcmp(m + a - b, suf) == 0;
}

static bool ignored(const KilnCheckpoint *c, const char *m)
{
    for (int i = 0; i < c->nignore; i++)
        if (strcmp(c->ignore[i], m) == 0)
            return true;
    return false;
}

/* May group g name every module ending in ".suf" with one regex? Only when each such
 * module the checkpoint knows (quantized, or a plain tensor's module) is in g or
 * ignored. */
static bool suffix_owned(const KilnCheckpoint *c, const int *grp, int g, const char *suf)
{
    for (int i = 0; i < c->nlin; i++)
        if (ends_with_dot(c->lin[i].name, suf) && grp[i] != g)
            return false;
    for (int i = 0; i < c->nt; i++) {
        char mod[160];
        snprintf(mod, sizeof mod, "%s", c->t[i].name);
        char *dot = strrchr(mod, '.');
        if (dot)
            *dot = 0;
        if (ends_with_dot(mod, suf) && !ignored(c, mod))
            return false;
    }
    return true;
}

/* Targets of config group g: "re:.*\.SUFFIX$" for each suffix the group owns, the
 * other modules by name. */
static void jw_targets(KilnJsonWriter *w, const KilnCheckpoint *c, const int *grp, int g)
{
    kiln_jw_begin_array(w);
    for (int i = 0; i < c->nlin; i++) {
        if (grp[i] != g)
            continue;
        const char *suf = name_suffix(c->lin[i].name);
        if (suf && suffix_owned(c, grp, g, suf)) {
            bool first = true; /* one regex per suffix */
            for (int j = 0; j < i && first; j++)
                if (grp[j] == g && ends_with_dot(c->lin[j].name, suf) &&
                    name_suffix(c->lin[j].name) && strcmp(name_suffix(c->lin[j].name), suf) == 0)
                    first = false;
            if (!first)
                continue;
            char re[400];
            size_t n = (size_t)snprintf(re, sizeof re, "re:.*\\.");
            for (const char *p = suf; *p && n + 3 < sizeof re; p++) {
                if (*p == '.')
                    re[n++] = '\\';
                re[n++] = *p;
            }
            snprintf(re + n, sizeof re - n, "$");
            kiln_jw_string(w, re);
        } else {
            kiln_jw_string(w, c->lin[i].name);
        }
    }
    kiln_jw_end_array(w);
}

static void jw_qconfig(KilnJsonWriter *w, const KilnCheckpoint *c, const Scheme *sch,
                       const int *grp, int ngrp)
{
    const char *fmt = ngrp ? sch[0].format : "dense";
    for (int g = 1; g < ngrp; g++)
        if (strcmp(sch[g].format, fmt) != 0)
            fmt = "mixed-precision";
    bool mixed = strcmp(fmt, "mixed-precision") == 0;
    kiln_jw_begin_object(w);
    kiln_jw_key(w, "quant_method");
    kiln_jw_string(w, "compressed-tensors");
    kiln_jw_key(w, "format");
    kiln_jw_string(w, fmt);
    kiln_jw_key(w, "quantization_status");
    kiln_jw_string(w, "compressed");
    kiln_jw_key(w, "config_groups");
    kiln_jw_begin_object(w);
    for (int g = 0; g < ngrp; g++) {
        char key[32];
        snprintf(key, sizeof key, "group_%d", g);
        kiln_jw_key(w, key);
        kiln_jw_begin_object(w);
        kiln_jw_key(w, "targets");
        jw_targets(w, c, grp, g);
        kiln_jw_key(w, "weights");
        jw_args(w, &sch[g].w, sch[g].group, sch[g].gidx, true);
        kiln_jw_key(w, "input_activations");
        if (sch[g].a.fmt == KILN_QF_NONE)
            kiln_jw_null(w);
        else
            jw_args(w, &sch[g].a, 0, false, false);
        kiln_jw_key(w, "output_activations");
        kiln_jw_null(w);
        if (mixed) {
            kiln_jw_key(w, "format");
            kiln_jw_string(w, sch[g].format);
        }
        kiln_jw_end_object(w);
    }
    kiln_jw_end_object(w);
    kiln_jw_key(w, "ignore");
    kiln_jw_begin_array(w);
    for (int i = 0; i < c->nignore; i++)
        kiln_jw_string(w, c->ignore[i]);
    kiln_jw_end_array(w);
    kiln_jw_key(w, "kv_cache_scheme");
    if (c->kv.fmt == KILN_QF_NONE)
        kiln_jw_null(w);
    else
        jw_args(w, &c->kv, 0, false, false);
    kiln_jw_key(w, "global_compression_ratio");
    kiln_jw_null(w);
    kiln_jw_end_object(w);
}

int kiln_ckpt_write_config(const char *dir, const KilnCheckpoint *c, const Scheme *sch,
                           const int *grp, int ngrp, KilnDiag *d)
{
    KilnJson *cfg = NULL;
    if (c->config_json) {
        int rc = kiln_json_parse(c->config_json, strlen(c->config_json), "config.json", &cfg, d);
        if (rc)
            return rc;
        if (cfg->kind != KILN_JSON_OBJECT) {
            kiln_json_free(cfg);
            return kiln_diag_set(d, KILN_EINPUT, "config.json: not a JSON object");
        }
    }
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f) {
        kiln_json_free(cfg);
        return kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
    }
    KilnJsonWriter w;
    kiln_jw_init(&w, f);
    kiln_jw_begin_object(&w);
    for (size_t i = 0; cfg && i < cfg->len; i++) {
        if (strcmp(kiln_json_key(cfg, i), "quantization_config") == 0)
            continue;
        kiln_jw_key(&w, kiln_json_key(cfg, i));
        kiln_jw_value(&w, &cfg->items[i]);
    }
    kiln_jw_key(&w, "quantization_config");
    jw_qconfig(&w, c, sch, grp, ngrp);
    kiln_jw_end_object(&w);
    int rc = kiln_jw_finish(&w, d);
    fputc('\n', f);
    fclose(f);
    kiln_json_free(cfg);
    char path[4200];
    snprintf(path, sizeof path, "%s/config.json", dir);
    if (!rc)
        rc = kiln_rt_write_file(path, buf, len, d);
    free(buf);
    return rc;
}
