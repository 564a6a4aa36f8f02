"""Element-wise math: exp, log, sqrt, absolute, reciprocal; pow, maximum and minimum of two tensors or a
tensor and a scalar."""

from __future__ import annotations

from .activation import _Activation
from .base import numel, register
from .tensor import _Binary


class _Math(_Activation):
    category = "arithmetic"


def _unary(op_name: str, text: str, cost: int = 1) -> None:
    register(type(op_name.title().replace("_", "") + "Op", (_Math,), {"name": op_name, "summary": text, "cost": cost}))


_unary("exp", "eˣ, element-wise.", 4)
_unary("log", "The natural logarithm, element-wise (−inf at 0, NaN below).", 4)
_unary("sqrt", "√x, element-wise (NaN below 0).", 4)
_unary("absolute", "|x|, element-wise (torch.abs; `abs` is the language's function on numbers).")
_unary("reciprocal", "1 / x, element-wise.")


class _Elementwise2(_Binary):
    scalar_group = None  # no scalar algebra: pow, maximum and minimum do not compose like + and ×

    def flops(self, a, ins, outs):
        return numel(outs[0].shape)


@register
class Pow(_Elementwise2):
    name = "pow"
    summary = "Element-wise a ** b with broadcasting (or a ** scalar)."
    symbol = "**"
    neutral = 1.0

    def flops(self, a, ins, outs):
        return 4 * numel(outs[0].shape)


@register
class Maximum(_Elementwise2):
    name = "maximum"
    summary = "Element-wise max(a, b) with broadcasting (or max(a, scalar): a clamp from below)."
    symbol = "max"
    commutative = True
    neutral = float("-inf")


@register
class Minimum(_Elementwise2):
    name = "minimum"
    summary = "Element-wise min(a, b) with broadcasting (or min(a, scalar): a clamp from above)."
    symbol = "min"
    commutative = True
    neutral = float("inf")
