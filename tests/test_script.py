"""`dlspec compile --script`: the standalone training script runs under torchrun with two processes
where dlspec cannot be imported, and its weights load into the dlspec-built module; it trains with
dlspec's one epoch loop (rendered from train/loop.py), reaches what `dlspec train` reaches, resumes
bit-exact after a kill, and never writes through a symbolic link."""

from __future__ import annotations

import ast
import builtins
import importlib.util
import inspect
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
    assert not [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level], "no relative import"
    top = {(a.name if isinstance(n, ast.Import) else n.module).split(".")[0]
           for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom)) for a in n.names}
    assert "torch" in top and "numpy" in top
    assert top - {"numpy", "torch", "safetensors", "sklearn"} <= set(sys.stdlib_module_names)
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


@pytest.mark.slow  # runs the script's command line in several subprocesses
def test_the_script_has_a_usable_command_line(script_dir: Path):
    r = subprocess.run([sys.executable, "train.py", "--help"], cwd=script_dir, env=without_dlspec(script_dir),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0
    for flag in ("--data", "--epochs", "--batch", "--lr", "--out", "--resume"):
        assert flag in r.stdout
    assert "'features'" in r.stdout and "points.npz" in r.stdout
    bad = subprocess.run([sys.executable, "train.py", "--data", "missing.npz", "--out", "no-data"], cwd=script_dir,
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


# ---- the one epoch loop ---------------------------------------------------------------------------


def _script_namespace(script: Path) -> dict:
    ns: dict = {"__name__": "standalone"}
    exec(compile(script.read_text(), str(script), "exec"), ns)
    return ns


def test_the_script_trains_with_dlspecs_own_epoch_loop(script_dir: Path):
    from dlspec.train import loop, metrics, run
    from dlspec.train.script import _globals_used, _without_relative_imports

    text = (script_dir / "train.py").read_text()
    for obj in (loop.EpochLoop, loop.SupervisedLoop, loop.Stepper, loop.Outcome, run.EarlyStopping, run.is_better,
                run.epoch_line, run.checkpoint_dirs, metrics.compute):
        # the source as written, less a function-level `from .metrics import ...` (rendered beside it)
        assert _without_relative_imports(inspect.getsource(obj).strip("\n"), "dlspec.train")[0] in text, obj.__name__
    # the epoch loop is written once in dlspec/: the script gets it by rendering
    loops = [p.relative_to(ROOT).as_posix() for p in sorted((ROOT / "dlspec").rglob("*.py"))
             if "for epoch in range" in p.read_text()]
    assert loops == ["dlspec/train/loop.py"]
    # every top-level name once, and every name the script's code reads is defined in it
    tree = ast.parse(text)
    defined = [n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))]
    assert len(defined) == len(set(defined)), sorted({d for d in defined if defined.count(d) > 1})
    ns = _script_namespace(script_dir / "train.py")
    assert isinstance(ns["Trainer"].__mro__[1].__dict__["loop"], property)  # the loop's own Stepper
    missing = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            used, _ = _globals_used(ast.get_source_segment(text, node))
            gone = {n for n in used if n not in ns and not hasattr(builtins, n)}
            if gone:
                missing[node.name] = sorted(gone)
    assert not missing


SAME_AS_TRAIN = SPEC.replace('split=[0.8, 0.2])', 'split=[0.8, 0.2], shuffle=false)') \
    .replace("adam(lr=1e-2)", "adam(lr=5e-2)").replace("epochs    = 3", "epochs    = 15") \
    .replace("patience=5", "patience=3").replace("checkpoint(every=1)", "checkpoint(every=2, keep=2)")


def _results(run: Path) -> dict:
    """What a run leaves that must not depend on who trained it (the epoch times aside)."""
    from safetensors.numpy import load_file

    logs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    for rec in logs:
        rec.pop("time")
    return {"logs": logs, "test": json.loads((run / "test_metrics.json").read_text()),
            "best.json": json.loads((run / "best.json").read_text()),
            **{w: load_file(run / f"{w}.safetensors") for w in ("best", "last")}}


def _assert_same(a: dict, b: dict) -> None:
    assert a["logs"] == b["logs"] and a["test"] == b["test"] and a["best.json"] == b["best.json"]
    for w in ("best", "last"):
        assert a[w].keys() == b[w].keys()
        for k in a[w]:
            np.testing.assert_array_equal(a[w][k], b[w][k], err_msg=f"{w}: {k}")


@pytest.mark.slow
def test_the_script_reaches_what_dlspec_train_reaches_and_resumes_bit_exact(tmp_path: Path, script_dir: Path):
    """Unshuffled data (the script's split is then dlspec's), dropout, warm-up then cosine, clipping,
    early stopping after the best epoch: the script, run where dlspec cannot be imported, logs the
    same numbers and writes the same best/last weights, best.json and test metrics (of the best
    weights) as `dlspec train`; killed mid-run and resumed, it ends where the uninterrupted run ends."""
    from dlspec.train.session import train

    (tmp_path / "points.npz").write_bytes((script_dir / "points.npz").read_bytes())
    (tmp_path / "net.dls").write_text(SAME_AS_TRAIN)
    (tmp_path / "train.py").write_text(generate_script(compile_file(tmp_path / "net.dls"), tmp_path / "net.dls"))
    env = without_dlspec(script_dir)
    outcome = train(tmp_path / "net.dls", out=tmp_path / "dlspec-run", device="cpu", progress=False, echo=lambda s: None)
    assert outcome.stopped_early and outcome.best["epoch"] < outcome.epochs_run  # best and last differ
    ours = _results(tmp_path / "dlspec-run")

    r = subprocess.run([sys.executable, "train.py", "--out", "whole"], cwd=tmp_path, env=env, capture_output=True,
                       text=True, timeout=180)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "early stop: val_loss has not improved for 3 epochs" in r.stderr
    whole = _results(tmp_path / "whole")
    _assert_same(whole, ours)
    assert len(whole["logs"]) == outcome.epochs_run
    assert sorted(p.name for p in (tmp_path / "whole" / "checkpoints").iterdir()) == \
        [f"epoch-{e:04d}" for e in (outcome.epochs_run - 1 - (outcome.epochs_run % 2 == 0), outcome.epochs_run)]

    # SIGKILL once epoch 5 is logged (epoch 4's checkpoint is on disk), then --resume
    p = subprocess.Popen([sys.executable, "train.py", "--out", "killed"], cwd=tmp_path, env=env,
                         stderr=subprocess.PIPE, text=True)
    try:
        for line in p.stderr:
            if line.startswith("epoch 5/"):
                p.kill()
                break
    finally:
        p.kill()
        p.wait(timeout=60)
    assert not (tmp_path / "killed" / "test_metrics.json").exists()
    r = subprocess.run([sys.executable, "train.py", "--out", "killed", "--resume"], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resuming after epoch 4" in r.stderr or "resuming after epoch 5" in r.stderr
    _assert_same(_results(tmp_path / "killed"), whole)


# ---- outputs: atomic, never through a symbolic link -------------------------------------------------


@pytest.mark.parametrize("planted", ["metrics.jsonl", pytest.param("checkpoints", marks=pytest.mark.slow)])
def test_the_script_refuses_to_write_through_a_planted_link(script_dir: Path, tmp_path: Path, planted: str):
    victim = tmp_path / "victim"
    if planted == "checkpoints":
        victim.mkdir()
        (victim / "keep.txt").write_text("precious\n")
    else:
        victim.write_text("precious\n")
    out = tmp_path / "out"
    out.mkdir()
    (out / planted).symlink_to(Path("..") / "victim")
    r = subprocess.run([sys.executable, str(script_dir / "train.py"), "--out", str(out), "--epochs", "1"],
                       cwd=script_dir, env=without_dlspec(script_dir), capture_output=True, text=True, timeout=120)
    assert r.returncode == 1
    assert "Traceback" not in r.stderr and f"{out / planted} is a symbolic link" in r.stderr
    if planted == "checkpoints":
        assert sorted(p.name for p in victim.iterdir()) == ["keep.txt"]
    else:
        assert victim.read_text() == "precious\n"
    assert (out / planted).is_symlink() and sorted(p.name for p in out.iterdir()) == [planted]


def test_every_write_of_the_script_is_atomic_and_refuses_links(script_dir: Path, tmp_path: Path):
    """A link planted while the script runs: each write checks again (a temporary file beside the
    target, then os.replace), so nothing reaches the link's target."""
    ns = _script_namespace(script_dir / "train.py")
    out = tmp_path / "out"
    (out / "checkpoints").mkdir(parents=True)
    ns["OUT"] = out
    ns["atomic_write_text"](out / "metrics.jsonl", "one\n")
    ns["atomic_write_text"](out / "metrics.jsonl", "two\n")
    assert (out / "metrics.jsonl").read_text() == "two\n" and sorted(p.name for p in out.iterdir()) == \
        ["checkpoints", "metrics.jsonl"]
    (tmp_path / "victim").write_text("precious\n")
    (out / "test_metrics.json").symlink_to(tmp_path / "victim")
    (out / "checkpoints" / "epoch-0002").symlink_to(tmp_path, target_is_directory=True)
    with pytest.raises(SystemExit) as e:
        ns["atomic_write_json"](out / "test_metrics.json", {"loss": 1.0})
    assert e.value.code == 1
    with pytest.raises(SystemExit):
        ns["commit_checkpoint"](out, 2, lambda tmp: (tmp / "state.json").write_text("{}"), 3)
    assert (tmp_path / "victim").read_text() == "precious\n" and (out / "test_metrics.json").is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "victim"]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["epoch-0002"]  # no temporary left
