"""A module imported on first use: `np = lazy("numpy")` at the top of a file costs nothing until
an attribute of `np` is read. The backends import numpy this way, so that `dlspec check` asking a
backend whether it lowers a model (W108) does not pay numpy's start-up (about 0.1 s).

After the first attribute read the module's namespace is copied onto the stand-in, so later reads
are plain attribute lookups. Type annotations name the real module under `TYPE_CHECKING`."""

from __future__ import annotations

import importlib
from typing import Any


class lazy:  # noqa: N801 (used like a module)
    def __init__(self, name: str) -> None:
        self.__dict__["_lazy_name"] = name

    def __getattr__(self, attr: str) -> Any:
        module = importlib.import_module(self.__dict__["_lazy_name"])
        self.__dict__.update(vars(module))
        return getattr(module, attr)

    def __repr__(self) -> str:
        return f"<module {self.__dict__['_lazy_name']!r}, imported on first use>"
