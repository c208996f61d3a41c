-- activations = stored takes each layer's scheme from the model file, with its
-- stored weights: a rule that quantizes the weights itself has no file to read
return recipe "bad" {
  rule "*.mlp.*" { weights = stored, activations = stored },
  rule "*" {
    weights = int8,
    activations = stored,
  },
}
