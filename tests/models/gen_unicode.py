#!/usr/bin/env python3
# tests/models/gen_unicode.py — generates the tables of model/tokenizers/unicode_tables.inc
# (run: python3 tests/models/gen_unicode.py model/tokenizers/unicode_tables.inc).
import unicodedata as u, sys
def ranges(pred):
    r=[];s=None
    for c in range(0x110000):
        if pred(c):
            if s is None: s=c
        else:
            if s is not None: r.append((s,c-1)); s=None
    if s is not None: r.append((s,0x10ffff))
    return r
cat=lambda c:u.category(chr(c))
def emit(name, rs, out):
    out.append('static const KilnURange %s[] = {' % name)
    line='   '
    for a,b in rs:
        item=' {0x%X, 0x%X},' % (a,b)
        if len(line)+len(item)>96:
            out.append(line); line='   '
        line+=item
    out.append(line)
    out.append('};')
out=[]
out.append('/* model/tokenizers/unicode_tables.inc — Unicode %s tables for model/tokenizers/unicode.c (letters, numbers,' % u.unidata_version)
out.append(' * punctuation, nonspacing marks, "other", lowercase runs, accent stripping). Generated from')
out.append(" * Python's unicodedata by tests/models/gen_unicode.py; do not edit by hand. */")
emit('letters', ranges(lambda c:cat(c)[0]=='L'), out)
emit('numbers', ranges(lambda c:cat(c)[0]=='N'), out)
emit('puncts', ranges(lambda c:cat(c)[0]=='P'), out)
emit('marks_mn', ranges(lambda c:cat(c)=='Mn'), out)
emit('others', ranges(lambda c:cat(c) in ('Cc','Cf','Cs','Co','Cn')), out)
low=[(c,ord(chr(c).lower()[0])) for c in range(0x110000) if chr(c).lower()!=chr(c)]
runs=[]
for c,l in low:
    d=l-c
    if runs:
        s,e,dd,st=runs[-1]
        if dd==d and (st==0 or c-e==st) and c-e in (1,2):
            runs[-1]=(s,c,d,c-e); continue
    runs.append((c,c,d,0))
out.append('static const KilnULower lowers[] = {')
line='   '
for s,e,d,st in runs:
    item=' {0x%X, 0x%X, %d, %d},' % (s,e,d,max(st,1))
    if len(line)+len(item)>96: out.append(line); line='   '
    line+=item
out.append(line); out.append('};')
def strip(c):
    d=u.normalize('NFD',chr(c)); return ''.join(x for x in d if u.category(x)!='Mn')
st=[]
for c in list(range(0xC0,0x500))+list(range(0x1E00,0x2000)):
    s=strip(c)
    if s!=chr(c) and cat(c)!='Mn' and len(s)==1: st.append((c,ord(s)))
out.append('static const KilnUStrip strips[] = {')
line='   '
for c,b in st:
    item=' {0x%X, 0x%X},' % (c,b)
    if len(line)+len(item)>96: out.append(line); line='   '
    line+=item
out.append(line); out.append('};')
open(sys.argv[1],'w').write('\n'.join(out)+'\n')
