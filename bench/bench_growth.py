"""Growth: front end + optimization passes (level 2) on generated specs of 100 to 10,000 layers.

    python bench/bench_growth.py [--repeats N] [--quick] [--json]

The specs are bench_frontend.py's (chains of 7-layer residual blocks: conv → batchnorm → relu →
conv → batchnorm, add, relu), so batch-norm folding fires on every block. Each size is timed
`--repeats` times (median and min–max reported); the growth exponent is the least-squares slope
of log(median time) over log(layers), for the front end, the passes, and both together (goal
≤ 1.1). Each figure is also given per layer, against the 100-layer size measured in the same
run. The last line printed is JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_frontend import generated_spec, slope  # noqa: E402

SIZES = (100, 300, 1_000, 3_000, 10_000)
#: one `->` chain of dense/relu layers, the shape that once nested the parse tree as deep as it was long
CHAIN_SIZES = (1_000, 10_000, 100_000)


def chain_spec(layers: int) -> str:
    steps = "".join("\n        -> dense(8)" if i % 2 else "\n        -> relu()" for i in range(layers))
    return "model Chain {\n    input x: float32[batch, 8]\n    y = x" + steps + "\n    output y\n}\n"


def time_chain(layers: int) -> dict:
    """Parse alone, then parse + lowering (`compile_source`, what `dlspec check` runs) of one chain."""
    from dlspec.parser import parse
    from dlspec.program import compile_source
    from dlspec.source import SourceFile

    src = SourceFile(f"<chain {layers}>", chain_spec(layers))
    t0 = time.perf_counter()
    parse(src)
    t1 = time.perf_counter()
    graph = compile_source(src).models["Chain"]
    t2 = time.perf_counter()
    return {"layers": len(graph.nodes), "parse_s": t1 - t0, "check_s": t2 - t1}


def time_size(layers: int, repeats: int) -> dict:
    from dlspec.passes import optimize
    from dlspec.program import compile_source
    from dlspec.source import SourceFile

    src = SourceFile(f"<generated {layers}>", generated_spec(layers))
    front, passes, total = [], [], []
    nodes = after = 0
    for _ in range(repeats):
        t0 = time.perf_counter()
        graph = compile_source(src).models["Deep"]
        t1 = time.perf_counter()
        out, _, reports = optimize(graph, 2)
        t2 = time.perf_counter()
        front.append(t1 - t0)
        passes.append(t2 - t1)
        total.append(t2 - t0)
        nodes, after = len(graph.nodes), len(out.nodes)
    return {
        "layers": nodes, "layers_after": after,
        "rewrites": sum(len(r.changes) for r in reports.items),
        **{f"{k}_s": {"median": statistics.median(v), "min": min(v), "max": max(v)}
           for k, v in (("front_end", front), ("passes", passes), ("total", total))},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="1 repeat at 10,000 layers, 2 elsewhere")
    ap.add_argument("--json", action="store_true", help="print only the JSON line")
    ap.add_argument("--chain", action="store_true", help="also time one `->` chain of 1,000 to 100,000 layers")
    args = ap.parse_args()
    time_size(100, 1)  # imports, grammar cache
    load0 = os.getloadavg()[0]
    rows = []
    for n in SIZES:
        reps = (1 if n >= 10_000 else 2) if args.quick else (max(2, args.repeats // 2) if n >= 10_000 else args.repeats)
        rows.append(time_size(n, reps))
    xs = [r["layers"] for r in rows]
    exps = {k: slope(xs, [r[f"{k}_s"]["median"] for r in rows]) for k in ("front_end", "passes", "total")}
    base = rows[0]
    for r in rows:
        r["per_layer_vs_smallest"] = (r["total_s"]["median"] / r["layers"]) / (base["total_s"]["median"] / base["layers"])
    chain = [time_chain(n) for n in CHAIN_SIZES] if args.chain else []
    res = {"sizes": rows, "chain": chain, "growth_exponent": exps, "goal": "total growth exponent ≤ 1.1",
           "goal_met": exps["total"] <= 1.1, "load_avg_start": load0, "load_avg_end": os.getloadavg()[0]}
    if not args.json:
        print("layers → after | front end median [min–max] | passes (level 2) | total | per-layer time vs 100")
        for r in rows:
            f, p, t = r["front_end_s"], r["passes_s"], r["total_s"]
            print(f"{r['layers']:6d} → {r['layers_after']:6d} | {f['median'] * 1e3:8.1f} ms [{f['min'] * 1e3:.1f}–{f['max'] * 1e3:.1f}]"
                  f" | {p['median'] * 1e3:8.1f} ms [{p['min'] * 1e3:.1f}–{p['max'] * 1e3:.1f}]"
                  f" | {t['median'] * 1e3:8.1f} ms | {r['per_layer_vs_smallest']:.2f}×")
        for c in chain:
            print(f"chain of {c['layers']:7d} layers: parse {c['parse_s']:.2f} s, check (parse + lowering) {c['check_s']:.2f} s")
        print("growth exponents: " + ", ".join(f"{k} {v:.2f}" for k, v in exps.items()) + f"; goal met: {res['goal_met']}")
    print(json.dumps(res))


if __name__ == "__main__":
    main()
