"""The data layer's shared pieces: `Split`, `DataBundle`, the split rule, standardization, errors.

Everything here is numpy only, so every trainer (PyTorch, TensorFlow) uses the same arrays.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from ..errors import Diagnostic, DlspecError

Task = Literal["classification", "regression", "segmentation", "sequence_labeling", "reconstruction"]
Target = np.ndarray | dict[str, np.ndarray]

#: the share of the training part kept for validation when `split` gives two fractions
VAL_OF_TRAIN = 0.1


def data_error(code: str, message: str, hint: str | None = None) -> DlspecError:
    return DlspecError(Diagnostic(code=code, message=message, hint=hint))


@dataclass
class Split:
    """One part of a data set: `x` holds one array per model input (in the model's input order),
    `y` the target: an array, or a dict keyed by model output name for multi-output models."""

    x: list[np.ndarray]
    y: Target

    def __len__(self) -> int:
        return int(self.x[0].shape[0]) if self.x else 0

    def take(self, idx: np.ndarray) -> Split:
        """The examples at `idx`, in that order."""
        return Split([a[idx] for a in self.x], take_y(self.y, idx))


@dataclass
class DataBundle:
    """A loaded data set: three splits and what a trainer and an error message need to know."""

    train: Split
    val: Split
    test: Split
    task: Task
    num_classes: int | dict[str, int] | None
    description: str
    source: str
    name: str = "data"
    #: how each data input is called in messages ("x", or "source" / "decoder input")
    input_names: list[str] = field(default_factory=lambda: ["x"])
    #: class names, index = label id (string labels of a CSV, folder names, sklearn target names)
    classes: list[str] | None = None
    #: token id → word for `texts` data (0 = padding, 1 = unknown)
    vocab: list[str] | None = None
    #: train-split statistics used to standardize the inputs, to apply again at prediction time
    normalization: dict[str, np.ndarray] | None = None
    #: what the loader learnt from the training data, saved with a run (`dlspec.data.prep`)
    prep: Any = None

    @property
    def splits(self) -> dict[str, Split]:
        return {"train": self.train, "val": self.val, "test": self.test}


def take_y(y: Target, idx: np.ndarray) -> Target:
    if isinstance(y, dict):
        return {k: v[idx] for k, v in y.items()}
    return y[idx]


def y_length(y: Target) -> int:
    if isinstance(y, dict):
        return int(next(iter(y.values())).shape[0])
    return int(y.shape[0])


# ---- the split rule ---------------------------------------------------------------------------


def split_fractions(split: tuple[float, ...], source: str) -> tuple[float, float, float]:
    """(train, val, test) fractions from a config's `split`; see the package docstring."""
    fr = tuple(float(f) for f in split)
    shown = "[" + ", ".join(f"{f:g}" for f in fr) + "]"
    if len(fr) not in (2, 3):
        raise data_error("E617", f"data {source}: split={shown} needs 2 fractions (train, test) or 3 (train, val, test)",
                         hint="write split=[0.7, 0.15, 0.15] or split=[0.8, 0.2]")
    if any(not np.isfinite(f) or f <= 0 for f in fr):
        raise data_error("E617", f"data {source}: every fraction of split={shown} must be greater than 0",
                         hint="write split=[0.7, 0.15, 0.15] or split=[0.8, 0.2]")
    if abs(sum(fr) - 1.0) > 1e-6:
        raise data_error("E617", f"data {source}: the fractions of split={shown} sum to {sum(fr):g}, not 1",
                         hint="make them add up to 1, e.g. split=[0.7, 0.15, 0.15]")
    if len(fr) == 2:
        train, test = fr
        return train * (1 - VAL_OF_TRAIN), train * VAL_OF_TRAIN, test
    return fr  # type: ignore[return-value]


def _counts(n: int, fr: tuple[float, float, float]) -> tuple[int, int, int]:
    n_test = int(round(fr[2] * n))
    n_val = int(round(fr[1] * n))
    return n - n_val - n_test, n_val, n_test


def _check_sizes(sizes: tuple[int, int, int], n: int, split: tuple[float, ...], source: str) -> None:
    for part, size in zip(("train", "val", "test"), sizes, strict=True):
        if size < 1:
            shown = "[" + ", ".join(f"{float(f):g}" for f in split) + "]"
            raise data_error("E618", f"data {source}: split={shown} of {n} example(s) leaves the {part} split empty",
                             hint="use more data or larger fractions for each split")


def split_indices(
    n: int,
    split: tuple[float, ...],
    rng: np.random.Generator,
    *,
    shuffle: bool = True,
    labels: np.ndarray | None = None,
    source: str = "data",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices of the train, val and test examples among `n`.

    With `shuffle`, examples are drawn at random (from `rng`); with `labels` as well, each class is
    split in the same proportions (stratified). Without `shuffle`, the splits are consecutive runs
    in the original order: train first, test last.
    """
    fr = split_fractions(split, source)
    if not shuffle:
        sizes = _counts(n, fr)
        _check_sizes(sizes, n, split, source)
        a, b = sizes[0], sizes[0] + sizes[1]
        idx = np.arange(n)
        return idx[:a], idx[a:b], idx[b:]
    perm = rng.permutation(n)
    if labels is None:
        sizes = _counts(n, fr)
        _check_sizes(sizes, n, split, source)
        a, b = sizes[0], sizes[0] + sizes[1]
        return perm[:a], perm[a:b], perm[b:]
    # Stratified: list the examples class by class (randomly within a class), then deal the splits
    # along that list in an evenly interleaved pattern with exactly the global counts; each class
    # thus gets its share of every split, within one example.
    sizes = _counts(n, fr)
    _check_sizes(sizes, n, split, source)
    rank = np.empty(n, dtype=np.int64)
    rank[perm] = np.arange(n)
    order = np.lexsort((rank, labels))
    share = np.asarray(sizes, dtype=np.float64) / n
    given = np.zeros(3)
    part = np.empty(n, dtype=np.int64)
    for p in range(n):
        s = int(np.argmax((p + 1) * share - given))
        part[p] = s
        given[s] += 1
    out = []
    for s in range(3):
        idx = order[part == s]
        out.append(idx[np.argsort(rank[idx])])
    return out[0], out[1], out[2]


# ---- standardization --------------------------------------------------------------------------


def standardize(train: np.ndarray, *others: np.ndarray, axis: tuple[int, ...] | int = 0):
    """Standardize with the mean and standard deviation of `train` only (no leakage).

    Returns (train, *others, stats) with stats = {"mean", "std"}; a constant feature keeps std 1.
    """
    mean = train.mean(axis=axis, keepdims=True, dtype=np.float64)
    std = train.std(axis=axis, keepdims=True, dtype=np.float64)
    std = np.where(std < 1e-12, 1.0, std)
    out = [((a - mean) / std).astype(np.float32) for a in (train, *others)]
    stats = {"mean": np.squeeze(mean, axis=axis).astype(np.float32), "std": np.squeeze(std, axis=axis).astype(np.float32)}
    return (*out, stats)


def type_str(a: np.ndarray, batch: str = "N") -> str:
    """`float32[N, 1, 8, 8]`: an array's dtype and shape, the first axis named."""
    return f"{a.dtype}[{', '.join([batch, *(str(d) for d in a.shape[1:])])}]"
