/* tests/aot/consumer.c — a program that uses `kiln aot` output the way an inference
 * engine would, linking only libkiln_kernels.so and libkiln_rt.so (no LLVM, no Lua):
 * for every kernel of DIR/manifest.json it rebuilds the layout, quantizes and prepacks
 * deterministic weights, runs the kernel four ways (the linked symbol from
 * kiln_kernels.h, the dlsym'd pointer, libffi from the manifest's signature, the thread
 * pool), checks they agree bit for bit (and that a prefill-sized call on the pool,
 * split by rows, matches one call), and writes the output to a file for
 * tests/test_aot.c to compare with the reference interpreter.
 *
 * usage: consumer AOT_DIR OUT_FILE [M]
 * OUT_FILE: per kernel (manifest order) char symbol[64], int64 M, N, elem_bytes, then
 * M*N elements of the kernel's out dtype. Exit 0 ok, 1 paths disagree, 2 error. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "datagen.h"
#include "ir/numerics.h"
#include "kiln_kernels.h" /* from the AOT directory */
#include "runtime/aot_layout.h"
#include "runtime/runtime.h"

/* The kernels as linked into this program (kiln_kernels.h's X-macro). */
#define ENTRY(sym, N, K, NR, bytes) {#sym, sym},
static const struct {
    const char *symbol;
    KilnQGemmFn fn;
} linked[] = {KILN_KERNELS(ENTRY)};

static int fail(const KilnDiag *d)
{
    char buf[1400];
    fprintf(stderr, "consumer: %s\n", kiln_diag_format(d, buf, sizeof buf));
    return 2;
}

static KilnQGemmFn linked_fn(const char *symbol)
{
    for (size_t i = 0; i < sizeof linked / sizeof *linked; i++)
        if (!strcmp(linked[i].symbol, symbol))
            return linked[i].fn;
    return NULL;
}

/* Quantize (unless f32) + prepack the layer's weights for layout l; *wpack from
 * kiln_rt_alloc. */
static int prepare_weights(const KilnLayout *l, const char *layer, void **wpack, float **bias,
                           KilnDiag *d)
{
    char name[512];
    int64_t N = l->N, K = l->K;
    float *w = malloc(sizeof(float) * (size_t)(N * K));
    *bias = calloc((size_t)N, sizeof(float));
    KilnType wt = kiln_type2(l->wdt, N, K);
    wt.q = l->wspec;
    KilnTensor wq = {0};
    if (!w || !*bias || kiln_tensor_alloc(&wq, &wt)) {
        free(w);
        return kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
    }
    snprintf(name, sizeof name, "%s.weight", layer);
    aot_gen_fill(w, N * K, name, aot_gen_weight_sigma(K));
    snprintf(name, sizeof name, "%s.bias", layer);
    aot_gen_fill(*bias, N, name, 0.1f);
    int rc = 0;
    if (l->wdt == KILN_F32) /* a layer the recipe leaves in f32: packed as is */
        memcpy(wq.data, w, sizeof(float) * (size_t)(N * K));
    else
        rc = kiln_quantize_matrix(&wt.q, w, N, K, wq.data, wq.scales, wq.zeros, d);
    *wpack = rc ? NULL : kiln_rt_alloc(l->pack_bytes);
    if (!rc && !*wpack)
        rc = kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
    if (!rc)
        rc = kiln_prepack(l, &wq, *wpack, d);
    kiln_tensor_free(&wq);
    free(w);
    return rc;
}

/* M = PREFILL_M rows through kiln_rt_qgemm_layout on the pool (split by rows where
 * the layout allows) against one call of the linked kernel: 0 same bytes, 1 not, 2 error. */
enum { PREFILL_M = 130 };
static int check_row_split(KilnPool *pool, const KilnLayout *l, KilnQGemmFn fn, const void *wpack,
                           const float *bias, const char *name)
{
    KilnDiag d = {0};
    int64_t M = PREFILL_M;
    size_t ybytes = (l->out_dt == KILN_F32 ? 4 : 2) * (size_t)(M * l->N);
    float *x = malloc(sizeof(float) * (size_t)(M * l->K));
    void *y0 = malloc(ybytes), *y1 = malloc(ybytes);
    size_t sb = kiln_layout_scratch_bytes(l, M);
    void *scratch = kiln_rt_alloc(sb);
    int e = 0;
    if (!x || !y0 || !y1 || !scratch) {
        fprintf(stderr, "consumer: out of memory\n");
        e = 2;
    } else {
        aot_gen_fill(x, M * l->K, "x_prefill", 1.0f);
        memset(y1, 0xA5, ybytes);
        fn(x, M, wpack, bias, y0, 0, l->N, sb ? scratch : NULL);
        if (kiln_rt_qgemm_layout(pool, l, fn, M, x, wpack, bias, y1, &d))
            e = fail(&d);
        else if (memcmp(y0, y1, ybytes)) {
            fprintf(stderr, "consumer: kernel %s: M=%d through kiln_rt_qgemm_layout differs from "
                    "one call\n", name, PREFILL_M);
            e = 1;
        }
    }
    free(x), free(y0), free(y1);
    kiln_rt_free(scratch);
    return e;
}

/* Runs kernel i four ways; 0 when all agree (output in *yout), 1 when not, 2 error. */
static int run_kernel(KilnAot *a, KilnPool *pool, int i, int64_t M, FILE *out)
{
    KilnDiag d = {0};
    const KilnAotKernel *k = kiln_aot_kernel(a, i);
    KilnLayout l;
    if (kiln_aot_layout(a, i, &l, &d))
        return fail(&d);
    void *fn = NULL;
    if (kiln_aot_lookup(a, k->name, &fn, &d))
        return fail(&d);
    KilnQGemmFn direct = linked_fn(k->symbol);
    if (!direct) {
        fprintf(stderr, "consumer: kernel '%s' is in manifest.json but not in kiln_kernels.h\n",
                k->symbol);
        return 2;
    }
    void *wpack = NULL;
    float *bias = NULL;
    int e = prepare_weights(&l, k->layer, &wpack, &bias, &d) ? fail(&d) : 0;
    size_t esize = l.out_dt == KILN_F32 ? 4 : 2, ybytes = esize * (size_t)(M * l.N);
    size_t sbytes = kiln_layout_scratch_bytes(&l, M);
    float *x = malloc(sizeof(float) * (size_t)(M * l.K));
    void *y[4] = {malloc(ybytes), malloc(ybytes), malloc(ybytes), malloc(ybytes)};
    void *scratch = kiln_rt_alloc(sbytes);
    if (!e && (!x || !y[0] || !y[1] || !y[2] || !y[3] || !scratch)) {
        fprintf(stderr, "consumer: out of memory\n");
        e = 2;
    }
    if (!e) {
        aot_gen_fill(x, M * l.K, "x", 1.0f);
        for (int j = 0; j < 4; j++)
            memset(y[j], 0xA5, ybytes); /* garbage that a skipped store would leave */
        const float *b = k->bias ? bias : NULL;
        void *s = sbytes ? scratch : NULL;
        direct(x, M, wpack, b, y[0], 0, l.N, s);
        ((KilnQGemmFn)fn)(x, M, wpack, b, y[1], 0, l.N, s);
        const float *px = x;
        const void *pw = wpack;
        void *py = y[2];
        int64_t n0 = 0, n1 = l.N;
        void *args[8] = {&px, &M, &pw, &b, &py, &n0, &n1, &s};
        if (kiln_aot_call(a, k->name, args, &d) ||
            kiln_rt_qgemm(pool, (KilnQGemmFn)fn, M, l.N, l.NR, x, wpack, b, y[3], sbytes, &d))
            e = fail(&d);
    }
    static const char *const how[4] = {"linked symbol", "kiln_aot_lookup", "libffi",
                                       "thread pool"};
    for (int j = 1; !e && j < 4; j++)
        if (memcmp(y[0], y[j], ybytes)) {
            fprintf(stderr, "consumer: kernel %s: output through %s differs from %s\n",
                    k->name, how[j], how[0]);
            e = 1;
        }
    if (!e) /* a prefill the pool splits by rows must give the one call's y, bit for bit */
        e = check_row_split(pool, &l, direct, wpack, k->bias ? bias : NULL, k->name);
    if (!e) {
        char sym[64] = {0};
        snprintf(sym, sizeof sym, "%s", k->symbol);
        int64_t hdr[3] = {M, l.N, (int64_t)esize};
        if (fwrite(sym, 1, 64, out) != 64 || fwrite(hdr, sizeof hdr, 1, out) != 1 ||
            fwrite(y[0], 1, ybytes, out) != ybytes) {
            fprintf(stderr, "consumer: cannot write the output file\n");
            e = 2;
        }
        printf("kernel %s (%s, layer %s): N=%lld K=%lld, %zu packed bytes, y[0] = %g\n",
               k->name, l.name, k->layer, (long long)l.N, (long long)l.K, l.pack_bytes,
               l.out_dt == KILN_F32    ? (double)((float *)y[0])[0]
               : l.out_dt == KILN_F16 ? (double)kiln_f16_to_f32(((uint16_t *)y[0])[0])
                                       : (double)kiln_bf16_to_f32(((uint16_t *)y[0])[0]));
    }
    kiln_rt_free(wpack);
    kiln_rt_free(scratch);
    free(bias);
    free(x);
    for (int j = 0; j < 4; j++)
        free(y[j]);
    return e;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: consumer AOT_DIR OUT_FILE [M]\n");
        return 2;
    }
    int64_t M = argc > 3 ? atoll(argv[3]) : 5;
    if (M < 1 || M > 100000) {
        fprintf(stderr, "consumer: bad M '%s'\n", argv[3]);
        return 2;
    }
    KilnDiag d = {0};
    KilnAot *a = NULL;
    KilnPool *pool = NULL;
    if (kiln_aot_open(argv[1], &a, &d) || kiln_pool_new(3, &pool, &d)) {
        kiln_aot_close(a);
        return fail(&d);
    }
    FILE *out = fopen(argv[2], "wb");
    int e = out ? 0 : 2;
    if (!out)
        fprintf(stderr, "consumer: cannot create %s\n", argv[2]);
    printf("%s: %d kernels for target %s (kiln %s)\n", kiln_aot_library_path(a),
           kiln_aot_nkernels(a), kiln_aot_target(a), kiln_aot_kiln_version(a));
    for (int i = 0; !e && i < kiln_aot_nkernels(a); i++)
        e = run_kernel(a, pool, i, M, out);
    if (out && fclose(out) && !e)
        e = 2;
    kiln_pool_free(pool);
    kiln_aot_close(a);
    return e;
}
