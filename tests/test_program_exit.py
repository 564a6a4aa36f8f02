"""The `dlspec` program ends a command that only reads and prints (`check`, `summary`, `ir`)
without interpreter teardown (dlspec/cli/output.py): its output, exit code and `atexit` handlers
are those of an ordinary exit, and called in-process the same commands return as any other."""

from __future__ import annotations

import gc
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from dlspec.cli import main

ROOT = Path(__file__).resolve().parent.parent
RESNET = str(ROOT / "specs" / "resnet18.dls")
BROKEN = "model M {\n    input x: float32[batch, 4]\n    output x -> dense(3) -> conv2d(8, kernel=3)\n}\n"

# the program as the console script runs it, with an atexit handler registered first
_CHILD = """
import atexit, sys
atexit.register(lambda: print("ATEXIT RAN", flush=True))
from dlspec.cli import run
sys.argv = ["dlspec"] + sys.argv[1:]
run()
"""


def _program(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _CHILD, *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=120)


def test_quick_exit_keeps_output_exit_code_and_atexit(tmp_path):
    ok = _program("check", RESNET)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.splitlines() == [f"{RESNET}: ok (ResNet18; 0 recipes)", "ATEXIT RAN"]
    bad = tmp_path / "bad.dls"
    bad.write_text(BROKEN)
    fail = _program("check", str(bad))
    assert fail.returncode == 1
    assert "error[E3" in fail.stderr and "Traceback" not in fail.stderr
    assert fail.stdout.strip() == "ATEXIT RAN"
    ir = _program("ir", RESNET)
    assert ir.returncode == 0 and ir.stdout.rstrip().endswith("}\nATEXIT RAN")
    usage = _program("check", "--bogus")
    assert usage.returncode == 2 and "ATEXIT RAN" in usage.stdout


def test_quick_exit_commands_run_in_process_as_any_other():
    assert gc.isenabled()
    runner = CliRunner()
    first = runner.invoke(main, ["check", RESNET])
    second = runner.invoke(main, ["summary", RESNET])
    assert (first.exit_code, second.exit_code) == (0, 0)
    assert "ResNet18" in first.output and "ResNet18" in second.output
    assert gc.isenabled()  # collection is off only while such a command runs
