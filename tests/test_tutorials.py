"""The three data tutorials (docs/tutorials/csv.md, images.md, text.md) run end to end as written,
on their real data in examples/data/: check, train, evaluate on a held-out file or folder,
predict raw rows, images and texts — and the predictions' accuracy equals evaluate's."""

from __future__ import annotations

import csv
import json
import re
import shlex
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from dlspec.cli import main

from .helpers import ROOT

TUTORIALS = {"csv": "iris", "images": "digits", "text": "docs"}


def _commands(name: str) -> list[list[str]]:
    text = (ROOT / "docs" / "tutorials" / f"{name}.md").read_text(encoding="utf-8")
    lines = [ln for block in re.findall(r"```sh\n(.*?)```", text, re.S) for ln in block.splitlines()]
    return [shlex.split(ln)[1:] for ln in lines if ln.startswith("dlspec ")]


def _true_label(example: str, run: str, heldout_rows: dict[int, str]) -> str:
    if run == "iris":
        return heldout_rows[int(example.removeprefix("line "))]
    return Path(example).parts[0]  # a class subfolder of the held-out folder


@pytest.mark.slow
@pytest.mark.parametrize("tutorial", list(TUTORIALS))
def test_tutorial_runs_as_written(tutorial, tmp_path, monkeypatch):
    run = TUTORIALS[tutorial]
    work = tmp_path / "examples"
    shutil.copytree(ROOT / "examples", work, ignore=shutil.ignore_patterns("runs", "__pycache__"))
    monkeypatch.chdir(work)
    runner = CliRunner()
    commands = _commands(tutorial)
    assert [c[0] for c in commands] == ["check", "train", "evaluate", "predict", "predict"]
    for args in commands:
        r = runner.invoke(main, args)
        assert r.exit_code == 0, f"dlspec {' '.join(args)}\n{r.output}"
        if args[0] == "predict" and "--output" not in args:
            assert "probability" in r.output
    heldout = commands[2][commands[2].index("--data") + 1]
    r = runner.invoke(main, ["evaluate", f"runs/{run}", "--data", heldout, "--json"])
    assert r.exit_code == 0, r.output
    result = json.loads(r.output)
    report = next(iter(result["reports"].values()))
    assert sum(row["support"] for row in report["per_class"]) == result["examples"]
    predictions = Path(commands[4][commands[4].index("--output") + 1])
    if predictions.suffix == ".json":
        rows = next(iter(json.loads(predictions.read_text())["predictions"].values()))
    else:
        rows = list(csv.DictReader(predictions.open()))
    heldout_rows = {}
    if run == "iris":
        with open(heldout) as f:  # "line N" of predict: the file's line N (the header is line 1)
            heldout_rows = {i: row["species"] for i, row in enumerate(csv.DictReader(f), start=2)}
    assert len(rows) == result["examples"]
    hits = sum(row["class"] == _true_label(row["example"], run, heldout_rows) for row in rows)
    assert hits / len(rows) == pytest.approx(result["metrics"]["accuracy"], abs=1e-9)
    assert result["metrics"]["accuracy"] >= 0.8  # real data, a model that learnt it
    if tutorial == "csv":
        assert (work / "runs" / "iris" / "heldout.png").stat().st_size > 1000
