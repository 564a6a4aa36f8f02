"""PyTorch backend: IR graph → readable `nn.Module` source, and the live module built from it.

Generating the source needs no torch; `build_module` executes the generated source and
instantiates it, so the in-process module and the written file are the same code. That source
is written from a re-validated graph only (`ir.check`: names, every attribute through its op,
every shape), every name and value goes through `pysource` (`ident`, `literal`, `doc_text`), and
`check_module_source` holds the text to an allowlist of constructs before it runs: a graph from
a hostile run folder is an error, never code. See docs/security.md.

Submodules nest in `nn.ModuleDict`s that mirror the layer paths, so `state_dict()` keys equal
the IR parameter paths (`layer1.0.conv_bn.conv.weight`) — the canonical weight layout.
"""

from __future__ import annotations

import keyword
import linecache
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import Diagnostic, DlspecError
from ..ir.check import layer_name_problem, validated
from ..ir.graph import Graph, Node
from ..ir.ops import get_op
from ..ir.ops.base import as_tuple
from ..ir.types import TensorType
from . import blockgen, pysource
from .lowering import Lowerings, TableBackend
from .pyformat import LINE_LENGTH, layout
from .pysource import check_module_source, doc_text, literal

TARGET = "torch"

#: module-level names of the generated file that no spec name may take
GENERATED_NAMES = frozenset({"_same_pad", "_causal_mask", "_pad_to", "_crop_to"})


def ident(name: str, used: set[str] | None = None) -> str:
    """A Python identifier for a spec name: no keyword, builtin or name the generated module uses."""
    return pysource.ident(name, used, reserved=GENERATED_NAMES)


def _lit(v: Any) -> str:
    """A literal for an attribute value; a 1-tuple is written as its element (`kernel_size=3`)."""
    if isinstance(v, tuple) and len(v) == 1:
        return literal(v[0])
    return literal(v)


# ---- module constructors (ops with parameters or state) ----------------------------------------


def _conv_padding(a: dict, spatial: int, x: TensorType) -> tuple[Any, bool]:
    """(padding argument for the nn module, whether forward pads explicitly for 'same')."""
    p = a["padding"]
    if p == "valid":
        return 0, False
    if p == "same":
        if all(s == 1 for s in as_tuple(a["stride"], spatial, "stride")):
            return "same", False
        return 0, True
    return p, False


def _m_conv(node: Node, a: dict, ins: list[TensorType], g: Graph) -> str:
    n = int(node.op[-2])
    pad, _ = _conv_padding(a, n, ins[0])
    return (
        f"nn.Conv{n}d({ins[0].shape[1]}, {_lit(a['out_channels'])}, kernel_size={_lit(a['kernel'])}, stride={_lit(a['stride'])}, "
        f"padding={_lit(pad)}, dilation={_lit(a['dilation'])}, groups={_lit(a['groups'])}, bias={_lit(a['bias'])})"
    )


def _m_convt(node: Node, a: dict, ins: list[TensorType], g: Graph) -> str:
    n = int(node.op[-2])
    return (
        f"nn.ConvTranspose{n}d({ins[0].shape[1]}, {_lit(a['out_channels'])}, kernel_size={_lit(a['kernel'])}, "
        f"stride={_lit(a['stride'])}, padding={_lit(a['padding'])}, output_padding={_lit(a['output_padding'])}, "
        f"groups={_lit(a['groups'])}, bias={_lit(a['bias'])}, dilation={_lit(a['dilation'])})"
    )


def _m_rnn(node: Node, a: dict, ins: list[TensorType], g: Graph) -> str:
    cls = node.op.upper()  # nn.RNN, nn.LSTM, nn.GRU
    extra = f", nonlinearity={_lit(a['nonlinearity'])}" if "nonlinearity" in a else ""
    return (
        f"nn.{cls}({ins[0].shape[2]}, {_lit(a['hidden'])}, num_layers={_lit(a['layers'])}, bias={_lit(a['bias'])}, "
        f"batch_first={_lit(not a.get('time_major', False))}, dropout={_lit(a['dropout'])}, bidirectional={_lit(a['bidirectional'])}{extra})"
    )


# ---- forward expressions -------------------------------------------------------------------------

Emit = Callable[["_Ctx", Node, dict, list[str], list[TensorType]], str]


class _Ctx:
    def __init__(self) -> None:
        self.helpers: set[str] = set()
        self.lines: list[str] = []


def _spatial_dims(rank: int) -> str:
    return repr(tuple(range(2, rank)))


def _e_conv(c: _Ctx, node: Node, a: dict, x: list[str], t: list[TensorType], mod: str) -> str:
    n = int(node.op[-2])
    _, explicit = _conv_padding(a, n, t[0])
    if explicit:
        c.helpers.add("same_pad")
        k = as_tuple(a["kernel"], n, "kernel")
        s = as_tuple(a["stride"], n, "stride")
        d = as_tuple(a["dilation"], n, "dilation")
        return f"{mod}(_same_pad({x[0]}, {literal(k)}, {literal(s)}, {literal(d)}))"
    return f"{mod}({x[0]})"


def _e_rnn(c: _Ctx, node: Node, a: dict, x: list[str], t: list[TensorType], mod: str) -> str:
    state = ""
    if len(x) == 2:
        state = f", {x[1]}"
    elif len(x) == 3:
        state = f", ({x[1]}, {x[2]})"
    return f"{mod}({x[0]}{state})"


def _mask_kwarg(mask: str, mtype: TensorType, query: TensorType, key_len: Any, heads: int) -> tuple[str, str]:
    """(which keyword, expression) for a canonical mask. Canonical masks say `true` (or non-zero)
    = may attend; torch's boolean masks say True = may NOT. A 2-D mask that is not [Lq, Lk] is a
    key padding mask [N, Lk]; a 3-D mask [N, Lq, Lk] is repeated for each head, as torch expects."""
    blocked = f"~{mask}" if mtype.dtype == "bool" else f"({mask} == 0)"
    if mtype.rank == 2 and tuple(mtype.shape) != (query.shape[1], key_len):
        return "padding", blocked
    if mtype.rank == 3:
        return "attn", f"{blocked}.repeat_interleave({heads}, dim=0)"
    return "attn", blocked


def _e_mha(c: _Ctx, node: Node, a: dict, x: list[str], t: list[TensorType], mod: str) -> str:
    q = x[0]
    k = x[1] if len(x) > 1 else q
    v = x[2] if len(x) > 2 else k
    kwargs: dict[str, str] = {}
    if len(x) > 3:
        kind, expr = _mask_kwarg(x[3], t[3], t[0], (t[1] if len(t) > 1 else t[0]).shape[1], a["heads"])
        kwargs["key_padding_mask" if kind == "padding" else "attn_mask"] = expr
    if a["causal"]:
        c.helpers.add("causal")
        causal = f"_causal_mask({q}.shape[1], {k}.shape[1], {q}.device)"
        kwargs["attn_mask"] = f"({kwargs['attn_mask']}) | {causal}" if "attn_mask" in kwargs else causal
    extra = "".join(f", {kw}={e}" for kw, e in kwargs.items())
    return f"{mod}({q}, {k}, {v}, need_weights=False{extra})[0]"


def _e_encoder(c: _Ctx, node: Node, a: dict, x: list[str], t: list[TensorType], mod: str) -> str:
    extra = ""
    if len(x) > 1:
        kind, expr = _mask_kwarg(x[1], t[1], t[0], t[0].shape[1], a["heads"])
        extra = f", {'src_key_padding_mask' if kind == 'padding' else 'src_mask'}={expr}"
    return f"{mod}({x[0]}{extra})"


def _e_pool(kind: str) -> Emit:
    def emit(c: _Ctx, node: Node, a: dict, x: list[str], t: list[TensorType]) -> str:
        n = int(node.op[-2])
        stride = a["stride"] if a["stride"] is not None else a["kernel"]
        extra = ", count_include_pad=True" if kind == "avg" else ""
        if a.get("dilation", 1) not in (1, (1,) * n):
            extra += f", dilation={_lit(a['dilation'])}"
        return (f"F.{kind}_pool{n}d({x[0]}, {_lit(a['kernel'])}, stride={_lit(stride)}, padding={_lit(a['padding'])}, "
                f"ceil_mode={_lit(a['ceil_mode'])}{extra})")

    return emit


def _e_upsample(c: _Ctx, node: Node, a: dict, x: list[str], t: list[TensorType]) -> str:
    size = f"size={_lit(a['size'])}" if a["size"] is not None else f"scale_factor={_lit(a['scale'])}"
    ac = "" if a["mode"] == "nearest" else f", align_corners={_lit(a['align_corners'])}"
    return f"F.interpolate({x[0]}, {size}, mode={_lit(a['mode'])}{ac})"


def _e_binary(sym: str) -> Emit:
    def emit(c: _Ctx, node: Node, a: dict, x: list[str], t: list[TensorType]) -> str:
        rhs = x[1] if len(x) > 1 else repr(a["scalar"])
        return f"{x[0]} {sym} {rhs}"

    return emit


def _e_split(c: _Ctx, node: Node, a: dict, x: list[str], t: list[TensorType]) -> str:
    parts = a["parts"]
    if isinstance(parts, int):
        return f"torch.chunk({x[0]}, {literal(parts)}, dim={_lit(a['axis'])})"
    return f"torch.split({x[0]}, {literal(list(parts))}, dim={_lit(a['axis'])})"


def _e_pad(c: _Ctx, node: Node, a: dict, x: list[str], t: list[TensorType]) -> str:
    op = get_op("pad")
    pairs = op.pairs(op.attrs_from_dict(a), t[0].rank)
    torch_order: list[int] = []
    for before, after in reversed(pairs):
        torch_order += [before, after]
    while torch_order[-2:] == [0, 0] and len(torch_order) > 2:
        torch_order = torch_order[:-2]
    value = f", value={_lit(a['value'])}" if a["mode"] == "constant" else ""
    return f"F.pad({x[0]}, {literal(torch_order)}, mode={_lit(a['mode'])}{value})"


def _e_reshape(c: _Ctx, node: Node, a: dict, x: list[str], t: list[TensorType]) -> str:
    return f"{x[0]}.reshape({x[0]}.shape[0], {', '.join(str(d) for d in a['shape'])})"


def _e_global(fn: str) -> Emit:
    def emit(c: _Ctx, node: Node, a: dict, x: list[str], t: list[TensorType]) -> str:
        return f"{x[0]}.{fn}(dim={_spatial_dims(t[0].rank)}, keepdim={_lit(a['keepdims'])})"

    return emit


def _call(fn: str, *args: str) -> Emit:
    """`fn(x, args…)`, each arg an attribute written as a literal (`dim=axis` names the keyword)."""

    def emit(c: _Ctx, node: Node, a: dict, x: list[str], t: list[TensorType]) -> str:
        parts = [x[0]]
        for arg in args:
            kw, _, attr = arg.rpartition("=")
            parts.append(f"{kw}={_lit(a[attr])}" if kw else _lit(a[attr]))
        return f"{fn}({', '.join(parts)})"

    return emit


def _module_call(c: _Ctx, node: Node, a: dict, x: list[str], t: list[TensorType], mod: str) -> str:
    return f"{mod}({x[0]})"


def _assign_rnn(node: Node, outs: list[str], expr: str, used: set[str]) -> list[str]:
    """nn.RNN/GRU return (y, h_n), nn.LSTM (y, (h_n, c_n)); output=last takes h_n's top layer."""
    a = node.attrs
    lines = []
    dirs = 2 if a["bidirectional"] else 1
    y, rest = outs[0], outs[1:]
    h = rest[0] if rest else ident(f"{y}_h", used) if a["output"] == "last" else "_"
    if get_op(node.op).states == 2:
        c = rest[1] if len(rest) > 1 else "_"
        lines.append(f"        {y}, ({h}, {c}) = {expr}")
    else:
        lines.append(f"        {y}, {h} = {expr}")
    if a["output"] == "last":
        last = f"torch.cat([{h}[-2], {h}[-1]], dim=1)" if dirs == 2 else f"{h}[-1]"
        lines.append(f"        {y} = {last}")
    return lines


#: op → its lowering: `fn` writes the forward expression; an op with parameters or state also
#: has `module`, the constructor of its nn module (then `fn` gets the module reference last).
#: `calls` and `methods` are the dotted calls and tensor methods its source may make: the
#: allowlist that `check_module_source` holds the generated source to is their union.
LOWERINGS = Lowerings(TARGET)
_add = LOWERINGS.add

# linear
_add("dense", _module_call, calls=("nn.Linear",),
     module=lambda n, a, i, g: f"nn.Linear({i[0].shape[-1]}, {_lit(a['units'])}, bias={_lit(a['bias'])})")
_add("embedding", _module_call, calls=("nn.Embedding",),
     module=lambda n, a, i, g: f"nn.Embedding({_lit(a['num'])}, {_lit(a['dim'])}, padding_idx={_lit(a['padding_idx'])})")
# convolution
for _n in (1, 2, 3):
    _add(f"conv{_n}d", _e_conv, module=_m_conv, calls=(f"nn.Conv{_n}d",))
for _n in (1, 2):
    _add(f"conv_transpose{_n}d", _module_call, module=_m_convt, calls=(f"nn.ConvTranspose{_n}d",))
# normalization and regularization
for _n in (1, 2, 3):
    _add(f"batchnorm{_n}d", _module_call, calls=(f"nn.BatchNorm{_n}d",), module=lambda n, a, i, g: (
        f"nn.BatchNorm{n.op[-2]}d({i[0].shape[1]}, eps={_lit(a['eps'])}, momentum={_lit(a['momentum'])}, affine={_lit(a['affine'])})"))
_add("layernorm", _module_call, calls=("nn.LayerNorm",), module=lambda n, a, i, g: (
    f"nn.LayerNorm({i[0].shape[-1]}, eps={_lit(a['eps'])}, elementwise_affine={_lit(a['affine'])})"))
_add("groupnorm", _module_call, calls=("nn.GroupNorm",), module=lambda n, a, i, g: (
    f"nn.GroupNorm({_lit(a['groups'])}, {i[0].shape[1]}, eps={_lit(a['eps'])}, affine={_lit(a['affine'])})"))
_add("instance_norm", _module_call, calls=tuple(f"nn.InstanceNorm{_n}d" for _n in (1, 2, 3)), module=lambda n, a, i, g: (
    f"nn.InstanceNorm{i[0].rank - 2}d({i[0].shape[1]}, eps={_lit(a['eps'])}, affine={_lit(a['affine'])})"))
_add("prelu", _module_call, calls=("nn.PReLU",), module=lambda n, a, i, g: (
    f"nn.PReLU({i[0].shape[1] if a['per_channel'] else 1})"))
_add("lrn", _call("F.local_response_norm", "size", "alpha=alpha", "beta=beta", "k=k"), calls=("F.local_response_norm",))
_add("dropout", lambda c, n, a, x, t: f"F.dropout({x[0]}, p={_lit(a['p'])}, training=self.training)", calls=("F.dropout",))
# recurrent and attention
for _op in ("rnn", "lstm", "gru"):
    _add(_op, _e_rnn, module=_m_rnn, assign=_assign_rnn, calls=(f"nn.{_op.upper()}", "torch.cat"))
_add("multihead_attention", _e_mha, calls=("nn.MultiheadAttention",), methods=("repeat_interleave",), module=lambda n, a, i, g: (
    f"nn.MultiheadAttention({i[0].shape[2]}, {_lit(a['heads'])}, dropout={_lit(a['dropout'])}, bias={_lit(a['bias'])}, batch_first=True)"))
_add("transformer_encoder", _e_encoder, calls=("nn.TransformerEncoderLayer",), methods=("repeat_interleave",), module=lambda n, a, i, g: (
    f"nn.TransformerEncoderLayer({i[0].shape[2]}, {_lit(a['heads'])}, dim_feedforward={_lit(a['ff'])}, dropout={_lit(a['dropout'])}, "
    f"activation={_lit(a['activation'])}, layer_norm_eps={_lit(a['eps'])}, batch_first=True, norm_first={_lit(a['norm_first'])})"))
# pooling
for _n in (1, 2, 3):
    _add(f"maxpool{_n}d", _e_pool("max"), calls=(f"F.max_pool{_n}d",))
    _add(f"avgpool{_n}d", _e_pool("avg"), calls=(f"F.avg_pool{_n}d",))
for _n in (1, 2):
    _add(f"global_avgpool{_n}d", _e_global("mean"), methods=("mean",))
    _add(f"global_maxpool{_n}d", _e_global("amax"), methods=("amax",))
    for _kind in ("avg", "max"):
        _add(f"adaptive_{_kind}pool{_n}d", _call(f"F.adaptive_{_kind}_pool{_n}d", "output_size"),
             calls=(f"F.adaptive_{_kind}_pool{_n}d",))
_add("upsample", _e_upsample, calls=("F.interpolate",))
# tensor
_add("identity", lambda c, n, a, x, t: x[0])
_add("flatten", _call("torch.flatten", "start", "end"), calls=("torch.flatten",))
_add("reshape", _e_reshape, methods=("reshape",))
_add("permute", lambda c, n, a, x, t: f"{x[0]}.permute{literal(tuple(a['dims']))}", methods=("permute",))
_add("squeeze", lambda c, n, a, x, t: f"{x[0]}.squeeze({_lit(a['axis'])})", methods=("squeeze",))
_add("unsqueeze", lambda c, n, a, x, t: f"{x[0]}.unsqueeze({_lit(a['axis'])})", methods=("unsqueeze",))
_add("concat", lambda c, n, a, x, t: f"torch.cat([{', '.join(x)}], dim={_lit(a['axis'])})", calls=("torch.cat",))
_add("split", _e_split, calls=("torch.chunk", "torch.split"))
_add("pad", _e_pad, calls=("F.pad",))


def _e_to_size(c: _Ctx, node: Node, a: dict, x: list[str], t: list[TensorType]) -> str:
    c.helpers.add(node.op)
    return f"_{node.op}({x[0]}, {x[1]})"


_add("pad_to", _e_to_size, calls=("F.pad", "torch._check"), methods=("dim",))
_add("crop_to", _e_to_size, calls=("F.pad", "torch._check"), methods=("dim",))
# arithmetic
_add("add", _e_binary("+"), methods=("add_",), inplace=lambda x: f"{x[0]}.add_({x[1]})" if len(x) == 2 else None)
_add("sub", _e_binary("-"))
_add("mul", _e_binary("*"))
_add("div", _e_binary("/"))
_add("matmul", lambda c, n, a, x, t: f"torch.matmul({x[0]}, {x[1]})", calls=("torch.matmul",))
# activations
_add("relu", _call("torch.relu"), calls=("torch.relu", "torch.relu_"), inplace=lambda x: f"torch.relu_({x[0]})")
_add("relu6", _call("F.relu6"), calls=("F.relu6",))
_add("leaky_relu", _call("F.leaky_relu", "slope"), calls=("F.leaky_relu",))
_add("elu", _call("F.elu", "alpha"), calls=("F.elu",))
_add("selu", _call("F.selu"), calls=("F.selu",))
_add("gelu", _call("F.gelu", "approximate=approximate"), calls=("F.gelu",))
_add("silu", _call("F.silu"), calls=("F.silu",))
_add("sigmoid", _call("torch.sigmoid"), calls=("torch.sigmoid",))
for _fn in ("softplus", "softsign", "hardsigmoid", "hardswish", "mish"):
    _add(_fn, _call(f"F.{_fn}"), calls=(f"F.{_fn}",))
# element-wise math
for _fn in ("exp", "log", "sqrt", "reciprocal"):
    _add(_fn, _call(f"torch.{_fn}"), calls=(f"torch.{_fn}",))
_add("absolute", _call("torch.abs"), calls=("torch.abs",))
for _fn in ("logical_not", "logical_and", "logical_or"):
    _add(_fn, lambda c, n, a, x, t, fn=_fn: f"torch.{fn}({', '.join(x)})", calls=(f"torch.{_fn}",))
_add("pow", _e_binary("**"))
_add("argmax", lambda c, n, a, x, t: f"torch.argmax({x[0]}, dim={_lit(a['axis'])}, keepdim={_lit(a['keepdims'])})",
     calls=("torch.argmax",))
_add("cast", lambda c, n, a, x, t: f"{x[0]}.to(torch.{a['dtype']})", methods=("to",))
_add("topk", lambda c, n, a, x, t: f"torch.topk({x[0]}, {_lit(a['k'])}, dim={_lit(a['axis'])}, "
     f"largest={_lit(a['largest'])})", calls=("torch.topk",))
_add("tile", lambda c, n, a, x, t: f"{x[0]}.repeat({literal(tuple(a['reps']))})", methods=("repeat",))
_add("select", lambda c, n, a, x, t: f"{x[0]}.select({_lit(a['axis'])}, {_lit(a['index'])})", methods=("select",))


def _m_parameter(node: Node, a: dict, ins: list[TensorType], g: Graph) -> str:
    shape = ", ".join(str(int(d)) for d in (1, *a["shape"]))
    value = f"torch.zeros({shape})" if a["init"] == "zeros" else f"torch.randn({shape}) * {literal(a['std'])}"
    return f'nn.ParameterDict({{"weight": nn.Parameter({value})}})'


_add("parameter", lambda c, n, a, x, t, mod: f'{mod}["weight"].expand({x[0]}.shape[0]{", -1" * len(a["shape"])})',
     module=_m_parameter, calls=("nn.ParameterDict", "nn.Parameter", "torch.zeros", "torch.randn"), methods=("expand",))


def _e_reduce(fn: str) -> Emit:
    def emit(c: _Ctx, node: Node, a: dict, x: list[str], t: list[TensorType]) -> str:
        axes = tuple(get_op(node.op).reduced(get_op(node.op).attrs_from_dict(a), t[0].rank))
        return f"torch.{fn}({x[0]}, dim={literal(axes)}, keepdim={_lit(a['keepdims'])})"

    return emit


_add("reduce_sum", _e_reduce("sum"), calls=("torch.sum",))
_add("reduce_mean", _e_reduce("mean"), calls=("torch.mean",))
_add("reduce_max", _e_reduce("amax"), calls=("torch.amax",))
_add("maximum", lambda c, n, a, x, t: f"torch.maximum({x[0]}, {x[1]})" if len(x) > 1
     else f"torch.clamp({x[0]}, min={a['scalar']!r})", calls=("torch.maximum", "torch.clamp"))
_add("minimum", lambda c, n, a, x, t: f"torch.minimum({x[0]}, {x[1]})" if len(x) > 1
     else f"torch.clamp({x[0]}, max={a['scalar']!r})", calls=("torch.minimum", "torch.clamp"))
for _op, _sym in (("equal", "=="), ("less", "<"), ("less_equal", "<="), ("greater", ">"), ("greater_equal", ">=")):
    _add(_op, lambda c, n, a, x, t, sym=_sym: f"({x[0]} {sym} {x[1] if len(x) > 1 else _lit(a['scalar'])})")


def _e_where(c: _Ctx, node: Node, a: dict, x: list[str], t: list[TensorType]) -> str:
    rest = iter(x[1:])
    vals = [_lit(a[k]) if a[k] is not None else next(rest) for k in ("a_value", "b_value")]
    return f"torch.where({x[0]}, {vals[0]}, {vals[1]})"


_add("where", _e_where, calls=("torch.where",))
_add("tanh", _call("torch.tanh"), calls=("torch.tanh",))
_add("hardtanh", _call("F.hardtanh", "min", "max"), calls=("F.hardtanh",))
_add("softmax", _call("torch.softmax", "dim=axis"), calls=("torch.softmax",))
_add("log_softmax", _call("torch.log_softmax", "dim=axis"), calls=("torch.log_softmax",))

HELPERS = {
    "same_pad": '''
def _same_pad(x: torch.Tensor, kernel: tuple, stride: tuple, dilation: tuple) -> torch.Tensor:
    """Pads like TensorFlow's padding="same": output size ceil(input / stride), extra on the end."""
    pads: list[int] = []
    for i in range(len(kernel) - 1, -1, -1):
        size = x.shape[2 + i]
        out = -(-size // stride[i])
        total = max((out - 1) * stride[i] + dilation[i] * (kernel[i] - 1) + 1 - size, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads)
''',
    "pad_to": '''
def _pad_to(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Zeros around the spatial axes of x up to the sizes of like: d // 2 before, the rest after."""
    pads: list[int] = []
    for axis in range(x.dim() - 1, 1, -1):
        d = like.shape[axis] - x.shape[axis]
        torch._check(d >= 0)  # pad_to cannot shrink an axis
        pads += [d // 2, d - d // 2]
    return F.pad(x, pads)
''',
    "crop_to": '''
def _crop_to(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """The centre of x's spatial axes at the sizes of like: d // 2 dropped before, the rest after
    (F.pad with negative pads: under torch.export a difference of 0 adds no guard, as narrow would)."""
    pads: list[int] = []
    for axis in range(x.dim() - 1, 1, -1):
        d = x.shape[axis] - like.shape[axis]
        torch._check(d >= 0)  # crop_to cannot grow an axis
        pads += [-(d // 2), d // 2 - d]
    return F.pad(x, pads)
''',
    "causal": '''
def _causal_mask(lq: int, lk: int, device: torch.device) -> torch.Tensor:
    """True above the diagonal: a position may not attend to later ones."""
    return torch.ones(lq, lk, dtype=torch.bool, device=device).triu(1)
''',
}


#: the calls and tensor methods of the module frame and of the helpers above
FRAME_CALLS = frozenset({"nn.ModuleDict", "F.pad", "torch.ones", "torch.device"})
FRAME_METHODS = frozenset({"triu"})
#: every dotted call the generated source makes, and every tensor method it calls: the
#: allowlist `check_module_source` holds the source to before it runs
CALLS = FRAME_CALLS | LOWERINGS.collect("calls")
METHODS = FRAME_METHODS | LOWERINGS.collect("methods")


# ---- source generation -----------------------------------------------------------------------


def _pool_module(kind: str) -> Callable[[Node, dict, bool], str]:
    def module(node: Node, a: dict, inplace: bool) -> str:
        n = int(node.op[-2])
        stride = a["stride"] if a["stride"] is not None else a["kernel"]
        extra = ", count_include_pad=True" if kind == "Avg" else ""
        if a.get("dilation", 1) not in (1, (1,) * n):
            extra += f", dilation={_lit(a['dilation'])}"
        return (f"nn.{kind}Pool{n}d({_lit(a['kernel'])}, stride={_lit(stride)}, padding={_lit(a['padding'])}, "
                f"ceil_mode={_lit(a['ceil_mode'])}{extra})")

    return module


def _upsample_module(node: Node, a: dict, inplace: bool) -> str:
    size = f"size={_lit(a['size'])}" if a["size"] is not None else f"scale_factor={_lit(a['scale'])}"
    ac = "" if a["mode"] == "nearest" else f", align_corners={_lit(a['align_corners'])}"
    return f"nn.Upsample({size}, mode={_lit(a['mode'])}{ac})"


#: ops that PyTorch users write as modules, so forward hooks and torchinfo see them: op →
#: (node, attributes, whether it may overwrite its input) → the module's constructor. Each is
#: the module form of the op's functional lowering above, computing the same.
MODULE_FORMS: dict[str, Callable[[Node, dict, bool], str]] = {
    "relu": lambda n, a, ip: "nn.ReLU(inplace=True)" if ip else "nn.ReLU()",
    "relu6": lambda n, a, ip: "nn.ReLU6()",
    "leaky_relu": lambda n, a, ip: f"nn.LeakyReLU({_lit(a['slope'])})",
    "elu": lambda n, a, ip: f"nn.ELU({_lit(a['alpha'])})",
    "selu": lambda n, a, ip: "nn.SELU()",
    "gelu": lambda n, a, ip: f"nn.GELU(approximate={_lit(a['approximate'])})",
    "silu": lambda n, a, ip: "nn.SiLU()",
    "sigmoid": lambda n, a, ip: "nn.Sigmoid()",
    "tanh": lambda n, a, ip: "nn.Tanh()",
    "hardtanh": lambda n, a, ip: f"nn.Hardtanh({_lit(a['min'])}, {_lit(a['max'])})",
    "softplus": lambda n, a, ip: "nn.Softplus()",
    "softsign": lambda n, a, ip: "nn.Softsign()",
    "hardsigmoid": lambda n, a, ip: "nn.Hardsigmoid()",
    "hardswish": lambda n, a, ip: "nn.Hardswish()",
    "mish": lambda n, a, ip: "nn.Mish()",
    "softmax": lambda n, a, ip: f"nn.Softmax(dim={_lit(a['axis'])})",
    "log_softmax": lambda n, a, ip: f"nn.LogSoftmax(dim={_lit(a['axis'])})",
    "dropout": lambda n, a, ip: f"nn.Dropout({_lit(a['p'])})",
    "flatten": lambda n, a, ip: f"nn.Flatten({_lit(a['start'])}, {_lit(a['end'])})",
    "lrn": lambda n, a, ip: f"nn.LocalResponseNorm({_lit(a['size'])}, alpha={_lit(a['alpha'])}, beta={_lit(a['beta'])}, "
                            f"k={_lit(a['k'])})",
    "upsample": _upsample_module,
}
for _n in (1, 2, 3):
    MODULE_FORMS[f"maxpool{_n}d"] = _pool_module("Max")
    MODULE_FORMS[f"avgpool{_n}d"] = _pool_module("Avg")
for _n in (1, 2):
    for _kind in ("Avg", "Max"):
        MODULE_FORMS[f"adaptive_{_kind.lower()}pool{_n}d"] = (
            lambda n, a, ip, k=_kind: f"nn.Adaptive{k}Pool{n.op[-2]}d({_lit(a['output_size'])})")
MODULE_FORM_CALLS = frozenset({
    "nn.ReLU", "nn.ReLU6", "nn.LeakyReLU", "nn.ELU", "nn.SELU", "nn.GELU", "nn.SiLU", "nn.Sigmoid", "nn.Tanh",
    "nn.Hardtanh", "nn.Softplus", "nn.Softsign", "nn.Hardsigmoid", "nn.Hardswish", "nn.Mish", "nn.Softmax",
    "nn.LogSoftmax", "nn.Dropout", "nn.Flatten", "nn.LocalResponseNorm", "nn.Upsample",
    *(f"nn.{k}Pool{n}d" for k in ("Max", "Avg") for n in (1, 2, 3)),
    *(f"nn.Adaptive{k}Pool{n}d" for k in ("Max", "Avg") for n in (1, 2)),
})
CALLS = CALLS | MODULE_FORM_CALLS


def supported_ops() -> set[str]:
    return LOWERINGS.ops()


def _has_module(op: str) -> bool:
    low = LOWERINGS.get(op)
    return low is not None and low.get("module") is not None


def _attr_name(name: str) -> str | None:
    """`name` as an attribute of a generated module, or None where it cannot be one."""
    ok = name.isidentifier() and not keyword.iskeyword(name) and layer_name_problem(name) is None
    return name if ok else None


def _module_ref(path: str) -> str:
    parts = path.split(".")
    top = _attr_name(parts[0])
    ref = f"self.{top}" if top else f"self._modules[{literal(parts[0])}]"
    return ref + "".join(f"[{literal(p)}]" for p in parts[1:])


def class_name(graph: Graph) -> str:
    return ident(graph.name[0].upper() + graph.name[1:] if graph.name else "Model")


def _inplace_ok(graph: Graph, value: str, out_type: TensorType, consumers: dict[str, int],
                producers: dict[str, Node], outputs: set[str]) -> bool:
    """True when `value` can be overwritten: one reader, not a model output, a safe producer,
    and the same shape as the result (no broadcasting)."""
    prod = producers.get(value)
    return (
        consumers.get(value, 0) == 1
        and value not in outputs
        and prod is not None
        and get_op(prod.op).output_reusable
        and tuple(graph.values[value].shape) == tuple(out_type.shape)
    )


def _inplace_expr(graph: Graph, node: Node, x: list[str], consumers, producers, outputs) -> str | None:
    """The op's in-place form (its lowering's `inplace`) where its first input may be overwritten."""
    inplace = LOWERINGS[node.op].get("inplace")
    if inplace is None:
        return None
    expr = inplace(x)
    out_t = graph.values[node.outputs[0]]
    if expr is None or not _inplace_ok(graph, node.inputs[0], out_t, consumers, producers, outputs):
        return None
    return expr


def _entries_expr(entries: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Constructor entries keyed by relative path, nested in `nn.ModuleDict`s by their dotted
    paths: (top-level name, expression)."""
    tree: dict = {}
    for rel, expr in entries:
        parts = rel.split(".")
        cur = tree
        for p in parts[:-1]:
            cur = cur.setdefault(p, {})
        cur[parts[-1]] = blockgen.without_defaults(expr)

    def render(val: Any) -> str:
        if isinstance(val, dict):
            return "nn.ModuleDict({" + ", ".join(f"{literal(k)}: {render(v)}" for k, v in val.items()) + "})"
        return val

    return [(k, render(v)) for k, v in tree.items()]


def _init_lines(entries: list[tuple[str, str]]) -> list[str]:
    lines: list[str] = []
    for key, expr in _entries_expr(entries):
        top = _attr_name(key)
        if top:
            lines += layout(f"self.{top} = ", expr, depth=2)
        else:
            lines += layout("", f"self.add_module({literal(key)}, {expr})", depth=2)
    return lines


class _Source:
    """The state of one generation: names, in-place choices and the classes written so far."""

    def __init__(self, graph: Graph, inplace: bool) -> None:
        self.graph = graph
        self.ctx = _Ctx()
        self.consumers: dict[str, int] = {}
        for node in graph.nodes:
            for v in node.inputs:
                self.consumers[v] = self.consumers.get(v, 0) + 1
        self.producers = graph.producers()
        self.graph_outputs = {o.value for o in graph.outputs}
        self.inplace = inplace
        self.units = blockgen.units(graph)
        self.class_names: set[str] = {class_name(graph)}
        #: unit path → (class name, {param: value text}) once its class is known
        self.made: dict[str, tuple[str, dict[str, str]]] = {}
        #: class sources in dependency order
        self.sources: list[str] = []

    def fast(self, node: Node, x: list[str]) -> str | None:
        if not self.inplace:
            return None
        return _inplace_expr(self.graph, node, x, self.consumers, self.producers, self.graph_outputs)

    def render(self, unit: blockgen.Unit, args: list[str]) -> tuple[list[tuple[str, str]], list[str], list[str]]:
        """(constructor entries, forward lines, returned names) of one unit, its inputs named `args`."""
        g = self.graph
        used: set[str] = set(args) | self.class_names
        names = dict(zip(unit.inputs, args))
        entries: list[tuple[str, str]] = []
        body: list[str] = []
        for kind, item in unit.items:
            if kind == "unit":
                child = self.units[item]
                rel = unit.rel(item)
                cls, values = self.made[item]
                entries.append((rel, f"{cls}(" + ", ".join(f"{k}={v}" for k, v in values.items()) + ")"))
                x = [names[v] for v in child.inputs]
                outs = []
                for i, v in enumerate(child.outputs):
                    base = rel if len(child.outputs) == 1 else f"{rel}_{i}"
                    names[v] = ident(base, used)
                    outs.append(names[v])
                body += layout(", ".join(outs) + " = ", f"{_module_ref(rel)}({', '.join(x)})", depth=2)
                continue
            node = item
            rel = unit.rel(node.name)
            x = [names[v] for v in node.inputs]
            t = [g.values[v] for v in node.inputs]
            outs = []
            for v in node.outputs:
                names[v] = ident(unit.rel(v).replace("#", "_out"), used)
                read = self.consumers.get(v, 0) or v in self.graph_outputs
                outs.append(names[v] if read or len(node.outputs) == 1 else "_")
            low = LOWERINGS[node.op]
            if low.get("module") is not None:
                entries.append((rel, low.get("module")(node, node.attrs, t, g)))
                expr = low.fn(self.ctx, node, node.attrs, x, t, _module_ref(rel))
            elif node.op in MODULE_FORMS and len(x) == 1:
                fast = self.fast(node, x) is not None
                entries.append((rel, MODULE_FORMS[node.op](node, node.attrs, fast)))
                expr = f"{_module_ref(rel)}({x[0]})"
            else:
                expr = self.fast(node, x) or low.fn(self.ctx, node, node.attrs, x, t)
            body += _assign(node, outs, expr, used)
        return entries, body, [names[v] for v in unit.outputs]

    def known(self, unit: blockgen.Unit) -> dict[str, Any]:
        """Naming candidates beyond the block's own parameters: the input's channels or features."""
        if not unit.inputs:
            return {}
        shape = self.graph.values[unit.inputs[0]].shape
        if len(shape) >= 3 and isinstance(shape[1], int):
            return {"in_channels": shape[1]}
        if len(shape) == 2 and isinstance(shape[1], int):
            return {"in_features": shape[1]}
        return {}

    def block_classes(self) -> None:
        """Write the class of every block unit, by height (a unit holding no other first): the
        uses of a block that can share a class have the same height."""
        height: dict[str, int] = {}

        def h(p: str) -> int:
            if p not in height:
                kids = [i for k, i in self.units[p].items if k == "unit"]
                height[p] = 1 + max((h(c) for c in kids), default=-1)
            return height[p]

        by_level: dict[int, list[str]] = {}
        for p in self.units:
            if p:
                by_level.setdefault(h(p), []).append(p)
        for level in sorted(by_level):
            insts = []
            arg_names: dict[str, list[str]] = {}
            for p in by_level[level]:
                unit = self.units[p]
                args = self.arg_names(unit)
                arg_names[p] = args
                entries, body, rets = self.render(unit, args)
                inst = blockgen.Instance(unit, entries, body + [f"return {', '.join(rets)}"], self.known(unit))
                insts.append(inst)
            self._write(insts, arg_names)

    def arg_names(self, unit: blockgen.Unit) -> list[str]:
        used: set[str] = set(self.class_names)
        if len(unit.inputs) == 1:
            return [ident("x", used)]
        return [ident(f"x{i}", used) for i in range(len(unit.inputs))]

    def _write(self, insts: list[blockgen.Instance], arg_names: dict[str, list[str]]) -> None:
        key = lambda inst: (tuple(arg_names[inst.unit.path]), len(inst.unit.outputs))  # noqa: E731
        reserved = self.class_names | {"self"}

        def pname(name: str, used: set[str] | None) -> str:
            return pysource.ident(name, used, reserved=GENERATED_NAMES | reserved)

        for cls in blockgen.classes(insts, key, pname):
            base = ident(cls.block[0].upper() + cls.block[1:] if cls.block else "Block")
            name, n = base, 2
            while name in self.class_names:
                name = f"{base}{n}"
                n += 1
            self.class_names.add(name)
            for inst, values in zip(cls.instances, cls.calls):
                self.made[inst.unit.path] = (name, values)
            first = cls.instances[0]
            args = arg_names[first.unit.path]
            params = [f"{p}: {a}" if a else p for p, a in cls.params.items()]
            ret_type = "torch.Tensor" if len(first.unit.outputs) == 1 else \
                "tuple[" + ", ".join(["torch.Tensor"] * len(first.unit.outputs)) + "]"
            lines = [f"class {name}(nn.Module):",
                     f'    """Block `{doc_text(cls.block)}` of the spec."""', ""]
            lines += _def_lines("__init__", ["self", *params], "None")
            lines.append("        super().__init__()")
            lines += _init_lines(cls.entries)
            lines.append("")
            lines += _def_lines("forward", ["self", *(f"{a}: torch.Tensor" for a in args)], ret_type)
            body = first.body
            lines += body[:-1]
            lines += layout("", body[-1], depth=2)
            self.sources.append("\n".join(lines) + "\n")


def _def_lines(name: str, params: list[str], ret: str) -> list[str]:
    """A method's `def` line, split as the formatter splits it when too long."""
    flat = f"    def {name}({', '.join(params)}) -> {ret}:"
    if len(flat) <= LINE_LENGTH:
        return [flat]
    inner = "        " + ", ".join(params)
    if len(inner) <= LINE_LENGTH:
        return [f"    def {name}(", inner, f"    ) -> {ret}:"]
    return [f"    def {name}(", *(f"        {p}," for p in params), f"    ) -> {ret}:"]


def generate(graph: Graph, header: bool = True, inplace: bool = True) -> str:
    """Python source of an nn.Module for `graph`: one `nn.Module` class per spec block (uses of
    one block that differ only in sizes share a class, the sizes its constructor's arguments),
    activations, pooling and dropout as modules, and the model's class. With `inplace`, a ReLU or
    residual add whose input nothing else reads overwrites it (as torchvision's ResNet does).
    Parameter names are the IR's paths either way (the canonical weight layout).

    The graph is re-validated first (names, every attribute through its op, every shape), so
    the source is written from checked values only, whatever file the graph came from."""
    graph = validated(graph)
    BACKEND.check(graph)
    src = _Source(graph, inplace)
    src.block_classes()
    top = src.units[""]
    used: set[str] = set(src.class_names)
    args = [ident(gi.name, used) for gi in graph.inputs]
    entries, body, rets = src.render(top, args)
    if len(graph.outputs) == 1:
        ret = f"return {rets[0]}"
        ret_type = "torch.Tensor"
    else:
        ret = "return {" + ", ".join(f"{literal(o.name)}: {n}" for o, n in zip(graph.outputs, rets)) + "}"
        ret_type = "dict[str, torch.Tensor]"
    shapes = "\n".join(f"        {a}: {doc_text(i.type)}" for a, i in zip(args, graph.inputs))
    outs_doc = "\n".join(f"        {doc_text(o.name)}: {doc_text(graph.values[o.value])}" for o in graph.outputs)
    cls = class_name(graph)
    lines = [f"class {cls}(nn.Module):", f'    """Inputs:\n{shapes}\n    Outputs:\n{outs_doc}\n    """', ""]
    lines += _def_lines("__init__", ["self"], "None")
    lines.append("        super().__init__()")
    lines += _init_lines(entries)
    lines.append("")
    lines += _def_lines("forward", ["self", *(f"{a}: torch.Tensor" for a in args)], ret_type)
    lines += body
    lines += layout("", ret, depth=2)
    parts = [HELPERS[h].strip("\n") + "\n" for h in sorted(src.ctx.helpers)]
    parts += src.sources
    parts.append("\n".join(lines) + "\n")
    code = "\n\n".join(parts)
    if header:
        imports = ["import torch", "from torch import nn"]
        if re.search(r"\bF\.", code):
            imports.append("from torch.nn import functional as F")
        title = f"{cls}: generated by dlspec from {doc_text(Path(graph.source).name if graph.source else 'a spec')}."
        code = f'"""{title} Edit the spec, not this file."""\n\n' + "\n".join(imports) + "\n\n\n" + code
    return code


def _assign(node: Node, outs: list[str], expr: str, used: set[str]) -> list[str]:
    custom = LOWERINGS[node.op].get("assign")
    if custom is not None:
        lines = []
        for text in custom(node, outs, expr, used):
            target, _, value = text.strip().partition(" = ")
            lines += layout(f"{target} = ", value, depth=2)
        return lines
    return layout(f"{', '.join(outs)} = ", expr, depth=2)


def build_module(graph: Graph, inplace: bool = True):
    """The live nn.Module for `graph` (imports torch)."""
    import torch  # noqa: F401  (the generated code needs it importable)

    src = generate(graph, inplace=inplace)  # re-validates the graph
    try:
        check_module_source(src, CALLS, METHODS, GENERATED_NAMES)
    except pysource.UnsafeSourceError as exc:
        raise DlspecError(Diagnostic(
            code="E719", message=f"generated PyTorch source for `{graph.name}` holds what dlspec never writes ({exc}); "
                                 "it was not run", hint="this is a bug in dlspec's torch backend; please report it")) from None
    cls = class_name(graph)
    filename = f"<dlspec:{cls}>"
    linecache.cache[filename] = (len(src), None, src.splitlines(True), filename)
    namespace: dict[str, Any] = {"__name__": f"dlspec_generated_{cls}"}
    # source written from a re-validated graph and checked construct by construct just above
    exec(compile(src, filename, "exec"), namespace)
    module = namespace[cls]()
    _apply_frozen(module, graph)
    return module


def _apply_frozen(module, graph: Graph) -> None:
    trainable = {p.path: p.trainable for p in graph.params() if not p.buffer}
    for name, p in module.named_parameters():
        if name in trainable and not trainable[name]:
            p.requires_grad_(False)


# ---- weights ---------------------------------------------------------------------------------


def canonical_state(module, graph: Graph) -> dict[str, Any]:
    """The module's parameters and buffers keyed by IR path, as CPU numpy arrays."""
    want = {p.path for p in graph.params()}
    sd = module.state_dict()
    return {k: v.detach().cpu().contiguous().numpy() for k, v in sd.items() if k in want}


def save_weights(module, graph: Graph, path) -> None:
    from ..weights import save_numpy

    save_numpy(canonical_state(module, graph), path, metadata={"model": graph.name, "layout": "canonical-torch"})


def load_weights(module, graph: Graph, path, strict: bool = True, skip: tuple[str, ...] = ()) -> list[str]:
    """Load a canonical safetensors file into `module`. Returns the keys that were not in the file
    (only allowed when strict is False). Never unpickles."""
    import torch

    from ..weights import load_graph_weights

    tensors = load_graph_weights(graph, path, strict=strict, skip=skip)
    params = {p.path for p in graph.params()}
    state = {k: torch.from_numpy(v.copy()) for k, v in tensors.items()}
    module.load_state_dict(state, strict=False)
    return [k for k in params if k not in tensors]



# ---- the backend interface -------------------------------------------------------------------


class TorchBackend(TableBackend):
    """The PyTorch backend behind the registry's interface (`dlspec.backends.Backend`)."""

    name = TARGET
    framework = "torch"
    lowerings = LOWERINGS

    def generate(self, graph: Graph, *, layout: str = "nchw", source: str | None = None) -> str:
        return generate(graph)

    def build(self, graph: Graph, weights=None, *, layout: str = "nchw", source: str | None = None,
              inplace: bool = True):
        """`inplace=False` writes no in-place ReLU or residual add (for tracing and comparisons)."""
        module = build_module(graph, inplace=inplace)
        if weights is not None:
            self.load_weights(module, graph, weights)
        return module

    def load_weights(self, live, graph: Graph, weights) -> None:
        import numpy as np
        import torch

        live.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in weights.items()}, strict=False)

    def read_weights(self, live, graph: Graph) -> dict[str, Any]:
        return canonical_state(live, graph)

    def run(self, graph: Graph, weights, inputs) -> dict[str, Any]:
        import torch

        module = build_module(graph, inplace=False).eval()
        self.load_weights(module, graph, weights)
        with torch.no_grad():
            y = module(*[torch.from_numpy(inputs[i.name]) for i in graph.inputs])
        ys = y if isinstance(y, dict) else {graph.outputs[0].name: y}
        return {k: v.detach().cpu().numpy() for k, v in ys.items()}


BACKEND = TorchBackend()
