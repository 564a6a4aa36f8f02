"""`dlspec compile --script`: the standalone training script runs under torchrun with two processes
where dlspec cannot be imported, and its weights load into the dlspec-built module."""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dlspec.errors import DlspecError
from dlspec.program import compile_file
from dlspec.train.script import generate_script

from .helpers import ROOT, free_port

SPEC = '''
model Net {
    input x: float32[batch, 6]
    output x -> dense(12) as hidden -> relu() -> dropout(0.1) -> dense(4) as head
}
train Net {
    data      = npz("points.npz", x="features", y="labels", split=[0.8, 0.2])
    loss      = cross_entropy(label_smoothing=0.05)
    optimizer = adam(lr=1e-2)
    schedule  = warmup(epochs=1) then cosine()
    epochs    = 3
    batch     = 20
    clip_grad = norm(1.0)
    metrics   = [accuracy, macro_f1]
    early_stop(monitor=val_loss, patience=5)
    checkpoint(every=1)
}
'''


@pytest.fixture(scope="module")
def script_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("script")
    rng = np.random.default_rng(1)
    x = rng.normal(size=(150, 6)).astype(np.float32)
    y = np.argmax(x[:, :4] + 0.3 * rng.normal(size=(150, 4)), axis=1).astype(np.int64)
    np.savez(folder / "points.npz", features=x, labels=y)
    (folder / "net.dls").write_text(SPEC)
    (folder / "train.py").write_text(generate_script(compile_file(folder / "net.dls"), folder / "net.dls"))
    # a `dlspec` package that refuses to import, first on the path: the script must not need dlspec
    blocker = folder / "blocker" / "dlspec"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('the standalone script must not import dlspec')\n")
    return folder


def without_dlspec(folder: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(folder / "blocker")}


def test_the_script_imports_only_torch_numpy_and_the_standard_library(script_dir: Path):
    tree = ast.parse((script_dir / "train.py").read_text())
    top = {(a.name if isinstance(n, ast.Import) else n.module).split(".")[0]
           for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom)) for a in n.names}
    assert top <= {"__future__", "argparse", "csv", "json", "math", "os", "sys", "time", "datetime",
                   "numpy", "torch", "safetensors", "sklearn"}
    probe = subprocess.run([sys.executable, "-c", "import dlspec"], env=without_dlspec(script_dir),
                           capture_output=True, text=True, cwd=script_dir)
    assert probe.returncode != 0 and "must not import dlspec" in probe.stderr


@pytest.mark.slow
def test_two_processes_under_torchrun_train_and_write_dlspec_weights(script_dir: Path):
    import torch

    from dlspec.backends.torch import build_module
    from dlspec.weights import load_graph_weights

    out = script_dir / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
           str(free_port()), "train.py", "--out", str(out), "--epochs", "3"]
    r = subprocess.run(cmd, cwd=script_dir, env=without_dlspec(script_dir), capture_output=True, text=True,
                       timeout=180)
    assert r.returncode == 0, r.stderr[-3000:]
    logs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in logs] == [1, 2, 3], "rank 0 alone writes one line per epoch"
    assert logs[-1]["loss"] < logs[0]["loss"]
    test = json.loads((out / "test_metrics.json").read_text())
    assert set(test) == {"loss", "accuracy", "macro_f1"} and test["accuracy"] > 0.4  # 4 classes: chance 0.25

    graph = compile_file(script_dir / "net.dls").recipe_graphs["Net"]
    arrays = load_graph_weights(graph, out / "last.safetensors", strict=True)  # every name and shape
    ours = build_module(graph).eval()
    ours.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in arrays.items()})
    spec = importlib.util.spec_from_file_location("standalone_train", script_dir / "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    theirs = module.Net().eval()
    theirs.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in arrays.items()})
    x = torch.from_numpy(np.load(script_dir / "points.npz")["features"][:32])
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), rtol=0, atol=0)

    # resume with one process (checkpoints are rank-agnostic) to a 4th epoch
    r = subprocess.run([sys.executable, "train.py", "--out", str(out), "--epochs", "4", "--resume"],
                       cwd=script_dir, env=without_dlspec(script_dir), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resuming after epoch 3" in r.stderr
    assert [json.loads(line)["epoch"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3, 4]


def test_the_script_has_a_usable_command_line(script_dir: Path):
    r = subprocess.run([sys.executable, "train.py", "--help"], cwd=script_dir, env=without_dlspec(script_dir),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0
    for flag in ("--data", "--epochs", "--batch", "--lr", "--out", "--resume"):
        assert flag in r.stdout
    assert "'features'" in r.stdout and "points.npz" in r.stdout
    bad = subprocess.run([sys.executable, "train.py", "--data", "missing.npz"], cwd=script_dir,
                         env=without_dlspec(script_dir), capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and "cannot read missing.npz" in bad.stderr and "Traceback" not in bad.stderr


def test_spec_strings_enter_the_script_as_literals(tmp_path: Path):
    odd = 'we"ird\'\\ \n""" name.npz'
    text = SPEC.replace('"points.npz"', json.dumps(odd))
    (tmp_path / "odd.dls").write_text(text)
    src = generate_script(compile_file(tmp_path / "odd.dls"), tmp_path / 'odd"""\n.dls')
    tree = ast.parse(src)  # still valid Python
    recipe = next(n for n in tree.body if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "RECIPE")
    assert json.loads(ast.literal_eval(recipe.value.args[0]))["data"]["path"] == odd


@pytest.mark.parametrize("spec, code", [("dcgan.dls", "E668"), ("digits_distill.dls", "E668"),
                                        ("digits_multitask.dls", "E669")])
def test_recipes_the_script_cannot_express_are_refused(spec: str, code: str):
    with pytest.raises(DlspecError) as e:
        generate_script(compile_file(ROOT / "specs" / spec), ROOT / "specs" / spec)
    assert e.value.diagnostics[0].code == code


def test_every_single_model_spec_gets_a_valid_script():
    done = 0
    for spec in sorted((ROOT / "specs").glob("*.dls")):
        prog = compile_file(spec)
        for recipe in prog.recipes:
            graph = prog.recipe_graphs.get(recipe.name)
            if recipe.kind != "supervised" or graph is None or len(graph.inputs) != 1 or len(graph.outputs) != 1:
                continue
            compile(generate_script(prog, spec, recipe.name), f"{spec.name}.train.py", "exec")
            done += 1
    assert done >= 12
