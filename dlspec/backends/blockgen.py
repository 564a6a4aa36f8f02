"""Spec blocks in generated source: which layers each block use holds, what flows in and out of
it, and which uses can share one class (or function) with constructor arguments.

The graph is flat; `Graph.blocks` says which layer paths were uses of which spec block. A use
becomes a *unit*: its own layers, the units nested in it, its inputs (values its layers read
that it does not make) and outputs (values it makes that something after it reads). A backend
renders every unit instance — constructor calls keyed by relative layer path, forward lines
with local names — and `classes` groups the instances of one block whose rendering differs only
in constructor arguments: those become one class, the differing arguments its parameters,
named after the block's own parameters where their values agree, else after the layer and
argument (`conv_in_channels`). A use whose layers are not contiguous in the graph, or that
makes nothing read outside it, stays inline in its parent.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from typing import Any

from ..ir.graph import Graph

#: names of the positional arguments of the constructors generated code calls
POSITIONAL: dict[str, tuple[str, ...]] = {
    "Conv": ("in_channels", "out_channels"), "ConvTranspose": ("in_channels", "out_channels"),
    "Linear": ("in_features", "out_features"), "BatchNorm": ("num_features",), "LayerNorm": ("normalized_shape",),
    "GroupNorm": ("num_groups", "num_channels"), "Embedding": ("num_embeddings", "embedding_dim"),
    "LSTM": ("input_size", "hidden_size"), "GRU": ("input_size", "hidden_size"), "RNN": ("input_size", "hidden_size"),
    "MultiheadAttention": ("embed_dim", "num_heads"), "TransformerEncoderLayer": ("d_model", "nhead"),
    "MaxPool": ("kernel_size",), "AvgPool": ("kernel_size",), "PReLU": ("num_parameters",), "Dropout": ("p",),
    "LeakyReLU": ("negative_slope",), "ELU": ("alpha",), "Flatten": ("start_dim", "end_dim"),
    "AdaptiveAvgPool": ("output_size",), "AdaptiveMaxPool": ("output_size",), "Hardtanh": ("min_val", "max_val"),
    "LocalResponseNorm": ("size",),
}


#: keyword arguments equal to their constructor's default, left out of generated calls (by the
#: constructor's name without its trailing dimension count)
DEFAULTS: dict[str, dict[str, Any]] = {
    "nn.Conv": {"stride": 1, "padding": 0, "dilation": 1, "groups": 1, "bias": True},
    "nn.ConvTranspose": {"stride": 1, "padding": 0, "output_padding": 0, "dilation": 1, "groups": 1, "bias": True},
    "nn.Linear": {"bias": True},
    "nn.BatchNorm": {"eps": 1e-05, "momentum": 0.1, "affine": True},
    "nn.LayerNorm": {"eps": 1e-05, "elementwise_affine": True},
    "nn.GroupNorm": {"eps": 1e-05, "affine": True},
    "nn.Embedding": {"padding_idx": None},
    "nn.LSTM": {"num_layers": 1, "bias": True, "dropout": 0.0, "bidirectional": False},
    "nn.GRU": {"num_layers": 1, "bias": True, "dropout": 0.0, "bidirectional": False},
    "nn.RNN": {"num_layers": 1, "bias": True, "dropout": 0.0, "bidirectional": False, "nonlinearity": "tanh"},
    "nn.MultiheadAttention": {"dropout": 0.0, "bias": True},
    "nn.TransformerEncoderLayer": {"dim_feedforward": 2048, "dropout": 0.1, "activation": "relu",
                                   "layer_norm_eps": 1e-05, "norm_first": False},
    "nn.MaxPool": {"padding": 0, "dilation": 1, "ceil_mode": False},
    "nn.AvgPool": {"padding": 0, "ceil_mode": False, "count_include_pad": True},
    "nn.GELU": {"approximate": "none"},
}


def without_defaults(expr: str) -> str:
    """`expr` without the keyword arguments that equal its constructor's defaults."""
    call = parse_call(expr)
    if call is None:
        return expr
    defaults = DEFAULTS.get(call.func.rstrip("123d") if call.func[-1:] == "d" else call.func, {})
    if not defaults:
        return expr
    kept = [(k, v) for k, v in call.args if k is None or k not in defaults or not _same(_value(v)[1], defaults[k])
            or not _value(v)[0]]
    return Call(call.func, kept).text()


@dataclass
class Unit:
    """One block use (or the model itself, path "")."""

    path: str
    block: str | None
    args: dict[str, Any]
    #: in graph order: ("node", Node) and ("unit", child path)
    items: list[tuple[str, Any]] = field(default_factory=list)
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)

    def rel(self, name: str) -> str:
        return name[len(self.path) + 1:] if self.path else name


def _within(name: str, path: str) -> bool:
    return name.startswith(path + ".")


def units(graph: Graph) -> dict[str, Unit]:
    """Every unit of the graph by path, the model's own ("") first."""
    index = {n.name: i for i, n in enumerate(graph.nodes)}
    cands = {p for p in graph.blocks if any(_within(n.name, p) for n in graph.nodes)}
    while True:
        dropped = set()
        for p in cands:
            idx = sorted(index[n.name] for n in graph.nodes if _within(n.name, p))
            if idx[-1] - idx[0] + 1 != len(idx):
                dropped.add(p)
            elif not _interface(graph, p)[1]:
                dropped.add(p)
        if not dropped:
            break
        cands -= dropped

    def owner(name: str) -> str:
        best = ""
        for p in cands:
            if _within(name, p) and len(p) > len(best):
                best = p
        return best

    out: dict[str, Unit] = {"": Unit("", None, {})}
    for p in sorted(cands, key=lambda p: index[next(n.name for n in graph.nodes if _within(n.name, p))]):
        use = graph.blocks[p]
        out[p] = Unit(p, use.block, dict(use.args))
    placed: set[str] = set()
    for node in graph.nodes:
        own = owner(node.name)
        # the units this node is the first of, outermost first, each placed in its parent
        chain = []
        p = own
        while p and p not in placed:
            chain.append(p)
            p = owner(p)
        for p in reversed(chain):
            out[owner(p)].items.append(("unit", p))
            placed.add(p)
        out[own].items.append(("node", node))
    for p, u in out.items():
        if p:
            u.inputs, u.outputs = _interface(graph, p)
        else:
            u.inputs = [gi.name for gi in graph.inputs]
            u.outputs = [o.value for o in graph.outputs]
    return out


def _interface(graph: Graph, path: str) -> tuple[list[str], list[str]]:
    inside = [n for n in graph.nodes if _within(n.name, path)]
    made = {v for n in inside for v in n.outputs}
    inputs: list[str] = []
    for n in inside:
        for v in n.inputs:
            if v not in made and v not in inputs:
                inputs.append(v)
    read_after: set[str] = {o.value for o in graph.outputs}
    for n in graph.nodes:
        if not _within(n.name, path):
            read_after.update(n.inputs)
    outputs = [v for n in inside for v in n.outputs if v in read_after]
    return inputs, outputs


# ---- grouping instances into classes --------------------------------------------------------


@dataclass
class Call:
    """A constructor call split into its parts: `func(args..., kw=...)` (texts as written)."""

    func: str
    args: list[tuple[str | None, str]]

    def shape(self) -> tuple:
        return (self.func, tuple(k if k is not None else i for i, (k, _) in enumerate(self.args)))

    def text(self, values: list[str] | None = None) -> str:
        vals = values if values is not None else [v for _, v in self.args]
        return self.func + "(" + ", ".join(v if k is None else f"{k}={v}" for (k, _), v in zip(self.args, vals)) + ")"


def parse_call(expr: str) -> Call | None:
    try:
        node = ast.parse(expr, mode="eval").body
    except SyntaxError:
        return None
    if not isinstance(node, ast.Call) or any(kw.arg is None for kw in node.keywords):
        return None
    seg = lambda n: ast.get_source_segment(expr, n)  # noqa: E731
    return Call(seg(node.func), [(None, seg(a)) for a in node.args] + [(kw.arg, seg(kw.value)) for kw in node.keywords])


@dataclass
class Instance:
    """One unit rendered by a backend: its constructor entries and its body."""

    unit: Unit
    #: (relative layer path, constructor expression)
    entries: list[tuple[str, str]]
    body: list[str]
    #: names the backend may pass as extra naming candidates (`in_channels`: the input's channels)
    known: dict[str, Any] = field(default_factory=dict)


@dataclass
class Class:
    name: str
    block: str
    instances: list[Instance]
    #: parameter name → annotation ("" for none), in signature order
    params: dict[str, str]
    #: per entry: the constructor call text with parameters in place
    entries: list[tuple[str, str]]
    #: per instance: the argument values by parameter name (source text)
    calls: list[dict[str, str]]


def _value(text: str) -> tuple[bool, Any]:
    try:
        return True, ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return False, None


def _same(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b


def _annotation(values: list[Any]) -> str:
    kinds = {type(v) for v in values}
    if kinds == {bool}:
        return "bool"
    if kinds == {int}:
        return "int"
    if kinds <= {int, float} and float in kinds:
        return "float"
    if kinds == {str}:
        return "str"
    if kinds == {tuple}:
        return "tuple"
    return ""


def _slot_name(call: Call, index: int) -> str:
    kw = call.args[index][0]
    if kw is not None:
        return kw
    base = call.func.rsplit(".", 1)[-1].rstrip("123d") if call.func.startswith("nn.") else call.func
    names = POSITIONAL.get(base, ())
    return names[index] if index < len(names) else f"arg{index}"


def classes(instances: list[Instance], key_extra, ident) -> list[Class]:
    """Group the instances of each block into classes. `key_extra(instance)` adds what else must
    agree for two instances to share a class; `ident(name, used)` makes a parameter name."""
    groups: dict[tuple, list[Instance]] = {}
    order: list[tuple] = []
    for inst in instances:
        calls = [parse_call(e) for _, e in inst.entries]
        shapes = tuple((rel, c.shape() if c is not None else e) for (rel, e), c in zip(inst.entries, calls))
        key = (inst.unit.block, shapes, tuple(inst.body), key_extra(inst))
        if key not in groups:
            groups[key] = []
            order.append(key)
        groups[key].append(inst)
    out: list[Class] = []
    for key in order:
        insts = groups[key]
        out.append(_parameterize(insts, ident))
    return out


def _parameterize(insts: list[Instance], ident) -> Class:
    first = insts[0]
    calls = [[parse_call(e) for _, e in inst.entries] for inst in insts]
    cand_order = [k for k in first.unit.args if k not in first.known] + list(first.known)

    def candidates(i: int) -> dict[str, Any]:
        return {**insts[i].unit.args, **insts[i].known}

    used: set[str] = set()
    params: dict[str, str] = {}
    values: dict[str, list[str]] = {}
    entries: list[tuple[str, str]] = []
    for e, (rel, expr) in enumerate(first.entries):
        call = calls[0][e]
        if call is None:
            entries.append((rel, expr))
            continue
        texts: list[str] = []
        for j in range(len(call.args)):
            col = [calls[i][e].args[j][1] for i in range(len(insts))]
            parsed = [_value(t) for t in col]
            literal = all(ok for ok, _ in parsed)
            vals = [v for _, v in parsed]
            varies = any(t != col[0] for t in col)
            name = None
            if literal:
                slot = _slot_name(call, j)
                order = ([slot] if slot in cand_order else []) + [c for c in cand_order if c != slot]
                matches = [c for c in order
                           if all(c in candidates(i) and _same(candidates(i)[c], vals[i]) for i in range(len(insts)))]
                trivial = isinstance(vals[0], bool) or vals[0] in (0, 1, -1, None) or isinstance(vals[0], tuple)
                if matches and (varies or not trivial):
                    name = matches[0]
            if name is None and varies:
                name = f"{rel}_{_slot_name(call, j)}"
            if name is None:
                texts.append(col[0])
                continue
            pname = ident(name, None)
            if pname not in params:
                if pname in used:
                    pname = ident(name, used)
                used.add(pname)
                params[pname] = _annotation(vals) if literal else ""
                values[pname] = col
            elif values[pname] != col:  # a generated name met twice with other values
                pname = ident(name, used)
                params[pname] = _annotation(vals) if literal else ""
                values[pname] = col
            texts.append(pname)
        entries.append((rel, call.text(texts)))
    known_first = [p for p in params if p in first.known]
    block_params = [p for p in cand_order if p in params and p not in known_first]
    rest = [p for p in params if p not in known_first and p not in block_params]
    ordered = {p: params[p] for p in known_first + block_params + rest}
    per_call = [{p: values[p][i] for p in ordered} for i in range(len(insts))]
    return Class("", first.unit.block or "", insts, ordered, entries, per_call)
