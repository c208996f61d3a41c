-- stored: run a quantized checkpoint as it is stored (kiln quantize output,
-- llm-compressor / compressed-tensors, AutoGPTQ, AutoAWQ; docs/checkpoints.md):
-- every layer keeps the file's own codes, scales and zero points; activations f16.
return recipe "stored" {
  ignore = { "lm_head" },
  rule "*" { weights = stored, activations = f16 },
}
