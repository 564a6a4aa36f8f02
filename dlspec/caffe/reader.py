"""Reading Caffe files: text nets with the line of every layer, binary caffemodels, solvers.

Every problem is a coded error naming the file and, for text, the line: E851 a prototxt that
does not parse (or a field this schema does not know, in a layer dlspec converts), E852 a
caffemodel that is not one, E859 a file or a blob past the limits below. Layers whose type
dlspec does not convert are parsed leniently, so that one E850 can list them all.
"""

from __future__ import annotations

import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import Diagnostic, DlspecError
from .schema import message

#: a prototxt or solver file, in bytes
MAX_PROTOTXT_BYTES = 64 * 1024 * 1024
#: a caffemodel file, in bytes (protobuf's own limit is 2 GiB)
MAX_CAFFEMODEL_BYTES = 2 * 1024**3 - 1
#: layers of one net
MAX_CAFFE_LAYERS = 100_000
#: elements of one blob
MAX_BLOB_ELEMENTS = 512 * 1024 * 1024
#: a dimension of an input or a blob
MAX_CAFFE_DIM = 2**31 - 1
#: axes of a blob (Caffe's kMaxBlobAxes)
MAX_BLOB_AXES = 32
#: nesting of braces in a prototxt
MAX_PROTOTXT_NESTING = 64


def error(code: str, message_: str, hint: str | None = None) -> DlspecError:
    return DlspecError(Diagnostic(code=code, message=message_, hint=hint))


def check_file(path: str | Path, what: str, limit: int) -> Path:
    """A readable regular file no larger than `limit`, else E852/E859 (a prototxt's problems too)."""
    from ..source import UnreadableSource, check_path

    shown = str(path)[:200]
    try:
        p = Path(check_path(path))
        st = p.stat()
    except UnreadableSource as exc:
        raise error("E852", f"cannot read {shown}: {exc.strerror}") from None
    except FileNotFoundError:
        raise error("E852", f"no such file: {shown}") from None
    except (OSError, ValueError) as exc:
        raise error("E852", f"cannot read {shown}: {getattr(exc, 'strerror', None) or type(exc).__name__}") from None
    if stat.S_ISDIR(st.st_mode):
        raise error("E852", f"{shown} is a folder, not a {what}")
    if not stat.S_ISREG(st.st_mode):
        raise error("E852", f"cannot read {shown}: it is not a regular file (a device, FIFO or socket)")
    if st.st_size > limit:
        raise error("E859", f"{shown} is {st.st_size:,} bytes; a {what} may have at most {limit:,}")
    return p


@dataclass
class Block:
    """One top-level `layer { ... }` / `layers { ... }` of a prototxt: its text and first line."""

    field: str
    text: str  # from the opening brace to the closing one
    line: int  # of the field name
    brace_line: int  # of the opening brace


def split_blocks(text: str, path: str) -> tuple[str, list[Block]]:
    """(the prototxt without its layer blocks, the layer blocks in order), with line numbers.

    A small scanner: comments (`#` to the end of the line), quoted strings with escapes, and
    `{}`/`<>` nesting; a top-level field named `layer` or `layers` whose value is a message is a
    block. Anything it cannot follow (an unclosed brace or string) is left to text_format, which
    reports the line."""
    out: list[str] = []
    blocks: list[Block] = []
    i, n, line, depth = 0, len(text), 1, 0
    last_ident: tuple[str, int, int] | None = None  # name, start offset, line
    block_start: tuple[str, int, int] | None = None
    brace = (0, 0)
    copy_from = 0
    while i < n:
        c = text[i]
        if c == "\n":
            line += 1
            i += 1
        elif c == "#":
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif c in "\"'":
            j = i + 1
            while j < n and text[j] != c and text[j] != "\n":
                j += 2 if text[j] == "\\" else 1
            i = j + 1
            last_ident = None
        elif c in "{<":
            if depth == 0 and last_ident is not None and last_ident[0] in ("layer", "layers"):
                block_start = last_ident
                brace = (i, line)
            depth += 1
            if depth > MAX_PROTOTXT_NESTING:
                raise error("E859", f"{path}:{line}: messages nested more than {MAX_PROTOTXT_NESTING} deep")
            i += 1
            last_ident = None
        elif c in "}>":
            depth -= 1
            i += 1
            if depth == 0 and block_start is not None:
                name, start, bline = block_start
                body = text[start:i]
                out.append(text[copy_from:start])
                out.append("\n" * body.count("\n"))
                copy_from = i
                blocks.append(Block(name, text[brace[0]:i], bline, brace[1]))
                if len(blocks) > MAX_CAFFE_LAYERS:
                    raise error("E859", f"{path}: more than {MAX_CAFFE_LAYERS:,} layers")
                block_start = None
            if depth < 0:
                break
            last_ident = None
        elif c.isalpha() or c == "_":
            j = i
            while j < n and (text[j].isalnum() or text[j] == "_"):
                j += 1
            if depth == 0:
                last_ident = (text[i:j], i, line)
            i = j
        elif c == ":" or c.isspace():
            i += 1
        else:
            i += 1
            last_ident = None
    out.append(text[copy_from:])
    return "".join(out), blocks


def parse_text(text: str, msg: Any, path: str, first_line: int = 1, lenient: bool = False) -> Any:
    """text_format into `msg`; E851 with the file's line (offset by `first_line`)."""
    from google.protobuf import text_format

    try:
        text_format.Parse(text, msg, allow_unknown_field=lenient)
    except text_format.ParseError as exc:
        line = (exc.GetLine() or 1) + first_line - 1 if exc.GetLine() is not None else first_line
        reason = str(exc).split(" : ", 1)[-1]
        reason = reason.split(":", 2)[-1].strip() if reason[:1].isdigit() else reason
        raise DlspecError(Diagnostic(code="E851", message=f"{path}:{line}: {reason}",
                                     hint="see docs/caffe.md for the fields dlspec reads")) from None
    except (ValueError, RecursionError, UnicodeDecodeError) as exc:
        raise error("E851", f"{path}:{first_line}: {type(exc).__name__}: {str(exc)[:200]}") from None
    return msg


@dataclass
class TextNet:
    """A parsed prototxt: the header (a NetParameter without layers), the layers with lines."""

    header: Any
    layers: list[tuple[Any, int, bool]]  # (LayerParameter or V1LayerParameter, line, strictly parsed)
    path: str


def read_prototxt(path: str | Path, strict_types: set[str] | None = None) -> TextNet:
    """Parse a net. Each layer block is parsed on its own, so every line is known; a block whose
    type is in `strict_types` must parse strictly (an unknown field is E851), others may carry
    fields of Caffe forks (they are listed as unsupported layers later)."""
    p = check_file(path, "prototxt", MAX_PROTOTXT_BYTES)
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise error("E851", f"{p}: not a text file (byte {exc.start} is not UTF-8)",
                    hint="a binary .caffemodel goes to --weights") from None
    except OSError as exc:
        raise error("E852", f"cannot read {p}: {exc.strerror}") from None
    if "\x00" in text:
        raise error("E851", f"{p}: not a text file (it contains NUL bytes)", hint="a binary .caffemodel goes to --weights")
    rest, blocks = split_blocks(text, str(p))
    header = parse_text(rest, message("NetParameter"), str(p))
    layers: list[tuple[Any, int, bool]] = []
    for b in blocks:
        kind = "LayerParameter" if b.field == "layer" else "V1LayerParameter"
        body = b.text[1:-1]
        first = b.brace_line
        lenient_msg = parse_text(body, message(kind), str(p), first, lenient=True)
        type_name = layer_type(lenient_msg)
        if strict_types is not None and type_name not in strict_types:
            layers.append((lenient_msg, b.line, False))
            continue
        layers.append((parse_text(body, message(kind), str(p), first), b.line, True))
    return TextNet(header, layers, str(p))


def layer_type(layer: Any) -> str:
    """The type of a layer of either form, in the current spelling (`Convolution`)."""
    if layer.DESCRIPTOR.name == "V1LayerParameter":
        from .schema import ENUMS

        names = {v: k for k, v in ENUMS["V1LayerType"].items()}
        return V1_TYPES.get(names.get(layer.type, "NONE"), names.get(layer.type, "NONE"))
    return layer.type


#: V1 layer type → current type name
V1_TYPES = {
    "ABSVAL": "AbsVal", "ACCURACY": "Accuracy", "ARGMAX": "ArgMax", "BNLL": "BNLL", "CONCAT": "Concat",
    "CONTRASTIVE_LOSS": "ContrastiveLoss", "CONVOLUTION": "Convolution", "DATA": "Data",
    "DECONVOLUTION": "Deconvolution", "DROPOUT": "Dropout", "DUMMY_DATA": "DummyData",
    "EUCLIDEAN_LOSS": "EuclideanLoss", "ELTWISE": "Eltwise", "EXP": "Exp", "FLATTEN": "Flatten",
    "HDF5_DATA": "HDF5Data", "HDF5_OUTPUT": "HDF5Output", "HINGE_LOSS": "HingeLoss", "IM2COL": "Im2col",
    "IMAGE_DATA": "ImageData", "INFOGAIN_LOSS": "InfogainLoss", "INNER_PRODUCT": "InnerProduct", "LRN": "LRN",
    "MEMORY_DATA": "MemoryData", "MULTINOMIAL_LOGISTIC_LOSS": "MultinomialLogisticLoss", "MVN": "MVN",
    "POOLING": "Pooling", "POWER": "Power", "RELU": "ReLU", "SIGMOID": "Sigmoid",
    "SIGMOID_CROSS_ENTROPY_LOSS": "SigmoidCrossEntropyLoss", "SILENCE": "Silence", "SOFTMAX": "Softmax",
    "SOFTMAX_LOSS": "SoftmaxWithLoss", "SPLIT": "Split", "SLICE": "Slice", "TANH": "TanH",
    "WINDOW_DATA": "WindowData", "THRESHOLD": "Threshold", "NONE": "",
}


def upgrade_v1(layer: Any) -> Any:
    """A V1LayerParameter as a LayerParameter (blobs_lr/weight_decay become ParamSpecs)."""
    if layer.DESCRIPTOR.name == "LayerParameter":
        return layer
    new = message("LayerParameter")
    new.name = layer.name
    new.type = layer_type(layer)
    new.bottom.extend(layer.bottom)
    new.top.extend(layer.top)
    new.loss_weight.extend(layer.loss_weight)
    for src, dst in ((layer.include, new.include), (layer.exclude, new.exclude)):
        for r in src:
            dst.add().CopyFrom(r)
    for b in layer.blobs:
        new.blobs.add().CopyFrom(b)
    n = max(len(layer.blobs_lr), len(layer.weight_decay), len(layer.param))
    for i in range(n):
        ps = new.param.add()
        if i < len(layer.param):
            ps.name = layer.param[i]
        if i < len(layer.blobs_lr):
            ps.lr_mult = layer.blobs_lr[i]
        if i < len(layer.weight_decay):
            ps.decay_mult = layer.weight_decay[i]
    for fd, value in layer.ListFields():
        if fd.name.endswith("_param") and fd.message_type is not None:
            getattr(new, fd.name).CopyFrom(value)
    return new


def read_caffemodel(path: str | Path) -> Any:
    """A binary NetParameter; E852 for a file that is not one (truncated, text, random bytes)."""
    from google.protobuf.message import DecodeError

    p = check_file(path, "caffemodel", MAX_CAFFEMODEL_BYTES)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise error("E852", f"cannot read {p}: {exc.strerror}") from None
    net = message("NetParameter")
    try:
        net.ParseFromString(data)
    except (DecodeError, RecursionError, ValueError) as exc:
        raise error("E852", f"{p} is not a caffemodel (a binary NetParameter): {str(exc)[:200] or 'it does not decode'}",
                    hint="a truncated download, or a text prototxt given as --weights") from None
    if len(net.layer) + len(net.layers) > MAX_CAFFE_LAYERS:
        raise error("E859", f"{p}: {len(net.layer) + len(net.layers):,} layers; a caffemodel may have at most "
                            f"{MAX_CAFFE_LAYERS:,}")
    if not net.layer and not net.layers:
        raise error("E852", f"{p} holds no layers: it is not a caffemodel",
                    hint="a .caffemodel is the binary file Caffe writes with the trained blobs")
    return net


def blob_array(blob: Any, where: str) -> Any:
    """A BlobProto as a float32 numpy array of its shape (legacy num/channels/height/width too)."""
    import numpy as np

    if blob.HasField("shape"):
        shape = [int(d) for d in blob.shape.dim]
    elif blob.num or blob.channels or blob.height or blob.width:
        shape = [blob.num or 1, blob.channels or 1, blob.height or 1, blob.width or 1]
    else:
        shape = [len(blob.data) or len(blob.double_data)]
    if any(d < 0 or d > MAX_CAFFE_DIM for d in shape):
        raise error("E852", f"{where}: a blob has the shape {shape}")
    count = 1
    for d in shape:
        count *= d
    if count > MAX_BLOB_ELEMENTS:
        raise error("E859", f"{where}: a blob of {count:,} elements; at most {MAX_BLOB_ELEMENTS:,}")
    data = blob.data if len(blob.data) else blob.double_data
    if len(data) != count:
        raise error("E852", f"{where}: a blob of shape {shape} holds {len(data):,} values, not {count:,}",
                    hint="the caffemodel is damaged or truncated")
    arr = np.asarray(data, dtype=np.float32).reshape(shape)
    if not np.isfinite(arr).all():
        raise error("E852", f"{where}: a blob holds NaN or infinite values")
    return arr


def read_solver(path: str | Path) -> Any:
    p = check_file(path, "solver prototxt", MAX_PROTOTXT_BYTES)
    try:
        text = p.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError):
        raise error("E857", f"{p}: not a readable text file") from None
    try:
        return parse_text(text, message("SolverParameter"), str(p))
    except DlspecError as exc:
        d = exc.diagnostics[0]
        raise DlspecError(Diagnostic(code="E857", message=d.message, hint="see docs/caffe.md, the solver table")) from None
