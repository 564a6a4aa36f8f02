"""The Keras backend: every op lowers and computes what PyTorch computes from the same canonical
weights (every attribute that changes the lowering has a case), weights convert both ways, one
SGD step moves both frameworks' weights alike, layouts, and the generated source."""

from __future__ import annotations

import os
import re

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from dlspec import DlspecError, compile_file, compile_source  # noqa: E402
from dlspec.backends import keras as kb  # noqa: E402
from dlspec.backends import torch as tb  # noqa: E402
from dlspec.ir.ops import REGISTRY  # noqa: E402
from dlspec.source import SourceFile  # noqa: E402

from .helpers import ROOT, spec_path  # noqa: E402
from .op_cases import CASES, ops_used  # noqa: E402
from .torch_helpers import random_inputs, sgd_step_torch, symbols  # noqa: E402

TOL = 1e-4


def _graph(src: str, name: str = "M"):
    return compile_source(SourceFile(f"{name}.dls", src)).models[name]


def _torch_reference(graph, env, seed=0, arrays=None):
    torch.manual_seed(seed)
    module = tb.build_module(graph, inplace=False).eval()
    weights = tb.canonical_state(module, graph)
    xs = arrays if arrays is not None else random_inputs(graph, env, seed=seed)
    with torch.no_grad():
        y = module(*[torch.from_numpy(a) for a in xs])
    ys = y if isinstance(y, dict) else {graph.outputs[0].name: y}
    return weights, xs, {k: v.numpy() for k, v in ys.items()}


def _keras_outputs(model, graph, xs):
    y = model(xs if len(xs) > 1 else xs[0], training=False)
    ys = y if isinstance(y, dict) else {graph.outputs[0].name: y}
    return {k: np.asarray(v) for k, v in ys.items()}


def assert_parity(graph, env, arrays=None):
    weights, xs, expected = _torch_reference(graph, env, arrays=arrays)
    model = kb.build_model(graph)
    kb.set_weights(model, graph, weights)
    got = _keras_outputs(model, graph, xs)
    for name, want in expected.items():
        assert got[name].shape == want.shape, name
        scale = max(float(np.abs(want).max()), 1.0)
        assert float(np.abs(got[name] - want).max()) <= TOL * scale, name
    return model, weights


def test_every_op_has_a_keras_lowering_and_a_parity_case():
    assert kb.supported_ops() == set(REGISTRY)
    assert ops_used() == set(REGISTRY), sorted(set(REGISTRY) - ops_used())


@pytest.mark.parametrize("case", sorted(CASES))
def test_op_parity_with_torch(case):
    c = CASES[case]
    g = c.graph()
    if "keras" in c.expect:
        with pytest.raises(DlspecError) as info:
            kb.build_model(g)
        assert info.value.code == c.expect["keras"]
        return
    for env in c.bindings():
        assert_parity(g, env, arrays=c.arrays(env) if c.inputs else None)


def test_weights_convert_both_ways_exactly():
    g = CASES["attention"].graph()
    model, weights = assert_parity(g, {"batch": 2})
    back = kb.canonical_weights(model, g)
    assert set(back) == set(weights)
    for k, v in weights.items():
        np.testing.assert_array_equal(back[k], v, err_msg=k)


def test_lstm_bias_comes_back_summed():
    g = CASES["lstm_state"].graph()
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
    after_torch, loss_t = sgd_step_torch(g, weights, xs, target, lr=0.1)
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
    assert 'keras.Input(shape=(6, 5, 3), name="x")' in src and "(channels-last)" in src


def test_flatten_after_conv_flattens_in_nchw_order():
    g = _graph("model M { input x: float32[batch, 2, 3, 3] output x -> conv2d(4, 1) as c -> flatten() -> dense(3) as fc }")
    assert_parity(g, {"batch": 2})
    src = kb.generate(g)
    conv, to_nchw, flat = (src.index(s) for s in ("layers.Conv2D(", 'name="c.to_nchw"', "layers.Flatten("))
    assert conv < to_nchw < flat


@pytest.mark.parametrize("case", ["pooling", "conv_padding", "recurrent", "attention"])
def test_generated_source_is_standalone_keras_with_the_same_numbers(tmp_path, case):
    g = CASES[case].graph()
    src = kb.generate(g)
    assert "import dlspec" not in src and "from dlspec" not in src
    if case == "pooling":
        assert "class CeilModePool(keras.layers.Layer)" in src and "class AdaptivePool(keras.layers.Layer)" in src
        assert re.search(r'layers\.MaxPooling2D\(\s*pool_size=\(3, 3\),\s*strides=\(2, 2\),\s*padding="valid"', src)
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
    assert 'lambda_ = keras.Input(shape=(3,), name="lambda")' in code
    assert 'name="class"' in code
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
