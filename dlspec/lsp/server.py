"""`dlspec lsp`: the language server, on pygls. Every feature is a lookup in the document's
`Analysis` (dlspec/lsp/analysis.py): the compiler runs once per edit, and hovers, inlay hints,
definitions and code actions read what it recorded.

Settings (initialization options, or `workspace/didChangeConfiguration` under `dlspec`):
`inlayHints` (default true) shows each layer line's output shape at its end.
"""

from __future__ import annotations

import re
from typing import Any

from lsprotocol import types as lsp
from pygls.lsp.server import LanguageServer
from pygls.uris import from_fs_path, to_fs_path

from ..errors import Diagnostic
from ..ir.dims import subs
from ..parser import KEYWORDS
from ..source import Span
from ..version import __version__
from . import catalogue
from .analysis import Analysis, Definition, Evaluation, Workspace

_DID_YOU_MEAN = re.compile(r"did you mean `([^`]+)`\?")
_TICKED = re.compile(r"`([A-Za-z_][A-Za-z0-9_.]*)`")
_TOP = re.compile(r"^(block|model|train)\b(.*)$")
_PREFIX = re.compile(r"[A-Za-z_][A-Za-z0-9_]*$")


class DlspecServer(LanguageServer):
    def __init__(self) -> None:
        super().__init__("dlspec", __version__, text_document_sync_kind=lsp.TextDocumentSyncKind.Incremental)
        self.analyses = Workspace()
        self.inlay_hints = True

    def analysis(self, uri: str) -> Analysis:
        doc = self.workspace.get_text_document(uri)
        return self.analyses.analyze(_path(uri), doc.source, self.unsaved())

    def unsaved(self) -> dict[str, str]:
        """The text of every open document, by absolute path (what imports of them read)."""
        from pathlib import Path

        return {str(Path(_path(u)).resolve()): d.source for u, d in self.workspace.text_documents.items()}

    def check(self, uri: str, dependents: bool = True) -> Analysis:
        """Compile the document and publish its diagnostics; then those of the open documents
        that import it, which see its new text."""
        a = self.analysis(uri)
        self.text_document_publish_diagnostics(
            lsp.PublishDiagnosticsParams(uri=uri, diagnostics=[to_lsp_diagnostic(a, d) for d in a.diagnostics]))
        if dependents:
            for path in self.analyses.dependents(a.path):
                other = _uri(path)
                if other in self.workspace.text_documents:
                    self.check(other, dependents=False)
        return a


server = DlspecServer()


def _path(uri: str) -> str:
    return to_fs_path(uri) or uri


def _uri(path: str) -> str:
    from pathlib import Path

    return from_fs_path(str(Path(path).resolve())) or path


def to_range(sp: Span | None) -> lsp.Range:
    if sp is None:
        return lsp.Range(start=lsp.Position(line=0, character=0), end=lsp.Position(line=0, character=0))
    return lsp.Range(start=lsp.Position(line=sp.line - 1, character=sp.column - 1),
                     end=lsp.Position(line=sp.end_line - 1, character=max(0, sp.end_column - 1)))


def _same_file(a: str, b: str) -> bool:
    from pathlib import Path

    try:
        return Path(a).resolve() == Path(b).resolve()
    except OSError:
        return a == b


def to_lsp_diagnostic(a: Analysis, d: Diagnostic) -> lsp.Diagnostic:
    """The compiler's diagnostic for the editor: its code, range, message with the hint and notes,
    related locations (the call sites of the block it lies in, the definition a call names), and
    in `data` the mechanical fix a code action can apply. A diagnostic inside an imported file
    is shown at the call site (or the top) of this document, with its own place as related."""
    related: list[lsp.DiagnosticRelatedInformation] = []
    stack = a.call_stacks.get((d.code, _key(d.span), d.message), []) if d.span is not None else []
    for name, sp in stack:
        related.append(lsp.DiagnosticRelatedInformation(
            location=lsp.Location(uri=_uri(sp.file), range=to_range(sp)), message=f"in `{name}`, used here"))
    for name in _TICKED.findall(d.message):
        target = a.global_definition(name)
        if target is not None and not (d.span is not None and _inside(d.span, target.span)):
            related.append(lsp.DiagnosticRelatedInformation(
                location=lsp.Location(uri=_uri(target.file), range=to_range(target.name_span)),
                message=f"`{name}` is defined here"))
    span = d.span
    message = d.message
    if span is not None and not _same_file(span.file, a.path):
        related.insert(0, lsp.DiagnosticRelatedInformation(
            location=lsp.Location(uri=_uri(span.file), range=to_range(span)), message=d.message))
        here = next((sp for _, sp in stack if _same_file(sp.file, a.path)), None)
        message = f"{span}: {d.message}"
        span = here
    if d.hint:
        message += f"\nhint: {d.hint}"
    for note in d.notes:
        message += f"\nnote: {note}"
    return lsp.Diagnostic(
        range=to_range(span),
        message=message,
        severity=lsp.DiagnosticSeverity.Warning if d.severity == "warning" else lsp.DiagnosticSeverity.Error,
        code=d.code,
        source="dlspec",
        related_information=related or None,
        data=_fix(a, d) if span is d.span else None,
    )


def _key(sp: Span | None) -> tuple:
    assert sp is not None
    return (sp.file, sp.line, sp.column, sp.end_line, sp.end_column)


def _inside(inner: Span, outer: Span) -> bool:
    return inner.file == outer.file and (outer.line, outer.column) <= (inner.line, inner.column) and \
        (inner.end_line, inner.end_column) <= (outer.end_line, outer.end_column)


def _fix(a: Analysis, d: Diagnostic) -> dict | None:
    """A fix that follows from the hint without judgement: a misspelt name to replace, or a
    `flatten()` to insert before the layer."""
    if d.hint is None or d.span is None:
        return None
    m = _DID_YOU_MEAN.search(d.hint)
    if m:
        wrong = next((w for w in _TICKED.findall(d.message) if _occurs(a, d.span, w)), None)
        if wrong is not None:
            return {"kind": "replace", "old": wrong, "new": m.group(1)}
    if "flatten()" in d.hint and "before" in d.hint:
        return {"kind": "insert", "text": "flatten() -> "}
    return None


def _occurs(a: Analysis, sp: Span, word: str) -> bool:
    return re.search(rf"\b{re.escape(word)}\b", _span_text(a, sp)) is not None


def _span_text(a: Analysis, sp: Span) -> str:
    lines = a.lines[sp.line - 1: sp.end_line]
    if not lines:
        return ""
    if len(lines) == 1:
        return lines[0][sp.column - 1: sp.end_column - 1]
    return "\n".join([lines[0][sp.column - 1:], *lines[1:-1], lines[-1][: sp.end_column - 1]])


# ---- document sync and diagnostics -----------------------------------------------------------
@server.feature(lsp.INITIALIZE)
def initialize(ls: DlspecServer, params: lsp.InitializeParams) -> None:
    options = params.initialization_options or {}
    if isinstance(options, dict) and "inlayHints" in options:
        ls.inlay_hints = bool(options["inlayHints"])


@server.feature(lsp.WORKSPACE_DID_CHANGE_CONFIGURATION)
def did_change_configuration(ls: DlspecServer, params: lsp.DidChangeConfigurationParams) -> None:
    settings = params.settings or {}
    section = settings.get("dlspec", settings) if isinstance(settings, dict) else {}
    if isinstance(section, dict) and "inlayHints" in section:
        ls.inlay_hints = bool(section["inlayHints"])
        caps = ls.client_capabilities.workspace
        if caps is not None and caps.inlay_hint is not None and caps.inlay_hint.refresh_support:
            ls.workspace_inlay_hint_refresh(None)


@server.feature(lsp.TEXT_DOCUMENT_DID_OPEN)
def did_open(ls: DlspecServer, params: lsp.DidOpenTextDocumentParams) -> None:
    ls.check(params.text_document.uri)


@server.feature(lsp.TEXT_DOCUMENT_DID_CHANGE)
def did_change(ls: DlspecServer, params: lsp.DidChangeTextDocumentParams) -> None:
    ls.check(params.text_document.uri)


@server.feature(lsp.TEXT_DOCUMENT_DID_SAVE)
def did_save(ls: DlspecServer, params: lsp.DidSaveTextDocumentParams) -> None:
    ls.check(params.text_document.uri)


@server.feature(lsp.TEXT_DOCUMENT_DID_CLOSE)
def did_close(ls: DlspecServer, params: lsp.DidCloseTextDocumentParams) -> None:
    ls.analyses.forget(_path(params.text_document.uri))
    ls.text_document_publish_diagnostics(lsp.PublishDiagnosticsParams(uri=params.text_document.uri, diagnostics=[]))


# ---- hover ----------------------------------------------------------------------------------
def _number(n: Any) -> str:
    if isinstance(n, int):
        for unit, div in (("G", 10**9), ("M", 10**6), ("k", 10**3)):
            if abs(n) >= div:
                return f"{n / div:.3g}{unit}"
        return str(n)
    return str(n)


def evaluation_cost(ev: Evaluation) -> tuple[Any, Any]:
    """(parameters, FLOPs per example) of the layers one evaluation added."""
    from ..ir.ops import get_op

    params: Any = 0
    flops: Any = 0
    for node in ev.nodes:
        op = get_op(node.op)
        ins = [ev.values[v] for v in node.inputs]
        outs = [ev.values[v] for v in node.outputs]
        attrs = op.attrs_from_dict(node.attrs)
        for shape in op.params(attrs, ins).values():
            n: Any = 1
            for dim in shape:
                n = n * dim
            params = params + n
        flops = flops + subs(op.flops(attrs, ins, outs), {"batch": 1})
    return params, flops


def _types(ev: Evaluation) -> str:
    return ", ".join(f"`{t}`" for t in ev.types)


def describe_evaluations(evs: list[Evaluation]) -> str:
    """Markdown: the output type of an expression, with parameters and FLOPs; one line per
    distinct result when a block's body is used more than once."""
    head = evs[0].what
    groups: dict[str, list[Evaluation]] = {}
    for ev in evs:
        groups.setdefault(_types(ev), []).append(ev)
    lines = []
    if len(groups) == 1:
        ev = evs[0]
        lines.append(f"**{head}** → {_types(ev)}")
        if ev.nodes:
            params, flops = evaluation_cost(ev)
            lines.append("")
            lines.append(f"{_count(params)} parameters · {_number(flops)} FLOPs per example"
                         + (f" · {len(ev.nodes)} layers" if len(ev.nodes) > 1 else ""))
        if len(evs) > 1:
            lines.append("")
            lines.append(f"used {len(evs)} times")
        return "\n".join(lines)
    lines.append(f"**{head}**, used {len(evs)} times:")
    lines.append("")
    for types, group in groups.items():
        ev = group[0]
        where = ", ".join(sorted({_owner(e) for e in group if _owner(e)}))
        cost = ""
        if ev.nodes:
            params, flops = evaluation_cost(ev)
            cost = f" · {_count(params)} parameters · {_number(flops)} FLOPs"
        lines.append(f"- {types}{' ×' + str(len(group)) if len(group) > 1 else ''}{cost}"
                     + (f" ({where})" if where else ""))
    return "\n".join(lines)


def _owner(ev: Evaluation) -> str:
    if not ev.nodes:
        return ""
    return ev.nodes[0].name.rsplit(".", 1)[0] if "." in ev.nodes[0].name else ev.nodes[0].name


def _count(n: Any) -> str:
    return f"{n:,}" if isinstance(n, int) else str(n)


def describe_definition(a: Analysis, d: Definition) -> str:
    lines = ["```dlspec", d.detail, "```"]
    if d.doc:
        lines += ["", d.doc]
    g = a.graphs.get(d.name) if d.kind == "model" else None
    if g is not None:
        outs = ", ".join(f"{o.name}: `{g.values[o.value]}`" for o in g.outputs)
        params = sum(p.numel for p in g.params() if not p.buffer)
        lines += ["", f"outputs {outs} · {params:,} parameters"]
    if d.file != a.path:
        lines += ["", f"defined in `{d.file}`"]
    return "\n".join(lines)


@server.feature(lsp.TEXT_DOCUMENT_HOVER)
def hover(ls: DlspecServer, params: lsp.HoverParams) -> lsp.Hover | None:
    a = ls.analysis(params.text_document.uri)
    line, col = params.position.line, params.position.character
    w = a.word_at(line, col)
    parts: list[str] = []
    target = a.global_definition(w[0]) if w is not None else None
    if target is not None:
        parts.append(describe_definition(a, target))
    found = a.evaluations_at(line, col)
    if found is not None:
        parts.append(describe_evaluations(found[1]))
    elif w is not None and target is None:
        if w[0] in catalogue.op_names():
            parts.append(f"```dlspec\n{catalogue.op_signature(w[0])}\n```\n\n{catalogue.op_names()[w[0]]}")
    if not parts:
        return None
    rng = None
    if found is not None:
        rng = to_range(found[0])
    elif w is not None:
        rng = lsp.Range(start=lsp.Position(line=line, character=w[1]), end=lsp.Position(line=line, character=w[2]))
    return lsp.Hover(contents=lsp.MarkupContent(kind=lsp.MarkupKind.Markdown, value="\n\n---\n\n".join(parts)),
                     range=rng)


# ---- inlay hints ----------------------------------------------------------------------------
def shape_label(evs: list[Evaluation]) -> str:
    distinct = list(dict.fromkeys(", ".join(str(t) for t in ev.types) for ev in evs))
    if len(distinct) > 3:
        return " | ".join(distinct[:3]) + f" | … ({len(distinct)} shapes)"
    return " | ".join(distinct)


def _code_end(text: str) -> int:
    """The column where a line's code ends (before a trailing comment and spaces)."""
    in_string = False
    for i, ch in enumerate(text):
        if ch == '"' and (i == 0 or text[i - 1] != "\\"):
            in_string = not in_string
        elif ch == "#" and not in_string:
            return len(text[:i].rstrip())
    return len(text.rstrip())


@server.feature(lsp.TEXT_DOCUMENT_INLAY_HINT)
def inlay_hints(ls: DlspecServer, params: lsp.InlayHintParams) -> list[lsp.InlayHint]:
    if not ls.inlay_hints:
        return []
    a = ls.analysis(params.text_document.uri)
    first, last = params.range.start.line, params.range.end.line
    out = []
    for line, evs in sorted(a.line_shapes().items()):
        if first <= line <= last and line < len(a.lines):
            out.append(lsp.InlayHint(position=lsp.Position(line=line, character=_code_end(a.lines[line])),
                                     label=shape_label(evs), kind=lsp.InlayHintKind.Type, padding_left=True))
    return out


# ---- navigation -----------------------------------------------------------------------------
@server.feature(lsp.TEXT_DOCUMENT_DEFINITION)
def definition(ls: DlspecServer, params: lsp.DefinitionParams) -> lsp.Location | None:
    a = ls.analysis(params.text_document.uri)
    d = a.definition_of(params.position.line, params.position.character)
    if d is None:
        return None
    return lsp.Location(uri=_uri(d.file), range=to_range(d.name_span))


@server.feature(lsp.TEXT_DOCUMENT_REFERENCES)
def references(ls: DlspecServer, params: lsp.ReferenceParams) -> list[lsp.Location]:
    a = ls.analysis(params.text_document.uri)
    others = [p for p in ls.analyses.open_paths() if p != a.path]
    found = a.references(params.position.line, params.position.character,
                         include_declaration=params.context.include_declaration, other_files=others)
    seen = set()
    out = []
    for file, sp in found:
        key = (_uri(file), sp.line, sp.column)
        if key not in seen:
            seen.add(key)
            out.append(lsp.Location(uri=key[0], range=to_range(sp)))
    return out


_SYMBOL_KINDS = {"model": lsp.SymbolKind.Class, "block": lsp.SymbolKind.Function, "train": lsp.SymbolKind.Event,
                 "param": lsp.SymbolKind.TypeParameter, "input": lsp.SymbolKind.Field,
                 "value": lsp.SymbolKind.Variable, "layer": lsp.SymbolKind.Object}


def _symbol(d: Definition) -> lsp.DocumentSymbol:
    return lsp.DocumentSymbol(name=d.name, detail=d.detail, kind=_SYMBOL_KINDS[d.kind], range=to_range(d.span),
                              selection_range=to_range(d.name_span), children=[_symbol(c) for c in d.children])


@server.feature(lsp.TEXT_DOCUMENT_DOCUMENT_SYMBOL)
def document_symbols(ls: DlspecServer, params: lsp.DocumentSymbolParams) -> list[lsp.DocumentSymbol]:
    a = ls.analysis(params.text_document.uri)
    return [_symbol(d) for d in a.top_definitions() if _same_file(d.file, a.path)]


# ---- completion ------------------------------------------------------------------------------
def _enclosing_header(lines: list[str], line: int) -> tuple[str, str] | None:
    """The `block`/`model`/`train` definition the line lies in, by the text alone (the file may
    not parse while it is typed): (keyword, rest of its header line)."""
    for i in range(min(line, len(lines) - 1), -1, -1):
        text = lines[i]
        if i < line and text.startswith("}"):
            return None
        m = _TOP.match(text)
        if m:
            return m.group(1), m.group(2)
    return None


_HEADER = re.compile(r"^(block|model)\s+([A-Za-z_][A-Za-z0-9_]*)\s*(\(([^)]*)\))?")
_ASSIGNED = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*(?:\s*,\s*[A-Za-z_][A-Za-z0-9_]*)*)\s*=(?!=)")
_INPUTS = re.compile(r"^\s*input\s+(.*)$")


def _typed_definitions(a: Analysis, lines: list[str]) -> dict[str, Definition]:
    """The blocks and models of the text as typed, read from their header lines: a file being
    edited often does not parse, and completion still offers what it defines."""
    out: dict[str, Definition] = {}
    for i, text in enumerate(lines):
        m = _HEADER.match(text)
        if m is None:
            continue
        kind, name, params = m.group(1), m.group(2), (m.group(4) or "").strip()
        sp = Span(file=a.path, line=i + 1, column=m.start(2) + 1, end_line=i + 1, end_column=m.end(2) + 1)
        d = Definition(name, kind, a.path, sp, sp, f"{kind} {name}({params})" if m.group(3) else f"{kind} {name}")
        for p in filter(None, (x.strip() for x in params.split(","))):
            pname = _PREFIX.search(p.split(":")[0].split("=")[0].strip() or "_")
            if pname is not None:
                d.children.append(Definition(pname.group(), "param", a.path, sp, sp, p))
        out[name] = d
    return out


def _typed_locals(lines: list[str], line: int) -> dict[str, str]:
    """Names the definition around `line` binds before it (parameters, inputs, assignments),
    read from the text as typed."""
    out: dict[str, str] = {}
    start = None
    for i in range(min(line, len(lines) - 1), -1, -1):
        if _TOP.match(lines[i]):
            start = i
            break
    if start is None:
        return out
    m = _HEADER.match(lines[start])
    if m and m.group(4):
        for p in filter(None, (x.strip() for x in m.group(4).split(","))):
            name = p.split(":")[0].split("=")[0].strip()
            if name:
                out[name] = p
    for text in lines[start + 1: line]:
        mi = _INPUTS.match(text)
        if mi:
            for decl in mi.group(1).split(","):
                name = decl.split(":")[0].strip()
                if _PREFIX.fullmatch(name or "_"):
                    out[name] = f"input {decl.strip()}"
            continue
        ma = _ASSIGNED.match(text)
        if ma:
            for name in ma.group(1).split(","):
                out[name.strip()] = f"{name.strip()} = ..."
    return out


def _open_call(text: str) -> tuple[str | None, str, bool] | None:
    """The innermost bracket open at the end of `text`: (the name called, or None for a list;
    the argument typed so far; whether the cursor is after its `=`)."""
    depth = 0
    for i in range(len(text) - 1, max(-1, len(text) - 4000), -1):
        ch = text[i]
        if ch in ")]":
            depth += 1
        elif ch in "([":
            if depth == 0:
                arg = re.split(r",", text[i + 1:])[-1]
                m = _PREFIX.search(text[:i].rstrip())
                name = m.group() if (m and ch == "(") else None
                return name, arg, "=" in arg
            depth -= 1
        elif ch in "{}" and depth == 0:
            return None
    return None


def _item(label: str, kind: lsp.CompletionItemKind, detail: str = "", insert: str | None = None,
          doc: str | None = None) -> lsp.CompletionItem:
    return lsp.CompletionItem(label=label, kind=kind, detail=detail or None, insert_text=insert,
                              documentation=lsp.MarkupContent(kind=lsp.MarkupKind.Markdown, value=doc) if doc else None)


def completions(a: Analysis, text: str, line: int, col: int) -> list[lsp.CompletionItem]:
    """What can be written at the position (see the module docstring of dlspec/lsp)."""
    lines = text.split("\n")
    current = lines[line][:col] if line < len(lines) else ""
    before = "\n".join([*lines[:line], current])
    header = _enclosing_header(lines, line)
    call = _open_call(before)
    blocks = {d.name: d for d in a.top_definitions() if d.kind in ("block", "model")}
    for name, d in _typed_definitions(a, lines).items():
        blocks.setdefault(name, d)
    if call is not None and call[0] is not None:
        name, arg, after_eq = call
        if name == "builtin" and not after_eq:
            return [_item(f'"{n}"', lsp.CompletionItemKind.Value, "built-in dataset") for n in catalogue.builtin_datasets()]
        attrs = catalogue.op_attributes(name)
        if attrs is None:
            attrs = catalogue.config_call_fields(name)
        if attrs is None and name in blocks:
            attrs = [(c.name, c.detail, None) for c in blocks[name].children if c.kind == "param"]
        if attrs is None:
            attrs = []
        if after_eq:
            key = arg.split("=")[0].strip()
            for n, t, _ in attrs:
                if n == key and '"' in t:
                    return [_item(v.strip(), lsp.CompletionItemKind.EnumMember, n) for v in t.split("|") if '"' in v]
            return []
        return [_item(f"{n}=", lsp.CompletionItemKind.Property, f"{t}" + (f" = {d}" if d is not None else " (required)"),
                      insert=f"{n}=") for n, t, d in attrs]
    if header is not None and header[0] == "train":
        kind = header[1].split()[0] if header[1].split() and header[1].split()[0] in ("gan", "distill") else None
        m = re.match(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)$", current)
        if m:
            key = m.group(1)
            if key in catalogue.MODEL_KEYS:
                return [_item(n, lsp.CompletionItemKind.Class, d.detail) for n, d in blocks.items() if d.kind == "model"]
            return [_item(n, lsp.CompletionItemKind.Value, detail) for n, detail in catalogue.recipe_values(key).items()]
        if call is not None and call[0] is None:  # a list: metrics
            return [_item(n, lsp.CompletionItemKind.Value, d) for n, d in catalogue.recipe_values("metrics").items()]
        items = [_item(n, lsp.CompletionItemKind.Field, t + (f" = {d}" if d is not None else " (required)"),
                       insert=f"{n} = ") for n, t, d in catalogue.recipe_keys(kind)]
        items += [_item(n, lsp.CompletionItemKind.Function, "(" + ", ".join(f[0] for f in fs) + ")", insert=f"{n}(")
                  for n, fs in catalogue.recipe_directives().items()]
        items.append(_item("freeze", lsp.CompletionItemKind.Keyword, "freeze \"pattern\""))
        return items
    if header is None:
        return [_item(k, lsp.CompletionItemKind.Keyword) for k in ("block", "model", "train", "import", "from")]
    items = [_item(n, lsp.CompletionItemKind.Function, s, doc=f"```dlspec\n{catalogue.op_signature(n)}\n```")
             for n, s in catalogue.op_names().items()]
    items += [_item(n, lsp.CompletionItemKind.Class if d.kind == "model" else lsp.CompletionItemKind.Module, d.detail,
                    doc=d.doc or None) for n, d in blocks.items()]
    outer = a.enclosing(line, col)
    local = {c.name: c.detail for c in outer.children if c.kind in ("param", "input", "value")} if outer else {}
    local.update({n: d for n, d in _typed_locals(lines, line).items() if n not in local})
    items += [_item(n, lsp.CompletionItemKind.Variable, d) for n, d in local.items()]
    items += [_item(k, lsp.CompletionItemKind.Keyword) for k in KEYWORDS
              if k in ("input", "output", "as", "if", "else", "then", "and", "or", "not", "true", "false", "none",
                       "freeze", "replace")]
    return items


@server.feature(lsp.TEXT_DOCUMENT_COMPLETION, lsp.CompletionOptions(trigger_characters=["(", ",", "=", " ", "["]))
def completion(ls: DlspecServer, params: lsp.CompletionParams) -> lsp.CompletionList:
    doc = ls.workspace.get_text_document(params.text_document.uri)
    a = ls.analysis(params.text_document.uri)
    items = completions(a, doc.source, params.position.line, params.position.character)
    return lsp.CompletionList(is_incomplete=False, items=items)


# ---- code actions and formatting ------------------------------------------------------------
@server.feature(lsp.TEXT_DOCUMENT_CODE_ACTION,
                lsp.CodeActionOptions(code_action_kinds=[lsp.CodeActionKind.QuickFix]))
def code_actions(ls: DlspecServer, params: lsp.CodeActionParams) -> list[lsp.CodeAction]:
    uri = params.text_document.uri
    a = ls.analysis(uri)
    out = []
    for diag in params.context.diagnostics:
        fix = diag.data if isinstance(diag.data, dict) else None
        if fix is None:
            continue
        if fix.get("kind") == "replace":
            edit = _replace_in(a, diag.range, str(fix["old"]), str(fix["new"]))
            title = f"Replace `{fix['old']}` with `{fix['new']}`"
        elif fix.get("kind") == "insert":
            edit = lsp.TextEdit(range=lsp.Range(start=diag.range.start, end=diag.range.start), new_text=str(fix["text"]))
            title = f"Insert `{str(fix['text']).strip()}`"
        else:
            continue
        if edit is None:
            continue
        out.append(lsp.CodeAction(title=title, kind=lsp.CodeActionKind.QuickFix, diagnostics=[diag], is_preferred=True,
                                  edit=lsp.WorkspaceEdit(changes={uri: [edit]})))
    return out


def _replace_in(a: Analysis, rng: lsp.Range, old: str, new: str) -> lsp.TextEdit | None:
    for line in range(rng.start.line, rng.end.line + 1):
        if line >= len(a.lines):
            break
        text = a.lines[line]
        lo = rng.start.character if line == rng.start.line else 0
        hi = rng.end.character if line == rng.end.line else len(text)
        m = re.search(rf"\b{re.escape(old)}\b", text[lo:hi])
        if m:
            return lsp.TextEdit(range=lsp.Range(start=lsp.Position(line=line, character=lo + m.start()),
                                                end=lsp.Position(line=line, character=lo + m.end())), new_text=new)
    return None


@server.feature(lsp.TEXT_DOCUMENT_FORMATTING)
def formatting(ls: DlspecServer, params: lsp.DocumentFormattingParams) -> list[lsp.TextEdit] | None:
    from ..errors import DlspecError
    from ..fmt import format_source

    doc = ls.workspace.get_text_document(params.text_document.uri)
    try:
        result = format_source(doc.source, _path(params.text_document.uri))
    except DlspecError:
        return None  # a file that does not parse is not formatted; its diagnostics say why
    if result == doc.source:
        return []
    lines = doc.source.split("\n")
    end = lsp.Position(line=len(lines) - 1, character=len(lines[-1]))
    return [lsp.TextEdit(range=lsp.Range(start=lsp.Position(line=0, character=0), end=end), new_text=result)]


def serve() -> None:
    server.start_io()
