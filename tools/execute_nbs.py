#!/usr/bin/env python
"""Execute notebooks and store their outputs in place, so the docs site shows real figures and tables.

    python tools/execute_nbs.py nbs/10_synthetic.ipynb nbs/experiments/wbc_classifier.ipynb   # or `make outputs`

nbdev renders the outputs a notebook has stored; it does not run it. This runs each notebook in a real Jupyter kernel
(nbclient, kernel `hemabook`, in the notebook's folder), as JupyterLab would, so rich outputs such as fastprogress's
HTML training tables are stored as a reader sees them. It skips the cells `nbdev_test` skips: those flagged with
settings.ini's `tst_flags` (slow, gpu) unless named in `--flags`, `#| eval: false` cells and `nbdev_export()` calls;
they keep no output. A failing cell stops it and nothing is written. Run `nbdev_clean` afterwards (`make outputs`
does).
"""
import argparse, os, re, shutil, sys, tempfile
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError
from nbdev.config import get_config
from hemabook.runner import ipc_kernels

def _directives(src):
    "The `#| key value` lines at the top of a cell, as {key: value}."
    out = {}
    for line in src.splitlines():
        if not line.startswith('#|'): break
        k,_,v = line[2:].strip().partition(' ')
        out[k.rstrip(':')] = v.strip()
    return out

def skip_cell(cell, flags):
    "True for a cell `nbdev_test` would not run."
    if cell.cell_type != 'code': return True
    if 'nbdev_export' + '(' in cell.source: return True
    d = _directives(cell.source)
    return d.get('eval', '').lower() == 'false' or bool(set(d) & flags)

def execute(fn, flags, kernel='hemabook', timeout=900):
    "Run notebook `fn` in a kernel, skipping what `nbdev_test` skips, and store the outputs in place."
    fn = Path(fn).resolve()
    nb = nbformat.read(fn, as_version=4)
    run = nbformat.reads(nbformat.writes(nb), as_version=4)         # a copy whose skipped cells are emptied
    for c in run.cells:
        if c.cell_type == 'code' and skip_cell(c, flags): c.source = ''
    try: NotebookClient(run, kernel_name=kernel, timeout=timeout, resources={'metadata': {'path': str(fn.parent)}},
                        kernel_manager_class=ipc_kernels()).execute()   # as `hemabook run` does: no TCP ports
    except CellExecutionError as e:
        sys.stderr.write(f"{fn}: {e}\n"); return False
    for c,r in zip(nb.cells, run.cells):
        if c.cell_type != 'code': continue
        c.outputs, c.execution_count = ([], None) if skip_cell(c, flags) else (r.outputs, r.execution_count)
    nbformat.write(nb, fn)
    return True

if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('notebooks', nargs='+')
    p.add_argument('--flags', default='', help='test flags to run anyway, e.g. "slow"')
    a = p.parse_args()
    flags = set(get_config().tst_flags.split()) - set(a.flags.split())
    bad = [f for f in a.notebooks if not (print(f'executing {f}', flush=True) or execute(f, flags))]
    if bad: sys.exit(f"failed: {', '.join(bad)} (left unchanged)")
