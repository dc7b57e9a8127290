"Bad files give hemabook errors naming them (issue 17 §5): SAM checkpoints, single-cell images, detection sets."
import gc, logging, re, time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
from PIL import Image

from conftest import shared_subset
from hemabook.core import CheckpointError, ConfigError, DataError
from hemabook.data.cls import check_images, read_acevedo20, read_cells, read_image_folder, write_class_folders
from hemabook.data.det import (BOX, LA_ATTRS, LA_CLASSES, DetDataset, det_dls, read_bccd_csv, read_leukemiaattri_coco,
                               read_leukemiaattri_yolo, read_voc, write_leukemiaattri_coco, write_leukemiaattri_yolo,
                               write_voc)
from hemabook.sam.model import SAM_CHECKPOINTS, build_sam, load_sam_checkpoint, read_state_dict

def _img(seed, h=48, w=64):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)

def _cut(f):
    "Truncate file `f` to half its size."
    f.write_bytes(f.read_bytes()[:f.stat().st_size//2])

# ---------------------------------------------------------------- SAM checkpoints

_NAMES = [n for n,_ in SAM_CHECKPOINTS.values()] + ['my_sam.pth']

@pytest.fixture(scope='module')
def tiny(): return build_sam('tiny', sz=64)

@pytest.mark.parametrize('name', _NAMES)
def test_sam_missing_checkpoint(tmp_path, tiny, name):
    p = tmp_path/name
    for f in (lambda: build_sam('tiny', 64, checkpoint=p), lambda: read_state_dict(p),
              lambda: load_sam_checkpoint(tiny, p), lambda: load_sam_checkpoint(tiny, p, verify=False)):
        with pytest.raises(CheckpointError, match=re.escape(str(p)) + ': no such checkpoint file'): f()

def test_sam_missing_official_vit_b():
    "The case of the issue: an official name that is not there fails at once, before a ViT-B is built."
    t0 = time.perf_counter()
    with pytest.raises(CheckpointError, match='/nowhere/sam_vit_b_01ec64.pth: no such checkpoint file'):
        build_sam('vit_b', checkpoint='/nowhere/sam_vit_b_01ec64.pth')
    assert time.perf_counter() - t0 < 1

@pytest.mark.parametrize('name', _NAMES)
def test_sam_checkpoint_is_a_folder(tmp_path, tiny, name):
    p = tmp_path/name; p.mkdir()
    for f in (lambda: build_sam('tiny', 64, checkpoint=p), lambda: read_state_dict(p),
              lambda: load_sam_checkpoint(tiny, p)):
        with pytest.raises(CheckpointError, match=re.escape(str(p)) + ': not a file'): f()

# ---------------------------------------------------------------- single-cell readers

_BAD = ('empty.png', 'cut.jpg', 'x.png')

@pytest.fixture
def img_folder(tmp_path):
    "An ImageFolder with 4 good PNGs and, in class b, a 0-byte .png, a JPEG cut in half and a text file named .png."
    for i,c in enumerate('aabb'):
        (tmp_path/c).mkdir(exist_ok=True); Image.fromarray(_img(i)).save(tmp_path/c/f'{c}{i}.png')
    (tmp_path/'b'/'empty.png').write_bytes(b'')
    Image.fromarray(_img(9, 200, 200)).save(tmp_path/'b'/'cut.jpg', quality=95); _cut(tmp_path/'b'/'cut.jpg')
    (tmp_path/'b'/'x.png').write_text('not an image')
    return tmp_path

def test_image_folder_default_drops_and_reports(img_folder, caplog):
    with caplog.at_level(logging.WARNING, logger='hemabook'): df = read_image_folder(img_folder, scheme=None)
    assert sorted(Path(p).name for p in df.path) == ['a0.png', 'a1.png', 'b2.png', 'b3.png']
    assert df.attrs['dropped'] == {'unreadable image': 3}
    assert sorted(Path(p).name for p,r in df.attrs['dropped_items']) == sorted(_BAD)
    assert 'dropped 3 unreadable image(s) of 7' in caplog.text
    for n in _BAD: assert n in caplog.text

def test_image_folder_check_raise_names_files(img_folder):
    with pytest.raises(DataError, match='3 of 7 images cannot be read') as e:
        read_image_folder(img_folder, scheme=None, check='raise')
    for n in _BAD: assert n in str(e.value)

def test_image_folder_check_options(img_folder):
    assert len(read_image_folder(img_folder, scheme=None, check=None)) == 7          # trusted: listed, never opened
    assert len(read_image_folder(img_folder, scheme=None, check='skip')) == 4
    assert len(read_cells(img_folder, 'imagefolder', scheme=None)) == 4
    with pytest.raises(ConfigError, match="check='full'"): read_image_folder(img_folder, scheme=None, check='full')

@pytest.mark.parametrize('bad', _BAD)
def test_quick_check_raise_names_the_file(img_folder, bad):
    df = read_image_folder(img_folder, scheme=None, check=None)
    df = df[df.path.map(lambda p: Path(p).name in ('a0.png', bad))]
    with pytest.raises(DataError, match=re.escape(bad)): check_images(df, quick=True)

def test_quick_check_keeps_good_files(tmp_path):
    "No false alarms: every format and bit depth `load_image` reads passes the quick check."
    d = tmp_path/'c'; d.mkdir(); x = _img(0)
    Image.fromarray(x).save(d/'rgb.png'); Image.fromarray(x[..., 0]).save(d/'grey.png')
    Image.fromarray(np.dstack([x, x[..., :1]])).save(d/'rgba.png')
    Image.fromarray(x).save(d/'plain.jpg'); Image.fromarray(x).save(d/'prog.jpg', progressive=True)
    Image.fromarray(x[..., 0]).save(d/'grey.jpg'); Image.fromarray(x).save(d/'a.bmp')
    tifffile.imwrite(d/'deep.tif', x.astype(np.uint16)*257); tifffile.imwrite(d/'zip.tiff', x, compression='zlib')
    tifffile.imwrite(d/'tiled.tif', _img(1, 64, 64), tile=(16, 16))
    df = read_image_folder(tmp_path, scheme=None, check='raise')
    assert len(df) == 10
    assert len(check_images(df, quick=True)) == 10

_ITEMS = dict(acevedo20=['BA', 'EO']*2, matek19=['BAS', 'EOS']*2, cnmc=['all', 'hem']*2)

@pytest.mark.parametrize('fmt', list(_ITEMS))
@pytest.mark.parametrize('damage', ['empty', 'truncated'])
def test_cell_formats_drop_unreadable(tmp_path, fmt, damage, caplog):
    "Acevedo-20 JPEG, Matek-19 RGBA TIFF, C-NMC BMP: a damaged file is dropped, counted and named by the default read."
    files = write_class_folders(([_img(i) for i in range(4)], _ITEMS[fmt]), tmp_path, layout=fmt)
    f = files[1]
    if damage == 'empty': f.write_bytes(b'')
    else: _cut(f)
    root = tmp_path/'C-NMC_Leukemia' if fmt == 'cnmc' else tmp_path
    with caplog.at_level(logging.WARNING, logger='hemabook'): df = read_cells(root, fmt)
    assert len(df) == 3 and str(f.resolve()) not in set(df.path)
    assert df.attrs['dropped']['unreadable image'] == 1
    assert [Path(p).name for p,r in df.attrs['dropped_items'] if r == 'unreadable image'] == [f.name]
    assert f.name in caplog.text

def test_quick_check_real_acevedo_is_fast(shared_data):
    root = shared_subset(shared_data, 'acevedo20_subset')
    t0 = time.perf_counter(); df = read_acevedo20(root); dt = time.perf_counter() - t0
    assert len(df) == 400 and 'unreadable image' not in df.attrs['dropped']
    assert dt < 5, f"read_acevedo20 with the quick check took {dt:.1f} s for 400 JPEGs"

# ---------------------------------------------------------------- detection sets

def _det_table(src, n=4):
    "`n` JPEG smears in `src` with one LeukemiaAttri cell each, half 'train' half 'valid'."
    rows = []
    for i in range(n):
        f = src/f'{i+1}_{i}_1000_ALL.jpg'; Image.fromarray(_img(i)).save(f, quality=95)
        rows.append(dict(path=str(f), image_id=f.stem, width=64, height=48, label=LA_CLASSES[i % 3],
                         fine_label=LA_CLASSES[i % 3], x0=4., y0=4., x1=30., y1=40., **{a: 0 for a in LA_ATTRS},
                         diagnosis='ALL', split=['train', 'valid'][i % 2], domain=None, patient=str(i+1),
                         dataset='leukemiaattri'))
    return pd.DataFrame(rows)

def _write(fmt, df, root, sizes=True):
    "Write `df` in `fmt`; returns (reader, folder of the images); `sizes=False` removes the sizes from the annotations."
    if fmt == 'voc':
        write_voc(df, root)
        if not sizes:
            for a in (root/'Annotations').glob('*.xml'):
                a.write_text(re.sub(r'<size>.*</size>', '', a.read_text(), flags=re.S))
        return (lambda: read_voc(root)), root/'JPEGImages'
    if fmt == 'coco':
        js = write_leukemiaattri_coco(df, root/'train.json', root/'images')
        if not sizes: js.write_text(re.sub(r'"(width|height)": \d+, ?', '', js.read_text()))
        return (lambda: read_leukemiaattri_coco(js, root/'images')), root/'images'
    yml = write_leukemiaattri_yolo(df, root)
    return (lambda: read_leukemiaattri_yolo(yml)), root/'images'/'train'

def _damage(f, how):
    if how == 'empty': f.write_bytes(b'')
    else: _cut(f)

def _load_all(df):
    ds = DetDataset(df, sorted(df['label'].dropna().unique()), sz=32)
    for i in range(len(ds)): ds[i]

@pytest.mark.parametrize('fmt', ['voc', 'coco', 'yolo'])
@pytest.mark.parametrize('damage', ['empty', 'truncated'])
def test_det_damaged_image_is_data_error(tmp_path, fmt, damage):
    "Read the set and load every image: a damaged one is a `DataError` naming it, at read time or when loaded."
    (tmp_path/'src').mkdir(); df = _det_table(tmp_path/'src')
    read, imgs = _write(fmt, df, tmp_path/fmt)
    f = imgs/Path(df.path[0]).name; _damage(f, damage)
    with pytest.raises(DataError, match=re.escape(f.name)): _load_all(read())

@pytest.mark.parametrize('fmt', ['voc', 'coco', 'yolo'])
def test_det_empty_image_header_at_read_time(tmp_path, fmt):
    "Where a reader reads image sizes from the files (YOLO; VOC and COCO without sizes), an empty file fails there."
    (tmp_path/'src').mkdir(); df = _det_table(tmp_path/'src')
    read, imgs = _write(fmt, df, tmp_path/fmt, sizes=False)
    assert read()[['width', 'height']].drop_duplicates().values.tolist() == [[64, 48]]
    f = imgs/Path(df.path[2]).name; f.write_bytes(b'')
    with pytest.raises(DataError, match=re.escape(f.name) + r': empty file'): read()
    f.write_text('not an image')
    with pytest.raises(DataError, match=re.escape(f.name) + r': cannot read the image header'): read()

def test_det_coco_missing_image_without_size(tmp_path):
    (tmp_path/'src').mkdir(); df = _det_table(tmp_path/'src')
    read, imgs = _write('coco', df, tmp_path/'coco', sizes=False)
    f = imgs/Path(df.path[3]).name; f.unlink()
    with pytest.raises(DataError, match=re.escape(f.name) + ': no such image file'): read()

def test_bccd_csv_empty_image(tmp_path):
    d = tmp_path/'BCCD'/'JPEGImages'; d.mkdir(parents=True)
    Image.fromarray(_img(0)).save(d/'BloodImage_00000.jpg'); (d/'BloodImage_00001.jpg').write_bytes(b'')
    pd.DataFrame(dict(filename=['BloodImage_00000.jpg', 'BloodImage_00001.jpg'], cell_type=['WBC', 'RBC'], xmin=[1, 1],
                      xmax=[9, 9], ymin=[1, 1], ymax=[9, 9])).to_csv(tmp_path/'test.csv', index=False)
    with pytest.raises(DataError, match=r'BloodImage_00001\.jpg: empty file'): read_bccd_csv(tmp_path/'test.csv')

# One worker case only: after any worker exception torch 2.14 takes ~5 s to shut the worker down (a plain Dataset
# raising ValueError does the same), so each worker case costs 5 s.
@pytest.mark.parametrize('num_workers,damage', [(0, 'empty'), (0, 'truncated'), (1, 'truncated')])
def test_det_dls_damaged_image(tmp_path, num_workers, damage):
    "Through `det_dls`, in the main process or in a worker, the error stays a `DataError` naming the file."
    (tmp_path/'src').mkdir(); df = _det_table(tmp_path/'src')
    read, imgs = _write('voc', df, tmp_path/'voc')
    f = imgs/Path(df.path[1]).name; _damage(f, damage)
    dls = det_dls(read(), bs=2, sz=32, num_workers=num_workers, vocab=list(LA_CLASSES), shuffle=False)
    with pytest.raises(DataError, match=re.escape(f.name)):
        for dl in (dls.train, dls.valid):
            for _ in dl: pass
    del dls, dl; gc.collect()     # shut a worker down here, not at exit


@pytest.mark.parametrize('damage', ['empty', 'truncated'])
def test_dsb2018_damaged_image(tmp_path, damage):
    "read_dsb2018 reads each image's size: an empty or truncated image is a DataError naming it, not a raw PIL error."
    from hemabook.data.seg import read_dsb2018
    d = tmp_path/'stage1_train'/'n1'; (d/'images').mkdir(parents=True); (d/'masks').mkdir()
    m = np.zeros((16, 16), np.uint8); m[4:9, 4:9] = 255; Image.fromarray(m).save(d/'masks'/'0.png')
    f = d/'images'/'n1.png'
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(f)
    test = read_dsb2018(tmp_path); assert len(test) == 1 and test['x1'].iloc[0] == 9.
    f.write_bytes(b'' if damage == 'empty' else f.read_bytes()[:20])
    with pytest.raises(DataError, match=re.escape(str(f))): read_dsb2018(tmp_path)
