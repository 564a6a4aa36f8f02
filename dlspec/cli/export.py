"""`dlspec export RUN --target savedmodel|keras|onnx|torchscript|mxnet -o PATH`: a deployable artifact from a
run folder (see dlspec/export.py). Frameworks are imported inside the command only."""

from __future__ import annotations

from pathlib import Path

import click

from ..export import TARGETS


def register(main: click.Group) -> None:
    @main.command()
    @click.argument("run", type=click.Path(file_okay=False, path_type=Path))
    @click.option("--target", required=True, type=click.Choice(TARGETS),
                  help="savedmodel: a TensorFlow SavedModel folder; keras: a .keras file; onnx: an .onnx file; "
                       "torchscript: a TorchScript archive for torch.jit.load; mxnet: a folder with "
                       "-symbol.json and .params (needs DLSPEC_MXNET_PYTHON, docs/mxnet.md).")
    @click.option("-o", "--output", required=True, type=click.Path(path_type=Path),
                  help="Where to write the artifact (a folder for savedmodel, a file otherwise).")
    @click.option("--opt-level", type=click.IntRange(0, 2), default=1, show_default=True,
                  help="0: as trained; 1: rewrites that keep the numbers; 2: also inference-only rewrites "
                       "(batch-norm folding, dropout removal).")
    @click.option("--force", is_flag=True, help="Replace an existing output (only once the new artifact is complete).")
    def export(run: Path, target: str, output: Path, opt_level: int, force: bool) -> None:
        """Export a trained run (its best weights and graph.json, whichever backend trained it)."""
        from ..export import export as do_export
        from .output import err

        path = do_export(run, target, output, opt_level=opt_level, force=force, echo=err)
        err(f"wrote {path}")
