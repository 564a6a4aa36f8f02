"""The layers of the package hold: the import-linter contracts in pyproject.toml (no import cycle at
any level, counting imports inside functions; command line → tools → runtime → backends and
importers → passes → IR; a front end and an IR free of frameworks; backends independent) are kept,
and the acyclic contract does catch a cycle made by an import inside a function."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from .helpers import ROOT

#: import-linter's command, run by this interpreter (so it sees the same installed packages)
LINT = [sys.executable, "-c", "from importlinter.cli import lint_imports_command; lint_imports_command()"]


def _lint(config: Path, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*LINT, "--no-cache", str(config)], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


def test_the_import_contracts_of_pyproject_are_kept():
    res = _lint(ROOT / "pyproject.toml", ROOT)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    assert "0 broken" in res.stdout
    assert res.stdout.count(" KEPT") >= 6


def test_a_cycle_through_an_import_inside_a_function_breaks_the_acyclic_contract(tmp_path):
    pkg = tmp_path / "cyc"
    (pkg / "front").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "front" / "__init__.py").write_text("")
    (pkg / "front" / "a.py").write_text("from . import b\n")
    (pkg / "front" / "b.py").write_text(textwrap.dedent("""
        def late():
            from . import a  # only inside a function
            return a
    """))
    config = tmp_path / "contracts.toml"
    config.write_text(textwrap.dedent("""
        [tool.importlinter]
        root_package = "cyc"

        [[tool.importlinter.contracts]]
        name = "acyclic"
        type = "acyclic_siblings"
        ancestors = ["cyc"]
    """))
    res = _lint(config, tmp_path, env={"PYTHONPATH": str(tmp_path)})
    assert res.returncode != 0, res.stdout
    assert "acyclic BROKEN" in res.stdout
