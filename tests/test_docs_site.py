"""The docs site builds (`mkdocs build --strict`: a broken link fails), downloads nothing,
highlights `.dls` with dlspec's Pygments lexer, and that lexer reads every spec without an error
token."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from pygments.lexers import get_lexer_by_name, get_lexer_for_filename
from pygments.token import Error, Keyword, Name

from dlspec.lexer import DlspecLexer

from .helpers import ROOT, spec_files


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    r = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)], cwd=ROOT,
                       capture_output=True, text=True, timeout=300, env={"NO_MKDOCS_2_WARNING": "1", "PATH": ""})
    assert r.returncode == 0, r.stderr[-3000:]
    return out


def test_the_site_has_every_page_and_a_search_index(site: Path):
    for page in ("index.html", "language.html", "errors.html", "editors.html", "training.html",
                 "tutorials/transfer.html"):
        assert (site / page).is_file(), page
    index = (site / "search" / "search_index.json").read_text(encoding="utf-8")
    assert "E920" in index and "conv2d" in index


def test_the_generated_op_reference_and_error_index_are_on_the_site(site: Path):
    language = (site / "language.html").read_text(encoding="utf-8")
    assert 'id="the-op-catalogue"' in language and "conv_transpose2d" in language
    errors = (site / "errors.html").read_text(encoding="utf-8")
    assert all(f'id="{code.lower()}"' in errors for code in ("e001", "e302", "e920", "e923"))


def test_dls_examples_are_highlighted_by_the_lexer(site: Path):
    page = (site / "index.html").read_text(encoding="utf-8")
    assert '<span class="kd">block</span>' in page and '<span class="nc">ConvBN</span>' in page
    assert '<span class="nb">conv2d</span>' in page


def test_nothing_is_fetched_from_elsewhere(site: Path):
    html = "".join(p.read_text(encoding="utf-8") for p in site.rglob("*.html"))
    assert "fonts.googleapis.com" not in html and "fonts.gstatic.com" not in html
    assert not re.search(r'<(script|link)[^>]+(src|href)="https?://', html)


def test_the_lexer_is_registered_for_dls_files():
    assert isinstance(get_lexer_by_name("dlspec"), DlspecLexer)
    assert isinstance(get_lexer_for_filename("model.dls"), DlspecLexer)


@pytest.mark.parametrize("path", spec_files(), ids=lambda p: p.name)
def test_every_spec_lexes_without_error_tokens(path: Path):
    tokens = list(DlspecLexer().get_tokens(path.read_text(encoding="utf-8")))
    assert [v for t, v in tokens if t in Error] == []
    kinds = {t for t, _ in tokens}
    assert Keyword.Declaration in kinds and Name.Class in kinds


def test_the_lexer_marks_what_is_not_the_language():
    tokens = list(DlspecLexer().get_tokens("model M { x = 'a' ; }"))
    assert [v for t, v in tokens if t in Error] == ["'", "'", ";"]
