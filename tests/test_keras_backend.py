"""The Keras backend: every op lowers and computes what PyTorch computes from the same canonical
weights (every attribute that changes the lowering has a case), weights convert both ways, one
SGD step moves both frameworks' weights alike, layouts, and the generated source."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from dlspec import compile_file, compile_source  # noqa: E402
from dlspec.backends import keras as kb  # noqa: E402
from dlspec.backends import torch as tb  # noqa: E402
from dlspec.ir.ops import REGISTRY  # noqa: E402
from dlspec.source import SourceFile  # noqa: E402

from .helpers import ROOT, spec_path  # noqa: E402
from .torch_helpers import random_inputs, symbols  # noqa: E402

TOL = 1e-4


def _graph(src: str, name: str = "M"):
    return compile_source(SourceFile(f"{name}.dls", src)).models[name]


def _torch_reference(graph, env, seed=0):
    torch.manual_seed(seed)
    module = tb.build_module(graph, inplace=False).eval()
    weights = tb.canonical_state(module, graph)
    xs = random_inputs(graph, env, seed=seed)
    with torch.no_grad():
        y = module(*[torch.from_numpy(a) for a in xs])
    ys = y if isinstance(y, dict) else {graph.outputs[0].name: y}
    return weights, xs, {k: v.numpy() for k, v in ys.items()}


def _keras_outputs(model, graph, xs):
    y = model(xs if len(xs) > 1 else xs[0], training=False)
    ys = y if isinstance(y, dict) else {graph.outputs[0].name: y}
    return {k: np.asarray(v) for k, v in ys.items()}


def assert_parity(graph, env):
    weights, xs, expected = _torch_reference(graph, env)
    model = kb.build_model(graph)
    kb.set_weights(model, graph, weights)
    got = _keras_outputs(model, graph, xs)
    for name, want in expected.items():
        assert got[name].shape == want.shape, name
        scale = max(float(np.abs(want).max()), 1.0)
        assert float(np.abs(got[name] - want).max()) <= TOL * scale, name
    return model, weights


# One small model per lowering decision; together they use every op of the catalogue.
CASES = {
    "conv_padding": """model M { input x: float32[batch, 3, h, w]
        a = x -> conv2d(4, 3, padding=1) as explicit -> relu()
        b = x -> conv2d(4, (3, 2), stride=2, padding=same) as same_strided -> leaky_relu(0.2)
        c = x -> conv2d(4, 3, stride=2, dilation=2, padding=2) as strided_dilated
        d = x -> conv2d(6, 3, groups=3, padding=same, bias=false) as depthwise -> conv2d(4, 1, groups=2) as grouped
        output a, b, c, d }""",
    "conv1d_3d": """model M { input x: float32[batch, 4, 10], v: float32[batch, 2, 4, 5, 6]
        a = x -> conv1d(6, 3, stride=2, padding=1) as c1 -> conv1d(6, 3, groups=6) as dw1 -> elu(0.5)
            -> batchnorm1d() as bn -> maxpool1d(2) -> avgpool1d(2, stride=1, padding=1)
        b = v -> conv3d(3, 2, padding=same) as c3 -> selu()
        output a, b }""",
    "transposed": """model M { input x: float32[batch, 3, 5, 4], s: float32[batch, 2, 7]
        a = x -> conv_transpose2d(4, 3, stride=2, padding=1, output_padding=1) as t1 -> silu()
        b = x -> conv_transpose2d(2, (2, 3), stride=(2, 1), bias=false) as t2 -> sigmoid()
        c = s -> conv_transpose1d(3, 4, stride=3, padding=2) as t3 -> tanh()
        output a, b, c }""",
    "pooling": """model M { input x: float32[batch, 3, 11, 10]
        a = x -> maxpool2d(3, stride=2, padding=1) -> flatten()
        b = x -> avgpool2d(3, stride=2, padding=1, ceil_mode=true)
        c = x -> maxpool2d(2, ceil_mode=true) -> global_maxpool2d()
        d = x -> adaptive_avgpool2d((3, 4)) -> adaptive_maxpool2d(2) -> global_avgpool2d(keepdims=true)
        output a, b, c, d }""",
    "pooling1d": """model M { input x: float32[batch, 3, 11]
        a = x -> adaptive_avgpool1d(4) -> hardtanh(-0.5, 0.5)
        b = x -> adaptive_maxpool1d(5) -> global_avgpool1d()
        c = x -> global_maxpool1d()
        output a, b, c }""",
    "upsample": """model M { input x: float32[batch, 2, 3, 4], s: float32[batch, 2, 5]
        a = x -> upsample(2)
        b = x -> upsample((2, 3), mode=bilinear)
        c = x -> upsample(size=(5, 7), mode=bilinear, align_corners=true)
        d = x -> upsample(size=(7, 5))
        e = s -> upsample(3, mode=linear)
        output a, b, c, d, e }""",
    "tensor_ops": """model M { input x: float32[batch, 4, 6, 6], t: float32[batch, 5, 6]
        y = x -> conv2d(4, 1) as proj
        l, r = y -> split(2)
        u, v, w = t -> split((1, 2, 3), axis=2)
        m = concat(l, r, y, axis=1) -> softmax(axis=1)
        p = y -> pad((1, 2, 0, 1), mode=reflect) -> pad(1, mode=replicate) -> pad((2, 0), value=0.5)
        q = y -> permute((2, 0, 3, 1)) -> reshape((6, -1)) -> flatten(start=0, end=1)
        k = t -> unsqueeze(1) -> squeeze(1) -> unsqueeze(0) -> squeeze(0) -> log_softmax(axis=1)
        z = matmul(t, permute(t, (0, 2, 1))) -> gelu(approximate=tanh)
        s = y -> flatten(start=2) -> identity()
        e = div(add(y, scalar=1.0), sub(mul(y, y), scalar=-2.0)) -> gelu()
        b = div(l, r) -> dropout(0.3)
        output m, p, q, k, z, s, e, u, v, w, b }""",
    "norms": """model M { input x: float32[batch, 6, 5, 5], f: float32[batch, 7], s: float32[batch, 6, 7]
        a = x -> groupnorm(3) as gn -> batchnorm2d(momentum=0.3, eps=1e-3) as bn
        b = f -> batchnorm1d(affine=false) as bn1 -> layernorm(eps=1e-6) as ln -> dense(3, bias=false) as fc
        c = x -> lrn(5, alpha=0.3, beta=0.6, k=1.5) -> conv2d(4, 1) as after_lrn
        d = s -> lrn(4, alpha=0.5) -> flatten()
        e = x -> lrn(4, beta=1.2)
        g = s -> lrn(5, alpha=0.2, k=2.0)
        output a, b, c, d, e, g }""",
    "recurrent": """model M { input x: float32[batch, seq, 3], h0: float32[4, batch, 5]
        a, hn = x -> rnn(5, layers=2, bidirectional=true, nonlinearity=relu, return_state=true, h0=h0) as r
        b = x -> gru(4, bidirectional=true, output=last) as g
        c, ch, cc = x -> lstm(6, layers=2, return_state=true, bias=false) as l
        d, dh = x -> gru(5, layers=2, output=last, return_state=true) as g2
        output a, hn, b, c, ch, cc, d, dh }""",
    "lstm_state": """model M { input x: int64[batch, seq], h0: float32[2, batch, 4], c0: float32[2, batch, 4]
        e = x -> embedding(9, 3, padding_idx=0) as emb
        y = e -> lstm(4, bidirectional=true, h0=h0, c0=c0) as l
        output y }""",
    "attention": """model M { input x: float32[batch, 5, 8], kv: float32[batch, 4, 8], keep: bool[batch, 4],
                               allow: float32[5, 5], each: bool[batch, 5, 4]
        a = x -> multihead_attention(2, key=kv, value=kv, mask=keep) as pad
        b = x -> multihead_attention(4, causal=true, mask=allow, bias=false) as causal
        c = x -> multihead_attention(2, key=kv, value=kv, mask=each) as batched
        d = x -> transformer_encoder(2, ff=16, dropout=0.0) as enc
        e = x -> transformer_encoder(4, ff=12, activation=gelu, norm_first=true, mask=allow) as pre
        output a, b, c, d, e }""",
}


def test_every_op_has_a_keras_lowering_and_a_parity_case():
    assert kb.supported_ops() == set(REGISTRY)
    used = {n.op for src in CASES.values() for n in _graph(src).nodes}
    assert used == set(REGISTRY), sorted(set(REGISTRY) - used)


@pytest.mark.parametrize("case", sorted(CASES))
def test_op_parity_with_torch(case):
    src = CASES[case]
    g = _graph(src)
    env = {s: (2 if s == "batch" else 7) for s in symbols(g)}
    if case == "conv_padding":
        for h, w in ((9, 8), (6, 7)):
            assert_parity(g, {"batch": 2, "h": h, "w": w})
        return
    if case == "attention":
        env = {"batch": 2}
    assert_parity(g, env)


def test_weights_convert_both_ways_exactly():
    g = _graph(CASES["attention"])
    model, weights = assert_parity(g, {"batch": 2})
    back = kb.canonical_weights(model, g)
    assert set(back) == set(weights)
    for k, v in weights.items():
        np.testing.assert_array_equal(back[k], v, err_msg=k)


def test_lstm_bias_comes_back_summed():
    g = _graph(CASES["lstm_state"])
    model, weights = assert_parity(g, {"batch": 2, "seq": 6})
    back = kb.canonical_weights(model, g)
    np.testing.assert_allclose(back["l.bias_ih_l0"], weights["l.bias_ih_l0"] + weights["l.bias_hh_l0"], rtol=1e-6)
    assert not back["l.bias_hh_l0"].any()
    again = kb.build_model(g)
    kb.set_weights(again, g, back)
    xs = random_inputs(g, {"batch": 2, "seq": 6}, seed=3)
    np.testing.assert_allclose(np.asarray(again(xs)), np.asarray(model(xs)), atol=1e-6)


def test_weights_load_from_canonical_safetensors(tmp_path):
    g = compile_file(spec_path("digits_cnn.dls")).models["DigitsCNN"]
    torch.manual_seed(1)
    module = tb.build_module(g).eval()
    path = tmp_path / "w.safetensors"
    tb.save_weights(module, g, path)
    model = kb.build_model(g)
    kb.load_weights(model, g, path)
    x = np.random.default_rng(0).standard_normal((3, 1, 8, 8)).astype("float32")
    with torch.no_grad():
        want = module(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(np.asarray(model(x)), want, atol=1e-5)
    kb.save_weights(model, g, tmp_path / "k.safetensors")
    again = tb.build_module(g).eval()
    tb.load_weights(again, g, tmp_path / "k.safetensors")
    with torch.no_grad():
        np.testing.assert_allclose(again(torch.from_numpy(x)).numpy(), want, atol=1e-6)


def test_weights_that_do_not_fit_are_reported():
    g = _graph("model M { input x: float32[batch, 4] output x -> dense(3) as fc }")
    model = kb.build_model(g)
    with pytest.raises(kb.DlspecError) as info:
        kb.set_weights(model, g, {"fc.weight": np.zeros((4, 3), "float32")})
    assert info.value.code == "E764"
    assert "missing `fc.bias`" in str(info.value) and "[4, 3]" in str(info.value)


def _sgd_step_torch(graph, weights, xs, target, lr):
    module = tb.build_module(graph, inplace=False).train()
    module.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in weights.items()}, strict=False)
    opt = torch.optim.SGD(module.parameters(), lr=lr)
    y = module(*[torch.from_numpy(a) for a in xs])
    loss = torch.nn.functional.mse_loss(y, torch.from_numpy(target))
    opt.zero_grad()
    loss.backward()
    opt.step()
    return tb.canonical_state(module, graph), loss.item()


def _sgd_step_keras(graph, weights, xs, target, lr):
    import tensorflow as tf

    model = kb.build_model(graph)
    kb.set_weights(model, graph, weights)
    opt = keras.optimizers.SGD(learning_rate=lr)
    with tf.GradientTape() as tape:
        y = model(xs if len(xs) > 1 else xs[0], training=True)
        loss = tf.reduce_mean(tf.square(y - target))
    grads = tape.gradient(loss, model.trainable_variables)
    opt.apply_gradients(zip(grads, model.trainable_variables))
    return kb.canonical_weights(model, graph), float(loss)


def _values_per_channel(graph, node_name, env):
    from dlspec.ir.dims import subs

    shape = [int(subs(d, env)) for d in graph.values[graph.node(node_name).inputs[0]].shape]
    return int(np.prod(shape)) // shape[1]


def _without_dropout(node):
    if node.op == "dropout":
        return node.model_copy(update={"attrs": {**node.attrs, "p": 0.0}})
    if "dropout" in node.attrs:
        return node.model_copy(update={"attrs": {**node.attrs, "dropout": 0.0}})
    return node


@pytest.mark.parametrize("spec,model,env", [
    ("specs/digits_resnet.dls", "DigitsResNet", {"batch": 4}),  # convolutions with batch norm
    ("specs/sunspots_gru.dls", "SunspotsGRU", {"batch": 4}),
    ("specs/iris_mlp.dls", "IrisMLP", {"batch": 4}),
])
def test_one_sgd_step_moves_weights_alike(spec, model, env):
    g = compile_file(ROOT / spec).models[model]
    g = g.model_copy(update={"nodes": [_without_dropout(n) for n in g.nodes]})  # random draws differ
    weights, xs, ys = _torch_reference(g, env)
    target = np.random.default_rng(1).standard_normal(next(iter(ys.values())).shape).astype("float32")
    after_torch, loss_t = _sgd_step_torch(g, weights, xs, target, lr=0.1)
    after_keras, loss_k = _sgd_step_keras(g, weights, xs, target, lr=0.1)
    assert abs(loss_t - loss_k) <= TOL * max(1.0, abs(loss_t))
    moved = 0
    for k, before in weights.items():
        if k.endswith("running_var"):  # Keras updates it with the biased batch variance: (n - 1) / n of torch's
            n = _values_per_channel(g, k.rsplit(".", 1)[0], env)
            np.testing.assert_allclose(after_keras[k] - 0.9 * before, (after_torch[k] - 0.9 * before) * (n - 1) / n,
                                       atol=TOL, rtol=TOL, err_msg=k)
            continue
        np.testing.assert_allclose(after_keras[k], after_torch[k], atol=TOL, rtol=TOL, err_msg=k)
        moved += not np.allclose(after_torch[k], before)
    assert moved >= len(weights) // 2


def test_layouts_at_the_model_boundary():
    g = _graph("""model M { input x: float32[batch, 3, 6, 5], f: float32[batch, 4]
        y = x -> conv2d(2, 3, padding=same) as conv
        output y, z = f -> dense(2) as fc }""")
    weights, xs, want = _torch_reference(g, {"batch": 2})
    nhwc = kb.build_model(g, layout="nhwc")
    kb.set_weights(nhwc, g, weights)
    assert tuple(nhwc.inputs[0].shape) == (None, 6, 5, 3) and tuple(nhwc.inputs[1].shape) == (None, 4)
    got = nhwc([xs[0].transpose(0, 2, 3, 1), xs[1]])
    np.testing.assert_allclose(np.asarray(got["y"]).transpose(0, 3, 1, 2), want["y"], atol=1e-5)
    np.testing.assert_allclose(np.asarray(got["z"]), want["z"], atol=1e-5)
    src = kb.generate(g, layout="nhwc")
    assert "keras.Input(shape=(6, 5, 3), name='x')" in src and "(channels-last)" in src


def test_flatten_after_conv_flattens_in_nchw_order():
    g = _graph("model M { input x: float32[batch, 2, 3, 3] output x -> conv2d(4, 1) as c -> flatten() -> dense(3) as fc }")
    assert_parity(g, {"batch": 2})
    src = kb.generate(g)
    conv, to_nchw, flat = (src.index(s) for s in ("layers.Conv2D(", "name='c.to_nchw'", "layers.Flatten("))
    assert conv < to_nchw < flat


@pytest.mark.parametrize("case", ["pooling", "conv_padding", "recurrent", "attention"])
def test_generated_source_is_standalone_keras_with_the_same_numbers(tmp_path, case):
    g = _graph(CASES[case])
    src = kb.generate(g)
    assert "import dlspec" not in src and "from dlspec" not in src
    if case == "pooling":
        assert "class CeilModePool(keras.layers.Layer)" in src and "class AdaptivePool(keras.layers.Layer)" in src
        assert "layers.MaxPooling2D(pool_size=(3, 3), strides=(2, 2), padding='valid'" in src
    path = tmp_path / "generated_model.py"
    path.write_text(src)
    ns: dict = {"__name__": "generated_model"}
    exec(compile(path.read_text(), str(path), "exec"), ns)
    model = ns["build_m"]()
    direct = kb.build_model(g)
    assert [layer.name for layer in model.layers] == [layer.name for layer in direct.layers]
    env = {s: (2 if s == "batch" else 7) for s in symbols(g)}
    weights, xs, want = _torch_reference(g, env)
    kb.set_weights(model, g, weights)
    for name, arr in _keras_outputs(model, g, xs).items():
        np.testing.assert_allclose(arr, want[name], atol=1e-5)


def test_spec_names_never_reach_code_unescaped():
    src = '''model Evil {
        input lambda: float32[batch, 3]
        imp = lambda -> dense(2) as class
        output imp
    }'''
    g = compile_source(SourceFile("e.dls", src)).models["Evil"]
    code = kb.generate(g)
    compile(code, "<evil>", "exec")
    assert "lambda_ = keras.Input(shape=(3,), name='lambda')" in code
    assert "name='class'" in code
    assert kb.build_model(g)(np.zeros((2, 3), "float32")).shape == (2, 2)


def test_frozen_layers_are_not_trainable():
    g = compile_file(spec_path("digits_finetune.dls")).models["DigitsFineTune"]
    model = kb.build_model(g)
    frozen = {p.node for p in g.params() if not p.trainable}
    assert frozen
    for name in frozen:
        assert not model.get_layer(name).trainable


def test_generate_imports_no_framework():
    import subprocess
    import sys

    code = ("import sys; from dlspec import compile_file; from dlspec.backends import keras as kb; "
            f"g = compile_file({str(spec_path('unet.dls'))!r}).models['UNet']; kb.generate(g); "
            "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules and 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_unknown_layout_is_a_clear_error():
    g = _graph("model M { input x: float32[batch, 4] output x -> dense(3) }")
    with pytest.raises(kb.DlspecError) as info:
        kb.generate(g, layout="hwcn")
    assert info.value.code == "E760"
