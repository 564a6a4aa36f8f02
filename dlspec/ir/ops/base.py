"""What an op is: attribute schema, inputs, shape rule, parameter shapes, FLOPs — declared once.

Every op subclasses `OpDef` and is registered with `@register`. Backends look ops up by name and
lower each one; the summary and the checker use the shape, parameter and FLOP rules here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ...errors import AttrError, ShapeError, validation_problems
from ..dims import Dim, Sym
from ..types import FLOAT_DTYPES, TensorType

#: the largest size, count or stride an attribute may hold (a tensor dimension's limit)
MAX_ATTR_INT = 2**31 - 1

#: declared ranges of integer attributes, checked by the schema for every op alike: a count
#: (channels, units, kernel, stride, dilation, groups, heads, layers) is at least 1, a size
#: (padding) at least 0
Count = Annotated[int, Field(ge=1, le=MAX_ATTR_INT)]
Size = Annotated[int, Field(ge=0, le=MAX_ATTR_INT)]
CountOrTuple = Count | tuple[Count, ...]
SizeOrTuple = Size | tuple[Size, ...]


class Attrs(BaseModel):
    """Base of every op's attribute schema: strict about unknown keys, immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)


class NoAttrs(Attrs):
    pass


class OpDef:
    """One op of the catalogue. Subclasses override the class variables and the rules they need."""

    name: ClassVar[str]
    category: ClassVar[str] = "other"
    summary: ClassVar[str] = ""
    Attrs: ClassVar[type[Attrs]] = NoAttrs
    #: attribute names that may be given positionally, in order
    positional: ClassVar[tuple[str, ...]] = ()
    #: names of the tensor inputs, in order; the first receives a piped (`->`) value
    inputs: ClassVar[tuple[str, ...]] = ("x",)
    #: how many of `inputs` are required; the rest are optional
    min_inputs: ClassVar[int | None] = None
    #: an omitted optional input that a later input follows takes another input's value
    input_defaults: ClassVar[dict[str, str]] = {}
    #: ops that take any number (≥ min_inputs) of tensors (concat)
    variadic: ClassVar[bool] = False
    #: expected input rank(s) per op, used for the generic rank check and its hint
    ranks: ClassVar[tuple[int, ...] | None] = None
    #: dtypes the first input may have; None means floats
    input_dtypes: ClassVar[tuple[str, ...] | None] = None

    # ---- what passes, backends and importers ask the catalogue -----------------------------------
    # Declared here, once per op: no pass or backend keeps a list of op names.
    #: how the op sees its input's axes: "channels_first" ops compute over [N, C, spatial…] (a
    #: channels-last backend lays such tensors out channels-last around them), "elementwise" ops
    #: keep whatever layout their input has, None: neither (they see the canonical axes)
    layout: ClassVar[str | None] = None
    #: the backward pass does not read the op's output, so a following in-place op may overwrite it
    output_reusable: ClassVar[bool] = False
    #: draws random numbers while training (dropout): two equal calls are not one value
    stochastic: ClassVar[bool] = False
    #: f(a, b) == f(b, a) for its two tensor inputs
    commutative: ClassVar[bool] = False
    #: how a following batch norm folds into this op's weight and bias: "out_first" (weight
    #: [out, in, k…]), "transposed" (weight [in, out/groups, k…]); None: it does not fold
    bn_fold: ClassVar[str | None] = None
    #: a per-channel affine map at inference (batch norm) that folds into a preceding `bn_fold` op
    folds_into_preceding: ClassVar[bool] = False
    #: the gates stacked in the canonical (PyTorch) weight, in order (recurrent ops)
    gate_names: ClassVar[tuple[str, ...]] = ()
    #: the same gates in another framework's stacking order, by framework
    gate_orders: ClassVar[dict[str, tuple[str, ...]]] = {}
    #: the optional input that is an attention mask (0/false: not attended)
    mask_input: ClassVar[str | None] = None
    #: the op that undoes this one with the same `axis` (squeeze ↔ unsqueeze)
    inverse: ClassVar[str | None] = None
    #: element-wise arithmetic with a `scalar=` operand: the group whose scalars compose
    #: ("additive", "multiplicative"), and +1 or -1 for the group's operation or its inverse
    scalar_group: ClassVar[str | None] = None
    scalar_sign: ClassVar[float] = 1.0

    # ---- attributes ----------------------------------------------------------------------------
    def attrs_from_dict(self, values: dict[str, Any]) -> Attrs:
        try:
            return self.Attrs(**values)
        except ValidationError as exc:
            message, key = _validation_message(self.name, exc)
            raise AttrError(message, key=key) from None

    def validate_attrs(self, attrs: Attrs) -> None:
        """Checks that involve several attributes; raise AttrError."""

    def num_outputs(self, attrs: Any) -> int:
        return 1

    # ---- rules ---------------------------------------------------------------------------------
    def required_inputs(self) -> int:
        return len(self.inputs) if self.min_inputs is None else self.min_inputs

    def check_inputs(self, attrs: Any, ins: list[TensorType]) -> None:
        if self.ranks is not None and ins and ins[0].rank not in self.ranks:
            expected = " or ".join(f"{r}-D" for r in self.ranks)
            raise ShapeError(
                f"{self.name} expects a {expected} input{_layout_hint(self.ranks)}; got {ins[0].shape_str()}",
                hint=_rank_hint(self.name, self.ranks, ins[0]),
                code="E302",
            )
        allowed = self.input_dtypes or FLOAT_DTYPES
        if ins and ins[0].dtype not in allowed:
            raise ShapeError(
                f"{self.name} expects a {' or '.join(allowed)} input; got {ins[0].dtype}",
                hint="embedding() turns integer token ids into float vectors" if ins[0].dtype.startswith("int") else None,
                code="E310",
            )

    def infer(self, attrs: Any, ins: list[TensorType]) -> list[TensorType]:
        """The output types. Raise ShapeError with a message and a hint on a mismatch."""
        return [ins[0]]

    def params(self, attrs: Any, ins: list[TensorType]) -> dict[str, tuple[Dim, ...]]:
        """Trainable parameter shapes in the canonical (PyTorch) layout, keyed by local name."""
        return {}

    def buffers(self, attrs: Any, ins: list[TensorType]) -> dict[str, tuple[Dim, ...]]:
        """Non-trainable state (batch-norm running statistics)."""
        return {}

    def flops(self, attrs: Any, ins: list[TensorType], outs: list[TensorType]) -> Dim:
        """Floating-point operations of one forward pass (a multiply-add counts 2)."""
        return sum((numel(o.shape) for o in outs), 0)

    # ---- fresh weights, identities, inputs --------------------------------------------------------
    @property
    def has_params(self) -> bool:
        """Whether the op can carry trainable parameters or buffers (for some attributes)."""
        return type(self).params is not OpDef.params or type(self).buffers is not OpDef.buffers

    def initial(self, attrs: Any, name: str, shapes: dict[str, tuple[int, ...]], rng: Any) -> Any:
        """A fresh value (numpy array) for parameter or buffer `name`, drawn from PyTorch's default
        distribution for it; `shapes` holds every local parameter's shape (fan-in comes from the
        weight)."""
        raise NotImplementedError(f"{self.name} has no initialization rule for `{name}`")

    def noop_reason(self, attrs: Any, ins: list[TensorType], outs: list[TensorType]) -> str | None:
        """Why a node returns its first input unchanged (its output has that input's type), or None."""
        return None

    def index_bound(self, attrs: Any) -> int | None:
        """Integer inputs (token ids) must be below this; None when the op reads no ids."""
        return None


def gate_permutation(op: OpDef, framework: str) -> list[int]:
    """Canonical gate blocks in `framework`'s order: entry i is the canonical index of its i-th gate."""
    order = op.gate_orders.get(framework, op.gate_names)
    return [op.gate_names.index(g) for g in order]


def permute_gates(w: Any, op: OpDef, framework: str, to_framework: bool = True) -> Any:
    """`w` (canonical gate blocks stacked on axis 0) reordered into `framework`'s gate order, or,
    with `to_framework=False`, back from it."""
    import numpy as np

    perm = gate_permutation(op, framework)
    if not to_framework:
        perm = [perm.index(i) for i in range(len(perm))]
    blocks = np.split(np.asarray(w), len(perm), axis=0)
    return np.concatenate([blocks[i] for i in perm], axis=0)


def uniform(rng: Any, bound: float, shape: tuple[int, ...]) -> Any:
    return rng.uniform(-bound, bound, size=shape)


def fan_in(shape: tuple[int, ...]) -> int:
    """torch.nn.init._calculate_fan_in_and_fan_out's fan_in: dim 1 times the receptive field."""
    receptive = math.prod(shape[2:]) if len(shape) > 2 else 1
    return shape[1] * receptive


def linear_init(rng: Any, shape: tuple[int, ...], weight_shape: tuple[int, ...]) -> Any:
    """U(-1/√fan_in, 1/√fan_in) (kaiming_uniform with a=√5 gives exactly that bound for a weight)."""
    f = fan_in(weight_shape)
    return uniform(rng, 1.0 / math.sqrt(f) if f > 0 else 0.0, shape)


def affine_init(name: str, shape: tuple[int, ...]) -> Any:
    """A norm's scale 1 (and running variance 1); its shift 0 (and running mean 0)."""
    import numpy as np

    return np.ones(shape) if name.endswith(("weight", "running_var")) else np.zeros(shape)


def all_equal(v: Any, want: int) -> bool:
    """`v` (an int or a tuple of them) is `want` everywhere."""
    if isinstance(v, (list, tuple)):
        return all(x == want for x in v)
    return v == want


REGISTRY: dict[str, OpDef] = {}


def register(cls: type[OpDef]) -> type[OpDef]:
    if cls.name in REGISTRY:
        raise RuntimeError(f"op {cls.name} registered twice")
    REGISTRY[cls.name] = cls()
    return cls


# ---- helpers used by shape rules -------------------------------------------------------------


def numel(shape: Sequence[Dim]) -> Dim:
    n: Dim = 1
    for d in shape:
        n = n * d
    return n


def as_tuple(v: int | Sequence[int], n: int, what: str) -> tuple[int, ...]:
    if isinstance(v, int):
        return (v,) * n
    t = tuple(v)
    if len(t) != n:
        raise AttrError(f"`{what}` needs {n} values, one per spatial dimension; got {len(t)}")
    return t


def conv_out(size: Dim, k: int, s: int, p: int, d: int = 1) -> Dim:
    """The output length of a convolution or pooling window along one axis."""
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


def same_out(size: Dim, s: int) -> Dim:
    return (size + s - 1) // s


def positive(d: Dim, what: str, hint: str | None = None) -> Dim:
    if isinstance(d, int) and d <= 0:
        raise ShapeError(f"{what} would be {d}", hint=hint, code="E303")
    return d


def dims_equal(a: Dim, b: Dim) -> bool:
    return a == b


def broadcast(a: Sequence[Dim], b: Sequence[Dim], op: str) -> tuple[Dim, ...]:
    """NumPy broadcasting over symbolic shapes; unequal symbolic dims are an error."""
    out: list[Dim] = []
    ra, rb = list(a)[::-1], list(b)[::-1]
    for i in range(max(len(ra), len(rb))):
        x = ra[i] if i < len(ra) else 1
        y = rb[i] if i < len(rb) else 1
        if x == y or y == 1:
            out.append(x)
        elif x == 1:
            out.append(y)
        else:
            sa = "[" + ", ".join(map(str, a)) + "]"
            sb = "[" + ", ".join(map(str, b)) + "]"
            raise ShapeError(
                f"{op}: shapes {sa} and {sb} do not broadcast (axis {-(i + 1)}: {x} vs {y})",
                hint="the two operands differ in size; a projection (dense or a 1×1 conv2d) on one side makes them agree",
                code="E304",
            )
    return tuple(out[::-1])


def norm_axis(axis: int, rank: int, op: str) -> int:
    a = axis + rank if axis < 0 else axis
    if not 0 <= a < rank:
        raise ShapeError(f"{op}: axis {axis} is out of range for a {rank}-D input", code="E305")
    return a


def float_out(t: TensorType) -> str:
    return t.dtype if t.dtype in FLOAT_DTYPES else "float32"


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def static(d: Dim) -> bool:
    return isinstance(d, int)


def _layout_hint(ranks: tuple[int, ...]) -> str:
    layouts = {2: " [N, features]", 3: " [N, C, L]", 4: " [N, C, H, W]", 5: " [N, C, D, H, W]"}
    if len(ranks) == 1 and ranks[0] in layouts:
        return layouts[ranks[0]]
    return ""


def _rank_hint(op: str, ranks: tuple[int, ...], got: TensorType) -> str | None:
    if got.rank == 2 and min(ranks) >= 3:
        return f"{op} works on images or sequences; was there a `flatten()` or `dense` too early?"
    if got.rank >= 3 and ranks == (2,):
        return f"did you forget `flatten()` before `{op}`?"
    if got.rank == 3 and 4 in ranks:
        return "an image input is [batch, channels, height, width]; add the channel axis with unsqueeze(1)"
    return None


def _validation_message(op: str, exc: ValidationError) -> tuple[str, str | None]:
    """The message for attributes pydantic refused, and the first attribute whose value it refused."""
    parts = []
    problems = validation_problems(exc)
    for field, kind, text in problems:
        if kind == "missing":
            parts.append(f"{op} requires `{field}`")
        elif kind == "unknown":
            parts.append(f"{op} has no attribute `{field}`")
        else:
            parts.append(f"`{field}` of {op} {text}")
    return "; ".join(parts), next((f for f, kind, _ in problems if kind == "value"), None)


__all__ = [
    "Attrs",
    "AttrError",
    "Count",
    "CountOrTuple",
    "Size",
    "SizeOrTuple",
    "OpDef",
    "REGISTRY",
    "ShapeError",
    "Sym",
    "TensorType",
    "as_tuple",
    "broadcast",
    "ceil_div",
    "conv_out",
    "float_out",
    "norm_axis",
    "numel",
    "positive",
    "register",
    "same_out",
    "static",
]
