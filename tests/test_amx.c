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
#include <unistd.h>

#include <cmocka.h>

#include "ir/amx_model.h"
#include "ir/target.h"
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
    snprintf(want, sizeof want, "  amx      %s%s", why ? "compiled only here, cannot run here: " : "runs here",
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
    free(man);
    snprintf(path, sizeof path, "%s/lib", dir);
    KilnAot *a = NULL;
    KilnDiag d = {0};
    rc = kiln_aot_open(path, &a, &d);
    if (host_amx()) {
        assert_int_equal(rc, 0);
        kiln_aot_close(a);
    } else {
        assert_int_not_equal(rc, 0);
        assert_non_null(strstr(d.msg, "built for target 'amx'"));
        assert_non_null(strstr(d.msg, "no AMX"));
        print_message("refused here: %s\n", d.msg);
    }
    run(out, sizeof out, "rm -rf '%s'", dir);
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

/* tdpbf16ps: exact small-integer products summed exactly; each of a pair's two
 * accumulations rounded to nearest even on its own; denormal inputs as zero and
 * denormal results flushed. */
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
    /* 1 + 2^-24 + 2^-24: two roundings give 1 (ties to even), one would give 1 + 2^-23 */
    uint16_t pa[2] = {bf16_of(1.0f), bf16_of(1.0f)}, pb[2] = {bf16_of(ldexpf(1, -24)), bf16_of(ldexpf(1, -24))};
    float one = 1.0f;
    kiln_amx_tileloadd(&a, 1, 4, pa, 4);
    kiln_amx_tileloadd(&b, 1, 4, pb, 4);
    kiln_amx_tileloadd(&c, 1, 4, &one, 4);
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_targets_lists_amx),
        cmocka_unit_test(test_aot_records_amx),
        cmocka_unit_test(test_model_config),
        cmocka_unit_test(test_model_load_store),
        cmocka_unit_test(test_model_int8_dots),
        cmocka_unit_test(test_model_bf16),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
