"""A kill -9 soak: `dlspec train` killed with SIGKILL at seeded random moments — before its first
checkpoint, during an epoch, and inside checkpoint writes (when a `checkpoints/.epoch-*`
temporary folder appears) — each time resumed once with `--resume`, ends bit for bit where an
uninterrupted run ends: the last and best weights, every logged value (but the time), the test
metrics. Nothing in dlspec knows it is being tested: the kills come from watching the run folder."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from dlspec.weights import load_numpy

#: wide enough that a checkpoint (weights, Adam's two moments, their digests) takes a moment to write
SPEC = '''
model Wide {
    input x: float32[batch, 4]
    output x -> dense(1024) as fc1 -> relu() -> dropout(0.2) -> dense(1024) as fc2 -> relu() -> dense(3) as head
}
train Wide {
    data      = builtin("iris", split=[0.6, 0.2, 0.2])
    loss      = cross_entropy()
    optimizer = adam(lr=0.001)
    schedule  = warmup(epochs=1) then cosine()
    epochs    = 10
    batch     = 16
    metrics   = [accuracy]
    checkpoint(every=1, keep=2)
    seed      = 5
}
'''


def command(spec: Path, run: Path, resume: bool) -> list[str]:
    # one thread given, not `auto`: auto times the steps and keeps the faster setting, and on a busy
    # machine the uninterrupted run and the first cut one may choose differently (the float sums of
    # a step differ in their last bits between thread counts); a resume reuses the recorded choice
    return [sys.executable, "-m", "dlspec.cli", "train", str(spec), "--out", str(run), "--device", "cpu", "--quiet",
            "--threads", "1", *(["--resume"] if resume else [])]


def epochs_logged(run: Path) -> int:
    try:
        return len((run / "metrics.jsonl").read_text().splitlines())
    except OSError:
        return 0


def in_checkpoint_write(run: Path) -> bool:
    root = run / "checkpoints"
    try:
        return any(p.name.startswith(".epoch-") for p in root.iterdir())
    except OSError:
        return False


def run_until(proc: subprocess.Popen, ready, timeout: float = 40.0) -> bool:
    """Poll until `ready()`; SIGKILL the process then. False when it finished first."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            return False
        if ready():
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.0005)
    proc.kill()
    proc.wait()
    raise AssertionError("the run neither reached the kill point nor finished")


def logged(run: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k != "time"}
            for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_runs_killed_with_sigkill_and_resumed_end_bit_for_bit_like_an_uninterrupted_one(tmp_path: Path):
    spec = tmp_path / "wide.dls"
    spec.write_text(SPEC)
    rng = random.Random(20261203)
    full = tmp_path / "full"
    r = subprocess.run(command(spec, full, False), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr

    run = tmp_path / "cut"
    # the kill points, in order: before the first checkpoint; inside the write of a checkpoint at a
    # random epoch; at a random moment of a random epoch; inside another checkpoint write
    first = rng.randint(2, 4)
    during = rng.randint(first + 1, 7)
    moment = rng.uniform(0.0, 0.05)
    points = [
        ("before the first checkpoint", lambda: (run / "config.json").is_file() and not (run / "checkpoints").exists()),
        (f"writing checkpoint {first}", lambda: epochs_logged(run) >= first and in_checkpoint_write(run)),
        (f"{moment:.3f}s into epoch {during}", None),
        ("writing a later checkpoint", lambda: epochs_logged(run) >= during + 1 and in_checkpoint_write(run)),
    ]
    kills = []
    resume = False
    for what, ready in points:
        proc = subprocess.Popen(command(spec, run, resume), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if ready is None:
            start = [None]

            def ready(start=start) -> bool:
                if start[0] is None and epochs_logged(run) >= during - 1:
                    start[0] = time.monotonic()
                return start[0] is not None and time.monotonic() - start[0] >= moment

        killed = run_until(proc, ready)
        if not killed:
            assert proc.returncode == 0, proc.stderr.read().decode()
            break
        kills.append(what)
        resume = True  # each kill is resumed once (the resume itself may be the next one killed)
    assert len(kills) == len(points), kills  # every kill point was reached, none missed
    r = subprocess.run(command(spec, run, True), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr

    for name in ("last.safetensors", "best.safetensors"):
        a, b = load_numpy(full / name), load_numpy(run / name)
        assert a.keys() == b.keys()
        for k in a:
            np.testing.assert_array_equal(a[k], b[k], err_msg=f"{name}: {k} (kills: {kills})")
    assert logged(full) == logged(run), kills
    assert json.loads((full / "test_metrics.json").read_text()) == json.loads((run / "test_metrics.json").read_text())
    assert json.loads((full / "best.json").read_text()) == json.loads((run / "best.json").read_text())
    # nothing an interrupted write left behind survives the resumes
    assert not [p for p in run.rglob(".*")], sorted(str(p) for p in run.rglob(".*"))
