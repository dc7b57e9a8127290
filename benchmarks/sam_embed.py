#!/usr/bin/env python
"""SAM image embeddings: the seed path against hemabook's path, in images/s, at each input size.

    python benchmarks/sam_embed.py --arch vit_b --sizes 1024 512 224 --n 32 --device auto --out results.json

Both paths encode the same synthetic smear JPEGs (written to a temporary folder first, so no data is needed) with the
same randomly initialised encoder (no weights are downloaded):

- seed path (SAMed / BC-SAM style): the untouched `segment_anything` encoder in fp32 with its reference attention,
  under `torch.no_grad`, one image at a time, each read from JPEG with PIL, resized (bilinear) and normalised in the
  loop; the embeddings are kept in a list in memory;
- hemabook path: `EmbeddingEngine` (batches, `FastAttention`, normalisation on the device, bf16 autocast on CUDA,
  optional `torch.compile`) driven by `embed_images`, so JPEG decoding in DataLoader workers and writing the
  float16 cache to disk are included.

The paths alternate for `--rounds` rounds (which goes first alternates too), so load from other processes hits both
alike; the table shows medians and the JSON every round. Warm-up (and compilation) is not timed. `rel_err` compares
hemabook's cached embeddings with the seed path's: the float16 cache (and bf16 on CUDA) is all that separates them.
"""
import argparse, copy, json, resource, shutil, statistics, sys, tempfile, time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader

from hemabook.core import get_device, set_seed
from hemabook.sam.embed import EmbeddingEngine, ImageFiles, _lists, embed_images
from hemabook.sam.model import build_encoder, resolve_norm, set_attention, use_fast_attention
from hemabook.synthetic import synth_smear
from machine import machine

def write_jpegs(d, n, sz, seed=0):
    "`n` different sz×sz smear JPEGs: 4 synthetic fields, rolled, flipped and re-noised."
    rng = np.random.default_rng(seed)
    fields = [synth_smear(min(sz, 512), rng=i)[0] for i in range(4)]
    if sz > 512: fields = [np.asarray(Image.fromarray(f).resize((sz, sz), Image.BICUBIC)) for f in fields]
    paths = []
    for i in range(n):
        f = np.roll(fields[i % 4], int(rng.integers(sz)), axis=int(rng.integers(2)))
        if i % 2: f = f[:, ::-1]
        f = np.clip(f.astype(np.int16) + rng.integers(-3, 4, f.shape), 0, 255).astype(np.uint8)
        Image.fromarray(f).save(d/f'smear{i:05d}.jpg', quality=90); paths.append(d/f'smear{i:05d}.jpg')
    return paths

def seed_path(enc, paths, sz, mean, std, dev):
    "SAMed / BC-SAM style: one image at a time, decoded, resized and normalised in the loop; reference encoder in fp32."
    use_fast_attention(enc, False)
    m,s,out = np.array(mean, np.float32),np.array(std, np.float32),[]
    with torch.no_grad():
        for p in paths:
            img = np.asarray(Image.open(p).convert('RGB').resize((sz, sz), Image.BILINEAR), np.float32)
            x = torch.from_numpy((img - m)/s).permute(2, 0, 1)[None].to(dev)
            out.append(enc(x).cpu().numpy())
    return np.concatenate(out)

def hemabook_path(eng, paths, d):
    "hemabook: `embed_images` with the engine, into a fresh float16 cache."
    shutil.rmtree(d, ignore_errors=True)
    return embed_images(paths, eng, d, verbose=False)

def timed(f, dev):
    if dev.type == 'cuda': torch.cuda.synchronize()
    t = time.perf_counter(); r = f()
    if dev.type == 'cuda': torch.cuda.synchronize()
    return time.perf_counter() - t, r

def per_size(v, sizes, name):
    if len(v) == 1: return v*len(sizes)
    if len(v) != len(sizes): sys.exit(f"--{name}: give one value or one per size ({len(sizes)})")
    return v

def bench_size(args, sz, n, bs, paths, dev, tmp):
    set_seed(0)
    enc = build_encoder(args.arch, sz).eval().to(dev)
    mean,std = resolve_norm('sam')
    eng = EmbeddingEngine(set_attention(copy.deepcopy(enc), args.attention), dev, bs=bs, compile=args.compile,
                          num_workers=args.workers, draft=args.draft, precision=args.precision,
                          decode=args.decode)
    bs = eng.bs
    warm = lambda: (seed_path(enc, paths[:1], sz, mean, std, dev), hemabook_path(eng, paths[:bs], tmp/'warm'))
    t_warm,_ = timed(warm, dev)                                  # not timed: first calls, compilation
    seed_s,hb_s,ref,cache = [],[],None,None
    for r in range(args.rounds):
        for which in (('seed', 'hb') if r % 2 == 0 else ('hb', 'seed')):
            if which == 'seed':
                t,ref = timed(lambda: seed_path(enc, paths[:n], sz, mean, std, dev), dev); seed_s.append(n/t)
            else: t,cache = timed(lambda: hemabook_path(eng, paths[:n], tmp/'cache'), dev); hb_s.append(n/t)
            print(f"  {sz} px round {r}: {which:8s} {n/t:8.2f} img/s", flush=True)
    emb = np.asarray(cache.emb, np.float32)
    res = dict(size=sz, n=n, bs=bs, seed_img_s=statistics.median(seed_s), hemabook_img_s=statistics.median(hb_s),
               seed_runs=seed_s, hemabook_runs=hb_s, warmup_s=t_warm, engine=repr(eng),
               rel_err=float(np.linalg.norm(emb - ref)/np.linalg.norm(ref)))
    res['ratio'] = res['hemabook_img_s']/res['seed_img_s']
    if args.stages: res['stages'] = stages(eng, paths[:n], dev); print(f"  {sz} px stages: {res['stages']}", flush=True)
    del enc, eng
    if dev.type == 'cuda': torch.cuda.empty_cache()
    return res

def stages(eng, paths, dev):
    "Images/s of the pipeline's parts alone: reading and decoding (workers, or workers + the device), and encoding."
    raw = eng.decode == 'device'
    dl = DataLoader(ImageFiles(paths, eng.sz, eng.resize, eng.draft, raw=raw), batch_size=eng.bs,
                    num_workers=eng.num_workers, pin_memory=dev.type == 'cuda' and not raw,
                    collate_fn=_lists if raw else None)
    def read(): return [eng.load(b, paths[i*eng.bs:(i + 1)*eng.bs])[0] if raw else b[0] for i,b in enumerate(dl)]
    t,batches = timed(read, dev)
    out = dict(decode_img_s=len(paths)/t)
    def encode():
        for x in batches: eng.encode(x)[0].to(torch.float16).cpu()
    encode(); t,_ = timed(encode, dev)
    out['encode_img_s'] = len(paths)/t
    return out

def table(results, m):
    rng = lambda v: f"{statistics.median(v):.2f} ({min(v):.2f}–{max(v):.2f})"
    rows = [f"| {r['size']} | {r['n']} | {r['bs']} | {rng(r['seed_runs'])} | {rng(r['hemabook_runs'])} | "
            f"{r['ratio']:.2f}× | {r['rel_err']:.1e} |" for r in results]
    head = (f"{m['gpu'] or m['cpu']} ({m['cores']} cores, {m['threads']} torch threads), torch {m['torch']}, "
            f"{m['device']}\n\n| px | n | bs | seed img/s (range) | hemabook img/s (range) | ratio | emb rel. err |\n"
            "|---|---|---|---|---|---|---|")
    return '\n'.join([head, *rows])

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--arch', default='vit_b', help='a name in hemabook.sam.model.SAM_ARCHS')
    p.add_argument('--sizes', type=int, nargs='+', default=[1024, 512, 224], help='encoder input sides')
    p.add_argument('--n', type=int, nargs='+', default=[32], help='images per size (one value, or one per size)')
    p.add_argument('--batch-size', type=int, nargs='+', default=[None],
                   help="hemabook's batch size (one, or one per size); default: the engine's choice")
    p.add_argument('--device', default='auto', help="'auto', 'cpu', 'cuda', ...")
    p.add_argument('--compile', action='store_true', help='torch.compile the encoder on the hemabook path')
    p.add_argument('--attention', default='auto', help="hemabook's attention form (hemabook.sam.model.ATTENTION_FORMS)")
    p.add_argument('--precision', default=None, help="hemabook's precision: fp32, amp or bf16 (default: the engine's)")
    p.add_argument('--workers', type=int, default=None, help='DataLoader workers (default: the engine\'s choice)')
    p.add_argument('--draft', action='store_true', help='decode JPEGs at reduced scale on the hemabook path')
    p.add_argument('--threads', type=int, default=None, help='torch.set_num_threads for both paths')
    p.add_argument('--decode', default=None, help="hemabook's JPEG decoding: workers or device (default: the engine's)")
    p.add_argument('--stages', action='store_true', help="also time decoding and encoding alone (hemabook's path)")
    p.add_argument('--rounds', type=int, default=2, help='alternating rounds of the two paths; medians are reported')
    p.add_argument('--src-size', type=int, default=512, help='side of the JPEGs written as input')
    p.add_argument('--out', default='results.json', help='JSON file for the results')
    a = p.parse_args()
    if a.threads: torch.set_num_threads(a.threads)
    dev = get_device(None if a.device == 'auto' else a.device)
    ns,bss = per_size(a.n, a.sizes, 'n'),per_size(a.batch_size, a.sizes, 'batch-size')
    m = machine(dev); results = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d); (tmp/'jpg').mkdir()
        paths = write_jpegs(tmp/'jpg', max(ns), a.src_size)
        for sz,n,bs in zip(a.sizes, ns, bss):
            print(f"{a.arch} at {sz} px, {n} images, hemabook bs {bs or 'auto'}", flush=True)
            results.append(bench_size(a, sz, n, bs, paths, dev, tmp))
    m['peak_rss_mb'] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss/1024)
    print('\n' + table(results, m))
    Path(a.out).write_text(json.dumps(dict(machine=m, args=vars(a), results=results), indent=2) + '\n')
    print(f"\nwritten {a.out}")

if __name__ == '__main__': main()
