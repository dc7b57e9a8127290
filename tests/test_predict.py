"""`hemabook predict` on a run folder that `hemabook run` trained: the model is rebuilt from its card alone, and on the
run's own validation images gives the probabilities the experiment recorded."""
import json, re, subprocess, sys
from pathlib import Path

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
    r = cli('predict', wbc_run, REPO/'data_samples'/'wbc_synth'/'basophil', '--out', tmp_path/'t', '--tile', 64)
    assert r.returncode == 2 and '--tile: wbc_classifier runs classify whole images' in r.stderr, r.stderr[-2000:]


def test_predict_refuses_what_it_cannot_use(wbc_run, tmp_path):
    """A folder without a model, a missing file, a file that is not an image: exit 2 and one line naming it, before
    torch is imported (the command line's `main`, in a fresh interpreter that reports whether torch was loaded)."""
    code = "import sys; from hemabook.runner import main; rc = main(sys.argv[1:]); print(rc, 'torch' in sys.modules)"
    def refused(run, inp, msg):
        r = subprocess.run([sys.executable, '-c', code, 'predict', str(run), str(inp), '--out', str(tmp_path/'p')],
                           capture_output=True, text=True, timeout=120)
        assert r.stdout.split() == ['2', 'False'] and msg in r.stderr and 'Traceback' not in r.stderr, (r.stdout, r.stderr)
        assert not (tmp_path/'p').exists()
    refused(tmp_path, REPO/'data_samples'/'wbc_synth', 'no model.json')
    refused(wbc_run, tmp_path/'missing.png', 'missing.png: no such file or folder')
    (tmp_path/'broken.png').write_bytes(b'not an image')
    refused(wbc_run, tmp_path/'broken.png', 'broken.png: cannot read the image header')


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
    r = cli('predict', run, files[0], '--out', tmp_path/'tiled', '--tile', 128, '--overlap', 32)   # 3 × 3 windows
    assert r.returncode == 0 and 'in 9 windows of 128 pixels' in r.stdout, r.stdout[-3000:] + r.stderr[-3000:]
    tiled = pd.read_csv(tmp_path/'tiled'/'detections.csv')
    assert set(tiled.file) <= {files[0]} and (tiled[['x1', 'y1']].to_numpy() <= 256).all()
    assert len(COCO(str(tmp_path/'tiled'/'coco.json')).getAnnIds()) == len(tiled)


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


def test_predict_bloodshot_queries_as_the_run_classified_them(demo_runs, wbc_run, tmp_path):
    """The demo's BloodShot run, applied to its own queries: the classes and cosines of its `queries.csv`. Its support
    cells, as a folder of class folders (`--support`), give the same prototypes again; a run of another method refuses
    a support set."""
    from hemabook.core import ConfigError
    from hemabook.runner import _cmd_predict, _parser
    run = demo_runs[0]/'bloodshot'
    card,q = json.loads((run/'model.json').read_text()),pd.read_csv(run/'queries.csv')
    assert card['experiment'] == 'bloodshot' and card['variant'] == 'aam_consistency' and card['classes'] == sorted(q.label.unique())
    cos = [f'cos_{c}' for c in card['classes']]
    r = cli('predict', run, *q.file, '--out', tmp_path/'pred')
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert re.search(rf"^{len(q)} images in .* on cpu$", r.stdout, re.M), r.stdout
    p = pd.read_csv(tmp_path/'pred'/'predictions.csv')
    assert list(p.columns) == ['file', 'predicted', 'cosine', *cos] and (tmp_path/'pred'/'gallery.png').exists()
    assert list(p.file) == list(q.file) and list(p.predicted) == list(q.predicted)
    assert (p[cos] - q[cos]).abs().max().max() < 1e-6
    sup = pd.read_csv(run/'support.csv')
    assert len(sup) == card['support']['n'] and sup.label.value_counts().to_dict() == card['support']['per_class']
    for i,s in enumerate(sup.itertuples()):
        (tmp_path/'support'/s.label).mkdir(parents=True, exist_ok=True)
        (tmp_path/'support'/s.label/f'{i}{Path(s.file).suffix}').symlink_to(s.file)
    args = lambda run_dir, out: _parser().parse_args(['predict', str(run_dir), *q.file[:4], '--out', str(tmp_path/out),
                                                      '--support', str(tmp_path/'support'), '--no-overlays'])
    assert _cmd_predict(args(run/'aam_consistency', 'pred2')) == 0          # in this process: torch is loaded already
    p2 = pd.read_csv(tmp_path/'pred2'/'predictions.csv')
    # the prototypes come from the same images embedded in other batches, which round differently in float32: the
    # cosines differed by up to 1e-5 with the 6-epoch smoke embedder, 5.5e-5 with the 4-epoch one (2026-12-02)
    assert list(p2.predicted) == list(q.predicted[:4]) and (p2[cos] - q[cos][:4]).abs().max().max() < 5e-4
    with pytest.raises(ConfigError, match='wbc_classifier runs take no support set'): _cmd_predict(args(wbc_run, 'pred3'))


def test_predict_samed_volumes_and_images(demo_runs, tmp_path):
    """The demo's SAMed run on the bundled Synapse test volume (h5), the same volume as a NIfTI in Hounsfield units and one
    slice as a PNG: the label volume read back from the h5 scores the run's own per-organ Dice (`per_case.csv`); the
    NIfTI's labels come back in its geometry and agree with the h5's; the PNG's is an 8-bit class map of the image's size."""
    import h5py
    import numpy as np
    import SimpleITK as sitk
    from PIL import Image
    from hemabook.data.seg import ct_slice_rgb
    from hemabook.metrics import case_metrics
    out,r = demo_runs
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    run,vol_f = out/'samed',REPO/'data_samples'/'synapse'/'test_vol_h5'/'case0001.npy.h5'
    card = json.loads((run/'model.json').read_text())
    assert card['experiment'] == 'samed' and card['task'] == 'semantic' and card['classes'][0] == 'background'
    with h5py.File(vol_f) as h: img,gt = h['image'][:],h['label'][:].astype(np.uint8)
    ct = sitk.GetImageFromArray(img*400 - 125); ct.SetSpacing((.75, .75, 3.)); sitk.WriteImage(ct, str(tmp_path/'ct.nii.gz'))
    Image.fromarray(ct_slice_rgb(img[2])).save(tmp_path/'slice2.png')
    r = cli('predict', run, vol_f, tmp_path/'ct.nii.gz', tmp_path/'slice2.png', '--out', tmp_path/'pred', '--device', 'cpu')
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert re.search(r"^3 images in .* on cpu; \d+ foreground voxels", r.stdout, re.M), r.stdout
    with h5py.File(tmp_path/'pred'/'labels'/'case0001.npy.h5') as h: pred = h['label'][:]
    assert pred.shape == gt.shape and pred.dtype == np.uint8
    per_case = pd.read_csv(run/'per_case.csv', index_col=0)
    organs = card['classes'][1:]
    dsc = case_metrics(pred, gt, len(organs))[:, 0]
    assert np.allclose(dsc, per_case.loc['case0001', organs].to_numpy(float), atol=1e-9), (dsc, per_case.loc['case0001'])
    back = sitk.ReadImage(str(tmp_path/'pred'/'labels'/'ct.nii.gz'))
    assert np.allclose(back.GetSpacing(), (.75, .75, 3.))
    # HU → [0, 1] is exact up to float rounding, which may move a pixel across a decision boundary
    assert (sitk.GetArrayFromImage(back) == pred).mean() > 0.999
    png = np.array(Image.open(tmp_path/'pred'/'labels'/'slice2.png'))
    assert png.dtype == np.uint8 and png.shape == img.shape[1:] and png.max() <= len(organs)
    tab = pd.read_csv(tmp_path/'pred'/'labels.csv')
    assert list(tab.kind) == ['volume', 'volume', 'image'] and list(tab.input_units) == ['[0, 1]', 'HU', 'pixels']
    assert tab[[f'n_{c}' for c in card['classes']]].sum(axis=1).tolist() == [gt.size, gt.size, gt[2].size]
    assert sorted(p.name for p in (tmp_path/'pred'/'overlays').iterdir()) == ['case0001.png', 'ct.png', 'slice2.png']


def test_predict_samed_tiles_blend_like_the_slices(demo_runs, tmp_path):
    """The demo's SAMed run on a mosaic of four 64-pixel CT slices, in windows of 64 that straddle the seams
    (`tile=64, overlap=16`, probabilities blended), labels the pixels as the slices predicted one by one do: each window
    is resized to the model's 128 pixels as a slice is, and differs only in what it sees across the seams and in the
    resizing of probabilities rather than of labels. Measured (2026-12-02): 98.1 % of the pixels, 95.3 % of the
    foreground, agree."""
    import numpy as np
    from PIL import Image
    from hemabook.data.seg import ct_slice_rgb, read_volume
    from hemabook.predict import load_run
    out,r = demo_runs
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    pred = load_run(out/'samed', 'cpu')
    vol,_ = read_volume(sorted((REPO/'data_samples'/'synapse').rglob('*.npy.h5'))[0])
    s = vol.shape[1]; big,files = np.zeros((2*s, 2*s, 3), np.uint8),[]
    for k in range(4):
        i,j = divmod(k, 2); x = big[i*s:(i+1)*s, j*s:(j+1)*s] = ct_slice_rgb(vol[k % len(vol)])
        Image.fromarray(x).save(tmp_path/f's{k}.png'); files.append(tmp_path/f's{k}.png')
    Image.fromarray(big).save(tmp_path/'mosaic.png')
    got = pred.predict([tmp_path/'mosaic.png'], tile=s, overlap=s//4, verbose=False).attrs['labels'][str(tmp_path/'mosaic.png')]
    each = pred.predict(files, verbose=False).attrs['labels']
    ref = np.zeros_like(got)
    for k,f in enumerate(files): i,j = divmod(k, 2); ref[i*s:(i+1)*s, j*s:(j+1)*s] = each[str(f)]
    fg = ref > 0
    assert got.shape == (2*s, 2*s) and fg.mean() > 0.05, (got.shape, fg.mean())
    assert (got == ref).mean() > 0.9 and (got[fg] == ref[fg]).mean() > 0.85, ((got == ref).mean(), (got[fg] == ref[fg]).mean())


def test_predict_bcsam_cells_as_the_run_encoded_them(demo_runs, tmp_path):
    """The demo's BC-SAM run (its smoke preset), applied by `hemabook predict` to eight of its own cells: the codes
    its predictor makes are the run's (`latents.npy`, float16 features: to 1e-3), and its classes are those of BC-SAM's
    `logreg` classifier fitted on the run's source-domain codes; `predictions.csv` has a probability per class."""
    import numpy as np
    from hemabook.crossdomain import make_classifier
    from hemabook.predict import load_run
    out,r = demo_runs
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    run = out/'bcsam'
    cells,Z = pd.read_csv(run/'cells.csv'),np.load(run/'latents.npy')
    card = json.loads((run/'model.json').read_text())
    assert card['experiment'] == 'bcsam' and card['task'] == 'classification' and card['classifier'] == 'logreg'
    pick = cells.index[::max(1, len(cells)//8)][:8]
    r = cli('predict', run, *cells.path[pick], '--out', tmp_path/'pred', '--device', 'cpu')
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    got = pd.read_csv(tmp_path/'pred'/'predictions.csv')
    src = (cells.domain == card['trained_on']).to_numpy()
    ref = make_classifier('logreg').fit(Z[src], cells.label[src])
    assert list(got.file) == list(cells.path[pick]) and list(got.predicted) == list(ref.predict(Z[pick]))
    probs = got[[f'p_{c}' for c in card['classes']]].to_numpy()
    assert np.allclose(probs.sum(1), 1, atol=1e-5) and (got.confidence == probs.max(1)).all()
    Z2,_ = load_run(run, 'cpu').codes(list(cells.path[pick]), verbose=False)
    assert np.abs(Z2 - Z[pick]).max() < 1e-3, np.abs(Z2 - Z[pick]).max()
