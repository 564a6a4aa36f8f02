"""The MXNet (Gluon) backend: source generation without MXNet (fast), and — in a real MXNet 1.9.1
in its own interpreter (tests/mxnet_env.py builds it) — every op case and every example spec
against PyTorch from the same canonical weights, one SGD step of the generated training loop
against PyTorch's, and `dlspec export --target mxnet` loaded back with gluon.SymbolBlock.imports."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest

from dlspec import DlspecError, compile_file, compile_source
from dlspec.backends import get_backend
from dlspec.backends import mxnet as mb
from dlspec.ir.ops import REGISTRY
from dlspec.ir.training import MSE, SGD
from dlspec.source import SourceFile
from dlspec.verify import fresh_weights, make_inputs

from .helpers import ROOT, spec_files, spec_path
from .op_cases import CASES
from .torch_helpers import sgd_step_torch

TOL = 1e-5
MLP = "model M { input x: float32[batch, 4]\n h = x -> dense(3) as fc -> relu()\n output h }"


def _graph(src: str, name: str = "M"):
    return compile_source(SourceFile(f"{name}.dls", src)).models[name]


def _max_error(got: dict, want: dict) -> dict[str, float]:
    out = {}
    for name, ref in want.items():
        assert got[name].shape == ref.shape, name
        out[name] = float(np.abs(got[name] - ref).max()) / max(1.0, float(np.abs(ref).max()))
    return out


# ---- fast: source generation, no framework --------------------------------------------------


def test_the_backend_lowers_every_op_of_the_catalogue():
    assert mb.supported_ops() == set(REGISTRY)


def test_generated_source_is_a_readable_hybrid_block():
    g = compile_file(spec_path("iris_mlp.dls")).models["IrisMLP"]
    src = mb.generate(g)
    ast.parse(src)
    assert "class IrisMLP(gluon.HybridBlock):" in src
    assert "    def hybrid_forward(self, F, features):" in src or "    def hybrid_forward(self, F, " in src
    assert "nn.Dense(" in src and "flatten=False" in src
    assert "import dlspec" not in src and "from dlspec" not in src and "torch" not in src
    tree = ast.parse(src)
    weights = next(n for n in tree.body if isinstance(n, ast.Assign) and n.targets[0].id == "WEIGHTS")
    table = ast.literal_eval(weights.value)
    assert set(table) == {p.path for p in g.params()}
    funcs = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    assert {"read_safetensors", "write_safetensors", "load_canonical_weights", "canonical_weights", "make_trainer",
            "make_loss", "train", "build_model"} <= funcs


def test_compile_writes_the_recipe_as_a_gluon_trainer(tmp_path):
    out = tmp_path / "resnet.py"
    res = subprocess.run([sys.executable, "-m", "dlspec.cli", "compile", str(spec_path("digits_resnet.dls")), "--target",
                          "mxnet", "-o", str(out)], capture_output=True, text=True, timeout=120, cwd=ROOT)
    if res.returncode != 0 and "No module named dlspec.cli.__main__" in res.stderr:
        from click.testing import CliRunner

        from dlspec.cli import main

        res = CliRunner().invoke(main, ["compile", str(spec_path("digits_resnet.dls")), "--target", "mxnet", "-o", str(out)])
        assert res.exit_code == 0, res.output
    else:
        assert res.returncode == 0, res.stderr
    src = out.read_text()
    # sgd(lr=0.05, momentum=0.9, nesterov=true, weight_decay=5e-4), warmup(epochs=1) then cosine(), 15 epochs
    assert 'gluon.Trainer(block.collect_params(), "nag", options)' in src
    assert '"learning_rate": 0.05, "momentum": 0.9, "wd": 0.0005' in src
    assert "mx.lr_scheduler.CosineScheduler(max_update=15 * steps_per_epoch" in src and "warmup_steps=1 * steps_per_epoch" in src
    assert "gluon.loss.SoftmaxCrossEntropyLoss" in src and "def train(block, batches, epochs=15):" in src


def test_generate_imports_no_framework():
    code = ("import sys; from dlspec import compile_file; from dlspec.backends import get_backend; "
            f"g = compile_file({str(spec_path('transformer_classifier.dls'))!r}).models['TransformerClassifier']; "
            "get_backend('mxnet').generate(g); "
            "print(sorted(m for m in ('mxnet', 'torch', 'tensorflow', 'keras', 'onnx') if m in sys.modules))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"


@pytest.mark.parametrize("path", spec_files(), ids=lambda p: p.stem)
def test_every_spec_generates_valid_source(path):
    for g in compile_file(path).models.values():
        src = mb.generate(g)
        ast.parse(src)
        assert f"class {mb.class_name(g)}(gluon.HybridBlock):" in src


def test_a_configuration_without_a_gluon_form_is_E781_at_the_layer():
    g = CASES["conv_padding"].graph()
    with pytest.raises(DlspecError) as info:
        mb.generate(g)
    assert info.value.code == "E781"
    assert "same_strided" in info.value.message and "padding=same" in info.value.message
    assert info.value.diagnostics[0].span.line == 3


def test_an_op_without_a_lowering_is_one_E701_listing_every_layer(monkeypatch):
    monkeypatch.delitem(mb.LOWERINGS._table, "relu")
    g = _graph("model M { input x: float32[batch, 4]\n h = x -> relu()\n y = h -> dense(2) as fc -> relu()\n output y }")
    with pytest.raises(DlspecError) as info:
        mb.generate(g)
    assert info.value.code == "E701"
    assert [d.span.line for d in info.value.diagnostics] == [2, 3]
    assert all("mxnet" in d.message for d in info.value.diagnostics)


def test_a_missing_interpreter_is_E780_with_the_setup_command(monkeypatch):
    g = _graph(MLP)
    monkeypatch.delenv("DLSPEC_MXNET_PYTHON", raising=False)
    with pytest.raises(DlspecError) as info:
        get_backend("mxnet").run(g, fresh_weights(g), make_inputs(g, {"batch": 2}))
    assert info.value.code == "E780" and "DLSPEC_MXNET_PYTHON" in info.value.message
    assert "pip install mxnet==1.9.1 numpy==1.23.5" in info.value.hint
    monkeypatch.setenv("DLSPEC_MXNET_PYTHON", "/nonexistent/python")
    with pytest.raises(DlspecError) as info:
        get_backend("mxnet").run(g, fresh_weights(g), make_inputs(g, {"batch": 2}))
    assert info.value.code == "E780" and "/nonexistent/python" in info.value.message


def test_weights_that_do_not_fit_are_E783_before_mxnet_runs(monkeypatch):
    monkeypatch.setenv("DLSPEC_MXNET_PYTHON", "/nonexistent/python")  # never reached
    g = _graph(MLP)
    with pytest.raises(DlspecError) as info:
        get_backend("mxnet").run(g, {"fc.weight": np.zeros((4, 3), "float32")}, make_inputs(g, {"batch": 2}))
    assert info.value.code == "E783"
    assert "missing `fc.bias`" in info.value.message and "[4, 3]" in info.value.message


def test_spec_names_never_reach_code_unescaped():
    src = '''model Evil {
        input lambda: float32[batch, 3]
        imp = lambda -> dense(2) as class
        output imp
    }'''
    code = mb.generate(compile_source(SourceFile("e.dls", src)).models["Evil"])
    ast.parse(code)
    assert "def hybrid_forward(self, F, lambda_):" in code
    assert "self.class_ = nn.Dense(" in code and '"class.weight": "class_.weight"' in code


# ---- slow: a real MXNet, against PyTorch -----------------------------------------------------


def _torch_and_mxnet(graph, env, arrays=None, seed=0):
    weights = fresh_weights(graph, seed=seed)
    inputs = ({i.name: a for i, a in zip(graph.inputs, arrays)} if arrays is not None
              else make_inputs(graph, env, seed=seed))
    want = get_backend("torch").run(graph, weights, inputs)
    got = get_backend("mxnet").run(graph, weights, inputs)
    return want, got


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(CASES))
def test_op_parity_with_torch(case, mxnet_python):
    c = CASES[case]
    g = c.graph()
    if "mxnet" in c.expect:
        with pytest.raises(DlspecError) as info:
            get_backend("mxnet").run(g, fresh_weights(g), make_inputs(g, c.bindings()[0]))
        assert info.value.code == c.expect["mxnet"]
        return
    for env in c.bindings():
        want, got = _torch_and_mxnet(g, env, arrays=c.arrays(env) if c.inputs else None)
        assert any(float(np.abs(v).max()) > 0 for v in want.values())
        errors = _max_error(got, want)
        print(f"{case} {env}: max error {max(errors.values()):.2e}")
        assert max(errors.values()) <= TOL, {k: e for k, e in errors.items() if e > TOL}


#: example specs at sizes that keep the run short (the big ImageNet models at a small image)
SPEC_SIZES = {"resnet18": {"batch": 2}, "resnet50": {"batch": 1}, "vgg11": {"batch": 1}, "mobilenet_v2": {"batch": 1}, "unet": {"batch": 1}}


@pytest.mark.slow
@pytest.mark.parametrize("path", spec_files(), ids=lambda p: p.stem)
def test_every_spec_matches_torch(path, mxnet_python):
    from dlspec import verify as vf

    for g in compile_file(path).models.values():
        env = vf.bind_sizes(g, SPEC_SIZES.get(path.stem, {"batch": 2}))
        weights = fresh_weights(g, seed=0, use_torch=True)
        inputs = make_inputs(g, env, seed=0)
        want = get_backend("torch").run(g, weights, inputs)
        got = get_backend("mxnet").run(g, weights, inputs)
        errors = _max_error(got, want)
        print(f"{path.stem}/{g.name}: max error {max(errors.values()):.2e}")
        assert max(errors.values()) <= TOL, errors


@pytest.mark.slow
def test_verify_compares_torch_and_mxnet_layer_by_layer(mxnet_python):
    from dlspec.verify import verify

    g = compile_file(spec_path("digits_cnn.dls")).models["DigitsCNN"]
    result = verify(g, backends=["torch", "mxnet"], tolerance=TOL)
    assert not result.failures, result.failures
    assert result.passed
    layers = [r for r in result.rows if r.kind == "layer"]
    assert len(layers) == len(g.nodes) and all(r.backend == "mxnet" for r in result.rows)


@pytest.mark.slow
def test_weights_round_trip_exactly(mxnet_python):
    g = CASES["recurrent_states"].graph()
    weights = fresh_weights(g, seed=2)
    backend = get_backend("mxnet")
    live = backend.build(g, weights)
    back = backend.read_weights(live, g)
    assert set(back) == set(weights)
    for k, v in weights.items():
        np.testing.assert_array_equal(back[k], v, err_msg=k)
    other = fresh_weights(g, seed=3)
    backend.load_weights(live, g, other)
    np.testing.assert_array_equal(backend.read_weights(live, g)["bilstm.weight_ih_l0"], other["bilstm.weight_ih_l0"])


def _without_dropout(node):
    if node.op == "dropout":
        return node.model_copy(update={"attrs": {**node.attrs, "p": 0.0}})
    if "dropout" in node.attrs:
        return node.model_copy(update={"attrs": {**node.attrs, "dropout": 0.0}})
    return node


def _values_per_channel(graph, node_name, env):
    from dlspec.ir.dims import subs

    shape = [int(subs(d, env)) for d in graph.values[graph.node(node_name).inputs[0]].shape]
    return int(np.prod(shape)) // shape[1]


@pytest.mark.slow
@pytest.mark.parametrize("spec,model,env", [
    ("specs/digits_resnet.dls", "DigitsResNet", {"batch": 4}),  # convolutions with batch norm
    ("specs/sunspots_gru.dls", "SunspotsGRU", {"batch": 4}),
    ("specs/iris_mlp.dls", "IrisMLP", {"batch": 4}),
])
def test_one_sgd_step_moves_weights_alike(spec, model, env, mxnet_python):
    """The generated `train()` (recipe: sgd(lr=0.1), mse) takes one step on one batch in MXNet."""
    g = compile_file(ROOT / spec).models[model]
    g = g.model_copy(update={"nodes": [_without_dropout(n) for n in g.nodes]})  # random draws differ
    weights = fresh_weights(g, seed=0, use_torch=True)
    inputs = make_inputs(g, env, seed=0)
    xs = [inputs[i.name] for i in g.inputs]
    ys = get_backend("torch").run(g, weights, inputs)
    target = np.random.default_rng(1).standard_normal(next(iter(ys.values())).shape).astype("float32")
    after_torch, loss_t = sgd_step_torch(g, weights, xs, target, lr=0.1)
    recipe = SimpleNamespace(optimizer=SGD(lr=0.1), loss=MSE(), schedule=(), epochs=1)
    src = mb.generate(g, recipe=recipe)
    got = mb.run_job(src, {"action": "train", "epochs": 1}, weights=weights, inputs=inputs, target=target)
    after_mx, loss_m = got["weights"], got["history"][0]
    assert abs(loss_t - loss_m) <= 1e-4 * max(1.0, abs(loss_t))
    moved = 0
    for k, before in weights.items():
        if k.endswith("running_var"):  # MXNet keeps the biased batch variance: (n - 1) / n of PyTorch's
            n = _values_per_channel(g, k.rsplit(".", 1)[0], env)
            np.testing.assert_allclose(after_mx[k] - 0.9 * before, (after_torch[k] - 0.9 * before) * (n - 1) / n,
                                       atol=1e-4, rtol=1e-4, err_msg=k)
            continue
        np.testing.assert_allclose(after_mx[k], after_torch[k], atol=1e-4, rtol=1e-4, err_msg=k)
        moved += not np.allclose(after_torch[k], before)
    assert moved >= len(weights) // 2


SYMBOLBLOCK_CHECK = """
import json, sys
import numpy as np
import mxnet as mx
job = json.load(open(sys.argv[1]))
net = mx.gluon.SymbolBlock.imports(job["symbol"], job["inputs"], job["params"])
xs = [mx.nd.array(np.load(p, allow_pickle=False)) for p in job["arrays"]]
y = net(*xs)
y = y[0] if isinstance(y, (list, tuple)) else y
np.save(job["out"], y.asnumpy(), allow_pickle=False)
"""


def _run_folder(tmp_path, spec: str):
    """A run folder as `dlspec train` leaves it (graph.json, config.json, best.safetensors), with
    fresh weights and batch-norm statistics away from 0 and 1."""
    from dlspec.io import atomic_write_text
    from dlspec.train.run import write_config
    from dlspec.weights import save_numpy

    prog = compile_file(spec_path(spec))
    cfg = prog.recipes[-1]
    graph = prog.recipe_graphs[cfg.name]
    arrays = fresh_weights(graph, seed=0)
    run = tmp_path / "run"
    run.mkdir()
    atomic_write_text(run / "graph.json", graph.model_dump_json())
    write_config(run, spec_path(spec), cfg, backend="torch", device="cpu", data="builtin")
    save_numpy(arrays, run / "best.safetensors")
    return run, graph, arrays


@pytest.mark.slow
def test_export_loads_back_with_symbolblock_imports(tmp_path, mxnet_python):
    from dlspec.export import export

    run, graph, arrays = _run_folder(tmp_path, "digits_cnn.dls")
    out = export(run, "mxnet", tmp_path / "digits", echo=lambda s: None)
    files = sorted(p.name for p in out.iterdir())
    assert files == ["digits-0000.params", "digits-symbol.json"]
    symbol = json.loads((out / "digits-symbol.json").read_text())
    assert any(n["op"] == "Convolution" for n in symbol["nodes"])
    assert [n["name"] for n in symbol["nodes"] if n["op"] == "null" and not n["name"].startswith("digitscnn")] == ["data"]
    inputs = make_inputs(graph, {"batch": 3}, seed=4)
    want = get_backend("torch").run(graph, arrays, inputs)
    x = tmp_path / "x.npy"
    np.save(x, inputs[graph.inputs[0].name], allow_pickle=False)
    job = {"symbol": str(out / "digits-symbol.json"), "params": str(out / "digits-0000.params"),
           "inputs": ["data"], "arrays": [str(x)], "out": str(tmp_path / "y.npy")}  # export names one input `data`
    (tmp_path / "job.json").write_text(json.dumps(job))
    (tmp_path / "check.py").write_text(SYMBOLBLOCK_CHECK)
    res = subprocess.run([mxnet_python, "-I", str(tmp_path / "check.py"), str(tmp_path / "job.json")],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    got = np.load(tmp_path / "y.npy")
    ref = next(iter(want.values()))
    np.testing.assert_allclose(got, ref, atol=TOL * max(1.0, float(np.abs(ref).max())))
    with pytest.raises(DlspecError) as info:  # an existing artifact is kept without --force
        export(run, "mxnet", out, echo=lambda s: None)
    assert info.value.code == "E690"
