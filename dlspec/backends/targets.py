"""W108: a model a target backend refuses, found by `dlspec check` (and the language server)
before anything is generated. The front end imports no backend, so `dlspec.lint` is handed the
check this module makes (`compile_source(..., lint=True, target_check=target_check(...))`).
Nothing in `dlspec.backends` imports this module: the backends stay independent of each other."""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import Diagnostic, DlspecError
from ..ir.graph import Graph
from ..lint import TargetCheck, _warning

#: the backends a model is checked against when the user names none: the three `dlspec compile`
#: and `dlspec train` generate (mxnet and caffe are checked when named)
DEFAULT_TARGETS = ("torch", "keras", "onnx")


def target_check(targets: Sequence[str] | None = None) -> TargetCheck:
    """The W108 check of a graph against `targets` (default `DEFAULT_TARGETS`; aliases accepted,
    E905 for an unknown name, raised here)."""
    from . import resolve

    names = list(dict.fromkeys(resolve(t) for t in (DEFAULT_TARGETS if not targets else targets)))
    return lambda g: backend_warnings(g, names)


def backend_warnings(g: Graph, targets: Sequence[str]) -> list[Diagnostic]:
    """W108: what a target backend refuses when it compiles `g` — for each backend its table of
    ops (E701); for keras its whole lowering plan, which imports no framework (E761, E762, ...);
    for onnx the adaptive pooling of symbolic sizes (E711). Other refusals show only at compile
    time (docs/errors.md#w108). `targets`: registry names, each once (`target_check` resolves them)."""
    from . import get_backend

    out: list[Diagnostic] = []
    for target in targets:
        try:
            if target == "keras":
                from .keras import plan

                plan(g)
            else:
                get_backend(target).check(g)
                if target == "onnx":
                    _onnx_adaptive_pools(g)
        except DlspecError as exc:
            for d in exc.diagnostics:
                message = d.message.replace(f" at {d.span}", "") if d.span is not None else d.message
                out.append(_warning(
                    "W108", f"model `{g.name}` cannot be compiled for {target}: {message} [{d.code}]",
                    d.span or g.span, notes=d.notes,
                    hint=d.hint or f"if you never compile for {target}, name the backends you use: "
                                   "`dlspec check --target torch ...`"))
    return out


def _onnx_adaptive_pools(g: Graph) -> None:
    """The ONNX backend's E711 for adaptive pooling (ONNX has none) to a size other than 1 of an
    input with symbolic spatial sizes, raised for every such node."""
    from ..ir.ops.base import as_tuple
    from .onnx import cannot_lower

    problems: list[Diagnostic] = []
    for node in g.nodes:
        if not node.op.startswith("adaptive_"):
            continue
        t = g.values[node.inputs[0]]
        outs = as_tuple(node.attrs["output_size"], t.rank - 2, "output_size")
        if any(o != 1 for o in outs) and not all(isinstance(s, int) for s in t.shape[2:]):
            problems += cannot_lower(node, f"output size {list(outs)} of an input with symbolic size {t.shape_str()}; "
                                           "ONNX has no adaptive pooling (only output size 1 works for any size)").diagnostics
    if problems:
        raise DlspecError(problems)
