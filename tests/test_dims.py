"""Symbolic dimensions: the simplifier's normal form reads as people write sizes, and it is exact.

Every rewrite `dlspec.ir.dims` makes is an identity over all integers. The property tests build
random size expressions (sums, products, floor divisions by positive and negative constants,
nested) and evaluate each twice: with Python integers as written, and as a simplified `Sym`
whose symbols are then bound. The two must agree for every binding, and the printed form must
read back (`parse_dim`) to the same dimension and evaluate, as Python, to the same number.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dlspec.ir.dims import Sym, parse_dim, subs

SYMBOLS = ("h", "w", "batch")

h, w = Sym.symbol("h"), Sym.symbol("w")


@pytest.mark.parametrize(("dim", "text"), [
    ((h - 2) // 2 + 1, "h // 2"),  # maxpool2d(2)
    ((h + 2 * 1 - 3) // 2 + 1, "(h + 1) // 2"),  # conv2d(k=3, stride=2, padding=1)
    ((h + 2 * 3 - 7) // 2 + 1, "(h + 1) // 2"),  # ResNet's 7x7 stride-2 stem
    (((h + 1) // 2 + 2 * 1 - 3) // 2 + 1, "(h + 3) // 4"),  # ... then maxpool2d(3, 2, padding=1)
    ((h // 2) // 2, "h // 4"),
    ((h // 4 + 1) // 2, "(h + 4) // 8"),
    ((2 * h + 2) // 4, "(h + 1) // 2"),
    ((16 * h - 2) // 2 + 1, "8 * h"),  # a size declared as a multiple stays exact
    ((2 * (h // 2)) // 2, "h // 2"),
    (h // -2, "(-h) // 2"),
    ((h * w) // 3, "h * w // 3"),
    ((h + 2 * w) // 6, "(h + 2 * w) // 6"),
    (2 * (h // 8), "2 * (h // 8)"),
    ((h - 2) // 2 + 1 - h // 2, "0"),
])
def test_simplified_forms_read_as_written_by_hand(dim, text) -> None:
    assert str(dim) == text
    assert parse_dim(text) == dim


def test_four_max_pools_and_up_convolutions_of_a_unet_read_cleanly() -> None:
    size = h
    for _ in range(4):
        size = (size - 2) // 2 + 1  # maxpool2d(2)
    assert str(size) == "h // 16"
    up = (size - 1) * 2 + 2  # conv_transpose2d(k=2, stride=2)
    assert str(up) == "2 * (h // 16)"
    assert str(((16 * h - 2) // 2 + 1 - 1) * 2 + 2) == "16 * h"


# random expressions ---------------------------------------------------------------------------

def _expr(depth: int):
    leaf = st.one_of(st.sampled_from(SYMBOLS), st.integers(-20, 20))
    if depth == 0:
        return leaf
    sub = _expr(depth - 1)
    return st.one_of(
        leaf,
        st.tuples(st.sampled_from(["+", "-", "*"]), sub, sub),
        st.tuples(st.just("//"), sub, st.integers(-9, 9).filter(bool)),
        st.tuples(st.just("*c"), sub, st.integers(-5, 5)),
    )


def _eval(e, env):
    """`e` evaluated with `env`'s values for the symbols: ints, or `Sym`s (simplified on the way)."""
    if isinstance(e, str):
        return env[e]
    if isinstance(e, int):
        return e
    op, a, b = e
    x = _eval(a, env)
    y = b if op in ("//", "*c") else _eval(b, env)
    if op == "+":
        return x + y
    if op == "-":
        return x - y
    if op in ("*", "*c"):
        return x * y
    return x // y


SYMS = {s: Sym.symbol(s) for s in SYMBOLS}
values = st.fixed_dictionaries({s: st.integers(-60, 60) for s in SYMBOLS})


def _agrees(e, envs) -> None:
    dim = _eval(e, SYMS)
    text = str(dim)
    again = parse_dim(text)
    assert again == dim
    for env in envs:
        want = _eval(e, env)
        assert subs(dim, env) == want
        assert eval(text, {}, dict(env)) == want  # the printed form is Python with the same value


@settings(max_examples=100, deadline=None, database=None)
@given(_expr(3), st.lists(values, min_size=1, max_size=8))
def test_the_simplified_dimension_equals_the_expression_as_written(e, envs) -> None:
    _agrees(e, envs)


@pytest.mark.slow
@settings(max_examples=800, deadline=None, database=None)
@given(_expr(5), st.lists(values, min_size=1, max_size=12))
def test_the_simplified_dimension_equals_the_expression_as_written_deeper(e, envs) -> None:
    _agrees(e, envs)


@settings(max_examples=60, deadline=None, database=None)
@given(_expr(3), _expr(3), values)
def test_equal_dimensions_have_equal_values(a, b, env) -> None:
    """Structural equality never claims more than numeric equality (sound for shape checks)."""
    da, db = _eval(a, SYMS), _eval(b, SYMS)
    if da == db:
        assert _eval(a, env) == _eval(b, env)


@settings(max_examples=60, deadline=None, database=None)
@given(st.integers(-50, 50), st.integers(1, 5), st.integers(1, 4), st.integers(0, 3), st.integers(1, 400))
def test_pooling_and_convolution_sizes(c, k, s, p, n) -> None:
    """`(h + 2p - k) // s + 1` and `(h + c) // s` forms at positive sizes."""
    out = (h + 2 * p - k) // s + 1
    assert subs(out, {"h": n}) == (n + 2 * p - k) // s + 1
    shifted = (h + c) // s
    assert subs(shifted, {"h": n}) == (n + c) // s
