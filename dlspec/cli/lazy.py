"""A click group whose commands are imported when one is run, not when the program starts.

`dlspec --help` lists every command from a static table (name, module, the first paragraph of
its help) without importing a command module; `dlspec train ...` imports the module that
registers `train` and nothing else. `tests/test_startup.py` asserts that the table says what the
commands' own help says, and that every command a module registers is in the table.

Code that wants every command (documentation, tests, shell completion over all names) reads
`group.commands` as a mapping: iterating it loads every module, looking a name up loads that
name's module only.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import click
from click.utils import make_default_short_help

from .output import Group


@dataclass(frozen=True)
class LazyCommand:
    """Where a command comes from and what `--help` says about it before it is loaded."""

    #: the module under dlspec/cli that defines it, relative (`.run_commands`)
    module: str
    #: the first paragraph of the command's help (its docstring), as click prints it shortened
    help: str
    #: the module's attribute holding the command; None: the module's `register(group)` adds it
    attr: str | None = None


class _Commands(dict):
    """The group's command table: registered commands, with the lazy ones loaded on demand."""

    def __init__(self, group: LazyGroup):
        super().__init__()
        self._group = group

    def _want(self, name: Any) -> None:
        if not dict.__contains__(self, name) and name in self._group.lazy:
            self._group.load(name)

    def _want_all(self) -> None:
        for name in list(self._group.lazy):
            self._want(name)

    def __getitem__(self, name):
        self._want(name)
        return dict.__getitem__(self, name)

    def get(self, name, default=None):
        self._want(name)
        return dict.get(self, name, default)

    def __contains__(self, name) -> bool:
        return dict.__contains__(self, name) or name in self._group.lazy

    def __iter__(self) -> Iterator[str]:
        self._want_all()
        return dict.__iter__(self)

    def __len__(self) -> int:
        self._want_all()
        return dict.__len__(self)

    def keys(self):
        self._want_all()
        return dict.keys(self)

    def values(self):
        self._want_all()
        return dict.values(self)

    def items(self):
        self._want_all()
        return dict.items(self)


class LazyGroup(Group):
    """The `dlspec` group: `lazy` maps a command name to the `LazyCommand` that says where it is."""

    def __init__(self, *args: Any, lazy: dict[str, LazyCommand] | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.lazy: dict[str, LazyCommand] = dict(lazy or {})
        self._loaded: set[str] = set()
        eager, self.commands = self.commands, _Commands(self)
        for name, cmd in eager.items():
            dict.__setitem__(self.commands, name, cmd)

    def add_lazy(self, name: str, module: str, help: str, attr: str | None = None) -> None:
        """Register `name`, defined in `module` (relative to dlspec.cli), imported when run."""
        self.lazy[name] = LazyCommand(module, help, attr)

    def load(self, name: str) -> None:
        """Import the module of lazy command `name` and register what it defines."""
        spec = self.lazy[name]
        key = f"{spec.module}:{spec.attr}"
        if key in self._loaded:
            return
        self._loaded.add(key)
        module = importlib.import_module(spec.module, __package__)
        if spec.attr is not None:
            self.add_command(getattr(module, spec.attr), name)
        else:
            module.register(self)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(dict.keys(self.commands)) | set(self.lazy))

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """As click's, with the help of a command not loaded yet taken from its `LazyCommand`."""
        rows: list[tuple[str, Any]] = []
        for name in self.list_commands(ctx):
            cmd = dict.get(self.commands, name)
            if cmd is None:
                rows.append((name, self.lazy[name]))
            elif not cmd.hidden:
                rows.append((name, cmd))
        if not rows:
            return
        limit = formatter.width - 6 - max(len(name) for name, _ in rows)
        shown = [(name, make_default_short_help(c.help, limit).strip() if isinstance(c, LazyCommand)
                  else c.get_short_help_str(limit)) for name, c in rows]
        with formatter.section("Commands"):
            formatter.write_dl(shown)
