/* model/nets/hfdir.c — a Hugging Face model directory's config.json and tensors for the model
 * loaders, plain or quantized (model/nets/hfdir.h), and which model a directory holds. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/nets/hfdir.h"

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
        rc = kiln_checkpoint_read(dir, h->ck, d);
    if (rc)
        kiln_hf_close(h);
    return rc;
}

void kiln_hf_close(KilnHfDir *h)
{
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
    for (int i = 0; i < h->ck->nt; i++)
        if (!strcmp(h->ck->t[i].name, name))
            return &h->ck->t[i];
    return NULL;
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
    const KilnQLinear *q = kiln_checkpoint_find(h->ck, mod);
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
    if (!t->data)
        return kiln_diag_set(d, KILN_EINTERNAL, "%s: tensor '%s' taken twice", h->dir, name);
    *out = t->data; /* no copy: the loaders take each tensor once */
    t->data = NULL;
    return 0;
}

int kiln_hf_linear(KilnHfDir *h, const char *module, KilnLinear *l, bool bias, KilnDiag *d)
{
    char name[400];
    snprintf(name, sizeof name, "%s.bias", module);
    const KilnQLinear *q = kiln_checkpoint_find(h->ck, module);
    int rc = 0;
    if (q) {
        if (q->N != l->N || q->K != l->K)
            return kiln_diag_set(d, KILN_EINPUT, "%s: quantized layer '%s' is %lldx%lld, "
                                 "expected %lldx%lld", h->dir, module, (long long)q->N,
                                 (long long)q->K, (long long)l->N, (long long)l->K);
        if (!(l->w = malloc(sizeof(float) * (size_t)(l->N * l->K))))
            return kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
        kiln_qlinear_dequant(q, l->w);
        l->stored = q;
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
