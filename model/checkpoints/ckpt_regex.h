/* model/checkpoints/ckpt_regex.h — compressed-tensors' "re:" targets: Python `re.match`
 * patterns compiled once with PCRE2, under hard limits on memory and work. Not a public
 * header. docs/checkpoints.md, "Regular expressions"; docs/hardening.md. */
#ifndef KILN_CKPT_REGEX_H
#define KILN_CKPT_REGEX_H

#include <stdbool.h>

#include "ir/ir.h"

#define KILN_CK_RX_MAX_PATTERN 4096          /* bytes of one pattern */
#define KILN_CK_RX_MAX_NEST 64               /* parentheses nested in one pattern */
#define KILN_CK_RX_COMPILE_BYTES (1u << 20)  /* memory to compile one pattern */
#define KILN_CK_RX_TOTAL_BYTES (32u << 20)   /* every compiled pattern of a checkpoint */
#define KILN_CK_RX_MATCH_LIMIT 100000        /* PCRE2 match limit, one name against one pattern */
#define KILN_CK_RX_DEPTH_LIMIT 10000         /* PCRE2 backtracking depth limit */
#define KILN_CK_RX_HEAP_KIB 4096             /* PCRE2 heap limit of one match, KiB */
#define KILN_CK_RX_TIME_MS 2000              /* time inside PCRE2, all patterns together */

/* A checkpoint's compiled patterns and the budget they share. */
typedef struct KilnCkRegexes KilnCkRegexes;

int kiln_ck_rx_new(KilnCkRegexes **out, KilnDiag *d);
/* Compiles `pattern` (Python syntax, without "re:"), anchored at the start of the name as
 * re.match is. `where` names it in every message ("DIR/config.json:LINE: config_groups[..]
 * .targets[I]"). *id is what kiln_ck_rx_match takes. */
int kiln_ck_rx_add(KilnCkRegexes *rx, const char *where, const char *pattern, int *id,
                   KilnDiag *d);
/* re.match(pattern, name) is not None; a limit reached is an error (KILN_EINPUT) naming
 * the pattern, the name and the limit, never a silent non-match. */
int kiln_ck_rx_match(KilnCkRegexes *rx, int id, const char *name, bool *hit, KilnDiag *d);
void kiln_ck_rx_free(KilnCkRegexes *rx);

#endif
