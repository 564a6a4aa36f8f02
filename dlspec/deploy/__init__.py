"""Deployment: the targets `dlspec export` writes beyond the framework formats (pt2, openvino,
litert), the self-check every export runs in a fresh process, int8 quantization, and
`dlspec bench`. See docs/deploy.md.

    targets.py   builders: torch.export (.pt2, AOTInductor), OpenVINO IR, LiteRT flatbuffer
    child.py     the program a fresh process runs to load and run an artifact with its runtime alone
    check.py     the self-check: the artifact against the trained model, on the run's own rows
    quantize.py  int8: onnxruntime's static QDQ quantization and NNCF for OpenVINO
    bench.py     latency and throughput per runtime on this machine
"""

from __future__ import annotations

import importlib
import importlib.util

from ..errors import error

#: the line that installs every deployment runtime
INSTALL = "pip install 'dlspec[deploy]'"

#: target (or runtime) -> (the module it imports, the package that provides it)
RUNTIMES = {
    "onnx": ("onnxruntime", "onnxruntime"),
    "openvino": ("openvino", "openvino"),
    "litert": ("ai_edge_litert", "ai-edge-litert"),
    "nncf": ("nncf", "nncf"),
    "tensorflow": ("tensorflow", "tensorflow"),
    "pt2": ("torch", "torch"),
    "torchscript": ("torch", "torch"),
    "keras": ("keras", "keras"),
    "savedmodel": ("tensorflow", "tensorflow"),
}


def available(runtime: str) -> bool:
    module = RUNTIMES[runtime][0]
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def need(runtime: str, target: str) -> None:
    """E720 naming the missing package and the install line, before any work is done."""
    module, package = RUNTIMES[runtime]
    try:
        importlib.import_module(module)
    except ImportError as exc:
        raise error("E720", f"the {target} target needs the `{package}` package, which cannot be imported "
                            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else module})",
                    hint=f"install the deployment runtimes: {INSTALL}") from None

