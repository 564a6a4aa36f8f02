"""The recipe → PyTorch tables (`dlspec/train/torch_recipe.py`) cover every optimizer, schedule and
loss of the language, and the standalone training script, rendered from the same tables, builds
the very optimizer, schedule and loss the trainer builds."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import torch

from dlspec.ir import training as T
from dlspec.program import compile_file
from dlspec.train import torch_loop as tl
from dlspec.train import torch_losses
from dlspec.train import torch_recipe as R
from dlspec.train.script import generate_script

from .helpers import spec_path


def test_every_optimizer_and_loss_of_the_language_has_a_torch_entry():
    assert set(R.OPTIMIZERS) == set(T.OPTIMIZERS)
    for name, entry in R.OPTIMIZERS.items():
        assert set(entry.args) <= set(T.OPTIMIZERS[name].model_fields), name
        assert hasattr(torch.optim, entry.cls)
    assert set(R.LOSSES) == set(T.LOSSES)
    for name, entry in R.LOSSES.items():
        assert set(entry.args) <= set(T.LOSSES[name].model_fields), name
        params = inspect.signature(getattr(torch_losses, entry.fn)).parameters
        assert list(params)[:2] == ["out", "y"] and set(entry.args) <= set(params), name


def test_every_schedule_of_the_language_has_a_plan():
    for name, cls in T.SCHEDULES.items():
        required = {"max_lr": 0.1, "step_size": 2, "milestones": (3,), "gamma": 0.5}
        part = cls(**{k: v for k, v in required.items() if k in cls.model_fields and cls.model_fields[k].is_required()})
        plan = R.schedule_plan((part,), 10, 3, True)
        calls = [c for c in (plan.epoch, plan.step, plan.plateau) if c is not None]
        assert calls or name in ("constant", "warmup"), name
        for c in calls:
            assert hasattr(torch.optim.lr_scheduler, c.cls)


RECIPES = [
    ("adam(lr=1e-2, weight_decay=1e-4)", "cosine()", "cross_entropy(label_smoothing=0.1)"),
    ("sgd(lr=0.1, momentum=0.9, nesterov=true)", "warmup(epochs=2) then step(step_size=3, gamma=0.5)", "nll()"),
    ("adamw(lr=0.05)", "one_cycle(max_lr=0.05, pct_start=0.4)", "cross_entropy(class_weights=[1.0, 2.0, 0.5])"),
    ("rmsprop(lr=0.01, momentum=0.5, centered=true)", "warmup(epochs=1) then multistep(milestones=[3, 5])", "mse()"),
    ("adagrad(lr=0.1, lr_decay=0.01)", "one_cycle(max_lr=0.1)", "huber(delta=0.5)"),
    ("sgd(lr=0.2)", "warmup(epochs=2) then plateau(monitor=val_loss, patience=0, factor=0.5)", "mae()"),
    ("adam(lr=1e-3)", "warmup(epochs=2) then exponential(gamma=0.8)", "bce(pos_weight=2.0)"),
    ("adam(lr=1e-3)", "warmup(epochs=2)", "bce_with_logits(pos_weight=3.0)"),
    ("adam(lr=1e-3)", "warmup(epochs=1) then cosine()", "kl_div()"),
    ("adam(lr=1e-3)", "cosine()", "dice()"),
]


def _script_namespace(tmp_path: Path, optimizer: str, schedule: str, loss: str):
    text = spec_path("iris_mlp.dls").read_text()
    text = (text.replace("adam(lr=1e-2, weight_decay=1e-4)", optimizer).replace("cosine()", schedule)
            .replace("cross_entropy()", loss))
    spec = tmp_path / "r.dls"
    spec.write_text(text)
    prog = compile_file(spec)
    ns: dict = {"__name__": "standalone"}
    exec(compile(generate_script(prog, spec), "train.py", "exec"), ns)
    return prog.recipes[-1], ns


def _lrs(opt, sched_step, epoch_end, epochs: int, steps: int) -> list[float]:
    out = []
    for e in range(1, epochs + 1):
        for _ in range(steps):
            opt.step()
            sched_step()
            out.append(opt.param_groups[0]["lr"])
        epoch_end(e)
        out.append(opt.param_groups[0]["lr"])
    return out


@pytest.mark.parametrize("optimizer, schedule, loss", RECIPES, ids=lambda v: v.split("(")[0])
def test_the_script_builds_what_the_trainer_builds(optimizer: str, schedule: str, loss: str, tmp_path: Path):
    cfg, ns = _script_namespace(tmp_path, optimizer, schedule, loss)
    epochs, steps = 8, 3
    lr = cfg.optimizer.lr
    # the script's --lr is one_cycle's peak rate; the recipes above give one_cycle the optimizer's rate
    mine, theirs = torch.nn.Parameter(torch.ones(2, 3)), torch.nn.Parameter(torch.ones(2, 3))
    opt_t = tl.make_optimizer(cfg.optimizer, [{"params": [mine], "lr": lr}])
    opt_s = ns["make_optimizer"]([{"params": [theirs], "lr": lr}], lr)
    assert type(opt_s) is type(opt_t)
    assert {k: v for k, v in opt_s.defaults.items()} == opt_t.defaults
    sched_t = tl.make_schedule(cfg.schedule, opt_t, epochs, steps)
    epoch_s, step_s, plateau_s, monitor_s, warm_s = ns["make_schedule"](opt_s, epochs, steps, lr)

    def script_epoch_end(e: int) -> None:
        if epoch_s is not None:
            epoch_s.step()
        if plateau_s is not None and e >= warm_s:
            plateau_s.step(1.0)

    def step_script() -> None:
        if step_s is not None:
            step_s.step()

    want = _lrs(opt_t, sched_t.after_step, lambda e: sched_t.after_epoch(e, {"val_loss": 1.0}), epochs, steps)
    got = _lrs(opt_s, step_script, script_epoch_end, epochs, steps)
    assert got == want
    assert len(set(want)) > 1 or "warmup" not in schedule
    torch.manual_seed(0)
    if loss.startswith(("cross_entropy", "nll")):
        out, y = torch.randn(7, 3).log_softmax(1), torch.randint(0, 3, (7,))
    elif loss.startswith("bce("):
        out, y = torch.rand(7, 1) * 0.98 + 0.01, torch.randint(0, 2, (7, 1)).float()
    elif loss.startswith("kl_div"):
        out, y = torch.randn(7, 3).log_softmax(1), torch.randn(7, 3).softmax(1)
    elif loss.startswith("dice"):
        out, y = torch.randn(7, 3, 4), torch.randint(0, 3, (7, 4))
    else:
        out, y = torch.randn(7, 1), torch.randn(7, 1)
    assert torch.equal(ns["loss_fn"](out, y), tl.loss_fn(cfg.loss)(out, y))
