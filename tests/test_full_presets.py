"""Each experiment's `full` preset, as a dry run (`MAX_STEPS=1`): the real architecture, real-format images, one
training step, the checkpoint, the whole evaluation and the pictures, through `hemabook run` as on a GPU machine.

The weights are random but in the formats users bring: an official-layout SAM ViT-B checkpoint written from
`segment_anything`'s own (randomly initialised) model, timm state dicts for the CNN backbones. What is cut, and why
(`make test` runs on 2 CPU cores in under 20 minutes; these six take about 5 CPU minutes together):
- input sizes: the SAM ViT-B methods run at 256 px (SAMed's is 512, DES-SAM's 1024: ViT-B at 1024 takes over two
  minutes for one step and its evaluation here), AttriDet's ResNet-50 at 320 (640). The position tables are resized
  from the checkpoint's 1024 px as at any size, the windowed and global attention blocks are the same blocks, so a
  smaller side is the same code on fewer tokens. BC-SAM (224) and BloodShot (224) run at their real sizes;
- batch sizes are small (SAMed 24 → 2, BC-SAM stage 1 32 → 2 and its autoencoder 128 → 16, AttriDet 8 → 1,
  BloodShot 32 → 8); a batch size is a number, not another code path;
- the evaluation reads as many batches of test images as the training did (per domain for AttriDet): what a dry run
  does for any user (`hemabook.runs.dry_run_images`, recorded under `dry_run` in `metrics.json`); SAMed's one test
  volume and the small sample sets of the others are read whole;
- data are the bundled samples: BC-SAM runs 2 folds, not 5, so that its dry run encodes 2 of the 4 cells of each type
  in each domain (MAX_STEPS × FOLDS: the fewest the folds can split; 20 of the 40 cells); BloodShot's source is the synthetic
  crops as an image folder (Matek-19's sample has too few cells for its 70/10/20 split) and trains one loss variant,
  the consistency one, which runs the most code, with fewer episodes; the plain classifier reads the sample folders
  instead of generating its 2,000 crops.
`benchmarks/full_presets.py` runs the same dry runs on a GPU at the real sizes and batch sizes, and records the GPU
memory each needs.
"""
import json

import pytest
import torch

from conftest import cli, REPO

S = REPO/'data_samples'


@pytest.fixture(scope='module')
def weights(tmp_path_factory):
    "Random weights in the formats of the real ones: SAM ViT-B (official layout), timm ResNet-50 and EfficientNet-B0."
    import timm
    from segment_anything import sam_model_registry
    d = tmp_path_factory.mktemp('weights')
    torch.manual_seed(0)
    torch.save(sam_model_registry['vit_b']().state_dict(), d/'random_sam_vit_b.pth')
    for arch in ('resnet50', 'efficientnet_b0'):
        torch.save(timm.create_model(arch, pretrained=False).state_dict(), d/f'random_{arch}.pth')
    return d


def _params(w):
    return dict(
        samed=['DATA_DIR', S/'synapse', 'CHECKPOINT', w/'random_sam_vit_b.pth', 'BATCH', 2, 'IMAGE_SIZE', 256],
        bcsam=['SOURCE_DIR', S/'matek19', 'TARGET_DIR', S/'acevedo20', 'SEG_DIR', S/'wbc_masks',
               'CHECKPOINT', w/'random_sam_vit_b.pth', 'SEG_BATCH', 2, 'AE_BATCH', 16, 'FOLDS', 2],
        dessam=['DATA_DIR', S/'nuclei_coco', 'SAM_CHECKPOINT', w/'random_sam_vit_b.pth', 'IMAGE_SIZE', 256],
        attridet=['DATA_DIR', S/'leukemiaattri', 'WEIGHTS', w/'random_resnet50.pth', 'BATCH', 1, 'IMAGE_SIZE', 320],
        bloodshot=['SOURCE_DIR', S/'wbc_synth', 'SOURCE_FORMAT', 'imagefolder', 'TARGET_DIR', S/'cnmc'/'C-NMC_Leukemia',
                   'WEIGHTS', w/'random_efficientnet_b0.pth', 'VARIANTS', 'aam_consistency', 'BATCH', 8,
                   'EPISODES', 20, 'CURVE_EPISODES', 5],
        wbc_classifier=['DATA_DIR', S/'wbc_synth', 'BATCH', 16])

# What shows that the real architecture was built: (file in the run folder, key path, expected value)
ARCH = dict(samed=('params.json', ('recipe', 'arch'), 'vit_b'),
            bcsam=('stage1/params.json', ('recipe', 'arch'), 'vit_b'),
            dessam=('model/params.json', ('arch',), 'vit_b'),
            attridet=('plain/params.json', ('backbone',), 'resnet50'),
            bloodshot=('aam_consistency/params.json', ('backbone',), 'efficientnet_b0'),
            wbc_classifier=('params.json', ('arch',), 'resnet18'))


def test_every_experiment_has_its_check():
    from hemabook.runner import list_experiments
    assert set(ARCH) == set(list_experiments()) == set(_params(S))


@pytest.mark.parametrize('name', list(ARCH))
def test_full_preset_dry_run(name, weights, tmp_path):
    kv = _params(weights)[name] + ['PRESET', 'full', 'MAX_STEPS', 1]
    out = tmp_path/name
    r = cli('run', name, '--out', out, *[x for i in range(0, len(kv), 2) for x in ('-p', *kv[i:i+2])], timeout=400)
    assert r.returncode == 0, (name, r.stdout[-3000:] + r.stderr[-3000:])
    assert json.loads((out/'run.json').read_text())['status'] == 'ok'
    m = json.loads((out/'metrics.json').read_text())
    assert m['dry_run']['max_steps'] == 1 and m['warnings'][0].startswith('dry run: every training stopped')
    for what,cut in m['dry_run'].get('evaluated', {}).items():   # the evaluation read one batch too, and says so
        assert f"{what}: {cut['kept']} of {cut['of']} images" in m['warnings'][0], m['warnings'][0]
    if name == 'attridet':                            # one image per test domain (DES-SAM's sample has one test image)
        assert m['dry_run']['evaluated']['test'] == {'kept': 2, 'of': 4}, m['dry_run']
    if name == 'bcsam': assert m['dry_run']['evaluated']['cells'] == {'kept': 20, 'of': 40}, m['dry_run']
    assert m['headline']['text'].startswith('DRY RUN (MAX_STEPS=1)'), m['headline']
    f,keys,want = ARCH[name]
    got = json.loads((out/f).read_text())
    for k in keys: got = got[k]
    assert got == want, (name, f, keys, got)
    hists = sorted(out.rglob('history.json'))
    assert hists, name
    for h in hists:                                   # every training: one epoch, of one step, recorded and saved
        rows = json.loads(h.read_text())
        assert [r['epoch'] for r in rows] == [0] and rows[0]['items_per_s'] > 0, (h, rows)
        assert isinstance(rows[0]['train_loss'], float) and isinstance(rows[0]['valid_loss'], float), (h, rows)
        ckpt = torch.load(h.parent/'checkpoints'/'last.pth', weights_only=True)
        assert ckpt['epoch'] == 0 and ckpt['n_epoch'] > 1, (h, ckpt['n_epoch'])   # stopped early, not a 1-epoch run
        assert (h.parent/'curves.png').exists(), h
    assert list(out.glob('*.png')), f"{name}: no pictures in the run folder"
