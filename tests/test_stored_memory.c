/* tests/test_stored_memory.c — a `kiln quantize` output directory run again within twice
 * its size (issue 17; docs/hardening.md, "Memory"): kiln eval, generate and bench --model
 * on a quantized Hugging Face directory (recipes/checkpoint/stored.lua, stored-acts.lua),
 * whose loader used to hold every layer's int16 codes, its dequantized f32 weights and a
 * second f32 copy for binding (SmolLM2 1.6 GB for a 220 MB checkpoint, 7.3x; MiniLM
 * 3.9x). The directory is made by kiln quantize in a temporary directory; each command
 * runs as a child and its peak resident set (wait4's ru_maxrss) is checked against twice
 * the model's size: the bigger of the checkpoint's model.safetensors and the weights as
 * the recipe runs them (the weight_bytes of kiln eval's recipe row). */
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
    return tr_tmpdir_make("stored-memory");
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

/* tr_tmpdir/NAME made by kiln quantize RECIPE --model MODEL; its path into dir. */
static void quantize(const char *recipe, const char *model, const char *name, char *dir,
                     size_t n)
{
    char rp[1200];
    snprintf(rp, sizeof rp, "%s/recipes/%s.lua", SRC, recipe);
    snprintf(dir, n, "%s/%s", tr_tmpdir, name);
    const char *args[] = {"quantize", rp, "--model", model, "-o", dir, "--quiet", NULL};
    run_kiln(args);
}

/* The directory's size under `recipe` (recipes/checkpoint/NAME.lua): the bigger of its
 * model.safetensors and the recipe row's weight_bytes (kiln eval --json). Also fills the
 * kernel cache, so no run measured below pays LLVM's compile memory. */
static double model_size(const char *dir, const char *recipe, bool decoder)
{
    char file[600], rp[1200], out[400];
    snprintf(file, sizeof file, "%s/model.safetensors", dir);
    snprintf(rp, sizeof rp, "%s/recipes/checkpoint/%s.lua", SRC, recipe);
    struct stat s;
    assert_int_equal(stat(file, &s), 0);
    const char *args[] = {"eval", rp, "--model", dir, decoder ? "--tokens" : "--sentences",
                          decoder ? "8" : "4", "--json", "--quiet", NULL};
    run_kiln(args);
    snprintf(out, sizeof out, "%s/out", tr_tmpdir);
    double w = tr_weight_bytes(out);
    return w > (double)s.st_size ? w : (double)s.st_size;
}

/* The command's peak on dir within twice the size. */
static void check_peak(const char *what, const char *dir, long long rss, double size)
{
    char w[300];
    snprintf(w, sizeof w, "%s on %s", what, strrchr(dir, '/') + 1);
    tr_check_peak(w, rss, size);
}

/* SmolLM2 quantized to W8A8 int8 (220 MB: the f32 embeddings and the int8 layers): eval
 * as stored (7.3x before), generate and bench --model. */
static void test_smollm2_stored(void **st)
{
    (void)st;
    char dir[400], rp[1200];
    quantize("w8a8-int8-dynamic", "smollm2", "smollm2-w8a8", dir, sizeof dir);
    snprintf(rp, sizeof rp, "%s/recipes/checkpoint/stored-acts.lua", SRC);
    double size = model_size(dir, "stored-acts", true);
    const char *ev[] = {"eval", rp, "--model", dir, "--tokens", "64", "--quiet", NULL};
    check_peak("kiln eval stored-acts --tokens 64", dir, run_kiln(ev), size);
    const char *gen[] = {"generate", rp, "--model", dir, "--prompt", "Name three colours.",
                         "-n", "8", "--quiet", NULL};
    check_peak("kiln generate stored-acts -n 8", dir, run_kiln(gen), size);
    const char *bench[] = {"bench", rp, "--model", dir, "-p", "64", "-n", "8", "--repeat", "1",
                           NULL};
    check_peak("kiln bench --model stored-acts", dir, run_kiln(bench), size);
}

/* MiniLM quantized to W4A8 (59 MB: the f32 embeddings, int4 codes stored as int8): 3.9x
 * before, the word embeddings' load alone (taken whole, with their file pages) 2.5x. */
static void test_minilm_stored(void **st)
{
    (void)st;
    char dir[400], rp[1200];
    quantize("w4a8-head", "minilm", "minilm-w4a8", dir, sizeof dir);
    snprintf(rp, sizeof rp, "%s/recipes/checkpoint/stored.lua", SRC);
    double size = model_size(dir, "stored", false);
    const char *ev[] = {"eval", rp, "--model", dir, "--sentences", "16", "--quiet", NULL};
    check_peak("kiln eval stored --sentences 16", dir, run_kiln(ev), size);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_smollm2_stored),
        cmocka_unit_test(test_minilm_stored),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
