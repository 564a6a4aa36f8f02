"""A Caffe net → IR layers (`importers.onnx.Imported`), for the spec writer.

`import_net(prototxt, weights=None)` reads the net (both the `layer` and the legacy `layers`
form), keeps the layers of the TEST phase (a `train_val` file's data layers become inputs; its
loss and accuracy layers are dropped, their first bottom becoming an output), converts each
layer to IR ops checked by the ops' own shape rules, and takes the parameters from the
caffemodel (matched by layer name) or, without one, from each layer's fillers. docs/caffe.md has
the table of layers and the rules (ceil rounding of pooling, BatchNorm's scale factor, ...).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import AttrError, Diagnostic, DlspecError, ShapeError
from ..importers.onnx import Imported, Layer, ModelInput, Names, clean_name
from ..ir.dims import Sym
from ..ir.ops import get_op
from ..ir.types import TensorType
from .reader import (
    MAX_BLOB_AXES,
    MAX_BLOB_ELEMENTS,
    MAX_CAFFE_DIM,
    TextNet,
    blob_array,
    read_caffemodel,
    read_prototxt,
    upgrade_v1,
)

DATA_LAYERS = {"Data", "ImageData", "HDF5Data", "MemoryData", "DummyData", "WindowData", "Input", "Python"}
LOSS_LAYERS = {"SoftmaxWithLoss": "cross_entropy", "EuclideanLoss": "mse", "SigmoidCrossEntropyLoss": "bce_with_logits",
               "HingeLoss": None, "MultinomialLogisticLoss": "nll", "InfogainLoss": None, "ContrastiveLoss": None}
DROPPED = {"Accuracy", "Silence"}
CONVERTED = {
    "Convolution", "Deconvolution", "Pooling", "InnerProduct", "ReLU", "PReLU", "ELU", "Sigmoid", "TanH", "AbsVal",
    "Power", "Exp", "Log", "BNLL", "BatchNorm", "Scale", "Bias", "Eltwise", "Concat", "Slice", "Split", "Flatten",
    "Reshape", "Dropout", "LRN", "Softmax", "Crop",
}
KNOWN = CONVERTED | DATA_LAYERS | set(LOSS_LAYERS) | DROPPED


def _error(code: str, message: str, hint: str | None = None) -> DlspecError:
    return DlspecError(Diagnostic(code=code, message=message, hint=hint))


class Refused(Exception):
    """A layer used in a way dlspec cannot express (E853 with its line)."""


@dataclass
class CaffeImport:
    imported: Imported
    #: layer name in the spec → [(lr_mult, decay_mult) per parameter in Caffe's blob order]
    multipliers: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    #: spec parameter name per Caffe blob, for each layer with parameters
    param_order: dict[str, list[str]] = field(default_factory=dict)
    loss: str | None = None
    #: Caffe layer name → the shapes of its parameter blobs, in Caffe's order and layout
    blob_shapes: dict[str, list[tuple[int, ...]]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def _included(layer: Any, phase: int = 1) -> bool:
    def match(rule: Any) -> bool:
        if rule.HasField("phase") and rule.phase != phase:
            return False
        if rule.HasField("min_level") and 0 < rule.min_level:
            return False
        if rule.HasField("max_level") and 0 > rule.max_level:
            return False
        return not len(rule.stage)  # the TEST state has no stages: a rule that needs one fails

    if layer.include:
        return any(match(r) for r in layer.include)
    return not any(match(r) for r in layer.exclude)


class Converter:
    def __init__(self, net: TextNet, model: Any | None, name: str, input_shapes: dict[str, list[int]]):
        self.net = net
        self.path = net.path
        self.model_blobs: dict[str, list[Any]] = {}
        if model is not None:
            for raw in [*model.layer, *model.layers]:
                lay = upgrade_v1(raw)
                if len(lay.blobs):
                    self.model_blobs[lay.name] = list(lay.blobs)
        self.used_blobs: set[str] = set()
        self.has_model = model is not None
        self.filled = 0  # parameter values drawn from fillers
        self.missing_blobs: list[str] = []  # layers with parameters that the caffemodel does not hold
        self.name = name
        self.input_shapes = input_shapes
        self.types: dict[str, TensorType] = {}
        self.env: dict[str, str] = {}  # Caffe blob name → IR value
        self.hints: dict[str, str] = {}
        self.layers: list[Layer] = []
        self.inputs: list[ModelInput] = []
        self.layer_names = Names(layers=True)
        self.counter = 0
        self.result = CaffeImport(imported=None)  # type: ignore[arg-type]
        self.rng = np.random.default_rng(0)

    # ---- plumbing ------------------------------------------------------------------------------

    def new_value(self) -> str:
        self.counter += 1
        return f"v{self.counter}"

    def emit(self, op: str, attrs: dict[str, Any], inputs: list[str], stem: str | None = None,
             params: dict[str, np.ndarray] | None = None) -> list[str]:
        opdef = get_op(op)
        try:
            a = opdef.attrs_from_dict(attrs)
            opdef.validate_attrs(a)
            ins = [self.types[v] for v in inputs]
            opdef.check_inputs(a, ins)
            outs = opdef.infer(a, ins)
        except (AttrError, ShapeError) as exc:
            raise Refused(f"as {op}: {exc.message}") from None
        name = None
        if params is not None:
            name = self.layer_names.take(clean_name(stem or "") or op, op)
            want = opdef.params(a, ins) | opdef.buffers(a, ins)
            for k, shape in want.items():
                arr = params.get(k)
                if arr is None or tuple(arr.shape) != tuple(int(s) for s in shape):
                    got = None if arr is None else list(arr.shape)
                    raise Refused(f"its parameter {k} is {got}; {op} needs {[int(s) for s in shape]}")
        ids = [self.new_value() for _ in outs]
        for vid, t in zip(ids, outs):
            self.types[vid] = t
        self.layers.append(Layer(op, attrs, list(inputs), ids, name, dict(params or {})))
        return ids

    def blobs(self, lay: Any, shapes: list[tuple[int, ...]], fillers: list[Any], line: int) -> list[np.ndarray]:
        """The layer's parameter blobs in Caffe's shapes: from the caffemodel, else from its fillers."""
        self.result.blob_shapes[lay.name] = [tuple(int(d) for d in s) for s in shapes]
        src = self.model_blobs.get(lay.name)
        if src is None and len(lay.blobs):
            src = list(lay.blobs)
        if src is not None:
            self.used_blobs.add(lay.name)
            where = f"{self.path}:{line}: layer `{lay.name}`"
            arrs = [blob_array(b, where) for b in src]
            if len(arrs) < len(shapes):
                raise _error("E854", f"{where} has {len(arrs)} blobs in the caffemodel; its {lay.type} needs {len(shapes)}")
            out = []
            for i, (arr, shape) in enumerate(zip(arrs, shapes)):
                if arr.size != math.prod(shape):
                    raise _error("E854", f"{where}: blob {i} is {list(arr.shape)}; the prototxt makes it {list(shape)}",
                                 hint="the caffemodel belongs to another net, or the prototxt was edited")
                out.append(arr.reshape(shape))
            return out + arrs[len(shapes):]
        for s in shapes:
            if math.prod(s) > MAX_BLOB_ELEMENTS:
                raise _error("E859", f"{self.path}:{line}: layer `{lay.name}` ({lay.type}) declares a parameter blob "
                                     f"of shape {list(s)}, {math.prod(s):,} values; at most {MAX_BLOB_ELEMENTS:,}")
        self.filled += sum(math.prod(s) for s in shapes)
        if self.filled > MAX_BLOB_ELEMENTS * 4:
            raise _error("E859", f"{self.path}:{line}: layer `{lay.name}` brings the net's parameters to "
                                 f"{self.filled:,} values; at most {MAX_BLOB_ELEMENTS * 4:,}")
        self.missing_blobs.append(lay.name)
        return [self.fill(f, s) for f, s in zip(fillers, shapes)]

    def fill(self, filler: Any, shape: tuple[int, ...]) -> np.ndarray:
        kind = filler.type if filler is not None else "constant"
        fan_in = math.prod(shape[1:]) if len(shape) > 1 else shape[0]
        fan_out = shape[0] * math.prod(shape[2:]) if len(shape) > 1 else shape[0]
        n = {0: fan_in, 1: fan_out, 2: (fan_in + fan_out) / 2}[int(filler.variance_norm)] if filler is not None else fan_in
        if kind == "constant":
            arr = np.full(shape, filler.value if filler is not None else 0.0)
        elif kind == "gaussian":
            arr = self.rng.normal(filler.mean, filler.std, shape)
        elif kind == "uniform":
            arr = self.rng.uniform(filler.min, filler.max, shape)
        elif kind == "msra":
            arr = self.rng.normal(0.0, math.sqrt(2.0 / n), shape)
        else:  # xavier, and the rarer fillers: Caffe's xavier scale
            s = math.sqrt(3.0 / n)
            arr = self.rng.uniform(-s, s, shape)
        return arr.astype(np.float32)

    def value(self, blob: str, lay: Any, line: int) -> str:
        if blob not in self.env:
            raise _error("E855", f"{self.path}:{line}: layer `{lay.name}` reads `{blob}`, which no layer before it writes",
                         hint="inputs come from an Input layer, an `input:` header or a data layer")
        return self.env[blob]

    def bind(self, lay: Any, values: list[str]) -> None:
        for top, v in zip(lay.top, values):
            self.env[top] = v
            self.hints.setdefault(v, top)

    # ---- inputs --------------------------------------------------------------------------------

    def add_input(self, name: str, shape: list[int], line: int) -> None:
        if name in self.env:
            raise _error("E855", f"{self.path}:{line}: the input `{name}` is declared twice")
        if name in self.input_shapes:
            shape = [shape[0] if shape else 1, *self.input_shapes[name]]
        if len(shape) < 1 or any(not isinstance(d, int) or d <= 0 or d > MAX_CAFFE_DIM for d in shape):
            raise _error("E856", f"{self.path}:{line}: the input `{name}` has the shape {shape[:8]}"
                                 f"{' ...' if len(shape) > 8 else ''}", hint="give it with --input-shape NAME=C,H,W")
        if len(shape) > MAX_BLOB_AXES or math.prod(shape[1:]) > MAX_CAFFE_DIM:
            raise _error("E856", f"{self.path}:{line}: the input `{name}` has {len(shape):,} axes"
                                 + ("" if len(shape) > MAX_BLOB_AXES else f" of {math.prod(shape[1:]):,} values per example")
                                 + f"; a Caffe blob has at most {MAX_BLOB_AXES} axes and {MAX_CAFFE_DIM:,} values")
        dims = (Sym.symbol("batch"), *shape[1:])
        vid = self.new_value()
        self.types[vid] = TensorType(dtype="float32", shape=dims)
        self.env[name] = vid
        self.hints[vid] = name
        self.inputs.append(ModelInput(vid, "float32", dims))

    def header_inputs(self) -> None:
        h = self.net.header
        dims = list(h.input_dim)
        for i, name in enumerate(h.input):
            if i < len(h.input_shape):
                shape = [int(d) for d in h.input_shape[i].dim]
            elif len(dims) >= 4 * (i + 1):
                shape = [int(d) for d in dims[4 * i: 4 * i + 4]]
            elif name in self.input_shapes:
                shape = [1]
            else:
                raise _error("E856", f"{self.path}: the input `{name}` has no shape (input_shape or input_dim)",
                             hint="give it with --input-shape NAME=C,H,W")
            self.add_input(name, shape, 1)

    def data_layer(self, lay: Any, line: int) -> None:
        t = lay.type
        tops = list(lay.top)
        if t == "Input":
            shapes = [[int(d) for d in s.dim] for s in lay.input_param.shape]
            for i, top in enumerate(tops):
                s = shapes[i] if i < len(shapes) else (shapes[-1] if shapes else [])
                self.add_input(top, s, line)
            return
        shape: list[int] | None = None
        if t == "MemoryData":
            m = lay.memory_data_param
            shape = [m.batch_size or 1, m.channels, m.height, m.width]
        elif t == "DummyData":
            d = lay.dummy_data_param
            shape = [int(x) for x in d.shape[0].dim] if len(d.shape) else (
                [d.num[0], d.channels[0], d.height[0], d.width[0]] if len(d.num) else None)
        elif lay.transform_param.crop_size and tops and tops[0] in self.input_shapes:
            shape = [1]
        if shape is None and tops and tops[0] in self.input_shapes:
            shape = [1]
        if shape is None:
            crop = lay.transform_param.crop_size
            raise _error("E856", f"{self.path}:{line}: the {t} layer `{lay.name}` does not say the shape of `{tops[0]}`"
                         + (f" (crop_size {crop} gives its height and width, not its channels)" if crop else ""),
                         hint=f"give it with --input-shape {tops[0]}=C,H,W")
        self.add_input(tops[0], shape, line)
        # later tops (labels) are read only by losses and accuracy layers

    # ---- the net -------------------------------------------------------------------------------

    def run(self) -> CaffeImport:
        included = [(upgrade_v1(raw), line) for raw, line, _ in self.net.layers if _included(raw)]
        if not included and not len(self.net.header.input):
            raise _error("E855", f"{self.path}: the net has no layers")
        unsupported = [(lay, line) for lay, line in included if lay.type not in KNOWN]
        if unsupported:
            listing = "; ".join(f"{lay.type or '(no type)'} `{lay.name}` (line {line})" for lay, line in unsupported)
            raise DlspecError([Diagnostic(
                code="E850", message=f"{self.path}: {len(unsupported)} layer{'s' if len(unsupported) > 1 else ''} "
                                     f"dlspec cannot convert: {listing}",
                hint="docs/caffe.md lists the layers dlspec converts; layers of Caffe forks (SSD's PriorBox, "
                     "DetectionOutput, ...) have no dlspec op")])
        self.header_inputs()
        consumers: dict[str, int] = {}
        for lay, _ in included:
            for b in lay.bottom:
                consumers[b] = consumers.get(b, 0) + 1
        loss_outputs: list[str] = []
        skip: set[int] = set()
        for idx, (lay, line) in enumerate(included):
            if idx in skip:
                continue
            t = lay.type
            if t in DATA_LAYERS:
                if t == "Python":
                    raise _error("E850", f"{self.path}:{line}: the Python layer `{lay.name}` runs user code; "
                                         "dlspec cannot convert it", hint="replace it with an Input layer")
                self.data_layer(lay, line)
                continue
            if t in LOSS_LAYERS or t in DROPPED:
                if t in LOSS_LAYERS:
                    self.result.loss = self.result.loss or LOSS_LAYERS[t]
                    if lay.bottom and lay.bottom[0] in self.env:
                        loss_outputs.append(lay.bottom[0])
                continue
            try:
                nxt = included[idx + 1][0] if idx + 1 < len(included) else None
                if self.convert(lay, line, nxt, consumers):
                    skip.add(idx + 1)
            except Refused as exc:
                raise _error("E853", f"{self.path}:{line}: layer `{lay.name}` ({t}): {exc}",
                             hint="docs/caffe.md says what each layer supports") from None
        if self.has_model and self.missing_blobs:
            where = f"{self.path}: the caffemodel"
            if not self.used_blobs:
                raise _error("E854", f"{where} holds blobs for none of the net's {len(self.missing_blobs)} layer(s) "
                                     f"with parameters ({', '.join(self.missing_blobs[:8])})",
                             hint="the caffemodel belongs to another net (layers are matched by name)")
            self.result.warnings.append(
                f"W852: {where} has no blobs for {len(self.missing_blobs)} layer(s) with parameters, filled from "
                f"their fillers as Caffe does: {', '.join(self.missing_blobs[:8])}")
        unused = sorted(set(self.model_blobs) - self.used_blobs)
        if unused:
            self.result.warnings.append(
                f"W850: the caffemodel has blobs for {len(unused)} layer(s) the net does not use: {', '.join(unused[:8])}")
        return self.finish(included, loss_outputs)

    def finish(self, included: list[tuple[Any, int]], loss_outputs: list[str]) -> CaffeImport:
        """Outputs: every blob the kept layers write and no kept layer reads, and each loss's
        first bottom (a train_val net's scores), in the order the prototxt writes them."""
        read = {v for layer in self.layers for v in layer.inputs}
        inputs = {mi.value for mi in self.inputs}
        outputs: list[tuple[str, str]] = []
        seen: set[str] = set()
        tops = [top for lay, _ in included if lay.type not in DATA_LAYERS | set(LOSS_LAYERS) | DROPPED
                for top in lay.top]
        for top in [*tops, *loss_outputs]:
            v = self.env.get(top)
            if v is None or v in seen or v in inputs:
                continue
            if v not in read or top in loss_outputs:
                outputs.append((top, v))
                seen.add(v)
        if not outputs:
            raise _error("E855", f"{self.path}: the net computes no output")
        imp = Imported(name=self.name, source=self.path, producer="Caffe", opset=0, inputs=self.inputs,
                       outputs=outputs, layers=self.layers, types=self.types, hints=self.hints, symbols=["batch"])
        self.result.imported = imp
        return self.result

    def record(self, lay: Any, spec_name: str | None, order: list[str]) -> None:
        if spec_name is None:
            return
        mults = []
        for i, _ in enumerate(order):
            ps = lay.param[i] if i < len(lay.param) else None
            if ps is not None and ps.name:
                raise Refused(f"the shared parameter `{ps.name}`: dlspec layers do not share parameters")
            mults.append((float(ps.lr_mult) if ps is not None else 1.0, float(ps.decay_mult) if ps is not None else 1.0))
        self.result.multipliers[spec_name] = mults
        self.result.param_order[spec_name] = order

    # ---- layers --------------------------------------------------------------------------------

    def one(self, lay: Any, line: int) -> str:
        if len(lay.bottom) != 1 or len(lay.top) != 1:
            raise Refused(f"takes one bottom and one top; it has {len(lay.bottom)} and {len(lay.top)}")
        return self.value(lay.bottom[0], lay, line)

    def convert(self, lay: Any, line: int, nxt: Any, consumers: dict[str, int]) -> bool:
        """Convert one layer; True when it took the next layer with it (BatchNorm + Scale)."""
        t = lay.type
        fn = getattr(self, f"_l_{t.lower()}")
        return bool(fn(lay, line, nxt, consumers))

    def _spatial(self, p: Any, name: str, default: int, conv: bool) -> tuple[int, int]:
        h, w = getattr(p, f"{name}_h"), getattr(p, f"{name}_w")
        if p.HasField(f"{name}_h") or p.HasField(f"{name}_w"):
            return int(h), int(w)
        if conv:
            vals = list(getattr(p, name if name != "kernel" else "kernel_size"))
            if not vals:
                return default, default
            if len(vals) > 2:
                raise Refused(f"{len(vals)} {name} values: dlspec converts 2-D convolutions")
            return (int(vals[0]), int(vals[-1]))
        field_name = name if name != "kernel" else "kernel_size"
        v = getattr(p, field_name)
        if name == "kernel" and not p.HasField("kernel_size"):
            raise Refused("no kernel_size (or kernel_h and kernel_w)")
        return int(v), int(v)

    def _conv_common(self, lay: Any, line: int, transpose: bool) -> None:
        p = lay.convolution_param
        x = self.one(lay, line)
        tx = self.types[x]
        if tx.rank != 4:
            raise Refused(f"its input is {tx}; dlspec converts 2-D convolutions of [N, C, H, W]")
        if p.axis != 1:
            raise Refused(f"axis {p.axis}: the channels must be axis 1")
        if not p.HasField("num_output"):
            raise Refused("no num_output")
        kh, kw = self._spatial(p, "kernel", 0, True)
        if kh <= 0 or kw <= 0:
            raise Refused("no kernel_size (or kernel_h and kernel_w)")
        sh, sw = self._spatial(p, "stride", 1, True)
        ph, pw = self._spatial(p, "pad", 0, True)
        dil = [int(d) for d in p.dilation] or [1]
        if len(dil) > 2:
            raise Refused("more than two dilation values")
        dh, dw = dil[0], dil[-1]
        g = int(p.group)
        c = tx.shape[1]
        if not isinstance(c, int) or g <= 0 or c % g or p.num_output % g:
            raise Refused(f"group {g} does not divide its {c} input and {p.num_output} output channels")
        out = int(p.num_output)
        wshape = (c, out // g, kh, kw) if transpose else (out, c // g, kh, kw)
        shapes = [wshape] + ([(out,)] if p.bias_term else [])
        fillers = [p.weight_filler, p.bias_filler]
        arrs = self.blobs(lay, shapes, fillers, line)
        params = {"weight": arrs[0]}
        if p.bias_term:
            params["bias"] = arrs[1]
        pair = lambda a, b: a if a == b else [a, b]  # noqa: E731
        attrs = {"out_channels": out, "kernel": pair(kh, kw), "stride": pair(sh, sw), "padding": pair(ph, pw),
                 "dilation": pair(dh, dw), "groups": g, "bias": bool(p.bias_term)}
        op = "conv_transpose2d" if transpose else "conv2d"
        (y,) = self.emit(op, attrs, [x], lay.name, params)
        self.record(lay, self.layers[-1].name, list(params))
        self.bind(lay, [y])

    def _l_convolution(self, lay, line, nxt, consumers):
        self._conv_common(lay, line, False)

    def _l_deconvolution(self, lay, line, nxt, consumers):
        self._conv_common(lay, line, True)

    def _l_pooling(self, lay, line, nxt, consumers):
        p = lay.pooling_param
        x = self.one(lay, line)
        tx = self.types[x]
        if tx.rank != 4:
            raise Refused(f"its input is {tx}; Caffe pools [N, C, H, W]")
        if p.pool == 2:
            raise Refused("STOCHASTIC pooling has no dlspec op")
        kind = "max" if p.pool == 0 else "avg"
        if p.global_pooling:
            (y,) = self.emit(f"global_{kind}pool2d", {"keepdims": True}, [x])
            self.bind(lay, [y])
            return
        kh, kw = self._spatial(p, "kernel", 0, False)
        sh, sw = self._spatial(p, "stride", 1, False) if (p.HasField("stride") or p.HasField("stride_h")) else (1, 1)
        ph, pw = self._spatial(p, "pad", 0, False) if (p.HasField("pad") or p.HasField("pad_h")) else (0, 0)
        ceil = p.round_mode == 0
        need_ceil = False
        for size, k, s, pad in ((tx.shape[2], kh, sh, ph), (tx.shape[3], kw, sw, pw)):
            if not isinstance(size, int):
                raise Refused("a symbolic height or width: Caffe's rounding needs the size")
            if ceil and caffe_pool_size(size, k, s, pad, True) != caffe_pool_size(size, k, s, pad, False):
                need_ceil = True
            if ceil and pad == 0 and s > k and need_ceil:
                raise Refused("stride larger than the kernel without padding: Caffe's last window would start "
                              "past the input")
        pair = lambda a, b: a if a == b else [a, b]  # noqa: E731
        attrs = {"kernel": pair(kh, kw), "stride": pair(sh, sw), "padding": pair(ph, pw), "ceil_mode": need_ceil}
        (y,) = self.emit(f"{kind}pool2d", attrs, [x])
        self.bind(lay, [y])

    def _l_innerproduct(self, lay, line, nxt, consumers):
        p = lay.inner_product_param
        x = self.one(lay, line)
        tx = self.types[x]
        axis = p.axis + tx.rank if p.axis < 0 else p.axis
        if axis < 1 or axis >= tx.rank:
            raise Refused(f"axis {p.axis} of a {tx.rank}-D input: the batch axis stays")
        if axis < tx.rank - 1:
            (x,) = self.emit("flatten", {"start": axis, "end": -1}, [x])
            tx = self.types[x]
        n_in = tx.shape[-1]
        if not isinstance(n_in, int):
            raise Refused("a symbolic number of input features")
        out = int(p.num_output)
        shapes = [(n_in, out) if p.transpose else (out, n_in)] + ([(out,)] if p.bias_term else [])
        arrs = self.blobs(lay, shapes, [p.weight_filler, p.bias_filler], line)
        params = {"weight": np.ascontiguousarray(arrs[0].T) if p.transpose else arrs[0]}
        if p.bias_term:
            params["bias"] = arrs[1]
        (y,) = self.emit("dense", {"units": out, "bias": bool(p.bias_term)}, [x], lay.name, params)
        self.record(lay, self.layers[-1].name, list(params))
        self.bind(lay, [y])

    def _simple(self, lay, line, op, attrs=None):
        x = self.one(lay, line)
        (y,) = self.emit(op, attrs or {}, [x])
        self.bind(lay, [y])

    def _l_relu(self, lay, line, nxt, consumers):
        s = lay.relu_param.negative_slope
        self._simple(lay, line, "leaky_relu" if s else "relu", {"slope": float(s)} if s else {})

    def _l_elu(self, lay, line, nxt, consumers):
        self._simple(lay, line, "elu", {"alpha": float(lay.elu_param.alpha)})

    def _l_sigmoid(self, lay, line, nxt, consumers):
        self._simple(lay, line, "sigmoid")

    def _l_tanh(self, lay, line, nxt, consumers):
        self._simple(lay, line, "tanh")

    def _l_absval(self, lay, line, nxt, consumers):
        self._simple(lay, line, "absolute")

    def _l_dropout(self, lay, line, nxt, consumers):
        self._simple(lay, line, "dropout", {"p": float(lay.dropout_param.dropout_ratio)})

    def _l_softmax(self, lay, line, nxt, consumers):
        self._simple(lay, line, "softmax", {"axis": int(lay.softmax_param.axis)})

    def _l_prelu(self, lay, line, nxt, consumers):
        x = self.one(lay, line)
        shared = bool(lay.prelu_param.channel_shared)
        c = self.types[x].shape[1] if self.types[x].rank > 1 else 1
        filler = lay.prelu_param.filler if lay.prelu_param.HasField("filler") else None
        self.result.blob_shapes[lay.name] = [(1,) if shared else (c,)]
        arrs = self.blobs(lay, [(1,) if shared else (c,)], [filler], line) if filler is not None or \
            self.model_blobs.get(lay.name) or len(lay.blobs) else [np.full((1,) if shared else (c,), 0.25, np.float32)]
        (y,) = self.emit("prelu", {"per_channel": not shared}, [x], lay.name, {"weight": arrs[0]})
        self.record(lay, self.layers[-1].name, ["weight"])
        self.bind(lay, [y])

    def _affine_scalars(self, x: str, scale: float, shift: float) -> str:
        if scale != 1.0:
            (x,) = self.emit("mul", {"scalar": float(scale)}, [x])
        if shift != 0.0:
            (x,) = self.emit("add", {"scalar": float(shift)}, [x])
        return x

    def _l_power(self, lay, line, nxt, consumers):
        p = lay.power_param
        x = self._affine_scalars(self.one(lay, line), p.scale, p.shift)
        if p.power != 1.0:
            (x,) = self.emit("pow", {"scalar": float(p.power)}, [x])
        elif x == self.env[lay.bottom[0]]:
            (x,) = self.emit("identity", {}, [x])
        self.bind(lay, [x])

    def _l_exp(self, lay, line, nxt, consumers):
        p = lay.exp_param
        ln_base = 1.0 if p.base == -1.0 else math.log(p.base) if p.base > 0 else None
        if ln_base is None:
            raise Refused(f"base {p.base}: Caffe needs a positive base (or -1 for e)")
        x = self._affine_scalars(self.one(lay, line), p.scale * ln_base, p.shift * ln_base)
        (y,) = self.emit("exp", {}, [x])
        self.bind(lay, [y])

    def _l_log(self, lay, line, nxt, consumers):
        p = lay.log_param
        ln_base = 1.0 if p.base == -1.0 else math.log(p.base) if p.base > 0 and p.base != 1 else None
        if ln_base is None:
            raise Refused(f"base {p.base}: Caffe needs a positive base other than 1 (or -1 for e)")
        x = self._affine_scalars(self.one(lay, line), p.scale, p.shift)
        (y,) = self.emit("log", {}, [x])
        if ln_base != 1.0:
            (y,) = self.emit("mul", {"scalar": 1.0 / ln_base}, [y])
        self.bind(lay, [y])

    def _l_bnll(self, lay, line, nxt, consumers):
        # log(1 + exp(x)), which Caffe computes as x + log(1 + exp(-x)) above 0: softplus, not
        # exp then log (which overflows to inf above x ≈ 88)
        (y,) = self.emit("softplus", {}, [self.one(lay, line)])
        self.bind(lay, [y])

    def _l_batchnorm(self, lay, line, nxt, consumers):
        p = lay.batch_norm_param
        x = self.one(lay, line)
        tx = self.types[x]
        op = {2: "batchnorm1d", 3: "batchnorm1d", 4: "batchnorm2d"}.get(tx.rank)
        if op is None:
            raise Refused(f"its input is {tx}; dlspec has batchnorm1d and batchnorm2d")
        c = tx.shape[1]
        self.result.blob_shapes[lay.name] = [(c,), (c,), (1,)]
        stats = self.blobs(lay, [(c,), (c,), (1,)], [None, None, None], line) if (
            lay.name in self.model_blobs or len(lay.blobs)) else [np.zeros(c, np.float32), np.ones(c, np.float32),
                                                                  np.ones(1, np.float32)]
        sf = float(stats[2].reshape(-1)[0]) if stats[2].size else 1.0
        factor = 0.0 if sf == 0 else 1.0 / sf
        mean, var = stats[0] * factor, stats[1] * factor
        fuse = (nxt is not None and nxt.type == "Scale" and len(nxt.bottom) == 1 and nxt.bottom[0] == lay.top[0]
                and consumers.get(lay.top[0], 0) == 1 and nxt.scale_param.axis == 1 and nxt.scale_param.num_axes == 1)
        params = {"running_mean": mean.astype(np.float32), "running_var": var.astype(np.float32)}
        attrs = {"eps": float(p.eps), "momentum": round(1.0 - float(p.moving_average_fraction), 7),
                 "affine": bool(fuse)}
        name = lay.name
        if fuse:
            sp = nxt.scale_param
            shapes = [(c,)] + ([(c,)] if sp.bias_term else [])
            arrs = self.blobs(nxt, shapes, [sp.filler if sp.HasField("filler") else _ones(), sp.bias_filler], line)
            params["weight"] = arrs[0]
            params["bias"] = arrs[1] if sp.bias_term else np.zeros(c, np.float32)
            name = nxt.name if _generic(lay.name) else lay.name
        (y,) = self.emit(op, attrs, [x], name, params)
        spec_name = self.layers[-1].name
        if fuse:
            self.record(nxt, spec_name, ["weight", "bias"])
            self.bind(nxt, [y])
            self.hints[y] = nxt.top[0]
        else:
            self.result.param_order[spec_name] = []
            self.bind(lay, [y])
        return fuse

    def _channelwise(self, lay, line, weight: np.ndarray | None, bias: np.ndarray | None, order: list[str]) -> None:
        x = self.value(lay.bottom[0], lay, line)
        tx = self.types[x]
        c = tx.shape[1]
        if tx.rank != 4:
            raise Refused(f"its input is {tx}: dlspec writes a per-channel scale of [N, C, H, W] as a 1×1 "
                          "depthwise convolution")
        params = {"weight": (weight if weight is not None else np.ones(c, np.float32)).reshape(c, 1, 1, 1)}
        if bias is not None:
            params["bias"] = bias
        attrs = {"out_channels": c, "kernel": 1, "groups": c, "bias": bias is not None}
        (y,) = self.emit("conv2d", attrs, [x], lay.name, params)
        self.record(lay, self.layers[-1].name, order)
        self.bind(lay, [y])

    def _check_axis(self, lay, p, line):
        if len(lay.bottom) != 1 or len(lay.top) != 1:
            raise Refused("a second bottom (a scale or bias computed by the net) has no dlspec op")
        if p.axis != 1 or p.num_axes != 1:
            raise Refused(f"axis {p.axis}, num_axes {p.num_axes}: dlspec converts a per-channel {lay.type}")

    def _l_scale(self, lay, line, nxt, consumers):
        p = lay.scale_param
        self._check_axis(lay, p, line)
        x = self.value(lay.bottom[0], lay, line)
        c = self.types[x].shape[1]
        shapes = [(c,)] + ([(c,)] if p.bias_term else [])
        arrs = self.blobs(lay, shapes, [p.filler if p.HasField("filler") else _ones(), p.bias_filler], line)
        self._channelwise(lay, line, arrs[0], arrs[1] if p.bias_term else None, ["weight", "bias"][: len(shapes)])

    def _l_bias(self, lay, line, nxt, consumers):
        p = lay.bias_param
        self._check_axis(lay, p, line)
        x = self.value(lay.bottom[0], lay, line)
        c = self.types[x].shape[1]
        (b,) = self.blobs(lay, [(c,)], [p.filler if p.HasField("filler") else None], line)
        self._channelwise(lay, line, None, b, ["bias"])

    def _l_eltwise(self, lay, line, nxt, consumers):
        p = lay.eltwise_param
        xs = [self.value(b, lay, line) for b in lay.bottom]
        if len(xs) < 2 or len(lay.top) != 1:
            raise Refused("Eltwise takes two or more bottoms and one top")
        if len(p.coeff) and (p.operation != 1 or len(p.coeff) != len(xs)):
            raise Refused("coeff is for SUM, one per bottom")
        if p.operation == 1 and len(p.coeff):
            xs = [x if c == 1.0 else self.emit("mul", {"scalar": float(c)}, [x])[0] for x, c in zip(xs, p.coeff)]
        op = {0: "mul", 1: "add", 2: "maximum"}[int(p.operation)]
        y = xs[0]
        for x in xs[1:]:
            (y,) = self.emit(op, {}, [y, x])
        self.bind(lay, [y])

    def _l_concat(self, lay, line, nxt, consumers):
        p = lay.concat_param
        axis = int(p.axis) if p.HasField("axis") or not p.HasField("concat_dim") else int(p.concat_dim)
        xs = [self.value(b, lay, line) for b in lay.bottom]
        if len(xs) == 1:
            (y,) = self.emit("identity", {}, xs)
        else:
            (y,) = self.emit("concat", {"axis": axis}, xs)
        self.bind(lay, [y])

    def _l_split(self, lay, line, nxt, consumers):
        x = self.one_bottom(lay, line)
        self.bind(lay, [x] * len(lay.top))

    def one_bottom(self, lay, line):
        if len(lay.bottom) != 1:
            raise Refused(f"takes one bottom; it has {len(lay.bottom)}")
        return self.value(lay.bottom[0], lay, line)

    def _l_slice(self, lay, line, nxt, consumers):
        p = lay.slice_param
        x = self.one_bottom(lay, line)
        tx = self.types[x]
        axis = int(p.axis) if p.HasField("axis") or not p.HasField("slice_dim") else int(p.slice_dim)
        axis = axis + tx.rank if axis < 0 else axis
        if axis == 0:
            raise Refused("slicing the batch axis")
        size = tx.shape[axis] if 0 <= axis < tx.rank else None
        n = len(lay.top)
        if len(p.slice_point):
            pts = [0, *[int(s) for s in p.slice_point], size]
            if len(pts) - 1 != n or not isinstance(size, int):
                raise Refused(f"{len(p.slice_point)} slice points for {n} tops")
            parts: Any = [b - a for a, b in zip(pts, pts[1:])]
        else:
            parts = n
        ys = self.emit("split", {"parts": parts, "axis": axis}, [x]) if n > 1 else self.emit("identity", {}, [x])
        self.bind(lay, ys)

    def _l_crop(self, lay, line, nxt, consumers):
        """bottom[0] cut to bottom[1]'s shape from `axis` on, at the offsets: crop_to where they are
        the centre ones (U-Net's), else a split per axis keeping the part at the offset (FCN's)."""
        if len(lay.bottom) != 2 or len(lay.top) != 1:
            raise Refused(f"takes two bottoms and one top; it has {len(lay.bottom)} and {len(lay.top)}")
        x, like = (self.value(b, lay, line) for b in lay.bottom)
        tx, tl = self.types[x], self.types[like]
        p = lay.crop_param
        axis = int(p.axis) + tx.rank if p.axis < 0 else int(p.axis)
        if tx.rank != tl.rank or not 1 <= axis < tx.rank:
            raise Refused(f"axis {p.axis} of {tx} and {tl}")
        have, want = list(tx.shape[axis:]), list(tl.shape[axis:])
        if any(not isinstance(d, int) for d in have + want):
            raise Refused(f"cropping {tx} to {tl}: Caffe's sizes are fixed")
        offsets = [int(o) for o in p.offset] or [0]
        if len(offsets) == 1:
            offsets = offsets * len(have)
        if len(offsets) != len(have):
            raise Refused(f"{len(offsets)} offsets for the {len(have)} cropped axes")
        for o, h, w in zip(offsets, have, want):
            if o + w > h:
                raise Refused(f"offset {o} and size {w} do not fit an axis of {h}")
        if axis == 2 and all(o == (h - w) // 2 for o, h, w in zip(offsets, have, want)):
            (y,) = self.emit("crop_to", {}, [x, like])
            self.bind(lay, [y])
            return
        y = x
        for a, (o, h, w) in enumerate(zip(offsets, have, want), start=axis):
            if h == w:
                continue
            parts = [n for n in (o, w, h - o - w) if n]
            ys = self.emit("split", {"parts": parts, "axis": a}, [y])
            y = ys[1 if o else 0]
        if y == x:
            (y,) = self.emit("identity", {}, [x])
        self.bind(lay, [y])

    def _l_flatten(self, lay, line, nxt, consumers):
        p = lay.flatten_param
        self._simple(lay, line, "flatten", {"start": int(p.axis), "end": int(p.end_axis)})

    def _l_reshape(self, lay, line, nxt, consumers):
        p = lay.reshape_param
        x = self.one(lay, line)
        tx = self.types[x]
        dims = [int(d) for d in p.shape.dim]
        rank = tx.rank
        axis = p.axis + rank + 1 if p.axis < 0 else p.axis
        num = rank - axis if p.num_axes == -1 else p.num_axes
        if axis < 0 or axis + num > rank:
            raise Refused(f"axis {p.axis} and num_axes {p.num_axes} of a {rank}-D input")
        full = list(tx.shape[:axis]) + [tx.shape[axis + i] if d == 0 else d for i, d in enumerate(dims)] \
            + list(tx.shape[axis + num:])
        if axis > 0:
            pass
        elif not dims or dims[0] != 0:
            raise Refused("it changes the batch axis; dlspec's reshape keeps it (write 0 first)")
        rest = full[1:]
        if any(not isinstance(d, int) for d in rest):
            raise Refused("a symbolic dimension after the batch axis")
        (y,) = self.emit("reshape", {"shape": rest}, [x])
        self.bind(lay, [y])

    def _l_lrn(self, lay, line, nxt, consumers):
        p = lay.lrn_param
        x = self.one(lay, line)
        size = int(p.local_size)
        if size % 2 == 0:
            raise Refused(f"local_size {size}: Caffe needs an odd size")
        if p.norm_region == 0:
            (y,) = self.emit("lrn", {"size": size, "alpha": float(p.alpha), "beta": float(p.beta), "k": float(p.k)}, [x])
            self.bind(lay, [y])
            return
        # WITHIN_CHANNEL: x · (1 + alpha · mean of x² over the size×size window, zero-padded)^−beta
        (sq,) = self.emit("mul", {}, [x, x])
        (m,) = self.emit("avgpool2d", {"kernel": size, "stride": 1, "padding": (size - 1) // 2}, [sq])
        d = self._affine_scalars(m, float(p.alpha), 1.0)
        (d,) = self.emit("pow", {"scalar": -float(p.beta)}, [d])
        (y,) = self.emit("mul", {}, [x, d])
        self.bind(lay, [y])


def _ones() -> Any:
    from .schema import message

    f = message("FillerParameter")
    f.type = "constant"
    f.value = 1.0
    return f


def _generic(name: str) -> bool:
    return not name or bool(re.fullmatch(r"(bn|batchnorm|batch_norm)\d*", name, re.I))


def caffe_pool_size(size: int, k: int, s: int, p: int, ceil: bool) -> int:
    """Caffe's pooled size: ceil (default) or floor of (size + 2p − k) / s, plus one; with padding,
    a last window that would start in the padding (at or past size + p) is dropped."""
    span = size + 2 * p - k
    out = (-(-span // s) if ceil else span // s) + 1
    if p > 0 and (out - 1) * s >= size + p:
        out -= 1
    return out


def import_net(prototxt: str | Path, weights: str | Path | None = None, name: str | None = None,
               input_shapes: dict[str, list[int]] | None = None) -> CaffeImport:
    net = read_prototxt(prototxt, strict_types=CONVERTED | DATA_LAYERS | set(LOSS_LAYERS) | DROPPED)
    model = read_caffemodel(weights) if weights is not None else None
    if name is None:
        stem = clean_name(net.header.name) or clean_name(Path(prototxt).stem) or "Net"
        name = "".join(part[:1].upper() + part[1:] for part in stem.split("_") if part) or "Net"
        if name[0].isdigit():
            name = "Net" + name
    return Converter(net, model, name, dict(input_shapes or {})).run()


def convert(prototxt: str | Path, spec_path: str | Path, weights: str | Path | None = None, name: str | None = None,
            input_shapes: dict[str, list[int]] | None = None, solver: str | Path | None = None) -> Any:
    """The whole import, nothing written: (spec_writer.SpecResult, CaffeImport). The spec is
    compiled back and its shapes and parameter paths checked against the converted net; with a
    solver, its recipe is appended as the spec's `train` block."""
    from ..importers import spec_writer
    from ..program import compile_source
    from ..source import SourceFile

    spec_path = Path(spec_path)
    ci = import_net(prototxt, weights, name, input_shapes)
    imp = ci.imported
    weights_file = spec_path.with_suffix(".safetensors").name
    renames: dict[str, str] = {}
    text, input_names, output_names = spec_writer.write_spec(imp, weights_file, spec_path.name, renames)
    # layers inside block instances now have their paths (`res2a.branch2a`); so do their multipliers
    ci.multipliers = {renames.get(k, k): v for k, v in ci.multipliers.items()}
    ci.param_order = {renames.get(k, k): v for k, v in ci.param_order.items()}
    lines = text.split("\n")
    source = spec_writer._comment(Path(prototxt).name)
    with_weights = f" and {spec_writer._comment(Path(weights).name)}" if weights is not None else " (weights from its fillers)"
    lines[0] = f"# Imported by `dlspec import` from the Caffe net {source}{with_weights}."
    text = "\n".join(lines)
    if solver is not None:
        from .solver import recipe_text

        text += "\n" + recipe_text(solver, ci, imp.name, input_names, output_names, prototxt)
    arrays = imp.weights()
    try:
        program = compile_source(SourceFile(name=str(spec_path), text=text), base_dir=spec_path.parent)
    except DlspecError as exc:
        first = exc.diagnostics[0]
        raise DlspecError(Diagnostic(
            code="E744", message=f"the spec written for {prototxt} does not check: [{first.code}] {first.message}",
            hint="this is a bug in the importer; please report it with the prototxt")) from None
    graph = program.models[imp.name]
    spec_writer._verify(graph, imp, arrays, output_names)
    return spec_writer.SpecResult(text, arrays, graph, input_names, output_names, imp), ci
