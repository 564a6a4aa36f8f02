"""Text → AST. Lark (LALR, positions propagated) plus a transformer building `dlspec.ast` nodes.

Syntax errors become `E0xx` diagnostics. To report more than the first syntax error in a file,
a file that fails to parse is cut into its top-level definitions and each is parsed on its own.
"""

from __future__ import annotations

import ast as pyast
import re
import sys
from contextlib import contextmanager
from functools import lru_cache
from importlib import resources

from lark import Lark, Token, Transformer, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken, VisitError

from . import ast
from .errors import Diagnostic, DlspecError, did_you_mean
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
    text = resources.files("dlspec").joinpath("grammars/dlspec.lark").read_text(encoding="utf-8")
    return Lark(
        text,
        parser="lalr",
        propagate_positions=True,
        maybe_placeholders=True,
        cache=True,
    )


def _span(file: str, meta) -> Span:
    return Span(
        file=file,
        line=meta.line,
        column=meta.column,
        end_line=meta.end_line,
        end_column=meta.end_column,
    )


def _tok_span(file: str, tok: Token) -> Span:
    return Span(file=file, line=tok.line, column=tok.column, end_line=tok.end_line, end_column=tok.end_column)


def _unquote(tok: str) -> str:
    return pyast.literal_eval(tok)


def _number(text: str) -> str:
    return text.replace("_", "")


@v_args(meta=True, inline=True)
class _ToAst(Transformer):
    def __init__(self, file: str):
        super().__init__()
        self.file = file

    def s(self, meta) -> Span:
        return _span(self.file, meta)

    # definitions
    def start(self, meta, *items):
        return ast.Module(self.s(meta) if not meta.empty else Span(file=self.file, line=1, column=1, end_line=1, end_column=1), list(items))

    def import_all(self, meta, path):
        return ast.Import(self.s(meta), _unquote(path), None)

    def import_from(self, meta, path, *names):
        return ast.Import(self.s(meta), _unquote(path), [str(n) for n in names])

    def block_def(self, meta, name, params, body):
        return ast.BlockDef(self.s(meta), str(name), params or [], body, file=self.file)

    def model_def(self, meta, name, params, base, body):
        return ast.ModelDef(self.s(meta), str(name), params or [], body, base, file=self.file)

    def base(self, meta, name, args):
        a, k = args if args is not None else ([], [])
        return ast.BaseRef(self.s(meta), str(name), a, k)

    def train_def(self, meta, first, second, args, body):
        kind, name = (str(first), str(second)) if second is not None else (None, str(first))
        a, k = args if args is not None else ([], [])
        return ast.TrainDef(self.s(meta), kind, name, a, k, body, file=self.file)

    def params(self, meta, *params):
        return [p for p in params if p is not None]

    def param(self, meta, name, type_, default):
        return ast.Param(self.s(meta), str(name), str(type_) if type_ is not None else None, default)

    def body(self, meta, *stmts):
        return list(stmts)

    # statements
    def input_stmt(self, meta, *decls):
        return ast.InputStmt(self.s(meta), list(decls))

    def input_decl(self, meta, name, type_):
        return ast.InputDecl(self.s(meta), str(name), type_)

    def tensor_type(self, meta, dtype, *dims):
        return ast.TensorTypeExpr(self.s(meta), str(dtype), [d for d in dims if d is not None])

    def output_stmt(self, meta, *items):
        return ast.OutputStmt(self.s(meta), list(items))

    def named_output(self, meta, name, value):
        return ast.OutputItem(self.s(meta), str(name), value)

    def plain_output(self, meta, value):
        return ast.OutputItem(self.s(meta), None, value)

    def assign(self, meta, name, value):
        return ast.Assign(self.s(meta), [str(name)], value)

    def tuple_assign(self, meta, *parts):
        *names, value = parts
        return ast.Assign(self.s(meta), [str(n) for n in names], value)

    def freeze_stmt(self, meta, *patterns):
        return ast.FreezeStmt(self.s(meta), [_unquote(p) for p in patterns])

    def replace_stmt(self, meta, path, value):
        return ast.ReplaceStmt(self.s(meta), path, value)

    def dotted_name(self, meta, *names):
        return ".".join(str(n) for n in names)

    def expr_stmt(self, meta, value):
        return ast.ExprStmt(self.s(meta), value)

    # expressions
    def then(self, meta, a, b):
        return ast.Then(self.s(meta), a, b)

    def cond(self, meta, then, test, orelse):
        return ast.Cond(self.s(meta), then, test, orelse)

    def or_(self, meta, a, b):
        return ast.BoolOp(self.s(meta), "or", a, b)

    def and_(self, meta, a, b):
        return ast.BoolOp(self.s(meta), "and", a, b)

    def not_(self, meta, a):
        return ast.UnaryOp(self.s(meta), "not", a)

    def compare(self, meta, a, op, b):
        return ast.Compare(self.s(meta), str(op), a, b)

    def pipe(self, meta, a, b):
        return ast.Pipe(self.s(meta), a, b)

    def named_layer(self, meta, layer, name):
        return ast.NamedLayer(self.s(meta), layer, str(name))

    def binop(self, meta, a, op, b):
        return ast.BinOp(self.s(meta), str(op), a, b)

    def unary(self, meta, op, a):
        return ast.UnaryOp(self.s(meta), "-", a) if op == "-" else a

    def pow(self, meta, a, op, b):
        return ast.BinOp(self.s(meta), "**", a, b)

    def call(self, meta, func, args):
        a, k = args
        return ast.Call(self.s(meta), func, a, k)

    def call_args(self, meta, *items):
        args, kwargs = [], []
        for it in items:
            if it is None:
                continue
            (kwargs if isinstance(it, ast.Kwarg) else args).append(it)
        return args, kwargs

    def kwarg(self, meta, name, value):
        return ast.Kwarg(self.s(meta), str(name), value)

    def attr(self, meta, value, name):
        return ast.Attr(self.s(meta), value, str(name))

    def index(self, meta, value, idx):
        return ast.Index(self.s(meta), value, idx)

    def var(self, meta, name):
        return ast.Var(self.s(meta), str(name))

    def int_lit(self, meta, tok):
        return ast.Literal(self.s(meta), int(_number(tok)))

    def float_lit(self, meta, tok):
        return ast.Literal(self.s(meta), float(_number(tok)))

    def string_lit(self, meta, tok):
        return ast.Literal(self.s(meta), _unquote(tok))

    def true_lit(self, meta):
        return ast.Literal(self.s(meta), True)

    def false_lit(self, meta):
        return ast.Literal(self.s(meta), False)

    def none_lit(self, meta):
        return ast.Literal(self.s(meta), None)

    def tuple_lit(self, meta, *items):
        return ast.TupleLit(self.s(meta), [i for i in items if i is not None])

    def list_lit(self, meta, *items):
        return ast.ListLit(self.s(meta), [i for i in items if i is not None])

    def dict_lit(self, meta, *pairs):
        return ast.DictLit(self.s(meta), [p for p in pairs if p is not None])

    def pair(self, meta, key, value):
        k = _unquote(key) if key.type == "STRING" else str(key)
        return (k, value)


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


@contextmanager
def _recursion_headroom(limit: int = 20_000):
    """Left-nested chains make the parse tree as deep as the chain is long; give the tree
    builder room for a few thousand layers in one `->` expression."""
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(max(old, limit))
    try:
        yield
    finally:
        sys.setrecursionlimit(old)


def parse(src: SourceFile) -> ast.Module:
    """Parse a whole file. Raises DlspecError with every syntax error it can find."""
    try:
        tree = _lark().parse(src.text)
    except UnexpectedInput as first:
        diags = []
        for offset, chunk in _chunks(src.text):
            try:
                _lark().parse(chunk)
            except UnexpectedInput as exc:
                sub = SourceFile(src.name, chunk)
                diags.append(_shift(_syntax_diagnostic(sub, exc), offset))
        if not diags:
            diags = [_syntax_diagnostic(src, first)]
        raise DlspecError(diags) from None
    too_deep = Diagnostic(code="E005", message="the file nests too deeply to read",
                          span=Span(file=src.name, line=1, column=1, end_line=1, end_column=2),
                          hint="split a very long `->` chain or expression into named steps")
    try:
        with _recursion_headroom():
            return _ToAst(src.name).transform(tree)
    except RecursionError:
        raise DlspecError(too_deep) from None
    except VisitError as exc:  # a literal the transformer could not read (e.g. a bad escape)
        if isinstance(exc.orig_exc, RecursionError):
            raise DlspecError(too_deep) from None
        meta = getattr(exc.obj, "meta", None)
        span = _span(src.name, meta) if meta is not None and not meta.empty else None
        raise DlspecError(Diagnostic(code="E004", message=f"invalid literal: {exc.orig_exc}", span=span,
                                     hint="escapes in strings are Python's: \\n, \\t, \\\", \\\\")) from None
