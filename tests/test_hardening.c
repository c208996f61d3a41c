/* tests/test_hardening.c — issue 8's checks that span folders: no abort/assert/exit in
 * the library (tests/abort_allowlist.txt names the few no input reaches); inputs that
 * once broke a fuzz target stay fixed (tests/fuzz/regressions/TARGET/); the kernel
 * cache with many processes compiling at once, foreign entries, and a read-only or
 * unwritable directory. */
#include "cli/cli_util.h"

#include <ctype.h>
#include <dirent.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "frontend/recipe.h"
#include "model/files/modelfile.h"
#include "passes/passes.h"
#include "runtime/runtime.h"

#define SRC KILN_SOURCE_DIR
#define HDR_BYTES 88 /* runtime/cache.c's entry header: magic, length, two SHA-256 */

/* ------------------------------------------------------------------ no aborts */

/* The library's folders (not tools/ or tests/): what a program linking kiln runs. */
static const char *const lib_dirs[] = {"ir", "frontend", "passes", "codegen", "runtime",
                                       "api", "model", "quant"};
static const char *const banned[] = {"abort", "assert", "exit", "_Exit", "_exit", "quick_exit",
                                     "__builtin_trap"};

typedef struct Hit {
    char file[256], func[128], call[32];
    int line;
} Hit;

typedef struct Hits {
    Hit *v;
    int n, cap;
} Hits;

/* The text with comments, strings and character literals blanked (newlines kept). */
static void blank_non_code(char *s)
{
    for (char *p = s; *p;) {
        if (p[0] == '/' && p[1] == '/') {
            while (*p && *p != '\n')
                *p++ = ' ';
        } else if (p[0] == '/' && p[1] == '*') {
            *p++ = ' ';
            *p++ = ' ';
            while (*p && !(p[0] == '*' && p[1] == '/')) {
                if (*p != '\n')
                    *p = ' ';
                p++;
            }
            for (int i = 0; i < 2 && *p; i++)
                *p++ = ' ';
        } else if (*p == '"' || *p == '\'') {
            char q = *p++;
            while (*p && *p != q && *p != '\n') {
                if (*p == '\\' && p[1]) {
                    *p++ = ' ';
                }
                *p++ = ' ';
            }
            if (*p == q)
                p++;
        } else {
            p++;
        }
    }
}

static bool ident_char(char c) { return isalnum((unsigned char)c) || c == '_'; }

/* Calls of banned functions in one file, each with the function it sits in. */
static void scan_file(const char *path, const char *rel, Hits *h)
{
    char *s = tu_read_file(path, NULL);
    assert_non_null(s);
    blank_non_code(s);
    int line = 1, depth = 0;
    char func[128] = "", cand[128] = "";
    for (char *p = s; *p; p++) {
        if (*p == '\n') {
            line++;
            continue;
        }
        if (*p == '{') {
            if (depth++ == 0)
                snprintf(func, sizeof func, "%s", cand);
            continue;
        }
        if (*p == '}') {
            depth -= depth > 0;
            continue;
        }
        if (*p == ';' && depth == 0)
            cand[0] = 0;
        if (!ident_char(*p) || (p > s && ident_char(p[-1])))
            continue;
        char *e = p;
        while (ident_char(*e))
            e++;
        char *q = e;
        while (*q == ' ' || *q == '\t' || *q == '\n')
            q++;
        size_t n = (size_t)(e - p);
        if (*q == '(' && depth == 0 && n < sizeof cand)
            snprintf(cand, sizeof cand, "%.*s", (int)n, p);
        for (size_t i = 0; *q == '(' && depth > 0 && i < sizeof banned / sizeof banned[0]; i++)
            if (strlen(banned[i]) == n && !strncmp(p, banned[i], n)) {
                if (h->n == h->cap) {
                    h->cap = h->cap ? 2 * h->cap : 16;
                    h->v = realloc(h->v, sizeof *h->v * (size_t)h->cap);
                    assert_non_null(h->v);
                }
                Hit *x = &h->v[h->n++];
                snprintf(x->file, sizeof x->file, "%s", rel);
                snprintf(x->func, sizeof x->func, "%s", func);
                snprintf(x->call, sizeof x->call, "%s", banned[i]);
                x->line = line;
            }
        p = e - 1;
    }
    free(s);
}

static void scan_dir(const char *rel, Hits *h)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", SRC, rel);
    DIR *d = opendir(path);
    if (!d)
        return; /* a folder this checkout does not have (quant/ is optional) */
    for (struct dirent *e; (e = readdir(d));) {
        if (e->d_name[0] == '.')
            continue;
        char sub[1024], full[2048];
        snprintf(sub, sizeof sub, "%s/%s", rel, e->d_name);
        snprintf(full, sizeof full, "%s/%s", SRC, sub);
        struct stat st;
        if (stat(full, &st) != 0)
            continue;
        size_t n = strlen(e->d_name);
        if (S_ISDIR(st.st_mode))
            scan_dir(sub, h);
        else if (n > 2 && (!strcmp(e->d_name + n - 2, ".c") || !strcmp(e->d_name + n - 2, ".h")))
            scan_file(full, sub, h);
    }
    closedir(d);
}

/* tests/abort_allowlist.txt: "FILE FUNCTION CALL  # why no input reaches it". */
typedef struct Allow {
    char file[256], func[128], call[32];
    bool used;
} Allow;

static int read_allowlist(Allow **out)
{
    char *s = tu_read_file(SRC "/tests/abort_allowlist.txt", NULL);
    assert_non_null(s);
    int n = 0, cap = 0;
    Allow *v = NULL;
    int lineno = 0;
    for (char *line = strtok(s, "\n"); line; line = strtok(NULL, "\n")) {
        lineno++;
        while (*line == ' ')
            line++;
        if (!*line || *line == '#')
            continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 16;
            v = realloc(v, sizeof *v * (size_t)cap);
            assert_non_null(v);
        }
        Allow *a = &v[n];
        memset(a, 0, sizeof *a);
        const char *why = strchr(line, '#');
        if (sscanf(line, "%255s %127s %31s", a->file, a->func, a->call) != 3 || !why ||
            strlen(why + 1) < 10)
            fail_msg("tests/abort_allowlist.txt: entry '%s' is not 'FILE FUNCTION CALL # why'", line);
        n++;
    }
    free(s);
    *out = v;
    return n;
}

static void test_no_aborts(void **state)
{
    (void)state;
    Hits h = {0};
    for (size_t i = 0; i < sizeof lib_dirs / sizeof lib_dirs[0]; i++)
        scan_dir(lib_dirs[i], &h);
    Allow *allow;
    int na = read_allowlist(&allow);
    int bad = 0;
    for (int i = 0; i < h.n; i++) {
        bool ok = false;
        for (int k = 0; k < na; k++)
            if (!strcmp(allow[k].file, h.v[i].file) && !strcmp(allow[k].func, h.v[i].func) &&
                !strcmp(allow[k].call, h.v[i].call))
                ok = allow[k].used = true;
        if (!ok) {
            fprintf(stderr, "%s/%s:%d: %s() in %s(): return a KilnDiag instead (or, if no input can "
                            "reach it, say why in tests/abort_allowlist.txt)\n",
                    SRC, h.v[i].file, h.v[i].line, h.v[i].call, h.v[i].func);
            bad++;
        }
    }
    for (int k = 0; k < na; k++)
        if (!allow[k].used) {
            fprintf(stderr, "tests/abort_allowlist.txt: '%s %s %s' matches nothing any more: "
                            "remove it\n", allow[k].file, allow[k].func, allow[k].call);
            bad++;
        }
    printf("  %d abort/assert/exit call%s in the library, all allow-listed\n", h.n,
           h.n == 1 ? "" : "s");
    free(h.v);
    free(allow);
    assert_int_equal(bad, 0);
}

/* The scanner itself: finds calls in code, not in comments or strings, and names the
 * enclosing function. */
static void test_scanner(void **state)
{
    (void)state;
    char dir[] = "/tmp/kiln-scan-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[256];
    snprintf(path, sizeof path, "%s/x.c", dir);
    const char *text = "/* abort() in a comment */\n"
                       "static int f(int x)\n{\n    if (x) { puts(\"exit(1)\"); }\n"
                       "    assert (x > 0); // exit(2)\n    return x;\n}\n"
                       "void g(void) { char c = '('; (void)c; exit(3); }\n"
                       "int h(void) { return my_exit(4) + atexit(0); }\n";
    assert_int_equal(cli_write_file(path, text, strlen(text)), 0);
    Hits h = {0};
    scan_file(path, "x.c", &h);
    assert_int_equal(h.n, 2);
    assert_string_equal(h.v[0].call, "assert");
    assert_string_equal(h.v[0].func, "f");
    assert_int_equal(h.v[0].line, 5);
    assert_string_equal(h.v[1].call, "exit");
    assert_string_equal(h.v[1].func, "g");
    assert_int_equal(h.v[1].line, 8);
    free(h.v);
    unlink(path);
    rmdir(dir);
}

/* ------------------------------------------------------------------ fuzz regressions */

/* Each input runs through what its fuzz target does (tests/fuzz/fuzz_*.c); it must
 * succeed or fail with a KILN_EINPUT message, and FILE.expected (optional) holds a
 * piece of that message. */
static void check_error(const char *file, int rc, const KilnDiag *d, const char *expected)
{
    if (rc != 0 && (rc != KILN_EINPUT || !d->msg[0]))
        fail_msg("%s: error %d without a proper message: '%s'", file, rc, d->msg);
    if (expected && (rc == 0 || !strstr(d->msg, expected)))
        fail_msg("%s: expected an error containing '%s', got %d: '%s'", file, expected, rc, d->msg);
}

static void regress_recipe(const char *file, const char *data, size_t len, const char *expected)
{
    KilnRecipe *r = NULL;
    KilnDiag d = {0};
    /* where fuzz_recipe.c's inputs live, for their includes */
    int rc = kiln_recipe_load_string(data, len, SRC "/tests/recipes_sandbox/regression.lua", &r, &d);
    check_error(file, rc, &d, expected);
    if (rc)
        return;
    static const char *const layers[] = {"model.layers.0.self_attn.q_proj", "lm_head", "x"};
    for (size_t i = 0; i < sizeof layers / sizeof layers[0]; i++) {
        KilnModule *m = kiln_module_new();
        KilnDiag ld = {0};
        if (kiln_lower_layer(r, layers[i], 2, 16, 200, NULL, m, NULL, &ld) == 0)
            assert_int_equal(kiln_verify_module(m, &ld), 0);
        kiln_module_free(m);
    }
    kiln_recipe_free(r);
}

static void regress_ir(const char *file, const char *data, size_t len, const char *expected)
{
    KilnModule *m = kiln_module_new();
    KilnDiag d = {0};
    int rc = kiln_parse_module(data, len, "regression.kir", m, &d);
    if (rc == 0) { /* as fuzz_ir_parse.c: print -> parse -> print is the identity */
        char *p1 = kiln_print_module_str(m);
        KilnModule *m2 = kiln_module_new();
        assert_int_equal(kiln_parse_module(p1, strlen(p1), "printed.kir", m2, &d), 0);
        char *p2 = kiln_print_module_str(m2);
        if (strcmp(p1, p2) != 0)
            fail_msg("%s: printed twice differently:\n%s\n---\n%s", file, p1, p2);
        free(p1);
        free(p2);
        kiln_module_free(m2);
        KilnTarget t;
        assert_int_equal(kiln_target_lookup("avx2", &t, &d), 0);
        rc = kiln_run_pipeline(m, &t, NULL, &d);
    }
    check_error(file, rc, &d, expected);
    kiln_module_free(m);
}

static void regress_modelfile(const char *file, const char *data, size_t len, const char *ext,
                              const char *expected)
{
    char path[256];
    snprintf(path, sizeof path, "/tmp/kiln-regression-%d.%s", (int)getpid(), ext);
    assert_int_equal(cli_write_file(path, data, len), 0);
    KilnModelFile *mf = NULL;
    KilnDiag d = {0};
    int rc = kiln_mf_open(path, &mf, &d);
    unlink(path);
    check_error(file, rc, &d, expected);
    for (int i = 0; mf && i < kiln_mf_ntensors(mf); i++) {
        const KilnModelTensor *t = kiln_mf_tensor(mf, i);
        float *y = NULL;
        if (t->numel <= (1 << 22) && kiln_mf_load_f32(mf, t->name, &y, &d) == 0)
            free(y);
    }
    kiln_mf_close(mf);
}

static void regress_manifest(const char *file, const char *data, size_t len, const char *expected)
{
    char *dir = cli_mkdtemp("manifest");
    char path[1200];
    snprintf(path, sizeof path, "%s/manifest.json", dir);
    assert_int_equal(cli_write_file(path, data, len), 0);
    KilnAot *a = NULL;
    KilnDiag d = {0};
    int rc = kiln_aot_open(dir, &a, &d);
    check_error(file, rc, &d, expected);
    kiln_aot_close(a);
    cli_rm_rf(dir);
    free(dir);
}

static void test_fuzz_regressions(void **state)
{
    (void)state;
    static const char *const targets[] = {"recipe", "ir_parse", "safetensors", "gguf", "aot_manifest"};
    int total = 0;
    for (size_t t = 0; t < sizeof targets / sizeof targets[0]; t++) {
        char dir[1024];
        snprintf(dir, sizeof dir, SRC "/tests/fuzz/regressions/%s", targets[t]);
        char **names;
        int n = tu_list_dir(dir, "", &names);
        for (int i = 0; i < n; i++) {
            size_t nl = strlen(names[i]);
            if (names[i][0] == '.' || (nl > 9 && !strcmp(names[i] + nl - 9, ".expected")))
                continue;
            char path[2048], epath[2100];
            snprintf(path, sizeof path, "%s/%s", dir, names[i]);
            snprintf(epath, sizeof epath, "%s.expected", path);
            size_t len = 0;
            char *data = tu_read_file(path, &len);
            assert_non_null(data);
            char *exp = tu_read_file(epath, NULL);
            if (exp)
                exp[strcspn(exp, "\n")] = 0;
            switch (t) {
            case 0: regress_recipe(path, data, len, exp); break;
            case 1: regress_ir(path, data, len, exp); break;
            case 2: regress_modelfile(path, data, len, "safetensors", exp); break;
            case 3: regress_modelfile(path, data, len, "gguf", exp); break;
            default: regress_manifest(path, data, len, exp); break;
            }
            free(exp);
            free(data);
            total++;
        }
        if (n > 0)
            tu_free_list(names, n);
    }
    printf("  %d regression input%s\n", total, total == 1 ? "" : "s");
    assert_true(total >= 1);
}

/* ------------------------------------------------------------------ kernel cache */

#define RECIPE_A SRC "/recipes/w8a8-int8-dynamic.lua"

static const char *const run_a[] = {KILN_BIN, "run", RECIPE_A, "--shape", "2,64,256", "--target",
                                    "avx2", "--check", "--verbose", NULL};
/* the same kernel as run_a but N = 32: another key */
static const char *const run_a32[] = {KILN_BIN, "run", RECIPE_A, "--shape", "2,32,256", "--target",
                                      "avx2", "--check", "--verbose", NULL};
static const char *const run_mixed[] = {KILN_BIN, "run", SRC "/recipes/mixed.lua", "--shape",
                                        "2,64,256", "--target", "avx2", "--check", "--verbose", NULL};
static const char *const run_w4[] = {KILN_BIN, "run", SRC "/recipes/w4a16-g32-sym.lua", "--shape",
                                     "1,96,256", "--target", "avx2", "--check", "--verbose", NULL};
static const char *const run_w4a8[] = {KILN_BIN, "run", SRC "/recipes/w4a8.lua", "--shape",
                                       "3,40,256", "--target", "avx2", "--check", "--verbose", NULL};

static bool run_ok(const CliResult *r)
{
    return r->code == 0 && !cli_crashed(r) && strstr(r->out, "kernel vs reference interpreter: PASS");
}

static void assert_ok(const CliResult *r, const char *what)
{
    if (!run_ok(r))
        cli_dump(what, r);
    assert_true(run_ok(r));
}

static void assert_err_has(const CliResult *r, const char *sub, const char *what)
{
    if (!strstr(r->err, sub)) {
        fprintf(stderr, "%s: expected '%s' on stderr\n", what, sub);
        cli_dump(what, r);
    }
    assert_non_null(strstr(r->err, sub));
}

static void run_in(CliResult *r, const char *const *argv, const char *dir)
{
    char env[1400];
    snprintf(env, sizeof env, "KILN_CACHE_DIR=%s", dir);
    const char *const e[] = {env, NULL};
    assert_int_equal(cli_run_env(argv, e, r), 0);
}

/* A well-formed entry: magic, stated length = payload length, payload checksum. */
static bool entry_valid(const char *path)
{
    size_t len = 0;
    unsigned char *b = (unsigned char *)cli_slurp(path, &len);
    bool ok = b && len >= HDR_BYTES && !memcmp(b, "KILNCACHE1", 10);
    uint64_t plen = 0;
    for (int i = 0; ok && i < 8; i++)
        plen |= (uint64_t)b[16 + i] << (8 * i);
    uint8_t sum[32];
    if (ok && plen == len - HDR_BYTES) {
        kiln_sha256(b + HDR_BYTES, plen, sum);
        ok = !memcmp(sum, b + 24, 32);
    } else {
        ok = false;
    }
    free(b);
    return ok;
}

/* Every entry in dir valid, no writer's temp file left; returns the entry count. */
static int check_dir(const char *dir)
{
    char **names;
    int n = cli_list_dir(dir, ".kc", &names);
    for (int i = 0; i < n; i++) {
        char p[2048];
        snprintf(p, sizeof p, "%s/%s", dir, names[i]);
        if (!entry_valid(p))
            fail_msg("cache entry %s is not valid", p);
    }
    if (n > 0)
        cli_free_list(names, n);
    DIR *d = opendir(dir);
    assert_non_null(d);
    for (struct dirent *e; (e = readdir(d));)
        if (!strncmp(e->d_name, ".tmp-", 5))
            fail_msg("leftover temp file %s/%s", dir, e->d_name);
    closedir(d);
    return n;
}

/* Eight processes, four different recipes (seven kernels) two processes each, into one
 * empty cache at once: all succeed, every entry is valid, and a second round hits. */
static void test_cache_concurrent_mixed(void **state)
{
    (void)state;
    static const char *const *const cmds[] = {run_a, run_mixed, run_w4, run_w4a8};
    enum { NCMD = 4, PER = 2, NPROC = NCMD * PER };
    char *dir = cli_mkdtemp("cache");
    char *logs = cli_mkdtemp("cachelogs");
    char env[1200];
    snprintf(env, sizeof env, "KILN_CACHE_DIR=%s", dir);
    const char *const e[] = {env, NULL};
    pid_t pid[NPROC];
    char out[NPROC][1300], err[NPROC][1300];
    for (int i = 0; i < NPROC; i++) {
        snprintf(out[i], sizeof out[i], "%s/out%d", logs, i);
        snprintf(err[i], sizeof err[i], "%s/err%d", logs, i);
        pid[i] = cli_start(cmds[i % NCMD], e, out[i], err[i]);
        assert_true(pid[i] > 0);
    }
    int misses = 0;
    for (int i = 0; i < NPROC; i++) {
        CliResult r = {.code = cli_wait(pid[i])};
        r.out = cli_slurp(out[i], &r.out_len);
        r.err = cli_slurp(err[i], &r.err_len);
        assert_non_null(r.out);
        assert_non_null(r.err);
        assert_ok(&r, "concurrent run");
        assert_null(strstr(r.err, "corrupted"));
        misses += cli_count(r.err, "cache miss");
        cli_result_free(&r);
    }
    int n = check_dir(dir);
    printf("  %d processes: %d kernel compiles, %d entries\n", NPROC, misses, n);
    assert_true(n >= 4);
    for (int i = 0; i < NCMD; i++) {
        CliResult r;
        run_in(&r, cmds[i], dir);
        assert_ok(&r, "after the concurrent round");
        assert_null(strstr(r.err, "cache miss"));
        assert_err_has(&r, "cache hit", "after the concurrent round");
        cli_result_free(&r);
    }
    assert_int_equal(check_dir(dir), n);
    cli_rm_rf(logs);
    cli_rm_rf(dir);
    free(logs);
    free(dir);
}

/* The one .kc file of dir not in `except` (may be NULL). */
static char *entry_other_than(const char *dir, const char *except)
{
    char **names;
    int n = cli_list_dir(dir, ".kc", &names);
    char *found = NULL;
    for (int i = 0; i < n; i++) {
        char p[2048];
        snprintf(p, sizeof p, "%s/%s", dir, names[i]);
        if (!except || strcmp(p, except)) {
            assert_null(found);
            found = strdup(p);
        }
    }
    if (n > 0)
        cli_free_list(names, n);
    assert_non_null(found);
    return found;
}

/* Runs argv expecting the entry to be rejected (stderr names it and `why`), the kernel
 * rebuilt (a miss, the check passes), and the entry valid and hit afterwards. */
static void expect_rejected(const char *const *argv, const char *dir, const char *entry,
                            const char *why, const char *what)
{
    CliResult r;
    run_in(&r, argv, dir);
    assert_ok(&r, what);
    assert_err_has(&r, "corrupted", what);
    assert_err_has(&r, entry, what);
    assert_err_has(&r, why, what);
    assert_err_has(&r, "cache miss", what);
    cli_result_free(&r);
    assert_true(entry_valid(entry));
    run_in(&r, argv, dir);
    assert_ok(&r, what);
    assert_err_has(&r, "cache hit", what);
    assert_null(strstr(r.err, "corrupted"));
    cli_result_free(&r);
}

static void rewrite(const char *path, const char *data, size_t len)
{
    assert_int_equal(cli_write_file(path, data, len), 0);
}

/* Entries that are well formed but not this kernel's: another kernel's file under this
 * key's name, another format version, another key's hash with a valid checksum, a
 * truncated one, and a file that is no cache entry at all. None is executed. */
static void test_cache_foreign_entries(void **state)
{
    (void)state;
    char *dir = cli_mkdtemp("cache");
    CliResult r;
    run_in(&r, run_a, dir);
    assert_ok(&r, "first run");
    cli_result_free(&r);
    char *ea = entry_other_than(dir, NULL);
    run_in(&r, run_a32, dir);
    assert_ok(&r, "N = 32");
    cli_result_free(&r);
    char *eb = entry_other_than(dir, ea);
    size_t la, lb;
    char *a = cli_slurp(ea, &la), *b = cli_slurp(eb, &lb);
    assert_non_null(a);
    assert_non_null(b);

    rewrite(eb, a, la); /* kernel A's entry renamed to B's key */
    expect_rejected(run_a32, dir, eb, "key mismatch", "A's entry under B's name");

    char *v = malloc(la);
    memcpy(v, a, la);
    memcpy(v, "KILNCACHE0", 10); /* an older format, checksum intact */
    rewrite(ea, v, la);
    expect_rejected(run_a, dir, ea, "bad magic", "another format version");

    memcpy(v, a, la);
    memcpy(v + 56, b + 56, 32); /* B's key hash, payload checksum still right */
    rewrite(ea, v, la);
    expect_rejected(run_a, dir, ea, "key mismatch", "another key's hash");

    rewrite(ea, a, HDR_BYTES + 10);
    expect_rejected(run_a, dir, ea, "length mismatch", "truncated payload");

    size_t le;
    char *elf = cli_slurp(KILN_BIN, &le); /* an executable under an entry's name */
    assert_non_null(elf);
    rewrite(ea, elf, le < 65536 ? le : 65536);
    expect_rejected(run_a, dir, ea, "bad magic", "a program as an entry");
    free(elf);

    assert_int_equal(check_dir(dir), 2);
    free(v);
    free(a);
    free(b);
    free(ea);
    free(eb);
    cli_rm_rf(dir);
    free(dir);
}

/* argv run as a user the directory permissions apply to: as root, nobody through
 * setpriv (root writes anywhere); NULL when that is impossible. */
static const char **unprivileged(const char *const *argv, const char **buf, size_t n)
{
    size_t k = 0;
    if (geteuid() == 0) {
        if (access("/usr/bin/setpriv", X_OK) != 0)
            return NULL;
        static const char *const pre[] = {"/usr/bin/setpriv", "--reuid=65534", "--regid=65534",
                                          "--clear-groups"};
        for (; k < 4; k++)
            buf[k] = pre[k];
    }
    for (size_t i = 0; argv[i] && k + 1 < n; i++)
        buf[k++] = argv[i];
    buf[k] = NULL;
    return buf;
}

/* A read-only cache directory is used for its entries and new kernels are compiled in
 * memory; one that cannot be created disables the cache. Either way the run works and
 * says so once, however many kernels it compiles. */
static void test_cache_readonly(void **state)
{
    (void)state;
    const char *argv_a[16], *argv_mixed[16];
    if (!unprivileged(run_a, argv_a, 16) || !unprivileged(run_mixed, argv_mixed, 16))
        skip();
    char *top = cli_mkdtemp("rocache");
    char dir[1200];
    snprintf(dir, sizeof dir, "%s/cache", top);
    CliResult r;
    run_in(&r, run_a, dir); /* one entry, written normally */
    assert_ok(&r, "filling the cache");
    cli_result_free(&r);
    assert_int_equal(chmod(top, 0755), 0);
    assert_int_equal(chmod(dir, 0555), 0);

    run_in(&r, argv_a, dir);
    assert_ok(&r, "read-only cache, cached kernel");
    assert_err_has(&r, "cache hit", "read-only cache");
    assert_int_equal(cli_count(r.err, "is read-only"), 1);
    cli_result_free(&r);
    run_in(&r, argv_mixed, dir);
    assert_ok(&r, "read-only cache, four new kernels");
    assert_int_equal(cli_count(r.err, "cache miss"), 4);
    assert_int_equal(cli_count(r.err, "is read-only: using its kernels, compiling new ones in memory"), 1);
    assert_null(strstr(r.err, "could not store"));
    assert_null(strstr(r.err, "error"));
    cli_result_free(&r);
    assert_int_equal(check_dir(dir), 1);

    /* a cache directory that does not exist and cannot be created */
    char sub[1300];
    snprintf(sub, sizeof sub, "%s/sub", dir);
    run_in(&r, argv_mixed, sub);
    assert_ok(&r, "uncreatable cache dir");
    assert_int_equal(cli_count(r.err, "compiling kernels in memory"), 1);
    assert_err_has(&r, sub, "uncreatable cache dir");
    cli_result_free(&r);

    assert_int_equal(chmod(dir, 0755), 0);
    cli_rm_rf(top);
    free(top);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_scanner),
        cmocka_unit_test(test_no_aborts),
        cmocka_unit_test(test_fuzz_regressions),
        cmocka_unit_test(test_cache_concurrent_mixed),
        cmocka_unit_test(test_cache_foreign_entries),
        cmocka_unit_test(test_cache_readonly),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
