"""A run folder is one run: `hemabook run` resumes the same settings, refuses other settings before writing anything,
records an interruption, checks its parameters the way papermill reads them, and says when a result is a failure."""
import json, os, shutil, signal, subprocess, sys, time
from pathlib import Path
import pytest
from conftest import REPO, cli

SMALL = ('-p', 'EPOCHS', '2', '-p', 'ARCH', 'resnet10t')

def _errors(r):
    "The lines of a run's stderr that report an error (papermill's progress bar and the kernel's notices aside)."
    return [l for l in r.stderr.splitlines() if l.startswith(('error', 'Traceback', 'interrupted'))]

def _files(d):
    "Every file under `d` with its bytes."
    return {str(f.relative_to(d)): f.read_bytes() for f in sorted(Path(d).rglob('*')) if f.is_file()}

def test_run_folder_is_one_run(demo_runs, tmp_path):
    "The demo's finished classifier run, moved to another folder: other settings are refused, the same ones resume it."
    out = tmp_path/'run'
    shutil.copytree(demo_runs[0]/'wbc_classifier', out)          # a copy: the demo's folders are only read
    rec = json.loads((out/'run.json').read_text())
    n = rec['settings']['epochs']
    assert rec['status'] == 'ok' and len(rec['attempts']) == 1 and len(json.loads((out/'history.json').read_text())) == n
    # other parameters in the finished folder: refused before anything is written, naming the keys that differ
    before = _files(out)
    r = cli('run', 'wbc_classifier', '-p', 'LR', '0.5', '-p', 'SEED', '7', '--out', out)
    assert r.returncode == 2, r.stdout[-2000:] + r.stderr[-2000:]
    err = _errors(r)
    assert len(err) == 1 and 'lr: 0.003 there, 0.5 now' in err[0] and 'seed: 42 there, 7 now' in err[0], r.stderr
    assert 'another folder' in err[0] and 'Traceback' not in r.stderr
    assert _files(out) == before                                  # not a byte changed, no executed notebook left behind
    # the same parameters resume the same run: one id, a second attempt, nothing left to train
    r = cli('run', 'wbc_classifier', '--out', out)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert 'unknown parameter' not in r.stdout + r.stderr and 'Unable to parse' not in r.stdout + r.stderr
    assert f"holds run {rec['run_id']} (ok; .: epoch {n} of {n})" in r.stdout and 'attempt 2' in r.stdout, r.stdout[-2000:]
    rec2 = json.loads((out/'run.json').read_text())
    assert rec2['run_id'] == rec['run_id'] and len(rec2['attempts']) == 2 and rec2['status'] == 'ok'
    assert len(json.loads((out/'history.json').read_text())) == n
    assert json.loads((out/'metrics.json').read_text())['run_id'] == rec['run_id']

def test_sigterm_records_an_interrupted_run(tmp_path):
    "A run killed with SIGTERM (a scheduler's time limit) ends with one line and `run.json` says where it stopped."
    out = tmp_path/'run'
    exe = Path(sys.executable).parent/'hemabook'
    p = subprocess.Popen([str(exe), 'run', 'wbc_classifier', '-p', 'EPOCHS', '40', '-p', 'ARCH', 'resnet10t', '--out', str(out)],
                         cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    t0 = time.time()
    while time.time() - t0 < 300:                                  # wait for the first finished epoch
        try: done = json.loads((out/'run.json').read_text()).get('progress', {}).get('.', {}).get('epoch', 0)
        except (FileNotFoundError, json.JSONDecodeError): done = 0
        if done >= 1 or p.poll() is not None: break
        time.sleep(0.5)
    assert p.poll() is None, p.communicate()
    p.send_signal(signal.SIGTERM)
    so,se = p.communicate(timeout=120)
    assert p.returncode == 130, (p.returncode, so[-2000:], se[-3000:])
    last = [l for l in se.strip().splitlines() if l.strip()][-1]
    assert last.startswith('interrupted: run ') and 'the same command resumes it' in last and 'Traceback' not in se, se[-3000:]
    rec = json.loads((out/'run.json').read_text())
    assert rec['status'] == 'interrupted' and 1 <= rec['progress']['.']['epoch'] < 40, rec
    assert rec['attempts'][-1]['status'] == 'interrupted'
    assert (out/'wbc_classifier.ipynb').exists() and not list(out.glob('.*.ipynb'))

def test_clear_errors(tmp_path):
    "Bad input to `hemabook run`: one line naming what is wrong, exit 2, no traceback."
    r = cli('run', 'wbc_classifier', '-p', 'DATA_DIR', tmp_path/'nowhere', '--out', tmp_path/'a')
    assert r.returncode == 2 and 'Traceback' not in r.stderr, r.stderr[-3000:]
    assert len(_errors(r)) == 1 and f"DATA_DIR='{tmp_path/'nowhere'}': no such folder" in _errors(r)[0], r.stderr
    assert not (tmp_path/'a').exists()
    r = cli('run', 'wbc_classifier', '--kernel', 'nokernel', '--out', tmp_path/'b')
    assert r.returncode == 2 and "kernel 'nokernel' is not installed" in r.stderr and 'ipykernel install' in r.stderr, r.stderr
    assert len(_errors(r)) == 1
    r = cli('run', 'samed', '-p', 'PRESET', 'fulll', '--out', tmp_path/'c')   # refused before anything runs
    assert r.returncode == 2 and "PRESET='fulll': expected one of smoke, full (did you mean full?)" in r.stderr, r.stderr
    assert not (tmp_path/'c').exists()

def test_a_run_that_learned_nothing_says_so(tmp_path):
    "Two classes of one and the same image cannot be told apart: the run warns, in its output and in metrics.json."
    from PIL import Image
    import numpy as np
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8))
    for c in ('lymphocyte', 'neutrophil'):
        (tmp_path/'data'/c).mkdir(parents=True)
        for i in range(8): img.save(tmp_path/'data'/c/f'{i}.png')
    r = cli('run', 'wbc_classifier', *SMALL, '-p', 'DATA_DIR', tmp_path/'data', '--out', tmp_path/'run')
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    m = json.loads((tmp_path/'run'/'metrics.json').read_text())
    assert m['accuracy'] <= m['majority_rate']
    w = [x for x in m['warnings'] if 'is not above the majority rate' in x]
    assert len(w) == 1 and f'WARNING: {w[0]}' in r.stdout, (m['warnings'], r.stdout[-2000:])

def test_papermill_reads_every_parameter():
    "papermill's own inspection (what `papermill --help-notebook` shows) finds every parameter of every experiment, typed."
    import ast, nbformat, papermill as pm
    from hemabook.runner import experiment_params, list_experiments
    exps = list_experiments(REPO/'nbs'/'experiments')
    assert set(exps) == {'attridet', 'bcsam', 'bloodshot', 'dessam', 'samed', 'wbc_classifier'}
    n = 0
    for name,nb in exps.items():
        cell = next(c for c in nbformat.read(nb, as_version=4).cells if 'parameters' in c.metadata.get('tags', []))
        names = [t.id for x in ast.parse(cell.source).body if isinstance(x, (ast.Assign, ast.AnnAssign))
                 for t in (x.targets if isinstance(x, ast.Assign) else [x.target])]
        seen = pm.inspect_notebook(str(nb))
        assert list(seen) == names, (name, set(names) ^ set(seen))
        for k,p in seen.items():
            assert p['inferred_type_name'] not in ('None', ''), (name, k, p)
            assert p['help'], (name, k)
        assert set(experiment_params(name, nb.parent)) == set(names)
        assert experiment_params(name, nb.parent)['PRESET']['choices'], name
        n += len(names)
    assert n >= 119, n
