"""Built-in data sets: scikit-learn's and statsmodels' bundled data, and generated tasks.

Nothing downloads. Shapes are the contract in `dlspec.ir.training.Builtin`'s docstring.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..errors import did_you_mean
from ..ir.training import Builtin
from .core import DataBundle, Split, data_error, split_indices, standardize

CLASSIFICATION = ("digits", "digits_multitask", "iris", "wine", "breast_cancer", "sequence", "sentiment")
GENERATED_SIZES = {"sequence": 4000, "sentiment": 4000, "tagging": 4000, "reverse": 4000, "segmentation": 1000}


def _need(module: str, package: str, name: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise data_error("E620", f'builtin("{name}") needs the package `{package}`, which is not installed',
                         hint=f"pip install {package}  (or pip install 'dlspec[torch]')") from None


def _rngs(seed: int) -> tuple[np.random.Generator, np.random.Generator]:
    """Independent streams: one generates data, one shuffles and splits it."""
    return np.random.default_rng([seed, 0]), np.random.default_rng([seed, 1])


def _option_error(name: str, option: str, why: str, hint: str | None = None):
    return data_error("E619", f'builtin("{name}"): `{option}` {why}', hint=hint)


def _check_options(cfg: Builtin) -> None:
    name, given = cfg.name, cfg.model_fields_set
    if cfg.classes is not None and name not in CLASSIFICATION:
        raise _option_error(name, "classes", "only applies to classification data",
                            hint=f"classification built-ins: {', '.join(CLASSIFICATION)}")
    if cfg.per_class is not None:
        if name not in CLASSIFICATION:
            raise _option_error(name, "per_class", "only applies to classification data",
                                hint=f"classification built-ins: {', '.join(CLASSIFICATION)}")
        if cfg.per_class < 1:
            raise _option_error(name, "per_class", f"must be at least 1; got {cfg.per_class}")
    if cfg.size is not None:
        if name not in ("digits", "digits_multitask"):
            raise _option_error(name, "size", "only applies to digits", hint="remove `size=`")
        if cfg.size < 8:
            raise _option_error(name, "size", f"must be at least 8 (the digits are 8×8); got {cfg.size}")
    if name != "sunspots" and ({"window", "horizon"} & given):
        opt = "window" if "window" in given else "horizon"
        raise _option_error(name, opt, 'only applies to builtin("sunspots")', hint=f"remove `{opt}=`")
    if name == "sunspots":
        if cfg.window < 1 or cfg.horizon < 1:
            raise _option_error(name, "window" if cfg.window < 1 else "horizon", "must be at least 1")
        if cfg.samples is not None:
            raise _option_error(name, "samples", "does not apply to a time series", hint="remove `samples=`")
    if cfg.samples is not None and cfg.samples < 3:
        raise _option_error(name, "samples", f"must be at least 3 (one example per split); got {cfg.samples}")
    if cfg.autoencode and name == "reverse":
        raise _option_error(name, "autoencode", "needs data with one input; reverse has two")


# ---- helpers ----------------------------------------------------------------------------------


def resize_bilinear(a: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Bilinear resize of the last two axes (half-pixel centres, like `align_corners=False`)."""

    def coords(n_in: int, n_out: int):
        s = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
        i0 = np.floor(s).astype(np.int64)
        i1 = np.minimum(i0 + 1, n_in - 1)
        return i0, i1, (s - i0).astype(a.dtype)

    y0, y1, wy = coords(a.shape[-2], out_h)
    x0, x1, wx = coords(a.shape[-1], out_w)
    rows = a[..., y0, :] * (1 - wy)[:, None] + a[..., y1, :] * wy[:, None]
    return (rows[..., x0] * (1 - wx) + rows[..., x1] * wx).astype(a.dtype)


def _select_classes(cfg: Builtin, labels: np.ndarray, names: list[str]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Keep the examples of `cfg.classes` (in the order given, relabelled 0..k-1)."""
    present = sorted(int(c) for c in np.unique(labels))
    if cfg.classes is None:
        return np.arange(len(labels)), labels, names
    wanted = [int(c) for c in cfg.classes]
    bad = [c for c in wanted if c not in present]
    if bad:
        raise _option_error(cfg.name, "classes", f"names label(s) {bad} that the data does not have",
                            hint=f"its labels are {present[0]}..{present[-1]}")
    if len(set(wanted)) != len(wanted):
        raise _option_error(cfg.name, "classes", f"lists a label twice: {list(cfg.classes)}")
    if len(wanted) < 2:
        raise _option_error(cfg.name, "classes", "needs at least 2 labels to classify")
    keep = np.flatnonzero(np.isin(labels, wanted))
    relabel = np.full(max(present) + 1, -1, dtype=np.int64)
    relabel[wanted] = np.arange(len(wanted))
    return keep, relabel[labels[keep]], [names[c] for c in wanted]


def _per_class(idx: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """The first `k` of each class among `idx` (kept in order)."""
    seen: dict[int, int] = {}
    keep = []
    for i in idx:
        c = int(labels[i])
        if seen.get(c, 0) < k:
            seen[c] = seen.get(c, 0) + 1
            keep.append(i)
    return np.asarray(keep, dtype=np.int64)


def _subsample(cfg: Builtin, n: int, rng: np.random.Generator) -> np.ndarray:
    if cfg.samples is None or cfg.samples >= n:
        return np.arange(n)
    return np.sort(rng.choice(n, size=cfg.samples, replace=False))


def _splits(xs: list[np.ndarray], y, parts) -> tuple[Split, Split, Split]:
    full = Split(xs, y)
    return tuple(full.take(p) for p in parts)  # type: ignore[return-value]


def _autoencode(bundle: DataBundle, vocab: int | None = None) -> DataBundle:
    for s in bundle.splits.values():
        s.y = s.x[0]
    if bundle.train.x[0].dtype.kind in "iu":
        bundle.task, bundle.num_classes = "sequence_labeling", vocab
    else:
        bundle.task, bundle.num_classes = "reconstruction", None
    bundle.classes = None
    bundle.description += "; autoencoding (target = input)"
    return bundle


# ---- scikit-learn data ------------------------------------------------------------------------


def _classification(cfg: Builtin, seed: int, x: np.ndarray, labels: np.ndarray, names: list[str], *,
                    description: str, source: str, tabular: bool, multitask: bool = False,
                    vocab: int | None = None) -> DataBundle:
    gen, rng = _rngs(seed)
    sub = _subsample(cfg, len(labels), gen)
    if len(sub) < len(labels):
        description += f"; {len(sub)} sampled"
    x, labels = x[sub], labels[sub]
    orig = labels
    keep, labels, names = _select_classes(cfg, labels, names)
    x, orig = x[keep], orig[keep]
    label = f'builtin("{cfg.name}")'
    parts = list(split_indices(len(labels), cfg.split, rng, shuffle=cfg.shuffle,
                               labels=labels if cfg.shuffle else None, source=label))
    if cfg.per_class is not None:
        parts[0] = _per_class(parts[0], labels, cfg.per_class)
    y: Any = {"digit": labels, "parity": (orig % 2).astype(np.int64)} if multitask else labels
    train, val, test = _splits([x], y, parts)
    normalization = None
    if tabular:
        train.x[0], val.x[0], test.x[0], normalization = standardize(train.x[0], val.x[0], test.x[0])
    k = len(names)
    bundle = DataBundle(train, val, test, task="classification",
                        num_classes={"digit": k, "parity": 2} if multitask else k,
                        description=description, source=source, name=cfg.name, classes=names,
                        normalization=normalization)
    if cfg.classes is not None:
        bundle.description += f"; classes {list(cfg.classes)} relabelled 0..{k - 1}"
    if cfg.per_class is not None:
        bundle.description += f"; at most {cfg.per_class} training examples per class"
    return _autoencode(bundle, vocab) if cfg.autoencode else bundle


def _digits(cfg: Builtin, seed: int) -> DataBundle:
    datasets = _need("sklearn.datasets", "scikit-learn", cfg.name)
    d = datasets.load_digits()
    x = (d.images.astype(np.float32) / 16.0)[:, None, :, :]
    side = 8
    if cfg.size is not None and cfg.size != 8:
        side = cfg.size
        x = np.clip(resize_bilinear(x, side, side), 0.0, 1.0)
    labels = d.target.astype(np.int64)
    desc = f"digits: {len(labels)} images {side}×{side}, 10 classes (scikit-learn)"
    if cfg.name == "digits_multitask":
        desc = f"digits_multitask: {len(labels)} images {side}×{side} → digit (10 classes) and parity (2) (scikit-learn)"
    return _classification(cfg, seed, x, labels, [str(i) for i in range(10)], description=desc,
                           source="scikit-learn load_digits", tabular=False,
                           multitask=cfg.name == "digits_multitask")


def _tabular(cfg: Builtin, seed: int) -> DataBundle:
    datasets = _need("sklearn.datasets", "scikit-learn", cfg.name)
    d = getattr(datasets, f"load_{cfg.name}")()
    x = d.data.astype(np.float32)
    labels = d.target.astype(np.int64)
    names = [str(n) for n in d.target_names]
    desc = f"{cfg.name}: {len(labels)} examples × {x.shape[1]} features, {len(names)} classes (scikit-learn, standardized)"
    return _classification(cfg, seed, x, labels, names, description=desc,
                           source=f"scikit-learn load_{cfg.name}", tabular=True)


# ---- sunspots ---------------------------------------------------------------------------------


def _sunspots(cfg: Builtin, seed: int) -> DataBundle:
    sun = _need("statsmodels.datasets.sunspots", "statsmodels", cfg.name)
    series = sun.load_pandas().data["SUNACTIVITY"].to_numpy(dtype=np.float64)
    w, h = cfg.window, cfg.horizon
    n = len(series) - w - h + 1
    label = 'builtin("sunspots")'
    if n < 3:
        raise _option_error("sunspots", "window", f"+ horizon ({w} + {h}) leaves fewer than 3 windows of the "
                            f"{len(series)}-year series", hint="use a shorter window")
    # Windows in time order; the splits are consecutive runs, the test split the end of the series.
    tr, va, te = split_indices(n, cfg.split, np.random.default_rng(seed), shuffle=False, source=label)
    # Drop the last horizon-1 windows of train and val: their targets reach into the next split.
    tr, va = tr[: len(tr) - (h - 1)], va[: len(va) - (h - 1)]
    if len(tr) < 1 or len(va) < 1:
        raise data_error("E618", f"data {label}: with horizon={h} the train or val split has no window left",
                         hint="use a shorter horizon or larger train/val fractions")
    last_train_value = int(tr[-1]) + w + h  # values the training windows see (inputs and targets)
    mean, std = series[:last_train_value].mean(), series[:last_train_value].std() or 1.0
    z = ((series - mean) / std).astype(np.float32)
    starts = np.arange(n)
    xi = starts[:, None] + np.arange(w)[None, :]
    yi = starts[:, None] + w + np.arange(h)[None, :]
    x, y = z[xi][:, :, None], z[yi]
    parts = [tr, va, te]
    train, val, test = _splits([x], y, parts)
    years = sun.load_pandas().data["YEAR"].to_numpy().astype(int)
    first_test_year = years[int(te[0]) + w]
    bundle = DataBundle(
        train, val, test, task="regression", num_classes=None,
        description=(f"sunspots: yearly sunspot numbers {years[0]}–{years[-1]}, windows of {w} years → next {h}; "
                     f"{n} windows, split in time order (test: targets from {first_test_year}) (statsmodels)"),
        source="statsmodels sunspots", name="sunspots",
        normalization={"mean": np.float32(mean), "std": np.float32(std)},
    )
    return _autoencode(bundle) if cfg.autoencode else bundle


# ---- generated tasks --------------------------------------------------------------------------


def _balanced_labels(n: int, rng: np.random.Generator) -> np.ndarray:
    return rng.permutation(np.arange(n) % 2).astype(np.int64)


def _sequence(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Tokens 0..9, length 24; label 1 when token 1 occurs more often than token 2 (never equally)."""
    tok = rng.integers(0, 10, size=(n, 24), dtype=np.int64)
    want = _balanced_labels(n, rng)
    c1, c2 = (tok == 1).sum(1), (tok == 2).sum(1)
    for r in np.flatnonzero(c1 == c2):  # break ties by adding one more 1
        free = np.flatnonzero((tok[r] != 1) & (tok[r] != 2))
        pos = rng.choice(free) if len(free) else np.flatnonzero(tok[r] == 2)[0]
        tok[r, pos] = 1
    c1, c2 = (tok == 1).sum(1), (tok == 2).sum(1)
    flip = (c1 > c2).astype(np.int64) != want
    ones, twos = (tok == 1) & flip[:, None], (tok == 2) & flip[:, None]
    tok[ones], tok[twos] = 2, 1  # swap the roles of 1 and 2 where the label must flip
    return tok, want


def _sentiment(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Reviews of 12..32 tokens, padded with 0: positive words 2..9, negative 10..17, neutral 18..49;
    label 1 when positive words outnumber negative ones (never equally)."""
    length = 32
    kind = rng.choice(3, size=(n, length), p=[0.6, 0.2, 0.2])  # neutral, positive, negative
    tok = np.where(kind == 0, rng.integers(18, 50, size=(n, length)),
                   np.where(kind == 1, rng.integers(2, 10, size=(n, length)), rng.integers(10, 18, size=(n, length))))
    lengths = rng.integers(12, length + 1, size=n)
    tok[np.arange(length)[None, :] >= lengths[:, None]] = 0
    tok = tok.astype(np.int64)
    want = _balanced_labels(n, rng)

    def counts():
        return ((tok >= 2) & (tok <= 9)).sum(1), ((tok >= 10) & (tok <= 17)).sum(1)

    pos, neg = counts()
    for r in np.flatnonzero(pos == neg):
        free = np.flatnonzero(tok[r] >= 18)
        at = rng.choice(free) if len(free) else np.flatnonzero((tok[r] >= 10) & (tok[r] <= 17))[0]
        tok[r, at] = rng.integers(2, 10)
    pos, neg = counts()
    flip = ((pos > neg).astype(np.int64) != want)[:, None]
    is_pos, is_neg = flip & (tok >= 2) & (tok <= 9), flip & (tok >= 10) & (tok <= 17)
    tok[is_pos] += 8
    tok[is_neg] -= 8
    return tok, want


def _tagging(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Tokens 0..19, length 20; tag = (token + previous token) mod 3, the token before the first read as 0.
    The current token alone predicts the tag no better than chance: a model must remember the previous one."""
    tok = rng.integers(0, 20, size=(n, 20), dtype=np.int64)
    prev = np.concatenate([np.zeros((n, 1), dtype=np.int64), tok[:, :-1]], axis=1)
    return tok, (tok + prev) % 3


def _reverse(n: int, rng: np.random.Generator) -> tuple[list[np.ndarray], np.ndarray]:
    """Sources of 10 tokens in 2..11; the target is the source reversed; the decoder input is the target
    shifted right after BOS = 1 (teacher forcing). Token 0 is padding (unused here)."""
    src = rng.integers(2, 12, size=(n, 10), dtype=np.int64)
    target = src[:, ::-1].copy()
    dec = np.concatenate([np.ones((n, 1), dtype=np.int64), target[:, :-1]], axis=1)
    return [src, dec], target


def _segmentation(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """32×32 images with 1–3 circles or rectangles brighter than a sloped background, plus noise."""
    side = 32
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32)
    images = np.empty((n, 1, side, side), dtype=np.float32)
    masks = np.zeros((n, 1, side, side), dtype=np.float32)
    for i in range(n):
        mask = np.zeros((side, side), dtype=bool)
        for _ in range(rng.integers(1, 4)):
            if rng.random() < 0.5:
                cy, cx, r = rng.uniform(5, 27), rng.uniform(5, 27), rng.uniform(3, 8)
                mask |= (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
            else:
                y0, x0 = rng.integers(0, 24, size=2)
                h, w = rng.integers(4, 13, size=2)
                mask[y0:y0 + h, x0:x0 + w] = True
        base = rng.uniform(0.1, 0.4)
        gy, gx = rng.uniform(-0.2, 0.2, size=2)
        background = base + gy * (yy / (side - 1) - 0.5) + gx * (xx / (side - 1) - 0.5)
        img = background + mask * rng.uniform(0.25, 0.45) + rng.normal(0, 0.1, size=(side, side))
        images[i, 0] = np.clip(img, 0.0, 1.0)
        masks[i, 0] = mask
    return images, masks


def _generated(cfg: Builtin, seed: int) -> DataBundle:
    gen, rng = _rngs(seed)
    n = cfg.samples or GENERATED_SIZES[cfg.name]
    name = cfg.name
    label = f'builtin("{name}")'
    if name in ("sequence", "sentiment"):
        tok, labels = (_sequence if name == "sequence" else _sentiment)(n, gen)
        if name == "sequence":
            desc = f"sequence: {n} sequences of 24 tokens in 0..9 → 1 if token 1 outnumbers token 2 (generated)"
            vocab = 10
        else:
            desc = (f"sentiment: {n} reviews of 12–32 tokens in 0..49 (0 = padding) → 1 if positive words (2..9) "
                    f"outnumber negative words (10..17) (generated)")
            vocab = 50
        return _classification(cfg, seed, tok, labels, ["negative", "positive"] if name == "sentiment" else ["0", "1"],
                               description=desc, source=f"generated {name} task", tabular=False, vocab=vocab)
    if name == "tagging":
        tok, tags = _tagging(n, gen)
        xs, y, task, k, vocab = [tok], tags, "sequence_labeling", 3, 20
        desc = f"tagging: {n} sequences of 20 tokens in 0..19 → a tag 0..2 per token from it and the token before (generated)"
        names = ["x"]
    elif name == "reverse":
        xs, y = _reverse(n, gen)
        task, k, vocab = "sequence_labeling", 12, 12
        desc = f"reverse: {n} sequences of 10 tokens in 2..11 (1 = BOS) → the sequence reversed (generated)"
        names = ["source", "decoder input"]
    else:
        img, mask = _segmentation(n, gen)
        xs, y, task, k, vocab = [img], mask, "segmentation", None, None
        desc = f"segmentation: {n} noisy 32×32 images of circles and rectangles → binary masks (generated)"
        names = ["x"]
    parts = split_indices(n, cfg.split, rng, shuffle=cfg.shuffle, source=label)
    train, val, test = _splits(xs, y, parts)
    bundle = DataBundle(train, val, test, task=task, num_classes=k, description=desc,  # type: ignore[arg-type]
                        source=f"generated {name} task", name=name, input_names=names)
    return _autoencode(bundle, vocab) if cfg.autoencode else bundle


LOADERS: dict[str, Callable[[Builtin, int], DataBundle]] = {
    "digits": _digits,
    "digits_multitask": _digits,
    "iris": _tabular,
    "wine": _tabular,
    "breast_cancer": _tabular,
    "sunspots": _sunspots,
    "sequence": _generated,
    "sentiment": _generated,
    "tagging": _generated,
    "reverse": _generated,
    "segmentation": _generated,
}


def load_builtin(cfg: Builtin, seed: int) -> DataBundle:
    if cfg.name not in LOADERS:  # the config's Literal normally stops this earlier
        raise data_error("E619", f"unknown built-in data set `{cfg.name}`",
                         hint=did_you_mean(cfg.name, LOADERS) or f"one of {', '.join(LOADERS)}")
    _check_options(cfg)
    from .prep import builtin_prep

    bundle = LOADERS[cfg.name](cfg, seed)
    bundle.prep = builtin_prep(cfg, bundle)
    return bundle
