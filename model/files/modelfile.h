/* model/files/modelfile.h — reading real model files: safetensors (memory-mapped, header
 * validated strictly) and GGUF v3 (metadata, tensor infos; F32, F16, BF16, Q8_0, Q4_0,
 * Q4_1 dequantized to f32 on load), and writing safetensors. A malformed file is an
 * error naming the problem, never a crash. */
#ifndef KILN_MODELFILE_H
#define KILN_MODELFILE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ir/ir.h"

/* Element types found in model files. */
typedef enum {
    KILN_MT_F32,
    KILN_MT_F16,
    KILN_MT_BF16,
    KILN_MT_F64,
    KILN_MT_I8,
    KILN_MT_I16,
    KILN_MT_I32,
    KILN_MT_I64,
    KILN_MT_U8,
    KILN_MT_BOOL,
    KILN_MT_Q8_0, /* GGUF: blocks of 32: f16 d, 32 x i8 */
    KILN_MT_Q4_0, /* GGUF: blocks of 32: f16 d, 16 bytes of nibbles, value (q - 8) * d */
    KILN_MT_Q4_1, /* GGUF: blocks of 32: f16 d, f16 m, 16 bytes of nibbles, value q * d + m */
    KILN_MT_F8_E4M3, /* safetensors F8_E4M3 / F8_E5M2 (ir/numerics.h decodes them) */
    KILN_MT_F8_E5M2,
    KILN_MT_OTHER,
} KilnModelType;

const char *kiln_mt_name(KilnModelType t);

/* One tensor. dims are in the file's own order, outermost first (GGUF stores
 * ne[0] innermost; the reader reverses it so that a GGUF [K, N] ne-ordered weight is
 * reported as dims {N, K}, the same as safetensors/PyTorch). */
typedef struct KilnModelTensor {
    const char *name;
    KilnModelType type;
    int rank;
    int64_t dim[4];
    int64_t numel;
    const void *data; /* into the mapping */
    size_t nbytes;
} KilnModelTensor;

typedef struct KilnModelFile KilnModelFile;

/* Opens path, detecting the format by its magic / extension. */
int kiln_mf_open(const char *path, KilnModelFile **out, KilnDiag *d);
void kiln_mf_close(KilnModelFile *mf);
const char *kiln_mf_format(const KilnModelFile *mf); /* "safetensors" or "gguf" */
int kiln_mf_ntensors(const KilnModelFile *mf);
const KilnModelTensor *kiln_mf_tensor(const KilnModelFile *mf, int i);
const KilnModelTensor *kiln_mf_find(const KilnModelFile *mf, const char *name);
/* Dequantize/convert a tensor to a new malloc'd f32 array (row-major, dims as reported).
 * Errors: unknown name (KILN_EINPUT naming it), unsupported type. */
int kiln_mf_load_f32(const KilnModelFile *mf, const char *name, float **out, KilnDiag *d);
/* Rows row0 .. row0+nrows-1 of t (rows: its last dim; a block type needs rows of whole
 * blocks) dequantized into out[nrows * rowlen] — a weight read again from the mapped file
 * when it is needed instead of kept (docs/hardening.md, "Memory"). */
int kiln_mf_rows_f32(const KilnModelFile *mf, const KilnModelTensor *t, int64_t row0,
                     int64_t nrows, float *out, KilnDiag *d);
/* Hands t's pages of the mapping back (they refault from the file when read again), so
 * a file read once does not stay in the resident set. */
void kiln_mf_drop_pages(const KilnModelFile *mf, const KilnModelTensor *t);

/* Metadata (GGUF key/values; safetensors "__metadata__" strings). */
typedef enum {
    KILN_MV_NONE, KILN_MV_INT, KILN_MV_FLOAT, KILN_MV_BOOL, KILN_MV_STR, KILN_MV_ARRAY
} KilnMetaKind;
KilnMetaKind kiln_mf_meta_kind(const KilnModelFile *mf, const char *key);
bool kiln_mf_meta_int(const KilnModelFile *mf, const char *key, int64_t *out);
bool kiln_mf_meta_float(const KilnModelFile *mf, const char *key, double *out);
const char *kiln_mf_meta_str(const KilnModelFile *mf, const char *key); /* NULL if absent */
/* Arrays: number of elements, element kind, and element access. */
int64_t kiln_mf_meta_array_len(const KilnModelFile *mf, const char *key);
/* Kind of an array's elements (KILN_MV_ARRAY for nested arrays); KILN_MV_NONE if key is
 * not an array. (Added by H10.) */
KilnMetaKind kiln_mf_meta_array_kind(const KilnModelFile *mf, const char *key);
const char *kiln_mf_meta_array_str(const KilnModelFile *mf, const char *key, int64_t i);
bool kiln_mf_meta_array_int(const KilnModelFile *mf, const char *key, int64_t i, int64_t *out);
bool kiln_mf_meta_array_float(const KilnModelFile *mf, const char *key, int64_t i, double *out);

/* Writes a safetensors file: tensors in the given order, data copied from each
 * KilnModelTensor's data (plain types and F8_E4M3/F8_E5M2; not the GGUF blocks), optional string
 * metadata (n_meta key/value pairs). Atomic (temp file + rename). */
int kiln_safetensors_write(const char *path, const KilnModelTensor *tensors, int n,
                           const char *const *meta_kv, int n_meta, KilnDiag *d);
/* The same, streamed: a tensor whose data is NULL (nbytes > 0) gets its bytes from
 * fill(ctx, i, off, &data, &len, d) when its turn comes in the file — bytes off .. off +
 * len - 1 of tensor i (len > 0), called until all are made — so a writer can make each
 * tensor, or a slice of one, just before it is written and free it after (kiln quantize:
 * docs/hardening.md, "Memory"); data stays valid until the next call. A fill error ends
 * the write with fill's message and leaves no file. */
typedef int (*KilnStFill)(void *ctx, int i, size_t off, const void **data, size_t *len,
                          KilnDiag *d);
int kiln_safetensors_write_fill(const char *path, const KilnModelTensor *tensors, int n,
                                const char *const *meta_kv, int n_meta, KilnStFill fill,
                                void *fill_ctx, KilnDiag *d);

#endif
