"""Fuzz tests: whatever reaches the compiler or the ONNX importer ends in a `DlspecError` with
well-formed diagnostics (code, message, a span inside its file) or a valid result, within a time
limit (tests/fuzz_inputs.py: TIME_LIMIT). A Python traceback or a hang is a bug.

Inputs: programs generated from the project's own grammar (`hypothesis.extra.lark.from_lark` on
`dlspec/grammars/dlspec.lark`), mutations of `specs/*.dls` and of the error corpus
`tests/invalid/*.dls`, random token soup and text, and mutated ONNX models (field changes,
truncation, huge dims, control flow).

The suite runs a bounded, derandomized sample (a few seconds). Long runs set the number of
inputs and a seed (docs/security.md, "Fuzzing"):

    DLSPEC_FUZZ_EXAMPLES=100000 DLSPEC_FUZZ_SEED=12345 python -m pytest tests/test_fuzz.py -p no:cacheprovider

Every crasher found is kept as a regression file in `tests/invalid/` with its `# expect:` line.
"""

from __future__ import annotations

import os
import tempfile
from collections import Counter
from pathlib import Path

from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from .fuzz_inputs import (
    SEEDS,
    VOCAB,
    compiles_or_reports,
    grammar_program,
    imports_or_reports,
    mutated_onnx,
    mutated_seed,
)

LONG = int(os.environ.get("DLSPEC_FUZZ_EXAMPLES", "0") or 0)
SEED = os.environ.get("DLSPEC_FUZZ_SEED")


def fuzz(examples: int):
    """Settings for one fuzz test: `examples` inputs in the suite (derandomized, no database), or
    the long run's count and seed when DLSPEC_FUZZ_EXAMPLES is set."""
    n = LONG or examples
    base = settings(max_examples=n, deadline=None, database=None, derandomize=SEED is None and not LONG,
                    suppress_health_check=list(HealthCheck), print_blob=True)

    def wrap(f):
        f = base(f)
        return seed(int(SEED))(f) if SEED is not None else f

    return wrap


def test_the_corpus_has_specs_and_error_cases_to_mutate():
    names = {p.parent.name for p, _ in SEEDS}
    assert {"specs", "invalid"} <= names, names
    assert len(SEEDS) > 60


SYNTAX = {"E001", "E002", "E003", "E004", "E005"}


def test_programs_from_the_grammar_raise_only_dlspec_errors() -> None:
    seen: Counter[str] = Counter()

    @fuzz(40)
    @given(grammar_program())
    def run(text: str) -> None:
        seen[compiles_or_reports(text)] += 1

    run()
    # the grammar-aware inputs are not all syntax errors: some lower, some fail in lowering
    assert set(seen) - SYNTAX, seen


@fuzz(120)
@given(mutated_seed())
def test_mutated_specs_and_error_cases_raise_only_dlspec_errors(case: tuple[Path, str]) -> None:
    path, text = case
    compiles_or_reports(text, name=path.name, base_dir=path.parent)


@fuzz(40)
@given(st.lists(st.sampled_from(VOCAB), max_size=40).map(" ".join))
def test_random_token_soup_raises_only_dlspec_errors(text: str) -> None:
    compiles_or_reports(text)


@fuzz(30)
@given(st.text(max_size=200))
def test_random_text_raises_only_dlspec_errors(text: str) -> None:
    compiles_or_reports(text)


_ONNX_DIR = Path(tempfile.mkdtemp(prefix="dlspec-fuzz-onnx-"))


@fuzz(30)
@given(mutated_onnx())
def test_mutated_onnx_models_import_or_raise_dlspec_errors(data: bytes) -> None:
    imports_or_reports(data, _ONNX_DIR)


def test_the_onnx_seeds_import_except_the_loop():
    from .fuzz_inputs import _onnx_seeds

    codes = [imports_or_reports(m.SerializeToString(), _ONNX_DIR) for m in _onnx_seeds()]
    assert codes[:-1] == ["ok"] * (len(codes) - 1), codes
    assert codes[-1] == "E746", codes  # the Loop with a trip count of 10^12, refused before it runs
