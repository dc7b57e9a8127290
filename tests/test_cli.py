"The `hemabook` command line end to end: list, run (papermill), bad parameters, a failing experiment, samples."
import json, shutil
from pathlib import Path
import nbformat
import numpy as np
import pytest
from conftest import REPO, cli
from hemabook.core import load_image

def test_list_shows_experiments_and_parameters():
    r = cli('list')
    assert r.returncode==0, r.stderr
    assert 'wbc_classifier' in r.stdout
    assert "    PRESET: str = 'smoke'    # {smoke, full}" in r.stdout and '    EPOCHS: Optional[int] = None' in r.stdout

def test_unknown_parameter_is_refused_with_the_valid_ones(tmp_path):
    r = cli('run', 'wbc_classifier', '-p', 'EPOCH', '2', '--out', tmp_path/'x')
    assert r.returncode==2
    assert "no parameter 'EPOCH' (did you mean EPOCHS?)" in r.stderr and 'PRESET, DATA_DIR, IMAGE_SIZE, ARCH' in r.stderr
    assert not (tmp_path/'x').exists(), "nothing runs when the parameters are wrong"

def test_ill_typed_parameter_is_refused(tmp_path):
    r = cli('run', 'wbc_classifier', '-p', 'EPOCHS', 'two', '--out', tmp_path/'x')
    assert r.returncode==2 and "EPOCHS takes an int, got 'two'" in r.stderr

def test_unknown_experiment(tmp_path):
    r = cli('run', 'wbc_clasifier')
    assert r.returncode==2 and "did you mean 'wbc_classifier'" in r.stderr

def _experiment(exps, name, code):
    "A one-parameter experiment that opens its run and then runs `code`."
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("from typing import Optional\nOUT_DIR: Optional[str] = None  # run folder\nDATA: str = 'nowhere'  # data"),
        nbformat.v4.new_code_cell(f"from hemabook.runs import open_run, run_folder\nrun = open_run('{name}', run_folder(OUT_DIR, '{name}'), dict(data=DATA))"),
        nbformat.v4.new_code_cell(code)])
    nb.cells[0].metadata['tags'] = ['parameters']
    nb.metadata['kernelspec'] = {'name': 'python3', 'display_name': 'python3', 'language': 'python'}
    nbformat.write(nb, exps/f'{name}.ipynb')

def test_failing_cell_exits_nonzero_and_prints_its_error(tmp_path):
    exps = tmp_path/'experiments'; exps.mkdir()
    _experiment(exps, 'bad_data', "from hemabook.core import load_image\nload_image(DATA + '/cell.png')")
    _experiment(exps, 'bug', "def f(x): return x/0\nf(1)")
    # bad input (a hemabook error): one line naming it, exit 2; the run records the failure and keeps the notebook
    r = cli('run', 'bad_data', '--out', tmp_path/'run', env={'HEMABOOK_EXPERIMENTS': str(exps)})
    assert r.returncode==2, r.stderr
    assert "error: nowhere/cell.png: no such file (executed notebook: " in r.stderr and 'Traceback' not in r.stderr, r.stderr
    assert json.loads((tmp_path/'run'/'run.json').read_text())['status']=='failed'
    assert (tmp_path/'run'/'bad_data.ipynb').exists(), "the executed notebook is kept for inspection"
    # anything else is a bug somewhere: the traceback is printed, exit 1
    r = cli('run', 'bug', '--out', tmp_path/'run2', env={'HEMABOOK_EXPERIMENTS': str(exps)})
    assert r.returncode==1 and "failed in cell [4]: ZeroDivisionError" in r.stderr and 'return x/0' in r.stderr, r.stderr

def _same(a, b):
    "Equal content: pixels for images, arrays for npz/h5 (their containers hold timestamps), bytes for the rest."
    if a.suffix.lower() in ('.png', '.jpg', '.jpeg', '.tif', '.tiff', '.bmp'): return np.array_equal(load_image(a), load_image(b))
    if a.suffix=='.npz':
        x,y = np.load(a), np.load(b)
        return sorted(x.files)==sorted(y.files) and all(np.array_equal(x[k], y[k]) for k in x.files)
    if a.suffix=='.h5':
        import h5py
        with h5py.File(a) as x, h5py.File(b) as y: return sorted(x)==sorted(y) and all(np.array_equal(x[k][()], y[k][()]) for k in x)
    return a.read_bytes()==b.read_bytes()

def test_samples_regenerate_identically(tmp_path):
    r = cli('samples', '--out', tmp_path)
    assert r.returncode==0, r.stderr
    committed = REPO/'data_samples'
    new = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob('*') if p.is_file())
    old = sorted(p.relative_to(committed) for p in committed.rglob('*') if p.is_file() and p.name!='README.md')
    assert new==old, f"files differ: {sorted(set(new)^set(old))[:10]}"
    assert len([p for p in new if p.parts[0]=='wbc_synth'])==80
    for p in ('leukemiaattri', 'bccd', 'nuclei_coco', 'nuclei_dsb2018', 'synapse', 'matek19', 'acevedo20'): assert any(q.parts[0]==p for q in new), p
    diff = [str(p) for p in new if not _same(tmp_path/p, committed/p)]
    assert not diff, f"regenerated samples differ from data_samples/: {diff[:10]} (run `hemabook samples` and commit)"
