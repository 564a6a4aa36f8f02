"""Removal of no-ops that keep training behaviour: ops whose output always equals their input.

Removed: `identity`; `reshape` and `flatten` to the shape the input already has; `dropout(p=0)`;
`pad` of zero width; `upsample` by 1; pooling with a 1-wide window, stride 1, no padding;
adaptive pooling to the size the input already has; `split` into one part; `squeeze` of an
axis that its `unsqueeze` just added; and arithmetic with a neutral scalar (`x + 0`, `x - 0`,
`x * 1`, `x / 1`).

    y = x -> reshape([64]) -> relu()   # x: float32[batch, 64]  →  y = relu(x)
"""

from __future__ import annotations

from typing import Any

from ..ir.graph import Graph, Node
from .rewrite import Change, GraphEdit, PassResult, Weights

NAME = "identities"
SUMMARY = "remove identity, same-shape reshape/flatten, dropout(p=0), zero padding, neutral scalar arithmetic"
INFERENCE_ONLY = False

_NEUTRAL = {"add": 0.0, "sub": 0.0, "mul": 1.0, "div": 1.0}
_POOLS = {"maxpool1d", "maxpool2d", "avgpool1d", "avgpool2d"}
_ADAPTIVE = {"adaptive_avgpool1d", "adaptive_avgpool2d", "adaptive_maxpool1d", "adaptive_maxpool2d"}


def _all(v: Any, want: int) -> bool:
    if isinstance(v, (list, tuple)):
        return all(x == want for x in v)
    return v == want


def why_noop(node: Node, graph: Graph, edit: GraphEdit) -> str | None:
    """Why `node` returns its (first) input unchanged, or None."""
    a = node.attrs
    op = node.op
    if len(node.outputs) != 1 or not node.inputs:
        return None
    x, y = graph.values[node.inputs[0]], graph.values[node.outputs[0]]
    if x != y:
        return None
    if op == "identity":
        return "identity"
    if op in ("reshape", "flatten"):
        return f"{op} to the shape it already has"
    if op == "dropout" and a.get("p") == 0:
        return "dropout with p=0"
    if op == "pad" and a.get("mode") == "constant" and _all(a.get("padding"), 0):
        return "padding of zero width"
    if op == "upsample":
        return "upsampling to the same size"
    if op in _POOLS and _all(a.get("kernel"), 1) and _all(a.get("stride") if a.get("stride") is not None else 1, 1) and _all(a.get("padding", 0), 0):
        return "pooling over a 1-wide window"
    if op in _ADAPTIVE:
        return "adaptive pooling to the size the input has"
    if op in _NEUTRAL and len(node.inputs) == 1 and a.get("scalar") == _NEUTRAL[op]:
        sym = {"add": "+", "sub": "-", "mul": "*", "div": "/"}[op]
        return f"`x {sym} {_NEUTRAL[op]:g}`"
    return None


def _cancels(node: Node, edit: GraphEdit, graph: Graph) -> str | None:
    """A squeeze of the axis its producing unsqueeze added, or an unsqueeze undoing a squeeze."""
    if node.op not in ("squeeze", "unsqueeze"):
        return None
    prod = edit.producers.get(node.inputs[0])
    other = {"squeeze": "unsqueeze", "unsqueeze": "squeeze"}[node.op]
    if prod is None or prod.op != other or edit.dropped(prod.name):
        return None
    src = prod.inputs[0]
    if graph.values[src] != graph.values[node.outputs[0]]:
        return None
    big = max(graph.values[src].rank, graph.values[prod.outputs[0]].rank)
    norm = [ax + big if ax < 0 else ax for ax in (node.attrs["axis"], prod.attrs["axis"])]
    if norm[0] != norm[1]:
        return None
    return f"{node.op} undoing the {prod.op} `{prod.name}`"


def run(graph: Graph, weights: Weights | None) -> PassResult:
    edit = GraphEdit(graph)
    changes = []
    for node in graph.nodes:
        why = why_noop(node, graph, edit)
        source = node.inputs[0] if node.inputs else None
        if why is None:
            why = _cancels(node, edit, graph)
            if why is not None:
                source = edit.producers[node.inputs[0]].inputs[0]
        if why is None or source is None or not edit.can_forward(node.outputs[0], source):
            continue
        edit.forward(node, {node.outputs[0]: source})
        changes.append(Change("removed", (node.name,), f"{node.op} `{node.name}`: {why}"))
    return PassResult(edit.build(), weights, changes)
