"`load_image` on the real files of the public data subsets in ../shared/data (skipped where they are absent)."
import numpy as np
import pytest
from conftest import shared_subset
from hemabook.core import load_image

def test_acevedo_jpeg(shared_data):
    fs = sorted(shared_subset(shared_data, 'acevedo20_subset', 'PBC_dataset_normal_DIB').rglob('*.jpg'))
    assert len(fs)==400
    for f in fs[::50]:
        img = load_image(f)
        assert img.dtype==np.uint8 and img.ndim==3 and img.shape[2]==3 and img.shape[0]>=360

def test_dsb2018_rgba_png(shared_data):
    ids = sorted(shared_subset(shared_data, 'dsb2018_color', 'stage1_train').iterdir())[:5]
    for d in ids:
        img = load_image(d/'images'/f'{d.name}.png')   # stored RGBA: alpha dropped
        assert img.shape[2]==3 and img.dtype==np.uint8 and img.std()>0

def test_bccd_masks_grey_and_rgb(shared_data):
    fs = sorted(shared_subset(shared_data, 'bccd', 'wbc_masks').glob('*.png'))
    assert len(fs)>300
    for f in fs[:20]:
        m = load_image(f)[..., 0]
        assert (m>200).any(), f"{f.name}: no nucleus pixels (255) found"
