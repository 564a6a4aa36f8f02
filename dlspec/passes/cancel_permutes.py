"""Permute pairs: `permute(permute(x, p), q)` is `x` when q undoes p, else one permute by the
composition. The first permute goes when nothing else reads it.

    y = x -> permute([0, 2, 1]) -> permute([0, 2, 1])     →   y = x

Keeps training behaviour (a permutation moves values; gradients move back the same way).
"""

from __future__ import annotations

from ..ir.graph import Graph
from .rewrite import Change, GraphEdit, PassResult, Weights, only_reader

NAME = "cancel_permutes"
SUMMARY = "remove permute pairs that cancel; merge other consecutive permutes into one"
INFERENCE_ONLY = False


def _norm(dims, rank: int) -> list[int]:
    return [d + rank if d < 0 else d for d in dims]


def run(graph: Graph, weights: Weights | None) -> PassResult:
    edit = GraphEdit(graph)
    changes = []
    for node in graph.nodes:
        if node.op != "permute":
            continue
        cur = edit.current(node)
        inner = edit.producers.get(cur.inputs[0])
        if inner is None or inner.op != "permute" or edit.dropped(inner.name):
            continue
        inner = edit.current(inner)
        rank = graph.values[node.outputs[0]].rank
        p, q = _norm(inner.attrs["dims"], rank), _norm(cur.attrs["dims"], rank)
        composed = [p[i] for i in q]  # out[k] = x[p[q[k]]]
        sole = only_reader(edit, inner.outputs[0])
        if composed == list(range(rank)):
            if not edit.can_forward(node.outputs[0], inner.inputs[0]):
                continue
            edit.forward(node, {node.outputs[0]: inner.inputs[0]})
            if sole:
                edit.drop(inner)
                changes.append(Change("removed", (inner.name, node.name),
                                      f"permute `{inner.name}` and permute `{node.name}` cancel"))
            else:
                changes.append(Change("removed", (node.name,), f"permute `{node.name}` undoes permute `{inner.name}`"))
        elif sole:
            edit.replace(node, cur.model_copy(update={"attrs": {**cur.attrs, "dims": tuple(composed)},
                                                       "inputs": inner.inputs}))
            edit.drop(inner)
            changes.append(Change("merged", (inner.name, node.name),
                                  f"permutes `{inner.name}` and `{node.name}` → one permute {composed}"))
    return PassResult(edit.build(), weights, changes)
