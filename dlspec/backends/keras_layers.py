"""Small Keras layers for the few IR ops that Keras has no layer for, with PyTorch's semantics.

Each class is self-contained (it uses only `keras`, `ops` and `math`): the Keras backend copies
the source of the classes a model needs into the generated file, so that file runs without
dlspec, and `build_model` uses these very classes. Importing this module imports Keras.
"""

from __future__ import annotations

import itertools
import math

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="dlspec")
class Pad(keras.layers.Layer):
    """Pads every axis by (before, after) like torch.nn.functional.pad: mode constant (with
    `value`, which may be -inf), reflect, or replicate (repeat the edge)."""

    def __init__(self, pads, mode="constant", value=0.0, **kwargs):
        super().__init__(**kwargs)
        self.pads = [tuple(int(v) for v in p) for p in pads]
        self.mode = mode
        self.value = float(value)

    def call(self, x):
        if self.mode == "constant":
            return ops.pad(x, self.pads, constant_values=self.value)
        if self.mode == "reflect":
            return ops.pad(x, self.pads, mode="reflect")
        for axis, (before, after) in enumerate(self.pads):
            if before or after:
                n = ops.shape(x)[axis]
                index = ops.clip(ops.arange(-before, n + after), 0, n - 1)
                x = ops.take(x, index, axis=axis)
        return x

    def get_config(self):
        return {
            **super().get_config(),
            "pads": self.pads,
            "mode": self.mode,
            "value": self.value,
        }


@keras.saving.register_keras_serializable(package="dlspec")
class Transpose(keras.layers.Layer):
    """Reorders all axes, the batch axis included (keras.layers.Permute keeps the batch axis)."""

    def __init__(self, perm, **kwargs):
        super().__init__(**kwargs)
        self.perm = tuple(int(p) for p in perm)

    def call(self, x):
        return ops.transpose(x, self.perm)

    def get_config(self):
        return {**super().get_config(), "perm": self.perm}


@keras.saving.register_keras_serializable(package="dlspec")
class FlattenRange(keras.layers.Layer):
    """Merges axes start..end into one (torch.flatten(x, start, end))."""

    def __init__(self, start, end, **kwargs):
        super().__init__(**kwargs)
        self.start = int(start)
        self.end = int(end)

    def call(self, x):
        shape = ops.shape(x)
        rank = len(shape)
        start, end = self.start % rank, self.end % rank
        merged = 1
        for d in shape[start:end + 1]:
            merged = merged * d
        return ops.reshape(x, (*shape[:start], merged, *shape[end + 1:]))

    def get_config(self):
        return {**super().get_config(), "start": self.start, "end": self.end}


@keras.saving.register_keras_serializable(package="dlspec")
class Squeeze(keras.layers.Layer):
    """Removes an axis of size 1."""

    def __init__(self, axis, **kwargs):
        super().__init__(**kwargs)
        self.axis = int(axis)

    def call(self, x):
        return ops.squeeze(x, axis=self.axis)

    def get_config(self):
        return {**super().get_config(), "axis": self.axis}


@keras.saving.register_keras_serializable(package="dlspec")
class ExpandDims(keras.layers.Layer):
    """Inserts an axis of size 1."""

    def __init__(self, axis, **kwargs):
        super().__init__(**kwargs)
        self.axis = int(axis)

    def call(self, x):
        return ops.expand_dims(x, axis=self.axis)

    def get_config(self):
        return {**super().get_config(), "axis": self.axis}


@keras.saving.register_keras_serializable(package="dlspec")
class Split(keras.layers.Layer):
    """Splits into `parts` equal pieces (an int) or pieces of the listed sizes along `axis`."""

    def __init__(self, parts, axis, **kwargs):
        super().__init__(**kwargs)
        self.parts = parts if isinstance(parts, int) else [int(p) for p in parts]
        self.axis = int(axis)

    def call(self, x):
        if isinstance(self.parts, int):
            return ops.split(x, self.parts, axis=self.axis)
        bounds = [sum(self.parts[:i + 1]) for i in range(len(self.parts) - 1)]
        return ops.split(x, bounds, axis=self.axis)

    def get_config(self):
        return {**super().get_config(), "parts": self.parts, "axis": self.axis}


@keras.saving.register_keras_serializable(package="dlspec")
class Elementwise(keras.layers.Layer):
    """a (op) b with NumPy broadcasting, or a (op) scalar; op is add, sub, mul, div, pow, maximum,
    minimum, a comparison (equal, less, less_equal, greater, greater_equal: a bool tensor) or
    logical_and, logical_or of two bool tensors."""

    def __init__(self, op, scalar=None, **kwargs):
        super().__init__(**kwargs)
        self.op = op
        self.scalar = scalar

    def call(self, a, b=None):
        rhs = self.scalar if b is None else b
        fn = {"add": ops.add, "sub": ops.subtract, "mul": ops.multiply, "div": ops.divide, "pow": ops.power,
              "maximum": ops.maximum, "minimum": ops.minimum, "equal": ops.equal, "less": ops.less,
              "less_equal": ops.less_equal, "greater": ops.greater, "greater_equal": ops.greater_equal,
              "logical_and": ops.logical_and, "logical_or": ops.logical_or}[self.op]
        return fn(a, rhs)

    def get_config(self):
        return {**super().get_config(), "op": self.op, "scalar": self.scalar}


@keras.saving.register_keras_serializable(package="dlspec")
class Where(keras.layers.Layer):
    """a where the condition holds, else b, broadcast together (torch.where); a_value or b_value
    is a number in place of that tensor."""

    def __init__(self, a_value=None, b_value=None, **kwargs):
        super().__init__(**kwargs)
        self.a_value = a_value
        self.b_value = b_value

    def call(self, condition, *tensors):
        rest = iter(tensors)
        a = self.a_value if self.a_value is not None else next(rest)
        b = self.b_value if self.b_value is not None else next(rest)
        return ops.where(condition, a, b)

    def get_config(self):
        return {**super().get_config(), "a_value": self.a_value, "b_value": self.b_value}


@keras.saving.register_keras_serializable(package="dlspec")
class Math(keras.layers.Layer):
    """One element-wise function: exp, log, sqrt, absolute, reciprocal or logical_not (of a bool tensor)."""

    FUNCTIONS = {"exp": ops.exp, "log": ops.log, "sqrt": ops.sqrt, "absolute": ops.absolute, "reciprocal": ops.reciprocal,
                 "logical_not": ops.logical_not}

    def __init__(self, fn, **kwargs):
        super().__init__(**kwargs)
        if fn not in self.FUNCTIONS:
            raise ValueError(f"unknown element-wise function {fn!r}")
        self.fn = fn

    def call(self, x):
        return self.FUNCTIONS[self.fn](x)

    def get_config(self):
        return {**super().get_config(), "fn": self.fn}


@keras.saving.register_keras_serializable(package="dlspec")
class Reduce(keras.layers.Layer):
    """Sum, mean or max over axes of the canonical (channels-first) tensor."""

    FUNCTIONS = {"sum": ops.sum, "mean": ops.mean, "max": ops.max}

    def __init__(self, kind, axes, keepdims=False, **kwargs):
        super().__init__(**kwargs)
        if kind not in self.FUNCTIONS:
            raise ValueError(f"unknown reduction {kind!r}")
        self.kind = kind
        self.axes = tuple(int(ax) for ax in axes)
        self.keepdims = bool(keepdims)

    def call(self, x):
        return self.FUNCTIONS[self.kind](x, axis=self.axes, keepdims=self.keepdims)

    def get_config(self):
        return {**super().get_config(), "kind": self.kind, "axes": self.axes, "keepdims": self.keepdims}


@keras.saving.register_keras_serializable(package="dlspec")
class PadTo(keras.layers.Layer):
    """Zeros around the spatial axes of the canonical (channels-first) x up to the sizes of `like`:
    a difference d gets d // 2 before and the rest after (dlspec's pad_to)."""

    def call(self, x, like):
        xs, ls = ops.shape(x), ops.shape(like)
        pads = [[0, 0], [0, 0]]
        for axis in range(2, len(x.shape)):
            d = ls[axis] - xs[axis]
            pads.append([d // 2, d - d // 2])
        return ops.pad(x, pads)


@keras.saving.register_keras_serializable(package="dlspec")
class CropTo(keras.layers.Layer):
    """The centre of the spatial axes of the canonical (channels-first) x at the sizes of `like`:
    a difference d drops d // 2 before and the rest after (dlspec's crop_to)."""

    def call(self, x, like):
        xs, ls = ops.shape(x), ops.shape(like)
        rank = len(x.shape)
        start = [0, 0] + [(xs[a] - ls[a]) // 2 for a in range(2, rank)]
        return ops.slice(x, start, [xs[0], xs[1], *[ls[a] for a in range(2, rank)]])


@keras.saving.register_keras_serializable(package="dlspec")
class ArgMax(keras.layers.Layer):
    """The int64 index of the largest value along an axis of the canonical tensor (torch.argmax)."""

    def __init__(self, axis, keepdims=False, **kwargs):
        super().__init__(**kwargs)
        self.axis = int(axis)
        self.keepdims = bool(keepdims)

    def call(self, x):
        out = ops.cast(ops.argmax(x, axis=self.axis), "int64")
        return ops.expand_dims(out, self.axis) if self.keepdims else out

    def get_config(self):
        return {**super().get_config(), "axis": self.axis, "keepdims": self.keepdims}


@keras.saving.register_keras_serializable(package="dlspec")
class Cast(keras.layers.Layer):
    """The tensor converted to another dtype (dlspec's cast; x.to(dtype) in PyTorch)."""

    def __init__(self, dtype, **kwargs):
        kwargs.pop("dtype", None)
        super().__init__(**kwargs)
        self.to = dtype

    def call(self, x):
        return ops.cast(x, self.to)

    def get_config(self):
        return {**super().get_config(), "dtype": self.to}


@keras.saving.register_keras_serializable(package="dlspec")
class TopK(keras.layers.Layer):
    """The k largest (or smallest) values along an axis of the canonical tensor, sorted, and their
    int64 indices (torch.topk); keras.ops.top_k works on the last axis, so the axis moves there and
    back, and the smallest are the largest of −x."""

    def __init__(self, k, axis, largest=True, **kwargs):
        super().__init__(**kwargs)
        self.k = int(k)
        self.axis = int(axis)
        self.largest = bool(largest)

    def call(self, x):
        last = len(x.shape) - 1
        y = x if self.axis == last else ops.moveaxis(x, self.axis, last)
        values, indices = ops.top_k(y if self.largest else ops.negative(y), self.k, sorted=True)
        if not self.largest:
            values = ops.negative(values)
        indices = ops.cast(indices, "int64")
        if self.axis != last:
            values, indices = ops.moveaxis(values, last, self.axis), ops.moveaxis(indices, last, self.axis)
        return [values, indices]

    def get_config(self):
        return {**super().get_config(), "k": self.k, "axis": self.axis, "largest": self.largest}


@keras.saving.register_keras_serializable(package="dlspec")
class Tile(keras.layers.Layer):
    """Repeats the canonical (channels-first) tensor reps[i] times along each axis (torch's repeat)."""

    def __init__(self, reps, **kwargs):
        super().__init__(**kwargs)
        self.reps = tuple(int(r) for r in reps)

    def call(self, x):
        return ops.tile(x, self.reps)

    def get_config(self):
        return {**super().get_config(), "reps": self.reps}


@keras.saving.register_keras_serializable(package="dlspec")
class Parameter(keras.layers.Layer):
    """A learned tensor of `shape`, stored [1, *shape] and repeated over the input's batch (the
    input gives only the batch size): a positional embedding or a class token."""

    def __init__(self, shape, init="normal", std=0.02, **kwargs):
        super().__init__(**kwargs)
        self.target_shape = tuple(int(d) for d in shape)
        self.init = init
        self.std = float(std)

    def build(self, input_shape):
        initializer = "zeros" if self.init == "zeros" else keras.initializers.RandomNormal(stddev=self.std)
        self.weight = self.add_weight(name="weight", shape=(1, *self.target_shape), initializer=initializer)

    def call(self, x):
        return ops.broadcast_to(self.weight, (ops.shape(x)[0], *self.target_shape))

    def get_config(self):
        return {**super().get_config(), "shape": self.target_shape, "init": self.init, "std": self.std}


@keras.saving.register_keras_serializable(package="dlspec")
class Select(keras.layers.Layer):
    """The slice at `index` (−1: the last) along `axis`, the axis removed (torch's x.select)."""

    def __init__(self, axis, index, **kwargs):
        super().__init__(**kwargs)
        self.axis = int(axis)
        self.index = int(index)

    def call(self, x):
        index = (slice(None),) * self.axis + (self.index,)
        return x[index]

    def get_config(self):
        return {**super().get_config(), "axis": self.axis, "index": self.index}


@keras.saving.register_keras_serializable(package="dlspec")
class MatMul(keras.layers.Layer):
    """Batched matrix product with broadcasting (torch.matmul)."""

    def call(self, a, b):
        return ops.matmul(a, b)


@keras.saving.register_keras_serializable(package="dlspec")
class Clip(keras.layers.Layer):
    """Clamps to [min_value, max_value] (torch's hardtanh)."""

    def __init__(self, min_value, max_value, **kwargs):
        super().__init__(**kwargs)
        self.min_value = float(min_value)
        self.max_value = float(max_value)

    def call(self, x):
        return ops.clip(x, self.min_value, self.max_value)

    def get_config(self):
        return {**super().get_config(), "min_value": self.min_value, "max_value": self.max_value}


@keras.saving.register_keras_serializable(package="dlspec")
class TanhGelu(keras.layers.Layer):
    """GELU with the tanh approximation (torch's gelu(approximate='tanh'))."""

    def call(self, x):
        return keras.activations.gelu(x, approximate=True)


@keras.saving.register_keras_serializable(package="dlspec")
class LogSoftmax(keras.layers.Layer):
    """log(softmax(x)) over `axis`, computed stably."""

    def __init__(self, axis=-1, **kwargs):
        super().__init__(**kwargs)
        self.axis = int(axis)

    def call(self, x):
        return ops.log_softmax(x, axis=self.axis)

    def get_config(self):
        return {**super().get_config(), "axis": self.axis}


@keras.saving.register_keras_serializable(package="dlspec")
class AttentionMask(keras.layers.Layer):
    """Turns a mask (true or non-zero = may attend) into the [N, Lq, Lk] boolean mask that
    keras.layers.MultiHeadAttention takes. kind: 'full' [Lq, Lk], 'batched' [N, Lq, Lk] or
    'padding' [N, Lk] (a key padding mask)."""

    def __init__(self, kind, **kwargs):
        super().__init__(**kwargs)
        self.kind = kind

    def call(self, mask, query, key):
        allowed = mask if mask.dtype == "bool" else ops.not_equal(mask, 0)
        n, lq, lk = ops.shape(query)[0], ops.shape(query)[1], ops.shape(key)[1]
        if self.kind == "full":
            allowed = ops.expand_dims(allowed, 0)
        elif self.kind == "padding":
            allowed = ops.expand_dims(allowed, 1)
        return ops.broadcast_to(allowed, (n, lq, lk))

    def get_config(self):
        return {**super().get_config(), "kind": self.kind}


@keras.saving.register_keras_serializable(package="dlspec")
class Unstack(keras.layers.Layer):
    """Splits axis 0 into a list of tensors (initial states [layers·directions, N, H])."""

    def __init__(self, count, **kwargs):
        super().__init__(**kwargs)
        self.count = int(count)

    def call(self, x):
        return [x[i] for i in range(self.count)]

    def get_config(self):
        return {**super().get_config(), "count": self.count}


@keras.saving.register_keras_serializable(package="dlspec")
class Stack(keras.layers.Layer):
    """Stacks tensors along a new axis 0 (final states into [layers·directions, N, H])."""

    def call(self, xs):
        return ops.stack(xs, axis=0)


@keras.saving.register_keras_serializable(package="dlspec")
class Subsample(keras.layers.Layer):
    """Keeps every stride-th position of each spatial axis of a channels-last tensor: a strided
    convolution computed as a dilated one at stride 1 (Keras cannot combine the two)."""

    def __init__(self, strides, **kwargs):
        super().__init__(**kwargs)
        self.strides = tuple(int(s) for s in strides)

    def call(self, x):
        index = (slice(None), *(slice(None, None, s) for s in self.strides), slice(None))
        return x[index]

    def get_config(self):
        return {**super().get_config(), "strides": self.strides}


@keras.saving.register_keras_serializable(package="dlspec")
class CeilModePool(keras.layers.Layer):
    """Max or average pooling of a channels-last tensor with PyTorch's ceil_mode=True: the last
    window may run past the input; an average divides by the part of the window inside the
    zero-padded input (count_include_pad=True)."""

    def __init__(self, kind, kernel, stride, padding, dilation=None, ceil_mode=True, **kwargs):
        super().__init__(**kwargs)
        self.kind = kind
        self.kernel = tuple(int(k) for k in kernel)
        self.stride = tuple(int(s) for s in stride)
        self.padding = tuple(int(p) for p in padding)
        self.dilation = tuple(int(d) for d in dilation) if dilation is not None else (1,) * len(self.kernel)
        self.ceil_mode = bool(ceil_mode)

    def _outs(self, sizes):
        outs = []
        for size, k, s, p, d in zip(sizes, self.kernel, self.stride, self.padding, self.dilation):
            e = d * (k - 1) + 1
            if not self.ceil_mode:
                outs.append((size + 2 * p - e) // s + 1)
                continue
            out = -(-(size + 2 * p - e) // s) + 1
            if (out - 1) * s >= size + p:
                out -= 1
            outs.append(out)
        return outs

    def _extra(self, sizes):
        return [max((o - 1) * s + d * (k - 1) + 1 - (size + 2 * p), 0)
                for o, size, k, s, p, d in zip(self._outs(sizes), sizes, self.kernel, self.stride, self.padding,
                                               self.dilation)]

    def call(self, x):
        sizes = x.shape[1:-1]
        extra = self._extra(sizes)
        pads = [(0, 0), *((p, p + e) for p, e in zip(self.padding, extra)), (0, 0)]
        if any(d != 1 for d in self.dilation):  # max pooling only: the max over each window offset
            padded = ops.pad(x, pads, constant_values=-math.inf)
            outs = self._outs(sizes)
            best = None
            for offset in itertools.product(*(range(k) for k in self.kernel)):
                index = (slice(None), *(slice(o * d, o * d + (n - 1) * s + 1, s) for o, d, n, s in
                                        zip(offset, self.dilation, outs, self.stride)), slice(None))
                part = padded[index]
                best = part if best is None else ops.maximum(best, part)
            return best
        if self.kind == "max":
            padded = ops.pad(x, pads, constant_values=-math.inf)
            return ops.max_pool(padded, self.kernel, self.stride, padding="valid")
        total = ops.average_pool(ops.pad(x, pads), self.kernel, self.stride, padding="valid")
        inside = ops.ones((1, *(n + 2 * p for n, p in zip(sizes, self.padding)), 1), dtype=x.dtype)
        inside = ops.pad(inside, [(0, 0), *((0, e) for e in extra), (0, 0)])
        share = ops.average_pool(inside, self.kernel, self.stride, padding="valid")
        return total / share

    def get_config(self):
        return {**super().get_config(), "kind": self.kind, "kernel": self.kernel, "stride": self.stride,
                "padding": self.padding, "dilation": self.dilation, "ceil_mode": self.ceil_mode}


@keras.saving.register_keras_serializable(package="dlspec")
class AdaptivePool(keras.layers.Layer):
    """Adaptive max or average pooling of a channels-last tensor to a fixed size, with PyTorch's
    bins: bin i covers [floor(i·n/out), ceil((i+1)·n/out))."""

    def __init__(self, kind, output_size, **kwargs):
        super().__init__(**kwargs)
        self.kind = kind
        self.output_size = tuple(int(o) for o in output_size)

    def call(self, x):
        reduce = ops.max if self.kind == "max" else ops.mean
        for axis, out in enumerate(self.output_size, start=1):
            n = x.shape[axis]
            pieces = []
            for i in range(out):
                lo, hi = (i * n) // out, -(-((i + 1) * n) // out)
                window = ops.take(x, ops.arange(lo, hi), axis=axis)
                pieces.append(reduce(window, axis=axis, keepdims=True))
            x = ops.concatenate(pieces, axis=axis)
        return x

    def get_config(self):
        return {**super().get_config(), "kind": self.kind, "output_size": self.output_size}


@keras.saving.register_keras_serializable(package="dlspec")
class Resize(keras.layers.Layer):
    """Resizes the spatial axes of a channels-last tensor like torch.nn.functional.interpolate:
    mode nearest (source index floor(i·in/out)) or (bi)linear, with or without align_corners."""

    def __init__(self, size, mode="nearest", align_corners=False, **kwargs):
        super().__init__(**kwargs)
        self.size = tuple(int(s) for s in size)
        self.mode = mode
        self.align_corners = bool(align_corners)

    def call(self, x):
        for axis, out in enumerate(self.size, start=1):
            n = x.shape[axis]
            if self.mode == "nearest":
                index = [min((i * n) // out, n - 1) for i in range(out)]
                x = ops.take(x, ops.convert_to_tensor(index, dtype="int32"), axis=axis)
                continue
            if self.align_corners:
                pos = [i * (n - 1) / (out - 1) if out > 1 else 0.0 for i in range(out)]
            else:
                pos = [max((i + 0.5) * n / out - 0.5, 0.0) for i in range(out)]
            lo = [min(int(math.floor(p)), n - 1) for p in pos]
            hi = [min(i + 1, n - 1) for i in lo]
            shape = [1] * len(x.shape)
            shape[axis] = out
            frac = ops.reshape(ops.convert_to_tensor([p - i for p, i in zip(pos, lo)], dtype=x.dtype), shape)
            a = ops.take(x, ops.convert_to_tensor(lo, dtype="int32"), axis=axis)
            b = ops.take(x, ops.convert_to_tensor(hi, dtype="int32"), axis=axis)
            x = a + (b - a) * frac
        return x

    def get_config(self):
        return {**super().get_config(), "size": self.size, "mode": self.mode, "align_corners": self.align_corners}


@keras.saving.register_keras_serializable(package="dlspec")
class LocalResponseNorm(keras.layers.Layer):
    """torch.nn.LocalResponseNorm on a channels-last tensor: x / (k + alpha · mean of x² over `size`
    channels)^beta, the window size // 2 channels before and (size - 1) // 2 after, zero-padded."""

    def __init__(self, size, alpha=1e-4, beta=0.75, k=1.0, **kwargs):
        super().__init__(**kwargs)
        self.size = int(size)
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.k = float(k)

    def call(self, x):
        rank = len(x.shape)
        channels = ops.shape(x)[-1]
        padded = ops.pad(ops.square(x), [(0, 0)] * (rank - 1) + [(self.size // 2, (self.size - 1) // 2)])
        total = padded[..., 0:channels]
        for i in range(1, self.size):
            total = total + padded[..., i:i + channels]
        return x / ops.power(self.k + self.alpha * (total / self.size), self.beta)

    def get_config(self):
        return {**super().get_config(), "size": self.size, "alpha": self.alpha, "beta": self.beta, "k": self.k}
