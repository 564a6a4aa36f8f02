"""IR layers → readable `.dls` text, checked by compiling it back.

`write_spec(imported, weights_file)` renders an `Imported` model as one `model Name { ... }`:
linear runs of single-consumer layers become `->` chains, a value used twice (or by a merge)
becomes a named variable, every layer with parameters is named with `as` so that parameter paths
(`conv1.weight`) are stable, and the header says how to load the weights.
`convert(onnx_path, spec_path)` does the whole import and verifies that the written spec lowers
to exactly the shapes and parameter paths of the converted graph.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import Diagnostic, DlspecError
from ..ir.graph import Graph
from ..ir.ops import get_op
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


def _literal(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "none"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        f = float(v)
        if np.isinf(f):
            return "inf" if f > 0 else "-inf"
        if not np.isfinite(f):
            raise ValueError(f"non-finite attribute value {f}")
        return repr(f)
    if isinstance(v, str):
        return v
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_literal(x) for x in v) + "]"
    raise TypeError(f"cannot write {v!r} in a spec")


def _call(layer: Layer, tensors: list[str]) -> str:
    opdef = get_op(layer.op)
    fields = opdef.Attrs.model_fields
    attrs = {k: v for k, v in layer.attrs.items()
             if not (k in fields and not fields[k].is_required() and _same(fields[k].default, v))}
    args: list[str] = []
    for k in opdef.positional:
        if k not in attrs:
            break
        args.append(_literal(attrs.pop(k)))
    args += tensors
    args += [f"{k}={_literal(v)}" for k, v in attrs.items()]
    text = f"{layer.op}({', '.join(args)})"
    return f"{text} as {layer.name}" if layer.name else text


def _same(default: Any, v: Any) -> bool:
    if isinstance(default, bool) or isinstance(v, bool):
        return default is v
    if isinstance(v, (list, tuple)) and isinstance(default, (list, tuple)):
        return list(v) == list(default)
    return default == v and type(default) is type(v) or (isinstance(default, float) and isinstance(v, float)
                                                         and default == v)


def write_spec(imp: Imported, weights_file: str, spec_file: str = "model.dls") -> tuple[str, dict[str, str], dict[str, str]]:
    """The spec text, and the ONNX → spec name maps for inputs and outputs."""
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

    producer = {v: layer for layer in imp.layers for v in layer.outputs}
    uses: dict[str, int] = {}
    for layer in imp.layers:
        for v in layer.inputs:
            uses[v] = uses.get(v, 0) + 1
    outputs = {v for _, v in imp.outputs}
    consumer = {v: layer for layer in imp.layers for v in layer.inputs}

    def inlined(v: str) -> bool:
        p = producer.get(v)
        return (p is not None and len(p.outputs) == 1 and uses.get(v, 0) == 1 and v not in outputs
                and len(consumer[v].inputs) == 1)

    def var_name(v: str) -> str:
        if v not in var:
            var[v] = names.take(clean_name(imp.hints.get(v, "")) or _fallback_stem(v), "value")
        return var[v]

    def _fallback_stem(v: str) -> str:
        # after the nearest named layer upstream: `conv2_out`; else after the op: `maxpool2d_out`
        layer = producer[v]
        while layer.name is None and len(layer.inputs) == 1 and layer.inputs[0] in producer:
            layer = producer[layer.inputs[0]]
        return f"{layer.name or producer[v].op}_out"

    body: list[str] = []
    for layer in imp.layers:
        if len(layer.outputs) == 1 and inlined(layer.outputs[0]):
            continue
        chain = [layer]
        while len(chain[0].inputs) == 1 and inlined(chain[0].inputs[0]):
            chain.insert(0, producer[chain[0].inputs[0]])
        head = chain[0]
        if len(head.inputs) == 1:
            parts = [var_name(head.inputs[0]), _call(head, [])]
        else:
            parts = [_call(head, [var_name(v) for v in head.inputs])]
        parts += [_call(link, []) for link in chain[1:]]
        targets = ", ".join(var_name(v) for v in layer.outputs)
        body.append(_wrap(f"{targets} = ", parts))

    def out_item(name: str, value: str) -> str:
        return name if var[value] == name else f"{name} = {var[value]}"

    decls = ", ".join(f"{var[mi.value]}: {mi.dtype}[{', '.join(str(d) for d in mi.shape)}]" for mi in imp.inputs)
    lines = _header(imp, weights_file, spec_file)
    lines.append(f"model {imp.name} {{")
    lines.append(f"    input {decls}")
    lines += ["    " + b for b in body]
    lines.append("    output " + ", ".join(out_item(n, v) for n, v in out_items))
    lines.append("}")
    return "\n".join(lines) + "\n", input_names, output_names


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
