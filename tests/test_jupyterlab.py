"""The notebooks as a user first sees them in JupyterLab: the "Python (hemabook)" kernel starts, and nothing is changed.

JupyterLab writes the started kernel's `kernelspec` and `language_info` into a notebook's metadata as it opens it; a
notebook whose stored metadata differs shows an unsaved change at once (tools/nb_kernel.py explains the metadata).
This opens notebooks of each kind (home page, API, experiment, explanation) in a real JupyterLab server, in headless
Chromium driven over the DevTools protocol, and reads the kernel name in the toolbar and the tab's dirty mark.
JupyterLab serves a copy of nbs/, so nothing it might save can touch the checkout.
"""
import json, os, platform, shutil, socket, subprocess, sys, time, urllib.request
from pathlib import Path

import pytest

from conftest import CHROMIUM, needs_chromium

REPO = Path(__file__).resolve().parent.parent
NBS = REPO/'nbs'
OPEN = ['index.ipynb', '00_core.ipynb', 'experiments/wbc_classifier.ipynb', 'explanations/samed.ipynb']


def test_kernel_metadata():
    "Every notebook names the hemabook kernel as JupyterLab will write it, and has a language_info."
    sys.path.insert(0, str(REPO/'tools'))
    from nb_kernel import KERNELSPEC, notebooks
    for f in notebooks(REPO):
        md = json.loads(f.read_text(encoding='utf-8'))['metadata']
        assert md.get('kernelspec') == KERNELSPEC, f"{f.relative_to(REPO)}: kernelspec {md.get('kernelspec')}; run `make clean-nbs`"
        assert md.get('language_info', {}).get('name') == 'python', f"{f.relative_to(REPO)}: no language_info; run `make clean-nbs`"


def _port() -> int:
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


def _wait(url, what, timeout=90):
    t0 = time.time()
    while time.time() - t0 < timeout:
        try: return urllib.request.urlopen(url, timeout=2).read()
        except OSError: time.sleep(0.3)
    raise AssertionError(f"{what} did not answer at {url} within {timeout} s")


class _Page:
    "One Chromium tab over the DevTools protocol."
    def __init__(self, port):
        import websocket
        tab = next(t for t in json.loads(_wait(f'http://127.0.0.1:{port}/json', 'chromium')) if t['type'] == 'page')
        self.ws, self.n = websocket.create_connection(tab['webSocketDebuggerUrl'], timeout=60), 0

    def call(self, method, **params):
        self.n += 1; self.ws.send(json.dumps(dict(id=self.n, method=method, params=params)))
        while True:
            m = json.loads(self.ws.recv())
            if m.get('id') == self.n: return m.get('result', {})

    def js(self, expr):
        return self.call('Runtime.evaluate', expression=expr, returnByValue=True).get('result', {}).get('value')


STATE = """(() => ({kernel: (document.querySelector('.jp-Toolbar-kernelName') || {}).textContent || null,
  status: (document.querySelector('.jp-Notebook-ExecutionIndicator') || {dataset: {}}).dataset.status || null,
  dirty: !!document.querySelector('.lm-TabBar-tab.jp-mod-dirty'),
  dialog: (document.querySelector('.jp-Dialog') || {}).textContent || null}))()"""


@needs_chromium
def test_open_in_jupyterlab(tmp_path):
    "Each notebook opens with the Python (hemabook) kernel, idle, with no dialog and no unsaved change."
    pytest.importorskip('websocket', reason="websocket-client (a jupyter_server dependency) is not installed")
    from jupyter_client.kernelspec import KernelSpecManager
    if 'hemabook' not in KernelSpecManager().find_kernel_specs(): pytest.skip("the 'hemabook' kernel is not registered (`make install`)")
    stored = {json.loads((NBS/n).read_text(encoding='utf-8'))['metadata'].get('language_info', {}).get('version') for n in OPEN}
    if stored != {platform.python_version()}:
        pytest.skip(f"the notebooks record Python {sorted(stored, key=str)}, this is {platform.python_version()}: "
                    "JupyterLab would rightly update language_info.version on opening")
    shutil.copytree(NBS, tmp_path/'nbs', ignore=shutil.ignore_patterns('.ipynb_checkpoints', '_*'))
    jp, cp = _port(), _port()
    env = {**os.environ, 'JUPYTER_CONFIG_DIR': str(tmp_path/'config'), 'JUPYTERLAB_WORKSPACES_DIR': str(tmp_path/'ws'),
           'JUPYTER_RUNTIME_DIR': str(tmp_path/'runtime')}
    lab = subprocess.Popen([sys.executable, '-m', 'jupyterlab', '--no-browser', '--allow-root', f'--port={jp}',
                            '--IdentityProvider.token=', '--ServerApp.password=', f'--ServerApp.root_dir={tmp_path/"nbs"}',
                            '--LabApp.news_url=None', '--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate'],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    chrome = subprocess.Popen([CHROMIUM, '--headless', '--no-sandbox', '--disable-gpu', '--no-first-run',
                               '--disable-background-networking', f'--remote-debugging-port={cp}',
                               f'--user-data-dir={tmp_path/"chromium"}', 'about:blank'],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait(f'http://127.0.0.1:{jp}/api', 'jupyterlab')
        page, seen = _Page(cp), {}
        for nb in OPEN:
            page.call('Page.navigate', url=f'http://127.0.0.1:{jp}/lab/tree/{nb}')
            t0, st = time.time(), {}
            while time.time() - t0 < 90:      # until the kernel is up and idle
                time.sleep(1); st = page.js(STATE) or {}
                if st.get('dialog') or (st.get('kernel') == 'Python (hemabook)' and st.get('status') == 'idle'): break
            time.sleep(3)                      # metadata arrives with the kernel's info reply: give it time to land
            seen[nb] = st = page.js(STATE) or {}
            assert not st.get('dialog'), f"{nb}: JupyterLab opened a dialog: {st['dialog'][:300]}"
            assert st.get('kernel') == 'Python (hemabook)', f"{nb}: kernel {st.get('kernel')!r}, expected 'Python (hemabook)'"
            assert not st.get('dirty'), f"{nb}: shows an unsaved change right after opening (kernel metadata; see tools/nb_kernel.py)"
        print(seen)
    finally:
        chrome.kill(); lab.terminate()
        try: lab.wait(20)
        except subprocess.TimeoutExpired: lab.kill()
