/* model/eval/sample.c — the next token from a row of logits: greedy, or temperature +
 * top-p (nucleus) sampling with a seeded xoshiro256** generator (docs/generate.md). */
#include <math.h>
#include <stdlib.h>

#include "model/eval/generate.h"
#include "ir/ir.h"

static uint64_t splitmix(uint64_t *x)
{
    uint64_t z = (*x += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t xoshiro(uint64_t *s)
{
    uint64_t r = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0], s[3] ^= s[1], s[1] ^= s[2], s[0] ^= s[3], s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return r;
}

double kiln_sampler_uniform(KilnSampler *s) { return (double)(xoshiro(s->s) >> 11) * 0x1.0p-53; }

int kiln_sampler_init(KilnSampler *s, int V, float temp, float top_p, uint64_t seed)
{
    *s = (KilnSampler){.temp = temp, .top_p = top_p, .V = V};
    uint64_t x = seed;
    for (int i = 0; i < 4; i++)
        s->s[i] = splitmix(&x);
    s->idx = malloc(sizeof *s->idx * (size_t)V);
    s->p = malloc(sizeof *s->p * (size_t)V);
    if (!s->idx || !s->p) {
        kiln_sampler_free(s);
        return KILN_EINTERNAL;
    }
    return 0;
}

void kiln_sampler_free(KilnSampler *s)
{
    free(s->idx), free(s->p);
    s->idx = NULL, s->p = NULL;
}

int32_t kiln_argmax(const float *logits, int V)
{
    int32_t best = 0;
    for (int i = 1; i < V; i++)
        if (logits[i] > logits[best])
            best = i;
    return best;
}

typedef struct Cand {
    double p;
    int32_t id;
} Cand;

/* most likely first; ties by id, so the order never depends on qsort */
static int by_p(const void *a, const void *b)
{
    const Cand *x = a, *y = b;
    return x->p > y->p ? -1 : x->p < y->p ? 1 : (x->id > y->id) - (x->id < y->id);
}

int kiln_nucleus(const float *logits, int V, float temp, float top_p, int32_t *idx, double *p)
{
    double mx = -INFINITY, sum = 0;
    for (int i = 0; i < V; i++)
        mx = logits[i] > mx ? logits[i] : mx;
    for (int i = 0; i < V; i++)
        sum += p[i] = exp(((double)logits[i] - mx) / temp);
    /* Candidates: the tokens at least 1e-12 of the total. When they hold mass top_p the
     * nucleus lies among them (every token left out is less likely than every one kept),
     * so only they are sorted; otherwise all are. */
    double cut = top_p >= 1 ? 0 : sum * 1e-12, kept = 0;
    int n = 0;
    for (int i = 0; i < V; i++)
        if (p[i] >= cut)
            kept += p[i], n++;
    if (kept < (double)top_p * sum)
        cut = 0, n = V;
    Cand *c = malloc(sizeof *c * (size_t)n);
    if (!c)
        return -1;
    n = 0;
    for (int i = 0; i < V; i++)
        if (p[i] >= cut)
            c[n++] = (Cand){p[i], i};
    int k = n;
    if (top_p < 1) {
        qsort(c, (size_t)n, sizeof *c, by_p);
        double acc = 0, want = (double)top_p * sum;
        for (k = 0; k < n;)
            if ((acc += c[k++].p) >= want)
                break;
    }
    double mass = 0;
    for (int i = 0; i < k; i++)
        mass += c[i].p;
    for (int i = 0; i < k; i++)
        idx[i] = c[i].id, p[i] = c[i].p / mass;
    free(c);
    return k;
}

int32_t kiln_sample(KilnSampler *s, const float *logits)
{
    if (s->temp <= 0 || s->top_p <= 0)
        return kiln_argmax(logits, s->V);
    int k = kiln_nucleus(logits, s->V, s->temp, s->top_p, s->idx, s->p);
    if (k <= 0)
        return -1;
    double u = kiln_sampler_uniform(s), acc = 0;
    for (int i = 0; i < k; i++) {
        acc += s->p[i];
        if (u < acc)
            return s->idx[i];
    }
    return s->idx[k - 1]; /* u within rounding of 1 */
}
