/* tools/cmd_generate.c — `kiln generate RECIPE --model smollm2|PATH --prompt TEXT [-n N]
 * [--temp T] [--top-p P] [--seed S] [--no-chat] [--threads N] [--json]`: hands the options
 * to kiln_generate (model/eval/generate.c). docs/generate.md. */
#include <stdio.h>

#include "model/model.h"
#include "runtime/progress.h"
#include "tool.h"

int cmd_generate(const ToolArgs *a)
{
    if (!a->recipe) {
        fprintf(stderr, "kiln: generate needs a recipe: kiln generate RECIPE "
                        "[--model smollm2|PATH] --prompt TEXT [-n N]\n");
        return EXIT_INPUT;
    }
    KilnGenerateOpts o = {
        .recipe = a->recipe,
        .model = a->model,
        .target = a->target,
        .prompt = a->prompt,
        .n = (int)a->gen_n,
        .temp = (float)a->temp,
        .top_p = (float)a->top_p,
        .seed = a->seed,
        .threads = (int)a->threads,
        .no_chat = a->no_chat,
        .json = a->json,
        .verbose = a->verbose,
        .progress = tool_progress(a),
    };
    KilnDiag d = {0};
    int rc = kiln_generate(&o, &d);
    kiln_progress_free(o.progress);
    if (rc) {
        tool_error(&d);
        return tool_exit_code(rc);
    }
    return EXIT_OK;
}
