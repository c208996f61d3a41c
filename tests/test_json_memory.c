/* tests/test_json_memory.c — what a parsed JSON document may cost (issue 17: "no input
 * drives kiln's memory above twice the size of the model it names"; docs/hardening.md,
 * "Limits on inputs"). Documents of tiny values at the 64 MiB text limit are parsed in a
 * child whose growth of peak resident set must stay within the budget
 * (KILN_JSON_BUDGET_BASE + KILN_JSON_BUDGET_PER_BYTE x the text) or be refused with a
 * located message; the bytes per value are counted; real files and a tokenizer.json of a
 * Llama-3's size parse well inside the budget; kiln refuses a model directory whose
 * config.json is such a document with exit 2. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "model/files/modelfile.h"
#include "runtime/runtime.h"
#include "tests/test_rss.h"

#define MIB ((size_t)1 << 20)

static int setup(void **st)
{
    (void)st;
    return tr_tmpdir_make("json-memory");
}

static int teardown(void **st)
{
    (void)st;
    return tr_tmpdir_remove();
}

static size_t budget(size_t len)
{
    return KILN_JSON_BUDGET_BASE + KILN_JSON_BUDGET_PER_BYTE * len;
}

/* A kB field of /proc/self/status ("VmRSS:", "VmHWM:"). */
static long long status_kb(const char *key)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long long v = -1;
    size_t n = strlen(key);
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, key, n)) {
            v = atoll(line + n);
            break;
        }
    if (f)
        fclose(f);
    return v;
}

typedef struct {
    int rc;
    long long growth; /* bytes the peak resident set grew by while parsing */
    size_t bytes;     /* kiln_json_bytes of the document */
    uint32_t len;     /* the root's members */
    char msg[1024];
} Parsed;

/* Parses text in a forked child (a fresh high-water mark, the text shared with it): its
 * result, message and peak growth come back through a pipe. */
static Parsed parse_in_child(const char *text, size_t len)
{
    Parsed r = {.rc = -1};
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(fds[0]);
        long long base = status_kb("VmRSS:");
        KilnJson *j = NULL;
        KilnDiag d = {0};
        Parsed c = {.rc = kiln_json_parse(text, len, "doc.json", &j, &d)};
        c.growth = (status_kb("VmHWM:") - base) * 1024;
        c.bytes = kiln_json_bytes(j);
        c.len = j ? j->len : 0;
        snprintf(c.msg, sizeof c.msg, "%s", d.msg);
        kiln_json_free(j);
        _exit(write(fds[1], &c, sizeof c) == (ssize_t)sizeof c ? 0 : 1);
    }
    close(fds[1]);
    ssize_t got = read(fds[0], &r, sizeof r);
    close(fds[0]);
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    assert_int_equal(got, (ssize_t)sizeof r);
    return r;
}

/* The document's peak within its budget, printed either way; the peak is checked in the
 * plain build only (a sanitizer's shadow memory and quarantine are not the parser's). */
static Parsed check_doc(const char *what, const char *text, size_t len)
{
    Parsed r = parse_in_child(text, len);
    printf("%-34s %5.1f MiB of text: %s, peak +%6.1f MiB (budget %5.1f MiB), document %6.1f MiB"
           "\n", what, (double)len / MIB, r.rc ? "refused" : "parsed", (double)r.growth / MIB,
           (double)budget(len) / MIB, (double)r.bytes / MIB);
    if (r.rc)
        printf("    %s\n", r.msg);
    assert_true(r.growth >= 0);
    /* 1 MiB over: the child's own pages besides the parser's (its stack, stdio) */
    if (!TR_SANITIZED && (size_t)r.growth > budget(len) + MIB)
        fail_msg("%s: peak grew by %.1f MiB, over the budget of %.1f MiB", what,
                 (double)r.growth / MIB, (double)budget(len) / MIB);
    assert_true(r.bytes <= budget(len));
    return r;
}

static size_t text_bytes(void) { return TR_SIZE(KILN_JSON_MAX_BYTES, (size_t)16 << 20); }

/* `open`, then `item` (printf with the item's index) with commas up to n bytes, `close`. */
static char *repeat(const char *open, const char *item, const char *close, size_t n,
                    size_t *len, size_t *count)
{
    char *s = malloc(n + 64);
    assert_non_null(s);
    size_t k = (size_t)sprintf(s, "%s", open), i = 0, cap = strlen(item) + 32;
    char *one = malloc(cap);
    assert_non_null(one);
    for (;;) {
        int m = snprintf(one, cap, item, i);
        if (k + (size_t)m + 1 + strlen(close) > n)
            break;
        memcpy(s + k, one, (size_t)m);
        k += (size_t)m;
        s[k++] = ',';
        i++;
    }
    free(one);
    k -= i > 0; /* the last comma */
    k += (size_t)sprintf(s + k, "%s", close);
    *len = k;
    *count = i;
    return s;
}

static void expect_refused(const Parsed *r)
{
    assert_int_equal(r->rc, KILN_EINPUT);
    assert_true(strncmp(r->msg, "doc.json:1:", 11) == 0);
    if (!strstr(r->msg, "JSON document needs more than"))
        fail_msg("unexpected message: %s", r->msg);
}

/* Tiny values at the text limit: each shape's peak within the budget, or refused. */
static void test_tiny_values(void **st)
{
    (void)st;
    size_t len, n;
    /* 8 bytes a value on 2 bytes of text: over the budget, refused before any value is
     * allocated */
    char *s = repeat("[", "0", "]", text_bytes(), &len, &n);
    Parsed r = check_doc("[0,0,...]", s, len);
    expect_refused(&r);
    assert_true(r.growth < (long long)(8 * MIB));
    free(s);

    s = repeat("[", "[]", "]", text_bytes(), &len, &n);
    r = check_doc("[[],[],...]", s, len);
    expect_refused(&r);
    free(s);

    /* objects of 256 members (an object may have 2^22) */
    size_t olen, on;
    char *obj = repeat("{", "\"%zx\":0", "}", 1780, &olen, &on);
    assert_int_equal(on, 256);
    s = repeat("[", obj, "]", text_bytes(), &len, &n);
    r = check_doc("[{\"0\":0,...,\"ff\":0},...]", s, len);
    assert_int_equal(r.rc, 0);
    assert_int_equal(r.len, n);
    free(s);
    free(obj);

    s = repeat("[", "\"a\"", "]", text_bytes(), &len, &n);
    r = check_doc("[\"a\",\"a\",...]", s, len);
    assert_int_equal(r.rc, 0);
    assert_int_equal(r.len, n);
    free(s);

    /* nested 63 deep, within the depth limit: 63 arrays and a number per 128 bytes */
    char item[160];
    memset(item, '[', 63);
    item[63] = '0';
    memset(item + 64, ']', 63);
    item[127] = 0;
    s = repeat("[", item, "]", text_bytes(), &len, &n);
    r = check_doc("[[[...[0]...]],...]", s, len);
    expect_refused(&r);
    free(s);
}

/* The bytes a value costs, counted by the document (it was about 64, a malloc per string,
 * array and object besides). */
static void test_bytes_per_value(void **st)
{
    (void)st;
    size_t len, n;
    char *s = repeat("[", "0", "]", 100000, &len, &n);
    KilnJson *j = NULL;
    KilnDiag d = {0};
    assert_int_equal(kiln_json_parse(s, len, "zeros", &j, &d), 0);
    assert_int_equal(j->len, n);
    assert_true(j->items[n - 1].is_int && j->items[n - 1].i == 0);
    printf("%zu zeros: %zu bytes, %.2f a value\n", n, kiln_json_bytes(j),
           (double)kiln_json_bytes(j) / (double)n);
    assert_true(kiln_json_bytes(j) <= 16 * n + 64);
    kiln_json_free(j);
    free(s);

    /* an object member: 16 bytes, 8 for its key, the key's bytes and a NUL */
    s = repeat("{", "\"k%05zu\":true", "}", 100000, &len, &n);
    assert_int_equal(kiln_json_parse(s, len, "members", &j, &d), 0);
    assert_int_equal(j->len, n);
    char last[16];
    snprintf(last, sizeof last, "k%05zu", n - 1);
    assert_string_equal(kiln_json_key(j, n - 1), last);
    assert_true(kiln_json_get(j, "k00007")->b);
    printf("%zu members: %zu bytes, %.2f a member\n", n, kiln_json_bytes(j),
           (double)kiln_json_bytes(j) / (double)n);
    assert_true(kiln_json_bytes(j) <= (16 + 8 + 7) * n + 64);
    kiln_json_free(j);
    free(s);
}

/* A tokenizer.json shaped like a Llama-3's, minified with its merges as pairs (the
 * costliest shape a real one has): 128,256 tokens, 280,147 merges. */
static char *llama3_like_tokenizer(size_t *len)
{
    size_t cap = 16 << 20, k = 0;
    char *s = malloc(cap);
    assert_non_null(s);
    k += (size_t)sprintf(s, "{\"version\":\"1.0\",\"added_tokens\":[");
    for (int i = 0; i < 256; i++)
        k += (size_t)sprintf(s + k, "%s{\"id\":%d,\"content\":\"<|reserved_special_token_%d|>\","
                             "\"single_word\":false,\"lstrip\":false,\"rstrip\":false,"
                             "\"normalized\":false,\"special\":true}", i ? "," : "", 128000 + i, i);
    k += (size_t)sprintf(s + k, "],\"model\":{\"type\":\"BPE\",\"vocab\":{");
    unsigned seed = 7;
    for (int i = 0; i < 128256; i++) /* "\u0120" spelled as its UTF-8, Ġ */
        k += (size_t)sprintf(s + k, "%s\"\xc4\xa0t%x%x\":%d", i ? "," : "", i,
                             (seed = seed * 1103515245u + 12345u) >> 28, i);
    k += (size_t)sprintf(s + k, "},\"merges\":[");
    for (int i = 0; i < 280147; i++)
        k += (size_t)sprintf(s + k, "%s[\"\xc4\xa0t%x\",\"%x\"]", i ? "," : "", i % 128256,
                             (i * 7) % 4096);
    k += (size_t)sprintf(s + k, "]}}");
    assert_true(k < cap);
    *len = k;
    return s;
}

/* Real files, and a Llama-3-sized tokenizer.json, at most half their budget. */
static void test_real_files(void **st)
{
    (void)st;
    size_t len;
    char *s = llama3_like_tokenizer(&len);
    Parsed r = check_doc("tokenizer.json (Llama-3-like)", s, len);
    assert_int_equal(r.rc, 0);
    assert_true(r.bytes <= budget(len) / 2);
    free(s);

    static const char *const files[] = {"minilm/tokenizer.json", "minilm/config.json",
                                        "minilm/data_config.json"};
    char path[1024];
    for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
        tr_model_path(files[i], path, sizeof path);
        KilnJson *j = NULL;
        KilnDiag d = {0};
        if (kiln_json_parse_file(path, &j, &d))
            fail_msg("%s: %s (run scripts/fetch-models.sh)", path, d.msg);
        printf("%s: document %zu bytes\n", files[i], kiln_json_bytes(j));
        assert_true(kiln_json_bytes(j) > 0);
        kiln_json_free(j);
    }
    tr_model_path("minilm/model.safetensors", path, sizeof path);
    KilnModelFile *mf = NULL;
    KilnDiag d = {0};
    if (kiln_mf_open(path, &mf, &d))
        fail_msg("%s: %s (run scripts/fetch-models.sh)", path, d.msg);
    assert_true(kiln_mf_ntensors(mf) > 100);
    kiln_mf_close(mf);
}

/* A model directory whose config.json is 64 MiB of zeros: exit 2 naming the file and
 * where the budget ran out, at kiln's baseline memory. */
static void test_cli_config_refused(void **st)
{
    (void)st;
    char dir[400], cfg[500], out[500], err[500];
    snprintf(dir, sizeof dir, "%s/model", tr_tmpdir);
    assert_int_equal(mkdir(dir, 0700), 0);
    snprintf(cfg, sizeof cfg, "%s/config.json", dir);
    size_t len, n;
    char *s = repeat("[", "0", "]", KILN_JSON_MAX_BYTES, &len, &n);
    FILE *f = fopen(cfg, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(s, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
    free(s);
    char tensors[500];
    snprintf(tensors, sizeof tensors, "%s/model.safetensors", dir);
    f = fopen(tensors, "wb");
    assert_non_null(f);
    static const char hdr[] = "{}      ";
    uint64_t hl = sizeof hdr - 1;
    assert_int_equal(fwrite(&hl, 8, 1, f), 1);
    assert_int_equal(fwrite(hdr, 1, hl, f), hl);
    assert_int_equal(fclose(f), 0);
    snprintf(out, sizeof out, "%s/out", tr_tmpdir);
    snprintf(err, sizeof err, "%s/err", tr_tmpdir);
    const char *args[] = {"eval", KILN_SOURCE_DIR "/recipes/f32.lua", "--model", dir, NULL};
    long long rss = 0;
    int code = tr_run_peak(KILN_BIN, args, out, err, 60, &rss);
    size_t elen = 0;
    char *e = NULL;
    KilnDiag d = {0};
    assert_int_equal(kiln_rt_read_file(err, "stderr", 0, &e, &elen, &d), 0);
    printf("kiln eval on it: exit %d, peak RSS %.1f MiB: %s", code, (double)rss / MIB, e);
    assert_int_equal(code, 2);
    assert_non_null(strstr(e, "config.json:1:"));
    assert_non_null(strstr(e, "JSON document needs more than"));
    free(e);
    /* kiln's baseline (LLVM, ~60 MB) and the 64 MiB text it read */
    if (!TR_SANITIZED)
        assert_true((size_t)rss < 64 * MIB + KILN_JSON_MAX_BYTES + 16 * MIB);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bytes_per_value),
        cmocka_unit_test(test_tiny_values),
        cmocka_unit_test(test_real_files),
        cmocka_unit_test(test_cli_config_refused),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
