"""Normalization and dropout."""

from __future__ import annotations

from .base import AttrError, Attrs, Count, OpDef, ShapeError, affine_init, numel, register


class BatchNormAttrs(Attrs):
    eps: float = 1e-5
    momentum: float = 0.1
    affine: bool = True


class _BatchNorm(OpDef):
    category = "normalization"
    Attrs = BatchNormAttrs
    layout = "channels_first"
    output_reusable = True
    folds_into_preceding = True

    def initial(self, a, name, shapes, rng):
        return affine_init(name, shapes[name])

    def check_inputs(self, a, ins):
        super().check_inputs(a, ins)
        if not isinstance(ins[0].shape[1], int):
            raise ShapeError(f"{self.name} needs a known channel count (axis 1); got {ins[0].shape[1]}", code="E307")

    def params(self, a, ins):
        c = ins[0].shape[1]
        return {"weight": (c,), "bias": (c,)} if a.affine else {}

    def buffers(self, a, ins):
        c = ins[0].shape[1]
        return {"running_mean": (c,), "running_var": (c,)}

    def flops(self, a, ins, outs):
        return 2 * numel(ins[0].shape)


@register
class BatchNorm1d(_BatchNorm):
    name = "batchnorm1d"
    summary = "Batch normalization over [N, C] or [N, C, L] (statistics per channel C)."
    ranks = (2, 3)


@register
class BatchNorm2d(_BatchNorm):
    name = "batchnorm2d"
    summary = "Batch normalization over [N, C, H, W]."
    ranks = (4,)


@register
class BatchNorm3d(_BatchNorm):
    name = "batchnorm3d"
    summary = "Batch normalization over [N, C, D, H, W]."
    ranks = (5,)


class LayerNormAttrs(Attrs):
    eps: float = 1e-5
    affine: bool = True


@register
class LayerNorm(OpDef):
    name = "layernorm"
    category = "normalization"
    summary = "Normalizes over the last axis, with a learned scale and shift per feature."
    Attrs = LayerNormAttrs
    output_reusable = True

    def initial(self, a, name, shapes, rng):
        return affine_init(name, shapes[name])

    def check_inputs(self, a, ins):
        super().check_inputs(a, ins)
        if ins and ins[0].rank < 1:
            raise ShapeError("layernorm normalizes over the last axis; a scalar has none", code="E302")

    def params(self, a, ins):
        f = ins[0].shape[-1]
        return {"weight": (f,), "bias": (f,)} if a.affine else {}

    def flops(self, a, ins, outs):
        return 5 * numel(ins[0].shape)


class GroupNormAttrs(Attrs):
    groups: Count
    eps: float = 1e-5
    affine: bool = True


@register
class GroupNorm(OpDef):
    name = "groupnorm"
    category = "normalization"
    summary = "Normalizes channel groups of [N, C, ...]."
    Attrs = GroupNormAttrs
    positional = ("groups",)
    ranks = (3, 4, 5)
    layout = "channels_first"
    output_reusable = True

    def initial(self, a, name, shapes, rng):
        return affine_init(name, shapes[name])

    def validate_attrs(self, a) -> None:
        if a.groups <= 0:
            raise AttrError(f"groupnorm needs a positive number of groups; got {a.groups}")

    def check_inputs(self, a, ins):
        super().check_inputs(a, ins)
        c = ins[0].shape[1]
        if not isinstance(c, int) or c % a.groups:
            raise ShapeError(f"groupnorm: {c} channels do not split into {a.groups} groups", code="E306")

    def params(self, a, ins):
        c = ins[0].shape[1]
        return {"weight": (c,), "bias": (c,)} if a.affine else {}

    def flops(self, a, ins, outs):
        return 5 * numel(ins[0].shape)


class InstanceNormAttrs(Attrs):
    eps: float = 1e-5
    affine: bool = False


@register
class InstanceNorm(OpDef):
    name = "instance_norm"
    category = "normalization"
    summary = ("Normalizes each channel of each sample of [N, C, ...] over its own positions (nn.InstanceNorm1d/2d/"
               "3d, no running statistics); affine=true learns a scale and shift per channel.")
    Attrs = InstanceNormAttrs
    ranks = (3, 4, 5)
    layout = "channels_first"
    output_reusable = True

    def initial(self, a, name, shapes, rng):
        return affine_init(name, shapes[name])

    def check_inputs(self, a, ins):
        super().check_inputs(a, ins)
        if not isinstance(ins[0].shape[1], int):
            raise ShapeError(f"instance_norm needs a known channel count (axis 1); got {ins[0].shape[1]}", code="E307")

    def params(self, a, ins):
        c = ins[0].shape[1]
        return {"weight": (c,), "bias": (c,)} if a.affine else {}

    def flops(self, a, ins, outs):
        return 5 * numel(ins[0].shape)


class LRNAttrs(Attrs):
    size: Count
    alpha: float = 1e-4
    beta: float = 0.75
    k: float = 1.0


@register
class LocalResponseNorm(OpDef):
    name = "lrn"
    category = "normalization"
    summary = (
        "Local response normalization across channels (axis 1) of [N, C, ...]: x / (k + alpha/size · Σ x²)^beta, "
        "the sum over `size` neighbouring channels (size//2 before, (size-1)//2 after, zero-padded), as PyTorch."
    )
    Attrs = LRNAttrs
    positional = ("size",)
    layout = "channels_first"

    def validate_attrs(self, a) -> None:
        if a.size <= 0:
            raise AttrError(f"lrn needs a positive window size; got {a.size}")

    def check_inputs(self, a, ins):
        super().check_inputs(a, ins)
        if ins and ins[0].rank < 3:
            raise ShapeError(
                f"lrn expects an input of rank 3 or more [N, C, ...]; got {ins[0].shape_str()}",
                hint="lrn normalizes across the channels of images or sequences; was there a `flatten()` too early?",
                code="E302",
            )

    def flops(self, a, ins, outs):
        # square, windowed sum (size adds), scale and shift, power, divide
        return (a.size + 5) * numel(ins[0].shape)


class DropoutAttrs(Attrs):
    p: float = 0.5


@register
class Dropout(OpDef):
    name = "dropout"
    category = "regularization"
    summary = "Zeroes elements with probability p while training; the identity in inference."
    Attrs = DropoutAttrs
    positional = ("p",)
    layout = "elementwise"
    stochastic = True

    def noop_reason(self, a, ins, outs):
        return "dropout with p=0" if a.p == 0 else None

    def validate_attrs(self, a: DropoutAttrs) -> None:
        if not 0.0 <= a.p < 1.0:
            raise AttrError(f"dropout probability must be in [0, 1); got {a.p}")

    def flops(self, a, ins, outs):
        return 0
