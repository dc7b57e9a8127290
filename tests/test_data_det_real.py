"Real-data checks of `hemabook.data.det` on the BCCD subset in ../shared/data (skipped where it is absent)."
import logging
import numpy as np
import pandas as pd
from PIL import Image
import pytest
from conftest import shared_subset
import torch

from hemabook.data.det import BOX, read_bccd, read_bccd_csv, bccd_wbc_crops, det_dls

@pytest.fixture(scope='module')
def bccd_root(shared_data):
    return shared_subset(shared_data, 'bccd')

@pytest.fixture(scope='module')
def bccd(bccd_root): return read_bccd(bccd_root)

def test_bccd_counts(bccd):
    imgs = bccd.drop_duplicates('path')
    assert len(imgs) == 364
    assert bccd['fine_label'].value_counts().to_dict() == {'RBC': 4153, 'WBC': 372, 'Platelets': 361}
    assert bccd['label'].value_counts().to_dict() == {'erythrocyte': 4153, 'leukocyte': 372, 'platelet': 361}
    assert imgs["split"].value_counts().to_dict() == {'train': 205, 'valid': 87, 'test': 72}
    assert bccd[['width', 'height']].drop_duplicates().values.tolist() == [[640, 480]]
    assert bccd['label'].notna().all() and bccd.attrs['clipped'] == 0

def test_bccd_zero_area_dropped_and_reported(bccd_root, caplog):
    with caplog.at_level(logging.WARNING, logger='hemabook'): df = read_bccd(bccd_root)
    assert df.attrs['dropped'] == {'zero_area': 2}
    assert sorted(f.split()[0].rsplit('/', 1)[-1] for f,_ in df.attrs['dropped_items']) == ['BloodImage_00338.jpg', 'BloodImage_00343.jpg']
    assert 'skipped 2 zero_area' in caplog.text

def test_bccd_csv_agrees_with_xml(bccd_root, bccd):
    csv = read_bccd_csv(bccd_root/'test.csv')
    assert csv.attrs['dropped'] == {'zero_area': 2}
    k = ['image_id', 'fine_label'] + BOX
    a,b = (d[k].sort_values(k).reset_index(drop=True) for d in (csv, bccd))
    pd.testing.assert_frame_equal(a, b)
    assert csv['image_id'].nunique() == 364

def test_wbc_label_file_counts(bccd_root):
    t = pd.read_csv(bccd_root/'wbc_labels.csv', keep_default_na=False)
    vc = t['Category'].value_counts()
    assert {k: vc[k] for k in ['NEUTROPHIL', 'EOSINOPHIL', 'LYMPHOCYTE', 'BASOPHIL']} == \
           {'NEUTROPHIL': 207, 'EOSINOPHIL': 88, 'LYMPHOCYTE': 33, 'BASOPHIL': 3}
    # MONOCYTE: 21 rows in the file, 20 of them for images that are in the set (the number)
    ids = {int(i[-5:]) for i in read_bccd(bccd_root)['image_id']}
    assert vc['MONOCYTE'] == 21 and ((t['Category'] == 'MONOCYTE') & t['Image'].isin(ids)).sum() == 20
    assert t['Category'].str.contains(',').sum() == 15
    assert ((t['Category'] == '') & t['Image'].isin(ids)).sum() == 1   # one blank among the real images

def test_wbc_crops(bccd_root, tmp_path):
    crops = bccd_wbc_crops(bccd_root, out=tmp_path/'crops')
    assert len(crops) == 353 and crops['path'].nunique() == 353
    assert crops['fine_label'].value_counts().to_dict() == {'NEUTROPHIL': 210, 'EOSINOPHIL': 86, 'LYMPHOCYTE': 35, 'MONOCYTE': 20, 'BASOPHIL': 2}
    assert set(crops['label']) == {'neutrophil', 'eosinophil', 'lymphocyte', 'monocyte', 'basophil'}
    assert crops.attrs['dropped'] == {'label_without_image': 47, 'ambiguous_two_subtypes': 8, 'wbc_count_mismatch': 8, 'blank_category': 1}
    assert list(crops.columns) == ['path', 'label', 'fine_label', 'split', 'domain', 'patient', 'dataset']
    assert set(crops['domain']) == {'bccd'} and crops['split'].notna().all()
    again = bccd_wbc_crops(bccd_root, out=tmp_path/'crops')   # cached: same table
    pd.testing.assert_frame_equal(crops, again)
    # another margin in the same folder cuts the crops again (the cached ones were cut with 0.1), and back
    size = lambda df: np.mean([Image.open(p).size[0] for p in df.path[:20]])
    tight = size(crops); wide = size(bccd_wbc_crops(bccd_root, out=tmp_path/'crops', pad=0.9))
    assert wide > 1.3*tight, (tight, wide)
    assert size(bccd_wbc_crops(bccd_root, out=tmp_path/'crops')) == tight

def test_det_dls_real_batch(bccd):
    dls = det_dls(bccd, bs=4, sz=128)
    xb,yb = next(iter(dls.train))
    assert xb.shape == (4, 3, 128, 128) and xb.dtype == torch.float32 and 0 <= xb.min() and xb.max() <= 1
    assert len(yb) == 4 and all(t['boxes'].shape[1] == 4 and len(t['boxes']) == len(t['labels']) for t in yb)
    assert all(t['boxes'].max() <= 128 for t in yb) and dls.vocab == ['erythrocyte', 'leukocyte', 'platelet']
    assert len(dls.valid.dataset) == 87
