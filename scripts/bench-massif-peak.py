import re,sys,collections
lines=open(sys.argv[1]).read().split('\n')
# find peak snapshot
snaps=[];cur=None
for i,l in enumerate(lines):
    if l.startswith('snapshot='): cur={'i':i}; snaps.append(cur)
    elif cur is not None and l.startswith('mem_heap_B='): cur['heap']=int(l.split('=')[1])
    elif cur is not None and l.startswith('heap_tree='): cur['tree']=l.split('=')[1]
peak=[s for s in snaps if s.get('tree')=='peak'][0]
print('peak heap bytes', peak['heap'])
# parse tree starting after heap_tree line
start=peak['i']
while not lines[start].startswith('heap_tree='): start+=1
start+=1
node_re=re.compile(r'^( *)n(\d+): (\d+) (.*)$')
stack=[]
pat=[s for s in sys.argv[2].split('|')]
agg=collections.Counter()
def keyof(name):
    for p in pat:
        if p in name: 
            m=re.search(r'(\S*'+re.escape(p)+r'[^\s(]*)',name)
            return m.group(1)[:150] if m else p
    return None
i=start
# recursive parse: each node line followed by its children
def parse(i, path_key):
    m=node_re.match(lines[i]); 
    nch=int(m.group(2)); b=int(m.group(3)); name=m.group(4)
    k = path_key or keyof(name)
    i+=1
    if nch==0:
        agg[k or 'other']+=b
    else:
        for _ in range(nch):
            i=parse(i,k)
    return i
sys.setrecursionlimit(100000)
parse(start,None)
tot=sum(agg.values())
for k,v in agg.most_common(25): print(f'{v/1024/1024:8.2f} MiB {v/tot*100:5.1f}%  {k}')
