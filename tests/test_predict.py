"""`hemabook predict` on a run folder that `hemabook run` trained: the model is rebuilt from its card alone, and on the
run's own validation images gives the probabilities the experiment recorded."""
import json, re

import pandas as pd
import pytest

from conftest import cli, REPO


@pytest.fixture(scope='module')
def wbc_run(demo_runs):
    "The demo's plain classifier (its smoke preset): a run folder with a model card."
    out,r = demo_runs
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return out/'wbc_classifier'


def test_predict_reproduces_the_runs_validation(wbc_run, tmp_path):
    card = json.loads((wbc_run/'model.json').read_text())
    assert card['format'] == 'hemabook.model/1' and card['experiment'] == 'wbc_classifier'
    ref = pd.read_csv(wbc_run/'predictions.csv')              # what the experiment's learner gave on its valid set
    r = cli('predict', wbc_run, *ref.file, '--out', tmp_path/'pred', '--device', 'cpu', cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert re.search(rf"^{len(ref)} images in [\d.]+ s \([\d.]+ images/s\) on cpu$", r.stdout, re.M), r.stdout
    got = pd.read_csv(tmp_path/'pred'/'predictions.csv')
    assert list(got.file) == list(ref.file)
    assert list(got.predicted) == list(ref.predicted)
    probs = [c for c in ref.columns if c.startswith('p_')]
    assert probs == [c for c in got.columns if c.startswith('p_')] and len(probs) == len(card['classes'])
    assert (got[probs] - ref[probs]).abs().to_numpy().max() < 1e-4
    assert (tmp_path/'pred'/'gallery.png').stat().st_size > 1000


def test_predict_takes_folders_and_globs(wbc_run, tmp_path):
    r = cli('predict', wbc_run, REPO/'data_samples'/'wbc_synth'/'basophil', str(REPO/'data_samples'/'wbc_synth'/'*'/'*_0000.png'),
            '--out', tmp_path, '--no-overlays')
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    got = pd.read_csv(tmp_path/'predictions.csv')
    n_baso = len(list((REPO/'data_samples'/'wbc_synth'/'basophil').glob('*.png')))
    n_first = len(list((REPO/'data_samples'/'wbc_synth').glob('*/*_0000.png')))
    assert len(got) == n_baso + n_first - 1                   # basophil_0000.png once
    assert not (tmp_path/'gallery.png').exists()


def test_predict_refuses_what_it_cannot_use(wbc_run, tmp_path):
    r = cli('predict', tmp_path, REPO/'data_samples'/'wbc_synth', '--out', tmp_path/'p')
    assert r.returncode != 0 and 'no model.json' in r.stderr, r.stderr[-2000:]
    r = cli('predict', wbc_run, tmp_path/'missing.png', '--out', tmp_path/'p')
    assert r.returncode != 0 and 'missing.png: no such file or folder' in r.stderr, r.stderr[-2000:]
    (tmp_path/'broken.png').write_bytes(b'not an image')
    r = cli('predict', wbc_run, tmp_path/'broken.png', '--out', tmp_path/'p')
    assert r.returncode != 0 and 'broken.png' in r.stderr and 'Traceback' not in r.stderr, r.stderr[-2000:]


def test_predict_attridet_detections_as_the_run_found_them(demo_runs, tmp_path):
    """The demo's AttriDet run, applied by `hemabook predict` to its test images: the detections the experiment scored
    (its `test_detections.csv`), in files pycocotools and YOLO tools read; the DANN model's folder is a predictor too."""
    from pycocotools.coco import COCO
    out,r = demo_runs
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    run = out/'attridet'
    ref = pd.read_csv(run/'test_detections.csv')
    files = list(dict.fromkeys(ref.path))
    bs = json.loads((run/'metrics.json').read_text())['params']['batch']
    r = cli('predict', run, *files, '--out', tmp_path/'pred', '--device', 'cpu', '--bs', bs)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    got = pd.read_csv(tmp_path/'pred'/'detections.csv')
    # the same detections, boxes to a thousandth of a pixel (batches of other images: float noise), same attributes
    key = lambda d: d.sort_values(['score'], ascending=False, kind='stable').reset_index(drop=True)
    for f in files:
        g,e = key(got[got.file == f]),key(ref[ref.path == f])
        assert len(g) == len(e) and list(g.label) == list(e.label), f
        assert abs(g[['x0', 'y0', 'x1', 'y1']].to_numpy() - e[['x0', 'y0', 'x1', 'y1']].to_numpy()).max() < 1e-3, f
        assert (g.score - e.score).abs().max() < 1e-4 and (g.filter(like='p_') - e.filter(like='p_')).abs().max().max() < 1e-4
    coco = COCO(str(tmp_path/'pred'/'coco.json'))
    assert len(coco.getImgIds()) == len(files) and len(coco.getAnnIds()) == len(got)
    assert len(coco.loadRes(str(tmp_path/'pred'/'coco_results.json')).getAnnIds()) == len(got)
    card = json.loads((run/'model.json').read_text())
    assert (tmp_path/'pred'/'classes.txt').read_text().split() == card['classes']
    assert sum(len(f.read_text().splitlines()) for f in (tmp_path/'pred'/'labels').glob('*.txt')) == len(got)
    assert len(list((tmp_path/'pred'/'overlays').glob('*.png'))) == len(files)
    r = cli('predict', run/'dann', files[0], '--out', tmp_path/'dann', '--no-overlays')
    assert r.returncode == 0 and (tmp_path/'dann'/'coco.json').exists(), r.stdout[-3000:] + r.stderr[-3000:]


def test_predict_dessam_instances_in_files_other_tools_read(demo_runs, tmp_path):
    """The demo's DES-SAM run (its smoke preset) on the bundled nuclei images: a 16-bit label image per image at the
    image's own size, one `instances.csv` row per id in it, and COCO files that pycocotools reads. The smoke model (2
    epochs at 128 px) finds no nucleus above its threshold on these images, and the command says so; the masks of a
    model that finds them are checked on real data in test_dessam.py."""
    import numpy as np
    from PIL import Image
    from pycocotools.coco import COCO
    out,r = demo_runs
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    imgs = sorted((REPO/'data_samples'/'nuclei_coco').rglob('*.png'))
    r = cli('predict', out/'dessam', *imgs, '--out', tmp_path, '--device', 'cpu')
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert re.search(rf"^{len(imgs)} images in .* on cpu; \d+ nuclei", r.stdout, re.M), r.stdout
    inst = pd.read_csv(tmp_path/'instances.csv')
    coco = COCO(str(tmp_path/'coco.json'))
    assert len(coco.getImgIds()) == len(imgs) and len(coco.getAnnIds()) == len(inst)
    assert len(json.loads((tmp_path/'coco_results.json').read_text())) == len(inst)
    if not len(inst): assert 'found no nucleus with a score of at least 0.5 in 4 images' in r.stdout, r.stdout
    for f in imgs:
        lbl = np.array(Image.open(tmp_path/'labels'/f'{f.stem}.png'))
        assert lbl.dtype == np.uint16 and lbl.shape == np.array(Image.open(f)).shape[:2], (f, lbl.dtype, lbl.shape)
        rows = inst[inst.file == str(f)]
        assert sorted(rows.id) == sorted(set(np.unique(lbl)) - {0}), f
        assert list(rows.area) == [int((lbl == i).sum()) for i in rows.id], f
    assert len(list((tmp_path/'overlays').glob('*.png'))) == len(imgs)
