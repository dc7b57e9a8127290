"""hemabook's own metric and loss code against the reference libraries of the field, on the same inputs.

hemabook computes Dice/HD95 (SAMed's scores), PQ/DQ/SQ (DES-SAM's) and the ArcFace loss (BloodShot's) itself, to
control edge cases and dependencies; these tests hold them to medpy, torchmetrics and pytorch-metric-learning (dev
requirements, used by no module of the package).
"""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hemabook.fewshot import ArcFaceLoss
from hemabook.metrics import dice, hd95, inst_metrics

medpy_binary = pytest.importorskip('medpy.metric.binary', reason='medpy is a dev requirement (make install)')


def _blobs(rng, shape, n):
    "A random mask of `n` overlapping rectangles."
    m = np.zeros(shape, bool)
    for _ in range(n):
        lo = [int(rng.integers(0, s - 3)) for s in shape]
        hi = [int(rng.integers(l + 2, min(s, l + 12) + 1)) for l, s in zip(lo, shape)]
        m[tuple(slice(l, h) for l, h in zip(lo, hi))] = True
    return m


def test_dice_and_hd95_match_medpy():
    rng = np.random.default_rng(0)
    for i in range(60):
        shape = (32, 40) if i % 2 else (12, 20, 24)
        spacing = (1.,) * len(shape) if i % 3 else tuple(rng.uniform(0.5, 3, len(shape)))
        p, g = _blobs(rng, shape, int(rng.integers(1, 4))), _blobs(rng, shape, int(rng.integers(1, 4)))
        assert dice(p, g) == pytest.approx(medpy_binary.dc(p, g), abs=1e-12)
        assert hd95(p, g, spacing) == pytest.approx(medpy_binary.hd95(p, g, voxelspacing=spacing), abs=1e-9)


def _instances(rng, shape=(48, 48), n=6):
    "An instance label image: up to `n` rectangles, later ones on top."
    lbl = np.zeros(shape, np.int32)
    for k in range(1, n + 1):
        y, x = rng.integers(0, shape[0] - 6), rng.integers(0, shape[1] - 6)
        lbl[y:y + int(rng.integers(4, 14)), x:x + int(rng.integers(4, 14))] = k
    return lbl


def test_pq_matches_torchmetrics():
    from torchmetrics.detection import PanopticQuality
    rng = np.random.default_rng(1); seen = []
    for _ in range(25):
        gt = _instances(rng)
        pred = np.where(rng.random(gt.shape) < 0.08, 0, gt)              # a noisy copy ...
        pred = np.roll(pred, int(rng.integers(-2, 3)), axis=int(rng.integers(0, 2)))
        pred[_instances(rng, n=2) > 0] = 50                              # ... with a spurious object
        ours = inst_metrics(gt, pred)
        pq = PanopticQuality(things={1}, stuffs={0}, return_per_class=True, return_sq_and_rq=True)
        enc = lambda l: torch.from_numpy(np.stack([(l > 0).astype(np.int64), l.astype(np.int64)], -1))[None]
        out = pq(enc(pred), enc(gt))[0]          # per class: (pq, sq, rq); class order: things then stuffs
        thing = out[0] if out.ndim == 2 else out
        assert ours['pq'] == pytest.approx(float(thing[0]), abs=1e-6)
        assert ours['sq'] == pytest.approx(float(thing[1]), abs=1e-6)
        assert ours['dq'] == pytest.approx(float(thing[2]), abs=1e-6)
        seen.append(ours['pq'])
    assert min(seen) < 0.4 and max(seen) > 0.6       # the scenes span a range of quality, not one easy case


def test_arcface_matches_pytorch_metric_learning():
    from pytorch_metric_learning.losses import ArcFaceLoss as PmlArcFace
    torch.manual_seed(0)
    ref = PmlArcFace(num_classes=5, embedding_size=16, margin=28.6, scale=64)
    emb, y = torch.randn(40, 16), torch.randint(0, 5, (40,))
    cos = F.normalize(emb) @ F.normalize(ref.W, dim=0)
    ours = ArcFaceLoss(margin=math.radians(28.6), scale=64)
    # pml takes cos(θ + m) everywhere; hemabook (as InsightFace) switches to c − m·sin(m) past θ = π − m, where
    # cos(θ + m) would rise again. On targets short of that point the two must agree exactly.
    ok = cos.gather(1, y[:, None])[:, 0] >= math.cos(math.pi - math.radians(28.6))
    assert ok.sum() > 30
    assert ours(cos[ok], y[ok]).item() == pytest.approx(ref(emb[ok], y[ok]).item(), rel=1e-5)
