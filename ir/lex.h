/* ir/lex.h — the lexer of the IR text format, internal to ir/ (ir/parse.c is its one
 * user). Tokens point into the input; nothing is copied or decoded here. */
#ifndef KILN_IR_LEX_H
#define KILN_IR_LEX_H

#include <stdbool.h>
#include <stdarg.h>
#include <stddef.h>

#include "ir.h"

typedef enum {
    T_EOF,
    T_IDENT, /* [A-Za-z_][A-Za-z0-9_.]* */
    T_VALUE, /* %name; span excludes the '%' */
    T_STR,   /* "..."; span excludes the quotes, escapes not yet decoded */
    T_INT,
    T_FLOAT,
    T_ARROW, /* -> */
    T_PUNCT, /* one of ( ) [ ] { } , : = @ */
    T_ERR,   /* the lexer already filled the diag */
} TokKind;

typedef struct {
    TokKind kind;
    const char *s;
    size_t n;
    int line;
} Tok;

typedef struct {
    const char *cur, *end;
    int line;
    const char *file;
    KilnDiag *d;
    bool failed; /* only the first error reaches d */
    Tok t;       /* the current token */
} Lexer;

/* Moves to the next token (lx->t); T_ERR when the input has no valid one there. */
void kiln_lex_next(Lexer *lx);
/* The token after the current one, without consuming anything. */
Tok kiln_lex_peek(Lexer *lx);
/* Records a KILN_EINPUT at file:line in lx->d unless an error is already recorded;
 * returns KILN_EINPUT. */
int kiln_lex_vfail_at(Lexer *lx, int line, const char *fmt, va_list ap);
/* "end of input", "'%x'", "string \"...\"", "'tok'": the token for messages. */
void kiln_tok_describe(const Tok *t, char *buf, size_t n);

#endif
