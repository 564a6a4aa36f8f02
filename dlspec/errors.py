"""Diagnostics: every error a user can cause, with a code, a span, a message and a hint.

Codes are grouped by phase:

* E0xx — syntax (the text does not parse)
* E1xx — names and definitions (unknown layer, block, parameter, value; duplicates; imports)
* E2xx — compile-time values and arguments (types, arity, attribute validation)
* E3xx — shapes and dtypes
* E4xx — training recipes
* E5xx — transfer learning, weights files
* E9xx — command-line and environment (files, options)

`docs/errors.md` lists each code with an example and its fix.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Literal

from pydantic import BaseModel

from .source import SourceFile, Span

Severity = Literal["error", "warning"]


class Diagnostic(BaseModel):
    """One finding about a spec: structured so that tests and `--json` read fields, not prose."""

    code: str
    message: str
    span: Span | None = None
    hint: str | None = None
    severity: Severity = "error"
    notes: list[str] = []

    def to_json(self) -> dict:
        return {
            "file": self.span.file if self.span else None,
            "line": self.span.line if self.span else None,
            "column": self.span.column if self.span else None,
            "end_line": self.span.end_line if self.span else None,
            "end_column": self.span.end_column if self.span else None,
            "code": self.code,
            "severity": self.severity,
            "message": self.message,
            "hint": self.hint,
            "notes": self.notes,
        }

    def render(self, sources: dict[str, SourceFile] | None = None) -> str:
        """Format like a compiler: `file:line:col: error[E012]: message`, the line, a caret, a hint."""
        where = f"{self.span}: " if self.span else ""
        lines = [f"{where}{self.severity}[{self.code}]: {self.message}"]
        src = sources.get(self.span.file) if (sources and self.span) else None
        if src is not None and self.span is not None:
            text = src.line(self.span.line)
            if text:
                gutter = f"{self.span.line:>4} | "
                lines.append(gutter + text)
                end = self.span.end_column if self.span.end_line == self.span.line else len(text) + 1
                width = max(1, end - self.span.column)
                lines.append(" " * (len(gutter) + self.span.column - 1) + "^" * width)
        for note in self.notes:
            lines.append(f"  = note: {note}")
        if self.hint:
            lines.append(f"  = hint: {self.hint}")
        return "\n".join(lines)


class DlspecError(Exception):
    """The one exception type for user errors. Carries one or more diagnostics."""

    def __init__(self, diagnostics: Diagnostic | Iterable[Diagnostic]):
        if isinstance(diagnostics, Diagnostic):
            diagnostics = [diagnostics]
        self.diagnostics: list[Diagnostic] = list(diagnostics)
        super().__init__("\n".join(f"[{d.code}] {d.message}" for d in self.diagnostics))

    @property
    def first(self) -> Diagnostic:
        return self.diagnostics[0]

    @property
    def code(self) -> str:
        return self.first.code

    @property
    def span(self) -> Span | None:
        return self.first.span

    @property
    def hint(self) -> str | None:
        return self.first.hint

    @property
    def message(self) -> str:
        return self.first.message


def error(code: str, message: str, span: Span | None = None, hint: str | None = None) -> DlspecError:
    return DlspecError(Diagnostic(code=code, message=message, span=span, hint=hint))


class ShapeError(Exception):
    """Raised by an op's shape rule; the lowering attaches the span and turns it into E3xx."""

    def __init__(self, message: str, hint: str | None = None, code: str = "E301"):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.code = code


class AttrError(Exception):
    """Raised by an op's attribute check; becomes E2xx with the call's span."""

    def __init__(self, message: str, hint: str | None = None, code: str = "E210"):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.code = code


def did_you_mean(name: str, candidates: Iterable[str]) -> str | None:
    """A `did you mean` hint for a misspelt name, or None when nothing is close."""
    matches = difflib.get_close_matches(name, sorted(set(candidates)), n=1, cutoff=0.6)
    return f"did you mean `{matches[0]}`?" if matches else None


class Diagnostics:
    """Collects every diagnostic of a run so all errors in a file are reported together."""

    def __init__(self) -> None:
        self.items: list[Diagnostic] = []
        self._seen: set[tuple] = set()

    def add(self, diag: Diagnostic) -> None:
        key = (diag.code, diag.span, diag.message)
        if key not in self._seen:
            self._seen.add(key)
            self.items.append(diag)

    def extend(self, err: DlspecError) -> None:
        for d in err.diagnostics:
            self.add(d)

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.items if d.severity == "error"]

    def raise_if_errors(self) -> None:
        if self.errors:
            raise DlspecError(self.items)
