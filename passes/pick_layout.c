/* passes/pick_layout.c — per target: resolve scale granularity "auto", choose each
 * qgemm's kernel layout and write it with the human reason (`layout`, `why`). CPU
 * layout names come from ir/layout.c (the code generator's own choice).
 * The table and its reasoning are in docs/targets.md; keep the two in step. */
#include <stdarg.h>
#include <string.h>

#include "ir/gran_cost.h"
#include "ir/layout.h"
#include "ir/layout_gpu.h"
#include "ir/numerics.h"
#include "passes/passes.h"

typedef struct {
    KilnFunc *f;
    KilnInst *qg;
    const KilnTarget *t;
    const char *layer; /* function name, for messages */
    const char *yname;
    const KilnType *wt; /* resolved weight type */
    bool f32w;          /* plain f32 weight: a layer the recipe leaves unquantized */
    bool has_act;
    KilnQuantSpec act;
    KilnDType act_dtype;
    char layout[64];
    char why[1536];
    char note[512]; /* how auto was resolved, appended to why */
} Pick;


static void append(char *buf, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void append(char *buf, size_t n, const char *fmt, ...)
{
    size_t len = strlen(buf);
    if (len + 1 >= n)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf + len, n - len, fmt, ap);
    va_end(ap);
}

/* ---------------------------------------------------------------- granularity */

/* Resolve the weight spec of operand 1 (through any prepacks) and write it back to
 * every value on the way, so types stay equal along the chain. */
static int resolve_weight(Pick *p, KilnDiag *d)
{
    KilnFunc *f = p->f;
    int chain[8], n = 0;
    for (int v = p->qg->ops[1]; v >= 0 && n < 8;) {
        chain[n++] = v;
        KilnInst *di = kiln_def(f, v);
        v = di && di->op == KILN_OP_PREPACK ? di->ops[0] : -1;
    }
    KilnType wt = f->values[chain[0]].type;
    if (wt.rank == 2 && wt.q.fmt == KILN_QF_NONE && wt.dt == KILN_F32) {
        p->f32w = true; /* nothing to resolve: no scales */
        p->wt = &f->values[chain[0]].type;
        return KILN_OK;
    }
    if (wt.q.fmt == KILN_QF_NONE || wt.rank != 2)
        return kiln_diag_set(d, KILN_EINPUT,
                             "layer \"%s\": %%%s = qgemm: operand 2 must be a quantized or f32 "
                             "weight [N,K]",
                             p->layer, p->yname);
    int64_t K = wt.dim[1];
    if (wt.q.gran == KILN_GRAN_AUTO) {
        /* the granularity model (ir/gran_cost.c) weighs each candidate on the unit this
         * qgemm's activations put it on */
        const KilnAttr *a = kiln_get(p->qg, "act"), *ad = kiln_get(p->qg, "act_dtype");
        KilnQFormat afmt = a && a->kind == KILN_ATTR_SPEC ? a->q.fmt : KILN_QF_NONE;
        KilnDType adt = KILN_F32;
        if (ad && ad->kind == KILN_ATTR_IDENT && ad->s)
            kiln_dtype_parse(ad->s, strlen(ad->s), &adt);
        if (kiln_gran_resolve_weight(p->t, afmt, adt, &wt.q, K, p->note, sizeof p->note))
            return kiln_diag_set(d, KILN_EINPUT,
                                 "layer \"%s\": int4 weights with per = auto need a group size "
                                 "of 128, 64 or 32 dividing K, but K=%lld (target %s); give the "
                                 "rule per = \"channel\" or a group that divides K",
                                 p->layer, (long long)K, p->t->name);
        for (int i = 0; i < n; i++)
            f->values[chain[i]].type.q = wt.q;
    }
    if (wt.q.gran == KILN_GRAN_GROUP && wt.q.group <= 0) /* not dividing K is fine: ragged tail */
        return kiln_diag_set(d, KILN_EINPUT,
                             "layer \"%s\": weight group=%d, expected > 0 (K=%lld, N=%lld, "
                             "target %s)",
                             p->layer, (int)wt.q.group, (long long)K, (long long)wt.dim[0],
                             p->t->name);
    if (wt.q.gran == KILN_GRAN_TOKEN)
        return kiln_diag_set(d, KILN_EINPUT,
                             "layer \"%s\": weight scales cannot be per token (use channel, "
                             "group or tensor)",
                             p->layer);
    p->wt = &f->values[chain[0]].type;
    return KILN_OK;
}

static int read_act(Pick *p, KilnDiag *d)
{
    const KilnAttr *a = kiln_get(p->qg, "act");
    const KilnAttr *ad = kiln_get(p->qg, "act_dtype");
    if (a && a->kind == KILN_ATTR_SPEC && p->f32w)
        return kiln_diag_set(d, KILN_EINPUT,
                             "layer \"%s\": %%%s = qgemm: f32 weights take act_dtype = f32, f16 "
                             "or bf16, not quantized activations",
                             p->layer, p->yname);
    if (a && a->kind == KILN_ATTR_SPEC) {
        p->has_act = true;
        p->act = a->q;
        if (p->act.gran == KILN_GRAN_AUTO) {
            char why[256];
            kiln_gran_resolve_act(p->t, &p->act, why, sizeof why);
            kiln_set_spec(p->f, p->qg, "act", &p->act);
            append(p->note, sizeof p->note, "%s%s", p->note[0] ? "; " : "", why);
        }
        bool ok = p->act.fmt == KILN_QF_INT8 ? !kiln_qformat_is_fp8(p->wt->q.fmt)
                  : kiln_qformat_is_fp8(p->act.fmt)       ? kiln_qformat_is_fp8(p->wt->q.fmt)
                                             : false;
        if (!ok)
            return kiln_diag_set(d, KILN_EINPUT,
                                 "layer \"%s\": %%%s = qgemm: %s activations with %s weights "
                                 "have no kernel (int8 acts need int8/int4 weights, fp8 acts "
                                 "need fp8 weights)",
                                 p->layer, p->yname, kiln_qformat_name(p->act.fmt),
                                 kiln_qformat_name(p->wt->q.fmt));
        return KILN_OK;
    }
    KilnDType dt;
    if (!ad || ad->kind != KILN_ATTR_IDENT || !ad->s ||
        kiln_dtype_parse(ad->s, strlen(ad->s), &dt) != 0 ||
        (dt != KILN_F32 && dt != KILN_F16 && dt != KILN_BF16))
        return kiln_diag_set(d, KILN_EINPUT,
                             "layer \"%s\": %%%s = qgemm: weight-only qgemm needs act_dtype = "
                             "f32, f16 or bf16",
                             p->layer, p->yname);
    p->act_dtype = dt;
    return KILN_OK;
}

/* ---------------------------------------------------------------- reasons */

static const char *bits_name(const KilnQuantSpec *q)
{
    switch (q->fmt) {
    case KILN_QF_INT8: return "int8";
    case KILN_QF_INT4: return "int4";
    case KILN_QF_FP8_E4M3: return "fp8 e4m3";
    case KILN_QF_FP8_E5M2: return "fp8 e5m2";
    default: return "?";
    }
}

static int storage_bits(const KilnQuantSpec *q)
{
    return kiln_dtype_bits(kiln_qformat_storage(q->fmt, q->symmetric));
}

/* Where the scales go, e.g. "per-token act scales and per-channel weight scales
 * applied in the epilogue". */
static void scales_phrase(Pick *p, bool integer)
{
    char act[64] = "";
    if (p->has_act)
        snprintf(act, sizeof act, "%s act scale%s",
                 p->act.gran == KILN_GRAN_TOKEN ? "per-token"
                 : p->act.dynamic               ? "per-tensor dynamic"
                                                : "static per-tensor",
                 p->act.gran == KILN_GRAN_TOKEN ? "s" : "");
    const KilnQuantSpec *w = &p->wt->q;
    char *why = p->why;
    if (w->gran == KILN_GRAN_GROUP) {
        if (act[0])
            append(why, sizeof p->why, "; %s applied in the epilogue", act);
        append(why, sizeof p->why,
               "; group=%d weight scales (stored next to the packed codes) applied to each "
               "group's %s partial sum",
               (int)w->group, integer ? "exact int32" : "f32");
        if (w->group > 0 && p->wt->dim[1] % w->group)
            append(why, sizeof p->why, " (K=%lld: the last group is ragged, %lld k with its own scale)",
                   (long long)p->wt->dim[1], (long long)(p->wt->dim[1] % w->group));
    } else {
        append(why, sizeof p->why, "; %s%s%s weight scale%s applied in the epilogue", act,
               act[0] ? " and " : "", w->gran == KILN_GRAN_CHANNEL ? "per-channel" : "per-tensor",
               w->gran == KILN_GRAN_CHANNEL ? "s" : "");
    }
}

static void set_layout(Pick *p, const char *fmt, const char *prefix)
{
    snprintf(p->layout, sizeof p->layout, fmt, prefix);
}

/* sm_90a: the GEMM (M above the gemv range) runs on warpgroup MMA (codegen/ptx/
 * qgemm_wgmma.cu; ir/layout_gpu.c kiln_gpu_layout_set_arch decides the same). */
static bool wgmma_target(const Pick *p)
{
    return p->t->kind == KILN_TGT_CUDA && p->t->sm == 90 && (p->t->isa & KILN_ISA_CUDA_ARCH_SPECIFIC);
}
#define WGMMA_HOW "operands in shared memory in the no-swizzle core-matrix layout, fed by cp.async " \
                  "with 4 k slices in flight, one warpgroup per 64x64 tile (no TMA, no warp " \
                  "specialization); M <= 8 runs the CUDA-core gemv"

/* int8 activations x int8/int4 weights */
static void pick_int(Pick *p, const char *sm)
{
    const KilnQuantSpec *w = &p->wt->q;
    bool asym_w = !w->symmetric, asym_a = !p->act.symmetric;
    const char *t = p->t->name;
    switch (p->t->kind) {
    case KILN_TGT_INTERP:
        set_layout(p, "reference", "");
        snprintf(p->why, sizeof p->why,
                 "interp: scalar reference, exact integer sums of (q_a-z_a)(q_w-z_w) then scaled");
        return;
    case KILN_TGT_CPU: return; /* pick_cpu */
    case KILN_TGT_CUDA:
        if (wgmma_target(p)) {
            set_layout(p, "%s-wgmma-s8", sm);
            snprintf(p->why, sizeof p->why,
                     "%s: warpgroup MMA wgmma.mma_async.m64n64k32 s8 x s8 -> exact s32, " WGMMA_HOW "%s%s", t,
                     w->fmt == KILN_QF_INT4 ? "; int4 weights unpacked to s8 in shared memory" : "",
                     asym_a || asym_w ? "; zero points corrected with row sums in the epilogue" : "");
            break;
        }
        set_layout(p, "%s-mma-s8", sm);
        snprintf(p->why, sizeof p->why,
                 "%s: tensor cores mma.sync.m16n8k32 s8 x s8 -> exact s32%s%s", t,
                 w->fmt == KILN_QF_INT4 ? "; int4 weights unpacked to s8 in registers" : "",
                 asym_a || asym_w ? "; zero points corrected with row sums in the epilogue" : "");
        break;
    }
    scales_phrase(p, true);
}

/* act = {...} becomes act_dtype = f16 in the same place, so the printed qgemm reads
 * as before with only that attribute changed. */
static void replace_act_with_f16(Pick *p)
{
    kiln_pass_unset(p->qg, "act_dtype");
    for (int i = 0; i < p->qg->nattrs; i++) {
        KilnAttr *a = &p->qg->attrs[i];
        if (strcmp(a->key, "act") == 0) {
            memset(a, 0, sizeof *a);
            a->key = kiln_arena_strdup(p->f->mod->arena, "act_dtype");
            a->kind = KILN_ATTR_IDENT;
            a->s = kiln_arena_strdup(p->f->mod->arena, "f16");
            return;
        }
    }
    kiln_set_ident(p->f, p->qg, "act_dtype", "f16");
}

/* fp8 activations x fp8 weights */
static void pick_fp8(Pick *p, const char *sm)
{
    const char *t = p->t->name;
    switch (p->t->kind) {
    case KILN_TGT_INTERP:
        set_layout(p, "reference", "");
        snprintf(p->why, sizeof p->why,
                 "interp: scalar reference, fp8 codes decoded to f32, f32 accumulate");
        return;
    case KILN_TGT_CPU: return; /* pick_cpu */
    case KILN_TGT_CUDA:
        if (p->t->sm < 89) {
            /* No FP8 mma before Ada: keep the 8-bit weights (the bandwidth win) and
             * run the activations in f16, which holds every e4m3/e5m2 value. */
            char spec[128];
            kiln_spec_print(&p->act, spec, sizeof spec);
            replace_act_with_f16(p);
            p->has_act = false;
            p->act_dtype = KILN_F16;
            set_layout(p, "%s-fp8-weightonly-f16", sm);
            snprintf(p->why, sizeof p->why,
                     "%s has no FP8 tensor cores: FP8 weights kept, activations run in f16 "
                     "(act {%s} dropped); weights decode exactly to f16 in registers, "
                     "mma.sync.m16n8k16 f16 with f32 accumulate",
                     t, spec);
            break;
        }
        if (wgmma_target(p)) {
            set_layout(p, "%s-wgmma-fp8", sm);
            snprintf(p->why, sizeof p->why,
                     "%s: native FP8 tensor cores through warpgroup MMA, wgmma.mma_async.m64n64k32 "
                     "e4m3/e5m2 with f32 accumulate, " WGMMA_HOW,
                     t);
            break;
        }
        set_layout(p, "%s-mma-fp8", sm);
        if (p->t->sm >= 90) /* ptxas lowers FP8 mma.sync to unpack + HMMA on Hopper and Blackwell */
            snprintf(p->why, sizeof p->why,
                     "%s: mma.sync.m16n8k32 e4m3/e5m2 with f32 accumulate, which %s runs as an "
                     "unpack to f16 plus f16 tensor cores (%s); fp8 bytes halve the weight traffic",
                     t, t,
                     p->t->sm == 90 ? "Hopper's FP8 tensor cores need wgmma: target sm_90a"
                                    : "Blackwell's FP8 tensor cores need tcgen05, which kiln does not emit");
        else
            snprintf(p->why, sizeof p->why,
                     "%s: native FP8 tensor cores, mma.sync.m16n8k32 e4m3/e5m2 with f32 accumulate", t);
        break;
    }
    scales_phrase(p, false);
}

/* weight-only: activations rounded to act_dtype, weights dequantized */
static void pick_weight_only(Pick *p, const char *sm)
{
    const KilnQuantSpec *w = &p->wt->q;
    const char *t = p->t->name, *ad = kiln_dtype_name(p->act_dtype);
    switch (p->t->kind) {
    case KILN_TGT_INTERP:
        set_layout(p, "reference", "");
        snprintf(p->why, sizeof p->why,
                 "interp: scalar reference, %s activations%s, weights dequantized to f32, f32 "
                 "accumulate",
                 ad, p->act_dtype == KILN_F32 ? "" : " (rounded from f32)");
        return;
    case KILN_TGT_CPU: return; /* pick_cpu */
    case KILN_TGT_CUDA:
        if (p->act_dtype == KILN_F32) {
            /* f16/bf16 tensor cores would round f32 activations: CUDA cores keep them exact */
            set_layout(p, "%s-f32-fma-dequant", sm);
            snprintf(p->why, sizeof p->why,
                     "%s: weight-only %s with f32 activations: f16/bf16 tensor cores would round "
                     "the activations, so weights are dequantized in registers and FFMA runs on "
                     "CUDA cores",
                     t, bits_name(w));
        } else if (kiln_qformat_is_fp8(w->fmt) && p->t->sm < 89 && p->act_dtype == KILN_F16) {
            set_layout(p, "%s-fp8-weightonly-f16", sm);
            snprintf(p->why, sizeof p->why,
                     "%s: weight-only fp8, no FP8 tensor cores: weights decode exactly to f16 in "
                     "registers, mma.sync.m16n8k16 f16 with f32 accumulate",
                     t);
        } else if (wgmma_target(p) && storage_bits(w) == 8) {
            set_layout(p, p->act_dtype == KILN_F16 ? "%s-wgmma-f16-dequant" : "%s-wgmma-bf16-dequant",
                       sm);
            snprintf(p->why, sizeof p->why,
                     "%s: weight-only %s: weights stay 8-bit in memory and convert exactly to %s in "
                     "shared memory, warpgroup MMA wgmma.mma_async.m64n64k16 %s with f32 accumulate, "
                     WGMMA_HOW,
                     t, bits_name(w), ad, ad);
        } else if (w->fmt == KILN_QF_INT4) {
            set_layout(p, p->act_dtype == KILN_F16 ? "%s-mma-f16-int4" : "%s-mma-bf16-int4", sm);
            snprintf(p->why, sizeof p->why,
                     "%s: weight-only int4: Marlin-style pre-shuffled int4, one 128-bit load per "
                     "thread per 32-k slice holds its B fragments of 4 n tiles (decode is "
                     "bandwidth-bound), converted exactly to %s in registers with lop3 "
                     "magic-number tricks, mma.sync.m16n8k16 %s with f32 accumulate",
                     t, ad, ad);
            if (wgmma_target(p))
                append(p->why, sizeof p->why,
                       " (int4 weight-only stays on this mma.sync kernel on sm_90a)");
        } else {
            set_layout(p, p->act_dtype == KILN_F16 ? "%s-mma-f16-dequant" : "%s-mma-bf16-dequant",
                       sm);
            snprintf(p->why, sizeof p->why,
                     "%s: weight-only %s: weights stay %d-bit in memory (decode is "
                     "bandwidth-bound) and convert exactly to %s in registers, mma.sync.m16n8k16 "
                     "%s with f32 accumulate",
                     t, bits_name(w), storage_bits(w), ad, ad);
        }
        break;
    }
    scales_phrase(p, false);
}

/* An unquantized layer's f32 weights (interp and CUDA; CPU goes through pick_cpu). */
static void pick_f32_weights(Pick *p, const char *sm)
{
    const char *t = p->t->name, *ad = kiln_dtype_name(p->act_dtype);
    if (p->t->kind == KILN_TGT_INTERP) {
        set_layout(p, "reference", "");
        snprintf(p->why, sizeof p->why,
                 "interp: scalar reference, unquantized f32 weights, %s activations, f32 "
                 "accumulate",
                 ad);
        return;
    }
    set_layout(p, "%s-f32-fma", sm);
    snprintf(p->why, sizeof p->why,
             "%s: the recipe leaves this layer unquantized: f32 weights, %s activations; the GPU "
             "path for f32 weights is a plain FMA GEMM on CUDA cores (f16/bf16 tensor cores "
             "would round the weights)",
             t, ad);
}

/* ---------------------------------------------------------------- CPU */

/* The CPU `layout` is the name ir/layout.c gives the kernel the code generator
 * builds (kiln_layout_make), so IR and kernel cannot disagree; `why` describes what
 * that kernel family does (codegen/cpu/qgemm_gen.c, qgemm_act.c). */
static int cpu_layout(Pick *p, KilnLayout *l, KilnDiag *d)
{
    KilnQuantSpec act = p->act;
    if (p->has_act && !act.dynamic && !(act.scale > 0))
        act.scale = 1; /* calibrated after the passes; the scale does not pick the kernel */
    KilnEpilogue epi = KILN_EPI_NONE;
    const KilnAttr *ea = kiln_get(p->qg, "epilogue");
    if (ea && ea->s && strcmp(ea->s, "silu") == 0)
        epi = KILN_EPI_SILU;
    else if (ea && ea->s && strcmp(ea->s, "gelu") == 0)
        epi = KILN_EPI_GELU;
    KilnDType out_dt = p->f->values[p->qg->result].type.dt;
    KilnDiag ld = {0};
    int rc = kiln_layout_make(p->t, p->wt, p->has_act ? &act : NULL, p->act_dtype,
                              kiln_qgemm_bias(p->qg) >= 0, epi, out_dt, l, &ld);
    if (rc) {
        const char *msg = strncmp(ld.msg, "qgemm: ", 7) == 0 ? ld.msg + 7 : ld.msg;
        return kiln_diag_set(d, rc, "layer \"%s\": %%%s = qgemm: %s (target %s)", p->layer,
                             p->yname, msg, p->t->name);
    }
    snprintf(p->layout, sizeof p->layout, "%s", l->name);
    return KILN_OK;
}

static const char *act_round_note(KilnDType dt)
{
    return dt == KILN_F16    ? " (activations rounded to f16 first)"
           : dt == KILN_BF16 ? " (activations rounded to bf16 first)"
                             : "";
}

static void why_int(Pick *p, const KilnLayout *l)
{
    const KilnQuantSpec *w = &p->wt->q;
    const char *t = p->t->name;
    int wb = l->wbias;
    if (l->family == KILN_KF_U8S8_VNNI) {
        snprintf(p->why, sizeof p->why,
                 "%s: %s multiplies u8 activations by s8 weights into exact int32; "
                 "%s, and the offset times the weight code sums (precomputed at prepack) is "
                 "subtracted, so int32 sums stay exact",
                 t, l->tiles ? "AMX tdpbusd" : "VNNI vpdpbusd",
                 p->act.symmetric ? "symmetric int8 activations are stored as u8 q+128"
                                  : "asymmetric activations go in as their u8 codes");
    } else if (l->family == KILN_KF_U4S8_MADDUBS) {
        snprintf(p->why, sizeof p->why,
                 "%s: no int8 dot product (VNNI) on x86-64-v3; int4 weights stay unsigned "
                 "nibbles (0..15) and vpmaddubsw multiplies them by the s8 activations%s, 32 "
                 "products per instruction (twice vpmaddwd's); |pair| <= 3840, so 8 pair sums "
                 "add exactly in int16 before one vpmaddwd widens them to int32%s",
                 t, p->act.symmetric ? "" : " (asymmetric u8 codes stored as q - 128, the "
                                            "offset removed with the nibble sums)",
                 w->symmetric ? "; symmetric codes are stored +8 and 8*sum(q_a - z_a) is "
                                "taken off per group" : "");
    } else {
        snprintf(p->why, sizeof p->why,
                 "%s: no int8 dot product (VNNI) on x86-64-v3; activations quantized to int16 "
                 "q-z, %s weight codes sign-extended to int16, vpmaddwd sums pairs into exact "
                 "int32",
                 t, bits_name(w));
    }
    if (!w->symmetric && l->family == KILN_KF_U4S8_MADDUBS)
        append(p->why, sizeof p->why,
               "; asymmetric int4 weights: their codes are the nibbles and the zero point "
               "takes the offset's place, z_w*sum(q_a - z_a) subtracted per %s, still exact int32",
               l->group_mode ? "group" : "row");
    else if (!w->symmetric)
        append(p->why, sizeof p->why,
               "; asymmetric %s weights stored re-centred (code - %d) and the zero-point term "
               "(z_w - %d)*sum(q_a - z_a) subtracted per %s, still exact int32",
               bits_name(w), wb, wb, l->group_mode ? "group" : "row");
}

/* How int4/fp8 weights become floats on this target, and why (ir/layout.h). */
static void decode_note(Pick *p, const KilnLayout *l)
{
    bool int4 = p->wt->q.fmt == KILN_QF_INT4, fp8 = kiln_qformat_is_fp8(p->wt->q.fmt);
    if (l->int8_words)
        append(p->why, sizeof p->why,
               "; int8 codes stored unsigned (c + 128), 4 k to a 32-bit word per column, read "
               "in place with one mask or shift per k (no sign extension) and the +128 taken "
               "off per group with the activation sums");
    if (l->subnormal_decode && l->int8_words)
        append(p->why, sizeof p->why,
               "; the masked bytes are read as f32 subnormals (no convert per weight), because "
               "this target's cores run FMA on subnormal operands at full speed (tune "
               "subnormal-free)");
    else if (l->int8_words)
        append(p->why, sizeof p->why,
               "; the masked bytes are converted exactly with vcvtdq2ps (no f32 subnormals: on "
               "cores without the subnormal-free trait, e.g. Intel, each FMA on a subnormal "
               "operand takes a ~150-cycle microcode assist)");
    if (l->subnormal_decode && int4)
        append(p->why, sizeof p->why,
               "; int4 nibbles are read from their bits as f32 subnormals (u * 2^(bit-149), no "
               "convert per weight) against prescaled activations, because this target's cores "
               "run FMA on subnormal operands at full speed (tune subnormal-free)");
    else if (l->subnormal_decode && fp8)
        append(p->why, sizeof p->why,
               "; fp8 codes are read from their bits as f32 (subnormal codes as f32 subnormals, "
               "no multiply per weight), because this target's cores run FMA on subnormal "
               "operands at full speed (tune subnormal-free)");
    else if (l->family == KILN_KF_F32_FMA && int4)
        append(p->why, sizeof p->why,
               "; int4 nibbles masked in place are converted exactly with vcvtdq2ps (no f32 "
               "subnormals: on cores without the subnormal-free trait, e.g. Intel, each FMA on "
               "a subnormal operand takes a ~150-cycle microcode assist)");
    else if ((l->family == KILN_KF_F32_FMA || l->family == KILN_KF_BF16_DOT) && fp8)
        append(p->why, sizeof p->why,
               "; fp8 codes are moved into f16 and widened with vcvtph2ps, which reads subnormal "
               "codes exactly with no assist and ignores DAZ (no f32 subnormals: on cores without "
               "the subnormal-free trait, e.g. Intel, each FMA on a subnormal operand takes a "
               "~150-cycle microcode assist)");
    if (l->act_planes)
        append(p->why, sizeof p->why,
               "; calls with fewer than %lld rows (decode) convert no code: each activation row is "
               "written per block of k as integers < 2^30 under one power of two, split into four "
               "signed byte planes, and vpdpbusd multiplies %s by each plane (%sexact int32; the "
               "code offset and the scales come off per block), against a shift or mask, a "
               "convert and an FMA per 16 weights on f32",
               (long long)l->planes_below_m,
               l->int8_words ? "the stored unsigned codes" : "the nibbles (masked into bytes, low and high apart)",
               l->int8_words ? "one instruction per 16 weights and plane, " : "");
}

static void why_float(Pick *p, const KilnLayout *l)
{
    const KilnQuantSpec *w = &p->wt->q;
    const char *t = p->t->name, *ad = kiln_dtype_name(p->act_dtype);
    if (p->f32w) {
        snprintf(p->why, sizeof p->why,
                 "%s: the recipe leaves this layer unquantized: f32 weights packed in %d-column "
                 "panels, %d-row x %d-column register blocks of %d-wide FMA, f32 accumulate%s",
                 t, l->NR, l->MR, l->NR, l->VL, act_round_note(p->act_dtype));
    } else if (l->family == KILN_KF_BF16_DOT && p->has_act) {
        snprintf(p->why, sizeof p->why,
                 "%s: no FP8 arithmetic on x86; activations quantized to %s, whose values (like "
                 "the fp8 weights') are exact in bf16, so bf16 products are exact (vdpbf16ps "
                 "pairs into f32); weight scales per %s, the activation scale last",
                 t, bits_name(&p->act), l->group_mode ? "group" : "row");
    } else if (l->family == KILN_KF_BF16_DOT) {
        snprintf(p->why, sizeof p->why,
                 "%s: weight-only %s with bf16 activations: vdpbf16ps multiplies bf16 pairs "
                 "into f32; integer codes (q-z, |v| <= 255) and fp8 values are exact in bf16, "
                 "so products are exact and scales apply after the dot",
                 t, bits_name(w));
    } else if (p->has_act) {
        snprintf(p->why, sizeof p->why,
                 "%s: no FP8 arithmetic on x86; activations quantized to %s and decoded back "
                 "to f32 (exact), weight codes decoded exactly to f32 in registers, %d-wide "
                 "FMA with f32 accumulate",
                 t, bits_name(&p->act), l->VL);
    } else {
        snprintf(p->why, sizeof p->why,
                 "%s: weight-only %s with %s activations: decode is memory-bound, so weights "
                 "stay %d-bit in memory and are converted to f32 in registers (%s), then "
                 "%d-wide FMA in f32%s%s",
                 t, bits_name(w), ad, storage_bits(w),
                 kiln_qformat_is_fp8(w->fmt) ? "exact fp8 decode" : "q - z",
                 l->VL, act_round_note(p->act_dtype),
                 p->act_dtype == KILN_F16 && l->VL == 16 ? "; no f16 dot instruction in this ISA"
                 : p->act_dtype == KILN_BF16 && l->VL == 16 && !kiln_level_has_bf16(l->isa)
                     ? "; no AVX512-BF16 on this level, so no vdpbf16ps: the bf16 products "
                       "(exact in f32) go through f32 FMA"
                     : "");
    }
    decode_note(p, l);
}

/* amx-bf16-tile (ir/layout.h): weight-only with bf16 activations, or fp8 x fp8, at
 * M >= the break-even. K or a group not even (fp8 x fp8 allows odd K) stays on the
 * vector kernel, saying why. */
static int pick_bf16_tiles(Pick *p, KilnLayout *l, const char *at, int64_t min_m, const char *src,
                           char *note, size_t n)
{
    KilnDiag td = {0};
    KilnLayout tl = *l;
    if (kiln_layout_use_tiles(&tl, min_m, false, &td)) {
        const char *msg = strncmp(td.msg, "qgemm: ", 7) == 0 ? td.msg + 7 : td.msg;
        snprintf(note, n, "; %s >= %s, but the vector kernel: %.300s", at, src, msg);
        return KILN_OK;
    }
    *l = tl;
    kiln_set_int(p->f, p->qg, "amx_min_m", min_m);
    snprintf(p->layout, sizeof p->layout, "%s", l->name);
    snprintf(note, n, "; %s >= %s: prefill on tiles: each 32-column panel dequantized once "
             "per call into bf16 B tiles (%s, exact), 32-row blocks of 2x2 tdpbf16ps tiles "
             "(16-row x %d-bf16 activation tiles, %d-row x 16-column weight tiles, four 16x16 "
             "f32 accumulator tiles), the group's scale on the f32 tile sums; calls with fewer "
             "rows run the vdpbf16ps rows of the same kernel",
             at, src, kiln_layout_fp8_weights(l) ? "the fp8 values" : "q - z", l->KT,
             l->KT / 2);
    return KILN_OK;
}

/* amx: tiles or vector units, by the planned M (docs/targets.md "AMX: tiles for
 * prefill, vectors for decode"). The break-even M is the recipe's amx_min_m or
 * KILN_AMX_MIN_M; the tile layout writes it on the qgemm (`amx_min_m`), where
 * kiln_layout_for reads it back, and the kernel takes the VNNI rows below it. */
static int pick_tiles(Pick *p, KilnLayout *l, char *note, size_t n, KilnDiag *d)
{
    note[0] = 0;
    bool bf16 = kiln_layout_bf16_tiles(l);
    if (strcmp(p->t->level, "amx") != 0 || (l->family != KILN_KF_U8S8_VNNI && !bf16))
        return KILN_OK;
    const KilnAttr *a = kiln_fget(p->f, "amx_min_m");
    bool from_recipe = a && a->kind == KILN_ATTR_INT;
    bool int4 = kiln_dtype_bits(l->wdt) == 4;
    int64_t min_m = from_recipe ? a->i : int4 || bf16 ? KILN_AMX_MIN_M : KILN_AMX_MIN_M_INT8;
    int64_t M = p->f->values[p->qg->ops[0]].type.dim[0];
    char src[192];
    if (from_recipe)
        snprintf(src, sizeof src, "the recipe's amx_min_m = %lld", (long long)min_m);
    else if (bf16)
        snprintf(src, sizeof src, "amx_min_m = %lld, the default for bf16 tiles (one full 16-row "
                 "tile; their break-even is not measured)", (long long)min_m);
    else
        snprintf(src, sizeof src, "amx_min_m = %lld, the default for %s weights (%s)", (long long)min_m,
                 int4 ? "int4" : "int8",
                 int4 ? "measured on Sapphire Rapids: tiles level with VNNI at M=8, faster from 16; "
                        "each panel's nibbles are unpacked to bytes first"
                      : "measured on Sapphire Rapids: tiles level with VNNI at M=2, faster from 3-4");
    const KilnAttr *any = kiln_fget(p->f, "any_m");
    bool any_m = any && any->kind == KILN_ATTR_INT && any->i;
    if (M < min_m && !any_m) {
        snprintf(note, n, "; M=%lld < %s: the AVX-512 %s vector units, as decode (below the "
                 "break-even a 16-row tile is mostly empty rows)", (long long)M, src,
                 bf16 ? "BF16/FMA" : "VNNI");
        return KILN_OK;
    }
    if (bf16 && any_m && l->family != KILN_KF_BF16_DOT) {
        /* fp8 x fp8 would move its decode rows from f32-fma to vdpbf16ps: measured
         * 1.5x slower cold (bench/results/amx-2026-12-07.md), and AMX must not slow
         * decode; layers planned at a prefill M (kiln run, IR files) take the tiles */
        snprintf(note, n, "; a layer for every M: fp8 x fp8 stays on the f32 FMA vector kernel, "
                 "whose decode rows are 1.5x faster than the vdpbf16ps rows the bf16 tiles would "
                 "bring (the tiles are planned where the IR's M >= %s)", src);
        return KILN_OK;
    }
    char at[64];
    snprintf(at, sizeof at, any_m ? "a layer for every M (%lld in the IR), at M" : "M=%lld",
             (long long)M);
    if (bf16)
        return pick_bf16_tiles(p, l, at, min_m, src, note, n);
    KilnDiag td = {0};
    if (kiln_layout_use_tiles(l, min_m, false, &td))
        return kiln_diag_set(d, td.code, "layer \"%s\": %%%s = qgemm: %s (target %s)", p->layer,
                             p->yname, td.msg, p->t->name);
    kiln_set_int(p->f, p->qg, "amx_min_m", min_m);
    snprintf(p->layout, sizeof p->layout, "%s", l->name);
    snprintf(note, n, "; %s >= %s: prefill on tiles, 16-row x %d-byte activation tiles "
             "times %d-row x 16-column weight tiles (the VNNI panel read as B tiles), four 16x16 "
             "int32 accumulator tiles per 32-row x 32-column block, rows in blocks whose "
             "activations stay in L2 across the panels%s; calls with fewer rows run the VNNI "
             "vpdpbusd rows of the same kernel", at, src, l->KT, l->KT / 4,
             int4 ? "; int4 weights stay nibble words in memory and each panel is unpacked to "
             "signed bytes once per row block" : "");
    return KILN_OK;
}

static int pick_cpu(Pick *p, KilnDiag *d)
{
    KilnLayout l;
    int rc = cpu_layout(p, &l, d);
    char tiles[1024];
    if (!rc)
        rc = pick_tiles(p, &l, tiles, sizeof tiles, d);
    if (rc)
        return rc;
    bool integer = kiln_layout_integer(&l);
    if (integer)
        why_int(p, &l);
    else
        why_float(p, &l);
    append(p->why, sizeof p->why, "%s", tiles);
    if (!p->f32w)
        scales_phrase(p, integer);
    return KILN_OK;
}

/* The LLM.int8() side path (docs/targets.md): where the f32 half runs on this target. */
static void outliers_note(Pick *p)
{
    const KilnAttr *o = kiln_get(p->qg, "outliers");
    if (!o || o->kind != KILN_ATTR_INTS)
        return;
    int64_t K = p->f->values[p->qg->ops[0]].type.dim[1];
    append(p->why, sizeof p->why,
           "; outliers: %lld of %lld input columns are left out of the int8 activations and "
           "multiplied in f32 against their f32 weight columns, added before the epilogue%s",
           (long long)o->nints, (long long)K,
           p->t->kind == KILN_TGT_CPU    ? " (the kernel is the int8 part alone, f32 out; the "
                                           "f32 columns, bias, activation and output rounding run "
                                           "after it in the runtime)"
           : p->t->kind == KILN_TGT_CUDA ? " (the kernel is the int8 part alone, f32 out; the "
                                           "f32 columns and epilogue run on the host after it)"
                                         : "");
}

/* ---------------------------------------------------------------- driver */

static int pick_one(KilnFunc *f, int qi, const KilnTarget *t, KilnDiag *d)
{
    Pick p = {0};
    p.f = f;
    p.qg = &f->insts[qi];
    p.t = t;
    p.layer = f->name;
    p.yname = f->values[p.qg->result].name;
    int rc = resolve_weight(&p, d);
    if (!rc)
        rc = read_act(&p, d);
    if (rc)
        return rc;
    char sm[16];
    snprintf(sm, sizeof sm, "sm%d%s", t->sm, t->isa & KILN_ISA_CUDA_ARCH_SPECIFIC ? "a" : "");
    if (t->kind == KILN_TGT_CPU)
        rc = pick_cpu(&p, d);
    else if (p.f32w)
        pick_f32_weights(&p, sm);
    else if (!p.has_act)
        pick_weight_only(&p, sm);
    else if (kiln_qformat_is_fp8(p.act.fmt))
        pick_fp8(&p, sm);
    else
        pick_int(&p, sm);
    if (rc)
        return rc;
    if (p.note[0])
        append(p.why, sizeof p.why, "; %s", p.note);
    outliers_note(&p);
    const KilnGpuSass *sass = t->kind == KILN_TGT_CUDA ? kiln_gpu_sass_promise(p.layout, t->sm) : NULL;
    if (sass) /* what tests/test_sass.c finds in the disassembled cubin */
        append(p.why, sizeof p.why, "; SASS %s in the %s kernel", sass->need, sass->kernel);
    if (t->kind == KILN_TGT_CPU && t->tune) { /* the traits planned with: kiln_layout_for reads them */
        char tune[64];
        kiln_fset_str(f, "tune", kiln_tune_str(t->tune, tune, sizeof tune));
    }
    /* IR planned before (read back from text) keeps its reason when the layout is the
     * same: the first planning's notes (how `auto` was resolved) stay with it */
    const KilnAttr *had = kiln_get(p.qg, "layout"), *had_why = kiln_get(p.qg, "why");
    bool same = had && had->kind == KILN_ATTR_STR && had->s && !strcmp(had->s, p.layout) &&
                had_why && had_why->kind == KILN_ATTR_STR && had_why->s &&
                !strncmp(had_why->s, p.why, strlen(p.why));
    kiln_set_str(f, p.qg, "layout", p.layout);
    if (!same)
        kiln_set_str(f, p.qg, "why", p.why);
    return KILN_OK;
}

int kiln_pass_pick_layout(KilnModule *m, const KilnTarget *t, KilnDiag *d)
{
    for (int i = 0; i < m->nfuncs; i++) {
        KilnFunc *f = m->funcs[i];
        for (int j = 0; j < f->ninsts; j++) {
            if (f->insts[j].dead || f->insts[j].op != KILN_OP_QGEMM)
                continue;
            int rc = pick_one(f, j, t, d);
            if (rc)
                return rc;
        }
    }
    return KILN_OK;
}
