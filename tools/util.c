/* tools/util.c — argument parsing and deterministic random data for the `kiln` command. */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "frontend/recipe.h"
#include "runtime/progress.h"
#include "tool.h"

void tool_error(const KilnDiag *d)
{
    char buf[1400];
    fprintf(stderr, "kiln: %s\n", kiln_diag_format(d, buf, sizeof buf));
}

static int parse_i64(const char *s, int64_t *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v <= 0 || v > (1LL << 31))
        return -1;
    *out = v;
    return 0;
}

int tool_parse_shape(const char *s, int64_t *M, int64_t *N, int64_t *K)
{
    char buf[128];
    if (strlen(s) >= sizeof buf)
        return -1;
    strcpy(buf, s);
    char *parts[3];
    int n = 0;
    for (char *tok = strtok(buf, ",x"); tok && n < 4; tok = strtok(NULL, ",x"))
        parts[n < 3 ? n : 2] = tok, n++;
    if (n != 3)
        return -1;
    return parse_i64(parts[0], M) || parse_i64(parts[1], N) || parse_i64(parts[2], K) ? -1 : 0;
}

int tool_parse_args(int argc, char **argv, int first, ToolArgs *a)
{
    a->seed = 1;
    for (int i = first; i < argc; i++) {
        const char *s = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define NEEDV                                                          \
    do {                                                               \
        if (!v) {                                                      \
            fprintf(stderr, "kiln: option %s needs a value\n", s);     \
            return EXIT_INPUT;                                         \
        }                                                              \
        i++;                                                           \
    } while (0)
        if (!strcmp(s, "--layer")) {
            NEEDV;
            a->layer = v;
        } else if (!strcmp(s, "--target")) {
            NEEDV;
            a->target = v;
        } else if (!strcmp(s, "--shape")) {
            NEEDV;
            if (tool_parse_shape(v, &a->M, &a->N, &a->K)) {
                fprintf(stderr, "kiln: bad --shape '%s': expected M,N,K (positive integers)\n", v);
                return EXIT_INPUT;
            }
            a->have_shape = true;
        } else if (!strcmp(s, "--shapes")) {
            NEEDV;
            a->shapes_file = v;
        } else if (!strcmp(s, "--seed")) {
            NEEDV;
            char *end;
            errno = 0;
            a->seed = strtoull(v, &end, 10);
            if (errno || *end || end == v) {
                fprintf(stderr, "kiln: bad --seed '%s'\n", v);
                return EXIT_INPUT;
            }
        } else if (!strcmp(s, "-o")) {
            NEEDV;
            a->out_dir = v;
        } else if (!strcmp(s, "--model")) {
            NEEDV;
            a->model = v;
        } else if (!strcmp(s, "--text")) {
            NEEDV;
            a->text = v;
        } else if (!strcmp(s, "--tokens") || !strcmp(s, "--sentences") ||
                   !strcmp(s, "--window") || !strcmp(s, "--stride")) {
            NEEDV;
            int64_t *dst = s[2] == 't' ? &a->tokens : s[3] == 'e' ? &a->sentences
                           : s[2] == 'w' ? &a->window : &a->stride;
            if (parse_i64(v, dst)) {
                fprintf(stderr, "kiln: bad %s '%s': expected a positive integer\n", s, v);
                return EXIT_INPUT;
            }
        } else if (!strcmp(s, "--threads") || !strcmp(s, "--repeat") ||
                   !strcmp(s, "--probe-ms")) {
            NEEDV;
            int64_t *dst = s[2] == 't' ? &a->threads : s[2] == 'r' ? &a->repeat : &a->probe_ms;
            if (parse_i64(v, dst)) {
                fprintf(stderr, "kiln: bad %s '%s': expected a positive integer\n", s, v);
                return EXIT_INPUT;
            }
        } else if (!strcmp(s, "--warmup")) {
            NEEDV;
            a->have_warmup = true;
            if (strcmp(v, "0") && parse_i64(v, &a->warmup)) {
                fprintf(stderr, "kiln: bad --warmup '%s': expected an integer >= 0\n", v);
                return EXIT_INPUT;
            }
        } else if (!strcmp(s, "--cold")) {
            a->cold = true;
        } else if (!strcmp(s, "--per-layer")) {
            a->per_layer = true;
        } else if (!strcmp(s, "--dequant")) {
            a->dequant = true;
        } else if (!strcmp(s, "--check")) {
            a->check = true;
        } else if (!strcmp(s, "--verbose") || !strcmp(s, "-v")) {
            a->verbose = true;
        } else if (!strcmp(s, "--print-after-all")) {
            a->print_after_all = true;
        } else if (!strcmp(s, "--json")) {
            a->json = true;
        } else if (!strcmp(s, "--quiet") || !strcmp(s, "-q")) {
            a->quiet = true;
        } else if (s[0] == '-') {
            fprintf(stderr, "kiln: unknown option '%s' (run 'kiln help')\n", s);
            return EXIT_INPUT;
        } else if (!a->recipe) {
            a->recipe = s;
        } else {
            fprintf(stderr, "kiln: unexpected argument '%s'\n", s);
            return EXIT_INPUT;
        }
#undef NEEDV
    }
    return EXIT_OK;
}

uint64_t tool_hash(const char *s)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

static uint64_t splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

void tool_fill_normal(float *x, int64_t n, uint64_t seed, const char *name, float sigma)
{
    uint64_t s = seed * 0x2545F4914F6CDD1DULL ^ tool_hash(name);
    for (int64_t i = 0; i < n; i += 2) {
        double u1 = ((splitmix(&s) >> 11) + 1) * 0x1.0p-53, u2 = (splitmix(&s) >> 11) * 0x1.0p-53;
        double r = sqrt(-2 * log(u1)) * sigma;
        x[i] = (float)(r * cos(2 * M_PI * u2));
        if (i + 1 < n)
            x[i + 1] = (float)(r * sin(2 * M_PI * u2));
    }
}

float tool_weight_sigma(int64_t K)
{
    return (float)(1.0 / sqrt((double)K));
}

int tool_layer_data(uint64_t seed, const char *layer, int64_t N, int64_t K, float **w, float **b)
{
    char name[600];
    *w = malloc(sizeof(float) * (size_t)(N * K));
    *b = malloc(sizeof(float) * (size_t)N);
    if (!*w || !*b) {
        free(*w);
        free(*b);
        *w = *b = NULL;
        return -1;
    }
    snprintf(name, sizeof name, "%s.weight", layer);
    tool_fill_normal(*w, N * K, seed, name, tool_weight_sigma(K));
    snprintf(name, sizeof name, "%s.bias", layer);
    tool_fill_normal(*b, N, seed, name, TOOL_BIAS_SIGMA);
    return 0;
}

void tool_layer_outliers(uint64_t seed, const KilnRecipe *r, const char *layer, float *x,
                         int64_t rows, int64_t K)
{
    float frac;
    if (!kiln_recipe_outliers(r, layer, NULL, &frac))
        return;
    int64_t cap = (int64_t)floor((double)frac * (double)K), n = K / 128 > 1 ? K / 128 : 1;
    n = n < cap ? n : cap;
    if (n <= 0)
        return;
    int64_t step = K / n;
    uint64_t s = seed ^ 0x0A71E25ULL;
    int64_t first = (int64_t)(splitmix(&s) % (uint64_t)step);
    for (int64_t i = 0; i < rows; i++)
        for (int64_t j = 0; j < n; j++)
            x[i * K + first + j * step] *= TOOL_OUTLIER_GAIN;
}

float *tool_layer_calib(uint64_t seed, const KilnRecipe *r, const char *layer, int64_t rows,
                        int64_t K)
{
    float *x = tool_calib_batch(seed, rows, K);
    if (x)
        tool_layer_outliers(seed, r, layer, x, rows, K);
    return x;
}

float *tool_calib_batch(uint64_t seed, int64_t rows, int64_t K)
{
    float *x = malloc(sizeof(float) * (size_t)(rows * K));
    if (x)
        tool_fill_normal(x, rows * K, seed + 1000, "x", 1.0f);
    return x;
}

void tool_print_counts(void)
{
    int64_t parses, lowerings;
    kiln_frontend_counts(&parses, &lowerings);
    fprintf(stderr, "kiln: %lld recipe parse%s, %lld layer lowering%s\n", (long long)parses,
            parses == 1 ? "" : "s", (long long)lowerings, lowerings == 1 ? "" : "s");
}

struct KilnProgress *tool_progress(const ToolArgs *a)
{
    return kiln_progress_new(a->json    ? KILN_PROGRESS_JSON
                             : a->quiet ? KILN_PROGRESS_QUIET
                                        : KILN_PROGRESS_AUTO,
                             stderr);
}
