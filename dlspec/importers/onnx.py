"""ONNX → IR layers: the converter behind `dlspec import`.

`import_model(path)` reads an ONNX file and returns an `Imported` graph: the model's inputs,
a list of IR layers (op, attributes, inputs, outputs, parameters in the canonical PyTorch layout)
and its outputs. `spec_writer.write_spec` turns that into `.dls` text.

How the conversion works:

* Constants — initializers, `Constant`, and any node whose inputs are all constant — are folded
  with ONNX's reference evaluator. Shape arithmetic that depends on a symbolic dimension
  (`Shape → Gather → Unsqueeze → Concat → Reshape`, as the PyTorch exporter writes a flatten) is
  evaluated over dlspec's symbolic dimensions; `ConstantOfShape` of such a shape is a known fill
  (the zero initial states of an exported LSTM).
* A run-time tensor is an IR value seen through a lazy view: `permute(reshape(value, view),
  perm)`. `Transpose`, `Reshape`, `Squeeze` and `Unsqueeze` compose into the view; a layer that
  needs the tensor materializes it with `reshape`/`permute` layers, and only then. So the
  time-major `[T, dirs, N, H]` output of an ONNX LSTM, transposed and reshaped back to
  `[T, N, dirs·H]` and fed to the next LSTM, costs no layer at all.
* Every ONNX op type that no IR op can express is collected first and reported in one error
  (E741) listing each type with its node names.
"""

from __future__ import annotations

import ast
import math
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import AttrError, Diagnostic, DlspecError, ShapeError
from ..ir.check import layer_name_problem
from ..ir.dims import Dim, Sym
from ..ir.ops import REGISTRY, get_op
from ..ir.ops.base import broadcast, permute_gates
from ..ir.types import TensorType
from ..limits import MAX_ONNX_CONST_ELEMENTS, MAX_ONNX_DIM, MAX_ONNX_FOLD_ELEMENTS, MAX_ONNX_NODES

FLOAT32_MAX = float(np.finfo(np.float32).max)

ONNX_DTYPES = {1: "float32", 10: "float16", 11: "float64", 16: "bfloat16", 6: "int32", 7: "int64", 9: "bool", 2: "uint8",
               3: "int8"}
SELU_ALPHA, SELU_GAMMA = 1.67326319217681884765625, 1.05070102214813232421875

# ---- values -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Const:
    """A tensor known at import time."""

    array: np.ndarray


@dataclass(frozen=True)
class SymArr:
    """An int64 scalar or vector whose entries may be symbolic dimensions (a shape being computed)."""

    items: tuple[Dim, ...]
    scalar: bool = False


@dataclass(frozen=True)
class Fill:
    """A tensor of one repeated value whose shape depends on a symbolic dimension."""

    shape: tuple[Dim, ...]
    value: float


@dataclass(frozen=True)
class Dyn:
    """A run-time tensor: `merge(permute(reshape(value, view), perm), groups)` of the IR value `value`.

    `view` keeps axis 0 of the value (the IR's reshape keeps the batch axis); None means no
    reshape, and `perm` None means no permutation. `groups` says, for each axis of the tensor,
    how many consecutive axes of the permuted view it merges (0 for an axis of size 1 that merges
    none); None means one each. The merge is how an exported multi-head attention's
    `[T, N·heads, d]`, the batch axis merged with the heads, is held until a reshape splits it
    again — a tensor the IR itself, whose reshape keeps the batch axis, cannot hold."""

    value: str
    view: tuple[Dim, ...] | None = None
    perm: tuple[int, ...] | None = None
    groups: tuple[int, ...] | None = None


Val = Const | SymArr | Fill | Dyn


@dataclass
class Layer:
    """One IR layer to write: `outputs = op(inputs, **attrs)`, named `name` when it has parameters."""

    op: str
    attrs: dict[str, Any]
    inputs: list[str]
    outputs: list[str]
    name: str | None = None
    params: dict[str, np.ndarray] = field(default_factory=dict)
    origin: str = ""


@dataclass
class ModelInput:
    value: str
    dtype: str
    shape: tuple[Dim, ...]


@dataclass
class Imported:
    """An ONNX model converted to IR layers, ready for the spec writer."""

    name: str
    source: str
    producer: str
    opset: int
    inputs: list[ModelInput]
    outputs: list[tuple[str, str]]  # (output name, IR value)
    layers: list[Layer]
    types: dict[str, TensorType]
    hints: dict[str, str]  # IR value → a readable name taken from the ONNX graph
    symbols: list[str]

    def weights(self) -> dict[str, np.ndarray]:
        """Canonical weights keyed by parameter path (`<layer name>.<parameter>`)."""
        return {f"{layer.name}.{k}": v for layer in self.layers for k, v in layer.params.items()}


class Unexpressible(Exception):
    """A supported op used in a way the IR cannot express (becomes E742 with the node's name)."""


def _error(code: str, message: str, hint: str | None = None) -> DlspecError:
    return DlspecError(Diagnostic(code=code, message=message, hint=hint))


# ---- names --------------------------------------------------------------------------------------

KEYWORDS = {
    "import", "from", "block", "model", "train", "input", "output", "freeze", "replace", "then", "if", "else",
    "or", "and", "not", "as", "true", "false", "none",
}
# names a spec reads as something other than a variable: built-in functions, enum words we write
_RESERVED = KEYWORDS | {
    "min", "max", "abs", "int", "float", "round", "ceil", "floor", "len", "same", "valid", "sequence", "last",
    "constant", "reflect", "replicate", "nearest", "bilinear", "linear", "relu", "tanh", "gelu", "batch",
    "float16", "bfloat16", "float32", "float64", "int32", "int64", "int8", "uint8", "bool", "weights",
}
_OP_TYPE_PART = re.compile(r"([A-Z][A-Za-z]*)(_\d+)?")
_ONNX_OPS: set[str] = set()


def _is_op_type(part: str) -> bool:
    """'Relu_1', 'Conv': the op-type part of a PyTorch-exported node name."""
    if not _ONNX_OPS:
        from onnx import defs

        _ONNX_OPS.update(s.name for s in defs.get_all_schemas())
    m = _OP_TYPE_PART.fullmatch(part)
    return bool(m) and m.group(1) in _ONNX_OPS


def clean_name(raw: str) -> str:
    """A readable identifier stem from an ONNX node or value name ('' when nothing is left).

    '/layer1/layer1.0/conv1/Conv_output_0' → 'layer1_0_conv1'; 'fc.weight' → 'fc_weight'."""
    s = re.sub(r"_output_\d+$", "", raw)
    if s.startswith("onnx::"):
        return ""
    parts = [p for p in re.split(r"[/:]+", s) if p]
    if parts and _is_op_type(parts[-1]):
        parts = parts[:-1]
    parts = [p for i, p in enumerate(parts) if not (i + 1 < len(parts) and parts[i + 1].startswith(p + "."))]
    s = re.sub(r"\W+", "_", "_".join(parts)).strip("_")
    s = re.sub(r"_+", "_", s)
    if s and s[0].isdigit():
        s = "n" + s
    return s


def _auto_name_clash(name: str) -> bool:
    """True when `name` looks like a name the front end gives an unnamed layer (`relu`, `add_2`)."""
    m = re.fullmatch(r"(.+?)(_\d+)?", name)
    # the importer names every layer with parameters, so only the others get automatic names
    return bool(m) and m.group(1) in REGISTRY and not REGISTRY[m.group(1)].has_params


class Names:
    """Unique identifiers: valid, not keywords. Layer names avoid automatic layer names; variable and
    symbol names avoid op names and enum words (which a bare name in a spec could mean)."""

    def __init__(self, taken: set[str] | None = None, layers: bool = False):
        self.used: set[str] = set(taken or ())
        self.layers = layers

    def take(self, stem: str, fallback: str) -> str:
        s = stem or fallback
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", s):
            s = re.sub(r"\W+", "_", s).strip("_") or fallback
            if s[0].isdigit():
                s = "n" + s
        if self.layers:
            if s in KEYWORDS or _auto_name_clash(s) or layer_name_problem(s):
                s += "_layer"
        elif s in _RESERVED or s in REGISTRY:
            s += "_out"
        base, i = s, 1
        while s in self.used:
            s = f"{base}_{i}"
            i += 1
        self.used.add(s)
        return s


#: the metadata key under which torch.onnx.export(dynamo=True) records the module scopes of a node
NAME_SCOPES = "pkg.torch.onnx.name_scopes"
_MODULE_PATH = re.compile(r"[A-Za-z_]\w*(\.\w+)*")
#: how the dynamo exporter names the values it makes up (the FX graph's values keep their names)
_MADE_UP_NAME = re.compile(r"val_\d+")


def module_path(node) -> str | None:
    """The PyTorch module a node written by the dynamo exporter comes from (`encoder.layers.0.linear1`),
    or None: its name_scopes metadata lists the module paths from the root (`''`) down, then the
    FX node's own name. The TorchScript exporter puts the path in the node's name instead."""
    text = next((p.value for p in node.metadata_props if p.key == NAME_SCOPES), None)
    if not isinstance(text, str) or len(text) > 4096:
        return None
    try:
        scopes = ast.literal_eval(text)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return None
    if not isinstance(scopes, list) or len(scopes) < 2 or not all(isinstance(s, str) for s in scopes):
        return None
    return scopes[-2] if _MODULE_PATH.fullmatch(scopes[-2]) else None


def model_name_from(stem: str) -> str:
    words = [w for w in re.split(r"[^A-Za-z0-9]+", stem) if w]
    name = "".join(w[:1].upper() + w[1:] for w in words) or "Imported"
    if name[0].isdigit():
        name = "Model" + name
    return name


# ---- helpers ------------------------------------------------------------------------------------


def _prod(dims) -> Dim:
    n: Dim = 1
    for d in dims:
        n = n * d
    return n


def _static(d: Dim) -> bool:
    return isinstance(d, int)


def _quotient(x: Dim, y: Dim) -> Dim | None:
    """x / y when y divides x exactly as polynomials over the symbols (so for every value of
    them) and the quotient is not 1, else None: `4 * n / n` is 4, `n / 4` is None."""
    if x == y or y == 0:
        return None
    if _static(y):
        if _static(x):
            return x // y if x % y == 0 and x // y > 1 else None
        q = x // y
        return q if not isinstance(q, int) and q * y == x else None
    if _static(x) or len(x.terms) != 1 or len(y.terms) != 1:
        return None
    (mx, cx), (my, cy) = x.terms[0], y.terms[0]
    rest = list(mx)
    for atom in my:
        if atom not in rest:
            return None
        rest.remove(atom)
    if cx % cy or any(not isinstance(atom, str) for atom in rest):
        return None
    q: Dim = cx // cy
    for atom in rest:
        q = q * Sym.symbol(atom)
    return q if q != 1 and q * y == x else None


def _merged(shape: tuple[Dim, ...], groups: tuple[int, ...]) -> tuple[Dim, ...]:
    """`shape` with each run of `groups[i]` consecutive axes merged into one."""
    out, i = [], 0
    for g in groups:
        out.append(_prod(shape[i:i + g]))
        i += g
    return tuple(out)


def _with_groups(d: Dyn, groups: tuple[int, ...] | None) -> Dyn:
    ones = groups is None or all(g == 1 for g in groups)
    return Dyn(d.value, d.view, d.perm, None if ones else tuple(groups))


def _as_int_list(v: Val | None, what: str) -> list[int]:
    if isinstance(v, Const):
        return [int(x) for x in np.asarray(v.array).reshape(-1)]
    if isinstance(v, SymArr) and all(_static(d) for d in v.items):
        return [int(d) for d in v.items]
    raise Unexpressible(f"{what} must be known at import time")


def _scalar(v: Val | None, what: str) -> float:
    if isinstance(v, Const) and v.array.size == 1:
        return float(v.array.reshape(-1)[0])
    raise Unexpressible(f"{what} must be a constant scalar")


def _one(v: int | tuple | list) -> int | list:
    """A per-axis attribute as the IR writes it: one int when every axis agrees."""
    t = list(v)
    return t[0] if t and all(x == t[0] for x in t) else t


def _f32(x: float) -> float:
    """A float attribute rounded to the float32 the ONNX file stores, in its shortest spelling."""
    return float(str(np.float32(x)))


def _perm_identity(p) -> bool:
    return list(p) == list(range(len(p)))


# ---- the converter ------------------------------------------------------------------------------

# op types converted when an input is a run-time tensor; anything else is E741
DYNAMIC_OPS = {
    "Conv", "ConvTranspose", "Gemm", "MatMul", "BatchNormalization", "Relu", "LeakyRelu", "Sigmoid", "Tanh",
    "Elu", "Selu", "Softplus", "Softsign", "Mish", "HardSigmoid", "HardSwish", "Gelu", "Clip", "Softmax", "LogSoftmax",
    "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "ReduceMean", "ReduceMax", "Concat", "Sum",
    "Add", "Sub", "Mul", "Div", "Neg", "Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "Dropout",
    "Identity", "Pad", "LSTM", "GRU", "RNN", "Gather", "Slice", "Split", "Shape", "Cast",
    "LayerNormalization", "LRN", "Exp", "Log", "Sqrt", "Abs", "Reciprocal", "Pow", "Max", "Min", "PRelu", "InstanceNormalization", "Resize", "Upsample", "ReduceSum", "Tile", "ArgMax",
    "Equal", "Less", "LessOrEqual", "Greater", "GreaterOrEqual", "Where", "TopK", "Not", "And", "Or", "Xor",
}
# op types computed on shapes with symbolic entries (SymArr / Fill inputs)
SHAPE_OPS = {
    "Shape", "Gather", "Unsqueeze", "Squeeze", "Concat", "Cast", "Slice", "Add", "Sub", "Mul", "Div",
    "ConstantOfShape", "Expand", "Identity", "Reshape", "Transpose",
    # folded when their operands turn out constant (a head size read from a static axis: the
    # 1/√d scale of an exported attention); on a symbolic entry they are E742
    "Sqrt", "Mod", "Reciprocal", "Floor", "Ceil", "Neg", "Abs", "Pow", "Max", "Min", "Range", "Equal", "Less",
    "Greater", "Not", "And", "Or", "Where", "Trilu", "LogicalNot",
}
_RANDOM_OPS = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial", "Bernoulli"}


#: the largest ONNX file read (protobuf's own limit for one message)
MAX_ONNX_BYTES = 2**31 - 1
#: op types that hold sub-graphs: refused before anything is evaluated
CONTROL_FLOW = {"Loop", "If", "Scan", "SequenceMap"}


def check_model_path(path: str | Path, what: str = "ONNX model") -> Path:
    """The path of a file that can be read, or E740 saying why not — a NUL in the path, a path too
    long, a symbolic link loop, a device or FIFO (refused before it is opened, so nothing
    blocks), a file larger than protobuf reads. The message names the file, never its contents."""
    from ..source import UnreadableSource, check_path

    shown = _shown_path(path)
    try:
        p = Path(check_path(path))
    except UnreadableSource as exc:
        raise _error("E740", f"cannot read {shown}: {exc.strerror}") from None
    try:
        st = p.stat()
    except FileNotFoundError:
        raise _error("E740", f"no such file: {shown}") from None
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise _error("E740", f"cannot read {shown}: {reason}") from None
    if stat.S_ISDIR(st.st_mode):
        raise _error("E740", f"{shown} is a folder, not an {what}")
    if not stat.S_ISREG(st.st_mode):
        raise _error("E740", f"cannot read {shown}: it is not a regular file (a device, FIFO or socket)")
    if st.st_size > MAX_ONNX_BYTES:
        raise _error("E740", f"{shown} is {st.st_size:,} bytes; an ONNX model holds at most {MAX_ONNX_BYTES:,}")
    return p


def check_output_path(path: str | Path) -> None:
    """E740 for an output path no file can have (a NUL, too long a name, a link loop); whether it
    exists can then be asked without an exception."""
    from ..source import UnreadableSource, check_path

    try:
        Path(check_path(path)).exists()
    except UnreadableSource as exc:
        raise _error("E740", f"cannot write {_shown_path(path)}: {exc.strerror}") from None
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise _error("E740", f"cannot write {_shown_path(path)}: {reason}") from None


def _shown_path(path: str | Path) -> str:
    r = str(path)
    r = r.encode("unicode_escape", "backslashreplace").decode("ascii") if not r.isprintable() else r
    return r if len(r) <= 200 else r[:120] + f"…({len(r):,} characters)"


def import_model(path: str | Path, name: str | None = None) -> Imported:
    """Read and convert an ONNX file. Raises DlspecError (E740–E746) on anything it cannot import."""
    import onnx

    path = check_model_path(path)
    try:
        model = onnx.load(str(path))
    except FileNotFoundError:
        raise _error("E740", f"no such file: {_shown_path(path)}") from None
    except IsADirectoryError:
        raise _error("E740", f"{_shown_path(path)} is a folder, not an ONNX model") from None
    except Exception as exc:  # protobuf raises DecodeError and friends for a file that is not ONNX
        # the exception's text can quote the file: name the file and the kind of failure only
        raise _error("E740", f"{_shown_path(path)} is not a readable ONNX model ({type(exc).__name__})",
                     hint="give a .onnx file written by an ONNX exporter") from None
    if not model.HasField("graph") or not model.graph.node:
        raise _error("E740", f"{_shown_path(path)} holds no ONNX graph")
    _screen(model, path)
    return Converter(model, path, name or model_name_from(path.stem)).run()


def _tensor_problem(t) -> str | None:
    """Why a TensorProto is refused before it is read (negative or huge dims, too many elements,
    data that does not match its dims), or None."""
    dims = list(t.dims)
    if any(d < 0 for d in dims):
        return f"has a negative dimension {dims}"
    if any(d > MAX_ONNX_DIM for d in dims):
        return f"has a dimension above {MAX_ONNX_DIM:,} {dims}"
    n = math.prod(dims)
    if n > MAX_ONNX_CONST_ELEMENTS:
        return f"holds {n:,} elements; a constant holds at most {MAX_ONNX_CONST_ELEMENTS:,}"
    return None


def _screen(model, path: Path) -> None:
    """What is refused before anything is evaluated: too many nodes, control flow (a `Loop` with a
    trip count of 10^12 must not run), constants beyond the limits (E746)."""
    graph = model.graph
    # protobuf hands back bytes for a string field that is not UTF-8; every name downstream is text
    names = [graph.name]
    for node in graph.node:
        names += [node.op_type, node.domain, node.name, *node.input, *node.output, *(a.name for a in node.attribute)]
    for vi in (*graph.input, *graph.output, *graph.value_info):
        names.append(vi.name)
        if vi.type.HasField("tensor_type"):
            names += [d.dim_param for d in vi.type.tensor_type.shape.dim]
    names += [t.name for t in graph.initializer]
    names += [o.domain for o in model.opset_import]
    if any(not isinstance(n, str) for n in names):
        raise _error("E740", f"{_shown_path(path)} holds names that are not UTF-8 text",
                     hint="give a .onnx file written by an ONNX exporter")
    if len(graph.node) > MAX_ONNX_NODES:
        raise _error("E746", f"{_shown_path(path)} has {len(graph.node):,} nodes; at most {MAX_ONNX_NODES:,} import")
    flow: dict[str, list[str]] = {}
    for node in graph.node:
        graphs = any(a.type in (a.GRAPH, a.GRAPHS) for a in node.attribute)
        if node.op_type in CONTROL_FLOW or graphs:
            flow.setdefault(node.op_type, []).append(_node_label(node))
    if flow:
        listing = "; ".join(f"{op} ({', '.join(nodes[:6])})" for op, nodes in sorted(flow.items()))
        raise _error("E746", f"{_shown_path(path)} uses control flow, which dlspec does not import: {listing}",
                     hint="export the model traced (without Loop/If/Scan); nothing was evaluated")
    for init in graph.initializer:
        problem = _tensor_problem(init)
        if problem:
            raise _error("E746", f"initializer `{init.name}` {problem}")
    for node in graph.node:
        for a in node.attribute:
            if a.type == a.TENSOR:
                problem = _tensor_problem(a.t)
                if problem:
                    raise _error("E746", f"ONNX node {_node_label(node)}: attribute `{a.name}` {problem}")
            elif a.type == a.TENSORS:
                for t in a.tensors:
                    problem = _tensor_problem(t)
                    if problem:
                        raise _error("E746", f"ONNX node {_node_label(node)}: attribute `{a.name}` {problem}")


class Converter:
    def __init__(self, model, path: Path, name: str):
        self.model = model
        self.graph = model.graph
        self.path = path
        self.name = name
        self.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)
        self.env: dict[str, Val] = {}
        self.types: dict[str, TensorType] = {}
        self.layers: list[Layer] = []
        self.producer_layer: dict[str, Layer] = {}
        self.hints: dict[str, str] = {}
        self.layer_names = Names(layers=True)
        self._ids = 0
        self._materialized: dict[tuple, str] = {}
        self.uses: dict[str, int] = {}
        for n in self.graph.node:
            for i in n.input:
                if i:
                    self.uses[i] = self.uses.get(i, 0) + 1
        self.graph_outputs = {o.name for o in self.graph.output}
        for o in self.graph_outputs:
            self.uses[o] = self.uses.get(o, 0) + 1
        self.producers = {o: n for n in self.graph.node for o in n.output if o}
        self.fused: dict[int, tuple[str, str]] = {}  # node index → ("gelu", input) for the last node of a pattern
        self.skipped: set[int] = set()
        # a layer's origin is the name of the node it comes from; a node of the dynamo exporter is
        # named after its op alone, and its module scope is written as TorchScript's names are
        # (`/encoder/layers/0/self_attn/MatMul`), which is what blocks read scopes from
        self.origins = {n.name: f"/{path.replace('.', '/')}/{n.op_type}" for n in self.graph.node
                        if n.name and (path := module_path(n))}

    # ---- driver ---------------------------------------------------------------------------------
    def run(self) -> Imported:
        from onnx import numpy_helper

        for init in self.graph.initializer:
            try:
                self.env[init.name] = Const(numpy_helper.to_array(init))
            except Exception as exc:  # data that does not match its dims or type, external data refused
                raise _error("E740", f"initializer `{init.name}` cannot be read ({type(exc).__name__})",
                             hint="give a .onnx file written by an ONNX exporter") from None
        inputs = self._model_inputs = self._inputs()
        self._find_gelu()
        self._check_supported()
        for idx, node in enumerate(self.graph.node):
            if idx in self.skipped:
                continue
            try:
                self._convert(idx, node)
            except Unexpressible as exc:
                raise _error("E742", f"ONNX node {_node_label(node)}: {exc}",
                             hint="the dlspec IR has no way to write this; see docs/import.md for what imports") from None
            except KeyError as exc:  # a required attribute or input the node lacks
                raise _error("E742", f"ONNX node {_node_label(node)} is malformed: it lacks {exc}",
                             hint="give a .onnx file written by an ONNX exporter (onnx.checker.check_model)") from None
            except (IndexError, ValueError, TypeError, ArithmeticError, AttributeError) as exc:
                # values of the file that no exporter writes (wrong arity, a shape that does not
                # fit its data): the node is named, the file's contents are not quoted
                raise _error("E742", f"ONNX node {_node_label(node)} is malformed ({type(exc).__name__})",
                             hint="give a .onnx file written by an ONNX exporter (onnx.checker.check_model)") from None
        outputs = []
        for o in self.graph.output:
            v = self.env.get(o.name)
            if not isinstance(v, Dyn):
                raise _error("E742", f"model output `{o.name}` is a constant or a shape, not a computed tensor",
                             hint="dlspec models compute every output from their inputs")
            try:
                outputs.append((o.name, self.materialize(v, f"output {o.name}")))
            except Unexpressible as exc:
                raise _error("E742", f"model output `{o.name}`: {exc}") from None
        producer = " ".join(x for x in (self.model.producer_name, self.model.producer_version) if x)
        return Imported(self.name, str(self.path), producer, self.opset, inputs, outputs, self.layers, self.types,
                        self.hints, self._symbols)

    def _inputs(self) -> list[ModelInput]:
        initialized = {i.name for i in self.graph.initializer}
        names = Names()
        self._symbols: list[str] = []
        sym_names: dict[str, str] = {}
        graph_inputs = [i for i in self.graph.input if i.name not in initialized]
        if not graph_inputs:
            raise _error("E745", "the ONNX model has no inputs (every graph input is an initializer)")
        for gi in graph_inputs:
            names.used.add(gi.name)
        out = []
        for gi in graph_inputs:
            tt = gi.type
            if not tt.HasField("tensor_type"):
                raise _error("E745", f"input `{gi.name}` is not a tensor (sequences and maps do not import)")
            dtype = ONNX_DTYPES.get(tt.tensor_type.elem_type)
            if dtype is None:
                raise _error("E745", f"input `{gi.name}` has ONNX element type {tt.tensor_type.elem_type}, "
                                     f"which dlspec does not have", hint="dlspec inputs are float, int32/int64 or bool")
            if not tt.tensor_type.HasField("shape"):
                raise _error("E745", f"input `{gi.name}` has no shape in the ONNX file",
                             hint="export with a fixed rank (torch.onnx.export with example inputs does)")
            dims: list[Dim] = []
            for axis, d in enumerate(tt.tensor_type.shape.dim):
                if d.HasField("dim_value") and d.dim_value < 0:
                    raise _error("E745", f"input `{gi.name}` has the negative dimension {d.dim_value} on axis {axis}")
                if d.HasField("dim_value") and d.dim_value > MAX_ONNX_DIM:
                    raise _error("E746", f"input `{gi.name}` has the dimension {d.dim_value:,} on axis {axis}; "
                                         f"at most {MAX_ONNX_DIM:,}")
                if d.HasField("dim_value") and d.dim_value == 0 and not d.dim_param:
                    raise _error("E745", f"input `{gi.name}` has an empty axis (size 0) on axis {axis}",
                                 hint="dlspec models take tensors with at least one element on every axis")
                if d.HasField("dim_value") and d.dim_value > 0:
                    dims.append(int(d.dim_value))
                    continue
                key = d.dim_param if d.HasField("dim_param") and d.dim_param else f"{gi.name}:{axis}"
                if key not in sym_names:
                    stem = clean_name(d.dim_param) if d.dim_param else ("batch" if axis == 0 else f"{gi.name}_d{axis}")
                    sym = names.take(stem if stem != "batch" else "batch_", f"dim{axis}")
                    if stem == "batch" and "batch" not in names.used and "batch" not in {g.name for g in graph_inputs}:
                        names.used.discard(sym)
                        sym = "batch"
                        names.used.add(sym)
                    sym_names[key] = sym
                    self._symbols.append(sym)
                dims.append(Sym.symbol(sym_names[key]))
            vid = self.new_value()
            self.types[vid] = TensorType(dtype=dtype, shape=tuple(dims))
            self.hints[vid] = gi.name
            self.env[gi.name] = Dyn(vid)
            out.append(ModelInput(vid, dtype, tuple(dims)))
        return out

    def _check_supported(self) -> None:
        """One E741 listing every op type that cannot be converted, with its node names."""
        kind: dict[str, str] = {name: "const" for name in self.env if isinstance(self.env[name], Const)}
        for gi in self.graph.input:
            if gi.name not in kind:
                kind[gi.name] = "dyn"
        bad: dict[str, list[str]] = {}
        for idx, node in enumerate(self.graph.node):
            in_kinds = {kind.get(i, "dyn") for i in node.input if i}
            if idx in self.skipped or idx in self.fused:
                out_kind = "dyn"
            elif node.domain not in ("", "ai.onnx"):
                bad.setdefault(f"{node.domain}.{node.op_type}", []).append(_node_label(node))
                out_kind = "dyn"
            elif node.op_type == "Shape":
                out_kind = "shape"
            elif "dyn" in in_kinds:
                if node.op_type not in DYNAMIC_OPS:
                    bad.setdefault(node.op_type, []).append(_node_label(node))
                out_kind = "dyn"
            elif "shape" in in_kinds:
                if node.op_type not in SHAPE_OPS:
                    bad.setdefault(node.op_type, []).append(_node_label(node))
                out_kind = "shape"
            elif node.op_type in _RANDOM_OPS:
                bad.setdefault(node.op_type, []).append(_node_label(node))
                out_kind = "dyn"
            else:
                out_kind = "const"
            for o in node.output:
                kind[o] = out_kind
        if bad:
            listing = "; ".join(f"{op} ({', '.join(nodes[:6])}{f' and {len(nodes) - 6} more' if len(nodes) > 6 else ''})"
                                for op, nodes in sorted(bad.items()))
            raise _error("E741", f"{self.path} uses {len(bad)} op type{'s' if len(bad) != 1 else ''} that dlspec "
                                 f"cannot express: {listing}",
                         hint="docs/import.md lists the ONNX ops that import; nothing was written")

    # ---- values ---------------------------------------------------------------------------------
    def new_value(self) -> str:
        self._ids += 1
        return f"v{self._ids}"

    def shape(self, d: Dyn) -> tuple[Dim, ...]:
        base = d.view if d.view is not None else self.types[d.value].shape
        fine = tuple(base[p] for p in d.perm) if d.perm is not None else tuple(base)
        return fine if d.groups is None else _merged(fine, d.groups)

    def dtype(self, d: Dyn) -> str:
        return self.types[d.value].dtype

    def emit(self, op: str, attrs: dict[str, Any], inputs: list[str], origin: str = "", name_stem: str | None = None,
             params: dict[str, np.ndarray] | None = None) -> list[str]:
        """Append one IR layer after checking it with the op's own attribute and shape rules."""
        origin = self.origins.get(origin, origin)
        opdef = get_op(op)
        try:
            a = opdef.attrs_from_dict(attrs)
            opdef.validate_attrs(a)
            ins = [self.types[v] for v in inputs]
            opdef.check_inputs(a, ins)
            outs = opdef.infer(a, ins)
        except (AttrError, ShapeError) as exc:
            raise Unexpressible(f"as {op}: {exc.message}") from None
        name = None
        if params:
            name = self.layer_names.take(name_stem or "", op)
            want = opdef.params(a, ins) | opdef.buffers(a, ins)
            for k, shape in want.items():
                arr = params.get(k)
                if arr is None or tuple(arr.shape) != tuple(int(s) for s in shape):
                    got = None if arr is None else list(arr.shape)
                    raise Unexpressible(f"as {op}: parameter {k} is {got}, expected {[int(s) for s in shape]}")
        ids = [self.new_value() for _ in outs]
        for vid, t in zip(ids, outs):
            self.types[vid] = t
        # copies: arrays read from the ONNX file are read-only views
        layer = Layer(op, attrs, list(inputs), ids, name, {k: np.array(v, dtype=np.float32, order="C")
                                                           for k, v in (params or {}).items()}, origin)
        self.layers.append(layer)
        for vid in ids:
            self.producer_layer[vid] = layer
        return ids

    def materialize(self, d: Dyn, origin: str = "") -> str:
        """The IR value holding the tensor `d` in its ONNX layout (emitting reshape/permute if needed)."""
        if d.view is None and d.perm is None and d.groups is None:
            return d.value
        key = (d.value, d.view, d.perm, d.groups)
        if key in self._materialized:
            return self._materialized[key]
        if d.groups is not None:
            v = self.materialize(_with_groups(d, None), origin)
            cur, target = self.types[v].shape, self.shape(d)
            if tuple(cur) != tuple(target):
                if cur[0] != target[0]:
                    raise Unexpressible(f"reshaping [{', '.join(map(str, cur))}] to [{', '.join(map(str, target))}] "
                                        f"changes axis 0; dlspec's reshape keeps the batch axis")
                v = self._emit_reshape(v, target, origin)
            self._materialized[key] = v
            return v
        v = d.value
        base = self.types[v].shape
        if d.view is not None and tuple(d.view) != tuple(base):
            v = self._emit_reshape(v, d.view, origin)
        if d.perm is not None:
            v = self.emit("permute", {"dims": list(d.perm)}, [v], origin)[0]
        self._materialized[key] = v
        return v

    def _emit_reshape(self, v: str, target: tuple[Dim, ...], origin: str) -> str:
        base = self.types[v].shape
        if len(target) == 2 and len(base) > 2 and target[1] == _prod(base[1:]):
            return self.emit("flatten", {}, [v], origin)[0]
        rest = list(target[1:])
        symbolic = [i for i, d in enumerate(rest) if not _static(d)]
        if len(symbolic) > 1:
            raise Unexpressible(f"reshape to [{', '.join(map(str, target))}] has more than one symbolic axis")
        shape = [-1 if i in symbolic else int(d) for i, d in enumerate(rest)]
        return self.emit("reshape", {"shape": shape}, [v], origin)[0]

    def permute(self, d: Dyn, q) -> Dyn:
        if d.groups is not None:
            starts = [sum(d.groups[:g]) for g in range(len(d.groups))]
            fine = [k for g in q for k in range(starts[g], starts[g] + d.groups[g])]
            return _with_groups(self.permute(_with_groups(d, None), fine), tuple(d.groups[g] for g in q))
        r = len(q)
        p = d.perm if d.perm is not None else tuple(range(r))
        new = tuple(p[i] for i in q)
        return Dyn(d.value, d.view, None if _perm_identity(new) else new)

    def reshape(self, d: Dyn, target: tuple[Dim, ...], origin: str) -> Dyn:
        shape = tuple(self.shape(d))
        if shape == tuple(target):
            return d
        if _prod(shape) != _prod(target) and not (_static(_prod(shape)) and _static(_prod(target))):
            raise Unexpressible(
                f"reshaping [{', '.join(map(str, shape))}] to [{', '.join(map(str, target))}]: {_prod(shape)} elements "
                f"against {_prod(target)}, which agree only for some values of the symbolic sizes (the exporter wrote "
                f"a size it traced, as torch's nn.MultiheadAttention does with the sequence length, and the ONNX file "
                f"runs only at that size); export that axis with a fixed size")
        # a symbolic axis merged with others stays a view: once an IR value holds the merge, no
        # reshape can split it again where it reaches axis 0 (the heads of attention, [N·H, T, d])
        regrouped = self._regroup(d, tuple(target))
        if regrouped is not None and self._merges_symbolic(regrouped):
            return regrouped
        lazy = self._lazy_reshape(d, tuple(target)) if d.groups is None else None
        if lazy is None:
            lazy = regrouped
        if lazy is not None:
            return lazy
        v = self.materialize(d, origin)
        cur = self.types[v].shape
        if tuple(cur) == tuple(target):
            return Dyn(v)
        if len(target) >= 1 and len(cur) >= 1 and target[0] == cur[0]:
            return Dyn(self._emit_reshape(v, tuple(target), origin))
        raise Unexpressible(f"reshaping [{', '.join(map(str, cur))}] to [{', '.join(map(str, target))}] changes axis 0; "
                            f"dlspec's reshape keeps the batch axis")

    def _lazy_reshape(self, d: Dyn, target: tuple[Dim, ...]) -> Dyn | None:
        base = tuple(self.types[d.value].shape)
        mid = tuple(d.view if d.view is not None else base)
        if d.perm is None:
            if not target or target[0] != mid[0] or _prod(target) != _prod(mid):
                return None
            return Dyn(d.value, None if target == base else target)
        if mid[0] == 1:
            return None
        p = d.perm
        cur = [mid[i] for i in p]
        o_axes = [i for i, s in enumerate(cur) if s != 1]
        t_axes = [j for j, s in enumerate(target) if s != 1]
        groups: list[tuple[list[int], list[int]]] = []
        i = j = 0
        while i < len(o_axes) and j < len(t_axes):
            go, gt = [o_axes[i]], [t_axes[j]]
            po, pt = cur[o_axes[i]], target[t_axes[j]]
            i, j = i + 1, j + 1
            while po != pt:
                if not (_static(po) and _static(pt)):
                    return None
                if po < pt and i < len(o_axes):
                    go.append(o_axes[i])
                    po = po * cur[o_axes[i]]
                    i += 1
                elif pt < po and j < len(t_axes):
                    gt.append(t_axes[j])
                    pt = pt * target[t_axes[j]]
                    j += 1
                else:
                    return None
            groups.append((go, gt))
        if i != len(o_axes) or j != len(t_axes):
            return None
        mid_non1 = [a for a, s in enumerate(mid) if s != 1]
        pos = {a: k for k, a in enumerate(mid_non1)}
        placed = []
        for go, gt in groups:
            ks = [pos[p[o]] for o in go]
            if ks != list(range(ks[0], ks[0] + len(ks))):
                return None
            placed.append((ks[0], go, gt))
        placed.sort()
        first = placed[0]
        if mid_non1[first[0]] != 0 or len(first[1]) != 1 or len(first[2]) != 1:
            return None
        new_mid: list[Dim] = []
        labels: list[int] = []
        for _, _, gt in placed:
            for t in gt:
                new_mid.append(target[t])
                labels.append(t)
        for t, s in enumerate(target):
            if s == 1:
                new_mid.append(1)
                labels.append(t)
        perm = tuple(labels.index(t) for t in range(len(target)))
        view = tuple(new_mid)
        return Dyn(d.value, None if view == base else view, None if _perm_identity(perm) else perm)

    def _regroup(self, d: Dyn, target: tuple[Dim, ...]) -> Dyn | None:
        """The reshape of `d` to `target` as a view, or None: the axes of the permuted view are split
        where an axis of `target` ends inside one (a split of the value's axis, in the view) and
        merged where an axis of `target` spans several (`groups`). Exact whenever it answers: every
        size is matched as a polynomial over the symbols, so `[T, N, H·d]` reshaped to
        `[T, N·H, d]` keeps N a symbol."""
        base = tuple(self.types[d.value].shape)
        mid = tuple(d.view if d.view is not None else base)
        p = d.perm if d.perm is not None else tuple(range(len(mid)))
        fine = [mid[k] for k in p]
        f_axes = [i for i, s in enumerate(fine) if s != 1]
        t_axes = [j for j, s in enumerate(target) if s != 1]
        if not f_axes or not t_axes:
            return None
        pieces: dict[int, list[Dim]] = {i: [] for i in range(len(fine))}
        owner: dict[tuple[int, int], int] = {}  # (fine axis, piece) → target axis
        a = b = 0
        rf, rt = fine[f_axes[0]], target[t_axes[0]]
        while a < len(f_axes) and b < len(t_axes):
            i, j = f_axes[a], t_axes[b]
            if rf == rt:
                step, rf, rt, a, b = rf, None, None, a + 1, b + 1
            elif (q := _quotient(rt, rf)) is not None:  # the rest of the fine axis ends inside the target's
                step, rf, rt, a = rf, None, q, a + 1
            elif (q := _quotient(rf, rt)) is not None:  # the target's axis ends inside the fine one: split it
                step, rf, rt, b = rt, q, None, b + 1
            else:
                return None
            owner[(i, len(pieces[i]))] = j
            pieces[i].append(step)
            rf = fine[f_axes[a]] if rf is None and a < len(f_axes) else rf
            rt = target[t_axes[b]] if rt is None and b < len(t_axes) else rt
        if a != len(f_axes) or b != len(t_axes):
            return None
        last = t_axes[0]
        for i, s in enumerate(fine):  # an axis of size 1 joins the target axis of the piece before it
            if s == 1:
                owner[(i, 0)] = last
                pieces[i].append(1)
            else:
                last = owner[(i, len(pieces[i]) - 1)]
        if len(pieces[p.index(0)]) != 1:
            return None  # the value's axis 0 would be split: the IR's reshape keeps it
        new_mid: list[Dim] = []
        index: dict[tuple[int, int], int] = {}
        for m in range(len(mid)):
            i = p.index(m)
            for k, s in enumerate(pieces[i]):
                index[(i, k)] = len(new_mid)
                new_mid.append(s)
        order = [(i, k) for i in range(len(fine)) for k in range(len(pieces[i]))]
        groups = tuple(sum(1 for o in order if owner[o] == j) for j in range(len(target)))
        if [owner[o] for o in order] != sorted(owner[o] for o in order):
            return None
        perm = tuple(index[o] for o in order)
        view = tuple(new_mid)
        inner = Dyn(d.value, None if view == base else view, None if _perm_identity(perm) else perm)
        out = _with_groups(inner, groups)
        assert tuple(self.shape(out)) == tuple(target)
        return out

    def _merges_symbolic(self, d: Dyn) -> bool:
        if d.groups is None:
            return False
        fine, i = self.shape(_with_groups(d, None)), 0
        for g in d.groups:
            merged = [s for s in fine[i:i + g] if s != 1]  # an axis of size 1 merges nothing
            if len(merged) > 1 and not all(_static(s) for s in merged):
                return True
            i += g
        return False

    def rows(self, d: Dyn, origin: str) -> tuple[str, tuple[int, ...] | None]:
        """`d` materialized for an op on its last axis alone (dense): its other axes may stay merged.
        Returns the IR value and the groups to put back on the op's result."""
        if d.groups is None or d.groups[-1] == 0:
            return self.materialize(d, origin), None
        lead = sum(d.groups[:-1])
        v = self.materialize(_with_groups(d, (1,) * lead + (d.groups[-1],)), origin)
        return v, (*d.groups[:-1], 1)

    # ---- dispatch -------------------------------------------------------------------------------
    def _convert(self, idx: int, node) -> None:
        if idx in self.fused:
            _, x = self.fused[idx]
            out = self.emit("gelu", {}, [self.materialize(self.dyn(self.env.get(x)), node.name)], node.name)
            self._bind(node, [Dyn(out[0])])
            return
        ins: list[Val | None] = []
        for i in node.input:
            if not i:
                ins.append(None)
                continue
            if i not in self.env:
                raise Unexpressible(f"input `{i}` is not produced by any node before it")
            ins.append(self.env[i])
        attrs = _attributes(node)
        present = [v for v in ins if v is not None]
        if node.op_type == "Constant" or (present and all(isinstance(v, Const) for v in present)
                                          and node.op_type not in _RANDOM_OPS):
            self._bind(node, self._fold(node, ins))
            return
        if node.op_type == "Shape" and isinstance(ins[0], Dyn):
            shp = self.shape(ins[0])
            start = attrs.get("start", 0)
            end = attrs.get("end", len(shp))
            self._bind(node, [_symarr(shp[slice(start, end)])])
            return
        if not any(isinstance(v, Dyn) for v in present):
            self._bind(node, [self._shape_op(node, ins, attrs)])
            return
        handler = getattr(self, f"op_{node.op_type}")
        self._bind(node, handler(node, ins, attrs))

    def _bind(self, node, outs: list[Val | None]) -> None:
        for name, v in zip(node.output, outs):
            if not name or v is None:
                continue
            self.env[name] = v
            if isinstance(v, Dyn) and v.view is None and v.perm is None and v.groups is None and v.value not in self.hints:
                if self.origins and _MADE_UP_NAME.fullmatch(name):
                    continue  # a value the dynamo exporter numbered: the layer's name says more
                self.hints[v.value] = name

    def _fold(self, node, ins: list[Val | None]) -> list[Val]:
        from onnx.reference import ReferenceEvaluator

        feeds = {n: v.array for n, v in zip(node.input, ins) if n and isinstance(v, Const)}
        planned = _fold_size(node, feeds, _attributes(node))
        if planned is not None and planned > MAX_ONNX_CONST_ELEMENTS:
            raise _error("E746", f"ONNX node {_node_label(node)}: folding this constant {node.op_type} would make "
                                 f"{planned:,} elements; a constant holds at most {MAX_ONNX_CONST_ELEMENTS:,}")
        try:
            # a one-node model carrying the file's opset imports: a bare node is evaluated with
            # the newest semantics of its op whatever `opsets` says (Unsqueeze-13's `axes` input
            # for an opset-11 Unsqueeze with an `axes` attribute)
            ev = ReferenceEvaluator(self._fold_model(node))
            results = ev.run(None, feeds)
        except Exception as exc:  # the reference evaluator raises whatever its kernels raise
            raise Unexpressible(f"cannot evaluate this constant {node.op_type} ({type(exc).__name__}: {exc})") from None
        out = [Const(np.asarray(r)) for r in results]
        for c in out:
            if c.array.size > MAX_ONNX_CONST_ELEMENTS:
                raise _error("E746", f"ONNX node {_node_label(node)}: the folded {node.op_type} holds {c.array.size:,} "
                                     f"elements; a constant holds at most {MAX_ONNX_CONST_ELEMENTS:,}")
            self._folded = getattr(self, "_folded", 0) + int(c.array.size)
        if getattr(self, "_folded", 0) > MAX_ONNX_FOLD_ELEMENTS:
            raise _error("E746", f"folding the model's constants made {self._folded:,} elements; at most "
                                 f"{MAX_ONNX_FOLD_ELEMENTS:,} are folded in all")
        return out

    def _fold_model(self, node):
        from onnx import helper

        graph = helper.make_graph(
            [node], "fold", [helper.make_empty_tensor_value_info(i) for i in node.input if i],
            [helper.make_empty_tensor_value_info(o) for o in node.output if o])
        opsets = [helper.make_opsetid(o.domain, o.version) for o in self.model.opset_import]
        return helper.make_model(graph, opset_imports=opsets or [helper.make_opsetid("", self.opset)])

    # ---- shape arithmetic over symbolic dims ------------------------------------------------------
    def _shape_op(self, node, ins: list[Val | None], attrs: dict) -> Val:
        op = node.op_type

        def items(v: Val | None) -> tuple[tuple[Dim, ...], bool]:
            if isinstance(v, SymArr):
                return v.items, v.scalar
            if isinstance(v, Const):
                a = np.asarray(v.array)
                return tuple(int(x) for x in a.reshape(-1)), a.ndim == 0
            raise Unexpressible(f"{op} on a computed tensor")

        if op in ("Identity", "Cast"):
            if isinstance(ins[0], Fill):
                return ins[0]
            return ins[0]  # type: ignore[return-value]
        if op == "ConstantOfShape":
            shape, _ = items(ins[0])
            value = float(np.asarray(attrs["value"]).reshape(-1)[0]) if "value" in attrs else 0.0
            return Fill(tuple(shape), value)
        if op == "Expand":
            if isinstance(ins[0], (Fill, Const)) and (isinstance(ins[0], Fill) or ins[0].array.size == 1):
                value = ins[0].value if isinstance(ins[0], Fill) else float(ins[0].array.reshape(-1)[0])
                shape, _ = items(ins[1])
                return Fill(tuple(shape), value)
            if isinstance(ins[0], Const):
                return self._expand_over_batch(node, ins[0].array, items(ins[1])[0])
            raise Unexpressible("Expand of a non-uniform tensor to a symbolic shape")
        if op == "Shape" and isinstance(ins[0], (SymArr, Fill)):
            # the rank of a shape being computed is known (torch's expand(n, -1, -1) asks it)
            dims = ins[0].shape if isinstance(ins[0], Fill) else (() if ins[0].scalar else (len(ins[0].items),))
            return _symarr(tuple(dims)[slice(attrs.get("start", 0), attrs.get("end", len(dims)))])
        if op == "Equal" and not any(isinstance(v, Fill) for v in ins):
            (a, sa), (b, sb) = items(ins[0]), items(ins[1])
            n = max(len(a), len(b))
            a, b = (a * n if len(a) == 1 else a), (b * n if len(b) == 1 else b)
            if len(a) != len(b):
                raise Unexpressible("Equal of shapes of different lengths")
            same = np.array([_known_equal(x, y) for x, y in zip(a, b)], dtype=bool)
            return Const(same.reshape(()) if sa and sb else same)
        if op == "Where" and isinstance(ins[0], Const) and not any(isinstance(v, Fill) for v in ins):
            cond = np.asarray(ins[0].array, dtype=bool).reshape(-1)
            (x, sx), (y, sy) = items(ins[1]), items(ins[2])
            n = max(len(cond), len(x), len(y))
            cond, x, y = (np.resize(cond, n) if cond.size == 1 else cond), (x * n if len(x) == 1 else x), \
                (y * n if len(y) == 1 else y)
            if not len(cond) == len(x) == len(y):
                raise Unexpressible("Where over shapes of different lengths")
            return _symarr(tuple(xi if c else yi for c, xi, yi in zip(cond, x, y)), scalar=sx and sy)
        if isinstance(ins[0], Fill):
            return self._fill_op(node, ins, attrs)
        if any(isinstance(v, Fill) for v in ins):
            raise Unexpressible(f"{op} on a tensor whose shape is symbolic")
        if op == "Gather":
            data, _ = items(ins[0])
            idx = np.asarray(ins[1].array) if isinstance(ins[1], Const) else None
            if idx is None or attrs.get("axis", 0) != 0:
                raise Unexpressible("Gather of a shape needs constant indices on axis 0")
            picked = tuple(data[int(i)] for i in idx.reshape(-1))
            return _symarr(picked, scalar=idx.ndim == 0)
        if op == "Unsqueeze":
            data, scalar = items(ins[0])
            return _symarr(data, scalar=False) if scalar else _symarr(data)
        if op == "Squeeze":
            data, _ = items(ins[0])
            return _symarr(data, scalar=len(data) == 1)
        if op == "Reshape":
            data, _ = items(ins[0])
            return _symarr(data)
        if op == "Concat":
            out: list[Dim] = []
            for v in ins:
                if v is not None:
                    out.extend(items(v)[0])
            return _symarr(tuple(out))
        if op == "Slice":
            data, _ = items(ins[0])
            starts = _as_int_list(ins[1], "Slice starts") if len(ins) > 1 else attrs["starts"]
            ends = _as_int_list(ins[2], "Slice ends") if len(ins) > 2 else attrs["ends"]
            steps = _as_int_list(ins[4], "Slice steps") if len(ins) > 4 and ins[4] is not None else [1]
            return _symarr(tuple(data[slice(starts[0], min(ends[0], len(data) + 1), steps[0])]))
        if op in ("Add", "Sub", "Mul", "Div"):
            a, sa = items(ins[0])
            b, sb = items(ins[1])
            n = max(len(a), len(b))
            a = a * n if len(a) == 1 else a
            b = b * n if len(b) == 1 else b
            f = {"Add": lambda x, y: x + y, "Sub": lambda x, y: x - y, "Mul": lambda x, y: x * y,
                 "Div": lambda x, y: x // y}[op]
            return _symarr(tuple(f(x, y) for x, y in zip(a, b)), scalar=sa and sb)
        raise Unexpressible(f"{op} on a symbolic shape")

    def _batch_source(self, batch: Dim) -> str | None:
        """A model input whose axis 0 is `batch` (what `parameter` reads the batch size from)."""
        return next((i.value for i in self._model_inputs if i.shape and i.shape[0] == batch), None)

    def _expand_over_batch(self, node, c: np.ndarray, shape: tuple[Dim, ...]) -> Dyn:
        """Expand of a constant [1, ...] to [batch, ...] with a symbolic batch: a `parameter` holding
        it (a ViT's class token, `cls.expand(n, -1, -1)`)."""
        rank = max(c.ndim, len(shape))
        c = c.reshape((1,) * (rank - c.ndim) + c.shape)
        shape = (1,) * (rank - len(shape)) + tuple(shape)
        out = tuple(s if k == 1 else k for k, s in zip(c.shape, shape))
        bad = [i for i, (k, s) in enumerate(zip(c.shape, shape)) if k != 1 and s not in (1, k)]
        if bad or c.shape[0] != 1 or _static(out[0]) or not all(_static(d) for d in out[1:]):
            raise Unexpressible(f"Expand of a constant {list(c.shape)} to [{', '.join(map(str, shape))}]: only a "
                                f"constant with axis 0 of size 1 expanded over a symbolic batch imports (as parameter)")
        src = self._batch_source(out[0])
        if src is None:
            raise Unexpressible(f"Expand over the size {out[0]}, which is not the batch of any model input")
        weight = np.broadcast_to(c, (1, *out[1:])).astype(np.float32)
        return Dyn(self._parameter(node, src, weight, node.input[0]))

    def _parameter(self, node, src: str, weight: np.ndarray, const_input: str) -> str:
        """A `parameter` layer holding `weight` ([1, ...]), read over the batch of the IR value `src`
        and named after the constant's initializer (`pos` of a module's nn.Parameter)."""
        stem = clean_name(const_input) if re.fullmatch(r"[A-Za-z_][\w.]*", const_input) else self.stem(node)
        return self.emit("parameter", {"shape": [int(d) for d in weight.shape[1:]]}, [src], node.name,
                         stem, {"weight": weight})[0]

    def _fill_op(self, node, ins: list[Val | None], attrs: dict) -> Val:
        """Shape-only ops on a uniform tensor of symbolic shape: the result is uniform too."""
        f = ins[0]
        assert isinstance(f, Fill)
        shape = list(f.shape)
        op = node.op_type
        if op == "Slice":
            starts = _as_int_list(ins[1], "Slice starts") if len(ins) > 1 else list(attrs["starts"])
            ends = _as_int_list(ins[2], "Slice ends") if len(ins) > 2 else list(attrs["ends"])
            axes = (_as_int_list(ins[3], "Slice axes") if len(ins) > 3 and ins[3] is not None
                    else list(attrs.get("axes", range(len(starts)))))
            for st, en, ax in zip(starts, ends, axes):
                size = shape[ax]
                if not _static(size):
                    if st == 0 and en >= 2**31 - 1:
                        continue
                    raise Unexpressible("Slice of a symbolic axis")
                shape[ax] = len(range(size)[slice(st, en)])
            return Fill(tuple(shape), f.value)
        if op in ("Squeeze", "Unsqueeze"):
            axes = self._axes(node, ins, attrs) or []
            if op == "Squeeze":
                axes = [ax % len(shape) for ax in axes] or [i for i, d in enumerate(shape) if d == 1]
                return Fill(tuple(d for i, d in enumerate(shape) if i not in axes), f.value)
            for ax in sorted(ax % (len(shape) + len(axes)) for ax in axes):
                shape.insert(ax, 1)
            return Fill(tuple(shape), f.value)
        if op == "Transpose":
            perm = list(attrs.get("perm", range(len(shape) - 1, -1, -1)))
            return Fill(tuple(shape[p] for p in perm), f.value)
        raise Unexpressible(f"{op} on a tensor whose shape is symbolic")

    # ---- helpers for handlers ---------------------------------------------------------------------
    def dyn(self, v: Val | None, what: str = "input") -> Dyn:
        if isinstance(v, Dyn):
            return v
        raise Unexpressible(f"the {what} must be a computed tensor here")

    def const(self, v: Val | None, what: str) -> np.ndarray:
        if isinstance(v, Const):
            return np.asarray(v.array)
        raise Unexpressible(f"{what} must be a constant (an initializer or a Constant node)")

    def x(self, node, ins) -> tuple[str, TensorType]:
        v = self.materialize(self.dyn(ins[0]), node.name)
        return v, self.types[v]

    def stem(self, node, weight_input: str | None = None) -> str:
        """A layer name: the PyTorch module it was exported from (the dynamo exporter's scope, whose
        weights may be shared constants named after another module, or a weight's path:
        'fc.weight' → 'fc'), else the node's name."""
        path = module_path(node)
        if path:
            return re.sub(r"\W+", "_", path)
        if weight_input and re.fullmatch(r"[A-Za-z_][\w.]*\.(weight|weight_ih_l0)", weight_input):
            return re.sub(r"\W+", "_", weight_input.rsplit(".", 1)[0])
        return clean_name(node.name)

    def simple(self, op: str, attrs: dict | None = None):
        """An element-wise op: it keeps a merged view merged."""
        def handler(node, ins, _attrs):
            d = self.dyn(ins[0])
            v = self.materialize(_with_groups(d, None), node.name)
            return [_with_groups(Dyn(self.emit(op, attrs or {}, [v], node.name)[0]), d.groups)]
        return handler

    def single_use(self, onnx_name: str) -> bool:
        return self.uses.get(onnx_name, 0) == 1 and onnx_name not in self.graph_outputs

    # ---- convolution, dense, normalization ----------------------------------------------------------
    def op_Conv(self, node, ins, a):
        x, t = self.x(node, ins)
        w = self.const(ins[1], "the Conv weight")
        b = self.const(ins[2], "the Conv bias") if len(ins) > 2 and ins[2] is not None else None
        n = t.rank - 2
        if n not in (1, 2, 3):
            raise Unexpressible(f"a {t.rank}-D Conv input; dlspec has conv1d, conv2d and conv3d")
        kernel = list(a.get("kernel_shape", w.shape[2:]))
        strides = list(a.get("strides", [1] * n))
        dil = list(a.get("dilations", [1] * n))
        x, padding = self._conv_pads(node, x, t, a, kernel, strides, dil, conv=True)
        attrs = {"out_channels": int(w.shape[0]), "kernel": _one(kernel)}
        if any(s != 1 for s in strides):
            attrs["stride"] = _one(strides)
        if padding != 0:
            attrs["padding"] = padding
        if any(d != 1 for d in dil):
            attrs["dilation"] = _one(dil)
        if a.get("group", 1) != 1:
            attrs["groups"] = int(a["group"])
        params = {"weight": w}
        if b is None:
            attrs["bias"] = False
        else:
            params["bias"] = b
        out = self.emit(f"conv{n}d", attrs, [x], node.name, self.stem(node, node.input[1]), params)
        return [Dyn(out[0])]

    def _conv_pads(self, node, x: str, t: TensorType, a: dict, kernel, strides, dil, conv: bool,
                   pad_value: float = 0.0) -> tuple[str, Any]:
        """(input, IR padding) for Conv/pool pads and auto_pad; asymmetric pads become a pad layer."""
        n = len(kernel)
        auto = a.get("auto_pad", "NOTSET")
        if auto == "VALID":
            return x, 0
        if auto in ("SAME_UPPER", "SAME_LOWER"):
            if conv and auto == "SAME_UPPER":
                return x, "same"
            pads_b, pads_e = [], []
            for i in range(n):
                size = t.shape[2 + i]
                if not _static(size):
                    raise Unexpressible(f"auto_pad={auto} over a symbolic spatial size")
                out = -(-size // strides[i])
                total = max((out - 1) * strides[i] + (kernel[i] - 1) * dil[i] + 1 - size, 0)
                small, big = total // 2, total - total // 2
                pads_b.append(small if auto == "SAME_UPPER" else big)
                pads_e.append(big if auto == "SAME_UPPER" else small)
        else:
            pads = list(a.get("pads", [0] * 2 * n))
            pads_b, pads_e = pads[:n], pads[n:]
        if any(p < 0 for p in pads_b + pads_e):
            raise Unexpressible("negative pads (cropping)")
        if pads_b == pads_e and all(pb <= k // 2 or conv for pb, k in zip(pads_b, kernel)):
            return x, _one(pads_b) if any(pads_b) else 0
        flat = [v for pair in zip(pads_b, pads_e) for v in pair]
        attrs: dict[str, Any] = {"padding": flat}
        if pad_value:
            attrs["value"] = pad_value
        return self.emit("pad", attrs, [x], node.name)[0], 0

    def op_ConvTranspose(self, node, ins, a):
        x, t = self.x(node, ins)
        w = self.const(ins[1], "the ConvTranspose weight")
        b = self.const(ins[2], "the ConvTranspose bias") if len(ins) > 2 and ins[2] is not None else None
        n = t.rank - 2
        if n not in (1, 2):
            raise Unexpressible(f"a {t.rank}-D ConvTranspose input; dlspec has conv_transpose1d and 2d")
        group = int(a.get("group", 1))
        kernel = list(a.get("kernel_shape", w.shape[2:]))
        strides = list(a.get("strides", [1] * n))
        dil = list(a.get("dilations", [1] * n))
        out_pad = list(a.get("output_padding", [0] * n))
        auto = a.get("auto_pad", "NOTSET")
        if "output_shape" in a or auto in ("SAME_UPPER", "SAME_LOWER"):
            pads_b, pads_e = [], []
            for i in range(n):
                size = t.shape[2 + i]
                if not _static(size):
                    raise Unexpressible("ConvTranspose output_shape/auto_pad over a symbolic spatial size")
                full = strides[i] * (size - 1) + out_pad[i] + (kernel[i] - 1) * dil[i] + 1
                want = a["output_shape"][-n + i] if "output_shape" in a else size * strides[i]
                total = full - want
                if total < 0:
                    raise Unexpressible("ConvTranspose output_shape larger than the full output")
                lower = auto == "SAME_LOWER" or ("output_shape" in a and auto != "SAME_UPPER")
                pads_b.append(total - total // 2 if lower else total // 2)
                pads_e.append(total // 2 if lower else total - total // 2)
        elif auto == "VALID":
            pads_b, pads_e = [0] * n, [0] * n
        else:
            pads = list(a.get("pads", [0] * 2 * n))
            pads_b, pads_e = pads[:n], pads[n:]
        # ONNX crops pads_b at the start and pads_e at the end, then output_padding adds at the end;
        # PyTorch crops `padding` at both ends and adds output_padding at the end.
        torch_out_pad = [pb - pe + op for pb, pe, op in zip(pads_b, pads_e, out_pad)]
        for i in range(n):
            if not 0 <= torch_out_pad[i] < max(strides[i], dil[i]):
                raise Unexpressible(f"ConvTranspose pads {pads_b + pads_e} with output_padding {out_pad} "
                                    f"cannot be written as PyTorch's padding and output_padding")
        attrs: dict[str, Any] = {"out_channels": int(w.shape[1]) * group, "kernel": _one(kernel)}
        if any(s != 1 for s in strides):
            attrs["stride"] = _one(strides)
        if any(pads_b):
            attrs["padding"] = _one(pads_b)
        if any(torch_out_pad):
            attrs["output_padding"] = _one(torch_out_pad)
        if any(d != 1 for d in dil):
            attrs["dilation"] = _one(dil)
        if group != 1:
            attrs["groups"] = group
        params = {"weight": w}
        if b is None:
            attrs["bias"] = False
        else:
            params["bias"] = b
        out = self.emit(f"conv_transpose{n}d", attrs, [x], node.name, self.stem(node, node.input[1]), params)
        return [Dyn(out[0])]

    def op_Gemm(self, node, ins, a):
        alpha, beta = float(a.get("alpha", 1.0)), float(a.get("beta", 1.0))
        if isinstance(ins[0], Dyn) and isinstance(ins[1], Dyn):
            return self._gemm_product(node, ins, a, alpha, beta)
        if not isinstance(ins[0], Dyn) or not isinstance(ins[1], Const):
            raise Unexpressible("Gemm with a constant A; A must be computed (B a constant weight or computed)")
        d = self.permute(ins[0], (1, 0)) if a.get("transA", 0) else ins[0]
        x, groups = self.rows(d, node.name)
        b = self.const(ins[1], "the Gemm weight")
        w = (b if a.get("transB", 0) else b.T) * np.float32(alpha)
        units = int(w.shape[0])
        params = {"weight": w.astype(np.float32)}
        attrs: dict[str, Any] = {"units": units}
        if len(ins) > 2 and ins[2] is not None:
            c = self.const(ins[2], "the Gemm bias C")
            if c.size not in (1, units) or (c.ndim == 2 and c.shape[0] != 1):
                raise Unexpressible(f"Gemm bias C of shape {list(c.shape)} is not one value per output unit")
            params["bias"] = (np.broadcast_to(c.reshape(-1), (units,)) * np.float32(beta)).astype(np.float32)
        else:
            attrs["bias"] = False
        out = self.emit("dense", attrs, [x], node.name, self.stem(node, node.input[1]), params)
        return [_with_groups(Dyn(out[0]), groups)]

    def _gemm_product(self, node, ins, a, alpha: float, beta: float):
        """alpha · A' @ B' + beta · C with A and B computed: a matmul, scaled, plus C."""
        va = self.materialize(self.permute(ins[0], (1, 0)) if a.get("transA", 0) else ins[0], node.name)
        vb = self.materialize(self.permute(ins[1], (1, 0)) if a.get("transB", 0) else ins[1], node.name)
        v = self.emit("matmul", {}, [va, vb], node.name)[0]
        if alpha != 1.0:
            v = self.emit("mul", {"scalar": _f32(alpha)}, [v], node.name)[0]
        if len(ins) > 2 and ins[2] is not None:
            c = ins[2]
            if isinstance(c, Dyn):
                vc = self.materialize(c, node.name)
                if beta != 1.0:
                    vc = self.emit("mul", {"scalar": _f32(beta)}, [vc], node.name)[0]
                v = self.emit("add", {}, [v, vc], node.name)[0]
            else:
                arr = self.const(c, "the Gemm C") * np.float32(beta)
                if arr.size == 1:
                    v = self.emit("add", {"scalar": _f32(float(arr.reshape(-1)[0]))}, [v], node.name)[0]
                elif np.any(arr):
                    v = self._affine(node, v, arr.astype(np.float32), "add", node.output[0])
        return [Dyn(v)]

    def op_MatMul(self, node, ins, a):
        if isinstance(ins[0], Dyn) and isinstance(ins[1], Const):
            b = np.asarray(ins[1].array)
            if b.ndim != 2:
                raise Unexpressible(f"MatMul with a {b.ndim}-D constant; only a 2-D weight imports (as dense)")
            x, groups = self.rows(ins[0], node.name)
            out = self.emit("dense", {"units": int(b.shape[1]), "bias": False}, [x], node.name,
                            self.stem(node, node.input[1]), {"weight": b.T})
            return [_with_groups(Dyn(out[0]), groups)]
        if isinstance(ins[0], Dyn) and isinstance(ins[1], Dyn):
            lead = self._merged_batch(ins[0], ins[1])
            if lead is not None:  # a batched product over merged axes (the heads of attention): kept merged
                va = self.materialize(_with_groups(ins[0], None), node.name)
                vb = self.materialize(_with_groups(ins[1], None), node.name)
                return [_with_groups(Dyn(self.emit("matmul", {}, [va, vb], node.name)[0]), (*lead, 1, 1))]
            va = self.materialize(ins[0], node.name)
            vb = self.materialize(ins[1], node.name)
            return [Dyn(self.emit("matmul", {}, [va, vb], node.name)[0])]
        raise Unexpressible("MatMul with a constant left operand")

    def _merged_batch(self, a: Dyn, b: Dyn) -> tuple[int, ...] | None:
        """The groups of the batch axes two operands of a matmul share when either is a merged view
        whose matrices (the last two axes) are not merged and whose batch axes are merged alike."""
        if a.groups is None and b.groups is None:
            return None
        ga, gb = a.groups or (1,) * len(self.shape(a)), b.groups or (1,) * len(self.shape(b))
        if len(ga) < 3 or ga != gb or ga[-2:] != (1, 1):
            return None
        fa, fb = self.shape(_with_groups(a, None)), self.shape(_with_groups(b, None))
        lead = sum(ga[:-2])
        return ga[:-2] if tuple(fa[:lead]) == tuple(fb[:lead]) else None

    def op_BatchNormalization(self, node, ins, a):
        x, t = self.x(node, ins)
        if a.get("spatial", 1) == 0:
            raise Unexpressible("BatchNormalization with spatial=0 (statistics per activation, not per channel)")
        if a.get("training_mode", 0):
            raise Unexpressible("BatchNormalization in training mode; export the model in inference mode")
        for extra in node.output[1:]:
            if extra and self.uses.get(extra):
                raise Unexpressible("the running statistics outputs of BatchNormalization are used")
        op = {2: "batchnorm1d", 3: "batchnorm1d", 4: "batchnorm2d", 5: "batchnorm3d"}.get(t.rank)
        if op is None:
            raise Unexpressible(f"BatchNormalization of a {t.rank}-D tensor; dlspec has batchnorm1d, 2d and 3d")
        scale, bias, mean, var = (self.const(v, f"BatchNormalization {w}") for v, w in
                                  zip(ins[1:5], ("scale", "B", "mean", "var")))
        attrs: dict[str, Any] = {}
        eps = _f32(a.get("epsilon", 1e-5))
        if eps != 1e-5:
            attrs["eps"] = eps
        momentum = float(f"{1 - float(a.get('momentum', 0.9)):.6g}")
        if momentum != 0.1 and 0 <= momentum <= 1:
            attrs["momentum"] = momentum
        params = {"weight": scale, "bias": bias, "running_mean": mean, "running_var": var}
        out = self.emit(op, attrs, [x], node.name, self.stem(node, node.input[1]), params)
        return [Dyn(out[0])]

    def op_LayerNormalization(self, node, ins, a):
        x, t = self.x(node, ins)
        if a.get("axis", -1) not in (-1, t.rank - 1):
            raise Unexpressible("LayerNormalization over more than the last axis")
        scale = self.const(ins[1], "LayerNormalization scale")
        bias = self.const(ins[2], "LayerNormalization bias") if len(ins) > 2 and ins[2] is not None else \
            np.zeros_like(scale)
        attrs: dict[str, Any] = {}
        eps = _f32(a.get("epsilon", 1e-5))
        if eps != 1e-5:
            attrs["eps"] = eps
        out = self.emit("layernorm", attrs, [x], node.name, self.stem(node, node.input[1]),
                        {"weight": scale, "bias": bias})
        return [Dyn(out[0])]

    def op_InstanceNormalization(self, node, ins, a):
        # statistics per (sample, channel): PyTorch's InstanceNorm, and its GroupNorm on a grouped view
        grouped = self._group_norm(node, ins, a)
        if grouped is not None:
            return grouped
        x, t = self.x(node, ins)
        if t.rank not in (3, 4, 5) or not _static(t.shape[1]):
            raise Unexpressible(f"InstanceNormalization of {t.shape_str()}; [N, C, ...] with a known C imports")
        scale = self.const(ins[1], "InstanceNormalization scale").astype(np.float32).reshape(-1)
        bias = self.const(ins[2], "InstanceNormalization B").astype(np.float32).reshape(-1)
        attrs: dict[str, Any] = {}
        eps = _f32(a.get("epsilon", 1e-5))
        if eps != 1e-5:
            attrs["eps"] = eps
        if np.all(scale == 1) and not np.any(bias):  # nn.InstanceNorm2d's default affine=False
            return [Dyn(self.emit("instance_norm", attrs, [x], node.name)[0])]
        attrs["affine"] = True
        out = self.emit("instance_norm", attrs, [x], node.name, self.stem(node, node.input[1]),
                        {"weight": scale, "bias": bias})
        return [Dyn(out[0])]

    def _group_norm(self, node, ins, a) -> list[Val] | None:
        """InstanceNormalization of [N, C, ...] viewed as [N, G, C/G·…] (PyTorch's GroupNorm: both
        exporters reshape, normalize and reshape back, then scale and shift per channel): one
        groupnorm(G) on the tensor itself, its output viewed as the normalized [N, G, …] again so
        that the reshape back costs nothing; the scale and shift that follow fold into it."""
        d = self.dyn(ins[0])
        if d.view is None or d.perm is not None or d.groups is not None or len(d.view) != 3:
            return None
        shape = self.types[d.value].shape
        if len(shape) not in (3, 4, 5) or not _static(shape[1]) or not _static(d.view[1]):
            return None
        c, g = int(shape[1]), int(d.view[1])
        if g < 1 or c % g or d.view[0] != shape[0] or d.view[2] != _prod((c // g, *shape[2:])):
            return None
        scale = self.const(ins[1], "InstanceNormalization scale").astype(np.float32).reshape(-1)
        bias = self.const(ins[2], "InstanceNormalization B").astype(np.float32).reshape(-1)
        if scale.size != g or bias.size != g:
            return None
        attrs: dict[str, Any] = {"groups": g}
        eps = _f32(a.get("epsilon", 1e-5))
        if eps != 1e-5:
            attrs["eps"] = eps
        params = {"weight": np.repeat(scale, c // g), "bias": np.repeat(bias, c // g)}
        out = self.emit("groupnorm", attrs, [d.value], node.name, self.stem(node), params)[0]
        return [Dyn(out, d.view)]

    def op_LRN(self, node, ins, a):
        x, t = self.x(node, ins)
        size = int(a.get("size", 0))
        if size <= 0:
            raise Unexpressible(f"LRN needs a positive `size`; got {size}")
        if size % 2 == 0:
            # ONNX sums channels c - (size/2 - 1) .. c + size/2, PyTorch's (and dlspec's) lrn
            # c - size/2 .. c + size/2 - 1: for an even size the windows differ by one channel
            raise Unexpressible(f"LRN with an even size ({size}): its channel window lies one channel later "
                                "than that of dlspec's lrn (PyTorch's), which only an odd size shares")
        if t.rank < 3:
            raise Unexpressible(f"LRN of a {t.rank}-D tensor; it normalizes across the channels of [N, C, ...]")
        attrs: dict[str, Any] = {"size": size}
        for key, name, default in (("alpha", "alpha", 1e-4), ("beta", "beta", 0.75), ("bias", "k", 1.0)):
            value = _f32(a.get(key, default))
            if value != _f32(default):
                attrs[name] = value
        return [Dyn(self.emit("lrn", attrs, [x], node.name)[0])]

    # ---- activations ------------------------------------------------------------------------------
    def op_Relu(self, node, ins, a):
        return self.simple("relu")(node, ins, a)

    def op_Sigmoid(self, node, ins, a):
        return self.simple("sigmoid")(node, ins, a)

    def op_Tanh(self, node, ins, a):
        return self.simple("tanh")(node, ins, a)

    def op_LeakyRelu(self, node, ins, a):
        slope = _f32(a.get("alpha", 0.01))
        return self.simple("leaky_relu", {} if slope == 0.01 else {"slope": slope})(node, ins, a)

    def op_Elu(self, node, ins, a):
        alpha = _f32(a.get("alpha", 1.0))
        return self.simple("elu", {} if alpha == 1.0 else {"alpha": alpha})(node, ins, a)

    def op_Selu(self, node, ins, a):
        alpha, gamma = float(a.get("alpha", SELU_ALPHA)), float(a.get("gamma", SELU_GAMMA))
        if np.float32(alpha) == np.float32(SELU_ALPHA) and np.float32(gamma) == np.float32(SELU_GAMMA):
            return self.simple("selu")(node, ins, a)
        x, _ = self.x(node, ins)
        v = self.emit("elu", {"alpha": _f32(alpha)}, [x], node.name)[0]
        return [Dyn(self.emit("mul", {"scalar": _f32(gamma)}, [v], node.name)[0])]

    def op_Gelu(self, node, ins, a):
        approx = a.get("approximate", "none")
        return self.simple("gelu", {} if approx == "none" else {"approximate": "tanh"})(node, ins, a)

    def op_HardSigmoid(self, node, ins, a):
        alpha, beta = float(a.get("alpha", 0.2)), float(a.get("beta", 0.5))
        if np.float32(alpha) == np.float32(1 / 6) and np.float32(beta) == np.float32(0.5):
            return self.simple("hardsigmoid")(node, ins, a)  # PyTorch's Hardsigmoid, Keras 3's hard_sigmoid
        x, _ = self.x(node, ins)
        return [Dyn(self._hard_sigmoid(node, x, alpha, beta))]

    def _hard_sigmoid(self, node, x: str, alpha: float, beta: float) -> str:
        v = self.emit("mul", {"scalar": _f32(alpha)}, [x], node.name)[0]
        v = self.emit("add", {"scalar": _f32(beta)}, [v], node.name)[0]
        return self.emit("hardtanh", {"min": 0.0, "max": 1.0}, [v], node.name)[0]

    def op_HardSwish(self, node, ins, a):
        return self.simple("hardswish")(node, ins, a)

    def op_Softplus(self, node, ins, a):
        return self.simple("softplus")(node, ins, a)

    def op_Softsign(self, node, ins, a):
        return self.simple("softsign")(node, ins, a)

    def op_Mish(self, node, ins, a):
        return self.simple("mish")(node, ins, a)

    def op_PRelu(self, node, ins, a):
        x, t = self.x(node, ins)
        slope = self.const(ins[1], "the PRelu slope")
        if slope.size == 1:
            return [Dyn(self.emit("prelu", {}, [x], node.name, self.stem(node, node.input[1]),
                                  {"weight": slope.reshape(1).astype(np.float32)})[0])]
        if self.opset < 7 and slope.ndim == 1 and t.rank >= 2 and slope.shape[0] == t.shape[1]:
            per = (1, slope.astype(np.float32))  # before opset 7 the slope is per channel, not broadcast
        else:
            per = _per_channel(slope, t)
        if per is None or (per[0] == -1 and t.rank != 2):
            raise Unexpressible(f"PRelu with a slope of shape {list(slope.shape)} on {t.shape_str()}: one slope, or "
                                f"one per channel (axis 1), imports")
        return [Dyn(self.emit("prelu", {"per_channel": True}, [x], node.name, self.stem(node, node.input[1]),
                              {"weight": per[1]})[0])]

    def op_Clip(self, node, ins, a):
        if self.opset < 11:
            lo, hi = a.get("min", -FLOAT32_MAX), a.get("max", FLOAT32_MAX)
        else:
            lo = _scalar(ins[1], "Clip min") if len(ins) > 1 and ins[1] is not None else -FLOAT32_MAX
            hi = _scalar(ins[2], "Clip max") if len(ins) > 2 and ins[2] is not None else FLOAT32_MAX
        lo, hi = max(float(lo), -FLOAT32_MAX), min(float(hi), FLOAT32_MAX)
        if lo == 0.0 and hi >= FLOAT32_MAX:
            return self.simple("relu")(node, ins, a)
        if lo == 0.0 and hi == 6.0:  # what PyTorch's ReLU6 exports
            return self.simple("relu6")(node, ins, a)
        # one bound only (torch.clamp(x, min=…)): a hardtanh with ±float32 max as the other bound
        # overflows float32 in PyTorch's hardtanh, so it is a maximum (minimum) with a scalar
        if hi >= FLOAT32_MAX and lo <= -FLOAT32_MAX:
            return [self.dyn(ins[0])]
        if hi >= FLOAT32_MAX:
            return self.simple("maximum", {"scalar": _f32(lo)})(node, ins, a)
        if lo <= -FLOAT32_MAX:
            return self.simple("minimum", {"scalar": _f32(hi)})(node, ins, a)
        return self.simple("hardtanh", {"min": _f32(lo), "max": _f32(hi)})(node, ins, a)

    def _softmax(self, node, ins, a, op: str):
        d = self.dyn(ins[0])
        default = -1 if self.opset >= 13 else 1
        axis = a.get("axis", default)
        rank = len(self.shape(d))
        if d.groups is not None and d.groups[-1] == 1 and axis % rank == rank - 1 and (self.opset >= 13 or rank == 2):
            # over the last axis alone: the axes before it may stay merged
            x = self.materialize(_with_groups(d, None), node.name)
            return [_with_groups(Dyn(self.emit(op, {}, [x], node.name)[0]), d.groups)]
        x, t = self.x(node, ins)
        ax = axis + t.rank if axis < 0 else axis
        if ax == t.rank - 1:
            return [Dyn(self.emit(op, {}, [x], node.name)[0])]
        if self.opset >= 13:
            if ax == 0:
                raise Unexpressible(f"{node.op_type} over the batch axis")
            return [Dyn(self.emit(op, {"axis": axis}, [x], node.name)[0])]
        # before opset 13 the input is coerced to 2-D [d0·…·d(axis−1), d(axis)·…] and normalized per row
        if ax == 0:
            raise Unexpressible(f"{node.op_type} with axis=0 normalizes over the batch axis")
        rest = t.shape[ax:]
        if ax > 1 and any(s != 1 for s in t.shape[1:ax]):
            raise Unexpressible(f"{node.op_type} (opset {self.opset}) with axis={axis} mixes samples of a batch")
        v = self.emit("flatten", {"start": ax} if ax != 1 else {}, [x], node.name)[0]
        v = self.emit(op, {}, [v], node.name)[0]
        return [self.reshape(Dyn(v), (*t.shape[:ax], *rest), node.name)]

    def op_Softmax(self, node, ins, a):
        return self._softmax(node, ins, a, "softmax")

    def op_LogSoftmax(self, node, ins, a):
        return self._softmax(node, ins, a, "log_softmax")

    # ---- pooling -----------------------------------------------------------------------------------
    def _pool(self, node, ins, a, kind: str):
        x, t = self.x(node, ins)
        n = t.rank - 2
        if n not in (1, 2, 3):
            raise Unexpressible(f"a {t.rank}-D {node.op_type}; dlspec pools 1-D, 2-D and 3-D inputs")
        dil = list(a.get("dilations", [1] * n))
        if kind == "avg" and any(d != 1 for d in dil):
            raise Unexpressible("AveragePool with dilations (PyTorch's avg_pool has none)")
        if a.get("storage_order", 0):
            raise Unexpressible("MaxPool with storage_order=1")
        if len(node.output) > 1 and node.output[1] and self.uses.get(node.output[1]):
            raise Unexpressible("the Indices output of MaxPool is used")
        kernel = list(a["kernel_shape"])
        strides = list(a.get("strides", [1] * n))
        include_pad = kind == "max" or bool(a.get("count_include_pad", 0))
        src = x
        x, padding = self._conv_pads(node, x, t, a, kernel, strides, dil, conv=False,
                                     pad_value=-FLOAT32_MAX if kind == "max" else 0.0)
        attrs: dict[str, Any] = {"kernel": _one(kernel)}
        if strides != kernel:
            attrs["stride"] = _one(strides)
        if padding != 0:
            attrs["padding"] = padding
        if any(d != 1 for d in dil):
            attrs["dilation"] = _one(dil)
        if a.get("ceil_mode", 0):
            attrs["ceil_mode"] = True
        op = f"{kind}pool{n}d"
        out = self.emit(op, attrs, [x], node.name)[0]
        if include_pad or (padding == 0 and x == src):
            return [Dyn(out)]
        # count_include_pad=0: divide by the share of real (unpadded) elements in each window; ones
        # padded like the input (the same pad layer, or the pool's own zero padding) and pooled alike
        ones = self.emit("mul", {"scalar": 0.0}, [src], node.name)[0]
        ones = self.emit("add", {"scalar": 1.0}, [ones], node.name)[0]
        if x != src:
            ones, _ = self._conv_pads(node, ones, t, a, kernel, strides, dil, conv=False)
        share = self.emit(op, attrs, [ones], node.name)[0]
        return [Dyn(self.emit("div", {}, [out, share], node.name)[0])]

    def op_MaxPool(self, node, ins, a):
        return self._pool(node, ins, a, "max")

    def op_AveragePool(self, node, ins, a):
        return self._pool(node, ins, a, "avg")

    def _global(self, node, ins, kind: str, keepdims: bool = True):
        x, t = self.x(node, ins)
        n = t.rank - 2
        if n not in (1, 2):
            raise Unexpressible(f"a {t.rank}-D {node.op_type}; dlspec pools 1-D and 2-D inputs")
        # a flatten that follows alone folds into the pool (keepdims=false)
        out_name = node.output[0]
        nxt = self._sole_consumer(out_name)
        if keepdims and nxt is not None and self._flattens_pool(nxt, t):
            self.skip_node(nxt)
            out = self.emit(f"global_{kind}pool{n}d", {}, [x], node.name)[0]
            self.env[nxt.output[0]] = Dyn(out)
            self.hints.setdefault(out, nxt.output[0])
            return [None]
        return [Dyn(self.emit(f"global_{kind}pool{n}d", {"keepdims": True} if keepdims else {}, [x], node.name)[0])]

    def _flattens_pool(self, nxt, t: TensorType) -> bool:
        a = _attributes(nxt)
        if nxt.op_type == "Flatten":
            return a.get("axis", 1) == 1
        if nxt.op_type == "Squeeze":
            axes = a.get("axes")
            if axes is None and len(nxt.input) > 1 and nxt.input[1]:
                v = self.env.get(nxt.input[1])
                axes = [int(i) for i in v.array.reshape(-1)] if isinstance(v, Const) else None
            return axes is not None and sorted(ax % t.rank for ax in axes) == list(range(2, t.rank))
        if nxt.op_type == "Reshape" and len(nxt.input) > 1:
            v = self.env.get(nxt.input[1])
            if isinstance(v, Const):
                target = [int(i) for i in v.array.reshape(-1)]
                return len(target) == 2 and target[1] in (-1, t.shape[1]) and target[0] in (0, -1, t.shape[0])
            if isinstance(v, SymArr):
                return len(v.items) == 2 and v.items[0] == t.shape[0] and v.items[1] in (-1, t.shape[1])
        return False

    def _sole_consumer(self, onnx_name: str):
        if not self.single_use(onnx_name):
            return None
        for node in self.graph.node:
            if onnx_name in node.input:
                return node
        return None

    def skip_node(self, node) -> None:
        for idx, n in enumerate(self.graph.node):
            if n is node:
                self.skipped.add(idx)

    def op_Resize(self, node, ins, a):
        scales = ins[2] if len(ins) > 2 else None
        sizes = ins[3] if len(ins) > 3 else None
        if self.opset < 11:  # Resize-10: X, scales
            scales, sizes = (ins[1] if len(ins) > 1 else None), None
        return self._resize(node, ins, a, scales, sizes)

    def op_Upsample(self, node, ins, a):
        if "scales" in a:
            return self._resize(node, ins, a, Const(np.asarray(a["scales"], dtype=np.float32)), None)
        return self._resize(node, ins, a, ins[1] if len(ins) > 1 else None, None)

    def _resize(self, node, ins, a, scales: Val | None, sizes: Val | None):
        """Resize/Upsample → upsample: nearest with an integer scale (asymmetric/floor, or
        half_pixel/round: the same source pixels), linear over 1 or 2 spatial axes with half_pixel
        (PyTorch's align_corners=False) or align_corners coordinates."""
        x, t = self.x(node, ins)
        n = t.rank - 2
        mode = a.get("mode", "nearest")
        coord = a.get("coordinate_transformation_mode", "half_pixel" if self.opset >= 11 else "asymmetric")
        nearest_mode = a.get("nearest_mode", "round_prefer_floor")
        if a.get("antialias", 0):
            raise Unexpressible("Resize with antialias")
        if a.get("keep_aspect_ratio_policy", "stretch") != "stretch":
            raise Unexpressible("Resize with keep_aspect_ratio_policy")
        if n not in (1, 2):
            raise Unexpressible(f"Resize of a {t.rank}-D tensor; upsample resizes [N, C, L] and [N, C, H, W]")
        attrs: dict[str, Any] = {}
        scale_list: list[float] | None = None
        if isinstance(scales, Const) and scales.array.size:
            scale_list = [float(v) for v in scales.array.reshape(-1)]
        size_list: list[Dim] | None = None
        if isinstance(sizes, Const) and sizes.array.size:
            size_list = [int(v) for v in sizes.array.reshape(-1)]
        elif isinstance(sizes, SymArr):
            size_list = list(sizes.items)
        if "axes" in a:  # scales or sizes for these axes only (opset 18)
            axes = [int(ax) % t.rank for ax in a["axes"]]
            if scale_list is not None:
                full: list = [1.0] * t.rank
                for ax, v in zip(axes, scale_list):
                    full[ax] = v
                scale_list = full
            if size_list is not None:
                full = list(t.shape)
                for ax, v in zip(axes, size_list):
                    full[ax] = v
                size_list = full
        if scale_list is not None:
            if len(scale_list) != t.rank or scale_list[0] != 1 or scale_list[1] != 1:
                raise Unexpressible(f"Resize scales {scale_list} change the batch or channel axis")
            spatial = scale_list[2:]
            if all(v == 1 for v in spatial):
                return [Dyn(x)]
            if not all(v >= 1 and float(v).is_integer() for v in spatial):
                raise Unexpressible(f"Resize by the scales {spatial}; upsample scales by whole factors")
            ints = [int(v) for v in spatial]
            attrs["scale"] = ints[0] if len(set(ints)) == 1 else ints
            integer = True
        elif size_list is not None:
            if len(size_list) != t.rank or size_list[0] != t.shape[0] or size_list[1] != t.shape[1]:
                raise Unexpressible("Resize sizes that change the batch or channel axis")
            spatial_sizes = size_list[2:]
            if not all(_static(v) for v in spatial_sizes):
                raise Unexpressible("Resize to a symbolic spatial size")
            if tuple(spatial_sizes) == tuple(t.shape[2:]):
                return [Dyn(x)]
            attrs["size"] = [int(v) for v in spatial_sizes] if n > 1 else int(spatial_sizes[0])
            integer = all(_static(i) and o % i == 0 for o, i in zip(spatial_sizes, t.shape[2:]))
        else:
            raise Unexpressible("Resize needs constant scales or sizes")
        if mode == "nearest":
            floor_like = (coord == "asymmetric" and nearest_mode == "floor") or (
                integer and coord in ("half_pixel", "pytorch_half_pixel") and nearest_mode in
                ("round_prefer_floor", "round_prefer_ceil"))
            if not floor_like:
                raise Unexpressible(f"nearest Resize with coordinate_transformation_mode={coord} and "
                                    f"nearest_mode={nearest_mode}; PyTorch's nearest picks floor(i · in / out)")
        elif mode == "linear":
            attrs["mode"] = "bilinear" if n == 2 else "linear"
            if coord == "align_corners":
                attrs["align_corners"] = True
            elif coord not in ("half_pixel", "pytorch_half_pixel"):
                raise Unexpressible(f"linear Resize with coordinate_transformation_mode={coord}")
            elif coord == "pytorch_half_pixel" and "size" in attrs and any(
                    v == 1 for v in ([attrs["size"]] if isinstance(attrs["size"], int) else attrs["size"])):
                raise Unexpressible("pytorch_half_pixel Resize to a size of 1")
        else:
            raise Unexpressible(f"Resize mode {mode}; upsample has nearest and (bi)linear")
        return [Dyn(self.emit("upsample", attrs, [x], node.name)[0])]

    def op_GlobalAveragePool(self, node, ins, a):
        return self._global(node, ins, "avg")

    def op_GlobalMaxPool(self, node, ins, a):
        return self._global(node, ins, "max")

    def _reduce(self, node, ins, a, kind: str):
        t = self.shape(self.dyn(ins[0]))
        axes = a.get("axes")
        if axes is None and len(ins) > 1 and ins[1] is not None:
            axes = _as_int_list(ins[1], f"{node.op_type} axes")
        rank = len(t)
        keepdims = bool(a.get("keepdims", 1))
        if rank == 3 and axes is not None and [ax % rank for ax in axes] == [1] and kind != "sum":
            # the mean (max) over the steps of [N, T, F]: a global pool over the last axis of [N, F, T]
            x = self.materialize(self.permute(self.dyn(ins[0]), (0, 2, 1)), node.name)
            v = self.emit(f"global_{kind}pool1d", {}, [x], node.name)[0]
            return [Dyn(self.emit("unsqueeze", {"axis": 1}, [v], node.name)[0] if keepdims else v)]
        if axes is not None and sorted(ax % rank for ax in axes) == list(range(2, rank)) and rank in (3, 4) \
                and kind != "sum":
            return self._global(node, ins, kind, keepdims=keepdims)
        if axes is None or not axes:
            if a.get("noop_with_empty_axes", 0) and axes is not None:
                return [ins[0]]
            raise Unexpressible(f"{node.op_type} over every axis, the batch axis included")
        x = self.materialize(self.dyn(ins[0]), node.name)
        op = {"avg": "reduce_mean", "max": "reduce_max", "sum": "reduce_sum"}[kind]
        norm = sorted(ax % rank for ax in axes)
        attrs: dict[str, Any] = {"axes": norm[0] if len(norm) == 1 else norm}
        if keepdims:
            attrs["keepdims"] = True
        return [Dyn(self.emit(op, attrs, [x], node.name)[0])]

    def op_ReduceMean(self, node, ins, a):
        return self._reduce(node, ins, a, "avg")

    def op_ReduceSum(self, node, ins, a):
        return self._reduce(node, ins, a, "sum")

    def op_ReduceMax(self, node, ins, a):
        return self._reduce(node, ins, a, "max")

    # ---- element-wise arithmetic ------------------------------------------------------------------
    def op_Add(self, node, ins, a):
        return self._arith(node, ins, "add")

    def op_Sub(self, node, ins, a):
        return self._arith(node, ins, "sub")

    def op_Mul(self, node, ins, a):
        return self._arith(node, ins, "mul")

    def op_Div(self, node, ins, a):
        return self._arith(node, ins, "div")

    def op_Neg(self, node, ins, a):
        x, _ = self.x(node, ins)
        return [Dyn(self.emit("mul", {"scalar": -1.0}, [x], node.name)[0])]

    def op_Exp(self, node, ins, a):
        return self.simple("exp")(node, ins, a)

    def op_Log(self, node, ins, a):
        return self.simple("log")(node, ins, a)

    def op_Sqrt(self, node, ins, a):
        return self.simple("sqrt")(node, ins, a)

    def op_Abs(self, node, ins, a):
        return self.simple("absolute")(node, ins, a)

    def op_Reciprocal(self, node, ins, a):
        return self.simple("reciprocal")(node, ins, a)

    def op_Pow(self, node, ins, a):
        if isinstance(ins[0], Dyn) and isinstance(ins[1], Dyn):
            va, vb = self.materialize(ins[0], node.name), self.materialize(ins[1], node.name)
            if self.types[va].dtype != self.types[vb].dtype:
                raise Unexpressible("Pow with an exponent of another type than the base")
            return [Dyn(self.emit("pow", {}, [va, vb], node.name)[0])]
        x, _ = self.x(node, ins)
        c = self.const(ins[1], "the exponent of Pow")
        if c.size != 1:
            raise Unexpressible(f"Pow with a constant exponent of shape {list(c.shape)}; a scalar or a computed "
                                f"tensor imports")
        e = float(c.reshape(-1)[0])
        if e == 1.0:
            return [Dyn(x)]
        if e == 0.5:
            return [Dyn(self.emit("sqrt", {}, [x], node.name)[0])]
        if e == -1.0:
            return [Dyn(self.emit("reciprocal", {}, [x], node.name)[0])]
        return [Dyn(self.emit("pow", {"scalar": _f32(e)}, [x], node.name)[0])]

    def op_Equal(self, node, ins, a):
        return self._compare(node, ins, "equal")

    def op_Less(self, node, ins, a):
        return self._compare(node, ins, "less")

    def op_LessOrEqual(self, node, ins, a):
        return self._compare(node, ins, "less_equal")

    def op_Greater(self, node, ins, a):
        return self._compare(node, ins, "greater")

    def op_GreaterOrEqual(self, node, ins, a):
        return self._compare(node, ins, "greater_equal")

    _MIRRORED = {"equal": "equal", "less": "greater", "less_equal": "greater_equal", "greater": "less",
                 "greater_equal": "less_equal"}

    def _compare(self, node, ins, op: str):
        """Two computed tensors, or one and a constant scalar (`scalar=`; a constant on the left
        mirrors the comparison: 0 < x is x > 0)."""
        a, b = ins[0], ins[1]
        if isinstance(a, Dyn) and isinstance(b, Dyn):
            va, vb = self.materialize(a, node.name), self.materialize(b, node.name)
            if self.types[va].dtype != self.types[vb].dtype:
                raise Unexpressible(f"{node.op_type} of a {self.types[va].dtype} and a {self.types[vb].dtype} tensor")
            return [Dyn(self.emit(op, {}, [va, vb], node.name)[0])]
        if isinstance(a, Dyn):
            x, c = self.materialize(a, node.name), self.const(b, f"the second operand of {node.op_type}")
        else:
            x, c = self.materialize(self.dyn(b), node.name), self.const(a, f"the first operand of {node.op_type}")
            op = self._MIRRORED[op]
        if c.size != 1:
            raise Unexpressible(f"{node.op_type} with a constant of shape {list(c.shape)}; a scalar or a computed "
                                "tensor imports")
        return [Dyn(self.emit(op, {"scalar": float(c.reshape(-1)[0])}, [x], node.name)[0])]

    def op_Not(self, node, ins, a):
        x, _ = self.x(node, ins)
        return [Dyn(self.emit("logical_not", {}, [x], node.name)[0])]

    def op_And(self, node, ins, a):
        return self._logical(node, ins, "logical_and")

    def op_Or(self, node, ins, a):
        return self._logical(node, ins, "logical_or")

    def op_Xor(self, node, ins, a):
        """a xor b = (a or b) and not (a and b)."""
        va, vb = self._bools(node, ins)
        either = self.emit("logical_or", {}, [va, vb], node.name)[0]
        both = self.emit("logical_not", {}, [self.emit("logical_and", {}, [va, vb], node.name)[0]], node.name)[0]
        return [Dyn(self.emit("logical_and", {}, [either, both], node.name)[0])]

    def _logical(self, node, ins, op: str):
        """Two computed bool tensors; a constant true (for And) or false (for Or) leaves the other."""
        consts = [v for v in ins[:2] if isinstance(v, Const)]
        if len(consts) == 1 and consts[0].array.size == 1 and bool(consts[0].array.reshape(-1)[0]) == (op == "logical_and"):
            return [next(v for v in ins[:2] if isinstance(v, Dyn))]
        return [Dyn(self.emit(op, {}, list(self._bools(node, ins)), node.name)[0])]

    def _bools(self, node, ins) -> tuple[str, str]:
        a, b = ins[0], ins[1]
        return (self.materialize(self.dyn(a, f"first operand of {node.op_type}"), node.name),
                self.materialize(self.dyn(b, f"second operand of {node.op_type}"), node.name))

    def op_Where(self, node, ins, a):
        """A computed condition; each value computed, or a constant scalar (masked_fill's)."""
        if not isinstance(ins[0], Dyn):
            raise Unexpressible("Where with a constant condition; a computed one (a comparison) imports")
        tensors, attrs, fills = [self.materialize(ins[0], node.name)], {}, []
        for key, v in zip(("a_value", "b_value"), ins[1:3]):
            if isinstance(v, Dyn):
                tensors.append(self.materialize(v, node.name))
                continue
            if isinstance(v, Fill):  # torch.ones_like(x) and the like: its one value, if its shape adds no axis
                attrs[key] = float(v.value)
                fills.append(v.shape)
                continue
            c = self.const(v, f"a value of {node.op_type}")
            if c.size != 1:
                raise Unexpressible(f"Where with a constant value of shape {list(c.shape)}; a scalar or a computed "
                                    "tensor imports")
            attrs[key] = float(c.reshape(-1)[0])
        if len(tensors) == 1:
            raise Unexpressible("Where choosing between two constants; one value must be computed")
        out = self.emit("where", attrs, tensors, node.name)[0]
        for shape in fills:
            try:
                grown = broadcast(self.types[out].shape, shape, "Where") != tuple(self.types[out].shape)
            except ShapeError:
                grown = True
            if grown:
                raise Unexpressible(f"Where with a filled value of shape {list(shape)} that widens its output "
                                    f"{self.types[out].shape_str()}")
        return [Dyn(out)]

    def op_Max(self, node, ins, a):
        return self._extremum(node, ins, "maximum")

    def op_Min(self, node, ins, a):
        return self._extremum(node, ins, "minimum")

    def _extremum(self, node, ins, op: str):
        """Variadic Max/Min: computed operands pairwise, constant scalars as `scalar=`."""
        dyns = [self.materialize(v, node.name) for v in ins if isinstance(v, Dyn)]
        consts = [self.const(v, f"an operand of {node.op_type}") for v in ins if v is not None and not isinstance(v, Dyn)]
        acc = dyns[0]
        for v in dyns[1:]:
            acc = self.emit(op, {}, [acc, v], node.name)[0]
        for c in consts:
            if c.size != 1:
                raise Unexpressible(f"{node.op_type} with a constant of shape {list(c.shape)}; only scalar "
                                    f"constants import")
            acc = self.emit(op, {"scalar": _f32(float(c.reshape(-1)[0]))}, [acc], node.name)[0]
        return [Dyn(acc)]

    def op_Sum(self, node, ins, a):
        vals = [self.materialize(self.dyn(v), node.name) for v in ins if v is not None]
        acc = vals[0]
        for v in vals[1:]:
            acc = self.emit("add", {}, [acc, v], node.name)[0]
        return [Dyn(acc)]

    def _arith(self, node, ins, op: str):
        a, b = ins[0], ins[1]
        if isinstance(a, Dyn) and isinstance(b, Dyn):
            va, vb = self.materialize(a, node.name), self.materialize(b, node.name)
            return [Dyn(self.emit(op, {}, [va, vb], node.name)[0])]
        if isinstance(a, Dyn):
            d, c, const_left = a, self.const(b, f"the second operand of {node.op_type}"), False
            dyn_name = node.input[0]
        else:
            d, c, const_left = self.dyn(b), self.const(a, f"the first operand of {node.op_type}"), True
            dyn_name = node.input[1]
        if c.size == 1 and d.groups is not None:  # element-wise: a merged view stays merged
            x = self.materialize(_with_groups(d, None), node.name)
            return [_with_groups(v, d.groups) for v in self._arith_scalar(node, x, c, op, const_left)]
        x = self.materialize(d, node.name)
        if c.size == 1:
            return self._arith_scalar(node, x, c, op, const_left)
        t = self.types[x]
        if _per_channel(c, t) is None and c.ndim <= t.rank:
            # a tensor of constants the same for every sample (a positional embedding): a parameter
            const = c.reshape((1,) * (t.rank - c.ndim) + c.shape)
            fits = all(k == 1 or k == s for k, s in zip(const.shape, t.shape))
            if const.shape[0] == 1 and fits:
                v = self._parameter(node, x, const.astype(np.float32), node.input[1 if not const_left else 0])
                return [Dyn(self.emit(op, {}, [v, x] if const_left else [x, v], node.name)[0])]
        if const_left and op in ("sub", "div"):
            raise Unexpressible(f"a constant tensor {'minus' if op == 'sub' else 'divided by'} a computed one")
        return [Dyn(self._affine(node, x, c, op, dyn_name))]

    def _arith_scalar(self, node, x: str, c: np.ndarray, op: str, const_left: bool) -> list[Dyn]:
        s = _f32(float(c.reshape(-1)[0]))
        if not const_left or op in ("add", "mul"):
            return [Dyn(self.emit(op, {"scalar": s}, [x], node.name)[0])]
        if op == "sub":  # c − x
            v = self.emit("mul", {"scalar": -1.0}, [x], node.name)[0]
            return [Dyn(self.emit("add", {"scalar": s}, [v], node.name)[0])]
        # c / x = c · (1 / x)
        v = self.emit("reciprocal", {}, [x], node.name)[0]
        return [Dyn(v if s == 1.0 else self.emit("mul", {"scalar": s}, [v], node.name)[0])]

    def _affine(self, node, x: str, c: np.ndarray, op: str, dyn_name: str) -> str:
        """x (op) c for a constant c with one value per channel (or per feature): folded into the bias
        of the layer that made x when it can be, else a depthwise 1×1 convolution or a diagonal dense."""
        t = self.types[x]
        per = _per_channel(c, t)
        if per is None:
            raise Unexpressible(f"{node.op_type} with a constant of shape {list(c.shape)} on a tensor "
                                f"{t.shape_str()}: only scalars and one value per channel import")
        axis, vec = per
        layer = self.producer_layer.get(x)
        foldable = (layer is not None and self.single_use(dyn_name) and len(layer.outputs) == 1
                    and self._bias_axis(layer) == axis and layer.name is not None)
        if foldable and op in ("add", "sub"):
            shift = vec if op == "add" else -vec
            layer.params["bias"] = (layer.params.get("bias", 0) + shift).astype(np.float32)
            layer.attrs.pop("bias", None)
            return x
        if foldable and op in ("mul", "div") and layer.op in ("groupnorm", "instance_norm"):
            factor = vec if op == "mul" else 1 / vec  # (x̂·w + b)·γ = x̂·(w·γ) + b·γ
            for k in ("weight", "bias"):
                layer.params[k] = (layer.params[k] * factor).astype(np.float32)
            return x
        size = vec.shape[0]
        scale = {"mul": vec, "div": 1 / vec}.get(op, np.ones_like(vec))
        shift = {"add": vec, "sub": -vec}.get(op)
        stem = self.stem(node) or ("shift" if op in ("add", "sub") else "scale")
        params: dict[str, np.ndarray] = {}
        if axis == -1:
            params["weight"] = np.diag(scale).astype(np.float32)
            attrs: dict[str, Any] = {"units": size}
            layer_op = "dense"
        else:
            n = t.rank - 2
            if n not in (1, 2, 3):
                raise Unexpressible(f"a per-channel {node.op_type} on a {t.rank}-D tensor")
            params["weight"] = scale.reshape(size, 1, *([1] * n)).astype(np.float32)
            attrs = {"out_channels": size, "kernel": 1, "groups": size}
            layer_op = f"conv{n}d"
        if shift is None:
            attrs["bias"] = False
        else:
            params["bias"] = shift.astype(np.float32)
        return self.emit(layer_op, attrs, [x], node.name, stem, params)[0]

    @staticmethod
    def _bias_axis(layer: Layer) -> int | None:
        if layer.op == "dense":
            return -1
        if layer.op.startswith(("conv", "conv_transpose")):
            return 1
        if layer.op in ("groupnorm", "instance_norm") and "bias" in layer.params:  # the affine ones
            return 1
        return None

    # ---- tensor shuffling --------------------------------------------------------------------------
    def op_Identity(self, node, ins, a):
        return [ins[0]]

    def op_Cast(self, node, ins, a):
        d = self.dyn(ins[0])
        to = ONNX_DTYPES.get(int(a["to"]))
        if to is None:
            raise Unexpressible(f"Cast to the ONNX element type {a['to']}, which dlspec has no dtype for")
        if to == self.dtype(d):
            return [d]
        return [Dyn(self.emit("cast", {"dtype": to}, [self.materialize(d, node.name)], node.name)[0])]

    def op_Dropout(self, node, ins, a):
        if len(node.output) > 1 and node.output[1] and self.uses.get(node.output[1]):
            raise Unexpressible("the mask output of Dropout is used")
        if len(ins) > 2 and ins[2] is not None and _scalar(ins[2], "Dropout training_mode"):
            raise Unexpressible("Dropout in training mode")
        p = _scalar(ins[1], "Dropout ratio") if len(ins) > 1 and ins[1] is not None else a.get("ratio", 0.5)
        x, _ = self.x(node, ins)
        p = _f32(p)
        return [Dyn(self.emit("dropout", {} if p == 0.5 else {"p": p}, [x], node.name)[0])]

    def op_Transpose(self, node, ins, a):
        d = self.dyn(ins[0])
        r = len(self.shape(d))
        perm = list(a.get("perm", range(r - 1, -1, -1)))
        return [self.permute(d, perm)]

    def op_Reshape(self, node, ins, a):
        d = self.dyn(ins[0])
        cur = self.shape(d)
        if isinstance(ins[1], SymArr):
            spec = list(ins[1].items)
        else:
            spec = _as_int_list(ins[1], "the Reshape shape")
        allowzero = a.get("allowzero", 0)
        out: list[Dim | None] = []
        for i, s in enumerate(spec):
            if isinstance(s, int) and s == 0 and not allowzero:
                out.append(cur[i])
            elif isinstance(s, int) and s == -1:
                out.append(None)
            else:
                out.append(s)
        if out.count(None) > 1:
            raise Unexpressible("Reshape with two -1 entries")
        if None in out:
            rest_total, rest_known = list(cur), []
            for o in out:
                if o is None:
                    continue
                if o in rest_total:
                    rest_total.remove(o)
                else:
                    rest_known.append(o)
            total, known = _prod(rest_total), _prod(rest_known)
            if not _static(known) or (_static(total) and total % known):
                raise Unexpressible(f"Reshape of {list(map(str, cur))} to {spec}")
            out = [total // known if o is None else o for o in out]
        return [self.reshape(d, tuple(out), node.name)]  # type: ignore[arg-type]

    def op_Flatten(self, node, ins, a):
        d = self.dyn(ins[0])
        cur = self.shape(d)
        axis = a.get("axis", 1)
        axis = axis + len(cur) if axis < 0 else axis
        if axis == 0:
            raise Unexpressible("Flatten with axis=0 merges the batch axis")
        if any(s != 1 for s in cur[1:axis]):
            raise Unexpressible(f"Flatten with axis={axis} merges the batch axis with others")
        return [self.reshape(d, (cur[0], _prod(cur[axis:])), node.name)]

    def _axes(self, node, ins, a) -> list[int] | None:
        if "axes" in a:
            return list(a["axes"])
        if len(ins) > 1 and ins[1] is not None:
            return _as_int_list(ins[1], f"{node.op_type} axes")
        return None

    def op_Squeeze(self, node, ins, a):
        d = self.dyn(ins[0])
        cur = self.shape(d)
        axes = self._axes(node, ins, a)
        axes = [i for i, s in enumerate(cur) if s == 1] if axes is None else [ax % len(cur) for ax in axes]
        target = tuple(s for i, s in enumerate(cur) if i not in axes)
        lazy = self._lazy_reshape(d, target)
        if lazy is not None:
            return [lazy]
        v = self.materialize(d, node.name)
        for ax in sorted(axes, reverse=True):
            v = self.emit("squeeze", {"axis": ax}, [v], node.name)[0]
        return [Dyn(v)]

    def op_Unsqueeze(self, node, ins, a):
        d = self.dyn(ins[0])
        cur = list(self.shape(d))
        axes = self._axes(node, ins, a) or []
        rank = len(cur) + len(axes)
        axes = sorted(ax % rank for ax in axes)
        target = list(cur)
        for ax in axes:
            target.insert(ax, 1)
        lazy = self._lazy_reshape(d, tuple(target))
        if lazy is None and d.groups is None:
            # a new axis 0 (torch's unsqueeze(0) before picking q, k, v): axes of size 1 at the end
            # of the view, permuted into place, since the view keeps the value's axis 0
            mid = tuple(d.view if d.view is not None else self.types[d.value].shape)
            old = iter(d.perm if d.perm is not None else range(len(mid)))
            new = iter(range(len(mid), len(target)))
            perm = tuple(next(new) if j in axes else next(old) for j in range(len(target)))
            lazy = Dyn(d.value, (*mid, *(1,) * len(axes)), perm)
        if lazy is not None:
            return [lazy]
        v = self.materialize(d, node.name)
        for ax in axes:
            v = self.emit("unsqueeze", {"axis": ax}, [v], node.name)[0]
        return [Dyn(v)]

    def op_ArgMax(self, node, ins, a):
        if a.get("select_last_index", 0):
            raise Unexpressible("ArgMax with select_last_index=1 (the last index on ties)")
        x, t = self.x(node, ins)
        attrs: dict[str, Any] = {"axis": int(a.get("axis", 0)) % t.rank}
        if a.get("keepdims", 1):
            attrs["keepdims"] = True
        return [Dyn(self.emit("argmax", attrs, [x], node.name)[0])]

    def op_TopK(self, node, ins, a):
        """TopK-10/11 (K an input; before 10 an attribute): `topk(k, axis, largest)`, sorted (an
        unsorted result may come in any order, so the sorted one is one of them)."""
        x, t = self.x(node, ins)
        k = a.get("k") if len(ins) < 2 or ins[1] is None else _as_int_list(ins[1], "the K of TopK")
        k = int(k[0] if isinstance(k, list) else k)
        attrs: dict[str, Any] = {"k": k, "axis": int(a.get("axis", -1)) % t.rank}
        if not a.get("largest", 1):
            attrs["largest"] = False
        return [Dyn(v) for v in self.emit("topk", attrs, [x], node.name)]

    def op_Tile(self, node, ins, a):
        x, t = self.x(node, ins)
        reps = _as_int_list(ins[1], "the Tile repeats")
        if len(reps) != t.rank or any(r < 1 for r in reps):
            raise Unexpressible(f"Tile repeats {reps} for a {t.rank}-D tensor")
        if all(r == 1 for r in reps):
            return [Dyn(x)]
        return [Dyn(self.emit("tile", {"reps": reps}, [x], node.name)[0])]

    def op_Concat(self, node, ins, a):
        vals = [self.materialize(self.dyn(v, "Concat input"), node.name) for v in ins if v is not None]
        if len(vals) == 1:
            return [Dyn(vals[0])]
        axis = int(a.get("axis", 1))
        return [Dyn(self.emit("concat", {"axis": axis}, vals, node.name)[0])]

    def op_Pad(self, node, ins, a):
        x, t = self.x(node, ins)
        if self.opset >= 11:
            pads = _as_int_list(ins[1], "the Pad pads")
            value = _scalar(ins[2], "the Pad value") if len(ins) > 2 and ins[2] is not None else 0.0
            if len(ins) > 3 and ins[3] is not None:
                axes = [ax % t.rank for ax in _as_int_list(ins[3], "the Pad axes")]
                full = [0] * (2 * t.rank)
                k = len(axes)
                for i, ax in enumerate(axes):
                    full[ax], full[ax + t.rank] = pads[i], pads[i + k]
                pads = full
        else:
            pads = list(a.get("pads", a.get("paddings", [])))
            value = float(a.get("value", 0.0))
        mode = {"constant": "constant", "reflect": "reflect", "edge": "replicate"}.get(a.get("mode", "constant"))
        if mode is None:
            raise Unexpressible(f"Pad mode {a.get('mode')!r}")
        r = t.rank
        before, after = pads[:r], pads[r:]
        if any(p < 0 for p in pads):
            raise Unexpressible("negative pads (cropping)")
        if before[0] or after[0]:
            raise Unexpressible("padding the batch axis")
        first = next((i for i in range(1, r) if before[i] or after[i]), None)
        if first is None:
            return [Dyn(x)]
        if mode != "constant" and first < 2:
            raise Unexpressible(f"{mode} padding of the channel axis")
        flat = [v for i in range(first, r) for v in (before[i], after[i])]
        attrs: dict[str, Any] = {"padding": flat}
        if mode != "constant":
            attrs["mode"] = mode
        if value:
            attrs["value"] = _f32(value)
        return [Dyn(self.emit("pad", attrs, [x], node.name)[0])]

    def op_Gather(self, node, ins, a):
        axis = int(a.get("axis", 0))
        if isinstance(ins[0], Const) and isinstance(ins[1], Dyn):
            table = np.asarray(ins[0].array)
            if axis != 0 or table.ndim != 2:
                raise Unexpressible("Gather from a constant imports only as an embedding (a 2-D table, axis 0)")
            ids = self.materialize(ins[1], node.name)
            out = self.emit("embedding", {"num": int(table.shape[0]), "dim": int(table.shape[1])}, [ids], node.name,
                            self.stem(node, node.input[0]), {"weight": table})
            return [Dyn(out[0])]
        d = self.dyn(ins[0])
        idx = self.const(ins[1], "the Gather indices")
        if idx.size != 1:
            raise Unexpressible("Gather of several indices from a computed tensor")
        i = int(idx.reshape(-1)[0])
        ax = axis % len(self.shape(d))
        size = self.shape(d)[ax]
        if idx.ndim == 0 and d.groups is None and (_static(size) or i in (0, -1)):
            picked = self._select_in_view(node, d, ax, i)
            if picked is not None:
                return [picked]
        if idx.ndim == 0 and ax != 0 and (_static(size) or i in (0, -1)):
            # one step of a sequence (out[:, -1] of an LSTM over a dynamic number of steps)
            v = self.materialize(d, node.name)
            return [Dyn(self.emit("select", {"axis": ax, "index": i if not _static(size) or i >= 0 else i + size},
                                  [v], node.name)[0])]
        if i < 0 and _static(size):
            i += size
        part = self._take(node, d, axis, i, i + 1)
        v = self.materialize(part, node.name)
        if idx.ndim == 0:
            ax = axis % len(self.shape(d))
            v = self.emit("squeeze", {"axis": ax}, [v], node.name)[0]
        return [Dyn(v)]

    def _select_in_view(self, node, d: Dyn, ax: int, i: int) -> Dyn | None:
        """x[..., i, ...] along axis `ax` of a view, as one `select` on the axis of the reshaped value
        it comes from, the permutation kept lazy (q, k and v picked from an exported attention's
        `[3, T, N, E]`, which is a permuted view of `[T, N, 3, E]`); None when that axis is the
        value's axis 0."""
        perm = d.perm if d.perm is not None else tuple(range(len(self.shape(d))))
        m = perm[ax]
        if m == 0:
            return None
        src = self.materialize(Dyn(d.value, d.view), node.name)
        size = self.types[src].shape[m]
        index = i + size if i < 0 and _static(size) else i
        out = self.emit("select", {"axis": m, "index": index}, [src], node.name)[0]
        rest = tuple(k - (k > m) for k in perm[:ax] + perm[ax + 1:])
        return Dyn(out, None, None if _perm_identity(rest) else rest)

    def _take(self, node, d: Dyn, axis: int, start: int, end: int) -> Dyn:
        """Elements [start, end) along `axis` of a computed tensor, with split."""
        shape = self.shape(d)
        ax = axis % len(shape)
        size = shape[ax]
        if not _static(size):
            big = 2**31 - 1
            one = {(-1, big): -1, (0, 1): 0}.get((start, min(end, big)))
            if one is not None and ax != 0:  # x[:, -1:] or x[:, :1] along a symbolic axis
                v = self.emit("select", {"axis": ax, "index": one}, [self.materialize(d, node.name)], node.name)[0]
                kept = len(self.types[v].shape)  # the axis put back as a view: a reshape may drop it again
                return Dyn(v, (*self.types[v].shape, 1), (*range(ax), kept, *range(ax, kept)))
            if start == 0 and end >= big:
                return d
            raise Unexpressible(f"slicing axis {ax}, whose size {size} is symbolic")
        start = max(0, min(size, start + size if start < 0 else start))
        end = max(start, min(size, end + size if end < 0 else end))
        if start == 0 and end == size:
            return d
        if start == end:
            raise Unexpressible("an empty slice")
        parts = [p for p in (start, end - start, size - end) if p]
        which = 0 if start == 0 else 1
        if d.perm is not None and d.groups is None and d.perm[ax] != 0:
            # along the reshaped value's own axis, the permutation kept lazy (q = qkv[0:1] of an
            # exported attention's permuted [3, N, H, T, d])
            m, src = d.perm[ax], self.materialize(Dyn(d.value, d.view), node.name)
            if end - start == 1:
                out = self.emit("select", {"axis": m, "index": start}, [src], node.name)[0]
                kept = self.types[out].shape
                return Dyn(out, (*kept, 1), tuple(len(kept) if k == m else k - (k > m) for k in d.perm))
            return Dyn(self.emit("split", {"parts": parts, "axis": m}, [src], node.name)[which], None, d.perm)
        v = self.materialize(d, node.name)
        outs = self.emit("split", {"parts": parts, "axis": ax}, [v], node.name)
        return Dyn(outs[which])

    def op_Slice(self, node, ins, a):
        d = self.dyn(ins[0])
        r = len(self.shape(d))
        if self.opset >= 10:
            starts = _as_int_list(ins[1], "Slice starts")
            ends = _as_int_list(ins[2], "Slice ends")
            axes = _as_int_list(ins[3], "Slice axes") if len(ins) > 3 and ins[3] is not None else list(range(len(starts)))
            steps = _as_int_list(ins[4], "Slice steps") if len(ins) > 4 and ins[4] is not None else [1] * len(starts)
        else:
            starts, ends = list(a["starts"]), list(a["ends"])
            axes = list(a.get("axes", range(len(starts))))
            steps = [1] * len(starts)
        for s, e, ax, st in zip(starts, ends, axes, steps):
            if st != 1:
                raise Unexpressible("Slice with a step other than 1")
            big = 2**62
            d = self._take(node, d, ax % r, max(min(s, big), -big), max(min(e, big), -big))
        return [d]

    def op_Split(self, node, ins, a):
        x, t = self.x(node, ins)
        axis = int(a.get("axis", 0)) % t.rank
        if "split" in a:
            parts = list(a["split"])
        elif len(ins) > 1 and ins[1] is not None:
            parts = _as_int_list(ins[1], "the Split sizes")
        else:
            n = int(a.get("num_outputs", len(node.output)))
            size = t.shape[axis]
            if not _static(size):
                raise Unexpressible("Split of a symbolic axis")
            chunk = -(-size // n)
            parts = [chunk] * (n - 1) + [size - chunk * (n - 1)]
        outs = self.emit("split", {"parts": parts, "axis": axis}, [x], node.name)
        return [Dyn(o) for o in outs]

    # ---- recurrent ---------------------------------------------------------------------------------
    def op_LSTM(self, node, ins, a):
        return self._recurrent(node, ins, a, "lstm")

    def op_GRU(self, node, ins, a):
        if not a.get("linear_before_reset", 0):
            raise Unexpressible("GRU with linear_before_reset=0; dlspec's GRU (PyTorch's) applies the reset gate "
                                "after the recurrent matmul, which is linear_before_reset=1")
        return self._recurrent(node, ins, a, "gru")

    def op_RNN(self, node, ins, a):
        return self._recurrent(node, ins, a, "rnn")

    def _recurrent(self, node, ins, a, op: str):
        """ONNX LSTM/GRU/RNN → the IR's batch-first layer with PyTorch's gate order and weights."""
        hidden = int(a["hidden_size"])
        direction = a.get("direction", "forward")
        if direction == "reverse":
            raise Unexpressible(f"{node.op_type} with direction=reverse")
        dirs = 2 if direction == "bidirectional" else 1
        if a.get("clip") is not None:
            raise Unexpressible(f"{node.op_type} with clip")
        if a.get("input_forget", 0):
            raise Unexpressible("LSTM with input_forget=1")
        defaults = {"lstm": ["Sigmoid", "Tanh", "Tanh"], "gru": ["Sigmoid", "Tanh"], "rnn": ["Tanh"]}[op]
        acts = [s if isinstance(s, str) else s.decode() for s in a.get("activations", defaults * dirs)]
        nonlin = "tanh"
        if op == "rnn" and acts and acts[0] == "Relu" and all(s == "Relu" for s in acts):
            nonlin = "relu"
        elif [s.lower() for s in acts] != [s.lower() for s in defaults * dirs]:
            raise Unexpressible(f"{node.op_type} with activations {acts}")
        layout = int(a.get("layout", 0))
        w = self.const(ins[1], f"the {node.op_type} W")
        r = self.const(ins[2], f"the {node.op_type} R")
        b = self.const(ins[3], f"the {node.op_type} B") if len(ins) > 3 and ins[3] is not None else None
        if len(ins) > 4 and ins[4] is not None:
            seq = ins[4]
            shape = self.shape(self.dyn(ins[0]))
            steps = shape[1] if layout else shape[0]
            if not (isinstance(seq, Const) and _static(steps) and np.all(seq.array == steps)):
                raise Unexpressible(f"{node.op_type} with sequence_lens (variable-length sequences)")
        if op == "lstm" and len(ins) > 7 and ins[7] is not None:
            if not np.all(self.const(ins[7], "the LSTM peepholes P") == 0):
                raise Unexpressible("LSTM with peephole connections")
        states: list[str] = []
        for k in ((5, 6) if op == "lstm" else (5,)):
            s = ins[k] if len(ins) > k else None
            if s is None or (isinstance(s, Fill) and s.value == 0) or (isinstance(s, Const) and not np.any(s.array)):
                continue
            sd = self.dyn(s, "initial state")
            states.append(self.materialize(self.permute(sd, (1, 0, 2)) if layout else sd, node.name))
        if op == "lstm" and len(states) == 1:
            raise Unexpressible("LSTM with only one of initial_h and initial_c")
        x = self.dyn(ins[0])
        xv = self.materialize(self.permute(x, (1, 0, 2)) if not layout else x, node.name)
        params: dict[str, np.ndarray] = {}

        gates = get_op(op).gates

        def reorder(m: np.ndarray) -> np.ndarray:  # ONNX's gate order → the canonical one
            return permute_gates(m, get_op(op), "onnx", to_framework=False)

        for dr in range(dirs):
            sfx = "l0" + ("_reverse" if dr else "")
            params[f"weight_ih_{sfx}"] = reorder(w[dr])
            params[f"weight_hh_{sfx}"] = reorder(r[dr])
            if b is not None:
                params[f"bias_ih_{sfx}"] = reorder(b[dr][: gates * hidden])
                params[f"bias_hh_{sfx}"] = reorder(b[dr][gates * hidden:])
        outs_used = [bool(o) and bool(self.uses.get(o)) for o in node.output]
        want_state = any(outs_used[1:])
        attrs: dict[str, Any] = {"hidden": hidden}
        if dirs == 2:
            attrs["bidirectional"] = True
        if b is None:
            attrs["bias"] = False
        if op == "rnn" and nonlin != "tanh":
            attrs["nonlinearity"] = nonlin
        if want_state:
            attrs["return_state"] = True
        stem = self.stem(node, node.input[1])
        outs = self.emit(op, attrs, [xv, *states], node.name, stem, params)
        y = outs[0]
        n, steps = self.types[y].shape[0], self.types[y].shape[1]
        view = (n, steps, dirs, hidden)
        result: list[Val | None] = [Dyn(y, view, None if layout else (1, 2, 0, 3))]
        for st in outs[1:]:
            result.append(Dyn(st, None, (1, 0, 2) if layout else None))
        return result

    # ---- patterns ----------------------------------------------------------------------------------
    def _find_gelu(self) -> None:
        """x·½·(1 + erf(x/√2)) as the PyTorch exporter writes it before opset 20 → one gelu."""
        nodes = list(self.graph.node)
        index = {id(n): i for i, n in enumerate(nodes)}

        def const_of(name: str) -> float | None:
            v = self.env.get(name)
            if isinstance(v, Const) and v.array.size == 1:
                return float(v.array.reshape(-1)[0])
            p = self.producers.get(name)
            if p is not None and p.op_type == "Constant":
                arr = _attributes(p).get("value")
                if arr is not None and np.asarray(arr).size == 1:
                    return float(np.asarray(arr).reshape(-1)[0])
            return None

        def other(node, name: str) -> str | None:
            ins = [i for i in node.input if i]
            return ins[1] if len(ins) == 2 and ins[0] == name else ins[0] if len(ins) == 2 and ins[1] == name else None

        for erf in nodes:
            if erf.op_type != "Erf":
                continue
            scale = self.producers.get(erf.input[0])
            if scale is None or scale.op_type not in ("Div", "Mul") or not self.single_use(erf.input[0]):
                continue
            xs = [i for i in scale.input if const_of(i) is None]
            c = [const_of(i) for i in scale.input if const_of(i) is not None]
            if len(xs) != 1 or len(c) != 1:
                continue
            factor = 1 / c[0] if scale.op_type == "Div" else c[0]
            if not math.isclose(factor, 1 / math.sqrt(2), rel_tol=1e-5):
                continue
            x = xs[0]
            add = self._sole_consumer(erf.output[0])
            if add is None or add.op_type != "Add" or const_of(other(add, erf.output[0]) or "") != 1.0:
                continue
            m1 = self._sole_consumer(add.output[0])
            if m1 is None or m1.op_type != "Mul":
                continue
            partner = other(m1, add.output[0])
            chain = [scale, erf, add]
            if partner == x or const_of(partner or "") == 0.5:
                # (x · (1 + erf)) · ½, or the dynamo exporter's x · (½ · (1 + erf))
                m2 = self._sole_consumer(m1.output[0])
                if m2 is None or m2.op_type != "Mul":
                    continue
                last_partner = other(m2, m1.output[0]) or ""
                wanted = const_of(last_partner) == 0.5 if partner == x else last_partner == x
                if not wanted:
                    continue
                chain += [m1]
                last = m2
            else:
                half = self.producers.get(partner or "")
                if half is None or half.op_type != "Mul" or not self.single_use(partner or "") or \
                        other(half, x) is None or const_of(other(half, x) or "") != 0.5:
                    continue
                chain += [half]
                last = m1
            for n in chain:
                self.skipped.add(index[id(n)])
            self.fused[index[id(last)]] = ("gelu", x)


def _symarr(items: tuple[Dim, ...], scalar: bool = False) -> Val:
    if all(_static(d) for d in items):
        arr = np.array([int(d) for d in items], dtype=np.int64)
        return Const(arr.reshape(()) if scalar else arr)
    return SymArr(tuple(items), scalar)


def _known_equal(x: Dim, y: Dim) -> bool:
    """Whether two sizes are equal, decided for every value of the symbols, or E742: a product of
    symbols (each at least 1) never equals a number below 1 (the -1 that torch's expand(n, -1)
    compares its sizes with)."""
    if x == y:
        return True
    if _static(x) and _static(y):
        return False
    sym, num = (x, y) if _static(y) else (y, x)
    if (_static(num) and num < 1 and len(sym.terms) == 1 and sym.terms[0][1] > 0
            and all(isinstance(atom, str) for atom in sym.terms[0][0])):
        return False
    raise Unexpressible(f"comparing the sizes {x} and {y}, which may or may not be equal")


def _per_channel(c: np.ndarray, t: TensorType) -> tuple[int, np.ndarray] | None:
    """(axis, values) when the constant c holds one value per channel (axis 1) or per feature (last axis)."""
    r = t.rank
    if c.ndim > r:
        return None
    shape = (1,) * (r - c.ndim) + tuple(c.shape)
    if shape[0] != 1:
        return None
    non1 = [i for i, s in enumerate(shape) if s != 1]
    if len(non1) != 1:
        return None
    ax = non1[0]
    if t.shape[ax] != shape[ax]:
        return None
    vec = np.asarray(c, dtype=np.float32).reshape(-1)
    if ax == r - 1 and r in (2, 3):
        return -1, vec
    if ax == 1 and r >= 3:
        return 1, vec
    return None


def _attributes(node) -> dict[str, Any]:
    from onnx import helper, numpy_helper

    out: dict[str, Any] = {}
    for attr in node.attribute:
        try:
            v = helper.get_attribute_value(attr)
            if isinstance(v, bytes):
                v = v.decode("utf-8", "replace")
            elif isinstance(v, list) and v and isinstance(v[0], bytes):
                v = [s.decode("utf-8", "replace") for s in v]
            elif attr.type == attr.TENSOR:
                v = numpy_helper.to_array(v)
        except Exception as exc:  # an attribute whose type field and value disagree, tensor data that does not fit
            raise _error("E740", f"ONNX node {_node_label(node)}: attribute `{attr.name}` cannot be read "
                                 f"({type(exc).__name__})", hint="give a .onnx file written by an ONNX exporter") from None
        out[attr.name] = v
    return out


def _fold_size(node, feeds: dict[str, np.ndarray], attrs: dict[str, Any]) -> int | None:
    """Elements a constant node would make, for the ops whose output size comes from input
    values rather than input sizes (ConstantOfShape, Expand, Tile, Range, ...); None otherwise."""
    ins = [feeds.get(n) if n else None for n in node.input]

    def ints(i: int) -> list[int] | None:
        if i >= len(ins) or ins[i] is None:
            return None
        try:
            return [int(x) for x in np.asarray(ins[i]).reshape(-1)[:64]]
        except (TypeError, ValueError, OverflowError):
            return None

    def prod(v) -> int:
        return math.prod(max(int(x), 0) for x in v)

    op = node.op_type
    try:
        if op == "ConstantOfShape":
            shape = ints(0)
            return prod(shape) if shape is not None else None
        if op == "Expand":
            shape = ints(1)
            x = ins[0]
            if shape is None or x is None:
                return None
            xs = list(np.shape(x))
            n = max(len(xs), len(shape))
            xs, shape = [1] * (n - len(xs)) + xs, [1] * (n - len(shape)) + shape
            return prod(max(a, b) for a, b in zip(xs, shape))
        if op == "Tile":
            reps = ints(1)
            x = ins[0]
            return int(np.size(x)) * prod(reps) if reps is not None and x is not None else None
        if op == "Range":
            vals = [np.asarray(ins[i]).reshape(-1)[0] if i < len(ins) and ins[i] is not None and np.size(ins[i]) else None
                    for i in range(3)]
            if any(v is None for v in vals) or float(vals[2]) == 0:
                return None
            return max(int(math.ceil((float(vals[1]) - float(vals[0])) / float(vals[2]))), 0)
        if op in ("OneHot",):
            depth = ints(1)
            return int(np.size(ins[0])) * (depth[0] if depth else 1) if ins[0] is not None else None
        if op in ("Resize", "Upsample"):
            scales = None
            if op == "Upsample" and "scales" in attrs:
                scales = list(attrs["scales"])
            elif len(ins) > 2 and ins[2] is not None and np.size(ins[2]):
                scales = [float(x) for x in np.asarray(ins[2]).reshape(-1)]
            if len(ins) > 3 and ins[3] is not None and np.size(ins[3]):
                return prod(ints(3) or [])
            if scales is not None and ins[0] is not None:
                return int(np.size(ins[0]) * math.prod(max(float(s), 0.0) for s in scales))
        if op == "Pad":
            pads = ints(1) if len(ins) > 1 else None
            pads = pads if pads is not None else list(attrs.get("pads", []))
            x = ins[0]
            if x is None or not pads:
                return None
            xs = list(np.shape(x))
            k = len(pads) // 2
            return prod(d + max(pads[i], 0) + max(pads[i + k], 0) for i, d in enumerate(xs[:k]))
    except (TypeError, ValueError, OverflowError, IndexError):
        return None
    return None


def _node_label(node) -> str:
    return f"`{node.name}`" if node.name else f"{node.op_type} → `{node.output[0] if node.output else '?'}`"
