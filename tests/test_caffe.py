"""Caffe import and export, checked against OpenCV's dnn module (a Caffe runtime).

The classic nets under tests/fixtures/caffe get random caffemodels written here, blob by blob
in Caffe's layouts (BatchNorm with a scale factor other than 1); OpenCV runs the original
prototxt with them, and the imported spec must give the same outputs on PyTorch (and, in the
slow tier, ONNX Runtime and Keras). Every spec in specs/ whose ops Caffe has is compiled to Caffe
and OpenCV's forward compared with PyTorch's. Bad and hostile files get coded errors.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from dlspec.errors import DlspecError

cv2 = pytest.importorskip("cv2")

FIXTURES = Path(__file__).parent / "fixtures" / "caffe"
ROOT = Path(__file__).resolve().parents[1]
NETS = ["lenet", "cifar10_quick", "cifar10_full", "alexnet_small", "inception", "resblock"]


def random_caffemodel(prototxt: Path, out: Path, seed: int = 0) -> None:
    """A caffemodel of random blobs for `prototxt`, shapes from the importer, values from here."""
    from dlspec.caffe.importer import import_net
    from dlspec.caffe.schema import message

    ci = import_net(prototxt)
    rng = np.random.default_rng(seed)
    net = message("NetParameter")
    for name, shapes in ci.blob_shapes.items():
        lay = net.layer.add()
        lay.name = name
        is_bn = len(shapes) == 3 and shapes[2] == (1,)
        for i, shape in enumerate(shapes):
            if is_bn and i == 2:
                arr = np.array([rng.uniform(0.5, 4.0)])  # Caffe's scale factor: the stored stats are scaled
            elif is_bn and i == 1:
                arr = rng.uniform(0.5, 2.0, shape) * arr_sf(rng)
            else:  # fan-in scaled, so that activations stay near 1 and float32 rounding stays small
                arr = rng.normal(0, 1.0 / np.sqrt(np.prod(shape[1:])) if len(shape) > 1 else 0.3, shape)
            b = lay.blobs.add()
            b.shape.dim.extend(shape)
            b.data.extend(arr.astype(np.float32).reshape(-1).tolist())
    out.write_bytes(net.SerializeToString())


def arr_sf(rng) -> float:
    return float(rng.uniform(0.5, 2.0))


def opencv_forward(prototxt: Path, caffemodel: Path, x: np.ndarray, outputs: list[str]) -> list[np.ndarray]:
    from dlspec.caffe.backend import run_opencv

    return run_opencv(prototxt, caffemodel, {"data": x}, outputs)


def imported(tmp_path: Path, net: str):
    from dlspec.caffe.importer import convert

    proto = FIXTURES / f"{net}.prototxt"
    model = tmp_path / f"{net}.caffemodel"
    random_caffemodel(proto, model)
    result, ci = convert(proto, tmp_path / f"{net}.dls", model)
    return proto, model, result, ci


def rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-6))


def _inputs(result, seed=1, batch=2):
    g = result.graph
    shape = [batch, *[int(d) for d in g.inputs[0].type.shape[1:]]]
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def _check_against_opencv(tmp_path, net, backends):
    from dlspec.backends import get_backend

    proto, model, result, ci = imported(tmp_path, net)
    x = _inputs(result)
    g = result.graph
    names = [o for o, _ in result.imported.outputs]
    ref = opencv_forward(proto, model, x, names)
    for backend in backends:
        got = get_backend(backend).run(g, result.weights, {g.inputs[0].name: x})
        for caffe_name, r in zip(names, ref):
            out = got[result.output_names[caffe_name]]
            assert out.shape == r.shape, (backend, caffe_name)
            assert rel(out, r) <= 1e-4, (backend, net, caffe_name, rel(out, r))
    return result, ci


@pytest.mark.parametrize("net", ["cifar10_full", "resblock"])
def test_imported_classic_nets_equal_opencv_on_pytorch(tmp_path, net):
    _check_against_opencv(tmp_path, net, ["torch"])


@pytest.mark.slow
@pytest.mark.parametrize("net", NETS)
def test_imported_classic_nets_equal_opencv_on_every_backend(tmp_path, net):
    _check_against_opencv(tmp_path, net, ["torch", "onnx", "keras"])


def test_import_keeps_names_blocks_params_and_parameter_counts(tmp_path):
    proto, model, result, ci = imported(tmp_path, "alexnet_small")
    text = result.text
    assert "conv2d(32, 5, padding=2, groups=2) as conv2" in text
    assert "lrn(5" in text and "dropout" in text
    counts = {p.path: int(np.prod([int(d) for d in p.shape])) for p in result.graph.params()}
    # conv1 16·3·11·11 + 16; conv2 32·8·5·5 + 32 (two groups of 8 input channels)
    assert counts["conv1.weight"] == 16 * 3 * 11 * 11 and counts["conv2.weight"] == 32 * 8 * 25
    # V1's blobs_lr / weight_decay become per-parameter multipliers
    assert ci.multipliers["conv1"] == [(1.0, 1.0), (2.0, 0.0)]
    _, _, res2, _ = imported(tmp_path, "resblock")
    assert "batchnorm2d(eps=0.001" in res2.text and "as bn_branch2b" in res2.text


def test_pooling_rounding_follows_caffe_both_ways():
    from dlspec.caffe.importer import caffe_pool_size

    assert caffe_pool_size(32, 3, 2, 0, True) == 16 and caffe_pool_size(32, 3, 2, 0, False) == 15
    # with padding, a last window that would start in the padding is dropped
    assert caffe_pool_size(6, 3, 2, 1, True) == 4
    assert caffe_pool_size(5, 2, 2, 1, True) == 3  # (5+2-2)/2 → ceil 3, +1 = 4; 3·2 ≥ 5+1 drops it


def test_specs_compile_to_caffe_and_opencv_equals_pytorch_fast():
    _spec_against_opencv(["lenet5", "digits_resnet"])


@pytest.mark.slow
def test_every_spec_caffe_can_express_equals_opencv():
    _spec_against_opencv([p.stem for p in sorted((ROOT / "specs").glob("*.dls"))])


def _spec_against_opencv(stems):
    from dlspec.backends import get_backend
    from dlspec.caffe.backend import CAFFE_OPS
    from dlspec.program import compile_file
    from dlspec.verify import fresh_weights, make_inputs

    compared = 0
    for stem in stems:
        for g in compile_file(ROOT / "specs" / f"{stem}.dls").models.values():
            if any(n.op not in CAFFE_OPS for n in g.nodes):
                with pytest.raises(DlspecError) as info:
                    get_backend("caffe").check(g)
                assert {d.code for d in info.value.diagnostics} == {"E790"}
                assert all(d.span is not None for d in info.value.diagnostics)
                continue
            w = fresh_weights(g, seed=1)
            x = make_inputs(g, {"batch": 2})
            ref = get_backend("torch").run(g, w, x)
            got = get_backend("caffe").run(g, w, x)
            for k in ref:
                assert rel(got[k], ref[k]) <= 1e-4, (stem, k, rel(got[k], ref[k]))
            compared += 1
    assert compared >= len(stems) // 2


def test_floor_pooling_exports_with_a_slice_and_stays_exact(tmp_path):
    from dlspec import compile_source
    from dlspec.backends import get_backend
    from dlspec.caffe.backend import prototxt_text, write_net
    from dlspec.source import SourceFile
    from dlspec.verify import fresh_weights

    src = ("model P {\n    input x: float32[batch, 3, 14, 14]\n"
           "    y = x -> maxpool2d(3, stride=2, padding=1) -> avgpool2d(3, stride=2, padding=1)\n    output y\n}\n")
    g = compile_source(SourceFile("p.dls", src)).models["P"]
    text = prototxt_text(write_net(g)[0])
    assert "Slice" in text
    x = {"x": np.random.default_rng(0).normal(size=(2, 3, 14, 14)).astype(np.float32)}
    ref = get_backend("torch").run(g, {}, x)["y"]
    got = get_backend("caffe").run(g, fresh_weights(g), x)["y"]
    assert got.shape == ref.shape and rel(got, ref) <= 1e-5


def test_cli_import_and_compile_round_trip(tmp_path):
    from click.testing import CliRunner

    from dlspec.cli import main

    proto = FIXTURES / "lenet.prototxt"
    model = tmp_path / "lenet.caffemodel"
    random_caffemodel(proto, model)
    spec = tmp_path / "lenet.dls"
    r = CliRunner().invoke(main, ["import", str(proto), "--weights", str(model), "-o", str(spec)])
    assert r.exit_code == 0, r.output
    out = tmp_path / "caffe"
    r = CliRunner().invoke(main, ["compile", str(spec), "--target", "caffe", "--weights",
                                  str(spec.with_suffix(".safetensors")), "-o", str(out)])
    assert r.exit_code == 0, r.output
    x = np.random.default_rng(2).normal(size=(3, 1, 28, 28)).astype(np.float32)
    a = opencv_forward(proto, model, x, ["prob"])[0]
    b = opencv_forward(out / "deploy.prototxt", out / "model.caffemodel", x, ["prob"])[0]
    assert rel(b, a) <= 1e-5


BAD_PROTOTXT = {
    "syntax": ('layer { name: "a" type: "ReLU" bottom: "x" top: "y" \n', "E851"),
    "unknown_field": ('input: "x"\ninput_shape { dim: 1 dim: 3 }\nlayer {\n name: "a"\n type: "ReLU"\n'
                      ' relu_param { slope: 2 }\n bottom: "x" top: "y" }\n', "E851"),
    "binary": ("\x00\x01\x02garbage", "E851"),
    "undefined_bottom": ('input: "x"\ninput_shape { dim: 1 dim: 3 }\nlayer { name: "a" type: "ReLU" bottom: "z" top: "y" }\n',
                         "E855"),
    "no_shape": ('layer { name: "d" type: "Data" top: "data" top: "label" data_param { source: "db" batch_size: 4 } }\n'
                 'layer { name: "r" type: "ReLU" bottom: "data" top: "r" }\n', "E856"),
    "reshape_batch": ('input: "x"\ninput_shape { dim: 1 dim: 4 }\n'
                      'layer { name: "a" type: "Reshape" bottom: "x" top: "y" reshape_param { shape { dim: 2 dim: 2 } } }\n',
                      "E853"),
    "deep": ("layer " + "{ " * 200 + "}" * 200, "E859"),
    "empty": ("", "E855"),
}


@pytest.mark.parametrize("case", sorted(BAD_PROTOTXT))
def test_bad_prototxts_get_coded_errors(tmp_path, case):
    from dlspec.caffe.importer import import_net

    text, code = BAD_PROTOTXT[case]
    p = tmp_path / "bad.prototxt"
    p.write_bytes(text.encode("utf-8"))
    with pytest.raises(DlspecError) as info:
        import_net(p)
    assert info.value.code == code, info.value.message


def test_unsupported_layers_are_listed_in_one_error_with_their_lines(tmp_path):
    from dlspec.caffe.importer import import_net

    p = tmp_path / "ssd.prototxt"
    p.write_text('input: "data"\ninput_shape { dim: 1 dim: 3 dim: 8 dim: 8 }\n'
                 'layer { name: "c" type: "Convolution" bottom: "data" top: "c" convolution_param { num_output: 2 kernel_size: 1 } }\n'
                 'layer {\n  name: "pb"\n  type: "PriorBox"\n  bottom: "c" top: "pb"\n  prior_box_param { min_size: 4 }\n}\n'
                 'layer { name: "det" type: "DetectionOutput" bottom: "pb" top: "det" detection_output_param { num_classes: 2 } }\n')
    with pytest.raises(DlspecError) as info:
        import_net(p)
    assert info.value.code == "E850"
    msg = info.value.message
    assert "PriorBox `pb` (line 4)" in msg and "DetectionOutput `det` (line 10)" in msg


@pytest.mark.parametrize("case", ["truncated", "text", "random", "bad_count"])
def test_bad_caffemodels_get_coded_errors(tmp_path, case):
    from dlspec.caffe.importer import import_net
    from dlspec.caffe.schema import message

    proto = FIXTURES / "lenet.prototxt"
    good = tmp_path / "good.caffemodel"
    random_caffemodel(proto, good)
    bad = tmp_path / "bad.caffemodel"
    data = good.read_bytes()
    if case == "truncated":
        bad.write_bytes(data[: len(data) // 2])
    elif case == "text":
        bad.write_bytes(proto.read_bytes())
    elif case == "random":
        bad.write_bytes(np.random.default_rng(0).bytes(5000))
    else:
        net = message("NetParameter")
        lay = net.layer.add()
        lay.name = "conv1"
        b = lay.blobs.add()
        b.shape.dim.extend([20, 1, 5, 5])
        b.data.extend([0.0] * 7)
        bad.write_bytes(net.SerializeToString())
    with pytest.raises(DlspecError) as info:
        import_net(proto, bad)
    assert info.value.code in ("E852", "E854"), info.value.message


def test_train_val_takes_the_test_phase_and_turns_data_into_inputs(tmp_path):
    from dlspec.caffe.importer import import_net

    p = tmp_path / "train_val.prototxt"
    p.write_text('''name: "tv"
layer { name: "mnist" type: "Data" top: "data" top: "label" include { phase: TRAIN }
  transform_param { scale: 0.00390625 } data_param { source: "train_lmdb" batch_size: 64 backend: LMDB } }
layer { name: "mnist" type: "Data" top: "data" top: "label" include { phase: TEST }
  transform_param { scale: 0.00390625 } data_param { source: "test_lmdb" batch_size: 100 backend: LMDB } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" inner_product_param { num_output: 10 } }
layer { name: "drop" type: "Dropout" bottom: "ip" top: "ip" include { phase: TRAIN } }
layer { name: "accuracy" type: "Accuracy" bottom: "ip" bottom: "label" top: "accuracy" include { phase: TEST } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
''')
    ci = import_net(p, input_shapes={"data": [1, 28, 28]})
    imp = ci.imported
    assert [layer.op for layer in imp.layers] == ["flatten", "dense"]  # no dropout: a TRAIN-only layer
    assert [o for o, _ in imp.outputs] == ["ip"] and ci.loss == "cross_entropy"
    assert [int(d) for d in imp.inputs[0].shape[1:]] == [1, 28, 28]


SOLVERS = {
    "fixed": "", "step": "gamma: 0.5\nstepsize: 7\n", "exp": "gamma: 0.97\n", "inv": "gamma: 0.0001\npower: 0.75\n",
    "multistep": "gamma: 0.3\nstepvalue: 5\nstepvalue: 12\nstepvalue: 30\n", "poly": "power: 2\n",
    "sigmoid": "gamma: -0.2\nstepsize: 20\n",
}


def _formula(policy: str, it: int) -> float:
    """Caffe's documented lr_policy formulas (base_lr 0.1), written out independently here."""
    import math

    return 0.1 * {
        "fixed": 1.0, "step": 0.5 ** (it // 7), "exp": 0.97 ** it, "inv": (1 + 0.0001 * it) ** -0.75,
        "multistep": 0.3 ** sum(it >= v for v in (5, 12, 30)), "poly": (1 - it / 40) ** 2,
        "sigmoid": 1 / (1 + math.exp(0.2 * (it - 20))),
    }[policy]


@pytest.mark.parametrize("policy", sorted(SOLVERS))
def test_every_lr_policy_imports_and_both_trainers_follow_the_formula_per_iteration(tmp_path, policy):
    import torch

    from dlspec.caffe.importer import convert
    from dlspec.train.tf_schedules import LrSchedule
    from dlspec.train.torch_loop import make_schedule

    solver = tmp_path / "solver.prototxt"
    solver.write_text(f'net: "lenet_train_test.prototxt"\nbase_lr: 0.1\nmomentum: 0.9\nlr_policy: "{policy}"\n'
                      f"{SOLVERS[policy]}max_iter: 40\n")
    result, _ = convert(FIXTURES / "lenet_train_test.prototxt", tmp_path / "n.dls", input_shapes={"data": [1, 28, 28]},
                        solver=solver)
    from dlspec.program import compile_source
    from dlspec.source import SourceFile

    recipe = compile_source(SourceFile(str(tmp_path / "n.dls"), result.text)).recipes[0]
    parts = tuple(recipe.schedule)
    assert parts[0].type == "caffe_lr" and parts[0].policy == policy
    steps = 4
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=recipe.optimizer.lr)
    sched = make_schedule(parts, opt, 10, steps)
    tf = LrSchedule(parts, [recipe.optimizer.lr], 10, steps)
    for it in range(40):
        want = _formula(policy, it)
        assert opt.param_groups[0]["lr"] == pytest.approx(want, rel=1e-6), (policy, it)
        assert tf.lrs(it // steps + 1, it % steps)[0] == pytest.approx(want, rel=1e-6), (policy, it)
        opt.step()
        sched.after_step()


def test_solver_settings_without_a_recipe_form_are_refused(tmp_path):
    from dlspec.caffe.importer import convert

    cases = {"iter_size: 0\n": "E857", 'type: "AdaDelta"\nmomentum: 1.0\n': "E857", 'lr_policy: "cosine"\n': "E857",
             'lr_policy: "step"\n': "E857", 'type: "AdaGrad"\nmomentum: 0.9\nweight_decay: 0.1\n'
             'regularization_type: "L1"\n': None}
    for extra, code in cases.items():
        solver = tmp_path / "s.prototxt"
        solver.write_text(f"base_lr: 0.1\nmax_iter: 10\n{extra}")
        if code is None:  # L1 without a decay_mult: the recipe's l1
            result, _ = convert(FIXTURES / "lenet_train_test.prototxt", tmp_path / "n.dls",
                                input_shapes={"data": [1, 28, 28]}, solver=solver)
            assert "l1 = 0.1" in result.text
            continue
        with pytest.raises(DlspecError) as info:
            convert(FIXTURES / "lenet_train_test.prototxt", tmp_path / "n.dls", input_shapes={"data": [1, 28, 28]},
                    solver=solver)
        assert info.value.code == code, (extra, info.value.message)
    # a decay_mult under L1 regularization has no recipe form (the recipe's l1 is one for all)
    net = tmp_path / "lenet_train_test.prototxt"
    net.write_text((FIXTURES / "lenet_train_test.prototxt").read_text().replace("param { lr_mult: 2 }",
                                                                                 "param { lr_mult: 2 decay_mult: 0 }"))
    solver.write_text('base_lr: 0.1\nmax_iter: 10\nweight_decay: 0.1\nregularization_type: "L1"\n')
    with pytest.raises(DlspecError) as info:
        convert(net, tmp_path / "n.dls", input_shapes={"data": [1, 28, 28]}, solver=solver)
    assert info.value.code == "E858" and "decay_mult" in info.value.message


@pytest.mark.slow
def test_lenet_with_its_solver_trains_on_digits(tmp_path):
    from click.testing import CliRunner

    from dlspec.cli import main

    spec = tmp_path / "lenet.dls"
    r = CliRunner().invoke(main, ["import", str(FIXTURES / "lenet_train_test.prototxt"), "--input-shape", "data=1,28,28",
                                  "--solver", str(FIXTURES / "lenet_solver.prototxt"), "-o", str(spec)])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, ["train", str(spec), "--out", str(tmp_path / "run"), "--epochs", "3", "--quiet",
                                  "--device", "cpu"])
    assert r.exit_code == 0, r.output
    import json

    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines() if x.strip()]
    assert lines and lines[-1]["val_accuracy"] > 0.5


def test_verify_accepts_caffe_as_a_backend():
    from dlspec.program import compile_file
    from dlspec.verify import parse_backends, verify

    assert parse_backends("torch,opencv") == ["torch", "caffe"]
    g = compile_file(ROOT / "specs" / "lenet5.dls").models["LeNet5"]
    result = verify(g, ["torch", "caffe"])
    assert result.passed and any(r.backend == "caffe" for r in result.rows)


def test_cli_refuses_hostile_files_with_a_code_and_writes_nothing(tmp_path):
    from click.testing import CliRunner

    from dlspec.cli import main

    bad = tmp_path / "bad.caffemodel"
    bad.write_bytes(b"\x0a\xff\xff\xff\xff\x0f" + b"\x00" * 16)  # a length prefix far past the end
    spec = tmp_path / "n.dls"
    r = CliRunner().invoke(main, ["import", str(FIXTURES / "lenet.prototxt"), "--weights", str(bad), "-o", str(spec)])
    assert r.exit_code == 1 and "E852" in r.output and "Traceback" not in r.output
    assert not spec.exists() and not spec.with_suffix(".safetensors").exists()
    r = CliRunner().invoke(main, ["import", str(bad), "-o", str(spec)])
    assert r.exit_code != 0 and "Traceback" not in r.output


@pytest.mark.slow
def test_bvlc_alexnet_layout_has_the_published_parameter_count(tmp_path):
    from dlspec.caffe.importer import convert

    result, ci = convert(FIXTURES / "alexnet_bvlc.prototxt", tmp_path / "alexnet.dls")
    assert sum(int(v.size) for v in result.weights.values()) == 60_965_224  # BVLC AlexNet, as published
    assert [int(d) for d in result.graph.values[result.graph.outputs[0].value].shape[1:]] == [1000]


# ---- solver features the recipe language gained: accumulate (iter_size), adadelta, decay_groups ----

ACCUMULATE = '''model Tiny {
    input x: float32[batch, 1, 8, 8]
    y = x -> flatten() -> dense(16) as fc1 -> relu() -> dense(10) as fc2
    output y
}
train Tiny {
    data      = builtin("digits", size=8, split=[0.7, 0.15, 0.15])
    loss      = cross_entropy()
    optimizer = sgd(lr=0.1, momentum=0.9, weight_decay=0.01)
    schedule  = caffe_lr(policy="step", gamma=0.5, stepsize=10)
    decay_groups = {"fc2.bias": 0.0, "fc1.*": 0.02}
    epochs    = 1
    BATCH
    seed      = 3
}
'''


def _train_tiny(tmp_path: Path, batch: str, backend: str) -> dict[str, np.ndarray]:
    import torch

    from dlspec.data import load_data
    from dlspec.program import compile_source
    from dlspec.source import SourceFile
    from dlspec.weights import load_numpy

    prog = compile_source(SourceFile(str(tmp_path / "tiny.dls"), ACCUMULATE.replace("BATCH", batch)))
    cfg = prog.recipes[-1]
    graph = prog.recipe_graphs[cfg.name]
    bundle = load_data(cfg.data, cfg.seed, tmp_path)
    run = tmp_path / f"{backend}-{len(batch)}-{abs(hash(batch))}"
    if backend == "torch":
        from dlspec.train.torch_loop import Trainer

        Trainer(graph, cfg, bundle, run, torch.device("cpu"), cfg.seed, progress=False, echo=lambda *a: None).fit()
    else:
        from dlspec.train.tf_loop import Trainer

        Trainer(graph, cfg, bundle, run, "/CPU:0", progress=False, echo=lambda *a: None).fit()
    return load_numpy(run / "last.safetensors")


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["torch", "tf"])
def test_accumulate_2_at_batch_8_trains_as_batch_16(tmp_path, backend):
    """Caffe's iter_size: the gradients of `accumulate` batches make one step, each batch's mean
    loss weighted by its share (1,257 examples: the last step is one batch of 8 and one of 1, as
    the 9 of batch 16's last); caffe_lr counts optimizer steps; decay_groups apply in both runs."""
    a = _train_tiny(tmp_path, "batch = 16", backend)
    b = _train_tiny(tmp_path, "batch = 8\n    accumulate = 2", backend)
    c = _train_tiny(tmp_path, "batch = 8", backend)
    for k in a:
        np.testing.assert_allclose(b[k], a[k], rtol=0, atol=1e-6, err_msg=k)
    assert max(float(np.abs(c[k] - a[k]).max()) for k in a) > 1e-3  # batch 8 alone trains differently


def test_accumulation_windows_weigh_each_batch_by_its_share():
    from types import SimpleNamespace

    from dlspec.train.torch_loop import Trainer

    t = SimpleNamespace(cfg=SimpleNamespace(accumulate=3, batch=4))
    # 10 examples, batches of 4, 4, 2: one step of all three
    got = [Trainer._window(t, s, 10) for s in (1, 2, 3)]
    assert got == [(True, False, 0.4), (False, False, 0.4), (False, True, 0.2)]
    # 14 examples: a full step (4, 4, 4) then a step of one batch of 2
    assert Trainer._window(t, 4, 14) == (True, True, 1.0)
    assert Trainer._window(SimpleNamespace(cfg=SimpleNamespace(accumulate=1, batch=4)), 2, 10) == (True, True, 1.0)


def _caffe_adadelta(p, grads, lr, momentum, delta, wd):
    """Caffe's AdaDeltaSolver::ComputeUpdateValue with Regularize (L2), written out in numpy."""
    h_g, h_u = np.zeros_like(p), np.zeros_like(p)
    for g in grads:
        g = g + wd * p
        h_g = momentum * h_g + (1 - momentum) * g * g
        upd = np.sqrt((h_u + delta) / (h_g + delta)) * g
        h_u = momentum * h_u + (1 - momentum) * upd * upd
        p = p - lr * upd
    return p


def test_adadelta_steps_equal_caffes_formula_in_both_trainers():
    import tensorflow as tf
    import torch

    from dlspec.ir.training import Adadelta
    from dlspec.train.tf_optim import TorchRules
    from dlspec.train.torch_loop import make_optimizer

    rng = np.random.default_rng(0)
    start = rng.normal(size=(3, 4))
    grads = [rng.normal(size=(3, 4)) for _ in range(5)]
    cfg = Adadelta(lr=0.5, rho=0.95, eps=1e-6, weight_decay=0.01)
    want = _caffe_adadelta(start, grads, 0.5, 0.95, 1e-6, 0.01)
    tp = torch.nn.Parameter(torch.tensor(start, dtype=torch.float64))
    opt = make_optimizer(cfg, [{"params": [tp], "lr": cfg.lr}])
    tv = tf.Variable(start.astype(np.float32))
    rules = TorchRules(cfg, [tv], [0], [cfg.lr])
    for g in grads:
        tp.grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
        rules.apply([tf.constant(g.astype(np.float32))])
    np.testing.assert_allclose(tp.detach().numpy(), want, rtol=1e-12)
    np.testing.assert_allclose(tv.numpy(), want, rtol=1e-5, atol=1e-6)


def test_decay_groups_give_each_parameter_its_weight_decay_in_both_trainers():
    import tensorflow as tf
    import torch

    from dlspec.ir.training import SGD
    from dlspec.train.tf_optim import TorchRules
    from dlspec.train.torch_loop import make_optimizer, param_groups

    class Two(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = torch.nn.Linear(2, 2)

    m = Two()
    with torch.no_grad():
        m.conv1.weight.fill_(1.0)
        m.conv1.bias.fill_(1.0)
    groups = param_groups(m, None, 0.1, {"conv1.bias": 0.2}, {"conv1.bias": 0.0, "conv1": 0.5})
    assert sorted((g["lr"], g.get("weight_decay")) for g in groups) == [(0.1, 0.5), (0.2, 0.0)]
    cfg = SGD(lr=0.1, weight_decay=0.01)
    opt = make_optimizer(cfg, groups)
    for p in m.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    assert torch.allclose(m.conv1.weight, torch.full((2, 2), 1 - 0.1 * 0.5))  # decayed at 0.5
    assert torch.allclose(m.conv1.bias, torch.ones(2))  # decay 0 (Caffe's decay_mult: 0 on biases)
    tv = [tf.Variable(np.ones((2, 2), np.float32)), tf.Variable(np.ones(2, np.float32)), tf.Variable(np.ones(2, np.float32))]
    rules = TorchRules(cfg, tv, [0, 0, 0], [0.1], [0.5, 0.0, None])
    rules.apply([tf.zeros_like(v) for v in tv])
    np.testing.assert_allclose([float(v.numpy().reshape(-1)[0]) for v in tv], [0.95, 1.0, 1 - 0.1 * 0.01], rtol=1e-6)


def test_solver_iter_size_adadelta_and_decay_mult_import_as_recipe_keys(tmp_path):
    from dlspec.caffe.importer import convert
    from dlspec.caffe.solver import solver_text
    from dlspec.program import compile_source
    from dlspec.source import SourceFile

    solver = tmp_path / "solver.prototxt"
    solver.write_text('net: "lenet_train_test.prototxt"\nbase_lr: 1.0\nmomentum: 0.95\ndelta: 1e-6\ntype: "AdaDelta"\n'
                      'weight_decay: 0.0005\nlr_policy: "fixed"\niter_size: 4\nmax_iter: 100\n')
    net = tmp_path / "lenet_train_test.prototxt"
    net.write_text((FIXTURES / "lenet_train_test.prototxt").read_text().replace(
        "param { lr_mult: 1 } param { lr_mult: 2 }", "param { lr_mult: 1 } param { lr_mult: 2 decay_mult: 0 }"))
    result, _ = convert(net, tmp_path / "n.dls", input_shapes={"data": [1, 28, 28]}, solver=solver)
    text = result.text
    assert "optimizer = adadelta(lr=1.0, rho=0.95, eps=1e-06, weight_decay=0.0005)" in text
    assert "accumulate = 4" in text
    # the biases have decay_mult 0, Caffe's usual setting (the weights keep 1)
    assert '"conv1.bias": 0.0' in text.split("decay_groups")[1]
    recipe = compile_source(SourceFile(str(tmp_path / "n.dls"), text)).recipes[0]
    assert recipe.accumulate == 4 and recipe.optimizer.type == "adadelta"
    assert recipe.decay_groups["ip2.bias"] == 0.0
    # batch 64 × iter_size 4: ceil(ceil(1257 / 64) / 4) = 5 iterations an epoch, 100 iterations = 20 epochs
    assert recipe.batch == 64 and recipe.epochs == 20
    out = solver_text(recipe.model_copy(update={"decay_groups": {}, "lr_groups": {}}), result.graph)
    assert 'type: "AdaDelta"' in out and "iter_size: 4" in out and "momentum: 0.95" in out and "max_iter: 100" in out


def test_recipe_checks_accumulate_and_decay_groups(tmp_path):
    from dlspec.program import compile_source
    from dlspec.source import SourceFile

    for text in (ACCUMULATE.replace("BATCH", "batch = 8\n    accumulate = 0"),
                 ACCUMULATE.replace("BATCH", "batch = 8").replace('"fc1.*": 0.02', '"fc1.*": -1.0')):
        with pytest.raises(DlspecError) as info:
            compile_source(SourceFile(str(tmp_path / "t.dls"), text))
        assert info.value.code == "E410", info.value.message


# ---- export of the ops BVLC Caffe has no layer for, written with the layers it has ----

CLIP_PAD_UP = '''model M {
    input x: float32[batch, 3, 7, 9]
    a = x -> conv2d(4, 3, padding=1) as c1 -> relu6() as r6
    b = a -> hardtanh(min=-0.5, max=0.25) as ht
    c = b -> pad([1, 2, 0, 3]) as p1 -> pad(2, value=0.5) as p2
    d = c -> upsample(2) as up -> maximum(scalar=0.1) as mx -> minimum(scalar=0.2) as mn
    e = a -> upsample(size=[14, 27]) as up2
    output d
    output e
}
'''


def test_relu6_hardtanh_pad_upsample_export_and_equal_pytorch(tmp_path):
    from dlspec.backends import get_backend
    from dlspec.caffe.backend import prototxt_text, write_net
    from dlspec.program import compile_source
    from dlspec.source import SourceFile
    from dlspec.verify import fresh_weights, make_inputs

    g = compile_source(SourceFile(str(tmp_path / "m.dls"), CLIP_PAD_UP)).models["M"]
    from dlspec.caffe.backend import CAFFE_OPS

    assert {"relu6", "hardtanh", "pad", "upsample", "conv2d"} <= CAFFE_OPS and "conv3d" not in CAFFE_OPS
    w = fresh_weights(g, seed=1)
    x = {k: v * 5 for k, v in make_inputs(g, {"batch": 2}).items()}  # past the clip bounds
    ref = get_backend("torch").run(g, w, x)
    got = get_backend("caffe").run(g, w, x)
    for k in ref:
        assert got[k].shape == ref[k].shape
        assert rel(got[k], ref[k]) <= 1e-5, (k, rel(got[k], ref[k]))
    text = prototxt_text(write_net(g, w)[0])
    assert 'type: "Deconvolution"' in text and "Clip" not in text  # layers BVLC Caffe has


@pytest.mark.parametrize("line, what", [
    ("    y = x -> upsample(2, mode=\"bilinear\") as up\n", "bilinear"),
    ("    y = x -> pad(1, mode=\"reflect\") as p\n", "reflect"),
    ("    y = x -> upsample(size=[5, 9]) as up\n", "integer factor"),
])
def test_exports_caffe_cannot_express_are_refused_at_their_line(tmp_path, line, what):
    from dlspec.backends import get_backend
    from dlspec.program import compile_source
    from dlspec.source import SourceFile

    spec = f"model M {{\n    input x: float32[batch, 3, 4, 6]\n{line}    output y\n}}\n"
    g = compile_source(SourceFile(str(tmp_path / "m.dls"), spec)).models["M"]
    with pytest.raises(DlspecError) as info:
        get_backend("caffe").generate(g)
    d = info.value.diagnostics[0]
    assert d.code == "E790" and what in d.message and d.span is not None and d.span.line == 3, d


# ---- hostile files: each a coded error naming the file (and, for a prototxt, the line) ----

def _varint(n: int) -> bytes:
    out = b""
    while True:
        b, n = n & 0x7F, n >> 7
        if not n:
            return out + bytes([b])
        out += bytes([b | 0x80])


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


HOSTILE_CAFFEMODELS = {
    # NetParameter.layer (100) sent as a varint: an unknown field, so no layers
    "wrong_wire_type_net": (_varint(100 << 3 | 0) + _varint(5), "E852", "holds no layers"),
    # a layer whose name (1) is a varint: it decodes as a layer without a name or blobs
    "wrong_wire_type_layer": (_field(100, _varint(1 << 3 | 0) + _varint(3)), "E854", "none of the net's"),
    # conv1's blob claims the shape [10^6, 10^6]: 10^12 floats
    "absurd_blob_shape": (_field(100, _field(1, b"conv1") + _field(7, _field(7, _field(1, _varint(10**6) * 2)))),
                          "E859", "1,000,000,000,000 elements"),
    # a packed data field whose length claims 4·10^12 bytes, far past the end of the file
    "absurd_length": (_field(100, _field(1, b"conv1") + _field(7, _varint(5 << 3 | 2) + _varint(4 * 10**12))),
                      "E852", "not a caffemodel"),
    "huge_repeated_layers": (_field(100, b"") * 150_000, "E859", "150,000 layers"),
    # start-group tags nested 100,000 deep (protobuf's recursion limit)
    "deep_groups": (bytes([9 << 3 | 3]) * 100_000, "E852", "not a caffemodel"),
    "truncated_in_a_varint": (_field(100, _field(1, b"conv1"))[:-3] + b"\xff", "E852", "not a caffemodel"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_CAFFEMODELS))
def test_hostile_caffemodels_get_coded_errors_naming_the_file(tmp_path, case):
    from dlspec.caffe.importer import import_net

    data, code, words = HOSTILE_CAFFEMODELS[case]
    bad = tmp_path / f"{case}.caffemodel"
    bad.write_bytes(data)
    with pytest.raises(DlspecError) as info:
        import_net(FIXTURES / "lenet.prototxt", bad)
    msg = info.value.message
    assert info.value.code == code and words in msg, msg
    assert bad.name in msg or "lenet.prototxt" in msg


HEADER = 'input: "data"\ninput_shape { dim: 1 dim: 3 dim: 8 dim: 8 }\n'
HOSTILE_PROTOTXTS = {
    "bad_enum": (HEADER + 'layer {\n  name: "p"\n  type: "Pooling"\n  bottom: "data" top: "p"\n'
                 '  pooling_param { pool: MAXIMUM kernel_size: 2 }\n}\n', "E851", ":7:", "MAXIMUM"),
    "bad_v1_enum": (HEADER + 'layers {\n  name: "r"\n  type: RELUX\n  bottom: "data" top: "r"\n}\n', "E851", ":5:", "RELUX"),
    "absurd_conv": (HEADER + 'layer { name: "c" type: "Convolution" bottom: "data" top: "c"\n'
                    '  convolution_param { num_output: 1000000000 kernel_size: 3 } }\n', "E859", ":3:", "27,000,000,000"),
    "absurd_input": ('input: "data"\ninput_shape { dim: 1 dim: 100000 dim: 100000 dim: 100000 }\n'
                     'layer { name: "f" type: "InnerProduct" bottom: "data" top: "f" inner_product_param { num_output: 2 } }\n',
                     "E856", ":1:", "values per example"),
    "huge_repeated_dims": ('input: "data"\ninput_shape { ' + "dim: 2 " * 100_000 + '}\n'
                           'layer { name: "r" type: "ReLU" bottom: "data" top: "r" }\n', "E856", ":1:", "100,000 axes"),
    "enormous_layer_count": ('input: "data"\ninput_shape { dim: 1 dim: 1 }\n' + 'layer { }\n' * 100_001, "E859", "",
                             "layers"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_PROTOTXTS))
def test_hostile_prototxts_get_coded_errors_with_file_and_line(tmp_path, case):
    from dlspec.caffe.importer import import_net

    text, code, line, words = HOSTILE_PROTOTXTS[case]
    p = tmp_path / f"{case}.prototxt"
    p.write_text(text)
    with pytest.raises(DlspecError) as info:
        import_net(p)
    msg = info.value.message
    assert info.value.code == code and words in msg and f"{p}{line}" in msg, msg


def test_a_caffemodel_missing_some_layers_fills_them_and_warns(tmp_path):
    from dlspec.caffe.importer import import_net
    from dlspec.caffe.schema import message

    good = tmp_path / "good.caffemodel"
    random_caffemodel(FIXTURES / "lenet.prototxt", good)
    net = message("NetParameter")
    net.ParseFromString(good.read_bytes())
    del net.layer[-1]  # the last InnerProduct: a layer being fine-tuned
    part = tmp_path / "part.caffemodel"
    part.write_bytes(net.SerializeToString())
    ci = import_net(FIXTURES / "lenet.prototxt", part)
    assert any(w.startswith("W852") and "ip2" in w for w in ci.warnings), ci.warnings


# ---- BVLC model-zoo nets (the published architectures, in the zoo files' formats) ----

def _learned(ci) -> int:
    """Learned parameters: every blob but BatchNorm's statistics and scale factor."""
    return sum(int(a.size) for lay in ci.imported.layers for k, a in lay.params.items() if not k.startswith("running_"))


@pytest.mark.parametrize("net, count", [
    ("caffenet_v1_deploy", 60_965_224),  # bvlc_reference_caffenet, legacy V1 `layers` / input_dim form
    ("googlenet_deploy", 6_998_552),  # bvlc_googlenet deploy, without the two auxiliary heads
    # ResNet-50: convolutions (no biases) + fc1000 + the Scale layers' learned scale and bias (the
    # affine part of batch norm); BatchNorm's mean, variance (53,120 values) and scale-factor blobs
    # (53) are statistics, not learned, so they are left out: the published 25,557,032
    ("resnet50_deploy", 25_557_032),
])
def test_bvlc_zoo_nets_import_with_their_published_parameter_counts(net, count):
    from dlspec.caffe.importer import import_net

    ci = import_net(FIXTURES / f"{net}.prototxt")
    assert _learned(ci) == count
    out = ci.imported.types[ci.imported.outputs[0][1]]
    assert [ci.imported.outputs[0][0], *out.shape[1:]] == ["prob", 1000]
    if net == "resnet50_deploy":
        stats = sum(math.prod(s) for name, shapes in ci.blob_shapes.items() if name.startswith("bn") for s in shapes)
        assert stats == 53_120 + 53  # mean and variance per channel, one scale factor per BatchNorm
        assert sum(math.prod(s) for shapes in ci.blob_shapes.values() for s in shapes) == count + stats


def _without_softmax(proto: Path, tmp_path: Path) -> Path:
    """The zoo net without its last layer (the Softmax `prob`), so that the logits are compared:
    on random weights the probabilities are nearly uniform and would hide differences."""
    text = proto.read_text()
    cut = text.rindex('layer {\n  name: "prob"') if 'layer {\n  name: "prob"' in text else text.rindex('layers {\n  name: "prob"')
    out = tmp_path / proto.name
    out.write_text(text[:cut])
    return out


def _zoo_against_opencv(tmp_path, net, logits):
    from dlspec.backends import get_backend
    from dlspec.caffe.importer import convert

    proto = _without_softmax(FIXTURES / f"{net}.prototxt", tmp_path)
    model = tmp_path / f"{net}.caffemodel"
    random_caffemodel(proto, model)
    result, ci = convert(proto, tmp_path / f"{net}.dls", model)
    x = _inputs(result, batch=1)
    (ref,) = opencv_forward(proto, model, x, [logits])
    g = result.graph
    got = get_backend("torch").run(g, result.weights, {g.inputs[0].name: x})[result.output_names[logits]]
    assert got.shape == ref.shape == (1, 1000)
    assert np.abs(ref).max() > 0.1  # logits that differ, not a constant
    assert rel(got, ref) <= 1e-4, rel(got, ref)


def test_googlenet_zoo_net_equals_opencv_on_random_weights(tmp_path):
    _zoo_against_opencv(tmp_path, "googlenet_deploy", "loss3/classifier")


@pytest.mark.slow
@pytest.mark.parametrize("net, logits", [("caffenet_v1_deploy", "fc8"), ("resnet50_deploy", "fc1000")])
def test_big_zoo_nets_equal_opencv_on_random_weights(tmp_path, net, logits):
    _zoo_against_opencv(tmp_path, net, logits)


SOFTPLUS = '''model M {
    input x: float32[batch, 6]
    output x -> dense(5) as fc -> softplus() as sp
}
'''


def test_softplus_is_bnll_both_ways_and_stays_finite_where_exp_overflows(tmp_path):
    from dlspec.backends import get_backend
    from dlspec.caffe.backend import prototxt_text, write_net
    from dlspec.caffe.importer import import_net
    from dlspec.program import compile_source
    from dlspec.source import SourceFile
    from dlspec.verify import fresh_weights

    g = compile_source(SourceFile(str(tmp_path / "m.dls"), SOFTPLUS)).models["M"]
    w = fresh_weights(g, seed=3)
    x = {"x": np.linspace(-300, 300, 12, dtype=np.float32).reshape(2, 6)}  # exp(x) is inf in float32 past 88
    (ref,) = get_backend("torch").run(g, w, x).values()
    (got,) = get_backend("caffe").run(g, w, x).values()
    assert np.isfinite(ref).all() and ref.max() > 100
    assert rel(got, ref) <= 1e-5
    net = write_net(g, w)[0]
    assert 'type: "BNLL"' in prototxt_text(net)
    proto = tmp_path / "m.prototxt"
    proto.write_text(prototxt_text(net))
    ops = {layer.op for layer in import_net(proto).imported.layers}
    assert "softplus" in ops and not {"exp", "log"} & ops


TO_SIZE = """model M {
    input x: float32[batch, 2, 7, 9], y: float32[batch, 3, 4, 6]
    output a = y -> pad_to(x) -> relu(), b = x -> crop_to(y) -> conv2d(3, 1) as mix
}
"""

CROP_NET = """name: "crops"
input: "data"
input_shape { dim: 1 dim: 2 dim: 9 dim: 8 }
layer { name: "pool" type: "Pooling" bottom: "data" top: "pool" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "centre" type: "Crop" bottom: "data" bottom: "pool" top: "centre" crop_param { axis: 2 offset: 2 } }
layer { name: "fcn" type: "Crop" bottom: "data" bottom: "pool" top: "fcn" crop_param { axis: 2 offset: 1 offset: 3 } }
layer { name: "corner" type: "Crop" bottom: "data" bottom: "pool" top: "corner" crop_param { axis: 3 } }
"""


def test_pad_to_and_crop_to_export_as_caffe_layers_and_crop_imports_at_every_offset(tmp_path):
    from dlspec.backends import get_backend
    from dlspec.caffe.backend import prototxt_text, write_net
    from dlspec.caffe.importer import import_net
    from dlspec.program import compile_source
    from dlspec.source import SourceFile
    from dlspec.verify import fresh_weights, make_inputs

    g = compile_source(SourceFile(str(tmp_path / "m.dls"), TO_SIZE)).models["M"]
    w = fresh_weights(g, seed=2)
    x = make_inputs(g, {"batch": 2})
    ref = get_backend("torch").run(g, w, x)
    got = get_backend("caffe").run(g, w, x)
    for k in ref:
        assert got[k].shape == ref[k].shape and rel(got[k], ref[k]) <= 1e-5, k
    assert 'type: "Crop"' in prototxt_text(write_net(g, w)[0])

    # a Crop at the centre offsets is crop_to; FCN's offsets and a crop of one axis are splits
    proto = tmp_path / "crops.prototxt"
    proto.write_text(CROP_NET)
    ci = import_net(proto)
    ops = [layer.op for layer in ci.imported.layers]
    assert ops.count("crop_to") == 1 and ops.count("split") == 3, ops
    model = tmp_path / "crops.caffemodel"
    random_caffemodel(proto, model)
    data = np.random.default_rng(4).normal(size=(1, 2, 9, 8)).astype(np.float32)
    want = opencv_forward(proto, model, data, ["centre", "fcn", "corner"])
    assert [a.shape for a in want] == [(1, 2, 5, 4), (1, 2, 5, 4), (1, 2, 9, 4)]  # Caffe's ceil pooling: 5 rows
    np.testing.assert_array_equal(want[1], data[:, :, 1:6, 3:7])  # the runtime agrees on the offsets
    from dlspec.caffe.importer import convert

    result, _ = convert(proto, tmp_path / "crops.dls")  # the spec written, compiled back and verified
    g2 = result.graph
    out = get_backend("torch").run(g2, result.weights, {g2.inputs[0].name: data})
    for name, w_k in zip(["centre", "fcn", "corner"], want):
        np.testing.assert_array_equal(out[result.output_names[name]], w_k)
