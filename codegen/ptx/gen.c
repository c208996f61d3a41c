/* codegen/ptx/gen.c — kernel IR -> CUDA C: the qgemm's layout (ir/layout_gpu.h) becomes a
 * block of #defines in front of the one template body (qgemm_template.cu). */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "ir/layout.h"
#include "ir/layout_gpu.h"
#include "ir/numerics.h"
#include "ptx.h"

/* embedded by the build (CMakeLists.txt, codegen/ptx/embed.cmake): the template, sm_90a's
 * wgmma index maths and kernel, ir/layout_gpu_int4.h and codegen/ptx/gemv_int4.cu */
extern const char kiln_ptx_template[], kiln_ptx_wgmma_layout[], kiln_ptx_wgmma[];
extern const char kiln_ptx_int4_layout[], kiln_ptx_gemv_int4[];

typedef struct Buf {
    char *s;
    size_t n, cap;
    bool oom;
} Buf;

static void put(Buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(Buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int len = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (len < 0 || b->oom)
        return;
    if (b->n + (size_t)len + 1 > b->cap) {
        size_t cap = (b->n + (size_t)len + 1) * 2;
        char *s = realloc(b->s, cap);
        if (!s) {
            b->oom = true;
            return;
        }
        b->s = s;
        b->cap = cap;
    }
    va_start(ap, fmt);
    vsnprintf(b->s + b->n, b->cap - b->n, fmt, ap);
    va_end(ap);
    b->n += (size_t)len;
}

static int wfmt_code(KilnDType dt)
{
    switch (dt) {
    case KILN_I8: return 1;
    case KILN_U8: return 2;
    case KILN_I4: return 3;
    case KILN_U4: return 4;
    case KILN_E4M3: return 5;
    case KILN_E5M2: return 6;
    case KILN_F32: return 7; /* an unquantized layer's weight */
    default: return 0;
    }
}

static uint32_t f32_bits(float v)
{
    uint32_t u;
    memcpy(&u, &v, 4);
    return u;
}

static bool valid_symbol(const char *s)
{
    if (!s || !*s || strlen(s) > 80 || !((*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z') || *s == '_'))
        return false;
    for (; *s; s++)
        if (!((*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '_'))
            return false;
    return true;
}

/* The layout of f's qgemm for arch (which overrides the function's target). */
static int layout_of(const KilnFunc *f, const char *arch, KilnGpuLayout *l, KilnDiag *d)
{
    int rc = kiln_gpu_layout_for(kiln_find_qgemm(f), f, l, d);
    if (rc)
        return rc;
    if (arch) {
        int sm;
        bool specific;
        if ((rc = kiln_gpu_arch(arch, &sm, &specific, d)))
            return rc;
        kiln_gpu_layout_set_arch(l, sm, specific);
        if (l->family == KILN_GK_MMA_FP8 && l->sm < 89)
            return kiln_diag_set(d, KILN_EINPUT, "GPU kernel '%s': %s has no FP8 tensor cores", f->name, arch);
    }
    if (!l->weight_only && !l->aspec.dynamic && !(l->aspec.scale > 0.0f))
        return kiln_diag_set(d, KILN_EINPUT, "GPU kernel '%s': static activation scale not calibrated "
                             "(act spec has scale 0 and is not dynamic)", f->name);
    return 0;
}

static void defines(Buf *b, const KilnGpuLayout *l, const char *symbol)
{
    static const int fam[] = {[KILN_GK_MMA_S8] = 0, [KILN_GK_MMA_FP8] = 1, [KILN_GK_MMA_F16] = 2,
                              [KILN_GK_MMA_BF16] = 3, [KILN_GK_F32_FMA] = 4};
    put(b, "// kiln qgemm module: layout \"%s\", sm_%d%s\n", l->name, l->sm, l->arch_specific ? "a" : "");
    put(b, "#define KILN_SM %d\n#define FAM %d\n#define WGMMA %d\n", l->sm, fam[l->family], l->wgmma);
    put(b, "#define KNAME(s) %s_##s\n", symbol);
    put(b, "#define N_ %lldLL\n#define K_ %lldLL\n#define KP %lld\n#define NG %lld\n#define GLEN %lld\n",
        (long long)l->N, (long long)l->K, (long long)l->KP, (long long)l->ngroups, (long long)l->glen);
    put(b, "#define GROUP_MODE %d\n#define WFMT %d\n#define WZERO %d\n", l->group_mode,
        wfmt_code(l->wdt), l->wzero);
    put(b, "#define W4M %d\n", l->int4_marlin); /* Marlin-style int4 codes (KILNGP2) */
    if (l->int4_marlin) /* its scales, zeros and wsum are [NG][NP] */
        put(b, "#define NP_ %lldLL\n", (long long)l->NP);
    put(b, "#define CODES_OFF %zu\n#define SCALES_OFF %zu\n#define ZEROS_OFF %zu\n#define WSUM_OFF %zu\n",
        l->codes_off, l->scales_off, l->zeros_off, l->wsum_off);
    int act = l->weight_only ? 0 : l->aspec.fmt == KILN_QF_INT8 ? 1 : 2;
    bool sym = !l->azero;
    float qmax = act ? kiln_qformat_qmax(l->aspec.fmt, sym) : 1.0f;
    float qmin = act ? (float)kiln_qformat_qmin(l->aspec.fmt, sym) : 0.0f;
    put(b, "#define ACT %d\n#define AFMT %d\n#define ADYN %d\n#define ATOKEN %d\n", act,
        act ? wfmt_code(l->adt) : 0, act && l->aspec.dynamic, act && l->aspec.gran == KILN_GRAN_TOKEN);
    put(b, "#define ASCALE __int_as_float(0x%08x)\n#define AZP %d\n", f32_bits(act ? l->aspec.scale : 1.0f),
        act && l->azero ? l->aspec.zero : 0);
    put(b, "#define AQMAX __int_as_float(0x%08x)\n#define AQMIN __int_as_float(0x%08x)\n", f32_bits(qmax),
        f32_bits(qmin));
    put(b, "#define AZERO_FMT %d\n#define AESZ %d\n", l->azero, l->act_esz);
    /* f32-weight layers keep f16/bf16 activations as f32 values, rounded in prep */
    put(b, "#define AROUND %d\n", l->act_esz == 4 && l->act_dtype == KILN_F16    ? 1
                                  : l->act_esz == 4 && l->act_dtype == KILN_BF16 ? 2
                                                                                 : 0);
    put(b, "#define HAS_BIAS %d\n#define EPI %d\n#define OUT %d\n", l->has_bias, l->epilogue,
        l->out_dt == KILN_F32 ? 0 : l->out_dt == KILN_F16 ? 1 : 2);
}

int kiln_ptx_source(const KilnFunc *f, const char *arch, const char *symbol, char **cuda_src,
                    KilnDiag *d)
{
    *cuda_src = NULL;
    if (!valid_symbol(symbol))
        return kiln_diag_set(d, KILN_EINPUT, "GPU kernel symbol '%s' is not a C identifier (at most 80 chars)",
                             symbol ? symbol : "(null)");
    KilnGpuLayout l;
    int rc = layout_of(f, arch, &l, d);
    if (rc)
        return rc;
    Buf b = {0};
    defines(&b, &l, symbol);
    if (l.int4_marlin) /* the code permutation's index maths, shared with the prepacker */
        put(&b, "%s", kiln_ptx_int4_layout);
    put(&b, "%s", kiln_ptx_template);
    if (l.wgmma) /* the gemm kernel on wgmma: its index maths, then the kernel */
        put(&b, "%s%s", kiln_ptx_wgmma_layout, kiln_ptx_wgmma);
    if (l.int4_marlin) /* its GEMV, in place of the template's (which is #if !W4M) */
        put(&b, "%s", kiln_ptx_gemv_int4);
    if (b.oom) {
        free(b.s);
        return kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
    }
    *cuda_src = b.s;
    return 0;
}

int kiln_ptx_kernel_names(const KilnFunc *f, const char *symbol, char names[KILN_PTX_MAX_KERNELS][96],
                          KilnDiag *d)
{
    KilnGpuLayout l;
    if (kiln_gpu_layout_for(kiln_find_qgemm(f), f, &l, d))
        return 0;
    int n = 0;
    if (!l.weight_only && l.aspec.dynamic)
        snprintf(names[n++], 96, "%s_range", symbol);
    snprintf(names[n++], 96, "%s_prep", symbol);
    snprintf(names[n++], 96, "%s_gemv", symbol);
    if (l.family != KILN_GK_F32_FMA)
        snprintf(names[n++], 96, "%s_gemm", symbol);
    return n;
}

int kiln_ptx_emit(const KilnFunc *f, const char *arch, const char *symbol, char **ptx, void **cubin,
                  size_t *cubin_len, char **ptxas_log, KilnDiag *d)
{
    char *src = NULL;
    const char *a = arch;
    char tbuf[16];
    if (!a) {
        const KilnAttr *ta = kiln_fget(f, "target");
        snprintf(tbuf, sizeof tbuf, "%s", ta && ta->s ? ta->s : "");
        a = tbuf;
    }
    int rc = kiln_ptx_source(f, a, symbol, &src, d);
    if (!rc)
        rc = kiln_nvrtc_compile(src, a, ptx, cubin, cubin_len, ptxas_log, d);
    free(src);
    return rc;
}
