"""`dlspec draw`: a model's graph as people draw networks, in Graphviz's DOT language.

Each block instance is a cluster labelled with its path and block (`layer1.0 · Basic`); with
`depth=N`, blocks nested deeper than N levels are drawn as one node each, with their layer and
parameter counts. A node shows its layer's name, op and the attributes that differ from the
op's defaults; an edge, the shape of the tensor it carries (without the batch axis); inputs and
outputs are marked; an edge that joins a merge (`add`, `concat`, ...) from anywhere but the
layer just before is drawn in colour, so skip connections stand out.

`to_dot` needs nothing; `render` runs Graphviz's `dot` for SVG and PNG.
"""

from __future__ import annotations

import html
import shutil
import subprocess
from pathlib import Path
from typing import Any

from pydantic_core import PydanticUndefined

from .errors import error
from .ir.graph import Graph

FORMATS = ("svg", "png", "dot")
INSTALL_HINT = ("install Graphviz (Debian/Ubuntu: apt-get install graphviz; macOS: brew install graphviz; "
                "conda: conda install graphviz), or write DOT with -o FILE.dot / --format dot")
MERGE_OPS = frozenset({"add", "sub", "mul", "div", "concat", "maximum", "minimum", "stack"})
SKIP_COLOUR = "#d62728"
_PALETTE = {  # fill colours by op category, light enough for black text
    "convolution": "#dbe9f6", "linear": "#fde0c5", "pooling": "#e2f0d9", "normalization": "#eeeeee",
    "activation": "#fff2cc", "recurrent": "#e6d9f2", "attention": "#f8d7e3", "regularization": "#f2f2f2",
    "merge": "#d9f2f2", "tensor": "#f2f2f2", "arithmetic": "#d9f2f2",
}


def _literal(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, tuple)):
        if len(v) and all(isinstance(x, int) and not isinstance(x, bool) for x in v):
            return "×".join(str(x) for x in v)
        return "[" + ", ".join(_literal(x) for x in v) + "]"
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


#: short names for attributes that appear on most pictures
SHORT = {"out_channels": "out", "kernel": "k", "stride": "s", "padding": "pad", "dilation": "dil", "groups": "groups",
         "num_heads": "heads", "hidden": "hidden", "bias": "bias", "return_state": "state", "return_sequences": "seq"}


def main_attrs(op_name: str, attrs: dict[str, Any], limit: int = 5) -> str:
    """The attributes worth reading on a picture: required ones and those set away from their
    defaults (`out 64, k 3, s 2, bias false`), at most `limit`."""
    from .ir.ops import REGISTRY

    op = REGISTRY.get(op_name)
    if op is None:
        return ""
    parts = []
    for name, f in op.Attrs.model_fields.items():
        if name not in attrs:
            continue
        v = attrs[name]
        label = SHORT.get(name, name)
        if f.default is PydanticUndefined:
            parts.append(f"{label} {_literal(v)}")
        elif v != f.default and not (isinstance(f.default, int) and isinstance(v, (list, tuple))
                                     and all(x == f.default for x in v)):
            parts.append(f"{label} {_literal(v)}")
    return ", ".join(parts[:limit]) + (", …" if len(parts) > limit else "")


def shape_label(t: Any) -> str:
    """A tensor's shape without the batch axis: `64×56×56`."""
    dims = list(t.shape)
    if dims and str(dims[0]) == "batch":
        dims = dims[1:]
    return "×".join(str(d) for d in dims) or "scalar"


def _q(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _h(s: str) -> str:
    return html.escape(s, quote=True)


def to_dot(g: Graph, blocks: dict[str, str] | None = None, depth: int | None = None) -> str:
    """The DOT text of a graph. `blocks` maps block-instance paths to block names (from the
    compiler; without it clusters are labelled by path alone)."""
    from .ir.ops import REGISTRY

    blocks = blocks or {}

    def scope_of(name: str) -> list[str]:
        parts = name.split(".")
        return [".".join(parts[:i]) for i in range(1, len(parts))]

    def shown(name: str) -> str:
        """The node a layer is drawn as: itself, or the block instance `depth` blocks down that
        holds it, collapsed (a repetition's `layer1` is a cluster, not a block level)."""
        scopes = [s for s in scope_of(name) if s in blocks] if blocks else scope_of(name)
        if depth is not None and len(scopes) > depth:
            return scopes[depth]
        return name

    producer: dict[str, str] = {}
    for n in g.nodes:
        for v in n.outputs:
            producer[v] = shown(n.name)
    for i in g.inputs:
        producer[i.name] = f"input:{i.name}"
    collapsed: dict[str, list] = {}
    for n in g.nodes:
        s = shown(n.name)
        if s != n.name:
            collapsed.setdefault(s, []).append(n)
    params: dict[str, int] = {}
    for p in g.params():
        if not p.buffer:
            params[p.node] = params.get(p.node, 0) + p.numel

    lines = ["digraph G {",
             '  graph [rankdir=TB, fontname="Helvetica", fontsize=11, nodesep=0.25, ranksep=0.3, '
             'newrank=true, compound=true, labeljust=l, margin=0.2];',
             '  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=10, '
             'fillcolor="#ffffff", color="#666666", margin="0.12,0.04", height=0.3];',
             '  edge [fontname="Helvetica", fontsize=8, color="#555555", fontcolor="#333333", arrowsize=0.6];']
    tree: dict[str, list[str]] = {"": []}  # cluster path -> node statements inside it
    children: dict[str, list[str]] = {"": []}

    def ensure(path: str) -> None:
        if path in tree:
            return
        parent = ".".join(path.split(".")[:-1])
        ensure(parent)
        tree[path] = []
        children[path] = []
        children[parent].append(path)

    for i in g.inputs:
        tree[""].append(f'  {_q("input:" + i.name)} [shape=invhouse, fillcolor="#c7e9c0", color="#31a354", '
                        f'label=<<b>{_h(i.name)}</b><br/>{_h(str(i.type))}>];')
    drawn: set[str] = set()
    for n in g.nodes:
        s = shown(n.name)
        if s in drawn:
            continue
        drawn.add(s)
        parent = ".".join(s.split(".")[:-1])
        ensure(parent)
        if s in collapsed:
            members = collapsed[s]
            count = sum(params.get(m.name, 0) for m in members)
            what = blocks.get(s, "block")
            label = (f"<<b>{_h(s.split('.')[-1])}</b> · {_h(what)}<br/>"
                     f"<font point-size=\"8\">{len(members)} layers, {_params(count)} params</font>>")
            tree[parent].append(f'  {_q(s)} [shape=box3d, style=filled, fillcolor="#dbe9f6", label={label}];')
            continue
        op = REGISTRY.get(n.op)
        fill = _PALETTE.get(op.category if op else "", "#ffffff")
        local = n.name.split(".")[-1]
        attrs = main_attrs(n.op, n.attrs)
        title = f"<b>{_h(n.op)}</b>" if local == n.op or local.startswith(n.op + "_") else \
            f"<b>{_h(local)}</b> {_h(n.op)}"
        label = f"<{title}" + (f"<br/><font point-size=\"8\">{_h(attrs)}</font>" if attrs else "") + ">"
        tree[parent].append(f'  {_q(s)} [fillcolor="{fill}", label={label}];')

    def emit(path: str, indent: str) -> None:
        for stmt in tree[path]:
            lines.append(indent + stmt.strip())
        for child in children[path]:
            name = blocks.get(child)
            label = child.split(".")[-1] + (f" · {name}" if name else "")
            lines.append(f"{indent}subgraph {_q('cluster_' + child)} {{")
            lines.append(f'{indent}  label=<<b>{_h(label)}</b>>; style="rounded,dashed"; color="#8c8c8c"; '
                         f'fontsize=10; fontcolor="#444444";')
            emit(child, indent + "  ")
            lines.append(f"{indent}}}")

    emit("", "  ")
    # a merge's skip inputs are those that come the shorter way: fewer layers since the inputs
    level: dict[str, int] = {i.name: 0 for i in g.inputs}
    for n in g.nodes:
        d = 1 + max((level.get(v, 0) for v in n.inputs), default=0)
        for v in n.outputs:
            level[v] = d
    seen_edges: set[tuple[str, str]] = set()
    for n in g.nodes:
        dst = shown(n.name)
        deepest = max((level.get(v, 0) for v in n.inputs), default=0)
        for v in n.inputs:
            src = producer.get(v)
            if src is None or src == dst or (src, dst) in seen_edges:
                continue
            seen_edges.add((src, dst))
            label = shape_label(g.values[v])
            skip = n.op in MERGE_OPS and len(set(n.inputs)) > 1 and level.get(v, 0) < deepest
            style = f', color="{SKIP_COLOUR}", fontcolor="{SKIP_COLOUR}", penwidth=1.4' if skip else ""
            lines.append(f"  {_q(src)} -> {_q(dst)} [label={_q(' ' + label)}{style}];")
    for o in g.outputs:
        out = f"output:{o.name}"
        lines.append(f'  {_q(out)} [shape=house, fillcolor="#fdd0a2", color="#e6550d", '
                     f'label=<<b>{_h(o.name)}</b><br/>{_h(str(g.values[o.value]))}>];')
        src = producer.get(o.value)
        if src is not None:
            lines.append(f"  {_q(src)} -> {_q(out)};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _params(n: int) -> str:
    for unit, div in (("M", 10**6), ("k", 10**3)):
        if n >= div:
            return f"{n / div:.3g}{unit}"
    return str(n)


def render(dot_text: str, path: Path, fmt: str) -> None:
    """Write the picture: DOT as text, SVG and PNG through Graphviz (`dot`), atomically."""
    from .io import atomic_write, atomic_write_text

    if fmt == "dot":
        atomic_write_text(path, dot_text)
        return
    exe = shutil.which("dot")
    if exe is None:
        raise error("E923", f"writing {fmt.upper()} needs Graphviz's `dot` program, which is not installed",
                    hint=INSTALL_HINT)

    def run(tmp: Path) -> None:
        try:
            proc = subprocess.run([exe, f"-T{fmt}", "-Gdpi=110" if fmt == "png" else "-Gdpi=72", "-o", str(tmp)],
                                  input=dot_text.encode("utf-8"), capture_output=True, timeout=300)
        except subprocess.TimeoutExpired:
            raise error("E924", "Graphviz's `dot` ran for more than 5 minutes",
                        hint="draw less: --depth 1 collapses the blocks") from None
        if proc.returncode != 0:
            raise error("E924", f"Graphviz's `dot` failed: {proc.stderr.decode('utf-8', 'replace').strip()[:500]}",
                        hint="write DOT with --format dot to look at what was given to it")

    atomic_write(path, run, suffix=f".{fmt}")


def block_paths(file: Path, overrides: dict | None = None) -> tuple[Any, dict[str, str]]:
    """Compile a spec, noting the block behind each block-instance path (`layer1.0` → `Basic`)."""
    from .program import compile_source, read_source

    paths: dict[str, str] = {}

    def observe(ev) -> None:
        claim = ev._claim_name

        def watched(scope, fn, base, span):
            path = claim(scope, fn, base, span)
            block = getattr(fn, "block", None)
            if block is not None:
                paths[path] = block.name
            return path

        ev._claim_name = watched

    src = read_source(file)
    return compile_source(src, overrides, observe=observe), paths
