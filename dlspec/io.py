"""Writing files so that nothing half-written ever replaces a good one: every file dlspec writes
(run folders, weights, generated sources, artifacts) goes to a temporary file beside its target,
which is then renamed over the target (`os.replace`, atomic on one file system). A crash leaves
the old file, or no file, never a torn one.

`atomic_write` is the one implementation; the others say what to write.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def atomic_write(path: Path, write: Callable[[Path], Any], suffix: str = "") -> None:
    """Call `write(tmp)` to fill a temporary file beside `path` (`suffix`: an extension the writer
    needs, such as `.png`), then rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    atomic_write(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, default=str) + "\n")


def atomic_write_npz(path: Path, arrays: dict[str, Any]) -> None:
    import numpy as np

    atomic_write(path, lambda tmp: np.savez(tmp, **arrays), suffix=".npz")


def atomic_dir(final: Path, write: Callable[[Path], Any]) -> Path:
    """Fill a temporary folder beside `final` with `write(tmp)`, then rename it to `final`
    (replacing a folder of that name)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        write(tmp)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final
