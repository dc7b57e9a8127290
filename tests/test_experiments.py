"""Every experiment notebook runs headless through `hemabook run` / `hemabook demo` in its smoke preset, and records
sane metrics. These are the papermill-project 'smoke' tests: small data, tiny models, real code paths."""
import json
import pytest
from conftest import REPO, cli

def test_demo(demo_runs):
    "The demo (conftest's `demo_runs`: run once, shared with the tests that use its run folders) and each smoke run."
    _demo_runs_every_experiment(demo_runs); _wbc_classifier_learns(demo_runs); _bcsam_smoke(demo_runs)
    _bloodshot_smoke(demo_runs); _attridet_smoke(demo_runs); _dessam_smoke(demo_runs)

def _demo_runs_every_experiment(demo):
    out,r = demo
    assert r.returncode==0, r.stdout + r.stderr
    for name in ('bcsam', 'bloodshot', 'attridet', 'dessam', 'samed', 'wbc_classifier'):   # every experiment checks itself
        assert isinstance(json.loads((out/name/'metrics.json').read_text())['warnings'], list), name
    summary = (out/'summary.md').read_text()
    exps = sorted(p.stem for p in (REPO/'nbs'/'experiments').glob('*.ipynb') if not p.name.startswith('_'))
    for name in exps:
        assert f'| {name} | ok |' in summary, summary
        assert (out/name/f'{name}.ipynb').exists() and (out/name/'metrics.json').exists()
        # the row gives the headline beside its reference, and a run that does not beat it says why in its warnings
        row = next(l for l in summary.splitlines() if l.startswith(f'| {name} |')).split(' | ')
        h = json.loads((out/name/'metrics.json').read_text())['headline']
        assert row[3].startswith(h['metric']) and row[4].startswith(h['reference_name']) and row[5] in ('yes', '**no**'), row
        assert (row[5] == 'yes') == h['beat'] and (h['beat'] or row[6] != 'none |'), row
    for name in ('wbc_classifier', 'samed', 'bcsam'):           # these smoke presets learn enough to beat their reference
        assert json.loads((out/name/'metrics.json').read_text())['headline']['beat'], name

def _wbc_classifier_learns(demo):
    out,_ = demo
    run = out/'wbc_classifier'
    m = json.loads((run/'metrics.json').read_text())
    assert m['n_train']==60 and m['n_valid']==20 and len(m['classes'])==5
    assert m['accuracy'] > 2*m['chance'], f"accuracy {m['accuracy']:.2f} is not clearly above chance {m['chance']:.2f}"
    hist = json.loads((run/'history.json').read_text())
    assert len(hist)==m['epochs']
    params,rec = json.loads((run/'params.json').read_text()),json.loads((run/'run.json').read_text())
    assert params['preset']=='smoke' and params['device']=='cpu' and rec['status']=='ok'
    # one run id on every record: params, each history row, metrics, the executed notebook
    assert params['run_id'] == m['run_id'] == rec['run_id'] and {r['run_id'] for r in hist} == {rec['run_id']}
    assert json.loads((run/'wbc_classifier.ipynb').read_text())['metadata']['hemabook']['run_id'] == rec['run_id']
    assert m['warnings'] == [], m['warnings']
    assert (run/'checkpoints'/'last.pth').exists() and (run/'confusion.png').exists()

def _bcsam_smoke(demo):
    out,_ = demo
    run = out/'bcsam'
    m = json.loads((run/'metrics.json').read_text())
    assert set(m['table']) == {'rf', 'svm_poly', 'svm_rbf', 'mlp', 'logreg'}
    assert len(m['table']['rf']) == 9                       # A→A, A→B, B→A, B→B (mean and std) and the average
    assert m['cells'] == {'matek19': 20, 'acevedo20': 20} and m['empty_masks'] == 0
    assert m['seg_dice'] > 0.5
    # the sample domains differ only in tint: the aligned codes classify both ways far above chance
    assert m['average'] > 2*100*max(m['majority_rate'].values()), m['table']
    assert 'no SAM checkpoint' in m['recipe']['note']       # the outputs say the encoder trained fully
    for f in ('umap.png', 'reconstructions.png', 'confusion.png', 'scores.csv', 'latents.npy'): assert (run/f).exists()

def _bloodshot_smoke(demo):
    out,_ = demo
    run = out/'bloodshot'
    m = json.loads((run/'metrics.json').read_text())
    assert set(m['fewshot']) == {'softmax', 'aam', 'aam_consistency'}
    assert m['classes'] == ['lymphoblast', 'lymphocyte'] and (m['support'], m['query']) == (20, 20)   # C-NMC fold 0 / test
    for v,r in m['fewshot'].items():
        assert r['k'] == 5 and 0 <= r['accuracy']['mean'] <= 1 and r['accuracy']['std'] > 0, (v, r)
        assert m['in_domain'][v]['accuracy'] > 0.2, (v, m['in_domain'][v])       # five synthetic types: chance 0.2
        assert m['k_curve'][v]['k'] == [1, 2, 3, 5, 10]
    for f in ('k_curve.png', 'k_curve.csv', 'fewshot_table.csv', 'aam/embedder.pth'): assert (run/f).exists()

def _attridet_smoke(demo):
    "The smoke preset trains with and without DANN and writes the cross-domain tables, per-class AP and attribute tables."
    out,_ = demo
    run = out/'attridet'
    m = json.loads((run/'metrics.json').read_text())
    assert list(m['domain_table']['map50']) == ['H_100X_C1', 'H_100X_C1 + DANN']
    assert set(m['domain_table']['map50']['H_100X_C1']) == {'H_100X_C1', 'L_100X_C2'}
    assert {r['attribute'] for r in m['attributes']['H_100X_C1']['L_100X_C2']['gt_boxes']} >= {'nucleolus', 'mean'}
    assert len(m['map_per_class']['H_100X_C1']['H_100X_C1']) == 14
    assert (run/'domains.png').exists() and (run/'detections.png').exists() and (run/'dann'/'checkpoints'/'last.pth').exists()
    # The smoke detector learns: 4 training fields (12 boxes, 14 classes) for 12 epochs. Its test mAP@0.5 (6 boxes on 2
    # fields) is a lottery, not a bar: measured 0.250 vs the untrained 0.025 at seed 0 on one CPU, 0.062 vs 0.025 at seed
    # 0 on another (AVX-512; 2026-12-02), and there at seeds 1-4 0.047, 0.075, 0.000 (= the untrained 0.000), 0.126.
    # What holds at every seed measured is the loss: validation loss 5.3-5.7 after the first epoch, 2.4-2.7 after the last
    # (ratio 0.45-0.49); training loss 5.8-6.2 -> 3.1-4.2. The headline must say honestly whether it beat the reference.
    h = json.loads((run/'plain'/'history.json').read_text())
    assert len(h) == 12 and h[-1]['valid_loss'] < 0.65*h[0]['valid_loss'] and h[-1]['train_loss'] < 0.8*h[0]['train_loss'], h
    hl = m['headline']
    assert hl['beat'] == (hl['value'] > hl['reference']) and ('does NOT beat' in hl['text']) != hl['beat'], hl

def _dessam_smoke(demo):
    "The smoke preset trains from boxes only (no checkpoint, so no distillation) and scores every kind of mask on the test image."
    out,_ = demo
    run = out/'dessam'
    m = json.loads((run/'metrics.json').read_text())
    assert set(m['summary']) == {'student | detections', 'box | detections', 'student | gt boxes', 'box | gt boxes'}
    assert not m['distillation'] and 'no SAM checkpoint' in m['recipe']['note'] and m['n_test_images'] == 1
    gt = m['summary']['box | gt boxes']
    assert gt['n_pred'] == gt['n_gt'] > 0 and 0 < gt['aji'] <= 1     # the filled ground-truth boxes overlap their nuclei
    assert (run/'instances.png').exists() and (run/'per_image.csv').exists() and (run/'model'/'checkpoints'/'last.pth').exists()
