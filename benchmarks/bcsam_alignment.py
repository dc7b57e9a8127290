"""BC-SAM's stages 2-4 run several ways on the stage-1 model of one finished BC-SAM run: what makes the codes transfer
between data sets, and does the alignment keep the classes?

Reads a run folder of `hemabook run bcsam` (its model card holds the stage-1 segmenter, its `run.json` the settings),
so every variant sees the same segmenter. `--margin` re-cuts the cells of data sets read from whole fields (BCCD's
white cells) with that margin around each box (the experiment's `CELL_MARGIN`) and encodes all cells again; without
it the run's own cell cache is used. Variants of the autoencoder:

* `seed`: BC-SAM's loss, SSIM + λ·MMD (λ = 5, kernel MMD), one autoencoder for both directions;
* `no_align`: λ = 0;
* `source_ce`: per direction, an autoencoder that also classifies the source's cells from the code (β·cross-entropy,
  source labels only: the target's stay unread), with the MMD term;
* `source_ce_no_mmd`: the same without the MMD term;
* `seed_dn`: the `seed` codes, each data set's standardised by its own statistics before the classifiers
  (`cross_domain_eval(domain_norm=True)`);
* `descriptors`: no autoencoder: `cell_descriptors` (mask-pooled stage-1 features and the colours inside the mask),
  standardised per data set;
* `descriptors_raw`: the same without the standardisation.

For each: accuracy and balanced accuracy per classifier, in-domain (held-out folds) and cross-domain, beside the
target's majority-class rate and chance, printed (best classifier per direction) and written as CSV to `--out`.

    python benchmarks/bcsam_alignment.py RUN_DIR [--margin 1.3] [--seeds 0,1,2] [--variants seed,source_ce] [--out F.csv]

About a minute per variant and seed on 2 CPU cores for the `real` preset's 603 cells (plus a minute to re-encode them).
"""
import argparse, tempfile
from pathlib import Path

import pandas as pd


def main():
    from hemabook.core import load_json, set_seed
    from hemabook.data.cls import read_cells
    from hemabook.predict import load_run
    from hemabook.sam.embed import EmbeddingCache
    from hemabook.bcsam import (CellAE, CellDataset, WarmupCosine, ae_dls, ae_learner, cell_crops, cell_descriptors, domain_table,
                                extract_cells, latents, source_labels)
    from hemabook.crossdomain import cross_domain_eval, majority_rate
    from hemabook.train import fit
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('run', type=Path); ap.add_argument('--out', type=Path); ap.add_argument('--margin', type=float)
    ap.add_argument('--epochs', type=int); ap.add_argument('--beta', type=float, default=1.)
    ap.add_argument('--seeds', default='0'); ap.add_argument('--variants', default='seed,no_align,source_ce,source_ce_no_mmd,seed_dn,descriptors,descriptors_raw')
    ap.add_argument('--classifiers', default='logreg,svm_rbf,rf')
    a = ap.parse_args()
    p = load_json(a.run/'run.json')['settings']
    work = Path(tempfile.mkdtemp(prefix='bcsam-alignment-'))
    if a.margin is None:
        cells = pd.read_csv(a.run/'cells.csv')
        cache = EmbeddingCache(Path(p.get('cache_dir') or a.run/'cache'))
    else:               # the same data sets, field-cut cells with another margin, encoded by the run's stage 1
        read = lambda k: read_cells(p[f'{k}_dir'], p[f'{k}_format'], work/f'{k}_crops', a.margin)
        cells = domain_table(read('source'), read('target'), p['protocol']).reset_index(drop=True)
        seg = load_run(a.run, p['device']).model.seg
        cache = extract_cells(seg, cells.path, work/'cache', device=p['device'], verbose=False)
    crops = cell_crops(cache, sz=p['crop_size'], verbose=False)
    desc = cell_descriptors(cache, verbose=False)
    doms = list(dict.fromkeys(cells.domain)); dom_id = cells.domain_id.to_numpy()
    epochs,clfs = a.epochs or p['ae_epochs'],tuple(a.classifiers.split(','))

    def codes(seed, lam, labels=None, n_classes=0):
        set_seed(seed)
        ae = CellAE(cache.pre.shape[1], width=p['ae_width'], sz=p['crop_size'], n_classes=n_classes)
        al = ae_learner(ae_dls(cache, crops, dom_id, bs=p['ae_batch'], seed=seed, labels=labels), ae, lam=lam,
                        beta=a.beta if n_classes else 0.)
        with al.no_bar(), al.no_logging():
            fit(al, epochs, p['ae_lr'], one_cycle=False, cbs=WarmupCosine(p['ae_warmup'], unit='iter'))
        return latents(ae, CellDataset(cache, crops, dom_id))

    rows = []
    for seed in map(int, a.seeds.split(',')):
        ev = lambda Z, src, dn=False: cross_domain_eval(Z, cells.label, cells.domain, classifiers=clfs, seed=1234 + seed,
                                                        verbose=False, sources=src, domain_norm=dn)[0]
        for v in a.variants.split(','):
            if v in ('seed', 'no_align'): sc = ev(codes(seed, 5. if v == 'seed' else 0.), None)
            elif v == 'seed_dn': sc = ev(codes(seed, 5.), None, True)
            elif v.startswith('descriptors'): sc = ev(desc, None, v == 'descriptors')
            else:            # one autoencoder per direction: it reads the labels of its source only
                lam = 0. if v.endswith('no_mmd') else 5.
                sc = pd.concat([ev(codes(seed, lam, y, len(c)), [s])
                                for s in doms for y,c in [source_labels(cells.label, cells.domain, s)]])
            g = sc.groupby(['classifier', 'train_on', 'test_on'])[['accuracy', 'balanced_accuracy']].mean()
            rows += [dict(variant=v, seed=seed, margin=a.margin, **r) for r in g.reset_index().to_dict('records')]
            print(v, seed, flush=True)
    df = pd.DataFrame(rows)
    df['majority_rate'] = [majority_rate(cells.label[cells.domain == t]) for t in df.test_on]
    df['chance'] = [1/cells.label[cells.domain == t].nunique() for t in df.test_on]
    if a.out: a.out.parent.mkdir(parents=True, exist_ok=True); df.to_csv(a.out, index=False)
    best = df.groupby(['variant', 'seed', 'train_on', 'test_on'])[['accuracy', 'balanced_accuracy']].max()
    pd.set_option('display.width', 200)
    print("best classifier per direction and seed:\n", best.unstack(['train_on', 'test_on']).round(3).T)
    print("majority rate:", {t: round(majority_rate(cells.label[cells.domain == t]), 3) for t in doms})


if __name__ == '__main__': main()
