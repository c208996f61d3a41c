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
