"""`dlspec bench RUN_OR_MODEL`: latency (p50, p90) and throughput of a model in each deployment
runtime on this machine, with ratios to eager PyTorch measured in the same run (see
dlspec/bench.py for what it measures and what it does not). Frameworks are imported inside
the command only."""

from __future__ import annotations

import json
from pathlib import Path

import click

from .options import json_option, model_option
from .output import Command

RUNTIME_NAMES = "eager, onnx, openvino, pt2, litert, keras"


@click.command("bench", cls=Command)
@click.argument("source", metavar="RUN_OR_MODEL", type=click.Path(exists=True, path_type=Path))
@click.option("--targets", metavar="LIST",
              help=f"Comma-separated runtimes among {RUNTIME_NAMES} (default: every installed one; eager PyTorch, "
                   "the baseline, is always measured).")
@click.option("--batch", "batches", default="1,32", show_default=True, metavar="SIZES",
              help="Comma-separated batch sizes.")
@click.option("--threads", type=int, default=0, show_default=True,
              help="Threads each runtime may use (0: the runtime's own default).")
@click.option("--repeats", type=int, default=100, show_default=True, help="Timed calls per runtime and batch, at most.")
@click.option("--budget", type=float, default=5.0, show_default=True,
              help="Seconds of timed calls per runtime and batch, at most (at least 5 calls are made).")
@model_option(help="For a spec file with several models: which one (default: the last model of the file).")
@json_option(help="Print the measurements as JSON.")
def bench(source: Path, targets: str | None, batches: str, threads: int, repeats: int, budget: float,
          model_name: str | None, as_json: bool) -> None:
    """Time a model in every deployment runtime on this machine. RUN_OR_MODEL is a run folder (its best
    weights, timed on its validation rows) or a .dls spec file (seeded weights, random inputs)."""
    from .. import bench as db
    from .output import err, out

    report = db.bench(source, db.parse_targets(targets), db.parse_batches(batches), threads=threads,
                      repeats=repeats, budget=budget, model_name=model_name, echo=err)
    out(json.dumps(report, indent=2) if as_json else db.table(report))
