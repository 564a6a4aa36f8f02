"""`dlspec train --compile` (dlspec/jit.py): the compiled forward trains like the eager one,
a compiler that fails falls back with W931, and compiled and eager runs resume each other's
checkpoints, which hold the plain module's weights (no `_orig_mod.` keys)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

torch = pytest.importorskip("torch")

from dlspec.jit import CompiledForward  # noqa: E402


def _mlp():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 32), torch.nn.ReLU(), torch.nn.Linear(32, 3))


def test_a_compiler_that_fails_falls_back_to_eager():
    said: list[str] = []
    model = _mlp()
    x = torch.randn(5, 4)

    def cannot_wrap(module):
        raise RuntimeError("no C++ compiler found")

    fwd = CompiledForward(model, said.append, compile_fn=cannot_wrap)
    assert torch.equal(fwd(x), model(x))
    assert fwd.failed.startswith("RuntimeError: no C++ compiler") and len(said) == 1 and "W931" in said[0]

    def fails_when_run(module):
        def run(*a):
            raise ValueError("backend compiler failed")
        return run

    said.clear()
    fwd = CompiledForward(model, said.append, compile_fn=fails_when_run)
    assert torch.equal(fwd(x), model(x)) and torch.equal(fwd(x), model(x))
    assert len(said) == 1 and "ValueError" in said[0]  # warned once, then eager without trying again


def _steps(forward, model, n=20):
    torch.manual_seed(1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    losses = []
    for i in range(n):
        x = torch.randn(16 if i % 7 else 13, 4)  # a smaller batch too, as an epoch's last one
        y = torch.randint(0, 3, (x.shape[0],))
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(forward(x), y)
        loss.backward()
        opt.step()
        losses.append(float(loss))
    return losses


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None, reason="TorchInductor needs a C++ compiler")
def test_compiled_losses_match_eager_over_20_steps():
    eager_model = _mlp()
    eager = _steps(eager_model, eager_model)
    model = _mlp()
    said: list[str] = []
    fwd = CompiledForward(model, said.append)
    got = _steps(fwd, model)
    assert fwd.failed is None, said
    assert max(abs(a - b) for a, b in zip(got, eager, strict=True)) <= 1e-4, (got, eager)
    for a, b in zip(model.state_dict().values(), eager_model.state_dict().values(), strict=True):
        assert torch.allclose(a, b, atol=1e-4)


def _train(spec: Path, run: Path, *extra: str) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", "dlspec.cli", "train", str(spec), "--out", str(run), "--threads", "1",
                        *extra], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Traceback" not in r.stderr
    return r


def _tensors(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path))


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None, reason="TorchInductor needs a C++ compiler")
@pytest.mark.parametrize("first,then", [("--compile", "--no-compile"), ("--no-compile", "--compile")])
def test_compiled_and_eager_runs_resume_each_other(tmp_path, first, then):
    spec = tmp_path / "iris.dls"  # a schedule that extends, a checkpoint every epoch
    text = (ROOT / "specs/iris_mlp.dls").read_text().replace("cosine()", "constant()")
    spec.write_text(text.replace("checkpoint(every=10, keep=1)", "checkpoint(every=1, keep=3)"))
    run = tmp_path / "run"
    r = _train(spec, run, "--epochs", "1", first)
    config = json.loads((run / "config.json").read_text())
    assert ("compile" in config) == (first == "--compile")
    if first == "--compile":
        assert config["compile"]["fell_back"] is None and "compile: warm-up" in r.stderr
    ck1 = run / "checkpoints" / "epoch-0001"
    weights = _tensors(ck1 / "model.safetensors")
    assert not [k for k in weights if "_orig_mod" in k]
    assert not [k for k in _tensors(run / "last.safetensors") if "_orig_mod" in k]
    state = _tensors(ck1 / "state.safetensors")
    r = _train(spec, run, "--epochs", "2", "--resume", then)
    assert "resuming after epoch 1" in r.stderr + r.stdout
    # the checkpoint it resumed from is kept as it was, tensor for tensor
    assert all(torch.equal(v, _tensors(ck1 / "model.safetensors")[k]) for k, v in weights.items())
    assert all(torch.equal(v, _tensors(ck1 / "state.safetensors")[k]) for k, v in state.items())
    ck2 = _tensors(run / "checkpoints" / "epoch-0002" / "model.safetensors")
    assert set(ck2) == set(weights) and any(not torch.equal(ck2[k], weights[k]) for k in weights)
    epochs = [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    assert epochs == [1, 2]
