"BloodShot on real cells: embedders trained on the Acevedo-20 subset classify BCCD's white-cell crops from 10 examples per class."
import json
from conftest import cli, shared_subset

def test_bloodshot_acevedo_to_bccd(shared_data, tmp_path):
    """The plain softmax reference and ArcFace + rotation consistency train on 280 real Acevedo-20 cells and beat chance
    at k = 10 on BCCD, a different lab and stain. (ArcFace alone is the consistency variant's loss without its second
    term, the same code: the demo's smoke run trains all three.)"""
    shared_subset(shared_data, 'acevedo20_subset'); shared_subset(shared_data, 'bccd')
    out = tmp_path/'run'
    r = cli('run', 'bloodshot', '-p', 'PRESET', 'real', '-p', 'EPOCHS', '4', '-p', 'IMAGE_SIZE', '48', '-p', 'K_VALUES', '1,10',
            '-p', 'CURVE_EPISODES', '5', '-p', 'VARIANTS', 'softmax,aam_consistency', '--out', out, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    m = json.loads((out/'metrics.json').read_text())
    assert m['classes'] == ['eosinophil', 'lymphocyte', 'monocyte', 'neutrophil']    # BCCD's 3 basophils are too few for k = 10
    assert m['dropped']['target'] and m['chance_balanced'] == 0.25
    assert set(m['fewshot']) >= {'softmax', 'aam_consistency'} and 'aam' not in m['fewshot'], list(m['fewshot'])
    for v in ('softmax', 'aam_consistency'):
        fs = m['fewshot'][v]
        assert fs['k'] == 10 and fs['replace'] is True
        # above chance by more than two standard errors of the 100-episode mean (std/10)
        assert fs['balanced_accuracy']['mean'] > 0.25 + 2*fs['balanced_accuracy']['std']/10 + 0.03, (v, fs['balanced_accuracy'])
        assert m['fewshot_no_replacement'][v]['balanced_accuracy']['mean'] > 0.28, v
        assert m['in_domain'][v]['accuracy'] > 1/8 + 0.1, (v, m['in_domain'][v]['accuracy'])   # 8 Acevedo-20 types learned
        assert len(m['k_curve'][v]['k']) == 2
    assert (out/'k_curve.png').stat().st_size > 10_000 and (out/'softmax'/'embedder.pth').exists()
