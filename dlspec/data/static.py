"""Data checked against the model before anything trains: what `dlspec check` knows of a recipe's
data without loading a framework or the whole data set.

* built-in data sets: always — their shapes, dtypes and class counts follow from the name and
  options (`Builtin`'s contract);
* a CSV that exists: its header (the feature count) and its label column (the class count);
* an npz that exists: the shapes and dtypes in its arrays' headers, and its labels;
* a folder of images or texts that exists: its class subfolders; the shapes follow from the
  options (`size`, `grayscale`, `max_len`).

A file that does not exist yet is not an error here (`train` reports it). The examples are
stand-ins of the right shape and dtype, checked by the same `check_against_model` as `train`, so
both report the same E601–E605, here located at the recipe's `data =` line.
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import Diagnostic, DlspecError
from ..ir.training import Builtin, Csv, Images, Npz, Texts
from .core import DataBundle, Split

#: built-in classification sets: their class count
_CLASSES = {"digits": 10, "iris": 3, "wine": 3, "breast_cancer": 2, "sequence": 2, "sentiment": 2}
_FEATURES = {"iris": 4, "wine": 13, "breast_cancer": 30}


def _stand_in(xs: list[tuple[str, tuple[int, ...]]], y: Any, task: str, k: Any, name: str, source: str,
              input_names: list[str] | None = None) -> DataBundle:
    """A two-example bundle with the data set's shapes: what the checker compares."""
    arrays = [np.zeros((2, *shape), dtype=dtype) for dtype, shape in xs]

    def target(spec):
        dtype, shape = spec
        out = np.zeros((2, *shape), dtype=dtype)
        if dtype == "int64" and out.size:
            out.reshape(-1)[1] = 1
        return out

    ys = {key: target(v) for key, v in y.items()} if isinstance(y, dict) else target(y)
    part = Split(arrays, ys)
    return DataBundle(part, part, part, task=task, num_classes=k, description=f"{name}, its shapes read before loading",  # type: ignore[arg-type]
                      source=source,
                      name=name, input_names=input_names or ["x"])


def builtin_shapes(cfg: Builtin) -> DataBundle | None:
    """The shapes of a built-in data set, from its name and options."""
    n = cfg.name
    k: Any
    if n in ("digits", "digits_multitask"):
        side = cfg.size or 8
        xs = [("float32", (1, side, side))]
        if n == "digits_multitask":
            y: Any = {"digit": ("int64", ()), "parity": ("int64", ())}
            k = {"digit": len(cfg.classes) if cfg.classes else 10, "parity": 2}
        else:
            y, k = ("int64", ()), len(cfg.classes) if cfg.classes else 10
        task = "classification"
    elif n in _FEATURES:
        xs, y, task = [("float32", (_FEATURES[n],))], ("int64", ()), "classification"
        k = len(cfg.classes) if cfg.classes else _CLASSES[n]
    elif n == "sunspots":
        xs, y, task, k = [("float32", (cfg.window, 1))], ("float32", (cfg.horizon,)), "regression", None
    elif n in ("sequence", "sentiment"):
        xs, y, task = [("int64", (24 if n == "sequence" else 32,))], ("int64", ()), "classification"
        k = len(cfg.classes) if cfg.classes else 2
    elif n == "tagging":
        xs, y, task, k = [("int64", (20,))], ("int64", (20,)), "sequence_labeling", 3
    elif n == "reverse":
        b = _stand_in([("int64", (10,)), ("int64", (10,))], ("int64", (10,)), "sequence_labeling", 12, n,
                      f'builtin("{n}")', ["source", "decoder input"])
        return b
    elif n == "segmentation":
        xs, y, task, k = [("float32", (1, 32, 32))], ("float32", (1, 32, 32)), "segmentation", None
    else:
        return None
    if cfg.autoencode:
        if n == "reverse":
            return None
        dtype, shape = xs[0]
        y = (dtype, shape)
        vocab = {"sequence": 10, "sentiment": 50, "tagging": 20}.get(n)
        task, k = ("sequence_labeling", vocab) if dtype == "int64" else ("reconstruction", None)
    return _stand_in(xs, y, task, k, n, f'builtin("{n}")')


def _csv_shapes(cfg: Csv, path: Path) -> DataBundle | None:
    import csv

    try:
        if path.stat().st_size > 64 * 2**20:
            return None  # a large file: `train` checks it once loaded
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError):
        return None  # unreadable: `train` reports it
    from .prep import csv_rows

    rows = csv_rows(text)
    try:
        header = [h.strip() for h in next(rows)]
    except (StopIteration, csv.Error):
        return None
    if cfg.label not in header:
        return None  # E611 at load, with its suggestion
    features = list(cfg.features) if cfg.features is not None else [h for h in header if h != cfg.label]
    if not features or any(f not in header for f in features):
        return None
    k = None
    if cfg.task == "classification":
        col = header.index(cfg.label)
        try:
            labels = {r[col].strip() for r in rows if len(r) == len(header) and r[col].strip()}
        except csv.Error:
            return None
        try:
            labels = {float(v) for v in labels}  # type: ignore[misc]
        except ValueError:
            pass
        k = len(labels)
        if k < 2:
            return None  # E621 at load
        y: Any = ("int64", ())
    else:
        y = ("float32", (1,))
    return _stand_in([("float32", (len(features),))], y, cfg.task, k, path.name, str(path))


def _npy_header(z: zipfile.ZipFile, key: str) -> tuple[tuple[int, ...], np.dtype] | None:
    name = f"{key}.npy"
    if name not in z.namelist():
        return None
    with z.open(name) as f:
        version = np.lib.format.read_magic(f)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read(f)  # the header only, not the data
    return tuple(shape), dtype


def _npz_shapes(cfg: Npz, path: Path) -> DataBundle | None:
    try:
        with zipfile.ZipFile(path) as z:
            hx, hy = _npy_header(z, cfg.x), _npy_header(z, cfg.y)
            if hx is None or hy is None:
                return None
            (sx, dx), (sy, dy) = hx, hy
            if dy.kind in "iub" and len(sy) >= 1 and int(np.prod(sy)) <= 10**7:
                with np.load(path, allow_pickle=False) as data:
                    yv = data[cfg.y]
                k = int(yv.max()) + 1 if yv.size else None
            else:
                k = None
    except Exception:  # unreadable or not an npz: `train` reports it
        return None
    if len(sx) == 0 or len(sy) == 0 or dx.kind not in "fiub" or dy.kind not in "fiub":
        return None
    xs = [("float32" if dx.kind == "f" else "int64", tuple(sx[1:]) or (1,))]
    if dy.kind == "f":
        return _stand_in(xs, ("float32", tuple(sy[1:]) or (1,)), "regression", None, path.name, str(path))
    task = "classification" if len(sy) == 1 else "sequence_labeling"
    return _stand_in(xs, ("int64", tuple(sy[1:])), task, k, path.name, str(path))


def _class_folders(root: Path) -> int | None:
    try:
        subs = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    except OSError:
        return None
    return len(subs) if len(subs) >= 2 else None


def data_shapes(cfg: Any, base_dir: Path) -> DataBundle | None:
    """A stand-in of the recipe's data with its known shapes, or None when they cannot be known
    here (a file that does not exist yet, or cannot be read: `train` reports it)."""
    from .files import resolve

    if isinstance(cfg, Builtin):
        return builtin_shapes(cfg)
    if not isinstance(cfg, (Csv, Npz, Images, Texts)):
        return None
    path = resolve(cfg.path, base_dir)
    if isinstance(cfg, Csv):
        return _csv_shapes(cfg, path) if path.is_file() else None
    if isinstance(cfg, Npz):
        return _npz_shapes(cfg, path) if path.is_file() else None
    k = _class_folders(path) if path.is_dir() else None
    if k is None:
        return None
    if isinstance(cfg, Images):
        shape = (1 if cfg.grayscale else 3, *cfg.size)
        return _stand_in([("float32", shape)], ("int64", ()), "classification", k, path.name, str(path))
    return _stand_in([("int64", (cfg.max_len,))], ("int64", ()), "classification", k, path.name, str(path))


_DATA_LINE = re.compile(r"^\s*(data)\s*=")


def data_span(span: Any) -> Any:
    """The span of the `data = ...` line of the recipe at `span` (the recipe's own when not found)."""
    from ..source import Span

    if span is None:
        return None
    try:
        lines = Path(span.file).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return span
    for i in range(span.line - 1, min(span.end_line, len(lines))):
        m = _DATA_LINE.match(lines[i])
        if m:
            return Span(file=span.file, line=i + 1, column=m.start(1) + 1, end_line=i + 1,
                        end_column=len(lines[i].rstrip()) + 1)
    return span


def check_recipe_data(cfg: Any, graph: Any, base_dir: Path) -> list[Diagnostic]:
    """The problems of a recipe's data against the model it trains (the same E601–E605 as `train`),
    located at the recipe's `data =` line; [] when they fit or cannot be known here."""
    from .check import check_against_model

    try:
        bundle = data_shapes(cfg.data, base_dir)
    except DlspecError:
        return []  # an option error: loading reports it with its own code
    if bundle is None:
        return []
    try:
        check_against_model(bundle, graph, training=False)
    except DlspecError as exc:
        where = data_span(getattr(cfg, "span", None))
        return [d.model_copy(update={"span": where}) if d.span is None else d for d in exc.diagnostics]
    return []
