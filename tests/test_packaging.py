"""Every third-party package hemabook's modules import is declared in settings.ini, so `pip install hemabook` brings it.

The imports are read from the exported modules' source (top-level and inside functions), so a package that only arrives
today as another package's dependency cannot go unnoticed until that dependency drops it.
"""
import ast, configparser, json, os, re, sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# Import name -> distribution name, where they differ.
DIST = {'PIL': 'pillow', 'sklearn': 'scikit-learn', 'skimage': 'scikit-image', 'yaml': 'pyyaml', 'umap': 'umap-learn',
        'segment_anything': 'segment-anything'}
# Imported only where they are optional, behind a clear error: module -> (extra or dev requirement that brings it, file).
OPTIONAL = {'xgboost': 'hemabook/crossdomain.py',   # extra 'xgboost' in setup.py; ConfigError says how to install it
            'nbdev': 'hemabook/showdoc.py',         # the docs renderer: nbdev is what calls it (dev requirement)
            'wandb': 'hemabook/train.py',           # TRACKER=wandb: extra 'wandb' in setup.py; ConfigError says so
            'SimpleITK': 'hemabook/data/seg.py',    # NIfTI volumes: extra 'nifti' in setup.py (or nibabel); ConfigError
            'nibabel': 'hemabook/data/seg.py'}


def _norm(name: str) -> str: return re.sub(r'[-_.]+', '-', name).lower()


def _declared(key: str) -> set:
    cfg = configparser.ConfigParser(); cfg.read(REPO/'settings.ini')
    return {_norm(re.split(r'[<>=!~\[; ]', r, 1)[0]) for r in cfg['DEFAULT'][key].split()}


def _imports() -> dict:
    "Top-level import name -> files importing it, for every non-stdlib, non-hemabook import in hemabook/."
    out = {}
    for f in sorted((REPO/'hemabook').rglob('*.py')):
        for n in ast.walk(ast.parse(f.read_text(encoding='utf-8'))):
            names = [a.name for a in n.names] if isinstance(n, ast.Import) else \
                    [n.module] if isinstance(n, ast.ImportFrom) and n.level == 0 and n.module else []
            for m in names:
                top = m.split('.')[0]
                if top not in sys.stdlib_module_names and top != 'hemabook':
                    out.setdefault(top, set()).add(str(f.relative_to(REPO)))
    return out


def test_imports_are_declared():
    "Each imported package is in `requirements`; optional ones only in the file that guards them."
    req, dev = _declared('requirements'), _declared('dev_requirements')
    mods = _imports()
    assert {'torch', 'numpy', 'fastai'} <= set(mods), sorted(mods)   # the parse finds imports at all
    for m, files in sorted(mods.items()):
        if m in OPTIONAL:
            assert files == {OPTIONAL[m]}, f"{m} is optional, to be imported only in {OPTIONAL[m]}, but {sorted(files)} import it"
            continue
        assert _norm(DIST.get(m, m)) in req, \
            f"{sorted(files)[0]} imports {m!r}, which settings.ini's requirements do not declare (as {DIST.get(m, m)!r})"
    assert 'nbdev' in dev


def test_wheel_runs_away_from_the_repository(tmp_path):
    """A wheel carries the experiment notebooks and the samples: installed into a fresh virtual environment, `hemabook
    list` and a smoke run work from any folder. The venv borrows this one's dependencies through a .pth file (nothing is
    downloaded); the wheel is built from a copy of the repository's files, so no build/ is left in the repository."""
    import shutil, subprocess
    src = tmp_path/'src'
    for p in ('hemabook', 'nbs/experiments', 'data_samples'):
        shutil.copytree(REPO/p, src/p, ignore=shutil.ignore_patterns('__pycache__'))
    for f in ('setup.py', 'settings.ini', 'README.md'): shutil.copy(REPO/f, src/f)
    run = lambda *a, **kw: subprocess.run([str(x) for x in a], capture_output=True, text=True, timeout=600, **kw)
    r = run(sys.executable, '-m', 'pip', 'wheel', '--no-deps', '--no-build-isolation', '-q', '-w', tmp_path/'dist', src)
    assert r.returncode == 0, r.stderr[-2000:]
    whl, = (tmp_path/'dist').glob('hemabook-*.whl')
    venv = tmp_path/'venv'
    assert run(sys.executable, '-m', 'venv', venv).returncode == 0
    import sysconfig
    site = Path(run(venv/'bin'/'python', '-c', 'import sysconfig; print(sysconfig.get_paths()["purelib"])').stdout.strip())
    (site/'hemabook_deps.pth').write_text(sysconfig.get_paths()['purelib'] + '\n')
    r = run(venv/'bin'/'python', '-m', 'pip', 'install', '-q', '--no-deps', '--no-index', whl)
    assert r.returncode == 0, r.stderr[-2000:]
    away = tmp_path/'elsewhere'; away.mkdir()
    env = {k: v for k,v in os.environ.items() if k not in ('HEMABOOK_EXPERIMENTS', 'HEMABOOK_SAMPLES', 'PYTHONPATH')}
    r = run(venv/'bin'/'python', '-c', 'import hemabook; print(hemabook.__file__)', cwd=away, env=env)
    assert r.stdout.startswith(str(site)), r.stdout + r.stderr        # the installed copy, not the repository's
    r = run(venv/'bin'/'hemabook', 'list', cwd=away, env=env)
    assert r.returncode == 0 and str(site/'hemabook'/'_experiments'/'samed.ipynb') in r.stdout, r.stdout + r.stderr
    r = run(venv/'bin'/'hemabook', 'run', 'wbc_classifier', '-p', 'EPOCHS', '1', '--out', 'r', cwd=away, env=env)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    params = json.loads((away/'r'/'params.json').read_text())
    assert params['data_dir'].startswith(str(site/'hemabook'/'_samples')), params['data_dir']
    assert (away/'r'/'metrics.json').exists() and (away/'r'/'wbc_classifier.ipynb').exists()
