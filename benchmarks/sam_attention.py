#!/usr/bin/env python
"""SAM's encoder attention: every form of `FastAttention` against the reference, per block and for the whole encoder.

    python benchmarks/sam_attention.py --device cuda --out sam_attention.json [--compile]

In one run on one machine, with random ViT-B weights (no download) whose relative-position tables are filled with
random values (SAM starts them at zero, which would hide errors in the bias):

1. **blocks**: one global block (64×64 tokens, a 1024-px image) and one windowed block (14×14 tokens), `--bs` images'
   worth of each, in bf16, for every form (`hemabook.sam.model.ATTENTION_FORMS`) and, for the folded forms, each
   SDPA backend that takes them; ms per image and the max error against the fp32 reference block;
2. **gradients**: input and parameter gradients of every form against the fp32 reference, on one global block of a
   32×32 grid with a 127-row table resized at run time (as a 1024-px checkpoint's at 512 px), in fp32;
3. **encoder**: the whole ViT-B encoder at each `--sizes`: the seed path (reference attention, fp32, one image at a
   time, as SAMed and BC-SAM run it) against each form under bf16 autocast, the fastest form with bf16 weights, and
   (`--compile`) that one compiled; images/s, the ratio to the seed path, peak memory and the relative error of the
   embeddings against the seed path's.

The seed path is timed in the same run, so the ratios hold whatever else the machine is doing; the JSON keeps every
number. On the CPU it runs at small sizes as a check that it works (`--device cpu --sizes 128 --bs 2`).
"""
import argparse, copy, json, time, traceback
from contextlib import nullcontext
from pathlib import Path

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from segment_anything.modeling.image_encoder import Attention

from hemabook.core import set_seed
from hemabook.sam.model import ATTENTION_FORMS, build_encoder, set_attention, use_fast_attention
from machine import machine

FORMS = [f for f in ATTENTION_FORMS if f != 'auto']
BACKENDS = dict(cudnn=SDPBackend.CUDNN_ATTENTION, efficient=SDPBackend.EFFICIENT_ATTENTION,
                flash=SDPBackend.FLASH_ATTENTION)

def sync(dev):
    if dev.type == 'cuda': torch.cuda.synchronize()

def rate(f, n_img, dev, seconds, warmup=2):
    "Images per second of `f()`, which handles `n_img` images, timed for about `seconds` after `warmup` calls."
    for _ in range(warmup): f()
    sync(dev); t = time.perf_counter(); n = 0
    while True:
        f(); n += n_img; sync(dev)
        if time.perf_counter() - t > seconds: break
    return n/(time.perf_counter() - t)

def peak_reset(dev):
    if dev.type == 'cuda': torch.cuda.empty_cache(); torch.cuda.reset_peak_memory_stats()

def peak_mb(dev): return round(torch.cuda.max_memory_allocated()/2**20) if dev.type == 'cuda' else None

def rel_err(a, b): return ((a.float() - b.float()).norm()/b.float().norm()).item()

def randomise(m, seed=0, sd=0.5):
    "Random relative and absolute position tables (SAM initialises them to zero)."
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n,p in m.named_parameters():
            if 'rel_pos' in n or n == 'pos_embed': p.copy_(torch.randn(p.shape, generator=g)*sd)
    return m

def blocks(a, dev, out):
    "Per-block ms/image of each form (and backend) in bf16, with the max error against the fp32 reference."
    g = a.block_grid
    for name,grid,n in (('global', (g, g), a.bs), ('window', (14, 14), a.bs*((g + 13)//14)**2)):
        ref_m = randomise(Attention(768, 12, use_rel_pos=True, input_size=grid)).to(dev).eval()
        x = torch.randn(n, *grid, 768, device=dev)
        with torch.no_grad(): ref = ref_m(x[:2])
        m = copy.deepcopy(ref_m).to(torch.bfloat16); xb = x.to(torch.bfloat16)
        runs = [('reference', None)] + [(f, None) for f in FORMS]
        if dev.type == 'cuda': runs += [(f, b) for f in ('folded', 'folded_slim') for b in BACKENDS]
        for form,backend in runs:
            r = dict(block=name, tokens=grid[0]*grid[1], sequences=n, form=form, backend=backend or 'default')
            try:
                use_fast_attention(m, False) if form == 'reference' else set_attention(m, form)
                with torch.inference_mode(), sdpa_kernel(BACKENDS[backend]) if backend else nullcontext():
                    r['max_abs_err'] = (m(xb[:2]).float() - ref).abs().max().item()
                    r['ms_per_img'] = 1e3/rate(lambda: m(xb), a.bs, dev, a.seconds/4)
            except Exception as e: r['error'] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
            out['blocks'].append(r); print('  block', r, flush=True)
        del ref_m, m, x, xb; peak_reset(dev)

def gradients(a, dev, out):
    "Input and parameter gradients of each form against the reference, fp32, global block with a resized table."
    att = randomise(Attention(768, 12, use_rel_pos=True, input_size=(64, 64))).to(dev)   # 127-row tables
    x = torch.randn(2, 32, 32, 768, device=dev, requires_grad=True)
    w = torch.randn(2, 32, 32, 768, device=dev)
    def grads(form):
        use_fast_attention(att, False) if form == 'reference' else set_attention(att, form)
        att.zero_grad(); x.grad = None
        (att(x)*w).sum().backward()
        return [x.grad] + [p.grad for p in att.parameters()]
    ref = [g.clone() for g in grads('reference')]
    for form in FORMS:
        r = dict(form=form)
        try: r['max_rel_err'] = max(rel_err(g, gr) for g,gr in zip(grads(form), ref))
        except Exception as e: r['error'] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
        out['gradients'].append(r); print('  gradients', r, flush=True)

def encoder(a, dev, out):
    "Whole-encoder images/s: seed path, each form (bf16 autocast), the best with bf16 weights, and compiled."
    for sz,bs in zip(a.sizes, a.encoder_bs):
        set_seed(0)
        enc = randomise(build_encoder('vit_b', sz, attention='reference')).to(dev).eval()
        x = torch.randn(bs, 3, sz, sz, device=dev)
        res = []
        def run(label, m, xx, amp, n_img, **kw):
            peak_reset(dev); r = dict(size=sz, path=label, bs=len(xx), **kw)
            try:
                with torch.inference_mode(), torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
                    t = time.perf_counter(); y = m(xx[:1]); sync(dev); r['first_call_s'] = time.perf_counter() - t
                    r['rel_err'] = rel_err(y, seed_emb) if label != 'seed' else 0.
                    r['img_s'] = rate(lambda: m(xx), n_img, dev, a.seconds) if n_img else None
                r['peak_mb'] = peak_mb(dev)
            except Exception as e: r['error'] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
            res.append(r); out['encoder'].append(r); print('  encoder', r, flush=True)
            return r
        with torch.inference_mode(): seed_emb = enc(x[:1]).float()
        seed = run('seed', enc, x[:1], False, 1, precision='fp32', attention='reference')
        for form in a.forms:
            run(f'hemabook {form}, amp', set_attention(enc, form), x, True, bs, precision='amp', attention=form)
        ok = [r for r in res if r.get('img_s') and r['path'] != 'seed']
        best = max(ok, key=lambda r: r['img_s'])['attention'] if ok else 'folded'
        enc16 = copy.deepcopy(set_attention(enc, best)).to(torch.bfloat16)
        run(f'hemabook {best}, bf16 weights', enc16, x.to(torch.bfloat16), False, bs, precision='bf16', attention=best)
        if a.compile:
            comp = torch.compile(enc16, dynamic=False)
            run(f'hemabook {best}, bf16 weights, compiled', comp, x.to(torch.bfloat16), False, bs,
                precision='bf16', attention=best, compiled=True)
        for r in res:
            if r.get('img_s') and seed.get('img_s'): r['ratio'] = r['img_s']/seed['img_s']
        del enc, enc16, x; peak_reset(dev)

def table(out):
    rows = ["| px | path | bs | img/s | × seed | peak MB | rel. err vs seed |", "|---|---|---|---|---|---|---|"]
    for r in out['encoder']:
        if 'error' in r: rows.append(f"| {r['size']} | {r['path']} | {r['bs']} | failed: {r['error'][:60]} | | | |")
        else: rows.append(f"| {r['size']} | {r['path']} | {r['bs']} | {r['img_s']:.1f} | {r.get('ratio', 1):.2f}× | "
                          f"{r['peak_mb']} | {r['rel_err']:.1e} |")
    return '\n'.join(rows)

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--device', default='cuda')
    p.add_argument('--sizes', type=int, nargs='+', default=[1024, 224], help='encoder input sides')
    p.add_argument('--encoder-bs', type=int, nargs='+', default=[16, 256], help='batch per size (hemabook paths)')
    p.add_argument('--bs', type=int, default=16, help='images per timed call in the block benchmark')
    p.add_argument('--block-grid', type=int, default=64, help='global block grid side (64: a 1024-px image)')
    p.add_argument('--seconds', type=float, default=3., help='timed seconds per encoder path')
    p.add_argument('--compile', action='store_true', help='also time the best form compiled (costs a minute or two)')
    p.add_argument('--forms', nargs='+', default=FORMS, help='the forms timed in the whole encoder')
    p.add_argument('--parts', nargs='+', default=['blocks', 'gradients', 'encoder'])
    p.add_argument('--out', default='sam_attention.json')
    a = p.parse_args()
    dev = torch.device(a.device)
    out = dict(machine=machine(dev), args=vars(a), blocks=[], gradients=[], encoder=[])
    for part in a.parts:
        print(part, flush=True)
        try: globals()[part](a, dev, out)
        except Exception: out.setdefault('failed', []).append(traceback.format_exc()); traceback.print_exc()
        Path(a.out).write_text(json.dumps(out, indent=2) + '\n')
    print('\n' + table(out)); print(f"\nwritten {a.out}")

if __name__ == '__main__': main()
