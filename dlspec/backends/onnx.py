"""ONNX backend: IR graph → `onnx.ModelProto` built node by node with `onnx.helper`, run on onnxruntime.

One lowering per op (`LOWERINGS`), each emitting standard ONNX ops in NCHW with PyTorch's
semantics (inference mode: batch norm uses its running statistics, dropout is the identity).

Names. Graph inputs and outputs carry the spec's names; every IR value keeps its name (with
`#k` written `_outk`, and anything outside `[A-Za-z0-9_.:/-]` replaced), made unique. Helper
values are `<layer path>/<what>`. Symbolic dimensions become `dim_param`s spelled as dlspec
prints them (`batch`), on the inputs, the outputs and — as `value_info` — every IR value.

Initializers. A parameter that ONNX consumes as it is keeps its IR path and canonical array
(`stem.conv.weight`); one that ONNX needs rearranged is converted once, at build time, into an
initializer named `<layer path>::<what>` (`encoder::W_l0`: an LSTM's gates reordered from
PyTorch's i,f,g,o to ONNX's i,o,f,c). Recurrent layers run one ONNX LSTM/GRU/RNN per layer in
ONNX's default layout ([T, N, F]), with transposes at the ends.
"""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..errors import Diagnostic, DlspecError
from ..ir.graph import Graph, Node
from ..ir.ops import get_op
from ..ir.ops.base import as_tuple, permute_gates
from ..ir.time_major import batch_first
from ..ir.types import TensorType
from ..lazy import lazy
from ..version import __version__
from .lowering import Lowerings, TableBackend

if TYPE_CHECKING:
    import numpy as np
else:
    np = lazy("numpy")  # imported on first use: `dlspec check` (W108) lowers no weights

TARGET = "onnx"

#: the newest opset whose every op used here has an onnxruntime 1.32 CPU kernel at its latest version
DEFAULT_OPSET = 28
#: LayerNormalization (layernorm, the transformer encoder) exists from opset 17
MIN_OPSET = 17

__all__ = [
    "DEFAULT_OPSET", "MIN_OPSET", "LOWERINGS", "build_model_proto", "make_session", "model_bytes", "run",
    "supported_ops",
]


def _error(code: str, message: str, hint: str | None = None, span=None) -> DlspecError:
    return DlspecError(Diagnostic(code=code, message=message, hint=hint, span=span))


def _onnx():
    try:
        import onnx
    except ImportError:
        raise _error("E718", "the ONNX backend needs the `onnx` package",
                     hint="install it: pip install 'dlspec[onnx]'") from None
    return onnx


def cannot_lower(node: Node, why: str) -> DlspecError:
    where = f" at {node.span}" if node.span else ""
    return _error("E711", f"cannot lower {node.op} `{node.name}` to ONNX{where}: {why}", span=node.span)


# ---- the builder -------------------------------------------------------------------------------

#: the IR dtypes a constant may have, as numpy names them
_NP_DTYPES = {"float16": "float16", "float32": "float32", "float64": "float64", "int32": "int32", "int64": "int64",
              "int8": "int8", "uint8": "uint8", "bool": "bool_"}


def _elem_type(dtype: str) -> int:
    from onnx import TensorProto

    return {
        "float16": TensorProto.FLOAT16, "bfloat16": TensorProto.BFLOAT16, "float32": TensorProto.FLOAT,
        "float64": TensorProto.DOUBLE, "int32": TensorProto.INT32, "int64": TensorProto.INT64, "bool": TensorProto.BOOL,
        "int8": TensorProto.INT8, "uint8": TensorProto.UINT8,
    }[dtype]


def _np_dtype(dtype: str) -> Any:
    if dtype not in _NP_DTYPES:
        raise _error("E711", f"the ONNX backend has no numpy type for {dtype} constants")
    return getattr(np, _NP_DTYPES[dtype])


_NAME_BAD = re.compile(r"[^A-Za-z0-9_.:/-]")


def value_name(name: str) -> str:
    """The ONNX spelling of an IR value name (before making it unique)."""
    s = _NAME_BAD.sub("_", name.replace("#", "_out"))
    return s or "value"


class Builder:
    """Collects nodes and initializers; hands out unique value names."""

    def __init__(self, graph: Graph, weights: dict[str, np.ndarray], opset: int):
        self.graph = graph
        self.weights = weights
        self.opset = opset
        self.nodes: list[Any] = []
        self.initializers: dict[str, np.ndarray] = {}
        self.used: set[str] = set()
        self._consts: dict[tuple, str] = {}
        self._node_names: set[str] = set()
        self.current: Node | None = None

    # names
    def unique(self, base: str) -> str:
        name, i = base, 1
        while name in self.used:
            name = f"{base}_{i}"
            i += 1
        self.used.add(name)
        return name

    def fresh(self, what: str) -> str:
        prefix = value_name(self.current.name) if self.current is not None else "dlspec"
        return self.unique(f"{prefix}/{what}")

    # tensors
    def param(self, path: str) -> str:
        """The initializer holding parameter `path` as it is (canonical layout)."""
        if path not in self.initializers:
            self.initializers[path] = self._weight(path)
            self.used.add(path)
        return path

    def weight(self, path: str) -> np.ndarray:
        return self._weight(path)

    def _weight(self, path: str) -> np.ndarray:
        if path not in self.weights:
            raise _error("E712", f"no weights for parameter `{path}`",
                         hint="pass a weights dict with every parameter of the model (dlspec.init.init_weights gives fresh ones)")
        return np.asarray(self.weights[path])

    def derived(self, what: str, array: np.ndarray) -> str:
        """A new initializer `<layer path>::<what>` holding a converted parameter."""
        assert self.current is not None
        name = self.unique(f"{value_name(self.current.name)}::{what}")
        self.initializers[name] = np.ascontiguousarray(array)
        return name

    def const(self, values: Any, dtype: Any) -> str:
        """A (shared) constant initializer for small literal tensors."""
        arr = np.asarray(values, dtype=dtype)
        key = (arr.dtype.str, arr.shape, arr.tobytes())
        if key not in self._consts:
            shape = "x".join(map(str, arr.shape)) or "scalar"
            self._consts[key] = self.unique(f"const/{arr.dtype.name}_{shape}_{len(self._consts)}")
            self.initializers[self._consts[key]] = arr
        return self._consts[key]

    def i64(self, values: Any) -> str:
        return self.const(values, np.int64)

    # nodes
    def op(self, op_type: str, inputs: list[str], out: str | list[str] | int | None = None, **attrs: Any) -> Any:
        """Append a node; returns its output name (or list of names when `out` is a list or a count)."""
        from onnx import helper

        if isinstance(out, list):
            outs = out
        elif isinstance(out, int):
            outs = [self.fresh(op_type.lower()) for _ in range(out)]
        else:
            outs = [out if out is not None else self.fresh(op_type.lower())]
        base = f"{self.current.name}/{op_type}" if self.current is not None else op_type
        name, i = base, 1
        while name in self._node_names:
            name = f"{base}_{i}"
            i += 1
        self._node_names.add(name)
        node = helper.make_node(op_type, inputs, outs, name=name,
                                **{k: v for k, v in attrs.items() if v is not None})
        if self.current is not None:
            node.doc_string = f"{self.current.op} `{self.current.name}`" + (f" at {self.current.span}" if self.current.span else "")
        self.nodes.append(node)
        return outs if isinstance(out, (list, int)) else outs[0]

    # helpers shared by lowerings
    def shape_tensor(self, x: str, x_type: TensorType, target: tuple) -> str:
        """An int64 shape for Reshape from `x_type` to `target` (ints and symbolic dims): a symbolic
        dim kept at its axis is 0 (copy), one other unknown is -1, the rest are read from Shape(x)."""
        values: list[int] = []
        gathers: dict[int, int] = {}
        minus_one = False
        for i, d in enumerate(target):
            if isinstance(d, int):
                values.append(d)
            elif i < x_type.rank and x_type.shape[i] == d:
                values.append(0)
            elif d in x_type.shape and not minus_one:
                gathers[i] = list(x_type.shape).index(d)
                values.append(0)
            elif not minus_one:
                minus_one = True
                values.append(-1)
            else:
                gathers[i] = list(x_type.shape).index(d)
                values.append(0)
        if not gathers:
            return self.i64(values)
        shape = self.op("Shape", [x])
        parts = []
        for i, v in enumerate(values):
            if i in gathers:
                parts.append(self.op("Gather", [shape, self.i64([gathers[i]])], axis=0))
            else:
                parts.append(self.i64([v]))
        return self.op("Concat", parts, axis=0)

    def reshape(self, x: str, x_type: TensorType, target: tuple, out: str | None = None) -> str:
        return self.op("Reshape", [x, self.shape_tensor(x, x_type, tuple(target))], out)

    def squeeze(self, x: str, axes: list[int], out: str | None = None) -> str:
        return self.op("Squeeze", [x, self.i64(axes)], out)

    def unsqueeze(self, x: str, axes: list[int], out: str | None = None) -> str:
        return self.op("Unsqueeze", [x, self.i64(axes)], out)

    def reduce(self, op_type: str, x: str, axes: list[int], keepdims: bool, out: str | None = None) -> str:
        if self.opset >= 18:
            return self.op(op_type, [x, self.i64(axes)], out, keepdims=int(keepdims))
        return self.op(op_type, [x], out, axes=axes, keepdims=int(keepdims))


# ---- lowerings ---------------------------------------------------------------------------------

Lowering = Callable[[Builder, Node, Any, list[str], list[TensorType], list[str]], None]


def _unary(op_type: str, **fixed: Any) -> Lowering:
    def lower(b: Builder, node: Node, a: Any, x: list[str], t: list[TensorType], y: list[str]) -> None:
        b.op(op_type, [x[0]], y[0], **fixed)

    return lower


def _l_leaky_relu(b, node, a, x, t, y):
    b.op("LeakyRelu", [x[0]], y[0], alpha=a.slope)


def _l_elu(b, node, a, x, t, y):
    b.op("Elu", [x[0]], y[0], alpha=a.alpha)


def _l_selu(b, node, a, x, t, y):
    # PyTorch's constants (ONNX's defaults are these rounded to float32 as well)
    b.op("Selu", [x[0]], y[0], alpha=1.6732632423543772, gamma=1.0507009873554805)


def _l_silu(b, node, a, x, t, y):
    b.op("Mul", [x[0], b.op("Sigmoid", [x[0]])], y[0])


def _l_hardsigmoid(b, node, a, x, t, y):
    b.op("HardSigmoid", [x[0]], y[0], alpha=1.0 / 6.0, beta=0.5)


def _l_hardswish(b, node, a, x, t, y):
    # ONNX's HardSwish (opset 14) has no onnxruntime CPU kernel: x · HardSigmoid(x) is the same
    b.op("Mul", [x[0], b.op("HardSigmoid", [x[0]], alpha=1.0 / 6.0, beta=0.5)], y[0])


def _l_mish(b, node, a, x, t, y):
    # ONNX's Mish (opset 18) is a function op onnxruntime's CPU provider has no kernel for
    b.op("Mul", [x[0], b.op("Tanh", [b.op("Softplus", [x[0]])])], y[0])


def _l_gelu(b, node, a, x, t, y):
    dt = _np_dtype(t[0].dtype)
    if b.opset >= 20:
        b.op("Gelu", [x[0]], y[0], approximate=a.approximate)
        return
    if a.approximate == "tanh":
        # 0.5 x (1 + tanh(√(2/π) (x + 0.044715 x³)))
        cube = b.op("Mul", [b.op("Mul", [x[0], x[0]]), x[0]])
        inner = b.op("Add", [x[0], b.op("Mul", [cube, b.const(0.044715, dt)])])
        th = b.op("Tanh", [b.op("Mul", [inner, b.const(math.sqrt(2.0 / math.pi), dt)])])
    else:
        th = b.op("Erf", [b.op("Div", [x[0], b.const(math.sqrt(2.0), dt)])])
    half = b.op("Mul", [x[0], b.const(0.5, dt)])
    b.op("Mul", [half, b.op("Add", [th, b.const(1.0, dt)])], y[0])


def _l_hardtanh(b, node, a, x, t, y):
    dt = _np_dtype(t[0].dtype)
    b.op("Clip", [x[0], b.const(a.min, dt), b.const(a.max, dt)], y[0])


def _l_relu6(b, node, a, x, t, y):
    dt = _np_dtype(t[0].dtype)
    b.op("Clip", [x[0], b.const(0.0, dt), b.const(6.0, dt)], y[0])


def _l_prelu(b, node, a, x, t, y):
    w = b.weight(f"{node.name}.weight")
    rank = t[0].rank
    # the slope broadcasts against [N, C, rest…]: one per channel is [C, 1, …], a shared one [1]
    shape = (w.shape[0], *([1] * (rank - 2))) if a.per_channel else (1,)
    slope = b.derived("slope", w.reshape(shape).astype(_np_dtype(t[0].dtype)))
    b.op("PRelu", [x[0], slope], y[0])


def _l_reduce(op_type: str, axes_input_from: int) -> Lowering:
    def lower(b, node, a, x, t, y):
        axes = get_op(node.op).reduced(a, t[0].rank)
        if b.opset >= axes_input_from:
            b.op(op_type, [x[0], b.i64(axes)], y[0], keepdims=int(a.keepdims))
        else:
            b.op(op_type, [x[0]], y[0], axes=axes, keepdims=int(a.keepdims))

    return lower


def _l_argmax(b, node, a, x, t, y):
    b.op("ArgMax", [x[0]], y[0], axis=a.axis % t[0].rank, keepdims=int(a.keepdims), select_last_index=0)


def _l_tile(b, node, a, x, t, y):
    b.op("Tile", [x[0], b.i64(list(a.reps))], y[0])


def _l_parameter(b, node, a, x, t, y):
    w = b.weight(f"{node.name}.weight")
    dt = _np_dtype(b.graph.values[node.outputs[0]].dtype)
    value = b.param(f"{node.name}.weight") if w.dtype == dt else b.derived("weight", w.astype(dt))
    batch = t[0].shape[0]
    if isinstance(batch, int):
        shape = b.i64([batch, *a.shape])
    else:
        n = b.op("Gather", [b.op("Shape", [x[0]]), b.i64([0])], axis=0)
        shape = b.op("Concat", [n, b.i64(list(a.shape))], axis=0)
    b.op("Expand", [value, shape], y[0])


def _l_select(b, node, a, x, t, y):
    b.op("Gather", [x[0], b.const(np.array(a.index, dtype=np.int64), np.int64)], y[0], axis=a.axis % t[0].rank)


def _l_softmax(op_type: str) -> Lowering:
    def lower(b, node, a, x, t, y):
        b.op(op_type, [x[0]], y[0], axis=a.axis)

    return lower


def _l_dense(b, node, a, x, t, y):
    w = f"{node.name}.weight"
    bias = [b.param(f"{node.name}.bias")] if a.bias else []
    if t[0].rank == 2:
        b.op("Gemm", [x[0], b.param(w), *bias], y[0], transB=1)
        return
    wt = b.derived("weight_T", b.weight(w).T)
    if bias:
        b.op("Add", [b.op("MatMul", [x[0], wt]), bias[0]], y[0])
    else:
        b.op("MatMul", [x[0], wt], y[0])


def _l_embedding(b, node, a, x, t, y):
    b.op("Gather", [b.param(f"{node.name}.weight"), x[0]], y[0], axis=0)


def _conv_pads(node: Node, a: Any, n: int, x: TensorType) -> dict[str, Any]:
    """Conv padding attributes with PyTorch's (and for 'same', TensorFlow's) semantics."""
    k = as_tuple(a.kernel, n, "kernel")
    s = as_tuple(a.stride, n, "stride")
    d = as_tuple(a.dilation, n, "dilation")
    if a.padding == "valid":
        return {"pads": [0] * (2 * n)}
    if a.padding == "same":
        begin, end = [], []
        for i in range(n):
            size = x.shape[2 + i]
            if s[i] == 1:
                total = d[i] * (k[i] - 1)
            elif isinstance(size, int):
                out = -(-size // s[i])
                total = max((out - 1) * s[i] + d[i] * (k[i] - 1) + 1 - size, 0)
            else:
                return {"dynamic_same": True}
            begin.append(total // 2)
            end.append(total - total // 2)
        return {"pads": begin + end}
    p = list(as_tuple(a.padding, n, "padding"))
    return {"pads": p + p}


def _same_pad_at_run_time(b: Builder, x: str, a: Any, n: int) -> str:
    """TensorFlow's 'same' padding computed from the input's runtime size: out = ceil(size / s),
    total = max((out - 1)·s + d·(k - 1) + 1 - size, 0), the odd extra at the end. (onnxruntime's
    auto_pad=SAME_UPPER would do it, but not with dilation.)"""
    k = np.array(as_tuple(a.kernel, n, "kernel"), dtype=np.int64)
    s = np.array(as_tuple(a.stride, n, "stride"), dtype=np.int64)
    d = np.array(as_tuple(a.dilation, n, "dilation"), dtype=np.int64)
    sizes = b.op("Shape", [x], start=2)
    out = b.op("Div", [b.op("Add", [sizes, b.i64(s - 1)]), b.i64(s)])
    needed = b.op("Sub", [b.op("Add", [b.op("Mul", [b.op("Sub", [out, b.i64(1)]), b.i64(s)]), b.i64(d * (k - 1) + 1)]),
                          sizes])
    total = b.op("Max", [needed, b.i64(np.zeros(n, dtype=np.int64))])
    begin = b.op("Div", [total, b.i64(2)])
    end = b.op("Sub", [total, begin])
    pads = b.op("Concat", [b.i64([0, 0]), begin, b.i64([0, 0]), end], axis=0)
    return b.op("Pad", [x, pads], mode="constant")


def _l_conv(b, node, a, x, t, y):
    n = t[0].rank - 2
    src = x[0]
    pads = _conv_pads(node, a, n, t[0])
    if pads.pop("dynamic_same", False):
        src = _same_pad_at_run_time(b, src, a, n)
        pads = {"pads": [0] * (2 * n)}
    inputs = [src, b.param(f"{node.name}.weight")]
    if a.bias:
        inputs.append(b.param(f"{node.name}.bias"))
    b.op("Conv", inputs, y[0], kernel_shape=list(as_tuple(a.kernel, n, "kernel")),
         strides=list(as_tuple(a.stride, n, "stride")), dilations=list(as_tuple(a.dilation, n, "dilation")),
         group=a.groups, **pads)


def _l_conv_transpose(b, node, a, x, t, y):
    n = t[0].rank - 2
    inputs = [x[0], b.param(f"{node.name}.weight")]
    if a.bias:
        inputs.append(b.param(f"{node.name}.bias"))
    p = list(as_tuple(a.padding, n, "padding"))
    b.op("ConvTranspose", inputs, y[0], kernel_shape=list(as_tuple(a.kernel, n, "kernel")),
         strides=list(as_tuple(a.stride, n, "stride")), dilations=list(as_tuple(a.dilation, n, "dilation")),
         group=a.groups, pads=p + p, output_padding=list(as_tuple(a.output_padding, n, "output_padding")))


def _affine_or_default(b: Builder, node: Node, a: Any, c: int, dt: Any) -> tuple[str, str]:
    if getattr(a, "affine", True):
        return b.param(f"{node.name}.weight"), b.param(f"{node.name}.bias")
    return b.const(np.ones(c), dt), b.const(np.zeros(c), dt)


def _l_batchnorm(b, node, a, x, t, y):
    c = int(t[0].shape[1])
    scale, bias = _affine_or_default(b, node, a, c, np.float32)
    mean, var = b.param(f"{node.name}.running_mean"), b.param(f"{node.name}.running_var")
    b.op("BatchNormalization", [x[0], scale, bias, mean, var], y[0], epsilon=a.eps)


def _l_layernorm(b, node, a, x, t, y):
    f = int(t[0].shape[-1])
    scale, bias = _affine_or_default(b, node, a, f, np.float32)
    b.op("LayerNormalization", [x[0], scale, bias], y[0], axis=-1, epsilon=a.eps)


def _l_lrn(b, node, a, x, t, y):
    # ONNX's LRN sums the channels c - floor((size-1)/2) .. c + ceil((size-1)/2): PyTorch's window
    # (size//2 before, (size-1)//2 after) for an odd size. An even size (which onnxruntime's LRN
    # refuses, and whose ONNX window would lie one channel later) is written out as PyTorch computes
    # it: the mean of the squares over the zero-padded window, by AveragePool on [N, 1, C, rest].
    # onnxruntime runs LRN on 4-D float32 only: another rank goes through [N, C, rest, 1], another
    # float type the explicit way.
    if a.size % 2 and t[0].dtype == "float32":
        attrs = {"size": a.size, "alpha": float(a.alpha), "beta": float(a.beta), "bias": float(a.k)}
        if t[0].rank == 4:
            b.op("LRN", [x[0]], y[0], **attrs)
        else:
            normed = b.op("LRN", [b.op("Reshape", [x[0], b.i64([0, 0, -1, 1])])], **attrs)
            b.op("Reshape", [normed, b.op("Shape", [x[0]])], y[0])
        return
    dt = _np_dtype(t[0].dtype)
    squares = b.op("Unsqueeze", [b.op("Mul", [x[0], x[0]]), b.i64([1])])
    squares = b.op("Reshape", [squares, b.i64([0, 0, 0, -1])])
    mean = b.op("AveragePool", [squares], kernel_shape=[a.size, 1], strides=[1, 1],
                pads=[a.size // 2, 0, (a.size - 1) // 2, 0], count_include_pad=1)
    mean = b.op("Reshape", [mean, b.op("Shape", [x[0]])])
    scaled = b.op("Add", [b.op("Mul", [mean, b.const(a.alpha, dt)]), b.const(a.k, dt)])
    b.op("Div", [x[0], b.op("Pow", [scaled, b.const(a.beta, dt)])], y[0])


def _l_groupnorm(b, node, a, x, t, y):
    # normalize [N, G, C/G·spatial] per (sample, group) with InstanceNormalization, then the
    # per-channel affine on the original shape
    c = int(t[0].shape[1])
    grouped = b.op("Reshape", [x[0], b.i64([0, a.groups, -1])])
    normed = b.op("InstanceNormalization", [grouped, b.const(np.ones(a.groups), np.float32),
                                           b.const(np.zeros(a.groups), np.float32)], epsilon=a.eps)
    spatial = t[0].rank - 2
    if not a.affine:
        b.op("Reshape", [normed, b.op("Shape", [x[0]])], y[0])
        return
    back = b.op("Reshape", [normed, b.op("Shape", [x[0]])])
    bshape = (c,) + (1,) * spatial
    scale = b.derived("scale", b.weight(f"{node.name}.weight").reshape(bshape))
    shift = b.derived("shift", b.weight(f"{node.name}.bias").reshape(bshape))
    b.op("Add", [b.op("Mul", [back, scale]), shift], y[0])


def _l_instance_norm(b, node, a, x, t, y):
    scale, bias = _affine_or_default(b, node, a, int(t[0].shape[1]), _np_dtype(t[0].dtype))
    b.op("InstanceNormalization", [x[0], scale, bias], y[0], epsilon=a.eps)


def _l_identity(b, node, a, x, t, y):
    b.op("Identity", [x[0]], y[0])


def _pool_attrs(a: Any, n: int) -> dict[str, Any]:
    k = list(as_tuple(a.kernel, n, "kernel"))
    s = list(as_tuple(a.stride if a.stride is not None else a.kernel, n, "stride"))
    p = list(as_tuple(a.padding, n, "padding"))
    out = {"kernel_shape": k, "strides": s, "pads": p + p, "ceil_mode": int(a.ceil_mode)}
    d = list(as_tuple(getattr(a, "dilation", 1), n, "dilation"))
    if any(v != 1 for v in d):
        out["dilations"] = d
    return out


def _l_maxpool(b, node, a, x, t, y):
    b.op("MaxPool", [x[0]], y[0], **_pool_attrs(a, t[0].rank - 2))


def _l_avgpool(b, node, a, x, t, y):
    b.op("AveragePool", [x[0]], y[0], count_include_pad=1, **_pool_attrs(a, t[0].rank - 2))


def _global(op_type: str) -> Lowering:
    def lower(b, node, a, x, t, y):
        n = t[0].rank - 2
        if a.keepdims:
            b.op(op_type, [x[0]], y[0])
        else:
            b.squeeze(b.op(op_type, [x[0]]), list(range(2, 2 + n)), y[0])

    return lower


def _adaptive(kind: str) -> Lowering:
    """PyTorch's adaptive bins: start floor(i·in/out), end ceil((i+1)·in/out). Equal bins become
    one pooling op; otherwise each axis is pooled bin by bin (both mean and max are separable
    over a rectangle, so axis by axis gives the same result)."""
    window, reduce, global_op = {"avg": ("AveragePool", "ReduceMean", "GlobalAveragePool"),
                                 "max": ("MaxPool", "ReduceMax", "GlobalMaxPool")}[kind]

    def lower(b, node, a, x, t, y):
        n = t[0].rank - 2
        outs = as_tuple(a.output_size, n, "output_size")
        sizes = t[0].shape[2:]
        if all(o == 1 for o in outs):
            b.op(global_op, [x[0]], y[0])
            return
        if not all(isinstance(s, int) for s in sizes):
            raise cannot_lower(node, f"output size {list(outs)} of an input with symbolic size {t[0].shape_str()}; "
                                     "ONNX has no adaptive pooling (only output size 1 works for any size)")
        if all(s % o == 0 for s, o in zip(sizes, outs)):
            k = [s // o for s, o in zip(sizes, outs)]
            b.op(window, [x[0]], y[0], kernel_shape=k, strides=k)
            return
        cur = x[0]
        for i, (size, o) in enumerate(zip(sizes, outs)):
            axis = 2 + i
            last = i == n - 1
            if size % o == 0 and size != o:
                k = [1] * n
                k[i] = size // o
                cur = b.op(window, [cur], y[0] if last else None, kernel_shape=k, strides=k)
                continue
            if size == o:
                if last:
                    b.op("Identity", [cur], y[0])
                continue
            bins = []
            for j in range(o):
                start, end = (j * size) // o, -(-((j + 1) * size) // o)
                piece = b.op("Slice", [cur, b.i64([start]), b.i64([end]), b.i64([axis])])
                bins.append(b.reduce(reduce, piece, [axis], keepdims=True))
            cur = b.op("Concat", bins, y[0] if last else None, axis=axis)

    return lower


def _l_upsample(b, node, a, x, t, y):
    n = t[0].rank - 2
    mode = "nearest" if a.mode == "nearest" else "linear"
    attrs: dict[str, Any] = {"mode": mode}
    if mode == "nearest":
        attrs.update(coordinate_transformation_mode="asymmetric", nearest_mode="floor")
    else:
        attrs["coordinate_transformation_mode"] = "align_corners" if a.align_corners else "pytorch_half_pixel"
    src = x[0]
    lifted = n == 1 and mode == "linear"  # onnxruntime resizes linearly in 2-D: lift [N, C, L] to [N, C, 1, L]
    if lifted:
        src = b.unsqueeze(src, [2])
    extra = [1] if lifted else []
    if a.scale is not None:
        scales = [1.0, 1.0, *extra, *(float(s) for s in as_tuple(a.scale, n, "scale"))]
        out = b.op("Resize", [src, "", b.const(scales, np.float32)], None if lifted else y[0], **attrs)
    else:
        size = [*extra, *as_tuple(a.size, n, "size")]
        if b.opset >= 18:
            axes = list(range(2, 2 + len(size)))
            out = b.op("Resize", [src, "", "", b.i64(size)], None if lifted else y[0], axes=axes, **attrs)
        else:
            lead = b.op("Slice", [b.op("Shape", [src]), b.i64([0]), b.i64([2]), b.i64([0])])
            sizes = b.op("Concat", [lead, b.i64(size)], axis=0)
            out = b.op("Resize", [src, "", "", sizes], None if lifted else y[0], **attrs)
    if lifted:
        b.squeeze(out, [2], y[0])


def _l_flatten(b, node, a, x, t, y):
    b.reshape(x[0], t[0], tuple(b.graph.values[node.outputs[0]].shape), y[0])


def _l_reshape(b, node, a, x, t, y):
    b.op("Reshape", [x[0], b.i64([0, *a.shape])], y[0])  # 0 copies the batch axis


def _l_permute(b, node, a, x, t, y):
    b.op("Transpose", [x[0]], y[0], perm=[d % t[0].rank for d in a.dims])


def _l_squeeze(b, node, a, x, t, y):
    b.squeeze(x[0], [a.axis % t[0].rank], y[0])


def _l_unsqueeze(b, node, a, x, t, y):
    b.unsqueeze(x[0], [a.axis % (t[0].rank + 1)], y[0])


def _l_concat(b, node, a, x, t, y):
    b.op("Concat", x, y[0], axis=a.axis)


def _l_split(b, node, a, x, t, y):
    axis = a.axis % t[0].rank
    if isinstance(a.parts, int):
        if b.opset >= 18:
            b.op("Split", [x[0]], list(y), axis=axis, num_outputs=a.parts)
        else:
            b.op("Split", [x[0]], list(y), axis=axis)
    else:
        b.op("Split", [x[0], b.i64(list(a.parts))], list(y), axis=axis)


def _binary(op_type: str) -> Lowering:
    def lower(b, node, a, x, t, y):
        rhs = x[1] if len(x) > 1 else b.const(a.scalar, _np_dtype(t[0].dtype))
        b.op(op_type, [x[0], rhs], y[0])

    return lower


def _l_where(b, node, a, x, t, y):
    dtype = _np_dtype(b.graph.values[node.outputs[0]].dtype)
    rest = iter(x[1:])
    vals = [b.const(v, dtype) if v is not None else next(rest) for v in (a.a_value, a.b_value)]
    b.op("Where", [x[0], *vals], y[0])


def _l_topk(b, node, a, x, t, y):
    b.op("TopK", [x[0], b.i64([a.k])], list(y), axis=a.axis % t[0].rank, largest=int(a.largest), sorted=1)


def _l_matmul(b, node, a, x, t, y):
    b.op("MatMul", [x[0], x[1]], y[0])


def _l_pad(b, node, a, x, t, y):
    op = get_op("pad")
    pairs = op.pairs(a, t[0].rank)
    pads = [p[0] for p in pairs] + [p[1] for p in pairs]
    mode = {"constant": "constant", "reflect": "reflect", "replicate": "edge"}[a.mode]
    inputs = [x[0], b.i64(pads)]
    if mode == "constant":
        inputs.append(b.const(a.value, _np_dtype(t[0].dtype)))
    b.op("Pad", inputs, y[0], mode=mode)


def _l_pad_to(b, node, a, x, t, y):
    """Static sizes: one Pad. Symbolic ones: zeros concatenated before and after x on each axis
    (ConstantOfShape of x's shape with that axis set to the margin), which keeps the sizes ONNX's
    shape inference knows (a Pad with computed pads makes every axis unknown)."""
    sx, sl = t[0].shape[2:], t[1].shape[2:]
    if all(isinstance(d, int) for d in (*sx, *sl)):
        before = [(v - u) // 2 for u, v in zip(sx, sl)]
        after = [v - u - p for u, v, p in zip(sx, sl, before)]
        pads = b.i64([0, 0, *before, 0, 0, *after])
        b.op("Pad", [x[0], pads, b.const(0.0, _np_dtype(t[0].dtype))], y[0], mode="constant")
        return
    from onnx import numpy_helper

    zero = numpy_helper.from_array(np.zeros(1, _np_dtype(t[0].dtype)))
    axes = [axis for axis, (u, v) in enumerate(zip(sx, sl), start=2) if u != v]
    cur = x[0]
    for i, axis in enumerate(axes):
        d = b.op("Sub", [b.op("Shape", [x[1]], start=axis, end=axis + 1), b.op("Shape", [cur], start=axis, end=axis + 1)])
        margins = [b.op("Div", [d, b.i64([2])])]
        margins.append(b.op("Sub", [d, margins[0]]))
        head, tail = b.op("Shape", [cur], end=axis), b.op("Shape", [cur], start=axis + 1)
        zeros = [b.op("ConstantOfShape", [b.op("Concat", [head, m, tail], axis=0)], value=zero) for m in margins]
        cur = b.op("Concat", [zeros[0], cur, zeros[1]], y[0] if i == len(axes) - 1 else None, axis=axis)
    if not axes:
        b.op("Identity", [x[0]], y[0])


def _l_crop_to(b, node, a, x, t, y):
    """Static sizes: one Slice. Symbolic ones: a Gather of the kept range on each axis, which keeps
    the sizes ONNX's shape inference knows (a Slice with computed bounds makes every axis unknown)."""
    sx, sl = t[0].shape[2:], t[1].shape[2:]
    if all(isinstance(d, int) for d in (*sx, *sl)):
        starts = [(u - v) // 2 for u, v in zip(sx, sl)]
        b.op("Slice", [x[0], b.i64(starts), b.i64([s + v for s, v in zip(starts, sl)]),
                       b.i64(list(range(2, t[0].rank)))], y[0])
        return
    axes = [axis for axis, (u, v) in enumerate(zip(sx, sl), start=2) if u != v]
    cur = x[0]
    for i, axis in enumerate(axes):
        size = b.op("Shape", [x[1]], start=axis, end=axis + 1)
        first = b.op("Div", [b.op("Sub", [b.op("Shape", [cur], start=axis, end=axis + 1), size]), b.i64([2])])
        scalar = [b.op("Squeeze", [v, b.i64([0])]) for v in (first, b.op("Add", [first, size]))]
        index = b.op("Range", [scalar[0], scalar[1], b.i64(1)])
        cur = b.op("Gather", [cur, index], y[0] if i == len(axes) - 1 else None, axis=axis)
    if not axes:
        b.op("Identity", [x[0]], y[0])


# ---- recurrent ---------------------------------------------------------------------------------

def _reorder(w: np.ndarray, op: str, hidden: int) -> np.ndarray:
    """Canonical (PyTorch) gate blocks in ONNX's order, as the catalogue declares it."""
    return permute_gates(w, get_op(op), "onnx")


def _l_recurrent(b, node, a, x, t, y):
    op = node.op
    hidden, dirs = a.hidden, 2 if a.bidirectional else 1
    op_type = {"rnn": "RNN", "lstm": "LSTM", "gru": "GRU"}[op]
    attrs: dict[str, Any] = {"hidden_size": hidden, "direction": "bidirectional" if dirs == 2 else "forward"}
    if op == "gru":
        attrs["linear_before_reset"] = 1  # PyTorch applies the reset gate after the recurrent matmul
    if op == "rnn":
        attrs["activations"] = ["Tanh" if a.nonlinearity == "tanh" else "Relu"] * dirs
    n_states = 2 if op == "lstm" else 1
    seq = b.op("Transpose", [x[0]], perm=[1, 0, 2])  # [T, N, F]
    finals: list[list[str]] = [[] for _ in range(n_states)]
    y_seq = ""
    for layer in range(a.layers):
        suffixes = [f"l{layer}" + ("_reverse" if d else "") for d in range(dirs)]
        w = np.stack([_reorder(b.weight(f"{node.name}.weight_ih_{s}"), op, hidden) for s in suffixes])
        r = np.stack([_reorder(b.weight(f"{node.name}.weight_hh_{s}"), op, hidden) for s in suffixes])
        inputs = [seq, b.derived(f"W_l{layer}", w), b.derived(f"R_l{layer}", r)]
        if a.bias:
            bias = np.stack([np.concatenate([_reorder(b.weight(f"{node.name}.bias_ih_{s}"), op, hidden),
                                             _reorder(b.weight(f"{node.name}.bias_hh_{s}"), op, hidden)])
                             for s in suffixes])
            inputs.append(b.derived(f"B_l{layer}", bias))
        else:
            inputs.append("")
        inputs.append("")  # sequence_lens: every sequence is full length
        for k in range(1, len(x)):
            inputs.append(b.op("Slice", [x[k], b.i64([layer * dirs]), b.i64([(layer + 1) * dirs]), b.i64([0])]))
        outs = b.op(op_type, inputs, 1 + n_states, **attrs)
        y_seq = outs[0]  # [T, dirs, N, H]
        for k in range(n_states):
            finals[k].append(outs[1 + k])  # [dirs, N, H]
        if layer < a.layers - 1:
            merged = b.op("Transpose", [y_seq], perm=[0, 2, 1, 3])  # [T, N, dirs, H]
            seq = b.op("Reshape", [merged, b.i64([0, 0, dirs * hidden])])
    if a.output == "sequence":
        batch_first = b.op("Transpose", [y_seq], perm=[2, 0, 1, 3])  # [N, T, dirs, H]
        b.op("Reshape", [batch_first, b.i64([0, 0, dirs * hidden])], y[0])
    else:
        top = b.op("Transpose", [finals[0][-1]], perm=[1, 0, 2])  # [N, dirs, H]
        b.op("Reshape", [top, b.i64([0, dirs * hidden])], y[0])
    for k in range(n_states if a.return_state else 0):
        if len(finals[k]) == 1:
            b.op("Identity", finals[k], y[1 + k])
        else:
            b.op("Concat", finals[k], y[1 + k], axis=0)


# ---- attention ---------------------------------------------------------------------------------


def _allowed_mask(b: Builder, mask: str, mtype: TensorType, query: TensorType, key_len: Any) -> str:
    """A bool mask broadcastable to the scores [N, heads, Lq, Lk]; true = may attend. A 2-D mask
    that is not [Lq, Lk] is a key padding mask [N, Lk]; a 3-D one is [N, Lq, Lk]."""
    allowed = mask
    if mtype.dtype != "bool":
        allowed = b.op("Not", [b.op("Equal", [mask, b.const(0, _np_dtype(mtype.dtype))])])
    if mtype.rank == 2 and tuple(mtype.shape) != (query.shape[1], key_len):
        return b.unsqueeze(allowed, [1, 2])
    if mtype.rank == 3:
        return b.unsqueeze(allowed, [1])
    return allowed


def _causal_mask(b: Builder, q: str, k: str, lq: Any, lk: Any) -> str:
    if isinstance(lq, int) and isinstance(lk, int):
        return b.const(np.tril(np.ones((lq, lk), dtype=bool)), np.bool_)
    lengths = b.op("Concat", [b.op("Shape", [q], start=1, end=2), b.op("Shape", [k], start=1, end=2)], axis=0)
    ones = b.op("ConstantOfShape", [lengths], value=_scalar_tensor(1.0))
    return b.op("Cast", [b.op("Trilu", [ones], upper=0)], to=_elem_type("bool"))


def _scalar_tensor(v: float) -> Any:
    from onnx import numpy_helper

    return numpy_helper.from_array(np.array([v], dtype=np.float32))


def _attention(b: Builder, prefix: str, heads: int, bias: bool, q: str, k: str, v: str,
               qt: TensorType, kt: TensorType, mask: tuple[str, TensorType] | None, causal: bool,
               out: str | None = None) -> str:
    """torch.nn.MultiheadAttention (batch first, inference) with the parameters under `prefix`."""
    e = int(qt.shape[2])
    hd = e // heads
    w = b.weight(f"{prefix}.in_proj_weight")
    bw = b.weight(f"{prefix}.in_proj_bias") if bias else np.zeros(3 * e, dtype=np.float32)
    scale = 1.0 / math.sqrt(hd)
    w = np.concatenate([w[:e] * scale, w[e:]])  # the 1/√d score scale folded into the query projection
    bw = np.concatenate([bw[:e] * scale, bw[e:]])

    def project(src: str, rows: slice, what: str) -> list[str]:
        parts = (rows.stop - rows.start) // e
        y = b.op("MatMul", [src, b.derived(f"{what}_weight_T", w[rows].T)])
        if bias:
            y = b.op("Add", [y, b.derived(f"{what}_bias", bw[rows])])
        if parts == 1:
            return [y]
        return b.op("Split", [y, b.i64([e] * parts)], parts, axis=2)

    if q == k == v:
        qp, kp, vp = project(q, slice(0, 3 * e), "qkv")
    elif k == v:
        qp = project(q, slice(0, e), "q")[0]
        kp, vp = project(k, slice(e, 3 * e), "kv")
    else:
        qp = project(q, slice(0, e), "q")[0]
        kp = project(k, slice(e, 2 * e), "k")[0]
        vp = project(v, slice(2 * e, 3 * e), "v")[0]
    split_heads = b.i64([0, 0, heads, hd])
    qh = b.op("Transpose", [b.op("Reshape", [qp, split_heads])], perm=[0, 2, 1, 3])  # [N, h, Lq, d]
    kh = b.op("Transpose", [b.op("Reshape", [kp, split_heads])], perm=[0, 2, 3, 1])  # [N, h, d, Lk]
    vh = b.op("Transpose", [b.op("Reshape", [vp, split_heads])], perm=[0, 2, 1, 3])  # [N, h, Lk, d]
    scores = b.op("MatMul", [qh, kh])
    allowed = None
    if mask is not None:
        allowed = _allowed_mask(b, mask[0], mask[1], qt, kt.shape[1])
    if causal:
        c = _causal_mask(b, q, k, qt.shape[1], kt.shape[1])
        allowed = c if allowed is None else b.op("And", [allowed, c])
    if allowed is not None:
        dt = _np_dtype(qt.dtype)
        additive = b.op("Where", [allowed, b.const(0.0, dt), b.const(-np.inf, dt)])
        scores = b.op("Add", [scores, additive])
    probs = b.op("Softmax", [scores], axis=-1)
    ctx = b.op("Transpose", [b.op("MatMul", [probs, vh])], perm=[0, 2, 1, 3])  # [N, Lq, h, d]
    merged = b.op("Reshape", [ctx, b.i64([0, 0, e])])
    y = b.op("MatMul", [merged, b.derived("out_proj_weight_T", b.weight(f"{prefix}.out_proj.weight").T)])
    if bias:
        return b.op("Add", [y, b.param(f"{prefix}.out_proj.bias")], out)
    return b.op("Identity", [y], out) if out is not None else y


def _l_mha(b, node, a, x, t, y):
    q = x[0]
    k = x[1] if len(x) > 1 else q
    v = x[2] if len(x) > 2 else k
    kt = t[1] if len(t) > 1 else t[0]
    mask = (x[3], t[3]) if len(x) > 3 else None
    _attention(b, node.name, a.heads, a.bias, q, k, v, t[0], kt, mask, a.causal, y[0])


def _dense3(b: Builder, prefix: str, x: str, out: str | None = None) -> str:
    wt = b.derived(f"{prefix.rsplit('.', 1)[-1]}_weight_T", b.weight(f"{prefix}.weight").T)
    return b.op("Add", [b.op("MatMul", [x, wt]), b.param(f"{prefix}.bias")], out)


def _l_encoder(b, node, a, x, t, y):
    """torch.nn.TransformerEncoderLayer (batch first, inference)."""
    p = node.name
    mask = (x[1], t[1]) if len(x) > 1 else None

    def norm(v: str, which: str, out: str | None = None) -> str:
        return b.op("LayerNormalization", [v, b.param(f"{p}.{which}.weight"), b.param(f"{p}.{which}.bias")], out,
                    axis=-1, epsilon=a.eps)

    def self_attn(v: str) -> str:
        return _attention(b, f"{p}.self_attn", a.heads, True, v, v, v, t[0], t[0], mask, False)

    def feed_forward(v: str) -> str:
        h = _dense3(b, f"{p}.linear1", v)
        if a.activation == "relu":
            h = b.op("Relu", [h])
        elif b.opset >= 20:
            h = b.op("Gelu", [h])
        else:
            erf = b.op("Erf", [b.op("Div", [h, b.const(math.sqrt(2.0), np.float32)])])
            h = b.op("Mul", [b.op("Mul", [h, b.const(0.5, np.float32)]), b.op("Add", [erf, b.const(1.0, np.float32)])])
        return _dense3(b, f"{p}.linear2", h)

    if a.norm_first:
        h = b.op("Add", [x[0], self_attn(norm(x[0], "norm1"))])
        b.op("Add", [h, feed_forward(norm(h, "norm2"))], y[0])
    else:
        h = norm(b.op("Add", [x[0], self_attn(x[0])]), "norm1")
        norm(b.op("Add", [h, feed_forward(h)]), "norm2", y[0])


LOWERINGS = Lowerings(TARGET)
for _op, _fn in {
    "identity": _l_identity,
    "dropout": _l_identity,
    "flatten": _l_flatten,
    "reshape": _l_reshape,
    "permute": _l_permute,
    "squeeze": _l_squeeze,
    "unsqueeze": _l_unsqueeze,
    "concat": _l_concat,
    "split": _l_split,
    "add": _binary("Add"),
    "sub": _binary("Sub"),
    "mul": _binary("Mul"),
    "pow": _binary("Pow"),
    "maximum": _binary("Max"),
    "minimum": _binary("Min"),
    "equal": _binary("Equal"),
    "less": _binary("Less"),
    "less_equal": _binary("LessOrEqual"),
    "greater": _binary("Greater"),
    "greater_equal": _binary("GreaterOrEqual"),
    "where": _l_where,
    "logical_not": _unary("Not"),
    "logical_and": _binary("And"),
    "logical_or": _binary("Or"),
    "topk": _l_topk,
    "cast": lambda b, node, a, x, t, y: b.op("Cast", [x[0]], y[0], to=_elem_type(a.dtype)),
    "exp": _unary("Exp"),
    "log": _unary("Log"),
    "sqrt": _unary("Sqrt"),
    "absolute": _unary("Abs"),
    "reciprocal": _unary("Reciprocal"),
    "div": _binary("Div"),
    "matmul": _l_matmul,
    "pad": _l_pad,
    "relu": _unary("Relu"),
    "sigmoid": _unary("Sigmoid"),
    "tanh": _unary("Tanh"),
    "selu": _l_selu,
    "silu": _l_silu,
    "softplus": _unary("Softplus"),
    "softsign": _unary("Softsign"),
    "hardsigmoid": _l_hardsigmoid,
    "hardswish": _l_hardswish,
    "mish": _l_mish,
    "leaky_relu": _l_leaky_relu,
    "elu": _l_elu,
    "gelu": _l_gelu,
    "hardtanh": _l_hardtanh,
    "relu6": _l_relu6,
    "prelu": _l_prelu,
    "select": _l_select,
    "parameter": _l_parameter,
    "tile": _l_tile,
    "pad_to": _l_pad_to,
    "crop_to": _l_crop_to,
    "argmax": _l_argmax,
    "reduce_sum": _l_reduce("ReduceSum", 13),
    "reduce_mean": _l_reduce("ReduceMean", 18),
    "reduce_max": _l_reduce("ReduceMax", 18),
    "softmax": _l_softmax("Softmax"),
    "log_softmax": _l_softmax("LogSoftmax"),
    "dense": _l_dense,
    "embedding": _l_embedding,
    "conv1d": _l_conv,
    "conv2d": _l_conv,
    "conv3d": _l_conv,
    "conv_transpose1d": _l_conv_transpose,
    "conv_transpose2d": _l_conv_transpose,
    "batchnorm1d": _l_batchnorm,
    "batchnorm2d": _l_batchnorm,
    "batchnorm3d": _l_batchnorm,
    "layernorm": _l_layernorm,
    "groupnorm": _l_groupnorm,
    "instance_norm": _l_instance_norm,
    "lrn": _l_lrn,
    "maxpool1d": _l_maxpool,
    "maxpool2d": _l_maxpool,
    "avgpool1d": _l_avgpool,
    "avgpool2d": _l_avgpool,
    "maxpool3d": _l_maxpool,
    "avgpool3d": _l_avgpool,
    "global_avgpool1d": _global("GlobalAveragePool"),
    "global_avgpool2d": _global("GlobalAveragePool"),
    "global_maxpool1d": _global("GlobalMaxPool"),
    "global_maxpool2d": _global("GlobalMaxPool"),
    "adaptive_avgpool1d": _adaptive("avg"),
    "adaptive_avgpool2d": _adaptive("avg"),
    "adaptive_maxpool1d": _adaptive("max"),
    "adaptive_maxpool2d": _adaptive("max"),
    "upsample": _l_upsample,
    "rnn": _l_recurrent,
    "lstm": _l_recurrent,
    "gru": _l_recurrent,
    "multihead_attention": _l_mha,
    "transformer_encoder": _l_encoder,
}.items():
    LOWERINGS.add(_op, _fn)


def supported_ops() -> set[str]:
    return LOWERINGS.ops()


# ---- building the model ------------------------------------------------------------------------


def check_opset(opset: int | None) -> int:
    if opset is None:
        return DEFAULT_OPSET
    if not MIN_OPSET <= opset <= DEFAULT_OPSET:
        raise _error("E710", f"opset {opset} is not supported by the ONNX backend",
                     hint=f"choose an opset from {MIN_OPSET} to {DEFAULT_OPSET} (default {DEFAULT_OPSET})")
    return opset


def _value_info(name: str, t: TensorType) -> Any:
    from onnx import helper

    dims = [d if isinstance(d, int) else str(d) for d in t.shape]
    return helper.make_tensor_value_info(name, _elem_type(t.dtype), dims)


def onnx_names(graph: Graph) -> dict[str, str]:
    """IR value name → ONNX value name. Inputs and outputs keep the spec's names; a value that is
    one output (and not an input) is produced under the output's name directly."""
    used: set[str] = set()
    names: dict[str, str] = {}

    def take(base: str) -> str:
        name, i = base, 1
        while name in used:
            name = f"{base}_{i}"
            i += 1
        used.add(name)
        return name

    for gi in graph.inputs:
        names[gi.name] = take(value_name(gi.name))
    counts: dict[str, int] = {}
    for o in graph.outputs:
        counts[o.value] = counts.get(o.value, 0) + 1
    input_names = {gi.name for gi in graph.inputs}
    out_names = {o.name: take(value_name(o.name)) for o in graph.outputs}
    for o in graph.outputs:
        if counts[o.value] == 1 and o.value not in input_names:
            names[o.value] = out_names[o.name]
    for node in graph.nodes:
        for v in node.outputs:
            if v not in names:
                names[v] = take(value_name(v))
    names.update({f"output:{o.name}": out_names[o.name] for o in graph.outputs})
    return names


def build_model_proto(graph: Graph, weights: dict[str, np.ndarray] | None = None, opset: int | None = None,
                      source: str | None = None) -> Any:
    """The ONNX model of `graph`. `weights` is a canonical {parameter path: array} dict (default:
    fresh weights from `dlspec.init.init_weights(graph, seed=0)`); `source` names the spec in the
    model's doc string (default: the graph's own source)."""
    _onnx()
    from onnx import helper

    opset = check_opset(opset)
    BACKEND.check(graph)
    if weights is None:
        from ..init import init_weights

        weights = init_weights(graph, seed=0)
    graph = batch_first(graph)  # time-major recurrent layers: permutes around the batch-first layer
    b = Builder(graph, weights, opset)
    names = onnx_names(graph)
    b.used |= set(names.values())
    for node in graph.nodes:
        b.current = node
        op = get_op(node.op)
        attrs = op.attrs_from_dict(node.attrs)
        x = [names[v] for v in node.inputs]
        t = [graph.values[v] for v in node.inputs]
        y = [names[v] for v in node.outputs]
        LOWERINGS[node.op].fn(b, node, attrs, x, t, y)
    b.current = None
    inputs = [_value_info(names[gi.name], gi.type) for gi in graph.inputs]
    outputs = []
    for o in graph.outputs:
        target = names[f"output:{o.name}"]
        if names[o.value] != target:
            b.op("Identity", [names[o.value]], target)
        outputs.append(_value_info(target, graph.values[o.value]))
    boundary = {gi.name for gi in graph.inputs} | {o.value for o in graph.outputs}
    value_info = [_value_info(names[v], graph.values[v]) for n in graph.nodes for v in n.outputs if v not in boundary]
    src = source or graph.source or "a spec"
    g = helper.make_graph(b.nodes, value_name(graph.name) or "model", inputs, outputs,
                          doc_string=f"{graph.name}, generated by dlspec from {src}", value_info=value_info)
    opsets = [helper.make_opsetid("", opset)]
    model = helper.make_model(g, opset_imports=opsets, producer_name="dlspec",
                              producer_version=__version__,
                              doc_string=f"{graph.name}: generated by dlspec from {src}. Edit the spec, not this file.",
                              ir_version=helper.find_min_ir_version_for(opsets))
    for name, arr in b.initializers.items():  # written in place: big models are not copied again
        _fill_tensor(model.graph.initializer.add(), name, arr)
    helper.set_model_props(model, {"dlspec.model": graph.name, "dlspec.source": src,
                                   "dlspec.weights": "initializers named by parameter path hold canonical (PyTorch "
                                                     "layout) arrays; <layer>::<what> initializers are converted"})
    return model


def _fill_tensor(tensor: Any, name: str, arr: np.ndarray) -> None:
    from onnx import helper

    arr = np.asarray(arr)
    if arr.dtype == np.bool_ or arr.dtype.kind not in "fiu":
        from onnx import numpy_helper

        tensor.CopyFrom(numpy_helper.from_array(arr, name))
        return
    tensor.name = name
    tensor.data_type = helper.np_dtype_to_tensor_dtype(arr.dtype)
    tensor.dims.extend(arr.shape)
    tensor.raw_data = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<")).tobytes()


def model_bytes(graph: Graph, weights: dict[str, np.ndarray] | None = None, opset: int | None = None,
                source: str | None = None) -> bytes:
    """The serialized ONNX model (what `dlspec compile --target onnx` writes)."""
    return build_model_proto(graph, weights, opset, source).SerializeToString()


# ---- onnxruntime -------------------------------------------------------------------------------

_PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def make_session(model_or_bytes: Any, provider: str = "cpu", threads: int | None = None,
                 warn: Callable[[str], None] = _warn) -> Any:
    """An onnxruntime InferenceSession. provider cpu → CPUExecutionProvider; cuda →
    CUDAExecutionProvider, falling back to the CPU with a one-line warning when onnxruntime has
    no usable CUDA. `threads` sets the intra-op thread count (default: onnxruntime's)."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise _error("E718", "running ONNX models needs the `onnxruntime` package",
                     hint="install it: pip install 'dlspec[onnx]'") from None
    if provider not in _PROVIDERS:
        raise _error("E713", f"unknown execution provider `{provider}`", hint="use cpu or cuda")
    wanted = _PROVIDERS[provider]
    providers = ["CPUExecutionProvider"]
    if provider == "cuda":
        if wanted in ort.get_available_providers():
            providers = [wanted, "CPUExecutionProvider"]
        else:
            warn("onnxruntime has no CUDAExecutionProvider here (install onnxruntime-gpu with a matching CUDA); "
                 "running on the CPU")
    data = model_or_bytes if isinstance(model_or_bytes, (bytes, str)) else model_or_bytes.SerializeToString()
    from ..threads import ort_session_options

    # `threads` (default: this process's --threads choice), one inter-op thread, idle threads not spinning
    options = ort_session_options(threads)
    try:
        session = ort.InferenceSession(data, sess_options=options, providers=providers)
    except Exception as exc:  # onnxruntime raises its own exception types
        raise _error("E713", f"onnxruntime cannot load the model: {str(exc).splitlines()[0]}") from None
    if provider == "cuda" and wanted in providers and wanted not in session.get_providers():
        warn("onnxruntime could not start CUDA (see its log above); running on the CPU")
    return session


def check_inputs(specs: list[tuple[str, str, tuple]], inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Match `inputs` to the model's (name, dtype, shape) list: every name present, ranks and
    known dims equal, dtypes of the same kind (cast to the model's). Raises E714."""
    missing = [n for n, _, _ in specs if n not in inputs]
    extra = [n for n in inputs if n not in {s[0] for s in specs}]
    if missing or extra:
        parts = ([f"missing {missing}"] if missing else []) + ([f"unknown {extra}"] if extra else [])
        raise _error("E714", f"model inputs do not match: {'; '.join(parts)}",
                     hint=f"the model's inputs are {[s[0] for s in specs]}")
    feed: dict[str, np.ndarray] = {}
    env: dict[str, int] = {}
    for name, dtype, shape in specs:
        arr = np.asarray(inputs[name])
        want = f"{dtype}[{', '.join(map(str, shape))}]"
        if arr.ndim != len(shape):
            raise _error("E714", f"input `{name}` is {list(arr.shape)}; the model needs {want}")
        for d, s in zip(shape, arr.shape):
            if isinstance(d, int) and d != s:
                raise _error("E714", f"input `{name}` is {list(arr.shape)}; the model needs {want}")
            if isinstance(d, str) and re.fullmatch(r"[A-Za-z_]\w*", d):
                if env.setdefault(d, s) != s:
                    raise _error("E714", f"input `{name}` has {d} = {s}, but another input has {d} = {env[d]}")
        is_int = dtype.startswith(("int", "uint"))
        if dtype == "bool":
            ok = arr.dtype.kind == "b" or arr.dtype.kind in "iu"
        else:
            ok = (arr.dtype.kind in "iu") == is_int and arr.dtype.kind != "b"
        if not ok:
            raise _error("E714", f"input `{name}` has dtype {arr.dtype}; the model needs {dtype}")
        feed[name] = np.ascontiguousarray(arr.astype(_np_dtype(dtype), copy=False))
    return feed


def graph_input_specs(graph: Graph) -> list[tuple[str, str, tuple]]:
    names = onnx_names(graph)
    return [(names[gi.name], gi.type.dtype, tuple(d if isinstance(d, int) else str(d) for d in gi.type.shape))
            for gi in graph.inputs]


_ORT_DTYPES = {
    "tensor(float)": "float32", "tensor(double)": "float64", "tensor(float16)": "float16", "tensor(int32)": "int32",
    "tensor(int64)": "int64", "tensor(bool)": "bool", "tensor(uint8)": "uint8", "tensor(int8)": "int8",
}


def session_input_specs(session: Any) -> list[tuple[str, str, tuple]]:
    """(name, dtype, shape) of an onnxruntime session's inputs; an unnamed unknown dim is `?`."""
    specs = []
    for i in session.get_inputs():
        if i.type not in _ORT_DTYPES:
            raise _error("E714", f"model input `{i.name}` has type {i.type}, which dlspec cannot feed",
                         hint=f"supported: {', '.join(sorted(_ORT_DTYPES))}")
        shape = tuple(d if isinstance(d, int) else (d or "?") for d in i.shape)
        specs.append((i.name, _ORT_DTYPES[i.type], shape))
    return specs


def run(graph: Graph, weights: dict[str, np.ndarray] | None, inputs: dict[str, np.ndarray], provider: str = "cpu",
        opset: int | None = None) -> dict[str, np.ndarray]:
    """Build `graph` with `weights` (None: fresh ones), run it on onnxruntime, return {output name: array}."""
    feed = check_inputs(graph_input_specs(graph), inputs)
    session = make_session(build_model_proto(graph, weights, opset), provider)
    names = [o.name for o in session.get_outputs()]
    results = session.run(names, feed)
    by_onnx = dict(zip(names, results))
    onnx_of = onnx_names(graph)
    return {o.name: by_onnx[onnx_of[f"output:{o.name}"]] for o in graph.outputs}


# ---- the backend interface -------------------------------------------------------------------


class OnnxBackend(TableBackend):
    """The ONNX backend behind the registry's interface (`dlspec.backends.Backend`). Its live
    object is the `onnx.ModelProto`, weights embedded as initializers; it runs on onnxruntime."""

    name = TARGET
    framework = "onnx"
    lowerings = LOWERINGS

    def generate(self, graph: Graph, *, layout: str = "nchw", source: str | None = None) -> str:
        import onnx

        return onnx.printer.to_text(build_model_proto(graph, source=source))

    def build(self, graph: Graph, weights=None, *, layout: str = "nchw", source: str | None = None):
        return build_model_proto(graph, weights=dict(weights) if weights is not None else None, source=source)

    def load_weights(self, live, graph: Graph, weights) -> None:
        """Re-lowers the graph with `weights` (converted initializers are derived from them) into
        `live`, keeping its opset and doc string."""
        opset = next((o.version for o in live.opset_import if o.domain in ("", "ai.onnx")), None)
        fresh = build_model_proto(graph, weights=dict(weights), opset=opset)
        fresh.doc_string = live.doc_string
        live.CopyFrom(fresh)

    def read_weights(self, live, graph: Graph) -> dict[str, Any]:
        """The canonical arrays the model holds as they are (initializers named by parameter path).
        A parameter stored only in converted form (an LSTM's reordered gates) is E716."""
        from onnx import numpy_helper

        held = {t.name: numpy_helper.to_array(t) for t in live.graph.initializer}
        wanted = [p.path for p in graph.params()]
        missing = [p for p in wanted if p not in held]
        if missing:
            raise DlspecError(Diagnostic(
                code="E716", message=f"the ONNX model of `{graph.name}` holds {len(missing)} parameter(s) only in a "
                                     f"converted form: {', '.join(missing[:6])}{' …' if len(missing) > 6 else ''}",
                hint="read the canonical weights from the safetensors file the model was built from"))
        return {p: np.array(held[p]) for p in wanted}

    def run(self, graph: Graph, weights, inputs) -> dict[str, Any]:
        return run(graph, dict(weights), dict(inputs), provider="cpu")


BACKEND = OnnxBackend()
