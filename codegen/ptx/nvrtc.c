/* codegen/ptx/nvrtc.c — NVRTC through dlopen: found at run time ($KILN_NVRTC, then
 * /usr/local/cuda/lib64, then the loader path), so kiln builds and runs without the CUDA
 * toolkit and no CUDA header is needed. The few prototypes used are declared here. */
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ir/layout_gpu.h"
#include "ptx.h"

typedef struct _nvrtcProgram *nvrtcProgram;
typedef int nvrtcResult; /* NVRTC_SUCCESS = 0 */

typedef struct Nvrtc {
    void *lib;
    int major, minor;
    char version[16];
    char err[512];
    nvrtcResult (*CreateProgram)(nvrtcProgram *, const char *, const char *, int,
                                 const char *const *, const char *const *);
    nvrtcResult (*CompileProgram)(nvrtcProgram, int, const char *const *);
    nvrtcResult (*GetPTXSize)(nvrtcProgram, size_t *);
    nvrtcResult (*GetPTX)(nvrtcProgram, char *);
    nvrtcResult (*GetCUBINSize)(nvrtcProgram, size_t *);
    nvrtcResult (*GetCUBIN)(nvrtcProgram, char *);
    nvrtcResult (*GetProgramLogSize)(nvrtcProgram, size_t *);
    nvrtcResult (*GetProgramLog)(nvrtcProgram, char *);
    nvrtcResult (*Version)(int *, int *);
    nvrtcResult (*DestroyProgram)(nvrtcProgram *);
    const char *(*GetErrorString)(nvrtcResult);
} Nvrtc;

static Nvrtc g_nvrtc;
static char g_env[1024]; /* $KILN_NVRTC the state was loaded for */
static bool g_tried;
static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;

static void *open_first(char *err, size_t n)
{
    const char *env = getenv("KILN_NVRTC");
    if (env && *env) { /* an explicit choice is the only place looked at */
        void *h = dlopen(env, RTLD_NOW | RTLD_LOCAL);
        if (!h)
            snprintf(err, n, "KILN_NVRTC=%s: %s", env, dlerror());
        return h;
    }
    static const char *const paths[] = {
        "/usr/local/cuda/lib64/libnvrtc.so.13", "/usr/local/cuda/lib64/libnvrtc.so",
        "libnvrtc.so.13", "libnvrtc.so", "libnvrtc.so.12",
    };
    for (size_t i = 0; i < sizeof paths / sizeof *paths; i++) {
        void *h = dlopen(paths[i], RTLD_NOW | RTLD_LOCAL);
        if (h)
            return h;
    }
    snprintf(err, n, "looked in /usr/local/cuda/lib64 and the loader path");
    return NULL;
}

#define SYM(field, name)                                                                           \
    do {                                                                                           \
        *(void **)&n->field = dlsym(n->lib, name);                                                 \
        if (!n->field) {                                                                           \
            snprintf(n->err, sizeof n->err, "%s lacks %s", "libnvrtc", name);                      \
            return -1;                                                                             \
        }                                                                                          \
    } while (0)

static int load_syms(Nvrtc *n)
{
    SYM(CreateProgram, "nvrtcCreateProgram");
    SYM(CompileProgram, "nvrtcCompileProgram");
    SYM(GetPTXSize, "nvrtcGetPTXSize");
    SYM(GetPTX, "nvrtcGetPTX");
    SYM(GetCUBINSize, "nvrtcGetCUBINSize");
    SYM(GetCUBIN, "nvrtcGetCUBIN");
    SYM(GetProgramLogSize, "nvrtcGetProgramLogSize");
    SYM(GetProgramLog, "nvrtcGetProgramLog");
    SYM(Version, "nvrtcVersion");
    SYM(DestroyProgram, "nvrtcDestroyProgram");
    SYM(GetErrorString, "nvrtcGetErrorString");
    if (n->Version(&n->major, &n->minor))
        return -1;
    snprintf(n->version, sizeof n->version, "%d.%d", n->major, n->minor);
    return 0;
}

/* The loaded library, or NULL with d filled. Reloads when $KILN_NVRTC changed (tests
 * point it at a bogus path and back). */
static Nvrtc *nvrtc(KilnDiag *d)
{
    pthread_mutex_lock(&g_lock);
    const char *env = getenv("KILN_NVRTC");
    if (g_tried && strcmp(env ? env : "", g_env)) {
        /* NVRTC is never unloaded: it is C++, and unloading it orphans the memory its
         * runtime allocated at load time (LeakSanitizer reports it). A later load of
         * the same path gets the same handle back. */
        memset(&g_nvrtc, 0, sizeof g_nvrtc);
        g_tried = false;
    }
    if (!g_tried) {
        g_tried = true;
        snprintf(g_env, sizeof g_env, "%s", env ? env : "");
        g_nvrtc.lib = open_first(g_nvrtc.err, sizeof g_nvrtc.err);
        if (g_nvrtc.lib && load_syms(&g_nvrtc))
            g_nvrtc.lib = NULL; /* not NVRTC after all; left loaded, as above */
    }
    Nvrtc *n = g_nvrtc.lib ? &g_nvrtc : NULL;
    if (!n)
        kiln_diag_set(d, KILN_ENODEV, "NVRTC not found (install the CUDA toolkit or set KILN_NVRTC): %s",
                      g_nvrtc.err);
    pthread_mutex_unlock(&g_lock);
    return n;
}

const char *kiln_nvrtc_version(KilnDiag *d)
{
    Nvrtc *n = nvrtc(d);
    return n ? n->version : NULL;
}

static char *program_log(Nvrtc *n, nvrtcProgram p)
{
    size_t len = 0;
    if (n->GetProgramLogSize(p, &len) || len == 0)
        return calloc(1, 1);
    char *log = malloc(len + 1);
    if (log && n->GetProgramLog(p, log))
        log[0] = 0;
    if (log)
        log[len] = 0;
    return log;
}

int kiln_nvrtc_compile(const char *src, const char *arch, char **ptx, void **cubin, size_t *cubin_len,
                       char **log_out, KilnDiag *d)
{
    if (ptx)
        *ptx = NULL;
    if (cubin)
        *cubin = NULL;
    if (cubin_len)
        *cubin_len = 0;
    if (log_out)
        *log_out = NULL;
    Nvrtc *n = nvrtc(d);
    if (!n)
        return KILN_ENODEV;
    int sm;
    bool specific;
    int rc = kiln_gpu_arch(arch, &sm, &specific, d);
    if (rc)
        return rc;
    char archopt[64];
    snprintf(archopt, sizeof archopt, "--gpu-architecture=%s", arch);
    /* IEEE division and no flush-to-zero are NVRTC's defaults, stated to be sure: the
     * activation quantization must round exactly like ir/numerics.c. */
    const char *opts[] = {archopt, "--ptxas-options=-v", "--prec-div=true", "--ftz=false",
                          "--std=c++17", "--diag-suppress=177"};
    nvrtcProgram p = NULL;
    nvrtcResult r = n->CreateProgram(&p, src, "kiln_qgemm.cu", 0, NULL, NULL);
    if (r)
        return kiln_diag_set(d, KILN_EINTERNAL, "nvrtcCreateProgram: %s", n->GetErrorString(r));
    r = n->CompileProgram(p, (int)(sizeof opts / sizeof *opts), opts);
    char *log = program_log(n, p);
    if (r) {
        rc = kiln_diag_set(d, KILN_EINTERNAL, "NVRTC %s failed to compile the kernel for %s: %s\n%.800s",
                           n->version, arch, n->GetErrorString(r), log ? log : "");
        goto out;
    }
    size_t len = 0;
    if (ptx) {
        if ((r = n->GetPTXSize(p, &len)) || !(*ptx = malloc(len + 1)) || (r = n->GetPTX(p, *ptx))) {
            rc = kiln_diag_set(d, KILN_EINTERNAL, "nvrtcGetPTX: %s", r ? n->GetErrorString(r) : "out of memory");
            goto out;
        }
        (*ptx)[len] = 0;
    }
    if (cubin) {
        if ((r = n->GetCUBINSize(p, &len)) || !(*cubin = malloc(len ? len : 1)) ||
            (r = n->GetCUBIN(p, *cubin))) {
            rc = kiln_diag_set(d, KILN_EINTERNAL, "nvrtcGetCUBIN: %s", r ? n->GetErrorString(r) : "out of memory");
            goto out;
        }
        if (cubin_len)
            *cubin_len = len;
    }
out:
    if (rc) {
        if (ptx) {
            free(*ptx);
            *ptx = NULL;
        }
        if (cubin) {
            free(*cubin);
            *cubin = NULL;
        }
    }
    if (log_out && !rc)
        *log_out = log;
    else
        free(log);
    n->DestroyProgram(&p);
    return rc;
}
