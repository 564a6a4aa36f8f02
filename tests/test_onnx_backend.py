"""The ONNX backend: every op lowers; every spec exports a model that passes the ONNX checker, whose
ONNX shape inference agrees with dlspec's shapes on every IR value, and whose onnxruntime outputs
match PyTorch's (same canonical weights) to a relative error of 1e-5; the recurrent, attention,
normalization, transposed-convolution, upsampling and 'same'-padding lowerings are checked on
purpose-built models at the default and the lowest opset; `compile` and `predict` work end to end.

Relative error of an output: max|onnx - torch| / max(max|torch|, float32 tiny).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner

from dlspec import compile_file, compile_source
from dlspec.backends import onnx as ob
from dlspec.backends import torch as tb
from dlspec.cli import main
from dlspec.errors import DlspecError
from dlspec.init import init_weights
from dlspec.ir.ops import REGISTRY
from dlspec.source import SourceFile

from .helpers import ROOT, large_marks, spec_files
from .op_cases import CASES, attention_inputs, ops_used
from .torch_helpers import expected_shape, random_inputs, symbols

SPECS = spec_files()
BIG = {"vgg11.dls", "resnet18.dls", "resnet50.dls", "mobilenet_v2.dls"}
TOLERANCE = 1e-5


def rel_error(got: np.ndarray, want: np.ndarray) -> float:
    scale = max(float(np.abs(want).max()) if want.size else 0.0, float(np.finfo(np.float32).tiny))
    return float(np.abs(got.astype(np.float64) - want.astype(np.float64)).max()) / scale if want.size else 0.0


def graph_of(text: str, name: str | None = None):
    models = compile_source(SourceFile("t.dls", text)).models
    return models[name] if name else list(models.values())[-1]


def canonical_weights(graph, seed: int = 0) -> tuple[torch.nn.Module, dict[str, np.ndarray]]:
    """A seeded torch module and its canonical weights, with every 1-D tensor (norm scales and
    shifts, running statistics, zero-initialized biases) moved off its constant start so that
    inference-mode batch norm and the biases are really exercised."""
    torch.manual_seed(seed)
    module = tb.build_module(graph).eval()
    weights = tb.canonical_state(module, graph)
    rng = np.random.default_rng(seed + 1)
    for k, v in weights.items():
        if v.ndim == 1:
            if k.endswith("running_var"):
                weights[k] = rng.uniform(0.5, 2.0, v.shape).astype(np.float32)
            else:
                weights[k] = (v + rng.normal(0.0, 0.3, v.shape)).astype(np.float32)
    module.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()}, strict=False)
    return module, weights


def torch_outputs(module, graph, arrays: list[np.ndarray]) -> dict[str, np.ndarray]:
    with torch.no_grad():
        y = module(*[torch.from_numpy(a) for a in arrays])
    ys = y if isinstance(y, dict) else {graph.outputs[0].name: y}
    return {k: v.numpy() for k, v in ys.items()}


def assert_parity(graph, env: dict[str, int], opset: int | None = None, arrays: list[np.ndarray] | None = None,
                  session=None, weights=None, module=None) -> dict[str, float]:
    if module is None:
        module, weights = canonical_weights(graph)
    arrays = arrays if arrays is not None else random_inputs(graph, env)
    want = torch_outputs(module, graph, arrays)
    feed = {i.name: a for i, a in zip(graph.inputs, arrays)}
    if session is None:
        got = ob.run(graph, weights, feed, opset=opset)
    else:
        names = [o.name for o in session.get_outputs()]
        got = dict(zip(names, session.run(names, feed)))
    errors = {}
    for out in graph.outputs:
        assert got[out.name].shape == want[out.name].shape, out.name
        errors[out.name] = rel_error(got[out.name], want[out.name])
        assert errors[out.name] <= TOLERANCE, (out.name, errors[out.name])
    return errors


def inferred_shapes(model) -> dict[str, list]:
    """ONNX shape inference (strict, with data propagation) on `model` stripped of its value_info.
    Large initializers become typed graph inputs in the copy (inference reads only their types;
    copying hundreds of megabytes of weights would only slow the test)."""
    bare = onnx.ModelProto()
    bare.ir_version = model.ir_version
    bare.opset_import.extend(model.opset_import)
    bare.graph.name = model.graph.name
    bare.graph.node.extend(model.graph.node)
    bare.graph.input.extend(model.graph.input)
    bare.graph.output.extend(model.graph.output)
    for init in model.graph.initializer:
        if np.prod(init.dims) > 4096:
            bare.graph.input.append(onnx.helper.make_tensor_value_info(init.name, init.data_type, list(init.dims)))
        else:
            bare.graph.initializer.append(init)
    done = onnx.shape_inference.infer_shapes(bare, check_type=True, strict_mode=True, data_prop=True)
    out = {}
    for vi in [*done.graph.input, *done.graph.value_info, *done.graph.output]:
        dims = vi.type.tensor_type.shape.dim
        out[vi.name] = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in dims]
    return out


def assert_shapes_agree(graph, model) -> None:
    """Every IR value: equal rank, equal concrete dims, and symbolic dims consistent — an ONNX
    dim_param always stands for the same dlspec dimension."""
    shapes = inferred_shapes(model)
    names = ob.onnx_names(graph)
    seen: dict[str, object] = {}
    for v, t in graph.values.items():
        got = shapes.get(names[v])
        assert got is not None, f"no inferred shape for {v}"
        assert len(got) == t.rank, (v, got, t.shape_str())
        for g_dim, d in zip(got, t.shape):
            if isinstance(d, int):
                assert g_dim == d, (v, got, t.shape_str())
            else:
                assert not isinstance(g_dim, int), (v, got, t.shape_str())
                if g_dim is not None:
                    assert seen.setdefault(g_dim, d) == d, (v, g_dim, d)


def _spec_graphs():
    for spec in SPECS:
        for name, g in compile_file(spec).models.items():
            yield pytest.param(spec.name, g, id=f"{spec.name}:{name}", marks=large_marks(spec.name))


def test_every_op_has_an_onnx_lowering():
    assert set(REGISTRY) == ob.supported_ops()


@pytest.mark.parametrize("spec,graph", list(_spec_graphs()))
def test_spec_exports_checks_infers_and_matches_torch(spec, graph):
    module, weights = canonical_weights(graph)
    model = ob.build_model_proto(graph, weights, source=f"specs/{spec}")
    onnx.checker.check_model(model, full_check=True)
    assert model.producer_name == "dlspec" and f"specs/{spec}" in model.doc_string
    assert [i.name for i in model.graph.input] == [i.name for i in graph.inputs]
    assert [o.name for o in model.graph.output] == [o.name for o in graph.outputs]
    for vi in model.graph.input:
        assert vi.type.tensor_type.shape.dim[0].dim_param == "batch"
    assert_shapes_agree(graph, model)
    session = ob.make_session(model)
    env = {s: (1 if spec in BIG else 3) for s in symbols(graph)}
    assert_parity(graph, env, session=session, weights=weights, module=module)


# ---- every op, on the shared op cases (tests/op_cases.py) ---------------------------------------


def test_coverage_models_use_every_op():
    assert ops_used() == set(REGISTRY)


@pytest.mark.parametrize("opset", [ob.DEFAULT_OPSET, ob.MIN_OPSET])
@pytest.mark.parametrize("case", list(CASES))
def test_lowerings_match_torch(case, opset):
    c = CASES[case]
    g = c.graph()
    model = ob.build_model_proto(g, canonical_weights(g)[1], opset=opset)
    onnx.checker.check_model(model, full_check=True)
    assert_shapes_agree(g, model)
    for env in c.bindings():
        assert_parity(g, env, opset=opset, arrays=c.arrays(env, seed=5))


def test_attention_masks_change_what_they_should():
    g = CASES["attention_masks"].graph()
    module, weights = canonical_weights(g)
    arrays = attention_inputs(g, {"batch": 2})
    base = ob.run(g, weights, {i.name: a for i, a in zip(g.inputs, arrays)})
    moved = [a.copy() for a in arrays]
    moved[0][:, 4] += 10.0  # the last position: padding for sample 0, future for the causal heads
    after = ob.run(g, weights, {i.name: a for i, a in zip(g.inputs, moved)})
    np.testing.assert_allclose(after["causal"][:, :4], base["causal"][:, :4], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(after["plain_causal"][:, :4], base["plain_causal"][:, :4], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(after["padded"][0, :4], base["padded"][0, :4], rtol=1e-5, atol=1e-6)
    assert not np.allclose(after["padded"][1, :4], base["padded"][1, :4])  # sample 1 does attend to position 4


def test_same_padding_with_stride_on_symbolic_sizes():
    g = graph_of("model M { input x: float32[batch, 2, h, w] output y = x -> conv2d(3, 4, stride=2, padding=same, dilation=2) }")
    model = ob.build_model_proto(g)
    assert_shapes_agree(g, model)
    module, weights = canonical_weights(g)
    session = ob.make_session(ob.build_model_proto(g, weights))
    for h, w in ((7, 8), (9, 4), (1, 5)):
        env = {"batch": 2, "h": h, "w": w}
        assert_parity(g, env, session=session, weights=weights, module=module)
        assert expected_shape(g, "y" if "y" in g.values else g.outputs[0].value, env) == (2, 3, -(-h // 2), -(-w // 2))


def test_batch_norm_runs_in_inference_mode():
    g = graph_of("model M { input x: float32[batch, 3, 4, 4] output y = x -> batchnorm2d() as bn }")
    weights = init_weights(g)
    weights["bn.running_mean"] = np.array([1.0, -2.0, 0.5], dtype=np.float32)
    weights["bn.running_var"] = np.array([4.0, 0.25, 1.0], dtype=np.float32)
    x = np.random.default_rng(0).standard_normal((2, 3, 4, 4)).astype(np.float32)
    y = ob.run(g, weights, {"x": x})["y"]
    want = (x - weights["bn.running_mean"][:, None, None]) / np.sqrt(weights["bn.running_var"][:, None, None] + 1e-5)
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-6)


def test_dropout_is_the_identity():
    g = graph_of("model M { input x: float32[batch, 8] output y = x -> dropout(0.9) }")
    x = np.random.default_rng(0).standard_normal((4, 8)).astype(np.float32)
    assert np.array_equal(ob.run(g, None, {"x": x})["y"], x)


def test_value_names_are_sanitized_and_unique():
    g = CASES["recurrent_states"].graph()
    model = ob.build_model_proto(g)
    names = [o for n in model.graph.node for o in n.output]
    assert len(names) == len(set(names))
    assert all("#" not in n for n in names)
    inits = {i.name for i in model.graph.initializer}
    assert "bilstm::W_l0" in inits and "bilstm::W_l1" in inits and "lstm1::B_l0" not in inits
    assert {n.op_type for n in model.graph.node} >= {"LSTM", "GRU", "RNN"}
    gru = next(n for n in model.graph.node if n.op_type == "GRU")
    assert {a.name: a.i for a in gru.attribute}["linear_before_reset"] == 1


def test_initializers_hold_canonical_weights_under_their_paths():
    g = compile_file(ROOT / "specs/digits_cnn.dls").models["DigitsCNN"]
    _, weights = canonical_weights(g)
    model = ob.build_model_proto(g, weights)
    stored = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    for k, v in weights.items():
        assert np.array_equal(stored[k], v), k


def test_opset_out_of_range_is_E710():
    g = graph_of("model M { input x: float32[batch, 2] output x -> relu() }")
    for bad in (ob.MIN_OPSET - 1, ob.DEFAULT_OPSET + 1):
        with pytest.raises(DlspecError) as info:
            ob.build_model_proto(g, opset=bad)
        assert info.value.code == "E710" and f"{ob.MIN_OPSET} to {ob.DEFAULT_OPSET}" in info.value.hint


def test_default_opset_has_an_onnxruntime_kernel_for_every_op_emitted():
    from onnxruntime.capi import onnxruntime_pybind11_state as ort_c

    kernels: dict[str, list] = {}
    for d in ort_c.get_all_opkernel_def():
        if d.domain in ("", "ai.onnx") and d.provider == "CPUExecutionProvider":
            kernels.setdefault(d.op_name, []).append(d.version_range)
    for opset in (ob.DEFAULT_OPSET, ob.MIN_OPSET):
        emitted = {n.op_type for c in CASES.values()
                   for n in ob.build_model_proto(c.graph(), opset=opset).graph.node}
        for op_type in emitted:
            since = onnx.defs.get_schema(op_type, opset).since_version
            assert any(lo <= since <= hi for lo, hi in kernels[op_type]), (opset, op_type, since)


def test_adaptive_pool_over_a_symbolic_size_is_E711():
    g = graph_of("model M { input x: float32[batch, 2, h, h] output x -> adaptive_avgpool2d(3) }")
    with pytest.raises(DlspecError) as info:
        ob.build_model_proto(g)
    assert info.value.code == "E711" and "adaptive_avgpool2d" in info.value.message


def test_run_checks_its_inputs():
    g = graph_of("model M { input x: float32[batch, 4], y: float32[batch, 4] output add(x, y) }")
    x = np.zeros((2, 4), np.float32)
    cases = [({"x": x}, "missing"), ({"x": x, "y": np.zeros((2, 5), np.float32)}, "[2, 5]"),
             ({"x": x, "y": np.zeros((3, 4), np.float32)}, "batch"), ({"x": x, "y": np.zeros((2, 4), np.int64)}, "int64")]
    for inputs, text in cases:
        with pytest.raises(DlspecError) as info:
            ob.run(g, None, inputs)
        assert info.value.code == "E714" and text in info.value.message


def test_cuda_provider_falls_back_to_cpu_with_one_warning():
    import onnxruntime as ort

    g = graph_of("model M { input x: float32[batch, 3] output x -> dense(2) }")
    warnings: list[str] = []
    session = ob.make_session(ob.build_model_proto(g), "cuda", warn=warnings.append)
    if "CUDAExecutionProvider" in ort.get_available_providers():
        assert session.get_providers()[0] == "CUDAExecutionProvider" or len(warnings) == 1
    else:
        assert len(warnings) == 1 and "CPU" in warnings[0] and "\n" not in warnings[0]
        assert session.get_providers() == ["CPUExecutionProvider"]
    assert session.run(None, {"x": np.ones((2, 3), np.float32)})[0].shape == (2, 2)


def test_init_weights_follow_torch_default_distributions():
    g = compile_file(ROOT / "specs/seq2seq_attention.dls").models["Seq2SeqAttention"]
    ours = init_weights(g, seed=0)
    torch.manual_seed(0)
    theirs = tb.canonical_state(tb.build_module(g), g)
    assert set(ours) == set(theirs)
    for k, v in theirs.items():
        assert ours[k].shape == v.shape and ours[k].dtype == np.float32, k
        if v.std() == 0:
            assert np.array_equal(ours[k], v), k
        elif v.size >= 1000:  # large enough for the sample spread to pin the distribution down
            assert abs(ours[k].std() / v.std() - 1) < 0.1, (k, ours[k].std(), v.std())
            if "embed" not in k:  # uniform: the same bound
                assert abs(np.abs(ours[k]).max() / np.abs(v).max() - 1) < 0.02, k
        else:
            assert 0.5 < ours[k].std() / v.std() < 2.0, (k, ours[k].std(), v.std())
    assert not np.array_equal(init_weights(g, seed=1)["encoder.weight_ih_l0"], ours["encoder.weight_ih_l0"])


# ---- the command line --------------------------------------------------------------------------

TINY = """
model Tiny {
    input x: float32[batch, 4]
    logits = x -> dense(8) as fc1 -> relu() -> dropout(0.2) -> dense(3) as fc2
    output logits
}

train Tiny {
    data      = builtin("iris", split=[0.6, 0.2, 0.2])
    loss      = cross_entropy()
    optimizer = adam(lr=1e-2)
    epochs    = 1
    batch     = 16
    metrics   = [accuracy]
    seed      = 0
}
"""


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> tuple[Path, Path]:
    """A spec and a run folder as `dlspec train` leaves it (graph, config, best weights)."""
    import json

    from dlspec.weights import save_numpy

    root = tmp_path_factory.mktemp("onnx_cli")
    spec = root / "tiny.dls"
    spec.write_text(TINY)
    prog = compile_file(spec)
    graph = prog.recipe_graphs[prog.recipes[-1].name]
    run = root / "run"
    run.mkdir()
    (run / "graph.json").write_text(graph.model_dump_json())
    from dlspec.train.run import recipe_json

    recipe = recipe_json(prog.recipes[-1])  # as dlspec train writes it (each config's `type` kept)
    (run / "config.json").write_text(json.dumps({"spec": str(spec), "recipe": recipe, "backend": "torch"}))
    _, weights = canonical_weights(graph)
    save_numpy(weights, run / "best.safetensors")
    return spec, run


def test_cli_compile_onnx_then_predict_with_both_backends(tiny_run, tmp_path):
    spec, run = tiny_run
    runner = CliRunner()
    out = tmp_path / "tiny.onnx"
    r = runner.invoke(main, ["compile", str(spec), "--target", "onnx", "-o", str(out), "--opset", "17",
                             "--weights", str(run / "best.safetensors"), "--opt-level", "0"])
    assert r.exit_code == 0, r.output
    model = onnx.load(str(out))
    assert model.opset_import[0].version == 17 and str(spec) in model.doc_string
    x = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    results = {}
    for args in ([str(out)], [str(run), "--backend", "onnx"], [str(run), "--backend", "torch"]):
        target = tmp_path / f"p{len(results)}.npz"
        r = runner.invoke(main, ["predict", *args, "--input", str(tmp_path / "x.npy"), "--output", str(target)])
        assert r.exit_code == 0, r.output
        assert "logits: [5, 3]" in r.output
        with np.load(target) as z:
            results[args[-1]] = z["logits"]
    assert rel_error(results[str(out)], results["torch"]) <= TOLERANCE
    assert rel_error(results["onnx"], results["torch"]) <= TOLERANCE
    r = runner.invoke(main, ["predict", str(out), "--input", str(tmp_path / "x.npy"), "--provider", "cuda"])
    assert r.exit_code == 0 and "logits: [5, 3]" in r.output


def test_cli_onnx_errors(tiny_run, tmp_path):
    spec, run = tiny_run
    runner = CliRunner()
    r = runner.invoke(main, ["compile", str(spec), "--target", "onnx", "-o", str(tmp_path / "m.onnx"), "--opset", "9"])
    assert r.exit_code == 1 and "E710" in r.output and not (tmp_path / "m.onnx").exists()
    out = tmp_path / "ok.onnx"
    assert runner.invoke(main, ["compile", str(spec), "--target", "onnx", "-o", str(out)]).exit_code == 0
    np.save(tmp_path / "bad.npy", np.zeros((5, 3), np.float32))
    r = runner.invoke(main, ["predict", str(out), "--input", str(tmp_path / "bad.npy")])
    assert r.exit_code == 1 and "[5, 3]" in r.output and "float32[batch, 4]" in r.output
    r = runner.invoke(main, ["predict", str(out), "--backend", "torch", "--input", str(tmp_path / "bad.npy")])
    assert r.exit_code == 1 and "E717" in r.output
    r = runner.invoke(main, ["predict", str(tmp_path / "missing.onnx"), "--input", str(tmp_path / "bad.npy")])
    assert r.exit_code == 1 and "E715" in r.output
    r = runner.invoke(main, ["predict", str(run), "--provider", "cpu", "--input", str(tmp_path / "bad.npy")])
    assert r.exit_code == 1 and "E717" in r.output
