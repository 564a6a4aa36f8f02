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
):
    """Train the recipe of `spec`; returns the loop's Outcome. `parallel`: a
    `distributed.Launch` for data-parallel training over several processes or machines.
    `backend="tf"` trains with TensorFlow (`dlspec/train/tf_loop.py`; `parallel` then picks
    tf.distribute replicas)."""
    program = compile_file(spec)
    cfg = pick_recipe(program, model, spec)
    updates = {k: v for k, v in {"epochs": epochs, "batch": batch, "seed": seed, "device": device}.items() if v is not None}
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
        return _train_in(run, spec, cfg, prog, graphs, graph, resume, progress, echo, parallel, backend)
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
        if not resume and holds_run(run):
            hint = "continue it with --resume, or choose another folder with --out"
            if (run / CONFIG).is_file() and not (run / CHECKPOINTS).is_dir():
                hint = "it stopped before its first checkpoint: --resume starts it again in the same folder"
            raise error("E633", f"run folder {run} already holds a run", hint=hint)
        if resume:
            point = _resume_point(run, cfg, backend, Path(spec).resolve().parent, echo)
            if point is None:
                resume = False  # nothing was checkpointed yet: the run starts again in its folder
            elif isinstance(point, Outcome):
                return point  # a finished run: nothing to do
        return _train_in(run, spec, cfg, prog, graphs, graph, resume, progress, echo, parallel, backend)
    finally:
        lock.release()
        if created and not holds_run(run):
            try:
                run.rmdir()  # a run that failed its checks leaves no empty folder behind
            except OSError:
                pass


def _train_in(run: Path, spec: Path, cfg: Any, prog: Any, graphs: Any, graph: Graph, resume: bool, progress: bool,
              echo: Callable[[str], None], parallel: Any, backend: str) -> Any:
    """Load the data and train into the run folder `run` (this process holds its lock)."""
    from ..data import check_against_model, fingerprint, load_data

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
                        sync_bn=parallel.sync_bn if parallel is not None else False)

    from . import torch_loop as tl

    dev = tl.pick_device(cfg.device)
    data_parallel = parallel is not None and parallel.parallel
    if data_parallel:
        from . import distributed

        if not prog.data_parallel:
            raise error("E660", f"--nproc/--nnodes: `train {cfg.kind}` recipes train in one process",
                        hint="drop --nproc and --nnodes; data-parallel training covers supervised recipes")
        master = distributed.check_launch(parallel, dev.type, cfg.batch, len(bundle.train))
    trainer: Any = None
    if prog.builds_first:  # its checks of files and data come before the run folder is written
        trainer = prog.torch_stepper(graphs, cfg, bundle, run, dev, spec_dir, progress, echo)
    run.mkdir(parents=True, exist_ok=True)
    if not resume and not (parallel is not None and parallel.node_rank > 0):
        write_config(run, spec, cfg, "torch", str(dev), bundle.description, data_files=data_files)
        prog.write_graphs(run, graphs)
    echo(f"training {graph.name} on {bundle.description}; device {dev}; run folder {run}")
    if data_parallel:
        job = {"run": str(run.resolve()), "resume": resume, "progress": progress}
        return distributed.launch(parallel, job, master, run, dev.type, echo, graph=graph, cfg=cfg, bundle=bundle)
    if trainer is None:
        trainer = prog.torch_stepper(graphs, cfg, bundle, run, dev, spec_dir, progress, echo)
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
    from ..data import load_data
    from .torch_loop import pick_device

    graph, cfg, config = load_run(run)
    base = Path(config["spec"]).parent
    data_cfg = cfg.data
    if data is not None:
        data_cfg = _data_from_path(data, cfg)
        base = Path(".")
    bundle = load_data(data_cfg, cfg.seed, base)
    return PROGRAMS[cfg.kind].evaluate(run, cfg, graph, bundle, split, data is not None, pick_device(device))


def _data_from_path(path: str, cfg) -> Any:
    from ..ir.training import Csv, Npz

    p = Path(path)
    if p.suffix == ".npz":
        return Npz(path=str(p.resolve()), split=(0.98, 0.01, 0.01), shuffle=False)
    if p.suffix == ".csv":
        old = cfg.data
        if not isinstance(old, Csv):
            raise error("E637", "--data FILE.csv needs a run trained on csv data (its columns are in the recipe)")
        return old.model_copy(update={"path": str(p.resolve())})
    raise error("E637", f"--data {path}: give a .npz (arrays x, y) or a .csv like the training data")


def predict(run: Path, input_path: Path, output: Path | None = None, device: str = "auto",
            backend: str | None = None, provider: str | None = None) -> dict[str, Any]:
    """Run a model on the arrays of `input_path` (.npy for one input, .npz with one array per model
    input name). `run` is a run folder (its graph and best weights) or an `.onnx` file (inputs by
    the model's input names). `backend` torch or onnx (default: onnx for an .onnx file, else
    torch); `provider` cpu or cuda for onnx (default: cuda when `device` is cuda, else cpu).
    Returns and optionally writes {output name: array}."""
    if backend is None:
        backend = "onnx" if run.suffix == ".onnx" else "torch"
    if provider is not None and backend != "onnx":
        raise error("E717", "--provider chooses an onnxruntime execution provider; it needs --backend onnx")
    if provider is None:
        provider = "cuda" if device == "cuda" else "cpu"
    if run.suffix == ".onnx" and not run.is_dir():
        if backend != "onnx":
            raise error("E717", f"{run} is an ONNX model: it runs with --backend onnx")
        result = _predict_onnx_file(run, input_path, provider)
    else:
        graph, _, _ = load_run(run)
        specs = [(gi.name, gi.type.dtype, tuple(gi.type.shape)) for gi in graph.inputs]
        arrays = _read_inputs(input_path, specs)
        if backend == "onnx":
            from ..backends import onnx as ob
            from ..weights import load_graph_weights

            weights = load_graph_weights(graph, best_weights(run))
            result = ob.run(graph, weights, dict(zip([s[0] for s in specs], arrays)), provider=provider)
        else:
            result = _predict_torch(run, graph, arrays, device)
    if output is not None:
        if output.suffix == ".npz":
            atomic_write_npz(output, result)
        elif output.suffix == ".json":
            atomic_write_json(output, {k: v.tolist() for k, v in result.items()})
        else:
            raise error("E638", f"--output {output}: write .npz or .json")
    return result


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


def _predict_onnx_file(path: Path, input_path: Path, provider: str) -> dict[str, Any]:
    from ..backends import onnx as ob

    if not path.is_file():
        raise error("E715", f"no such ONNX model: {path}")
    session = ob.make_session(str(path), provider)
    specs = ob.session_input_specs(session)
    arrays = _read_inputs(input_path, specs)
    feed = ob.check_inputs(specs, dict(zip([s[0] for s in specs], arrays)))
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feed)))


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
    for i, ((name, dtype, shape), a) in enumerate(zip(specs, arrays)):
        want = f"{dtype}[{', '.join(str(d) for d in shape)}]"
        if a.ndim != len(shape) or any(isinstance(d, int) and d != s for d, s in zip(shape, a.shape)):
            raise error("E639", f"{input_path}: input `{name}` is {list(a.shape)}; the model needs {want}")
        if (a.dtype.kind in "iu") != dtype.startswith("int"):
            raise error("E639", f"{input_path}: input `{name}` has dtype {a.dtype}; the model needs {dtype}")
        arrays[i] = a.astype(dtype)
    return arrays
