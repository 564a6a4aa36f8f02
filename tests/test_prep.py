"""Preprocessing that travels with a run (dlspec/data/prep.py): recorded from the training split,
applied to raw rows, images and texts exactly as in training, and bad inputs refused by name."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dlspec.data import load_data
from dlspec.data.prep import Preprocessing, read_inputs
from dlspec.errors import DlspecError
from dlspec.ir.training import Builtin, Csv, Images, Texts
from dlspec.train.report import class_report, render

HEADER = "height,weight,colour,species"


def write_csv(path, n=60, header=HEADER, drop=None):
    rng = np.random.default_rng(0)
    lines = [header]
    for i in range(n):
        sp = ["setosa", "versicolor", "virginica"][i % 3]
        row = f"{rng.normal(10 + i % 3, 1):.3f},{rng.normal(5, 2):.3f},red,{sp}"
        if sp != drop:
            lines.append(row)
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def csv_bundle(tmp_path):
    write_csv(tmp_path / "f.csv")
    return load_data(Csv(path="f.csv", features=("weight", "height"), label="species"), 0, tmp_path)


def test_csv_record_holds_columns_statistics_and_classes(csv_bundle):
    prep = csv_bundle.prep
    assert prep.source == "csv" and prep.features == ["weight", "height"] and prep.label == "species"
    assert prep.columns == HEADER.split(",") and prep.classes == ["setosa", "versicolor", "virginica"]
    np.testing.assert_allclose(prep.mean, csv_bundle.normalization["mean"], rtol=1e-6)
    back = Preprocessing.from_json(json.loads(json.dumps(prep.to_json())))
    assert back == prep


def test_the_training_rows_read_again_give_the_training_arrays(csv_bundle, tmp_path):
    """Every row of the training file through the record: the same standardized features and the
    same class ids as the loader gave (the splits together)."""
    batch = read_inputs(csv_bundle.prep, tmp_path / "f.csv")
    xs = np.concatenate([s.x[0] for s in csv_bundle.splits.values()])
    ys = np.concatenate([s.y for s in csv_bundle.splits.values()])
    got = {tuple(np.round(r, 4)): int(c) for r, c in zip(batch.x[0], batch.y, strict=True)}
    want = {tuple(np.round(r, 4)): int(c) for r, c in zip(xs, ys, strict=True)}
    assert got == want and len(batch.names) == 60 and batch.names[0] == "line 2"


def test_a_subset_keeps_the_training_statistics_and_class_ids(csv_bundle, tmp_path):
    """The bug this guards against: a file without one class got its own statistics and its own
    class indices. Here the remaining rows keep their ids (versicolor 1, virginica 2)."""
    write_csv(tmp_path / "sub.csv", drop="setosa")
    sub = read_inputs(csv_bundle.prep, tmp_path / "sub.csv")
    full = read_inputs(csv_bundle.prep, tmp_path / "f.csv")
    keep = full.y != 0
    np.testing.assert_array_equal(sub.y, full.y[keep])
    np.testing.assert_allclose(sub.x[0], full.x[0][keep])
    assert set(sub.y.tolist()) == {1, 2}


def test_rows_without_the_label_column_and_in_another_column_order(csv_bundle, tmp_path):
    (tmp_path / "raw.csv").write_text("height,weight\n10.0,5.0\n12.0,4.0\n")
    batch = read_inputs(csv_bundle.prep, tmp_path / "raw.csv")
    assert batch.y is None
    mean, std = np.asarray(csv_bundle.prep.mean), np.asarray(csv_bundle.prep.std)
    np.testing.assert_allclose(batch.x[0], (np.array([[5.0, 10.0], [4.0, 12.0]]) - mean) / std, rtol=1e-5)


@pytest.mark.parametrize("text, code, words", [
    ("height,weight,size\n1,2,3\n", "E606", ["column 3", "height, weight, colour, species"]),
    ("height\n1\n", "E607", ["`weight`"]),
    ("height,weight,species\n1,2,tulip\n", "E608", ["line 2", "setosa, versicolor, virginica"]),
    ("height,weight\n1,\n", "E609", ["line 2", "`weight` is empty"]),
    ("height,weight\n1,abc\n", "E609", ["line 2", "not a number"]),
])
def test_bad_rows_are_named_errors(csv_bundle, tmp_path, text, code, words):
    (tmp_path / "bad.csv").write_text(text)
    with pytest.raises(DlspecError) as info:
        read_inputs(csv_bundle.prep, tmp_path / "bad.csv")
    message = info.value.message + " " + (info.value.hint or "")
    assert info.value.code == code and str(tmp_path / "bad.csv") in message
    assert all(w in message for w in words), message
    assert "tulip" not in message and "abc" not in message  # a data file's text is never quoted


def test_evaluating_needs_the_labels(csv_bundle, tmp_path):
    (tmp_path / "raw.csv").write_text("height,weight\n10.0,5.0\n")
    with pytest.raises(DlspecError) as info:
        read_inputs(csv_bundle.prep, tmp_path / "raw.csv", need_labels=True)
    assert info.value.code == "E607" and "label column `species`" in info.value.message


def test_numeric_labels_match_by_value(tmp_path):
    (tmp_path / "n.csv").write_text("a,b,y\n" + "".join(f"{i},{i % 5},{i % 2}\n" for i in range(30)))
    prep = load_data(Csv(path="n.csv", label="y"), 0, tmp_path).prep
    (tmp_path / "m.csv").write_text("a,b,y\n1,1,1.0\n2,2,0\n")
    assert read_inputs(prep, tmp_path / "m.csv").y.tolist() == [1, 0]


def test_images_and_texts_are_read_like_training(tmp_path):
    from PIL import Image

    for c, value in (("dark", 20), ("light", 230)):
        (tmp_path / "img" / c).mkdir(parents=True)
        for i in range(6):
            Image.new("RGB", (12, 10), (value + i, value, value)).save(tmp_path / "img" / c / f"{i}.png")
    bundle = load_data(Images(path="img", size=(8, 8), grayscale=True, split=(0.5, 0.25, 0.25)), 0, tmp_path)
    prep = bundle.prep
    assert (prep.size, prep.channels, prep.classes) == ([8, 8], 1, ["dark", "light"])
    one = read_inputs(prep, tmp_path / "img" / "light" / "3.png")
    assert one.x[0].shape == (1, 1, 8, 8) and one.names == ["3.png"]
    labelled = read_inputs(prep, tmp_path / "img", need_labels=True)
    assert labelled.y.tolist() == [0] * 6 + [1] * 6
    xs = np.concatenate([s.x[0] for s in bundle.splits.values()])
    assert sorted(np.round(labelled.x[0].mean(axis=(1, 2, 3)), 5)) == sorted(np.round(xs.mean(axis=(1, 2, 3)), 5))
    (tmp_path / "img" / "other").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "img" / "other" / "x.png")
    with pytest.raises(DlspecError) as info:
        read_inputs(prep, tmp_path / "img", need_labels=True)
    assert info.value.code == "E608" and "`other`" in info.value.message

    for c, words in (("pos", "good great fine"), ("neg", "bad awful poor")):
        (tmp_path / "txt" / c).mkdir(parents=True)
        for i in range(6):
            (tmp_path / "txt" / c / f"{i}.txt").write_text(f"{words} movie {i}")
    tb = load_data(Texts(path="txt", max_len=6, vocab=50, split=(0.5, 0.25, 0.25)), 0, tmp_path)
    (tmp_path / "new.txt").write_text("Good GREAT unheardof")
    batch = read_inputs(tb.prep, tmp_path / "new.txt")
    vocab = tb.prep.vocab
    assert batch.x[0].tolist() == [[vocab.index("good"), vocab.index("great"), 1, 0, 0, 0]]


def test_builtin_records_statistics_and_class_names():
    prep = load_data(Builtin(name="iris"), 0).prep
    assert prep.source == "builtin" and prep.classes == ["setosa", "versicolor", "virginica"]
    assert len(prep.mean) == 4 and all(s > 0 for s in prep.std)


def test_a_damaged_record_is_refused():
    with pytest.raises(DlspecError) as info:
        Preprocessing.from_json({"source": "csv", "task": "classification", "features": ["a"], "columns": ["a"],
                                 "label": "y", "mean": [0.0], "std": [0.0]})
    assert info.value.code == "E622" and "std" in info.value.message
    with pytest.raises(DlspecError) as info:
        Preprocessing.from_json({"source": "csv", "task": "classification", "surprise": 1})
    assert info.value.code == "E622" and "surprise" in info.value.message


def test_class_report_counts_every_class_the_run_knows():
    logits = np.array([[5, 0, 0], [0, 5, 0], [0, 5, 0], [0, 0, 5]], dtype=np.float32)
    y = np.array([1, 1, 2, 2])
    rep = class_report(logits, y, ["a", "b", "c"])
    assert rep["confusion"] == [[0, 0, 0], [1, 1, 0], [0, 1, 1]]
    rows = {r["class"]: r for r in rep["per_class"]}
    assert rows["a"]["support"] == 0 and rows["b"]["precision"] == pytest.approx(0.5)
    assert rows["c"]["recall"] == pytest.approx(0.5) and rep["accuracy"] == pytest.approx(0.5)
    assert rep["macro"]["recall"] == pytest.approx(0.5)  # over the classes present (b, c)
    text = render(rep)
    assert "confusion matrix" in text and "weighted avg" in text
