"""`dlspec import`: ONNX models (PyTorch exports and hand-written older-opset graphs) become specs
whose torch modules reproduce onnxruntime's outputs on the original file."""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from dlspec.backends.torch import build_module
from dlspec.cli import main
from dlspec.errors import DlspecError
from dlspec.importers.spec_writer import convert
from dlspec.program import compile_file

from .helpers import spec_path
from .op_cases import CASES

TOL = 1e-5


def rel_err(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.abs(got - want).max() / max(float(np.abs(want).max()), 1e-12))


def export(module: torch.nn.Module, args: tuple, path: Path, inputs: list[str], outputs: list[str],
           dynamic: dict | None = None, opset: int = 17, fold: bool = True) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), args, str(path), dynamo=False, input_names=inputs, output_names=outputs,
                          dynamic_axes=dynamic, opset_version=opset, do_constant_folding=fold)
    return path


def roundtrip(onnx_path: Path, feeds: dict[str, np.ndarray]):
    """Import, build the torch module with the imported weights, compare with onnxruntime on the original."""
    result = convert(onnx_path, onnx_path.with_suffix(".dls"))
    module = build_module(result.graph).eval()
    module.load_state_dict({k: torch.from_numpy(v) for k, v in result.weights.items()}, strict=True)
    want = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"]).run(None, feeds)
    names = [o.name for o in onnx.load(str(onnx_path)).graph.output]
    with torch.no_grad():
        got = module(**{result.input_names[k]: torch.from_numpy(v) for k, v in feeds.items()})
    if isinstance(got, torch.Tensor):
        got = {result.graph.outputs[0].name: got}
    for name, ref in zip(names, want):
        out = got[result.output_names[name]].numpy()
        assert out.shape == ref.shape, name
        assert rel_err(out, ref) <= TOL, (name, rel_err(out, ref))
    spec_inputs = {result.input_names[k]: v for k, v in feeds.items()}
    if importlib.util.find_spec("dlspec.backends.onnx") is not None:  # the ONNX backend re-exports the spec
        from dlspec.backends.onnx import run as onnx_run

        again = onnx_run(result.graph, result.weights, spec_inputs)
        for name, ref in zip(names, want):
            assert rel_err(np.asarray(again[result.output_names[name]]), ref) <= TOL, name
    if importlib.util.find_spec("dlspec.backends.keras") is not None:
        from dlspec.backends.keras import build_model, set_weights

        kmodel = build_model(result.graph)
        set_weights(kmodel, result.graph, result.weights)
        kout = kmodel(next(iter(spec_inputs.values())) if len(spec_inputs) == 1 else spec_inputs)
        if not isinstance(kout, dict):
            kout = {result.graph.outputs[0].name: kout}
        for name, ref in zip(names, want):
            assert rel_err(np.asarray(kout[result.output_names[name]]), ref) <= TOL, name
    return result


@pytest.fixture(scope="module")
def tmp(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    return tmp_path_factory.mktemp("onnx_import")


def _randomize_bn(module: torch.nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, torch.nn.BatchNorm2d | torch.nn.BatchNorm1d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)


# ---- PyTorch exports ---------------------------------------------------------------------------------


class SmallCNN(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = torch.nn.BatchNorm2d(8)
        self.conv2 = torch.nn.Conv2d(8, 16, 3, stride=2, bias=False)
        self.bn2 = torch.nn.BatchNorm2d(16)
        self.fc = torch.nn.Linear(16 * 3 * 3, 10)

    def forward(self, x):
        x = torch.nn.functional.max_pool2d(torch.relu(self.bn1(self.conv1(x))), 2)
        x = torch.relu(self.bn2(self.conv2(x)))
        return self.fc(torch.flatten(x, 1))


@pytest.mark.parametrize("fold", [False, True], ids=["batchnorm", "folded"])
def test_cnn_with_batchnorm_pool_flatten_dense(tmp: Path, fold: bool) -> None:
    module = SmallCNN()
    _randomize_bn(module)
    x = torch.randn(2, 3, 16, 16)
    path = export(module, (x,), tmp / f"cnn_{fold}.onnx", ["image"], ["logits"], {"image": {0: "batch"}}, fold=fold)
    result = roundtrip(path, {"image": np.random.default_rng(1).standard_normal((3, 3, 16, 16), dtype=np.float32)})
    ops = [n.op for n in result.graph.nodes]
    assert ops.count("batchnorm2d") == (0 if fold else 2)
    assert "flatten" in ops and "dense" in ops
    assert result.graph.inputs[0].type.shape[0] != 3  # the batch stays symbolic
    assert "input image: float32[batch, 3, 16, 16]" in result.text
    assert "as fc" in result.text and "fc.weight" in result.weights


class Classifier(torch.nn.Module):
    def __init__(self, cell: type[torch.nn.Module]) -> None:
        super().__init__()
        self.rnn = cell(6, 8, num_layers=2, bidirectional=True, batch_first=True)
        self.head = torch.nn.Linear(16 + 16, 4)

    def forward(self, x):
        y, h = self.rnn(x)
        if isinstance(h, tuple):
            h = h[0]
        summary = torch.cat([h[-2], h[-1]], dim=1)  # the top layer's final states, both directions
        return self.head(torch.cat([y[:, -1], summary], dim=1))


@pytest.mark.parametrize("cell", [torch.nn.LSTM, torch.nn.GRU], ids=["lstm", "gru"])
def test_bidirectional_two_layer_recurrent_classifier(tmp: Path, cell) -> None:
    module = Classifier(cell)
    x = torch.randn(2, 5, 6)
    path = export(module, (x,), tmp / f"{cell.__name__}.onnx", ["tokens"], ["scores"], {"tokens": {0: "n"}})
    result = roundtrip(path, {"tokens": np.random.default_rng(2).standard_normal((3, 5, 6), dtype=np.float32)})
    recurrent = [n for n in result.graph.nodes if n.op == cell.__name__.lower()]
    assert len(recurrent) == 2 and all(n.attrs["bidirectional"] for n in recurrent)
    # the time-major transposes and reshapes between the ONNX layers cost no layer
    assert not any(n.op in ("permute", "reshape") for n in result.graph.nodes)


class Tagger(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = torch.nn.Embedding(20, 8)
        self.lstm = torch.nn.LSTM(8, 5, batch_first=True)
        self.fc = torch.nn.Linear(5, 2)

    def forward(self, ids):
        y, (h, _) = self.lstm(self.emb(ids))
        return self.fc(h[-1]), y.mean(1)


def test_embedding_lstm_over_symbolic_steps(tmp: Path) -> None:
    ids = torch.randint(0, 20, (2, 9))
    path = export(Tagger(), (ids,), tmp / "tagger.onnx", ["ids"], ["scores", "pooled"], {"ids": {0: "b", 1: "t"}})
    result = roundtrip(path, {"ids": np.random.default_rng(8).integers(0, 20, (3, 6)).astype(np.int64)})
    assert "input ids: int64[b, t]" in result.text
    assert [n.op for n in result.graph.nodes][:2] == ["embedding", "lstm"]


class Residual(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.a = torch.nn.Conv2d(8, 8, 3, padding=1)
        self.b = torch.nn.Conv2d(8, 8, 1)
        self.up = torch.nn.ConvTranspose2d(16, 4, 3, stride=2, padding=1, output_padding=1)
        self.fc = torch.nn.Linear(4, 3)

    def forward(self, x):
        x = torch.nn.functional.leaky_relu(self.stem(x), 0.2)
        y = torch.nn.functional.gelu(self.a(x)) + x                     # residual add
        z = torch.cat([y, torch.nn.functional.hardsigmoid(self.b(x))], 1)  # concat
        z = torch.nn.functional.avg_pool2d(z, 3, stride=2, padding=1)
        z = torch.nn.functional.elu(self.up(z)) * 0.5
        z = torch.clamp(z, 0.0, 5.0)
        mask = torch.sigmoid(z) + torch.nn.functional.softplus(z) - torch.nn.functional.hardswish(torch.selu(z))
        return self.fc(torch.nn.functional.adaptive_avg_pool2d(z, 1).flatten(1)), mask


def test_residual_add_concat_and_activations(tmp: Path) -> None:
    x = torch.randn(1, 3, 8, 8)
    path = export(Residual(), (x,), tmp / "residual.onnx", ["x"], ["logits", "mask"], {"x": {0: "batch"}})
    result = roundtrip(path, {"x": np.random.default_rng(3).standard_normal((2, 3, 8, 8), dtype=np.float32)})
    ops = {n.op for n in result.graph.nodes}
    assert {"add", "sub", "concat", "gelu", "conv_transpose2d", "leaky_relu", "elu", "selu", "hardtanh", "avgpool2d",
            "hardsigmoid", "softplus", "hardswish"} <= ops  # PyTorch's Hardsigmoid, Softplus, Hardswish as themselves
    assert "erf" not in result.text.lower()
    assert result.text.count("global_avgpool2d()") == 1  # GlobalAveragePool → Flatten is one layer


# ---- hand-written graphs at older opsets -----------------------------------------------------------------


def _init(rng: np.random.Generator, name: str, *shape: int, positive: bool = False) -> onnx.TensorProto:
    arr = rng.uniform(0.5, 1.5, shape) if positive else rng.standard_normal(shape) * 0.3
    return numpy_helper.from_array(arr.astype(np.float32), name)


def alexnet_like(opset: int) -> onnx.ModelProto:
    """A small AlexNet-style net as pre-2019 exporters wrote it."""
    rng = np.random.default_rng(opset)
    inits = [
        _init(rng, "conv1.W", 8, 3, 3, 3), _init(rng, "conv1.b", 8),
        _init(rng, "bn.scale", 8, positive=True), _init(rng, "bn.B", 8), _init(rng, "bn.mean", 8),
        _init(rng, "bn.var", 8, positive=True),
        _init(rng, "conv2.W", 6, 8, 3, 3),
        _init(rng, "fc.W", 6 * 4 * 4, 10), _init(rng, "fc.b", 10),
        numpy_helper.from_array(np.array([0, -1], dtype=np.int64), "flat_shape"),
    ]
    bn_attrs = {"epsilon": 1e-3, "momentum": 0.9}
    if opset < 9:
        bn_attrs["spatial"] = 1
    nodes = [
        helper.make_node("Conv", ["data", "conv1.W", "conv1.b"], ["c1"], name="conv1", kernel_shape=[3, 3],
                         pads=[1, 1, 1, 1], strides=[1, 1]),
        helper.make_node("BatchNormalization", ["c1", "bn.scale", "bn.B", "bn.mean", "bn.var"], ["b1"], name="bn",
                         **bn_attrs),
        helper.make_node("Relu", ["b1"], ["r1"], name="relu1"),
        helper.make_node("LRN", ["r1"], ["n1"], name="norm1", size=5, alpha=0.02, beta=0.7, bias=2.0),
        helper.make_node("MaxPool", ["n1"], ["p1"], name="pool1", kernel_shape=[3, 3], strides=[2, 2],
                         pads=[0, 0, 1, 1]),  # uneven pads: a pad layer before the pool
    ]
    if opset < 11:
        nodes.append(helper.make_node("Pad", ["p1"], ["pad1"], name="pad1", pads=[0, 0, 1, 0, 0, 0, 0, 1],
                                      mode="constant", value=0.0))
        nodes.append(helper.make_node("Clip", ["pad1"], ["k1"], name="clip", min=0.0, max=4.0))
    else:
        inits += [numpy_helper.from_array(np.array([0, 0, 1, 0, 0, 0, 0, 1], dtype=np.int64), "pad_amounts"),
                  numpy_helper.from_array(np.array(0.0, dtype=np.float32), "lo"),
                  numpy_helper.from_array(np.array(4.0, dtype=np.float32), "hi")]
        nodes.append(helper.make_node("Pad", ["p1", "pad_amounts"], ["pad1"], name="pad1", mode="constant"))
        nodes.append(helper.make_node("Clip", ["pad1", "lo", "hi"], ["k1"], name="clip"))
    nodes += [
        helper.make_node("Conv", ["k1", "conv2.W"], ["c2"], name="conv2", kernel_shape=[3, 3], strides=[2, 2],
                         auto_pad="SAME_UPPER"),
        helper.make_node("AveragePool", ["c2"], ["a2"], name="avg", kernel_shape=[3, 3], strides=[1, 1],
                         pads=[1, 1, 1, 1]),  # count_include_pad=0, the ONNX default
        helper.make_node("Softmax", ["a2"], ["s2"], name="softmax4d", axis=1),  # before 13: over C·H·W
        helper.make_node("Reshape", ["s2", "flat_shape"], ["f"], name="flatten"),
        helper.make_node("Dropout", ["f"], ["d"], name="drop", **({"ratio": 0.25} if opset < 12 else {})),
        helper.make_node("Gemm", ["d", "fc.W", "fc.b"], ["g"], name="fc", alpha=0.5, beta=2.0),
        helper.make_node("Softmax", ["g"], ["prob"], name="prob"),
    ]
    graph = helper.make_graph(
        nodes, "alexnet_like",
        [helper.make_tensor_value_info("data", TensorProto.FLOAT, ["batch_size", 3, 12, 12])],
        [helper.make_tensor_value_info("prob", TensorProto.FLOAT, ["batch_size", 10]),
         helper.make_tensor_value_info("a2", TensorProto.FLOAT, ["batch_size", 6, 4, 4])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="hand")
    model.ir_version = 7 if opset >= 12 else 4
    onnx.checker.check_model(model)
    return model


@pytest.mark.parametrize("opset", [7, 9, 11, 12])
def test_older_opset_conv_net(tmp: Path, opset: int) -> None:
    path = tmp / f"alexnet_{opset}.onnx"
    onnx.save(alexnet_like(opset), str(path))
    feeds = {"data": np.random.default_rng(4).standard_normal((2, 3, 12, 12), dtype=np.float32)}
    result = roundtrip(path, feeds)
    assert "input data: float32[batch_size, 3, 12, 12]" in result.text
    assert "batchnorm2d(eps=0.001) as bn" in result.text
    assert "hardtanh(0.0, 4.0)" in result.text
    assert "lrn(5, alpha=0.02, beta=0.7, k=2.0)" in result.text
    assert "conv2d(6, 3, stride=2, padding=same, bias=false) as conv2" in result.text


def _graph(nodes, inputs, outputs, inits=(), opset: int = 13) -> onnx.ModelProto:
    g = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def test_unsupported_ops_are_listed_in_one_error(tmp: Path) -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4, 6, 6])
    k = numpy_helper.from_array(np.array([2], dtype=np.int64), "k")
    nodes = [
        helper.make_node("Hardmax", ["x"], ["l"], name="hm1"),
        helper.make_node("Relu", ["l"], ["r"], name="relu"),
        helper.make_node("Hardmax", ["r"], ["l2"], name="hm2"),
        helper.make_node("Flatten", ["l2"], ["f"]),
        helper.make_node("LpNormalization", ["f"], ["v"], name="top"),
    ]
    model = _graph(nodes, [x], [helper.make_tensor_value_info("v", TensorProto.FLOAT, None)], [k])
    path = tmp / "unsupported.onnx"
    onnx.save(model, str(path))
    with pytest.raises(DlspecError) as info:
        convert(path, tmp / "unsupported.dls")
    assert len(info.value.diagnostics) == 1
    d = info.value.first
    assert d.code == "E741"
    assert "Hardmax (`hm1`, `hm2`)" in d.message and "LpNormalization (`top`)" in d.message and "Relu" not in d.message

    runner = CliRunner()
    res = runner.invoke(main, ["import", str(path), "-o", str(tmp / "unsupported.dls")])
    assert res.exit_code == 1 and "E741" in res.output
    assert not (tmp / "unsupported.dls").exists() and not (tmp / "unsupported.safetensors").exists()


# ---- the four import bugs ------------------------------------------------------------------------


def test_constant_unsqueeze_with_axes_attribute_folds_at_its_opset(tmp: Path) -> None:
    """Before opset 13 Unsqueeze takes `axes` as an attribute; folding a constant one evaluates it
    with the model's opset (DenseNet-121 and Inception v2 as the ONNX model zoo ships them)."""
    rng = np.random.default_rng(1)
    scale = numpy_helper.from_array(rng.uniform(0.5, 1.5, (4,)).astype(np.float32), "scale")
    nodes = [
        helper.make_node("Unsqueeze", ["scale"], ["scale2"], name="unsq", axes=[0]),
        helper.make_node("Mul", ["x", "scale2"], ["y"], name="mul"),
    ]
    model = _graph(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])], [scale], opset=11)
    path = tmp / "unsqueeze11.onnx"
    onnx.save(model, str(path))
    roundtrip(path, {"x": rng.standard_normal((3, 4)).astype(np.float32)})


@pytest.mark.parametrize("bound", ["min", "max"])
def test_clip_with_one_bound_imports_as_maximum_or_minimum(tmp: Path, bound: str) -> None:
    """torch.clamp(x, min=-1) exports a Clip without a max: a maximum with a scalar, not a hardtanh
    whose other bound (float32's largest value) overflows in PyTorch."""
    c = numpy_helper.from_array(np.array(-0.5 if bound == "min" else 0.25, dtype=np.float32), "c")
    ins = ["x", "c"] if bound == "min" else ["x", "", "c"]
    model = _graph([helper.make_node("Clip", ins, ["y"], name="clamp")],
                   [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 6])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 6])], [c])
    path = tmp / f"clip_{bound}.onnx"
    onnx.save(model, str(path))
    result = roundtrip(path, {"x": np.random.default_rng(2).standard_normal((3, 6)).astype(np.float32) * 3})
    assert [n.op for n in result.graph.nodes] == ["maximum" if bound == "min" else "minimum"]


def test_average_pool_excluding_uneven_pads(tmp: Path) -> None:
    """Inception v1's last pool: a 7×7 AveragePool over 6×6 with pads (0, 0, 1, 1) and
    count_include_pad=0 divides each window by its real elements only."""
    nodes = [helper.make_node("AveragePool", ["x"], ["y"], name="pool", kernel_shape=[7, 7], strides=[1, 1],
                              pads=[0, 0, 1, 1], count_include_pad=0),
             helper.make_node("AveragePool", ["x"], ["z"], name="pool2", kernel_shape=[3, 3], strides=[2, 2],
                              pads=[1, 0, 2, 1], count_include_pad=0, ceil_mode=1)]
    model = _graph(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 6, 6])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, None),
                    helper.make_tensor_value_info("z", TensorProto.FLOAT, None)], opset=13)
    path = tmp / "avgpool_uneven.onnx"
    onnx.save(model, str(path))
    roundtrip(path, {"x": np.random.default_rng(3).standard_normal((2, 3, 6, 6)).astype(np.float32)})


def test_a_refused_concat_operand_reads_plainly(tmp: Path) -> None:
    shape = helper.make_node("Shape", ["x"], ["s"], name="shape")
    model = _graph([shape, helper.make_node("Concat", ["x", "s"], ["y"], name="cat", axis=0)],
                   [helper.make_tensor_value_info("x", TensorProto.INT64, ["n"])],
                   [helper.make_tensor_value_info("y", TensorProto.INT64, None)])
    path = tmp / "concat_shape.onnx"
    onnx.save(model, str(path))
    with pytest.raises(DlspecError) as info:
        convert(path, tmp / "concat_shape.dls")
    assert info.value.code == "E742" and "`cat`" in info.value.message
    assert "the every" not in info.value.message and "Concat input" in info.value.message


def test_lrn_of_even_size_is_a_clear_error(tmp: Path) -> None:
    """ONNX's window for an even size lies one channel after PyTorch's: refused, not approximated."""
    node = helper.make_node("LRN", ["x"], ["y"], name="norm4", size=4)
    model = _graph([node], [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 6, 3, 3])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    path = tmp / "lrn4.onnx"
    onnx.save(model, str(path))
    with pytest.raises(DlspecError) as info:
        convert(path, tmp / "lrn4.dls")
    assert info.value.code == "E742" and "even size (4)" in info.value.message and "`norm4`" in info.value.message
    assert not (tmp / "lrn4.dls").exists()


def test_gru_with_linear_before_reset_0_is_a_clear_error(tmp: Path) -> None:
    rng = np.random.default_rng(5)
    inits = [_init(rng, "W", 1, 9, 4), _init(rng, "R", 1, 9, 3)]
    node = helper.make_node("GRU", ["x", "W", "R"], ["y", "h"], name="gru", hidden_size=3)
    model = _graph([node], [helper.make_tensor_value_info("x", TensorProto.FLOAT, [5, "n", 4])],
                   [helper.make_tensor_value_info("h", TensorProto.FLOAT, None)], inits)
    path = tmp / "gru_lbr0.onnx"
    onnx.save(model, str(path))
    with pytest.raises(DlspecError) as info:
        convert(path, tmp / "gru_lbr0.dls")
    assert info.value.code == "E742" and "linear_before_reset" in info.value.message and "`gru`" in info.value.message


def test_time_major_lstm_with_names_to_sanitize(tmp: Path) -> None:
    """An opset-9 LSTM over [T, N, F] with ONNX gate order iofc, fed and read time-major; names that
    are keywords or not identifiers are renamed."""
    rng = np.random.default_rng(6)
    hidden = 3
    inits = [_init(rng, "W", 1, 4 * hidden, 4), _init(rng, "R", 1, 4 * hidden, hidden), _init(rng, "B", 1, 8 * hidden)]
    nodes = [
        helper.make_node("LSTM", ["input.1", "W", "R", "B"], ["Y", "Y_h"], name="if", hidden_size=hidden),
        helper.make_node("Squeeze", ["Y"], ["seq"], name="sq", axes=[1]),
        helper.make_node("Tanh", ["seq"], ["output"], name="model"),
    ]
    model = _graph(nodes, [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [7, None, 4])],
                   [helper.make_tensor_value_info("output", TensorProto.FLOAT, None),
                    helper.make_tensor_value_info("Y_h", TensorProto.FLOAT, None)], inits, opset=9)
    path = tmp / "lstm_tm.onnx"
    onnx.save(model, str(path))
    result = roundtrip(path, {"input.1": rng.standard_normal((7, 2, 4)).astype(np.float32)})
    assert result.input_names == {"input.1": "input_1"}
    assert result.output_names["output"] == "output_out" and "as if_layer" in result.text
    assert "input input_1: float32[7, input_1_d1, 4]" in result.text


# ---- the command line ----------------------------------------------------------------------------------------


def test_cli_import_writes_spec_and_weights_and_refuses_to_overwrite(tmp: Path) -> None:
    src = export(SmallCNN(), (torch.randn(1, 3, 16, 16),), tmp / "cli.onnx", ["image"], ["logits"],
                 {"image": {0: "batch"}})
    out = tmp / "out" / "cli_model.dls"
    runner = CliRunner()
    res = runner.invoke(main, ["import", str(src), "-o", str(out), "--name", "Imported"])
    assert res.exit_code == 0, res.output
    weights = out.with_suffix(".safetensors")
    assert out.exists() and weights.exists()
    assert sorted(p.name for p in out.parent.iterdir()) == ["cli_model.dls", "cli_model.safetensors"]  # no temp files
    text = out.read_text()
    assert "model Imported {" in text and 'weights = "cli_model.safetensors"' in text
    prog = compile_file(out)  # the spec checks, and the weights fit it exactly
    from dlspec.weights import load_graph_weights

    assert set(load_graph_weights(prog.models["Imported"], weights)) == {p.path for p in prog.models["Imported"].params()}
    assert runner.invoke(main, ["check", str(out)]).exit_code == 0

    before = out.read_text()
    res = runner.invoke(main, ["import", str(src), "-o", str(out)])
    assert res.exit_code == 1 and "E743" in res.output and out.read_text() == before
    res = runner.invoke(main, ["import", str(src), "-o", str(out), "--force"])
    assert res.exit_code == 0 and "model Cli {" in out.read_text()

    derived = tmp / "out" / "finetune.dls"
    derived.write_text('import "cli_model.dls"\n\nmodel Finetuned from Cli {\n    weights = "cli_model.safetensors"\n'
                       '    freeze "conv*"\n    replace fc = dense(5)\n}\n')
    assert runner.invoke(main, ["check", str(derived)]).exit_code == 0

    assert runner.invoke(main, ["import", str(src), "-o", str(tmp / "x.txt")]).exit_code == 2
    assert runner.invoke(main, ["import", str(src), "--name", "not valid"]).exit_code == 2
    res = runner.invoke(main, ["import", str(tmp / "missing.onnx")])
    assert res.exit_code == 1 and "E740" in res.output
    (tmp / "junk.onnx").write_bytes(b"not a model")
    res = runner.invoke(main, ["import", str(tmp / "junk.onnx")])
    assert res.exit_code == 1 and "E740" in res.output and "Traceback" not in res.output


@pytest.mark.parametrize("spec", ["digits_resnet", "sentiment_bilstm", "transformer_classifier"])
def test_specs_exported_by_the_onnx_backend_import_back(tmp: Path, spec: str) -> None:
    """spec → dlspec's ONNX backend → `dlspec import` → the same outputs."""
    import dlspec
    from dlspec.backends.onnx import model_bytes
    from dlspec.backends.torch import canonical_state

    graph = dlspec.load(spec_path(f"{spec}.dls")).graph()
    torch.manual_seed(0)
    weights = {k: np.asarray(v) for k, v in canonical_state(build_module(graph), graph).items()}
    path = tmp / f"spec_{spec}.onnx"
    path.write_bytes(model_bytes(graph, weights=weights))
    rng = np.random.default_rng(7)
    feeds = {}
    for i in ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).get_inputs():
        shape = [d if isinstance(d, int) else 2 for d in i.shape]
        feeds[i.name] = (rng.integers(0, 5, shape).astype(np.int64) if "int64" in i.type
                         else rng.standard_normal(shape).astype(np.float32))
    result = roundtrip(path, feeds)
    assert sum(p.numel for p in result.graph.params()) == sum(p.numel for p in graph.params())


# ---- the shared op cases, exported to ONNX and imported back -----------------------------------


@pytest.mark.parametrize("case", sorted(CASES))
def test_op_case_exported_to_onnx_imports_back(tmp: Path, case: str) -> None:
    """Each op case, exported by the ONNX backend, imports back as the table says: the same layers
    op for op ("same"), or layers computing the same outputs ("numbers"), or the named error."""
    from collections import Counter

    from dlspec.backends import onnx as ob

    c = CASES[case]
    g = c.graph()
    torch.manual_seed(0)
    weights = {k: v for k, v in build_module(g).state_dict().items() if not k.endswith("num_batches_tracked")}
    path = tmp / f"{case}.onnx"
    path.write_bytes(ob.model_bytes(g, {k: v.numpy() for k, v in weights.items()}))
    if c.onnx_import not in ("same", "numbers"):
        with pytest.raises(DlspecError) as info:
            convert(path, path.with_suffix(".dls"))
        assert info.value.code == c.onnx_import
        return
    result = convert(path, path.with_suffix(".dls"))
    if c.onnx_import == "same":
        assert Counter(n.op for n in result.graph.nodes) == Counter(n.op for n in g.nodes)
    env = c.bindings()[0]
    arrays = c.arrays(env)
    want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        None, {i.name: a for i, a in zip(g.inputs, arrays)})
    module = build_module(result.graph).eval()
    module.load_state_dict({k: torch.from_numpy(v) for k, v in result.weights.items()}, strict=True)
    with torch.no_grad():
        got = module(**{result.input_names[i.name]: torch.from_numpy(a) for i, a in zip(g.inputs, arrays)})
    if isinstance(got, torch.Tensor):
        got = {result.graph.outputs[0].name: got}
    for out, ref in zip(g.outputs, want):
        value = got[result.output_names[out.name]].numpy()
        assert value.shape == ref.shape and rel_err(value, ref) <= TOL, (case, out.name)


# ---- today's ops, exported by PyTorch ------------------------------------------------------------


class GroupNormCNN(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.gn1 = torch.nn.GroupNorm(4, 8)
        self.act1 = torch.nn.PReLU(8)
        self.conv2 = torch.nn.Conv2d(8, 6, 3, stride=2)
        self.inorm = torch.nn.InstanceNorm2d(6, affine=True)
        self.act2 = torch.nn.PReLU()
        self.fc = torch.nn.Linear(6, 5)

    def forward(self, x):
        x = self.act1(self.gn1(self.conv1(x)))
        x = torch.nn.functional.max_pool2d(x, 3, stride=1, padding=1, dilation=2, ceil_mode=True)
        x = self.act2(self.inorm(self.conv2(x)))
        return self.fc(x.mean(dim=(2, 3)))


def test_groupnorm_cnn_with_prelu_and_dilated_pool(tmp: Path) -> None:
    module = GroupNormCNN()
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, torch.nn.PReLU):
                m.weight.uniform_(-0.5, 0.5)
            if isinstance(m, torch.nn.GroupNorm | torch.nn.InstanceNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
    x = torch.randn(2, 3, 12, 11)
    path = export(module, (x,), tmp / "gn_cnn.onnx", ["x"], ["y"], {"x": {0: "n"}, "y": {0: "n"}})
    result = roundtrip(path, {"x": x.numpy()})
    ops = {n.op for n in result.graph.nodes}
    assert {"groupnorm", "prelu", "maxpool2d"} <= ops
    # GroupNorm's reshape, instance norm, reshape back, scale and shift are one groupnorm; the
    # affine InstanceNorm2d an instance_norm
    assert [n.op for n in result.graph.nodes].count("groupnorm") == 1 and "reshape" not in ops
    norm = next(n for n in result.graph.nodes if n.op == "instance_norm")
    assert norm.attrs["affine"] and norm.name == "inorm"


class ElementwiseMath(torch.nn.Module):
    def forward(self, x, y):
        pos = x.abs() + 0.5
        a = torch.exp(x * 0.5) + torch.log(pos) * torch.sqrt(pos) - 1.0 / pos
        b = torch.pow(pos, 1.7) + pos ** y.clamp(-1, 1) + torch.reciprocal(pos)
        c = torch.maximum(x, y) - torch.minimum(x, y * 2) + torch.clamp(x, min=-0.3) + torch.clamp(y, max=0.2)
        return a, b, c


@pytest.mark.parametrize("opset", [pytest.param(13, marks=pytest.mark.slow), 17])
def test_elementwise_math_and_one_sided_clamps(tmp: Path, opset: int) -> None:
    x, y = torch.randn(3, 4, 5), torch.randn(3, 4, 5)
    path = export(ElementwiseMath(), (x, y), tmp / f"math{opset}.onnx", ["x", "y"], ["a", "b", "c"],
                  {"x": {0: "n"}, "y": {0: "n"}}, opset=opset)
    result = roundtrip(path, {"x": x.numpy(), "y": y.numpy()})
    assert {"exp", "log", "sqrt", "pow", "maximum", "minimum", "absolute", "reciprocal"} <= {n.op for n in
                                                                                          result.graph.nodes}


class TinyUNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.enc1 = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU())
        self.enc2 = torch.nn.Sequential(torch.nn.Conv2d(8, 16, 3, padding=1), torch.nn.ReLU())
        self.mid = torch.nn.Conv2d(16, 16, 3, padding=1)
        self.up1 = torch.nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
        self.dec2 = torch.nn.Conv2d(32, 8, 3, padding=1)
        self.dec1 = torch.nn.Conv2d(16, 4, 1)

    def forward(self, x):
        e1 = self.enc1(x)
        e2 = self.enc2(torch.nn.functional.max_pool2d(e1, 2))
        m = self.mid(torch.nn.functional.max_pool2d(e2, 2))
        d2 = torch.relu(self.dec2(torch.cat([self.up1(m), e2], dim=1)))
        up = torch.nn.functional.interpolate(d2, scale_factor=2, mode="nearest")
        aligned = torch.nn.functional.interpolate(d2, size=(16, 12), mode="bilinear", align_corners=True)
        return self.dec1(torch.cat([up, e1], dim=1)), aligned


@pytest.mark.parametrize("opset", [pytest.param(13, marks=pytest.mark.slow), 17])
def test_unet_with_bilinear_and_nearest_upsampling(tmp: Path, opset: int) -> None:
    x = torch.randn(2, 3, 16, 12)
    path = export(TinyUNet(), (x,), tmp / f"unet{opset}.onnx", ["x"], ["y", "aligned"],
                  {"x": {0: "n"}, "y": {0: "n"}, "aligned": {0: "n"}}, opset=opset)
    result = roundtrip(path, {"x": x.numpy()})
    modes = sorted(n.attrs.get("mode", "nearest") for n in result.graph.nodes if n.op == "upsample")
    assert modes == ["bilinear", "bilinear", "nearest"]


class LastStepLSTM(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lstm = torch.nn.LSTM(5, 8, batch_first=True)
        self.fc = torch.nn.Linear(8, 3)

    def forward(self, x):
        out, _ = self.lstm(x)
        return self.fc(out[:, -1]), self.fc(out[:, -1:].flatten(1)) * 2


@pytest.mark.slow
def test_lstm_classifier_taking_the_last_step_of_a_dynamic_sequence(tmp: Path) -> None:
    x = torch.randn(3, 7, 5)
    path = export(LastStepLSTM(), (x,), tmp / "last_step.onnx", ["x"], ["y", "z"],
                  {"x": {0: "n", 1: "steps"}, "y": {0: "n"}, "z": {0: "n"}})
    result = roundtrip(path, {"x": x.numpy()})
    assert "select" in {n.op for n in result.graph.nodes}
    # another number of steps than the export's
    again = roundtrip(path, {"x": np.random.default_rng(4).standard_normal((2, 11, 5)).astype(np.float32)})
    assert again.graph.inputs[0].type.shape[1] == result.graph.inputs[0].type.shape[1]


class MaskedScores(torch.nn.Module):
    """Attention-style scores with a padding mask (masked_fill), a leaky piecewise function and
    a clamp written with torch.where, as people write them."""

    def __init__(self) -> None:
        super().__init__()
        self.q = torch.nn.Linear(6, 6)

    def forward(self, x, keep):
        scores = torch.matmul(self.q(x), x.transpose(1, 2))  # [n, t, t]
        scores = scores.masked_fill(keep.unsqueeze(1) < 0.5, float("-inf"))
        attn = torch.softmax(scores, dim=-1)
        piecewise = torch.where(x > 0, x, 0.1 * x)
        clamped = torch.where(x >= 1.0, torch.ones_like(x), x)
        return attn, piecewise + clamped


@pytest.mark.parametrize("opset", [pytest.param(13, marks=pytest.mark.slow), 17])
def test_masked_fill_and_where_import_as_comparisons_and_where(tmp: Path, opset: int) -> None:
    x = torch.randn(2, 5, 6)
    keep = torch.ones(2, 5)
    keep[0, 3:] = 0.0  # padding: every query still has a key
    path = export(MaskedScores(), (x, keep), tmp / f"masked{opset}.onnx", ["x", "keep"], ["attn", "y"],
                  {"x": {0: "n", 1: "t"}, "keep": {0: "n", 1: "t"}, "attn": {0: "n", 1: "t", 2: "t"},
                   "y": {0: "n", 1: "t"}}, opset=opset)
    result = roundtrip(path, {"x": x.numpy(), "keep": keep.numpy()})
    ops = [n.op for n in result.graph.nodes]
    assert ops.count("where") == 3 and {"less", "greater", "greater_equal"} <= set(ops), ops
    got = result.graph
    masked = [n for n in got.nodes if n.op == "where" and n.attrs.get("a_value") == float("-inf")]
    assert masked, "masked_fill's value is the where's number, not a tensor"


class TopScores(torch.nn.Module):
    def forward(self, x):
        values, indices = torch.topk(x, 3, dim=1)
        low, _ = torch.topk(x, 2, dim=2, largest=False)
        return values * 2, indices, low


def test_pytorch_topk_imports_as_topk_with_int64_indices(tmp: Path) -> None:
    x = torch.randn(2, 7, 5)
    path = export(TopScores(), (x,), tmp / "topk.onnx", ["x"], ["v", "i", "low"],
                  {"x": {0: "n"}, "v": {0: "n"}, "i": {0: "n"}, "low": {0: "n"}})
    result = roundtrip(path, {"x": x.numpy()})
    tops = [n for n in result.graph.nodes if n.op == "topk"]
    assert [(n.attrs["k"], n.attrs["axis"], n.attrs["largest"]) for n in tops] == [(3, 1, True), (2, 2, False)]
    assert result.graph.values[tops[0].outputs[1]].dtype == "int64"


class Uint8Images(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)

    def forward(self, img):
        x = img.float() / 255.0
        return self.conv(x), (x * 10).long()


def test_a_uint8_image_input_imports_with_its_casts(tmp: Path) -> None:
    img = torch.randint(0, 256, (2, 3, 6, 6), dtype=torch.uint8)
    path = export(Uint8Images(), (img,), tmp / "u8.onnx", ["img"], ["y", "bins"],
                  {"img": {0: "n"}, "y": {0: "n"}, "bins": {0: "n"}})
    result = roundtrip(path, {"img": img.numpy()})
    assert result.graph.inputs[0].type.dtype == "uint8"
    casts = [n.attrs["dtype"] for n in result.graph.nodes if n.op == "cast"]
    assert casts == ["float32", "int64"], casts


def test_predict_refuses_values_a_uint8_input_cannot_hold(tmp: Path) -> None:
    from dlspec.errors import DlspecError
    from dlspec.predict import _check_arrays

    specs = [("img", "uint8", ("batch", 3))]
    ok = _check_arrays(tmp / "x.npy", specs, [np.array([[0, 128, 255]], dtype=np.int64)])
    assert ok[0].dtype == np.uint8 and ok[0].tolist() == [[0, 128, 255]]
    with pytest.raises(DlspecError) as info:
        _check_arrays(tmp / "x.npy", specs, [np.array([[0, 256, -1]], dtype=np.int64)])
    assert info.value.code == "E639" and "-1 to 256" in info.value.message and "0 to 255" in info.value.message


class MaskLogic(torch.nn.Module):
    """Masks combined the ways people write them: ~, &, | and ^ of bool tensors."""

    def forward(self, x, keep):
        inside = (x > -1.0) & (x < 1.0)
        allowed = keep.unsqueeze(1) & ~(x > 0.5)
        loud = (x < -1.5) | (x > 1.5)
        odd = keep.unsqueeze(1) ^ (x > 0.0)
        return torch.where(inside | allowed, x, 0.0), torch.where(loud, x * 2, x), torch.where(odd, x, -x)


def test_not_and_or_xor_of_masks_import_as_logical_ops(tmp: Path) -> None:
    x = torch.randn(3, 4, 5) * 1.5
    keep = torch.rand(3, 5) > 0.3
    path = export(MaskLogic(), (x, keep), tmp / "mask_logic.onnx", ["x", "keep"], ["a", "b", "c"],
                  {"x": {0: "n"}, "keep": {0: "n"}, "a": {0: "n"}, "b": {0: "n"}, "c": {0: "n"}})
    result = roundtrip(path, {"x": x.numpy(), "keep": keep.numpy()})
    ops = [n.op for n in result.graph.nodes]
    assert result.graph.inputs[1].type.dtype == "bool"
    assert ops.count("logical_not") == 2 and ops.count("logical_or") == 3 and ops.count("logical_and") == 4, ops
