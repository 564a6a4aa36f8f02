"""The recipe → PyTorch mapping, as data: which `torch.optim` class and arguments an optimizer
is, which `torch.optim.lr_scheduler` objects a schedule is, which function of `torch_losses` a
loss is. The PyTorch trainer builds from these tables (`torch_loop`), and the standalone
training script (`script.py`) renders the same tables into its source, so the two cannot drift.

Nothing here imports a framework.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..ir.training import (
    CaffeLR,
    Constant,
    Cosine,
    Exponential,
    MultiStep,
    OneCycle,
    Plateau,
    Step,
    Warmup,
    caffe_lr_lambda,
)
from . import metrics as M


@dataclass(frozen=True)
class TorchOptimizer:
    cls: str  # attribute of torch.optim
    args: tuple[str, ...]  # recipe fields passed under the same name (lr: the parameter groups' default)
    cycles_momentum: bool  # one_cycle cycles its momentum (or Adam's beta1)


#: optimizer type → its torch.optim class and arguments
OPTIMIZERS: dict[str, TorchOptimizer] = {
    "sgd": TorchOptimizer("SGD", ("lr", "momentum", "nesterov", "dampening", "weight_decay"), True),
    "adam": TorchOptimizer("Adam", ("lr", "betas", "eps", "weight_decay", "amsgrad"), True),
    "adamw": TorchOptimizer("AdamW", ("lr", "betas", "eps", "weight_decay", "amsgrad"), True),
    "rmsprop": TorchOptimizer("RMSprop", ("lr", "alpha", "eps", "momentum", "centered", "weight_decay"), True),
    "adagrad": TorchOptimizer("Adagrad", ("lr", "lr_decay", "eps", "weight_decay"), False),
    "adadelta": TorchOptimizer("Adadelta", ("lr", "rho", "eps", "weight_decay"), False),
}


def optimizer_call(cfg: Any) -> tuple[str, dict[str, Any]]:
    """(torch.optim class name, keyword arguments) of an optimizer config."""
    entry = OPTIMIZERS[cfg.type]
    return entry.cls, {a: getattr(cfg, a) for a in entry.args}


# ---- schedules -----------------------------------------------------------------------------------


class Code(str):
    """A Python expression of the standalone script, evaluated when the script runs (`epochs`,
    `steps`, `lr` come from its command line); the trainer passes numbers instead."""

    def __sub__(self, other: Any) -> Code:
        return Code(f"{self} - {other}")

    def __mul__(self, other: Any) -> Code:
        return Code(f"{self} * {other}")


def at_least_1(v: Any) -> Any:
    return Code(f"max({v}, 1)") if isinstance(v, Code) else max(v, 1)


#: LambdaLR's factor function that keeps the rate (a constant schedule after a warm-up)
KEEP_RATE = Code("lambda e: 1.0")


@dataclass(frozen=True)
class Call:
    """One torch.optim.lr_scheduler object: its class and keyword arguments (the optimizer first).
    `schedulers` of a SequentialLR are Calls themselves."""

    cls: str
    args: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SchedulePlan:
    epoch: Call | None = None  # stepped after every epoch
    step: Call | None = None  # stepped after every batch (one_cycle)
    plateau: Call | None = None  # stepped after every epoch past the warm-up, with its monitor's value
    plateau_monitor: str | None = None
    warmup_epochs: int = 0


def schedule_plan(parts: tuple, epochs: Any, steps: Any, cycle_momentum: bool, max_lr: Any = None) -> SchedulePlan:
    """The scheduler objects of a recipe's `schedule` (`warmup(...) then main`). `epochs` and
    `steps` (per epoch) are numbers, or Code in the script; `cycle_momentum`: whether one_cycle
    cycles the optimizer's momentum (`OPTIMIZERS[...].cycles_momentum`); `max_lr` replaces
    one_cycle's own."""
    if not parts:
        return SchedulePlan()
    warm = parts[0] if isinstance(parts[0], Warmup) else None
    main = parts[-1] if not isinstance(parts[-1], Warmup) else Constant()
    w = warm.epochs if warm else 0
    rest = at_least_1(epochs - w)
    if isinstance(main, OneCycle):  # its own warm-up (`warmup then one_cycle` is E413 at check time)
        return SchedulePlan(step=Call("OneCycleLR", {
            "max_lr": main.max_lr if max_lr is None else max_lr, "total_steps": at_least_1(epochs * steps),
            "pct_start": main.pct_start, "anneal_strategy": main.anneal, "div_factor": main.div_factor,
            "final_div_factor": main.final_div_factor, "cycle_momentum": cycle_momentum}))
    if isinstance(main, CaffeLR):  # per iteration, from iteration 0 (no warm-up: E858 at import, E413 at check)
        return SchedulePlan(step=Call("LambdaLR", {"lr_lambda": Code(caffe_lr_lambda(main))}))
    ramp = Call("LinearLR", {"start_factor": warm.start_factor, "end_factor": 1.0, "total_iters": w}) if warm else None
    if isinstance(main, Plateau):
        mode = main.mode if main.mode != "auto" else M.default_mode(main.monitor)
        plateau = Call("ReduceLROnPlateau", {"mode": mode, "factor": main.factor, "patience": main.patience,
                                             "min_lr": main.min_lr})
        return SchedulePlan(epoch=ramp, plateau=plateau, plateau_monitor=main.monitor, warmup_epochs=w)
    sched: Call | None
    if isinstance(main, Cosine):
        sched = Call("CosineAnnealingLR", {"T_max": main.t_max or rest, "eta_min": main.eta_min})
    elif isinstance(main, Step):
        sched = Call("StepLR", {"step_size": main.step_size, "gamma": main.gamma})
    elif isinstance(main, MultiStep):
        sched = Call("MultiStepLR", {"milestones": [m - w for m in main.milestones], "gamma": main.gamma})
    elif isinstance(main, Exponential):
        sched = Call("ExponentialLR", {"gamma": main.gamma})
    else:  # constant after the warm-up
        sched = Call("LambdaLR", {"lr_lambda": KEEP_RATE}) if warm else None
    if ramp is not None:
        sched = Call("SequentialLR", {"schedulers": [ramp, sched], "milestones": [w]})
    return SchedulePlan(epoch=sched)


# ---- losses ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TorchLoss:
    fn: str  # function of dlspec/train/torch_losses.py: fn(out, y, **args)
    args: tuple[str, ...]  # recipe fields passed under the same name


#: loss type → its function in torch_losses and the recipe fields it takes
LOSSES: dict[str, TorchLoss] = {
    "cross_entropy": TorchLoss("cross_entropy", ("class_weights", "label_smoothing", "ignore_index")),
    "nll": TorchLoss("nll", ("class_weights",)),
    "bce_with_logits": TorchLoss("bce_with_logits", ("pos_weight",)),
    "bce": TorchLoss("bce", ("pos_weight",)),
    "mse": TorchLoss("mse", ()),
    "mae": TorchLoss("mae", ()),
    "huber": TorchLoss("huber", ("delta",)),
    "kl_div": TorchLoss("kl_div", ("log_target",)),
    "dice": TorchLoss("dice", ("smooth",)),
}


def loss_call(cfg: Any) -> tuple[str, dict[str, Any]]:
    """(function name in torch_losses, keyword arguments) of a loss config."""
    entry = LOSSES[cfg.type]
    return entry.fn, {a: getattr(cfg, a) for a in entry.args}


LOSSES_FILE = Path(__file__).with_name("torch_losses.py")


def loss_source(name: str) -> str:
    """The source of a function of torch_losses.py and of the module-level helpers it calls, read
    from the file (generating the script imports no framework)."""
    text = LOSSES_FILE.read_text(encoding="utf-8")
    defs = {n.name: n for n in ast.parse(text).body if isinstance(n, ast.FunctionDef)}
    order: list[str] = []

    def visit(fn: str) -> None:
        if fn in order:
            return
        for node in ast.walk(defs[fn]):
            if isinstance(node, ast.Name) and node.id in defs and node.id != fn:
                visit(node.id)
        order.append(fn)

    visit(name)
    return "\n\n\n".join(ast.get_source_segment(text, defs[n]) for n in order)
