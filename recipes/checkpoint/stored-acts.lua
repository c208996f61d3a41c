-- stored-acts: run a quantized checkpoint as it is stored, activations included
-- (kiln quantize output, llm-compressor / compressed-tensors, AutoGPTQ, AutoAWQ;
-- docs/checkpoints.md): every layer keeps the file's own codes, scales and zero
-- points, and quantizes its input as the file declares: dynamic per-token or
-- per-tensor int8 / fp8, or static with the file's input_scale (input_zero_point);
-- f16 activations for layers the file quantizes weight-only (GPTQ, AWQ, W4A16).
return recipe "stored-acts" {
  ignore = { "lm_head" },
  rule "*" { weights = stored, activations = stored },
}
