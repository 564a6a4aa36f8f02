"""Writing files so that nothing half-written ever replaces a good one: every file dlspec writes
(run folders, weights, generated sources, artifacts) goes to a temporary file beside its target,
which is then renamed over the target (`os.replace`, atomic on one file system). A crash leaves
the old file, or no file, never a torn one.

`atomic_write` is the one implementation; the others say what to write.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import DlspecError, error

#: the name of a temporary file or folder of `atomic_write`/`atomic_dir`: `.` + the target's name
#: + `.` + mkstemp's 8 random characters (+ the writer's suffix). An interrupted write (a killed
#: process) leaves one behind; `temporaries` finds them for the next run to remove.
TEMP_NAME = re.compile(r"^\.(?P<target>[^/]+)\.[a-z0-9_]{8}(?:\.[a-z0-9]{1,8})?$")

#: errno values that mean "this folder cannot be written" rather than a bug
_WRITE_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT, errno.EFBIG, errno.EIO}


def temporaries(folder: Path) -> list[Path]:
    """The temporary files and folders interrupted atomic writes left directly in `folder`."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if TEMP_NAME.match(p.name))


def remove_temporaries(folder: Path) -> list[Path]:
    """Remove what `temporaries(folder)` lists (only call this while no writer is live there)."""
    gone = temporaries(folder)
    for p in gone:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
    return gone


def write_error(exc: BaseException, path: Path) -> DlspecError | None:
    """E672 for an exception that says the file system refused a write (a full disk, a read-only
    folder, no permission), whether it came as an OSError or from a writer library that reports the
    operating system's error in its message (safetensors: `No space left on device (os error 28)`);
    None for anything else."""
    if isinstance(exc, DlspecError):
        return None
    why = None
    if isinstance(exc, OSError) and exc.errno in _WRITE_ERRNOS:
        why = exc.strerror or str(exc)
    elif not isinstance(exc, OSError):
        m = re.search(r"([A-Z][A-Za-z ,-]+) \(os error (\d+)\)", str(exc))
        if m and int(m.group(2)) in _WRITE_ERRNOS:
            why = m.group(1)
    if why is None:
        return None
    return error("E672", f"cannot write {path}: {why}",
                 hint="free disk space or make the folder writable, then continue with --resume: "
                      "the last complete checkpoint is intact")


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _file_mode(path: Path) -> int:
    """The mode a plainly created file gets (0644 under the usual umask; mkstemp's is 0600),
    executable as well when it starts with `#!` (a script, such as `compile --script`)."""
    with open(path, "rb") as f:
        script = f.read(2) == b"#!"
    return (0o777 if script else 0o666) & ~_umask()


def atomic_write(path: Path, write: Callable[[Path], Any], suffix: str = "") -> None:
    """Call `write(tmp)` to fill a temporary file beside `path` (`suffix`: an extension the writer
    needs, such as `.png`), then rename it over `path`, with the mode of a file created plainly."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    except OSError as exc:
        raise write_error(exc, path) or exc from None
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, _file_mode(Path(tmp)))
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        coded = write_error(exc, path)
        if coded is not None:
            raise coded from None
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
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    except OSError as exc:
        raise write_error(exc, final) or exc from None
    try:
        write(tmp)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        coded = write_error(exc, final)
        if coded is not None:
            raise coded from None
        raise
    return final
