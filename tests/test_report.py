"`hemabook report`: a smear report from a trained detector and classifier, read back from its files and in a browser."
import json, re
from html.parser import HTMLParser
import numpy as np
import pandas as pd
from conftest import chromium, cli, needs_chromium


class _Tables(HTMLParser):
    "The rows (lists of cell texts) of each table with an id, and every image's `src` and `data-w`, from a DOM dump."
    def __init__(self):
        super().__init__(); self.tables,self.imgs,self._t,self._cell = {},[],None,None
    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == 'table' and 'id' in a: self._t = self.tables.setdefault(a['id'], [])
        elif tag == 'tr' and self._t is not None: self._t.append([])
        elif tag in ('td', 'th') and self._t is not None: self._cell = ''
        elif tag == 'img': self.imgs.append(a)
    def handle_data(self, data):
        if self._cell is not None: self._cell += data
    def handle_endtag(self, tag):
        if tag in ('td', 'th') and self._cell is not None: self._t[-1].append(self._cell.strip()); self._cell = None
        elif tag == 'table': self._t = None


@needs_chromium
def test_report_in_a_browser(attri_trained, demo_runs, tmp_path):
    """`hemabook report` on four generated smear fields (16 white cells), with the AttriDet run trained on such fields
    (conftest's `attri_trained`) and the demo's white-cell classifier: every detected white cell is in `cells.csv`
    with its crop, counted or flagged for review, the differential adds up, and headless Chromium shows the count
    table (the same numbers) and decodes every figure. The classifier was trained on other generated crops, so its
    names for these cells are not checked here. At this score (0.3) the detector, trained 8 epochs on 32 fields, gives
    about as many boxes as there are cells, not all on them (measured 2026-12-02: 13 boxes for 16 cells, 1 / 4 / 2 / 6
    per field, 7 of the 13 below the classifier's 0.8, flagged; on another CPU (AVX-512), the same seed trained another
    detector: 21 boxes for the 16 cells. The bar is 4 to 32)."""
    from PIL import Image
    from hemabook.synthetic import apply_domain, synth_smear
    out,r = demo_runs
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    files,n_wbc = [],0
    for k in range(4):
        img,objs,_ = synth_smear(256, n_wbc=4, rng=np.random.default_rng([11, k]))
        Image.fromarray(apply_domain(img, 'H_100X_C1', np.random.default_rng([11, k, 0]))).save(tmp_path/f'field{k}.png')
        files.append(tmp_path/f'field{k}.png'); n_wbc += sum(o['kind'] == 'wbc' for o in objs)
    rep = tmp_path/'report'
    r = cli('report', *files, '--detector', attri_trained/'run', '--classifier', out/'wbc_classifier', '--out', rep,
            '--min-score', 0.3, '--review-below', 0.8)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    s = json.loads((rep/'report.json').read_text())
    cells,diff = pd.read_csv(rep/'cells.csv'),pd.read_csv(rep/'differential.csv', index_col=0)
    assert re.search(rf"^4 images: {len(cells)} white cells, {s['n_counted']} counted .*, {s['n_review']} for review$",
                     r.stdout, re.M), r.stdout
    assert s['n_images'] == 4 and s['n_cells'] == len(cells) == s['n_counted'] + s['n_review'] and n_wbc == 16
    assert 0.25*n_wbc <= len(cells) <= 2*n_wbc, (len(cells), n_wbc)       # a detector that finds white cells
    assert diff.n.sum() == s['n_counted'] == (~cells.review).sum() and abs(diff.percent.sum() - 100) < 0.5
    assert set(diff.index) == set(json.loads((out/'wbc_classifier'/'model.json').read_text())['classes'])
    assert (cells.detection_score >= 0.3).all() and (cells.review == (cells.confidence < 0.8)).all()
    assert all((rep/c).is_file() for c in cells.crop) and sum(s['per_image'].values()) == len(cells)
    from torchvision.ops import box_iou                                       # each cell once, whatever its class
    import torch
    for f,g in cells.groupby('file'):
        iou = box_iou(*[torch.tensor(g[['x0', 'y0', 'x1', 'y1']].to_numpy(np.float32))]*2).fill_diagonal_(0)
        assert iou.max() <= 0.5, (f, iou.max())
    assert (rep/'gallery'/'for_review.png').exists() == bool(s['n_review'])
    assert {'p_nucleolus', 'nucleolus'} <= set(cells.columns) and set(s['attributes']) >= {'nucleolus', 'cytoplasm'}
    md = (rep/'report.md').read_text()
    assert '## Differential count' in md and all(f"fields/field{k}.png" in md for k in range(4))
    # in a browser: the count table as differential.csv says, every figure decoded (naturalWidth > 0)
    page = rep/'check.html'
    page.write_text((rep/'report.html').read_text().replace('</body>', "<script>window.addEventListener('load', () => "
        "document.querySelectorAll('img').forEach(i => i.setAttribute('data-w', i.naturalWidth)))</script></body>"))
    p = chromium('--virtual-time-budget=5000', '--dump-dom', page.as_uri())
    assert p.returncode == 0 and '<html' in p.stdout, p.stderr[-2000:]
    dom = _Tables(); dom.feed(p.stdout)
    rows = [r for r in dom.tables['differential'] if len(r) == 4 and r[1].isdigit()]
    assert {r[0]: int(r[1]) for r in rows} == diff.n.to_dict(), (rows, diff)
    imgs = {i['src']: int(i.get('data-w', 0)) for i in dom.imgs}
    assert sum(k.startswith('fields/') for k in imgs) == 4 and any(k.startswith('gallery/') for k in imgs), imgs
    assert all(w > 100 for w in imgs.values()), imgs
