"""Python source that dlspec writes: the one place where data becomes text of a program.

Every name from a spec, an imported model or a run folder reaches generated code through
`ident` (a Python identifier that shadows nothing the code needs), every value through `literal`
(a Python literal that evaluates back to the value, `float("inf")` included), and every text in a
docstring or comment through `doc_text` (no quote, backslash or newline can end it). Nothing
else formats data into source.

`check_module_source` is the gate in front of `exec`: generated source runs only when its syntax
tree holds nothing but what the generator itself writes (known imports, the allowed calls, the
names it defined, no dunder attributes), so a gap in any emitter is an error, never code run.
"""

from __future__ import annotations

import ast
import builtins
import keyword
import math
import re
from collections.abc import Iterable
from typing import Any

#: names generated code must never shadow: keywords, builtins, the modules and helpers it uses
RESERVED: frozenset[str] = frozenset(
    set(keyword.kwlist) | set(keyword.softkwlist) | set(dir(builtins))
    | {"self", "torch", "nn", "F", "math", "os", "keras", "layers", "ops", "np", "numpy"}
)


def ident(name: str, used: set[str] | None = None, reserved: Iterable[str] = ()) -> str:
    """A valid Python identifier for a spec name that is no keyword, builtin or name in
    `reserved`, and (with `used`) unique among the names already handed out."""
    s = re.sub(r"\W", "_", name, flags=re.ASCII)
    if not s or s[0].isdigit():
        s = "v_" + s
    taken = RESERVED | set(reserved)
    while s in taken or s.startswith("__"):
        s = s.lstrip("_") + "_" if s.startswith("__") else s + "_"
    if used is not None:
        base, i = s, 1
        while s in used:
            s = f"{base}_{i}"
            i += 1
        used.add(s)
    return s


def literal(v: Any) -> str:
    """Python source for a plain value (None, bool, int, float, str, and tuples, lists and dicts
    of them) that evaluates back to an equal value. Anything else is a bug in the caller."""
    if v is None or isinstance(v, (bool, int)):
        return repr(v)
    if isinstance(v, float):
        if math.isnan(v):
            return 'float("nan")'
        if math.isinf(v):
            return 'float("inf")' if v > 0 else '-float("inf")'
        return repr(v)
    if isinstance(v, str):
        return _string(v)
    if isinstance(v, tuple):
        inner = ", ".join(literal(x) for x in v)
        return f"({inner},)" if len(v) == 1 else f"({inner})"
    if isinstance(v, list):
        return "[" + ", ".join(literal(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{literal(k)}: {literal(x)}" for k, x in v.items()) + "}"
    raise TypeError(f"no Python literal for a {type(v).__name__}")


def _string(s: str) -> str:
    """A string literal in double quotes unless that needs more escapes (as `ruff format` writes it)."""
    r = repr(s)
    if r[0] == "'" and s.count('"') <= s.count("'"):
        body = r[1:-1].replace("\\'", "'").replace('"', '\\"')
        return f'"{body}"'
    return r


def doc_text(s: object) -> str:
    """Text that is safe inside a `\"\"\"` docstring or after `#`: ASCII, with backslashes, quotes
    and line breaks escaped, so it can neither end the docstring nor start a line of code."""
    text = str(s).encode("unicode_escape").decode("ascii")
    return text.replace('"', '\\"').replace("'", "\\'")


class UnsafeSourceError(RuntimeError):
    """Generated source holds a construct the generator never writes: it is not executed."""


_ALWAYS_ALLOWED_NAMES = frozenset({"self", "super", "torch", "nn", "F", "math"})
_IMPORTS = frozenset({"torch", "torch.nn", "torch.nn.functional", "math"})
_FORBIDDEN_NODES = (ast.Lambda, ast.Global, ast.Nonlocal, ast.Delete, ast.With, ast.AsyncWith, ast.Try,
                    ast.Raise, ast.AsyncFunctionDef, ast.Await, ast.Yield, ast.YieldFrom, ast.NamedExpr,
                    ast.JoinedStr, ast.Starred, ast.While, ast.GeneratorExp, ast.ListComp, ast.DictComp,
                    ast.SetComp)


def _dotted(node: ast.AST) -> str | None:
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        return ".".join([node.id, *reversed(parts)])
    return None


def check_module_source(src: str, calls: frozenset[str], methods: frozenset[str],
                        helpers: frozenset[str] = frozenset()) -> None:
    """Raise UnsafeSourceError unless `src` uses only: imports of torch and math, the dotted
    calls in `calls` (`torch.relu`, `nn.Conv2d`), method calls named in `methods` on values,
    calls of submodules (`self.conv(x)`, `self._modules['a'](x)`), the functions in `helpers`,
    the classes it defines (plain `nn.Module` subclasses), names it binds itself, and no dunder
    attribute but `super().__init__`."""
    tree = ast.parse(src)
    bound: set[str] = set(_ALWAYS_ALLOWED_NAMES) | set(helpers)
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            bound.add(node.name)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            bound.add(node.id)
    allowed_builtins = {"int", "len", "range", "max", "min", "list", "tuple", "bool", "float", "dict", "str"}
    classes = {node.name for node in ast.walk(tree) if isinstance(node, ast.ClassDef)}
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and (
                node.decorator_list or node.keywords or [_dotted(b) for b in node.bases] != ["nn.Module"]):
            raise UnsafeSourceError(f"line {node.lineno}: class {node.name} is not a plain nn.Module")
        if isinstance(node, _FORBIDDEN_NODES):
            raise UnsafeSourceError(f"line {node.lineno}: {type(node).__name__} is never generated")
        if isinstance(node, ast.Import):
            bad = [a.name for a in node.names if a.name not in _IMPORTS]
            if bad:
                raise UnsafeSourceError(f"line {node.lineno}: import of {bad[0]}")
        elif isinstance(node, ast.ImportFrom):
            full = [f"{node.module}.{a.name}" for a in node.names]
            if node.level or any(f not in _IMPORTS for f in full):
                raise UnsafeSourceError(f"line {node.lineno}: import from {node.module}")
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
            if node.id not in bound and node.id not in allowed_builtins:
                raise UnsafeSourceError(f"line {node.lineno}: unknown name {node.id!r}")
        elif isinstance(node, ast.Attribute) and node.attr.startswith("__"):
            is_init = (node.attr == "__init__" and isinstance(node.value, ast.Call)
                       and _dotted(node.value.func) == "super")
            if not is_init:
                raise UnsafeSourceError(f"line {node.lineno}: attribute {node.attr!r}")
        elif isinstance(node, ast.Call):
            _check_call(node, calls, methods, helpers | allowed_builtins | classes)


def _check_call(node: ast.Call, calls: frozenset[str], methods: frozenset[str], functions: set[str]) -> None:
    func = node.func
    name = _dotted(func)
    if name is not None and name.split(".")[0] in ("torch", "nn", "F", "math"):
        if name not in calls:
            raise UnsafeSourceError(f"line {node.lineno}: call of {name}")
        return
    if isinstance(func, ast.Name):
        if func.id not in functions and func.id != "super":
            raise UnsafeSourceError(f"line {node.lineno}: call of {func.id!r}")
        return
    if isinstance(func, ast.Subscript):  # self._modules['block']['conv'](x)
        return
    if isinstance(func, ast.Attribute):
        owner = func.value
        if isinstance(owner, ast.Name) and owner.id == "self":
            return  # a submodule or an nn.Module method of the generated class
        if func.attr == "__init__" and isinstance(owner, ast.Call) and _dotted(owner.func) == "super":
            return
        if func.attr in methods:
            return
        raise UnsafeSourceError(f"line {node.lineno}: method {func.attr!r}")
    raise UnsafeSourceError(f"line {node.lineno}: a call of an expression")
