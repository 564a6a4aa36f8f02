"""`dlspec predict`: a trained model on new inputs. A run folder runs with its best weights and
preprocessing (PyTorch or onnxruntime), an `.onnx` file with onnxruntime, and an artifact of
`dlspec export` (OpenVINO IR, a torch.export program, a LiteRT flatbuffer) with its own runtime,
loaded as the export's self-check loads it (`dlspec/deploy/child.py`). Output: class names with
probabilities, or values in the target's units, and optionally a .csv, .json or .npz file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .errors import DlspecError, error
from .ir.graph import Graph
from .train.run import atomic_write_json, atomic_write_npz, best_weights, read_run

load_run = read_run


def installed_backend(run: Path) -> str:
    """predict's default backend: onnx for an .onnx file; else PyTorch when it is installed, else
    onnxruntime when that is, else PyTorch (whose absence is then reported with its install hint)."""
    import importlib.util

    if run.suffix == ".onnx" and not run.is_dir():
        return "onnx"
    def installed(module: str) -> bool:
        try:
            return importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):  # a broken or blocked installation
            return False

    if installed("torch"):
        return "torch"
    if installed("onnxruntime") and installed("onnx"):
        return "onnx"
    return "torch"


#: the suffix of each artifact `dlspec export` writes that predict runs with its own runtime
ARTIFACTS = {".xml": "openvino", ".pt2": "pt2", ".tflite": "litert"}
#: how predict's messages name each artifact's runtime
RUNTIME_NAMES = {"openvino": "OpenVINO", "pt2": "PyTorch (torch.export)", "litert": "LiteRT"}


def predict(run: Path, input_path: Path, output: Path | None = None, device: str = "auto",
            backend: str | None = None, provider: str | None = None, top_k: int = 1) -> dict[str, Any]:
    """Run a model on new inputs; returns {output name: raw outputs} and writes `output` (.csv,
    .json or .npz) when given. `run` is a run folder (its graph, best weights and preprocessing),
    an `.onnx` file, or an artifact of `dlspec export`: OpenVINO IR (`.xml`), a torch.export
    program (`.pt2`) or a LiteRT flatbuffer (`.tflite`), each run by its own runtime on the CPU.
    `input_path`: raw data in the training source's form (CSV rows, an image or a folder of them,
    a text file or a folder of them; run folders only) or arrays (.npy for one input, .npz with
    one array per model input name, given as the model takes them). `backend` torch or onnx
    (default: `installed_backend`); `provider` cpu or cuda for onnx."""
    return predict_rows(run, input_path, output, device, backend, provider, top_k)["outputs"]


def predict_rows(run: Path, input_path: Path, output: Path | None = None, device: str = "auto",
                 backend: str | None = None, provider: str | None = None, top_k: int = 1) -> dict[str, Any]:
    """`predict` with what the command line prints: {"outputs", "names" (one per example), "table"
    ({output: [row dicts]}: class names with probabilities, or values in the target's units)}."""
    if top_k < 1:
        raise error("E914", f"--top-k must be at least 1; got {top_k}")
    if output is not None and output.suffix.lower() not in (".csv", ".json", ".npz"):
        raise error("E638", f"--output {output}: write .csv, .json or .npz")
    artifact = None if run.is_dir() else ARTIFACTS.get(run.suffix.lower())
    if artifact is not None:
        _artifact_options(run, artifact, backend, provider, device)
    else:
        if backend is None:
            backend = installed_backend(run)
        if provider is not None and backend != "onnx":
            raise error("E717", "--provider chooses an onnxruntime execution provider; it needs --backend onnx")
        if provider is None:
            provider = "cuda" if device == "cuda" else "cpu"
    prep = cfg = None
    if artifact is not None:
        result, names = _predict_artifact(run, artifact, input_path)
    elif run.suffix == ".onnx" and not run.is_dir():
        if backend != "onnx":
            raise error("E717", f"{run} is an ONNX model: it runs with --backend onnx")
        result, names = _predict_onnx_file(run, input_path, provider)
    else:
        from .train.run import read_preprocessing

        graph, cfg, config = load_run(run)
        prep = read_preprocessing(run, config)
        specs = [(gi.name, gi.type.dtype, tuple(gi.type.shape)) for gi in graph.inputs]
        if input_path.suffix.lower() in (".npy", ".npz") or prep is None or prep.source in ("npz", "builtin"):
            arrays = _read_inputs(input_path, specs)
            names = [str(i) for i in range(len(arrays[0]))]
        else:
            from .data.prep import read_inputs

            batch = read_inputs(prep, input_path)
            arrays, names = batch.x, batch.names
            arrays = _check_arrays(input_path, specs, arrays)
        if backend == "onnx":
            from .backends import onnx as ob
            from .weights import load_graph_weights

            weights = load_graph_weights(graph, best_weights(run))
            result = ob.run(graph, weights, dict(zip([s[0] for s in specs], arrays)), provider=provider)
        else:
            result = _predict_torch(run, graph, arrays, device)
    table = _table(result, names, prep, cfg, top_k)
    if output is not None:
        _write_predictions(output, result, names, table)
    return {"outputs": result, "names": names, "table": table}


def _probabilities(out: Any, loss: Any) -> Any:
    """Class probabilities from a classification output, by the loss it was trained with."""
    import numpy as np

    kind = getattr(loss, "type", "cross_entropy")
    out = out.astype(np.float64)
    if out.ndim == 1 or out.shape[-1] == 1:  # one logit: the probability of class 1
        p1 = out.reshape(len(out)) if kind == "bce" else 1 / (1 + np.exp(-out.reshape(len(out))))
        return np.stack([1 - p1, p1], axis=1)
    if kind == "nll":
        return np.exp(out)
    z = out - out.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _table(result: dict[str, Any], names: list[str], prep: Any, cfg: Any, top_k: int) -> dict[str, list[dict[str, Any]]]:
    """Per output, one row per example: its class names and probabilities (top-k), or its values."""
    from .train.loop import losses_by_output

    tables: dict[str, list[dict[str, Any]]] = {}
    losses = losses_by_output(cfg, list(result)) if cfg is not None and getattr(cfg, "loss", None) is not None else {}
    task = prep.task if prep is not None else None
    for key, out in result.items():
        loss = losses.get(key)
        kind = getattr(loss, "type", None)
        classify = out.ndim == 2 and (task == "classification" or (task is None and kind in
                                                                   ("cross_entropy", "nll", "bce_with_logits", "bce")))
        rows: list[dict[str, Any]] = []
        if classify and (out.shape[1] > 1 or kind in ("bce", "bce_with_logits") or task == "classification"):
            probs = _probabilities(out, loss)
            k = min(top_k, probs.shape[1])
            order = (-probs).argsort(axis=1, kind="stable")[:, :k]
            classes = prep.classes if prep is not None and prep.classes and len(result) == 1 else None
            for name, o, pr in zip(names, order, probs, strict=True):
                row: dict[str, Any] = {"example": name}
                for rank, c in enumerate(o, 1):
                    label = classes[c] if classes is not None and c < len(classes) else str(int(c))
                    suffix = "" if k == 1 else f"_{rank}"
                    row[f"class{suffix}"] = label
                    row[f"probability{suffix}"] = float(pr[c])
                rows.append(row)
        elif out.ndim == 2 and out.shape[1] <= 16:
            values = prep.target_units(out) if prep is not None and task == "regression" else out
            target = prep.label if prep is not None and prep.label else key
            for name, v in zip(names, values, strict=True):
                row = {"example": name}
                for j, value in enumerate(v):
                    row[target if len(v) == 1 else f"{target}_{j}"] = float(value)
                rows.append(row)
        tables[key] = rows
    return tables


def _write_predictions(output: Path, result: dict[str, Any], names: list[str],
                       table: dict[str, list[dict[str, Any]]]) -> None:
    import csv
    import io

    import numpy as np

    from .train.run import atomic_write_text

    suffix = output.suffix.lower()
    if suffix == ".npz":
        arrays = dict(result)
        for key, rows in table.items():
            if rows and "class" in rows[0]:
                arrays[f"{key}_class"] = np.asarray([r["class"] for r in rows])
                arrays[f"{key}_probability"] = np.asarray([r["probability"] for r in rows], dtype=np.float32)
            elif rows and "class_1" in rows[0]:
                arrays[f"{key}_class"] = np.asarray([r["class_1"] for r in rows])
                arrays[f"{key}_probability"] = np.asarray([r["probability_1"] for r in rows], dtype=np.float32)
        atomic_write_npz(output, arrays)
    elif suffix == ".json":
        atomic_write_json(output, {"examples": names,
                                   "predictions": {k: rows for k, rows in table.items() if rows},
                                   "outputs": {k: v.tolist() for k, v in result.items()}})
    else:
        keys = [k for k, rows in table.items() if rows]
        if not keys:
            raise error("E638", f"--output {output}: the outputs {', '.join(result)} are no table "
                        "(classes or a few values per example); write .npz or .json")
        buf = io.StringIO()
        multi = len(keys) > 1
        fields = ["example"] + [f"{k}.{c}" if multi else c for k in keys for c in table[k][0] if c != "example"]
        w = csv.DictWriter(buf, fieldnames=fields)
        w.writeheader()
        for i, name in enumerate(names):
            row = {"example": name}
            for k in keys:
                row |= {(f"{k}.{c}" if multi else c): v for c, v in table[k][i].items() if c != "example"}
            w.writerow(row)
        atomic_write_text(output, buf.getvalue())


def _predict_torch(run: Path, graph: Graph, arrays: list[Any], device: str) -> dict[str, Any]:
    import numpy as np
    import torch

    from .backends import get_backend
    from .backends import torch as tb
    from .train import torch_loop as tl

    dev = tl.pick_device(device)
    model = get_backend("torch").build(graph).to(dev).eval()
    tb.load_weights(model, graph, best_weights(run))
    with torch.no_grad():
        out = model(*[torch.from_numpy(np.ascontiguousarray(a)).to(dev) for a in arrays])
    outs = out if isinstance(out, dict) else {graph.outputs[0].name: out}
    return {k: v.float().cpu().numpy() for k, v in outs.items()}


def _predict_onnx_file(path: Path, input_path: Path, provider: str) -> tuple[dict[str, Any], list[str]]:
    from .backends import onnx as ob

    if not path.is_file():
        raise error("E715", f"no such ONNX model: {path}")
    session = ob.make_session(str(path), provider)
    specs = ob.session_input_specs(session)
    arrays = _read_inputs(input_path, specs)
    feed = ob.check_inputs(specs, dict(zip([s[0] for s in specs], arrays)))
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feed))), [str(i) for i in range(len(arrays[0]))]


def _artifact_options(path: Path, target: str, backend: str | None, provider: str | None, device: str) -> None:
    """E717 for options that choose how a run folder runs: an artifact runs with its own runtime,
    on the CPU (a .pt2 program is PyTorch, so --backend torch fits it)."""
    runtime = RUNTIME_NAMES[target]
    if backend is not None and not (target == "pt2" and backend == "torch"):
        raise error("E717", f"{path} runs with {runtime} (an exported {target} artifact), not --backend {backend}",
                    hint="leave out --backend; it chooses how a run folder runs")
    if provider is not None:
        raise error("E717", f"--provider chooses an onnxruntime execution provider; {path} runs with {runtime}",
                    hint="leave out --provider")
    if device not in ("auto", "cpu"):
        raise error("E717", f"--device {device}: {path} runs with {runtime} on the CPU",
                    hint="leave out --device, or predict on the run folder to use another device")


def _predict_artifact(path: Path, target: str, input_path: Path) -> tuple[dict[str, Any], list[str]]:
    """An exported artifact on `input_path`'s arrays, run in this process by the loader the
    export's self-check runs (`dlspec/deploy/child.py`), its inputs checked against the artifact's."""
    import zipfile

    import numpy as np

    from . import threads as threads_
    from .deploy import child, need
    from .deploy.targets import quiet_fds

    if not path.is_file():
        raise error("E715", f"no such {target} artifact: {path}")
    need(target, target)
    runtime = RUNTIME_NAMES[target]
    if target == "pt2" and not zipfile.is_zipfile(path):  # torch's own message would point at its log
        raise error("E728", f"{runtime} cannot load {path}: it is not a zip archive, which a .pt2 program is",
                    hint="the file is damaged (truncated?) or was not written by `dlspec export --target pt2`; "
                         "export it again")
    if target == "pt2" and child._is_aoti(str(path)):
        raise error("E728", f"{path} is an AOTInductor package; predict runs a plain torch.export program",
                    hint="load it with torch._inductor.aoti_load_package (docs/deploy.md), export without --aoti, "
                         "or predict on the run folder")
    choice = threads_.current()
    try:
        with quiet_fds(), _quiet_logger("torch.export"):  # the runtimes' own start-up and failure prints
            model = child.LOADERS[target](str(path), None, choice.threads if choice is not None else 0)
    except Exception as exc:  # each runtime raises its own exception types
        raise error("E728", f"{runtime} cannot load {path}: {_runtime_message(exc)}",
                    hint=f"the file is damaged (truncated?) or was not written by `dlspec export --target {target}`; "
                         "export it again") from None
    specs = model.inputs
    arrays = _read_inputs(input_path, specs)
    try:
        with quiet_fds():
            result = model(dict(zip([s[0] for s in specs], arrays)))
    except Exception as exc:
        raise error("E728", f"{runtime} cannot run {path} on {input_path}: {_runtime_message(exc)}",
                    hint="the artifact's inputs are " + ", ".join(f"`{n}` {d}[{', '.join(map(str, s))}]"
                                                                  for n, d, s in specs)) from None
    return {k: np.asarray(v) for k, v in result.items()}, [str(i) for i in range(len(arrays[0]))]


class _quiet_logger:
    """A Python logger silenced for a block: torch.export.load logs the traceback of a file it
    cannot read before raising its own error."""

    def __init__(self, name: str) -> None:
        import logging

        self.logger = logging.getLogger(name)

    def __enter__(self) -> None:
        self.was, self.logger.disabled = self.logger.disabled, True

    def __exit__(self, *exc: object) -> None:
        self.logger.disabled = self.was


def _runtime_message(exc: BaseException) -> str:
    """The line of a runtime's exception that says what is wrong: OpenVINO prefixes its message
    with the C++ files it passed through; torch's adds advice to read the log it printed."""
    import re

    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    lines = [ln for ln in lines if not re.fullmatch(r"(Exception from|Check '.*' failed at) \S+:\d+:", ln)]
    first = re.split(r"(?<=\.)\s+(?=Please )", lines[0])[0] if lines else type(exc).__name__
    return first if len(first) <= 300 else first[:300] + " …"


def _read_inputs(input_path: Path, specs: list[tuple[str, str, tuple]]) -> list[Any]:
    """The arrays of `input_path` for the model inputs `specs` [(name, dtype, shape)], checked
    (rank, known dims, integer vs float) and cast to the model's dtypes."""
    import numpy as np

    names = [s[0] for s in specs]
    if not input_path.is_file():
        raise error("E638", f"no such input file: {input_path}")
    try:
        if input_path.suffix == ".npy":
            arrays = [np.load(input_path, allow_pickle=False)]
        elif input_path.suffix == ".npz":
            with np.load(input_path, allow_pickle=False) as z:
                missing = [n for n in names if n not in z.files]
                if missing and len(z.files) == len(names) == 1:
                    arrays = [z[z.files[0]]]
                elif missing:
                    raise error("E638", f"{input_path} lacks array(s) {missing} for the model inputs",
                                     hint=f"it has {z.files}; name the arrays after the inputs {names}")
                else:
                    arrays = [z[n] for n in names]
        else:
            raise error("E638", f"{input_path}: predict reads .npy or .npz arrays")
    except DlspecError:
        raise
    except Exception as exc:
        raise error("E638", f"cannot read {input_path}: {exc}") from None
    if len(arrays) != len(specs):
        raise error("E638", f"{input_path} holds one array; the model has inputs {names}",
                         hint="write an .npz with one array per input name")
    return _check_arrays(input_path, specs, arrays)


def _check_arrays(input_path: Path, specs: list[tuple[str, str, tuple]], arrays: list[Any]) -> list[Any]:
    """The arrays for the model inputs `specs`, checked (rank, known dims, integer vs float, the
    range of a uint8/int8 input) and cast to the model's dtypes; E639 names the input and what the
    model needs."""
    import numpy as np

    arrays = list(arrays)
    for i, ((name, dtype, shape), a) in enumerate(zip(specs, arrays)):
        want = f"{dtype}[{', '.join(str(d) for d in shape)}]"
        if a.ndim != len(shape) or any(isinstance(d, int) and d != s for d, s in zip(shape, a.shape)):
            raise error("E639", f"{input_path}: input `{name}` is {list(a.shape)}; the model needs {want}")
        if (a.dtype.kind in "iu") != dtype.startswith(("int", "uint")):
            raise error("E639", f"{input_path}: input `{name}` has dtype {a.dtype}; the model needs {dtype}")
        if dtype in ("uint8", "int8") and a.size and a.dtype != dtype:
            info = np.iinfo(dtype)
            if a.min() < info.min or a.max() > info.max:  # astype would wrap them round
                raise error("E639", f"{input_path}: input `{name}` has values from {a.min()} to {a.max()}; the "
                                    f"model's {dtype} holds {info.min} to {info.max}")
        arrays[i] = a.astype(dtype)
    return arrays
