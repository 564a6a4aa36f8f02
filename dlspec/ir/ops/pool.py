"""Pooling (windowed, global, adaptive) and upsampling."""

from __future__ import annotations

from typing import Literal

from ..dims import Dim
from .base import (
    AttrError,
    Attrs,
    CountOrTuple,
    OpDef,
    ShapeError,
    SizeOrTuple,
    all_equal,
    as_tuple,
    conv_out,
    numel,
    positive,
    register,
)


class PoolAttrs(Attrs):
    kernel: CountOrTuple
    stride: CountOrTuple | None = None
    padding: SizeOrTuple = 0
    ceil_mode: bool = False


def pool_out(size: Dim, k: int, s: int, p: int, d: int = 1, ceil_mode: bool = False) -> Dim:
    """PyTorch's output length of a pooling window along one axis (`pooling_output_shape`).

    With ceil_mode the last window may run past the input, but a window that would start inside
    the right padding is dropped: the output is min(ceil((L + 2p − e) / s), floor((L + p − 1) / s)) + 1
    with e = d·(k − 1) + 1. The two bounds differ by at most one and which is smaller depends only on
    s ≥ e − p, not on L, so the rule stays exact for a symbolic L."""
    if not ceil_mode:
        return conv_out(size, k, s, p, d)
    extent = d * (k - 1) + 1
    if s >= extent - p:
        return (size + p - 1) // s + 1
    return (size + 2 * p - extent + s - 1) // s + 1


class MaxPoolAttrs(PoolAttrs):
    dilation: CountOrTuple = 1


class _Pool(OpDef):
    category = "pooling"
    Attrs = PoolAttrs
    positional = ("kernel",)
    spatial = 2
    layout = "channels_first"
    #: the unpadded input must be at least the kernel along every axis (PyTorch's avg_pool3d)
    input_covers_kernel = False

    def noop_reason(self, a, ins, outs):
        stride = a.stride if a.stride is not None else 1
        if all_equal(a.kernel, 1) and all_equal(stride, 1) and all_equal(a.padding, 0) and not a.ceil_mode:
            return "pooling over a 1-wide window"
        return None

    @property
    def ranks(self):  # type: ignore[override]
        return (self.spatial + 2,)

    def validate_attrs(self, a: PoolAttrs) -> None:
        k = as_tuple(a.kernel, self.spatial, "kernel")
        p = as_tuple(a.padding, self.spatial, "padding")
        if any(v <= 0 for v in k):
            raise AttrError(f"{self.name}: `kernel` must be positive")
        if any(2 * pi > ki for pi, ki in zip(p, k)):
            raise AttrError(f"{self.name}: padding {a.padding} is more than half the kernel {a.kernel}")

    def infer(self, a: PoolAttrs, ins):
        n = self.spatial
        x = ins[0]
        k = as_tuple(a.kernel, n, "kernel")
        s = as_tuple(a.stride if a.stride is not None else a.kernel, n, "stride")
        p = as_tuple(a.padding, n, "padding")
        d = as_tuple(getattr(a, "dilation", 1), n, "dilation")
        if self.input_covers_kernel:
            for i, size in enumerate(x.shape[2:]):
                if isinstance(size, int) and size < k[i]:
                    raise ShapeError(f"{self.name}: spatial axis {i} of {x.shape_str()} is smaller than the kernel "
                                     f"{k[i]}", hint="PyTorch's 3-D average pooling refuses an input smaller than "
                                                     "its window, padding or not", code="E303")
        out = [positive(pool_out(size, k[i], s[i], p[i], d[i], a.ceil_mode),
                        f"{self.name}: output size along spatial axis {i} (input {size}, kernel {k[i]})",
                        hint="the input is already smaller than the pooling window")
               for i, size in enumerate(x.shape[2:])]
        return [x.with_shape((*x.shape[:2], *out))]

    def flops(self, a, ins, outs):
        return numel(outs[0].shape) * numel(as_tuple(a.kernel, self.spatial, "kernel"))


@register
class MaxPool1d(_Pool):
    name = "maxpool1d"
    Attrs = MaxPoolAttrs
    summary = "Max over sliding windows of [N, C, L]."
    spatial = 1


@register
class MaxPool2d(_Pool):
    name = "maxpool2d"
    Attrs = MaxPoolAttrs
    summary = "Max over sliding windows of [N, C, H, W]."
    spatial = 2


@register
class MaxPool3d(_Pool):
    name = "maxpool3d"
    Attrs = MaxPoolAttrs
    summary = "Max over sliding windows of [N, C, D, H, W]."
    spatial = 3


@register
class AvgPool1d(_Pool):
    name = "avgpool1d"
    summary = "Mean over sliding windows of [N, C, L] (padding counts as zeros)."
    spatial = 1


@register
class AvgPool2d(_Pool):
    name = "avgpool2d"
    summary = "Mean over sliding windows of [N, C, H, W] (padding counts as zeros)."
    spatial = 2


@register
class AvgPool3d(_Pool):
    name = "avgpool3d"
    summary = "Mean over sliding windows of [N, C, D, H, W] (padding counts as zeros)."
    spatial = 3
    input_covers_kernel = True


class GlobalPoolAttrs(Attrs):
    keepdims: bool = False


class _GlobalPool(OpDef):
    category = "pooling"
    Attrs = GlobalPoolAttrs
    spatial = 2
    layout = "channels_first"

    @property
    def ranks(self):  # type: ignore[override]
        return (self.spatial + 2,)

    def infer(self, a: GlobalPoolAttrs, ins):
        x = ins[0]
        shape = (*x.shape[:2], *([1] * self.spatial)) if a.keepdims else x.shape[:2]
        return [x.with_shape(shape)]

    def flops(self, a, ins, outs):
        return numel(ins[0].shape)


@register
class GlobalAvgPool1d(_GlobalPool):
    name = "global_avgpool1d"
    summary = "Mean over the length axis: [N, C, L] → [N, C]."
    spatial = 1


@register
class GlobalAvgPool2d(_GlobalPool):
    name = "global_avgpool2d"
    summary = "Mean over height and width: [N, C, H, W] → [N, C] (keepdims=true: [N, C, 1, 1])."
    spatial = 2


@register
class GlobalMaxPool1d(_GlobalPool):
    name = "global_maxpool1d"
    summary = "Max over the length axis: [N, C, L] → [N, C]."
    spatial = 1


@register
class GlobalMaxPool2d(_GlobalPool):
    name = "global_maxpool2d"
    summary = "Max over height and width: [N, C, H, W] → [N, C]."
    spatial = 2


class AdaptivePoolAttrs(Attrs):
    output_size: CountOrTuple


class _AdaptivePool(OpDef):
    category = "pooling"
    Attrs = AdaptivePoolAttrs
    positional = ("output_size",)
    spatial = 2
    layout = "channels_first"

    def noop_reason(self, a, ins, outs):
        return "adaptive pooling to the size the input has"

    @property
    def ranks(self):  # type: ignore[override]
        return (self.spatial + 2,)

    def infer(self, a, ins):
        x = ins[0]
        return [x.with_shape((*x.shape[:2], *as_tuple(a.output_size, self.spatial, "output_size")))]

    def flops(self, a, ins, outs):
        return numel(ins[0].shape)


@register
class AdaptiveAvgPool1d(_AdaptivePool):
    name = "adaptive_avgpool1d"
    summary = "Mean pooling to a fixed output length."
    spatial = 1


@register
class AdaptiveAvgPool2d(_AdaptivePool):
    name = "adaptive_avgpool2d"
    summary = "Mean pooling to a fixed output size (PyTorch's AdaptiveAvgPool2d bins)."
    spatial = 2


@register
class AdaptiveMaxPool1d(_AdaptivePool):
    name = "adaptive_maxpool1d"
    summary = "Max pooling to a fixed output length."
    spatial = 1


@register
class AdaptiveMaxPool2d(_AdaptivePool):
    name = "adaptive_maxpool2d"
    summary = "Max pooling to a fixed output size."
    spatial = 2


class UpsampleAttrs(Attrs):
    scale: CountOrTuple | None = None
    size: CountOrTuple | None = None
    mode: Literal["nearest", "bilinear", "linear"] = "nearest"
    align_corners: bool = False


@register
class Upsample(OpDef):
    name = "upsample"
    category = "pooling"
    summary = "Resizes [N, C, L] or [N, C, H, W] by an integer scale or to a size (nearest, (bi)linear)."
    Attrs = UpsampleAttrs
    positional = ("scale",)
    ranks = (3, 4)
    layout = "channels_first"

    def noop_reason(self, a, ins, outs):
        return "upsampling to the same size"

    def validate_attrs(self, a: UpsampleAttrs) -> None:
        if (a.scale is None) == (a.size is None):
            raise AttrError("upsample takes exactly one of `scale` or `size`")
        if a.align_corners and a.mode == "nearest":
            raise AttrError("upsample: align_corners applies to linear and bilinear modes only")

    def infer(self, a: UpsampleAttrs, ins):
        x = ins[0]
        n = x.rank - 2
        if a.mode == "bilinear" and n != 2:
            raise ShapeError("upsample: bilinear needs a 4-D input [N, C, H, W]; use mode=linear for [N, C, L]", code="E302")
        if a.mode == "linear" and n != 1:
            raise ShapeError("upsample: linear needs a 3-D input [N, C, L]; use mode=bilinear for images", code="E302")
        if a.size is not None:
            spatial = as_tuple(a.size, n, "size")
        else:
            spatial = tuple(d * s for d, s in zip(x.shape[2:], as_tuple(a.scale, n, "scale")))
        return [x.with_shape((*x.shape[:2], *spatial))]
