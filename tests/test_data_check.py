"""`dlspec check` checks a recipe's data against its model before anything trains
(dlspec/data/static.py): built-in sets always, files that exist from their headers, located at
the recipe's `data =` line; the stand-in shapes are those the loaders really give."""

from __future__ import annotations

import re

import numpy as np
import pytest
from click.testing import CliRunner

from dlspec.cli import main
from dlspec.data import load_data
from dlspec.data.static import builtin_shapes, data_shapes
from dlspec.ir.training import Builtin, Csv, Images, Npz, Texts

from .helpers import ROOT


def _shapes(bundle):
    y = bundle.train.y
    ys = {k: (str(v.dtype), v.shape[1:]) for k, v in y.items()} if isinstance(y, dict) else (str(y.dtype), y.shape[1:])
    return [(str(a.dtype), a.shape[1:]) for a in bundle.train.x], ys, bundle.task, bundle.num_classes


@pytest.mark.parametrize("cfg", [
    Builtin(name="digits"), Builtin(name="digits", size=16), Builtin(name="digits", classes=(3, 5, 7)),
    Builtin(name="digits_multitask"), Builtin(name="iris"), Builtin(name="wine"), Builtin(name="breast_cancer"),
    Builtin(name="sunspots", window=6, horizon=2), Builtin(name="sequence", samples=40),
    Builtin(name="sentiment", samples=40), Builtin(name="tagging", samples=40), Builtin(name="reverse", samples=40),
    Builtin(name="segmentation", samples=12), Builtin(name="sequence", samples=40, autoencode=True),
    Builtin(name="digits", autoencode=True),
], ids=lambda c: f"{c.name}-{sorted(c.model_fields_set)}")
def test_builtin_stand_ins_have_the_loaded_shapes(cfg):
    assert _shapes(builtin_shapes(cfg)) == _shapes(load_data(cfg, 0))


def test_file_stand_ins_have_the_loaded_shapes(tmp_path):
    from PIL import Image

    (tmp_path / "t.csv").write_text("a,b,c,y\n" + "".join(f"{i},{i * 2},{i % 3},{'pqr'[i % 3]}\n" for i in range(30)))
    np.savez(tmp_path / "d.npz", x=np.zeros((20, 3, 5), np.float32), y=np.arange(20) % 4)
    for c in ("a", "b"):
        (tmp_path / "img" / c).mkdir(parents=True)
        (tmp_path / "txt" / c).mkdir(parents=True)
        for i in range(4):
            Image.new("RGB", (5, 7)).save(tmp_path / "img" / c / f"{i}.png")
            (tmp_path / "txt" / c / f"{i}.txt").write_text(f"word {c} {i}")
    for cfg in (Csv(path="t.csv", label="y"), Csv(path="t.csv", label="b", features=("a",), task="regression"),
                Npz(path="d.npz"), Images(path="img", size=(6, 9), split=(0.5, 0.25, 0.25)),
                Images(path="img", grayscale=True, split=(0.5, 0.25, 0.25)),
                Texts(path="txt", max_len=7, split=(0.5, 0.25, 0.25))):
        assert _shapes(data_shapes(cfg, tmp_path)) == _shapes(load_data(cfg, 0, tmp_path)), cfg
    assert data_shapes(Csv(path="missing.csv", label="y"), tmp_path) is None  # train reports it


MODEL = '''
model M {
    input x: float32[batch, 3]
    output x -> dense(8) -> relu() -> dense(2)
}
'''


def test_check_reports_data_that_does_not_fit_at_the_data_line(tmp_path):
    (tmp_path / "t.csv").write_text("a,b,c,y\n" + "".join(f"{i},{i},{i},{'pqr'[i % 3]}\n" for i in range(9)))
    spec = tmp_path / "m.dls"
    spec.write_text(MODEL + '\ntrain M {\n    loss = cross_entropy()\n    data = csv("t.csv", label="y")\n}\n')
    r = CliRunner().invoke(main, ["check", str(spec), "--json"])
    assert r.exit_code == 1, r.output
    (d,) = __import__("json").loads(r.output)
    line = spec.read_text().splitlines().index('    data = csv("t.csv", label="y")') + 1
    assert d["code"] == "E604" and d["line"] == line and d["file"] == str(spec)
    assert "3 classes" in d["message"] and "dense(3)" in d["hint"]
    spec.write_text(MODEL + '\ntrain M {\n    data = builtin("iris")\n}\n')
    r = CliRunner().invoke(main, ["check", str(spec)])
    assert r.exit_code == 1 and "E602" in r.output and "float32[N, 4]" in r.output and f":{line - 1}:" in r.output
    spec.write_text(MODEL + '\ntrain M {\n    data = csv("not_there_yet.csv", label="y")\n}\n')
    assert CliRunner().invoke(main, ["check", str(spec)]).exit_code == 0


def test_the_language_references_recipes_fit_their_data(tmp_path):
    """Every example of docs/language.md with a supervised recipe on built-in data checks clean,
    data included (its Classifier once declared float32[batch, 64] for the 8×8 digits)."""
    text = (ROOT / "docs" / "language.md").read_text(encoding="utf-8")
    blocks = [b for b in re.findall(r"```dls\n(.*?)```", text, re.S) if re.search(r"^train \w+", b, re.M)
              and "builtin(" in b and "import " not in b]
    assert blocks
    for i, block in enumerate(blocks):
        spec = tmp_path / f"example{i}.dls"
        spec.write_text(block)
        r = CliRunner().invoke(main, ["check", str(spec)])
        assert "E60" not in r.output, block + r.output
