/* model/tokenizers/unicode.c — Unicode character classes for the tokenizers (letters, numbers,
 * punctuation, nonspacing marks, "other", White_Space, lowercase, accent stripping) over
 * the tables that tests/models/gen_unicode.py generates into unicode_tables.inc. */
#include "model/tokenizers/tokenizer_internal.h"

typedef struct { uint32_t lo, hi; } KilnURange;
typedef struct { uint32_t lo, hi; int32_t delta; uint32_t stride; } KilnULower;
typedef struct { uint32_t cp, base; } KilnUStrip;

#include "model/tokenizers/unicode_tables.inc"

static bool in_ranges(const KilnURange *r, size_t n, uint32_t cp)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (cp < r[mid].lo)
            hi = mid;
        else if (cp > r[mid].hi)
            lo = mid + 1;
        else
            return true;
    }
    return false;
}

#define IN(tab, cp) in_ranges(tab, sizeof tab / sizeof tab[0], cp)

bool kiln_u_is_letter(uint32_t cp) { return IN(letters, cp); }
bool kiln_u_is_number(uint32_t cp) { return IN(numbers, cp); }
bool kiln_u_is_punct(uint32_t cp) { return IN(puncts, cp); }
bool kiln_u_is_mark_mn(uint32_t cp) { return IN(marks_mn, cp); }
bool kiln_u_is_other(uint32_t cp) { return cp > 0x10FFFF || IN(others, cp); }

/* Unicode White_Space (what Rust's char::is_whitespace and regex \s use). */
bool kiln_u_is_space(uint32_t cp)
{
    return (cp >= 0x09 && cp <= 0x0D) || cp == 0x20 || cp == 0x85 || cp == 0xA0 ||
           cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 ||
           cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

/* Simple (one code point) lowercase; U+0130 maps to 'i' (its full mapping adds U+0307,
 * which accent stripping removes anyway). */
uint32_t kiln_u_lower(uint32_t cp)
{
    size_t lo = 0, hi = sizeof lowers / sizeof lowers[0];
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (cp < lowers[mid].lo)
            hi = mid;
        else if (cp > lowers[mid].hi)
            lo = mid + 1;
        else if ((cp - lowers[mid].lo) % lowers[mid].stride == 0)
            return (uint32_t)((int32_t)cp + lowers[mid].delta);
        else
            return cp;
    }
    return cp;
}

/* The code point left after NFD and removing nonspacing marks, for precomposed
 * Latin, Greek and Cyrillic letters (U+00C0..U+04FF, U+1E00..U+1FFF); others unchanged. */
uint32_t kiln_u_strip_accent(uint32_t cp)
{
    size_t lo = 0, hi = sizeof strips / sizeof strips[0];
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (cp < strips[mid].cp)
            hi = mid;
        else if (cp > strips[mid].cp)
            lo = mid + 1;
        else
            return strips[mid].base;
    }
    return cp;
}
