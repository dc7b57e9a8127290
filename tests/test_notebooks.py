"""Every notebook in nbs/ runs, one pytest test each, through nbdev's own notebook runner (`nbdev.test.test_nb`).

`nbdev_test` prints only 'Success.'; running the same function per notebook under pytest makes each notebook a counted
test, lets pytest-xdist spread them over the cores, and shows the failing cell's traceback. Cells flagged with
settings.ini's `tst_flags` (slow, gpu) are skipped unless named in `$HEMABOOK_TEST_FLAGS` (e.g. "slow gpu" on a GPU box).
Experiment notebooks (nbs/experiments) run through papermill in test_experiments.py, the way users run them.
"""
import os
from pathlib import Path
import pytest
from nbdev.config import get_config
from nbdev.test import test_nb as run_nb, _keep_file

REPO = Path(__file__).resolve().parent.parent
NBS = REPO/'nbs'

def _notebooks():
    fs = sorted(p for p in NBS.rglob('*.ipynb')
                if not any(part.startswith(('_', '.')) for part in p.relative_to(NBS).parts)
                and 'experiments' not in p.relative_to(NBS).parts and _keep_file(p, '.notest'))
    return fs

@pytest.mark.parametrize('nb', _notebooks(), ids=lambda p: str(p.relative_to(NBS)))
def test_notebook(nb):
    cfg = get_config(path=REPO)
    ok,secs = run_nb(nb, skip_flags=cfg.tst_flags.split(), force_flags=os.environ.get('HEMABOOK_TEST_FLAGS', '').split(),
                      basepath=REPO)
    assert ok, f"{nb.relative_to(REPO)} failed (its traceback is in the captured stderr above)"

def test_all_notebooks_found():
    "Guard against a glob that silently finds nothing."
    names = [p.name for p in _notebooks()]
    assert '00_core.ipynb' in names and 'index.ipynb' in names, names
