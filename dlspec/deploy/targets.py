"""Builders of the deployment targets. Each writes into a temporary folder and returns the
artifact's path there (plus its companion files: OpenVINO's .bin); `dlspec.export` checks the
artifact and moves it into place.

    pt2       `torch.export.export` with a `torch.export.Dim` for every symbolic dimension of the
              spec's inputs (the batch and, say, a sequence length), saved with `torch.export.save`;
              `aoti=True` compiles it with AOTInductor into a package C++ loads
              (`torch._inductor.aoti_compile_and_package`; needs a C++ compiler)
    openvino  OpenVINO IR (.xml + .bin) converted from dlspec's ONNX model (`openvino.convert_model`),
              weights kept in float32 (`save_model(compress_to_fp16=False)`); the ops the CPU plugin
              computes wrongly rewritten first (`openvino_repair`)
    litert    a .tflite flatbuffer from the Keras model through TensorFlow's converter
              (`tf.lite.TFLiteConverter.from_keras_model`), the batch resizable; a recurrent layer
              whose TensorFlow loop needs a static shape gets a fixed batch (W721)
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ..errors import DlspecError, error
from ..ir.graph import Graph


@contextlib.contextmanager
def quiet_fds() -> Iterator[None]:
    """Silence what converters print from C++ and Python on file descriptors 1 and 2 (TensorFlow's
    converter prints whole function signatures); kept and shown only if the block fails."""
    import sys

    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def unsupported(graph: Graph, target: str, exc: BaseException, converter: str) -> Exception:
    """E721 for a converter that fails: the node its message names (by layer name or by the op's
    framework name), with the node's spec location; else the model."""
    text = str(exc)
    node = None
    for n in sorted(graph.nodes, key=lambda n: -len(n.name)):  # the longest name first: `fc` inside `fc_1`
        variants = {n.name, n.name.replace(".", "_"), n.name.replace(".", "/")}
        if any(re.search(rf"(?<![\w.]){re.escape(v)}(?![\w])", text) for v in variants):
            node = n
            break
    first = next((ln.strip() for ln in text.splitlines() if ln.strip()), type(exc).__name__)
    if len(first) > 300:
        first = first[:300] + " …"
    if node is not None:
        return error("E721", f"the {target} target cannot express op `{node.op}` (layer `{node.name}`): "
                             f"{converter} failed: {first}", span=node.span,
                     hint=f"docs/deploy.md lists the ops each target supports; export `{graph.name}` to another "
                          "target (onnx runs everywhere dlspec's ONNX backend does)")
    return error("E721", f"the {target} target cannot convert `{graph.name}`: {converter} failed: {first}",
                 span=graph.span, hint="docs/deploy.md lists the ops each target supports")


# ---- pt2 --------------------------------------------------------------------------------------------


def dynamic_shapes(graph: Graph) -> tuple[tuple[dict[int, Any], ...], list[Any]]:
    """A `torch.export.Dim` per symbolic input dimension (one per symbol name, shared between
    inputs), and example inputs whose symbolic sizes differ from each other and from 0 and 1 (sizes
    torch.export would otherwise take as constants)."""
    import numpy as np
    import torch

    from ..ir.dims import Sym

    dims: dict[str, Any] = {}
    sizes: dict[str, int] = {}
    shapes, examples = [], []
    for gi in graph.inputs:
        spec, shape = {}, []
        for axis, d in enumerate(gi.type.shape):
            if isinstance(d, int):
                shape.append(d)
            elif isinstance(d, Sym) and len(d.symbols) == 1 and d == Sym.symbol(next(iter(d.symbols))):
                name = next(iter(d.symbols))
                if name not in dims:
                    dims[name] = torch.export.Dim(_dim_name(name), min=1)
                    sizes[name] = 2 if axis == 0 and not sizes else 3 + len(sizes)
                spec[axis] = dims[name]
                shape.append(sizes[name])
            else:  # a derived size (2*T): not an input symbol of its own
                shape.append(4)
        shapes.append(spec)
        examples.append(torch.from_numpy(np.zeros(shape, dtype=gi.type.dtype)))
    return tuple(shapes), examples


def _dim_name(name: str) -> str:
    clean = re.sub(r"\W", "_", name)
    return clean if clean.isidentifier() else f"d_{clean}"


def build_pt2(graph: Graph, arrays: dict[str, Any], tmp: Path, aoti: bool = False,
              warn: Callable[[str], None] = print) -> Path:
    import torch

    from ..backends import get_backend

    module = get_backend("torch").build(graph, arrays, inplace=False).eval()
    shapes, examples = dynamic_shapes(graph)
    try:
        with torch.no_grad(), quiet_fds():
            program = torch.export.export(module, tuple(examples), dynamic_shapes=shapes, strict=False)
    except Exception as exc:  # a guard on a symbolic size, an op torch.export cannot trace
        violated = re.search(r"Constraints violated \(([^)]*)\)", str(exc))
        if violated is None:
            raise unsupported(graph, "pt2", exc, "torch.export.export") from None
        # the model constrains a size (a stride it must divide, a reshape): let torch.export decide
        # which sizes stay dynamic, and say so; the self-check then runs it at batch 1 and 17
        warn(f"warning[W723]: pt2: the model constrains the size{'s' if ',' in violated.group(1) else ''} "
             f"{violated.group(1)}; torch.export keeps dynamic only what it can prove (Dim.AUTO), the program may "
             "take only the example's size there")
        auto = tuple({axis: torch.export.Dim.AUTO for axis in spec} for spec in shapes)
        try:
            with torch.no_grad(), quiet_fds():
                program = torch.export.export(module, tuple(examples), dynamic_shapes=auto, strict=False)
        except Exception as exc2:
            raise unsupported(graph, "pt2", exc2, "torch.export.export") from None
    path = tmp / "model.pt2"
    if not aoti:
        torch.export.save(program, str(path))
        return path
    compiler = os.environ.get("CXX") or "g++"
    if shutil.which(compiler) is None:
        raise error("E725", f"--aoti compiles the program to C++ with AOTInductor, and no C++ compiler was found "
                            f"(`{compiler}`, from $CXX or the default g++)",
                    hint="install a compiler (apt-get install g++) or point $CXX at one; without --aoti the .pt2 "
                         "program loads with torch.export.load and needs none")
    try:
        with quiet_fds():
            torch._inductor.aoti_compile_and_package(program, package_path=str(path))
    except Exception as exc:
        raise error("E725", f"AOTInductor could not compile `{graph.name}`: "
                            f"{str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__}",
                    span=graph.span, hint="export without --aoti: the .pt2 program runs with torch.export.load") from None
    return path


# ---- OpenVINO ---------------------------------------------------------------------------------------


def build_openvino(graph: Graph, arrays: dict[str, Any], tmp: Path, opset: int | None = None,
                   onnx_path: Path | None = None, note: Callable[[str], None] | None = None) -> Path:
    import openvino as ov

    from .openvino_repair import repair

    if onnx_path is None:
        onnx_path = write_onnx(graph, arrays, tmp, opset)
    try:
        with quiet_fds():
            model = ov.convert_model(str(onnx_path))
    except Exception as exc:
        raise unsupported(graph, "openvino", exc, "openvino.convert_model") from None
    rewritten = repair(model)  # ops the CPU plugin computes wrongly, in an equivalent form it computes right
    if rewritten and note is not None:
        note(f"note: openvino: {len(rewritten)} op{'s' if len(rewritten) > 1 else ''} rewritten around OpenVINO "
             f"CPU-plugin miscomputations (docs/deploy.md): {', '.join(rewritten)}")
    path = tmp / "model.xml"
    ov.save_model(model, str(path), compress_to_fp16=False)  # the default would halve the weights to f16
    return path


def write_onnx(graph: Graph, arrays: dict[str, Any], tmp: Path, opset: int | None = None,
               name: str = "model.onnx") -> Path:
    from ..backends.onnx import model_bytes

    path = tmp / name
    path.write_bytes(model_bytes(graph, weights=arrays, opset=opset, source=graph.source))
    return path


def companions(target: str, path: Path) -> list[Path]:
    """Files that travel with the artifact: OpenVINO's weights beside its .xml."""
    return [path.with_suffix(".bin")] if target == "openvino" else []


# ---- LiteRT -----------------------------------------------------------------------------------------

#: TensorFlow's message when a loop (Keras' LSTM/GRU) needs a static batch to be lowered
_STATIC_LOOP = re.compile(r"TensorList\w*.*static|requires element_shape to be static")


def build_litert(graph: Graph, arrays: dict[str, Any], tmp: Path, static_batch: int,
                 warn: Callable[[str], None]) -> tuple[Path, int | None]:
    """The flatbuffer and its fixed batch (None: resizable)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    from ..backends import get_backend

    try:
        model = get_backend("keras").build(graph, arrays)
    except DlspecError:
        raise
    except Exception as exc:  # Keras refuses a layer it cannot trace symbolically
        raise unsupported(graph, "litert", exc, "building the Keras model") from None
    path = tmp / "model.tflite"
    try:
        with quiet_fds():
            flat = tf.lite.TFLiteConverter.from_keras_model(model).convert()
        path.write_bytes(flat)
        return path, None
    except Exception as exc:
        if not _STATIC_LOOP.search(str(exc)):
            raise unsupported(graph, "litert", exc, "TFLiteConverter") from None
        loop = next((n for n in graph.nodes if n.op in ("lstm", "gru", "rnn")), None)
    where = f" (`{loop.op}` layer `{loop.name}` at {loop.span})" if loop is not None else ""
    warn(f"warning[W721]: litert: TensorFlow's converter lowers the recurrent loop{where} only with a static shape; "
         f"the .tflite file takes batches of exactly {static_batch} (choose with --static-batch)")
    import keras

    # the same layers behind inputs of a fixed batch: the converter then freezes the loop's variables
    inputs = [keras.Input(batch_shape=(static_batch, *[d if isinstance(d, int) else None for d in gi.type.shape[1:]]),
                          dtype=gi.type.dtype, name=gi.name) for gi in graph.inputs]
    try:
        fixed = keras.Model(inputs, model(inputs if len(inputs) > 1 else inputs[0]))
        with quiet_fds():
            flat = tf.lite.TFLiteConverter.from_keras_model(fixed).convert()
    except Exception as exc:
        raise unsupported(graph, "litert", exc, "TFLiteConverter") from None
    path.write_bytes(flat)
    return path, static_batch
