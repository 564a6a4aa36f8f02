"""What every pass shares: the record of a change, a pass's result, and `GraphEdit`, which builds
the rewritten graph without touching the input.

A pass reads the input graph, tells a `GraphEdit` which nodes to drop (forwarding their output
to another value), which to replace, and which values a kept node should now read; `build()`
returns a new `Graph`. Unchanged nodes are shared between the two graphs: `Node` is frozen.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..ir.graph import Graph, GraphOutput, Node

Weights = dict[str, Any]


@dataclass(frozen=True)
class Change:
    """One rewrite: what happened (`removed`, `folded`, `fused`, `merged`, `rewritten`) to which nodes."""

    kind: str
    nodes: tuple[str, ...]
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "nodes": list(self.nodes), "detail": self.detail}


@dataclass
class PassResult:
    graph: Graph
    weights: Weights | None
    changes: list[Change] = field(default_factory=list)


class GraphEdit:
    """Accumulates node removals and replacements over one graph, then builds the new graph."""

    def __init__(self, graph: Graph):
        self.graph = graph
        self._alias: dict[str, str] = {}
        self._dropped: set[str] = set()
        self._replaced: dict[str, Node] = {}
        self._inputs = {i.name for i in graph.inputs}
        self._out_values = {o.value for o in graph.outputs}
        self.producers = graph.producers()
        self.consumers = graph.consumers()

    # ---- queries -------------------------------------------------------------------------------
    def resolve(self, value: str) -> str:
        """The value that now stands for `value` (after the forwards recorded so far)."""
        while value in self._alias:
            value = self._alias[value]
        return value

    def is_output(self, value: str) -> bool:
        return value in self._out_values

    def uses(self, value: str) -> int:
        """How many node inputs and graph outputs read `value` in the input graph."""
        return len(self.consumers.get(value, ())) + sum(1 for o in self.graph.outputs if o.value == value)

    def dropped(self, node: str) -> bool:
        return node in self._dropped

    def current(self, node: Node) -> Node:
        """The node as rewritten so far (its replacement, with inputs resolved)."""
        n = self._replaced.get(node.name, node)
        ins = tuple(self.resolve(v) for v in n.inputs)
        return n if ins == n.inputs else n.model_copy(update={"inputs": ins})

    def can_forward(self, old: str, new: str) -> bool:
        """Whether readers of `old` may read `new` instead without two graph outputs sharing one
        value or a graph output naming a graph input (which not every backend can express)."""
        old, new = self.resolve(old), self.resolve(new)
        if old == new:
            return False
        if old not in self._out_values:
            return True
        return new not in self._out_values and new not in self._inputs

    # ---- edits ---------------------------------------------------------------------------------
    def forward(self, node: Node, to: dict[str, str]) -> None:
        """Drop `node`; each of its outputs `v` is read as `to[v]` from now on."""
        for old, new in to.items():
            target = self.resolve(new)
            self._alias[old] = target
            if old in self._out_values:
                self._out_values.discard(old)
                self._out_values.add(target)
        self._dropped.add(node.name)
        self._replaced.pop(node.name, None)

    def drop(self, node: Node) -> None:
        """Drop a node none of whose outputs is read."""
        self._dropped.add(node.name)
        self._replaced.pop(node.name, None)

    def replace(self, node: Node, new: Node) -> None:
        """Put `new` (same name and outputs) in place of `node`."""
        if new.name != node.name or new.outputs != node.outputs:
            raise ValueError("a replacement keeps the node's name and outputs")
        self._replaced[node.name] = new

    def changed(self) -> bool:
        return bool(self._dropped or self._replaced)

    def build(self) -> Graph:
        if not self.changed():
            return self.graph
        g = self.graph
        nodes: list[Node] = []
        values = {i.name: g.values[i.name] for i in g.inputs}
        for node in g.nodes:
            if node.name in self._dropped:
                continue
            n = self.current(node)
            nodes.append(n)
            for v in n.outputs:
                values[v] = g.values[v]
        outputs = [
            o if self.resolve(o.value) == o.value else GraphOutput(name=o.name, value=self.resolve(o.value), span=o.span)
            for o in g.outputs
        ]
        return g.model_copy(update={
            "nodes": nodes, "values": values, "outputs": outputs, "inputs": list(g.inputs),
            "args": dict(g.args), "frozen": list(g.frozen), "replaced": list(g.replaced),
        })


def only_reader(edit: GraphEdit, value: str) -> bool:
    """True when exactly one node reads `value` and it is no graph output."""
    return len(edit.consumers.get(value, ())) == 1 and not edit.is_output(value)
