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
from typing import Any

from ..errors import Diagnostic, DlspecError
from ..ir.check import layer_name_problem, validated
from ..ir.graph import Graph, Node
from ..ir.ops import get_op
from ..ir.ops.base import as_tuple
from ..ir.types import TensorType
from . import pysource
from .lowering import Lowerings, TableBackend
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
    h = rest[0] if rest else ident(f"{y}_h", used)
    if get_op(node.op).states == 2:
        c = rest[1] if len(rest) > 1 else ident(f"{y}_c", used)
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


def supported_ops() -> set[str]:
    return LOWERINGS.ops()


def _has_module(op: str) -> bool:
    low = LOWERINGS.get(op)
    return low is not None and low.get("module") is not None


# ---- source generation -----------------------------------------------------------------------


def _module_tree(graph: Graph) -> dict:
    tree: dict = {}
    for node in graph.nodes:
        if not _has_module(node.op):
            continue
        parts = node.name.split(".")
        cur = tree
        for p in parts[:-1]:
            cur = cur.setdefault(p, {})
        cur[parts[-1]] = node
    return tree


def _render_tree(tree: dict, graph: Graph, indent: int) -> str:
    pad = " " * indent
    items = []
    for key, val in tree.items():
        if isinstance(val, dict):
            items.append(f"{pad}{literal(key)}: nn.ModuleDict({{\n{_render_tree(val, graph, indent + 4)}{pad}}}),\n")
        else:
            items.append(f"{pad}{literal(key)}: {_module_expr(val, graph)},\n")
    return "".join(items)


def _module_expr(node: Node, graph: Graph) -> str:
    ins = [graph.values[v] for v in node.inputs]
    return LOWERINGS[node.op].get("module")(node, node.attrs, ins, graph)


def _top_attr(name: str) -> str | None:
    ok = name.isidentifier() and not keyword.iskeyword(name) and layer_name_problem(name) is None
    return name if ok else None


def _module_ref(path: str) -> str:
    parts = path.split(".")
    top = _top_attr(parts[0])
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


def generate(graph: Graph, header: bool = True, inplace: bool = True) -> str:
    """Python source of an nn.Module for `graph`. With `inplace`, a ReLU or residual add whose
    input nothing else reads overwrites it (as torchvision's ResNet does), saving memory traffic.

    The graph is re-validated first (names, every attribute through its op, every shape), so
    the source is written from checked values only, whatever file the graph came from."""
    graph = validated(graph)
    BACKEND.check(graph)
    used: set[str] = set()
    names: dict[str, str] = {}
    for gi in graph.inputs:
        names[gi.name] = ident(gi.name, used)
    for node in graph.nodes:
        for v in node.outputs:
            names[v] = ident(v.replace("#", "_out"), used)
    ctx = _Ctx()
    tree = _module_tree(graph)
    init: list[str] = []
    for key, val in tree.items():
        top = _top_attr(key)
        if isinstance(val, dict):
            expr = f"nn.ModuleDict({{\n{_render_tree(val, graph, 12)}        }})"
        else:
            expr = _module_expr(val, graph)
        init.append(f"        self.{top} = {expr}" if top else f"        self.add_module({literal(key)}, {expr})")
    body: list[str] = []
    consumers: dict[str, int] = {}
    for node in graph.nodes:
        for v in node.inputs:
            consumers[v] = consumers.get(v, 0) + 1
    producers = graph.producers()
    graph_outputs = {o.value for o in graph.outputs}
    for node in graph.nodes:
        x = [names[v] for v in node.inputs]
        t = [graph.values[v] for v in node.inputs]
        outs = [names[v] for v in node.outputs]
        low = LOWERINGS[node.op]
        if low.get("module") is not None:
            mod = _module_ref(node.name)
            expr = low.fn(ctx, node, node.attrs, x, t, mod)
        else:
            fast = _inplace_expr(graph, node, x, consumers, producers, graph_outputs) if inplace else None
            expr = fast or low.fn(ctx, node, node.attrs, x, t)
        body.extend(_assign(node, outs, expr, used))
    out_names = [names[o.value] for o in graph.outputs]
    if len(graph.outputs) == 1:
        ret = f"        return {out_names[0]}"
        ret_type = "torch.Tensor"
    else:
        ret = "        return {" + ", ".join(f"{literal(o.name)}: {n}" for o, n in zip(graph.outputs, out_names)) + "}"
        ret_type = "dict[str, torch.Tensor]"
    sig = ", ".join(f"{names[i.name]}: torch.Tensor" for i in graph.inputs)
    shapes = "\n".join(f"        {names[i.name]}: {doc_text(i.type)}" for i in graph.inputs)
    outs_doc = "\n".join(f"        {doc_text(o.name)}: {doc_text(graph.values[o.value])}" for o in graph.outputs)
    cls = class_name(graph)
    src = []
    for h in sorted(ctx.helpers):
        src.append(HELPERS[h])
    src.append(
        f"\n\nclass {cls}(nn.Module):\n"
        f'    """Inputs:\n{shapes}\n    Outputs:\n{outs_doc}\n    """\n\n'
        "    def __init__(self) -> None:\n"
        "        super().__init__()\n" + ("\n".join(init) + "\n" if init else "") + "\n"
        f"    def forward(self, {sig}) -> {ret_type}:\n" + "\n".join(body) + "\n" + ret + "\n"
    )
    code = "".join(src)
    if header:
        functional = "from torch.nn import functional as F\n" if re.search(r"\bF\.", code) else ""
        code = (f'"""{cls}: generated by dlspec from {doc_text(graph.source or "a spec")}. Edit the spec, not this file."""\n\n'
                f"import torch\nfrom torch import nn\n{functional}" + code)
    return code


def _assign(node: Node, outs: list[str], expr: str, used: set[str]) -> list[str]:
    custom = LOWERINGS[node.op].get("assign")
    if custom is not None:
        return custom(node, outs, expr, used)
    if len(outs) > 1:
        return [f"        {', '.join(outs)} = {expr}"]
    return [f"        {outs[0]} = {expr}"]


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
