"""Dropout removal for inference: `dropout` is the identity outside training, so an inference
export drops it. Level 2 only — training needs it.

    h = x -> dense(64) -> dropout(0.5) -> relu()     →   h = x -> dense(64) -> relu()
"""

from __future__ import annotations

from ..ir.graph import Graph
from .rewrite import Change, GraphEdit, PassResult, Weights

NAME = "remove_dropout"
SUMMARY = "remove dropout (the identity in inference)"
INFERENCE_ONLY = True


def run(graph: Graph, weights: Weights | None) -> PassResult:
    edit = GraphEdit(graph)
    changes = []
    for node in graph.nodes:
        if node.op != "dropout" or not edit.can_forward(node.outputs[0], node.inputs[0]):
            continue
        edit.forward(node, {node.outputs[0]: node.inputs[0]})
        changes.append(Change("removed", (node.name,), f"dropout `{node.name}` (p={node.attrs.get('p')}): identity in inference"))
    return PassResult(edit.build(), weights, changes)
