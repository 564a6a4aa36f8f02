"""Shape manipulation, merging, splitting, element-wise arithmetic, matmul, padding, identity."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field

from ...limits import MAX_SPLIT
from ..types import DTYPES, DType, TensorType
from .base import (
    AttrError,
    Attrs,
    Count,
    CountOrTuple,
    OpDef,
    ShapeError,
    all_equal,
    broadcast,
    float_out,
    norm_axis,
    numel,
    register,
)

ANY_DTYPE = DTYPES

#: the most outputs one `split` may make (each part is a value of the graph)
MAX_SPLIT_PARTS = MAX_SPLIT
#: the most times `tile` repeats one axis
MAX_TILE = 2**16


@register
class Identity(OpDef):
    name = "identity"
    category = "tensor"
    summary = "Returns its input unchanged."
    input_dtypes = ANY_DTYPE
    layout = "elementwise"

    def noop_reason(self, a, ins, outs):
        return "identity"

    def flops(self, a, ins, outs):
        return 0


class FlattenAttrs(Attrs):
    start: int = 1
    end: int = -1


@register
class Flatten(OpDef):
    name = "flatten"
    category = "tensor"
    summary = "Merges axes start..end (default: all but the batch axis) into one."
    Attrs = FlattenAttrs
    input_dtypes = ANY_DTYPE

    def noop_reason(self, a, ins, outs):
        return "flatten to the shape it already has"

    def infer(self, a: FlattenAttrs, ins):
        x = ins[0]
        s = norm_axis(a.start, x.rank, "flatten")
        e = norm_axis(a.end, x.rank, "flatten")
        if e < s:
            raise ShapeError(f"flatten: end axis {a.end} comes before start axis {a.start}", code="E305")
        return [x.with_shape((*x.shape[:s], numel(x.shape[s : e + 1]), *x.shape[e + 1 :]))]

    def flops(self, a, ins, outs):
        return 0


class ReshapeAttrs(Attrs):
    shape: tuple[int, ...]


@register
class Reshape(OpDef):
    name = "reshape"
    category = "tensor"
    summary = "Reshapes every axis but the batch axis (Keras's Reshape); one entry may be -1."
    Attrs = ReshapeAttrs
    positional = ("shape",)
    input_dtypes = ANY_DTYPE

    def noop_reason(self, a, ins, outs):
        return "reshape to the shape it already has"

    def validate_attrs(self, a: ReshapeAttrs) -> None:
        if sum(1 for d in a.shape if d == -1) > 1:
            raise AttrError("reshape: at most one dimension may be -1")
        if any(d == 0 or d < -1 for d in a.shape):
            raise AttrError(f"reshape: dimensions must be positive or -1; got {list(a.shape)}")

    def infer(self, a: ReshapeAttrs, ins):
        x = ins[0]
        if x.rank < 1:
            raise ShapeError("reshape keeps the batch axis; a scalar has none", hint="unsqueeze(0) gives it one",
                             code="E302")
        total = numel(x.shape[1:])
        known = numel([d for d in a.shape if d != -1])
        if -1 in a.shape:
            if isinstance(total, int) and total % known:
                raise ShapeError(
                    f"reshape: {x.shape_str()} has {total} elements per sample, not divisible by {known}", code="E308"
                )
            missing = total // known
            shape = tuple(missing if d == -1 else d for d in a.shape)
        else:
            shape = a.shape
            if total != known:
                raise ShapeError(
                    f"reshape: cannot reshape {x.shape_str()} ({total} elements per sample) into "
                    f"[{', '.join(str(d) for d in shape)}] ({known})",
                    hint="the batch axis is kept; list the other axes only",
                    code="E308",
                )
        return [x.with_shape((x.shape[0], *shape))]

    def flops(self, a, ins, outs):
        return 0


class PermuteAttrs(Attrs):
    dims: tuple[int, ...]


@register
class Permute(OpDef):
    name = "permute"
    category = "tensor"
    summary = "Reorders all axes, batch included (torch.permute)."
    Attrs = PermuteAttrs
    positional = ("dims",)
    input_dtypes = ANY_DTYPE

    def infer(self, a: PermuteAttrs, ins):
        x = ins[0]
        dims = [norm_axis(d, x.rank, "permute") for d in a.dims]
        if sorted(dims) != list(range(x.rank)):
            raise ShapeError(
                f"permute: {list(a.dims)} is not a permutation of the {x.rank} axes of {x.shape_str()}", code="E305"
            )
        return [x.with_shape(tuple(x.shape[d] for d in dims))]

    def flops(self, a, ins, outs):
        return 0


class AxisAttrs(Attrs):
    axis: int


@register
class Squeeze(OpDef):
    name = "squeeze"
    category = "tensor"
    summary = "Removes an axis of size 1."
    Attrs = AxisAttrs
    positional = ("axis",)
    inverse = "unsqueeze"
    input_dtypes = ANY_DTYPE

    def infer(self, a, ins):
        x = ins[0]
        ax = norm_axis(a.axis, x.rank, "squeeze")
        if x.shape[ax] != 1:
            raise ShapeError(f"squeeze: axis {a.axis} of {x.shape_str()} has size {x.shape[ax]}, not 1", code="E308")
        return [x.with_shape(x.shape[:ax] + x.shape[ax + 1 :])]

    def flops(self, a, ins, outs):
        return 0


@register
class Unsqueeze(OpDef):
    name = "unsqueeze"
    category = "tensor"
    summary = "Inserts an axis of size 1."
    Attrs = AxisAttrs
    positional = ("axis",)
    inverse = "squeeze"
    input_dtypes = ANY_DTYPE

    def infer(self, a, ins):
        x = ins[0]
        ax = norm_axis(a.axis, x.rank + 1, "unsqueeze")
        return [x.with_shape((*x.shape[:ax], 1, *x.shape[ax:]))]

    def flops(self, a, ins, outs):
        return 0


class ConcatAttrs(Attrs):
    axis: int = 1


@register
class Concat(OpDef):
    name = "concat"
    category = "merge"
    summary = "Joins two or more tensors along an axis; the others must agree."
    Attrs = ConcatAttrs
    inputs = ("x",)
    variadic = True
    min_inputs = 2
    input_dtypes = ANY_DTYPE

    def infer(self, a: ConcatAttrs, ins):
        first = ins[0]
        ax = norm_axis(a.axis, first.rank, "concat")
        total = first.shape[ax]
        for i, t in enumerate(ins[1:], start=1):
            if t.rank != first.rank:
                raise ShapeError(f"concat: input {i} is {t.rank}-D but input 0 is {first.rank}-D", code="E304")
            for d in range(first.rank):
                if d != ax and t.shape[d] != first.shape[d]:
                    raise ShapeError(
                        f"concat along axis {a.axis}: input {i} {t.shape_str()} differs from input 0 "
                        f"{first.shape_str()} on axis {d} ({t.shape[d]} vs {first.shape[d]})",
                        hint="all axes but the concatenation axis must match; crop or pad one side",
                        code="E304",
                    )
            total = total + t.shape[ax]
        return [first.with_shape((*first.shape[:ax], total, *first.shape[ax + 1 :]))]

    def flops(self, a, ins, outs):
        return 0


class SplitAttrs(Attrs):
    parts: CountOrTuple
    axis: int = 1


@register
class Split(OpDef):
    name = "split"
    category = "merge"
    summary = "Splits a tensor into equal parts (an int) or parts of given sizes (a list) along an axis."
    Attrs = SplitAttrs
    positional = ("parts",)
    input_dtypes = ANY_DTYPE

    def num_outputs(self, a: SplitAttrs) -> int:
        return a.parts if isinstance(a.parts, int) else len(a.parts)

    def validate_attrs(self, a: SplitAttrs) -> None:
        if self.num_outputs(a) < 1 or (not isinstance(a.parts, int) and any(p <= 0 for p in a.parts)):
            raise AttrError(f"split: parts must be positive; got {a.parts}")
        if self.num_outputs(a) > MAX_SPLIT_PARTS:
            raise AttrError(f"split: at most {MAX_SPLIT_PARTS} parts; got {self.num_outputs(a)}")

    def infer(self, a: SplitAttrs, ins):
        x = ins[0]
        ax = norm_axis(a.axis, x.rank, "split")
        size = x.shape[ax]
        if isinstance(a.parts, int):
            if isinstance(size, int) and size % a.parts:
                raise ShapeError(f"split: axis {a.axis} of size {size} does not split into {a.parts} equal parts", code="E308")
            sizes = [size // a.parts] * a.parts
        else:
            sizes = list(a.parts)
            if isinstance(size, int) and sum(sizes) != size:
                raise ShapeError(f"split: sizes {sizes} add up to {sum(sizes)}, but axis {a.axis} has {size}", code="E308")
        return [x.with_shape((*x.shape[:ax], s, *x.shape[ax + 1 :])) for s in sizes]

    def flops(self, a, ins, outs):
        return 0


class SelectAttrs(Attrs):
    axis: int
    index: int


@register
class Select(OpDef):
    name = "select"
    category = "tensor"
    summary = ("The slice at `index` along `axis`, the axis removed (x.select(axis, index); index −1 is the "
               "last, so `x[:, -1]` over a symbolic number of steps is `select(1, -1)`).")
    Attrs = SelectAttrs
    positional = ("axis", "index")
    input_dtypes = ANY_DTYPE

    def infer(self, a: SelectAttrs, ins):
        x = ins[0]
        ax = norm_axis(a.axis, x.rank, "select")
        if ax == 0:
            raise ShapeError("select along the batch axis", hint="a model computes each sample apart", code="E305")
        size = x.shape[ax]
        if isinstance(size, int) and not -size <= a.index < size:
            raise ShapeError(f"select: index {a.index} is out of range for axis {a.axis} of {x.shape_str()}",
                             code="E308")
        if not isinstance(size, int) and a.index not in (0, -1):
            raise ShapeError(f"select: index {a.index} along the symbolic axis {a.axis} of {x.shape_str()}",
                             hint="along a symbolic axis only the first (0) and the last (-1) are certain to exist",
                             code="E308")
        return [x.with_shape(x.shape[:ax] + x.shape[ax + 1 :])]

    def flops(self, a, ins, outs):
        return 0


class TileAttrs(Attrs):
    reps: tuple[Annotated[int, Field(ge=1, le=MAX_TILE)], ...]


@register
class Tile(OpDef):
    name = "tile"
    category = "tensor"
    summary = ("Repeats the tensor `reps[i]` times along each axis i (torch's x.repeat, ONNX Tile); one entry "
               "per axis, the batch axis's 1.")
    Attrs = TileAttrs
    positional = ("reps",)
    input_dtypes = ANY_DTYPE

    def noop_reason(self, a, ins, outs):
        return "tiling once along every axis" if all(r == 1 for r in a.reps) else None

    def infer(self, a: TileAttrs, ins):
        x = ins[0]
        if len(a.reps) != x.rank:
            raise ShapeError(f"tile: {len(a.reps)} repetitions for the {x.rank} axes of {x.shape_str()}",
                             hint="give one count per axis, the batch axis included (its count is 1)", code="E308")
        if a.reps[0] != 1:
            raise ShapeError(f"tile repeats the batch axis of {x.shape_str()} {a.reps[0]} times",
                             hint="a model computes each sample apart; the batch axis's count is 1", code="E305")
        return [x.with_shape(tuple(d * r if r != 1 else d for d, r in zip(x.shape, a.reps)))]

    def flops(self, a, ins, outs):
        return 0


class ParameterAttrs(Attrs):
    shape: tuple[Count, ...]
    init: Literal["normal", "zeros"] = "normal"
    std: Annotated[float, Field(gt=0.0, le=1e6)] = 0.02


@register
class Parameter(OpDef):
    name = "parameter"
    category = "tensor"
    summary = ("A learned tensor of `shape`, the same for every sample: [batch, *shape], the batch size read from "
               "the input (which it reads nothing else from). A positional embedding is `add(x, x -> parameter([T, "
               "F]))`, a class token `concat(x -> parameter([1, F], init=zeros), x, axis=1)`; stored [1, *shape] "
               "(nn.Parameter(torch.zeros(1, *shape)), ViT's class_token and pos_embedding), drawn from "
               "N(0, std²) or zeros.")
    Attrs = ParameterAttrs
    positional = ("shape",)
    input_dtypes = ANY_DTYPE

    def validate_attrs(self, a: ParameterAttrs) -> None:
        if not a.shape:
            raise AttrError("parameter: `shape` lists at least one axis (the batch axis is not given)")

    def infer(self, a: ParameterAttrs, ins):
        x = ins[0]
        if x.rank < 1:
            raise ShapeError("parameter reads the batch size from its input's first axis; a scalar has none",
                             code="E302")
        return [TensorType(dtype=float_out(x), shape=(x.shape[0], *a.shape))]

    def params(self, a: ParameterAttrs, ins):
        return {"weight": (1, *a.shape)}

    def initial(self, a: ParameterAttrs, name, shapes, rng):
        import numpy as np

        return np.zeros(shapes[name]) if a.init == "zeros" else rng.normal(0.0, a.std, size=shapes[name])

    def flops(self, a, ins, outs):
        return 0


class ElementwiseAttrs(Attrs):
    scalar: float | None = None


class _Binary(OpDef):
    category = "arithmetic"
    Attrs = ElementwiseAttrs
    inputs = ("a", "b")
    min_inputs = 1
    symbol = "+"
    #: the scalar that leaves x unchanged (x + 0, x * 1)
    neutral = 0.0
    #: scalar algebra: ops of one group compose (x + a - b = x + (a - b)); sign -1 applies the
    #: inverse of the group's operation (sub, div)
    scalar_group = "additive"
    scalar_sign = 1.0

    def noop_reason(self, a, ins, outs):
        if len(ins) == 1 and a.scalar == self.neutral:
            return f"`x {self.symbol} {self.neutral:g}`"
        return None

    def check_inputs(self, a, ins):
        super().check_inputs(a, ins)
        if len(ins) == 1 and a.scalar is None:
            raise ShapeError(f"{self.name} needs two tensors, or a tensor and `scalar=`", code="E309")
        if len(ins) == 2 and a.scalar is not None:
            raise ShapeError(f"{self.name} takes two tensors or a tensor and a scalar, not both", code="E309")
        if len(ins) == 2 and ins[0].dtype != ins[1].dtype:
            raise ShapeError(f"{self.name}: dtypes differ ({ins[0].dtype} {self.symbol} {ins[1].dtype})", code="E310")

    def infer(self, a, ins):
        if len(ins) == 1:
            return [ins[0]]
        return [ins[0].with_shape(broadcast(ins[0].shape, ins[1].shape, f"{self.name} (`{self.symbol}`)"))]


@register
class Add(_Binary):
    name = "add"
    summary = "Element-wise a + b with broadcasting (or a + scalar)."
    symbol = "+"
    commutative = True
    output_reusable = True


@register
class Sub(_Binary):
    name = "sub"
    summary = "Element-wise a - b with broadcasting (or a - scalar)."
    symbol = "-"
    scalar_sign = -1.0


@register
class Mul(_Binary):
    name = "mul"
    summary = "Element-wise a * b with broadcasting (or a * scalar)."
    symbol = "*"
    commutative = True
    neutral = 1.0
    scalar_group = "multiplicative"


@register
class Div(_Binary):
    name = "div"
    summary = "Element-wise a / b with broadcasting (or a / scalar)."
    symbol = "/"
    neutral = 1.0
    scalar_group = "multiplicative"
    scalar_sign = -1.0


@register
class MatMul(OpDef):
    name = "matmul"
    category = "arithmetic"
    summary = "Batched matrix product [..., n, k] @ [..., k, m] → [..., n, m]."
    inputs = ("a", "b")

    def infer(self, a, ins):
        x, y = ins
        if x.rank < 2 or y.rank < 2:
            raise ShapeError(f"matmul needs inputs of rank ≥ 2; got {x.shape_str()} and {y.shape_str()}", code="E302")
        if x.shape[-1] != y.shape[-2]:
            raise ShapeError(
                f"matmul: inner dimensions differ: {x.shape_str()} @ {y.shape_str()} ({x.shape[-1]} vs {y.shape[-2]})",
                hint="permute one side so the last axis of `a` meets the second-to-last of `b`",
                code="E304",
            )
        lead = broadcast(x.shape[:-2], y.shape[:-2], "matmul")
        return [x.with_shape((*lead, x.shape[-2], y.shape[-1]))]

    def flops(self, a, ins, outs):
        return 2 * numel(outs[0].shape) * ins[0].shape[-1]


class CastAttrs(Attrs):
    dtype: DType


@register
class Cast(OpDef):
    name = "cast"
    category = "tensor"
    summary = ("The tensor converted to another dtype (`x -> cast(float32)` for uint8 images; x.to(dtype) in "
               "PyTorch): floats to ints round toward zero, values outside an int type's range are undefined.")
    Attrs = CastAttrs
    positional = ("dtype",)
    input_dtypes = ANY_DTYPE

    def infer(self, a: CastAttrs, ins):
        return [TensorType(dtype=a.dtype, shape=ins[0].shape)]

    def noop_reason(self, a, ins, outs):
        return f"the input is already {a.dtype}" if ins[0].dtype == a.dtype else None

    def flops(self, a, ins, outs):
        return 0


class _ToSize(OpDef):
    """pad_to and crop_to: the spatial axes (all but batch and channels) of `x` made the size of
    `like`'s, by zeros around it or by its centre. The output has `like`'s spatial sizes exactly,
    symbolic ones included, so `concat(skip, up -> pad_to(skip), axis=1)` checks for an input of
    any size; a difference known to be the wrong way round is E308 here, and at run time when it
    depends on the input's size."""

    category = "tensor"
    inputs = ("x", "like")
    verb: ClassVar[str] = ""

    def infer(self, a, ins):
        x, like = ins
        if x.rank < 3 or like.rank != x.rank:
            raise ShapeError(f"{self.name} needs two tensors of the same rank ≥ 3 ([N, C, spatial…]); got "
                             f"{x.shape_str()} and {like.shape_str()}", code="E302")
        for axis, (d, t) in enumerate(zip(x.shape[2:], like.shape[2:]), start=2):
            if isinstance(d, int) and isinstance(t, int) and (t < d if self.name == "pad_to" else t > d):
                raise ShapeError(
                    f"{self.name}: axis {axis} of x is {d}, {'larger' if self.name == 'pad_to' else 'smaller'} than "
                    f"`like`'s {t}: {self.verb}", code="E308",
                    hint="crop_to makes a larger tensor smaller" if self.name == "pad_to" else "pad_to makes a smaller tensor larger")
        return [x.with_shape((*x.shape[:2], *like.shape[2:]))]

    def noop_reason(self, a, ins, outs):
        return "the sizes are already equal" if tuple(ins[0].shape[2:]) == tuple(ins[1].shape[2:]) else None

    def flops(self, a, ins, outs):
        return 0


@register
class PadTo(_ToSize):
    name = "pad_to"
    summary = ("Pads the spatial axes of x with zeros to the sizes of `like` (U-Net's skip connections): a "
               "difference d gets d // 2 before and the rest after, as U-Net's PyTorch implementations pad.")
    verb = "padding cannot shrink it"


@register
class CropTo(_ToSize):
    name = "crop_to"
    summary = ("Crops the spatial axes of x to the sizes of `like`, keeping the centre (a difference d "
               "drops d // 2 before and the rest after): the inverse of pad_to.")
    verb = "cropping cannot grow it"


class PadAttrs(Attrs):
    padding: int | tuple[int, ...]
    mode: Literal["constant", "reflect", "replicate"] = "constant"
    value: float = 0.0


@register
class Pad(OpDef):
    name = "pad"
    category = "tensor"
    summary = (
        "Pads the spatial axes. An int pads every side of every spatial axis; a list gives "
        "(before, after) pairs for the last k axes in order: [h_before, h_after, w_before, w_after]."
    )
    Attrs = PadAttrs
    positional = ("padding",)

    def noop_reason(self, a, ins, outs):
        return "padding of zero width" if a.mode == "constant" and all_equal(a.padding, 0) else None

    def pairs(self, a: PadAttrs, rank: int) -> list[tuple[int, int]]:
        """(before, after) per axis, for every axis of a rank-`rank` tensor."""
        if isinstance(a.padding, int):
            spatial = [(a.padding, a.padding)] * (rank - 2)
            return [(0, 0), (0, 0), *spatial]
        if len(a.padding) % 2:
            raise ShapeError("pad: the padding list needs (before, after) pairs", code="E308")
        k = len(a.padding) // 2
        if k > rank - 1:
            raise ShapeError(f"pad: {k} padded axes is more than a {rank}-D input has after the batch axis", code="E308")
        tail = [(a.padding[2 * i], a.padding[2 * i + 1]) for i in range(k)]
        return [(0, 0)] * (rank - k) + tail

    def infer(self, a: PadAttrs, ins):
        x = ins[0]
        if x.rank < 2:
            raise ShapeError("pad needs an input with at least two axes", code="E302")
        pairs = self.pairs(a, x.rank)
        shape = tuple(d + b + e for d, (b, e) in zip(x.shape, pairs))
        return [x.with_shape(shape)]

    def flops(self, a, ins, outs):
        return 0

