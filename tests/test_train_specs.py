"""Every recipe in `specs/` trains: one epoch each on its built-in data, through `dlspec train`'s
session API. Transfer learning runs after its pre-training; distillation needs a trained teacher,
so it is trained in tests/test_programs.py with the other programs."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest

from dlspec import compile_file
from dlspec.errors import DlspecError
from dlspec.train import session

from .helpers import quiet, spec_files, spec_path

pytestmark = pytest.mark.slow  # a training run per recipe

SPECS = spec_files()
TRANSFER = {"digits_finetune.dls"}  # needs its base trained first: see the test below
NEEDS_TEACHER = {"digits_distill.dls"}  # tests/test_programs.py distils from a teacher it trains


def _recipes():
    for spec in SPECS:
        for r in compile_file(spec).recipes:
            if spec.name not in TRANSFER | NEEDS_TEACHER:
                yield pytest.param(spec, r, id=f"{spec.name}:{r.name}")


@pytest.mark.parametrize("spec,recipe", list(_recipes()))
def test_recipe_trains_one_epoch(spec: Path, recipe, tmp_path: Path):
    out = session.train(spec, recipe.name, epochs=1, out=tmp_path / "run", progress=False, echo=quiet)
    assert out.epochs_run == 1
    assert out.test and all(math.isfinite(v) for v in out.test.values())
    weights = "generator.safetensors" if recipe.kind == "gan" else "best.safetensors"
    assert (tmp_path / "run" / weights).is_file()


def test_fine_tune_starts_from_the_pretrained_weights(tmp_path: Path):
    specs = tmp_path / "specs"
    specs.mkdir()
    for name in ("digits_cnn.dls", "digits_pretrain.dls", "digits_finetune.dls"):
        shutil.copy(spec_path(name), specs / name)
    with pytest.raises(DlspecError) as info:
        session.train(specs / "digits_finetune.dls", epochs=1, out=tmp_path / "early", progress=False, echo=quiet)
    assert info.value.code == "E509"
    session.train(specs / "digits_pretrain.dls", epochs=2, out=tmp_path / "runs" / "digits_pretrain", progress=False, echo=quiet)
    lines: list[str] = []
    out = session.train(specs / "digits_finetune.dls", epochs=1, out=tmp_path / "ft", progress=False, echo=lines.append)
    assert out.epochs_run == 1
    assert any("fresh weights for: head" in line for line in lines)

    from dlspec.weights import load_numpy

    base = load_numpy(tmp_path / "runs" / "digits_pretrain" / "best.safetensors")
    tuned = load_numpy(tmp_path / "ft" / "last.safetensors")
    frozen = [k for k in base if k.startswith("features.") and not k.endswith(("running_mean", "running_var"))]
    assert frozen
    for k in frozen:  # frozen layers keep the pre-trained values exactly
        assert (base[k] == tuned[k]).all(), k
    assert tuned["head.weight"].shape == base["head.weight"].shape
