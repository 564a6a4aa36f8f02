"""Common-subexpression elimination: two nodes with the same op, the same attributes and the
same inputs (in either order for `add` and `mul`) compute the same value when neither has parameters; the later one goes and its
readers read the earlier one.

    a = relu(x)
    b = relu(x)          # same op, attrs, input → b reads a
    y = a + b

Nodes with parameters are never merged: each has its own weights, which training updates
separately, so identical weights today are not identical weights tomorrow. Dropout is never
merged either (each application draws its own mask). Keeps training behaviour.
"""

from __future__ import annotations

import json

from ..ir.graph import Graph
from ..ir.ops import get_op
from .rewrite import Change, GraphEdit, PassResult, Weights

NAME = "cse"
SUMMARY = "merge nodes with the same op, attributes and inputs (and no parameters)"
INFERENCE_ONLY = False

def _has_state(graph: Graph, node) -> bool:
    op = get_op(node.op)
    attrs = op.attrs_from_dict(node.attrs)
    ins = [graph.values[v] for v in node.inputs]
    return bool(op.params(attrs, ins) or op.buffers(attrs, ins))


def run(graph: Graph, weights: Weights | None) -> PassResult:
    edit = GraphEdit(graph)
    seen: dict[tuple, str] = {}
    first: dict[str, object] = {}
    changes = []
    for node in graph.nodes:
        if get_op(node.op).stochastic or _has_state(graph, node):
            continue
        cur = edit.current(node)
        ins = tuple(sorted(cur.inputs)) if get_op(cur.op).commutative else cur.inputs
        key = (cur.op, json.dumps(cur.attrs, sort_keys=True, default=str), ins)
        prev = seen.get(key)
        if prev is None:
            seen[key] = node.name
            first[node.name] = node
            continue
        keep = first[prev]
        to = dict(zip(node.outputs, keep.outputs))
        if not all(edit.can_forward(old, new) for old, new in to.items()):
            continue
        edit.forward(node, to)
        changes.append(Change("merged", (node.name, prev), f"{node.op} `{node.name}` computes the same as `{prev}`"))
    return PassResult(edit.build(), weights, changes)
