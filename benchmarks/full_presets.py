"""Peak GPU memory and training throughput of every experiment's `full` preset, at its paper batch size.

Each experiment runs as a dry run (`MAX_STEPS`) through `hemabook run`, as a user would before a long run: the real
architecture at its real input size, random weights in the real formats (an official-layout SAM ViT-B checkpoint
written from `segment_anything`'s model, timm state dicts), the bundled samples as data, on 1 process and, with
`--gpus 1 2`, on 2 (`--gpus 2`, one GPU each). Every training folder's history row gives `gpu_peak_gib` (the most GPU
memory the epoch held, per process) and `items_per_s` (training items per second in that process; with MAX_STEPS
small this includes the first, slow steps, so read it as a lower bound — `samed_train_step.py` measures steady speed).

    python benchmarks/full_presets.py                      # every experiment, 1 process, on the GPU
    python benchmarks/full_presets.py --gpus 1 2 --names samed dessam
    python benchmarks/full_presets.py --cpu-check          # on the CPU, small batches: checks that every run works

Writes `--out` (JSON: one record per experiment, process count and training folder) and prints a table.
"""
import argparse, json, os, subprocess, sys, time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
S = REPO/'data_samples'


def write_weights(d: Path) -> Path:
    "Random weights in the real formats: SAM ViT-B (official layout), timm ResNet-50 and EfficientNet-B0."
    import timm, torch
    from segment_anything import sam_model_registry
    d.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    if not (d/'random_sam_vit_b.pth').exists():
        torch.save(sam_model_registry['vit_b']().state_dict(), d/'random_sam_vit_b.pth')
    for arch in ('resnet50', 'efficientnet_b0'):
        if not (d/f'random_{arch}.pth').exists():
            torch.save(timm.create_model(arch, pretrained=False).state_dict(), d/f'random_{arch}.pth')
    return d


def experiment_params(w: Path, cpu: bool) -> dict:
    "Data and weights of each experiment's `full` dry run; on the CPU also small batches (`--cpu-check`)."
    p = dict(
        samed=dict(DATA_DIR=S/'synapse', CHECKPOINT=w/'random_sam_vit_b.pth'),
        bcsam=dict(SOURCE_DIR=S/'matek19', TARGET_DIR=S/'acevedo20', SEG_DIR=S/'wbc_masks',
                   CHECKPOINT=w/'random_sam_vit_b.pth', FOLDS=4),
        dessam=dict(DATA_DIR=S/'nuclei_coco', SAM_CHECKPOINT=w/'random_sam_vit_b.pth'),
        attridet=dict(DATA_DIR=S/'leukemiaattri', WEIGHTS=w/'random_resnet50.pth'),
        bloodshot=dict(SOURCE_DIR=S/'wbc_synth', SOURCE_FORMAT='imagefolder', TARGET_DIR=S/'cnmc'/'C-NMC_Leukemia',
                       WEIGHTS=w/'random_efficientnet_b0.pth', VARIANTS='aam_consistency'),
        wbc_classifier=dict())                      # the full preset generates its 2,000 crops
    if cpu:
        small = dict(samed=dict(BATCH=2), bcsam=dict(SEG_BATCH=2), dessam=dict(IMAGE_SIZE=512),
                     attridet=dict(BATCH=2), bloodshot=dict(BATCH=8), wbc_classifier=dict(DATA_DIR=S/'wbc_synth', BATCH=16))
        for k,v in small.items(): p[k].update(v)
    return p


def run_one(name, params, n, steps, out, device, timeout):
    "`hemabook run NAME` as a dry run on `n` processes; the records of each training folder, or the error."
    args = [sys.executable, '-m', 'hemabook', 'run', name, '--out', str(out)]   # works without the console script
    if n > 1: args += ['--gpus', str(n)]
    for k,v in {**params, 'PRESET': 'full', 'MAX_STEPS': steps, 'DEVICE': device}.items(): args += ['-p', k, str(v)]
    t0 = time.time()
    try: r = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired: return [dict(experiment=name, processes=n, error=f'timeout after {timeout} s')]
    base = dict(experiment=name, processes=n, seconds=round(time.time() - t0, 1))
    if r.returncode: return [dict(base, error=(r.stdout + r.stderr)[-1500:])]
    recs = []
    for h in sorted(out.rglob('history.json')):
        if '.ranks' in h.parts: continue
        row = json.loads(h.read_text())[0]
        prm = json.loads((h.parent/'params.json').read_text())
        batch = next((prm[k] for k in ('batch', 'seg_batch') if k in prm), None)
        if h.parent.name == 'autoencoder': batch = prm.get('ae_batch')
        recs.append(dict(base, stage=str(h.parent.relative_to(out)) or '.', batch_per_process=batch,
                         gpu_peak_gib=row.get('gpu_peak_gib'), items_per_s_per_process=row.get('items_per_s'),
                         epoch_s=row.get('time_s')))
    return recs


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--names', nargs='*', default=['samed', 'bcsam', 'dessam', 'attridet', 'bloodshot', 'wbc_classifier'])
    ap.add_argument('--gpus', nargs='*', type=int, default=[1], help='process counts to run each experiment on')
    ap.add_argument('--steps', type=int, default=5, help='MAX_STEPS: training batches per training')
    ap.add_argument('--cpu-check', action='store_true', help='run on the CPU with small batches')
    ap.add_argument('--timeout', type=int, default=600)
    ap.add_argument('--work', default='/tmp/hemabook_full_presets')
    ap.add_argument('--out', default=str(REPO/'benchmarks'/'results'/'new'/'full_presets.json'))
    a = ap.parse_args()
    import torch
    device = 'cpu' if a.cpu_check else 'cuda'
    if device == 'cuda' and not torch.cuda.is_available(): sys.exit('no CUDA GPU here: use --cpu-check on the CPU')
    work = Path(a.work); params = experiment_params(write_weights(work/'weights'), a.cpu_check)
    gpu = torch.cuda.get_device_name(0) if device == 'cuda' else 'cpu'
    recs = []
    for name in a.names:
        for n in a.gpus:
            if device == 'cuda' and n > torch.cuda.device_count():
                recs.append(dict(experiment=name, processes=n, error=f'{torch.cuda.device_count()} GPU(s) here')); continue
            out = work/f'{name}-{n}'
            subprocess.run(['rm', '-rf', str(out)])
            for r in run_one(name, params[name], n, a.steps, out, device, a.timeout):
                recs.append(r); print(json.dumps(r), flush=True)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(dict(device=gpu, torch=torch.__version__, steps=a.steps, records=recs), indent=1))
    print(f"\n{'experiment':15} {'n':>2} {'stage':22} {'batch':>5} {'peak GiB':>9} {'items/s':>8}")
    for r in recs:
        if 'error' in r: print(f"{r['experiment']:15} {r['processes']:>2} ERROR {r['error'][-200:]!r}"); continue
        gib = '-' if r['gpu_peak_gib'] is None else f"{r['gpu_peak_gib']:.2f}"
        print(f"{r['experiment']:15} {r['processes']:>2} {r['stage']:22} {str(r['batch_per_process']):>5} {gib:>9} "
              f"{r['items_per_s_per_process']:>8}")


if __name__ == '__main__': main()
