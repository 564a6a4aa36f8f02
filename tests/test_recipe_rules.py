"""Every rule a trainer enforces is a located error at `dlspec check`, and `dlspec train` on a
recipe that breaks one writes no run folder."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from dlspec.cli import main
from dlspec.errors import DlspecError
from dlspec.program import compile_source
from dlspec.source import SourceFile

ROOT = Path(__file__).resolve().parent.parent
SPEC = (ROOT / "tests" / "invalid" / "recipe_rules_for_the_model.dls").read_text()


def test_train_refuses_before_writing_anything(tmp_path: Path):
    spec = tmp_path / "iris.dls"
    spec.write_text(SPEC)
    res = CliRunner().invoke(main, ["train", str(spec), "--out", str(tmp_path / "run"), "--quiet"])
    assert res.exit_code == 1
    assert "E413" in res.output and "E414" in res.output and f"{spec}:12:16" in res.output
    assert not (tmp_path / "run").exists()


def _codes(text: str) -> list[str]:
    try:
        compile_source(SourceFile("r.dls", text))
    except DlspecError as exc:
        return [d.code for d in exc.diagnostics]
    return []


def test_monitors_follow_the_model_outputs_and_metrics():
    ok = SPEC.replace("warmup(epochs=1) then ", "").replace("monitor=val_f1", "monitor=val_macro_f1")
    assert _codes(ok) == ["E414"]  # no metric is logged yet
    assert _codes(ok.replace("epochs = 5", "epochs = 5\n    metrics = [f1]")) == []


def test_loss_names_must_match_outputs():
    two = (ROOT / "tests" / "invalid" / "recipe_loss_per_output.dls").read_text()
    assert _codes(two.replace("loss = cross_entropy()", "loss = {a: cross_entropy(), b: mse()}")) == []
    assert _codes(two.replace("loss = cross_entropy()", "loss = {a: cross_entropy(), c: mse()}")) == ["E415"]


def test_plateau_monitor_is_checked():
    ok = SPEC.replace("warmup(epochs=1) then one_cycle(max_lr=0.1)", "plateau(monitor=val_acc)").replace(
        "monitor=val_f1", "monitor=val_loss")
    assert _codes(ok) == ["E414"]
    assert _codes(ok.replace("monitor=val_acc", "monitor=val_loss")) == []


GAN = """
model G {
    input z: float32[batch, 16]
    output z -> dense(64) as fc -> reshape([1, 8, 8])
}
model D {
    input img: float32[batch, 1, 8, 8]
    output img -> flatten() -> dense(1) as critic
}
model Frozen from G {
    freeze "fc"
}
train gan Pair {
    generator     = GEN
    discriminator = D
    data          = builtin("digits")
    epochs        = 1
}
"""


def _diagnostics(text: str):
    try:
        compile_source(SourceFile("r.dls", text))
    except DlspecError as exc:
        return exc.diagnostics
    return []


def test_a_gan_network_with_nothing_to_train_is_located_at_its_entry():
    assert _codes(GAN.replace("GEN", "G")) == []
    (d,) = _diagnostics(GAN.replace("GEN", "Frozen"))
    assert d.code == "E416" and "generator `Frozen`" in d.message
    assert (d.span.line, d.span.column) == (14, 21)  # the `generator = ...` entry's value


def test_a_model_without_parameters_has_nothing_to_train():
    text = SPEC.replace("y = x -> dense(16) -> relu() -> dense(3)", "y = x -> relu()").replace(
        "warmup(epochs=1) then ", "").replace("early_stop(monitor=val_f1, patience=2)", "")
    (d,) = _diagnostics(text)
    assert d.code == "E416" and "has no parameters" in d.message


def test_a_distilled_student_follows_the_supervised_rules(tmp_path: Path):
    text = """
model T {
    input x: float32[batch, 4]
    output x -> dense(3)
}
model S {
    input x: float32[batch, 4]
    a = x -> dense(3)
    b = x -> dense(3)
    output a
    output b
}
train distill KD {
    teacher         = T()
    student         = S()
    teacher_weights = "teacher.safetensors"
    data            = builtin("iris")
    checkpoint(monitor=val_acc)
}
"""
    codes = _codes(text)
    assert "E415" in codes and "E414" in codes and "E647" in codes
    spec = tmp_path / "kd.dls"
    spec.write_text(text)
    res = CliRunner().invoke(main, ["train", str(spec), "--out", str(tmp_path / "run"), "--quiet"])
    assert res.exit_code == 1 and f"{spec}:18:5" in res.output and "E414" in res.output
    assert not (tmp_path / "run").exists()


def test_gan_and_distill_corpus_cases_stop_train_before_a_run_folder(tmp_path: Path):
    for name in ("gan_settings_it_cannot_honour.dls", "distill_rules_for_the_networks.dls"):
        spec = tmp_path / name
        spec.write_text((ROOT / "tests" / "invalid" / name).read_text())
        res = CliRunner().invoke(main, ["train", str(spec), "--out", str(tmp_path / name / "run"), "--quiet"])
        assert res.exit_code == 1 and "Traceback" not in res.output
        assert not (tmp_path / name / "run").exists()


def test_each_model_is_lowered_once_per_compilation(monkeypatch):
    from collections import Counter

    from dlspec.lower import Evaluator
    from dlspec.program import compile_file

    from .helpers import spec_path

    calls: Counter = Counter()
    real = Evaluator.lower_model

    def counting(self, mdef, args, kwargs, span=None):
        calls[mdef.name] += 1
        return real(self, mdef, args, kwargs, span)

    monkeypatch.setattr(Evaluator, "lower_model", counting)
    for spec in ("iris_mlp.dls", "dcgan.dls", "digits_finetune.dls"):
        calls.clear()
        program = compile_file(spec_path(spec))
        assert program.recipes and calls and max(calls.values()) == 1, (spec, calls)


def test_a_derived_model_replacing_a_layer_of_a_model_lowered_before_it():
    text = """
model Base {
    input x: float32[batch, 4]
    output x -> dense(8) as fc1 -> relu() -> dense(3) as head
}
model Tuned from Base {
    freeze "fc1.*"
    replace head = dense(2)
}
train Base {
    data = builtin("iris")
}
train Tuned {
    data = builtin("iris", classes=[0, 1])
}
"""
    program = compile_source(SourceFile("r.dls", text))
    base, tuned = program.recipe_graphs["Base"], program.recipe_graphs["Tuned"]
    assert base is program.models["Base"]  # lowered once
    shapes = {p.path: tuple(p.shape) for p in tuned.params()}
    assert shapes["head.weight"] == (2, 8) and {p.path: tuple(p.shape) for p in base.params()}["head.weight"] == (3, 8)
