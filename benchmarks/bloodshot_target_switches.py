"""The target-side switches of BloodShot, tried on the embedders of finished runs: is the trained embedder better than
the untrained one under each, and which switch helps which?

Reads run folders of `hemabook run bloodshot` (their `run.json` holds the settings, each variant's folder its trained
`embedder.pth`, saved before any adaptation) and rebuilds the run's support pool and queries from the same data and
seed. Each variant's embedder, and the untrained network the run compared against (the same seed), embeds the target:

* `none`: with the training set's BatchNorm statistics, the target's cells as they are;
* `adabn`: with the target's own BatchNorm statistics (`target_bn`, the experiment's `ADABN`);
* `reinhard`, `macenko`: the target's cells re-coloured to 64 training cells' colours (the experiment's `STAIN_NORM`),
  as training saw them (`SOURCE_CROP`).

Balanced accuracy at the run's k over its episodes (supports drawn with replacement, as the run's main table), printed
as one row per run and variant and written as CSV to `--out`. The `adabn` column should repeat the run's own table
when the run had `ADABN` on.

    python benchmarks/bloodshot_target_switches.py RUN_DIR [RUN_DIR ...] [--switches none,adabn,reinhard] [--out F.csv]

Embedding only, no training: under a minute per run for the `real` preset's 351 BCCD cells on 2 CPU cores.
"""
import argparse, json, tempfile
from pathlib import Path

import pandas as pd
import torch

from hemabook.core import set_seed
from hemabook.data.cls import read_cells
from hemabook.fewshot import (create_embedder, embed_cells, few_shot_eval, fewshot_model, source_table, stain_reference,
                              target_bn, target_pools)
from hemabook.stain import StainNormalizer

SWITCHES = ('none', 'adabn', 'reinhard', 'macenko')

def score_run(run_dir:Path, switches, tmp:Path) -> list:
    p = json.loads((run_dir/'run.json').read_text())['settings']
    seed,sz,k,crop = p['seed'],p['image_size'],p['k'],p.get('source_crop') or 1.
    source = source_table(read_cells(p['source_dir'], p['source_format'], tmp/'source', p.get('cell_margin')), seed=seed)
    target = read_cells(p['target_dir'], p['target_format'], tmp/'target', p.get('cell_margin'))
    sup,qry = target_pools(target, seed=seed, min_support=k)
    classes = sorted(sup.label.unique()); ix = {c: i for i,c in enumerate(classes)}
    sy,qy = sup.label.map(ix).to_numpy(), qry.label.map(ix).to_numpy()
    ref_px = stain_reference(source, sz, crop, seed)      # the cells the run's STAIN_NORM was fitted on
    n_types = source[source.split == 'train'].label.nunique()
    set_seed(seed)                                  # the run's reference: the network before training, same seed
    nets = {'untrained': fewshot_model(n_types, 'aam', p['backbone'], p.get('weights')).embedder}
    for v in p['variants']:
        e = create_embedder(p['backbone'])
        e.load_state_dict(torch.load(run_dir/v/'embedder.pth', weights_only=True)); nets[v] = e
    rows = []
    for name,net in nets.items():
        row = dict(run=run_dir.name, seed=seed, embedder=name)
        for s in switches:
            m = target_bn(net, list(sup.path) + list(qry.path), sz, p['batch'], seed) if s == 'adabn' else net
            tn = StainNormalizer(s, ref_px) if s in ('reinhard', 'macenko') else None
            r = few_shot_eval(embed_cells(m, sup.path, sz, transform=tn), sy, embed_cells(m, qry.path, sz, transform=tn), qy,
                              classes, k, p['episodes'], seed, normalize=p['normalize'], verbose=False)
            row[s] = round(float(r.mean['balanced_accuracy']), 3)
        rows.append(row); print(row, flush=True)
    return rows

if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('runs', nargs='+', type=Path)
    ap.add_argument('--switches', default=','.join(SWITCHES))
    ap.add_argument('--out', type=Path)
    a = ap.parse_args()
    switches = a.switches.split(',')
    if bad := set(switches) - set(SWITCHES): ap.error(f"unknown switches {sorted(bad)}: expected {', '.join(SWITCHES)}")
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        df = pd.DataFrame([r for run in a.runs for r in score_run(run, switches, Path(tmp)/run.name)])
    print(df.to_string(index=False))
    if a.out: df.to_csv(a.out, index=False)
