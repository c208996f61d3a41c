/* tools/kiln.c — the `kiln` command: dispatches to the subcommands in cmd_*.c. */
#include <malloc.h>
#include <stdio.h>
#include <string.h>

#include "tool.h"

static void usage(FILE *f)
{
    fputs("usage: kiln <command> [options]\n"
          "\n"
          "commands:\n"
          "  targets                          list targets and what each runs natively\n"
          "  ir RECIPE --shape M,N,K [--layer NAME] [--target T] [--print-after-all]\n"
          "                                   print the IR a recipe gives (after every pass with the flag)\n"
          "  run RECIPE --shape M,N,K [--layer NAME] [--target T] [--seed S] [--check] [--verbose]\n"
          "                                   build the layer on deterministic random data and run it\n"
          "  aot RECIPE (--shapes FILE | --shape M,N,K [--layer NAME]) [--target T] -o DIR\n"
          "                                   compile the layers' kernels ahead of time into DIR:\n"
          "                                   libkiln_kernels.so, kiln_kernels.h, manifest.json\n"
          "  eval RECIPE [--model minilm|smollm2|PATH] [--text FILE] [--tokens N] [--sentences N]\n"
          "       [--window W] [--stride S] [--per-layer] [--json] [--target T] [--verbose] [--quiet]\n"
          "       [--report FILE.md]\n"
          "                                   run a real model in f32 and under the recipe: perplexity\n"
          "                                   or embedding cosine, size, speed, kernels (docs/models.md);\n"
          "                                   --report: a Markdown report with a per-layer SQNR plot\n"
          "                                   (docs/report.md)\n"
          "  quantize RECIPE [--model minilm|smollm2|PATH] -o DIR [--text FILE] [--dequant] [--verbose]\n"
          "       [--quiet] [--json]\n"
          "                                   apply the recipe's methods (gptq, awq, smoothquant) on\n"
          "                                   calibration text and write a compressed-tensors checkpoint\n"
          "                                   (docs/checkpoints.md)\n"
          "  bench RECIPE --shape M,N,K [--layer NAME] [--target T] [--threads N] [--repeat R]\n"
          "       [--warmup W] [--cold] [--probe-ms MS] [--json] [--report FILE.md]\n"
          "                                   time the layer's kernel against this machine's measured\n"
          "                                   bandwidth and compute peaks (docs/bench.md)\n"
          "  bench RECIPE --model smollm2|minilm|PATH [-p 512] [-n 128] [--threads N] [--repeat R]\n"
          "       [--target T] [--json]      a whole model's prompt (ppN) and generation (tgN) tokens/s,\n"
          "                                   printed as llama-bench prints them (docs/bench.md)\n"
          "  generate RECIPE --prompt TEXT [--model smollm2|PATH] [-n N] [--temp T] [--top-p P]\n"
          "       [--seed S] [--no-chat] [--threads N] [--target T] [--json] [--verbose] [--quiet]\n"
          "                                   continue a prompt (in the model's chat template) under\n"
          "                                   the recipe, streaming the text; prefill and decode\n"
          "                                   tokens/s on stderr (docs/generate.md)\n"
          "  help                             this text\n"
          "\n"
          "Without --layer, ir and run take one example layer per rule of the recipe.\n"
          "eval and quantize show progress (stage, layer i/n, ETA) on stderr when it is a terminal;\n"
          "--quiet: none; --json: one JSON object per line on stderr instead.\n"
          "Exit codes: 0 ok, 1 --check failed, 2 bad input (recipe, IR, model, options outside\n"
          "their limits, impossible results such as a NaN metric), 3 no device, 4 internal error.\n",
          f);
}

int main(int argc, char **argv)
{
    /* Buffers of 1 MiB and more come from mmap and go back to the system when freed. glibc
     * otherwise raises this threshold as big blocks are freed, and a model's forward pass
     * (per-window buffers of tens of MB freed and made again) then leaves freed memory in
     * the heap that the next, slightly different allocation cannot reuse: kiln eval's peak
     * moved by 56 MB with one field added to a struct (docs/hardening.md, "Memory"). */
    mallopt(M_MMAP_THRESHOLD, 1 << 20);
    if (argc < 2) {
        usage(stderr);
        return EXIT_INPUT;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "help") || !strcmp(cmd, "--help") || !strcmp(cmd, "-h")) {
        usage(stdout);
        return EXIT_OK;
    }
    if (!strcmp(cmd, "--version") || !strcmp(cmd, "version")) {
        printf("kiln %s\n", KILN_VERSION);
        return EXIT_OK;
    }
    ToolArgs a = {.cmd = cmd};
    int rc = tool_parse_args(argc, argv, 2, &a);
    if (rc)
        return rc;
    if (!strcmp(cmd, "targets"))
        return cmd_targets(&a);
    if (!strcmp(cmd, "ir"))
        return cmd_ir(&a);
    if (!strcmp(cmd, "run"))
        return cmd_run(&a);
    if (!strcmp(cmd, "eval"))
        return cmd_eval(&a);
    if (!strcmp(cmd, "quantize"))
        return cmd_quantize(&a);
    if (!strcmp(cmd, "aot"))
        return cmd_aot(&a);
    if (!strcmp(cmd, "bench"))
        return cmd_bench(&a);
    if (!strcmp(cmd, "generate"))
        return cmd_generate(&a);
    fprintf(stderr, "kiln: unknown command '%s' (valid: targets, ir, run, aot, eval, quantize, bench, generate, help)\n",
            cmd);
    return EXIT_INPUT;
}
