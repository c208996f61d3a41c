#!/usr/bin/env python3
"""tests/fuzz/make_seeds.py DIR — small, valid GGUF and safetensors files as seed corpora
for the fuzz_gguf and fuzz_safetensors targets: DIR/gguf/*.gguf, DIR/safetensors/*.safetensors.
Each seed covers a different part of its reader (types, metadata kinds, alignment,
tokenizer vocabularies); all stay under the fuzzers' -max_len (scripts/fuzz.sh)."""
import json
import os
import struct
import sys

out = sys.argv[1]
os.makedirs(out + '/gguf', exist_ok=True)
os.makedirs(out + '/safetensors', exist_ok=True)


def s(t):
    b = t.encode()
    return struct.pack('<Q', len(b)) + b


def kv_str(k, v):
    return s(k) + struct.pack('<I', 8) + s(v)


def kv_arr(k, et, items):
    return s(k) + struct.pack('<IIQ', 9, et, len(items)) + b''.join(items)


def tensor_info(name, ne, ggml_type, off):
    return s(name) + struct.pack('<I', len(ne)) + b''.join(struct.pack('<Q', n) for n in ne) + \
        struct.pack('<IQ', ggml_type, off)


def gguf(kvs, infos, data, align=32, version=3):
    g = b'GGUF' + struct.pack('<IQQ', version, len(infos), len(kvs)) + b''.join(kvs) + b''.join(infos)
    return g + b'\0' * (-len(g) % align) + data


def write(name, b):
    with open(out + '/' + name, 'wb') as f:
        f.write(b)


# 1. A GPT-2 style BPE vocabulary (byte tokens, one merge, a special token) and two tensors.
bs = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
rest = sorted(set(range(256)) - set(bs))
toks = [chr(b if b in bs else 256 + rest.index(b)) for b in range(256)] + ['ab', '<|x|>']
kvs = [kv_str('tokenizer.ggml.model', 'gpt2'), kv_str('tokenizer.ggml.pre', 'smollm'),
       kv_arr('tokenizer.ggml.tokens', 8, [s(t) for t in toks]),
       kv_arr('tokenizer.ggml.merges', 8, [s('a b')]),
       kv_arr('tokenizer.ggml.token_type', 5, [struct.pack('<i', 6)] * 256 + [struct.pack('<i', 1), struct.pack('<i', 3)])]
infos = [tensor_info('w', [32, 2], 3, 0), tensor_info('b', [4], 0, 64)]
data = bytes(range(40)) + b'\0' * 24 + struct.pack('<4f', 1, 2, 3, 4)
write('gguf/bpe_vocab.gguf', gguf(kvs, infos, data))

# 2. Every scalar metadata type, a nested array, alignment 64, Q8_0 / Q4_0 / F16 / BF16 / F32.
scal = [(0, '<B', 7), (1, '<b', -7), (2, '<H', 700), (3, '<h', -700), (4, '<I', 70000),
        (5, '<i', -70000), (6, '<f', 1.5), (7, '<B', 1), (10, '<Q', 2**40), (11, '<q', -2**40),
        (12, '<d', 2.25)]
kvs = [s('general.k%d' % t) + struct.pack('<I', t) + struct.pack(f, v) for t, f, v in scal]
kvs.append(kv_str('general.architecture', 'llama'))
kvs.append(s('general.alignment') + struct.pack('<II', 4, 64))
kvs.append(s('general.nested') + struct.pack('<IIQ', 9, 9, 2) +
           struct.pack('<IQ', 4, 2) + struct.pack('<2I', 1, 2) + struct.pack('<IQ', 6, 1) + struct.pack('<f', 0.5))
kvs.append(kv_arr('general.floats', 6, [struct.pack('<f', x) for x in (0.25, -1.0, 3.0)]))
q8 = struct.pack('<e', 0.5) + bytes((i * 7) & 0xff for i in range(32))
q4 = struct.pack('<e', 0.25) + bytes(range(16))
f16 = struct.pack('<8e', *[i / 4 for i in range(8)])
bf16 = struct.pack('<8H', *[0x3f80 + i for i in range(8)])
f32 = struct.pack('<4f', 0.5, -1, 2, 8)
blobs = [('q8', [32, 1], 8, q8), ('q4', [32], 2, q4), ('h', [4, 2], 1, f16), ('bf', [8], 30, bf16),
         ('f', [2, 2], 0, f32)]
infos, data = [], b''
for name, ne, t, blob in blobs:
    data += b'\0' * (-len(data) % 64)
    infos.append(tensor_info(name, ne, t, len(data)))
    data += blob
write('gguf/types.gguf', gguf(kvs, infos, data, align=64))

# 3. A WordPiece (BERT) vocabulary, GGUF version 2, no tensors.
wp = ['[PAD]', '[UNK]', '[CLS]', '[SEP]', 'hello', 'world', '##s', ',', '!']
kvs = [kv_str('tokenizer.ggml.model', 'bert'), kv_arr('tokenizer.ggml.tokens', 8, [s(t) for t in wp])]
write('gguf/wordpiece.gguf', gguf(kvs, [], b'', version=2))


def safetensors(header, data):
    h = json.dumps(header, separators=(',', ':')).encode()
    h += b' ' * (-len(h) % 8)
    return struct.pack('<Q', len(h)) + h + data


# 4. safetensors: metadata and two dtypes; every plain dtype; an empty tensor and a scalar.
write('safetensors/small.safetensors', safetensors(
    {'__metadata__': {'format': 'pt'}, 'a': {'dtype': 'F16', 'shape': [2, 2], 'data_offsets': [0, 8]},
     'b': {'dtype': 'I64', 'shape': [1], 'data_offsets': [8, 16]}}, bytes(range(16))))
dts = [('F64', 8), ('F32', 4), ('F16', 2), ('BF16', 2), ('I64', 8), ('I32', 4), ('I16', 2), ('I8', 1),
       ('U8', 1), ('BOOL', 1), ('U16', 2), ('F8_E4M3', 1)]
hdr, off = {}, 0
for i, (dt, size) in enumerate(dts):
    hdr['t%d.%s' % (i, dt.lower())] = {'dtype': dt, 'shape': [2, 3], 'data_offsets': [off, off + 6 * size]}
    off += 6 * size
hdr['empty'] = {'dtype': 'F32', 'shape': [0, 4], 'data_offsets': [off, off]}
hdr['scalar'] = {'dtype': 'F32', 'shape': [], 'data_offsets': [off, off + 4]}
off += 4
write('safetensors/dtypes.safetensors', safetensors(hdr, bytes((i * 37) & 0x7f for i in range(off))))

# 5. A whole tiny Llama (width 4, 2 heads, 1 KV head, FFN 8, 1 block, 12 tokens, F16 weights) that
#    fuzz_gguf's cross-check passes: mutations of it reach the shape, count and range checks.
ne_f16 = lambda n: struct.pack('<%de' % n, *[((i * 7) % 11 - 5) / 8 for i in range(n)])
def f32kv(k, v):
    return s(k) + struct.pack('<If', 6, v)
def u32kv(k, v):
    return s(k) + struct.pack('<II', 4, v)
toks = ['t%d' % i for i in range(12)]
kvs = [kv_str('general.architecture', 'llama'), u32kv('llama.block_count', 1),
       u32kv('llama.embedding_length', 4), u32kv('llama.feed_forward_length', 8),
       u32kv('llama.attention.head_count', 2), u32kv('llama.attention.head_count_kv', 1),
       u32kv('llama.context_length', 64), f32kv('llama.attention.layer_norm_rms_epsilon', 1e-5),
       f32kv('llama.rope.freq_base', 10000.0), u32kv('llama.rope.dimension_count', 2),
       kv_str('tokenizer.ggml.model', 'gpt2'), kv_arr('tokenizer.ggml.tokens', 8, [s(t) for t in toks]),
       kv_arr('tokenizer.ggml.merges', 8, [])]
shapes = [('token_embd.weight', [4, 12]), ('output_norm.weight', [4]), ('blk.0.attn_norm.weight', [4]),
          ('blk.0.ffn_norm.weight', [4]), ('blk.0.attn_q.weight', [4, 4]), ('blk.0.attn_k.weight', [4, 2]),
          ('blk.0.attn_v.weight', [4, 2]), ('blk.0.attn_output.weight', [4, 4]),
          ('blk.0.ffn_gate.weight', [4, 8]), ('blk.0.ffn_up.weight', [4, 8]), ('blk.0.ffn_down.weight', [8, 4])]
infos, data = [], b''
for name, ne in shapes:
    data += b'\0' * (-len(data) % 32)
    infos.append(tensor_info(name, ne, 1, len(data)))
    n = 1
    for x in ne:
        n *= x
    data += ne_f16(n)
write('gguf/tiny_llama.gguf', gguf(kvs, infos, data))

# 6. A whole tiny BERT (width 4, 2 heads, FFN 8, 1 layer, 10 tokens, 8 positions), its
#    config.json in the "config" metadata string that fuzz_safetensors' cross-check reads.
cfg = {'num_hidden_layers': 1, 'hidden_size': 4, 'num_attention_heads': 2, 'intermediate_size': 8,
       'max_position_embeddings': 8, 'vocab_size': 10, 'type_vocab_size': 2, 'layer_norm_eps': 1e-12}
ts = [('embeddings.word_embeddings.weight', [10, 4]), ('embeddings.position_embeddings.weight', [8, 4]),
      ('embeddings.token_type_embeddings.weight', [2, 4]), ('embeddings.LayerNorm.weight', [4]),
      ('embeddings.LayerNorm.bias', [4])]
for m, n, k in [('attention.self.query', 4, 4), ('attention.self.key', 4, 4), ('attention.self.value', 4, 4),
                ('attention.output.dense', 4, 4), ('intermediate.dense', 8, 4), ('output.dense', 4, 8),
                ('attention.output.LayerNorm', 4, 0), ('output.LayerNorm', 4, 0)]:
    ts += [('encoder.layer.0.%s.weight' % m, [n, k] if k else [n]), ('encoder.layer.0.%s.bias' % m, [n])]
hdr, off = {'__metadata__': {'config': json.dumps(cfg, separators=(',', ':'))}}, 0
for name, shape in ts:
    n = 1
    for x in shape:
        n *= x
    hdr[name] = {'dtype': 'F16', 'shape': shape, 'data_offsets': [off, off + 2 * n]}
    off += 2 * n
write('safetensors/tiny_bert.safetensors', safetensors(hdr, ne_f16(off // 2)))
