"""The check run after every pass: the graph is well formed, shape inference over the whole graph
reproduces every value's type, and every value that survives a pass keeps the type it had.

A failure here is a bug in a pass, never in the user's spec: it raises E800 (malformed graph),
E801 (a value's type changed) or E802 (parameters and weights disagree), naming the pass.
"""

from __future__ import annotations

from ..errors import AttrError, Diagnostic, DlspecError, ShapeError
from ..ir.graph import Graph
from ..ir.ops import REGISTRY
from .rewrite import Weights


def internal_error(code: str, pass_name: str, message: str) -> DlspecError:
    return DlspecError(Diagnostic(
        code=code,
        message=f"internal error in optimization pass `{pass_name}`: {message}",
        hint="this is a bug in dlspec, not in the spec; `--opt-level 0` skips the optimization passes",
    ))


def check_graph(graph: Graph, pass_name: str) -> None:
    """Re-run every op's attribute check and shape rule in order, from the graph inputs."""
    known = {}
    for gi in graph.inputs:
        if gi.name in known:
            raise internal_error("E800", pass_name, f"graph input `{gi.name}` appears twice")
        known[gi.name] = gi.type
        if graph.values.get(gi.name) != gi.type:
            raise internal_error("E800", pass_name, f"graph input `{gi.name}` has no matching value type")
    names: set[str] = set()
    for node in graph.nodes:
        if node.name in names:
            raise internal_error("E800", pass_name, f"node `{node.name}` appears twice")
        names.add(node.name)
        op = REGISTRY.get(node.op)
        if op is None:
            raise internal_error("E800", pass_name, f"node `{node.name}` has the unknown op `{node.op}`")
        missing = [v for v in node.inputs if v not in known]
        if missing:
            raise internal_error("E800", pass_name, f"node `{node.name}` reads `{missing[0]}` before it is defined")
        ins = [known[v] for v in node.inputs]
        try:
            attrs = op.attrs_from_dict(node.attrs)
            op.validate_attrs(attrs)
            op.check_inputs(attrs, ins)
            outs = op.infer(attrs, ins)
        except (AttrError, ShapeError) as exc:
            raise internal_error("E800", pass_name, f"node `{node.name}` ({node.op}) no longer checks: {exc.message}") from None
        if len(outs) != len(node.outputs):
            raise internal_error("E800", pass_name, f"node `{node.name}` has {len(node.outputs)} outputs, its op gives {len(outs)}")
        for v, t in zip(node.outputs, outs):
            if v in known:
                raise internal_error("E800", pass_name, f"value `{v}` is defined twice")
            if graph.values.get(v) != t:
                raise internal_error("E801", pass_name, f"value `{v}` is recorded as {graph.values.get(v)}, "
                                     f"shape inference gives {t}")
            known[v] = t
    for o in graph.outputs:
        if o.value not in known:
            raise internal_error("E800", pass_name, f"output `{o.name}` names the undefined value `{o.value}`")
    if set(graph.values) != set(known):
        extra = sorted(set(graph.values) - set(known))
        raise internal_error("E800", pass_name, f"the value table holds values no node defines: {', '.join(extra[:5])}")


def check_types_kept(before: Graph, after: Graph, pass_name: str) -> None:
    """Every value of `after` that `before` also had keeps its type; outputs keep their types."""
    for v, t in after.values.items():
        old = before.values.get(v)
        if old is not None and old != t:
            raise internal_error("E801", pass_name, f"value `{v}` changed type from {old} to {t}")
    old_out = {o.name: before.values[o.value] for o in before.outputs}
    new_out = {o.name: after.values[o.value] for o in after.outputs}
    if old_out != new_out:
        raise internal_error("E801", pass_name, "the model's outputs changed (names or types)")


def check_weights(before: dict[str, tuple], after: dict[str, tuple], weights: Weights | None, pass_name: str) -> None:
    """Every parameter the pass added or reshaped (path → shape maps before and after) has an
    array of its new shape."""
    if weights is None:
        return
    for path, shape in after.items():
        if before.get(path) == shape:
            continue
        a = weights.get(path)
        want = [int(d) for d in shape]
        if a is None:
            raise internal_error("E802", pass_name, f"no array for the new parameter `{path}`")
        if list(a.shape) != want:
            raise internal_error("E802", pass_name, f"`{path}` is {list(a.shape)}, the graph needs {want}")
