#!/usr/bin/env python
"""Give every notebook in nbs/ the kernel metadata JupyterLab writes, so a notebook opens clean.

    python tools/nb_kernel.py            # after nbdev_clean; `make clean-nbs` runs nbdev_export, nbdev_clean and this

When JupyterLab opens a notebook it starts the kernel the notebook names and then writes two things into the
notebook's metadata: `kernelspec` (name, display name and language of the kernel it started) and `language_info` (what
the kernel reports: Python's version, mimetype, ...). If either differs from what the file holds, the notebook shows
an unsaved change the moment it opens. nbdev_clean works against both: it sets `kernelspec.display_name` to the
kernel's name ("hemabook", while the kernel `make install` registers is displayed "Python (hemabook)"), and it keeps
`language_info` only because settings.ini lists it in `allowed_metadata_keys`.

So this sets `kernelspec` to the hemabook kernel exactly as JupyterLab will write it, and adds `language_info` from
this Python's ipykernel where a notebook has none (an existing one is kept, so running this on another Python changes
nothing). A notebook opened with the Python version its `language_info` names opens clean; with another version,
JupyterLab updates `language_info.version` and shows that one change.
"""
import argparse, json, sys
from pathlib import Path

from execnb.nbio import write_nb   # nbdev_clean's writer: the same formatting, so only metadata can change

KERNELSPEC = {"name": "hemabook", "display_name": "Python (hemabook)", "language": "python"}


def language_info() -> dict:
    "What the hemabook kernel (ipykernel, this Python) reports as `language_info`."
    from ipykernel.ipkernel import IPythonKernel
    return dict(IPythonKernel.language_info)


def fix(nb) -> bool:
    "Set `nb`'s kernelspec to hemabook's and give it a `language_info` if it has none; True if anything changed."
    md = nb.setdefault("metadata", {})
    old = (dict(md.get("kernelspec") or {}), "language_info" in md)
    md["kernelspec"] = dict(KERNELSPEC)
    if "language_info" not in md: md["language_info"] = language_info()
    return old != (md["kernelspec"], True)


def notebooks(root: Path) -> list[Path]:
    "The notebooks nbdev works on: nbs/**.ipynb outside `_`- and `.`-folders and files."
    return sorted(p for p in (root/"nbs").rglob("*.ipynb")
                  if not any(part.startswith(("_", ".")) for part in p.relative_to(root/"nbs").parts))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", type=Path, default=Path(__file__).resolve().parent.parent)
    a = p.parse_args(argv)
    changed = []
    for f in notebooks(a.root):
        nb = json.loads(f.read_text(encoding="utf-8"))
        if fix(nb): write_nb(nb, f); changed.append(f.relative_to(a.root))
    if changed: print(f"nb_kernel: kernel metadata set in {len(changed)} notebook(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
