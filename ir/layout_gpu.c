/* ir/layout_gpu.c — the GPU weight blob and scratch layout (ir/layout_gpu.h): deciding
 * the family and padded sizes of a qgemm for an sm_XX target, and prepacking. libc only. */
#include <stdlib.h>
#include <string.h>

#include "layout.h"
#include "layout_gpu.h"
#include "layout_gpu_int4.h"
#include "numerics.h"

static int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }
static size_t align256(size_t v) { return (v + 255) / 256 * 256; }


/* The CUDA archs kiln compiles for; sm_90a is sm_90 with its arch-specific features
 * (wgmma): its cubin and PTX run on sm_90 devices only. */
static const struct {
    const char *name;
    int sm;
    bool specific;
} gpu_archs[] = {{"sm_80", 80, false}, {"sm_89", 89, false}, {"sm_90", 90, false},
                 {"sm_90a", 90, true}, {"sm_100", 100, false}};
#define GPU_ARCH_LIST "sm_80, sm_89, sm_90, sm_90a, sm_100"

int kiln_gpu_arch(const char *name, int *sm, bool *arch_specific, KilnDiag *d)
{
    for (size_t i = 0; name && i < sizeof gpu_archs / sizeof *gpu_archs; i++)
        if (!strcmp(name, gpu_archs[i].name)) {
            *sm = gpu_archs[i].sm;
            *arch_specific = gpu_archs[i].specific;
            return 0;
        }
    return kiln_diag_set(d, KILN_EINPUT, "unknown GPU arch '%s' (valid: " GPU_ARCH_LIST ")", name ? name : "");
}

int kiln_gpu_arch_runs_on(const char *arch, const char *device_arch, KilnDiag *d)
{
    int sm, dsm;
    bool specific, dspecific;
    int rc = kiln_gpu_arch(arch, &sm, &specific, d);
    if (rc || (rc = kiln_gpu_arch(device_arch, &dsm, &dspecific, d)))
        return rc;
    if (specific ? sm != dsm : sm > dsm)
        return kiln_diag_set(d, KILN_EINPUT, "kernels for %s do not run on an %s device%s", arch, device_arch,
                             specific ? " (an arch-specific target runs on its own arch only)" : "");
    return 0;
}

void kiln_gpu_layout_set_arch(KilnGpuLayout *l, int sm, bool arch_specific)
{
    l->sm = sm;
    l->arch_specific = arch_specific;
    /* int4 weight-only stays on the mma.sync kernel (its own layout work) */
    l->wgmma = sm == 90 && arch_specific &&
               (l->family == KILN_GK_MMA_S8 || l->family == KILN_GK_MMA_FP8 ||
                ((l->family == KILN_GK_MMA_F16 || l->family == KILN_GK_MMA_BF16) && l->wbits == 8));
}

static int parse_sm(const KilnFunc *f, int *sm, bool *arch_specific, KilnDiag *d)
{
    const KilnAttr *ta = kiln_fget(f, "target");
    const char *t = ta && (ta->kind == KILN_ATTR_STR || ta->kind == KILN_ATTR_IDENT) ? ta->s : "";
    if (kiln_gpu_arch(t, sm, arch_specific, NULL))
        return kiln_diag_set(d, KILN_EINPUT,
                             "GPU kernel: function '%s' has target '%s' (valid: " GPU_ARCH_LIST ")", f->name, t);
    return 0;
}

static int pick_family(KilnGpuLayout *l, const KilnInst *q, const KilnFunc *f, KilnDiag *d)
{
    const KilnAttr *aa = kiln_get(q, "act");
    const KilnQuantSpec *ws = &l->wspec;
    if (aa && aa->kind == KILN_ATTR_SPEC && aa->q.fmt != KILN_QF_NONE) {
        l->aspec = aa->q;
        const KilnQuantSpec *as = &l->aspec;
        if (as->fmt == KILN_QF_INT4)
            return kiln_diag_set(d, KILN_EINPUT, "GPU kernel '%s': int4 activations are not supported", f->name);
        if (as->gran != KILN_GRAN_TOKEN && as->gran != KILN_GRAN_TENSOR)
            return kiln_diag_set(d, KILN_EINPUT, "GPU kernel '%s': act granularity must be token or tensor, got %s",
                                 f->name, kiln_gran_name(as->gran));
        if (as->dynamic && as->calib == KILN_CAL_PERCENTILE && as->pct > 0 && as->pct < 100)
            return kiln_diag_set(d, KILN_EINPUT, "GPU kernel '%s': dynamic percentile activation scales are not supported on GPU (use min/max)", f->name);
        bool sym = as->symmetric || kiln_qformat_is_fp8(as->fmt);
        l->adt = kiln_qformat_storage(as->fmt, sym);
        l->azero = !sym;
        l->act_esz = 1;
        if (kiln_qformat_is_int(as->fmt) && kiln_qformat_is_int(ws->fmt)) {
            l->family = KILN_GK_MMA_S8;
        } else if (kiln_qformat_is_fp8(as->fmt) && kiln_qformat_is_fp8(ws->fmt)) {
            if (l->sm < 89)
                return kiln_diag_set(d, KILN_EINPUT,
                                     "GPU kernel '%s': sm_%d has no FP8 tensor cores (pick_layout rewrites fp8 "
                                     "activations to f16 weight-only there)", f->name, l->sm);
            l->family = KILN_GK_MMA_FP8;
        } else {
            return kiln_diag_set(d, KILN_EINPUT, "GPU kernel '%s': act %s with a %s weight: integer and fp8 do not mix",
                                 f->name, kiln_qformat_name(as->fmt), kiln_qformat_name(ws->fmt));
        }
        return 0;
    }
    const KilnAttr *ad = kiln_get(q, "act_dtype");
    if (!ad || !ad->s || kiln_dtype_parse(ad->s, strlen(ad->s), &l->act_dtype) ||
        (l->act_dtype != KILN_F16 && l->act_dtype != KILN_BF16 && l->act_dtype != KILN_F32))
        return kiln_diag_set(d, KILN_EINPUT, "GPU kernel '%s': weight-only qgemm needs act_dtype f16, bf16 or f32",
                             f->name);
    l->weight_only = true;
    l->family = l->act_dtype == KILN_F16    ? KILN_GK_MMA_F16
                : l->act_dtype == KILN_BF16 ? KILN_GK_MMA_BF16
                                            : KILN_GK_F32_FMA;
    l->act_esz = l->act_dtype == KILN_F32 ? 4 : 2;
    return 0;
}

/* f32 weights (an ignored layer): CUDA-core FFMA on f32 codes, activations rounded to
 * act_dtype (f32, f16 or bf16) and kept in f32, as the interpreter does. */
static int pick_f32_weights(KilnGpuLayout *l, const KilnInst *q, const KilnFunc *f, KilnDiag *d)
{
    const KilnAttr *aa = kiln_get(q, "act"), *ad = kiln_get(q, "act_dtype");
    if (aa && aa->kind == KILN_ATTR_SPEC && aa->q.fmt != KILN_QF_NONE)
        return kiln_diag_set(d, KILN_EINPUT, "GPU kernel '%s': an f32 weight takes act_dtype, not quantized "
                             "activations", f->name);
    if (!ad || !ad->s || kiln_dtype_parse(ad->s, strlen(ad->s), &l->act_dtype) ||
        (l->act_dtype != KILN_F16 && l->act_dtype != KILN_BF16 && l->act_dtype != KILN_F32))
        return kiln_diag_set(d, KILN_EINPUT, "GPU kernel '%s': f32-weight qgemm needs act_dtype f16, bf16 or f32",
                             f->name);
    l->weight_only = true;
    l->family = KILN_GK_F32_FMA;
    l->act_esz = 4;
    return 0;
}

int kiln_gpu_layout_for(const KilnInst *q, const KilnFunc *f, KilnGpuLayout *out, KilnDiag *d)
{
    memset(out, 0, sizeof *out);
    if (!q || q->op != KILN_OP_QGEMM || q->nops < 2)
        return kiln_diag_set(d, KILN_EINPUT, "GPU kernel: function '%s' has no qgemm",
                             f && f->name ? f->name : "?");
    KilnGpuLayout *l = out;
    bool arch_specific = false;
    int rc = parse_sm(f, &l->sm, &arch_specific, d);
    if (rc)
        return rc;
    const KilnType *wt = &f->values[q->ops[1]].type, *xt = &f->values[q->ops[0]].type;
    const KilnType *yt = &f->values[q->result].type;
    bool f32w = wt->q.fmt == KILN_QF_NONE; /* a layer the recipe leaves unquantized */
    if (wt->rank != 2 || xt->rank != 2 || xt->dim[1] != wt->dim[1] || (f32w && wt->dt != KILN_F32))
        return kiln_diag_set(d, KILN_EINPUT, "GPU kernel '%s': qgemm needs x[M,K] and a quantized or f32 w[N,K]",
                             f->name);
    l->wspec = wt->q;
    l->wdt = wt->dt;
    l->wbits = kiln_dtype_bits(wt->dt);
    if (l->wbits != 4 && l->wbits != 8 && !f32w)
        return kiln_diag_set(d, KILN_EINPUT, "GPU kernel '%s': weight storage %s is not 4 or 8 bits", f->name,
                             kiln_dtype_name(wt->dt));
    if ((rc = f32w ? pick_f32_weights(l, q, f, d) : pick_family(l, q, f, d)))
        return rc;
    kiln_gpu_layout_set_arch(l, l->sm, arch_specific);
    l->N = wt->dim[0];
    l->K = wt->dim[1];
    l->NP = round_up(l->N, KILN_GPU_BN);
    l->KP = round_up(l->K, KILN_GPU_BK);
    if (f32w)
        l->wspec.gran = KILN_GRAN_TENSOR; /* one scale of 1: y = s_w·acc is exact */
    if (l->wspec.gran == KILN_GRAN_AUTO)
        return kiln_diag_set(d, KILN_EINPUT, "GPU kernel '%s': weight granularity auto was not resolved", f->name);
    l->group_mode = l->wspec.gran == KILN_GRAN_GROUP;
    if (l->group_mode && (l->wspec.group <= 0 || l->wspec.group % KILN_GPU_BK))
        return kiln_diag_set(d, KILN_EINPUT,
                             "GPU kernel '%s': group=%d must be a multiple of %d (K=%lld)", f->name,
                             l->wspec.group, KILN_GPU_BK, (long long)l->K);
    /* A group that does not divide K: the last group is ragged. In the padded K (KP,
     * a multiple of BK) it covers KP - (NG-1)·GLEN k, a multiple of BK since GLEN is;
     * its padding codes are the zero point, so they add nothing. ceil(KP/GLEN) equals
     * ceil(K/GLEN) (GLEN is a multiple of BK), the weight's scale count per row. */
    l->glen = l->group_mode ? l->wspec.group : l->KP;
    l->ngroups = (l->KP + l->glen - 1) / l->glen;
    l->wzero = kiln_qformat_is_int(l->wspec.fmt) && !l->wspec.symmetric;
    l->int4_marlin = l->wbits == 4 && (l->family == KILN_GK_MMA_F16 || l->family == KILN_GK_MMA_BF16);
    l->row_bytes = (size_t)(l->KP * l->wbits / 8);
    size_t nsc = (size_t)(l->NP * l->ngroups) * 4;
    l->codes_off = 256;
    l->scales_off = l->codes_off + align256(l->row_bytes * (size_t)l->NP);
    l->zeros_off = l->scales_off + align256(nsc);
    l->wsum_off = l->zeros_off + align256(nsc);
    l->pack_bytes = l->wsum_off + align256(nsc);
    /* with outliers the kernel is the int8 part alone (no bias, no activation, f32 out);
     * the f32 columns and the epilogue run on the host after it (ir/outliers.h) */
    bool side = kiln_qgemm_outlier_w(q) >= 0;
    l->has_bias = !side && kiln_qgemm_bias(q) >= 0;
    const KilnAttr *ea = side ? NULL : kiln_get(q, "epilogue");
    if (ea && ea->s && strcmp(ea->s, "none")) {
        if (!strcmp(ea->s, "silu"))
            l->epilogue = 1;
        else if (!strcmp(ea->s, "gelu"))
            l->epilogue = 2;
        else
            return kiln_diag_set(d, KILN_EINPUT, "GPU kernel '%s': unknown epilogue '%s'", f->name, ea->s);
    }
    l->out_dt = side ? KILN_F32 : yt->dt;
    if (l->out_dt != KILN_F32 && l->out_dt != KILN_F16 && l->out_dt != KILN_BF16)
        return kiln_diag_set(d, KILN_EINPUT, "GPU kernel '%s': output must be f32, f16 or bf16", f->name);
    const KilnAttr *la = kiln_get(q, "layout");
    snprintf(l->name, sizeof l->name, "%s", la && la->s ? la->s : "gpu");
    return 0;
}

static int64_t scale_index(const KilnQuantSpec *ws, int64_t n, int64_t j, int64_t ng)
{
    return ws->gran == KILN_GRAN_TENSOR ? 0 : ws->gran == KILN_GRAN_GROUP ? n * ng + j : n;
}

int kiln_gpu_prepack(const KilnGpuLayout *l, const KilnTensor *wq, void *blob, KilnDiag *d)
{
    const KilnType *t = &wq->type;
    bool f32w = l->wspec.fmt == KILN_QF_NONE;
    if (t->rank != 2 || t->dim[0] != l->N || t->dim[1] != l->K || t->dt != l->wdt ||
        t->q.fmt != l->wspec.fmt || (!f32w && (!wq->scales || wq->nscales != kiln_type_nscales(t))) ||
        (l->wzero && !wq->zeros))
        return kiln_diag_set(d, KILN_EINPUT, "GPU prepack: weight tensor does not match the layout '%s' "
                             "(%lldx%lld %s with scales%s)", l->name, (long long)l->N, (long long)l->K,
                             kiln_dtype_name(l->wdt), l->wzero ? " and zero points" : "");
    uint8_t *b = blob;
    memset(b, 0, l->pack_bytes);
    memcpy(b, l->int4_marlin ? "KILNGP2" : "KILNGP1", 8);
    int64_t hdr[6] = {l->N, l->K, l->NP, l->KP, l->ngroups, l->glen};
    memcpy(b + 8, hdr, sizeof hdr);
    float *sc = (float *)(b + l->scales_off);
    int32_t *zs = (int32_t *)(b + l->zeros_off), *ws = (int32_t *)(b + l->wsum_off);
    size_t srb = kiln_row_bytes(l->wdt, l->K);
    bool fp8 = kiln_qformat_is_fp8(l->wspec.fmt);
    uint8_t *codes = b + l->codes_off;
    for (int64_t n = 0; n < l->N; n++) {
        const uint8_t *src = (const uint8_t *)wq->data + (size_t)n * srb;
        uint8_t *dst = codes + (size_t)n * l->row_bytes;
        for (int64_t j = 0; j < l->ngroups; j++) {
            int64_t si = scale_index(&l->wspec, n, j, l->ngroups);
            int64_t gi = l->int4_marlin ? kiln_i4_group_index(n, j, l->NP) : n * l->ngroups + j;
            int32_t z = l->wzero ? wq->zeros[si] : 0;
            sc[gi] = f32w ? 1.0f : wq->scales[si];
            if (f32w) { /* plain f32 rows; K..KP-1 stay 0 */
                memcpy(dst, src, (size_t)l->K * sizeof(float));
                continue;
            }
            zs[gi] = z;
            int32_t sum = 0;
            int64_t kend = (j + 1) * l->glen < l->KP ? (j + 1) * l->glen : l->KP; /* ragged last */
            for (int64_t k = j * l->glen; k < kend; k++) {
                int32_t c = k < l->K ? kiln_code_get(l->wdt, src, k) : (fp8 ? 0 : z);
                if (l->int4_marlin) /* a nibble index of the whole codes section */
                    kiln_code_set(l->wdt, codes, kiln_i4_code_nibble(n, k, l->KP), c);
                else
                    kiln_code_set(l->wdt, dst, k, c);
                sum += c;
            }
            ws[gi] = sum;
        }
    }
    return 0;
}

size_t kiln_gpu_scratch_bytes(const KilnGpuLayout *l, int64_t M)
{
    size_t mp = (size_t)round_up(M > 0 ? M : 1, KILN_GPU_BM);
    return align256(mp * (size_t)l->KP * (size_t)l->act_esz) + 2 * align256(mp * 4) +
           align256(mp * (size_t)l->ngroups * 4) + align256(mp * 8);
}

bool kiln_gpu_use_gemv(const KilnGpuLayout *l, int64_t M)
{
    int64_t max_m = l->int4_marlin ? KILN_GPU_GEMV_MAX_M_INT4 : KILN_GPU_GEMV_MAX_M;
    return l->family == KILN_GK_F32_FMA || M <= max_m;
}

int kiln_gpu_gemv_threads(const KilnGpuLayout *l) { return l->int4_marlin ? 256 : 128; }

int64_t kiln_gpu_gemv_blocks_x(const KilnGpuLayout *l) { return l->int4_marlin ? l->NP / KILN_I4_NB : l->NP / 4; }

int kiln_gpu_gemv_rows(const KilnGpuLayout *l) { return l->int4_marlin ? 16 : KILN_GPU_GEMV_ROWS; }

/* LDGSTS is cp.async, LDSM ldmatrix (the A fragments, and 8-bit B fragments); LDG.E.128
 * the int4 layouts' one 128-bit B-fragment load per thread per k slice (ld.global.nc.v4); F2FP.F16.E4M3/E5M2.UNPACK_B is sm_90's software path: ptxas
 * lowers mma.sync e4m3 to an unpack into f16 plus HMMA there (no FP8 mma.sync unit;
 * Hopper's FP8 rate needs wgmma), and on sm_100 alike (tcgen05 is not used). The MMA families never hold another family's MMA.
 * sm_90a's wgmma layouts: QGMMA/IGMMA/HGMMA (warpgroup MMA) after WARPGROUP.ARRIVE
 * (wgmma.fence), and no mma.sync opcode in any kernel. */
static const KilnGpuSass sass_promises[] = {
    {"mma-s8", 80, 100, "gemm", "IMMA.16832 LDGSTS LDSM", "HMMA QMMA"},
    {"mma-fp8", 89, 89, "gemm", "QMMA.16832.F32 LDGSTS LDSM", "HMMA IMMA"},
    {"mma-fp8", 90, 100, "gemm", "F2FP.F16.E HMMA.16816.F32 LDGSTS LDSM", "QMMA IMMA"},
    {"mma-f16-dequant", 80, 100, "gemm", "HMMA.16816.F32 LDGSTS LDSM", "IMMA QMMA HMMA.16816.F32.BF16"},
    {"mma-f16-int4", 80, 100, "gemm", "HMMA.16816.F32 LDGSTS LDSM LDG.E.128", "IMMA QMMA HMMA.16816.F32.BF16"},
    {"fp8-weightonly-f16", 80, 88, "gemm", "HMMA.16816.F32 LDGSTS LDSM", "IMMA QMMA HMMA.16816.F32.BF16"},
    {"mma-bf16-dequant", 80, 100, "gemm", "HMMA.16816.F32.BF16 LDGSTS LDSM", "IMMA QMMA"},
    {"mma-bf16-int4", 80, 100, "gemm", "HMMA.16816.F32.BF16 LDGSTS LDSM LDG.E.128", "IMMA QMMA"},
    {"wgmma-fp8", 90, 90, "gemm", "QGMMA.64x64x32.F32.E WARPGROUP.ARRIVE LDGSTS", "HMMA IMMA QMMA HGMMA IGMMA"},
    {"wgmma-s8", 90, 90, "gemm", "IGMMA.64x64x32 WARPGROUP.ARRIVE LDGSTS", "HMMA IMMA QMMA HGMMA QGMMA"},
    {"wgmma-f16-dequant", 90, 90, "gemm", "HGMMA.64x64x16.F32 WARPGROUP.ARRIVE LDGSTS",
     "HMMA IMMA QMMA IGMMA QGMMA HGMMA.64x64x16.F32.BF16"},
    {"wgmma-bf16-dequant", 90, 90, "gemm", "HGMMA.64x64x16.F32.BF16 WARPGROUP.ARRIVE LDGSTS",
     "HMMA IMMA QMMA IGMMA QGMMA"},
    {"f32-fma-dequant", 80, 100, "gemv", "FFMA", "HMMA IMMA QMMA"},
    {"f32-fma", 80, 100, "gemv", "FFMA", "HMMA IMMA QMMA"},
};

const KilnGpuSass *kiln_gpu_sass_promise(const char *layout, int sm)
{
    const char *dash = layout ? strchr(layout, '-') : NULL;
    if (!dash || strncmp(layout, "sm", 2))
        return NULL;
    for (size_t i = 0; i < sizeof sass_promises / sizeof *sass_promises; i++) {
        const KilnGpuSass *p = &sass_promises[i];
        if (!strcmp(dash + 1, p->suffix) && sm >= p->sm_lo && sm <= p->sm_hi)
            return p;
    }
    return NULL;
}
