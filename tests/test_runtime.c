/* tests/test_runtime.c — runtime/: buffers, thread pool, qgemm splitting, SHA-256,
 * the kernel cache, JSON, libffi calls and AOT library loading. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "kiln.h"
#include "runtime/runtime.h"

/* ------------------------------------------------------------------ helpers */

static int saved_stderr = -1;
static char capture_path[64];

static void capture_begin(void)
{
    fflush(stderr);
    snprintf(capture_path, sizeof capture_path, "/tmp/kiln-rt-err-XXXXXX");
    int fd = mkstemp(capture_path);
    assert_true(fd >= 0);
    saved_stderr = dup(2);
    dup2(fd, 2);
    close(fd);
}

/* Returns what was written to stderr since capture_begin (malloc'd). */
static char *capture_end(void)
{
    fflush(stderr);
    dup2(saved_stderr, 2);
    close(saved_stderr);
    FILE *f = fopen(capture_path, "rb");
    assert_non_null(f);
    char *buf = calloc(1, 65536);
    size_t n = fread(buf, 1, 65535, f);
    buf[n] = '\0';
    fclose(f);
    unlink(capture_path);
    return buf;
}

static char *make_tmpdir(void)
{
    char tmpl[] = "/tmp/kiln-rt-XXXXXX";
    char *p = mkdtemp(tmpl);
    assert_non_null(p);
    return strdup(p);
}

/* Removes dir and the plain files in it (test dirs are flat). */
static void remove_tree(char *dir)
{
    DIR *dd = opendir(dir);
    if (dd) {
        struct dirent *e;
        char path[4096];
        while ((e = readdir(dd))) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
                continue;
            snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
            unlink(path);
        }
        closedir(dd);
    }
    rmdir(dir);
    free(dir);
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

/* Entries of dir whose name starts with prefix (NULL: all but . and ..). */
static int count_files(const char *dir, const char *prefix)
{
    DIR *dd = opendir(dir);
    assert_non_null(dd);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(dd))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        n += !prefix || !strncmp(e->d_name, prefix, strlen(prefix));
    }
    closedir(dd);
    return n;
}

#define assert_contains(hay, needle)                                                          \
    do {                                                                                      \
        if (!strstr((hay), (needle)))                                                         \
            fail_msg("expected \"%s\" in \"%s\"", (needle), (hay));                           \
    } while (0)

/* ------------------------------------------------------------------ buffers */

static void test_alloc(void **state)
{
    size_t sizes[] = {0, 1, 3, 63, 64, 65, 1000, 1 << 20};
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
        unsigned char *p = kiln_rt_alloc(sizes[i]);
        assert_non_null(p);
        assert_int_equal((uintptr_t)p % 64, 0);
        size_t rounded = sizes[i] ? (sizes[i] + 63) / 64 * 64 : 64;
        for (size_t j = 0; j < rounded; j++)
            assert_int_equal(p[j], 0);
        memset(p, 0xab, rounded); /* the whole rounded block is ours */
        kiln_rt_free(p);
    }
    assert_null(kiln_rt_alloc(SIZE_MAX));
    assert_null(kiln_rt_alloc(SIZE_MAX - 10));
    kiln_rt_free(NULL);
}

/* ------------------------------------------------------------------ pool */

typedef struct {
    _Alignas(64) int64_t sum;
} Slot;

typedef struct {
    Slot slots[KILN_MAX_THREADS];
    atomic_uchar *seen;
    int nthreads;
    atomic_int bad_thread;
} SumCtx;

static void sum_task(void *ctx, int task, int thread)
{
    SumCtx *c = ctx;
    if (thread < 0 || thread >= c->nthreads) {
        atomic_fetch_add(&c->bad_thread, 1);
        return;
    }
    c->slots[thread].sum += task + 1;
    if (c->seen)
        atomic_fetch_add(&c->seen[task], 1);
}

static void check_sum(KilnPool *p, int ntasks, bool track)
{
    static SumCtx c;
    memset(&c, 0, sizeof c);
    c.nthreads = kiln_pool_size(p);
    if (track)
        c.seen = calloc((size_t)ntasks, 1);
    kiln_pool_run(p, ntasks, sum_task, &c);
    int64_t total = 0;
    for (int t = 0; t < c.nthreads; t++)
        total += c.slots[t].sum;
    assert_int_equal(atomic_load(&c.bad_thread), 0);
    assert_int_equal(total, (int64_t)ntasks * (ntasks + 1) / 2);
    if (track) {
        for (int i = 0; i < ntasks; i++)
            if (c.seen[i] != 1)
                fail_msg("task %d ran %d times", i, c.seen[i]);
        free(c.seen);
    }
}

/* Weight blobs: small ones as kiln_rt_alloc; from 2 MiB up 2 MiB-aligned (so
 * the huge-page advice covers whole pages: only those inside the blob, its tail stays
 * on 4 KiB pages), zeroed, freed by kiln_rt_free; the advice is best effort, and
 * KILN_NO_HUGEPAGES gives plain 64-byte alignment. */
static void test_alloc_weights(void **state)
{
    (void)state;
    static const size_t sizes[] = {1, 4096, (2u << 20) - 1, 2u << 20, (5u << 20) + 3};
    for (int pass = 0; pass < 2; pass++) {
        if (pass)
            setenv("KILN_NO_HUGEPAGES", "1", 1);
        for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
            unsigned char *p = kiln_rt_alloc_weights(sizes[i]);
            assert_non_null(p);
            size_t align = !pass && sizes[i] >= (2u << 20) ? (2u << 20) : 64;
            assert_int_equal((uintptr_t)p % align, 0);
            for (size_t k = 0; k < sizes[i]; k += 4093)
                assert_int_equal(p[k], 0);
            assert_int_equal(p[sizes[i] - 1], 0);
            memset(p, 0x5A, sizes[i]);
            kiln_rt_free(p);
        }
        unsetenv("KILN_NO_HUGEPAGES");
    }
    assert_null(kiln_rt_alloc_weights(SIZE_MAX));
}

static void test_pool_sums(void **state)
{
    int sizes[] = {1, 2, 4, 7};
    for (size_t s = 0; s < sizeof sizes / sizeof *sizes; s++) {
        KilnPool *p;
        KilnDiag d = {0};
        assert_int_equal(kiln_pool_new(sizes[s], &p, &d), 0);
        assert_int_equal(kiln_pool_size(p), sizes[s]);
        int ntasks[] = {1, 2, 3, 7, 100, 1000, 12345, 1000000};
        for (size_t i = 0; i < sizeof ntasks / sizeof *ntasks; i++)
            check_sum(p, ntasks[i], ntasks[i] <= 100000);
        check_sum(p, 0, false);
        kiln_pool_free(p);
    }
    check_sum(NULL, 1000, true); /* no pool: serial on the caller */
}

static void test_pool_serial_runs(void **state)
{
    KilnPool *p;
    KilnDiag d = {0};
    assert_int_equal(kiln_pool_new(4, &p, &d), 0);
    for (int r = 0; r < 2000; r++)
        check_sum(p, 1 + r % 37, false);
    kiln_pool_free(p);
}

typedef struct {
    KilnPool *p;
    atomic_long inner;
    atomic_int bad;
} NestCtx;

static void inner_task(void *ctx, int task, int thread)
{
    NestCtx *c = ctx;
    if (thread < 0 || thread >= kiln_pool_size(c->p))
        atomic_fetch_add(&c->bad, 1);
    atomic_fetch_add(&c->inner, task + 1);
}

static void outer_task(void *ctx, int task, int thread)
{
    NestCtx *c = ctx;
    kiln_pool_run(c->p, 100, inner_task, c);
}

static void *outside_caller(void *arg)
{
    NestCtx *c = arg;
    for (int r = 0; r < 200; r++)
        kiln_pool_run(c->p, 10, inner_task, c);
    return NULL;
}

static void test_pool_nested_and_concurrent(void **state)
{
    KilnDiag d = {0};
    NestCtx c = {0};
    assert_int_equal(kiln_pool_new(3, &c.p, &d), 0);
    kiln_pool_run(c.p, 8, outer_task, &c);
    assert_int_equal(atomic_load(&c.inner), 8L * 5050);
    assert_int_equal(atomic_load(&c.bad), 0);

    /* Two outside threads sharing one pool are serialised, not mixed up. */
    atomic_store(&c.inner, 0);
    pthread_t a, b;
    pthread_create(&a, NULL, outside_caller, &c);
    pthread_create(&b, NULL, outside_caller, &c);
    pthread_join(a, NULL);
    pthread_join(b, NULL);
    assert_int_equal(atomic_load(&c.inner), 2L * 200 * 55);
    kiln_pool_free(c.p);
}

static void test_pool_threads_env(void **state)
{
    KilnPool *p;
    KilnDiag d = {0};
    unsetenv("KILN_NUM_THREADS");
    int cores = kiln_pool_default_threads();
    assert_true(cores >= 1);

    setenv("KILN_NUM_THREADS", "3", 1);
    capture_begin();
    assert_int_equal(kiln_pool_new(0, &p, &d), 0);
    char *err = capture_end();
    assert_string_equal(err, "");
    free(err);
    assert_int_equal(kiln_pool_size(p), 3);
    check_sum(p, 1000, true);
    kiln_pool_free(p);

    setenv("KILN_NUM_THREADS", "1", 1);
    assert_int_equal(kiln_pool_new(-1, &p, &d), 0);
    assert_int_equal(kiln_pool_size(p), 1);
    check_sum(p, 1000, true);
    kiln_pool_free(p);

    /* An explicit count wins over the environment. */
    assert_int_equal(kiln_pool_new(2, &p, &d), 0);
    assert_int_equal(kiln_pool_size(p), 2);
    kiln_pool_free(p);

    const char *bad[] = {"abc", "0", "-3", "100000", "", "4x", "2.5", "99999999999999999999"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        setenv("KILN_NUM_THREADS", bad[i], 1);
        capture_begin();
        int rc = kiln_pool_new(0, &p, &d);
        err = capture_end();
        assert_int_equal(rc, 0);
        assert_int_equal(kiln_pool_size(p), cores);
        assert_contains(err, "kiln: warning: ignoring KILN_NUM_THREADS=");
        char quoted[64];
        snprintf(quoted, sizeof quoted, "\"%s\"", bad[i]);
        assert_contains(err, quoted);
        assert_contains(err, "want an integer from 1 to 1024");
        free(err);
        kiln_pool_free(p);
    }
    unsetenv("KILN_NUM_THREADS");

    assert_int_equal(kiln_pool_new(KILN_MAX_THREADS + 1, &p, &d), KILN_EINPUT);
    assert_null(p);
    assert_contains(d.msg, "at most 1024");
}

/* ------------------------------------------------------------------ qgemm split */

#define QN_MAX 5000
static struct {
    pthread_mutex_t mu;
    int nchunks;
    int64_t n0[KILN_MAX_THREADS], n1[KILN_MAX_THREADS];
    void *scratch[KILN_MAX_THREADS];
    void *in_use[KILN_MAX_THREADS]; /* scratch buffers held by running calls */
    int shared_scratch;             /* calls that found their scratch already in use */
    size_t scratch_bytes;
    const void *wpack_seen;
} qlog = {.mu = PTHREAD_MUTEX_INITIALIZER};

static void scratch_claim(void *scratch, bool claim)
{
    pthread_mutex_lock(&qlog.mu);
    for (int i = 0; i < KILN_MAX_THREADS; i++) {
        if (claim && qlog.in_use[i] == scratch)
            qlog.shared_scratch++;
        if (!claim && qlog.in_use[i] == scratch) {
            qlog.in_use[i] = NULL;
            break;
        }
    }
    for (int i = 0; claim && i < KILN_MAX_THREADS; i++)
        if (!qlog.in_use[i]) {
            qlog.in_use[i] = scratch;
            break;
        }
    pthread_mutex_unlock(&qlog.mu);
}

/* A fake kernel: marks y[m, n] for its columns, fills its scratch and logs its
 * chunk. The test passes N through bias[0]. */
static void fake_kernel(const float *x, int64_t M, const void *wpack, const float *bias,
                        void *y, int64_t n0, int64_t n1, void *scratch)
{
    int64_t N = (int64_t)bias[0];
    int *out = y;
    if (scratch) {
        scratch_claim(scratch, true);
        memset(scratch, 0x5a, qlog.scratch_bytes); /* ASan/valgrind catch overruns */
    }
    for (int64_t m = 0; m < M; m++)
        for (int64_t n = n0; n < n1; n++)
            out[m * N + n] += 1 + (int)x[m];
    if (scratch) {
        usleep(100); /* widen the window in which a shared scratch would be seen */
        scratch_claim(scratch, false);
    }
    pthread_mutex_lock(&qlog.mu);
    if (qlog.nchunks < KILN_MAX_THREADS) {
        qlog.n0[qlog.nchunks] = n0;
        qlog.n1[qlog.nchunks] = n1;
        qlog.scratch[qlog.nchunks] = scratch;
    }
    qlog.nchunks++;
    qlog.wpack_seen = wpack;
    pthread_mutex_unlock(&qlog.mu);
}

static void check_split(KilnPool *p, int64_t M, int64_t N, int NR, size_t scratch)
{
    static int y[4 * QN_MAX];
    float x[4] = {0, 1, 2, 3};
    float bias[1] = {(float)N};
    int wpack = 7;
    memset(y, 0, sizeof y);
    qlog.nchunks = 0;
    qlog.shared_scratch = 0;
    qlog.scratch_bytes = scratch;
    KilnDiag d = {0};
    assert_int_equal(kiln_rt_qgemm(p, fake_kernel, M, N, NR, x, &wpack, bias, y, scratch, &d), 0);
    assert_ptr_equal(qlog.wpack_seen, &wpack);
    int64_t panels = (N + NR - 1) / NR;
    int threads = kiln_pool_size(p);
    assert_true(qlog.nchunks >= 1);
    assert_true(qlog.nchunks <= (threads < panels ? threads : panels));
    assert_int_equal(qlog.shared_scratch, 0);
    for (int64_t m = 0; m < M; m++)
        for (int64_t n = 0; n < N; n++)
            if (y[m * N + n] != 1 + (int)x[m])
                fail_msg("M=%lld N=%lld NR=%d threads=%d: y[%lld,%lld] written %d times",
                         (long long)M, (long long)N, NR, threads, (long long)m, (long long)n,
                         y[m * N + n] / (1 + (int)x[m]));
    for (int i = 0; i < qlog.nchunks; i++) {
        assert_true(qlog.n0[i] < qlog.n1[i]);
        assert_int_equal(qlog.n0[i] % NR, 0);
        if (qlog.n1[i] != N)
            assert_int_equal(qlog.n1[i] % NR, 0);
        if (scratch) {
            assert_non_null(qlog.scratch[i]);
            assert_int_equal((uintptr_t)qlog.scratch[i] % 64, 0);
        } else {
            assert_null(qlog.scratch[i]);
        }
    }
}

static void test_qgemm_split(void **state)
{
    int threads[] = {1, 2, 3, 4, 8};
    int64_t Ns[] = {1, 15, 16, 17, 33, 100, 1000, 4096, 4999};
    int NRs[] = {1, 8, 16, 64};
    for (size_t t = 0; t < sizeof threads / sizeof *threads; t++) {
        KilnPool *p;
        KilnDiag d = {0};
        assert_int_equal(kiln_pool_new(threads[t], &p, &d), 0);
        for (size_t i = 0; i < sizeof Ns / sizeof *Ns; i++)
            for (size_t r = 0; r < sizeof NRs / sizeof *NRs; r++) {
                check_split(p, 3, Ns[i], NRs[r], 0);
                check_split(p, 1, Ns[i], NRs[r], 100);
            }
        kiln_pool_free(p);
    }
    check_split(NULL, 4, 1000, 16, 64);
    assert_int_equal(qlog.nchunks, 1);
}

/* y of a real layer through kiln_layer_run on a pool of `threads`; prefill-sized M
 * is split by rows there (kiln_rt_qgemm_layout), decode-sized by columns. */
static size_t layer_y(const char *recipe, int threads, int64_t M, int64_t N, int64_t K,
                      const float *w, const float *x, void *y, char *kernel, size_t kn)
{
    kiln_options o = {.target = "avx2", .num_threads = threads};
    kiln_ctx *ctx = NULL;
    if (kiln_ctx_create(&o, &ctx)) {
        printf("SKIP: %s\n", kiln_error(NULL));
        skip();
    }
    kiln_recipe *r = NULL;
    if (kiln_recipe_open(ctx, recipe, &r))
        fail_msg("%s: %s", recipe, kiln_error(ctx));
    kiln_layer_desc desc = {.name = "model.layers.0.mlp.up_proj", .N = N, .K = K, .weight = w};
    kiln_layer *l = NULL;
    if (kiln_layer_create(ctx, r, &desc, &l))
        fail_msg("%s: %s", recipe, kiln_error(ctx));
    if (kiln_layer_run(l, x, M, y))
        fail_msg("%s: %s", recipe, kiln_error(ctx));
    snprintf(kernel, kn, "%s", kiln_layer_kernel(l));
    size_t osz = kiln_layer_out_dtype(l) == KILN_DTYPE_F32 ? 4 : 2;
    kiln_layer_destroy(l);
    kiln_recipe_close(r);
    kiln_ctx_destroy(ctx);
    return osz * (size_t)(M * N);
}

/* Splitting a prefill by rows must not change a bit of y, whatever the thread
 * count: chunks start on the kernel's row unit, so every row meets the same
 * register tile (float families sum in a tile-dependent order), and a per-tensor
 * dynamic activation scale, which spans all rows, keeps the column split. */
static void test_qgemm_rows_same_bits(void **state)
{
    (void)state;
    char tensor_dyn[64] = "/tmp/kiln-rows-XXXXXX.lua";
    int fd = mkstemps(tensor_dyn, 4);
    assert_true(fd >= 0);
    const char *src = "return recipe \"t\" { rule \"*\" { weights = int8, activations = "
                      "int8 { per = \"tensor\", dynamic = true } } }\n";
    assert_int_equal(write(fd, src, strlen(src)), (ssize_t)strlen(src));
    close(fd);
    const char *recipes[] = {KILN_SOURCE_DIR "/recipes/w4a8.lua",
                             KILN_SOURCE_DIR "/recipes/w8a8-int8-dynamic.lua",
                             KILN_SOURCE_DIR "/recipes/w4a16-g128-asym.lua",
                             KILN_SOURCE_DIR "/recipes/fp8-e4m3-dynamic.lua",
                             KILN_SOURCE_DIR "/recipes/f32.lua", tensor_dyn};
    const int64_t M = 350, N = 72, K = 256; /* 6 chunks of 59 rows but for the row unit */
    float *w = malloc(sizeof(float) * (size_t)(N * K)), *x = malloc(sizeof(float) * (size_t)(M * K));
    float *y1 = malloc(sizeof(float) * (size_t)(M * N)), *y3 = malloc(sizeof(float) * (size_t)(M * N));
    uint32_t s = 12345;
    for (int64_t i = 0; i < N * K; i++)
        w[i] = (float)((s = s * 1664525u + 1013904223u) >> 8) / 16777216.0f - 0.5f;
    for (int64_t i = 0; i < M * K; i++)
        x[i] = ((float)((s = s * 1664525u + 1013904223u) >> 8) / 16777216.0f - 0.5f) * (float)(1 + i % 7);
    for (size_t i = 0; i < sizeof recipes / sizeof *recipes; i++) {
        char k1[64], k3[64];
        memset(y1, 0, sizeof(float) * (size_t)(M * N));
        memset(y3, 0xAB, sizeof(float) * (size_t)(M * N));
        size_t n1 = layer_y(recipes[i], 1, M, N, K, w, x, y1, k1, sizeof k1);
        size_t n3 = layer_y(recipes[i], 3, M, N, K, w, x, y3, k3, sizeof k3);
        assert_string_equal(k1, k3);
        assert_int_equal(n1, n3);
        for (size_t j = 0; j < n1; j++)
            if (((const uint8_t *)y1)[j] != ((const uint8_t *)y3)[j])
                fail_msg("%s (%s): y byte %zu (row %lld) differs between 1 and 3 threads",
                         recipes[i], k1, j, (long long)(j / (n1 / (size_t)M)));
    }
    unlink(tensor_dyn);
    free(w), free(x), free(y1), free(y3);
}

static void test_qgemm_errors(void **state)
{
    KilnDiag d = {0};
    float x[1] = {0}, b[1] = {1};
    int y[4] = {0};
    assert_int_equal(kiln_rt_qgemm(NULL, NULL, 1, 1, 1, x, x, b, y, 0, &d), KILN_EINPUT);
    assert_contains(d.msg, "no kernel");
    assert_int_equal(kiln_rt_qgemm(NULL, fake_kernel, 1, 4, 0, x, x, b, y, 0, &d), KILN_EINPUT);
    assert_contains(d.msg, "NR=0");
    assert_int_equal(kiln_rt_qgemm(NULL, fake_kernel, -1, 4, 4, x, x, b, y, 0, &d), KILN_EINPUT);
    assert_int_equal(kiln_rt_qgemm(NULL, fake_kernel, 1, 4, 4, NULL, x, b, y, 0, &d),
                     KILN_EINPUT);
    assert_contains(d.msg, "must not be NULL");
    qlog.nchunks = 0;
    assert_int_equal(kiln_rt_qgemm(NULL, fake_kernel, 0, 4, 4, x, x, b, y, 0, &d), 0);
    assert_int_equal(kiln_rt_qgemm(NULL, fake_kernel, 4, 0, 4, x, x, b, y, 0, &d), 0);
    assert_int_equal(qlog.nchunks, 0);
}

/* ------------------------------------------------------------------ sha256 */

static void expect_sha(const void *data, size_t n, const char *hex)
{
    uint8_t dg[32];
    char got[65];
    kiln_sha256(data, n, dg);
    kiln_sha256_hex(dg, got);
    assert_string_equal(got, hex);
}

static void test_sha256(void **state)
{
    expect_sha("", 0, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    expect_sha("abc", 3, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    const char *m448 = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    expect_sha(m448, strlen(m448),
               "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    size_t n = 1000000;
    char *a = malloc(n);
    memset(a, 'a', n);
    expect_sha(a, n, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
    /* Streaming in odd pieces gives the same digest. */
    KilnSha256 s;
    uint8_t dg[32];
    char hex[65];
    kiln_sha256_init(&s);
    for (size_t off = 0, step = 1; off < n; off += step, step = step * 7 % 1013 + 1)
        kiln_sha256_update(&s, a + off, off + step <= n ? step : n - off);
    kiln_sha256_final(&s, dg);
    kiln_sha256_hex(dg, hex);
    assert_string_equal(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
    free(a);
    /* Lengths around the padding boundary (digests from Python's hashlib). */
    const char *digits = "0123456789012345678901234567890123456789012345678901234567890123";
    expect_sha(digits, 55, "f34d5a0f80c0cbf84c8c0b90218c22637abd199965249da736a20143c8c9c9d9");
    expect_sha(digits, 56, "83aa034bda83e458a0dc9cbce0d4e354716aa0ff770ed37ac0ed2b292052e4af");
    expect_sha(digits, 63, "074f6e9ac301d5d1b6df6f1dfb8c6f89c187ea945d352ce6a29279a9c630680b");
    expect_sha(digits, 64, "9674d9e078535b7cec43284387a6ee39956188e735a85452b0050b55341cda56");
}

#include "runtime/cache_tests.inc"
#include "runtime/json_tests.inc"
#include "runtime/aot_tests.inc"

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_alloc),
        cmocka_unit_test(test_alloc_weights),
        cmocka_unit_test(test_pool_sums),
        cmocka_unit_test(test_pool_serial_runs),
        cmocka_unit_test(test_pool_nested_and_concurrent),
        cmocka_unit_test(test_pool_threads_env),
        cmocka_unit_test(test_qgemm_split),
        cmocka_unit_test(test_qgemm_rows_same_bits),
        cmocka_unit_test(test_qgemm_errors),
        cmocka_unit_test(test_sha256),
        cmocka_unit_test(test_cache_roundtrip),
        cmocka_unit_test(test_cache_damaged),
        cmocka_unit_test(test_cache_key_mismatch),
        cmocka_unit_test(test_cache_concurrent_processes),
        cmocka_unit_test(test_cache_dir_choice),
        cmocka_unit_test(test_cache_stale_temps),
        cmocka_unit_test(test_json_valid),
        cmocka_unit_test(test_json_invalid),
        cmocka_unit_test(test_json_depth),
        cmocka_unit_test(test_json_writer),
        cmocka_unit_test(test_json_positions),
        cmocka_unit_test(test_json_fuzz),
        cmocka_unit_test(test_ffi_call),
        cmocka_unit_test(test_aot_load_and_call),
        cmocka_unit_test(test_aot_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
