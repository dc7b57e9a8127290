#!/usr/bin/env python
"""The SAM encoder alone, on random tensors already on the device: the ceiling that `sam_embed.py`'s pipeline (JPEG
decoding, resizing, cache writing) is measured against.

    python benchmarks/sam_encoder_only.py --arch vit_b --device cuda --seconds 8

For each (size, batch) it times the reference encoder in fp32 and hemabook's (`use_fast_attention`, bf16 autocast on
CUDA), each for `--seconds` after three warm-up batches, and prints images per second.
"""
import argparse, time
import torch
from hemabook.sam.model import build_encoder, use_fast_attention

def rate(enc, x, amp, seconds, dev):
    sync = torch.cuda.synchronize if dev.type == 'cuda' else (lambda: None)
    with torch.no_grad(), torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
        for _ in range(3): enc(x)
        sync(); t = time.perf_counter(); n = 0
        while time.perf_counter() - t < seconds: enc(x); n += len(x); sync()
    return n/(time.perf_counter() - t)

if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--arch', default='vit_b'); p.add_argument('--device', default='cuda')
    p.add_argument('--sizes', type=int, nargs='+', default=[1024, 512, 224])
    p.add_argument('--batch-size', type=int, nargs='+', default=[8, 32, 64])
    p.add_argument('--seconds', type=float, default=8.)
    a = p.parse_args(); dev = torch.device(a.device)
    for sz,bs in zip(a.sizes, a.batch_size):
        enc = build_encoder(a.arch, sz).to(dev).eval(); x = torch.randn(bs, 3, sz, sz, device=dev)
        ref = rate(use_fast_attention(enc, False), x, False, a.seconds, dev)
        fast = rate(use_fast_attention(enc, True), x, dev.type == 'cuda', a.seconds, dev)
        print(f"{a.arch} {sz}px bs {bs}: fp32 reference {ref:.1f} img/s, hemabook ({'bf16, ' if dev.type == 'cuda' else ''}fast attention) {fast:.1f} img/s", flush=True)
        del enc, x
