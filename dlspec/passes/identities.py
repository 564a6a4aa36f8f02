"""Removal of no-ops that keep training behaviour: ops whose output always equals their input.

Removed: `identity`; `reshape` and `flatten` to the shape the input already has; `dropout(p=0)`;
`pad` of zero width; `upsample` by 1; pooling with a 1-wide window, stride 1, no padding;
adaptive pooling to the size the input already has; `split` into one part; `squeeze` of an
axis that its `unsqueeze` just added; and arithmetic with a neutral scalar (`x + 0`, `x - 0`,
`x * 1`, `x / 1`).

    y = x -> reshape([64]) -> relu()   # x: float32[batch, 64]  →  y = relu(x)
"""

from __future__ import annotations

from ..ir.graph import Graph, Node
from ..ir.ops import get_op
from .rewrite import Change, GraphEdit, PassResult, Weights

NAME = "identities"
SUMMARY = "remove identity, same-shape reshape/flatten, dropout(p=0), zero padding, neutral scalar arithmetic"
INFERENCE_ONLY = False

def why_noop(node: Node, graph: Graph, edit: GraphEdit) -> str | None:
    """Why `node` returns its (first) input unchanged, or None: its output has its input's type
    and its op's catalogue entry says why (`OpDef.noop_reason`)."""
    if len(node.outputs) != 1 or not node.inputs:
        return None
    x, y = graph.values[node.inputs[0]], graph.values[node.outputs[0]]
    if x != y:
        return None
    op = get_op(node.op)
    return op.noop_reason(op.attrs_from_dict(node.attrs), [graph.values[v] for v in node.inputs], [y])


def _cancels(node: Node, edit: GraphEdit, graph: Graph) -> str | None:
    """A squeeze of the axis its producing unsqueeze added, or an unsqueeze undoing a squeeze."""
    other = get_op(node.op).inverse
    if other is None:
        return None
    prod = edit.producers.get(node.inputs[0])
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
