/* frontend/matchindex.c — a rule or ignore list indexed by each glob's longest literal
 * end (the text before its first wildcard, or after its last), so that matching a layer
 * name tries only the patterns that could match it: near-linear in the recipe's size
 * where a naive first-match walk over 45,000 rules was quadratic. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "frontend/internal.h"

typedef struct Slot {
    uint64_t h;
    uint32_t len;  /* key length; 0: empty slot */
    bool suffix;   /* the key is the pattern's literal end, not its start */
    int first, last; /* chain of patterns with this key, ascending */
} Slot;

struct KPatIndex {
    int n;
    const char **pat;
    bool *lua;
    int *next;    /* next pattern in the same chain, -1 */
    int *scan;    /* patterns no key narrows (Lua patterns, '*' at both ends), ascending */
    int nscan;
    Slot *slots;
    size_t cap;   /* a power of two */
    size_t maxpre, maxsuf;
};

static uint64_t fnv(uint64_t h, unsigned char c) { return (h ^ c) * 0x100000001b3ull; }
static const uint64_t basis = 0xcbf29ce484222325ull;

static size_t slot_of(const KPatIndex *ix, uint64_t h, size_t len, bool suffix)
{
    uint64_t x = h ^ ((uint64_t)len << 1 | suffix);
    x ^= x >> 31;
    x *= 0x9e3779b97f4a7c15ull;
    return (size_t)(x >> 17) & (ix->cap - 1);
}

/* Whether slot s's key equals the len bytes at the start (or end) of name. */
static bool slot_is(const KPatIndex *ix, const Slot *s, const char *name, size_t nlen, size_t len,
                    bool suffix)
{
    if (s->len != len || s->suffix != suffix)
        return false;
    const char *p = ix->pat[s->first];
    size_t pl = strlen(p);
    return suffix ? memcmp(p + pl - len, name + nlen - len, len) == 0 : memcmp(p, name, len) == 0;
}

static Slot *find(const KPatIndex *ix, uint64_t h, const char *name, size_t nlen, size_t len, bool suffix)
{
    for (size_t i = slot_of(ix, h, len, suffix);; i = (i + 1) & (ix->cap - 1)) {
        Slot *s = &ix->slots[i];
        if (!s->len)
            return s;
        if (s->h == h && slot_is(ix, s, name, nlen, len, suffix))
            return s;
    }
}

/* The key of glob p: its literal start or end, whichever is longer; 0 when neither. */
static size_t glob_key(const char *p, bool *suffix)
{
    size_t n = strlen(p), pre = strcspn(p, "*?"), suf = 0;
    while (suf < n && p[n - 1 - suf] != '*' && p[n - 1 - suf] != '?')
        suf++;
    *suffix = suf > pre;
    return suf > pre ? suf : pre;
}

void kiln__index_free(KPatIndex *ix)
{
    if (!ix)
        return;
    free(ix->pat);
    free(ix->lua);
    free(ix->next);
    free(ix->scan);
    free(ix->slots);
    free(ix);
}

static void add(KPatIndex *ix, int i)
{
    bool suffix;
    const char *p = ix->pat[i];
    size_t len = ix->lua[i] ? 0 : glob_key(p, &suffix);
    if (!len) {
        ix->scan[ix->nscan++] = i;
        return;
    }
    size_t pl = strlen(p);
    uint64_t h = basis;
    for (size_t k = 0; k < len; k++)
        h = fnv(h, (unsigned char)(suffix ? p[pl - 1 - k] : p[k]));
    Slot *s = find(ix, h, p, pl, len, suffix);
    if (!s->len) {
        *s = (Slot){.h = h, .len = (uint32_t)len, .suffix = suffix, .first = i, .last = i};
    } else {
        ix->next[s->last] = i;
        s->last = i;
    }
    if (suffix && len > ix->maxsuf)
        ix->maxsuf = len;
    if (!suffix && len > ix->maxpre)
        ix->maxpre = len;
}

/* n patterns (not owned: they must outlive the index); NULL when out of memory, and
 * the caller then walks the list. */
KPatIndex *kiln__index_build(int n, const char *const *pat, const bool *lua)
{
    KPatIndex *ix = calloc(1, sizeof *ix);
    if (!ix)
        return NULL;
    ix->n = n;
    ix->cap = 16;
    while (ix->cap < 2 * (size_t)n + 2)
        ix->cap *= 2;
    size_t m = n > 0 ? (size_t)n : 1;
    ix->pat = malloc(m * sizeof *ix->pat);
    ix->lua = malloc(m * sizeof *ix->lua);
    ix->next = malloc(m * sizeof *ix->next);
    ix->scan = malloc(m * sizeof *ix->scan);
    ix->slots = calloc(ix->cap, sizeof *ix->slots);
    if (!ix->pat || !ix->lua || !ix->next || !ix->scan || !ix->slots) {
        kiln__index_free(ix);
        return NULL;
    }
    for (int i = 0; i < n; i++) {
        ix->pat[i] = pat[i];
        ix->lua[i] = lua[i];
        ix->next[i] = -1;
    }
    for (int i = 0; i < n; i++)
        add(ix, i);
    return ix;
}

/* The first pattern of s's chain that is below *best and matches name. */
static void try_chain(const KilnRecipe *r, const KPatIndex *ix, const Slot *s, const char *name, int *best)
{
    for (int i = s->first; i >= 0 && i < *best; i = ix->next[i])
        if (kiln__pattern_match(r, ix->pat[i], false, name)) {
            *best = i;
            return;
        }
}

/* The lowest-numbered pattern that matches name, or -1. */
int kiln__index_first(const KilnRecipe *r, const KPatIndex *ix, const char *name)
{
    int best = ix->n;
    size_t nlen = strlen(name);
    uint64_t h = basis;
    for (size_t k = 1; k <= nlen && k <= ix->maxpre; k++) {
        h = fnv(h, (unsigned char)name[k - 1]);
        const Slot *s = find(ix, h, name, nlen, k, false);
        if (s->len)
            try_chain(r, ix, s, name, &best);
    }
    h = basis;
    for (size_t k = 1; k <= nlen && k <= ix->maxsuf; k++) {
        h = fnv(h, (unsigned char)name[nlen - k]);
        const Slot *s = find(ix, h, name, nlen, k, true);
        if (s->len)
            try_chain(r, ix, s, name, &best);
    }
    for (int j = 0; j < ix->nscan && ix->scan[j] < best; j++)
        if (kiln__pattern_match(r, ix->pat[ix->scan[j]], ix->lua[ix->scan[j]], name)) {
            best = ix->scan[j];
            break;
        }
    return best < ix->n ? best : -1;
}
