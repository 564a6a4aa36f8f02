"""The `dlspec` command line. Exit codes: 0 success, 1 a user error (spec, data, shapes),
2 a usage error (unknown option, missing argument). Output goes through `out` and `err`.

`check`, `summary`, `ir` and `compile` to source never import a deep-learning framework.

Start-up is kept to what a command uses: this module imports click and the shared options only.
The other commands live in their own modules, registered below by `main.add_lazy(name, module,
help)` and imported when that command runs (`dlspec/cli/lazy.py`); `dlspec --help` lists them
from that table. A new command module registers the same way, with its help's first paragraph
(`tests/test_startup.py` checks the table against the commands).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from ..backends import backend_names
from ..version import __version__
from .lazy import LazyGroup
from .options import json_option, model_option, set_option
from .options import pick_model as _pick_model
from .output import EXIT_OK, EXIT_USAGE, EXIT_USER, err, out, print_diagnostics, run_program

__all__ = ["EXIT_OK", "EXIT_USAGE", "EXIT_USER", "main", "err", "out", "print_diagnostics", "run"]


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, package_name="dlspec")  # the version without reading installed metadata
def main() -> None:
    """dlspec: write a network once, check every shape before it runs, generate PyTorch, Keras or ONNX."""


@main.command(quick_exit=True)
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@json_option(help="Print diagnostics as a JSON list of {file, line, column, code, severity, message, hint}.")
@click.option("--strict", is_flag=True, help="Treat every warning as an error: shown as one, and exit 1.")
@click.option("--target", "targets", multiple=True, type=click.Choice(backend_names()),
              help="A backend the models must compile for (repeatable; default: torch, keras and onnx): W108 where "
                   "one cannot.")
def check(files: tuple[Path, ...], as_json: bool, strict: bool, targets: tuple[str, ...]) -> None:
    """Check spec FILES: syntax, names, arguments, shapes and recipes. Exit 1 if any has an error.

    Warnings (likely mistakes, docs/errors.md) do not change the exit code unless --strict."""
    from ..backends.targets import target_check
    from ..errors import Diagnostic, DlspecError
    from ..program import compile_file

    check_targets = target_check(targets)
    # Unlike other commands, check goes on after a failing file: it reports every file's errors.
    all_diags: list[Diagnostic] = []
    failed = False
    for f in files:
        try:
            try:
                prog = compile_file(f, lint=True, target_check=check_targets)
            except DlspecError as exc:  # a search spec is valid when some configuration is (docs/search.md)
                from ..search.check import compile_space

                prog, found = compile_space(f, exc)
                all_diags.extend(found)
            all_diags.extend(prog.warnings)
            if prog.recipes:  # the recipes' data against their models, where known without loading it
                from .run_commands import data_problems

                data = data_problems(prog, f)
                if data:
                    raise DlspecError(data)
            if not as_json:
                models = ", ".join(prog.models) or "no standalone models"
                out(f"{f}: ok ({models}; {len(prog.recipes)} recipe{'s' if len(prog.recipes) != 1 else ''})")
        except DlspecError as exc:
            failed = True
            all_diags.extend(exc.diagnostics)
    if strict and any(d.severity == "warning" for d in all_diags):
        failed = True
        all_diags = [d.model_copy(update={"severity": "error"}) if d.severity == "warning" else d for d in all_diags]
    if as_json:
        out(json.dumps([d.to_json() for d in all_diags], indent=2))
    elif all_diags:
        print_diagnostics(all_diags)
    sys.exit(EXIT_USER if failed else EXIT_OK)


@main.command(quick_exit=True)
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


@main.command(quick_exit=True)
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
    from ..errors import error
    from ..program import compile_file, parse_overrides

    if target == "onnx" and output is None:
        raise error("E908", "--target onnx writes a binary file: give -o FILE.onnx")
    if target == "caffe":
        from .caffe_compile import compile_caffe

        compile_caffe(file, model_name, sets, output, weights, opt_level)
        return
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


# The commands of other modules: name, module, the first paragraph of the command's help.
main.add_lazy("bench", ".bench", "Time a model in every deployment runtime on this machine. RUN_OR_MODEL is a run "
              "folder (its best weights, timed on its validation rows) or a .dls spec file (seeded weights, random "
              "inputs).", attr="bench")
main.add_lazy("draw", ".editor", "Draw a model's graph: blocks as clusters, each layer with its op and main "
              "attributes, edges labelled with tensor shapes, skip connections in colour.")
main.add_lazy("fmt", ".editor", "Format spec FILES in place in the one canonical layout (comments kept, meaning "
              "unchanged).")
main.add_lazy("lsp", ".editor", "Run the language server over standard input and output (for editors: diagnostics, "
              "hover shapes, inlay hints, definitions, completion, outline, quick fixes, formatting).")
main.add_lazy("explain", ".explain", "List, pass by pass, what the optimizer changes in a model, with parameter and "
              "FLOP counts.")
main.add_lazy("export", ".export", "Export a trained run (its best weights and graph.json, whichever backend trained "
              "it), then prove the artifact: loaded by its own runtime in a fresh process, it must compute what the "
              "trained model computes on the run's validation rows (exit 1 otherwise, nothing written).")
main.add_lazy("features", ".features", "Write a network's features (a layer's output) for a data set to an .npz, "
              "with labels.")
main.add_lazy("import", ".import_onnx", "Import an ONNX model (.onnx) or a Caffe net (.prototxt): write a spec that "
              "`dlspec check`s and its weights (safetensors).")
main.add_lazy("import-weights", ".import_weights", "Match a state dict saved by another program (.safetensors, or "
              "PyTorch's .pt/.pth/.bin read without running code) to SPEC's model by parameter name, and write it as "
              "dlspec's weights.")
main.add_lazy("train", ".run_commands", "Train a spec's recipe with PyTorch (or TensorFlow: --backend tf); logs, "
              "plots, checkpoints and test metrics go to the run folder.")
main.add_lazy("evaluate", ".run_commands", "Evaluate a run's best weights on its test data (or --data): the recipe's "
              "metrics, and per class precision, recall, F1, support and the confusion matrix.")
main.add_lazy("predict", ".run_commands", "Run a trained model on new inputs: class names with probabilities, or "
              "values in the target's units. RUN_OR_MODEL is a run folder (its best weights and preprocessing), an "
              ".onnx file or an artifact of `dlspec export` (.xml, .pt2, .tflite).")
main.add_lazy("sample", ".sample", "Draw samples from the generator of a trained GAN run (PNG images and "
              "samples.npz).")
main.add_lazy("search", ".search", "Search the hyper-parameters of SPEC's search values (choice, range, log_range, "
              "int_range).")
main.add_lazy("verify", ".verify", "Check that every backend computes the same numbers as the reference. Exit 1 on "
              "a mismatch.")


def run() -> None:
    """The `dlspec` program (the console script and `python -m dlspec.cli`): `main` over
    `sys.argv`, exiting as soon as a command that only reads and prints is done."""
    run_program(main)


if __name__ == "__main__":
    run()
