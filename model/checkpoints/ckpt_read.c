/* model/checkpoints/ckpt_read.c — kiln_checkpoint_read: a Hugging Face model directory (one
 * *.safetensors or the shards model.safetensors.index.json names, and config.json) whose
 * linear layers another tool quantized: finds the layout (compressed-tensors, AutoGPTQ,
 * AutoAWQ) and hands each quantized layer to ckpt_ct.c (compressed-tensors' schemes) or
 * ckpt_layouts.c; the other tensors come back as f32. docs/checkpoints.md, "Reading
 * checkpoints". */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "model/checkpoints/ckpt_internal.h"
#include "model/files/modelfile_internal.h"
#include "runtime/runtime.h"

#define ERR(...) kiln_diag_set(d, KILN_EINPUT, __VA_ARGS__)
#define OOM() kiln_diag_set(d, KILN_EINTERNAL, "checkpoint: out of memory")
#define MAX_SHARDS 4096

/* ------------------------------------------------------------------ files */

static int cmp_ent(const void *a, const void *b)
{
    return strcmp(((const KilnCkTensor *)a)->name, ((const KilnCkTensor *)b)->name);
}

KilnCkTensor *kiln_ck_find(KilnCkSrc *s, const char *module, const char *suffix)
{
    char name[KILN_MF_MAX_NAME + 2];
    if ((size_t)snprintf(name, sizeof name, "%s.%s", module, suffix) >= sizeof name)
        return NULL;
    KilnCkTensor key = {.name = name};
    return bsearch(&key, s->e, (size_t)s->ne, sizeof *s->e, cmp_ent);
}

void kiln_ck_src_close(KilnCkSrc *s)
{
    for (int i = 0; i < s->nmf; i++)
        kiln_mf_close(s->mf[i]);
    free(s->mf);
    free(s->e);
    memset(s, 0, sizeof *s);
}

static bool is_dir(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

static bool has_suffix(const char *s, const char *suf)
{
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && strcmp(s + a - b, suf) == 0;
}

/* A shard name from an index: a plain file name, never a path. */
static bool safe_file_name(const char *f)
{
    return f[0] && f[0] != '.' && !strchr(f, '/') && has_suffix(f, ".safetensors");
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The files to open: the index's distinct shard names, else every *.safetensors. */
static int list_files(const char *dir, const KilnJson *index, char ***out, int *n, KilnDiag *d)
{
    char **v = NULL;
    int nv = 0, rc = 0;
    if (index) {
        const KilnJson *wm = kiln_json_get(index, "weight_map");
        if (!wm || wm->kind != KILN_JSON_OBJECT)
            return ERR("%s/model.safetensors.index.json: no \"weight_map\" object", dir);
        v = calloc(wm->len + 1, sizeof *v);
        if (!v)
            return OOM();
        for (size_t i = 0; i < wm->len && !rc; i++) {
            const KilnJson *f = &wm->items[i];
            if (f->kind != KILN_JSON_STRING || !safe_file_name(f->str))
                rc = ERR("%s/model.safetensors.index.json: weight_map[\"%.200s\"] is not the "
                         "name of a .safetensors file in the directory", dir, kiln_json_key(wm, i));
            bool seen = false;
            for (int k = 0; !rc && k < nv && !seen; k++)
                seen = !strcmp(v[k], f->str);
            if (!rc && !seen && nv >= MAX_SHARDS)
                rc = ERR("%s/model.safetensors.index.json: more than %d files", dir, MAX_SHARDS);
            if (!rc && !seen && !(v[nv++] = strdup(f->str)))
                rc = OOM();
        }
    } else {
        DIR *dh = opendir(dir);
        if (!dh)
            return ERR("%s: cannot open the directory: %s", dir, strerror(errno));
        struct dirent *de;
        while (!rc && (de = readdir(dh))) {
            if (!safe_file_name(de->d_name))
                continue;
            char **nvv = nv < MAX_SHARDS ? realloc(v, sizeof *v * (size_t)(nv + 2)) : NULL;
            if (!nvv) {
                rc = nv < MAX_SHARDS ? OOM() : ERR("%s: more than %d .safetensors files", dir,
                                                   MAX_SHARDS);
                break;
            }
            v = nvv;
            if (!(v[nv++] = strdup(de->d_name)))
                rc = OOM();
        }
        closedir(dh);
        if (!rc && nv == 0)
            rc = ERR("%s: no .safetensors file (kiln reads Hugging Face safetensors "
                     "checkpoints)", dir);
        if (!rc)
            qsort(v, (size_t)nv, sizeof *v, cmp_str);
    }
    *out = v, *n = nv;
    return rc;
}

static int src_open(KilnCkSrc *s, const char *dir, const KilnJson *index, KilnDiag *d)
{
    s->dir = dir;
    char **files = NULL;
    int nf = 0, rc = list_files(dir, index, &files, &nf, d);
    if (!rc && !(s->mf = calloc((size_t)nf + 1, sizeof *s->mf)))
        rc = OOM();
    int64_t total = 0;
    for (int i = 0; !rc && i < nf; i++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, files[i]);
        if (!(rc = kiln_mf_open(path, &s->mf[i], d)))
            s->nmf++;
        if (!rc && strcmp(kiln_mf_format(s->mf[i]), "safetensors"))
            rc = ERR("%s: not a safetensors file", path);
        if (!rc)
            total += kiln_mf_ntensors(s->mf[i]);
        if (!rc && total > INT32_MAX / 2)
            rc = ERR("%s: more than %d tensors", dir, INT32_MAX / 2);
    }
    if (!rc && !(s->e = calloc((size_t)total + 1, sizeof *s->e)))
        rc = OOM();
    for (int i = 0; !rc && i < s->nmf; i++) {
        const KilnModelFile *mf = s->mf[i];
        const char *base = strrchr(mf->path, '/');
        for (int k = 0; k < mf->ntensors; k++)
            s->e[s->ne++] = (KilnCkTensor){mf->tensors[k].name, &mf->tensors[k], mf,
                                           base ? base + 1 : mf->path, mf->type_names[k], false};
    }
    if (!rc)
        qsort(s->e, (size_t)s->ne, sizeof *s->e, cmp_ent);
    for (int i = 1; !rc && i < s->ne; i++)
        if (!strcmp(s->e[i].name, s->e[i - 1].name))
            rc = ERR("%s: tensor '%s' is in both %s and %s", dir, s->e[i].name, s->e[i - 1].file,
                     s->e[i].file);
    /* the index must tell the truth about where each tensor is */
    const KilnJson *wm = index ? kiln_json_get(index, "weight_map") : NULL;
    for (size_t i = 0; !rc && wm && i < wm->len; i++) {
        KilnCkTensor key = {.name = kiln_json_key(wm, i)};
        const KilnCkTensor *e = bsearch(&key, s->e, (size_t)s->ne, sizeof *s->e, cmp_ent);
        if (!e || strcmp(e->file, wm->items[i].str))
            rc = ERR("%s/model.safetensors.index.json: names '%.200s' in %s, which does not "
                     "hold it", dir, kiln_json_key(wm, i), wm->items[i].str);
    }
    for (int i = 0; i < nf; i++)
        free(files[i]);
    free(files);
    return rc;
}

/* ------------------------------------------------------------------ config */

static char *read_text(const char *path, KilnDiag *d)
{
    FILE *f = kiln_rt_fopen_regular(path, "checkpoint file", 0, NULL); /* no FIFO, no device */
    if (!f)
        return NULL;
    char *buf = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (n + 4096 + 1 > cap) {
            char *nb = cap < KILN_JSON_MAX_BYTES ? realloc(buf, cap = cap * 2 + 8192) : NULL;
            if (!nb) {
                free(buf);
                fclose(f);
                kiln_diag_set(d, KILN_EINPUT, "%s: larger than %zu bytes or out of memory",
                              path, (size_t)KILN_JSON_MAX_BYTES);
                return NULL;
            }
            buf = nb;
        }
        size_t r = fread(buf + n, 1, 4096, f);
        n += r;
        if (r < 4096)
            break;
    }
    fclose(f);
    buf[n] = 0;
    return buf;
}

/* Parses dir/name when it exists (*out NULL when not). */
static int parse_opt(const char *dir, const char *name, KilnJson **out, char **text,
                     KilnDiag *d)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    *out = NULL;
    struct stat st;
    if (stat(path, &st) != 0)
        return 0;
    char *t = read_text(path, d);
    if (!t)
        return d->code ? d->code : ERR("%s: cannot read: %s", path,
                                       errno == EINVAL ? "not a regular file" : strerror(errno));
    int rc = kiln_json_parse(t, strlen(t), path, out, d);
    if (!rc && (*out)->kind != KILN_JSON_OBJECT) {
        kiln_json_free(*out);
        *out = NULL;
        rc = ERR("%s: not a JSON object", path);
    }
    if (text && !rc)
        *text = t;
    else
        free(t);
    return rc;
}

/* ------------------------------------------------------------------ modules */

static int add_lin(KilnCheckpoint *c, int *cap, const char *m, KilnQLinear **q, KilnDiag *d)
{
    if (strlen(m) >= sizeof c->lin[0].name)
        return ERR("module name '%.100s...' is longer than %zu bytes", m,
                   sizeof c->lin[0].name - 1);
    if (c->nlin == *cap) {
        int nc = *cap ? *cap * 2 : 16;
        KilnQLinear *v = realloc(c->lin, sizeof *v * (size_t)nc);
        if (!v)
            return OOM();
        c->lin = v, *cap = nc;
    }
    *q = &c->lin[c->nlin++];
    memset(*q, 0, sizeof **q);
    snprintf((*q)->name, sizeof (*q)->name, "%s", m);
    return 0;
}

typedef enum { LAYOUT_DENSE, LAYOUT_CT, LAYOUT_GPTQ, LAYOUT_AWQ } Layout;

typedef struct ReadCtx {
    KilnCkSrc src;
    Layout layout;
    KilnCtCfg ct;
    KilnGptqCfg gptq;
    int awq_bits, awq_group;
} ReadCtx;

/* The module names of a layout's quantized tensors: ".weight_packed", or an I8 / F8
 * ".weight" with a ".weight_scale" (compressed-tensors); ".qweight" (GPTQ, AWQ). */
static bool module_of(ReadCtx *x, const KilnCkTensor *e, char *m, size_t n)
{
    const char *suf = x->layout == LAYOUT_CT ? ".weight_packed" : ".qweight";
    size_t l = strlen(e->name);
    bool hit = has_suffix(e->name, suf);
    if (!hit && x->layout == LAYOUT_CT && has_suffix(e->name, ".weight") &&
        (e->t->type == KILN_MT_I8 || !strncmp(e->dtype, "F8_", 3))) {
        suf = ".weight";
        snprintf(m, n, "%.*s", (int)(l - strlen(suf)), e->name);
        hit = kiln_ck_find(&x->src, m, "weight_scale") != NULL;
    }
    if (!hit || l - strlen(suf) >= n)
        return false;
    snprintf(m, n, "%.*s", (int)(l - strlen(suf)), e->name);
    return true;
}

static int read_modules(ReadCtx *x, KilnCheckpoint *c, KilnDiag *d)
{
    int cap = 0, rc = 0;
    char m[KILN_MF_MAX_NAME + 1];
    for (int i = 0; i < x->src.ne && !rc; i++) {
        if (x->layout == LAYOUT_DENSE || !module_of(x, &x->src.e[i], m, sizeof m))
            continue;
        KilnQLinear *q = NULL;
        if ((rc = add_lin(c, &cap, m, &q, d)))
            break;
        if (x->layout == LAYOUT_CT) {
            rc = kiln_ck_ct_layer(&x->src, &x->ct, m, q, d);
        } else if (x->layout == LAYOUT_GPTQ) {
            rc = kiln_ck_gptq_module(&x->src, m, &x->gptq, q, d);
        } else {
            rc = kiln_ck_awq_module(&x->src, m, x->awq_bits, x->awq_group, q, d);
        }
    }
    return rc;
}

/* Every tensor no quantized module took, as f32. */
static int read_plain(KilnCkSrc *s, KilnCheckpoint *c, KilnDiag *d)
{
    int n = 0;
    for (int i = 0; i < s->ne; i++)
        n += !s->e[i].used;
    if (!(c->t = calloc((size_t)n + 1, sizeof *c->t)))
        return OOM();
    for (int i = 0; i < s->ne; i++) {
        const KilnCkTensor *e = &s->e[i];
        if (e->used)
            continue;
        if (strlen(e->name) >= sizeof c->t[0].name)
            return ERR("%s/%s: tensor name '%.100s...' is longer than %zu bytes", s->dir,
                       e->file, e->name, sizeof c->t[0].name - 1);
        KilnCkptTensor *t = &c->t[c->nt];
        snprintf(t->name, sizeof t->name, "%s", e->name);
        t->rank = e->t->rank;
        memcpy(t->dim, e->t->dim, sizeof t->dim);
        int rc = s->mapped ? 0 : kiln_mf_load_f32(e->mf, e->name, &t->data, d);
        kiln_mf_drop_pages(e->mf, e->t); /* the f32 copy is what stays resident, not both */
        if (rc)
            return rc;
        c->nt++;
    }
    return 0;
}

/* ------------------------------------------------------------------ layouts */

int kiln_ck_ignore_list(KilnCheckpoint *c, const KilnJson *names, KilnDiag *d)
{
    if (!names || names->kind != KILN_JSON_ARRAY || !names->len)
        return 0;
    if (!(c->ignore = calloc(names->len, sizeof *c->ignore)))
        return OOM();
    for (size_t k = 0; k < names->len; k++)
        if (names->items[k].kind == KILN_JSON_STRING &&
            !(c->ignore[c->nignore++] = strdup(names->items[k].str)))
            return OOM();
    return 0;
}

/* AutoGPTQ's quantize_config (config.json quantization_config or quantize_config.json). */
static int read_gptq_cfg(ReadCtx *x, const KilnJson *qc, const char *where, KilnDiag *d)
{
    int64_t bits = 4, group = -1;
    kiln_ck_jint(qc, "bits", &bits);
    kiln_ck_jint(qc, "group_size", &group);
    const char *fmt = kiln_ck_jstr(qc, "checkpoint_format");
    if (!fmt)
        fmt = kiln_ck_jstr(qc, "format");
    if (bits != 4 && bits != 8)
        return ERR("%s: GPTQ with %lld bits; kiln reads 4 and 8", where, (long long)bits);
    if (group == 0 || group < -1 || group > INT32_MAX)
        return ERR("%s: group_size %lld", where, (long long)group);
    if (fmt && strcmp(fmt, "gptq") && strcmp(fmt, "gptq_v2"))
        return ERR("%s: checkpoint_format \"%.40s\" is not one kiln reads (gptq, gptq_v2)",
                   where, fmt);
    x->gptq = (KilnGptqCfg){(int)bits, (int)group, fmt && !strcmp(fmt, "gptq_v2")};
    return 0;
}

/* AutoAWQ's quant config: bits / w_bit, group_size / q_group_size, version. */
static int read_awq_cfg(ReadCtx *x, const KilnJson *qc, const char *where, KilnCheckpoint *c,
                        KilnDiag *d)
{
    int64_t bits = 4, group = 128;
    if (!kiln_ck_jint(qc, "bits", &bits))
        kiln_ck_jint(qc, "w_bit", &bits);
    if (!kiln_ck_jint(qc, "group_size", &group))
        kiln_ck_jint(qc, "q_group_size", &group);
    const char *ver = kiln_ck_jstr(qc, "version");
    if (ver && strcasecmp(ver, "gemm"))
        return ERR("%s: AWQ version \"%.40s\"; kiln reads the GEMM layout", where, ver);
    if (!kiln_ck_jbool(qc, "zero_point", true))
        return ERR("%s: AWQ without zero points is not a layout kiln reads", where);
    if (group == 0 || group < -1 || group > INT32_MAX)
        return ERR("%s: group_size %lld", where, (long long)group);
    x->awq_bits = (int)bits, x->awq_group = (int)group;
    return kiln_ck_ignore_list(c, kiln_json_get(qc, "modules_to_not_convert"), d);
}

/* Which layout the directory's config files describe. */
/* compressed-tensors writes "sparsity_config": {} (or null, or format "dense") for
 * checkpoints that are not sparse: only a real sparse format is refused. */
static bool sparse(const KilnJson *sp)
{
    if (!sp || sp->kind != KILN_JSON_OBJECT)
        return false;
    const char *f = kiln_ck_jstr(sp, "format");
    return f && strcmp(f, "dense");
}

static int detect(ReadCtx *x, const char *dir, const KilnJson *cfg, KilnCheckpoint *c,
                  KilnDiag *d)
{
    const KilnJson *qc = kiln_ck_jget(cfg, "quantization_config", KILN_JSON_OBJECT);
    const KilnJson *cc = kiln_ck_jget(cfg, "compression_config", KILN_JSON_OBJECT);
    if (!qc && cc) { /* older transformers nest it: compression_config.quantization_config */
        if (sparse(kiln_json_get(cc, "sparsity_config")))
            return ERR("%s/config.json: sparse checkpoints are not read by kiln", dir);
        qc = kiln_ck_jget(cc, "quantization_config", KILN_JSON_OBJECT);
    }
    char where[600];
    int rc = 0;
    if (qc) {
        const char *qm = kiln_ck_jstr(qc, "quant_method");
        snprintf(where, sizeof where, "%s/config.json: quantization_config", dir);
        if (!qm)
            return ERR("%s has no quant_method", where);
        if (!strcmp(qm, "compressed-tensors")) {
            if (sparse(kiln_json_get(qc, "sparsity_config")))
                return ERR("%s: sparse checkpoints are not read by kiln", where);
            x->layout = LAYOUT_CT;
            return kiln_ck_ct_config(dir, cfg, qc, c, &x->ct, d);
        }
        if (!strcmp(qm, "gptq")) {
            x->layout = LAYOUT_GPTQ;
            snprintf(c->format, sizeof c->format, "gptq");
            return read_gptq_cfg(x, qc, where, d);
        }
        if (!strcmp(qm, "awq")) {
            x->layout = LAYOUT_AWQ;
            snprintf(c->format, sizeof c->format, "awq");
            return read_awq_cfg(x, qc, where, c, d);
        }
        return ERR("%s: quant_method \"%.60s\" is not one kiln reads (compressed-tensors, gptq, "
                   "awq)", where, qm);
    }
    /* AutoGPTQ / AutoAWQ releases that keep the config beside config.json */
    static const char *const side[] = {"quantize_config.json", "quant_config.json"};
    for (int i = 0; i < 2 && !rc; i++) {
        KilnJson *j = NULL;
        if ((rc = parse_opt(dir, side[i], &j, NULL, d)) || !j)
            continue;
        const char *qm = kiln_ck_jstr(j, "quant_method");
        bool awq = (qm && !strcmp(qm, "awq")) || kiln_json_get(j, "w_bit");
        snprintf(where, sizeof where, "%s/%s", dir, side[i]);
        x->layout = awq ? LAYOUT_AWQ : LAYOUT_GPTQ;
        snprintf(c->format, sizeof c->format, awq ? "awq" : "gptq");
        if (qm && strcmp(qm, "awq") && strcmp(qm, "gptq"))
            rc = ERR("%s: quant_method \"%.60s\" is not one kiln reads", where, qm);
        else
            rc = awq ? read_awq_cfg(x, j, where, c, d) : read_gptq_cfg(x, j, where, d);
        kiln_json_free(j);
        return rc;
    }
    if (!rc) {
        x->layout = LAYOUT_DENSE;
        snprintf(c->format, sizeof c->format, "dense");
    }
    return rc;
}

static int read_dir(const char *dir, bool mapped, KilnCheckpoint *out, KilnDiag *d)
{
    memset(out, 0, sizeof *out);
    if (!is_dir(dir))
        return ERR("%s: not a directory (a checkpoint is a Hugging Face model directory)", dir);
    ReadCtx x = {.src.mapped = mapped};
    KilnJson *cfg = NULL, *index = NULL;
    int rc = parse_opt(dir, "config.json", &cfg, &out->config_json, d);
    if (!rc)
        rc = parse_opt(dir, "model.safetensors.index.json", &index, NULL, d);
    if (!rc)
        rc = src_open(&x.src, dir, index, d);
    if (!rc)
        rc = detect(&x, dir, cfg, out, d);
    if (!rc)
        rc = read_modules(&x, out, d);
    if (!rc)
        rc = read_plain(&x.src, out, d);
    for (int i = 0; !rc && mapped && i < x.src.ne; i++) /* checked: read again when needed */
        kiln_mf_drop_pages(x.src.e[i].mf, x.src.e[i].t);
    if (!rc && mapped && !(out->src = malloc(sizeof *out->src)))
        rc = OOM();
    if (!rc && mapped) {
        *out->src = x.src;
        out->src->dir = NULL; /* the caller's string: not kept */
    } else {
        kiln_ck_src_close(&x.src);
    }
    kiln_ck_ct_free(&x.ct);
    kiln_json_free(cfg);
    kiln_json_free(index);
    if (rc) {
        kiln_checkpoint_free(out);
        memset(out, 0, sizeof *out);
    }
    return rc;
}

int kiln_checkpoint_read(const char *dir, KilnCheckpoint *out, KilnDiag *d)
{
    return read_dir(dir, false, out, d);
}

int kiln_checkpoint_open(const char *dir, KilnCheckpoint *out, KilnDiag *d)
{
    return read_dir(dir, true, out, d);
}

static const KilnCkTensor *mapped_tensor(const KilnCheckpoint *c, const char *name)
{
    if (!c->src)
        return NULL;
    KilnCkTensor key = {.name = name};
    return bsearch(&key, c->src->e, (size_t)c->src->ne, sizeof *c->src->e, cmp_ent);
}

int kiln_checkpoint_tensor_f32(const KilnCheckpoint *c, const char *name, float **out,
                               KilnDiag *d)
{
    const KilnCkTensor *e = mapped_tensor(c, name);
    *out = NULL;
    if (!e || e->used)
        return 0;
    int rc = kiln_mf_load_f32(e->mf, e->name, out, d);
    kiln_mf_drop_pages(e->mf, e->t);
    return rc;
}

const char *kiln_checkpoint_tensor_file(const KilnCheckpoint *c, const char *name)
{
    const KilnCkTensor *e = mapped_tensor(c, name);
    return e && !e->used ? e->mf->path : NULL;
}
