"""Every error code the source can emit is documented in docs/errors.md, so none goes undocumented."""

import re

from .helpers import ROOT


def source_codes() -> set[str]:
    text = "".join(p.read_text(encoding="utf-8") for p in (ROOT / "dlspec").rglob("*.py"))
    return set(re.findall(r"\"([EW]\d{3})\"", text))


def test_every_code_in_the_source_has_a_section_in_docs_errors_md():
    documented = set(re.findall(r"^### ([EW]\d{3})$", (ROOT / "docs" / "errors.md").read_text(encoding="utf-8"), re.M))
    codes = source_codes()
    assert len(codes) > 50
    assert codes - documented == set(), "add these codes to docs/errors.md"
