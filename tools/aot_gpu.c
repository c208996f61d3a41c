/* tools/aot_gpu.c — `kiln aot --target sm_XX`: per kernel, the canonical kernel IR and
 * NVRTC's PTX and cubin (codegen/ptx), which runtime/cuda.h loads and launches. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "api/compile.h"
#include "aot.h"

static int write_blob(const char *dir, const char *symbol, const char *ext, const void *data,
                      size_t n, KilnDiag *d)
{
    char path[4400];
    snprintf(path, sizeof path, "%s/%s.%s", dir, symbol, ext);
    FILE *f = fopen(path, "wb");
    size_t w = f ? fwrite(data, 1, n, f) : 0;
    if (!f || fclose(f) || w != n)
        return kiln_diag_set(d, KILN_EINPUT, "cannot write %s: %s", path, strerror(errno));
    return 0;
}

int tool_aot_gpu_kernel(const KilnFunc *f, const char *arch, const char *dir,
                        const char *const *known, int nknown, char symbol[64], bool *is_new,
                        AotGpuKernel *k, KilnDiag *d)
{
    memset(k, 0, sizeof *k);
    *is_new = false;
    const char *nvrtc = kiln_nvrtc_version(d);
    if (!nvrtc)
        return d->code ? d->code : KILN_ENODEV;
    KilnModule *km = kiln_module_new();
    KilnFunc *canon;
    char *text = NULL, *key = NULL, *ptx = NULL;
    void *cubin = NULL;
    size_t cubin_len = 0;
    int rc = kiln_kernel_canon(f, km, &canon, d);
    if (!rc)
        rc = kiln_gpu_layout_for(kiln_find_qgemm(canon), canon, &k->lay, d);
    if (!rc && !(text = kiln_print_module_str(km)))
        rc = kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
    if (!rc) { /* the one kernel key (api/compile.h), with NVRTC as the generator */
        char gen[96];
        size_t len;
        snprintf(gen, sizeof gen, "nvrtc %s\nabi ptx-1", nvrtc);
        if (!(key = kiln_kernel_key(km, gen, &len, symbol)))
            rc = kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
    }
    for (int i = 0; !rc && i < nknown; i++)
        if (!strcmp(known[i], symbol))
            goto out;
    *is_new = !rc;
    if (!rc && !(k->nlaunch = kiln_ptx_kernel_names(canon, symbol, k->launch, d)))
        rc = d->code ? d->code : KILN_EINTERNAL;
    if (!rc)
        rc = kiln_ptx_emit(canon, arch, symbol, &ptx, &cubin, &cubin_len, NULL, d);
    if (!rc) {
        k->ptx_bytes = strlen(ptx);
        k->cubin_bytes = cubin_len;
        rc = write_blob(dir, symbol, "kir", text, strlen(text), d) ||
             write_blob(dir, symbol, "ptx", ptx, k->ptx_bytes, d) ||
             write_blob(dir, symbol, "cubin", cubin, cubin_len, d);
    }
out:
    free(ptx);
    free(cubin);
    free(key);
    free(text);
    kiln_module_free(km);
    return rc;
}

void tool_aot_gpu_json(KilnJsonWriter *w, const AotGpuKernel *k, const char *symbol,
                       bool calibrated)
{
    const KilnGpuLayout *l = &k->lay;
    char file[96];
    kiln_jw_key(w, "layout");
    kiln_jw_string(w, l->name);
    kiln_jw_key(w, "pack_bytes");
    kiln_jw_int(w, (int64_t)l->pack_bytes);
    AotOperands ops = {l->wspec, l->wdt, l->weight_only, l->aspec, l->adt, l->act_dtype,
                       l->epilogue, l->has_bias, l->out_dt, calibrated};
    tool_aot_jw_operands(w, &ops);
    static const char *const ext[3] = {"kir", "ptx", "cubin"};
    for (int i = 0; i < 3; i++) {
        snprintf(file, sizeof file, "%s.%s", symbol, ext[i]);
        kiln_jw_key(w, ext[i]);
        kiln_jw_string(w, file);
    }
    kiln_jw_key(w, "launch");
    kiln_jw_begin_array(w);
    for (int i = 0; i < k->nlaunch; i++)
        kiln_jw_string(w, k->launch[i]);
    kiln_jw_end_array(w);
}
