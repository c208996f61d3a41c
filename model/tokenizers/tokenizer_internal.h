/* model/tokenizers/tokenizer_internal.h — what the tokenizer files share: the KilnTokenizer struct
 * (vocabulary hash, special tokens, BPE merge table), UTF-8 helpers and the Unicode
 * classes of model/tokenizers/unicode.c. Not a public header. */
#ifndef KILN_TOKENIZER_INTERNAL_H
#define KILN_TOKENIZER_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "model/tokenizers/tokenizer.h"

/* unicode.c */
bool kiln_u_is_letter(uint32_t cp);   /* general category L* */
bool kiln_u_is_number(uint32_t cp);   /* N* */
bool kiln_u_is_punct(uint32_t cp);    /* P* */
bool kiln_u_is_mark_mn(uint32_t cp);  /* Mn */
bool kiln_u_is_other(uint32_t cp);    /* Cc, Cf, Cs, Co, Cn */
bool kiln_u_is_space(uint32_t cp);    /* White_Space */
uint32_t kiln_u_lower(uint32_t cp);
uint32_t kiln_u_strip_accent(uint32_t cp);

typedef enum { KILN_TOK_WORDPIECE, KILN_TOK_BPE } KilnTokKind;

/* Growable id vector; `failed` latches out-of-memory. */
typedef struct {
    int32_t *v;
    int n, cap;
    bool failed;
} KilnIdVec;
void kiln_idvec_push(KilnIdVec *iv, int32_t id);

struct KilnTokenizer {
    KilnTokKind kind;
    int n;                  /* vocabulary size */
    char **tok;             /* id -> token text (owned; NULL for gaps) */
    uint32_t *tok_len;
    int32_t *hash;          /* open addressing: token text -> id; -1 empty */
    size_t hash_mask;
    int32_t *specials;      /* matched as whole tokens in the raw text, longest first */
    int nspecials;
    uint8_t *is_special;    /* per id: decode verbatim */
    int32_t cls, sep, pad, unk, mask, bos, eos;
    /* BPE */
    bool split_digits;      /* pre-tokenizer: every \p{N} its own piece first */
    int32_t byte_tok[256];  /* token of each byte's GPT-2 character */
    uint32_t byte_cp[256];  /* GPT-2 byte -> code point */
    int16_t cp_byte[512];   /* code point -> byte, -1 if not a byte character */
    uint64_t *merge_key;    /* (left << 32 | right) + 1; 0 empty */
    int32_t *merge_rank, *merge_out;
    size_t merge_mask;
};

/* tokenizer.c */
int kiln_tok_alloc(KilnTokenizer *t, int n);          /* tok/tok_len/is_special arrays */
int kiln_tok_set(KilnTokenizer *t, int32_t id, const char *s, size_t len);
int kiln_tok_build_hash(KilnTokenizer *t);            /* later duplicates win */
int32_t kiln_tok_lookup(const KilnTokenizer *t, const char *s, size_t len);
int kiln_tok_add_special(KilnTokenizer *t, int32_t id);
/* Decodes one UTF-8 sequence at s (n bytes left) into *cp; returns its length (>= 1).
 * Invalid bytes decode as U+FFFD one byte at a time. */
int kiln_utf8_decode(const unsigned char *s, size_t n, uint32_t *cp);
int kiln_utf8_encode(uint32_t cp, char *out); /* returns 1..4 */

/* tokenizer_wordpiece.c / tokenizer_bpe.c: one run of text without special tokens. */
void kiln_wp_encode_segment(const KilnTokenizer *t, const char *s, size_t n, KilnIdVec *out);
void kiln_bpe_encode_segment(const KilnTokenizer *t, const char *s, size_t n, KilnIdVec *out);
/* Append the text of token id (s: its token text, not NULL) to f, which holds what
 * decoded before it. */
void kiln_wp_decode_token(const KilnTokenizer *t, int32_t id, const char *s, FILE *f);
void kiln_bpe_decode_token(const KilnTokenizer *t, int32_t id, const char *s, FILE *f);

#endif
