"""No dead ends, and the issue's new-user path: a run folder replaced on request (--overwrite),
never without; --resume with more epochs trains on at the rate an uninterrupted run would have
(both trainers), or is refused (E671, tests/test_faults.py); a CSV run evaluated on a file
without one class agrees with predict on those rows; TensorBoard logs."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from dlspec import predict as predict_
from dlspec.errors import DlspecError
from dlspec.train import session

from .helpers import ROOT

SPEC = '''
model Iris {
    input x: float32[batch, 4]
    output y = x -> dense(8) -> relu() -> dense(3)
}

train Iris {
    data      = csv("train.csv", label="species", split=[0.8, 0.2])
    loss      = cross_entropy()
    optimizer = sgd(lr=0.1)
    schedule  = SCHEDULE
    epochs    = 2
    batch     = 32
    metrics   = [accuracy]
    seed      = 0
}
'''


def quiet(_: str) -> None:
    pass


def spec(tmp: Path, schedule: str = "step(step_size=1, gamma=0.5)") -> Path:
    shutil.copy(ROOT / "examples" / "data" / "iris" / "train.csv", tmp / "train.csv")
    (tmp / "iris.dls").write_text(SPEC.replace("SCHEDULE", schedule))
    return tmp / "iris.dls"


def lrs(run: Path) -> list[float]:
    return [json.loads(line)["lr"] for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_overwrite_replaces_a_run_only_when_asked(tmp_path):
    s = spec(tmp_path)
    run = tmp_path / "run"
    session.train(s, out=run, progress=False, echo=quiet)
    (run / "notes.txt").write_text("from the first run")
    with pytest.raises(DlspecError) as info:
        session.train(s, out=run, progress=False, echo=quiet)
    assert info.value.code == "E633" and "--overwrite" in info.value.hint
    assert (run / "notes.txt").exists()
    with pytest.raises(DlspecError) as info:
        session.train(s, out=run, resume=True, overwrite=True, progress=False, echo=quiet)
    assert info.value.code == "E674"
    lines: list[str] = []
    out = session.train(s, out=run, overwrite=True, progress=False, echo=lines.append)
    assert out.epochs_run == 2 and not (run / "notes.txt").exists() and (run / "best.safetensors").is_file()
    assert any("--overwrite: removed" in line for line in lines)
    other = tmp_path / "other"
    other.mkdir()
    (other / "thesis.tex").write_text("not a run")
    with pytest.raises(DlspecError) as info:
        session.train(s, out=other, overwrite=True, progress=False, echo=quiet)
    assert info.value.code == "E675" and (other / "thesis.tex").read_text() == "not a run"


def _more_epochs(tmp_path: Path, backend: str) -> tuple[list[float], list[float]]:
    s = spec(tmp_path)
    session.train(s, out=tmp_path / "short", progress=False, echo=quiet, backend=backend)
    session.train(s, out=tmp_path / "short", epochs=4, resume=True, progress=False, echo=quiet, backend=backend)
    session.train(s, out=tmp_path / "long", epochs=4, progress=False, echo=quiet, backend=backend)
    return lrs(tmp_path / "short"), lrs(tmp_path / "long")


@pytest.mark.slow
def test_resume_with_more_epochs_goes_on_at_the_rate_of_an_uninterrupted_run(tmp_path):
    resumed, straight = _more_epochs(tmp_path, "torch")
    assert resumed == pytest.approx(straight)
    assert straight == pytest.approx([0.1, 0.05, 0.025, 0.0125])


@pytest.mark.slow
def test_resume_with_more_epochs_is_the_same_in_the_tensorflow_trainer(tmp_path):
    resumed, straight = _more_epochs(tmp_path, "tf")
    assert resumed == pytest.approx(straight)
    assert straight == pytest.approx([0.1, 0.05, 0.025, 0.0125])


@pytest.mark.slow
def test_a_schedule_fitted_to_the_epoch_count_is_refused_not_bent(tmp_path):
    s = spec(tmp_path, "cosine()")
    session.train(s, out=tmp_path / "run", progress=False, echo=quiet)
    with pytest.raises(DlspecError) as info:
        session.train(s, out=tmp_path / "run", epochs=4, resume=True, progress=False, echo=quiet)
    assert info.value.code == "E671"
    assert lrs(tmp_path / "run") == pytest.approx([0.1, 0.05])  # unchanged: no epoch at rate 0


@pytest.mark.slow
def test_a_csv_run_on_a_file_without_one_class_agrees_with_predict(tmp_path):
    s = spec(tmp_path, "constant()")
    (tmp_path / "iris.dls").write_text(s.read_text().replace("epochs    = 2", "epochs    = 40")
                                       .replace("sgd(lr=0.1)", "adam(lr=0.02)"))
    run = tmp_path / "run"
    session.train(s, out=run, progress=False, echo=quiet)
    rows = list(csv.reader((ROOT / "examples" / "data" / "iris" / "heldout.csv").open()))
    sub = tmp_path / "no_setosa.csv"
    with sub.open("w", newline="") as f:
        csv.writer(f).writerows([rows[0]] + [r for r in rows[1:] if r[-1] != "setosa"])
    report = session.evaluate_report(run, str(sub))
    assert report["examples"] == 20
    rep = report["reports"]["y"]
    assert [r["support"] for r in rep["per_class"]] == [0, 10, 10]
    pred = predict_.predict_rows(run, sub)
    truth = [r[-1] for r in rows[1:] if r[-1] != "setosa"]
    hits = sum(p["class"] == t for p, t in zip(pred["table"]["y"], truth, strict=True))
    assert hits / 20 == pytest.approx(report["metrics"]["accuracy"]) == pytest.approx(rep["accuracy"])
    assert report["metrics"]["accuracy"] >= 0.8
    raw = tmp_path / "raw.csv"  # raw rows without the label, in another column order
    raw.write_text("petal_width,petal_length,sepal_width,sepal_length\n0.2,1.4,3.5,5.1\n2.3,5.9,3.0,6.8\n")
    assert [r["class"] for r in predict_.predict_rows(run, raw)["table"]["y"]] == ["setosa", "virginica"]


@pytest.mark.slow  # reading the events back imports TensorFlow
def test_tensorboard_logs_scalars_the_learning_rate_and_the_graph(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    s = spec(tmp_path)
    session.train(s, out=tmp_path / "run", progress=False, echo=quiet, tensorboard=tmp_path / "tb")
    ea = EventAccumulator(str(tmp_path / "tb"))
    ea.Reload()
    tags = set(ea.Tags()["scalars"])
    assert {"train/loss", "val/loss", "train/accuracy", "val/accuracy", "lr"} <= tags
    assert [e.value for e in ea.Scalars("lr")] == pytest.approx([0.1, 0.05])
    assert [e.step for e in ea.Scalars("train/loss")] == [1, 2]
    ops = [n.op for n in ea.Graph().node]
    assert ops == ["Input", "dense", "relu", "dense", "Output"]
