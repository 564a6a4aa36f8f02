"""Preprocessing that travels with a run: what a data source learnt from the training data, saved
in the run folder and applied again by `evaluate --data` and `predict` to raw inputs.

    prep = bundle.prep                       # set by every loader
    prep.to_json()                           # stored in config.json (`preprocessing`)
    prep = Preprocessing.from_json(obj)      # read back, validated
    batch = read_inputs(prep, path)          # raw CSV rows, images, texts, or arrays → model inputs
    batch.x, batch.y, batch.names            # inputs, targets (None without labels), row/file names

What is recorded, per source:

* csv: the training file's columns, the feature columns in order, their train-split mean and
  standard deviation, the label column, the task; for classification the class names by id.
  Regression targets are not scaled (the model predicts the label's own units).
* images: size, grayscale or RGB, the channel count, the scale (pixel / 255), the class names
  (the training folder's subfolders, sorted).
* texts: the tokenizer (lower-cased words and numbers), the vocabulary by id (0 = padding,
  1 = unknown), max_len (longer texts are cut, shorter padded with 0), the class names.
* npz: the array names; inputs are used as stored.
* builtin: the data set, its standardization statistics (iris, wine, breast_cancer, sunspots)
  and its class names.

Nothing here imports a deep-learning framework.

Error codes
-----------
* E606 a CSV column the run was not trained with      E607 a feature column is missing
* E608 a label (a CSV label, a class folder) the run was not trained with
* E609 an input file predict/evaluate cannot read in the run's form (suffix, image, text, values)
* E622 the run folder records no preprocessing (a run written before it was recorded), or a
  record that cannot be read
"""

from __future__ import annotations

import csv
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .core import data_error


def csv_rows(text: str) -> Any:
    """A csv reader over `text` in the file's own dialect (comma, semicolon or tab separated),
    sniffed from its first 4 KiB: the training loader, `dlspec check` and prediction read alike."""
    try:
        dialect: Any = csv.Sniffer().sniff(text[:4096], delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel
    return csv.reader(text.splitlines(), dialect)

#: the version of the preprocessing record this dlspec writes
PREP_VERSION = 1

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}
#: the tokenizer of `texts` data: lower-cased words and numbers (`don't` stays one word)
WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def tokenize(text: str) -> list[str]:
    """Lower-cased words and numbers (`don't` stays one word)."""
    return WORD.findall(text.lower())


def encode(docs: list[list[str]], vocab: list[str], max_len: int) -> np.ndarray:
    index = {w: i for i, w in enumerate(vocab)}
    out = np.zeros((len(docs), max_len), dtype=np.int64)
    for r, d in enumerate(docs):
        ids = [index.get(w, 1) for w in d[:max_len]]
        out[r, : len(ids)] = ids
    return out




@dataclass
class Preprocessing:
    source: str  # csv | images | texts | npz | builtin
    task: str
    classes: list[str] | None = None
    # csv
    columns: list[str] | None = None
    features: list[str] | None = None
    label: str | None = None
    # standardization of the inputs (csv, tabular and time-series built-ins): x' = (x - mean) / std
    mean: list[float] | float | None = None
    std: list[float] | float | None = None
    # regression targets in standardized units (sunspots): y = y' * target_std + target_mean
    target_mean: float | None = None
    target_std: float | None = None
    # images
    size: list[int] | None = None
    grayscale: bool | None = None
    channels: int | None = None
    scale: float | None = None
    # texts
    tokenizer: str | None = None
    vocab: list[str] | None = None
    max_len: int | None = None
    # npz / builtin
    arrays: list[str] | None = None
    name: str | None = None
    version: int = PREP_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None and v != {}}

    @classmethod
    def from_json(cls, obj: Any, where: str = "config.json") -> Preprocessing:
        if not isinstance(obj, dict):
            raise data_error("E622", f"{where}: field `preprocessing` is not an object")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(obj) - known)
        if unknown:
            raise data_error("E622", f"{where}: field `preprocessing.{unknown[0]}` is not one this dlspec knows",
                             hint="the run folder was written by a newer dlspec, or edited")
        if not isinstance(obj.get("version", 1), int) or obj.get("version", 1) > PREP_VERSION:
            raise data_error("E622", f"{where}: preprocessing version {obj.get('version')!r}; this dlspec reads "
                             f"versions up to {PREP_VERSION}", hint="upgrade dlspec to read the run folder")
        if obj.get("source") not in ("csv", "images", "texts", "npz", "builtin") or not isinstance(obj.get("task"), str):
            raise data_error("E622", f"{where}: field `preprocessing.source` or `.task` is missing or unknown")
        prep = cls(**obj)
        _validate(prep, where)
        return prep

    # -- what a class id is called
    def class_name(self, i: int) -> str:
        return self.classes[i] if self.classes is not None and 0 <= i < len(self.classes) else str(i)

    def standardize(self, x: np.ndarray) -> np.ndarray:
        if self.mean is None or self.std is None:
            return x.astype(np.float32)
        mean = np.asarray(self.mean, dtype=np.float64)
        std = np.asarray(self.std, dtype=np.float64)
        return ((x - mean) / std).astype(np.float32)

    def target_units(self, y: np.ndarray) -> np.ndarray:
        """Regression outputs back in the target's original units."""
        if self.target_mean is None or self.target_std is None:
            return y
        return (y * self.target_std + self.target_mean).astype(np.float32)

    def expects(self) -> str:
        """What predict takes for this run, in words."""
        if self.source == "csv":
            return f"a .csv with the columns {', '.join(self.features or [])} (the label `{self.label}` may be left out)"
        if self.source == "images":
            return "an image file, or a folder of images (png, jpg, bmp, gif, webp)"
        if self.source == "texts":
            return "a .txt file (one text), or a folder of .txt files"
        return "a .npy array (one model input) or an .npz with one array per input name"


def _validate(prep: Preprocessing, where: str) -> None:
    def bad(field_name: str, why: str):
        return data_error("E622", f"{where}: field `preprocessing.{field_name}`: {why}",
                          hint="the run folder is damaged or was edited; train the spec again")

    def strings(v: Any) -> bool:
        return isinstance(v, list) and all(isinstance(s, str) for s in v)

    for name in ("classes", "columns", "features", "vocab", "arrays", "size"):
        v = getattr(prep, name)
        if v is not None and not (strings(v) if name != "size" else
                                  isinstance(v, list) and len(v) == 2 and all(isinstance(d, int) and d > 0 for d in v)):
            raise bad(name, "not a list of the expected values")
    if prep.source == "csv":
        if not prep.features or not prep.columns or not isinstance(prep.label, str):
            raise bad("features", "a csv record needs columns, features and label")
        for name in ("mean", "std"):
            v = getattr(prep, name)
            if not isinstance(v, list) or len(v) != len(prep.features) or not all(isinstance(f, (int, float)) for f in v):
                raise bad(name, f"needs one number per feature ({len(prep.features)})")
        if prep.std is not None and any(float(s) <= 0 for s in prep.std):  # type: ignore[union-attr]
            raise bad("std", "holds a value that is not positive")
    if prep.source == "images" and (prep.size is None or prep.channels not in (1, 3)):
        raise bad("size", "an images record needs size and channels (1 or 3)")
    if prep.source == "texts" and (not prep.vocab or not isinstance(prep.max_len, int) or prep.max_len < 1):
        raise bad("vocab", "a texts record needs a vocabulary and max_len")


# ---- building the record from a loaded data set ---------------------------------------------------


def _floats(a: Any) -> list[float] | float | None:
    if a is None:
        return None
    arr = np.asarray(a, dtype=np.float64)
    return float(arr) if arr.ndim == 0 else [float(v) for v in arr.reshape(-1)]


def builtin_prep(cfg: Any, bundle: Any) -> Preprocessing:
    norm = bundle.normalization or {}
    prep = Preprocessing(source="builtin", task=bundle.task, classes=bundle.classes, name=cfg.name)
    if cfg.name == "sunspots":
        prep.mean, prep.std = _floats(norm.get("mean")), _floats(norm.get("std"))
        if not cfg.autoencode:
            prep.target_mean, prep.target_std = prep.mean, prep.std  # type: ignore[assignment]
    elif norm:
        prep.mean, prep.std = _floats(norm.get("mean")), _floats(norm.get("std"))
    return prep


# ---- reading raw inputs in the run's form ---------------------------------------------------------


@dataclass
class Batch:
    """Raw inputs turned into model inputs: `x` one array per model input, `y` the targets (class
    ids, regression values) when the input carried them, `names` one label per example for tables
    (a CSV's line number, a file's path)."""

    x: list[np.ndarray]
    y: np.ndarray | None
    names: list[str]


def read_inputs(prep: Preprocessing, path: Path, *, need_labels: bool = False) -> Batch:
    """Raw data at `path` in the training source's form, preprocessed exactly as in training."""
    path = Path(path)
    if not path.exists():
        raise data_error("E609", f"no such file or folder: {path}", hint=f"the run takes {prep.expects()}")
    if prep.source == "csv":
        if path.is_dir() or path.suffix.lower() not in (".csv", ".tsv", ".txt"):
            raise data_error("E609", f"{path}: the run was trained on a CSV file; give {prep.expects()}")
        return read_csv(prep, path, need_labels=need_labels)
    if prep.source == "images":
        return read_images(prep, path, need_labels=need_labels)
    if prep.source == "texts":
        return read_texts(prep, path, need_labels=need_labels)
    raise data_error("E609", f"{path}: a run trained on {prep.source} data takes arrays (.npy, .npz)")


def _csv_text(path: Path) -> str:
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            return f.read()
    except UnicodeDecodeError:
        raise data_error("E609", f"{path} is not UTF-8 text") from None
    except OSError as exc:
        raise data_error("E609", f"cannot read {path}: {exc.strerror}") from None


def read_csv(prep: Preprocessing, path: Path, *, need_labels: bool = False) -> Batch:
    """Rows of a CSV with the training file's columns (the label column may be left out): the
    features standardized with the run's statistics, labels mapped to the run's class ids by name.

    A column the run was not trained with (E606), a feature column that is missing (E607), a label
    that is not one of the run's classes (E608) and a value that is not a number (E609) name the
    file and the line; the file's own contents are never quoted."""
    assert prep.features is not None and prep.columns is not None and prep.label is not None
    text = _csv_text(path)
    reader = csv_rows(text)
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise data_error("E609", f"{path} is empty", hint="the first row names the columns, as in the training file") from None
    except csv.Error as exc:
        raise data_error("E609", f"{path} is not a readable CSV file: {exc}") from None
    known = set(prep.columns)
    for i, h in enumerate(header):
        if h not in known:
            raise data_error("E606", f"{path}: column {i + 1} of the header (line 1) is not a column the run was "
                             f"trained with", hint=f"the training file's columns: {', '.join(prep.columns)}")
    if len(set(header)) != len(header):
        raise data_error("E606", f"{path}: the header (line 1) names a column twice")
    missing = [f for f in prep.features if f not in header]
    if missing:
        raise data_error("E607", f"{path} has no feature column `{missing[0]}`"
                         + (f" (nor {', '.join(f'`{m}`' for m in missing[1:])})" if len(missing) > 1 else ""),
                         hint=f"the model reads the columns {', '.join(prep.features)}, in any order")
    cols = [header.index(f) for f in prep.features]
    label_col = header.index(prep.label) if prep.label in header else None
    if need_labels and label_col is None:
        raise data_error("E607", f"{path} has no label column `{prep.label}`: evaluating needs the true labels",
                         hint="predict takes rows without labels; evaluate needs them")
    index = _label_index(prep) if prep.task == "classification" else None
    rows: list[list[float]] = []
    labels: list[Any] = []
    names: list[str] = []
    line = 1
    try:
        for row in reader:
            line = reader.line_num
            if not row or all(not c.strip() for c in row):
                continue
            if len(row) != len(header):
                raise data_error("E609", f"{path} line {line} has {len(row)} fields but the header has {len(header)}")
            values = []
            for c, name in zip(cols, prep.features, strict=True):
                cell = row[c].strip()
                try:
                    v = float(cell)
                except ValueError:
                    what = "is empty" if not cell else "is not a number"
                    raise data_error("E609", f"{path} line {line}: feature `{name}` {what}",
                                     hint="the model was trained on numbers in every feature column") from None
                if not np.isfinite(v):
                    raise data_error("E609", f"{path} line {line}: feature `{name}` is NaN or infinite")
                values.append(v)
            rows.append(values)
            names.append(f"line {line}")
            if label_col is not None:
                lab = row[label_col].strip()
                if not lab:
                    if need_labels:
                        raise data_error("E609", f"{path} line {line}: the label `{prep.label}` is empty")
                    labels.append(None)
                elif index is not None:
                    key = _label_key(lab, index)
                    if key not in index:
                        raise data_error("E608", f"{path} line {line}: the label `{prep.label}` is not one of the "
                                         f"run's {len(prep.classes or [])} classes",
                                         hint=f"the run knows the classes {', '.join(prep.classes or [])}")
                    labels.append(index[key])
                else:
                    try:
                        labels.append(float(lab))
                    except ValueError:
                        raise data_error("E609", f"{path} line {line}: the label `{prep.label}` is not a number "
                                         "(the run is a regression)") from None
    except csv.Error as exc:
        raise data_error("E609", f"{path} line {line} is not valid CSV: {exc}") from None
    if not rows:
        raise data_error("E609", f"{path} has a header but no rows of data")
    x = prep.standardize(np.asarray(rows, dtype=np.float64))
    y = None
    if label_col is not None and all(v is not None for v in labels):
        y = (np.asarray(labels, dtype=np.int64) if index is not None
             else np.asarray(labels, dtype=np.float32)[:, None])
    return Batch([x], y, names)


def _label_index(prep: Preprocessing) -> dict[Any, int]:
    """Label → class id. As in training, labels compare as numbers when every class name is a
    number (`1` and `1.0` are one class), else as text."""
    classes = prep.classes or []
    try:
        return {float(c): i for i, c in enumerate(classes)}
    except ValueError:
        return {c: i for i, c in enumerate(classes)}


def _label_key(v: str, index: dict[Any, int]) -> Any:
    if index and isinstance(next(iter(index)), float):
        try:
            return float(v)
        except ValueError:
            return v
    return v


def _files(root: Path, suffixes: set[str]) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in suffixes
                  and not any(part.startswith(".") for part in p.relative_to(root).parts))


def _labelled(prep: Preprocessing, root: Path, suffixes: set[str], what: str,
              need_labels: bool) -> tuple[list[Path], list[int] | None]:
    """The files under `root`: with class subfolders (named like the run's classes) their labels too."""
    subs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    loose = [p for p in root.iterdir() if p.is_file() and p.suffix.lower() in suffixes]
    if subs and not loose:
        classes = prep.classes or []
        files: list[Path] = []
        labels: list[int] = []
        for s in subs:
            if s.name not in classes:
                raise data_error("E608", f"{root}: class folder `{s.name}` is not one of the run's classes",
                                 hint=f"the run knows the classes {', '.join(classes)}")
            found = _files(s, suffixes)
            files += found
            labels += [classes.index(s.name)] * len(found)
        if not files:
            raise data_error("E609", f"{root} holds no {what}")
        return files, labels
    if need_labels:
        raise data_error("E608", f"{root}: evaluating needs the {what} in one subfolder per class, named like the "
                         f"run's classes ({', '.join(prep.classes or [])})")
    files = _files(root, suffixes)
    if not files:
        raise data_error("E609", f"{root} holds no {what} ({', '.join(sorted(suffixes))})")
    return files, None


def read_images(prep: Preprocessing, path: Path, *, need_labels: bool = False) -> Batch:
    """An image file, a folder of images, or (with labels) a folder with one subfolder per class:
    each image converted to the run's channels, resized to its size and scaled to [0, 1] as in
    training."""
    if path.is_dir():
        files, labels = _labelled(prep, path, IMAGE_SUFFIXES, "images", need_labels)
    else:
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            raise data_error("E609", f"{path}: not an image file ({', '.join(sorted(IMAGE_SUFFIXES))})",
                             hint=f"the run takes {prep.expects()}")
        if need_labels:
            raise data_error("E608", f"{path}: evaluating needs a folder with one subfolder per class")
        files, labels = [path], None
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:
        raise data_error("E620", "reading images needs the package `Pillow`, which is not installed",
                         hint="pip install Pillow") from None
    assert prep.size is not None
    h, w = prep.size
    mode = "L" if prep.channels == 1 else "RGB"
    images = []
    for p in files:
        try:
            with Image.open(p) as im:
                arr = np.asarray(im.convert(mode).resize((w, h), Image.BILINEAR), dtype=np.float32)
        except (UnidentifiedImageError, OSError, ValueError) as exc:
            raise data_error("E609", f"cannot read image {p} ({type(exc).__name__})",
                             hint="remove or replace the file") from None
        images.append(arr.reshape(h, w, prep.channels or 3).transpose(2, 0, 1) * float(prep.scale or 1 / 255.0))
    base = path if path.is_dir() else path.parent
    names = [str(p.relative_to(base)) for p in files]
    y = np.asarray(labels, dtype=np.int64) if labels is not None else None
    return Batch([np.stack(images).astype(np.float32)], y, names)


def read_texts(prep: Preprocessing, path: Path, *, need_labels: bool = False) -> Batch:
    """A .txt file (one text), a folder of .txt files, or (with labels) one subfolder per class:
    tokenized, mapped to the run's vocabulary (unknown words → 1) and cut or padded to max_len."""
    if path.is_dir():
        files, labels = _labelled(prep, path, {".txt"}, "text files", need_labels)
    else:
        if need_labels:
            raise data_error("E608", f"{path}: evaluating needs a folder with one subfolder per class")
        files, labels = [path], None
    docs = []
    for p in files:
        try:
            docs.append(tokenize(p.read_text(encoding="utf-8")))
        except UnicodeDecodeError:
            raise data_error("E609", f"{p} is not UTF-8 text") from None
        except OSError as exc:
            raise data_error("E609", f"cannot read {p}: {exc.strerror}") from None
    assert prep.vocab is not None and prep.max_len is not None
    x = encode(docs, prep.vocab, prep.max_len)
    base = path if path.is_dir() else path.parent
    names = [str(p.relative_to(base)) for p in files]
    y = np.asarray(labels, dtype=np.int64) if labels is not None else None
    return Batch([x], y, names)
