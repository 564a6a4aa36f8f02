"""Generated code people keep: the PyTorch and Keras source of every model of `specs/` passes
`ruff check` and `ruff format --check` under ruff's default settings; files are written with a
plain file's mode (0644 under the usual umask) and `--script` output is executable; headers name
the spec relative to its folder."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from dlspec.api import Spec
from dlspec.backends.keras import generate as keras_generate
from dlspec.backends.torch import generate as torch_generate
from dlspec.passes import optimize
from dlspec.program import compile_file

from .helpers import ROOT, SPEC_DIR


def _sources() -> dict[str, str]:
    out: dict[str, str] = {}
    for path in sorted(SPEC_DIR.glob("*.dls")):
        prog = compile_file(path)
        for name in prog.models:
            graph, _, _ = optimize(Spec(path, prog).graph(name), 1)
            out[f"{path.stem}_{name}_torch.py"] = torch_generate(graph)
            out[f"{path.stem}_{name}_keras.py"] = keras_generate(graph)
    return out


def _ruff(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ruff", *args, "--isolated", "--no-cache", "."],
                          cwd=cwd, capture_output=True, text=True, timeout=120)


def test_generated_source_of_every_spec_is_ruff_clean(tmp_path):
    sources = _sources()
    assert len(sources) >= 40
    for name, src in sources.items():
        (tmp_path / name).write_text(src)
        assert str(ROOT) not in src.splitlines()[0], f"{name}: the header holds an absolute path"
    lint = _ruff("check", cwd=tmp_path)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    fmt = _ruff("format", "--check", cwd=tmp_path)
    assert fmt.returncode == 0, fmt.stdout + fmt.stderr


def test_torch_source_has_a_class_per_block_sharing_classes_across_sizes():
    src = torch_generate(compile_file(SPEC_DIR / "resnet50.dls").models["ResNet50"])
    classes = [line for line in src.splitlines() if line.startswith("class ")]
    # a handful of classes for 16 bottlenecks: uses differing only in sizes share one
    assert 3 <= len(classes) <= 8, classes
    assert "class Bottleneck(nn.Module):" in src


@pytest.mark.parametrize("script", [False, True])
def test_compile_writes_plain_file_modes(tmp_path, script):
    out = tmp_path / ("train.py" if script else "model.py")
    args = ["compile", str(SPEC_DIR / "iris_mlp.dls"), "--target", "torch", "-o", str(out)]
    if script:
        args.append("--script")
    old = os.umask(0o022)
    try:
        res = subprocess.run([sys.executable, "-m", "dlspec.cli", *args], capture_output=True, text=True, timeout=120)
    finally:
        os.umask(old)
    assert res.returncode == 0, res.stderr
    mode = stat.S_IMODE(out.stat().st_mode)
    assert mode == (0o755 if script else 0o644), oct(mode)
    assert str(SPEC_DIR) not in out.read_text()
