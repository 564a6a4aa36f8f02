"""`dlspec verify`: every spec computes the same numbers in PyTorch, TensorFlow/Keras and ONNX
Runtime (every output and every layer, float32, inference mode), a backend that is off is caught
at the layer where it goes wrong, and the command's table, JSON and exit codes."""

from __future__ import annotations

import json
import math
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from click.testing import CliRunner  # noqa: E402

from dlspec import compile_file  # noqa: E402
from dlspec import verify as vf  # noqa: E402
from dlspec.cli import main  # noqa: E402

from .helpers import large_marks, spec_files, spec_path  # noqa: E402

SPECS = spec_files()
BIG = {"vgg11.dls", "resnet18.dls", "resnet50.dls", "mobilenet_v2.dls"}  # 224×224 images: batch 1
HEAVY = {"vgg11.dls"}  # 130M parameters: outputs only, torch and tf (its 0.5 GB ONNX file is checked in docs/verify.md)


def _graphs():
    for spec in SPECS:
        for name, g in compile_file(spec).models.items():
            yield pytest.param(spec.name, g, id=f"{spec.name}:{name}", marks=large_marks(spec.name))


@pytest.mark.parametrize("spec,graph", list(_graphs()))
def test_every_spec_agrees_across_backends(spec, graph):
    sizes = {"batch": 1} if spec in BIG else None
    backends = ("torch", "tf") if spec in HEAVY else ("torch", "tf", "onnx")
    layers = spec not in HEAVY and spec != "resnet50.dls"  # resnet18 already checks every layer of that design
    result = vf.verify(graph, backends, tolerance=1e-4, sizes=sizes, layers=layers)
    assert not result.failures
    bad = [(r.backend, r.name, r.error, r.note) for r in result.rows if not r.passed]
    assert not bad
    expected = len(graph.outputs) + (len(vf.layer_values(graph)) if layers else 0)
    assert len(result.rows) == (len(backends) - 1) * expected
    assert all(r.error <= 1e-4 and math.isfinite(r.max_abs) for r in result.rows)


def test_compare_scales_by_the_reference_and_catches_shapes_and_nans():
    ref = np.array([100.0, -200.0], dtype=np.float32)
    max_abs, err, ok, _ = vf.compare(ref + np.float32(0.01), ref, 1e-4)
    assert max_abs == pytest.approx(0.01, rel=1e-3) and err == pytest.approx(0.01 / 200, rel=1e-3) and ok
    assert not vf.compare(np.array([0.5, 0.0]), np.array([0.5, 0.001]), 1e-4)[2]  # below 1: absolute
    assert vf.compare(np.zeros((2, 3)), np.zeros((3, 2)), 1.0)[3].startswith("shape")
    assert not vf.compare(np.array([np.nan, 1.0]), np.array([0.0, 1.0]), 1.0)[2]
    assert vf.compare(np.array([1.0]), np.array([1.0]), 0.0)[2]  # exactly equal passes at tolerance 0


def test_a_wrong_layer_is_caught_where_it_goes_wrong(monkeypatch):
    g = compile_file(spec_path("digits_cnn.dls")).models["DigitsCNN"]
    real = vf.RUNNERS["tf"]

    def off_at_fc(graph, weights, inputs):
        out = real(graph, weights, inputs)
        out["layer:fc"] = out["layer:fc"] + 1e-2
        return out

    monkeypatch.setitem(vf.RUNNERS, "tf", off_at_fc)
    result = vf.verify(g, ("torch", "tf"))
    failed = [r.name for r in result.rows if not r.passed]
    assert failed == ["fc"] and not result.passed
    assert all(r.passed for r in result.rows if r.name.startswith("features"))


def test_inputs_respect_embeddings_and_masks():
    g = compile_file(spec_path("seq2seq_attention.dls")).models["Seq2SeqAttention"]
    xs = vf.make_inputs(g, vf.bind_sizes(g), seed=3)
    assert xs["src"].dtype == np.int64 and xs["src"].max() < 12 and xs["src"].shape == (2, 10)
    again = vf.make_inputs(g, vf.bind_sizes(g), seed=3)
    assert all(np.array_equal(xs[k], again[k]) for k in xs)


def test_fresh_weights_move_batch_norm_statistics_off_their_defaults():
    g = compile_file(spec_path("digits_cnn.dls")).models["DigitsCNN"]
    w = vf.fresh_weights(g, seed=0)
    var = [v for k, v in w.items() if k.endswith("running_var")]
    mean = [v for k, v in w.items() if k.endswith("running_mean")]
    assert var and all((v != 1).all() and (v > 0).all() for v in var) and all(v.any() for v in mean)


def test_cli_prints_the_table_and_exits_0():
    res = CliRunner().invoke(main, ["verify", str(spec_path("iris_mlp.dls")), "--backends", "torch,tf,onnx"])
    assert res.exit_code == 0, res.output
    for text in ("IrisMLP", "logits", "fc1", "max abs err", "verified"):
        assert text in res.output


def test_cli_exits_1_when_a_backend_is_off(monkeypatch):
    real = vf.RUNNERS["onnx"]
    monkeypatch.setitem(vf.RUNNERS, "onnx", lambda g, w, x: {k: v * 1.01 for k, v in real(g, w, x).items()})
    res = CliRunner().invoke(main, ["verify", str(spec_path("iris_mlp.dls")), "--backends", "torch,onnx", "--outputs-only"])
    assert res.exit_code == 1 and "FAIL" in res.output and "failed" in res.output


def test_cli_json_and_tolerance_zero_agree():
    res = CliRunner().invoke(main, ["verify", str(spec_path("lenet5.dls")), "--backends", "torch,tf", "--tolerance", "0",
                                    "--json", "--seed", "5"])
    data = json.loads(res.output)
    assert data["model"] == "LeNet5" and data["reference"] == "torch" and data["tolerance"] == 0
    assert data["sizes"] == {"batch": 2} and data["seed"] == 5
    rows = data["rows"]
    assert {r["kind"] for r in rows} == {"output", "layer"}
    for r in rows:
        assert r["passed"] == (r["max_abs"] == 0.0)
    assert data["passed"] == all(r["passed"] for r in rows)
    assert res.exit_code == (0 if data["passed"] else 1)


def test_cli_uses_a_weights_file_and_set(tmp_path):
    import torch

    from dlspec.backends import torch as tb

    g = compile_file(spec_path("iris_mlp.dls"), {"hidden": 8}).models["IrisMLP"]
    torch.manual_seed(0)
    tb.save_weights(tb.build_module(g), g, tmp_path / "w.safetensors")
    args = ["verify", str(spec_path("iris_mlp.dls")), "--set", "hidden=8", "--set", "batch=3", "--backends", "torch,tf",
            "--weights", str(tmp_path / "w.safetensors"), "--json"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert data["weights"].endswith("w.safetensors") and data["rows"][0]["shape"] == [3, 3]
    wrong = CliRunner().invoke(main, args[:2] + args[6:])  # hidden back to 32: the file does not fit
    assert wrong.exit_code == 1 and "E508" in wrong.output


@pytest.mark.parametrize("backends,code", [("torch,jax", "E770"), ("tf", "E771"), ("torch,torch", "E771")])
def test_cli_rejects_bad_backend_lists(backends, code):
    res = CliRunner().invoke(main, ["verify", str(spec_path("iris_mlp.dls")), "--backends", backends])
    assert res.exit_code == 1 and code in res.output
