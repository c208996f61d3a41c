/* ir/gran_cost.h — the scale granularity model: what each granularity costs on a
 * target's kernel and in accuracy, and the rule that resolves per = "auto" with it
 * (docs/targets.md, "Scale granularity auto"; bench/results/auto-granularity-2026-12-07.md
 * has the measurements behind its numbers). libc only. */
#ifndef KILN_GRAN_COST_H
#define KILN_GRAN_COST_H

#include <stdbool.h>
#include <stddef.h>

#include "ir.h"
#include "target.h"

/* What a qgemm's inner loop runs on, as far as weight scales are concerned: it decides
 * what one group's rescale of an output costs against that group's dot products. */
typedef enum {
    KILN_GU_REFERENCE, /* interp: no kernel, only the scale storage counts */
    KILN_GU_MADD,      /* avx2 int8 acts: vpmaddwd / vpmaddubsw into int32 */
    KILN_GU_VNNI,      /* avx512 int8 acts: vpdpbusd into int32 */
    KILN_GU_TILE_I8,   /* amx int8 acts: tdpbusd into 16x16 int32 tiles */
    KILN_GU_FMA,       /* CPU weight-only and fp8: f32 FMA on decoded weights */
    KILN_GU_BF16DOT,   /* avx512 bf16 acts: vdpbf16ps */
    KILN_GU_TILE_BF16, /* amx bf16 acts: tdpbf16ps into 16x16 f32 tiles */
    KILN_GU_GPU_MMA,   /* GPU int8/fp8 acts: mma.sync int32 / f32 accumulator fragments */
    KILN_GU_GPU_DEQUANT, /* GPU weight-only: codes to f16/bf16/f32, the scale at conversion */
    KILN_GU_COUNT
} KilnGranUnit;

/* The qgemm's activations as the model needs them: quantized (act_fmt int8 or fp8) or
 * weight-only with act_dtype f32/f16/bf16 (act_fmt KILN_QF_NONE). */
KilnGranUnit kiln_gran_unit(const KilnTarget *t, KilnQFormat act_fmt, KilnDType act_dtype);
const char *kiln_gran_unit_name(KilnGranUnit u);

/* One candidate weight granularity and what the model says of it. */
typedef struct {
    KilnGran gran;  /* KILN_GRAN_CHANNEL or KILN_GRAN_GROUP */
    int group;      /* for a group */
    double store;   /* % more weight bytes than per channel (decode reads them all) */
    double rescale; /* % more kernel work than per channel (one rescale per group) */
    double acc;     /* % more quantization error than the best candidate (measured) */
    double score;   /* max(store, rescale) + acc: the lowest wins */
} KilnGranCand;

/* Resolve an auto weight spec for this target and activation: the candidates are per
 * channel and groups of 128, 64 and 32 that divide K (kiln_gran_candidates lists them
 * with their numbers, at most 4). *w gets the winner; why (may be NULL) says what was
 * chosen, on which unit, and the runner-up. A spec that is not auto is left alone.
 * -1 for int4 weights when no group divides K (per channel alone is not offered to
 * int4: docs/targets.md). */
int kiln_gran_candidates(KilnGranUnit u, const KilnQuantSpec *w, KilnQFormat act_fmt, int64_t K,
                         KilnGranCand *c);
int kiln_gran_resolve_weight(const KilnTarget *t, KilnQFormat act_fmt, KilnDType act_dtype,
                              KilnQuantSpec *w, int64_t K, char *why, size_t n);
/* Resolve an auto activation spec: dynamic -> token, static -> tensor (the only static
 * granularity), on every target; why (may be NULL, and is when t is) says why. */
void kiln_gran_resolve_act(const KilnTarget *t, KilnQuantSpec *a, char *why, size_t n);

#endif
