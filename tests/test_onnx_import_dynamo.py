"""`dlspec import` of models written by torch.onnx.export(dynamo=True), the exporter that traces
with torch.export and translates with onnxscript: transformers, a U-Net, a group-norm CNN and an
LSTM classifier at the exporter's default opset and at 17 import, compile back to PyTorch, ONNX and
Keras and match onnxruntime on the original file.

Its graphs differ from the TorchScript exporter's: nodes are named after their op alone and carry
their PyTorch module scope as metadata, equal constants are shared (two layers' norm weights as
one initializer named after the first), q, k and v are picked from a permuted view with an
Unsqueeze(0) before it, and GELU's erf form has its ½ on the other side. The hand-written graphs
at the end pin each of those alone."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from dlspec.importers.onnx import import_model

from .test_onnx_import import GroupNormCNN, LastStepLSTM, TinyUNet, rel_err, roundtrip
from .test_onnx_import_transformers import Attention, CrossAttention, Encoder, TinyViT

#: the exporter's default opset (None) and 17, which it reaches by converting its own graph
OPSETS = [None, 17]


@pytest.fixture(scope="module")
def tmp(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("onnx_import_dynamo")


def export(module: torch.nn.Module, args: tuple, path: Path, inputs: list[str], outputs: list[str],
           dynamic: dict, opset: int | None) -> Path:
    """`dynamic` maps forward()'s argument names to {axis: symbol}; a symbol is one torch.export.Dim
    wherever it occurs."""
    # the exporter registers torch.export's while-loop LSTM and GRU (which keep the steps symbolic)
    # for the export alone, but the operator's dispatch cache keeps the kernel that ran last: a
    # second export in one process would trace the unrolled one and fix the steps at the traced size
    for op in (torch.ops.aten.lstm.input, torch.ops.aten.gru.input):
        op._dispatch_cache.clear()
    dims: dict[str, torch.export.Dim] = {}
    shapes = {arg: {axis: dims.setdefault(sym, torch.export.Dim(sym)) for axis, sym in axes.items()}
              for arg, axes in dynamic.items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), args, str(path), dynamo=True, input_names=inputs, output_names=outputs,
                          dynamic_shapes=shapes, verbose=False,
                          **({} if opset is None else {"opset_version": opset}))
    return path


def _scoped(path: Path) -> bool:
    """Whether the nodes carry their module scopes: below opset 18 the exporter converts its graph
    with onnx's version converter, which drops node metadata."""
    return any(p.key == "pkg.torch.onnx.name_scopes" for n in onnx.load(str(path)).graph.node for p in n.metadata_props)


def _opset(path: Path) -> int:
    return next(o.version for o in onnx.load(str(path)).opset_import if o.domain in ("", "ai.onnx"))


def _ops(result) -> list[str]:
    return [n.op for n in result.graph.nodes]


def _same_at(path: Path, result, feeds: dict[str, np.ndarray]) -> None:
    """The imported PyTorch module computes what onnxruntime computes on the file at other sizes."""
    from dlspec.backends.torch import build_module

    want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)
    module = build_module(result.graph).eval()
    module.load_state_dict({k: torch.from_numpy(v) for k, v in result.weights.items()})
    with torch.no_grad():
        got = module(**{result.input_names[k]: torch.from_numpy(v) for k, v in feeds.items()})
    got = [got] if isinstance(got, torch.Tensor) else [got[result.output_names[o.name]]
                                                        for o in onnx.load(str(path)).graph.output]
    for g, w in zip(got, want):
        assert g.shape == w.shape and rel_err(g.numpy(), w) <= 1e-5


def _rand(*shape: int) -> np.ndarray:
    return np.random.default_rng(sum(shape)).standard_normal(shape).astype(np.float32)


# ---- the exporter's models ---------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("opset", OPSETS, ids=["default", "17"])
def test_transformer_encoder(tmp: Path, opset: int | None) -> None:
    torch.manual_seed(0)
    module = Encoder()
    x = torch.randn(3, 5, 32)
    path = export(module, (x,), tmp / f"encoder_{opset}.onnx", ["x"], ["y"], {"x": {0: "n"}}, opset)
    assert _opset(path) == (opset or _opset(path)) and _opset(path) >= 17
    result = roundtrip(path, {"x": x.numpy()})
    ops = _ops(result)
    assert ops.count("matmul") == 4 and ops.count("softmax") == 2 and ops.count("layernorm") == 4
    # q, k and v are picked with one select each, not split apart and squeezed
    assert ops.count("select") == 6 and "split" not in ops and "squeeze" not in ops
    if _scoped(path):
        # the layers are named after their modules, though the exporter shares the two layers'
        # equal norm weights as one constant named after the first
        assert "Encoder() * 2 as encoder.layers" in result.text
        np.testing.assert_array_equal(result.weights["encoder.layers.1.norm2.weight"],
                                      module.encoder.layers[1].norm2.weight.detach().numpy())
    else:
        assert opset == 17
    _same_at(path, result, {"x": _rand(7, 5, 32)})


@pytest.mark.slow
@pytest.mark.parametrize("opset", OPSETS, ids=["default", "17"])
def test_small_vit(tmp: Path, opset: int | None) -> None:
    torch.manual_seed(2)
    module = TinyViT()
    images = torch.randn(2, 3, 16, 16)
    path = export(module, (images,), tmp / f"vit_{opset}.onnx", ["images"], ["logits"], {"images": {0: "n"}}, opset)
    result = roundtrip(path, {"images": images.numpy()})
    ops = _ops(result)
    assert ops.count("gelu") == 2  # opset 20's Gelu and, at 17, x · (½ · (1 + erf(x / √2)))
    params = {n.name for n in result.graph.nodes if n.op == "parameter"}
    assert params == {"class_token", "pos_embedding"}
    np.testing.assert_array_equal(result.weights["pos_embedding.weight"], module.pos_embedding.detach().numpy())
    assert "dense(10) as head" in result.text
    assert ("Encoder() * 2 as encoder.layers" in result.text) == _scoped(path)
    _same_at(path, result, {"images": _rand(5, 3, 16, 16)})


@pytest.mark.slow
@pytest.mark.parametrize("opset", OPSETS, ids=["default", "17"])
def test_scaled_dot_product_attention_over_symbolic_batch_and_length(tmp: Path, opset: int | None) -> None:
    torch.manual_seed(3)
    x = torch.randn(3, 5, 16)
    path = export(Attention(), (x,), tmp / f"sdpa_{opset}.onnx", ["x"], ["y"], {"x": {0: "n", 1: "t"}}, opset)
    result = roundtrip(path, {"x": x.numpy()})
    assert [str(d) for d in result.graph.inputs[0].type.shape] == ["n", "t", "16"]
    ops = _ops(result)
    assert ops.count("matmul") == 2 and ops.count("select") == 3 and "split" not in ops
    _same_at(path, result, {"x": _rand(2, 9, 16)})


@pytest.mark.slow
@pytest.mark.parametrize("opset", OPSETS, ids=["default", "17"])
def test_multihead_attention_with_weights_memory_and_mask(tmp: Path, opset: int | None) -> None:
    """At opset 17 the exporter's converter gives up on the ReduceMean with its axes as an input
    and writes opset 18, whose ReduceMean and Split take their axes and sizes as inputs."""
    torch.manual_seed(5)
    x, memory = torch.randn(3, 5, 16), torch.randn(3, 4, 16)
    path = export(CrossAttention(), (x, memory), tmp / f"mha_{opset}.onnx", ["x", "memory"],
                  ["mixed", "weights", "masked"], {"x": {0: "n"}, "memory": {0: "n"}}, opset)
    assert _opset(path) >= 17
    result = roundtrip(path, {"x": x.numpy(), "memory": memory.numpy()})
    assert "reduce_mean" in _ops(result)
    _same_at(path, result, {"x": _rand(6, 5, 16), "memory": _rand(6, 4, 16)})


@pytest.mark.slow
@pytest.mark.parametrize("opset", OPSETS, ids=["default", "17"])
def test_unet_with_bilinear_and_nearest_upsampling(tmp: Path, opset: int | None) -> None:
    x = torch.randn(2, 3, 16, 12)
    path = export(TinyUNet(), (x,), tmp / f"unet_{opset}.onnx", ["x"], ["y", "aligned"], {"x": {0: "n"}}, opset)
    result = roundtrip(path, {"x": x.numpy()})
    modes = sorted(n.attrs.get("mode", "nearest") for n in result.graph.nodes if n.op == "upsample")
    assert modes == ["bilinear", "bilinear", "nearest"]
    assert "conv2d(8, 3, padding=1) as enc1_0" in result.text  # named after nn.Sequential's module path


@pytest.mark.slow
@pytest.mark.parametrize("opset", OPSETS, ids=["default", "17"])
def test_groupnorm_cnn(tmp: Path, opset: int | None) -> None:
    torch.manual_seed(1)
    module = GroupNormCNN()
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, torch.nn.GroupNorm | torch.nn.InstanceNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
    x = torch.randn(2, 3, 12, 11)
    path = export(module, (x,), tmp / f"gn_{opset}.onnx", ["x"], ["y"], {"x": {0: "n"}}, opset)
    result = roundtrip(path, {"x": x.numpy()})
    ops = _ops(result)
    # GroupNorm's reshape, instance norm, reshape back, scale and shift: one groupnorm
    assert ops.count("groupnorm") == 1 and ops.count("instance_norm") == 1
    assert ops.count("conv2d") == 2 and "reshape" not in ops
    np.testing.assert_allclose(result.weights["gn1.weight"], module.gn1.weight.detach().numpy(), rtol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("opset", OPSETS, ids=["default", "17"])
def test_lstm_classifier_taking_the_last_step_of_a_dynamic_sequence(tmp: Path, opset: int | None) -> None:
    x = torch.randn(3, 7, 5)
    path = export(LastStepLSTM(), (x,), tmp / f"lstm_{opset}.onnx", ["x"], ["y", "z"], {"x": {0: "n", 1: "steps"}},
                  opset)
    result = roundtrip(path, {"x": x.numpy()})
    # the exporter's [T, 1, N, H] → [T, N, H] → [N, T, H] and out[:, -1:] reshaped cost no layer
    assert sorted(_ops(result)) == ["dense", "dense", "lstm", "mul", "select", "select"]
    _same_at(path, result, {"x": _rand(2, 11, 5)})


@pytest.mark.slow
def test_not_and_or_xor_of_masks(tmp: Path) -> None:
    from .test_onnx_import import MaskLogic

    x, keep = torch.randn(3, 4, 5) * 1.5, torch.rand(3, 5) > 0.3
    path = export(MaskLogic(), (x, keep), tmp / "mask_logic.onnx", ["x", "keep"], ["a", "b", "c"],
                  {"x": {0: "n"}, "keep": {0: "n"}}, None)
    result = roundtrip(path, {"x": x.numpy(), "keep": keep.numpy()})
    assert {"logical_not", "logical_and", "logical_or"} <= set(_ops(result))


# ---- the exporter's forms, on hand-written graphs -----------------------------------------------------


def _save(tmp: Path, name: str, nodes, inputs, outputs, inits=(), opset: int = 18) -> Path:
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    path = tmp / f"{name}.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]), str(path))
    return path


def _in_scope(node, *scopes: str):
    """A node with the name_scopes metadata the dynamo exporter writes."""
    entry = node.metadata_props.add()
    entry.key, entry.value = "pkg.torch.onnx.name_scopes", repr(["", *scopes, node.output[0]])
    return node


def _f(name: str, shape) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def _c(name: str, value) -> onnx.TensorProto:
    arr = np.asarray(value)
    return numpy_helper.from_array(arr.astype(np.int64 if arr.dtype.kind == "i" else np.float32), name)


def test_erf_gelu_with_its_half_on_the_left(tmp: Path) -> None:
    """x · (½ · (1 + erf(x / √2))), as the dynamo exporter writes GELU below opset 20: one gelu."""
    nodes = [helper.make_node("Div", ["x", "root2"], ["d"]), helper.make_node("Erf", ["d"], ["e"]),
             helper.make_node("Add", ["e", "one"], ["a"]), helper.make_node("Mul", ["half", "a"], ["h"]),
             helper.make_node("Mul", ["x", "h"], ["y"])]
    path = _save(tmp, "gelu_half_left", nodes, [_f("x", ["n", 6])], [_f("y", ["n", 6])],
                 [_c("root2", np.sqrt(2.0)), _c("one", 1.0), _c("half", 0.5)], opset=17)
    result = roundtrip(path, {"x": _rand(3, 6) * 3})
    assert _ops(result) == ["gelu"]


def test_layers_are_named_after_the_module_scope_not_a_shared_constant(tmp: Path) -> None:
    """Two dense layers share one initializer named after the first (the exporter's equal
    constants): each is named after its own module scope, and the scopes are what blocks read."""
    w = np.random.default_rng(0).standard_normal((4, 4)).astype(np.float32)
    nodes = [_in_scope(helper.make_node("Gemm", ["x", "blocks.0.fc.weight"], ["h"], name="node_Gemm_1", transB=1),
                     "blocks", "blocks.0", "blocks.0.fc"),
             _in_scope(helper.make_node("Relu", ["h"], ["r"], name="node_relu"), "blocks", "blocks.0"),
             _in_scope(helper.make_node("Gemm", ["r", "blocks.0.fc.weight"], ["y"], name="node_Gemm_2", transB=1),
                     "blocks", "blocks.1", "blocks.1.fc")]
    path = _save(tmp, "scoped", nodes, [_f("x", ["n", 4])], [_f("y", ["n", 4])],
                 [numpy_helper.from_array(w, "blocks.0.fc.weight")])
    imported = import_model(path)
    assert [(layer.op, layer.name) for layer in imported.layers] == [("dense", "blocks_0_fc"), ("relu", None),
                                                                       ("dense", "blocks_1_fc")]
    assert [layer.origin for layer in imported.layers] == ["/blocks/0/fc/Gemm", "/blocks/0/Relu", "/blocks/1/fc/Gemm"]
    roundtrip(path, {"x": _rand(2, 4)})


def test_unreadable_name_scopes_are_ignored(tmp: Path) -> None:
    node = helper.make_node("Gemm", ["x", "w"], ["y"], name="node_Gemm_1", transB=1)
    entry = node.metadata_props.add()
    entry.key, entry.value = "pkg.torch.onnx.name_scopes", "[" * 5000
    path = _save(tmp, "bad_scopes", [node], [_f("x", ["n", 2])], [_f("y", ["n", 2])], [_c("w", np.eye(2))])
    assert [layer.name for layer in import_model(path).layers] == ["node_Gemm_1"]


def test_q_k_v_picked_from_a_permuted_view_after_unsqueeze_are_selects(tmp: Path) -> None:
    """[n, t, 3·4] → [n, t, 3, 4] → unsqueeze(0) → transpose to [3, t, n, 1, 4] → squeeze → pick 0
    (Gather) and 1:2 (Slice, then Squeeze): one select each on the reshaped value, no split, squeeze
    or unsqueeze, the permutation kept lazy until the add needs it."""
    nodes = [helper.make_node("Reshape", ["x", "split_heads"], ["v"]),
             helper.make_node("Unsqueeze", ["v", "zero"], ["u"]),
             helper.make_node("Transpose", ["u"], ["p"], perm=[3, 2, 1, 0, 4]),
             helper.make_node("Squeeze", ["p", "three"], ["s"]),
             helper.make_node("Gather", ["s", "first"], ["q"], axis=0),
             helper.make_node("Slice", ["s", "one", "two", "zero"], ["k1"]),
             helper.make_node("Squeeze", ["k1", "zero"], ["k"]),
             helper.make_node("Add", ["q", "k"], ["y"])]
    inits = [_c("split_heads", [0, 0, 3, 4]), _c("zero", [0]), _c("three", [3]), _c("first", 0), _c("one", [1]),
             _c("two", [2])]
    path = _save(tmp, "qkv_view", nodes, [_f("x", ["n", "t", 12])], [_f("y", ["t", "n", 4])], inits)
    result = roundtrip(path, {"x": _rand(2, 5, 12)})
    assert sorted(_ops(result)) == ["add", "permute", "permute", "reshape", "select", "select"]


def test_a_size_one_axis_beside_the_batch_is_no_merge(tmp: Path) -> None:
    """[t, n, 1, h] reshaped to [t, n, h] by a computed shape (an exported LSTM's output) is a view:
    the batch is not merged with anything, so nothing is materialized."""
    nodes = [helper.make_node("Transpose", ["x"], ["tn"], perm=[1, 0, 2]),
             helper.make_node("Unsqueeze", ["tn", "two"], ["u"]),
             helper.make_node("Shape", ["u"], ["shape"]),
             helper.make_node("Gather", ["shape", "keep"], ["tnh"], axis=0),
             helper.make_node("Reshape", ["u", "tnh"], ["r"]),
             helper.make_node("Transpose", ["r"], ["nt"], perm=[1, 0, 2]),
             helper.make_node("Relu", ["nt"], ["y"])]
    path = _save(tmp, "size_one", nodes, [_f("x", ["n", "t", 4])], [_f("y", ["n", "t", 4])],
                 [_c("two", [2]), _c("keep", [0, 1, 3])])
    result = roundtrip(path, {"x": _rand(2, 5, 4)})
    assert _ops(result) == ["relu"]


def test_group_norm_as_reshape_instance_norm_reshape_scale_shift_is_one_groupnorm(tmp: Path) -> None:
    """nn.GroupNorm(2, 6) as both exporters write it, with per-group InstanceNormalization scales
    other than one: one groupnorm whose per-channel weight is the group's scale times γ."""
    rng = np.random.default_rng(3)
    gamma, beta = rng.uniform(0.5, 1.5, (6, 1, 1)), rng.uniform(-0.5, 0.5, (6, 1, 1))
    nodes = [helper.make_node("Reshape", ["x", "grouped"], ["g"]),
             helper.make_node("InstanceNormalization", ["g", "s", "b"], ["in"], epsilon=1e-3),
             helper.make_node("Shape", ["x"], ["shape"]),
             helper.make_node("Reshape", ["in", "shape"], ["back"]),
             helper.make_node("Mul", ["back", "gamma"], ["scaled"]),
             helper.make_node("Add", ["scaled", "beta"], ["y"])]
    inits = [_c("grouped", [0, 2, -1]), _c("s", [2.0, 0.5]), _c("b", [0.25, -1.0]), _c("gamma", gamma),
             _c("beta", beta)]
    path = _save(tmp, "group_norm", nodes, [_f("x", ["n", 6, 5, 4])], [_f("y", ["n", 6, 5, 4])], inits)
    result = roundtrip(path, {"x": _rand(3, 6, 5, 4)})
    assert _ops(result) == ["groupnorm"]
    (layer,) = result.graph.nodes
    assert layer.attrs["groups"] == 2 and layer.attrs["eps"] == pytest.approx(1e-3)
