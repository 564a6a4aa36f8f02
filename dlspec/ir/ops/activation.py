"""Activation functions: element-wise, and softmax over an axis."""

from __future__ import annotations

from typing import Literal

from .base import AttrError, Attrs, OpDef, ShapeError, norm_axis, numel, register


class _Activation(OpDef):
    category = "activation"
    layout = "elementwise"
    cost = 1

    def flops(self, a, ins, outs):
        return self.cost * numel(outs[0].shape)


def _simple(op_name: str, text: str, cost: int = 1) -> None:
    register(type(op_name.title().replace("_", ""), (_Activation,), {"name": op_name, "summary": text, "cost": cost}))


_simple("relu", "max(x, 0)")
_simple("relu6", "min(max(x, 0), 6) (PyTorch's ReLU6, MobileNet's activation).", 2)
_simple("selu", "Scaled ELU with the self-normalizing constants.", 4)
_simple("silu", "x · sigmoid(x) (swish).", 4)
_simple("sigmoid", "1 / (1 + e⁻ˣ).", 4)
_simple("tanh", "Hyperbolic tangent.", 4)
_simple("softplus", "log(1 + eˣ) (PyTorch's Softplus with beta 1, Keras's softplus).", 4)
_simple("softsign", "x / (1 + |x|).", 3)
_simple("hardsigmoid", "relu6(x + 3) / 6 (PyTorch's Hardsigmoid, Keras 3's hard_sigmoid; MobileNetV3).", 3)
_simple("hardswish", "x · relu6(x + 3) / 6 (PyTorch's Hardswish, Keras's hard_silu; MobileNetV3).", 4)
_simple("mish", "x · tanh(softplus(x)) (PyTorch's Mish, Keras's mish).", 6)


class LeakyReluAttrs(Attrs):
    slope: float = 0.01


@register
class LeakyRelu(_Activation):
    name = "leaky_relu"
    summary = "x if x > 0 else slope · x."
    Attrs = LeakyReluAttrs
    positional = ("slope",)


class PReluAttrs(Attrs):
    per_channel: bool = False


@register
class PRelu(_Activation):
    name = "prelu"
    summary = ("x if x > 0 else a · x with a learned slope a: one for all (PyTorch's nn.PReLU()), or one per "
               "channel of axis 1 (per_channel=true: nn.PReLU(C)); slopes start at 0.25.")
    Attrs = PReluAttrs
    layout = "channels_first"
    cost = 2

    def check_inputs(self, a, ins):
        super().check_inputs(a, ins)
        if a.per_channel:
            if ins[0].rank < 2:
                raise ShapeError(f"prelu(per_channel=true) needs a channel axis (axis 1); got {ins[0].shape_str()}",
                                 code="E302")
            if not isinstance(ins[0].shape[1], int):
                raise ShapeError(f"prelu(per_channel=true): the channel axis of {ins[0].shape_str()} is symbolic",
                                 hint="a slope per channel needs a known channel count", code="E306")

    def params(self, a, ins):
        return {"weight": (ins[0].shape[1] if a.per_channel else 1,)}

    def initial(self, a, name, shapes, rng):
        import numpy as np

        return np.full(shapes[name], 0.25)


class EluAttrs(Attrs):
    alpha: float = 1.0


@register
class Elu(_Activation):
    name = "elu"
    summary = "x if x > 0 else alpha · (eˣ − 1)."
    Attrs = EluAttrs
    positional = ("alpha",)
    cost = 4


class GeluAttrs(Attrs):
    approximate: Literal["none", "tanh"] = "none"


@register
class Gelu(_Activation):
    name = "gelu"
    summary = "x · Φ(x); approximate=tanh uses the tanh formula."
    Attrs = GeluAttrs
    cost = 8


class HardtanhAttrs(Attrs):
    min: float = -1.0
    max: float = 1.0


@register
class Hardtanh(_Activation):
    name = "hardtanh"
    summary = "Clamps to [min, max]."
    Attrs = HardtanhAttrs
    positional = ("min", "max")

    def validate_attrs(self, a: HardtanhAttrs) -> None:
        if a.min >= a.max:
            raise AttrError(f"hardtanh: min {a.min} must be below max {a.max}")


class SoftmaxAttrs(Attrs):
    axis: int = -1


class _Softmax(_Activation):
    Attrs = SoftmaxAttrs
    layout = None  # over one axis: a channels-last layout would move it
    positional = ("axis",)
    cost = 5

    def infer(self, a, ins):
        norm_axis(a.axis, ins[0].rank, self.name)
        if ins[0].rank == 0:
            raise ShapeError(f"{self.name} needs at least one axis", code="E302")
        return [ins[0]]


@register
class Softmax(_Softmax):
    name = "softmax"
    summary = "Normalized exponentials over an axis (default the last)."


@register
class LogSoftmax(_Softmax):
    name = "log_softmax"
    summary = "log(softmax(x)) over an axis, computed stably."
