/* passes/prepack.c — for CPU and GPU targets, route each qgemm's weight (quantized,
 * or f32 for an unquantized layer) through `prepack` (same type, attribute layout =
 * the qgemm's layout), the point where kiln_prepack() reorders codes and scales
 * into the kernel's tile layout.
 * The interpreter reads weights as they are, so for it this pass does nothing. */
#include <stdio.h>
#include <string.h>

#include "ir/layout_gpu.h"
#include "passes/passes.h"

/* On CUDA targets the layout chosen must be one a kernel exists for: the check the
 * code generator and the CUDA runtime make (ir/layout_gpu.c), made here once at plan
 * time for every tool, so `kiln ir`, `run`, `bench` and `aot` accept and refuse the
 * same layers, naming the layer, before any driver or NVRTC is opened. Unquantized
 * (f32) layers included: they get the f32-fma kernel (f32 weights, FFMA). CPU layouts
 * come from kiln_layout_make itself (pick_layout), so they always have a kernel. */
static int check_gpu_kernel_exists(const KilnFunc *f, const KilnInst *qg, const KilnTarget *t,
                                   KilnDiag *d)
{
    if (t->kind != KILN_TGT_CUDA)
        return 0;
    KilnGpuLayout gl;
    return kiln_gpu_layout_for(qg, f, &gl, d);
}

static int prepack_func(KilnFunc *f, const KilnTarget *t, KilnDiag *d)
{
    for (int i = 0; i < f->ninsts; i++) {
        KilnInst *qg = &f->insts[i];
        if (qg->dead || qg->op != KILN_OP_QGEMM || qg->nops < 2)
            continue;
        int wq = qg->ops[1];
        KilnInst *wi = kiln_def(f, wq);
        /* a quantized weight is quantize(weight|const); an unquantized layer's f32
         * weight is the weight|const itself */
        KilnInst *src = wi && wi->op == KILN_OP_QUANTIZE ? kiln_def(f, wi->ops[0]) : wi;
        if (!src || (src->op != KILN_OP_WEIGHT && src->op != KILN_OP_CONST))
            continue; /* already prepacked, or not a weight we fold */
        const KilnAttr *lay = kiln_get(qg, "layout");
        if (!lay || lay->kind != KILN_ATTR_STR)
            return kiln_diag_set(d, KILN_EINPUT,
                                 "layer \"%s\": %%%s = qgemm has no layout; run pick_layout "
                                 "before prepack",
                                 f->name, f->values[qg->result].name);
        const char *layout = lay->s;
        int rc = check_gpu_kernel_exists(f, qg, t, d);
        if (rc)
            return rc;
        char base[256];
        snprintf(base, sizeof base, "%s_packed", f->values[wq].name ? f->values[wq].name : "w");
        const char *name = kiln_pass_fresh_name(f, base);
        /* insert moves the qgemm (and may reallocate insts): re-fetch it after */
        int p = kiln_insert(f, i, KILN_OP_PREPACK, &wq, 1, f->values[wq].type, name);
        kiln_set_str(f, &f->insts[i], "layout", layout);
        f->insts[i + 1].ops[1] = p;
        i++;
    }
    return KILN_OK;
}

int kiln_pass_prepack(KilnModule *m, const KilnTarget *t, KilnDiag *d)
{
    if (t->kind == KILN_TGT_INTERP)
        return KILN_OK;
    for (int i = 0; i < m->nfuncs; i++) {
        int rc = prepack_func(m->funcs[i], t, d);
        if (rc)
            return rc;
    }
    return KILN_OK;
}
