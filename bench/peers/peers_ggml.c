/* bench/peers/peers_ggml.c — peer for bench/run_suite.sh: llama.cpp's ggml CPU backend,
 * y = ggml_mul_mat(W, x) with W [N,K] quantized from random data by ggml's own
 * quantize function: q4_0 (blocks of 32, one f16 scale; the peer of kiln's W4A8) and
 * q8_0 (the peer of W8A8). ggml quantizes the f32 activations to q8_0 inside the op,
 * in the timed region, as kiln's dynamic recipes do.
 *
 * The weight goes where llama.cpp puts it: into the first of the CPU backend's "extra"
 * buffer types that accepts this mul_mat (AMX where the CPU and the build have it, the
 * repacked q4_0 8x8 layout on AVX2 and up), else plain CPU memory; the JSON line names
 * the buffer type ("path") and the CPU features ggml was built for. Graph and compute
 * plan are made once; each run is one ggml_graph_compute on a threadpool made once
 * (ggml built with OpenMP, its default and the suite's build, runs the graph on
 * OpenMP's persistent team; without OpenMP on the threadpool's own threads).
 *
 * cc -O2 peers_ggml.c -I$G/include -L$G/lib -Wl,-rpath,$G/lib -lggml -lggml-base -lggml-cpu
 * (G = the directory bench/peers/build_ggml.sh prints) */
#include <ggml-alloc.h>
#include <ggml-backend.h>
#include <ggml-cpu.h>
#include <ggml.h>

#include "peer_common.h"

typedef struct Mul {
    struct ggml_context *ctx_w, *ctx_a, *ctx_g; /* the weight; x and y; the graph */
    ggml_backend_buffer_t buf_w, buf_a;
    struct ggml_tensor *w, *x, *y;
    struct ggml_cgraph *graph;
    struct ggml_threadpool *pool;
    struct ggml_cplan plan;
    const char *path; /* the weight's buffer type */
} Mul;

static int run(void *p)
{
    Mul *m = p;
    return ggml_graph_compute(m->graph, &m->plan) != GGML_STATUS_SUCCESS;
}

static struct ggml_context *new_ctx(size_t tensors, bool graph)
{
    struct ggml_init_params ip = {
        .mem_size = tensors * ggml_tensor_overhead() + (graph ? ggml_graph_overhead() : 0),
        .mem_buffer = NULL,
        .no_alloc = true,
    };
    return ggml_init(ip);
}

/* As llama.cpp chooses a weight's buffer type: the first extra type whose device
 * supports the op with the weight in it (asked with a zero-size buffer), else CPU. */
static ggml_backend_buffer_type_t pick_buft(Mul *m)
{
    ggml_backend_reg_t reg = ggml_backend_cpu_reg();
    ggml_backend_dev_t dev = ggml_backend_reg_dev_get(reg, 0);
    ggml_backend_dev_get_extra_bufts_t extra = (ggml_backend_dev_get_extra_bufts_t)
        ggml_backend_reg_get_proc_address(reg, "ggml_backend_dev_get_extra_bufts");
    for (ggml_backend_buffer_type_t *t = extra ? extra(dev) : NULL; t && *t; t++) {
        ggml_backend_buffer_t probe = ggml_backend_buft_alloc_buffer(*t, 0);
        m->w->buffer = probe;
        bool ok = ggml_backend_dev_supports_op(dev, m->y);
        m->w->buffer = NULL;
        ggml_backend_buffer_free(probe);
        if (ok)
            return *t;
    }
    return ggml_backend_cpu_buffer_type();
}

/* W quantized by ggml from uniform random floats (the scale does not matter). */
static int set_weight(const PeerArgs *a, Mul *m, enum ggml_type type)
{
    float *f = malloc(sizeof(float) * (size_t)(a->N * a->K));
    void *q = malloc(ggml_row_size(type, a->K) * (size_t)a->N);
    if (!f || !q) {
        free(f), free(q);
        return -1;
    }
    peer_fill(f, (size_t)(a->N * a->K), 2, 0.06f);
    ggml_quantize_chunk(type, f, q, 0, a->N, a->K, NULL);
    ggml_backend_tensor_set(m->w, q, 0, ggml_nbytes(m->w)); /* repacks where the buft does */
    free(f), free(q);
    return 0;
}

static int set_input(const PeerArgs *a, Mul *m)
{
    float *x = malloc(sizeof(float) * (size_t)(a->M * a->K));
    if (!x)
        return -1;
    peer_fill(x, (size_t)(a->M * a->K), 1, 2.0f);
    ggml_backend_tensor_set(m->x, x, 0, ggml_nbytes(m->x));
    free(x);
    return 0;
}

static const char *build(const PeerArgs *a, ggml_backend_t cpu, Mul *m, enum ggml_type type)
{
    if (a->K % ggml_blck_size(type))
        return "K is not a multiple of the block size";
    if (!(m->ctx_w = new_ctx(1, false)) || !(m->ctx_a = new_ctx(2, false)) ||
        !(m->ctx_g = new_ctx(0, true)))
        return "ggml_init failed";
    m->w = ggml_new_tensor_2d(m->ctx_w, type, a->K, a->N);
    m->x = ggml_new_tensor_2d(m->ctx_a, GGML_TYPE_F32, a->K, a->M);
    m->y = ggml_mul_mat(m->ctx_a, m->w, m->x);
    ggml_backend_buffer_type_t buft = pick_buft(m);
    m->path = ggml_backend_buft_name(buft);
    if (!(m->buf_w = ggml_backend_alloc_ctx_tensors_from_buft(m->ctx_w, buft)) ||
        !(m->buf_a = ggml_backend_alloc_ctx_tensors(m->ctx_a, cpu)))
        return "out of memory for the tensors";
    if (set_weight(a, m, type) || set_input(a, m))
        return "out of memory";
    m->graph = ggml_new_graph(m->ctx_g);
    ggml_build_forward_expand(m->graph, m->y);
    struct ggml_threadpool_params tp = ggml_threadpool_params_default(a->threads);
    if (!(m->pool = ggml_threadpool_new(&tp)))
        return "ggml_threadpool_new failed";
    m->plan = ggml_graph_plan(m->graph, a->threads, m->pool);
    if (m->plan.work_size && !(m->plan.work_data = malloc(m->plan.work_size)))
        return "out of memory for the work buffer";
    return NULL;
}

static void release(Mul *m)
{
    if (m->pool)
        ggml_threadpool_free(m->pool);
    free(m->plan.work_data);
    ggml_backend_buffer_free(m->buf_w);
    ggml_backend_buffer_free(m->buf_a);
    if (m->ctx_g)
        ggml_free(m->ctx_g);
    if (m->ctx_a)
        ggml_free(m->ctx_a);
    if (m->ctx_w)
        ggml_free(m->ctx_w);
}

/* The features ggml's CPU backend was built with and found, "AVX2 AVX512 ...". */
static void cpu_features(char *out, size_t n)
{
    ggml_backend_reg_t reg = ggml_backend_cpu_reg();
    ggml_backend_get_features_t get = (ggml_backend_get_features_t)
        ggml_backend_reg_get_proc_address(reg, "ggml_backend_get_features");
    size_t len = 0;
    out[0] = 0;
    for (struct ggml_backend_feature *f = get ? get(reg) : NULL; f && f->name; f++)
        if (strcmp(f->value, "0") && len + strlen(f->name) + 2 < n)
            len += (size_t)snprintf(out + len, n - len, "%s%s", len ? " " : "", f->name);
}

static void bench_type(const PeerArgs *a, ggml_backend_t cpu, enum ggml_type type,
                       const char *name, const char *features)
{
    Mul m = {0};
    const char *err = build(a, cpu, &m, type);
    if (err) {
        printf("{\"peer\": \"%s\", \"dtype\": \"%s\", \"error\": \"%s\"}\n", name,
               ggml_type_name(type), err);
        fflush(stdout);
    } else {
        char extra[512];
        snprintf(extra, sizeof extra, "\"path\": \"%s\", \"features\": \"%s\"", m.path, features);
        peer_time_ex(a, name, ggml_type_name(type), extra, run, &m);
    }
    release(&m);
}

int main(int argc, char **argv)
{
    PeerArgs a;
    if (peer_args(argc, argv, &a))
        return 2;
    ggml_backend_t cpu = ggml_backend_cpu_init();
    if (!cpu) {
        printf("{\"peer\": \"ggml\", \"dtype\": \"-\", \"error\": \"no CPU backend\"}\n");
        return 0;
    }
    char features[256];
    cpu_features(features, sizeof features);
    bench_type(&a, cpu, GGML_TYPE_Q4_0, "ggml-q4_0", features);
    bench_type(&a, cpu, GGML_TYPE_Q8_0, "ggml-q8_0", features);
    ggml_backend_free(cpu);
    return 0;
}
