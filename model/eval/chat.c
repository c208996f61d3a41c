/* model/eval/chat.c — chat templates without a Jinja engine: the family of a model's
 * template recognised from its markers (as llama.cpp's llm_chat_detect_template does),
 * and one user turn formatted the way that family's templates render it (the template
 * itself comes with the model: model/nets). docs/generate.md, "Chat templates". */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/eval/generate.h"

static bool has(const char *t, const char *s) { return strstr(t, s) != NULL; }

KilnChatKind kiln_chat_detect(const char *t)
{
    if (!t || !*t)
        return KILN_CHAT_UNKNOWN;
    if (has(t, "<|im_start|>"))
        return KILN_CHAT_CHATML;
    if (has(t, "[INST]"))
        return KILN_CHAT_LLAMA2;
    if (has(t, "<|assistant|>") && has(t, "<|end|>"))
        return KILN_CHAT_PHI3;
    if (has(t, "<|user|>") && (has(t, "<|assistant|>") || has(t, "<|endoftext|>")))
        return KILN_CHAT_ZEPHYR;
    if (has(t, "<start_of_turn>"))
        return KILN_CHAT_GEMMA;
    if (has(t, "<|start_header_id|>") && has(t, "<|end_header_id|>"))
        return KILN_CHAT_LLAMA3;
    return KILN_CHAT_UNKNOWN;
}

const char *kiln_chat_name(KilnChatKind k)
{
    static const char *const names[] = {"unknown", "chatml", "llama3", "llama2",
                                        "zephyr",  "gemma",  "phi3"};
    return (unsigned)k < sizeof names / sizeof names[0] ? names[k] : "unknown";
}

/* The quoted Jinja literal whose text starts at open (just after its quote q), unescaped
 * (\n, \t, \\, \', \"); NULL when it does not close. */
static char *literal(const char *open, char q)
{
    size_t n = 0;
    char *s = malloc(strlen(open) + 1);
    if (!s)
        return NULL;
    for (const char *p = open; *p; p++) {
        if (*p == q) {
            s[n] = 0;
            return s;
        }
        if (*p == '\\' && p[1]) {
            p++;
            s[n++] = *p == 'n' ? '\n' : *p == 't' ? '\t' : *p;
        } else {
            s[n++] = *p;
        }
    }
    free(s);
    return NULL;
}

char *kiln_chat_default_system(KilnChatKind k, const char *tmpl)
{
    static const char *const open[] = {[KILN_CHAT_CHATML] = "<|im_start|>system",
                                       [KILN_CHAT_LLAMA3] = "<|start_header_id|>system"};
    static const char *const close[] = {[KILN_CHAT_CHATML] = "<|im_end|>",
                                        [KILN_CHAT_LLAMA3] = "<|eot_id|>"};
    if (!tmpl || (k != KILN_CHAT_CHATML && k != KILN_CHAT_LLAMA3))
        return NULL;
    size_t ol = strlen(open[k]);
    for (const char *p = strstr(tmpl, open[k]); p; p = strstr(p + ol, open[k])) {
        if (p == tmpl || (p[-1] != '\'' && p[-1] != '"'))
            continue; /* not the start of a literal ('...system\n' + message['content']) */
        char *s = literal(p, p[-1]);
        if (s && strstr(s, close[k])) /* a whole turn: the template's own default */
            return s;
        free(s);
    }
    return NULL;
}

/* content with leading and trailing white space removed (Jinja's trim), malloc'd */
static char *trimmed(const char *s)
{
    while (*s == ' ' || *s == '\n' || *s == '\t' || *s == '\r')
        s++;
    size_t n = strlen(s);
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\n' || s[n - 1] == '\t' || s[n - 1] == '\r'))
        n--;
    return strndup(s, n);
}

char *kiln_chat_format(KilnChatKind k, const char *tmpl, const char *user, const char *bos,
                       const char *eos, bool *with_system)
{
    *with_system = false;
    if (k == KILN_CHAT_UNKNOWN)
        return NULL;
    const char *b = bos && tmpl && has(tmpl, "bos_token") ? bos : "";
    char *sys = kiln_chat_default_system(k, tmpl);
    /* Llama 2 strips the content (content.strip()), Llama 3 and Gemma trim it (| trim);
     * Mistral's [INST] template and the others take it as it is */
    bool trim = (k == KILN_CHAT_LLAMA3 || k == KILN_CHAT_GEMMA || k == KILN_CHAT_LLAMA2) &&
                tmpl && (has(tmpl, ".strip()") || has(tmpl, "| trim") || has(tmpl, "|trim"));
    char *u = trim ? trimmed(user) : strdup(user);
    char *out = NULL;
    size_t len = 0;
    FILE *f = u ? open_memstream(&out, &len) : NULL;
    if (!f) {
        free(sys), free(u);
        return NULL;
    }
    *with_system = sys != NULL;
    fputs(b, f);
    if (sys)
        fputs(sys, f);
    switch (k) {
    case KILN_CHAT_CHATML:
        fprintf(f, "<|im_start|>user\n%s<|im_end|>\n<|im_start|>assistant\n", u);
        break;
    case KILN_CHAT_LLAMA3:
        fprintf(f, "<|start_header_id|>user<|end_header_id|>\n\n%s<|eot_id|>"
                   "<|start_header_id|>assistant<|end_header_id|>\n\n", u);
        break;
    case KILN_CHAT_LLAMA2:
        fprintf(f, "[INST] %s [/INST]", u);
        break;
    case KILN_CHAT_ZEPHYR:
        fprintf(f, "<|user|>\n%s%s\n<|assistant|>\n", u,
                has(tmpl, "<|endoftext|>") ? "<|endoftext|>" : eos ? eos : "");
        break;
    case KILN_CHAT_GEMMA:
        fprintf(f, "<start_of_turn>user\n%s<end_of_turn>\n<start_of_turn>model\n", u);
        break;
    case KILN_CHAT_PHI3:
        fprintf(f, "<|user|>\n%s<|end|>\n<|assistant|>\n", u);
        break;
    default:
        break;
    }
    fclose(f);
    free(sys), free(u);
    return out;
}

const char *kiln_chat_end_of_turn(KilnChatKind k, const char *tmpl)
{
    switch (k) {
    case KILN_CHAT_CHATML:
        return "<|im_end|>";
    case KILN_CHAT_LLAMA3:
        return "<|eot_id|>";
    case KILN_CHAT_GEMMA:
        return "<end_of_turn>";
    case KILN_CHAT_PHI3:
        return "<|end|>";
    case KILN_CHAT_ZEPHYR:
        return tmpl && has(tmpl, "<|endoftext|>") ? "<|endoftext|>" : NULL;
    default:
        return NULL;
    }
}
