"""The docs cannot drift: generated tables, examples and the published IR schema are checked."""

from __future__ import annotations

import importlib.util
import json
import re

import pytest

from dlspec.ir.graph import Graph
from dlspec.program import compile_source
from dlspec.source import SourceFile

from .helpers import ROOT

LANGUAGE_MD = ROOT / "docs" / "language.md"


def _gen_ops():
    spec = importlib.util.spec_from_file_location("gen_ops", ROOT / "docs" / "gen_ops.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _examples() -> list[tuple[int, str]]:
    text = LANGUAGE_MD.read_text(encoding="utf-8")
    return [(text.count("\n", 0, m.start()) + 1, m.group(1)) for m in re.finditer(r"```dls\n(.*?)```", text, re.S)]


def test_generated_tables_in_language_md_are_current():
    text = LANGUAGE_MD.read_text(encoding="utf-8")
    assert _gen_ops().render_into(text) == text, "run `python docs/gen_ops.py --write`"


def test_op_table_lists_every_op_of_the_registry():
    from dlspec.ir.ops import REGISTRY

    table = _gen_ops().op_table()
    for name in REGISTRY:
        assert f"| `{name}` |" in table
    assert "`weight` [out_channels, C, k0, k1]" in table  # conv2d, computed by its own rule


def test_language_md_has_examples():
    assert len(_examples()) >= 10


@pytest.mark.parametrize("line,text", _examples(), ids=lambda v: f"line{v}" if isinstance(v, int) else "")
def test_every_example_in_language_md_checks(line: int, text: str):
    prog = compile_source(SourceFile(f"language.md:{line}", text), base_dir=ROOT / "specs")
    assert prog.models or prog.recipes


def test_layer_naming_example_matches_the_text():
    line, text = next((n, t) for n, t in _examples() if "model Named" in t)
    g = compile_source(SourceFile("named.dls", text)).models["Named"]
    assert [n.name for n in g.nodes] == ["conv2d", "second", "conv2d_1"]


def test_published_ir_schema_is_current():
    published = json.loads((ROOT / "docs" / "ir-schema.json").read_text(encoding="utf-8"))
    assert published == Graph.model_json_schema(), "run `dlspec ir --schema x > docs/ir-schema.json`"
