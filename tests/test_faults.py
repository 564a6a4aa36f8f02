"""Runs survive faults: `--resume` from every state a run can be left in (killed before its first
checkpoint, interrupted, finished, a damaged newest checkpoint, leftovers of interrupted writes),
a folder another live run holds, a full disk or read-only folder, data that changed or vanished,
NaN/inf in the data or the loss, a label column that cannot train the model."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dlspec.errors import DlspecError
from dlspec.train import session
from dlspec.weights import load_numpy

from .helpers import quiet

RECIPE = '''
model Tiny(h: int = 16) {{
    input x: float32[batch, 4]
    output x -> dense(h) as fc1 -> relu() -> dropout(0.3) -> dense(3) as head
}}
train Tiny {{
    data      = {data}
    loss      = cross_entropy(label_smoothing=0.1)
    optimizer = {optimizer}
    schedule  = {schedule}
    epochs    = 5
    batch     = 16
    metrics   = [accuracy, macro_f1]
    checkpoint(every=1, keep=2)
    seed      = 3
    {extra}
}}
'''


def spec(tmp_path: Path, name: str = "tiny", data: str = 'builtin("iris", split=[0.6, 0.2, 0.2])',
         optimizer: str = "sgd(lr=0.05, momentum=0.9, nesterov=true)", schedule: str = "warmup(epochs=1) then cosine()",
         extra: str = "") -> Path:
    path = tmp_path / f"{name}.dls"
    path.write_text(RECIPE.format(data=data, optimizer=optimizer, schedule=schedule, extra=extra))
    return path


def interrupt_at(epoch: int):
    """An echo that interrupts the run (as Ctrl-C would) when epoch `epoch` has been logged,
    before its checkpoint is written."""

    def echo(line: str) -> None:
        if line.startswith(f"epoch {epoch}/"):
            raise KeyboardInterrupt

    return echo


def same_run(a: Path, b: Path) -> None:
    """Bit for bit: the last and best weights, and every logged value but the time."""
    for name in ("last.safetensors", "best.safetensors"):
        wa, wb = load_numpy(a / name), load_numpy(b / name)
        assert wa.keys() == wb.keys()
        for k in wa:
            np.testing.assert_array_equal(wa[k], wb[k], err_msg=f"{name}: {k}")

    def log(run: Path) -> list[dict]:
        return [{k: v for k, v in json.loads(line).items() if k != "time"}
                for line in (run / "metrics.jsonl").read_text().splitlines()]

    assert log(a) == log(b)
    assert json.loads((a / "test_metrics.json").read_text()) == json.loads((b / "test_metrics.json").read_text())


def snapshot(run: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def full(tmp_path_factory) -> Path:
    """An uninterrupted run of the default recipe, to compare with."""
    tmp = tmp_path_factory.mktemp("full")
    out = session.train(spec(tmp), out=tmp / "run", progress=False, echo=quiet)
    assert out.epochs_run == 5
    return tmp / "run"


# ---- --resume from every state ------------------------------------------------------------------


@pytest.mark.slow
def test_killed_before_the_first_checkpoint_resume_starts_again_in_the_same_folder(tmp_path: Path, full: Path):
    s = spec(tmp_path)
    with pytest.raises(DlspecError) as info:
        session.train(s, out=tmp_path / "run", progress=False, echo=interrupt_at(1))
    assert info.value.code == "E634"
    assert not (tmp_path / "run" / "checkpoints").exists()
    with pytest.raises(DlspecError) as info:  # without --resume: the folder holds a run, and the hint says what to do
        session.train(s, out=tmp_path / "run", progress=False, echo=quiet)
    assert info.value.code == "E633" and "--resume starts it again" in info.value.hint
    lines: list[str] = []
    out = session.train(s, out=tmp_path / "run", resume=True, progress=False, echo=lines.append)
    assert out.epochs_run == 5
    assert any("no checkpoint yet" in line for line in lines)
    same_run(full, tmp_path / "run")


@pytest.mark.slow
def test_resume_of_a_finished_run_says_so_and_changes_nothing(tmp_path: Path):
    s = spec(tmp_path)
    session.train(s, out=tmp_path / "run", progress=False, echo=quiet)
    before = snapshot(tmp_path / "run")
    lines: list[str] = []
    out = session.train(s, out=tmp_path / "run", resume=True, progress=False, echo=lines.append)
    assert any("is finished (completed after epoch 5); nothing to do" in line for line in lines)
    assert not any(line.startswith("epoch ") for line in lines)
    assert out.epochs_run == 5 and out.test == json.loads((tmp_path / "run" / "test_metrics.json").read_text())
    assert snapshot(tmp_path / "run") == before


@pytest.mark.slow
def test_resume_of_an_early_stopped_run_trains_no_more_epochs(tmp_path: Path):
    # min_delta larger than any change: epoch 1 sets the best, epochs 2 and 3 do not improve on it
    s = spec(tmp_path, extra="early_stop(monitor=val_loss, patience=2, min_delta=100)")
    first = session.train(s, out=tmp_path / "run", epochs=20, progress=False, echo=quiet)
    assert first.stopped_early and first.epochs_run == 3
    before = snapshot(tmp_path / "run")
    for _ in range(2):
        lines: list[str] = []
        out = session.train(s, out=tmp_path / "run", epochs=20, resume=True, progress=False, echo=lines.append)
        assert out.stopped_early and out.epochs_run == 3
        assert any("stopped early after epoch 3); nothing to do" in line for line in lines), lines
        assert snapshot(tmp_path / "run") == before
    # killed after training ended, before the final test: resume runs only the final test
    (tmp_path / "run" / "test_metrics.json").unlink()
    lines = []
    out = session.train(s, out=tmp_path / "run", epochs=20, resume=True, progress=False, echo=lines.append)
    assert not any(line.startswith("epoch ") for line in lines), lines
    assert (tmp_path / "run" / "test_metrics.json").is_file() and out.test
    assert [json.loads(x)["epoch"] for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]


@pytest.mark.slow
def test_resume_with_more_epochs_refuses_a_schedule_fitted_to_the_old_count(tmp_path: Path):
    s = spec(tmp_path)  # warmup then cosine(): the cosine's period is the epochs after the warm-up
    with pytest.raises(DlspecError):
        session.train(s, out=tmp_path / "run", progress=False, echo=interrupt_at(3))
    before = snapshot(tmp_path / "run")
    with pytest.raises(DlspecError) as info:
        session.train(s, out=tmp_path / "run", epochs=8, resume=True, progress=False, echo=quiet)
    assert info.value.code == "E671" and "planned for 5 epochs" in info.value.message
    assert "--epochs 5" in info.value.hint
    assert snapshot(tmp_path / "run") == before
    one = spec(tmp_path, name="onecycle", schedule="one_cycle(max_lr=0.1)")
    session.train(one, out=tmp_path / "oc", progress=False, echo=quiet)
    with pytest.raises(DlspecError) as info:  # a completed run extended: the same rule
        session.train(one, out=tmp_path / "oc", epochs=7, resume=True, progress=False, echo=quiet)
    assert info.value.code == "E671" and "one_cycle" in info.value.message


@pytest.mark.slow
def test_resume_with_more_epochs_extends_a_schedule_that_does_not_depend_on_them(tmp_path: Path):
    s = spec(tmp_path, schedule="step(step_size=2, gamma=0.5)")
    straight = session.train(s, out=tmp_path / "straight", epochs=7, progress=False, echo=quiet)
    assert straight.epochs_run == 7
    session.train(s, out=tmp_path / "run", progress=False, echo=quiet)  # 5 epochs, completed
    out = session.train(s, out=tmp_path / "run", epochs=7, resume=True, progress=False, echo=quiet)
    assert out.epochs_run == 7
    same_run(tmp_path / "straight", tmp_path / "run")


@pytest.mark.slow
def test_a_truncated_newest_checkpoint_falls_back_to_the_one_before(tmp_path: Path, full: Path):
    s = spec(tmp_path)
    with pytest.raises(DlspecError):
        session.train(s, out=tmp_path / "run", progress=False, echo=interrupt_at(4))
    newest = tmp_path / "run" / "checkpoints" / "epoch-0003" / "state.safetensors"
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])
    lines: list[str] = []
    out = session.train(s, out=tmp_path / "run", resume=True, progress=False, echo=lines.append)
    assert out.epochs_run == 5
    assert any(line.startswith("warning: checkpoint") and "epoch-0003" in line and "truncated" in line for line in lines)
    assert "resuming after epoch 2" in lines
    same_run(full, tmp_path / "run")


@pytest.mark.slow
def test_a_checkpoint_that_differs_from_its_manifest_is_passed_over_and_all_damaged_is_e632(tmp_path: Path):
    s = spec(tmp_path)
    with pytest.raises(DlspecError):
        session.train(s, out=tmp_path / "run", progress=False, echo=interrupt_at(4))
    for d in ("epoch-0002", "epoch-0003"):
        weights = tmp_path / "run" / "checkpoints" / d / "model.safetensors"
        data = bytearray(weights.read_bytes())
        data[-1] ^= 0xFF  # same size, one flipped byte: only the digest notices
        weights.write_bytes(bytes(data))
    with pytest.raises(DlspecError) as info:
        session.train(s, out=tmp_path / "run", resume=True, progress=False, echo=quiet)
    assert info.value.code == "E632" and "SHA-256" in info.value.message


@pytest.mark.slow
def test_leftovers_of_interrupted_writes_are_removed_by_the_next_run(tmp_path: Path, full: Path):
    s = spec(tmp_path)
    with pytest.raises(DlspecError):
        session.train(s, out=tmp_path / "run", progress=False, echo=interrupt_at(3))
    run = tmp_path / "run"
    half = run / "checkpoints" / ".epoch-0003.k2j_x9q1"
    half.mkdir()
    (half / "model.safetensors").write_bytes(b"\0" * 100)
    (run / ".metrics.jsonl.ab12cd34").write_text("{")
    (run / ".curves.png.zz99yy88.png").write_bytes(b"")
    (run / "notes.txt").write_text("mine")  # not a temporary: kept
    lines: list[str] = []
    session.train(s, out=run, resume=True, progress=False, echo=lines.append)
    assert not half.exists() and not (run / ".metrics.jsonl.ab12cd34").exists()
    assert not (run / ".curves.png.zz99yy88.png").exists() and (run / "notes.txt").read_text() == "mine"
    assert any(line.startswith("removed 3 temporary file(s)") for line in lines)
    assert [p.name for p in run.iterdir() if p.name.startswith(".")] == []
    same_run(full, run)


# ---- a folder another live run holds ---------------------------------------------------------------

HOLD = """
import sys, time
from pathlib import Path
from dlspec.train.run import RunLock
RunLock(Path(sys.argv[1])).acquire()
print("held", flush=True)
time.sleep(120)
"""


def test_a_second_train_into_a_folder_a_live_run_holds_is_refused(tmp_path: Path):
    run = tmp_path / "run"
    run.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(run)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        from dlspec.train.run import RunLock

        with pytest.raises(DlspecError) as info:
            RunLock(run).acquire()
        assert info.value.code == "E670" and f"process {holder.pid}" in info.value.message
    finally:
        holder.kill()
        holder.wait()
    # the holder died without releasing: its lock file stays, and the next run takes it over
    assert (run / ".lock").read_text().strip() == str(holder.pid)
    from dlspec.train.run import RunLock

    lock = RunLock(run).acquire()
    assert (run / ".lock").read_text().strip() == str(os.getpid())
    lock.release()
    assert not (run / ".lock").exists()


@pytest.mark.slow
def test_train_refuses_a_held_folder_before_touching_it(tmp_path: Path):
    s = spec(tmp_path)
    run = tmp_path / "run"
    with pytest.raises(DlspecError):
        session.train(s, out=run, progress=False, echo=interrupt_at(2))
    before = snapshot(run)
    from dlspec.train.run import RunLock

    with RunLock(run):
        with pytest.raises(DlspecError) as info:
            session.train(s, out=run, resume=True, progress=False, echo=quiet)
        assert info.value.code == "E670"
        with pytest.raises(DlspecError) as info:
            session.train(s, out=run, progress=False, echo=quiet)
        assert info.value.code == "E670"
    assert {k: v for k, v in snapshot(run).items() if k != ".lock"} == before


# ---- a full disk, a read-only folder -----------------------------------------------------------------


@pytest.mark.slow
def test_a_full_disk_is_a_coded_error_that_keeps_the_last_good_checkpoint(tmp_path: Path, full: Path,
                                                                        monkeypatch: pytest.MonkeyPatch):
    import dlspec.train.run as run_mod

    real = run_mod.atomic_dir

    def disk_full_at_epoch_3(final: Path, write):
        if final.name == "epoch-0003":
            def write_then_fail(tmp: Path) -> None:
                write(tmp)
                raise OSError(errno.ENOSPC, "No space left on device")
            return real(final, write_then_fail)
        return real(final, write)

    monkeypatch.setattr(run_mod, "atomic_dir", disk_full_at_epoch_3)
    s = spec(tmp_path)
    with pytest.raises(DlspecError) as info:
        session.train(s, out=tmp_path / "run", progress=False, echo=quiet)
    assert info.value.code == "E672" and "No space left on device" in info.value.message
    assert "--resume" in info.value.hint
    ck = tmp_path / "run" / "checkpoints"
    assert sorted(p.name for p in ck.iterdir()) == ["epoch-0001", "epoch-0002"]  # no temporary left
    monkeypatch.setattr(run_mod, "atomic_dir", real)
    session.train(s, out=tmp_path / "run", resume=True, progress=False, echo=quiet)
    same_run(full, tmp_path / "run")


def test_a_writer_library_reporting_the_os_error_in_its_message_is_e672():
    from dlspec.io import write_error

    class SafetensorError(Exception):
        pass

    coded = write_error(SafetensorError("Error while serializing: IoError(No space left on device (os error 28))"),
                        Path("run/best.safetensors"))
    assert coded is not None and coded.code == "E672" and "No space left on device" in coded.message
    assert write_error(ValueError("a bug"), Path("x")) is None
    assert write_error(OSError(errno.EROFS, "Read-only file system"), Path("x")).code == "E672"


def _writes_despite_chmod(folder: Path) -> bool:
    probe = folder / ".probe"
    try:
        probe.write_text("x")
    except OSError:
        return False
    probe.unlink()
    return True  # root (or a file system that ignores modes): chmod does not stop writes


@pytest.mark.slow
def test_a_read_only_run_folder_is_a_coded_error_that_keeps_the_checkpoints(tmp_path: Path, full: Path,
                                                                         monkeypatch: pytest.MonkeyPatch):
    s = spec(tmp_path)
    run = tmp_path / "run"
    with pytest.raises(DlspecError):
        session.train(s, out=run, progress=False, echo=interrupt_at(3))
    before = snapshot(run)
    folders = [run, run / "checkpoints"]
    for f in folders:
        f.chmod(0o555)
    try:
        if _writes_despite_chmod(run):  # as root chmod does not stop writes: the file system refuses instead
            import dlspec.io as dio

            def read_only(*args, **kwargs):
                raise OSError(errno.EROFS, "Read-only file system")

            monkeypatch.setattr(dio.tempfile, "mkstemp", read_only)
            monkeypatch.setattr(dio.tempfile, "mkdtemp", read_only)
        with pytest.raises(DlspecError) as info:
            session.train(s, out=run, resume=True, progress=False, echo=quiet)
        assert info.value.code == "E672"
        assert "Read-only" in info.value.message or "Permission denied" in info.value.message
    finally:
        for f in folders:
            f.chmod(0o755)
        monkeypatch.undo()
    assert {k: v for k, v in snapshot(run).items() if k != ".lock"} == before
    session.train(s, out=run, resume=True, progress=False, echo=quiet)
    same_run(full, run)


# ---- data that changed or vanished -------------------------------------------------------------------


def iris_csv(path: Path) -> None:
    from sklearn.datasets import load_iris

    d = load_iris()
    rows = ["a,b,c,d,species"] + [",".join(f"{v:.1f}" for v in x) + f",{y}" for x, y in zip(d.data, d.target)]
    path.write_text("\n".join(rows) + "\n")


@pytest.mark.slow
def test_resume_refuses_data_that_changed_or_vanished(tmp_path: Path):
    iris_csv(tmp_path / "iris.csv")
    s = spec(tmp_path, data='csv("iris.csv", label="species", split=[0.6, 0.2, 0.2])')
    run = tmp_path / "run"
    with pytest.raises(DlspecError):
        session.train(s, out=run, progress=False, echo=interrupt_at(3))
    before = snapshot(run)
    original = (tmp_path / "iris.csv").read_text()
    (tmp_path / "iris.csv").write_text(original.replace("5.1,3.5", "5.2,3.5", 1))
    with pytest.raises(DlspecError) as info:
        session.train(s, out=run, resume=True, progress=False, echo=quiet)
    assert info.value.code == "E673" and "has changed" in info.value.message
    (tmp_path / "iris.csv").unlink()
    with pytest.raises(DlspecError) as info:
        session.train(s, out=run, resume=True, progress=False, echo=quiet)
    assert info.value.code == "E673" and "is gone" in info.value.message
    assert {k: v for k, v in snapshot(run).items() if k != ".lock"} == before
    (tmp_path / "iris.csv").write_text(original)
    out = session.train(s, out=run, resume=True, progress=False, echo=quiet)
    assert out.epochs_run == 5


# ---- NaN/inf in the data or the loss; labels that cannot train the model -------------------------


def test_nan_or_inf_in_csv_or_npz_data_is_refused_at_load_naming_the_row(tmp_path: Path):
    from dlspec.data import load_data
    from dlspec.ir.training import Csv, Npz

    (tmp_path / "d.csv").write_text("a,b,label\n1,2,x\n\n3,nan,y\n4,5,x\n")
    with pytest.raises(DlspecError) as info:
        load_data(Csv(path="d.csv", label="label"), 0, tmp_path)
    assert info.value.code == "E612" and "`b`" in info.value.message and "line 4" in info.value.message
    (tmp_path / "r.csv").write_text("a,b,t\n1,2,0.5\n3,4,inf\n5,6,1.5\n")
    with pytest.raises(DlspecError) as info:
        load_data(Csv(path="r.csv", label="t", task="regression"), 0, tmp_path)
    assert info.value.code == "E612" and "`t`" in info.value.message and "line 3" in info.value.message
    x = np.ones((20, 3), np.float32)
    x[13, 2] = np.inf
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(20) % 2)
    with pytest.raises(DlspecError) as info:
        load_data(Npz(path="d.npz"), 0, tmp_path)
    assert info.value.code == "E612" and "example 13" in info.value.message


def test_a_label_column_with_one_class_is_refused_at_load(tmp_path: Path):
    from dlspec.data import load_data
    from dlspec.ir.training import Csv, Npz

    (tmp_path / "one.csv").write_text("a,b,label\n" + "".join(f"{i},{i * 2},cat\n" for i in range(10)))
    with pytest.raises(DlspecError) as info:
        load_data(Csv(path="one.csv", label="label"), 0, tmp_path)
    assert info.value.code == "E621" and "one class" in info.value.message
    np.savez(tmp_path / "one.npz", x=np.ones((10, 3), np.float32), y=np.zeros(10, np.int64))
    with pytest.raises(DlspecError) as info:
        load_data(Npz(path="one.npz"), 0, tmp_path)
    assert info.value.code == "E621"


def test_one_class_or_too_few_scores_is_an_error_before_training(tmp_path: Path):
    from dlspec.data import check_against_model
    from dlspec.data.core import DataBundle, Split
    from dlspec.program import compile_source
    from dlspec.source import SourceFile

    graph = compile_source(SourceFile("t.dls", RECIPE.format(data='builtin("iris")', optimizer="adam(lr=0.01)", schedule="constant()",
                                         extra=""))).models["Tiny"]
    x = np.ones((6, 4), np.float32)

    def bundle(y: np.ndarray, k: int) -> DataBundle:
        s = Split([x], y)
        return DataBundle(s, s, s, task="classification", num_classes=k, description="d", source="d")

    with pytest.raises(DlspecError) as info:
        check_against_model(bundle(np.zeros(6, np.int64), 1), graph)
    assert info.value.code == "E621"
    with pytest.raises(DlspecError) as info:  # 5 classes, 3 scores per example
        check_against_model(bundle(np.arange(6) % 5, 5), graph)
    assert info.value.code == "E604" and "dense(5)" in info.value.hint
    check_against_model(bundle(np.arange(6) % 3, 3), graph)


@pytest.mark.slow
@pytest.mark.parametrize("optimizer", ["sgd(lr=1e30)", "adam(lr=1e30)", "adamw(lr=1e30)", "rmsprop(lr=1e30)",
                                       "adagrad(lr=1e30)"])
def test_a_diverging_loss_stops_with_e630_naming_the_batch_under_every_optimizer(tmp_path: Path, optimizer: str):
    s = spec(tmp_path, optimizer=optimizer, schedule="constant()")
    with pytest.raises(DlspecError) as info:
        session.train(s, out=tmp_path / "run", epochs=30, progress=False, echo=quiet)
    assert info.value.code == "E630", optimizer
    assert "at batch " in info.value.message and " of epoch " in info.value.message
