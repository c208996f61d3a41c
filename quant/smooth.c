/* quant/smooth.c — SmoothQuant's migration factors (Xiao et al. 2022) and LLM.int8()'s
 * outlier columns (Dettmers et al. 2022): both read the per-column max |x| of an input. */
#include <math.h>

#include "internal.h"

void kiln_smooth_factors(const float *xabsmax, const float *const *W, const int64_t *N, int nl,
                         int64_t K, float alpha, float *s)
{
    for (int64_t k = 0; k < K; k++) {
        float wmax = 0;
        for (int l = 0; l < nl; l++)
            for (int64_t n = 0; n < N[l]; n++) {
                float a = fabsf(W[l][n * K + k]);
                wmax = a > wmax ? a : wmax;
            }
        float xa = xabsmax[k];
        if (!(xa > 0) || !isfinite(xa)) { /* never active: nothing to migrate */
            s[k] = 1.0f;
            continue;
        }
        double v = pow((double)xa, alpha) / pow(wmax > 1e-5f ? (double)wmax : 1e-5, 1.0 - alpha);
        s[k] = v > 1e-5 ? (float)v : 1e-5f;
    }
}

