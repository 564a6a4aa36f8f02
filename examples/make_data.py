"""Write the tutorials' small data sets into examples/data/ from data that ships with scikit-learn
and with Python itself (nothing downloads). The files are committed; this script says where they
came from and rewrites them the same way (`python examples/make_data.py`).

* iris/      scikit-learn's iris measurements as CSV: train.csv (120 rows), heldout.csv (30 rows,
             10 per species), new.csv (5 rows of measurements without the species column)
* digits/    scikit-learn's 8×8 handwritten digits 0, 1 and 2 as grayscale PNG files, one folder
             per digit: train/ (40 per digit) and heldout/ (12 per digit)
* docs/      texts: the docstrings of Python's `math` functions, `os` functions and `str` methods,
             one .txt per docstring, one folder per source: train/ and heldout/ (one in five)
"""

from __future__ import annotations

import csv
import math
import os
import shutil
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent / "data"


def iris() -> None:
    from sklearn.datasets import load_iris

    d = load_iris()
    out = HERE / "iris"
    out.mkdir(parents=True, exist_ok=True)
    header = ["sepal_length", "sepal_width", "petal_length", "petal_width", "species"]
    rows = [[f"{v:.1f}" for v in x] + [str(d.target_names[t])] for x, t in zip(d.data, d.target)]
    rng = np.random.default_rng(0)
    held = set()
    for c in range(3):
        held |= set(rng.choice(np.flatnonzero(d.target == c), size=10, replace=False).tolist())
    for name, keep in (("train.csv", lambda i: i not in held), ("heldout.csv", lambda i: i in held)):
        with open(out / name, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(header)
            w.writerows(r for i, r in enumerate(rows) if keep(i))
    with open(out / "new.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header[:4])
        w.writerows([["5.0", "3.4", "1.5", "0.2"], ["6.1", "2.8", "4.7", "1.2"], ["7.2", "3.0", "5.8", "1.6"],
                     ["5.7", "2.6", "3.5", "1.0"], ["6.3", "3.3", "6.0", "2.5"]])


def digits() -> None:
    from PIL import Image
    from sklearn.datasets import load_digits

    d = load_digits()
    root = HERE / "digits"
    shutil.rmtree(root, ignore_errors=True)
    for c in (0, 1, 2):
        idx = np.flatnonzero(d.target == c)[:52]
        for part, ids in (("train", idx[:40]), ("heldout", idx[40:])):
            folder = root / part / str(c)
            folder.mkdir(parents=True, exist_ok=True)
            for i in ids:
                Image.fromarray((d.images[i] * 255 / 16).round().astype(np.uint8), mode="L").save(folder / f"{i:04d}.png")


def docs() -> None:
    sources = {
        "math": [getattr(math, n) for n in sorted(dir(math)) if not n.startswith("_")],
        "os": [getattr(os, n) for n in sorted(dir(os)) if not n.startswith("_")],
        "str": [getattr(str, n) for n in sorted(dir(str)) if not n.startswith("_")],
    }
    root = HERE / "docs"
    shutil.rmtree(root, ignore_errors=True)
    for label, objs in sources.items():
        texts = [o.__doc__.strip() for o in objs if callable(o) and o.__doc__ and len(o.__doc__.split()) >= 4]
        seen: list[str] = []
        for t in texts:
            if t not in seen:
                seen.append(t)
        for i, t in enumerate(seen[:60]):
            part = "heldout" if i % 5 == 4 else "train"
            folder = root / part / label
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{i:03d}.txt").write_text(t + "\n", encoding="utf-8")


if __name__ == "__main__":
    iris()
    digits()
    docs()
