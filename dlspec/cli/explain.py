"""`dlspec explain`: what each optimization pass of a level does to a model — the nodes it
removed, folded, fused or merged, by name — with parameter and FLOP counts before and after.

Framework-free: passes rewrite the IR only (no weights are needed to explain a rewrite).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click


def _counts(graph) -> dict[str, Any]:
    from ..summary import summarize

    s = summarize(graph)
    return {"nodes": len(graph.nodes), "params": s["total_params"], "buffers": s["buffers"],
            "flops_per_sample": s["flops_per_sample"]}


def explain_data(graph, level: int) -> dict[str, Any]:
    """The explanation as a JSON-ready dict: one entry per pass, and totals."""
    from ..passes import LEVELS, PASSES, run_passes

    _, _, reports = run_passes(graph, LEVELS[level], level=level)
    start = _counts(graph)
    passes = []
    current = start
    for r in reports.items:
        after = _counts(r.after) if r.changes else current
        passes.append({
            "pass": r.name,
            "summary": PASSES[r.name].SUMMARY,
            "inference_only": PASSES[r.name].INFERENCE_ONLY,
            "changes": [c.to_json() for c in r.changes],
            "removed_params": r.removed_params,
            "added_params": r.added_params,
            "before": current,
            "after": after,
        })
        current = after
    return {"model": graph.name, "opt_level": level, "passes": passes, "before": start, "after": current,
            "notes": [n for n in reports.notes() if not n.startswith("optimized:")]}


def _num(n: int | str) -> str:
    return f"{n:,}" if isinstance(n, int) else str(n)


def _delta(before: dict, after: dict, key: str) -> str:
    b, a = before[key], after[key]
    if isinstance(b, int) and isinstance(a, int):
        d = a - b
        return f"{_num(b)} → {_num(a)}" + (f" ({'+' if d > 0 else ''}{d:,})" if d else "")
    return f"{b} → {a}"


def render(data: dict[str, Any]) -> str:
    from ..summary import human

    lines = [f'Model "{data["model"]}" at opt-level {data["opt_level"]}']
    if not data["passes"]:
        lines.append("  no passes run at opt-level 0: the IR as written")
    for i, p in enumerate(data["passes"], start=1):
        tag = "  [inference only]" if p["inference_only"] else ""
        lines.append("")
        lines.append(f"{i}. {p['pass']} — {p['summary']}{tag}")
        if not p["changes"]:
            lines.append("   no change")
            continue
        for c in p["changes"]:
            lines.append(f"   {c['kind']:<9} {c['detail']}")
        b, a = p["before"], p["after"]
        lines.append(f"   nodes {_delta(b, a, 'nodes')}; params {_delta(b, a, 'params')}; "
                     f"FLOPs {human(b['flops_per_sample'])} → {human(a['flops_per_sample'])}")
        if p["removed_params"]:
            lines.append(f"   parameters removed: {', '.join(p['removed_params'])}")
        if p["added_params"]:
            lines.append(f"   parameters added: {', '.join(p['added_params'])}")
    b, a = data["before"], data["after"]
    lines += [
        "",
        "Total",
        f"  nodes            {_delta(b, a, 'nodes')}",
        f"  parameters       {_delta(b, a, 'params')}",
        f"  buffers          {_delta(b, a, 'buffers')}",
        f"  FLOPs per sample {_delta(b, a, 'flops_per_sample')}",
    ]
    for note in data["notes"]:
        lines.append(f"note: {note}")
    return "\n".join(lines)


def register(main: click.Group) -> None:
    from .options import json_option, model_option, set_option
    from .options import pick_model as _pick_model
    from .output import out

    @main.command()
    @click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
    @model_option()
    @set_option
    @click.option("--opt-level", type=click.IntRange(0, 2), default=1, show_default=True,
                  help="0: as written; 1: rewrites that keep training behaviour; 2: also inference-only rewrites.")
    @json_option(help="Print one JSON object: passes (pass, changes, before, after, removed/added params) and totals.")
    def explain(file: Path, model_name: str | None, sets: tuple[str, ...], opt_level: int, as_json: bool) -> None:
        """List, pass by pass, what the optimizer changes in a model, with parameter and FLOP counts."""
        from ..program import compile_file, parse_overrides

        prog = compile_file(file, parse_overrides(list(sets)))
        data = explain_data(_pick_model(prog, model_name, file), opt_level)
        out(json.dumps(data, indent=2) if as_json else render(data))
