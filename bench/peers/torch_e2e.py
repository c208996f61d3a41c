#!/usr/bin/env python3
"""bench/peers/torch_e2e.py — the PyTorch end-to-end peers of bench/e2e.sh: a Hugging Face
Llama directory (SmolLM2-135M-Instruct as `kiln quantize recipes/f32.lua --model smollm2`
writes it: the GGUF's Q4_1 weights dequantized to f32) through transformers, timed as
llama-bench times a model:

  pp<P>  one forward of P tokens with an empty KV cache (logits of the last token only,
         as llama-bench's prompt batch asks for), t/s = P / time;
  tg<N>  N decode steps of one token each from an empty cache, with the KV cache
         (past_key_values), each step feeding the previous step's argmax, t/s = N / time.

Each test runs once untimed (warm-up), then R timed repetitions; avg_ts and stddev_ts are
the mean and sample standard deviation of the repetitions' t/s (llama-bench's definition).
Eager mode, torch.set_num_threads(T), torch.inference_mode().

Variants (--variants, comma-separated; default all):
  f32           the model in f32
  bf16          the model in bf16
  ao-int8-dyn   f32 with torch.ao.quantization.quantize_dynamic on the nn.Linear layers (qint8)
  torchao-int8-dyn   bf16 + torchao Int8DynamicActivationInt8WeightConfig
  torchao-int8-wo    bf16 + torchao Int8WeightOnlyConfig
  torchao-int4-wo    bf16 + torchao's CPU int4 weight-only config (aten's
                     _weight_int4pack_mm_for_cpu), groups of 64
  torchao-w4a8       bf16 + torchao Int8DynamicActivationInt4WeightConfig (its da8w4 CPU
                     kernel, a C++ op of torchao's own), groups of 64
The quantized variants leave lm_head alone (tied to the embedding), as kiln's recipes
do (`ignore = { "lm_head" }`). Groups of 64, not kiln's 128: torchao needs K divisible
by the group, and 576 (SmolLM2's hidden size) is not divisible by 128.

Output: one JSON object per line per (variant, test) on stdout with llama-bench's field
names ("model_filename", "model_n_params", "n_threads", "n_prompt", "n_gen", "avg_ts",
"stddev_ts", "samples_ts", "cpu_info") plus "engine": "torch", "variant", "weights",
"backend" (versions); a variant that cannot be set up or run prints one line per test
with "error" (the reason) instead of the numbers. Progress goes to stderr. Exit 0 unless
the arguments or the model directory are wrong (2).
"""
import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
import warnings

VARIANTS = {
    "f32": "f32",
    "bf16": "bf16",
    "ao-int8-dyn": "int8 per-channel weights, int8 dynamic activations (torch.ao, FBGEMM)",
    "torchao-int8-dyn": "int8 per-channel weights, int8 dynamic per-token activations (torchao)",
    "torchao-int8-wo": "int8 per-channel weights, bf16 activations (torchao)",
    "torchao-int4-wo": "int4 g64 asymmetric weights, bf16 activations (torchao, CPU int4 layout)",
    "torchao-w4a8": "int4 g64 asymmetric weights, int8 dynamic activations (torchao da8w4)",
}


def cpu_model():
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def load(model_dir, dtype):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.from_pretrained(model_dir)
    # kiln's export names its f32 layers in a compressed-tensors "dense" config with no
    # groups; the plain f32 model is what is wanted here, without the quantizer's hooks.
    if hasattr(cfg, "quantization_config"):
        del cfg.quantization_config
    model = AutoModelForCausalLM.from_pretrained(model_dir, config=cfg, dtype=torch.float32)
    model.eval()
    if dtype is not torch.float32:
        model = model.to(dtype)
    return model


def make_variant(name, model_dir):
    """The model for a variant, or raises with the reason it cannot be made."""
    import torch

    if name == "f32":
        return load(model_dir, torch.float32)
    if name == "bf16":
        return load(model_dir, torch.bfloat16)
    if name == "ao-int8-dyn":
        from torch.ao.quantization import quantize_dynamic

        from torch.ao.quantization import default_dynamic_qconfig

        model = load(model_dir, torch.float32)
        spec = {n: default_dynamic_qconfig for n, m in model.named_modules()
                if isinstance(m, torch.nn.Linear) and n != "lm_head"}
        return quantize_dynamic(model, spec, dtype=torch.qint8)
    if name.startswith("torchao-"):
        import torchao
        from torchao.quantization import quantize_

        model = load(model_dir, torch.bfloat16)
        quantize_(model, torchao_config(name),
                  filter_fn=lambda m, fqn: isinstance(m, torch.nn.Linear) and fqn != "lm_head")
        model.torchao_version = torchao.__version__
        return model
    raise ValueError(f"unknown variant {name!r} (known: {', '.join(VARIANTS)})")


def torchao_config(name):
    import torchao.quantization as q

    if name == "torchao-int8-dyn":
        return q.Int8DynamicActivationInt8WeightConfig()
    if name == "torchao-int8-wo":
        return q.Int8WeightOnlyConfig()
    import torchao.prototype.quantization.int4 as p4

    if name == "torchao-w4a8":
        import torch

        # torchao's own C++ kernel: its wheel's extensions load only with the torch they
        # were built for; say so rather than let the config's bare assert speak.
        if "CPU" not in torch._C._dispatch_dump("torchao::da8w4_linear_cpu"):
            raise RuntimeError("torchao's da8w4_linear_cpu has no CPU kernel here (its C++ "
                               f"extensions did not load with torch {torch.__version__})")
        return p4.Int8DynamicActivationInt4WeightConfig(group_size=64)
    # The CPU int4 kernel (aten._weight_int4pack_mm_for_cpu): torchao 0.18 has it as the
    # prototype config over Int4OpaqueTensor (Int4WeightOnlyConfig's formats are GPU ones).
    return p4.PrototypeInt4WeightOnlyConfig(group_size=64)


def run_pp(model, tokens):
    import torch

    with torch.inference_mode():
        t0 = time.perf_counter()
        model(tokens, use_cache=True, logits_to_keep=1)
        return time.perf_counter() - t0


def run_tg(model, first, n_gen):
    import torch

    with torch.inference_mode():
        t0 = time.perf_counter()
        cache = None
        tok = first
        for _ in range(n_gen):
            out = model(tok, past_key_values=cache, use_cache=True, logits_to_keep=1)
            cache = out.past_key_values
            tok = out.logits[:, -1:].argmax(-1)
        return time.perf_counter() - t0


def time_test(model, test, n, reps, vocab, seed):
    """t/s of each of `reps` timed runs of test ("pp" or "tg") after one warm-up."""
    import torch

    g = torch.Generator().manual_seed(seed)
    if test == "pp":
        tokens = torch.randint(0, vocab, (1, n), generator=g)
        run_pp(model, tokens)
        return [n / run_pp(model, tokens) for _ in range(reps)]
    first = torch.randint(0, vocab, (1, 1), generator=g)
    run_tg(model, first, min(n, 4))
    return [n / run_tg(model, first, n) for _ in range(reps)]


def stats(samples):
    avg = statistics.fmean(samples)
    sd = statistics.stdev(samples) if len(samples) > 1 else 0.0
    return avg, sd


def base_fields(args, variant):
    import torch

    return {
        "engine": "torch",
        "variant": variant,
        "weights": VARIANTS.get(variant, variant),
        "backend": f"torch {torch.__version__}",
        "model_filename": os.path.abspath(args.model_dir),
        "n_threads": args.threads,
        "cpu_info": cpu_model(),
    }


def tests_of(args):
    out = []
    if args.n_prompt > 0:
        out.append(("pp", args.n_prompt))
    if args.n_gen > 0:
        out.append(("tg", args.n_gen))
    return out


def bench_variant(args, variant):
    """The JSON lines of one variant (numbers, or one error line per test), each yielded
    as soon as it is measured (a run cut short keeps what it finished)."""
    import torch

    t0 = time.perf_counter()
    try:
        model = make_variant(variant, args.model_dir)
    except Exception as e:  # a variant that cannot be made is a row, not a crash
        reason = f"{type(e).__name__}: {e}".splitlines()[0][:300]
        for test, n in tests_of(args):
            yield row(args, variant, test, n, error=f"setup failed: {reason}")
        return
    backend = f"torch {torch.__version__}"
    if hasattr(model, "torchao_version"):
        backend += f", torchao {model.torchao_version}"
    n_params = sum(p.numel() for p in model.parameters())
    vocab = model.config.vocab_size
    print(f"torch_e2e: {variant}: ready in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    for test, n in tests_of(args):
        print(f"torch_e2e: {variant} {test}{n} x{args.repetitions}", file=sys.stderr)
        try:
            samples = time_test(model, test, n, args.repetitions, vocab, args.seed)
        except Exception as e:
            reason = f"{type(e).__name__}: {e}".splitlines()[0][:300]
            yield row(args, variant, test, n, error=f"run failed: {reason}")
            continue
        r = row(args, variant, test, n, samples=samples)
        r["backend"] = backend
        r["model_n_params"] = n_params
        yield r
    del model


def row(args, variant, test, n, samples=None, error=None):
    r = base_fields(args, variant)
    r["n_prompt"] = n if test == "pp" else 0
    r["n_gen"] = n if test == "tg" else 0
    if error is not None:
        r["error"] = error
        return r
    avg, sd = stats(samples)
    r["avg_ts"] = avg
    r["stddev_ts"] = sd
    r["samples_ts"] = samples
    return r


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model_dir", help="a Hugging Face Llama directory (config.json, safetensors)")
    p.add_argument("-p", "--n-prompt", type=int, default=512)
    p.add_argument("-n", "--n-gen", type=int, default=128)
    p.add_argument("-t", "--threads", type=int, default=2)
    p.add_argument("-r", "--repetitions", type=int, default=5)
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--seed", type=int, default=1234)
    a = p.parse_args(argv)
    for name, v, lo, hi in (("-p", a.n_prompt, 0, 8192), ("-n", a.n_gen, 0, 8192),
                            ("-t", a.threads, 1, 256), ("-r", a.repetitions, 1, 1000)):
        if not lo <= v <= hi:
            p.error(f"{name} {v}: must be in {lo}..{hi}")
    if a.n_prompt == 0 and a.n_gen == 0:
        p.error("-p and -n are both 0: nothing to run")
    if not os.path.isfile(os.path.join(a.model_dir, "config.json")):
        p.error(f"{a.model_dir}: no config.json (make it with "
                "`kiln quantize recipes/f32.lua --model smollm2 -o DIR`)")
    a.variants = [v for v in a.variants.split(",") if v]
    for v in a.variants:
        if v not in VARIANTS:
            p.error(f"--variants: unknown {v!r} (known: {', '.join(VARIANTS)})")
    return a


def main(argv):
    args = parse_args(argv)
    warnings.filterwarnings("ignore")
    import torch
    import transformers

    transformers.utils.logging.disable_progress_bar()
    torch.set_num_threads(args.threads)
    for variant in args.variants:
        for r in bench_variant(args, variant):
            if "avg_ts" in r and not math.isfinite(r["avg_ts"]):
                r = {k: v for k, v in r.items() if not k.endswith("_ts")}
                r["error"] = "non-finite t/s"
            print(json.dumps(r), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
