"""Data from the user's files: csv, npz, a folder of images, a folder of texts.

Paths are relative to the spec file's folder (`base_dir`). Every problem with a file is a
`DlspecError` that names the file.
"""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import did_you_mean
from ..ir.training import Csv, Images, Npz, Texts
from .core import DataBundle, Split, data_error, split_indices, standardize
from .prep import Preprocessing, csv_rows, encode, tokenize  # the text pipeline is shared with prediction

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}


def resolve(path: str, base_dir: Path) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() else Path(base_dir) / p


def _missing(kind: str, path: Path, what: str) -> Exception:
    if path.exists():
        return data_error("E610", f"{kind}: {path} is {'a folder' if path.is_dir() else 'a file'}, not a {what}")
    parent = path.parent
    near = did_you_mean(path.name, [p.name for p in parent.iterdir()]) if parent.is_dir() else None
    return data_error("E610", f"{kind}: no such {what}: {path}",
                      hint=near or "paths are relative to the folder of the spec file")


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng([seed, 1])


def _splits(xs: list[np.ndarray], y: Any, parts) -> tuple[Split, Split, Split]:
    full = Split(xs, y)
    return tuple(full.take(p) for p in parts)  # type: ignore[return-value]


def _label_mapping(values: list[str]) -> tuple[np.ndarray, list[str]]:
    """Class labels → 0..k-1 in sorted order (numerically when every label is a number)."""
    try:
        keys: dict[str, Any] = {v: float(v) for v in set(values)}
    except ValueError:
        keys = {v: v for v in set(values)}
    by_key: dict[Any, str] = {}
    for v in sorted(keys, key=lambda v: (keys[v], v)):
        by_key.setdefault(keys[v], v)
    order = sorted(by_key)
    index = {k: i for i, k in enumerate(order)}
    names = [by_key[k] for k in order]
    return np.array([index[keys[v]] for v in values], dtype=np.int64), names


# ---- csv --------------------------------------------------------------------------------------


def load_csv(cfg: Csv, seed: int, base_dir: Path) -> DataBundle:
    path = resolve(cfg.path, base_dir)
    kind = f"csv({cfg.path!r})"
    if not path.is_file():
        raise _missing(kind, path, "file")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            text = f.read()
    except UnicodeDecodeError:
        raise data_error("E614", f"{kind}: {path} is not UTF-8 text") from None
    except OSError as exc:
        raise data_error("E614", f"{kind}: cannot read {path}: {exc.strerror}") from None
    reader = csv_rows(text)
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise data_error("E613", f"{kind}: {path} is empty", hint="the first row names the columns") from None
    except csv.Error as exc:
        raise data_error("E614", f"{kind}: {path} is not a readable CSV file: {exc}") from None

    def column(name: str, what: str) -> int:
        if name not in header:
            # the header is the file's own text: never list it (a file that is no CSV would have its
            # first line quoted); a name close to the one the spec asked for is the one hint
            raise data_error("E611", f"{kind}: {path} has no {what} column `{name}`",
                             hint=did_you_mean(name, header) or f"its header (line 1) names {len(header)} "
                                  f"column{'s' if len(header) != 1 else ''}; the names must match exactly")
        return header.index(name)

    label_col = column(cfg.label, "label")
    features = list(cfg.features) if cfg.features is not None else [h for h in header if h != cfg.label]
    if not features:
        raise data_error("E611", f"{kind}: {path} has no feature columns besides the label `{cfg.label}`")
    if cfg.label in features:
        raise data_error("E611", f"{kind}: the label `{cfg.label}` is also listed among the features",
                         hint="remove it from features=[...]")
    cols = [column(c, "feature") for c in features]
    rows: list[list[float]] = []
    labels: list[str] = []
    lines: list[int] = []  # the file line of each row, for messages
    line = 1
    try:
        for row in reader:
            line = reader.line_num
            if not row or all(not c.strip() for c in row):
                continue
            if len(row) != len(header):
                raise data_error("E614", f"{kind}: {path} line {line} has {len(row)} fields but the header has {len(header)}")
            values = []
            for c, name in zip(cols, features, strict=True):
                cell = row[c].strip()
                try:
                    values.append(float(cell))
                except ValueError:
                    if not cell:
                        raise data_error("E612", f"{kind}: feature column `{name}` of {path} is empty at line {line}",
                                         hint="fill in the missing values or leave the column out of features=[...]") from None
                    # the cell is not quoted: an error never echoes the contents of a data file
                    raise data_error("E612", f"{kind}: feature column `{name}` of {path} is not numeric "
                                     f"(line {line}, field {c + 1})",
                                     hint="encode it as numbers or leave it out of features=[...]") from None
            rows.append(values)
            lines.append(line)
            lab = row[label_col].strip()
            if not lab:
                raise data_error("E612", f"{kind}: the label `{cfg.label}` of {path} is empty at line {line}")
            labels.append(lab)
    except csv.Error as exc:
        raise data_error("E614", f"{kind}: {path} line {line} is not valid CSV: {exc}") from None
    if not rows:
        raise data_error("E613", f"{kind}: {path} has a header but no rows of data")
    x = np.asarray(rows, dtype=np.float32)
    if not np.all(np.isfinite(x)):
        r, bad = (int(i) for i in np.argwhere(~np.isfinite(x))[0])
        raise data_error("E612", f"{kind}: feature column `{features[bad]}` of {path} holds NaN or infinite values "
                         f"(first at line {lines[r]})", hint="fill in or drop those rows; training on them gives NaN")
    names: list[str] | None = None
    if cfg.task == "classification":
        y, names = _label_mapping(labels)
        if len(names) < 2:
            raise data_error("E621", f"{kind}: the label `{cfg.label}` of {path} holds one class ({len(labels)} rows); "
                             "classification needs two or more",
                             hint="check the label column (features=[...], label=...) or use task=regression")
        strat: np.ndarray | None = y
    else:
        try:
            y = np.asarray([float(v) for v in labels], dtype=np.float32)[:, None]
        except ValueError:
            bad_label = next(v for v in labels if not _is_number(v))
            bad_line = 2 + labels.index(bad_label)  # counting data rows after the header
            raise data_error("E612", f"{kind}: the label `{cfg.label}` of {path} is not numeric (data row {bad_line - 1}), "
                             f"so it cannot be a regression target",
                             hint="use task=classification for class labels") from None
        if not np.all(np.isfinite(y)):
            r = int(np.argwhere(~np.isfinite(y))[0][0])
            raise data_error("E612", f"{kind}: the label `{cfg.label}` of {path} holds NaN or infinite values "
                             f"(first at line {lines[r]})", hint="fill in or drop those rows")
        strat = None
    parts = split_indices(len(y), cfg.split, _rng(seed), shuffle=cfg.shuffle,
                          labels=strat if cfg.shuffle else None, source=kind)
    train, val, test = _splits([x], y, parts)
    train.x[0], val.x[0], test.x[0], stats = standardize(train.x[0], val.x[0], test.x[0])
    what = f"{len(names)} classes" if names is not None else f"regression on `{cfg.label}`"
    prep = Preprocessing(source="csv", task=cfg.task, classes=names, columns=header, features=features,
                         label=cfg.label, mean=[float(v) for v in stats["mean"]], std=[float(v) for v in stats["std"]])
    return DataBundle(train, val, test, task=cfg.task, num_classes=len(names) if names is not None else None,
                      description=f"{path.name}: {len(y)} rows × {len(features)} features, {what} (standardized)",
                      source=str(path), name=path.name, classes=names, normalization=stats, prep=prep)


def _is_number(v: str) -> bool:
    try:
        float(v)
        return True
    except ValueError:
        return False


# ---- npz --------------------------------------------------------------------------------------


def load_npz(cfg: Npz, seed: int, base_dir: Path) -> DataBundle:
    path = resolve(cfg.path, base_dir)
    kind = f"npz({cfg.path!r})"
    if not path.is_file():
        raise _missing(kind, path, "file")
    try:
        data = np.load(path, allow_pickle=False)
    except ValueError as exc:
        raise data_error("E614", f"{kind}: {path} cannot be read without pickle ({exc})",
                         hint="save plain numeric arrays with np.savez") from None
    except Exception as exc:  # zipfile.BadZipFile, OSError, EOFError…
        raise data_error("E614", f"{kind}: {path} is not a readable .npz file ({type(exc).__name__})",
                         hint="write it with np.savez(path, x=..., y=...)") from None
    if isinstance(data, np.ndarray):
        raise data_error("E614", f"{kind}: {path} holds a single array (.npy), not named arrays",
                         hint="write it with np.savez(path, x=..., y=...)")
    with data:
        keys = list(data.files)
        arrays = {}
        for role, key in (("x", cfg.x), ("y", cfg.y)):
            if key not in keys:
                raise data_error("E615", f"{kind}: {path} has no array `{key}` (for {role}); it holds: "
                                 f"{', '.join(keys) or 'nothing'}",
                                 hint=did_you_mean(key, keys) or f"write npz({cfg.path!r}, {role}=\"<name>\")")
            try:
                arrays[role] = data[key]
            except ValueError as exc:
                raise data_error("E614", f"{kind}: array `{key}` of {path} cannot be read without pickle ({exc})") from None
    x, y = arrays["x"], arrays["y"]
    if x.ndim == 0 or y.ndim == 0:
        raise data_error("E616", f"{kind}: `{cfg.x if x.ndim == 0 else cfg.y}` of {path} is a scalar, not one value per example")
    if len(x) != len(y):
        raise data_error("E616", f"{kind}: {path} has {len(x)} examples in `{cfg.x}` but {len(y)} in `{cfg.y}`",
                         hint="x and y need one entry per example, in the same order")
    if len(x) == 0:
        raise data_error("E613", f"{kind}: {path} has no examples")
    x = _numeric(x, kind, cfg.x, path)
    y = _numeric(y, kind, cfg.y, path)
    if x.ndim == 1:
        x = x[:, None]
    strat = None
    if y.dtype.kind == "f":
        task, k = "regression", None
        if y.ndim == 1:
            y = y[:, None]
    else:
        if y.min() < 0:
            raise data_error("E612", f"{kind}: the labels `{cfg.y}` of {path} include {int(y.min())}; class labels are 0..k-1",
                             hint="store float targets for regression")
        k = int(y.max()) + 1
        if y.ndim == 1 and len(np.unique(y)) < 2:
            raise data_error("E621", f"{kind}: the labels `{cfg.y}` of {path} hold one class ({int(y[0])}); "
                             "classification needs two or more",
                             hint="store float targets for regression")
        task = "classification" if y.ndim == 1 else "sequence_labeling"
        strat = y if y.ndim == 1 else None
    parts = split_indices(len(x), cfg.split, _rng(seed), shuffle=cfg.shuffle,
                          labels=strat if cfg.shuffle else None, source=kind)
    train, val, test = _splits([x], y, parts)
    shape = "×".join(str(d) for d in x.shape[1:])
    what = f"{k} classes" if task == "classification" else f"{k} tags" if k else f"targets of shape {list(y.shape[1:])}"
    return DataBundle(train, val, test, task=task, num_classes=k,  # type: ignore[arg-type]
                      description=f"{path.name}: {len(x)} examples of {x.dtype} {shape}, {what}",
                      source=str(path), name=path.name,
                      prep=Preprocessing(source="npz", task=task, arrays=[cfg.x, cfg.y]))


def _numeric(a: np.ndarray, kind: str, key: str, path: Path) -> np.ndarray:
    if a.dtype.kind == "f":
        if not np.all(np.isfinite(a)):
            row = int(np.argwhere(~np.isfinite(a))[0][0])
            raise data_error("E612", f"{kind}: array `{key}` of {path} holds NaN or infinite values "
                             f"(first in example {row}, counting from 0)",
                             hint="fill in or drop those examples; training on them gives NaN")
        return a.astype(np.float32)
    if a.dtype.kind in "iub":
        return a.astype(np.int64)
    raise data_error("E612", f"{kind}: array `{key}` of {path} is {a.dtype}, not numbers",
                     hint="store numbers (floats for features, integers for class labels)")


# ---- folders of images or texts ----------------------------------------------------------------


def _class_folders(kind: str, root: Path, suffixes: set[str], what: str) -> tuple[list[str], list[list[Path]]]:
    if not root.is_dir():
        raise _missing(kind, root, "folder")
    subs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not subs:
        loose = [p for p in root.iterdir() if p.suffix.lower() in suffixes]
        raise data_error("E613", f"{kind}: {root} has no class subfolders" + (f" ({len(loose)} {what} lie directly in it)" if loose else ""),
                         hint=f"put the {what} of each class in its own subfolder: {root.name}/cat/…, {root.name}/dog/…")
    files = []
    for s in subs:
        found = sorted(p for p in s.rglob("*") if p.is_file() and p.suffix.lower() in suffixes and not p.name.startswith("."))
        if not found:
            raise data_error("E613", f"{kind}: class folder {s} holds no {what} ({', '.join(sorted(suffixes))})")
        files.append(found)
    if len(subs) < 2:
        raise data_error("E613", f"{kind}: {root} has only one class folder (`{subs[0].name}`); classification needs two or more")
    return [s.name for s in subs], files


def load_images(cfg: Images, seed: int, base_dir: Path) -> DataBundle:
    root = resolve(cfg.path, base_dir)
    kind = f"images({cfg.path!r})"
    h, w = cfg.size
    if h < 1 or w < 1:
        raise data_error("E619", f"{kind}: size={list(cfg.size)} must be positive")
    names, files = _class_folders(kind, root, IMAGE_SUFFIXES, "images")
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:
        raise data_error("E620", f"{kind} needs the package `Pillow`, which is not installed", hint="pip install Pillow") from None
    mode, channels = ("L", 1) if cfg.grayscale else ("RGB", 3)
    images, labels = [], []
    for label, group in enumerate(files):
        for p in group:
            try:
                with Image.open(p) as im:
                    arr = np.asarray(im.convert(mode).resize((w, h), Image.BILINEAR), dtype=np.float32) / 255.0
            except (UnidentifiedImageError, OSError, ValueError) as exc:
                raise data_error("E614", f"{kind}: cannot read image {p} ({type(exc).__name__})",
                                 hint="remove or replace the file") from None
            images.append(arr.reshape(h, w, channels).transpose(2, 0, 1))
            labels.append(label)
    x = np.stack(images).astype(np.float32)
    y = np.asarray(labels, dtype=np.int64)
    parts = split_indices(len(y), cfg.split, _rng(seed), shuffle=cfg.shuffle, labels=y if cfg.shuffle else None, source=kind)
    train, val, test = _splits([x], y, parts)
    return DataBundle(train, val, test, task="classification", num_classes=len(names),
                      description=f"{root.name}: {len(y)} images {h}×{w}×{channels}, {len(names)} classes ({', '.join(names)})",
                      source=str(root), name=root.name, classes=names,
                      prep=Preprocessing(source="images", task="classification", classes=names, size=[h, w],
                                         grayscale=cfg.grayscale, channels=channels, scale=1 / 255.0))


def build_vocab(docs: list[list[str]], size: int) -> list[str]:
    """The `size - 2` most frequent words (ties alphabetically) after <pad> = 0 and <unk> = 1."""
    counts = Counter(w for d in docs for w in d)
    words = sorted(counts, key=lambda w: (-counts[w], w))[: max(0, size - 2)]
    return ["<pad>", "<unk>", *words]


def load_texts(cfg: Texts, seed: int, base_dir: Path) -> DataBundle:
    root = resolve(cfg.path, base_dir)
    kind = f"texts({cfg.path!r})"
    if cfg.max_len < 1:
        raise data_error("E619", f"{kind}: max_len must be at least 1; got {cfg.max_len}")
    if cfg.vocab < 3:
        raise data_error("E619", f"{kind}: vocab must be at least 3 (padding, unknown and one word); got {cfg.vocab}")
    names, files = _class_folders(kind, root, {".txt"}, "text files")
    docs, labels = [], []
    for label, group in enumerate(files):
        for p in group:
            try:
                docs.append(tokenize(p.read_text(encoding="utf-8")))
            except UnicodeDecodeError:
                raise data_error("E614", f"{kind}: {p} is not UTF-8 text") from None
            except OSError as exc:
                raise data_error("E614", f"{kind}: cannot read {p}: {exc.strerror}") from None
            labels.append(label)
    y = np.asarray(labels, dtype=np.int64)
    tr, va, te = split_indices(len(y), cfg.split, _rng(seed), shuffle=cfg.shuffle,
                               labels=y if cfg.shuffle else None, source=kind)
    vocab = build_vocab([docs[i] for i in tr], cfg.vocab)  # from the training texts only
    x = encode(docs, vocab, cfg.max_len)
    train, val, test = _splits([x], y, (tr, va, te))
    return DataBundle(train, val, test, task="classification", num_classes=len(names),
                      description=(f"{root.name}: {len(y)} texts, {len(names)} classes ({', '.join(names)}), "
                                   f"{len(vocab)} token ids (0 = padding, 1 = unknown), {cfg.max_len} tokens each"),
                      source=str(root), name=root.name, classes=names, vocab=vocab,
                      prep=Preprocessing(source="texts", task="classification", classes=names, vocab=vocab,
                                         max_len=cfg.max_len, tokenizer="lower-cased words and numbers"))
