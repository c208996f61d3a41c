/* tests/test_generate.c — kiln generate (docs/generate.md): chat-template families detected
 * and one user turn formatted as transformers renders the template (tests/generate/NAME.jinja,
 * SmolLM2's from its GGUF; NAME.expected from render_expected.py); the sampler (greedy limits,
 * the nucleus as the fewest tokens reaching top_p, seeded draws matching the nucleus's
 * softmax by a chi-square bound); streamed UTF-8 held back between whole characters; the
 * KV-cached greedy decode equal to the argmax of full re-runs without a cache; generation
 * under w4a8 and w8a8, the latter also from a Hugging Face directory kiln quantize writes
 * (its chat template kept) with weights = stored; bad inputs (an unknown or missing
 * template among them) exit 2 with their numbers. Needs the models. */
#include "cli/cli_util.h" /* first: the POSIX declarations */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>

#include "frontend/recipe.h"
#include "model/eval/generate.h"
#include "model/files/modelfile.h"
#include "model/tokenizers/tokenizer.h"
#include "model/model.h"
#include "runtime/runtime.h"

#define SRC KILN_SOURCE_DIR
#define GEN_DIR SRC "/tests/generate"
#define USER_TEXT "  Hello, who are you? \xc3\x89" "cris en fran\xc3\xa7" "ais.  "

static void model_path(const char *which, char *buf, size_t n)
{
    KilnDiag d = {0};
    char m[1400];
    if (kiln_model_path(which, buf, n, &d))
        fail_msg("%s (the test needs the real models: run scripts/fetch-models.sh)",
                 kiln_diag_format(&d, m, sizeof m));
}

/* ------------------------------------------------------------------ chat templates */

static char *fixture(const char *name, const char *ext)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s%s", GEN_DIR, name, ext);
    char *s = tu_read_file(path, NULL);
    if (!s)
        fail_msg("cannot read %s", path);
    return s;
}

static const char *opt(const char *s) { return strcmp(s, "-") ? s : NULL; }

static void check_template(const char *name, const char *family, const char *bos,
                           const char *eos, const char *eot)
{
    char *tmpl = fixture(name, ".jinja");
    KilnChatKind k = kiln_chat_detect(tmpl);
    if (strcmp(kiln_chat_name(k), family))
        fail_msg("%s: detected %s, want %s", name, kiln_chat_name(k), family);
    bool sys = false;
    char *got = kiln_chat_format(k, tmpl, USER_TEXT, opt(bos), opt(eos), &sys);
    if (k == KILN_CHAT_UNKNOWN) {
        assert_null(got);
    } else {
        char *want = fixture(name, ".expected");
        if (!got || strcmp(got, want))
            fail_msg("%s: formatted\n[%s]\nwant (transformers)\n[%s]", name, got ? got : "(null)",
                     want);
        assert_int_equal(sys, strstr(want, "system") != NULL);
        free(want);
    }
    const char *e = kiln_chat_end_of_turn(k, tmpl);
    if (strcmp(e ? e : "-", eot))
        fail_msg("%s: end of turn %s, want %s", name, e ? e : "-", eot);
    free(got);
    free(tmpl);
}

static void test_chat_templates(void **st)
{
    (void)st;
    char *tsv = fixture("templates", ".tsv");
    int rows = 0;
    for (char *line = strtok(tsv, "\n"); line; line = strtok(NULL, "\n")) {
        if (line[0] == '#')
            continue;
        char *f[5] = {line};
        for (int i = 1; i < 5; i++) {
            char *tab = strchr(f[i - 1], '\t');
            assert_non_null(tab);
            *tab = 0;
            f[i] = tab + 1;
        }
        check_template(f[0], f[1], f[2], f[3], f[4]);
        rows++;
    }
    assert_true(rows >= 10);
    free(tsv);
    /* the SmolLM2 fixture is the GGUF's own template, byte for byte */
    char path[4096];
    model_path("smollm2", path, sizeof path);
    KilnModelFile *mf = NULL;
    KilnDiag d = {0};
    assert_int_equal(kiln_mf_open(path, &mf, &d), 0);
    char *want = fixture("smollm2", ".jinja");
    const char *t = kiln_mf_meta_str(mf, "tokenizer.chat_template");
    assert_non_null(t);
    assert_string_equal(t, want);
    free(want);
    kiln_mf_close(mf);
    assert_int_equal(kiln_chat_detect(NULL), KILN_CHAT_UNKNOWN);
    assert_int_equal(kiln_chat_detect(""), KILN_CHAT_UNKNOWN);
}

/* ------------------------------------------------------------------ sampler */

static void test_sampler_greedy(void **st)
{
    (void)st;
    float lg[6] = {0.5f, 2.0f, -1.0f, 3.5f, 3.5f, 1.0f}; /* a tie: the lower id wins */
    assert_int_equal(kiln_argmax(lg, 6), 3);
    const float cases[][2] = {{0, 0.9f}, {0.8f, 0}, {0, 0}};
    for (int c = 0; c < 3; c++) {
        KilnSampler s;
        assert_int_equal(kiln_sampler_init(&s, 6, cases[c][0], cases[c][1], 7), 0);
        for (int i = 0; i < 50; i++)
            assert_int_equal(kiln_sample(&s, lg), 3);
        kiln_sampler_free(&s);
    }
    /* a temperature near 0 and a small top_p leave one token: the argmax */
    int32_t idx[6];
    double p[6];
    float lg2[6] = {0.5f, 2.0f, -1.0f, 3.5f, 3.0f, 1.0f};
    assert_int_equal(kiln_nucleus(lg2, 6, 1e-3f, 0.99f, idx, p), 1);
    assert_int_equal(idx[0], 3);
    assert_int_equal(kiln_nucleus(lg2, 6, 1.0f, 1e-6f, idx, p), 1);
    assert_int_equal(idx[0], 3);
}

static void test_nucleus_set(void **st)
{
    (void)st;
    /* probabilities 0.5, 0.2, 0.15, 0.1, 0.05 at temp 1 */
    const double pr[5] = {0.1, 0.5, 0.05, 0.2, 0.15};
    float lg[5];
    for (int i = 0; i < 5; i++)
        lg[i] = (float)log(pr[i]);
    int32_t idx[5];
    double p[5];
    const struct { float top_p; int k; } cases[] = {{0.45f, 1}, {0.6f, 2}, {0.69f, 2},
                                                    {0.72f, 3}, {0.84f, 3}, {0.86f, 4},
                                                    {0.96f, 5}, {1.0f, 5}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        int k = kiln_nucleus(lg, 5, 1.0f, cases[c].top_p, idx, p);
        if (k != cases[c].k)
            fail_msg("top_p %.2f: %d tokens kept, want %d", cases[c].top_p, k, cases[c].k);
    }
    int k = kiln_nucleus(lg, 5, 1.0f, 0.72f, idx, p); /* 0.5, 0.2, 0.15 renormalised */
    assert_int_equal(idx[0], 1), assert_int_equal(idx[1], 3), assert_int_equal(idx[2], 4);
    assert_int_equal(k, 3);
    assert_true(fabs(p[0] - 0.5 / 0.85) < 1e-6 && fabs(p[2] - 0.15 / 0.85) < 1e-6);
    /* random logits: the fewest most likely tokens whose mass reaches top_p */
    enum { V = 3000 };
    static float big[V];
    static int32_t bi[V];
    static double bp[V], full[V];
    uint64_t s = 42;
    for (int i = 0; i < V; i++) {
        s = s * 6364136223846793005ULL + 1442695040888963407ULL;
        big[i] = (float)((double)(s >> 11) * 0x1.0p-53 * 8.0);
    }
    for (float top_p = 0.1f; top_p < 1.0f; top_p += 0.2f) {
        double mx = 0, sum = 0;
        for (int i = 0; i < V; i++)
            mx = big[i] > mx ? big[i] : mx;
        for (int i = 0; i < V; i++)
            sum += full[i] = exp((big[i] - mx) / 0.7);
        int n = kiln_nucleus(big, V, 0.7f, top_p, bi, bp);
        double mass = 0, least = INFINITY;
        for (int i = 0; i < n; i++) {
            mass += full[bi[i]] / sum;
            least = fmin(least, full[bi[i]]);
            if (i)
                assert_true(full[bi[i]] <= full[bi[i - 1]]);
        }
        assert_true(mass >= top_p - 1e-9);
        assert_true(mass - full[bi[n - 1]] / sum < top_p); /* one fewer would not do */
        int inside = 0;
        for (int i = 0; i < V; i++)
            inside += full[i] >= least;
        assert_int_equal(inside, n); /* nothing left out is more likely than what is kept */
    }
}

static void test_sampler_distribution(void **st)
{
    (void)st;
    enum { V = 40, DRAWS = 200000 };
    float lg[V];
    uint64_t s = 9;
    for (int i = 0; i < V; i++) {
        s = s * 6364136223846793005ULL + 1442695040888963407ULL;
        lg[i] = (float)((double)(s >> 11) * 0x1.0p-53 * 4.0);
    }
    const float temp = 0.7f, top_p = 0.9f;
    int32_t idx[V];
    double p[V];
    int k = kiln_nucleus(lg, V, temp, top_p, idx, p);
    assert_true(k > 5 && k < V); /* a real cut */
    double want[V] = {0};
    for (int i = 0; i < k; i++)
        want[idx[i]] = p[i] * DRAWS;
    static int count[V];
    KilnSampler sm;
    assert_int_equal(kiln_sampler_init(&sm, V, temp, top_p, 12345), 0);
    int32_t first[8];
    for (int i = 0; i < DRAWS; i++) {
        int32_t t = kiln_sample(&sm, lg);
        assert_true(t >= 0 && t < V);
        if (want[t] == 0)
            fail_msg("token %d outside the nucleus drawn", t);
        count[t]++;
        if (i < 8)
            first[i] = t;
    }
    kiln_sampler_free(&sm);
    double chi2 = 0;
    for (int i = 0; i < V; i++)
        if (want[i] > 0)
            chi2 += (count[i] - want[i]) * (count[i] - want[i]) / want[i];
    /* df = k - 1; mean df, sd sqrt(2 df): 6 sd above is p < 1e-6 for these df */
    double df = k - 1, bound = df + 6 * sqrt(2 * df);
    if (chi2 > bound)
        fail_msg("chi-square %.1f over %d tokens exceeds %.1f", chi2, k, bound);
    /* the seed repeats a run; another seed does not */
    KilnSampler a, b;
    kiln_sampler_init(&a, V, temp, top_p, 12345);
    kiln_sampler_init(&b, V, temp, top_p, 54321);
    int same = 0;
    for (int i = 0; i < 8; i++) {
        assert_int_equal(kiln_sample(&a, lg), first[i]);
        same += kiln_sample(&b, lg) == first[i];
    }
    assert_true(same < 8);
    kiln_sampler_free(&a), kiln_sampler_free(&b);
}

/* ------------------------------------------------------------------ UTF-8 holdback */

static void test_utf8_hold(void **st)
{
    (void)st;
    /* "é" (2 bytes), "€" (3), "🙂" (4) cut inside, then ASCII, then a stray continuation */
    const char *parts[] = {"a\xc3", "\xa9", "\xe2", "\x82", "\xac!", "\xf0\x9f", "\x99\x82",
                           "x", "\x80y"};
    const char *want[] = {"a", "\xc3\xa9", "", "", "\xe2\x82\xac!", "", "\xf0\x9f\x99\x82",
                          "x", "\x80y"};
    KilnUtf8Hold h = {0};
    char out[64];
    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++) {
        size_t n = kiln_utf8_hold(&h, parts[i], strlen(parts[i]), out);
        out[n] = 0;
        if (strcmp(out, want[i]))
            fail_msg("part %zu: wrote [%s], want [%s]", i, out, want[i]);
    }
    assert_int_equal(h.n, 0);
}

/* ------------------------------------------------------------------ the command */

#define MAXARGS 24

static void kiln(CliResult *r, ...)
{
    const char *argv[MAXARGS] = {KILN_BIN};
    int n = 1;
    va_list ap;
    va_start(ap, r);
    for (const char *s; n < MAXARGS - 1 && (s = va_arg(ap, const char *));)
        argv[n++] = s;
    va_end(ap);
    argv[n] = NULL;
    assert_int_equal(cli_run_env(argv, NULL, r), 0);
    assert_false(cli_crashed(r));
}

static void expect_exit(const CliResult *r, int code, const char *what)
{
    if (r->code != code) {
        cli_dump("kiln generate", r);
        fail_msg("exit %d, want %d", r->code, code);
    }
    if (what && !strstr(r->err, what)) {
        cli_dump("kiln generate", r);
        fail_msg("stderr lacks \"%s\"", what);
    }
}

/* --json's ids (prompt_ids or ids) into out; their count */
static int json_ids(const KilnJson *j, const char *key, int32_t *out, int cap)
{
    const KilnJson *a = kiln_json_get(j, key);
    assert_non_null(a);
    assert_int_equal(a->kind, KILN_JSON_ARRAY);
    assert_true((int)a->len <= cap);
    for (size_t i = 0; i < a->len; i++)
        out[i] = (int32_t)a->items[i].i;
    return (int)a->len;
}

static KilnJson *run_json(CliResult *r, const char *recipe, const char *model, const char *n)
{
    kiln(r, "generate", recipe, "--model", model, "--prompt", "Name three colours of the rainbow.",
         "-n", n, "--json", "--quiet", NULL);
    expect_exit(r, 0, NULL);
    KilnJson *j = NULL;
    KilnDiag d = {0};
    assert_int_equal(kiln_json_parse(r->out, r->out_len, "stdout", &j, &d), 0);
    return j;
}

/* Greedy f32: every token the KV-cached decode chose is the argmax of the model run on the
 * whole prefix from scratch (no cache), and a stop is the argmax too. */
static void test_kv_decode_matches_full_rerun(void **st)
{
    (void)st;
    char path[4096];
    model_path("smollm2", path, sizeof path);
    CliResult r;
    KilnJson *j = run_json(&r, SRC "/recipes/f32.lua", "smollm2", "8");
    int32_t ids[256];
    int np = json_ids(j, "prompt_ids", ids, 200);
    int ng = json_ids(j, "ids", ids + np, 40);
    assert_true(ng >= 1);
    bool stopped = strcmp(kiln_json_get(j, "stop")->str, "length") != 0;
    assert_true(stopped || ng == 8);
    KilnLlama *m = NULL;
    KilnDiag d = {0};
    assert_int_equal(kiln_llama_load(path, &m, &d), 0);
    KilnRunCtx rc = {0};
    assert_int_equal(kiln_runctx_open(&rc, SRC "/recipes/f32.lua", NULL, 0, false, &d), 0);
    int nl, V = kiln_llama_vocab(m);
    KilnLinear *ls = kiln_llama_linears(m, &nl);
    assert_int_equal(kiln_linears_bind(ls, nl, &rc, &d), 0);
    float *lg = malloc(sizeof(float) * (size_t)V);
    KilnKVSpec f32 = {KILN_KV_F32, false, true, 0};
    for (int t = 0; t < ng + stopped; t++) {
        KilnKVCache kv;
        assert_int_equal(kiln_llama_kv_init(m, &kv, &f32, np + t, &d), 0);
        assert_int_equal(kiln_llama_forward(m, rc.pool, &kv, ids, np + t, 0, 1, lg, &d), 0);
        int32_t best = kiln_argmax(lg, V);
        if (t < ng && best != ids[np + t])
            fail_msg("step %d: decode chose %d, the full re-run's argmax is %d", t, ids[np + t],
                     best);
        if (t == ng) /* the stop token */
            assert_int_equal(best, kiln_tok_special(kiln_llama_tokenizer(m, &d), "eos"));
        kiln_kv_free(&kv);
    }
    free(lg);
    kiln_json_free(j);
    cli_result_free(&r);
    kiln_llama_free(m);
    kiln_runctx_close(&rc, NULL);
}

/* Whole UTF-8 characters only (what the holdback promises of the stream). */
static bool valid_utf8(const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        int n = *p < 0x80 ? 1 : (*p & 0xE0) == 0xC0 ? 2 : (*p & 0xF0) == 0xE0 ? 3
              : (*p & 0xF8) == 0xF0 ? 4 : 0;
        if (!n)
            return false;
        for (int i = 1; i < n; i++)
            if ((p[i] & 0xC0) != 0x80)
                return false;
        p += n;
    }
    return true;
}

/* w4a8 streams whole characters of a French answer (w8a8: test_generate_hf_dir). */
static void test_generate_w4a8(void **st)
{
    (void)st;
    CliResult r;
    kiln(&r, "generate", SRC "/recipes/w4a8.lua", "--prompt",
         "\xc3\x89" "cris une phrase en fran\xc3\xa7" "ais sur la mer.", "-n", "12", "--quiet",
         NULL);
    expect_exit(&r, 0, "tokens/s");
    assert_non_null(strstr(r.err, "chat template chatml"));
    assert_non_null(strstr(r.err, "prefill"));
    assert_non_null(strstr(r.err, "recipe w4a8 (KV f32)"));
    assert_non_null(strstr(r.err, "w int4 sym group=128, a int8 sym token dynamic x210"));
    size_t letters = 0;
    for (const char *p = r.out; *p; p++)
        letters += (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z');
    if (letters < 8 || !valid_utf8(r.out)) {
        cli_dump("w4a8", &r);
        fail_msg("w4a8: no text, or not whole UTF-8 characters");
    }
    cli_result_free(&r);
}

/* A Hugging Face directory kiln quantize writes: its chat template comes along, and the
 * stored int8 weights under dynamic int8 activations give the GGUF's w8a8 tokens (text,
 * in whole UTF-8 characters). A
 * template kiln does not know is exit 2 naming it, unless --no-chat. */
static void test_generate_hf_dir(void **st)
{
    (void)st;
    char *dir = cli_mkdtemp("gen");
    char out[4200];
    snprintf(out, sizeof out, "%s/ckpt", dir);
    CliResult r;
    kiln(&r, "quantize", SRC "/recipes/w8a8-int8-dynamic.lua", "--model", "smollm2", "-o", out,
         "--quiet", NULL);
    expect_exit(&r, 0, NULL);
    cli_result_free(&r);
    CliResult g;
    KilnJson *jg = run_json(&g, SRC "/recipes/w8a8-int8-dynamic.lua", "smollm2", "8");
    KilnJson *jd = run_json(&r, SRC "/recipes/checkpoint/stored-acts.lua", out, "8");
    const KilnJson *text = kiln_json_get(jg, "text");
    assert_true(text && text->kind == KILN_JSON_STRING && strlen(text->str) >= 8);
    assert_true(valid_utf8(text->str));
    assert_string_equal(kiln_json_get(jd, "chat_template")->str, "chatml");
    assert_true(kiln_json_get(jd, "default_system_turn")->b);
    int32_t a[64], b[64];
    int na = json_ids(jg, "prompt_ids", a, 64), nb = json_ids(jd, "prompt_ids", b, 64);
    assert_int_equal(na, nb);
    assert_memory_equal(a, b, sizeof a[0] * (size_t)na);
    na = json_ids(jg, "ids", a, 64), nb = json_ids(jd, "ids", b, 64);
    assert_int_equal(na, nb);
    assert_memory_equal(a, b, sizeof a[0] * (size_t)na);
    kiln_json_free(jg), kiln_json_free(jd);
    cli_result_free(&g), cli_result_free(&r);
    char jinja[4300];
    snprintf(jinja, sizeof jinja, "%s/chat_template.jinja", out);
    char *vicuna = fixture("vicuna", ".jinja");
    assert_int_equal(cli_write_file(jinja, vicuna, strlen(vicuna)), 0);
    free(vicuna);
    kiln(&r, "generate", SRC "/recipes/w8a8-int8-dynamic.lua", "--model", out, "--prompt", "Hi",
         "-n", "4", "--quiet", NULL);
    expect_exit(&r, 2, "chat template not recognised (\"{% for message in messages %}");
    assert_non_null(strstr(r.err, "--no-chat"));
    cli_result_free(&r);
    kiln(&r, "generate", SRC "/recipes/w8a8-int8-dynamic.lua", "--model", out, "--prompt",
         "USER: Hi\nASSISTANT:", "-n", "4", "--no-chat", "--quiet", NULL);
    expect_exit(&r, 0, "chat template none");
    cli_result_free(&r);
    /* no template at all (and tokenizer_config.json without one): --no-chat is asked for */
    char cfg[4300];
    snprintf(cfg, sizeof cfg, "%s/tokenizer_config.json", out);
    assert_int_equal(unlink(jinja), 0);
    assert_int_equal(cli_write_file(cfg, "{}", 2), 0);
    kiln(&r, "generate", SRC "/recipes/w8a8-int8-dynamic.lua", "--model", out, "--prompt", "Hi",
         "-n", "4", "--quiet", NULL);
    expect_exit(&r, 2, "has no chat template");
    assert_non_null(strstr(r.err, "pass --no-chat"));
    cli_result_free(&r);
    cli_rm_rf(dir);
    free(dir);
}

static void test_bad_inputs(void **st)
{
    (void)st;
    const char *w8 = SRC "/recipes/w8a8-int8-dynamic.lua";
    /* each: up to 4 options after the recipe, and what stderr must say */
    static const struct { const char *args[4], *want; } bad[] = {
        {{"--prompt", ""}, "--prompt is empty"},
        {{NULL}, "--prompt is missing"},
        {{"--prompt", "Hi", "-n", "0"}, "bad -n '0': expected an integer from 1 to 1048576"},
        {{"--prompt", "Hi", "--temp", "-1"}, "bad --temp '-1': expected a number from 0 to 100"},
        {{"--prompt", "Hi", "--top-p", "1.5"}, "bad --top-p '1.5': expected a number from 0 to 1"},
        {{"--model", "minilm", "--prompt", "Hi"},
         "bert encoder: it has no next-token head, so it cannot generate"},
    };
    CliResult r;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        const char *const *v = bad[i].args;
        kiln(&r, "generate", w8, v[0], v[1], v[2], v[3], NULL);
        expect_exit(&r, 2, bad[i].want);
        cli_result_free(&r);
    }
    /* the chat-formatted "Hi" is 31 tokens of SmolLM2's 8192 */
    kiln(&r, "generate", w8, "--prompt", "Hi", "-n", "9000", "--quiet", NULL);
    expect_exit(&r, 2, "-n 9000: the prompt's 31 tokens leave 8161 of the model's 8192-token "
                       "context; -n must be from 1 to 8161");
    cli_result_free(&r);
    size_t n = 9000 * 6;
    char *longp = malloc(n + 1);
    for (size_t i = 0; i < n; i += 6)
        memcpy(longp + i, " river", 6); /* one token each */
    longp[n] = 0;
    kiln(&r, "generate", w8, "--prompt", longp, "--no-chat", "-n", "1", "--quiet", NULL);
    expect_exit(&r, 2, "the prompt is 9000 tokens; the model's context is 8192 tokens");
    cli_result_free(&r);
    free(longp);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_chat_templates),
        cmocka_unit_test(test_sampler_greedy),
        cmocka_unit_test(test_nucleus_set),
        cmocka_unit_test(test_sampler_distribution),
        cmocka_unit_test(test_utf8_hold),
        cmocka_unit_test(test_kv_decode_matches_full_rerun),
        cmocka_unit_test(test_generate_w4a8),
        cmocka_unit_test(test_generate_hf_dir),
        cmocka_unit_test(test_bad_inputs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
