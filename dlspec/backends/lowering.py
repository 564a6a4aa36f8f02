"""One backend's lowerings: a table from op name to the named function that lowers it.

Every backend keeps one `Lowerings` table and registers each op next to the code that lowers
it, with whatever else the backend needs about that op beside it (the PyTorch backend: the
module constructor and the calls its source makes; Keras: the weight adapters). Registering an
op the catalogue does not know, or one op twice, fails at import, so a misspelt name never
reaches a user; `ops()` is what the backend supports, and the coverage tests compare it with
the catalogue.

    LOWERINGS = Lowerings("onnx")

    @LOWERINGS.register("relu6")
    def _l_relu6(b, node, a, x, t, y): ...
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from ..errors import Diagnostic, DlspecError
from ..ir.graph import Graph
from ..ir.ops import REGISTRY

__all__ = ["Lowering", "Lowerings", "TableBackend", "unsupported_error"]


@dataclass(frozen=True)
class Lowering:
    """How one backend lowers one op: `fn`, and the backend's other entries for the op."""

    op: str
    fn: Callable[..., Any] | None
    extra: dict[str, Any] = field(default_factory=dict)

    def get(self, key: str, default: Any = None) -> Any:
        return self.extra.get(key, default)


class Lowerings:
    """op name → `Lowering`, filled by `register`/`add` as the backend module is imported."""

    def __init__(self, backend: str):
        self.backend = backend
        self._table: dict[str, Lowering] = {}

    def add(self, op: str, fn: Callable[..., Any] | None = None, **extra: Any) -> None:
        if op not in REGISTRY:
            raise RuntimeError(f"the {self.backend} backend lowers `{op}`, which is not an op of the catalogue")
        if op in self._table:
            raise RuntimeError(f"the {self.backend} backend registers `{op}` twice")
        self._table[op] = Lowering(op, fn, dict(extra))

    def register(self, *ops: str, **extra: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Decorator: `fn` lowers each of `ops`; `extra` is stored with each."""

        def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
            for op in ops:
                self.add(op, fn, **extra)
            return fn

        return deco

    def beside(self, key: str, *ops: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Decorator: `fn` is the `key` entry of each of `ops` (registered already), written next
        to their lowering (a weight adapter)."""

        def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
            for op in ops:
                if op not in self._table:
                    raise RuntimeError(f"the {self.backend} backend attaches `{key}` to `{op}` before lowering it")
                if key in self._table[op].extra:
                    raise RuntimeError(f"the {self.backend} backend attaches `{key}` to `{op}` twice")
                self._table[op].extra[key] = fn
            return fn

        return deco

    def __contains__(self, op: object) -> bool:
        return op in self._table

    def __getitem__(self, op: str) -> Lowering:
        return self._table[op]

    def get(self, op: str) -> Lowering | None:
        return self._table.get(op)

    def ops(self) -> set[str]:
        return set(self._table)

    def values(self) -> Iterable[Lowering]:
        return self._table.values()

    def collect(self, key: str) -> frozenset[Any]:
        """The union of every registered op's `key` entry (an iterable of names)."""
        out: set[Any] = set()
        for low in self._table.values():
            out.update(low.get(key, ()))
        return frozenset(out)


def unsupported_error(graph: Graph, table: Lowerings) -> DlspecError | None:
    """E701 with one diagnostic per node of `graph` whose op `table` does not lower (every such
    node at once, each at its source location), or None when the backend lowers them all."""
    diags = []
    for node in graph.nodes:
        if node.op in table:
            continue
        where = f" at {node.span}" if node.span else ""
        diags.append(Diagnostic(
            code="E701", span=node.span,
            message=f"unsupported op {node.op} (layer `{node.name}`) on backend {table.backend}{where}",
            hint=f"compile to another target, or write {node.op} with ops the {table.backend} backend lowers"))
    return DlspecError(diags) if diags else None


class TableBackend:
    """Base of a backend that lowers through one `Lowerings` table (set `lowerings`): what it
    supports and the E701 check come from the table."""

    lowerings: Lowerings

    def supported_ops(self) -> set[str]:
        return self.lowerings.ops()

    def check(self, graph: Graph) -> None:
        problem = unsupported_error(graph, self.lowerings)
        if problem is not None:
            raise problem
