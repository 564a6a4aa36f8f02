"""Recipe pieces on PyTorch: schedules give the intended learning rates, losses equal their
reference formulas, metrics equal scikit-learn's."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from dlspec.ir import training as T
from dlspec.train import metrics as M
from dlspec.train import torch_loop as tl

from .helpers import spec_path


def _lrs(parts, epochs=10, steps=1, lr=1.0):
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=lr)
    sched = tl.make_schedule(parts, opt, epochs, steps)
    out = []
    for e in range(1, epochs + 1):
        out.append(opt.param_groups[0]["lr"])
        for _ in range(steps):
            opt.step()
            sched.after_step()
        sched.after_epoch(e, {"val_loss": 1.0})
    return out


def test_warmup_then_cosine():
    lrs = _lrs((T.Warmup(epochs=2, start_factor=0.1), T.Cosine()), epochs=10)
    assert lrs[0] == pytest.approx(0.1)
    assert lrs[1] == pytest.approx(0.55)
    assert lrs[2] == pytest.approx(1.0)
    # cosine over the remaining 8 epochs
    assert lrs[6] == pytest.approx(0.5 * (1 + math.cos(math.pi * 4 / 8)))
    assert lrs[3:] == sorted(lrs[3:], reverse=True)


def test_step_multistep_exponential():
    assert _lrs((T.Step(step_size=3, gamma=0.5),), epochs=7) == pytest.approx([1, 1, 1, .5, .5, .5, .25])
    assert _lrs((T.MultiStep(milestones=(2, 5), gamma=0.1),), epochs=6) == pytest.approx([1, 1, .1, .1, .1, .01])
    assert _lrs((T.Exponential(gamma=0.9),), epochs=3) == pytest.approx([1, .9, .81])


def test_one_cycle_steps_per_batch_and_peaks_at_max_lr():
    lrs = _lrs((T.OneCycle(max_lr=2.0, pct_start=0.5),), epochs=4, steps=5)
    assert lrs[0] == pytest.approx(2.0 / 25)
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=1.0)
    sched = tl.make_schedule((T.OneCycle(max_lr=2.0, pct_start=0.5),), opt, 4, 5)
    seen = []
    for _ in range(20):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.after_step()
    assert max(seen) == pytest.approx(2.0, rel=1e-3)


def test_plateau_reduces_after_patience():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=1.0)
    sched = tl.make_schedule((T.Plateau(patience=1, factor=0.5),), opt, 10, 1)
    lrs = []
    for e in range(1, 6):
        sched.after_epoch(e, {"val_loss": 1.0})  # never improves after epoch 1
        lrs.append(opt.param_groups[0]["lr"])
    assert lrs == pytest.approx([1.0, 1.0, 0.5, 0.5, 0.25])


def test_warmup_cannot_precede_one_cycle():
    """A recipe rule, refused where the recipe is written (the trainers no longer check it)."""
    from dlspec.errors import DlspecError
    from dlspec.program import compile_source
    from dlspec.source import SourceFile

    text = spec_path("iris_mlp.dls").read_text()
    text = text.replace("schedule", "schedule  = warmup(epochs=1) then one_cycle(max_lr=1.0)\n    # schedule", 1)
    with pytest.raises(DlspecError) as info:
        compile_source(SourceFile("r.dls", text))
    (e413,) = [d for d in info.value.diagnostics if d.code == "E413"]
    assert e413.span is not None and e413.span.line == text[: text.index("warmup(")].count("\n") + 1


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw", "rmsprop", "adagrad"])
def test_every_optimizer_maps_to_torch(name):
    cfg = T.OPTIMIZERS[name](lr=0.01)
    p = torch.nn.Parameter(torch.ones(3))
    opt = tl.make_optimizer(cfg, [{"params": [p], "lr": 0.01}])
    assert type(opt).__name__.lower() == name
    p.sum().backward()
    opt.step()
    assert not torch.equal(p.detach(), torch.ones(3))


def test_nesterov_momentum_matches_torch():
    opt = tl.make_optimizer(T.SGD(lr=0.1, momentum=0.9, nesterov=True), [{"params": [torch.nn.Parameter(torch.ones(1))], "lr": 0.1}])
    g = opt.param_groups[0]
    assert g["momentum"] == 0.9 and g["nesterov"] is True


def test_losses_match_reference_formulas():
    torch.manual_seed(0)
    logits = torch.randn(6, 4)
    y = torch.tensor([0, 1, 2, 3, 1, 0])
    ce = tl.loss_fn(T.CrossEntropy(label_smoothing=0.1, class_weights=(1, 2, 1, 1)))
    ref = torch.nn.CrossEntropyLoss(weight=torch.tensor([1.0, 2, 1, 1]), label_smoothing=0.1)(logits, y)
    assert ce(logits, y) == pytest.approx(float(ref))
    seq = torch.randn(2, 5, 3)
    tags = torch.randint(0, 3, (2, 5))
    assert tl.loss_fn(T.CrossEntropy())(seq, tags) == pytest.approx(float(torch.nn.functional.cross_entropy(seq.reshape(-1, 3), tags.reshape(-1))))
    pred, target = torch.randn(8, 1), torch.randn(8)
    assert tl.loss_fn(T.MSE())(pred, target) == pytest.approx(float(((pred[:, 0] - target) ** 2).mean()))
    assert tl.loss_fn(T.MAE())(pred, target) == pytest.approx(float((pred[:, 0] - target).abs().mean()))
    assert tl.loss_fn(T.Huber(delta=0.5))(pred, target) == pytest.approx(float(torch.nn.functional.huber_loss(pred[:, 0], target, delta=0.5)))
    mask = (torch.rand(2, 1, 4, 4) > 0.5).float()
    z = torch.randn(2, 1, 4, 4)
    assert tl.loss_fn(T.BCEWithLogits())(z, mask) == pytest.approx(float(torch.nn.functional.binary_cross_entropy_with_logits(z, mask)))
    perfect = tl.loss_fn(T.Dice(smooth=0.0))(mask * 100 - 50, mask)
    assert float(perfect) == pytest.approx(0.0, abs=1e-6)
    logp = torch.log_softmax(logits, 1)
    assert tl.loss_fn(T.NLL())(logp, y) == pytest.approx(float(torch.nn.functional.nll_loss(logp, y)))
    q = torch.softmax(torch.randn(6, 4), 1)
    assert tl.loss_fn(T.KLDiv())(logp, q) == pytest.approx(float(torch.nn.functional.kl_div(logp, q, reduction="batchmean")))


def _m(kind, **kw):
    return T.Metric(type=kind, **kw)


def test_classification_metrics_equal_sklearn():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 4, 200)
    logits = rng.standard_normal((200, 4)) + np.eye(4)[y] * 1.5
    pred = logits.argmax(1)
    assert M.compute(_m("accuracy"), logits, y) == pytest.approx(skm.accuracy_score(y, pred))
    for avg in ("macro", "micro"):
        assert M.compute(_m("f1", average=avg), logits, y, 4) == pytest.approx(skm.f1_score(y, pred, average=avg))
        assert M.compute(_m("precision", average=avg), logits, y, 4) == pytest.approx(skm.precision_score(y, pred, average=avg))
        assert M.compute(_m("recall", average=avg), logits, y, 4) == pytest.approx(skm.recall_score(y, pred, average=avg))
    assert M.compute(_m("top_k", k=2), logits, y) == pytest.approx(skm.top_k_accuracy_score(y, logits, k=2))


def test_binary_single_logit_and_sequence_labelling():
    y = np.array([0, 1, 1, 0, 1])
    z = np.array([[-1.0], [2.0], [-0.5], [-3.0], [0.1]])
    assert M.compute(_m("accuracy"), z, y) == pytest.approx(0.8)
    tags = np.array([[0, 1, 2], [2, 2, 0]])
    out = np.eye(3)[tags]  # [N, T, C], perfectly right
    assert M.compute(_m("accuracy"), out, tags) == 1.0
    out[0, 0] = [0, 0, 1]
    assert M.compute(_m("accuracy"), out, tags) == pytest.approx(5 / 6)


def test_regression_metrics_equal_sklearn():
    rng = np.random.default_rng(2)
    y = rng.standard_normal((50, 1))
    p = y + 0.3 * rng.standard_normal((50, 1))
    assert M.compute(_m("mse"), p, y) == pytest.approx(skm.mean_squared_error(y, p))
    assert M.compute(_m("mae"), p, y) == pytest.approx(skm.mean_absolute_error(y, p))
    assert M.compute(_m("r2"), p, y) == pytest.approx(skm.r2_score(y, p))


def test_segmentation_iou_and_dice():
    mask = np.zeros((1, 1, 4, 4), dtype=np.float32)
    mask[..., :2, :] = 1  # 8 pixels
    logits = np.full_like(mask, -5.0)
    logits[..., :1, :] = 5.0  # predicts 4 of them
    assert M.compute(_m("iou"), logits, mask) == pytest.approx(4 / 8)
    assert M.compute(_m("dice"), logits, mask) == pytest.approx(2 * 4 / (4 + 8))


def test_monitor_mode_defaults():
    assert M.default_mode("val_loss") == "min"
    assert M.default_mode("val_digit_loss") == "min"
    assert M.default_mode("val_accuracy") == "max"
    assert M.default_mode("mae") == "min"


def test_bce_pos_weight_weights_the_positives():
    import torch
    import torch.nn.functional as F

    from dlspec.ir.training import BCE
    from dlspec.train.torch_loop import loss_fn

    p = torch.rand(16, 1, generator=torch.Generator().manual_seed(0)) * 0.98 + 0.01
    y = (torch.arange(16) % 3 == 0).float().reshape(16, 1)
    logits = torch.log(p / (1 - p))
    want = F.binary_cross_entropy_with_logits(logits, y, pos_weight=torch.tensor(2.5))
    assert torch.allclose(loss_fn(BCE(pos_weight=2.5))(p, y), want, rtol=1e-5)
    assert not torch.allclose(loss_fn(BCE())(p, y), want, rtol=1e-3)


def test_one_cycle_with_an_optimizer_without_momentum():
    import torch

    from dlspec.ir.training import OneCycle
    from dlspec.train.torch_loop import make_schedule

    model = torch.nn.Linear(2, 1)
    opt = torch.optim.Adagrad(model.parameters(), lr=0.1)
    sched = make_schedule((OneCycle(max_lr=0.1),), opt, 2, 5)
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.after_step()
    assert max(lrs) > 10 * lrs[0] and lrs[-1] < max(lrs)


def test_recipe_json_reloads_configs_left_at_their_defaults():
    from dlspec.ir.training import TrainConfig
    from dlspec.program import compile_file
    from dlspec.train.run import recipe_json

    for spec in ("iris_mlp.dls", "digits_multitask.dls", "sunspots_gru.dls"):
        cfg = compile_file(spec_path(spec)).recipes[-1]
        again = TrainConfig.model_validate(recipe_json(cfg))
        assert again.loss == cfg.loss
        assert again.optimizer == cfg.optimizer
        assert type(again.data) is type(cfg.data)


def test_frozen_batchnorm_keeps_its_running_statistics():
    import torch
    from torch import nn

    from dlspec.train.torch_loop import frozen_batchnorm_to_inference

    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4))
    for p in [*model[0].parameters(), *model[1].parameters()]:
        p.requires_grad_(False)
    model.train()
    frozen_batchnorm_to_inference(model)
    before = model[1].running_mean.clone(), model[3].running_mean.clone()
    model(torch.randn(8, 1, 6, 6) + 3)
    assert not model[1].training and torch.equal(model[1].running_mean, before[0])
    assert model[3].training and not torch.equal(model[3].running_mean, before[1])
