"""`dlspec export RUN --target TARGET -o PATH`: a deployable artifact from a run folder's weights
(best.safetensors, else last.safetensors) and its graph.json — whichever backend trained the run,
since the weights are canonical.

    onnx         an `.onnx` file (`dlspec.backends.onnx.model_bytes`, weights as initializers);
                 `quantize="int8"`: onnxruntime static QDQ quantization
    pt2          a `torch.export` ExportedProgram (`torch.export.save`), every symbolic input dimension
                 dynamic; load with `torch.export.load(path).module()`. `aoti`: an AOTInductor package
                 (`torch._inductor.aoti_load_package`, or C++'s AOTIModelPackageLoader)
    openvino     OpenVINO IR, PATH.xml and PATH.bin (float32 weights); compile it with
                 INFERENCE_PRECISION_HINT f32 (the CPU plugin runs bf16 by itself where the CPU has it);
                 `quantize="int8"`: NNCF
    litert       a `.tflite` flatbuffer for ai_edge_litert's Interpreter, the batch resizable
    savedmodel   a TensorFlow SavedModel folder (Keras' `model.export`), signature `serve`
    keras        a `.keras` file (Keras' own format; its custom layers live in
                 `dlspec.backends.keras_layers`, import that module before `keras.saving.load_model`)
    torchscript  deprecated by PyTorch (use pt2): a TorchScript archive (`torch.jit.script`, else
                 `torch.jit.trace`; load with `torch.jit.load`)
    mxnet        a folder PATH with `<name>-symbol.json` and `<name>-0000.params` (Gluon's
                 `HybridBlock.export`, run in the MXNet interpreter of DLSPEC_MXNET_PYTHON; load with
                 `gluon.SymbolBlock.imports`), `<name>` being PATH's name; see docs/mxnet.md

The graph first goes through `dlspec.passes.optimize(graph, opt_level, weights)`: level 1 (the
default) keeps the model as trained, level 2 also applies inference-only rewrites (batch-norm
folding, dropout removal). Inputs and outputs keep the model's layout (NCHW images).

Every artifact then proves itself (`dlspec.deploy.check`): loaded by its own runtime in a fresh
process, run on rows of the run's validation split, compared with the trained model in the backend
that trained it; beyond `tolerance` it is E722 and nothing is left at PATH (unless `keep_mismatch`).

The artifact is built under a temporary name next to PATH and renamed into place, so a failed
export never leaves a partial artifact; an existing PATH is kept unless `force` (E690).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import DlspecError, error
from .ir.graph import Graph

if TYPE_CHECKING:
    import numpy as np

TARGETS = ("onnx", "pt2", "openvino", "litert", "savedmodel", "keras", "torchscript", "mxnet")
SUFFIX = {"keras": ".keras", "onnx": ".onnx", "torchscript": ".pt", "savedmodel": "", "mxnet": "", "pt2": ".pt2",
          "openvino": ".xml", "litert": ".tflite"}
#: the runtime (dlspec.deploy.RUNTIMES) each target needs, checked before any work
NEEDS = {"onnx": ("onnx",), "pt2": ("pt2",), "openvino": ("openvino",), "litert": ("litert", "tensorflow"),
         "savedmodel": ("tensorflow",), "keras": ("keras",), "torchscript": ("torchscript",), "mxnet": ()}
#: targets `quantize="int8"` takes
QUANTIZE = ("onnx", "openvino")
#: lower precisions an OpenVINO export can measure (`precision`)
PRECISIONS = ("bf16", "f16")
#: the newest ONNX opset an int8 (QDQ) model is written at
QUANTIZE_OPSET = 21


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


@dataclass
class Options:
    """What `dlspec export` takes beyond the target and the path (see the CLI's --help)."""

    opt_level: int = 1
    force: bool = False
    check: bool = True
    tolerance: float = 1e-4
    keep_mismatch: bool = False
    opset: int | None = None
    aoti: bool = False
    precision: str | None = None
    quantize: str | None = None
    calibration: int = 256
    static_batch: int = 1


def export(run: Path, target: str, output: Path, opt_level: int = 1, force: bool = False,
           echo: Callable[[str], None] = print, **options: Any) -> Path:
    """Write the artifact and prove it (unless `check=False`); returns its path. `options` are the
    fields of `Options`."""
    opts = Options(opt_level=opt_level, force=force, **options)
    output = Path(output)
    _check_request(target, output, opts)
    from .deploy import need

    if target in ("litert", "savedmodel", "keras"):
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up banner is not the user's business
    for runtime in NEEDS[target]:
        need(runtime, target)
    if opts.quantize and target == "openvino":
        need("nncf", "openvino --quantize int8")
    graph, arrays, weights_path = load_run_weights(run)
    trained, trained_arrays = graph, arrays
    from .passes import optimize

    graph, arrays, reports = optimize(graph, opts.opt_level, weights=arrays)
    for line in reports.notes():
        echo(line)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
    try:
        built, extra = _build(target, graph, arrays, tmp, output, opts, echo)
        files = _final_names(target, built, output, extra)
        mismatch = None
        if opts.check or opts.quantize:
            mismatch = _prove(run, target, built, graph, trained, trained_arrays, tmp, output, opts, echo, files)
        if mismatch is not None and not opts.keep_mismatch:
            raise mismatch
        for src, dst in files.items():
            _replace(src, dst, opts.force)
        if mismatch is not None:
            echo(f"kept {output} for inspection (--keep-mismatch)")
            raise mismatch
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    what = f"{target}{' int8' if opts.quantize else ''}{' (AOTInductor)' if opts.aoti else ''}"
    echo(f"{graph.name}: {what} artifact from {weights_path} (opt level {opts.opt_level})")
    return output


def _check_request(target: str, output: Path, opts: Options) -> None:
    """Every refusal that needs no framework, before any work."""
    if target not in TARGETS:
        raise error("E691", f"unknown export target `{target}`", hint=f"one of {', '.join(TARGETS)}")
    if target == "keras" and output.suffix != ".keras":
        raise error("E691", f"the keras target writes a .keras file; got -o {output}",
                    hint=f"name it {output.with_suffix('.keras').name} (Keras reads its format by that suffix)")
    if target == "openvino" and output.suffix != ".xml":
        raise error("E691", f"the openvino target writes PATH.xml and PATH.bin; got -o {output}",
                    hint=f"name it {output.with_suffix('.xml').name} (OpenVINO finds the .bin by the .xml's name)")
    if target == "pt2" and output.suffix != ".pt2":
        raise error("E691", f"the pt2 target writes a .pt2 file; got -o {output}",
                    hint=f"name it {output.with_suffix('.pt2').name} (torch.export and AOTInductor expect the suffix)")
    if opts.aoti and target != "pt2":
        raise error("E724", f"--aoti packages a torch.export program; it needs --target pt2, not {target}")
    if opts.precision is not None and (target != "openvino" or opts.precision not in PRECISIONS):
        raise error("E724", f"--precision {opts.precision}: measures OpenVINO's lower precisions "
                            f"({', '.join(PRECISIONS)}); it needs --target openvino")
    if opts.quantize is not None:
        if opts.quantize != "int8":
            raise error("E724", f"--quantize {opts.quantize}: only int8 is offered")
        if target not in QUANTIZE:
            raise error("E724", f"--quantize int8 is offered for {' and '.join(QUANTIZE)}; got --target {target}",
                        hint="export to onnx or openvino to quantize")
        if opts.calibration < 1:
            raise error("E724", f"--calibration {opts.calibration}: give a number of training rows, at least 1")
    if not opts.tolerance > 0:
        raise error("E724", f"--tolerance {opts.tolerance}: give a positive number (default 1e-4)")
    if opts.static_batch < 1:
        raise error("E724", f"--static-batch {opts.static_batch}: give a batch size, at least 1")
    if opts.opset is not None and target not in ("onnx", "openvino"):
        raise error("E724", f"--opset chooses the ONNX opset; it applies to onnx and openvino, not {target}")
    for path in written_paths(target, output, opts.quantize is not None):
        if path.exists() and not opts.force:
            raise error("E690", f"{path} already exists", hint="choose another -o, or pass --force to replace it")
    if output.exists() and target not in ("savedmodel", "mxnet") and output.is_dir():
        raise error("E690", f"{output} is a folder; the {target} target writes a file")


def written_paths(target: str, output: Path, quantize: bool = False) -> list[Path]:
    """Every path an export writes: the artifact, OpenVINO's .bin, an int8 export's report."""
    paths = [output]
    if target == "openvino":
        paths.append(output.with_suffix(".bin"))
    if quantize:
        paths.append(output.with_name(output.stem + ".int8.json"))
    return paths


def _build(target: str, graph: Graph, arrays: dict[str, np.ndarray], tmp: Path, output: Path, opts: Options,
           echo: Callable[[str], None]) -> tuple[Path, dict[str, Any]]:
    from .deploy import targets as tg

    extra: dict[str, Any] = {}
    if target == "pt2":
        return tg.build_pt2(graph, arrays, tmp, aoti=opts.aoti, warn=echo), extra
    if target == "openvino":
        path = tg.build_openvino(graph, arrays, tmp, opts.opset, note=echo)
        if opts.quantize:
            extra["float32"] = path
            qpath = tmp / "int8" / "model.xml"
            qpath.parent.mkdir()
            extra["quantize"] = qpath
        return path, extra
    if target == "litert":
        path, fixed = tg.build_litert(graph, arrays, tmp, opts.static_batch, echo)
        extra["static_batch"] = fixed
        return path, extra
    if target == "onnx":
        opset = opts.opset
        if opts.quantize and (opset is None or opset > QUANTIZE_OPSET):
            opset = QUANTIZE_OPSET
            echo(f"note: --quantize int8 writes ONNX opset {QUANTIZE_OPSET}: onnxruntime's CPU kernels lack the int32 "
                 "DequantizeLinear of newer opsets that its quantizer emits for biases")
        path = _onnx(graph, arrays, tmp, output.name, opset)
        if opts.quantize:
            extra["float32"] = path
            extra["quantize"] = tmp / "model.int8.onnx"
        return path, extra
    if target == "torchscript":
        echo("warning[W722]: TorchScript is deprecated by PyTorch (torch.jit.save warns); --target pt2 writes a "
             "torch.export program, its replacement")
    builder = {"savedmodel": _savedmodel, "keras": _keras, "torchscript": _torchscript, "mxnet": _mxnet}[target]
    return builder(graph, arrays, tmp, output.name), extra


def _final_names(target: str, built: Path, output: Path, extra: dict[str, Any]) -> dict[Path, Path]:
    """Built file -> where it goes. An int8 export ships the quantized model (and its report)."""
    from .deploy.targets import companions

    main = extra.get("quantize", built)
    files = {main: output}
    for c, final in zip(companions(target, main), companions(target, output)):
        files[c] = final
    if "quantize" in extra:
        files[main.parent / "report.int8.json"] = output.with_name(output.stem + ".int8.json")
    return files


def _prove(run: Path, target: str, built: Path, graph: Graph, trained: Graph, arrays: dict[str, np.ndarray],
           tmp: Path, output: Path, opts: Options, echo: Callable[[str], None], files: dict[Path, Path]
           ) -> DlspecError | None:
    """The self-check (and for int8 the quantization and its report). Returns the E722 mismatch,
    raises every other failure."""
    from .deploy import check as ck
    from .train.run import read_run

    if target == "mxnet":
        echo("note: the mxnet artifact runs in the MXNet interpreter of DLSPEC_MXNET_PYTHON; it is not self-checked "
             "(dlspec verify --backends mxnet compares the backend)")
        return None
    _, cfg, config = read_run(run)
    bundle = ck.run_data(run, cfg, config, trained)
    backend = config.get("backend", "torch")
    if bundle is not None and len(bundle.val):
        rows, xs_of = f"validation rows of {run}", (lambda n: ck.rows_of(bundle.val, trained, n))
    else:
        echo(f"warning[W720]: {run} has no data to load; the self-check runs on seeded random inputs")
        rows, xs_of = "seeded random inputs", (lambda n: ck.random_rows(trained, n))
    mismatch = None
    if opts.check:
        cmp = ck.self_check(target, built, graph, trained, arrays, backend, xs_of, rows, opts.tolerance)
        echo(f"self-check: {target} artifact in a fresh process vs the trained model ({'keras' if backend == 'tf' else 'torch'}), "
             f"{rows}, batches {' and '.join(map(str, ck.BATCHES))}:")
        for line in cmp.lines():
            echo(line)
        if not cmp.ok:
            worst = max(cmp.failing, key=lambda k: cmp.abs_diff[k])
            mismatch = error("E722", f"the {target} artifact does not compute what the trained model computes: "
                                     f"output `{worst}` differs by up to {cmp.abs_diff[worst]:.3g} "
                                     f"(tolerance {opts.tolerance:g})",
                             hint="nothing was written; --keep-mismatch keeps the artifact for inspection, "
                                  "--tolerance widens the check")
        if opts.precision:
            low = ck.compare([ck.reference(trained, arrays, backend, xs_of(n)) for n in ck.BATCHES],
                             ck.run_artifact(target, built, graph, [xs_of(n) for n in ck.BATCHES],
                                             precision=opts.precision), opts.tolerance, rows)
            echo(f"--precision {opts.precision} (INFERENCE_PRECISION_HINT={opts.precision}) costs, on the same rows:")
            for line in low.lines():
                echo(line)
            echo("the artifact itself is float32: a precision is chosen when it is compiled, not stored in the IR")
    if opts.quantize and mismatch is None:
        _quantize(target, built, graph, trained, arrays, backend, bundle, cfg, opts, echo, files)
    return mismatch


def _quantize(target: str, built: Path, graph: Graph, trained: Graph, arrays: dict[str, np.ndarray], backend: str,
              bundle: Any, cfg: Any, opts: Options, echo: Callable[[str], None], files: dict[Path, Path]) -> None:
    import json

    from .deploy import check as ck
    from .deploy import quantize as qz

    if bundle is None or not len(bundle.train) or not len(bundle.test):
        raise error("E726", "--quantize int8 calibrates on the run's training rows and reports its test metrics; "
                            "this run's data cannot be loaded", hint="export it in float32, or restore the run's data files")
    n = min(opts.calibration, len(bundle.train))
    calib = ck.rows_of(bundle.train, trained, n)
    qpath = next(src for src, dst in files.items() if dst.suffix in (".onnx", ".xml"))
    if target == "onnx":
        qz.quantize_onnx(built, qpath, graph, calib)
    else:
        qz.quantize_openvino(built, qpath, graph, calib)
    batches = qz.test_batches(bundle.test, trained)
    want = [ck.reference(trained, arrays, backend, xs) for xs in batches]
    got = ck.run_artifact(target, qpath, graph, batches)
    f32 = qz.metrics_of(cfg, trained, bundle.num_classes, want, bundle.test.y)
    q = qz.metrics_of(cfg, trained, bundle.num_classes, got, bundle.test.y)
    diff = ck.compare(want, got, opts.tolerance, "test rows")
    report = {"target": target, "method": "onnxruntime quantize_static, QDQ, per-channel int8" if target == "onnx"
              else "NNCF quantize, int8", "calibration_rows": n, "test_rows": len(bundle.test),
              "float32": {**f32, "file_bytes": qz.size_of(target, built), "weights_bytes": qz.weights_size(target, built)},
              "int8": {**q, "file_bytes": qz.size_of(target, qpath), "weights_bytes": qz.weights_size(target, qpath)},
              "max_abs_diff": diff.abs_diff}
    report["size_ratio"] = report["float32"]["file_bytes"] / max(report["int8"]["file_bytes"], 1)
    for line in qz.report_lines(report):
        echo(line)
    report_path = next(src for src in files if src.name == "report.int8.json")
    report_path.write_text(json.dumps(report, indent=2) + "\n")


def _replace(built: Path, output: Path, force: bool = True) -> None:
    """Move `built` to `output` atomically; an existing output (allowed by --force) is swapped out
    only once the new artifact is complete."""
    if not output.exists():
        os.replace(built, output)
        return
    if not force:
        raise error("E690", f"{output} already exists", hint="choose another -o, or pass --force to replace it")
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


def _onnx(graph: Graph, arrays: dict[str, np.ndarray], tmp: Path, name: str, opset: int | None = None) -> Path:
    from .deploy.targets import write_onnx

    return write_onnx(graph, arrays, tmp, opset)


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
