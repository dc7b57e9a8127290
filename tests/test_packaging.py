"""Every third-party package hemabook's modules import is declared in settings.ini, so `pip install hemabook` brings it.

The imports are read from the exported modules' source (top-level and inside functions), so a package that only arrives
today as another package's dependency cannot go unnoticed until that dependency drops it.
"""
import ast, configparser, re, sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# Import name -> distribution name, where they differ.
DIST = {'PIL': 'pillow', 'sklearn': 'scikit-learn', 'skimage': 'scikit-image', 'yaml': 'pyyaml', 'umap': 'umap-learn',
        'segment_anything': 'segment-anything'}
# Imported only where they are optional, behind a clear error: module -> (extra or dev requirement that brings it, file).
OPTIONAL = {'xgboost': 'hemabook/crossdomain.py',   # extra 'xgboost' in setup.py; ConfigError says how to install it
            'nbdev': 'hemabook/showdoc.py'}         # the docs renderer: nbdev is what calls it (dev requirement)


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
