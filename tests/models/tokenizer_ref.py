import sys, os
import tokenizers, gguf
from tokenizers import Tokenizer, models, pre_tokenizers, decoders, AddedToken
D=os.path.expanduser('~/.cache/kiln/models')
S=[
 "Hello, world!",
 "The quick brown fox jumps over the lazy dog.",
 "Numbers: 12345 and 3.14, also 1,000,000.",
 "I'm sure you're right, they'll say it's fine; we've done what'd work.",
 "café naïve résumé Ångström Œuvre Straße İstanbul Łódź",
 "multiple   spaces\tand\ttabs\n\nnew lines\n",
 "emoji 😀🎉 and symbols € ± → ✓",
 "中文字符和日本語のテキスト、한국어",
 "supercalifragilisticexpialidocious antidisestablishmentarianism",
 "<|im_start|>user\nHi<|im_end|>",
 "   leading and trailing spaces   ",
 "MiXeD CaSe, UPPER lower; punctuation!?... (brackets) [x] {y} \"quotes\" 'single'",
 "x" * 120,
 "e-mail: someone@example.com, url https://example.org/a?b=c&d=e#f",
 "tab\there [CLS] and [SEP] inside",
]
def esc(s): return s.replace('\\','\\\\').replace('\n','\\n').replace('\t','\\t')
which=sys.argv[1]
if which=='minilm':
    tok=Tokenizer.from_file(D+'/minilm/tokenizer.json'); tok.no_padding(); tok.no_truncation()
    print('# MiniLM (all-MiniLM-L6-v2) WordPiece ids incl. [CLS]/[SEP], from the model\'s own tokenizer.json via HF tokenizers %s (Python); sentence<TAB>ids, \\n \\t \\\\ escaped' % tokenizers.__version__)
    for s in S: print(esc(s)+'\t'+' '.join(map(str,tok.encode(s).ids)))
else:
    r=gguf.GGUFReader(D+'/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf')
    toks=r.fields['tokenizer.ggml.tokens'].contents(); merges=r.fields['tokenizer.ggml.merges'].contents()
    tt=r.fields['tokenizer.ggml.token_type'].contents()
    vocab={t:i for i,t in enumerate(toks)}
    bpe=models.BPE(vocab,[tuple(m.split(' ',1)) for m in merges])
    tk=Tokenizer(bpe)
    tk.pre_tokenizer=pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),pre_tokenizers.ByteLevel(add_prefix_space=False,use_regex=True)])
    tk.decoder=decoders.ByteLevel()
    tk.add_special_tokens([AddedToken(toks[i],special=True,normalized=False) for i in range(len(toks)) if tt[i] in (3,4)])
    ref=[tk.encode(s).ids for s in S]
    for s,ids in zip(S,ref): assert tk.decode(ids,skip_special_tokens=False)==s,(s,tk.decode(ids,skip_special_tokens=False))
    print('# SmolLM2-135M-Instruct byte-level BPE ids (no BOS), from the GGUF\'s own tokens/merges via HF tokenizers %s: BPE + Sequence[Digits(individual_digits), ByteLevel(add_prefix_space=false)] (= HF SmolLM2 tokenizer.json, llama.cpp pre "smollm"), control tokens as special; sentence<TAB>ids, \\n \\t \\\\ escaped' % tokenizers.__version__)
    for s,ids in zip(S,ref): print(esc(s)+'\t'+' '.join(map(str,ids)))
