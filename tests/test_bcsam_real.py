"BC-SAM on real cells: stage 1 on BCCD white-cell masks, then Acevedo-20 ↔ BCCD white-cell crops (common-5 classes), on the CPU."
import json
from pathlib import Path
import pandas as pd
import torch
from conftest import bccd_split, shared_subset
from hemabook.core import load_image, set_seed
from hemabook.data.cls import read_cells
from hemabook.data.seg import read_bccd_wbc_masks, write_mask_crops, sem_dls
from hemabook.samed import samed_learner, samed_augment
from hemabook.sam.model import norm_stats
from hemabook.bcsam import (WarmupCosine, bcsam_seg_model, cell_mask_table, domain_table, extract_cells,
                            cell_crops, ae_dls, CellAE, ae_learner, latents, CellDataset, kernel_mmd,
                            cell_descriptors)
from hemabook.crossdomain import cross_domain_eval, results_table, fmt_results, majority_rate
from hemabook.train import fit

def test_bcsam_acevedo_bccd(shared_data, tmp_path):
    bccd = shared_subset(shared_data, 'bccd', 'wbc_masks').parent
    ace = shared_subset(shared_data, 'acevedo20_subset')
    # Stage 1: a tiny LoRA-SAM learns the one-class cell mask on 64 BCCD crops (BCCD's own train/test lists).
    df = read_bccd_wbc_masks(bccd); attrs = dict(df.attrs)
    split = bccd_split(bccd)
    df['split'] = [split.get(Path(p).stem) for p in df['path']]
    df = pd.concat([df[df['split'] == 'train'].head(64), df[df['split'] == 'valid'].head(24)]); df.attrs = attrs
    seg = cell_mask_table(write_mask_crops(df, tmp_path/'segcrops'))
    set_seed(0)
    model = bcsam_seg_model('tiny', 224, norm=norm_stats(load_image(p) for p in seg[seg.split == 'train'].path))
    learn = samed_learner(sem_dls(seg, bs=8, sz=224, train_tfm=samed_augment), model)
    with learn.no_bar(), learn.no_logging(): dice = fit(learn, 15, 5e-3, one_cycle=False, cbs=WarmupCosine(3))['dice']
    assert dice > 0.85, f"held-out cell Dice {dice:.3f}"
    # Stage 2: features and masks of every cell of both domains, streamed to disk. BCCD's cells are cut from the smears
    # with a 1.3 margin (the experiment's real preset), so that each is about a third of its crop as in Acevedo-20's
    # images: at the reader's 0.1 every cross-domain number sat at chance (nbs/experiments/bcsam.ipynb).
    cells = domain_table(read_cells(ace, 'acevedo20'), read_cells(bccd, 'bccd_wbc', tmp_path/'bccd_crops', 1.3), 'common5')
    counts = cells.groupby(['domain', 'label']).size()
    assert counts['acevedo20'].tolist() == [50]*5 and counts['bccd_wbc'].sum() == 353
    cache = extract_cells(model, cells.path, tmp_path/'cache', device='cpu', verbose=False)
    crops = cell_crops(cache, sz=64)
    assert json.loads((cache.path/'crops.json').read_text())['n_empty'] <= 0.02*len(cells)
    # Stage 3: a 1/8-width autoencoder with kernel MMD; stage 4: BC-SAM's protocol both ways.
    gap = lambda Z: float(kernel_mmd(*(torch.from_numpy(Z[cells.domain_id == i]) for i in (0, 1))))
    set_seed(0)
    ae = CellAE(cache.pre.shape[1], width=0.125, sz=64)
    ds = CellDataset(cache, crops, cells.domain_id)
    gap0 = gap(latents(ae, ds))                                  # the untrained encoder's codes
    al = ae_learner(ae_dls(cache, crops, cells.domain_id, bs=32), ae, lam=5., mmd='kernel')
    with al.no_bar(), al.no_logging(): ssim = fit(al, 15, 2e-3, one_cycle=False, cbs=WarmupCosine(20, unit='iter'))['ssim']
    Z = latents(ae, ds)
    sc,_ = cross_domain_eval(Z, cells.label, cells.domain, classifiers=('rf', 'svm_rbf', 'logreg'), verbose=False)
    tab = results_table(sc)
    maj = {d: majority_rate(cells.label[cells.domain == d]) for d in ('acevedo20', 'bccd_wbc')}
    bal = results_table(sc, 'balanced_accuracy')
    print(f"cell Dice {dice:.3f}; held-out SSIM {ssim:.3f}; domain MMD of the codes {gap0:.3f} untrained, {gap(Z):.4f} trained; "
          f"majority-class rates {maj}\n{fmt_results(tab).to_string()}\nbalanced:\n{fmt_results(bal).to_string()}")
    assert gap(Z) < 0.1*gap0, "the MMD term must close the gap between the domains' codes"
    assert tab['acevedo20→acevedo20'].max() > 2*100*maj['acevedo20']            # in-domain: well above chance (5 balanced classes)
    assert tab['bccd_wbc→acevedo20'].max() > 100*maj['acevedo20']               # cross-domain, on the real Acevedo target
    # The seed recipe's codes transfer only a little: balanced accuracy 37.9 (A→B) and 33.4 (B→A) here (2026-12-02,
    # 2 threads); with the experiment's stage-1 model over autoencoder seeds 0-2, 28.5-37.3 and 29.0-35.6. At the
    # reader's tight 0.1 margin B→A was 20.8 (chance): the bar guards the cut.
    assert bal['acevedo20→bccd_wbc'].max() > 26 and bal['bccd_wbc→acevedo20'].max() > 26, fmt_results(bal)
    # Cell descriptors (stage-1 features pooled over the mask, colours inside it), each data set standardised by its own
    # statistics (the real preset's FEATURES/DOMAIN_NORM): no autoencoder, so no seed of its own.
    D = cell_descriptors(cache, verbose=False)
    sd,_ = cross_domain_eval(D, cells.label, cells.domain, classifiers=('rf', 'svm_rbf', 'logreg'), verbose=False,
                             domain_norm=True)
    dtab,dbal = results_table(sd),results_table(sd, 'balanced_accuracy')
    print(f"descriptors, standardised per data set:\n{fmt_results(dtab).to_string()}\nbalanced:\n{fmt_results(dbal).to_string()}")
    # Measured with the experiment's stage-1 model over classifier seeds 0-2: balanced 44.7-48.3 (A→B) and 45.6-45.9
    # (B→A), accuracy on BCCD 35.6-36.9 (its majority rate 59.5, reported, not reached).
    assert dbal['acevedo20→bccd_wbc'].max() > 35 and dbal['bccd_wbc→acevedo20'].max() > 35, fmt_results(dbal)
    assert dtab['bccd_wbc→acevedo20'].max() > 100*maj['acevedo20'] + 10, fmt_results(dtab)
    assert dtab['acevedo20→acevedo20'].max() > tab['acevedo20→acevedo20'].max(), "descriptors keep the types in-domain too"
