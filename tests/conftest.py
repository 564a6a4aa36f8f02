"""Test-suite setup shared by every module.

Shared paths and helpers live in `tests/helpers.py` (`ROOT`, `SPEC_DIR`, `spec_files()`, `spec_path()`,
`large_marks()`, `quiet`, `free_port()`) and `tests/torch_helpers.py` (random inputs and expected
shapes for a graph); test modules import them with `from .helpers import ...`. Every path is anchored
to the repository, so the suite runs the same from any working directory.

Tiers: tests marked `slow` (training runs, multi-process runs, the largest models' parity) are skipped
by `python -m pytest -m "not slow"`, the fast tier; `python -m pytest` runs everything."""

from __future__ import annotations

import pytest

from .helpers import ROOT, SPEC_DIR
from .mxnet_env import mxnet_python  # noqa: F401  (a session fixture: the MXNet interpreter, built once)


def pytest_report_header(config) -> str:
    return f"dlspec: repository {ROOT}, example specs {SPEC_DIR}; fast tier: -m \"not slow\""


def pytest_addoption(parser) -> None:
    parser.addoption("--update-golden", action="store_true", default=False,
                     help="Rewrite the golden files under tests/fixtures/golden/ from the current output "
                          "(tests/test_golden.py) instead of comparing with them.")


@pytest.fixture
def update_golden(request) -> bool:
    """True under `--update-golden`: golden tests write their files instead of comparing."""
    return bool(request.config.getoption("--update-golden"))
