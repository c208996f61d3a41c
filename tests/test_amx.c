/* tests/test_amx.c — the amx target level (issue 16): what the host can run decides
 * every expectation (`kiln targets`, ir/target.h); an AOT library built for amx
 * records it and is refused, saying why, where the CPU has no AMX. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "codegen/cpu/cpu.h"
#include "ir/amx_model.h"
#include "ir/interp.h"
#include "ir/layout.h"
#include "ir/numerics.h"
#include "ir/target.h"
#include "runtime/aot_layout.h"
#include "runtime/runtime.h"
#include "test_util.h"

static bool host_amx(void)
{
    return (kiln_host_isa() & (KILN_ISA_V4 | KILN_ISA_AMX)) == (KILN_ISA_V4 | KILN_ISA_AMX);
}

/* Run a shell command, its stdout+stderr into out; the exit status. */
static int run(char *out, size_t n, const char *fmt, ...)
{
    char cmd[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    strncat(cmd, " 2>&1", sizeof cmd - strlen(cmd) - 1);
    FILE *p = popen(cmd, "r");
    if (!p)
        return -1;
    size_t len = fread(out, 1, n - 1, p);
    out[len] = 0;
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void test_targets_lists_amx(void **state)
{
    (void)state;
    char out[16384];
    assert_int_equal(run(out, sizeof out, "'%s' targets", KILN_BIN), 0);
    assert_non_null(strstr(out, "\namx "));
    KilnTarget t;
    KilnDiag d = {0};
    assert_int_equal(kiln_target_lookup("amx", &t, &d), 0);
    const char *why = kiln_target_cannot_run(&t);
    char want[256];
    snprintf(want, sizeof want, "  amx        %s%s", why ? "compiled only here, cannot run here: " : "runs here",
             why ? why : "");
    if (!strstr(out, want))
        fail_msg("kiln targets lacks \"%s\":\n%s", want, out);
    print_message("%s\n", want);
}

/* kiln aot --target amx: the manifest names the level; kiln_aot_open loads it on an
 * AMX host (after the tile-state request) and refuses it elsewhere, naming AMX. */
static void test_aot_records_amx(void **state)
{
    (void)state;
    char dir[] = "/tmp/kiln-amx-aot-XXXXXX", out[16384];
    assert_non_null(mkdtemp(dir));
    int rc = run(out, sizeof out, "'%s' aot '%s/recipes/w8a8-int8-dynamic.lua' --shape 512,64,128 "
                 "--target amx -o '%s/lib'", KILN_BIN, KILN_SOURCE_DIR, dir);
    if (rc)
        fail_msg("kiln aot --target amx: exit %d:\n%s", rc, out);
    char path[600];
    snprintf(path, sizeof path, "%s/lib/manifest.json", dir);
    char *man = tu_read_file(path, NULL);
    assert_non_null(man);
    assert_non_null(strstr(man, "\"target\": \"amx\""));
    assert_non_null(strstr(man, "\"isa\": \"amx\""));
    /* M = 512: the pass chose tiles, and the manifest says from which M */
    assert_non_null(strstr(man, "\"layout\": \"amx-u8s8-tile\""));
    assert_non_null(strstr(man, "\"amx_min_m\": 4") /* KILN_AMX_MIN_M_INT8 */);
    free(man);
    snprintf(path, sizeof path, "%s/lib", dir);
    KilnAot *a = NULL;
    KilnDiag d = {0};
    rc = kiln_aot_open(path, &a, &d);
    if (host_amx()) {
        assert_int_equal(rc, 0);
        KilnLayout l;
        assert_int_equal(kiln_aot_layout(a, 0, &l, &d), 0); /* rebuilt with tiles */
        assert_string_equal(l.name, "amx-u8s8-tile");
        assert_int_equal(l.tiles_min_m, KILN_AMX_MIN_M_INT8);
        kiln_aot_close(a);
    } else {
        assert_int_not_equal(rc, 0);
        assert_non_null(strstr(d.msg, "built for target 'amx'"));
        assert_non_null(strstr(d.msg, "no AMX"));
        print_message("refused here: %s\n", d.msg);
    }
    run(out, sizeof out, "rm -rf '%s'", dir);
}

/* The choice per shape through the whole chain (recipe -> lowering -> passes):
 * tiles from the default break-even M, vectors below it, and a recipe's
 * amx_min_m moving it; a bad amx_min_m is an error at its line. */
static void test_choice_per_shape(void **state)
{
    (void)state;
    char dir[] = "/tmp/kiln-amx-recipe-XXXXXX", out[65536], path[600];
    assert_non_null(mkdtemp(dir));
    const char *lua = "return recipe \"amx4\" {\n  amx_min_m = 4,\n"
                      "  rule \"*\" { weights = int8, activations = int8 { per = \"token\" } },\n}\n";
    snprintf(path, sizeof path, "%s/amx4.lua", dir);
    FILE *f = fopen(path, "w");
    fputs(lua, f);
    fclose(f);
    static const struct {
        const char *recipe;
        int M;
        const char *layout, *why;
    } rows[] = {
        {"recipes/w8a8-int8-dynamic.lua", 512, "\"amx-u8s8-tile\"", "M=512 >= amx_min_m = 4, the default for int8"},
        {"recipes/w8a8-int8-dynamic.lua", 4, "\"amx-u8s8-tile\"", "M=4 >= amx_min_m = 4"},
        {"recipes/w8a8-int8-dynamic.lua", 1, "\"amx-u8s8-vnni\"", "M=1 < amx_min_m = 4"},
        {"recipes/w8a8-int8-dynamic.lua", 3, "\"amx-u8s8-vnni\"", "M=3 < amx_min_m = 4"},
        {"recipes/w4a8.lua", 16, "\"amx-u8s8-tile\"", "M=16 >= amx_min_m = 16, the default for int4"},
        {"recipes/w4a8.lua", 8, "\"amx-u8s8-vnni\"", "M=8 < amx_min_m = 16, the default for int4"},
        {NULL, 8, "\"amx-u8s8-tile\"", "M=8 >= the recipe's amx_min_m = 4"},
        {NULL, 3, "\"amx-u8s8-vnni\"", "M=3 < the recipe's amx_min_m = 4"},
        {"recipes/w8a8-int8-dynamic.lua", 512, "\"avx512-u8s8-vnni\"", NULL}, /* target avx512 */
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        char rp[700];
        if (rows[i].recipe)
            snprintf(rp, sizeof rp, "%s/%s", KILN_SOURCE_DIR, rows[i].recipe);
        else
            snprintf(rp, sizeof rp, "%s", path);
        int rc = run(out, sizeof out, "'%s' ir '%s' --shape %d,64,128 --target %s", KILN_BIN, rp,
                     rows[i].M, rows[i].why ? "amx" : "avx512");
        if (rc || !strstr(out, rows[i].layout) || (rows[i].why && !strstr(out, rows[i].why)))
            fail_msg("row %zu (M=%d): exit %d, want %s / %s:\n%s", i, rows[i].M, rc, rows[i].layout,
                     rows[i].why ? rows[i].why : "-", out);
    }
    f = fopen(path, "w");
    fputs("return recipe \"bad\" {\n  amx_min_m = 0,\n  rule \"*\" { weights = int8 },\n}\n", f);
    fclose(f);
    int rc = run(out, sizeof out, "'%s' ir '%s' --shape 8,64,128 --target amx", KILN_BIN, path);
    assert_int_equal(rc, 2);
    if (!strstr(out, ":2:") || !strstr(out, "amx_min_m must be an integer from 1"))
        fail_msg("bad amx_min_m: %s", out);
    run(out, sizeof out, "rm -rf '%s'", dir);
}

/* kiln run --target amx: on an AMX host the layer runs through the API (tile state
 * requested, the tile kernel on the pool's threads) and --check holds; elsewhere it is
 * refused as "no device" (exit 3), saying what the CPU lacks. */
static void test_run_amx(void **state)
{
    (void)state;
    static char out[65536];
    int rc = run(out, sizeof out, "'%s' run '%s/recipes/w8a8-int8-dynamic.lua' --shape 40,70,136 "
                 "--target amx --check", KILN_BIN, KILN_SOURCE_DIR);
    if (host_amx()) {
        if (rc)
            fail_msg("kiln run --target amx: exit %d:\n%s", rc, out);
        assert_non_null(strstr(out, "amx-u8s8-tile"));
    } else {
        if (rc != 3 || !strstr(out, "cannot run target 'amx': ") || !strstr(out, "no AMX"))
            fail_msg("kiln run --target amx without AMX: exit %d:\n%s", rc, out);
        print_message("%.*s\n", (int)strcspn(out, "\n"), out);
    }
}

/* kiln bench probes the AMX peaks where the CPU has AMX and says why not elsewhere;
 * a tile kernel on an AMX host is rated against the tdpbusd peak. */
static void test_bench_amx_probe(void **state)
{
    (void)state;
    static char out[65536];
    KilnDiag d = {0};
    bool amx = host_amx() && kiln_host_amx_enable(&d) == 0;
    int rc = run(out, sizeof out, "'%s' bench '%s/recipes/w8a8-int8-dynamic.lua' --shape %s "
                 "--repeat 2 --warmup 1 --threads 1 --probe-ms 50 --target %s", KILN_BIN,
                 KILN_SOURCE_DIR, amx ? "32,64,256" : "4,64,256", amx ? "amx" : "cpu");
    if (rc)
        fail_msg("kiln bench: exit %d:\n%s", rc, out);
    if (amx) {
        assert_non_null(strstr(out, "tdpbusd tiles (AMX) peak"));
        assert_non_null(strstr(out, "tdpbf16ps tiles (AMX) peak"));
    } else {
        const char *line = strstr(out, "AMX: not probed: ");
        if (!line)
            fail_msg("no AMX line:\n%s", out);
        assert_true(strncmp(line, "AMX: not probed: no AMX on this CPU", 35) == 0 ||
                    strncmp(line, "AMX: not probed: the OS refused", 31) == 0);
        print_message("%.*s\n", (int)strcspn(line, "\n"), line);
    }
}

/* ------------------------------------------------------------------ the tile model */

static uint64_t rng = 0x2545F4914F6CDD1Dull;
static uint32_t rnd(void)
{
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(rng >> 33);
}

static void test_model_config(void **state)
{
    (void)state;
    KilnAmxCfg c;
    KilnAmxTile t[KILN_AMX_TILES];
    assert_int_equal(sizeof c, 64);
    memset(&c, 0, sizeof c);
    assert_int_equal(kiln_amx_cfg_check(&c), 0); /* palette 0: tiles off */
    c.palette = 1;
    c.rows[0] = 16, c.colsb[0] = 64;
    c.rows[7] = 3, c.colsb[7] = 12;
    assert_int_equal(kiln_amx_cfg_check(&c), 0);
    int64_t f0 = kiln_amx_model_faults();
    assert_int_equal(kiln_amx_ldtilecfg(&c, t), 0);
    assert_int_equal(t[0].rows, 16);
    assert_int_equal(t[7].colsb, 12);
    assert_int_equal(t[3].rows, 0);
    KilnAmxCfg bad = c;
    bad.palette = 2;
    assert_int_equal(kiln_amx_cfg_check(&bad), -1);
    bad = c, bad.rows[1] = 17, bad.colsb[1] = 4;
    assert_int_equal(kiln_amx_cfg_check(&bad), -1);
    bad = c, bad.rows[1] = 1, bad.colsb[1] = 65;
    assert_int_equal(kiln_amx_cfg_check(&bad), -1);
    bad = c, bad.rows[8] = 1, bad.colsb[8] = 4; /* palette 1 has 8 tiles */
    assert_int_equal(kiln_amx_cfg_check(&bad), -1);
    bad = c, bad.rows[2] = 4; /* rows without bytes per row */
    assert_int_equal(kiln_amx_cfg_check(&bad), -1);
    bad = c, bad.reserved[3] = 1;
    assert_int_equal(kiln_amx_cfg_check(&bad), -1);
    assert_int_equal(kiln_amx_ldtilecfg(&bad, t), -1);
    assert_int_equal(kiln_amx_model_faults(), f0 + 1);
}

static void test_model_load_store(void **state)
{
    (void)state;
    uint8_t mem[20 * 100], out[20 * 100];
    for (size_t i = 0; i < sizeof mem; i++)
        mem[i] = (uint8_t)rnd();
    KilnAmxTile t;
    memset(&t, 0xEE, sizeof t);
    kiln_amx_tileloadd(&t, 5, 36, mem + 7, 100);
    for (int r = 0; r < KILN_AMX_MAX_ROWS; r++)
        for (int b = 0; b < KILN_AMX_MAX_COLSB; b++)
            assert_int_equal(t.data[r][b], r < 5 && b < 36 ? mem[7 + r * 100 + b] : 0);
    memset(out, 0x5A, sizeof out);
    kiln_amx_tilestored(5, 36, out + 3, 40, &t);
    for (int i = 0; i < (int)sizeof out; i++) {
        int r = (i - 3) / 40, b = (i - 3) % 40;
        bool in = i >= 3 && r < 5 && b < 36;
        assert_int_equal(out[i], in ? mem[7 + r * 100 + b] : 0x5A);
    }
    int64_t f0 = kiln_amx_model_faults();
    kiln_amx_tilestored(4, 36, out, 40, &t); /* not the tile's shape */
    kiln_amx_tileloadd(&t, 17, 4, mem, 4);
    kiln_amx_tilezero(&t, 1, 65);
    assert_int_equal(kiln_amx_model_faults(), f0 + 3);
    assert_int_equal(t.rows, 5);
    kiln_amx_tilezero(&t, 2, 8);
    assert_int_equal(t.rows, 2);
    assert_int_equal(t.data[0][0] | t.data[4][3], 0);
}

/* The four int8 dot products against the definition, on random bytes and shapes
 * up to a full 16 x 64 by 64 x 16, accumulating onto a random int32 tile; and the
 * modulo-2^32 wrap. */
static void test_model_int8_dots(void **state)
{
    (void)state;
    typedef void (*Dot)(KilnAmxTile *, int32_t, int32_t, int32_t, const KilnAmxTile *,
                        const KilnAmxTile *);
    const Dot dots[4] = {kiln_amx_tdpbusd, kiln_amx_tdpbssd, kiln_amx_tdpbsud, kiln_amx_tdpbuud};
    const bool sa[4] = {false, true, true, false}, sb[4] = {true, true, false, false};
    int64_t f0 = kiln_amx_model_faults();
    for (int it = 0; it < 200; it++) {
        int d = it % 4, m = 1 + (int)(rnd() % 16), n = 4 * (1 + (int)(rnd() % 16)),
            k = 4 * (1 + (int)(rnd() % 16));
        if (it < 4)
            m = 16, n = 64, k = 64;
        uint8_t A[16][64], B[16][64];
        int32_t C[16][16];
        for (int i = 0; i < 16 * 64; i++)
            A[i / 64][i % 64] = (uint8_t)rnd(), B[i / 64][i % 64] = (uint8_t)rnd();
        for (int i = 0; i < 256; i++)
            C[i / 16][i % 16] = (int32_t)(rnd() % 2000001) - 1000000;
        KilnAmxTile a, b, c;
        kiln_amx_tileloadd(&a, m, k, A, 64);
        kiln_amx_tileloadd(&b, k / 4, n, B, 64);
        kiln_amx_tileloadd(&c, m, n, C, 64);
        dots[d](&c, m, n, k, &a, &b);
        for (int r = 0; r < m; r++)
            for (int j = 0; j < n / 4; j++) {
                int64_t want = C[r][j];
                for (int kk = 0; kk < k; kk++) {
                    int64_t x = sa[d] ? (int8_t)A[r][kk] : A[r][kk];
                    int64_t y = sb[d] ? (int8_t)B[kk / 4][4 * j + kk % 4] : B[kk / 4][4 * j + kk % 4];
                    want += x * y;
                }
                int32_t got;
                memcpy(&got, &c.data[r][4 * j], 4);
                if (got != want)
                    fail_msg("dot %d m=%d n=%d k=%d at (%d,%d): %d, want %lld", d, m, n, k, r, j,
                             got, (long long)want);
            }
    }
    assert_int_equal(kiln_amx_model_faults(), f0);
    /* wrap: INT32_MAX + 255*1 */
    KilnAmxTile a, b, c;
    uint8_t ones[64] = {0};
    ones[0] = 255;
    kiln_amx_tileloadd(&a, 1, 4, ones, 64);
    ones[0] = 1;
    kiln_amx_tileloadd(&b, 1, 4, ones, 64);
    int32_t big = INT32_MAX;
    kiln_amx_tileloadd(&c, 1, 4, &big, 4);
    kiln_amx_tdpbuud(&c, 1, 4, 4, &a, &b);
    int32_t got;
    memcpy(&got, c.data[0], 4);
    assert_int_equal(got, (int32_t)((uint32_t)INT32_MAX + 255u));
    /* shapes that do not fit: a.colsb != 4 * b.rows; c untouched */
    kiln_amx_tileloadd(&b, 2, 4, ones, 4);
    kiln_amx_tdpbusd(&c, 1, 4, 4, &a, &b);
    assert_int_equal(kiln_amx_model_faults(), f0 + 1);
    memcpy(&got, c.data[0], 4);
    assert_int_equal(got, (int32_t)((uint32_t)INT32_MAX + 255u));
}

static uint16_t bf16_of(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return (uint16_t)(u >> 16);
}

static float f32_at(const KilnAmxTile *t, int r, int n)
{
    float f;
    memcpy(&f, &t->data[r][4 * n], 4);
    return f;
}

/* tdpbf16ps: exact small-integer products summed exactly; a pair's two products
 * summed and rounded to nearest even, then added with one more rounding (as a Sapphire
 * Rapids core does, ir/amx_model.c); denormal inputs as zero and denormal results
 * flushed. */
static void test_model_bf16(void **state)
{
    (void)state;
    uint16_t A[16][32], B[16][32];
    for (int i = 0; i < 16 * 32; i++) {
        A[i / 32][i % 32] = bf16_of((float)((int)(rnd() % 33) - 16));
        B[i / 32][i % 32] = bf16_of((float)((int)(rnd() % 33) - 16));
    }
    KilnAmxTile a, b, c;
    kiln_amx_tileloadd(&a, 16, 64, A, 64);
    kiln_amx_tileloadd(&b, 16, 64, B, 64);
    kiln_amx_tilezero(&c, 16, 64);
    kiln_amx_tdpbf16ps(&c, 16, 64, 64, &a, &b);
    for (int r = 0; r < 16; r++)
        for (int n = 0; n < 16; n++) {
            float want = 0;
            for (int k = 0; k < 32; k++) {
                uint32_t x = (uint32_t)A[r][k] << 16, y = (uint32_t)B[k / 2][2 * n + k % 2] << 16;
                float fx, fy;
                memcpy(&fx, &x, 4);
                memcpy(&fy, &y, 4);
                want += fx * fy; /* integers below 2^24: exact in any order */
            }
            assert_true(f32_at(&c, r, n) == want);
        }
    /* 1 + (2^-24 + 2^-24) = 1 + 2^-23 (two accumulations would give 1, ties to even);
     * 2^-24 + RNE(1 + 2^-25) = 2^-24 + 1 = 1 (the pair is rounded before the add) */
    uint16_t pa[2] = {bf16_of(1.0f), bf16_of(1.0f)}, pb[2] = {bf16_of(ldexpf(1, -24)), bf16_of(ldexpf(1, -24))};
    float one = 1.0f;
    kiln_amx_tileloadd(&a, 1, 4, pa, 4);
    kiln_amx_tileloadd(&b, 1, 4, pb, 4);
    kiln_amx_tileloadd(&c, 1, 4, &one, 4);
    kiln_amx_tdpbf16ps(&c, 1, 4, 4, &a, &b);
    assert_true(f32_at(&c, 0, 0) == 1.0f + ldexpf(1, -23));
    uint16_t qb[2] = {bf16_of(1.0f), bf16_of(ldexpf(1, -25))};
    float small = ldexpf(1, -24);
    kiln_amx_tileloadd(&b, 1, 4, qb, 4);
    kiln_amx_tileloadd(&c, 1, 4, &small, 4);
    kiln_amx_tdpbf16ps(&c, 1, 4, 4, &a, &b);
    assert_true(f32_at(&c, 0, 0) == 1.0f);
    /* a denormal bf16 input counts as zero; a denormal result is flushed */
    uint16_t da[2] = {0x0001, bf16_of(ldexpf(1, -70))}, db[2] = {bf16_of(1.0f), bf16_of(ldexpf(1, -70))};
    float zero = 0;
    kiln_amx_tileloadd(&a, 1, 4, da, 4);
    kiln_amx_tileloadd(&b, 1, 4, db, 4);
    kiln_amx_tileloadd(&c, 1, 4, &zero, 4);
    kiln_amx_tdpbf16ps(&c, 1, 4, 4, &a, &b);
    assert_true(f32_at(&c, 0, 0) == 0.0f); /* 2^-140 is an f32 denormal */
}

/* ------------------------------------------------------------------ the tile kernel */

typedef struct Case {
    const char *name;
    KilnQuantSpec w, act;
    bool bias;
    const char *epi;
    KilnDType out;
} Case;

#define WS(s, g, grp) {.fmt = KILN_QF_INT8, .symmetric = s, .gran = KILN_GRAN_##g, .group = grp}
#define W4(s, g, grp) {.fmt = KILN_QF_INT4, .symmetric = s, .gran = KILN_GRAN_##g, .group = grp}
#define AD(s, g) {.fmt = KILN_QF_INT8, .symmetric = s, .gran = KILN_GRAN_##g, .dynamic = true}
#define AS(s, sc, z) {.fmt = KILN_QF_INT8, .symmetric = s, .gran = KILN_GRAN_TENSOR, .scale = sc, .zero = z}

/* W8A8 as kiln quantizes it: every activation spec, symmetric and asymmetric
 * weights, per-channel, per-tensor and per-group scales (ragged groups included). */
static const Case kcases[] = {
    {"dyn-token sym / w sym channel", WS(true, CHANNEL, 0), AD(true, TOKEN), false, "none", KILN_F32},
    {"dyn-token asym / w asym channel", WS(false, CHANNEL, 0), AD(false, TOKEN), true, "silu", KILN_F32},
    {"static sym / w tensor", WS(true, TENSOR, 0), AS(true, 0.011f, 0), true, "none", KILN_BF16},
    {"static asym / w channel", WS(true, CHANNEL, 0), AS(false, 0.009f, 120), false, "gelu", KILN_F16},
    {"dyn-tensor sym / w asym tensor", WS(false, TENSOR, 0), AD(true, TENSOR), false, "none", KILN_F32},
    {"dyn-token sym / w sym group 32", WS(true, GROUP, 32), AD(true, TOKEN), true, "none", KILN_F32},
    {"dyn-token asym / w asym group 48", WS(false, GROUP, 48), AD(false, TOKEN), false, "none", KILN_F32},
    /* W4A8: int4 weights unpacked to int8 B tiles */
    {"w4a8 dyn-token sym / w4 sym group 32", W4(true, GROUP, 32), AD(true, TOKEN), true, "none", KILN_F32},
    {"w4a8 dyn-token asym / w4 asym group 64", W4(false, GROUP, 64), AD(false, TOKEN), false, "silu", KILN_F16},
    {"w4a8 static sym / w4 asym channel", W4(false, CHANNEL, 0), AS(true, 0.011f, 0), false, "none", KILN_F32},
};
#define NKCASES (sizeof kcases / sizeof kcases[0])

static float frand(void) { return (float)(rnd() % 2000001) / 1000000.0f - 1.0f; }

typedef struct Weights {
    int64_t N, K;
    float *w, *bias;
} Weights;

static int weight_fn(void *ctx, const char *name, KilnTensor *out, KilnDiag *d)
{
    (void)d;
    Weights *W = ctx;
    bool b = strstr(name, "bias") != NULL;
    memcpy(out->data, b ? W->bias : W->w, sizeof(float) * (size_t)(b ? W->N : W->N * W->K));
    return 0;
}

/* weight -> quantize -> prepack -> qgemm, as the passes leave it; amx_min_m < 0:
 * no tile choice (the vnni kernel); tiles: the function's `tiles` attr or NULL. */
static KilnFunc *build_kernel(KilnModule *mod, const Case *c, int64_t M, int64_t N, int64_t K,
                              const char *target, int64_t amx_min_m, const char *tiles)
{
    KilnFunc *f = kiln_func_new(mod, "layer.proj");
    kiln_fset_ident(f, "target", target);
    if (tiles)
        kiln_fset_str(f, "tiles", tiles);
    int x = kiln_func_param(f, "x", kiln_type2(KILN_F32, M, K));
    int w = kiln_emit(f, KILN_OP_WEIGHT, NULL, 0, kiln_type2(KILN_F32, N, K), "w");
    kiln_set_str(f, kiln_last(f), "name", "layer.proj.weight");
    KilnType qt = kiln_type2(kiln_qformat_storage(c->w.fmt, c->w.symmetric), N, K);
    qt.q = c->w;
    int wq = kiln_emit(f, KILN_OP_QUANTIZE, &w, 1, qt, "wq");
    int p = kiln_emit(f, KILN_OP_PREPACK, &wq, 1, qt, "p");
    int ops[3] = {x, p, -1}, nops = 2;
    if (c->bias) {
        ops[2] = kiln_emit(f, KILN_OP_WEIGHT, NULL, 0, kiln_type1(KILN_F32, N), "b");
        kiln_set_str(f, kiln_last(f), "name", "layer.proj.bias");
        nops = 3;
    }
    int y = kiln_emit(f, KILN_OP_QGEMM, ops, nops, kiln_type2(c->out, M, N), "y");
    KilnInst *q = kiln_last(f);
    kiln_set_spec(f, q, "act", &c->act);
    kiln_set_ident(f, q, "epilogue", c->epi);
    if (amx_min_m >= 0)
        kiln_set_int(f, q, "amx_min_m", amx_min_m);
    kiln_emit(f, KILN_OP_RETURN, &y, 1, kiln_type2(c->out, M, N), NULL);
    return f;
}

typedef struct Compiled {
    KilnLayout l;
    KilnCpuJit *j;
    KilnQGemmFn fn;
} Compiled;

static void compile(const Case *c, int64_t N, int64_t K, const char *target, int64_t min_m,
                    const char *tiles, Compiled *out)
{
    KilnModule *mod = kiln_module_new();
    KilnFunc *f = build_kernel(mod, c, 1, N, K, target, min_m, tiles);
    KilnDiag d = {0};
    void *obj = NULL, *fnp = NULL;
    size_t len = 0;
    if (kiln_layout_for(kiln_find_qgemm(f), f, &out->l, &d) ||
        kiln_cpu_emit_object(f, "qgemm_kernel", &obj, &len, &d) || kiln_cpu_jit_new(&out->j, &d) ||
        kiln_cpu_jit_add_object(out->j, obj, len, &d) ||
        kiln_cpu_jit_lookup(out->j, "qgemm_kernel", &fnp, &d))
        fail_msg("%s (N=%lld K=%lld, %s): %s", c->name, (long long)N, (long long)K, target, d.msg);
    out->fn = (KilnQGemmFn)fnp;
    free(obj);
    kiln_module_free(mod);
}

static size_t out_size(KilnDType dt) { return dt == KILN_F32 ? 4 : 2; }

static float out_at(KilnDType dt, const void *y, int64_t i)
{
    if (dt == KILN_F16)
        return kiln_f16_to_f32(((const uint16_t *)y)[i]);
    if (dt == KILN_BF16)
        return kiln_bf16_to_f32(((const uint16_t *)y)[i]);
    return ((const float *)y)[i];
}

/* y of one call, split in two at a panel boundary (as threads split columns). */
static void *call(const Compiled *k, const float *x, int64_t M, const void *blob, const float *bias)
{
    const KilnLayout *l = &k->l;
    size_t osz = out_size(l->out_dt) * (size_t)(M * l->N);
    void *y = malloc(osz), *scratch = malloc(kiln_layout_scratch_bytes(l, M));
    memset(y, 0xAB, osz);
    memset(scratch, 0xCD, kiln_layout_scratch_bytes(l, M)); /* the pad rows must be cleared */
    int64_t split = l->N > l->NR ? l->NR * ((l->N / l->NR + 1) / 2) : l->N;
    k->fn(x, M, blob, bias, y, 0, split, scratch);
    if (split < l->N)
        k->fn(x, M, blob, bias, y, split, l->N, scratch);
    free(scratch);
    return y;
}

/* The tile kernel on the scalar model against the interpreter (the int8 paths'
 * tolerance of tests/test_cpu_codegen.c: exact int32 sums, 4 ulp for the epilogue)
 * and, where the host runs avx512vnni, against the vnni kernel bit for bit (same
 * int32 sums, same order of the scale multiplies). Returns failures. */
static int run_shape(const Case *c, int64_t N, int64_t K, const int64_t *Ms, int nM)
{
    KilnTarget t512;
    KilnDiag d = {0};
    kiln_target_lookup("avx512vnni", &t512, &d);
    bool vnni = kiln_target_host_runs(&t512);
    bool native = host_amx() && kiln_host_amx_enable(&d) == 0; /* real tiles run here */
    Compiled tk, vk, nk;
    compile(c, N, K, "amx", 1, "model", &tk);
    if (native)
        compile(c, N, K, "amx", 1, NULL, &nk);
    assert_true(tk.l.tiles && tk.l.tiles_model);
    assert_string_equal(tk.l.name, "amx-u8s8-tile");
    if (vnni)
        compile(c, N, K, "avx512vnni", -1, NULL, &vk);
    Weights W = {N, K, malloc(sizeof(float) * (size_t)(N * K)), malloc(sizeof(float) * (size_t)N)};
    for (int64_t i = 0; i < N * K; i++)
        W.w[i] = 0.5f * frand();
    for (int64_t i = 0; i < N; i++)
        W.bias[i] = frand();
    KilnType qt = kiln_type2(tk.l.wdt, N, K);
    qt.q = c->w;
    KilnTensor wq;
    assert_int_equal(kiln_tensor_alloc(&wq, &qt), 0);
    assert_int_equal(kiln_quantize_matrix(&c->w, W.w, N, K, wq.data, wq.scales, wq.zeros, &d), 0);
    void *blob = aligned_alloc(64, (tk.l.pack_bytes + 63) & ~(size_t)63);
    assert_int_equal(kiln_prepack(&tk.l, &wq, blob, &d), 0);
    int failures = 0;
    int64_t f0 = kiln_amx_model_faults();
    for (int mi = 0; mi < nM; mi++) {
        int64_t M = Ms[mi];
        KilnModule *mm = kiln_module_new();
        KilnFunc *fm = build_kernel(mm, c, M, N, K, "interp", -1, NULL);
        KilnType xty = kiln_type2(KILN_F32, M, K);
        KilnTensor xt, ref;
        kiln_tensor_alloc(&xt, &xty);
        float *x = xt.data;
        for (int64_t i = 0; i < M * K; i++)
            x[i] = frand() * (i % 37 == 0 ? 8.0f : 1.0f);
        if (M >= 3)
            memset(x + K, 0, sizeof(float) * (size_t)K); /* an all-zero row */
        if (kiln_interp_run(fm, &xt, 1, weight_fn, &W, &ref, &d))
            fail_msg("interp %s: %s", c->name, d.msg);
        void *y = call(&tk, x, M, blob, W.bias), *yv = vnni ? call(&vk, x, M, blob, W.bias) : NULL;
        size_t osz = out_size(c->out) * (size_t)(M * N);
        if (native) { /* the AMX instructions give the model's bits */
            void *yn = call(&nk, x, M, blob, W.bias);
            if (memcmp(y, yn, osz)) {
                failures++;
                print_error("%s M=%lld N=%lld K=%lld: AMX tiles and the tile model differ\n",
                            c->name, (long long)M, (long long)N, (long long)K);
            }
            free(yn);
        }
        if (yv && memcmp(y, yv, osz)) {
            failures++;
            print_error("%s M=%lld N=%lld K=%lld: tiles (model) and avx512 vnni differ\n", c->name,
                        (long long)M, (long long)N, (long long)K);
        }
        for (int64_t i = 0; i < M * N; i++) {
            float r = out_at(c->out, ref.data, i), v = out_at(c->out, y, i);
            double tol = 4.0 * ldexp(fabs(r), -23) + 1e-30;
            tol += c->out == KILN_F16 ? ldexp(fabs(r), -10) + ldexp(1, -24)
                   : c->out == KILN_BF16 ? ldexp(fabs(r), -7) : 0;
            if (!(fabs(v - r) <= tol) && failures++ < 5)
                print_error("%s M=%lld N=%lld K=%lld at (%lld,%lld): tiles %.9g ref %.9g\n", c->name,
                            (long long)M, (long long)N, (long long)K, (long long)(i / N),
                            (long long)(i % N), v, r);
        }
        free(y);
        free(yv);
        kiln_tensor_free(&ref);
        kiln_tensor_free(&xt);
        kiln_module_free(mm);
    }
    assert_int_equal(kiln_amx_model_faults(), f0);
    free(blob);
    kiln_tensor_free(&wq);
    free(W.w);
    free(W.bias);
    kiln_cpu_jit_free(tk.j);
    if (vnni)
        kiln_cpu_jit_free(vk.j);
    if (native)
        kiln_cpu_jit_free(nk.j);
    return failures;
}

/* The tile kernel's tiling, packing and epilogue run everywhere avx512vnni runs:
 * the tiles on the scalar model (the epilogue is avx512 vector code, the M < 4 rows
 * vpdpbusd). M = 1, 15, 17,
 * 33 (partial 16-row tiles), N and K off multiples of 16 and 64 (tile steps KT of
 * 4..64, a ragged last group, a partial last panel). */
static void test_tile_kernel_model(void **state)
{
    (void)state;
    KilnTarget t512;
    KilnDiag d = {0};
    kiln_target_lookup("avx512vnni", &t512, &d);
    if (!kiln_target_host_runs(&t512)) {
        printf("[ SKIP ] the tile model kernels: their epilogue is avx512 code and this CPU "
               "lacks avx512vnni (%s)\n", kiln_target_cannot_run(&t512));
        skip();
    }
    static const int64_t Ms[] = {1, 15, 17, 33};
    static const int64_t NK[][2] = {{16, 64}, {33, 200}, {7, 100}, {70, 384}, {40, 132}};
    int failures = 0;
    for (size_t ci = 0; ci < NKCASES; ci++)
        for (size_t s = 0; s < sizeof NK / sizeof NK[0]; s++) {
            int64_t N = NK[s][0], K = NK[s][1], g = kcases[ci].w.group;
            if ((g && g > K) || (kcases[ci].w.fmt == KILN_QF_INT4 && K % 8))
                continue; /* int4 packs 8 k to a word */
            failures += run_shape(&kcases[ci], N, K, Ms, 4);
        }
    assert_int_equal(failures, 0);
}

/* With real AMX instructions: compiled and its assembly checked here (tdpbusd,
 * tileloadd, tilestored, ldtilecfg); run where the host has AMX. */
static void test_tile_kernel_asm(void **state)
{
    (void)state;
    for (size_t ci = 0; ci < NKCASES; ci++) {
        KilnModule *mod = kiln_module_new();
        KilnFunc *f = build_kernel(mod, &kcases[ci], 1, 33, 200, "amx", KILN_AMX_MIN_M, NULL);
        KilnDiag d = {0};
        char *as = NULL;
        if (kiln_cpu_emit_asm(f, "k", &as, &d))
            fail_msg("%s: %s", kcases[ci].name, d.msg);
        const char *want[] = {"tdpbusd", "ldtilecfg", "tileloadd", "tilestored", "tilezero", "vpdpbusd"};
        for (int i = 0; i < 6; i++)
            if (!strstr(as, want[i]))
                fail_msg("%s: no %s in the assembly", kcases[ci].name, want[i]);
        assert_null(strstr(as, "kiln_amx_")); /* no calls into the model */
        free(as);
        kiln_module_free(mod);
    }
    KilnTarget t;
    KilnDiag d = {0};
    kiln_target_lookup("amx", &t, &d);
    const char *why = kiln_target_cannot_run(&t);
    if (why)
        printf("[ SKIP ] running the AMX tile kernels: %s (assembly checked only; the scalar "
               "tile model ran their tiling)\n", why);
    else
        print_message("this host has AMX: test_tile_kernel_model ran the AMX tile kernels too, "
                      "against the model bit for bit\n");
    /* cold compile of a tile kernel (the target: <= 150 ms) beside the vnni
     * kernel it extends, for the record (this host's load varies) */
    for (int i = 0; i < 2; i++) {
        KilnModule *mod = kiln_module_new();
        KilnFunc *f = build_kernel(mod, &kcases[0], 1, 4096, 4096, i ? "avx512" : "amx",
                                   i ? -1 : KILN_AMX_MIN_M, NULL);
        void *obj = NULL;
        size_t len = 0;
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        assert_int_equal(kiln_cpu_emit_object(f, "k", &obj, &len, &d), 0);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        print_message("%s W8A8 4096x4096: compiled in %.1f ms (LLVM, no cache)\n",
                      i ? "avx512-u8s8-vnni" : "amx-u8s8-tile",
                      (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6);
        free(obj);
        kiln_module_free(mod);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_targets_lists_amx),
        cmocka_unit_test(test_aot_records_amx),
        cmocka_unit_test(test_choice_per_shape),
        cmocka_unit_test(test_bench_amx_probe),
        cmocka_unit_test(test_run_amx),
        cmocka_unit_test(test_model_config),
        cmocka_unit_test(test_model_load_store),
        cmocka_unit_test(test_model_int8_dots),
        cmocka_unit_test(test_model_bf16),
        cmocka_unit_test(test_tile_kernel_model),
        cmocka_unit_test(test_tile_kernel_asm),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
