"""`dlspec train --backend tf`: the TensorFlow trainer follows the PyTorch trainer's definitions
(schedules, optimizer rules, losses) to the number, writes the same run folder, resumes exactly,
and two tf.distribute replicas train the same weights as one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402
import torch  # noqa: E402
from click.testing import CliRunner  # noqa: E402

from dlspec import predict as predict_  # noqa: E402
from dlspec.cli import main  # noqa: E402
from dlspec.errors import DlspecError  # noqa: E402
from dlspec.ir import training as T  # noqa: E402
from dlspec.train import session  # noqa: E402
from dlspec.train import torch_loop as tl  # noqa: E402
from dlspec.train.tf_losses import make_loss  # noqa: E402
from dlspec.train.tf_optim import TorchRules  # noqa: E402
from dlspec.train.tf_schedules import LrSchedule  # noqa: E402
from dlspec.weights import load_numpy  # noqa: E402

from .helpers import ROOT, quiet  # noqa: E402

# ---- schedules: the same rates as torch's schedulers ---------------------------------------------

SCHEDULES = {
    "constant": (T.Constant(),),
    "step": (T.Step(step_size=3, gamma=0.5),),
    "multistep": (T.MultiStep(milestones=(2, 5, 7), gamma=0.3),),
    "exponential": (T.Exponential(gamma=0.8),),
    "cosine": (T.Cosine(),),
    "cosine_tmax": (T.Cosine(t_max=4, eta_min=1e-4),),
    "warmup_cosine": (T.Warmup(epochs=3, start_factor=0.1), T.Cosine()),
    "warmup_step": (T.Warmup(epochs=2), T.Step(step_size=2, gamma=0.5)),
    "warmup_multistep": (T.Warmup(epochs=2), T.MultiStep(milestones=(2, 4, 6), gamma=0.5)),
    "warmup_exponential": (T.Warmup(epochs=1), T.Exponential(gamma=0.9)),
    "warmup_only": (T.Warmup(epochs=4, start_factor=0.25),),
    "plateau": (T.Plateau(patience=1, factor=0.5, min_lr=2e-4),),
    "warmup_plateau": (T.Warmup(epochs=2), T.Plateau(patience=0, factor=0.5)),
    "plateau_max": (T.Plateau(monitor="val_accuracy", patience=1, factor=0.2),),
}


def _torch_groups(lrs):
    return [{"params": [torch.nn.Parameter(torch.zeros(2))], "lr": lr} for lr in lrs]


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_epoch_schedules_match_torch(name: str):
    parts, epochs, lrs = SCHEDULES[name], 10, [0.1, 0.02]
    opt = torch.optim.SGD(_torch_groups(lrs), lr=0.1)
    ref = tl.make_schedule(parts, opt, epochs, steps_per_epoch=5)
    ours = LrSchedule(parts, lrs, epochs, steps_per_epoch=5)
    monitored = [1.0, 0.9, 0.95, 0.97, 0.96, 0.99, 0.5, 0.6, 0.7, 0.8]
    for epoch in range(1, epochs + 1):
        want = [g["lr"] for g in opt.param_groups]
        np.testing.assert_allclose(ours.lrs(epoch), want, rtol=1e-12, atol=0, err_msg=f"epoch {epoch}")
        logs = {"val_loss": monitored[epoch - 1], "val_accuracy": 1 - monitored[epoch - 1]}
        opt.step()
        ref.after_epoch(epoch, logs)
        ours.after_epoch(epoch, logs)


@pytest.mark.parametrize("anneal", ["cos", "linear"])
@pytest.mark.parametrize("opt_name", ["sgd", "adam"])
def test_one_cycle_matches_torch_per_step_with_momentum(anneal: str, opt_name: str):
    part = T.OneCycle(max_lr=0.3, pct_start=0.25, anneal=anneal)
    epochs, spe = 3, 7
    opt = (torch.optim.SGD(_torch_groups([0.1]), lr=0.1, momentum=0.9) if opt_name == "sgd"
           else torch.optim.Adam(_torch_groups([0.1]), lr=0.1))
    ref = tl.make_schedule((part,), opt, epochs, spe)
    ours = LrSchedule((part,), [0.1], epochs, spe)
    for epoch in range(1, epochs + 1):
        for s in range(spe):
            g = opt.param_groups[0]
            assert ours.lrs(epoch, s)[0] == pytest.approx(g["lr"], rel=1e-12)
            m = g["momentum"] if opt_name == "sgd" else g["betas"][0]
            assert ours.momentum((epoch - 1) * spe + s) == pytest.approx(m, rel=1e-12)
            opt.step()
            ref.after_step()


# ---- optimizers: torch's update rules --------------------------------------------------------------

OPTIMIZERS = {
    "sgd": T.SGD(lr=0.1),
    "sgd_momentum_dampening_wd": T.SGD(lr=0.1, momentum=0.9, dampening=0.1, weight_decay=1e-2),
    "sgd_nesterov": T.SGD(lr=0.05, momentum=0.8, nesterov=True, weight_decay=5e-4),
    "adam": T.Adam(lr=1e-2),
    "adam_l2_amsgrad": T.Adam(lr=1e-2, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1, amsgrad=True),
    "adamw": T.AdamW(lr=1e-2, weight_decay=0.1),
    "rmsprop": T.RMSprop(lr=1e-2, alpha=0.9),
    "rmsprop_centered_momentum_wd": T.RMSprop(lr=1e-2, alpha=0.95, eps=1e-6, momentum=0.5, centered=True,
                                              weight_decay=1e-2),
    "adagrad": T.Adagrad(lr=0.1, lr_decay=0.01, weight_decay=1e-3),
}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_optimizer_rules_match_torch(name: str):
    cfg = OPTIMIZERS[name]
    rng = np.random.default_rng(0)
    start = [rng.normal(size=(3, 4)).astype(np.float32), rng.normal(size=(4,)).astype(np.float32)]
    grads = [[rng.normal(size=a.shape).astype(np.float32) for a in start] for _ in range(6)]
    rates = [cfg.lr, cfg.lr, cfg.lr * 0.5, cfg.lr * 0.5, cfg.lr * 0.1, cfg.lr * 2]  # a changing rate, too
    tp = [torch.nn.Parameter(torch.from_numpy(a.copy())) for a in start]
    topt = tl.make_optimizer(cfg, [{"params": tp, "lr": cfg.lr}])
    tv = [tf.Variable(a.copy()) for a in start]
    ours = TorchRules(cfg, tv, [0, 0], [cfg.lr])
    for g, lr in zip(grads, rates):
        for p, a in zip(tp, g):
            p.grad = torch.from_numpy(a.copy())
        topt.param_groups[0]["lr"] = lr
        topt.step()
        ours.set_rates([lr])
        ours.apply([tf.constant(a) for a in g])
    for p, v in zip(tp, tv):
        np.testing.assert_allclose(v.numpy(), p.detach().numpy(), rtol=2e-5, atol=2e-6)


def test_keras_sgd_is_not_torch_sgd_when_the_rate_changes():
    """Why the trainer carries its own rules: Keras' momentum keeps the rate inside the buffer."""
    import keras

    v0 = np.ones(3, np.float32)
    kv = keras.Variable(v0.copy())
    kopt = keras.optimizers.SGD(learning_rate=0.1, momentum=0.9)
    tv = tf.Variable(v0.copy())
    ours = TorchRules(T.SGD(lr=0.1, momentum=0.9), [tv], [0], [0.1])
    for lr in (0.1, 0.01):
        kopt.learning_rate = lr
        kopt.apply([tf.ones(3)], [kv])
        ours.set_rates([lr])
        ours.apply([tf.ones(3)])
    # torch: buf = 1, p = 1 - 0.1; buf = 1.9, p -= 0.01 * 1.9  → 0.881
    np.testing.assert_allclose(tv.numpy(), 0.881, rtol=1e-6)
    assert not np.allclose(kv.numpy(), tv.numpy(), rtol=1e-4)


# ---- losses: torch.nn.functional's definitions ------------------------------------------------------

def _loss_cases():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(6, 4)).astype(np.float32)
    labels = np.array([0, 1, 3, 2, 1, 3])
    seq_logits = rng.normal(size=(3, 5, 4)).astype(np.float32)
    seq_labels = rng.integers(0, 4, size=(3, 5))
    seq_labels[0, 0] = -100
    seg = rng.normal(size=(2, 1, 4, 4)).astype(np.float32)
    mask = (rng.random((2, 1, 4, 4)) > 0.5).astype(np.float32)
    seg_cls = rng.normal(size=(2, 3, 4, 4)).astype(np.float32)
    seg_lab = rng.integers(0, 3, size=(2, 4, 4))
    reg = rng.normal(size=(6, 1)).astype(np.float32)
    reg_y = (rng.normal(size=(6, 1)) * 2).astype(np.float32)
    probs = 1 / (1 + np.exp(-reg))
    bin_y = (rng.random((6, 1)) > 0.5).astype(np.float32)
    logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    target_p = np.exp(rng.normal(size=(6, 4))).astype(np.float32)
    target_p /= target_p.sum(1, keepdims=True)
    target_p[0, 0] = 0.0
    return [
        ("ce", T.CrossEntropy(), logits, labels),
        ("ce_smooth_weights", T.CrossEntropy(label_smoothing=0.1, class_weights=(1.0, 2.0, 0.5, 1.5)), logits, labels),
        ("ce_sequence_ignore", T.CrossEntropy(label_smoothing=0.2), seq_logits, seq_labels),
        ("ce_segmentation", T.CrossEntropy(class_weights=(1.0, 3.0, 0.5)), seg_cls, seg_lab),
        ("nll_weights", T.NLL(class_weights=(1.0, 2.0, 0.5, 1.5)), logp.astype(np.float32), labels),
        ("bce_logits", T.BCEWithLogits(), reg, bin_y),
        ("bce_logits_pos_weight", T.BCEWithLogits(pos_weight=3.0), reg, bin_y),
        ("bce", T.BCE(), probs.astype(np.float32), bin_y),
        ("bce_pos_weight", T.BCE(pos_weight=2.5), probs.astype(np.float32), bin_y),
        ("mse", T.MSE(), reg, reg_y),
        ("mae", T.MAE(), reg, reg_y),
        ("huber", T.Huber(delta=0.7), reg, reg_y),
        ("kl", T.KLDiv(), logp.astype(np.float32), target_p),
        ("kl_log_target", T.KLDiv(log_target=True), logp.astype(np.float32), np.log(target_p + 1e-3).astype(np.float32)),
        ("dice_sigmoid", T.Dice(), seg, mask),
        ("dice_softmax", T.Dice(smooth=0.5), seg_cls, seg_lab),
    ]


@pytest.mark.parametrize("case", _loss_cases(), ids=lambda c: c[0])
def test_losses_match_torch(case):
    _, cfg, out, y = case
    want = float(tl.loss_fn(cfg)(torch.from_numpy(out), torch.from_numpy(y)))
    num, den = make_loss(cfg)(tf.constant(out), tf.constant(y))
    assert float(num / den) == pytest.approx(want, rel=1e-5, abs=1e-6)


def test_a_split_batch_gives_the_whole_batch_loss():
    """Numerators add up over shards and denominators add up: the per-replica rule is exact."""
    cfg = T.CrossEntropy(label_smoothing=0.1, class_weights=(1.0, 2.0, 0.5, 1.5))
    rng = np.random.default_rng(2)
    out, y = rng.normal(size=(10, 4)).astype(np.float32), rng.integers(0, 4, size=10)
    f = make_loss(cfg)
    whole = f(tf.constant(out), tf.constant(y))
    a, b = f(tf.constant(out[:3]), tf.constant(y[:3])), f(tf.constant(out[3:]), tf.constant(y[3:]))
    assert float((a[0] + b[0]) / (a[1] + b[1])) == pytest.approx(float(whole[0] / whole[1]), rel=1e-6)


# ---- whole runs ---------------------------------------------------------------------------------------

TINY = '''
model Tiny(h: int = 16) {
    input x: float32[batch, 4]
    output x -> dense(h) as fc1 -> relu() -> dropout(0.3) -> dense(3) as head
}
train Tiny {
    data      = builtin("iris", split=[0.6, 0.2, 0.2])
    loss      = cross_entropy(label_smoothing=0.1)
    optimizer = sgd(lr=0.05, momentum=0.9, nesterov=true)
    schedule  = warmup(epochs=1) then cosine()
    epochs    = 5
    batch     = 16
    metrics   = [accuracy, macro_f1]
    checkpoint(every=1, keep=2)
    seed      = 3
}
'''

# no dropout: runs that must agree number for number
EXACT = '''
model Net {
    input x: float32[batch, 4]
    output x -> dense(16) as fc1 -> tanh() -> dense(3) as head
}
train Net {
    data      = builtin("iris", split=[0.6, 0.2, 0.2])
    loss      = cross_entropy(label_smoothing=0.1, class_weights=[1.0, 2.0, 0.5])
    optimizer = OPTIMIZER
    schedule  = warmup(epochs=1) then cosine()
    clip_grad = norm(0.5)
    l2        = 1e-3
    epochs    = 3
    batch     = BATCH
    metrics   = [accuracy]
    seed      = 1
}
'''


def _spec(tmp: Path, name: str, text: str) -> Path:
    path = tmp / f"{name}.dls"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("tiny")
    spec = _spec(tmp, "tiny", TINY)
    res = CliRunner().invoke(main, ["train", str(spec), "--backend", "tf", "--out", str(tmp / "run"), "--quiet"])
    assert res.exit_code == 0, res.output
    return spec, tmp / "run"


@pytest.mark.slow
def test_run_folder_is_the_torch_trainers(tiny_run):
    _, run = tiny_run
    for name in ("config.json", "graph.json", "model.py", "metrics.jsonl", "metrics.csv", "curves.png",
                 "best.safetensors", "best.json", "last.safetensors", "test_metrics.json"):
        assert (run / name).is_file(), name
    config = json.loads((run / "config.json").read_text())
    assert config["backend"] == "tf"
    log = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2, 3, 4, 5]
    assert {"loss", "accuracy", "macro_f1", "val_loss", "val_accuracy", "val_macro_f1", "lr", "time"} <= set(log[0])
    assert log[0]["lr"] == pytest.approx(0.05 * 0.01)  # warmup(epochs=1): the first epoch at 1 %
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["epoch-0004", "epoch-0005"]
    state = json.loads((run / "checkpoints" / "epoch-0005" / "state.json").read_text())
    assert state["backend"] == "tf" and state["epoch"] == 5


@pytest.mark.slow
def test_evaluate_and_predict_use_a_tf_run_like_any_other(tiny_run):
    _, run = tiny_run
    test = json.loads((run / "test_metrics.json").read_text())
    res = CliRunner().invoke(main, ["evaluate", str(run), "--json", "--device", "cpu"])  # PyTorch rebuilds the model
    assert res.exit_code == 0, res.output
    got = json.loads(res.output)["metrics"]
    assert got["accuracy"] == pytest.approx(test["accuracy"])
    assert got["loss"] == pytest.approx(test["loss"], abs=1e-5)
    x = run.parent / "x.npy"
    np.save(x, np.zeros((3, 4), np.float32))
    pred = predict_.predict(run, x)
    assert [v.shape for v in pred.values()] == [(3, 3)]


@pytest.mark.slow
def test_resume_continues_exactly(tiny_run, tmp_path: Path):
    spec, full = tiny_run

    def interrupt_in_epoch_4(line: str) -> None:
        if line.startswith("epoch 4/"):
            raise KeyboardInterrupt

    with pytest.raises(DlspecError) as info:
        session.train(spec, out=tmp_path / "cut", progress=False, echo=interrupt_in_epoch_4, backend="tf")
    assert info.value.code == "E634" and "--backend tf" in info.value.hint
    assert sorted(p.name for p in (tmp_path / "cut" / "checkpoints").iterdir()) == ["epoch-0002", "epoch-0003"]
    resumed = session.train(spec, out=tmp_path / "cut", resume=True, progress=False, echo=quiet, backend="tf")
    assert resumed.epochs_run == 5
    a, b = load_numpy(full / "last.safetensors"), load_numpy(tmp_path / "cut" / "last.safetensors")
    assert a.keys() == b.keys()
    for k in a:  # dropout seeds, optimizer slots and rates all continue where they were
        np.testing.assert_allclose(b[k], a[k], rtol=0, atol=1e-7, err_msg=k)
    with pytest.raises(DlspecError) as info:  # a tf run's checkpoints are not the torch trainer's
        session.train(spec, out=tmp_path / "cut", resume=True, progress=False, echo=quiet, backend="torch")
    assert info.value.code == "E683"
    torch_run = tmp_path / "torch"
    session.train(spec, out=torch_run, epochs=1, progress=False, echo=quiet)
    with pytest.raises(DlspecError) as info:
        session.train(spec, out=torch_run, resume=True, progress=False, echo=quiet, backend="tf")
    assert info.value.code == "E683"


@pytest.mark.parametrize("optimizer,schedule", [
    ("adam(lr=0.05, weight_decay=1e-2)", None),  # the fast tier's case; the others train in the slow tier
    pytest.param("sgd(lr=0.2, momentum=0.9, nesterov=true)", None, marks=pytest.mark.slow),
    pytest.param("rmsprop(lr=0.01, momentum=0.5, centered=true)", None, marks=pytest.mark.slow),
    pytest.param("adam(lr=0.01)", "one_cycle(max_lr=0.05, pct_start=0.4)", marks=pytest.mark.slow),  # cycles beta1 too
    pytest.param("adagrad(lr=0.1, lr_decay=0.01)", "multistep(milestones=[2], gamma=0.5)", marks=pytest.mark.slow),
    pytest.param("adamw(lr=0.02)", "warmup(epochs=1) then plateau(monitor=loss, patience=0, factor=0.5)",
                 marks=pytest.mark.slow),
])
def test_same_weights_as_the_torch_trainer(optimizer: str, schedule: str | None, tmp_path: Path):
    """One full batch per epoch and no dropout: both trainers must take the same steps."""
    from dlspec.backends import keras as kb
    from dlspec.backends import torch as tb
    from dlspec.data import load_data
    from dlspec.program import compile_file
    from dlspec.train.tf_loop import Trainer

    text = EXACT.replace("OPTIMIZER", optimizer).replace("BATCH", "1000")
    if schedule:
        text = text.replace("warmup(epochs=1) then cosine()", schedule).replace("epochs    = 3", "epochs    = 4")
    spec = _spec(tmp_path, "exact", text)
    prog = compile_file(spec)
    cfg = prog.recipes[-1]
    graph = prog.recipe_graphs[cfg.name]
    bundle = load_data(cfg.data, cfg.seed, tmp_path)
    ref = tl.Trainer(graph, cfg, bundle, tmp_path / "torch", torch.device("cpu"), cfg.seed, progress=False, echo=quiet)
    start = {k: v.copy() for k, v in tb.canonical_state(ref.model, graph).items()}  # not views of the live weights
    ref.fit()
    ours = Trainer(graph, cfg, bundle, tmp_path / "tf", "/CPU:0", progress=False, echo=quiet)
    kb.set_weights(ours.model, graph, start)
    ours.fit()
    a, b = load_numpy(tmp_path / "torch" / "last.safetensors"), load_numpy(tmp_path / "tf" / "last.safetensors")
    for k in a:
        np.testing.assert_allclose(b[k], a[k], rtol=1e-4, atol=2e-5, err_msg=k)
    logs = [[json.loads(r) for r in (tmp_path / d / "metrics.jsonl").read_text().splitlines()] for d in ("torch", "tf")]
    for r, s in zip(*logs):
        assert s["loss"] == pytest.approx(r["loss"], rel=1e-4)
        assert s["val_loss"] == pytest.approx(r["val_loss"], rel=1e-4)
        assert s["lr"] == r["lr"]


@pytest.mark.slow
def test_two_replicas_train_the_same_weights_as_one(tmp_path: Path):
    """tf.distribute: 2 logical-CPU replicas, each with half of the global batch (the last batch of
    10 as 5 + 5), reach the weights of one replica — batch-norm included, with --sync-bn. The
    2-replica run needs its own process (the logical devices are fixed when TensorFlow starts)."""
    text = EXACT.replace("OPTIMIZER", "sgd(lr=0.1, momentum=0.9)").replace("BATCH", "16")
    spec = _spec(tmp_path, "dp", text.replace("-> tanh()", "-> batchnorm1d() as bn -> tanh()"))
    session.train(spec, out=tmp_path / "one", epochs=2, progress=False, echo=quiet, backend="tf")
    proc = subprocess.run([sys.executable, "-m", "dlspec.cli", "train", str(spec), "--backend", "tf", "--nproc", "2",
                           "--sync-bn", "--epochs", "2", "--out", str(tmp_path / "two"), "--quiet"],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 replicas" in proc.stderr and "1 batch-norm layer(s) normalize over the global batch" in proc.stderr
    a, b = load_numpy(tmp_path / "one" / "last.safetensors"), load_numpy(tmp_path / "two" / "last.safetensors")
    for k in a:
        np.testing.assert_allclose(b[k], a[k], rtol=0, atol=1e-5, err_msg=k)
    assert not np.allclose(a["head.weight"], load_numpy(tmp_path / "one" / "checkpoints" / "epoch-0001"
                                                        / "model.safetensors")["head.weight"])


def test_nan_loss_stops_before_the_update(tmp_path: Path):
    spec = _spec(tmp_path, "nan", EXACT.replace("OPTIMIZER", "sgd(lr=1e30)").replace("BATCH", "16")
                 .replace("clip_grad = norm(0.5)", ""))
    with pytest.raises(DlspecError) as info:
        session.train(spec, out=tmp_path / "run", progress=False, echo=quiet, backend="tf")
    assert info.value.code == "E630" and "epoch 1" in info.value.message


@pytest.mark.slow
def test_devices_and_precision(tmp_path: Path):
    import keras

    from dlspec.train import tf_runtime

    if tf.config.list_physical_devices("GPU"):
        assert tf_runtime.pick_device("gpu") == "/GPU:0"
    else:
        with pytest.raises(DlspecError) as info:
            tf_runtime.pick_device("cuda")
        assert info.value.code == "E906"
    assert tf_runtime.pick_device("cpu") == "/CPU:0"
    spec = _spec(tmp_path, "bf16", TINY.replace("seed      = 3", "seed      = 3\n    precision = bf16"))
    from dlspec.program import compile_file
    from dlspec.train.tf_loop import Trainer

    prog = compile_file(spec)
    cfg = prog.recipes[-1].model_copy(update={"epochs": 1})
    from dlspec.data import load_data

    trainer = Trainer(prog.recipe_graphs[cfg.name], cfg, load_data(cfg.data, 3, tmp_path), tmp_path / "run", "/CPU:0",
                      progress=False, echo=quiet)
    dense = trainer.model.get_layer("fc1")
    assert dense.compute_dtype == "bfloat16" and dense.kernel.dtype == "float32"  # weights stay fp32
    assert keras.mixed_precision.global_policy().name == "float32"  # restored for everything else
    out = trainer.fit()
    assert np.isfinite(out.test["loss"])


@pytest.mark.slow
def test_freeze_unfreeze_and_transfer(tiny_run, tmp_path: Path):
    _, base_run = tiny_run
    base = base_run / "best.safetensors"
    spec = _spec(tmp_path, "ft", TINY + f'''
model TinyFT from Tiny {{
    weights = "{base}"
    freeze "fc1.*"
    replace head = dense(2)
}}
train TinyFT {{
    data      = builtin("iris", classes=[0, 1], split=[0.6, 0.2, 0.2])
    optimizer = adam(lr=1e-2)
    lr_groups = {{"head": 0.05}}
    unfreeze  = {{"2": ["fc1.*"]}}
    epochs    = 2
    batch     = 16
    checkpoint(every=1, keep=2)
}}
''')
    session.train(spec, model="TinyFT", out=tmp_path / "run", progress=False, echo=quiet, backend="tf")
    start = load_numpy(base)
    first = load_numpy(tmp_path / "run" / "checkpoints" / "epoch-0001" / "model.safetensors")
    last = load_numpy(tmp_path / "run" / "last.safetensors")
    np.testing.assert_array_equal(first["fc1.weight"], start["fc1.weight"])  # frozen in epoch 1
    assert not np.allclose(last["fc1.weight"], start["fc1.weight"])  # unfrozen from epoch 2
    assert first["head.weight"].shape == (2, 16)


@pytest.mark.slow
def test_digits_cnn_learns_in_two_epochs(tmp_path: Path):
    out = session.train(ROOT / "specs" / "digits_cnn.dls", epochs=2, out=tmp_path / "run", progress=False, echo=quiet,
                        backend="tf")
    log = [json.loads(r) for r in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert log[1]["val_accuracy"] > 0.6 and log[1]["loss"] < log[0]["loss"]
    assert out.test["accuracy"] > 0.6
