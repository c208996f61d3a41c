/* tests/test_tokenizer.c — the WordPiece and byte-level BPE tokenizers: ids of the real
 * MiniLM and SmolLM2 tokenizers against tests/models/tokenizer_*.tsv (made by the models'
 * own HF tokenizers), and hand-made tiny vocabularies for the algorithms' corner cases. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "model/files/modelfile.h"
#include "model/tokenizers/tokenizer.h"
#include "tests/models/testlib.h"

static void unescape(char *s)
{
    char *o = s;
    for (; *s; s++) {
        if (*s == '\\' && s[1]) {
            s++;
            *o++ = *s == 'n' ? '\n' : *s == 't' ? '\t' : *s;
        } else
            *o++ = *s;
    }
    *o = 0;
}

/* Encodes every sentence of a tsv file and compares with its ids; BPE also round-trips. */
static void check_tsv(const KilnTokenizer *t, const char *tsv, int add_special, bool roundtrip)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/tests/models/%s", KILN_SOURCE_DIR, tsv);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    char *line = NULL;
    size_t cap = 0;
    int nsent = 0, bad = 0;
    while (getline(&line, &cap, f) > 0) {
        if (line[0] == '#')
            continue;
        line[strcspn(line, "\n")] = 0;
        char *tab = strrchr(line, '\t');
        assert_non_null(tab);
        *tab = 0;
        unescape(line);
        int32_t want[512], got[512];
        int nw = 0;
        for (char *p = tab + 1, *end; *p; p = end) {
            long v = strtol(p, &end, 10);
            if (end == p)
                break;
            assert_true(nw < 512);
            want[nw++] = (int32_t)v;
        }
        KilnDiag d = {0};
        int needed = -1;
        int ng = kiln_tok_encode(t, line, add_special, got, 512, &needed, &d);
        assert_int_equal(ng, needed);
        bool same = ng == nw && memcmp(got, want, sizeof(int32_t) * (size_t)nw) == 0;
        if (!same) {
            bad++;
            printf("MISMATCH %s: \"%s\"\n  want:", tsv, line);
            for (int i = 0; i < nw; i++)
                printf(" %d", want[i]);
            printf("\n  got: ");
            for (int i = 0; i < ng; i++)
                printf(" %d", got[i]);
            printf("\n");
        }
        if (roundtrip) {
            char *back = kiln_tok_decode(t, got, ng);
            assert_non_null(back);
            if (strcmp(back, line) != 0) {
                bad++;
                printf("ROUNDTRIP %s: \"%s\" -> \"%s\"\n", tsv, line, back);
            }
            free(back);
        }
        nsent++;
    }
    free(line);
    fclose(f);
    assert_true(nsent >= 12);
    assert_int_equal(bad, 0);
}

static void test_minilm_ids(void **state)
{
    (void)state;
    char vocab[1024];
    model_path("minilm/vocab.txt", vocab, sizeof vocab);
    KilnTokenizer *t = NULL;
    KilnDiag d = {0};
    assert_int_equal(kiln_tok_wordpiece_load(vocab, &t, &d), 0);
    assert_int_equal(kiln_tok_vocab_size(t), 30522);
    assert_int_equal(kiln_tok_special(t, "cls"), 101);
    assert_int_equal(kiln_tok_special(t, "sep"), 102);
    assert_int_equal(kiln_tok_special(t, "pad"), 0);
    assert_int_equal(kiln_tok_special(t, "unk"), 100);
    check_tsv(t, "tokenizer_minilm.tsv", 1, false);
    kiln_tok_free(t);
}

static void test_smollm2_ids(void **state)
{
    (void)state;
    char path[1024];
    model_path("smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", path, sizeof path);
    KilnModelFile *mf = NULL;
    KilnDiag d = {0};
    assert_int_equal(kiln_mf_open(path, &mf, &d), 0);
    KilnTokenizer *t = NULL;
    int rc = kiln_tok_bpe_from_gguf(mf, &t, &d);
    if (rc)
        fail_msg("%s", d.msg);
    kiln_mf_close(mf); /* the tokenizer keeps its own copies */
    assert_int_equal(kiln_tok_vocab_size(t), 49152);
    assert_int_equal(kiln_tok_special(t, "bos"), 1);
    assert_int_equal(kiln_tok_special(t, "eos"), 2);
    assert_string_equal(kiln_tok_token(t, 1), "<|im_start|>");
    check_tsv(t, "tokenizer_smollm2.tsv", 0, true);
    kiln_tok_free(t);
}

/* ------------------------------------------------------------------ tiny WordPiece */

static KilnTokenizer *tiny_wordpiece(void)
{
    static const char *vocab[] = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "un", "##aff",
                                  "##able", "hello", ",", "!", "cafe", "中", "文", "a",
                                  "##b", "##bc", "ab"};
    char path[512];
    snprintf(path, sizeof path, "%s/vocab.txt", tmpdir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    for (size_t i = 0; i < sizeof vocab / sizeof vocab[0]; i++)
        fprintf(f, "%s\n", vocab[i]);
    fclose(f);
    KilnTokenizer *t = NULL;
    KilnDiag d = {0};
    assert_int_equal(kiln_tok_wordpiece_load(path, &t, &d), 0);
    return t;
}

static void expect_ids(const KilnTokenizer *t, const char *text, int add_special,
                       const int32_t *want, int nw)
{
    int32_t got[256];
    int needed = 0;
    KilnDiag d = {0};
    int n = kiln_tok_encode(t, text, add_special, got, 256, &needed, &d);
    if (n != nw || memcmp(got, want, sizeof(int32_t) * (size_t)nw) != 0) {
        printf("\"%s\": got", text);
        for (int i = 0; i < n; i++)
            printf(" %d", got[i]);
        printf("\n");
        fail_msg("ids differ for \"%s\"", text);
    }
}

static void test_wordpiece_tiny(void **state)
{
    (void)state;
    KilnTokenizer *t = tiny_wordpiece();
    expect_ids(t, "unaffable", 1, (int32_t[]){2, 5, 6, 7, 3}, 5);
    expect_ids(t, "Hello, unaffable!", 0, (int32_t[]){8, 9, 5, 6, 7, 10}, 6);
    /* a word with an unmatchable piece is one [UNK], neighbours unaffected */
    expect_ids(t, "hello unaffablex hello", 0, (int32_t[]){8, 1, 8}, 3);
    /* accents stripped, case folded, CJK split per character */
    expect_ids(t, "CAFÉ Café\tcafé", 0, (int32_t[]){11, 11, 11}, 3);
    expect_ids(t, "a中文ab", 0, (int32_t[]){14, 12, 13, 17}, 4);
    /* longest match first, no backtracking: "abc" takes "ab", then "##c" is missing, so
     * the word is [UNK] although a + ##bc would have worked; "abbc" = ab + ##bc */
    expect_ids(t, "abc", 0, (int32_t[]){1}, 1);
    expect_ids(t, "abbc", 0, (int32_t[]){17, 16}, 2);
    /* special tokens in the raw text stay whole */
    expect_ids(t, "hello[SEP]hello", 0, (int32_t[]){8, 3, 8}, 3);
    /* more than 100 characters is [UNK] even if it would match */
    char lng[256];
    memset(lng, 0, sizeof lng);
    lng[0] = 'a';
    memset(lng + 1, 'b', 100);
    expect_ids(t, lng, 0, (int32_t[]){1}, 1);
    lng[100] = 0; /* exactly 100 characters: ab ##b x 98 */
    int32_t ids[128];
    KilnDiag d = {0};
    int needed = 0;
    assert_int_equal(kiln_tok_encode(t, lng, 0, ids, 128, &needed, &d), 99);
    assert_int_equal(ids[0], 17);
    assert_int_equal(ids[98], 15);
    /* cap smaller than the count: truncated, needed tells the full count */
    assert_int_equal(kiln_tok_encode(t, lng, 1, ids, 10, &needed, &d), 10);
    assert_int_equal(needed, 101);
    /* control characters are dropped, zero cap reports the count */
    assert_int_equal(kiln_tok_encode(t, "hel\x01lo !", 1, NULL, 0, &needed, &d), 0);
    assert_int_equal(needed, 4);
    char *s = kiln_tok_decode(t, (int32_t[]){8, 5, 6, 7, 10}, 5);
    assert_string_equal(s, "hello unaffable !");
    free(s);
    kiln_tok_free(t);
}

/* ------------------------------------------------------------------ tiny BPE */

/* GPT-2 byte characters (as UTF-8) of all 256 bytes, in byte order. */
static void byte_tokens(char tok[256][4])
{
    int next = 256;
    for (int b = 0; b < 256; b++) {
        int keep = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
        unsigned cp = keep ? (unsigned)b : (unsigned)next++;
        memset(tok[b], 0, 4);
        if (cp < 0x80)
            tok[b][0] = (char)cp;
        else {
            tok[b][0] = (char)(0xC0 | cp >> 6);
            tok[b][1] = (char)(0x80 | (cp & 0x3F));
        }
    }
}

static KilnTokenizer *tiny_bpe(const char *const *merges, int nmerges, KilnModelFile **mfp)
{
    static char bt[256][4];
    byte_tokens(bt);
    const char *toks[300];
    int32_t types[300];
    int n = 0;
    for (int b = 0; b < 256; b++, n++) {
        toks[n] = bt[b];
        types[n] = 6;
    }
    const char *extra[] = {"ab", "bc", "abc", "\xc4\xa0" "a", "<|x|>", "\xc4\xa0" "ab"};
    for (int i = 0; i < 6; i++, n++) {
        toks[n] = extra[i];
        types[n] = i == 4 ? 3 : 1;
    }
    GB g = {0};
    gb_header(&g, 3, 0, 5);
    gb_kv_str(&g, "tokenizer.ggml.model", "gpt2");
    gb_kv_str(&g, "tokenizer.ggml.pre", "smollm");
    gb_kv_arr_str(&g, "tokenizer.ggml.tokens", toks, (uint64_t)n);
    gb_kv_arr_i32(&g, "tokenizer.ggml.token_type", types, (uint64_t)n);
    gb_kv_arr_str(&g, "tokenizer.ggml.merges", merges, (uint64_t)nmerges);
    char path[512];
    snprintf(path, sizeof path, "%s/bpe.gguf", tmpdir);
    assert_int_equal(gb_write(&g, path), 0);
    free(g.b);
    KilnDiag d = {0};
    assert_int_equal(kiln_mf_open(path, mfp, &d), 0);
    KilnTokenizer *t = NULL;
    if (kiln_tok_bpe_from_gguf(*mfp, &t, &d))
        fail_msg("%s", d.msg);
    return t;
}

static void test_bpe_tiny(void **state)
{
    (void)state;
    KilnModelFile *mf = NULL;
    /* ids: bytes 0..255, ab=256, bc=257, abc=258, Ġa=259, <|x|>=260, Ġab=261 */
    const char *m1[] = {"a b", "ab c", "b c", "\xc4\xa0 a", "\xc4\xa0" "a b", "\xc4\xa0 ab"};
    KilnTokenizer *t = tiny_bpe(m1, 6, &mf);
    expect_ids(t, "abc", 0, (int32_t[]){258}, 1);
    expect_ids(t, "bc", 0, (int32_t[]){257}, 1);
    /* " ab" is one pre-token: a+b first (rank 0), then Ġ+ab (rank 5); Ġ+a never applies */
    expect_ids(t, "c ab", 0, (int32_t[]){'c', 261}, 2);
    /* digits are split one by one; specials are whole */
    expect_ids(t, "a12<|x|>b", 0, (int32_t[]){'a', '1', '2', 260, 'b'}, 5);
    char *s = kiln_tok_decode(t, (int32_t[]){'c', 261, 260, 32}, 4);
    assert_string_equal(s, "c ab<|x|> ");
    free(s);
    kiln_tok_free(t);
    kiln_mf_close(mf);
    /* ranks decide: with "b c" first, "abc" becomes a + bc and ab+c never applies */
    const char *m2[] = {"b c", "a b", "ab c"};
    t = tiny_bpe(m2, 3, &mf);
    expect_ids(t, "abc", 0, (int32_t[]){'a', 257}, 2);
    expect_ids(t, "ab", 0, (int32_t[]){256}, 1);
    const char *rt[] = {"a  b\n\nc", "\xe4\xb8\xad\xf0\x9f\x98\x80 x", "it's 3.14!", "  ", "\t"};
    for (size_t i = 0; i < sizeof rt / sizeof rt[0]; i++) {
        int32_t ids[64];
        KilnDiag d = {0};
        int n = kiln_tok_encode(t, rt[i], 0, ids, 64, NULL, &d);
        assert_true(n > 0);
        char *back = kiln_tok_decode(t, ids, n);
        assert_string_equal(back, rt[i]);
        free(back);
    }
    kiln_tok_free(t);
    kiln_mf_close(mf);
    /* a merge naming a missing token is an error */
    const char *m3[] = {"a zz"};
    KilnTokenizer *bad = NULL;
    KilnDiag d = {0};
    {
        static char bt[256][4];
        byte_tokens(bt);
        const char *toks[256];
        for (int b = 0; b < 256; b++)
            toks[b] = bt[b];
        GB g = {0};
        gb_header(&g, 3, 0, 3);
        gb_kv_str(&g, "tokenizer.ggml.model", "gpt2");
        gb_kv_arr_str(&g, "tokenizer.ggml.tokens", toks, 256);
        gb_kv_arr_str(&g, "tokenizer.ggml.merges", m3, 1);
        char path[512];
        snprintf(path, sizeof path, "%s/bad.gguf", tmpdir);
        assert_int_equal(gb_write(&g, path), 0);
        free(g.b);
        assert_int_equal(kiln_mf_open(path, &mf, &d), 0);
        assert_int_equal(kiln_tok_bpe_from_gguf(mf, &bad, &d), KILN_EINPUT);
        assert_non_null(strstr(d.msg, "tokenizer.ggml.merges[0]"));
        kiln_mf_close(mf);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_wordpiece_tiny),
        cmocka_unit_test(test_bpe_tiny),
        cmocka_unit_test(test_minilm_ids),
        cmocka_unit_test(test_smollm2_ids),
    };
    return cmocka_run_group_tests(tests, tmpdir_setup, tmpdir_teardown);
}
