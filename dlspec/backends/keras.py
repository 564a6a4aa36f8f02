"""Keras backend: IR graph → a Keras 3 functional model (TensorFlow backend) and its readable source.

Each IR op lowers to a short list of layer calls (`Call`): a plan. `build_model` instantiates the
plan's layers directly — no generated code is executed, so no spec string is ever run — and
`generate` renders the same plan as Python source. Layer names follow the IR node paths
(`layer1.0.conv_bn.conv`), so a layer's weights and outputs can be found by path.

Keras computes channels-last inside: convolutions, pooling and normalization run on NHWC
tensors. The lowering tracks, for every IR value, whether its Keras tensor is channels-last and
inserts a `Permute` only where an op needs the other order (a flatten after a convolution
flattens in NCHW order, as PyTorch's dense weights expect). With layout="nchw" the model's
inputs and outputs are NCHW like PyTorch's; with layout="nhwc" image-like ones are channels-last.

Weights convert from the canonical (PyTorch) layout in `set_weights` and back in
`canonical_weights`; see docs/keras.md for the table.
"""

from __future__ import annotations

import ast
import functools
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import Diagnostic, DlspecError
from ..ir.check import validated
from ..ir.graph import Graph, Node
from ..ir.ops import get_op
from ..ir.ops.base import as_tuple, permute_gates
from ..ir.time_major import batch_first
from ..ir.types import TensorType
from ..lazy import lazy
from .lowering import Lowerings, TableBackend
from .pyformat import layout as split_lines
from .pysource import doc_text, ident, literal

if TYPE_CHECKING:
    import numpy as np
else:
    np = lazy("numpy")  # imported on first use: `dlspec check` (W108) lowers no weights

TARGET = "keras"
LAYOUTS = ("nchw", "nhwc")

_CUSTOM_LAYERS_FILE = Path(__file__).with_name("keras_layers.py")


def _error(code: str, message: str, node: Node | None = None, hint: str | None = None) -> DlspecError:
    span = node.span if node is not None else None
    where = f" at {span}" if span else ""
    return DlspecError(Diagnostic(code=code, message=message + where, hint=hint, span=span))


# ---- the plan --------------------------------------------------------------------------------


@dataclass
class Call:
    """One layer applied to tensors: `outputs = layer(*inputs, **call_inputs, **call_args)`."""

    layer: str  # a keras.layers class name, or a class of keras_layers when `custom`
    kwargs: dict[str, Any]
    name: str  # the layer's name: an IR node path, or one with a suffix
    inputs: list[str]  # tensor variables passed positionally
    outputs: list[str]
    custom: bool = False
    #: keyword → tensor variables joined by commas; "" is a list passed first (Concatenate, Add)
    call_inputs: dict[str, str] = field(default_factory=dict)
    call_args: dict[str, Any] = field(default_factory=dict)  # keyword → constant
    list_output: bool = False  # the layer returns a list of tensors


@dataclass
class InputSpec:
    var: str
    name: str
    shape: tuple[int | None, ...]  # without the batch axis
    batch: int | None
    dtype: str
    channels_last: bool


@dataclass
class Plan:
    graph: Graph
    layout: str
    inputs: list[InputSpec]
    calls: list[Call]
    #: graph output name → (tensor variable, whether it is channels-last)
    outputs: dict[str, tuple[str, bool]]
    #: IR value → (tensor variable, channels-last) as first computed
    values: dict[str, tuple[str, bool]]
    #: node path → role → Keras layer name, for nodes with weights
    roles: dict[str, dict[str, str]]
    custom: list[str]


class _Lowering:
    def __init__(self, graph: Graph, layout: str):
        if layout not in LAYOUTS:
            raise DlspecError(Diagnostic(code="E760", message=f"unknown layout `{layout}`",
                                         hint="layouts: nchw (PyTorch's order at the model boundary) or nhwc"))
        self.graph = graph
        self.layout = layout
        self.calls: list[Call] = []
        self.vars: set[str] = {"keras", "layers", "ops", "math", "model", "build_model",
                               "build_" + ident(_snake(graph.name)), *_custom_sources()}
        self.layer_names: set[str] = set()
        self.values: dict[str, tuple[str, bool]] = {}
        self.converted: dict[tuple[str, bool], str] = {}
        self.roles: dict[str, dict[str, str]] = {}
        self.custom: list[str] = []
        self.inputs: list[InputSpec] = []

    # -- names --
    def var(self, hint: str) -> str:
        return ident(hint.replace("#", "_out").replace(".", "_"), self.vars)

    def layer_name(self, base: str) -> str:
        name, i = base, 1
        while name in self.layer_names:
            name = f"{base}_{i}"
            i += 1
        self.layer_names.add(name)
        return name

    # -- calls --
    def call(self, layer: str, kwargs: dict[str, Any], name: str, inputs: list[str], out_hint: str | list[str],
             custom: bool = False, role: tuple[str, str] | None = None, **extra: Any) -> list[str]:
        lname = self.layer_name(name)
        hints = [out_hint] if isinstance(out_hint, str) else out_hint
        outs = [self.var(h) for h in hints]
        if custom and layer not in self.custom:
            self.custom.append(layer)
        self.calls.append(Call(layer=layer, kwargs=kwargs, name=lname, inputs=inputs, outputs=outs, custom=custom,
                               **extra))
        if role is not None:
            self.roles.setdefault(role[0], {})[role[1]] = lname
        return outs

    def one(self, *args: Any, **kwargs: Any) -> str:
        return self.call(*args, **kwargs)[0]

    # -- layouts --
    def rank(self, value: str) -> int:
        return self.graph.values[value].rank

    def get(self, value: str, channels_last: bool | None) -> str:
        """The tensor variable of `value` in the wanted layout (None: as it is)."""
        var, cl = self.values[value]
        if channels_last is None or self.rank(value) < 3 or cl == channels_last:
            return var
        key = (value, channels_last)
        if key not in self.converted:
            r = self.rank(value)
            perm = (*range(2, r), 1) if channels_last else (r - 1, *range(1, r - 1))
            suffix = "to_nhwc" if channels_last else "to_nchw"
            self.converted[key] = self.one("Permute", {"dims": perm}, f"{_base(value)}.{suffix}", [var],
                                           f"{value}_{'cl' if channels_last else 'cf'}")
        return self.converted[key]

    def set(self, value: str, var: str, channels_last: bool) -> None:
        self.values[value] = (var, channels_last and self.rank(value) >= 3)

    def is_cl(self, value: str) -> bool:
        return self.values[value][1]


def _base(value: str) -> str:
    return value.split("#")[0]


def axis_in(axis: int, rank: int, channels_last: bool) -> int:
    """Where canonical axis `axis` of a rank-`rank` tensor sits in its Keras tensor."""
    a = axis + rank if axis < 0 else axis
    if not channels_last or rank < 3 or a == 0:
        return a
    return rank - 1 if a == 1 else a - 1


def _spatial(node: Node) -> int:
    return int(node.op.rstrip("d")[-1])


# ---- lowerings, one per op -------------------------------------------------------------------
# Each op registers its lowering here, and an op with parameters its two weight adapters beside it:
# `to_keras(graph, node, roles, arrays)` → {layer name: weights in get_weights() order} from the
# node's canonical arrays (keyed by local parameter name), and `from_keras`, its inverse.

LOWERINGS = Lowerings(TARGET)


def _types(L: _Lowering, node: Node) -> list[TensorType]:
    return [L.graph.values[v] for v in node.inputs]


def _unary(cls: str, args: Any = None, custom: bool = False) -> Any:
    """The lowering of an element-wise op as one Keras layer `cls(**args(attrs))`; the output keeps
    the input's layout."""

    def lower(L: _Lowering, node: Node, a: dict) -> None:
        v = node.inputs[0]
        out = L.one(cls, args(a) if args else {}, node.name, [L.get(v, None)], node.outputs[0], custom=custom)
        L.set(node.outputs[0], out, L.is_cl(v))

    return lower


LOWERINGS.add("identity", _unary("Identity"))
LOWERINGS.add("dropout", _unary("Dropout", lambda a: {"rate": a["p"]}))
LOWERINGS.add("relu", _unary("ReLU"))
LOWERINGS.add("relu6", _unary("ReLU", lambda a: {"max_value": 6.0}))
LOWERINGS.add("leaky_relu", _unary("LeakyReLU", lambda a: {"negative_slope": a["slope"]}))
LOWERINGS.add("elu", _unary("ELU", lambda a: {"alpha": a["alpha"]}))
LOWERINGS.add("hardtanh", _unary("Clip", lambda a: {"min_value": a["min"], "max_value": a["max"]}, custom=True))
for _fn in ("exp", "log", "sqrt", "absolute", "reciprocal", "logical_not"):
    LOWERINGS.add(_fn, _unary("Math", lambda a, name=_fn: {"fn": name}, custom=True))
for _act in ("selu", "silu", "sigmoid", "tanh", "softplus", "softsign", "mish"):
    LOWERINGS.add(_act, _unary("Activation", lambda a, name=_act: {"activation": name}))
# Keras 3's hard_sigmoid and hard_silu are PyTorch's Hardsigmoid and Hardswish: relu6(x + 3) / 6
LOWERINGS.add("hardsigmoid", _unary("Activation", lambda a: {"activation": "hard_sigmoid"}))
LOWERINGS.add("hardswish", _unary("Activation", lambda a: {"activation": "hard_silu"}))


@LOWERINGS.register("gelu")
def _l_gelu(L: _Lowering, node: Node, a: dict) -> None:
    if a["approximate"] == "tanh":
        _unary("TanhGelu", custom=True)(L, node, a)
    else:
        _unary("Activation", lambda a: {"activation": "gelu"})(L, node, a)


@LOWERINGS.register("softmax", "log_softmax")
def _l_softmax(L: _Lowering, node: Node, a: dict) -> None:
    v = node.inputs[0]
    cl = L.is_cl(v)
    axis = axis_in(a["axis"], L.rank(v), cl)
    if node.op == "softmax":
        out = L.one("Softmax", {"axis": axis}, node.name, [L.get(v, None)], node.outputs[0])
    else:
        out = L.one("LogSoftmax", {"axis": axis}, node.name, [L.get(v, None)], node.outputs[0], custom=True)
    L.set(node.outputs[0], out, cl)


@LOWERINGS.register("add", "sub", "mul", "div", "pow", "maximum", "minimum", "equal", "less", "less_equal",
                   "greater", "greater_equal", "logical_and", "logical_or")
def _l_binary(L: _Lowering, node: Node, a: dict) -> None:
    out_v = node.outputs[0]
    if len(node.inputs) == 1:
        v = node.inputs[0]
        out = L.one("Elementwise", {"op": node.op, "scalar": a["scalar"]}, node.name, [L.get(v, None)], out_v,
                    custom=True)
        L.set(out_v, out, L.is_cl(v))
        return
    x, y = node.inputs
    tx, ty = L.graph.values[x], L.graph.values[y]
    cl = tx.rank == ty.rank and tx.rank >= 3 and L.is_cl(x) and L.is_cl(y)
    ins = [L.get(x, cl), L.get(y, cl)]
    keras_merge = {"add": "Add", "sub": "Subtract", "mul": "Multiply"}
    if node.op in keras_merge and tuple(tx.shape) == tuple(ty.shape):
        out = L.one(keras_merge[node.op], {}, node.name, [], out_v,
                    call_inputs={"": ",".join(ins)})
    else:
        out = L.one("Elementwise", {"op": node.op}, node.name, ins, out_v, custom=True)
    L.set(out_v, out, cl)


@LOWERINGS.register("where")
def _l_where(L: _Lowering, node: Node, a: dict) -> None:
    """On the layout its inputs share (channels-last where every input is a channels-last tensor
    of one rank ≥ 3)."""
    out_v = node.outputs[0]
    types = [L.graph.values[v] for v in node.inputs]
    cl = len({t.rank for t in types}) == 1 and types[0].rank >= 3 and all(L.is_cl(v) for v in node.inputs)
    ins = [L.get(v, cl) for v in node.inputs]
    out = L.one("Where", {"a_value": a["a_value"], "b_value": a["b_value"]}, node.name, ins, out_v, custom=True)
    L.set(out_v, out, cl)


@LOWERINGS.register("reduce_sum", "reduce_mean", "reduce_max")
def _l_reduce(L: _Lowering, node: Node, a: dict) -> None:
    v = node.inputs[0]
    op = get_op(node.op)
    axes = op.reduced(op.attrs_from_dict(a), L.rank(v))
    kind = node.op.removeprefix("reduce_")
    out = L.one("Reduce", {"kind": kind, "axes": axes, "keepdims": a["keepdims"]}, node.name, [L.get(v, False)],
                node.outputs[0], custom=True)
    L.set(node.outputs[0], out, False)


@LOWERINGS.register("matmul")
def _l_matmul(L: _Lowering, node: Node, a: dict) -> None:
    ins = [L.get(v, False) for v in node.inputs]
    L.set(node.outputs[0], L.one("MatMul", {}, node.name, ins, node.outputs[0], custom=True), False)


@LOWERINGS.register("concat")
def _l_concat(L: _Lowering, node: Node, a: dict) -> None:
    rank = L.rank(node.inputs[0])
    cl = rank >= 3 and all(L.is_cl(v) for v in node.inputs)
    ins = [L.get(v, cl) for v in node.inputs]
    out = L.one("Concatenate", {"axis": axis_in(a["axis"], rank, cl)}, node.name, [], node.outputs[0],
                call_inputs={"": ",".join(ins)})
    L.set(node.outputs[0], out, cl)


@LOWERINGS.register("split")
def _l_split(L: _Lowering, node: Node, a: dict) -> None:
    v = node.inputs[0]
    cl = L.is_cl(v)
    parts = a["parts"] if isinstance(a["parts"], int) else list(a["parts"])
    outs = L.call("Split", {"parts": parts, "axis": axis_in(a["axis"], L.rank(v), cl)}, node.name,
                  [L.get(v, None)], list(node.outputs), custom=True, list_output=True)
    for value, var in zip(node.outputs, outs):
        L.set(value, var, cl)


@LOWERINGS.register("argmax")
def _l_argmax(L: _Lowering, node: Node, a: dict) -> None:
    v = node.inputs[0]
    out = L.one("ArgMax", {"axis": a["axis"] % L.rank(v), "keepdims": a["keepdims"]}, node.name, [L.get(v, False)],
                node.outputs[0], custom=True)
    L.set(node.outputs[0], out, False)


@LOWERINGS.register("cast")
def _l_cast(L: _Lowering, node: Node, a: dict) -> None:
    v = node.inputs[0]
    out = L.one("Cast", {"dtype": a["dtype"]}, node.name, [L.get(v, None)], node.outputs[0], custom=True)
    L.set(node.outputs[0], out, L.is_cl(v))


@LOWERINGS.register("topk")
def _l_topk(L: _Lowering, node: Node, a: dict) -> None:
    v = node.inputs[0]
    outs = L.call("TopK", {"k": a["k"], "axis": a["axis"] % L.rank(v), "largest": a["largest"]}, node.name,
                  [L.get(v, False)], list(node.outputs), custom=True, list_output=True)
    for value, var in zip(node.outputs, outs):
        L.set(value, var, False)


@LOWERINGS.register("pad_to", "crop_to")
def _l_to_size(L: _Lowering, node: Node, a: dict) -> None:
    kind = "PadTo" if node.op == "pad_to" else "CropTo"
    ins = [L.get(v, False) for v in node.inputs]
    out = L.one(kind, {}, node.name, ins, node.outputs[0], custom=True)
    L.set(node.outputs[0], out, False)


@LOWERINGS.register("tile")
def _l_tile(L: _Lowering, node: Node, a: dict) -> None:
    v = node.inputs[0]
    out = L.one("Tile", {"reps": list(a["reps"])}, node.name, [L.get(v, False)], node.outputs[0], custom=True)
    L.set(node.outputs[0], out, False)


@LOWERINGS.register("parameter")
def _l_parameter(L: _Lowering, node: Node, a: dict) -> None:
    kwargs = {"shape": list(a["shape"]), "init": a["init"], "std": a["std"]}
    out = L.one("Parameter", kwargs, node.name, [L.get(node.inputs[0], None)], node.outputs[0], custom=True,
                role=(node.name, "parameter"))
    L.set(node.outputs[0], out, False)


@LOWERINGS.beside("to_keras", "parameter")
def _w_parameter_to(graph: Graph, node: Node, roles: dict[str, str], w: dict[str, np.ndarray]) -> dict[str, list]:
    return {roles["parameter"]: [w["weight"]]}


@LOWERINGS.beside("from_keras", "parameter")
def _w_parameter_from(graph: Graph, node: Node, roles: dict[str, str], kw: dict[str, list]) -> dict[str, np.ndarray]:
    return {"weight": kw[roles["parameter"]][0]}


@LOWERINGS.register("select")
def _l_select(L: _Lowering, node: Node, a: dict) -> None:
    v = node.inputs[0]
    out = L.one("Select", {"axis": a["axis"] % L.rank(v), "index": a["index"]}, node.name, [L.get(v, False)],
                node.outputs[0], custom=True)
    L.set(node.outputs[0], out, False)


@LOWERINGS.register("pad")
def _l_pad(L: _Lowering, node: Node, a: dict) -> None:
    v = node.inputs[0]
    rank = L.rank(v)
    op = get_op("pad")
    pairs = op.pairs(op.attrs_from_dict(a), rank)
    cl = L.is_cl(v)
    if cl:
        pairs = [pairs[0], *pairs[2:], pairs[1]]
    spatial_only = all(p == (0, 0) for p in (pairs[0], pairs[-1])) if cl else False
    x = L.get(v, None)
    if cl and spatial_only and a["mode"] == "constant" and a["value"] == 0.0 and rank in (3, 4, 5):
        inner = tuple(pairs[1:-1])
        out = L.one(f"ZeroPadding{rank - 2}D", {"padding": inner[0] if rank == 3 else inner}, node.name, [x],
                    node.outputs[0])
    else:
        out = L.one("Pad", {"pads": [list(p) for p in pairs], "mode": a["mode"], "value": a["value"]}, node.name,
                    [x], node.outputs[0], custom=True)
    L.set(node.outputs[0], out, cl)


def _static_tail(t: TensorType) -> bool:
    return all(isinstance(d, int) for d in t.shape[1:])


@LOWERINGS.register("flatten")
def _l_flatten(L: _Lowering, node: Node, a: dict) -> None:
    v = node.inputs[0]
    x = L.get(v, False)
    rank = L.rank(v)
    start, end = a["start"] % rank, a["end"] % rank
    out_t = L.graph.values[node.outputs[0]]
    if start == 1 and end == rank - 1:
        out = L.one("Flatten", {}, node.name, [x], node.outputs[0])
    elif start >= 1 and _static_tail(out_t):
        out = L.one("Reshape", {"target_shape": tuple(int(d) for d in out_t.shape[1:])}, node.name, [x],
                    node.outputs[0])
    else:
        out = L.one("FlattenRange", {"start": start, "end": end}, node.name, [x], node.outputs[0], custom=True)
    L.set(node.outputs[0], out, False)


@LOWERINGS.register("reshape")
def _l_reshape(L: _Lowering, node: Node, a: dict) -> None:
    x = L.get(node.inputs[0], False)
    out = L.one("Reshape", {"target_shape": tuple(a["shape"])}, node.name, [x], node.outputs[0])
    L.set(node.outputs[0], out, False)


@LOWERINGS.register("permute")
def _l_permute(L: _Lowering, node: Node, a: dict) -> None:
    v = node.inputs[0]
    rank = L.rank(v)
    dims = tuple(d % rank for d in a["dims"])
    x = L.get(v, False)
    if dims[0] == 0:
        out = L.one("Permute", {"dims": dims[1:]}, node.name, [x], node.outputs[0])
    else:
        out = L.one("Transpose", {"perm": dims}, node.name, [x], node.outputs[0], custom=True)
    L.set(node.outputs[0], out, False)


@LOWERINGS.register("squeeze", "unsqueeze")
def _l_squeeze(L: _Lowering, node: Node, a: dict) -> None:
    v = node.inputs[0]
    rank = L.rank(v) + (1 if node.op == "unsqueeze" else 0)
    axis = a["axis"] % rank
    out_t = L.graph.values[node.outputs[0]]
    x = L.get(v, False)
    if axis != 0 and _static_tail(out_t) and out_t.rank >= 2:
        out = L.one("Reshape", {"target_shape": tuple(int(d) for d in out_t.shape[1:])}, node.name, [x],
                    node.outputs[0])
    else:
        cls = "Squeeze" if node.op == "squeeze" else "ExpandDims"
        out = L.one(cls, {"axis": axis}, node.name, [x], node.outputs[0], custom=True)
    L.set(node.outputs[0], out, False)


@LOWERINGS.register("dense")
def _l_dense(L: _Lowering, node: Node, a: dict) -> None:
    x = L.get(node.inputs[0], False)
    out = L.one("Dense", {"units": a["units"], "use_bias": a["bias"]}, node.name, [x], node.outputs[0],
                role=(node.name, "dense"))
    L.set(node.outputs[0], out, False)


@LOWERINGS.beside("to_keras", "dense")
def _w_dense_to(graph: Graph, node: Node, roles: dict[str, str], w: dict[str, np.ndarray]) -> dict[str, list]:
    return {roles["dense"]: [w["weight"].T, *([w["bias"]] if node.attrs["bias"] else [])]}


@LOWERINGS.beside("from_keras", "dense")
def _w_dense_from(graph: Graph, node: Node, roles: dict[str, str], kw: dict[str, list]) -> dict[str, np.ndarray]:
    ws = kw[roles["dense"]]
    return {"weight": ws[0].T, **({"bias": ws[1]} if node.attrs["bias"] else {})}


@LOWERINGS.register("embedding")
def _l_embedding(L: _Lowering, node: Node, a: dict) -> None:
    x = L.get(node.inputs[0], False)
    out = L.one("Embedding", {"input_dim": a["num"], "output_dim": a["dim"]}, node.name, [x], node.outputs[0],
                role=(node.name, "embedding"))
    L.set(node.outputs[0], out, False)


@LOWERINGS.beside("to_keras", "embedding")
def _w_embedding_to(graph: Graph, node: Node, roles: dict[str, str], w: dict[str, np.ndarray]) -> dict[str, list]:
    return {roles["embedding"]: [w["weight"]]}


@LOWERINGS.beside("from_keras", "embedding")
def _w_embedding_from(graph: Graph, node: Node, roles: dict[str, str], kw: dict[str, list]) -> dict[str, np.ndarray]:
    return {"weight": kw[roles["embedding"]][0]}


def _depthwise(node: Node, a: dict, in_channels: int) -> bool:
    n = _spatial(node)
    return (n in (1, 2) and a["groups"] > 1 and a["groups"] == in_channels
            and a["out_channels"] % in_channels == 0)


@LOWERINGS.register("conv1d", "conv2d", "conv3d")
def _l_conv(L: _Lowering, node: Node, a: dict) -> None:
    n = _spatial(node)
    t = _types(L, node)[0]
    x = L.get(node.inputs[0], True)
    k = as_tuple(a["kernel"], n, "kernel")
    s = as_tuple(a["stride"], n, "stride")
    d = as_tuple(a["dilation"], n, "dilation")
    pad = a["padding"]
    if pad == "same":
        padding = "same"
    else:
        p = (0,) * n if pad == "valid" else as_tuple(pad, n, "padding")
        padding = "valid"
        if any(p) and all(si == 1 and 2 * pi == di * (ki - 1) for si, pi, di, ki in zip(s, p, d, k)):
            padding = "same"  # symmetric padding that keeps the size at stride 1: what "same" pads
        elif any(p):
            x = L.one(f"ZeroPadding{n}D", {"padding": _pairs(p)}, f"{node.name}.pad", [x], f"{node.name}_padded")
    subsample = any(v > 1 for v in s) and any(v > 1 for v in d)
    if subsample and padding == "same":
        raise _error("E761", f"{node.op} `{node.name}`: padding=same with both stride and dilation above 1 has no "
                             "Keras equivalent", node, hint="use explicit padding, or stride 1 with a pooling layer")
    strides = (1,) * n if subsample else s
    common = {"kernel_size": k, "strides": strides, "padding": padding, "dilation_rate": d, "use_bias": a["bias"]}
    if _depthwise(node, a, int(t.shape[1])):
        kwargs = {"depth_multiplier": a["out_channels"] // int(t.shape[1]), **common}
        cls = f"DepthwiseConv{n}D"
    else:
        kwargs = {"filters": a["out_channels"], **common}
        if a["groups"] > 1:
            kwargs["groups"] = a["groups"]
        cls = f"Conv{n}D"
    name = node.name if not subsample else f"{node.name}"
    out = L.one(cls, kwargs, name, [x], node.outputs[0] if not subsample else f"{node.name}_dense_grid",
                role=(node.name, "conv"))
    if subsample:
        out = L.one("Subsample", {"strides": s}, f"{node.name}.stride", [out], node.outputs[0], custom=True)
    L.set(node.outputs[0], out, True)


@LOWERINGS.beside("to_keras", "conv1d", "conv2d", "conv3d")
def _w_conv_to(graph: Graph, node: Node, roles: dict[str, str], w: dict[str, np.ndarray]) -> dict[str, list]:
    """OI…  → …IO; a depthwise conv's [C·m, 1, …] → […, C, m]."""
    a = node.attrs
    kernel = w["weight"]
    n = kernel.ndim - 2
    in_channels = int(graph.values[node.inputs[0]].shape[1])
    if _depthwise(node, a, in_channels):
        mult = a["out_channels"] // in_channels
        kernel = kernel.reshape(in_channels, mult, *kernel.shape[2:])
        kernel = np.transpose(kernel, (*range(2, 2 + n), 0, 1))
    else:
        kernel = np.transpose(kernel, (*range(2, 2 + n), 1, 0))
    return {roles["conv"]: [kernel, *([w["bias"]] if a["bias"] else [])]}


@LOWERINGS.beside("from_keras", "conv1d", "conv2d", "conv3d")
def _w_conv_from(graph: Graph, node: Node, roles: dict[str, str], kw: dict[str, list]) -> dict[str, np.ndarray]:
    a = node.attrs
    ws = kw[roles["conv"]]
    kernel = ws[0]
    n = kernel.ndim - 2
    in_channels = int(graph.values[node.inputs[0]].shape[1])
    if _depthwise(node, a, in_channels):
        kernel = np.transpose(kernel, (n, n + 1, *range(n)))  # [C, m, *k]
        kernel = kernel.reshape(in_channels * kernel.shape[1], 1, *kernel.shape[2:])
    else:
        kernel = np.transpose(kernel, (n + 1, n, *range(n)))
    return {"weight": kernel, **({"bias": ws[1]} if a["bias"] else {})}


def _pairs(p: tuple[int, ...]) -> Any:
    return (p[0], p[0]) if len(p) == 1 else tuple((v, v) for v in p)


@LOWERINGS.register("conv_transpose1d", "conv_transpose2d")
def _l_conv_transpose(L: _Lowering, node: Node, a: dict) -> None:
    n = _spatial(node)
    if a["groups"] != 1:
        raise _error("E761", f"{node.op} `{node.name}`: Keras's Conv{n}DTranspose has no groups", node,
                     hint="use groups=1, or a grouped conv with upsample()")
    x = L.get(node.inputs[0], True)
    k = as_tuple(a["kernel"], n, "kernel")
    s = as_tuple(a["stride"], n, "stride")
    p = as_tuple(a["padding"], n, "padding")
    op_ = as_tuple(a["output_padding"], n, "output_padding")
    d = as_tuple(a["dilation"], n, "dilation")
    kwargs = {"filters": a["out_channels"], "kernel_size": k, "strides": s, "padding": "valid",
              "output_padding": op_, "dilation_rate": d, "use_bias": a["bias"]}
    out = L.one(f"Conv{n}DTranspose", kwargs, node.name, [x], node.outputs[0] if not any(p) else
                f"{node.name}_full", role=(node.name, "conv_transpose"))
    if any(p):
        out = L.one(f"Cropping{n}D", {"cropping": _pairs(p)}, f"{node.name}.crop", [out], node.outputs[0])
    L.set(node.outputs[0], out, True)


@LOWERINGS.beside("to_keras", "conv_transpose1d", "conv_transpose2d")
def _w_conv_transpose_to(graph: Graph, node: Node, roles: dict[str, str], w: dict[str, np.ndarray]) -> dict[str, list]:
    kernel = w["weight"]  # [in, out, *k] → [*k, out, in]
    n = kernel.ndim - 2
    return {roles["conv_transpose"]: [np.transpose(kernel, (*range(2, 2 + n), 1, 0)),
                                      *([w["bias"]] if node.attrs["bias"] else [])]}


@LOWERINGS.beside("from_keras", "conv_transpose1d", "conv_transpose2d")
def _w_conv_transpose_from(graph: Graph, node: Node, roles: dict[str, str], kw: dict[str, list]) -> dict[str, np.ndarray]:
    ws = kw[roles["conv_transpose"]]
    n = ws[0].ndim - 2
    return {"weight": np.transpose(ws[0], (n + 1, n, *range(n))), **({"bias": ws[1]} if node.attrs["bias"] else {})}


@LOWERINGS.register("batchnorm1d", "batchnorm2d", "batchnorm3d")
def _l_batchnorm(L: _Lowering, node: Node, a: dict) -> None:
    v = node.inputs[0]
    cl = L.rank(v) >= 3
    x = L.get(v, cl)
    kwargs = {"axis": -1, "momentum": round(1.0 - a["momentum"], 10), "epsilon": a["eps"], "center": a["affine"],
              "scale": a["affine"]}
    out = L.one("BatchNormalization", kwargs, node.name, [x], node.outputs[0], role=(node.name, "batchnorm"))
    L.set(node.outputs[0], out, cl)


@LOWERINGS.beside("to_keras", "batchnorm1d", "batchnorm2d", "batchnorm3d")
def _w_batchnorm_to(graph: Graph, node: Node, roles: dict[str, str], w: dict[str, np.ndarray]) -> dict[str, list]:
    affine = [w["weight"], w["bias"]] if node.attrs["affine"] else []
    return {roles["batchnorm"]: [*affine, w["running_mean"], w["running_var"]]}


@LOWERINGS.beside("from_keras", "batchnorm1d", "batchnorm2d", "batchnorm3d")
def _w_batchnorm_from(graph: Graph, node: Node, roles: dict[str, str], kw: dict[str, list]) -> dict[str, np.ndarray]:
    ws = kw[roles["batchnorm"]]
    out = {"running_mean": ws[-2], "running_var": ws[-1]}
    if node.attrs["affine"]:
        out.update(weight=ws[0], bias=ws[1])
    return out


@LOWERINGS.register("layernorm")
def _l_layernorm(L: _Lowering, node: Node, a: dict) -> None:
    x = L.get(node.inputs[0], False)
    out = L.one("LayerNormalization", {"axis": -1, "epsilon": a["eps"], "center": a["affine"], "scale": a["affine"]},
                node.name, [x], node.outputs[0], role=(node.name, "layernorm"))
    L.set(node.outputs[0], out, False)


@LOWERINGS.register("groupnorm")
def _l_groupnorm(L: _Lowering, node: Node, a: dict) -> None:
    x = L.get(node.inputs[0], True)
    kwargs = {"groups": a["groups"], "axis": -1, "epsilon": a["eps"], "center": a["affine"], "scale": a["affine"]}
    out = L.one("GroupNormalization", kwargs, node.name, [x], node.outputs[0], role=(node.name, "groupnorm"))
    L.set(node.outputs[0], out, True)


@LOWERINGS.register("instance_norm")
def _l_instance_norm(L: _Lowering, node: Node, a: dict) -> None:
    x = L.get(node.inputs[0], True)
    kwargs = {"groups": -1, "axis": -1, "epsilon": a["eps"], "center": a["affine"], "scale": a["affine"]}  # a group per channel
    out = L.one("GroupNormalization", kwargs, node.name, [x], node.outputs[0], role=(node.name, "instance_norm"))
    L.set(node.outputs[0], out, True)


@LOWERINGS.beside("to_keras", "layernorm", "groupnorm", "instance_norm")
def _w_norm_to(graph: Graph, node: Node, roles: dict[str, str], w: dict[str, np.ndarray]) -> dict[str, list]:
    return {roles[node.op]: [w["weight"], w["bias"]] if node.attrs["affine"] else []}


@LOWERINGS.beside("from_keras", "layernorm", "groupnorm", "instance_norm")
def _w_norm_from(graph: Graph, node: Node, roles: dict[str, str], kw: dict[str, list]) -> dict[str, np.ndarray]:
    ws = kw[roles[node.op]]
    return {"weight": ws[0], "bias": ws[1]} if node.attrs["affine"] else {}


def _prelu_alpha_shape(graph: Graph, node: Node) -> tuple[int, ...]:
    """Keras's PReLU alpha on the channels-last tensor: [1, …, 1, C] (one per channel) or all ones."""
    t = graph.values[node.inputs[0]]
    c = int(t.shape[1]) if node.attrs["per_channel"] else 1
    return (c,) if t.rank == 2 else (*([1] * (t.rank - 2)), c)


@LOWERINGS.register("prelu")
def _l_prelu(L: _Lowering, node: Node, a: dict) -> None:
    v = node.inputs[0]
    rank = L.rank(v)
    shared = list(range(1, rank)) if not a["per_channel"] else list(range(1, rank - 1))
    x = L.get(v, True)
    kwargs = {"shared_axes": shared} if shared else {}
    out = L.one("PReLU", kwargs, node.name, [x], node.outputs[0], role=(node.name, "prelu"))
    L.set(node.outputs[0], out, True)


@LOWERINGS.beside("to_keras", "prelu")
def _w_prelu_to(graph: Graph, node: Node, roles: dict[str, str], w: dict[str, np.ndarray]) -> dict[str, list]:
    shape = _prelu_alpha_shape(graph, node)
    return {roles[node.op]: [np.broadcast_to(w["weight"].reshape(shape[-1:]), shape).copy()]}


@LOWERINGS.beside("from_keras", "prelu")
def _w_prelu_from(graph: Graph, node: Node, roles: dict[str, str], kw: dict[str, list]) -> dict[str, np.ndarray]:
    return {"weight": np.asarray(kw[roles[node.op]][0]).reshape(-1)}


@LOWERINGS.register("lrn")
def _l_lrn(L: _Lowering, node: Node, a: dict) -> None:
    x = L.get(node.inputs[0], True)
    kwargs = {"size": a["size"], "alpha": a["alpha"], "beta": a["beta"], "k": a["k"]}
    out = L.one("LocalResponseNorm", kwargs, node.name, [x], node.outputs[0], custom=True)
    L.set(node.outputs[0], out, True)


@LOWERINGS.register("maxpool1d", "maxpool2d", "maxpool3d", "avgpool1d", "avgpool2d", "avgpool3d")
def _l_pool(L: _Lowering, node: Node, a: dict) -> None:
    n = _spatial(node)
    kind = "max" if node.op.startswith("max") else "avg"
    k = as_tuple(a["kernel"], n, "kernel")
    s = as_tuple(a["stride"] if a["stride"] is not None else a["kernel"], n, "stride")
    p = as_tuple(a["padding"], n, "padding")
    v = node.inputs[0]
    x = L.get(v, True)
    d = as_tuple(a.get("dilation", 1), n, "dilation")
    if a["ceil_mode"] or any(v != 1 for v in d):
        _require_static(L, node, v)
        kwargs = {"kind": kind, "kernel": k, "stride": s, "padding": p}
        if any(v != 1 for v in d):
            kwargs.update(dilation=d, ceil_mode=a["ceil_mode"])
        out = L.one("CeilModePool", kwargs, node.name, [x], node.outputs[0], custom=True)
        L.set(node.outputs[0], out, True)
        return
    if any(p):
        if kind == "avg":
            x = L.one(f"ZeroPadding{n}D", {"padding": _pairs(p)}, f"{node.name}.pad", [x], f"{node.name}_padded")
        else:
            pads = [[0, 0], *([v_, v_] for v_ in p), [0, 0]]
            x = L.one("Pad", {"pads": pads, "mode": "constant", "value": float("-inf")}, f"{node.name}.pad", [x],
                      f"{node.name}_padded", custom=True)
    cls = f"{'Max' if kind == 'max' else 'Average'}Pooling{n}D"
    out = L.one(cls, {"pool_size": k, "strides": s, "padding": "valid"}, node.name, [x], node.outputs[0])
    L.set(node.outputs[0], out, True)


def _require_static(L: _Lowering, node: Node, value: str) -> None:
    t = L.graph.values[value]
    if not all(isinstance(d, int) for d in t.shape[2:]):
        raise _error("E762", f"{node.op} `{node.name}` needs known spatial sizes on the keras backend; got "
                             f"{t.shape_str()}", node, hint="bind the symbolic sizes with --set, e.g. --set h=32")


@LOWERINGS.register("global_avgpool1d", "global_avgpool2d", "global_maxpool1d", "global_maxpool2d")
def _l_global_pool(L: _Lowering, node: Node, a: dict) -> None:
    n = _spatial(node)
    cls = f"Global{'Average' if 'avg' in node.op else 'Max'}Pooling{n}D"
    x = L.get(node.inputs[0], True)
    out = L.one(cls, {"keepdims": a["keepdims"]}, node.name, [x], node.outputs[0])
    L.set(node.outputs[0], out, a["keepdims"])


@LOWERINGS.register("adaptive_avgpool1d", "adaptive_avgpool2d", "adaptive_maxpool1d", "adaptive_maxpool2d")
def _l_adaptive_pool(L: _Lowering, node: Node, a: dict) -> None:
    n = _spatial(node)
    kind = "max" if "max" in node.op else "avg"
    v = node.inputs[0]
    _require_static(L, node, v)
    sizes = [int(d) for d in L.graph.values[v].shape[2:]]
    o = as_tuple(a["output_size"], n, "output_size")
    x = L.get(v, True)
    if all(size % out == 0 for size, out in zip(sizes, o)):
        k = tuple(size // out for size, out in zip(sizes, o))
        cls = f"{'Max' if kind == 'max' else 'Average'}Pooling{n}D"
        out_var = L.one(cls, {"pool_size": k, "strides": k, "padding": "valid"}, node.name, [x], node.outputs[0])
    else:
        out_var = L.one("AdaptivePool", {"kind": kind, "output_size": o}, node.name, [x], node.outputs[0], custom=True)
    L.set(node.outputs[0], out_var, True)


@LOWERINGS.register("upsample")
def _l_upsample(L: _Lowering, node: Node, a: dict) -> None:
    v = node.inputs[0]
    n = L.rank(v) - 2
    x = L.get(v, True)
    mode = a["mode"]
    scale = as_tuple(a["scale"], n, "scale") if a["scale"] is not None else None
    if scale is not None and mode == "nearest":
        out = L.one(f"UpSampling{n}D", {"size": scale[0] if n == 1 else scale}, node.name, [x], node.outputs[0])
    elif scale is not None and mode == "bilinear" and not a["align_corners"]:
        out = L.one("UpSampling2D", {"size": scale, "interpolation": "bilinear"}, node.name, [x], node.outputs[0])
    else:
        _require_static(L, node, v)
        size = tuple(int(d) for d in L.graph.values[node.outputs[0]].shape[2:])
        out = L.one("Resize", {"size": size, "mode": mode, "align_corners": a["align_corners"]}, node.name, [x],
                    node.outputs[0], custom=True)
    L.set(node.outputs[0], out, True)


_RNN_CLASS = {"rnn": "SimpleRNN", "lstm": "LSTM", "gru": "GRU"}


@LOWERINGS.register("rnn", "lstm", "gru")
def _l_recurrent(L: _Lowering, node: Node, a: dict) -> None:
    x = L.get(node.inputs[0], False)
    dirs = 2 if a["bidirectional"] else 1
    layers_n = a["layers"]
    per_layer = 2 if node.op == "lstm" else 1  # states per direction
    states: list[str] = []
    if len(node.inputs) > 1:
        unstacked = [
            L.call("Unstack", {"count": layers_n * dirs}, f"{node.name}.{nm}", [L.get(v, False)],
                   [f"{node.name}_{nm}_{i}" for i in range(layers_n * dirs)], custom=True, list_output=True)
            for nm, v in zip(("h0", "c0"), node.inputs[1:])
        ]
        states = [s for group in zip(*unstacked) for s in group]  # per (layer, direction): h, c
    finals: list[list[str]] = [[] for _ in range(per_layer)]
    for layer in range(layers_n):
        last = layer == layers_n - 1
        kwargs: dict[str, Any] = {"units": a["hidden"], "use_bias": a["bias"]}
        if node.op == "rnn":
            kwargs["activation"] = a["nonlinearity"]
        if node.op == "gru":
            kwargs["reset_after"] = True
        kwargs["return_sequences"] = not (last and a["output"] == "last")
        if a["return_state"]:
            kwargs["return_state"] = True
        name = node.name if layers_n == 1 else f"{node.name}.l{layer}"
        value_hint = node.outputs[0] if last else f"{node.name}_l{layer}"
        hints = [value_hint]
        if a["return_state"]:
            hints += [f"{node.name}_l{layer}_{s}{d}" for d in ("", "_reverse")[:dirs] for s in ("h", "c")[:per_layer]]
        extra: dict[str, Any] = {}
        if states:
            lo = layer * dirs * per_layer
            extra["call_inputs"] = {"initial_state": ",".join(states[lo:lo + dirs * per_layer])}
        if dirs == 2:
            inner = {"layer": _RNN_CLASS[node.op], "kwargs": kwargs}
            outs = L.call("Bidirectional", {"layer": inner, "merge_mode": "concat"}, name, [x], hints,
                          role=(node.name, f"l{layer}"), list_output=len(hints) > 1, **extra)
        else:
            outs = L.call(_RNN_CLASS[node.op], kwargs, name, [x], hints, role=(node.name, f"l{layer}"),
                          list_output=len(hints) > 1, **extra)
        x = outs[0]
        for i, s in enumerate(outs[1:]):
            finals[i % per_layer].append(s)
        if not last and a["dropout"] > 0:
            x = L.one("Dropout", {"rate": a["dropout"]}, f"{node.name}.dropout{layer}", [x], f"{node.name}_drop{layer}")
    L.set(node.outputs[0], x, False)
    if a["return_state"]:
        for value, group in zip(node.outputs[1:], finals):
            stacked = L.one("Stack", {}, f"{node.name}.{'h_n' if value == node.outputs[1] else 'c_n'}", [], value,
                            custom=True, call_inputs={"": ",".join(group)})
            L.set(value, stacked, False)


@LOWERINGS.beside("to_keras", "rnn", "lstm", "gru")
def _w_recurrent_to(graph: Graph, node: Node, roles: dict[str, str], w: dict[str, np.ndarray]) -> dict[str, list]:
    return _rnn_to_keras(node, roles, w)


@LOWERINGS.beside("from_keras", "rnn", "lstm", "gru")
def _w_recurrent_from(graph: Graph, node: Node, roles: dict[str, str], kw: dict[str, list]) -> dict[str, np.ndarray]:
    return _rnn_from_keras(node, roles, kw)


def _mask_kind(mask: TensorType, query: TensorType, key_len: Any) -> str:
    """The same reading of a mask's shape as the PyTorch backend's."""
    if mask.rank == 2 and tuple(mask.shape) != (query.shape[1], key_len):
        return "padding"
    return "batched" if mask.rank == 3 else "full"


def _attention(L: _Lowering, node: Node, name: str, q: str, k: str, v: str, mask_value: str | None,
               heads: int, dropout: float, bias: bool, causal: bool, role: str, out_hint: str) -> str:
    qt = L.graph.values[node.inputs[0]]
    e = int(qt.shape[2])
    kwargs = {"num_heads": heads, "key_dim": e // heads, "dropout": dropout, "use_bias": bias}
    call_inputs = {"key": k}
    if mask_value is not None:
        key_len = L.graph.values[node.inputs[1]].shape[1] if node.op == "multihead_attention" and len(
            node.inputs) > 1 else qt.shape[1]
        kind = _mask_kind(L.graph.values[mask_value], qt, key_len)
        m = L.one("AttentionMask", {"kind": kind}, f"{name}.mask", [L.get(mask_value, False), q, k],
                  f"{name}_mask", custom=True)
        call_inputs["attention_mask"] = m
    call_args = {"use_causal_mask": True} if causal else {}
    return L.one("MultiHeadAttention", kwargs, name, [q, v], out_hint, role=(node.name, role),
                 call_inputs=call_inputs, call_args=call_args)


@LOWERINGS.register("multihead_attention")
def _l_mha(L: _Lowering, node: Node, a: dict) -> None:
    ins = [L.get(v, False) for v in node.inputs]
    q = ins[0]
    k = ins[1] if len(ins) > 1 else q
    v = ins[2] if len(ins) > 2 else k
    mask = node.inputs[3] if len(node.inputs) > 3 else None
    out = _attention(L, node, node.name, q, k, v, mask, a["heads"], a["dropout"], a["bias"], a["causal"],
                     "attention", node.outputs[0])
    L.set(node.outputs[0], out, False)


@LOWERINGS.beside("to_keras", "multihead_attention")
def _w_mha_to(graph: Graph, node: Node, roles: dict[str, str], w: dict[str, np.ndarray]) -> dict[str, list]:
    return {roles["attention"]: _mha_to_keras(w, "", node.attrs["heads"], node.attrs["bias"])}


@LOWERINGS.beside("from_keras", "multihead_attention")
def _w_mha_from(graph: Graph, node: Node, roles: dict[str, str], kw: dict[str, list]) -> dict[str, np.ndarray]:
    return _mha_from_keras(kw[roles["attention"]], "", node.attrs["bias"])


@LOWERINGS.register("transformer_encoder")
def _l_encoder(L: _Lowering, node: Node, a: dict) -> None:
    """torch.nn.TransformerEncoderLayer as the Keras layers it is made of, named like its parts."""
    x = L.get(node.inputs[0], False)
    mask = node.inputs[1] if len(node.inputs) > 1 else None
    e = int(L.graph.values[node.inputs[0]].shape[2])
    p = node.name
    eps = a["eps"]

    def norm(tag: str, inp: str) -> str:
        return L.one("LayerNormalization", {"axis": -1, "epsilon": eps}, f"{p}.{tag}", [inp], f"{p}_{tag}",
                     role=(p, tag))

    def add(tag: str, u: str, w: str) -> str:
        return L.one("Add", {}, f"{p}.{tag}", [], f"{p}_{tag}", call_inputs={"": f"{u},{w}"})

    def self_attention(inp: str) -> str:
        y = _attention(L, node, f"{p}.self_attn", inp, inp, inp, mask, a["heads"], a["dropout"], True, False,
                       "self_attn", f"{p}_attn")
        return L.one("Dropout", {"rate": a["dropout"]}, f"{p}.dropout1", [y], f"{p}_attn_drop")

    def feed_forward(inp: str) -> str:
        h = L.one("Dense", {"units": a["ff"], "activation": a["activation"]}, f"{p}.linear1", [inp], f"{p}_ff",
                  role=(p, "linear1"))
        h = L.one("Dropout", {"rate": a["dropout"]}, f"{p}.dropout", [h], f"{p}_ff_drop")
        h = L.one("Dense", {"units": e}, f"{p}.linear2", [h], f"{p}_ff_out", role=(p, "linear2"))
        return L.one("Dropout", {"rate": a["dropout"]}, f"{p}.dropout2", [h], f"{p}_ff_out_drop")

    if a["norm_first"]:
        x = add("residual1", x, self_attention(norm("norm1", x)))
        x = add("residual2", x, feed_forward(norm("norm2", x)))
    else:
        x = norm("norm1", add("residual1", x, self_attention(x)))
        x = norm("norm2", add("residual2", x, feed_forward(x)))
    L.set(node.outputs[0], x, False)


@LOWERINGS.beside("to_keras", "transformer_encoder")
def _w_encoder_to(graph: Graph, node: Node, roles: dict[str, str], w: dict[str, np.ndarray]) -> dict[str, list]:
    return {
        roles["self_attn"]: _mha_to_keras(w, "self_attn.", node.attrs["heads"], True),
        roles["linear1"]: [w["linear1.weight"].T, w["linear1.bias"]],
        roles["linear2"]: [w["linear2.weight"].T, w["linear2.bias"]],
        roles["norm1"]: [w["norm1.weight"], w["norm1.bias"]],
        roles["norm2"]: [w["norm2.weight"], w["norm2.bias"]],
    }


@LOWERINGS.beside("from_keras", "transformer_encoder")
def _w_encoder_from(graph: Graph, node: Node, roles: dict[str, str], kw: dict[str, list]) -> dict[str, np.ndarray]:
    out = _mha_from_keras(kw[roles["self_attn"]], "self_attn.", True)
    for part in ("linear1", "linear2"):
        k, b = kw[roles[part]]
        out[f"{part}.weight"], out[f"{part}.bias"] = k.T, b
    for part in ("norm1", "norm2"):
        out[f"{part}.weight"], out[f"{part}.bias"] = kw[roles[part]]
    return out


def supported_ops() -> set[str]:
    return LOWERINGS.ops()


def _input_channels_last(graph: Graph, layout: str, name: str) -> bool:
    """With layout nhwc, an input of rank ≥ 3 that a channels-last layer reads is given channels-last."""
    if layout != "nhwc":
        return False
    t = next(i.type for i in graph.inputs if i.name == name)
    if t.rank < 3:
        return False
    return any(name in n.inputs and get_op(n.op).layout == "channels_first" for n in graph.nodes)


def plan(graph: Graph, layout: str = "nchw") -> Plan:
    """Lower `graph` to a list of Keras layer calls (imports no framework). The graph is
    re-validated first: names, every attribute through its op, every shape."""
    graph = batch_first(validated(graph))  # time-major recurrent layers: permutes around
    BACKEND.check(graph)
    L = _Lowering(graph, layout)
    for gi in graph.inputs:
        L.layer_names.add(gi.name)
    for gi in graph.inputs:
        cl = _input_channels_last(graph, layout, gi.name)
        shape = [None if not isinstance(d, int) else d for d in gi.type.shape]
        tail = shape[1:]
        if cl:
            tail = [*tail[1:], tail[0]]
        var = L.var(gi.name)
        L.inputs.append(InputSpec(var=var, name=gi.name, shape=tuple(tail), batch=shape[0], dtype=gi.type.dtype,
                                  channels_last=cl))
        L.set(gi.name, var, cl)
    for node in graph.nodes:
        LOWERINGS[node.op].fn(L, node, node.attrs)
    outputs: dict[str, tuple[str, bool]] = {}
    for o in graph.outputs:
        if layout == "nchw":
            outputs[o.name] = (L.get(o.value, False), False)
        else:
            outputs[o.name] = L.values[o.value]
    return Plan(graph=graph, layout=layout, inputs=L.inputs, calls=L.calls, outputs=outputs, values=L.values,
                roles=L.roles, custom=L.custom)


# ---- building in process ---------------------------------------------------------------------


def _import_keras():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    try:
        import keras
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise DlspecError(Diagnostic(code="E763", message=f"the keras backend needs Keras 3 with TensorFlow ({exc})",
                                     hint="pip install 'dlspec[tf]'")) from None
    if keras.backend.backend() != "tensorflow":
        raise DlspecError(Diagnostic(code="E763", message=f"the keras backend runs on TensorFlow; KERAS_BACKEND is "
                                     f"{keras.backend.backend()!r}", hint="set KERAS_BACKEND=tensorflow"))
    return keras


def _layer_class(keras, call_layer: str, custom: bool):
    if custom:
        from . import keras_layers

        return getattr(keras_layers, call_layer)
    return getattr(keras.layers, call_layer)


def _instantiate(keras, call: Call):
    kwargs = dict(call.kwargs)
    if call.layer == "Bidirectional":
        inner = kwargs.pop("layer")
        kwargs["layer"] = getattr(keras.layers, inner["layer"])(**inner["kwargs"])
    return _layer_class(keras, call.layer, call.custom)(name=call.name, **kwargs)


def _run_plan(p: Plan, keras, extra_outputs: bool = False):
    env: dict[str, Any] = {}
    inputs = []
    for spec in p.inputs:
        t = keras.Input(shape=spec.shape, batch_size=spec.batch, dtype=spec.dtype, name=spec.name)
        env[spec.var] = t
        inputs.append(t)
    for call in p.calls:
        layer = _instantiate(keras, call)
        args = [env[v] for v in call.inputs]
        kwargs: dict[str, Any] = {}
        for kw, refs in call.call_inputs.items():
            tensors = [env[r] for r in refs.split(",")]
            if kw == "":
                args.insert(0, tensors)
            elif kw == "initial_state":
                kwargs[kw] = tensors
            else:
                kwargs[kw] = tensors[0]
        result = layer(*args, **kwargs, **call.call_args)
        if len(call.outputs) == 1 and not call.list_output:
            env[call.outputs[0]] = result
        else:
            for var, t in zip(call.outputs, result):
                env[var] = t
    return inputs, env


def build_model(graph: Graph, layout: str = "nchw"):
    """The live Keras model for `graph` (imports TensorFlow). Inputs in graph order; one output is
    a tensor, several are a dict keyed by output name. Frozen parameters are not trainable."""
    keras = _import_keras()
    p = plan(graph, layout)
    inputs, env = _run_plan(p, keras)
    outs = {name: env[var] for name, (var, _) in p.outputs.items()}
    model = keras.Model(inputs=inputs if len(inputs) > 1 else inputs[0],
                        outputs=outs if len(outs) > 1 else next(iter(outs.values())), name=ident(graph.name))
    _apply_frozen(model, graph, p)
    return model


build_module = build_model


def build_probe(graph: Graph, layout: str = "nchw"):
    """A model returning every IR value (a dict keyed by value name) and, per value, whether its
    array is channels-last: for comparing layer by layer against another backend."""
    keras = _import_keras()
    p = plan(graph, layout)
    inputs, env = _run_plan(p, keras)
    outs = {value: env[var] for value, (var, _) in p.values.items() if value not in {i.name for i in graph.inputs}}
    model = keras.Model(inputs=inputs if len(inputs) > 1 else inputs[0], outputs=outs)
    return model, {value: cl for value, (_, cl) in p.values.items()}


def _apply_frozen(model, graph: Graph, p: Plan) -> None:
    frozen_nodes = {prm.node for prm in graph.params() if not prm.trainable and not prm.buffer}
    for node_name in frozen_nodes:
        for lname in p.roles.get(node_name, {}).values():
            model.get_layer(lname).trainable = False


# ---- weights ---------------------------------------------------------------------------------


def _gru_gates(w: np.ndarray, h: int, to_keras: bool = True) -> np.ndarray:
    """PyTorch's r, z, n blocks (axis 0) in Keras's gate order (z, r, h), as the catalogue
    declares it, or back."""
    return permute_gates(w, get_op("gru"), "keras", to_framework=to_keras)


def _to_keras(graph: Graph, node: Node, roles: dict[str, str], w: dict[str, np.ndarray]) -> dict[str, list]:
    """The node's canonical arrays as Keras layer weights, by its op's `to_keras` adapter."""
    adapter = LOWERINGS[node.op].get("to_keras")
    return adapter(graph, node, roles, {k: np.asarray(v) for k, v in w.items()}) if adapter else {}


def _from_keras(graph: Graph, node: Node, roles: dict[str, str], kw: dict[str, list]) -> dict[str, np.ndarray]:
    """The inverse of `_to_keras`: canonical arrays keyed by local parameter name."""
    adapter = LOWERINGS[node.op].get("from_keras")
    return adapter(graph, node, roles, kw) if adapter else {}


def _rnn_to_keras(node: Node, roles: dict[str, str], w: dict[str, np.ndarray]) -> dict[str, list]:
    a = node.attrs
    h = a["hidden"]
    dirs = 2 if a["bidirectional"] else 1
    out: dict[str, list] = {}
    for layer in range(a["layers"]):
        ws: list[np.ndarray] = []
        for d in range(dirs):
            sfx = f"l{layer}" + ("_reverse" if d else "")
            w_ih, w_hh = w[f"weight_ih_{sfx}"], w[f"weight_hh_{sfx}"]
            if node.op == "gru":
                w_ih, w_hh = _gru_gates(w_ih, h), _gru_gates(w_hh, h)
            ws += [w_ih.T, w_hh.T]
            if a["bias"]:
                b_ih, b_hh = w[f"bias_ih_{sfx}"], w[f"bias_hh_{sfx}"]
                if node.op == "gru":
                    ws.append(np.stack([_gru_gates(b_ih, h), _gru_gates(b_hh, h)]))
                else:
                    ws.append(b_ih + b_hh)
        out[roles[f"l{layer}"]] = ws
    return out


def _rnn_from_keras(node: Node, roles: dict[str, str], kw: dict[str, list]) -> dict[str, np.ndarray]:
    """LSTM and RNN keep one bias in Keras (b_ih + b_hh): it comes back as bias_ih, with bias_hh zero."""
    a = node.attrs
    h = a["hidden"]
    dirs = 2 if a["bidirectional"] else 1
    per = 3 if a["bias"] else 2
    out: dict[str, np.ndarray] = {}
    for layer in range(a["layers"]):
        ws = kw[roles[f"l{layer}"]]
        for d in range(dirs):
            sfx = f"l{layer}" + ("_reverse" if d else "")
            group = ws[d * per:(d + 1) * per]
            w_ih, w_hh = group[0].T, group[1].T
            if node.op == "gru":
                w_ih, w_hh = _gru_gates(w_ih, h, False), _gru_gates(w_hh, h, False)
            out[f"weight_ih_{sfx}"], out[f"weight_hh_{sfx}"] = w_ih, w_hh
            if a["bias"]:
                if node.op == "gru":
                    out[f"bias_ih_{sfx}"], out[f"bias_hh_{sfx}"] = _gru_gates(group[2][0], h, False), _gru_gates(group[2][1], h, False)
                else:
                    out[f"bias_ih_{sfx}"], out[f"bias_hh_{sfx}"] = group[2], np.zeros_like(group[2])
    return out


def _mha_to_keras(w: dict[str, np.ndarray], prefix: str, heads: int, bias: bool) -> list[np.ndarray]:
    """in_proj_weight [3E, E] → query/key/value kernels [E, heads, head_dim]; out_proj [E, E] →
    [heads, head_dim, E]. Keras's order: q kernel, q bias, k kernel, k bias, v …, output …"""
    wi = w[f"{prefix}in_proj_weight"]
    e = wi.shape[1]
    d = e // heads
    out: list[np.ndarray] = []
    for i in range(3):
        out.append(wi[i * e:(i + 1) * e].T.reshape(e, heads, d))
        if bias:
            out.append(w[f"{prefix}in_proj_bias"][i * e:(i + 1) * e].reshape(heads, d))
    out.append(w[f"{prefix}out_proj.weight"].T.reshape(heads, d, e))
    if bias:
        out.append(w[f"{prefix}out_proj.bias"])
    return out


def _mha_from_keras(ws: list[np.ndarray], prefix: str, bias: bool) -> dict[str, np.ndarray]:
    step = 2 if bias else 1
    e = ws[0].shape[0]
    kernels = [ws[i * step].reshape(e, e).T for i in range(3)]
    out = {f"{prefix}in_proj_weight": np.concatenate(kernels, axis=0)}
    okernel = ws[3 * step]
    out[f"{prefix}out_proj.weight"] = okernel.reshape(-1, e).T
    if bias:
        out[f"{prefix}in_proj_bias"] = np.concatenate([ws[i * step + 1].reshape(-1) for i in range(3)])
        out[f"{prefix}out_proj.bias"] = ws[3 * step + 1]
    return out


def _by_node(graph: Graph, arrays: dict[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
    grouped: dict[str, dict[str, np.ndarray]] = {}
    for prm in graph.params():
        if prm.path in arrays:
            grouped.setdefault(prm.node, {})[prm.name] = arrays[prm.path]
    return grouped


def set_weights(model, graph: Graph, arrays: dict[str, np.ndarray]) -> None:
    """Load canonical (PyTorch-layout) arrays keyed by parameter path into `model`. Every
    parameter of the graph must be present (E764 lists what is missing or misshapen)."""
    p = plan(graph)
    expected = {prm.path: tuple(int(d) for d in prm.shape) for prm in graph.params()}
    problems = [f"missing `{k}`" for k in expected if k not in arrays]
    problems += [f"`{k}` is {list(np.shape(arrays[k]))}, the model needs {list(s)}"
                 for k, s in expected.items() if k in arrays and tuple(np.shape(arrays[k])) != s]
    if problems:
        more = f" (and {len(problems) - 8} more)" if len(problems) > 8 else ""
        raise DlspecError(Diagnostic(code="E764", message=f"weights do not fit `{graph.name}`: "
                                     + "; ".join(problems[:8]) + more))
    grouped = _by_node(graph, arrays)
    for node in graph.nodes:
        if node.name not in grouped:
            continue
        for lname, ws in _to_keras(graph, node, p.roles[node.name], grouped[node.name]).items():
            layer = model.get_layer(lname)
            layer.set_weights([np.asarray(w, dtype=v.dtype) for w, v in zip(ws, layer.weights)])


def load_weights(model, graph: Graph, path) -> None:
    """Load a canonical safetensors file (checked name by name, E506/E508); never unpickles."""
    from ..weights import load_graph_weights

    set_weights(model, graph, load_graph_weights(graph, path, strict=True))


def canonical_weights(model, graph: Graph) -> dict[str, np.ndarray]:
    """The model's weights in the canonical layout keyed by parameter path: the inverse of
    `set_weights` (an LSTM/RNN's single Keras bias comes back as bias_ih, with bias_hh zero)."""
    p = plan(graph)
    out: dict[str, np.ndarray] = {}
    for node in graph.nodes:
        roles = p.roles.get(node.name)
        if not roles:
            continue
        kw = {lname: model.get_layer(lname).get_weights() for lname in roles.values()}
        for local, arr in _from_keras(graph, node, roles, kw).items():
            out[f"{node.name}.{local}"] = np.ascontiguousarray(arr, dtype=np.float32)
    return out


def save_weights(model, graph: Graph, path) -> None:
    from ..weights import save_numpy

    save_numpy(canonical_weights(model, graph), path, metadata={"model": graph.name, "layout": "canonical-torch"})


# ---- source generation -----------------------------------------------------------------------


@functools.cache
def _custom_sources() -> dict[str, str]:
    """Class name → source of each layer in keras_layers.py, read as text (no Keras import)."""
    text = _CUSTOM_LAYERS_FILE.read_text(encoding="utf-8")
    lines = text.splitlines()
    out: dict[str, str] = {}
    for item in ast.parse(text).body:
        if isinstance(item, ast.ClassDef):
            start = min([item.lineno, *(d.lineno for d in item.decorator_list)]) - 1
            out[item.name] = "\n".join(lines[start:item.end_lineno])
    return out


def _render_value(v: Any) -> str:
    return literal(v)


def _is_keras_default(layer: str, key: str, value: Any) -> bool:
    """True for a constructor argument equal to Keras's default: left out of the source (the
    builder still passes it, with the same effect)."""
    if key == "use_bias" or (key in ("center", "scale") and "Normalization" in layer):
        return value is True
    if key == "axis" and ("Normalization" in layer or layer == "Softmax"):
        return value == -1
    if layer.startswith(("Conv", "DepthwiseConv")):
        if key in ("strides", "dilation_rate"):
            return all(v == 1 for v in value)
        if key == "padding":
            return value == "valid"
    return False


def _render_call(call: Call) -> str:
    kwargs = {k: v for k, v in call.kwargs.items() if call.custom or not _is_keras_default(call.layer, k, v)}
    if call.layer == "Bidirectional":
        inner = kwargs.pop("layer")
        inner_args = ", ".join(f"{k}={_render_value(v)}" for k, v in inner["kwargs"].items()
                               if not _is_keras_default(inner["layer"], k, v))
        head = f"layers.{inner['layer']}({inner_args})"
        rest = "".join(f", {k}={_render_value(v)}" for k, v in kwargs.items())
        ctor = f"layers.Bidirectional({head}{rest}, name={literal(call.name)})"
    else:
        args = "".join(f"{k}={_render_value(v)}, " for k, v in kwargs.items())
        ctor = f"{'' if call.custom else 'layers.'}{call.layer}({args}name={literal(call.name)})"
    params = list(call.inputs)
    for kw, refs in call.call_inputs.items():
        vars_ = refs.split(",")
        if kw == "":
            params.insert(0, "[" + ", ".join(vars_) + "]")
        elif kw == "initial_state":
            params.append(f"initial_state=[{', '.join(vars_)}]")
        else:
            params.append(f"{kw}={vars_[0]}")
    params += [f"{k}={_render_value(v)}" for k, v in call.call_args.items()]
    lhs = ", ".join(call.outputs) if len(call.outputs) > 1 or call.list_output else call.outputs[0]
    if call.list_output and len(call.outputs) == 1:
        lhs += ","
    return f"    {lhs} = {ctor}({', '.join(params)})"


def generate(graph: Graph, layout: str = "nchw") -> str:
    """Readable Keras 3 source: a `build_model()` function with the functional model, and the
    definitions of the few custom layers it uses. Imports no framework."""
    p = plan(graph, layout)
    sources = _custom_sources()
    fn = "build_" + ident(_snake(graph.name))
    lines = [
        f'"""{doc_text(graph.name)}: generated by dlspec from {doc_text(Path(graph.source).name if graph.source else "a spec")} '
        f'(layout {layout}). '
        'Edit the spec, not this file."""',
        "",
        "import os",
        "",
        'os.environ.setdefault("KERAS_BACKEND", "tensorflow")',
        "",
    ]
    header_end = len(lines)
    for name in p.custom:
        lines += ["", sources[name], ""]
    ins_doc = "\n".join(f"        {doc_text(i.name)}: {i.dtype}[batch, {doc_text(', '.join(str(d) for d in i.shape))}]"
                        + (" (channels-last)" if i.channels_last else "") for i in p.inputs)
    outs_doc = "\n".join(
        f"        {doc_text(o.name)}: {doc_text(graph.values[o.value])}" + (" (channels-last)" if p.outputs[o.name][1] else "")
        for o in graph.outputs)
    lines += ["", f"def {fn}() -> keras.Model:", f'    """Inputs:\n{ins_doc}\n    Outputs:\n{outs_doc}\n    """']
    for i in p.inputs:
        batch = f", batch_size={i.batch}" if i.batch is not None else ""
        dtype = f", dtype={literal(i.dtype)}" if i.dtype != "float32" else ""
        lines += split_lines(f"{i.var} = ", f"keras.Input(shape={_render_value(i.shape)}{batch}{dtype}, name={literal(i.name)})",
                        depth=1)
    for c in p.calls:
        target, _, value = _render_call(c).strip().partition(" = ")
        if target.endswith(",") and "," not in target[:-1]:
            target = f"({target})"  # a one-element unpacking, as the formatter writes it
        lines += split_lines(f"{target} = ", value, depth=1)
    in_list = ", ".join(i.var for i in p.inputs)
    inputs = f"[{in_list}]" if len(p.inputs) > 1 else in_list
    if len(p.outputs) == 1:
        outputs = next(iter(p.outputs.values()))[0]
    else:
        outputs = "{" + ", ".join(f"{literal(k)}: {v}" for k, (v, _) in p.outputs.items()) + "}"
    lines += split_lines("return ", f"keras.Model(inputs={inputs}, outputs={outputs}, name={literal(ident(graph.name))})", depth=1)
    lines += ["", "", 'if __name__ == "__main__":', f"    {fn}().summary()", ""]
    body = "\n".join(lines[header_end:])
    # import what the body uses, and nothing else
    imports = ["import math", ""] if re.search(r"\bmath\.", body) else []
    used = [m for m in ("layers", "ops") if re.search(rf"\b{m}\.", body)]
    imports += ["import keras", *([f"from keras import {', '.join(used)}"] if used else []), ""]
    return "\n".join(lines[:header_end] + imports + lines[header_end:])


def _snake(name: str) -> str:
    out = []
    for i, ch in enumerate(name):
        if ch.isupper() and i and (not name[i - 1].isupper() or (i + 1 < len(name) and name[i + 1].islower())):
            out.append("_")
        out.append(ch.lower())
    return "".join(out)


# ---- the backend interface -------------------------------------------------------------------


class KerasBackend(TableBackend):
    """The Keras (TensorFlow) backend behind the registry's interface (`dlspec.backends.Backend`)."""

    name = TARGET
    framework = "tensorflow"
    lowerings = LOWERINGS

    def generate(self, graph: Graph, *, layout: str = "nchw", source: str | None = None) -> str:
        return generate(graph, layout=layout)

    def build(self, graph: Graph, weights=None, *, layout: str = "nchw", source: str | None = None):
        model = build_model(graph, layout=layout)
        if weights is not None:
            self.load_weights(model, graph, weights)
        return model

    def load_weights(self, live, graph: Graph, weights) -> None:
        set_weights(live, graph, dict(weights))

    def read_weights(self, live, graph: Graph) -> dict[str, Any]:
        return canonical_weights(live, graph)

    def run(self, graph: Graph, weights, inputs) -> dict[str, Any]:
        model = self.build(graph, weights)
        xs = [inputs[i.name] for i in graph.inputs]
        y = model(xs if len(xs) > 1 else xs[0], training=False)
        ys = y if isinstance(y, dict) else {graph.outputs[0].name: y}
        return {k: np.asarray(v) for k, v in ys.items()}


BACKEND = KerasBackend()
