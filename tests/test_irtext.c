/* tests/test_irtext.c — the text IR: printer/parser round trips over the tests/ir files,
 * parser and verifier error messages, and a seeded mutation fuzz of the parser. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "ir/ir.h"
#include "test_util.h"

#define IRDIR KILN_SOURCE_DIR "/tests/ir"

/* Parse text (no NUL terminator in the buffer, so overreads show under ASan). */
static int parse(const char *text, size_t len, KilnModule **m, KilnDiag *d)
{
    char *copy = malloc(len ? len : 1);
    memcpy(copy, text, len);
    *m = kiln_module_new();
    memset(d, 0, sizeof *d);
    int rc = kiln_parse_module(copy, len, "t.kir", *m, d);
    free(copy);
    return rc;
}

/* ---------------------------------------------------------------- round trips */

static void test_roundtrip_files(void **state)
{
    (void)state;
    char **names;
    int n = tu_list_dir(IRDIR, ".kir", &names);
    assert_true(n >= 10);
    for (int i = 0; i < n; i++) {
        char path[512], exp_path[512];
        size_t len, elen;
        snprintf(path, sizeof path, "%s/%s", IRDIR, names[i]);
        snprintf(exp_path, sizeof exp_path, "%s/%.*s.expected", IRDIR,
                 (int)strlen(names[i]) - 4, names[i]);
        char *text = tu_read_file(path, &len);
        assert_non_null(text);
        char *expect = tu_read_file(exp_path, &elen);
        KilnModule *m;
        KilnDiag d;
        char msg[1200];
        int rc = parse(text, len, &m, &d);
        if (rc)
            fail_msg("%s: %s", names[i], kiln_diag_format(&d, msg, sizeof msg));
        rc = kiln_verify_module(m, &d);
        if (rc)
            fail_msg("%s: %s", names[i], kiln_diag_format(&d, msg, sizeof msg));
        char *printed = kiln_print_module_str(m);
        if (strcmp(printed, expect ? expect : text) != 0)
            fail_msg("%s does not print back canonically:\n%s", names[i], printed);
        KilnModule *m2;
        assert_int_equal(parse(printed, strlen(printed), &m2, &d), 0);
        char *again = kiln_print_module_str(m2);
        assert_string_equal(printed, again);
        free(again);
        free(printed);
        kiln_module_free(m2);
        kiln_module_free(m);
        free(expect);
        free(text);
    }
    tu_free_list(names, n);
}

static void test_lines_and_next_id(void **state)
{
    (void)state;
    const char *src = "; c\n"
                      "func @\"f\"(%x: f32[2,3]) {\n"
                      "\n"
                      "  %7 = silu %x : f32[2,3]\n"
                      "  return %7\n"
                      "}\n";
    KilnModule *m;
    KilnDiag d;
    assert_int_equal(parse(src, strlen(src), &m, &d), 0);
    KilnFunc *f = m->funcs[0];
    assert_int_equal(f->ninsts, 2);
    assert_int_equal(f->insts[0].line, 4);
    assert_int_equal(f->insts[1].line, 5);
    /* a builder-named value must not collide with the parsed %7 */
    int v = kiln_insert(f, 1, KILN_OP_GELU, &f->insts[0].result, 1, kiln_type2(KILN_F32, 2, 3),
                        NULL);
    assert_string_equal(f->values[v].name, "8");
    kiln_module_free(m);
}

/* Names from the builder may collide or hold odd characters: the printer makes
 * them parseable and unique, and skips dead instructions. */
static void test_print_builder_names(void **state)
{
    (void)state;
    KilnModule *m = kiln_module_new();
    KilnFunc *f = kiln_func_new(m, "b\"q\"");
    int x = kiln_func_param(f, "x", kiln_type2(KILN_F32, 2, 4));
    int a = kiln_emit(f, KILN_OP_SILU, &x, 1, kiln_type2(KILN_F32, 2, 4), "x");
    int b = kiln_emit(f, KILN_OP_GELU, &a, 1, kiln_type2(KILN_F32, 2, 4), "bad name!");
    int c = kiln_emit(f, KILN_OP_SILU, &b, 1, kiln_type2(KILN_F32, 2, 4), "x.1");
    kiln_emit(f, KILN_OP_SILU, &c, 1, kiln_type2(KILN_F32, 2, 4), "dead");
    f->insts[f->ninsts - 1].dead = true;
    kiln_emit(f, KILN_OP_RETURN, &c, 1, (KilnType){0}, NULL);
    char *s = kiln_print_module_str(m);
    assert_string_equal(s, "func @\"b\\\"q\\\"\"(%x: f32[2,4]) -> f32[2,4] {\n"
                           "  %x.1 = silu %x : f32[2,4]\n"
                           "  %bad_name_ = gelu %x.1 : f32[2,4]\n"
                           "  %x.1.1 = silu %bad_name_ : f32[2,4]\n"
                           "  return %x.1.1\n"
                           "}\n");
    KilnModule *m2;
    KilnDiag d;
    assert_int_equal(parse(s, strlen(s), &m2, &d), 0);
    assert_int_equal(kiln_verify_module(m2, &d), 0);
    free(s);
    kiln_module_free(m2);
    kiln_module_free(m);
}

/* ---------------------------------------------------------------- parse errors */

#define HDR "func @\"f\"(%x: f32[4,4]) {\n"

static const struct {
    const char *src;
    size_t len; /* 0: strlen */
    int line;
    const char *want;
} bad_ir[] = {
    {HDR "  %1 = quantize %x %3 : i8[4,4]{int8 sym tensor}\n", 0, 2,
     "expected ':' after operands of 'quantize', found '%3'"},
    {HDR "  %y = matmul %x, %7 : f32[4,4]\n", 0, 2, "use of undefined value %7 in 'matmul'"},
    {HDR "\n  %x = silu %x : f32[4,4]\n", 0, 3, "redefinition of value %x (first defined on line 1)"},
    {HDR "  %y = matmull %x, %x : f32[4,4]\n", 0, 2,
     "unknown op 'matmull' (valid: weight, const, quantize, dequantize, dynquant, pack, unpack, "
     "cast, matmul, bias_add, silu, gelu, add, gather_cols, zero_cols, prepack, qgemm, return)"},
    {HDR "  %y = silu %x : f64[4,4]\n", 0, 2,
     "unknown dtype 'f64' (valid: f32, f16, bf16, i32, i8, u8, i4, u4, e4m3, e5m2)"},
    {HDR "  %y = quantize %x : i8[4,4]{int9 sym tensor}\n", 0, 2,
     "unknown quantization format 'int9' (valid: none, int8, int4, fp8_e4m3, fp8_e5m2)"},
    {HDR "  %y = quantize %x : i8[4,4]{int8 sym row}\n", 0, 2,
     "unknown granularity 'row' (valid: tensor, channel, token, auto, group=G)"},
    {HDR "  %y = quantize %x : i8[4,4]{int8 sym tensor static}\n", 0, 2,
     "unknown spec option 'static' (valid: dynamic, pct=P, calib=mse, scale=S, zero=Z)"},
    {HDR "  %y = quantize %x : i8[4,4]{int8 sym tensor calib=p99}\n", 0, 2,
     "expected 'mse' after 'calib=' in spec (a percentile is written pct=P), found 'p99'"},
    {HDR "  %y = quantize %x : i8[4,4]{int8 sym tensor pct=99.0 calib=mse}\n", 0, 2,
     "spec has both pct= and calib=mse: choose one"},
    {HDR "  %y = quantize %x : i8[4,4]{int8 tensor}\n", 0, 2,
     "expected 'sym' or 'asym' in spec, found 'tensor'"},
    {HDR "  %y = quantize %x : i8[4,4]{int8 sym tensor dynamic dynamic}\n", 0, 2,
     "duplicate 'dynamic' in spec"},
    {HDR "  %y = quantize %x : i8[4,4]{int4 sym group=0}\n", 0, 2, "group size 0 out of range"},
    {"func @\"f\"(%x: f32[0,4]) {\n", 0, 1, "dimension 0 out of range (1..1099511627776)"},
    {"func @\"f\"(%x: f32[2199023255552]) {\n", 0, 1, "dimension 2199023255552 out of range"},
    {"func @\"f\"(%x: f32[1,2,3,4,5]) {\n", 0, 1, "rank > 4"},
    {"func @\"f\"(%x: f32[16777216,16777216,16777216]) {\n", 0, 1,
     "tensor has more than 2^48 elements"},
    {HDR "  %y = silu %x, %x : f32[4,4]\n", 0, 2, "too many operands for 'silu' (takes at most 1)"},
    {HDR "  %y = matmul %x : f32[4,4]\n", 0, 2, "'matmul' takes 2 operands, found 1"},
    {HDR "  %w = weight {a=1,b=1,c=1,d=1,e=1,f=1,g=1,h=1,i=1,j=1,k=1,l=1,m=1,n=1,o=1,p=1,q=1}"
         " : f32[4]\n",
     0, 2, "too many attributes on 'weight' (max 16)"},
    {HDR "  %w = weight {name = 1, name = 2} : f32[4]\n", 0, 2,
     "duplicate attribute 'name' on 'weight'"},
    {HDR "  %w = weight {name = \"abc} : f32[4]\n", 0, 2, "unterminated string"},
    {"func @\"a\0b\"() {}\n", 12, 1, "NUL byte in string"},
    {HDR "  %w = weight {name = \"a\\qb\"} : f32[4]\n", 0, 2, "unknown escape in string"},
    {HDR "  $\n", 0, 2, "unexpected character '$'"},
    {HDR "\n\n  \x01\n", 0, 4, "unexpected byte 0x01"},
    {HDR "  %w = weight {v = 99999999999999999999} : f32[4]\n", 0, 2,
     "integer 99999999999999999999 out of range"},
    {HDR "  %w = weight {v = 1e39} : f32[4]\n", 0, 2, "float 1e39 out of f32 range"},
    {HDR "  %w = weight {v = [1, 2} : f32[4]\n", 0, 2,
     "expected ',' between list items, found '}'"},
    {HDR "  %w = weight {v = [1, x]} : f32[4]\n", 0, 2,
     "expected integer list item, found 'x'"},
    {HDR "  %w = weight {v = [1, 99999999999999999999]} : f32[4]\n", 0, 2,
     "integer list item 99999999999999999999 out of range"},
    {HDR "  %w = weight {v = } : f32[4]\n", 0, 2,
     "expected a value (int, float, \"string\", ident, {spec} or [ints]) for attribute 'v', found '}'"},
    {HDR "  %p = prepack %x {layout = \"l\",} : f32[4,4]\n", 0, 2,
     "expected an attribute name in attributes of 'prepack', found '}'"},
    {"func @\"f\"(%x: f32[4,4]) -> f32[4,8] {\n  return %x\n}\n", 0, 2,
     "declares result f32[4,8] but returns %x of type f32[4,4]"},
    {"func @\"f\"(%x: f32[4,4]) -> f32[4,4] {\n}\n", 0, 1, "declares a result type but has no return"},
    {HDR, 0, 2, "expected an instruction ('%name = op ...' or 'return %v') or '}', found end of input"},
    {"func @\"f\"() {\n  return %x\n}\n", 0, 2, "use of undefined value %x in 'return'"},
    {HDR "  %y = return %x\n", 0, 2, "'return' produces no value"},
    {HDR "  %y = silu %x : f32[4,4]{none sym tensor}\n", 0, 2, "cannot have format 'none'"},
    {"func @\"f\"() {\n  return\n}\n", 0, 2, "'return' takes 1 operand, found 0"},
    {"func @\"f\"(%x: f32[1]) {\n return %x\n}\nfunc @\"f\"() {}\n", 0, 4,
     "redefinition of function @\"f\" (first defined on line 1)"},
    {"fn @\"f\"() {}\n", 0, 1, "expected 'func', found 'fn'"},
    {HDR "  % = silu %x : f32[4,4]\n", 0, 2, "expected a value name after '%'"},
    {HDR "  %y = silu %x f32[4,4]\n", 0, 2, "expected ':' after operands of 'silu', found 'f32'"},
    {HDR "  %w = weight {name = \"w\"} f32[4]\n", 0, 2,
     "expected ':' after attributes of 'weight', found 'f32'"},
    {HDR "  %y = silu %x : f32[4;4]\n", 0, 3, "expected ',' between dimensions, found end of input"},
};

static void test_parse_errors(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof bad_ir / sizeof bad_ir[0]; i++) {
        size_t len = bad_ir[i].len ? bad_ir[i].len : strlen(bad_ir[i].src);
        KilnModule *m;
        KilnDiag d;
        int rc = parse(bad_ir[i].src, len, &m, &d);
        if (rc != KILN_EINPUT || d.code != KILN_EINPUT || !strstr(d.msg, bad_ir[i].want) ||
            d.line != bad_ir[i].line || !d.file || strcmp(d.file, "t.kir") != 0)
            fail_msg("bad_ir[%zu]: rc %d line %d (want %d): '%s'\n  want substring '%s'", i, rc,
                     d.line, bad_ir[i].line, d.msg, bad_ir[i].want);
        kiln_module_free(m);
    }
}

/* ---------------------------------------------------------------- verifier errors */

#define VHDR "func @\"v\"(%x: f32[4,16], %x15: f32[4,15], %b: f32[8], %h: f16[4], %i: f32[4]) {\n"
#define W "  %w = weight {name = \"w\"} : f32[8,16]\n"

static const struct {
    const char *body;
    int line; /* of the failing instruction, 0 for the function */
    const char *want;
} bad_verify[] = {
    {W "  %wh = cast %w : f16[8,16]\n  %y = qgemm %x, %wh {act_dtype = f32} : f32[4,8]\n  return %y\n", 4,
     "verify: func @\"v\": %y = qgemm: operand 2 (%wh): expected a quantized or f32 [8,16] "
     "weight, got f16[8,16]"},
    {W "  %y = qgemm %x, %w {act_dtype = f32} : f32[4,9]\n  return %y\n", 3,
     "%y = qgemm: operand 2 (%w): expected a quantized or f32 [9,16] weight, got f32[8,16]"},
    {W "  %y = qgemm %x, %w {act = {int8 sym token dynamic}} : f32[4,8]\n  return %y\n", 3,
     "act int8 with f32 weight %w: an unquantized weight takes act_dtype = f32|f16|bf16"},
    {W "  %y = qgemm %x, %w : f32[4,8]\n  return %y\n", 3,
     "missing required attribute 'act_dtype'"},
    {W "  %wh = cast %w : f16[8,16]\n  %p = prepack %wh {layout = \"l\"} : f16[8,16]\n"
       "  return %p\n", 4,
     "%p = prepack: operand 1 (%wh): expected a quantized or f32 weight, got f16[8,16]"},
    {W "  %y = matmul %x15, %w : f32[4,8]\n  return %y\n", 3,
     "verify: func @\"v\": %y = matmul: operand 2 (%w) has K=16, expected K=15 to match operand 1 "
     "(%x15)"},
    {W "  %y = matmul %x, %w : f32[4,9]\n  return %y\n", 3, "result: expected f32[4,8], got f32[4,9]"},
    {"  %w = weight {nam = \"w\"} : f32[8,16]\n  return %w\n", 2,
     "%w = weight: missing required attribute 'name' (string)"},
    {"  %w = weight {name = w} : f32[8,16]\n  return %w\n", 2, "attribute 'name' must be string"},
    {"  %w = weight {name = \"w\"} : f16[4]\n  return %w\n", 2, "result: expected f32, got f16[4]"},
    {"  %c = const {v = 1} : f32[4]\n  return %c\n", 2, "missing required attribute 'value'"},
    {W "  %q = quantize %w : i8[8,16]{int8 asym tensor}\n  return %q\n", 3,
     "result: type i8[8,16]{int8 asym tensor} stores int8 codes, expected dtype u8"},
    {W "  %q = quantize %w : e4m3[8,16]{fp8_e4m3 asym tensor}\n  return %q\n", 3,
     "fp8_e4m3 must be symmetric"},
    {W "  %q = quantize %w : i8[8,16]{int8 sym token}\n  return %q\n", 3,
     "granularity token is for rank-2 activations"},
    {"  %q = quantize %x : i8[4,16]{int8 sym channel}\n  return %q\n", 2,
     "granularity channel is for weights, not activations"},
    {"  %q = quantize %x : i8[4,16]{int8 sym token dynamic}\n  return %q\n", 2,
     "dynamic specs belong to dynquant"},
    {"  %q = quantize %h : i8[4]{int8 sym tensor}\n  return %q\n", 2,
     "operand 1 (%h): expected f32, got f16[4]"},
    {"  %q = quantize %i : i8[4]{int8 sym tensor pct=150.0}\n  return %q\n", 2,
     "pct=150, expected in (0,100]"},
    {"  %q = dynquant %x : i8[4,16]{int8 sym token dynamic calib=mse}\n  return %q\n", 2,
     "calib=mse chooses a static scale, but the spec is dynamic"},
    {"  %q = quantize %i : i8[4]{int8 sym tensor zero=3}\n  return %q\n", 2,
     "symmetric spec with zero=3"},
    {W "  %q = quantize %w : u4[8,16]{int4 asym channel zero=16}\n  return %q\n", 3,
     "zero=16 out of range 0..15"},
    {"  %q = quantize %x : i8[4,15]{int8 sym tensor}\n  return %q\n", 2,
     "shape differs from operand 1 (%x)"},
    {"  %d = dequantize %x : f32[4,16]\n  return %d\n", 2,
     "operand 1 (%x): expected a quantized tensor, got f32[4,16]"},
    {"  %q = dynquant %x : i8[4,16]{int8 sym token}\n  return %q\n", 2, "expected a dynamic spec"},
    {"  %q = dynquant %x : i8[4,16]{int8 sym channel dynamic}\n  return %q\n", 2,
     "granularity channel is for weights, not activations"},
    {W "  %q = quantize %w : i4[8,16]{int4 sym channel}\n  %p = pack %q : i4[8,16]{int4 sym channel}\n"
       "  return %p\n",
     4, "expected unpacked i8/u8 codes with an int4 spec, got i4[8,16]{int4 sym channel}"},
    {W "  %q = quantize %w : i8[8,16]{int4 sym channel}\n  %p = pack %q : u4[8,16]{int4 asym channel}\n"
       "  return %p\n",
     4, "result: expected i4[8,16]{int4 sym channel}, got u4[8,16]{int4 asym channel}"},
    {"  %c = cast %i : i32[4]\n  return %c\n", 2,
     "result: expected f32, f16 or bf16 of operand 1's shape, got i32[4]"},
    {"  %y = bias_add %x, %i : f32[4,16]\n  return %y\n", 2,
     "operand 2 (%i): expected bias f32[16], got f32[4]"},
    {"  %y = silu %i : f16[4]\n  return %y\n", 2, "result: expected f32[4], got f16[4]"},
    {W "  %q = quantize %w : i8[8,16]{int8 sym channel}\n  %p = prepack %q : i8[8,16]{int8 sym channel}\n"
       "  return %p\n",
     4, "missing required attribute 'layout' (string)"},
    {W "  %q = quantize %w : i8[8,16]{int8 sym channel}\n  %y = qgemm %x, %q : f32[4,8]\n  return %y\n",
     4, "missing required attribute 'act_dtype'"},
    {W "  %q = quantize %w : i8[8,16]{int8 sym channel}\n  %y = qgemm %x, %q {act_dtype = i8} : f32[4,8]\n"
       "  return %y\n",
     4, "act_dtype = i8, expected f32, f16 or bf16"},
    {W "  %q = quantize %w : e4m3[8,16]{fp8_e4m3 sym channel}\n"
       "  %y = qgemm %x, %q {act = {int8 sym token dynamic}} : f32[4,8]\n  return %y\n",
     4, "act int8 with fp8_e4m3 weight %q: int activations need an int weight"},
    {W "  %q = quantize %w : i4[8,16]{int4 sym group=8}\n"
       "  %y = qgemm %x, %q {act = {fp8_e4m3 sym token dynamic}} : f32[4,8]\n  return %y\n",
     4, "act fp8_e4m3 with int4 weight %q: fp8 activations need an fp8 weight"},
    {W "  %q = quantize %w : i8[8,16]{int8 sym channel}\n  %y = qgemm %x, %q {act_dtype = f32} : i8[4,8]\n"
       "  return %y\n",
     4, "result: expected f32, f16 or bf16 [M,N], got i8[4,8]"},
    {W "  %q = quantize %w : i8[8,16]{int8 sym channel}\n"
       "  %y = qgemm %x, %q, %i {act_dtype = f32} : f32[4,8]\n  return %y\n",
     4, "operand 3 (%i): expected bias f32[8], got f32[4]"},
    {W "  %q = quantize %w : i8[8,16]{int8 sym channel}\n"
       "  %y = qgemm %x, %q {act_dtype = f32, epilogue = relu} : f32[4,8]\n  return %y\n",
     4, "attribute 'epilogue' must be none, silu or gelu"},
    {W "  %q = quantize %w : i8[8,16]{int8 sym channel}\n"
       "  %y = qgemm %x, %q {act = {int8 sym channel dynamic}} : f32[4,8]\n  return %y\n",
     4, "act: granularity channel is for weights, not activations"},
    /* column ops and the qgemm's outlier columns (LLM.int8()) */
    {"  %g = gather_cols %x {idx = [3, 1]} : f32[4,2]\n  return %g\n", 2,
     "attribute 'idx': columns must be strictly ascending (1 after 3)"},
    {"  %g = zero_cols %x {idx = [16]} : f32[4,16]\n  return %g\n", 2,
     "attribute 'idx': column 16 out of range 0..15"},
    {"  %g = zero_cols %x {idx = []} : f32[4,16]\n  return %g\n", 2,
     "attribute 'idx' is an empty list"},
    {"  %g = gather_cols %x {idx = 3} : f32[4,1]\n  return %g\n", 2,
     "attribute 'idx' must be a list of column indices"},
    {"  %g = gather_cols %x {idx = [3]} : f32[4,2]\n  return %g\n", 2,
     "result: expected f32[4,1], got f32[4,2]"},
    {"  %g = zero_cols %h {idx = [1]} : f16[4]\n  return %g\n", 2, "operand 1 (%h): expected f32[R,C]"},
    {"  %s = add %x, %x15 : f32[4,16]\n  return %s\n", 2,
     "operand 2 (%x15): expected f32[4,16] (operand 1's type), got f32[4,15]"},
    {W "  %q = quantize %w : i8[8,16]{int8 sym channel}\n  %o = gather_cols %w {idx = [2]} : f32[8,1]\n"
       "  %y = qgemm %x, %q, %o {act_dtype = f16, outliers = [2]} : f32[4,8]\n  return %y\n",
     5, "attribute 'outliers' needs int8 activations"},
    {W "  %q = quantize %w : i8[8,16]{int8 sym channel}\n  %o = gather_cols %w {idx = [2]} : f32[8,1]\n"
       "  %y = qgemm %x, %q, %o {act = {int8 sym token dynamic}, outliers = [2, 5]} : f32[4,8]\n  return %y\n",
     5, "operand 3 (%o): expected the outlier weight f32[8,2], got f32[8,1]"},
    {W "  %q = quantize %w : i8[8,16]{int8 sym channel}\n"
       "  %y = qgemm %x, %q {act = {int8 sym token dynamic}, outliers = [2]} : f32[4,8]\n  return %y\n",
     4, "attribute 'outliers' needs the outlier weight f32[8,1] as the last operand"},
    {W "  %q = quantize %w : i8[8,16]{int8 sym channel}\n  %o = gather_cols %w {idx = [2]} : f32[8,1]\n"
       "  %y = qgemm %x, %q, %b, %o {act = {int8 sym token dynamic}} : f32[4,8]\n  return %y\n",
     5, "4 operands, but no 'outliers' attribute says what operand 4 is"},
    {W "  %q = quantize %w : i8[8,16]{int8 sym channel}\n  %o = gather_cols %w {idx = [2]} : f32[8,1]\n"
       "  %y = qgemm %x, %q, %o {act = {int8 sym token dynamic}, outliers = [16]} : f32[4,8]\n  return %y\n",
     5, "attribute 'outliers': column 16 out of range 0..15"},
    {"  return %x\n  %y = silu %x : f32[4,16]\n", 2, "return must be the last instruction"},
    {"  %y = silu %x : f32[4,16]\n", 0, "verify: func @\"v\": function has no return"},
};

static void test_verify_errors(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof bad_verify / sizeof bad_verify[0]; i++) {
        char src[2048];
        snprintf(src, sizeof src, "%s%s}\n", VHDR, bad_verify[i].body);
        KilnModule *m;
        KilnDiag d;
        char msg[1200];
        if (parse(src, strlen(src), &m, &d))
            fail_msg("bad_verify[%zu] does not parse: %s", i, kiln_diag_format(&d, msg, sizeof msg));
        int rc = kiln_verify_module(m, &d);
        if (rc != KILN_EINPUT || !strstr(d.msg, bad_verify[i].want) || d.line != bad_verify[i].line)
            fail_msg("bad_verify[%zu]: rc %d line %d (want %d): '%s'\n  want substring '%s'", i,
                     rc, d.line, bad_verify[i].line, d.msg, bad_verify[i].want);
        kiln_module_free(m);
    }
}

/* Errors the text form cannot express: built directly. */
static void test_verify_builder(void **state)
{
    (void)state;
    KilnModule *m = kiln_module_new();
    KilnFunc *f = kiln_func_new(m, "b");
    int x = kiln_func_param(f, "x", kiln_type2(KILN_F32, 2, 4));
    int y = kiln_emit(f, KILN_OP_MATMUL, &x, 1, kiln_type2(KILN_F32, 2, 2), "y");
    kiln_emit(f, KILN_OP_RETURN, &y, 1, (KilnType){0}, NULL);
    KilnDiag d = {0};
    assert_int_equal(kiln_verify_func(f, &d), KILN_EINPUT);
    assert_string_equal(d.msg, "verify: func @\"b\": %y = matmul: expected 2 operands, got 1");

    /* a use before the definition, after a pass inserted in the wrong place */
    KilnFunc *g = kiln_func_new(m, "g");
    int gx = kiln_func_param(g, "x", kiln_type2(KILN_F32, 2, 4));
    int s = kiln_emit(g, KILN_OP_SILU, &gx, 1, kiln_type2(KILN_F32, 2, 4), "s");
    kiln_insert(g, 0, KILN_OP_GELU, &s, 1, kiln_type2(KILN_F32, 2, 4), "early");
    kiln_emit(g, KILN_OP_RETURN, &s, 1, (KilnType){0}, NULL);
    assert_int_equal(kiln_verify_func(g, &d), KILN_EINPUT);
    assert_string_equal(d.msg,
                        "verify: func @\"g\": %early = gelu: operand 1 (%s) is used before it is defined");

    /* uses of a dead instruction's result */
    g->insts[0].dead = true;
    g->insts[1].dead = true;
    assert_int_equal(kiln_verify_func(g, &d), KILN_EINPUT);
    assert_non_null(strstr(d.msg, "return: operand 1 (%s) is used before it is defined"));
    kiln_module_free(m);
}

/* ---------------------------------------------------------------- robustness */

static uint64_t rng_state;
static uint64_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static const char *const specials[] = {
    "{", "}", "[", "]", "(", ")", ",", ":", "=", "%", "@", "\"", "\\", ";", "\n", "-", ".",
    "e", "->", "inf", "nan", "-nan", "99999999999999999999999", "1e400", "0", "-1",
    "2199023255552", "\\x", "\\x00", "group=", "dynamic", "return", "func @\"g\"() {", "%0",
    "qgemm", "{int8 sym token dynamic}", "\xff", "\x80",
};

static size_t mutate(char *buf, size_t len, size_t cap)
{
    int nmut = 1 + (int)(rnd() % 4);
    for (int k = 0; k < nmut; k++) {
        size_t pos = len ? rnd() % (len + 1) : 0;
        switch (rnd() % 7) {
        case 0: /* random byte, including NUL */
            if (pos < len)
                buf[pos] = (char)(rnd() & 0xff);
            break;
        case 1: /* bit flip */
            if (pos < len)
                buf[pos] ^= (char)(1u << (rnd() % 8));
            break;
        case 2: /* truncate */
            len = pos;
            break;
        case 3: { /* delete a span */
            size_t n = rnd() % 16;
            if (pos + n > len)
                n = len - pos;
            memmove(buf + pos, buf + pos + n, len - pos - n);
            len -= n;
            break;
        }
        case 4: { /* duplicate a span */
            size_t n = rnd() % 64;
            if (pos + n > len)
                n = len - pos;
            if (len + n > cap)
                break;
            memmove(buf + pos + n, buf + pos, len - pos);
            len += n;
            break;
        }
        default: { /* insert a special token */
            const char *s = specials[rnd() % (sizeof specials / sizeof specials[0])];
            size_t n = strlen(s);
            if (s[0] == '\\' && s[1] == 'x' && s[2] == '0')
                n = 4;
            if (len + n > cap)
                break;
            memmove(buf + pos + n, buf + pos, len - pos);
            memcpy(buf + pos, s, n);
            len += n;
        }
        }
    }
    return len;
}

/* Every mutation must give OK or a located KILN_EINPUT, never a crash; what
 * parses must print, re-parse and print identically, and verify must not crash. */
static void test_mutation_fuzz(void **state)
{
    (void)state;
    char **names;
    int n = tu_list_dir(IRDIR, ".kir", &names); /* sorted: the fuzz is deterministic */
    char *texts[64];
    size_t lens[64];
    assert_true(n >= 0);
    assert_true(n <= 64);
    for (int i = 0; i < n; i++) {
        char path[512];
        snprintf(path, sizeof path, "%s/%s", IRDIR, names[i]);
        texts[i] = tu_read_file(path, &lens[i]);
    }
    rng_state = 0x9e3779b97f4a7c15ull;
    int ok = 0, err = 0;
    size_t cap = 16384;
    char *buf = malloc(cap);
    for (int it = 0; it < 20000; it++) {
        int f = it % n;
        size_t len = lens[f] < cap ? lens[f] : cap;
        memcpy(buf, texts[f], len);
        len = mutate(buf, len, cap);
        KilnModule *m;
        KilnDiag d;
        int rc = parse(buf, len, &m, &d);
        if (rc == 0) {
            ok++;
            kiln_verify_module(m, &d);
            char *p1 = kiln_print_module_str(m);
            KilnModule *m2;
            if (parse(p1, strlen(p1), &m2, &d) != 0)
                fail_msg("iteration %d: printed text does not parse: %s\n%s", it, d.msg, p1);
            char *p2 = kiln_print_module_str(m2);
            if (strcmp(p1, p2) != 0)
                fail_msg("iteration %d: print is not stable:\n%s\n---\n%s", it, p1, p2);
            free(p1);
            free(p2);
            kiln_module_free(m2);
        } else {
            err++;
            if (rc != KILN_EINPUT || d.code != KILN_EINPUT || d.line < 1 || !d.msg[0])
                fail_msg("iteration %d: rc %d line %d msg '%s'", it, rc, d.line, d.msg);
        }
        kiln_module_free(m);
    }
    print_message("mutation fuzz: %d parsed, %d rejected\n", ok, err);
    assert_true(ok > 500 && err > 5000);
    free(buf);
    for (int i = 0; i < n; i++)
        free(texts[i]);
    tu_free_list(names, n);
}

/* Pathological inputs: long runs, huge tokens, no terminator, empty. */
static void test_pathological(void **state)
{
    (void)state;
    size_t big = 1 << 20;
    char *buf = malloc(big);
    const char fill[] = {'{', '%', '"', '9', 'a', ';', '\n', '-', '\0', '['};
    for (size_t k = 0; k < sizeof fill; k++) {
        memset(buf, fill[k], big);
        KilnModule *m;
        KilnDiag d;
        int rc = parse(buf, big, &m, &d);
        /* only a file of comments or blank lines is valid */
        if (fill[k] == ';' || fill[k] == '\n')
            assert_int_equal(rc, 0);
        else
            assert_int_equal(rc, KILN_EINPUT);
        kiln_module_free(m);
    }
    KilnModule *m;
    KilnDiag d;
    assert_int_equal(parse("", 0, &m, &d), 0);
    assert_int_equal(m->nfuncs, 0);
    kiln_module_free(m);
    assert_int_equal(kiln_parse_module(NULL, 0, NULL, m = kiln_module_new(), &d), 0);
    kiln_module_free(m);
    /* a valid function with 20000 instructions */
    size_t cap = 2u << 20, w = 0;
    char *src = malloc(cap);
    w += (size_t)snprintf(src + w, cap - w, "func @\"long\"(%%v0: f32[2,2]) {\n");
    for (int i = 1; i <= 20000; i++)
        w += (size_t)snprintf(src + w, cap - w, "  %%v%d = silu %%v%d : f32[2,2]\n", i, i - 1);
    w += (size_t)snprintf(src + w, cap - w, "  return %%v20000\n}\n");
    assert_int_equal(parse(src, w, &m, &d), 0);
    assert_int_equal(kiln_verify_module(m, &d), 0);
    char *p = kiln_print_module_str(m);
    assert_true(strncmp(p, "func @\"long\"(%v0: f32[2,2]) -> f32[2,2] {\n", 40) == 0);
    free(p);
    kiln_module_free(m);
    free(src);
    free(buf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip_files),   cmocka_unit_test(test_lines_and_next_id),
        cmocka_unit_test(test_print_builder_names), cmocka_unit_test(test_parse_errors),
        cmocka_unit_test(test_verify_errors),     cmocka_unit_test(test_verify_builder),
        cmocka_unit_test(test_mutation_fuzz),     cmocka_unit_test(test_pathological),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
