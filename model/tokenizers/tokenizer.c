/* model/tokenizers/tokenizer.c — what both tokenizers share: the vocabulary (id <-> text hash),
 * special tokens matched whole in the raw text, UTF-8 helpers and the encode/decode
 * entry points that dispatch to WordPiece or BPE. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/tokenizers/tokenizer_internal.h"

void kiln_idvec_push(KilnIdVec *iv, int32_t id)
{
    if (iv->failed)
        return;
    if (iv->n == iv->cap) {
        int cap = iv->cap ? iv->cap * 2 : 64;
        int32_t *v = cap > iv->cap ? realloc(iv->v, sizeof(int32_t) * (size_t)cap) : NULL;
        if (!v) {
            iv->failed = true;
            return;
        }
        iv->v = v;
        iv->cap = cap;
    }
    iv->v[iv->n++] = id;
}

int kiln_utf8_decode(const unsigned char *s, size_t n, uint32_t *cp)
{
    unsigned c = s[0];
    int len;
    uint32_t v, min;
    if (c < 0x80) {
        *cp = c;
        return 1;
    } else if (c >= 0xC2 && c <= 0xDF) {
        len = 2, v = c & 0x1F, min = 0x80;
    } else if (c >= 0xE0 && c <= 0xEF) {
        len = 3, v = c & 0x0F, min = 0x800;
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4, v = c & 0x07, min = 0x10000;
    } else {
        *cp = 0xFFFD;
        return 1;
    }
    if ((size_t)len > n) {
        *cp = 0xFFFD;
        return 1;
    }
    for (int i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80) {
            *cp = 0xFFFD;
            return 1;
        }
        v = v << 6 | (s[i] & 0x3F);
    }
    if (v < min || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF)) {
        *cp = 0xFFFD;
        return 1;
    }
    *cp = v;
    return len;
}

int kiln_utf8_encode(uint32_t cp, char *o)
{
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (char)(0xC0 | cp >> 6);
        o[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | cp >> 12);
        o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | cp >> 18);
    o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* ------------------------------------------------------------------ vocabulary */

static uint64_t hash_bytes(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
    return h;
}

int kiln_tok_alloc(KilnTokenizer *t, int n)
{
    t->n = n;
    t->tok = calloc((size_t)n + 1, sizeof(char *));
    t->tok_len = calloc((size_t)n + 1, sizeof(uint32_t));
    t->is_special = calloc((size_t)n + 1, 1);
    t->cls = t->sep = t->pad = t->unk = t->mask = t->bos = t->eos = -1;
    return t->tok && t->tok_len && t->is_special ? 0 : KILN_EINTERNAL;
}

int kiln_tok_set(KilnTokenizer *t, int32_t id, const char *s, size_t len)
{
    char *c = malloc(len + 1);
    if (!c)
        return KILN_EINTERNAL;
    memcpy(c, s, len);
    c[len] = 0;
    t->tok[id] = c;
    t->tok_len[id] = (uint32_t)len;
    return 0;
}

int kiln_tok_build_hash(KilnTokenizer *t)
{
    size_t cap = 16;
    while (cap < (size_t)t->n * 2)
        cap *= 2;
    t->hash = malloc(sizeof(int32_t) * cap);
    if (!t->hash)
        return KILN_EINTERNAL;
    memset(t->hash, 0xFF, sizeof(int32_t) * cap);
    t->hash_mask = cap - 1;
    for (int32_t id = 0; id < t->n; id++) {
        if (!t->tok[id])
            continue;
        size_t h = (size_t)hash_bytes(t->tok[id], t->tok_len[id]) & t->hash_mask;
        while (t->hash[h] >= 0 && (t->tok_len[t->hash[h]] != t->tok_len[id] ||
                                   memcmp(t->tok[t->hash[h]], t->tok[id], t->tok_len[id])))
            h = (h + 1) & t->hash_mask;
        t->hash[h] = id; /* a later duplicate replaces the earlier, as HF vocab maps do */
    }
    return 0;
}

int32_t kiln_tok_lookup(const KilnTokenizer *t, const char *s, size_t len)
{
    size_t h = (size_t)hash_bytes(s, len) & t->hash_mask;
    for (;;) {
        int32_t id = t->hash[h];
        if (id < 0)
            return -1;
        if (t->tok_len[id] == len && memcmp(t->tok[id], s, len) == 0)
            return id;
        h = (h + 1) & t->hash_mask;
    }
}

int kiln_tok_add_special(KilnTokenizer *t, int32_t id)
{
    if (id < 0 || id >= t->n || !t->tok[id] || t->tok_len[id] == 0 || t->is_special[id])
        return 0;
    int32_t *v = realloc(t->specials, sizeof(int32_t) * (size_t)(t->nspecials + 1));
    if (!v)
        return KILN_EINTERNAL;
    t->specials = v;
    /* keep longest first so that matching takes the longest special at a position */
    int i = t->nspecials++;
    while (i > 0 && t->tok_len[v[i - 1]] < t->tok_len[id]) {
        v[i] = v[i - 1];
        i--;
    }
    v[i] = id;
    t->is_special[id] = 1;
    return 0;
}

void kiln_tok_free(KilnTokenizer *t)
{
    if (!t)
        return;
    for (int i = 0; i < t->n; i++)
        free(t->tok[i]);
    free(t->tok);
    free(t->tok_len);
    free(t->is_special);
    free(t->hash);
    free(t->specials);
    free(t->merge_key);
    free(t->merge_rank);
    free(t->merge_out);
    free(t);
}

/* ------------------------------------------------------------------ entry points */

static int32_t special_at(const KilnTokenizer *t, const char *s, size_t n)
{
    for (int k = 0; k < t->nspecials; k++) {
        int32_t id = t->specials[k];
        if (t->tok_len[id] <= n && memcmp(s, t->tok[id], t->tok_len[id]) == 0)
            return id;
    }
    return -1;
}

static void encode_segment(const KilnTokenizer *t, const char *s, size_t n, KilnIdVec *out)
{
    if (n == 0)
        return;
    if (t->kind == KILN_TOK_WORDPIECE)
        kiln_wp_encode_segment(t, s, n, out);
    else
        kiln_bpe_encode_segment(t, s, n, out);
}

int kiln_tok_encode(const KilnTokenizer *t, const char *text, int add_special, int32_t *ids,
                    int cap, int *needed, KilnDiag *d)
{
    if (!text)
        return kiln_diag_set(d, KILN_EINPUT, "tokenizer: no text"), -1;
    KilnIdVec out = {0};
    if (add_special && t->kind == KILN_TOK_WORDPIECE && t->cls >= 0)
        kiln_idvec_push(&out, t->cls);
    size_t n = strlen(text), seg = 0;
    for (size_t i = 0; i < n;) {
        int32_t sp = t->nspecials ? special_at(t, text + i, n - i) : -1;
        if (sp < 0) {
            i++;
            continue;
        }
        encode_segment(t, text + seg, i - seg, &out);
        kiln_idvec_push(&out, sp);
        i += t->tok_len[sp];
        seg = i;
    }
    encode_segment(t, text + seg, n - seg, &out);
    if (add_special && t->kind == KILN_TOK_WORDPIECE && t->sep >= 0)
        kiln_idvec_push(&out, t->sep);
    if (out.failed) {
        free(out.v);
        return kiln_diag_set(d, KILN_EINTERNAL, "tokenizer: out of memory"), -1;
    }
    if (needed)
        *needed = out.n;
    int w = out.n < cap ? out.n : cap;
    if (w > 0)
        memcpy(ids, out.v, sizeof(int32_t) * (size_t)w);
    free(out.v);
    return w;
}

char *kiln_tok_decode(const KilnTokenizer *t, const int32_t *ids, int n)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f)
        return NULL;
    for (int i = 0; i < n; i++) {
        const char *s = kiln_tok_token(t, ids[i]);
        if (!s)
            continue;
        if (t->kind == KILN_TOK_WORDPIECE)
            kiln_wp_decode_token(t, ids[i], s, f);
        else
            kiln_bpe_decode_token(t, ids[i], s, f);
    }
    fclose(f);
    return buf;
}

int kiln_tok_vocab_size(const KilnTokenizer *t) { return t->n; }

const char *kiln_tok_token(const KilnTokenizer *t, int32_t id)
{
    return id >= 0 && id < t->n ? t->tok[id] : NULL;
}

int32_t kiln_tok_special(const KilnTokenizer *t, const char *which)
{
    static const struct { const char *name; size_t off; } names[] = {
        {"cls", offsetof(KilnTokenizer, cls)}, {"sep", offsetof(KilnTokenizer, sep)},
        {"pad", offsetof(KilnTokenizer, pad)}, {"unk", offsetof(KilnTokenizer, unk)},
        {"mask", offsetof(KilnTokenizer, mask)}, {"bos", offsetof(KilnTokenizer, bos)},
        {"eos", offsetof(KilnTokenizer, eos)},
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcmp(which, names[i].name) == 0)
            return *(const int32_t *)((const char *)t + names[i].off);
    return -1;
}
