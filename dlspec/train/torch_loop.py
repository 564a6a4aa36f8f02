"""The PyTorch trainer behind `dlspec train`: a recipe and a lowered graph in, a run folder out.

Determinism: the shuffling of each epoch comes from a generator seeded with (seed, epoch), and
the global RNG state is saved in every checkpoint, so `--resume` continues exactly where the
interrupted run was and reaches the same final weights on CPU.

Checkpoints hold no pickles: tensors go to safetensors, everything else to JSON.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..backends import torch as tb
from ..errors import Diagnostic, DlspecError, did_you_mean
from ..ir.graph import Graph
from ..ir.training import (
    BCE,
    MAE,
    MSE,
    NLL,
    SGD,
    Adagrad,
    Adam,
    AdamW,
    BCEWithLogits,
    ClipNorm,
    Constant,
    Cosine,
    CrossEntropy,
    Dice,
    Exponential,
    Huber,
    KLDiv,
    MultiStep,
    OneCycle,
    Plateau,
    RMSprop,
    Step,
    TrainConfig,
    Warmup,
)
from . import metrics as M
from .run import (
    EarlyStopping,
    RunLog,
    atomic_write_json,
    checkpoint_dirs,
    commit_checkpoint,
    epoch_line,
    is_better,
    read_state,
)


def user_error(code: str, message: str, hint: str | None = None) -> DlspecError:
    return DlspecError(Diagnostic(code=code, message=message, hint=hint))


# ---- devices ---------------------------------------------------------------------------------


def pick_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise user_error("E906", "--device cuda: no CUDA device is available on this machine",
                         hint="use --device cpu, or --device auto to pick what is there")
    if name == "mps" and not (getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()):
        raise user_error("E906", "--device mps: Apple's Metal backend is not available here", hint="use --device cpu")
    return torch.device(name)


# ---- optimizers, schedules, losses -------------------------------------------------------------


def param_groups(model: nn.Module, graph: Graph, base_lr: float, lr_groups: dict[str, float]) -> list[dict]:
    from fnmatch import fnmatchcase

    groups: dict[float, list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        lr = base_lr
        for pat, glr in lr_groups.items():
            if fnmatchcase(name, pat) or fnmatchcase(name.rsplit(".", 1)[0], pat):
                lr = glr
                break
        groups.setdefault(lr, []).append(p)
    return [{"params": ps, "lr": lr} for lr, ps in groups.items()]


def make_optimizer(cfg: Any, groups: list[dict]) -> torch.optim.Optimizer:
    if not groups:
        raise user_error("E416", "every parameter is frozen: there is nothing to train",
                         hint="freeze fewer layers, or unfreeze some with `unfreeze = {epoch: [\"pattern\"]}`")
    if isinstance(cfg, SGD):
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                               dampening=cfg.dampening, weight_decay=cfg.weight_decay)
    if isinstance(cfg, AdamW):
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay,
                                 amsgrad=cfg.amsgrad)
    if isinstance(cfg, Adam):
        return torch.optim.Adam(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay,
                                amsgrad=cfg.amsgrad)
    if isinstance(cfg, RMSprop):
        return torch.optim.RMSprop(groups, lr=cfg.lr, alpha=cfg.alpha, eps=cfg.eps, momentum=cfg.momentum,
                                   centered=cfg.centered, weight_decay=cfg.weight_decay)
    if isinstance(cfg, Adagrad):
        return torch.optim.Adagrad(groups, lr=cfg.lr, lr_decay=cfg.lr_decay, eps=cfg.eps, weight_decay=cfg.weight_decay)
    raise user_error("E402", f"optimizer {cfg.type} is not available on the torch backend")


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


def make_schedule(parts: tuple, opt: torch.optim.Optimizer, epochs: int, steps_per_epoch: int) -> Schedule:
    S = torch.optim.lr_scheduler
    if not parts:
        return Schedule()
    warm = parts[0] if isinstance(parts[0], Warmup) else None
    main = parts[-1] if not isinstance(parts[-1], Warmup) else Constant()
    w = warm.epochs if warm else 0
    rest = max(epochs - w, 1)
    if isinstance(main, OneCycle):
        if warm:
            raise user_error("E413", "one_cycle has its own warm-up; drop `warmup(...) then`")
        total = max(epochs * steps_per_epoch, 1)
        # PyTorch cycles momentum (or Adam's beta1) by default; optimizers with neither (Adagrad) cannot.
        cycle = "momentum" in opt.defaults or "betas" in opt.defaults
        return Schedule(step_sched=S.OneCycleLR(opt, max_lr=main.max_lr, total_steps=total, pct_start=main.pct_start,
                                                anneal_strategy=main.anneal, div_factor=main.div_factor,
                                                final_div_factor=main.final_div_factor, cycle_momentum=cycle))
    sched: Any
    if isinstance(main, Plateau):
        mode = main.mode if main.mode != "auto" else M.default_mode(main.monitor)
        plateau = S.ReduceLROnPlateau(opt, mode=mode, factor=main.factor, patience=main.patience, min_lr=main.min_lr)
        ws = S.LinearLR(opt, start_factor=warm.start_factor, end_factor=1.0, total_iters=w) if warm else None
        return Schedule(epoch_sched=ws, plateau=plateau, plateau_monitor=main.monitor, warmup_epochs=w)
    if isinstance(main, Cosine):
        sched = S.CosineAnnealingLR(opt, T_max=main.t_max or rest, eta_min=main.eta_min)
    elif isinstance(main, Step):
        sched = S.StepLR(opt, step_size=main.step_size, gamma=main.gamma)
    elif isinstance(main, MultiStep):
        sched = S.MultiStepLR(opt, milestones=[m - w for m in main.milestones], gamma=main.gamma)
    elif isinstance(main, Exponential):
        sched = S.ExponentialLR(opt, gamma=main.gamma)
    else:
        sched = S.LambdaLR(opt, lambda e: 1.0) if warm else None
    if warm:
        ws = S.LinearLR(opt, start_factor=warm.start_factor, end_factor=1.0, total_iters=w)
        sched = S.SequentialLR(opt, [ws, sched], milestones=[w])
    return Schedule(epoch_sched=sched)


def loss_fn(cfg: Any):
    """A function (output, target) → scalar loss for one output head."""

    def ce(out, y):
        if out.ndim == y.ndim + 1 and out.shape[: y.ndim] == y.shape and out.ndim > 2:
            out = out.movedim(-1, 1)  # [N, T, C] → [N, C, T]
        w = torch.tensor(cfg.class_weights, device=out.device, dtype=out.dtype) if cfg.class_weights else None
        return F.cross_entropy(out, y.long(), weight=w, label_smoothing=cfg.label_smoothing, ignore_index=cfg.ignore_index)

    def nll(out, y):
        if out.ndim == y.ndim + 1 and out.ndim > 2 and out.shape[: y.ndim] == y.shape:
            out = out.movedim(-1, 1)
        w = torch.tensor(cfg.class_weights, device=out.device, dtype=out.dtype) if cfg.class_weights else None
        return F.nll_loss(out, y.long(), weight=w)

    def dice(out, y):
        if out.shape == y.shape:
            p = torch.sigmoid(out)
            t = y.float()
        else:
            p = torch.softmax(out, dim=1)
            t = F.one_hot(y.long(), out.shape[1]).movedim(-1, 1).float()
        dims = tuple(range(1, p.ndim))
        inter = (p * t).sum(dims)
        score = (2 * inter + cfg.smooth) / (p.sum(dims) + t.sum(dims) + cfg.smooth)
        return 1 - score.mean()

    def shaped(f):
        return lambda out, y: f(out, y.to(out.dtype).reshape(out.shape))

    if isinstance(cfg, CrossEntropy):
        return ce
    if isinstance(cfg, NLL):
        return nll
    if isinstance(cfg, BCEWithLogits):
        pw = cfg.pos_weight

        def bcel(out, y):
            w = torch.tensor(pw, device=out.device, dtype=out.dtype) if pw is not None else None
            return F.binary_cross_entropy_with_logits(out, y.to(out.dtype).reshape(out.shape), pos_weight=w)

        return bcel
    if isinstance(cfg, BCE):
        if cfg.pos_weight is None:
            return shaped(F.binary_cross_entropy)
        pos = cfg.pos_weight

        def bce_pos(out, y):
            # binary_cross_entropy with positives weighted; logs clamped at -100 as PyTorch's BCELoss does
            y = y.to(out.dtype).reshape(out.shape)
            log_p = torch.clamp(torch.log(out), min=-100)
            log_q = torch.clamp(torch.log1p(-out), min=-100)
            return -(pos * y * log_p + (1 - y) * log_q).mean()

        return bce_pos
    if isinstance(cfg, MSE):
        return shaped(F.mse_loss)
    if isinstance(cfg, MAE):
        return shaped(F.l1_loss)
    if isinstance(cfg, Huber):
        return shaped(lambda o, y: F.huber_loss(o, y, delta=cfg.delta))
    if isinstance(cfg, KLDiv):
        return lambda out, y: F.kl_div(out, y.to(out.dtype), reduction="batchmean", log_target=cfg.log_target)
    if isinstance(cfg, Dice):
        return dice
    raise user_error("E402", f"loss {cfg.type} is not available on the torch backend")


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


# ---- the trainer -----------------------------------------------------------------------------


@dataclass
class Outcome:
    run: Path
    epochs_run: int
    stopped_early: bool
    test: dict[str, float]
    best: dict[str, Any] = field(default_factory=dict)


class Trainer:
    #: data-parallel hooks (dlspec.train.distributed.DataParallel); None for one process
    dist: Any = None

    def __init__(self, graph: Graph, cfg: TrainConfig, bundle: Any, run: Path, device: torch.device,
                 seed: int, progress: bool = True, echo=print, dist: Any = None):
        self.graph, self.cfg, self.bundle, self.run = graph, cfg, bundle, run
        self.device, self.seed, self.progress, self.echo = device, seed, progress, echo
        self.dist = dist
        self.outputs = [o.name for o in graph.outputs]
        self._set_losses()
        torch.manual_seed(seed)
        self.model = tb.build_module(graph).to(device)
        if graph.base_weights:
            self._load_base()
        if dist is not None:
            self.model = dist.prepare(self.model)
        self.train_data = as_tensors(bundle.train).to(device)
        self.val_data = as_tensors(bundle.val).to(device)
        self.test_data = as_tensors(bundle.test).to(device)
        self.steps_per_epoch = max(1, math.ceil(len(self.train_data) / cfg.batch))
        self.opt = make_optimizer(cfg.optimizer, param_groups(self.model, graph, cfg.optimizer.lr, cfg.lr_groups))
        self.sched = make_schedule(cfg.schedule, self.opt, cfg.epochs, self.steps_per_epoch)
        self._wrap()
        self.log = dist.run_log(run) if dist is not None else RunLog(run)
        self.start_epoch = 1
        self.best_value: float | None = None
        self.bad_epochs = 0
        mon = cfg.early_stop.monitor if cfg.early_stop else cfg.checkpoint.monitor
        self.known_keys = self._metric_keys()
        for m, what in ((cfg.checkpoint.monitor, "checkpoint"), (mon, "early_stop")):
            if m not in self.known_keys:
                raise user_error("E414", f"{what} monitors `{m}`, which this run does not log",
                                 hint=did_you_mean(m, self.known_keys) or f"logged: {', '.join(self.known_keys)}")

    # -- setup
    def _wrap(self) -> None:
        """The callable the training steps use: the module, DDP-wrapped in a data-parallel run."""
        fwd = self.dist.wrap(self.model) if self.dist is not None else self.model
        self.forward = torch.compile(fwd) if self.cfg.compile else fwd

    @property
    def writes(self) -> bool:
        """Whether this process writes the run folder (rank 0 of a data-parallel run)."""
        return self.dist is None or self.dist.is_main

    def _set_losses(self) -> None:
        cfg = self.cfg
        if isinstance(cfg.loss, dict):
            missing = [o for o in self.outputs if o not in cfg.loss]
            extra = [k for k in cfg.loss if k not in self.outputs]
            if missing or extra:
                raise user_error("E415", f"the loss names outputs {sorted(cfg.loss)}, the model has {self.outputs}",
                                 hint="give one loss per output: loss = {name: cross_entropy(), ...}")
            self.losses = {k: loss_fn(v) for k, v in cfg.loss.items()}
        else:
            if len(self.outputs) > 1:
                raise user_error("E415", f"the model has {len(self.outputs)} outputs {self.outputs} but the recipe gives one loss",
                                 hint="write loss = {" + ", ".join(f"{o}: cross_entropy()" for o in self.outputs) + "}")
            self.losses = {self.outputs[0]: loss_fn(cfg.loss)}
        self.weights = {k: float(cfg.loss_weights.get(k, 1.0)) for k in self.losses}

    def _load_base(self) -> None:
        path = Path(self.graph.base_weights)
        if not path.is_file():
            raise user_error("E509", f"`{self.graph.name}` starts from weights {path}, which do not exist",
                             hint="train the base model first (its run folder holds best.safetensors)")
        missing = tb.load_weights(self.model, self.graph, path, strict=False, skip=tuple(self.graph.replaced))
        fresh = sorted({k.rsplit(".", 1)[0] for k in missing})
        if fresh:
            self.echo(f"starting from {path}; fresh weights for: {', '.join(fresh)}")

    def _metric_keys(self) -> list[str]:
        from ..ir.training import logged_keys

        return logged_keys(self.outputs, self.cfg.metrics)

    # -- one pass
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
        for b in batches(self.train_data, self.cfg.batch, self.bundle_shuffle, self.seed, epoch):
            n, share = len(b), 1.0
            if self.dist is not None:  # this rank's part of the global batch, weighted to its share
                b, n, share = self.dist.shard(b)
            with self._autocast():
                outs = self._outputs(b.x)
                ys = self._targets(b.y)
                loss, parts = self._loss(outs, ys)
            if not torch.isfinite(loss):
                raise user_error("E630", f"the loss became {float(loss.detach())} in epoch {epoch}; training stopped",
                                 hint="lower the learning rate, add gradient clipping (clip_grad = norm(1.0)), "
                                      "or check the data for NaNs; the last good checkpoint is kept")
            self.opt.zero_grad(set_to_none=True)
            objective = loss * share if share != 1.0 else loss
            if scaler is not None:
                scaler.scale(objective).backward()
                scaler.unscale_(self.opt)
            else:
                objective.backward()
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
            for k in parts:
                parts_sum[k] += parts[k] * n
            if want_metrics and n:
                for k in self.outputs:
                    seen[k].append(outs[k].detach().float().cpu().numpy())
                    targets[k].append(ys[k].cpu().numpy())
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{total / count:.4f}")
        if bar is not None:
            bar.close()
        if self.dist is not None:
            return self._summarize(*self.dist.gather(total, count, parts_sum, seen, targets))
        return self._summarize(total, count, parts_sum, seen, targets)

    def _summarize(self, total: float, count: int, parts_sum: dict[str, float],
                   outs: dict[str, list[np.ndarray]], targets: dict[str, list[np.ndarray]]) -> dict[str, float]:
        res = {"loss": total / max(count, 1)}
        multi = len(self.outputs) > 1
        for k in self.outputs:
            if multi:
                res[f"{k}_loss"] = parts_sum[k] / max(count, 1)
            if not outs[k]:
                continue
            out, y = np.concatenate(outs[k]), np.concatenate(targets[k])
            nc = self.bundle.num_classes.get(k) if isinstance(self.bundle.num_classes, dict) else self.bundle.num_classes
            for m in self.cfg.metrics:
                if m.output is None or m.output == k:
                    res[f"{k}_{m.key}" if multi else m.key] = M.compute(m, out, y, nc)
        return res

    @property
    def bundle_shuffle(self) -> bool:
        return getattr(self.cfg.data, "shuffle", True)

    def _bar(self, epoch: int):
        if not self.progress:
            return None
        from tqdm.auto import tqdm

        return tqdm(total=self.steps_per_epoch, desc=f"epoch {epoch}/{self.cfg.epochs}", leave=False, unit="batch")

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
        if self.dist is not None:
            return self._summarize(*self.dist.gather(total, count, parts_sum, outs, targets))
        return self._summarize(total, count, parts_sum, outs, targets)

    # -- checkpoints
    def _improved(self, logs: dict[str, float]) -> bool:
        ck = self.cfg.checkpoint
        value = logs[ck.monitor]
        mode = ck.mode if ck.mode != "auto" else M.default_mode(ck.monitor)
        if is_better(value, self.best_value, mode):
            self.best_value = value
            return True
        return False

    def save_checkpoint(self, epoch: int, extra: dict) -> None:
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
                "best_value": self.best_value,
                "bad_epochs": self.bad_epochs,
                **extra,
            }
            (tmp / "state.json").write_text(json.dumps(state, default=_json_default))

        commit_checkpoint(self.run, epoch, write, self.cfg.checkpoint.keep)

    def restore(self) -> int:
        from safetensors.torch import load_file

        dirs = checkpoint_dirs(self.run)
        if not dirs:
            raise user_error("E631", f"--resume: {self.run} has no checkpoint to resume from",
                             hint="run without --resume to start afresh")
        last = dirs[-1]
        try:
            self.model.load_state_dict(load_file(str(last / "model.safetensors"), device=str(self.device)))
            tensors = load_file(str(last / "state.safetensors"))
            state = read_state(last / "state.json")
        except DlspecError:
            raise
        except Exception as exc:  # a damaged checkpoint: say which, never a traceback
            raise user_error("E632", f"checkpoint {last} cannot be read: {exc}") from None
        opt_state: dict[str, Any] = {"state": {}, "param_groups": state["optimizer"]["param_groups"]}
        for key, v in tensors.items():
            if key.startswith("opt."):
                _, idx, name = key.split(".", 2)
                opt_state["state"].setdefault(int(idx), {})[name] = v.to(self.device) if name != "step" else v
        for idx, st in state["optimizer"]["plain_state"].items():
            opt_state["state"].setdefault(int(idx), {}).update(st)
        for e in sorted(self.cfg.unfreeze):  # the parameter groups the finished epochs added
            if e <= state["epoch"]:
                self._apply_unfreeze(e, announce=False)
        self.opt.load_state_dict(opt_state)
        self.sched.load(state["schedule"])
        torch.set_rng_state(tensors["rng.torch"])
        if torch.cuda.is_available():
            cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("rng.cuda."))]
            if cuda:
                torch.cuda.set_rng_state_all(cuda)
        self.best_value = state["best_value"]
        self.bad_epochs = state["bad_epochs"]
        self.log.load(state["epoch"])
        self.start_epoch = state["epoch"] + 1
        return state["epoch"]

    # -- the loop
    def fit(self) -> Outcome:
        cfg = self.cfg
        stopper = EarlyStopping(cfg.early_stop, self.log.records, self.bad_epochs) if cfg.early_stop else None
        stopped = False
        epoch = self.start_epoch - 1
        for epoch in range(self.start_epoch, cfg.epochs + 1):
            self._apply_unfreeze(epoch)
            t0 = time.perf_counter()
            logs: dict[str, Any] = {"epoch": epoch}
            logs.update(self.train_epoch(epoch))
            val_eval = self.evaluate(self.val_data)
            logs.update({f"val_{k}": v for k, v in val_eval.items()})
            logs["lr"] = self.opt.param_groups[0]["lr"]
            logs["time"] = round(time.perf_counter() - t0, 3)
            self.sched.after_epoch(epoch, logs)
            self.log.append(logs)
            self.echo(epoch_line(logs, cfg.epochs))
            if self._improved(logs) and cfg.checkpoint.best and self.writes:
                tb.save_weights(self.model, self.graph, self.run / "best.safetensors")
                atomic_write_json(self.run / "best.json", {"epoch": epoch, cfg.checkpoint.monitor: logs[cfg.checkpoint.monitor]})
            if stopper:
                self.bad_epochs = stopper.update(logs)
            if (epoch % cfg.checkpoint.every == 0 or epoch == cfg.epochs) and self.writes:
                tb.save_weights(self.model, self.graph, self.run / "last.safetensors")
                self.save_checkpoint(epoch, {})
            if stopper and stopper.stop:
                self.echo(stopper.message)
                stopped = True
                if epoch % cfg.checkpoint.every and self.writes:
                    tb.save_weights(self.model, self.graph, self.run / "last.safetensors")
                    self.save_checkpoint(epoch, {})
                break
        self.log.plot(f"{self.graph.name} — {cfg.name}")
        if self.writes and (self.run / "best.safetensors").exists() and cfg.checkpoint.best:
            tb.load_weights(self.model, self.graph, self.run / "best.safetensors")
        if self.dist is not None:  # the best weights, from rank 0's run folder, on every rank
            self.dist.broadcast_model(self.model)
        test = self.evaluate(self.test_data) if len(self.test_data) else {}
        if not self.writes:
            return Outcome(self.run, epoch, stopped, test, {})
        atomic_write_json(self.run / "test_metrics.json", test)
        best = json.loads((self.run / "best.json").read_text()) if (self.run / "best.json").exists() else {}
        return Outcome(self.run, epoch, stopped, test, best)

    def _apply_unfreeze(self, epoch: int, announce: bool = True) -> None:
        """Unfreeze the parameters the recipe names for `epoch`; they join the optimizer as new
        groups at their `lr_groups` rate (else the base rate), scaled like the others by the schedule."""
        pats = self.cfg.unfreeze.get(epoch)
        if not pats:
            return
        from fnmatch import fnmatchcase

        newly = []
        for name, p in self.model.named_parameters():
            if not p.requires_grad and any(fnmatchcase(name, pt) or fnmatchcase(name.rsplit(".", 1)[0], pt) for pt in pats):
                p.requires_grad_(True)
                newly.append(p)
        if newly:
            ids = {id(p) for p in newly}
            for group in param_groups(self.model, self.graph, self.cfg.optimizer.lr, self.cfg.lr_groups):
                params = [p for p in group["params"] if id(p) in ids]
                if params:
                    self._add_group(params, group["lr"])
            if self.dist is not None:  # DDP reduces only the gradients that existed when it wrapped
                self._wrap()
            if announce:
                self.echo(f"epoch {epoch}: unfroze {len(newly)} parameter tensors ({', '.join(pats)})")

    def _add_group(self, params: list, base_lr: float) -> None:
        """A parameter group that follows the schedule from where it stands: its hyperparameters are
        the first group's, its rate `base_lr` times the schedule's current factor."""
        first = self.opt.param_groups[0]
        factor = first["lr"] / first["initial_lr"] if first.get("initial_lr") else 1.0
        group = {k: v for k, v in first.items() if k != "params"}
        group.update(params=params, lr=base_lr * factor)
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


def _json_default(v: Any) -> Any:
    if torch.is_tensor(v):
        return v.item() if v.numel() == 1 else v.tolist()
    if isinstance(v, (set, tuple)):
        return list(v)
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    raise TypeError(f"cannot store {type(v).__name__} in a checkpoint")
