/* tests/test_ptx.c — the GPU backend without a GPU: every recipe's layers, lowered for
 * sm_80, sm_89, sm_90 and sm_90a, compile through NVRTC to PTX and cubin; the PTX holds the
 * instructions each family promises (and not the ones it must not), ptxas reports no
 * register spills, kernel names/counts match, odd shapes compile, the GPU prepacker
 * writes the documented bytes, and a missing NVRTC is a clear KILN_ENODEV. Each
 * distinct module is compiled once (setup) and reused by every assertion. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "codegen/ptx/ptx.h"
#include "frontend/recipe.h"
#include "ir/layout.h"
#include "ir/layout_gpu.h"
#include "ir/layout_gpu_int4.h"
#include "ir/numerics.h"
#include "passes/passes.h"

typedef struct Case {
    char what[200]; /* recipe/layer@arch shape */
    char arch[8];
    KilnGpuLayout l;
    int nkernels;
    char names[KILN_PTX_MAX_KERNELS][96];
    char *ptx, *log;
    size_t cubin_len;
    int rc;
    char err[1200];
    double ms;
} Case;

static Case g_cases[256];
static int g_ncases;
static bool g_have_nvrtc;
static double g_total_ms;

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
}

/* A static activation spec without a scale gets one, as `kiln run` calibration would. */
static void give_static_scale(KilnFunc *f)
{
    KilnInst *g = (KilnInst *)kiln_find_qgemm(f);
    for (int i = 0; g && i < g->nattrs; i++)
        if (!strcmp(g->attrs[i].key, "act") && !g->attrs[i].q.dynamic && g->attrs[i].q.scale == 0) {
            g->attrs[i].q.scale = 0.0234375f;
            g->attrs[i].q.zero = g->attrs[i].q.symmetric ? 0 : 128;
        }
}

static void compile_case(const char *recipe_path, const char *arch, int64_t M, int64_t N, int64_t K)
{
    KilnDiag d = {0};
    KilnRecipe *r = NULL;
    if (kiln_recipe_load(recipe_path, &r, &d)) {
        fail_msg("%s: %s", recipe_path, d.msg);
        return;
    }
    KilnTarget t;
    if (kiln_target_lookup(arch, &t, &d))
        fail_msg("%s", d.msg);
    for (int i = 0; i < kiln_recipe_nrules(r); i++) {
        KilnModule *m = kiln_module_new();
        KilnFunc *f;
        const char *layer = kiln_recipe_rule_example(r, i);
        int rc = kiln_lower_layer(r, layer, M, N, K, t.name, m, &f, &d);
        if (!rc)
            rc = kiln_run_pipeline(m, &t, NULL, &d);
        if (rc)
            fail_msg("%s %s: %s", recipe_path, layer, d.msg);
        f = m->funcs[0];
        const KilnInst *gq = kiln_find_qgemm(f);
        assert_non_null(gq); /* ignored (f32) layers included: the f32-fma kernel */
        give_static_scale(f);
        assert_true(g_ncases < (int)(sizeof g_cases / sizeof *g_cases));
        Case *c = &g_cases[g_ncases++];
        const char *base = strrchr(recipe_path, '/');
        snprintf(c->what, sizeof c->what, "%s/%s@%s %lldx%lldx%lld", base ? base + 1 : recipe_path, layer,
                 arch, (long long)M, (long long)N, (long long)K);
        snprintf(c->arch, sizeof c->arch, "%s", arch);
        if (kiln_gpu_layout_for(kiln_find_qgemm(f), f, &c->l, &d))
            fail_msg("%s: %s", c->what, d.msg);
        c->nkernels = kiln_ptx_kernel_names(f, "kq", c->names, &d);
        double t0 = now_ms();
        void *cubin = NULL;
        KilnDiag cd = {0};
        c->rc = kiln_ptx_emit(f, arch, "kq", &c->ptx, &cubin, &c->cubin_len, &c->log, &cd);
        c->ms = now_ms() - t0;
        g_total_ms += c->ms;
        snprintf(c->err, sizeof c->err, "%s", cd.msg);
        free(cubin);
        kiln_module_free(m);
    }
    kiln_recipe_free(r);
}

static int setup_all(void **state)
{
    (void)state;
    KilnDiag d = {0};
    g_have_nvrtc = kiln_nvrtc_version(&d) != NULL;
    if (!g_have_nvrtc)
        return 0;
    DIR *dir = opendir(KILN_SOURCE_DIR "/recipes");
    if (!dir)
        return -1;
    char paths[64][512];
    int np = 0;
    struct dirent *e;
    while ((e = readdir(dir)) && np < 64)
        if (strlen(e->d_name) > 4 && !strcmp(e->d_name + strlen(e->d_name) - 4, ".lua"))
            snprintf(paths[np++], sizeof paths[0], "%s/recipes/%s", KILN_SOURCE_DIR, e->d_name);
    closedir(dir);
    static const char *const archs[] = {"sm_80", "sm_89", "sm_90", "sm_90a"};
    for (int i = 0; i < np; i++)
        for (int a = 0; a < 4; a++)
            compile_case(paths[i], archs[a], 16, 256, 512);
    /* odd shapes: N and K off the 64/32 tiles (K a multiple of the group for int4) */
    compile_case(KILN_SOURCE_DIR "/recipes/w8a8-int8-dynamic.lua", "sm_80", 1, 40, 72);
    compile_case(KILN_SOURCE_DIR "/recipes/w8a16.lua", "sm_80", 3, 100, 200);
    compile_case(KILN_SOURCE_DIR "/recipes/fp8-e4m3-dynamic.lua", "sm_89", 5, 72, 40);
    compile_case(KILN_SOURCE_DIR "/recipes/w4a16-g32-sym.lua", "sm_90", 1, 33, 96);
    compile_case(KILN_SOURCE_DIR "/recipes/w4a8.lua", "sm_90", 67, 130, 384);
    /* ragged last group: K = 576 = 4·128 + 64 (SmolLM2) at group 128, GEMV (M 1) and
     * GEMM (M 67) kernels; K = 100 at group 32 (a tail of 4, padded to 32) */
    compile_case(KILN_SOURCE_DIR "/recipes/w4a16-g128-asym.lua", "sm_80", 1, 64, 576);
    compile_case(KILN_SOURCE_DIR "/recipes/w4a16-g128-asym.lua", "sm_90", 67, 96, 576);
    compile_case(KILN_SOURCE_DIR "/recipes/w4a8.lua", "sm_89", 67, 96, 576);
    compile_case(KILN_SOURCE_DIR "/recipes/w4a16-g32-sym.lua", "sm_80", 5, 40, 100);
    /* sm_90a's wgmma gemm off the tiles and with a ragged last group; sm_100 (portable) */
    compile_case(KILN_SOURCE_DIR "/recipes/fp8-e4m3-dynamic.lua", "sm_90a", 67, 72, 40);
    compile_case(KILN_SOURCE_DIR "/recipes/w4a8.lua", "sm_90a", 67, 96, 576);
    compile_case(KILN_SOURCE_DIR "/recipes/w8a16.lua", "sm_90a", 130, 100, 200);
    compile_case(KILN_SOURCE_DIR "/recipes/w8a8-int8-static.lua", "sm_100", 67, 130, 384);
    printf("NVRTC %s: %d modules compiled (PTX + cubin) in %.1f s, %.0f ms each on average\n",
           kiln_nvrtc_version(&d), g_ncases, g_total_ms / 1e3, g_ncases ? g_total_ms / g_ncases : 0.0);
    return 0;
}

static int teardown_all(void **state)
{
    (void)state;
    for (int i = 0; i < g_ncases; i++) {
        free(g_cases[i].ptx);
        free(g_cases[i].log);
    }
    return 0;
}

#define NEED_NVRTC()                                                                               \
    do {                                                                                           \
        if (!g_have_nvrtc) {                                                                       \
            printf("SKIP: NVRTC not found (install the CUDA toolkit or set KILN_NVRTC)\n");        \
            skip();                                                                                \
        }                                                                                          \
    } while (0)

static void test_nvrtc_version(void **state)
{
    (void)state;
    NEED_NVRTC();
    KilnDiag d = {0};
    const char *v = kiln_nvrtc_version(&d);
    assert_non_null(v);
    int major = 0, minor = -1;
    assert_int_equal(sscanf(v, "%d.%d", &major, &minor), 2);
    assert_true(major >= 12);
}

static void test_all_compile(void **state)
{
    (void)state;
    NEED_NVRTC();
    assert_true(g_ncases >= 3 * 10);
    int bad = 0;
    for (int i = 0; i < g_ncases; i++)
        if (g_cases[i].rc || !g_cases[i].ptx || g_cases[i].cubin_len == 0) {
            printf("FAIL %s: rc %d: %.600s\n", g_cases[i].what, g_cases[i].rc, g_cases[i].err);
            bad++;
        }
    assert_int_equal(bad, 0);
}

static bool has(const char *ptx, const char *s) { return ptx && strstr(ptx, s) != NULL; }
static int count(const char *s, const char *sub);

/* The sm_90a gemm: the wgmma of the exact operand types, its fence / commit / wait, the
 * proxy fence after the generic-proxy shared-memory writes, cp.async, no mma.sync. */
static bool wgmma_ptx_ok(const Case *c, char *why, size_t n)
{
    const char *p = c->ptx;
    char want[96];
    if (c->l.family == KILN_GK_MMA_FP8)
        snprintf(want, sizeof want, "m64n64k32.f32.%s.%s", c->l.adt == KILN_E4M3 ? "e4m3" : "e5m2",
                 c->l.wdt == KILN_E4M3 ? "e4m3" : "e5m2");
    else if (c->l.family == KILN_GK_MMA_S8)
        snprintf(want, sizeof want, "m64n64k32.s32.%s.%s", c->l.azero ? "u8" : "s8",
                 c->l.wdt == KILN_U8 || c->l.wdt == KILN_U4 ? "u8" : "s8");
    else
        snprintf(want, sizeof want, "m64n64k16.f32.%s", c->l.family == KILN_GK_MMA_F16 ? "f16.f16" : "bf16.bf16");
    char full[160];
    snprintf(full, sizeof full, "wgmma.mma_async.sync.aligned.%s", want);
    const char *need[] = {full, "wgmma.fence.sync.aligned", "wgmma.commit_group.sync.aligned",
                          "wgmma.wait_group.sync.aligned", "fence.proxy.async.shared::cta",
                          "cp.async.cg.shared.global", ".target sm_90a"};
    for (size_t i = 0; i < sizeof need / sizeof *need; i++)
        if (!has(p, need[i])) {
            snprintf(why, n, "wgmma gemm lacks %.100s", need[i]);
            return false;
        }
    if (has(p, "mma.sync")) {
        snprintf(why, n, "mma.sync in a wgmma module");
        return false;
    }
    if (has(c->log, "serialized")) { /* ptxas: wgmma serialized (a fence or register use it dislikes) */
        snprintf(why, n, "ptxas serializes the wgmma");
        return false;
    }
    return true;
}

static void test_instructions(void **state)
{
    (void)state;
    NEED_NVRTC();
    int bad = 0;
    for (int i = 0; i < g_ncases; i++) {
        const Case *c = &g_cases[i];
        const char *p = c->ptx;
        if (!p)
            continue;
        bool ok = true;
        char why[160] = "";
#define EXPECT(cond, msg)                                                                          \
    do {                                                                                           \
        if (ok && !(cond)) {                                                                       \
            ok = false;                                                                            \
            snprintf(why, sizeof why, "%s", msg);                                                  \
        }                                                                                          \
    } while (0)
        EXPECT(!has(p, "e4m3.e4m3.f32") || c->l.sm >= 89, "e4m3 mma on sm_80");
        EXPECT(c->l.sm >= 89 || !has(p, ".e4m3") || c->l.family != KILN_GK_MMA_FP8, "fp8 family on sm_80");
        EXPECT(c->l.wgmma == (strstr(c->l.name, "-wgmma-") != NULL), "layout name and wgmma kernel disagree");
        EXPECT(c->l.wgmma == (!strcmp(c->arch, "sm_90a") && c->l.family != KILN_GK_F32_FMA &&
                              (c->l.wbits == 8 || c->l.family == KILN_GK_MMA_S8)),
               "sm_90a's S8, FP8 and 8-bit-weight F16/BF16 gemms are wgmma, nothing else is");
        EXPECT(!has(p, "wgmma") || c->l.wgmma, "wgmma outside an sm_90a wgmma module");
        if (c->l.wgmma) {
            char wg_why[160] = "";
            if (!wgmma_ptx_ok(c, wg_why, sizeof wg_why))
                EXPECT(false, wg_why);
        } else
        switch (c->l.family) {
        case KILN_GK_MMA_S8:
            EXPECT(has(p, "mma.sync.aligned.m16n8k32.row.col.s32.") && has(p, "s8.s32"), "no s8 m16n8k32 mma");
            EXPECT(has(p, "cp.async.cg.shared.global"), "no cp.async in the GEMM");
            EXPECT(!has(p, "m16n8k16"), "f16 mma in an int8 kernel");
            break;
        case KILN_GK_MMA_FP8: {
            char want[96];
            snprintf(want, sizeof want, "mma.sync.aligned.m16n8k32.row.col.f32.%s.%s.f32",
                     c->l.adt == KILN_E4M3 ? "e4m3" : "e5m2", c->l.wdt == KILN_E4M3 ? "e4m3" : "e5m2");
            EXPECT(c->l.sm >= 89, "fp8 mma family below sm_89");
            EXPECT(has(p, want), "no fp8 m16n8k32 mma of the act x weight formats");
            EXPECT(has(p, "cp.async.cg.shared.global"), "no cp.async in the GEMM");
            EXPECT(has(p, c->l.adt == KILN_E4M3 ? "cvt.rn.satfinite.e4m3x2.f32" : "cvt.rn.satfinite.e5m2x2.f32"),
                   "activations not quantized with cvt satfinite");
            break;
        }
        case KILN_GK_MMA_F16:
        case KILN_GK_MMA_BF16:
            EXPECT(has(p, c->l.family == KILN_GK_MMA_F16 ? "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32"
                                                          : "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32"),
                   "no 16-bit m16n8k16 mma for weight-only");
            EXPECT(!has(p, "m16n8k32"), "8-bit mma in a weight-only kernel");
            EXPECT(has(p, "cp.async.cg.shared.global"), "no cp.async in the GEMM");
            if (c->l.wbits == 4) {
                EXPECT(has(p, "lop3.b32") && has(p, c->l.family == KILN_GK_MMA_F16 ? "1677747200" : "1124090624"),
                       "int4 not converted with the lop3 magic number (0x64006400 / 0x43004300)");
                /* Marlin-style codes: a thread's B fragments of a k slice are one 128-bit
                 * load, in the GEMM and in the GEMV */
                EXPECT(c->l.int4_marlin && count(p, "ld.global.nc.v4.u32") >= 2,
                       "int4 weight-only B fragments not loaded with ld.global.nc.v4 (128 bits)");
            }
            if (c->l.wdt == KILN_E4M3 && c->l.sm >= 89)
                EXPECT(has(p, "cvt.rn.f16x2.e4m3x2"), "sm_89+ fp8 weights not converted by cvt");
            break;
        case KILN_GK_F32_FMA:
            EXPECT(!has(p, "mma.sync"), "tensor cores in the f32 kernel");
            EXPECT(has(p, "fma.rn.f32"), "no f32 FMA");
            break;
        }
        EXPECT(has(p, ".entry kq_gemv"), "no GEMV kernel (small M)");
        if (!ok) {
            printf("FAIL %s (%s): %s\n", c->what, c->l.name, why);
            bad++;
        }
    }
    assert_int_equal(bad, 0);
}

/* Every "N bytes spill stores, M bytes spill loads" line of ptxas -v must be 0/0. */
static void test_no_spills(void **state)
{
    (void)state;
    NEED_NVRTC();
    int bad = 0, lines = 0, maxreg = 0;
    for (int i = 0; i < g_ncases; i++) {
        const char *s = g_cases[i].log;
        for (const char *p = s; p && (p = strstr(p, "bytes spill stores")); p++) {
            const char *ls = p;
            while (ls > s && ls[-1] != '\n')
                ls--;
            int st = -1, ld = -1;
            const char *q = strstr(ls, "stack frame, ");
            if (q)
                sscanf(q, "stack frame, %d bytes spill stores, %d bytes spill loads", &st, &ld);
            lines++;
            if (st != 0 || ld != 0) {
                printf("FAIL %s: spills (%d stores, %d loads)\n", g_cases[i].what, st, ld);
                bad++;
            }
        }
        for (const char *p = s; p && (p = strstr(p, "Used ")); p++) {
            int r = 0;
            if (sscanf(p, "Used %d registers", &r) == 1 && r > maxreg)
                maxreg = r;
        }
    }
    printf("ptxas: %d kernel reports, 0 spills expected; at most %d registers per thread\n", lines, maxreg);
    int kernels = 0;
    for (int i = 0; i < g_ncases; i++)
        kernels += g_cases[i].nkernels;
    assert_int_equal(lines, kernels);
    assert_int_equal(bad, 0);
}

static int count(const char *s, const char *sub)
{
    int n = 0;
    for (const char *p = s; p && (p = strstr(p, sub)); p += strlen(sub))
        n++;
    return n;
}

static void test_kernel_names(void **state)
{
    (void)state;
    NEED_NVRTC();
    for (int i = 0; i < g_ncases; i++) {
        const Case *c = &g_cases[i];
        if (!c->ptx)
            continue;
        bool dyn = !c->l.weight_only && c->l.aspec.dynamic;
        int want = 2 + dyn + (c->l.family != KILN_GK_F32_FMA);
        assert_int_equal(c->nkernels, want);
        assert_int_equal(count(c->ptx, ".entry "), want);
        for (int k = 0; k < c->nkernels; k++) {
            char e[120];
            snprintf(e, sizeof e, ".entry %s(", c->names[k]);
            if (!has(c->ptx, e))
                fail_msg("%s: PTX lacks kernel %s", c->what, c->names[k]);
        }
    }
}

static void test_odd_shapes(void **state)
{
    (void)state;
    NEED_NVRTC();
    int odd = 0;
    for (int i = 0; i < g_ncases; i++) {
        const Case *c = &g_cases[i];
        if (c->l.N % 64 == 0 && c->l.K % 32 == 0)
            continue;
        odd++;
        assert_int_equal(c->rc, 0);
        assert_true(c->l.NP % 64 == 0 && c->l.NP >= c->l.N && c->l.KP % 32 == 0 && c->l.KP >= c->l.K);
        assert_true(has(c->ptx, ".entry kq_gemv"));
        char nk[64];
        snprintf(nk, sizeof nk, "%lld", (long long)c->l.N); /* N is a constant of the module */
        assert_true(has(c->ptx, nk));
    }
    assert_true(odd >= 4);
}

/* The build embeds the CUDA sources as C strings (codegen/ptx/embed.cmake); what gen.c
 * pastes into every module must be exactly the files on disk, byte for byte. */
static void test_template_embedded(void **state)
{
    (void)state;
    extern const char kiln_ptx_template[], kiln_ptx_wgmma_layout[], kiln_ptx_wgmma[];
    extern const char kiln_ptx_int4_layout[], kiln_ptx_gemv_int4[];
    static const struct {
        const char *path, *text;
    } files[] = {{KILN_SOURCE_DIR "/codegen/ptx/qgemm_template.cu", kiln_ptx_template},
                 {KILN_SOURCE_DIR "/codegen/ptx/wgmma_layout.h", kiln_ptx_wgmma_layout},
                 {KILN_SOURCE_DIR "/codegen/ptx/qgemm_wgmma.cu", kiln_ptx_wgmma},
                 {KILN_SOURCE_DIR "/ir/layout_gpu_int4.h", kiln_ptx_int4_layout},
                 {KILN_SOURCE_DIR "/codegen/ptx/gemv_int4.cu", kiln_ptx_gemv_int4}};
    static char buf[1 << 17];
    for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
        FILE *f = fopen(files[i].path, "rb");
        assert_non_null(f);
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[n] = 0;
        if (strcmp(buf, files[i].text))
            fail_msg("the text kiln compiles differs from %s: the build's embed step "
                     "(codegen/ptx/embed.cmake) is stale or lossy", files[i].path);
    }
}

static void test_nvrtc_absent(void **state)
{
    (void)state;
    const char *old = getenv("KILN_NVRTC");
    char saved[1024] = "";
    if (old)
        snprintf(saved, sizeof saved, "%s", old);
    setenv("KILN_NVRTC", "/nonexistent/kiln/libnvrtc.so", 1);
    KilnDiag d = {0};
    assert_null(kiln_nvrtc_version(&d));
    assert_int_equal(d.code, KILN_ENODEV);
    assert_non_null(strstr(d.msg, "NVRTC not found (install the CUDA toolkit or set KILN_NVRTC)"));
    KilnDiag d2 = {0};
    char *ptx = (char *)1;
    assert_int_equal(kiln_nvrtc_compile("extern \"C\" __global__ void k() {}", "sm_80", &ptx, NULL, NULL,
                                        NULL, &d2),
                     KILN_ENODEV);
    assert_null(ptx);
    assert_non_null(strstr(d2.msg, "NVRTC not found"));
    if (old)
        setenv("KILN_NVRTC", saved, 1);
    else
        unsetenv("KILN_NVRTC");
    KilnDiag d3 = {0};
    if (g_have_nvrtc) /* and it comes back once the variable is gone */
        assert_non_null(kiln_nvrtc_version(&d3));
}

/* Hand-built IR for the layout and prepack tests. */
static KilnFunc *tiny(KilnModule *m, const char *target, KilnType wt, const char *act_dtype)
{
    KilnFunc *f = kiln_func_new(m, "tiny");
    kiln_fset_ident(f, "target", target);
    int x = kiln_func_param(f, "x", kiln_type2(KILN_F32, 2, wt.dim[1]));
    int w = kiln_emit(f, KILN_OP_WEIGHT, NULL, 0, kiln_type2(KILN_F32, wt.dim[0], wt.dim[1]), "w");
    kiln_set_str(f, kiln_last(f), "name", "w");
    int q = kiln_emit(f, KILN_OP_QUANTIZE, &w, 1, wt, "wq");
    int ops[2] = {x, q};
    int y = kiln_emit(f, KILN_OP_QGEMM, ops, 2, kiln_type2(KILN_F32, 2, wt.dim[0]), "y");
    kiln_set_ident(f, kiln_last(f), "act_dtype", act_dtype);
    kiln_emit(f, KILN_OP_RETURN, &y, 1, (KilnType){0}, NULL);
    return f;
}

/* f32 weights (a layer the recipe ignores): the f32-fma family, f32 rows, K padded
 * with 0, scale 1; f16 activations are rounded in prep and kept as f32. */
static void test_prepack_f32_weights(void **state)
{
    (void)state;
    KilnModule *m = kiln_module_new();
    KilnFunc *f = kiln_func_new(m, "ignored");
    kiln_fset_ident(f, "target", "sm_89");
    int x = kiln_func_param(f, "x", kiln_type2(KILN_F32, 2, 40));
    int w = kiln_emit(f, KILN_OP_WEIGHT, NULL, 0, kiln_type2(KILN_F32, 3, 40), "w");
    kiln_set_str(f, kiln_last(f), "name", "w");
    int ops[2] = {x, w};
    int y = kiln_emit(f, KILN_OP_QGEMM, ops, 2, kiln_type2(KILN_F32, 2, 3), "y");
    kiln_set_ident(f, kiln_last(f), "act_dtype", "f16");
    kiln_emit(f, KILN_OP_RETURN, &y, 1, (KilnType){0}, NULL);
    KilnGpuLayout l;
    KilnDiag d = {0};
    assert_int_equal(kiln_gpu_layout_for(kiln_find_qgemm(f), f, &l, &d), 0);
    assert_int_equal(l.family, KILN_GK_F32_FMA);
    assert_int_equal(l.act_dtype, KILN_F16);
    assert_int_equal(l.act_esz, 4);
    assert_int_equal(l.wbits, 32);
    assert_int_equal(l.KP, 64);
    assert_int_equal(l.row_bytes, 256);
    assert_int_equal(l.ngroups, 1);
    assert_true(kiln_gpu_use_gemv(&l, 4096));
    KilnTensor t;
    KilnType wt = kiln_type2(KILN_F32, 3, 40);
    assert_int_equal(kiln_tensor_alloc(&t, &wt), 0);
    for (int i = 0; i < 120; i++)
        ((float *)t.data)[i] = (float)i * 0.5f - 7.0f;
    uint8_t *blob = malloc(l.pack_bytes);
    assert_int_equal(kiln_gpu_prepack(&l, &t, blob, &d), 0);
    float v[3];
    memcpy(&v[0], blob + l.codes_off + 256 + 5 * 4, 4);  /* W[1,5] */
    memcpy(&v[1], blob + l.codes_off + 2 * 256 + 40 * 4, 4); /* pad */
    memcpy(&v[2], blob + l.scales_off + 2 * 4, 4);
    assert_true(v[0] == 45 * 0.5f - 7.0f && v[1] == 0.0f && v[2] == 1.0f);
    char *src = NULL;
    assert_int_equal(kiln_ptx_source(f, NULL, "kq", &src, &d), 0);
    assert_non_null(strstr(src, "#define WFMT 7\n"));
    assert_non_null(strstr(src, "#define AROUND 1\n"));
    free(src);
    char names[KILN_PTX_MAX_KERNELS][96];
    assert_int_equal(kiln_ptx_kernel_names(f, "kq", names, &d), 2); /* prep, gemv */
    free(blob);
    kiln_tensor_free(&t);
    kiln_module_free(m);
}

static void test_prepack_bytes(void **state)
{
    (void)state;
    /* u8 asymmetric per-channel weight 2x40: K pads to 64 with the zero point */
    KilnModule *m = kiln_module_new();
    KilnType wt = kiln_type2(KILN_U8, 2, 40);
    wt.q = (KilnQuantSpec){.fmt = KILN_QF_INT8, .symmetric = false, .gran = KILN_GRAN_CHANNEL};
    KilnFunc *f = tiny(m, "sm_80", wt, "f16");
    KilnGpuLayout l;
    KilnDiag d = {0};
    assert_int_equal(kiln_gpu_layout_for(kiln_find_qgemm(f), f, &l, &d), 0);
    assert_int_equal(l.family, KILN_GK_MMA_F16);
    assert_int_equal(l.NP, 64);
    assert_int_equal(l.KP, 64);
    assert_int_equal(l.ngroups, 1);
    assert_int_equal(l.row_bytes, 64);
    assert_int_equal(l.codes_off, 256);
    assert_int_equal(l.scales_off, 256 + 64 * 64);
    assert_int_equal(l.zeros_off, l.scales_off + 256);
    KilnTensor t;
    assert_int_equal(kiln_tensor_alloc(&t, &wt), 0);
    uint8_t *codes = t.data;
    for (int i = 0; i < 80; i++)
        codes[i] = (uint8_t)(i * 3);
    t.scales[0] = 0.5f;
    t.scales[1] = 0.25f;
    t.zeros[0] = 7;
    t.zeros[1] = 200;
    uint8_t *blob = malloc(l.pack_bytes);
    assert_int_equal(kiln_gpu_prepack(&l, &t, blob, &d), 0);
    assert_memory_equal(blob, "KILNGP1", 8);
    assert_int_equal(blob[256 + 5], 15);       /* W[0,5] */
    assert_int_equal(blob[256 + 64 + 1], 123); /* W[1,1] = code 41*3 */
    assert_int_equal(blob[256 + 40], 7);       /* pad k = z of row 0 */
    assert_int_equal(blob[256 + 64 + 63], 200);
    float s1;
    memcpy(&s1, blob + l.scales_off + 4, 4);
    assert_true(s1 == 0.25f);
    int32_t z1, ws0;
    memcpy(&z1, blob + l.zeros_off + 4, 4);
    assert_int_equal(z1, 200);
    memcpy(&ws0, blob + l.wsum_off, 4);
    int32_t want = 0;
    for (int k = 0; k < 40; k++)
        want += (k * 3) & 0xFF;
    assert_int_equal(ws0, want + 24 * 7);
    free(blob);
    kiln_tensor_free(&t);
    kiln_module_free(m);

    /* i4 groups of 32, K 64: two groups per row, nibbles kept in ir.h order */
    m = kiln_module_new();
    wt = kiln_type2(KILN_I4, 3, 64);
    wt.q = (KilnQuantSpec){.fmt = KILN_QF_INT4, .symmetric = true, .gran = KILN_GRAN_GROUP, .group = 32};
    f = tiny(m, "sm_90", wt, "bf16");
    assert_int_equal(kiln_gpu_layout_for(kiln_find_qgemm(f), f, &l, &d), 0);
    assert_int_equal(l.family, KILN_GK_MMA_BF16);
    assert_int_equal(l.ngroups, 2);
    assert_int_equal(l.glen, 32);
    assert_int_equal(l.row_bytes, 32);
    assert_int_equal(kiln_tensor_alloc(&t, &wt), 0);
    for (int n = 0; n < 3; n++)
        for (int k = 0; k < 64; k++)
            kiln_code_set(KILN_I4, (uint8_t *)t.data + n * 32, k, (k % 15) - 7);
    for (int i = 0; i < 6; i++)
        t.scales[i] = (float)(i + 1);
    blob = malloc(l.pack_bytes);
    assert_int_equal(kiln_gpu_prepack(&l, &t, blob, &d), 0);
    /* int4 weight-only is the Marlin-style blob (ir/layout_gpu_int4.h): lane 0's word 0
     * holds W[0, 0] (nibble 0), W[0, 8] (nibble 1), W[0, 1] (nibble 4); W[2, 3] is lane
     * 4·2 + 1's nibble 4 of word 0, byte 16·9 + 2 */
    assert_memory_equal(blob, "KILNGP2", 8);
    assert_int_equal(blob[256 + 0], (uint8_t)(((-7) & 0xF) | ((1 & 0xF) << 4)));
    assert_int_equal(blob[256 + 2] & 0xF, (-6) & 0xF);
    assert_int_equal(kiln_code_get(KILN_I4, blob + 256, 2 * (16 * 9 + 2)), 3 - 7);
    assert_int_equal(kiln_i4_code_nibble(2, 3, 64), 2 * (16 * 9 + 2));
    float s5;
    memcpy(&s5, blob + l.scales_off + (1 * 64 + 2) * 4, 4);
    assert_true(s5 == 6.0f); /* (n=2, j=1): int4 weight-only scales are [NG][NP] */
    free(blob);
    kiln_tensor_free(&t);
    kiln_module_free(m);
}

/* A ragged last group: u4 asym group 64, K 80 -> KP 96, NG 2; group 1 covers k 64..95
 * (16 real codes + 16 padding codes equal to its zero point). */
static void test_prepack_ragged(void **state)
{
    (void)state;
    KilnModule *m = kiln_module_new();
    KilnType wt = kiln_type2(KILN_U4, 2, 80);
    wt.q = (KilnQuantSpec){.fmt = KILN_QF_INT4, .symmetric = false, .gran = KILN_GRAN_GROUP, .group = 64};
    KilnFunc *f = tiny(m, "sm_80", wt, "f16");
    KilnGpuLayout l;
    KilnDiag d = {0};
    assert_int_equal(kiln_gpu_layout_for(kiln_find_qgemm(f), f, &l, &d), 0);
    assert_int_equal(l.KP, 96);
    assert_int_equal(l.glen, 64);
    assert_int_equal(l.ngroups, 2);
    KilnTensor t;
    assert_int_equal(kiln_tensor_alloc(&t, &wt), 0);
    assert_int_equal(t.nscales, 4);
    for (int n = 0; n < 2; n++)
        for (int k = 0; k < 80; k++)
            kiln_code_set(KILN_U4, (uint8_t *)t.data + n * 40, k, (k + n) % 16);
    for (int i = 0; i < 4; i++) {
        t.scales[i] = (float)(i + 1);
        t.zeros[i] = 3 + i;
    }
    uint8_t *blob = malloc(l.pack_bytes);
    assert_int_equal(kiln_gpu_prepack(&l, &t, blob, &d), 0);
    int32_t ws[4], zs[4]; /* (n, j) at 2n + j, gathered from the [NG][NP] sections */
    float sc[4];
    for (int i = 0; i < 4; i++) {
        size_t off = (size_t)((i % 2) * l.NP + i / 2) * 4;
        memcpy(&ws[i], blob + l.wsum_off + off, 4);
        memcpy(&zs[i], blob + l.zeros_off + off, 4);
        memcpy(&sc[i], blob + l.scales_off + off, 4);
    }
    for (int n = 0; n < 2; n++) {
        int32_t w0 = 0, w1 = 0;
        for (int k = 0; k < 64; k++)
            w0 += (k + n) % 16;
        for (int k = 64; k < 80; k++)
            w1 += (k + n) % 16;
        w1 += 16 * (3 + 2 * n + 1); /* padding k 80..95: the ragged group's zero point */
        assert_int_equal(ws[2 * n], w0);
        assert_int_equal(ws[2 * n + 1], w1);
        assert_int_equal(zs[2 * n + 1], 3 + 2 * n + 1);
        assert_true(sc[2 * n + 1] == (float)(2 * n + 2));
        assert_int_equal(kiln_code_get(KILN_U4, blob + l.codes_off, kiln_i4_code_nibble(n, 90, l.KP)), 3 + 2 * n + 1);
    }
    free(blob);
    kiln_tensor_free(&t);
    kiln_module_free(m);
}

static void test_layout_errors(void **state)
{
    (void)state;
    KilnModule *m = kiln_module_new();
    KilnType wt = kiln_type2(KILN_I4, 8, 64);
    wt.q = (KilnQuantSpec){.fmt = KILN_QF_INT4, .symmetric = true, .gran = KILN_GRAN_GROUP, .group = 16};
    KilnFunc *f = tiny(m, "sm_80", wt, "f16");
    KilnGpuLayout l;
    KilnDiag d = {0};
    assert_int_equal(kiln_gpu_layout_for(kiln_find_qgemm(f), f, &l, &d), KILN_EINPUT);
    assert_non_null(strstr(d.msg, "group=16 must be a multiple of 32"));
    KilnFunc *g = tiny(m, "avx2", kiln_type2(KILN_I8, 8, 64), "f16");
    g->values[g->insts[1].result].type.q = (KilnQuantSpec){.fmt = KILN_QF_INT8, .symmetric = true,
                                                          .gran = KILN_GRAN_CHANNEL};
    memset(&d, 0, sizeof d);
    assert_int_equal(kiln_gpu_layout_for(kiln_find_qgemm(g), g, &l, &d), KILN_EINPUT);
    assert_non_null(strstr(d.msg, "valid: sm_80, sm_89, sm_90, sm_90a, sm_100"));
    char *src = NULL;
    KilnFunc *h = tiny(m, "sm_80", kiln_type2(KILN_I8, 8, 64), "f16");
    h->values[h->insts[1].result].type.q = g->values[g->insts[1].result].type.q;
    memset(&d, 0, sizeof d);
    assert_int_equal(kiln_ptx_source(h, "sm_91", "kq", &src, &d), KILN_EINPUT);
    assert_non_null(strstr(d.msg, "unknown GPU arch 'sm_91' (valid: sm_80, sm_89, sm_90, sm_90a, sm_100)"));
    memset(&d, 0, sizeof d);
    assert_int_equal(kiln_ptx_source(g, "sm_80", "bad name", &src, &d), KILN_EINPUT);
    assert_null(src);
    kiln_module_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_template_embedded), cmocka_unit_test(test_prepack_bytes),
        cmocka_unit_test(test_layout_errors),     cmocka_unit_test(test_nvrtc_version),
        cmocka_unit_test(test_all_compile),       cmocka_unit_test(test_instructions),
        cmocka_unit_test(test_prepack_ragged),    cmocka_unit_test(test_prepack_f32_weights),
        cmocka_unit_test(test_no_spills),         cmocka_unit_test(test_kernel_names),
        cmocka_unit_test(test_odd_shapes),        cmocka_unit_test(test_nvrtc_absent),
    };
    return cmocka_run_group_tests(tests, setup_all, teardown_all);
}
