"""`dlspec export --quantize int8`: post-training static quantization, calibrated on rows of the
run's training split.

    onnx      onnxruntime's `quantize_static`, QDQ format (QuantizeLinear/DequantizeLinear pairs any
              ONNX runtime reads), int8 weights per output channel and int8 activations
    openvino  NNCF's `nncf.quantize` on the float32 IR (its default: int8, mixed-symmetric)

The report puts the run's test metrics for the float32 model (the trained one) and the int8
artifact (run in a fresh process with its runtime) side by side, with both file sizes; it is
printed and written as `<artifact stem>.int8.json` next to the artifact.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import error
from ..ir.graph import Graph

#: rows per calibration batch
CALIBRATION_BATCH = 32
#: rows per batch when the test split is run through an artifact
EVAL_BATCH = 256


def calibration_batches(xs: list[Any], graph: Graph) -> list[dict[str, Any]]:
    n = len(xs[0])
    return [{gi.name: x[i:i + CALIBRATION_BATCH] for gi, x in zip(graph.inputs, xs)}
            for i in range(0, n, CALIBRATION_BATCH)]


def quantize_onnx(f32: Path, out: Path, graph: Graph, calib: list[Any]) -> None:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    from .targets import quiet_fds

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(calibration_batches(calib, graph))

        def get_next(self) -> dict[str, Any] | None:
            return next(self.batches, None)

    try:
        with quiet_fds():
            quantize_static(str(f32), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
    except Exception as exc:
        raise error("E726", f"onnxruntime could not quantize `{graph.name}`: {_first(exc)}", span=graph.span,
                    hint="export it in float32 (without --quantize)") from None


def quantize_openvino(f32_xml: Path, out: Path, graph: Graph, calib: list[Any]) -> None:
    import nncf
    import openvino as ov

    from .targets import quiet_fds

    model = ov.Core().read_model(str(f32_xml))
    names = [i.get_any_name() for i in model.inputs]
    by_name = {gi.name: x for gi, x in zip(graph.inputs, calib)}
    items = [{n: b[n] for n in names} for b in calibration_batches([by_name[gi.name] for gi in graph.inputs], graph)]
    try:
        with quiet_fds():
            quantized = nncf.quantize(model, nncf.Dataset(items), subset_size=len(calib[0]))
    except Exception as exc:
        raise error("E726", f"NNCF could not quantize `{graph.name}`: {_first(exc)}", span=graph.span,
                    hint="export it in float32 (without --quantize)") from None
    ov.save_model(quantized, str(out), compress_to_fp16=False)


def _first(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0][:300] if text else type(exc).__name__)


def metrics_of(cfg: Any, graph: Graph, num_classes: Any, outs: list[dict[str, Any]], y: Any) -> dict[str, float]:
    """The recipe's metrics (not its loss) of outputs collected batch by batch."""
    from ..train.loop import summarize

    names = [o.name for o in graph.outputs]
    ys = y if isinstance(y, dict) else {names[0]: y}
    res = summarize(cfg, names, num_classes, 0.0, 1, {k: 0.0 for k in names},
                    {k: [o[k] for o in outs] for k in names}, {k: [ys[k]] for k in names})
    return {k: v for k, v in res.items() if k != "loss" and not k.endswith("_loss")}


def test_batches(split: Any, graph: Graph) -> list[list[Any]]:
    from .check import rows_of

    n = len(split)
    return [rows_of(split, graph, min(EVAL_BATCH, n - i), i) for i in range(0, n, EVAL_BATCH)]


def size_of(target: str, path: Path) -> int:
    from .targets import companions

    return sum(p.stat().st_size for p in [path, *companions(target, path)])


def weights_size(target: str, path: Path) -> int:
    """The size of the file holding the weights: OpenVINO's .bin (its .xml is the graph, as text)."""
    return (path.with_suffix(".bin") if target == "openvino" else path).stat().st_size


def report_lines(report: dict[str, Any]) -> list[str]:
    f32, q = report["float32"], report["int8"]
    keys = [k for k in f32 if k not in ("file_bytes", "weights_bytes")]
    width = max([len(k) for k in keys] + [9])
    lines = [f"int8 ({report['method']}, calibrated on {report['calibration_rows']} training rows; "
             f"test split, {report['test_rows']} rows):",
             f"  {'':{width}}  {'float32':>10}  {'int8':>10}"]
    for k in keys:
        lines.append(f"  {k:{width}}  {f32[k]:>10.4f}  {q[k]:>10.4f}")
    lines.append(f"  {'file size':{width}}  {_size(f32['file_bytes']):>10}  {_size(q['file_bytes']):>10}"
                 f"  ({report['size_ratio']:.2f}x smaller)")
    if f32["weights_bytes"] != f32["file_bytes"]:
        lines.append(f"  {'weights':{width}}  {_size(f32['weights_bytes']):>10}  {_size(q['weights_bytes']):>10}"
                     f"  ({f32['weights_bytes'] / max(q['weights_bytes'], 1):.2f}x smaller, the .bin)")
    return lines


def _size(n: int) -> str:
    return f"{n / 1024:.1f} KiB" if n < 1024 * 1024 else f"{n / 1024 / 1024:.2f} MiB"
