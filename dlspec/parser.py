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
from copy import copy
from functools import cache, lru_cache
from importlib import resources

from . import ast
from ._lalr import (
    BasicLexer,
    ContextualLexer,
    Lark,
    Lark_StandAlone,
    PatternRE,
    PatternStr,
    Token,
    Transformer,
    Tree,
    UnexpectedCharacters,
    UnexpectedEOF,
    UnexpectedInput,
    UnexpectedToken,
)
from .errors import Diagnostic, DlspecError, did_you_mean
from .limits import MAX_INT, MAX_NESTING
from .source import SourceFile, Span

KEYWORDS = (
    "import from block model train input output freeze replace for in then if else or and not as true false none"
).split()

TOKEN_NAMES = {
    "NAME": "a name",
    "LAYER_PATH": "a layer path",
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


#: the options the parser tables are generated with (`python -m dlspec.parser` writes dlspec/_lalr.py)
LARK_OPTIONS = {
    "parser": "lalr",
    "lexer": "contextual",
    "maybe_placeholders": True,
    "keep_all_tokens": True,  # brackets and keywords reach the callbacks, so spans cover them
}


@lru_cache(maxsize=1)
def _lark() -> Lark:
    """The LALR parser, building the AST while it parses (an embedded transformer): no parse tree,
    no recursive walk over one, so a chain of 100,000 layers costs no stack and little time.

    Its tables come from `dlspec._lalr`, generated from grammars/dlspec.lark by Lark's standalone
    generator as Python literals (no pickle, no cache file): a process loads them instead of
    building the LALR automaton from the grammar, and imports neither `lark` nor `regex`."""
    return Lark_StandAlone(transformer=_ToAst(), _plugins={"ContextualLexer": _ContextualLexer})


class _ContextualLexer(ContextualLexer):
    """Lark's contextual lexer, token for token, without compiling a scanner for each parser state.

    Lark's lexer builds, for every distinct set of terminals a parser state accepts, a scanner
    (one regular expression over those terminals) and compiles it on first use: a file of a few
    hundred lines reaches some 40 such sets, and compiling them was most of a small file's parse.
    Here one scanner over all terminals (Lark's own `root_lexer`) reads each token, and its
    answer is taken when the state's scanner would give the same one:

    * the terminal it found is one the state's scanner tries (`_Plan.direct`), and
    * no terminal the state's scanner tries but the root scanner does not starts at that point
      (`_Plan.literals`: a keyword the root folds into NAME, which the state keeps apart because
      it accepts no NAME there).

    Both scanners try terminals in the same order (Lark sorts them by one key), so then the
    state's scanner stops at the same terminal with the same text. The keyword check that follows
    a NAME (`_Plan.keywords`) is the state's own. Everything else (a terminal the state does not
    accept, text no terminal matches, the errors) goes to the state's own lexer, built as Lark
    builds it, so the tokens and every error are Lark's."""

    def __init__(self, conf, states, always_accept=()):  # noqa: ANN001 (Lark's signature)
        # Lark's __init__ builds a lexer for every state up front; they are built on first use here
        terminals = list(conf.terminals)
        self._conf = copy(conf)
        self._conf.terminals = terminals
        self._accepts = {state: frozenset(accepts) for state, accepts in states.items()}
        self._always = frozenset(always_accept)
        self._lexer_by_key: dict[frozenset, BasicLexer] = {}
        self._plans: dict[frozenset, _Plan | None] = {}
        self.lexers = {}  # Lark's attribute, filled as states are reached
        root_conf = copy(self._conf)
        root_conf.skip_validation = True
        self.root_lexer = BasicLexer(root_conf)
        patterns = {type(t.pattern) for t in terminals}
        # the plan reasons about literal strings and plain regular expressions only
        self._fast = (not conf.callbacks and not conf.g_regex_flags and patterns <= {PatternStr, PatternRE}
                      and not any(t.pattern.flags for t in terminals))

    def _state_lexer(self, state: int) -> BasicLexer:
        lexer = self.lexers.get(state)
        if lexer is None:
            key = self._accepts[state]
            lexer = self._lexer_by_key.get(key)
            if lexer is None:
                names = set(key) | set(self._conf.ignore) | self._always
                lexer_conf = copy(self._conf)
                lexer_conf.skip_validation = True  # the generator validated every terminal
                lexer_conf.terminals = [self._conf.terminals_by_name[n] for n in names
                                        if n in self._conf.terminals_by_name]
                lexer = self._lexer_by_key[key] = BasicLexer(lexer_conf)
            self.lexers[state] = lexer
        return lexer

    def _plan(self, state: int) -> _Plan | None:
        key = self._accepts[state]
        if key not in self._plans:
            self._plans[key] = _Plan.of(self._state_lexer(state), self.root_lexer) if self._fast else None
        return self._plans[key]

    def lex(self, lexer_state, parser_state):  # noqa: ANN001, ANN201 (Lark's signature)
        try:
            while True:
                plan = self._plan(parser_state.position)
                token = plan.next_token(lexer_state) if plan is not None else None
                if token is None:  # the state's own lexer, from where the plan stopped
                    token = self._state_lexer(parser_state.position).next_token(lexer_state, parser_state)
                yield token
        except EOFError:
            pass
        except UnexpectedCharacters as e:  # as Lark's: a token the state does not expect, where one is
            try:
                last_token = lexer_state.last_token
                token = self.root_lexer.next_token(lexer_state, parser_state)
                raise UnexpectedToken(token, e.allowed, state=parser_state, token_history=[last_token],
                                      terminals_by_name=self.root_lexer.terminals_by_name) from None
            except UnexpectedCharacters:
                raise e from None


class _Plan:
    """How one parser state's lexer reads a token, in terms of the root scanner's answer."""

    __slots__ = ("root", "direct", "literals", "keywords", "ignore", "newline_types")

    def __init__(self, root: BasicLexer, direct: frozenset[str], literals: tuple[str, ...],
                 keywords: dict[str, dict[str, str]], ignore: frozenset[str], newline_types: frozenset[str]):
        self.root = root
        self.direct = direct
        self.literals = literals
        self.keywords = keywords
        self.ignore = ignore
        self.newline_types = newline_types

    @classmethod
    def of(cls, lexer: BasicLexer, root: BasicLexer) -> _Plan:
        """The plan of a state's `lexer` (Lark's `_create_unless`, worked out without compiling):
        a literal terminal that a regular-expression terminal of the same priority matches whole
        is folded into it, and a token of the latter that equals it becomes it."""

        def folded(terminals) -> tuple[set[str], dict[str, dict[str, str]]]:
            regexps = [t for t in terminals if isinstance(t.pattern, PatternRE)]
            literals = [t for t in terminals if isinstance(t.pattern, PatternStr)]
            embedded: set[str] = set()
            keywords: dict[str, dict[str, str]] = {}
            for r in regexps:
                for lit in literals:
                    if lit.priority == r.priority and _whole_match(r.pattern.to_regexp(), lit.pattern.value):
                        keywords.setdefault(r.name, {}).setdefault(lit.pattern.value, lit.name)
                        embedded.add(lit.name)
            return embedded, keywords

        embedded, keywords = folded(lexer.terminals)
        root_embedded, _ = folded(root.terminals)
        names = {t.name for t in lexer.terminals}
        direct = frozenset(names - embedded)
        literals = tuple(t.pattern.value for t in lexer.terminals
                         if t.name in direct and t.name in root_embedded)
        return cls(root, direct, literals, keywords, lexer.ignore_types, lexer.newline_types)

    def next_token(self, lexer_state) -> Token | None:  # noqa: ANN001
        """The state's next token, as its own lexer reads it; None where the plan cannot tell
        (nothing is consumed at that point, so the state's lexer reads on from there)."""
        line_ctr = lexer_state.line_ctr
        text = lexer_state.text
        scanner = self.root.scanner
        while line_ctr.char_pos < text.end:
            pos = line_ctr.char_pos
            res = scanner.match(text, pos)
            if res is None:
                return None
            value, type_ = res
            if type_ not in self.direct:
                return None
            for lit in self.literals:
                if text.text.startswith(lit, pos):
                    return None
            if type_ in self.ignore:
                line_ctr.feed(value, type_ in self.newline_types)
                continue
            kw = self.keywords.get(type_)
            t = Token(type_ if kw is None else kw.get(value, type_), value, pos, line_ctr.line, line_ctr.column)
            line_ctr.feed(value, type_ in self.newline_types)
            t.end_line = line_ctr.line
            t.end_column = line_ctr.column
            t.end_pos = line_ctr.char_pos
            lexer_state.last_token = t
            return t
        raise EOFError(self)


@cache
def _whole_match(regexp: str, s: str) -> bool:
    m = re.match(regexp, s)
    return m is not None and m.group(0) == s


@lru_cache(maxsize=1)
def grammar_text() -> str:
    """The grammar, as the fuzz tests read it."""
    return resources.files("dlspec").joinpath("grammars/dlspec.lark").read_text(encoding="utf-8")


def grammar_sha256() -> str:
    """The SHA-256 of the grammar's text, recorded in dlspec/_lalr.py when it is generated."""
    import hashlib

    return hashlib.sha256(grammar_text().encode("utf-8")).hexdigest()


def generate_tables() -> str:
    """The text of dlspec/_lalr.py: Lark's standalone LALR parser for grammars/dlspec.lark, its
    tables as Python literals. Needs the `lark` package (only here, never when parsing)."""
    import lark
    from lark.tools.standalone import gen_standalone

    chunks: list[str] = []
    gen_standalone(lark.Lark(grammar_text(), **LARK_OPTIONS), output=lambda *a: chunks.append(" ".join(map(str, a))))
    text = "\n".join(chunks) + "\n"
    edits = {
        # the uncompressed tables need no pickle: without its import nothing in the module can load one
        "import pickle, zlib, base64\n": "",
        # the grammar's patterns need only `re`; importing `regex` when it is installed costs ~9 ms
        "    import regex\n    _has_regex = True\n": "    raise ImportError  # dlspec's grammar needs only `re`\n",
        # Lark's cache branch (never taken: no cache option) imports the package it stands in
        "                from . import __version__\n": "                __version__ = ''\n",
        # Token is this module's own class; a relative import would find dlspec.lexer instead
        "        from .lexer import Token\n": "",
    }
    for old, new in edits.items():
        if text.count(old) != 1:
            raise RuntimeError(f"lark {lark.__version__}'s standalone output changed: {old.strip()!r} not found once")
        text = text.replace(old, new)
    header = (
        "# ruff: noqa\n"
        "# Generated by `python -m dlspec.parser` from dlspec/grammars/dlspec.lark (Lark's standalone\n"
        "# generator; its runtime part is under the MPL 2.0, see below): do not edit.\n"
        f"GRAMMAR_SHA256 = {grammar_sha256()!r}\n"
    )
    return header + text


#: the file name the AST's spans carry while a parse runs (the parser is built once, for every file)
_FILE = contextvars.ContextVar("dlspec_parse_file", default="<input>")

#: named terminals that carry a value; every other token (keywords, brackets) is punctuation
_VALUE_TOKENS = frozenset({"NAME", "LAYER_PATH", "INT", "FLOAT", "STRING", "COMP_OP", "ADD_OP", "MUL_OP", "POW_OP"})


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
        return _Part(str(ch[0]), first, last)

    def for_stmt(self, ch):
        at_in = next(i for i, c in enumerate(ch) if isinstance(c, Token) and c.type == "IN")
        targets = [c.value for c in ch[:at_in] if isinstance(c, _Part)]
        iterable, body = ch[at_in + 1], ch[-1]
        return ast.ForStmt(_span_of(ch), targets, iterable, _unpart(body))

    def loop_name(self, ch):
        first, last = _region(ch)
        return _Part(str(ch[0]), first, last)

    def loop_tuple(self, ch):
        first, last = _region(ch)
        return _Part([c.value for c in ch if isinstance(c, _Part)], first, last)

    def layer_name(self, ch):
        tok = ch[0]
        first, last = _region(ch)
        if tok.type != "STRING":
            return _Part((str(tok), None), first, last)
        return _Part((str(tok), _template(tok)), first, last)

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
        name, template = ch[2].value
        parts = [p for p in template or () if isinstance(p, ast.Node)]
        return _depth(ast.NamedLayer(_span_of(ch), ch[0], name, template), ch[0], *parts)

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
        if args.start[0] > _end(func)[0]:
            # newlines are whitespace, so `(` opening a line would call the value the line above
            # ends with: refused where it stands rather than read as a call nobody meant
            line, col = args.start
            raise _Abort(Diagnostic(
                code="E130", message="a line may not start with `(`: it would call the value that ends the line above",
                span=Span(file=_FILE.get(), line=line, column=col, end_line=line, end_column=col + 1),
                hint="to call, put `(` on the line above, right after the name; a tuple or a grouped value "
                     "starts a statement after `name =`"))
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


def _template(tok: Token) -> list:
    """A name template's parts: literal text, and the expression between each `{` and `}`
    (parsed where it stands, so its spans point into the string). `{{` and `}}` are braces."""
    raw = str(tok)[1:-1]
    parts: list = []
    text = ""
    i = 0
    while i < len(raw):
        c = raw[i]
        if c in "{}" and raw[i + 1:i + 2] == c:
            text += c
            i += 2
            continue
        if c == "}":
            raise _Abort(_template_error(tok, i, "a `}` in a name template closes no `{`", "write `}}` for a brace"))
        if c != "{":
            text += c
            i += 1
            continue
        close = raw.find("}", i + 1)
        if close < 0:
            raise _Abort(_template_error(tok, i, "a `{` in a name template is not closed", "write `{i}` for a value, `{{` for a brace"))
        if text:
            parts.append(_unquote('"' + text + '"'))
            text = ""
        inner = raw[i + 1:close]
        if not inner.strip():
            raise _Abort(_template_error(tok, i, "`{}` in a name template holds no value", "write the value: `\"layer{i}\"`"))
        parts.append(_template_value(tok, i + 1, inner))
        i = close + 1
    if text:
        parts.append(_unquote('"' + text + '"'))
    return parts


def _template_value(tok: Token, offset: int, inner: str) -> ast.Node:
    """The expression `inner`, found at `offset` in the string token `tok`, parsed as the value
    of an assignment and moved to where it stands in the file."""
    wrapped = "model _ {\n_ = " + inner + "\n}"
    try:
        body = _lark().parse(wrapped).items[0].body
    except UnexpectedInput:
        body = []
    if len(body) != 1 or not isinstance(body[0], ast.Assign):
        raise _Abort(_template_error(tok, offset - 1, f"`{{{inner}}}` in a name template is not a value",
                                     "a name template holds values like `{i}` or `{i + 1}`"))
    value = body[0].value
    _move(value, tok.line - 2, tok.column + 1 + offset - 5)
    return value


def _move(node: ast.Node, lines: int, columns: int) -> None:
    """Shift the spans of a template's expression (parsed on line 2, column 5) to its place."""
    stack = [node]
    while stack:
        n = stack.pop()
        for sp_name in ("span", "_outer"):
            sp = n.__dict__.get(sp_name)
            if isinstance(sp, Span):
                n.__dict__[sp_name] = sp.model_copy(update={
                    "line": sp.line + lines, "end_line": sp.end_line + lines,
                    "column": sp.column + columns, "end_column": sp.end_column + columns})
        for v in n.__dict__.values():
            items = v if isinstance(v, list) else [v]
            for it in items:
                if isinstance(it, ast.Node):
                    stack.append(it)
                elif isinstance(it, tuple):
                    stack.extend(x for x in it if isinstance(x, ast.Node))


def _template_error(tok: Token, offset: int, message: str, hint: str) -> Diagnostic:
    col = tok.column + 1 + offset
    return Diagnostic(code="E131", message=message, hint=hint,
                      span=Span(file=_FILE.get(), line=tok.line, column=col, end_line=tok.line, end_column=col + 1))


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


_CLOSERS = {"{": "}", "(": ")", "[": "]"}


def _unclosed(text: str) -> tuple[tuple[int, int], str] | None:
    """((line, column), bracket) of the innermost bracket of `text` left open at its end, skipping
    strings and comments; None when every bracket closes (or a closer does not match)."""
    stack = _open_brackets(text)
    return stack[-1] if stack else None


def _open_brackets(text: str) -> list[tuple[tuple[int, int], str]]:
    """Every bracket of `text` left open at its end, outermost first ([] when a closer does not
    match), from the parser's own lexer (strings and comments are not brackets)."""
    stack: list[tuple[tuple[int, int], str]] = []
    try:
        for tok in _lark().lex(text):
            c = str(tok)
            if tok.type in ("LPAR", "LSQB", "LBRACE"):
                stack.append(((tok.line, tok.column), c))
            elif tok.type in ("RPAR", "RSQB", "RBRACE"):
                if not stack or _CLOSERS[stack[-1][1]] != c:
                    return []
                stack.pop()
    except UnexpectedInput:  # a character no token starts with: the brackets before it
        pass
    return stack


def _syntax_diagnostic(src: SourceFile, exc: UnexpectedInput, line_offset: int = 0) -> Diagnostic:
    """The diagnostic of a syntax error in `src`, a part of a file starting `line_offset` lines in
    (the span is shifted by the caller; a line named in a hint is shifted here)."""
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
        opened = _unclosed(src.text)
        if opened is not None:  # at the bracket that is never closed, not at the end of the text
            (o_line, o_col), ch = opened
            closer = _CLOSERS[ch]
            span = Span(file=src.name, line=o_line, column=o_col, end_line=o_line, end_column=o_col + 1)
            return Diagnostic(code="E003", message=f"`{ch}` is never closed: the {'definition' if ch == '{' else 'text'} "
                              f"ends before its `{closer}`", span=span,
                              hint=f"close it with `{closer}`; at the end the parser expected {_expected(set(expected))}")
        return Diagnostic(code="E003", message=f"unexpected end of file; expected {_expected(set(expected))}", span=span)
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
        stack = _open_brackets(src.text[:tok.start_pos]) if tok.start_pos is not None else []
        # an inner bracket left open before the closer of an outer one (`dense(3` then `}`)
        if stack and _CLOSERS[stack[-1][1]] != str(tok) and any(_CLOSERS[c] == str(tok) for _, c in stack):
            (o_line, o_col), ch = stack[-1]
            hint = f"the `{ch}` at line {o_line + line_offset}, column {o_col} is not closed: close it with `{_CLOSERS[ch]}` first"
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
                diags.append(_shift(_syntax_diagnostic(sub, exc, offset), offset))
            except _Abort as exc:
                diags.append(_shift(exc.diag, offset))
        if not diags:
            diags = [_syntax_diagnostic(src, first)]
        raise DlspecError(diags) from None


if __name__ == "__main__":  # regenerate the parser tables after changing the grammar
    from pathlib import Path

    from .io import atomic_write_text

    target = Path(__file__).with_name("_lalr.py")
    atomic_write_text(target, generate_tables())
    print(f"wrote {target}")
