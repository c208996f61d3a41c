-- fp8-e5m2: FP8 E5M2 (more range, less precision than E4M3) for weights per
-- channel and dynamic per-token activations. Useful when values span a wide
-- range; E4M3 is usually more accurate for inference.
return recipe "fp8-e5m2" {
  rule "*" {
    weights = fp8_e5m2 { per = "channel" },
    activations = fp8_e5m2 { per = "token", dynamic = true },
  },
}
