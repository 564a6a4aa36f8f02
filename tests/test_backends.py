"""The backend interface and registry: every registered backend implements the one interface and
lowers every op of the catalogue; an unsupported op is one E701 listing every such layer with its
location; lowering tables refuse unknown or doubled ops; the registry imports no framework."""

from __future__ import annotations

import subprocess
import sys

import pytest

from dlspec import DlspecError, compile_source
from dlspec.backends import ALIASES, BACKENDS, Backend, get_backend, resolve
from dlspec.backends.lowering import Lowerings, unsupported_error
from dlspec.ir.ops import REGISTRY
from dlspec.source import SourceFile

SRC = """model M {
    input x: float32[batch, 8]
    h = x -> dense(4) as fc1 -> relu()
    y = h -> dense(3) as fc2 -> relu() -> softmax()
    output y
}
"""


def _graph():
    return compile_source(SourceFile("m.dls", SRC)).models["M"]


@pytest.mark.parametrize("name", list(BACKENDS))
def test_every_backend_implements_the_interface_and_lowers_the_catalogue(name):
    backend = get_backend(name)
    assert isinstance(backend, Backend)
    assert backend.name == name
    assert backend.supported_ops() == set(REGISTRY)


@pytest.mark.parametrize("alias,name", sorted(ALIASES.items()))
def test_aliases_resolve_to_registered_backends(alias, name):
    assert resolve(alias) == name and name in BACKENDS
    assert get_backend(alias) is get_backend(name)


def test_unknown_target_is_E905_with_a_suggestion():
    with pytest.raises(DlspecError) as info:
        get_backend("torhc")
    assert info.value.code == "E905" and "torhc" in info.value.message
    assert "torch" in (info.value.hint or "")


def test_an_unsupported_op_lists_every_layer_at_its_location():
    table = Lowerings("partial")
    for op in REGISTRY:
        if op != "relu":
            table.add(op, lambda *a: None)
    problem = unsupported_error(_graph(), table)
    assert problem is not None and problem.code == "E701"
    assert len(problem.diagnostics) == 2  # both relu layers, in one error
    lines = sorted(d.span.line for d in problem.diagnostics)
    assert lines == [3, 4]
    assert all("relu" in d.message and "partial" in d.message for d in problem.diagnostics)
    assert unsupported_error(_graph(), _full_table()) is None


def _full_table() -> Lowerings:
    table = Lowerings("full")
    for op in REGISTRY:
        table.add(op, lambda *a: None)
    return table


def test_a_backend_missing_a_lowering_refuses_the_graph_before_writing_source(monkeypatch):
    from dlspec.backends import torch as tb

    monkeypatch.delitem(tb.LOWERINGS._table, "relu")
    with pytest.raises(DlspecError) as info:
        tb.generate(_graph())
    assert info.value.code == "E701"
    assert [d.span.line for d in info.value.diagnostics] == [3, 4]


def test_lowering_tables_refuse_unknown_and_doubled_ops():
    table = Lowerings("t")
    with pytest.raises(RuntimeError, match="not an op of the catalogue"):
        table.add("relu7", lambda: None)
    table.add("relu", lambda: None)
    with pytest.raises(RuntimeError, match="twice"):
        table.add("relu", lambda: None)
    with pytest.raises(RuntimeError, match="before lowering it"):
        table.beside("to_x", "dense")(lambda: None)


def _backend_params():
    """Every registered backend; those whose runtime lives in an interpreter the suite builds
    (MXNet: tests/mxnet_env.py) are slow tests."""
    for name in BACKENDS:
        yield pytest.param(name, id=name, marks=[pytest.mark.slow] if name == "mxnet" else [])


@pytest.mark.parametrize("name", _backend_params())
def test_weights_round_trip_through_every_backend_interface(name, request):
    import numpy as np

    from dlspec.verify import fresh_weights, make_inputs

    if name == "mxnet":
        request.getfixturevalue("mxnet_python")  # builds the MXNet interpreter when it is missing
    g = _graph()
    weights = fresh_weights(g, seed=1)
    inputs = make_inputs(g, {"batch": 3})
    ref = get_backend("torch").run(g, weights, inputs)
    backend = get_backend(name)
    live = backend.build(g, weights)
    got = backend.read_weights(live, g)
    assert set(got) == set(weights)
    for k in weights:
        np.testing.assert_allclose(got[k], weights[k], rtol=0, atol=0)
    out = backend.run(g, weights, inputs)
    np.testing.assert_allclose(out["y"], ref["y"], rtol=1e-5, atol=1e-6)


def test_the_registry_imports_no_framework():
    code = ("import sys; from dlspec.backends import get_backend; b = get_backend('torch'); "
            "b.generate(__import__('dlspec').compile_source(__import__('dlspec.source', fromlist=['x']).SourceFile("
            "'m.dls', 'model M { input x: float32[batch, 2]\\n y = x -> dense(2)\\n output y }')).models['M']); "
            "print(sorted(m for m in ('torch', 'tensorflow', 'keras', 'onnx') if m in sys.modules))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"
