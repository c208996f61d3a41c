/* tools/cmd_quantize.c — `kiln quantize RECIPE --model M -o DIR`: parses the options and
 * hands them to kiln_quantize (model/eval/quantize.c). */
#include <stdio.h>

#include "model/model.h"
#include "runtime/progress.h"
#include "tool.h"

int cmd_quantize(const ToolArgs *a)
{
    if (!a->recipe || !a->out_dir) {
        fprintf(stderr, "kiln: quantize needs a recipe and -o DIR: kiln quantize RECIPE "
                        "[--model minilm|smollm2|PATH] -o DIR\n");
        return EXIT_INPUT;
    }
    KilnQuantizeOpts o = {.recipe = a->recipe, .model = a->model, .out = a->out_dir,
                          .target = a->target, .text = a->text, .verbose = a->verbose,
                          .dequant = a->dequant, .progress = tool_progress(a)};
    KilnDiag d = {0};
    int rc = kiln_quantize(&o, &d);
    kiln_progress_free(o.progress);
    if (rc) {
        tool_error(&d);
        return tool_exit_code(rc);
    }
    return EXIT_OK;
}
