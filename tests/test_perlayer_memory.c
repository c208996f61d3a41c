/* tests/test_perlayer_memory.c — `kiln eval --per-layer` within twice the model (issue 17;
 * docs/hardening.md, "Memory"). The per-layer SQNR's f32 reference read every layer's f32
 * weights whole per call — SmolLM2's tied head 113 MB beside its 113 MB f32 pack and the
 * file's pages — and kept each layer's M x N reference output for the run: 2.35x on the
 * GGUF under w4a16-g128-asym, 2.92x on a directory `kiln quantize` wrote with that recipe
 * (recipes/checkpoint/stored.lua), at --tokens 16. Now the reference of a big layer is
 * read 16 MiB of rows at a time, each chunk's pages handed back, and made per call
 * (kiln_linear_ref, model/nets/linear_w.c). Each command runs as a child; its peak
 * resident set (wait4's ru_maxrss) is checked against twice the size: the bigger of the
 * model file and the weights as the recipe runs them (kiln eval --json's recipe row). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "runtime/runtime.h"
#include "tests/test_rss.h"

#define SRC KILN_SOURCE_DIR

static int setup(void **st)
{
    (void)st;
    return tr_tmpdir_make("perlayer-memory");
}

static int teardown(void **st)
{
    (void)st;
    return tr_tmpdir_remove();
}

/* kiln ARGS as a child (stdout to tr_tmpdir/out, stderr to tr_tmpdir/err), which must exit 0:
 * its peak resident set in bytes. */
/* kiln ARGS, which must exit 0: its peak resident set in bytes (tr_kiln). */
static long long run_kiln(const char *const *args) { return tr_kiln(args, 600); }

/* tr_tmpdir/out's JSON (kiln eval --json --per-layer): the recipe row's weight_bytes, and the
 * per-layer list checked to hold every layer with a finite SQNR (the reference ran). */
static double weight_bytes(bool per_layer)
{
    char out[400];
    snprintf(out, sizeof out, "%s/out", tr_tmpdir);
    double w = tr_weight_bytes(out);
    if (!per_layer)
        return w;
    KilnJson *j = NULL;
    KilnDiag d = {0};
    if (kiln_json_parse_file(out, &j, &d))
        fail_msg("%s: %s", out, d.msg);
    const KilnJson *pl = kiln_json_get(j, "per_layer");
    assert_true(pl && pl->kind == KILN_JSON_ARRAY);
    assert_int_equal(pl->len, 211); /* SmolLM2: 30 blocks x 7, and lm_head */
    for (size_t i = 0; i < pl->len; i++) {
        const KilnJson *s = kiln_json_get(&pl->items[i], "sqnr_db");
        assert_true(s && s->kind == KILN_JSON_NUMBER && kiln_json_num(s) > 0 &&
                    kiln_json_num(s) < 400);
    }
    kiln_json_free(j);
    return w;
}

static double file_size(const char *path)
{
    struct stat s;
    if (stat(path, &s))
        fail_msg("%s missing: run scripts/fetch-models.sh", path);
    return (double)s.st_size;
}


/* kiln eval RECIPE --model MODEL --per-layer: first a short run without it for the size
 * (which also fills the kernel cache: no measured run pays LLVM's compile memory), then
 * the measured one, whose per-layer list is checked. Under a sanitizer, which checks no
 * size, the measured run only (its own weight_bytes; tests/test_rss.h). */
static void eval_per_layer(const char *what, const char *recipe, const char *model,
                           double file)
{
    const char *size_args[] = {"eval", recipe, "--model", model, "--tokens", "8", "--json",
                               "--quiet", NULL};
    double w = 0;
    if (!TR_SANITIZED) {
        run_kiln(size_args);
        w = weight_bytes(false);
    }
    const char *args[] = {"eval", recipe, "--model", model, "--tokens", "16", "--per-layer",
                          "--json", "--quiet", NULL};
    long long rss = run_kiln(args);
    double wl = weight_bytes(true);
    if (TR_SANITIZED)
        w = wl;
    tr_check_peak(what, rss, w > file ? w : file);
}

/* SmolLM2's GGUF: its lm_head (ignored: an f32 kernel) is the tied embeddings, 113 MB of
 * f32 read whole per call beside their 113 MB pack (407 MB for 173.5: 2.35x). */
static void test_gguf(void **st)
{
    (void)st;
    char gguf[1200], rp[1200];
    tr_model_path("smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", gguf, sizeof gguf);
    snprintf(rp, sizeof rp, "%s/recipes/w4a16-g128-asym.lua", SRC);
    eval_per_layer("kiln eval w4a16-g128-asym --per-layer (GGUF)", rp, "smollm2",
                   file_size(gguf));
}

/* The same recipe's kiln quantize output run again: the tied head's rows read from the
 * directory's f32 embeddings, whose 113 MB of file pages stayed until the end of each
 * call (524 MB for 179.6: 2.92x). */
static void test_directory(void **st)
{
    (void)st;
    char rp[1200], dir[400], st_file[500], stored[1200];
    snprintf(rp, sizeof rp, "%s/recipes/w4a16-g128-asym.lua", SRC);
    snprintf(dir, sizeof dir, "%s/smollm2-w4a16", tr_tmpdir);
    const char *q[] = {"quantize", rp, "--model", "smollm2", "-o", dir, "--quiet", NULL};
    run_kiln(q);
    snprintf(st_file, sizeof st_file, "%s/model.safetensors", dir);
    snprintf(stored, sizeof stored, "%s/recipes/checkpoint/stored.lua", SRC);
    eval_per_layer("kiln eval stored --per-layer (w4a16-g128-asym directory)", stored, dir,
                   file_size(st_file));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gguf),
        cmocka_unit_test(test_directory),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
