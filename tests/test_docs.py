"""The docs site: built once from the notebooks by tools/build_docs.py, then read in headless Chromium.

The build runs in a temporary copy of the repository (settings.ini, nbs/, hemabook/, tools/, ...), so the checkout's
git tree is left as it was. Under pytest-xdist the workers share that one build (a lock file in the session's base
temporary folder). The browser checks skip, saying why, where `chromium` is not installed (`make browser`); the
build and the static checks on its HTML always run.
"""
import base64, html, io, json, os, re, shutil, subprocess, sys
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

from conftest import CHROMIUM, chromium as _chromium, needs_chromium, once_per_session

REPO = Path(__file__).resolve().parent.parent
NBS = REPO/'nbs'
COPY = ('settings.ini', 'setup.py', '_quarto.yml', 'hemabook', 'nbs', 'tools', 'data_samples')  # not README.md: the build makes it


def _copy_repo(dst: Path):
    "Copy what the docs build reads into `dst`, keeping the `_quarto.yml -> nbs/_quarto.yml` symlink a symlink."
    skip = shutil.ignore_patterns('__pycache__', '.ipynb_checkpoints', 'nbdev.yml', '_proc', '_docs')
    for name in COPY:
        src = REPO/name
        if src.is_symlink(): os.symlink(os.readlink(src), dst/name)
        elif src.is_dir(): shutil.copytree(src, dst/name, symlinks=True, ignore=skip)
        elif src.exists(): shutil.copy2(src, dst/name)


def _build(root: Path):
    "Copy the repository into `root` and build its docs there; the result (exit status, log) in `root.parent`."
    _copy_repo(root)
    env = {**os.environ, 'PYTHONPATH': str(root)}  # the copy's package, not the editable install's
    env.pop('IN_TEST', None)  # nbdev_export does nothing under IN_TEST
    try:
        p = subprocess.run([sys.executable, str(root/'tools'/'build_docs.py')], cwd=root, env=env,
                           capture_output=True, text=True, timeout=300)
        res = dict(rc=p.returncode, log=p.stdout + p.stderr)
    except subprocess.TimeoutExpired as e: res = dict(rc=-1, log=f"timed out after {e.timeout} s")
    (root.parent/'docs-build.json').write_text(json.dumps(res))


@pytest.fixture(scope='session')
def built(tmp_path_factory, worker_id):
    "Build the docs once per test session (shared by xdist workers); returns the copy's root and the build's log."
    root = once_per_session(tmp_path_factory, worker_id, 'docs-build', _build)
    return dict(root=root, docs=root/'_docs', shots=root.parent, **json.loads((root.parent/'docs-build.json').read_text()))


def _site(built) -> Path:
    "The built site, or fail with the build's log."
    assert built['rc'] == 0, f"tools/build_docs.py failed:\n{built['log'][-4000:]}"
    return built['docs']


def _api_pages() -> dict[str, str]:
    "The page each numbered notebook in nbs/ builds: nbdev names it after `default_exp`, dots as underscores (data.cls -> data_cls.html)."
    out = {}
    for nb in sorted(NBS.glob('[0-9]*.ipynb')):
        m = re.search(r'#\|\s*default_exp\s+(\S+)', nb.read_text(encoding='utf-8'))
        out[nb.name] = f"{m.group(1).strip(chr(34)).replace('.', '_')}.html" if m else nb.with_suffix('.html').name
    return out


def _text(s: str) -> str:
    "Text of an HTML fragment: tags dropped, entities decoded, typographic quotes made plain (the renderer curls them)."
    return html.unescape(re.sub(r'<[^>]+>', '', s)).translate(str.maketrans("‘’“”", "''\"\""))


def _showdoc(page: str, name: str) -> str:
    "The show_doc block of `name`: from its heading to the next heading of the same or a higher level."
    m = re.search(rf'<h([1-3])[^>]*\b(?:data-anchor-)?id="{re.escape(name)}"', page)  # smalldocs; Quarto
    assert m, f"no heading with id={name!r}: show_doc output missing"
    end = re.compile(rf'<h[1-{m.group(1)}][\s>]').search(page, m.end())
    return page[m.start():end.start() if end else len(page)]


def _load_image_docments() -> dict:
    from fastcore.docments import docments
    from hemabook.core import load_image
    return {k: v for k, v in docments(load_image).items() if v}


def _dom(path: Path) -> str:
    p = _chromium('--virtual-time-budget=3000', '--dump-dom', path.as_uri())
    assert p.returncode == 0 and '<html' in p.stdout, f"chromium could not open {path}:\n{p.stderr[-2000:]}"
    return p.stdout


def _png_bytes(src: str, page: Path) -> bytes:
    "The bytes of an <img> src: a data: URI or a file next to the page."
    if src.startswith('data:'):
        head, data = src.split(',', 1)
        assert head.startswith('data:image/png') and ';base64' in head, f"not a base64 PNG: {head}"
        return base64.b64decode(data)
    f = (page.parent/unquote(urlparse(src).path)).resolve()
    assert f.suffix == '.png' and f.is_file(), f"figure file missing: {f}"
    return f.read_bytes()


def _not_blank(data: bytes, what: str):
    from PIL import Image, ImageStat
    im = Image.open(io.BytesIO(data)); im.load()
    assert im.format == 'PNG' and min(im.size) >= 16, f"{what}: {im.format} {im.size}"
    std = ImageStat.Stat(im.convert('L')).stddev[0]
    assert std > 5, f"{what} looks blank (grey-level std {std:.1f})"
    return im


# ---------------------------------------------------------------- the build (no browser needed)

def test_build(built):
    "The build succeeds and writes the index page, one page per numbered notebook, and search."
    site = _site(built)
    assert (site/'index.html').is_file() and (site/'search.json').is_file(), sorted(p.name for p in site.iterdir())
    for nb, page in _api_pages().items(): assert (site/page).is_file(), f"{nb} should build {page}"
    assert not (built['root']/'_proc'/'_docs').exists(), "the site should be moved out of _proc/"


def test_core_page_html(built):
    "core.html (from 00_core.ipynb) holds load_image's show_doc, signature and docments, and a stored PNG figure."
    page = (_site(built)/'core.html').read_text(encoding='utf-8')
    doc = _text(_showdoc(page, 'load_image'))
    assert re.search(r'def load_image\(', doc), doc[:500]
    for k, v in _load_image_docments().items(): assert v in doc, f"docments of {k!r} missing: {v!r}"
    assert re.search(r'<img[^>]+src="(data:image/png;base64,|[^"]+\.png)', page), \
        "no PNG figure: run nbs/00_core.ipynb and save its outputs (see tools/build_docs.py)"


def test_readme_matches(built):
    "README.md regenerated from nbs/index.ipynb equals the committed one."
    if not (NBS/'index.ipynb').exists(): pytest.skip("no nbs/index.ipynb, so no README.md to generate")
    if shutil.which('quarto'): pytest.skip("quarto is installed: README.md comes from nbdev_readme there, and is committed from the no-Quarto build")
    new, old = built['root']/'README.md', REPO/'README.md'  # written before the site, so even when a page fails
    assert new.exists(), f"the build wrote no README.md:\n{built['log'][-4000:]}"
    assert old.exists(), "README.md is missing: run `python tools/build_docs.py --readme` and commit it"
    assert new.read_text(encoding='utf-8') == old.read_text(encoding='utf-8'), \
        "README.md is out of date with nbs/index.ipynb: run `python tools/build_docs.py --readme` and commit it"


def test_quarto_yml_kept(built):
    "nbdev's refresh_quarto_yml leaves our nbs/_quarto.yml alone, and the top-level _quarto.yml stays a symlink to it."
    _site(built)
    root = built['root']
    assert (root/'nbs'/'_quarto.yml').read_bytes() == (NBS/'_quarto.yml').read_bytes()
    assert (root/'_quarto.yml').is_symlink() and (root/'_quarto.yml').resolve() == (root/'nbs'/'_quarto.yml').resolve()
    assert (root/'nbs'/'nbdev.yml').is_file(), "nbdev writes nbs/nbdev.yml (site-url, repo-url) for _quarto.yml's metadata-files"


def test_readme_md_cells():
    "README conversion: hidden, include/echo/output: false, streams, plain text, Markdown outputs and pictures."
    import importlib.util
    spec = importlib.util.spec_from_file_location('build_docs', REPO/'tools'/'build_docs.py')
    bd = importlib.util.module_from_spec(spec); spec.loader.exec_module(bd)
    png = base64.b64encode(b'\x89PNG fake').decode()
    def code(src, *outs): return dict(cell_type='code', source=src, metadata={}, outputs=list(outs))
    nb = dict(metadata={}, cells=[
        dict(cell_type='raw', source='---\ntitle: demo\ndescription: A demo.\n---\n'),
        dict(cell_type='markdown', source=bd.WARNING),
        dict(cell_type='markdown', source='Some *text*.'),
        code('#| hide\nsecret()'),
        code('#| include: false\nalso_secret()', dict(output_type='stream', name='stdout', text='no\n')),
        code('#| echo: false\nquiet()', dict(output_type='stream', name='stdout', text='shown\n')),
        code('#| output: false\nshown_code()', dict(output_type='stream', name='stdout', text='not shown\n')),
        code('1+1', dict(output_type='execute_result', data={'text/plain': '2'}, metadata={})),
        code("print('a'); print('b')", dict(output_type='stream', name='stdout', text='a\n'),
             dict(output_type='stream', name='stdout', text='b\n')),
        code('#| output: asis\nshow()', dict(output_type='display_data', data={'text/markdown': '**bold**', 'text/plain': 'x'})),
        code('plot()', dict(output_type='display_data', data={'image/png': png, 'text/plain': '<Figure>'})),
    ])
    md = bd.readme_md(nb, img_dir=None)
    assert md.startswith(bd.WARNING) and md.count('WARNING') == 1
    assert '# demo\n\n> A demo.\n\nSome *text*.' in md
    for gone in ('secret', 'quiet()', 'not shown', '```\nno\n```'): assert gone not in md, gone
    assert '```\nshown\n```' in md and '```python\nshown_code()\n```' in md
    assert '```python\n1+1\n```\n\n```\n2\n```' in md and '```\na\nb\n```' in md
    assert '**bold**' in md and '![](index_files/figure-commonmark/cell-10-output-1.png)' in md


# ---------------------------------------------------------------- in the browser

@needs_chromium
def test_index_in_browser(built):
    "The home page has the site title, and its sidebar links to every API page."
    site = _site(built)
    dom = _dom(site/'index.html')
    title = re.search(r'<title>(.*?)</title>', dom, re.S)
    assert title and 'hemabook' in _text(title.group(1)), title
    assert re.search(r'class="[^"]*navbar[^"]*".*?hemabook', dom, re.S), "no navbar with the site title"
    side = re.search(r'id="quarto-sidebar".*?</nav>', dom, re.S)
    assert side, "no sidebar"
    hrefs = {h.split('#')[0].lstrip('./') for h in re.findall(r'href="([^"]+)"', side.group(0))}
    for nb, page in _api_pages().items(): assert page in hrefs, f"sidebar has no link to {page} ({nb}): {sorted(hrefs)}"
    assert re.search(r'>\s*API\s*<', side.group(0)), "no API section in the sidebar"


@needs_chromium
def test_core_in_browser(built):
    "The core page, as Chromium builds its DOM: load_image's signature and docments, and a non-blank PNG plot."
    page = _site(built)/'core.html'
    dom = _dom(page)
    doc = _text(_showdoc(dom, 'load_image'))
    assert 'load_image(' in doc and 'rescale' in doc, doc[:500]
    for k, v in _load_image_docments().items(): assert v in doc, f"docments of {k!r} missing: {v!r}"
    srcs = [s for s in re.findall(r'<img[^>]+src="([^"]+)"', dom) if s.startswith('data:image/png') or '.png' in s]
    assert srcs, "no PNG figure on the core page: are nbs/00_core.ipynb's outputs stored?"
    _not_blank(_png_bytes(html.unescape(srcs[0]), page), 'the first figure')


@needs_chromium
def test_core_screenshot(built):
    "A screenshot of the core page is a page, not a blank or error screen (kept in the session's temp folder)."
    page, shot = _site(built)/'core.html', built['shots']/'core.png'
    p = _chromium('--window-size=1280,2000', '--hide-scrollbars', f'--screenshot={shot}', page.as_uri())
    assert shot.is_file(), f"no screenshot: {p.stderr[-2000:]}"
    im = _not_blank(shot.read_bytes(), 'the screenshot')
    assert im.size == (1280, 2000), im.size
    print(f"screenshot: {shot}")


# ---------------------------------------------------------------- first contact: what every reader sees

def _pages(site: Path) -> list[Path]: return sorted(p for p in site.rglob('*.html') if 'site_libs' not in p.parts)


def _outputs(page: str) -> str:
    "The text of a page's stored cell outputs (stdout, stderr, results, displays)."
    return '\n'.join(_text(m) for m in re.findall(r'<div[^>]*class="cell-output[^"]*"[^>]*>(.*?)</div>', page, re.S))


def test_experiment_pages_show_a_run(built):
    "Every experiment page shows a stored run: a figure that is not blank, and the run's headline result against its reference."
    site = _site(built)
    names = sorted(p.stem for p in (NBS/'experiments').glob('*.ipynb'))
    assert len(names) >= 6, names
    for name in names:
        page = site/'experiments'/f'{name}.html'
        assert page.is_file(), f"no page for nbs/experiments/{name}.ipynb"
        src = page.read_text(encoding='utf-8')
        imgs = [s for s in re.findall(r'<img[^>]+src="([^"]+)"', src) if s.startswith('data:image/png') or s.endswith('.png')]
        assert imgs, f"{name}: no figure; store a run with `make outputs NBS=nbs/experiments/{name}.ipynb`"
        _not_blank(_png_bytes(html.unescape(imgs[0]), page), f"{name}'s first figure")
        assert re.search(r' vs .+: (beats it|does NOT beat it)', _outputs(src)), \
            f"{name}: the stored run does not print its headline result beside its reference"


# Absolute paths into a checkout (…/data_samples/…, …/nbs/…, …/.venv/…), wherever that checkout was: a stored output
# that shows one tells the reader about the machine that ran it. URLs do not match (':' or '/' or a letter before).
CHECKOUT_PATH = re.compile(r'(?<![\w.:/~-])/(?:[\w.-]+/)+?(?:data_samples|nbs|hemabook|\.venv|site-packages)/')


def test_pages_stand_alone(built):
    "No page shows an absolute path of the machine that built it, a Python warning, or a file outside the repository."
    site = _site(built)
    roots = {str(REPO): 'the checkout', str(built['root']): 'the build folder', str(REPO.parent/'shared'): 'the shared data'}
    for page in _pages(site):
        src, rel = page.read_text(encoding='utf-8'), page.relative_to(site)
        text = _text(src)
        for s,what in roots.items(): assert s not in src, f"{rel}: shows {what}'s absolute path {s}"
        assert not (m := CHECKOUT_PATH.search(text)), f"{rel}: an absolute path into a checkout: {text[m.start()-60:m.end()+60]!r}"
        assert 'shared/reference' not in src, f"{rel}: cites files outside the repository"
        assert not (m := re.search(r'\b\w*Warning\b', _outputs(src))), \
            f"{rel}: a stored output holds a Python warning (library noise): {_outputs(src)[max(0, m.start()-100):m.end()+100]!r}"
        assert 'TCP without encryption' not in text and 'IProgress not found' not in text, f"{rel}: kernel or tqdm noise"


def test_no_remote_resources(built):
    "No page loads a script, stylesheet, font or picture from the network (maths included): the site works offline."
    site = _site(built)
    for page in _pages(site):
        src = page.read_text(encoding='utf-8')
        remote = re.findall(r'<(?:script|link|img|iframe)\b[^>]*\b(?:src|href)="((?:https?:)?//[^"]+)"', src)
        remote = [u for u in remote if not re.search(r'<link[^>]+rel="(?:canonical|alternate)"[^>]+' + re.escape(u), src)]
        assert not remote, f"{page.relative_to(site)} loads {remote[:3]} from the network"
        assert 'katex' not in src.lower() and 'mathjax' not in src.lower(), f"{page.relative_to(site)} asks for a maths script"


def test_math_is_mathml(built):
    "Maths (BloodShot's ArcFace loss, the explanation pages) is MathML in the page, with no TeX left to typeset."
    site = _site(built)
    page = (site/'fewshot.html').read_text(encoding='utf-8')
    spans = re.findall(r'<span class="math (?:inline|display)">(.*?)</span>', page, re.S)
    assert spans and all(s.lstrip().startswith('<math') for s in spans), spans[:2]
    assert '<mfrac>' in page and r'\frac' not in page and r'\cos' not in page
    for p in _pages(site):
        src = p.read_text(encoding='utf-8')
        assert 'class="math-tex"' not in src, f"{p.relative_to(site)}: maths that could not be converted (see the build log)"


def test_signatures_render(built):
    "show_doc: signatures are plain code that wraps (no Markdown, no line over 100 characters); the parameters' details render."
    site = _site(built)
    n = 0
    for page in _pages(site):
        src = page.read_text(encoding='utf-8')
        for m in re.finditer(r'<h3[^>]*id="([^"]+)"[^>]*>.*?</h3>\s*<div class="code-copy-outer-scaffold">.*?<code[^>]*>(.*?)</code>', src, re.S):
            sig = _text(m.group(2))
            if not re.match(r'(async def|def|class) ', sig): continue
            n += 1
            assert '](' not in sig and ' # ' not in sig, f"{page.name} {m.group(1)}: Markdown or comments in the signature:\n{sig}"
            assert max(map(len, sig.splitlines())) <= 100, f"{page.name} {m.group(1)}: a signature line is too long:\n{sig}"
    assert n > 100, f"only {n} show_doc signatures found"
    runs = _text(_showdoc((site/'runs.html').read_text(encoding='utf-8'), 'history_checks'))
    assert 'Warnings, as for check' in runs, runs[:600]


@needs_chromium
def test_math_offline_in_browser(built):
    "With every network request refused, Chromium lays out the ArcFace formula as maths: a MathML box of real size."
    page = _site(built)/'fewshot.html'
    p = _chromium('--host-resolver-rules=MAP * ~NOTFOUND', '--virtual-time-budget=3000', '--run-all-compositor-stages-before-draw',
                  '--dump-dom', page.as_uri())
    assert p.returncode == 0 and '<math' in p.stdout, p.stderr[-1000:]
    shot = built['shots']/'fewshot-math.png'
    _chromium('--host-resolver-rules=MAP * ~NOTFOUND', '--window-size=1280,4000', f'--screenshot={shot}', page.as_uri())
    assert shot.is_file()


def test_explanation_pages(built):
    "Each method has an explanation page, linked from the sidebar: the paper's method, its public code, where hemabook departs."
    site = _site(built)
    index = (site/'index.html').read_text(encoding='utf-8')
    for m in ('samed', 'bcsam', 'dessam', 'attridet', 'bloodshot'):
        page = site/'explanations'/f'{m}.html'
        assert page.is_file(), f"no explanation page for {m}"
        text = _text(page.read_text(encoding='utf-8'))
        for part in ('The method', 'public code', 'departs'): assert part in text, f"explanations/{m}: no section on {part!r}"
        assert f'explanations/{m}.html' in index, f"the sidebar does not link explanations/{m}.html"
