"""`dlspec verify`: run a model in PyTorch, TensorFlow/Keras and ONNX Runtime with the same weights
and inputs, and compare every output and every layer's value (see dlspec/verify.py).

Frameworks are imported inside the command only.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click


def register(main: click.Group) -> None:
    from ..threads import threads_option
    from .options import json_option, model_option, set_option

    @main.command()
    @click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
    @model_option()
    @set_option
    @click.option("--backends", default=None,
                  help="Backends to compare, comma-separated; the first is the reference (torch, tf, onnx). "
                       "Default: those of torch, tf and onnx that are installed (at least two), saying which "
                       "it left out.")
    @click.option("--weights", type=click.Path(dir_okay=False, path_type=Path),
                  help="A canonical safetensors file (default: fresh seeded weights, PyTorch's initialization).")
    @click.option("--tolerance", type=click.FloatRange(min=0.0), default=1e-4, show_default=True,
                  help="Largest accepted error max|x - ref| / max(1, max|ref|) per output and per layer.")
    @click.option("--seed", type=int, default=0, show_default=True, help="Seed of the inputs and fresh weights.")
    @click.option("--outputs-only", is_flag=True, help="Compare the model's outputs only, not every layer.")
    @json_option(help="Print the result as one JSON object (rows, passed, ...).")
    @threads_option(help="Compute threads of every backend: a number, or auto (the default): the CPUs this process "
                         "may use.")
    def verify(file: Path, model_name: str | None, sets: tuple[str, ...], backends: str | None, weights: Path | None,
               tolerance: float, seed: int, outputs_only: bool, as_json: bool, threads: str | int) -> None:
        """Check that every backend computes the same numbers as the reference. Exit 1 on a mismatch.

        Symbolic sizes default to batch=2 and 8 for the others; bind them with --set (seq=16)."""
        from .. import threads as threads_
        from ..program import compile_file, parse_overrides
        from ..verify import default_backends, parse_backends, render
        from ..verify import verify as run_verify
        from .options import pick_model as _pick_model
        from .output import EXIT_USER, out

        threads_.prepare(threads)  # before a framework starts its thread pools
        left_out: dict[str, str] = {}
        if backends is None:
            names, left_out = default_backends()
        else:
            names = parse_backends(backends)
        prog = compile_file(file, parse_overrides(list(sets)))
        g = _pick_model(prog, model_name, file)
        arrays = None
        if weights is not None:
            from ..weights import load_graph_weights

            arrays = load_graph_weights(g, weights)
        result = run_verify(g, names, weights=arrays, tolerance=tolerance, seed=seed, layers=not outputs_only,
                            weights_source=str(weights) if weights is not None else None)
        result.left_out = left_out
        if as_json:
            out(json.dumps(result.to_json(), indent=2))
        else:
            render(result)
        if not result.passed:
            sys.exit(EXIT_USER)
