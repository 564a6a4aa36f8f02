"""`dlspec compile FILE --target torch --script`: a standalone training script for a recipe.

The script needs only torch and numpy (safetensors and scikit-learn when they are installed), so it
runs on a cluster where dlspec is not installed, alone or under `torchrun`:

    python train.py --data data.npz --out run/
    torchrun --nproc_per_node 4 train.py --data data.npz --out run/

It embeds the generated model class, the recipe's optimizer, schedule, loss, metrics, clipping and
regularization, early stopping and checkpoints, and the same data-parallel rules as
`dlspec train --nproc` (global batch split across ranks, metrics over the whole split, rank 0
writes). Everything taken from the spec enters the script as a Python literal (`repr`), never as
code. Generating the script imports no framework.
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
                       "every": cfg.checkpoint.every, "best": cfg.checkpoint.best},
        "weights": weights, "frozen": frozen, "lr_of": lr_of, "unfreeze": {str(k): v for k, v in unfreeze.items()},
        "init": graph.base_weights, "replaced": list(graph.replaced),
        "data": _data_recipe(cfg.data),
        "input_dtype": graph.inputs[0].type.dtype,
    }
    model_src = generate(graph, header=False).strip("\n")
    return TEMPLATE.substitute(
        title=doc_text(cfg.name if cfg.name == graph.name else f"{graph.name} (recipe {cfg.name})"),
        source=doc_text(str(file)),
        recipe=literal(json.dumps(recipe, sort_keys=True)),
        model_src=model_src,
        model_class=class_name(graph),
        optimizer=_optimizer_code(cfg.optimizer),
        schedule=_schedule_code(cfg.schedule, cfg.optimizer),
        loss=_loss_code(cfg.loss),
        metrics_src=_metrics_source(),
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


def _metrics_source() -> str:
    """dlspec's own metric functions (numpy only), so the script reports the numbers dlspec does,
    and the improvement rule of the trainers' best weights and early stopping (`run.is_better`)."""
    from .run import is_better

    fns = [M.class_axis, M.predicted_labels, M._single_logit, M._confusion, M._prf, M._binary_masks,
           M._iou_dice, M.compute, is_better]
    return "\n\n".join(inspect.getsource(f).strip("\n") for f in fns)


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
import sys
import time
from datetime import timedelta

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

# ---- metrics (the same functions dlspec reports with) ------------------------------------------

$metrics_src


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


# ---- weights and checkpoints -------------------------------------------------------------------


def canonical(model: nn.Module) -> dict:
    sd = model.state_dict()
    return {k: sd[k].detach().cpu().contiguous() for k in RECIPE["weights"] if k in sd}


def save_weights(tensors: dict, path: str) -> str:
    """Atomically write weights: safetensors when installed, else a tensor-only torch file."""
    try:
        from safetensors.torch import save_file
    except ImportError:
        save_file = None
    if save_file is None:
        path = path.rsplit(".", 1)[0] + ".pt"
    tmp = f"{path}.tmp{os.getpid()}"
    if save_file is not None:
        save_file(tensors, tmp, metadata={"model": $model_class_repr, "layout": "canonical-torch"})
    else:
        torch.save(tensors, tmp)
    os.replace(tmp, path)
    return path


def load_weights(path: str) -> dict:
    if path.endswith(".safetensors"):
        try:
            from safetensors.torch import load_file
        except ImportError:
            fail(f"{path} is a safetensors file: pip install safetensors to read it")
        return load_file(path)
    return torch.load(path, map_location="cpu", weights_only=True)


def save_checkpoint(out: str, state: dict) -> None:
    tmp = os.path.join(out, f".checkpoint.pt.tmp{os.getpid()}")
    torch.save(state, tmp)
    os.replace(tmp, os.path.join(out, "checkpoint.pt"))


# ---- training ----------------------------------------------------------------------------------


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", help=$data_help)
    p.add_argument("--epochs", type=int, default=RECIPE["epochs"], help="default: %(default)s")
    p.add_argument("--batch", type=int, default=RECIPE["batch"], help="global batch (default: %(default)s)")
    p.add_argument("--lr", type=float, default=RECIPE["lr"], help="learning rate (one_cycle: max lr; default: %(default)s)")
    p.add_argument("--seed", type=int, default=RECIPE["seed"], help="default: %(default)s")
    p.add_argument("--out", default="run", help="output folder (default: %(default)s)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
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
    args = parse_args(argv)
    rank, world, device = setup(args)
    main_rank = rank == 0
    say = (lambda text: print(text, file=sys.stderr, flush=True)) if main_rank else (lambda text: None)
    (xt, yt), (xv, yv), (xs, ys) = load_data(args.data, args.seed)
    if world > min(args.batch, len(xt)):
        fail(f"{world} processes need a global batch and a training split of at least {world} examples")
    num_classes = max(int(yt.max()), int(yv.max()), int(ys.max())) + 1 if yt.dtype == torch.int64 else None
    torch.manual_seed(args.seed)
    model = $model_class().to(device)
    if args.init:
        state = load_weights(args.init)
        keep = {k: v for k, v in state.items()
                if not any(k == r or k.startswith(r + ".") for r in RECIPE["replaced"])}
        model.load_state_dict(keep, strict=False)
    for name, p in model.named_parameters():
        if name in RECIPE["frozen"]:
            p.requires_grad_(False)

    def wrap():
        fwd = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None) \
            if world > 1 else model
        return torch.compile(fwd) if RECIPE["compile"] else fwd

    groups: dict = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            groups.setdefault(RECIPE["lr_of"].get(name, args.lr), []).append(p)
    opt = make_optimizer([{"params": ps, "lr": lr} for lr, ps in groups.items()], args.lr)
    steps = max(1, math.ceil(len(xt) / args.batch))
    epoch_sched, step_sched, plateau, plateau_monitor, warm = make_schedule(opt, args.epochs, steps, args.lr)
    forward = wrap()
    scheds = [sc for sc in (epoch_sched, step_sched) if sc is not None]
    scheds += [sub for sc in scheds for sub in getattr(sc, "_schedulers", [])]

    def unfreeze(epoch: int) -> bool:
        """Train the layers the recipe unfreezes at `epoch`: a parameter group per learning rate,
        at its rate times the schedule's current factor, following the schedule from there."""
        newly: dict = {}
        for name, p in model.named_parameters():
            if name in RECIPE["unfreeze"].get(str(epoch), ()) and not p.requires_grad:
                p.requires_grad_(True)
                newly.setdefault(RECIPE["lr_of"].get(name, args.lr), []).append(p)
        first = opt.param_groups[0]
        factor = first["lr"] / first["initial_lr"] if first.get("initial_lr") else 1.0
        for base_lr, params in newly.items():
            group = {k: v for k, v in first.items() if k != "params"}
            group.update(params=params, lr=base_lr * factor)
            if "initial_lr" in first:
                group["initial_lr"] = base_lr
            opt.add_param_group(group)
            for sc in scheds:
                if hasattr(sc, "base_lrs"):
                    sc.base_lrs.append(base_lr)
                    if isinstance(getattr(sc, "_last_lr", None), list):
                        sc._last_lr.append(group["lr"])
            if plateau is not None and len(plateau.min_lrs) < len(opt.param_groups):
                plateau.min_lrs.append(plateau.min_lrs[0])
        return bool(newly)

    es, ck = RECIPE["early_stop"], RECIPE["checkpoint"]
    best, es_best, bad, start, history = None, None, 0, 1, []
    os.makedirs(args.out, exist_ok=True)
    ckpt = os.path.join(args.out, "checkpoint.pt")
    if args.resume:
        if not os.path.exists(ckpt):
            fail(f"--resume: {ckpt} does not exist")
        state = torch.load(ckpt, map_location=device, weights_only=True)
        model.load_state_dict(state["model"])
        for epoch in sorted(int(e) for e in RECIPE["unfreeze"] if int(e) <= state["epoch"]):
            unfreeze(epoch)  # the parameter groups the finished epochs added, before their state loads
        opt.load_state_dict(state["optimizer"])
        for sched, key in ((epoch_sched, "epoch_sched"), (step_sched, "step_sched"), (plateau, "plateau")):
            if sched is not None and key in state:
                sched.load_state_dict(state[key])
        best, es_best, bad, start = state["best"], state["es_best"], state["bad"], state["epoch"] + 1
        forward = wrap()
        say(f"resuming after epoch {state['epoch']}")
    autocast = torch.autocast(device.type, dtype=torch.bfloat16 if RECIPE["precision"] == "bf16" else torch.float16,
                              enabled=RECIPE["precision"] != "fp32")
    scaler = torch.amp.GradScaler("cuda") if RECIPE["precision"] == "fp16" and device.type == "cuda" else None
    xv, yv, xs, ys = xv.to(device), yv.to(device), xs.to(device), ys.to(device)

    def evaluate(x, y):
        model.eval()
        a, b = part(len(x), rank, world)
        total, count, outs, targets = 0.0, 0, [], []
        with torch.no_grad():
            for s in range(a, b, max(args.batch, 256)):
                xb, yb = x[s:min(b, s + max(args.batch, 256))], y[s:min(b, s + max(args.batch, 256))]
                with autocast:
                    o = model(xb).float()
                total += float(loss_fn(o, yb)) * len(xb)
                count += len(xb)
                outs.append(o.cpu().numpy())
                targets.append(yb.cpu().numpy())
        return summarize(*gather(world, total, count, outs, targets), num_classes)

    for epoch in range(start, args.epochs + 1):
        if unfreeze(epoch):
            forward = wrap()
        t0 = time.perf_counter()
        model.train()
        if world > 1:
            torch.manual_seed((args.seed * 1_000_003 + epoch) * 4099 + rank)
        order = torch.randperm(len(xt), generator=torch.Generator().manual_seed(args.seed * 100_003 + epoch)) \
            if RECIPE["data"]["shuffle"] else torch.arange(len(xt))
        total, count, outs, targets = 0.0, 0, [], []
        for s in range(0, len(xt), args.batch):
            idx = order[s:s + args.batch]
            a, b = part(len(idx), rank, world)
            n, share = b - a, world * (b - a) / len(idx)
            mine = idx[a:b] if n else idx[:2]  # a short last batch: step with a zero-weighted example
            xb, yb = xt[mine].to(device), yt[mine].to(device)
            with autocast:
                out = forward(xb)
                loss = loss_fn(out.float(), yb)
                if RECIPE["l1"] or RECIPE["l2"]:
                    for p in model.parameters():
                        if p.requires_grad and p.ndim >= 2:
                            loss = loss + RECIPE["l1"] * p.abs().sum() + RECIPE["l2"] * p.pow(2).sum()
            if not torch.isfinite(loss):
                fail(f"the loss became {float(loss)} in epoch {epoch}; lower --lr")
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
            if step_sched is not None:
                step_sched.step()
            total += float(loss.detach()) * n
            count += n
            if METRICS and n:
                outs.append(out.detach().float().cpu().numpy())
                targets.append(yb.cpu().numpy())
        logs = {"epoch": epoch, **summarize(*gather(world, total, count, outs, targets), num_classes)}
        logs.update({f"val_{k}": v for k, v in evaluate(xv, yv).items()})
        logs["lr"] = opt.param_groups[0]["lr"]
        logs["time"] = round(time.perf_counter() - t0, 3)
        if epoch_sched is not None:
            epoch_sched.step()
        if plateau is not None and epoch >= warm:
            plateau.step(logs[plateau_monitor])
        history.append(logs)
        say(f"epoch {epoch}/{args.epochs}  " + "  ".join(f"{k}={v:.4f}" for k, v in logs.items()
                                                       if k not in ("epoch", "lr", "time")))
        value = logs[ck["monitor"]]
        improved = is_better(value, best, ck["mode"])
        if improved:
            best = value
        stop = False
        if es:
            v = logs[es["monitor"]]
            if is_better(v, es_best, es["mode"], es["min_delta"]):
                es_best, bad = v, 0
            else:
                bad += 1
            stop = bad >= es["patience"]
        if main_rank:
            with open(os.path.join(args.out, "metrics.jsonl"), "a", encoding="utf-8") as f:
                f.write(json.dumps(logs) + "\n")
            if improved and ck["best"]:
                save_weights(canonical(model), os.path.join(args.out, "best.safetensors"))
            if epoch % ck["every"] == 0 or epoch == args.epochs or stop:
                save_weights(canonical(model), os.path.join(args.out, "last.safetensors"))
                state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch,
                         "best": best, "es_best": es_best, "bad": bad}
                for sched, key in ((epoch_sched, "epoch_sched"), (step_sched, "step_sched"), (plateau, "plateau")):
                    if sched is not None:
                        state[key] = sched.state_dict()
                save_checkpoint(args.out, state)
        if stop:
            say(f"early stop: {es['monitor']} has not improved for {es['patience']} epochs")
            break
    if world > 1:
        dist.barrier()
    test = evaluate(xs, ys)
    if main_rank:
        with open(os.path.join(args.out, "test_metrics.json"), "w", encoding="utf-8") as f:
            json.dump(test, f, indent=2)
        say("test " + "  ".join(f"{k}={v:.4f}" for k, v in test.items()))
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
