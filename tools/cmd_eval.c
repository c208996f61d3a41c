/* tools/cmd_eval.c — `kiln eval RECIPE --model minilm|smollm2|PATH`: parses the options and
 * hands them to kiln_eval (model/eval/eval.c), which runs the model in f32 and under the recipe. */
#include <stdio.h>

#include "model/model.h"
#include "runtime/progress.h"
#include "tool.h"

int cmd_eval(const ToolArgs *a)
{
    if (!a->recipe) {
        fprintf(stderr, "kiln: eval needs a recipe: kiln eval RECIPE [--model minilm|smollm2|PATH]\n");
        return EXIT_INPUT;
    }
    KilnEvalOpts o = {
        .recipe = a->recipe,
        .model = a->model,
        .text = a->text,
        .tokens = (int)a->tokens,
        .sentences = (int)a->sentences,
        .window = (int)a->window,
        .stride = (int)a->stride,
        .target = a->target,
        .per_layer = a->per_layer,
        .json = a->json,
        .verbose = a->verbose,
        .report = a->report,
        .cmdline = a->cmdline,
        .progress = tool_progress(a),
    };
    KilnDiag d = {0};
    int rc = kiln_eval(&o, &d);
    kiln_progress_free(o.progress);
    if (rc) {
        tool_error(&d);
        return tool_exit_code(rc);
    }
    if (a->verbose)
        tool_print_counts();
    return EXIT_OK;
}
