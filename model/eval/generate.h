/* model/eval/generate.h — the pieces of `kiln generate` (model/eval/generate.c) that tests
 * reach one by one: chat-template families (chat.c), the token sampler (sample.c) and
 * the UTF-8 holdback of streamed text. Not a public header; docs/generate.md. */
#ifndef KILN_MODEL_EVAL_GENERATE_H
#define KILN_MODEL_EVAL_GENERATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ------------------------------------------------------------------ chat.c */

/* The chat-template families kiln formats, recognised from the template text by the
 * markers llama.cpp's llm_chat_detect_template looks for (no Jinja is run). */
typedef enum {
    KILN_CHAT_UNKNOWN,
    KILN_CHAT_CHATML,  /* <|im_start|>role\n...<|im_end|>\n (SmolLM2, Qwen) */
    KILN_CHAT_LLAMA3,  /* <|start_header_id|>role<|end_header_id|>\n\n...<|eot_id|> */
    KILN_CHAT_LLAMA2,  /* [INST] ... [/INST] (Llama 2, Mistral) */
    KILN_CHAT_ZEPHYR,  /* <|user|>\n...</s>\n<|assistant|>\n */
    KILN_CHAT_GEMMA,   /* <start_of_turn>user\n...<end_of_turn>\n<start_of_turn>model\n */
    KILN_CHAT_PHI3,    /* <|user|>\n...<|end|>\n<|assistant|>\n */
} KilnChatKind;

KilnChatKind kiln_chat_detect(const char *tmpl);
const char *kiln_chat_name(KilnChatKind k); /* "chatml", "llama3", ... "unknown" */

/* The template's default system turn, when it writes one for a conversation without a
 * system message (SmolLM2: "<|im_start|>system\nYou are a helpful AI assistant named
 * SmolLM...<|im_end|>\n"): a whole quoted literal of the template that opens a system
 * turn and closes it, unescaped. NULL when there is none; malloc'd. */
char *kiln_chat_default_system(KilnChatKind k, const char *tmpl);

/* The text of one user turn and the generation prompt in family k, as the template
 * renders it for messages = [{role: user, content: user}], add_generation_prompt =
 * true: the template's default system turn first (*with_system then true), the BOS
 * token's text when the template writes bos_token (bos NULL: none), eos the EOS
 * token's text (Zephyr closes a turn with it); the content trimmed where a Llama 2 /
 * Llama 3 / Gemma template trims it (.strip(), | trim). NULL for KILN_CHAT_UNKNOWN or
 * out of memory; malloc'd. */
char *kiln_chat_format(KilnChatKind k, const char *tmpl, const char *user, const char *bos,
                       const char *eos, bool *with_system);

/* The token that ends the assistant's turn in family k ("<|im_end|>"), or NULL when
 * the family ends it with EOS. tmpl: Zephyr ends with <|endoftext|> when its template
 * writes it. */
const char *kiln_chat_end_of_turn(KilnChatKind k, const char *tmpl);

/* ------------------------------------------------------------------ sample.c */

/* Temperature + top-p (nucleus) sampling with a seeded generator (xoshiro256**), so a
 * seed repeats a run. temp <= 0 or top_p <= 0: greedy (argmax, the lowest id on ties). */
typedef struct KilnSampler {
    float temp, top_p;
    uint64_t s[4];
    int V;
    int32_t *idx; /* [V] scratch */
    double *p;    /* [V] scratch */
} KilnSampler;

int kiln_sampler_init(KilnSampler *s, int V, float temp, float top_p, uint64_t seed);
void kiln_sampler_free(KilnSampler *s);
/* The next token for logits[V]; -1 when out of memory. */
int32_t kiln_sample(KilnSampler *s, const float *logits);
int32_t kiln_argmax(const float *logits, int V);
/* The nucleus of softmax(logits / temp): the fewest most likely tokens whose mass
 * reaches top_p (all when top_p >= 1), into idx[] (most likely first when top_p < 1,
 * else in id order) with their probabilities renormalised over the nucleus into p[];
 * returns how many (-1: out of memory). idx, p: [V]. */
int kiln_nucleus(const float *logits, int V, float temp, float top_p, int32_t *idx, double *p);
/* A uniform double in [0, 1) from the sampler's generator. */
double kiln_sampler_uniform(KilnSampler *s);

/* ------------------------------------------------------------------ generate.c */

/* Streamed text cut only between whole UTF-8 characters: a character that spans two
 * tokens is held back until its last byte arrives. */
typedef struct KilnUtf8Hold {
    char buf[8];
    int n;
} KilnUtf8Hold;

/* Appends s[0..n) to what is held and returns how many bytes of h->buf + s (taken as
 * one string, written to out[]: at least n + 8 bytes) are complete characters; the
 * rest stays held. Bytes that can never start or continue a character pass through. */
size_t kiln_utf8_hold(KilnUtf8Hold *h, const char *s, size_t n, char *out);

#endif
