/* runtime/progress.c — progress of long work (runtime/progress.h): a one-line bar with
 * stage, item i/n, elapsed time and ETA on a terminal, JSON lines for programs, nothing
 * otherwise. The work reports; this file decides what, if anything, the user sees. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "runtime/progress.h"
#include "runtime/runtime.h"

struct KilnProgress {
    KilnProgressMode mode;
    FILE *out;
    char stage[64], unit[16], item[96];
    int64_t done, total;
    double t_start, t_last; /* stage start and last drawn, ms */
    bool drawn;             /* a bar is on the line (erase it before other output) */
};

/* Bars are redrawn at most this often; JSON lines too, except a stage's first and last. */
#define REDRAW_MS 100.0

KilnProgress *kiln_progress_new(KilnProgressMode mode, FILE *out)
{
    if (!out)
        return NULL;
    if (mode == KILN_PROGRESS_AUTO) {
        const char *term = getenv("TERM");
        mode = isatty(fileno(out)) && !(term && !strcmp(term, "dumb")) ? KILN_PROGRESS_BAR
                                                                      : KILN_PROGRESS_QUIET;
    }
    if (mode == KILN_PROGRESS_QUIET)
        return NULL; /* every call on NULL is a no-op */
    KilnProgress *p = calloc(1, sizeof *p);
    if (p) {
        p->mode = mode;
        p->out = out;
    }
    return p;
}

/* Copy s, dropping control characters (a layer name is outside input; a bar must not
 * carry escape sequences or line breaks). */
static void copy_clean(char *dst, size_t n, const char *s)
{
    size_t j = 0;
    for (; s && *s && j + 1 < n; s++)
        dst[j++] = (unsigned char)*s < 0x20 || *s == 0x7f ? '?' : *s;
    dst[j] = 0;
}

static void json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"' || *s == '\\')
            fputc('\\', f);
        fputc(*s, f);
    }
    fputc('"', f);
}

static void draw(KilnProgress *p, bool final)
{
    double now = kiln_now_ms(), el = (now - p->t_start) / 1000.0;
    double eta = p->done > 0 && p->total > p->done ? el * (double)(p->total - p->done) / (double)p->done
                                                   : 0;
    if (p->mode == KILN_PROGRESS_JSON) {
        fprintf(p->out, "{\"progress\": ");
        json_str(p->out, p->stage);
        fprintf(p->out, ", \"done\": %lld, \"total\": %lld, \"unit\": ", (long long)p->done,
                (long long)p->total);
        json_str(p->out, p->unit);
        fprintf(p->out, ", \"item\": ");
        json_str(p->out, p->item);
        fprintf(p->out, ", \"elapsed_s\": %.2f, \"eta_s\": %.2f, \"final\": %s}\n", el, eta,
                final ? "true" : "false");
    } else {
        char bar[24];
        int w = (int)sizeof bar - 1, fill = p->total > 0 ? (int)(w * p->done / p->total) : 0;
        for (int i = 0; i < w; i++)
            bar[i] = i < fill ? '#' : '.';
        bar[w] = 0;
        fprintf(p->out, "\r\033[K%s [%s] %lld/%lld %s  %.1f s", p->stage, bar, (long long)p->done,
                (long long)p->total, p->unit, el);
        if (!final && p->done > 0)
            fprintf(p->out, ", ETA %.0f s", eta);
        if (p->item[0] && !final)
            fprintf(p->out, "  %s", p->item);
        fputs(final ? "\n" : "", p->out);
        p->drawn = !final;
    }
    fflush(p->out);
    p->t_last = now;
}

void kiln_progress_stage(KilnProgress *p, const char *stage, int64_t total, const char *unit)
{
    if (!p)
        return;
    if (p->drawn)
        kiln_progress_end(p);
    copy_clean(p->stage, sizeof p->stage, stage);
    copy_clean(p->unit, sizeof p->unit, unit ? unit : "");
    p->item[0] = 0;
    p->done = 0;
    p->total = total > 0 ? total : 0;
    p->t_start = kiln_now_ms();
    draw(p, false);
}

void kiln_progress_step(KilnProgress *p, int64_t done, const char *item)
{
    if (!p)
        return;
    p->done = done < 0 ? 0 : p->total && done > p->total ? p->total : done;
    copy_clean(p->item, sizeof p->item, item ? item : "");
    if (kiln_now_ms() - p->t_last >= REDRAW_MS)
        draw(p, false);
}

void kiln_progress_end(KilnProgress *p)
{
    if (!p || !p->stage[0])
        return;
    p->done = p->total;
    draw(p, true);
    p->stage[0] = 0;
}

void kiln_progress_clear(KilnProgress *p)
{
    if (p && p->drawn) {
        fputs("\r\033[K", p->out);
        fflush(p->out);
        p->drawn = false;
    }
}

void kiln_progress_free(KilnProgress *p)
{
    if (!p)
        return;
    kiln_progress_clear(p);
    free(p);
}
