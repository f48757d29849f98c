#!/usr/bin/env python3
"""Fails when the top-level modules of src/ import each other in a cycle.

Reads every `crate::MODULE` path outside comments and `#[cfg(test)]` code, builds the graph
of top-level modules (src/X.rs or src/X/), prints it, and exits 1 on a strongly connected
component of more than one module. docs/architecture.md states the intended layering.
"""
import os, re, sys
root='src'
mods={}
for dp,dn,fn in os.walk(root):
    for f in fn:
        if not f.endswith('.rs'): continue
        p=os.path.join(dp,f); rel=os.path.relpath(p,root)
        top=rel.split('/')[0].replace('.rs','')
        if top in ('lib','main'): continue
        txt=open(p).read()
        # drop test modules
        txt=re.split(r'#\[cfg\(test\)\]',txt)[0]
        txt='\n'.join(l for l in txt.split('\n') if not l.strip().startswith('//'))
        deps=set(re.findall(r'crate::([a-z_]+)',txt))
        mods.setdefault(top,set()).update(d for d in deps if d!=top)
# find cycles among all modules (SCCs)
idx={};low={};st=[];on=set();res=[];i=[0]
def sc(v):
    idx[v]=low[v]=i[0];i[0]+=1;st.append(v);on.add(v)
    for w in mods.get(v,()):
        if w not in mods: continue
        if w not in idx: sc(w);low[v]=min(low[v],low[w])
        elif w in on: low[v]=min(low[v],idx[w])
    if low[v]==idx[v]:
        comp=[]
        while True:
            w=st.pop();on.discard(w);comp.append(w)
            if w==v:break
        res.append(comp)
for v in mods:
    if v not in idx: sc(v)
cyc=[c for c in res if len(c)>1]
for m in sorted(mods): print(f"{m:10} -> {', '.join(sorted(d for d in mods[m] if d in mods))}")
print("cycles:", cyc if cyc else "none")
sys.exit(1 if cyc else 0)
