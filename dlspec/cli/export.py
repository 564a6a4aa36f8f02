"""`dlspec export RUN --target onnx|pt2|openvino|litert|savedmodel|keras|torchscript|mxnet -o PATH`: a
deployable artifact from a run folder, proved against the trained model (see dlspec/export.py and
docs/deploy.md). Frameworks are imported inside the command only."""

from __future__ import annotations

from pathlib import Path

import click

from ..export import PRECISIONS, TARGETS

TARGET_HELP = (
    "onnx: an .onnx file; pt2: a torch.export program (.pt2, torch.export.load); openvino: OpenVINO IR "
    "(PATH.xml + PATH.bin); litert: a .tflite flatbuffer (ai_edge_litert); savedmodel: a TensorFlow SavedModel "
    "folder; keras: a .keras file; torchscript: DEPRECATED by PyTorch, use pt2 (a TorchScript archive for "
    "torch.jit.load); mxnet: a folder with -symbol.json and .params (needs DLSPEC_MXNET_PYTHON, docs/mxnet.md). "
    "pt2, openvino and litert need `pip install 'dlspec[deploy]'`.")


def register(main: click.Group) -> None:
    @main.command()
    @click.argument("run", type=click.Path(file_okay=False, path_type=Path))
    @click.option("--target", required=True, type=click.Choice(TARGETS), help=TARGET_HELP)
    @click.option("-o", "--output", required=True, type=click.Path(path_type=Path),
                  help="Where to write the artifact (a folder for savedmodel and mxnet, a file otherwise).")
    @click.option("--opt-level", type=click.IntRange(0, 2), default=1, show_default=True,
                  help="0: as trained; 1: rewrites that keep the numbers; 2: also inference-only rewrites "
                       "(batch-norm folding, dropout removal).")
    @click.option("--force", is_flag=True, help="Replace an existing output (only once the new artifact is complete "
                                                "and has passed its self-check).")
    @click.option("--tolerance", type=float, default=1e-4, show_default=True,
                  help="Self-check: the largest difference allowed, absolute and relative "
                       "(|artifact - trained| <= tol + tol * |trained|).")
    @click.option("--no-check", "no_check", is_flag=True,
                  help="Skip the self-check (loading the artifact in a fresh process with its runtime and comparing "
                       "it with the trained model on the run's validation rows).")
    @click.option("--keep-mismatch", is_flag=True,
                  help="Write the artifact even when the self-check fails (still exit 1), for inspection.")
    @click.option("--opset", type=int, help="onnx, openvino: the ONNX opset to target (default: the newest supported).")
    @click.option("--aoti", is_flag=True,
                  help="pt2: compile with AOTInductor into a package C++ can load (needs a C++ compiler).")
    @click.option("--precision", type=click.Choice(PRECISIONS),
                  help="openvino: also run the artifact at this inference precision and report what it costs "
                       "(the artifact stays float32; dlspec's own loaders compile it in f32).")
    @click.option("--quantize", type=click.Choice(["int8"]),
                  help="onnx (onnxruntime static QDQ), openvino (NNCF): an int8 artifact, calibrated on training rows; "
                       "float32 and int8 test metrics and file sizes are printed and saved as PATH-stem.int8.json.")
    @click.option("--calibration", type=int, default=256, show_default=True,
                  help="--quantize: how many training rows calibrate the activation ranges.")
    @click.option("--static-batch", type=int, default=1, show_default=True,
                  help="litert: the fixed batch of a model TensorFlow's converter cannot give a resizable batch "
                       "(recurrent layers; warned as W721).")
    def export(run: Path, target: str, output: Path, opt_level: int, force: bool, tolerance: float, no_check: bool,
               keep_mismatch: bool, opset: int | None, aoti: bool, precision: str | None, quantize: str | None,
               calibration: int, static_batch: int) -> None:
        """Export a trained run (its best weights and graph.json, whichever backend trained it), then prove
        the artifact: loaded by its own runtime in a fresh process, it must compute what the trained model
        computes on the run's validation rows (exit 1 otherwise, nothing written)."""
        from ..export import export as do_export
        from .output import err

        path = do_export(run, target, output, opt_level=opt_level, force=force, echo=err, check=not no_check,
                         tolerance=tolerance, keep_mismatch=keep_mismatch, opset=opset, aoti=aoti,
                         precision=precision, quantize=quantize, calibration=calibration, static_batch=static_batch)
        err(f"wrote {path}")
