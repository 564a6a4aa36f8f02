"""Constant folding. In this IR every tensor derives from a model input or a parameter, and
the front end has already evaluated every compile-time expression (shapes, sizes, attributes).
What remains constant is a scalar operand: a chain of scalar arithmetic on one tensor folds
into one op whose scalar is computed here.

    y = (x * 2) * 0.5 + 1 - 1     →   y = x * 1.0 + 0.0   (then `identities` removes both)

Folded: `add`/`sub` after `add`/`sub` with a scalar, `mul`/`div` after `mul`/`div` with a
scalar, when the inner node has no other reader. Keeps training behaviour: the function of
`x` is the same (up to float rounding of the folded scalar).
"""

from __future__ import annotations

from ..ir.graph import Graph, Node
from ..ir.ops import REGISTRY, get_op
from .rewrite import Change, GraphEdit, PassResult, Weights, only_reader

NAME = "constant_fold"
SUMMARY = "fold chains of scalar arithmetic on a tensor into one op"
INFERENCE_ONLY = False

def _scalar_op(node: Node) -> float | None:
    if get_op(node.op).scalar_group is not None and len(node.inputs) == 1:
        s = node.attrs.get("scalar")
        return None if s is None else float(s)
    return None


def _op_of(group: str, sign: float) -> str:
    """The catalogue's op for `group`'s operation (sign +1) or its inverse (sign -1)."""
    return next(n for n, op in REGISTRY.items() if op.scalar_group == group and op.scalar_sign == sign)


def _fold(outer: Node, inner: Node) -> tuple[str, float] | None:
    a, b = _scalar_op(inner), _scalar_op(outer)
    if a is None or b is None:
        return None
    op_in, op_out = get_op(inner.op), get_op(outer.op)
    group = op_in.scalar_group
    if op_out.scalar_group != group:
        return None
    s_in, s_out = op_in.scalar_sign, op_out.scalar_sign
    if group == "additive":
        total = s_in * a + s_out * b
        return (_op_of(group, 1.0), total) if total >= 0 or s_out > 0 else (_op_of(group, -1.0), -total)
    if s_in < 0 and s_out < 0:  # (x / a) / b
        return _op_of(group, -1.0), a * b
    if s_in > 0 and s_out > 0:  # (x * a) * b
        return _op_of(group, 1.0), a * b
    if s_in > 0:  # (x * a) / b
        return (_op_of(group, 1.0), a / b) if b != 0 else None
    return (_op_of(group, 1.0), b / a) if a != 0 else None  # (x / a) * b


def run(graph: Graph, weights: Weights | None) -> PassResult:
    edit = GraphEdit(graph)
    changes = []
    for node in graph.nodes:
        if _scalar_op(node) is None:
            continue
        cur = edit.current(node)
        inner = edit.producers.get(cur.inputs[0])
        if inner is None or edit.dropped(inner.name) or not only_reader(edit, inner.outputs[0]):
            continue
        inner = edit.current(inner)
        folded = _fold(cur, inner)
        if folded is None:
            continue
        op, scalar = folded
        new = cur.model_copy(update={"op": op, "attrs": {**cur.attrs, "scalar": scalar}, "inputs": inner.inputs})
        edit.replace(node, new)
        edit.drop(inner)
        changes.append(Change("folded", (inner.name, node.name),
                              f"{inner.op} `{inner.name}` and {node.op} `{node.name}` → `{op}` by {scalar:g}"))
    return PassResult(edit.build(), weights, changes)
