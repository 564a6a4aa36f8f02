"""`dlspec train`, `evaluate` and `predict`: from a spec (or a run folder) to results.

A run folder is self-contained: `graph.json` holds the lowered model and `config.json` the
recipe, so evaluation and prediction need neither the spec nor its imports.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import Diagnostic, DlspecError, did_you_mean
from ..ir.graph import Graph
from ..program import compile_file
from .run import atomic_write_json, atomic_write_text, recipe_json


def user_error(code: str, message: str, hint: str | None = None) -> DlspecError:
    return DlspecError(Diagnostic(code=code, message=message, hint=hint))


def pick_recipe(program, name: str | None, spec: Path):
    recipes = program.recipes
    if not recipes:
        raise user_error("E417", f"{spec} has no `train` recipe",
                         hint="add `train Model { data = builtin(\"digits\") ... }` to the spec")
    if name is None:
        return recipes[-1]
    for r in recipes:
        if r.name == name or getattr(getattr(r, "model", None), "name", None) == name:
            return r
    raise user_error("E417", f"{spec} has no recipe for `{name}`",
                     hint=did_you_mean(name, [r.name for r in recipes]) or f"recipes: {', '.join(r.name for r in recipes)}")


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
    """Train the recipe of `spec`; returns the trainer's Outcome. `parallel`: a
    `distributed.Launch` for data-parallel training over several processes or machines.
    `backend="tf"` trains with TensorFlow (`dlspec/train/tf_loop.py`; `parallel` then picks
    tf.distribute replicas)."""
    program = compile_file(spec)
    cfg = pick_recipe(program, model, spec)
    updates = {k: v for k, v in {"epochs": epochs, "batch": batch, "seed": seed, "device": device}.items() if v is not None}
    for k, v in updates.items():
        if k in ("epochs", "batch") and v < 1:
            raise user_error("E907", f"--{k} must be at least 1; got {v}")
    cfg = cfg.model_copy(update=updates)
    # the network trained: the recipe's model, a GAN's generator, a distillation's student
    role = {"supervised": "", "gan": ".generator", "distill": ".student"}[cfg.kind]
    graph: Graph = program.recipe_graphs[cfg.name + role]
    if out is None:
        stem = Path(spec).stem
        run = next_run_folder(Path("runs"), stem if len(program.recipes) == 1 else f"{stem}-{cfg.name.lower()}")
    else:
        run = out
        follower = parallel is not None and parallel.node_rank > 0  # node 0 writes the run folder
        if not resume and not follower and run.exists() and any(run.iterdir()):
            raise user_error("E633", f"run folder {run} already holds a run",
                             hint="continue it with --resume, or choose another folder with --out")
    if resume and not run.exists():
        raise user_error("E631", f"--resume: no run folder {run}", hint="give the folder of the interrupted run with --out")
    if resume:
        _check_resume_backend(run, backend)
    from ..data import check_against_model, load_data

    bundle = load_data(cfg.data, cfg.seed, Path(spec).resolve().parent)
    if cfg.kind != "gan":
        check_against_model(bundle, graph)
    if backend == "tf":
        if cfg.kind != "supervised":
            raise user_error("E680", f"`train {cfg.kind}` recipes train with --backend torch only",
                             hint="the tf trainer runs supervised recipes (`train Model {...}`)")
        from .tf_loop import train_tf

        multi = parallel is not None and parallel.nnodes > 1
        return train_tf(spec, graph, cfg, bundle, run, resume=resume, progress=progress, echo=echo,
                        nproc=parallel.nproc if parallel is not None else 1,
                        nnodes=parallel.nnodes if parallel is not None else 1,
                        node_rank=parallel.node_rank if multi else None,
                        sync_bn=parallel.sync_bn if parallel is not None else False)

    from . import torch_loop as tl

    dev = tl.pick_device(cfg.device)
    if parallel is not None and parallel.parallel:
        from . import distributed

        master = distributed.check_recipe(parallel, cfg, dev.type, len(bundle.train))
    trainer: Any
    if cfg.kind == "gan":
        from .gan import GanTrainer, role_graphs

        generator, discriminator = role_graphs(program, cfg)
        trainer = GanTrainer(generator, discriminator, cfg, bundle, run, dev, progress=progress, echo=echo)
    elif cfg.kind == "distill":
        from .distill import DistillTrainer

        trainer = DistillTrainer(graph, program.recipe_graphs[f"{cfg.name}.teacher"], cfg, bundle, run, dev,
                                 Path(spec).resolve().parent, progress=progress, echo=echo)
    run.mkdir(parents=True, exist_ok=True)
    if not resume and not (parallel is not None and parallel.node_rank > 0):
        atomic_write_json(run / "config.json", {
            "spec": str(Path(spec).resolve()),
            "kind": cfg.kind,
            "recipe": recipe_json(cfg),
            "backend": "torch",
            "device": str(dev),
            "data": bundle.description,
        })
        if cfg.kind == "gan":
            from .gan import write_run_files

            write_run_files(run, generator, discriminator)
        else:
            atomic_write_text(run / "graph.json", graph.model_dump_json(indent=1))
            from ..backends.torch import generate

            atomic_write_text(run / "model.py", generate(graph))
    echo(f"training {graph.name} on {bundle.description}; device {dev}; run folder {run}")
    if parallel is not None and parallel.parallel:
        job = {"spec": str(Path(spec).resolve()), "model": model, "updates": updates, "run": str(run.resolve()),
               "resume": resume, "progress": progress}
        return distributed.launch(parallel, job, master, run, dev.type, echo)
    if cfg.kind == "supervised":
        trainer = tl.Trainer(graph, cfg, bundle, run, dev, cfg.seed, progress=progress, echo=echo)
    if resume:
        done = trainer.restore()
        echo(f"resuming after epoch {done}")
    try:
        return trainer.fit()
    except KeyboardInterrupt:
        last = trainer.log.records[-1]["epoch"] if trainer.log.records else 0
        raise user_error("E634", f"interrupted during epoch {last + 1}; checkpoints up to epoch {last} are intact",
                         hint=f"continue with: dlspec train {spec} --out {run} --resume") from None


def _check_resume_backend(run: Path, backend: str) -> None:
    """Checkpoints hold one framework's optimizer state: resume with the backend that trained."""
    try:
        trained = json.loads((run / "config.json").read_text()).get("backend", "torch")
    except (OSError, ValueError):
        return  # no readable config: restoring reports what is wrong with the folder
    if trained != backend:
        raise user_error("E683", f"--resume --backend {backend}: {run} was trained with --backend {trained}",
                         hint=f"resume it with --backend {trained}; its best/last.safetensors weights are shared by "
                              "every backend (export or evaluate them), its optimizer checkpoints are not")


# ---- evaluate and predict ----------------------------------------------------------------------


def load_run(run: Path) -> tuple[Graph, Any, dict]:
    """The graph (a GAN's generator, a distillation's student), the recipe and config.json of a run."""
    from ..ir.training import KINDS, TrainConfig

    if not (run / "graph.json").is_file() or not (run / "config.json").is_file():
        raise user_error("E635", f"{run} is not a dlspec run folder (graph.json and config.json are missing)",
                         hint="pass the folder `dlspec train` printed, e.g. runs/digitscnn")
    from pydantic import ValidationError

    from .run import field_of, read_graph, read_json

    graph = read_graph(run / "graph.json")
    config = read_json(run / "config.json", "E635")
    if not isinstance(config, dict) or not isinstance(config.get("recipe"), dict):
        raise user_error("E635", f"{run / 'config.json'}: field `recipe`: missing or not an object")
    if not isinstance(config.get("spec", ""), str):
        raise user_error("E635", f"{run / 'config.json'}: field `spec`: not a string")
    kind = config.get("kind", "supervised")
    try:
        cfg = (KINDS[kind] if isinstance(kind, str) and kind in KINDS else TrainConfig).model_validate(config["recipe"])
    except ValidationError as exc:
        raise user_error("E635", f"{run / 'config.json'}: field `recipe.{field_of(exc)}`") from None
    return graph, cfg, config


def _best_weights(run: Path) -> Path:
    for name in ("best.safetensors", "last.safetensors", "generator.safetensors"):  # the last: a GAN run's
        if (run / name).is_file():
            return run / name
    raise user_error("E636", f"{run} has no weights (best.safetensors or last.safetensors)",
                     hint="the run did not finish an epoch; train it again or resume it")


def evaluate(run: Path, data: str | None = None, split: str = "test", device: str = "auto") -> dict[str, float]:
    from ..data import check_against_model, load_data
    from . import torch_loop as tl

    graph, cfg, config = load_run(run)
    base = Path(config["spec"]).parent
    data_cfg = cfg.data
    if data is not None:
        data_cfg = _data_from_path(data, cfg)
        base = Path(".")
    bundle = load_data(data_cfg, cfg.seed, base)
    if cfg.kind == "gan":
        from .gan import evaluate_gan

        return evaluate_gan(run, cfg, bundle, split if data is None else "all", tl.pick_device(device))
    if cfg.kind == "distill":
        from .distill import student_recipe

        cfg = student_recipe(cfg)
    check_against_model(bundle, graph)
    dev = tl.pick_device(device)
    trainer = tl.Trainer.__new__(tl.Trainer)
    trainer.graph, trainer.cfg, trainer.bundle, trainer.device = graph, cfg, bundle, dev
    trainer.outputs = [o.name for o in graph.outputs]
    trainer._set_losses()
    from ..backends import torch as tb

    trainer.model = tb.build_module(graph).to(dev)
    trainer.forward = trainer.model
    tb.load_weights(trainer.model, graph, _best_weights(run))
    part = {"test": bundle.test, "val": bundle.val, "train": bundle.train}[split]
    if data is not None:
        from ..data import Split

        part = Split([*_concat([bundle.train.x, bundle.val.x, bundle.test.x])],
                     _concat_y([bundle.train.y, bundle.val.y, bundle.test.y]))
    return trainer.evaluate(tl.as_tensors(part).to(dev))


def _concat(parts: list[list]) -> list:
    import numpy as np

    return [np.concatenate([p[i] for p in parts]) for i in range(len(parts[0]))]


def _concat_y(parts: list) -> Any:
    import numpy as np

    if isinstance(parts[0], dict):
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    return np.concatenate(parts)


def _data_from_path(path: str, cfg) -> Any:
    from ..ir.training import Csv, Npz

    p = Path(path)
    if p.suffix == ".npz":
        return Npz(path=str(p.resolve()), split=(0.98, 0.01, 0.01), shuffle=False)
    if p.suffix == ".csv":
        old = cfg.data
        if not isinstance(old, Csv):
            raise user_error("E637", "--data FILE.csv needs a run trained on csv data (its columns are in the recipe)")
        return old.model_copy(update={"path": str(p.resolve())})
    raise user_error("E637", f"--data {path}: give a .npz (arrays x, y) or a .csv like the training data")


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
        raise user_error("E717", "--provider chooses an onnxruntime execution provider; it needs --backend onnx")
    if provider is None:
        provider = "cuda" if device == "cuda" else "cpu"
    if run.suffix == ".onnx" and not run.is_dir():
        if backend != "onnx":
            raise user_error("E717", f"{run} is an ONNX model: it runs with --backend onnx")
        result = _predict_onnx_file(run, input_path, provider)
    else:
        graph, _, _ = load_run(run)
        specs = [(gi.name, gi.type.dtype, tuple(gi.type.shape)) for gi in graph.inputs]
        arrays = _read_inputs(input_path, specs)
        if backend == "onnx":
            from ..backends import onnx as ob
            from ..weights import load_graph_weights

            weights = load_graph_weights(graph, _best_weights(run))
            result = ob.run(graph, weights, dict(zip([s[0] for s in specs], arrays)), provider=provider)
        else:
            result = _predict_torch(run, graph, arrays, device)
    if output is not None:
        if output.suffix == ".npz":
            _atomic_npz(output, result)
        elif output.suffix == ".json":
            atomic_write_json(output, {k: v.tolist() for k, v in result.items()})
        else:
            raise user_error("E638", f"--output {output}: write .npz or .json")
    return result


def _predict_torch(run: Path, graph: Graph, arrays: list[Any], device: str) -> dict[str, Any]:
    import numpy as np
    import torch

    from ..backends import torch as tb
    from . import torch_loop as tl

    dev = tl.pick_device(device)
    model = tb.build_module(graph).to(dev).eval()
    tb.load_weights(model, graph, _best_weights(run))
    with torch.no_grad():
        out = model(*[torch.from_numpy(np.ascontiguousarray(a)).to(dev) for a in arrays])
    outs = out if isinstance(out, dict) else {graph.outputs[0].name: out}
    return {k: v.float().cpu().numpy() for k, v in outs.items()}


def _predict_onnx_file(path: Path, input_path: Path, provider: str) -> dict[str, Any]:
    from ..backends import onnx as ob

    if not path.is_file():
        raise user_error("E715", f"no such ONNX model: {path}")
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
        raise user_error("E638", f"no such input file: {input_path}")
    try:
        if input_path.suffix == ".npy":
            arrays = [np.load(input_path, allow_pickle=False)]
        elif input_path.suffix == ".npz":
            with np.load(input_path, allow_pickle=False) as z:
                missing = [n for n in names if n not in z.files]
                if missing and len(z.files) == len(names) == 1:
                    arrays = [z[z.files[0]]]
                elif missing:
                    raise user_error("E638", f"{input_path} lacks array(s) {missing} for the model inputs",
                                     hint=f"it has {z.files}; name the arrays after the inputs {names}")
                else:
                    arrays = [z[n] for n in names]
        else:
            raise user_error("E638", f"{input_path}: predict reads .npy or .npz arrays")
    except DlspecError:
        raise
    except Exception as exc:
        raise user_error("E638", f"cannot read {input_path}: {exc}") from None
    if len(arrays) != len(specs):
        raise user_error("E638", f"{input_path} holds one array; the model has inputs {names}",
                         hint="write an .npz with one array per input name")
    for i, ((name, dtype, shape), a) in enumerate(zip(specs, arrays)):
        want = f"{dtype}[{', '.join(str(d) for d in shape)}]"
        if a.ndim != len(shape) or any(isinstance(d, int) and d != s for d, s in zip(shape, a.shape)):
            raise user_error("E639", f"{input_path}: input `{name}` is {list(a.shape)}; the model needs {want}")
        if (a.dtype.kind in "iu") != dtype.startswith("int"):
            raise user_error("E639", f"{input_path}: input `{name}` has dtype {a.dtype}; the model needs {dtype}")
        arrays[i] = a.astype(dtype)
    return arrays


def _atomic_npz(path: Path, arrays: dict[str, Any]) -> None:
    import os
    import tempfile

    import numpy as np

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".npz")
    os.close(fd)
    try:
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
