"""`dlspec import` writes structure a net repeats as `block`s: a PyTorch ResNet exported to ONNX
and a Caffe ResNet written here import with one residual block used for every stage, parameter
paths kept from the source names (PyTorch's state-dict keys; Caffe's `res2a_branch2a` becomes
`res2a.branch2a`), and the same outputs as onnxruntime and OpenCV; a net without repetition
imports as the flat spec it always did."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from dlspec.backends.torch import build_module
from dlspec.importers.onnx import import_model
from dlspec.importers.spec_writer import convert, write_spec

TOL = 1e-5


def rel_err(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.abs(got - want).max() / max(float(np.abs(want).max()), 1e-12))


def blocks_used(text: str) -> dict[str, int]:
    """Each block the spec defines → how many times the model calls it."""
    model = text[text.index("\nmodel "):]
    return {name: len(re.findall(rf"\b{name}\(", model)) for name in re.findall(r"^block (\w+)", text, re.M)}


def flat_text(onnx_path: Path) -> str:
    """The spec as written before blocks: every layer in the model, in one flat body."""
    spec = onnx_path.with_suffix(".dls")
    return write_spec(import_model(onnx_path), spec.with_suffix(".safetensors").name, spec.name, blocks=False)[0]


# ---- ONNX: a torchvision-style ResNet ------------------------------------------------------------

class Bottleneck(torch.nn.Module):
    def __init__(self, cin: int, width: int, stride: int) -> None:
        super().__init__()
        out = width * 4
        self.conv1 = torch.nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = torch.nn.BatchNorm2d(width)
        self.conv2 = torch.nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = torch.nn.BatchNorm2d(width)
        self.conv3 = torch.nn.Conv2d(width, out, 1, bias=False)
        self.bn3 = torch.nn.BatchNorm2d(out)
        self.relu = torch.nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or cin != out:
            self.downsample = torch.nn.Sequential(torch.nn.Conv2d(cin, out, 1, stride=stride, bias=False),
                                                  torch.nn.BatchNorm2d(out))

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class ResNet(torch.nn.Module):
    """torchvision's ResNet layout at 2 stages × 2 bottlenecks."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 16, 7, stride=2, padding=3, bias=False)
        self.bn1 = torch.nn.BatchNorm2d(16)
        self.relu = torch.nn.ReLU(inplace=True)
        self.maxpool = torch.nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = torch.nn.Sequential(Bottleneck(16, 8, 1), Bottleneck(32, 8, 1))
        self.layer2 = torch.nn.Sequential(Bottleneck(32, 16, 2), Bottleneck(64, 16, 1))
        self.avgpool = torch.nn.AdaptiveAvgPool2d(1)
        self.fc = torch.nn.Linear(64, 10)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer2(self.layer1(x))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def _randomize_bn(module: torch.nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)


@pytest.fixture(scope="module")
def resnet(tmp_path_factory) -> tuple[torch.nn.Module, Path]:
    torch.manual_seed(0)
    module = ResNet().eval()
    _randomize_bn(module)
    path = tmp_path_factory.mktemp("blocks") / "resnet.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (torch.randn(1, 3, 32, 32),), str(path), dynamo=False, input_names=["image"],
                          output_names=["logits"], dynamic_axes={"image": {0: "batch"}}, opset_version=17,
                          do_constant_folding=False)
    return module, path


def test_onnx_resnet_imports_with_one_block_and_the_state_dict_names(resnet) -> None:
    module, path = resnet
    result = convert(path, path.with_suffix(".dls"))
    text = result.text
    (block, used), = blocks_used(text).items()
    assert used == 4  # layer1.0, layer1.1, layer2.0, layer2.1: the projection is a parameter of the block
    assert re.search(rf"{block}\(8, with_downsample=true\) as layer1\.0\b", text)
    assert re.search(rf"{block}\(16, stride=2, with_downsample=true\) as layer2\.0\b", text)
    assert "conv2d(channels * 4, 1, bias=false) as conv3" in text
    want = {k for k in module.state_dict() if not k.endswith("num_batches_tracked")}
    assert {p.path for p in result.graph.params()} == want == set(result.weights)
    assert "layer2.0.downsample.0.weight" in want

    # the imported spec computes what onnxruntime computes on the original file
    x = np.random.default_rng(1).standard_normal((3, 3, 32, 32), dtype=np.float32)
    (ref,) = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"image": x})
    spec_module = build_module(result.graph).eval()
    spec_module.load_state_dict({k: torch.from_numpy(v) for k, v in result.weights.items()}, strict=True)
    with torch.no_grad():
        got = spec_module(torch.from_numpy(x)).numpy()
        # and PyTorch's own state dict loads into it by name
        spec_module.load_state_dict({k: v for k, v in module.state_dict().items() if k in want}, strict=True)
        again = spec_module(torch.from_numpy(x)).numpy()
    assert got.shape == ref.shape == (3, 10)
    assert rel_err(got, ref) <= TOL and rel_err(again, ref) <= TOL

    # shorter than the flat spec of the same import, whose names are flattened (layer1_0_conv1)
    flat = flat_text(path)
    assert "block " not in flat and "as layer1_0_conv1" in flat
    assert len(text.splitlines()) <= 0.75 * len(flat.splitlines())


def test_onnx_resnet_with_folded_batchnorm_keeps_the_convolution_names(resnet, tmp_path) -> None:
    module, _ = resnet
    path = tmp_path / "folded.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (torch.randn(1, 3, 32, 32),), str(path), dynamo=False, input_names=["image"],
                          output_names=["logits"], opset_version=17, do_constant_folding=True)
    result = convert(path, tmp_path / "folded.dls")
    assert max(blocks_used(result.text).values()) == 4
    # folded weights have ONNX names; the layers are named from the nodes' module scopes
    assert {"layer1.0.conv1.weight", "layer1.0.conv1.bias", "layer2.0.downsample.0.weight"} <= set(result.weights)
    x = np.random.default_rng(2).standard_normal((1, 3, 32, 32), dtype=np.float32)
    (ref,) = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"image": x})
    spec_module = build_module(result.graph).eval()
    spec_module.load_state_dict({k: torch.from_numpy(v) for k, v in result.weights.items()}, strict=True)
    with torch.no_grad():
        assert rel_err(spec_module(torch.from_numpy(x)).numpy(), ref) <= TOL


class Encoder(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        layer = torch.nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True)
        self.enc = torch.nn.TransformerEncoder(layer, 3, enable_nested_tensor=False)
        self.head = torch.nn.Linear(16, 3)

    def forward(self, x):
        return self.head(self.enc(x))


def test_transformer_layers_are_one_block_across_their_two_residual_halves(tmp_path) -> None:
    torch.manual_seed(1)
    path = tmp_path / "encoder.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Encoder().eval(), (torch.randn(2, 5, 16),), str(path), dynamo=False, input_names=["x"],
                          output_names=["y"], dynamic_axes={"x": {0: "b"}}, opset_version=17)
    result = convert(path, tmp_path / "encoder.dls")
    # attention + norm1 and feed-forward + norm2 lie in one module scope: one block, repeated
    assert "-> Residual() * 3 as enc.layers ->" in result.text
    assert {"enc.layers.2.norm2.weight", "enc.layers.0.linear1.weight", "enc.layers.1.self_attn_out_proj.bias",
            "head.weight"} <= set(result.weights)
    x = np.random.default_rng(5).standard_normal((4, 5, 16), dtype=np.float32)
    (ref,) = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    spec_module = build_module(result.graph).eval()
    spec_module.load_state_dict({k: torch.from_numpy(v) for k, v in result.weights.items()}, strict=True)
    with torch.no_grad():
        assert rel_err(spec_module(torch.from_numpy(x)).numpy(), ref) <= TOL
    assert len(result.text.splitlines()) <= 0.5 * len(flat_text(path).splitlines())


# ---- ONNX without source names, and without repetition ------------------------------------------------

def _residual_graph(path: Path, repeats: int) -> Path:
    """conv → `repeats` × (conv → relu → conv, + x, relu) → global average pool, with node names
    that carry no module structure."""
    rng = np.random.default_rng(repeats)
    inits = [numpy_helper.from_array((rng.standard_normal((8, 3, 3, 3)) * 0.3).astype(np.float32), "w0")]
    nodes = [helper.make_node("Conv", ["x", "w0"], ["h0"], name="n0", kernel_shape=[3, 3], pads=[1, 1, 1, 1])]
    h = "h0"
    for r in range(repeats):
        for j in (1, 2):
            inits.append(numpy_helper.from_array((rng.standard_normal((8, 8, 3, 3)) * 0.2).astype(np.float32),
                                                 f"w{r}{j}"))
        nodes += [
            helper.make_node("Conv", [h, f"w{r}1"], [f"a{r}"], name=f"n{4 * r + 1}", kernel_shape=[3, 3],
                             pads=[1, 1, 1, 1]),
            helper.make_node("Relu", [f"a{r}"], [f"b{r}"], name=f"n{4 * r + 2}"),
            helper.make_node("Conv", [f"b{r}", f"w{r}2"], [f"c{r}"], name=f"n{4 * r + 3}", kernel_shape=[3, 3],
                             pads=[1, 1, 1, 1]),
            helper.make_node("Add", [f"c{r}", h], [f"s{r}"], name=f"n{4 * r + 4}"),
            helper.make_node("Relu", [f"s{r}"], [f"r{r}"], name=f"relu{r}"),
        ]
        h = f"r{r}"
    nodes.append(helper.make_node("GlobalAveragePool", [h], ["y"], name="pool"))
    graph = helper.make_graph(nodes, "residual", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 8, 1, 1])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="hand")
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def test_unstructured_names_give_numbered_instances_with_op_named_layers(tmp_path) -> None:
    path = _residual_graph(tmp_path / "three.onnx", 3)
    result = convert(path, tmp_path / "three.dls")
    # three instances alike, numbered from 0: a repetition
    assert "-> Residual() * 3 as residual\n" in result.text and blocks_used(result.text) == {"Residual": 1}
    assert "as conv2d_1" in result.text
    assert {p.path for p in result.graph.params()} == set(result.weights)
    assert "residual.2.conv2d_1.weight" in result.weights
    x = np.random.default_rng(3).standard_normal((2, 3, 8, 8), dtype=np.float32)
    (ref,) = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    spec_module = build_module(result.graph).eval()
    spec_module.load_state_dict({k: torch.from_numpy(v) for k, v in result.weights.items()}, strict=True)
    with torch.no_grad():
        assert rel_err(spec_module(torch.from_numpy(x)).numpy(), ref) <= TOL


#: what `dlspec import` wrote for the one-block graph before blocks existed
FLAT_ONE_BLOCK = """\
model One {
    input x: float32[n, 3, 8, 8]
    h0 = x -> conv2d(8, 3, padding=1, bias=false) as n0
    c0 = h0 -> conv2d(8, 3, padding=1, bias=false) as n1 -> relu()
            -> conv2d(8, 3, padding=1, bias=false) as n3
    y = add(c0, h0) -> relu() -> global_avgpool2d(keepdims=true)
    output y
}
"""


def test_a_net_without_repetition_imports_flat_as_before(tmp_path) -> None:
    path = _residual_graph(tmp_path / "one.onnx", 1)
    result = convert(path, tmp_path / "one.dls")
    assert result.text == flat_text(path)
    assert result.text.split("\n\n", 1)[1] == FLAT_ONE_BLOCK
    assert set(result.weights) == {"n0.weight", "n1.weight", "n3.weight"}


# ---- Caffe: a ResNet written here ------------------------------------------------------------------

def _conv(name: str, bottom: str, out: int, k: int, stride: int = 1, relu: bool = True) -> str:
    """Convolution → BatchNorm → Scale (→ ReLU), Caffe's ResNet pattern, names after its layer."""
    bn, scale = (name.replace("res", "bn", 1), name.replace("res", "scale", 1)) if name.startswith("res") else (
        f"bn_{name}", f"scale_{name}")
    text = (
        f'layer {{ name: "{name}" type: "Convolution" bottom: "{bottom}" top: "{name}" convolution_param {{ '
        f"num_output: {out} kernel_size: {k} pad: {k // 2} stride: {stride} bias_term: false }} }}\n"
        f'layer {{ name: "{bn}" type: "BatchNorm" bottom: "{name}" top: "{name}" '
        f"batch_norm_param {{ use_global_stats: true }} }}\n"
        f'layer {{ name: "{scale}" type: "Scale" bottom: "{name}" top: "{name}" scale_param {{ bias_term: true }} }}\n'
    )
    if relu:
        text += f'layer {{ name: "{name}_relu" type: "ReLU" bottom: "{name}" top: "{name}" }}\n'
    return text


def caffe_resnet(stages: int = 2, blocks: int = 3) -> str:
    """Caffe's ResNet naming (res2a_branch2a, bn2a_branch2a, scale2a_branch2a, res2a_branch1, res2a)
    with basic blocks: `stages` stages of `blocks` blocks, a projection at each stage's first."""
    text = 'name: "TinyResNet"\nlayer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 ' \
           'dim: 16 dim: 16 } } }\n' + _conv("conv1", "data", 8, 3)
    bottom, width = "conv1", 8
    for s in range(stages):
        for b in range(blocks):
            unit = f"res{s + 2}{'abcdefgh'[b]}"
            stride = 2 if b == 0 and s > 0 else 1
            out = 8 * 2 ** s
            if b == 0 and out != width or stride != 1:
                text += _conv(f"{unit}_branch1", bottom, out, 1, stride, relu=False)
                skip = f"{unit}_branch1"
            else:
                skip = bottom
            text += _conv(f"{unit}_branch2a", bottom, out, 3, stride) + _conv(f"{unit}_branch2b", f"{unit}_branch2a",
                                                                             out, 3, relu=False)
            text += (f'layer {{ name: "{unit}" type: "Eltwise" bottom: "{skip}" bottom: "{unit}_branch2b" top: "{unit}" '
                     "eltwise_param { operation: SUM } }\n"
                     f'layer {{ name: "{unit}_relu" type: "ReLU" bottom: "{unit}" top: "{unit}" }}\n')
            bottom, width = unit, out
    text += (f'layer {{ name: "pool5" type: "Pooling" bottom: "{bottom}" top: "pool5" pooling_param {{ pool: AVE '
             "global_pooling: true } }\n"
             'layer { name: "fc4" type: "InnerProduct" bottom: "pool5" top: "fc4" param { lr_mult: 1 } '
             "param { lr_mult: 2 } inner_product_param { num_output: 4 } }\n")
    return text.replace('name: "res2a_branch2a" type: "Convolution"',
                        'name: "res2a_branch2a" type: "Convolution" param { lr_mult: 0.5 }')


def test_caffe_resnet_imports_with_blocks_and_equals_opencv(tmp_path) -> None:
    from dlspec.backends import get_backend
    from dlspec.caffe.importer import convert as convert_caffe
    from dlspec.caffe.importer import import_net

    from .test_caffe import opencv_forward, random_caffemodel, rel

    proto = tmp_path / "tiny_resnet.prototxt"
    proto.write_text(caffe_resnet(stages=3))
    model = tmp_path / "tiny_resnet.caffemodel"
    random_caffemodel(proto, model)
    result, ci = convert_caffe(proto, tmp_path / "tiny_resnet.dls", model)
    text = result.text
    (block, used), = blocks_used(text).items()
    assert used == 9
    assert re.search(rf"{block}\(16, stride=2, with_branch1=true\) as res3a\b", text)
    # the instance is the unit's name; the layers inside it keep theirs without the unit's part
    assert "as branch2a" in text and "as bn_branch2a" in text and "as scale_branch2b" in text
    paths = {p.path for p in result.graph.params()}
    assert paths == set(result.weights)
    assert {"res2a.branch2a.weight", "res3a.branch1.weight", "res3c.bn_branch2b.running_var", "conv1.weight",
            "fc4.weight"} <= paths
    assert ci.multipliers["res2a.branch2a"] == [(0.5, 1.0)] and ci.multipliers["fc4"] == [(1.0, 1.0), (2.0, 1.0)]

    x = np.random.default_rng(4).normal(size=(2, 3, 16, 16)).astype(np.float32)
    (ref,) = opencv_forward(proto, model, x, ["fc4"])
    g = result.graph
    got = get_backend("torch").run(g, result.weights, {g.inputs[0].name: x})[result.output_names["fc4"]]
    assert got.shape == ref.shape == (2, 4)
    assert np.abs(ref).max() > 0.1 and rel(got, ref) <= 1e-4

    # the flat spec of the same net is more than twice as long
    flat = write_spec(import_net(proto, model).imported, "x.safetensors", "x.dls", blocks=False)[0]
    assert "block " not in flat and "as res2a_branch2a" in flat
    assert len(text.splitlines()) <= 0.5 * len(flat.splitlines())


def test_caffe_googlenet_imports_its_nine_inception_modules_as_one_block(tmp_path) -> None:
    from dlspec.caffe.importer import convert as convert_caffe
    from dlspec.caffe.importer import import_net

    proto = Path(__file__).parent / "fixtures" / "caffe" / "googlenet_deploy.prototxt"
    result, _ = convert_caffe(proto, tmp_path / "googlenet.dls")
    assert blocks_used(result.text) == {"Inception": 9}
    assert "Inception(64, 96, 128, 16, 32, pool_proj_channels=32) as inception_3a" in result.text
    assert {"inception_3a.1x1.weight", "inception_5b.pool_proj.bias"} <= set(result.weights)
    flat = write_spec(import_net(proto).imported, "x.safetensors", "x.dls", blocks=False)[0]
    assert len(result.text.splitlines()) <= 0.5 * len(flat.splitlines())


def test_a_caffe_net_without_repetition_stays_flat(tmp_path) -> None:
    from dlspec.caffe.importer import convert as convert_caffe
    from dlspec.caffe.importer import import_net

    proto = Path(__file__).parent / "fixtures" / "caffe" / "resblock.prototxt"
    result, _ = convert_caffe(proto, tmp_path / "resblock.dls")
    flat = write_spec(import_net(proto).imported, "resblock.safetensors", "resblock.dls", blocks=False)[0]
    assert result.text.split("\n", 1)[1] == flat.split("\n", 1)[1]  # the first line says which importer
    assert "block " not in result.text and "as res_branch2a" in result.text


def test_blocks_that_would_not_shorten_the_spec_are_not_written(tmp_path) -> None:
    from dlspec.caffe.importer import convert as convert_caffe
    from dlspec.caffe.importer import import_net
    from dlspec.importers.blocks import find_blocks

    # cifar10_full's two within-channel LRNs decompose into the same five layers: a repetition,
    # but a block of it and its two calls take more lines than the layers themselves
    proto = Path(__file__).parent / "fixtures" / "caffe" / "cifar10_full.prototxt"
    assert find_blocks(import_net(proto).imported) is not None
    result, _ = convert_caffe(proto, tmp_path / "cifar10_full.dls")
    flat = write_spec(import_net(proto).imported, "cifar10_full.safetensors", "cifar10_full.dls", blocks=False)[0]
    assert "block " not in result.text
    assert result.text.split("\n", 1)[1] == flat.split("\n", 1)[1]
