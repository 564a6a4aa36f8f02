"""`dlspec fmt`: one canonical layout for spec files, like black for Python.

The formatter works on the token stream (comments included), not on the AST, so every comment
stays where it was written. Newlines are whitespace in the grammar, so changing only the space
between tokens cannot change what a file means; `format_source` checks that the tokens of its
result are the tokens it was given, and that the result parses, before returning it.

The layout:

* four spaces per `{ ... }` body, four more for each open bracket and for a line that continues
  a statement (it starts with `->`, `else`, an operator..., or the line before ends with one);
* one space around `=` (none for a keyword argument; PEP 8's `out: int = 3` for a typed default),
  `->`, binary operators and keywords; none inside brackets; one after `,` and `:`;
* a body's `{` ends its line and its `}` stands alone; at most one blank line in a row, none at
  a body's start or end, one after each top-level definition;
* a line over 100 characters is broken before each `->` of its chain;
* the `=` of a training recipe's entries aligned, and trailing comments of consecutive lines
  aligned (two spaces after the longest code).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import DlspecError, error
from .parser import KEYWORDS, parse
from .source import SourceFile

LINE_LIMIT = 100
INDENT = "    "

_TOKEN = re.compile(
    r"""
    (?P<ws>[ \t\f\r]+)
  | (?P<nl>\n)
  | (?P<comment>\#[^\n]*)
  | (?P<string>"([^"\\\n]|\\.)*")
  | (?P<float>(\d[\d_]*)?\.\d[\d_]*([eE][+-]?\d+)?|\d[\d_]*\.([eE][+-]?\d+)?|\d[\d_]*[eE][+-]?\d+)
  | (?P<int>\d[\d_]*)
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*)
  | (?P<op>->|\*\*|//|==|!=|<=|>=|[-+*/%<>=.,:()\[\]{}])
    """,
    re.VERBOSE,
)

_KEYWORDS = frozenset(KEYWORDS)
_BINARY = frozenset({"+", "-", "*", "/", "//", "%", "**", "==", "!=", "<", ">", "<=", ">=", "->"})
_SPACED_KEYWORDS = frozenset({"if", "else", "and", "or", "not", "as", "then", "from", "import"})
#: a line starting with one of these continues the statement before it
_CONTINUES = _BINARY | {"else", "if", "then", "as", "and", "or", ",", ".", ")", "]", "}", "=", ":"}
#: a line ending with one of these is continued by the next
_OPENS = _BINARY | {"else", "if", "then", "as", "and", "or", "not", ",", "(", "[", "=", ":", "{"}
_VALUE_END = frozenset({"name", "int", "float", "string"})


@dataclass
class Token:
    kind: str  # name, int, float, string, op, comment
    text: str
    line: int  # 0-based line of the source
    column: int = 0  # 0-based, in characters
    body: bool = False  # a `{` or `}` delimiting a definition's body, not a dict literal
    unary: bool = False  # a `+` or `-` with no left operand


def tokenize(text: str) -> list[Token]:
    """The tokens of a spec, comments included (whitespace and newlines dropped, each token
    keeping its line). A character no token starts with raises E002, as the parser would."""
    out: list[Token] = []
    line = 0
    line_start = 0
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise error("E002", f"unexpected character `{text[pos]}`")
        kind = m.lastgroup or ""
        if kind == "nl":
            line += 1
            line_start = m.end()
        elif kind != "ws":
            out.append(Token(kind, m.group(), line, pos - line_start))
        pos = m.end()
    _classify(out)
    return out


def _classify(tokens: list[Token]) -> None:
    """Mark body braces and unary signs, which the spacing rules tell apart from dict braces and
    binary operators."""
    stack: list[Token] = []
    prev: Token | None = None
    for t in tokens:
        if t.kind == "comment":
            continue
        if t.text == "{":
            t.body = prev is not None and (prev.kind == "name" or prev.text == ")") and not any(not s.body for s in stack)
            stack.append(t)
        elif t.text == "}" and stack:
            t.body = stack.pop().body
        elif t.text in "([":
            stack.append(t)
        elif t.text in ")]" and stack:
            stack.pop()
        elif t.text in ("+", "-"):
            t.unary = prev is None or not (prev.kind in _VALUE_END and prev.text not in _KEYWORDS
                                           or prev.text in (")", "]") or (prev.text == "}" and not prev.body)
                                           or prev.text in ("true", "false", "none"))
        prev = t


def _space(tokens: list[Token], i: int, top: str | None) -> str:
    """The space before `tokens[i]` on its line; `top` is the innermost open bracket."""
    a, b = tokens[i - 1], tokens[i]
    if b.kind == "comment":
        return "  "
    if a.text == "." or b.text == ".":
        return ""
    if a.text in ("(", "[") or (a.text == "{" and not a.body):
        return ""
    if b.text in (")", "]", ",", ":") or (b.text == "}" and not b.body):
        return ""
    if a.unary:
        return ""
    if a.text == "=" or b.text == "=":
        if top == "(":  # a keyword argument, except a typed parameter's default (`out: int = 3`)
            eq = i if b.text == "=" else i - 1
            typed = eq >= 2 and tokens[eq - 2].text == ":"
            return " " if typed else ""
        return " "
    if b.text in ("(", "["):
        callee = a.kind in ("name", "string") and a.text not in _KEYWORDS or a.text in (")", "]")
        return "" if callee else " "
    return " "


def _split_lines(tokens: list[Token]) -> list[list[Token]]:
    """The tokens grouped by source line, with a body's `{` ending its line and its `}` alone."""
    lines: list[list[Token]] = []
    cur: list[Token] = []
    last_line = None
    for t in tokens:
        if cur and (t.line != last_line or (t.text == "}" and t.body and cur[-1].kind != "comment")):
            if not (t.kind == "comment" and t.line == last_line):
                lines.append(cur)
                cur = []
        if cur and cur[-1].body and cur[-1].kind == "op" and t.kind != "comment":
            lines.append(cur)
            cur = []
        if not cur and t.text == "{" and t.body and lines and lines[-1][-1].kind != "comment":
            cur = lines.pop()  # a body's `{` written on a line of its own joins its header
        cur.append(t)
        last_line = t.line
        if t.text == "}" and t.body:
            lines.append(cur)
            cur = []
            last_line = None
    if cur:
        lines.append(cur)
    return _attach_trailing_comments(lines)


def _attach_trailing_comments(lines: list[list[Token]]) -> list[list[Token]]:
    """A comment written after a `}` that stands alone now goes back to that `}`'s line."""
    out: list[list[Token]] = []
    for ln in lines:
        if out and len(ln) == 1 and ln[0].kind == "comment" and out[-1][-1].kind != "comment" \
                and out[-1][-1].line == ln[0].line:
            out[-1].append(ln[0])
        else:
            out.append(ln)
    return out


def _render(tokens: list[Token], stack: list[str]) -> str:
    """One line's code (no indentation); `stack`, the open brackets, is updated past it."""
    parts: list[str] = []
    for i, t in enumerate(tokens):
        if t.kind == "comment":
            break
        if i:
            parts.append(_space(tokens, i, stack[-1] if stack else None))
        parts.append(t.text)
        _track(stack, t)
    return "".join(parts)


def _track(stack: list[str], t: Token) -> None:
    if t.text in ("(", "[") or (t.text == "{" and not t.body):
        stack.append(t.text)
    elif t.text in (")", "]") or (t.text == "}" and not t.body):
        if stack:
            stack.pop()


def _break_chain(tokens: list[Token]) -> list[list[Token]]:
    """A long line cut before each `->` outside brackets (the first token stays put)."""
    out: list[list[Token]] = [[]]
    depth = 0
    for i, t in enumerate(tokens):
        if t.text == "->" and depth == 0 and i > 0:
            out.append([])
        out[-1].append(t)
        if t.text in ("(", "[") or (t.text == "{" and not t.body):
            depth += 1
        elif t.text in (")", "]") or (t.text == "}" and not t.body):
            depth -= 1
    return out


def format_tokens(tokens: list[Token]) -> str:
    lines = _split_lines(tokens)
    body_depth = 0
    brackets: list[str] = []
    prev_code: Token | None = None
    in_train = False
    prev_line = -1
    pending_comments: list[tuple[str, bool]] = []
    out_lines: list[tuple[int, str, str | None, bool, bool, bool]] = []

    def emit_comments(indent: int) -> None:
        for text, blank in pending_comments:
            out_lines.append((indent, "", text, blank, False, False))
        pending_comments.clear()

    for ln in lines:
        blank_before = prev_line >= 0 and ln[0].line > prev_line + 1
        prev_line = ln[-1].line
        if ln[0].kind == "comment":
            pending_comments.append((ln[0].text, blank_before))
            continue
        comment = ln[-1].text if ln[-1].kind == "comment" else None
        code_tokens = ln[:-1] if comment is not None else ln
        first = code_tokens[0]
        closes_body = first.text == "}" and first.body
        if closes_body:
            body_depth = max(0, body_depth - 1)
        continues = bool(brackets) or (prev_code is not None and not (prev_code.text in ("{", "}") and prev_code.body)
                                       and (first.text in _CONTINUES and not first.unary
                                            or prev_code.text in _OPENS and not prev_code.body))
        if closes_body:
            continues = False
        leading_closers = 0
        for t in code_tokens:
            if t.text in (")", "]") or (t.text == "}" and not t.body):
                leading_closers += 1
            else:
                break
        depth = max(0, len(brackets) - leading_closers)
        extra = depth + (1 if continues and not brackets else 0)
        if body_depth == 0 and not closes_body and first.kind == "name":
            in_train = first.text == "train"
            if first.text in ("block", "model", "train") and not continues and out_lines:
                if pending_comments:
                    pending_comments[0] = (pending_comments[0][0], True)
                else:
                    blank_before = True
        indent = body_depth + extra
        pieces = [code_tokens]
        if len(INDENT * indent) + len(_render(code_tokens, list(brackets))) > LINE_LIMIT:
            pieces = _break_chain(code_tokens)
        for k, piece in enumerate(pieces):
            piece_indent = indent if k == 0 else body_depth + max(extra, 1 + depth)
            code = _render(piece, brackets)
            entry = (in_train and body_depth == 1 and extra == 0 and len(piece) >= 2 and piece[0].kind == "name"
                     and piece[1].text == "=")
            emit_comments(piece_indent + (1 if closes_body else 0))
            is_last = k == len(pieces) - 1
            out_lines.append((piece_indent, code, comment if is_last else None, blank_before and k == 0, entry,
                              closes_body))
            for t in piece:
                if t.kind != "comment":
                    prev_code = t
        if code_tokens[-1].text == "{" and code_tokens[-1].body:
            body_depth += 1
    emit_comments(body_depth)
    return _assemble(out_lines)


def _assemble(lines: list[tuple[int, str, str | None, bool, bool, bool]]) -> str:
    """Blank lines, recipe alignment and trailing-comment alignment, then the text."""
    # recipe entries: `name = value` with the `=` in one column per recipe body
    width = 0
    group: list[int] = []
    entries: dict[int, int] = {}
    for i, (indent, code, _c, _b, entry, closes) in enumerate(lines):
        if entry:
            group.append(i)
            width = max(width, code.index(" ="))
        if closes and indent == 0:
            for j in group:
                entries[j] = width
            group, width = [], 0
    for j in group:
        entries[j] = width
    codes: list[str] = []
    for i, (indent, code, *_rest) in enumerate(lines):
        if i in entries:
            name, rest = code.split(" =", 1)
            code = name.ljust(entries[i]) + " =" + rest
        codes.append(INDENT * indent + code if code else "")
    texts: list[str] = []
    prev_closed_top = False
    prev_opened = False
    blanks: list[bool] = []
    for i, (indent, code, _comment, blank, _e, closes) in enumerate(lines):
        want_blank = blank
        if prev_opened or (closes and code) or not texts:
            want_blank = False
        if prev_closed_top and not (closes and code):
            want_blank = True
        blanks.append(want_blank)
        texts.append(codes[i])
        prev_closed_top = closes and indent == 0 and bool(code)
        prev_opened = bool(code) and code.endswith("{") and _opens_body(code)
    # trailing comments: aligned over runs of consecutive code lines that have them
    result: list[str] = []
    i = 0
    n = len(lines)
    while i < n:
        j = i
        if lines[i][2] is not None and texts[i]:
            while j + 1 < n and lines[j + 1][2] is not None and texts[j + 1] and not blanks[j + 1]:
                j += 1
            col = max(len(texts[k]) for k in range(i, j + 1)) + 2
            for k in range(i, j + 1):
                if blanks[k]:
                    result.append("")
                result.append(texts[k].ljust(col) + lines[k][2])
        else:
            if blanks[i]:
                result.append("")
            comment = lines[i][2]
            if not texts[i]:
                result.append(INDENT * lines[i][0] + comment if comment else "")
            else:
                result.append(texts[i])
        i = j + 1
    return "\n".join(line.rstrip() for line in result) + "\n" if result else ""


def _opens_body(code: str) -> bool:
    stripped = code.rstrip()
    return stripped.endswith("{") and not stripped.endswith("= {") and not stripped.endswith("({")


def _meaning(tokens: list[Token]) -> list[tuple[str, str]]:
    return [(t.kind, t.text) for t in tokens]


def format_source(text: str, name: str = "<input>") -> str:
    """The canonical layout of a spec. Raises DlspecError (the parser's diagnostics) for a file
    that does not parse: only valid specs are formatted."""
    src = SourceFile(name, text)
    parse(src)
    tokens = tokenize(text)
    result = format_tokens(tokens)
    if _meaning(tokenize(result)) != _meaning(tokens):
        raise error("E920", f"{name}: the formatter would change the file's tokens; it is left as it is",
                    hint="please report this file: it is a bug in `dlspec fmt`")
    try:
        parse(SourceFile(name, result))
    except DlspecError:
        raise error("E920", f"{name}: the formatted text would not parse; the file is left as it is",
                    hint="please report this file: it is a bug in `dlspec fmt`") from None
    return result
