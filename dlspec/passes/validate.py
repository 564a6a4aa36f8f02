"""The check run after every pass: the graph is well formed, shape inference over the whole graph
reproduces every value's type, and every value that survives a pass keeps the type it had.

A failure here is a bug in a pass, never in the user's spec: it raises E800 (malformed graph),
E801 (a value's type changed) or E802 (parameters and weights disagree), naming the pass.
"""

from __future__ import annotations

from ..errors import Diagnostic, DlspecError
from ..ir import check as ir_check
from ..ir.check import GraphInvalid
from ..ir.graph import Graph
from .rewrite import Weights


def internal_error(code: str, pass_name: str, message: str) -> DlspecError:
    return DlspecError(Diagnostic(
        code=code,
        message=f"internal error in optimization pass `{pass_name}`: {message}",
        hint="this is a bug in dlspec, not in the spec; `--opt-level 0` skips the optimization passes",
    ))


def check_graph(graph: Graph, pass_name: str) -> None:
    """Re-run every op's attribute check and shape rule in order, from the graph inputs."""
    try:
        ir_check.check_graph(graph)
    except GraphInvalid as exc:
        code = "E801" if exc.where.startswith("values.") else "E800"
        raise internal_error(code, pass_name, exc.message) from None


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
