"""`dlspec train --nproc N`: two processes over loopback train to the weights and metrics one process
reaches with the same global batch; runs resume across process counts; bad options stop before
anything is written; a worker that dies stops the run with a clear message."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from dlspec.cli import main
from dlspec.train import session
from dlspec.weights import load_numpy

from .helpers import ROOT, free_port

pytestmark = pytest.mark.slow  # every test starts several training processes

# No dropout and plain SGD: the result then depends only on the gradients, which data-parallel
# training must reproduce. 241 examples → 169 in train; batch 24 → a last batch of 1 example,
# so the second process steps with a zero-weighted example there. The schedule does not depend on
# `epochs`, so a run stopped after 2 epochs and resumed to 4 is the 4-epoch run.
SPEC = '''
model Mlp {
    input x: float32[batch, 8]
    output x -> dense(16) as fc1 -> tanh() -> dense(16) as fc2 -> relu() -> dense(3) as head
}
train Mlp {
    data      = npz("data.npz", split=[0.7, 0.15, 0.15])
    loss      = cross_entropy()
    optimizer = sgd(lr=0.1, momentum=0.9)
    schedule  = step(step_size=2, gamma=0.5)
    epochs    = 4
    batch     = 24
    metrics   = [accuracy, macro_f1, top_k(k=2)]
    checkpoint(every=1, keep=5)
    seed      = 5
}
'''


@pytest.fixture(scope="module")
def spec(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("ddp")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(241, 8)).astype(np.float32)
    y = np.argmax(x @ rng.normal(size=(8, 3)) + 0.5 * rng.normal(size=(241, 3)), axis=1).astype(np.int64)
    np.savez(folder / "data.npz", x=x, y=y)
    (folder / "mlp.dls").write_text(SPEC)
    return folder / "mlp.dls"


@pytest.fixture(scope="module")
def reference(spec: Path) -> Path:
    """One process, all four epochs."""
    run = spec.parent / "ref"
    session.train(spec, out=run, progress=False, echo=lambda s: None)
    return run


def dlspec_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "dlspec.cli", *args], capture_output=True, text=True,
                          env=env, timeout=timeout)


def records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def assert_same_weights(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for k in a:
        np.testing.assert_allclose(a[k], b[k], atol=1e-5, rtol=0, err_msg=k)


def assert_same_logs(a: list[dict], b: list[dict]) -> None:
    assert [r["epoch"] for r in a] == [r["epoch"] for r in b]
    for ra, rb in zip(a, b):
        keys = [k for k in ra if k not in ("time",)]
        assert keys == [k for k in rb if k != "time"]
        for k in keys:
            assert ra[k] == pytest.approx(rb[k], abs=1e-5), (ra["epoch"], k)


def test_two_processes_match_one_process_and_resume_with_one(spec: Path, reference: Path):
    run = spec.parent / "two"
    r = dlspec_cli("train", str(spec), "--nproc", "2", "--epochs", "2", "--out", str(run), "--quiet")
    assert r.returncode == 0, r.stderr
    assert "data-parallel: 2 processes" in r.stderr and "backend gloo" in r.stderr
    # after two epochs: the weights and every logged number of the single-process run
    assert_same_weights(load_numpy(run / "last.safetensors"),
                        load_numpy(reference / "checkpoints" / "epoch-0002" / "model.safetensors"))
    assert_same_logs(records(run), records(reference)[:2])
    assert not [p for p in run.rglob(".*")], "no temporary files are left behind"
    # the checkpoint of a 2-process run resumes with 1 process to the same end
    session.train(spec, out=run, resume=True, progress=False, echo=lambda s: None)
    assert_same_weights(load_numpy(run / "last.safetensors"), load_numpy(reference / "last.safetensors"))
    assert_same_logs(records(run), records(reference))
    ref_test = json.loads((reference / "test_metrics.json").read_text())
    assert json.loads((run / "test_metrics.json").read_text()) == pytest.approx(ref_test, abs=1e-5)


def test_a_one_process_run_resumes_with_two(spec: Path, reference: Path):
    run = spec.parent / "one-then-two"
    session.train(spec, epochs=2, out=run, progress=False, echo=lambda s: None)
    r = dlspec_cli("train", str(spec), "--nproc", "2", "--out", str(run), "--resume", "--quiet")
    assert r.returncode == 0, r.stderr
    assert "resuming after epoch 2 with 2 processes" in r.stderr
    assert_same_weights(load_numpy(run / "last.safetensors"), load_numpy(reference / "last.safetensors"))
    assert_same_logs(records(run), records(reference))
    assert "accuracy" in r.stdout  # the launcher prints rank 0's test metrics


def test_two_machines_meet_at_the_master_address(spec: Path, reference: Path):
    """Two `dlspec train` commands, as on two machines (here both on loopback), one process each."""
    run = spec.parent / "two-nodes"
    port = str(free_port())
    common = ["train", str(spec), "--nproc", "1", "--nnodes", "2", "--master", f"127.0.0.1:{port}", "--epochs", "2",
              "--out", str(run), "--quiet", "--dist-timeout", "60"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    node0 = subprocess.Popen([sys.executable, "-m", "dlspec.cli", *common, "--node-rank", "0"], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        node1 = dlspec_cli(*common, "--node-rank", "1")
        out0, err0 = node0.communicate(timeout=120)
    finally:
        if node0.poll() is None:
            node0.kill()
    assert node0.returncode == 0, err0
    assert node1.returncode == 0, node1.stderr
    assert "node 1 finished; rank 0 on node 0 wrote the run folder" in node1.stderr
    assert "accuracy" in out0
    assert_same_weights(load_numpy(run / "last.safetensors"),
                        load_numpy(reference / "checkpoints" / "epoch-0002" / "model.safetensors"))


def _busy_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    s.listen()
    return s, s.getsockname()[1]


@pytest.mark.parametrize("args, code, words", [
    (["--nnodes", "2"], "E662", "needs --master ADDR:PORT"),
    (["--nproc", "30", "--batch", "24"], "E665", "30 processes cannot share a batch of 24"),
    (["--nproc", "2", "--master", "localhost"], "E661", "expected ADDR:PORT"),
    (["--nproc", "2", "--master", "10.0.0.1:70000"], "E661", "expected ADDR:PORT"),
    (["--nproc", "0"], "E660", "at least 1"),
    (["--nnodes", "2", "--node-rank", "2", "--master", "10.0.0.1:29500"], "E660", "not in 0..1"),
    (["--nproc", "2", "--sync-bn", "--device", "cpu"], "E667", "does not run on CPU"),
    (["--nproc", "2", "--device", "mps"], "E664", "Metal"),
])
def test_bad_options_stop_before_anything_is_written(spec: Path, args: list[str], code: str, words: str):
    run = spec.parent / f"bad-{code}"
    if code == "E664":
        import torch

        if not (getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()):
            code, words = "E906", "Metal"  # pick_device refuses mps first where there is none
    res = CliRunner().invoke(main, ["train", str(spec), "--out", str(run), "--quiet", *args])
    assert res.exit_code == 1, res.output
    assert f"error[{code}]" in res.output and words in res.output
    assert not run.exists()


def test_a_busy_master_port_is_reported(spec: Path):
    sock, port = _busy_port()
    run = spec.parent / "busy"
    try:
        res = CliRunner().invoke(main, ["train", str(spec), "--out", str(run), "--nproc", "2",
                                        "--master", f"127.0.0.1:{port}"])
    finally:
        sock.close()
    assert res.exit_code == 1
    assert "error[E663]" in res.output and f"port {port} is already in use" in res.output
    assert not run.exists()


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        kids += [int(k) for k in (task / "children").read_text().split()]
    return kids


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="finds the workers through /proc (Linux)")
def test_a_dying_worker_stops_the_run_with_a_clear_message(spec: Path):
    run = spec.parent / "dies"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "dlspec.cli", "train", str(spec), "--nproc", "2",
                             "--epochs", "100000", "--out", str(run), "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 90
        while not (run / "metrics.jsonl").exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert proc.poll() is None, proc.communicate()[1]
        # the workers are spawned processes; the drawing helper of curves.png (a fork) shares the parent's command line
        parent = Path(f"/proc/{proc.pid}/cmdline").read_bytes()
        workers = [k for k in _children(proc.pid) if Path(f"/proc/{k}/cmdline").read_bytes() != parent]
        assert len(workers) == 2
        os.kill(max(workers), signal.SIGKILL)  # the second worker started, rank 1
        t0 = time.monotonic()
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert time.monotonic() - t0 < 45, "the surviving worker must not wait for its dead peer"
    assert proc.returncode == 1
    assert "error[E666]: worker rank 1 was killed by signal SIGKILL" in stderr
    assert "Traceback" not in stderr
    assert not [p for p in run.rglob(".*")], "nothing half-written"
    weights = load_numpy(run / "last.safetensors")  # the last complete epoch's weights are intact
    assert set(weights) == {f"{n}.{p}" for n in ("fc1", "fc2", "head") for p in ("weight", "bias")}


def test_the_global_batch_is_split_evenly_and_reweighted():
    import torch

    from dlspec.train.distributed import DataParallel
    from dlspec.train.torch_loop import Tensors

    batch = Tensors([torch.arange(10.0)[:, None]], torch.arange(10))
    shares = []
    for rank in range(3):
        part, n, share = DataParallel(rank, 3, torch.device("cpu")).shard(batch)
        assert len(part) == n
        shares.append((part.y.tolist(), share))
    assert [s[0] for s in shares] == [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9]]
    # DDP averages the ranks' gradients of (share × mean over local examples): each example then
    # weighs share / (world × local) = 1 / global, as in the mean over the global batch
    for examples, share in shares:
        assert share / (3 * len(examples)) == pytest.approx(1 / 10)
    assert [s[1] for s in shares] == pytest.approx([1.2, 0.9, 0.9])
    short = Tensors([torch.zeros(1, 1)], torch.zeros(1, dtype=torch.long))
    _, n, share = DataParallel(1, 2, torch.device("cpu")).shard(short)
    assert (n, share) == (0, 0.0)
