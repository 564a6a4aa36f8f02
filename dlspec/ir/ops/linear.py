"""Dense (fully connected) layers and embeddings."""

from __future__ import annotations

from ..types import INT_DTYPES
from .base import Attrs, Count, OpDef, ShapeError, TensorType, linear_init, numel, register


class DenseAttrs(Attrs):
    units: Count
    bias: bool = True


@register
class Dense(OpDef):
    name = "dense"
    category = "linear"
    summary = "y = x Wᵀ + b over the last axis; weight [units, in] (PyTorch's nn.Linear)."
    Attrs = DenseAttrs
    positional = ("units",)
    output_reusable = True
    bn_fold = "out_first"  # folds only where its features are axis 1 (a [N, features] output)

    def initial(self, a, name, shapes, rng):
        return linear_init(rng, shapes[name], shapes["weight"])

    def validate_attrs(self, a: DenseAttrs) -> None:
        if a.units <= 0:
            from .base import AttrError

            raise AttrError(f"dense needs a positive number of units; got {a.units}")

    def check_inputs(self, a, ins):
        super().check_inputs(a, ins)
        if ins[0].rank < 2:
            raise ShapeError(f"dense expects at least a 2-D input [N, features]; got {ins[0].shape_str()}", code="E302")
        if ins[0].rank >= 4:
            # NCHW activations: a dense over the width axis is never what is meant
            raise ShapeError(
                f"dense expects [N, features] or [N, seq, features]; got the {ins[0].rank}-D {ins[0].shape_str()}",
                hint="did you forget `flatten()` (or `global_avgpool2d()`) before `dense`?",
                code="E302",
            )

    def infer(self, a: DenseAttrs, ins):
        return [ins[0].with_shape((*ins[0].shape[:-1], a.units))]

    def params(self, a: DenseAttrs, ins):
        p = {"weight": (a.units, ins[0].shape[-1])}
        if a.bias:
            p["bias"] = (a.units,)
        return p

    def flops(self, a, ins, outs):
        return 2 * numel(outs[0].shape) * ins[0].shape[-1]


class EmbeddingAttrs(Attrs):
    num: Count
    dim: Count
    padding_idx: int | None = None


@register
class Embedding(OpDef):
    name = "embedding"
    category = "linear"
    summary = "Looks up a row of a [num, dim] table for each integer id; output [..., dim]."
    Attrs = EmbeddingAttrs
    positional = ("num", "dim")
    input_dtypes = INT_DTYPES

    def index_bound(self, a):
        return a.num

    def initial(self, a, name, shapes, rng):
        table = rng.standard_normal(shapes[name])  # N(0, 1), the padding row zero
        if a.padding_idx is not None:
            table[a.padding_idx] = 0.0
        return table

    def check_inputs(self, a, ins):
        if ins[0].dtype not in INT_DTYPES:
            raise ShapeError(
                f"embedding expects integer token ids; got {ins[0].dtype}",
                hint="declare the input as int64[batch, seq]",
                code="E310",
            )

    def infer(self, a: EmbeddingAttrs, ins):
        return [TensorType(dtype="float32", shape=(*ins[0].shape, a.dim))]

    def params(self, a: EmbeddingAttrs, ins):
        return {"weight": (a.num, a.dim)}

    def flops(self, a, ins, outs):
        return 0
