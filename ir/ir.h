/* ir/ir.h — kiln's tensor IR: dtypes, quant specs, ops, functions and modules;
 * the builder, printer, parser, verifier and the reference interpreter.
 * ir/ uses libc only. docs/ir.md describes the text form and every op. */
#ifndef KILN_IR_H
#define KILN_IR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* ------------------------------------------------------------------ diag.c */

/* Every fallible function returns 0 on success or a KILN_E* code and fills a
 * KilnDiag. `file`/`line` name the place in user input (recipe, IR text) when
 * there is one. */
enum { KILN_OK = 0, KILN_EINPUT = 2, KILN_ENODEV = 3, KILN_EINTERNAL = 4 };

typedef struct KilnDiag {
    int code;            /* 0 when no error has been recorded */
    const char *file;    /* not owned; may be NULL */
    int line;            /* 0 when unknown */
    char msg[1024];
} KilnDiag;

int kiln_diag_set(KilnDiag *d, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
int kiln_diag_set_at(KilnDiag *d, int code, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
/* "FILE:LINE: msg" (or just msg) into buf. */
const char *kiln_diag_format(const KilnDiag *d, char *buf, size_t n);

/* ------------------------------------------------------------------ types.c */

#define KILN_DTYPES(X)      \
    X(F32, "f32", 32)       \
    X(F16, "f16", 16)       \
    X(BF16, "bf16", 16)     \
    X(I32, "i32", 32)       \
    X(I8, "i8", 8)          \
    X(U8, "u8", 8)          \
    X(I4, "i4", 4)          \
    X(U4, "u4", 4)          \
    X(E4M3, "e4m3", 8)      \
    X(E5M2, "e5m2", 8)

typedef enum {
#define X(e, s, b) KILN_##e,
    KILN_DTYPES(X)
#undef X
    KILN_NDTYPES
} KilnDType;

const char *kiln_dtype_name(KilnDType t);
int kiln_dtype_bits(KilnDType t);
int kiln_dtype_parse(const char *s, size_t n, KilnDType *out); /* 0 ok, -1 unknown */

/* Quantization formats a recipe can ask for. */
#define KILN_QFORMATS(X)            \
    X(NONE, "none")                 \
    X(INT8, "int8")                 \
    X(INT4, "int4")                 \
    X(FP8_E4M3, "fp8_e4m3")         \
    X(FP8_E5M2, "fp8_e5m2")

typedef enum {
#define X(e, s) KILN_QF_##e,
    KILN_QFORMATS(X)
#undef X
    KILN_NQFORMATS
} KilnQFormat;

static inline bool kiln_qformat_is_fp8(KilnQFormat f)
{
    return f == KILN_QF_FP8_E4M3 || f == KILN_QF_FP8_E5M2;
}
static inline bool kiln_qformat_is_int(KilnQFormat f)
{
    return f == KILN_QF_INT8 || f == KILN_QF_INT4;
}

/* Granularity of scales. For a weight W[N,K]: tensor = 1 scale, channel = one per
 * output row n (N scales), group = one per (n, k/g) (N*ceil(K/g) scales, row-major;
 * when g does not divide K the last group of a row is ragged: K mod g elements).
 * For an activation X[M,K]: tensor = 1, token = one per row m (M scales).
 * auto = let the target's layout pass decide (never reaches the interpreter). */
#define KILN_GRANS(X)       \
    X(TENSOR, "tensor")     \
    X(CHANNEL, "channel")   \
    X(GROUP, "group")       \
    X(TOKEN, "token")       \
    X(AUTO, "auto")

typedef enum {
#define X(e, s) KILN_GRAN_##e,
    KILN_GRANS(X)
#undef X
    KILN_NGRANS
} KilnGran;

/* minmax: the data's range; percentile: clipped at the pct-th percentile of |x|;
 * mse: clipped where the squared quantization error of the data is least (static
 * scales only: kiln_calib_range in numerics.h). */
typedef enum { KILN_CAL_MINMAX, KILN_CAL_PERCENTILE, KILN_CAL_MSE } KilnCalib;

typedef struct KilnQuantSpec {
    KilnQFormat fmt;   /* KILN_QF_NONE: not quantized */
    bool symmetric;    /* fp8 is always symmetric */
    KilnGran gran;
    int32_t group;     /* group size along K, KILN_GRAN_GROUP only */
    bool dynamic;      /* activations: scale computed from the data at run time */
    KilnCalib calib;   /* how a static scale is chosen from data */
    float pct;         /* KILN_CAL_PERCENTILE: percentile of |x| in (0,100] */
    float scale;       /* static scale given by the recipe or calibration; 0 = none yet */
    int32_t zero;      /* static zero point (asymmetric, given with scale) */
} KilnQuantSpec;

/* Storage dtype of a quantized format: int8 sym i8 / asym u8, int4 sym i4 / asym
 * u4, fp8 e4m3 / e5m2. KILN_F32 for NONE. */
KilnDType kiln_qformat_storage(KilnQFormat f, bool symmetric);
const char *kiln_qformat_name(KilnQFormat f);
/* Milliseconds on the monotonic clock, for timings people read (ir/diag.c). */
double kiln_now_ms(void);
const char *kiln_gran_name(KilnGran g);

/* Spec text: "<fmt> <sym|asym> <tensor|channel|token|auto|group=G>[ dynamic]
 *             [ pct=P][ calib=mse][ scale=S][ zero=Z]"   e.g. "int4 asym group=128",
 * "int8 sym token dynamic", "int8 sym tensor scale=0.0123". Printed without the
 * braces the type/attr syntax puts around it. */
int kiln_spec_print(const KilnQuantSpec *q, char *buf, size_t n);
/* Reads the weight form of that text back: "<fmt> <sym|asym> <tensor|channel|group=G>"
 * (other attributes absent). 0 ok, -1 not such a spec. */
int kiln_spec_parse(const char *s, KilnQuantSpec *out);
/* Reads all of it back, activation forms too ("int8 sym token dynamic", "int8 asym
 * tensor scale=0.0123 zero=131"): a scale as printed reads back as the same float32.
 * 0 ok, -1 not such a spec (unknown or repeated words, text after a number). */
int kiln_spec_parse_full(const char *s, KilnQuantSpec *out);
/* Shortest text that reads back as the same float32; always has '.', 'e', 'inf' or 'nan'. */
void kiln_format_float(char *buf, size_t n, double v);

#define KILN_MAX_RANK 4

/* A value's type: dtype, concrete shape, and for quantized values the spec that
 * says how its codes map back to real numbers. Text: "u4[64,128]{int4 asym group=32}". */
typedef struct KilnType {
    KilnDType dt;
    int rank;
    int64_t dim[KILN_MAX_RANK];
    KilnQuantSpec q; /* q.fmt == KILN_QF_NONE for plain tensors */
} KilnType;

KilnType kiln_type2(KilnDType dt, int64_t d0, int64_t d1);
KilnType kiln_type1(KilnDType dt, int64_t d0);
int64_t kiln_type_numel(const KilnType *t);
bool kiln_type_eq(const KilnType *a, const KilnType *b); /* dtype, shape and spec */
bool kiln_type_same_shape(const KilnType *a, const KilnType *b); /* rank and dims only */
int kiln_type_print(const KilnType *t, char *buf, size_t n);
/* The printed type by value, for error messages: kiln_type_str(t).s lives until the end
 * of the full expression, so several can stand in one printf-style call. */
typedef struct {
    char s[160];
} KilnTypeStr;
KilnTypeStr kiln_type_str(const KilnType *t);

/* ------------------------------------------------------------------ ops */

/* name, min and max operand counts. Semantics: docs/ir.md and interp.c (qgemm: interp_qgemm.c).
 * Weights are stored [N,K] (PyTorch Linear); matmul(a[M,K], b[N,K]) = a·bᵀ. */
#define KILN_OPS(X)                         \
    X(WEIGHT, "weight", 0, 0)               \
    X(CONST, "const", 0, 0)                 \
    X(QUANTIZE, "quantize", 1, 1)           \
    X(DEQUANTIZE, "dequantize", 1, 1)       \
    X(DYNQUANT, "dynquant", 1, 1)           \
    X(PACK, "pack", 1, 1)                   \
    X(UNPACK, "unpack", 1, 1)               \
    X(CAST, "cast", 1, 1)                   \
    X(MATMUL, "matmul", 2, 2)               \
    X(BIAS_ADD, "bias_add", 2, 2)           \
    X(SILU, "silu", 1, 1)                   \
    X(GELU, "gelu", 1, 1)                   \
    X(ADD, "add", 2, 2)                     \
    X(GATHER_COLS, "gather_cols", 1, 1)     \
    X(ZERO_COLS, "zero_cols", 1, 1)         \
    X(PREPACK, "prepack", 1, 1)             \
    X(QGEMM, "qgemm", 2, 4)                 \
    X(RETURN, "return", 1, 1)

typedef enum {
#define X(e, s, lo, hi) KILN_OP_##e,
    KILN_OPS(X)
#undef X
    KILN_NOPS
} KilnOp;

const char *kiln_op_name(KilnOp op);
int kiln_op_min_operands(KilnOp op);
int kiln_op_max_operands(KilnOp op);
int kiln_op_parse(const char *s, size_t n, KilnOp *out); /* 0 ok, -1 unknown */

/* ------------------------------------------------------------------ attrs */

typedef enum {
    KILN_ATTR_INT,   /* 128 */
    KILN_ATTR_FLOAT, /* 0.5, 1e-3 (always printed with '.' or 'e') */
    KILN_ATTR_STR,   /* "text" (C escapes \" \\ \n \t) */
    KILN_ATTR_IDENT, /* silu, f16 */
    KILN_ATTR_SPEC,  /* {int8 sym token dynamic} */
    KILN_ATTR_INTS,  /* [3, 17, 42]: a list of integers (column indices) */
} KilnAttrKind;

typedef struct KilnAttr {
    const char *key; /* arena-owned */
    KilnAttrKind kind;
    int64_t i;
    double f;
    const char *s; /* STR and IDENT, arena-owned */
    KilnQuantSpec q;
    const int64_t *ints; /* INTS, arena-owned */
    int64_t nints;
} KilnAttr;

#define KILN_MAX_OPERANDS 4
#define KILN_MAX_ATTRS 16

typedef struct KilnInst {
    KilnOp op;
    int result; /* value id; -1 for return */
    int nops;
    int ops[KILN_MAX_OPERANDS]; /* value ids */
    int nattrs;
    KilnAttr attrs[KILN_MAX_ATTRS]; /* printed in this order */
    bool dead;                      /* marked by passes; kiln_func_compact drops it */
    int line;                       /* source line when parsed, else 0 */
} KilnInst;

typedef struct KilnValue {
    const char *name; /* printed as %name; arena-owned */
    KilnType type;
    int def; /* index of defining inst, or -1 for a function parameter */
} KilnValue;

typedef struct KilnArena KilnArena;

typedef struct KilnFunc {
    struct KilnModule *mod;
    const char *name; /* printed as @"name" */
    int nparams;
    int *params; /* value ids */
    int nvalues, capvalues;
    KilnValue *values;
    int ninsts, capinsts;
    KilnInst *insts;
    int nattrs;
    KilnAttr attrs[KILN_MAX_ATTRS]; /* function attributes: target, recipe, kv_cache, ... */
    int next_id;                    /* for auto-named values */
} KilnFunc;

typedef struct KilnModule {
    KilnArena *arena;
    int nfuncs, capfuncs;
    KilnFunc **funcs;
} KilnModule;

/* ------------------------------------------------------------------ ir.c: builder */

KilnModule *kiln_module_new(void);
void kiln_module_free(KilnModule *m);
void *kiln_arena_alloc(KilnArena *a, size_t n); /* zeroed, 16-aligned, freed with the module */
const char *kiln_arena_strdup(KilnArena *a, const char *s);
const char *kiln_arena_strndup(KilnArena *a, const char *s, size_t n);

KilnFunc *kiln_func_new(KilnModule *m, const char *name);
/* New parameter value; name NULL gives an auto name. Returns the value id. */
int kiln_func_param(KilnFunc *f, const char *name, KilnType t);
/* Append an instruction; returns its result value id (-1 for return).
 * name NULL gives an auto name ("0", "1", ...). */
int kiln_emit(KilnFunc *f, KilnOp op, const int *operands, int nops, KilnType result,
              const char *name);
/* Insert before instruction index pos (0 <= pos <= ninsts); same return. */
int kiln_insert(KilnFunc *f, int pos, KilnOp op, const int *operands, int nops, KilnType result,
                const char *name);
KilnInst *kiln_def(KilnFunc *f, int value); /* defining inst, NULL for params */
KilnInst *kiln_last(KilnFunc *f);
/* Replace every use of value `from` by `to` in live instructions. */
void kiln_replace_uses(KilnFunc *f, int from, int to);
int kiln_count_uses(const KilnFunc *f, int value);
/* Drop dead instructions (values stay; ids are stable). */
void kiln_func_compact(KilnFunc *f);

/* Attributes on an instruction (or on a function via the _f variants). Setting a
 * key that exists overwrites it in place. */
void kiln_set_int(KilnFunc *f, KilnInst *in, const char *key, int64_t v);
void kiln_set_float(KilnFunc *f, KilnInst *in, const char *key, double v);
void kiln_set_str(KilnFunc *f, KilnInst *in, const char *key, const char *v);
void kiln_set_ident(KilnFunc *f, KilnInst *in, const char *key, const char *v);
void kiln_set_spec(KilnFunc *f, KilnInst *in, const char *key, const KilnQuantSpec *q);
void kiln_set_ints(KilnFunc *f, KilnInst *in, const char *key, const int64_t *v, int64_t n);
const KilnAttr *kiln_get(const KilnInst *in, const char *key);
void kiln_fset_str(KilnFunc *f, const char *key, const char *v);
void kiln_fset_ident(KilnFunc *f, const char *key, const char *v);
void kiln_fset_spec(KilnFunc *f, const char *key, const KilnQuantSpec *q);
void kiln_fset_int(KilnFunc *f, const char *key, int64_t v);
const KilnAttr *kiln_fget(const KilnFunc *f, const char *key);

/* A qgemm's operands are x, w[, bias][, wo]: wo (the f32 weight of the outlier
 * columns, docs/ir.md) is last and present exactly when the `outliers` attribute is.
 * These return the operand's value id, or -1 when the qgemm has none. */
int kiln_qgemm_bias(const KilnInst *qgemm);
int kiln_qgemm_outlier_w(const KilnInst *qgemm);

/* ------------------------------------------------------------------ print.c / parse.c */

/* Text form (docs/ir.md):
 *   ; comment
 *   func @"layer.name"(%x: f32[16,4096]) -> f32[16,11008] attributes {target = avx2} {
 *     %0 = weight {name = "layer.name.weight"} : f32[11008,4096]
 *     %1 = quantize %0 : u4[11008,4096]{int4 asym group=128}
 *     %2 = qgemm %x, %1 {act = {int8 sym token dynamic}, epilogue = silu} : f32[16,11008]
 *     return %2
 *   }
 * print -> parse -> print is the identity. */
int kiln_print_module(FILE *out, const KilnModule *m);
int kiln_print_func(FILE *out, const KilnFunc *f);
char *kiln_print_module_str(const KilnModule *m); /* malloc'd */
char *kiln_print_func_str(const KilnFunc *f);     /* malloc'd */
/* Parse text into m (appending functions). `file` names the source in errors. */
int kiln_parse_module(const char *text, size_t len, const char *file, KilnModule *m, KilnDiag *d);

/* ------------------------------------------------------------------ verify.c */

/* Checks operand counts, operand and result types and shapes, required attributes
 * and spec sanity (group > 0, fp8 symmetric, ...). Messages name the
 * function, the instruction (%name = op), the operand and expected vs got. */
int kiln_verify_module(const KilnModule *m, KilnDiag *d);
int kiln_verify_func(const KilnFunc *f, KilnDiag *d);
/* Value v is defined by a weight or const instruction: quantizing it takes a weight
 * spec (verify) and needs no calibrated activation scale (interp). */
bool kiln_value_is_weight(const KilnFunc *f, int v);

/* ------------------------------------------------------------------ interp.c */

/* A runtime tensor for the interpreter. Storage by dtype:
 *   f32 float, f16/bf16 uint16_t bits, i32 int32_t, i8 int8_t, u8 uint8_t,
 *   e4m3/e5m2 uint8_t codes, i4/u4 packed two per byte along the last dimension,
 *   element 2j in the low nibble and 2j+1 in the high nibble of byte j; each row
 *   (last dimension) starts on a new byte (row stride ceil(last/2) bytes); i4 is
 *   two's complement in the nibble.
 * Quantized tensors (type.q.fmt != NONE) also carry scales (f32) and, when
 * asymmetric, zero points (int32), laid out per type.q.gran (see KilnGran). */
typedef struct KilnTensor {
    KilnType type;
    void *data;
    size_t nbytes;
    float *scales;
    int32_t *zeros; /* NULL when symmetric */
    int64_t nscales;
} KilnTensor;

size_t kiln_tensor_bytes(const KilnType *t); /* storage bytes of the data */
/* Number of scales a quantized type needs (1, rows, rows*(cols/group)). */
int64_t kiln_type_nscales(const KilnType *t);
int kiln_tensor_alloc(KilnTensor *t, const KilnType *type); /* zeroed; frees with kiln_tensor_free */
void kiln_tensor_free(KilnTensor *t);

/* The interpreter asks for weight data by name: fill `out` (already allocated
 * with the weight's declared type, f32). Return 0, or non-zero and set d. */
typedef int (*KilnWeightFn)(void *ctx, const char *name, KilnTensor *out, KilnDiag *d);

/* Run f on inputs (one per parameter, types must match), writing the returned
 * value into *out (allocated by the interpreter; caller frees). */
int kiln_interp_run(const KilnFunc *f, const KilnTensor *inputs, int ninputs,
                    KilnWeightFn weights, void *wctx, KilnTensor *out, KilnDiag *d);
/* A weight's quantization grid chosen elsewhere (GPTQ, AWQ, a checkpoint), for the
 * `quantize` of the weight named `name` to type t: fill scales[kiln_type_nscales(t)]
 * (and zeros, when non-NULL: asymmetric int) and return 1; return 0 for none (round to
 * nearest, as without a grid). */
typedef int (*KilnGridFn)(void *ctx, const char *name, const KilnType *t, float *scales,
                          int32_t *zeros);
/* kiln_interp_run where each weight's quantize asks grid first (NULL: never): the
 * reference of a kernel whose weights were quantized onto such a grid. */
int kiln_interp_run_grid(const KilnFunc *f, const KilnTensor *inputs, int ninputs,
                         KilnWeightFn weights, void *wctx, KilnGridFn grid, void *gctx,
                         KilnTensor *out, KilnDiag *d);

#endif
