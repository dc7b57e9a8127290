"""One process of a tiny 2-process DDP run on the CPU, for tests/test_train_distributed.py.

Run through `hemabook.train.launch` (import `train`) or from a shell:
`python -m torch.distributed.run --standalone --nproc_per_node 2 tests/ddp_worker.py OUT [fastai | METHOD ...]`.
Each rank writes to OUT: `init{rank}.pth` (its own initial weights), `final{rank}.pth` (its weights after training) and
`seen{rank}.json` (the sample indices it trained on, one list per epoch); rank 0 also writes the run folder `OUT/run`.
`embed [EXTRA]` runs `embed_images` in the two processes (see `embed`).
METHOD (`attridet`, `samed`, `dessam`, `bloodshot`, `wbc_classifier`, `bcsam`; several run in turn in the same processes) trains that method's
model for one epoch on a bundled sample, writing `init{rank}.pth` and `final{rank}.pth` to `OUT/METHOD`.
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

def _method_run(out, make):
    "Build a method's learner with rank-specific initial weights (`make(rank)` → (learner, model)), train one epoch."
    from fastai.torch_core import rank_distrib
    from hemabook.core import set_seed
    from hemabook.train import distrib_ctx, fit
    rank = rank_distrib(); out.mkdir(parents=True, exist_ok=True)
    set_seed(100 + rank)               # different initial weights per rank: DDP must start all from rank 0's
    learn,model = make()
    torch.save(model.state_dict(), out/f'init{rank}.pth')
    with distrib_ctx(learn), learn.no_bar(), learn.no_logging(): fit(learn, 1, 3e-3, one_cycle=False)
    torch.save(model.state_dict(), out/f'final{rank}.pth')

def train_attridet(out):
    "AttriDet on the bundled LeukemiaAttri sample: detection batches (images, target dicts) under DDP."
    from hemabook.core import samples_path
    from hemabook.data.det import det_dls, read_leukemiaattri
    from hemabook.attridet import LA_LABELS, AttriDet, attridet_learner, patient_split
    df = read_leukemiaattri(samples_path()/'leukemiaattri')
    src = patient_split(df[(df.domain == 'H_100X_C1') & (df.split == 'train')], 0.2)
    def make():
        model = AttriDet(len(LA_LABELS), backbone='test_resnet', sz=128)
        return attridet_learner(det_dls(src, bs=2, sz=128, vocab=LA_LABELS), model),model
    _method_run(out, make)

def train_samed(out):
    "SAMed's prompt-free semantic SAM (tiny, random, so it trains whole) on the bundled Synapse sample under DDP."
    from hemabook.core import samples_path
    from hemabook.data.seg import read_synapse, sem_dls, synapse_slices
    from hemabook.sam.semantic import semantic_sam
    from hemabook.samed import samed_learner
    syn = read_synapse(samples_path('synapse'))
    df = synapse_slices(syn); df['split'] = df['split'].replace({'test': 'valid'})
    def make():
        model = semantic_sam('tiny', 64, n_classes=len(syn.attrs['classes']) - 1)
        return samed_learner(sem_dls(df, bs=4, sz=64, num_workers=0), model),model
    _method_run(out, make)

def train_dessam(out):
    "DES-SAM (tiny random SAM, trained whole from the box losses) on the bundled nuclei COCO sample under DDP."
    from hemabook.core import samples_path
    from hemabook.data.core import read_data
    from hemabook.data.det import det_dls
    from hemabook.dessam import dessam_learner, dessam_model, image_split
    data = read_data(samples_path('nuclei_coco'), 'coco', 'instance')
    data['label'] = 'nucleus'
    if not {'train', 'valid'} <= set(data['split'].dropna()): data = image_split(data, 0.2, 0., 0)
    def make():
        model = dessam_model('tiny', 128, fpn_channels=32)
        return dessam_learner(det_dls(data, bs=2, sz=128, vocab=['nucleus']), model),model
    _method_run(out, make)

def train_bloodshot(out):
    "BloodShot's ArcFace + rotation-consistency embedder (a small timm net) on the bundled synthetic WBCs under DDP."
    from hemabook.core import samples_path
    from hemabook.data.cls import read_cells
    from hemabook.fewshot import fewshot_dls, fewshot_learner, fewshot_model, source_table
    src = source_table(read_cells(samples_path('wbc_synth'), 'imagefolder'), seed=0)
    def make():
        dls = fewshot_dls(src, sz=32, bs=8)
        model = fewshot_model(len(dls.vocab), 'aam_consistency', 'resnet10t')
        return fewshot_learner(dls, model, 'aam_consistency', bn_batches=None),model
    _method_run(out, make)

def train_wbc_classifier(out):
    "The plain classifier (a timm ResNet through `hb_learner`) on the bundled synthetic WBC folders under DDP."
    import timm
    from fastai.vision.all import ImageDataLoaders, Resize, accuracy
    from hemabook.core import samples_path
    from hemabook.train import hb_learner
    def make():
        root = samples_path('wbc_synth')
        model = timm.create_model('resnet10t', pretrained=False, num_classes=len([d for d in root.iterdir() if d.is_dir()]))
        dls = ImageDataLoaders.from_folder(root, valid_pct=0.25, seed=0, item_tfms=Resize(32), bs=8, num_workers=0,
                                           device='cpu')            # (its seed=0 seeds torch: the model comes first)
        return hb_learner(dls, model, metrics=accuracy),model
    _method_run(out, make)

def train_bcsam(out):
    "BC-SAM stage 1 (a one-class LoRA-free tiny SAM on cell masks, with its warm-up cosine schedule) under DDP."
    from hemabook.core import samples_path
    from hemabook.data.core import read_data
    from hemabook.data.seg import sem_dls
    from hemabook.bcsam import WarmupCosine, bcsam_seg_model, cell_mask_table
    from hemabook.samed import samed_learner
    seg = cell_mask_table(read_data(samples_path('wbc_masks'), 'mask_folder', 'semantic'))
    def make():
        model = bcsam_seg_model('tiny', 64)
        learn = samed_learner(sem_dls(seg, bs=4, sz=64), model)
        learn.add_cb(WarmupCosine(1))
        return learn,model
    _method_run(out, make)

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
    """`embed_images` in a process group (joined here, gloo): writes `embed{rank}.json` with what the process got back
    (or the error it stopped with) and how many images it encoded itself. `extra`: a path inserted at index 13 (in process 1's share of the second round)."""
    import torch.distributed as dist
    from fastai.torch_core import rank_distrib
    from hemabook.sam.embed import embed_images
    dist.init_process_group('gloo')
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

METHODS = dict(attridet=train_attridet, samed=train_samed, dessam=train_dessam, bloodshot=train_bloodshot,
               wbc_classifier=train_wbc_classifier, bcsam=train_bcsam)

if __name__ == '__main__':
    os.environ.setdefault('HEMABOOK_DEVICE', 'cpu')
    modes = sys.argv[2:]
    if modes and modes[0] == 'embed': embed(Path(sys.argv[1]), *modes[1:])
    elif modes and modes[0] in METHODS:
        for m in modes: METHODS[m](Path(sys.argv[1])/m)
    else: train(sys.argv[1], use_fastai=modes == ['fastai'], auto=modes == ['auto'])
    import torch.distributed as dist
    if dist.is_initialized(): dist.destroy_process_group()
