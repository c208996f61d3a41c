/* model/tokenizers/tokenizer_bpe.c — byte-level BPE (GPT-2 byte mapping) from a GGUF vocabulary or a
 * Hugging Face tokenizer.json: the pre-tokenizer regex split written out by hand, merges
 * applied by rank, and decoding back to bytes. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/tokenizers/tokenizer_internal.h"
#include "runtime/runtime.h"

/* ------------------------------------------------------------------ pre-tokenizer */

typedef struct {
    uint32_t *cp;
    size_t *off; /* byte offset of each code point; off[n] = end */
    size_t n;
} Cps;

static bool is_l(uint32_t c) { return kiln_u_is_letter(c); }
static bool is_n(uint32_t c) { return kiln_u_is_number(c); }
static bool is_s(uint32_t c) { return kiln_u_is_space(c); }

/* The GPT-2 pattern, first alternative that matches at i wins (as in the regex):
 *   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 * applied to code points [i, n) of one piece; returns the end of the match. */
static size_t gpt2_match(const uint32_t *c, size_t i, size_t n)
{
    if (c[i] == '\'' && i + 1 < n) {
        uint32_t a = c[i + 1], b = i + 2 < n ? c[i + 2] : 0;
        if (a == 's' || a == 't' || a == 'm' || a == 'd')
            return i + 2;
        if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l'))
            return i + 3;
    }
    size_t j = c[i] == ' ' && i + 1 < n ? i + 1 : i;
    if (is_l(c[j]) || is_n(c[j]) || !is_s(c[j])) {
        bool (*same)(uint32_t) = is_l(c[j]) ? is_l : is_n(c[j]) ? is_n : NULL;
        size_t k = j + 1;
        if (same)
            while (k < n && same(c[k]))
                k++;
        else
            while (k < n && !is_s(c[k]) && !is_l(c[k]) && !is_n(c[k]))
                k++;
        return k;
    }
    /* c[i] is whitespace: \s+(?!\S) leaves the last space for the word that follows */
    size_t k = i;
    while (k < n && is_s(c[k]))
        k++;
    if (k == n || k - i == 1)
        return k;
    return k - 1;
}

/* BPE of one pre-token (bytes [s, s+n)): start from byte tokens, merge by rank. */
static void bpe_word(const KilnTokenizer *t, const unsigned char *s, size_t n, KilnIdVec *out)
{
    int32_t stack[64], *sym = n <= 64 ? stack : malloc(sizeof(int32_t) * n);
    if (!sym) {
        out->failed = true;
        return;
    }
    size_t m = 0;
    for (size_t i = 0; i < n; i++) /* bytes without a token are dropped, as HF BPE does */
        if (t->byte_tok[s[i]] >= 0)
            sym[m++] = t->byte_tok[s[i]];
    while (m > 1 && t->merge_key) {
        int32_t best = INT32_MAX, best_out = -1;
        size_t at = 0;
        for (size_t i = 0; i + 1 < m; i++) {
            uint64_t key = ((uint64_t)(uint32_t)sym[i] << 32 | (uint32_t)sym[i + 1]) + 1;
            size_t h = (size_t)(key * 0x9E3779B97F4A7C15ull >> 20) & t->merge_mask;
            while (t->merge_key[h] && t->merge_key[h] != key)
                h = (h + 1) & t->merge_mask;
            if (t->merge_key[h] && t->merge_rank[h] < best) {
                best = t->merge_rank[h];
                best_out = t->merge_out[h];
                at = i;
            }
        }
        if (best_out < 0)
            break;
        sym[at] = best_out;
        memmove(&sym[at + 1], &sym[at + 2], sizeof(int32_t) * (m - at - 2));
        m--;
    }
    for (size_t i = 0; i < m; i++)
        kiln_idvec_push(out, sym[i]);
    if (sym != stack)
        free(sym);
}

/* Splits one piece (code points [a, b)) by the GPT-2 pattern and BPEs each match. */
static void split_piece(const KilnTokenizer *t, const char *s, const Cps *cs, size_t a, size_t b,
                        KilnIdVec *out)
{
    while (a < b) {
        size_t e = gpt2_match(cs->cp + a, 0, b - a) + a;
        bpe_word(t, (const unsigned char *)s + cs->off[a], cs->off[e] - cs->off[a], out);
        a = e;
    }
}

void kiln_bpe_encode_segment(const KilnTokenizer *t, const char *s, size_t n, KilnIdVec *out)
{
    Cps cs = {malloc(sizeof(uint32_t) * (n + 1)), malloc(sizeof(size_t) * (n + 1)), 0};
    if (!cs.cp || !cs.off) {
        out->failed = true;
        free(cs.cp);
        free(cs.off);
        return;
    }
    for (size_t i = 0; i < n;) {
        cs.off[cs.n] = i;
        i += (size_t)kiln_utf8_decode((const unsigned char *)s + i, n - i, &cs.cp[cs.n]);
        cs.n++;
    }
    cs.off[cs.n] = n;
    /* "smollm"-style pre-tokenizers first isolate every \p{N} code point */
    size_t a = 0;
    for (size_t i = 0; i < cs.n; i++) {
        if (t->split_digits && is_n(cs.cp[i])) {
            split_piece(t, s, &cs, a, i, out);
            split_piece(t, s, &cs, i, i + 1, out);
            a = i + 1;
        }
    }
    split_piece(t, s, &cs, a, cs.n, out);
    free(cs.cp);
    free(cs.off);
}

void kiln_bpe_decode_token(const KilnTokenizer *t, int32_t id, const char *s, FILE *f)
{
    if (t->is_special[id]) {
        fputs(s, f);
        return;
    }
    size_t sl = t->tok_len[id];
    for (size_t k = 0; k < sl;) {
        uint32_t cp;
        int l = kiln_utf8_decode((const unsigned char *)s + k, sl - k, &cp);
        if (cp < 512 && t->cp_byte[cp] >= 0)
            fputc(t->cp_byte[cp], f);
        else
            fwrite(s + k, 1, (size_t)l, f);
        k += (size_t)l;
    }
}

/* ------------------------------------------------------------------ loading */

/* GPT-2's bytes_to_unicode: printable Latin-1 bytes stand for themselves, the other
 * 68 bytes take code points 256, 257, ... in byte order. */
static void byte_map(KilnTokenizer *t)
{
    int next = 256;
    memset(t->cp_byte, 0xFF, sizeof t->cp_byte);
    for (int b = 0; b < 256; b++) {
        bool keep = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
        t->byte_cp[b] = keep ? (uint32_t)b : (uint32_t)next++;
        t->cp_byte[t->byte_cp[b]] = (int16_t)b;
    }
}

/* The merge table, sized for nm merges. */
static int merges_alloc(KilnTokenizer *t, int64_t nm, KilnDiag *d)
{
    size_t cap = 16;
    while (cap < (size_t)nm * 2)
        cap *= 2;
    t->merge_key = calloc(cap, sizeof(uint64_t));
    t->merge_rank = malloc(sizeof(int32_t) * cap);
    t->merge_out = malloc(sizeof(int32_t) * cap);
    if (!t->merge_key || !t->merge_rank || !t->merge_out)
        return kiln_diag_set(d, KILN_EINTERNAL, "tokenizer: out of memory");
    t->merge_mask = cap - 1;
    return 0;
}

/* The merge of rank r: tokens a, b and their concatenation must all exist (-1 if not;
 * KILN_EINTERNAL out of memory). cat is scratch the caller frees. */
static int merge_add(KilnTokenizer *t, int64_t r, const char *a, size_t la, const char *b,
                     size_t lb, char **cat, size_t *catcap)
{
    if (la + lb + 1 > *catcap) {
        free(*cat);
        *catcap = (la + lb + 1) * 2;
        if (!(*cat = malloc(*catcap)))
            return KILN_EINTERNAL;
    }
    memcpy(*cat, a, la);
    memcpy(*cat + la, b, lb);
    int32_t ia = kiln_tok_lookup(t, a, la), ib = kiln_tok_lookup(t, b, lb);
    int32_t o = kiln_tok_lookup(t, *cat, la + lb);
    if (ia < 0 || ib < 0 || o < 0)
        return -1;
    uint64_t k = ((uint64_t)(uint32_t)ia << 32 | (uint32_t)ib) + 1;
    size_t h = (size_t)(k * 0x9E3779B97F4A7C15ull >> 20) & t->merge_mask;
    while (t->merge_key[h] && t->merge_key[h] != k)
        h = (h + 1) & t->merge_mask;
    if (!t->merge_key[h]) { /* the first (lowest-rank) occurrence of a pair counts */
        t->merge_key[h] = k;
        t->merge_rank[h] = (int32_t)r;
        t->merge_out[h] = o;
    }
    return 0;
}

static int load_merges(KilnTokenizer *t, const KilnModelFile *mf, KilnDiag *d)
{
    const char *key = "tokenizer.ggml.merges";
    int64_t nm = kiln_mf_meta_array_len(mf, key);
    if (nm < 0)
        return kiln_diag_set(d, KILN_EINPUT, "GGUF has no %s array", key);
    if (nm > 0 && kiln_mf_meta_array_kind(mf, key) != KILN_MV_STR)
        return kiln_diag_set(d, KILN_EINPUT, "%s is not an array of strings", key);
    int rc = merges_alloc(t, nm, d);
    char *cat = NULL;
    size_t catcap = 0;
    for (int64_t r = 0; r < nm && rc == 0; r++) {
        const char *m = kiln_mf_meta_array_str(mf, key, r);
        const char *sp = m ? strchr(m, ' ') : NULL;
        int e = sp ? merge_add(t, r, m, (size_t)(sp - m), sp + 1, strlen(sp + 1), &cat, &catcap)
                   : -1;
        if (e == KILN_EINTERNAL)
            rc = kiln_diag_set(d, KILN_EINTERNAL, "tokenizer: out of memory");
        else if (e)
            rc = kiln_diag_set(d, KILN_EINPUT, "%s[%lld] \"%.80s\" does not name two tokens "
                               "whose concatenation is a token", key, (long long)r, m ? m : "");
    }
    free(cat);
    return rc;
}

/* The GPT-2 byte characters' tokens (a byte without one is dropped when encoding). */
static void byte_tokens(KilnTokenizer *t)
{
    byte_map(t);
    for (int b = 0; b < 256; b++) {
        char u[4];
        t->byte_tok[b] = kiln_tok_lookup(t, u, (size_t)kiln_utf8_encode(t->byte_cp[b], u));
    }
}

static int32_t meta_id(const KilnModelFile *mf, const char *key, int n)
{
    int64_t v;
    return kiln_mf_meta_int(mf, key, &v) && v >= 0 && v < n ? (int32_t)v : -1;
}

static int bpe_load(KilnTokenizer *t, const KilnModelFile *mf, KilnDiag *d)
{
    const char *model = kiln_mf_meta_str(mf, "tokenizer.ggml.model");
    if (!model || strcmp(model, "gpt2") != 0)
        return kiln_diag_set(d, KILN_EINPUT, "tokenizer.ggml.model is \"%s\"; kiln's BPE reads "
                             "only \"gpt2\" (byte-level BPE)", model ? model : "(absent)");
    const char *pre = kiln_mf_meta_str(mf, "tokenizer.ggml.pre");
    static const char *const digit_pres[] = {"smollm", "starcoder", "refact", "codeshell"};
    if (!pre || strcmp(pre, "gpt2") == 0 || strcmp(pre, "default") == 0)
        t->split_digits = false;
    else {
        size_t i = 0;
        while (i < 4 && strcmp(pre, digit_pres[i]) != 0)
            i++;
        if (i == 4)
            return kiln_diag_set(d, KILN_EINPUT, "tokenizer.ggml.pre \"%.60s\" is not "
                                 "implemented (kiln knows gpt2, default, smollm, starcoder, "
                                 "refact, codeshell)", pre);
        t->split_digits = true;
    }
    const char *tk = "tokenizer.ggml.tokens";
    int64_t n = kiln_mf_meta_array_len(mf, tk);
    if (n <= 0 || n > (1 << 24) || kiln_mf_meta_array_kind(mf, tk) != KILN_MV_STR)
        return kiln_diag_set(d, KILN_EINPUT, "%s is missing or not a non-empty array of strings "
                             "(at most 2^24)", tk);
    if (kiln_tok_alloc(t, (int)n))
        return kiln_diag_set(d, KILN_EINTERNAL, "tokenizer: out of memory");
    for (int32_t id = 0; id < n; id++) {
        const char *s = kiln_mf_meta_array_str(mf, tk, id);
        if (kiln_tok_set(t, id, s, strlen(s)))
            return kiln_diag_set(d, KILN_EINTERNAL, "tokenizer: out of memory");
    }
    if (kiln_tok_build_hash(t))
        return kiln_diag_set(d, KILN_EINTERNAL, "tokenizer: out of memory");
    byte_tokens(t); /* SmolLM2 has no tokens for a few control bytes: those are dropped */
    int rc = load_merges(t, mf, d);
    if (rc)
        return rc;
    const char *tt = "tokenizer.ggml.token_type";
    for (int32_t id = 0; id < n; id++) {
        int64_t ty;
        /* 3 = control (<|im_start|>), 4 = user-defined: matched whole in raw text */
        if (kiln_mf_meta_array_int(mf, tt, id, &ty) && (ty == 3 || ty == 4) &&
            kiln_tok_add_special(t, id))
            return kiln_diag_set(d, KILN_EINTERNAL, "tokenizer: out of memory");
    }
    t->bos = meta_id(mf, "tokenizer.ggml.bos_token_id", (int)n);
    t->eos = meta_id(mf, "tokenizer.ggml.eos_token_id", (int)n);
    t->unk = meta_id(mf, "tokenizer.ggml.unknown_token_id", (int)n);
    t->pad = meta_id(mf, "tokenizer.ggml.padding_token_id", (int)n);
    t->kind = KILN_TOK_BPE;
    return 0;
}

int kiln_tok_bpe_from_gguf(const KilnModelFile *mf, KilnTokenizer **out, KilnDiag *d)
{
    *out = NULL;
    KilnTokenizer *t = calloc(1, sizeof *t);
    if (!t)
        return kiln_diag_set(d, KILN_EINTERNAL, "tokenizer: out of memory");
    int rc = bpe_load(t, mf, d);
    if (rc) {
        kiln_tok_free(t);
        return rc;
    }
    *out = t;
    return 0;
}

/* ------------------------------------------------------------------ tokenizer.json */

/* The pre-tokenizers kiln implements: ByteLevel (GPT-2's pattern, no prefix space),
 * alone or after Digits(individual_digits) as SmolLM2 / StarCoder have it. */
static int hf_pre(KilnTokenizer *t, const KilnJson *pre, const char *path, KilnDiag *d)
{
    const KilnJson *ty = pre && pre->kind == KILN_JSON_OBJECT ? kiln_json_get(pre, "type") : NULL;
    const char *type = ty && ty->kind == KILN_JSON_STRING ? ty->str : "(none)";
    const KilnJson *bl = pre;
    if (!strcmp(type, "Sequence")) {
        const KilnJson *ps = kiln_json_get(pre, "pretokenizers");
        const KilnJson *d0 = ps && ps->kind == KILN_JSON_ARRAY && ps->len == 2 ? &ps->items[0]
                                                                               : NULL;
        const KilnJson *dt = d0 && d0->kind == KILN_JSON_OBJECT ? kiln_json_get(d0, "type") : NULL;
        const KilnJson *ind = d0 && d0->kind == KILN_JSON_OBJECT
                                  ? kiln_json_get(d0, "individual_digits")
                                  : NULL;
        if (!dt || dt->kind != KILN_JSON_STRING || strcmp(dt->str, "Digits") || !ind ||
            ind->kind != KILN_JSON_BOOL || !ind->b)
            return kiln_diag_set(d, KILN_EINPUT, "%s: pre_tokenizer Sequence other than "
                                 "[Digits(individual_digits), ByteLevel] is not implemented",
                                 path);
        t->split_digits = true;
        bl = &ps->items[1];
        ty = bl->kind == KILN_JSON_OBJECT ? kiln_json_get(bl, "type") : NULL;
        type = ty && ty->kind == KILN_JSON_STRING ? ty->str : "(none)";
    }
    if (strcmp(type, "ByteLevel"))
        return kiln_diag_set(d, KILN_EINPUT, "%s: pre_tokenizer %.60s is not implemented (kiln "
                             "reads byte-level BPE)", path, type);
    const KilnJson *aps = kiln_json_get(bl, "add_prefix_space");
    const KilnJson *ur = kiln_json_get(bl, "use_regex");
    if ((aps && aps->kind == KILN_JSON_BOOL && aps->b) ||
        (ur && ur->kind == KILN_JSON_BOOL && !ur->b))
        return kiln_diag_set(d, KILN_EINPUT, "%s: ByteLevel with add_prefix_space or without "
                             "use_regex is not implemented", path);
    return 0;
}

/* Sets token id to text s; an id given two different texts is an error. */
static int hf_token(KilnTokenizer *t, int64_t id, const char *s, size_t len, const char *path,
                    KilnDiag *d)
{
    if (id < 0 || id >= t->n)
        return kiln_diag_set(d, KILN_EINPUT, "%s: token id %lld out of range", path, (long long)id);
    if (t->tok[id]) {
        if (t->tok_len[id] == len && !memcmp(t->tok[id], s, len))
            return 0;
        return kiln_diag_set(d, KILN_EINPUT, "%s: token id %lld is both \"%.40s\" and \"%.40s\"",
                             path, (long long)id, t->tok[id], s);
    }
    return kiln_tok_set(t, (int32_t)id, s, len) ? kiln_diag_set(d, KILN_EINTERNAL, "out of memory")
                                                : 0;
}

static int hf_vocab(KilnTokenizer *t, const KilnJson *vocab, const KilnJson *added,
                    const char *path, KilnDiag *d)
{
    int64_t n = 0;
    for (size_t i = 0; i < vocab->len; i++) {
        const KilnJson *v = &vocab->items[i];
        if (v->kind != KILN_JSON_NUMBER || !v->is_int || v->i < 0 || v->i >= (1 << 24))
            return kiln_diag_set(d, KILN_EINPUT, "%s: model.vocab[\"%.40s\"] is not an id in "
                                 "[0, 2^24)", path, kiln_json_key(vocab, i));
        n = v->i + 1 > n ? v->i + 1 : n;
    }
    for (size_t i = 0; added && i < added->len; i++) {
        const KilnJson *a = &added->items[i], *id = kiln_json_get(a, "id"),
                       *c = kiln_json_get(a, "content");
        if (a->kind != KILN_JSON_OBJECT || !id || !id->is_int || id->i < 0 ||
            id->i >= (1 << 24) || !c || c->kind != KILN_JSON_STRING)
            return kiln_diag_set(d, KILN_EINPUT, "%s: added_tokens[%zu] needs an id in [0, 2^24) "
                                 "and a content string", path, i);
        n = id->i + 1 > n ? id->i + 1 : n;
    }
    if (n == 0)
        return kiln_diag_set(d, KILN_EINPUT, "%s: empty vocabulary", path);
    if (kiln_tok_alloc(t, (int)n))
        return kiln_diag_set(d, KILN_EINTERNAL, "tokenizer: out of memory");
    int rc = 0;
    for (size_t i = 0; i < vocab->len && !rc; i++)
        rc = hf_token(t, vocab->items[i].i, kiln_json_key(vocab, i),
                      strlen(kiln_json_key(vocab, i)), path, d);
    for (size_t i = 0; added && i < added->len && !rc; i++) {
        const KilnJson *c = kiln_json_get(&added->items[i], "content");
        rc = hf_token(t, kiln_json_get(&added->items[i], "id")->i, c->str, c->len, path, d);
    }
    return rc;
}

/* model.merges: "a b" strings or ["a", "b"] pairs, in rank order. */
static int hf_merges(KilnTokenizer *t, const KilnJson *merges, const char *path, KilnDiag *d)
{
    int rc = merges_alloc(t, (int64_t)merges->len, d);
    char *cat = NULL;
    size_t catcap = 0;
    for (size_t r = 0; r < merges->len && !rc; r++) {
        const KilnJson *m = &merges->items[r];
        const char *a = NULL, *b = NULL;
        size_t la = 0, lb = 0;
        if (m->kind == KILN_JSON_STRING && strchr(m->str, ' ')) {
            const char *sp = strchr(m->str, ' ');
            a = m->str, la = (size_t)(sp - m->str), b = sp + 1, lb = strlen(sp + 1);
        } else if (m->kind == KILN_JSON_ARRAY && m->len == 2 &&
                   m->items[0].kind == KILN_JSON_STRING && m->items[1].kind == KILN_JSON_STRING) {
            a = m->items[0].str, la = m->items[0].len, b = m->items[1].str, lb = m->items[1].len;
        }
        int e = a ? merge_add(t, (int64_t)r, a, la, b, lb, &cat, &catcap) : -1;
        if (e == KILN_EINTERNAL)
            rc = kiln_diag_set(d, KILN_EINTERNAL, "tokenizer: out of memory");
        else if (e)
            rc = kiln_diag_set(d, KILN_EINPUT, "%s: model.merges[%zu] does not name two tokens "
                               "whose concatenation is a token", path, r);
    }
    free(cat);
    return rc;
}

static int hf_load(KilnTokenizer *t, const KilnJson *j, const char *path, KilnDiag *d)
{
    const KilnJson *model = kiln_json_get(j, "model");
    const KilnJson *type = model ? kiln_json_get(model, "type") : NULL;
    if (!model || model->kind != KILN_JSON_OBJECT || !type || type->kind != KILN_JSON_STRING ||
        strcmp(type->str, "BPE"))
        return kiln_diag_set(d, KILN_EINPUT, "%s: model.type is not \"BPE\"; kiln reads "
                             "byte-level BPE tokenizers", path);
    const KilnJson *bf = kiln_json_get(model, "byte_fallback");
    const KilnJson *nz = kiln_json_get(j, "normalizer");
    if (bf && bf->kind == KILN_JSON_BOOL && bf->b)
        return kiln_diag_set(d, KILN_EINPUT, "%s: BPE with byte_fallback is not implemented",
                             path);
    if (nz && nz->kind != KILN_JSON_NULL)
        return kiln_diag_set(d, KILN_EINPUT, "%s: a normalizer is not implemented (byte-level "
                             "BPE has none)", path);
    int rc = hf_pre(t, kiln_json_get(j, "pre_tokenizer"), path, d);
    const KilnJson *vocab = kiln_json_get(model, "vocab"), *merges = kiln_json_get(model, "merges");
    const KilnJson *added = kiln_json_get(j, "added_tokens");
    if (!rc && (!vocab || vocab->kind != KILN_JSON_OBJECT || !merges ||
                merges->kind != KILN_JSON_ARRAY || (added && added->kind != KILN_JSON_ARRAY)))
        rc = kiln_diag_set(d, KILN_EINPUT, "%s: needs model.vocab (object), model.merges (array) "
                           "and added_tokens (array, optional)", path);
    if (!rc)
        rc = hf_vocab(t, vocab, added, path, d);
    if (!rc && kiln_tok_build_hash(t))
        rc = kiln_diag_set(d, KILN_EINTERNAL, "tokenizer: out of memory");
    if (rc)
        return rc;
    byte_tokens(t);
    if ((rc = hf_merges(t, merges, path, d)))
        return rc;
    /* added tokens are matched whole in the raw text before anything else, as HF does */
    for (size_t i = 0; added && i < added->len; i++)
        if (kiln_tok_add_special(t, (int32_t)kiln_json_get(&added->items[i], "id")->i))
            return kiln_diag_set(d, KILN_EINTERNAL, "tokenizer: out of memory");
    t->kind = KILN_TOK_BPE;
    return 0;
}

int kiln_tok_bpe_from_hf_json(const char *path, int32_t bos, int32_t eos, KilnTokenizer **out,
                              KilnDiag *d)
{
    *out = NULL;
    KilnJson *j = NULL;
    int rc = kiln_json_parse_file(path, &j, d);
    if (rc)
        return rc;
    KilnTokenizer *t = calloc(1, sizeof *t);
    if (!t)
        rc = kiln_diag_set(d, KILN_EINTERNAL, "tokenizer: out of memory");
    else if (j->kind != KILN_JSON_OBJECT)
        rc = kiln_diag_set(d, KILN_EINPUT, "%s: not a JSON object", path);
    else
        rc = hf_load(t, j, path, d);
    kiln_json_free(j);
    if (rc) {
        kiln_tok_free(t);
        return rc;
    }
    t->bos = bos >= 0 && bos < t->n ? bos : -1;
    t->eos = eos >= 0 && eos < t->n ? eos : -1;
    *out = t;
    return 0;
}
