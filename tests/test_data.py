"""The data layer: built-in shapes, seeded splits, file loaders, every error path, and the model check."""

from __future__ import annotations

import numpy as np
import pytest

from dlspec.data import check_against_model, load_data, split_indices
from dlspec.errors import DlspecError
from dlspec.ir.training import Builtin, Csv, Images, Npz, Texts
from dlspec.program import compile_source
from dlspec.source import SourceFile


def builtin(name: str, seed: int = 0, **kw):
    return load_data(Builtin(name=name, **kw), seed, ".")


def graph(text: str, name: str = "M"):
    return compile_source(SourceFile("t.dls", text)).models[name]


def raises(code: str, fn, *fragments: str) -> DlspecError:
    with pytest.raises(DlspecError) as info:
        fn()
    err = info.value
    assert err.code == code, err
    for f in fragments:
        assert f in err.message, (f, err.message)
    return err


def all_rows(bundle):
    return np.concatenate([s.x[0].reshape(len(s), -1) for s in bundle.splits.values()])


# ---- built-in shapes ---------------------------------------------------------------------------

SHAPES = {
    # name: (x shapes without N, x dtypes, y shape without N, y dtype, N, task, classes)
    "digits": ([(1, 8, 8)], ["float32"], (), "int64", 1797, "classification", 10),
    "iris": ([(4,)], ["float32"], (), "int64", 150, "classification", 3),
    "wine": ([(13,)], ["float32"], (), "int64", 178, "classification", 3),
    "breast_cancer": ([(30,)], ["float32"], (), "int64", 569, "classification", 2),
    "sunspots": ([(24, 1)], ["float32"], (1,), "float32", 285, "regression", None),
    "sequence": ([(24,)], ["int64"], (), "int64", 4000, "classification", 2),
    "sentiment": ([(32,)], ["int64"], (), "int64", 4000, "classification", 2),
    "tagging": ([(20,)], ["int64"], (20,), "int64", 4000, "sequence_labeling", 3),
    "reverse": ([(10,), (10,)], ["int64", "int64"], (10,), "int64", 4000, "sequence_labeling", 12),
    "segmentation": ([(1, 32, 32)], ["float32"], (1, 32, 32), "float32", 1000, "segmentation", None),
}


@pytest.mark.parametrize("name", list(SHAPES))
def test_builtin_shapes(name):
    xshapes, xdtypes, yshape, ydtype, n, task, k = SHAPES[name]
    b = builtin(name)
    assert b.task == task and b.num_classes == k
    assert sum(len(s) for s in b.splits.values()) == n
    for s in b.splits.values():
        assert len(s) > 0
        assert [a.shape[1:] for a in s.x] == xshapes
        assert [str(a.dtype) for a in s.x] == xdtypes
        assert s.y.shape == (len(s), *yshape) and str(s.y.dtype) == ydtype
    assert b.description.startswith(name) and b.source


def test_builtin_value_ranges():
    d = builtin("digits")
    assert 0.0 <= d.train.x[0].min() and d.train.x[0].max() <= 1.0 and d.train.x[0].max() > 0.9
    assert set(np.unique(d.train.y)) == set(range(10))
    seq = builtin("sequence").train.x[0]
    assert seq.min() == 0 and seq.max() == 9
    sent = builtin("sentiment").train.x[0]
    assert sent.min() == 0 and sent.max() == 49
    tag = builtin("tagging")
    assert tag.train.x[0].max() == 19 and set(np.unique(tag.train.y)) == {0, 1, 2}
    seg = builtin("segmentation")
    assert set(np.unique(seg.train.y)) == {0.0, 1.0}
    assert 0.0 <= seg.train.x[0].min() and seg.train.x[0].max() <= 1.0


def test_digits_description():
    assert builtin("digits").description == "digits: 1797 images 8×8, 10 classes (scikit-learn)"


def test_multitask_digits():
    b = builtin("digits_multitask")
    assert b.num_classes == {"digit": 10, "parity": 2}
    for s in b.splits.values():
        assert set(s.y) == {"digit", "parity"}
        np.testing.assert_array_equal(s.y["parity"], s.y["digit"] % 2)


@pytest.mark.parametrize("size", [16, 32])
def test_digits_upsampled(size):
    b = builtin("digits", size=size)
    x = b.train.x[0]
    assert x.shape[1:] == (1, size, size) and x.dtype == np.float32
    assert 0.0 <= x.min() and x.max() <= 1.0
    small = builtin("digits").train.x[0]
    # the same images, only larger: mean intensity is nearly kept
    assert abs(float(x.mean()) - float(small.mean())) < 0.02


def test_tabular_standardized_with_train_statistics():
    b = builtin("wine")
    tr = b.train.x[0]
    np.testing.assert_allclose(tr.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(tr.std(0), 1, atol=1e-4)
    assert not np.allclose(b.test.x[0].mean(0), 0, atol=1e-5)  # test is not re-centred on itself
    assert b.normalization["mean"].shape == (13,)


# ---- generated tasks ---------------------------------------------------------------------------


def test_sequence_labels_follow_the_rule_balanced_no_ties():
    b = builtin("sequence")
    for s in b.splits.values():
        x, y = s.x[0], s.y
        c1, c2 = (x == 1).sum(1), (x == 2).sum(1)
        assert not np.any(c1 == c2)
        np.testing.assert_array_equal(y, (c1 > c2).astype(np.int64))
        assert 0.3 <= y.mean() <= 0.7


def test_sentiment_labels_follow_the_rule_balanced():
    b = builtin("sentiment")
    x, y = b.train.x[0], b.train.y
    pos, neg = ((x >= 2) & (x <= 9)).sum(1), ((x >= 10) & (x <= 17)).sum(1)
    assert not np.any(pos == neg)
    np.testing.assert_array_equal(y, (pos > neg).astype(np.int64))
    assert 0.3 <= y.mean() <= 0.7
    lengths = (x != 0).sum(1)
    assert lengths.min() >= 12 and lengths.min() < lengths.max()
    # padding is only at the end
    assert all(np.all(row[n:] == 0) for row, n in zip(x, lengths, strict=True))


def test_tagging_needs_the_previous_token():
    b = builtin("tagging")
    x, y = b.train.x[0], b.train.y
    prev = np.concatenate([np.zeros((len(x), 1), dtype=np.int64), x[:, :-1]], axis=1)
    np.testing.assert_array_equal(y, (x + prev) % 3)
    # the best guess from the current token alone is near chance
    best = sum(np.bincount(y[x == t], minlength=3).max() for t in range(20)) / y.size
    assert best < 0.45
    for t in range(3):
        assert 0.25 < (y == t).mean() < 0.42


def test_reverse_inputs_and_target():
    b = builtin("reverse")
    src, dec = b.train.x
    y = b.train.y
    np.testing.assert_array_equal(y, src[:, ::-1])
    assert np.all(dec[:, 0] == 1)
    np.testing.assert_array_equal(dec[:, 1:], y[:, :-1])
    assert src.min() == 2 and src.max() == 11
    assert b.input_names == ["source", "decoder input"]


def test_segmentation_masks_are_neither_empty_nor_full():
    y = builtin("segmentation").train.y
    cover = y.mean(axis=(1, 2, 3))
    assert cover.min() > 0 and cover.max() < 0.9
    assert 0.05 < cover.mean() < 0.5


def test_samples_overrides_the_size():
    assert sum(len(s) for s in builtin("tagging", samples=200).splits.values()) == 200
    assert sum(len(s) for s in builtin("digits", samples=300).splits.values()) == 300


# ---- splits ------------------------------------------------------------------------------------


def test_deterministic_given_seed_and_different_across_seeds():
    for name in ("digits", "sequence", "segmentation"):
        a, b, c = builtin(name, seed=3), builtin(name, seed=3), builtin(name, seed=4)
        np.testing.assert_array_equal(a.train.x[0], b.train.x[0])
        np.testing.assert_array_equal(a.test.y, b.test.y)
        assert not np.array_equal(a.train.x[0], c.train.x[0])


def test_split_fractions_three_and_two_values():
    b = builtin("digits", split=(0.6, 0.2, 0.2))
    assert (len(b.train), len(b.val), len(b.test)) == (1079, 359, 359)
    b = builtin("digits", split=(0.8, 0.2))
    assert len(b.test) == 359 and len(b.val) == round(0.08 * 1797) and len(b.train) == 1797 - 359 - 144


def test_no_overlap_between_splits(tmp_path):
    # each example's x is its own id, so the splits must partition the ids
    ids = np.arange(300)
    np.savez(tmp_path / "ids.npz", x=ids.astype(np.float32), y=ids % 3)
    b = load_data(Npz(path="ids.npz"), 5, tmp_path)
    parts = [set(s.x[0][:, 0].astype(int)) for s in b.splits.values()]
    assert sum(len(p) for p in parts) == 300 and set.union(*parts) == set(range(300))
    assert not (parts[0] & parts[1]) and not (parts[0] & parts[2]) and not (parts[1] & parts[2])
    np.testing.assert_array_equal(b.train.y, b.train.x[0][:, 0].astype(int) % 3)  # x and y stay paired
    seq = builtin("reverse")
    train_rows = {r.tobytes() for r in seq.train.x[0]}
    assert sum(r.tobytes() in train_rows for r in seq.test.x[0]) == 0


def test_stratified():
    b = builtin("digits")
    total = np.bincount(np.concatenate([s.y for s in b.splits.values()]), minlength=10) / 1797
    for s in b.splits.values():
        share = np.bincount(s.y, minlength=10) / len(s)
        assert np.abs(share - total).max() < 0.01
    labels = np.array([0] * 90 + [1] * 10)
    tr, va, te = split_indices(100, (0.6, 0.2, 0.2), np.random.default_rng(1), labels=labels)
    assert [int(labels[p].sum()) for p in (tr, va, te)] == [6, 2, 2]


def test_no_shuffle_keeps_order():
    tr, va, te = split_indices(10, (0.6, 0.2, 0.2), np.random.default_rng(0), shuffle=False)
    assert list(tr) == list(range(6)) and list(va) == [6, 7] and list(te) == [8, 9]


def test_sunspots_split_in_time_order():
    from statsmodels.datasets import sunspots

    series = sunspots.load_pandas().data["SUNACTIVITY"].to_numpy()
    b = builtin("sunspots", window=10, horizon=3)
    mean, std = float(b.normalization["mean"]), float(b.normalization["std"])
    assert b.train.x[0].shape[1:] == (10, 1) and b.train.y.shape[1:] == (3,)
    # the last test window ends with the end of the series
    np.testing.assert_allclose(b.test.y[-1] * std + mean, series[-3:], rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(b.train.x[0][0, :, 0] * std + mean, series[:10], rtol=1e-4, atol=1e-3)

    # recover each window's start year: train < val < test, and no target of one split reaches the next
    def starts(s):
        return [_locate(series, s.x[0][i, :, 0] * std + mean) for i in range(len(s))]

    tr, va, te = starts(b.train), starts(b.val), starts(b.test)
    assert tr == sorted(tr) and va == sorted(va) and te == sorted(te)
    assert max(tr) + 10 + 3 <= min(va) + 10 and max(va) + 10 + 3 <= min(te) + 10
    # train statistics only: the training targets are centred near 0, the test ones are not forced to be
    assert abs(float(np.concatenate([b.train.x[0].ravel(), b.train.y.ravel()]).mean())) < 0.1


def _locate(series: np.ndarray, window: np.ndarray) -> int:
    w = len(window)
    errs = [np.abs(series[i:i + w] - window).max() for i in range(len(series) - w + 1)]
    return int(np.argmin(errs))


def test_classes_and_per_class():
    b = builtin("digits", classes=(5, 6, 7, 8, 9), per_class=20)
    assert b.num_classes == 5 and b.classes == ["5", "6", "7", "8", "9"]
    assert list(np.bincount(b.train.y)) == [20] * 5
    full = builtin("digits", classes=(5, 6, 7, 8, 9))
    assert len(b.val) == len(full.val) > 100 and len(b.test) == len(full.test)  # val/test untouched
    assert set(np.unique(b.test.y)) == set(range(5))
    # relabelled in the order given: class 0 is the digit 5
    digits = builtin("digits")
    five = digits.train.x[0][digits.train.y == 5].mean(0)
    zero = full.train.x[0][full.train.y == 0].mean(0)
    assert np.abs(five - zero).max() < 0.1


def test_autoencode():
    b = builtin("digits", autoencode=True)
    assert b.task == "reconstruction" and b.num_classes is None
    for s in b.splits.values():
        np.testing.assert_array_equal(s.y, s.x[0])
    t = builtin("sequence", autoencode=True)
    assert t.task == "sequence_labeling" and t.num_classes == 10


# ---- file loaders ------------------------------------------------------------------------------


def write_csv(path, n=60):
    rng = np.random.default_rng(0)
    lines = ["height,weight,colour,species"]
    for i in range(n):
        sp = ["setosa", "versicolor", "virginica"][i % 3]
        lines.append(f"{rng.normal(10 + i % 3, 1):.3f},{rng.normal(5, 2):.3f},red,{sp}")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_csv_string_labels(tmp_path):
    write_csv(tmp_path / "flowers.csv")
    b = load_data(Csv(path="flowers.csv", features=("height", "weight"), label="species"), 0, tmp_path)
    assert b.task == "classification" and b.num_classes == 3
    assert b.classes == ["setosa", "versicolor", "virginica"]
    assert b.train.x[0].shape[1:] == (2,) and b.train.x[0].dtype == np.float32
    assert b.train.y.dtype == np.int64 and set(np.unique(b.train.y)) == {0, 1, 2}
    np.testing.assert_allclose(b.train.x[0].mean(0), 0, atol=1e-5)
    assert sum(len(s) for s in b.splits.values()) == 60
    assert "flowers.csv" in b.source


def test_csv_regression(tmp_path):
    (tmp_path / "r.csv").write_text("a,b,y\n" + "\n".join(f"{i},{i * 2},{i * 0.5}" for i in range(40)))
    b = load_data(Csv(path="r.csv", label="y", task="regression", split=(0.8, 0.2)), 0, tmp_path)
    assert b.task == "regression" and b.train.y.shape[1:] == (1,) and b.train.y.dtype == np.float32
    assert b.train.x[0].shape[1:] == (2,)


def test_npz(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", feats=rng.normal(size=(50, 3, 4)), labels=np.arange(50) % 4)
    b = load_data(Npz(path="d.npz", x="feats", y="labels"), 0, tmp_path)
    assert b.task == "classification" and b.num_classes == 4
    assert b.train.x[0].dtype == np.float32 and b.train.x[0].shape[1:] == (3, 4)
    np.savez(tmp_path / "r.npz", x=rng.normal(size=(30, 2)), y=rng.normal(size=30))
    r = load_data(Npz(path="r.npz"), 0, tmp_path)
    assert r.task == "regression" and r.train.y.shape[1:] == (1,)


def write_images(root, sizes=((12, 10), (9, 9))):
    from PIL import Image

    rng = np.random.default_rng(0)
    for c, colour in (("cat", 200), ("dog", 40)):
        (root / c).mkdir(parents=True)
        for i in range(10):
            arr = np.clip(rng.normal(colour, 10, size=(*sizes[i % 2], 3)), 0, 255).astype(np.uint8)
            Image.fromarray(arr).save(root / c / f"{i}.{'png' if i % 2 else 'jpg'}")


def test_images(tmp_path):
    write_images(tmp_path / "pets")
    b = load_data(Images(path="pets", size=(8, 6)), 0, tmp_path)
    assert b.classes == ["cat", "dog"] and b.num_classes == 2
    assert b.train.x[0].shape[1:] == (3, 8, 6) and b.train.x[0].dtype == np.float32
    assert 0.0 <= b.train.x[0].min() and b.train.x[0].max() <= 1.0
    cats = b.train.x[0][b.train.y == 0].mean()
    assert cats > 0.6  # bright images are class 0, `cat`
    g = load_data(Images(path="pets", size=(8, 8), grayscale=True), 0, tmp_path)
    assert g.train.x[0].shape[1:] == (1, 8, 8)


def write_texts(root):
    words = {"pos": "good great fine lovely", "neg": "bad awful poor sad"}
    rng = np.random.default_rng(0)
    for c, vocab in words.items():
        (root / c).mkdir(parents=True)
        for i in range(10):
            text = " ".join(rng.choice(vocab.split(), size=6)) + f" Movie id{c}{i}!"
            (root / c / f"{i}.txt").write_text(text)


def test_texts(tmp_path):
    write_texts(tmp_path / "reviews")
    b = load_data(Texts(path="reviews", max_len=12, vocab=50), 0, tmp_path)
    assert b.classes == ["neg", "pos"] and b.num_classes == 2
    x = b.train.x[0]
    assert x.dtype == np.int64 and x.shape[1:] == (12,)
    assert b.vocab[:2] == ["<pad>", "<unk>"] and "movie" in b.vocab
    assert x.max() < len(b.vocab) and np.all(x[:, 8:] == 0)  # 8 tokens each, then padding
    # words seen only in val/test (`id<class><i>` of those files) are unknown
    train_words = {w for row in x for w in row}
    assert 1 in set(b.test.x[0].ravel()) and len(train_words) > 5


# ---- errors ------------------------------------------------------------------------------------


def test_missing_file_and_folder(tmp_path):
    write_csv(tmp_path / "flowers.csv")
    err = raises("E610", lambda: load_data(Csv(path="flower.csv", label="species"), 0, tmp_path), "flower.csv")
    assert "flowers.csv" in (err.hint or "")
    raises("E610", lambda: load_data(Npz(path="nope.npz"), 0, tmp_path), "nope.npz")
    raises("E610", lambda: load_data(Images(path="nope"), 0, tmp_path), "nope")
    raises("E610", lambda: load_data(Texts(path="flowers.csv"), 0, tmp_path), "not a folder")


def test_csv_errors(tmp_path):
    write_csv(tmp_path / "f.csv")
    err = raises("E611", lambda: load_data(Csv(path="f.csv", label="specie"), 0, tmp_path), "specie", "f.csv")
    assert err.hint == "did you mean `species`?"
    raises("E611", lambda: load_data(Csv(path="f.csv", label="species", features=("hight",)), 0, tmp_path), "hight")
    err = raises("E612", lambda: load_data(Csv(path="f.csv", label="species"), 0, tmp_path), "`colour`", "not numeric",
                 "line 2, field 3")
    assert "red" not in err.message  # the cell's text is data: never echoed
    raises("E612", lambda: load_data(Csv(path="f.csv", label="species", features=("height",), task="regression"),
                                     0, tmp_path), "not numeric")
    (tmp_path / "empty.csv").write_text("")
    raises("E613", lambda: load_data(Csv(path="empty.csv", label="y"), 0, tmp_path), "empty")
    (tmp_path / "hole.csv").write_text("a,y\n1,0\n,1\n3,0\n")
    raises("E612", lambda: load_data(Csv(path="hole.csv", label="y"), 0, tmp_path), "`a`", "line 3")


def test_npz_errors(tmp_path):
    np.savez(tmp_path / "d.npz", inputs=np.zeros((5, 2)), targets=np.zeros(4))
    raises("E615", lambda: load_data(Npz(path="d.npz"), 0, tmp_path), "no array `x`", "inputs, targets")
    raises("E616", lambda: load_data(Npz(path="d.npz", x="inputs", y="targets"), 0, tmp_path), "5", "4")
    (tmp_path / "bad.npz").write_text("not a zip")
    raises("E614", lambda: load_data(Npz(path="bad.npz"), 0, tmp_path), "bad.npz")
    np.savez(tmp_path / "obj.npz", x=np.array(["a", "b", "c"]), y=np.arange(3))
    raises("E612", lambda: load_data(Npz(path="obj.npz"), 0, tmp_path), "not numbers")


def test_folder_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    raises("E613", lambda: load_data(Images(path="empty"), 0, tmp_path), "no class subfolders")
    write_images(tmp_path / "pets")
    (tmp_path / "pets" / "cat" / "broken.png").write_bytes(b"not an image")
    raises("E614", lambda: load_data(Images(path="pets"), 0, tmp_path), "broken.png")
    (tmp_path / "txt" / "a").mkdir(parents=True)
    (tmp_path / "txt" / "b").mkdir(parents=True)
    (tmp_path / "txt" / "a" / "1.txt").write_text("hello")
    raises("E613", lambda: load_data(Texts(path="txt"), 0, tmp_path), "holds no text files")


def test_split_errors():
    raises("E617", lambda: builtin("iris", split=(0.7, 0.2, 0.2)), "sum to 1.1")
    raises("E617", lambda: builtin("iris", split=(1.0,)), "2 fractions")
    raises("E617", lambda: builtin("iris", split=(1.0, 0.0)), "greater than 0")
    raises("E618", lambda: builtin("iris", split=(0.996, 0.002, 0.002)), "leaves the val split empty")


def test_builtin_option_errors():
    raises("E619", lambda: builtin("digits", classes=(3, 12)), "[12]")
    raises("E619", lambda: builtin("tagging", classes=(0, 1)), "classification")
    raises("E619", lambda: builtin("iris", size=16), "size")
    raises("E619", lambda: builtin("digits", window=5), "sunspots")
    raises("E619", lambda: builtin("sunspots", window=400), "window")


# ---- data against model ------------------------------------------------------------------------


def test_check_accepts_matching_models():
    check_against_model(builtin("iris"), graph("model M { input x: float32[batch, 4]\n output x -> dense(3) }"))
    check_against_model(builtin("digits"), graph(
        "model M { input image: float32[batch, 1, 8, 8]\n output image -> flatten() -> dense(10) }"))
    check_against_model(builtin("breast_cancer"), graph("model M { input x: float32[batch, 30]\n output x -> dense(1) }"))
    check_against_model(builtin("digits_multitask"), graph(
        "model M { input x: float32[batch, 1, 8, 8]\n h = x -> flatten() -> dense(16)\n"
        " output digit = h -> dense(10)\n output parity = h -> dense(2) }"))
    check_against_model(builtin("sunspots"), graph("model M { input x: float32[batch, 24, 1]\n output x -> flatten() -> dense(1) }"))
    check_against_model(builtin("tagging"), graph(
        "model M { input x: int64[batch, seq]\n output x -> embedding(20, 8) -> dense(3) }"))
    check_against_model(builtin("segmentation"), graph(
        "model M { input x: float32[batch, 1, 32, 32]\n output x -> conv2d(1, kernel=3, padding=same) }"))


def test_check_rejects_shape_mismatch():
    err = raises("E602", lambda: check_against_model(builtin("digits"), graph(
        "model M { input image: float32[batch, 64]\n output image -> dense(10) }")),
        "data digits gives x float32[N, 1, 8, 8] but model input `image` is float32[batch, 64]")
    assert "flatten()" in err.hint and err.first.notes
    raises("E602", lambda: check_against_model(builtin("iris"), graph(
        "model M { input x: float32[batch, 5]\n output x -> dense(3) }")), "float32[N, 4]", "float32[batch, 5]")


def test_check_rejects_dtype_and_input_count():
    err = raises("E603", lambda: check_against_model(builtin("sequence"), graph(
        "model M { input x: float32[batch, 24]\n output x -> dense(2) }")), "int64[N, 24]", "float32[batch, 24]")
    assert "embedding" in err.hint
    raises("E601", lambda: check_against_model(builtin("reverse"), graph(
        "model M { input x: int64[batch, 10]\n output x -> embedding(12, 8) -> dense(12) }")),
        "2 input(s)", "takes 1")


def test_check_rejects_target_mismatches():
    err = raises("E604", lambda: check_against_model(builtin("digits"), graph(
        "model M { input x: float32[batch, 1, 8, 8]\n output x -> flatten() -> dense(5) }")), "10 classes", "float32[batch, 5]")
    assert err.hint == "end the model with dense(10)"
    raises("E604", lambda: check_against_model(builtin("sunspots", horizon=3), graph(
        "model M { input x: float32[batch, 24, 1]\n output x -> flatten() -> dense(1) }")),
        "float32[N, 3]", "float32[batch, 1]")
    raises("E605", lambda: check_against_model(builtin("digits_multitask"), graph(
        "model M { input x: float32[batch, 1, 8, 8]\n output x -> flatten() -> dense(10) }")), "`digit`", "`parity`")
    raises("E605", lambda: check_against_model(builtin("digits"), graph(
        "model M { input x: float32[batch, 1, 8, 8]\n h = x -> flatten()\n output a = h -> dense(10)\n"
        " output b = h -> dense(2) }")), "2 outputs")


def test_check_binds_symbols_and_reports_segmentation_head():
    check_against_model(builtin("reverse"), graph(
        "model M { input src: int64[batch, seq]\n input dec: int64[batch, seq]\n"
        " output (src -> embedding(12, 12)) + (dec -> embedding(12, 12)) }"))
    raises("E604", lambda: check_against_model(builtin("tagging"), graph(
        "model M { input x: int64[batch, seq]\n output x -> embedding(20, 8) -> dense(2) }")), "3 classes")
    err = raises("E604", lambda: check_against_model(builtin("segmentation"), graph(
        "model M { input x: float32[batch, 1, 32, 32]\n output x -> conv2d(2, kernel=1) }")),
        "float32[N, 1, 32, 32]", "float32[batch, 2, 32, 32]")
    assert "conv2d(1, kernel=1)" in err.hint
