"""Dead-code elimination: drop nodes none of whose outputs reaches a model output.

    a = x -> dense(8)          # read by nothing
    y = x -> dense(4)
    output y                   # → the `a` layer and its parameters go

Keeps training behaviour: a value nothing reads takes no part in the loss. Removed parameters
are reported, since a weights file of the unoptimized model holds them.
"""

from __future__ import annotations

from ..ir.graph import Graph
from .rewrite import Change, GraphEdit, PassResult, Weights

NAME = "dead_code"
SUMMARY = "drop nodes whose outputs no model output depends on"
INFERENCE_ONLY = False


def run(graph: Graph, weights: Weights | None) -> PassResult:
    live = {o.value for o in graph.outputs}
    edit = GraphEdit(graph)
    dead = []
    for node in reversed(graph.nodes):
        if any(v in live for v in node.outputs):
            live.update(node.inputs)
        else:
            edit.drop(node)
            dead.append(node)
    changes = [Change("removed", (n.name,), f"{n.op} `{n.name}`: no output depends on it") for n in reversed(dead)]
    return PassResult(edit.build(), weights, changes)
