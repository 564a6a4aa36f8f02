"""Commands beyond the core ones in `dlspec.cli`: one module per command (or family).

Each module defines `register(main: click.Group) -> None`. Modules are found by name, so a new
command is a new file. A module must not import a framework at import time (only inside the
command function): `dlspec check` stays framework-free.
"""

from __future__ import annotations

import importlib
import pkgutil

import click


def register_all(main: click.Group) -> None:
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        module.register(main)
