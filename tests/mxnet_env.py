"""The MXNet interpreter the suite runs the MXNet backend in, built by the suite when missing.

MXNet 1.9.1 needs numpy < 1.24, so it lives in its own virtual environment, never in dlspec's:
`python -m venv` + `pip install mxnet==1.9.1 numpy==1.23.5`, cached in `~/.cache/dlspec-test-mxnet`
(or `$DLSPEC_TEST_MXNET_ENV`) between runs. A `DLSPEC_MXNET_PYTHON` already set is used as it is.
The session fixture `mxnet_python` points `DLSPEC_MXNET_PYTHON` at it for the tests that need it.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

PACKAGES = ("mxnet==1.9.1", "numpy==1.23.5")
ENV_DIR = Path(os.environ.get("DLSPEC_TEST_MXNET_ENV", Path.home() / ".cache" / "dlspec-test-mxnet"))
READY = ".dlspec-ready"
#: how long building took in this session (None: it was cached), for the report
BUILD_SECONDS: list[float] = []


def _python(env: Path) -> Path:
    return env / "bin" / "python"


def _ready(env: Path) -> bool:
    marker = env / READY
    return _python(env).exists() and marker.exists() and marker.read_text().split() == list(PACKAGES)


def ensure_mxnet_env(env: Path = ENV_DIR) -> Path:
    """The interpreter of the cached MXNet environment, built (under a lock) when missing."""
    env.parent.mkdir(parents=True, exist_ok=True)
    with open(env.parent / f".{env.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another pytest process may be building it
        if _ready(env):
            return _python(env)
        start = time.monotonic()
        shutil.rmtree(env, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(env)], check=True, timeout=600)
        subprocess.run([str(_python(env)), "-m", "pip", "install", "--quiet", *PACKAGES], check=True, timeout=1800)
        check = subprocess.run([str(_python(env)), "-c", "import mxnet, numpy; print(mxnet.__version__, numpy.__version__)"],
                               capture_output=True, text=True, timeout=300)
        assert check.returncode == 0, f"the MXNet environment at {env} does not import mxnet:\n{check.stderr}"
        assert check.stdout.split() == [p.split("==")[1] for p in PACKAGES], check.stdout
        (env / READY).write_text(" ".join(PACKAGES))
        BUILD_SECONDS.append(time.monotonic() - start)
        return _python(env)


@pytest.fixture(scope="session")
def mxnet_python() -> str:
    """`DLSPEC_MXNET_PYTHON` for the session: as given, else the suite's cached environment."""
    given = os.environ.get("DLSPEC_MXNET_PYTHON")
    if given:
        yield given
        return
    path = str(ensure_mxnet_env())
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DLSPEC_MXNET_PYTHON", path)
        yield path
