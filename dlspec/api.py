"""The Python API: load a spec, pick a model, generate source or build the live module.

    >>> import dlspec
    >>> spec = dlspec.load("specs/digits_cnn.dls")             # doctest: +SKIP
    >>> module = spec.build("torch")                           # an nn.Module   # doctest: +SKIP
    >>> source = spec.source("torch")                          # its Python source   # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .errors import Diagnostic, DlspecError, did_you_mean
from .ir.graph import Graph, Program
from .program import compile_file


class Spec:
    """A checked spec file: its models (lowered graphs) and its training recipes."""

    def __init__(self, path: str | Path, program: Program):
        self.path = Path(path)
        self.program = program

    @property
    def models(self) -> dict[str, Graph]:
        return self.program.models

    @property
    def recipes(self) -> list[Any]:
        return self.program.recipes

    def graph(self, model: str | None = None) -> Graph:
        """The lowered model `model` (default: the last one defined)."""
        if not self.models:
            raise DlspecError(Diagnostic(code="E904", message=f"{self.path} defines no model that can be built without arguments",
                                         hint="pass arguments: dlspec.load(path, classes=10)"))
        if model is None:
            return list(self.models.values())[-1]
        if model not in self.models:
            raise DlspecError(Diagnostic(code="E904", message=f"{self.path} has no model `{model}`",
                                         hint=did_you_mean(model, self.models) or f"models: {', '.join(self.models)}"))
        return self.models[model]

    def source(self, target: str = "torch", model: str | None = None, layout: str = "nchw") -> str:
        """Readable source: Python for torch and keras, ONNX's textual form for onnx."""
        from .backends import get_backend

        return get_backend(target).generate(self.graph(model), layout=layout, source=str(self.path))

    def build(self, target: str = "torch", model: str | None = None, weights: str | Path | None = None,
              layout: str = "nchw"):
        """The live framework model: an `nn.Module` (torch), a `keras.Model` (keras, inputs in
        `layout`), or an `onnx.ModelProto` (onnx; run it with `dlspec.backends.onnx.make_session`).
        With `weights`, loaded from a canonical safetensors file (every name and shape checked);
        otherwise freshly initialized."""
        from .backends import get_backend

        backend = get_backend(target)
        g = self.graph(model)
        arrays = None
        if weights is not None:
            from .weights import load_graph_weights

            arrays = load_graph_weights(g, weights, strict=True)
        return backend.build(g, arrays, layout=layout, source=str(self.path))


def load(path: str | Path, **overrides: Any) -> Spec:
    """Check and lower a spec file. Keyword arguments bind model parameters or symbolic dims."""
    return Spec(path, compile_file(path, overrides or None))
