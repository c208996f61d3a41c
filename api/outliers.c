/* api/outliers.c — CPU layers with outliers = {...} (their columns are picked by the
 * planner, api/plan.c): at run time zero them in x, run the int8 kernel (f32 out) and
 * finish with the columns' f32 part and the epilogue (ir/outliers.h), all on the
 * context's pool. */
#include <stdlib.h>
#include <string.h>

#include "api/outliers.h"
#include "ir/layout.h"

void kiln_api_outlier_free(KilnOutlierPart *p)
{
    if (!p)
        return;
    free(p->idx);
    free(p->woT);
    free(p->bias);
    free(p);
}

int kiln_api_outlier_part(const KilnFunc *f, const kiln_layer_desc *desc, KilnOutlierPart **out,
                          KilnDiag *d)
{
    *out = NULL;
    const KilnInst *g = kiln_find_qgemm(f);
    const KilnAttr *o = g ? kiln_get(g, "outliers") : NULL;
    if (!o || o->kind != KILN_ATTR_INTS || o->nints <= 0)
        return 0;
    int64_t N = desc->N, K = desc->K, n = o->nints;
    KilnOutlierPart *p = calloc(1, sizeof *p);
    bool bias = kiln_qgemm_bias(g) >= 0;
    if (p) {
        p->idx = malloc(sizeof(int64_t) * (size_t)n);
        p->woT = malloc(sizeof(float) * (size_t)(n * N));
        p->bias = bias ? calloc((size_t)N, sizeof(float)) : NULL; /* no desc bias: zeros */
    }
    if (!p || !p->idx || !p->woT || (bias && !p->bias)) {
        kiln_api_outlier_free(p);
        return kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
    }
    memcpy(p->idx, o->ints, sizeof(int64_t) * (size_t)n);
    kiln_outlier_gather_wt(desc->weight, N, K, p->idx, n, p->woT);
    if (bias && desc->bias)
        memcpy(p->bias, desc->bias, sizeof(float) * (size_t)N);
    const KilnAttr *ea = kiln_get(g, "epilogue");
    KilnEpilogue act = ea && ea->s && !strcmp(ea->s, "silu")   ? KILN_EPI_SILU
                       : ea && ea->s && !strcmp(ea->s, "gelu") ? KILN_EPI_GELU
                                                               : KILN_EPI_NONE;
    p->epi = (KilnOutlierEpi){.N = N, .K = K, .n = n, .idx = p->idx, .woT = p->woT,
                              .bias = p->bias, .act = act,
                              .out_dt = f->values[g->result].type.dt};
    *out = p;
    return 0;
}

typedef struct {
    const KilnOutlierEpi *e;
    const float *x, *acc;
    float *scratch; /* N floats per pool thread */
    void *y;
    int64_t M, rows; /* rows per task */
} FinishJob;

static void finish_task(void *ctx, int t, int thread)
{
    FinishJob *j = ctx;
    int64_t m0 = t * j->rows, m1 = m0 + j->rows < j->M ? m0 + j->rows : j->M;
    kiln_outlier_finish(j->e, j->x, j->acc, j->y, m0, m1, j->scratch + (size_t)thread * j->e->N);
}

int kiln_api_outlier_run(KilnPool *pool, const KilnOutlierPart *p, KilnQGemmFn fn,
                         const KilnLayout *L, const void *wpack, const float *x, int64_t M,
                         void *y, KilnDiag *d)
{
    const KilnOutlierEpi *e = &p->epi;
    int nt = kiln_pool_size(pool);
    float *xz = malloc(sizeof(float) * (size_t)(M * e->K));
    float *acc = malloc(sizeof(float) * (size_t)(M * e->N));
    float *scratch = malloc(sizeof(float) * (size_t)nt * (size_t)e->N);
    int rc = 0;
    if (!xz || !acc || !scratch) {
        rc = kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
    } else {
        /* the copy is memory-bound and small next to the GEMM: not worth a pool hand-off */
        kiln_outlier_zero_cols(x, e->K, e->idx, e->n, 0, M, xz);
        rc = kiln_rt_qgemm(pool, fn, M, L->N, L->NR, xz, wpack, NULL, acc,
                           kiln_layout_scratch_bytes(L, M), d);
    }
    if (!rc) {
        /* the f32 columns and epilogue: about M·N·(n + 3) flops, split by rows when that
         * is worth waking the pool for */
        bool par = (double)M * (double)e->N * (double)(e->n + 3) > (double)(1 << 20) && M > 1;
        int64_t ntasks = par ? (M < 4 * (int64_t)nt ? M : 4 * (int64_t)nt) : 1;
        FinishJob j = {.e = e, .x = x, .acc = acc, .scratch = scratch, .y = y, .M = M,
                       .rows = (M + ntasks - 1) / ntasks};
        ntasks = (M + j.rows - 1) / j.rows;
        if (par)
            kiln_pool_run(pool, (int)ntasks, finish_task, &j);
        else
            finish_task(&j, 0, 0);
    }
    free(xz);
    free(acc);
    free(scratch);
    return rc;
}
