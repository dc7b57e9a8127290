"""hemabook's modules form layers: shared plumbing below, each method a leaf on top.

Read from the exported source (top-level imports and those inside functions), the rules are:
- a method module never imports another method module, and the plumbing never imports a method;
- nothing imports another module's private (`_name`) objects: what a second module needs is public, documented API.
A failure names the file, the line and the import.
"""
import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
METHODS = {'hemabook.samed', 'hemabook.bcsam', 'hemabook.fewshot', 'hemabook.attridet', 'hemabook.dessam'}


def _module(f: Path) -> str: return '.'.join(f.relative_to(REPO).with_suffix('').parts)


def _imports(f: Path):
    "`(line, imported module, names)` of every import of a hemabook module in file `f`, relative ones resolved."
    pkg = _module(f).split('.')[:-1] if f.is_relative_to(REPO/'hemabook') else []
    for n in ast.walk(ast.parse(f.read_text(encoding='utf-8'))):
        if isinstance(n, ast.ImportFrom):
            base = pkg[:len(pkg) - n.level + 1] if n.level else []
            mod = '.'.join(base + ([n.module] if n.module else []))
            if not mod.startswith('hemabook'): continue
            for a in n.names:   # `from hemabook import samed` imports the module hemabook.samed
                sub = f'{mod}.{a.name}'
                yield n.lineno, sub if (REPO/Path(*sub.split('.'))).with_suffix('.py').exists() else mod, a.name
        elif isinstance(n, ast.Import):
            for a in n.names:
                if a.name.startswith('hemabook'): yield n.lineno, a.name, None


def _sources():
    return [f for f in sorted((REPO/'hemabook').rglob('*.py')) if f.name != '_modidx.py'] + sorted((REPO/'tools').glob('*.py'))


def _line(f, n): return f"{f.relative_to(REPO)}:{n}: {f.read_text(encoding='utf-8').splitlines()[n-1].strip()}"


def test_methods_are_leaves():
    bad = []
    for f in _sources():
        me = _module(f)
        for n, mod, _ in _imports(f):
            target = next((m for m in METHODS if mod == m or mod.startswith(m + '.')), None)
            if target and target != me and f.is_relative_to(REPO/'hemabook'):
                bad.append(f"{_line(f, n)}  ({me} imports the method {target})")
    assert not bad, "a method imports another, or the plumbing imports a method:\n" + '\n'.join(bad)


def test_no_private_imports_across_modules():
    bad = []
    for f in _sources():
        me = _module(f)
        for n, mod, name in _imports(f):
            if name and name.startswith('_') and not name.startswith('__') and mod != me:
                bad.append(f"{_line(f, n)}  ({name} is private to {mod})")
    assert not bad, "private names imported across modules (make them public API, or move them):\n" + '\n'.join(bad)


def test_the_check_sees_a_violation(tmp_path, monkeypatch):
    "The rules above must be able to fail: a planted method-to-method and private import is caught."
    pkg = tmp_path/'hemabook'; pkg.mkdir(); (tmp_path/'tools').mkdir()
    (pkg/'samed.py').write_text('x = 1\n'); (pkg/'core.py').write_text('_y = 1\n')
    (pkg/'dessam.py').write_text('from .samed import x\nfrom hemabook.core import _y\n')
    monkeypatch.setattr(__import__(__name__), 'REPO', tmp_path)
    import pytest
    with pytest.raises(AssertionError, match=r'hemabook/dessam.py:1: from .samed import x'): test_methods_are_leaves()
    with pytest.raises(AssertionError, match=r'dessam.py:2: .*_y is private to hemabook.core'): test_no_private_imports_across_modules()


def test_lines_fit_120_columns():
    "Exported code is read in editors and diffs: no line over 120 characters (nbdev's own generated lines excepted)."
    bad = []
    for f in sorted((REPO/'hemabook').rglob('*.py')):
        if f.name == '_modidx.py': continue          # nbdev's symbol index, generated
        for i, l in enumerate(f.read_text(encoding='utf-8').splitlines(), 1):
            # line 1 is the docstring nbdev writes from the notebook's description; `__all__` is wrapped by nbdev itself
            if len(l) > 120 and i > 1 and not l.startswith('__all__ = ['): bad.append(f"{f.relative_to(REPO)}:{i} ({len(l)})")
    assert not bad, f"{len(bad)} lines over 120 characters; wrap them in the notebook the marker above names:\n" + '\n'.join(bad)
