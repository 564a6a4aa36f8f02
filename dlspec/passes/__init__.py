"""Optimization passes over the IR, chosen by `--opt-level`.

Each pass is one module with `NAME`, `SUMMARY`, `INFERENCE_ONLY` and a pure
`run(graph, weights) -> PassResult`: it returns a new graph (and a new weights dict where it
rewrites parameters) and never mutates its inputs. `LEVELS` gives the ordered pass list of
each level:

* 0 — the graph as written;
* 1 — rewrites that keep training behaviour (constant folding, no-op removal, permute and
  reshape merging, common-subexpression elimination, dead-code elimination);
* 2 — also inference-only rewrites (dropout removal, batch-norm folding).

After every pass the graph re-validates (`validate.check_graph`: shape inference over the
whole graph) and every surviving value keeps its type; a violation is an internal error
(E800–E802) naming the pass.

Interface used by `compile` and `export`:
    optimize(graph, level, weights=None) -> (graph, weights, Reports)
`weights` is a canonical {parameter path: array} dict (or None); passes that rewrite
parameters rewrite it too. `Reports.notes()` gives the lines the CLI prints.
"""

from __future__ import annotations

import gc
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from ..errors import Diagnostic, DlspecError, did_you_mean
from ..ir.graph import Graph
from . import (
    cancel_permutes,
    constant_fold,
    cse,
    dead_code,
    fold_batchnorm,
    identities,
    merge_reshapes,
    remove_dropout,
)
from .rewrite import Change, PassResult, Weights
from .validate import check_graph, check_types_kept, check_weights, internal_error

PASSES: dict[str, ModuleType] = {
    m.NAME: m
    for m in (constant_fold, identities, remove_dropout, cancel_permutes, merge_reshapes, cse, fold_batchnorm, dead_code)
}

_TRAINING_SAFE = ("constant_fold", "identities", "cancel_permutes", "merge_reshapes", "cse", "dead_code")
LEVELS: dict[int, tuple[str, ...]] = {
    0: (),
    1: _TRAINING_SAFE,
    2: ("constant_fold", "identities", "remove_dropout", "cancel_permutes", "merge_reshapes", "cse",
        "fold_batchnorm", "dead_code"),
}
MAX_LEVEL = max(LEVELS)

__all__ = ["LEVELS", "PASSES", "Change", "PassReport", "PassResult", "Reports", "level_for", "optimize", "passes_until"]


@dataclass
class PassReport:
    """What one pass did: its changes, the graphs before and after, and parameter path changes."""

    name: str
    changes: list[Change]
    before: Graph
    after: Graph
    removed_params: list[str] = field(default_factory=list)
    added_params: list[str] = field(default_factory=list)
    rewritten_params: list[str] = field(default_factory=list)


@dataclass
class Reports:
    level: int = 0
    items: list[PassReport] = field(default_factory=list)
    weights_rewritten: bool = False

    @property
    def changed(self) -> bool:
        return any(r.changes for r in self.items)

    def param_changes(self) -> tuple[list[str], list[str], list[str]]:
        """(removed, added, rewritten) parameter paths over the whole run, relative to the input."""
        removed: dict[str, None] = {}
        added: dict[str, None] = {}
        for r in self.items:
            for k in r.removed_params:
                if added.pop(k, 0) is not None:
                    removed[k] = None
            for k in r.added_params:
                if removed.pop(k, 0) is not None:
                    added[k] = None
        rewritten = {k: None for r in self.items for k in r.rewritten_params if k not in added and k not in removed}
        return list(removed), list(added), list(rewritten)

    def notes(self) -> list[str]:
        lines: list[str] = []
        if self.level >= 2:
            lines.append(f"opt-level {self.level}: inference-only rewrites (batch-norm folding, dropout removal) "
                         "apply; the result is for inference, not for training")
        n = sum(len(r.changes) for r in self.items)
        if n:
            per = ", ".join(f"{r.name} {len(r.changes)}" for r in self.items if r.changes)
            lines.append(f"optimized: {n} rewrite{'s' if n != 1 else ''} ({per}); `dlspec explain` lists them")
        removed, added, rewritten = self.param_changes()
        if removed or added:
            parts = []
            if removed:
                parts.append(f"removed {_few(removed)}")
            if added:
                parts.append(f"added {_few(added)}")
            if rewritten:
                parts.append(f"rewritten {_few(rewritten)}")
            lines.append("parameters changed: " + "; ".join(parts)
                         + " — a weights file of the unoptimized model fits only after the same rewrite")
        return lines


def _few(paths: list[str], n: int = 4) -> str:
    shown = ", ".join(f"`{p}`" for p in paths[:n])
    return shown + (f" and {len(paths) - n} more" if len(paths) > n else "")


def _bad_level(level: Any) -> DlspecError:
    return DlspecError(Diagnostic(code="E803", message=f"unknown optimization level {level!r}",
                                  hint=f"levels: {', '.join(map(str, LEVELS))}"))


def passes_until(level: int, after: str | None) -> tuple[str, ...]:
    """The passes of `level`, cut after the pass `after` (all of them when None)."""
    if level not in LEVELS:
        raise _bad_level(level)
    names = LEVELS[level]
    if after is None:
        return names
    if after not in PASSES:
        raise DlspecError(Diagnostic(
            code="E804", message=f"unknown pass `{after}`",
            hint=did_you_mean(after, PASSES) or f"passes: {', '.join(PASSES)}"))
    if after not in names:
        need = level_for(after)
        raise DlspecError(Diagnostic(
            code="E805", message=f"pass `{after}` does not run at opt-level {level}",
            hint=f"it runs from opt-level {need} on; add `--opt-level {need}`"))
    return names[: names.index(after) + 1]


def level_for(pass_name: str) -> int:
    """The lowest level whose list runs `pass_name`."""
    passes_until(MAX_LEVEL, pass_name)
    return min(lv for lv, names in LEVELS.items() if pass_name in names)


@contextmanager
def _no_cycle_collection():
    """Pause the cyclic garbage collector: passes allocate many small acyclic objects (freed by
    reference counting), and full collections over a large graph made the passes grow faster
    than linearly with its size."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def run_passes(graph: Graph, names: tuple[str, ...], weights: Weights | None = None,
               level: int = 0) -> tuple[Graph, Weights | None, Reports]:
    """Run the named passes in order, re-validating after each."""
    with _no_cycle_collection():
        return _run_passes(graph, names, weights, level)


def _run_passes(graph: Graph, names: tuple[str, ...], weights: Weights | None,
                level: int) -> tuple[Graph, Weights | None, Reports]:
    reports = Reports(level=level)
    before_params = {p.path: p.shape for p in graph.params()} if names else {}
    for name in names:
        module = PASSES[name]
        result: PassResult = module.run(graph, weights)
        new = result.graph
        if bool(result.changes) != (new is not graph):
            raise internal_error("E800", name, "the pass's change list disagrees with the graph it returned")
        after_params = before_params
        if new is not graph:
            check_graph(new, name)
            check_types_kept(graph, new, name)
            after_params = {p.path: p.shape for p in new.params()}
            check_weights(before_params, after_params, result.weights, name)
        new_weights = result.weights
        rewritten: list[str] = []
        if new_weights is not None and new is not graph:
            new_weights = {k: v for k, v in new_weights.items() if k in after_params or k not in before_params}
            if weights is not None:
                rewritten = [k for k in after_params if k in weights and new_weights.get(k) is not weights[k]]
        reports.items.append(PassReport(
            name=name, changes=list(result.changes), before=graph, after=new,
            removed_params=[k for k in before_params if k not in after_params],
            added_params=[k for k in after_params if k not in before_params],
            rewritten_params=rewritten,
        ))
        graph, weights, before_params = new, new_weights, after_params
    reports.weights_rewritten = any(r.rewritten_params for r in reports.items)
    return graph, weights, reports


def optimize(graph: Graph, level: int, weights: Weights | None = None) -> tuple[Graph, Weights | None, Reports]:
    """Run the pass list of `level` over `graph` (and `weights`): a new graph, weights, reports."""
    return run_passes(graph, passes_until(level, None), weights, level)
