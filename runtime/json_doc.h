/* runtime/json_doc.h — a parsed JSON document's one allocation, shared by the parser
 * (json.c) and what reads a document (json_doc.c). Private to runtime/. */
#ifndef KILN_RUNTIME_JSON_DOC_H
#define KILN_RUNTIME_JSON_DOC_H

#include "runtime/runtime.h"

#define KILN_JSON_NL_BLOCK 4096 /* text bytes per entry of the newline counts */

/* The root, then every array's and object's members (an object's keys after its members),
 * the newline index, the strings. */
typedef struct {
    KilnJson root; /* first: the document is found from its root */
    size_t bytes;  /* of this allocation */
    size_t text_len;
    uint64_t *nl;        /* bit p: byte p of the text is a newline; NULL when it has none */
    uint32_t *nl_before; /* newlines before each KILN_JSON_NL_BLOCK bytes of the text */
} KilnJsonDoc;

/* The newline index's bytes for a text of len bytes. */
size_t kiln_json_newline_bytes(size_t len);
/* Fills doc's newline index from its text. */
void kiln_json_index_newlines(KilnJsonDoc *doc, const char *text);

#endif
