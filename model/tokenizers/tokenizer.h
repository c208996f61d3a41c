/* model/tokenizers/tokenizer.h — the tokenizers of the two real models, in C: BERT WordPiece
 * (uncased, basic tokenization + greedy longest-match-first) and byte-level BPE from a
 * GGUF file's vocabulary and merges or a tokenizer.json (GPT-2 style byte mapping and
 * pre-tokenization). */
#ifndef KILN_TOKENIZER_H
#define KILN_TOKENIZER_H

#include <stdint.h>

#include "ir/ir.h"
#include "model/files/modelfile.h"

typedef struct KilnTokenizer KilnTokenizer;

/* WordPiece from a vocab.txt (one token per line, id = line number). */
int kiln_tok_wordpiece_load(const char *vocab_path, KilnTokenizer **out, KilnDiag *d);
/* The same with at most max_tokens lines (> 0: the model's embedding rows), checked before
 * anything is allocated for them. vocab.txt is at most KILN_VOCAB_BYTES (docs/hardening.md). */
#define KILN_VOCAB_BYTES (16u << 20)
int kiln_tok_wordpiece_load_max(const char *vocab_path, int max_tokens, KilnTokenizer **out,
                                KilnDiag *d);
/* Byte-level BPE from GGUF metadata: tokenizer.ggml.tokens, tokenizer.ggml.merges,
 * tokenizer.ggml.bos_token_id / eos_token_id, tokenizer.ggml.pre. */
int kiln_tok_bpe_from_gguf(const KilnModelFile *mf, KilnTokenizer **out, KilnDiag *d);
/* Byte-level BPE from a Hugging Face tokenizer.json: model.vocab, model.merges ("a b"
 * strings or ["a", "b"] pairs), added_tokens (matched whole in the raw text), a ByteLevel
 * pre-tokenizer, optionally after Digits(individual_digits). bos / eos: the ids
 * config.json names (-1: none). */
int kiln_tok_bpe_from_hf_json(const char *path, int32_t bos, int32_t eos, KilnTokenizer **out,
                              KilnDiag *d);
void kiln_tok_free(KilnTokenizer *t);

/* Encode UTF-8 text. add_special: WordPiece adds [CLS] ... [SEP]; BPE adds nothing
 * (SmolLM2 has no BOS by default). Returns the number of ids written (<= cap), or -1
 * with d set. *needed (if non-NULL) gets the full count. */
int kiln_tok_encode(const KilnTokenizer *t, const char *text, int add_special, int32_t *ids,
                    int cap, int *needed, KilnDiag *d);
/* Decode ids to UTF-8 text (malloc'd). */
char *kiln_tok_decode(const KilnTokenizer *t, const int32_t *ids, int n);
int kiln_tok_vocab_size(const KilnTokenizer *t);
const char *kiln_tok_token(const KilnTokenizer *t, int32_t id);
int32_t kiln_tok_special(const KilnTokenizer *t, const char *which); /* "cls","sep","pad","bos","eos","unk"; -1 if none */

#endif
