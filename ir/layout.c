/* ir/layout.c — choosing the prepacked CPU weight layout for a qgemm and packing
 * quantized weights into it (byte layout documented in layout.h). libc only. */
#include "layout.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "numerics.h"

static size_t align64(size_t x) { return (x + 63) & ~(size_t)63; }

const KilnInst *kiln_find_qgemm(const KilnFunc *f)
{
    for (int i = 0; f && i < f->ninsts; i++)
        if (!f->insts[i].dead && f->insts[i].op == KILN_OP_QGEMM)
            return &f->insts[i];
    return NULL;
}


static int choose_family(bool avx512, bool bf16, const KilnQuantSpec *w, const KilnQuantSpec *act,
                         KilnDType act_dtype, KilnLayout *l, KilnDiag *d)
{
    if (act && w->fmt == KILN_QF_NONE)
        return kiln_diag_set(d, KILN_EINPUT,
                             "qgemm: f32 (unquantized) weights take f32/f16/bf16 activations "
                             "(act_dtype), not quantized %s activations",
                             kiln_qformat_name(act->fmt));
    if (act) {
        if (kiln_qformat_is_int(act->fmt) && act->fmt == KILN_QF_INT8 && kiln_qformat_is_int(w->fmt)) {
            l->family = avx512 ? KILN_KF_U8S8_VNNI
                      : w->fmt == KILN_QF_INT4 ? KILN_KF_U4S8_MADDUBS : KILN_KF_I16_MADD;
            return 0;
        }
        if (kiln_qformat_is_fp8(act->fmt) && kiln_qformat_is_fp8(w->fmt)) {
            l->family = KILN_KF_F32_FMA;
            return 0;
        }
        return kiln_diag_set(d, KILN_EINPUT,
                             "qgemm: no CPU kernel for %s activations with %s weights "
                             "(int8 acts need int8/int4 weights, fp8 acts need fp8 weights)",
                             kiln_qformat_name(act->fmt), kiln_qformat_name(w->fmt));
    }
    if (act_dtype != KILN_F32 && act_dtype != KILN_F16 && act_dtype != KILN_BF16)
        return kiln_diag_set(d, KILN_EINPUT, "qgemm: act_dtype must be f32, f16 or bf16, got %s",
                             kiln_dtype_name(act_dtype));
    /* bf16-dot needs weight values exact in bf16: true of integer codes (q - z)
     * and fp8 values, not of f32 weights, which stay on f32 FMA */
    bool exact_bf16 = w->fmt != KILN_QF_NONE;
    l->family = (bf16 && act_dtype == KILN_BF16 && exact_bf16) ? KILN_KF_BF16_DOT
                                                              : KILN_KF_F32_FMA;
    return 0;
}

static const char *family_name(KilnKernelFamily f)
{
    switch (f) {
    case KILN_KF_I16_MADD: return "i16-madd";
    case KILN_KF_U4S8_MADDUBS: return "u4s8-maddubs";
    case KILN_KF_U8S8_VNNI: return "u8s8-vnni";
    case KILN_KF_F32_FMA: return "f32-fma";
    case KILN_KF_BF16_DOT: return "bf16-dot";
    }
    return "?";
}

/* What a CPU kernel cannot take, rejected before any choice is made. */
static int check_operands(const KilnTarget *t, const KilnType *wt, const KilnQuantSpec *act,
                          KilnDType out_dt, KilnDiag *d)
{
    if (!t || t->kind != KILN_TGT_CPU || !t->level)
        return kiln_diag_set(d, KILN_EINPUT, "CPU kernel: target '%s' is not a CPU target",
                             t ? t->name : "(none)");
    if (wt->rank != 2 || wt->dim[0] <= 0 || wt->dim[1] <= 0)
        return kiln_diag_set(d, KILN_EINPUT, "qgemm: weight must be a non-empty [N,K] matrix");
    const KilnQuantSpec *w = &wt->q;
    bool f32w = w->fmt == KILN_QF_NONE;
    if (f32w && wt->dt != KILN_F32)
        return kiln_diag_set(d, KILN_EINPUT,
                             "qgemm: weight must be quantized or plain f32, got %s",
                             kiln_dtype_name(wt->dt));
    if (!f32w && !kiln_qformat_is_int(w->fmt) && !kiln_qformat_is_fp8(w->fmt))
        return kiln_diag_set(d, KILN_EINPUT, "qgemm: weight format %s has no CPU kernel",
                             kiln_qformat_name(w->fmt));
    if (!f32w && w->gran != KILN_GRAN_TENSOR && w->gran != KILN_GRAN_CHANNEL && w->gran != KILN_GRAN_GROUP)
        return kiln_diag_set(d, KILN_EINPUT,
                             "qgemm: weight granularity %s not supported by CPU kernels "
                             "(pick_layout resolves auto)", kiln_gran_name(w->gran));
    if (act && act->gran != KILN_GRAN_TENSOR && act->gran != KILN_GRAN_TOKEN)
        return kiln_diag_set(d, KILN_EINPUT, "qgemm: activation granularity %s not supported",
                             kiln_gran_name(act->gran));
    if (act && !act->dynamic && !(act->scale > 0))
        return kiln_diag_set(d, KILN_EINPUT,
                             "qgemm: static activation quantization needs a calibrated scale > 0");
    if (out_dt != KILN_F32 && out_dt != KILN_F16 && out_dt != KILN_BF16)
        return kiln_diag_set(d, KILN_EINPUT, "qgemm: output dtype must be f32, f16 or bf16");
    return 0;
}

static void set_name(KilnLayout *l, const char *isa)
{
    snprintf(l->name, sizeof l->name, "%s-%s%s", isa, family_name(l->family),
             l->subnormal_decode ? "-subnormal" : "");
}

/* The chosen family's name, register tile and scale groups. */
static void set_tile(const KilnTarget *t, const KilnType *wt, bool avx512, KilnLayout *l)
{
    const KilnQuantSpec *w = &wt->q;
    /* int4/fp8 weights read from their bits as f32 subnormals only where the core
     * does not trap on them (ir/target.h KILN_TUNE_SUBNORMAL_FREE; layout.h) */
    l->wspec = *w;
    l->subnormal_decode = (t->tune & KILN_TUNE_SUBNORMAL_FREE) &&
                          ((l->family == KILN_KF_F32_FMA && w->fmt == KILN_QF_INT4) ||
                           ((l->family == KILN_KF_F32_FMA || l->family == KILN_KF_BF16_DOT) &&
                            kiln_qformat_is_fp8(w->fmt)));
    set_name(l, t->level);
    snprintf(l->isa, sizeof l->isa, "%s", t->level);
    l->sw_prefetch = !(t->tune & KILN_TUNE_HUGEPAGE_WEIGHTS);
    l->pf_ahead = t->tune & KILN_TUNE_FAR_PREFETCH ? KILN_PF_AHEAD_FAR : KILN_PF_AHEAD;
    l->pf_l2 = (t->tune & KILN_TUNE_FAR_PREFETCH) != 0;
    l->N = wt->dim[0];
    l->K = wt->dim[1];
    l->VL = avx512 ? 16 : 8;
    l->NR = 2 * l->VL;
    /* MR x NR/VL accumulators + NR/VL weight vectors + a broadcast fit the 16 (32)
     * vector registers; the rows were picked by measurement (docs/jit-aot.md).
     * u4s8-maddubs keeps an i16 and an i32 sum per accumulator: 3 rows (4 spilled
     * a third of them and ran ~10% slower). */
    l->MR = l->family == KILN_KF_U4S8_MADDUBS ? 3 : 4;
    l->KR = l->family == KILN_KF_U8S8_VNNI || l->family == KILN_KF_U4S8_MADDUBS ? 4
          : l->family == KILN_KF_F32_FMA ? 1 : 2;
    l->wdt = wt->dt;
    l->wbias = wt->dt == KILN_U8 ? 128 : wt->dt == KILN_U4 ? 8 : 0;
    l->group_mode = w->fmt != KILN_QF_NONE && w->gran == KILN_GRAN_GROUP;
    l->group = l->group_mode ? w->group : l->K;
}

/* gcd(group, K) (group > 0): what a packed block, an activation block of the planes
 * and a tile step must divide, so that none straddles a group, the ragged last one
 * included. */
static int64_t block_unit(const KilnLayout *l)
{
    int64_t unit = l->group;
    for (int64_t r = l->K % unit; r;) {
        int64_t m = unit % r;
        unit = r;
        r = m;
    }
    return unit;
}

/* KB, the k of a packed block, from the block unit that K and the group allow;
 * and whether int8 codes go as column words. */
static int set_block(const KilnTarget *t, const KilnType *wt, KilnLayout *l, KilnDiag *d)
{
    if (l->group <= 0)
        return kiln_diag_set(d, KILN_EINPUT, "qgemm: group %lld, expected > 0 (K = %lld)",
                             (long long)l->group, (long long)l->K);
    /* A group that does not divide K leaves a ragged last group of K mod group k
     * (docs/numerics.md). Blocks must not straddle groups, so the block unit must
     * divide the group and the tail alike, i.e. gcd(group, K). */
    int64_t tail = l->K % l->group, unit = block_unit(l);
    char rag[64] = "";
    if (tail)
        snprintf(rag, sizeof rag, ", ragged last group of %lld", (long long)tail);
    if (unit % l->KR != 0)
        return kiln_diag_set(d, KILN_EINPUT,
                             "qgemm: layout %s needs K and the group to be multiples of %d "
                             "(K = %lld, group = %lld%s)", l->name, l->KR, (long long)l->K,
                             (long long)l->group, rag);
    /* KB: k values per packed block, the k step of the micro-kernel's unrolled
     * inner iteration. int4 blocks are one 32-bit word per column holding 8 k
     * (nibble order per family, layout.h), so int4 needs group % 8 == 0. */
    bool int4 = kiln_dtype_bits(wt->dt) == 4;
    l->KB = unit % 8 == 0 ? 8 : unit % 4 == 0 && l->KR <= 4 ? 4
          : unit % 2 == 0 && l->KR <= 2 ? 2 : l->KR;
    if (int4 && l->KB != 8)
        return kiln_diag_set(d, KILN_EINPUT,
                             "qgemm: layout %s packs int4 weights 8 k to a 32-bit word: K and "
                             "the group must be multiples of 8 (K = %lld, group = %lld%s)",
                             l->name, (long long)l->K, (long long)l->group, rag);
    /* int8 weight-only codes as column words of 4 k, read in place (layout.h), when
     * K and the group allow; then also read as subnormals where that is free */
    l->int8_words = l->family == KILN_KF_F32_FMA && wt->q.fmt == KILN_QF_INT8 && unit % 4 == 0;
    if (l->int8_words) {
        l->KB = 4;
        l->subnormal_decode = (t->tune & KILN_TUNE_SUBNORMAL_FREE) != 0;
        set_name(l, t->level);
    }
    return 0;
}

/* The packed blob's sections (layout.h): header, codes, then scales, zero points
 * and column sums where the layout has them, each 64-byte aligned. */
static void set_sections(const KilnType *wt, const KilnQuantSpec *act, KilnLayout *l)
{
    const KilnQuantSpec *w = &wt->q;
    l->ngroups = (l->K + l->group - 1) / l->group;
    l->npanels = (l->N + l->NR - 1) / l->NR;
    int bits = kiln_dtype_bits(wt->dt);
    l->panel_code_bytes = (size_t)l->K * (size_t)l->NR * (size_t)bits / 8;
    size_t vec_bytes = (size_t)l->npanels * (size_t)l->ngroups * (size_t)l->NR * 4;
    l->codes_off = 64;
    size_t end = align64(l->codes_off + (size_t)l->npanels * l->panel_code_bytes);
    if (w->fmt != KILN_QF_NONE) { /* f32 weights carry no scales: scales_off stays 0 */
        l->scales_off = end;
        end = align64(end + vec_bytes);
    }
    if (!w->symmetric && kiln_qformat_is_int(w->fmt)) {
        l->zeros_off = end;
        end = align64(end + vec_bytes);
    }
    if (l->family == KILN_KF_U8S8_VNNI || (l->family == KILN_KF_U4S8_MADDUBS && !act->symmetric)) {
        l->wsum_off = end;
        end = align64(end + vec_bytes);
    }
    l->pack_bytes = end;
}

/* The activations as the kernel reads them: a prepared row per M row in scratch
 * (or x itself), then the row's scale, zero point and group sums. */
static void set_act_scratch(const KilnQuantSpec *act, KilnDType act_dtype, KilnLayout *l)
{
    l->weight_only = act == NULL;
    l->act_dtype = act ? KILN_F32 : act_dtype;
    if (act) {
        l->aspec = *act;
        l->adt = kiln_qformat_storage(act->fmt, act->symmetric);
    }
    bool int4 = kiln_dtype_bits(l->wdt) == 4;
    l->zero_by_sum = l->family == KILN_KF_F32_FMA && !act && (l->zeros_off || int4 || l->int8_words);
    size_t K = (size_t)l->K;
    switch (l->family) {
    case KILN_KF_I16_MADD: l->act_row_bytes = 2 * K; break;
    case KILN_KF_U4S8_MADDUBS:
    case KILN_KF_U8S8_VNNI: l->act_row_bytes = K; break;
    case KILN_KF_BF16_DOT: l->act_row_bytes = 2 * K; break;
    case KILN_KF_F32_FMA:
        l->act_row_bytes = (act || act_dtype != KILN_F32 || l->zero_by_sum || kiln_layout_prescaled(l)) ? 4 * K : 0;
        break;
    }
    l->meta_off = align64(l->act_row_bytes);
    size_t meta = act || l->zero_by_sum ? 8 + 4 * (size_t)l->ngroups : 0;
    if (l->act_planes && 16 * (size_t)l->nablk > meta) /* per block: 2^-sh as 2 factors, D01, D23 */
        meta = 16 * (size_t)l->nablk;
    l->scratch_per_row = l->meta_off + align64(meta);
    l->scratch_fixed = 0;
}

/* Decode rows on vpdpbusd with the activations in byte planes (act_planes,
 * layout.h): v4 levels (all have VNNI), weight-only word codes, and a block of at
 * least 16 k that divides K and the group. */
static void set_planes(bool avx512, bool weight_only, KilnLayout *l)
{
    l->act_planes = false;
    if (!avx512 || !weight_only || !kiln_layout_word_codes(l))
        return;
    int64_t unit = block_unit(l);
    for (int64_t b = 128; b >= 16; b /= 2)
        if (unit % b == 0 && b % l->KB == 0) {
            l->act_planes = true;
            l->planes_below_m = KILN_PLANES_BELOW_M;
            l->ablk = b;
            l->nablk = l->K / b;
            return;
        }
}

/* The blocked prefill path (f32-fma with quantized weights): its row tile, chunk
 * of blocks decoded at a time and the scratch for both. */
static void set_blocked(bool avx512, bool f32w, KilnLayout *l)
{
    l->blocked = l->family == KILN_KF_F32_FMA && !f32w;
    if (!l->blocked)
        return;
    /* 6 x 2 ymm (12 x 2 zmm) accumulators + 2 weight vectors + 1 broadcast */
    l->MRB = avx512 ? 12 : 6;
    /* a chunk is about 256 k: whole scale groups (two of 128), or 256 k when
     * the scale is per row/tensor. Shorter chunks cost more than a chunk
     * beyond L1 does (Zen 4, M=512: W8A16 with 128-k chunks ~10 % slower than
     * with 256, W4A16 at one group of 128 24 % slower than W8A16) */
    int64_t ck = l->K < 256 ? l->K : 256;
    l->CB = l->group_mode ? (l->group >= ck ? 1 : ck / l->group) * (l->group / l->KB)
                          : ck / l->KB;
    if (l->CB < 1)
        l->CB = 1;
    l->blocked_min_m = 8;
    l->cbuf_off = l->scratch_per_row;
    l->scratch_per_row += align64((size_t)l->NR * 4);
    l->scratch_fixed = (size_t)(l->CB * l->KB * l->NR) * 4;
}

int kiln_layout_make(const KilnTarget *t, const KilnType *wt, const KilnQuantSpec *act,
                     KilnDType act_dtype, bool has_bias, KilnEpilogue epi, KilnDType out_dt,
                     KilnLayout *l, KilnDiag *d)
{
    memset(l, 0, sizeof *l);
    int rc = check_operands(t, wt, act, out_dt, d);
    if (rc)
        return rc;
    bool avx512 = kiln_level_is_v4(t->level);
    rc = choose_family(avx512, kiln_level_has_bf16(t->level), &wt->q, act, act_dtype, l, d);
    if (rc)
        return rc;
    set_tile(t, wt, avx512, l);
    rc = set_block(t, wt, l, d);
    if (rc)
        return rc;
    set_sections(wt, act, l);
    set_planes(avx512, act == NULL, l);
    set_act_scratch(act, act_dtype, l);
    set_blocked(avx512, wt->q.fmt == KILN_QF_NONE, l);
    l->has_bias = has_bias;
    l->epilogue = epi;
    l->out_dt = out_dt;
    return 0;
}

bool kiln_layout_bf16_tiles(const KilnLayout *l)
{
    bool fp8_fp8 = l->family == KILN_KF_F32_FMA && !l->weight_only &&
                   kiln_qformat_is_fp8(l->aspec.fmt) && kiln_layout_fp8_weights(l);
    return strcmp(l->isa, "amx") == 0 && l->NR == 32 &&
           (l->family == KILN_KF_BF16_DOT || fp8_fp8);
}

/* fp8 x fp8 for bf16 tiles: bf16-dot's blob (KR = 2) and activation rows (bf16
 * pairs of the fp8 values, s_a in the row's meta), no blocked path. */
static int fp8_to_bf16_dot(KilnLayout *l, KilnDiag *d)
{
    KilnType wt = {.dt = l->wdt, .rank = 2, .dim = {l->N, l->K}, .q = l->wspec};
    KilnQuantSpec act = l->aspec;
    KilnTarget t = {.level = l->isa}; /* set_block reads the target for int8 words only */
    l->family = KILN_KF_BF16_DOT;
    l->KR = 2;
    set_name(l, l->isa);
    int rc = set_block(&t, &wt, l, d);
    if (rc)
        return rc;
    l->scales_off = l->zeros_off = l->wsum_off = 0;
    set_sections(&wt, &act, l);
    set_act_scratch(&act, KILN_F32, l);
    l->blocked = false;
    l->MRB = 0;
    l->CB = l->blocked_min_m = 0;
    l->cbuf_off = 0;
    return 0;
}

/* What both tile layouts set: tiles from min_m rows (through the model if asked), 16-row
 * tiles, and KT, the k of one tile step: the largest power of two up to kt_max (the bytes
 * of a 64-byte tile row) dividing unit, so every tile of the kernel has one shape. */
static void set_tiles(KilnLayout *l, int64_t min_m, bool model, int64_t unit, int kt_max,
                      const char *name)
{
    l->tiles = true;
    l->tiles_model = model;
    l->tiles_min_m = min_m;
    l->TM = 16;
    l->KT = kt_max;
    while (l->KT > 1 && unit % l->KT)
        l->KT /= 2;
    snprintf(l->name, sizeof l->name, "%s", name);
}

/* The amx-bf16-tile layout (layout.h): the tile step KT, the pad rows and the
 * dequantized panel in scratch_fixed. */
static int use_bf16_tiles(KilnLayout *l, int64_t min_m, bool model, KilnDiag *d)
{
    int64_t unit = block_unit(l);
    if (unit % 2)
        return kiln_diag_set(d, KILN_EINPUT,
                             "qgemm: bf16 AMX tiles take k in pairs: K and the group must be "
                             "even (K = %lld, group = %lld)", (long long)l->K, (long long)l->group);
    int rc = l->family == KILN_KF_F32_FMA ? fp8_to_bf16_dot(l, d) : 0;
    if (rc)
        return rc;
    set_tiles(l, min_m, model, unit, 32, "amx-bf16-tile");
    /* 4 panels a pass: at K = 4096 the dequantized panels (1 MiB) and a block's rows
     * (256 KiB) stay in a Sapphire Rapids core's 2 MiB L2 */
    l->TP = 4;
    l->tpanel_off = align64((size_t)(l->TM - 1) * l->scratch_per_row);
    l->scratch_fixed = l->tpanel_off + (size_t)l->TP * (size_t)l->K * (size_t)l->NR * 2;
    return 0;
}

int kiln_layout_use_tiles(KilnLayout *l, int64_t min_m, bool model, KilnDiag *d)
{
    if (min_m < 1)
        return kiln_diag_set(d, KILN_EINPUT, "qgemm: amx_min_m must be >= 1, got %lld",
                             (long long)min_m);
    if (kiln_layout_bf16_tiles(l))
        return use_bf16_tiles(l, min_m, model, d);
    if (l->family != KILN_KF_U8S8_VNNI || strcmp(l->isa, "amx") != 0 || l->NR != 32)
        return kiln_diag_set(d, KILN_EINPUT,
                             "qgemm: AMX tiles need int8 activations with int8 or int4 weights, "
                             "bf16 activations with quantized weights, or fp8 activations with "
                             "fp8 weights, on the amx target (layout %s)", l->name);
    set_tiles(l, min_m, model, block_unit(l), 64, "amx-u8s8-tile");
    /* the TM - 1 pad rows, then (int4) the panel unpacked to bytes, K/4 rows of NR*4 */
    l->scratch_fixed = (size_t)(l->TM - 1) * l->scratch_per_row +
                       (kiln_dtype_bits(l->wdt) == 4 ? (size_t)l->K * (size_t)l->NR : 0);
    return 0;
}

/* The qgemm's tile choice (`amx_min_m`, pick_layout) and the function's `tiles`. */
static int layout_tiles(const KilnInst *q, const KilnFunc *f, KilnLayout *out, KilnDiag *d)
{
    const KilnAttr *mm = kiln_get(q, "amx_min_m");
    if (!mm)
        return 0;
    if (mm->kind != KILN_ATTR_INT)
        return kiln_diag_set(d, KILN_EINPUT, "qgemm: amx_min_m must be an integer");
    const KilnAttr *ta = kiln_fget(f, "tiles");
    bool model = ta && ta->s && strcmp(ta->s, "model") == 0;
    if (ta && !model)
        return kiln_diag_set(d, KILN_EINPUT, "function '%s': tiles = \"%s\" (only \"model\")",
                             f->name ? f->name : "?", ta->s ? ta->s : "?");
    return kiln_layout_use_tiles(out, mm->i, model, d);
}

int kiln_layout_for(const KilnInst *q, const KilnFunc *f, KilnLayout *out, KilnDiag *d)
{
    if (!q || q->op != KILN_OP_QGEMM || q->nops < 2)
        return kiln_diag_set(d, KILN_EINPUT, "CPU kernel: function '%s' has no qgemm",
                             f && f->name ? f->name : "?");
    const KilnAttr *ta = kiln_fget(f, "target");
    const char *tname = ta && (ta->kind == KILN_ATTR_STR || ta->kind == KILN_ATTR_IDENT) ? ta->s : NULL;
    if (!tname)
        return kiln_diag_set(d, KILN_EINPUT, "CPU kernel: function has no `target` attribute");
    KilnTarget t;
    int trc = kiln_target_lookup(tname, &t, d);
    if (trc)
        return trc;
    const KilnAttr *tu = kiln_fget(f, "tune");
    if (tu && (tu->kind == KILN_ATTR_STR || tu->kind == KILN_ATTR_IDENT) &&
        kiln_tune_parse(tu->s, &t.tune) != 0)
        return kiln_diag_set(d, KILN_EINPUT, "function '%s': unknown tune \"%s\" (valid: "
                             "subnormal-free, or a comma-separated list of traits)",
                             f->name ? f->name : "?", tu->s);
    const KilnType *wt = &f->values[q->ops[1]].type;
    const KilnAttr *aa = kiln_get(q, "act");
    const KilnQuantSpec *act = aa && aa->kind == KILN_ATTR_SPEC && aa->q.fmt != KILN_QF_NONE
                                   ? &aa->q : NULL;
    KilnDType adt = KILN_F32;
    const KilnAttr *ad = kiln_get(q, "act_dtype");
    if (ad && ad->s && kiln_dtype_parse(ad->s, strlen(ad->s), &adt) != 0)
        return kiln_diag_set(d, KILN_EINPUT, "qgemm: unknown act_dtype '%s'", ad->s);
    if (!act && !ad)
        return kiln_diag_set(d, KILN_EINPUT, "qgemm: weight-only qgemm needs act_dtype");
    KilnEpilogue epi = KILN_EPI_NONE;
    const KilnAttr *ea = kiln_get(q, "epilogue");
    if (ea && ea->s) {
        if (strcmp(ea->s, "silu") == 0)
            epi = KILN_EPI_SILU;
        else if (strcmp(ea->s, "gelu") == 0)
            epi = KILN_EPI_GELU;
        else if (strcmp(ea->s, "none") != 0)
            return kiln_diag_set(d, KILN_EINPUT, "qgemm: unknown epilogue '%s'", ea->s);
    }
    const KilnType *xt = &f->values[q->ops[0]].type;
    const KilnType *yt = &f->values[q->result].type;
    if (xt->rank != 2 || xt->dim[1] != wt->dim[1])
        return kiln_diag_set(d, KILN_EINPUT, "qgemm: activation K does not match weight K");
    /* with outliers the kernel is the int8 part alone: no bias, no activation, f32 out
     * (the f32 columns and the epilogue follow it, ir/outliers.h) */
    bool side = kiln_qgemm_outlier_w(q) >= 0;
    int rc = kiln_layout_make(&t, wt, act, adt, !side && kiln_qgemm_bias(q) >= 0,
                              side ? KILN_EPI_NONE : epi, side ? KILN_F32 : yt->dt, out, d);
    if (!rc)
        rc = layout_tiles(q, f, out, d);
    if (rc)
        return rc;
    /* pick_layout writes the name this function computes; a different one means the
     * IR was planned for another kernel (hand-edited, or a stale cache entry) */
    const KilnAttr *la = kiln_get(q, "layout");
    if (la && la->kind == KILN_ATTR_STR && la->s && strcmp(la->s, out->name) != 0)
        return kiln_diag_set(d, KILN_EINPUT,
                             "qgemm layout '%s' but the code generator makes '%s' for this target",
                             la->s, out->name);
    return 0;
}

int kiln_layout_row_unit(const KilnLayout *l)
{
    if (!l->weight_only && l->aspec.dynamic && l->aspec.gran == KILN_GRAN_TENSOR)
        return 0;
    int unit = l->tiles ? l->TM : l->MR; /* TM = 16 is a multiple of MR = 4 */
    if (l->blocked)
        for (int u = unit; ; u += l->MR)
            if (u % l->MRB == 0) {
                unit = u;
                break;
            }
    return unit;
}

int64_t kiln_layout_amx_m_block(const KilnLayout *l)
{
    int64_t pair = 2 * (int64_t)l->TM;
    int64_t rows = (int64_t)(KILN_AMX_A_BLOCK_BYTES / (l->scratch_per_row ? l->scratch_per_row : 1));
    rows = rows / pair * pair;
    return rows < pair ? pair : rows;
}

size_t kiln_layout_scratch_bytes(const KilnLayout *l, int64_t M)
{
    /* the tile path's pad rows and panel buffer only where the tiles run: a decode
     * call of a tile layout needs what the vnni rows need */
    bool fixed = !l->tiles || M >= l->tiles_min_m;
    return l->scratch_per_row * (size_t)(M > 0 ? M : 0) + (fixed ? l->scratch_fixed : 0);
}

int kiln_layout_offset_magnitudes(const KilnLayout *l, const KilnTensor *wq, float *out,
                                  KilnDiag *d)
{
    size_t n = (size_t)(l->N * l->K);
    if (!l->zero_by_sum) {
        memset(out, 0, n * sizeof *out);
        return 0;
    }
    size_t cb = kiln_row_bytes(l->wdt, l->K) * (size_t)l->N;
    uint8_t *low = malloc(cb);
    if (!low)
        return kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
    memset(low, l->wdt == KILN_I8 ? 0x80 : l->wdt == KILN_I4 ? 0x88 : 0, cb);
    int rc = kiln_dequantize_matrix(&l->wspec, low, wq->scales, wq->zeros, l->N, l->K, out, d);
    free(low);
    for (size_t i = 0; !rc && i < n; i++)
        out[i] = fabsf(out[i]);
    return rc;
}

static int64_t scale_index(const KilnLayout *l, int64_t n, int64_t g)
{
    switch (l->wspec.gran) {
    case KILN_GRAN_TENSOR: return 0;
    case KILN_GRAN_CHANNEL: return n;
    default: return n * l->ngroups + g;
    }
}

/* One weight row as stored codes c = q - wbias (one byte each; fp8 bytes as is). */
static void unpack_row(const KilnLayout *l, const uint8_t *row, int8_t *out)
{
    int64_t K = l->K;
    switch (l->wdt) {
    case KILN_U4:
    case KILN_I4: {
        /* c = (nibble ^ x) - 8: u4 - 8 (x = 0), or the sign-extended i4 (x = 8);
         * branch-free, so the loop vectorises */
        int x = l->wdt == KILN_I4 ? 8 : 0;
        for (int64_t k = 0; k + 1 < K; k += 2) {
            out[k] = (int8_t)(((row[k >> 1] & 0xF) ^ x) - 8);
            out[k + 1] = (int8_t)(((row[k >> 1] >> 4) ^ x) - 8);
        }
        if (K & 1)
            out[K - 1] = (int8_t)(kiln_code_get(l->wdt, row, K - 1) - l->wbias);
        break;
    }
    case KILN_U8:
        for (int64_t k = 0; k < K; k++)
            out[k] = (int8_t)(row[k] ^ 0x80); /* q - 128 */
        break;
    default:
        memcpy(out, row, (size_t)K);
        break;
    }
}

/* f32 weights: panel p holds w[p*NR + nn][k] at k*NR + nn (KR = 1), columns past N 0.
 * w holds the rows of panels [p0, p1). */
static void pack_f32(const KilnLayout *l, const float *w, int64_t p0, int64_t p1, uint8_t *b)
{
    for (int64_t p = p0; p < p1; p++) {
        uint8_t *pc = b + l->codes_off + (size_t)p * l->panel_code_bytes;
        for (int64_t nn = 0; nn < l->NR && p * l->NR + nn < l->N; nn++) {
            const float *row = w + (size_t)((p - p0) * l->NR + nn) * (size_t)l->K;
            for (int64_t k = 0; k < l->K; k++) /* memcpy: the blob may be unaligned */
                memcpy(pc + (size_t)(k * l->NR + nn) * 4, &row[k], 4);
        }
    }
}

/* Where the section starting at off ends, padding included: the next section's
 * start, or the blob's end. */
static size_t section_end(const KilnLayout *l, size_t off)
{
    size_t end = l->pack_bytes, next[3] = {l->scales_off, l->zeros_off, l->wsum_off};
    for (int i = 0; i < 3; i++)
        if (next[i] > off && next[i] < end)
            end = next[i];
    return end;
}

/* Zero panels [p0, p1) of the section at off (per_panel bytes each), and its
 * padding when p1 is the last panel: the padding columns and alignment gaps of a
 * blob packed in ranges are 0 as in one packed whole. */
static void clear_panels(const KilnLayout *l, uint8_t *b, size_t off, size_t per_panel,
                         int64_t p0, int64_t p1)
{
    if (!off)
        return;
    size_t lo = off + (size_t)p0 * per_panel;
    size_t hi = p1 == l->npanels ? section_end(l, off) : off + (size_t)p1 * per_panel;
    memset(b + lo, 0, hi - lo);
}

/* A column's 8 k as one 32-bit word, nibble k at bit S_k (layout.h: KR 1: 4k; KR 2:
 * 4*(4*(k&1) + k/2); KR 4: 4*(2*(k&3) + k/4)), add = 8 for unsigned nibbles. The
 * shifts are constants per order, so each word is a handful of register ops. */
#define NIB(c, k, add, sh) ((uint32_t)(((c)[k] + (add)) & 0xF) << (sh))
#define WORD(c, add, s0, s1, s2, s3, s4, s5, s6, s7)                                       \
    (NIB(c, 0, add, s0) | NIB(c, 1, add, s1) | NIB(c, 2, add, s2) | NIB(c, 3, add, s3) |   \
     NIB(c, 4, add, s4) | NIB(c, 5, add, s5) | NIB(c, 6, add, s6) | NIB(c, 7, add, s7))

/* One panel's int4 words from its unpacked rows (codes, row stride KS). */
static void pack_int4_panel(const int8_t *codes, int64_t KS, int64_t K, int64_t NR, int64_t live,
                            int add, int KR, uint8_t *pc)
{
    for (int64_t kb = 0; kb < K / 8; kb++)
        for (int64_t nn = 0; nn < live; nn++) {
            const int8_t *c = codes + nn * KS + kb * 8;
            uint32_t w = KR == 1   ? WORD(c, add, 0, 4, 8, 12, 16, 20, 24, 28)
                         : KR == 2 ? WORD(c, add, 0, 16, 4, 20, 8, 24, 12, 28)
                                   : WORD(c, add, 0, 8, 16, 24, 4, 12, 20, 28);
            memcpy(pc + (size_t)(kb * NR + nn) * 4, &w, 4);
        }
}

int kiln_prepack(const KilnLayout *l, const KilnTensor *wq, void *blob, KilnDiag *d)
{
    return kiln_prepack_panels(l, wq, 0, l->npanels, blob, d);
}

int kiln_prepack_panels(const KilnLayout *l, const KilnTensor *wq, int64_t p0, int64_t p1,
                        void *blob, KilnDiag *d)
{
    bool f32w = l->wdt == KILN_F32;
    if (p0 < 0 || p1 <= p0 || p1 > l->npanels)
        return kiln_diag_set(d, KILN_EINPUT, "prepack: panels [%lld, %lld) outside [0, %lld)",
                             (long long)p0, (long long)p1, (long long)l->npanels);
    int64_t NR = l->NR, KR = l->KR, n0 = p0 * NR, n1 = p1 * NR < l->N ? p1 * NR : l->N;
    if (!wq || !wq->data || (!f32w && !wq->scales) || wq->type.dt != l->wdt ||
        (wq->type.q.fmt == KILN_QF_NONE) != f32w || wq->type.rank != 2 ||
        wq->type.dim[0] != n1 - n0 || wq->type.dim[1] != l->K)
        return kiln_diag_set(d, KILN_EINPUT,
                             "prepack: weight tensor does not match layout %s (%s[%lld,%lld])",
                             l->name, kiln_dtype_name(l->wdt), (long long)(n1 - n0),
                             (long long)l->K);
    if (l->zeros_off && !wq->zeros)
        return kiln_diag_set(d, KILN_EINPUT, "prepack: asymmetric weight without zero points");
    uint8_t *b = blob;
    if (p0 == 0) {
        memset(b, 0, l->codes_off);
        memcpy(b, "KILNPK2", 8);
        int64_t hdr[4] = {l->N, l->K, l->NR, l->KR};
        memcpy(b + 8, hdr, sizeof hdr);
    }
    size_t vec = (size_t)(l->ngroups * NR) * 4;
    clear_panels(l, b, l->codes_off, l->panel_code_bytes, p0, p1);
    clear_panels(l, b, l->scales_off, vec, p0, p1);
    clear_panels(l, b, l->zeros_off, vec, p0, p1);
    clear_panels(l, b, l->wsum_off, vec, p0, p1);
    if (f32w) {
        pack_f32(l, wq->data, p0, p1, b);
        return 0;
    }
    size_t row_bytes = kiln_row_bytes(l->wdt, l->K);
    bool int4 = kiln_dtype_bits(l->wdt) == 4, unsig = kiln_layout_u4_unsigned(l);
    /* int8 words (layout.h): VNNI's [n][4] byte order, stored unsigned c + 128 */
    int64_t KS8 = l->int8_words ? 4 : KR;
    uint8_t flip = l->int8_words ? 0x80 : 0;
    /* one panel at a time: its NR rows unpacked to bytes, then the panel written
     * front to back (sequential stores; the unpacked rows stay in L2) */
    int64_t K = l->K, KS = K + 64; /* row stride off 4 KB multiples: no set conflicts */
    int8_t *codes = malloc((size_t)(NR * KS));
    if (!codes)
        return kiln_diag_set(d, KILN_EINTERNAL, "prepack: out of memory");
    for (int64_t p = p0; p < p1; p++) {
        uint8_t *pc = b + l->codes_off + (size_t)p * l->panel_code_bytes;
        int64_t live = l->N - p * NR < NR ? l->N - p * NR : NR; /* padding columns stay 0 */
        for (int64_t nn = 0; nn < live; nn++)
            unpack_row(l, (const uint8_t *)wq->data + (size_t)(p * NR + nn - n0) * row_bytes,
                       codes + nn * KS);
        if (int4) {
            pack_int4_panel(codes, KS, K, NR, live, unsig ? 8 : 0, (int)KR, pc);
        } else {
            for (int64_t kk = 0; kk < K / KS8; kk++)
                for (int64_t nn = 0; nn < live; nn++)
                    for (int64_t r = 0; r < KS8; r++)
                        pc[(kk * NR + nn) * KS8 + r] = (uint8_t)codes[nn * KS + kk * KS8 + r] ^ flip;
        }
    }
    free(codes);
    for (int64_t p = p0; p < p1; p++)
        for (int64_t g = 0; g < l->ngroups; g++)
            for (int64_t nn = 0; nn < NR; nn++) {
                int64_t n = p * NR + nn;
                if (n >= l->N)
                    continue;
                size_t at = ((size_t)(p * l->ngroups + g) * (size_t)NR + (size_t)nn) * 4;
                int64_t si = scale_index(l, n - n0, g); /* wq's rows start at n0 */
                if (si >= wq->nscales)
                    return kiln_diag_set(d, KILN_EINPUT, "prepack: weight has %lld scales, "
                                         "layout needs index %lld", (long long)wq->nscales,
                                         (long long)si);
                memcpy(b + l->scales_off + at, &wq->scales[si], 4);
                if (l->zeros_off) {
                    int32_t z = wq->zeros[si] - l->wbias;
                    memcpy(b + l->zeros_off + at, &z, 4);
                }
                if (l->wsum_off) {
                    const uint8_t *row = (const uint8_t *)wq->data + (size_t)(n - n0) * row_bytes;
                    int32_t s = 0;
                    int64_t kend = (g + 1) * l->group < l->K ? (g + 1) * l->group : l->K;
                    for (int64_t k = g * l->group; k < kend; k++) /* ragged last group */
                        s += kiln_code_get(l->wdt, row, k) - l->wbias + (unsig && int4 ? 8 : 0);
                    memcpy(b + l->wsum_off + at, &s, 4);
                }
            }
    return 0;
}
