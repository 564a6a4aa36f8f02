"""Optimization passes: each pass fires on a small spec written to trigger it (node counts
prove it), never mutates its input, re-validates, and keeps every model's outputs — run through
PyTorch in eval mode and through onnxruntime with the same weights before and after each pass —
within 1e-5 relative.
Also `dlspec ir --after`, `dlspec explain` and the internal-error path of the validator.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from dlspec.api import Spec
from dlspec.backends import onnx as onnx_backend
from dlspec.backends.torch import build_module, canonical_state
from dlspec.errors import DlspecError
from dlspec.ir.dims import subs
from dlspec.passes import LEVELS, PASSES, Reports, optimize, passes_until, run_passes
from dlspec.passes.rewrite import Change, GraphEdit, PassResult
from dlspec.program import compile_file, compile_source
from dlspec.source import SourceFile

from .helpers import ROOT, large_marks, spec_files

SPECS = spec_files()
RTOL = 1e-5

HAND = """
model Permutes {
    input x: float32[batch, 4, 6]
    y = x -> permute([0, 2, 1]) as p1 -> permute([0, 2, 1]) as p2 -> dense(3) as fc
    z = x -> permute([0, 2, 1]) as q1 -> permute([1, 0, 2]) as q2 -> relu()
    output y, z
}

model Reshapes {
    input x: float32[batch, 64]
    input img: float32[batch, 2, 4, 4]
    y = x -> reshape([4, 16]) as r1 -> reshape([8, 8]) as r2 -> relu()
          -> reshape([2, 32]) as r3 -> reshape([64]) as r4 -> dense(5) as fc
    z = img -> flatten() as f1 -> reshape([4, 8]) as r5 -> relu()
    w = x -> reshape([64]) as same -> unsqueeze(1) as u -> squeeze(1) as s -> dense(2) as fc2
    output y, z, w
}

model Duplicates {
    input x: float32[batch, 8]
    a = relu(x)
    b = relu(x)
    c = x * 2
    d = x * 2
    e = a + c
    f = c + a
    output (a + b) * (c - d + 1) + e * f
}

model Arith {
    input x: float32[batch, 8]
    h = x * 2 * 0.5 + 1 - 1
    y = h -> identity() -> dense(4) as fc -> dropout(0.0) -> relu()
    k = x / 4 / 0.5 * 3 - 2 - 0.5
    output y, k
}

model Folds {
    input image: float32[batch, 3, 8, 8]
    input seq: float32[batch, 4, 10]
    f = image
        -> conv2d(4, kernel=3, padding=1, bias=false) as conv -> batchnorm2d() as bn -> relu()
        -> conv2d(4, kernel=3, padding=1, groups=2) as gconv -> batchnorm2d() as gbn -> relu()
        -> conv_transpose2d(4, 2, stride=2, groups=2) as up -> batchnorm2d() as bn_up -> relu()
        -> conv_transpose2d(2, 2, stride=2, bias=false) as up2 -> batchnorm2d(affine=false) as bn_up2
        -> flatten() -> dense(16) as fc -> batchnorm1d() as bn_fc -> dropout(0.5) -> relu() -> dense(3) as head
    s = seq -> conv1d(6, kernel=3) as c1 -> batchnorm1d() as bn_c1 -> global_avgpool1d() -> dropout(0.2) -> dense(2) as out2
    output f, s
}

model Guarded {
    input x: float32[batch, 3, 8, 8]
    input t: float32[batch, 5, 6]
    c = x -> conv2d(4, kernel=3, padding=1) as conv
    a = c -> batchnorm2d() as bn
    u = t -> dense(5) as fc -> batchnorm1d() as bn_seq
    i = identity(t)
    r1 = relu(t)
    r2 = relu(t)
    output a + c, u, i, r1, r2
}

model Dead {
    input x: float32[batch, 8]
    unused = x -> dense(3) as side -> relu()
    y = x -> dense(2) as fc
    output y
}
"""


@pytest.fixture(scope="module")
def hand():
    return compile_source(SourceFile("hand.dls", HAND)).models


# ---- running a graph through PyTorch ------------------------------------------------------------


def make_inputs(graph, batch: int = 2, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {}
    for gi in graph.inputs:
        shape = []
        for d in gi.type.shape:
            v = subs(d, {"batch": batch})
            shape.append(v if isinstance(v, int) else 5)
        if gi.type.dtype.startswith("int"):
            out[gi.name] = rng.integers(0, 2, size=shape).astype(gi.type.dtype)
        else:
            out[gi.name] = rng.standard_normal(shape).astype(gi.type.dtype)
    return out


def fresh_weights(graph, seed: int = 0) -> dict[str, np.ndarray]:
    """PyTorch's initialization, with batch-norm statistics and affine terms made non-trivial."""
    torch.manual_seed(seed)
    w = canonical_state(build_module(graph), graph)
    rng = np.random.default_rng(seed)
    for p in graph.params():
        node = graph.node(p.node)
        if node.op.startswith("batchnorm"):
            n = w[p.path].shape
            if p.name == "running_mean" or p.name == "bias":
                w[p.path] = (0.2 * rng.standard_normal(n)).astype(np.float32)
            else:
                w[p.path] = rng.uniform(0.5, 1.5, n).astype(np.float32)
    return w


def torch_outputs(graph, weights, inputs) -> dict[str, np.ndarray]:
    with torch.device("meta"):  # no random initialization: every parameter is loaded below
        module = build_module(graph)
    module = module.to_empty(device="cpu")
    missing, unexpected = module.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in weights.items()}, strict=False)
    assert not unexpected
    assert all(k.endswith("num_batches_tracked") for k in missing), missing
    module.eval()
    with torch.no_grad():
        y = module(*[torch.from_numpy(inputs[i.name]) for i in graph.inputs])
    if not isinstance(y, dict):
        y = {graph.outputs[0].name: y}
    return {k: v.numpy() for k, v in y.items()}


def assert_close(ref: dict[str, np.ndarray], got: dict[str, np.ndarray], where: str) -> None:
    assert ref.keys() == got.keys(), where
    for k in ref:
        assert ref[k].shape == got[k].shape, f"{where}: output {k}"
        scale = max(float(np.abs(ref[k]).max()), 1e-12)
        err = float(np.abs(ref[k] - got[k]).max()) / scale
        assert err <= RTOL, f"{where}: output {k} differs by {err:.2e} (relative)"


def onnx_outputs(graph, weights, inputs) -> dict[str, np.ndarray]:
    return onnx_backend.run(graph, weights, inputs)


def check_every_pass(graph, level: int = 2, batch: int = 2, onnx_each_pass: bool = True) -> Reports:
    """Run the level's passes one at a time; after each pass that changed the graph, the PyTorch
    and the onnxruntime outputs with the rewritten weights equal those before the pass. (With
    `onnx_each_pass` off — for the largest models, to keep the suite fast — onnxruntime compares
    the graph before the first pass with the graph after the last.)"""
    weights = fresh_weights(graph)
    inputs = make_inputs(graph, batch)
    before = torch_outputs(graph, weights, inputs)
    before_onnx = onnx_outputs(graph, weights, inputs)
    g, w = graph, weights
    all_reports = Reports(level=level)
    for name in LEVELS[level]:
        dump, wkeys = g.model_dump_json(), {k: v.copy() for k, v in w.items()}
        g2, w2, reports = run_passes(g, (name,), w, level)
        assert g.model_dump_json() == dump, f"{name} mutated its input graph"
        assert w.keys() == wkeys.keys() and all(np.array_equal(w[k], wkeys[k]) for k in w), f"{name} mutated the weights"
        all_reports.items.extend(reports.items)
        if g2 is not g:
            after = torch_outputs(g2, w2, inputs)
            assert_close(before, after, f"{graph.name} after {name} (PyTorch)")
            if onnx_each_pass:
                after_onnx = onnx_outputs(g2, w2, inputs)
                assert_close(before_onnx, after_onnx, f"{graph.name} after {name} (onnxruntime)")
                before_onnx = after_onnx
            before = after
        g, w = g2, w2
    if not onnx_each_pass and g is not graph:
        assert_close(before_onnx, onnx_outputs(g, w, inputs), f"{graph.name} after level {level} (onnxruntime)")
    return all_reports


def fired(reports: Reports) -> dict[str, int]:
    return {r.name: len(r.changes) for r in reports.items if r.changes}


# ---- each pass fires on its spec and keeps the outputs --------------------------------------------


def test_permute_pairs_cancel_or_merge(hand):
    g = hand["Permutes"]
    r = check_every_pass(g)
    assert fired(r) == {"cancel_permutes": 2}
    out, _, _ = optimize(g, 1)
    assert [n.op for n in out.nodes] == ["dense", "permute", "relu"]
    assert out.node("q2").attrs["dims"] == (2, 0, 1)
    assert out.node("fc").inputs == ("x",)


def test_reshape_chains_merge_and_noops_go(hand):
    g = hand["Reshapes"]
    r = check_every_pass(g)
    assert fired(r) == {"identities": 2, "merge_reshapes": 3, "dead_code": 1}
    out, _, _ = optimize(g, 1)
    assert len(g.nodes) == 13 and len(out.nodes) == 7
    assert [n.op for n in out.nodes].count("reshape") == 3
    assert out.node("r5").inputs == ("img",)
    assert out.node("fc2").inputs == ("x",)


def test_common_subexpressions_merge(hand):
    g = hand["Duplicates"]
    r = check_every_pass(g)
    assert fired(r) == {"cse": 3}  # relu(x) twice, x * 2 twice, a + c and c + a
    out, _, _ = optimize(g, 1)
    assert len(out.nodes) == len(g.nodes) - 3
    assert sum(n.op == "relu" for n in out.nodes) == 1


def test_scalar_chains_fold_and_neutral_ops_go(hand):
    g = hand["Arith"]
    r = check_every_pass(g)
    assert fired(r) == {"constant_fold": 5, "identities": 4}
    out, _, _ = optimize(g, 1)
    assert [n.op for n in out.nodes] == ["dense", "relu", "mul", "sub"]
    assert out.node("mul_2").attrs["scalar"] == pytest.approx(1.5)
    assert out.node("sub_2").attrs["scalar"] == pytest.approx(2.5)


def test_batchnorm_folds_into_conv_convt_dense_at_level_2(hand):
    g = hand["Folds"]
    r = check_every_pass(g, level=2)
    assert fired(r) == {"remove_dropout": 2, "fold_batchnorm": 6}
    out, w, reports = optimize(g, 2, fresh_weights(g))
    assert not any(n.op.startswith("batchnorm") or n.op == "dropout" for n in out.nodes)
    assert len(out.nodes) == len(g.nodes) - 8
    assert out.node("conv").attrs["bias"] is True and out.node("up2").attrs["bias"] is True
    removed, added, _ = reports.param_changes()
    assert set(added) == {"conv.bias", "up2.bias"}
    assert "bn.running_mean" in removed and "bn_up2.running_var" in removed
    assert set(w) == {p.path for p in out.params()}
    assert any("inference" in n for n in reports.notes())


def test_level_1_keeps_training_behaviour(hand):
    g = hand["Folds"]
    out, _, reports = optimize(g, 1)
    assert out is g and not reports.changed
    assert passes_until(1, None) == LEVELS[1]
    assert not any(PASSES[p].INFERENCE_ONLY for p in LEVELS[1])
    assert all(any(n.op == op for n in out.nodes) for op in ("batchnorm2d", "dropout"))


def test_guards_keep_what_must_stay(hand):
    g = hand["Guarded"]
    out, _, reports = optimize(g, 2, fresh_weights(g))
    # conv read twice, dense over a sequence axis, identity from input to output, duplicate outputs
    assert out is g and not reports.changed
    check_every_pass(g)


def test_dead_code_goes_with_its_parameters(hand):
    g = hand["Dead"]
    r = check_every_pass(g, level=1)
    assert fired(r) == {"dead_code": 2}
    out, w, reports = optimize(g, 1, fresh_weights(g))
    assert [n.name for n in out.nodes] == ["fc"]
    assert set(w) == {"fc.weight", "fc.bias"}
    assert reports.param_changes()[0] == ["side.weight", "side.bias"]
    assert any("side.weight" in n for n in reports.notes())


# ---- every spec keeps its outputs through every pass ------------------------------------------------


@pytest.mark.parametrize("spec", [pytest.param(s, id=s.stem, marks=large_marks(s.name)) for s in SPECS])
def test_every_spec_keeps_its_outputs(spec):
    graph = Spec(spec, compile_file(spec)).graph(None)
    params = sum(p.numel for p in graph.params())
    reports = check_every_pass(graph, level=2, batch=1 if params > 5_000_000 else 2, onnx_each_pass=params < 50_000_000)
    params = {p.path for p in graph.params()}
    after = {p.path for p in reports.items[-1].after.params()}
    removed, added, _ = Reports(items=reports.items).param_changes()
    assert set(removed) == params - after and set(added) == after - params
    # every parameter no pass touched keeps its path: old weights files keep fitting it
    touched = {n for r in reports.items for c in r.changes for n in c.nodes}
    assert all(p in after for p in params if p.rsplit(".", 1)[0] not in touched)


def test_resnet18_level_1_keeps_every_parameter_path():
    graph = compile_file(ROOT / "specs" / "resnet18.dls").models["ResNet18"]
    out, _, reports = optimize(graph, 1)
    assert [p.path for p in out.params()] == [p.path for p in graph.params()]
    assert fired(reports) == {"identities": 1}  # the flatten after global pooling
    out2, _, _ = optimize(graph, 2)
    assert len(out2.nodes) == len(graph.nodes) - 21


# ---- the validator catches a broken pass ------------------------------------------------------------


def _broken_pass(kind: str):
    def run(graph, weights):
        edit = GraphEdit(graph)
        node = next(n for n in graph.nodes if n.op == "relu")
        if kind == "dangling":
            edit.drop(node)
        else:  # a reshape-free rewrite that changes a type: relu reads the other input
            bad = node.model_copy(update={"inputs": ("img",)})
            edit.replace(node, bad)
        return PassResult(edit.build(), weights, [Change("removed", (node.name,), "broken")])

    return type("Broken", (), {"NAME": "broken", "SUMMARY": "", "INFERENCE_ONLY": False, "run": staticmethod(run)})


@pytest.mark.parametrize("kind, code", [("dangling", "E800"), ("retyped", "E801")])
def test_a_broken_pass_is_an_internal_error_naming_it(hand, monkeypatch, kind, code):
    monkeypatch.setitem(PASSES, "broken", _broken_pass(kind))
    with pytest.raises(DlspecError) as exc:
        run_passes(hand["Reshapes"], ("broken",))
    assert exc.value.code == code
    assert "`broken`" in exc.value.message


def test_unknown_pass_and_level():
    with pytest.raises(DlspecError) as exc:
        passes_until(2, "fold_batchnrom")
    assert exc.value.code == "E804" and "fold_batchnorm" in exc.value.hint
    with pytest.raises(DlspecError) as exc:
        passes_until(1, "fold_batchnorm")
    assert exc.value.code == "E805" and "--opt-level 2" in exc.value.hint
    with pytest.raises(DlspecError) as exc:
        optimize(compile_file(SPECS[0]).models.popitem()[1], 7)
    assert exc.value.code == "E803"


# ---- command line -------------------------------------------------------------------------------


def dlspec(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dlspec.cli", *args], capture_output=True, text=True, cwd=ROOT,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})


def test_ir_after_pass(tmp_path):
    spec = tmp_path / "hand.dls"
    spec.write_text(HAND)
    r = dlspec("ir", str(spec), "--model", "Folds", "--after", "remove_dropout")
    assert r.returncode == 0, r.stderr
    ops = [n["op"] for n in json.loads(r.stdout)["nodes"]]
    assert "dropout" not in ops and ops.count("batchnorm2d") == 4
    r = dlspec("ir", str(spec), "--model", "Folds", "--opt-level", "2")
    ops = [n["op"] for n in json.loads(r.stdout)["nodes"]]
    assert not any(o.startswith("batchnorm") for o in ops)
    r = dlspec("ir", str(spec), "--model", "Folds", "--after", "fold_batchnrm")
    assert r.returncode == 1 and "E804" in r.stderr and "fold_batchnorm" in r.stderr
    r = dlspec("ir", str(spec), "--model", "Folds", "--after", "fold_batchnorm", "--opt-level", "1")
    assert r.returncode == 1 and "E805" in r.stderr


def test_explain_lists_changes_and_counts():
    r = dlspec("explain", "specs/digits_cnn.dls", "--opt-level", "2", "--json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert [p["pass"] for p in data["passes"]] == list(LEVELS[2])
    fold = next(p for p in data["passes"] if p["pass"] == "fold_batchnorm")
    assert {c["nodes"][0] for c in fold["changes"]} == {"features.stage1.bn", "features.stage2.bn"}
    assert fold["after"]["params"] < fold["before"]["params"]
    assert data["after"]["nodes"] == data["before"]["nodes"] - 4
    assert data["after"]["flops_per_sample"] < data["before"]["flops_per_sample"]
    text = dlspec("explain", "specs/digits_cnn.dls", "--opt-level", "2")
    assert "folded    batchnorm2d `features.stage1.bn` folded into conv2d `features.stage1.conv`" in text.stdout
    assert "nodes            14 → 10 (-4)" in text.stdout
