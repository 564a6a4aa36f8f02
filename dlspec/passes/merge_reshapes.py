"""Consecutive reshapes merge: `reshape(reshape(x, a), b)` is `reshape(x, b)`, and a reshape
after a `flatten` that keeps the batch axis reads the flatten's input directly. The inner one
goes when nothing else reads it (a reshape back to the input's shape is then removed by
`identities` at the next optimization run, or here directly).

    y = x -> reshape([4, 16]) -> reshape([8, 8])     →   y = x -> reshape([8, 8])

Keeps training behaviour: a reshape only reinterprets the same contiguous values.
"""

from __future__ import annotations

from ..ir.graph import Graph
from .rewrite import Change, GraphEdit, PassResult, Weights, only_reader

NAME = "merge_reshapes"
SUMMARY = "merge consecutive reshapes (and flatten → reshape) into one reshape"
INFERENCE_ONLY = False


def run(graph: Graph, weights: Weights | None) -> PassResult:
    edit = GraphEdit(graph)
    changes = []
    for node in graph.nodes:
        if node.op != "reshape":
            continue
        cur = edit.current(node)
        inner = edit.producers.get(cur.inputs[0])
        if inner is None or edit.dropped(inner.name) or not only_reader(edit, inner.outputs[0]):
            continue
        if not (inner.op == "reshape" or (inner.op == "flatten" and inner.attrs.get("start", 1) in (1, -graph.values[inner.inputs[0]].rank + 1))):
            continue
        inner = edit.current(inner)
        src = inner.inputs[0]
        edit.drop(inner)
        if graph.values[src] == graph.values[node.outputs[0]] and edit.can_forward(node.outputs[0], src):
            edit.forward(node, {node.outputs[0]: src})
            changes.append(Change("removed", (inner.name, node.name),
                                  f"{inner.op} `{inner.name}` and reshape `{node.name}` restore the input's shape"))
        else:
            edit.replace(node, cur.model_copy(update={"inputs": (src,)}))
            changes.append(Change("merged", (inner.name, node.name),
                                  f"{inner.op} `{inner.name}` and reshape `{node.name}` → one reshape"))
    return PassResult(edit.build(), weights, changes)
