"""The PyTorch trainer behind `dlspec train`: a recipe and a lowered graph in, a run folder out.

Determinism: the shuffling of each epoch comes from a generator seeded with (seed, epoch), and
the global RNG state is saved in every checkpoint, so `--resume` continues exactly where the
interrupted run was and reaches the same final weights on CPU.

Checkpoints hold no pickles: tensors go to safetensors, everything else to JSON.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..backends import get_backend
from ..backends import torch as tb
from ..errors import error
from ..ir.graph import Graph
from ..ir.training import ClipNorm, TrainConfig
from . import torch_losses
from . import torch_recipe as R
from .loop import Outcome, Stepper, losses_by_output, summarize
from .run import RunLog, commit_checkpoint, weights_files

__all__ = ["Evaluator", "Outcome", "Trainer", "as_tensors", "batches", "loss_fn", "make_optimizer", "make_schedule",
           "pick_device"]


# ---- devices ---------------------------------------------------------------------------------


def pick_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise error("E906", "--device cuda: no CUDA device is available on this machine",
                         hint="use --device cpu, or --device auto to pick what is there")
    if name == "mps" and not (getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()):
        raise error("E906", "--device mps: Apple's Metal backend is not available here", hint="use --device cpu")
    return torch.device(name)


# ---- optimizers, schedules, losses -------------------------------------------------------------


def param_groups(model: nn.Module, graph: Graph, base_lr: float, lr_groups: dict[str, float],
                 decay_groups: dict[str, float] | None = None) -> list[dict]:
    """One group per distinct (rate, weight decay): `lr_groups` and `decay_groups` map parameter-path
    patterns (first match wins) to a rate and to a weight decay that replaces the optimizer's."""
    from fnmatch import fnmatchcase

    def lookup(name: str, table: dict[str, float]) -> float | None:
        for pat, v in table.items():
            if fnmatchcase(name, pat) or fnmatchcase(name.rsplit(".", 1)[0], pat):
                return v
        return None

    groups: dict[tuple[float, float | None], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        lr = lookup(name, lr_groups)
        key = (base_lr if lr is None else lr, lookup(name, decay_groups or {}))
        groups.setdefault(key, []).append(p)
    return [{"params": ps, "lr": lr, **({} if wd is None else {"weight_decay": wd})}
            for (lr, wd), ps in groups.items()]


def make_optimizer(cfg: Any, groups: list[dict]) -> torch.optim.Optimizer:
    """The recipe's optimizer over parameter groups (`torch_recipe.OPTIMIZERS`); something trains
    (the check-time rule E416)."""
    cls, kwargs = R.optimizer_call(cfg)
    return getattr(torch.optim, cls)(groups, **kwargs)


@dataclass
class Schedule:
    """Per-epoch scheduler (and per-step for one-cycle), plus a plateau scheduler when asked."""

    epoch_sched: Any = None
    step_sched: Any = None
    plateau: Any = None
    plateau_monitor: str = "val_loss"
    warmup_epochs: int = 0

    def after_step(self) -> None:
        if self.step_sched is not None:
            self.step_sched.step()

    def after_epoch(self, epoch: int, logs: dict[str, float]) -> None:
        if self.epoch_sched is not None:
            self.epoch_sched.step()
        if self.plateau is not None and epoch >= self.warmup_epochs:
            self.plateau.step(logs[self.plateau_monitor])

    def state(self) -> dict:
        out = {}
        for k in ("epoch_sched", "step_sched", "plateau"):
            s = getattr(self, k)
            if s is not None:
                out[k] = s.state_dict()
        return out

    def load(self, state: dict) -> None:
        for k, v in state.items():
            getattr(self, k).load_state_dict(v)


def _scheduler(call: R.Call | None, opt: torch.optim.Optimizer) -> Any:
    if call is None:
        return None
    S = torch.optim.lr_scheduler
    if call.cls == "SequentialLR":  # the main schedule is built before the warm-up, then chained
        ramp, main = call.args["schedulers"]
        after = _scheduler(main, opt)
        return S.SequentialLR(opt, [_scheduler(ramp, opt), after], milestones=call.args["milestones"])
    if call.cls == "LambdaLR":
        source = call.args.get("lr_lambda")
        if source and source != R.KEEP_RATE:  # caffe_lr's factor: arithmetic on numbers only
            return S.LambdaLR(opt, eval(compile(source, "<caffe_lr>", "eval"), {"__builtins__": {"sum": sum, "max": max, "min": min}}))
        return S.LambdaLR(opt, lambda e: 1.0)
    return getattr(S, call.cls)(opt, **call.args)


def make_schedule(parts: tuple, opt: torch.optim.Optimizer, epochs: int, steps_per_epoch: int) -> Schedule:
    """The recipe's schedule (`torch_recipe.schedule_plan`) on `opt`."""
    # PyTorch cycles momentum (or Adam's beta1) by default; optimizers with neither (Adagrad) cannot.
    cycle = "momentum" in opt.defaults or "betas" in opt.defaults
    plan = R.schedule_plan(parts, epochs, steps_per_epoch, cycle)
    plateau = _scheduler(plan.plateau, opt)
    return Schedule(epoch_sched=_scheduler(plan.epoch, opt), step_sched=_scheduler(plan.step, opt), plateau=plateau,
                    plateau_monitor=plan.plateau_monitor or "val_loss", warmup_epochs=plan.warmup_epochs)


def loss_fn(cfg: Any):
    """A function (output, target) → scalar loss for one output head (`torch_recipe.LOSSES`)."""
    name, kwargs = R.loss_call(cfg)
    return partial(getattr(torch_losses, name), **kwargs)


# ---- data ------------------------------------------------------------------------------------


def frozen_batchnorm_to_inference(model: nn.Module) -> None:
    """Batch norms whose scale and shift are frozen run on their running statistics, as Keras
    runs a non-trainable BatchNormalization: a frozen pre-trained base keeps the statistics it
    learned instead of re-estimating them from small batches of the new task."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            params = list(m.parameters(recurse=False))
            if params and not any(p.requires_grad for p in params):
                m.eval()


@dataclass
class Tensors:
    x: list[torch.Tensor]
    y: Any  # tensor or dict of tensors

    def __len__(self) -> int:
        return int(self.x[0].shape[0])

    def take(self, idx: torch.Tensor) -> Tensors:
        y = {k: v[idx] for k, v in self.y.items()} if isinstance(self.y, dict) else self.y[idx]
        return Tensors([a[idx] for a in self.x], y)

    def to(self, device: torch.device) -> Tensors:
        y = {k: v.to(device) for k, v in self.y.items()} if isinstance(self.y, dict) else self.y.to(device)
        return Tensors([a.to(device) for a in self.x], y)


def as_tensors(split: Any) -> Tensors:
    y = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in split.y.items()} if isinstance(split.y, dict) \
        else torch.from_numpy(np.ascontiguousarray(split.y))
    return Tensors([torch.from_numpy(np.ascontiguousarray(a)) for a in split.x], y)


def batches(data: Tensors, batch: int, shuffle: bool, seed: int, epoch: int):
    n = len(data)
    if shuffle:
        g = torch.Generator().manual_seed(seed * 100_003 + epoch)
        order = torch.randperm(n, generator=g)
    else:
        order = torch.arange(n)
    for start in range(0, n, batch):
        yield data.take(order[start : start + batch])


# ---- evaluation and training -----------------------------------------------------------------------------


class Evaluator:
    """A model, its recipe's losses and metrics, on a device: what `evaluate` needs to score a
    split. `weights`: a canonical weights file to load (a run folder's best or last weights)."""

    #: data-parallel hooks (dlspec.train.distributed.DataParallel); None for one process
    dist: Any = None

    def __init__(self, graph: Graph, cfg: TrainConfig, bundle: Any, device: torch.device,
                 weights: Path | None = None, seed: int | None = None):
        self.graph, self.cfg, self.bundle, self.device = graph, cfg, bundle, device
        self.outputs = [o.name for o in graph.outputs]
        self.losses = {k: loss_fn(v) for k, v in losses_by_output(cfg, self.outputs).items()}
        self.weights = {k: float(cfg.loss_weights.get(k, 1.0)) for k in self.losses}
        if seed is not None:
            torch.manual_seed(seed)
        self.model = get_backend("torch").build(graph).to(device)
        self.forward = self.model
        if weights is not None:
            tb.load_weights(self.model, graph, weights)

    def _outputs(self, xb: list[torch.Tensor], module: Any = None) -> dict[str, torch.Tensor]:
        out = (module or self.forward)(*xb)
        return out if isinstance(out, dict) else {self.outputs[0]: out}

    def _targets(self, yb: Any) -> dict[str, torch.Tensor]:
        return yb if isinstance(yb, dict) else {self.outputs[0]: yb}

    def _loss(self, outs: dict[str, torch.Tensor], ys: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        total = 0.0
        parts = {}
        for k, f in self.losses.items():
            part = f(outs[k].float(), ys[k])
            parts[k] = float(part.detach())
            total = total + self.weights[k] * part
        if self.cfg.l1 or self.cfg.l2:
            for p in self.model.parameters():
                if p.requires_grad and p.ndim >= 2:
                    if self.cfg.l1:
                        total = total + self.cfg.l1 * p.abs().sum()
                    if self.cfg.l2:
                        total = total + self.cfg.l2 * p.pow(2).sum()
        return total, parts

    def _autocast(self):
        p = self.cfg.precision
        if p == "fp32":
            return torch.autocast(self.device.type, enabled=False)
        dtype = torch.bfloat16 if p == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

    def _summarize(self, total: float, count: int, parts_sum: dict[str, float],
                   outs: dict[str, list[np.ndarray]], targets: dict[str, list[np.ndarray]]) -> dict[str, float]:
        return summarize(self.cfg, self.outputs, self.bundle.num_classes, total, count, parts_sum, outs, targets)

    @torch.no_grad()
    def evaluate(self, data: Tensors) -> dict[str, float]:
        self.model.eval()
        if self.dist is not None:  # each rank evaluates its part, without DDP's collectives
            data = self.dist.eval_part(data)
        outs: dict[str, list[np.ndarray]] = {k: [] for k in self.outputs}
        total, count = 0.0, 0
        parts_sum: dict[str, float] = {k: 0.0 for k in self.losses}
        for b in batches(data, max(self.cfg.batch, 256), False, 0, 0):
            with self._autocast():
                o = self._outputs(b.x, self.model if self.dist is not None else None)
            o = {k: v.float() for k, v in o.items()}
            loss, parts = self._loss(o, self._targets(b.y))
            n = len(b)
            total += float(loss) * n
            count += n
            for k in parts:
                parts_sum[k] += parts[k] * n
            for k in self.outputs:
                outs[k].append(o[k].cpu().numpy())
        ys = data.y if isinstance(data.y, dict) else {self.outputs[0]: data.y}
        targets = {k: [ys[k].cpu().numpy()] for k in self.outputs}
        #: the raw outputs and targets of the last split evaluated (evaluate's per-class report)
        self.last_outputs = ({k: np.concatenate(v) for k, v in outs.items() if v},
                             {k: np.concatenate(v) for k, v in targets.items()})
        if self.dist is not None:
            return self._summarize(*self.dist.gather(total, count, parts_sum, outs, targets))
        return self._summarize(total, count, parts_sum, outs, targets)


class Trainer(Evaluator, Stepper):
    """The PyTorch stepper of a supervised recipe; `fit()` runs the one epoch loop (`loop.py`)."""

    def __init__(self, graph: Graph, cfg: TrainConfig, bundle: Any, run: Path, device: torch.device,
                 seed: int, progress: bool = True, echo=print, dist: Any = None):
        self.run, self.seed, self.progress, self.echo = run, seed, progress, echo
        self.dist = dist
        super().__init__(graph, cfg, bundle, device, seed=seed)
        if graph.base_weights:
            self._load_base()
        if dist is not None:
            self.model = dist.prepare(self.model)
        self.train_data = as_tensors(bundle.train).to(device)
        self.val_data = as_tensors(bundle.val).to(device)
        self.test_data = as_tensors(bundle.test).to(device)
        # an optimizer step takes `accumulate` batches; the schedule counts optimizer steps (as Caffe's iter_size)
        self.batches_per_epoch = max(1, math.ceil(len(self.train_data) / cfg.batch))
        self.steps_per_epoch = math.ceil(self.batches_per_epoch / cfg.accumulate)
        self.opt = make_optimizer(cfg.optimizer, param_groups(self.model, graph, cfg.optimizer.lr, cfg.lr_groups,
                                                                cfg.decay_groups))
        self.sched = make_schedule(cfg.schedule, self.opt, cfg.epochs, self.steps_per_epoch)
        self._wrap()
        self.log = dist.run_log(run) if dist is not None else RunLog(run)
        self.title = f"{graph.name} — {cfg.name}"

    # -- setup
    def _wrap(self) -> None:
        """The callable the training steps use: the module, DDP-wrapped in a data-parallel run."""
        fwd = self.dist.wrap(self.model) if self.dist is not None else self.model
        if self.cfg.compile:
            from ..jit import compiled

            fwd = compiled(fwd, self.echo)  # falls back to `fwd` itself, with W931, if compiling fails
        self.forward = fwd

    @property
    def writes(self) -> bool:
        """Whether this process writes the run folder (rank 0 of a data-parallel run)."""
        return self.dist is None or self.dist.is_main

    def _load_base(self) -> None:
        path = Path(self.graph.base_weights)
        if not path.is_file():
            raise error("E509", f"`{self.graph.name}` starts from weights {path}, which do not exist",
                        hint="train the base model first (its run folder holds best.safetensors)")
        missing = tb.load_weights(self.model, self.graph, path, strict=False, skip=tuple(self.graph.replaced))
        fresh = sorted({k.rsplit(".", 1)[0] for k in missing})
        if fresh:
            self.echo(f"starting from {path}; fresh weights for: {', '.join(fresh)}")

    # -- one pass
    def train_epoch(self, epoch: int) -> dict[str, float]:
        """One pass over the training split. Returns the loss and metrics of that pass, computed
        from the outputs the steps produced (as Keras reports them): no second pass over the data."""
        self.model.train()
        frozen_batchnorm_to_inference(self.model)
        total, count = 0.0, 0
        seen: dict[str, list[np.ndarray]] = {k: [] for k in self.outputs}
        targets: dict[str, list[np.ndarray]] = {k: [] for k in self.outputs}
        parts_sum: dict[str, float] = {k: 0.0 for k in self.losses}
        want_metrics = bool(self.cfg.metrics)
        scaler = getattr(self, "_scaler", None)
        if scaler is None and self.cfg.precision == "fp16" and self.device.type == "cuda":
            scaler = self._scaler = torch.amp.GradScaler("cuda")
        bar = self._bar(epoch)
        if self.dist is not None:
            self.dist.seed_epoch(self.seed, epoch)
        for step, b in enumerate(batches(self.train_data, self.cfg.batch, self.bundle_shuffle, self.seed, epoch), 1):
            n, share = len(b), 1.0
            if self.dist is not None:  # this rank's part of the global batch, weighted to its share
                b, n, share = self.dist.shard(b)
            with self._autocast():
                outs = self._outputs(b.x)
                ys = self._targets(b.y)
                loss, parts = self._loss(outs, ys)
            if not torch.isfinite(loss):
                raise error("E630", f"the loss became {float(loss.detach())} at batch {step}/{self.batches_per_epoch} of "
                            f"epoch {epoch}; training stopped before that batch's update",
                            hint="lower the learning rate, add gradient clipping (clip_grad = norm(1.0)), "
                                 "or check the data for NaNs; the last good checkpoint is kept")
            first, last, weight = self._window(step, len(self.train_data))
            if first:
                self.opt.zero_grad(set_to_none=True)
            objective = loss * (share * weight) if share * weight != 1.0 else loss
            if scaler is not None:
                scaler.scale(objective).backward()
            else:
                objective.backward()
            if not last:  # the gradients of the next batches of this optimizer step add up
                self._record(loss, n, parts, outs, ys, want_metrics, seen, targets, parts_sum, bar)
                total += float(loss.detach()) * n
                count += n
                continue
            if scaler is not None:
                scaler.unscale_(self.opt)
            clip = self.cfg.clip_grad
            if clip is not None:
                params = [p for p in self.model.parameters() if p.grad is not None]
                if isinstance(clip, ClipNorm):
                    torch.nn.utils.clip_grad_norm_(params, clip.max)
                else:
                    torch.nn.utils.clip_grad_value_(params, clip.max)
            if scaler is not None:
                scaler.step(self.opt)
                scaler.update()
            else:
                self.opt.step()
            self.sched.after_step()
            total += float(loss.detach()) * n
            count += n
            self._record(loss, n, parts, outs, ys, want_metrics, seen, targets, parts_sum, bar, total / count)
        if bar is not None:
            bar.close()
        if self.dist is not None:
            return self._summarize(*self.dist.gather(total, count, parts_sum, seen, targets))
        return self._summarize(total, count, parts_sum, seen, targets)

    def _window(self, step: int, n: int) -> tuple[bool, bool, float]:
        """For batch `step` (1-based) of an epoch of `n` examples: whether it starts and whether it
        ends its optimizer step, and the weight of its mean loss in that step's gradient (its share
        of the step's examples: `accumulate` batches of `batch` are one batch of their sum, and the
        epoch's last, shorter step is the mean over its own examples)."""
        acc, batch = self.cfg.accumulate, self.cfg.batch
        if acc == 1:
            return True, True, 1.0
        w = (step - 1) // acc
        lo, hi = w * acc * batch, min((w + 1) * acc * batch, n)
        mine = min(step * batch, n) - (step - 1) * batch
        return (step - 1) % acc == 0, step % acc == 0 or step * batch >= n, mine / (hi - lo)

    def _record(self, loss, n, parts, outs, ys, want_metrics, seen, targets, parts_sum, bar, mean=None) -> None:
        for k in parts:
            parts_sum[k] += parts[k] * n
        if want_metrics and n:
            for k in self.outputs:
                seen[k].append(outs[k].detach().float().cpu().numpy())
                targets[k].append(ys[k].cpu().numpy())
        if bar is not None:
            bar.update(1)
            if mean is not None:
                bar.set_postfix(loss=f"{mean:.4f}")

    @property
    def bundle_shuffle(self) -> bool:
        return getattr(self.cfg.data, "shuffle", True)

    def _bar(self, epoch: int):
        if not self.progress:
            return None
        from tqdm.auto import tqdm

        return tqdm(total=self.batches_per_epoch, desc=f"epoch {epoch}/{self.cfg.epochs}", leave=False, unit="batch")

    # -- what the loop asks between passes
    def current_lr(self, epoch: int) -> float:
        return self.opt.param_groups[0]["lr"]

    def end_epoch(self, epoch: int, logs: dict[str, Any]) -> None:
        self.sched.after_epoch(epoch, logs)

    def synchronize(self) -> None:
        if self.dist is not None:  # the best weights, from rank 0's run folder, on every rank
            self.dist.broadcast_model(self.model)

    # -- weights and checkpoints
    def save_weights(self, which: str) -> None:
        (path,) = weights_files(self.run, "supervised", which)
        tb.save_weights(self.model, self.graph, path)

    def load_weights(self, which: str) -> None:
        (path,) = weights_files(self.run, "supervised", which)
        tb.load_weights(self.model, self.graph, path)

    def save_checkpoint(self, epoch: int, loop_state: dict[str, Any]) -> None:
        from safetensors.torch import save_file

        def write(tmp: Path) -> None:
            save_file({k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}, str(tmp / "model.safetensors"))
            opt_state = self.opt.state_dict()
            tensors: dict[str, torch.Tensor] = {}
            plain: dict[str, dict[str, Any]] = {}
            for idx, st in opt_state["state"].items():
                for k, v in st.items():
                    if torch.is_tensor(v):
                        tensors[f"opt.{idx}.{k}"] = v.detach().cpu().contiguous()
                    else:
                        plain.setdefault(str(idx), {})[k] = v
            tensors["rng.torch"] = torch.get_rng_state()
            if torch.cuda.is_available():
                for i, s in enumerate(torch.cuda.get_rng_state_all()):
                    tensors[f"rng.cuda.{i}"] = s
            save_file(tensors, str(tmp / "state.safetensors"))
            state = {
                "epoch": epoch,
                "optimizer": {"param_groups": opt_state["param_groups"], "plain_state": plain},
                "schedule": self.sched.state(),
                **loop_state,
            }
            (tmp / "state.json").write_text(json.dumps(state, default=_json_default))

        commit_checkpoint(self.run, epoch, write, self.cfg.checkpoint.keep)

    def load_checkpoint(self, last: Path, state: dict[str, Any]) -> None:
        from safetensors.torch import load_file

        self.model.load_state_dict(load_file(str(last / "model.safetensors"), device=str(self.device)))
        tensors = load_file(str(last / "state.safetensors"))
        opt_state: dict[str, Any] = {"state": {}, "param_groups": state["optimizer"]["param_groups"]}
        for key, v in tensors.items():
            if key.startswith("opt."):
                _, idx, name = key.split(".", 2)
                opt_state["state"].setdefault(int(idx), {})[name] = v.to(self.device) if name != "step" else v
        for idx, st in state["optimizer"]["plain_state"].items():
            opt_state["state"].setdefault(int(idx), {}).update(st)
        self.opt.load_state_dict(opt_state)
        self.sched.load(state["schedule"])
        set_rng_state(tensors)

    # -- gradual unfreezing
    def unfreeze(self, epoch: int, patterns: tuple[str, ...]) -> int:
        """Unfreeze the parameters `patterns` name; they join the optimizer as new groups at their
        `lr_groups` rate (else the base rate), scaled like the others by the schedule."""
        from fnmatch import fnmatchcase

        newly = []
        for name, p in self.model.named_parameters():
            if not p.requires_grad and any(fnmatchcase(name, pt) or fnmatchcase(name.rsplit(".", 1)[0], pt) for pt in patterns):
                p.requires_grad_(True)
                newly.append(p)
        if newly:
            ids = {id(p) for p in newly}
            for group in param_groups(self.model, self.graph, self.cfg.optimizer.lr, self.cfg.lr_groups,
                                      self.cfg.decay_groups):
                params = [p for p in group["params"] if id(p) in ids]
                if params:
                    self._add_group(params, group["lr"], group.get("weight_decay"))
            if self.dist is not None:  # DDP reduces only the gradients that existed when it wrapped
                self._wrap()
        return len(newly)

    def _add_group(self, params: list, base_lr: float, weight_decay: float | None = None) -> None:
        """A parameter group that follows the schedule from where it stands: its hyperparameters are
        the first group's, its rate `base_lr` times the schedule's current factor."""
        first = self.opt.param_groups[0]
        factor = first["lr"] / first["initial_lr"] if first.get("initial_lr") else 1.0
        group = {k: v for k, v in first.items() if k != "params"}
        group.update(params=params, lr=base_lr * factor)
        if weight_decay is not None:
            group["weight_decay"] = weight_decay
        elif "weight_decay" in self.opt.defaults:
            group["weight_decay"] = self.opt.defaults["weight_decay"]
        if "initial_lr" in first:
            group["initial_lr"] = base_lr
        self.opt.add_param_group(group)
        scheds = [self.sched.epoch_sched, self.sched.step_sched]
        scheds += [sub for s in scheds for sub in getattr(s, "_schedulers", [])]
        for s in scheds:
            if s is not None and hasattr(s, "base_lrs"):
                s.base_lrs.append(base_lr)
                if isinstance(getattr(s, "_last_lr", None), list):
                    s._last_lr.append(group["lr"])
        plateau = self.sched.plateau
        if plateau is not None and len(plateau.min_lrs) < len(self.opt.param_groups):
            plateau.min_lrs.append(plateau.min_lrs[0])


def set_rng_state(tensors: dict[str, torch.Tensor]) -> None:
    """The global RNG state a checkpoint saved (`rng.torch`, `rng.cuda.N`)."""
    torch.set_rng_state(tensors["rng.torch"])
    if torch.cuda.is_available():
        cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("rng.cuda."))]
        if cuda:
            torch.cuda.set_rng_state_all(cuda)


def _json_default(v: Any) -> Any:
    if torch.is_tensor(v):
        return v.item() if v.numel() == 1 else v.tolist()
    if isinstance(v, (set, tuple)):
        return list(v)
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    raise TypeError(f"cannot store {type(v).__name__} in a checkpoint")
