#!/usr/bin/env python
"""DES-SAM from boxes on DSB2018: how often, over training seeds, the box-supervised masks beat the filled boxes.

    python benchmarks/dessam_seeds.py --data ../shared/data/dsb2018_color --sz 512 --levelset 0.03 --seeds 0 1 2 3 --jobs 4 --out seeds.jsonl

Each seed is one run of what `nbs/experiments/dessam.ipynb`'s `real` preset does (tiny SAM from random weights, no
checkpoint so no distillation, Adam at a constant rate, the image split of seed 0 for every run), in its own process;
`--jobs` runs run side by side (on one GPU they share it). Every run appends one JSON line: its settings, training
seconds, box AP@0.5 and the mean AJI / PQ / pixel F1 / object Dice of the student's masks and of the filled boxes, on
the detections and on the ground-truth boxes. The table printed at the end labels each run:

- `good`: the student beats the filled boxes on the ground-truth boxes;
- `fill`: the student's masks fill their boxes (equal AJI: cut to the box, a saturated mask *is* the box);
- `worse`: below the boxes (at 256–384 px we saw masks collapse to a fraction of the nucleus).

This is not a timed test: it is how the `real` preset's settings were chosen (see the end of `nbs/60_dessam.ipynb`).
"""
import argparse, json, subprocess, sys, time
from pathlib import Path

def one_run(a):
    "Train and evaluate one seed; returns the result dict."
    import torch
    from hemabook.core import get_device, set_seed
    from hemabook.data.det import det_dls
    from hemabook.data.seg import read_dsb2018
    from hemabook.dessam import dessam_learner, dessam_model, evaluate_dessam, image_split
    from hemabook.train import fit
    if a.threads: torch.set_num_threads(a.threads)
    data = read_dsb2018(Path(a.data))
    data['label'] = data['label'].where(data['label'].isna(), 'nucleus')
    data = image_split(data, .1, .2, 0); test = data[data.split == 'test']
    dev = a.device if a.device != 'auto' else str(get_device())
    w = dict(pairwise=1., projection=1., levelset=a.levelset)
    set_seed(a.seed)
    model = dessam_model('tiny', a.sz, None, a.fpn, weights=w, pairs=a.pairs).to(dev)
    learn = dessam_learner(det_dls(data, bs=a.bs, sz=a.sz, vocab=['nucleus']), model)
    t = time.time()
    with learn.no_bar(), learn.no_logging(): fit(learn, a.epochs, a.lr, one_cycle=False)
    t = time.time() - t
    res = evaluate_dessam(model, test, bs=a.bs, score_thr=.5)
    s = res['summary'][['aji', 'pq', 'f1', 'obj_dice', 'n_gt', 'n_pred']]
    return dict(seed=a.seed, sz=a.sz, epochs=a.epochs, lr=a.lr, levelset=a.levelset, pairs=a.pairs, device=dev,
                train_s=round(t, 1), box_ap50=res['box_ap50'], summary={k: {c: float(v) for c,v in r.items()} for k,r in s.iterrows()})

def label(r):
    g,b = r['summary']['student | gt boxes']['aji'],r['summary']['box | gt boxes']['aji']
    return 'fill' if abs(g - b) < 1e-4 else 'good' if g > b else 'worse'

if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--data', required=True, help='DSB2018 folder (stage1_train layout)')
    p.add_argument('--sz', type=int, default=512); p.add_argument('--epochs', type=int, default=6)
    p.add_argument('--lr', type=float, default=1e-3); p.add_argument('--bs', type=int, default=2)
    p.add_argument('--fpn', type=int, default=32); p.add_argument('--levelset', type=float, default=.03)
    p.add_argument('--pairs', default='centre', choices=['centre', 'both'])
    p.add_argument('--seeds', type=int, nargs='+', default=[0]); p.add_argument('--jobs', type=int, default=1)
    p.add_argument('--device', default='auto'); p.add_argument('--threads', type=int, default=None)
    p.add_argument('--seed', type=int, default=None, help=argparse.SUPPRESS)   # one run, in a child process
    p.add_argument('--out', default='dessam_seeds.jsonl')
    a = p.parse_args()
    if a.seed is not None: print(json.dumps(one_run(a)), flush=True); sys.exit()
    args = [x for x in sys.argv[1:]]; i = args.index('--seeds'); j = i + 1
    while j < len(args) and not args[j].startswith('--'): j += 1
    base = args[:i] + args[j:]
    todo,running,rows = list(a.seeds),[],[]
    while todo or running:
        while todo and len(running) < a.jobs:
            s = todo.pop(0)
            running.append(subprocess.Popen([sys.executable, __file__, *base, '--seed', str(s)], stdout=subprocess.PIPE, text=True))
        done = [r for r in running if r.poll() is not None]
        for r in done:
            running.remove(r); out = r.stdout.read().strip().splitlines()
            if r.returncode or not out: print(f'a run failed (exit {r.returncode})', file=sys.stderr); continue
            rows.append(json.loads(out[-1]))
            with open(a.out, 'a') as f: f.write(out[-1] + '\n')
        time.sleep(1)
    print('| seed | student AJI (gt boxes) | box AJI | student AJI (detections) | box AJI | box AP@0.5 | train s | |')
    print('|---|---|---|---|---|---|---|---|')
    for r in sorted(rows, key=lambda r: r['seed']):
        s = r['summary']
        print(f"| {r['seed']} | {s['student | gt boxes']['aji']:.3f} | {s['box | gt boxes']['aji']:.3f} | "
              f"{s['student | detections']['aji']:.3f} | {s['box | detections']['aji']:.3f} | {r['box_ap50']:.3f} | {r['train_s']} | {label(r)} |")
