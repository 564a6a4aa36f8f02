"""IR layers → readable `.dls` text, checked by compiling it back.

`write_spec(imported, weights_file)` renders an `Imported` model as one `model Name { ... }`:
linear runs of single-consumer layers become `->` chains, a value used twice (or by a merge)
becomes a named variable, every layer with parameters is named with `as` so that parameter paths
(`conv1.weight`) are stable, and the header says how to load the weights. Structure the net
repeats is written as `block`s before the model (found by `blocks.find_blocks`), kept only when
that spec lowers to the same graph as the flat one.
`convert(onnx_path, spec_path)` does the whole import and verifies that the written spec lowers
to exactly the shapes and parameter paths of the converted graph.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import Diagnostic, DlspecError
from ..ir.graph import Graph
from ..ir.ops import get_op
from .blocks import _literal
from .onnx import Imported, Layer, Names, clean_name, import_model

LINE = 100


@dataclass
class SpecResult:
    """The written spec, its canonical weights, the lowered graph, and how ONNX names map to spec names."""

    text: str
    weights: dict[str, np.ndarray]
    graph: Graph
    input_names: dict[str, str]   # ONNX input name → spec input name
    output_names: dict[str, str]  # ONNX output name → spec output name
    imported: Imported


def _call(layer: Layer, tensors: list[str]) -> str:
    opdef = get_op(layer.op)
    fields = opdef.Attrs.model_fields
    attrs = {k: _literal(v) for k, v in layer.attrs.items()
             if not (k in fields and not fields[k].is_required() and _same(fields[k].default, v))}
    return _call_text(layer.op, attrs, tensors, layer.name)


def _call_text(op: str, attrs: dict[str, str], tensors: list[str], name: str | None) -> str:
    """`op(positional..., tensors..., key=value...) as name`, attributes already written as text."""
    attrs = dict(attrs)
    args: list[str] = []
    for k in get_op(op).positional:
        if k not in attrs:
            break
        args.append(attrs.pop(k))
    args += tensors
    args += [f"{k}={v}" for k, v in attrs.items()]
    text = f"{op}({', '.join(args)})"
    return f"{text} as {name}" if name else text


def _same(default: Any, v: Any) -> bool:
    if isinstance(default, bool) or isinstance(v, bool):
        return default is v
    if isinstance(v, (list, tuple)) and isinstance(default, (list, tuple)):
        return list(v) == list(default)
    return default == v and type(default) is type(v) or (isinstance(default, float) and isinstance(v, float)
                                                         and default == v)


class _Body:
    """The statements of a model or block body: linear runs of single-consumer layers become
    `->` chains, any other value a named variable (`stem` says its name)."""

    def __init__(self, items: list[Layer], keep: set[str], names: Names, var: dict[str, str],
                 stem: Callable[[str, dict[str, Layer]], str]):
        self.items = items
        self.names = names
        self.var = var
        self.stem = stem
        self.producer = {v: layer for layer in items for v in layer.outputs}
        self.uses: dict[str, int] = {}
        for layer in items:
            for v in layer.inputs:
                self.uses[v] = self.uses.get(v, 0) + 1
        self.keep = keep
        self.consumer = {v: layer for layer in items for v in layer.inputs}

    def inlined(self, v: str) -> bool:
        p = self.producer.get(v)
        return (p is not None and len(p.outputs) == 1 and self.uses.get(v, 0) == 1 and v not in self.keep
                and len(self.consumer[v].inputs) == 1)

    def var_name(self, v: str) -> str:
        if v not in self.var:
            self.var[v] = self.names.take(self.stem(v, self.producer), "value")
        return self.var[v]

    def statements(self, call: Callable[[Layer, list[str]], str]) -> list[tuple[Layer, str, list[str]]]:
        """(last layer, `targets = `, chain parts) per statement."""
        out = []
        for layer in self.items:
            if len(layer.outputs) == 1 and self.inlined(layer.outputs[0]):
                continue
            chain = [layer]
            while len(chain[0].inputs) == 1 and self.inlined(chain[0].inputs[0]):
                chain.insert(0, self.producer[chain[0].inputs[0]])
            head = chain[0]
            if len(head.inputs) == 1:
                parts = [self.var_name(head.inputs[0]), call(head, [])]
            else:
                parts = [call(head, [self.var_name(v) for v in head.inputs])]
            parts += [call(link, []) for link in chain[1:]]
            targets = ", ".join(self.var_name(v) for v in layer.outputs)
            out.append((layer, f"{targets} = ", parts))
        return out


def _fallback_stem(v: str, producer: dict[str, Layer]) -> str:
    # after the nearest named layer upstream: `conv2_out`; else after the op: `maxpool2d_out`
    layer = producer[v]
    while layer.name is None and len(layer.inputs) == 1 and layer.inputs[0] in producer:
        layer = producer[layer.inputs[0]]
    return f"{layer.name or producer[v].op}_out"


def write_spec(imp: Imported, weights_file: str, spec_file: str = "model.dls", renames: dict[str, str] | None = None,
               blocks: bool = True) -> tuple[str, dict[str, str], dict[str, str]]:
    """The spec text, and the ONNX → spec name maps for inputs and outputs.

    With `blocks`, structure the net repeats is written as `block`s (dlspec/importers/blocks.py)
    when the spec so written is shorter than the flat one and lowers to the same graph; the layers inside an
    instance are then renamed in `imp` to their paths (`layer1.0.conv1`), so that `imp.weights()`
    is keyed as the spec, and `renames` (when given) gets old name → new path."""
    if blocks:
        from .blocks import find_blocks

        try:
            plan = find_blocks(imp)
            written = _write(imp, weights_file, spec_file, plan) if plan is not None else None
        except (ValueError, TypeError, KeyError):  # a structure the block writer cannot write: the flat spec
            plan = written = None
        flat = _write(imp, weights_file, spec_file, None)
        if (plan is not None and written is not None and written[0].count("\n") < flat[0].count("\n")
                and _checks(imp, written, flat[0], plan, spec_file)):
            for i, path in plan.renames.items():
                if renames is not None:
                    renames[imp.layers[i].name] = path
                imp.layers[i].name = path
            return written
        return flat
    return _write(imp, weights_file, spec_file, None)


def _checks(imp: Imported, written: tuple[str, dict[str, str], dict[str, str]], flat: str, plan: Any,
            spec_file: str) -> bool:
    """Whether the spec written with blocks compiles to the imported graph's shapes and (renamed)
    parameters, and to the same layers, attributes and wiring as the flat spec."""
    from ..program import compile_source
    from ..source import SourceFile

    text, _, output_names = written
    weights = {f"{plan.renames.get(i, layer.name)}.{k}": v
               for i, layer in enumerate(imp.layers) for k, v in layer.params.items()}
    try:
        graph = compile_source(SourceFile(name=spec_file, text=text), base_dir=Path(".")).models[imp.name]
        _verify(graph, imp, weights, output_names)
        flat_graph = compile_source(SourceFile(name=spec_file, text=flat), base_dir=Path(".")).models[imp.name]
    except DlspecError:
        return False
    renamed = {imp.layers[i].name: path for i, path in plan.renames.items()}
    table: dict[tuple, int] = {}
    return _structure(graph, {}, table) == _structure(flat_graph, renamed, table)


def _structure(graph: Graph, renamed: dict[str, str], table: dict[tuple, int]) -> tuple[list[int], list[int]]:
    """The graph's layers and outputs as numbers that are equal where op, attributes, parameter
    path and (recursively) inputs are: the same for two graphs that compute alike."""
    with_params = {p.node for p in graph.params()}
    ids: dict[str, int] = {gi.name: table.setdefault(("input", gi.name), len(table)) for gi in graph.inputs}
    nodes = []
    for node in graph.nodes:
        name = renamed.get(node.name, node.name) if node.name in with_params else ""
        key = (node.op, json.dumps(node.attrs, sort_keys=True, default=str), name, tuple(ids[v] for v in node.inputs))
        nid = table.setdefault(key, len(table))
        nodes.append(nid)
        for j, v in enumerate(node.outputs):
            ids[v] = table.setdefault(("output", nid, j), len(table))
    return sorted(nodes), [ids[o.value] for o in graph.outputs]


def _write(imp: Imported, weights_file: str, spec_file: str, plan: Any) -> tuple[str, dict[str, str], dict[str, str]]:
    names = Names({imp.name, *imp.symbols})
    var: dict[str, str] = {}
    input_names: dict[str, str] = {}
    for mi in imp.inputs:
        var[mi.value] = names.take(clean_name(imp.hints[mi.value]) or "x", "x")
        input_names[imp.hints[mi.value]] = var[mi.value]
    output_names: dict[str, str] = {}
    out_items: list[tuple[str, str]] = []
    for onnx_name, value in imp.outputs:
        out_name = names.take(clean_name(onnx_name), "output")
        output_names[onnx_name] = out_name
        if value not in var:
            var[value] = out_name
        out_items.append((out_name, value))

    items, calls = list(imp.layers), {}
    definitions: list[str] = []
    if plan is not None:
        items, calls = _instances(imp, plan)
        for block in plan.blocks:
            names.used.add(block.name)
            definitions += _definition(imp, block) + [""]

    def stem(v: str, producer: dict[str, Layer]) -> str:
        return clean_name(imp.hints.get(v, "")) or _fallback_stem(v, producer)

    def call(layer: Layer, tensors: list[str]) -> str:
        return calls[id(layer)] if id(layer) in calls else _call(layer, tensors)

    body = _Body(items, {v for _, v in imp.outputs}, names, var, stem)
    lines_body = [_wrap(targets, parts) for _, targets, parts in body.statements(call)]

    def out_item(name: str, value: str) -> str:
        return name if var[value] == name else f"{name} = {var[value]}"

    decls = ", ".join(f"{var[mi.value]}: {mi.dtype}[{', '.join(str(d) for d in mi.shape)}]" for mi in imp.inputs)
    lines = _header(imp, weights_file, spec_file) + definitions
    lines.append(f"model {imp.name} {{")
    lines.append(f"    input {decls}")
    lines += ["    " + b for b in lines_body]
    lines.append("    output " + ", ".join(out_item(n, v) for n, v in out_items))
    lines.append("}")
    return "\n".join(lines) + "\n", input_names, output_names


def _instances(imp: Imported, plan: Any) -> tuple[list[Layer], dict[int, str]]:
    """The model's layers with each block instance replaced by one layer standing for it; a run of
    instances with the same arguments named `base.0`, `base.1`, … becomes `Block(...) * n as base`."""
    from .blocks import name_text

    users: dict[str, set[int]] = {}
    for k, layer in enumerate(imp.layers):
        for v in layer.inputs:
            users.setdefault(v, set()).add(k)
    outputs = {v for _, v in imp.outputs}
    items: list[Layer] = []
    calls: dict[int, str] = {}
    i = 0
    while i < len(imp.layers):
        if i not in plan.starts:
            items.append(imp.layers[i])
            i += 1
            continue
        block, o = plan.starts[i]
        run = [block.occurrences[o]]
        base = run[0].name[:-2] if run[0].name is not None and run[0].name.endswith(".0") else None
        while run[-1].stop in plan.starts and run[-1].exit not in outputs:
            nxt_block, nxt = plan.starts[run[-1].stop]
            occ = nxt_block.occurrences[nxt]
            if not users.get(run[-1].exit, set()) <= set(range(occ.start, occ.stop)):
                break  # the value between the two is used beyond the next instance
            named = occ.name == f"{base}.{len(run)}" if base is not None else occ.name is None and run[0].name is None
            if nxt_block is not block or block.args(nxt) != block.args(o) or not named:
                break
            run.append(occ)
        if len(run) == 1 or (base is None and run[0].name is not None):
            run = run[:1]
            call = f"{block.name}({block.args(o)})" + (f" as {name_text(run[0].name)}" if run[0].name else "")
        else:
            call = f"{block.name}({block.args(o)}) * {len(run)}" + (f" as {name_text(base)}" if base else "")
        stand_in = Layer(block.name, {}, [run[0].entry], [run[-1].exit], base if len(run) > 1 else run[0].name)
        calls[id(stand_in)] = call
        items.append(stand_in)
        i = run[-1].stop
    return items, calls


def _definition(imp: Imported, block: Any) -> list[str]:
    """`block Name(params) { input x ... output ... }`, written from the block's template occurrence."""
    from .blocks import name_text

    layers = [imp.layers[i] for i in block.template]
    position = {id(layer): p for p, layer in enumerate(layers)}
    entry = block.occurrences[next(o for o, occ in enumerate(block.occurrences) if occ.layers == block.template)].entry
    exit_ = next(occ.exit for occ in block.occurrences if occ.layers == block.template)
    params = [f"{q.name}: {q.type}" + (f" = {_literal(q.default)}" if q.has_default else "") for q in block.params]
    if block.flag is not None:
        params.append(f"{block.flag}: bool = false")
    names = Names({"x", *(q.name for q in block.params), *([block.flag] if block.flag else [])})
    var = {entry: "x"}

    def stem(v: str, producer: dict[str, Layer]) -> str:
        layer = producer[v]
        while layer.name is None and len(layer.inputs) == 1 and layer.inputs[0] in producer:
            layer = producer[layer.inputs[0]]
        inner = block.inner.get(position[id(layer)]) if layer.name is not None else None
        return f"{inner or producer[v].op}_out"

    def call(layer: Layer, tensors: list[str]) -> str:
        p = position[id(layer)]
        exprs = block.exprs.get(p, {})
        opdef = get_op(layer.op)
        fields = opdef.Attrs.model_fields
        attrs = {k: _literal(v) for k, v in layer.attrs.items() if k not in exprs
                 and not (k in fields and not fields[k].is_required() and _same(fields[k].default, v))}
        ordered = {k: attrs[k] if k in attrs else exprs[k] for k in [*fields, *layer.attrs] if k in attrs or k in exprs}
        name = name_text(block.inner[p]) if p in block.inner else None
        return _call_text(layer.op, ordered, tensors, name)

    body = _Body(layers, {exit_}, names, var, stem)
    chain_end = id(layers[block.chain[-1]]) if block.chain else None
    lines = [_wrap_list(f"block {block.name}", params, " {"), "    input x"]
    statements = body.statements(call)
    for k, (last, targets, parts) in enumerate(statements):
        if id(last) == chain_end:
            parts = ["(" + parts[0], *parts[1:]]
            text = _wrap(targets, parts) + f") if {block.flag} else x"
        elif k == len(statements) - 1 and last.outputs == [exit_]:
            text = _wrap("output ", parts)
        else:
            text = _wrap(targets, parts)
        lines.append("    " + text)
    if not statements or statements[-1][0].outputs != [exit_]:
        lines.append(f"    output {var[exit_]}")
    lines.append("}")
    return lines


def _wrap_list(head: str, items: list[str], tail: str) -> str:
    """`head(item, item, ...)tail` (no brackets when there are no items), broken after commas past LINE characters."""
    if not items:
        return head + tail
    lines = [head + "(" + items[0]]
    for item in items[1:]:
        if len(lines[-1]) + len(item) + 2 + len(tail) + 1 > LINE:
            lines[-1] += ","
            lines.append("        " + item)
        else:
            lines[-1] += ", " + item
    return "\n".join(lines) + ")" + tail


def _wrap(prefix: str, parts: list[str]) -> str:
    """`prefix part -> part -> ...`, broken before `->` when a line grows past LINE characters."""
    lines = [prefix + parts[0]]
    for p in parts[1:]:
        if len(lines[-1]) + 4 + len(p) > LINE:
            lines.append("        -> " + p)
        else:
            lines[-1] += " -> " + p
    return "\n    ".join(lines)


def _header(imp: Imported, weights_file: str, spec_file: str) -> list[str]:
    source = Path(imp.source).name
    made_by = f", made by {imp.producer}" if imp.producer else ""
    return [
        f"# Imported by `dlspec import` from {_comment(source)} (ONNX opset {imp.opset}{_comment(made_by)}).",
        f"# Weights: {_comment(weights_file)}, in the canonical (PyTorch) layout, keyed by this spec's",
        "# parameter paths (`<layer name>.<parameter>`). To use them:",
        f"#   dlspec.load({_comment(json.dumps(spec_file))}).build(\"torch\", weights={_comment(json.dumps(weights_file))})",
        f"#   dlspec compile {_comment(spec_file)} --target onnx --weights {_comment(weights_file)} -o model.onnx",
        "# or start a model of your own from them (see docs/import.md):",
        f"#   import \"{_comment(spec_file)}\"",
        f"#   model Finetuned from {imp.name} {{ weights = \"{_comment(weights_file)}\" }}",
        "",
    ]


def _comment(text: str) -> str:
    return re.sub(r"[\r\n]+", " ", text)


def convert(onnx_path: str | Path, spec_path: str | Path, name: str | None = None) -> SpecResult:
    """Import `onnx_path` as the spec that will be written at `spec_path` (nothing is written here)."""
    from ..program import compile_source
    from ..source import SourceFile

    spec_path = Path(spec_path)
    imp = import_model(onnx_path, name)
    weights_file = spec_path.with_suffix(".safetensors").name
    text, input_names, output_names = write_spec(imp, weights_file, spec_path.name)
    weights = imp.weights()
    try:
        program = compile_source(SourceFile(name=str(spec_path), text=text), base_dir=spec_path.parent)
    except DlspecError as exc:
        first = exc.diagnostics[0]
        raise DlspecError(Diagnostic(
            code="E744", message=f"the spec written for {onnx_path} does not check: [{first.code}] {first.message}",
            hint="this is a bug in the importer; please report it with the ONNX file")) from None
    graph = program.models[imp.name]
    _verify(graph, imp, weights, output_names)
    return SpecResult(text, weights, graph, input_names, output_names, imp)


def _verify(graph: Graph, imp: Imported, weights: dict[str, np.ndarray], output_names: dict[str, str]) -> None:
    problems = []
    params = {p.path: p for p in graph.params()}
    for path, p in params.items():
        arr = weights.get(path)
        if arr is None:
            problems.append(f"no weights for `{path}`")
        elif tuple(arr.shape) != tuple(int(d) for d in p.shape):
            problems.append(f"`{path}` is {list(arr.shape)}, the spec needs {[int(d) for d in p.shape]}")
    problems += [f"unused weights `{k}`" for k in weights if k not in params]
    spec_outputs = {o.name: graph.values[o.value] for o in graph.outputs}
    for onnx_name, value in imp.outputs:
        got = spec_outputs.get(output_names[onnx_name])
        if got is None or tuple(got.shape) != tuple(imp.types[value].shape):
            problems.append(f"output `{onnx_name}` is {got} in the spec, {imp.types[value]} in the import")
    if problems:
        raise DlspecError(Diagnostic(code="E744", message="the written spec does not match the imported graph: "
                                     + "; ".join(problems[:6]),
                                     hint="this is a bug in the importer; please report it with the ONNX file"))
