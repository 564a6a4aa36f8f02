"""Hyper-parameter search (docs/search.md): search values in the language, the space checked
before any trial, and `dlspec search` on Optuna — trials checked before training, two workers on
one SQLite study, a kill and a resume, a best spec that checks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from dlspec.cli import main
from dlspec.errors import DlspecError
from dlspec.program import compile_source
from dlspec.search_space import FixedPicker, concrete_text, read_space
from dlspec.source import SourceFile

from .helpers import spec_path

MODEL = """
model Net(p: float = range(0.1, 0.5), width: int = choice(16, 32)) {{
    input x: float32[batch, 4]
    y = x -> dense(width) -> {act} -> dropout(p) -> dense(3)
    output y
}}
"""

RECIPE = """
train Net {{
    data = builtin("iris")
    optimizer = {opt}
    batch = choice(16, 32)
    metrics = [accuracy]
    {extra}
}}
"""


def _src(text: str, name: str = "s.dls") -> SourceFile:
    return SourceFile(name, text)


def _spec(act: str = "relu()", opt: str = "adam(lr=log_range(1e-4, 1e-2))", extra: str = "") -> str:
    return MODEL.format(act=act) + RECIPE.format(opt=opt, extra=extra)


def _errors(text: str) -> list:
    with pytest.raises(DlspecError) as e:
        compile_source(_src(text))
    return e.value.diagnostics


@pytest.mark.parametrize("value, code, col", [
    ("range(0.5, 0.1)", "E940", 22),
    ("choice()", "E940", 22),
    ("range(0, 1, log)", "E941", 28),
    ('choice(0.1, "a")', "E942", 34),
    ("int_range(1.5, 3)", "E943", 32),
    ("choice(0.1, 0.1)", "E943", 34),
    ("range(0.1, 0.5, default=0.9)", "E944", 38),
    ("range(0.1, 0.5, foo=1)", "E945", 38),
])
def test_the_space_is_type_checked_with_located_errors(value, code, col):
    text = f"model M {{\n    input x: float32[batch, 4]\n    y = x -> dropout({value})\n    output y\n}}\n"
    d = _errors(text)[0]
    assert (d.code, d.span.line, d.span.column) == (code, 3, col), d


def test_a_search_entry_is_checked_like_any_recipe_entry():
    d = _errors(_spec(extra="search = {objective: \"val_accuracy\", trials: 0}"))[0]
    assert d.code == "E946" and "trials" in d.message
    d = _errors(_spec(extra="search = {samplr: \"tpe\"}"))[0]
    assert d.code == "E946" and d.hint and "sampler" in d.hint
    prog = compile_source(_src(_spec(extra="search = {objective: \"val_accuracy\", sampler: random, trials: 7}")))
    s = prog.recipes[0].search
    assert (s.objective, s.sampler, s.trials, s.pruner) == ("val_accuracy", "random", 7, "median")


def test_without_a_picker_every_value_takes_its_default():
    prog = compile_source(_src(_spec()))
    g, cfg = prog.models["Net"], prog.recipes[0]
    dense = [n for n in g.nodes if n.op == "dense"]
    assert dense[0].attrs["units"] == 16  # the first option
    drop = next(n for n in g.nodes if n.op == "dropout")
    assert drop.attrs["p"] == pytest.approx(0.3)  # the middle of the range
    assert cfg.optimizer.lr == pytest.approx(1e-3)  # the geometric middle of a log range
    assert cfg.batch == 16


def test_a_value_inside_an_option_exists_only_when_that_option_is_chosen():
    text = _spec(opt="choice(sgd(lr=range(0.01, 0.1), momentum=range(0.5, 0.99)), adam(lr=log_range(1e-4, 1e-2)))")
    src = _src(text)
    from dlspec.parser import parse

    space = read_space(parse(src))
    names = [d.name for d in space.dims]
    assert names == ["p", "width", "optimizer", "sgd.lr", "momentum", "adam.lr", "batch"]
    picker = FixedPicker(space.names, {"optimizer": "adam(lr=log_range(1e-4, 1e-2))", "adam.lr": 0.005, "width": 32})
    prog = compile_source(src, observe=lambda ev: setattr(ev, "search", picker))
    assert prog.recipes[0].optimizer.type == "adam" and prog.recipes[0].optimizer.lr == 0.005
    assert "sgd.lr" not in picker.params and "momentum" not in picker.params  # never asked for
    concrete = concrete_text(text, space, picker)
    assert "choice" not in concrete and "range(" not in concrete
    assert "optimizer = adam(lr=0.005)" in concrete and "width: int = 32" in concrete
    again = compile_source(_src(concrete, "c.dls"))  # the concrete spec checks, with the same values
    assert again.recipes[0].optimizer.lr == 0.005
    assert [n.attrs["units"] for n in again.models["Net"].nodes if n.op == "dense"] == [32, 3]


def test_a_layer_can_be_a_choice():
    text = _spec(act="choice(relu(), gelu(), tanh())")
    prog = compile_source(_src(text))
    assert any(n.op == "relu" for n in prog.models["Net"].nodes)


def _run(args: list[str]):
    return CliRunner().invoke(main, args, catch_exceptions=False)


def test_check_counts_the_configurations_the_checker_rejects():
    r = _run(["search", str(spec_path("search_transformer.dls")), "--check", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    # dim in (48, 64, 96, 128) x heads in (3, 4, 5, 6, 8): 12 of the 20 pairs divide; x 3 ff x 3 lr points
    assert (out["configs"], out["valid"]) == (180, 12 * 9)
    assert any(w["code"] == "W941" and "`heads` = 5" in w["message"] for w in out["warnings"])


def test_a_space_with_no_valid_configuration_is_a_located_error_before_the_search(tmp_path):
    spec = tmp_path / "bad.dls"
    spec.write_text("model M(heads: int = choice(5, 7)) {\n    input t: int64[batch, 8]\n    y = t -> embedding(10, 48)\n"
                    "        -> transformer_encoder(heads, ff=64)\n    output y\n}\n")
    r = _run(["search", str(spec), "--check", "--json"])
    assert r.exit_code == 1
    d = json.loads(r.stdout)[0]
    assert (d["code"], d["line"]) == ("E949", 4) and "every one of its 2 configurations" in d["message"]


def test_check_passes_a_space_whose_default_fails_but_not_one_without_valid_configurations(tmp_path):
    spec = tmp_path / "t.dls"
    body = ("model M(heads: int = choice({})) {{\n    input t: int64[batch, 8]\n    y = t -> embedding(10, 48)\n"
            "        -> transformer_encoder(heads, ff=64)\n    output y\n}}\n")
    spec.write_text(body.format("5, 4, 7"))  # the default, 5, does not divide 48; 4 does
    r = _run(["check", str(spec), "--json"])
    assert r.exit_code == 0, r.output
    codes = {(d["code"], d["line"], d["column"]) for d in json.loads(r.stdout)}
    assert ("W940", 4, 12) in codes and ("W941", 1, 29) in codes and ("W941", 1, 35) in codes
    spec.write_text(body.format("5, 7"))
    r = _run(["check", str(spec), "--json"])
    assert r.exit_code == 1 and [d["code"] for d in json.loads(r.stdout)] == ["E949"]


SMALL = """
# kernel 9 or 11 does not fit the 8x8 digits: those configurations are rejected before training
model Small(k: int = choice(3, 9, 11, 13), width: int = choice(4, 8)) {
    input image: float32[batch, 1, 8, 8]
    y = image -> conv2d(width, k) -> relu() -> flatten() -> dense(10)
    output y
}

train Small {
    data = builtin("digits", split=[0.7, 0.15, 0.15])
    optimizer = adam(lr=log_range(1e-3, 3e-2))
    epochs = 2
    batch = 128
    metrics = [accuracy]
    search = {objective: "val_accuracy", trials: 4, sampler: "random", pruner: "none", seed: 3}
}
"""


def _study(folder: Path):
    from dlspec.search.study import load_study, read_settings

    return load_study(read_settings(folder))[0]


def _cli(*args: str, **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    return subprocess.Popen([sys.executable, "-m", "dlspec.cli", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


@pytest.mark.slow
def test_two_workers_killed_and_resumed_leave_a_best_spec_that_checks(tmp_path):
    from dlspec.search.study import counts, trained

    spec = tmp_path / "small.dls"
    spec.write_text(SMALL)
    folder = tmp_path / "search"
    p = _cli("search", str(spec), "-o", str(folder), "--workers", "2", start_new_session=True)
    deadline = time.time() + 240
    killed_running = False
    while time.time() < deadline and p.poll() is None:
        time.sleep(0.5)
        if not (folder / "study.db").exists() or not (folder / "search.json").exists():
            continue
        try:
            study = _study(folder)
            c = counts(study)
        except Exception:  # the study is being created
            continue
        # a trial in training: its worker recorded itself and every value was drawn (a trial
        # killed before that has nothing to run again)
        training = [t for t in study.get_trials(deepcopy=False) if t.state.name == "RUNNING"
                    and "pid" in t.user_attrs and len(t.params) == 3 and t.params["k"] == 3]
        if c["complete"] >= 1 and training:
            os.killpg(p.pid, signal.SIGKILL)  # the command and both workers, in the middle of a trial
            killed_running = True
            break
    p.wait(timeout=60)
    assert killed_running, "the search finished before it could be killed in a trial"
    before = counts(_study(folder))
    assert before["running"] >= 1 and trained(before) - before["running"] < 4

    r = _cli("search", str(spec), "-o", str(folder), "--workers", "2", "--resume", "--json")
    stdout, stderr = r.communicate(timeout=400)
    assert r.returncode == 0, stderr
    out = json.loads(stdout)
    c = out["summary"]["counts"]
    assert c["running"] == 0
    assert 4 <= c["complete"] + c["pruned"] <= 5  # two workers may overshoot the budget by one
    trials = out["trials"]
    # the trial the kill interrupted was failed and run again with the same values
    study = _study(folder)
    retried = [t for t in study.trials if "retry_of" in t.user_attrs]
    assert retried and all(t.params == study.trials[t.user_attrs["retry_of"]].params for t in retried)
    # shape-invalid configurations: rejected with their located reason, no run folder, counted
    invalid = [t for t in trials if t["state"] == "invalid"]
    assert invalid and c["invalid"] == len(invalid)
    for t in invalid:
        assert t["params"]["k"] in (9, 11, 13) and "small.dls:5:" in t["reason"] and t["run"] is None
        assert not (folder / "trials" / f"trial-{t['trial']:04d}").exists()
    assert all(t["params"]["k"] == 3 for t in trials if t["state"] == "complete")
    # per-epoch values were reported to Optuna (what pruning decides on)
    assert all(len(t.intermediate_values) == 2 for t in study.trials if t.state.name == "COMPLETE")
    # results
    for name in ("trials.csv", "best.dls", "best.json", "history.png", "parallel.png"):
        assert (folder / name).is_file(), name
    best = json.loads((folder / "best.json").read_text())
    assert best["val_accuracy"] == max(t["val_accuracy"] for t in trials if t["state"] == "complete")
    text = (folder / "best.dls").read_text()
    assert "choice(" not in text and "range(" not in text and "search =" not in text
    assert _run(["check", str(folder / "best.dls")]).exit_code == 0
    # each trial's folder is a standard run folder
    run = Path(best["run"])
    assert (run / "trial.dls").is_file()
    ev = _run(["evaluate", str(run), "--json"])
    assert ev.exit_code == 0, ev.output
    metrics = json.loads(ev.stdout)
    metrics = metrics.get("metrics", metrics)
    assert metrics["accuracy"] == pytest.approx(best["test"]["accuracy"], abs=1e-6)
    st = _run(["search", "--status", str(folder), "--json"])
    assert st.exit_code == 0 and json.loads(st.stdout)["summary"]["best"]["trial"] == best["trial"]


@pytest.mark.slow  # 256 configurations compiled: a few seconds on a loaded machine
def test_the_tutorial_space_checks_and_its_impossible_kernels_are_found(tmp_path):
    import re

    from .helpers import ROOT

    text = (ROOT / "docs" / "tutorials" / "search.md").read_text(encoding="utf-8")
    spec = tmp_path / "small_search.dls"
    spec.write_text(re.search(r"```text\n(# small_search.dls\n.*?)```", text, re.S).group(1))
    assert _run(["check", str(spec)]).exit_code == 0
    r = _run(["search", str(spec), "--check", "--json"])
    assert r.exit_code == 0, r.output
    never = sorted(w["message"].split("`")[2].split()[1] for w in json.loads(r.stdout)["warnings"] if w["code"] == "W941")
    assert never == ["11", "9"]
