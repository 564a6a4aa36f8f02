"""`dlspec train`, `evaluate` and `predict`: from a spec (or a run folder) to results.

A run folder is self-contained: `graph.json` holds the lowered model and `config.json` the
recipe, so evaluation and prediction need neither the spec nor its imports.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import DlspecError, error
from ..ir.graph import Graph
from ..program import compile_file
from .programs import PROGRAMS, pick_recipe
from .run import (
    CONFIG,
    atomic_write_json,
    atomic_write_npz,
    best_weights,
    read_config,
    read_run,
    write_config,
)

__all__ = ["evaluate", "load_run", "pick_recipe", "predict", "train"]

#: the run folder's one reader and weights rule (`run.py`), by the names export and the CLI use
load_run = read_run
_best_weights = best_weights


def next_run_folder(root: Path, name: str) -> Path:
    folder = root / name
    i = 2
    while folder.exists() and any(folder.iterdir()):
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
        follower = parallel is not None and parallel.node_rank > 0  # node 0 writes the run folder
        if not resume and not follower and run.exists() and any(run.iterdir()):
            raise error("E633", f"run folder {run} already holds a run",
                        hint="continue it with --resume, or choose another folder with --out")
    if resume and not run.exists():
        raise error("E631", f"--resume: no run folder {run}", hint="give the folder of the interrupted run with --out")
    if resume:
        _check_resume_backend(run, backend)
    from ..data import check_against_model, load_data

    bundle = load_data(cfg.data, cfg.seed, Path(spec).resolve().parent)
    if prog.checks_data:
        check_against_model(bundle, graph)
    if backend not in prog.backends:
        raise error("E680", f"`train {cfg.kind}` recipes train with --backend {' or '.join(prog.backends)} only",
                    hint="the tf trainer runs supervised recipes (`train Model {...}`)")
    if backend == "tf":
        from .tf_loop import train_tf

        multi = parallel is not None and parallel.nnodes > 1
        return train_tf(spec, graph, cfg, bundle, run, resume=resume, progress=progress, echo=echo,
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
    spec_dir = Path(spec).resolve().parent
    trainer: Any = None
    if prog.builds_first:  # its checks of files and data come before the run folder is written
        trainer = prog.torch_stepper(graphs, cfg, bundle, run, dev, spec_dir, progress, echo)
    run.mkdir(parents=True, exist_ok=True)
    if not resume and not (parallel is not None and parallel.node_rank > 0):
        write_config(run, spec, cfg, "torch", str(dev), bundle.description)
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

    from ..backends import torch as tb
    from . import torch_loop as tl

    dev = tl.pick_device(device)
    model = tb.build_module(graph).to(dev).eval()
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
