"""The PyTorch backend: every op lowers, every spec builds and runs with the shapes the checker
predicted, parameter counts equal `dlspec summary`'s, and weights round-trip through safetensors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from dlspec import compile_file, compile_source
from dlspec.backends import torch as tb
from dlspec.ir.ops import REGISTRY
from dlspec.source import SourceFile
from dlspec.summary import summarize

from .helpers import ROOT, large_marks, spec_files, spec_path
from .op_cases import CASES, ops_used
from .torch_helpers import expected_shape, random_inputs, symbols

SPECS = spec_files()
BIG = {"vgg11.dls", "resnet18.dls", "mobilenet_v2.dls"}  # large images: one batch size only keeps the suite fast


def _graphs():
    for spec in SPECS:
        prog = compile_file(spec)
        for name, g in prog.models.items():
            yield pytest.param(g, id=f"{spec.name}:{name}", marks=large_marks(spec.name))


def test_every_op_has_a_torch_lowering():
    assert set(REGISTRY) == tb.supported_ops()


def test_op_cases_use_every_op():
    assert ops_used() == set(REGISTRY), sorted(set(REGISTRY) - ops_used())


@pytest.mark.parametrize("case", sorted(CASES))
def test_op_case_runs_with_the_checkers_shapes(case):
    """Each shared op case builds, runs at each of its bindings, and gives every output the shape
    the checker inferred, finite; the module's parameter count is the summary's."""
    c = CASES[case]
    g = c.graph()
    torch.manual_seed(0)
    module = tb.build_module(g).eval()
    assert sum(p.numel() for p in module.parameters()) == summarize(g)["total_params"]
    for env in c.bindings():
        with torch.no_grad():
            y = module(*[torch.from_numpy(a) for a in c.arrays(env)])
        ys = y if isinstance(y, dict) else {g.outputs[0].name: y}
        for out in g.outputs:
            assert tuple(ys[out.name].shape) == expected_shape(g, out.value, env), (case, out.name)
            assert torch.isfinite(ys[out.name]).all(), (case, out.name)


@pytest.mark.parametrize("graph", list(_graphs()))
def test_spec_builds_runs_and_matches_checker(graph):
    torch.manual_seed(0)
    module = tb.build_module(graph).eval()
    n_params = sum(p.numel() for p in module.parameters())
    assert n_params == summarize(graph)["total_params"]
    syms = symbols(graph)
    sizes = [{s: 2 for s in syms}] if Path(graph.source).name in BIG else [
        {s: (2 if s == "batch" else 9) for s in syms},
        {s: (3 if s == "batch" else 13) for s in syms},
    ]
    for env in sizes:
        xs = [torch.from_numpy(a) for a in random_inputs(graph, env)]
        with torch.no_grad():
            y = module(*xs)
        ys = y if isinstance(y, dict) else {graph.outputs[0].name: y}
        for out in graph.outputs:
            assert tuple(ys[out.name].shape) == expected_shape(graph, out.value, env), out.name
            assert torch.isfinite(ys[out.name]).all()


def test_generated_source_is_importable_python(tmp_path):
    g = compile_file(spec_path("resnet18.dls")).models["ResNet18"]
    src = tb.generate(g)
    path = tmp_path / "resnet18_model.py"
    path.write_text(src)
    ns: dict = {}
    exec(compile(path.read_text(), str(path), "exec"), ns)
    m = ns["ResNet18"]()
    assert sum(p.numel() for p in m.parameters()) == 11_689_512
    assert "def forward(self, image: torch.Tensor)" in src
    # one class per spec block, the uses with a downsample path a second class of `Basic`
    assert "class ConvBN(nn.Module):" in src and "class Basic(nn.Module):" in src and "class Basic2(nn.Module):" in src
    assert "self.stem = ConvBN(in_channels=3, out=64, k=7, stride=2, conv_padding=3)" in src
    assert "self.relu = nn.ReLU(inplace=True)" in src  # activations are modules: hooks see them
    # parameter names stay the IR's paths (the canonical layout)
    extra = set(m.state_dict()) - {p.path for p in g.params()}
    assert {p.path for p in g.params()} <= set(m.state_dict()) and all(k.endswith(".num_batches_tracked") for k in extra)
    assert {name for name, _ in m.named_modules()} >= {"layer1.0.conv_bn.conv", "basic_4.downsample.bn", "relu"}
    assert "/" not in src.splitlines()[0]  # the header names the spec relative to its folder


def test_weights_round_trip_safetensors_keyed_by_ir_path(tmp_path):
    g = compile_file(spec_path("resnet18.dls")).models["ResNet18"]
    a = tb.build_module(g).eval()
    path = tmp_path / "w.safetensors"
    tb.save_weights(a, g, path)
    from dlspec.weights import read_header

    header = read_header(path)
    assert header["stem.conv.weight"] == (64, 3, 7, 7)
    assert "layer1.0.conv_bn.bn.running_var" in header
    assert not any(k.endswith("num_batches_tracked") for k in header)
    b = tb.build_module(g).eval()
    tb.load_weights(b, g, path)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(a(x), b(x))


def test_load_weights_reports_every_mismatch(tmp_path):
    src = "model M(h: int = 8) { input x: float32[batch, 4] output x -> dense(h) as fc1 -> dense(2) as fc2 }"
    g8 = compile_source(SourceFile("m.dls", src)).models["M"]
    g5 = compile_source(SourceFile("m.dls", src), {"h": 5}).models["M"]
    path = tmp_path / "w.safetensors"
    tb.save_weights(tb.build_module(g8), g8, path)
    with pytest.raises(Exception) as info:
        tb.load_weights(tb.build_module(g5), g5, path)
    msg = str(info.value)
    assert "fc1.weight" in msg and "fc2.weight" in msg and "[5, 4]" in msg


def test_spec_names_are_escaped_in_generated_code():
    src = '''model Evil {
        input lambda: float32[batch, 3]
        import_ = lambda -> dense(2) as class
        output import_
    }'''
    g = compile_source(SourceFile("e.dls", src.replace("import_", "imp"))).models["Evil"]
    code = tb.generate(g)
    compile(code, "<evil>", "exec")
    assert "def forward(self, lambda_: torch.Tensor)" in code
    m = tb.build_module(g)
    assert m(torch.zeros(2, 3)).shape == (2, 2)


def test_same_padding_with_stride_matches_tensorflow_rule():
    src = "model M { input x: float32[batch, 1, h, w] output x -> conv2d(4, 3, stride=2, padding=same) }"
    g = compile_source(SourceFile("m.dls", src)).models["M"]
    m = tb.build_module(g)
    for h, w in ((7, 8), (9, 4)):
        y = m(torch.zeros(1, 1, h, w))
        assert tuple(y.shape) == (1, 4, -(-h // 2), -(-w // 2))


def test_python_api_builds_the_module_in_process(tmp_path):
    import dlspec

    spec = dlspec.load(spec_path("digits_cnn.dls"))
    module = spec.build("torch")
    assert isinstance(module, torch.nn.Module)
    assert module(torch.zeros(4, 1, 8, 8)).shape == (4, 10)
    assert "class DigitsCNN(nn.Module)" in spec.source("torch")
    tb.save_weights(module, spec.graph(), tmp_path / "w.safetensors")
    again = spec.build("torch", weights=tmp_path / "w.safetensors").eval()
    x = torch.randn(2, 1, 8, 8)
    module.eval()
    with torch.no_grad():
        assert torch.equal(module(x), again(x))
    wider = dlspec.load(spec_path("digits_cnn.dls"), classes=5).build("torch")
    assert wider(x).shape == (2, 5)
    with pytest.raises(dlspec.DlspecError) as info:
        spec.build("torhc")
    assert info.value.code == "E905" and "torch" in info.value.hint


@pytest.mark.parametrize("spec,model", [("specs/digits_resnet.dls", "DigitsResNet"), ("specs/unet.dls", "UNet")])
def test_inplace_ops_give_the_same_outputs_and_gradients(spec, model):
    g = compile_file(ROOT / spec).models[model]
    src = tb.generate(g)
    assert "nn.ReLU(inplace=True)" in src or ".add_(" in src
    torch.manual_seed(0)
    fast = tb.build_module(g, inplace=True)
    plain = tb.build_module(g, inplace=False)
    plain.load_state_dict(fast.state_dict())
    x = torch.randn(4, *[int(d) for d in g.inputs[0].type.shape[1:]])
    ya, yb = fast(x), plain(x)
    torch.testing.assert_close(ya, yb)
    ya.square().sum().backward()
    yb.square().sum().backward()
    for (name, a), (_, b) in zip(fast.named_parameters(), plain.named_parameters()):
        torch.testing.assert_close(a.grad, b.grad, msg=name)


MASKED = '''
model Attn {
    input x: float32[batch, 5, 8]
    input keep: bool[batch, 5]
    input allow: bool[5, 5]
    padded = x -> multihead_attention(2, mask=keep) as pad
    causal = x -> multihead_attention(2, causal=true, mask=allow) as causal
    enc = x -> transformer_encoder(2, ff=16, dropout=0.0, mask=keep) as enc
    output padded, causal, enc
}
'''


def test_attention_masks_hide_what_they_say():
    g = compile_source(SourceFile("attn.dls", MASKED)).models["Attn"]
    torch.manual_seed(0)
    m = tb.build_module(g).eval()
    x = torch.randn(2, 5, 8)
    keep = torch.tensor([[True, True, True, True, False]] * 2)  # the last key is padding
    allow = torch.ones(5, 5, dtype=torch.bool)
    allow[:, 0] = False  # nobody may attend to position 0 ...
    allow[0, 0] = True  # ... except position 0 itself
    x2 = x.clone()
    x2[:, 4] += 10.0  # change the padded / latest position
    with torch.no_grad():
        a, b = m(x, keep, allow), m(x2, keep, allow)
    # key padding: outputs of the other positions ignore the padded key
    torch.testing.assert_close(a["padded"][:, :4], b["padded"][:, :4])
    torch.testing.assert_close(a["enc"][:, :4], b["enc"][:, :4])
    # causal combined with a mask: positions before 4 never see position 4
    torch.testing.assert_close(a["causal"][:, :4], b["causal"][:, :4])
    x3 = x.clone()
    x3[:, 0] += 10.0  # position 0 is hidden from positions 1.. by `allow`
    with torch.no_grad():
        c = m(x3, keep, allow)
    torch.testing.assert_close(a["causal"][:, 1:], c["causal"][:, 1:])
    assert not torch.allclose(a["causal"][:, 0], c["causal"][:, 0])


def _lrn_reference(x: np.ndarray, size: int, alpha: float, beta: float, k: float) -> np.ndarray:
    """The formula written out: the window holds size // 2 channels before and (size - 1) // 2 after."""
    sq = x.astype(np.float64) ** 2
    out = np.empty_like(sq)
    channels = x.shape[1]
    for c in range(channels):
        lo, hi = max(0, c - size // 2), min(channels - 1, c + (size - 1) // 2)
        total = sq[:, lo:hi + 1].sum(axis=1)
        out[:, c] = x[:, c] / (k + alpha / size * total) ** beta
    return out


def test_lrn_matches_the_formula_and_torch_local_response_norm():
    g = compile_source(SourceFile("lrn.dls", """model M { input img: float32[batch, 7, 4, 3], seq: float32[batch, 6, 5]
        output a = img -> lrn(5, alpha=0.3, beta=0.6, k=1.5), b = seq -> lrn(4, alpha=0.5),
               c = img -> lrn(4, beta=1.2), d = seq -> lrn(5) }""")).models["M"]
    module = tb.build_module(g).eval()
    rng = np.random.default_rng(2)
    img = rng.standard_normal((2, 7, 4, 3)).astype(np.float32) * 3
    seq = rng.standard_normal((2, 6, 5)).astype(np.float32) * 3
    with torch.no_grad():
        got = module(torch.from_numpy(img), torch.from_numpy(seq))
    cases = {"a": (img, 5, 0.3, 0.6, 1.5), "b": (seq, 4, 0.5, 0.75, 1.0), "c": (img, 4, 1e-4, 1.2, 1.0),
             "d": (seq, 5, 1e-4, 0.75, 1.0)}
    for name, (x, size, alpha, beta, k) in cases.items():
        want = _lrn_reference(x, size, alpha, beta, k)
        np.testing.assert_allclose(got[name].numpy(), want, rtol=1e-5, atol=1e-6, err_msg=name)
        reference = torch.nn.LocalResponseNorm(size, alpha=alpha, beta=beta, k=k)(torch.from_numpy(x))
        np.testing.assert_allclose(got[name].numpy(), reference.numpy(), rtol=1e-6, atol=1e-7, err_msg=name)
    assert not np.allclose(got["a"].numpy(), img)  # the normalization does change the values


def test_a_time_major_lstm_is_the_batch_first_one_on_transposed_steps():
    """The same weights: time_major=true on [T, N, F] gives the batch-first layer's outputs with the
    steps first, in every backend (PyTorch natively, the others through permutes)."""
    import numpy as np

    from dlspec import compile_source
    from dlspec.backends import get_backend
    from dlspec.source import SourceFile
    from dlspec.verify import fresh_weights

    src = """model A { input x: float32[batch, steps, 5]
        output y = x -> lstm(4, bidirectional=true) as rnn, z = x -> gru(3, output=last) as g }
    model B { input x: float32[steps, batch, 5]
        output y = x -> lstm(4, bidirectional=true, time_major=true) as rnn,
               z = x -> gru(3, output=last, time_major=true) as g }"""
    models = compile_source(SourceFile("tm.dls", src)).models
    a, b = models["A"], models["B"]
    w = fresh_weights(a, seed=3)
    x = np.random.default_rng(0).standard_normal((2, 6, 5)).astype(np.float32)
    want = get_backend("torch").run(a, w, {"x": x})
    assert "batch_first=False" in get_backend("torch").generate(b)
    for backend in ("torch", "onnx", "keras"):
        got = get_backend(backend).run(b, w, {"x": x.transpose(1, 0, 2).copy()})
        np.testing.assert_allclose(got["y"], want["y"].transpose(1, 0, 2), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(got["z"], want["z"], rtol=1e-5, atol=1e-6)
