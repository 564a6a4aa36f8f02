"""`dlspec check` on a spec whose search values' defaults fail the checker: the file is valid
when some configuration of its space passes (W940 then says the default does not)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ..errors import Diagnostic, DlspecError

_CALL = re.compile(r"\b(choice|range|log_range|int_range)\s*\(")


def compile_space(path: Path, failure: DlspecError) -> tuple[Any, list[Diagnostic]]:
    """(a valid configuration's program, warnings) for a search spec with a valid configuration;
    re-raises `failure` (the default configuration's errors) for any other file."""
    from ..program import read_source

    if any(d.code.startswith(("E0", "E9")) for d in failure.diagnostics):
        raise failure  # unreadable (E9xx: a device, a fifo, too large) or unparsable: the errors stand
    try:
        text = read_source(path).text  # the same limits as the compiler: never an unbounded read
    except DlspecError:
        raise failure from None
    if not _CALL.search(text) or any(d.code.startswith(("E0", "E94")) for d in failure.diagnostics):
        raise failure  # no search values, a syntax error, or a malformed space: the errors stand
    from .study import load_plan, preflight

    try:
        plan = load_plan(Path(path))
        probe, _, warnings = preflight(plan, for_search=False)
    except DlspecError as exc:
        if any(d.code == "E949" for d in exc.diagnostics):
            raise exc from None
        raise failure from None
    return probe.program, warnings
