#!/usr/bin/env python
"""The SAMed LoRA training step: the seed's fp32 recipe against hemabook's, at equal batch, in images/s and memory.

    python benchmarks/samed_train_step.py --device cuda --out samed_train_step.json [--compile]

The model is the one `hemabook.sam.semantic.semantic_sam` builds for SAMed: ViT-B at 512 px, 8 classes + background,
the encoder frozen with rank-4 LoRA on q and v, the mask decoder trained (random weights: nothing is downloaded).
A step is forward, loss, backward and an AdamW update on a batch of `--bs` random images and label maps. The loss is
cross-entropy on the low-resolution logits; SAMed adds a soft Dice term, which costs nothing measurable beside the
encoder.

- seed recipe: `segment_anything`'s reference attention, fp32 throughout (SAMed's training script);
- hemabook: `FastAttention` in the form `--attention` (default `'auto'`) under bf16 autocast, as `hb_learner`
  trains with `amp='bf16'`; with `--compile`, also that model under `torch.compile` (the compile time is reported).

Both start from the same weights; the first step's LoRA gradients are compared (relative error of hemabook's
against the seed's), and each path's peak memory is read from the CUDA allocator.
"""
import argparse, copy, json, time, traceback
from pathlib import Path

import torch
import torch.nn.functional as F

from hemabook.core import logger, set_seed
from hemabook.sam.model import set_attention, use_fast_attention
from hemabook.sam.semantic import semantic_sam
from machine import machine

def step_fn(model, opt, x, y, amp):
    def step():
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
            loss = F.cross_entropy(model(x).float(), y)
        opt.zero_grad(set_to_none=True); loss.backward(); opt.step()
        return loss
    return step

def lora_grads(model, x, y, amp):
    "Gradients of the trainable tensors the loss reaches, on one batch (no update)."
    model.zero_grad(set_to_none=True)
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp): loss = F.cross_entropy(model(x).float(), y)
    loss.backward()
    return [p.grad.detach().float().clone() for p in model.parameters() if p.grad is not None]

def bench(label, model, x, y, amp, a, dev, **kw):
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    step = step_fn(model, opt, x, y, amp)
    if dev.type == 'cuda': torch.cuda.empty_cache(); torch.cuda.reset_peak_memory_stats()
    r = dict(path=label, bs=len(x), **kw)
    sync = torch.cuda.synchronize if dev.type == 'cuda' else (lambda: None)
    try:
        t = time.perf_counter(); step(); sync(); r['first_step_s'] = time.perf_counter() - t
        for _ in range(a.warmup - 1): step()
        sync(); t = time.perf_counter()
        for _ in range(a.steps): loss = step()
        sync(); r['img_s'] = a.steps*len(x)/(time.perf_counter() - t); r['loss'] = loss.item()
        r['peak_mb'] = round(torch.cuda.max_memory_allocated()/2**20) if dev.type == 'cuda' else None
    except Exception as e: r['error'] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
    print(' ', r, flush=True)
    return r

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--device', default='cuda'); p.add_argument('--arch', default='vit_b')
    p.add_argument('--size', type=int, default=512); p.add_argument('--bs', type=int, default=12)
    p.add_argument('--steps', type=int, default=8); p.add_argument('--warmup', type=int, default=2)
    p.add_argument('--attention', default='auto'); p.add_argument('--compile', action='store_true')
    p.add_argument('--out', default='samed_train_step.json')
    a = p.parse_args(); dev = torch.device(a.device)
    logger.setLevel('ERROR')            # semantic_sam warns that a random encoder is not the paper's recipe
    set_seed(0)
    seed_m = semantic_sam(a.arch, a.size, n_classes=8, rank=4, encoder='lora').to(dev)
    use_fast_attention(seed_m, False)
    with torch.no_grad():               # random position tables: SAM's zeros would hide errors in the bias
        for n,q in seed_m.named_parameters():
            if 'rel_pos' in n: q.normal_(0, .5)
    hb_m = set_attention(copy.deepcopy(seed_m), a.attention)
    g = torch.Generator(device='cpu').manual_seed(0)
    x = torch.rand(a.bs, 3, a.size, a.size, generator=g).to(dev)
    y = torch.randint(0, 9, (a.bs, a.size//4, a.size//4), generator=g).to(dev)
    out = dict(machine=machine(dev), args=vars(a),
               trainable=sum(q.numel() for q in seed_m.parameters() if q.requires_grad), runs=[])
    try:
        gs,gh = lora_grads(seed_m, x, y, False),lora_grads(hb_m, x, y, True)
        hv,sv = torch.cat([t.flatten() for t in gh]),torch.cat([t.flatten() for t in gs])
        out['grad_rel_err'] = ((hv - sv).norm()/sv.norm()).item()     # LoRA's B starts at 0, so A's gradients are 0
        print('  first-step gradients, hemabook (bf16) vs seed (fp32): rel. err', out['grad_rel_err'], flush=True)
    except Exception: traceback.print_exc()
    seed = bench('seed: reference attention, fp32', seed_m, x, y, False, a, dev, attention='reference',
                 precision='fp32')
    out['runs'].append(seed)
    out['runs'].append(bench(f'hemabook: {a.attention} attention, bf16 autocast', hb_m, x, y, True, a, dev,
                             attention=a.attention, precision='amp'))
    if a.compile:
        out['runs'].append(bench(f'hemabook: {a.attention} attention, bf16 autocast, compiled',
                                 torch.compile(hb_m, dynamic=False), x, y, True, a, dev, attention=a.attention,
                                 precision='amp', compiled=True))
    for r in out['runs']:
        if r.get('img_s') and seed.get('img_s'): r['ratio'] = r['img_s']/seed['img_s']
        if r.get('peak_mb') and seed.get('peak_mb'): r['memory_ratio'] = r['peak_mb']/seed['peak_mb']
    print('\n| path | bs | img/s | × seed | peak MB |\n|---|---|---|---|---|')
    for r in out['runs']:
        print(f"| {r['path']} | {r['bs']} | {r.get('img_s', float('nan')):.1f} | {r.get('ratio', float('nan')):.2f}× "
              f"| {r.get('peak_mb')} |")
    Path(a.out).write_text(json.dumps(out, indent=2) + '\n'); print(f"\nwritten {a.out}")

if __name__ == '__main__': main()
