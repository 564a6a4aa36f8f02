"""`dlspec import` of PyTorch transformers: nn.TransformerEncoder, a small ViT and
F.scaled_dot_product_attention, exported by torch.onnx.export (the TorchScript exporter), import,
compile back to PyTorch, ONNX and Keras and match onnxruntime on the original file.

The exporter writes multi-head attention with the batch axis merged into the heads
(`[T, N·heads, d]`); the importer holds that merge as a view and splits it again, so the spec keeps
the batch symbolic."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper

from dlspec.errors import DlspecError
from dlspec.importers.onnx import import_model

from .test_onnx_import import export, rel_err, roundtrip

#: the newest opset torch's TorchScript exporter (dynamo=False) writes
NEWEST = torch.onnx._constants.ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET
OPSETS = [17, NEWEST]


@pytest.fixture(scope="module")
def tmp(tmp_path_factory):
    return tmp_path_factory.mktemp("onnx_import_transformers")


def _ops(result) -> list[str]:
    return [n.op for n in result.graph.nodes]


def _param_count(module: torch.nn.Module) -> int:
    # nn.TransformerEncoder deep-copies its layer: every parameter is its own tensor
    return sum(p.numel() for p in module.parameters())


class Encoder(torch.nn.Module):
    def __init__(self, **layer) -> None:
        super().__init__()
        one = torch.nn.TransformerEncoderLayer(32, 4, dim_feedforward=64, dropout=0.0, batch_first=True, **layer)
        self.encoder = torch.nn.TransformerEncoder(one, 2, enable_nested_tensor=False)

    def forward(self, x):
        return self.encoder(x)


@pytest.mark.parametrize("opset", OPSETS)
def test_transformer_encoder_over_a_symbolic_batch(tmp, opset: int) -> None:
    torch.manual_seed(0)
    module = Encoder()
    x = torch.randn(3, 5, 32)
    path = export(module, (x,), tmp / f"encoder{opset}.onnx", ["x"], ["y"], {"x": {0: "n"}, "y": {0: "n"}},
                  opset=opset)
    result = roundtrip(path, {"x": x.numpy()})
    assert str(result.graph.inputs[0].type.shape[0]) == "n"
    ops = _ops(result)
    # per layer: scores and weighted values, one softmax, two layer norms
    assert ops.count("matmul") == 4 and ops.count("softmax") == 2 and ops.count("layernorm") == 4
    assert sum(v.size for v in result.weights.values()) == _param_count(module)
    # a batch size other than the traced one runs the same in the imported model
    again = torch.randn(7, 5, 32)
    want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": again.numpy()})[0]
    from dlspec.backends.torch import build_module

    rebuilt = build_module(result.graph).eval()
    rebuilt.load_state_dict({k: torch.from_numpy(v) for k, v in result.weights.items()})
    with torch.no_grad():
        got = rebuilt(again).numpy()
    assert got.shape == (7, 5, 32) and rel_err(got, want) <= 1e-5


class TimeMajorLayer(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.TransformerEncoderLayer(16, 2, dim_feedforward=24, dropout=0.0, norm_first=True,
                                                      activation="gelu")

    def forward(self, x):
        return self.layer(x)


def test_norm_first_gelu_encoder_layer_with_a_time_major_input(tmp) -> None:
    torch.manual_seed(1)
    x = torch.randn(6, 2, 16)  # [T, N, E]: batch_first=False, the batch on axis 1
    path = export(TimeMajorLayer(), (x,), tmp / "time_major.onnx", ["x"], ["y"])
    result = roundtrip(path, {"x": x.numpy()})
    assert "gelu" in _ops(result)


def test_symbolic_sequence_length_through_multihead_attention_is_refused_plainly(tmp) -> None:
    """The exporter writes the traced sequence length into nn.MultiheadAttention's reshapes of the
    key and value, so the file itself runs only at that length: refused with the reason."""
    torch.manual_seed(0)
    x = torch.randn(3, 5, 32)
    path = export(Encoder(), (x,), tmp / "encoder_seq.onnx", ["x"], ["y"],
                  {"x": {0: "n", 1: "t"}, "y": {0: "n", 1: "t"}})
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    with pytest.raises(Exception, match="Reshape"):
        session.run(None, {"x": np.random.default_rng(0).standard_normal((3, 7, 32), dtype=np.float32)})
    with pytest.raises(DlspecError) as err:
        import_model(path)
    d = err.value.diagnostics[0]
    assert d.code == "E742"
    assert "Reshape" in d.message and "[t, n, 32]" in d.message and "traced" in d.message


class TinyViT(torch.nn.Module):
    def __init__(self, image: int = 16, patch: int = 4, dim: int = 32, classes: int = 10) -> None:
        super().__init__()
        tokens = (image // patch) ** 2
        self.patch_embed = torch.nn.Conv2d(3, dim, patch, stride=patch)
        self.class_token = torch.nn.Parameter(torch.randn(1, 1, dim) * 0.5)
        self.pos_embedding = torch.nn.Parameter(torch.randn(1, tokens + 1, dim) * 0.5)
        layer = torch.nn.TransformerEncoderLayer(dim, 4, dim_feedforward=64, dropout=0.0, batch_first=True,
                                                 norm_first=True, activation="gelu")
        self.encoder = torch.nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.norm = torch.nn.LayerNorm(dim)
        self.head = torch.nn.Linear(dim, classes)

    def forward(self, images):
        x = self.patch_embed(images).flatten(2).transpose(1, 2)
        x = torch.cat([self.class_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embedding
        return self.head(self.norm(self.encoder(x))[:, 0])


@pytest.mark.parametrize("opset", OPSETS)
def test_small_vit_with_class_token_and_positional_embedding(tmp, opset: int) -> None:
    torch.manual_seed(2)
    module = TinyViT()
    images = torch.randn(2, 3, 16, 16)
    path = export(module, (images,), tmp / f"vit{opset}.onnx", ["images"], ["logits"],
                  {"images": {0: "n"}, "logits": {0: "n"}}, opset=opset)
    result = roundtrip(path, {"images": images.numpy()})
    params = {n.name: n for n in result.graph.nodes if n.op == "parameter"}
    assert set(params) == {"class_token", "pos_embedding"}
    assert tuple(params["class_token"].attrs["shape"]) == (1, 32)
    np.testing.assert_array_equal(result.weights["class_token.weight"], module.class_token.detach().numpy())
    np.testing.assert_array_equal(result.weights["pos_embedding.weight"], module.pos_embedding.detach().numpy())
    assert sum(v.size for v in result.weights.values()) == _param_count(module)
    assert "images -> parameter([1, 32]) as class_token" in result.text


class Attention(torch.nn.Module):
    def __init__(self, dim: int = 16, heads: int = 2, causal: bool = False) -> None:
        super().__init__()
        self.heads, self.causal = heads, causal
        self.qkv = torch.nn.Linear(dim, 3 * dim)
        self.out = torch.nn.Linear(dim, dim)

    def forward(self, x):
        n, t, e = x.shape
        q, k, v = self.qkv(x).view(n, t, 3, self.heads, e // self.heads).permute(2, 0, 3, 1, 4)
        y = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=self.causal)
        return self.out(y.transpose(1, 2).reshape(n, t, e))


@pytest.mark.parametrize("opset", OPSETS)
def test_scaled_dot_product_attention_over_symbolic_batch_and_length(tmp, opset: int) -> None:
    torch.manual_seed(3)
    x = torch.randn(3, 5, 16)
    path = export(Attention(), (x,), tmp / f"sdpa{opset}.onnx", ["x"], ["y"],
                  {"x": {0: "n", 1: "t"}, "y": {0: "n", 1: "t"}}, opset=opset)
    result = roundtrip(path, {"x": x.numpy()})
    assert [str(d) for d in result.graph.inputs[0].type.shape] == ["n", "t", "16"]
    assert _ops(result).count("matmul") == 2 and "softmax" in _ops(result)


def test_causal_scaled_dot_product_attention(tmp) -> None:
    """is_causal=True exports the mask through Trilu of a constant: it folds, and the additive
    mask of -inf above the diagonal is a parameter added to the scores."""
    torch.manual_seed(4)
    x = torch.randn(2, 6, 16)
    path = export(Attention(causal=True), (x,), tmp / "sdpa_causal.onnx", ["x"], ["y"], {"x": {0: "n"}, "y": {0: "n"}})
    result = roundtrip(path, {"x": x.numpy()})
    (layer,) = [n for n in result.graph.nodes if n.op == "parameter"]
    mask = result.weights[f"{layer.name}.weight"]
    assert mask.shape == (1, 1, 6, 6)
    assert np.isneginf(mask[0, 0][np.triu_indices(6, 1)]).all() and (mask[0, 0][np.tril_indices(6)] == 0).all()


class CrossAttention(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attention = torch.nn.MultiheadAttention(16, 2, batch_first=True)
        self.register_buffer("causal", torch.nn.Transformer.generate_square_subsequent_mask(5))

    def forward(self, x, memory):
        mixed, weights = self.attention(x, memory, memory)  # need_weights: the mean over the heads too
        masked = self.attention(x, x, x, attn_mask=self.causal, need_weights=False)[0]
        return mixed, weights, masked


def test_multihead_attention_with_its_weights_a_memory_and_a_causal_mask(tmp) -> None:
    torch.manual_seed(5)
    x, memory = torch.randn(3, 5, 16), torch.randn(3, 4, 16)
    names = ["mixed", "weights", "masked"]
    path = export(CrossAttention(), (x, memory), tmp / "cross.onnx", ["x", "memory"], names,
                  {k: {0: "n"} for k in ["x", "memory", *names]})
    result = roundtrip(path, {"x": x.numpy(), "memory": memory.numpy()})
    assert "reduce_mean" in _ops(result)  # the weights averaged over the heads


# ---- the merged view, on hand-written graphs --------------------------------------------------------


def _model(nodes, shape_in, shape_out, inits=()) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape_in)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape_out)], list(inits))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _shape(name: str, dims: list[int]) -> onnx.TensorProto:
    return helper.make_tensor(name, TensorProto.INT64, [len(dims)], dims)


def test_batch_merged_with_heads_is_split_again_exactly(tmp) -> None:
    """[n, 6, 4] → [6, n, 4] → [6, n·2, 2] → [n·2, 6, 2] → (×3) → [n, 2, 6, 2] → [n, 6, 4]: the
    batch merged with a static axis in the middle, with only -1 and 0 standing for it."""
    nodes = [
        helper.make_node("Transpose", ["x"], ["t"], perm=[1, 0, 2]),
        helper.make_node("Reshape", ["t", "s1"], ["r1"]),
        helper.make_node("Transpose", ["r1"], ["t1"], perm=[1, 0, 2]),
        helper.make_node("Mul", ["t1", "three"], ["m"]),
        helper.make_node("Reshape", ["m", "s2"], ["r2"]),
        helper.make_node("Transpose", ["r2"], ["t2"], perm=[0, 2, 1, 3]),
        helper.make_node("Reshape", ["t2", "s3"], ["y"]),
    ]
    inits = [_shape("s1", [6, -1, 2]), _shape("s2", [-1, 2, 6, 2]), _shape("s3", [0, 6, 4]),
             helper.make_tensor("three", TensorProto.FLOAT, [], [3.0])]
    path = tmp / "merged.onnx"
    onnx.save(_model(nodes, ["n", 6, 4], ["n", 6, 4], inits), str(path))
    x = np.random.default_rng(0).standard_normal((3, 6, 4), dtype=np.float32)
    result = roundtrip(path, {"x": x})
    assert "split" not in _ops(result)


def test_reshape_that_reinterprets_the_batch_axis_is_refused(tmp) -> None:
    """[n, 4] → [4, n] is a reinterpretation of the data, not a split of a merge: E742."""
    path = tmp / "reinterpret.onnx"
    onnx.save(_model([helper.make_node("Reshape", ["x", "s"], ["y"])], ["n", 4], [4, "n"],
                     [_shape("s", [4, -1])]), str(path))
    with pytest.raises(DlspecError) as err:
        import_model(path)
    assert err.value.diagnostics[0].code == "E742"
    assert "changes axis 0" in err.value.diagnostics[0].message


def test_expand_of_a_constant_not_over_the_batch_is_refused(tmp) -> None:
    """A constant expanded along a symbolic axis other than the batch cannot be a parameter."""
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Gather", ["shape", "one"], ["t"], axis=0),
        helper.make_node("Unsqueeze", ["t", "zero_axis"], ["t1"]),
        helper.make_node("Concat", ["lead", "t1", "last"], ["target"], axis=0),
        helper.make_node("Expand", ["c", "target"], ["e"]),
        helper.make_node("Add", ["x", "e"], ["y"]),
    ]
    inits = [helper.make_tensor("one", TensorProto.INT64, [], [1]), _shape("zero_axis", [0]),
             _shape("lead", [1]), _shape("last", [3]),
             helper.make_tensor("c", TensorProto.FLOAT, [1, 1, 3], [1.0, 2.0, 3.0])]
    path = tmp / "expand_seq.onnx"
    onnx.save(_model(nodes, ["n", "t", 3], ["n", "t", 3], inits), str(path))
    with pytest.raises(DlspecError) as err:
        import_model(path)
    assert err.value.diagnostics[0].code == "E742"
    assert "Expand" in err.value.diagnostics[0].message


def _random_chain(rng: np.random.Generator, sizes: dict[int, int]):
    """Transposes, merges, splits and scalings of x: [n, a, b, c], then back to [n, a·b·c]. Each
    axis is tracked as the list of input axes it merges (0 is the batch)."""
    axes: list[list[int]] = [[0], [1], [2], [3]]
    nodes, inits, cur = [], [], "x"

    def reshape(target: list[int]) -> None:
        nonlocal cur
        inits.append(helper.make_tensor(f"s{len(nodes)}", TensorProto.INT64, [len(target)], target))
        nodes.append(helper.make_node("Reshape", [cur, f"s{len(nodes)}"], [f"t{len(nodes)}"]))
        cur = f"t{len(nodes) - 1}"

    for _ in range(int(rng.integers(2, 7))):
        kind = rng.choice(["transpose", "merge", "split", "scale"])
        if kind == "transpose":
            perm = [int(i) for i in rng.permutation(len(axes))]
            nodes.append(helper.make_node("Transpose", [cur], [f"t{len(nodes)}"], perm=perm))
            cur, axes = f"t{len(nodes) - 1}", [axes[i] for i in perm]
            continue
        if kind == "merge" and len(axes) > 1:
            i = int(rng.integers(len(axes) - 1))
            axes = [*axes[:i], axes[i] + axes[i + 1], *axes[i + 2:]]
        elif kind == "split" and any(len(a) > 1 for a in axes):
            i = int(rng.choice([j for j, a in enumerate(axes) if len(a) > 1]))
            c = int(rng.integers(1, len(axes[i])))
            axes = [*axes[:i], axes[i][:c], axes[i][c:], *axes[i + 1:]]
        else:
            inits.append(helper.make_tensor(f"c{len(nodes)}", TensorProto.FLOAT, [], [1.5]))
            nodes.append(helper.make_node("Mul", [cur, f"c{len(nodes)}"], [f"t{len(nodes)}"]))
            cur = f"t{len(nodes) - 1}"
            continue
        reshape([-1 if 0 in a else int(np.prod([sizes[k] for k in a])) for a in axes])
    fine = [k for a in axes for k in a]
    reshape([-1 if k == 0 else sizes[k] for k in fine])
    nodes.append(helper.make_node("Transpose", [cur], ["back"], perm=[fine.index(0)] + [i for i, k in
                                                                                         enumerate(fine) if k]))
    inits.append(_shape("flat", [0, -1]))
    nodes.append(helper.make_node("Reshape", ["back", "flat"], ["y"]))
    return _model(nodes, ["n", sizes[1], sizes[2], sizes[3]], ["n", sizes[1] * sizes[2] * sizes[3]], inits)


def test_random_reshape_and_transpose_chains_over_a_symbolic_batch_are_exact(tmp) -> None:
    """Chains that merge the batch with other axes, move it and split it again: every one imported
    computes what onnxruntime computes, at a batch size other than any in the chain, and the few a
    spec cannot hold are E742."""
    from dlspec.backends.torch import build_module
    from dlspec.importers.spec_writer import convert

    rng = np.random.default_rng(0)
    imported = refused = 0
    for case in range(60):
        sizes = dict(zip((1, 2, 3), (int(s) for s in rng.permutation([2, 3, 2]))))
        path = tmp / f"chain{case}.onnx"
        onnx.save(_random_chain(rng, sizes), str(path))
        x = rng.standard_normal((5, sizes[1], sizes[2], sizes[3])).astype(np.float32)
        want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
        try:
            result = convert(path, path.with_suffix(".dls"))
        except DlspecError as exc:
            assert exc.diagnostics[0].code == "E742", exc.diagnostics[0].message
            refused += 1
            continue
        with torch.no_grad():
            got = build_module(result.graph).eval()(torch.from_numpy(x)).numpy()
        assert got.shape == want.shape and np.array_equal(got, want), case
        imported += 1
    assert imported >= 55, (imported, refused)
