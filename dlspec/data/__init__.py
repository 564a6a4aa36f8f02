"""The data layer: built-in and file data sets as numpy arrays, for every trainer.

    from dlspec.data import load_data, check_against_model
    bundle = load_data(cfg, seed=0, base_dir=spec_folder)   # cfg: Builtin | Csv | Npz | Images | Texts
    check_against_model(bundle, graph)                       # raises DlspecError E601..E605
    bundle.train.x   # list of arrays, one per model input, in the model's input order
    bundle.train.y   # array, or {output name: array} for multi-output models

Nothing here imports a deep-learning framework and nothing downloads: built-ins come from
scikit-learn's and statsmodels' bundled files or are generated from the seed.

The split rule
--------------
`split` holds fractions that sum to 1, each greater than 0:

* three values `[train, val, test]` are the shares of the three splits;
* two values `[train, test]`: the validation split is carved out of the training share — 10% of
  it — so `[0.8, 0.2]` gives train 0.72, val 0.08, test 0.2.

Counts are `round(fraction × N)` for val and test; train takes the rest. Each split must get at
least one example (E618). With `shuffle=true` (the default) examples are assigned at random with a
numpy Generator seeded from `seed` — the same seed gives the same splits, another seed others —
and classification data is stratified: each class is split in the same proportions. With
`shuffle=false` the splits are consecutive runs in file order: train first, test last.
`builtin("sunspots")` is always split in time order (test = the end of the series); windows whose
targets would reach into the next split are dropped from train and val.

Tabular features (iris, wine, breast_cancer, csv) are standardized with the mean and standard
deviation of the TRAIN split only; `bundle.normalization` keeps them. `per_class` thins only the
train split. Texts get their vocabulary from the train split only.

Targets: class labels are int64 `[N]` (0..k-1), per-token tags int64 `[N, T]`; regression targets
are float32 with at least two axes (`[N, 1]` for one value per example); reconstruction targets are
the inputs. CSV class labels are mapped to 0..k-1 in sorted order (numeric order when every label
is a number); `bundle.classes` keeps the names by id.

Error codes
-----------
* E601 the data gives a different number of inputs than the model takes
* E602 an input's rank or a static dimension differs from the model input
* E603 an input's dtype family differs (token ids vs floats)
* E604 a target does not fit its model output (class count, shape)
* E605 targets and model outputs do not correspond (names, count)
* E610 no such file or folder          E611 no such column
* E612 a non-numeric or missing value  E613 empty file or folder, no class subfolders
* E614 an unreadable file              E615 an npz file without the named array
* E616 x and y of different lengths    E617 bad split fractions
* E618 a split with no example         E619 a bad data option (classes=, size=, window=, …)
* E620 a package a data set needs is not installed
* E621 a classification target with a single class
* E673 (on --resume) a data file changed or vanished since the run started
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from ..errors import error
from ..ir.training import Builtin, Csv, Images, Npz, Texts
from .check import check_against_model
from .core import VAL_OF_TRAIN, DataBundle, Split, data_error, split_fractions, split_indices, standardize

__all__ = [
    "DataBundle", "Split", "load_data", "check_against_model", "split_indices", "split_fractions",
    "standardize", "VAL_OF_TRAIN", "fingerprint", "check_unchanged",
]


def load_data(cfg, seed: int = 0, base_dir: Path | str = ".") -> DataBundle:
    """Load the data set a recipe names, split into train, val and test.

    Raises `DlspecError` (E6xx) for every problem with the data; never a bare Python exception.
    """
    base = Path(base_dir)
    if isinstance(cfg, Builtin):
        from .builtin import load_builtin

        return load_builtin(cfg, seed)
    from . import files

    if isinstance(cfg, Csv):
        return files.load_csv(cfg, seed, base)
    if isinstance(cfg, Npz):
        return files.load_npz(cfg, seed, base)
    if isinstance(cfg, Images):
        return files.load_images(cfg, seed, base)
    if isinstance(cfg, Texts):
        return files.load_texts(cfg, seed, base)
    raise data_error("E619", f"unknown data source {type(cfg).__name__}")


def _files_of(cfg: Any, base: Path) -> Path | None:
    if isinstance(cfg, (Csv, Npz, Images, Texts)):
        from .files import resolve

        return resolve(cfg.path, base)
    return None  # built-in data sets: generated or bundled, nothing of the user's


def _digest(path: Path) -> str:
    """SHA-256 of a file, or of a folder's files (their relative paths and contents, sorted)."""
    h = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for p in files:
        if p != path:
            h.update(str(p.relative_to(path)).encode("utf-8", "surrogateescape") + b"\0")
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def fingerprint(cfg: Any, base_dir: Path | str = ".") -> dict[str, str]:
    """{path: SHA-256} of the user's data a recipe reads (a file, or a folder of images or texts);
    {} for built-ins, and for a path that does not exist (loading reports that)."""
    path = _files_of(cfg, Path(base_dir))
    if path is None or not path.exists():
        return {}
    try:
        return {str(path.resolve()): _digest(path)}
    except OSError:
        return {}  # unreadable: loading reports it


def check_unchanged(recorded: Any, cfg: Any, base_dir: Path | str = ".") -> None:
    """E673 when data a run recorded at its start (`fingerprint`, in config.json) has changed or
    vanished: resuming on other data would silently train a different run."""
    if not isinstance(recorded, dict):
        return  # a run folder from before data was recorded
    for path, digest in recorded.items():
        p = Path(str(path))
        if not p.exists():
            raise error("E673", f"--resume: the data the run was trained on, {p}, is gone",
                        hint="put the file back where it was, or train again without --resume")
        try:
            now = _digest(p)
        except OSError as exc:
            raise error("E673", f"--resume: the data the run was trained on, {p}, cannot be read: {exc.strerror}") from None
        if now != digest:
            raise error("E673", f"--resume: the data the run was trained on, {p}, has changed since the run started",
                        hint="restore the original file to resume, or train the new data without --resume "
                             "into another folder")
    now = fingerprint(cfg, base_dir)
    if recorded and now and set(now) != set(recorded):
        raise error("E673", f"--resume: the recipe now reads {next(iter(now))}, the run was trained on "
                    f"{next(iter(recorded))}", hint="resume with the spec the run was trained with")
