/* bench/peers/peers_openblas.c — peer for bench/run_suite.sh: OpenBLAS f32, y = x·Wᵀ
 * with W [N,K] row-major (a PyTorch Linear weight): sgemv for M = 1, sgemm otherwise.
 * cc -O2 peers_openblas.c -lopenblas */
#include <cblas.h>

#include "peer_common.h"

void openblas_set_num_threads(int);

typedef struct Ctx {
    const PeerArgs *a;
    float *x, *w, *y;
} Ctx;

static int run(void *p)
{
    Ctx *c = p;
    const PeerArgs *a = c->a;
    if (a->M == 1)
        cblas_sgemv(CblasRowMajor, CblasNoTrans, (int)a->N, (int)a->K, 1.0f, c->w, (int)a->K,
                    c->x, 1, 0.0f, c->y, 1);
    else
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)a->M, (int)a->N, (int)a->K,
                    1.0f, c->x, (int)a->K, c->w, (int)a->K, 0.0f, c->y, (int)a->N);
    return 0;
}

int main(int argc, char **argv)
{
    PeerArgs a;
    if (peer_args(argc, argv, &a))
        return 2;
    openblas_set_num_threads(a.threads);
    Ctx c = {&a, malloc(sizeof(float) * (size_t)(a.M * a.K)),
             malloc(sizeof(float) * (size_t)(a.N * a.K)), malloc(sizeof(float) * (size_t)(a.M * a.N))};
    if (!c.x || !c.w || !c.y) {
        printf("{\"peer\": \"openblas-sgemm\", \"dtype\": \"f32\", \"error\": \"out of memory\"}\n");
        return 0;
    }
    peer_fill(c.x, (size_t)(a.M * a.K), 1, 2.0f);
    peer_fill(c.w, (size_t)(a.N * a.K), 2, 0.03f);
    peer_time(&a, a.M == 1 ? "openblas-sgemv" : "openblas-sgemm", "f32", run, &c);
    free(c.x), free(c.w), free(c.y);
    return 0;
}
