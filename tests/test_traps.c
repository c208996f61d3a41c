/* tests/test_traps.c — traps a new user fell into (issue 18): example layers that an
 * ignore list swallowed, so `kiln run --check` checked only f32 kernels; `kiln run` on a
 * GPTQ / AWQ recipe rounding to nearest while the IR said `method = gptq`; the layer
 * named twice in the stored-weights refusal. */
#include "cli/cli_util.h"

#include <math.h>

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "frontend/recipe.h"
#include "model/eval/layer_method.h"
#include "quant/quant.h"

#define SRC KILN_SOURCE_DIR

static void kiln(CliResult *r, const char *const *args)
{
    const char *argv[32] = {"/usr/bin/timeout", "-s", "KILL", "120", KILN_BIN};
    int n = 5;
    for (int i = 0; args[i] && n < 31; i++)
        argv[n++] = args[i];
    argv[n] = NULL;
    assert_int_equal(cli_run_env(argv, NULL, r), 0);
}

static char *write_recipe(const char *dir, const char *name, const char *text)
{
    char *path = malloc(strlen(dir) + strlen(name) + 2);
    sprintf(path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    return path;
}

static int count(const char *s, const char *what)
{
    int n = 0;
    for (const char *p = strstr(s, what); p; p = strstr(p + 1, what))
        n++;
    return n;
}

/* ------------------------------------------------------------------ example layers */

static const char *const IGNORE_BLOCK0 =
    "return recipe \"ig\" {\n"
    "  ignore = { \"lua:^model%.layers%.0%.\" },\n"
    "  rule \"*.mlp.*\" { weights = int8 {}, activations = f16 },\n"
    "  rule \"lua:%.q_proj$\" { weights = int8 {}, activations = f16 },\n"
    "  rule \"*\" { weights = int4 { group = 32 }, activations = f16 },\n"
    "}\n";

static const char *const IGNORE_ALL_MLP =
    "return recipe \"ig2\" {\n"
    "  ignore = { \"*mlp*\" },\n"
    "  rule \"*.mlp.*\" { weights = int8 {}, activations = f16 },\n"
    "  rule \"*\" { weights = int4 { group = 32 }, activations = f16 },\n"
    "}\n";

static void test_examples_past_ignore(void **state)
{
    (void)state;
    KilnRecipe *r = NULL;
    KilnDiag d = {0};
    assert_int_equal(kiln_recipe_load_string(IGNORE_BLOCK0, strlen(IGNORE_BLOCK0), "ig.lua", &r, &d), 0);
    for (int i = 0; i < kiln_recipe_nrules(r); i++) {
        const char *ex = kiln_recipe_rule_example(r, i);
        assert_non_null(ex);
        assert_false(kiln_recipe_ignored(r, ex));
        assert_int_equal(kiln_recipe_match(r, ex), i);
        assert_true(kiln_recipe_rule_example_lands(r, i));
    }
    assert_string_equal(kiln_recipe_rule_example(r, 0), "model.layers.1.mlp.x");
    assert_string_equal(kiln_recipe_rule_example(r, 1), "model.layers.1.q_proj");
    kiln_recipe_free(r);

    assert_int_equal(kiln_recipe_load_string(IGNORE_ALL_MLP, strlen(IGNORE_ALL_MLP), "ig2.lua", &r, &d), 0);
    assert_false(kiln_recipe_rule_example_lands(r, 0)); /* every mlp name is ignored */
    assert_true(kiln_recipe_rule_example_lands(r, 1));
    kiln_recipe_free(r);
}

static void test_run_check_fails_on_unexercised_rule(void **state)
{
    (void)state;
    char *dir = cli_mkdtemp("traps");
    char *ig = write_recipe(dir, "ig.lua", IGNORE_BLOCK0);
    char *ig2 = write_recipe(dir, "ig2.lua", IGNORE_ALL_MLP);
    CliResult r;

    /* kiln ir: every rule's example is planned under that rule */
    kiln(&r, (const char *[]){"ir", ig, "--shape", "1,64,64", NULL});
    if (r.code != 0 || !strstr(r.out, "rule = \"*.mlp.*\"") || !strstr(r.out, "rule = \"%.q_proj$\"") ||
        strstr(r.out, "(ignored)") || strstr(r.err, "note:"))
        cli_dump("kiln ir past an ignore list", &r);
    assert_int_equal(r.code, 0);
    assert_non_null(strstr(r.out, "func @\"model.layers.1.mlp.x\""));
    assert_non_null(strstr(r.out, "rule = \"*.mlp.*\""));
    assert_non_null(strstr(r.out, "rule = \"%.q_proj$\""));
    assert_null(strstr(r.out, "(ignored)"));
    assert_null(strstr(r.err, "note:"));
    cli_result_free(&r);

    kiln(&r, (const char *[]){"run", ig, "--shape", "4,64,64", "--check", NULL});
    if (r.code != 0)
        cli_dump("kiln run --check past an ignore list", &r);
    assert_int_equal(r.code, 0);
    assert_int_equal(count(r.out, "kernel vs reference interpreter: PASS"), 3);
    cli_result_free(&r);

    /* a rule no example reaches: noted, and --check fails instead of passing on f32 */
    kiln(&r, (const char *[]){"run", ig2, "--shape", "4,64,64", "--check", NULL});
    if (r.code != 1 || !strstr(r.out, "check: FAIL: 1 rule not checked"))
        cli_dump("kiln run --check with an unreachable rule", &r);
    assert_int_equal(r.code, 1);
    assert_non_null(strstr(r.out, "check: FAIL: 1 rule not checked"));
    assert_non_null(strstr(r.err, "ig2.lua:3: rule \"*.mlp.*\": no example layer name was found"));
    assert_non_null(strstr(r.err, "falls under the ignore list"));
    cli_result_free(&r);

    kiln(&r, (const char *[]){"ir", ig2, "--shape", "1,64,64", NULL});
    assert_int_equal(r.code, 0); /* kiln ir shows the IR, with the note */
    assert_non_null(strstr(r.err, "no example layer name was found"));
    cli_result_free(&r);
    remove(ig);
    remove(ig2);
    rmdir(dir);
    free(ig), free(ig2), free(dir);
}

/* ------------------------------------------------------------------ methods in kiln run */

/* "SQNR A dB (round to nearest: B dB)" of the method line. */
static void method_sqnr(const char *out, double *a, double *b)
{
    const char *p = strstr(out, "weight error vs f32 on");
    assert_non_null(p);
    p = strstr(p, "SQNR ");
    assert_non_null(p);
    assert_int_equal(sscanf(p, "SQNR %lf dB (round to nearest: %lf dB)", a, b), 2);
}

static void test_run_applies_methods(void **state)
{
    (void)state;
    CliResult r;
    double a, b;
    kiln(&r, (const char *[]){"run", SRC "/recipes/w4a16-g128-gptq.lua", "--shape", "8,64,256",
                              "--check", NULL});
    if (r.code != 0 || !strstr(r.out, "method gptq"))
        cli_dump("kiln run gptq", &r);
    assert_int_equal(r.code, 0);
    assert_non_null(strstr(r.out, "method gptq act_order=static int4 asym group=128 ran on a "
                                  "synthetic calibration batch of 2048 rows"));
    assert_non_null(strstr(r.out, "kernel vs reference interpreter: PASS"));
    method_sqnr(r.out, &a, &b);
    assert_true(a >= b); /* GPTQ on the batch it minimises the output error of */
    cli_result_free(&r);

    /* the interpreter (no kernel): the same method, the same weights */
    kiln(&r, (const char *[]){"run", SRC "/recipes/w4a16-g128-gptq.lua", "--shape", "8,64,256",
                              "--target", "interp", "--check", NULL});
    assert_int_equal(r.code, 0);
    assert_non_null(strstr(r.out, "method gptq"));
    cli_result_free(&r);

    kiln(&r, (const char *[]){"run", SRC "/recipes/w4a16-g128-awq.lua", "--shape", "8,64,256",
                              "--check", NULL});
    if (r.code != 0 || !strstr(r.out, "method awq"))
        cli_dump("kiln run awq", &r);
    assert_int_equal(r.code, 0);
    assert_non_null(strstr(r.out, "the input as the method transforms it"));
    assert_non_null(strstr(r.out, "kernel vs reference interpreter: PASS"));
    cli_result_free(&r);

    kiln(&r, (const char *[]){"run", SRC "/recipes/w8a8-int8-smoothquant.lua", "--shape",
                              "8,64,256", "--check", NULL});
    assert_int_equal(r.code, 0);
    assert_non_null(strstr(r.out, "method smoothquant (alpha 0.50) + gptq int8 sym channel"));
    assert_non_null(strstr(r.out, "kernel vs reference interpreter: PASS"));
    cli_result_free(&r);

    /* too wide to run here: said, not silent */
    kiln(&r, (const char *[]){"run", SRC "/recipes/w4a16-g128-gptq.lua", "--shape", "1,8,4096",
                              NULL});
    assert_int_equal(r.code, 0);
    assert_non_null(strstr(r.out, "method NOT applied, the kernel rounds to nearest: gptq not "
                                  "run: K = 4096"));
    cli_result_free(&r);

    /* round to nearest: nothing to say */
    kiln(&r, (const char *[]){"run", SRC "/recipes/w4a16-g128-asym.lua", "--shape", "8,64,256",
                              NULL});
    assert_int_equal(r.code, 0);
    assert_null(strstr(r.out, "method"));
    cli_result_free(&r);
}

/* Correlated inputs, as a model's are: x = z·A with A mixing neighbouring columns and
 * column gains from 0.2 to 5. GPTQ fitted on one batch beats round to nearest on
 * another batch of the same distribution. */
static uint64_t rng = 0x9e3779b97f4a7c15ull;
static double unif(void)
{
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return ((double)(rng >> 11) + 0.5) / 9007199254740992.0;
}
static float gauss(void) { return (float)(sqrt(-2 * log(unif())) * cos(6.283185307179586 * unif())); }

static void correlated(float *x, int64_t rows, int64_t K)
{
    for (int64_t i = 0; i < rows; i++) {
        float prev = 0;
        for (int64_t k = 0; k < K; k++) {
            float z = 0.9f * prev + 0.44f * gauss();
            prev = z;
            x[i * K + k] = z * (0.2f + 4.8f * (float)((k * 37) % K) / (float)K);
        }
    }
}

static double held_out_sqnr(const float *X, const float *W, const float *Xq, const float *Wq,
                            int64_t rows, int64_t N, int64_t K)
{
    double sig = 0, err = 0;
    for (int64_t i = 0; i < rows; i++)
        for (int64_t n = 0; n < N; n++) {
            double y = 0, yq = 0;
            for (int64_t k = 0; k < K; k++) {
                y += (double)X[i * K + k] * W[n * K + k];
                yq += (double)Xq[i * K + k] * Wq[n * K + k];
            }
            sig += y * y, err += (y - yq) * (y - yq);
        }
    return 10 * log10(sig / err);
}

static void test_layer_method_beats_rtn_on_correlated_inputs(void **state)
{
    (void)state;
    const int64_t N = 64, K = 256, rows = 2048, test_rows = 256;
    const char *src = "return recipe \"g\" { rule \"*\" { weights = int4 { group = 64 }, "
                      "activations = f16, method = \"gptq\" } }";
    KilnRecipe *r = NULL;
    KilnDiag d = {0};
    assert_int_equal(kiln_recipe_load_string(src, strlen(src), "g.lua", &r, &d), 0);
    float *W = malloc(sizeof(float) * N * K), *X = malloc(sizeof(float) * rows * K);
    float *T = malloc(sizeof(float) * test_rows * K), *Tm = malloc(sizeof(float) * test_rows * K);
    for (int64_t i = 0; i < N * K; i++)
        W[i] = gauss() / 16.0f;
    correlated(X, rows, K);
    correlated(T, test_rows, K);
    memcpy(Tm, T, sizeof(float) * test_rows * K);
    KilnLayerMethod m;
    assert_int_equal(kiln_layer_method_run(r, "model.layers.0.mlp.up_proj", NULL, W, N, K, X, rows, &m, &d), 0);
    assert_non_null(m.qw);
    assert_non_null(strstr(m.ran, "gptq"));
    assert_true(m.sqnr_db > m.rtn_sqnr_db);
    assert_int_equal(kiln_layer_method_input(&m, Tm, test_rows), 0);
    KilnQuantSpec q = {.fmt = KILN_QF_INT4, .symmetric = true, .gran = KILN_GRAN_GROUP, .group = 64};
    KilnQResult rtn = {0};
    assert_int_equal(kiln_quant_rtn(W, N, K, &q, &rtn, &d), 0);
    double s_gptq = held_out_sqnr(T, W, Tm, m.qw, test_rows, N, K);
    double s_rtn = held_out_sqnr(T, W, T, rtn.w, test_rows, N, K);
    print_message("held-out SQNR: gptq %.2f dB, round to nearest %.2f dB\n", s_gptq, s_rtn);
    assert_true(s_gptq > s_rtn + 1.0);
    kiln_qresult_free(&rtn);
    kiln_layer_method_free(&m);
    free(W), free(X), free(T), free(Tm);
    kiln_recipe_free(r);
}

/* ------------------------------------------------------------------ messages */

static void test_stored_refusal_names_layer_once(void **state)
{
    (void)state;
    const char *home = getenv("HOME");
    char mpath[1024];
    snprintf(mpath, sizeof mpath, "%s/.cache/kiln/models/minilm/model.safetensors", home ? home : ".");
    if (access(mpath, R_OK) != 0) {
        print_message("skipped: no MiniLM at %s (scripts/fetch-models.sh)\n", mpath);
        skip();
    }
    CliResult r;
    kiln(&r, (const char *[]){"eval", SRC "/recipes/checkpoint/stored.lua", "--model", "minilm",
                              "--sentences", "2", NULL});
    const char *layer = "encoder.layer.0.attention.self.query";
    if (r.code != 2 || count(r.err, layer) != 1)
        cli_dump("stored weights on an f32 model", &r);
    assert_int_equal(r.code, 2);
    assert_non_null(strstr(r.err, "stored.lua:6: layer 'encoder.layer.0.attention.self.query': "
                                  "rule \"*\" says weights = stored"));
    assert_int_equal(count(r.err, layer), 1);
    cli_result_free(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_examples_past_ignore),
        cmocka_unit_test(test_run_check_fails_on_unexercised_rule),
        cmocka_unit_test(test_run_applies_methods),
        cmocka_unit_test(test_layer_method_beats_rtn_on_correlated_inputs),
        cmocka_unit_test(test_stored_refusal_names_layer_once),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
