"""Text → AST. Lark's LALR parser with an embedded transformer: the `dlspec.ast` nodes are built
as the parser reduces, each with the span of the text its rule covered (brackets and keywords
included), so no parse tree is built and nothing recurses over one.

Syntax errors become `E0xx` diagnostics. To report more than the first syntax error in a file,
a file that fails to parse is cut into its top-level definitions and each is parsed on its own.
"""

from __future__ import annotations

import ast as pyast
import contextvars
import gc
import re
from functools import lru_cache
from importlib import resources

from lark import Lark, Token, Transformer, Tree
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from . import ast
from .errors import Diagnostic, DlspecError, did_you_mean
from .limits import MAX_INT, MAX_NESTING
from .source import SourceFile, Span

KEYWORDS = (
    "import from block model train input output freeze replace then if else or and not as true false none"
).split()

TOKEN_NAMES = {
    "NAME": "a name",
    "INT": "an integer",
    "FLOAT": "a number",
    "STRING": "a string",
    "LPAR": "`(`",
    "RPAR": "`)`",
    "LSQB": "`[`",
    "RSQB": "`]`",
    "LBRACE": "`{`",
    "RBRACE": "`}`",
    "COMMA": "`,`",
    "COLON": "`:`",
    "EQUAL": "`=`",
    "DOT": "`.`",
    "COMP_OP": "a comparison",
    "ADD_OP": "`+` or `-`",
    "MUL_OP": "`*` or `/`",
    "POW_OP": "`**`",
    "MINUS": "`-`",
    "PLUS": "`+`",
    "__ANON_0": "`->`",
    "$END": "end of file",
}


@lru_cache(maxsize=1)
def _lark() -> Lark:
    """The LALR parser, building the AST while it parses (an embedded transformer): no parse tree,
    no recursive walk over one, so a chain of 100,000 layers costs no stack and little time."""
    text = resources.files("dlspec").joinpath("grammars/dlspec.lark").read_text(encoding="utf-8")
    return Lark(
        text,
        parser="lalr",
        maybe_placeholders=True,
        keep_all_tokens=True,  # brackets and keywords reach the callbacks, so spans cover them
        transformer=_ToAst(),
        cache=True,
    )


@lru_cache(maxsize=1)
def grammar_text() -> str:
    """The grammar, as the fuzz tests read it."""
    return resources.files("dlspec").joinpath("grammars/dlspec.lark").read_text(encoding="utf-8")


#: the file name the AST's spans carry while a parse runs (the parser is built once, for every file)
_FILE = contextvars.ContextVar("dlspec_parse_file", default="<input>")

#: named terminals that carry a value; every other token (keywords, brackets) is punctuation
_VALUE_TOKENS = frozenset({"NAME", "INT", "FLOAT", "STRING", "COMP_OP", "ADD_OP", "MUL_OP", "POW_OP"})


class _Part:
    """An intermediate result (a parameter list, a body, call arguments) with the region it covers."""

    __slots__ = ("value", "start", "end")

    def __init__(self, value, start, end):
        self.value = value
        self.start = start
        self.end = end


class _Abort(Exception):
    """Stops a parse with one diagnostic (an invalid literal, too deep a nesting)."""

    def __init__(self, diag: Diagnostic):
        super().__init__(diag.message)
        self.diag = diag


def _start(c):
    """(line, column) where a child of a rule starts; None for a placeholder."""
    if isinstance(c, Token):
        return (c.line, c.column)
    if isinstance(c, ast.Node):
        o = c.__dict__.get("_outer")
        sp = o if o is not None else c.span
        return (sp.line, sp.column)
    if isinstance(c, _Part):
        return c.start
    return None


def _end(c):
    if isinstance(c, Token):
        return (c.end_line, c.end_column)
    if isinstance(c, ast.Node):
        o = c.__dict__.get("_outer")
        sp = o if o is not None else c.span
        return (sp.end_line, sp.end_column)
    if isinstance(c, _Part):
        return c.end
    return None


def _region(children):
    first = _start(children[0]) if children else None
    if first is None:
        for c in children:
            first = _start(c)
            if first is not None:
                break
    last = _end(children[-1]) if children else None
    if last is None:
        for c in reversed(children):
            last = _end(c)
            if last is not None:
                break
    return first, last


def _span_of(children) -> Span:
    first, last = _region(children)
    if first is None or last is None:
        return Span(file=_FILE.get(), line=1, column=1, end_line=1, end_column=1)
    return Span(file=_FILE.get(), line=first[0], column=first[1], end_line=last[0], end_column=last[1])


def _values(children) -> list:
    """The children that carry meaning: AST nodes, parts, value tokens (punctuation dropped),
    placeholders (None) kept where an optional part is missing."""
    return [c for c in children if not isinstance(c, Token) or c.type in _VALUE_TOKENS]


def _depth(node: ast.Node, *subs) -> ast.Node:
    d = 1 + max((getattr(x, "depth", 0) for x in subs if isinstance(x, ast.Node)), default=0)
    node.depth = d
    if d > MAX_NESTING:
        raise _Abort(Diagnostic(code="E005", message=f"this expression nests more than {MAX_NESTING} levels deep",
                                span=node.span, hint="split it into named steps (`a = ...` then `b = a -> ...`)"))
    return node


def _unpart(v):
    return v.value if isinstance(v, _Part) else v


def _tokens(children, *types: str) -> list[Token]:
    return [c for c in children if isinstance(c, Token) and c.type in types]


class _ToAst(Transformer):
    """Callbacks of the embedded transformer: each receives its rule's children (tokens included,
    `None` for a missing optional part) and returns an AST node whose span covers them."""

    # definitions
    def start(self, ch):
        items = [c for c in ch if c is not None]
        if not items:
            return ast.Module(Span(file=_FILE.get(), line=1, column=1, end_line=1, end_column=1), [])
        return ast.Module(_span_of(ch), items)

    def import_all(self, ch):
        return ast.Import(_span_of(ch), _unquote_tok(_tokens(ch, "STRING")[0]), None)

    def import_from(self, ch):
        path = _tokens(ch, "STRING")[0]
        return ast.Import(_span_of(ch), _unquote_tok(path), [str(n) for n in _tokens(ch, "NAME")])

    def block_def(self, ch):
        name, params, body = _values(ch)
        return ast.BlockDef(_span_of(ch), str(name), _unpart(params) or [], _unpart(body), file=_FILE.get())

    def model_def(self, ch):
        name, params, base, body = _values(ch)
        return ast.ModelDef(_span_of(ch), str(name), _unpart(params) or [], _unpart(body), base, file=_FILE.get())

    def base(self, ch):
        name, args = _values(ch)
        a, k = _unpart(args) if args is not None else ([], [])
        return ast.BaseRef(_span_of(ch), str(name), a, k)

    def train_def(self, ch):
        first, second, args, body = _values(ch)
        kind, name = (str(first), str(second)) if second is not None else (None, str(first))
        a, k = _unpart(args) if args is not None else ([], [])
        return ast.TrainDef(_span_of(ch), kind, name, a, k, _unpart(body), file=_FILE.get())

    def params(self, ch):
        first, last = _region(ch)
        return _Part([c for c in ch if isinstance(c, ast.Param)], first, last)

    def param(self, ch):
        name = ch[0]
        type_ = default = None
        for i, c in enumerate(ch):
            if isinstance(c, Token) and c.type == "COLON":
                type_ = str(ch[i + 1])
            elif isinstance(c, Token) and c.type == "EQUAL":
                default = ch[i + 1]
        return ast.Param(_span_of(ch), str(name), type_, default)

    def body(self, ch):
        first, last = _region(ch)
        return _Part([c for c in ch if isinstance(c, ast.Node)], first, last)

    # statements
    def input_stmt(self, ch):
        return ast.InputStmt(_span_of(ch), [c for c in ch if isinstance(c, ast.InputDecl)])

    def input_decl(self, ch):
        type_ = next((c for c in ch if isinstance(c, ast.TensorTypeExpr)), None)
        return ast.InputDecl(_span_of(ch), str(ch[0]), type_)

    def tensor_type(self, ch):
        return ast.TensorTypeExpr(_span_of(ch), str(ch[0]), [c for c in ch[1:] if isinstance(c, ast.Node)])

    def output_stmt(self, ch):
        return ast.OutputStmt(_span_of(ch), [c for c in ch if isinstance(c, ast.OutputItem)])

    def named_output(self, ch):
        return ast.OutputItem(_span_of(ch), str(ch[0]), ch[2])

    def plain_output(self, ch):
        return ast.OutputItem(_span_of(ch), None, ch[0])

    def assign(self, ch):
        return ast.Assign(_span_of(ch), [str(ch[0])], ch[2])

    def tuple_assign(self, ch):
        return ast.Assign(_span_of(ch), [str(n) for n in _tokens(ch, "NAME")], ch[-1])

    def freeze_stmt(self, ch):
        return ast.FreezeStmt(_span_of(ch), [_unquote_tok(p) for p in _tokens(ch, "STRING")])

    def replace_stmt(self, ch):
        return ast.ReplaceStmt(_span_of(ch), _unpart(ch[1]), ch[3])

    def dotted_name(self, ch):
        first, last = _region(ch)
        return _Part(".".join(str(n) for n in _tokens(ch, "NAME")), first, last)

    def expr_stmt(self, ch):
        return ast.ExprStmt(_span_of(ch), ch[0])

    # expressions
    def atom(self, ch):  # `( expr )`: the expression itself; its parentheses widen the span its parent sees
        inner = ch[1]
        inner._outer = _span_of(ch)
        return inner

    def then(self, ch):
        a, b = ch[0], ch[2]
        return _depth(ast.Then(_span_of(ch), a, b), a, b)

    def cond(self, ch):
        then, test, orelse = ch[0], ch[2], ch[4]
        return _depth(ast.Cond(_span_of(ch), then, test, orelse), then, test, orelse)

    def or_(self, ch):
        return _depth(ast.BoolOp(_span_of(ch), "or", ch[0], ch[2]), ch[0], ch[2])

    def and_(self, ch):
        return _depth(ast.BoolOp(_span_of(ch), "and", ch[0], ch[2]), ch[0], ch[2])

    def not_(self, ch):
        return _depth(ast.UnaryOp(_span_of(ch), "not", ch[1]), ch[1])

    def compare(self, ch):
        return _depth(ast.Compare(_span_of(ch), str(ch[1]), ch[0], ch[2]), ch[0], ch[2])

    def pipe(self, ch):
        # `a -> f -> g` nests to the left, and the lowering walks that spine as a list: only the
        # steps nest, not the chain's length
        a, b = ch[0], ch[2]
        node = ast.Pipe(_span_of(ch), a, b)
        _depth(node, b)
        node.depth = max(node.depth, getattr(a, "depth", 0))
        return node

    def named_layer(self, ch):
        return _depth(ast.NamedLayer(_span_of(ch), ch[0], str(ch[2])), ch[0])

    def binop(self, ch):
        return _depth(ast.BinOp(_span_of(ch), str(ch[1]), ch[0], ch[2]), ch[0], ch[2])

    def unary(self, ch):
        op, a = ch
        if op == "-":
            return _depth(ast.UnaryOp(_span_of(ch), "-", a), a)
        a.__dict__.pop("_outer", None)
        a._outer = _span_of(ch)  # `+x` is x, seen from its parent as starting at the `+`
        return a

    def pow(self, ch):
        return _depth(ast.BinOp(_span_of(ch), "**", ch[0], ch[2]), ch[0], ch[2])

    def call(self, ch):
        func, args = ch
        a, k = args.value
        return _depth(ast.Call(_span_of(ch), func, a, k), func, *a, *k)

    def call_args(self, ch):
        args, kwargs = [], []
        for it in ch:
            if isinstance(it, ast.Kwarg):
                kwargs.append(it)
            elif isinstance(it, ast.Node):
                args.append(it)
        first, last = _region(ch)
        return _Part((args, kwargs), first, last)

    def kwarg(self, ch):
        node = ast.Kwarg(_span_of(ch), str(ch[0]), ch[2])
        node.depth = getattr(ch[2], "depth", 0)
        return node

    def attr(self, ch):
        return _depth(ast.Attr(_span_of(ch), ch[0], str(ch[2])), ch[0])

    def index(self, ch):
        return _depth(ast.Index(_span_of(ch), ch[0], ch[2]), ch[0], ch[2])

    def var(self, ch):
        return ast.Var(_span_of(ch), str(ch[0]))

    def int_lit(self, ch):
        tok = ch[0]
        digits = _number(tok)
        if len(digits.lstrip("0")) > 19 or int(digits) > MAX_INT:
            shown = digits if len(digits) <= 30 else f"{digits[:12]}…({len(digits)} digits)"
            raise _Abort(Diagnostic(code="E214", message=f"the integer {shown} is larger than {MAX_INT} (int64)",
                                    span=_span_of(ch), hint="compile-time integers are int64"))
        return ast.Literal(_span_of(ch), int(digits))

    def float_lit(self, ch):
        tok = ch[0]
        try:
            value = float(_number(tok))
        except ValueError:
            raise _Abort(Diagnostic(code="E004", message="invalid number", span=_span_of(ch))) from None
        return ast.Literal(_span_of(ch), value)

    def string_lit(self, ch):
        return ast.Literal(_span_of(ch), _unquote_tok(ch[0]))

    def true_lit(self, ch):
        return ast.Literal(_span_of(ch), True)

    def false_lit(self, ch):
        return ast.Literal(_span_of(ch), False)

    def none_lit(self, ch):
        return ast.Literal(_span_of(ch), None)

    def tuple_lit(self, ch):
        items = [c for c in ch if isinstance(c, ast.Node)]
        return _depth(ast.TupleLit(_span_of(ch), items), *items)

    def list_lit(self, ch):
        items = [c for c in ch if isinstance(c, ast.Node)]
        return _depth(ast.ListLit(_span_of(ch), items), *items)

    def dict_lit(self, ch):
        pairs = [c.value for c in ch if isinstance(c, _Part)]
        return _depth(ast.DictLit(_span_of(ch), pairs), *(v for _, v in pairs))

    def pair(self, ch):
        key, value = ch[0], ch[2]
        k = _unquote_tok(key) if key.type == "STRING" else str(key)
        first, last = _region(ch)
        return _Part((k, value), first, last)

    def __default__(self, data, children, meta):
        # lark's own helper rules (`__params_star_0`, ...) are spliced into their parent
        return Tree(data, children, meta)


def _tok_span(file: str, tok: Token) -> Span:
    return Span(file=file, line=tok.line, column=tok.column, end_line=tok.end_line, end_column=tok.end_column)


def _unquote(tok: str) -> str:
    return pyast.literal_eval(tok)


def _number(text: str) -> str:
    return text.replace("_", "")


def _unquote_tok(tok: Token) -> str:
    try:
        return _unquote(tok)
    except (ValueError, SyntaxError) as exc:
        sp = Span(file=_FILE.get(), line=tok.line, column=tok.column, end_line=tok.end_line,
                                  end_column=tok.end_column)
        raise _Abort(Diagnostic(code="E004", message=f"invalid literal: {exc}", span=sp,
                                hint="escapes in strings are Python's: \\n, \\t, \\\", \\\\")) from None


def _describe_token(tok: Token) -> str:
    if tok.type == "$END":
        return "end of file"
    if tok.type == "NAME" or str(tok) in KEYWORDS:
        return f"`{tok}`"
    return f"`{tok}`"


def _expected(names: set[str]) -> str:
    """`a, b or c`: closing and separating tokens first (the usual culprits), at most six."""
    order = list(TOKEN_NAMES)

    def rank(n: str) -> tuple[int, str]:
        return (order.index(n) if n in order else len(order), n)

    closing = ["RPAR", "RSQB", "RBRACE", "COMMA", "COLON", "EQUAL"]
    ranked = sorted(names, key=lambda n: (n not in closing, closing.index(n) if n in closing else 0, rank(n)))
    pretty = list(dict.fromkeys(TOKEN_NAMES.get(n, f"`{n.lower()}`" if n.isupper() and len(n) > 1 else n) for n in ranked))
    if len(pretty) > 6:
        return ", ".join(pretty[:6]) + " or another token"
    return pretty[0] if len(pretty) == 1 else ", ".join(pretty[:-1]) + " or " + pretty[-1]


def _syntax_diagnostic(src: SourceFile, exc: UnexpectedInput) -> Diagnostic:
    line, col = exc.line, exc.column
    if isinstance(exc, UnexpectedCharacters):
        ch = src.text[exc.pos_in_stream] if exc.pos_in_stream < len(src.text) else "?"
        hint = None
        if ch == "'":
            hint = "strings use double quotes: \"...\""
        span = Span(file=src.name, line=line, column=col, end_line=line, end_column=col + 1)
        return Diagnostic(code="E002", message=f"unexpected character `{ch}`", span=span, hint=hint)
    if isinstance(exc, UnexpectedEOF) or (isinstance(exc, UnexpectedToken) and exc.token.type == "$END"):
        lines = src.text.splitlines() or [""]
        last = len(lines)
        span = Span(file=src.name, line=last, column=len(lines[-1]) + 1, end_line=last, end_column=len(lines[-1]) + 2)
        expected = getattr(exc, "expected", None) or set()
        hint = "a `{` is not closed" if src.text.count("{") > src.text.count("}") else None
        if hint is None and src.text.count("(") > src.text.count(")"):
            hint = "a `(` is not closed"
        return Diagnostic(code="E003", message=f"unexpected end of file; expected {_expected(set(expected))}", span=span, hint=hint)
    assert isinstance(exc, UnexpectedToken)
    tok = exc.token
    span = _tok_span(src.name, tok) if tok.line is not None else Span(file=src.name, line=line, column=col, end_line=line, end_column=col + 1)
    expected = set(exc.expected)
    hint = None
    if tok.type == "NAME" and ("EQUAL" in expected or "LPAR" in expected):
        hint = "statements start a new line with a name, `input`, `output`; a value needs an operator between its parts"
    if tok.type == "NAME" and str(tok) not in KEYWORDS:
        close = did_you_mean(str(tok), KEYWORDS)
        if close and "RBRACE" not in expected:
            hint = close
    if tok.type == "EQUAL" and "COLON" in expected:
        if src.line(tok.line).lstrip().startswith("input"):
            hint = "an input's type comes after `:`: `input x: float32[batch, 784]`"
        else:
            hint = "a parameter's type comes after `:` and its default after `=`: `(out: int = 3)`"
    if tok.type in ("RPAR", "RSQB", "RBRACE"):
        hint = f"unbalanced `{tok}`"
    if tok.type == "__ANON_0" or str(tok) == "->":
        hint = "`->` chains a value into a layer: `x -> dense(10)`"
    return Diagnostic(
        code="E001",
        message=f"unexpected {_describe_token(tok)}; expected {_expected(expected)}",
        span=span,
        hint=hint,
    )


_TOP = re.compile(r"^(import|from|block|model|train)\b", re.M)


def _chunks(text: str) -> list[tuple[int, str]]:
    """Top-level definitions as (line offset, text) pairs, cut at lines starting with a keyword."""
    starts = [m.start() for m in _TOP.finditer(text)]
    if not starts or starts[0] != 0:
        starts = [0] + starts
    out = []
    for i, s in enumerate(starts):
        e = starts[i + 1] if i + 1 < len(starts) else len(text)
        out.append((text.count("\n", 0, s), text[s:e]))
    return out


def _shift(diag: Diagnostic, lines: int) -> Diagnostic:
    if diag.span is None or lines == 0:
        return diag
    sp = diag.span
    return diag.model_copy(update={"span": sp.model_copy(update={"line": sp.line + lines, "end_line": sp.end_line + lines})})


def _parse(text: str, name: str):
    # No cyclic garbage collection while the AST grows: it holds no cycles, and full collections
    # over a growing heap made a 100,000-layer parse twice as slow.
    token = _FILE.set(name)
    was = gc.isenabled()
    gc.disable()
    try:
        return _lark().parse(text)
    finally:
        if was:
            gc.enable()
        _FILE.reset(token)


def parse(src: SourceFile) -> ast.Module:
    """Parse a whole file. Raises DlspecError with every syntax error it can find."""
    try:
        return _parse(src.text, src.name)
    except _Abort as exc:
        raise DlspecError(exc.diag) from None
    except UnexpectedInput as first:
        diags = []
        for offset, chunk in _chunks(src.text):
            try:
                _parse(chunk, src.name)
            except UnexpectedInput as exc:
                sub = SourceFile(src.name, chunk)
                diags.append(_shift(_syntax_diagnostic(sub, exc), offset))
            except _Abort as exc:
                diags.append(_shift(exc.diag, offset))
        if not diags:
            diags = [_syntax_diagnostic(src, first)]
        raise DlspecError(diags) from None
