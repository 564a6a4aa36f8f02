"""MXNet backend: IR graph → readable Gluon (MXNet 1.9) source, run in MXNet's own interpreter.

MXNet 1.9.1 needs numpy < 1.24, so it cannot share dlspec's environment. Generating the source
needs no MXNet: `generate` writes one `gluon.HybridBlock` per model (NCHW like the canonical
layout, `hybrid_forward` with the spec's names), a numpy-only reader and writer of canonical
safetensors weights, and the recipe's optimizer, schedule and loss as a `gluon.Trainer` loop.
`build`, `run`, `read_weights` and `load_weights` run that source in the interpreter named by
`DLSPEC_MXNET_PYTHON` through `mxnet_runner.py`, a script that needs only MXNet and numpy;
weights cross as safetensors files, arrays as `.npy` files, never pickles.

The source is written from `ir.check.validated(graph)` only, every spec name through
`pysource.ident`, every value through `literal`, every text through `doc_text` (docs/security.md).
The canonical layout needs no conversion for Gluon: conv kernels OIHW, transposed kernels
[in, out/groups, k…], dense weights [out, in], LSTM gates i, f, g, o and GRU gates r, z, n, as in
PyTorch (docs/mxnet.md). Gluon's GroupNorm keeps one scale per group, and Gluon has no attention
layer: the generated file defines small blocks for them with PyTorch's parameters.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import Diagnostic, DlspecError
from ..ir.check import validated
from ..ir.graph import Graph, Node
from ..ir.ops import get_op
from ..ir.ops.base import as_tuple
from ..ir.time_major import batch_first
from ..ir.types import TensorType
from . import pysource
from .lowering import Lowerings, TableBackend
from .pysource import doc_text, literal

TARGET = "mxnet"
ENV_VAR = "DLSPEC_MXNET_PYTHON"
SETUP_COMMAND = "python -m venv ~/.venvs/mxnet && ~/.venvs/mxnet/bin/pip install mxnet==1.9.1 numpy==1.23.5"
RUNNER = Path(__file__).with_name("mxnet_runner.py")

#: names of the generated file (modules, helpers) and of Gluon's Block API that no spec name may take
GENERATED_NAMES = frozenset({
    "mx", "gluon", "autograd", "nn", "rnn", "json", "np", "F", "OUTPUTS", "WEIGHTS", "TRAINING",
    "read_safetensors", "write_safetensors", "load_canonical_weights", "canonical_weights", "make_trainer",
    "make_loss", "train", "build_model", "GroupNorm", "LearnedTensor", "MultiheadAttention", "TransformerEncoderLayer",
    "_zero_state", "_last_state", "_lrn", "_adaptive_max", "_pad", "_flatten_range", "_nearest_resize",
    "_attention_allowed",
    # gluon.Block / HybridBlock attributes
    "params", "name", "prefix", "forward", "hybrid_forward", "collect_params", "initialize", "hybridize",
    "export", "save_parameters", "load_parameters", "register_child", "name_scope", "summary", "cast",
    "apply", "infer_shape", "infer_type", "register_forward_hook", "register_forward_pre_hook",
    "register_op_hook", "optimize_for", "save_params", "load_params", "zero_grad", "reset_ctx",
    "share_parameters", "setattr",
})


def ident(name: str, used: set[str] | None = None) -> str:
    return pysource.ident(name, used, reserved=GENERATED_NAMES)


def _error(code: str, message: str, node: Node | None = None, hint: str | None = None) -> DlspecError:
    span = node.span if node is not None else None
    where = f" at {span}" if span else ""
    return DlspecError(Diagnostic(code=code, message=message + where, hint=hint, span=span))


def _refuse(node: Node, what: str, hint: str | None = None) -> DlspecError:
    return _error("E781", f"{node.op} (layer `{node.name}`): {what} has no Gluon form on the MXNet backend", node,
                  hint or "bind the symbolic sizes (`--set h=32`), or compile to another target")


def _lit(v: Any) -> str:
    if isinstance(v, tuple) and len(v) == 1:
        return literal(v[0])
    return literal(v)


def _static(t: TensorType, axes: range | list[int]) -> list[int] | None:
    dims = [t.shape[i] for i in axes]
    return [int(d) for d in dims] if all(isinstance(d, int) for d in dims) else None


# ---- the emitter -----------------------------------------------------------------------------


@dataclass
class _Ctx:
    graph: Graph
    helpers: set[str] = field(default_factory=set)
    used: set[str] = field(default_factory=set)
    #: node name → attribute of its child block
    children: dict[str, str] = field(default_factory=dict)

    def tmp(self, hint: str) -> str:
        return ident(hint, self.used)


Lower = Callable[[_Ctx, Node, dict, list[str], list[TensorType], list[str]], list[str]]
LOWERINGS = Lowerings(TARGET)


def _expr(fn: Callable[..., str]) -> Lower:
    """A lowering whose one output is one expression."""

    def lower(c: _Ctx, node: Node, a: dict, x: list[str], t: list[TensorType], outs: list[str]) -> list[str]:
        return [f"{outs[0]} = {fn(c, node, a, x, t)}"]

    return lower


def _child(c: _Ctx, node: Node) -> str:
    return f"self.{c.children[node.name]}"


# -- activations and arithmetic --

_ACTIVATIONS: dict[str, Callable[[dict, str], str]] = {
    "relu": lambda a, x: f"F.relu({x})",
    "relu6": lambda a, x: f"F.clip({x}, 0.0, 6.0)",
    "leaky_relu": lambda a, x: f"F.LeakyReLU({x}, act_type='leaky', slope={_lit(a['slope'])})",
    "elu": lambda a, x: f"F.LeakyReLU({x}, act_type='elu', slope={_lit(a['alpha'])})",
    "selu": lambda a, x: f"F.LeakyReLU({x}, act_type='selu')",
    "silu": lambda a, x: f"{x} * F.sigmoid({x})",
    "sigmoid": lambda a, x: f"F.sigmoid({x})",
    "tanh": lambda a, x: f"F.tanh({x})",
    "softplus": lambda a, x: f"F.Activation({x}, act_type='softrelu')",
    "softsign": lambda a, x: f"F.Activation({x}, act_type='softsign')",
    "hardsigmoid": lambda a, x: f"F.clip({x} / 6.0 + 0.5, 0.0, 1.0)",
    "hardswish": lambda a, x: f"{x} * F.clip({x} / 6.0 + 0.5, 0.0, 1.0)",
    "mish": lambda a, x: f"{x} * F.tanh(F.Activation({x}, act_type='softrelu'))",
    "hardtanh": lambda a, x: f"F.clip({x}, {_lit(float(a['min']))}, {_lit(float(a['max']))})",
    "softmax": lambda a, x: f"F.softmax({x}, axis={_lit(a['axis'])})",
    "log_softmax": lambda a, x: f"F.log_softmax({x}, axis={_lit(a['axis'])})",
    "exp": lambda a, x: f"F.exp({x})",
    "log": lambda a, x: f"F.log({x})",
    "sqrt": lambda a, x: f"F.sqrt({x})",
    "absolute": lambda a, x: f"F.abs({x})",
    "reciprocal": lambda a, x: f"F.reciprocal({x})",
    "identity": lambda a, x: x,
    "dropout": lambda a, x: f"F.Dropout({x}, p={_lit(a['p'])})",
}
for _op, _fn in _ACTIVATIONS.items():
    LOWERINGS.add(_op, _expr(lambda c, n, a, x, t, fn=_fn: fn(a, x[0])))


@LOWERINGS.register("gelu")
def _l_gelu(c, node, a, x, t, outs):
    if a["approximate"] == "tanh":
        return [f"{outs[0]} = 0.5 * {x[0]} * (1.0 + F.tanh(0.7978845608028654 * ({x[0]} + 0.044715 * {x[0]} ** 3)))"]
    return [f"{outs[0]} = F.LeakyReLU({x[0]}, act_type='gelu')"]


@LOWERINGS.register("reduce_sum", "reduce_mean", "reduce_max")
def _l_reduce(c, node, a, x, t, outs):
    op = get_op(node.op)
    axes = tuple(op.reduced(op.attrs_from_dict(a), t[0].rank))
    fn = {"reduce_sum": "sum", "reduce_mean": "mean", "reduce_max": "max"}[node.op]
    return [f"{outs[0]} = F.{fn}({x[0]}, axis={literal(axes)}, keepdims={_lit(a['keepdims'])})"]


@LOWERINGS.register("argmax")
def _l_argmax(c, node, a, x, t, outs):
    return [f"{outs[0]} = F.cast(F.argmax({x[0]}, axis={literal(a['axis'] % t[0].rank)}, "
            f"keepdims={_lit(a['keepdims'])}), dtype='int64')"]


@LOWERINGS.register("cast")
def _l_cast(c, node, a, x, t, outs):
    if a["dtype"] in ("bool", "bfloat16") or t[0].dtype in ("bool", "bfloat16"):
        raise _refuse(node, f"a cast of {t[0].dtype} to {a['dtype']}")
    return [f"{outs[0]} = F.cast({x[0]}, dtype={literal(a['dtype'])})"]


@LOWERINGS.register("topk")
def _l_topk(c, node, a, x, t, outs):
    return [f"{outs[0]}, {outs[1]} = F.topk({x[0]}, axis={literal(a['axis'] % t[0].rank)}, k={literal(a['k'])}, "
            f"ret_typ='both', is_ascend={literal(not a['largest'])}, dtype='int64')"]


@LOWERINGS.register("tile")
def _l_tile(c, node, a, x, t, outs):
    return [f"{outs[0]} = F.tile({x[0]}, reps={literal(tuple(a['reps']))})"]


@LOWERINGS.register("select")
def _l_select(c, node, a, x, t, outs):
    ax = a["axis"] % t[0].rank
    end = "None" if a["index"] == -1 else literal(a["index"] + 1)
    return [f"{outs[0]} = F.squeeze(F.slice_axis({x[0]}, axis={literal(ax)}, begin={literal(a['index'])}, "
            f"end={end}), axis={literal(ax)})"]


@LOWERINGS.register("pow", "maximum", "minimum")
def _l_binary_fn(c, node, a, x, t, outs):
    fn = {"pow": "power", "maximum": "maximum", "minimum": "minimum"}[node.op]
    if len(x) == 1:
        return [f"{outs[0]} = F.{fn}({x[0]}, {_lit(float(a['scalar']))})"]
    return [f"{outs[0]} = F.broadcast_{fn}({x[0]}, {x[1]})"]


_COMPARE = {"equal": ("broadcast_equal", "=="), "less": ("broadcast_lesser", "<"),
            "less_equal": ("broadcast_lesser_equal", "<="), "greater": ("broadcast_greater", ">"),
            "greater_equal": ("broadcast_greater_equal", ">=")}


@LOWERINGS.register(*_COMPARE)
def _l_compare(c, node, a, x, t, outs):
    """0/1 in the inputs' dtype (MXNet's comparisons have no bool), read by `where`."""
    if any(o.value == node.outputs[0] for o in c.graph.outputs):
        raise _refuse(node, "a comparison as a model output (MXNet compares to 0/1 floats, not bools)",
                      "output a where(...) of it, or compile to another target")
    fn, sym = _COMPARE[node.op]
    if len(x) == 1:
        return [f"{outs[0]} = {x[0]} {sym} {_lit(float(a['scalar']))}"]
    return [f"{outs[0]} = F.{fn}({x[0]}, {x[1]})"]


_LOGICAL = {"logical_not": "logical_not", "logical_and": "broadcast_logical_and", "logical_or": "broadcast_logical_or"}


@LOWERINGS.register(*_LOGICAL)
def _l_logical(c, node, a, x, t, outs):
    """On the 0/1 floats that stand for bools here (a comparison's), 0/1 again."""
    if any(o.value == node.outputs[0] for o in c.graph.outputs):
        raise _refuse(node, f"{node.op} as a model output (MXNet's masks are 0/1 floats, not bools)",
                      "output a where(...) of it, or compile to another target")
    return [f"{outs[0]} = F.{_LOGICAL[node.op]}({', '.join(x)})"]


@LOWERINGS.register("where")
def _l_where(c, node, a, x, t, outs):
    """F.where of the three broadcast to one shape (F.where takes equal shapes): each plus the
    zeros of that shape, which leaves every value (inf and NaN included) as it is."""
    dtype = c.graph.values[node.outputs[0]].dtype
    cond = c.tmp(f"{outs[0]}_condition")
    lines = [f"{cond} = F.cast({x[0]}, dtype={literal(dtype)})"]  # 0/1 of a comparison of ints: int64
    base = f"F.zeros_like({cond})"
    for v in x[1:]:
        base = f"F.broadcast_add({base}, F.zeros_like({v}))"
    lines.append(f"{outs[0]} = {base}")
    rest = iter(x[1:])
    vals = [f"({outs[0]} + {_lit(float(v))})" if v is not None else f"F.broadcast_add({next(rest)}, {outs[0]})"
            for v in (a["a_value"], a["b_value"])]
    lines.append(f"{outs[0]} = F.where(F.broadcast_add({cond}, {outs[0]}), {vals[0]}, {vals[1]})")
    return lines


@LOWERINGS.register("add", "sub", "mul", "div")
def _l_binary(c, node, a, x, t, outs):
    if len(x) == 1:
        sym = {"add": "+", "sub": "-", "mul": "*", "div": "/"}[node.op]
        return [f"{outs[0]} = {x[0]} {sym} {_lit(float(a['scalar']))}"]
    return [f"{outs[0]} = F.broadcast_{node.op}({x[0]}, {x[1]})"]


@LOWERINGS.register("matmul")
def _l_matmul(c, node, a, x, t, outs):
    ta, tb = t
    if ta.rank == 2 and tb.rank == 2:
        return [f"{outs[0]} = F.dot({x[0]}, {x[1]})"]
    if ta.rank != tb.rank or tuple(ta.shape[:-2]) != tuple(tb.shape[:-2]):
        raise _refuse(node, "a matrix product that broadcasts its leading axes",
                      "give both operands the same leading axes (unsqueeze and concat, or reshape)")
    return [f"{outs[0]} = F.linalg.gemm2({x[0]}, {x[1]})"]


# -- tensor ops --


def _axis(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis


@LOWERINGS.register("flatten")
def _l_flatten(c, node, a, x, t, outs):
    rank = t[0].rank
    start, end = a["start"] % rank, a["end"] % rank
    if start == 1 and end == rank - 1:
        return [f"{outs[0]} = F.flatten({x[0]})"]
    if start == end:
        return [f"{outs[0]} = {x[0]}"]
    c.helpers.add("flatten_range")
    return [f"{outs[0]} = _flatten_range(F, {x[0]}, {start}, {end - start})"]


LOWERINGS.add("reshape", _expr(lambda c, n, a, x, t: f"F.reshape({x[0]}, shape={literal((0, *a['shape']))})"))
LOWERINGS.add("permute", _expr(lambda c, n, a, x, t: (
    f"F.transpose({x[0]}, axes={literal(tuple(d % t[0].rank for d in a['dims']))})")))
LOWERINGS.add("squeeze", _expr(lambda c, n, a, x, t: f"F.squeeze({x[0]}, axis={_axis(a['axis'], t[0].rank)})"))
LOWERINGS.add("unsqueeze", _expr(lambda c, n, a, x, t: f"F.expand_dims({x[0]}, axis={_axis(a['axis'], t[0].rank + 1)})"))
LOWERINGS.add("concat", _expr(lambda c, n, a, x, t: f"F.concat({', '.join(x)}, dim={_axis(a['axis'], t[0].rank)})"))


@LOWERINGS.register("split")
def _l_split(c, node, a, x, t, outs):
    axis = _axis(a["axis"], t[0].rank)
    parts = a["parts"]
    if isinstance(parts, int):
        size = t[0].shape[axis]
        if not isinstance(size, int):
            if parts == 1:
                return [f"{outs[0]} = {x[0]}"]
            return [f"{', '.join(outs)}, = F.split({x[0]}, num_outputs={parts}, axis={axis})" if len(outs) == 1 else
                    f"{', '.join(outs)} = F.split({x[0]}, num_outputs={parts}, axis={axis})"]
        sizes = [size // parts] * parts
    else:
        sizes = list(parts)
    lines, start = [], 0
    for out, s in zip(outs, sizes):
        lines.append(f"{out} = F.slice_axis({x[0]}, axis={axis}, begin={start}, end={start + s})")
        start += s
    return lines


@LOWERINGS.register("pad")
def _l_pad(c, node, a, x, t, outs):
    op = get_op("pad")
    pairs = op.pairs(op.attrs_from_dict(a), t[0].rank)
    if any(p != (0, 0) for p in pairs[:2]):
        raise _refuse(node, "padding the batch or channel axis", "pad spatial axes only (axis 2 and later)")
    if t[0].rank not in (3, 4, 5):
        raise _refuse(node, f"padding a {t[0].rank}-D tensor", "pad [N, C, L], [N, C, H, W] or [N, C, D, H, W]")
    mode = {"constant": "constant", "reflect": "reflect", "replicate": "edge"}[a["mode"]]
    c.helpers.add("pad")
    flat = tuple(v for p in pairs for v in p)
    return [f"{outs[0]} = _pad(F, {x[0]}, {literal(flat)}, {literal(mode)}, {_lit(float(a['value']))})"]


@LOWERINGS.register("pad_to", "crop_to")
def _l_to_size(c, node, a, x, t, outs):
    """Sizes fixed at compile time: the pairs of a pad, or a slice of each spatial axis (a Gluon
    graph has no sizes to compute the difference from at run time)."""
    have, want = _static(t[0], range(2, t[0].rank)), _static(t[1], range(2, t[1].rank))
    if have is None or want is None:
        raise _refuse(node, f"{t[0]} to the sizes of {t[1]}: a difference of symbolic sizes")
    if node.op == "crop_to":
        src = x[0]
        lines = []
        for axis, (h, w) in enumerate(zip(have, want), start=2):
            if h != w:
                lines.append(f"{outs[0]} = F.slice_axis({src}, axis={axis}, begin={(h - w) // 2}, end={(h - w) // 2 + w})")
                src = outs[0]
        return lines or [f"{outs[0]} = {x[0]}"]
    if t[0].rank not in (3, 4, 5):
        raise _refuse(node, f"padding a {t[0].rank}-D tensor", "pad [N, C, L], [N, C, H, W] or [N, C, D, H, W]")
    c.helpers.add("pad")
    flat = (0, 0, 0, 0, *(v for h, w in zip(have, want) for v in ((w - h) // 2, w - h - (w - h) // 2)))
    return [f"{outs[0]} = _pad(F, {x[0]}, {literal(flat)}, 'constant', 0.0)"]


# -- layers with parameters: `block` is the child's constructor, `weights` maps each canonical
# local parameter name to the Gluon parameter (a dotted path below the child) --


def _conv_pads(node: Node, a: dict, t: TensorType, n: int) -> tuple[tuple[int, ...], tuple[tuple[int, int], ...] | None]:
    """(symmetric padding for Gluon, or explicit (before, after) pairs to pad first)."""
    k = as_tuple(a["kernel"], n, "kernel")
    s = as_tuple(a["stride"], n, "stride")
    d = as_tuple(a["dilation"], n, "dilation")
    p = a["padding"]
    if p == "valid":
        return (0,) * n, None
    if p != "same":
        return as_tuple(p, n, "padding"), None
    pairs = []
    for i in range(n):
        if s[i] == 1:
            total = d[i] * (k[i] - 1)
        else:
            size = t.shape[2 + i]
            if not isinstance(size, int):
                raise _refuse(node, "padding=same with a stride above 1 over a symbolic spatial size")
            out = -(-size // s[i])
            total = max((out - 1) * s[i] + d[i] * (k[i] - 1) + 1 - size, 0)
        pairs.append((total // 2, total - total // 2))
    if all(b == e for b, e in pairs):
        return tuple(b for b, _ in pairs), None
    return (0,) * n, tuple(pairs)


def _b_conv(c: _Ctx, node: Node, a: dict, t: list[TensorType]) -> str:
    n = int(node.op[-2])
    pad, _ = _conv_pads(node, a, t[0], n)
    return (f"nn.Conv{n}D({_lit(a['out_channels'])}, {_lit(as_tuple(a['kernel'], n, 'kernel'))}, "
            f"strides={_lit(as_tuple(a['stride'], n, 'stride'))}, padding={_lit(pad)}, "
            f"dilation={_lit(as_tuple(a['dilation'], n, 'dilation'))}, groups={_lit(a['groups'])}, "
            f"use_bias={_lit(a['bias'])}, in_channels={t[0].shape[1]}")


def _l_conv(c, node, a, x, t, outs):
    n = int(node.op[-2])
    _, pairs = _conv_pads(node, a, t[0], n)
    src = x[0]
    lines = []
    if pairs is not None:
        c.helpers.add("pad")
        flat = (0, 0, 0, 0, *(v for p in pairs for v in p))
        lines.append(f"{outs[0]} = _pad(F, {src}, {literal(flat)}, 'constant', 0.0)")
        src = outs[0]
    lines.append(f"{outs[0]} = {_child(c, node)}({src})")
    return lines


def _module_call(c, node, a, x, t, outs):
    return [f"{outs[0]} = {_child(c, node)}({x[0]})"]


_WEIGHT_BIAS = {"weight": "weight", "bias": "bias"}
for _n in (1, 2, 3):
    LOWERINGS.add(f"conv{_n}d", _l_conv, block=_b_conv, weights=_WEIGHT_BIAS)


def _b_convt(c: _Ctx, node: Node, a: dict, t: list[TensorType]) -> str:
    n = int(node.op[-2])
    return (f"nn.Conv{n}DTranspose({_lit(a['out_channels'])}, {_lit(as_tuple(a['kernel'], n, 'kernel'))}, "
            f"strides={_lit(as_tuple(a['stride'], n, 'stride'))}, padding={_lit(as_tuple(a['padding'], n, 'padding'))}, "
            f"output_padding={_lit(as_tuple(a['output_padding'], n, 'output_padding'))}, "
            f"dilation={_lit(as_tuple(a['dilation'], n, 'dilation'))}, groups={_lit(a['groups'])}, "
            f"use_bias={_lit(a['bias'])}, in_channels={t[0].shape[1]}")


for _n in (1, 2):
    LOWERINGS.add(f"conv_transpose{_n}d", _module_call, block=_b_convt, weights=_WEIGHT_BIAS)

LOWERINGS.add("dense", _module_call, weights=_WEIGHT_BIAS, block=lambda c, n, a, t: (
    f"nn.Dense({_lit(a['units'])}, use_bias={_lit(a['bias'])}, flatten=False, in_units={t[0].shape[-1]}"))
LOWERINGS.add("embedding", _module_call, weights={"weight": "weight"}, block=lambda c, n, a, t: (
    f"nn.Embedding({_lit(a['num'])}, {_lit(a['dim'])}"))

_BN = {"weight": "gamma", "bias": "beta", "running_mean": "running_mean", "running_var": "running_var"}
for _n in (1, 2, 3):
    LOWERINGS.add(f"batchnorm{_n}d", _module_call, weights=_BN, block=lambda c, n, a, t: (
        f"nn.BatchNorm(axis=1, momentum={_lit(1.0 - a['momentum'])}, epsilon={_lit(a['eps'])}, "
        f"center={_lit(a['affine'])}, scale={_lit(a['affine'])}, in_channels={t[0].shape[1]}"))
LOWERINGS.add("layernorm", _module_call, weights={"weight": "gamma", "bias": "beta"}, block=lambda c, n, a, t: (
    f"nn.LayerNorm(axis=-1, epsilon={_lit(a['eps'])}, center={_lit(a['affine'])}, scale={_lit(a['affine'])}, "
    f"in_channels={t[0].shape[-1]}"))


def _b_groupnorm(c: _Ctx, node: Node, a: dict, t: list[TensorType]) -> str:
    c.helpers.add("groupnorm")
    return (f"GroupNorm({_lit(a['groups'])}, {t[0].shape[1]}, rank={t[0].rank}, eps={_lit(a['eps'])}, "
            f"affine={_lit(a['affine'])}")


LOWERINGS.add("groupnorm", _module_call, block=_b_groupnorm, weights=_WEIGHT_BIAS)


def _b_instance_norm(c: _Ctx, node: Node, a: dict, t: list[TensorType]) -> str:
    c.helpers.add("groupnorm")  # a group per channel
    return (f"GroupNorm({t[0].shape[1]}, {t[0].shape[1]}, rank={t[0].rank}, eps={_lit(a['eps'])}, "
            f"affine={_lit(a['affine'])}")


LOWERINGS.add("instance_norm", _module_call, block=_b_instance_norm, weights=_WEIGHT_BIAS)


LOWERINGS.add("prelu", _module_call, weights={"weight": "alpha"}, block=lambda c, n, a, t: (
    f"nn.PReLU(in_channels={t[0].shape[1] if a['per_channel'] else 1}"))


def _b_parameter(c: _Ctx, node: Node, a: dict, t: list[TensorType]) -> str:
    c.helpers.add("parameter")
    return f"LearnedTensor({literal(tuple(a['shape']))}"


LOWERINGS.add("parameter", _module_call, block=_b_parameter, weights={"weight": "weight"})


@LOWERINGS.register("lrn")
def _l_lrn(c, node, a, x, t, outs):
    c.helpers.add("lrn")
    return [f"{outs[0]} = _lrn(F, {x[0]}, {_lit(a['size'])}, {_lit(float(a['alpha']))}, {_lit(float(a['beta']))}, "
            f"{_lit(float(a['k']))}, rank={t[0].rank})"]


# -- recurrent layers --


def _b_rnn(c: _Ctx, node: Node, a: dict, t: list[TensorType]) -> str:
    cls = {"rnn": "RNN", "lstm": "LSTM", "gru": "GRU"}[node.op]
    act = f", activation={_lit(a['nonlinearity'])}" if node.op == "rnn" else ""
    return (f"rnn.{cls}({_lit(a['hidden'])}, num_layers={_lit(a['layers'])}{act}, layout='NTC', "
            f"dropout={_lit(a['dropout'])}, bidirectional={_lit(a['bidirectional'])}, input_size={t[0].shape[2]}")


def _w_rnn(node: Node) -> dict[str, str]:
    a = node.attrs
    out: dict[str, str] = {}
    for layer in range(a["layers"]):
        for d in range(2 if a["bidirectional"] else 1):
            sfx = f"l{layer}" + ("_reverse" if d else "")
            g = f"{'r' if d else 'l'}{layer}"
            out[f"weight_ih_{sfx}"] = f"{g}_i2h_weight"
            out[f"weight_hh_{sfx}"] = f"{g}_h2h_weight"
            if a["bias"]:
                out[f"bias_ih_{sfx}"] = f"{g}_i2h_bias"
                out[f"bias_hh_{sfx}"] = f"{g}_h2h_bias"
    return out


def _rnn_biases(node: Node) -> list[str]:
    """The Gluon biases of a recurrent layer with bias=false: kept at zero, never trained."""
    a = node.attrs
    if a["bias"]:
        return []
    return [f"{'r' if d else 'l'}{layer}_{k}_bias" for layer in range(a["layers"])
            for d in range(2 if a["bidirectional"] else 1) for k in ("i2h", "h2h")]


def _l_rnn(c, node, a, x, t, outs):
    op = get_op(node.op)
    dirs = 2 if a["bidirectional"] else 1
    n_states = op.states
    lines: list[str] = []
    if len(x) > 1:
        states = list(x[1:])
    else:
        c.helpers.add("zero_state")
        z = c.tmp(f"{outs[0]}_state0")
        states = [z] * n_states
        lines.append(f"{z} = _zero_state(F, {x[0]}, {a['layers'] * dirs}, {a['hidden']})")
    y = outs[0]
    st = [outs[1 + i] if len(outs) > 1 + i else c.tmp(f"{y}_{'hc'[i]}") for i in range(n_states)]
    lines.append(f"{y}, [{', '.join(st)}] = {_child(c, node)}({x[0]}, [{', '.join(states)}])")
    if a["output"] == "last":
        c.helpers.add("last_state")
        lines.append(f"{y} = _last_state(F, {st[0]}, {a['layers'] * dirs}, bidirectional={_lit(a['bidirectional'])})")
    return lines


for _op in ("rnn", "lstm", "gru"):
    LOWERINGS.add(_op, _l_rnn, block=_b_rnn, weights=_w_rnn)


# -- attention --


def _mask_kind(mask: TensorType, lq: Any, lk: Any) -> str:
    """How a canonical mask reads: 'pair' [Lq, Lk], 'batch' [N, Lq, Lk] or 'keys' [N, Lk]."""
    if mask.rank == 3:
        return "batch"
    if tuple(mask.shape) == (lq, lk):
        return "pair"
    return "keys"


def _b_mha(c: _Ctx, node: Node, a: dict, t: list[TensorType]) -> str:
    c.helpers.add("attention")
    q = t[0]
    k = t[1] if len(t) > 1 else q
    kind = _mask_kind(t[3], q.shape[1], k.shape[1]) if len(t) > 3 else None
    return (f"MultiheadAttention({q.shape[2]}, {_lit(a['heads'])}, dropout={_lit(a['dropout'])}, bias={_lit(a['bias'])}, "
            f"causal={_lit(a['causal'])}, mask={literal(kind)}")


def _l_mha(c, node, a, x, t, outs):
    q = x[0]
    k = x[1] if len(x) > 1 else q
    v = x[2] if len(x) > 2 else k
    mask = f", {x[3]}" if len(x) > 3 else ""
    return [f"{outs[0]} = {_child(c, node)}({q}, {k}, {v}{mask})"]


def _w_mha(node: Node) -> dict[str, str]:
    names = ["in_proj_weight", "out_proj.weight"] + (["in_proj_bias", "out_proj.bias"] if node.attrs["bias"] else [])
    return {n: n.replace(".", "_") for n in names}


LOWERINGS.add("multihead_attention", _l_mha, block=_b_mha, weights=_w_mha)


def _b_encoder(c: _Ctx, node: Node, a: dict, t: list[TensorType]) -> str:
    c.helpers.add("attention")
    c.helpers.add("encoder")
    x = t[0]
    kind = _mask_kind(t[1], x.shape[1], x.shape[1]) if len(t) > 1 else None
    return (f"TransformerEncoderLayer({x.shape[2]}, {_lit(a['heads'])}, ff={_lit(a['ff'])}, dropout={_lit(a['dropout'])}, "
            f"activation={_lit(a['activation'])}, norm_first={_lit(a['norm_first'])}, eps={_lit(a['eps'])}, "
            f"mask={literal(kind)}")


def _l_encoder(c, node, a, x, t, outs):
    mask = f", {x[1]}" if len(x) > 1 else ""
    return [f"{outs[0]} = {_child(c, node)}({x[0]}{mask})"]


_ENCODER = {
    "self_attn.in_proj_weight": "self_attn.in_proj_weight", "self_attn.in_proj_bias": "self_attn.in_proj_bias",
    "self_attn.out_proj.weight": "self_attn.out_proj_weight", "self_attn.out_proj.bias": "self_attn.out_proj_bias",
    "linear1.weight": "linear1.weight", "linear1.bias": "linear1.bias",
    "linear2.weight": "linear2.weight", "linear2.bias": "linear2.bias",
    "norm1.weight": "norm1.gamma", "norm1.bias": "norm1.beta", "norm2.weight": "norm2.gamma", "norm2.bias": "norm2.beta",
}
LOWERINGS.add("transformer_encoder", _l_encoder, block=_b_encoder, weights=_ENCODER)


# -- pooling and resizing --


def _l_pool(kind: str) -> Lower:
    def lower(c, node, a, x, t, outs):
        n = int(node.op[-2])
        k = as_tuple(a["kernel"], n, "kernel")
        s = as_tuple(a["stride"] if a["stride"] is not None else a["kernel"], n, "stride")
        p = as_tuple(a["padding"], n, "padding")
        if any(v != 1 for v in as_tuple(a.get("dilation", 1), n, "dilation")):
            raise _refuse(node, "max pooling with dilation", hint="MXNet's Pooling has no dilation")
        conv = "full" if a["ceil_mode"] else "valid"
        extra = ", count_include_pad=True" if kind == "avg" else ""
        return [f"{outs[0]} = F.Pooling({x[0]}, kernel={literal(k)}, pool_type={literal(kind)}, stride={literal(s)}, "
                f"pad={literal(p)}, pooling_convention={literal(conv)}{extra})"]

    return lower


def _l_global(fn: str) -> Lower:
    def lower(c, node, a, x, t, outs):
        axes = tuple(range(2, t[0].rank))
        return [f"{outs[0]} = F.{fn}({x[0]}, axis={literal(axes)}, keepdims={_lit(a['keepdims'])})"]

    return lower


def _l_adaptive_avg(c, node, a, x, t, outs):
    n = int(node.op[-2])
    size = as_tuple(a["output_size"], n, "output_size")
    if n == 2:
        return [f"{outs[0]} = F.contrib.AdaptiveAvgPooling2D({x[0]}, output_size={literal(size)})"]
    return [f"{outs[0]} = F.squeeze(F.contrib.AdaptiveAvgPooling2D(F.expand_dims({x[0]}, axis=2), "
            f"output_size={literal((1, *size))}), axis=2)"]


def _l_adaptive_max(c, node, a, x, t, outs):
    n = int(node.op[-2])
    sizes = _static(t[0], list(range(2, 2 + n)))
    if sizes is None:
        raise _refuse(node, "adaptive max pooling over a symbolic spatial size")
    c.helpers.add("adaptive_max")
    out = as_tuple(a["output_size"], n, "output_size")
    return [f"{outs[0]} = _adaptive_max(F, {x[0]}, {literal(tuple(sizes))}, {literal(out)})"]


for _n in (1, 2, 3):
    LOWERINGS.add(f"maxpool{_n}d", _l_pool("max"))
    LOWERINGS.add(f"avgpool{_n}d", _l_pool("avg"))
for _n in (1, 2):
    LOWERINGS.add(f"global_avgpool{_n}d", _l_global("mean"))
    LOWERINGS.add(f"global_maxpool{_n}d", _l_global("max"))
    LOWERINGS.add(f"adaptive_avgpool{_n}d", _l_adaptive_avg)
    LOWERINGS.add(f"adaptive_maxpool{_n}d", _l_adaptive_max)


@LOWERINGS.register("upsample")
def _l_upsample(c, node, a, x, t, outs):
    n = t[0].rank - 2
    ins = list(t[0].shape[2:])
    out_t = c.graph.values[node.outputs[0]]
    outs_size = list(out_t.shape[2:])
    if a["mode"] == "nearest":
        if a["size"] is None:
            expr = x[0]
            for i, s in enumerate(as_tuple(a["scale"], n, "scale")):
                if s != 1:
                    expr = f"F.repeat({expr}, repeats={s}, axis={2 + i})"
            return [f"{outs[0]} = {expr}"]
        if not all(isinstance(d, int) for d in ins):
            raise _refuse(node, "nearest resizing to a size from a symbolic input size")
        c.helpers.add("nearest")
        expr = x[0]
        for i, (si, so) in enumerate(zip(ins, outs_size)):
            if si != so:
                expr = f"_nearest_resize(F, {expr}, {2 + i}, {si}, {so})"
        return [f"{outs[0]} = {expr}"]
    ac = literal(a["align_corners"])
    if all(isinstance(d, int) for d in outs_size):
        size = f"height={outs_size[0]}, width={outs_size[1]}" if n == 2 else f"height=1, width={outs_size[0]}"
    else:
        scale = as_tuple(a["scale"], n, "scale") if a["scale"] is not None else None
        if scale is None:
            raise _refuse(node, "bilinear resizing to a size from a symbolic input size")
        size = (f"scale_height={float(scale[0])!r}, scale_width={float(scale[1])!r}" if n == 2
                else f"scale_height=1.0, scale_width={float(scale[0])!r}")
    if n == 2:
        return [f"{outs[0]} = F.contrib.BilinearResize2D({x[0]}, {size}, align_corners={ac})"]
    return [f"{outs[0]} = F.squeeze(F.contrib.BilinearResize2D(F.expand_dims({x[0]}, axis=2), {size}, "
            f"align_corners={ac}), axis=2)"]


def supported_ops() -> set[str]:
    return LOWERINGS.ops()


# ---- helpers written into the generated file, as needed ------------------------------------------

HELPERS: dict[str, str] = {
    "pad": '''
def _pad(F, x, pad_width, mode, value):
    """F.pad for [N, C, L] too (Gluon pads 4-D and 5-D arrays): pad_width is (before, after) per axis."""
    if len(pad_width) == 6:
        y = F.pad(F.expand_dims(x, axis=2), mode=mode, pad_width=(0, 0, 0, 0, 0, 0) + tuple(pad_width[4:]),
                  constant_value=value)
        return F.squeeze(y, axis=2)
    return F.pad(x, mode=mode, pad_width=tuple(pad_width), constant_value=value)
''',
    "flatten_range": '''
def _flatten_range(F, x, start, merges):
    """Merges axes start .. start + merges into one (PyTorch's flatten(start, end))."""
    for _ in range(merges):
        x = F.reshape(x, shape=(0,) * start + (-3, -2))
    return x
''',
    "zero_state": '''
def _zero_state(F, x, layers, hidden):
    """Zeros of shape [layers, N, hidden] for a batch-first sequence x [N, T, C]."""
    batch = F.sum(F.zeros_like(x), axis=(1, 2)).reshape((1, -1, 1))
    return F.broadcast_to(batch, shape=(layers, 0, hidden))
''',
    "last_state": '''
def _last_state(F, h, layers, bidirectional):
    """The top layer's final hidden state [N, H] (both directions concatenated: [N, 2H])."""
    top = F.squeeze(F.slice_axis(h, axis=0, begin=layers - 1, end=layers), axis=0)
    if not bidirectional:
        return top
    fwd = F.squeeze(F.slice_axis(h, axis=0, begin=layers - 2, end=layers - 1), axis=0)
    return F.concat(fwd, top, dim=1)
''',
    "lrn": '''
def _lrn(F, x, size, alpha, beta, k, rank):
    """PyTorch's local_response_norm: x / (k + alpha / size * sum of x^2 over `size` channels,
    size // 2 before and (size - 1) // 2 after, zero-padded) ** beta."""
    sq = F.expand_dims(F.square(x), axis=1)
    before, after = size // 2, (size - 1) // 2
    parts = [sq]
    if before:
        parts.insert(0, F.zeros_like(F.slice_axis(sq, axis=2, begin=0, end=1)).repeat(before, axis=2))
    if after:
        parts.append(F.zeros_like(F.slice_axis(sq, axis=2, begin=0, end=1)).repeat(after, axis=2))
    padded = F.concat(*parts, dim=2) if len(parts) > 1 else sq
    kernel = (size,) + (1,) * (rank - 2)
    avg = F.Pooling(padded, kernel=kernel, pool_type="avg", stride=(1,) * (rank - 1), pad=(0,) * (rank - 1))
    return x / (F.squeeze(avg, axis=1) * alpha + k) ** beta
''',
    "adaptive_max": '''
def _adaptive_max(F, x, in_sizes, out_sizes):
    """Adaptive max pooling with PyTorch's bins: bin i of n over a length L is
    [floor(i * L / n), ceil((i + 1) * L / n))."""
    for axis, (length, n) in enumerate(zip(in_sizes, out_sizes), start=2):
        bins = []
        for i in range(n):
            begin, end = (i * length) // n, -(-((i + 1) * length) // n)
            bins.append(F.max(F.slice_axis(x, axis=axis, begin=begin, end=end), axis=axis, keepdims=True))
        x = F.concat(*bins, dim=axis) if n > 1 else bins[0]
    return x
''',
    "nearest": '''
def _nearest_resize(F, x, axis, size_in, size_out):
    """Nearest resizing along one axis as PyTorch computes it: source index floor(i * in / out)."""
    index = F.floor(F.arange(0, size_out) * (size_in / size_out))
    return F.take(x, index, axis=axis)
''',
    "groupnorm": '''
class GroupNorm(gluon.HybridBlock):
    """PyTorch's GroupNorm: statistics per group of channels, a scale and shift per channel."""

    def __init__(self, groups, channels, rank, eps=1e-5, affine=True, **kwargs):
        super().__init__(**kwargs)
        self._groups, self._rank, self._eps = groups, rank, eps
        with self.name_scope():
            self.weight = self.params.get("weight", shape=(channels,), init="ones",
                                          grad_req="write" if affine else "null")
            self.bias = self.params.get("bias", shape=(channels,), init="zeros",
                                        grad_req="write" if affine else "null")

    def hybrid_forward(self, F, x, weight, bias):
        g = F.reshape(x, shape=(0, self._groups, -1))
        centered = F.broadcast_sub(g, F.mean(g, axis=2, keepdims=True))
        var = F.mean(F.square(centered), axis=2, keepdims=True)
        y = F.reshape_like(F.broadcast_div(centered, F.sqrt(var + self._eps)), x)
        shape = (1, -1) + (1,) * (self._rank - 2)
        return F.broadcast_add(F.broadcast_mul(y, F.reshape(weight, shape=shape)), F.reshape(bias, shape=shape))
''',
    "parameter": '''
class LearnedTensor(gluon.HybridBlock):
    """A learned tensor stored [1, *shape], repeated over the batch of x (x gives only its size)."""

    def __init__(self, shape, **kwargs):
        super().__init__(**kwargs)
        self._rank = len(shape)
        with self.name_scope():
            self.weight = self.params.get("weight", shape=(1,) + tuple(shape), init="zeros")

    def hybrid_forward(self, F, x, weight):
        zeros = F.sum(F.zeros_like(F.cast(x, dtype="float32")), axis=0, exclude=True)
        return F.broadcast_add(F.reshape(zeros, shape=(-1,) + (1,) * self._rank), weight)
''',
    "attention": '''
def _attention_allowed(F, scores, mask, kind, causal):
    """Where a query may attend, broadcastable to scores [N, heads, Lq, Lk] (1: yes, 0: no).
    A canonical mask is true (non-zero) where attending is allowed: [Lq, Lk] ('pair'),
    [N, Lq, Lk] ('batch') or a key padding mask [N, Lk] ('keys')."""
    allowed = None
    if kind is not None:
        if kind == "pair":
            allowed = F.expand_dims(F.expand_dims(mask != 0, axis=0), axis=0)
        elif kind == "batch":
            allowed = F.expand_dims(mask != 0, axis=1)
        else:
            allowed = F.expand_dims(F.expand_dims(mask != 0, axis=1), axis=1)
    if causal:
        rows = F.contrib.arange_like(scores, axis=2).reshape((-1, 1))
        cols = F.contrib.arange_like(scores, axis=3).reshape((1, -1))
        lower = F.expand_dims(F.expand_dims(F.broadcast_lesser_equal(cols, rows), axis=0), axis=0)
        allowed = lower if allowed is None else F.broadcast_mul(allowed, lower)
    return allowed


class MultiheadAttention(gluon.HybridBlock):
    """PyTorch's MultiheadAttention (batch first, its parameters): scaled dot-product attention
    of `heads` heads over [N, L, E] queries, keys and values."""

    def __init__(self, embed, heads, dropout=0.0, bias=True, causal=False, mask=None, **kwargs):
        super().__init__(**kwargs)
        self._embed, self._heads, self._dropout, self._bias = embed, heads, dropout, bias
        self._causal, self._mask = causal, mask
        with self.name_scope():
            self.in_proj_weight = self.params.get("in_proj_weight", shape=(3 * embed, embed))
            self.out_proj_weight = self.params.get("out_proj_weight", shape=(embed, embed))
            if bias:
                self.in_proj_bias = self.params.get("in_proj_bias", shape=(3 * embed,), init="zeros")
                self.out_proj_bias = self.params.get("out_proj_bias", shape=(embed,), init="zeros")

    def _project(self, F, x, weight, bias, i):
        e = self._embed
        w = F.slice_axis(weight, axis=0, begin=i * e, end=(i + 1) * e)
        b = F.slice_axis(bias, axis=0, begin=i * e, end=(i + 1) * e) if bias is not None else None
        y = F.FullyConnected(x, w, b, num_hidden=e, no_bias=b is None, flatten=False)
        y = F.transpose(F.reshape(y, shape=(0, 0, self._heads, -1)), axes=(0, 2, 1, 3))
        return F.reshape(y, shape=(-3, 0, 0))  # [N * heads, L, E / heads]

    def hybrid_forward(self, F, query, key, value, *mask, in_proj_weight=None, out_proj_weight=None,
                       in_proj_bias=None, out_proj_bias=None):
        h = self._heads
        q = self._project(F, query, in_proj_weight, in_proj_bias, 0) * ((self._embed // h) ** -0.5)
        k = self._project(F, key, in_proj_weight, in_proj_bias, 1)
        v = self._project(F, value, in_proj_weight, in_proj_bias, 2)
        scores = F.reshape(F.batch_dot(q, k, transpose_b=True), shape=(-4, -1, h, 0, 0))
        allowed = _attention_allowed(F, scores, mask[0] if mask else None, self._mask, self._causal)
        if allowed is not None:
            scores = F.broadcast_add(scores, (1 - allowed) * -1e30)
        weights = F.softmax(scores, axis=-1)
        if self._dropout:
            weights = F.Dropout(weights, p=self._dropout)
        out = F.batch_dot(F.reshape(weights, shape=(-3, 0, 0)), v)
        out = F.reshape(F.transpose(F.reshape(out, shape=(-4, -1, h, 0, 0)), axes=(0, 2, 1, 3)), shape=(0, 0, -3))
        return F.FullyConnected(out, out_proj_weight, out_proj_bias, num_hidden=self._embed,
                                no_bias=out_proj_bias is None, flatten=False)
''',
    "encoder": '''
class TransformerEncoderLayer(gluon.HybridBlock):
    """PyTorch's TransformerEncoderLayer (batch first): self-attention and a feed-forward network,
    each with a residual connection and a layer norm (after it, or before with norm_first)."""

    def __init__(self, embed, heads, ff=2048, dropout=0.1, activation="relu", norm_first=False, eps=1e-5,
                 mask=None, **kwargs):
        super().__init__(**kwargs)
        self._dropout, self._activation, self._norm_first = dropout, activation, norm_first
        with self.name_scope():
            self.self_attn = MultiheadAttention(embed, heads, dropout=dropout, mask=mask, prefix="self_attn_")
            self.linear1 = nn.Dense(ff, flatten=False, in_units=embed, prefix="linear1_")
            self.linear2 = nn.Dense(embed, flatten=False, in_units=ff, prefix="linear2_")
            self.norm1 = nn.LayerNorm(epsilon=eps, in_channels=embed, prefix="norm1_")
            self.norm2 = nn.LayerNorm(epsilon=eps, in_channels=embed, prefix="norm2_")

    def _drop(self, F, x):
        return F.Dropout(x, p=self._dropout) if self._dropout else x

    def _attend(self, F, x, mask):
        return self._drop(F, self.self_attn(x, x, x, *mask))

    def _feed_forward(self, F, x):
        h = self.linear1(x)
        h = F.relu(h) if self._activation == "relu" else F.LeakyReLU(h, act_type="gelu")
        return self._drop(F, self.linear2(self._drop(F, h)))

    def hybrid_forward(self, F, x, *mask):
        if self._norm_first:
            x = x + self._attend(F, self.norm1(x), mask)
            return x + self._feed_forward(F, self.norm2(x))
        x = self.norm1(x + self._attend(F, x, mask))
        return self.norm2(x + self._feed_forward(F, x))
''',
}
_HELPER_ORDER = ("pad", "flatten_range", "zero_state", "last_state", "lrn", "adaptive_max", "nearest", "groupnorm",
                 "parameter", "attention", "encoder")

WEIGHTS_IO = '''

# ---- canonical weights: safetensors in PyTorch's layout, read and written with numpy alone ----

_DTYPES = {"F32": np.float32, "F64": np.float64, "F16": np.float16, "I64": np.int64, "I32": np.int32}


def read_safetensors(path):
    """{name: array} from a safetensors file: an 8-byte little-endian header length, a JSON
    header of dtypes, shapes and byte offsets, then the raw little-endian bytes."""
    with open(path, "rb") as f:
        size = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(size))
        data = f.read()
    arrays = {}
    for key, info in header.items():
        if key == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        dtype = np.dtype(_DTYPES[info["dtype"]]).newbyteorder("<")
        arrays[key] = np.frombuffer(data[begin:end], dtype=dtype).reshape(info["shape"]).astype(np.float32)
    return arrays


def write_safetensors(arrays, path):
    """Write {name: float32 array} as a safetensors file."""
    header, chunks, offset = {}, [], 0
    for key in sorted(arrays):
        raw = np.ascontiguousarray(arrays[key], dtype="<f4").tobytes()
        header[key] = {"dtype": "F32", "shape": list(np.shape(arrays[key])), "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(len(text).to_bytes(8, "little"))
        f.write(text)
        for raw in chunks:
            f.write(raw)


def _param(block, path):
    for part in path.split("."):
        block = getattr(block, part)
    return block


def load_canonical_weights(block, weights):
    """Put canonical weights (a safetensors path, or {name: array}) into an initialized block."""
    arrays = read_safetensors(weights) if isinstance(weights, str) else weights
    missing = [key for key in WEIGHTS if key not in arrays]
    if missing:
        raise KeyError("weights lack " + ", ".join(missing))
    for key, path in WEIGHTS.items():
        param = _param(block, path)
        value = np.asarray(arrays[key], dtype=np.float32)
        if tuple(param.shape) != value.shape:
            raise ValueError(f"{key} is {list(value.shape)}, the block needs {list(param.shape)}")
        param.set_data(mx.nd.array(value))


def canonical_weights(block):
    """The block's weights in the canonical layout, keyed by parameter path."""
    return {key: _param(block, path).data().asnumpy() for key, path in WEIGHTS.items()}
'''


# ---- the recipe as a gluon.Trainer loop ----------------------------------------------------------


def _training(recipe: Any | None, graph: Graph) -> str:
    """`make_trainer`, `make_loss` and `train` for the recipe (plain SGD and cross entropy
    without one), as source."""
    from ..ir import training as tr

    opt = getattr(recipe, "optimizer", None) or tr.SGD()
    loss = getattr(recipe, "loss", None) or tr.CrossEntropy()
    if isinstance(loss, dict):
        loss = next(iter(loss.values()))
    schedules = tuple(getattr(recipe, "schedule", ()) or ())
    epochs = int(getattr(recipe, "epochs", 1) or 1)
    wd = float(getattr(opt, "weight_decay", 0.0))
    lines = ["", "", "# ---- training: the recipe's optimizer, schedule and loss ----", ""]
    doc = "the recipe's" if recipe is not None else "no recipe: plain SGD's"
    lines.append(f"TRAINING = {literal({'optimizer': opt.type, 'loss': loss.type, 'epochs': epochs})}")
    lines += ["", "", "def make_trainer(block, steps_per_epoch=1):",
              f'    """A gluon.Trainer with {doc} optimizer and learning-rate schedule."""']
    sched = _schedule_source(schedules, float(opt.lr), epochs)
    lines += [f"    {s}" for s in sched]
    if opt.type == "sgd":
        name = "nag" if opt.nesterov else "sgd"
        args = {"learning_rate": opt.lr, "momentum": opt.momentum, "wd": wd}
    elif opt.type in ("adam", "adamw"):
        name = "adam"
        args = {"learning_rate": opt.lr, "beta1": opt.betas[0], "beta2": opt.betas[1], "epsilon": opt.eps,
                "wd": 0.0 if opt.type == "adamw" else wd}
    elif opt.type == "rmsprop":
        name = "rmsprop"
        args = {"learning_rate": opt.lr, "gamma1": opt.alpha, "epsilon": opt.eps, "centered": opt.centered, "wd": wd}
        if opt.momentum:
            args["gamma2"] = opt.momentum
    elif opt.type == "adadelta":  # mxnet's AdaDelta: rho, epsilon (its learning rate scales the step from 2.0 on)
        name = "adadelta"
        args = {"learning_rate": opt.lr, "rho": opt.rho, "epsilon": opt.eps, "wd": wd}
    else:
        name = "adagrad"
        args = {"learning_rate": opt.lr, "eps": opt.eps, "wd": wd}
    rendered = ", ".join(f"{literal(k)}: {literal(v)}" for k, v in args.items())
    lines.append(f"    options = {{{rendered}, 'lr_scheduler': schedule}}")
    lines.append(f"    return gluon.Trainer(block.collect_params(), {literal(name)}, options)")
    lines += ["", "", "def make_loss():", f'    """The recipe\'s loss ({doc_text(loss.type)}) as f(prediction, target)."""']
    lines += [f"    {s}" for s in _loss_source(loss)]
    decay = ""
    if opt.type == "adamw" and wd:
        decay = ("\n            for param in block.collect_params().values():  # AdamW: decoupled weight decay\n"
                 "                if param.grad_req != 'null':\n"
                 f"                    param.set_data(param.data() * (1 - trainer.learning_rate * {wd!r}))")
    lines.append(f'''

def train(block, batches, epochs={epochs}):
    """Train `block` on `batches` (a list of (inputs, target) pairs of numpy arrays, inputs a
    tuple in the model's input order) and return the mean loss of each epoch."""
    trainer = make_trainer(block, steps_per_epoch=len(batches))
    loss_fn = make_loss()
    history = []
    for _ in range(epochs):
        total = 0.0
        for inputs, target in batches:
            xs = [mx.nd.array(a) for a in inputs]
            with autograd.record():
                out = block(*xs)
                out = out[0] if isinstance(out, (list, tuple)) else out
                loss = loss_fn(out, mx.nd.array(target))
            loss.backward()
            trainer.step(1){decay}
            total += float(loss.asscalar())
        history.append(total / max(len(batches), 1))
    return history''')
    return "\n".join(lines)


def _schedule_source(schedules: tuple, lr: float, epochs: int) -> list[str]:
    """Lines that bind `schedule` (an mx.lr_scheduler or None), stepped per update."""
    main = [s for s in schedules if s.type != "warmup"]
    warm = next((s for s in schedules if s.type == "warmup"), None)
    warm_args = (f", warmup_steps={warm.epochs} * steps_per_epoch, warmup_begin_lr={lr * warm.start_factor!r}"
                 if warm is not None else "")
    s = main[0] if main else None
    if s is None or s.type == "constant":
        if warm is None:
            return ["schedule = None"]
        return [f"schedule = mx.lr_scheduler.FactorScheduler(step=10 ** 9, factor=1.0, base_lr={lr!r}{warm_args})"]
    if s.type == "step":
        return [f"schedule = mx.lr_scheduler.FactorScheduler(step={s.step_size} * steps_per_epoch, factor={s.gamma!r}, "
                f"base_lr={lr!r}{warm_args})"]
    if s.type == "multistep":
        return [f"schedule = mx.lr_scheduler.MultiFactorScheduler(step=[m * steps_per_epoch for m in {literal(list(s.milestones))}], "
                f"factor={s.gamma!r}, base_lr={lr!r}{warm_args})"]
    if s.type == "exponential":
        return [f"schedule = mx.lr_scheduler.FactorScheduler(step=steps_per_epoch, factor={s.gamma!r}, base_lr={lr!r}{warm_args})"]
    if s.type == "cosine":
        t_max = s.t_max or epochs
        return [f"schedule = mx.lr_scheduler.CosineScheduler(max_update={t_max} * steps_per_epoch, base_lr={lr!r}, "
                f"final_lr={s.eta_min!r}{warm_args})"]
    if s.type == "one_cycle":
        peak = s.max_lr
        return [f"# one_cycle: warm up to {peak!r} for {s.pct_start!r} of training, then anneal (cosine)",
                f"schedule = mx.lr_scheduler.CosineScheduler(max_update={epochs} * steps_per_epoch, base_lr={peak!r}, "
                f"final_lr={peak / s.div_factor / s.final_div_factor!r}, warmup_steps=int({s.pct_start!r} * {epochs} * steps_per_epoch), "
                f"warmup_begin_lr={peak / s.div_factor!r})"]
    # plateau: MXNet has no scheduler that watches a metric; the loop keeps the rate
    return [f"schedule = None  # {doc_text(s.type)}: the rate stays at {lr!r} (MXNet has no metric-driven scheduler)"]


def _loss_source(loss: Any) -> list[str]:
    t = loss.type
    if t == "cross_entropy":
        if loss.label_smoothing:
            eps = float(loss.label_smoothing)
            return ["def loss(pred, target):",
                    "    logp = mx.nd.log_softmax(pred, axis=-1)",
                    "    nll = -mx.nd.pick(logp, target, axis=-1)",
                    f"    return ({1 - eps!r} * nll - {eps!r} * logp.mean(axis=-1)).mean()",
                    "return loss"]
        return ["ce = gluon.loss.SoftmaxCrossEntropyLoss(axis=-1)", "return lambda pred, target: ce(pred, target).mean()"]
    if t == "nll":
        return ["return lambda pred, target: -mx.nd.pick(pred, target, axis=-1).mean()"]
    if t == "mse":
        return ["return lambda pred, target: ((pred - target) ** 2).mean()"]
    if t == "mae":
        return ["return lambda pred, target: mx.nd.abs(pred - target).mean()"]
    if t == "huber":
        return [f"huber = gluon.loss.HuberLoss(rho={float(loss.delta)!r})",
                f"return lambda pred, target: huber(pred, target).mean() / {float(loss.delta)!r}"]
    if t == "bce_with_logits":
        return ["bce = gluon.loss.SigmoidBinaryCrossEntropyLoss(from_sigmoid=False)",
                "return lambda pred, target: bce(pred, target).mean()"]
    if t == "bce":
        return ["bce = gluon.loss.SigmoidBinaryCrossEntropyLoss(from_sigmoid=True)",
                "return lambda pred, target: bce(pred, target).mean()"]
    if t == "kl_div":
        return ["kl = gluon.loss.KLDivLoss(from_logits=True)", "return lambda pred, target: kl(pred, target).mean()"]
    return ["def loss(pred, target):  # dice",
            "    p = mx.nd.sigmoid(pred)",
            "    inter = (p * target).sum()",
            f"    return 1 - (2 * inter + {float(loss.smooth)!r}) / (p.sum() + target.sum() + {float(loss.smooth)!r})",
            "return loss"]


# ---- source generation -----------------------------------------------------------------------


def class_name(graph: Graph) -> str:
    return ident(graph.name[0].upper() + graph.name[1:] if graph.name else "Model")


def generate(graph: Graph, recipe: Any | None = None, layout: str = "nchw") -> str:
    """Readable Gluon source for `graph` (imports no framework). The graph is re-validated first,
    and every op checked (E701 lists each op the backend lacks)."""
    if layout != "nchw":
        raise DlspecError(Diagnostic(code="E781", message=f"the MXNet backend writes NCHW models only; got layout `{layout}`",
                                     hint="leave --layout out (nchw, the canonical layout)"))
    graph = batch_first(validated(graph))  # time-major recurrent layers: permutes around
    BACKEND.check(graph)
    c = _Ctx(graph=graph, used=set())
    names: dict[str, str] = {}
    for gi in graph.inputs:
        names[gi.name] = ident(gi.name, c.used)
    for node in graph.nodes:
        for v in node.outputs:
            names[v] = ident(v.replace("#", "_out"), c.used)
    children_used: set[str] = set()
    init: list[str] = []
    weights: dict[str, str] = {}
    frozen: list[str] = []
    trainable = {p.path: p.trainable for p in graph.params() if not p.buffer}
    for node in graph.nodes:
        low = LOWERINGS[node.op]
        block = low.get("block")
        if block is None:
            continue
        attr = ident(node.name.replace(".", "_"), children_used)
        c.children[node.name] = attr
        ins = [graph.values[v] for v in node.inputs]
        ctor = block(c, node, node.attrs, ins)
        init.append(f"            self.{attr} = {ctor}, prefix={literal(attr + '_')})")
        if node.op in ("rnn", "lstm", "gru"):
            for b in _rnn_biases(node):
                init.append(f"            self.{attr}.{b}.grad_req = 'null'  # bias=false: kept at zero")
        table = low.get("weights")
        table = table(node) if callable(table) else table
        params = {p.name: p for p in graph.params() if p.node == node.name}
        for local, gluon_path in table.items():
            if local in params:
                weights[params[local].path] = f"{attr}.{gluon_path}"
        if any(not trainable.get(p.path, True) for p in params.values()):
            frozen.append(attr)
    for attr in frozen:
        init.append(f"            self.{attr}.collect_params().setattr('grad_req', 'null')  # frozen in the spec")
    body: list[str] = []
    for node in graph.nodes:
        x = [names[v] for v in node.inputs]
        t = [graph.values[v] for v in node.inputs]
        outs = [names[v] for v in node.outputs]
        low = LOWERINGS[node.op]
        body.extend(low.fn(c, node, node.attrs, x, t, outs))
    out_names = [names[o.value] for o in graph.outputs]
    ret = out_names[0] if len(out_names) == 1 else "(" + ", ".join(out_names) + ")"
    sig = ", ".join(names[i.name] for i in graph.inputs)
    cls = class_name(graph)
    ins_doc = "\n".join(f"        {doc_text(i.name)}: {doc_text(i.type)}" for i in graph.inputs)
    outs_doc = "\n".join(f"        {doc_text(o.name)}: {doc_text(graph.values[o.value])}" for o in graph.outputs)
    src = [
        f'"""{cls}: a Gluon (MXNet 1.9) model generated by dlspec from {doc_text(os.path.basename(graph.source) if graph.source else "a spec")}. '
        "Edit the spec, not this file.",
        "",
        "NCHW like the spec. Weights are canonical safetensors files (PyTorch's layout): read them with",
        "load_canonical_weights(block, path); train with train(block, batches).",
        '"""',
        "",
        "import json",
        "",
        "import mxnet as mx",
        "import numpy as np",
        "from mxnet import autograd, gluon",
        "from mxnet.gluon import nn, rnn",
    ]
    for h in _HELPER_ORDER:
        if h in c.helpers:
            src.append("\n" + HELPERS[h].rstrip("\n"))
    src += [
        "",
        "",
        f"class {cls}(gluon.HybridBlock):",
        f'    """Inputs:\n{ins_doc}\n    Outputs (in this order):\n{outs_doc}\n    """',
        "",
        "    def __init__(self, **kwargs):",
        "        super().__init__(**kwargs)",
        "        with self.name_scope():",
        *(init or ["            pass"]),
        "",
        f"    def hybrid_forward(self, F, {sig}):",
        *(f"        {line}" for line in body),
        f"        return {ret}",
        "",
        "",
        "#: the model's outputs, in the order hybrid_forward returns them",
        f"OUTPUTS = {literal(tuple(o.name for o in graph.outputs))}",
        "#: canonical parameter path -> the Gluon parameter (attribute path below the model block)",
        "WEIGHTS = {" + "".join(f"\n    {literal(k)}: {literal(v)}," for k, v in weights.items()) + ("\n}" if weights else "}"),
    ]
    code = "\n".join(src) + "\n" + WEIGHTS_IO + _training(recipe, graph) + f'''


def build_model():
    """The model block, initialized (load weights with load_canonical_weights) and hybridized."""
    block = {cls}()
    block.initialize()
    block.hybridize()
    return block


if __name__ == "__main__":
    print(build_model())
'''
    return code


# ---- running in the MXNet interpreter -----------------------------------------------------------


def mxnet_python() -> str:
    """The interpreter that has MXNet, from DLSPEC_MXNET_PYTHON; E780 when it is unset or missing."""
    value = os.environ.get(ENV_VAR, "").strip()
    hint = (f"set {ENV_VAR} to a Python that has mxnet 1.9.1 and numpy 1.23.5, e.g. `{SETUP_COMMAND}` "
            f"then `export {ENV_VAR}=~/.venvs/mxnet/bin/python` (docs/mxnet.md)")
    if not value:
        raise DlspecError(Diagnostic(code="E780", message=f"the MXNet backend needs an MXNet interpreter; {ENV_VAR} is not set",
                                     hint=hint))
    path = shutil.which(os.path.expanduser(value))
    if path is None:
        raise DlspecError(Diagnostic(code="E780", message=f"{ENV_VAR}={value} is not an executable Python", hint=hint))
    return path


class MXNetModel:
    """A model built by the MXNet backend: its generated source and its weights as Gluon holds
    them (canonical, read back from the MXNet interpreter after loading)."""

    def __init__(self, graph: Graph, source: str, weights: dict[str, np.ndarray]):
        self.graph = graph
        self.source = source
        self.weights = weights

    def __repr__(self) -> str:
        return f"MXNetModel({self.graph.name}, {len(self.weights)} weights)"


def _check_weights(graph: Graph, weights: dict[str, Any]) -> dict[str, np.ndarray]:
    expected = {p.path: tuple(int(d) for d in p.shape) for p in graph.params()}
    problems = [f"missing `{k}`" for k in expected if k not in weights]
    problems += [f"`{k}` is {list(np.shape(weights[k]))}, the model needs {list(s)}"
                 for k, s in expected.items() if k in weights and tuple(np.shape(weights[k])) != s]
    if problems:
        more = f" (and {len(problems) - 8} more)" if len(problems) > 8 else ""
        raise DlspecError(Diagnostic(code="E783", message=f"weights do not fit `{graph.name}`: " + "; ".join(problems[:8]) + more,
                                     hint="pass the canonical (PyTorch-layout) arrays of this model, keyed by parameter path"))
    return {k: np.asarray(weights[k], dtype=np.float32) for k in expected}


def run_job(source: str, job: dict[str, Any], weights: dict[str, np.ndarray] | None = None,
            inputs: dict[str, np.ndarray] | None = None, target: np.ndarray | None = None,
            timeout: float = 600) -> dict[str, Any]:
    """Run `source` in the MXNet interpreter for one job of mxnet_runner.py ({"action": "run" |
    "weights" | "export" | "train", ...}); returns {"outputs": {name: array}, "weights": {...},
    "files": [...], "history": [...]}
    as the job produced them. Raises E780 without an interpreter, E782 when MXNet fails."""
    from ..weights import load_numpy, save_numpy

    python = mxnet_python()
    with tempfile.TemporaryDirectory(prefix="dlspec-mxnet-") as tmp:
        d = Path(tmp)
        (d / "model.py").write_text(source, encoding="utf-8")
        spec: dict[str, Any] = {"model": str(d / "model.py"), "out": str(d / "out"), **job}
        (d / "out").mkdir()
        if weights is not None:
            save_numpy({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in weights.items()}, d / "in.safetensors")
            spec["weights"] = str(d / "in.safetensors")
        if target is not None:
            np.save(d / "target.npy", np.asarray(target), allow_pickle=False)
            spec["target"] = str(d / "target.npy")
        if inputs is not None:
            spec["inputs"] = {}
            for i, (name, arr) in enumerate(inputs.items()):
                p = d / f"input{i}.npy"
                np.save(p, np.asarray(arr), allow_pickle=False)
                spec["inputs"][name] = str(p)
        (d / "job.json").write_text(json.dumps(spec), encoding="utf-8")
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
        env.setdefault("MXNET_STORAGE_FALLBACK_LOG_VERBOSE", "0")
        env.setdefault("OMP_NUM_THREADS", "2")
        try:
            res = subprocess.run([python, "-I", str(RUNNER), str(d / "job.json")], capture_output=True, text=True,
                                 timeout=timeout, env=env)
        except subprocess.TimeoutExpired:
            raise DlspecError(Diagnostic(code="E782", message=f"MXNet did not finish `{job.get('action')}` in {timeout:g} s")) from None
        except OSError as exc:
            raise DlspecError(Diagnostic(code="E780", message=f"cannot start the MXNet interpreter {python}: {exc}",
                                         hint=f"point {ENV_VAR} at a working Python (docs/mxnet.md)")) from None
        if res.returncode != 0:
            lines = [ln for ln in (res.stderr or res.stdout).strip().splitlines() if ln.strip()]
            last = lines[-1] if lines else f"exit status {res.returncode}"
            if "No module named 'mxnet'" in last or "No module named 'numpy'" in last:
                raise DlspecError(Diagnostic(code="E780", message=f"{python} cannot import MXNet ({last})",
                                             hint=f"install it there: `{SETUP_COMMAND}` (docs/mxnet.md)"))
            raise DlspecError(Diagnostic(code="E782", message=f"MXNet failed to {job.get('action')} the generated model: {last}",
                                         hint="this is a bug in dlspec's MXNet backend if the spec checks; please report it"))
        result = json.loads((d / "out" / "result.json").read_text(encoding="utf-8"))
        out: dict[str, Any] = {"outputs": {}, "weights": {}, "files": result.get("files", []),
                               "history": result.get("history", [])}
        for name, fname in result.get("outputs", {}).items():
            out["outputs"][name] = np.load(d / "out" / fname, allow_pickle=False)
        if result.get("weights"):
            out["weights"] = load_numpy(d / "out" / result["weights"])
        if job.get("action") == "export":
            target = Path(job["export_dir"])
            out["files"] = [str(target / f) for f in result.get("files", [])]
        return out


def _recipe_for(graph: Graph, source: str) -> Any | None:
    """The supervised recipe that trains `graph` in the spec file `source`, if there is one."""
    path = Path(source)
    if path.suffix != ".dls" or not path.is_file():
        return None
    from ..program import compile_file

    try:
        program = compile_file(path)
    except DlspecError:
        return None
    for cfg in program.recipes:
        if getattr(cfg, "kind", None) == "supervised" and cfg.model.name == graph.name:
            return cfg
    return None


def _fresh(graph: Graph) -> dict[str, np.ndarray]:
    from ..init import init_weights

    return init_weights(graph)


class MXNetBackend(TableBackend):
    """The MXNet (Gluon) backend behind the registry's interface (`dlspec.backends.Backend`)."""

    name = TARGET
    framework = "mxnet"
    lowerings = LOWERINGS

    def generate(self, graph: Graph, *, layout: str = "nchw", source: str | None = None, recipe: Any | None = None) -> str:
        """With `source` (the spec file), the training loop follows the spec's recipe for the model."""
        if recipe is None and source:
            recipe = _recipe_for(graph, source)
        return generate(graph, recipe=recipe, layout=layout)

    def build(self, graph: Graph, weights=None, *, layout: str = "nchw", source: str | None = None) -> MXNetModel:
        src = generate(graph, layout=layout)
        arrays = _check_weights(graph, dict(weights) if weights is not None else _fresh(graph))
        got = run_job(src, {"action": "weights"}, weights=arrays)
        return MXNetModel(graph, src, got["weights"])

    def load_weights(self, live: MXNetModel, graph: Graph, weights) -> None:
        arrays = _check_weights(graph, dict(weights))
        live.weights = run_job(live.source, {"action": "weights"}, weights=arrays)["weights"]

    def read_weights(self, live: MXNetModel, graph: Graph) -> dict[str, Any]:
        return {k: np.array(v) for k, v in live.weights.items()}

    def run(self, graph: Graph, weights, inputs) -> dict[str, Any]:
        src = generate(graph)
        arrays = _check_weights(graph, dict(weights))
        xs = {i.name: np.asarray(inputs[i.name]) for i in graph.inputs}
        return run_job(src, {"action": "run"}, weights=arrays, inputs=xs)["outputs"]

    def export(self, graph: Graph, weights, directory: Path, name: str) -> list[Path]:
        """`<name>-symbol.json` and `<name>-0000.params` (HybridBlock.export) in `directory`."""
        src = generate(graph)
        arrays = _check_weights(graph, dict(weights))
        xs = {i.name: np.zeros([d if isinstance(d, int) else (2 if k == 0 else 8) for k, d in enumerate(i.type.shape)],
                               dtype=i.type.dtype) for i in graph.inputs}
        got = run_job(src, {"action": "export", "export_dir": str(directory), "name": name}, weights=arrays, inputs=xs)
        return [Path(f) for f in got["files"]]


BACKEND = MXNetBackend()
