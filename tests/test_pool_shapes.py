"""The shape rule of every windowed pooling op against PyTorch, over a grid of input sizes,
kernels, strides, paddings, dilations and ceil_mode; and a model whose shapes depend on the
ceil_mode rule (a last window starting inside the right padding is dropped) builds and runs."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from dlspec import compile_source
from dlspec.backends.torch import build_module
from dlspec.errors import AttrError, ShapeError
from dlspec.ir.dims import Sym
from dlspec.ir.ops import REGISTRY
from dlspec.ir.ops.pool import _Pool, pool_out
from dlspec.ir.types import TensorType
from dlspec.source import SourceFile

WINDOWED = sorted(name for name, op in REGISTRY.items() if isinstance(op, _Pool))


def _torch_fn(name: str):
    kind, n = name[:3], int(name[-2])
    return getattr(torch.nn.functional, f"{kind}_pool{n}d"), kind, n


def _grid(kind: str):
    dilations = (1, 2) if kind == "max" else (1,)
    yield from itertools.product(range(1, 10), (1, 2, 3, 4), (1, 2, 3), (0, 1, 2), dilations,
                                                    (False, True))


def _dlspec_shape(name: str, n: int, shape, attrs):
    op = REGISTRY[name]
    try:
        a = op.attrs_from_dict(attrs)
        op.validate_attrs(a)
        t = TensorType(shape=shape)
        op.check_inputs(a, [t])
        return tuple(op.infer(a, [t])[0].shape)
    except (AttrError, ShapeError):
        return None


@pytest.mark.parametrize("name", WINDOWED)
def test_pool_shape_rule_matches_pytorch(name: str) -> None:
    assert {"maxpool1d", "maxpool2d", "avgpool1d", "avgpool2d"} <= set(WINDOWED)
    fn, kind, n = _torch_fn(name)
    checked = refused = 0
    for size, k, s, p, d, ceil in _grid(kind):
        # sizes differ per axis (size, size + 1, ...) so that an axis mix-up shows
        sizes = tuple(size + i for i in range(n))
        attrs = {"kernel": k, "stride": s, "padding": p, "ceil_mode": ceil}
        if d != 1:
            attrs["dilation"] = d
        kwargs = {"dilation": d} if kind == "max" else {}
        try:
            want = tuple(fn(torch.zeros((1, 1, *sizes)), k, s, p, ceil_mode=ceil, **kwargs).shape[2:])
            if any(w <= 0 for w in want):
                want = None
        except RuntimeError:
            want = None
        got = _dlspec_shape(name, n, (1, 2, *sizes), attrs)
        got = got[2:] if got is not None else None
        assert got == want, (name, sizes, attrs, got, want)
        checked += want is not None
        refused += want is None
    assert checked > 100 and refused > 10


@pytest.mark.parametrize("k,s,p,d", [(3, 2, 1, 1), (2, 2, 0, 1), (1, 2, 0, 1), (3, 3, 1, 1), (2, 3, 1, 2),
                                     (4, 1, 2, 1), (3, 4, 0, 1)])
def test_ceil_mode_rule_is_exact_over_a_symbolic_size(k: int, s: int, p: int, d: int) -> None:
    """The rule written over a symbolic length gives, once bound, what PyTorch computes."""
    n = Sym.symbol("n")
    expr = pool_out(n, k, s, p, d, True)
    for size in range(max(d * (k - 1) + 1 - 2 * p, 1), 30):
        want = torch.nn.functional.max_pool1d(torch.empty(1, 1, size, device="meta"), k, s, p, d,
                                              ceil_mode=True).shape[-1]
        got = expr.subs({"n": size}) if hasattr(expr, "subs") else expr
        assert got == want, (size, k, s, p, d, str(expr))


def test_ceil_mode_pool_then_dense_checks_and_runs() -> None:
    """avgpool2d(3, padding=1, ceil_mode=true) over 2×2 is 1×1 (the window starting in the right
    padding is dropped), so the dense layer after the flatten gets 3 features."""
    src = """
model CeilPool {
    input x: float32[batch, 3, 2, 2]
    output y = x -> avgpool2d(3, padding=1, ceil_mode=true) -> flatten() -> dense(4)
}
"""
    g = list(compile_source(SourceFile("ceil.dls", src)).models.values())[0]
    pooled = next(n for n in g.nodes if n.op == "avgpool2d")
    assert tuple(g.values[pooled.outputs[0]].shape[1:]) == (3, 1, 1)
    module = build_module(g).eval()
    with torch.no_grad():
        out = module(torch.from_numpy(np.ones((2, 3, 2, 2), dtype=np.float32)))
    assert tuple(out.shape) == (2, 4)
