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
    """Raised by an op's attribute check; becomes E2xx at the attribute `key` where it names one,
    else at the call."""

    def __init__(self, message: str, hint: str | None = None, code: str = "E210", key: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.code = code
        self.key = key


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


# ---- pydantic's validation errors in the words of a spec ------------------------------------------

#: what a value must be, by pydantic error type
_MUST_BE = {
    "bool_parsing": "true or false", "bool_type": "true or false",
    "int_parsing": "a whole number", "int_type": "a whole number", "int_from_float": "a whole number",
    "float_parsing": "a number", "float_type": "a number", "finite_number": "a finite number",
    "string_type": "a string", "tuple_type": "a list", "list_type": "a list", "dict_type": "a set of options",
}


#: pydantic's bound errors: how to say them, and the key of their bound in the error's context
_BOUNDS = {"greater_than_equal": ("at least", "ge"), "greater_than": ("greater than", "gt"),
           "less_than_equal": ("at most", "le"), "less_than": ("less than", "lt")}


def _spec_value(v: object) -> str:
    """A value as a spec writes it: true/false, none, strings and names bare, lists in brackets."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "none"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_spec_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}: {_spec_value(x)}" for k, x in v.items()) + "}"
    return str(v)


def _requirement(e: dict) -> str:
    """One pydantic error as what the value must be: "a whole number", "at least 1", "one of same, valid"."""
    kind, ctx = e["type"], e.get("ctx") or {}
    if kind in _MUST_BE:
        return _MUST_BE[kind]
    if kind == "literal_error":
        words = [w.strip().strip("'\"") for w in str(ctx.get("expected", "")).replace(" or ", ", ").split(",")]
        return "one of " + ", ".join(f"`{w}`" for w in words if w)
    if kind in _BOUNDS:
        words, key = _BOUNDS[kind]
        return f"{words} {_spec_value(ctx.get(key))}"
    if kind == "too_short":
        return f"a list of at least {ctx.get('min_length')} values"
    if kind == "too_long":
        return f"a list of at most {ctx.get('max_length')} values"
    msg = str(e.get("msg", ""))
    msg = msg.removeprefix("Value error, ").removeprefix("Assertion failed, ")
    return msg[:1].lower() + msg[1:]


def validation_problems(exc: object) -> list[tuple[str, str, str]]:
    """(field, kind, text) for each field a pydantic ValidationError names, in order: kind
    "missing", "unknown" or "value"; for a value, the text says what it must be and what it got
    ("must be a whole number or a list; got `sideways`"). A value that matched none of a union's
    forms lists every form once."""
    by_field: dict[str, list[dict]] = {}
    for e in exc.errors():  # type: ignore[attr-defined]
        loc = e["loc"]
        field = str(loc[0]) if loc else ""
        by_field.setdefault(field, []).append(e)
    out: list[tuple[str, str, str]] = []
    for field, errors in by_field.items():
        kinds = {e["type"] for e in errors}
        if "missing" in kinds:
            out.append((field, "missing", ""))
            continue
        if "extra_forbidden" in kinds:
            out.append((field, "unknown", ""))
            continue
        # a bound that failed means the value had that form's type: the other forms are beside the point
        bounded = [e for e in errors if e["type"] in _BOUNDS or e["type"] in ("too_short", "too_long")]
        forms: list[str] = []
        for e in bounded or errors:
            r = _requirement(e)
            if r and r not in forms:
                forms.append(r)
        text = forms[0] if len(forms) == 1 else ", ".join(forms[:-1]) + " or " + forms[-1]
        got = errors[0].get("input")
        out.append((field, "value", f"must be {text}; got `{_spec_value(got)}`"))
    return out
