"""Search values in the language: `choice(...)`, `range(lo, hi[, log])`, `log_range(lo, hi)` and
`int_range(lo, hi)`, where a number, an option or a layer may stand.

The evaluator (`lower.py`) hands each such call here. Its arguments are type-checked (located
errors E940-E945: an empty range, a log range through 0, options of mixed types, ...), then a
*picker* gives it its value:

* no picker (`dlspec check`, `summary`, `train`): the default (`default=`, else the first option
  of a choice, the middle of a range, geometric for a log range);
* `FixedPicker`: the values of one configuration, by name (the best spec, a trial's spec);
* `OptunaPicker`: an Optuna trial's `suggest_*` calls, asked only for the values the evaluation
  reaches, so a value inside the option of a `choice` exists only when that option is chosen
  (conditional parameters).

Each search value is one parameter of the space, named by where it stands (`lr`, `optimizer`,
`stage1.out`, or `name="width"`); a search value inside a block used twice takes one value.
`concrete_text` writes a spec with every search value replaced by the value a picker gave it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from . import ast
from .source import Span

SEARCH_FUNCTIONS = ("choice", "range", "log_range", "int_range")
#: the options each search function takes besides its positional arguments
_OPTIONS = {"choice": ("default", "name"), "range": ("log", "step", "default", "name"),
            "log_range": ("default", "name"), "int_range": ("log", "step", "default", "name")}

Key = tuple[int, int]  # (line, column) of the call in the spec file


def key_of(span: Span) -> Key:
    return (span.line, span.column)


# ---- the evaluator's side --------------------------------------------------------------------


def search_value(ev: Any, node: ast.Call, scope: Any) -> Any:
    """The value of the search call `node` (called by the evaluator in place of a layer call)."""
    fname = node.func.name  # type: ignore[attr-defined]
    picker = getattr(ev, "search", None)
    kwargs: dict[str, ast.Kwarg] = {}
    for k in node.kwargs:
        if k.name not in _OPTIONS[fname]:
            raise ev.fail("E945", f"`{fname}` has no option `{k.name}`", k.span,
                          hint=f"its options: {', '.join(_OPTIONS[fname])}")
        kwargs[k.name] = k
    if "name" in kwargs:
        n = kwargs["name"].value
        if not (isinstance(n, ast.Literal) and isinstance(n.value, str) and n.value.isidentifier()):
            raise ev.fail("E945", f"`name=` of `{fname}` is a string such as \"width\" (letters, digits, _)",
                          kwargs["name"].span)
    if picker is not None and picker.file is not None and node.span.file != picker.file:
        raise ev.fail("E948", f"a search value in the imported file {node.span.file}: only the searched spec's own "
                      "search values are searched (and written into its concrete spec)", node.span,
                      hint="move the search value into the spec searched, e.g. as a block or model argument")
    if fname == "choice":
        return _choice(ev, node, kwargs, scope, picker)
    return _number(ev, node, fname, kwargs, scope, picker)


def _literal(node: ast.Node) -> tuple[bool, Any]:
    """(True, value) for a literal option (a negated number too); (False, None) otherwise."""
    if isinstance(node, ast.Literal):
        return True, node.value
    if isinstance(node, ast.UnaryOp) and node.op == "-" and isinstance(node.operand, ast.Literal) \
            and isinstance(node.operand.value, (int, float)) and not isinstance(node.operand.value, bool):
        return True, -node.operand.value
    return False, None


def _kind(v: Any) -> str:
    if v is None:
        return "none"
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, (int, float)):
        return "number"
    if isinstance(v, str):
        return "string"
    return type(v).__name__


def _choice(ev: Any, node: ast.Call, kwargs: dict[str, ast.Kwarg], scope: Any, picker: Any) -> Any:
    opts = node.args
    if not opts:
        raise ev.fail("E940", "`choice()` has no options: the space is empty", node.span,
                      hint="give two or more options: choice(32, 64, 128)")
    literals = [_literal(o) for o in opts]
    kinds = {_kind(v) for is_lit, v in literals if is_lit}
    if any(not is_lit for is_lit, _ in literals) and kinds:
        bad = next(o for o, (is_lit, _) in zip(opts, literals) if is_lit)
        raise ev.fail("E942", "`choice` mixes plain values and layers or calls", bad.span,
                      hint="the options of one choice are all numbers, all strings, or all layers/calls")
    if len(kinds - {"none"}) > 1:
        first = _kind(next(v for is_lit, v in literals if v is not None))
        bad = next(o for o, (_, v) in zip(opts, literals) if v is not None and _kind(v) != first)
        raise ev.fail("E942", f"`choice` mixes option types: this option is a {_kind(_literal(bad)[1])}, "
                      f"the first is a {first}", bad.span, hint="the options of one choice are all of one type")
    for name, src in getattr(ev.defs, "sources", {}).items():  # the texts the options are shown by
        _TEXTS[name] = src.text
    labels = [label_of(o, lit) for o, lit in zip(opts, literals)]
    for i, lab in enumerate(labels):
        if lab in labels[:i]:
            raise ev.fail("E943", f"`choice` has the option {lab} twice", opts[i].span,
                          hint="each option once (weights would only bias random sampling)")
    default = 0
    if "default" in kwargs:
        d = kwargs["default"].value
        is_lit, v = _literal(d)
        want = label_of(d, (is_lit, v))
        if want not in labels:
            raise ev.fail("E944", f"`default=` of `choice` is {want}, which is not one of its options", d.span,
                          hint=f"options: {', '.join(labels)}")
        default = labels.index(want)
    # plain options go to the sampler as values (numbers stay numbers in its model and plots)
    options = [v if is_lit else lab for (is_lit, v), lab in zip(literals, labels)]
    idx = default if picker is None else picker.pick_choice(node, labels, options, default)
    return ev.ev(opts[idx], scope)


def label_of(node: ast.Node, lit: tuple[bool, Any]) -> str:
    """How a choice's option is shown and stored: its value for a literal, else its source text."""
    is_lit, v = lit
    if is_lit:
        return format_literal(v)
    return _source_text(node)


_TEXTS: dict[str, str] = {}


def _source_text(node: ast.Node) -> str:
    text = _TEXTS.get(node.span.file)
    if text is None:
        from pathlib import Path

        try:
            text = Path(node.span.file).read_text(encoding="utf-8")
        except OSError:
            return f"<option at {node.span}>"
        _TEXTS[node.span.file] = text
    return " ".join(slice_span(text, node.span).split())


def remember_text(name: str, text: str) -> None:
    """The text of a spec compiled from memory, for the labels of its options."""
    _TEXTS[name] = text


def _number(ev: Any, node: ast.Call, fname: str, kwargs: dict[str, ast.Kwarg], scope: Any, picker: Any) -> Any:
    args = list(node.args)
    log = fname == "log_range"
    if fname == "range" and len(args) == 3 and isinstance(args[2], ast.Var) and args[2].name == "log":
        log = True
        args = args[:2]
    if len(args) != 2:
        raise ev.fail("E943", f"`{fname}` takes a low and a high bound: {fname}(lo, hi"
                      f"{', log' if fname == 'range' else ''}); got {len(node.args)} argument(s)", node.span)
    integer = fname == "int_range"
    lo, hi = (ev.ev(a, scope) for a in args)
    for a, v in zip(args, (lo, hi)):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            from .values import describe

            raise ev.fail("E943", f"a bound of `{fname}` is a number; got {describe(v)}", a.span)
        if integer and not isinstance(v, int):
            raise ev.fail("E943", f"a bound of `int_range` is an int; got {v!r}", a.span,
                          hint="use range(lo, hi) for a float")
        if isinstance(v, float) and not math.isfinite(v):
            raise ev.fail("E943", f"a bound of `{fname}` is finite; got {v!r}", a.span)
    step = None
    if "log" in kwargs:
        lv = kwargs["log"].value
        if not (isinstance(lv, ast.Literal) and isinstance(lv.value, bool)):
            raise ev.fail("E943", "`log=` is true or false", kwargs["log"].span)
        log = log or lv.value
    if "step" in kwargs:
        step = ev.ev(kwargs["step"].value, scope)
        if isinstance(step, bool) or not isinstance(step, (int, float)) or step <= 0 or \
                (integer and not isinstance(step, int)):
            raise ev.fail("E943", f"`step=` of `{fname}` is a positive {'int' if integer else 'number'}; got {step!r}",
                          kwargs["step"].span)
        if log:
            raise ev.fail("E943", f"`{fname}` cannot have both `step=` and a log scale", kwargs["step"].span,
                          hint="a log range is sampled on a continuous log scale; drop one of them")
    if lo > hi or (lo == hi and not integer):
        raise ev.fail("E940", f"`{fname}({_fmt(lo)}, {_fmt(hi)})` is empty: its low bound is not below its high bound",
                      node.span, hint=f"write {fname}({_fmt(min(lo, hi))}, {_fmt(max(lo, hi))})" if lo != hi else
                      "a single value needs no search: write the number itself")
    if log and lo <= 0:
        raise ev.fail("E941", f"the log range `{fname}({_fmt(lo)}, {_fmt(hi)})` reaches 0 or below: its logarithm "
                      "is undefined there", args[0].span, hint="give a positive low bound, such as 1e-5")
    default = _middle(lo, hi, log, step, integer)
    if "default" in kwargs:
        d = ev.ev(kwargs["default"].value, scope)
        if isinstance(d, bool) or not isinstance(d, (int, float)) or not lo <= d <= hi or \
                (integer and not isinstance(d, int)):
            raise ev.fail("E944", f"`default=` of `{fname}` lies in [{_fmt(lo)}, {_fmt(hi)}]; got {d!r}",
                          kwargs["default"].span)
        default = d
    if picker is None:
        return default
    return picker.pick_number(node, "int" if integer else "float", lo, hi, log, step, default)


def _middle(lo: float, hi: float, log: bool, step: float | None, integer: bool) -> Any:
    mid = math.sqrt(lo * hi) if log else (lo + hi) / 2
    if step:
        mid = lo + step * math.floor((mid - lo) / step + 0.5)
        mid = min(mid, hi)
    if integer:
        return int(round(mid)) if not step else int(mid)
    return float(mid)


def _fmt(v: Any) -> str:
    return format_literal(v)


def format_literal(v: Any) -> str:
    """A value as dlspec source text."""
    if v is None:
        return "none"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        r = repr(v)
        return r if ("." in r or "e" in r or "inf" in r or "nan" in r) else r + ".0"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return str(v)


# ---- pickers ---------------------------------------------------------------------------------


class Picker:
    """Gives each search value of one configuration its value, and remembers them."""

    def __init__(self, names: dict[Key, str], file: str | None = None):
        self.names = names
        self.file = file  # the spec searched: search values of other (imported) files are refused
        self.choices: dict[Key, int] = {}  # a choice's option index, by the call's place
        self.numbers: dict[Key, Any] = {}
        self.params: dict[str, Any] = {}  # by parameter name: what the trials table shows

    def name(self, node: ast.Call) -> str:
        return self.names.get(key_of(node.span)) or f"{node.func.name}@{node.span.line}:{node.span.column}"  # type: ignore[attr-defined]

    def pick_choice(self, node: ast.Call, labels: list[str], options: list[Any], default: int) -> int:
        k = key_of(node.span)
        if k not in self.choices:
            self.choices[k] = self._choice(self.name(node), labels, options, default)
            self.params[self.name(node)] = options[self.choices[k]]
        return self.choices[k]

    def pick_number(self, node: ast.Call, kind: str, lo: Any, hi: Any, log: bool, step: Any, default: Any) -> Any:
        k = key_of(node.span)
        if k not in self.numbers:
            self.numbers[k] = self._number(self.name(node), kind, lo, hi, log, step, default)
            self.params[self.name(node)] = self.numbers[k]
        return self.numbers[k]

    def _choice(self, name: str, labels: list[str], options: list[Any], default: int) -> int:
        return default

    def _number(self, name: str, kind: str, lo, hi, log, step, default) -> Any:
        return default


class FixedPicker(Picker):
    """The values of one configuration, by parameter name (absent ones: the default)."""

    def __init__(self, names: dict[Key, str], values: dict[str, Any]):
        super().__init__(names)
        self.values = values

    def _choice(self, name, labels, options, default):
        if name in self.values:
            want = self.values[name]
            for i, opt in enumerate(options):
                if type(opt) is type(want) and opt == want:
                    return i
            if isinstance(want, str) and want in labels:
                return labels.index(want)
            if format_literal(want) in labels:
                return labels.index(format_literal(want))
        return default

    def _number(self, name, kind, lo, hi, log, step, default):
        v = self.values.get(name, default)
        return int(v) if kind == "int" else float(v)


class OptunaPicker(Picker):
    """Asks an Optuna trial (define-by-run: only the values the evaluation reaches)."""

    def __init__(self, names: dict[Key, str], trial: Any):
        super().__init__(names)
        self.trial = trial

    def _choice(self, name, labels, options, default):
        picked = self.trial.suggest_categorical(name, options)
        return next(i for i, o in enumerate(options) if type(o) is type(picked) and o == picked)

    def _number(self, name, kind, lo, hi, log, step, default):
        if kind == "int":
            return self.trial.suggest_int(name, lo, hi, step=step or 1, log=log)
        return self.trial.suggest_float(name, float(lo), float(hi), step=step, log=log)


# ---- the space, read from the source ---------------------------------------------------------


@dataclass
class Dim:
    """One search value in the spec's text."""

    name: str
    func: str
    node: ast.Call
    where: str  # model/block/recipe it stands in
    explicit: bool = False
    children: list[Dim] = field(default_factory=list)

    @property
    def key(self) -> Key:
        return key_of(self.node.span)

    @property
    def span(self) -> Span:
        return self.node.span


@dataclass
class Space:
    dims: list[Dim]  # every search value, outer ones first
    top: list[Dim]  # the ones not inside another search value
    search_entry: ast.Assign | None  # the recipe's `search = {...}` line
    recipe: str | None

    @property
    def names(self) -> dict[Key, str]:
        return {d.key: d.name for d in self.dims}

    def dim(self, name: str) -> Dim | None:
        return next((d for d in self.dims if d.name == name), None)


def is_search_call(node: Any) -> bool:
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Var) and node.func.name in SEARCH_FUNCTIONS


def read_space(module: ast.Module, recipe: str | None = None) -> Space:
    """The search values of a parsed spec, each named (see the module docstring)."""
    found: list[tuple[Dim, list[str]]] = []  # with the candidate names, most specific last
    entry: ast.Assign | None = None
    recipe_name = None

    def walk(node: Any, ctx: list[str], where: str, parent: Dim | None, named: bool = False) -> None:
        if isinstance(node, list):
            for x in node:
                walk(x, ctx, where, parent)
            return
        if not isinstance(node, ast.Node):
            return
        if is_search_call(node):
            explicit = next((k.value.value for k in node.kwargs if k.name == "name" and isinstance(k.value, ast.Literal)
                             and isinstance(k.value.value, str)), None)
            d = Dim(explicit or "", node.func.name, node, where, explicit=explicit is not None)
            found.append((d, [explicit] if explicit else list(ctx) or [node.func.name]))
            (parent.children if parent else top).append(d)
            for a in node.args:
                walk(a, ctx, where, d)
            for k in node.kwargs:
                walk(k.value, ctx, where, d)
            return
        if isinstance(node, ast.Call):
            fname = node.func.name if isinstance(node.func, ast.Var) else "call"
            params = block_params.get(fname)
            for i, a in enumerate(node.args):
                if params is not None and i < len(params):
                    label = [params[i]] if named else [fname, params[i]]
                else:
                    label = [] if named and i == 0 else [fname] if i == 0 else [f"{fname}_{i}"]
                walk(a, ctx + label, where, parent)
            for k in node.kwargs:  # `as name` names the layer: its options need no layer name
                walk(k.value, ctx + ([k.name] if named else [fname, k.name]), where, parent)
            return
        if isinstance(node, ast.ForStmt) and isinstance(node.iterable, ast.Call) \
                and isinstance(node.iterable.func, ast.Var) and node.iterable.func.name == "range":
            # `for i in range(n)` is Python's range (dlspec/lower.py `Evaluator.loop`), not a search value
            walk(node.iterable.args, ctx, where, parent)
            walk(node.iterable.kwargs, ctx, where, parent)
            walk(node.body, ctx, where, parent)
            return
        if isinstance(node, ast.NamedLayer):
            walk(node.layer, ctx + [node.name], where, parent, named=isinstance(node.layer, ast.Call))
            return
        if isinstance(node, ast.Assign):
            walk(node.value, ctx + [node.targets[0]], where, parent)
            return
        if isinstance(node, ast.Param):
            if node.default is not None:
                walk(node.default, ctx + [node.name], where, parent)
            return
        for f in getattr(node, "__dataclass_fields__", {}):
            if f != "span":
                walk(getattr(node, f), ctx, where, parent)

    top: list[Dim] = []
    block_params = {item.name: [p.name for p in item.params] for item in module.items
                    if isinstance(item, (ast.BlockDef, ast.ModelDef))}
    for item in module.items:
        if isinstance(item, (ast.BlockDef, ast.ModelDef)):
            walk(item.params, [], item.name, None)
            if isinstance(item, ast.ModelDef) and item.base is not None:
                walk(item.base, [], item.name, None)
            walk(item.body, [], item.name, None)
        elif isinstance(item, ast.TrainDef):
            if recipe is None or item.name == recipe:
                recipe_name = item.name
            for stmt in item.body:
                if isinstance(stmt, ast.Assign) and stmt.targets == ["search"] and \
                        (recipe is None or item.name == recipe):
                    entry = stmt
            walk(item.args, [], item.name, None)
            walk([k.value for k in item.kwargs], [], item.name, None)
            walk(item.body, [], item.name, None)
    _name(found)
    return Space([d for d, _ in found], top, entry, recipe_name)


def _name(found: list[tuple[Dim, list[str]]]) -> None:
    """The shortest name, read from the innermost context outwards, that no other value shares."""

    def candidates(d: Dim, ctx: list[str]) -> list[str]:
        if d.explicit:
            return [d.name]
        out = []
        for n in range(1, len(ctx) + 1):
            out.append(".".join(ctx[-n:]))
        out.append(f"{d.where}.{'.'.join(ctx)}")
        out.append(f"{d.where}.{'.'.join(ctx)}@{d.node.span.line}:{d.node.span.column}")
        return out

    cands = [candidates(d, ctx) for d, ctx in found]
    level = [0] * len(found)
    for _ in range(4):
        names = [c[min(i, len(c) - 1)] for c, i in zip(cands, level)]
        clash = False
        for j, n in enumerate(names):
            if names.count(n) > 1 and not found[j][0].explicit:
                level[j] += 1
                clash = True
        if not clash:
            break
    for (d, _), c, i in zip(found, cands, level):
        if not d.explicit:
            d.name = c[min(i, len(c) - 1)]
    seen: dict[str, int] = {}
    for d, _ in found:  # a last resort that keeps names unique whatever the text
        if d.name in seen:
            seen[d.name] += 1
            d.name = f"{d.name}@{d.node.span.line}:{d.node.span.column}"
        seen[d.name] = 1


# ---- a concrete spec -------------------------------------------------------------------------


def _offsets(text: str) -> list[int]:
    starts = [0]
    for i, ch in enumerate(text):
        if ch == "\n":
            starts.append(i + 1)
    return starts


def _pos(starts: list[int], line: int, column: int) -> int:
    return starts[line - 1] + column - 1


def slice_span(text: str, span: Span) -> str:
    starts = _offsets(text)
    return text[_pos(starts, span.line, span.column):_pos(starts, span.end_line, span.end_column)]


def concrete_text(text: str, space: Space, picker: Picker, header: str = "") -> str:
    """`text` with every search value the picker gave a value replaced by that value (a choice by
    its chosen option, written out as it stands), and the `search = {...}` line left out."""
    starts = _offsets(text)

    def at(span: Span) -> tuple[int, int]:
        return _pos(starts, span.line, span.column), _pos(starts, span.end_line, span.end_column)

    def render(a: int, b: int, dims: list[Dim]) -> str:
        out, cur = [], a
        for d in sorted(dims, key=lambda d: at(d.span)[0]):
            s, e = at(d.span)
            if s < a or e > b:
                continue
            out.append(text[cur:s])
            out.append(replacement(d))
            cur = e
        out.append(text[cur:b])
        return "".join(out)

    def replacement(d: Dim) -> str:
        s, e = at(d.span)
        if d.func == "choice" and d.key in picker.choices:
            opt = d.node.args[picker.choices[d.key]]
            os_, oe = at(opt.span)
            return render(os_, oe, d.children)
        if d.func != "choice" and d.key in picker.numbers:
            return format_literal(picker.numbers[d.key])
        return render(s, e, d.children)  # never reached by the evaluation: left as written

    body = render(0, len(text), space.top)
    if space.search_entry is not None:
        entry_text = render(*at(space.search_entry.span), [])
        i = body.find(entry_text)
        if i >= 0:
            line_start = body.rfind("\n", 0, i) + 1
            line_end = body.find("\n", i + len(entry_text))
            rest = body[i + len(entry_text):line_end if line_end >= 0 else len(body)]
            if not body[line_start:i].strip() and not rest.strip():
                body = body[:line_start] + body[(line_end + 1) if line_end >= 0 else len(body):]
            else:
                body = body[:i] + body[i + len(entry_text):]
    return header + body
