"""`dlspec train` on PyTorch: resume reproduces an uninterrupted run, checkpoints are atomic,
bad runs stop with clear errors, and evaluate/predict use the run folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from dlspec.cli import main
from dlspec.errors import DlspecError
from dlspec.train import session
from dlspec.weights import load_numpy

from .helpers import quiet

TINY = '''
model Tiny(h: int = 16) {
    input x: float32[batch, 4]
    output x -> dense(h) as fc1 -> relu() -> dropout(0.3) -> dense(3) as head
}
train Tiny {
    data      = builtin("iris", split=[0.6, 0.2, 0.2])
    loss      = cross_entropy(label_smoothing=0.1)
    optimizer = sgd(lr=0.05, momentum=0.9, nesterov=true)
    schedule  = warmup(epochs=1) then cosine()
    epochs    = 5
    batch     = 16
    metrics   = [accuracy, macro_f1]
    checkpoint(every=1, keep=2)
    seed      = 3
}
'''


@pytest.fixture()
def tiny(tmp_path: Path) -> Path:
    spec = tmp_path / "tiny.dls"
    spec.write_text(TINY)
    return spec


def test_resume_reaches_the_same_weights_as_an_uninterrupted_run(tiny: Path, tmp_path: Path):
    full = session.train(tiny, out=tmp_path / "full", progress=False, echo=quiet)
    assert full.epochs_run == 5

    def interrupt_in_epoch_4(line: str) -> None:
        if line.startswith("epoch 4/"):
            raise KeyboardInterrupt

    with pytest.raises(DlspecError) as info:
        session.train(tiny, out=tmp_path / "cut", progress=False, echo=interrupt_in_epoch_4)
    assert info.value.code == "E634" and "--resume" in info.value.hint
    ckpts = sorted(p.name for p in (tmp_path / "cut" / "checkpoints").iterdir())
    assert ckpts == ["epoch-0002", "epoch-0003"]  # keep=2; epoch 4 never committed
    resumed = session.train(tiny, out=tmp_path / "cut", resume=True, progress=False, echo=quiet)
    assert resumed.epochs_run == 5
    a = load_numpy(tmp_path / "full" / "last.safetensors")
    b = load_numpy(tmp_path / "cut" / "last.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    log = [json.loads(line) for line in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2, 3, 4, 5]


def test_run_folder_contents(tiny: Path, tmp_path: Path):
    out = session.train(tiny, out=tmp_path / "run", progress=False, echo=quiet)
    run = out.run
    for name in ("config.json", "graph.json", "model.py", "metrics.jsonl", "metrics.csv", "curves.png",
                 "best.safetensors", "last.safetensors", "test_metrics.json"):
        assert (run / name).is_file(), name
    assert set(out.test) == {"loss", "accuracy", "macro_f1"}
    header = (run / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"epoch", "loss", "val_loss", "accuracy", "val_accuracy", "lr"} <= set(header)
    assert (run / "curves.png").read_bytes()[:4] == b"\x89PNG"


def test_a_crash_while_writing_a_checkpoint_keeps_the_previous_one(tmp_path: Path):
    from dlspec.train.run import checkpoint_dirs, commit_checkpoint

    def good(d: Path) -> None:
        (d / "state.json").write_text("{}")

    def broken(d: Path) -> None:
        (d / "model.safetensors").write_bytes(b"partial")
        raise OSError("disk full")

    commit_checkpoint(tmp_path, 1, good, keep=3)
    with pytest.raises(OSError):
        commit_checkpoint(tmp_path, 2, broken, keep=3)
    assert [p.name for p in checkpoint_dirs(tmp_path)] == ["epoch-0001"]
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["epoch-0001"]


def test_existing_run_folder_is_not_overwritten(tiny: Path, tmp_path: Path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "best.safetensors").write_bytes(b"precious")
    with pytest.raises(DlspecError) as info:
        session.train(tiny, out=tmp_path / "run", progress=False, echo=quiet)
    assert info.value.code == "E633"
    assert (tmp_path / "run" / "best.safetensors").read_bytes() == b"precious"


def test_diverging_loss_stops_with_a_clear_error(tmp_path: Path):
    spec = tmp_path / "bad.dls"
    spec.write_text(TINY.replace("sgd(lr=0.05, momentum=0.9, nesterov=true)", "sgd(lr=1e30)")
                    .replace("warmup(epochs=1) then cosine()", "constant()"))
    with pytest.raises(DlspecError) as info:
        session.train(spec, out=tmp_path / "run", progress=False, echo=quiet)
    assert info.value.code == "E630"
    assert "clip_grad" in info.value.hint


def test_data_that_does_not_fit_the_model_fails_before_training(tmp_path: Path):
    spec = tmp_path / "wrong.dls"
    spec.write_text(TINY.replace("float32[batch, 4]", "float32[batch, 5]"))
    result = CliRunner().invoke(main, ["train", str(spec), "--out", str(tmp_path / "run"), "--quiet"])
    assert result.exit_code == 1
    assert "iris" in result.output and "[batch, 5]" in result.output and "4" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "run").exists()


def test_unknown_monitor_is_reported_with_a_suggestion(tmp_path: Path):
    spec = tmp_path / "mon.dls"
    spec.write_text(TINY.replace("checkpoint(every=1, keep=2)", "early_stop(monitor=val_acuracy)"))
    with pytest.raises(DlspecError) as info:
        session.train(spec, out=tmp_path / "run", progress=False, echo=quiet)
    assert info.value.code == "E414" and "val_accuracy" in info.value.hint


def test_cli_train_evaluate_predict(tiny: Path, tmp_path: Path):
    runner = CliRunner()
    run = tmp_path / "run"
    r = runner.invoke(main, ["train", str(tiny), "--out", str(run), "--epochs", "2", "--quiet"])
    assert r.exit_code == 0, r.output
    assert "test metrics" in r.output
    r = runner.invoke(main, ["evaluate", str(run), "--json"])
    assert r.exit_code == 0, r.output
    result = json.loads(r.output)
    metrics = result["metrics"]
    assert set(metrics) == {"loss", "accuracy", "macro_f1"} and 0.0 <= metrics["accuracy"] <= 1.0
    report = result["reports"]["output"]
    assert [row["class"] for row in report["per_class"]] == ["setosa", "versicolor", "virginica"]
    assert sum(map(sum, report["confusion"])) == result["examples"] == sum(r["support"] for r in report["per_class"])
    saved = json.loads((run / "test_metrics.json").read_text())
    assert metrics["accuracy"] == pytest.approx(saved["accuracy"])
    x = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    r = runner.invoke(main, ["predict", str(run), "--input", str(tmp_path / "x.npy"), "--output", str(tmp_path / "p.npz")])
    assert r.exit_code == 0, r.output
    with np.load(tmp_path / "p.npz") as z:
        assert z["output"].shape == (5, 3)
    np.save(tmp_path / "bad.npy", x[:, :3])
    r = runner.invoke(main, ["predict", str(run), "--input", str(tmp_path / "bad.npy")])
    assert r.exit_code == 1 and "[5, 3]" in r.output and "float32[batch, 4]" in r.output
    r = runner.invoke(main, ["evaluate", str(tmp_path)])
    assert r.exit_code == 1 and "not a dlspec run folder" in r.output


def test_resume_of_a_folder_that_holds_no_run_is_an_error(tiny: Path, tmp_path: Path):
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("not a run")
    with pytest.raises(DlspecError) as info:
        session.train(tiny, out=tmp_path / "other", resume=True, progress=False, echo=quiet)
    assert info.value.code == "E631" and "config.json" in info.value.message
    with pytest.raises(DlspecError) as info:
        session.train(tiny, out=tmp_path / "missing", resume=True, progress=False, echo=quiet)
    assert info.value.code == "E631"


def test_device_cuda_without_cuda_is_a_clear_error(tiny: Path, tmp_path: Path):
    import torch

    if torch.cuda.is_available():
        pytest.fail("this check is meant for machines without CUDA; the GPU path is covered on the device")
    with pytest.raises(DlspecError) as info:
        session.train(tiny, device="cuda", out=tmp_path / "r", progress=False, echo=quiet)
    assert info.value.code == "E906"
