"Real-data checks of `hemabook.data.cls` on the Acevedo-20 subset in ../shared/data (skipped where it is absent)."
from collections import Counter
from pathlib import Path
import pytest
from conftest import shared_subset

from hemabook.data.cls import ACEVEDO_CLASSES, CLS_COLS, check_images, cls_dls, read_acevedo20
from hemabook.data.taxonomy import BCSAM_13, CELL_TYPES, canonical

@pytest.fixture(scope='module')
def ace_root(shared_data):
    return shared_subset(shared_data, 'acevedo20_subset')

@pytest.fixture(scope='module')
def ace(ace_root): return read_acevedo20(ace_root)

def _selection(root):
    "(folder, prefix) of every image listed in SELECTION.txt."
    lines = [l.strip() for l in (root/'SELECTION.txt').read_text().splitlines() if l.strip().startswith('PBC_dataset_normal_DIB/')]
    return [(Path(l).parent.name, Path(l).name.split('_')[0]) for l in lines]

def test_counts(ace):
    assert len(ace) == 400
    assert list(ace.columns) == CLS_COLS
    assert ace.path.map(lambda p: Path(p).parent.name).value_counts().to_dict() == {c: 50 for c in ACEVEDO_CLASSES}
    assert ace.attrs['dropped'] == {} and ace.attrs['empty_classes'] == []
    assert set(ace.dataset) == {'acevedo20'} and set(ace.domain) == {'acevedo20'}
    assert all(Path(p).is_absolute() for p in ace.path)

def test_fine_labels_match_selection(ace, ace_root):
    sel = _selection(ace_root)
    assert len(sel) == 400
    assert Counter(ace.fine_label) == Counter(p for _,p in sel)
    assert Counter(zip(ace.path.map(lambda p: Path(p).parent.name), ace.fine_label)) == Counter(sel)
    assert Counter(ace.fine_label)['IG'] == 3 and Counter(ace.fine_label)['NEUTROPHIL'] == 1

def test_canonical_labels(ace):
    assert set(ace.label) <= set(CELL_TYPES.name)
    assert (ace.label == ace.fine_label.map(lambda f: canonical(f, 'acevedo20'))).all()
    assert ace.label.value_counts()['platelet'] == 50

def test_bcsam_mapping(ace):
    from hemabook.bcsam import domain_table
    bc = domain_table(ace, ace, 'bcsam13', names=('acevedo_a', 'acevedo_b'))   # the protocol, once per domain
    n_ig, n_neu, n_plt = (ace.fine_label == 'IG').sum(), (ace.fine_label == 'NEUTROPHIL').sum(), (ace.fine_label == 'PLATELET').sum()
    assert bc.attrs['dropped'] == {'bcsam13 drops IG': 2*n_ig, 'bcsam13 drops NEUTROPHIL': 2*n_neu,
                                   'bcsam13 drops PLATELET': 2*n_plt}
    assert len(bc) == 2*(400 - n_ig - n_neu - n_plt) == 2*346
    assert set(bc.label) <= set(BCSAM_13) and len(set(bc.label)) == 10

def test_decode_and_batch(ace):
    assert len(check_images(ace.iloc[::10])) == 40
    dls = cls_dls(ace, bs=8, sz=64, num_workers=0, device='cpu')
    xb, yb = dls.one_batch()
    assert tuple(xb.shape) == (8, 3, 64, 64) and yb.shape == (8,)
    assert 0 <= float(xb.min()) and float(xb.max()) <= 1
    assert len(dls.vocab) == len(set(ace.label))
