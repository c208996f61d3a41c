/* ir/tensor.c — KilnTensor storage: byte sizes (packed int4 rows included), scale
 * counts per granularity, allocation and freeing. */
#include <stdlib.h>
#include <string.h>

#include "numerics.h"

/* Rows and last-dimension length; false for a malformed shape. */
static bool rows_cols(const KilnType *t, int64_t *rows, int64_t *cols)
{
    if (t->rank < 0 || t->rank > KILN_MAX_RANK)
        return false;
    int64_t r = 1;
    for (int i = 0; i < t->rank; i++) {
        if (t->dim[i] < 0 || t->dim[i] > ((int64_t)1 << 40))
            return false;
        if (i + 1 < t->rank)
            r *= t->dim[i];
        if (r > ((int64_t)1 << 40))
            return false;
    }
    *rows = r;
    *cols = t->rank ? t->dim[t->rank - 1] : 1;
    return true;
}

size_t kiln_tensor_bytes(const KilnType *t)
{
    int64_t rows, cols;
    if (!rows_cols(t, &rows, &cols) || (unsigned)t->dt >= KILN_NDTYPES)
        return 0;
    return (size_t)rows * kiln_row_bytes(t->dt, cols);
}

int64_t kiln_type_nscales(const KilnType *t)
{
    int64_t rows, cols;
    if (t->q.fmt == KILN_QF_NONE || !rows_cols(t, &rows, &cols))
        return 0;
    switch (t->q.gran) {
    case KILN_GRAN_TENSOR: return 1;
    case KILN_GRAN_CHANNEL:
    case KILN_GRAN_TOKEN: return rows;
    case KILN_GRAN_GROUP:
        if (t->q.group <= 0)
            return 0;
        /* ceil: a group that does not divide cols leaves a ragged last group */
        return rows * ((cols + t->q.group - 1) / t->q.group);
    default: return 0; /* auto: unresolved, no layout yet */
    }
}

int kiln_tensor_alloc(KilnTensor *t, const KilnType *type)
{
    memset(t, 0, sizeof *t);
    int64_t rows, cols;
    if (!rows_cols(type, &rows, &cols) || (unsigned)type->dt >= KILN_NDTYPES)
        return KILN_EINPUT;
    t->type = *type;
    t->nbytes = kiln_tensor_bytes(type);
    t->data = calloc(t->nbytes ? t->nbytes : 1, 1);
    if (!t->data)
        return KILN_EINTERNAL;
    if (type->q.fmt != KILN_QF_NONE) {
        t->nscales = kiln_type_nscales(type);
        if (t->nscales <= 0) { /* auto, or a group that does not divide the rows */
            kiln_tensor_free(t);
            return KILN_EINPUT;
        }
        t->scales = calloc((size_t)t->nscales, sizeof *t->scales);
        /* fp8 is always symmetric: zero points only for asymmetric integer formats */
        bool asym_int = !type->q.symmetric &&
                        (type->q.fmt == KILN_QF_INT8 || type->q.fmt == KILN_QF_INT4);
        if (asym_int)
            t->zeros = calloc((size_t)t->nscales, sizeof *t->zeros);
        if (!t->scales || (asym_int && !t->zeros)) {
            kiln_tensor_free(t);
            return KILN_EINTERNAL;
        }
    }
    return 0;
}

void kiln_tensor_free(KilnTensor *t)
{
    if (!t)
        return;
    free(t->data);
    free(t->scales);
    free(t->zeros);
    memset(t, 0, sizeof *t);
}
