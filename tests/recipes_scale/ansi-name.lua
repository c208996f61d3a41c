return recipe "\27[31mred" {
  rule "*" { weights = int8 },
}
