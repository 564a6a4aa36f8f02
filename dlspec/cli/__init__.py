"""The `dlspec` command line. Exit codes: 0 success, 1 a user error (spec, data, shapes),
2 a usage error (unknown option, missing argument). Output goes through `out` and `err`.

`check`, `summary`, `ir` and `compile` to source never import a deep-learning framework.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from ..backends import backend_names
from ..errors import Diagnostic, DlspecError, error
from . import editor, explain, export, features, import_onnx, sample, verify
from .options import RECIPE_HELP, json_option, model_option, set_option
from .options import pick_model as _pick_model
from .output import EXIT_OK, EXIT_USAGE, EXIT_USER, Group, err, out, print_diagnostics

__all__ = ["EXIT_OK", "EXIT_USAGE", "EXIT_USER", "main", "err", "out", "print_diagnostics"]


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="dlspec")
def main() -> None:
    """dlspec: write a network once, check every shape before it runs, generate PyTorch, Keras or ONNX."""


@main.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@json_option(help="Print diagnostics as a JSON list of {file, line, column, code, message, hint}.")
def check(files: tuple[Path, ...], as_json: bool) -> None:
    """Check spec FILES: syntax, names, arguments, shapes and recipes. Exit 1 if any has an error."""
    from ..program import compile_file

    # Unlike other commands, check goes on after a failing file: it reports every file's errors.
    all_diags: list[Diagnostic] = []
    failed = False
    for f in files:
        try:
            prog = compile_file(f)
            all_diags.extend(prog.warnings)
            if not as_json:
                models = ", ".join(prog.models) or "no standalone models"
                out(f"{f}: ok ({models}; {len(prog.recipes)} recipe{'s' if len(prog.recipes) != 1 else ''})")
        except DlspecError as exc:
            failed = True
            all_diags.extend(exc.diagnostics)
    if as_json:
        out(json.dumps([d.to_json() for d in all_diags], indent=2))
    elif all_diags:
        print_diagnostics(all_diags)
    sys.exit(EXIT_USER if failed else EXIT_OK)


@main.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@model_option()
@set_option
@json_option(help="Print the summary as JSON (keys total_params, trainable_params, layers, ...).")
def summary(file: Path, model_name: str | None, sets: tuple[str, ...], as_json: bool) -> None:
    """Print a model's layers, output shapes, parameter and FLOP counts, and memory estimates."""
    from ..program import compile_file, parse_overrides
    from ..summary import render, summarize

    prog = compile_file(file, parse_overrides(list(sets)))
    s = summarize(_pick_model(prog, model_name, file))
    out(json.dumps(s, indent=2) if as_json else render(s))


@main.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@model_option()
@set_option
@json_option(help="Print the IR as JSON (the default; kept for symmetry).")
@click.option("--schema", is_flag=True, help="Print the IR's JSON Schema instead.")
@click.option("--opt-level", type=click.IntRange(0, 2), default=None,
              help="Print the IR after this level's optimization passes (default: 0, as written; with --after, "
                   "the lowest level that runs that pass).")
@click.option("--after", "after", metavar="PASS",
              help="Print the IR after the passes up to and including PASS (`dlspec explain` lists them).")
def ir(file: Path, model_name: str | None, sets: tuple[str, ...], as_json: bool, schema: bool,
       opt_level: int | None, after: str | None) -> None:
    """Print the lowered IR of a model as JSON (optionally after optimization passes)."""
    from ..ir.graph import Graph
    from ..program import compile_file, parse_overrides

    if schema:
        out(json.dumps(Graph.model_json_schema(), indent=2))
        return
    prog = compile_file(file, parse_overrides(list(sets)))
    g = _pick_model(prog, model_name, file)
    if after is not None or opt_level:
        from ..passes import level_for, passes_until, run_passes

        level = opt_level if opt_level is not None else level_for(after)
        g, _, _ = run_passes(g, passes_until(level, after), level=level)
    out(g.model_dump_json(indent=2))


@main.command("compile")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--target", type=click.Choice(backend_names()), default="torch", show_default=True,
              help="A registered backend. torch and keras write readable Python source; onnx writes a binary model "
                   "(needs -o).")
@model_option()
@set_option
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Write here (default: standard output, for source targets).")
@click.option("--opt-level", type=click.IntRange(0, 2), default=1, show_default=True,
              help="0: as written; 1: rewrites that keep training behaviour; 2: also inference-only rewrites "
                   "(batch-norm folding, dropout removal).")
@click.option("--weights", type=click.Path(dir_okay=False, path_type=Path),
              help="onnx: a safetensors file to embed as initializers (default: fresh seeded weights).")
@click.option("--opset", type=int, help="onnx: the opset to target (default: the newest supported).")
@click.option("--layout", type=click.Choice(["nchw", "nhwc"]), default="nchw", show_default=True,
              help="keras: the layout of the model's image inputs and outputs (Keras computes channels-last inside).")
@click.option("--script", is_flag=True,
              help="torch: write a standalone training script for the file's recipe that runs under torchrun.")
def compile_(file: Path, target: str, model_name: str | None, sets: tuple[str, ...], output: Path | None,
             opt_level: int, weights: Path | None, opset: int | None, layout: str, script: bool) -> None:
    """Compile a model to framework source (torch, keras) or an ONNX file.

    Source targets import no framework; the onnx target needs the `onnx` package."""
    from ..program import compile_file, parse_overrides

    if target == "onnx" and output is None:
        raise error("E908", "--target onnx writes a binary file: give -o FILE.onnx")
    if script and target != "torch":
        raise error("E908", f"--script writes a PyTorch training script; got --target {target}")
    prog = compile_file(file, parse_overrides(list(sets)))
    if script:
        from ..train.script import generate_script

        src: str | bytes = generate_script(prog, file, model_name)
        what = "training script"
    else:
        g = _pick_model(prog, model_name, file)
        from ..passes import optimize

        arrays = None
        if weights is not None:
            from ..weights import load_graph_weights

            arrays = load_graph_weights(g, weights)
        g, arrays, reports = optimize(g, opt_level, weights=arrays)
        for line in reports.notes():
            err(line)
        if target == "onnx":  # the one target written as a binary file, with weights and an opset
            from ..backends.onnx import model_bytes

            src = model_bytes(g, weights=arrays, opset=opset, source=str(file))
        else:
            from ..backends import get_backend

            src = get_backend(target).generate(g, layout=layout, source=str(file))
        what = f"{g.name}, {target}"
    if output is None:
        out(src)
        return
    from ..train.run import atomic_write_bytes, atomic_write_text

    if isinstance(src, bytes):
        atomic_write_bytes(output, src)
    else:
        atomic_write_text(output, src)
    err(f"wrote {output} ({what})")


@main.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@model_option(help=RECIPE_HELP)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "gpu", "mps"]),
              help="Where to train (default: the recipe's, else auto); gpu is cuda on torch.")
@click.option("--backend", type=click.Choice(["torch", "tf"]), default="torch", show_default=True,
              help="The framework that trains: PyTorch, or TensorFlow/Keras (--nproc then means tf.distribute replicas).")
@click.option("--epochs", type=int, help="Override the recipe's number of epochs.")
@click.option("--batch", type=int, help="Override the recipe's batch size.")
@click.option("--seed", type=int, help="Override the recipe's seed.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), help="Run folder (default: runs/<name>, numbered if taken).")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--nproc", type=int, default=1, show_default=True,
              help="Processes per machine for data-parallel training (DistributedDataParallel; one per GPU on "
                   "CUDA). --batch stays the global batch, split across all processes.")
@click.option("--nnodes", type=int, default=1, show_default=True, help="Machines taking part (run the command on each).")
@click.option("--node-rank", type=int, default=0, show_default=True, help="This machine's number, 0..nnodes-1.")
@click.option("--master", metavar="ADDR:PORT", help="Where node 0 listens (needed with --nnodes > 1; default: a free "
                                                     "local port).")
@click.option("--sync-bn", is_flag=True, help="Data-parallel: batch-norm statistics over the global batch (torch: SyncBatchNorm, "
                                     "CUDA only; tf: synchronized BatchNormalization).")
@click.option("--dist-timeout", type=float, default=600, show_default=True,
              help="Seconds a process waits for its peers (rendezvous, collectives) before giving up.")
def train(file: Path, model_name, device, backend: str, epochs, batch, seed, out: Path | None, resume: bool, quiet: bool,
          nproc: int, nnodes: int, node_rank: int, master: str | None, sync_bn: bool, dist_timeout: float) -> None:
    """Train a spec's recipe with PyTorch (or TensorFlow: --backend tf); logs, plots, checkpoints and test
    metrics go to the run folder."""
    from ..train import session
    from ..train.distributed import Launch

    parallel = Launch(nproc, nnodes, node_rank, master, sync_bn, dist_timeout)
    if backend == "torch" and device == "gpu":
        device = "cuda"
    outcome = session.train(file, model_name, device, epochs, batch, seed, out, resume, progress=not quiet, echo=err,
                            parallel=parallel, backend=backend)
    _print_metrics("test", outcome.test)
    err(f"run folder: {outcome.run}")


def _print_metrics(title: str, metrics: dict[str, float]) -> None:
    if not metrics:
        return
    width = max(len(k) for k in metrics)
    out(f"{title} metrics")
    for k, v in metrics.items():
        out(f"  {k.ljust(width)}  {v:.4f}")


@main.command()
@click.argument("run", type=click.Path(file_okay=False, path_type=Path))
@click.option("--data", "data", help="Evaluate on this file (.npz with x, y; or .csv like the training data) instead of the run's test split.")
@click.option("--split", type=click.Choice(["test", "val", "train"]), default="test", show_default=True, help="Which split of the run's data.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default="auto", show_default=True)
@json_option(help="Print the metrics as one JSON object.")
def evaluate(run: Path, data: str | None, split: str, device: str, as_json: bool) -> None:
    """Evaluate a run's best weights on its test data (or --data)."""
    from ..train import session

    metrics = session.evaluate(run, data, split, device)
    if as_json:
        out(json.dumps(metrics))
    else:
        _print_metrics(split if data is None else str(data), metrics)


@main.command()
@click.argument("run", metavar="RUN_OR_MODEL", type=click.Path(path_type=Path))
@click.option("--input", "input_path", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="A .npy array (one model input) or .npz with one array per input name.")
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), help="Write predictions (.npz or .json).")
@click.option("--backend", type=click.Choice(["torch", "onnx"]),
              help="Run with PyTorch or onnxruntime (default: onnx for an .onnx file, else torch).")
@click.option("--provider", type=click.Choice(["cpu", "cuda"]),
              help="onnx: the onnxruntime execution provider (default: cuda with --device cuda, else cpu); "
                   "cuda falls back to the CPU with a warning when unavailable.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default="auto", show_default=True,
              help="torch: where to run.")
def predict(run: Path, input_path: Path, output: Path | None, backend: str | None, provider: str | None,
            device: str) -> None:
    """Run a trained model on new inputs. RUN_OR_MODEL is a run folder (its best weights) or an .onnx file."""
    from ..train import session

    result = session.predict(run, input_path, output, device, backend=backend, provider=provider)
    for k, v in result.items():
        out(f"{k}: {list(v.shape)}")
        if v.ndim == 2 and v.shape[1] > 1:
            out(f"  predicted classes (first 20): {v.argmax(axis=1)[:20].tolist()}")
    if output is not None:
        err(f"wrote {output}")


for _command in (editor, explain, export, features, import_onnx, sample, verify):
    _command.register(main)

if __name__ == "__main__":
    main()
