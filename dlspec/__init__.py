"""dlspec: a declarative deep-learning model-spec compiler.

    >>> import dlspec
    >>> model = dlspec.load("specs/digits_cnn.dls").build("torch")   # doctest: +SKIP

The public names are imported on first use (PEP 562), so `import dlspec.cli` and
`dlspec --version` do not pay for the front end and pydantic.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .version import __version__

if TYPE_CHECKING:
    from .api import Spec, load
    from .errors import Diagnostic, DlspecError
    from .program import compile_file, compile_source

#: public name -> the submodule that defines it
_LAZY = {
    "Spec": "api", "load": "api",
    "Diagnostic": "errors", "DlspecError": "errors",
    "compile_file": "program", "compile_source": "program",
}

__all__ = ["Diagnostic", "DlspecError", "Spec", "compile_file", "compile_source", "load", "__version__"]


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'dlspec' has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
