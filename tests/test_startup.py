"""Start-up: the commands people wait on (`check`, `summary`, `ir`, `--help`, `--version`) import
no deep-learning framework, no scikit-learn, no plotting library and neither `lark` nor `regex`
(the parser's tables are generated into dlspec/_lalr.py), asserted by the modules a child process
ends with; and the generated tables are those of the grammar in dlspec/grammars/dlspec.lark."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from dlspec import ast
from dlspec.errors import DlspecError
from dlspec.source import SourceFile

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "specs"

#: top-level packages none of the fast commands may import
HEAVY = ("torch", "tensorflow", "keras", "onnxruntime", "onnx", "sklearn", "matplotlib", "mxnet", "jax",
         "lark", "regex")

# The child runs the CLI in-process and prints, at exit, every module it imported (atexit runs after
# click's sys.exit, so a command that fails still reports).
_CHILD = """
import atexit, json, sys
atexit.register(lambda: sys.__stdout__.write("\\nMODULES " + json.dumps(sorted(sys.modules)) + "\\n"))
from dlspec.cli import main
sys.argv = ["dlspec"] + sys.argv[1:]
main()
"""


def _modules(*args: str) -> set[str]:
    r = subprocess.run([sys.executable, "-c", _CHILD, *args], capture_output=True, text=True, timeout=120,
                       cwd=ROOT)
    line = [x for x in r.stdout.splitlines() if x.startswith("MODULES ")]
    assert line, (r.returncode, r.stdout[-2000:], r.stderr[-2000:])
    return set(json.loads(line[-1][len("MODULES "):]))


@pytest.mark.parametrize("args", [
    ("check", "specs/resnet50.dls", "specs/digits_cnn.dls"),
    ("summary", "specs/resnet18.dls"),
    ("ir", "specs/digits_cnn.dls"),
    ("--help",),
    ("--version",),
    ("check", "tests/invalid/concat_mismatch.dls"),  # a failing check too
], ids=lambda a: " ".join(a))
def test_fast_commands_import_no_framework(args):
    mods = _modules(*args)
    assert "dlspec.cli" in mods  # the child did run the CLI
    heavy = sorted(m for m in mods if m.split(".")[0] in HEAVY)
    assert not heavy, f"dlspec {' '.join(args)} imported {heavy[:10]}"


def test_check_of_a_model_imports_no_numpy():
    """W108 asks each target backend whether it lowers the model; none of them needs numpy for that
    (dlspec/lazy.py), and numpy's start-up is a third of the command's time."""
    mods = _modules("check", "specs/resnet50.dls")
    assert "dlspec.backends.keras" in mods and "dlspec.backends.onnx" in mods  # the backends were asked
    assert "numpy" not in mods


@pytest.mark.parametrize("args", [("--help",), ("--version",)], ids=lambda a: " ".join(a))
def test_help_and_version_import_no_command_module_and_no_pydantic(args):
    """`--help` lists the commands from the group's static table and `--version` reads a constant:
    neither imports a command module, the front end or pydantic."""
    mods = _modules(*args)
    assert "dlspec.cli" in mods
    loaded = sorted(m for m in mods if m.split(".")[0] in ("pydantic", "pydantic_core", "numpy")
                    or m in ("dlspec.errors", "dlspec.program", "dlspec.api", "dlspec.cli.run_commands"))
    assert not loaded, f"dlspec {' '.join(args)} imported {loaded}"


def _first_paragraph(text: str) -> str:
    return " ".join(text.split("\n\n")[0].split())


def test_lazy_command_table_says_what_the_commands_say():
    """Every command a module registers is in `main.lazy`, under the module that defines it, with
    the first paragraph of its own help (what `--help` prints before it is loaded)."""
    from dlspec.cli import main

    table = dict(main.lazy)
    commands = dict(main.commands.items())  # iterating loads every lazy module
    assert set(table) <= set(commands)
    for name, cmd in commands.items():
        module = cmd.callback.__module__
        if module == "dlspec.cli":
            assert name not in table, name
            continue
        assert name in table, f"`dlspec {name}` ({module}) is not in the lazy command table of dlspec/cli/__init__.py"
        assert "dlspec.cli" + table[name].module == module, name
        assert _first_paragraph(table[name].help) == _first_paragraph(cmd.help or ""), name


def test_help_lists_the_same_before_and_after_the_commands_load():
    code = ("import click.testing as t, sys\n"
            "from dlspec.cli import main\n"
            "r = lambda: t.CliRunner().invoke(main, ['--help'], terminal_width=100).output\n"
            "before = r(); dict(main.commands.items()); after = r()\n"
            "print(before == after, len(before.splitlines()))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    same, lines = out.stdout.split()
    assert same == "True" and int(lines) > 20, out.stdout + out.stderr


def test_version_is_the_package_metadata_version():
    import re

    from dlspec import __version__

    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    project = pyproject[pyproject.index("[project]"):]
    assert re.search(r'^version = "([^"]+)"', project, re.M).group(1) == __version__


def test_generated_tables_match_the_grammar():
    from dlspec import _lalr
    from dlspec.parser import grammar_sha256

    assert _lalr.GRAMMAR_SHA256 == grammar_sha256(), (
        "dlspec/grammars/dlspec.lark changed: regenerate the parser with `python -m dlspec.parser`")


def _plain(tree):
    """A parse tree (of either Lark) as nested tuples: rule names, token types, texts and positions."""
    if tree is None:
        return None
    if hasattr(tree, "children"):
        return (str(tree.data), tuple(_plain(c) for c in tree.children))
    return (tree.type, str(tree), tree.line, tree.column, tree.end_line, tree.end_column)


def test_generated_parser_parses_like_lark_built_from_the_grammar():
    """Lark (the package, from the grammar text) and the generated tables build the same parse tree
    for every spec, and fail at the same token for every file of the invalid corpus that does not
    parse; the AST the parser builds from the generated tables is a Module for every spec."""
    lark = pytest.importorskip("lark")
    from dlspec import _lalr
    from dlspec import parser as P

    fresh = lark.Lark(P.grammar_text(), **P.LARK_OPTIONS)
    generated = _lalr.Lark_StandAlone()
    files = sorted(SPECS.glob("*.dls")) + sorted((ROOT / "tests" / "invalid").glob("*.dls"))
    assert len(files) > 50
    compared = failed = 0
    for f in files:
        src = SourceFile.read(f)
        try:
            want = fresh.parse(src.text, start="start")
        except lark.exceptions.UnexpectedInput as exc:
            with pytest.raises(P.UnexpectedInput) as got:
                generated.parse(src.text, start="start")
            assert (type(got.value).__name__, got.value.line, got.value.column) == \
                   (type(exc).__name__, exc.line, exc.column), f
            with pytest.raises(DlspecError):
                P.parse(src)
            failed += 1
            continue
        assert _plain(generated.parse(src.text, start="start")) == _plain(want), f
        try:
            assert isinstance(P.parse(src), ast.Module)
        except DlspecError as exc:  # what the callbacks enforce: nesting depth, literal range, a
            # line starting with `(` (E130), a name template's text (E131)
            assert {d.code for d in exc.diagnostics} <= {"E004", "E005", "E130", "E131"}, (f, exc.diagnostics)
        compared += 1
    assert compared >= 20 and failed >= 1
