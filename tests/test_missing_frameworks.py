"""Every command without a framework it needs answers with a coded error and the install line,
never a traceback: each of torch, tensorflow, onnx and onnxruntime is made unimportable in a
fresh interpreter (a sitecustomize whose import finder answers for it as for a package that is not installed) and every command is run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import click
import numpy as np
import pytest
from click.testing import CliRunner

from dlspec.cli.output import Group, missing_framework

from .helpers import ROOT

SPEC = '''
model Tiny {
    input x: float32[batch, 4]
    h = dense(x, 8)
    h = relu(h)
    output y = dense(h, 3)
}

train Tiny {
    data      = builtin("iris", split=[0.6, 0.2, 0.2])
    loss      = cross_entropy()
    optimizer = adam(lr=0.01)
    epochs    = 1
    batch     = 32
    metrics   = [accuracy]
    seed      = 1
}
'''

BLOCKER = '''
import os, sys

BLOCKED = set(filter(None, os.environ.get("DLSPEC_TEST_BLOCK", "").split(",")))


class Blocker:
    """Answers for the blocked packages as Python does for one that is not installed."""

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, Blocker())
'''


def test_a_missing_framework_becomes_e910_with_the_install_line():
    @click.group(cls=Group)
    def main() -> None:
        pass

    @main.command()
    def needs() -> None:
        import importlib

        importlib.import_module("a_framework_that_is_not_there")

    @main.command()
    def torchy() -> None:
        raise ModuleNotFoundError("No module named 'torch'", name="torch")

    r = CliRunner().invoke(main, ["torchy"])
    assert r.exit_code == 1 and "E910" in r.output and "pip install 'dlspec[torch]'" in r.output
    assert "`dlspec torchy` needs PyTorch" in r.output
    r = CliRunner().invoke(main, ["needs"])  # not a framework: a bug, which keeps its traceback
    assert isinstance(r.exception, ModuleNotFoundError)
    for module, extra in (("tensorflow", "tf"), ("onnxruntime", "onnx"), ("onnx.helper", "onnx")):
        exc = missing_framework(ModuleNotFoundError(name=module), "x")
        assert exc.code == "E910" and f"dlspec[{extra}]" in exc.hint


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    from dlspec.train import session

    root = tmp_path_factory.mktemp("frameworks")
    (root / "tiny.dls").write_text(SPEC)
    session.train(root / "tiny.dls", out=root / "run", progress=False, echo=lambda s: None)
    np.save(root / "x.npy", np.zeros((2, 4), np.float32))
    r = CliRunner().invoke(__import__("dlspec.cli", fromlist=["main"]).main,
                           ["compile", str(root / "tiny.dls"), "--target", "onnx", "-o", str(root / "tiny.onnx")])
    assert r.exit_code == 0, r.output
    (root / "site").mkdir()
    (root / "site" / "sitecustomize.py").write_text(BLOCKER)
    return {"root": root, "spec": root / "tiny.dls", "run": root / "run", "x": root / "x.npy",
            "onnx": root / "tiny.onnx"}


def _commands(w: dict[str, Path], out: Path) -> dict[str, list[str]]:
    spec, run, x, onnx = (str(w[k]) for k in ("spec", "run", "x", "onnx"))
    return {
        "check": ["check", spec],
        "summary": ["summary", spec],
        "ir": ["ir", spec],
        "compile torch": ["compile", spec, "--target", "torch"],
        "compile keras": ["compile", spec, "--target", "keras"],
        "compile onnx": ["compile", spec, "--target", "onnx", "-o", str(out / "m.onnx")],
        "explain": ["explain", spec],
        "verify": ["verify", spec],
        "train": ["train", spec, "--out", str(out / "run"), "--quiet"],
        "evaluate": ["evaluate", run],
        "predict run": ["predict", run, "--input", x],
        "predict onnx": ["predict", onnx, "--input", x],
        "export onnx": ["export", run, "--target", "onnx", "-o", str(out / "e.onnx")],
        "export torchscript": ["export", run, "--target", "torchscript", "-o", str(out / "e.pt")],
        "export keras": ["export", run, "--target", "keras", "-o", str(out / "e.keras")],
        "features": ["features", run, "-o", str(out / "f.npz")],
        "sample": ["sample", run, "-o", str(out / "samples")],
        "import": ["import", onnx, "-o", str(out / "imported.dls")],
    }


#: the commands that need each blocked module (the others must still work, or fail for another
#: reason with a coded error)
NEEDS = {
    "torch": {"train", "evaluate", "export torchscript", "features"},
    "tensorflow": {"export keras"},
    "onnx": {"compile onnx", "export onnx", "import"},
    "onnxruntime": {"predict onnx"},
}


#: what one fresh interpreter (with the blocker installed) runs: every command in turn, in process,
#: each answer (exit code, output, and an exception that escaped the command's error handling, which
#: a user would see as a traceback) printed as one JSON line. One interpreter per blocked framework
#: instead of one per command: the framework imports are paid once.
CHILD = '''
import json, sys, traceback
from click.testing import CliRunner
from dlspec.cli import main

for name, args in json.loads(sys.argv[1]).items():
    r = CliRunner().invoke(main, args)
    escaped = None
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        escaped = "".join(traceback.format_exception(*r.exc_info))
    print(json.dumps({"name": name, "code": r.exit_code, "text": r.output, "escaped": escaped}), flush=True)
'''


@pytest.mark.slow
@pytest.mark.parametrize("blocked", ["torch", "tensorflow", "onnx", "onnxruntime"])
def test_every_command_without_a_framework(world, tmp_path, blocked):
    import json

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(world["root"] / "site"), str(ROOT)]),
           "DLSPEC_TEST_BLOCK": blocked}
    commands = _commands(world, tmp_path)
    p = subprocess.run([sys.executable, "-c", CHILD, json.dumps(commands)], env=env, capture_output=True,
                       text=True, timeout=600, cwd=tmp_path)
    answers = {a["name"]: a for a in map(json.loads, filter(None, p.stdout.splitlines()))}
    assert p.returncode == 0 and set(answers) == set(commands), f"exit {p.returncode}\n{p.stderr[-3000:]}"
    problems = []
    for name, a in answers.items():
        code, text = a["code"], a["text"]
        if a["escaped"] or "Traceback" in text or code not in (0, 1):
            problems.append(f"{name}: exit {code}\n{(a['escaped'] or text)[-1500:]}")
        elif name in NEEDS[blocked]:
            if code != 1 or "pip install 'dlspec[" not in text or "error[E" not in text:
                problems.append(f"{name}: needs {blocked} but answered exit {code}:\n{text[-800:]}")
        elif name in ("check", "summary", "ir", "compile torch", "compile keras", "explain"):
            if code != 0:
                problems.append(f"{name}: imports no framework but failed without {blocked}:\n{text[-800:]}")
        elif name == "verify":
            if code != 0 or "left out" not in text:
                problems.append(f"verify: should compare the installed backends and say which it left out:\n"
                                f"{text[-800:]}")
        elif name == "predict run" and blocked == "torch" and code != 0:
            problems.append(f"predict run: should default to onnxruntime without torch:\n{text[-800:]}")
    assert not problems, "\n\n".join(problems)
