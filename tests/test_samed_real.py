"SAMed on real cells: a tiny LoRA-SAM fine-tuned on BCCD's WBC masks (cytoplasm and nucleus) on the CPU, scored on held-out images."
from pathlib import Path
import pandas as pd
from conftest import bccd_split, shared_subset
from hemabook.core import set_seed
from hemabook.data.seg import read_bccd_wbc_masks, write_mask_crops, sem_dls
from hemabook.sam.semantic import semantic_sam
from hemabook.samed import samed_learner, samed_augment, WarmupPoly
from hemabook.train import fit

def test_lora_sam_learns_bccd_wbc_masks(shared_data, tmp_path):
    root = shared_subset(shared_data, 'bccd', 'wbc_masks').parent
    df = read_bccd_wbc_masks(root); attrs = dict(df.attrs)
    split = bccd_split(root)
    df['split'] = [split.get(Path(p).stem) for p in df['path']]
    df = pd.concat([df[df['split'] == 'train'].head(64), df[df['split'] == 'valid'].head(24)]); df.attrs = attrs
    crops = write_mask_crops(df, tmp_path/'crops')
    assert crops['split'].value_counts().to_dict() == {'train': 64, 'valid': 24}
    set_seed(0)
    dls = sem_dls(crops, bs=8, sz=128, train_tfm=samed_augment)
    learn = samed_learner(dls, semantic_sam('tiny', sz=128, n_classes=2, rank=4))
    assert learn.model.recipe['encoder'] == 'full'          # no checkpoint: the random encoder trains too, and says so
    with learn.no_bar(): before = learn.validate()[1]
    with learn.no_bar(): after = fit(learn, 25, 5e-3, one_cycle=False, cbs=WarmupPoly(warmup=10))['dice']
    print(f"held-out mean Dice (cytoplasm, nucleus): untrained {before:.3f}, trained {after:.3f}")
    assert after >= 0.5 and after >= before + 0.3
