"""The format registry (`hemabook.data.core`): one name per reader, `read_data`, `hemabook formats`, and the layouts
it added: YOLO as ultralytics writes it, images listed in a CSV, class folders named as people write them."""
import logging, re, shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from conftest import REPO, shared_subset
from hemabook.core import ConfigError, DataError
from hemabook.data.core import FORMATS, TASKS, find_format, formats, read_data, register_format
from hemabook.data.cls import read_cells, read_image_csv, read_image_folder, write_image_csv
from hemabook.data.det import (BOX, DET_COLS, LA_ATTRS, TAIL_COLS, read_bccd, read_leukemiaattri_yolo, read_yolo,
                               write_leukemiaattri_yolo, write_voc, write_yolo)
from hemabook.data.seg import read_coco_instances
from hemabook.runner import main

S = REPO/'data_samples'
EXPECTED = dict(classification={'matek19', 'acevedo20', 'cnmc', 'bccd_wbc', 'imagefolder', 'csv'},
                detection={'coco', 'yolo', 'bccd', 'voc'}, instance={'coco', 'dsb2018'},
                semantic={'mask_folder', 'bccd_wbc', 'synapse'})

def _img(seed, h=48, w=64):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)

@pytest.fixture
def scratch():
    "Formats a test registers are removed afterwards."
    before = dict(FORMATS); yield
    FORMATS.clear(); FORMATS.update(before)

# ---------------------------------------------------------------- the registry

def test_registry_lists_every_format():
    t = formats()
    assert list(t.columns) == ['task', 'name', 'description', 'layout']
    assert {k: set(g['name']) for k,g in t.groupby('task')} == EXPECTED
    assert t['task'].tolist() == sorted(t['task'], key=TASKS.index)
    assert (t["description"].str.len() > 10).all() and (t["layout"].str.len() > 10).all()
    assert set(formats('instance')['name']) == {'coco', 'dsb2018'}
    with pytest.raises(ConfigError, match="unknown task 'seg'; expected one of classification, detection"):
        formats('seg')

def test_register_replaces_and_passes_keywords(scratch, tmp_path):
    seen = []
    @register_format('echo', 'semantic', 'test reader', 'anything')
    def echo(root, n=1): seen.append((root, n)); return pd.DataFrame(dict(path=[str(root)]*n))
    df = read_data(tmp_path, 'echo', n=3)
    assert len(df) == 3 and seen == [(tmp_path, 3)]
    assert (df.attrs['format'], df.attrs['task']) == ('echo', 'semantic')
    register_format('echo', 'semantic', 'again')(echo)
    assert [f.description for f in FORMATS.values() if f.name == 'echo'] == ['again']
    assert find_format('echo', 'semantic').reader is echo

def test_unknown_and_ambiguous_formats(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown detection format 'yolov8' \(did you mean 'yolo'\?\); "
                                          r"known detection formats: .*voc.*yolo"):
        read_data(tmp_path, 'yolov8', 'detection')
    with pytest.raises(ConfigError, match=r"unknown format 'tiff' \(any task\); known formats: "
                                          r"classification: .*matek19.*; semantic: .*synapse"):
        read_data(tmp_path, 'tiff')
    with pytest.raises(ConfigError, match=r"format 'coco' is registered for several tasks \(detection, instance\); "
                                          "pass task="):
        read_data(tmp_path, 'coco')
    with pytest.raises(ConfigError, match="unknown task 'segmentation'"): read_data(tmp_path, 'synapse', 'segmentation')
    with pytest.raises(DataError, match=re.escape(str(tmp_path/'nowhere')) + r": no such folder or file"):
        read_data(tmp_path/'nowhere', 'yolo')

_SAMPLES = [  # (format, task, root under data_samples, keywords, dataset)
    ('matek19', 'classification', 'matek19', {}, 'matek19'),
    ('acevedo20', 'classification', 'acevedo20', {}, 'acevedo20'),
    ('cnmc', 'classification', 'cnmc/C-NMC_Leukemia', {}, 'cnmc'),
    ('imagefolder', 'classification', 'wbc_synth', {}, 'wbc_synth'),
    ('bccd', 'detection', 'bccd', {}, 'bccd'),
    ('voc', 'detection', 'bccd/BCCD', {}, 'BCCD'),
    ('coco', 'detection', 'leukemiaattri', {}, 'leukemiaattri'),
    ('yolo', 'detection', 'leukemiaattri', dict(domains=['H_100X_C1']), 'leukemiaattri'),
    ('coco', 'instance', 'nuclei_coco', {}, 'nuclei_coco'),
    ('dsb2018', 'instance', 'nuclei_dsb2018', {}, 'dsb2018'),
    ('mask_folder', 'semantic', 'wbc_masks', {}, 'wbc_masks'),
    ('synapse', 'semantic', 'synapse', {}, 'synapse')]

@pytest.mark.parametrize('fmt,task,root,kw,ds', _SAMPLES, ids=[f'{t}-{f}' for f,t,*_ in _SAMPLES])
def test_every_format_reads_the_samples(fmt, task, root, kw, ds):
    df = read_data(S/root, fmt, task, **kw)
    assert len(df) and (df.attrs['format'], df.attrs['task']) == (fmt, task)
    assert set(df['dataset']) == {ds}

def test_registered_readers_agree_with_direct_calls():
    a = read_data(S/'nuclei_coco', 'coco', 'instance')
    b = read_coco_instances(S/'nuclei_coco'/'annotations'/'instances_train.json', S/'nuclei_coco'/'train')
    assert a['rle'].tolist() == b['rle'].tolist() and set(a['split']) == {'train'}
    v, bc = read_data(S/'bccd'/'BCCD', 'voc'), read_bccd(S/'bccd')
    assert v[['image_id', 'label', 'fine_label'] + BOX].equals(bc[['image_id', 'label', 'fine_label'] + BOX])
    y = read_data(S/'leukemiaattri'/'H_100X_C1', 'yolo')
    c = read_data(S/'leukemiaattri', 'coco', 'detection', domains=['H_100X_C1'])
    k = ['image_id', 'label', *LA_ATTRS]
    srt = lambda d: d.sort_values(['image_id', 'x0']).reset_index(drop=True)
    assert srt(y)[k].equals(srt(c)[k]) and np.allclose(srt(y)[BOX], srt(c)[BOX], atol=1e-3)

def test_read_cells_is_read_data(scratch, tmp_path):
    assert read_cells(S/'matek19', 'matek19', tmp_path/'unused').equals(read_data(S/'matek19', 'matek19'))
    got = []
    register_format('writes', 'classification', 'test')(lambda root, out=None: got.append(out) or pd.DataFrame())
    read_cells(tmp_path, 'writes', tmp_path/'crops')
    assert got == [tmp_path/'crops']                                      # `out` reaches readers that take it
    with pytest.raises(ConfigError, match="unknown classification format 'tiff'"): read_cells(tmp_path, 'tiff')

def test_cli_formats(capsys):
    assert main(['formats']) == 0
    out = capsys.readouterr().out
    assert [l for l in out.splitlines() if not l.startswith(' ')] == list(TASKS)
    for names in EXPECTED.values():
        for n in names: assert re.search(rf'^  {n} ', out, re.M), n
    assert main(['formats', '--task', 'detection']) == 0
    out = capsys.readouterr().out
    assert out.startswith('detection\n') and 'data.yaml' in out and 'mask_folder' not in out
    assert main(['formats', '--task', 'bogus']) == 2
    assert "unknown task 'bogus'" in capsys.readouterr().err

# ---------------------------------------------------------------- YOLO as ultralytics writes it

def _det(src, names=('RBC', 'WBC', 'Platelets'), n=6):
    "A detection table of `n` JPEG-free PNG smears in `src` (two boxes each, one image without objects)."
    rows = []
    for i in range(n):
        f = src/f'smear_{i}.png'; Image.fromarray(_img(i, 48 + 8*(i % 2), 64)).save(f)
        h = 48 + 8*(i % 2); sp = ['train', 'valid', 'test'][i % 3]
        base = dict(path=str(f), image_id=f.stem, width=64, height=h, split=sp, domain=None, patient=None, dataset='x')
        if i == n - 1: rows.append(base | dict(label=None, fine_label=None)); continue
        for k in range(2):
            x0, y0 = 3. + 7*k + i, 2. + 5*k
            rows.append(base | dict(label=names[(i + k) % len(names)], fine_label=names[(i + k) % len(names)],
                                    x0=x0, y0=y0, x1=x0 + 20.3, y1=y0 + 17.7))
    return pd.DataFrame(rows, columns=DET_COLS + TAIL_COLS)

def _srt(d): return d.sort_values(['image_id', 'x0']).reset_index(drop=True)

def test_yolo_round_trip(tmp_path):
    (tmp_path/'src').mkdir(); df = _det(tmp_path/'src')
    y = write_yolo(df, tmp_path/'blood')
    cfg = yaml.safe_load(y.read_text())
    assert cfg['names'] == {0: 'Platelets', 1: 'RBC', 2: 'WBC'} and cfg['val'] == 'images/val'
    assert (tmp_path/'blood'/'labels'/'val'/'smear_1.txt').read_text().count('\n') == 2
    back = read_data(tmp_path/'blood', 'yolo')
    a, b = _srt(back), _srt(df)
    k = ['image_id', 'width', 'height', 'fine_label', 'split']
    pd.testing.assert_frame_equal(a[k], b[k], check_dtype=False)
    assert np.nanmax(np.abs(a[BOX].to_numpy(float) - b[BOX].to_numpy(float))) < 1
    assert dict(zip(a['fine_label'].dropna(), a['label'].dropna())) == dict(RBC='erythrocyte', WBC='leukocyte',
                                                                            Platelets='platelet')
    assert set(back['dataset']) == {'blood'} and list(back.columns) == DET_COLS + TAIL_COLS
    assert back.attrs['no_label_file'] == 0 and back.attrs['dropped'] == {}
    assert back[back['image_id'] == 'smear_5']['label'].isna().tolist() == [True]    # the image without objects
    cfg['names'] = ['Platelets', 'RBC', 'WBC']; y.write_text(yaml.safe_dump(cfg))     # names as a list
    assert _srt(read_yolo(y))[BOX].equals(a[BOX])

def test_yolo_non_cell_names_and_schemes(tmp_path):
    (tmp_path/'src').mkdir(); y = write_yolo(_det(tmp_path/'src', ('car', 'WBC')), tmp_path/'streets')
    df = read_yolo(tmp_path/'streets')
    assert set(df['label'].dropna()) == {'car', 'WBC'}                         # not all cells: kept as written
    assert set(read_yolo(y, scheme=None)['label'].dropna()) == {'car', 'WBC'}
    with pytest.raises(DataError, match=r"data.yaml: label 'car' is not in the 'bccd' taxonomy"):
        read_yolo(y, scheme='bccd')

def test_yolo_image_without_label_file_is_counted(tmp_path, caplog):
    (tmp_path/'src').mkdir(); df = _det(tmp_path/'src'); y = write_yolo(df, tmp_path/'s')
    (tmp_path/'s'/'labels'/'train'/'smear_0.txt').unlink()
    with caplog.at_level(logging.WARNING, logger='hemabook'): back = read_yolo(y)
    assert back.attrs['no_label_file'] == 1 and back['path'].nunique() == df['path'].nunique()
    assert back[back['image_id'] == 'smear_0']['label'].isna().all()
    assert '1 image(s) without a label file read as images with no objects' in caplog.text

@pytest.mark.parametrize('line,msg', [('5 0.5 0.5 0.1 0.1', r'class 5 not in 0\.\.2'),
                                      ('1.5 0.5 0.5 0.1 0.1', r'class 1\.5 not in 0\.\.2'),
                                      ('0 0.5 0.5 0.1', r'4 columns; expected 5 \(cls xc yc w h\)'),
                                      ('0 0.5 0.5 0.1 0.1 0 0 0 0 0 0 0', r'12 columns; expected 5 '),
                                      ('0 0.5 abc 0.1 0.1', 'non-numeric value'),
                                      ('0 0.5 nan 0.1 0.1', 'non-numeric value')])
def test_yolo_bad_rows_name_file_and_line(tmp_path, line, msg):
    (tmp_path/'src').mkdir(); y = write_yolo(_det(tmp_path/'src'), tmp_path/'s')
    f = tmp_path/'s'/'labels'/'test'/'smear_2.txt'; f.write_text(f.read_text() + line + '\n')
    with pytest.raises(DataError, match=re.escape(str(f)) + ':3: ' + msg): read_yolo(y)

def test_yolo_bad_yaml(tmp_path):
    (tmp_path/'src').mkdir(); y = write_yolo(_det(tmp_path/'src'), tmp_path/'s')
    cfg = yaml.safe_load(y.read_text())
    y.write_text(yaml.safe_dump(cfg | dict(names={1: 'a', 2: 'b', 3: 'c'})))
    with pytest.raises(DataError, match=r"'names' keys must be the class ids 0\.\.2"): read_yolo(y)
    y.write_text(yaml.safe_dump(cfg | dict(test='images/nowhere')))
    with pytest.raises(DataError, match=r"data.yaml: test folder .*images/nowhere does not exist"): read_yolo(y)
    (tmp_path/'s'/'other.yaml').write_text('names: [a]')
    y.unlink()
    with pytest.raises(DataError, match=r"no YOLO data yaml .* and no LeukemiaAttri domain folders"):
        read_yolo(tmp_path/'src')
    with pytest.raises(ConfigError, match="domains=.*for a root of LeukemiaAttri domain folders"):
        read_yolo(tmp_path/'s', domains=['H_100X_C1'])

def test_yolo_moved_set_and_txt_lists(tmp_path, caplog):
    "ultralytics writes an absolute `path`; a moved set is read from the yaml's folder. Splits may be image lists."
    (tmp_path/'src').mkdir(); df = _det(tmp_path/'src'); write_yolo(df, tmp_path/'a')
    shutil.move(tmp_path/'a', tmp_path/'b')
    with caplog.at_level(logging.WARNING, logger='hemabook'): moved = read_yolo(tmp_path/'b')
    assert 'does not exist (a moved set?)' in caplog.text and len(moved) == len(df)
    y = tmp_path/'b'/'data.yaml'; cfg = yaml.safe_load(y.read_text())
    imgs = sorted((tmp_path/'b'/'images'/'train').iterdir())
    (tmp_path/'b'/'train.txt').write_text('\n'.join(f'images/train/{p.name}' for p in imgs))
    y.write_text(yaml.safe_dump(cfg | dict(path='.', train='train.txt')))
    assert _srt(read_yolo(y))[BOX].equals(_srt(moved)[BOX])

def test_yolo_12_columns_is_the_leukemiaattri_variant(tmp_path):
    (tmp_path/'src').mkdir()
    la = _det(tmp_path/'src', ('Lymphocyte', 'Myeloblast')).assign(**{a: 1 for a in LA_ATTRS}, diagnosis=None)
    y = write_leukemiaattri_yolo(la, tmp_path/'H_100X_C1'/'yolo')
    a, b = read_yolo(y), read_leukemiaattri_yolo(y)
    assert a.equals(b) and list(a.columns) == DET_COLS + list(LA_ATTRS) + ['diagnosis'] + TAIL_COLS
    assert set(a['dataset']) == {'leukemiaattri'} and set(a['label'].dropna()) == {'lymphocyte_typical', 'myeloblast'}
    assert (a.dropna(subset=['label'])['cell_size'] == 1).all() and set(a['domain']) == {'H_100X_C1'}
    assert read_data(tmp_path, 'yolo', domains=['H_100X_C1'])[BOX].equals(a[BOX])
    f = next((tmp_path/'H_100X_C1'/'yolo'/'labels'/'train').glob('*.txt'))
    f.write_text(f.read_text() + '0 0.5 0.5 0.1 0.1\n')
    with pytest.raises(DataError, match=re.escape(f.name) + r':3: 5 columns; expected 12 \(cls xc yc w h size a1'):
        read_yolo(y)

# ---------------------------------------------------------------- images listed in a CSV

@pytest.fixture
def listed(tmp_path):
    "Images `img_000k.png` beside their masks `img_000k_mask.png`, and a CSV of integer ids and label codes."
    d = tmp_path/'cells'; (d/'images').mkdir(parents=True)
    for k in range(1, 6):
        Image.fromarray(_img(k)).save(d/'images'/f'img_{k:04d}.png')
        Image.fromarray(np.zeros((48, 64), np.uint8)).save(d/'images'/f'img_{k:04d}_mask.png')
    pd.DataFrame({'': ['']*7, 'Image': ['1', '2', '3', '4', '5', '9', '3'],
                  'Category': ['N', 'L', 'M', '', 'Q', 'N', 'N']}).to_csv(d/'labels.csv', index=False)
    return d

def test_csv_masks_beside_images_are_not_cells(listed, caplog):
    names = dict(N='NEUTROPHIL', L='lymphocytes', M='Monocyte')
    with caplog.at_level(logging.WARNING, logger='hemabook'): df = read_data(listed, 'csv', names=names)
    assert [Path(p).name for p in df['path']] == ['img_0001.png', 'img_0002.png', 'img_0003.png']
    assert df['label'].tolist() == ['neutrophil', 'lymphocyte', 'monocyte']
    assert df['fine_label'].tolist() == ['NEUTROPHIL', 'lymphocytes', 'Monocyte']
    assert set(df['dataset']) == {'cells'} and df.attrs['task'] == 'classification'
    assert df.attrs['dropped'] == {'empty label': 1, 'label code not in names': 1, 'image not found': 1,
                                   'image listed twice': 1, 'image not in the CSV': 7}
    unlisted = {Path(p).name for p,r in df.attrs['dropped_items'] if r == 'image not in the CSV'}
    assert unlisted == {'img_0004.png', 'img_0005.png'} | {f'img_{k:04d}_mask.png' for k in range(1, 6)}
    assert [i for i,r in df.attrs['dropped_items'] if r == 'image not found'][0].endswith('labels.csv:7 9 N')
    assert 'skipped 1 empty label' in caplog.text

def test_csv_names_from_a_csv_and_unknown_labels(listed):
    pd.DataFrame(dict(code=['N', 'L', 'M', 'Q'], name=['neutrophil', 'lymphocyte', 'monocyte', 'mystery'])
                 ).to_csv(listed/'names.csv', index=False)
    df = read_image_csv(listed, csv='labels.csv', names='names.csv')
    assert df.attrs['dropped']['unknown label'] == 1 and len(df) == 3
    assert read_image_csv(listed, csv='labels.csv', names='names.csv', scheme=None)['label'].tolist()[-1] == 'mystery'

def test_csv_columns_and_files(listed):
    pd.DataFrame(dict(a=['img_0001.png'], b=['N'], c=['x'])).to_csv(listed/'odd.csv', index=False)
    with pytest.raises(DataError, match=r"expected one \*\.csv of image labels, found 2 \(labels.csv, odd.csv\)"):
        read_image_csv(listed)
    with pytest.raises(DataError, match=r"odd.csv: cannot tell which column holds the labels "
                                        r"\(none has a usual name\); pass label_col= one of the columns b, c"):
        read_image_csv(listed/'odd.csv', images='images')
    df = read_image_csv(listed/'odd.csv', images='images', label_col='b', names=dict(N='neutrophil'))
    assert df['label'].tolist() == ['neutrophil']                        # image column found by its file names
    with pytest.raises(DataError, match="odd.csv: no column 'label'; columns are a, b, c"):
        read_image_csv(listed/'odd.csv', images='images', label_col='label')
    pd.DataFrame(dict(file=['img_0001.png'], image=['1'], label=['N'])).to_csv(listed/'odd.csv', index=False)
    with pytest.raises(DataError, match=r"holds the images \(file, image all could\); pass id_col="):
        read_image_csv(listed/'odd.csv', images='images')
    Image.fromarray(_img(0)).save(listed/'images'/'other_1.png')
    with pytest.raises(DataError, match=r"labels.csv:2: image '1' matches 2 files"):
        read_image_csv(listed, csv='labels.csv')
    (listed/'images'/'other_1.png').unlink()
    with pytest.raises(DataError, match=r"labels.csv: no usable row of 7"):
        read_image_csv(listed, csv='labels.csv')                         # codes N, L, M are no cell names

def test_csv_round_trip(tmp_path):
    src = read_data(S/'wbc_synth', 'imagefolder')
    src['split'] = np.where(np.arange(len(src)) % 4, 'train', 'valid')
    write_image_csv(src, tmp_path/'listed')
    back = read_data(tmp_path/'listed', 'csv')
    cols = ['label', 'fine_label', 'split']
    assert back[cols].values.tolist() == src[cols].values.tolist() and back.attrs['dropped'] == {}

def test_csv_real_bccd_wbc_labels(shared_data):
    root = shared_subset(shared_data, 'bccd')
    df = read_data(root, 'csv', csv='wbc_labels.csv', images='BCCD/JPEGImages')
    assert len(df) == 355 and set(df['dataset']) == {'bccd'}
    assert df.attrs['dropped'] == {'several different labels': 8, 'image not found': 47, 'empty label': 1,
                                   'image not in the CSV': 9}
    assert df['label'].value_counts().to_dict() == {'neutrophil': 209, 'eosinophil': 89, 'lymphocyte': 34,
                                                    'monocyte': 20, 'basophil': 3}
    assert len(df) + 8 + 47 + 1 == len(pd.read_csv(root/'wbc_labels.csv'))    # every row accounted for
    assert df['path'].nunique() + 9 == len(list((root/'BCCD'/'JPEGImages').glob('*.jpg')))

# ---------------------------------------------------------------- class folders as people name them

def test_image_folder_names_and_aliases(tmp_path):
    names = ('Lymphocyte', 'NEUTROPHIL', 'neutrophils', 'lymphoblast', 'ALL', 'Platelets', 'Band-Neutrophil')
    for k,n in enumerate(names):
        (tmp_path/'mine'/n).mkdir(parents=True); Image.fromarray(_img(k)).save(tmp_path/'mine'/n/f'{k}.png')
    df = read_data(tmp_path/'mine', 'imagefolder')
    assert dict(zip(df['fine_label'], df['label'])) == {
        'ALL': 'lymphoblast', 'Band-Neutrophil': 'neutrophil_banded', 'Lymphocyte': 'lymphocyte',
        'NEUTROPHIL': 'neutrophil', 'Platelets': 'platelet', 'lymphoblast': 'lymphoblast', 'neutrophils': 'neutrophil'}
    assert set(df['dataset']) == {'mine'} and set(df['domain']) == {'mine'}
    (tmp_path/'mine'/'Lymphocyte').rename(tmp_path/'mine'/'Lymfocyte')
    with pytest.raises(DataError) as e: read_image_folder(tmp_path/'mine')
    msg = str(e.value)
    assert f"{tmp_path/'mine'/'Lymfocyte'}: class folder 'Lymfocyte' of data set {tmp_path/'mine'}" in msg
    assert "closest known names: lymphocyte" in msg and 'scheme=None' in msg
    assert 'Lymfocyte' in set(read_image_folder(tmp_path/'mine', scheme=None)['label'])

def test_generic_formats_take_the_dataset_name_from_the_data(tmp_path):
    (tmp_path/'src').mkdir(); df = _det(tmp_path/'src')
    write_voc(df, tmp_path/'converted')
    v = read_data(tmp_path/'converted', 'voc')
    assert set(v['dataset']) == {'converted'} and set(v['label'].dropna()) == {'erythrocyte', 'leukocyte', 'platelet'}
    shutil.copytree(tmp_path/'converted', tmp_path/'BCCD')
    assert set(read_data(tmp_path, 'bccd')['dataset']) == {'bccd'}     # the named data set keeps its name
