"""Every experiment notebook runs headless through `hemabook run` / `hemabook demo` in its smoke preset, and records
sane metrics. These are the papermill-project 'smoke' tests: small data, tiny models, real code paths."""
import json
import pytest
from conftest import REPO, cli

@pytest.fixture(scope='module')
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp('demo')
    r = cli('demo', '--out', out)
    return out, r

def test_demo_runs_every_experiment(demo):
    out,r = demo
    assert r.returncode==0, r.stdout + r.stderr
    summary = (out/'summary.md').read_text()
    exps = sorted(p.stem for p in (REPO/'nbs'/'experiments').glob('*.ipynb') if not p.name.startswith('_'))
    for name in exps:
        assert f'| {name} | ok |' in summary, summary
        assert (out/name/f'{name}.ipynb').exists() and (out/name/'metrics.json').exists()

def test_wbc_classifier_learns(demo):
    out,_ = demo
    run = out/'wbc_classifier'
    m = json.loads((run/'metrics.json').read_text())
    assert m['n_train']==60 and m['n_valid']==20 and len(m['classes'])==5
    assert m['accuracy'] > 2*m['chance'], f"accuracy {m['accuracy']:.2f} is not clearly above chance {m['chance']:.2f}"
    hist = json.loads((run/'history.json').read_text())
    assert len(hist)==m['epochs']
    params = json.loads((run/'params.json').read_text())
    assert params['preset']=='smoke' and params['device']=='cpu'
    assert (run/'checkpoints'/'last.pth').exists() and (run/'confusion.png').exists()

def test_run_with_parameters_and_resume(tmp_path):
    out = tmp_path/'run'
    r = cli('run', 'wbc_classifier', '-p', 'EPOCHS', '2', '-p', 'ARCH', 'resnet10t', '--out', out)
    assert r.returncode==0, r.stdout + r.stderr
    assert json.loads((out/'params.json').read_text())['epochs']==2
    assert len(json.loads((out/'history.json').read_text()))==2
    # Same command on the same folder: training resumes from the finished checkpoint and has nothing left to do.
    r = cli('run', 'wbc_classifier', '-p', 'EPOCHS', '2', '-p', 'ARCH', 'resnet10t', '--out', out)
    assert r.returncode==0, r.stdout + r.stderr
    assert len(json.loads((out/'history.json').read_text()))==2
