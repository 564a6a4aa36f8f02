"""Backends: one interface, one registry.

Every backend is one module (or package) under `dlspec/backends/` that defines `BACKEND`, an
object with the `Backend` interface below, and lowers each op through its own `Lowerings` table
(`backends/lowering.py`). The registry maps a target name to that module; it is imported only
when asked for, so `dlspec check` and source generation never import a framework they do not
need. Adding a backend is its package plus one line in `BACKENDS`.

Weights cross every backend in the canonical layout: {parameter path: numpy array}, PyTorch's
layout (docs/architecture.md). A backend converts at `build`/`load_weights` and back at
`read_weights`.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:  # the registry is read by the CLI at start-up, before the IR is needed
    from ..ir.graph import Graph

__all__ = ["ALIASES", "BACKENDS", "Backend", "backend_names", "get_backend", "resolve"]

#: target name → module that defines `BACKEND`
BACKENDS: dict[str, str] = {
    "torch": "dlspec.backends.torch",
    "keras": "dlspec.backends.keras",
    "onnx": "dlspec.backends.onnx",
    "mxnet": "dlspec.backends.mxnet",
    "caffe": "dlspec.caffe.backend",
}
#: other names users write for a target
ALIASES: dict[str, str] = {"tf": "keras", "tensorflow": "keras", "pytorch": "torch", "onnxruntime": "onnx", "ort": "onnx"}


@runtime_checkable
class Backend(Protocol):
    """What every backend does. `graph` is a checked IR graph; `weights` canonical arrays."""

    #: the registry name (`torch`, `keras`, `onnx`)
    name: str
    #: the package the backend needs at run time (for "not installed" messages)
    framework: str

    def supported_ops(self) -> set[str]:
        """The ops this backend lowers (its `Lowerings` table)."""
        ...

    def check(self, graph: Graph) -> None:
        """Raise E701 listing every op of `graph` the backend cannot lower, each at its location."""
        ...

    def generate(self, graph: Graph, *, layout: str = "nchw", source: str | None = None) -> str:
        """Readable source for the model (Python for torch and keras, ONNX's text form for onnx)."""
        ...

    def build(self, graph: Graph, weights: Mapping[str, Any] | None = None, *, layout: str = "nchw",
              source: str | None = None) -> Any:
        """The live framework object, with `weights` loaded (else freshly initialized)."""
        ...

    def load_weights(self, live: Any, graph: Graph, weights: Mapping[str, Any]) -> None:
        """Put canonical `weights` into a live object built by `build`."""
        ...

    def read_weights(self, live: Any, graph: Graph) -> dict[str, Any]:
        """The live object's weights, canonical."""
        ...

    def run(self, graph: Graph, weights: Mapping[str, Any], inputs: Mapping[str, Any]) -> dict[str, Any]:
        """Run the model in inference mode on numpy inputs keyed by input name: {output name: array}."""
        ...


def backend_names() -> list[str]:
    return list(BACKENDS)


def resolve(target: str) -> str:
    """The registry name for `target` (an alias is accepted); E905 for an unknown one."""
    name = ALIASES.get(target, target)
    if name not in BACKENDS:
        from ..errors import Diagnostic, DlspecError, did_you_mean

        known = [*BACKENDS, *ALIASES]
        raise DlspecError(Diagnostic(code="E905", message=f"unknown target `{target}`",
                                     hint=did_you_mean(target, known) or f"targets: {', '.join(BACKENDS)}"))
    return name


def get_backend(target: str) -> Backend:
    """The backend registered for `target` (or one of its aliases)."""
    module = importlib.import_module(BACKENDS[resolve(target)])
    return module.BACKEND
