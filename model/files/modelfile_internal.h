/* model/files/modelfile_internal.h — what modelfile.c, safetensors.c and gguf.c share: the
 * KilnModelFile struct, its string arena and the format parsers. Not a public header. */
#ifndef KILN_MODELFILE_INTERNAL_H
#define KILN_MODELFILE_INTERNAL_H

#include "model/files/modelfile.h"

/* Limits on untrusted files (beyond "fits in the file"). */
#define KILN_MF_MAX_TENSORS (1 << 20)
#define KILN_MF_MAX_KV (1 << 16)
#define KILN_MF_MAX_NAME 4096          /* tensor names and metadata keys, bytes */
#define KILN_MF_MAX_ARRAY_DEPTH 4      /* nested GGUF arrays */
#define KILN_ST_MAX_HEADER ((uint64_t)100 << 20) /* the safetensors library's own limit */

/* Bump allocator for names and strings: freed all at once with the file. */
typedef struct KilnArenaChunk {
    struct KilnArenaChunk *next;
    size_t used, cap;
    char data[];
} KilnArenaChunk;

/* One metadata value; arrays keep their elements in one of the typed vectors. */
typedef struct KilnMeta {
    const char *key;
    KilnMetaKind kind;
    KilnMetaKind elem;    /* arrays: kind of the elements (KILN_MV_ARRAY when nested) */
    bool int_ok;          /* INT: false for a u64 above INT64_MAX */
    int64_t i;            /* INT, BOOL */
    double f;             /* FLOAT */
    const char *s;        /* STR */
    int64_t n;            /* ARRAY: element count */
    int64_t *ai;          /* ARRAY of INT/BOOL */
    double *af;           /* ARRAY of FLOAT */
    const char **as;      /* ARRAY of STR */
} KilnMeta;

struct KilnModelFile {
    const char *format;
    const char *path;
    void *map;
    size_t size;
    int fd; /* kept open: small row reads go through pread (kiln_mf_rows_f32), -1 if none */
    KilnModelTensor *tensors;
    const char **type_names; /* per tensor: the file's own type name ("Q6_K", "U16") */
    int ntensors;
    int *by_name;            /* tensor indices sorted by name */
    KilnMeta *meta;
    int nmeta;
    int *meta_by_key;        /* meta indices sorted by key */
    KilnArenaChunk *arena;
};

char *kiln_mf_strdup(KilnModelFile *mf, const char *s, size_t n); /* NUL-terminated copy */
void *kiln_mf_alloc(KilnModelFile *mf, size_t n);                 /* zeroed, 8-aligned */

/* Builds the name indices and rejects duplicates (both formats). */
int kiln_mf_index(KilnModelFile *mf, KilnDiag *d);
/* Rejects tensors whose byte ranges overlap (ranges relative to data_base). */
int kiln_mf_check_overlap(KilnModelFile *mf, const uint8_t *data_base, bool contiguous,
                          size_t data_size, KilnDiag *d);

int kiln_safetensors_parse(KilnModelFile *mf, KilnDiag *d);
int kiln_gguf_parse(KilnModelFile *mf, KilnDiag *d);

/* Element size in bytes of the plain types (0 for block types and OTHER). */
size_t kiln_mt_elem_size(KilnModelType t);

#endif
