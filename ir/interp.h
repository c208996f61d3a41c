/* ir/interp.h — internals shared by the reference interpreter's files (interp.c:
 * the driver and the simple ops; interp_qgemm.c: qgemm). Not for other files. */
#ifndef KILN_IR_INTERP_H
#define KILN_IR_INTERP_H

#include <math.h>

#include "numerics.h"

/* Sums are defined as separately rounded f32 multiply and add in ascending k: no FMA
 * contraction (GCC's ISO C17 mode already has -ffp-contract=off; clang needs this). */
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#endif

typedef struct Interp {
    const KilnFunc *f;
    const KilnInst *in; /* the instruction being run, for messages */
    KilnDiag *d;
    KilnTensor *vals;
    bool *ready, *owned;
    KilnWeightFn wfn;
    void *wctx;
    KilnGridFn gfn; /* NULL: weights are rounded to nearest */
    void *gctx;
} Interp;

/* interp.c */
/* Every run-time error names the function, the instruction and then the numbers. */
int interp_fail(Interp *c, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* A column list attribute (gather_cols/zero_cols `idx`, qgemm `outliers`): strictly
 * ascending columns of [0, cols). */
int interp_cols_attr(Interp *c, const char *key, int64_t cols, const int64_t **idx, int64_t *n);

/* interp_qgemm.c */
int interp_op_qgemm(Interp *c, const int *ids, int nops, const KilnTensor *const *a, KilnTensor *r);

static inline const char *vname(const Interp *c, int id) { return c->f->values[id].name; }

static inline int oom(Interp *c) { return interp_fail(c, KILN_EINTERNAL, "out of memory"); }

static inline bool is_float_dt(KilnDType dt) { return dt == KILN_F32 || dt == KILN_F16 || dt == KILN_BF16; }

static inline float load_f(const KilnTensor *t, int64_t i)
{
    switch (t->type.dt) {
    case KILN_F16: return kiln_f16_to_f32(((const uint16_t *)t->data)[i]);
    case KILN_BF16: return kiln_bf16_to_f32(((const uint16_t *)t->data)[i]);
    default: return ((const float *)t->data)[i];
    }
}

/* Storing into a 16-bit tensor is the one place results are rounded (RNE). */
static inline void store_f(KilnTensor *t, int64_t i, float v)
{
    switch (t->type.dt) {
    case KILN_F16: ((uint16_t *)t->data)[i] = kiln_f32_to_f16(v); break;
    case KILN_BF16: ((uint16_t *)t->data)[i] = kiln_f32_to_bf16(v); break;
    default: ((float *)t->data)[i] = v; break;
    }
}

static inline float silu_f(float y) { return y / (1.0f + expf(-y)); }
static inline float gelu_f(float y) { return 0.5f * y * (1.0f + erff(y * 0.70710678118654752f)); }

#endif
