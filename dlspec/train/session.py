"""`dlspec train`, `evaluate` and `predict`: from a spec (or a run folder) to results.

A run folder is self-contained: `graph.json` holds the lowered model and `config.json` the
recipe, so evaluation and prediction need neither the spec nor its imports.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import error
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

__all__ = ["evaluate", "load_run", "pick_recipe", "train"]

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
