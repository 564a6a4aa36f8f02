"""Caffe backend: an IR graph → `deploy.prototxt` + `model.caffemodel`, run with OpenCV's `dnn`.

`write_net(graph, weights)` builds the NetParameter (an `Input` layer per model input, one Caffe
layer per IR node, a BatchNorm + Scale pair per affine batch norm) and, with weights, the binary
caffemodel with the blobs in Caffe's layouts (the canonical layout is Caffe's for convolutions,
transposed convolutions and inner products; BatchNorm stores its statistics with a scale factor
of 1). An op or an attribute Caffe cannot express is E790 at the layer's source location, and
pooling whose PyTorch (floor) output size differs from Caffe's ceil rounding is E791: Caffe has no
floor mode that OpenCV reads, so the shapes would silently differ. `run` executes the written files
with `cv2.dnn.readNetFromCaffe` (OpenCV 4: OpenCV 5 dropped its Caffe importer).
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..backends.lowering import Lowerings, TableBackend
from ..errors import Diagnostic, DlspecError
from ..ir.check import validated
from ..ir.graph import Graph, Node
from ..ir.ops import REGISTRY
from ..ir.ops.base import as_tuple
from .importer import caffe_pool_size
from .schema import message

TARGET = "caffe"
LOWERINGS = Lowerings(TARGET)


def _refuse(node: Node, what: str, code: str = "E790", hint: str | None = None) -> DlspecError:
    where = f" at {node.span}" if node.span else ""
    return DlspecError(Diagnostic(code=code, span=node.span, message=f"{node.op} (layer `{node.name}`): {what}{where}",
                                  hint=hint or "compile to another target, or write it with ops Caffe has "
                                                "(docs/caffe.md)"))


class _Net:
    def __init__(self, graph: Graph, weights: Mapping[str, Any] | None):
        self.graph = graph
        self.weights = weights
        self.net = message("NetParameter")
        self.net.name = graph.name
        self.model = message("NetParameter") if weights is not None else None
        if self.model is not None:
            self.model.name = graph.name
        self.blob: dict[str, str] = {}  # IR value → Caffe blob name
        self.names: set[str] = set()
        self.producer_layer: dict[str, str] = {}  # Caffe blob → the layer that writes it
        self.renamed: dict[str, str] = {}  # layer name → the graph output's name it took

    def unique(self, stem: str) -> str:
        name, i = stem, 1
        while name in self.names:
            i += 1
            name = f"{stem}_{i}"
        self.names.add(name)
        return name

    def layer(self, kind: str, name: str, bottoms: list[str], ntops: int = 1, arrays: list[np.ndarray] | None = None) -> Any:
        lay = self.net.layer.add()
        lay.name = self.unique(name)
        lay.type = kind
        lay.bottom.extend(bottoms)
        tops = [lay.name] + [self.unique(f"{lay.name}_{i}") for i in range(1, ntops)]
        lay.top.extend(tops)
        for t in tops:
            self.producer_layer[t] = lay.name
        if arrays and self.model is not None:
            m = self.model.layer.add()
            m.name, m.type = lay.name, kind
            for arr in arrays:
                b = m.blobs.add()
                b.shape.dim.extend(int(d) for d in arr.shape)
                b.data.extend(np.asarray(arr, np.float32).reshape(-1).tolist())
        return lay

    def param(self, node: Node, name: str) -> np.ndarray:
        assert self.weights is not None
        arr = self.weights.get(f"{node.name}.{name}")
        if arr is None:
            raise _refuse(node, f"no weights for `{node.name}.{name}`", "E793", "pass --weights or a run folder")
        return np.asarray(arr, np.float32)


def _static(node: Node, t: Any) -> list[int]:
    dims = list(t.shape)
    if any(not isinstance(d, int) for d in dims[1:]):
        raise _refuse(node, f"the symbolic shape {t}: a Caffe net has fixed sizes after the batch axis",
                      hint="bind the sizes with --set (for example --set h=32)")
    return dims


# ---- lowerings: each writes Caffe layers for one node and returns its output blobs ----------------


def _pair(v: Any) -> tuple[int, int]:
    t = as_tuple(v, 2, "size")
    return int(t[0]), int(t[1])


def _hw(p: Any, name: str, value: Any) -> None:
    h, w = _pair(value)
    setattr(p, f"{name}_h", h)
    setattr(p, f"{name}_w", w)


@LOWERINGS.register("conv2d", "conv_transpose2d")
def _l_conv(c: _Net, node: Node, a: dict, x: list[str], t: list[Any]) -> list[str]:
    if isinstance(a["padding"], str):
        raise _refuse(node, f"padding={a['padding']!r}: Caffe pads symmetrically by a number")
    if node.op == "conv_transpose2d" and any(_pair(a["output_padding"])):
        raise _refuse(node, "output_padding: Caffe's Deconvolution has none")
    arrays = [c.param(node, "weight")] + ([c.param(node, "bias")] if a["bias"] else []) if c.weights is not None else None
    lay = c.layer("Deconvolution" if node.op == "conv_transpose2d" else "Convolution", node.name, x, arrays=arrays)
    p = lay.convolution_param
    p.num_output = int(a["out_channels"])
    p.bias_term = bool(a["bias"])
    _hw(p, "kernel", a["kernel"])
    _hw(p, "stride", a["stride"])
    ph, pw = _pair(a["padding"])
    p.pad_h, p.pad_w = ph, pw
    dh, dw = _pair(a["dilation"])
    if dh != dw:
        raise _refuse(node, f"dilation {[dh, dw]}: OpenCV reads one dilation for both axes")
    if dh != 1:
        p.dilation.append(dh)
    if a["groups"] != 1:
        p.group = int(a["groups"])
    return list(lay.top)


@LOWERINGS.register("maxpool2d", "avgpool2d")
def _l_pool(c, node, a, x, t):
    dims = _static(node, t[0])
    kh, kw = _pair(a["kernel"])
    sh, sw = _pair(a["stride"] if a["stride"] is not None else a["kernel"])
    ph, pw = _pair(a["padding"])
    if node.op == "maxpool2d" and any(_pair(a["dilation"])[i] != 1 for i in range(2)):
        raise _refuse(node, "dilation: Caffe pools without it")
    crop: list[tuple[int, int]] = []  # (axis, size): Caffe's ceil rounding made one window more
    for axis, size, k, s, p in ((2, dims[2], kh, sh, ph), (3, dims[3], kw, sw, pw)):
        caffe = caffe_pool_size(size, k, s, p, True)
        ours = caffe_pool_size(size, k, s, p, bool(a["ceil_mode"]))
        if p == 0 and s > k and caffe != caffe_pool_size(size, k, s, p, False):
            raise _refuse(node, f"pooling {size} with kernel {k} and stride {s}: Caffe's last window would start "
                                "past the input", "E791", "pad the input, or choose sizes that divide evenly")
        if caffe != ours:
            crop.append((axis, ours))
    lay = c.layer("Pooling", node.name, x)
    p = lay.pooling_param
    p.pool = 0 if node.op == "maxpool2d" else 1
    p.kernel_h, p.kernel_w, p.stride_h, p.stride_w, p.pad_h, p.pad_w = kh, kw, sh, sw, ph, pw
    top = lay.top[0]
    for axis, size in crop:
        # floor rounding: the windows are Caffe's, without its last one (same starts, same divisors)
        cut = c.layer("Slice", f"{node.name}_floor_{'hw'[axis - 2]}", [top], ntops=2)
        cut.slice_param.axis = axis
        cut.slice_param.slice_point.append(size)
        top = cut.top[0]
    return [top]


@LOWERINGS.register("adaptive_avgpool2d", "adaptive_maxpool2d")
def _l_adaptive(c, node, a, x, t):
    dims = _static(node, t[0])
    oh, ow = _pair(a["output_size"])
    if dims[2] % oh or dims[3] % ow:
        raise _refuse(node, f"adaptive pooling of {dims[2]}×{dims[3]} to {oh}×{ow}: Caffe pools with one window "
                            "size, which needs sizes that divide evenly")
    lay = c.layer("Pooling", node.name, x)
    p = lay.pooling_param
    p.pool = 0 if node.op == "adaptive_maxpool2d" else 1
    p.kernel_h = p.stride_h = dims[2] // oh
    p.kernel_w = p.stride_w = dims[3] // ow
    return list(lay.top)


@LOWERINGS.register("global_avgpool2d", "global_maxpool2d")
def _l_global(c, node, a, x, t):
    lay = c.layer("Pooling", node.name, x)
    lay.pooling_param.pool = 0 if node.op == "global_maxpool2d" else 1
    lay.pooling_param.global_pooling = True
    if a["keepdims"]:
        return list(lay.top)
    flat = c.layer("Flatten", f"{node.name}_flatten", list(lay.top))
    return list(flat.top)


@LOWERINGS.register("dense")
def _l_dense(c, node, a, x, t):
    arrays = [c.param(node, "weight")] + ([c.param(node, "bias")] if a["bias"] else []) if c.weights is not None else None
    lay = c.layer("InnerProduct", node.name, x, arrays=arrays)
    lay.inner_product_param.num_output = int(a["units"])
    lay.inner_product_param.bias_term = bool(a["bias"])
    if t[0].rank != 2:
        lay.inner_product_param.axis = t[0].rank - 1
    return list(lay.top)


def _simple(kind: str, setup=None):
    def lower(c, node, a, x, t):
        lay = c.layer(kind, node.name, x)
        if setup is not None:
            setup(lay, a, t)
        return list(lay.top)

    return lower


for _op, _kind, _setup in [
    ("relu", "ReLU", None),
    ("leaky_relu", "ReLU", lambda lay, a, t: setattr(lay.relu_param, "negative_slope", float(a["slope"]))),
    ("elu", "ELU", lambda lay, a, t: setattr(lay.elu_param, "alpha", float(a["alpha"]))),
    ("sigmoid", "Sigmoid", None), ("tanh", "TanH", None), ("absolute", "AbsVal", None),
    ("dropout", "Dropout", lambda lay, a, t: setattr(lay.dropout_param, "dropout_ratio", float(a["p"]))),
    ("exp", "Exp", None), ("log", "Log", None), ("softplus", "BNLL", None),
    ("sqrt", "Power", lambda lay, a, t: setattr(lay.power_param, "power", 0.5)),
    ("reciprocal", "Power", lambda lay, a, t: setattr(lay.power_param, "power", -1.0)),
    ("flatten", "Flatten", lambda lay, a, t: (setattr(lay.flatten_param, "axis", int(a["start"])),
                                               setattr(lay.flatten_param, "end_axis", int(a["end"])))),
    ("lrn", "LRN", lambda lay, a, t: (setattr(lay.lrn_param, "local_size", int(a["size"])),
                                      setattr(lay.lrn_param, "alpha", float(a["alpha"])),
                                      setattr(lay.lrn_param, "beta", float(a["beta"])),
                                      setattr(lay.lrn_param, "k", float(a["k"])))),
]:
    LOWERINGS.add(_op, _simple(_kind, _setup))


def _power(c: _Net, name: str, x: list[str], scale: float = 1.0, shift: float = 0.0) -> list[str]:
    lay = c.layer("Power", name, x)
    if scale != 1.0:
        lay.power_param.scale = float(scale)
    if shift != 0.0:
        lay.power_param.shift = float(shift)
    return list(lay.top)


def _clip(c: _Net, node: Node, x: list[str], lo: float | None, hi: float | None) -> list[str]:
    """min(max(x, lo), hi) with the layers of BVLC Caffe (it has no clip that OpenCV reads):
    max(x, lo) = lo + relu(x − lo) and min(y, hi) = hi − relu(hi − y), the shifts merged."""
    if lo is not None:
        if lo != 0.0:
            x = _power(c, f"{node.name}_shift", x, shift=-lo)
        x = list(c.layer("ReLU", node.name if hi is None and lo == 0.0 else f"{node.name}_relu", x).top)
        if hi is None:
            return _power(c, node.name, x, shift=lo) if lo != 0.0 else x
        x = _power(c, f"{node.name}_flip", x, scale=-1.0, shift=hi - lo)
    else:
        x = _power(c, f"{node.name}_flip", x, scale=-1.0, shift=hi)
    x = list(c.layer("ReLU", f"{node.name}_relu_hi", x).top)
    return _power(c, node.name, x, scale=-1.0, shift=hi)


@LOWERINGS.register("relu6", "hardtanh")
def _l_clip(c, node, a, x, t):
    lo, hi = (0.0, 6.0) if node.op == "relu6" else (float(a["min"]), float(a["max"]))
    return _clip(c, node, x, lo, hi)


@LOWERINGS.register("pad")
def _l_pad(c, node, a, x, t):
    """Constant padding of H and W of [N, C, H, W]: a 1×1 depthwise convolution with weight 1 and
    Caffe's symmetric pad (the larger side), a Slice per axis for the excess of the smaller side;
    a value v other than 0 pads x − v and adds v back."""
    from ..ir.ops import get_op

    if a["mode"] != "constant":
        raise _refuse(node, f"mode={a['mode']!r}: Caffe pads with a constant only (a convolution's zero padding)")
    dims = _static(node, t[0])
    pairs = get_op("pad").pairs(get_op("pad").attrs_from_dict(a), len(dims))
    if len(dims) != 4 or any(pairs[i] != (0, 0) for i in (0, 1)):
        raise _refuse(node, f"padding {list(a['padding']) if not isinstance(a['padding'], int) else a['padding']} "
                            f"of {t[0]}: dlspec writes the padding of H and W of [N, C, H, W] as a Caffe convolution")
    value = float(a["value"])
    if value != 0.0:
        x = _power(c, f"{node.name}_shift", x, shift=-value)
    ch = int(dims[1])
    (ht, hb), (wl, wr) = pairs[2], pairs[3]
    ph, pw = max(ht, hb), max(wl, wr)
    crops = [(2, ph - ht, dims[2] + ht + hb), (3, pw - wl, dims[3] + wl + wr)]
    last = value == 0.0 and ht == hb and wl == wr
    arrays = [np.ones((ch, 1, 1, 1), np.float32)] if c.weights is not None else None
    lay = c.layer("Convolution", node.name if last else f"{node.name}_pad", x, arrays=arrays)
    p = lay.convolution_param
    p.num_output, p.bias_term, p.group = ch, False, ch
    p.kernel_h = p.kernel_w = 1
    p.pad_h, p.pad_w = ph, pw
    top = list(lay.top)
    for axis, start, size in crops:
        total = dims[axis] + 2 * (ph if axis == 2 else pw)
        if start == 0 and size == total:
            continue
        points = [s for s in (start, start + size) if 0 < s < total]
        cut = c.layer("Slice", f"{node.name}_crop_{'hw'[axis - 2]}", top, ntops=len(points) + 1)
        cut.slice_param.axis = axis
        cut.slice_param.slice_point.extend(points)
        top = [cut.top[1 if start > 0 else 0]]
    if value != 0.0:
        top = _power(c, node.name, top, shift=value)
    return top


def _to_size(node: Node, t: list[Any]) -> tuple[list[int], list[int]]:
    have, want = _static(node, t[0]), _static(node, t[1])
    if len(have) != 4:
        raise _refuse(node, f"{node.op} of {t[0]}: dlspec writes it for [N, C, H, W]")
    return have[2:], want[2:]


@LOWERINGS.register("pad_to")
def _l_pad_to(c, node, a, x, t):
    """The pad of the difference (d // 2 before, the rest after), written as `pad` is."""
    have, want = _to_size(node, t)
    padding = tuple(v for h, w in zip(have, want) for v in ((w - h) // 2, w - h - (w - h) // 2))
    return _l_pad(c, node, {"padding": padding, "mode": "constant", "value": 0.0}, x[:1], t[:1])


@LOWERINGS.register("crop_to")
def _l_crop_to(c, node, a, x, t):
    """Caffe's Crop layer (FCN's): x cut to the shape of `like` from axis 2, at the centre offsets."""
    have, want = _to_size(node, t)
    lay = c.layer("Crop", node.name, x)
    lay.crop_param.axis = 2
    lay.crop_param.offset.extend((h - w) // 2 for h, w in zip(have, want))
    return list(lay.top)


@LOWERINGS.register("upsample")
def _l_upsample(c, node, a, x, t):
    """Nearest upsampling by integer factors: a Deconvolution with stride and kernel the factor,
    one group per channel and weight 1 (how Caffe nets upsample); (bi)linear is refused: Caffe's
    bilinear-filler Deconvolution differs from it at the borders."""
    dims = _static(node, t[0])
    out = _static(node, c.graph.values[node.outputs[0]])
    if a["mode"] != "nearest":
        raise _refuse(node, f"mode={a['mode']!r}: Caffe's bilinear Deconvolution zero-pads, so its border pixels "
                            "differ from bilinear resizing; only nearest upsampling by integer factors is exact")
    if len(dims) != 4:
        raise _refuse(node, f"its input is {t[0]}: dlspec writes the upsampling of [N, C, H, W]")
    fh, fw = out[2] // dims[2], out[3] // dims[3]
    if fh * dims[2] != out[2] or fw * dims[3] != out[3] or fh < 1 or fw < 1:
        raise _refuse(node, f"{dims[2]}×{dims[3]} to {out[2]}×{out[3]} is not an integer factor: Caffe's "
                            "Deconvolution upsamples by its stride")
    ch = int(dims[1])
    arrays = [np.ones((ch, 1, fh, fw), np.float32)] if c.weights is not None else None
    lay = c.layer("Deconvolution", node.name, x, arrays=arrays)
    p = lay.convolution_param
    p.num_output, p.bias_term, p.group = ch, False, ch
    p.kernel_h, p.kernel_w, p.stride_h, p.stride_w = fh, fw, fh, fw
    return list(lay.top)


@LOWERINGS.register("softmax", "log_softmax")
def _l_softmax(c, node, a, x, t):
    lay = c.layer("Softmax", node.name if node.op == "softmax" else f"{node.name}_softmax", x)
    axis = int(a["axis"])
    lay.softmax_param.axis = axis + t[0].rank if axis < 0 else axis
    if node.op == "softmax":
        return list(lay.top)
    return list(c.layer("Log", node.name, list(lay.top)).top)


@LOWERINGS.register("prelu")
def _l_prelu(c, node, a, x, t):
    lay = c.layer("PReLU", node.name, x, arrays=[c.param(node, "weight")] if c.weights is not None else None)
    lay.prelu_param.channel_shared = not a["per_channel"]
    return list(lay.top)


@LOWERINGS.register("batchnorm1d", "batchnorm2d")
def _l_bn(c, node, a, x, t):
    arrays = None
    if c.weights is not None:
        arrays = [c.param(node, "running_mean"), c.param(node, "running_var"), np.ones(1, np.float32)]
    bn = c.layer("BatchNorm", node.name, x, arrays=arrays)
    bn.batch_norm_param.use_global_stats = True
    bn.batch_norm_param.eps = float(a["eps"])
    bn.batch_norm_param.moving_average_fraction = 1.0 - float(a["momentum"])
    if not a["affine"]:
        return list(bn.top)
    arrays = [c.param(node, "weight"), c.param(node, "bias")] if c.weights is not None else None
    sc = c.layer("Scale", f"{node.name}_scale", list(bn.top), arrays=arrays)
    sc.scale_param.bias_term = True
    return list(sc.top)


_ELTWISE = {"add": 1, "mul": 0, "maximum": 2, "sub": 1}


@LOWERINGS.register("add", "sub", "mul", "div", "maximum", "minimum", "pow")
def _l_binary(c, node, a, x, t):
    scalar = a.get("scalar")
    if len(x) == 1:
        s = float(scalar)
        if node.op == "maximum":
            return _clip(c, node, x, s, None)
        if node.op == "minimum":
            return _clip(c, node, x, None, s)
        lay = c.layer("Power", node.name, x)
        pp = lay.power_param
        if node.op == "add":
            pp.shift = s
        elif node.op == "sub":
            pp.shift = -s
        elif node.op == "mul":
            pp.scale = s
        elif node.op == "div":
            if s == 0:
                raise _refuse(node, "division by zero")
            pp.scale = 1.0 / s
        else:
            pp.power = s
        return list(lay.top)
    if node.op not in _ELTWISE:
        raise _refuse(node, f"{node.op} of two tensors: Caffe's Eltwise has SUM, PROD and MAX")
    if tuple(t[0].shape) != tuple(t[1].shape):
        raise _refuse(node, f"broadcasting {t[0]} with {t[1]}: Caffe's Eltwise needs equal shapes")
    lay = c.layer("Eltwise", node.name, x)
    lay.eltwise_param.operation = _ELTWISE[node.op]
    if node.op == "sub":
        lay.eltwise_param.coeff.extend([1.0, -1.0])
    return list(lay.top)


@LOWERINGS.register("concat")
def _l_concat(c, node, a, x, t):
    lay = c.layer("Concat", node.name, x)
    axis = int(a["axis"])
    lay.concat_param.axis = axis + t[0].rank if axis < 0 else axis
    return list(lay.top)


@LOWERINGS.register("split")
def _l_split(c, node, a, x, t):
    rank = t[0].rank
    axis = int(a["axis"]) + rank if int(a["axis"]) < 0 else int(a["axis"])
    size = t[0].shape[axis]
    parts = [size // a["parts"]] * a["parts"] if isinstance(a["parts"], int) else list(a["parts"])
    lay = c.layer("Slice", node.name, x, ntops=len(parts))
    lay.slice_param.axis = axis
    acc = 0
    for s in parts[:-1]:
        acc += int(s)
        lay.slice_param.slice_point.append(acc)
    return list(lay.top)


@LOWERINGS.register("reshape", "squeeze", "unsqueeze")
def _l_reshape(c, node, a, x, t):
    out = c.graph.values[node.outputs[0]]
    dims = _static(node, out)
    lay = c.layer("Reshape", node.name, x)
    lay.reshape_param.shape.dim.extend([0, *[int(d) for d in dims[1:]]])
    return list(lay.top)


@LOWERINGS.register("identity")
def _l_identity(c, node, a, x, t):
    return list(x)


def _no_caffe(c, node, a, x, t):
    raise _refuse(node, "Caffe has no layer for it")


for _op in sorted(set(REGISTRY) - LOWERINGS.ops()):
    LOWERINGS.add(_op, _no_caffe, refused=True)

#: the ops Caffe expresses (the others are registered so that each refusal is a located E790)
CAFFE_OPS = frozenset(op for op in LOWERINGS.ops() if not LOWERINGS[op].get("refused"))


def write_net(graph: Graph, weights: Mapping[str, Any] | None = None) -> tuple[Any, Any | None, dict[str, str]]:
    """(deploy NetParameter, caffemodel NetParameter or None, {output name: Caffe layer name})."""
    c, outputs = _build(graph, weights)
    return c.net, c.model, outputs


def _build(graph: Graph, weights: Mapping[str, Any] | None) -> tuple[_Net, dict[str, str]]:
    graph = validated(graph)
    problems = [_refuse(n, "Caffe has no layer for it").diagnostics[0] for n in graph.nodes if n.op not in CAFFE_OPS]
    if problems:
        raise DlspecError(problems)
    c = _Net(graph, weights)
    for gi in graph.inputs:
        if gi.type.dtype not in ("float32", "float16", "float64"):
            raise DlspecError(Diagnostic(code="E790", span=gi.span,
                                         message=f"input `{gi.name}` is {gi.type.dtype}: a Caffe net's inputs are float"))
        dims = list(gi.type.shape)
        if any(not isinstance(d, int) for d in dims[1:]):
            raise DlspecError(Diagnostic(code="E790", span=gi.span, message=f"input `{gi.name}` is {gi.type}: "
                                         "a Caffe net has fixed sizes after the batch axis",
                                         hint="bind the sizes with --set"))
        lay = c.layer("Input", gi.name, [])
        lay.input_param.shape.add().dim.extend([dims[0] if isinstance(dims[0], int) else 1, *dims[1:]])
        c.blob[gi.name] = lay.top[0]
    for node in graph.nodes:
        xs = [c.blob[v] for v in node.inputs]
        ts = [graph.values[v] for v in node.inputs]
        tops = LOWERINGS[node.op].fn(c, node, dict(node.attrs), xs, ts)
        for v, top in zip(node.outputs, tops):
            c.blob[v] = top
    outputs: dict[str, str] = {}
    for go in graph.outputs:
        top = c.blob[go.value]
        owner = next(lay for lay in c.net.layer if lay.name == c.producer_layer.get(top))
        if len(owner.top) > 1 or owner.type == "Input" or top in outputs.values():
            lay = c.layer("Power", go.name, [top])  # an identity: a layer whose one top is the output
            top = lay.top[0]
        elif go.name not in c.names:
            _rename(c, owner.name, go.name)  # the output's layer and top take the output's name
            top = go.name
        outputs[go.name] = top
    return c, outputs


def _rename(c: _Net, old: str, new: str) -> None:
    """Layer `old` (one top, named like it) becomes `new`, in the net and the caffemodel."""
    c.names.add(new)
    for lay in c.net.layer:
        if lay.name == old:
            lay.name = new
        for field in (lay.top, lay.bottom):
            for i, b in enumerate(field):
                if b == old:
                    field[i] = new
    if c.model is not None:
        for lay in c.model.layer:
            if lay.name == old:
                lay.name = new
    c.producer_layer[new] = new
    c.renamed[old] = new
    for v, top in c.blob.items():
        if top == old:
            c.blob[v] = new


def prototxt_text(net: Any) -> str:
    from google.protobuf import text_format

    return text_format.MessageToString(net)


def write_files(graph: Graph, folder: str | Path, weights: Mapping[str, Any] | None) -> list[Path]:
    """deploy.prototxt and, with weights, model.caffemodel in `folder` (each written atomically)."""
    from ..io import atomic_write_bytes, atomic_write_text

    net, model, _ = write_net(graph, weights)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = [folder / "deploy.prototxt"]
    atomic_write_text(written[0], prototxt_text(net))
    if model is not None:
        written.append(folder / "model.caffemodel")
        atomic_write_bytes(written[1], model.SerializeToString())
    return written


def opencv_net(prototxt: str | Path, caffemodel: str | Path) -> Any:
    try:
        import cv2
    except ImportError:
        raise DlspecError(Diagnostic(code="E794", message="running a Caffe net needs OpenCV",
                                     hint="pip install 'dlspec[caffe]' (opencv-python-headless>=4.8,<5)")) from None
    net = cv2.dnn.readNetFromCaffe(str(prototxt), str(caffemodel))
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
    return net


def run_opencv(prototxt: str | Path, caffemodel: str | Path, inputs: Mapping[str, np.ndarray],
               outputs: list[str]) -> list[np.ndarray]:
    """Forward the Caffe files with OpenCV's dnn module: one array per name in `outputs`."""
    net = opencv_net(prototxt, caffemodel)
    for k, v in inputs.items():
        net.setInput(np.ascontiguousarray(v, np.float32), k)
    return [np.array(o) for o in net.forward(outputs)]


class CaffeBackend(TableBackend):
    """The Caffe backend: source is the deploy prototxt, the runtime is OpenCV's dnn."""

    name = TARGET
    framework = "opencv-python-headless"
    lowerings = LOWERINGS

    def check(self, graph: Graph) -> None:
        problems = [_refuse(n, "Caffe has no layer for it").diagnostics[0] for n in graph.nodes if n.op not in CAFFE_OPS]
        if problems:
            raise DlspecError(problems)

    def generate(self, graph: Graph, *, layout: str = "nchw", source: str | None = None) -> str:
        return prototxt_text(write_net(graph)[0])

    def build(self, graph: Graph, weights=None, *, layout: str = "nchw", source: str | None = None) -> Any:
        from ..init import init_weights

        arrays = {k: np.asarray(v) for k, v in (weights if weights is not None else init_weights(graph)).items()}
        return {"graph": graph, "weights": arrays}

    def load_weights(self, live: Any, graph: Graph, weights) -> None:
        live["weights"] = {k: np.asarray(v) for k, v in weights.items()}

    def read_weights(self, live: Any, graph: Graph) -> dict[str, Any]:
        """The weights as they come back from the written caffemodel (BatchNorm's statistics
        divided by its scale factor, as Caffe reads them)."""
        c, _ = _build(graph, live["weights"])
        model = message("NetParameter")
        model.ParseFromString(c.model.SerializeToString())  # the bytes a caffemodel file holds
        by_name = {lay.name: [np.asarray(b.data, np.float32).reshape([int(d) for d in b.shape.dim])
                              for b in lay.blobs] for lay in model.layer}
        blobs = {name: by_name[c.renamed.get(name, name)] for name in
                 [*(n.name for n in graph.nodes), *(f"{n.name}_scale" for n in graph.nodes)]
                 if c.renamed.get(name, name) in by_name}
        out: dict[str, Any] = {}
        for node in graph.nodes:
            names = [p.name for p in graph.params() if p.node == node.name]
            if not names:
                continue
            if node.op.startswith("batchnorm"):
                mean, var, sf = blobs[node.name]
                f = 0.0 if sf[0] == 0 else 1.0 / sf[0]
                out[f"{node.name}.running_mean"], out[f"{node.name}.running_var"] = mean * f, var * f
                if node.attrs.get("affine"):
                    out[f"{node.name}.weight"], out[f"{node.name}.bias"] = blobs[f"{node.name}_scale"]
            else:
                order = {"prelu": ["weight"]}.get(node.op, ["weight", "bias"])
                for k, arr in zip(order, blobs[node.name]):
                    out[f"{node.name}.{k}"] = arr
        return out

    def run(self, graph: Graph, weights, inputs) -> dict[str, Any]:
        arrays = {k: np.asarray(v) for k, v in weights.items()}
        with tempfile.TemporaryDirectory() as tmp:
            net, model, outputs = write_net(graph, arrays)
            proto, cm = Path(tmp) / "deploy.prototxt", Path(tmp) / "model.caffemodel"
            proto.write_text(prototxt_text(net))
            cm.write_bytes(model.SerializeToString())
            names = [go.name for go in graph.outputs]
            layer_of = {top: top for top in outputs.values()}
            got = run_opencv(proto, cm, {gi.name: inputs[gi.name] for gi in graph.inputs},
                             [layer_of[outputs[n]] for n in names])
        return dict(zip(names, got))


BACKEND = CaffeBackend()
