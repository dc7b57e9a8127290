"Shared fixtures: the repository root, the `hemabook` console script, and the real data beside the repository."
import json, os, shutil, subprocess, sys
from pathlib import Path
from types import SimpleNamespace
import pytest
from filelock import FileLock

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = next(filter(None, map(shutil.which, ('chromium', 'chromium-browser', 'google-chrome'))), None)
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (`make browser` installs Debian's)")

def chromium(*args, timeout=60) -> subprocess.CompletedProcess:
    "Headless Chromium with `args` (a throw-away profile, no network chatter); the CompletedProcess, text captured."
    prof = Path(os.environ.get('TMPDIR', '/tmp'))/f"chromium-profile-{os.getpid()}"
    cmd = [CHROMIUM, '--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
           '--disable-component-update', '--no-first-run', '--disable-sync', '--disable-quic',
           f'--user-data-dir={prof}', *map(str, args)]
    try: return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    finally: shutil.rmtree(prof, ignore_errors=True)

# pytest-xdist runs several worker processes on the machine's cores. Each worker, and every process it starts (papermill
# kernels, the demo), gets its share of threads: oversubscribed OpenMP threads made the CPU-heavy tests 4-7x slower.
# This must happen in the controller before it starts the workers (they inherit its environment); the variable
# PYTEST_XDIST_WORKER_COUNT only exists in the workers, so reading it at import time set every worker to all cores.
_THREAD_VARS = ('OMP_NUM_THREADS', 'MKL_NUM_THREADS', 'OPENBLAS_NUM_THREADS', 'NUMBA_NUM_THREADS')

def pytest_configure(config):
    if os.environ.get('PYTEST_XDIST_WORKER'): return            # a worker: the controller has set them
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else (os.cpu_count() or 1)
    n = getattr(config.option, 'numprocesses', None) or 1
    n = n if isinstance(n, int) else cpus                         # -n auto / logical
    for v in _THREAD_VARS: os.environ.setdefault(v, str(max(1, cpus//max(n, 1))))   # a value you set is kept

def cli(*args, cwd=None, env=None, timeout=600):
    "Run the installed `hemabook` console script; returns the CompletedProcess (text, both streams captured)."
    exe = Path(sys.executable).parent/'hemabook'
    return subprocess.run([str(exe), *map(str, args)], cwd=cwd or REPO, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})

def once_per_session(tmp_path_factory, worker_id, name:str, make) -> Path:
    """The folder `name` in the base temporary folder the pytest-xdist workers share, filled by `make(folder)` once per
    session: the first worker to ask makes it, the others wait for it (a file lock) and reuse it. A module fixture
    alone is made again by each worker that runs one of its tests, and again when the module's tests interleave with
    other modules' (`--maxschedchunk 1`)."""
    root = tmp_path_factory.getbasetemp()
    if worker_id != 'master': root = root.parent
    out,done = root/name,root/f'{name}.done'
    with FileLock(str(root/f'{name}.lock')):
        if not done.exists():
            out.mkdir(exist_ok=True); make(out); done.touch()
    return out

@pytest.fixture(scope='session')
def demo_runs(tmp_path_factory, worker_id):
    """`hemabook demo`'s folder (one run folder per experiment's smoke preset) and its result (returncode, stdout,
    stderr), made once per pytest session and shared by the pytest-xdist workers (`once_per_session`). Tests only read
    it."""
    def demo(d):
        r = cli('demo', '--out', d/'demo', timeout=1200)
        (d/'result.json').write_text(json.dumps(dict(returncode=r.returncode, stdout=r.stdout, stderr=r.stderr)))
    d = once_per_session(tmp_path_factory, worker_id, 'demo_session', demo)
    return d/'demo', SimpleNamespace(**json.loads((d/'result.json').read_text()))

@pytest.fixture(scope='session')
def attri_trained(tmp_path_factory, worker_id):
    """An AttriDet trained on 40 generated H_100X_C1 fields (8 epochs, seed 0), saved as a run folder (`run/`, with its
    model card) beside its evaluation on 16 held-out fields (`eval.json`): made once per session and shared by the
    tests of test_attridet.py and test_report.py (`once_per_session`)."""
    def make(d):
        import torch
        from hemabook.core import set_seed
        from hemabook.data.det import det_dls, read_leukemiaattri
        from hemabook.data.samples import write_attri_smears
        from hemabook.attridet import LA_LABELS, AttriDet, attridet_learner, evaluate_attridet, patient_split, save_attridet
        from hemabook.train import fit
        write_attri_smears(d/'data', n_img=40, n_test=16, domains=('H_100X_C1',), yolo_domain=None, n_wbc=4, seed=5)
        df = read_leukemiaattri(d/'data')
        src = patient_split(df[df.split == 'train'], 0.2)
        set_seed(0)
        model = AttriDet(len(LA_LABELS), backbone='test_resnet', sz=256,
                         attr_kw=dict(widths=(64, 32, 32), hidden=(256, 64), p=0.2))
        learn = attridet_learner(det_dls(src, bs=4, sz=256, vocab=LA_LABELS), model)
        with learn.no_bar(): fit(learn, 8, 3e-3)
        save_attridet(d/'run', model, LA_LABELS)
        r = evaluate_attridet(model, df[df.split == 'test'], LA_LABELS, sz=256)
        mean = lambda t: {k: float(v) for k,v in t.set_index('attribute').loc['mean'].items()}
        (d/'eval.json').write_text(json.dumps(dict(map50=r['map50'], det=mean(r['attrs']), gt=mean(r['attrs_oracle']))))
    return once_per_session(tmp_path_factory, worker_id, 'attri_trained', make)

@pytest.fixture(scope='session')
def shared_data():
    "The real data subsets (`$HEMABOOK_SHARED_DATA`, default ../shared/data); skips the test where they are absent."
    from hemabook.core import shared_data_path
    p = shared_data_path()
    if not p.is_dir(): pytest.skip(f"real data not found at {p} (set HEMABOOK_SHARED_DATA); fresh clones skip this")
    return p

def shared_subset(shared_data, *parts):
    "The folder `parts` inside the real data (from the `shared_data` fixture); skips the test where it is absent."
    p = shared_data.joinpath(*parts)
    if not p.is_dir(): pytest.skip(f"{p} not found: that real data subset is absent here")
    return p

def bccd_split(root):
    "BCCD's own lists (`read_voc`'s reading of ImageSets): image stem → 'train' | 'valid' (its test set held out)."
    from hemabook.data.det import _voc_splits
    return {s: {'train': 'train', 'test': 'valid'}[v] for s,v in _voc_splits(Path(root)/'BCCD').items() if v in ('train', 'test')}

# The longest tests first (seconds in a full `make test` on 2 cores, 2026-12-01/02): with `--maxschedchunk 1` (Makefile)
# pytest-xdist hands tests out one at a time in this order, so no long test is left to run alone at the end.
_SLOW_FIRST = ('test_experiments.py::test_demo',                          # 290
               'test_dessam.py::test_dsb2018_colour',                    # 250 (4 epochs since 2026-12-02)
               'test_train_distributed.py::test_every_experiment_runs_on_two_processes',   # 250
               'test_dessam.py::test_dsb2018_grey',                      # 200 (since 2026-12-02)
               'test_bcsam_real.py::test_bcsam_acevedo_bccd',             # 140
               'test_fewshot_real.py::test_bloodshot_acevedo_to_bccd',    # 140
               'test_attridet.py::test_attributes_learned_on_generated_smears',  # 115
               'test_attridet.py::test_bccd_wbc_detected',                # 100 (1 epoch since 2026-12-02)
               *(f'test_full_presets.py::test_full_preset_dry_run[{n}]'        # 25-85 each
                 for n in ('bcsam', 'attridet', 'dessam', 'samed', 'bloodshot')))

def pytest_collection_modifyitems(config, items):
    "Run the known long tests first; the rest keep their order."
    rank = lambda it: next((i for i,k in enumerate(_SLOW_FIRST) if it.nodeid.endswith(k)), len(_SLOW_FIRST))
    items.sort(key=rank)

def _usage_logger(name):
    """With `$HEMABOOK_TEST_CPU_LOG` set, a context that appends `name`'s wall and CPU seconds (its own and its
    children's) to that file; otherwise None."""
    log = os.environ.get('HEMABOOK_TEST_CPU_LOG')
    if not log: return None
    import contextlib, resource, time
    usage = lambda who: (lambda u: u.ru_utime + u.ru_stime)(resource.getrusage(who))
    @contextlib.contextmanager
    def ctx():
        t0,s0,c0 = time.perf_counter(),usage(resource.RUSAGE_SELF),usage(resource.RUSAGE_CHILDREN)
        yield
        with open(log, 'a') as f:
            f.write(f"{name}\twall {time.perf_counter()-t0:.1f}\tcpu {usage(resource.RUSAGE_SELF)-s0:.1f}"
                    f"\tchildren {usage(resource.RUSAGE_CHILDREN)-c0:.1f}\tworker {os.environ.get('PYTEST_XDIST_WORKER', '-')}\n")
    return ctx()

@pytest.fixture(autouse=True)
def _cpu_log(request):
    "With `$HEMABOOK_TEST_CPU_LOG` set, log each test's wall and CPU seconds (see `_usage_logger`)."
    if (ctx := _usage_logger(request.node.nodeid)) is None: yield; return
    with ctx: yield

@pytest.hookimpl(wrapper=True)
def pytest_fixture_setup(fixturedef, request):
    "The same for the set-up of session and module fixtures (the demo, the docs build, ...), which no test's time holds."
    if fixturedef.scope == 'function' or (ctx := _usage_logger(f"fixture {fixturedef.argname} ({fixturedef.scope})")) is None:
        return (yield)
    with ctx: return (yield)
