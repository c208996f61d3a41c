/* model/tokenizers/tokenizer_wordpiece.c — BERT uncased WordPiece: the BertNormalizer (clean text,
 * CJK spacing, strip accents, lowercase), the BertPreTokenizer (whitespace and
 * punctuation split) and greedy longest-match-first subwords with "##" continuation. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/tokenizers/tokenizer_internal.h"
#include "runtime/runtime.h"

#define WP_MAX_CHARS_PER_WORD 100

static bool is_cjk(uint32_t c)
{
    return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) ||
           (c >= 0x20000 && c <= 0x2A6DF) || (c >= 0x2A700 && c <= 0x2B73F) ||
           (c >= 0x2B740 && c <= 0x2B81F) || (c >= 0x2B920 && c <= 0x2CEAF) ||
           (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
}

static bool is_bert_punct(uint32_t c)
{
    return (c >= 33 && c <= 47) || (c >= 58 && c <= 64) || (c >= 91 && c <= 96) ||
           (c >= 123 && c <= 126) || kiln_u_is_punct(c);
}

/* Greedy longest-match-first over one word (UTF-8, n bytes, nchars code points). */
static void wordpiece(const KilnTokenizer *t, const char *w, size_t n, int nchars,
                      KilnIdVec *out)
{
    if (nchars > WP_MAX_CHARS_PER_WORD) {
        kiln_idvec_push(out, t->unk);
        return;
    }
    int first = out->n;
    char buf[4 * WP_MAX_CHARS_PER_WORD + 3];
    size_t start = 0;
    while (start < n) {
        size_t end = n;
        int32_t found = -1;
        while (end > start) {
            size_t len = end - start, off = 0;
            if (start > 0) {
                memcpy(buf, "##", 2);
                off = 2;
            }
            memcpy(buf + off, w + start, len);
            found = kiln_tok_lookup(t, buf, off + len);
            if (found >= 0)
                break;
            do /* back off one whole UTF-8 character */
                end--;
            while (end > start && ((unsigned char)w[end] & 0xC0) == 0x80);
        }
        if (found < 0) {
            out->n = first; /* the whole word becomes [UNK] */
            kiln_idvec_push(out, t->unk);
            return;
        }
        kiln_idvec_push(out, found);
        start = end;
    }
}

/* Normalizes [s, s+n) and feeds each word to wordpiece(). */
void kiln_wp_encode_segment(const KilnTokenizer *t, const char *s, size_t n, KilnIdVec *out)
{
    char word[4 * WP_MAX_CHARS_PER_WORD + 8];
    size_t wn = 0;
    int wchars = 0;
    const unsigned char *p = (const unsigned char *)s;
    uint32_t pend[3];
    int npend = 0, ipend = 0;
    for (size_t i = 0; i <= n || ipend < npend;) {
        uint32_t c = ' ';
        if (ipend < npend) {
            c = pend[ipend++];
        } else {
            if (i < n)
                i += (size_t)kiln_utf8_decode(p + i, n - i, &c);
            else
                i++;
            if (c == 0 || c == 0xFFFD ||
                (c != '\t' && c != '\n' && c != '\r' && kiln_u_is_other(c)))
                continue;
            if (c >= 0xAC00 && c <= 0xD7A3) {
                /* NFD of a Hangul syllable: its leading, vowel and trailing jamo */
                uint32_t si = c - 0xAC00;
                npend = ipend = 0;
                pend[npend++] = 0x1100 + si / 588;
                pend[npend++] = 0x1161 + si % 588 / 28;
                if (si % 28)
                    pend[npend++] = 0x11A7 + si % 28;
                continue;
            }
        }
        c = kiln_u_strip_accent(c);
        if (kiln_u_is_mark_mn(c))
            continue;
        c = kiln_u_lower(c);
        bool space = kiln_u_is_space(c);
        bool alone = !space && (is_cjk(c) || is_bert_punct(c));
        if (space || alone) {
            if (wchars > 0)
                wordpiece(t, word, wn, wchars, out);
            wn = 0;
            wchars = 0;
        }
        if (space)
            continue;
        char u[4];
        int ul = kiln_utf8_encode(c, u);
        if (alone) {
            wordpiece(t, u, (size_t)ul, 1, out);
            continue;
        }
        /* words past the limit only need counting: they become [UNK] */
        if (wn + (size_t)ul <= 4 * WP_MAX_CHARS_PER_WORD) {
            memcpy(word + wn, u, (size_t)ul);
            wn += (size_t)ul;
        }
        wchars++;
    }
}

/* Tokens joined by spaces, "##" continuations glued to the previous token. */
void kiln_wp_decode_token(const KilnTokenizer *t, int32_t id, const char *s, FILE *f)
{
    (void)t, (void)id;
    if (strncmp(s, "##", 2) == 0 && s[2])
        fputs(s + 2, f);
    else {
        if (ftell(f) > 0)
            fputc(' ', f);
        fputs(s, f);
    }
}

int kiln_tok_wordpiece_load(const char *vocab_path, KilnTokenizer **out, KilnDiag *d)
{
    return kiln_tok_wordpiece_load_max(vocab_path, 0, out, d);
}

int kiln_tok_wordpiece_load_max(const char *vocab_path, int max_tokens, KilnTokenizer **out,
                                KilnDiag *d)
{
    *out = NULL;
    KilnDiag od = {0};
    FILE *f = kiln_rt_fopen_regular(vocab_path, "vocabulary", KILN_VOCAB_BYTES, &od); /* a FIFO: refused */
    if (!f && errno == EFBIG)
        return kiln_diag_set(d, KILN_EINPUT, "%s: the vocabulary is larger than the limit of "
                             "%u bytes", vocab_path, (unsigned)KILN_VOCAB_BYTES);
    if (!f)
        return kiln_diag_set(d, KILN_EINPUT, "%s: cannot open vocabulary", vocab_path);
    KilnTokenizer *t = calloc(1, sizeof *t);
    char *line = NULL;
    size_t cap = 0;
    int rc = t ? 0 : KILN_EINTERNAL;
    /* count lines first: the id of a token is its line number */
    int nlines = 0;
    ssize_t got;
    while (rc == 0 && (got = getline(&line, &cap, f)) >= 0)
        if (++nlines > (1 << 24))
            rc = kiln_diag_set(d, KILN_EINPUT, "%s: more than 2^24 lines", vocab_path);
    if (rc == 0 && nlines == 0)
        rc = kiln_diag_set(d, KILN_EINPUT, "%s: empty vocabulary", vocab_path);
    if (rc == 0 && max_tokens > 0 && nlines > max_tokens) /* before a table sized by the file */
        rc = kiln_diag_set(d, KILN_EINPUT, "%s: the tokenizer has %d tokens but the embedding "
                           "only %d rows (ids %d.. would index past it)", vocab_path, nlines,
                           max_tokens, max_tokens);
    if (rc == 0 && kiln_tok_alloc(t, nlines))
        rc = kiln_diag_set(d, KILN_EINTERNAL, "%s: out of memory", vocab_path);
    rewind(f);
    for (int id = 0; rc == 0 && id < nlines && (got = getline(&line, &cap, f)) >= 0; id++) {
        size_t len = (size_t)got;
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r' ||
                           line[len - 1] == ' ' || line[len - 1] == '\t'))
            len--;
        if (kiln_tok_set(t, id, line, len))
            rc = kiln_diag_set(d, KILN_EINTERNAL, "%s: out of memory", vocab_path);
    }
    free(line);
    fclose(f);
    if (rc == 0 && kiln_tok_build_hash(t))
        rc = kiln_diag_set(d, KILN_EINTERNAL, "%s: out of memory", vocab_path);
    if (rc == 0) {
        t->kind = KILN_TOK_WORDPIECE;
        t->cls = kiln_tok_lookup(t, "[CLS]", 5);
        t->sep = kiln_tok_lookup(t, "[SEP]", 5);
        t->pad = kiln_tok_lookup(t, "[PAD]", 5);
        t->unk = kiln_tok_lookup(t, "[UNK]", 5);
        t->mask = kiln_tok_lookup(t, "[MASK]", 6);
        if (t->unk < 0)
            rc = kiln_diag_set(d, KILN_EINPUT, "%s: the vocabulary has no [UNK] token",
                               vocab_path);
    }
    int32_t sp[] = {t ? t->cls : -1, t ? t->sep : -1, t ? t->pad : -1, t ? t->unk : -1,
                    t ? t->mask : -1};
    for (size_t i = 0; rc == 0 && i < sizeof sp / sizeof sp[0]; i++)
        if (kiln_tok_add_special(t, sp[i]))
            rc = kiln_diag_set(d, KILN_EINTERNAL, "%s: out of memory", vocab_path);
    if (rc) {
        kiln_tok_free(t);
        return rc;
    }
    *out = t;
    return 0;
}
