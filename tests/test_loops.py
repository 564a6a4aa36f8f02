"""`for` loops over tables, `* 0`, layer paths and name templates (docs/language.md, "Loops over
tables, names with indices and dots"): what they build, the names they give, that every backend
computes the same numbers for a model written with them, and that the rewritten ResNet-50 and
MobileNetV2 carry torchvision's parameter names."""

from __future__ import annotations

import pytest

from dlspec import compile_source
from dlspec import verify as vf
from dlspec.errors import DlspecError
from dlspec.source import SourceFile

from .helpers import spec_path

TABLE = """
block Stage(c: int, n: int, s: int) {
    for i in range(n) {
        conv2d(c, 3, stride=s if i == 0 else 1, padding=1) as "conv{i}"
        relu()
    }
}
model M {
    input x: float32[batch, 3, 16, 16]
    h = x
    for (t, c, n, s) in [(1, 4, 1, 1), (6, 8, 2, 2), (6, 12, 0, 2)] {
        h = h -> Stage(c, n, s) as "stage{c}"
    }
    k = 0
    for (i, (a, b)) in enumerate(zip([1, 2], [3, 4]), start=10) {
        k = k + i * a * b
    }
    y = h -> global_avgpool2d() -> dense(k) as head.0.fc
    output y
}
"""


def graph_of(text: str, model: str = "M"):
    return compile_source(SourceFile("loops.dls", text)).models[model]


def layer_paths(graph) -> list[str]:
    return [n.name for n in graph.nodes]


def test_a_table_loop_builds_each_stage_with_its_names():
    g = graph_of(TABLE)
    convs = [n.name for n in g.nodes if n.op == "conv2d"]
    assert convs == ["stage4.conv0", "stage8.conv0", "stage8.conv1"]  # n = 0: no stage12 at all
    strides = [n.attrs["stride"] for n in g.nodes if n.op == "conv2d"]
    assert [tuple(s) if isinstance(s, (list, tuple)) else s for s in strides] in (
        [(1, 1), (2, 2), (1, 1)], [1, 2, 1])
    # names assigned in a loop stay visible after it: k = 10*1*3 + 11*2*4 = 118
    head = next(n for n in g.nodes if n.name == "head.0.fc")
    assert head.attrs["units"] == 118
    assert {p.path for p in g.params()} >= {"stage8.conv1.weight", "head.0.fc.weight", "head.0.fc.bias"}


def test_times_zero_is_no_layer_and_times_one_is_the_layer_once():
    text = """
block B { dense(8) }
model M {
    input x: float32[batch, 8]
    a = x -> B() * 0
    b = a -> B() * 1 as one
    output b
}
"""
    g = graph_of(text)
    assert layer_paths(g) == ["one.0.dense"] or layer_paths(g) == ["one.dense"]
    zero = graph_of(text.replace("a -> B() * 1 as one", "a"))
    assert zero.nodes == [] or all(n.op == "identity" for n in zero.nodes)


def test_every_backend_computes_the_same_numbers_for_a_looped_model():
    result = vf.verify(graph_of(TABLE), ("torch", "tf", "onnx"), tolerance=1e-4, sizes={"batch": 2})
    assert not result.failures, result.failures


@pytest.mark.parametrize("case, code", [
    ("for i in 3 { }", "E133"),
    ("for (a, b) in [(1, 2, 3)] { }", "E133"),
    ("for i in range(1, 2, 0) { }", "E133"),
    ("for i in range(1.5) { }", "E133"),
    ("for i in range(2) { output x }", "E132"),
    ("h = x\n    for i in range(2) { h = h -> dense(4) as fc }", "E104"),
    ("h = x -> dense(4) as \"fc{1.5}\"", "E131"),
    ("h = x -> dense(4) as \"fc{\"", "E131"),
    ("h = x -> dense(4) as \"a.{-1}\"", "E117"),
    ("h = x -> dense(4) as fc -> dense(4) as fc.inner", "E104"),
    ("h = x -> dense(4) as fc.inner -> dense(4) as fc", "E104"),
    ("for (i, v) in enumerate([1], begin=2) { }", "E203"),
])
def test_mistakes_in_loops_and_names_are_located_errors(case, code):
    text = "model M {\n    input x: float32[batch, 8]\n    " + case + "\n    output x\n}\n"
    with pytest.raises(DlspecError) as info:
        compile_source(SourceFile("bad.dls", text))
    codes = [d.code for d in info.value.diagnostics]
    assert code in codes, str(info.value)
    diag = next(d for d in info.value.diagnostics if d.code == code)
    assert diag.span is not None and diag.span.line == 3 + case.count("\n")


def test_a_template_error_points_inside_the_string():
    text = 'model M {\n    input x: float32[batch, 8]\n    h = x -> dense(4) as "fc{i + }"\n    output h\n}\n'
    with pytest.raises(DlspecError) as info:
        compile_source(SourceFile("bad.dls", text))
    d = info.value.first
    assert d.code == "E131" and (d.span.line, d.span.column) == (3, 29)


def _torchvision_resnet50_names() -> list[str]:
    """The parameter and buffer names of torchvision's resnet50 (written from its layout:
    conv1/bn1, layer1..4 of Bottleneck blocks with conv1-3/bn1-3 and downsample.0/.1 on the
    first block of each stage, fc), without num_batches_tracked."""
    names = ["conv1.weight"] + [f"bn1.{p}" for p in ("weight", "bias", "running_mean", "running_var")]
    for stage, blocks in enumerate((3, 4, 6, 3), start=1):
        for b in range(blocks):
            pre = f"layer{stage}.{b}"
            for k in (1, 2, 3):
                names.append(f"{pre}.conv{k}.weight")
                names += [f"{pre}.bn{k}.{p}" for p in ("weight", "bias", "running_mean", "running_var")]
            if b == 0:
                names.append(f"{pre}.downsample.0.weight")
                names += [f"{pre}.downsample.1.{p}" for p in ("weight", "bias", "running_mean", "running_var")]
    return names + ["fc.weight", "fc.bias"]


def test_resnet50_spec_has_torchvisions_names():
    from dlspec import compile_file

    g = compile_file(spec_path("resnet50.dls")).models["ResNet50"]
    assert sorted(p.path for p in g.params()) == sorted(_torchvision_resnet50_names())


def test_mobilenet_v2_spec_has_torchvisions_names():
    from dlspec import compile_file

    g = compile_file(spec_path("mobilenet_v2.dls")).models["MobileNetV2"]
    paths = {p.path for p in g.params()}
    # torchvision: features.0 (conv, bn), features.1 (expansion 1: conv.0.0, conv.0.1, conv.1, conv.2),
    # features.2-17 (conv.0.0/0.1 expand, conv.1.0/1.1 depthwise, conv.2 project, conv.3 bn), features.18, classifier.1
    assert {"features.0.0.weight", "features.0.1.running_var", "features.1.conv.0.0.weight", "features.1.conv.2.bias",
            "features.17.conv.1.0.weight", "features.17.conv.3.weight", "features.18.0.weight",
            "features.18.1.running_mean", "classifier.1.weight", "classifier.1.bias"} <= paths
    assert not any(p.startswith(("features.19", "features.1.conv.3")) for p in paths)
    dw = next(p for p in g.params() if p.path == "features.17.conv.1.0.weight")
    assert [int(d) for d in dw.shape] == [960, 1, 3, 3]
    assert len(paths) == 314 - 52  # torchvision's state dict has 314 entries, 52 of them num_batches_tracked


def test_activation_argument_is_the_layer_then_its_activation():
    g = graph_of("""
model M {
    input x: float32[batch, 3, 8, 8]
    y = x -> conv2d(4, 3, activation=relu) as c1 -> conv2d(4, 3, activation=leaky_relu(0.2))
        -> conv2d(4, 1, activation="gelu") -> conv2d(4, 1, activation=none) -> flatten()
        -> dense(10, activation="linear") as fc
    output y
}
""")
    assert [(n.name, n.op) for n in g.nodes] == [
        ("c1", "conv2d"), ("relu", "relu"), ("conv2d", "conv2d"), ("leaky_relu", "leaky_relu"),
        ("conv2d_1", "conv2d"), ("gelu", "gelu"), ("conv2d_2", "conv2d"), ("flatten", "flatten"), ("fc", "dense")]
    assert next(n for n in g.nodes if n.op == "leaky_relu").attrs["slope"] == 0.2
    assert {"c1.weight", "fc.weight"} <= {p.path for p in g.params()}


@pytest.mark.parametrize("arg, fragment", [
    ('activation="rleu"', "did you mean `relu`"),
    ("activation=dense(3)", "is an activation layer"),
    ("activaton=relu", "did you mean `activation`"),
])
def test_a_wrong_activation_argument_is_a_located_error(arg, fragment):
    text = f"model M {{\n    input x: float32[batch, 8]\n    y = x -> dense(4, {arg})\n    output y\n}}\n"
    with pytest.raises(DlspecError) as info:
        compile_source(SourceFile("bad.dls", text))
    d = info.value.first
    assert d.code in ("E210", "E203") and d.span.line == 3
    assert fragment in d.message + " " + (d.hint or "")
