"""`dlspec search SPEC -o DIR`: hyper-parameter search over a spec's search values (docs/search.md).

Optuna, matplotlib and the trainers are imported inside the command, never at module top.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from ..errors import error
from .options import json_option, model_option
from .output import err, out, print_diagnostics


def register(main: click.Group) -> None:
    @main.command()
    @click.argument("spec", required=False, type=click.Path(dir_okay=False, path_type=Path))
    @click.option("-o", "--out", "folder", type=click.Path(file_okay=False, path_type=Path),
                  help="The search folder: the study (study.db), every trial's run folder, trials.csv, best.dls, "
                       "the pictures.")
    @model_option(help="The recipe to search, by its name or its model's (default: the last recipe of the file).")
    @click.option("--trials", type=click.IntRange(min=1), help="Configurations to train (default: the spec's "
                  "search entry, else 20); rejected ones are not counted.")
    @click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
                  help="Worker processes on this machine sharing the study.")
    @click.option("--storage", metavar="URL", help="An Optuna database URL (e.g. postgresql://user@host/db) for a "
                  "study several machines share (default: sqlite in the search folder).")
    @click.option("--resume", is_flag=True, help="Continue the search in -o (trials a stopped worker left "
                  "running are run again).")
    @click.option("--status", "status_dir", type=click.Path(file_okay=False, path_type=Path),
                  help="Show the progress and trials of the search in this folder (running or finished) and exit.")
    @click.option("--check", "check_only", is_flag=True, help="Check the space (and probe its configurations) "
                  "without starting a search.")
    @click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), help="Where trials train.")
    @click.option("--epochs", type=click.IntRange(min=1), help="Override the recipe's epochs for every trial.")
    @click.option("--timeout", type=float, help="Seconds after which no new trial starts (default: the spec's).")
    @click.option("--quiet", is_flag=True, help="No progress line.")
    @json_option(help="Print the summary and the trials as JSON.")
    def search(spec: Path | None, folder: Path | None, model_name: str | None, trials: int | None, workers: int,
               storage: str | None, resume: bool, status_dir: Path | None, check_only: bool, device: str | None,
               epochs: int | None, timeout: float | None, quiet: bool, as_json: bool) -> None:
        """Search the hyper-parameters of SPEC's search values (choice, range, log_range, int_range).

        Every sampled configuration is checked (shapes, recipe) before it trains; a rejected one costs
        no training and is counted. Results in -o DIR: trials.csv, best.dls, history.png,
        importances.png, parallel.png, and one standard run folder per trial under trials/."""
        from ..search import results, study

        if status_dir is not None:
            s, rows, info = results.status(status_dir)
            _show(s, rows, info, as_json)
            return
        if spec is None:
            raise error("E908", "give the SPEC to search (or --status DIR)")
        if check_only:
            plan = study.load_plan(spec, model_name)
            pr, cfg, warnings = study.preflight(plan)
            if warnings:
                print_diagnostics(warnings)
            what = "configurations (all of the space)" if pr.exact else "configurations probed"
            if as_json:
                out(json.dumps({"space": [d.name for d in plan.space.dims], "configs": pr.configs, "valid": pr.valid,
                                "exact": pr.exact, "warnings": [w.to_json() for w in warnings]}, indent=2))
            else:
                out(f"{spec}: search space ok: {len(plan.space.dims)} search values "
                    f"({', '.join(d.name for d in plan.space.dims)}); {pr.valid} of {pr.configs} {what} pass the checker")
            return
        if folder is None:
            raise error("E908", "give the search folder with -o DIR")
        if storage and storage.startswith("sqlite") and workers > 1 and ":memory:" in storage:
            raise error("E908", "--workers share a study: an in-memory SQLite database cannot be shared")
        info = study.start(spec, folder, model_name, trials, storage, resume, device, epochs, timeout, err)
        if not as_json:
            err(f"searching {Path(info['spec']).name} ({info['recipe']}): {info['trials']} trials, "
                f"{info['objective']} ({info['direction']}), sampler {info['sampler']}, pruner {info['pruner']}, "
                f"{workers} worker{'s' if workers > 1 else ''}; study in {study._safe_url(info['storage'])}")
        study.launch(folder, workers, progress=not quiet and not as_json and sys.stderr.isatty(), echo=err)
        s = results.finish(folder)
        for note in s["notes"]:
            err(note)
        _, rows, _ = results.status(folder)
        _show(s, rows, info, as_json)
        if not as_json:
            err(f"search folder: {folder} (trials.csv, best.dls, history.png, importances.png, parallel.png)")


def _show(s: dict, rows: list, info: dict, as_json: bool) -> None:
    from ..search import results

    if as_json:
        out(json.dumps({"summary": s, "trials": rows}, indent=2, default=str))
        return
    out(results.table(rows, info))
    out("")
    out(results.describe(s))
