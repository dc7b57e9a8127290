"""DES-SAM end to end through `hemabook run dessam`, trained from boxes only, on the real DSB2018 colour images.

Generated cytology is covered by `nbs/60_dessam.ipynb` (trained on 24 generated fields, student against filled boxes
asserted) and by the demo's smoke run of this experiment on the bundled generated sample."""
import json, re
from pathlib import Path

import numpy as np
import pandas as pd

from conftest import cli, shared_subset

def _check_run(out, untrained_margin):
    m = json.loads((out/'metrics.json').read_text())
    s,ref = m['summary'],m['untrained_reference']['summary']
    assert not m['distillation'] and m['params']['weights']['distill_bce'] == 0 and 'no SAM checkpoint' in m['recipe']['note']
    # nearly every ground-truth box gets a mask (a mask that thresholds to nothing is absent), every box its filled box
    assert s['box | gt boxes']['n_pred'] == s['box | gt boxes']['n_gt'] == s['student | gt boxes']['n_gt']
    assert s['student | gt boxes']['n_pred'] >= 0.95*s['student | gt boxes']['n_gt'], s['student | gt boxes']
    assert 0.4 < s['box | gt boxes']['aji'] < 0.95
    # learning from boxes: the detector and the masks leave the untrained model far behind (box AP 0.37-0.48 after 4
    # epochs over seeds 0-4, 0.46-0.54 after 6; untrained 0.000)
    assert m['box_ap50'] > m['untrained_reference']['box_ap50'] + 0.25, (m['box_ap50'], m['untrained_reference']['box_ap50'])
    assert s['student | gt boxes']['aji'] > ref['student | gt boxes']['aji'] + untrained_margin, (s['student | gt boxes'], ref['student | gt boxes'])
    assert (out/'instances.png').stat().st_size > 10_000 and (out/'per_image.csv').exists() and (out/'model'/'checkpoints'/'last.pth').exists()
    return m

def test_dsb2018_colour(shared_data, tmp_path):
    """The real preset on the 107 DSB2018 colour images (boxes from the masks; masks read only to score), trained 4
    epochs instead of its 6: a third less time, the same margins at this seed (below)."""
    shared_subset(shared_data, 'dsb2018_color')
    out = tmp_path/'run'
    r = cli('run', 'dessam', '-p', 'PRESET', 'real', '-p', 'EPOCHS', 4, '--out', out, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    m = _check_run(out, 0.2)
    s = m['summary']
    assert m['n_test_images'] == 21 and s['box | gt boxes']['n_gt'] > 500
    p = m['params']
    assert p['image_size'] == 512 and p['fpn_channels'] == 32 and p['epochs'] == 4 and p['weights']['levelset'] == 0.03
    # Masks trained from boxes alone beat the filled boxes (on the ground-truth boxes, so that mask quality is compared
    # without the detector's errors). The noise, measured (nbs/explanations/dessam_dsb2018.ipynb; 2-core CPU, one
    # thread as here, one per xdist worker): the training trajectory depends on the seed (which here also draws the
    # split) and on the thread count. After 6 epochs, over seeds and both pyramids, the AJI gain was +0.016 to +0.085;
    # after 4 epochs with the 32-channel pyramid, seeds 0-4: +0.076 (seed 0, this test), +0.085, +0.006, +0.083, +0.100
    # -- seed 2's masks still nearly filled their boxes. A bar at +0.02 sat inside that spread and failed CI once; the
    # bar is +0.005, below every run measured, and what it guards is the failure modes (masks that fill their boxes:
    # gain exactly 0; inverted masks: AJI near 0.12).
    g = s['student | gt boxes']['aji'] - s['box | gt boxes']['aji']
    assert g > 0.005, (s['student | gt boxes'], s['box | gt boxes'])
    assert m['gain_aji']['gt_boxes'] == g and not m['warnings'], m['warnings']
    # On the detections the gain is smaller and noisier (+0.005 to +0.070 after 6 epochs, -0.000 to +0.049 after 4):
    # the student must not be clearly worse than the boxes there.
    assert s['student | detections']['aji'] > s['box | detections']['aji'] - 0.02, (s['student | detections'], s['box | detections'])
    _predict_reproduces_the_run(out, tmp_path/'pred')
    _tiles_match_the_images(out, tmp_path/'tiles')


def test_dsb2018_grey(shared_data, tmp_path):
    """The `real_grey` preset on the 100 DSB2018 greyscale (fluorescence) images: dim, bright nuclei on black -- the
    median pixel 6 of 255 in a typical image, nuclei smaller than in the colour set -- trained 4 epochs instead of 6.
    Its `CONTRAST percentile` step (each image stretched between its 1st and 99.8th percentiles inside the model, so
    that `hemabook predict` applies it too) is what makes them learnable: without it (`CONTRAST none`, 6 epochs, seed 0)
    the detector found nothing (box AP 0.000, the untrained model's 0.003) and the masks were exactly the boxes."""
    shared_subset(shared_data, 'dsb2018_grey')
    out = tmp_path/'run'
    r = cli('run', 'dessam', '-p', 'PRESET', 'real_grey', '-p', 'EPOCHS', 4, '--out', out, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    m = _check_run(out, 0.2)
    s,p = m['summary'],m['params']
    assert m['n_test_images'] == 20 and s['box | gt boxes']['n_gt'] > 400 and p['contrast'] == 'percentile'
    assert json.loads((out/'model.json').read_text())['config']['contrast'] == 'percentile'
    # Measured (2026-12-02, 2-core CPU, one thread as here; the seed also draws the split), after 4 epochs:
    # box AP@0.5 0.616 / 0.525 / 0.595 at seeds 0 / 1 / 2 (untrained 0.006 / 0.000 / 0.001); the student's AJI on the
    # ground-truth boxes +0.075 / +0.054 / +0.035 over the filled boxes, on the detections +0.140 / +0.225 / +0.137.
    # The bars sit below every run; what they guard is the failure seen without the contrast step (nothing detected,
    # masks equal to their boxes: gain 0).
    assert m['box_ap50'] > 0.35, m['box_ap50']
    g = s['student | gt boxes']['aji'] - s['box | gt boxes']['aji']
    assert g > 0.01 and m['gain_aji']['detections'] > 0.05 and not m['warnings'], (g, m['gain_aji'], m['warnings'])


def _predict_reproduces_the_run(run, pred):
    """The run folder's predictor (`load_run`, what `hemabook predict` uses) on its 21 test images writes the label images
    the experiment scored: read back from the 16-bit PNGs, each image's AJI against the ground truth is the run's
    (`per_image.csv`). Same weights, same batches of 2 and one thread, so the same arithmetic: equal to rounding."""
    from PIL import Image
    from pycocotools.coco import COCO
    from hemabook.core import shared_data_path
    from hemabook.data.core import read_data
    from hemabook.dessam import gt_labels
    from hemabook.metrics import inst_metrics
    per = pd.read_csv(run/'per_image.csv'); per = per[per.kind == 'student | detections']
    from hemabook.predict import load_run
    pr = load_run(run, 'cpu')          # what `hemabook predict` runs (its command line is tested on the demo's run)
    res = pr.predict(list(per.image), bs=2, verbose=False)
    pr.write(res, pred, overlays=False)
    assert re.search(r"^21 images in .* on cpu; \d+ nuclei", res.attrs['summary']), res.attrs['summary']
    data = read_data(shared_data_path()/'dsb2018_color', 'dsb2018', 'instance')
    gts = gt_labels(data[data.path.isin(per.image)])
    inst = pd.read_csv(pred/'instances.csv')
    for p,aji in zip(per.image, per.aji):
        lbl = np.array(Image.open(pred/'labels'/f'{Path(p).stem}.png'))
        assert lbl.dtype == np.uint16 and lbl.shape == gts[p].shape, (p, lbl.dtype, lbl.shape)
        assert abs(inst_metrics(gts[p], lbl.astype(np.int32))['aji'] - aji) < 1e-6, p
        assert sorted(inst[inst.file == p].id) == sorted(set(np.unique(lbl)) - {0}), p
    assert len(json.loads((pred/'coco_results.json').read_text())) == len(inst) == per.n_pred.sum()
    coco = COCO(str(pred/'coco.json')); res = coco.loadRes(str(pred/'coco_results.json'))   # RLE masks = label images
    p = per.image.iloc[0]; lbl = np.array(Image.open(pred/'labels'/f'{Path(p).stem}.png'))
    img_id = next(i['id'] for i in coco.dataset['images'] if i['file_name'] == p)
    anns = res.loadAnns(res.getAnnIds(imgIds=[img_id]))
    ids = inst[inst.file == p].id.tolist()
    assert len(anns) == len(ids) and all((res.annToMask(a).astype(bool) == (lbl == i)).all() for a,i in zip(anns, ids))


def _tiles_match_the_images(run, d):
    """Tiled prediction (`tile=256, overlap=64`) of a 512-pixel mosaic of the top-left 256-pixel crops of four test
    images finds the nuclei that the four crops predicted one by one find (each crop and each window resized alike, ×2,
    to the model's 512 pixels): a nucleus of one is matched (IoU ≥ 0.5) in the other for at least 70 % of either's,
    and the stitched label image and `instances.csv` agree id for id. The windows see across the crops' seams where a
    crop alone sees black, hence the tolerance. Measured (2026-12-02, this run's seed, epochs and thread count; crops
    of test images 1-4, 5-8, 9-12): 0.90 / 0.93, 0.90 / 0.96, 0.81 / 0.78."""
    from PIL import Image
    from hemabook.core import load_image
    from hemabook.predict import load_run
    per = pd.read_csv(run/'per_image.csv'); per = per[per.kind == 'student | detections']
    d.mkdir(); big,crops = np.zeros((512, 512, 3), np.uint8),[]
    for k,p in enumerate(per.image.iloc[:4]):
        i,j = divmod(k, 2); c = big[i*256:(i+1)*256, j*256:(j+1)*256] = load_image(p)[:256, :256]
        Image.fromarray(c).save(d/f'crop{k}.png'); crops.append(str(d/f'crop{k}.png'))
    Image.fromarray(big).save(d/'mosaic.png')
    pr = load_run(run, 'cpu')
    tiled = pr.predict([d/'mosaic.png'], bs=2, verbose=False, tile=256, overlap=64)
    assert '(windows of 256 pixels: 9)' in tiled.attrs['summary'], tiled.attrs['summary']
    pr.write(tiled, d/'out', overlays=False)
    got = np.array(Image.open(d/'out'/'labels'/'mosaic.png')).astype(np.int32)
    assert got.shape == (512, 512) and sorted(pd.read_csv(d/'out'/'instances.csv').id) == sorted(set(np.unique(got)) - {0})
    each = pr.predict(crops, bs=2, verbose=False)
    ref,n = np.zeros((512, 512), np.int32),0
    for k,c in enumerate(crops):
        i,j = divmod(k, 2); l = each.attrs['labels'][c]
        ref[i*256:(i+1)*256, j*256:(j+1)*256] = np.where(l > 0, l + n, 0); n += int(l.max())
    def found(a, b):                       # the share of a's instances that b matches with IoU ≥ 0.5
        ids,ok = np.unique(a)[1:],0
        for i in ids:
            m = a == i; o = b[m]; o = o[o > 0]
            if len(o): j = np.bincount(o).argmax(); k = (o == j).sum(); ok += k/(m.sum() + (b == j).sum() - k) >= 0.5
        return ok/max(len(ids), 1)
    assert n >= 10 and found(ref, got) >= 0.7 and found(got, ref) >= 0.7, (n, found(ref, got), found(got, ref))


def test_teacher_student_picture_on_a_non_square_image():
    """`show_teacher_student` scales the boxes to the model's input per axis (the `full` preset's picture failed here with
    a broadcasting error: only a SAM checkpoint draws it in the experiment)."""
    import matplotlib; matplotlib.use('Agg')
    import numpy as np
    from hemabook.dessam import dessam_model, show_teacher_student
    from hemabook.core import set_seed
    set_seed(0)
    m = dessam_model('tiny', 64, fpn_channels=16).eval()
    img = np.random.default_rng(0).integers(0, 255, (90, 150, 3), dtype=np.uint8)
    axs = show_teacher_student(m, img, [[10, 10, 40, 50], [60, 20, 120, 80]])
    titles = [a.get_title() for a in axs]
    assert titles[0] == 'boxes (2)' and [t.split(' (')[0] for t in titles] == ['boxes', 'teacher', 'student'], titles
    # a random decoder's mask for a box may threshold to nothing (a fresh clone once drew 'teacher (1)'): at most one
    # instance per box
    assert all(int(t.split('(')[1].rstrip(')')) <= 2 for t in titles), titles
