"""The one epoch loop of every trainer: epochs, validation, early stopping, checkpoints
(every/keep/best/last), gradual unfreezing, the NaN stop, resume and the final test.

It imports no framework. A *stepper* does the framework's part — the PyTorch trainers
(`torch_loop.Trainer`, `distill.DistillTrainer`, `gan.GanTrainer`) and the TensorFlow one
(`tf_loop.Trainer`) — and the *program's hooks* (`SupervisedLoop` here, `gan.GanLoop`) say what
an epoch logs besides training, how its line reads, and what the final results are.

What a stepper supplies (duck-typed; see `Stepper`):

    cfg, run, echo, log, writes, title       the recipe, the run folder, where lines go, its RunLog,
                                             whether this process writes the folder, the plot title
    train_epoch(epoch) -> logs               one pass over the training split (raises E630/E643 on NaN)
    val_data, test_data, evaluate(data)      splits and their loss and metrics (supervised)
    current_lr(epoch), end_epoch(epoch, logs) the rate the epoch trained with; the schedule's step
    unfreeze(epoch, patterns) -> int          parameter tensors newly trained (supervised)
    save_weights(which), load_weights(which) canonical weights, "best" or "last" (`run.weights_files`)
    save_checkpoint(epoch, loop_state)       model, optimizer and RNG state for --resume
    load_checkpoint(folder, state)           the reverse, from a checkpoint folder
    synchronize()                            after the best weights are loaded (data-parallel ranks)

Resume is exact: the loop's own state (the best monitored value, the epochs without
improvement) travels in every checkpoint, the log is replayed up to the checkpoint's epoch, and
the unfreezing of the finished epochs is replayed before the optimizer state is loaded.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import DlspecError, error
from . import metrics as M
from .run import (
    BEST,
    BEST_JSON,
    TEST_METRICS,
    EarlyStopping,
    atomic_write_json,
    epoch_line,
    is_better,
    newest_checkpoint,
)


@dataclass
class Outcome:
    run: Path
    epochs_run: int
    stopped_early: bool
    test: dict[str, float]
    best: dict[str, Any] = field(default_factory=dict)


# ---- what a program adds to an epoch ------------------------------------------------------------


class SupervisedLoop:
    """A model trained on labels (also a distilled student): validation each epoch, the best
    weights by the checkpoint's monitor, early stopping, gradual unfreezing, a final test on the
    best weights."""

    keeps_best = True
    unfreezes = True
    last_every_epoch = False  # last.safetensors with each checkpoint

    def after_train(self, stepper: Any, epoch: int, logs: dict[str, Any]) -> None:
        logs.update({f"val_{k}": v for k, v in stepper.evaluate(stepper.val_data).items()})
        logs["lr"] = stepper.current_lr(epoch)

    def line(self, logs: dict[str, Any], epochs: int) -> str:
        return epoch_line(logs, epochs)

    def after_line(self, logs: dict[str, Any], echo: Any) -> None:
        pass

    def final(self, loop: EpochLoop, epoch: int, stopped: bool) -> Outcome:
        s, ck = loop.stepper, loop.cfg.checkpoint
        if s.writes and (s.run / BEST).exists() and ck.best:
            s.load_weights("best")
        s.synchronize()
        test = s.evaluate(s.test_data) if len(s.test_data) else {}
        if not s.writes:
            return Outcome(s.run, epoch, stopped, test, {})
        atomic_write_json(s.run / TEST_METRICS, test)
        best = json.loads((s.run / BEST_JSON).read_text()) if (s.run / BEST_JSON).exists() else {}
        return Outcome(s.run, epoch, stopped, test, best)


# ---- the loop ----------------------------------------------------------------------------------


class EpochLoop:
    def __init__(self, stepper: Any):
        self.stepper = stepper
        self.cfg = stepper.cfg
        self.program = stepper.hooks()
        self.start_epoch = 1
        self.best_value: float | None = None
        self.bad_epochs = 0
        #: how the checkpoint resumed from ended training: None (it did not), "completed", "stopped"
        self.finished: str | None = None

    @property
    def echo(self):
        return self.stepper.echo

    # -- resume
    def restore(self, source: Path | None = None) -> int:
        """Continue from the newest whole checkpoint of `source` (default: the run folder; a damaged
        newer one is passed over with a warning); returns its epoch."""
        s = self.stepper
        source = source or s.run
        found = newest_checkpoint(source, warn=self.echo)
        if found is None:
            raise error("E631", f"--resume: {source} has no checkpoint to resume from",
                        hint=getattr(s, "no_checkpoint_hint", "run without --resume to start afresh"))
        last, state = found
        try:
            if self.program.unfreezes:  # the parameter groups the finished epochs added, before their state loads
                for epoch in sorted(e for e in self.cfg.unfreeze if e <= state["epoch"]):
                    self._unfreeze(epoch, announce=False)
            s.load_checkpoint(last, state)
        except DlspecError:
            raise
        except Exception as exc:  # a damaged checkpoint: say which, never a traceback
            raise error("E632", f"checkpoint {last} cannot be read: {exc}") from None
        self.best_value = state.get("best_value")
        self.bad_epochs = state.get("bad_epochs", 0)
        self.finished = state.get("finished") if state.get("finished") in ("completed", "stopped") else None
        s.log.load(state["epoch"], source)
        self.start_epoch = state["epoch"] + 1
        return state["epoch"]

    # -- the epochs
    def fit(self) -> Outcome:
        s, cfg, prog = self.stepper, self.cfg, self.program
        ck = cfg.checkpoint
        stopper = EarlyStopping(cfg.early_stop, s.log.records, self.bad_epochs) if cfg.early_stop else None
        stopped = self.finished == "stopped"  # resumed after early stopping: only the final part is left
        epoch = self.start_epoch - 1
        for epoch in range(self.start_epoch, cfg.epochs + 1 if not stopped else 0):
            if prog.unfreezes:
                self._unfreeze(epoch)
            t0 = time.perf_counter()
            logs: dict[str, Any] = {"epoch": epoch}
            logs.update(s.train_epoch(epoch))
            prog.after_train(s, epoch, logs)
            logs["time"] = round(time.perf_counter() - t0, 3)
            s.end_epoch(epoch, logs)
            s.log.append(logs)
            self.echo(prog.line(logs, cfg.epochs))
            prog.after_line(logs, self.echo)
            if prog.keeps_best and self._improved(logs) and ck.best and s.writes:
                s.save_weights("best")
                atomic_write_json(s.run / BEST_JSON, {"epoch": epoch, ck.monitor: logs[ck.monitor]})
            if prog.last_every_epoch and s.writes:
                s.save_weights("last")
            if stopper:
                self.bad_epochs = stopper.update(logs)
            stop = bool(stopper and stopper.stop)
            if stop or epoch % ck.every == 0 or epoch == cfg.epochs:
                self._checkpoint(epoch, "stopped" if stop else "completed" if epoch == cfg.epochs else None)
            if stop:
                self.echo(stopper.message)
                stopped = True
                break
        s.log.plot(s.title)
        return prog.final(self, epoch, stopped)

    def _checkpoint(self, epoch: int, finished: str | None = None) -> None:
        """The last weights and a checkpoint of `epoch` (only the process that writes the folder).
        The checkpoint records the epochs the run was planned with and, at its last epoch, how
        training ended (`finished`: "completed" or "stopped"), for --resume to tell a finished
        run from an interrupted one."""
        s = self.stepper
        if not s.writes:
            return
        if not self.program.last_every_epoch:
            s.save_weights("last")
        s.save_checkpoint(epoch, {"best_value": self.best_value, "bad_epochs": self.bad_epochs,
                                  "epochs": self.cfg.epochs, "finished": finished})

    def _improved(self, logs: dict[str, Any]) -> bool:
        ck = self.cfg.checkpoint
        value = logs[ck.monitor]
        mode = ck.mode if ck.mode != "auto" else M.default_mode(ck.monitor)
        if is_better(value, self.best_value, mode):
            self.best_value = value
            return True
        return False

    def _unfreeze(self, epoch: int, announce: bool = True) -> None:
        pats = self.cfg.unfreeze.get(epoch)
        if not pats:
            return
        n = self.stepper.unfreeze(epoch, pats)
        if n and announce:
            self.echo(f"epoch {epoch}: unfroze {n} parameter tensors ({', '.join(pats)})")


# ---- what the steppers share -------------------------------------------------------------------


class Stepper:
    """The loop-facing part every stepper shares: `fit()` and `restore()` run the one loop."""

    #: the program's part of each epoch (SupervisedLoop, gan.GanLoop)
    hooks: type = SupervisedLoop
    #: the hint when --resume finds no checkpoint
    no_checkpoint_hint = "run without --resume to start afresh"

    @property
    def loop(self) -> EpochLoop:
        loop = self.__dict__.get("_loop")
        if loop is None:
            loop = self.__dict__["_loop"] = EpochLoop(self)
        return loop

    def fit(self) -> Outcome:
        return self.loop.fit()

    def restore(self, source: Path | None = None) -> int:
        return self.loop.restore(source)

    @property
    def start_epoch(self) -> int:
        return self.loop.start_epoch

    # defaults for programs that do not use them
    def current_lr(self, epoch: int) -> float:
        return 0.0

    def end_epoch(self, epoch: int, logs: dict[str, Any]) -> None:
        pass

    def unfreeze(self, epoch: int, patterns: tuple[str, ...]) -> int:
        return 0

    def synchronize(self) -> None:
        pass


def losses_by_output(cfg: Any, outputs: list[str]) -> dict[str, Any]:
    """Output name → the loss config that trains it, in the recipe's order (the check-time rule
    E415 holds: one loss per output)."""
    if isinstance(cfg.loss, dict):
        return dict(cfg.loss)
    return {outputs[0]: cfg.loss}


def summarize(cfg: Any, outputs: list[str], num_classes: Any, total: float, count: int, parts_sum: dict[str, float],
              outs: dict[str, list], targets: dict[str, list]) -> dict[str, float]:
    """An epoch's (or a split's) logs from the sums and the predictions a pass collected."""
    import numpy as np

    res = {"loss": total / max(count, 1)}
    multi = len(outputs) > 1
    for k in outputs:
        if multi:
            res[f"{k}_loss"] = parts_sum[k] / max(count, 1)
        if not outs[k]:
            continue
        out, y = np.concatenate(outs[k]), np.concatenate(targets[k])
        nc = num_classes.get(k) if isinstance(num_classes, dict) else num_classes
        for m in cfg.metrics:
            if m.output is None or m.output == k:
                res[f"{k}_{m.key}" if multi else m.key] = M.compute(m, out, y, nc)
    return res
