/* ir/diag.c — error reporting (every fallible kiln function fills a KilnDiag) and the
 * clock for timings people read. */
#include <stdarg.h>
#include <stdio.h>
#include <time.h>

#include "ir.h"

static int diag_vset(KilnDiag *d, int code, const char *file, int line, const char *fmt,
                     va_list ap)
{
    if (!d)
        return code;
    d->code = code;
    d->file = file;
    d->line = line;
    vsnprintf(d->msg, sizeof d->msg, fmt, ap);
    return code;
}

int kiln_diag_set(KilnDiag *d, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    diag_vset(d, code, NULL, 0, fmt, ap);
    va_end(ap);
    return code;
}

int kiln_diag_set_at(KilnDiag *d, int code, const char *file, int line, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    diag_vset(d, code, file, line, fmt, ap);
    va_end(ap);
    return code;
}

const char *kiln_diag_format(const KilnDiag *d, char *buf, size_t n)
{
    if (d->file && d->line > 0)
        snprintf(buf, n, "%s:%d: %s", d->file, d->line, d->msg);
    else if (d->file)
        snprintf(buf, n, "%s: %s", d->file, d->msg);
    else
        snprintf(buf, n, "%s", d->msg);
    return buf;
}

double kiln_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}
