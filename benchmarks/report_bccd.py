"""`hemabook report` on real smears: BCCD's 72 test smears, with a detector trained on BCCD's training smears and a
white-cell classifier trained on another data set (the Acevedo-20 subset: CellaVision images of single cells).

Checks what a haematologist would: does the report find the white cells the annotations mark (per-image count against
the VOC boxes), and does it name them as BCCD's per-image subtype labels (`wbc_labels.csv`) do? Three `hemabook`
commands, then the comparison, printed and written to `--out`/comparison.json.

    python benchmarks/report_bccd.py [--data DIR] [--out DIR] [--det-epochs 2] [--cls-epochs 10]

`--data` is the folder holding `bccd/` and `acevedo20_subset/` (default `$HEMABOOK_SHARED_DATA`, else ../shared/data).
About 2.5 minutes on 2 CPU cores.
"""
import argparse, json, re, subprocess, sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd

HB = Path(sys.executable).parent/'hemabook'


def run(*args):
    r = subprocess.run([str(HB), *map(str, args)], capture_output=True, text=True)
    if r.returncode: sys.exit(f"hemabook {' '.join(map(str, args[:2]))} failed:\n{r.stdout[-2000:]}{r.stderr[-2000:]}")
    return r.stdout


def main():
    from hemabook.core import shared_data_path
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--data', type=Path, default=shared_data_path())
    p.add_argument('--out', type=Path, default=Path('runs/report_bccd'))
    p.add_argument('--det-epochs', type=int, default=2)
    p.add_argument('--cls-epochs', type=int, default=10)
    a = p.parse_args()
    bccd,out = a.data/'bccd',a.out
    if not (out/'det'/'model.json').exists():
        run('run', 'attridet', '-p', 'PRESET', 'bccd', '-p', 'EPOCHS', a.det_epochs, '--out', out/'det')
    if not (out/'cls'/'model.json').exists():
        run('run', 'wbc_classifier', '-p', 'DATA_DIR', a.data/'acevedo20_subset'/'PBC_dataset_normal_DIB', '-p',
            'IMAGE_SIZE', 96, '-p', 'ARCH', 'resnet18', '-p', 'EPOCHS', a.cls_epochs, '-p', 'LR', 2e-3,
            '-p', 'BATCH', 32, '--out', out/'cls')
    stems = (bccd/'BCCD'/'ImageSets'/'Main'/'test.txt').read_text().split()
    print(run('report', *[bccd/'BCCD'/'JPEGImages'/f'{s}.jpg' for s in stems], '--detector', out/'det',
              '--classifier', out/'cls', '--out', out/'report').strip())
    s,cells = json.loads((out/'report'/'report.json').read_text()),pd.read_csv(out/'report'/'cells.csv')
    # per-image white-cell counts against the annotations' WBC boxes
    voc = lambda st: ET.parse(bccd/'BCCD'/'Annotations'/f'{st}.xml').iter('object')
    ann = np.array([sum(o.findtext('name').strip() == 'WBC' for o in voc(st)) for st in stems])
    per = {Path(k).stem: v for k,v in s['per_image'].items()}; got = np.array([per.get(st, 0) for st in stems])
    # subtypes against wbc_labels.csv, on the images with one labelled cell and one found
    lab = pd.read_csv(bccd/'wbc_labels.csv'); lab = dict(zip(lab.Image.astype(int), lab.Category.fillna('')))
    ids = {st: int(re.search(r'(\d+)$', st).group(1)) for st in stems}
    truth = {st: [t.strip().lower() for t in lab.get(ids[st], '').split(',') if t.strip()] for st in stems}
    found = {st: g.cell_type.tolist() for st,g in cells.groupby(cells.file.map(lambda f: Path(f).stem))}
    one = [(truth[st][0], found[st][0]) for st in stems if len(truth[st]) == 1 and len(found.get(st, [])) == 1]
    res = dict(images=len(stems), wbc_annotated=int(ann.sum()), wbc_found=int(got.sum()),
               per_image_exact=round(float((ann == got).mean()), 3),
               per_image_mae=round(float(np.abs(ann - got).mean()), 3), subtype_images=len(one),
               subtype_agreement=round(float(np.mean([t == f for t,f in one])), 3) if one else None,
               subtype_truth=pd.Series([t for t,_ in one]).value_counts().to_dict(),
               subtype_found=pd.Series([f for _,f in one]).value_counts().to_dict(),
               classifier_in_domain=json.loads((out/'cls'/'metrics.json').read_text()).get('accuracy'),
               differential={k: v['n'] for k,v in s['differential'].items()}, for_review=s['n_review'])
    (out/'comparison.json').write_text(json.dumps(res, indent=1))
    print(json.dumps(res, indent=1))


if __name__ == '__main__': main()
