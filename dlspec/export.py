"""`dlspec export RUN --target savedmodel|keras|onnx|torchscript -o PATH`: a deployable artifact from
a run folder's weights (best.safetensors, else last.safetensors) and its graph.json — whichever
backend trained the run, since the weights are canonical.

    savedmodel   a TensorFlow SavedModel folder (Keras' `model.export`), signature `serve`
    keras        a `.keras` file (Keras' own format; its custom layers live in
                 `dlspec.backends.keras_layers`, import that module before `keras.saving.load_model`)
    onnx         an `.onnx` file (`dlspec.backends.onnx.model_bytes`, weights as initializers)
    torchscript  a TorchScript archive (`torch.jit.script`, else `torch.jit.trace`; load with `torch.jit.load`)
    mxnet        a folder PATH with `<name>-symbol.json` and `<name>-0000.params` (Gluon's
                 `HybridBlock.export`, run in the MXNet interpreter of DLSPEC_MXNET_PYTHON; load with
                 `gluon.SymbolBlock.imports`), `<name>` being PATH's name; see docs/mxnet.md

The graph first goes through `dlspec.passes.optimize(graph, opt_level, weights)`: level 1 (the
default) keeps the model as trained, level 2 also applies inference-only rewrites (batch-norm
folding, dropout removal). Inputs and outputs keep the model's layout (NCHW images).

The artifact is built under a temporary name next to PATH and renamed into place, so a failed
export never leaves a partial artifact; an existing PATH is kept unless `force` (E690).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import error
from .ir.graph import Graph

if TYPE_CHECKING:
    import numpy as np

TARGETS = ("savedmodel", "keras", "onnx", "torchscript", "mxnet")
SUFFIX = {"keras": ".keras", "onnx": ".onnx", "torchscript": ".pt", "savedmodel": "", "mxnet": ""}


def load_run_weights(run: Path) -> tuple[Graph, dict[str, np.ndarray], Path]:
    """The run's graph and its best (else last) canonical weights."""
    from .train.session import _best_weights, load_run
    from .weights import load_graph_weights

    graph, _, _ = load_run(run)
    path = _best_weights(run)
    return graph, load_graph_weights(graph, path, strict=True), path


def example_inputs(graph: Graph, batch: int = 2, other: int = 8) -> list[np.ndarray]:
    """Zero inputs of the graph's shapes: `batch` for the batch axis, `other` for other symbols."""
    import numpy as np

    out = []
    for gi in graph.inputs:
        shape = [d if isinstance(d, int) else (batch if i == 0 else other) for i, d in enumerate(gi.type.shape)]
        out.append(np.zeros(shape, dtype=gi.type.dtype))
    return out


def export(run: Path, target: str, output: Path, opt_level: int = 1, force: bool = False,
           echo: Callable[[str], None] = print) -> Path:
    """Write the artifact; returns its path."""
    if target not in TARGETS:
        raise error("E691", f"unknown export target `{target}`", hint=f"one of {', '.join(TARGETS)}")
    output = Path(output)
    if output.exists() and not force:
        raise error("E690", f"{output} already exists", hint="choose another -o, or pass --force to replace it")
    if target == "keras" and output.suffix != ".keras":
        raise error("E691", f"the keras target writes a .keras file; got -o {output}",
                         hint=f"name it {output.with_suffix('.keras').name} (Keras reads its format by that suffix)")
    if output.exists() and target not in ("savedmodel", "mxnet") and output.is_dir():
        raise error("E690", f"{output} is a folder; the {target} target writes a file")
    graph, arrays, weights_path = load_run_weights(run)
    from .passes import optimize

    graph, arrays, reports = optimize(graph, opt_level, weights=arrays)
    for line in reports.notes():
        echo(line)
    builder = {"savedmodel": _savedmodel, "keras": _keras, "onnx": _onnx, "torchscript": _torchscript,
               "mxnet": _mxnet}[target]
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
    try:
        built = builder(graph, arrays, tmp, output.name)
        _replace(built, output)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    echo(f"{graph.name}: {target} artifact from {weights_path} (opt level {opt_level})")
    return output


def _replace(built: Path, output: Path) -> None:
    """Move `built` to `output` atomically; an existing output (allowed by --force) is swapped out
    only once the new artifact is complete."""
    if not output.exists():
        os.replace(built, output)
        return
    old = output.with_name(f".{output.name}.old-{os.getpid()}")
    os.replace(output, old)
    try:
        os.replace(built, output)
    except BaseException:
        os.replace(old, output)
        raise
    if old.is_dir():
        shutil.rmtree(old, ignore_errors=True)
    else:
        old.unlink(missing_ok=True)


# ---- targets: each builds into the temporary folder and returns the artifact's path there ----------


def _keras_model(graph: Graph, arrays: dict[str, np.ndarray]):
    from .backends import get_backend

    return get_backend("keras").build(graph, arrays)


def _savedmodel(graph: Graph, arrays: dict[str, np.ndarray], tmp: Path, name: str) -> Path:
    model = _keras_model(graph, arrays)
    path = tmp / (name or "savedmodel")
    try:
        model.export(str(path), format="tf_saved_model", verbose=False)
    except TypeError:  # older Keras 3 without `verbose`
        model.export(str(path), format="tf_saved_model")
    return path


def _keras(graph: Graph, arrays: dict[str, np.ndarray], tmp: Path, name: str) -> Path:
    model = _keras_model(graph, arrays)
    path = tmp / "model.keras"  # Keras insists on the suffix; the final name is the user's
    model.save(str(path))
    return path


def _onnx(graph: Graph, arrays: dict[str, np.ndarray], tmp: Path, name: str) -> Path:
    from .backends import get_backend

    path = tmp / "model.onnx"
    path.write_bytes(get_backend("onnx").build(graph, arrays, source=graph.source).SerializeToString())
    return path


def _torchscript(graph: Graph, arrays: dict[str, np.ndarray], tmp: Path, name: str) -> Path:
    import torch

    from .backends import get_backend

    module = get_backend("torch").build(graph, arrays, inplace=False).eval()
    try:
        scripted: Any = torch.jit.script(module)
    except Exception:  # generated code TorchScript cannot compile: record the computation instead
        with torch.no_grad():
            scripted = torch.jit.trace(module, tuple(torch.from_numpy(a) for a in example_inputs(graph)),
                                       check_trace=False, strict=False)
    path = tmp / "model.pt"
    torch.jit.save(scripted, str(path))
    return path


def _mxnet(graph: Graph, arrays: dict[str, np.ndarray], tmp: Path, name: str) -> Path:
    from .backends import get_backend

    path = tmp / (name or "model")
    path.mkdir()
    get_backend("mxnet").export(graph, arrays, path, path.name)
    return path
