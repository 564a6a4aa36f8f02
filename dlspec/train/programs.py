"""The training programs, in one table keyed by the recipe's kind: which networks a program
trains, which backends and launch modes run it, how its PyTorch stepper is built, which files
describe its run folder, and how a finished run is evaluated.

`session`, `distributed`, `script` and `features` look a program up here instead of testing
`cfg.kind`; the epoch behaviour of each program is its stepper's loop hooks (`loop.SupervisedLoop`,
`gan.GanLoop`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import did_you_mean, error
from ..ir.graph import Graph


@dataclass(frozen=True)
class Program:
    kind: str
    #: the recipe's networks (`program.recipe_graphs[f"{recipe}.{role}"]`); () for the recipe's model
    roles: tuple[str, ...]
    #: the role whose network is the run's graph.json (evaluate, predict, export); None: the model
    trained: str | None
    backends: tuple[str, ...]
    data_parallel: bool
    #: the network `dlspec features` reads the data with (the one that has learnt to read it)
    features_role: str | None
    #: whether the standalone training script (`dlspec compile --script`) covers the program
    script: bool
    #: whether the data is checked against the trained network's inputs and outputs
    checks_data: bool
    #: whether the stepper is built (and checks its files and data) before the run folder is written
    builds_first: bool
    #: (graphs, cfg, bundle, run, device, spec_dir, progress, echo) -> the PyTorch stepper
    torch_stepper: Callable[..., Any]
    #: (run, graphs) -> writes graph.json, model.py and the program's other graph files
    write_graphs: Callable[[Path, dict[str, Graph]], None]
    #: (run, cfg, graph, bundle, split, whole, device) -> metrics of a finished run
    evaluate: Callable[..., dict[str, float]]
    #: whether `evaluate` takes `outputs=` (a dict it fills with the raw outputs and targets)
    reports: bool = False

    def graph_key(self, recipe: str, role: str | None = None) -> str:
        role = role if role is not None else self.trained
        return recipe if role is None else f"{recipe}.{role}"

    def graphs(self, program: Any, cfg: Any) -> dict[str, Graph]:
        """Role → graph of a compiled recipe ("" for the model of a supervised recipe)."""
        if not self.roles:
            return {"": program.recipe_graphs[cfg.name]}
        return {role: program.recipe_graphs[f"{cfg.name}.{role}"] for role in self.roles}

    def trained_graph(self, graphs: dict[str, Graph]) -> Graph:
        return graphs[self.trained or ""]


# ---- supervised -----------------------------------------------------------------------------------


def _supervised_stepper(graphs, cfg, bundle, run, device, spec_dir, progress, echo):
    from .torch_loop import Trainer

    return Trainer(graphs[""], cfg, bundle, run, device, cfg.seed, progress=progress, echo=echo)


def _one_graph(run: Path, graphs: dict[str, Graph]) -> None:
    from ..backends.torch import generate
    from .run import GRAPH, MODEL_PY, atomic_write_text

    (graph,) = [g for role, g in graphs.items() if role in ("", "student")]
    atomic_write_text(run / GRAPH, graph.model_dump_json(indent=1))
    atomic_write_text(run / MODEL_PY, generate(graph))


def _evaluate_supervised(run: Path, cfg: Any, graph: Graph, bundle: Any, split: str, whole: bool, device: Any,
                         outputs: dict[str, Any] | None = None):
    """The metrics of a run's best weights on a split (or, `whole`, every example); `outputs`, when
    given, receives the raw outputs and targets ({"outputs": {name: array}, "targets": {...}})."""
    from ..data import check_against_model
    from .run import best_weights
    from .torch_loop import Evaluator, as_tensors

    check_against_model(bundle, graph, training=False)
    evaluator = Evaluator(graph, cfg, bundle, device, weights=best_weights(run))
    part = {"test": bundle.test, "val": bundle.val, "train": bundle.train}[split]
    if whole:
        part = _whole(bundle)
    metrics = evaluator.evaluate(as_tensors(part).to(device))
    if outputs is not None:
        outputs["outputs"], outputs["targets"] = evaluator.last_outputs
    return metrics


def _whole(bundle: Any) -> Any:
    """Every example of a data set given with `evaluate --data` (its three splits together)."""
    import numpy as np

    from ..data import Split

    parts = [bundle.train, bundle.val, bundle.test]
    xs = [np.concatenate([p.x[i] for p in parts]) for i in range(len(parts[0].x))]
    if isinstance(parts[0].y, dict):
        y = {k: np.concatenate([p.y[k] for p in parts]) for k in parts[0].y}
    else:
        y = np.concatenate([p.y for p in parts])
    return Split(xs, y)


# ---- distillation ---------------------------------------------------------------------------------


def _distill_stepper(graphs, cfg, bundle, run, device, spec_dir, progress, echo):
    from .distill import DistillTrainer

    return DistillTrainer(graphs["student"], graphs["teacher"], cfg, bundle, run, device, spec_dir,
                          progress=progress, echo=echo)


def _evaluate_distill(run: Path, cfg: Any, graph: Graph, bundle: Any, split: str, whole: bool, device: Any,
                      outputs: dict[str, Any] | None = None):
    from .distill import student_recipe

    return _evaluate_supervised(run, student_recipe(cfg), graph, bundle, split, whole, device, outputs)


# ---- GAN ------------------------------------------------------------------------------------------


def _gan_stepper(graphs, cfg, bundle, run, device, spec_dir, progress, echo):
    from .gan import GanTrainer

    return GanTrainer(graphs["generator"], graphs["discriminator"], cfg, bundle, run, device, progress=progress,
                      echo=echo)


def _gan_graphs(run: Path, graphs: dict[str, Graph]) -> None:
    from .gan import write_run_files

    write_run_files(run, graphs["generator"], graphs["discriminator"])


def _evaluate_gan(run: Path, cfg: Any, graph: Graph, bundle: Any, split: str, whole: bool, device: Any):
    from .gan import evaluate_gan

    return evaluate_gan(run, cfg, bundle, "all" if whole else split, device)


PROGRAMS: dict[str, Program] = {
    "supervised": Program(
        "supervised", roles=(), trained=None, backends=("torch", "tf"), data_parallel=True, features_role=None,
        script=True, checks_data=True, builds_first=False,
        torch_stepper=_supervised_stepper, write_graphs=_one_graph, evaluate=_evaluate_supervised, reports=True),
    "gan": Program(
        "gan", roles=("generator", "discriminator"), trained="generator", backends=("torch",), data_parallel=False,
        features_role="discriminator", script=False, checks_data=False, builds_first=True,
        torch_stepper=_gan_stepper, write_graphs=_gan_graphs, evaluate=_evaluate_gan),
    "distill": Program(
        "distill", roles=("teacher", "student"), trained="student", backends=("torch",), data_parallel=False,
        features_role="student", script=False, checks_data=True, builds_first=True,
        torch_stepper=_distill_stepper, write_graphs=_one_graph, evaluate=_evaluate_distill, reports=True),
}


def program_of(cfg: Any) -> Program:
    return PROGRAMS[cfg.kind]


def pick_recipe(program: Any, name: str | None, spec: Path):
    """The recipe of a compiled spec named `name` (a recipe's or its model's name); the last one
    when `name` is None."""
    recipes = program.recipes
    if not recipes:
        raise error("E417", f"{spec} has no `train` recipe",
                    hint="add `train Model { data = builtin(\"digits\") ... }` to the spec")
    if name is None:
        return recipes[-1]
    for r in recipes:
        if r.name == name or getattr(getattr(r, "model", None), "name", None) == name:
            return r
    raise error("E417", f"{spec} has no recipe for `{name}`",
                hint=did_you_mean(name, [r.name for r in recipes]) or f"recipes: {', '.join(r.name for r in recipes)}")
