"""One process of a tiny 2-process DDP run on the CPU, for tests/test_train_distributed.py.

Run through `hemabook.train.launch` (import `train`) or from a shell:
`python -m torch.distributed.run --standalone --nproc_per_node 2 tests/ddp_worker.py OUT [fastai | auto | embed ...]`.
Each rank writes to OUT: `init{rank}.pth` (its own initial weights), `final{rank}.pth` (its weights after training) and
`seen{rank}.json` (the sample indices it trained on, one list per epoch); rank 0 also writes the run folder `OUT/run`.
`embed [OUT2 EXTRA] [auto]` runs `embed_images` in the two processes (see `embed`), then again into OUT2 with EXTRA,
then `auto`'s training in the same process group.
"""
import json, os, sys
from pathlib import Path

import torch
from torch import nn

N_TRAIN, N_VALID, BS, N_EPOCH = 64, 16, 8, 2

class IdxNet(nn.Module):
    "A small MLP on the first 4 features; the 5th input column is the sample index, which it ignores."
    def __init__(self): super().__init__(); self.layers = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    def forward(self, x): return self.layers(x[:, :4])

def _dls():
    from fastai.data.core import DataLoaders
    g = torch.Generator().manual_seed(0)   # the same data in every process
    def _ds(n):
        x = torch.randn(n, 4, generator=g)
        y = (x[:, 0] + x[:, 1] > 0).long()
        return list(zip(torch.cat([x, torch.arange(n, dtype=torch.float32)[:, None]], 1), y))
    return DataLoaders.from_dsets(_ds(N_TRAIN), _ds(N_VALID), bs=BS, num_workers=0)

def _seen_cb():
    from fastai.callback.core import Callback
    class SeenIdx(Callback):
        "Record the sample indices of each training batch, one list per epoch."
        def before_fit(self): self.seen = []
        def before_train(self): self.seen.append([])
        def before_batch(self):
            if self.training: self.seen[-1] += self.xb[0][:, -1].long().tolist()
    return SeenIdx()

def train(out, use_fastai=False, auto=False):
    """Train `IdxNet` for `N_EPOCH` epochs with hemabook's `distrib_ctx` (or, `use_fastai`, fastai's own; or, `auto`, as
    an experiment notebook does: `fit` alone, then `end_distributed`) and record it."""
    from fastai.losses import CrossEntropyLossFlat
    from fastai.torch_core import rank_distrib
    from hemabook.runs import open_run, rank_folder
    from hemabook.train import hb_learner, distrib_ctx, end_distributed, fit
    out, rank = Path(out), rank_distrib()
    torch.manual_seed(100 + rank)      # different initial weights per rank: DDP must start all from rank 0's
    model = IdxNet()
    torch.save(model.state_dict(), out/f'init{rank}.pth')
    cb,run_dir = _seen_cb(),out/'run'
    if auto:                           # each process a run folder of its own, as `hemabook run` gives them
        run_dir = rank_folder(run_dir)
        open_run('idxnet', run_dir, {'n_epoch': N_EPOCH})
    learn = hb_learner(_dls(), model, loss_func=CrossEntropyLossFlat(), run_dir=run_dir, params={'n_epoch': N_EPOCH},
                       cbs=cb)
    if use_fastai:   # fastai 2.8.7's own context: expected to fail on the CPU in DistributedDL._broadcast
        if torch.cuda.is_available():   # asked here, not in the parent: it would keep forked processes from using CUDA
            (out/f'fastai{rank}.txt').write_text('skip: a GPU is present, fastai broadcasts through it'); return
        try:
            with learn.distrib_ctx(sync_bn=False, cpu=True), learn.no_bar(), learn.no_logging(): learn.fit(1)
            (out/f'fastai{rank}.txt').write_text('ok')
        except Exception as e: (out/f'fastai{rank}.txt').write_text(f'{type(e).__name__}: {e}')
        return
    if auto:
        with learn.no_bar(), learn.no_logging(): fit(learn, N_EPOCH, lr=5e-2)
    else:
        with distrib_ctx(learn), learn.no_bar(), learn.no_logging(): fit(learn, N_EPOCH, lr=5e-2)
    torch.save(learn.model.state_dict(), out/f'final{rank}.pth')
    (out/f'seen{rank}.json').write_text(json.dumps(cb.seen))
    if auto:
        end_distributed(learn.model)
        (out/'after_end.txt').write_text(f'rank {rank}')     # only rank 0 gets here

def embed_paths():
    "The images `embed` encodes: 22 of the bundled synthetic WBC crops (6 batches of 4; the last round half full)."
    from hemabook.core import samples_path
    return sorted(str(f) for f in samples_path('wbc_synth').rglob('*.png'))[:22]

def embed_engine():
    "A tiny random SAM encoder (the same weights in every process) in a CPU engine of 4 images a batch."
    from hemabook.sam.embed import EmbeddingEngine
    from hemabook.sam.model import build_encoder
    torch.manual_seed(0)
    enc = build_encoder('tiny', 64)
    with torch.no_grad():                  # SAM starts its position embedding at zero: give the images' places a mark
        enc.pos_embed.normal_(0, 0.5)
    return EmbeddingEngine(enc, 'cpu', bs=4, num_workers=0)

def dark_masks(emb, x):
    "A per-image array for the cache to store beside the embeddings: the dark pixels of the input."
    return (x.float().mean(1) < 128).to(torch.uint8)

def embed(out, extra=None):
    """`embed_images` in a process group (joined here, gloo, unless already): writes `embed{rank}.json` with what the
    process got back (or the error it stopped with) and how many images it encoded itself. `extra`: a path inserted at
    index 13 (in process 1's share of the second round)."""
    import torch.distributed as dist
    from fastai.torch_core import rank_distrib
    from hemabook.sam.embed import embed_images
    if not dist.is_initialized(): dist.init_process_group('gloo')
    rank,paths = rank_distrib(),embed_paths()
    if extra: paths.insert(13, extra)
    eng,encoded = embed_engine(),[]
    encode = eng.encode
    def counted(x, *args):
        encoded.append(len(x)); return encode(x, *args)
    eng.encode = counted
    try:
        c = embed_images(paths, eng, out/'cache', pre_neck=True, masks=dark_masks, verbose=False)
        rec = dict(n=None if c is None else len(c), path=None if c is None else str(c.path))
    except Exception as e: rec = dict(error=f'{type(e).__name__}: {e}')
    rec['encoded'] = sum(encoded)
    (out/f'embed{rank}.json').write_text(json.dumps(rec))

if __name__ == '__main__':
    os.environ.setdefault('HEMABOOK_DEVICE', 'cpu')
    modes = sys.argv[2:]
    if modes and modes[0] == 'embed':            # `embed [OUT2 EXTRA] [auto]`: a second cache with EXTRA, then `auto`
        embed(Path(sys.argv[1]))
        if len(modes) >= 3: embed(Path(modes[1]), modes[2])
        if modes[-1] == 'auto': train(sys.argv[1], auto=True)    # in the same process group
    else: train(sys.argv[1], use_fastai=modes == ['fastai'], auto=modes == ['auto'])
    import torch.distributed as dist
    if dist.is_initialized(): dist.destroy_process_group()
