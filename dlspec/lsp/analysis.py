"""What the language server knows about one document, independent of the protocol: its
diagnostics, the tensor type every layer call and value produced while it was lowered, its
definitions and the names that refer to them.

An `Analysis` compiles the document once with the ordinary compiler (`compile_source`), watching
the evaluator: every layer or block application, every tensor-valued name and every assignment is
recorded with its source span, so a hover or an inlay hint is a lookup. `Workspace` keeps the
parsed imports between edits (`CachingLoader`) and the analysis of each text it has seen.

Positions here are 0-based lines and columns, as the protocol counts them; spans are the
compiler's (1-based, end exclusive).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .. import ast
from ..backends.targets import target_check
from ..errors import Diagnostic, Diagnostics, DlspecError
from ..fmt import Token, tokenize
from ..lower import Definitions, Evaluator, Loader
from ..program import compile_source
from ..source import SourceFile, Span
from ..values import Tensor

#: the warnings for backends that refuse a model (W108), against those `dlspec check` uses
_TARGET_CHECK = target_check()
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def span_key(sp: Span) -> tuple[str, int, int, int, int]:
    return (sp.file, sp.line, sp.column, sp.end_line, sp.end_column)


def contains(sp: Span, line: int, col: int) -> bool:
    """Whether the 0-based position (line, col) lies inside the span (its end included, so the
    cursor just after a name still counts)."""
    start = (sp.line - 1, sp.column - 1)
    end = (sp.end_line - 1, sp.end_column - 1)
    return start <= (line, col) <= end


def span_size(sp: Span) -> tuple[int, int]:
    return (sp.end_line - sp.line, sp.end_column - sp.column if sp.end_line == sp.line else 10**6)


@dataclass
class Evaluation:
    """One application of a layer or block (or one tensor value) while a model was lowered."""

    what: str  # "conv2d", "block Basic", "value x"
    types: list[Any]  # TensorType of each output
    nodes: list[Any] = field(default_factory=list)  # IR nodes it added
    values: dict[str, Any] = field(default_factory=dict)  # the graph's value table (for the nodes' inputs)


@dataclass
class Definition:
    name: str
    kind: str  # "block", "model", "train", "param", "input", "value", "layer"
    file: str
    name_span: Span  # the name itself
    span: Span  # the whole definition
    detail: str = ""
    doc: str = ""
    children: list[Definition] = field(default_factory=list)


class CachingLoader(Loader):
    """A loader that keeps what an imported file defines (and the diagnostics it gave) across
    compilations, until that file or one it imports changes on disk."""

    def __init__(self, diags: Diagnostics, shared: dict[str, Any], unsaved: dict[str, str] | None = None):
        super().__init__(diags)
        self._shared = shared
        self._unsaved = unsaved or {}

    def load(self, src: SourceFile, base_dir: Path | None = None) -> Definitions:
        if not self._stack:  # the document itself: always compiled afresh
            return super().load(src, base_dir)
        if self._unsaved:  # an imported file open in the editor: its text there, saved or not
            text = self._unsaved.get(_absolute(src.name))
            if text is not None and text != src.text:
                return super().load(SourceFile(src.name, text), base_dir)
        hit = self._shared.get(src.name)
        if hit is not None:
            text, stamps, defs, diags, sources = hit
            if text == src.text and all(_stamp(p) == s for p, s in stamps.items()):
                for d in diags:
                    self.diags.add(d)
                self.sources.update(sources)
                return defs
        before = len(self.diags.items)
        known = set(self.sources)
        defs = super().load(src, base_dir)
        added = {k: v for k, v in self.sources.items() if k not in known or k == src.name}
        stamps = {k: _stamp(k) for k in added}
        self._shared[src.name] = (src.text, stamps, defs, list(self.diags.items[before:]), added)
        return defs


def _absolute(path: str) -> str:
    try:
        return str(Path(path).resolve())
    except (OSError, RuntimeError, ValueError):
        return path


def _stamp(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size)


class Analysis:
    """One compilation of a document's text, with everything the editor asks about it."""

    def __init__(self, path: str, text: str, shared_imports: dict[str, Any] | None = None,
                 unsaved: dict[str, str] | None = None):
        self.path = path
        self.text = text
        self.lines = text.splitlines()
        self.evaluations: dict[tuple, list[Evaluation]] = {}
        self.spans: dict[tuple, Span] = {}
        self.call_stacks: dict[tuple, list[tuple[str, Span]]] = {}
        self.defs: Definitions | None = None
        self.diagnostics: list[Diagnostic] = []
        self.sources: dict[str, SourceFile] = {}
        self.graphs: dict[str, Any] = {}
        loader = CachingLoader(Diagnostics(), shared_imports if shared_imports is not None else {}, unsaved)
        try:
            program = compile_source(SourceFile(path, text), loader=loader, observe=self._observe,
                                     lint=True, target_check=_TARGET_CHECK)
            self.diagnostics = list(program.warnings)
            self.graphs = dict(program.models)
        except DlspecError as exc:
            self.diagnostics = list(exc.diagnostics)
        self.sources = dict(loader.sources)
        if self.defs is None:  # the file did not parse or its imports failed: what it defines is unknown
            self.defs = Definitions()
        self._tokens: dict[str, list[Token]] = {}

    # ---- watching the evaluator ---------------------------------------------------------------
    def _observe(self, ev: Evaluator) -> None:
        self.defs = ev.defs
        apply, var, bind, model_input, binop, fail = ev.apply, ev._var, ev._bind, ev._model_input, ev._binop, ev.fail

        def watched_apply(fn, inputs, scope, span):
            b = ev.builder
            before = len(b.nodes) if b is not None else 0
            result = apply(fn, inputs, scope, span)
            if b is not None and span is not None:
                self._record(span, _describe(fn), result, b.nodes[before:], b.values)
            return result

        def watched_var(node, scope, symbols):
            result = var(node, scope, symbols)
            if isinstance(result, Tensor):
                self._record(node.span, f"value {node.name}", result)
            return result

        def watched_bind(stmt, v, scope):
            bind(stmt, v, scope)
            values = list(v) if isinstance(v, (list, tuple)) and len(stmt.targets) > 1 else [v]
            for name, value in zip(stmt.targets, values):
                if isinstance(value, Tensor):
                    self._record(self.target_span(stmt, name), f"value {name}", value)

        def watched_input(decl, scope):
            gi = model_input(decl, scope)
            self._record(_name_span(decl.span, decl.name), f"input {decl.name}", Tensor(decl.name, gi.type))
            return gi

        def watched_binop(node, a, b_, scope):
            result = binop(node, a, b_, scope)
            if isinstance(result, Tensor):
                self._record(node.span, f"`{node.op}`", result)
            return result

        def watched_fail(code, message, span, hint=None):
            result = fail(code, message, span, hint)
            if span is not None:
                self.call_stacks[(code, span_key(span), message)] = list(ev.stack)
            return result

        ev.apply = watched_apply  # type: ignore[method-assign]
        ev._var = watched_var  # type: ignore[method-assign]
        ev._bind = watched_bind  # type: ignore[method-assign]
        ev._model_input = watched_input  # type: ignore[method-assign]
        ev._binop = watched_binop  # type: ignore[method-assign]
        ev.fail = watched_fail  # type: ignore[method-assign]

    def _record(self, span: Span, what: str, result: Any, nodes: list | None = None, values: dict | None = None) -> None:
        items = list(result) if isinstance(result, (list, tuple)) else [result]
        types = [t.type for t in items if isinstance(t, Tensor)]
        if not types:
            return
        key = span_key(span)
        self.spans[key] = span
        self.evaluations.setdefault(key, []).append(Evaluation(what, types, list(nodes or []), values or {}))

    def target_span(self, stmt: ast.Assign, name: str) -> Span:
        """Where an assignment names `name` (`a, b = ...` names two)."""
        line = stmt.span.line
        text = self.line_text(stmt.span.file, line)
        for m in _NAME.finditer(text, stmt.span.column - 1):
            if m.group() == name:
                return Span(file=stmt.span.file, line=line, column=m.start() + 1, end_line=line, end_column=m.end() + 1)
        return _name_span(stmt.span, name)

    # ---- source text --------------------------------------------------------------------------
    def line_text(self, file: str, line: int) -> str:
        src = self.sources.get(file)
        if src is None:
            return ""
        return src.line(line)

    def tokens(self, file: str) -> list[Token]:
        if file not in self._tokens:
            src = self.sources.get(file)
            text = src.text if src is not None else (self.text if file == self.path else _read(file))
            try:
                self._tokens[file] = tokenize(text)
            except DlspecError:
                self._tokens[file] = []
        return self._tokens[file]

    def word_at(self, line: int, col: int) -> tuple[str, int, int] | None:
        """The name under (or just before) the cursor: (name, start column, end column)."""
        if not 0 <= line < len(self.lines):
            return None
        text = self.lines[line]
        for m in _NAME.finditer(text):
            if m.start() <= col <= m.end():
                return m.group(), m.start(), m.end()
        return None

    # ---- shapes -------------------------------------------------------------------------------
    def evaluations_at(self, line: int, col: int) -> tuple[Span, list[Evaluation]] | None:
        """The innermost recorded expression of this document covering the position."""
        best = None
        for key, evs in self.evaluations.items():
            sp = self.spans[key]
            if sp.file == self.path and contains(sp, line, col):
                if best is None or span_size(sp) < span_size(best[0]):
                    best = (sp, evs)
        return best

    def line_shapes(self) -> dict[int, list[Evaluation]]:
        """For each 0-based line of this document, the evaluations of the layer call that ends
        last on it (the value the line produces; of two ending together, the wider)."""
        best: dict[int, tuple[tuple, list[Evaluation]]] = {}
        for key, evs in self.evaluations.items():
            sp = self.spans[key]
            if sp.file != self.path or evs[0].what.startswith(("value ", "input ")):
                continue
            rank = (sp.end_column, -sp.line, -sp.column)
            cur = best.get(sp.end_line - 1)
            if cur is None or rank > cur[0]:
                best[sp.end_line - 1] = (rank, evs)
        return {line: evs for line, (_, evs) in best.items()}

    # ---- definitions and references -----------------------------------------------------------
    def top_definitions(self) -> list[Definition]:
        """The blocks and models visible from this document (its own and imported) and its recipes."""
        assert self.defs is not None
        out = []
        for d in [*self.defs.blocks.values(), *self.defs.models.values()]:
            out.append(self._definition(d))
        for t in self.defs.recipes:
            out.append(self._definition(t))
        return out

    def _definition(self, d: ast.BlockDef | ast.ModelDef | ast.TrainDef) -> Definition:
        kind = "block" if isinstance(d, ast.BlockDef) else "model" if isinstance(d, ast.ModelDef) else "train"
        file = d.file or d.span.file
        header = self.line_text(file, d.span.line)
        name_span = _name_span(d.span, d.name, header)
        params = getattr(d, "params", [])
        sig = ", ".join(_param_text(p) for p in params)
        detail = f"{kind} {d.name}({sig})" if params else f"{kind} {d.name}"
        if isinstance(d, ast.TrainDef):
            detail = f"train {d.kind + ' ' if d.kind else ''}{d.name}"
        out = Definition(d.name, kind, file, name_span, d.span, detail, self._doc_comment(file, d.span.line))
        for p in params:
            out.children.append(Definition(p.name, "param", file, _name_span(p.span, p.name), p.span, _param_text(p)))
        for stmt in d.body:
            if isinstance(stmt, ast.InputStmt):
                for decl in stmt.decls:
                    out.children.append(Definition(decl.name, "input", file, _name_span(decl.span, decl.name), decl.span,
                                                   f"input {decl.name}"))
            elif isinstance(stmt, ast.Assign):
                for name in stmt.targets:
                    out.children.append(Definition(name, "value", file, self.target_span(stmt, name), stmt.span,
                                                   f"{name} = ..."))
            for node in walk(stmt):
                if isinstance(node, ast.NamedLayer):
                    sp = _last_name_span(node.span, node.name, self.line_text(file, node.span.end_line))
                    out.children.append(Definition(node.name, "layer", file, sp, node.span, f"as {node.name}"))
        return out

    def _doc_comment(self, file: str, line: int) -> str:
        """The comment lines right above a definition: its docstring."""
        src = self.sources.get(file)
        if src is None:
            return ""
        lines = src.text.splitlines()
        docs: list[str] = []
        i = line - 2
        while i >= 0 and lines[i].lstrip().startswith("#"):
            docs.append(lines[i].lstrip()[1:].removeprefix(" "))
            i -= 1
        return "\n".join(reversed(docs)).strip()

    def global_definition(self, name: str) -> Definition | None:
        for d in self.top_definitions():
            if d.name == name and d.kind in ("block", "model"):
                return d
        return None

    def enclosing(self, line: int, col: int) -> Definition | None:
        """This document's top-level definition around the position."""
        for d in self.top_definitions():
            if d.file == self.path and contains(d.span, line, col):
                return d
        return None

    def definition_of(self, line: int, col: int) -> Definition | None:
        """What the name at the position refers to: a local (parameter, input, value, named layer)
        of the definition around it, else a block or model (possibly in an imported file)."""
        w = self.word_at(line, col)
        if w is None:
            return None
        name = w[0]
        outer = self.enclosing(line, col)
        if outer is not None:
            for kind in ("param", "input", "value", "layer"):
                for c in outer.children:
                    if c.name == name and c.kind == kind:
                        return c
        return self.global_definition(name)

    def references(self, line: int, col: int, include_declaration: bool = True,
                   other_files: list[str] | None = None) -> list[tuple[str, Span]]:
        """Every use of the name at the position: within its definition for a local, else in this
        document, the files it imports, the file defining it and `other_files`."""
        target = self.definition_of(line, col)
        if target is None:
            return []
        if target.kind in ("param", "input", "value", "layer"):
            outer = self.enclosing(line, col)
            assert outer is not None
            found = [(outer.file, sp) for sp in self._name_uses(outer.file, target.name, outer.span)]
        else:
            files = list(dict.fromkeys([self.path, *self.sources, target.file, *(other_files or [])]))
            found = [(f, sp) for f in files for sp in self._name_uses(f, target.name)]
        if not include_declaration:
            found = [(f, sp) for f, sp in found if span_key(sp) != span_key(target.name_span)]
        return found

    def _name_uses(self, file: str, name: str, within: Span | None = None) -> Iterator[Span]:
        for t in self.tokens(file):
            if t.kind == "name" and t.text == name:
                sp = Span(file=file, line=t.line + 1, column=t.column + 1, end_line=t.line + 1,
                          end_column=t.column + 1 + len(name))
                if within is None or contains(within, t.line, t.column):
                    yield sp


def _describe(fn: Any) -> str:
    op = getattr(fn, "op", None)
    if op is not None and hasattr(op, "name"):
        return str(op.name)
    block = getattr(fn, "block", None)
    if block is not None:
        return f"block {block.name}"
    inner = getattr(fn, "fn", None)
    if inner is not None:
        return f"{_describe(inner)} × {getattr(fn, 'times', '?')}"
    fns = getattr(fn, "fns", None)
    if fns:
        return " -> ".join(_describe(f) for f in fns)
    return type(fn).__name__


def _param_text(p: ast.Param) -> str:
    text = p.name + (f": {p.type}" if p.type else "")
    if p.default is not None:
        text += " = " + _literal_text(p.default)
    return text


def _literal_text(node: ast.Node) -> str:
    if isinstance(node, ast.Literal):
        v = node.value
        if isinstance(v, bool):
            return "true" if v else "false"
        if v is None:
            return "none"
        if isinstance(v, str):
            return f'"{v}"'
        return repr(v)
    if isinstance(node, ast.Var):
        return node.name
    return "..."


def _name_span(sp: Span, name: str, text: str | None = None) -> Span:
    """The span of `name` at or after the start of `sp` on its first line (`block Name(...)`)."""
    if text:
        for m in _NAME.finditer(text, sp.column - 1):
            if m.group() == name:
                return Span(file=sp.file, line=sp.line, column=m.start() + 1, end_line=sp.line, end_column=m.end() + 1)
    return Span(file=sp.file, line=sp.line, column=sp.column, end_line=sp.line, end_column=sp.column + len(name))


def _last_name_span(sp: Span, name: str, text: str) -> Span:
    """The span of the last `name` before the end of `sp` on its last line (`... as name`)."""
    found = None
    for m in _NAME.finditer(text[: sp.end_column - 1]):
        if m.group() == name:
            found = m
    if found is None:
        return Span(file=sp.file, line=sp.end_line, column=max(1, sp.end_column - len(name)), end_line=sp.end_line,
                    end_column=sp.end_column)
    return Span(file=sp.file, line=sp.end_line, column=found.start() + 1, end_line=sp.end_line, end_column=found.end() + 1)


def walk(node: ast.Node) -> Iterator[ast.Node]:
    """Every AST node under `node` (itself included), without recursion (chains can be long)."""
    stack: list[Any] = [node]
    while stack:
        n = stack.pop()
        if isinstance(n, ast.Node):
            yield n
            for f in fields(n):
                if f.name != "span":
                    stack.append(getattr(n, f.name))
        elif isinstance(n, (list, tuple)):
            stack.extend(n)


def _read(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return ""


class Workspace:
    """The analyses of open documents, the imports they share, and the one for each text seen
    last (a hover after an edit reuses the edit's compilation)."""

    def __init__(self) -> None:
        self.imports: dict[str, Any] = {}
        self._last: dict[str, Analysis] = {}

    def analyze(self, path: str, text: str, unsaved: dict[str, str] | None = None) -> Analysis:
        """The analysis of `text`; `unsaved` maps absolute paths of other open documents to their
        text in the editor, which imports of them read instead of the file on disk."""
        cur = self._last.get(path)
        used = {p: t for p, t in (unsaved or {}).items() if p != path}
        if cur is not None and cur.text == text and all(
                used.get(_absolute(f), src.text) == src.text for f, src in cur.sources.items() if f != path):
            return cur
        a = Analysis(path, text, self.imports, used)
        self._last[path] = a
        return a

    def dependents(self, path: str) -> list[str]:
        """The analysed documents that import `path` (directly or through another file)."""
        target = _absolute(path)
        return [p for p, a in self._last.items() if p != path and any(_absolute(f) == target for f in a.sources)]

    def forget(self, path: str) -> None:
        self._last.pop(path, None)

    def open_paths(self) -> list[str]:
        return list(self._last)
