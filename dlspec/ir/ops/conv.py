"""Convolutions (1-D, 2-D, 3-D) and transposed convolutions, NC… layout, OI… kernels."""

from __future__ import annotations

from typing import Literal

from .base import (
    AttrError,
    Attrs,
    Count,
    CountOrTuple,
    OpDef,
    ShapeError,
    SizeOrTuple,
    as_tuple,
    conv_out,
    linear_init,
    numel,
    positive,
    register,
    same_out,
)


class ConvAttrs(Attrs):
    out_channels: Count
    kernel: CountOrTuple
    stride: CountOrTuple = 1
    padding: SizeOrTuple | Literal["same", "valid"] = 0
    dilation: CountOrTuple = 1
    groups: Count = 1
    bias: bool = True


class _Conv(OpDef):
    category = "convolution"
    Attrs = ConvAttrs
    positional = ("out_channels", "kernel")
    spatial: int = 2
    layout = "channels_first"
    output_reusable = True
    bn_fold = "out_first"

    def initial(self, a, name, shapes, rng):
        return linear_init(rng, shapes[name], shapes["weight"])

    @property
    def ranks(self):  # type: ignore[override]
        return (self.spatial + 2,)

    def validate_attrs(self, a: ConvAttrs) -> None:
        n = self.spatial
        for what in ("kernel", "stride", "dilation"):
            vals = as_tuple(getattr(a, what), n, what)
            if any(v <= 0 for v in vals):
                raise AttrError(f"{self.name}: `{what}` must be positive; got {getattr(a, what)}")
        if not isinstance(a.padding, str):
            if any(p < 0 for p in as_tuple(a.padding, n, "padding")):
                raise AttrError(f"{self.name}: `padding` must not be negative")
        if a.out_channels <= 0:
            raise AttrError(f"{self.name} needs a positive number of output channels; got {a.out_channels}")
        if a.groups <= 0 or a.out_channels % a.groups:
            raise AttrError(f"{self.name}: out_channels {a.out_channels} is not divisible by groups {a.groups}")

    def check_inputs(self, a, ins):
        super().check_inputs(a, ins)
        c = ins[0].shape[1]
        if isinstance(c, int) and c % a.groups:
            raise ShapeError(f"{self.name}: input channels {c} are not divisible by groups {a.groups}", code="E306")
        if not isinstance(c, int):
            raise ShapeError(
                f"{self.name} needs a known number of input channels; got {c}",
                hint="the channel axis (axis 1) must be an integer",
                code="E307",
            )

    def spatial_out(self, a: ConvAttrs, sizes):
        n = self.spatial
        k = as_tuple(a.kernel, n, "kernel")
        s = as_tuple(a.stride, n, "stride")
        d = as_tuple(a.dilation, n, "dilation")
        out = []
        for i, size in enumerate(sizes):
            if a.padding == "same":
                out.append(same_out(size, s[i]))
                continue
            p = 0 if a.padding == "valid" else as_tuple(a.padding, n, "padding")[i]
            o = conv_out(size, k[i], s[i], p, d[i])
            out.append(
                positive(
                    o,
                    f"{self.name}: output size along spatial axis {i} (input {size}, kernel {k[i]}, stride {s[i]}, padding {p})",
                    hint="the input is smaller than the kernel; use padding=same or a smaller kernel",
                )
            )
        return out

    def infer(self, a: ConvAttrs, ins):
        x = ins[0]
        return [x.with_shape((x.shape[0], a.out_channels, *self.spatial_out(a, x.shape[2:])))]

    def params(self, a: ConvAttrs, ins):
        k = as_tuple(a.kernel, self.spatial, "kernel")
        p = {"weight": (a.out_channels, ins[0].shape[1] // a.groups, *k)}
        if a.bias:
            p["bias"] = (a.out_channels,)
        return p

    def flops(self, a, ins, outs):
        k = as_tuple(a.kernel, self.spatial, "kernel")
        per_out = (ins[0].shape[1] // a.groups) * numel(k)
        return 2 * numel(outs[0].shape) * per_out


@register
class Conv1d(_Conv):
    name = "conv1d"
    summary = "1-D convolution over [N, C, L]."
    spatial = 1


@register
class Conv2d(_Conv):
    name = "conv2d"
    summary = "2-D convolution over [N, C, H, W]; weight [out, in/groups, kh, kw]."
    spatial = 2


@register
class Conv3d(_Conv):
    name = "conv3d"
    summary = "3-D convolution over [N, C, D, H, W]."
    spatial = 3


class ConvTransposeAttrs(Attrs):
    out_channels: Count
    kernel: CountOrTuple
    stride: CountOrTuple = 1
    padding: SizeOrTuple = 0
    output_padding: SizeOrTuple = 0
    dilation: CountOrTuple = 1
    groups: Count = 1
    bias: bool = True


class _ConvTranspose(_Conv):
    Attrs = ConvTransposeAttrs
    bn_fold = "transposed"

    def validate_attrs(self, a) -> None:
        n = self.spatial
        s = as_tuple(a.stride, n, "stride")
        d = as_tuple(a.dilation, n, "dilation")
        for i, op in enumerate(as_tuple(a.output_padding, n, "output_padding")):
            if op >= max(s[i], d[i]):
                raise AttrError(f"{self.name}: output_padding must be smaller than stride or dilation")
        if a.groups <= 0 or a.out_channels % a.groups:
            raise AttrError(f"{self.name}: out_channels {a.out_channels} is not divisible by groups {a.groups}")

    def spatial_out(self, a, sizes):
        n = self.spatial
        k = as_tuple(a.kernel, n, "kernel")
        s = as_tuple(a.stride, n, "stride")
        p = as_tuple(a.padding, n, "padding")
        op = as_tuple(a.output_padding, n, "output_padding")
        d = as_tuple(a.dilation, n, "dilation")
        return [
            positive((size - 1) * s[i] - 2 * p[i] + d[i] * (k[i] - 1) + op[i] + 1, f"{self.name}: output size")
            for i, size in enumerate(sizes)
        ]

    def params(self, a, ins):
        k = as_tuple(a.kernel, self.spatial, "kernel")
        p = {"weight": (ins[0].shape[1], a.out_channels // a.groups, *k)}
        if a.bias:
            p["bias"] = (a.out_channels,)
        return p

    def flops(self, a, ins, outs):
        k = as_tuple(a.kernel, self.spatial, "kernel")
        return 2 * numel(ins[0].shape) * (a.out_channels // a.groups) * numel(k)


@register
class ConvTranspose1d(_ConvTranspose):
    name = "conv_transpose1d"
    summary = "1-D transposed convolution; weight [in, out/groups, k] (PyTorch's layout)."
    spatial = 1


@register
class ConvTranspose2d(_ConvTranspose):
    name = "conv_transpose2d"
    summary = "2-D transposed convolution; weight [in, out/groups, kh, kw] (PyTorch's layout)."
    spatial = 2
