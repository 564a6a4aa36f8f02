"""Source files and spans: where a piece of a spec came from, for error messages."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from .limits import MAX_PATH_CHARS, MAX_SPEC_BYTES


class Span(BaseModel):
    """A region of a source file: 1-based line and column of its start and end (end exclusive)."""

    model_config = ConfigDict(frozen=True)

    file: str
    line: int
    column: int
    end_line: int
    end_column: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


@dataclass(frozen=True)
class SourceFile:
    """The text of one spec file and the name it is reported under."""

    name: str
    text: str

    @classmethod
    def read(cls, path: str | Path) -> SourceFile:
        """Read a spec: a regular file of at most `MAX_SPEC_BYTES`, UTF-8. Raises `UnreadableSource`
        (an OSError saying why, never quoting the file) for anything else, `UnicodeDecodeError`
        for text that is not UTF-8."""
        return cls(name=str(path), text=read_spec_bytes(path).decode("utf-8"))

    def line(self, number: int) -> str:
        lines = self.text.splitlines()
        if 1 <= number <= len(lines):
            return lines[number - 1]
        return ""


class UnreadableSource(OSError):
    """A spec path that is not read: not a regular file, too large, or a path that cannot name a
    file. `strerror` says why in words (the file's contents are never quoted)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.strerror = reason


def check_path(path: str | Path) -> str:
    """The path as a string, or UnreadableSource when no file can have that name."""
    s = os.fspath(path)
    if isinstance(s, bytes):
        s = os.fsdecode(s)
    if "\x00" in s:
        raise UnreadableSource("the path holds a NUL character")
    if len(s) > MAX_PATH_CHARS:
        raise UnreadableSource(f"the path is {len(s):,} characters long; at most {MAX_PATH_CHARS:,} are read")
    return s


def resolve_path(path: str | Path) -> Path:
    """`Path(path).resolve()` with every way it can fail (a symlink loop, a NUL, a name too long)
    turned into UnreadableSource."""
    s = check_path(path)
    try:
        return Path(s).resolve()
    except (OSError, RuntimeError, ValueError) as exc:  # RuntimeError: a symlink loop (Python < 3.13)
        raise UnreadableSource(_reason(exc)) from None


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    if isinstance(exc, RuntimeError):
        return "a symbolic link loop"
    return type(exc).__name__


_KINDS = ((stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a FIFO"),
          (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a folder"))


def read_spec_bytes(path: str | Path, limit: int | None = None) -> bytes:
    """The bytes of a regular file of at most `limit` (default `MAX_SPEC_BYTES`) bytes. Opening
    never blocks (a FIFO is opened non-blocking, then refused) and never reads more than
    `limit + 1` bytes."""
    limit = MAX_SPEC_BYTES if limit is None else limit
    s = check_path(path)
    try:
        fd = os.open(s, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0))
    except IsADirectoryError:
        raise
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise UnreadableSource(_reason(exc)) from None
    except ValueError as exc:
        raise UnreadableSource(_reason(exc)) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = next((k for test, k in _KINDS if test(st.st_mode)), "not a regular file")
            if kind == "a folder":
                raise IsADirectoryError(21, "Is a directory", s)
            raise UnreadableSource(f"it is {kind}, not a regular file")
        if st.st_size > limit:
            raise UnreadableSource(f"it is {st.st_size:,} bytes; a spec may hold at most {limit:,}")
        chunks, total = [], 0
        while total <= limit:
            chunk = os.read(fd, min(1 << 20, limit + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        if total > limit:  # the file grew while it was read
            raise UnreadableSource(f"it holds more than {limit:,} bytes, the most a spec may hold")
        return b"".join(chunks)
    except (UnreadableSource, IsADirectoryError):
        raise
    except OSError as exc:
        raise UnreadableSource(_reason(exc)) from None
    finally:
        os.close(fd)
