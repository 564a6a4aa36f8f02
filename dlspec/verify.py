"""Cross-backend verification: the same weights and inputs through PyTorch, TensorFlow/Keras and
ONNX Runtime, compared output by output and layer by layer against a reference backend.

Every backend runs a *probe* graph: the model with each node's outputs added as extra graph
outputs, so the three backends expose every intermediate value the same way (PyTorch returns
them from `forward`, Keras as extra model outputs, ONNX as extra graph outputs). Nothing here
imports a framework until a backend runs.

The error of a compared array is `max|x − ref| / max(1, max|ref|)`: relative to the reference's
magnitude, absolute for values below 1. A row passes when that is at most the tolerance.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .errors import Diagnostic, DlspecError, did_you_mean
from .ir.dims import subs, symbols_of
from .ir.graph import Graph, GraphOutput
from .ir.ops import get_op

BACKENDS = ("torch", "tf", "onnx", "mxnet", "caffe")
#: what `verify` compares unless told otherwise: the backends that run in this interpreter
DEFAULT_BACKENDS = ("torch", "tf", "onnx")
ALIASES = {"keras": "tf", "tensorflow": "tf", "pytorch": "torch", "onnxruntime": "onnx", "ort": "onnx", "gluon": "mxnet", "opencv": "caffe"}
DEFAULT_BATCH = 2
DEFAULT_SIZE = 8
LAYER_PREFIX = "layer:"


@dataclass
class Row:
    backend: str
    kind: str  # "output" or "layer"
    name: str  # graph output name, or the layer path (with #i for a layer's later outputs)
    shape: list[int]
    max_abs: float
    error: float
    passed: bool
    note: str = ""


@dataclass
class Result:
    model: str
    reference: str
    backends: list[str]
    tolerance: float
    sizes: dict[str, int]
    seed: int
    weights: str
    rows: list[Row] = field(default_factory=list)
    #: backend → why it could not run
    failures: dict[str, str] = field(default_factory=dict)
    #: backends of the default set left out because they are not installed → the install line
    left_out: dict[str, str] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return not self.failures and all(r.passed for r in self.rows)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["passed"] = self.passed
        for r in out["rows"]:
            for k in ("max_abs", "error"):
                if not math.isfinite(r[k]):
                    r[k] = str(r[k])
        return out


#: the Python modules each backend needs to run here, and the extra that installs them
BACKEND_NEEDS: dict[str, tuple[tuple[str, ...], str]] = {
    "torch": (("torch",), "torch"),
    "tf": (("tensorflow", "keras"), "tf"),
    "onnx": (("onnx", "onnxruntime"), "onnx"),
    "caffe": (("cv2", "google.protobuf"), "caffe"),  # OpenCV's dnn runs the written Caffe files
}


def _installed(module: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a broken or blocked installation
        return False


def installed_backends(candidates: Iterable[str] = DEFAULT_BACKENDS) -> tuple[list[str], dict[str, str]]:
    """(the backends of `candidates` whose packages are installed, {left out: why and the install
    line}); found without importing any framework."""
    present: list[str] = []
    left: dict[str, str] = {}
    for b in candidates:
        modules, extra = BACKEND_NEEDS.get(b, ((), b))
        missing = [m for m in modules if not _installed(m)]
        if missing:
            left[b] = f"{', '.join(missing)} not installed (pip install 'dlspec[{extra}]')"
        else:
            present.append(b)
    return present, left


def default_backends() -> tuple[list[str], dict[str, str]]:
    """`verify`'s default: the installed backends of torch, tf and onnx, PyTorch first when it is
    there; E911 when fewer than two of them are installed."""
    present, left = installed_backends(DEFAULT_BACKENDS)
    if len(present) < 2:
        raise DlspecError(Diagnostic(
            code="E911", message=f"verify compares two or more backends; installed here: "
                                 f"{', '.join(present) or 'none'} (of {', '.join(DEFAULT_BACKENDS)})",
            hint="; ".join(f"{b}: {why}" for b, why in left.items())))
    return present, left


def parse_backends(text: str) -> list[str]:
    """'torch,tf,onnx' → the backend list (aliases keras, tensorflow, pytorch accepted)."""
    names = [ALIASES.get(s.strip().lower(), s.strip().lower()) for s in text.split(",") if s.strip()]
    for n in names:
        if n not in BACKENDS:
            raise DlspecError(Diagnostic(code="E770", message=f"unknown backend `{n}` in --backends",
                                         hint=did_you_mean(n, BACKENDS) or f"backends: {', '.join(BACKENDS)}"))
    unique = list(dict.fromkeys(names))
    if len(unique) < 2:
        raise DlspecError(Diagnostic(code="E771", message=f"verify compares backends; got only {unique or 'none'}",
                                     hint="name two or more, e.g. --backends torch,tf"))
    return unique


# ---- inputs and weights ----------------------------------------------------------------------


def bind_sizes(graph: Graph, given: dict[str, int] | None = None) -> dict[str, int]:
    """A size for every symbolic dimension of the inputs: `given`, else batch=2 and others 8."""
    env = dict(given or {})
    for gi in graph.inputs:
        for d in gi.type.shape:
            for s in sorted(symbols_of(d)):
                env.setdefault(s, DEFAULT_BATCH if s == "batch" else DEFAULT_SIZE)
    return env


def _mask_inputs(graph: Graph) -> set[str]:
    """The inputs that feed an op's mask slot (the catalogue's `mask_input`)."""
    out = set()
    for n in graph.nodes:
        op = get_op(n.op)
        if op.mask_input is not None:
            slot = op.inputs.index(op.mask_input)
            if len(n.inputs) > slot:
                out.add(n.inputs[slot])
    return out


def make_inputs(graph: Graph, env: dict[str, int], seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded inputs: floats N(0, 1); integer ids below the smallest embedding table they feed;
    masks random with about 80% allowed and the first key always allowed (no empty rows)."""
    rng = np.random.default_rng(seed)
    masks = _mask_inputs(graph)
    out: dict[str, np.ndarray] = {}
    for gi in graph.inputs:
        shape = tuple(int(subs(d, env)) for d in gi.type.shape)
        dtype = gi.type.dtype
        if gi.name in masks or dtype == "bool":
            allowed = rng.random(shape) < 0.8
            if allowed.ndim:
                allowed[..., 0] = True
            out[gi.name] = allowed if dtype == "bool" else allowed.astype(dtype)
        elif dtype == "uint8":  # an image
            out[gi.name] = rng.integers(0, 256, size=shape).astype(np.uint8)
        elif dtype.startswith("int"):
            tables = [b for n in graph.nodes if gi.name in n.inputs
                      for b in [_index_bound(n)] if b is not None]
            out[gi.name] = rng.integers(0, min(tables) if tables else 2, size=shape).astype(dtype)
        else:
            out[gi.name] = rng.standard_normal(shape).astype(dtype)
    return out


def fresh_weights(graph: Graph, seed: int = 0, use_torch: bool = False) -> dict[str, np.ndarray]:
    """PyTorch's default initialization — drawn by torch itself when `use_torch` (fast for big
    models), else by dlspec.init without a framework — with batch-norm running statistics drawn
    away from 0 and 1 so that a mean/variance mix-up cannot pass unseen."""
    if use_torch:
        import torch

        from .backends import torch as tb

        torch.manual_seed(seed)
        weights = tb.canonical_state(tb.build_module(graph, inplace=False), graph)
    else:
        from .init import init_weights

        weights = init_weights(graph, seed=seed)
    rng = np.random.default_rng(seed + 1)
    for p in graph.params():
        if p.buffer and p.name == "running_mean":
            weights[p.path] = (0.1 * rng.standard_normal(weights[p.path].shape)).astype(np.float32)
        elif p.buffer and p.name == "running_var":
            weights[p.path] = rng.uniform(0.5, 1.5, weights[p.path].shape).astype(np.float32)
    return weights


# ---- the probe graph -------------------------------------------------------------------------


def layer_values(graph: Graph) -> dict[str, str]:
    """Row name (layer path, `path#i` for a node's later outputs) → IR value."""
    out: dict[str, str] = {}
    for node in graph.nodes:
        for i, v in enumerate(node.outputs):
            out[node.name if i == 0 else f"{node.name}#{i}"] = v
    return out


def probe_graph(graph: Graph) -> Graph:
    """`graph` with every node output also a graph output, named `layer:<row name>`."""
    extra = [GraphOutput(name=LAYER_PREFIX + row, value=v) for row, v in layer_values(graph).items()]
    return graph.model_copy(update={"outputs": [*graph.outputs, *extra]})


# ---- backends --------------------------------------------------------------------------------


def _registry_run(name: str) -> Callable[[Graph, dict, dict], dict[str, np.ndarray]]:
    """Runs through the backend registry's `run` (verify's `tf` is the Keras backend); the
    backend's module and framework are imported at the first run, not here."""

    def run(graph: Graph, weights: dict, inputs: dict) -> dict[str, np.ndarray]:
        from .backends import get_backend

        return get_backend(name).run(graph, weights, inputs)

    return run


#: verify name → run(graph, weights, inputs): the registry's backends
RUNNERS: dict[str, Callable[[Graph, dict, dict], dict[str, np.ndarray]]] = {b: _registry_run(b) for b in BACKENDS}


# ---- comparing -------------------------------------------------------------------------------


def compare(got: np.ndarray, ref: np.ndarray, tolerance: float) -> tuple[float, float, bool, str]:
    """(max |got − ref|, error, passed, note) for one array; see the module docstring."""
    got = np.asarray(got)
    ref = np.asarray(ref)
    if got.shape != ref.shape:
        return math.inf, math.inf, False, f"shape {list(got.shape)} vs {list(ref.shape)}"
    if got.size == 0:
        return 0.0, 0.0, True, ""
    a, b = got.astype(np.float64), ref.astype(np.float64)
    nan_a, nan_b = np.isnan(a), np.isnan(b)
    if (nan_a != nan_b).any():
        return math.inf, math.inf, False, "NaN where the reference has a number (or the reverse)"
    finite = ~nan_a
    if not finite.any():
        return 0.0, 0.0, True, "all NaN in both"
    diff = np.abs(a[finite] - b[finite])
    max_abs = float(diff.max()) if not np.isinf(diff).all() else math.inf
    if np.isnan(max_abs):
        max_abs = math.inf
    scale = max(1.0, float(np.abs(b[finite]).max()))
    error = max_abs / scale
    return max_abs, error, error <= tolerance, ""


def verify(graph: Graph, backends: Iterable[str] = DEFAULT_BACKENDS, weights: dict[str, np.ndarray] | None = None,
           tolerance: float = 1e-4, seed: int = 0, sizes: dict[str, int] | None = None, layers: bool = True,
           weights_source: str | None = None) -> Result:
    """Run `graph` in every backend with the same weights and inputs; compare with the first
    backend (the reference). A backend that cannot build or run the model is a failure."""
    backends = list(backends)
    env = bind_sizes(graph, sizes)
    if weights is None:
        use_torch = "torch" in backends
        weights = fresh_weights(graph, seed, use_torch=use_torch)
        weights_source = weights_source or f"fresh ({'torch' if use_torch else 'dlspec.init'}, seed {seed})"
    inputs = make_inputs(graph, env, seed)
    probe = probe_graph(graph) if layers else graph
    result = Result(model=graph.name, reference=backends[0], backends=backends, tolerance=tolerance, sizes=env,
                    seed=seed, weights=weights_source or "given")
    outputs: dict[str, dict[str, np.ndarray]] = {}
    for b in backends:
        try:
            outputs[b] = RUNNERS[b](probe, weights, inputs)
        except DlspecError as exc:
            result.failures[b] = f"{exc.code}: {exc.diagnostics[0].message}"
        except ImportError as exc:
            result.failures[b] = f"E772: the {b} backend is not installed ({exc})"
        except Exception as exc:  # a framework's own error while building or running: reported, not raised
            result.failures[b] = f"E772: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    ref_name = backends[0]
    if ref_name not in outputs:
        return result
    ref = outputs[ref_name]
    names = [(o.name, "output", o.name) for o in graph.outputs]
    if layers:
        names += [(LAYER_PREFIX + row, "layer", row) for row in layer_values(graph)]
    for b in backends[1:]:
        if b not in outputs:
            continue
        for key, kind, shown in names:
            if key not in outputs[b] or key not in ref:
                result.rows.append(Row(b, kind, shown, [], math.inf, math.inf, False, "not produced"))
                continue
            max_abs, error, ok, note = compare(outputs[b][key], ref[key], tolerance)
            result.rows.append(Row(b, kind, shown, list(np.shape(ref[key])), max_abs, error, ok, note))
    return result


# ---- rendering -------------------------------------------------------------------------------


def render(result: Result, console=None) -> None:
    """Print the comparison as a rich table, then one verdict line."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console(width=None if sys.stdout.isatty() else 120)
    table = Table(title=f"{result.model}: {', '.join(result.backends[1:])} vs {result.reference} "
                        f"(sizes {', '.join(f'{k}={v}' for k, v in result.sizes.items()) or 'static'}; "
                        f"weights {result.weights})")
    for col, justify in (("backend", "left"), ("kind", "left"), ("name", "left"), ("shape", "left"),
                         ("max abs err", "right"), ("rel err", "right"), ("", "left")):
        table.add_column(col, justify=justify, overflow="fold")
    for r in result.rows:
        status = "[green]ok[/green]" if r.passed else f"[red]FAIL[/red] {r.note}".rstrip()
        shape = "×".join(str(d) for d in r.shape) or "-"
        table.add_row(r.backend, r.kind, r.name, shape, f"{r.max_abs:.2e}", f"{r.error:.2e}", status)
    console.print(table)
    for b, why in result.left_out.items():
        console.print(f"[yellow]{b}: left out[/yellow] — {why}")
    for b, why in result.failures.items():
        console.print(f"[red]{b}: could not run[/red] — {why}")
    failed = sum(1 for r in result.rows if not r.passed)
    if result.passed:
        console.print(f"[green]verified[/green]: {len(result.rows)} comparisons within {result.tolerance:g}")
    else:
        console.print(f"[red]failed[/red]: {failed} of {len(result.rows)} comparisons above {result.tolerance:g}"
                      + (f"; {len(result.failures)} backend(s) could not run" if result.failures else ""))


def _index_bound(node) -> int | None:
    op = get_op(node.op)
    return op.index_bound(op.attrs_from_dict(node.attrs))
