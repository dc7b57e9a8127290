"Segmentation readers on the real subsets in ../shared/data: DSB2018 colour nuclei and the BCCD WBC masks."
import numpy as np
import pytest
from conftest import shared_subset
import torch
from hemabook.data.seg import (read_dsb2018, read_bccd_wbc_masks, bccd_wbc_mask, row_mask, instance_label_image,
                               boxes_from_label_image, inst_dls, sem_dls)

@pytest.fixture(scope='module')
def dsb(shared_data):
    return read_dsb2018(shared_subset(shared_data, 'dsb2018_color'))

@pytest.fixture(scope='module')
def bccd(shared_data):
    shared_subset(shared_data, 'bccd', 'wbc_masks')
    return read_bccd_wbc_masks(shared_data/'bccd')

def test_dsb2018_counts(dsb):
    assert dsb['image_id'].nunique() == 107
    assert dsb['label'].notna().sum() == 4550            # nuclei (mask PNGs) in the 107 colour images
    assert dsb.attrs['no_masks'] == 0 and dsb.attrs['dropped'] == {}
    assert set(dsb['label'].dropna()) == {'nucleus'}
    assert (dsb['x1'] > dsb['x0']).all() and (dsb['y1'] > dsb['y0']).all()
    assert (dsb['x1'] <= dsb['width']).all() and (dsb['y1'] <= dsb['height']).all()

def test_dsb2018_masks_binary_disjoint(dsb):
    from PIL import Image
    for iid in sorted(dsb['image_id'].unique())[:4]:
        rows = dsb[dsb['image_id'] == iid]
        for mp in rows['mask_path'][:10]:
            assert set(np.unique(np.asarray(Image.open(mp)))) <= {0, 255}, mp
        ms = np.stack([row_mask(r) for _,r in rows.iterrows()])
        assert ms.sum(0).max() == 1, f"overlapping masks in {iid}"
        lbl = instance_label_image(rows)
        assert lbl.max() == len(rows)
        np.testing.assert_array_equal(boxes_from_label_image(lbl), rows[['x0','y0','x1','y1']].to_numpy(float))

def test_dsb2018_inst_batch(dsb):
    dls = inst_dls(dsb[dsb['image_id'].isin(sorted(dsb['image_id'].unique())[:6])], bs=2, sz=128)
    x,ms,bxs = dls.train.one_batch()
    assert x.shape == (2, 3, 128, 128) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    for m,b in zip(ms, bxs):
        assert m.ndim == 3 and m.shape[1:] == (128, 128) and len(m) == len(b) > 0 and b.shape[1] == 4

def test_bccd_wbc_masks(bccd):
    assert len(bccd) == 364                               # every image has its mask
    assert bccd.attrs['dropped'] == {'mask without image': 3}   # masks 00096, 00280, 00329 have no image
    assert bccd.attrs['classes'] == ['background', 'cytoplasm', 'nucleus']
    for mp in bccd['mask_path']:                          # every class map has cytoplasm and nucleus pixels
        cm = bccd_wbc_mask(mp)
        assert cm.shape == (480, 640) and (cm == 1).any() and (cm == 2).any(), mp

def test_bccd_sem_batch(bccd):
    x,y = sem_dls(bccd.iloc[:8], bs=4, sz=128).train.one_batch()
    assert x.shape == (4, 3, 128, 128) and y.shape == (4, 128, 128)
    assert set(y.unique().tolist()) == {0, 1, 2}
