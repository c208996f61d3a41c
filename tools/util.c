/* tools/util.c — argument parsing and deterministic random data for the `kiln` command. */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stddef.h>
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

/* Decimal digits only (no sign, space or base prefix: strtoull would take " -1" as
 * 2^64-1) up to the first byte in `stop`; -1 on no digits or past max. */
static int parse_digits(const char *s, const char *stop, uint64_t max, uint64_t *out,
                        const char **end)
{
    uint64_t v = 0;
    const char *p = s;
    for (; *p && !strchr(stop, *p); p++) {
        if (*p < '0' || *p > '9' || v > (max - (uint64_t)(*p - '0')) / 10)
            return -1;
        v = v * 10 + (uint64_t)(*p - '0');
    }
    if (p == s)
        return -1;
    *out = v;
    *end = p;
    return 0;
}

int tool_parse_int(const char *opt, const char *v, int64_t lo, int64_t hi, int64_t *out)
{
    uint64_t u;
    const char *end;
    if (parse_digits(v, "", (uint64_t)hi, &u, &end) || (int64_t)u < lo) {
        fprintf(stderr, "kiln: bad %s '%s': expected an integer from %lld to %lld\n", opt, v,
                (long long)lo, (long long)hi);
        return EXIT_INPUT;
    }
    *out = (int64_t)u;
    return EXIT_OK;
}

int tool_parse_double(const char *opt, const char *v, double lo, double hi, double *out)
{
    char *end = NULL;
    errno = 0;
    double x = (*v >= '0' && *v <= '9') || *v == '.' ? strtod(v, &end) : NAN;
    if (!end || *end || errno || !isfinite(x) || x < lo || x > hi) {
        fprintf(stderr, "kiln: bad %s '%s': expected a number from %g to %g\n", opt, v, lo, hi);
        return EXIT_INPUT;
    }
    *out = x;
    return EXIT_OK;
}

int tool_parse_shape(const char *s, int64_t *M, int64_t *N, int64_t *K)
{
    int64_t *dim[3] = {M, N, K};
    for (int i = 0; i < 3; i++) {
        uint64_t u;
        const char *end;
        if (parse_digits(s, ",x", TOOL_MAX_DIM, &u, &end) || u == 0 ||
            (i < 2 ? (*end != ',' && *end != 'x') : *end != '\0'))
            return -1;
        *dim[i] = (int64_t)u;
        s = end + (i < 2);
    }
    return 0;
}

int tool_check_shape(const char *where, int64_t M, int64_t N, int64_t K, bool data)
{
    const char *names[4] = {"M·K (the inputs)", "N·K (the weights)", "M·N (the outputs)",
                            "64·K (the calibration batch)"};
    int64_t elems[4] = {M * K, N * K, M * N, TOOL_CALIB_ROWS * K}; /* each factor <= 2^31 */
    for (int i = data ? 0 : 3; i < 4; i++)
        if (elems[i] > TOOL_MAX_ELEMS) {
            fprintf(stderr,
                    "%s %lld,%lld,%lld: %s has %lld elements; each matrix kiln "
                    "makes for a layer may hold at most 2^28 = %lld (1 GiB of f32)\n",
                    where, (long long)M, (long long)N, (long long)K, names[i],
                    (long long)elems[i], (long long)TOOL_MAX_ELEMS);
            return EXIT_INPUT;
        }
    return EXIT_OK;
}

/* The numeric options: each parsed strictly into its field, within its limits
 * (docs/hardening.md, "Command-line options, named files, results"). */
typedef struct NumOpt {
    const char *name;
    int64_t lo, hi;
    size_t off;
    const char *only; /* the one command whose option it is (NULL: any) */
} NumOpt;

static const NumOpt num_opts[] = {
    {"--tokens", 1, TOOL_MAX_TOKENS, offsetof(ToolArgs, tokens), NULL},
    {"--sentences", 1, TOOL_MAX_SENTENCES, offsetof(ToolArgs, sentences), NULL},
    {"--window", 2, TOOL_MAX_WINDOW, offsetof(ToolArgs, window), NULL},
    {"--stride", 1, TOOL_MAX_WINDOW, offsetof(ToolArgs, stride), NULL},
    {"--threads", 1, TOOL_MAX_THREADS, offsetof(ToolArgs, threads), NULL},
    {"--repeat", 1, TOOL_MAX_REPEAT, offsetof(ToolArgs, repeat), NULL},
    {"--warmup", 0, TOOL_MAX_WARMUP, offsetof(ToolArgs, warmup), NULL},
    {"--probe-ms", 1, TOOL_MAX_PROBE_MS, offsetof(ToolArgs, probe_ms), NULL},
    /* -n: generate's tokens to generate; bench --model's tg test (0: none) */
    {"-n", 1, TOOL_MAX_GEN_TOKENS, offsetof(ToolArgs, gen_n), "generate"},
    {"-p", 0, TOOL_MAX_BENCH_TOKENS, offsetof(ToolArgs, bench_prompt), "bench"},
    {"-n", 0, TOOL_MAX_BENCH_TOKENS, offsetof(ToolArgs, bench_gen), "bench"},
};

static const NumOpt *num_opt(const char *s, const char *cmd)
{
    for (size_t i = 0; i < sizeof num_opts / sizeof num_opts[0]; i++)
        if (!strcmp(s, num_opts[i].name) && (!num_opts[i].only || !strcmp(cmd, num_opts[i].only)))
            return &num_opts[i];
    return NULL;
}

/* argv as one shell-quoted line ("kiln eval 'my recipe.lua' ..."), cut with "..."
 * when it would not fit. */
static void quote_cmdline(int argc, char **argv, char *out, size_t n)
{
    size_t p = 0;
    out[0] = 0;
    for (int i = 0; i < argc && p + 8 < n; i++) {
        const char *s = i ? argv[i] : "kiln";
        bool plain = *s && strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                     "0123456789_-+=.,/:@%") == strlen(s);
        p += (size_t)snprintf(out + p, n - p, "%s%s", i ? " " : "", plain ? "" : "'");
        for (; *s && p + 8 < n; s++) {
            if (*s == '\'')
                p += (size_t)snprintf(out + p, n - p, "'\\''");
            else
                out[p++] = (unsigned char)*s < 0x20 ? '?' : *s;
        }
        out[p] = 0;
        if (*s) {
            snprintf(out + p, n - p, "...");
            return;
        }
        if (!plain)
            p += (size_t)snprintf(out + p, n - p, "'");
    }
}

int tool_parse_args(int argc, char **argv, int first, ToolArgs *a)
{
    a->seed = 1;
    a->gen_n = 64, a->temp = 0, a->top_p = 0.95; /* generate */
    quote_cmdline(argc, argv, a->cmdline, sizeof a->cmdline);
    for (int i = first; i < argc; i++) {
        const NumOpt *no;
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
            if (strlen(v) > TOOL_MAX_LAYER_NAME) {
                fprintf(stderr, "kiln: bad --layer: %zu bytes; layer names are at most %d\n",
                        strlen(v), TOOL_MAX_LAYER_NAME);
                return EXIT_INPUT;
            }
        } else if (!strcmp(s, "--target")) {
            NEEDV;
            a->target = v;
        } else if (!strcmp(s, "--shape")) {
            NEEDV;
            if (tool_parse_shape(v, &a->M, &a->N, &a->K)) {
                fprintf(stderr, "kiln: bad --shape '%s': expected M,N,K (integers from 1 to "
                                "2^31 = %lld)\n", v, (long long)TOOL_MAX_DIM);
                return EXIT_INPUT;
            }
            a->have_shape = true;
        } else if (!strcmp(s, "--shapes")) {
            NEEDV;
            a->shapes_file = v;
        } else if (!strcmp(s, "--seed")) {
            NEEDV;
            const char *end;
            if (parse_digits(v, "", UINT64_MAX, &a->seed, &end)) {
                fprintf(stderr, "kiln: bad --seed '%s': expected an integer from 0 to %llu\n",
                        v, (unsigned long long)UINT64_MAX);
                return EXIT_INPUT;
            }
        } else if (!strcmp(s, "-o")) {
            NEEDV;
            a->out_dir = v;
            if (strlen(v) > TOOL_MAX_OUT_DIR) { /* the files' paths in it must not truncate */
                fprintf(stderr, "kiln: bad -o: %zu bytes; at most %d\n", strlen(v),
                        TOOL_MAX_OUT_DIR);
                return EXIT_INPUT;
            }
        } else if (!strcmp(s, "--model")) {
            NEEDV;
            a->model = v;
        } else if (!strcmp(s, "--report")) {
            NEEDV;
            a->report = v;
        } else if (!strcmp(s, "--text")) {
            NEEDV;
            a->text = v;
        } else if (!strcmp(s, "--prompt")) { /* generate */
            NEEDV;
            a->prompt = v;
        } else if (!strcmp(s, "--temp") || !strcmp(s, "--top-p")) {
            NEEDV;
            bool t = !strcmp(s, "--temp");
            if (tool_parse_double(s, v, 0, t ? TOOL_MAX_TEMP : 1, t ? &a->temp : &a->top_p))
                return EXIT_INPUT;
        } else if (!strcmp(s, "--no-chat")) {
            a->no_chat = true;
        } else if ((no = num_opt(s, a->cmd))) {
            NEEDV;
            if (tool_parse_int(s, v, no->lo, no->hi, (int64_t *)((char *)a + no->off)))
                return EXIT_INPUT;
            a->have_warmup = a->have_warmup || !strcmp(s, "--warmup");
            a->have_bench_prompt = a->have_bench_prompt || !strcmp(s, "-p");
            a->have_bench_gen = a->have_bench_gen || !strcmp(s, "-n");
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
    if (a->have_shape) { /* `kiln ir` makes no data but the calibration batch */
        char where[64];
        snprintf(where, sizeof where, "kiln %.20s: --shape", a->cmd);
        return tool_check_shape(where, a->M, a->N, a->K, strcmp(a->cmd, "ir") != 0);
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
    char name[TOOL_NAME_BYTES];
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
