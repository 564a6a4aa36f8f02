"""Every limit dlspec holds untrusted input to, in one place.

Each limit is a named constant with a one-line description in `LIMITS`; `docs/security.md` shows
the table, and `tests/test_limits.py` checks that the table there matches this module and that
each limit is enforced as a coded error at the source location. The limits exist so that no
input makes dlspec hang, exhaust memory or overflow Python's stack: every check below fails in
well under a second, before any work proportional to the excess is done.

This module imports nothing from dlspec, so every layer may use it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

#: size of a spec file (and of each file it imports), in bytes
MAX_SPEC_BYTES = 8 * 1024 * 1024
#: nesting of one expression: parentheses, calls, operators, lists (a `->` chain is not nesting)
MAX_NESTING = 100
#: compile-time evaluation depth across blocks that use blocks (expressions inside blocks inside blocks)
MAX_EVAL_DEPTH = 400
#: blocks used inside blocks, counted from the model
MAX_BLOCK_DEPTH = 64
#: `layer * n` and `n * layer`: the largest repeat count
MAX_REPEAT = 100_000
#: layers in one model after blocks and repeats are expanded
MAX_LAYERS = 200_000
#: elements of a compile-time list or tuple (`[1] * n`, `a + b`)
MAX_LIST = 100_000
#: characters of a compile-time string (`"a" + "b"`)
MAX_STRING = 1_000_000
#: magnitude of a compile-time integer (a literal or the result of arithmetic): int64
MAX_INT = 2**63 - 1
#: terms of a symbolic dimension (`(batch + 1) * (seq + 2)` has 4)
MAX_SYM_TERMS = 64
#: degree of a symbolic dimension (`batch * seq * seq` has degree 3)
MAX_SYM_DEGREE = 8
#: a tensor dimension (an input's declared size, an integer attribute)
MAX_DIM = 2**31 - 1
#: layers of one recurrent op (`lstm(..., layers=n)`)
MAX_RNN_LAYERS = 1024
#: outputs of one `split`
MAX_SPLIT = 10_000
#: `dlspec check` warns when parameters plus one example's activations exceed this share of the budget
MEMORY_WARN_FRACTION = 0.25
#: environment variable that sets the memory budget in bytes (default: the machine's total memory)
MEMORY_BUDGET_ENV = "DLSPEC_MEMORY_BUDGET"
#: ONNX import: elements one constant may hold (initializers and folded constants, each)
MAX_ONNX_CONST_ELEMENTS = 256 * 1024 * 1024
#: ONNX import: elements all folded constants may hold together
MAX_ONNX_FOLD_ELEMENTS = 512 * 1024 * 1024
#: ONNX import: nodes of one graph
MAX_ONNX_NODES = 200_000
#: ONNX import: a dimension of a model input or of a folded constant
MAX_ONNX_DIM = 2**31 - 1
#: a path given on the command line or in a spec, in characters
MAX_PATH_CHARS = 4096


@dataclass(frozen=True)
class Limit:
    name: str
    value: int | float | str
    what: str
    code: str


#: the table docs/security.md shows (a test keeps the two equal)
LIMITS: tuple[Limit, ...] = (
    Limit("MAX_SPEC_BYTES", MAX_SPEC_BYTES, "size of a spec file or an imported file, in bytes", "E901 / E105"),
    Limit("regular files", "-", "a spec is a regular file: a device, FIFO or socket is refused unread", "E901 / E105"),
    Limit("MAX_NESTING", MAX_NESTING, "nesting of one expression (a `->` chain of any length is not nesting)", "E005"),
    Limit("MAX_EVAL_DEPTH", MAX_EVAL_DEPTH, "evaluation depth across blocks inside blocks", "E121"),
    Limit("MAX_BLOCK_DEPTH", MAX_BLOCK_DEPTH, "blocks used inside blocks", "E121"),
    Limit("MAX_REPEAT", MAX_REPEAT, "repeat count of `layer * n` / `n * layer` (at least 1: E210)", "E215"),
    Limit("MAX_LAYERS", MAX_LAYERS, "layers of one model after expansion", "E320"),
    Limit("MAX_LIST", MAX_LIST, "elements of a compile-time list or tuple", "E215"),
    Limit("MAX_STRING", MAX_STRING, "characters of a compile-time string", "E215"),
    Limit("MAX_INT", MAX_INT, "magnitude of a compile-time integer (literal or arithmetic)", "E214"),
    Limit("MAX_SYM_TERMS", MAX_SYM_TERMS, "terms of a symbolic dimension", "E214"),
    Limit("MAX_SYM_DEGREE", MAX_SYM_DEGREE, "degree of a symbolic dimension", "E214"),
    Limit("MAX_DIM", MAX_DIM, "a tensor dimension or integer attribute", "E312 / E210"),
    Limit("MAX_RNN_LAYERS", MAX_RNN_LAYERS, "`layers` of rnn, lstm, gru", "E210"),
    Limit("MAX_SPLIT", MAX_SPLIT, "parts of one `split`", "E210"),
    Limit("memory budget", "total RAM", f"parameters + one example's activations (`{MEMORY_BUDGET_ENV}` overrides)", "E322"),
    Limit("MEMORY_WARN_FRACTION", MEMORY_WARN_FRACTION, "share of the budget above which `check` warns", "W320"),
    Limit("MAX_ONNX_NODES", MAX_ONNX_NODES, "nodes of an imported ONNX graph", "E746"),
    Limit("MAX_ONNX_CONST_ELEMENTS", MAX_ONNX_CONST_ELEMENTS, "elements of one ONNX constant", "E746"),
    Limit("MAX_ONNX_FOLD_ELEMENTS", MAX_ONNX_FOLD_ELEMENTS, "elements of all folded ONNX constants", "E746"),
    Limit("MAX_ONNX_DIM", MAX_ONNX_DIM, "a dimension in an ONNX model", "E745 / E746"),
    Limit("MAX_PATH_CHARS", MAX_PATH_CHARS, "a file path", "E740 / E901"),
)


def total_memory() -> int | None:
    """The machine's physical memory in bytes, or None where the platform does not say."""
    try:
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        pages = size = -1
    if pages > 0 and size > 0:
        return int(pages) * int(size)
    try:
        import psutil  # type: ignore[import-not-found]

        return int(psutil.virtual_memory().total)
    except Exception:  # psutil missing or failing: no figure
        return None


def memory_budget() -> int | None:
    """Bytes a model's parameters and one example's activations may take: `DLSPEC_MEMORY_BUDGET`
    when set to a positive integer, else the machine's total memory."""
    raw = os.environ.get(MEMORY_BUDGET_ENV, "").strip()
    if raw:
        try:
            v = int(raw)
            if v > 0:
                return v
        except ValueError:
            pass
    return total_memory()


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} EiB"


def markdown_table() -> str:
    """The limits table of docs/security.md (`python -m dlspec.limits` prints it)."""
    rows = ["| limit | value | what it bounds | error |", "|---|---|---|---|"]
    for lim in LIMITS:
        value = f"{lim.value:,}" if isinstance(lim.value, int) else str(lim.value)
        rows.append(f"| `{lim.name}` | {value} | {lim.what} | {lim.code} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(markdown_table())
