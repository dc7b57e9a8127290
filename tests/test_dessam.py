"""DES-SAM end to end through `hemabook run dessam`, trained from boxes only, on the real DSB2018 colour images.

Generated cytology is covered by `nbs/60_dessam.ipynb` (trained on 24 generated fields, student against filled boxes
asserted) and by the demo's smoke run of this experiment on the bundled generated sample."""
import json
from conftest import cli, shared_subset

def _check_run(out, untrained_margin):
    m = json.loads((out/'metrics.json').read_text())
    s,ref = m['summary'],m['untrained_reference']['summary']
    assert not m['distillation'] and m['params']['weights']['distill_bce'] == 0 and 'no SAM checkpoint' in m['recipe']['note']
    # nearly every ground-truth box gets a mask (a mask that thresholds to nothing is absent), every box its filled box
    assert s['box | gt boxes']['n_pred'] == s['box | gt boxes']['n_gt'] == s['student | gt boxes']['n_gt']
    assert s['student | gt boxes']['n_pred'] >= 0.95*s['student | gt boxes']['n_gt'], s['student | gt boxes']
    assert 0.4 < s['box | gt boxes']['aji'] < 0.95
    # learning from boxes: the detector and the masks leave the untrained model far behind
    assert m['box_ap50'] > m['untrained_reference']['box_ap50'] + 0.3, (m['box_ap50'], m['untrained_reference']['box_ap50'])
    assert s['student | gt boxes']['aji'] > ref['student | gt boxes']['aji'] + untrained_margin, (s['student | gt boxes'], ref['student | gt boxes'])
    assert (out/'instances.png').stat().st_size > 10_000 and (out/'per_image.csv').exists() and (out/'model'/'checkpoints'/'last.pth').exists()
    return m

def test_dsb2018_colour(shared_data, tmp_path):
    "The real preset on the 107 DSB2018 colour images (boxes from the masks; masks read only to score)."
    shared_subset(shared_data, 'dsb2018_color')
    out = tmp_path/'run'
    r = cli('run', 'dessam', '-p', 'PRESET', 'real', '--out', out, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    m = _check_run(out, 0.2)
    s = m['summary']
    assert m['n_test_images'] == 21 and s['box | gt boxes']['n_gt'] > 500
    assert m['params']['image_size'] == 512 and m['params']['weights']['levelset'] == 0.03
    # the bar: masks trained from boxes alone beat the filled boxes on AJI (on the ground-truth boxes, so that
    # mask quality is compared without the detector's errors), and on the detections too
    assert s['student | gt boxes']['aji'] > s['box | gt boxes']['aji'] + 0.02, (s['student | gt boxes'], s['box | gt boxes'])
    assert s['student | detections']['aji'] > s['box | detections']['aji'], (s['student | detections'], s['box | detections'])
