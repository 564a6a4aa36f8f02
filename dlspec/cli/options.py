"""Options and arguments shared by several commands, declared once.

Each shared option is a decorator factory so that a command can say what the option means for
it (`model_option(help=...)`), while the name, destination and type stay the same everywhere:
`--model` always fills `model_name`, `--json` always fills the flag `as_json` (which the error
wrapper in `output.py` reads to print diagnostics as JSON), `--set` always fills `sets`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])

MODEL_HELP = "Which model of the file (default: the last one defined)."
RECIPE_HELP = "Which recipe to run, by its model's name (default: the last recipe)."
SET_HELP = "Bind a model parameter (classes=10) or a symbolic dimension (batch=32). Repeatable."


def model_option(help: str = MODEL_HELP) -> Callable[[F], F]:
    """`--model NAME`: which model (or recipe, by its model's name) of the spec file."""
    return click.option("--model", "model_name", metavar="NAME", help=help)


def json_option(help: str) -> Callable[[F], F]:
    """`--json`: machine-readable output; diagnostics of a failed run are printed as JSON too."""
    return click.option("--json", "as_json", is_flag=True, help=help)


set_option: Callable[[F], F] = click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help=SET_HELP)


def pick_model(prog, name: str | None, file: Path):
    from ..api import Spec

    return Spec(file, prog).graph(name)
