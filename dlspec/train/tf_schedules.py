"""Learning-rate schedules for the TensorFlow trainer, with the values PyTorch's schedulers give.

The PyTorch trainer builds `torch.optim.lr_scheduler` objects (`LinearLR` then the main schedule
under `SequentialLR`, `OneCycleLR` per step, `ReduceLROnPlateau`). Those update the rate
recursively; this module computes the same rates in closed form, per parameter group, in plain
Python floats, so the two trainers train with the same rate at every epoch (and, for one-cycle,
every step). `tests/test_train_tf.py` compares the sequences with torch's own schedulers.

    sched = LrSchedule(cfg.schedule, base_lrs=[1e-3], epochs=20, steps_per_epoch=19)
    sched.lrs(epoch=1, step=0)      # rates for the first step of epoch 1, one per group
    sched.after_epoch(epoch, logs)  # plateau bookkeeping

Nothing here imports a framework.
"""

from __future__ import annotations

import math
from bisect import bisect_right
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
    caffe_lr_factor,
)
from . import metrics as M

#: OneCycleLR's defaults for cycling momentum (torch's `base_momentum`, `max_momentum`)
BASE_MOMENTUM, MAX_MOMENTUM = 0.85, 0.95


class LrSchedule:
    """The rate of every parameter group at every epoch (and step), as torch computes it."""

    def __init__(self, parts: tuple, base_lrs: list[float], epochs: int, steps_per_epoch: int):
        self.base_lrs = list(base_lrs)
        self.epochs, self.steps_per_epoch = epochs, steps_per_epoch
        self.warm: Warmup | None = parts[0] if parts and isinstance(parts[0], Warmup) else None
        main = parts[-1] if parts and not isinstance(parts[-1], Warmup) else Constant()
        self.main = main
        self.w = self.warm.epochs if self.warm else 0
        self.one_cycle = isinstance(main, OneCycle)  # its own warm-up (`warmup then one_cycle` is E413 at check time)
        #: the rate changes every optimizer step (one-cycle, caffe_lr), not once an epoch
        self.per_step = self.one_cycle or isinstance(main, CaffeLR)
        self.total_steps = max(epochs * steps_per_epoch, 1)
        # plateau state (torch's ReduceLROnPlateau with its defaults: rel threshold 1e-4, no cooldown)
        self.plateau_lrs: list[float] = list(base_lrs)
        self.best: float | None = None
        self.bad_epochs = 0

    # -- rates
    def add_group(self, lr: float) -> None:
        """A group added during training (unfrozen layers) starts from `lr` and follows the schedule."""
        self.base_lrs.append(lr)
        self.plateau_lrs.append(lr)

    def momentum(self, step: int) -> float | None:
        """The momentum (SGD, RMSprop) or beta1 (Adam, AdamW) one-cycle sets at global `step`;
        None when the schedule does not cycle momentum."""
        if not self.one_cycle:
            return None
        return self._one_cycle(step, MAX_MOMENTUM, BASE_MOMENTUM, MAX_MOMENTUM)

    def lrs(self, epoch: int, step: int = 0) -> list[float]:
        """Rates for the step `step` (0-based, within the epoch) of epoch `epoch` (1-based)."""
        if self.one_cycle:
            m: OneCycle = self.main  # type: ignore[assignment]
            t = (epoch - 1) * self.steps_per_epoch + step
            initial = m.max_lr / m.div_factor
            lr = self._one_cycle(t, initial, m.max_lr, initial / m.final_div_factor)
            return [lr for _ in self.base_lrs]
        if isinstance(self.main, CaffeLR):  # per iteration, counted from 0
            f = caffe_lr_factor(self.main, (epoch - 1) * self.steps_per_epoch + step)
            return [b * f for b in self.base_lrs]
        k = epoch - 1  # torch's last_epoch while this epoch trains
        if k < self.w:
            s = self.warm.start_factor  # type: ignore[union-attr]
            return [b * (s + (1.0 - s) * k / self.w) for b in self.base_lrs]
        if isinstance(self.main, Plateau):
            return list(self.plateau_lrs)
        return [self._main(b, k - self.w) for b in self.base_lrs]

    def _main(self, base: float, j: int) -> float:
        m = self.main
        if isinstance(m, Cosine):
            t_max = m.t_max or max(self.epochs - self.w, 1)
            return m.eta_min + (base - m.eta_min) * (1 + math.cos(math.pi * j / t_max)) / 2
        if isinstance(m, Step):
            return base * m.gamma ** (j // m.step_size)
        if isinstance(m, MultiStep):
            stones = sorted(x - self.w for x in m.milestones)
            # with a warm-up torch switches to the milestones in closed form (counting those <= 0);
            # on its own MultiStepLR only ever counts milestones it steps onto (> 0)
            n = bisect_right(stones, j) if self.warm else sum(1 for x in stones if 0 < x <= j)
            return base * m.gamma ** n
        if isinstance(m, Exponential):
            return base * m.gamma ** j
        return base

    def _one_cycle(self, t: int, start: float, peak: float, end: float) -> float:
        m: OneCycle = self.main  # type: ignore[assignment]
        end1 = float(m.pct_start * self.total_steps) - 1
        end2 = float(self.total_steps) - 1
        if t <= end1:
            a, b, pct = start, peak, (t / end1 if end1 > 0 else 1.0)
        else:
            a, b, pct = peak, end, ((t - end1) / (end2 - end1) if end2 > end1 else 1.0)
        if m.anneal == "cos":
            return b + (a - b) / 2.0 * (math.cos(math.pi * pct) + 1)
        return (b - a) * pct + a

    # -- plateau
    def after_epoch(self, epoch: int, logs: dict[str, float]) -> None:
        m = self.main
        if not isinstance(m, Plateau) or epoch < self.w:
            return
        mode = m.mode if m.mode != "auto" else M.default_mode(m.monitor)
        value = float(logs[m.monitor])
        if self.best is None:
            better = value < math.inf if mode == "min" else value > -math.inf
        else:
            better = value < self.best * (1 - 1e-4) if mode == "min" else value > self.best * (1 + 1e-4)
        if better:
            self.best, self.bad_epochs = value, 0
        else:
            self.bad_epochs += 1
        if self.bad_epochs > m.patience:
            for i, old in enumerate(self.plateau_lrs):
                new = max(old * m.factor, m.min_lr)
                if old - new > 1e-8:
                    self.plateau_lrs[i] = new
            self.bad_epochs = 0

    def state(self) -> dict[str, Any]:
        return {"base_lrs": self.base_lrs, "plateau_lrs": self.plateau_lrs, "best": self.best,
                "bad_epochs": self.bad_epochs}

    def load(self, state: dict[str, Any]) -> None:
        self.base_lrs = [float(x) for x in state["base_lrs"]]
        self.plateau_lrs = [float(x) for x in state["plateau_lrs"]]
        self.best = state["best"]
        self.bad_epochs = int(state["bad_epochs"])
