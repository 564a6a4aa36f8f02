"""`--threads auto|N` (dlspec/threads.py): the CPUs a process may use (affinity, cgroup quotas),
the option's values, the environment set before a framework starts, the measurement that picks
a setting, ONNX Runtime's session options, and a training run that records its choice."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from dlspec import threads as T
from dlspec.cli import main

ROOT = Path(__file__).resolve().parent.parent


def _cgroup(tmp_path: Path, v2: str | None = None, v1: tuple[str, str] | None = None) -> Path:
    if v2 is not None:
        (tmp_path / "cpu.max").write_text(v2)
    if v1 is not None:
        (tmp_path / "cpu").mkdir()
        (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text(v1[0])
        (tmp_path / "cpu" / "cpu.cfs_period_us").write_text(v1[1])
    return tmp_path


def test_cgroup_quota_v2_v1_and_none(tmp_path):
    (tmp_path / "a").mkdir()
    assert T._cgroup_quota(_cgroup(tmp_path / "a", v2="150000 100000")) == pytest.approx(1.5)
    (tmp_path / "b").mkdir()
    assert T._cgroup_quota(_cgroup(tmp_path / "b", v2="max 100000")) is None
    (tmp_path / "c").mkdir()
    assert T._cgroup_quota(_cgroup(tmp_path / "c", v1=("50000", "100000"))) == pytest.approx(0.5)
    (tmp_path / "d").mkdir()
    assert T._cgroup_quota(_cgroup(tmp_path / "d", v1=("-1", "100000"))) is None
    assert T._cgroup_quota(tmp_path / "missing") is None


def test_available_cpus_follows_affinity_and_quota(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    assert T.available_cpus(tmp_path) == (4, "affinity")
    (tmp_path / "cpu.max").write_text("250000 100000")  # 2.5 CPUs of time: 2 threads
    assert T.available_cpus(tmp_path) == (2, "cgroup quota")
    (tmp_path / "cpu.max").write_text("20000 100000")  # a fifth of a CPU: still 1
    assert T.available_cpus(tmp_path) == (1, "cgroup quota")


def test_option_values():
    assert T.THREADS.convert("auto", None, None) == "auto"
    assert T.THREADS.convert(" AUTO ", None, None) == "auto"
    assert T.THREADS.convert("3", None, None) == 3
    for bad in ("0", "-2", "many", "1.5"):
        with pytest.raises(Exception) as exc:
            T.THREADS.convert(bad, None, None)
        assert "thread" in str(exc.value)


@pytest.mark.parametrize("command", [["train", "specs/digits_cnn.dls"], ["evaluate", "runs/none"],
                                     ["predict", "runs/none", "--input", "x.npy"]])
def test_bad_threads_is_a_usage_error(command):
    r = CliRunner().invoke(main, [*command, "--threads", "0"])
    assert r.exit_code == 2 and "--threads" in r.output and "Traceback" not in r.output


def test_prepare_sets_the_environment_before_a_framework(monkeypatch):
    for k in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "KMP_BLOCKTIME", "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setattr(T, "_current", None)
    monkeypatch.setattr(T, "available_cpus", lambda: (6, "affinity"))
    c = T.prepare("auto", workers=2)
    assert (c.threads, c.available, c.workers, c.how) == (4, 6, 2, "all available")
    assert os.environ["OMP_NUM_THREADS"] == "4" and os.environ["TF_NUM_INTRAOP_THREADS"] == "4"
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE" and os.environ["TF_NUM_INTEROP_THREADS"] == "1"
    c = T.prepare(3)
    assert (c.threads, c.requested, c.how) == (3, "3", "given") and os.environ["OMP_NUM_THREADS"] == "3"
    assert T.current() is c
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")  # a policy the user set is kept
    T.prepare(2)
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"
    assert "3 of 6 available CPUs (affinity" in T.resolve(3).describe()


def test_measurement_keeps_the_faster_setting():
    """A step that is slow at 2 threads (as on a machine whose other cores are busy) is measured
    slower there, interleaved with the 1-thread steps; and the other way round."""
    for slow_at, fast in ((2, 1), (1, 2)):
        state = {"n": None, "slow": slow_at}

        def step(state=state):
            time.sleep(0.012 if state["n"] == state["slow"] else 0.004)

        rates = T.measure_torch(step, [1, 2], setter=lambda n, state=state: state.update(n=n), steps=4)
        assert set(rates) == {1, 2}
        assert max(rates, key=rates.get) == fast
        assert rates[fast] > 1.8 * rates[slow_at]


def test_ort_session_options():
    pytest.importorskip("onnxruntime")
    opts = T.ort_session_options(3)
    assert opts.intra_op_num_threads == 3 and opts.inter_op_num_threads == 1
    assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "0"


@pytest.mark.slow
def test_train_records_its_choice_and_resume_reuses_it(tmp_path):
    """A run with --threads auto measures, prints and records its choice; --resume reuses the
    recorded one; --threads 1 is recorded as given."""
    import subprocess
    import sys

    run = tmp_path / "run"
    spec = tmp_path / "iris.dls"  # a schedule that extends, so --resume can train on to a second epoch
    text = (ROOT / "specs/iris_mlp.dls").read_text().replace("cosine()", "constant()")
    spec.write_text(text.replace("checkpoint(every=10, keep=1)", "checkpoint(every=1, keep=1)"))
    cmd = [sys.executable, "-m", "dlspec.cli", "train", str(spec), "--epochs", "1", "--out", str(run)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    rec = json.loads((run / "config.json").read_text())["threads"]
    assert rec["requested"] == "auto" and 1 <= rec["threads"] <= rec["available"]
    assert f"threads: {rec['threads']} of {rec['available']}" in r.stderr + r.stdout
    if rec["available"] > 1:
        assert rec["how"] == "measured" and set(rec["measured"]) == {"1", str(rec["available"])}
    r = subprocess.run(cmd[:-2] + ["--epochs", "2", "--out", str(run), "--resume"], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    again = json.loads((run / "config.json").read_text())["threads"]
    assert again["threads"] == rec["threads"] and again["how"] == "as recorded when the run started"
    run1 = tmp_path / "one"
    r = subprocess.run(cmd[:-2] + ["--out", str(run1), "--threads", "1"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads((run1 / "config.json").read_text())["threads"]["threads"] == 1


@pytest.mark.slow
def test_measurement_leaves_the_run_untouched():
    """The trial steps run on a copy of the model under a forked generator: the trainer's weights,
    its gradients and the global random state are as they were."""
    import torch

    from dlspec.train import torch_loop as tl

    class Fake:
        pass

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Dropout(0.5), torch.nn.Linear(8, 3))
    trainer = Fake()
    trainer.model = model
    trainer.cfg = type("C", (), {"batch": 5})()
    trainer.train_data = tl.Tensors([torch.randn(12, 4)], torch.randint(0, 3, (12,)))
    trainer._outputs = lambda xb, module=None: {"y": module(*xb)}
    trainer._targets = lambda y: {"y": y}
    trainer._loss = lambda outs, ys: (torch.nn.functional.cross_entropy(outs["y"], ys["y"]), {})
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    step = T._trial_step(trainer)
    T.measure_torch(step, [1, 2], steps=2)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
    assert torch.equal(rng, torch.get_rng_state())
