"""`dlspec train`, `evaluate` and `predict`: a spec's recipe into a run folder, and a run folder on
new data. Frameworks are imported inside the commands only (`dlspec/train/session.py`)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click


def _print_metrics(title: str, metrics: dict[str, float]) -> None:
    from .output import out

    if not metrics:
        return
    width = max(len(k) for k in metrics)
    out(title)
    for k, v in metrics.items():
        out(f"  {k.ljust(width)}  {v:.4f}")


def progress_wanted(progress: bool | None, quiet: bool) -> bool:
    """A progress bar only when asked (--progress) or when stderr is a terminal, never with --quiet:
    a log file gets the one line per epoch, not the bar's frames."""
    if quiet:
        return False
    if progress is not None:
        return progress
    return sys.stderr.isatty()


def data_problems(prog, file: Path) -> list:
    """`dlspec check`'s data check: each recipe's data against the network it trains (built-in
    sets always; files that exist), located at the recipe's `data =` line."""
    from ..data.static import check_recipe_data
    from ..train.programs import PROGRAMS

    found = []
    for cfg in prog.recipes:
        program = PROGRAMS.get(cfg.kind)
        if program is None or not program.checks_data:
            continue
        graph = prog.recipe_graphs.get(program.graph_key(cfg.name))
        if graph is None:
            continue
        base = Path(cfg.span.file).resolve().parent if getattr(cfg, "span", None) else Path(file).resolve().parent
        found += check_recipe_data(cfg, graph, base)
    return found


def register(main: click.Group) -> None:
    from ..threads import threads_option
    from .options import RECIPE_HELP, json_option, model_option

    @main.command()
    @click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
    @model_option(help=RECIPE_HELP)
    @click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "gpu", "mps"]),
                  help="Where to train (default: the recipe's, else auto); gpu is cuda on torch.")
    @click.option("--backend", type=click.Choice(["torch", "tf"]), default="torch", show_default=True,
                  help="The framework that trains: PyTorch, or TensorFlow/Keras (--nproc then means tf.distribute "
                       "replicas).")
    @click.option("--epochs", type=int, help="Override the recipe's number of epochs (with --resume: train on to this "
                                             "total; the schedule is stretched over it, docs/training.md).")
    @click.option("--batch", type=int, help="Override the recipe's batch size.")
    @click.option("--seed", type=int, help="Override the recipe's seed.")
    @click.option("--out", type=click.Path(file_okay=False, path_type=Path),
                  help="Run folder (default: runs/<name>, numbered if taken).")
    @click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint (a run stopped "
                                                 "before its first checkpoint starts again in the same folder).")
    @click.option("--overwrite", is_flag=True, help="Replace the run already in --out (its files are removed first).")
    @click.option("--quiet", is_flag=True, help="No progress bar.")
    @click.option("--progress/--no-progress", default=None,
                  help="Show a progress bar per epoch (default: only when stderr is a terminal).")
    @click.option("--verbose", is_flag=True, help="Let the framework print its own log lines (TensorFlow's).")
    @click.option("--tensorboard", "tensorboard", type=click.Path(file_okay=False, path_type=Path),
                  help="Also write TensorBoard logs (scalars, learning rate, graph) into this folder "
                       "(needs `pip install 'dlspec[tensorboard]'`).")
    @click.option("--nproc", type=int, default=1, show_default=True,
                  help="Processes per machine for data-parallel training (DistributedDataParallel; one per GPU on "
                       "CUDA). --batch stays the global batch, split across all processes.")
    @click.option("--nnodes", type=int, default=1, show_default=True, help="Machines taking part (run the command on each).")
    @click.option("--node-rank", type=int, default=0, show_default=True, help="This machine's number, 0..nnodes-1.")
    @click.option("--master", metavar="ADDR:PORT", help="Where node 0 listens (needed with --nnodes > 1; default: a free "
                                                         "local port).")
    @click.option("--sync-bn", is_flag=True, help="Data-parallel: batch-norm statistics over the global batch (torch: "
                                                 "SyncBatchNorm, CUDA only; tf: synchronized BatchNormalization).")
    @click.option("--dist-timeout", type=float, default=600, show_default=True,
                  help="Seconds a process waits for its peers (rendezvous, collectives) before giving up.")
    @threads_option()
    @click.option("--compile/--no-compile", "compiled", default=None,
                  help="Train compiled (torch.compile; Keras: XLA jit_compile), or not (default: the recipe's "
                       "`compile`, else not). A compiler that fails falls back to eager with a warning.")
    def train(file: Path, model_name, device, backend: str, epochs, batch, seed, out: Path | None, resume: bool,
              overwrite: bool, quiet: bool, progress: bool | None, verbose: bool, tensorboard: Path | None,
              nproc: int, nnodes: int, node_rank: int, master: str | None, sync_bn: bool, dist_timeout: float,
              threads: str | int, compiled: bool | None) -> None:
        """Train a spec's recipe with PyTorch (or TensorFlow: --backend tf); logs, plots, checkpoints and test
        metrics go to the run folder."""
        from .. import threads as threads_
        from ..train import session

        threads_.prepare(threads)  # before the framework starts its thread pools
        from ..train.distributed import Launch
        from .output import err

        parallel = Launch(nproc, nnodes, node_rank, master, sync_bn, dist_timeout)
        if backend == "torch" and device == "gpu":
            device = "cuda"
        outcome = session.train(file, model_name, device, epochs, batch, seed, out, resume,
                                progress=progress_wanted(progress, quiet), echo=err, parallel=parallel,
                                backend=backend, overwrite=overwrite, verbose=verbose, tensorboard=tensorboard,
                                compiled=compiled)
        _print_metrics("test metrics", outcome.test)
        err(f"run folder: {outcome.run}")

    @main.command()
    @click.argument("run", type=click.Path(file_okay=False, path_type=Path))
    @click.option("--data", "data", help="Evaluate on every example of this file or folder, read with the run's "
                                         "preprocessing: a CSV like the training file (with its label column), a "
                                         "folder with one subfolder per class (images, texts), or an .npz (x, y).")
    @click.option("--split", type=click.Choice(["test", "val", "train"]), default="test", show_default=True,
                  help="Which split of the run's data (without --data).")
    @click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default="auto", show_default=True)
    @click.option("--confusion", "confusion", type=click.Path(dir_okay=False, path_type=Path),
                  help="Also write the confusion matrix as a PNG with the class names.")
    @json_option(help="Print {metrics, examples, source, reports: {output: per-class rows and confusion matrix}}.")
    @threads_option(help="Compute threads: a number, or auto (the default): the CPUs this process may use.")
    def evaluate(run: Path, data: str | None, split: str, device: str, confusion: Path | None, as_json: bool,
                 threads: str | int) -> None:
        """Evaluate a run's best weights on its test data (or --data): the recipe's metrics, and per class
        precision, recall, F1, support and the confusion matrix."""
        from .. import threads as threads_
        from ..errors import error

        threads_.prepare(threads)
        from ..train import session
        from .output import err, out

        if confusion is not None and confusion.suffix.lower() != ".png":
            raise error("E915", f"--confusion {confusion}: the confusion matrix is written as a .png")
        result = session.evaluate_report(run, data, split, device)
        if as_json:
            out(json.dumps(result, indent=1))
        else:
            _print_metrics(f"metrics on {result['source']} ({result['examples']} examples)", result["metrics"])
            from ..train.report import render

            for name, rep in result["reports"].items():
                out("")
                if len(result["reports"]) > 1:
                    out(f"output {name}")
                out(render(rep))
        if confusion is not None:
            if not result["reports"]:
                raise error("E915", "--confusion: the run's outputs are not class labels; there is no confusion matrix")
            from ..train.report import plot_confusion

            for name, rep in result["reports"].items():
                target = confusion if len(result["reports"]) == 1 else confusion.with_name(
                    f"{confusion.stem}-{name}{confusion.suffix}")
                plot_confusion(rep, target, f"{run.name}: {result['source']}")
                err(f"wrote {target}")

    @main.command()
    @click.argument("run", metavar="RUN_OR_MODEL", type=click.Path(path_type=Path))
    @click.option("--input", "input_path", required=True, type=click.Path(path_type=Path),
                  help="Raw data in the training data's form (a run folder): CSV rows (the label column may be left "
                       "out), an image or a folder of images, a .txt file or a folder of them; or arrays as the model "
                       "takes them (any model): a .npy (one input) or an .npz with one array per input name.")
    @click.option("--output", type=click.Path(dir_okay=False, path_type=Path),
                  help="Write the predictions: .csv (one row per example), .json or .npz (also the raw outputs).")
    @click.option("--top-k", "top_k", type=int, default=1, show_default=True,
                  help="Classification: the k most probable classes of each example.")
    @click.option("--backend", type=click.Choice(["torch", "onnx"]),
                  help="Run a run folder with PyTorch or onnxruntime (default: torch when installed, else onnx); an "
                       ".onnx file runs with onnx, an exported .xml/.pt2/.tflite with its own runtime.")
    @click.option("--provider", type=click.Choice(["cpu", "cuda"]),
                  help="onnx: the onnxruntime execution provider (default: cuda with --device cuda, else cpu); "
                       "cuda falls back to the CPU with a warning when unavailable.")
    @click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default="auto", show_default=True,
                  help="torch: where to run.")
    @threads_option(help="Compute threads: a number, or auto (the default): the CPUs this process may use.")
    def predict(run: Path, input_path: Path, output: Path | None, top_k: int, backend: str | None,
                provider: str | None, device: str, threads: str | int) -> None:
        """Run a trained model on new inputs: class names with probabilities, or values in the target's units.
        RUN_OR_MODEL is a run folder (its best weights and preprocessing), an .onnx file or an artifact of
        `dlspec export` (.xml, .pt2, .tflite).

        An artifact is OpenVINO IR (.xml, its .bin beside it), a torch.export program (.pt2) or a LiteRT
        flatbuffer (.tflite), each run by its own runtime on the CPU on arrays (.npy, .npz) checked against
        the artifact's inputs (docs/deploy.md)."""
        from .. import predict as predict_
        from .. import threads as threads_

        threads_.prepare(threads)
        from .output import err, out

        result = predict_.predict_rows(run, input_path, output, device, backend=backend, provider=provider,
                                       top_k=top_k)
        shown = 0
        for key, rows in result["table"].items():
            out(f"{key}: {list(result['outputs'][key].shape)}")
            if not rows:
                continue
            cols = list(rows[0])
            cells = [[_cell(r[c]) for c in cols] for r in rows[:50]]
            widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
            out("  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)))
            for row in cells:
                out("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))
            shown = len(rows)
            if len(rows) > 50:
                out(f"… {len(rows) - 50} more (write them all with --output)")
        if output is not None:
            err(f"wrote {output} ({shown} example(s))" if shown else f"wrote {output}")


def _cell(v) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v)
