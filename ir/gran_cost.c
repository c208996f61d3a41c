/* ir/gran_cost.c — the scale granularity model behind per = "auto": per target unit,
 * what a group's rescale and its scales cost; per format, what each granularity
 * measured in accuracy; the rule that weighs the two. */
#include "gran_cost.h"

#include <stdio.h>
#include <string.h>

#include "numerics.h"

/* Per unit: rescale_k, the dot-product work (in k of one output) that one group's
 * int32 -> f32 convert and scale FMA of an output costs; min_k, the k one step of the
 * unit's dot instruction covers (a smaller group leaves the step partly empty).
 * Derivations in docs/targets.md ("Scale granularity auto"). */
static const struct {
    const char *name;
    double rescale_k;
    int min_k;
    bool wsum; /* a weight-sum section per group (the u8 offset correction) */
} UNITS[KILN_GU_COUNT] = {
    [KILN_GU_REFERENCE] = {"reference interpreter (no kernel: scale bytes only)", 0, 1, false},
    /* measured (M = 512, 4096 x 4096, one thread): group 32 +19-47 % and group 128
     * 0-10 % over channel for W8A8 and W4A8, ~10 k; counting only the convert + FMA per
     * 8 outputs against 2 k per vpmaddwd said 2: the group's loads of scales and its
     * zero-point and sum bookkeeping cost as much again four times over */
    [KILN_GU_MADD] = {"avx2 vpmaddwd/vpmaddubsw int32 sums", 10, 1, false},
    /* measured on avx512vnni (Intel Xeon family 6 model 207, M = 512, 4096 x 4096, one
     * thread, three interleaved rounds; bench/results/vnni-granularity-2026-12-07.md):
     * over channel, W8A8 group 128 / 64 / 32 +1.8 / +5.1 / +16.6 %, W4A8 +5.2 / +14.7 /
     * +21.9 %, i.e. 2.3-9.4 k a group: 6 (the estimate before the measurement was 20) */
    [KILN_GU_VNNI] = {"VNNI vpdpbusd int32 sums", 6, 4, true},
    /* per 32x32 block and group: 4 tilestored, 64 zmm convert + FMA (~160 cycles)
     * against 4 tdpbusd per 64 k (16 cycles each at peak, the loop runs at ~25 %
     * of it: 4 cycles a k): 160 / 4 = 40 k; a tile step is 64 k */
    [KILN_GU_TILE_I8] = {"AMX tdpbusd 16x16 int32 tiles, a layer's prefill at any M", 40, 64, true},
    /* the scale multiplies a group's f32 partial sum once per output vector against
     * ~3 instructions (unpack, convert, FMA) per k; measured: groups of 128..32 within
     * the noise (+-8 %) of channel at M = 512 and +1..5 % at M = 1 */
    [KILN_GU_FMA] = {"f32 FMA on decoded weights", 0.5, 1, false},
    /* vdpbf16ps: 2 k x 16 outputs, ~2 to decode the codes; one FMA per 16 outputs */
    [KILN_GU_BF16DOT] = {"vdpbf16ps f32 sums", 1, 2, false},
    /* as TILE_I8 with tdpbf16ps (32 k per 16 cycles, ~26 % of peak): 20 k */
    [KILN_GU_TILE_BF16] = {"AMX tdpbf16ps 16x16 f32 tiles, a layer's prefill at any M", 20, 32,
                           false},
    /* m16n8k32: 4 accumulators a thread; their 4 convert + 4 FMA issue in about the
     * time of one mma (16 cycles a sub-partition): 32 k; an mma step is 32 k */
    [KILN_GU_GPU_MMA] = {"GPU mma.sync accumulator fragments", 32, 32, false},
    /* the scale is applied where codes become f16/bf16 (one multiply per pair of
     * weights whatever the granularity): only the scale bytes count */
    [KILN_GU_GPU_DEQUANT] = {"GPU dequantize in registers (the scale applied as codes are "
                             "converted)",
                             0, 1, false},
};

KilnGranUnit kiln_gran_unit(const KilnTarget *t, KilnQFormat act_fmt, KilnDType act_dtype)
{
    if (t->kind == KILN_TGT_INTERP)
        return KILN_GU_REFERENCE;
    if (t->kind == KILN_TGT_CUDA) /* fp8 acts on sm_80 are rewritten to f16 weight-only */
        return act_fmt == KILN_QF_INT8 || (kiln_qformat_is_fp8(act_fmt) && t->sm >= 89)
                   ? KILN_GU_GPU_MMA
                   : KILN_GU_GPU_DEQUANT;
    bool v4 = (t->isa & KILN_ISA_AVX512) != 0, amx = (t->isa & KILN_ISA_AMX_INT8) != 0;
    if (act_fmt == KILN_QF_INT8) /* a layer for every M runs its prefill on tiles */
        return amx ? KILN_GU_TILE_I8 : v4 && (t->isa & KILN_ISA_VNNI) ? KILN_GU_VNNI : KILN_GU_MADD;
    if (act_fmt == KILN_QF_NONE && act_dtype == KILN_BF16 && (t->isa & KILN_ISA_BF16))
        return amx ? KILN_GU_TILE_BF16 : KILN_GU_BF16DOT;
    return KILN_GU_FMA;
}

const char *kiln_gran_unit_name(KilnGranUnit u) { return u < KILN_GU_COUNT ? UNITS[u].name : "?"; }

/* The measured quantization error of each candidate, [channel, g128, g64, g32], on the
 * two models (bench/results/auto-granularity-2026-12-07.md, avx2, round to nearest,
 * symmetric): MiniLM 100 (1 - mean cosine), SmolLM2 ppl increase in %. Below a model's
 * noise floor differences do not count. int8 weights: with f16 activations both models
 * are within the floor (W8A16 groups of 64 and 32 not measured: group 128's); with int8
 * activations MiniLM improves steadily with smaller groups, while SmolLM2's ppl does not
 * follow the group (4.24, 1.94, 4.53, 5.11 %: its int8 activations' outliers dominate),
 * so only MiniLM counts there. int4 is measured with f16 activations (W4A8 gives the
 * same ratios). fp8 weights (their own exponent per value) take int8 weight-only's: not
 * measured. */
enum { C_CH, C_G128, C_G64, C_G32, NCAND };
static const double ERR_INT8_WONLY[2][NCAND] = {{0.049, 0.025, 0.025, 0.025}, {0, 0, 0, 0}};
static const double ERR_INT8_A8[2][NCAND] = {{0.290, 0.264, 0.258, 0.250}, {0, 0, 0, 0}};
static const double ERR_INT4[2][NCAND] = {{9.173, 6.775, 5.393, 4.902},
                                          {167.1, 77.4, 70.8, 57.7}};
static const double FLOOR[2] = {0.1, 0.5}; /* MiniLM cos >= 0.999, SmolLM2 +0.5 % */
static const int GROUPS[NCAND] = {0, 128, 64, 32};

static double rel_err(const double err[2][NCAND], int c, const bool *have)
{
    double worst = 0;
    for (int m = 0; m < 2; m++) {
        double best = 1e30;
        for (int i = 0; i < NCAND; i++)
            if (have[i] && err[m][i] < best)
                best = err[m][i];
        double e = err[m][c] > FLOOR[m] ? err[m][c] : FLOOR[m];
        best = best > FLOOR[m] ? best : FLOOR[m];
        double r = 100.0 * (e / best - 1.0);
        worst = r > worst ? r : worst;
    }
    return worst;
}

int kiln_gran_candidates(KilnGranUnit u, const KilnQuantSpec *w, KilnQFormat act_fmt, int64_t K,
                         KilnGranCand *c)
{
    bool have[NCAND];
    for (int i = 0; i < NCAND; i++)
        have[i] = i == C_CH || (K > GROUPS[i] && K % GROUPS[i] == 0);
    const double(*err)[NCAND] = ERR_INT8_WONLY;
    if (w->fmt == KILN_QF_INT4)
        err = ERR_INT4;
    else if (w->fmt == KILN_QF_INT8 && act_fmt == KILN_QF_INT8)
        err = ERR_INT8_A8;
    double bits = kiln_qformat_bits(w->fmt);
    double meta = 4.0 * (1 + !w->symmetric + UNITS[u].wsum); /* f32 scale, zero, wsum */
    int n = 0;
    for (int i = 0; i < NCAND; i++) {
        if (!have[i])
            continue;
        double G = i == C_CH ? (double)K : GROUPS[i];
        KilnGranCand *x = &c[n++];
        x->gran = i == C_CH ? KILN_GRAN_CHANNEL : KILN_GRAN_GROUP;
        x->group = GROUPS[i];
        x->store = 100.0 * (meta / (G * bits / 8) - meta / ((double)K * bits / 8));
        x->rescale = 100.0 * (UNITS[u].rescale_k / G - UNITS[u].rescale_k / (double)K);
        if (G < UNITS[u].min_k)
            x->rescale += 100.0 * (UNITS[u].min_k / G - 1.0);
        x->acc = rel_err(err, i, have);
        x->score = (x->store > x->rescale ? x->store : x->rescale) + x->acc;
    }
    return n;
}

static int cand_name(const KilnGranCand *c, char *buf, size_t n)
{
    return c->gran == KILN_GRAN_CHANNEL ? snprintf(buf, n, "channel")
                                        : snprintf(buf, n, "group=%d", c->group);
}

int kiln_gran_resolve_weight(const KilnTarget *t, KilnQFormat act_fmt, KilnDType act_dtype,
                             KilnQuantSpec *w, int64_t K, char *why, size_t n)
{
    if (w->gran != KILN_GRAN_AUTO)
        return 0;
    KilnGranUnit u = kiln_gran_unit(t, act_fmt, act_dtype);
    KilnGranCand c[NCAND];
    int nc = kiln_gran_candidates(u, w, act_fmt, K, c), best = 0, second = -1;
    if (nc == 1 && w->fmt == KILN_QF_INT4)
        return -1;
    for (int i = 1; i < nc; i++) /* ties go to the larger granularity: fewer bytes */
        if (c[i].score < c[best].score)
            best = i;
    for (int i = 0; i < nc; i++)
        if (i != best && (second < 0 || c[i].score < c[second].score))
            second = i;
    w->gran = c[best].gran;
    w->group = c[best].group;
    if (!why || n == 0)
        return 0;
    char a[16], b[16];
    cand_name(&c[best], a, sizeof a);
    int len = snprintf(why, n,
                       "weight scales auto -> %s on %s (%s, K=%lld; score = max(%% more scale "
                       "bytes, %% more rescale work) + %% more error than the best: %s %.1f = "
                       "max(%.1f, %.1f) + %.0f",
                       a, t->name, UNITS[u].name, (long long)K, a, c[best].score, c[best].store,
                       c[best].rescale, c[best].acc);
    if (second >= 0 && len > 0 && (size_t)len < n) {
        cand_name(&c[second], b, sizeof b);
        len += snprintf(why + len, n - (size_t)len, "; next %s %.1f = max(%.1f, %.1f) + %.0f", b,
                        c[second].score, c[second].store, c[second].rescale, c[second].acc);
    }
    if (len > 0 && (size_t)len < n)
        snprintf(why + len, n - (size_t)len, ")");
    return 0;
}

void kiln_gran_resolve_act(const KilnTarget *t, KilnQuantSpec *a, char *why, size_t n)
{
    if (a->gran != KILN_GRAN_AUTO)
        return;
    a->gran = a->dynamic ? KILN_GRAN_TOKEN : KILN_GRAN_TENSOR;
    if (!t || !why || n == 0)
        return;
    if (a->dynamic)
        snprintf(why, n,
                 "act scales auto -> token on %s (a row's absmax is taken as the row is "
                 "quantized, per tensor needs a pass over all rows first; measured "
                 "MiniLM W8A8 cos 0.99710 per token vs 0.98193 per tensor)",
                 t->name);
    else
        snprintf(why, n, "act scales auto -> tensor (static: one calibrated scale)");
}
