"""`dlspec fmt`: one canonical layout, idempotent, comments kept, meaning unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings

from dlspec.cli import main
from dlspec.errors import DlspecError
from dlspec.fmt import format_source, tokenize
from dlspec.parser import parse
from dlspec.program import compile_source
from dlspec.source import SourceFile

from .fuzz_inputs import grammar_program
from .helpers import ROOT, spec_files

CORPUS = sorted(
    [*spec_files(), *(ROOT / "tests" / "invalid").glob("*.dls"),
                 *(ROOT / "tests" / "fixtures").rglob("*.dls")])


def _parses(text: str) -> bool:
    try:
        parse(SourceFile("x.dls", text))
    except DlspecError:
        return False
    return True


def _without_spans(v):
    if isinstance(v, dict):
        return {k: _without_spans(x) for k, x in v.items() if k not in ("span", "file", "source")}
    if isinstance(v, list):
        return [_without_spans(x) for x in v]
    return v


def _meaning(text: str, path: Path) -> str:
    """The lowered program without source positions, or the diagnostics' codes and messages."""
    try:
        prog = compile_source(SourceFile(str(path), text), base_dir=path.parent)
    except DlspecError as exc:
        return json.dumps(sorted((d.code, d.message) for d in exc.diagnostics))
    return json.dumps(_without_spans(prog.model_dump(mode="json")), sort_keys=True)


PARSING = [p for p in CORPUS if _parses(p.read_text(encoding="utf-8"))]


def test_the_corpus_is_mostly_valid_syntax():
    assert len(PARSING) > 80 and len(CORPUS) - len(PARSING) >= 5


def _marks(path: Path) -> list:
    """The specs run in the fast tier; the rest of the corpus (tests/invalid, fixtures) in the slow."""
    return [] if path.parent == ROOT / "specs" else [pytest.mark.slow]


@pytest.mark.parametrize("path", [pytest.param(p, marks=_marks(p), id=str(p.relative_to(ROOT))) for p in PARSING])
def test_idempotent_and_meaning_preserving(path: Path):
    text = path.read_text(encoding="utf-8")
    once = format_source(text, str(path))
    assert format_source(once, str(path)) == once
    comments = [t.text for t in tokenize(text) if t.kind == "comment"]
    assert [t.text for t in tokenize(once) if t.kind == "comment"] == comments
    assert _meaning(once, path) == _meaning(text, path)


def test_the_specs_are_formatted():
    unformatted = [p.name for p in spec_files() if format_source(p.read_text(encoding="utf-8")) != p.read_text(encoding="utf-8")]
    assert unformatted == []


@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
@given(grammar_program())
def test_generated_programs(text: str):
    if not _parses(text):
        return
    once = format_source(text)
    assert format_source(once) == once
    assert _meaning(once, ROOT / "fuzz.dls") == _meaning(text, ROOT / "fuzz.dls")


UGLY = """# header
block  ConvBN(out:int,k:int=3 ,stride : int=1){ conv2d(out,kernel=k,stride=stride,padding=k//2,bias=false)as conv
batchnorm2d( ) as bn   # the norm
   }
model M(classes:int=10){


  input image:float32[batch,3,32,32]
  # features
  x=image->ConvBN(16)->relu()->ConvBN(32,stride=2)->relu()->ConvBN(64,stride=2)->relu()->global_avgpool2d()->flatten()
  y = -x*2 + x ** 2
  output dense(classes)(y)}
train M{
data=builtin("digits")
optimizer   =   adam(lr=1e-3)
early_stop(monitor=val_loss,patience=3)

}
"""

CANONICAL = """# header
block ConvBN(out: int, k: int = 3, stride: int = 1) {
    conv2d(out, kernel=k, stride=stride, padding=k // 2, bias=false) as conv
    batchnorm2d() as bn  # the norm
}

model M(classes: int = 10) {
    input image: float32[batch, 3, 32, 32]
    # features
    x = image
        -> ConvBN(16)
        -> relu()
        -> ConvBN(32, stride=2)
        -> relu()
        -> ConvBN(64, stride=2)
        -> relu()
        -> global_avgpool2d()
        -> flatten()
    y = -x * 2 + x ** 2
    output dense(classes)(y)
}

train M {
    data      = builtin("digits")
    optimizer = adam(lr=1e-3)
    early_stop(monitor=val_loss, patience=3)
}
"""


def test_canonical_layout():
    assert format_source(UGLY) == CANONICAL


def test_trailing_comments_of_consecutive_lines_align():
    text = "model M {\n    input x: float32[batch, 4]\n    a = x -> relu() # one\n    bb = a -> tanh()    # two\n    output bb\n}\n"
    assert format_source(text).splitlines()[2:4] == ["    a = x -> relu()   # one", "    bb = a -> tanh()  # two"]


def test_cli_check_diff_and_write(tmp_path: Path):
    f = tmp_path / "m.dls"
    f.write_text(UGLY)
    good = tmp_path / "good.dls"
    good.write_text(CANONICAL)
    r = CliRunner().invoke(main, ["fmt", "--check", str(f), str(good)])
    assert r.exit_code == 1 and f"would reformat {f}" in r.output
    assert f.read_text() == UGLY
    r = CliRunner().invoke(main, ["fmt", "--diff", str(f)])
    assert r.exit_code == 0 and "+    optimizer = adam(lr=1e-3)" in r.output and f.read_text() == UGLY
    r = CliRunner().invoke(main, ["fmt", str(f)])
    assert r.exit_code == 0 and f.read_text() == CANONICAL
    assert CliRunner().invoke(main, ["fmt", "--check", str(f), str(good)]).exit_code == 0


def test_cli_refuses_a_file_that_does_not_parse(tmp_path: Path):
    f = tmp_path / "bad.dls"
    f.write_text("model M {\n  input x: float32[batch, 4]\n  output x -> \n")
    r = CliRunner().invoke(main, ["fmt", str(f)])
    assert r.exit_code == 1 and "E003" in r.output and "Traceback" not in r.output
    assert f.read_text() == "model M {\n  input x: float32[batch, 4]\n  output x -> \n"
