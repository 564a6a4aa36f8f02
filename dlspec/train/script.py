"""`dlspec compile FILE --target torch --script`: a standalone training script for a recipe.

The script needs only torch and numpy (safetensors and scikit-learn when they are installed), so it
runs on a cluster where dlspec is not installed, alone or under `torchrun`:

    python train.py --data data.npz --out run/
    torchrun --nproc_per_node 4 train.py --data data.npz --out run/

It embeds the generated model class, the recipe's optimizer, schedule and loss (from the trainer's
tables, `torch_recipe.py`, `torch_losses.py`), and the very source of dlspec's one epoch loop
(`loop.py`: epochs, validation, best/last weights, checkpoints, early stopping, unfreezing,
resume, the final test), of the run-folder rules it reads (`run.py`, `io.py`) and of the metric
functions (`metrics.py`) — `_rendered_source` finds what they reference and renders that too. A
small stepper in the template does the framework's part with the same data-parallel rules as
`dlspec train --nproc` (global batch split across ranks, metrics over the whole split, rank 0
writes), and its writers refuse symbolic links. Everything taken from the spec enters the script
as a Python literal (`repr`), never as code. Generating the script imports no framework.
"""

from __future__ import annotations

import inspect
import json
from fnmatch import fnmatchcase
from pathlib import Path
from string import Template
from typing import Any

from ..backends.pysource import doc_text, literal
from ..errors import error
from ..ir.training import Csv, Npz
from . import metrics as M
from . import torch_recipe as R

#: built-in data sets the script can load itself (with scikit-learn); any other needs --data FILE.npz
SKLEARN_BUILTINS = ("digits", "iris", "wine", "breast_cancer")


def generate_script(prog, file: Path | str, model_name: str | None = None) -> str:
    """Python source of a standalone training script for the recipe of `prog` picked by `model_name`."""
    from ..backends.torch import class_name, generate
    from .programs import PROGRAMS, pick_recipe

    cfg = pick_recipe(prog, model_name, Path(file))
    if not PROGRAMS[cfg.kind].script:
        raise error("E668", f"`train {cfg.kind} {cfg.name}`: the standalone script covers supervised recipes; "
                                 f"a {cfg.kind} recipe trains several networks together",
                         hint=f"train it with `dlspec train {file}` (one process)")
    graph = prog.recipe_graphs[cfg.name]
    extra = [k for k in ("accumulate", "decay_groups") if getattr(cfg, k, None) not in (None, 1, {})]
    if extra:
        raise error("E861", f"`train {cfg.name}`: the standalone script has no {' or '.join(f'`{k}`' for k in extra)}",
                    hint=f"train it with `dlspec train {file}`, whose trainers have both")
    if len(graph.inputs) != 1 or len(graph.outputs) != 1:
        raise error("E669", f"`{graph.name}` has {len(graph.inputs)} input(s) and {len(graph.outputs)} output(s); "
                                 "the standalone script trains models with one input and one output",
                         hint=f"train it with `dlspec train {file} --nproc N`, which handles every model")
    params = graph.params()
    weights = [p.path for p in params]
    trainable = [p.path for p in params if not p.buffer]
    frozen = [p.path for p in params if not p.buffer and not p.trainable]
    lr_of = {}
    for path in trainable:
        for pat, lr in cfg.lr_groups.items():
            if fnmatchcase(path, pat) or fnmatchcase(path.rsplit(".", 1)[0], pat):
                lr_of[path] = lr
                break
    unfreeze = {epoch: [p for p in frozen if any(fnmatchcase(p, pt) or fnmatchcase(p.rsplit(".", 1)[0], pt)
                                                  for pt in pats)]
                for epoch, pats in cfg.unfreeze.items()}
    out_name = graph.outputs[0].name
    metrics = [{"type": m.type, "k": m.k, "average": m.average, "key": m.key} for m in cfg.metrics]
    recipe = {
        "name": cfg.name, "epochs": cfg.epochs, "batch": cfg.batch, "seed": cfg.seed, "lr": cfg.optimizer.lr,
        "precision": cfg.precision, "compile": cfg.compile, "l1": cfg.l1, "l2": cfg.l2,
        "clip": None if cfg.clip_grad is None else [cfg.clip_grad.type, cfg.clip_grad.max],
        "metrics": metrics, "output": out_name,
        "early_stop": None if cfg.early_stop is None else {
            "monitor": cfg.early_stop.monitor, "patience": cfg.early_stop.patience, "min_delta": cfg.early_stop.min_delta,
            "mode": _mode(cfg.early_stop.mode, cfg.early_stop.monitor)},
        "checkpoint": {"monitor": cfg.checkpoint.monitor, "mode": _mode(cfg.checkpoint.mode, cfg.checkpoint.monitor),
                       "every": cfg.checkpoint.every, "best": cfg.checkpoint.best, "keep": cfg.checkpoint.keep},
        "weights": weights, "frozen": frozen, "lr_of": lr_of, "unfreeze": {str(k): v for k, v in unfreeze.items()},
        "unfreeze_patterns": {str(k): list(v) for k, v in cfg.unfreeze.items()},
        "init": graph.base_weights, "replaced": list(graph.replaced),
        "data": _data_recipe(cfg.data),
        "input_dtype": graph.inputs[0].type.dtype,
    }
    model_src = generate(graph, header=False).strip("\n")
    return TEMPLATE.substitute(
        title=doc_text(cfg.name if cfg.name == graph.name else f"{graph.name} (recipe {cfg.name})"),
        source=doc_text(Path(file).name),
        recipe=literal(json.dumps(recipe, sort_keys=True)),
        model_src=model_src,
        model_class=class_name(graph),
        optimizer=_optimizer_code(cfg.optimizer),
        schedule=_schedule_code(cfg.schedule, cfg.optimizer),
        loss=_loss_code(cfg.loss),
        rendered=_rendered_source(),
        data_help=literal(_data_help(cfg.data).replace("%", "%%")),
        model_class_repr=literal(class_name(graph)),
    )


def _mode(mode: str, monitor: str) -> str:
    return mode if mode != "auto" else M.default_mode(monitor)


def _data_recipe(data: Any) -> dict[str, Any]:
    d: dict[str, Any] = {"type": data.type, "split": list(data.split), "shuffle": data.shuffle}
    if isinstance(data, Npz):
        d.update(path=data.path, x=data.x, y=data.y)
    elif isinstance(data, Csv):
        d.update(path=data.path, features=list(data.features) if data.features else None, label=data.label,
                 task=data.task)
    elif data.type == "builtin":
        own = (data.name in SKLEARN_BUILTINS and not data.autoencode and data.classes is None
               and data.per_class is None and data.size in (None, 8))
        d.update(name=data.name, sklearn=own)
    return d


def _data_help(data: Any) -> str:
    if isinstance(data, Npz):
        return f"an .npz with arrays {data.x!r} and {data.y!r} (default: the recipe's {data.path!r})"
    if isinstance(data, Csv):
        return f"a .csv with a header, label column {data.label!r} (default: the recipe's {data.path!r})"
    if data.type == "builtin" and _data_recipe(data)["sklearn"]:
        return (f"an .npz with arrays 'x' and 'y' (default: builtin {data.name!r}, loaded with scikit-learn, "
                "which must then be installed)")
    return f"an .npz with arrays 'x' and 'y' (required: the recipe's {data.type} data is not built into the script)"


# ---- the recipe as code ----------------------------------------------------------------------------


def _optimizer_code(o: Any) -> str:
    """make_optimizer(groups, lr) from the trainer's table (`torch_recipe.OPTIMIZERS`); the rate is
    the script's --lr."""
    cls, kwargs = R.optimizer_call(o)
    args = ["groups", "lr=lr"] + [f"{k}={literal(v)}" for k, v in kwargs.items() if k != "lr"]
    return f"def make_optimizer(groups, lr):\n    return torch.optim.{cls}({', '.join(args)})\n"


def _scheduler_code(v: Any) -> str:
    if isinstance(v, R.Call):
        return f"S.{v.cls}(" + ", ".join(["opt"] + [f"{k}={_scheduler_code(x)}" for k, x in v.args.items()]) + ")"
    if isinstance(v, R.Code):  # the script's own expressions (its --epochs, --lr), not spec data
        return str(v)
    if isinstance(v, list) and any(isinstance(x, R.Call) for x in v):
        return "[" + ", ".join(_scheduler_code(x) for x in v) + "]"
    return literal(v)


def _schedule_code(parts: tuple, optimizer: Any) -> str:
    """make_schedule(opt, epochs, steps, lr) -> (epoch_sched, step_sched, plateau, plateau_monitor, warm),
    from the trainer's plan (`torch_recipe.schedule_plan`); one_cycle's peak rate is the script's --lr."""
    plan = R.schedule_plan(parts, R.Code("epochs"), R.Code("steps"), R.OPTIMIZERS[optimizer.type].cycles_momentum,
                           max_lr=R.Code("lr"))
    lines = ["def make_schedule(opt, epochs, steps, lr):", "    S = torch.optim.lr_scheduler"]
    if plan.plateau is not None:
        lines.append(f"    plateau = {_scheduler_code(plan.plateau)}")
    result = [_scheduler_code(plan.epoch) if plan.epoch else "None", _scheduler_code(plan.step) if plan.step else "None",
              "plateau" if plan.plateau else "None", literal(plan.plateau_monitor), literal(plan.warmup_epochs)]
    lines.append(f"    return {', '.join(result)}")
    return "\n".join(lines) + "\n"


def _loss_code(loss: Any) -> str:
    """loss_fn(out, y): the trainer's loss function (`torch_recipe.LOSSES`, its source from
    torch_losses.py) with the recipe's settings."""
    if isinstance(loss, dict):  # a per-output loss needs several outputs: refused earlier
        raise error("E669", "a loss per output needs a multi-output model")
    name, kwargs = R.loss_call(loss)
    args = "".join(f", {k}={literal(v)}" for k, v in kwargs.items())
    return R.loss_source(name) + f"\n\n\ndef loss_fn(out, y):\n    return {name}(out, y{args})\n"


# ---- dlspec's own source, rendered: the one epoch loop, the run-folder rules, the metrics ----------

#: the modules whose functions, classes and constants the script carries as their source
RENDERED_MODULES = ("dlspec.train.loop", "dlspec.train.run", "dlspec.train.metrics", "dlspec.io")

#: what the rendered source is rendered for: the loop and its hooks (`loop.py`), the metric
#: functions (`metrics.compute` and what it calls), the run-folder names and writers the script's
#: stepper uses (`run.py`, `io.py`); everything they reference is rendered with them
RENDERED_ROOTS = (
    ("dlspec.train.loop", ("Outcome", "SupervisedLoop", "EpochLoop", "Stepper")),
    ("dlspec.train.metrics", ("compute",)),
    ("dlspec.train.run", ("METRICS_JSONL", "BEST", "LAST", "BEST_JSON", "TEST_METRICS", "CHECKPOINTS",
                          "checkpoint_dirs", "commit_checkpoint", "atomic_write_json", "atomic_write_text")),
)

#: names the script itself defines or imports: the standard library and torch/numpy names it
#: imports, and its own replacements of what is dlspec-specific (the coded error, a checkpoint's
#: state.json check without pydantic, the writers that refuse symbolic links)
SCRIPT_NAMES = frozenset({
    "argparse", "csv", "dataclass", "field", "hashlib", "json", "math", "os", "shutil", "sys", "tempfile", "time",
    "types", "Path", "Any", "np", "torch", "dist", "nn", "F",
    "DlspecError", "error", "read_state", "atomic_write", "atomic_dir",
})


def _globals_used(src: str) -> tuple[set[str], dict[str, set[str]]]:
    """The global names `src` (one module-level function or class) reads when it runs, besides
    builtins and annotations; and, per name, the attributes read from it (`M.compute`)."""
    import ast
    import builtins
    import symtable

    tree = ast.parse(src)
    for node in ast.walk(tree):  # annotations are never evaluated in the script (postponed)
        if isinstance(node, ast.arg):
            node.annotation = None
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            node.returns = None
        elif isinstance(node, ast.AnnAssign):
            node.annotation = ast.Constant(None)
    names: set[str] = set()

    def walk(table: symtable.SymbolTable) -> None:
        for sym in table.get_symbols():
            if sym.is_referenced() and (sym.is_global() or (table.get_type() == "class" and not sym.is_assigned()
                                                          and not sym.is_imported())):
                names.add(sym.get_name())
        for child in table.get_children():
            walk(child)

    top = symtable.symtable(ast.unparse(tree), "rendered", "exec")
    for child in top.get_children():
        walk(child)
    attrs: dict[str, set[str]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            attrs.setdefault(node.value.id, set()).add(node.attr)
    return {n for n in names if not hasattr(builtins, n)}, attrs


def _without_relative_imports(src: str, package: str) -> tuple[str, dict[str, tuple[str, str]]]:
    """`src` without its function-level relative imports (`from .metrics import default_mode`):
    the script is one module, so the names they bind are rendered beside it. Returns the source
    and name → (module, name) of what they imported."""
    import ast
    import importlib.util

    lines = src.splitlines(keepends=True)
    found: dict[str, tuple[str, str]] = {}
    drop: set[int] = set()
    for node in ast.walk(ast.parse(src)):
        if isinstance(node, ast.ImportFrom) and node.level:
            module = importlib.util.resolve_name("." * node.level + (node.module or ""), package)
            for a in node.names:
                found[a.asname or a.name] = (module, a.name)
            drop.update(range(node.lineno - 1, node.end_lineno))
    return "".join(line for i, line in enumerate(lines) if i not in drop), found


def _rendered_source() -> str:
    """The source of `RENDERED_ROOTS` and of everything they reference, in an order where each
    definition comes after what its class body or decorators need: the script runs dlspec's own
    loop and metrics, not a copy. A reference the script cannot carry is an error here, so a
    change to the loop that the script cannot follow fails at generation (and in the tests)."""
    import importlib
    import sys

    done: dict[str, Any] = {}
    out: list[str] = []

    def render(module: str, name: str, why: str) -> None:
        obj = getattr(importlib.import_module(module), name)
        if name in done:
            if done[name] is not obj:
                raise RuntimeError(f"the standalone script would define {name!r} twice ({why})")
            return
        done[name] = obj
        if inspect.isfunction(obj) or inspect.isclass(obj):
            home = obj.__module__
            if home not in RENDERED_MODULES:
                raise RuntimeError(f"the standalone script cannot carry {home}.{name} ({why})")
            src, imported = _without_relative_imports(inspect.getsource(obj).strip("\n"), home.rpartition(".")[0])
            used, attrs = _globals_used(src)
            mod = sys.modules[home]
            for ref in sorted(used - SCRIPT_NAMES - {name}):
                if ref in imported:
                    render(*imported[ref], f"imported by {name}")
                    continue
                if not hasattr(mod, ref):
                    raise RuntimeError(f"{home}.{name} reads {ref!r}, which its module does not define")
                value = getattr(mod, ref)
                if inspect.ismodule(value):  # a module alias (`M.compute`): a namespace of what is read from it
                    if value.__name__ not in RENDERED_MODULES:
                        raise RuntimeError(f"the standalone script cannot carry module {value.__name__} ({name})")
                    for attr in sorted(attrs.get(ref, ())):
                        render(value.__name__, attr, f"{ref}.{attr} in {name}")
                    ns = f"{ref} = types.SimpleNamespace(" + ", ".join(f"{a}={a}" for a in sorted(attrs.get(ref, ()))) + ")"
                    if ns not in out:
                        out.append(ns)
                    continue
                render(getattr(value, "__module__", None) or home if inspect.isfunction(value) or inspect.isclass(value)
                       else home, ref, f"read by {name}")
            out.append(src)
        else:
            out.append(f"{name} = {literal(obj)}")

    for module, names in RENDERED_ROOTS:
        for name in names:
            render(module, name, "a root")
    return "\n\n\n".join(out)


TEMPLATE = Template(r'''#!/usr/bin/env python3
# Generated by dlspec from the spec $source. Edit the spec, not this file.
"""Train $title: a standalone training script.

Needs torch and numpy only; uses safetensors for weights when it is installed (else torch.save of
tensor-only state dicts, read back with weights_only=True) and scikit-learn for built-in data sets.

    python train.py [--data FILE] [--epochs N] [--batch B] [--lr LR] [--out DIR] [--resume]
    torchrun --nproc_per_node 4 train.py --data FILE --out DIR                 # one machine, 4 processes
    torchrun --nnodes 2 --node_rank R --master_addr HOST --master_port 29500 \
             --nproc_per_node 4 train.py --data FILE --out DIR                # on each of 2 machines

--batch is the global batch, split across all processes; rank 0 writes DIR: metrics.jsonl,
best/last weights keyed like dlspec's canonical weights, and checkpoint files for --resume.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import shutil
import sys
import tempfile
import time
import types
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn import functional as F

RECIPE = json.loads($recipe)

# ---- the model ---------------------------------------------------------------------------------

$model_src


# ---- the recipe --------------------------------------------------------------------------------

$optimizer

$schedule

$loss

# ---- dlspec's own source: the one epoch loop (train/loop.py), the run folder's rules
# (train/run.py, io.py) and the metric functions (train/metrics.py) that `dlspec train` runs -----

if __name__ not in sys.modules:  # loaded through exec() or an unregistered loader: `dataclass` looks it up
    sys.modules[__name__] = types.ModuleType(__name__)

$rendered


class Metric:
    def __init__(self, spec: dict) -> None:
        self.type, self.k, self.average, self.key = spec["type"], spec["k"], spec["average"], spec["key"]


METRICS = [Metric(m) for m in RECIPE["metrics"]]


# ---- data --------------------------------------------------------------------------------------


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(1)


def split_parts(n: int, split: list, shuffle: bool, seed: int):
    """Train, val and test indices: the recipe's fractions of a seeded permutation (consecutive
    runs without shuffle). Two fractions [train, test]: val is 10% of train."""
    fr = [float(f) for f in split]
    if len(fr) == 2:
        fr = [fr[0] * 0.9, fr[0] * 0.1, fr[1]]
    n_test, n_val = round(fr[2] * n), round(fr[1] * n)
    n_train = n - n_val - n_test
    if min(n_train, n_val, n_test) < 1:
        fail(f"{n} examples are too few for the split {split}")
    order = np.random.default_rng(seed).permutation(n) if shuffle else np.arange(n)
    return order[:n_train], order[n_train:n_train + n_val], order[n_train + n_val:]


def read_npz(path: str, xkey: str, ykey: str):
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in (xkey, ykey) if k not in z.files]
            if missing:
                fail(f"{path} has no array {missing[0]!r}; it holds {z.files}")
            return z[xkey], z[ykey]
    except (OSError, ValueError) as exc:
        fail(f"cannot read {path}: {exc}")


def read_csv(path: str, spec: dict):
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
    except OSError as exc:
        fail(f"cannot read {path}: {exc}")
    if len(rows) < 2:
        fail(f"{path} has no data rows")
    header, rows = rows[0], [r for r in rows[1:] if r]
    if spec["label"] not in header:
        fail(f"{path} has no column {spec['label']!r}")
    features = spec["features"] or [h for h in header if h != spec["label"]]
    cols = [header.index(c) if c in header else fail(f"{path} has no column {c!r}") for c in features]
    try:
        x = np.array([[float(r[c]) for c in cols] for r in rows], dtype=np.float32)
    except ValueError as exc:
        fail(f"{path}: a feature is not a number ({exc})")
    raw = [r[header.index(spec["label"])] for r in rows]
    if spec["task"] == "regression":
        return x, np.array([float(v) for v in raw], dtype=np.float32)[:, None], True
    try:
        names = sorted(set(raw), key=float)
    except ValueError:
        names = sorted(set(raw))
    ids = {v: i for i, v in enumerate(names)}
    return x, np.array([ids[v] for v in raw], dtype=np.int64), True


def load_data(path: str | None, seed: int):
    """(train, val, test), each (x, y) numpy arrays; tabular features standardized with the
    train split's mean and standard deviation."""
    spec = RECIPE["data"]
    standardize = False
    if path is None and spec["type"] in ("npz", "csv"):
        path = spec["path"]
    if path is None:
        if not spec.get("sklearn"):
            fail(f"the recipe's {spec['type']} data is not built into this script: give --data FILE.npz "
                 "with arrays x and y")
        try:
            from sklearn import datasets
        except ImportError:
            fail(f"builtin {spec['name']!r} is loaded with scikit-learn, which is not installed: "
                 "pip install scikit-learn, or give --data FILE.npz with arrays x and y")
        d = getattr(datasets, f"load_{spec['name']}")()
        if spec["name"] == "digits":
            x = (d.images.astype(np.float32) / 16.0)[:, None, :, :]
        else:
            x, standardize = d.data.astype(np.float32), True
        y = d.target.astype(np.int64)
    elif path.endswith(".csv"):
        if spec["type"] != "csv":
            fail("--data FILE.csv needs a recipe trained on csv data (its columns are in the recipe)")
        x, y, standardize = read_csv(path, spec)
    else:
        keys = (spec["x"], spec["y"]) if spec["type"] == "npz" else ("x", "y")
        x, y = read_npz(path, *keys)
        if y.dtype.kind == "f" and y.ndim == 1:
            y = y[:, None]
    if len(x) != len(y):
        fail(f"{path}: {len(x)} inputs but {len(y)} targets")
    x = x.astype(np.int64) if RECIPE["input_dtype"].startswith("int") else x.astype(np.float32)
    y = y.astype(np.float32) if y.dtype.kind == "f" else y.astype(np.int64)
    if x.ndim == 1:
        x = x[:, None]
    parts = split_parts(len(x), spec["split"], spec["shuffle"], seed)
    if standardize:
        mean, std = x[parts[0]].mean(0), x[parts[0]].std(0)
        x = (x - mean) / np.where(std > 0, std, 1.0)
    return [(torch.from_numpy(np.ascontiguousarray(x[p])), torch.from_numpy(np.ascontiguousarray(y[p])))
            for p in parts]


# ---- data-parallel helpers ---------------------------------------------------------------------


def part(n: int, rank: int, world: int):
    """[start, stop) of this rank's share of n examples (sizes differ by at most one, larger first)."""
    base, extra = divmod(n, world)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


def gather(world: int, total: float, count: int, outs: list, targets: list):
    if world == 1:
        return total, count, outs, targets
    everyone = [None] * world
    dist.all_gather_object(everyone, (total, count, [np.concatenate(outs)] if outs else [],
                                      [np.concatenate(targets)] if targets else []))
    return (math.fsum(e[0] for e in everyone), sum(e[1] for e in everyone),
            [a for e in everyone for a in e[2]], [a for e in everyone for a in e[3]])


def summarize(total: float, count: int, outs: list, targets: list, num_classes: int | None) -> dict:
    logs = {"loss": total / max(count, 1)}
    if outs:
        out, y = np.concatenate(outs), np.concatenate(targets)
        for m in METRICS:
            logs[m.key] = compute(m, out, y, num_classes)
    return logs


# ---- what the script supplies to the loop: errors, checkpoint state, writers that refuse links ---


class DlspecError(Exception):
    """A coded error of the training loop (dlspec's codes); main() prints it as one line, exit 1."""

    def __init__(self, code: str, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.hint = code, message, hint

    def __str__(self) -> str:
        return f"{self.message} [{self.code}]" + (f"\n  hint: {self.hint}" if self.hint else "")


def error(code: str, message: str, hint: str | None = None) -> DlspecError:
    return DlspecError(code, message, hint)


def read_state(path) -> dict:
    """A checkpoint's state.json, its common fields checked as dlspec checks them (E632 names the
    file and the field)."""
    hint = "the checkpoint is damaged; remove that checkpoint folder to resume from the one before"
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise error("E632", f"{path}: cannot be read ({type(exc).__name__})", hint=hint) from None
    if not isinstance(data, dict):
        raise error("E632", f"{path}: not a JSON object", hint=hint)
    for key in ("epoch", "bad_epochs"):
        v = data.get(key, 0 if key == "bad_epochs" else None)
        if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= 10**9:
            raise error("E632", f"{path}: field `{key}`: not a whole number from 0 to 10**9", hint=hint)
    best = data.get("best_value")
    if best is not None and (isinstance(best, bool) or not isinstance(best, (int, float))):
        raise error("E632", f"{path}: field `best_value`: not a number", hint=hint)
    return data


#: the output folder (--out), set by main(): every file the script writes lies inside it
OUT = Path("run")


def refuse_links(path) -> None:
    """Stop before writing `path` when it, or a folder between --out and it, is a symbolic link:
    the script writes regular files inside --out only, never through a link planted there."""
    path = Path(path)
    inside = path.is_relative_to(OUT)
    here = OUT if inside else path.parent
    for name in path.relative_to(OUT).parts if inside else (path.name,):
        here = here / name
        if here.is_symlink():
            fail(f"{here} is a symbolic link: the script writes its outputs as regular files inside {OUT} and "
                 "never through a link; remove the link, or train into another --out")


def atomic_write(path, write, suffix: str = "") -> None:
    """Fill a temporary file beside `path` with `write(tmp)`, then rename it over `path` (never
    through a link: `refuse_links`)."""
    path = Path(path)
    refuse_links(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_dir(final, write) -> Path:
    """Fill a temporary folder beside `final` with `write(tmp)`, then rename it to `final`."""
    final = Path(final)
    refuse_links(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        write(tmp)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def check_outputs(out: Path) -> None:
    """Before anything runs: no file or folder the script writes in `out` is a symbolic link."""
    for name in (METRICS_JSONL, BEST, LAST, BEST_JSON, TEST_METRICS, CHECKPOINTS):
        refuse_links(out / name)
    if (out / CHECKPOINTS).is_dir():
        for entry in sorted((out / CHECKPOINTS).iterdir()):
            refuse_links(entry)


# ---- weights -----------------------------------------------------------------------------------

try:
    from safetensors.torch import load_file, save_file
except ImportError:  # tensor-only torch files instead, read back with weights_only=True
    load_file = save_file = None
if save_file is None:
    BEST, LAST = BEST.rsplit(".", 1)[0] + ".pt", LAST.rsplit(".", 1)[0] + ".pt"


def canonical(model: nn.Module) -> dict:
    sd = model.state_dict()
    return {k: sd[k].detach().cpu().contiguous() for k in RECIPE["weights"] if k in sd}


def write_weights(tensors: dict, path: Path) -> None:
    """Weights keyed like dlspec's canonical weights: safetensors when installed, else a tensor-only torch file."""
    if save_file is not None:
        atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata={
            "model": $model_class_repr, "layout": "canonical-torch"}))
    else:
        atomic_write(path, lambda tmp: torch.save(tensors, tmp))


def read_weights(path: str) -> dict:
    if str(path).endswith(".safetensors"):
        if load_file is None:
            fail(f"{path} is a safetensors file: pip install safetensors to read it")
        return load_file(str(path))
    return torch.load(path, map_location="cpu", weights_only=True)


# ---- the stepper: what the one epoch loop asks of this script ---------------------------------


class Split:
    """A split's inputs and targets (tensors)."""

    def __init__(self, x, y) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)


class Log:
    """The per-epoch records: metrics.jsonl, rewritten whole and atomically after each epoch by the
    process that writes --out (kept in memory on the other ranks: early stopping reads it)."""

    def __init__(self, folder: Path, writes: bool) -> None:
        self.folder, self.writes, self.records = folder, writes, []

    def load(self, upto_epoch: int, folder: Path | None = None) -> None:
        path = (folder or self.folder) / METRICS_JSONL
        self.records = []
        if path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    rec = json.loads(line)
                    if rec.get("epoch", 0) <= upto_epoch:
                        self.records.append(rec)

    def append(self, record: dict) -> None:
        self.records.append(record)
        if self.writes:
            atomic_write_text(self.folder / METRICS_JSONL, "".join(json.dumps(r) + "\n" for r in self.records))

    def plot(self, title: str) -> None:
        pass  # curves need matplotlib; the script keeps to torch and numpy


class Trainer(Stepper):
    """This model and recipe in one process, or as one rank of a torchrun job: each rank trains on
    its share of every global batch (weighted to its size), metrics cover the whole split, rank 0
    writes --out. `fit()` and `restore()` run the one epoch loop (`EpochLoop`)."""

    def __init__(self, args, rank: int, world: int, device) -> None:
        self.args, self.rank, self.world, self.device = args, rank, world, device
        self.writes = rank == 0
        self.run = Path(args.out)
        self.title = RECIPE["name"]
        self.echo = (lambda text: print(text, file=sys.stderr, flush=True)) if self.writes else (lambda text: None)
        es, ck = RECIPE["early_stop"], RECIPE["checkpoint"]
        self.cfg = types.SimpleNamespace(
            epochs=args.epochs, checkpoint=types.SimpleNamespace(**ck),
            early_stop=types.SimpleNamespace(**es) if es else None,
            unfreeze={int(e): tuple(p) for e, p in RECIPE["unfreeze_patterns"].items()})
        (xt, yt), (xv, yv), (xs, ys) = load_data(args.data, args.seed)
        if world > min(args.batch, len(xt)):
            fail(f"{world} processes need a global batch and a training split of at least {world} examples")
        self.num_classes = max(int(yt.max()), int(yv.max()), int(ys.max())) + 1 if yt.dtype == torch.int64 else None
        torch.manual_seed(args.seed)
        self.model = model = $model_class().to(device)
        if args.init:
            state = read_weights(args.init)
            keep = {k: v for k, v in state.items()
                    if not any(k == r or k.startswith(r + ".") for r in RECIPE["replaced"])}
            model.load_state_dict(keep, strict=False)
        for name, p in model.named_parameters():
            if name in RECIPE["frozen"]:
                p.requires_grad_(False)
        groups: dict = {}
        for name, p in model.named_parameters():
            if p.requires_grad:
                groups.setdefault(RECIPE["lr_of"].get(name, args.lr), []).append(p)
        self.opt = make_optimizer([{"params": ps, "lr": lr} for lr, ps in groups.items()], args.lr)
        steps = max(1, math.ceil(len(xt) / args.batch))
        self.epoch_sched, self.step_sched, self.plateau, self.plateau_monitor, self.warm = \
            make_schedule(self.opt, args.epochs, steps, args.lr)
        self._wrap()
        self.train_x, self.train_y = xt, yt
        self.val_data, self.test_data = Split(xv.to(device), yv.to(device)), Split(xs.to(device), ys.to(device))
        self.autocast = torch.autocast(device.type, dtype=torch.bfloat16 if RECIPE["precision"] == "bf16"
                                       else torch.float16, enabled=RECIPE["precision"] != "fp32")
        self.scaler = torch.amp.GradScaler("cuda") if RECIPE["precision"] == "fp16" and device.type == "cuda" else None
        self.log = Log(self.run, self.writes)

    @property
    def no_checkpoint_hint(self) -> str:
        if (self.run / "checkpoint.pt").is_file():
            return f"{self.run / 'checkpoint.pt'} was written by an older version of this script; resume it with that one"
        return "run without --resume to start afresh"

    def _wrap(self) -> None:
        """The callable the training steps use: the module, DDP-wrapped with several processes."""
        fwd = nn.parallel.DistributedDataParallel(
            self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None) \
            if self.world > 1 else self.model
        self.forward = torch.compile(fwd) if RECIPE["compile"] else fwd

    def _schedulers(self) -> list:
        return [(s, k) for s, k in ((self.epoch_sched, "epoch_sched"), (self.step_sched, "step_sched"),
                                    (self.plateau, "plateau")) if s is not None]

    # -- one pass
    def train_epoch(self, epoch: int) -> dict:
        args, model, opt, world = self.args, self.model, self.opt, self.world
        xt, yt, device, scaler = self.train_x, self.train_y, self.device, self.scaler
        model.train()
        if world > 1:
            torch.manual_seed((args.seed * 1_000_003 + epoch) * 4099 + self.rank)
        order = torch.randperm(len(xt), generator=torch.Generator().manual_seed(args.seed * 100_003 + epoch)) \
            if RECIPE["data"]["shuffle"] else torch.arange(len(xt))
        total, count, outs, targets = 0.0, 0, [], []
        for s in range(0, len(xt), args.batch):
            idx = order[s:s + args.batch]
            a, b = part(len(idx), self.rank, world)
            n, share = b - a, world * (b - a) / len(idx)
            mine = idx[a:b] if n else idx[:2]  # a short last batch: step with a zero-weighted example
            xb, yb = xt[mine].to(device), yt[mine].to(device)
            with self.autocast:
                out = self.forward(xb)
                loss = loss_fn(out.float(), yb)
                if RECIPE["l1"] or RECIPE["l2"]:
                    for p in model.parameters():
                        if p.requires_grad and p.ndim >= 2:
                            loss = loss + RECIPE["l1"] * p.abs().sum() + RECIPE["l2"] * p.pow(2).sum()
            if not torch.isfinite(loss):
                raise error("E630", f"the loss became {float(loss)} in epoch {epoch}; training stopped",
                            hint="lower --lr; the last good checkpoint is kept")
            opt.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss * share).backward()
                scaler.unscale_(opt)
            else:
                (loss * share).backward()
            if RECIPE["clip"]:
                params = [p for p in model.parameters() if p.grad is not None]
                if RECIPE["clip"][0] == "norm":
                    torch.nn.utils.clip_grad_norm_(params, RECIPE["clip"][1])
                else:
                    torch.nn.utils.clip_grad_value_(params, RECIPE["clip"][1])
            if scaler is not None:
                scaler.step(opt)
                scaler.update()
            else:
                opt.step()
            if self.step_sched is not None:
                self.step_sched.step()
            total += float(loss.detach()) * n
            count += n
            if METRICS and n:
                outs.append(out.detach().float().cpu().numpy())
                targets.append(yb.cpu().numpy())
        return summarize(*gather(world, total, count, outs, targets), self.num_classes)

    def evaluate(self, data: Split) -> dict:
        """Loss and metrics of a split: each rank evaluates its part, the sums and predictions are gathered."""
        model, size = self.model, max(self.args.batch, 256)
        model.eval()
        a, b = part(len(data), self.rank, self.world)
        total, count, outs, targets = 0.0, 0, [], []
        with torch.no_grad():
            for s in range(a, b, size):
                xb, yb = data.x[s:min(b, s + size)], data.y[s:min(b, s + size)]
                with self.autocast:
                    o = model(xb).float()
                total += float(loss_fn(o, yb)) * len(xb)
                count += len(xb)
                outs.append(o.cpu().numpy())
                targets.append(yb.cpu().numpy())
        return summarize(*gather(self.world, total, count, outs, targets), self.num_classes)

    # -- between passes
    def current_lr(self, epoch: int) -> float:
        return self.opt.param_groups[0]["lr"]

    def end_epoch(self, epoch: int, logs: dict) -> None:
        if self.epoch_sched is not None:
            self.epoch_sched.step()
        if self.plateau is not None and epoch >= self.warm:
            self.plateau.step(logs[self.plateau_monitor])

    def synchronize(self) -> None:
        if self.world > 1:  # the best weights, from rank 0's folder, on every rank
            for t in list(self.model.parameters()) + list(self.model.buffers()):
                dist.broadcast(t.data, src=0)

    def unfreeze(self, epoch: int, patterns: tuple) -> int:
        """Train the layers the recipe unfreezes at `epoch`: a parameter group per learning rate,
        at its rate times the schedule's current factor, following the schedule from there."""
        opt, newly, count = self.opt, {}, 0
        for name, p in self.model.named_parameters():
            if name in RECIPE["unfreeze"].get(str(epoch), ()) and not p.requires_grad:
                p.requires_grad_(True)
                newly.setdefault(RECIPE["lr_of"].get(name, self.args.lr), []).append(p)
                count += 1
        first = opt.param_groups[0]
        factor = first["lr"] / first["initial_lr"] if first.get("initial_lr") else 1.0
        scheds = [s for s in (self.epoch_sched, self.step_sched) if s is not None]
        scheds += [sub for s in scheds for sub in getattr(s, "_schedulers", [])]
        for base_lr, params in newly.items():
            group = {k: v for k, v in first.items() if k != "params"}
            group.update(params=params, lr=base_lr * factor)
            if "initial_lr" in first:
                group["initial_lr"] = base_lr
            opt.add_param_group(group)
            for s in scheds:
                if hasattr(s, "base_lrs"):
                    s.base_lrs.append(base_lr)
                    if isinstance(getattr(s, "_last_lr", None), list):
                        s._last_lr.append(group["lr"])
            if self.plateau is not None and len(self.plateau.min_lrs) < len(opt.param_groups):
                self.plateau.min_lrs.append(self.plateau.min_lrs[0])
        if count:
            self._wrap()  # DDP reduces only the gradients that existed when it wrapped
        return count

    # -- weights and checkpoints
    def save_weights(self, which: str) -> None:
        write_weights(canonical(self.model), self.run / (BEST if which == "best" else LAST))

    def load_weights(self, which: str) -> None:
        tensors = read_weights(self.run / (BEST if which == "best" else LAST))
        self.model.load_state_dict({k: v.to(self.device) for k, v in tensors.items()}, strict=False)

    def save_checkpoint(self, epoch: int, loop_state: dict) -> None:
        """checkpoints/epoch-NNNN/: state.json (the loop's state) and state.pt (model, optimizer,
        schedules and RNG state: tensors, numbers and lists only, read with weights_only=True)."""
        def write(tmp: Path) -> None:
            state = {"model": self.model.state_dict(), "optimizer": self.opt.state_dict(), "rng": torch.get_rng_state()}
            if self.device.type == "cuda":
                state["rng_cuda"] = torch.cuda.get_rng_state(self.device)
            for sched, key in self._schedulers():
                state[key] = sched.state_dict()
            torch.save(state, tmp / "state.pt")
            (tmp / "state.json").write_text(json.dumps({"epoch": epoch, **loop_state}), encoding="utf-8")

        commit_checkpoint(self.run, epoch, write, self.cfg.checkpoint.keep)

    def load_checkpoint(self, folder: Path, state: dict) -> None:
        saved = torch.load(folder / "state.pt", map_location="cpu", weights_only=True)
        self.model.load_state_dict(saved["model"])
        self.opt.load_state_dict(saved["optimizer"])
        for sched, key in self._schedulers():
            if key in saved:
                sched.load_state_dict(saved[key])
        torch.set_rng_state(saved["rng"])
        if "rng_cuda" in saved and self.device.type == "cuda":
            torch.cuda.set_rng_state(saved["rng_cuda"], self.device)
        self._wrap()


# ---- the command line --------------------------------------------------------------------------


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", help=$data_help)
    p.add_argument("--epochs", type=int, default=RECIPE["epochs"], help="default: %(default)s")
    p.add_argument("--batch", type=int, default=RECIPE["batch"], help="global batch (default: %(default)s)")
    p.add_argument("--lr", type=float, default=RECIPE["lr"], help="learning rate (one_cycle: max lr; default: %(default)s)")
    p.add_argument("--seed", type=int, default=RECIPE["seed"], help="default: %(default)s")
    p.add_argument("--out", default="run", help="output folder (default: %(default)s)")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in OUT/checkpoints")
    p.add_argument("--init", default=RECIPE["init"], help="weights to start from (default: %(default)s)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    args = p.parse_args(argv)
    for name in ("epochs", "batch"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be at least 1")
    return args


def setup(args):
    """(rank, world, device) from torchrun's environment; one process without it."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    if cuda and not torch.cuda.is_available():
        fail("--device cuda: no CUDA device is available")
    device = torch.device("cuda", local) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    if world > 1:
        dist.init_process_group("nccl" if cuda else "gloo", timeout=timedelta(minutes=10))
    return rank, world, device


def main(argv=None) -> None:
    global OUT
    args = parse_args(argv)
    OUT = Path(args.out)
    main_rank = int(os.environ.get("RANK", "0")) == 0
    try:
        if main_rank:
            check_outputs(OUT)
            if not args.resume and checkpoint_dirs(OUT):
                fail(f"{OUT} holds checkpoints of a run: continue it with --resume, or train into another --out")
        rank, world, device = setup(args)
        trainer = Trainer(args, rank, world, device)
        if args.resume:
            trainer.echo(f"resuming after epoch {trainer.restore()}")
        outcome = trainer.fit()
    except DlspecError as exc:
        fail(str(exc))
    except OSError as exc:  # a full disk, a read-only folder: say which file, never a traceback
        fail(f"{exc.filename or OUT}: {exc.strerror or exc}")
    except KeyboardInterrupt:
        fail(f"interrupted; the checkpoints written so far are kept: continue with --out {OUT} --resume")
    if trainer.writes:
        trainer.echo("test " + "  ".join(f"{k}={v:.4f}" for k, v in outcome.test.items()))
    if world > 1:
        # Every rank is done and the files are closed: leave at once. Tearing the process group's
        # threads down at interpreter exit can abort (SIGABRT) and fail a finished run.
        dist.barrier()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


if __name__ == "__main__":
    main()
''')
