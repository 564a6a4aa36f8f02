"""ONNX backend benchmark: the model dlspec builds from the IR vs `torch.onnx.export` of the
generated PyTorch module, both run on onnxruntime's CPU provider with the same session options
(intra-op threads = 2, inter-op threads = 1, all graph optimizations).

Models: ResNet-18 (`specs/resnet18.dls`, 224×224 images) and the embedding +
bidirectional-LSTM classifier (`specs/sentiment_bilstm.dls`, 32 tokens); batch 1 and 32.
The PyTorch module is seeded; its canonical weights are what dlspec embeds (after
`dlspec.passes.optimize(graph, --opt-level, weights)`), and the exported model carries the same
weights, so both ONNX models compute the same function (checked: relative error ≤ 1e-4).
`torch.onnx.export` uses the TorchScript exporter (`dynamo=False`: the dynamo exporter needs
onnxscript, which is not installed), at the same opset as dlspec (`--opset`, default 17, which
both exporters support); the batch axis is dynamic in both.

Timing: one warm-up run each, then `rounds` rounds that each time A and B back to back, the order
alternating (AB, BA, ...); a round times `inner` runs of each (inner chosen so one timing takes
≥ 0.2 s). Reported per model and batch: median and IQR of the per-run time of each, the ratio of
the medians and the median [IQR] of the per-round paired ratios, ratio = torch-export time /
dlspec time (1.0 = equal; goal ≥ 1.0).

Run from the repository root:  python bench/bench_onnx.py [--quick] [--opt-level 0|1|2] [--json]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _session(data: bytes):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(data, sess_options=opts, providers=["CPUExecutionProvider"])


def _torch_export(module, example, input_name: str, output_name: str, opset: int) -> bytes:
    import torch

    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (torch.from_numpy(example),), buf, dynamo=False, opset_version=opset,
                          input_names=[input_name], output_names=[output_name],
                          dynamic_axes={input_name: {0: "batch"}, output_name: {0: "batch"}})
    return buf.getvalue()


def _time(session, feed: dict, inner: int) -> float:
    t0 = time.perf_counter()
    for _ in range(inner):
        session.run(None, feed)
    return (time.perf_counter() - t0) / inner


def _quartiles(xs: list[float]) -> tuple[float, float, float]:
    q1, med, q3 = np.percentile(xs, [25, 50, 75])
    return float(q1), float(med), float(q3)


def bench_model(spec: str, overrides: dict, batches: tuple[int, ...], rounds: int, opt_level: int, opset: int) -> list[dict]:
    import torch

    import dlspec
    from dlspec.backends import onnx as ob
    from dlspec.backends import torch as tb
    from dlspec.passes import optimize

    graph = dlspec.load(ROOT / spec, **overrides).graph()
    torch.manual_seed(0)
    module = tb.build_module(graph).eval()
    weights = tb.canonical_state(module, graph)
    opt_graph, opt_weights, _ = optimize(graph, opt_level, weights=dict(weights))
    ours = _session(ob.model_bytes(opt_graph, weights=opt_weights, opset=opset, source=spec))
    gi, go = graph.inputs[0], graph.outputs[0]
    rng = np.random.default_rng(0)
    results = []
    theirs = None
    for batch in batches:
        shape = tuple(batch if not isinstance(d, int) else d for d in gi.type.shape)
        if gi.type.dtype.startswith("int"):
            high = next(n.attrs["num"] for n in graph.nodes if n.op == "embedding")
            x = rng.integers(0, high, size=shape).astype(gi.type.dtype)
        else:
            x = rng.standard_normal(shape).astype(np.float32)
        if theirs is None:
            theirs = _session(_torch_export(module, x, gi.name, go.name, opset))
        feed = {gi.name: x}
        a, b = ours.run(None, feed)[0], theirs.run(None, feed)[0]
        rel = float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))
        assert rel <= 1e-4, f"{spec}: dlspec and torch.onnx.export disagree (relative error {rel:.2e})"
        one = _time(ours, feed, 1) + _time(theirs, feed, 1)  # warm-up, and a first estimate
        inner = max(1, int(0.4 / max(one, 1e-6)))
        t_ours, t_theirs, paired = [], [], []
        for r in range(rounds):
            if r % 2 == 0:
                o = _time(ours, feed, inner)
                t = _time(theirs, feed, inner)
            else:
                t = _time(theirs, feed, inner)
                o = _time(ours, feed, inner)
            t_ours.append(o)
            t_theirs.append(t)
            paired.append(t / o)
        qo, qt, qp = _quartiles(t_ours), _quartiles(t_theirs), _quartiles(paired)
        results.append({
            "model": Path(spec).stem, "batch": batch, "rounds": rounds, "inner": inner, "rel_error": rel,
            "dlspec_ms": [1e3 * v for v in qo], "torch_export_ms": [1e3 * v for v in qt],
            "ratio_of_medians": qt[1] / qo[1], "paired_ratio": list(qp),
        })
        _print_row(results[-1])
    return results


def _print_row(r: dict) -> None:
    def ms(q: list[float]) -> str:
        return f"{q[1]:9.2f} [{q[0]:.2f}–{q[2]:.2f}]"

    p = r["paired_ratio"]
    print(f"{r['model']:<18} {r['batch']:>5}  {ms(r['dlspec_ms']):>26}  {ms(r['torch_export_ms']):>26}  "
          f"{r['ratio_of_medians']:6.3f}  {p[1]:.3f} [{p[0]:.3f}–{p[2]:.3f}]  ({r['rounds']}×{r['inner']})", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer rounds (a smoke run)")
    ap.add_argument("--opt-level", type=int, choices=(0, 1, 2), default=1, help="dlspec.passes.optimize level before building")
    ap.add_argument("--opset", type=int, default=17, help="opset of both models")
    ap.add_argument("--json", action="store_true", help="print the results as JSON at the end")
    args = ap.parse_args()

    import onnx
    import onnxruntime
    import torch

    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.python_implementation()} "
          f"{platform.python_version()}; onnx {onnx.__version__}, onnxruntime {onnxruntime.__version__}, "
          f"torch {torch.__version__}; opset {args.opset}, --opt-level {args.opt_level}, intra-op threads 2")
    print(f"{'model':<18} {'batch':>5}  {'dlspec ms median [IQR]':>26}  {'torch.onnx.export ms':>26}  "
          f"{'ratio':>6}  paired ratio [IQR]   (rounds×inner)")
    rounds_heavy, rounds_light = (3, 5) if args.quick else (7, 21)
    results = []
    results += bench_model("specs/resnet18.dls", {}, (1, 32), rounds_heavy, args.opt_level, args.opset)
    results += bench_model("specs/sentiment_bilstm.dls", {}, (1, 32), rounds_light, args.opt_level, args.opset)
    if args.json:
        print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
