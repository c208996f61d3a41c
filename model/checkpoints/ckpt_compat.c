/* model/checkpoints/ckpt_compat.c — what a checkpoint kiln writes asks of today's
 * releases (compressed-tensors 0.20, transformers 5.x) that they do not do: the lines
 * `kiln quantize` warns with (docs/checkpoints.md, "Known upstream limits"). */
#include <stdarg.h>
#include <stdio.h>

#include "model/checkpoints/checkpoint.h"

static size_t add(char *buf, size_t n, size_t at, const char *fmt, ...)
{
    if (at >= n)
        return at;
    va_list ap;
    va_start(ap, fmt);
    int w = vsnprintf(buf + at, n - at, fmt, ap);
    va_end(ap);
    return w < 0 ? at : at + (size_t)w;
}

int kiln_checkpoint_compat_text(const KilnCkptCompat *k, char *buf, size_t n)
{
    size_t at = 0;
    int lines = 0;
    if (n)
        buf[0] = 0;
    if (k->ngidx) {
        at = add(buf, n, at,
                 "%d layer(s) (first: %s) keep act-order groups (act_order = \"group\"): "
                 "written as the legacy \"actorder\": \"group\" with weight_g_idx, which "
                 "compressed-tensors >= 0.19 and transformers with it refuse (\"has been "
                 "removed\"); compressed-tensors <= 0.18 reads it. For today's "
                 "releases use act_order = \"static\"\n",
                 k->ngidx, k->gidx_layer);
        lines++;
    }
    if (k->nasym_packed) {
        at = add(buf, n, at,
                 "%d asymmetric pack-quantized layer(s) (first: %s): transformers 5.x's "
                 "default from_pretrained refuses them (it expects unpacked zero points, the "
                 "format packs them); %s\n",
                 k->nasym_packed, k->asym_layer,
                 k->ngroups > 1 ? "and with several config groups dequantize=True cannot "
                                  "load them either: use symmetric weights for transformers "
                                  "(compressed-tensors' decompressor and vLLM read them)"
                                : "load with CompressedTensorsConfig(dequantize=True), or "
                                  "use symmetric weights");
        lines++;
    }
    if (k->ngroups > 1) {
        at = add(buf, n, at,
                 "%d config groups: transformers' CompressedTensorsConfig(dequantize=True) "
                 "applies the first group's scheme to every layer (wrong weights or a load "
                 "error); load it the default way\n",
                 k->ngroups);
        lines++;
    }
    return lines;
}
