"""curves.png drawn by the forked helper equals the one drawn in process, and every way the
helper can fail still leaves a complete file and no process behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="the helper needs fork")

RECORDS = [
    {"epoch": e, "loss": 1.0 / e, "accuracy": 0.5 + e / 20, "val_loss": 1.2 / e, "val_accuracy": 0.45 + e / 20,
     "lr": 0.01, "time": 0.1}
    for e in range(1, 6)
]


def _run(code: str, tmp_path: Path, env: dict[str, str] | None = None) -> dict:
    script = textwrap.dedent(code)
    full_env = {**os.environ, **(env or {})}
    out = subprocess.run([sys.executable, "-c", script, str(tmp_path), json.dumps(RECORDS)],
                         capture_output=True, text=True, timeout=120, env=full_env)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def _pixels(path: Path):
    from matplotlib.image import imread

    return imread(str(path))


PRELUDE = """
import json, os, sys
from pathlib import Path
from dlspec.train import plotter
tmp = Path(sys.argv[1]); records = json.loads(sys.argv[2])
"""


def test_helper_and_in_process_draw_the_same_figure(tmp_path):
    res = _run(PRELUDE + """
started = plotter.start()
pid = plotter._helper.pid
plotter.draw(records, "run", tmp / "helper.png")
plotter.stop()
gone = False
try:
    os.kill(pid, 0)
except ProcessLookupError:
    gone = True
plotter.draw_curves(records, "run", tmp / "here.png")
print(json.dumps({"started": started, "gone": gone}))
""", tmp_path)
    assert res == {"started": True, "gone": True}
    a, b = _pixels(tmp_path / "helper.png"), _pixels(tmp_path / "here.png")
    assert a.shape == b.shape and a.shape[1] > a.shape[0] > 100  # two panels side by side
    assert (a == b).all()


def test_killed_helper_falls_back_to_drawing_here(tmp_path):
    res = _run(PRELUDE + """
import signal
assert plotter.start()
pid = plotter._helper.pid
os.kill(pid, signal.SIGKILL)
out = plotter.draw(records, "run", tmp / "c.png")
reaped = False
try:
    os.waitpid(pid, os.WNOHANG)
except ChildProcessError:
    reaped = True  # stop() waited for it: no zombie left
print(json.dumps({"helper": plotter._helper is not None, "reaped": reaped, "out": str(out)}))
""", tmp_path)
    assert res["helper"] is False and res["reaped"] is True
    assert Path(res["out"]).stat().st_size > 10_000
    assert not list(tmp_path.glob("*.tmp*"))  # the atomic write left nothing half-written


def test_helper_reports_a_drawing_error_and_the_trainer_sees_it(tmp_path):
    # a bad job (no quantity to plot) fails in the helper; draw() redraws here and raises the real error
    res = _run(PRELUDE + """
assert plotter.start()
try:
    plotter.draw([{"epoch": 1, "lr": 0.1}], "run", tmp / "d.png")
    print(json.dumps({"raised": None}))
except Exception as exc:
    print(json.dumps({"raised": type(exc).__name__, "helper": plotter._helper is not None}))
""", tmp_path)
    assert res["raised"] is not None and res["helper"] is False
    assert not (tmp_path / "d.png").exists()


@pytest.mark.parametrize("setup", ["env", "framework"])
def test_no_helper_where_a_fork_is_unsafe_or_refused(tmp_path, setup):
    env = {"DLSPEC_PLOT_IN_PROCESS": "1"} if setup == "env" else {}
    pre = "import torch\n" if setup == "framework" else ""
    res = _run(pre + PRELUDE + """
started = plotter.start()
plotter.draw(records, "run", tmp / "e.png")
print(json.dumps({"started": started, "size": (tmp / "e.png").stat().st_size}))
""", tmp_path, env)
    assert res["started"] is False and res["size"] > 10_000
