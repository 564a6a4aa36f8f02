"""Element-wise math: exp, log, sqrt, absolute, reciprocal; pow, maximum and minimum of two tensors or a
tensor and a scalar; sums, means and maxima over axes."""

from __future__ import annotations

from ..types import TensorType
from .activation import _Activation
from .base import AttrError, Attrs, OpDef, ShapeError, broadcast, norm_axis, numel, register
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


class ReduceAttrs(Attrs):
    axes: int | tuple[int, ...]
    keepdims: bool = False


class _Reduce(OpDef):
    category = "arithmetic"
    Attrs = ReduceAttrs
    positional = ("axes",)

    def reduced(self, a: ReduceAttrs, rank: int) -> list[int]:
        axes = [a.axes] if isinstance(a.axes, int) else list(a.axes)
        out = sorted({norm_axis(ax, rank, self.name) for ax in axes})
        if len(out) != len(axes):
            raise ShapeError(f"{self.name}: axes {list(axes)} name an axis twice", code="E305")
        return out

    def infer(self, a: ReduceAttrs, ins):
        x = ins[0]
        axes = self.reduced(a, x.rank)
        if 0 in axes:
            raise ShapeError(f"{self.name} over the batch axis of {x.shape_str()}",
                             hint="a model computes each sample apart; reduce the other axes", code="E305")
        if self.name == "reduce_max" and any(x.shape[ax] == 0 for ax in axes):
            raise ShapeError(f"reduce_max over an empty axis of {x.shape_str()}: the maximum of nothing",
                             code="E303")
        shape = [1 if i in axes else d for i, d in enumerate(x.shape)] if a.keepdims else \
            [d for i, d in enumerate(x.shape) if i not in axes]
        return [x.with_shape(tuple(shape))]

    def flops(self, a, ins, outs):
        return numel(ins[0].shape)


@register
class ReduceSum(_Reduce):
    name = "reduce_sum"
    summary = "Sum over the given axes (torch.sum(x, dim=axes)); keepdims=true keeps them as size 1."


@register
class ReduceMean(_Reduce):
    name = "reduce_mean"
    summary = "Mean over the given axes (torch.mean(x, dim=axes)); keepdims=true keeps them as size 1."


@register
class ReduceMax(_Reduce):
    name = "reduce_max"
    summary = "Max over the given axes (torch.amax(x, dim=axes)); keepdims=true keeps them as size 1."


class ArgMaxAttrs(Attrs):
    axis: int = -1
    keepdims: bool = False


@register
class ArgMax(OpDef):
    name = "argmax"
    category = "arithmetic"
    summary = "The index (int64) of the largest value along an axis, the first on ties (torch.argmax)."
    Attrs = ArgMaxAttrs
    positional = ("axis",)

    def infer(self, a: ArgMaxAttrs, ins):
        x = ins[0]
        ax = norm_axis(a.axis, x.rank, "argmax")
        if ax == 0:
            raise ShapeError(f"argmax over the batch axis of {x.shape_str()}",
                             hint="a model computes each sample apart", code="E305")
        if x.shape[ax] == 0:
            raise ShapeError(f"argmax over an empty axis of {x.shape_str()}", code="E303")
        shape = tuple(1 if i == ax else d for i, d in enumerate(x.shape)) if a.keepdims else \
            x.shape[:ax] + x.shape[ax + 1:]
        return [TensorType(dtype="int64", shape=shape)]

    def flops(self, a, ins, outs):
        return numel(ins[0].shape)


# ---- comparisons and where: masks (attention, masked_fill), piecewise functions -----------------


class _Compare(_Elementwise2):
    """a (op) b with broadcasting, or a (op) scalar: a bool tensor (for `where`)."""

    neutral = None  # no scalar leaves a comparison a no-op
    input_dtypes = ("float16", "bfloat16", "float32", "float64", "int32", "int64")

    def infer(self, a, ins):
        return [TensorType(dtype="bool", shape=super().infer(a, ins)[0].shape)]


def _compare(op_name: str, symbol: str, torch_name: str, commutative: bool = False) -> None:
    register(type(op_name.title().replace("_", "") + "Op", (_Compare,), {
        "name": op_name, "symbol": symbol, "commutative": commutative,
        "summary": f"Element-wise a {symbol} b with broadcasting (or a {symbol} scalar): a bool tensor "
                   f"({torch_name}), the condition of `where`."}))


_compare("equal", "==", "torch.eq", commutative=True)
_compare("less", "<", "torch.lt")
_compare("less_equal", "<=", "torch.le")
_compare("greater", ">", "torch.gt")
_compare("greater_equal", ">=", "torch.ge")


class WhereAttrs(Attrs):
    #: a number in place of the tensor `a` (masked_fill's value: `where(mask, x, a_value=-inf)`
    #: takes x as `b`), or of `b`
    a_value: float | None = None
    b_value: float | None = None


@register
class Where(OpDef):
    name = "where"
    category = "arithmetic"
    summary = ("a where condition is true, else b, the three broadcast together (torch.where); a_value= or "
               "b_value= puts a number in place of one of them (masked_fill).")
    Attrs = WhereAttrs
    inputs = ("condition", "a", "b")
    min_inputs = 2

    input_dtypes = ("bool",)

    def check_inputs(self, a: WhereAttrs, ins):
        if ins and ins[0].dtype != "bool":
            raise ShapeError(f"where: the condition is {ins[0].dtype}; it must be bool (a comparison: "
                             "`greater(x, scalar=0.0)`)", code="E310")
        super().check_inputs(a, ins)
        given = (a.a_value is not None) + (a.b_value is not None)
        if len(ins) + given != 3:
            raise ShapeError("where takes a condition and two values: tensors a and b, or one of them and "
                             f"a_value= or b_value=; got {len(ins) - 1} tensor(s) and {given} number(s)", code="E309")
        if len(ins) == 3 and ins[1].dtype != ins[2].dtype:
            raise ShapeError(f"where: dtypes differ ({ins[1].dtype} and {ins[2].dtype})", code="E310")

    def infer(self, a: WhereAttrs, ins):
        shape = tuple(ins[0].shape)
        for t in ins[1:]:
            shape = broadcast(shape, t.shape, "where")
        return [TensorType(dtype=ins[1].dtype, shape=shape)]  # check_inputs: a value tensor is given

    def flops(self, a, ins, outs):
        return numel(outs[0].shape)


class TopKAttrs(Attrs):
    k: int
    axis: int = -1
    largest: bool = True


@register
class TopK(OpDef):
    name = "topk"
    category = "arithmetic"
    summary = ("The k largest values along an axis (or smallest: largest=false), sorted, and their int64 "
               "indices: two outputs (torch.topk).")
    Attrs = TopKAttrs
    positional = ("k",)

    def num_outputs(self, a: TopKAttrs) -> int:
        return 2

    def validate_attrs(self, a: TopKAttrs) -> None:
        if a.k < 1:
            raise AttrError(f"topk: k must be at least 1; got {a.k}")

    def infer(self, a: TopKAttrs, ins):
        x = ins[0]
        ax = norm_axis(a.axis, x.rank, "topk")
        if ax == 0:
            raise ShapeError(f"topk over the batch axis of {x.shape_str()}", hint="a model computes each sample apart",
                             code="E305")
        size = x.shape[ax]
        if isinstance(size, int) and a.k > size:
            raise ShapeError(f"topk: k = {a.k} is more than the {size} values along axis {a.axis} of "
                             f"{x.shape_str()}", code="E308")
        shape = (*x.shape[:ax], a.k, *x.shape[ax + 1:])
        return [x.with_shape(shape), TensorType(dtype="int64", shape=shape)]

    def flops(self, a, ins, outs):
        return numel(ins[0].shape)


# ---- logic on masks: not, and, or of bool tensors ---------------------------------------------------


class _Logical(OpDef):
    category = "arithmetic"
    layout = "elementwise"
    input_dtypes = ("bool",)

    def check_inputs(self, a, ins):
        super().check_inputs(a, ins)
        if any(t.dtype != "bool" for t in ins[1:]):
            raise ShapeError(f"{self.name} takes bool tensors; got {' and '.join(t.dtype for t in ins)} (a comparison "
                             "makes one: `greater(x, scalar=0.0)`)", code="E310")

    def infer(self, a, ins):
        shape = tuple(ins[0].shape)
        for t in ins[1:]:
            shape = broadcast(shape, t.shape, self.name)
        return [TensorType(dtype="bool", shape=shape)]

    def flops(self, a, ins, outs):
        return numel(outs[0].shape)


@register
class LogicalNot(_Logical):
    name = "logical_not"
    summary = "Element-wise not of a bool tensor (torch.logical_not): a mask inverted."


@register
class LogicalAnd(_Logical):
    name = "logical_and"
    summary = "Element-wise a and b of two bool tensors with broadcasting (torch.logical_and): masks combined."
    inputs = ("a", "b")
    commutative = True


@register
class LogicalOr(_Logical):
    name = "logical_or"
    summary = "Element-wise a or b of two bool tensors with broadcasting (torch.logical_or)."
    inputs = ("a", "b")
    commutative = True
