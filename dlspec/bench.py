"""`dlspec bench RUN_OR_MODEL`: latency and throughput of one model in each deployment runtime on
this machine.

What it measures: for each runtime and batch size, the wall-clock time of one call of the loaded
artifact on the same input rows (the run's validation rows, or seeded random inputs for a spec
file), in a fresh Python process per runtime that loads only that runtime (eager PyTorch being
dlspec's own module). Each process first runs a few warm-up calls (allocation, kernel choice,
compilation), then up to `repeats` timed calls or as many as fit in `budget` seconds (at least 5).
p50 and p90 are percentiles of those calls; throughput is batch / p50; `vs eager` is eager
PyTorch's p50 over the runtime's p50 in the same run (above 1: faster than eager PyTorch).

What it does not measure: loading and conversion time, first-call latency, memory, accuracy
(the outputs are only checked against eager PyTorch's, within `tolerance`, and a mismatch is
marked), other devices than this machine's CPU, or the effect of other processes sharing it.
"""

from __future__ import annotations

import os
import platform
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import error
from .ir.graph import Graph

#: runtime -> (how the table names it, the export target that builds its artifact)
RUNTIMES = {
    "eager": ("eager PyTorch", None),
    "onnx": ("ONNX Runtime", "onnx"),
    "openvino": ("OpenVINO", "openvino"),
    "pt2": ("torch.export", "pt2"),
    "litert": ("LiteRT", "litert"),
    "keras": ("Keras", "keras"),
}
DEFAULT_BATCHES = (1, 32)


def parse_batches(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        sizes = ()
    if not sizes or any(n < 1 for n in sizes):
        raise error("E727", f"--batch {text}: give positive batch sizes separated by commas, e.g. 1,32")
    return sizes


def parse_targets(text: str | None) -> list[str]:
    from .deploy import available

    if text is None:
        needs = {"onnx": "onnx", "openvino": "openvino", "litert": "litert", "keras": "keras"}
        return [r for r in RUNTIMES if r not in needs or available(needs[r])]
    names = [t.strip() for t in text.split(",") if t.strip()]
    unknown = [n for n in names if n not in RUNTIMES]
    if unknown or not names:
        raise error("E727", f"--targets {text}: unknown runtime{'s' if len(unknown) > 1 else ''} "
                            f"{', '.join(unknown) or '(none given)'}", hint=f"choose from {', '.join(RUNTIMES)}")
    return ["eager", *[n for n in names if n != "eager"]]  # the baseline is always measured


def load_model(source: Path, model_name: str | None) -> tuple[Graph, dict[str, Any], Any, str]:
    """(graph, weights, rows or None, what) of a run folder (best weights, validation rows) or a
    spec file (its model with seeded weights, random rows)."""
    if source.is_dir():
        from .deploy.check import run_data
        from .export import load_run_weights
        from .train.run import read_run

        graph, arrays, weights = load_run_weights(source)
        _, cfg, config = read_run(source)
        bundle = run_data(source, cfg, config, graph)
        rows = bundle.val if bundle is not None and len(bundle.val) else None
        return graph, arrays, rows, f"{graph.name} from {weights}"
    if source.is_file() and source.suffix == ".dls":
        import torch

        from .api import Spec
        from .backends import get_backend
        from .program import compile_file

        graph = Spec(source, compile_file(source)).graph(model_name)
        torch.manual_seed(0)
        module = get_backend("torch").build(graph)
        arrays = get_backend("torch").read_weights(module, graph)
        return graph, {k: v.copy() for k, v in arrays.items()}, None, f"{graph.name} from {source} (seeded weights)"
    raise error("E727", f"{source}: give a run folder (dlspec train's) or a .dls spec file")


def bench(source: Path, targets: list[str], batches: tuple[int, ...], threads: int = 0, repeats: int = 100,
          budget: float = 5.0, model_name: str | None = None, tolerance: float = 1e-3,
          echo: Callable[[str], None] = print) -> dict[str, Any]:
    """The measurements as a dict (what `--json` prints)."""
    import numpy as np

    from . import export as ex
    from .deploy import check as ck
    from .deploy import need

    if threads < 0 or repeats < 1 or budget <= 0:
        raise error("E727", "--threads, --repeats and --budget take positive numbers (--threads 0: the runtime's default)")
    need("pt2", "bench")
    for t in targets:
        target = RUNTIMES[t][1]
        for runtime in ex.NEEDS.get(target, ()) if target else ():
            need(runtime, t)
    graph, arrays, rows, what = load_model(source, model_name)
    inputs = [ck.rows_of(rows, graph, n) if rows is not None else ck.random_rows(graph, n) for n in batches]
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="dlspec-bench-") as tmp:
        tmpd = Path(tmp)
        from .io import atomic_write_text
        from .weights import save_numpy

        atomic_write_text(tmpd / "graph.json", graph.model_dump_json())
        save_numpy(arrays, tmpd / "weights.safetensors")
        eager_out: list[dict[str, Any]] | None = None
        for t in targets:
            label, target = RUNTIMES[t]
            if target is None:
                path, kind = tmpd / "graph.json", "eager"
            else:
                folder = tmpd / t
                folder.mkdir()
                echo(f"building the {target} artifact …")
                path, _ = ex._build(target, graph, arrays, folder, folder / f"model{ex.SUFFIX[target]}",
                                    ex.Options(), lambda line: echo(line) if "W7" in line else None)
                kind = target
            echo(f"timing {label} …")
            outs = ck.run_artifact(kind, path, graph, inputs, threads=threads, bench=repeats, budget=budget,
                                   meta_extra={"weights": str(tmpd / "weights.safetensors")})
            times = [o.pop("times") for o in outs]
            if eager_out is None:
                eager_out = outs
            matches = ck.compare(eager_out, outs, tolerance, "bench rows").ok
            for n, ts in zip(batches, times):
                ms = np.asarray(ts) * 1e3
                results.append({"runtime": t, "name": label, "batch": n, "calls": int(ms.size),
                                "p50_ms": float(np.percentile(ms, 50)), "p90_ms": float(np.percentile(ms, 90)),
                                "rows_per_s": float(n / (np.percentile(ms, 50) / 1e3)), "matches_eager": matches})
    for r in results:
        base = next(b for b in results if b["runtime"] == "eager" and b["batch"] == r["batch"])
        r["vs_eager"] = base["p50_ms"] / r["p50_ms"]
    return {"model": graph.name, "what": what, "inputs": "validation rows" if rows is not None else "seeded random inputs",
            "machine": machine(), "threads": threads or "runtime default", "repeats": repeats, "budget_s": budget,
            "results": results}


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} logical CPUs"


def table(report: dict[str, Any]) -> str:
    lines = [f"{report['what']}: {report['inputs']}",
             f"{report['machine']}; threads: {report['threads']}; p50/p90 of up to {report['repeats']} calls "
             f"(at most {report['budget_s']:g} s) after warm-up",
             "",
             f"{'runtime':<15} {'batch':>5} {'p50 ms':>9} {'p90 ms':>9} {'rows/s':>10} {'vs eager':>9}"]
    for r in sorted(report["results"], key=lambda r: (r["batch"], list(RUNTIMES).index(r["runtime"]))):
        mark = "" if r["matches_eager"] else "  outputs differ from eager PyTorch"
        lines.append(f"{r['name']:<15} {r['batch']:>5} {r['p50_ms']:>9.3f} {r['p90_ms']:>9.3f} "
                     f"{r['rows_per_s']:>10.0f} {r['vs_eager']:>8.2f}x{mark}")
    return "\n".join(lines)
