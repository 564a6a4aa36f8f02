"""Options and arguments shared by several commands, declared once."""

from __future__ import annotations

from pathlib import Path

import click


def pick_model(prog, name: str | None, file: Path):
    from ..api import Spec

    return Spec(file, prog).graph(name)


set_option = click.option(
    "--set", "sets", multiple=True, metavar="KEY=VALUE",
    help="Bind a model parameter (classes=10) or a symbolic dimension (batch=32). Repeatable.",
)
