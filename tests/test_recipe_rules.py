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
