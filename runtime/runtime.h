/* runtime/runtime.h — what an AOT user links alone: aligned buffers, the thread pool,
 * calling qgemm kernels, the on-disk kernel cache, AOT libraries and their manifests
 * (JSON), and libffi calls. Uses libc, pthreads, libdl, libffi and ir/ types only —
 * never LLVM or Lua. docs/jit-aot.md ("Runtime") describes the cache and manifest. */
#ifndef KILN_RUNTIME_H
#define KILN_RUNTIME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "ir/ir.h"
#include "ir/layout.h"

/* ------------------------------------------------------------------ pool.c: buffers */

/* 64-byte aligned, zeroed, rounded up to a whole number of 64-byte lines (so
 * vector loads past the end of the last element stay inside the block). NULL on
 * failure. bytes == 0 still gives a valid (one-line) block. */
void *kiln_rt_alloc(size_t bytes);
/* The same for a prepacked weight blob: from 2 MiB up, 2 MiB aligned and advised as
 * transparent huge pages (MADV_HUGEPAGE; KILN_NO_HUGEPAGES=1 turns it off). Freed
 * with kiln_rt_free. */
void *kiln_rt_alloc_weights(size_t bytes);
void kiln_rt_free(void *p);

/* ------------------------------------------------------------------ files.c */

/* mkdir -p (0755); an existing directory is fine, also on a read-only file system.
 * KILN_EINPUT "cannot create <what> <path>: <reason>" for the part that failed. */
int kiln_rt_mkdir_p(const char *path, const char *what, KilnDiag *d);
/* Writes the whole file atomically (a temporary in the same directory, then rename),
 * mode 0644. KILN_EINPUT naming the path on failure. */
int kiln_rt_write_file(const char *path, const void *data, size_t len, KilnDiag *d);
/* Every file kiln reads because a user named it (recipes, --text, --shapes, manifests,
 * vocabularies, checkpoint configs, cache entries) is opened through these: without
 * blocking (O_NONBLOCK, so a FIFO with no writer cannot hang the open) and only when
 * fstat says it is a regular file, so a FIFO, a device (/dev/zero), a directory or a
 * socket is refused before anything is read. _fd returns the descriptor (blocking
 * again) and the file's size; _fopen a FILE for "rb" reads. max > 0: a file larger
 * than max bytes is refused too. On failure -1 / NULL with errno set (EINVAL: not a
 * regular file, EFBIG: over max), and d (when not NULL) KILN_EINPUT located at path
 * (d->file = path: keep path alive while d is read), "cannot open <what>: <reason>",
 * e.g. "not a regular file (a FIFO): ..." or "larger than the limit of 1048576 bytes". */
int kiln_rt_open_regular(const char *path, const char *what, uint64_t max, uint64_t *size,
                         KilnDiag *d);
FILE *kiln_rt_fopen_regular(const char *path, const char *what, uint64_t max, KilnDiag *d);
/* The whole regular file (kiln_rt_open_regular's checks) into a malloc'd buffer with a
 * NUL after its *len bytes: reads stop at max (and at the size fstat gave), so a file
 * that grows while it is read cannot make kiln read without bound. */
int kiln_rt_read_file(const char *path, const char *what, uint64_t max, char **out,
                      size_t *len, KilnDiag *d);

/* ------------------------------------------------------------------ pool.c: threads */

#define KILN_MAX_THREADS 1024

typedef struct KilnPool KilnPool;

/* nthreads <= 0: KILN_NUM_THREADS if set and valid (an integer 1..KILN_MAX_THREADS;
 * anything else gets a warning on stderr), else the cores this process may run on.
 * nthreads > KILN_MAX_THREADS is an error. The calling thread is thread 0, so a
 * pool of n starts n-1 workers. */
int kiln_pool_new(int nthreads, KilnPool **out, KilnDiag *d);
int kiln_pool_size(const KilnPool *p);
/* Default thread count as kiln_pool_new(0) would choose it (warns like it). */
int kiln_pool_default_threads(void);

typedef void (*KilnTaskFn)(void *ctx, int task, int thread);
/* Calls fn(ctx, task, thread) for every task in [0, ntasks), thread in
 * [0, kiln_pool_size(p)); blocks until all are done. The caller participates.
 * A run from inside one of p's own tasks runs its tasks serially on the calling
 * thread (same thread index), so nesting cannot deadlock. Runs from different
 * outside threads on one pool are serialised. p NULL: serial, thread 0. */
void kiln_pool_run(KilnPool *p, int ntasks, KilnTaskFn fn, void *ctx);
void kiln_pool_free(KilnPool *p);

/* ------------------------------------------------------------------ pool.c: qgemm */

/* KilnQGemmFn, the kernel ABI, is in ir/layout.h (with the blob it reads). */
/* Splits [0, N) into chunks of whole NR-wide panels (only the last chunk may end
 * at N off a panel boundary), one chunk per thread at most, and calls fn on each
 * with its thread's own 64-byte aligned scratch (NULL when scratch_bytes_per_thread
 * is 0). p NULL: one chunk on the calling thread. M == 0 or N == 0: no calls. */
int kiln_rt_qgemm(KilnPool *p, KilnQGemmFn fn, int64_t M, int64_t N, int NR, const float *x,
                  const void *wpack, const float *bias, void *y,
                  size_t scratch_bytes_per_thread, KilnDiag *d);
/* The qgemm of layout l on M rows of x into y (its out dtype), scratch allocated
 * here. Decode-sized M goes as kiln_rt_qgemm (threads split N: every call
 * prepares all M activation rows). Prefill-sized M (>= 48 rows per chunk, about 2
 * chunks per thread) is split by rows instead when the layout's rows are
 * independent (kiln_layout_row_unit > 0): each call prepares only its own rows,
 * no thread repeats another's activation quantization, and chunk boundaries on
 * the row unit keep every row in the same register tile as in one call, so y is
 * the same bit for bit at any thread count. */
int kiln_rt_qgemm_layout(KilnPool *p, const KilnLayout *l, KilnQGemmFn fn, int64_t M,
                         const float *x, const void *wpack, const float *bias, void *y,
                         KilnDiag *d);

/* ------------------------------------------------------------------ sha256.c */

typedef struct KilnSha256 {
    uint32_t h[8];
    uint64_t nbytes;
    uint8_t buf[64];
    size_t nbuf;
} KilnSha256;

void kiln_sha256_init(KilnSha256 *s);
void kiln_sha256_update(KilnSha256 *s, const void *data, size_t n);
void kiln_sha256_final(KilnSha256 *s, uint8_t out[32]);
void kiln_sha256(const void *data, size_t n, uint8_t out[32]);
/* 64 lowercase hex digits and a NUL into hex[65]. */
void kiln_sha256_hex(const uint8_t digest[32], char hex[65]);

/* ------------------------------------------------------------------ cache.c */

/* Content-addressed kernel cache on disk. The key is the SHA-256 of caller-given
 * key material: everything that decides the blob (kernel IR text, target, kiln
 * version, LLVM/NVRTC version). Entries are written atomically (temp file, fsync,
 * rename), so concurrent processes never see a partial entry; a damaged entry is
 * reported on stderr, deleted and treated as a miss. */
typedef struct KilnCache KilnCache;

/* dir NULL (or ""): $KILN_CACHE_DIR, else $HOME/.cache/kiln. Created with parents. A
 * directory kiln can read but not write opens read-only: its entries are used, puts
 * store nothing (and a put that finds the directory unwritable makes it read-only). */
int kiln_cache_open(const char *dir, KilnCache **out, KilnDiag *d);
const char *kiln_cache_dir(const KilnCache *c);
bool kiln_cache_readonly(const KilnCache *c);
/* 0 hit (*blob malloc'd, caller frees), 1 miss, KILN_E* on bad arguments. */
int kiln_cache_get(KilnCache *c, const char *key_material, size_t len, void **blob,
                   size_t *blob_len, KilnDiag *d);
int kiln_cache_put(KilnCache *c, const char *key_material, size_t len, const void *blob,
                   size_t blob_len, KilnDiag *d);
/* Path of the entry file for the key (whether or not it exists). */
int kiln_cache_entry_path(const KilnCache *c, const char *key_material, size_t len, char *buf,
                          size_t n);
void kiln_cache_close(KilnCache *c);

/* ------------------------------------------------------------------ json.c */

typedef enum {
    KILN_JSON_NULL,
    KILN_JSON_BOOL,
    KILN_JSON_NUMBER,
    KILN_JSON_STRING,
    KILN_JSON_ARRAY,
    KILN_JSON_OBJECT,
} KilnJsonKind;

#define KILN_JSON_MAX_DEPTH 64
#define KILN_JSON_MAX_BYTES ((size_t)64 << 20)
/* The memory one document may need while it is parsed and after: a base plus a multiple
 * of its text (runtime/json.c, docs/hardening.md). */
#define KILN_JSON_BUDGET_BASE ((size_t)16 << 20)
#define KILN_JSON_BUDGET_PER_BYTE 6

/* A parsed JSON value, 16 bytes. Strings are UTF-8, NUL-terminated (\u0000 is rejected).
 * Objects keep member order (keys through kiln_json_key); duplicate keys are an error.
 * Read the payload that `kind` (and `is_int`) names: the others share its bytes. A whole
 * document is one allocation, freed through its root with kiln_json_free. */
typedef struct KilnJson {
    KilnJsonKind kind : 3;
    bool b : 1;       /* BOOL */
    bool is_int : 1;  /* NUMBER written without fraction/exponent that fits int64 */
    uint32_t at : 27; /* byte offset of the value in its text: kiln_json_where */
    uint32_t len;     /* STRING: bytes; ARRAY/OBJECT: members; else 0 */
    union {
        int64_t i;                    /* NUMBER with is_int */
        double real;                  /* NUMBER without is_int: kiln_json_num reads both */
        const char *str;              /* STRING */
        const struct KilnJson *items; /* ARRAY/OBJECT members */
    };
} KilnJson;

/* Strict RFC 8259 JSON. `file` (may be NULL) names the text in errors, which read
 * "FILE:LINE:COL: what". A document that needs more memory than KILN_JSON_BUDGET_BASE +
 * KILN_JSON_BUDGET_PER_BYTE x its length is refused before its values are allocated.
 * *out is freed with kiln_json_free. */
int kiln_json_parse(const char *text, size_t len, const char *file, KilnJson **out,
                    KilnDiag *d);
int kiln_json_parse_file(const char *path, KilnJson **out, KilnDiag *d);
void kiln_json_free(KilnJson *root);
const KilnJson *kiln_json_get(const KilnJson *obj, const char *key); /* NULL if absent */
const char *kiln_json_key(const KilnJson *obj, size_t i); /* member i's; NULL: no such */
double kiln_json_num(const KilnJson *v); /* a NUMBER's value, is_int or not; else 0 */
/* Where v, a value of the document `root`, starts in the text: 1-based line and column
 * (in bytes), for messages. */
void kiln_json_where(const KilnJson *root, const KilnJson *v, int *line, int *col);
size_t kiln_json_bytes(const KilnJson *root); /* the memory the document holds */
const char *kiln_json_kind_name(KilnJsonKind k);

/* Streaming writer (pretty, 2-space indent). Misuse (a value where a key is due,
 * unbalanced end, non-finite double) is remembered and reported by _finish. */
typedef struct KilnJsonWriter {
    FILE *out;
    int depth;
    bool first[KILN_JSON_MAX_DEPTH + 1];
    char open[KILN_JSON_MAX_DEPTH + 1]; /* '{' or '[' */
    bool want_value;                    /* after a key */
    bool done;                          /* top-level value written */
    char err[128];
} KilnJsonWriter;

void kiln_jw_init(KilnJsonWriter *w, FILE *out);
void kiln_jw_begin_object(KilnJsonWriter *w);
void kiln_jw_end_object(KilnJsonWriter *w);
void kiln_jw_begin_array(KilnJsonWriter *w);
void kiln_jw_end_array(KilnJsonWriter *w);
void kiln_jw_key(KilnJsonWriter *w, const char *key);
void kiln_jw_string(KilnJsonWriter *w, const char *s);
void kiln_jw_int(KilnJsonWriter *w, int64_t v);
void kiln_jw_double(KilnJsonWriter *w, double v);
void kiln_jw_bool(KilnJsonWriter *w, bool v);
void kiln_jw_null(KilnJsonWriter *w);
/* A key and its value, in an object. */
void kiln_jw_kv_str(KilnJsonWriter *w, const char *key, const char *v);
void kiln_jw_kv_int(KilnJsonWriter *w, const char *key, int64_t v);
void kiln_jw_kv_bool(KilnJsonWriter *w, const char *key, bool v);
/* Writes a parsed tree (numbers that were integers stay integers). */
void kiln_jw_value(KilnJsonWriter *w, const KilnJson *v);
/* 0 when the document is complete and well formed and written without I/O error. */
int kiln_jw_finish(KilnJsonWriter *w, KilnDiag *d);

/* ------------------------------------------------------------------ ffi.c */

/* A C signature built from a manifest "args" array ([{"name":..,"type":..}, ...]).
 * Types: int64_t, int32_t, float, double and pointers (any type text ending in
 * '*'). Return type is void. */
typedef struct KilnFfiSig KilnFfiSig;

int kiln_ffi_sig_new(const KilnJson *args, KilnFfiSig **out, KilnDiag *d);
int kiln_ffi_sig_nargs(const KilnFfiSig *s);
/* arg_values[i] points at the i-th argument's value (e.g. &x for a pointer x). */
void kiln_ffi_sig_call(const KilnFfiSig *s, void *fn, void **arg_values);
void kiln_ffi_sig_free(KilnFfiSig *s);
/* One-shot: build the signature from args, call, free. */
int kiln_ffi_call(void *fn, const KilnJson *args, void **arg_values, KilnDiag *d);

/* ------------------------------------------------------------------ aot.c */

/* One kernel of an AOT manifest (docs/jit-aot.md). Strings point into the
 * manifest tree and live until kiln_aot_close. Absent optional strings are "". */
typedef struct KilnAotKernel {
    const char *name, *symbol, *layer, *recipe, *layout, *out_dtype, *act_dtype, *epilogue;
    int64_t M, N, K; /* M 0: any M at run time */
    int nr;
    int64_t pack_bytes, scratch_per_row;
    bool bias;
    const KilnJson *weight; /* object */
    const KilnJson *act;    /* object, or NULL for weight-only */
    const KilnJson *args;   /* array of {"name","type"} */
    KilnFfiSig *sig;        /* built from args */
} KilnAotKernel;

typedef struct KilnAot KilnAot;

/* Reads DIR/manifest.json and dlopens the library it names (relative to DIR). */
int kiln_aot_open(const char *dir, KilnAot **out, KilnDiag *d);
int kiln_aot_nkernels(const KilnAot *a);
const KilnAotKernel *kiln_aot_kernel(const KilnAot *a, int i); /* NULL when out of range */
int kiln_aot_find(const KilnAot *a, const char *kernel_name);  /* index or -1 */
const char *kiln_aot_target(const KilnAot *a);
const char *kiln_aot_kiln_version(const KilnAot *a);
const char *kiln_aot_library_path(const KilnAot *a);
const KilnJson *kiln_aot_manifest(const KilnAot *a);
int kiln_aot_lookup(KilnAot *a, const char *kernel_name, void **fn, KilnDiag *d);
/* Looks the kernel up and calls it through libffi with its manifest signature. */
int kiln_aot_call(KilnAot *a, const char *kernel_name, void **arg_values, KilnDiag *d);
void kiln_aot_close(KilnAot *a);

/* Whether this CPU can run code built for `target` ("avx2", "avx512..."):
 * 1 yes, 0 no, -1 target name not known here (callers should not refuse it). */
int kiln_rt_cpu_supports(const char *target);

#endif
