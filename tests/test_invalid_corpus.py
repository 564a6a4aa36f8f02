"""The invalid-spec corpus (`tests/invalid/`): every file's errors, asserted field by field.

Each case declares its diagnostics in `# expect: CODE LINE:COL message | hint: hint` lines
(format in tests/invalid/README.md). A case passes when the compiler reports exactly those
errors: same code, same span start, the message and hint fragments present.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from dlspec import Diagnostic, DlspecError, compile_file

from .helpers import ROOT

CORPUS = ROOT / "tests" / "invalid"
CASES = sorted(CORPUS.glob("*.dls"))
EXPECT = re.compile(r"^# expect: (?P<code>[EW]\d{3}) (?P<line>\d+):(?P<col>\d+) (?P<message>.+?)(?: \| hint: (?P<hint>.+))?$")


@dataclass(frozen=True)
class Expected:
    code: str
    line: int
    column: int
    message: str
    hint: str | None

    def matches(self, d: Diagnostic) -> bool:
        return (
            d.code == self.code
            and d.span is not None
            and (d.span.line, d.span.column) == (self.line, self.column)
            and self.message in d.message
            and (self.hint is None or (d.hint is not None and self.hint in d.hint))
        )

    def __str__(self) -> str:
        return f"{self.code} {self.line}:{self.column} {self.message!r}" + (f" hint {self.hint!r}" if self.hint else "")


def expectations(path: Path) -> list[Expected]:
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("# expect:"):
            m = EXPECT.match(line)
            assert m, f"{path.name}: malformed expectation {line!r}"
            out.append(Expected(m["code"], int(m["line"]), int(m["col"]), m["message"], m["hint"]))
    return out


def errors_of(path: Path) -> list[Diagnostic]:
    with pytest.raises(DlspecError) as info:
        compile_file(path)
    return [d for d in info.value.diagnostics if d.severity == "error"]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-m", "dlspec.cli", *args], capture_output=True, text=True, cwd=ROOT, env=env)


def test_the_corpus_is_large_and_every_case_expects_something():
    assert len(CASES) >= 45
    for path in CASES:
        assert expectations(path), f"{path.name} has no `# expect:` line"
    assert sum(len(expectations(p)) >= 3 for p in CASES) >= 3, "need several files with several independent errors"


@pytest.mark.parametrize("path", CASES, ids=lambda p: p.stem)
def test_case_reports_exactly_its_expected_errors(path: Path) -> None:
    expected = expectations(path)
    got = errors_of(path)
    unmatched = list(got)
    for e in expected:
        hit = next((d for d in unmatched if e.matches(d)), None)
        assert hit is not None, f"{path.name}: expected {e}; got " + "; ".join(
            f"{d.code} {d.span.line if d.span else '?'}:{d.span.column if d.span else '?'} {d.message!r} hint {d.hint!r}" for d in got
        )
        assert hit.span is not None and hit.span.file.endswith(path.name)
        unmatched.remove(hit)
    assert not unmatched, f"{path.name}: unexpected extra errors: " + "; ".join(f"{d.code} {d.message}" for d in unmatched)


def test_check_cli_exits_1_and_prints_each_error_with_a_caret():
    path = CORPUS / "many_errors_model.dls"
    res = run_cli("check", str(path.relative_to(ROOT)))
    assert res.returncode == 1
    for e in expectations(path):
        assert f"many_errors_model.dls:{e.line}:{e.column}: error[{e.code}]" in res.stderr
    assert "^" in res.stderr and "= hint: did you mean `conv2d`?" in res.stderr
    assert f"{len(expectations(path))} errors" in res.stderr
    assert "Traceback" not in res.stderr


def test_check_cli_json_carries_the_structured_fields_for_every_case():
    res = run_cli("check", "--json", *(str(p.relative_to(ROOT)) for p in CASES))
    assert res.returncode == 1
    assert "Traceback" not in res.stderr
    records = json.loads(res.stdout)
    for r in records:
        assert {"file", "line", "column", "code", "message", "hint"} <= set(r)
    for path in CASES:
        mine = {(r["code"], r["line"], r["column"]) for r in records if r["file"] and r["file"].endswith(path.name)}
        for e in expectations(path):
            assert (e.code, e.line, e.column) in mine, f"{path.name}: --json lacks {e}"
