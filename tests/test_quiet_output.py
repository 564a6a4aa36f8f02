"""Quiet, honest output: `summary` labels per-sample and per-batch figures by what they are, and
the progress bar appears only on a terminal (or when asked)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from dlspec.cli import main
from dlspec.cli.run_commands import progress_wanted

SPEC = '''
model M {
    input x: float32[batch, 16]
    output x -> dense(8) -> relu() -> dense(3)
}
'''


def _summary(tmp_path, *sets):
    (tmp_path / "m.dls").write_text(SPEC)
    r = CliRunner().invoke(main, ["summary", str(tmp_path / "m.dls"), "--json", *sets])
    assert r.exit_code == 0, r.output
    return json.loads(r.output)


def test_summary_with_a_fixed_batch_reports_per_sample_and_per_batch_figures(tmp_path):
    one = _summary(tmp_path)
    many = _summary(tmp_path, "--set", "batch=32")
    assert "batch" not in one and many["batch"] == 32
    assert many["flops_per_sample"] == one["flops_per_sample"] == 2 * (16 * 8 + 8 * 3) + 8  # two multiply-add layers and a relu
    assert many["flops_per_batch"] == 32 * one["flops_per_sample"]
    assert many["activation_bytes_per_sample"] == one["activation_bytes_per_sample"] == 4 * (8 + 8 + 3)
    assert many["activation_bytes_per_batch"] == 32 * one["activation_bytes_per_sample"]
    assert [r["flops"] for r in many["layers"]] == [r["flops"] for r in one["layers"]]
    r = CliRunner().invoke(main, ["summary", str(tmp_path / "m.dls"), "--set", "batch=32"])
    assert "FLOPs per batch:" in r.output and "(batch of 32)" in r.output and "per batch of 32" in r.output


def test_a_progress_bar_only_on_a_terminal_or_when_asked(monkeypatch):
    import sys

    monkeypatch.setattr(sys.stderr, "isatty", lambda: False, raising=False)
    assert progress_wanted(None, False) is False
    assert progress_wanted(True, False) is True
    assert progress_wanted(True, True) is False  # --quiet wins
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    assert progress_wanted(None, False) is True and progress_wanted(False, False) is False


TRAIN = '''
model M {
    input x: float32[batch, 4]
    output x -> dense(8) -> relu() -> dense(3)
}

train M {
    data    = builtin("iris", split=[0.6, 0.2, 0.2])
    loss    = cross_entropy()
    epochs  = 2
    batch   = 32
}
'''


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["torch", "tf"])
def test_a_log_file_gets_one_line_per_epoch_and_no_framework_noise(tmp_path, backend):
    """stderr to a file (not a terminal): no progress-bar frames, none of TensorFlow's own lines."""
    import os
    import subprocess
    import sys

    from .helpers import ROOT

    (tmp_path / "m.dls").write_text(TRAIN)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    p = subprocess.run([sys.executable, "-m", "dlspec.cli", "train", "m.dls", "--backend", backend, "--out", "run"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    assert "\r" not in p.stderr and "batch/s" not in p.stderr and "it/s" not in p.stderr
    assert sum(line.startswith("epoch ") for line in p.stderr.splitlines()) == 2
    for noise in ("oneDNN", "absl", "cpu_feature_guard", "TF_ENABLE_ONEDNN_OPTS", "I0000"):
        assert noise not in p.stderr, p.stderr
