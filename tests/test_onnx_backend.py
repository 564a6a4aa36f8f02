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
from .torch_helpers import expected_shape, random_inputs, symbols

SPECS = spec_files()
BIG = {"vgg11.dls", "resnet18.dls", "resnet50.dls"}
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


# ---- every op, on purpose-built models ---------------------------------------------------------

ELEMENTWISE = """
model Elementwise {
    input x: float32[batch, 4, 6, 6], z: float32[batch, 4, 6, 6]
    s = z -> sigmoid()
    output a = x -> relu(), b = x -> selu(), c = x -> silu(), d = x -> tanh(),
           e = x -> leaky_relu(0.2), f = x -> elu(0.7), g = x -> gelu(), h = x -> gelu(approximate="tanh"),
           i = x -> hardtanh(-0.5, 0.75), j = x -> softmax(axis=1), k = x -> log_softmax(),
           l = add(x, z), m = sub(x, z), n = mul(x, s), o = div(x, s), p = x -> add(scalar=1.5),
           q = x -> div(scalar=4.0), r = x -> mul(scalar=-2.0), t = x -> sub(scalar=0.25),
           u = matmul(x, z -> permute([0, 1, 3, 2])), v = x -> identity() -> dropout(0.4)
}
"""

TENSOR = """
model Tensor {
    input x: float32[batch, 4, 6, 6], w: float32[batch, 6, 5], ids: int64[batch, 6], ids32: int32[batch, 3]
    left, right = x -> split(2)
    one, three = x -> split([1, 3], axis=1)
    output a = x -> flatten(), b = x -> flatten(start=2), c = x -> reshape([6, -1]), d = x -> reshape([24, 6]),
           e = x -> permute([0, 2, 3, 1]), f = x -> unsqueeze(2) -> squeeze(2), g = x -> unsqueeze(-1),
           h = concat(left, x, right, axis=1), i = one, j = three, k = left, l = right,
           m = x -> pad([1, 2, 0, 3]), n = x -> pad(1, mode="reflect"), o = x -> pad([2, 1, 0, 1], mode="replicate"),
           p = x -> pad(1, value=-3.0), q = matmul(w, w -> permute([0, 2, 1])),
           r = ids -> embedding(10, 3), s = ids32 -> embedding(7, 2, padding_idx=0), t = w -> dense(4),
           u = w -> dense(3, bias=false), v = x -> flatten() -> dense(5), y = x -> flatten() -> dense(2, bias=false)
}
"""

CONV = """
model Conv {
    input img: float32[batch, 3, 9, 11], seq: float32[batch, 3, 17], vol: float32[batch, 2, 5, 6, 7]
    output a = img -> conv2d(4, 3, stride=2, padding=same), b = img -> conv2d(6, (3, 2), padding=(1, 0), dilation=2, groups=3),
           c = img -> conv2d(4, 4, padding=same, bias=false), d = img -> conv2d(4, 3, stride=(2, 3), padding=valid),
           e = img -> conv_transpose2d(5, 3, stride=2, padding=1, output_padding=1),
           f = img -> conv_transpose2d(6, (2, 3), stride=(2, 1), dilation=(1, 2), groups=3, bias=false),
           g = seq -> conv1d(5, 4, stride=3, padding=same), h = seq -> conv_transpose1d(2, 3, stride=3, output_padding=2),
           i = vol -> conv3d(3, 2, padding=1, stride=(1, 2, 2))
}
"""

NORM_POOL = """
model NormPool {
    input img: float32[batch, 4, 10, 7], seq: float32[batch, 4, 11], vec: float32[batch, 4]
    output a = img -> batchnorm2d(eps=0.001), b = seq -> batchnorm1d(), c = vec -> batchnorm1d(affine=false),
           d = img -> groupnorm(2), e = seq -> groupnorm(4, affine=false), f = img -> layernorm(),
           g = seq -> layernorm(affine=false, eps=0.01),
           h = img -> maxpool2d(3, stride=2, padding=1), i = img -> maxpool2d(2, ceil_mode=true),
           j = img -> avgpool2d(3, stride=2, padding=1), k = seq -> avgpool1d(2, ceil_mode=true),
           l = seq -> maxpool1d(3, stride=2), m = img -> global_avgpool2d(), n = img -> global_maxpool2d(keepdims=true),
           o = seq -> global_avgpool1d(keepdims=true), p = seq -> global_maxpool1d(),
           q = img -> adaptive_avgpool2d((5, 3)), r = img -> adaptive_maxpool2d((2, 7)), s = img -> adaptive_avgpool2d(1),
           t = seq -> adaptive_avgpool1d(4), u = seq -> adaptive_maxpool1d(3), v = img -> adaptive_maxpool2d((4, 1)),
           w = img -> lrn(5, alpha=0.3, beta=0.6, k=1.5), x = seq -> lrn(4, alpha=0.5), y = img -> lrn(4, beta=1.2),
           z = seq -> lrn(5, alpha=0.2, k=2.0)
}
"""

UPSAMPLE = """
model Upsample {
    input img: float32[batch, 2, 5, 6], seq: float32[batch, 2, 7]
    output a = img -> upsample(2), b = img -> upsample((2, 3), mode="bilinear"),
           c = img -> upsample(2, mode="bilinear", align_corners=true), d = img -> upsample(size=(7, 13)),
           e = img -> upsample(size=(9, 8), mode="bilinear"), f = img -> upsample(size=(10, 11), mode="bilinear", align_corners=true),
           g = seq -> upsample(3, mode="linear"), h = seq -> upsample(size=12, mode="linear", align_corners=true),
           i = seq -> upsample(2)
}
"""

RECURRENT = """
model Recurrent {
    input x: float32[batch, 7, 5], h0: float32[4, batch, 6], c0: float32[4, batch, 6]
    seq, h, c = x -> lstm(6, layers=2, bidirectional=true, return_state=true, h0=h0, c0=c0) as bilstm
    gseq, gh = x -> gru(6, layers=2, bidirectional=true, return_state=true, h0=h0) as bigru
    output seq, h, c, gseq, gh,
           glast = x -> gru(4, layers=3, bidirectional=true, output="last") as gru3,
           llast = x -> lstm(3, output="last", bias=false) as lstm1,
           rseq = x -> rnn(5, layers=2, bidirectional=true, nonlinearity="relu") as rnn_relu,
           rlast = x -> rnn(4, output="last") as rnn_tanh
}
"""

ATTENTION = """
model Attention {
    input x: float32[batch, 5, 8], mem: float32[batch, 6, 8], other: float32[batch, 6, 8]
    input keep: bool[batch, 5], allow: bool[5, 5], weights3: float32[batch, 5, 6]
    output padded = x -> multihead_attention(2, mask=keep) as pad,
           causal = x -> multihead_attention(2, causal=true, mask=allow) as causal,
           plain_causal = x -> multihead_attention(4, causal=true) as plain_causal,
           cross = x -> multihead_attention(4, key=mem, value=mem) as cross,
           kv = x -> multihead_attention(2, key=mem, value=other, mask=weights3, bias=false) as kv,
           enc = x -> transformer_encoder(2, ff=16, dropout=0.0, mask=keep) as enc,
           enc_gelu = x -> transformer_encoder(4, ff=12, activation="gelu", norm_first=true, mask=allow) as enc_gelu
}
"""

COVERAGE = {"elementwise": ELEMENTWISE, "tensor": TENSOR, "conv": CONV, "norm_pool": NORM_POOL,
            "upsample": UPSAMPLE, "recurrent": RECURRENT, "attention": ATTENTION}


def _attention_inputs(graph, n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    keep = np.ones((n, 5), dtype=bool)
    keep[0, 4] = keep[-1, 2:4] = False
    allow = np.ones((5, 5), dtype=bool)
    allow[1:, 0] = False
    weights3 = (rng.random((n, 5, 6)) > 0.3).astype(np.float32)
    weights3[:, :, 0] = 1.0  # every query keeps one key
    x, mem, other = (rng.standard_normal((n, length, 8)).astype(np.float32) for length in (5, 6, 6))
    return [x, mem, other, keep, allow, weights3]


def test_coverage_models_use_every_op():
    used = {n.op for text in COVERAGE.values() for n in graph_of(text).nodes}
    assert used == set(REGISTRY)


@pytest.mark.parametrize("opset", [ob.DEFAULT_OPSET, ob.MIN_OPSET])
@pytest.mark.parametrize("case", list(COVERAGE))
def test_lowerings_match_torch(case, opset):
    g = graph_of(COVERAGE[case])
    env = {"batch": 3}
    arrays = _attention_inputs(g, 3) if case == "attention" else random_inputs(g, env, seed=5)
    model = ob.build_model_proto(g, canonical_weights(g)[1], opset=opset)
    onnx.checker.check_model(model, full_check=True)
    assert_shapes_agree(g, model)
    assert_parity(g, env, opset=opset, arrays=arrays)


def test_attention_masks_change_what_they_should():
    g = graph_of(ATTENTION)
    module, weights = canonical_weights(g)
    arrays = _attention_inputs(g, 2)
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
    g = graph_of(COVERAGE["recurrent"])
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
        emitted = {n.op_type for text in COVERAGE.values()
                   for n in ob.build_model_proto(graph_of(text), opset=opset).graph.node}
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
    recipe = prog.recipes[-1].model_dump(mode="json", exclude={"span"}, exclude_unset=True)
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
