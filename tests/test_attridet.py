"AttriDet end to end: attributes learned on generated smears, and real BCCD white cells detected far better than by an untrained model."
import json
import numpy as np
import pandas as pd
from conftest import cli, shared_subset

def test_attributes_learned_on_generated_smears(attri_trained):
    "Trained on 40 generated H_100X_C1 fields, the attribute head beats the majority value on held-out patients, end to end and on GT boxes."
    r = json.loads((attri_trained/'eval.json').read_text())
    det,gt = r['det'],r['gt']
    # Measured (one thread, 2026-12-02): at this seed attribute accuracy minus the majority's +0.127 (GT boxes) and
    # +0.125 (detections), mAP 0.369; at seed 1 only +0.016 and +0.020 (mAP 0.485), below the bars; after 5 epochs
    # +0.000 / +0.027. The attribute head's learning in 8 epochs depends on the seed: a known weakness, not yet fixed.
    assert gt['n'] >= 7*50 and det['coverage'] > 0.8, (gt['n'], det['coverage'])
    assert gt['accuracy'] > gt['majority'] + 0.05, (gt['accuracy'], gt['majority'])
    assert det['accuracy'] > det['majority'] + 0.05, (det['accuracy'], det['majority'])
    assert r['map50'] > 0.15, r['map50']         # 14 classes from 32 fields: learning, not solved

def test_tiled_detection_on_a_large_smear(attri_trained, tmp_path):
    """A 768-pixel mosaic of nine generated 256-pixel fields (the trained detector's input side), predicted in windows of
    256 that straddle the fields' seams (`tile=256, overlap=64`), finds what each field predicted alone finds: the boxes
    (score ≥ 0.3) of one are among the other's (score ≥ 0.15, IoU ≥ 0.5), and the share of white cells found (at
    0.3) is the same within 0.15. Squeezing the whole mosaic into the model's 256 pixels, as without `tile`, finds
    none. The windows differ from the fields only in what they see across the seams, and this weak detector's scores
    sit near the thresholds, hence the bars. Measured (2026-12-02, mosaic seeds 7, 8, 9, the model trained with one
    thread and with two): boxes found either way 0.889–1.0; recall tiled 0.694 / 0.583 / 0.694 / 0.361 / 0.417 / 0.389
    against per field 0.694 / 0.583 / 0.694 / 0.444 / 0.333 / 0.417; squeezed 0.0 every time."""
    import torch
    from PIL import Image
    from torchvision.ops import box_iou
    from hemabook.predict import load_run
    from hemabook.synthetic import apply_domain, synth_smear
    pred = load_run(attri_trained/'run', 'cpu')
    big,gt,fields = np.zeros((768, 768, 3), np.uint8),[],[]
    for i in range(3):
        for j in range(3):
            img,objs,_ = synth_smear(256, n_wbc=4, rng=np.random.default_rng([7, i, j]))
            big[i*256:(i+1)*256, j*256:(j+1)*256] = apply_domain(img, 'H_100X_C1', np.random.default_rng([7, i, j, 0]))
            gt += [(o['x0'] + j*256, o['y0'] + i*256, o['x1'] + j*256, o['y1'] + i*256) for o in objs if o['kind'] == 'wbc']
            Image.fromarray(big[i*256:(i+1)*256, j*256:(j+1)*256]).save(tmp_path/f'field_{i}{j}.png'); fields.append((i, j))
    Image.fromarray(big).save(tmp_path/'mosaic.png')
    tiled = pred.predict([tmp_path/'mosaic.png'], tile=256, overlap=64, verbose=False)
    assert tiled.attrs['summary'].endswith('in 16 windows of 256 pixels'), tiled.attrs['summary']   # 4 × 4
    assert set(tiled.file) == {str(tmp_path/'mosaic.png')} and tiled[['x1', 'y1']].max().max() <= 768
    each = pred.predict([tmp_path/f'field_{i}{j}.png' for i,j in fields], verbose=False)
    at = {str(tmp_path/f'field_{i}{j}.png'): (j*256, i*256) for i,j in fields}
    dx,dy = each.file.map(lambda f: at[f][0]),each.file.map(lambda f: at[f][1])
    each = each.assign(x0=each.x0 + dx, x1=each.x1 + dx, y0=each.y0 + dy, y1=each.y1 + dy)
    squeezed = pred.predict([tmp_path/'mosaic.png'], verbose=False)
    boxes = lambda d: torch.tensor(d[['x0', 'y0', 'x1', 'y1']].to_numpy(np.float32))
    def found(a, b):           # the share of a's boxes that b holds
        return (box_iou(boxes(a), boxes(b)) >= 0.5).any(1).float().mean().item() if len(a) and len(b) else float(len(a) == 0)
    hi,lo = lambda d: d[d.score >= 0.3],lambda d: d[d.score >= 0.15]
    assert len(hi(each)) >= 10 and found(hi(each), lo(tiled)) >= 0.8 and found(hi(tiled), lo(each)) >= 0.8, (
        len(hi(each)), found(hi(each), lo(tiled)), found(hi(tiled), lo(each)))
    gt = pd.DataFrame(gt, columns=['x0', 'y0', 'x1', 'y1'])
    recall = {k: found(gt, d[d.score >= 0.3]) for k,d in (('tiled', tiled), ('fields', each), ('squeezed', squeezed))}
    assert recall['fields'] > 0.25 and abs(recall['tiled'] - recall['fields']) <= 0.15, recall
    assert recall['squeezed'] < recall['tiled'] - 0.2, recall

def test_bccd_wbc_detected(shared_data, tmp_path):
    """The experiment's bccd preset (fixed seed, one CPU epoch from a random tiny backbone): WBC AP@0.5 on BCCD's test
    set far above an untrained model's. Measured after one epoch (2-core CPU, one thread, 2026-12-02): WBC AP 0.795,
    0.901, 0.957 at seeds 0, 1, 2 (the untrained model's 0.000), mAP 0.537, 0.722, 0.645; after two epochs (seed 0)
    0.938 and 0.835. The bars below sit under every one of them."""
    shared_subset(shared_data, 'bccd')
    out = tmp_path/'run'
    r = cli('run', 'attridet', '-p', 'PRESET', 'bccd', '-p', 'EPOCHS', '1', '--out', out, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    m = json.loads((out/'metrics.json').read_text())
    assert m['classes'] == ['erythrocyte', 'leukocyte', 'platelet'] and m['params']['seed'] == 0
    ap = {c['cls']: c for c in m['map_per_class']['bccd']['bccd']}
    ref = {c['cls']: c for c in m['untrained_reference']['per_class']}
    assert ap['leukocyte']['n_gt'] == 71                      # BCCD's test list
    assert ap['leukocyte']['ap50'] > 0.6 and ap['leukocyte']['ap50'] > ref['leukocyte']['ap50'] + 0.5, (ap['leukocyte'], ref['leukocyte'])
    assert m['domain_table']['map50']['bccd']['bccd'] > 0.4
    assert (out/'detections.png').stat().st_size > 10_000 and (out/'plain'/'checkpoints'/'last.pth').exists()
