"""Backends: one module per target, one registry. Each lowers every IR op or raises E701."""

from __future__ import annotations

import importlib
from types import ModuleType

from ..errors import Diagnostic, DlspecError, did_you_mean

#: target name → module path. Source generation (`generate`) never imports the framework.
BACKENDS: dict[str, str] = {"torch": "dlspec.backends.torch", "onnx": "dlspec.backends.onnx", "keras": "dlspec.backends.keras"}


def get_backend(target: str) -> ModuleType:
    if target not in BACKENDS:
        raise DlspecError(Diagnostic(code="E905", message=f"unknown target `{target}`",
                                     hint=did_you_mean(target, BACKENDS) or f"targets: {', '.join(BACKENDS)}"))
    return importlib.import_module(BACKENDS[target])
