-- epilogue activations are silu or gelu
return recipe "bad" {
  rule "*" {
    weights = int8,
    epilogue = { bias = true,
                 act = "relu" },
  },
}
