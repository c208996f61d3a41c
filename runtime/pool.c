/* runtime/pool.c — aligned buffers, the thread pool, and splitting a qgemm kernel's
 * columns across the pool's threads. */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <sys/mman.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "runtime/runtime.h"

#define LINE 64

void *kiln_rt_alloc(size_t bytes)
{
    if (bytes > SIZE_MAX - LINE)
        return NULL;
    size_t n = (bytes + LINE - 1) / LINE * LINE;
    if (n == 0)
        n = LINE;
    void *p = NULL;
    if (posix_memalign(&p, LINE, n) != 0)
        return NULL;
    memset(p, 0, n);
    return p;
}

/* Weights are streamed once per decode step: on 4 KiB pages the hardware prefetchers
 * stop at every page boundary and a virtual machine pays a two-level page walk per
 * page, so large blobs ask for transparent huge pages (docs/jit-aot.md, "Weights in
 * memory"). Only the whole huge pages inside the blob are advised: rounding a blob up
 * to one would make the kernel fault in, and the memset touch, the rest of its last
 * huge page (a 2.4 MB f32 layer held 4 MiB, MiniLM's f32 row 50 MB for 28), so the
 * tail stays on 4 KiB pages. Best effort: where THP is off the kernel ignores it. */
#define HUGE_PAGE ((size_t)2 << 20)
#define SMALL_PAGE ((size_t)4096)
void *kiln_rt_alloc_weights(size_t bytes)
{
    const char *off = getenv("KILN_NO_HUGEPAGES");
    if (bytes < HUGE_PAGE || (off && *off && strcmp(off, "0") != 0))
        return kiln_rt_alloc(bytes);
    if (bytes > SIZE_MAX - HUGE_PAGE)
        return NULL;
    size_t n = (bytes + SMALL_PAGE - 1) / SMALL_PAGE * SMALL_PAGE;
    void *p = NULL;
    if (posix_memalign(&p, HUGE_PAGE, n) != 0)
        return NULL;
#ifdef MADV_HUGEPAGE
    /* before the first touch, so the faults take huge pages */
    madvise(p, bytes / HUGE_PAGE * HUGE_PAGE, MADV_HUGEPAGE);
#endif
    memset(p, 0, n);
    return p;
}

void kiln_rt_free(void *p) { free(p); }

/* ------------------------------------------------------------------ thread count */

static int online_cores(void)
{
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof set, &set) == 0) {
        int n = CPU_COUNT(&set);
        if (n > 0)
            return n > KILN_MAX_THREADS ? KILN_MAX_THREADS : n;
    }
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    if (n < 1)
        return 1;
    return n > KILN_MAX_THREADS ? KILN_MAX_THREADS : (int)n;
}

int kiln_pool_default_threads(void)
{
    int cores = online_cores();
    const char *env = getenv("KILN_NUM_THREADS");
    if (!env)
        return cores;
    char *end = NULL;
    errno = 0;
    long v = strtol(env, &end, 10);
    while (end && (*end == ' ' || *end == '\t' || *end == '\n'))
        end++;
    if (errno == 0 && end != env && *end == '\0' && v >= 1 && v <= KILN_MAX_THREADS)
        return (int)v;
    fprintf(stderr,
            "kiln: warning: ignoring KILN_NUM_THREADS=\"%s\" (want an integer from 1 to %d); "
            "using %d thread%s\n",
            env, KILN_MAX_THREADS, cores, cores == 1 ? "" : "s");
    return cores;
}

/* ------------------------------------------------------------------ pool */

/* Each worker's slot sits on its own cache line so that workers writing their own
 * state never invalidate each other's lines. */
typedef struct {
    _Alignas(LINE) pthread_t tid;
    struct KilnPool *pool;
    int index;
    bool started;
} Worker;
_Static_assert(sizeof(Worker) % LINE == 0, "worker slots must not share cache lines");

struct KilnPool {
    int n; /* threads including the caller */
    Worker *workers; /* n-1 of them, index 1..n-1 */

    pthread_mutex_t run_mu; /* one run at a time from outside threads */
    pthread_mutex_t mu;
    pthread_cond_t work_cv, done_cv;
    bool stop;

    /* The current job; written by the caller before gen is bumped. */
    KilnTaskFn fn;
    void *ctx;
    int ntasks, chunk;

    _Alignas(LINE) atomic_uint gen;   /* bumped once per run */
    _Alignas(LINE) atomic_int next;   /* next task to hand out */
    _Alignas(LINE) atomic_int active; /* workers still busy with this run */
};

/* The pool (and thread index) the current thread is executing tasks for, so a
 * nested kiln_pool_run on the same pool runs inline instead of deadlocking. */
static _Thread_local KilnPool *tls_pool;
static _Thread_local int tls_thread;

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static void drain(KilnPool *p, int thread)
{
    for (;;) {
        int t0 = atomic_fetch_add_explicit(&p->next, p->chunk, memory_order_relaxed);
        if (t0 >= p->ntasks)
            return;
        int t1 = t0 + p->chunk < p->ntasks ? t0 + p->chunk : p->ntasks;
        for (int t = t0; t < t1; t++)
            p->fn(p->ctx, t, thread);
    }
}

/* Spinning briefly catches back-to-back runs (one per layer) without a futex
 * round trip; after that workers sleep so an idle pool costs nothing. Past the
 * first few iterations the spin yields, so that on a loaded (oversubscribed)
 * machine a waiting thread hands its core to the thread it is waiting for. */
#define SPIN_ITERS 1200
#define SPIN_PAUSES 1000

static inline void backoff(int i)
{
    if (i < SPIN_PAUSES)
        cpu_relax();
    else
        sched_yield();
}

static void *worker_main(void *arg)
{
    Worker *w = arg;
    KilnPool *p = w->pool;
    tls_pool = p;
    tls_thread = w->index;
    unsigned seen = 0;
    for (;;) {
        unsigned g = seen;
        for (int i = 0; i < SPIN_ITERS; i++) {
            g = atomic_load_explicit(&p->gen, memory_order_acquire);
            if (g != seen)
                break;
            backoff(i);
        }
        if (g == seen) {
            pthread_mutex_lock(&p->mu);
            while ((g = atomic_load_explicit(&p->gen, memory_order_acquire)) == seen && !p->stop)
                pthread_cond_wait(&p->work_cv, &p->mu);
            bool stop = p->stop;
            pthread_mutex_unlock(&p->mu);
            if (stop)
                return NULL;
        }
        seen = g;
        drain(p, w->index);
        if (atomic_fetch_sub_explicit(&p->active, 1, memory_order_acq_rel) == 1) {
            pthread_mutex_lock(&p->mu);
            pthread_cond_signal(&p->done_cv);
            pthread_mutex_unlock(&p->mu);
        }
    }
}

int kiln_pool_new(int nthreads, KilnPool **out, KilnDiag *d)
{
    *out = NULL;
    if (nthreads > KILN_MAX_THREADS)
        return kiln_diag_set(d, KILN_EINPUT, "thread pool of %d threads: at most %d allowed",
                             nthreads, KILN_MAX_THREADS);
    int n = nthreads > 0 ? nthreads : kiln_pool_default_threads();
    KilnPool *p = NULL;
    if (posix_memalign((void **)&p, LINE, sizeof *p) != 0)
        return kiln_diag_set(d, KILN_EINTERNAL, "out of memory creating a thread pool");
    memset(p, 0, sizeof *p);
    p->n = n;
    pthread_mutex_init(&p->run_mu, NULL);
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->work_cv, NULL);
    pthread_cond_init(&p->done_cv, NULL);
    atomic_init(&p->gen, 0);
    atomic_init(&p->next, 0);
    atomic_init(&p->active, 0);
    if (n > 1) {
        p->workers = kiln_rt_alloc(sizeof(Worker) * (size_t)(n - 1));
        if (!p->workers) {
            kiln_pool_free(p);
            return kiln_diag_set(d, KILN_EINTERNAL, "out of memory creating a thread pool");
        }
        for (int i = 0; i < n - 1; i++) {
            Worker *w = &p->workers[i];
            w->pool = p;
            w->index = i + 1;
            int rc = pthread_create(&w->tid, NULL, worker_main, w);
            if (rc != 0) {
                kiln_pool_free(p);
                return kiln_diag_set(d, KILN_EINTERNAL, "cannot start thread %d of %d: %s",
                                     i + 1, n, strerror(rc));
            }
            w->started = true;
        }
    }
    *out = p;
    return 0;
}

int kiln_pool_size(const KilnPool *p) { return p ? p->n : 1; }

static void run_serial(int ntasks, KilnTaskFn fn, void *ctx, int thread)
{
    for (int t = 0; t < ntasks; t++)
        fn(ctx, t, thread);
}

void kiln_pool_run(KilnPool *p, int ntasks, KilnTaskFn fn, void *ctx)
{
    if (ntasks <= 0 || !fn)
        return;
    if (!p) {
        run_serial(ntasks, fn, ctx, 0);
        return;
    }
    if (tls_pool == p) {
        run_serial(ntasks, fn, ctx, tls_thread);
        return;
    }
    KilnPool *saved_pool = tls_pool;
    int saved_thread = tls_thread;
    tls_pool = p;
    tls_thread = 0;
    if (p->n == 1 || ntasks == 1) {
        run_serial(ntasks, fn, ctx, 0);
    } else {
        pthread_mutex_lock(&p->run_mu);
        p->fn = fn;
        p->ctx = ctx;
        p->ntasks = ntasks;
        /* Several tasks per grab keeps the shared counter cool for tiny tasks while
         * leaving ~16 grabs per thread for load balance. */
        int chunk = ntasks / (p->n * 16);
        p->chunk = chunk < 1 ? 1 : chunk;
        atomic_store_explicit(&p->next, 0, memory_order_relaxed);
        atomic_store_explicit(&p->active, p->n - 1, memory_order_relaxed);
        pthread_mutex_lock(&p->mu);
        atomic_fetch_add_explicit(&p->gen, 1, memory_order_release);
        pthread_cond_broadcast(&p->work_cv);
        pthread_mutex_unlock(&p->mu);

        drain(p, 0);

        for (int i = 0; i < SPIN_ITERS; i++) {
            if (atomic_load_explicit(&p->active, memory_order_acquire) == 0)
                break;
            backoff(i);
        }
        if (atomic_load_explicit(&p->active, memory_order_acquire) != 0) {
            pthread_mutex_lock(&p->mu);
            while (atomic_load_explicit(&p->active, memory_order_acquire) != 0)
                pthread_cond_wait(&p->done_cv, &p->mu);
            pthread_mutex_unlock(&p->mu);
        }
        pthread_mutex_unlock(&p->run_mu);
    }
    tls_pool = saved_pool;
    tls_thread = saved_thread;
}

void kiln_pool_free(KilnPool *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    p->stop = true;
    pthread_cond_broadcast(&p->work_cv);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; p->workers && i < p->n - 1; i++)
        if (p->workers[i].started)
            pthread_join(p->workers[i].tid, NULL);
    kiln_rt_free(p->workers);
    pthread_cond_destroy(&p->work_cv);
    pthread_cond_destroy(&p->done_cv);
    pthread_mutex_destroy(&p->mu);
    pthread_mutex_destroy(&p->run_mu);
    free(p);
}

/* ------------------------------------------------------------------ qgemm split */

/* One qgemm over the pool: task t covers columns [t*cols, ...) of all M rows, or,
 * with rows > 0, rows [t*rows, ...) of all N columns (x and y offset to them). */
typedef struct {
    KilnQGemmFn fn;
    const float *x;
    int64_t M, N, K, cols_per_chunk, rows_per_chunk;
    const void *wpack;
    const float *bias;
    char *y;
    size_t y_row_bytes;
    char *scratch;
    size_t scratch_stride;
} QGemmJob;

static void qgemm_task(void *ctx, int task, int thread)
{
    QGemmJob *j = ctx;
    void *scratch = j->scratch ? j->scratch + (size_t)thread * j->scratch_stride : NULL;
    if (j->rows_per_chunk) {
        int64_t m0 = (int64_t)task * j->rows_per_chunk;
        int64_t m1 = m0 + j->rows_per_chunk < j->M ? m0 + j->rows_per_chunk : j->M;
        j->fn(j->x + m0 * j->K, m1 - m0, j->wpack, j->bias, j->y + (size_t)m0 * j->y_row_bytes,
              0, j->N, scratch);
        return;
    }
    int64_t n0 = (int64_t)task * j->cols_per_chunk;
    int64_t n1 = n0 + j->cols_per_chunk < j->N ? n0 + j->cols_per_chunk : j->N;
    j->fn(j->x, j->M, j->wpack, j->bias, j->y, n0, n1, scratch);
}

/* Each pool thread's own 64-byte aligned slice of `bytes` (none for 0). */
static int job_scratch(QGemmJob *j, KilnPool *p, size_t bytes, KilnDiag *d)
{
    if (bytes == 0)
        return 0;
    size_t stride = (bytes + LINE - 1) / LINE * LINE;
    int ps = kiln_pool_size(p);
    if (stride < bytes || stride > SIZE_MAX / (size_t)ps)
        return kiln_diag_set(d, KILN_EINPUT, "kiln_rt_qgemm: scratch of %zu bytes is too large",
                             bytes);
    void *s = NULL;
    if (posix_memalign(&s, LINE, stride * (size_t)ps) != 0)
        return kiln_diag_set(d, KILN_EINTERNAL,
                             "kiln_rt_qgemm: out of memory for %d x %zu bytes of scratch", ps,
                             stride);
    j->scratch = s;
    j->scratch_stride = stride;
    return 0;
}

int kiln_rt_qgemm(KilnPool *p, KilnQGemmFn fn, int64_t M, int64_t N, int NR, const float *x,
                  const void *wpack, const float *bias, void *y,
                  size_t scratch_bytes_per_thread, KilnDiag *d)
{
    if (!fn)
        return kiln_diag_set(d, KILN_EINPUT, "kiln_rt_qgemm: no kernel function");
    if (M < 0 || N < 0 || NR < 1)
        return kiln_diag_set(d, KILN_EINPUT,
                             "kiln_rt_qgemm: bad shape M=%lld N=%lld NR=%d (want M, N >= 0, "
                             "NR >= 1)",
                             (long long)M, (long long)N, NR);
    if (M == 0 || N == 0)
        return 0;
    if (!x || !wpack || !y)
        return kiln_diag_set(d, KILN_EINPUT, "kiln_rt_qgemm: x, wpack and y must not be NULL");
    int nthreads = kiln_pool_size(p);
    /* A nested call from one of p's tasks runs serially on that task's thread. */
    if (tls_pool == p && p)
        nthreads = 1;
    int64_t panels = (N + NR - 1) / NR;
    /* One chunk per thread: each call re-quantizes the activations into its
     * scratch, so more chunks than threads would repeat that work. */
    int64_t nchunks = panels < nthreads ? panels : nthreads;
    int64_t panels_per_chunk = (panels + nchunks - 1) / nchunks;
    nchunks = (panels + panels_per_chunk - 1) / panels_per_chunk;

    QGemmJob j = {.fn = fn, .x = x, .M = M, .N = N, .cols_per_chunk = panels_per_chunk * NR,
                  .wpack = wpack, .bias = bias, .y = y};
    if (job_scratch(&j, p, scratch_bytes_per_thread, d))
        return d->code;
    if (nchunks == 1 || nthreads == 1) {
        int thread = (p && tls_pool == p) ? tls_thread : 0;
        for (int64_t t = 0; t < nchunks; t++)
            qgemm_task(&j, (int)t, thread);
    } else {
        kiln_pool_run(p, (int)nchunks, qgemm_task, &j);
    }
    free(j.scratch);
    return 0;
}

#define MIN_ROWS_PER_CHUNK 48

int kiln_rt_qgemm_layout(KilnPool *p, const KilnLayout *l, KilnQGemmFn fn, int64_t M,
                         const float *x, const void *wpack, const float *bias, void *y,
                         KilnDiag *d)
{
    int nthreads = (p && tls_pool == p) ? 1 : kiln_pool_size(p);
    int unit = kiln_layout_row_unit(l);
    if (nthreads == 1 || unit <= 0 || M < 2 * MIN_ROWS_PER_CHUNK || !fn || !x || !wpack || !y)
        return kiln_rt_qgemm(p, fn, M, l->N, l->NR, x, wpack, bias, y,
                             kiln_layout_scratch_bytes(l, M), d);
    /* about two chunks per thread, for balance on a shared machine, each at least
     * MIN_ROWS_PER_CHUNK rows (every chunk streams the whole weight); AMX tiles: one
     * chunk per thread, as every chunk streams (and for int4 unpacks) every panel
     * again at a rate the tiles outrun (docs/targets.md) */
    int per = l->tiles ? 1 : 2;
    int64_t rows = (M + per * nthreads - 1) / (per * nthreads);
    rows = rows < MIN_ROWS_PER_CHUNK ? MIN_ROWS_PER_CHUNK : rows;
    rows = (rows + unit - 1) / unit * unit;
    int64_t nchunks = (M + rows - 1) / rows;
    QGemmJob j = {.fn = fn, .x = x, .M = M, .N = l->N, .K = l->K, .rows_per_chunk = rows,
                  .wpack = wpack, .bias = bias, .y = y,
                  .y_row_bytes = (l->out_dt == KILN_F32 ? 4 : 2) * (size_t)l->N};
    if (job_scratch(&j, p, kiln_layout_scratch_bytes(l, rows), d))
        return d->code;
    kiln_pool_run(p, (int)nchunks, qgemm_task, &j);
    free(j.scratch);
    return 0;
}
