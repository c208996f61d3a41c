-- an unclosed set in a Lua pattern
return recipe "bad" {
  rule "%.attn[q" { match = "lua", weights = int8 },
}
