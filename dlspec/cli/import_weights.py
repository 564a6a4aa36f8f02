"""`dlspec import-weights SPEC WEIGHTS -o OUT.safetensors`: another program's weights matched to
a spec's model by name (dlspec/import_weights.py)."""

from __future__ import annotations

import json
from pathlib import Path

import click


def register(main: click.Group) -> None:
    from .options import json_option, model_option, set_option

    @main.command("import-weights")
    @click.argument("spec", type=click.Path(dir_okay=False, path_type=Path))
    @click.argument("weights", type=click.Path(dir_okay=False, path_type=Path))
    @click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
                  help="The canonical weights to write (.safetensors), for `weights = \"...\"`, --weights or "
                       "Spec.build(weights=...).")
    @model_option()
    @set_option
    @click.option("--rename", "renames", multiple=True, metavar="OLD=NEW",
                  help="A file name starting with OLD starts with NEW instead (`module.=` strips DataParallel's "
                       "prefix). Repeatable; the first that fits applies.")
    @click.option("--skip", "skips", multiple=True, metavar="PATTERN",
                  help="Model paths (fnmatch, or a layer path and everything under it) to initialize instead of "
                       "taking from the file, e.g. a new head: --skip fc. Repeatable.")
    @click.option("--allow-missing", is_flag=True,
                  help="Initialize the model tensors the file lacks instead of failing (E513); the report lists them.")
    @json_option(help="Print the match report as JSON.")
    def import_weights(spec: Path, weights: Path, output: Path, model_name: str | None, sets: tuple[str, ...],
                       renames: tuple[str, ...], skips: tuple[str, ...], allow_missing: bool, as_json: bool) -> None:
        """Match a state dict saved by another program (.safetensors, or PyTorch's .pt/.pth/.bin read without
        running code) to SPEC's model by parameter name, and write it as dlspec's weights.

        Every tensor the model needs must be found in the right shape (E513, listing each one) unless --skip or --allow-missing says
        otherwise; the report says what matched, what was initialized and what in the file went unused."""
        from ..import_weights import import_weights as run
        from ..import_weights import parse_renames
        from ..program import compile_file, parse_overrides
        from .options import pick_model
        from .output import err, out

        rename_pairs = parse_renames(renames)
        prog = compile_file(spec, parse_overrides(list(sets)))
        graph = pick_model(prog, model_name, spec)
        report = run(graph, weights, output, rename_pairs, skips, allow_missing)
        total = len(graph.params())
        if as_json:
            out(json.dumps({**report.as_dict(), "total": total, "output": str(output)}, indent=2))
        else:
            for line in report.lines(total):
                out(line)
            err(f"wrote {output}")
