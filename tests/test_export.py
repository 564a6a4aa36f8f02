"""`dlspec export`: every framework target loads back and computes what the PyTorch model computes
with the run's weights (within 1e-4), at opt levels 1 and 2; outputs are written atomically and an
existing artifact is only replaced with --force. These tests load the artifacts in this process
themselves, so they skip the export's own self-check (`check=False`, `--no-check`), which
tests/test_deploy.py covers with the deployment targets."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import torch  # noqa: E402
from click.testing import CliRunner  # noqa: E402

from dlspec import export as ex  # noqa: E402
from dlspec.backends import torch as tb  # noqa: E402
from dlspec.cli import main  # noqa: E402
from dlspec.errors import DlspecError  # noqa: E402
from dlspec.program import compile_file  # noqa: E402
from dlspec.train.run import atomic_write_json, atomic_write_text  # noqa: E402
from dlspec.weights import save_numpy  # noqa: E402

from .helpers import ROOT  # noqa: E402


def _run_folder(tmp: Path, spec: str) -> tuple[Path, dict[str, np.ndarray]]:
    """A run folder as `dlspec train` leaves it (graph.json, config.json, best.safetensors), with
    seeded weights and non-trivial batch-norm statistics, without spending time on training."""
    prog = compile_file(ROOT / "specs" / spec)
    cfg = prog.recipes[-1]
    graph = prog.recipe_graphs[cfg.name]
    torch.manual_seed(0)
    module = tb.build_module(graph)
    arrays = {k: v.copy() for k, v in tb.canonical_state(module, graph).items()}
    rng = np.random.default_rng(0)
    for k in arrays:
        if k.endswith("running_mean"):
            arrays[k] = rng.normal(0, 0.3, arrays[k].shape).astype(np.float32)
        elif k.endswith("running_var"):
            arrays[k] = rng.uniform(0.5, 2.0, arrays[k].shape).astype(np.float32)
    run = tmp / Path(spec).stem
    run.mkdir()
    atomic_write_text(run / "graph.json", graph.model_dump_json())
    atomic_write_json(run / "config.json", {"spec": str(ROOT / "specs" / spec), "backend": "tf",
                                            "recipe": cfg.model_dump(mode="json", exclude={"span"})})
    save_numpy(arrays, run / "best.safetensors")
    return run, arrays


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, tuple[Path, dict[str, np.ndarray]]]:
    tmp = tmp_path_factory.mktemp("runs")
    return {name: _run_folder(tmp, f"{name}.dls") for name in ("digits_cnn", "digits_multitask")}


def _reference(run: Path, arrays: dict[str, np.ndarray], x: np.ndarray) -> dict[str, np.ndarray]:
    from dlspec.ir.graph import Graph

    graph = Graph.model_validate_json((run / "graph.json").read_text())
    module = tb.build_module(graph, inplace=False)
    module.load_state_dict({k: torch.from_numpy(v) for k, v in arrays.items()}, strict=False)
    with torch.no_grad():
        out = module.eval()(torch.from_numpy(x))
    outs = out if isinstance(out, dict) else {graph.outputs[0].name: out}
    return {k: v.numpy() for k, v in outs.items()}


def _load_and_run(target: str, path: Path, x: np.ndarray, names: list[str]) -> dict[str, np.ndarray]:
    if target == "savedmodel":
        import tensorflow as tf

        loaded = tf.saved_model.load(str(path))  # keep it referenced: its variables live with it
        out = loaded.serve(tf.constant(x))
    elif target == "keras":
        import keras

        import dlspec.backends.keras_layers  # noqa: F401  (registers dlspec's custom layers)

        out = keras.saving.load_model(str(path))(x, training=False)
    elif target == "onnx":
        import onnxruntime as ort

        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        res = sess.run(None, {sess.get_inputs()[0].name: x})
        return dict(zip([o.name for o in sess.get_outputs()], res))
    else:
        with torch.no_grad():
            out = torch.jit.load(str(path))(torch.from_numpy(x))
        out = {k: v.numpy() for k, v in out.items()} if isinstance(out, dict) else out.numpy()
    if isinstance(out, dict):
        return {k: np.asarray(v) for k, v in out.items()}
    return {names[0]: np.asarray(out)}


@pytest.mark.parametrize("opt_level", [1, 2])
@pytest.mark.parametrize("target", ["savedmodel", "keras", "onnx", "torchscript"])
@pytest.mark.parametrize("model", ["digits_cnn", "digits_multitask"])
def test_every_target_round_trips(runs, tmp_path: Path, model: str, target: str, opt_level: int):
    run, arrays = runs[model]
    out = tmp_path / f"model{ex.SUFFIX[target]}"
    assert ex.export(run, target, out, opt_level=opt_level, echo=lambda _: None, check=False) == out
    x = np.random.default_rng(1).random((3, 1, 8, 8), dtype=np.float32)  # batch 3: not a traced size
    want = _reference(run, arrays, x)
    got = _load_and_run(target, out, x, list(want))
    assert set(got) == set(want)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-4, atol=1e-4, err_msg=k)
    assert [p.name for p in tmp_path.iterdir()] == [out.name]  # no temporary left behind


def test_existing_output_needs_force_and_survives_a_failed_export(runs, tmp_path: Path, monkeypatch):
    run, _ = runs["digits_cnn"]
    out = tmp_path / "m.onnx"
    out.write_bytes(b"keep me")
    with pytest.raises(DlspecError) as info:
        ex.export(run, "onnx", out, echo=lambda _: None, check=False)
    assert info.value.code == "E690" and "--force" in info.value.hint

    def broken(*_args):
        raise RuntimeError("disk full")

    monkeypatch.setitem(ex.__dict__, "_onnx", broken)
    with pytest.raises(RuntimeError):
        ex.export(run, "onnx", out, force=True, echo=lambda _: None, check=False)
    assert out.read_bytes() == b"keep me" and [p.name for p in tmp_path.iterdir()] == ["m.onnx"]
    monkeypatch.undo()
    ex.export(run, "onnx", out, force=True, echo=lambda _: None, check=False)
    assert out.read_bytes() != b"keep me"
    saved = tmp_path / "sm"
    ex.export(run, "savedmodel", saved, echo=lambda _: None, check=False)
    first = sorted(p.name for p in saved.iterdir())
    ex.export(run, "savedmodel", saved, force=True, echo=lambda _: None)  # a folder is swapped whole
    assert sorted(p.name for p in saved.iterdir()) == first and "saved_model.pb" in first


def test_cli(runs, tmp_path: Path):
    run, _ = runs["digits_cnn"]
    runner = CliRunner()
    out = tmp_path / "d.pt"
    res = runner.invoke(main, ["export", str(run), "--target", "torchscript", "-o", str(out), "--opt-level", "2",
                                "--no-check"])
    assert res.exit_code == 0, res.output
    assert "W722" in res.output and "pt2" in res.output  # torchscript is deprecated: pointed at its replacement
    assert out.is_file()
    res = runner.invoke(main, ["export", str(run), "--target", "torchscript", "-o", str(out)])
    assert res.exit_code == 1 and "E690" in res.output
    res = runner.invoke(main, ["export", str(run), "--target", "keras", "-o", str(tmp_path / "d.h5")])
    assert res.exit_code == 1 and "E691" in res.output and "d.keras" in res.output
    res = runner.invoke(main, ["export", str(tmp_path), "--target", "onnx", "-o", str(tmp_path / "x.onnx")])
    assert res.exit_code == 1 and "E635" in res.output
    res = runner.invoke(main, ["export", str(run), "--target", "tflite", "-o", str(tmp_path / "x")])
    assert res.exit_code == 2
    empty = tmp_path / "noweights"
    empty.mkdir()
    for name in ("graph.json", "config.json"):
        (empty / name).write_text((run / name).read_text())
    res = runner.invoke(main, ["export", str(empty), "--target", "onnx", "-o", str(tmp_path / "y.onnx")])
    assert res.exit_code == 1 and "E636" in res.output
    assert json.loads((run / "config.json").read_text())["backend"] == "tf"
