/* runtime/progress.h — progress of long work (kiln eval, kiln quantize: calibration,
 * GPTQ per layer, perplexity windows). The work calls stage/step/end; the mode decides
 * the output: a bar on a terminal (stage, item i/n, elapsed, ETA, the current layer),
 * one JSON object per line for programs (`--json`), or nothing (`--quiet`, or stderr
 * not a terminal). Every function takes NULL as "no progress" and does nothing. */
#ifndef KILN_PROGRESS_H
#define KILN_PROGRESS_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

typedef enum {
    KILN_PROGRESS_AUTO,  /* a bar when out is a terminal (and TERM is not "dumb"), else quiet */
    KILN_PROGRESS_QUIET,
    KILN_PROGRESS_BAR,
    KILN_PROGRESS_JSON,  /* {"progress": STAGE, "done": i, "total": n, "unit": U, "item": NAME,
                          *  "elapsed_s": s, "eta_s": s, "final": bool} per line */
} KilnProgressMode;

typedef struct KilnProgress KilnProgress;

/* NULL for quiet (and when out of memory: progress is never worth failing for). */
KilnProgress *kiln_progress_new(KilnProgressMode mode, FILE *out);
/* A new stage of `total` units (ends the one before). Bars redraw at most every 100 ms;
 * a stage's first and last lines are always written. */
void kiln_progress_stage(KilnProgress *p, const char *stage, int64_t total, const char *unit);
/* done units of the stage finished; item names what is being worked on (a layer). */
void kiln_progress_step(KilnProgress *p, int64_t done, const char *item);
/* The stage is complete: its final line ("gptq [####] 30/30 layers  12.3 s"). */
void kiln_progress_end(KilnProgress *p);
/* Erase a bar before other output goes to the same terminal. */
void kiln_progress_clear(KilnProgress *p);
void kiln_progress_free(KilnProgress *p);

#endif
