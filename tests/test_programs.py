"""Training programs beyond one model: GANs, distillation, transfer learning with gradual
unfreezing, feature extraction and multi-task heads, each trained for an epoch or two on a few
hundred built-in digits (seconds each), through the same session API and commands as
`dlspec train`, `dlspec sample` and `dlspec features`."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from dlspec import compile_file
from dlspec import predict as predict_
from dlspec.cli import main
from dlspec.errors import DlspecError
from dlspec.train import gan, session
from dlspec.train.distill import kd_loss, student_recipe
from dlspec.weights import load_numpy

from .helpers import SPEC_DIR, quiet

SMALL_GAN = """
model Gen(latent: int = 8) {
    input z: float32[batch, latent]
    image = z -> dense(16 * 4 * 4, bias=false) as project -> reshape([16, 4, 4])
        -> batchnorm2d() as bn0 -> relu()
        -> conv_transpose2d(1, 4, stride=2, padding=1) as up -> sigmoid()
    output image
}

model Dis {
    input image: float32[batch, 1, 8, 8]
    logit = image -> conv2d(16, 4, stride=2, padding=1) as conv -> leaky_relu(0.2)
        -> flatten() -> dense(1) as critic
    output logit
}

train gan Small {
    generator     = Gen()
    discriminator = Dis()
    data          = builtin("digits", samples=192, split=[0.9, 0.1])
    loss          = LOSS
    EXTRA
    epochs        = 2
    batch         = 32
    sample_grid   = 16
    checkpoint(every=1, keep=3)
    seed          = 3
}
"""


def gan_spec(folder: Path, loss: str = "standard", extra: str = "label_smoothing = 0.1") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"gan_{loss}.dls"
    path.write_text(SMALL_GAN.replace("LOSS", loss).replace("EXTRA", extra))
    return path


@pytest.fixture(scope="module")
def gan_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("gan")
    out = session.train(gan_spec(root), out=root / "run", progress=False, echo=quiet)
    assert out.epochs_run == 2
    return root / "run"


# ---- GAN -------------------------------------------------------------------------------------


@pytest.mark.slow
def test_gan_run_folder_holds_both_networks_samples_and_logs(gan_run: Path):
    for name in ("generator.safetensors", "discriminator.safetensors", "generator.json", "discriminator.json",
                 "graph.json", "config.json", "metrics.jsonl", "metrics.csv", "curves.png",
                 "samples/epoch_001.png", "samples/epoch_002.png"):
        assert (gan_run / name).is_file(), name
    records = [json.loads(line) for line in (gan_run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    for r in records:
        for k in ("d_loss", "g_loss", "d_real", "d_fake", "sample_diversity"):
            assert math.isfinite(r[k]), k
        assert 0.0 < r["d_real"] < 1.0 and 0.0 < r["d_fake"] < 1.0  # probabilities for the standard loss
        assert r["mode_collapse"] in (0, 1)
    ckpt = gan_run / "checkpoints" / "epoch-0002"
    assert {p.name for p in ckpt.iterdir()} == {"generator.safetensors", "discriminator.safetensors",
                                                 "state.safetensors", "state.json", "manifest.json"}
    state = json.loads((ckpt / "state.json").read_text())
    assert set(state["optimizers"]) == {"g", "d"}
    from PIL import Image

    with Image.open(gan_run / "samples" / "epoch_002.png") as img:  # a 4×4 grid of 8×8 digits, enlarged 4×
        assert img.size == ((4 * (8 + 1) + 1) * 4,) * 2


@pytest.mark.slow
def test_gan_resume_reaches_the_uninterrupted_weights(gan_run: Path, tmp_path: Path):
    part = tmp_path / "part"
    shutil.copytree(gan_run, part)
    shutil.rmtree(part / "checkpoints" / "epoch-0002")
    lines: list[str] = []
    session.train(gan_spec(tmp_path), out=part, resume=True, progress=False, echo=lines.append)
    assert any("resuming after epoch 1" in line for line in lines)
    for role in ("generator", "discriminator"):
        a, b = load_numpy(gan_run / f"{role}.safetensors"), load_numpy(part / f"{role}.safetensors")
        for k in a:
            np.testing.assert_array_equal(a[k], b[k], err_msg=f"{role} {k}")
    assert len((part / "metrics.jsonl").read_text().splitlines()) == 2


@pytest.mark.slow
@pytest.mark.parametrize("loss,extra", [("hinge", "d_steps = 2"), ("wgan_gp", "gp_weight = 5.0\n    d_steps = 2")])
def test_other_gan_losses_train(loss: str, extra: str, tmp_path: Path):
    out = session.train(gan_spec(tmp_path, loss, extra), epochs=1, out=tmp_path / "run", progress=False, echo=quiet)
    rec = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    assert all(math.isfinite(rec[k]) for k in ("d_loss", "g_loss", "d_real", "d_fake"))
    assert out.epochs_run == 1


def _tiny_trainer(tmp_path: Path, loss: str = "standard", extra: str = "label_smoothing = 0.1") -> gan.GanTrainer:
    from dlspec.data import load_data

    spec = gan_spec(tmp_path, loss, extra)
    program = compile_file(spec)
    (cfg,) = program.recipes
    g, d = gan.role_graphs(program, cfg)
    return gan.GanTrainer(g, d, cfg, load_data(cfg.data, cfg.seed), tmp_path / "run", torch.device("cpu"),
                          progress=False, echo=quiet)


def test_standard_loss_smooths_only_the_real_targets(tmp_path: Path):
    import torch.nn.functional as F

    t = _tiny_trainer(tmp_path)
    real, fake = t.real[:8], torch.rand(8, 1, 8, 8)
    loss, d_real, d_fake = t.d_loss(real, fake)
    s_real, s_fake = t.dis(real).reshape(-1), t.dis(fake).reshape(-1)
    want = F.binary_cross_entropy_with_logits(s_real, torch.full((8,), 0.9)) + \
        F.binary_cross_entropy_with_logits(s_fake, torch.zeros(8))
    assert torch.allclose(loss, want)
    assert torch.allclose(d_real, torch.sigmoid(s_real).mean()) and torch.allclose(d_fake, torch.sigmoid(s_fake).mean())
    g = t.g_loss(fake)  # non-saturating: the generator wants D(G(z)) = 1, unsmoothed
    assert torch.allclose(g, F.binary_cross_entropy_with_logits(t.dis(fake).reshape(-1), torch.ones(8)))


def test_hinge_and_wgan_gp_losses(tmp_path: Path):
    real, fake = torch.rand(8, 1, 8, 8), torch.rand(8, 1, 8, 8)
    h = _tiny_trainer(tmp_path / "h", "hinge", "")
    loss, _, _ = h.d_loss(real, fake)
    sr, sf = h.dis(real).reshape(-1), h.dis(fake).reshape(-1)
    assert torch.allclose(loss, torch.relu(1 - sr).mean() + torch.relu(1 + sf).mean())
    w = _tiny_trainer(tmp_path / "w", "wgan_gp", "gp_weight = 10.0")
    torch.manual_seed(0)
    loss, d_real, d_fake = w.d_loss(real, fake)
    assert loss.item() > (d_fake - d_real).item()  # the gradient penalty is positive
    assert torch.allclose(w.g_loss(fake), -w.dis(fake).reshape(-1).mean())


def test_nan_loss_stops_the_gan(tmp_path: Path, monkeypatch):
    t = _tiny_trainer(tmp_path)
    monkeypatch.setattr(t, "g_loss", lambda fake: fake.sum() * float("nan"))
    with pytest.raises(DlspecError) as info:
        t.train_epoch(1)
    assert info.value.code == "E643"


@pytest.mark.parametrize("loss,extra", [("hinge", "label_smoothing = 0.1"), ("standard", "early_stop(patience=2)"),
                                        ("standard", "d_steps = 0")])
def test_gan_settings_it_cannot_honour_are_refused(loss: str, extra: str, tmp_path: Path):
    with pytest.raises(DlspecError) as info:
        session.train(gan_spec(tmp_path, loss, extra), out=tmp_path / "run", progress=False, echo=quiet)
    assert info.value.code == "E644"
    assert not (tmp_path / "run").exists()


def test_mode_collapse_flag_on_synthetic_samples():
    rng = np.random.default_rng(0)
    data = rng.random((64, 1, 8, 8))
    assert gan.diversity_ratio(data[:32], data[32:]) == pytest.approx(1.0, abs=0.1)
    assert not gan.is_mode_collapse(gan.diversity_ratio(data[:32], data[32:]))
    one = np.repeat(data[:1], 32, axis=0) + rng.normal(0, 0.01, (32, 1, 8, 8))  # every z gives the same image
    assert gan.diversity_ratio(one, data) < 0.1 and gan.is_mode_collapse(gan.diversity_ratio(one, data))
    two = np.concatenate([np.repeat(data[:1], 16, 0), np.repeat(data[1:2], 16, 0)])  # two images only:
    assert 0.35 < gan.diversity_ratio(two, data) < 0.7  # about half the pairs differ; below the flag's reach
    assert not gan.is_mode_collapse(gan.diversity_ratio(two, data))
    assert gan.is_mode_collapse(float("nan"))
    a = rng.random((5, 3))
    brute = np.mean([np.linalg.norm(a[i] - a[j]) for i in range(5) for j in range(i + 1, 5)])
    assert gan.mean_pairwise_distance(a) == pytest.approx(brute)


@pytest.mark.slow
def test_sample_command(gan_run: Path, tmp_path: Path):
    runner = CliRunner()
    res = runner.invoke(main, ["sample", str(gan_run), "-n", "5", "-o", str(tmp_path / "s"), "--seed", "4", "--grid"])
    assert res.exit_code == 0, res.output
    names = {p.name for p in (tmp_path / "s").iterdir()}
    assert names == {"grid.png", "samples.npz"} | {f"sample_{i:04d}.png" for i in range(5)}
    with np.load(tmp_path / "s" / "samples.npz", allow_pickle=False) as z:
        assert z["z"].shape == (5, 8) and z["samples"].shape == (5, 1, 8, 8)
        assert 0.0 <= z["samples"].min() and z["samples"].max() <= 1.0
        first = z["samples"]
    again = runner.invoke(main, ["sample", str(gan_run), "-n", "5", "-o", str(tmp_path / "t"), "--seed", "4"])
    assert again.exit_code == 0
    with np.load(tmp_path / "t" / "samples.npz") as z:  # same seed, same samples
        np.testing.assert_array_equal(z["samples"], first)
    taken = runner.invoke(main, ["sample", str(gan_run), "-n", "5", "-o", str(tmp_path / "s")])
    assert taken.exit_code == 1 and "E651" in taken.output


@pytest.mark.slow
def test_sample_errors(gan_run: Path, multitask_run: Path, tmp_path: Path):
    runner = CliRunner()
    res = runner.invoke(main, ["sample", str(multitask_run), "-n", "2", "-o", str(tmp_path / "a")])
    assert res.exit_code == 1 and "E649" in res.output
    bare = tmp_path / "bare"
    shutil.copytree(gan_run, bare, ignore=shutil.ignore_patterns("*.safetensors", "checkpoints"))
    res = runner.invoke(main, ["sample", str(bare), "-n", "2", "-o", str(tmp_path / "b")])
    assert res.exit_code == 1 and "E645" in res.output
    assert not (tmp_path / "b").exists()


@pytest.mark.slow
def test_evaluate_and_predict_a_gan_run(gan_run: Path, tmp_path: Path):
    metrics = session.evaluate(gan_run, split="val")
    assert set(metrics) == {"d_real", "d_fake", "sample_diversity"}
    np.save(tmp_path / "z.npy", np.zeros((3, 8), np.float32))
    out = predict_.predict(gan_run, tmp_path / "z.npy")  # graph.json is the generator's
    assert out["image"].shape == (3, 1, 8, 8)


# ---- distillation ---------------------------------------------------------------------------------

TEACHER = """
model Teacher {
    input image: float32[batch, 1, 8, 8]
    logits = image -> flatten() -> dense(64) as fc -> relu() -> dense(10) as head
    output logits
}

train Teacher {
    data      = builtin("digits", samples=300)
    optimizer = adam(lr=3e-3)
    epochs    = 2
    batch     = 32
    seed      = 0
}
"""

DISTILL = """
import "teacher.dls"

model Student {
    input image: float32[batch, 1, 8, 8]
    logits = image -> flatten() -> dense(10) as head
    output logits
}

train distill Distil {
    teacher         = Teacher()
    student         = Student()
    teacher_weights = "runs/teacher"
    temperature     = 3.0
    alpha           = 0.6
    data            = builtin("digits", samples=300)
    optimizer       = adam(lr=3e-3)
    epochs          = 1
    batch           = 32
    metrics         = [accuracy]
    seed            = 0
}
"""


def test_kd_loss_is_t_squared_kl_teacher_to_student():
    s, t = torch.randn(6, 10), torch.randn(6, 10)
    T = 3.0
    want = torch.nn.functional.kl_div(torch.log_softmax(s / T, 1), torch.softmax(t / T, 1), reduction="batchmean") * T * T
    assert torch.allclose(kd_loss(s, t, T), want, atol=1e-6)
    assert kd_loss(t, t, T).abs() < 1e-6


@pytest.mark.slow
def test_distillation_trains_the_student_from_a_frozen_teacher(tmp_path: Path):
    (tmp_path / "teacher.dls").write_text(TEACHER)
    (tmp_path / "distill.dls").write_text(DISTILL)
    with pytest.raises(DlspecError) as info:  # no teacher yet
        session.train(tmp_path / "distill.dls", out=tmp_path / "early", progress=False, echo=quiet)
    assert info.value.code == "E648"
    session.train(tmp_path / "teacher.dls", out=tmp_path / "runs" / "teacher", progress=False, echo=quiet)
    before = (tmp_path / "runs" / "teacher" / "best.safetensors").read_bytes()
    lines: list[str] = []
    out = session.train(tmp_path / "distill.dls", out=tmp_path / "student", progress=False, echo=lines.append)
    assert any("teacher Teacher from" in line and "temperature 3.0, alpha 0.6" in line for line in lines)
    assert out.epochs_run == 1 and math.isfinite(out.test["loss"]) and 0 <= out.test["accuracy"] <= 1
    assert (tmp_path / "runs" / "teacher" / "best.safetensors").read_bytes() == before
    assert set(load_numpy(tmp_path / "student" / "best.safetensors")) == {"head.weight", "head.bias"}
    assert json.loads((tmp_path / "student" / "config.json").read_text())["kind"] == "distill"
    again = session.evaluate(tmp_path / "student")  # the student alone, on the hard loss
    assert again["accuracy"] == pytest.approx(out.test["accuracy"])


def test_distillation_recipe_and_the_student_alone_share_every_setting():
    (cfg,) = compile_file(SPEC_DIR / "digits_distill.dls").recipes
    alone = student_recipe(cfg)
    assert alone.model == cfg.student and alone.kind == "supervised"
    for k in ("data", "loss", "optimizer", "schedule", "epochs", "batch", "metrics", "early_stop", "seed"):
        assert getattr(alone, k) == getattr(cfg, k), k


# ---- transfer learning, gradual unfreezing, features ---------------------------------------------

BASE = """
block Stage(out: int) {
    conv2d(out, 3, padding=1, bias=false) as conv
    batchnorm2d() as bn
    relu()
    maxpool2d(2)
}

model Base(classes: int = 5) {
    input image: float32[batch, 1, 8, 8]
    logits = image -> Stage(8) as features -> flatten() -> dense(16) as fc -> relu() -> dense(classes) as head
    output logits
}

train Base {
    data      = builtin("digits", classes=[0, 1, 2, 3, 4], samples=400)
    optimizer = adam(lr=3e-3)
    epochs    = 1
    batch     = 32
    seed      = 0
}
"""

TUNED = """
import "base.dls"

model Tuned from Base(classes=5) {
    weights = "runs/base"
    freeze "features.*"
    replace head = dense(5)
}

train Tuned {
    data      = builtin("digits", classes=[5, 6, 7, 8, 9], per_class=12, samples=600)
    optimizer = adam(lr=2e-3)
    schedule  = cosine()
    lr_groups = {"features.*": 5e-4}
    unfreeze  = {"2": ["features.*"]}
    epochs    = 3
    batch     = 16
    metrics   = [accuracy]
    checkpoint(every=1, keep=3)
    seed      = 0
}
"""


@pytest.fixture(scope="module")
def transfer(tmp_path_factory):
    root = tmp_path_factory.mktemp("transfer")
    (root / "base.dls").write_text(BASE)
    (root / "tuned.dls").write_text(TUNED)
    session.train(root / "base.dls", out=root / "runs" / "base", progress=False, echo=quiet)
    lines: list[str] = []
    session.train(root / "tuned.dls", out=root / "tuned", progress=False, echo=lines.append)
    return root, lines


@pytest.mark.slow
def test_a_run_folder_is_a_base_and_frozen_layers_keep_its_weights_until_unfrozen(transfer):
    root, lines = transfer
    assert compile_file(root / "tuned.dls").recipe_graphs["Tuned"].base_weights == \
        str(root / "runs" / "base" / "best.safetensors")
    assert any("fresh weights for: head" in line for line in lines)
    assert any("epoch 2: unfroze 3 parameter tensors (features.*)" in line for line in lines)
    base = load_numpy(root / "runs" / "base" / "best.safetensors")
    from safetensors.numpy import load_file

    epoch1 = load_file(str(root / "tuned" / "checkpoints" / "epoch-0001" / "model.safetensors"))
    epoch3 = load_file(str(root / "tuned" / "checkpoints" / "epoch-0003" / "model.safetensors"))
    np.testing.assert_array_equal(epoch1["features.conv.weight"], base["features.conv.weight"])  # frozen in epoch 1
    assert not np.array_equal(epoch3["features.conv.weight"], base["features.conv.weight"])  # trained from epoch 2
    assert not np.array_equal(epoch1["fc.weight"], base["fc.weight"])  # never frozen
    state = json.loads((root / "tuned" / "checkpoints" / "epoch-0003" / "state.json").read_text())
    groups = state["optimizer"]["param_groups"]
    assert len(groups) == 2 and groups[1]["initial_lr"] == 5e-4  # the lr_groups rate, under the schedule


@pytest.mark.slow
def test_resume_after_an_unfreeze_epoch_restores_the_parameter_groups(transfer, tmp_path: Path):
    root, _ = transfer
    part = root / "tuned-part"
    shutil.copytree(root / "tuned", part)
    shutil.rmtree(part / "checkpoints" / "epoch-0003")
    session.train(root / "tuned.dls", out=part, resume=True, progress=False, echo=quiet)
    a, b = load_numpy(root / "tuned" / "last.safetensors"), load_numpy(part / "last.safetensors")
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    shutil.rmtree(part)


@pytest.mark.slow
def test_every_mismatch_with_the_base_weights_is_reported(transfer, tmp_path: Path):
    root, _ = transfer
    (tmp_path / "base.dls").write_text(BASE.replace("Stage(8) as features", "Stage(12) as features"))
    spec = tmp_path / "wide.dls"
    spec.write_text(f'import "base.dls"\n\nmodel Wide from Base(classes=7) {{\n'
                    f'    weights = "{root / "runs" / "base"}"\n}}\n')
    with pytest.raises(DlspecError) as info:
        compile_file(spec)
    names = {d.message.split("`")[1] for d in info.value.diagnostics if d.code == "E508"}
    assert names == {"features.conv.weight", "features.bn.weight", "features.bn.bias", "features.bn.running_mean",
                     "features.bn.running_var", "fc.weight", "head.weight", "head.bias"}


@pytest.mark.slow
def test_fine_tune_from_a_model_imported_from_onnx(transfer, tmp_path: Path):
    from dlspec.backends.onnx import model_bytes

    root, _ = transfer
    base = load_numpy(root / "runs" / "base" / "best.safetensors")
    graph = compile_file(root / "base.dls").recipe_graphs["Base"]
    (tmp_path / "base.onnx").write_bytes(model_bytes(graph, weights=base))
    res = CliRunner().invoke(main, ["import", str(tmp_path / "base.onnx"), "-o", str(tmp_path / "imported.dls"),
                                    "--name", "Imported"])
    assert res.exit_code == 0, res.output
    imported = load_numpy(tmp_path / "imported.safetensors")
    conv = next(k for k in imported if k.endswith("conv.weight"))
    np.testing.assert_array_equal(imported[conv], base["features.conv.weight"])
    layer = conv.rsplit(".", 1)[0]
    (tmp_path / "tuned.dls").write_text(TUNED.replace('import "base.dls"', 'import "imported.dls"')
                                        .replace("from Base(classes=5)", "from Imported")
                                        .replace('weights = "runs/base"', 'weights = "imported.safetensors"')
                                        .replace('freeze "features.*"', f'freeze "{layer}"')
                                        .replace("    lr_groups = {\"features.*\": 5e-4}\n", "")
                                        .replace("    unfreeze  = {\"2\": [\"features.*\"]}\n", ""))
    out = session.train(tmp_path / "tuned.dls", epochs=1, out=tmp_path / "run", progress=False, echo=quiet)
    assert out.epochs_run == 1 and math.isfinite(out.test["loss"])
    tuned = load_numpy(tmp_path / "run" / "last.safetensors")
    np.testing.assert_array_equal(tuned[conv], base["features.conv.weight"])  # frozen: the ONNX model's values


@pytest.mark.slow
def test_features_of_a_run_of_a_layer_and_of_a_file(transfer, tmp_path: Path):
    root, _ = transfer
    runner = CliRunner()
    res = runner.invoke(main, ["features", str(root / "tuned"), "-o", str(tmp_path / "f.npz")])
    assert res.exit_code == 0, res.output
    with np.load(tmp_path / "f.npz", allow_pickle=False) as z:
        n = len(z["labels"])
        assert z["features"].shape == (n, 16)  # what the head reads
        assert set(np.unique(z["split"])) == {"train", "val", "test"}
        assert set(np.unique(z["labels"])) == set(range(5))
    res = runner.invoke(main, ["features", str(root / "tuned"), "--layer", "features", "--data", "test",
                               "-o", str(tmp_path / "g.npz")])
    assert res.exit_code == 0, res.output
    with np.load(tmp_path / "g.npz") as z:
        assert z["features"].shape[1:] == (8, 4, 4) and set(np.unique(z["split"])) == {"test"}
    x = np.random.default_rng(0).random((7, 1, 8, 8)).astype(np.float32)
    np.savez(tmp_path / "x.npz", x=x, y=np.arange(7))
    res = runner.invoke(main, ["features", str(root / "tuned.dls"), "--data", str(tmp_path / "x.npz"),
                               "-o", str(tmp_path / "h.npz")])  # a spec: the frozen base's weights
    assert res.exit_code == 0, res.output
    with np.load(tmp_path / "h.npz") as z:
        assert z["features"].shape == (7, 16) and z["labels"].tolist() == list(range(7))
    import torch.nn.functional as F

    w = {k: torch.from_numpy(v) for k, v in load_numpy(root / "runs" / "base" / "best.safetensors").items()}
    h = F.conv2d(torch.from_numpy(x), w["features.conv.weight"], padding=1)
    h = F.batch_norm(h, w["features.bn.running_mean"], w["features.bn.running_var"], w["features.bn.weight"],
                     w["features.bn.bias"], training=False)
    h = F.max_pool2d(torch.relu(h), 2).flatten(1)
    want = torch.relu(F.linear(h, w["fc.weight"], w["fc.bias"]))
    with np.load(tmp_path / "h.npz") as z:
        np.testing.assert_allclose(z["features"], want.numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_features_errors(transfer, tmp_path: Path):
    root, _ = transfer
    runner = CliRunner()
    res = runner.invoke(main, ["features", str(root / "tuned"), "--layer", "featurs", "-o", str(tmp_path / "f.npz")])
    assert res.exit_code == 1 and "E652" in res.output and "did you mean `features`" in res.output
    res = runner.invoke(main, ["features", str(root / "base.dls"), "-o", str(tmp_path / "f.npz")])
    assert res.exit_code == 1 and "E654" in res.output
    assert not (tmp_path / "f.npz").exists()


# ---- multi-task -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def multitask_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("multitask")
    spec = root / "mt.dls"
    spec.write_text((SPEC_DIR / "digits_multitask.dls").read_text()
                    .replace('from "digits_cnn.dls"', f'from "{SPEC_DIR / "digits_cnn.dls"}"')
                    .replace('builtin("digits_multitask", ', 'builtin("digits_multitask", samples=400, '))
    session.train(spec, epochs=1, out=root / "run", progress=False, echo=quiet)
    return root / "run"


@pytest.mark.slow
def test_multitask_logs_each_heads_loss_and_metrics(multitask_run: Path):
    (rec,) = [json.loads(line) for line in (multitask_run / "metrics.jsonl").read_text().splitlines()]
    for k in ("digit_loss", "parity_loss", "digit_accuracy", "parity_accuracy",
              "val_digit_loss", "val_parity_loss", "val_digit_accuracy", "val_parity_accuracy"):
        assert math.isfinite(rec[k]), k
    assert rec["loss"] == pytest.approx(1.0 * rec["digit_loss"] + 0.5 * rec["parity_loss"], rel=1e-5)
    assert rec["val_loss"] == pytest.approx(1.0 * rec["val_digit_loss"] + 0.5 * rec["val_parity_loss"], rel=1e-5)
    test = json.loads((multitask_run / "test_metrics.json").read_text())
    assert {"digit_accuracy", "parity_accuracy"} <= set(test)
