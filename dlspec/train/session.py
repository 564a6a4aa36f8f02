"""`dlspec train`, `evaluate` and `predict`: from a spec (or a run folder) to results.

A run folder is self-contained: `graph.json` holds the lowered model and `config.json` the
recipe, so evaluation and prediction need neither the spec nor its imports.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import DlspecError, error
from ..io import write_error
from ..ir.graph import Graph
from ..program import compile_file
from .loop import Outcome
from .programs import PROGRAMS, pick_recipe
from .run import (
    BEST_JSON,
    CHECKPOINTS,
    CONFIG,
    LOCK,
    TEST_METRICS,
    RunLock,
    atomic_write_json,
    atomic_write_npz,
    best_weights,
    epoch_bound_schedule,
    holds_run,
    newest_checkpoint,
    read_config,
    read_json,
    read_run,
    remove_interrupted_writes,
    write_config,
)

__all__ = ["evaluate", "load_run", "pick_recipe", "predict", "train"]

#: the run folder's one reader and weights rule (`run.py`), by the names export and the CLI use
load_run = read_run
_best_weights = best_weights


def next_run_folder(root: Path, name: str) -> Path:
    folder = root / name
    i = 2
    while folder.exists() and (holds_run(folder) or (folder / LOCK).exists()):
        folder = root / f"{name}-{i}"
        i += 1
    return folder


def train(
    spec: Path,
    model: str | None = None,
    device: str | None = None,
    epochs: int | None = None,
    batch: int | None = None,
    seed: int | None = None,
    out: Path | None = None,
    resume: bool = False,
    progress: bool = True,
    echo: Callable[[str], None] = print,
    parallel: Any = None,
    backend: str = "torch",
    overwrite: bool = False,
    verbose: bool = False,
    tensorboard: Path | None = None,
    compiled: bool | None = None,
):
    """Train the recipe of `spec`; returns the loop's Outcome. `parallel`: a
    `distributed.Launch` for data-parallel training over several processes or machines.
    `backend="tf"` trains with TensorFlow (`dlspec/train/tf_loop.py`; `parallel` then picks
    tf.distribute replicas). `overwrite`: replace the run already in `out` (E674 with `resume`;
    E675 for a folder that holds something else). `verbose`: let TensorFlow print its own log
    lines. `tensorboard`: a folder for TensorBoard logs (`train/tensorboard.py`)."""
    if overwrite and resume:
        raise error("E674", "--overwrite starts the run again from nothing; --resume continues it: give one of them")
    if not verbose:
        from .tf_runtime import quiet_tensorflow

        quiet_tensorflow()
    if tensorboard is not None:
        from .tensorboard import check_available

        check_available()
    program = compile_file(spec)
    cfg = pick_recipe(program, model, spec)
    updates = {k: v for k, v in {"epochs": epochs, "batch": batch, "seed": seed, "device": device,
                                  "compile": compiled}.items() if v is not None}
    for k, v in updates.items():
        if k in ("epochs", "batch") and v < 1:
            raise error("E907", f"--{k} must be at least 1; got {v}")
    cfg = cfg.model_copy(update=updates)
    prog = PROGRAMS[cfg.kind]
    graphs = prog.graphs(program, cfg)
    # the network trained: the recipe's model, a GAN's generator, a distillation's student
    graph: Graph = prog.trained_graph(graphs)
    if out is None:
        stem = Path(spec).stem
        run = next_run_folder(Path("runs"), stem if len(program.recipes) == 1 else f"{stem}-{cfg.name.lower()}")
    else:
        run = out
    # node 0 writes the run folder; the other machines of a multi-machine run only train
    follower = parallel is not None and parallel.node_rank > 0
    if resume and not run.exists():
        raise error("E631", f"--resume: no run folder {run}", hint="give the folder of the interrupted run with --out")
    if follower:
        return _train_in(run, spec, cfg, prog, graphs, graph, resume, progress, echo, parallel, backend, tensorboard)
    created = not run.exists()
    try:
        run.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise write_error(exc, run) or exc from None
    lock = RunLock(run)
    try:
        lock.acquire()  # E670 while another `dlspec train` holds the folder
    except OSError as exc:
        raise write_error(exc, run / LOCK) or exc from None
    try:
        removed = remove_interrupted_writes(run)
        if removed:
            echo(f"removed {len(removed)} temporary file(s) an interrupted write left in {run}: "
                 + ", ".join(p.name for p in removed[:5]) + (" …" if len(removed) > 5 else ""))
        if overwrite and holds_run(run):
            _clear_run_folder(run, echo)
        if not resume and holds_run(run):
            hint = "continue it with --resume, start it again with --overwrite, or choose another folder with --out"
            if (run / CONFIG).is_file() and not (run / CHECKPOINTS).is_dir():
                hint = ("it stopped before its first checkpoint: --resume starts it again in the same folder "
                        "(or --overwrite)")
            raise error("E633", f"run folder {run} already holds a run", hint=hint)
        if resume:
            point = _resume_point(run, cfg, backend, Path(spec).resolve().parent, echo)
            if point is None:
                resume = False  # nothing was checkpointed yet: the run starts again in its folder
            elif isinstance(point, Outcome):
                return point  # a finished run: nothing to do
        return _train_in(run, spec, cfg, prog, graphs, graph, resume, progress, echo, parallel, backend, tensorboard)
    finally:
        lock.release()
        if created and not holds_run(run):
            try:
                run.rmdir()  # a run that failed its checks leaves no empty folder behind
            except OSError:
                pass


def _clear_run_folder(run: Path, echo: Callable[[str], None]) -> None:
    """--overwrite: remove the files of the run in `run` (this process holds its lock). A folder
    that holds no dlspec run is left alone (E675): --overwrite replaces runs, nothing else."""
    import shutil

    if not (run / CONFIG).is_file():
        raise error("E675", f"--overwrite: {run} holds no dlspec run (it has no {CONFIG}); it is left as it is",
                    hint="--overwrite replaces a run folder; train into an empty or new folder with --out")
    for p in run.iterdir():
        if p.name == LOCK:
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()
    echo(f"--overwrite: removed the run that was in {run}")


def _train_in(run: Path, spec: Path, cfg: Any, prog: Any, graphs: Any, graph: Graph, resume: bool, progress: bool,
              echo: Callable[[str], None], parallel: Any, backend: str, tensorboard: Path | None = None) -> Any:
    """Load the data and train into the run folder `run` (this process holds its lock)."""
    from ..data import check_against_model, fingerprint, load_data
    from .plotter import start as start_plotter

    start_plotter()  # before the framework's threads: curves.png's matplotlib loads on the side

    spec_dir = Path(spec).resolve().parent
    data_files = fingerprint(cfg.data, spec_dir)  # recorded in config.json; --resume compares (E673)
    bundle = load_data(cfg.data, cfg.seed, spec_dir)
    if prog.checks_data:
        check_against_model(bundle, graph)
    if backend not in prog.backends:
        raise error("E680", f"`train {cfg.kind}` recipes train with --backend {' or '.join(prog.backends)} only",
                    hint="the tf trainer runs supervised recipes (`train Model {...}`)")
    if backend == "tf":
        from .tf_loop import train_tf

        multi = parallel is not None and parallel.nnodes > 1
        return train_tf(spec, graph, cfg, bundle, run, resume=resume, progress=progress, echo=echo, data_files=data_files,
                        nproc=parallel.nproc if parallel is not None else 1,
                        nnodes=parallel.nnodes if parallel is not None else 1,
                        node_rank=parallel.node_rank if multi else None,
                        sync_bn=parallel.sync_bn if parallel is not None else False, tensorboard=tensorboard)

    from . import torch_loop as tl

    dev = tl.pick_device(cfg.device)
    data_parallel = parallel is not None and parallel.parallel
    if data_parallel:
        from . import distributed

        if not prog.data_parallel:
            raise error("E660", f"--nproc/--nnodes: `train {cfg.kind}` recipes train in one process",
                        hint="drop --nproc and --nnodes; data-parallel training covers supervised recipes")
        master = distributed.check_launch(parallel, dev.type, cfg.batch, len(bundle.train))
        if tensorboard is not None:
            raise error("E913", "--tensorboard writes the logs of one training process; data-parallel runs "
                        "(--nproc, --nnodes) do not write them", hint="drop --tensorboard, or train in one process")
    trainer: Any = None
    if prog.builds_first:  # its checks of files and data come before the run folder is written
        trainer = prog.torch_stepper(graphs, cfg, bundle, run, dev, spec_dir, progress, echo)
    run.mkdir(parents=True, exist_ok=True)
    if not resume and not (parallel is not None and parallel.node_rank > 0):
        write_config(run, spec, cfg, "torch", str(dev), bundle.description, prep=bundle.prep, data_files=data_files)
        prog.write_graphs(run, graphs)
    echo(f"training {graph.name} on {bundle.description}; device {dev}; run folder {run}")
    if data_parallel:
        job = {"run": str(run.resolve()), "resume": resume, "progress": progress}
        return distributed.launch(parallel, job, master, run, dev.type, echo, graph=graph, cfg=cfg, bundle=bundle)
    if trainer is None:
        trainer = prog.torch_stepper(graphs, cfg, bundle, run, dev, spec_dir, progress, echo)
    from .tensorboard import attach

    attach(trainer, tensorboard, graph)
    from ..threads import tune_torch_trainer

    tune_torch_trainer(trainer, echo, resume)  # --threads: measured, printed, recorded in config.json
    from ..jit import warm_up

    warm_up(trainer, echo)  # --compile: compiled before epoch 1, its time apart from the epochs'
    if resume:
        done = trainer.restore()
        echo(f"resuming after epoch {done}")
    try:
        return trainer.fit()
    except KeyboardInterrupt:
        last = trainer.log.records[-1]["epoch"] if trainer.log.records else 0
        raise error("E634", f"interrupted during epoch {last + 1}; checkpoints up to epoch {last} are intact",
                    hint=f"continue with: dlspec train {spec} --out {run} --resume") from None


def _resume_point(run: Path, cfg: Any, backend: str, spec_dir: Path, echo: Callable[[str], None]) -> Any:
    """What `--resume` does with the run folder `run`: None — no checkpoint yet, start the run
    again in the folder; an Outcome — the run is finished, nothing to do; True — continue from
    the newest whole checkpoint. Refuses a folder that is no run (E631), the other backend (E683),
    data that changed or vanished (E673) and a changed epoch count under a schedule fitted to it
    (E671)."""
    if not (run / CONFIG).is_file():
        if holds_run(run):
            raise error("E631", f"--resume: {run} holds no dlspec run (it has no {CONFIG})",
                        hint="give the folder of the interrupted run with --out")
        echo(f"--resume: {run} is empty; starting the run")
        return None
    _check_resume_backend(run, backend)
    found = newest_checkpoint(run)  # E632 when every checkpoint is damaged (warnings come at restore)
    if found is None:
        echo(f"--resume: {run} has no checkpoint yet (the run stopped during its first epochs); starting it again")
        return None
    _, config = read_config(run)
    from ..data import check_unchanged

    check_unchanged(config.get("data_files"), cfg.data, spec_dir)
    _, state = found
    planned = state.get("epochs", config["recipe"].get("epochs", cfg.epochs))
    done, finished = state["epoch"], state.get("finished")
    if finished is None and cfg.early_stop is not None and state.get("bad_epochs", 0) >= cfg.early_stop.patience:
        finished = "stopped"  # a checkpoint written before checkpoints recorded how training ended
    if finished == "stopped" or done >= cfg.epochs:
        how = "stopped early" if finished == "stopped" else "completed"
        if (run / TEST_METRICS).is_file():
            echo(f"{run} is finished ({how} after epoch {done}); nothing to do"
                 + ("" if finished == "stopped" else f" (give --epochs above {done} to train it further)"))
            best = read_json(run / BEST_JSON, "E635") if (run / BEST_JSON).is_file() else {}
            return Outcome(run, done, finished == "stopped", read_json(run / TEST_METRICS, "E635"), best)
        echo(f"{run} finished training ({how} after epoch {done}); running its final test")
        return True
    if cfg.epochs != planned:
        part = epoch_bound_schedule(cfg)
        if part is not None:
            raise error("E671", f"--resume --epochs {cfg.epochs}: the run was planned for {planned} epochs and its "
                        f"schedule {part} is fitted to that count (the learning rate would reach its end at epoch "
                        f"{planned} and climb back)",
                        hint=f"resume with --epochs {planned}, or train with --epochs {cfg.epochs} into another "
                             "folder; warmup, step, multistep, exponential, plateau, constant and cosine(t_max=...) "
                             "schedules can be extended")
    return True


def _check_resume_backend(run: Path, backend: str) -> None:
    """Checkpoints hold one framework's optimizer state: resume with the backend that trained."""
    if not (run / CONFIG).is_file():
        return  # restoring reports what is missing from the folder
    trained = read_config(run)[1]["backend"]
    if trained != backend:
        raise error("E683", f"--resume --backend {backend}: {run} was trained with --backend {trained}",
                    hint=f"resume it with --backend {trained}; its best/last.safetensors weights are shared by "
                         "every backend (export or evaluate them), its optimizer checkpoints are not")


# ---- evaluate and predict ----------------------------------------------------------------------


def evaluate(run: Path, data: str | None = None, split: str = "test", device: str = "auto") -> dict[str, float]:
    """The metrics of a run's best weights on a split of its data, or on the whole of `data`."""
    return evaluate_report(run, data, split, device)["metrics"]


def evaluate_report(run: Path, data: str | None = None, split: str = "test", device: str = "auto") -> dict[str, Any]:
    """{"metrics", "examples", "source", "reports": {output: class_report}} of a run's best weights.

    Without `data`: a split of the run's own data, loaded as in training (the same seed, hence
    the same split and statistics). With `data` (a CSV, an image or text folder with one
    subfolder per class, or an .npz): every example of it, read with the run's preprocessing —
    no new split, no new statistics, labels mapped to the run's classes by name."""
    from ..data import load_data
    from .torch_loop import pick_device

    graph, cfg, config = load_run(run)
    prog = PROGRAMS[cfg.kind]
    if data is None:
        bundle = load_data(cfg.data, cfg.seed, Path(config["spec"]).parent)
        source, whole = f"the {split} split of {bundle.name}", False
    else:
        bundle = _file_bundle(run, config, data, cfg)
        # an .npz is loaded as a data set of three splits (all of them are evaluated); a file read
        # with the run's preprocessing is one split
        source, whole, split = str(data), Path(data).suffix.lower() == ".npz", "test"
    dev = pick_device(device)
    outputs: dict[str, Any] = {}
    if prog.reports:
        metrics = prog.evaluate(run, cfg, graph, bundle, split, whole, dev, outputs=outputs)
    else:
        metrics = prog.evaluate(run, cfg, graph, bundle, split, whole, dev)
    reports = {}
    classes = bundle.classes
    for name, out in outputs.get("outputs", {}).items():
        y = outputs["targets"][name]
        k = bundle.num_classes.get(name) if isinstance(bundle.num_classes, dict) else bundle.num_classes
        if bundle.task == "classification" and k and y.ndim == 1:
            from .report import class_report

            names = classes if classes is not None and len(classes) == k and len(outputs["outputs"]) == 1 \
                else [str(i) for i in range(k)]
            reports[name] = class_report(out, y, names)
    n = len(next(iter(outputs["targets"].values()))) if outputs.get("targets") else None
    return {"metrics": metrics, "examples": n, "source": source, "reports": reports}


def _file_bundle(run: Path, config: dict[str, Any], data: str, cfg: Any) -> Any:
    """The data set of `evaluate --data FILE`: the whole file, as the run's preprocessing reads it."""
    from ..data import DataBundle, Split, load_data
    from ..data.prep import read_inputs
    from ..ir.training import Npz
    from .run import read_preprocessing

    p = Path(data)
    prep = read_preprocessing(run, config)
    if p.suffix.lower() == ".npz":
        if prep is not None and prep.source not in ("npz", "builtin"):
            raise error("E609", f"--data {data}: the run was trained on {prep.source} data; give {prep.expects()}")
        return load_data(Npz(path=str(p.resolve()), split=(0.98, 0.01, 0.01), shuffle=False), cfg.seed, Path("."))
    if prep is None:
        raise error("E622", f"{run} records no preprocessing (it was trained by an older dlspec), so {data} cannot be "
                    "read as the training data was", hint="train the run again, or evaluate on an .npz of model inputs")
    if prep.source in ("npz", "builtin"):
        raise error("E609", f"--data {data}: a run trained on {prep.source} data evaluates an .npz with arrays x, y")
    batch = read_inputs(prep, p, need_labels=True)
    part = Split(batch.x, batch.y)
    k = len(prep.classes) if prep.task == "classification" and prep.classes else None
    return DataBundle(part, part, part, task=prep.task, num_classes=k,  # type: ignore[arg-type]
                      description=f"{p.name}: {len(part)} examples, read with the run's preprocessing",
                      source=str(p), name=p.name, classes=prep.classes, prep=prep)


def installed_backend(run: Path) -> str:
    """predict's default backend: onnx for an .onnx file; else PyTorch when it is installed, else
    onnxruntime when that is, else PyTorch (whose absence is then reported with its install hint)."""
    import importlib.util

    if run.suffix == ".onnx" and not run.is_dir():
        return "onnx"
    def installed(module: str) -> bool:
        try:
            return importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):  # a broken or blocked installation
            return False

    if installed("torch"):
        return "torch"
    if installed("onnxruntime") and installed("onnx"):
        return "onnx"
    return "torch"


#: the suffix of each artifact `dlspec export` writes that predict runs with its own runtime
ARTIFACTS = {".xml": "openvino", ".pt2": "pt2", ".tflite": "litert"}
#: how predict's messages name each artifact's runtime
RUNTIME_NAMES = {"openvino": "OpenVINO", "pt2": "PyTorch (torch.export)", "litert": "LiteRT"}


def predict(run: Path, input_path: Path, output: Path | None = None, device: str = "auto",
            backend: str | None = None, provider: str | None = None, top_k: int = 1) -> dict[str, Any]:
    """Run a model on new inputs; returns {output name: raw outputs} and writes `output` (.csv,
    .json or .npz) when given. `run` is a run folder (its graph, best weights and preprocessing),
    an `.onnx` file, or an artifact of `dlspec export`: OpenVINO IR (`.xml`), a torch.export
    program (`.pt2`) or a LiteRT flatbuffer (`.tflite`), each run by its own runtime on the CPU.
    `input_path`: raw data in the training source's form (CSV rows, an image or a folder of them,
    a text file or a folder of them; run folders only) or arrays (.npy for one input, .npz with
    one array per model input name, given as the model takes them). `backend` torch or onnx
    (default: `installed_backend`); `provider` cpu or cuda for onnx."""
    return predict_rows(run, input_path, output, device, backend, provider, top_k)["outputs"]


def predict_rows(run: Path, input_path: Path, output: Path | None = None, device: str = "auto",
                 backend: str | None = None, provider: str | None = None, top_k: int = 1) -> dict[str, Any]:
    """`predict` with what the command line prints: {"outputs", "names" (one per example), "table"
    ({output: [row dicts]}: class names with probabilities, or values in the target's units)}."""
    if top_k < 1:
        raise error("E914", f"--top-k must be at least 1; got {top_k}")
    if output is not None and output.suffix.lower() not in (".csv", ".json", ".npz"):
        raise error("E638", f"--output {output}: write .csv, .json or .npz")
    artifact = None if run.is_dir() else ARTIFACTS.get(run.suffix.lower())
    if artifact is not None:
        _artifact_options(run, artifact, backend, provider, device)
    else:
        if backend is None:
            backend = installed_backend(run)
        if provider is not None and backend != "onnx":
            raise error("E717", "--provider chooses an onnxruntime execution provider; it needs --backend onnx")
        if provider is None:
            provider = "cuda" if device == "cuda" else "cpu"
    prep = cfg = None
    if artifact is not None:
        result, names = _predict_artifact(run, artifact, input_path)
    elif run.suffix == ".onnx" and not run.is_dir():
        if backend != "onnx":
            raise error("E717", f"{run} is an ONNX model: it runs with --backend onnx")
        result, names = _predict_onnx_file(run, input_path, provider)
    else:
        from .run import read_preprocessing

        graph, cfg, config = load_run(run)
        prep = read_preprocessing(run, config)
        specs = [(gi.name, gi.type.dtype, tuple(gi.type.shape)) for gi in graph.inputs]
        if input_path.suffix.lower() in (".npy", ".npz") or prep is None or prep.source in ("npz", "builtin"):
            arrays = _read_inputs(input_path, specs)
            names = [str(i) for i in range(len(arrays[0]))]
        else:
            from ..data.prep import read_inputs

            batch = read_inputs(prep, input_path)
            arrays, names = batch.x, batch.names
            arrays = _check_arrays(input_path, specs, arrays)
        if backend == "onnx":
            from ..backends import onnx as ob
            from ..weights import load_graph_weights

            weights = load_graph_weights(graph, best_weights(run))
            result = ob.run(graph, weights, dict(zip([s[0] for s in specs], arrays)), provider=provider)
        else:
            result = _predict_torch(run, graph, arrays, device)
    table = _table(result, names, prep, cfg, top_k)
    if output is not None:
        _write_predictions(output, result, names, table)
    return {"outputs": result, "names": names, "table": table}


def _probabilities(out: Any, loss: Any) -> Any:
    """Class probabilities from a classification output, by the loss it was trained with."""
    import numpy as np

    kind = getattr(loss, "type", "cross_entropy")
    out = out.astype(np.float64)
    if out.ndim == 1 or out.shape[-1] == 1:  # one logit: the probability of class 1
        p1 = out.reshape(len(out)) if kind == "bce" else 1 / (1 + np.exp(-out.reshape(len(out))))
        return np.stack([1 - p1, p1], axis=1)
    if kind == "nll":
        return np.exp(out)
    z = out - out.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _table(result: dict[str, Any], names: list[str], prep: Any, cfg: Any, top_k: int) -> dict[str, list[dict[str, Any]]]:
    """Per output, one row per example: its class names and probabilities (top-k), or its values."""
    from .loop import losses_by_output

    tables: dict[str, list[dict[str, Any]]] = {}
    losses = losses_by_output(cfg, list(result)) if cfg is not None and getattr(cfg, "loss", None) is not None else {}
    task = prep.task if prep is not None else None
    for key, out in result.items():
        loss = losses.get(key)
        kind = getattr(loss, "type", None)
        classify = out.ndim == 2 and (task == "classification" or (task is None and kind in
                                                                   ("cross_entropy", "nll", "bce_with_logits", "bce")))
        rows: list[dict[str, Any]] = []
        if classify and (out.shape[1] > 1 or kind in ("bce", "bce_with_logits") or task == "classification"):
            probs = _probabilities(out, loss)
            k = min(top_k, probs.shape[1])
            order = (-probs).argsort(axis=1, kind="stable")[:, :k]
            classes = prep.classes if prep is not None and prep.classes and len(result) == 1 else None
            for name, o, pr in zip(names, order, probs, strict=True):
                row: dict[str, Any] = {"example": name}
                for rank, c in enumerate(o, 1):
                    label = classes[c] if classes is not None and c < len(classes) else str(int(c))
                    suffix = "" if k == 1 else f"_{rank}"
                    row[f"class{suffix}"] = label
                    row[f"probability{suffix}"] = float(pr[c])
                rows.append(row)
        elif out.ndim == 2 and out.shape[1] <= 16:
            values = prep.target_units(out) if prep is not None and task == "regression" else out
            target = prep.label if prep is not None and prep.label else key
            for name, v in zip(names, values, strict=True):
                row = {"example": name}
                for j, value in enumerate(v):
                    row[target if len(v) == 1 else f"{target}_{j}"] = float(value)
                rows.append(row)
        tables[key] = rows
    return tables


def _write_predictions(output: Path, result: dict[str, Any], names: list[str],
                       table: dict[str, list[dict[str, Any]]]) -> None:
    import csv
    import io

    import numpy as np

    from .run import atomic_write_text

    suffix = output.suffix.lower()
    if suffix == ".npz":
        arrays = dict(result)
        for key, rows in table.items():
            if rows and "class" in rows[0]:
                arrays[f"{key}_class"] = np.asarray([r["class"] for r in rows])
                arrays[f"{key}_probability"] = np.asarray([r["probability"] for r in rows], dtype=np.float32)
            elif rows and "class_1" in rows[0]:
                arrays[f"{key}_class"] = np.asarray([r["class_1"] for r in rows])
                arrays[f"{key}_probability"] = np.asarray([r["probability_1"] for r in rows], dtype=np.float32)
        atomic_write_npz(output, arrays)
    elif suffix == ".json":
        atomic_write_json(output, {"examples": names,
                                   "predictions": {k: rows for k, rows in table.items() if rows},
                                   "outputs": {k: v.tolist() for k, v in result.items()}})
    else:
        keys = [k for k, rows in table.items() if rows]
        if not keys:
            raise error("E638", f"--output {output}: the outputs {', '.join(result)} are no table "
                        "(classes or a few values per example); write .npz or .json")
        buf = io.StringIO()
        multi = len(keys) > 1
        fields = ["example"] + [f"{k}.{c}" if multi else c for k in keys for c in table[k][0] if c != "example"]
        w = csv.DictWriter(buf, fieldnames=fields)
        w.writeheader()
        for i, name in enumerate(names):
            row = {"example": name}
            for k in keys:
                row |= {(f"{k}.{c}" if multi else c): v for c, v in table[k][i].items() if c != "example"}
            w.writerow(row)
        atomic_write_text(output, buf.getvalue())


def _predict_torch(run: Path, graph: Graph, arrays: list[Any], device: str) -> dict[str, Any]:
    import numpy as np
    import torch

    from ..backends import get_backend
    from ..backends import torch as tb
    from . import torch_loop as tl

    dev = tl.pick_device(device)
    model = get_backend("torch").build(graph).to(dev).eval()
    tb.load_weights(model, graph, best_weights(run))
    with torch.no_grad():
        out = model(*[torch.from_numpy(np.ascontiguousarray(a)).to(dev) for a in arrays])
    outs = out if isinstance(out, dict) else {graph.outputs[0].name: out}
    return {k: v.float().cpu().numpy() for k, v in outs.items()}


def _predict_onnx_file(path: Path, input_path: Path, provider: str) -> tuple[dict[str, Any], list[str]]:
    from ..backends import onnx as ob

    if not path.is_file():
        raise error("E715", f"no such ONNX model: {path}")
    session = ob.make_session(str(path), provider)
    specs = ob.session_input_specs(session)
    arrays = _read_inputs(input_path, specs)
    feed = ob.check_inputs(specs, dict(zip([s[0] for s in specs], arrays)))
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feed))), [str(i) for i in range(len(arrays[0]))]


def _artifact_options(path: Path, target: str, backend: str | None, provider: str | None, device: str) -> None:
    """E717 for options that choose how a run folder runs: an artifact runs with its own runtime,
    on the CPU (a .pt2 program is PyTorch, so --backend torch fits it)."""
    runtime = RUNTIME_NAMES[target]
    if backend is not None and not (target == "pt2" and backend == "torch"):
        raise error("E717", f"{path} runs with {runtime} (an exported {target} artifact), not --backend {backend}",
                    hint="leave out --backend; it chooses how a run folder runs")
    if provider is not None:
        raise error("E717", f"--provider chooses an onnxruntime execution provider; {path} runs with {runtime}",
                    hint="leave out --provider")
    if device not in ("auto", "cpu"):
        raise error("E717", f"--device {device}: {path} runs with {runtime} on the CPU",
                    hint="leave out --device, or predict on the run folder to use another device")


def _predict_artifact(path: Path, target: str, input_path: Path) -> tuple[dict[str, Any], list[str]]:
    """An exported artifact on `input_path`'s arrays, run in this process by the loader the
    export's self-check runs (`dlspec/deploy/child.py`), its inputs checked against the artifact's."""
    import zipfile

    import numpy as np

    from .. import threads as threads_
    from ..deploy import child, need
    from ..deploy.targets import quiet_fds

    if not path.is_file():
        raise error("E715", f"no such {target} artifact: {path}")
    need(target, target)
    runtime = RUNTIME_NAMES[target]
    if target == "pt2" and not zipfile.is_zipfile(path):  # torch's own message would point at its log
        raise error("E728", f"{runtime} cannot load {path}: it is not a zip archive, which a .pt2 program is",
                    hint="the file is damaged (truncated?) or was not written by `dlspec export --target pt2`; "
                         "export it again")
    if target == "pt2" and child._is_aoti(str(path)):
        raise error("E728", f"{path} is an AOTInductor package; predict runs a plain torch.export program",
                    hint="load it with torch._inductor.aoti_load_package (docs/deploy.md), export without --aoti, "
                         "or predict on the run folder")
    choice = threads_.current()
    try:
        with quiet_fds(), _quiet_logger("torch.export"):  # the runtimes' own start-up and failure prints
            model = child.LOADERS[target](str(path), None, choice.threads if choice is not None else 0)
    except Exception as exc:  # each runtime raises its own exception types
        raise error("E728", f"{runtime} cannot load {path}: {_runtime_message(exc)}",
                    hint=f"the file is damaged (truncated?) or was not written by `dlspec export --target {target}`; "
                         "export it again") from None
    specs = model.inputs
    arrays = _read_inputs(input_path, specs)
    try:
        with quiet_fds():
            result = model(dict(zip([s[0] for s in specs], arrays)))
    except Exception as exc:
        raise error("E728", f"{runtime} cannot run {path} on {input_path}: {_runtime_message(exc)}",
                    hint="the artifact's inputs are " + ", ".join(f"`{n}` {d}[{', '.join(map(str, s))}]"
                                                                  for n, d, s in specs)) from None
    return {k: np.asarray(v) for k, v in result.items()}, [str(i) for i in range(len(arrays[0]))]


class _quiet_logger:
    """A Python logger silenced for a block: torch.export.load logs the traceback of a file it
    cannot read before raising its own error."""

    def __init__(self, name: str) -> None:
        import logging

        self.logger = logging.getLogger(name)

    def __enter__(self) -> None:
        self.was, self.logger.disabled = self.logger.disabled, True

    def __exit__(self, *exc: object) -> None:
        self.logger.disabled = self.was


def _runtime_message(exc: BaseException) -> str:
    """The line of a runtime's exception that says what is wrong: OpenVINO prefixes its message
    with the C++ files it passed through; torch's adds advice to read the log it printed."""
    import re

    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    lines = [ln for ln in lines if not re.fullmatch(r"(Exception from|Check '.*' failed at) \S+:\d+:", ln)]
    first = re.split(r"(?<=\.)\s+(?=Please )", lines[0])[0] if lines else type(exc).__name__
    return first if len(first) <= 300 else first[:300] + " …"


def _read_inputs(input_path: Path, specs: list[tuple[str, str, tuple]]) -> list[Any]:
    """The arrays of `input_path` for the model inputs `specs` [(name, dtype, shape)], checked
    (rank, known dims, integer vs float) and cast to the model's dtypes."""
    import numpy as np

    names = [s[0] for s in specs]
    if not input_path.is_file():
        raise error("E638", f"no such input file: {input_path}")
    try:
        if input_path.suffix == ".npy":
            arrays = [np.load(input_path, allow_pickle=False)]
        elif input_path.suffix == ".npz":
            with np.load(input_path, allow_pickle=False) as z:
                missing = [n for n in names if n not in z.files]
                if missing and len(z.files) == len(names) == 1:
                    arrays = [z[z.files[0]]]
                elif missing:
                    raise error("E638", f"{input_path} lacks array(s) {missing} for the model inputs",
                                     hint=f"it has {z.files}; name the arrays after the inputs {names}")
                else:
                    arrays = [z[n] for n in names]
        else:
            raise error("E638", f"{input_path}: predict reads .npy or .npz arrays")
    except DlspecError:
        raise
    except Exception as exc:
        raise error("E638", f"cannot read {input_path}: {exc}") from None
    if len(arrays) != len(specs):
        raise error("E638", f"{input_path} holds one array; the model has inputs {names}",
                         hint="write an .npz with one array per input name")
    return _check_arrays(input_path, specs, arrays)


def _check_arrays(input_path: Path, specs: list[tuple[str, str, tuple]], arrays: list[Any]) -> list[Any]:
    """The arrays for the model inputs `specs`, checked (rank, known dims, integer vs float) and
    cast to the model's dtypes; E639 names the input and what the model needs."""
    arrays = list(arrays)
    for i, ((name, dtype, shape), a) in enumerate(zip(specs, arrays)):
        want = f"{dtype}[{', '.join(str(d) for d in shape)}]"
        if a.ndim != len(shape) or any(isinstance(d, int) and d != s for d, s in zip(shape, a.shape)):
            raise error("E639", f"{input_path}: input `{name}` is {list(a.shape)}; the model needs {want}")
        if (a.dtype.kind in "iu") != dtype.startswith("int"):
            raise error("E639", f"{input_path}: input `{name}` has dtype {a.dtype}; the model needs {dtype}")
        arrays[i] = a.astype(dtype)
    return arrays
