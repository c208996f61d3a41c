/* docs/examples/api_example.c — the complete example of docs/api.md: load a recipe,
 * create a context, build two layers of an MLP (up: K -> H, down: H -> K) on random
 * weights, run them on a small batch, print outputs, kernel names and the error
 * against plain f32 arithmetic, and clean up.
 *
 *   usage: api_example [RECIPE]      (default recipes/w4a8.lua)
 *   build: cc api_example.c -I kiln/include ... (see docs/api.md, "Building")
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "kiln.h"

enum { M = 4, K = 256, H = 512 };

/* Uniform values in [-a, a) from a 64-bit LCG: any deterministic source will do. */
static void fill_random(float *x, size_t n, uint64_t seed, float a)
{
    for (size_t i = 0; i < n; i++) {
        seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
        x[i] = ((float)(seed >> 40) / (float)(1 << 24) * 2.0f - 1.0f) * a;
    }
}

/* y[m, n] = x[m, :] . w[n, :] — the unquantized reference. */
static void matmul_f32(const float *x, const float *w, float *y, int rows, int n_out, int k_in)
{
    for (int m = 0; m < rows; m++)
        for (int n = 0; n < n_out; n++) {
            double acc = 0;
            for (int k = 0; k < k_in; k++)
                acc += (double)x[m * k_in + k] * w[n * k_in + k];
            y[m * n_out + n] = (float)acc;
        }
}

int main(int argc, char **argv)
{
    const char *recipe_path = argc > 1 ? argv[1] : "recipes/w4a8.lua";
    int status = 1;
    kiln_ctx *ctx = NULL;
    kiln_recipe *recipe = NULL;
    kiln_layer *up = NULL, *down = NULL;
    float *w_up = malloc(sizeof(float) * H * K), *w_down = malloc(sizeof(float) * K * H);
    float x[M * K], h[M * H], y[M * K], h_ref[M * H], y_ref[M * K];
    if (!w_up || !w_down)
        goto out;

    /* 1. A context: target (NULL = this machine), kernel cache, thread pool. */
    kiln_options opts = {.target = NULL, .cache_dir = NULL, .num_threads = 0, .verbose = 0};
    if (kiln_ctx_create(&opts, &ctx) != KILN_STATUS_OK) {
        fprintf(stderr, "kiln_ctx_create: %s\n", kiln_error(NULL));
        goto out;
    }
    printf("target: %s\n", kiln_ctx_target(ctx));

    /* 2. The recipe says how each layer is quantized. */
    if (kiln_recipe_open(ctx, recipe_path, &recipe) != KILN_STATUS_OK) {
        fprintf(stderr, "kiln_recipe_open: %s\n", kiln_error(ctx));
        goto out;
    }

    /* 3. Two layers. Weights are [N, K] row-major f32, as in PyTorch's nn.Linear;
     *    kiln quantizes and prepacks them, so the buffers may be freed afterwards. */
    fill_random(w_up, (size_t)H * K, 1, 0.0625f);   /* ~ 1/sqrt(K) */
    fill_random(w_down, (size_t)K * H, 2, 0.0442f); /* ~ 1/sqrt(H) */
    kiln_layer_desc d_up = {.name = "model.layers.0.mlp.up_proj", .N = H, .K = K,
                            .weight = w_up};
    kiln_layer_desc d_down = {.name = "model.layers.0.mlp.down_proj", .N = K, .K = H,
                              .weight = w_down};
    if (kiln_layer_create(ctx, recipe, &d_up, &up) != KILN_STATUS_OK ||
        kiln_layer_create(ctx, recipe, &d_down, &down) != KILN_STATUS_OK) {
        fprintf(stderr, "kiln_layer_create: %s\n", kiln_error(ctx));
        goto out;
    }
    if (kiln_layer_out_dtype(up) != KILN_DTYPE_F32 || kiln_layer_out_dtype(down) != KILN_DTYPE_F32) {
        fprintf(stderr, "this example chains f32 outputs; the recipe asks for 16-bit ones\n");
        goto out;
    }
    printf("layer %s: kernel %s, %zu weight bytes\n", d_up.name, kiln_layer_kernel(up),
           kiln_layer_weight_bytes(up));
    printf("layer %s: kernel %s, %zu weight bytes\n", d_down.name, kiln_layer_kernel(down),
           kiln_layer_weight_bytes(down));

    /* 4. Run: x[M, K] -> h[M, H] -> y[M, K]. Any M works with the same layers. */
    fill_random(x, (size_t)M * K, 3, 1.0f);
    if (kiln_layer_run(up, x, M, h) != KILN_STATUS_OK ||
        kiln_layer_run(down, h, M, y) != KILN_STATUS_OK) {
        fprintf(stderr, "kiln_layer_run: %s\n", kiln_error(ctx));
        goto out;
    }
    printf("y[0, 0..3] = %.5f %.5f %.5f %.5f\n", y[0], y[1], y[2], y[3]);

    /* 5. How far is the quantized result from plain f32 arithmetic? */
    matmul_f32(x, w_up, h_ref, M, H, K);
    matmul_f32(h_ref, w_down, y_ref, M, K, H);
    double err = 0, ref = 0;
    for (int i = 0; i < M * K; i++) {
        err += (double)(y[i] - y_ref[i]) * (y[i] - y_ref[i]);
        ref += (double)y_ref[i] * y_ref[i];
    }
    printf("relative error vs f32: %.4f\n", sqrt(err / ref));
    status = 0;

out:
    /* 6. Clean up: layers, then the recipe, then the context (any may be NULL). */
    kiln_layer_destroy(up);
    kiln_layer_destroy(down);
    kiln_recipe_close(recipe);
    kiln_ctx_destroy(ctx);
    free(w_up);
    free(w_down);
    if (status == 0)
        printf("done\n");
    return status;
}
