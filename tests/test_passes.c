/* tests/test_passes.c — the passes and targets: text tests (the .kir files in tests/passes,
 * first line "; RUN: <pass|pipeline> target=<t>[ expect-error]", output compared
 * with the sibling .expected) plus unit tests of target lookup, layout reasons,
 * the sm_80 FP8 rewrite, dce and the pipeline. KILN_UPDATE_EXPECTED=1 rewrites the
 * .expected files (review the diff before committing). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "passes/passes.h"
#include "test_util.h"

#ifndef KILN_SOURCE_DIR
#define KILN_SOURCE_DIR "."
#endif

/* ---------------------------------------------------------------- helpers */

static KilnTarget target(const char *name)
{
    KilnTarget t;
    KilnDiag d = {0};
    assert_int_equal(kiln_target_lookup(name, &t, &d), 0);
    return t;
}

/* A single layer as frontend/lower.c emits it; act: "dyn", "static", "f16", "bf16",
 * "f32", "fp8". wfmt/wsym/wgran say the weight spec. */
static KilnModule *layer_ex(const char *act, KilnQFormat wfmt, bool wsym, KilnGran wgran,
                            int group, int64_t M, int64_t N, int64_t K, bool epilogue)
{
    KilnModule *m = kiln_module_new();
    KilnFunc *f = kiln_func_new(m, "model.layers.0.mlp.up_proj");
    int x = kiln_func_param(f, "x", kiln_type2(KILN_F32, M, K));
    int w = kiln_emit(f, KILN_OP_WEIGHT, NULL, 0, kiln_type2(KILN_F32, N, K), "w");
    kiln_set_str(f, kiln_last(f), "name", "model.layers.0.mlp.up_proj.weight");
    int wd = w; /* wfmt NONE: a layer the recipe leaves unquantized, plain f32 weight */
    if (wfmt != KILN_QF_NONE) {
        KilnType wt = kiln_type2(kiln_qformat_storage(wfmt, wsym), N, K);
        wt.q = (KilnQuantSpec){.fmt = wfmt, .symmetric = wsym, .gran = wgran, .group = group};
        int wq = kiln_emit(f, KILN_OP_QUANTIZE, &w, 1, wt, "wq");
        wd = kiln_emit(f, KILN_OP_DEQUANTIZE, &wq, 1, kiln_type2(KILN_F32, N, K), "wd");
    }
    int xd = x;
    if (!strcmp(act, "dyn") || !strcmp(act, "static") || !strcmp(act, "fp8")) {
        bool fp8 = !strcmp(act, "fp8"), dyn = strcmp(act, "static") != 0;
        KilnType at = kiln_type2(fp8 ? KILN_E4M3 : KILN_I8, M, K);
        at.q = (KilnQuantSpec){.fmt = fp8 ? KILN_QF_FP8_E4M3 : KILN_QF_INT8,
                               .symmetric = true,
                               .gran = dyn ? KILN_GRAN_TOKEN : KILN_GRAN_TENSOR,
                               .dynamic = dyn,
                               .scale = dyn ? 0.0f : 0.05f};
        int xq = kiln_emit(f, dyn ? KILN_OP_DYNQUANT : KILN_OP_QUANTIZE, &x, 1, at, "xq");
        xd = kiln_emit(f, KILN_OP_DEQUANTIZE, &xq, 1, kiln_type2(KILN_F32, M, K), "xd");
    } else if (!strcmp(act, "f16") || !strcmp(act, "bf16")) {
        int xa = kiln_emit(f, KILN_OP_CAST, &x, 1,
                           kiln_type2(act[0] == 'f' ? KILN_F16 : KILN_BF16, M, K), "xa");
        xd = kiln_emit(f, KILN_OP_CAST, &xa, 1, kiln_type2(KILN_F32, M, K), "xd");
    }
    int ops[2] = {xd, wd};
    int y = kiln_emit(f, KILN_OP_MATMUL, ops, 2, kiln_type2(KILN_F32, M, N), "y");
    if (epilogue) {
        /* bias_add, silu, cast to f16: the chain fuse_qgemm absorbs */
        int b = kiln_emit(f, KILN_OP_WEIGHT, NULL, 0, kiln_type1(KILN_F32, N), "b");
        kiln_set_str(f, kiln_last(f), "name", "model.layers.0.mlp.up_proj.bias");
        int bo[2] = {y, b};
        y = kiln_emit(f, KILN_OP_BIAS_ADD, bo, 2, kiln_type2(KILN_F32, M, N), "yb");
        y = kiln_emit(f, KILN_OP_SILU, &y, 1, kiln_type2(KILN_F32, M, N), "ys");
        y = kiln_emit(f, KILN_OP_CAST, &y, 1, kiln_type2(KILN_F16, M, N), "yh");
    }
    kiln_emit(f, KILN_OP_RETURN, &y, 1, f->values[y].type, NULL);
    return m;
}

static KilnModule *layer(const char *act, KilnQFormat wfmt, bool wsym, KilnGran wgran, int group,
                         int64_t M, int64_t N, int64_t K)
{
    return layer_ex(act, wfmt, wsym, wgran, group, M, N, K, false);
}

static KilnInst *find_op(KilnModule *m, KilnOp op)
{
    KilnFunc *f = m->funcs[0];
    for (int i = 0; i < f->ninsts; i++)
        if (!f->insts[i].dead && f->insts[i].op == op)
            return &f->insts[i];
    return NULL;
}

static const char *attr_s(const KilnInst *in, const char *key)
{
    const KilnAttr *a = kiln_get(in, key);
    return a && (a->kind == KILN_ATTR_STR || a->kind == KILN_ATTR_IDENT) ? a->s : NULL;
}

/* fuse + pick_layout on one layer for target tname; returns the module */
static KilnModule *fused(const char *tname, const char *act, KilnQFormat wfmt, bool wsym,
                         KilnGran wgran, int group, int64_t K)
{
    KilnModule *m = layer(act, wfmt, wsym, wgran, group, 4, 64, K);
    KilnTarget t = target(tname);
    KilnDiag d = {0};
    assert_int_equal(kiln_pass_fuse_qgemm(m, &t, &d), 0);
    int rc = kiln_pass_pick_layout(m, &t, &d);
    if (rc)
        print_message("pick_layout: %s\n", d.msg);
    assert_int_equal(rc, 0);
    return m;
}

static void expect_layout(const char *tname, const char *act, KilnQFormat wfmt, bool wsym,
                          KilnGran wgran, int group, int64_t K, const char *layout,
                          const char *why_part)
{
    KilnModule *m = fused(tname, act, wfmt, wsym, wgran, group, K);
    KilnInst *qg = find_op(m, KILN_OP_QGEMM);
    assert_non_null(qg);
    assert_string_equal(attr_s(qg, "layout"), layout);
    const char *why = attr_s(qg, "why");
    assert_non_null(why);
    if (!strstr(why, why_part))
        print_message("why = \"%s\"\nwanted \"%s\"\n", why, why_part);
    assert_non_null(strstr(why, why_part));
    kiln_module_free(m);
}

/* per = "auto" follows the target's unit (ir/gran_cost.c): int4 at K=4096 takes groups of
 * 32 where a group's rescale is cheap (avx2, weight-only) and 128 on VNNI, tiles and mma
 * accumulators; int8 x int8 groups of 128 on avx2, channel elsewhere; int8 weight-only
 * stays per channel and dynamic activations per token everywhere. */
static void test_auto_per_target(void **state)
{
    (void)state;
    const bool S = true;
    const KilnGran AU = KILN_GRAN_AUTO;
    expect_layout("avx2", "dyn", KILN_QF_INT4, S, AU, 0, 4096, "avx2-u4s8-maddubs",
                  "auto -> group=32 on avx2 (avx2 vpmaddwd");
    expect_layout("avx512", "dyn", KILN_QF_INT4, S, AU, 0, 4096, "avx512-u8s8-vnni",
                  "auto -> group=64 on avx512 (VNNI vpdpbusd");
    /* M=4 is below amx_min_m, but the weights serve a layer's every M: tiles decide */
    expect_layout("amx", "dyn", KILN_QF_INT4, S, AU, 0, 4096, "amx-u8s8-vnni",
                  "auto -> group=128 on amx (AMX tdpbusd");
    expect_layout("amx", "bf16", KILN_QF_INT4, S, AU, 0, 4096, "amx-bf16-dot",
                  "auto -> group=128 on amx (AMX tdpbf16ps");
    expect_layout("avx512", "bf16", KILN_QF_INT4, S, AU, 0, 4096, "avx512-bf16-dot",
                  "auto -> group=32 on avx512 (vdpbf16ps");
    expect_layout("sm_90", "dyn", KILN_QF_INT4, S, AU, 0, 4096, "sm90-mma-s8",
                  "auto -> group=128 on sm_90 (GPU mma.sync");
    expect_layout("sm_90", "f16", KILN_QF_INT4, S, AU, 0, 4096, "sm90-mma-f16-int4",
                  "auto -> group=32 on sm_90 (GPU dequantize in registers");
    /* int8 x int8: groups of 128 where a rescale is cheap (vpmaddwd, VNNI), channel on
     * tiles and mma */
    expect_layout("avx2", "dyn", KILN_QF_INT8, S, AU, 0, 4096, "avx2-i16-madd",
                  "auto -> group=128 on avx2");
    expect_layout("avx512", "dyn", KILN_QF_INT8, S, AU, 0, 4096, "avx512-u8s8-vnni",
                  "auto -> group=128 on avx512");
    expect_layout("amx", "dyn", KILN_QF_INT8, S, AU, 0, 4096, "amx-u8s8-tile",
                  "auto -> channel on amx");
    expect_layout("sm_80", "dyn", KILN_QF_INT8, S, AU, 0, 4096, "sm80-mma-s8",
                  "auto -> channel on sm_80");
    expect_layout("sm_80", "f16", KILN_QF_INT8, S, AU, 0, 4096, "sm80-mma-f16-dequant",
                  "auto -> channel on sm_80");
    /* the model's own numbers and edge cases: tests/test_auto_gran.c */
}

/* ---------------------------------------------------------------- targets */

static void test_target_lookup(void **state)
{
    (void)state;
    KilnTarget t;
    KilnDiag d = {0};
    assert_int_equal(kiln_target_lookup("avx512", &t, &d), 0);
    assert_true(t.kind == KILN_TGT_CPU && (t.isa & KILN_ISA_VNNI) && (t.isa & KILN_ISA_BF16));
    assert_int_equal(kiln_target_lookup("avx512vnni", &t, &d), 0);
    assert_true(t.kind == KILN_TGT_CPU && (t.isa & KILN_ISA_VNNI) && !(t.isa & KILN_ISA_BF16));
    assert_int_equal(kiln_target_lookup("sm_89", &t, &d), 0);
    assert_int_equal(t.sm, 89);
    assert_int_equal(kiln_target_lookup("interp", &t, &d), 0);
    assert_int_equal(t.kind, KILN_TGT_INTERP);
    assert_int_equal(kiln_target_lookup("cuda", &t, &d), 0);
    assert_string_equal(t.name, "sm_80");
    assert_non_null(strstr(t.summary, "alias"));

    assert_int_equal(kiln_target_lookup("avx1024", &t, &d), KILN_EINPUT);
    assert_non_null(strstr(d.msg, "unknown target \"avx1024\""));
    int n;
    const KilnTarget *all = kiln_targets(&n);
    assert_true(n >= 8);
    for (int i = 0; i < n; i++) {
        assert_non_null(strstr(d.msg, all[i].name));
        assert_true(all[i].summary && all[i].summary[0]);
    }
}

static void test_target_cpu(void **state)
{
    (void)state;
    KilnTarget t;
    KilnDiag d = {0};
    unsigned isa = kiln_host_isa();
    const KilnHostCpu *h = kiln_host_cpu();
    int rc = kiln_target_lookup("cpu", &t, &d);
    if (!(isa & KILN_ISA_AVX2)) {
        assert_int_equal(rc, KILN_ENODEV);
        return;
    }
    assert_int_equal(rc, 0);
    /* expectations from what the host has, never from a constant */
    bool v4 = (isa & KILN_ISA_V4) == KILN_ISA_V4;
    bool vnni = (isa & KILN_ISA_V4_VNNI) == KILN_ISA_V4_VNNI;
    bool amx = v4 && (isa & KILN_ISA_AMX) == KILN_ISA_AMX && kiln_host_amx_enable(&d) == 0;
    assert_string_equal(t.name, amx ? "amx" : v4 ? "avx512" : vnni ? "avx512vnni" : "avx2");
    assert_string_equal(t.level, t.name);
    assert_int_equal(t.tune, h->tune);
    assert_true(kiln_target_host_runs(&t));
    /* the probe is cheap and its verdict follows from its own measurements */
    assert_true(h->probe_ms >= 0 && h->probe_ms < 50);
    assert_true(h->fma_ns > 0 && h->fma_subnormal_ns > 0);
    assert_int_equal(!!(h->tune & KILN_TUNE_SUBNORMAL_FREE),
                     h->fma_subnormal_ns < 4 * h->fma_ns + 0.05);
    assert_true(h->model[0] != 0);
    print_message("cpu resolves to %s on %s (%s family %d model %d); FMA %.3f ns, with a "
                  "subnormal operand %.3f ns: subnormals %s; probe %.3f ms\n",
                  t.name, h->model, h->vendor, h->family, h->model_id, h->fma_ns,
                  h->fma_subnormal_ns, h->tune & KILN_TUNE_SUBNORMAL_FREE ? "free" : "slow",
                  h->probe_ms);
    assert_true(kiln_host_cpu() == h); /* probed once */

    assert_int_equal(kiln_target_resolve_cpu(0, 0, &t, &d), KILN_ENODEV);
    assert_non_null(strstr(d.msg, "this CPU lacks AVX2"));
    assert_int_equal(kiln_target_resolve_cpu(KILN_ISA_V3 | KILN_ISA_AVX512, 0, &t, &d), 0);
    assert_string_equal(t.name, "avx2"); /* AVX-512F without VNNI (Skylake-X) runs avx2 kernels */
    assert_int_equal(kiln_target_resolve_cpu(KILN_ISA_V3 | KILN_ISA_AVX512 | KILN_ISA_BF16, 0, &t, &d), 0);
    assert_string_equal(t.name, "avx2");
    /* VNNI without BF16 (Cascade Lake, Ice Lake, guests that hide BF16) */
    assert_int_equal(kiln_target_resolve_cpu(KILN_ISA_V4_VNNI, 0, &t, &d), 0);
    assert_string_equal(t.name, "avx512vnni");
    assert_string_equal(t.level, "avx512vnni");
    assert_true(kiln_level_is_v4(t.level) && !kiln_level_has_bf16(t.level));
    assert_int_equal(kiln_target_resolve_cpu(KILN_ISA_V4_VNNI | KILN_ISA_AMX, 0, &t, &d), 0);
    assert_string_equal(t.name, "avx512vnni"); /* amx needs avx512's BF16 too */
    assert_int_equal(kiln_target_resolve_cpu(KILN_ISA_V4, KILN_TUNE_SUBNORMAL_FREE, &t, &d), 0);
    assert_string_equal(t.name, "avx512");
    assert_int_equal(t.tune, KILN_TUNE_SUBNORMAL_FREE);
    /* AMX needs all three parts on top of v4 */
    assert_int_equal(kiln_target_resolve_cpu(KILN_ISA_V4 | KILN_ISA_AMX, 0, &t, &d), 0);
    assert_string_equal(t.name, "amx");
    assert_string_equal(t.level, "amx");
    assert_int_equal(kiln_target_resolve_cpu(KILN_ISA_V4 | KILN_ISA_AMX_TILE | KILN_ISA_AMX_INT8, 0, &t, &d), 0);
    assert_string_equal(t.name, "avx512");
    assert_int_equal(kiln_target_resolve_cpu(KILN_ISA_V3 | KILN_ISA_AMX, 0, &t, &d), 0);
    assert_string_equal(t.name, "avx2");
    /* the named amx level: runs exactly where the host has AMX, and says why not */
    assert_int_equal(kiln_target_lookup("amx", &t, &d), 0);
    bool host_amx = (isa & (KILN_ISA_V4 | KILN_ISA_AMX)) == (KILN_ISA_V4 | KILN_ISA_AMX);
    assert_int_equal(kiln_target_host_runs(&t), host_amx);
    if (host_amx) {
        assert_null(kiln_target_cannot_run(&t));
    } else {
        const char *why = kiln_target_cannot_run(&t);
        assert_non_null(why);
        if (v4)
            assert_non_null(strstr(why, "no AMX"));
        else if (vnni)
            assert_non_null(strstr(why, "no AVX512-BF16"));
        KilnDiag ad = {0};
        assert_int_equal(kiln_host_amx_enable(&ad), KILN_ENODEV);
        assert_non_null(strstr(ad.msg, "no AMX"));
        print_message("amx: cannot run here: %s\n", why);
    }

    /* the named microarchitectures carry their traits; the ISA levels are portable */
    assert_int_equal(kiln_target_lookup("zen4", &t, &d), 0);
    assert_string_equal(t.level, "avx512");
    assert_int_equal(t.tune, KILN_TUNE_SUBNORMAL_FREE);
    assert_int_equal(kiln_target_lookup("zen3", &t, &d), 0);
    assert_string_equal(t.level, "avx2");
    assert_int_equal(kiln_target_lookup("avx512", &t, &d), 0);
    assert_int_equal(t.tune, 0);

    char buf[64];
    unsigned tune = 7;
    assert_string_equal(kiln_tune_str(KILN_TUNE_SUBNORMAL_FREE, buf, sizeof buf), "subnormal-free");
    assert_string_equal(kiln_tune_str(0, buf, sizeof buf), "");
    assert_int_equal(kiln_tune_parse("subnormal-free", &tune), 0);
    assert_int_equal(tune, KILN_TUNE_SUBNORMAL_FREE);
    assert_int_equal(kiln_tune_parse("", &tune), 0);
    assert_int_equal(tune, 0);
    assert_int_equal(kiln_tune_parse("subnormal-free,turbo", &tune), -1);
    assert_int_equal(kiln_tune_parse("hugepage-weights,subnormal-free", &tune), 0);
    assert_int_equal(tune, KILN_TUNE_SUBNORMAL_FREE | KILN_TUNE_HUGEPAGE_WEIGHTS);
    assert_string_equal(kiln_tune_str(tune, buf, sizeof buf), "subnormal-free,hugepage-weights");
    /* huge-page weights exactly where THP is on and not turned off, on AMD (Intel
     * decodes faster with the software prefetch) */
    const char *off = getenv("KILN_NO_HUGEPAGES");
    bool thp = !strcmp(h->thp, "always") || !strcmp(h->thp, "madvise");
    bool amd = !strcmp(h->vendor, "AuthenticAMD");
    assert_int_equal(!!(h->tune & KILN_TUNE_HUGEPAGE_WEIGHTS),
                     thp && amd && !(off && *off && strcmp(off, "0")));
    /* the far decode prefetch exactly on Intel cores */
    assert_int_equal(!!(h->tune & KILN_TUNE_FAR_PREFETCH), !strcmp(h->vendor, "GenuineIntel"));
    assert_int_equal(kiln_tune_parse("far-prefetch,subnormal-free", &tune), 0);
    assert_int_equal(tune, KILN_TUNE_SUBNORMAL_FREE | KILN_TUNE_FAR_PREFETCH);
    assert_string_equal(kiln_tune_str(tune, buf, sizeof buf), "subnormal-free,far-prefetch");
}

/* ---------------------------------------------------------------- pick_layout */

static void test_layouts_cpu(void **state)
{
    (void)state;
    const bool S = true, A = false;
    const KilnGran CH = KILN_GRAN_CHANNEL, GR = KILN_GRAN_GROUP, AU = KILN_GRAN_AUTO;
    expect_layout("interp", "dyn", KILN_QF_INT8, S, CH, 0, 256, "reference", "interp:");
    expect_layout("interp", "f32", KILN_QF_INT4, A, AU, 0, 256, "reference",
                  "auto -> group=64 on interp (reference interpreter");
    expect_layout("avx2", "dyn", KILN_QF_INT8, S, CH, 0, 256, "avx2-i16-madd", "vpmaddwd");
    expect_layout("avx2", "dyn", KILN_QF_INT4, A, GR, 64, 256, "avx2-u4s8-maddubs",
                  "group=64 weight scales");
    expect_layout("avx2", "dyn", KILN_QF_INT4, A, GR, 64, 256, "avx2-u4s8-maddubs",
                  "vpmaddubsw multiplies them by the s8 activations, 32 products");
    expect_layout("avx2", "dyn", KILN_QF_INT4, A, GR, 64, 256, "avx2-u4s8-maddubs",
                  "z_w*sum(q_a - z_a) subtracted per group, still exact int32");
    expect_layout("avx2", "f16", KILN_QF_INT4, A, AU, 0, 96, "avx2-f32-fma",
                  "auto -> group=32 on avx2 (f32 FMA on decoded weights, K=96;");
    expect_layout("avx2", "bf16", KILN_QF_FP8_E4M3, S, CH, 0, 64, "avx2-f32-fma",
                  "converted to f32 in registers (exact fp8 decode), then 8-wide FMA in f32 "
                  "(activations rounded to bf16 first)");
    expect_layout("avx2", "fp8", KILN_QF_FP8_E4M3, S, AU, 0, 64, "avx2-f32-fma",
                  "auto -> channel on avx2");
    expect_layout("avx2", "f32", KILN_QF_NONE, S, CH, 0, 64, "avx2-f32-fma",
                  "the recipe leaves this layer unquantized: f32 weights packed in 16-column "
                  "panels, 4-row x 16-column register blocks of 8-wide FMA");
    expect_layout("avx2", "f16", KILN_QF_NONE, S, CH, 0, 64, "avx2-f32-fma",
                  "(activations rounded to f16 first)");
    expect_layout("avx512", "dyn", KILN_QF_INT8, S, CH, 0, 256, "avx512-u8s8-vnni",
                  "avx512: VNNI vpdpbusd multiplies u8 activations by s8 weights into exact "
                  "int32; symmetric int8 activations are stored as u8 q+128");
    expect_layout("avx512", "dyn", KILN_QF_INT8, S, CH, 0, 256, "avx512-u8s8-vnni",
                  "per-token act scales and per-channel weight scales applied in the epilogue");
    expect_layout("avx512", "static", KILN_QF_INT4, A, GR, 128, 256, "avx512-u8s8-vnni",
                  "zero-point term");
    expect_layout("avx512", "bf16", KILN_QF_INT4, A, GR, 128, 256, "avx512-bf16-dot",
                  "vdpbf16ps");
    expect_layout("avx512", "f16", KILN_QF_INT4, A, GR, 128, 256, "avx512-f32-fma",
                  "16-wide FMA");
    /* avx512vnni: the v4 kernels, bf16 activations on f32 FMA (no vdpbf16ps) */
    expect_layout("avx512vnni", "dyn", KILN_QF_INT8, S, CH, 0, 256, "avx512vnni-u8s8-vnni",
                  "avx512vnni: VNNI vpdpbusd multiplies u8 activations");
    expect_layout("avx512vnni", "bf16", KILN_QF_INT4, A, GR, 128, 256, "avx512vnni-f32-fma",
                  "no AVX512-BF16 on this level, so no vdpbf16ps");
    expect_layout("avx512vnni", "bf16", KILN_QF_FP8_E5M2, S, CH, 0, 256, "avx512vnni-f32-fma",
                  "16-wide FMA in f32 (activations rounded to bf16 first)");
    /* H5's kernels run fp8 x fp8 on f32 FMA on avx512 too (no bf16-dot for it) */
    expect_layout("avx512", "fp8", KILN_QF_FP8_E4M3, S, CH, 0, 256, "avx512-f32-fma",
                  "weight codes decoded exactly to f32 in registers, 16-wide FMA");
    /* int4 and fp8 weights: portable decode on the ISA levels, read from their bits
     * as f32 subnormals only for targets whose cores do that at full speed */
    expect_layout("avx512", "f16", KILN_QF_INT4, A, GR, 128, 256, "avx512-f32-fma",
                  "converted exactly with vcvtdq2ps");
    expect_layout("zen4", "f16", KILN_QF_INT4, A, GR, 128, 256, "avx512-f32-fma-subnormal",
                  "read from their bits as f32 subnormals");
    expect_layout("zen3", "f16", KILN_QF_INT4, A, GR, 128, 256, "avx2-f32-fma-subnormal",
                  "tune subnormal-free");
    expect_layout("avx2", "fp8", KILN_QF_FP8_E4M3, S, CH, 0, 64, "avx2-f32-fma",
                  "widened with vcvtph2ps");
    expect_layout("zen3", "fp8", KILN_QF_FP8_E4M3, S, CH, 0, 64, "avx2-f32-fma-subnormal",
                  "fp8 codes are read from their bits");
    expect_layout("zen4", "bf16", KILN_QF_FP8_E5M2, S, CH, 0, 256, "avx512-bf16-dot-subnormal",
                  "vdpbf16ps");
    expect_layout("avx512", "bf16", KILN_QF_FP8_E5M2, S, CH, 0, 256, "avx512-bf16-dot",
                  "vcvtph2ps");
    /* the traits do not change kernels that read no int4/fp8 weight as a float */
    expect_layout("zen4", "dyn", KILN_QF_INT4, A, GR, 128, 256, "avx512-u8s8-vnni", "vpdpbusd");
    expect_layout("zen3", "f16", KILN_QF_INT8, S, CH, 0, 256, "avx2-f32-fma-subnormal",
                  "read as f32 subnormals");
    expect_layout("avx512", "f16", KILN_QF_INT8, S, CH, 0, 256, "avx512-f32-fma",
                  "4 k to a 32-bit word per column, read in place");
    /* K not a multiple of 4: one byte per k, sign-extended, on every target */
    expect_layout("zen4", "f16", KILN_QF_INT8, S, CH, 0, 198, "avx512-f32-fma", "q - z");
    expect_layout("zen4", "f32", KILN_QF_NONE, S, CH, 0, 64, "avx512-f32-fma", "unquantized");
    /* f32 weights are not exact in bf16: bf16 activations still take f32 FMA */
    expect_layout("avx512", "bf16", KILN_QF_NONE, S, CH, 0, 256, "avx512-f32-fma",
                  "register blocks of 16-wide FMA, f32 accumulate (activations rounded to bf16");
}

static void test_layouts_gpu(void **state)
{
    (void)state;
    const bool S = true, A = false;
    const KilnGran CH = KILN_GRAN_CHANNEL, GR = KILN_GRAN_GROUP;
    expect_layout("sm_80", "dyn", KILN_QF_INT8, S, CH, 0, 256, "sm80-mma-s8", "m16n8k32 s8");
    expect_layout("sm_80", "f16", KILN_QF_INT4, A, GR, 128, 256, "sm80-mma-f16-int4",
                  "Marlin-style pre-shuffled int4, one 128-bit load per thread");
    expect_layout("sm_80", "bf16", KILN_QF_INT4, A, GR, 128, 256, "sm80-mma-bf16-int4",
                  "m16n8k16 bf16");
    expect_layout("sm_80", "f16", KILN_QF_INT8, S, CH, 0, 256, "sm80-mma-f16-dequant",
                  "m16n8k16 f16");
    expect_layout("sm_80", "f32", KILN_QF_INT8, S, CH, 0, 256, "sm80-f32-fma-dequant",
                  "CUDA cores");
    expect_layout("sm_89", "fp8", KILN_QF_FP8_E4M3, S, CH, 0, 256, "sm89-mma-fp8",
                  "native FP8 tensor cores");
    expect_layout("sm_89", "dyn", KILN_QF_INT4, S, GR, 128, 256, "sm89-mma-s8",
                  "int4 weights unpacked to s8");
    expect_layout("sm_90", "fp8", KILN_QF_FP8_E4M3, S, CH, 0, 256, "sm90-mma-fp8", "e4m3/e5m2");
    expect_layout("sm_90", "dyn", KILN_QF_INT8, S, CH, 0, 256, "sm90-mma-s8", "mma.sync");
    expect_layout("sm_90", "f16", KILN_QF_FP8_E5M2, S, CH, 0, 256, "sm90-mma-f16-dequant",
                  "weight-only fp8 e5m2");
    expect_layout("sm_80", "f32", KILN_QF_NONE, S, CH, 0, 256, "sm80-f32-fma",
                  "the GPU path for f32 weights is a plain FMA GEMM");
    expect_layout("interp", "f32", KILN_QF_NONE, S, CH, 0, 256, "reference",
                  "unquantized f32 weights");
}

static void test_sm80_fp8_rewrite(void **state)
{
    (void)state;
    KilnModule *m = fused("sm_80", "fp8", KILN_QF_FP8_E4M3, true, KILN_GRAN_CHANNEL, 0, 128);
    KilnInst *qg = find_op(m, KILN_OP_QGEMM);
    assert_null(kiln_get(qg, "act"));
    assert_string_equal(attr_s(qg, "act_dtype"), "f16");
    assert_string_equal(attr_s(qg, "layout"), "sm80-fp8-weightonly-f16");
    assert_non_null(strstr(attr_s(qg, "why"),
                           "sm_80 has no FP8 tensor cores: FP8 weights kept, activations run in "
                           "f16"));
    /* a second run keeps the layout: the rewritten qgemm is a weight-only fp8 one */
    KilnTarget t = target("sm_80");
    KilnDiag d = {0};
    assert_int_equal(kiln_pass_pick_layout(m, &t, &d), 0);
    qg = find_op(m, KILN_OP_QGEMM);
    assert_string_equal(attr_s(qg, "layout"), "sm80-fp8-weightonly-f16");
    kiln_module_free(m);
    /* sm_89 keeps fp8 activations */
    m = fused("sm_89", "fp8", KILN_QF_FP8_E4M3, true, KILN_GRAN_CHANNEL, 0, 128);
    qg = find_op(m, KILN_OP_QGEMM);
    assert_non_null(kiln_get(qg, "act"));
    kiln_module_free(m);
}

static void test_layout_errors(void **state)
{
    (void)state;
    KilnTarget t = target("avx2");
    KilnDiag d = {0};
    /* auto int4 with K=100: no group among 128/64/32 */
    KilnModule *m = layer("f16", KILN_QF_INT4, false, KILN_GRAN_AUTO, 0, 2, 8, 100);
    assert_int_equal(kiln_pass_fuse_qgemm(m, &t, &d), 0);
    assert_int_equal(kiln_pass_pick_layout(m, &t, &d), KILN_EINPUT);
    assert_non_null(strstr(d.msg, "model.layers.0.mlp.up_proj"));
    assert_non_null(strstr(d.msg, "K=100"));
    kiln_module_free(m);
    /* a group that does not divide K is a ragged last group: K = 96 at group 128 is
     * one group of 96, fine for the int4 kernels (a multiple of 8) */
    m = layer("dyn", KILN_QF_INT4, true, KILN_GRAN_GROUP, 128, 2, 8, 96);
    assert_int_equal(kiln_pass_fuse_qgemm(m, &t, &d), 0);
    assert_int_equal(kiln_pass_pick_layout(m, &t, &d), 0);
    kiln_module_free(m);
    /* ...but the ragged tail needs the kernel's unit: K = 100 = 0·128 + 100 is not a
     * multiple of 8; the error names layer, K, group and the unit */
    m = layer("dyn", KILN_QF_INT4, true, KILN_GRAN_GROUP, 128, 2, 8, 100);
    assert_int_equal(kiln_pass_fuse_qgemm(m, &t, &d), 0);
    assert_int_equal(kiln_pass_pick_layout(m, &t, &d), KILN_EINPUT);
    assert_non_null(strstr(d.msg, "model.layers.0.mlp.up_proj"));
    assert_non_null(strstr(d.msg, "multiples of 8 (K = 100, group = 128, ragged last group of 100)"));
    kiln_module_free(m);
    /* the kernel's own constraints (ir/layout.c) surface here, with the layer name:
     * i16-madd reads k in pairs, so K = 63 has no avx2 int8 kernel */
    m = layer("dyn", KILN_QF_INT8, true, KILN_GRAN_CHANNEL, 0, 2, 8, 63);
    assert_int_equal(kiln_pass_fuse_qgemm(m, &t, &d), 0);
    assert_int_equal(kiln_pass_pick_layout(m, &t, &d), KILN_EINPUT);
    assert_non_null(strstr(d.msg, "layer \"model.layers.0.mlp.up_proj\": %y = qgemm: layout "
                                  "avx2-i16-madd needs K and the group to be multiples of 2"));
    assert_non_null(strstr(d.msg, "(target avx2)"));
    kiln_module_free(m);
    /* the same K is fine for f32 FMA (k one at a time), weight-only and f32 weights */
    m = layer("f32", KILN_QF_NONE, true, KILN_GRAN_CHANNEL, 0, 2, 8, 63);
    assert_int_equal(kiln_pass_fuse_qgemm(m, &t, &d), 0);
    assert_int_equal(kiln_pass_pick_layout(m, &t, &d), 0);
    kiln_module_free(m);
}

/* Layers the recipe leaves unquantized: matmul(x, f32 weight) becomes a qgemm whose
 * weight is the f32 weight itself, on every target, and prepack routes it too. */
static void test_fuse_f32_weights(void **state)
{
    (void)state;
    const char *targets[] = {"interp", "avx2", "avx512", "sm_80"};
    for (int i = 0; i < 4; i++) {
        KilnModule *m = layer_ex("f32", KILN_QF_NONE, true, KILN_GRAN_CHANNEL, 0, 3, 24, 40, true);
        KilnTarget t = target(targets[i]);
        KilnDiag d = {0};
        if (t.kind == KILN_TGT_CUDA) /* as lowering sets it: prepack checks the GPU kernel */
            kiln_fset_ident(m->funcs[0], "target", targets[i]);
        int rc = kiln_run_pipeline(m, &t, NULL, &d);
        if (rc)
            print_message("%s: %s\n", targets[i], d.msg);
        assert_int_equal(rc, 0);
        assert_null(find_op(m, KILN_OP_MATMUL));
        KilnInst *qg = find_op(m, KILN_OP_QGEMM);
        assert_non_null(qg);
        KilnFunc *f = m->funcs[0];
        assert_string_equal(attr_s(qg, "act_dtype"), "f32");
        assert_string_equal(attr_s(qg, "epilogue"), "silu");
        assert_int_equal(qg->nops, 3); /* the bias */
        assert_int_equal(f->values[qg->result].type.dt, KILN_F16);
        const KilnType *wt = &f->values[qg->ops[1]].type;
        assert_int_equal(wt->dt, KILN_F32);
        assert_int_equal(wt->q.fmt, KILN_QF_NONE);
        KilnInst *wi = kiln_def(f, qg->ops[1]);
        assert_non_null(wi);
        assert_int_equal(wi->op, t.kind == KILN_TGT_INTERP ? KILN_OP_WEIGHT : KILN_OP_PREPACK);
        const char *want = t.kind == KILN_TGT_INTERP ? "reference"
                           : t.kind == KILN_TGT_CUDA ? "sm80-f32-fma"
                                                     : NULL;
        char cpu[32];
        snprintf(cpu, sizeof cpu, "%s-f32-fma", t.name);
        assert_string_equal(attr_s(qg, "layout"), want ? want : cpu);
        kiln_module_free(m);
    }
    /* quantized activations with an f32 weight have no kernel: stays a matmul */
    KilnModule *m = layer("dyn", KILN_QF_NONE, true, KILN_GRAN_CHANNEL, 0, 2, 8, 16);
    KilnTarget t = target("avx2");
    KilnDiag d = {0};
    assert_int_equal(kiln_pass_fuse_qgemm(m, &t, &d), 0);
    assert_null(find_op(m, KILN_OP_QGEMM));
    kiln_module_free(m);
}

/* ---------------------------------------------------------------- fuse, dce, pipeline */

static void test_fuse_patterns(void **state)
{
    (void)state;
    KilnTarget t = target("interp");
    KilnDiag d = {0};
    /* f32 activations: weight-only with act_dtype f32, one qgemm, the dequantize gone */
    KilnModule *m = layer("f32", KILN_QF_INT8, true, KILN_GRAN_CHANNEL, 0, 2, 8, 16);
    assert_int_equal(kiln_pass_fuse_qgemm(m, &t, &d), 0);
    KilnInst *qg = find_op(m, KILN_OP_QGEMM);
    assert_non_null(qg);
    assert_string_equal(attr_s(qg, "act_dtype"), "f32");
    assert_null(find_op(m, KILN_OP_MATMUL));
    assert_null(find_op(m, KILN_OP_DEQUANTIZE));
    KilnFunc *f = m->funcs[0];
    assert_string_equal(f->values[qg->result].name, "y"); /* takes the matmul's name */
    assert_string_equal(f->values[qg->ops[0]].name, "x");
    assert_int_equal(f->values[qg->ops[1]].type.q.fmt, KILN_QF_INT8);
    kiln_module_free(m);

    /* int8 activations with fp8 weights have no kernel: left as a matmul */
    m = layer("dyn", KILN_QF_FP8_E4M3, true, KILN_GRAN_CHANNEL, 0, 2, 8, 16);
    assert_int_equal(kiln_pass_fuse_qgemm(m, &t, &d), 0);
    assert_null(find_op(m, KILN_OP_QGEMM));
    assert_non_null(find_op(m, KILN_OP_MATMUL));
    kiln_module_free(m);
}

static void test_dce_fixed_point(void **state)
{
    (void)state;
    KilnModule *m = kiln_module_new();
    KilnFunc *f = kiln_func_new(m, "dce");
    int x = kiln_func_param(f, "x", kiln_type2(KILN_F32, 2, 4));
    /* a chain of three unused values, then one used */
    int a = kiln_emit(f, KILN_OP_CAST, &x, 1, kiln_type2(KILN_F16, 2, 4), "a");
    int b = kiln_emit(f, KILN_OP_CAST, &a, 1, kiln_type2(KILN_F32, 2, 4), "b");
    kiln_emit(f, KILN_OP_SILU, &b, 1, kiln_type2(KILN_F32, 2, 4), "c");
    int e = kiln_emit(f, KILN_OP_GELU, &x, 1, kiln_type2(KILN_F32, 2, 4), "e");
    kiln_emit(f, KILN_OP_RETURN, &e, 1, kiln_type2(KILN_F32, 2, 4), NULL);
    KilnTarget t = target("interp");
    KilnDiag d = {0};
    assert_int_equal(kiln_pass_dce(m, &t, &d), 0);
    assert_int_equal(f->ninsts, 2);
    assert_int_equal(f->insts[0].op, KILN_OP_GELU);
    assert_int_equal(f->insts[1].op, KILN_OP_RETURN);
    assert_int_equal(f->values[e].def, 0);
    kiln_module_free(m);
}

static void test_pipeline_print_after_all(void **state)
{
    (void)state;
    KilnModule *m = layer("dyn", KILN_QF_INT4, false, KILN_GRAN_AUTO, 0, 4, 32, 256);
    KilnTarget t = target("avx2");
    KilnDiag d = {0};
    char *buf = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&buf, &len);
    int rc = kiln_run_pipeline(m, &t, out, &d);
    fclose(out);
    if (rc)
        print_message("pipeline: %s\n", d.msg);
    assert_int_equal(rc, 0);
    int n;
    const char *const *names = kiln_pass_names(&n);
    assert_int_equal(n, 5);
    for (int i = 0; i < n; i++) {
        char hdr[64];
        snprintf(hdr, sizeof hdr, "; *** IR after %s ***", names[i]);
        assert_non_null(strstr(buf, hdr));
    }
    /* the end state: weight, quantize (auto resolved: the model's group=64 for
     * asymmetric int4 on avx2 at K=256), prepack, qgemm, return */
    assert_non_null(strstr(buf, "u4[32,256]{int4 asym group=64}"));
    KilnFunc *f = m->funcs[0];
    assert_int_equal(f->ninsts, 5);
    assert_int_equal(f->insts[2].op, KILN_OP_PREPACK);
    assert_int_equal(f->insts[3].op, KILN_OP_QGEMM);
    assert_string_equal(attr_s(&f->insts[2], "layout"), "avx2-u4s8-maddubs");
    free(buf);

    assert_int_equal(kiln_run_pass("fold_everything", m, &t, &d), KILN_EINPUT);
    assert_non_null(strstr(d.msg, "pick_layout"));
    kiln_module_free(m);
}

/* ---------------------------------------------------------------- fusion keeps the meaning */

/* Deterministic weights in [-1, 1) from the name, so both runs see the same data. */
static int fake_weights(void *ctx, const char *name, KilnTensor *out, KilnDiag *d)
{
    (void)ctx;
    (void)d;
    uint32_t h = 2166136261u;
    for (const char *p = name; *p; p++)
        h = (h ^ (unsigned char)*p) * 16777619u;
    float *w = out->data;
    for (int64_t i = 0; i < kiln_type_numel(&out->type); i++) {
        h = h * 1664525u + 1013904223u;
        w[i] = (float)(h >> 8) / 8388608.0f - 1.0f;
    }
    return 0;
}

static float out_at(const KilnTensor *t, int64_t i)
{
    if (t->type.dt == KILN_F16) {
        /* f16 bits -> f32 without numerics.h, enough for normal values */
        uint16_t h = ((const uint16_t *)t->data)[i];
        int e = (h >> 10) & 31, mant = h & 1023;
        float v = e ? ldexpf(1.0f + mant / 1024.0f, e - 15) : ldexpf(mant / 1024.0f, -14);
        return (h & 0x8000) ? -v : v;
    }
    return ((const float *)t->data)[i];
}

/* The interpreter on a layer before and after fuse_qgemm: the qgemm is defined to
 * compute what the unfused ops compute, up to f32 reassociation (integer paths sum
 * exactly, then scale once) and one f16 rounding step of the output. */
static void check_fusion_equivalent(const char *act, KilnQFormat wfmt, bool wsym, KilnGran gran,
                                    int group, bool epi)
{
    const int64_t M = 3, N = 16, K = 64;
    KilnModule *ref = layer_ex(act, wfmt, wsym, gran, group, M, N, K, epi);
    KilnModule *fus = layer_ex(act, wfmt, wsym, gran, group, M, N, K, epi);
    KilnTarget t = target("interp");
    KilnDiag d = {0};
    assert_int_equal(kiln_pass_fuse_qgemm(fus, &t, &d), 0);
    assert_non_null(find_op(fus, KILN_OP_QGEMM));
    assert_null(find_op(fus, KILN_OP_MATMUL));

    KilnTensor x;
    KilnType xt = kiln_type2(KILN_F32, M, K);
    assert_int_equal(kiln_tensor_alloc(&x, &xt), 0);
    float *xv = x.data;
    for (int64_t i = 0; i < M * K; i++)
        xv[i] = (float)((i * 37) % 101) / 25.0f - 2.0f;
    KilnTensor y0, y1;
    int rc = kiln_interp_run(ref->funcs[0], &x, 1, fake_weights, NULL, &y0, &d);
    if (rc)
        print_message("interp (unfused): %s\n", d.msg);
    assert_int_equal(rc, 0);
    rc = kiln_interp_run(fus->funcs[0], &x, 1, fake_weights, NULL, &y1, &d);
    if (rc)
        print_message("interp (fused): %s\n", d.msg);
    assert_int_equal(rc, 0);
    assert_int_equal(y0.type.dt, y1.type.dt);
    for (int64_t i = 0; i < M * N; i++) {
        float a = out_at(&y0, i), b = out_at(&y1, i);
        /* f32 sums of K=64 terms of size <= 2: ~1e-5 relative; an f16 output may
         * round one ulp (2^-11 relative) the other way */
        float tol = (epi ? 2e-3f : 1e-4f) * (1.0f + fabsf(a));
        if (fabsf(a - b) > tol)
            print_message("%s: y[%lld] unfused %g fused %g\n", act, (long long)i, a, b);
        assert_true(fabsf(a - b) <= tol);
    }
    kiln_tensor_free(&x);
    kiln_tensor_free(&y0);
    kiln_tensor_free(&y1);
    kiln_module_free(ref);
    kiln_module_free(fus);
}

static void test_fusion_equivalent(void **state)
{
    (void)state;
    check_fusion_equivalent("dyn", KILN_QF_INT8, true, KILN_GRAN_CHANNEL, 0, false);
    check_fusion_equivalent("dyn", KILN_QF_INT4, false, KILN_GRAN_GROUP, 32, true);
    check_fusion_equivalent("static", KILN_QF_INT8, false, KILN_GRAN_CHANNEL, 0, false);
    check_fusion_equivalent("f16", KILN_QF_INT4, false, KILN_GRAN_GROUP, 32, true);
    check_fusion_equivalent("bf16", KILN_QF_FP8_E4M3, true, KILN_GRAN_CHANNEL, 0, false);
    check_fusion_equivalent("f32", KILN_QF_INT8, true, KILN_GRAN_TENSOR, 0, true);
    check_fusion_equivalent("fp8", KILN_QF_FP8_E4M3, true, KILN_GRAN_CHANNEL, 0, true);
    check_fusion_equivalent("f32", KILN_QF_NONE, true, KILN_GRAN_CHANNEL, 0, true);
    check_fusion_equivalent("bf16", KILN_QF_NONE, true, KILN_GRAN_CHANNEL, 0, false);
}

/* ---------------------------------------------------------------- text tests */

static int run_text_test(const char *dir, const char *base)
{
    char path[1024], epath[1024];
    snprintf(path, sizeof path, "%s/%s", dir, base);
    snprintf(epath, sizeof epath, "%s/%.*s.expected", dir, (int)(strlen(base) - 4), base);
    char *text = tu_read_file(path, NULL);
    if (!text) {
        print_message("%s: cannot read\n", path);
        return 1;
    }
    char pass[64] = "", tname[64] = "", extra[64] = "";
    if (sscanf(text, "; RUN: %63s target=%63s %63s", pass, tname, extra) < 2) {
        print_message("%s: first line must be \"; RUN: <pass> target=<target>\"\n", path);
        free(text);
        return 1;
    }
    bool want_error = strcmp(extra, "expect-error") == 0;
    int fails = 0;
    KilnModule *m = kiln_module_new();
    KilnDiag d = {0};
    KilnTarget t;
    char *got = NULL;
    int rc = kiln_parse_module(text, strlen(text), path, m, &d);
    if (!rc)
        rc = kiln_target_lookup(tname, &t, &d);
    if (rc) {
        print_message("%s: setup: %s\n", path, d.msg);
        fails++;
        goto done;
    }
    rc = strcmp(pass, "pipeline") == 0 ? kiln_run_pipeline(m, &t, NULL, &d)
                                       : kiln_run_pass(pass, m, &t, &d);
    if (want_error) {
        if (!rc) {
            print_message("%s: expected an error, the pass succeeded\n", path);
            fails++;
            goto done;
        }
        got = malloc(strlen(d.msg) + 2);
        sprintf(got, "%s\n", d.msg);
    } else {
        if (rc) {
            print_message("%s: %s failed: %s\n", path, pass, d.msg);
            fails++;
            goto done;
        }
        got = kiln_print_module_str(m);
        /* what a pass prints must parse back to the same text */
        KilnModule *m2 = kiln_module_new();
        KilnDiag d2 = {0};
        if (kiln_parse_module(got, strlen(got), "<printed>", m2, &d2) != 0) {
            print_message("%s: printed IR does not parse: %s\n", path, d2.msg);
            fails++;
        } else {
            char *again = kiln_print_module_str(m2);
            if (strcmp(again, got) != 0) {
                print_message("%s: print -> parse -> print differs\n", path);
                fails++;
            }
            free(again);
        }
        kiln_module_free(m2);
    }
    if (getenv("KILN_UPDATE_EXPECTED")) {
        FILE *o = fopen(epath, "wb");
        if (o) {
            fputs(got, o);
            fclose(o);
        }
        goto done;
    }
    char *want = tu_read_file(epath, NULL);
    if (!want) {
        print_message("%s: missing (KILN_UPDATE_EXPECTED=1 writes it)\n", epath);
        fails++;
    } else if (want_error ? strstr(got, want) == NULL && strcmp(got, want) != 0
                          : strcmp(got, want) != 0) {
        print_message("%s: output differs\n--- got\n%s--- expected\n%s", path, got, want);
        fails++;
    }
    free(want);
done:
    free(got);
    free(text);
    kiln_module_free(m);
    return fails;
}

static void test_text(void **state)
{
    (void)state;
    const char *dir = KILN_SOURCE_DIR "/tests/passes";
    char **names;
    int n = tu_list_dir(dir, ".kir", &names);
    assert_true(n >= 0);
    int fails = 0;
    for (int i = 0; i < n; i++) {
        int f = run_text_test(dir, names[i]);
        print_message("%s %s\n", f ? "FAIL" : "ok  ", names[i]);
        fails += f;
    }
    tu_free_list(names, n);
    assert_true(n >= 10);
    assert_int_equal(fails, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_target_lookup),
        cmocka_unit_test(test_target_cpu),
        cmocka_unit_test(test_layouts_cpu),
        cmocka_unit_test(test_auto_per_target),
        cmocka_unit_test(test_layouts_gpu),
        cmocka_unit_test(test_sm80_fp8_rewrite),
        cmocka_unit_test(test_layout_errors),
        cmocka_unit_test(test_fuse_f32_weights),
        cmocka_unit_test(test_fuse_patterns),
        cmocka_unit_test(test_dce_fixed_point),
        cmocka_unit_test(test_pipeline_print_after_all),
        cmocka_unit_test(test_fusion_equivalent),
        cmocka_unit_test(test_text),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
