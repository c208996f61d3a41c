/* model/nets/hfdir.c — a Hugging Face model directory's config.json and tensors for the model
 * loaders, plain or quantized (model/nets/hfdir.h), and which model a directory holds. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/nets/hfdir.h"

static int cmp_t(const void *a, const void *b, void *ctx)
{
    const KilnCheckpoint *c = ctx;
    return strcmp(c->t[*(const int *)a].name, c->t[*(const int *)b].name);
}

static int cmp_lin(const void *a, const void *b, void *ctx)
{
    const KilnCheckpoint *c = ctx;
    return strcmp(c->lin[*(const int *)a].name, c->lin[*(const int *)b].name);
}

static int build_index(KilnHfDir *h, KilnDiag *d)
{
    const KilnCheckpoint *c = h->ck;
    h->t_by_name = malloc(sizeof(int) * (size_t)(c->nt + 1));
    h->lin_by_name = malloc(sizeof(int) * (size_t)(c->nlin + 1));
    h->taken = calloc((size_t)c->nt + 1, sizeof *h->taken);
    if (!h->t_by_name || !h->lin_by_name || !h->taken)
        return kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
    for (int i = 0; i < c->nt; i++)
        h->t_by_name[i] = i;
    for (int i = 0; i < c->nlin; i++)
        h->lin_by_name[i] = i;
    qsort_r(h->t_by_name, (size_t)c->nt, sizeof(int), cmp_t, (void *)c);
    qsort_r(h->lin_by_name, (size_t)c->nlin, sizeof(int), cmp_lin, (void *)c);
    return 0;
}

/* Binary search of name among n indices into names of stride `size` (the name first). */
static int find_idx(const int *idx, int n, const void *base, size_t size, const char *name)
{
    int lo = 0, hi = n - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        int c = strcmp((const char *)base + (size_t)idx[mid] * size, name);
        if (!c)
            return idx[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid - 1;
    }
    return -1;
}

/* ck's quantized layer `module`, NULL when it has none. */
static const KilnQLinear *find_lin(const KilnHfDir *h, const char *module)
{
    int i = find_idx(h->lin_by_name, h->ck->nlin, h->ck->lin, sizeof *h->ck->lin, module);
    return i < 0 ? NULL : &h->ck->lin[i];
}

int kiln_hf_open(const char *dir, KilnHfDir *h, KilnDiag *d)
{
    memset(h, 0, sizeof *h);
    h->dir = dir;
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", dir);
    int rc = kiln_json_parse_file(path, &h->config, d);
    if (!rc && h->config->kind != KILN_JSON_OBJECT)
        rc = kiln_diag_set(d, KILN_EINPUT, "%s: not a JSON object", path);
    if (!rc && !(h->ck = calloc(1, sizeof *h->ck)))
        rc = kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
    if (!rc)
        rc = kiln_checkpoint_open(dir, h->ck, d); /* mapped: read as the loaders take it */
    if (!rc)
        rc = build_index(h, d);
    if (rc)
        kiln_hf_close(h);
    return rc;
}

void kiln_hf_close(KilnHfDir *h)
{
    free(h->t_by_name), free(h->lin_by_name), free(h->taken);
    kiln_json_free(h->config);
    kiln_checkpoint_free(h->ck);
    free(h->ck);
    memset(h, 0, sizeof *h);
}

int kiln_hf_cfg_int(const KilnHfDir *h, const char *key, int dflt, int *out, KilnDiag *d)
{
    const KilnJson *v = kiln_json_get(h->config, key);
    if ((!v || v->kind == KILN_JSON_NULL) && dflt >= 0) {
        *out = dflt;
        return 0;
    }
    if (!v || v->kind != KILN_JSON_NUMBER || !v->is_int || v->i <= 0 || v->i > (1 << 24))
        return kiln_diag_set(d, KILN_EINPUT,
                             "%s/config.json: '%s' missing or not a positive integer", h->dir,
                             key);
    *out = (int)v->i;
    return 0;
}

static KilnCkptTensor *find_t(const KilnHfDir *h, const char *name)
{
    int i = find_idx(h->t_by_name, h->ck->nt, h->ck->t, sizeof *h->ck->t, name);
    return i < 0 ? NULL : &h->ck->t[i];
}

bool kiln_hf_has(const KilnHfDir *h, const char *name)
{
    return find_t(h, name) != NULL;
}

int kiln_hf_dims(void *ctx, const char *name, int64_t dim[4])
{
    const KilnHfDir *h = ctx;
    const KilnCkptTensor *t = find_t(h, name);
    if (t) {
        memcpy(dim, t->dim, sizeof t->dim);
        return t->rank;
    }
    size_t n = strlen(name);
    char mod[400];
    bool w = n > 7 && !strcmp(name + n - 7, ".weight"), b = n > 5 && !strcmp(name + n - 5, ".bias");
    if ((!w && !b) || n >= sizeof mod)
        return -1;
    memcpy(mod, name, n - (w ? 7 : 5));
    mod[n - (w ? 7 : 5)] = 0;
    const KilnQLinear *q = find_lin(h, mod);
    if (!q || (b && !q->bias))
        return -1;
    dim[0] = q->N, dim[1] = q->K;
    return w ? 2 : 1;
}

int64_t kiln_hf_numel(const KilnHfDir *h, const char *name)
{
    const KilnCkptTensor *t = find_t(h, name);
    if (!t)
        return -1;
    int64_t n = 1;
    for (int i = 0; i < t->rank; i++)
        n *= t->dim[i]; /* bounded: the reader held these elements in memory */
    return n;
}

int kiln_hf_take(KilnHfDir *h, const char *name, int64_t numel, float **out, KilnDiag *d)
{
    KilnCkptTensor *t = find_t(h, name);
    if (!t)
        return kiln_diag_set(d, KILN_EINPUT, "%s: no tensor '%s'", h->dir, name);
    int64_t n = kiln_hf_numel(h, name);
    if (n != numel)
        return kiln_diag_set(d, KILN_EINPUT, "%s: tensor '%s' has %lld elements, expected %lld",
                             h->dir, name, (long long)n, (long long)numel);
    if (t->data) { /* no copy: the loaders take each tensor once */
        *out = t->data;
        t->data = NULL;
        return 0;
    }
    if (h->taken[t - h->ck->t])
        return kiln_diag_set(d, KILN_EINTERNAL, "%s: tensor '%s' taken twice", h->dir, name);
    int rc = kiln_checkpoint_tensor_f32(h->ck, name, out, d); /* read from the mapped file now */
    if (!rc && !*out)
        rc = kiln_diag_set(d, KILN_EINTERNAL, "%s: tensor '%s' is in no file", h->dir, name);
    h->taken[t - h->ck->t] = true;
    return rc;
}

int kiln_hf_rows(KilnHfDir *h, const char *name, int64_t rows, int64_t cols,
                 KilnModelFile **mf, const KilnModelTensor **t, KilnDiag *d)
{
    *mf = NULL, *t = NULL;
    const KilnCkptTensor *ct = find_t(h, name);
    const char *path = kiln_checkpoint_tensor_file(h->ck, name);
    if (!ct || !path || h->taken[ct - h->ck->t] || ct->rank != 2 || ct->dim[0] != rows ||
        ct->dim[1] != cols)
        return 1;
    KilnDiag ignore = {0};
    if (kiln_mf_open(path, mf, &ignore))
        return 1;
    *t = kiln_mf_find(*mf, name);
    if (!*t || kiln_mf_rows_f32(*mf, *t, 0, 0, NULL, &ignore)) { /* a type read by rows */
        kiln_mf_close(*mf);
        *mf = NULL, *t = NULL;
        return 1;
    }
    h->taken[ct - h->ck->t] = true;
    (void)d;
    return 0;
}

int kiln_hf_linear(KilnHfDir *h, const char *module, KilnLinear *l, bool bias, KilnDiag *d)
{
    char name[400];
    snprintf(name, sizeof name, "%s.bias", module);
    const KilnQLinear *q = find_lin(h, module);
    int rc = 0;
    if (q) {
        if (q->N != l->N || q->K != l->K)
            return kiln_diag_set(d, KILN_EINPUT, "%s: quantized layer '%s' is %lldx%lld, "
                                 "expected %lldx%lld", h->dir, module, (long long)q->N,
                                 (long long)q->K, (long long)l->N, (long long)l->K);
        l->stored = q; /* w dequantized from it when needed (kiln_linear_wget) */
        if (q->bias) {
            if (!(l->b = malloc(sizeof(float) * (size_t)l->N)))
                return kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
            memcpy(l->b, q->bias, sizeof(float) * (size_t)l->N);
        }
    } else {
        char wn[400];
        snprintf(wn, sizeof wn, "%s.weight", module);
        rc = kiln_hf_take(h, wn, l->N * l->K, &l->w, d);
    }
    if (!rc && !l->b && (bias || find_t(h, name)))
        rc = kiln_hf_take(h, name, l->N, &l->b, d);
    return rc;
}

bool kiln_hf_quantized(const KilnHfDir *h)
{
    return h->ck && h->ck->nlin > 0;
}

KilnCheckpoint *kiln_hf_take_checkpoint(KilnHfDir *h)
{
    KilnCheckpoint *c = h->ck;
    free(h->t_by_name), free(h->lin_by_name), free(h->taken); /* the directory is done with */
    h->t_by_name = h->lin_by_name = NULL;
    h->taken = NULL;
    for (int i = 0; i < c->nt; i++) { /* what no loader took is not needed */
        free(c->t[i].data);
        c->t[i].data = NULL;
    }
    h->ck = NULL;
    return c;
}

const char *kiln_hf_arch(const char *dir)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", dir);
    KilnJson *cfg = NULL;
    KilnDiag d = {0};
    if (kiln_json_parse_file(path, &cfg, &d))
        return NULL;
    const KilnJson *a = kiln_json_get(cfg, "architectures");
    const char *kind = NULL;
    for (size_t i = 0; a && a->kind == KILN_JSON_ARRAY && i < a->len && !kind; i++) {
        const KilnJson *s = &a->items[i];
        if (s->kind != KILN_JSON_STRING)
            continue;
        if (!strcmp(s->str, "LlamaForCausalLM"))
            kind = "llama";
        else if (!strncmp(s->str, "Bert", 4))
            kind = "bert";
    }
    kiln_json_free(cfg);
    return kind;
}
