/* tests/test_sass.c — the GPU kernels' machine code, no GPU needed: every shipped
 * recipe's layers, lowered for sm_80, sm_89, sm_90, sm_90a and sm_100, compile through NVRTC to a
 * cubin (as `kiln aot` does), `cuobjdump -sass` disassembles it, and each module must
 * hold the SASS opcodes its layout promises (kiln_gpu_sass_promise, ir/layout_gpu.c)
 * and none it must not; the layer's `why` quotes the same promise. cuobjdump and
 * nvdisasm come from PyPI through tests/gpu/cuda_tools.sh; without PyPI (or NVRTC)
 * the tests print "SKIP: reason" and skip. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "codegen/ptx/ptx.h"
#include "frontend/recipe.h"
#include "ir/layout.h"
#include "ir/layout_gpu.h"
#include "passes/passes.h"

typedef struct Case {
    char what[400]; /* recipe/layer@arch */
    char layout[48], why[1024];
    int sm;
    const KilnGpuSass *promise;
    char *sass; /* "kernel OP OP ...\n" per kernel: the distinct opcodes of each */
    char err[1100];
} Case;

static Case g_cases[256];
static int g_ncases;
static char g_skip[1100];
static char g_bin[1024]; /* cuobjdump/nvdisasm folder */
static char g_tmp[64];
static char g_cache[1024]; /* cubins by source hash: $KILN_CACHE_DIR/sass, else g_tmp */
static char g_nvdisasm_cubin[1200]; /* one cubin kept for the nvdisasm cross-check */

/* The first line of a command's stdout, and its exit status. */
static int run_line(const char *cmd, char *out, size_t n)
{
    FILE *p = popen(cmd, "r");
    if (!p)
        return -1;
    out[0] = 0;
    char line[1024];
    while (fgets(line, sizeof line, p))
        if (!out[0])
            snprintf(out, n, "%s", line);
    out[strcspn(out, "\n")] = 0;
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* Distinct opcodes per function of `tool` (cuobjdump -sass / nvdisasm) output. */
static char *disassemble(const char *cmd)
{
    FILE *p = popen(cmd, "r");
    if (!p)
        return NULL;
    size_t cap = 1 << 16, n = 0;
    char *out = calloc(cap, 1), line[4096];
    while (out && fgets(line, sizeof line, p)) {
        char *f = strstr(line, "Function : ");
        const char *op = NULL;
        char tok[64] = "";
        if (f) {
            f += strlen("Function : ");
            f[strcspn(f, " \r\n")] = 0;
            op = f;
        } else {
            char *c = strstr(line, "/*");
            size_t h = c ? strspn(c + 2, "0123456789abcdef") : 0;
            if (!c || h == 0 || strncmp(c + 2 + h, "*/", 2))
                continue;
            char *s = c + 4 + h;
            if (sscanf(s, " %63s", tok) == 1 && tok[0] == '@')
                sscanf(strstr(s, tok) + strlen(tok), " %63s", tok);
            tok[strcspn(tok, " ;")] = 0;
            if (!tok[0])
                continue;
            op = tok;
        }
        /* one line per function: "\nNAME" then " OP" for each new opcode */
        char look[80];
        snprintf(look, sizeof look, " %s ", op);
        const char *cur = strrchr(out, '\n');
        if (!f && cur && strstr(cur, look))
            continue;
        size_t need = n + strlen(op) + 4;
        if (need >= cap && !(out = realloc(out, cap = need * 2)))
            break;
        n += (size_t)sprintf(out + n, f ? "\n%s " : "%s ", op);
    }
    pclose(p);
    return out;
}

/* The cubin of f for arch, compiled through NVRTC as `kiln aot` does, in the cache
 * folder under the FNV-1a hash of the CUDA source, arch and NVRTC version (the suite
 * runs twice as fast warm); 0, or nonzero with err filled. */
static int cubin_path(const KilnFunc *f, const char *arch, char *path, size_t n, char *err, size_t en)
{
    KilnDiag d = {0};
    char *src = NULL, *ptx = NULL;
    if (kiln_ptx_source(f, arch, "kq", &src, &d)) {
        snprintf(err, en, "source: %s", d.msg);
        return -1;
    }
    uint64_t h = 1469598103934665603ull;
    const char *ver = kiln_nvrtc_version(&d);
    for (const char *parts[3] = {src, arch, ver ? ver : ""}, **p = parts; p < parts + 3; p++)
        for (const char *c = *p; *c; c++)
            h = (h ^ (unsigned char)*c) * 1099511628211ull;
    snprintf(path, n, "%s/%016llx-%s.cubin", g_cache, (unsigned long long)h, arch);
    int rc = 0;
    void *cubin = NULL;
    size_t len = 0;
    if (access(path, R_OK) != 0) {
        if ((rc = kiln_nvrtc_compile(src, arch, &ptx, &cubin, &len, NULL, &d))) {
            snprintf(err, en, "compile: %s", d.msg);
        } else {
            char tmp[1300];
            snprintf(tmp, sizeof tmp, "%s.%d", path, (int)getpid());
            FILE *o = fopen(tmp, "wb");
            rc = !o || fwrite(cubin, 1, len, o) != len;
            rc |= o && fclose(o);
            rc = rc || rename(tmp, path);
            if (rc)
                snprintf(err, en, "cannot write %.900s", path);
        }
    }
    free(src);
    free(ptx);
    free(cubin);
    return rc;
}

static void compile_case(const char *recipe_path, const char *arch)
{
    KilnDiag d = {0};
    KilnRecipe *r = NULL;
    KilnTarget t;
    if (kiln_recipe_load(recipe_path, &r, &d) || kiln_target_lookup(arch, &t, &d)) {
        fail_msg("%s: %s", recipe_path, d.msg);
        return;
    }
    for (int i = 0; i < kiln_recipe_nrules(r); i++) {
        KilnModule *m = kiln_module_new();
        KilnFunc *f;
        const char *layer = kiln_recipe_rule_example(r, i);
        if (kiln_lower_layer(r, layer, 16, 256, 512, t.name, m, &f, &d) || kiln_run_pipeline(m, &t, NULL, &d))
            fail_msg("%s %s: %s", recipe_path, layer, d.msg);
        f = m->funcs[0];
        KilnInst *g = (KilnInst *)kiln_find_qgemm(f);
        assert_non_null(g);
        for (int a = 0; a < g->nattrs; a++) /* as `kiln run` calibration would */
            if (!strcmp(g->attrs[a].key, "act") && !g->attrs[a].q.dynamic && g->attrs[a].q.scale == 0)
                g->attrs[a].q.scale = 0.0234375f;
        assert_true(g_ncases < (int)(sizeof g_cases / sizeof *g_cases));
        Case *c = &g_cases[g_ncases++];
        const char *base = strrchr(recipe_path, '/');
        snprintf(c->what, sizeof c->what, "%.200s/%.100s@%s", base ? base + 1 : recipe_path, layer, arch);
        const KilnAttr *la = kiln_get(g, "layout"), *wa = kiln_get(g, "why");
        snprintf(c->layout, sizeof c->layout, "%s", la && la->s ? la->s : "");
        snprintf(c->why, sizeof c->why, "%s", wa && wa->s ? wa->s : "");
        c->sm = t.sm;
        c->promise = kiln_gpu_sass_promise(c->layout, c->sm);
        char path[1200], cmd[2400];
        if (!cubin_path(f, arch, path, sizeof path, c->err, sizeof c->err)) {
            snprintf(cmd, sizeof cmd, "'%s/cuobjdump' -sass '%s'", g_bin, path);
            c->sass = disassemble(cmd);
            if (!g_nvdisasm_cubin[0] && c->promise && !strcmp(c->promise->kernel, "gemm"))
                snprintf(g_nvdisasm_cubin, sizeof g_nvdisasm_cubin, "%s", path);
        }
        kiln_module_free(m);
    }
    kiln_recipe_free(r);
}

static int setup_all(void **state)
{
    (void)state;
    KilnDiag d = {0};
    if (!kiln_nvrtc_version(&d)) {
        snprintf(g_skip, sizeof g_skip, "NVRTC not found (install the CUDA toolkit or set KILN_NVRTC)");
        return 0;
    }
    char line[1024];
    int rc = run_line("bash '" KILN_SOURCE_DIR "/tests/gpu/cuda_tools.sh'", line, sizeof line);
    if (rc == 77) {
        snprintf(g_skip, sizeof g_skip, "%s", line[0] ? line + (strncmp(line, "SKIP: ", 6) ? 0 : 6) : "no tools");
        return 0;
    }
    if (rc != 0) {
        printf("tests/gpu/cuda_tools.sh failed (%d): %s\n", rc, line);
        return -1;
    }
    snprintf(g_bin, sizeof g_bin, "%s", line);
    snprintf(g_tmp, sizeof g_tmp, "/tmp/kiln-sass-XXXXXX");
    if (!mkdtemp(g_tmp))
        return -1;
    const char *kc = getenv("KILN_CACHE_DIR");
    if (kc && *kc) {
        snprintf(g_cache, sizeof g_cache, "%s/sass", kc);
        char cmd[1200];
        snprintf(cmd, sizeof cmd, "mkdir -p '%s'", g_cache);
        if (system(cmd))
            snprintf(g_cache, sizeof g_cache, "%s", g_tmp);
    } else {
        snprintf(g_cache, sizeof g_cache, "%s", g_tmp);
    }
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
    static const char *const archs[] = {"sm_80", "sm_89", "sm_90", "sm_90a", "sm_100"};
    for (int i = 0; i < np; i++)
        for (int a = 0; a < 5; a++)
            compile_case(paths[i], archs[a]);
    printf("cuobjdump -sass of %d modules (%d recipes x sm_80/89/90/90a/100) from %s\n", g_ncases, np, g_bin);
    return 0;
}

static int teardown_all(void **state)
{
    (void)state;
    for (int i = 0; i < g_ncases; i++)
        free(g_cases[i].sass);
    if (g_tmp[0]) {
        char cmd[128];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_tmp);
        if (system(cmd))
            return -1;
    }
    return 0;
}

#define NEED_TOOLS()                                                                               \
    do {                                                                                           \
        if (g_skip[0]) {                                                                           \
            printf("SKIP: %s\n", g_skip);                                                          \
            skip();                                                                                \
        }                                                                                          \
    } while (0)

/* The opcodes line of kernel kq_<kind> ("kq_gemm OP OP "), or NULL. */
static const char *kernel_line(const char *sass, const char *kind, char *buf, size_t n)
{
    char head[64];
    snprintf(head, sizeof head, "\nkq_%s ", kind);
    const char *p = sass ? strstr(sass, head) : NULL;
    if (!p)
        return NULL;
    p++;
    snprintf(buf, n, "%.*s", (int)strcspn(p, "\n"), p);
    return buf;
}

/* Whether some opcode of line starts with prefix. */
static bool has_op(const char *line, const char *prefix, size_t plen)
{
    for (const char *p = line; p && (p = strstr(p, " ")); p++)
        if (!strncmp(p + 1, prefix, plen))
            return true;
    return false;
}

/* Each space-separated word of list: must (or must not) be an opcode prefix in line. */
static int check_list(const Case *c, const char *line, const char *list, bool want)
{
    int bad = 0;
    for (const char *w = list; *w;) {
        size_t l = strcspn(w, " ");
        if (l && has_op(line, w, l) != want) {
            printf("FAIL %s (%s): %s %.*s\n", c->what, c->layout, want ? "missing" : "holds", (int)l, w);
            bad++;
        }
        w += l + (w[l] == ' ');
    }
    return bad;
}

static void test_promises_hold(void **state)
{
    (void)state;
    NEED_TOOLS();
    assert_true(g_ncases >= 3 * 15);
    int bad = 0;
    for (int i = 0; i < g_ncases; i++) {
        const Case *c = &g_cases[i];
        char line[4096];
        if (c->err[0] || !c->sass || !c->promise) {
            printf("FAIL %s (%s): %s\n", c->what, c->layout, c->err[0] ? c->err : c->sass ? "no SASS promise" : "no SASS");
            bad++;
            continue;
        }
        if (!kernel_line(c->sass, c->promise->kernel, line, sizeof line)) {
            printf("FAIL %s: no kernel kq_%s in the cubin\n", c->what, c->promise->kernel);
            bad++;
            continue;
        }
        bad += check_list(c, line, c->promise->need, true);
        bad += check_list(c, c->sass, c->promise->never, false);
    }
    assert_int_equal(bad, 0);
}

/* The int4 weight-only layouts (Marlin-style codes): the promise row holds the GEMM to
 * LDG.E.128, and the GEMV, the decode kernel, reads its codes with 128-bit loads too. */
static void test_int4_gemv_128bit(void **state)
{
    (void)state;
    NEED_TOOLS();
    int n4 = 0, bad = 0;
    for (int i = 0; i < g_ncases; i++) {
        const Case *c = &g_cases[i];
        size_t ll = strlen(c->layout);
        if (ll < 5 || strcmp(c->layout + ll - 5, "-int4") || !c->sass)
            continue;
        n4++;
        char line[4096];
        if (!c->promise || !strstr(c->promise->need, "LDG.E.128") || !kernel_line(c->sass, "gemv", line, sizeof line) ||
            !has_op(line, "LDG.E.128", 9)) {
            printf("FAIL %s (%s): no LDG.E.128 promised or in the GEMV\n", c->what, c->layout);
            bad++;
        }
    }
    assert_true(n4 >= 3 * 2); /* w4a16 recipes, f16 and bf16, on every arch */
    assert_int_equal(bad, 0);
}

/* The evidence, one line per layout and arch: the promised opcodes as found. */
static void test_print_evidence(void **state)
{
    (void)state;
    NEED_TOOLS();
    for (int i = 0; i < g_ncases; i++) {
        const Case *c = &g_cases[i];
        bool dup = false;
        for (int j = 0; j < i && !dup; j++)
            dup = !strcmp(g_cases[j].layout, c->layout);
        if (dup || !c->promise || !c->sass)
            continue;
        char line[4096], found[512] = "";
        kernel_line(c->sass, c->promise->kernel, line, sizeof line);
        for (char *tok = strtok(line, " "); tok; tok = strtok(NULL, " "))
            if ((strstr(tok, "MMA") && strncmp(tok, "HFMA2", 5)) || !strncmp(tok, "LDGSTS", 6) || !strncmp(tok, "LDSM", 4) ||
                !strncmp(tok, "F2FP.F16.E", 10) || !strcmp(tok, "FFMA") || !strncmp(tok, "LDG.E.128", 9))
                snprintf(found + strlen(found), sizeof found - strlen(found), "%s ", tok);
        printf("%-26s %s\n", c->layout, found);
    }
}

/* The layer's `why` quotes the promise the SASS was checked against, and only a layout
 * whose SASS holds FP8 tensor-core ops (QMMA on sm_89, QGMMA on sm_90a) calls its FP8
 * native: sm_90's and sm_100's mma.sync FP8 runs as an unpack plus HMMA. */
static void test_why_quotes_sass(void **state)
{
    (void)state;
    NEED_TOOLS();
    int bad = 0;
    for (int i = 0; i < g_ncases; i++) {
        const Case *c = &g_cases[i];
        if (!c->promise)
            continue;
        char want[256];
        snprintf(want, sizeof want, "SASS %s", c->promise->need);
        bool fp8_units = strstr(c->promise->need, "QMMA") || strstr(c->promise->need, "QGMMA");
        if (!strstr(c->why, want) || (!fp8_units && strstr(c->why, "native FP8"))) {
            printf("FAIL %s (%s): why \"%s\" does not quote \"%s\"\n", c->what, c->layout, c->why, want);
            bad++;
        }
    }
    assert_int_equal(bad, 0);
}

/* nvdisasm reads the same cubin to the same tensor-core opcodes as cuobjdump. */
static void test_nvdisasm_agrees(void **state)
{
    (void)state;
    NEED_TOOLS();
    assert_true(g_nvdisasm_cubin[0]);
    char cmd[2300];
    snprintf(cmd, sizeof cmd, "'%s/cuobjdump' -sass '%s'", g_bin, g_nvdisasm_cubin);
    char *a = disassemble(cmd);
    snprintf(cmd, sizeof cmd, "'%s/nvdisasm' -c '%s'", g_bin, g_nvdisasm_cubin);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    char line[4096];
    int mma = 0;
    while (fgets(line, sizeof line, p))
        if (strstr(line, "MMA.") && (strstr(line, "IMMA.") || strstr(line, "HMMA.") || strstr(line, "QMMA.")))
            mma++;
    assert_int_equal(pclose(p), 0);
    assert_non_null(a);
    assert_true(strstr(a, "MMA.") != NULL);
    assert_true(mma > 0);
    free(a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_promises_hold),
        cmocka_unit_test(test_why_quotes_sass),
        cmocka_unit_test(test_int4_gemv_128bit),
        cmocka_unit_test(test_nvdisasm_agrees),
        cmocka_unit_test(test_print_evidence),
    };
    return cmocka_run_group_tests(tests, setup_all, teardown_all);
}
