"""Property test: whatever text reaches the compiler, the only exception is `DlspecError`.

Random text and mutations of the real specs in `specs/` (tokens or characters deleted,
duplicated, swapped, replaced; the file truncated) go through `compile_source`. A Python
traceback reaching a user is a bug (DESIGN, "Errors"), so any other exception fails the test.
"""

from __future__ import annotations

import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dlspec import DlspecError, compile_source
from dlspec.source import SourceFile

from .helpers import SPEC_DIR

SPEC_TEXTS = sorted(p.read_text(encoding="utf-8") for p in SPEC_DIR.glob("*.dls"))
TOKEN = re.compile(r"\s+|[A-Za-z_][A-Za-z0-9_]*|\d[\d_.eE]*|\"[^\"\n]*\"|->|\*\*|//|[=!<>]=|.", re.S)

#: pieces of the language that a mutation may splice in: keywords, punctuation, layer names
VOCAB = [
    "model", "block", "train", "input", "output", "import", "from", "freeze", "replace", "then", "if", "else",
    "as", "and", "or", "not", "true", "false", "none", "{", "}", "(", ")", "[", "]", ",", ":", "=", "->", ".",
    "*", "+", "-", "/", "//", "**", "==", "<", "0", "1", "-1", "3", "0.5", "1e9", '"x"', "'", "x", "batch",
    "seq", "float32", "int64", "dense", "conv2d", "flatten", "relu", "lstm", "concat", "split", "reshape",
    "embedding", "multihead_attention", "Basic", "ConvBN", "ResNet18", "adam", "cosine", "warmup", "data",
    "builtin", "epochs", "\n",
]

# A compile that raises anything else is a crash; hypothesis shrinks it to a small example.
FUZZ = settings(max_examples=300, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def compiles_or_reports(text: str) -> None:
    try:
        compile_source(SourceFile("fuzz.dls", text))
    except DlspecError as exc:
        assert exc.diagnostics, "a DlspecError must carry at least one diagnostic"
        for d in exc.diagnostics:
            assert re.fullmatch(r"[EW]\d{3}", d.code), d.code
            assert d.message


@st.composite
def mutated_spec(draw: st.DrawFn) -> str:
    text = draw(st.sampled_from(SPEC_TEXTS))
    tokens = TOKEN.findall(text)
    for _ in range(draw(st.integers(1, 4))):
        if not tokens:
            break
        i = draw(st.integers(0, len(tokens) - 1))
        kind = draw(st.sampled_from(["delete", "duplicate", "swap", "replace", "insert", "char"]))
        if kind == "delete":
            del tokens[i]
        elif kind == "duplicate":
            tokens.insert(i, tokens[i])
        elif kind == "swap":
            j = draw(st.integers(0, len(tokens) - 1))
            tokens[i], tokens[j] = tokens[j], tokens[i]
        elif kind == "replace":
            tokens[i] = draw(st.sampled_from(VOCAB))
        elif kind == "insert":
            tokens.insert(i, " " + draw(st.sampled_from(VOCAB)) + " ")
        else:
            tok = tokens[i]
            k = draw(st.integers(0, len(tok)))
            tokens[i] = tok[:k] + draw(st.characters(codec="utf-8")) + tok[k + 1:]
    out = "".join(tokens)
    if draw(st.booleans()) and draw(st.booleans()):
        out = out[: draw(st.integers(0, len(out)))]
    return out


def test_the_corpus_has_specs_to_mutate():
    assert SPEC_TEXTS, f"no .dls files under {SPEC_DIR}"


@FUZZ
@given(mutated_spec())
def test_mutated_specs_raise_only_dlspec_errors(text: str) -> None:
    compiles_or_reports(text)


@settings(max_examples=100, deadline=None, derandomize=True)
@given(st.lists(st.sampled_from(VOCAB), max_size=40).map(" ".join))
def test_random_token_soup_raises_only_dlspec_errors(text: str) -> None:
    compiles_or_reports(text)


@settings(max_examples=50, deadline=None, derandomize=True)
@given(st.text(max_size=200))
def test_random_text_raises_only_dlspec_errors(text: str) -> None:
    compiles_or_reports(text)
