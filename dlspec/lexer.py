"""A Pygments lexer for `.dls` spec files, registered as the `dlspec` lexer (entry point
`pygments.lexers`), so the docs site and any Pygments user highlight specs:

    pygmentize -l dlspec specs/resnet18.dls

Its tokens follow the grammar (dlspec/grammars/dlspec.lark): keywords, the op catalogue's
names as built-ins, capitalised names (blocks, models) as classes, dtypes as types.
"""

from __future__ import annotations

from pygments.lexer import RegexLexer, bygroups, words
from pygments.token import Comment, Keyword, Name, Number, Operator, Punctuation, String, Whitespace

DTYPES = ("float16", "bfloat16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "bool")


def _op_names() -> tuple[str, ...]:
    from .ir.ops import REGISTRY

    return tuple(sorted(REGISTRY, key=len, reverse=True))


class DlspecLexer(RegexLexer):
    name = "dlspec"
    aliases = ["dlspec", "dls"]
    filenames = ["*.dls"]
    mimetypes = ["text/x-dlspec"]

    tokens = {
        "root": [
            (r"[ \t\r\f]+", Whitespace),
            (r"\n", Whitespace),
            (r"#[^\n]*", Comment.Single),
            (r'"([^"\\\n]|\\.)*"', String.Double),
            (r"(block|model)(\s+)([A-Za-z_][A-Za-z0-9_]*)", bygroups(Keyword.Declaration, Whitespace, Name.Class)),
            (r"(train)(\s+)(gan|distill)(\s+)([A-Za-z_][A-Za-z0-9_]*)",
             bygroups(Keyword.Declaration, Whitespace, Keyword.Pseudo, Whitespace, Name.Class)),
            (r"(train)(\s+)([A-Za-z_][A-Za-z0-9_]*)", bygroups(Keyword.Declaration, Whitespace, Name.Class)),
            (words(("import", "from", "input", "output", "freeze", "replace", "then", "if", "else", "as"),
                   suffix=r"\b"), Keyword),
            (words(("and", "or", "not"), suffix=r"\b"), Operator.Word),
            (words(("true", "false", "none"), suffix=r"\b"), Keyword.Constant),
            (words(DTYPES, suffix=r"\b"), Keyword.Type),
            (words(_op_names(), suffix=r"\b(?=\s*\()"), Name.Builtin),
            (r"[A-Z][A-Za-z0-9_]*", Name.Class),
            (r"([A-Za-z_][A-Za-z0-9_]*)(\s*)(=)(?!=)", bygroups(Name.Variable, Whitespace, Operator)),
            (r"[A-Za-z_][A-Za-z0-9_]*", Name),
            (r"(\d[\d_]*)?\.\d[\d_]*([eE][+-]?\d+)?|\d[\d_]*\.([eE][+-]?\d+)?|\d[\d_]*[eE][+-]?\d+", Number.Float),
            (r"\d[\d_]*", Number.Integer),
            (r"->|\*\*|//|==|!=|<=|>=|[-+*/%<>=]", Operator),
            (r"[()\[\]{},:.]", Punctuation),
        ],
    }
