/* bench/peers/peers_onednn.c — peer for bench/run_suite.sh: oneDNN matmul through its C
 * API (v2.x), y[M,N] = x[M,K]·W[N,K]ᵀ with weights reordered once into the layout
 * oneDNN picks (its own prepack, not timed): f32, u8×s8 int8 with per-channel output
 * scales (activations arrive already quantized: the peer does not pay kiln's dynamic
 * activation quantization), bf16 where this CPU has an implementation.
 * cc -O2 peers_onednn.c -ldnnl  (threads: OMP_NUM_THREADS, set by the script) */
#include <dnnl.h>

#include "peer_common.h"

typedef struct Ctx {
    dnnl_primitive_t prim;
    dnnl_stream_t stream;
    dnnl_exec_arg_t args[3];
} Ctx;

static int run(void *p)
{
    Ctx *c = p;
    return dnnl_primitive_execute(c->prim, c->stream, 3, c->args) != dnnl_success ||
           dnnl_stream_wait(c->stream) != dnnl_success;
}


static void fill(dnnl_memory_t m, size_t n, dnnl_data_type_t t, uint32_t seed)
{
    void *h = NULL;
    dnnl_memory_get_data_handle(m, &h);
    uint32_t s = seed * 2654435761u + 1;
    for (size_t i = 0; h && i < n; i++) {
        s = s * 1664525u + 1013904223u;
        unsigned v = s >> 24;
        if (t == dnnl_f32)
            ((float *)h)[i] = (float)v / 256.0f - 0.5f;
        else if (t == dnnl_bf16)
            ((uint16_t *)h)[i] = (uint16_t)(0x3c00 | (v & 0x7f)); /* small positive bf16 */
        else
            ((uint8_t *)h)[i] = (uint8_t)(t == dnnl_s8 ? (v % 255) - 127 : v);
    }
}

#define CHECK(x)                                                                        \
    do {                                                                                \
        if ((st = (x)) != dnnl_success)                                                 \
            goto fail;                                                                  \
    } while (0)

static void bench_one(const PeerArgs *a, dnnl_engine_t eng, dnnl_stream_t stream,
                      const char *name, const char *dtname, dnnl_data_type_t src_t,
                      dnnl_data_type_t wei_t)
{
    dnnl_status_t st;
    dnnl_memory_desc_t src_md, wplain_md, wany_md, dst_md;
    dnnl_dims_t sd = {a->M, a->K}, wd = {a->K, a->N}, dd = {a->M, a->N};
    dnnl_matmul_desc_t mmd;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_primitive_desc_t pd = NULL, rpd = NULL;
    dnnl_primitive_t prim = NULL, reorder = NULL;
    dnnl_memory_t src = NULL, wplain = NULL, wpacked = NULL, dst = NULL;
    float *scales = NULL;
    CHECK(dnnl_memory_desc_init_by_tag(&src_md, 2, sd, src_t, dnnl_ab));
    /* W [N,K] row-major is the [K,N] matrix in "ba" order. */
    CHECK(dnnl_memory_desc_init_by_tag(&wplain_md, 2, wd, wei_t, dnnl_ba));
    CHECK(dnnl_memory_desc_init_by_tag(&wany_md, 2, wd, wei_t, dnnl_format_tag_any));
    CHECK(dnnl_memory_desc_init_by_tag(&dst_md, 2, dd, dnnl_f32, dnnl_ab));
    CHECK(dnnl_matmul_desc_init(&mmd, &src_md, &wany_md, NULL, &dst_md));
    CHECK(dnnl_primitive_attr_create(&attr));
    if (wei_t == dnnl_s8) {
        scales = malloc(sizeof(float) * (size_t)a->N);
        for (long n = 0; scales && n < a->N; n++)
            scales[n] = 1e-4f * (float)(1 + n % 7);
        CHECK(dnnl_primitive_attr_set_output_scales(attr, a->N, 1 << 1, scales));
    }
    CHECK(dnnl_primitive_desc_create(&pd, &mmd, attr, eng, NULL));
    const dnnl_memory_desc_t *wmd = dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
    CHECK(dnnl_primitive_create(&prim, pd));
    CHECK(dnnl_memory_create(&src, &src_md, eng, DNNL_MEMORY_ALLOCATE));
    CHECK(dnnl_memory_create(&dst, &dst_md, eng, DNNL_MEMORY_ALLOCATE));
    CHECK(dnnl_memory_create(&wplain, &wplain_md, eng, DNNL_MEMORY_ALLOCATE));
    CHECK(dnnl_memory_create(&wpacked, wmd, eng, DNNL_MEMORY_ALLOCATE));
    fill(src, (size_t)(a->M * a->K), src_t, 1);
    fill(wplain, (size_t)(a->N * a->K), wei_t, 2);
    CHECK(dnnl_reorder_primitive_desc_create(&rpd, &wplain_md, eng, wmd, eng, NULL));
    CHECK(dnnl_primitive_create(&reorder, rpd));
    dnnl_exec_arg_t rargs[2] = {{DNNL_ARG_FROM, wplain}, {DNNL_ARG_TO, wpacked}};
    CHECK(dnnl_primitive_execute(reorder, stream, 2, rargs));
    CHECK(dnnl_stream_wait(stream));
    Ctx c = {prim, stream, {{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, wpacked}, {DNNL_ARG_DST, dst}}};
    peer_time(a, name, dtname, run, &c);
    goto done;
fail:
    printf("{\"peer\": \"%s\", \"dtype\": \"%s\", \"error\": \"oneDNN status %d%s\"}\n", name,
           dtname, (int)st, st == dnnl_unimplemented ? " (unimplemented on this CPU)" : "");
    fflush(stdout);
done:
    dnnl_primitive_desc_destroy(pd);
    dnnl_primitive_desc_destroy(rpd);
    dnnl_primitive_destroy(prim);
    dnnl_primitive_destroy(reorder);
    dnnl_memory_destroy(src);
    dnnl_memory_destroy(dst);
    dnnl_memory_destroy(wplain);
    dnnl_memory_destroy(wpacked);
    dnnl_primitive_attr_destroy(attr);
    free(scales);
}

int main(int argc, char **argv)
{
    PeerArgs a;
    if (peer_args(argc, argv, &a))
        return 2;
    dnnl_engine_t eng;
    dnnl_stream_t stream;
    if (dnnl_engine_create(&eng, dnnl_cpu, 0) != dnnl_success ||
        dnnl_stream_create(&stream, eng, dnnl_stream_default_flags) != dnnl_success) {
        printf("{\"peer\": \"onednn\", \"dtype\": \"-\", \"error\": \"no CPU engine\"}\n");
        return 0;
    }
    bench_one(&a, eng, stream, "onednn-f32", "f32", dnnl_f32, dnnl_f32);
    bench_one(&a, eng, stream, "onednn-u8s8", "int8", dnnl_u8, dnnl_s8);
    bench_one(&a, eng, stream, "onednn-bf16", "bf16", dnnl_bf16, dnnl_bf16);
    dnnl_stream_destroy(stream);
    dnnl_engine_destroy(eng);
    return 0;
}
