"""Paths and small helpers shared by the test modules (`from .helpers import ...`).

Every path is anchored to the repository, never to the working directory, so the suite collects
and passes the same tests from any directory (`cd /tmp && python -m pytest /path/to/repo/tests`)."""

from __future__ import annotations

import signal
import socket
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SPEC_DIR = ROOT / "specs"

# The largest example models (VGG11: 130M parameters, ResNet50: 25M, ResNet18: 11.7M): their
# per-spec parity cases are in the slow tier.
LARGE_SPECS = frozenset({"vgg11.dls", "resnet18.dls", "resnet50.dls", "mobilenet_v2.dls"})


def spec_files() -> list[Path]:
    """The example specs in `specs/`, sorted by name (absolute paths)."""
    return sorted(SPEC_DIR.glob("*.dls"))


def spec_path(name: str) -> Path:
    """One example spec by file name, e.g. `spec_path("digits_cnn.dls")`."""
    return SPEC_DIR / name


def large_marks(name: str) -> list:
    """`marks=` for a per-spec parametrization: slow for the largest models."""
    return [pytest.mark.slow] if Path(name).name in LARGE_SPECS else []


def quiet(_: str) -> None:
    """An `echo=` for the trainers that prints nothing."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def time_limit(seconds: int):
    """Fail with TimeoutError, instead of hanging the suite, when the body runs past `seconds`
    (a signal alarm: the main thread only)."""

    def expired(signum, frame):
        raise TimeoutError(f"ran past {seconds} s")

    old = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
